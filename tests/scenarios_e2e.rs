//! End-to-end tests of the scenario engine (issue 9) with the real binary:
//! the whole library passes against a host-mode site (in-process sites,
//! virtual-time jumps), a failing assertion and a syntax error give a
//! non-zero exit, the step or line:column, and a JUnit file that parses
//! (Python's xml.etree) with a `<failure>`/`<error>` element. Site octets
//! 96-99 (tests/common/mod.rs).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{RunningSite, site_text};

/// The default site on octets `a`/`a+1`, with fast PBKDF2 (debug builds).
fn site(a: u8) -> String {
    site_text(a).replacen(
        "topology = \"separated\"",
        "topology = \"separated\"\npbkdf2_iterations = 1000",
        1,
    )
}

fn library() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/library");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .collect();
    v.sort();
    v
}

/// Parses a JUnit file with Python's XML parser; returns per testcase
/// (name, "pass" | "failure: msg" | "error: msg").
fn junit(path: &Path) -> Vec<(String, String)> {
    let py = r#"
import sys, json, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "testsuites", root.tag
out = []
for suite in root.findall("testsuite"):
    for case in suite.findall("testcase"):
        f = case.find("failure"); e = case.find("error")
        state = "pass" if f is None and e is None else ("failure: " + f.get("message") if f is not None else "error: " + e.get("message"))
        out.append([case.get("name"), state])
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .args(["-c", py])
        .arg(path)
        .output()
        .expect("python3 (scripts/test installs it)");
    assert!(
        out.status.success(),
        "JUnit file does not parse: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(path).unwrap_or_default()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fieldtwin"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn library_passes_against_the_default_site() {
    let dir = tempfile::tempdir().unwrap();
    let site_file = dir.path().join("site.toml");
    std::fs::write(&site_file, site(96)).unwrap();
    let xml = dir.path().join("out.xml");
    let files = library();
    assert!(files.len() >= 10, "{files:?}");
    let mut args = vec!["scenario", "run"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let (site_s, xml_s) = (site_file.display().to_string(), xml.display().to_string());
    args.extend(["--site", &site_s, "--junit", &xml_s]);
    let t = Instant::now();
    let (ok, out) = run(&args);
    let wall = t.elapsed();
    assert!(ok, "library failed:\n{out}");
    eprintln!("library: {} scenarios in {wall:?}", files.len());
    assert!(
        out.contains(&format!("scenarios: {} passed, 0 failed", files.len())),
        "{out}"
    );
    let cases = junit(&xml);
    assert_eq!(cases.len(), files.len(), "{cases:?}");
    assert!(cases.iter().all(|(_, s)| s == "pass"), "{cases:?}");
    assert!(
        cases.iter().any(|(n, _)| n == "Web authentication lockout"),
        "{cases:?}"
    );
    // The lockout scenario jumps 80 virtual minutes in seconds of wall time.
    let line = out
        .lines()
        .find(|l| l.starts_with("PASS Web authentication lockout"))
        .unwrap();
    let secs: f64 = line
        .rsplit(", ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(secs < 30.0, "{line}");
    // list and check agree with the files.
    let (ok, list) = run(&["scenario", "list"]);
    assert!(ok, "{list}");
    assert!(
        list.contains("web-authentication") && list.contains("Security Functionality Verification")
    );
    let (ok, check) = run(&["scenario", "check", "web-authentication", "ot-link-cut"]);
    assert!(
        ok && check.matches("valid scenario").count() == 2,
        "{check}"
    );
}

#[test]
fn failures_errors_and_bad_input_are_reported() {
    let s = RunningSite::start(&site(98), &[]);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    let failing = write(
        "failing.rhai",
        "//! name: Deliberately failing\n//! description: one is not two\n\
         expect(power_state(\"ps1\") == \"on\", \"ps1 is on\");\n\
         sleep(\"10min\");\n\
         expect_eq(1, 2, \"one is two\");\n\
         expect(true, \"the script goes on after a failed expect\");\n",
    );
    let syntax = write(
        "syntax.rhai",
        "//! name: Broken\n//! description: syntax error\nlet x = 1;\nlet y = ;\n",
    );
    let endless = write(
        "endless.rhai",
        "//! name: Endless\n//! description: loops forever\nlet i = 0;\nloop { i += 1; }\n",
    );
    let unknown = write(
        "unknown.rhai",
        "//! name: Unknown\n//! description: bad ids\nlet d = device(\"nope\");\n",
    );
    let duration = write(
        "duration.rhai",
        "//! name: Duration\n//! description: bad duration\nsleep(\"ten minutes\");\n",
    );
    let unit = write(
        "unit.rhai",
        "//! name: Unit\n//! description: bad unit\nmodbus_read(\"ps1\", 300, 3028, 2);\n",
    );
    let header = write(
        "header.rhai",
        "//! name: H\n//! colour: red\n//! description: d\n",
    );
    let xml = dir.path().join("out.xml").display().to_string();
    let api = s.api.to_string();
    let (ok, out) = run(&[
        "scenario", "run", &failing, &syntax, &endless, &unknown, &duration, &unit, &header,
        "--api", &api, "--junit", &xml,
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("scenarios: 0 passed, 7 failed"), "{out}");
    // The failing step is named with its line and the observed value; the
    // script went on; the virtual time of the step is after the 10 min jump.
    assert!(
        out.contains("FAILED Deliberately failing: step 2 (")
            && out.contains("failing.rhai:5): one is two"),
        "{out}"
    );
    let fail_line = out.lines().find(|l| l.starts_with("FAIL [  2]")).unwrap();
    assert!(
        fail_line.contains("(observed: 1 != expected 2)"),
        "{fail_line}"
    );
    let t: f64 = fail_line
        .split("t=")
        .nth(1)
        .unwrap()
        .split('s')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(t >= 600.0, "{fail_line}");
    assert!(out.contains("ok [  3]"), "{out}");
    assert!(out.contains("syntax.rhai:4:9: syntax error"), "{out}");
    assert!(
        out.contains("endless.rhai:4:")
            && out.contains("operations and was stopped (an endless loop?)"),
        "{out}"
    );
    assert!(
        out.contains("unknown.rhai:3:") && out.contains("nope"),
        "{out}"
    );
    assert!(
        out.contains("duration.rhai:3:") && out.contains("malformed duration \"ten minutes\""),
        "{out}"
    );
    assert!(
        out.contains("unit.rhai:3:") && out.contains("unknown unit id 300"),
        "{out}"
    );
    assert!(
        out.contains("header line 2: unknown header key \"colour\""),
        "{out}"
    );
    let cases = junit(Path::new(&xml));
    assert_eq!(cases.len(), 7, "{cases:?}");
    assert_eq!(cases[0].0, "Deliberately failing");
    assert!(
        cases[0]
            .1
            .starts_with("failure: step 2 (line 5): one is two"),
        "{cases:?}"
    );
    for (_, state) in &cases[1..] {
        assert!(state.starts_with("error: "), "{cases:?}");
    }
    // The site survived all of it.
    assert_eq!(s.get_json("/api/v1/devices/ps1")["power"], "on");
}
