//! End-to-end tests of the scenario engine (issue 9) with the real binary:
//! the whole library passes against a host-mode site (in-process sites,
//! virtual-time jumps), a failing assertion and a syntax error give a
//! non-zero exit, the step or line:column, and a JUnit file that parses
//! (Python's xml.etree) with a `<failure>`/`<error>` element; two seeded
//! runs give identical event logs; a running site serves its library and
//! runs a scenario posted to it, its steps visible as they are recorded.
//! Site octets 96-103 (tests/common/mod.rs).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{RunningSite, fast_site_text};

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

/// Runs the whole library with `extra` arguments; returns the output, the
/// JUnit file and the event log.
fn run_library(dir: &Path, tag: &str, octet: u8, extra: &[&str]) -> (String, PathBuf, PathBuf) {
    let site_file = dir.join(format!("{tag}.toml"));
    std::fs::write(&site_file, fast_site_text(octet)).unwrap();
    let xml = dir.join(format!("{tag}.xml"));
    let events = dir.join(format!("{tag}.jsonl"));
    let files = library();
    assert!(files.len() >= 10, "{files:?}");
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let (site_s, xml_s, ev_s) = (
        site_file.display().to_string(),
        xml.display().to_string(),
        events.display().to_string(),
    );
    let mut args = vec!["scenario", "run"];
    args.extend(names.iter().map(String::as_str));
    args.extend(["--site", &site_s, "--junit", &xml_s, "--events", &ev_s]);
    args.extend(extra);
    let t = Instant::now();
    let (ok, out) = run(&args);
    eprintln!(
        "library ({tag}): {} scenarios in {:?}",
        files.len(),
        t.elapsed()
    );
    assert!(ok, "library failed ({tag}):\n{out}");
    (out, xml, events)
}

#[test]
fn library_passes_against_the_default_site() {
    let dir = tempfile::tempdir().unwrap();
    let files = library();
    let (out, xml, _) = run_library(dir.path(), "realtime", 96, &[]);
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

/// With the same seed and site, the library gives the same event log byte
/// for byte (the clock is paused from the start and moves by the
/// scenarios' jumps only), the Data Logger's failing sessions to a broker
/// outside the site included.
#[test]
fn seeded_runs_give_identical_event_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (_, xml, first) = run_library(dir.path(), "seeded-1", 100, &["--seed", "7"]);
    assert!(junit(&xml).iter().all(|(_, s)| s == "pass"));
    let (_, _, second) = run_library(dir.path(), "seeded-2", 100, &["--seed", "7"]);
    let (a, b) = (
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap(),
    );
    let text = String::from_utf8_lossy(&a);
    assert!(
        text.contains("\"kind\":\"audit\"") && text.contains("\"event\":\"power\""),
        "{text}"
    );
    assert!(
        text.contains("2026-01-01T"),
        "seeded runs start at 2026-01-01: {text}"
    );
    if a != b {
        let other = String::from_utf8_lossy(&b);
        let first = text
            .lines()
            .zip(other.lines())
            .position(|(x, y)| x != y)
            .unwrap_or(text.lines().count().min(other.lines().count()));
        let show = |t: &str| {
            t.lines()
                .skip(first.saturating_sub(3))
                .take(8)
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "event logs differ from line {}:\n{}\n--- second run ---\n{}",
            first + 1,
            show(&text),
            show(&other)
        );
    }
}

#[test]
fn failures_errors_and_bad_input_are_reported() {
    let s = RunningSite::start(&fast_site_text(98), &[]);
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
    // Input registers (function 4): the serial meter (unit 1) answers them
    // like holding registers; the Panel Server itself (unit 255) refuses
    // the function (exception 1), as its Modbus file lists FC3 only.
    let input = write(
        "input.rhai",
        "//! name: Input registers\n//! description: function 4\n\
         let r = modbus_read_input(\"ps1\", 1, 3028, 2);\n\
         expect(r.ok && r.values.len() == 2, \"unit 1 answers FC4\");\n\
         expect_eq(modbus_read_input(\"ps1\", 255, 10, 1).exception, 1, \"unit 255 refuses FC4\");\n",
    );
    let xml = dir.path().join("out.xml").display().to_string();
    let api = s.api.to_string();
    let (ok, out) = run(&[
        "scenario", "run", &failing, &syntax, &endless, &unknown, &duration, &unit, &header,
        &input, "--api", &api, "--junit", &xml,
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("scenarios: 1 passed, 7 failed"), "{out}");
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
    assert_eq!(cases.len(), 8, "{cases:?}");
    assert_eq!(cases[0].0, "Deliberately failing");
    assert!(
        cases[0]
            .1
            .starts_with("failure: step 2 (line 5): one is two"),
        "{cases:?}"
    );
    for (_, state) in &cases[1..7] {
        assert!(state.starts_with("error: "), "{cases:?}");
    }
    assert_eq!(
        cases[7],
        ("Input registers".into(), "pass".into()),
        "{cases:?}"
    );
    // The site survived all of it.
    assert_eq!(s.get_json("/api/v1/devices/ps1")["power"], "on");
}

/// Polls `GET /api/v1/scenarios` until run `id` has ended; returns it and
/// how many distinct step counts were seen while it ran.
fn wait_run(s: &RunningSite, id: u64) -> (serde_json::Value, usize) {
    let t = Instant::now();
    let mut counts = std::collections::BTreeSet::new();
    loop {
        let v = s.get_json("/api/v1/scenarios");
        let run = v["run"].clone();
        assert_eq!(run["id"], id, "{v}");
        if run["state"] != "running" {
            return (run, counts.len());
        }
        counts.insert(run["steps"].as_array().unwrap().len());
        assert!(t.elapsed().as_secs() < 120, "run {id} never ended: {run}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A running `fieldtwin run` serves its scenario library: `POST
/// /api/v1/scenarios/run` runs one against the site itself, and `GET
/// /api/v1/scenarios` shows its steps with pass/fail as they are recorded,
/// then the final state; the steps and the end also arrive on the event
/// stream; one run at a time; bad names are refused.
#[test]
fn a_running_site_serves_and_runs_its_scenarios() {
    let lib = tempfile::tempdir().unwrap();
    let real = "modbus-write-read-only";
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("scenarios/library/{real}.rhai")),
        lib.path().join(format!("{real}.rhai")),
    )
    .unwrap();
    std::fs::write(
        lib.path().join("slow-failing.rhai"),
        "//! name: Slow and failing\n//! description: steps over time, then a false one\n\
         //! tags: demo\n\
         for i in 0..40 { sleep(\"1s\"); expect(power_state(\"ps1\") == \"on\", `ps1 on at ${i}`); }\n\
         expect_eq(1, 2, \"one is two\");\n",
    )
    .unwrap();
    let lib_s = lib.path().display().to_string();
    let s = RunningSite::start(&fast_site_text(102), &["--scenarios", &lib_s]);

    let v = s.get_json("/api/v1/scenarios");
    assert_eq!(v["library_dir"], lib_s.as_str(), "{v}");
    let files: Vec<&str> = v["library"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["file"].as_str().unwrap())
        .collect();
    assert_eq!(files, [real, "slow-failing"], "{v}");
    assert_eq!(v["library"][1]["name"], "Slow and failing");
    assert_eq!(v["library"][1]["tags"][0], "demo");
    assert!(v["run"].is_null(), "{v}");

    let (code, body) = s.post("/api/v1/scenarios/run", r#"{"name":"slow-failing"}"#);
    assert_eq!(code, 202, "{body}");
    let started: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (started["id"].as_u64(), started["state"].as_str()),
        (Some(1), Some("running")),
        "{body}"
    );
    let (code, body) = s.post("/api/v1/scenarios/run", &format!(r#"{{"name":"{real}"}}"#));
    assert_eq!(code, 409, "one run at a time: {body}");
    assert!(body.contains("slow-failing"), "{body}");
    let (run, seen) = wait_run(&s, 1);
    assert_eq!(run["state"], "failed", "{run}");
    let steps = run["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 41, "{run}");
    assert!(steps[..40].iter().all(|st| st["passed"] == true), "{run}");
    assert_eq!(steps[40]["passed"], false);
    assert_eq!(steps[40]["message"], "one is two");
    assert_eq!(steps[40]["observed"], "1 != expected 2");
    assert_eq!(steps[40]["line"], 5);
    assert!(steps[40]["virtual_s"].as_f64().unwrap() >= 40.0, "{run}");
    assert!(
        seen >= 3,
        "steps appear while the scenario runs ({seen} counts seen)"
    );

    // Follow the event stream during the second run: its steps go there too.
    let mut stream = Command::new("curl")
        .args([
            "-sN",
            "-D",
            "-",
            "--max-time",
            "120",
            &s.url("/api/v1/events"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl (scripts/test installs it)");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let (out, seen) = (stream.stdout.take().unwrap(), seen.clone());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                seen.lock().unwrap().push_str(&(line + "\n"));
            }
        });
    }
    s.wait_until(std::time::Duration::from_secs(20), || {
        seen.lock().unwrap().contains(" 200")
    });
    let (code, body) = s.post("/api/v1/scenarios/run", &format!(r#"{{"name":"{real}"}}"#));
    assert_eq!(code, 202, "{body}");
    let (run, _) = wait_run(&s, 2);
    s.wait_until(std::time::Duration::from_secs(20), || {
        seen.lock()
            .unwrap()
            .contains("\"event\":\"scenario_ended\"")
    });
    let _ = stream.kill();
    let _ = stream.wait();
    let text = seen.lock().unwrap().clone();
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect();
    let steps: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "scenario_step")
        .collect();
    assert_eq!(
        steps.len(),
        run["steps"].as_array().unwrap().len(),
        "{text}"
    );
    assert!(
        steps
            .iter()
            .all(|e| e["run"] == 2 && e["scenario"] == real && e["step"]["passed"] == true),
        "{text}"
    );
    let ended = events
        .iter()
        .find(|e| e["event"] == "scenario_ended")
        .unwrap();
    assert_eq!(
        (&ended["run"], &ended["state"]),
        (&2.into(), &"passed".into()),
        "{text}"
    );
    assert_eq!(run["state"], "passed", "{run}");
    assert_eq!(run["name"], "Modbus write to a read-only register");
    let steps = run["steps"].as_array().unwrap();
    assert!(steps.len() >= 4, "{run}");
    assert!(steps.iter().all(|st| st["passed"] == true), "{run}");

    for (body, code, says) in [
        (r#"{"name":"nope"}"#, 404, "slow-failing"),
        (r#"{"name":"../etc/passwd"}"#, 400, "not a scenario name"),
        (r#"{"nom":"x"}"#, 422, "unknown field `nom`"),
    ] {
        let (got, text) = s.post("/api/v1/scenarios/run", body);
        assert_eq!(got, code, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
    // The last run stays on show; the site is fine.
    assert_eq!(s.get_json("/api/v1/scenarios")["run"]["id"], 2);
    assert_eq!(s.get_json("/api/v1/devices/ps1")["power"], "on");
}
