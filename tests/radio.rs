//! End-to-end test of the IEEE 802.15.4 medium (issue 10): the default
//! site's PowerTags report over the radio to the Panel Server; a jammer
//! started through `POST /api/v1/commands` makes them Not connected after
//! their timeout (control API, web page, Modbus no-value markers and
//! 31146 = 0) and stopping it brings them back; the sniffer's pcap decodes
//! in tshark as IEEE 802.15.4 without malformed frames or bad FCS, with the
//! Panel Server's MAC acknowledgements; a rogue RF-ID injected over the air
//! is listed as discovered, never connected, never routed until the
//! administrator adds it; a Protect Plus device joins over the air only
//! with its install code; removing and rebuilding the network, with the
//! leave on the air as a Disassociation Notification that tshark decodes
//! (issue 10 item 3, commissioning). Virtual-time jumps, no waiting.
//!
//! Site octets 110-119 belong to this file (see tests/common/mod.rs).

mod common;

use std::process::Command;

use common::web::Web;
use common::{RunningSite, fast_site_text, tool};
use serde_json::Value;

const POWERTAGS: [&str; 4] = ["pt-lighting", "pt-hvac", "pt-office", "pt-ev"];

fn site(a: u8) -> String {
    fast_site_text(a).replace("seed = 1\n", "seed = 1\nstart = \"2026-03-02T00:00:00Z\"\n")
}

/// Runs the pymodbus client of tests/gateway_client.py.
fn pymodbus(host: &str, ops: &[&str]) -> Vec<Value> {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/.venv/bin/python"))
        .arg(format!("{root}/tests/gateway_client.py"))
        .arg(host)
        .arg("502")
        .args(ops)
        .output()
        .expect("run the venv's python (scripts/test creates it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pymodbus client failed: {text}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn words(v: &Value) -> Vec<u16> {
    v["words"]
        .as_array()
        .unwrap_or_else(|| panic!("not words: {v}"))
        .iter()
        .map(|w| w.as_u64().unwrap() as u16)
        .collect()
}

fn advance(s: &RunningSite, secs: f64) {
    s.post_json("/api/v1/clock", &format!("{{\"advance_s\":{secs}}}"));
}

fn command(s: &RunningSite, json: &str) -> Value {
    let (code, body) = s.post("/api/v1/commands", json);
    assert_eq!(code, 200, "{json}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The wireless entries of ps1's field devices, by id.
fn wireless(s: &RunningSite) -> Vec<Value> {
    let d = s.get_json("/api/v1/devices/ps1");
    d["details"]["field_devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["link"] == "wireless")
        .cloned()
        .collect()
}

/// tshark's reading of `pcap`: the frames that match the display filter
/// `filter` (all without one), a line each, as its one-line summary or,
/// with `fields`, those fields separated by tabs. tshark must succeed.
fn tshark(pcap: &str, filter: Option<&str>, fields: &[&str]) -> String {
    let mut args = vec!["-r", pcap];
    if let Some(f) = filter {
        args.extend(["-Y", f]);
    }
    if !fields.is_empty() {
        args.extend(["-T", "fields"]);
        for f in fields {
            args.extend(["-e", f]);
        }
    }
    let out = tool("tshark", &args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tshark {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// No frame of `pcap` is malformed or has a bad FCS.
fn assert_well_formed(pcap: &str) {
    let bad = tshark(pcap, Some("_ws.malformed || wpan.fcs.bad"), &[]);
    assert!(bad.trim().is_empty(), "{bad}");
}

fn field<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {list:?}"))
}

#[test]
fn jamming_disconnects_the_powertags_and_the_sniffer_sees_their_reports() {
    let a = 110;
    let ip = format!("127.77.{a}.10");
    let s = RunningSite::start(&site(a), &[]);
    s.post_json("/api/v1/clock", r#"{"paused":true}"#);
    // Reports every 5 s: a jump of 6 s brings one from each PowerTag.
    advance(&s, 6.0);
    let list = wireless(&s);
    for id in POWERTAGS {
        let f = field(&list, id);
        assert_eq!(f["connected"], true, "{f}");
        assert_eq!(f["state"], "connected", "{f}");
        let rssi = f["rssi_dbm"].as_f64().unwrap_or_else(|| panic!("{f}"));
        assert!((-97.0..-20.0).contains(&rssi), "{f}");
        assert!(f["lqi"].as_u64().is_some(), "{f}");
        assert!(f["last_report"].is_string(), "{f}");
    }
    // 31149 (RSSI of the last report) and 31146 (communication OK) over Modbus.
    let r = pymodbus(&ip, &["read:100:31146:1", "read:100:31149:2"]);
    assert_eq!(words(&r[0]), vec![1]);
    let w = words(&r[1]);
    let rssi = f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1]));
    assert!((-97.0..-20.0).contains(&rssi), "31149 = {rssi}");

    // Sniffer on the Panel Server's channel.
    let details = s.get_json("/api/v1/devices/ps1");
    let channel = details["details"]["extra"]["radio"]["channel"]
        .as_u64()
        .unwrap_or_else(|| panic!("no radio channel in {details}"));
    let pcap = s.dir.path().join("radio.pcap");
    let pcap_s = pcap.to_str().unwrap();
    command(
        &s,
        &format!(r#"{{"command":"sniffer","channel":{channel},"path":"{pcap_s}","on":true}}"#),
    );
    advance(&s, 10.0);

    // A jammer next to the PowerTags: Not connected after their timeout
    // (three 5 s periods).
    let st = command(
        &s,
        r#"{"command":"jammer","id":"j1","near":"pt-hvac","power_dbm":20,"on":true}"#,
    );
    assert_eq!(st["jammers"][0]["id"], "j1", "{st}");
    advance(&s, 20.0);
    let list = wireless(&s);
    for id in POWERTAGS {
        let f = field(&list, id);
        assert_eq!(f["connected"], false, "{f}");
        assert_eq!(f["state"], "not_connected", "{f}");
    }
    let web = Web::of(&s, ip.clone());
    assert_eq!(web.login_as("SecurityAdmin", &web.password).0, 200);
    let (code, page) = web.get("/settings");
    assert_eq!(code, 200);
    for rf in ["2A3B0001", "2A3B0002", "2A3B0003", "2A3B0004"] {
        let row = page
            .split("<tr>")
            .find(|r| r.contains(&format!("00000000{rf}")))
            .unwrap_or_else(|| panic!("no row of {rf}: {page}"));
        assert!(row.contains("Not connected"), "{row}");
    }
    let r = pymodbus(
        &ip,
        &[
            "read:100:3060:2",
            "read:101:3060:2",
            "read:102:3060:2",
            "read:103:3060:2",
            "read:100:31146:1",
            "read:103:31146:1",
        ],
    );
    for v in &r[..4] {
        assert_eq!(words(v), vec![0xFFC0, 0], "{r:?}");
    }
    assert_eq!(words(&r[4]), vec![0]);
    assert_eq!(words(&r[5]), vec![0]);

    // Jammer off: the next reports bring them back.
    command(&s, r#"{"command":"jammer","id":"j1","on":false}"#);
    advance(&s, 10.0);
    let list = wireless(&s);
    for id in POWERTAGS {
        assert_eq!(field(&list, id)["connected"], true, "{id}: {list:?}");
    }
    let r = pymodbus(&ip, &["read:101:3060:2", "read:101:31146:1"]);
    assert_ne!(words(&r[0]), vec![0xFFC0, 0]);
    assert_eq!(words(&r[1]), vec![1]);
    let (_, page) = web.get("/settings");
    let row = page
        .split("<tr>")
        .find(|r| r.contains("000000002A3B0002"))
        .unwrap();
    assert!(
        row.contains("Connected") && !row.contains("Not connected"),
        "{row}"
    );

    // A rogue device's report, injected over the air: discovered only.
    command(
        &s,
        r#"{"command":"radio_inject","report":{"rf_id":"0xDEADBEEF","to":"ps1","counter":1,"power_w":1000}}"#,
    );
    advance(&s, 1.0);
    let list = wireless(&s);
    let rogue = list
        .iter()
        .find(|f| f["address"] == "00000000DEADBEEF")
        .unwrap_or_else(|| panic!("rogue not listed: {list:?}"));
    assert_eq!(rogue["state"], "discovered", "{rogue}");
    assert_eq!(rogue["connected"], false, "{rogue}");
    assert!(rogue.get("unit").is_none(), "{rogue}");
    // Never routed: no unit of the gateway answers with its RF-ID, and the
    // next free wireless unit has no route.
    let ops: Vec<String> = (100..=104).map(|u| format!("read:{u}:31027:4")).collect();
    let ops: Vec<&str> = ops.iter().map(String::as_str).collect();
    for v in pymodbus(&ip, &ops) {
        assert_ne!(words(&v), vec![0, 0, 0xDEAD, 0xBEEF]);
    }
    assert_eq!(pymodbus(&ip, &["read:105:3060:2"])[0]["exception"], 10);
    let (_, page) = web.get("/settings");
    assert!(
        page.contains("00000000DEADBEEF") && page.contains("Discovered"),
        "{page}"
    );

    // The sniffer's file: IEEE 802.15.4 with FCS, no malformed frame, every
    // FCS good, the PowerTags' reports from their RF-IDs.
    let st = command(
        &s,
        &format!(r#"{{"command":"sniffer","channel":{channel},"on":false}}"#),
    );
    assert!(st["sniffers"].as_array().unwrap().is_empty(), "{st}");
    let text = tshark(
        pcap_s,
        None,
        &[
            "frame.protocols",
            "wpan.src64",
            "wpan.fcs_ok",
            "_ws.malformed",
        ],
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 8, "too few frames captured: {text}");
    for l in &lines {
        let cols: Vec<&str> = l.split('\t').collect();
        assert!(cols[0].starts_with("wpan"), "not 802.15.4: {l}");
        assert_eq!(cols.get(2).copied(), Some("1"), "FCS not good: {l}");
        assert!(cols.get(3).is_none_or(|c| c.is_empty()), "malformed: {l}");
    }
    for rf in ["2a3b0001", "2a3b0002", "2a3b0003", "2a3b0004"] {
        assert!(
            lines.iter().any(|l| l.replace(':', "").contains(rf)),
            "no report of {rf}: {text}"
        );
    }
    // The Panel Server's MAC acknowledgements of the reports are on the
    // air too, and the reports ask for them.
    // Each acknowledgement answers an earlier frame of its sequence number
    // that asked for one, except those of reports already on the air when
    // the sniffer started (an acknowledgement follows its report by
    // 192 µs; 50 ms of margin).
    let text = tshark(
        pcap_s,
        None,
        &[
            "frame.time_relative",
            "wpan.frame_type",
            "wpan.seq_no",
            "wpan.ack_request",
        ],
    );
    let mut asked = std::collections::HashSet::<&str>::new();
    let mut acks = 0;
    for l in text.lines() {
        let cols: Vec<&str> = l.split('\t').collect();
        let (t, kind, seq, ack_request) = (cols[0], cols[1], cols[2], cols.get(3));
        let kind = kind.strip_prefix("0x").map_or_else(
            || kind.parse::<u32>().ok(),
            |h| u32::from_str_radix(h, 16).ok(),
        );
        if kind == Some(2) {
            acks += 1;
            let t: f64 = t.parse().unwrap_or_else(|_| panic!("{l}"));
            assert!(
                asked.contains(seq) || t < 0.05,
                "acknowledgement of an unasked frame: {l}\n{text}"
            );
        } else if ack_request.is_some_and(|a| *a == "1" || *a == "True") {
            asked.insert(seq);
        }
    }
    assert!(acks >= 4, "{acks} acknowledgements captured: {text}");
    assert_well_formed(pcap_s);
}

/// The site of `a` with one more wireless device behind ps1: a new
/// Protect Plus device (16-character RF-ID) out of its box, not
/// commissioned, with the install code of its label.
const PROTECT_PLUS_RF: &str = "8A3B00000000C0DE";
const PROTECT_PLUS_CODE: &str = "83FED3407A939723A5C639B26916D505C3B5";

fn site_with_protect_plus(a: u8) -> String {
    let t = site(a);
    let anchor = "rf_id = \"0x000000002A3C0001\"\nprofile = \"indoor\"\n";
    assert!(t.contains(anchor), "{t}");
    t.replacen(
        anchor,
        &format!(
            "{anchor}\n[[device.panel_server.wireless]]\nid = \"trh-store\"\nmodel = \"TRH\"\nrf_id = \"0x{PROTECT_PLUS_RF}\"\nreport_period_s = 5\ninstall_code = \"{PROTECT_PLUS_CODE}\"\ncommissioned = false\n"
        ),
        1,
    )
}

fn by_address<'a>(list: &'a [Value], rf: &str) -> Option<&'a Value> {
    list.iter().find(|f| f["address"] == rf)
}

/// Injects the frame `inject(attempt)` makes, then lets 1 s of virtual
/// time pass, until ps1 lists `rf` in `state` (at most 5 attempts);
/// returns its entry. An injected frame goes on the air at once, without
/// CSMA, as an attacker's would: it collides with a site frame (a report,
/// an acknowledgement) that happens to be on the air, and is lost, so the
/// test tries again as a real attacker would (virtual time starts a few
/// ms late from run to run, so the instants differ).
fn inject_until(s: &RunningSite, inject: impl Fn(u32) -> String, rf: &str, state: &str) -> Value {
    let mut list = Vec::new();
    for attempt in 0..5 {
        command(s, &inject(attempt));
        advance(s, 1.0);
        list = wireless(s);
        if let Some(f) = by_address(&list, rf).filter(|f| f["state"] == state) {
            return f.clone();
        }
    }
    panic!("{rf} never {state} after 5 injections: {list:?}");
}

fn f32_of(v: &Value) -> f32 {
    let w = words(v);
    f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1]))
}

/// Issue 10 item 3, commissioning over the medium: a rogue RF-ID injected
/// through the API is discovered, never connected, never routed until the
/// administrator adds it (control API); then its reports are served at
/// its unit id. A Protect Plus device's join requests are ignored until
/// its install code is entered; a wrong code (web page) is refused at its
/// join; the right one (control API) lets it join over the air. Removing
/// (web page) and rebuilding the network (control API) unroute devices;
/// only the identified ones come back.
#[test]
fn commissioning_discovers_rogues_and_joins_protect_plus_devices_by_install_code() {
    let a = 112;
    let ip = format!("127.77.{a}.10");
    let s = RunningSite::start(&site_with_protect_plus(a), &[]);
    s.post_json("/api/v1/clock", r#"{"paused":true}"#);
    advance(&s, 6.0);
    let rogue_rf = "00000000DEADBEEF";

    // The Protect Plus device asks to join: ignored (not discovered, not
    // paired, no unit).
    let list = wireless(&s);
    let pp = field(&list, "trh-store");
    assert_eq!(pp["state"], "not_paired", "{pp}");
    assert_eq!(pp["connected"], false, "{pp}");
    assert!(
        !list
            .iter()
            .any(|f| f["state"] == "discovered" && f["address"] == PROTECT_PLUS_RF),
        "{list:?}"
    );
    assert_eq!(pymodbus(&ip, &["read:105:4001:2"])[0]["exception"], 10);
    // Forged join requests: an impostor of the Protect Plus device (no
    // install code) is ignored too; an 8-character one is discovered.
    command(
        &s,
        &format!(
            r#"{{"command":"radio_inject","join":{{"rf_id":"0x{PROTECT_PLUS_RF}","to":"ps1"}}}}"#
        ),
    );
    // (Two frames injected at the same instant collide: one at a time.)
    advance(&s, 0.1);
    let (code, body) = s.post(
        "/api/v1/commands",
        r#"{"command":"radio_inject","join":{"rf_id":"0xFEEDF00D","to":"ps1","install_code":"1234"}}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("join.install_code"), "{body}");
    inject_until(
        &s,
        |n| {
            format!(
                r#"{{"command":"radio_inject","join":{{"rf_id":"0xFEEDF00D","to":"ps1","nonce":{}}}}}"#,
                7 + n
            )
        },
        "00000000FEEDF00D",
        "discovered",
    );
    let list = wireless(&s);
    assert_eq!(field(&list, "trh-store")["state"], "not_paired", "{list:?}");

    // A rogue report injected over the air: discovered only.
    let rogue = inject_until(
        &s,
        |n| {
            format!(
                r#"{{"command":"radio_inject","report":{{"rf_id":"0xDEADBEEF","to":"ps1","counter":{},"power_w":1000}}}}"#,
                1 + n
            )
        },
        rogue_rf,
        "discovered",
    );
    assert_eq!(rogue["connected"], false, "{rogue}");
    assert!(rogue.get("unit").is_none(), "{rogue}");
    assert_eq!(pymodbus(&ip, &["read:106:3060:2"])[0]["exception"], 10);

    // Bad commands are refused naming what is wrong.
    let (code, body) = s.post(
        "/api/v1/commands",
        r#"{"command":"radio_commission","device":"ps1","action":"add","rf_id":"0xCAFE0001"}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("answered the discovery"), "{body}");
    let (code, body) = s.post(
        "/api/v1/commands",
        &format!(
            r#"{{"command":"radio_commission","device":"ps1","action":"add","rf_id":"0x{PROTECT_PLUS_RF}"}}"#
        ),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("install code"), "{body}");
    let (code, body) = s.post(
        "/api/v1/commands",
        r#"{"command":"radio_commission","device":"ps1","action":"frobnicate"}"#,
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("`add`, `remove`, `rebuild`"), "{body}");

    // The administrator adds the rogue (control API): paired at the first
    // unit id the site does not keep (106), connected at its next report,
    // whose reading is served.
    let st = command(
        &s,
        r#"{"command":"radio_commission","device":"ps1","action":"add","rf_id":"DEADBEEF"}"#,
    );
    assert_eq!(st["id"], "ps1", "{st}");
    let list = wireless(&s);
    let added = by_address(&list, rogue_rf).unwrap_or_else(|| panic!("{list:?}"));
    assert_eq!(added["unit"], 106, "{added}");
    inject_until(
        &s,
        |n| {
            format!(
                r#"{{"command":"radio_inject","report":{{"rf_id":"0xDEADBEEF","to":"ps1","counter":{},"power_w":1234.5}}}}"#,
                10 + n
            )
        },
        rogue_rf,
        "connected",
    );
    let r = pymodbus(
        &ip,
        &["read:106:3060:2", "read:106:31027:4", "read:106:31146:1"],
    );
    assert_eq!(f32_of(&r[0]), 1234.5, "{r:?}");
    assert_eq!(words(&r[1]), vec![0, 0, 0xDEAD, 0xBEEF]);
    assert_eq!(words(&r[2]), vec![1]);

    // Protect Plus, a wrong install code on the web page: saved, but the
    // device's join request is refused over the air.
    let web = Web::of(&s, ip.clone());
    assert_eq!(web.login_as("SecurityAdmin", &web.password).0, 200);
    let wrong = "1F6BBE44663AB8DEE84217E3BC7628F5DADE"; // another device's (right CRC)
    let (code, body) = web.submit(
        "/settings",
        "/settings/wireless/add",
        &[("rf_id", PROTECT_PLUS_RF), ("install_code", wrong)],
    );
    assert_eq!(code, 200, "{body}");
    advance(&s, 6.0);
    let list = wireless(&s);
    assert_eq!(
        field(&list, "trh-store")["state"],
        "join_refused",
        "{list:?}"
    );
    assert_eq!(pymodbus(&ip, &["read:105:4001:2"])[0]["exception"], 10);
    let (_, page) = web.get("/settings");
    assert!(page.contains("Join refused"), "{page}");

    // The right code (control API): it joins at its next request, over
    // the air, gets its site unit id and its measurements are served.
    command(
        &s,
        &format!(
            r#"{{"command":"radio_commission","device":"ps1","action":"add","rf_id":"{PROTECT_PLUS_RF}","install_code":"{PROTECT_PLUS_CODE}"}}"#
        ),
    );
    advance(&s, 6.0);
    advance(&s, 6.0);
    let list = wireless(&s);
    let pp = field(&list, "trh-store");
    assert_eq!(pp["state"], "connected", "{pp}");
    assert_eq!(pp["unit"], 105, "{pp}");
    let r = pymodbus(&ip, &["read:105:4001:2", "read:105:31146:1"]);
    let t = f32_of(&r[0]);
    assert!((-10.0..50.0).contains(&t), "temperature {t}: {r:?}");
    assert_eq!(words(&r[1]), vec![1]);
    let (_, page) = web.get("/settings");
    let row = page
        .split("<tr>")
        .find(|r| r.contains(PROTECT_PLUS_RF))
        .unwrap_or_else(|| panic!("{page}"));
    assert!(
        row.contains("Connected") && !row.contains("Not connected"),
        "{row}"
    );

    // Remove the rogue on the web page: no longer routed.
    let (code, body) = web.submit(
        "/settings",
        "/settings/wireless/remove",
        &[("rf_id", rogue_rf)],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(pymodbus(&ip, &["read:106:3060:2"])[0]["exception"], 10);

    // Rebuild the network (control API): every device is unpaired and
    // told to leave over the air (a Disassociation Notification after the
    // acknowledgement of its next report); the PowerTags ask to join
    // again and are only discovered; the Protect Plus device, identified
    // by its install code, joins again by itself.
    let details = s.get_json("/api/v1/devices/ps1");
    let channel = details["details"]["extra"]["radio"]["channel"]
        .as_u64()
        .unwrap();
    let pcap = s.dir.path().join("leave.pcap");
    let pcap_s = pcap.to_str().unwrap();
    command(
        &s,
        &format!(r#"{{"command":"sniffer","channel":{channel},"path":"{pcap_s}","on":true}}"#),
    );
    command(
        &s,
        r#"{"command":"radio_commission","device":"ps1","action":"rebuild"}"#,
    );
    assert_eq!(pymodbus(&ip, &["read:101:3060:2"])[0]["exception"], 10);
    advance(&s, 6.0);
    command(
        &s,
        &format!(r#"{{"command":"sniffer","channel":{channel},"on":false}}"#),
    );
    let text = tshark(
        pcap_s,
        Some("wpan.cmd == 0x03"),
        &["wpan.dst64", "wpan.disassoc.reason", "_ws.malformed"],
    );
    for rf in ["2a3b0001", "2a3b0002", &PROTECT_PLUS_RF.to_lowercase()[8..]] {
        let l = text
            .lines()
            .find(|l| l.replace(':', "").contains(rf))
            .unwrap_or_else(|| panic!("no leave to {rf}: {text}"));
        let cols: Vec<&str> = l.split('\t').collect();
        assert_eq!(cols.get(1).copied(), Some("0x01"), "reason: {l}");
        assert!(cols.get(2).is_none_or(|c| c.is_empty()), "malformed: {l}");
    }
    let pending = tshark(
        pcap_s,
        Some("wpan.frame_type == 0x2 && wpan.pending == 1"),
        &[],
    );
    assert!(
        !pending.trim().is_empty(),
        "no acknowledgement announcing a pending frame"
    );
    assert_well_formed(pcap_s);
    advance(&s, 6.0);
    advance(&s, 6.0);
    let list = wireless(&s);
    for rf in ["000000002A3B0001", "000000002A3B0002"] {
        assert!(
            list.iter()
                .any(|f| f["address"] == rf && f["state"] == "discovered"),
            "{rf} not discovered: {list:?}"
        );
    }
    assert_eq!(field(&list, "trh-store")["state"], "connected", "{list:?}");
    // Only pt-hvac is added back: at its next join request (within 5 s)
    // it is accepted, then reports (5 s later).
    command(
        &s,
        r#"{"command":"radio_commission","device":"ps1","action":"add","rf_id":"2A3B0002"}"#,
    );
    advance(&s, 6.0);
    advance(&s, 6.0);
    let list = wireless(&s);
    assert_eq!(field(&list, "pt-hvac")["state"], "connected", "{list:?}");
    assert_eq!(
        field(&list, "pt-lighting")["state"],
        "not_paired",
        "{list:?}"
    );
    let r = pymodbus(&ip, &["read:101:31146:1", "read:100:3060:2"]);
    assert_eq!(words(&r[0]), vec![1]);
    assert_eq!(r[1]["exception"], 10);
    // The audit log records the changes made through the control API and
    // the join.
    let d = s.get_json("/api/v1/devices/ps1");
    let tail = d["details"]["audit_tail"].to_string();
    assert!(tail.contains("joined with its install code"), "{tail}");

    // Protect Plus off (Settings page): a 16-character RF-ID asking to
    // join is discovered automatically, like an 8-character one.
    let other_pp = "8A3B00000000F00D";
    command(
        &s,
        &format!(r#"{{"command":"radio_inject","join":{{"rf_id":"0x{other_pp}","to":"ps1"}}}}"#),
    );
    advance(&s, 1.0);
    assert!(by_address(&wireless(&s), other_pp).is_none(), "on: ignored");
    let (code, body) = web.submit(
        "/settings",
        "/settings/wireless",
        &[("ieee802154", "on"), ("protect_plus", "off")],
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(r#"<option value="off" selected>"#),
        "Protect Plus shown off: {body}"
    );
    inject_until(
        &s,
        |n| {
            format!(
                r#"{{"command":"radio_inject","join":{{"rf_id":"0x{other_pp}","to":"ps1","nonce":{}}}}}"#,
                2 + n
            )
        },
        other_pp,
        "discovered",
    );
    let (code, body) = web.submit(
        "/settings",
        "/settings/wireless",
        &[("ieee802154", "on"), ("protect_plus", "maybe")],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("use on or off"), "{body}");
}
