//! End-to-end tests of the Panel Server's Modbus gateway and the field
//! devices behind it, with real clients (mbpoll, python pymodbus,
//! tokio-modbus) against the `fieldtwin` binary in host mode.
//!
//! Site octets 20-39 belong to these tests (see tests/common/mod.rs):
//! 20 reads, 22 errors, 24 energy, 26/28/30 determinism, 38 digital inputs
//! and DPWS probe types.

mod common;

use std::process::Command;

use common::{RunningSite, site_text, tool};

const START: &str = "start = \"2026-03-02T00:00:00Z\"\n";

/// The default site moved to octets `a`/`a+1`, with a fixed start time and seed.
fn site(a: u8, seed: u64) -> String {
    site_text(a).replace("seed = 1\n", &format!("seed = {seed}\n{START}"))
}

fn ps_ip(a: u8) -> String {
    format!("127.77.{a}.10")
}

fn pause(s: &RunningSite) {
    s.post_json("/api/v1/clock", r#"{"paused":true}"#);
}

/// Runs mbpoll once; returns stdout + stderr.
fn mbpoll(args: &[&str]) -> String {
    let mut all = vec!["-1", "-o", "3"];
    all.extend_from_slice(args);
    let out = tool("mbpoll", &all);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Values `[reg]: value` printed by mbpoll, in order.
fn mbpoll_values(text: &str) -> Vec<f64> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix('['))
        .filter_map(|l| l.split_once("]:"))
        .map(|(_, v)| v.trim().parse::<f64>().unwrap_or(f64::NAN))
        .collect()
}

/// Runs the pymodbus client of tests/gateway_client.py.
fn pymodbus(host: &str, ops: &[&str]) -> Vec<serde_json::Value> {
    let root = env!("CARGO_MANIFEST_DIR");
    let python = format!("{root}/.venv/bin/python");
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} is missing: scripts/test creates the venv with pymodbus \
         (or: python3 -m venv .venv && .venv/bin/pip install pymodbus)"
    );
    let out = Command::new(&python)
        .arg(format!("{root}/tests/gateway_client.py"))
        .arg(host)
        .arg("502")
        .args(ops)
        .output()
        .expect("run python");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pymodbus client failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn words(v: &serde_json::Value) -> Vec<u16> {
    v["words"]
        .as_array()
        .unwrap_or_else(|| panic!("not a data answer: {v}"))
        .iter()
        .map(|w| w.as_u64().unwrap() as u16)
        .collect()
}

fn f32_of(w: &[u16]) -> f64 {
    f64::from(f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1])))
}

fn ascii(w: &[u16]) -> String {
    w.iter()
        .flat_map(|x| x.to_be_bytes())
        .take_while(|b| *b != 0)
        .map(char::from)
        .collect()
}

#[test]
fn mbpoll_and_pymodbus_read_the_panel_server_a_powertag_and_the_serial_meter() {
    let s = RunningSite::start(&site(20, 1), &[]);
    pause(&s);
    let ip = ps_ip(20);

    // Unit 255: commercial reference (register 61, 16 words) and serial number (101).
    let out = mbpoll(&["-a", "255", "-r", "61", "-c", "8", "-t", "4", &ip]);
    let w: Vec<u16> = mbpoll_values(&out).iter().map(|v| *v as u16).collect();
    assert_eq!(ascii(&w), "PAS600L", "{out}");

    // Unit 100 (first wireless device, pt-lighting, single phase): P total at 3060.
    let out = mbpoll(&[
        "-a", "100", "-r", "3054", "-c", "4", "-t", "4:float", "-B", &ip,
    ]);
    let p = mbpoll_values(&out);
    assert_eq!(p.len(), 4, "{out}");
    let (pa, total) = (p[0], p[3]);
    assert!(
        total > 50.0 && total < 3000.0,
        "PowerTag power {total} W: {out}"
    );
    assert!(
        (pa - total).abs() < 0.01 * total,
        "single phase: P_A {pa} = P total {total}"
    );
    let v = mbpoll_values(&mbpoll(&[
        "-a", "100", "-r", "3028", "-t", "4:float", "-B", &ip,
    ]))[0];
    let i = mbpoll_values(&mbpoll(&[
        "-a", "100", "-r", "3000", "-t", "4:float", "-B", &ip,
    ]))[0];
    let pf = mbpoll_values(&mbpoll(&[
        "-a", "100", "-r", "3084", "-t", "4:float", "-B", &ip,
    ]))[0];
    assert!(
        (v * i * pf - total).abs() < 0.005 * total,
        "V*I*PF = {} vs P {total}",
        v * i * pf
    );
    assert!((0.5..=1.0).contains(&pf), "{pf}");

    // Serial meter at its own unit id 1: V A-N, B-N, C-N, through the RS-485 line.
    let out = mbpoll(&[
        "-a", "1", "-r", "3028", "-c", "3", "-t", "4:float", "-B", &ip,
    ]);
    let volts = mbpoll_values(&out);
    assert_eq!(volts.len(), 3, "{out}");
    for v in &volts {
        assert!(
            (220.0..240.0).contains(v),
            "serial meter voltage {v}: {out}"
        );
    }
    let sl_p = mbpoll_values(&mbpoll(&[
        "-a", "1", "-r", "3054", "-c", "4", "-t", "4:float", "-B", &ip,
    ]));
    assert!(
        (sl_p[0] + sl_p[1] + sl_p[2] - sl_p[3]).abs() < 0.01 * sl_p[3].max(0.1),
        "{sl_p:?} kW"
    );

    // Modbus TCP meter behind the gateway at virtual unit 10, reached over the OT network.
    let tcp_p = mbpoll_values(&mbpoll(&[
        "-a", "10", "-r", "3060", "-t", "4:float", "-B", &ip,
    ]));
    assert!(
        tcp_p[0] > 1.0 && tcp_p[0] < 120.0,
        "PM5560 total power {tcp_p:?} kW"
    );

    // pymodbus reads the same values (the clock is paused).
    let r = pymodbus(
        &ip,
        &[
            "read:255:61:8",
            "read:100:3060:2",
            "read:1:3028:6",
            "read:10:3060:2",
        ],
    );
    assert_eq!(ascii(&words(&r[0])), "PAS600L");
    assert!(
        (f32_of(&words(&r[1])) - total).abs() < 0.01,
        "{r:?} vs {total}"
    );
    let w = words(&r[2]);
    for (k, v) in volts.iter().enumerate() {
        assert!((f32_of(&w[2 * k..]) - v).abs() < 0.01, "{r:?} vs {volts:?}");
    }
    assert!((f32_of(&words(&r[3])) - tcp_p[0]).abs() < 0.01);

    // Identification of the wireless device: its own address and RF-ID.
    let r = pymodbus(&ip, &["read:100:31026:5"]);
    assert_eq!(words(&r[0]), vec![100, 0, 0, 0x2A3B, 0x0001]);
}

#[test]
fn gateway_errors_unknown_unit_powered_off_meter_and_read_only_writes() {
    let s = RunningSite::start(&site(22, 1), &[]);
    let ip = ps_ip(22);

    let out = mbpoll(&["-a", "77", "-r", "3060", "-t", "4:float", "-B", &ip]);
    assert!(out.contains("Gateway path unavailable"), "{out}");
    let r = pymodbus(&ip, &["read:77:3060:2"]);
    assert_eq!(r[0]["exception"], 10, "{r:?}");

    // The serial meter answers, then is powered off through the control API.
    let r = pymodbus(&ip, &["read:1:3028:2"]);
    assert!(f32_of(&words(&r[0])) > 200.0);
    let reply = s.post_json(
        "/api/v1/devices/ps1/fields/meter-sl/power",
        r#"{"action":"off"}"#,
    );
    assert_eq!(reply["id"], "ps1");
    let out = mbpoll(&["-a", "1", "-r", "3028", "-t", "4:float", "-B", &ip]);
    assert!(out.contains("Target device failed to respond"), "{out}");
    let r = pymodbus(&ip, &["read:1:3028:2"]);
    assert_eq!(r[0]["exception"], 11, "{r:?}");
    // The same through the generic command endpoint, back on.
    s.post_json(
        "/api/v1/commands",
        r#"{"command":"field_power","device":"ps1","field":"meter-sl","on":true}"#,
    );
    let r = pymodbus(&ip, &["read:1:3028:2"]);
    assert!(f32_of(&words(&r[0])) > 200.0, "{r:?}");
    // An unknown field device is a 400 that lists the real ones.
    let (code, body) = s.post(
        "/api/v1/devices/ps1/fields/nope/power",
        r#"{"action":"off"}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("meter-sl"), "{body}");

    // Writes: total energy 3204 is read-only -> 0x02; partial energy reset 3260 takes 0.
    let r = pymodbus(
        &ip,
        &[
            "write:100:3204:0,0,0,0",
            "write:100:3260:0,0,0,0",
            "write:1:3204:0,0,0,0",
        ],
    );
    assert_eq!(r[0]["exception"], 2, "{r:?}");
    assert!(r[1].get("words").is_some(), "partial reset accepted: {r:?}");
    assert_eq!(
        r[2]["exception"], 2,
        "serial meter registers are read-only: {r:?}"
    );
    let out = mbpoll(&["-a", "100", "-r", "3204", "-t", "4", &ip, "0"]);
    assert!(
        out.to_lowercase().contains("illegal"),
        "FC6 on a PowerTag: {out}"
    );

    // Modbus TCP meter powered off -> 0x0B through the gateway.
    s.post_json("/api/v1/devices/meter-tcp/power", r#"{"action":"off"}"#);
    let r = pymodbus(&ip, &["read:10:3060:2"]);
    assert_eq!(r[0]["exception"], 11, "{r:?}");

    // A wireless device moved out of radio range: after its timeout (three
    // 5 s reporting periods) no-value markers and 31146 = 0.
    s.post_json(
        "/api/v1/devices/ps1/fields/pt-hvac/radio",
        r#"{"in_contact":false}"#,
    );
    s.post_json("/api/v1/clock", r#"{"advance_s":20}"#);
    let r = pymodbus(
        &ip,
        &[
            "read:101:3060:2",
            "read:101:3204:4",
            "read:101:31146:1",
            "read:102:31146:1",
        ],
    );
    assert_eq!(words(&r[0]), vec![0xFFC0, 0]);
    assert_eq!(words(&r[1]), vec![0x8000, 0, 0, 0]);
    assert_eq!(words(&r[2]), vec![0]);
    assert_eq!(words(&r[3]), vec![1]);
}

/// Reads registers with tokio-modbus (a third real client).
fn tokio_read(ip: &str, unit: u8, reg: u16, count: u16) -> Vec<u16> {
    use tokio_modbus::prelude::*;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let addr = format!("{ip}:502").parse().unwrap();
        let mut ctx = tcp::connect_slave(addr, Slave(unit))
            .await
            .expect("connect");
        ctx.read_holding_registers(reg - 1, count)
            .await
            .expect("io")
            .expect("exception")
    })
}

#[test]
fn one_virtual_hour_adds_the_integral_of_power_to_total_energy() {
    let s = RunningSite::start(&site(24, 1), &[]);
    pause(&s);
    let ip = ps_ip(24);
    let energy = || {
        let w = tokio_read(&ip, 101, 3204, 4);
        w.iter().fold(0i64, |a, x| (a << 16) | i64::from(*x))
    };
    let power = || f32_of(&tokio_read(&ip, 101, 3060, 2));
    let e0 = energy();
    let mut integral_wh = 0.0;
    let mut p_prev = power();
    for _ in 0..60 {
        s.post_json("/api/v1/clock", r#"{"advance_s":60}"#);
        let p = power();
        integral_wh += (p_prev + p) / 2.0 * 60.0 / 3600.0;
        p_prev = p;
    }
    let e1 = energy();
    let delta = (e1 - e0) as f64;
    eprintln!("pt-hvac: energy +{delta} Wh, power integral {integral_wh:.1} Wh");
    assert!(integral_wh > 100.0, "pt-hvac draws power: {integral_wh} Wh");
    assert!(
        (delta - integral_wh).abs() <= 0.01 * integral_wh,
        "energy rose by {delta} Wh, power integral {integral_wh:.1} Wh"
    );
}

/// Registers of every field device read at virtual time `at` seconds.
fn snapshot(a: u8, seed: u64, at: f64) -> Vec<Vec<u16>> {
    let s = RunningSite::start(&site(a, seed), &[]);
    pause(&s);
    let elapsed = s.get_json("/api/v1/clock")["elapsed_s"].as_f64().unwrap();
    s.post_json(
        "/api/v1/clock",
        &format!(r#"{{"advance_s":{}}}"#, at - elapsed),
    );
    let ip = ps_ip(a);
    let mut out = Vec::new();
    for unit in [100u8, 101, 102, 103] {
        out.push(tokio_read(&ip, unit, 3000, 6));
        out.push(tokio_read(&ip, unit, 3028, 6));
        out.push(tokio_read(&ip, unit, 3054, 8));
        out.push(tokio_read(&ip, unit, 3204, 4));
    }
    out.push(tokio_read(&ip, 104, 4001, 2));
    out.push(tokio_read(&ip, 1, 3000, 6));
    out.push(tokio_read(&ip, 1, 3054, 8));
    out.push(tokio_read(&ip, 1, 3204, 4));
    out.push(tokio_read(&ip, 10, 3054, 8));
    out.push(tokio_read(&ip, 10, 3204, 4));
    out
}

#[test]
fn two_runs_with_the_same_seed_read_identical_registers_at_the_same_virtual_time() {
    let at = 9.0 * 3600.0 + 2.5;
    let a = snapshot(26, 7, at);
    let b = snapshot(28, 7, at);
    assert_eq!(a, b, "same seed, same virtual time");
    let c = snapshot(30, 8, at);
    assert_ne!(a, c, "another seed gives other values");
}

#[test]
fn bench_physics_prints_its_table() {
    let out = common::fieldtwin(&["bench", "physics"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("pt-lighting") && text.contains("meter-tcp"),
        "{text}"
    );
    assert!(text.contains("stepped and jumped runs agree"), "{text}");
    assert!(text.contains("wall time:"), "{text}");
}

#[test]
fn modbus_service_per_interface_and_the_128_client_limit() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    let s = RunningSite::start(&site(32, 1), &[]);
    let eth1 = ps_ip(32);
    let eth2 = "127.77.33.1".to_string();
    // Separated topology: ETH1 activated, ETH2 deactivated (DOCA0211).
    assert!(
        TcpStream::connect((eth2.as_str(), 502)).is_err(),
        "ETH2 must be closed"
    );
    let r = pymodbus(&eth1, &["read:255:61:4"]);
    assert_eq!(ascii(&words(&r[0])), "PAS600L");

    // Activate ETH2 through the REST call, deactivate ETH1 through a Command.
    s.post_json(
        "/api/v1/devices/ps1/modbus-service",
        r#"{"interface":"eth2","enabled":true}"#,
    );
    let r = pymodbus(&eth2, &["read:255:61:4"]);
    assert_eq!(ascii(&words(&r[0])), "PAS600L");
    s.post_json(
        "/api/v1/commands",
        r#"{"command":"modbus_service","device":"ps1","interface":"eth1","enabled":false}"#,
    );
    assert!(
        TcpStream::connect((eth1.as_str(), 502)).is_err(),
        "ETH1 must be closed now"
    );
    let (code, body) = s.post(
        "/api/v1/devices/ps1/modbus-service",
        r#"{"interface":"eth9","enabled":true}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("eth1, eth2 or wifi"), "{body}");
    // The choice is kept in NV memory across a power cycle.
    s.post_json("/api/v1/devices/ps1/power", r#"{"action":"cycle"}"#);
    assert!(
        TcpStream::connect((eth1.as_str(), 502)).is_err(),
        "ETH1 stays closed after reboot"
    );
    let r = pymodbus(&eth2, &["read:255:61:4"]);
    assert_eq!(ascii(&words(&r[0])), "PAS600L");

    // At most 128 simultaneous clients: the 129th is accepted and closed.
    let mut clients: Vec<TcpStream> = (0..128)
        .map(|_| TcpStream::connect((eth2.as_str(), 502)).expect("client"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect((eth2.as_str(), 502)).expect("connect");
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = extra.write_all(&[0, 1, 0, 0, 0, 6, 255, 3, 0, 60, 0, 1]);
    let mut buf = [0u8; 32];
    let n = extra.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the 129th client must be refused");
    // The first 128 are served.
    let c = &mut clients[0];
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(&[0, 1, 0, 0, 0, 6, 255, 3, 0, 60, 0, 1])
        .unwrap();
    let n = c.read(&mut buf).unwrap();
    assert_eq!(&buf[7..9], &[3, 2], "{:?}", &buf[..n]);
}

#[test]
fn energy_registers_survive_a_restart_with_kept_state() {
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().join("state");
    let args = ["--state", state_arg.to_str().unwrap()];
    let ip = ps_ip(34);
    let energy = |unit: u8| {
        let w = tokio_read(&ip, unit, 3204, 4);
        w.iter().fold(0i64, |a, x| (a << 16) | i64::from(*x))
    };
    let s = RunningSite::start(&site(34, 1), &args);
    pause(&s);
    let e0 = (energy(101), energy(1));
    s.post_json("/api/v1/clock", r#"{"advance_s":3600}"#);
    let e1 = (energy(101), energy(1));
    assert!(e1.0 > e0.0 && e1.1 > e0.1, "{e0:?} -> {e1:?}");
    assert!(s.stop().success());
    let s = RunningSite::start(&site(34, 1), &args);
    pause(&s);
    let e2 = (energy(101), energy(1));
    // Saved every 15 virtual minutes: after one hour the last save is at most e1.
    assert!(e2.0 > e0.0 && e2.0 <= e1.0, "PowerTag {e0:?} {e1:?} {e2:?}");
    assert!(
        e2.1 > e0.1 && e2.1 <= e1.1,
        "serial meter {e0:?} {e1:?} {e2:?}"
    );
    drop(s);
}

#[test]
fn mbpoll_rtu_talks_to_the_serial_meter_on_the_line_pty() {
    let dir = tempfile::tempdir().unwrap();
    let pty = dir.path().join("modbus-sl");
    let pty = pty.to_str().unwrap();
    let text = site(36, 1).replacen(
        "serial_line = {",
        &format!("serial_pty = \"{pty}\"\nserial_line = {{"),
        1,
    );
    assert!(
        text.contains("serial_pty"),
        "the default site has a serial_line"
    );
    let s = RunningSite::start(&text, &[]);
    pause(&s);
    let rtu = ["-m", "rtu", "-b", "19200", "-P", "even"];
    let mut args = rtu.to_vec();
    args.extend_from_slice(&[
        "-a", "1", "-r", "3028", "-c", "3", "-t", "4:float", "-B", pty,
    ]);
    let out = mbpoll(&args);
    let volts = mbpoll_values(&out);
    assert_eq!(volts.len(), 3, "{out}");
    // The same values as through the gateway (clock paused).
    let r = pymodbus(&ps_ip(36), &["read:1:3028:6"]);
    let w = words(&r[0]);
    for (k, v) in volts.iter().enumerate() {
        assert!((f32_of(&w[2 * k..]) - v).abs() < 0.01, "{volts:?} vs {w:?}");
    }
    // No slave 9 on the line: the master times out.
    let mut args = rtu.to_vec();
    args.extend_from_slice(&["-a", "9", "-r", "3028", "-t", "4:float", "-B", pty]);
    let out = mbpoll(&args);
    assert!(out.contains("timed out"), "{out}");
    drop(s);
}

/// An INT64 of four registers (most significant first).
fn i64_of(w: &[u16]) -> i64 {
    w.iter().fold(0i64, |a, x| (a << 16) | i64::from(*x))
}

/// Runs tests/security/wsd_probe.py (the PyPI `wsdiscovery` codec) against
/// `ip` with a directed Probe for `types` (`{namespace}local`).
fn wsd_probe(ip: &str, types: &[&str]) -> serde_json::Value {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = Command::new(format!("{root}/.venv/bin/python"));
    cmd.arg(format!("{root}/tests/security/wsd_probe.py"))
        .arg(ip);
    for t in types {
        cmd.args(["--type", t]);
    }
    let out = cmd.output().expect("run wsd_probe.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wsd_probe: {text} {out:?}");
    serde_json::from_str(text.trim()).unwrap()
}

/// Issue 8 defects 6 and 8 in host mode: the default site's PAS600L answers
/// its digital-input registers (1001+ at unit 255, tokio-modbus and
/// pymodbus): DI1 counts the water meter's pulses on virtual time and the
/// control API's pulses, DI2 follows its contact; counters reset with FC16
/// and survive a restart with kept state. Its DPWS answers a real
/// WS-Discovery client's directed Probe for the Schneider types and not for
/// an unrelated type. Site octet 38.
#[test]
fn digital_inputs_of_the_pas600l_and_dpws_probe_types() {
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().join("state");
    let args = ["--state", state_arg.to_str().unwrap()];
    let ip = ps_ip(38);
    let s = RunningSite::start(&site(38, 1), &args);
    pause(&s);
    // Validity and mode: DI1 pulse (0), DI2 status (1); names as ASCII.
    assert_eq!(tokio_read(&ip, 255, 1001, 4), vec![1, 1, 0, 1]);
    assert_eq!(ascii(&tokio_read(&ip, 255, 1005, 20)), "Water meter");
    assert_eq!(ascii(&tokio_read(&ip, 255, 1025, 20)), "Incomer breaker");
    // One virtual hour of the meter's 30 pulses/h, 10 litres each.
    s.post_json("/api/v1/clock", r#"{"advance_s":3600}"#);
    assert_eq!(i64_of(&tokio_read(&ip, 255, 1099, 4)), 30);
    assert_eq!(i64_of(&tokio_read(&ip, 255, 1123, 4)), 300);
    assert_eq!(
        tokio_read(&ip, 255, 1087, 2),
        vec![0x4120, 0],
        "10.0 l/pulse"
    );
    // Five pulses through the control API.
    s.post_json("/api/v1/devices/ps1/digital-inputs/1", r#"{"pulses":5}"#);
    assert_eq!(i64_of(&tokio_read(&ip, 255, 1099, 4)), 35);
    // DI2: the breaker's contact is closed (active); open, then close again
    // through the generic command endpoint: one operation.
    assert_eq!(tokio_read(&ip, 255, 1053, 2), vec![0, 1]);
    s.post_json(
        "/api/v1/devices/ps1/digital-inputs/2",
        r#"{"closed":false}"#,
    );
    assert_eq!(tokio_read(&ip, 255, 1054, 1), vec![0]);
    s.post_json(
        "/api/v1/commands",
        r#"{"command":"digital_input","device":"ps1","input":2,"closed":true}"#,
    );
    assert_eq!(tokio_read(&ip, 255, 1054, 1), vec![1]);
    assert_eq!(tokio_read(&ip, 255, 1073, 2), vec![0, 1]);
    // Wrong commands say what is allowed.
    let (code, body) = s.post("/api/v1/devices/ps1/digital-inputs/2", r#"{"pulses":3}"#);
    assert!(code == 400 && body.contains("status input"), "{body}");
    let (code, body) = s.post("/api/v1/devices/ps1/digital-inputs/3", r#"{"closed":true}"#);
    assert!(
        code == 404 && body.contains("use 1 (DI1) or 2 (DI2)"),
        "{body}"
    );
    let (code, body) = s.post(
        "/api/v1/devices/meter-tcp/digital-inputs/1",
        r#"{"pulses":1}"#,
    );
    assert_eq!(code, 400, "{body}");
    // FC16: a 0 resets the resettable pulse count, anything else is 0x03;
    // the non-resettable counter stays; a gap of the Modbus file is 0x02.
    let r = pymodbus(
        &ip,
        &[
            "write:255:1107:0,0,0,0",
            "write:255:1107:0,0,0,1",
            "read:255:1107:4",
            "read:255:1131:1",
        ],
    );
    assert!(r[0].get("words").is_some(), "reset accepted: {r:?}");
    assert_eq!(r[1]["exception"], 3, "{r:?}");
    assert_eq!(words(&r[2]), vec![0, 0, 0, 0]);
    assert_eq!(r[3]["exception"], 2, "{r:?}");
    assert_eq!(i64_of(&tokio_read(&ip, 255, 1099, 4)), 35);
    assert_eq!(tokio_read(&ip, 255, 1115, 1), vec![26], "reset date: 2026");

    // DPWS: the Schneider types with their namespaces, alone or together
    // with wsdp:Device, find the device; an unrelated type does not.
    let gateway = "{http://www.schneider-electric.com}GatewayServer";
    let panel = "{http://www.schneider-electric.com/CyberSecurity}EcoStruxurePanelServer";
    let device = "{http://schemas.xmlsoap.org/ws/2006/02/devprof}Device";
    for types in [
        vec![],
        vec![gateway],
        vec![panel],
        vec![device, gateway, panel],
    ] {
        let found = wsd_probe(&ip, &types);
        let m = &found["matches"][0];
        assert!(
            m["xaddrs"][0].as_str().unwrap_or_default().contains(&ip),
            "{types:?}: {found}"
        );
        let listed: Vec<&str> = m["types"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        assert_eq!(
            listed,
            [
                "http://schemas.xmlsoap.org/ws/2006/02/devprof:Device",
                "http://www.schneider-electric.com:GatewayServer",
                "http://www.schneider-electric.com/CyberSecurity:EcoStruxurePanelServer",
            ],
            "{found}"
        );
    }
    for unrelated in [
        "{http://schemas.microsoft.com/windows/pub/2005/07}Computer",
        "{http://example.com/other}GatewayServer",
    ] {
        let found = wsd_probe(&ip, &[device, unrelated]);
        assert_eq!(
            found["matches"],
            serde_json::json!([]),
            "{unrelated}: {found}"
        );
    }

    // The counters are kept in NV memory across a restart.
    assert!(s.stop().success());
    let s = RunningSite::start(&site(38, 1), &args);
    pause(&s);
    assert_eq!(i64_of(&tokio_read(&ip, 255, 1099, 4)), 35);
    assert_eq!(tokio_read(&ip, 255, 1073, 2), vec![0, 1]);
    drop(s);
}
