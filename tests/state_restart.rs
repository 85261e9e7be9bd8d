//! End-to-end tests of what a `--state` directory keeps across restarts and
//! how it grows (issue 8 defects 1 and 2), against the real binary in host
//! mode with real clients: curl over HTTPS and tokio-modbus. Site octets
//! 150-153 (tests/common/mod.rs).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::web::Ps;
use common::{RunningSite, fast_site_text};

const YEAR_S: u64 = 365 * 86_400;

/// Runs the site `text` with the state directory `state` (which outlives
/// the run), ps1 at 127.77.`a`.10.
fn start(a: u8, text: &str, state: &Path) -> Ps {
    Ps::start_with(a, text.into(), &["--state", state.to_str().unwrap()])
}

impl Ps {
    fn site_time(&self) -> chrono::DateTime<chrono::Utc> {
        let v = self.site.get_json("/api/v1/clock");
        v["site_time"].as_str().unwrap().parse().unwrap()
    }
}

/// Reads `count` holding registers at `addr` of `unit`; panics on any
/// failure (no answer, exception).
async fn modbus_read(ip: &str, unit: u8, addr: u16, count: u16) -> Vec<u16> {
    use tokio_modbus::prelude::*;
    let sock = format!("{ip}:502").parse().unwrap();
    let mut ctx = tcp::connect_slave(sock, Slave(unit))
        .await
        .unwrap_or_else(|e| panic!("{ip}:502 refuses connections: {e}"));
    ctx.read_holding_registers(addr, count)
        .await
        .unwrap_or_else(|e| panic!("{ip} unit {unit}: {e}"))
        .unwrap_or_else(|e| panic!("{ip} unit {unit} @{addr}: exception {e:?}"))
}

/// The Panel Server's RTC (unit 255, DATETIME at 0x0073).
fn rtc(ip: &str) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    let w = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(modbus_read(ip, 255, 0x0073, 4));
    let date = chrono::NaiveDate::from_ymd_opt(
        2000 + i32::from(w[0] & 0x7F),
        u32::from(w[1] >> 8),
        u32::from(w[1] & 0xFF),
    )
    .unwrap_or_else(|| panic!("not a date: {w:?}"));
    let t = date
        .and_hms_milli_opt(
            u32::from(w[2] >> 8),
            u32::from(w[2] & 0xFF),
            u32::from(w[3]) / 1000,
            u32::from(w[3]) % 1000,
        )
        .unwrap();
    chrono::Utc.from_utc_datetime(&t)
}

/// Sets the Panel Server's RTC with FC16.
fn set_rtc(ip: &str, words: [u16; 4]) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use tokio_modbus::prelude::*;
        let sock = format!("{ip}:502").parse().unwrap();
        let mut ctx = tcp::connect_slave(sock, Slave(255)).await.unwrap();
        ctx.write_multiple_registers(0x0073, &words)
            .await
            .unwrap()
            .unwrap();
    });
}

/// Defect 1: a year-jumped site restarted with the same state directory
/// behaves like a power cycle of real hardware: the lock keeps its real
/// remaining time, the RTC continues, the audit log stays in order.
#[test]
fn a_restart_resumes_site_time_lockout_and_rtc() {
    let a = 150;
    let text = fast_site_text(a);
    let state = tempfile::tempdir().unwrap();
    let ps = start(a, &text, state.path());
    ps.advance(YEAR_S);
    // The RTC set over Modbus to 2031-02-03 04:05.
    let asked = Instant::now();
    set_rtc(&ps.ip, [31, (2 << 8) | 3, (4 << 8) | 5, 0]);
    let set = rtc(&ps.ip);
    let took = asked.elapsed().as_millis() as i64;
    let wanted: chrono::DateTime<chrono::Utc> = "2031-02-03T04:05:00Z".parse().unwrap();
    // The site clock runs at speed 1: the read comes as late as the write
    // and the read took in wall time (much more than usual on a loaded host).
    let late = (set - wanted).num_milliseconds();
    assert!(
        (0..=took + 100).contains(&late),
        "RTC set to {wanted}, reads {set}, {took} ms after the write was sent"
    );
    for i in 1..=9 {
        let (code, body) = ps.login(&format!("Wrong-{i}"));
        assert_eq!(code, 401, "attempt {i}: {body}");
    }
    let (code, body) = ps.login("Wrong-10");
    assert_eq!(code, 403);
    assert!(body.contains("locked for 10 minutes"), "{body}");
    let stopped_at = ps.site_time();
    let password = ps.password.clone();
    let status = ps.site.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");

    let ps = start(a, &text, state.path());
    assert_eq!(ps.password, password);
    let out = ps.site.stdout.lock().unwrap().clone();
    assert!(out.contains("resumed from the state"), "{out}");
    let resumed_at = ps.site_time();
    let gap = (resumed_at - stopped_at).num_seconds();
    assert!(
        (0..60).contains(&gap),
        "site time moved {gap} s over the restart"
    );
    // The RTC continues from where it stopped: no freeze, no jump back.
    let again = rtc(&ps.ip);
    let moved = (again - set).num_seconds();
    assert!((0..120).contains(&moved), "RTC moved {moved} s: {again}");
    ps.advance(60);
    let later = rtc(&ps.ip);
    assert!(later > again, "RTC frozen at {again}");
    // Locked for the lock's real remaining time (at most 10 minutes).
    let (code, body) = ps.login(&ps.password);
    assert_eq!(code, 403, "{body}");
    let minutes: u64 = body
        .split("Try again in ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no remaining time: {body}"));
    assert!(
        (1..=10).contains(&minutes),
        "the lock has {minutes} minutes left"
    );
    ps.advance(10 * 60);
    let (code, body) = ps.login(&ps.password);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("Home - EcoStruxure Panel Server"), "{body}");
    // Audit timestamps (the RTC's) never run backwards.
    let (code, csv) = ps.curl(&[&ps.url("/logs/audit.csv")]);
    assert_eq!(code, 200, "{csv}");
    let times: Vec<chrono::DateTime<chrono::Utc>> = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next()?.parse().ok())
        .collect();
    assert!(times.len() >= 12, "{csv}");
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "audit times out of order:\n{csv}"
    );
    assert!(csv.contains(",lockout,"), "{csv}");
}

/// Bytes under `dir`.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

/// Every Modbus server of the site answers a read; returns the slowest
/// answer time. Panel Servers are read at unit 255 (RTC), the EV Charging
/// Expert at the start of its BMS map, meters at unit 1.
fn slowest_modbus_answer(run: &RunningSite) -> (Duration, usize) {
    let devices = run.get_json("/api/v1/devices");
    let mut targets = Vec::new();
    for d in devices.as_array().unwrap() {
        let model = d["model"].as_str().unwrap_or_default();
        for s in d["services"].as_array().unwrap() {
            if s["name"] == "modbus" {
                let ip = s["address"].as_str().unwrap().rsplit_once(':').unwrap().0;
                let (unit, addr, count) = if model.starts_with("PAS") {
                    (255, 0x0073, 4)
                } else if model == "EVChargingExpert" {
                    // Its BMS map: version and station counts.
                    (255, 0, 4)
                } else {
                    (1, 3000, 2)
                };
                targets.push((ip.to_string(), unit, addr, count));
            }
        }
    }
    assert!(targets.len() >= 3, "{devices}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut slowest = Duration::ZERO;
    for (ip, unit, addr, count) in &targets {
        let t0 = Instant::now();
        rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(10),
                modbus_read(ip, *unit, *addr, *count),
            )
            .await
            .unwrap_or_else(|_| panic!("{ip} unit {unit}: no answer in 10 s"))
        });
        slowest = slowest.max(t0.elapsed());
    }
    (slowest, targets.len())
}

/// Defect 2: with a 20 MB signed image installed, a virtual year of jumps
/// keeps the state directory under twice its size after the install, and
/// every device answers Modbus within a second right after a one-year jump.
#[test]
fn a_year_with_a_large_firmware_image_keeps_the_state_small_and_the_site_answering() {
    let a = 152;
    let text = fast_site_text(a);
    let state = tempfile::tempdir().unwrap();
    let ps = start(a, &text, state.path());
    // A 20 MB lab-signed image (incompressible bytes).
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("payload.bin");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..20 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&payload, bytes).unwrap();
    let img = dir.path().join("fw.img");
    common::sign_firmware(&payload, "002.003.000", None, &img);
    assert_eq!(ps.login(&ps.password).0, 200);
    let (code, body) = ps.upload_firmware(&img);
    assert_eq!(code, 200, "{body}");
    ps.site.wait_until(Duration::from_secs(60), || {
        ps.login(&ps.password).1.contains("002.003.000")
    });
    let installed = dir_size(state.path());
    assert!(installed > 20 * 1024 * 1024, "{installed}");
    // A virtual year in weekly jumps, with Modbus traffic in between, then
    // a one-year jump.
    for _ in 0..52 {
        ps.advance(7 * 86_400);
        let (slowest, _) = slowest_modbus_answer(&ps.site);
        assert!(slowest < Duration::from_secs(5), "{slowest:?}");
    }
    ps.advance(YEAR_S);
    let (slowest, n) = slowest_modbus_answer(&ps.site);
    eprintln!("slowest of {n} Modbus answers right after a one-year jump: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a device took {slowest:?} to answer after a one-year jump"
    );
    // The image is still the installed one, and stored once.
    assert!(ps.login(&ps.password).1.contains("002.003.000"));
    let after = dir_size(state.path());
    eprintln!("state: {installed} bytes after the install, {after} after two virtual years");
    assert!(
        after < 2 * installed,
        "state grew from {installed} to {after} bytes"
    );
    // And after a restart the image is verified from that one copy.
    let status = ps.site.stop();
    assert!(status.success(), "{status:?}");
    let ps = start(a, &text, state.path());
    assert!(ps.login(&ps.password).1.contains("002.003.000"));
    let restarted = dir_size(state.path());
    assert!(restarted < 2 * installed, "{installed} -> {restarted}");
}
