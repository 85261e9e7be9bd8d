//! End-to-end checks of the attacker node (issue 9): a `Workstation` of the
//! site file and one added at run time drive real attacks through the
//! control API (REST) against the default site in host mode, and the
//! effects are checked on the devices themselves, with mbpoll where a real
//! client reads back a forced field value.

mod common;

use std::time::Instant;

use common::{RunningSite, site_text, tool};
use serde_json::{Value, json};

/// Site octet of this test (see the table in tests/common/mod.rs).
const A: u8 = 84;

fn site() -> String {
    let t = site_text(A);
    assert!(t.contains("topology = \"separated\""));
    // Fast password hashing (as the security tests), and the Workstation
    // of the site file on the LAN segment.
    let t = t.replacen(
        "topology = \"separated\"",
        "topology = \"separated\"\npbkdf2_iterations = 1000",
        1,
    );
    format!(
        "{t}\n[[device]]\nid = \"ws1\"\nmodel = \"Workstation\"\nip = \"10.77.{A}.200\"\nsegment = \"lan\"\n"
    )
}

/// Runs `attack` from workstation `from` through `POST /api/v1/commands`.
fn attack(site: &RunningSite, from: &str, attack: Value) -> Value {
    let cmd = json!({"command": "attack", "from": from, "attack": attack});
    site.post_json("/api/v1/commands", &cmd.to_string())
}

/// mbpoll (0-based addresses) against `ip`; the values it printed.
fn mbpoll(args: &[&str]) -> Vec<String> {
    let mut all = vec!["-1", "-m", "tcp", "-0"];
    all.extend_from_slice(args);
    let out = tool("mbpoll", &all);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "mbpoll {all:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| l.starts_with('['))
        .filter_map(|l| l.split(':').nth(1))
        .map(|v| v.trim().to_string())
        .collect()
}

#[test]
fn attacker_node_attacks_and_field_faults() {
    let started = Instant::now();
    let site = RunningSite::start(&site(), &[]);
    let out = site.stdout.lock().unwrap().clone();
    let password = out
        .split("https: SecurityAdmin / ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no https login printed:\n{out}"))
        .to_string();
    let ps_ip = format!("127.77.{A}.10");
    let ws_ip = format!("127.77.{A}.200");

    // The site file's Workstation is a device of its own, on its address.
    let ws = site.get_json("/api/v1/devices/ws1");
    assert_eq!(ws["model"], "Workstation", "{ws}");
    assert_eq!(ws["power"], "on", "{ws}");
    site.wait_until(std::time::Duration::from_secs(30), || {
        site.get_json("/api/v1/devices/ps1")["power"] == "on"
    });

    // Port scan from the workstation: HTTPS and Modbus open, HTTP closed.
    let scan = attack(
        &site,
        "ws1",
        json!({"kind": "port_scan", "target": "ps1", "ports": "1-1024"}),
    );
    assert_eq!(scan["kind"], "port_scan", "{scan}");
    assert_eq!(scan["source"], ws_ip.as_str(), "{scan}");
    let open: Vec<u64> = scan["open"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert!(
        open.contains(&443) && open.contains(&502),
        "443 and 502 not open: {scan}"
    );
    assert!(!open.contains(&80), "80 open: {scan}");
    assert_eq!(scan["scanned"], 1024, "{scan}");

    // Modbus read from the workstation: the Panel Server's commercial
    // reference (registers 61-68, unit 255), as mbpoll reads it.
    let read = attack(
        &site,
        "ws1",
        json!({"kind": "modbus_read", "target": "ps1", "unit": 255, "address": 61, "count": 8}),
    );
    let values: Vec<u16> = read["values"]
        .as_array()
        .unwrap_or_else(|| panic!("no values: {read}"))
        .iter()
        .map(|v| v.as_u64().unwrap() as u16)
        .collect();
    let text: String = values
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .take_while(|b| *b != 0)
        .map(char::from)
        .collect();
    assert_eq!(text, "PAS600L", "{read}");
    let by_mbpoll: Vec<u16> = mbpoll(&["-a", "255", "-t", "4", "-r", "60", "-c", "8", &ps_ip])
        .iter()
        .map(|v| v.parse::<i64>().unwrap() as u16)
        .collect();
    assert_eq!(values, by_mbpoll);
    // A write to a read-only register: the device's exception.
    let write = attack(
        &site,
        "ws1",
        json!({"kind": "modbus_write", "target": "ps1", "unit": 255, "address": 61, "values": [1]}),
    );
    assert_eq!(write["ok"], false, "{write}");
    assert_eq!(write["exception"], 2, "{write}");
    // A unit nobody has: 0x0A from the gateway.
    let none = attack(
        &site,
        "ws1",
        json!({"kind": "modbus_read", "target": "ps1", "unit": 77, "address": 3028, "count": 2}),
    );
    assert_eq!(none["exception"], 0x0A, "{none}");

    // Forced field value: the serial meter's V1-N reads 1000 V (out of
    // range) through the gateway, by mbpoll and by the workstation.
    site.post_json(
        "/api/v1/devices/ps1/fields/meter-sl/force",
        r#"{"register": 3028, "force": {"mode": "value", "value": 1000.0}}"#,
    );
    let v = mbpoll(&[
        "-a", "1", "-t", "4:float", "-B", "-r", "3027", "-c", "1", &ps_ip,
    ]);
    assert_eq!(v, vec!["1000"], "mbpoll read {v:?}");
    let r = attack(
        &site,
        "ws1",
        json!({"kind": "modbus_read", "target": "ps1", "unit": 1, "address": 3028, "count": 2}),
    );
    assert_eq!(r["values"], json!([0x447A, 0]), "{r}");
    // Cleared: a plausible voltage again.
    site.post_json(
        "/api/v1/commands",
        r#"{"command": "field_force", "device": "ps1", "field": "meter-sl", "register": 3028, "force": {"mode": "clear"}}"#,
    );
    let v: f64 = mbpoll(&[
        "-a", "1", "-t", "4:float", "-B", "-r", "3027", "-c", "1", &ps_ip,
    ])[0]
        .parse()
        .unwrap();
    assert!((200.0..260.0).contains(&v), "V1-N {v}");
    // A hung serial meter: the gateway answers 0x0B for it.
    site.post_json(
        "/api/v1/devices/ps1/fields/meter-sl/responsive",
        r#"{"responsive": false}"#,
    );
    let r = attack(
        &site,
        "ws1",
        json!({"kind": "modbus_read", "target": "ps1", "unit": 1, "address": 3028, "count": 2}),
    );
    assert_eq!(r["exception"], 0x0B, "{r}");
    site.post_json(
        "/api/v1/devices/ps1/fields/meter-sl/responsive",
        r#"{"responsive": true}"#,
    );

    // A Modbus flood from a workstation added at run time on the OT side.
    let added = site.post_json("/api/v1/workstations", r#"{"id": "ws2", "segment": "lan"}"#);
    assert_eq!(added["model"], "Workstation", "{added}");
    let flood = attack(
        &site,
        "ws2",
        json!({"kind": "modbus_flood", "target": "ps1", "unit": 255, "connections": 4,
               "duration_s": 1.0, "address": 61, "count": 8}),
    );
    assert!(flood["requests"].as_u64().unwrap() > 50, "{flood}");
    assert!(flood["req_per_s"].as_f64().unwrap() > 50.0, "{flood}");
    assert_eq!(flood["exceptions"], 0, "{flood}");

    // Firmware upload of random bytes: refused (no valid signature).
    let fw = attack(
        &site,
        "ws1",
        json!({"kind": "firmware_upload", "target": "ps1", "user": "SecurityAdmin",
               "password": password, "random_len": 4096}),
    );
    assert_eq!(fw["stage"], "upload", "{fw}");
    assert_eq!(fw["installed"], false, "{fw}");

    // Brute force: 10 wrong passwords lock the web login; the 11th
    // attempt, with the right password, is refused.
    for i in 1..=10 {
        let r = attack(
            &site,
            "ws1",
            json!({"kind": "https_login", "target": "ps1", "user": "SecurityAdmin",
                   "password": format!("Wrong-{i}")}),
        );
        let expect = if i < 10 { "wrong_password" } else { "locked" };
        assert_eq!(r["outcome"], expect, "attempt {i}: {r}");
    }
    let r = attack(
        &site,
        "ws1",
        json!({"kind": "https_login", "target": "ps1", "user": "SecurityAdmin",
               "password": password}),
    );
    assert_eq!(r["outcome"], "locked", "{r}");
    assert_eq!(r["status"], 403, "{r}");
    assert!(
        r["message"].as_str().unwrap_or("").contains("locked"),
        "{r}"
    );
    // 10 minutes of device time later the right password logs in: 303 to /.
    site.post_json("/api/v1/clock", r#"{"advance_s": 601}"#);
    let r = attack(
        &site,
        "ws1",
        json!({"kind": "https_login", "target": "ps1", "user": "SecurityAdmin",
               "password": password}),
    );
    assert_eq!(r["outcome"], "ok", "{r}");
    assert_eq!(r["status"], 303, "{r}");
    assert_eq!(r["location"], "/", "{r}");

    // Half-open connection held by the workstation.
    let h = attack(
        &site,
        "ws1",
        json!({"kind": "half_open", "target": "ps1", "port": 502}),
    );
    assert_eq!(h["held"], 1, "{h}");
    // The kernel sees it leave from the workstation's own address.
    let ss = tool(
        "ss",
        &["-Htn", "state", "established", "src", &ws_ip, "dst", &ps_ip],
    );
    let ss = String::from_utf8_lossy(&ss.stdout);
    assert!(ss.contains(&format!("{ps_ip}:502")), "ss: {ss}");

    // Bad input: a clear 4xx, never a dead site.
    let (code, body) = site.post(
        "/api/v1/devices/ps1/attack",
        r#"{"kind": "port_scan", "target": "ws1", "ports": "1-10"}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not a Workstation"), "{body}");
    let (code, body) = site.post(
        "/api/v1/devices/ws1/attack",
        r#"{"kind": "modbus_read", "target": "ps9", "unit": 1, "address": 1}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("no device") && body.contains("ps9"), "{body}");
    let (code, body) = site.post(
        "/api/v1/devices/ps1/fields/meter-sl/force",
        r#"{"register": 9, "force": {"mode": "stuck"}}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("no register 9"), "{body}");
    let (code, body) = site.post(
        "/api/v1/workstations",
        r#"{"id": "ws3", "segment": "nowhere"}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("no segment"), "{body}");
    assert_eq!(site.get_json("/api/v1/devices/ps1")["power"], "on");
    eprintln!("attacker test took {:?}", started.elapsed());
}
