//! Issue 13: the Panel Server logs its field devices every 10 minutes and
//! publishes the rows every hour as CSV files to a real HTTPS receiver
//! (Python's http.server with ssl, started here on loopback, its
//! certificate signed by a CA made here with openssl), in the multipart
//! field `datafile1`, over TLS verified against that CA.
//!
//! The clock is paused and jumped an hour at a time, so 24 virtual hours
//! take seconds. Then the receiver goes away for 6 virtual hours, the Panel
//! Server is power-cycled in the middle (clock paused: no instant is missed),
//! and the receiver comes back: every row arrives exactly once, in order,
//! without gaps.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::datalog::{self, advance, check_rows, failures, publications, stats};
use common::{RunningSite, fast_site_text, free_port, site_text};

const RECEIVER: &str = r#""""HTTPS receiver of Panel Server publications for tests/ps_datalog.rs.

Usage: receiver.py CERT KEY PORT OUTDIR BIND_ADDRESS
Accepts POST multipart/form-data, stores the part named "datafile1" as
OUTDIR/<filename> (a second file of the same name goes to <filename>.dup),
appends one line per request to OUTDIR/requests.log, answers 201.
TLS 1.2 minimum.
"""
import http.server
import os
import ssl
import sys
import time

cert, key, port, out, bind = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        ctype = self.headers.get("Content-Type", "")
        boundary = None
        for part in ctype.split(";"):
            part = part.strip()
            if part.startswith("boundary="):
                boundary = part[len("boundary="):].strip('"')
        stored = []
        if boundary:
            for chunk in body.split(b"--" + boundary.encode()):
                if b"\r\n\r\n" not in chunk:
                    continue
                head, content = chunk.split(b"\r\n\r\n", 1)
                head = head.decode("utf-8", "replace")
                if 'name="datafile1"' not in head or "filename=" not in head:
                    continue
                name = head.split('filename="', 1)[1].split('"', 1)[0]
                if content.endswith(b"\r\n"):
                    content = content[:-2]
                path = os.path.join(out, os.path.basename(name))
                if os.path.exists(path):
                    # The same file again (a retry) replaces it; another
                    # file under a name already used is a duplicate.
                    with open(path, "rb") as f:
                        same = f.read() == content
                    if same:
                        name += " (retry)"
                    else:
                        path += ".dup"
                with open(path, "wb") as f:
                    f.write(content)
                stored.append(name)
        with open(os.path.join(out, "requests.log"), "a") as f:
            f.write("%s %s %s\n" % (self.client_address[0], self.path, ",".join(stored) or "-"))
        if os.path.exists(os.path.join(out, "slow")):
            # Stored, but the answer comes late: the test cuts the power now.
            time.sleep(5)
        code = 201 if stored else 400
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
ctx.load_cert_chain(cert, key)
srv = http.server.ThreadingHTTPServer((bind, port), Handler)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("ready", flush=True)
srv.serve_forever()
"#;

struct Receiver(Child);

impl Receiver {
    /// The receiver on `bind:port`, inside namespace `netns` if given.
    fn start(dir: &Path, bind: &str, port: u16, out: &Path, netns: Option<&str>) -> Self {
        let script = dir.join("receiver.py");
        std::fs::write(&script, RECEIVER).unwrap();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, &datalog::python()]);
                c
            }
            None => Command::new(datalog::python()),
        };
        let mut child = cmd
            .arg(&script)
            .arg(dir.join("server.pem"))
            .arg(dir.join("server.key"))
            .arg(port.to_string())
            .arg(out)
            .arg(bind)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the receiver");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the receiver did not start");
        Self(child)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Per device name (from the file name): every data line received, in
/// publication order, with the count of duplicated file names.
fn received(out: &Path) -> (BTreeMap<String, Vec<String>>, usize, usize) {
    let mut names: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".csv") || n.ends_with(".dup"))
        .collect();
    // Publication time is part of the name: sort by it.
    names.sort_by_key(|n| {
        (
            datalog::publication_stamp(n).unwrap_or("").to_string(),
            n.clone(),
        )
    });
    let dups = names.iter().filter(|n| n.ends_with(".dup")).count();
    let mut rows: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in &names {
        let text = std::fs::read_to_string(out.join(n)).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert!(lines.len() > 8, "{n}: too short: {text:?}");
        assert_eq!(lines[2], "");
        datalog::add_file(&mut rows, n, &text);
    }
    (rows, names.len(), dups)
}

#[test]
fn a_day_of_logging_published_hourly_and_a_six_hour_outage_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    datalog::make_certs(dir.path(), "server", "127.0.0.1");
    let out = dir.path().join("received");
    std::fs::create_dir(&out).unwrap();
    let port = free_port();
    let mut receiver = Some(Receiver::start(dir.path(), "127.0.0.1", port, &out, None));
    let config = format!(
        "[device.panel_server.datalog]\nperiod_min = 10\n\n[device.panel_server.publication]\nurl = \"https://127.0.0.1:{port}/upload\"\nca_file = \"{}\"\n\n",
        dir.path().join("ca.pem").display()
    );
    let text = site_text(160).replacen(
        "[[device.panel_server.serial]]",
        &format!("{config}[[device.panel_server.serial]]"),
        1,
    );
    let site = RunningSite::start(&text, &[]);
    site.wait_until(Duration::from_secs(30), || {
        site.get_json("/api/v1/devices/ps1")["power"] == "on" && stats(&site).is_object()
    });
    site.post_json("/api/v1/clock", "{\"paused\": true}");
    let devices = stats(&site)["devices"].as_object().unwrap().len();
    assert_eq!(
        devices, 6,
        "the default Panel Server logs its 6 field devices"
    );

    let started = std::time::Instant::now();
    for h in 1..=24u64 {
        advance(&site, 3600);
        site.wait_until(Duration::from_secs(30), || publications(&site) == h);
    }
    let day = started.elapsed();
    let (rows, files, dups) = received(&out);
    assert_eq!(dups, 0, "a file name arrived twice");
    let total = check_rows(&site, &rows);
    let requests = std::fs::read_to_string(out.join("requests.log")).unwrap();
    assert_eq!(requests.lines().count(), files, "one POST per file");
    // 24 publications, each with one file per device (no day boundary is
    // crossed inside an hour except at midnight, where a device gets two).
    assert!(files >= 24 * devices, "{files} files for 24 publications");
    assert!(
        (143 * devices as u64..=145 * devices as u64).contains(&total),
        "{total} rows for 24 h of 10-minute samples of {devices} devices"
    );
    assert!(
        requests.lines().all(|l| l.starts_with("127.77.160.")),
        "uploads leave from the Panel Server's own address: {requests}"
    );

    // The receiver goes away for 6 hours: each publication fails, the rows wait.
    drop(receiver.take());
    // A power cycle in the middle of the outage: the unpublished rows are in
    // NV memory and stay there.
    datalog::six_failed_hours_with_a_power_cycle(&site);
    assert_eq!(publications(&site), 24);
    receiver = Some(Receiver::start(dir.path(), "127.0.0.1", port, &out, None));
    advance(&site, 3600);
    site.wait_until(Duration::from_secs(30), || publications(&site) == 25);
    let (rows, _, dups) = received(&out);
    assert_eq!(dups, 0, "a file name arrived twice");
    let total2 = check_rows(&site, &rows);
    assert_eq!(
        total2,
        total + 7 * 6 * devices as u64,
        "7 more hours of rows"
    );

    // A power cut in the middle of a publication: the receiver has stored
    // the first file but not answered yet. After the restart that file goes
    // again first, same name and content; no row is lost or doubled.
    std::fs::write(out.join("slow"), "").unwrap();
    let log_lines = || {
        std::fs::read_to_string(out.join("requests.log"))
            .unwrap()
            .lines()
            .count()
    };
    let before = log_lines();
    advance(&site, 3600);
    site.wait_until(Duration::from_secs(30), || log_lines() > before);
    site.post_json("/api/v1/devices/ps1/power", r#"{"action":"off"}"#);
    std::fs::remove_file(out.join("slow")).unwrap();
    site.post_json("/api/v1/devices/ps1/power", r#"{"action":"on"}"#);
    site.wait_until(Duration::from_secs(30), || {
        site.get_json("/api/v1/devices/ps1")["power"] == "on" && stats(&site).is_object()
    });
    assert_eq!(publications(&site), 25, "the cut publication did not end");
    advance(&site, 3600);
    site.wait_until(Duration::from_secs(30), || publications(&site) == 26);
    let requests = std::fs::read_to_string(out.join("requests.log")).unwrap();
    let retries = requests.lines().filter(|l| l.contains("(retry)")).count();
    assert_eq!(
        retries, 1,
        "the interrupted file is sent again once: {requests}"
    );
    let (rows, _, dups) = received(&out);
    assert_eq!(dups, 0, "a file name arrived twice with other rows");
    let total3 = check_rows(&site, &rows);
    assert_eq!(
        total3,
        total2 + 2 * 6 * devices as u64,
        "2 more hours of rows"
    );

    // A 40-day jump: the 31-day retention of a PAS600L keeps the newest
    // month, the older instants count as dropped; the catch-up is batched
    // (seconds, not one flush per row) and the API keeps answering.
    let jump = std::time::Instant::now();
    advance(&site, 40 * 86_400);
    site.wait_until(Duration::from_secs(60), || publications(&site) == 27);
    let jump_wall = jump.elapsed();
    let st = stats(&site);
    let (rows, files3, dups) = received(&out);
    assert_eq!(dups, 0, "a file name arrived twice");
    let mut expected = 0;
    for (dev, c) in st["devices"].as_object().unwrap() {
        let (head, first, dropped) = (
            c["head"].as_u64().unwrap(),
            c["first"].as_u64().unwrap(),
            c["dropped"].as_u64().unwrap(),
        );
        assert_eq!(c["published"].as_u64(), Some(head), "{dev}: {c}");
        assert!(
            (31 * 144 - 2..=31 * 144 + 2).contains(&(head - first)),
            "{dev}: a month of rows kept: {c}"
        );
        assert!(
            dropped >= 9 * 144 - 2,
            "{dev}: the older 9 days dropped: {c}"
        );
        assert_eq!(rows[dev].len() as u64, head - dropped, "{dev}: {c}");
        expected += head - dropped;
    }
    assert!(
        files3 - files <= 3 * 200,
        "at most 200 files per publication"
    );

    // The device's JSON API shows the same state.
    let out_text = site.stdout.lock().unwrap().clone();
    let password = out_text
        .split("https: SecurityAdmin / ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("the https login is printed")
        .to_string();
    let (code, body) = common::api_login("https://127.77.160.10/api/login", &password);
    assert_eq!(code, 200, "{body}");
    let bearer = common::bearer_of(&body).unwrap();
    let (code, body) = common::curl(&[
        "-sk",
        "-w",
        "\n%{http_code}",
        "-H",
        &bearer,
        "https://127.77.160.10/api/datalog",
    ]);
    assert_eq!(code, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["devices"], st["devices"], "{api}");
    assert_eq!(api["logging"]["period_min"], 10);
    assert_eq!(api["publication"]["field"], "datafile1");
    assert_eq!(api["retention_days"], 31);
    // The rows lost to retention are in the audit log, once for the jump.
    let audits = audit_details("127.77.160.10", &bearer);
    let overflow: Vec<&String> = audits
        .iter()
        .filter(|a| a.contains("data_log_overflow"))
        .collect();
    assert_eq!(overflow.len(), 1, "{audits:?}");
    assert!(
        overflow[0].contains("unpublished rows older than the retention (31 days) dropped"),
        "{overflow:?}"
    );
    let (code, _) = common::curl(&[
        "-sk",
        "-w",
        "\n%{http_code}",
        "https://127.77.160.10/api/datalog",
    ]);
    assert_eq!(code, 401, "the data log needs a login");
    eprintln!(
        "24 h: {files} files, {total} rows in {day:?} of wall time; after the outage {total2} rows; \
         40-day jump: {expected} rows in {files3} files, {jump_wall:?} of wall time"
    );
    drop(receiver);
}

/// TAP mode, in a namespace of this test: the Panel Server's uploads leave
/// from its own MAC and IP through the userspace stack and reach the
/// receiver on the host side of the TAP. Site octet 162.
#[test]
fn tap_mode_publication_leaves_from_the_panel_servers_own_address() {
    if !common::netns::root() {
        return;
    }
    let ns = common::netns::Netns::named(&format!("ft-pslog-tap-{}", std::process::id()));
    let a = 162;
    let host = format!("10.77.{a}.1");
    let dir = tempfile::tempdir().unwrap();
    datalog::make_certs(dir.path(), "server", &host);
    let out = dir.path().join("received");
    std::fs::create_dir(&out).unwrap();
    let config = format!(
        "[device.panel_server.datalog]\nperiod_min = 10\n\n[device.panel_server.publication]\nurl = \"https://{host}:8443/upload\"\nca_file = \"{}\"\n\n",
        dir.path().join("ca.pem").display()
    );
    let text = site_text(a).replacen(
        "[[device.panel_server.serial]]",
        &format!("{config}[[device.panel_server.serial]]"),
        1,
    );
    let site = common::netns::start(&ns, &text, &[]);
    site.wait_until(Duration::from_secs(60), || {
        site.get_json("/api/v1/devices/ps1")["power"] == "on" && stats(&site).is_object()
    });
    site.post_json("/api/v1/clock", "{\"paused\": true}");
    // The TAP (and its host address) exists once the site runs.
    let _receiver = Receiver::start(dir.path(), &host, 8443, &out, Some(&ns.name));
    for h in 1..=2u64 {
        advance(&site, 3600);
        site.wait_until(Duration::from_secs(60), || {
            stats(&site)["stats"]["publications"].as_u64() == Some(h)
        });
    }
    let (rows, files, dups) = received(&out);
    assert_eq!(dups, 0);
    assert!(files >= 12, "{files} files for 2 publications of 6 devices");
    let total = check_rows(&site, &rows);
    assert!((11 * 6..=13 * 6).contains(&total), "{total} rows for 2 h");
    let requests = std::fs::read_to_string(out.join("requests.log")).unwrap();
    assert!(
        requests
            .lines()
            .all(|l| l.starts_with(&format!("10.77.{a}.10 "))),
        "uploads leave from the Panel Server's own address: {requests}"
    );
}

/// The SHA-256 fingerprint of a PEM certificate, as openssl prints it.
fn fingerprint(pem: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .to_string()
}

/// The Panel Server's HTTPS login (printed by `fieldtwin run`).
fn https_password(site: &RunningSite) -> String {
    let out_text = site.stdout.lock().unwrap().clone();
    out_text
        .split("https: SecurityAdmin / ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("the https login is printed")
        .to_string()
}

/// A bearer token of the device JSON API.
fn api_token(ps: &str, password: &str) -> String {
    let (code, body) = common::api_login(&format!("https://{ps}/api/login"), password);
    assert_eq!(code, 200, "{body}");
    common::bearer_of(&body).unwrap()
}

/// `METHOD https://ps/api/PATH` with a JSON body: (status, JSON answer).
fn api(ps: &str, bearer: &str, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let url = format!("https://{ps}{path}");
    let mut args = vec!["-sk", "-w", "\n%{http_code}", "-H", bearer, "-X", method];
    if !body.is_empty() {
        args.extend([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ]);
    }
    args.push(&url);
    let (code, text) = common::curl(&args);
    (
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// The newest data logging change in audit details.
fn last_change(audits: &[String]) -> &str {
    audits
        .iter()
        .rev()
        .find(|a| a.contains("data logging changed"))
        .map_or("", String::as_str)
}

/// Audit details of the device, oldest first.
fn audit_details(ps: &str, bearer: &str) -> Vec<String> {
    let (code, v) = api(ps, bearer, "GET", "/api/audit", "");
    assert_eq!(code, 200, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}: {}", e["kind"], e["detail"].as_str().unwrap_or("")))
        .collect()
}

/// Per device name: the sample times (Unix s) of every JSON file received,
/// each row once per file it is in; the number of JSON files; per device
/// the rows whose values are all `null`.
type JsonRows = (BTreeMap<String, Vec<i64>>, usize, BTreeMap<String, usize>);

fn received_json(out: &Path) -> JsonRows {
    let mut rows: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut nulls: BTreeMap<String, usize> = BTreeMap::new();
    let mut files = 0;
    for e in std::fs::read_dir(out).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".json") && !name.ends_with(".json.dup") {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(out.join(&name)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{name} is not JSON: {e}: {text}"));
        let device = v["deviceName"].as_str().unwrap().to_string();
        let local = v["deviceLocalId"].as_str().unwrap();
        assert!(name.contains(&format!("_{device}_")), "{name}: {device}");
        assert_eq!(v["loggingInterval"], 10, "{name}");
        let mut times: Vec<i64> = Vec::new();
        let mut all_null: Vec<bool> = Vec::new();
        for r in v["records"].as_array().unwrap() {
            let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["t", "timestamp", "v", "valueItemId"], "{name}: {r}");
            let id = r["valueItemId"].as_str().unwrap();
            assert!(id.starts_with(&format!("{local}_")), "{name}: {id}");
            let start = chrono::DateTime::parse_from_rfc3339(r["timestamp"].as_str().unwrap())
                .unwrap()
                .timestamp();
            assert_eq!(start % 600, 0, "{name}: the period's start: {r}");
            assert!(
                r["v"].is_null() || r["v"].is_f64() || r["v"].is_i64(),
                "{r}"
            );
            let at = start + r["t"].as_i64().unwrap() / 1000;
            if times.last() != Some(&at) {
                times.push(at);
                all_null.push(true);
            }
            if !r["v"].is_null() {
                *all_null.last_mut().unwrap() = false;
            }
        }
        *nulls.entry(device.clone()).or_default() += all_null.iter().filter(|n| **n).count();
        assert_eq!(
            v["historicalIntervals"].as_u64(),
            Some(times.len() as u64),
            "{name}"
        );
        rows.entry(device).or_default().extend(times);
    }
    for t in rows.values_mut() {
        t.sort();
    }
    (rows, files, nulls)
}

/// Issue 13 items 2 and 5 (site octet 164): the publication is configured
/// through the device's JSON API and its Data logging page, every change
/// audited; JSON files reach the receiver in `datafile1` over TLS with the
/// server certificate pinned; another certificate stops publication (audit
/// entry, rows wait), a new pin entered on the page resumes it with every
/// row once; then a CA pasted as PEM verifies the server and CSV comes
/// again. Bad configurations are refused, naming the field.
#[test]
fn json_publication_with_a_pinned_certificate_configured_on_the_device() {
    let dir = tempfile::tempdir().unwrap();
    datalog::make_certs(dir.path(), "server", "127.0.0.1");
    let dir2 = tempfile::tempdir().unwrap();
    datalog::make_certs(dir2.path(), "server", "127.0.0.1");
    let out = dir.path().join("received");
    std::fs::create_dir(&out).unwrap();
    let port = free_port();
    let receiver = Receiver::start(dir.path(), "127.0.0.1", port, &out, None);
    let site = RunningSite::start(&fast_site_text(164), &[]);
    site.wait_until(Duration::from_secs(30), || {
        site.get_json("/api/v1/devices/ps1")["power"] == "on"
    });
    site.post_json("/api/v1/clock", "{\"paused\": true}");
    let ps = "127.77.164.10";
    let password = https_password(&site);
    // Sessions expire after 15 idle minutes of device time: a new login
    // after every clock jump.
    let token = || api_token(ps, &password);
    let bearer = token();
    let (code, v) = api(ps, &bearer, "GET", "/api/datalog", "");
    assert_eq!(code, 200, "{v}");
    assert!(v["logging"].is_null() && v["publication"].is_null(), "{v}");
    assert_eq!(v["offered"]["formats"][1], "json", "{v}");
    let audits0 = audit_details(ps, &bearer).len();
    // The serial meter loses its supply: not connected from now on.
    let r = site.post_json(
        "/api/v1/devices/ps1/fields/meter-sl/power",
        r#"{"action": "off"}"#,
    );
    assert!(r.is_object(), "{r}");

    // Refused, naming what is wrong; nothing changes, nothing is audited.
    let url = format!("https://127.0.0.1:{port}/upload");
    let pin = fingerprint(&dir.path().join("server.pem"));
    for (body, says) in [
        (
            r#"{"logging": {"period_min": 7}}"#.to_string(),
            "logging.period_min",
        ),
        (
            r#"{"logging": {"devices": ["nope"]}}"#.into(),
            "logging.devices[0]",
        ),
        (r#"{"colour": 1}"#.into(), "unknown key"),
        (
            format!(r#"{{"publication": {{"url": "{url}", "ca_file": "/etc/passwd"}}}}"#),
            "cannot read files of the host",
        ),
        (
            format!(r#"{{"publication": {{"url": "{url}"}}}}"#),
            "must be verified",
        ),
        (
            format!(
                r#"{{"publication": {{"url": "{url}", "pin_sha256": "{pin}", "ca_pem": "x"}}}}"#
            ),
            "not several",
        ),
        (
            format!(r#"{{"publication": {{"url": "{url}", "ca_pem": "not a certificate"}}}}"#),
            "publication:",
        ),
        (
            format!(
                r#"{{"publication": {{"url": "{url}", "pin_sha256": "{pin}", "format": "xml"}}}}"#
            ),
            "xml",
        ),
        ("[1]".into(), "JSON object"),
    ] {
        let (code, v) = api(ps, &bearer, "PUT", "/api/datalog", &body);
        assert_eq!(code, 400, "{body}: {v}");
        let e = v["error"].as_str().unwrap_or("");
        assert!(e.contains(says), "{body}: {e}");
    }
    assert_eq!(audit_details(ps, &bearer).len(), audits0, "nothing audited");

    // Logging every 10 min, JSON published every hour, certificate pinned.
    let body = format!(
        r#"{{"logging": {{"period_min": 10}}, "publication": {{"url": "{url}", "pin_sha256": "{pin}", "format": "json", "period_min": 60}}}}"#
    );
    let (code, v) = api(ps, &bearer, "PUT", "/api/datalog", &body);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["publication"]["format"], "json");
    let audits = audit_details(ps, &bearer);
    assert!(
        last_change(&audits).ends_with(
            "data logging changed: logging: logging on, period 10 min; publication: method none -> https, period 60 min, format json, server verified by pinned certificate (JSON API)"
        ),
        "{audits:?}"
    );
    let (code, _) = api(ps, &bearer, "PUT", "/api/datalog", &body);
    assert_eq!(code, 200);
    assert_eq!(
        audit_details(ps, &bearer).len(),
        audits.len(),
        "the same configuration again is no change"
    );
    for h in 1..=2u64 {
        advance(&site, 3600);
        site.wait_until(Duration::from_secs(30), || publications(&site) == h);
    }
    let (rows, files, nulls) = received_json(&out);
    assert!(
        files >= 12,
        "{files} JSON files for 2 publications of 6 devices"
    );
    // The serial meter is off: not connected, every value of its rows is
    // null; the others answer.
    assert_eq!(nulls["meter-sl"], rows["meter-sl"].len(), "{nulls:?}");
    assert!(
        rows.keys()
            .any(|d| d != "meter-sl" && nulls.get(d) == Some(&0)),
        "{nulls:?}"
    );
    let check = |rows: &BTreeMap<String, Vec<i64>>| -> u64 {
        let st = stats(&site);
        let mut total = 0;
        for (dev, c) in st["devices"].as_object().unwrap() {
            let head = c["head"].as_u64().unwrap();
            assert_eq!(c["published"].as_u64(), Some(head), "{dev}: {c}");
            let got = rows.get(dev).map_or(&[][..], |v| v.as_slice());
            assert_eq!(got.len() as u64, head, "{dev}: rows received vs logged");
            assert!(
                got.windows(2).all(|w| (599..=601).contains(&(w[1] - w[0]))),
                "{dev}: gap or duplicate: {got:?}"
            );
            total += head;
        }
        total
    };
    let total = check(&rows);
    assert!((11 * 6..=13 * 6).contains(&total), "{total} rows in 2 h");

    // The server now shows another certificate: publication stops, audited;
    // nothing is sent; logging goes on.
    drop(receiver);
    let receiver = Receiver::start(dir2.path(), "127.0.0.1", port, &out, None);
    let requests = || {
        std::fs::read_to_string(out.join("requests.log"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let sent = requests();
    advance(&site, 3600);
    site.wait_until(Duration::from_secs(30), || failures(&site) == 1);
    let pin2 = fingerprint(&dir2.path().join("server.pem"));
    let st = stats(&site);
    assert!(
        st["stopped"].as_str().is_some_and(|s| s.contains(&pin2)),
        "{st}"
    );
    let audits = audit_details(ps, &token());
    assert!(
        audits
            .iter()
            .any(|a| a.contains("publication_stopped") && a.contains(&pin2)),
        "{audits:?}"
    );
    advance(&site, 3600);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(failures(&site), 1, "no attempt while stopped");
    assert_eq!(requests(), sent, "nothing reached the server");

    // The new pin entered on the Data logging page (session, CSRF): saved,
    // audited, publication resumes with every waiting row once.
    let jar = dir.path().join("cookies");
    let jar_s = jar.display().to_string();
    let web = |args: &[&str]| {
        let mut a = vec!["-sk", "-b", &jar_s, "-c", &jar_s, "-w", "\n%{http_code}"];
        a.extend(args);
        common::curl(&a)
    };
    let (code, _) = web(&[
        "--data-urlencode",
        "username=SecurityAdmin",
        "--data-urlencode",
        &format!("password={password}"),
        &format!("https://{ps}/login"),
    ]);
    assert_eq!(code, 303, "web login");
    let (code, page) = web(&[&format!("https://{ps}/datalog")]);
    assert_eq!(code, 200);
    assert!(page.contains("id=\"publication-stopped\""), "{page}");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let action = format!("https://{ps}/datalog/publication");
    let post = |pin: &str| {
        let fields = [
            format!("csrf={csrf}"),
            "method=https".into(),
            "period_min=60".into(),
            "format=json".into(),
            format!("url={url}"),
            "field=datafile1".into(),
            "verify=pin".into(),
            format!("pin_sha256={pin}"),
        ];
        let mut args: Vec<&str> = Vec::new();
        for f in &fields {
            args.extend(["--data-urlencode", f.as_str()]);
        }
        args.push(&action);
        web(&args)
    };
    let (code, page) = post("12:34");
    assert_eq!(code, 400, "a bad pin is refused");
    assert!(page.contains("64 hex digits"), "{page}");
    let (code, page) = post(&pin2);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Saved."), "{page}");
    assert!(!page.contains("id=\"publication-stopped\""), "{page}");
    let audits = audit_details(ps, &token());
    assert!(
        last_change(&audits)
            .ends_with("data logging changed: publication: pinned certificate changed (web page)"),
        "{audits:?}"
    );
    let done = publications(&site);
    advance(&site, 3600);
    site.wait_until(Duration::from_secs(30), || publications(&site) == done + 1);
    let (rows, _, _) = received_json(&out);
    let total2 = check(&rows);
    assert_eq!(total2, total + 3 * 6 * 6, "3 more hours of rows, each once");

    // A CA pasted as PEM through the API, CSV again.
    let ca = std::fs::read_to_string(dir2.path().join("ca.pem")).unwrap();
    let body =
        serde_json::json!({"publication": {"url": url, "ca_pem": ca, "format": "csv"}}).to_string();
    let (code, v) = api(ps, &token(), "PUT", "/api/datalog", &body);
    assert_eq!(code, 200, "{v}");
    let audits = audit_details(ps, &token());
    assert!(
        last_change(&audits).ends_with(
            "data logging changed: publication: format json -> csv, server verified by pinned certificate -> CA certificate (JSON API)"
        ),
        "{audits:?}"
    );
    advance(&site, 3600);
    site.wait_until(Duration::from_secs(30), || publications(&site) == done + 2);
    let (csv_rows, csv_files, dups) = received(&out);
    assert_eq!(dups, 0);
    assert!(csv_files >= 6, "{csv_files}");
    // Error flag per row: 19 for the meter that is off (empty values), 0
    // for a device whose values are all valid.
    assert!(
        csv_rows["meter-sl"].iter().all(|l| {
            let f: Vec<&str> = l.split(',').collect();
            f[0] == "19" && f[3..].iter().all(|v| v.is_empty())
        }),
        "{:?}",
        csv_rows["meter-sl"]
    );
    assert!(
        csv_rows.values().flatten().any(|l| l.starts_with("0,")),
        "{csv_rows:?}"
    );
    let st = stats(&site);
    for (dev, c) in st["devices"].as_object().unwrap() {
        let json_n = rows.get(dev).map_or(0, Vec::len) as u64;
        let csv_n = csv_rows.get(dev).map_or(0, Vec::len) as u64;
        assert_eq!(json_n + csv_n, c["head"].as_u64().unwrap(), "{dev}: {c}");
    }

    // The configuration is in the encrypted backup: publication turned off,
    // then the backup restored (the device reboots): it is back.
    let (code, _) = web(&[
        "--data-urlencode",
        "username=SecurityAdmin",
        "--data-urlencode",
        &format!("password={password}"),
        &format!("https://{ps}/login"),
    ]);
    assert_eq!(code, 303, "web login");
    let (_, page) = web(&[&format!("https://{ps}/backup")]);
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let file = dir.path().join("backup.ftbk");
    let (code, _) = web(&[
        "-o",
        file.to_str().unwrap(),
        "--data-urlencode",
        &format!("csrf={csrf}"),
        "--data-urlencode",
        "password=Back-up!",
        &format!("https://{ps}/backup/download"),
    ]);
    assert_eq!(code, 200);
    let bearer = token();
    let (code, v) = api(
        ps,
        &bearer,
        "PUT",
        "/api/datalog",
        r#"{"publication": null}"#,
    );
    assert_eq!(code, 200, "{v}");
    assert!(v["publication"].is_null(), "{v}");
    assert!(
        last_change(&audit_details(ps, &bearer))
            .ends_with("data logging changed: publication: method https -> none (JSON API)"),
    );
    let (code, page) = web(&[
        "-F",
        &format!("csrf={csrf}"),
        "-F",
        &format!("file=@{}", file.display()),
        "-F",
        "password=Back-up!",
        &format!("https://{ps}/backup/restore"),
    ]);
    assert_eq!(code, 200, "{page}");
    std::thread::sleep(Duration::from_secs(1));
    let mut restored = serde_json::Value::Null;
    site.wait_until(Duration::from_secs(30), || {
        let (code, body) = common::api_login(&format!("https://{ps}/api/login"), &password);
        let Some(bearer) = common::bearer_of(&body).filter(|_| code == 200) else {
            return false;
        };
        let (code, v) = api(ps, &bearer, "GET", "/api/datalog", "");
        restored = v;
        code == 200
    });
    assert_eq!(restored["publication"]["ca_pem"], ca.as_str(), "{restored}");
    assert_eq!(restored["publication"]["format"], "csv", "{restored}");
    assert_eq!(restored["logging"]["period_min"], 10, "{restored}");
    drop(receiver);
}

/// Issue 13 item 6 (site octet 166): the library's data logging scenarios
/// pass against the default site (with a seed: paused clock, repeatable),
/// and their event logs show what they claim: six failed publications
/// while the server was away, then the waiting rows published; a power
/// cycle, with publications before and after it.
#[test]
fn the_data_logging_scenarios_of_the_library_pass() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site.toml");
    std::fs::write(&site, fast_site_text(166)).unwrap();
    let events = dir.path().join("events.jsonl");
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/library");
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_fieldtwin"))
        .arg("scenario")
        .arg("run")
        .arg(lib.join("publication-server-away.rhai"))
        .arg(lib.join("power-loss-datalog.rhai"))
        .arg("--site")
        .arg(&site)
        .args(["--seed", "7", "--events"])
        .arg(&events)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("scenarios: 2 passed, 0 failed"), "{text}");
    let log = std::fs::read_to_string(&events).unwrap();
    let (away, power) = log
        .split_once("# Power loss during logging and recovery")
        .expect("both scenarios in the event log");
    let datalog = |part: &str, what: &str| {
        part.lines()
            .filter(|l| l.contains("\"kind\":\"datalog\"") && l.contains(what))
            .count()
    };
    assert_eq!(datalog(away, "publication failed"), 6, "{away}");
    assert_eq!(datalog(away, "\"message\":\"publication: "), 3, "{away}");
    assert!(
        away.contains("data logging changed: publication: method none -> https"),
        "the page's change is audited: {away}"
    );
    assert!(power.contains("\"power\":\"off\""), "{power}");
    assert_eq!(datalog(power, "\"message\":\"publication: "), 2, "{power}");
    eprintln!("2 data logging scenarios in {:?}", started.elapsed());
}
