//! End-to-end checks of the foundation against real clients: mbpoll reads
//! the Panel Server's unit-255 registers, curl drives the control API, the
//! power lifecycle opens and closes port 502, the clock moves the RTC, NV
//! state survives a restart, and bad site files are refused with the field
//! named.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::{RunningSite, fieldtwin, site_text, tool};

/// Runs mbpoll once against `ip` and returns the register values it printed.
fn mbpoll(args: &[&str]) -> Result<Vec<u16>, String> {
    let mut all = vec!["-1", "-m", "tcp", "-0"];
    all.extend_from_slice(args);
    let out = tool("mbpoll", &all);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let values: Vec<u16> = stdout
        .lines()
        .filter(|l| l.starts_with('['))
        .filter_map(|l| l.split(':').nth(1))
        .filter_map(|v| {
            let v = v.trim();
            match v.strip_prefix("0x") {
                Some(h) => u16::from_str_radix(h, 16).ok(),
                None => v.parse::<i64>().ok().map(|x| x as u16),
            }
        })
        .collect();
    if out.status.success() && !values.is_empty() {
        Ok(values)
    } else {
        Err(format!("{stdout}\n{stderr}"))
    }
}

fn ascii(words: &[u16]) -> String {
    words
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .take_while(|b| *b != 0)
        .map(char::from)
        .collect()
}

/// Reads the commercial reference (registers 61-68 at unit 255) with mbpoll.
fn commercial_reference(target: &[&str]) -> String {
    let mut args = vec!["-a", "255", "-t", "4", "-r", "60", "-c", "8"];
    args.extend_from_slice(target);
    ascii(&mbpoll(&args).unwrap())
}

fn rtc(ip: &str) -> DateTime<Utc> {
    // Registers 116-119 (protocol address 0x73) hold the DATETIME.
    let w = mbpoll(&["-a", "255", "-t", "4:hex", "-r", "115", "-c", "4", ip]).unwrap();
    let naive = chrono::NaiveDate::from_ymd_opt(
        2000 + i32::from(w[0] & 0x7F),
        u32::from(w[1] >> 8),
        u32::from(w[1] & 0x1F),
    )
    .unwrap()
    .and_hms_milli_opt(
        u32::from(w[2] >> 8),
        u32::from(w[2] & 0x3F),
        u32::from(w[3] / 1000),
        u32::from(w[3] % 1000),
    )
    .unwrap();
    Utc.from_utc_datetime(&naive)
}

#[test]
fn panel_server_slice() {
    let site = RunningSite::start(&site_text(10), &[]);
    let ip = "127.77.10.10";
    // Commercial reference: register 61 = protocol address 0x3C, 8 words.
    assert_eq!(commercial_reference(&[ip]), "PAS600L");
    let vendor = mbpoll(&["-a", "255", "-t", "4", "-r", "159", "-c", "16", ip]).unwrap();
    assert_eq!(ascii(&vendor), "Schneider Electric");
    let serial = mbpoll(&["-a", "255", "-t", "4", "-r", "100", "-c", "6", ip]).unwrap();
    assert_eq!(ascii(&serial), "NK231730251");
    let health = mbpoll(&["-a", "255", "-t", "4", "-r", "158", ip]).unwrap();
    assert_eq!(health, vec![0], "health nominal");
    let firmware = mbpoll(&["-a", "255", "-t", "4", "-r", "120", "-c", "6", ip]).unwrap();
    assert_eq!(ascii(&firmware), "002.002.000");
    // Unmapped register and read-only write get exceptions, and the device lives on.
    let err = mbpoll(&["-a", "255", "-t", "4", "-r", "0", ip]).unwrap_err();
    assert!(err.contains("Illegal data address"), "{err}");
    let err = mbpoll(&["-a", "255", "-t", "4", "-r", "60", ip, "1", "2"]).unwrap_err();
    assert!(err.contains("Illegal data address"), "{err}");
    let err = mbpoll(&["-a", "255", "-t", "3", "-r", "60", ip]).unwrap_err();
    assert!(err.contains("Illegal function"), "{err}");

    // The control API lists every device of the site with its services.
    let list = site.get_json("/api/v1/devices");
    let list = list.as_array().unwrap();
    // ps1, meter-tcp, dl1, csms1, evce1, cs1, cs2, meter-ev.
    assert_eq!(list.len(), 8);
    let ps = list.iter().find(|d| d["id"] == "ps1").unwrap();
    assert_eq!(ps["model"], "PAS600L");
    assert_eq!(ps["power"], "on");
    assert_eq!(ps["addresses"]["eth1"], ip);
    assert_eq!(ps["services"][0]["name"], "modbus");
    assert_eq!(ps["services"][0]["address"], format!("{ip}:502"));
    let one = site.get_json("/api/v1/devices/ps1");
    assert_eq!(one["id"], "ps1");

    // The start-up table names the devices, addresses and services.
    let printed = site.stdout.lock().unwrap().clone();
    assert!(
        printed.contains("ps1") && printed.contains("127.77.10.10:502"),
        "{printed}"
    );

    // `fieldtwin devices` asks the running site.
    let out = fieldtwin(&["devices", "--api", &site.api.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("PAS600L") && text.contains("evce1"),
        "{text}"
    );

    // The CLI sends the same commands.
    let api = site.api.to_string();
    let out = fieldtwin(&["power", "dl1", "off", "--api", &api]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("dl1") && text.contains("off"),
        "{text}"
    );
    assert_eq!(site.get_json("/api/v1/devices/dl1")["power"], "off");
    let out = fieldtwin(&["power", "nope", "on", "--api", &api]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no device \"nope\""),
        "{err}"
    );
    let out = fieldtwin(&["clock", "--advance", "3600", "--api", &api]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("elapsed 36"),
        "{text}"
    );
}

#[test]
fn malformed_modbus_never_kills_the_device() {
    use std::io::{Read, Write};
    let _site = RunningSite::start(&site_text(16), &[]);
    let addr: SocketAddr = "127.77.16.10:502".parse().unwrap();
    // A frame with a bad protocol id: the connection is closed.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[0, 1, 0, 9, 0, 6, 255, 3, 0, 0x3C, 0, 1])
        .unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "closed");
    // A truncated PDU gets exception 0x03; an unknown function 0x01, in order,
    // even when the frames arrive one byte at a time.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let frames = [
        vec![0, 7, 0, 0, 0, 4, 255, 3, 0, 0x3C],
        vec![0, 8, 0, 0, 0, 2, 255, 0x55],
    ];
    for b in frames.concat() {
        s.write_all(&[b]).unwrap();
    }
    let mut got = [0u8; 18];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got[..9], &[0, 7, 0, 0, 0, 3, 255, 0x83, 0x03]);
    assert_eq!(&got[9..], &[0, 8, 0, 0, 0, 3, 255, 0xD5, 0x01]);
    // A half-sent frame followed by a hang-up leaves the server healthy.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&[0, 9, 0, 0, 0, 6, 255]).unwrap();
    drop(s);
    assert_eq!(commercial_reference(&["127.77.16.10"]), "PAS600L");
}

#[test]
fn power_and_clock() {
    let site = RunningSite::start(&site_text(12), &[]);
    let ip = "127.77.12.10";
    let addr: SocketAddr = format!("{ip}:502").parse().unwrap();
    let before = rtc(ip);

    let reply = site.post_json("/api/v1/devices/ps1/power", r#"{"action":"off"}"#);
    assert_eq!(reply["power"], "off");
    let err = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        site.get_json("/api/v1/devices/ps1")["services"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let reply = site.post_json("/api/v1/devices/ps1/power", r#"{"action":"on"}"#);
    assert_eq!(reply["power"], "on");
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("502 open again");

    let clock = site.post_json("/api/v1/clock", r#"{"advance_s":86400}"#);
    assert!(clock["elapsed_s"].as_f64().unwrap() >= 86_400.0);
    let after = rtc(ip);
    let moved = (after - before).num_seconds();
    // One day plus the few seconds of the test (and 8 ppm of drift).
    assert!((86_400..86_460).contains(&moved), "RTC moved {moved} s");

    let reply = site.post_json("/api/v1/devices/ps1/power", r#"{"action":"cycle"}"#);
    assert_eq!(reply["power"], "on");

    // Speed and pause.
    let c = site.post_json("/api/v1/clock", r#"{"paused":true}"#);
    assert_eq!(c["paused"], true);
    let t1 = site.get_json("/api/v1/clock")["elapsed_s"]
        .as_f64()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t2 = site.get_json("/api/v1/clock")["elapsed_s"]
        .as_f64()
        .unwrap();
    assert_eq!(t1, t2, "paused clock stands still");
    site.post_json("/api/v1/clock", r#"{"paused":false}"#);
    let c = site.post_json("/api/v1/clock", r#"{"speed":1000}"#);
    assert_eq!(c["speed"], 1000.0);

    // Bad requests get 4xx with a JSON error that says what is allowed.
    let (status, body) = site.post("/api/v1/devices/ps1/power", r#"{"action":"explode"}"#);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("error") && body.contains("on"), "{body}");
    let (status, body) = site.post("/api/v1/devices/nope/power", r#"{"action":"on"}"#);
    assert_eq!(status, 404, "{body}");
    let (status, body) = site.post("/api/v1/clock", r#"{"speed":-3}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("between"), "{body}");
    let (status, body) = site.post("/api/v1/clock", r#"{"speed":2,"paused":true}"#);
    assert_eq!(status, 400, "{body}");
    let (status, _) = site.post("/api/v1/clock", "not json");
    assert!((400..500).contains(&status));
    let (status, _) = site.get("/api/v1/nothing");
    assert_eq!(status, 404);
}

#[test]
fn events_stream_reports_power_changes() {
    let site = RunningSite::start(&site_text(18), &[]);
    let url = site.url("/api/v1/events");
    let curl = std::process::Command::new("curl")
        .args(["-s", "-N", "--max-time", "5", &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    std::thread::sleep(Duration::from_millis(500));
    site.post_json("/api/v1/devices/dl1/power", r#"{"action":"cycle"}"#);
    let out = curl.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("event: power"), "{text}");
    assert!(text.contains(r#""device":"dl1","power":"off""#), "{text}");
    assert!(text.contains(r#""device":"dl1","power":"on""#), "{text}");
}

#[test]
fn state_survives_restart_and_shutdown_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let text = site_text(14);
    let ip = "127.77.14.10";
    let site = RunningSite::start(&text, &["--state", state.to_str().unwrap()]);
    // Set the RTC to 2030-05-06 07:08:09 with FC16 (4 registers at 0x73).
    let words = [30u16, (5 << 8) | 6, (7 << 8) | 8, 9000];
    let values: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    let mut args = vec!["-a", "255", "-t", "4", "-r", "115", ip];
    args.extend(values.iter().map(String::as_str));
    mbpoll(&args)
        .map(|_| ())
        .or_else(|e| {
            if e.contains("Written 4 references") {
                Ok(())
            } else {
                Err(e)
            }
        })
        .unwrap();
    let set = rtc(ip);
    assert_eq!(
        set.date_naive(),
        chrono::NaiveDate::from_ymd_opt(2030, 5, 6).unwrap()
    );
    let status = site.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");

    let site = RunningSite::start(&text, &["--state", state.to_str().unwrap()]);
    let again = rtc(ip);
    let kept = (again - set).num_seconds();
    assert!(
        (0..60).contains(&kept),
        "RTC kept across restart, moved {kept} s"
    );
    drop(site);
}

/// Writes `text` as a site file and runs `fieldtwin site check` on it;
/// returns (success, stderr).
fn site_check(dir: &std::path::Path, name: &str, text: &str) -> (bool, String) {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    let out = fieldtwin(&["site", "check", file.to_str().unwrap()]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn site_check_names_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = site_text(30);
    assert!(site_check(dir.path(), "good.toml", &good).0);

    let unknown = good.replace("serial = ", "serail_number = ");
    let (ok, err) = site_check(dir.path(), "unknown.toml", &unknown);
    assert!(!ok && err.contains("serail_number"), "{err}");

    let bad_ip = good.replace("ip = \"10.77.30.10\"", "ip = \"10.77.30.999\"");
    let (ok, err) = site_check(dir.path(), "bad_ip.toml", &bad_ip);
    assert!(
        !ok && err.contains("ip") && err.contains("10.77.30.999"),
        "{err}"
    );

    let outside = good.replace("ip = \"10.77.30.10\"", "ip = \"192.168.1.10\"");
    let (ok, err) = site_check(dir.path(), "outside.toml", &outside);
    assert!(!ok && err.contains("device[0].ip"), "{err}");

    let missing = fieldtwin(&["site", "check", "/nonexistent/site.toml"]);
    assert!(!missing.status.success());
    let file = dir.path().join("unknown.toml");
    let out = fieldtwin(&["run", "--site", file.to_str().unwrap()]);
    assert!(!out.status.success(), "run refuses a bad site");
}

/// Issue 8 defect 8: the model matrix of the site file. A PAS400 (one
/// Ethernet port, no Modbus-SL) with the default site's serial meter is
/// refused by `site check` and by `run`, naming the field and what the
/// model allows; its product label (device code) is shown by `site show`.
#[test]
fn site_check_refuses_what_the_model_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    let entry = site_text(30)
        .replacen("model = \"PAS600L\"", "model = \"PAS400\"", 1)
        .replacen(
            "topology = \"separated\"\neth2_ip = \"10.77.31.1\"\neth2_segment = \"ot\"\n",
            "",
            1,
        );
    assert!(entry.contains("model = \"PAS400\"") && !entry.contains("eth2_ip"));
    let (ok, err) = site_check(dir.path(), "pas400.toml", &entry);
    let says = "device[0].panel_server.serial[0]: PAS400 has no Modbus-SL port";
    assert!(!ok && err.contains(says) && err.contains("PAS600"), "{err}");
    let file = dir.path().join("pas400.toml");
    let out = fieldtwin(&[
        "run",
        "--site",
        file.to_str().unwrap(),
        "--api",
        "127.0.0.1:0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(says), "{err}");
    // The separated topology is refused first, naming its field.
    let separated = site_text(30).replacen("model = \"PAS600L\"", "model = \"PAS400\"", 1);
    let (ok, err) = site_check(dir.path(), "sep.toml", &separated);
    assert!(
        !ok && err.contains("device[0].panel_server.topology: PAS400 has one Ethernet port"),
        "{err}"
    );
    // The label of the default site's Panel Server, with its device code.
    let shown = String::from_utf8(fieldtwin(&["site", "show"]).stdout).unwrap();
    assert!(
        shown.contains("#   ps1: PAS600L  S/N NK231730251  Device code "),
        "{shown}"
    );
}

#[test]
fn unprivileged_run_moves_low_ports_by_the_documented_offset() {
    let is_root = tool("id", &["-u"]).stdout.starts_with(b"0");
    if !is_root {
        eprintln!("SKIPPED: needs root to switch to an unprivileged user");
        return;
    }
    let site = RunningSite::start_unprivileged(&site_text(8), &[]);
    let printed = site.stdout.lock().unwrap().clone();
    assert!(printed.contains("502 -> 10502"), "{printed}");
    let ps = site.get_json("/api/v1/devices/ps1");
    assert_eq!(ps["services"][0]["address"], "127.77.8.10:10502");
    assert_eq!(ps["services"][0]["port"], 502);
    assert_eq!(
        commercial_reference(&["-p", "10502", "127.77.8.10"]),
        "PAS600L"
    );
}
