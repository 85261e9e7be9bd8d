//! End-to-end checks of the attacker node (issue 9): a `Workstation` of the
//! site file and one added at run time drive real attacks through the
//! control API (REST) against the default site in host mode, and the
//! effects are checked on the devices themselves, with mbpoll where a real
//! client reads back a forced field value. In TAP mode (as root, in a
//! namespace `ft-attacker-PID` of its own) the Workstation's traffic and a
//! replay are checked in the segment's pcap with tshark. Site octets 106
//! (host mode) and 108 (TAP mode).

mod common;

use std::time::Instant;

use common::{RunningSite, fast_site_text, site_text, tool};
use serde_json::{Value, json};

/// Site octet of this test (see the table in tests/common/mod.rs).
const A: u8 = 106;

fn site() -> String {
    // Fast password hashing (as the security tests), and the Workstation
    // of the site file on the LAN segment.
    let t = fast_site_text(A);
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

/// TAP mode: the Workstation is a NIC of its own on the switch. Its Modbus
/// read and port scan show in the segment's pcap from its own MAC address,
/// and a replay re-sends its captured frames onto the segment.
#[test]
fn tap_workstation_traffic_in_the_pcap_and_replay() {
    use common::netns::{Netns, root, start};
    if !root() {
        return;
    }
    const T: u8 = 108;
    let ns = Netns::named(&format!("ft-attacker-{}", std::process::id()));
    let dir = tempfile::tempdir().unwrap();
    let pcap_dir = dir.path().join("cap");
    let text = format!(
        "{}\n[[device]]\nid = \"ws1\"\nmodel = \"Workstation\"\nip = \"10.77.{T}.200\"\nsegment = \"lan\"\n",
        site_text(T)
    );
    let site = start(&ns, &text, &["--pcap", pcap_dir.to_str().unwrap()]);
    site.wait_until(std::time::Duration::from_secs(30), || {
        site.get_json("/api/v1/devices/ps1")["power"] == "on"
    });
    let ws_ip = format!("10.77.{T}.200");
    let ps_ip = format!("10.77.{T}.10");
    let read = attack(
        &site,
        "ws1",
        json!({"kind": "modbus_read", "target": "ps1", "unit": 255, "address": 61, "count": 8}),
    );
    assert_eq!(read["source"], ws_ip.as_str(), "{read}");
    assert_eq!(
        read["values"].as_array().map(|v| v.len()),
        Some(8),
        "{read}"
    );
    let scan = attack(
        &site,
        "ws1",
        json!({"kind": "port_scan", "target": "ps1", "ports": [80, 443, 502]}),
    );
    assert_eq!(scan["open"], json!([443, 502]), "{scan}");
    let replay = attack(
        &site,
        "ws1",
        json!({"kind": "replay", "segment": "lan",
               "filter": format!("tcp and dst port 502 and src {ws_ip}"), "count": 1024}),
    );
    let sent = replay["sent"].as_u64().unwrap();
    assert!(sent >= 3, "{replay}");
    assert_eq!(replay["matched"].as_u64().unwrap(), sent, "{replay}");
    assert!(site.stop().success());

    let lan = pcap_dir.join("lan.pcap");
    let fields = |filter: &str, field: &str| -> Vec<String> {
        let out = tool(
            "tshark",
            &[
                "-r",
                lan.to_str().unwrap(),
                "-Y",
                filter,
                "-T",
                "fields",
                "-e",
                field,
            ],
        );
        assert!(out.status.success(), "tshark: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    };
    // One MAC address of its own, not the Panel Server's.
    let mut ws_macs = fields(&format!("ip.src == {ws_ip}"), "eth.src");
    ws_macs.sort();
    ws_macs.dedup();
    let mut ps_macs = fields(&format!("ip.src == {ps_ip}"), "eth.src");
    ps_macs.dedup();
    assert_eq!(ws_macs.len(), 1, "{ws_macs:?}");
    assert!(!ps_macs.contains(&ws_macs[0]), "{ws_macs:?} {ps_macs:?}");
    // Its Modbus request is in the capture, then again as replayed (tshark
    // calls the copy a spurious retransmission and does not decode it), and
    // the replay doubled every frame it sent to 502.
    let requests = fields(
        &format!("ip.src == {ws_ip} && mbtcp && modbus.func_code == 3"),
        "frame.number",
    );
    assert_eq!(requests.len(), 1, "{requests:?}");
    let payloads = fields(
        &format!("ip.src == {ws_ip} && tcp.dstport == 502 && tcp.len == 12"),
        "tcp.payload",
    );
    assert_eq!(payloads.len(), 2, "original and replayed: {payloads:?}");
    assert_eq!(payloads[0], payloads[1]);
    let to_502 = fields(
        &format!("ip.src == {ws_ip} && tcp.dstport == 502"),
        "frame.number",
    );
    assert!(
        to_502.len() as u64 >= 2 * sent,
        "{} frames to 502 for {sent} replayed",
        to_502.len()
    );
}
