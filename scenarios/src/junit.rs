//! JUnit XML of a scenario run, in the shape CI tools read (Jenkins,
//! GitLab, GitHub test reporters): one `<testsuite>` per run, one
//! `<testcase>` per scenario, its steps in `<system-out>`, a failed
//! assertion as `<failure>` (message = the first failing step), a script
//! error as `<error>`.
//!
//! Contract: [`write`] produces well-formed XML for any text (control
//! characters XML 1.0 forbids are replaced).

use std::fmt::Write as _;

use crate::engine::ScenarioResult;

/// Escapes text for XML attributes and content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The JUnit document of `results`.
pub fn write(suite: &str, results: &[ScenarioResult]) -> String {
    let failures = results
        .iter()
        .filter(|r| r.error.is_none() && !r.passed())
        .count();
    let errors = results.iter().filter(|r| r.error.is_some()).count();
    let time: f64 = results.iter().map(|r| r.wall_s).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">",
        escape(suite),
        results.len()
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{time:.3}\" timestamp=\"{}\">",
        escape(suite),
        results.len(),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S")
    );
    for r in results {
        let class = r
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            x,
            "    <testcase classname=\"scenarios.{}\" name=\"{}\" file=\"{}\" time=\"{:.3}\">",
            escape(&class),
            escape(&r.name),
            escape(&r.path.display().to_string()),
            r.wall_s
        );
        if let Some(e) = &r.error {
            let _ = writeln!(
                x,
                "      <error message=\"{}\" type=\"ScriptError\">{}</error>",
                escape(e),
                escape(e)
            );
        } else if let Some(step) = r.first_failure() {
            let all: Vec<String> = r
                .steps
                .iter()
                .filter(|s| !s.passed)
                .map(crate::engine::line_text)
                .collect();
            let _ = writeln!(
                x,
                "      <failure message=\"step {} (line {}): {}\" type=\"AssertionFailed\">{}</failure>",
                step.n,
                step.line,
                escape(&step.message),
                escape(&all.join("\n"))
            );
        }
        let out: Vec<String> = r.steps.iter().map(crate::engine::line_text).collect();
        let _ = writeln!(
            x,
            "      <system-out>{}</system-out>\n    </testcase>",
            escape(&out.join("\n"))
        );
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Step;
    use std::path::PathBuf;

    fn step(n: usize, passed: bool, msg: &str) -> Step {
        Step {
            n,
            kind: "expect".into(),
            message: msg.into(),
            passed,
            observed: String::new(),
            virtual_s: 1.5,
            wall_s: 0.1,
            line: 7,
        }
    }

    #[test]
    fn failure_and_error_elements() {
        let ok = ScenarioResult {
            path: PathBuf::from("lib/a.rhai"),
            name: "A & B".into(),
            steps: vec![step(1, true, "fine")],
            error: None,
            wall_s: 1.0,
            events: Vec::new(),
        };
        let bad = ScenarioResult {
            steps: vec![step(1, true, "fine"), step(2, false, "x < \"y\"\u{1}")],
            name: "bad".into(),
            ..ok.clone()
        };
        let err = ScenarioResult::not_run(&PathBuf::from("c.rhai"), "c", "c.rhai:3:4: boom".into());
        let x = write("fieldtwin", &[ok, bad, err]);
        assert!(x.contains("tests=\"3\" failures=\"1\" errors=\"1\""), "{x}");
        assert!(x.contains("name=\"A &amp; B\""), "{x}");
        assert!(
            x.contains("<failure message=\"step 2 (line 7): x &lt; &quot;y&quot;\u{fffd}\""),
            "{x}"
        );
        assert!(x.contains("<error message=\"c.rhai:3:4: boom\""), "{x}");
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert_eq!(x.matches("</testcase>").count(), 3);
    }
}
