//! Reliability suite (issue 16), end to end against the real binary in
//! host mode: absurd site files are refused naming the field; kill -9
//! during NV writes loses no acknowledged record; hostile web input
//! (slowloris, half-open sockets, over-long headers, malformed multipart,
//! a Modbus flood) leaves the login page answering. Site octets 180-189
//! (tests/common/mod.rs). Figures: docs/reliability.md.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{curl, fast_site_text, free_port};

// ---------------------------------------------------------------- site file

/// `site check` and `run` refuse absurd numbers naming the field; neither
/// panics.
#[test]
fn absurd_site_numbers_are_refused_naming_the_field() {
    let base = fast_site_text(180);
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "seed = 1",
            "seed = 1\nrtc_retention_days = 1e300",
            "site.rtc_retention_days: 1e300 is out of range; allowed 0 to 3650 days",
        ),
        (
            "seed = 1",
            "seed = 1\nrtc_retention_days = nan",
            "site.rtc_retention_days",
        ),
        (
            "seed = 1",
            "seed = 1\nstart = 9999-12-31T00:00:00Z",
            "site.start",
        ),
        (
            "drift_ppm = 8.0",
            "drift_ppm = -1e308",
            "device[0].rtc.drift_ppm",
        ),
        ("offset_s = 0", "offset_s = 1e300", "device[0].rtc.offset_s"),
        (
            "pbkdf2_iterations = 1000",
            "pbkdf2_iterations = 4294967295",
            "device[0].panel_server.pbkdf2_iterations",
        ),
        (
            "pulse_weight = 10.0",
            "pulse_weight = inf",
            "digital_input[0].pulse_weight",
        ),
        ("baud = 19200", "baud = 18446744073709551615", "baud"),
    ];
    for (i, (from, to, want)) in cases.iter().enumerate() {
        assert!(base.contains(from), "{from}");
        let file = dir.path().join(format!("site{i}.toml"));
        std::fs::write(&file, base.replacen(from, to, 1)).unwrap();
        let file = file.to_str().unwrap();
        let api = format!("127.0.0.1:{}", free_port());
        for args in [
            vec!["site", "check", file],
            vec!["run", "--site", file, "--api", &api],
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_fieldtwin"))
                .args(&args)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?} {to}: {err}");
            assert!(err.contains(want), "{args:?} {to}: {err}");
            assert!(!err.contains("panicked"), "{args:?} {to}: {err}");
        }
    }
}

// ------------------------------------------------------------ clients

/// A `fieldtwin run` child we kill with SIGKILL (RunningSite stops with
/// SIGTERM, which flushes; this one must not).
struct Proc {
    child: Child,
    api: SocketAddr,
    stdout: Arc<Mutex<String>>,
}

impl Proc {
    fn start(site: &std::path::Path, state: &std::path::Path) -> Self {
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fieldtwin"))
            .arg("run")
            .arg("--site")
            .arg(site)
            .arg("--state")
            .arg(state)
            .arg("--api")
            .arg(api.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let sink = stdout.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let p = Self { child, api, stdout };
        let t = Instant::now();
        while !p.stdout.lock().unwrap().contains("control API:") {
            if let Some(st) = p.child_exited() {
                panic!("fieldtwin exited ({st}):\n{}", p.stdout.lock().unwrap());
            }
            assert!(t.elapsed() < Duration::from_secs(60), "no start");
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    fn child_exited(&self) -> Option<std::process::ExitStatus> {
        // try_wait needs &mut; a zero-signal kill says whether it still runs.
        let alive = Command::new("kill")
            .args(["-0", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        (!alive).then(std::process::ExitStatus::default)
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    fn password(&self) -> String {
        let out = self.stdout.lock().unwrap().clone();
        out.split("https: SecurityAdmin / ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no https login printed:\n{out}"))
            .to_string()
    }

    fn api(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        let url = format!("http://{}{path}", self.api);
        let mut args = vec!["-s", "-w", "\n%{http_code}", "-X", method];
        if !body.is_empty() {
            args.extend(["-H", "content-type: application/json", "-d", body]);
        }
        args.push(&url);
        let (code, text) = curl(&args);
        assert_eq!(code, 200, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// `host:port` of service `name` on eth1 of ps1.
    fn service(&self, name: &str) -> String {
        let d = self.api("GET", "/api/v1/devices/ps1", "");
        d["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["interface"] == "eth1" && s["name"].as_str().unwrap().contains(name))
            .unwrap_or_else(|| panic!("no {name} service: {d}"))["address"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Modbus TCP request (unit 255) over a fresh or given connection; the
/// response PDU.
fn modbus(s: &mut TcpStream, tid: u16, pdu: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut adu = Vec::with_capacity(7 + pdu.len());
    adu.extend_from_slice(&tid.to_be_bytes());
    adu.extend_from_slice(&[0, 0]);
    adu.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
    adu.push(255);
    adu.extend_from_slice(pdu);
    s.write_all(&adu)?;
    let mut head = [0u8; 7];
    s.read_exact(&mut head)?;
    let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
    let mut body = vec![0u8; len.saturating_sub(1)];
    s.read_exact(&mut body)?;
    Ok(body)
}

fn modbus_connect(addr: &str) -> TcpStream {
    let t = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return s;
            }
            Err(e) if t.elapsed() > Duration::from_secs(20) => panic!("{addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The Panel Server's RTC (registers 116-119, unit 255), as seconds since
/// 2000 (minute resolution is enough here).
fn read_rtc(s: &mut TcpStream) -> i64 {
    let r = modbus(s, 1, &[0x03, 0x00, 0x73, 0x00, 0x04]).unwrap();
    assert_eq!(r.first(), Some(&0x03), "{r:?}");
    let w: Vec<u16> = r[2..]
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    minutes_of(&w) * 60
}

/// Minutes since 2000-01-01 of a DATETIME block (year, month<<8|day,
/// hour<<8|minute, ms).
fn minutes_of(w: &[u16]) -> i64 {
    use chrono::{NaiveDate, NaiveDateTime};
    let d = NaiveDate::from_ymd_opt(
        2000 + i32::from(w[0] & 0x7f),
        u32::from((w[1] >> 8) & 0x0f),
        u32::from(w[1] & 0x1f),
    )
    .unwrap()
    .and_hms_opt(u32::from((w[2] >> 8) & 0x1f), u32::from(w[2] & 0x3f), 0)
    .unwrap();
    let base: NaiveDateTime = NaiveDate::from_ymd_opt(2000, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    (d - base).num_minutes()
}

/// The DATETIME block of `minutes` since 2000-01-01.
fn datetime_block(minutes: i64) -> [u16; 4] {
    use chrono::{Datelike, NaiveDate, Timelike};
    let t = NaiveDate::from_ymd_opt(2000, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        + chrono::Duration::minutes(minutes);
    [
        (t.year() - 2000) as u16,
        ((t.month() as u16) << 8) | t.day() as u16,
        ((t.hour() as u16) << 8) | t.minute() as u16,
        0,
    ]
}

fn https_url(addr: &str, path: &str) -> String {
    format!("https://{addr}{path}")
}

/// A failed web login; the status (401 wrong, 403 locked) or 0 if the
/// connection broke (the kill).
fn failed_login(addr: &str) -> u16 {
    curl(&[
        "-sk",
        "-m",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "\n%{http_code}",
        "--data-urlencode",
        "username=SecurityAdmin",
        "--data-urlencode",
        "password=Not-The-Password-1",
        &https_url(addr, "/login"),
    ])
    .0
}

/// Logs in and downloads the audit CSV (rows without the header).
fn audit_rows(addr: &str, password: &str) -> Vec<String> {
    let jar = tempfile::NamedTempFile::new().unwrap();
    let jar = jar.path().to_str().unwrap();
    let (code, body) = curl(&[
        "-sk",
        "-c",
        jar,
        "-b",
        jar,
        "-L",
        "-w",
        "\n%{http_code}",
        "--data-urlencode",
        "username=SecurityAdmin",
        "--data-urlencode",
        &format!("password={password}"),
        &https_url(addr, "/login"),
    ]);
    assert_eq!(code, 200, "login: {body}");
    let (code, csv) = curl(&[
        "-sk",
        "-b",
        jar,
        "-w",
        "\n%{http_code}",
        &https_url(addr, "/logs/audit.csv"),
    ]);
    assert_eq!(code, 200, "{csv}");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("time,event,detail"), "{csv}");
    lines.map(str::to_string).collect()
}

/// A bearer token of the device's JSON API.
fn api_token(addr: &str, password: &str) -> String {
    let body = serde_json::json!({"username": "SecurityAdmin", "password": password}).to_string();
    let (code, text) = curl(&[
        "-sk",
        "-m",
        "10",
        "-w",
        "\n%{http_code}",
        "-H",
        "content-type: application/json",
        "-d",
        &body,
        &https_url(addr, "/api/login"),
    ]);
    assert_eq!(code, 200, "api login: {text}");
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The device's settings through the JSON API; `put` replaces them. The
/// status (0 if the connection broke) and the settings.
fn api_settings(
    addr: &str,
    token: &str,
    put: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let auth = format!("authorization: Bearer {token}");
    let body = put.map(|v| v.to_string());
    let url = https_url(addr, "/api/settings");
    let mut args = vec!["-sk", "-m", "10", "-w", "\n%{http_code}", "-H", &auth];
    if let Some(b) = &body {
        args.extend(["-X", "PUT", "-H", "content-type: application/json", "-d", b]);
    }
    args.push(&url);
    let (code, text) = curl(&args);
    (code, serde_json::from_str(&text).unwrap_or_default())
}

// -------------------------------------------------------- crash consistency

/// The DPWS port the settings writer sets after `p`: 10000-60000, never
/// 443 or 502.
fn next_dpws_port(p: u64) -> u64 {
    if (10_000..60_000).contains(&p) {
        p + 1
    } else {
        10_000
    }
}

/// Kill rounds of the crash-consistency test.
const KILLS: usize = 20;

/// Whether the writers (failed logins, Modbus RTC writes, settings
/// writes) run at the same time, each from its own task of the device. The
/// old sled store allocated log sequence numbers without a lock, so two
/// audit entries written at once could take the same number (a lost
/// acknowledged record); the storage rewrite of `timefix` allocates them
/// atomically, and this runs them together. `false` runs one kind a round.
const CONCURRENT_WRITERS: bool = true;

/// kill -9 during NV writes (failed web logins, each audited and counted
/// toward the lockout before the answer; RTC writes over Modbus FC16),
/// restart on the same `--state`, and count record by record: the audit
/// log of the previous round is a prefix of the new one (nothing lost,
/// reordered or corrupted), every acknowledged failed login has its entry
/// and none is duplicated, and the RTC is at or after the last
/// acknowledged write.
#[test]
fn kill_9_during_nv_writes_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let site_file = dir.path().join("site.toml");
    std::fs::write(&site_file, fast_site_text(182)).unwrap();
    let state = dir.path().join("state");
    let mut previous: Vec<String> = Vec::new();
    let mut rtc_floor_min: i64 = 0;
    // DPWS port of the last acknowledged settings write (and whether one
    // more was in flight at the kill).
    let mut settings_acked: Option<(u64, bool)> = None;
    let mut settings_writes_total = 0u64;
    let (mut dl_seen, mut dl_checked): (Option<u64>, usize) = (None, 0);
    let mut next_minute: i64 = 30 * 365 * 24 * 60; // ~2030
    let (mut acked_logins_total, mut records_checked, mut rtc_writes_total) =
        (0usize, 0usize, 0u64);
    let mut rng_state: u64 = 0x5eed_1e55;
    let mut rand = move |n: u64| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state % n
    };
    let started = Instant::now();
    for round in 0..=KILLS {
        let p = Proc::start(&site_file, &state);
        // The state loads and the device answers.
        let d = p.api("GET", "/api/v1/devices/ps1", "");
        assert_eq!(d["power"], "on", "round {round}: {d}");
        // The Data Logger's ring: what the API showed stored before the
        // kill (read from NV) is still there.
        let dl_head = |p: &Proc| {
            p.api("GET", "/api/v1/devices/dl1", "")["details"]["extra"]["store"]["next_seq"]
                .as_u64()
        };
        if let (Some(before), Some(now)) = (dl_seen, dl_head(&p)) {
            assert!(
                now >= before,
                "round {round}: Data Logger ring head {now} < {before} before the kill"
            );
            dl_checked += 1;
        }
        let web = p.service("https");
        let mb = p.service("modbus");
        let mut s = modbus_connect(&mb);
        let rtc_s = read_rtc(&mut s);
        assert!(
            rtc_s / 60 >= rtc_floor_min,
            "round {round}: RTC {} min < last acknowledged write {} min",
            rtc_s / 60,
            rtc_floor_min
        );
        // Lift any lockout of the last round, then read the log back. (Site
        // time restarts from the host's time unless the state resumes it:
        // a day more every round clears the last lock either way.)
        let advance = 86_400 * (round + 1);
        p.api(
            "POST",
            "/api/v1/clock",
            &format!(r#"{{"advance_s": {advance}}}"#),
        );
        let rows = audit_rows(&web, &p.password());
        let token = api_token(&web, &p.password());
        let (code, settings) = api_settings(&web, &token, None);
        assert_eq!(code, 200, "round {round}: {settings}");
        let port = settings["dpws_port"].as_u64().unwrap();
        if let Some((acked, in_flight)) = settings_acked {
            assert!(
                port == acked || (in_flight && port == next_dpws_port(acked)),
                "round {round}: DPWS port {port} after the kill; last acknowledged {acked}"
            );
        }
        if let Some(i) = (0..previous.len()).find(|&i| rows.get(i) != Some(&previous[i])) {
            panic!(
                "round {round}: audit entry {i} of {} was lost or changed:\nbefore {:?}\nafter  {:?}\n\
                 (after has {} entries; around it: {:#?})",
                previous.len(),
                previous[i],
                rows.get(i),
                rows.len(),
                &rows[i.saturating_sub(2)..(i + 3).min(rows.len())]
            );
        }
        assert!(
            rows.len() < 2000,
            "round {round}: the audit log reached its cap"
        );
        let new = &rows[previous.len()..];
        let failed = new
            .iter()
            .filter(|r| r.contains(",login failed,") || r.contains(",login refused (locked),"))
            .count();
        // Entries of the last round's acknowledged logins must all be there;
        // at most the one in flight at the kill is extra.
        if round > 0 {
            let acked = LAST_ACKED.swap(0, Ordering::SeqCst) as usize;
            let sent = LAST_SENT.swap(0, Ordering::SeqCst) as usize;
            assert!(
                failed >= acked && failed <= sent,
                "round {round}: {failed} login entries, {acked} acknowledged, {sent} sent"
            );
            acked_logins_total += acked;
            records_checked += new.len();
        }
        for r in new {
            assert!(r.matches(',').count() >= 2, "corrupt row {r:?}");
        }
        if round == KILLS {
            break;
        }
        // The read-back's own login is in `rows`: all of it is committed.
        previous = rows;
        // Writers: failed logins over HTTPS, RTC writes over Modbus; both at
        // once when CONCURRENT_WRITERS, else one kind a round, in turn.
        let rtc_round = CONCURRENT_WRITERS || round % 3 == 1;
        let login_round = CONCURRENT_WRITERS || round % 3 == 0;
        let settings_round = CONCURRENT_WRITERS || round % 3 == 2;
        let stop = Arc::new(AtomicBool::new(false));
        let w3 = {
            let (stop, web, token) = (stop.clone(), web.clone(), token.clone());
            let mut s = settings.clone();
            std::thread::spawn(move || {
                let mut port = s["dpws_port"].as_u64().unwrap();
                let (mut acked, mut in_flight, mut n) = (None, false, 0u64);
                while !stop.load(Ordering::SeqCst) && settings_round {
                    port = next_dpws_port(port);
                    s["dpws_port"] = port.into();
                    in_flight = true;
                    match api_settings(&web, &token, Some(&s)) {
                        (200, v) => {
                            assert_eq!(v["dpws_port"], port, "{v}");
                            acked = Some(port);
                            in_flight = false;
                            n += 1;
                        }
                        (0, _) => break,
                        (code, v) => panic!("settings write refused: {code} {v}"),
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                (acked.map(|a| (a, in_flight)), n)
            })
        };
        let w1 = {
            let (stop, web) = (stop.clone(), web.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) && login_round {
                    LAST_SENT.fetch_add(1, Ordering::SeqCst);
                    match failed_login(&web) {
                        401 | 403 => {
                            LAST_ACKED.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => break,
                    }
                }
            })
        };
        let w2 = {
            let stop = stop.clone();
            let start_minute = next_minute;
            std::thread::spawn(move || {
                let mut minute = start_minute;
                let mut acked = None;
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) && rtc_round {
                    let w = datetime_block(minute);
                    let mut pdu = vec![0x10, 0x00, 0x73, 0x00, 0x04, 8];
                    for v in w {
                        pdu.extend_from_slice(&v.to_be_bytes());
                    }
                    match modbus(&mut s, n as u16, &pdu) {
                        Ok(r) if r.first() == Some(&0x10) => {
                            acked = Some(minute);
                            n += 1;
                        }
                        Ok(r) => panic!("date/time write refused: {r:?}"),
                        Err(_) => break,
                    }
                    minute += 7;
                    // Each write is audited: pace them so twenty rounds stay
                    // under the log's cap (2000 entries), where the prefix
                    // check holds.
                    std::thread::sleep(Duration::from_millis(25));
                }
                (acked, minute, n)
            })
        };
        std::thread::sleep(Duration::from_millis(200 + rand(800)));
        dl_seen = dl_head(&p);
        p.kill9();
        stop.store(true, Ordering::SeqCst);
        w1.join().unwrap();
        let (acked, minute, n) = w2.join().unwrap();
        let (s_acked, s_n) = w3.join().unwrap();
        if s_acked.is_some() {
            settings_acked = s_acked;
        }
        settings_writes_total += s_n;
        if let Some(m) = acked {
            rtc_floor_min = m;
        }
        next_minute = minute + 7;
        rtc_writes_total += n;
    }
    println!(
        "crash consistency: {KILLS} kills survived in {:.1} s; {acked_logins_total} acknowledged \
         failed logins, {records_checked} new audit records checked, {} audit rows at the end, \
         {rtc_writes_total} acknowledged RTC writes, {settings_writes_total} acknowledged settings writes, Data Logger ring head checked \
         {dl_checked} times (last {dl_seen:?})",
        started.elapsed().as_secs_f64(),
        previous.len()
    );
    assert!(
        acked_logins_total > KILLS,
        "too few writes to mean anything"
    );
}

static LAST_ACKED: AtomicU64 = AtomicU64::new(0);
static LAST_SENT: AtomicU64 = AtomicU64::new(0);

// ------------------------------------------------------------ HTTPS client

/// A TLS client that accepts the device's self-signed certificate: these
/// tests attack the web server, not the PKI.
mod tls {
    pub fn connector() -> tokio_rustls::TlsConnector {
        let config = fieldtwin_emulator::tls_client::any_certificate().unwrap();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls_connect(tls: &tokio_rustls::TlsConnector, addr: &str) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("panel-server").unwrap();
    tls.connect(name, tcp).await
}

/// A request's bytes (`Connection: close`).
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: panel-server\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

/// Sends `raw` on a fresh TLS connection; the status (0: no answer) and
/// the whole answer (head and body).
async fn https(tls: &tokio_rustls::TlsConnector, addr: &str, raw: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tls_connect(tls, addr).await else {
        return (0, String::new());
    };
    if s.write_all(raw).await.is_err() {
        // The server may answer (413, 431) before reading all of it.
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

/// `application/x-www-form-urlencoded` of arbitrary bytes.
fn urlencode(b: &[u8]) -> String {
    b.iter()
        .map(|&c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(c).to_string()
            }
            _ => format!("%{c:02X}"),
        })
        .collect()
}

/// A logged-in web session: cookie header and CSRF token.
#[derive(Clone, Debug)]
struct WebSession {
    cookie: String,
    csrf: String,
}

async fn web_login(tls: &tokio_rustls::TlsConnector, addr: &str, password: &str) -> WebSession {
    let body = format!(
        "username=SecurityAdmin&password={}",
        urlencode(password.as_bytes())
    );
    let (code, text) = https(
        tls,
        addr,
        &request(
            "POST",
            "/login",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        ),
    )
    .await;
    assert_eq!(code, 303, "login: {text}");
    let cookie = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .and_then(|l| l.split_once(':'))
        .and_then(|(_, v)| v.split(';').next())
        .unwrap()
        .trim()
        .to_string();
    let (code, page) = https(tls, addr, &request("GET", "/", &[("Cookie", &cookie)], b"")).await;
    assert_eq!(code, 200, "{page}");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token in the home page:\n{page}"))
        .to_string();
    WebSession { cookie, csrf }
}

/// Time for the login page to answer 200 on a fresh connection.
async fn login_page_latency(tls: &tokio_rustls::TlsConnector, addr: &str) -> Duration {
    let t = Instant::now();
    let (code, text) = https(tls, addr, &request("GET", "/login", &[], b"")).await;
    assert_eq!(code, 200, "login page: {text}");
    t.elapsed()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ------------------------------------------------- fuzzed peer input, e2e

/// Form posts of the web pages and the fields each one reads.
const FORMS: &[(&str, &[&str])] = &[
    ("/login", &["username", "password"]),
    (
        "/settings/network-communication",
        &[
            "modbus_eth1",
            "modbus_eth2",
            "modbus_wifi",
            "dpws",
            "dpws_port",
            "rstp",
        ],
    ),
    (
        "/settings/wifi",
        &["enabled", "access_point", "ap_password"],
    ),
    ("/settings/wireless", &["ieee802154", "protect_plus"]),
    ("/settings/wireless/add", &["install_code"]),
    ("/settings/wireless/remove", &["rf_id"]),
    ("/settings/wireless/rebuild", &["confirm"]),
    ("/settings/datetime", &["mode", "datetime", "ntp_server"]),
    ("/settings/wireless-permanent-off", &["confirm"]),
    ("/users", &["account", "current", "new", "confirm"]),
    ("/backup/download", &["password"]),
];

/// Multipart uploads and their fields.
const UPLOADS: &[(&str, &[&str])] = &[
    ("/firmware", &["image"]),
    ("/backup/restore", &["file", "password"]),
];

/// One fuzzed web request.
#[derive(Debug, Clone)]
enum WebCase {
    /// A form post: route, (field, value) pairs, whether the session's
    /// CSRF token is added, a content type other than the form's.
    Form(usize, Vec<(usize, Vec<u8>)>, bool, Option<String>),
    /// Raw bytes as the body of a form post.
    RawForm(usize, Vec<u8>),
    /// A multipart upload: route, parts (field, file name, content), the
    /// number of bytes cut off its end, a boundary of its own.
    Multipart(
        usize,
        Vec<(usize, Option<String>, Vec<u8>)>,
        usize,
        Option<String>,
    ),
    /// JSON API: route and body.
    Api(usize, Vec<u8>),
}

fn web_case() -> impl proptest::strategy::Strategy<Value = WebCase> {
    use proptest::collection::vec;
    use proptest::prelude::*;
    let bytes = || {
        prop_oneof![
            vec(any::<u8>(), 0..64),
            "\\PC{0,40}".prop_map(String::into_bytes),
            Just(b"<script>alert(1)</script>".to_vec()),
            Just(b"on".to_vec()),
            Just(b"2026-02-30T25:61".to_vec()),
            Just(b"99999999999999999999".to_vec()),
        ]
    };
    prop_oneof![
        (
            0..FORMS.len(),
            vec((0..8usize, bytes()), 0..6),
            any::<bool>(),
            proptest::option::weighted(
                0.2,
                prop_oneof![
                    Just("application/json".to_string()),
                    Just("multipart/form-data".to_string()),
                    "\\PC{0,30}"
                ]
            ),
        )
            .prop_map(|(r, f, c, t)| WebCase::Form(r, f, c, t)),
        (0..FORMS.len(), vec(any::<u8>(), 0..200)).prop_map(|(r, b)| WebCase::RawForm(r, b)),
        (
            0..UPLOADS.len(),
            vec(
                (
                    0..4usize,
                    proptest::option::of("\\PC{0,20}"),
                    vec(any::<u8>(), 0..300)
                ),
                0..4
            ),
            prop_oneof![Just(0usize), 0..400usize],
            proptest::option::weighted(0.2, "[ -~]{0,80}"),
        )
            .prop_map(|(r, p, cut, b)| WebCase::Multipart(r, p, cut, b)),
        (0..2usize, vec(any::<u8>(), 0..200)).prop_map(|(r, b)| WebCase::Api(r, b)),
    ]
}

/// The request of `case` in session `s`.
fn web_request(case: &WebCase, s: &WebSession) -> Vec<u8> {
    let cookie = [("Cookie", s.cookie.as_str())];
    match case {
        WebCase::Form(r, fields, csrf, ctype) => {
            let (path, names) = FORMS[*r];
            let mut pairs: Vec<String> = fields
                .iter()
                .map(|(f, v)| {
                    let name = names.get(*f).copied().unwrap_or("x");
                    format!("{name}={}", urlencode(v))
                })
                .collect();
            if *csrf {
                pairs.push(format!("csrf={}", s.csrf));
            }
            let ctype = ctype
                .clone()
                .unwrap_or("application/x-www-form-urlencoded".into());
            let mut h = cookie.to_vec();
            h.push(("Content-Type", &ctype));
            request("POST", path, &h, pairs.join("&").as_bytes())
        }
        WebCase::RawForm(r, body) => {
            let h = [
                cookie[0],
                ("Content-Type", "application/x-www-form-urlencoded"),
            ];
            request("POST", FORMS[*r].0, &h, body)
        }
        WebCase::Multipart(r, parts, cut, boundary) => {
            let (path, names) = UPLOADS[*r];
            let b = boundary.clone().unwrap_or("fuzzboundary7MA4YWxk".into());
            let mut body = Vec::new();
            let mut part = |name: &str, file: Option<&str>, content: &[u8]| {
                body.extend_from_slice(
                    format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
                );
                if let Some(f) = file {
                    body.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
                }
                body.extend_from_slice(b"\r\n\r\n");
                body.extend_from_slice(content);
                body.extend_from_slice(b"\r\n");
            };
            part("csrf", None, s.csrf.as_bytes());
            for (f, file, content) in parts {
                part(
                    names.get(*f).copied().unwrap_or("x"),
                    file.as_deref(),
                    content,
                );
            }
            body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
            body.truncate(body.len().saturating_sub(*cut));
            let ctype = "multipart/form-data; boundary=fuzzboundary7MA4YWxk";
            request("POST", path, &[cookie[0], ("Content-Type", ctype)], &body)
        }
        WebCase::Api(r, body) => {
            let (method, path) = [("POST", "/api/login"), ("PUT", "/api/settings")][*r];
            request(method, path, &[("Content-Type", "application/json")], body)
        }
    }
}

/// Arbitrary form posts, raw bodies, multipart uploads (also truncated,
/// with a boundary other than announced) and JSON to every web route,
/// logged in with a valid CSRF token so the handlers parse them: every
/// answer is 2xx/3xx/4xx, and the login page answers after each.
#[test]
fn fuzzed_web_forms_and_uploads_get_an_answer_and_the_device_keeps_answering() {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let dir = tempfile::tempdir().unwrap();
    let site_file = dir.path().join("site.toml");
    std::fs::write(&site_file, fast_site_text(184)).unwrap();
    let p = Proc::start(&site_file, &dir.path().join("state"));
    let web = p.service("https");
    let password = p.password();
    let rt = runtime();
    let tls = tls::connector();
    let session = Mutex::new(rt.block_on(web_login(&tls, &web, &password)));
    let (relogins, answers) = (
        AtomicU64::new(0),
        Mutex::new(std::collections::BTreeMap::new()),
    );
    let cases = 160;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let started = Instant::now();
    runner
        .run(&web_case(), |case| {
            let s = session.lock().unwrap().clone();
            let (code, text) = rt.block_on(https(&tls, &web, &web_request(&case, &s)));
            if !(200..500).contains(&code) {
                return Err(TestCaseError::fail(format!(
                    "{case:?}: answered {code}:\n{text}"
                )));
            }
            *answers.lock().unwrap().entry(code).or_insert(0u32) += 1;
            rt.block_on(login_page_latency(&tls, &web));
            // A date change or lockout may end the session: lift any lock
            // (site clock) and log in again.
            let (code, _) = rt.block_on(https(
                &tls,
                &web,
                &request("GET", "/", &[("Cookie", &s.cookie)], b""),
            ));
            if code != 200 {
                p.api("POST", "/api/v1/clock", r#"{"advance_s": 7200}"#);
                *session.lock().unwrap() = rt.block_on(web_login(&tls, &web, &password));
                relogins.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        })
        .unwrap();
    println!(
        "web fuzz: {cases} cases in {:.1} s, answers {:?}, {} new logins",
        started.elapsed().as_secs_f64(),
        answers.lock().unwrap(),
        relogins.load(Ordering::SeqCst)
    );
    let d = p.api("GET", "/api/v1/devices/ps1", "");
    assert_eq!(d["power"], "on", "{d}");
}

/// Arbitrary bytes on Modbus TCP connections (many frames, bad headers,
/// partial frames then close): afterwards a fresh client still reads the
/// registers.
#[test]
fn fuzzed_modbus_tcp_streams_leave_the_device_answering() {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let dir = tempfile::tempdir().unwrap();
    let site_file = dir.path().join("site.toml");
    std::fs::write(&site_file, fast_site_text(186)).unwrap();
    let p = Proc::start(&site_file, &dir.path().join("state"));
    let mb = p.service("modbus");
    // Valid MBAP headers around arbitrary PDUs, and arbitrary bytes.
    let stream = prop_oneof![
        vec(any::<u8>(), 0..600),
        vec((any::<u16>(), any::<u8>(), vec(any::<u8>(), 1..260)), 1..8).prop_map(|frames| {
            let mut v = Vec::new();
            for (tid, unit, pdu) in frames {
                v.extend_from_slice(&tid.to_be_bytes());
                v.extend_from_slice(&[0, 0]);
                v.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
                v.push(unit);
                v.extend_from_slice(&pdu);
            }
            v
        }),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&stream, |bytes| {
            let mut s = modbus_connect(&mb);
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            // The device may close on a bad header: a write error is fine.
            let _ = s.write_all(&bytes);
            let mut sink = [0u8; 4096];
            let _ = s.read(&mut sink);
            drop(s);
            let mut s = modbus_connect(&mb);
            let r = modbus(&mut s, 7, &[0x03, 0x00, 0x73, 0x00, 0x04])
                .map_err(|e| TestCaseError::fail(format!("no answer after {bytes:?}: {e}")))?;
            prop_assert_eq!(r.first(), Some(&0x03), "after {:?}", bytes);
            Ok(())
        })
        .unwrap();
}

// ------------------------------------------------------ hostile web input

/// Slow header senders.
const SLOWLORIS: usize = 500;
/// Sockets that finish the TLS handshake and then send nothing.
const IDLE_TLS: usize = 200;
/// Sockets that connect and never start the handshake.
const IDLE_TCP: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Slowloris (500 connections trickling header lines), idle TLS sockets
/// and half-open TCP sockets held open together: the login page keeps
/// answering each fresh client within 1 s. Then over-long request lines,
/// headers and bodies get 4xx, and the page still answers.
#[test]
fn hostile_web_input_leaves_the_login_page_answering() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let site_file = dir.path().join("site.toml");
    std::fs::write(&site_file, fast_site_text(188)).unwrap();
    let p = Proc::start(&site_file, &dir.path().join("state"));
    let web = p.service("https");
    let rt = runtime();
    let tls = tls::connector();
    rt.block_on(async {
        let mut base = Vec::new();
        for _ in 0..5 {
            base.push(login_page_latency(&tls, &web).await);
        }
        base.sort();

        let stop = Arc::new(AtomicBool::new(false));
        let (slow_up, idle_up) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let gate = Arc::new(tokio::sync::Semaphore::new(16));
        let mut tasks = Vec::new();
        for i in 0..SLOWLORIS {
            let (tls, web, stop, up, gate) =
                (tls.clone(), web.clone(), stop.clone(), slow_up.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                let permit = gate.acquire().await.unwrap();
                let Ok(mut s) = tls_connect(&tls, &web).await else { return };
                drop(permit);
                if s.write_all(b"GET /login HTTP/1.1\r\nHost: panel-server\r\n").await.is_err() {
                    return;
                }
                up.fetch_add(1, Ordering::SeqCst);
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    n += 1;
                    if s.write_all(format!("X-Slow-{i}-{n}: a\r\n").as_bytes()).await.is_err() {
                        up.fetch_sub(1, Ordering::SeqCst);
                        return;
                    }
                }
            }));
        }
        let mut held = Vec::new();
        for _ in 0..IDLE_TLS {
            let _permit = gate.acquire().await.unwrap();
            if let Ok(s) = tls_connect(&tls, &web).await {
                idle_up.fetch_add(1, Ordering::SeqCst);
                held.push(s);
            }
        }
        let mut half_open = Vec::new();
        for _ in 0..IDLE_TCP {
            half_open.push(tokio::net::TcpStream::connect(&web).await.unwrap());
        }
        let t = Instant::now();
        while (slow_up.load(Ordering::SeqCst) as usize) < SLOWLORIS {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "only {} slowloris connections up",
                slow_up.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // All of them held: fresh clients for 5 s.
        let mut under = Vec::new();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            under.push(login_page_latency(&tls, &web).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        under.sort();
        let still = slow_up.load(Ordering::SeqCst);
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await.unwrap();
        }
        println!(
            "slowloris: {SLOWLORIS} slow senders ({still} still connected at the end), {} idle TLS, \
             {IDLE_TCP} half-open TCP; login page over {} fresh connections: p50 {:?} p95 {:?} \
             max {:?} (idle: p50 {:?} max {:?})",
            idle_up.load(Ordering::SeqCst),
            under.len(),
            percentile(&under, 0.5),
            percentile(&under, 0.95),
            under.last().unwrap(),
            percentile(&base, 0.5),
            base.last().unwrap()
        );
        assert_eq!(still as usize, SLOWLORIS, "slow senders were dropped early");
        assert!(
            *under.last().unwrap() < Duration::from_secs(1),
            "login page took {:?} under slowloris",
            under.last().unwrap()
        );
        drop(held);
        drop(half_open);

        // Over-long input gets 4xx.
        let big = "a".repeat(1 << 20);
        let many: Vec<(String, String)> = (0..500).map(|i| (format!("X-H{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut huge_body = b"POST /login HTTP/1.1\r\nHost: panel-server\r\nConnection: close\r\n\
            Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000000000\r\n\r\n"
            .to_vec();
        huge_body.extend_from_slice(b"username=SecurityAdmin&password=");
        let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
            ("1 MiB header", request("GET", "/login", &[("X-Big", &big)], b""), &[431]),
            ("500 headers", request("GET", "/login", &many, b""), &[431]),
            ("1 MiB path", request("GET", &format!("/{big}"), &[], b""), &[414, 431]),
            ("1 GB body announced", huge_body, &[413]),
        ];
        for (what, raw, want) in cases {
            let (code, text) = https(&tls, &web, &raw).await;
            assert!(want.contains(&code), "{what}: {code}\n{}", &text[..text.len().min(300)]);
            login_page_latency(&tls, &web).await;
        }
        // A slow POST: 2000 bytes announced, 32 sent, then silence. The body
        // has 10 s + 2000/1024 s: the server answers 408 and closes rather
        // than holding the handler and the connection.
        let mut slow = b"POST /login HTTP/1.1\r\nHost: panel-server\r\n\
            Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 2000\r\n\r\n"
            .to_vec();
        slow.extend_from_slice(b"username=SecurityAdmin&password=");
        let t0 = std::time::Instant::now();
        let (code, text) = https(&tls, &web, &slow).await;
        let took = t0.elapsed();
        assert_eq!(code, 408, "slow body: {}", &text[..text.len().min(300)]);
        assert!(
            (Duration::from_secs(10)..Duration::from_secs(16)).contains(&took),
            "slow body answered after {took:?}"
        );
        login_page_latency(&tls, &web).await;
    });
    let d = p.api("GET", "/api/v1/devices/ps1", "");
    assert_eq!(d["power"], "on", "{d}");
}

/// A directed WS-Discovery Probe with no types.
fn wsd_probe_xml(id: u32) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:wsd="http://schemas.xmlsoap.org/ws/2005/04/discovery"><soap:Header><wsa:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</wsa:To><wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</wsa:Action><wsa:MessageID>urn:uuid:00000000-0000-4000-8000-{id:012}</wsa:MessageID></soap:Header><soap:Body><wsd:Probe/></soap:Body></soap:Envelope>"#
    )
}

/// Arbitrary datagrams and mutated SOAP envelopes on WS-Discovery (UDP
/// 3702), arbitrary POSTs on the DPWS metadata port: after each, a directed
/// Probe still gets its ProbeMatches.
#[test]
fn fuzzed_ws_discovery_and_dpws_leave_the_device_answering() {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let dir = tempfile::tempdir().unwrap();
    let site_file = dir.path().join("site.toml");
    std::fs::write(&site_file, fast_site_text(187)).unwrap();
    let p = Proc::start(&site_file, &dir.path().join("state"));
    let ip = p.service("https").split(':').next().unwrap().to_string();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let wsd = format!("{ip}:3702");
    let probe = |id: u32| -> Result<(), TestCaseError> {
        udp.send_to(wsd_probe_xml(id).as_bytes(), &wsd).unwrap();
        let mut buf = vec![0u8; 65536];
        let want = format!("00000000-0000-4000-8000-{id:012}");
        // Earlier garbage may have drawn answers: skip to ours.
        loop {
            let n = udp
                .recv(&mut buf)
                .map_err(|e| TestCaseError::fail(format!("no ProbeMatches: {e}")))?;
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.contains("ProbeMatches") && text.contains(&want) {
                return Ok(());
            }
        }
    };
    probe(0).unwrap();
    // Mutations of a valid Probe: (position, replacement bytes, deleted).
    let input = prop_oneof![
        vec(any::<u8>(), 0..1500).prop_map(|b| (b, false)),
        "\\PC{0,400}".prop_map(|s| (s.into_bytes(), false)),
        vec(
            (
                any::<prop::sample::Index>(),
                vec(any::<u8>(), 0..8),
                0..8usize
            ),
            1..6
        )
        .prop_map(|edits| {
            let mut b = wsd_probe_xml(1).into_bytes();
            for (at, put, del) in edits {
                let i = at.index(b.len());
                let end = (i + del).min(b.len());
                b.splice(i..end, put);
            }
            (b, false)
        }),
        vec(any::<u8>(), 0..600).prop_map(|b| (b, true)),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 150,
        failure_persistence: None,
        ..Config::default()
    });
    let n = AtomicU64::new(2);
    let codes = Mutex::new(std::collections::BTreeMap::new());
    runner
        .run(&input, |(bytes, http)| {
            if http {
                let mut raw = format!(
                    "POST /{} HTTP/1.1\r\nHost: {ip}\r\nContent-Type: application/soap+xml\r\n\
                     Connection: close\r\nContent-Length: {}\r\n\r\n",
                    bytes.len() % 3,
                    bytes.len()
                )
                .into_bytes();
                raw.extend_from_slice(&bytes);
                {
                    let mut s = TcpStream::connect(format!("{ip}:5357"))
                        .map_err(|e| TestCaseError::fail(format!("metadata port: {e}")))?;
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let _ = s.write_all(&raw);
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink);
                    let head = String::from_utf8_lossy(&sink[..sink.len().min(12)]).to_string();
                    *codes.lock().unwrap().entry(head.clone()).or_insert(0u32) += 1;
                    prop_assert!(
                        head.starts_with("HTTP/1.1 2") || head.starts_with("HTTP/1.1 4"),
                        "metadata port answered {:?}",
                        head
                    );
                }
            } else {
                udp.send_to(&bytes, &wsd).unwrap();
            }
            probe(n.fetch_add(1, Ordering::SeqCst) as u32)
        })
        .unwrap();
    println!(
        "ws-discovery fuzz: {} probes answered after fuzzed input; metadata port answers {:?}",
        n.load(Ordering::SeqCst) - 1,
        codes.lock().unwrap()
    );
}

/// Every field of every form and upload (and the upload's file name) set
/// to a `<script>` value; then every answer and every page: none carries
/// the value unescaped, and the values the pages do echo come back as
/// `&lt;script&gt;`.
#[test]
fn stored_script_values_come_back_escaped_on_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let site_file = dir.path().join("site.toml");
    std::fs::write(&site_file, fast_site_text(185)).unwrap();
    let p = Proc::start(&site_file, &dir.path().join("state"));
    let web = p.service("https");
    let password = p.password();
    let rt = runtime();
    let tls = tls::connector();
    let raw = "<script>ft(1)</script>";
    let escaped = "&lt;script&gt;ft(1)&lt;/script&gt;";
    rt.block_on(async {
        let s = web_login(&tls, &web, &password).await;
        let mut answers: Vec<(String, String)> = Vec::new();
        for (r, (path, names)) in FORMS.iter().enumerate() {
            let fields = (0..names.len())
                .map(|f| (f, raw.as_bytes().to_vec()))
                .collect();
            let case = WebCase::Form(r, fields, *path != "/login", None);
            let (code, text) = https(&tls, &web, &web_request(&case, &s)).await;
            assert!((200..500).contains(&code), "{path}: {code}");
            answers.push((format!("POST {path}"), text));
        }
        for (r, (path, names)) in UPLOADS.iter().enumerate() {
            let parts = (0..names.len())
                .map(|f| (f, Some(raw.to_string()), raw.as_bytes().to_vec()))
                .collect();
            let case = WebCase::Multipart(r, parts, 0, None);
            let (code, text) = https(&tls, &web, &web_request(&case, &s)).await;
            assert!((200..500).contains(&code), "{path}: {code}");
            answers.push((format!("POST {path}"), text));
        }
        // The session may have ended (a wrong current password counts as a
        // failed login, not as a logout): read the pages in a fresh one.
        let s = web_login(&tls, &web, &password).await;
        for path in [
            "/",
            "/settings",
            "/users",
            "/firmware",
            "/logs",
            "/logs/audit.csv",
            "/backup",
            "/maintenance",
            "/login",
        ] {
            let (code, text) = https(
                &tls,
                &web,
                &request("GET", path, &[("Cookie", &s.cookie)], b""),
            )
            .await;
            assert_eq!(code, 200, "GET {path}: {text}");
            answers.push((format!("GET {path}"), text));
        }
        let mut echoed = Vec::new();
        for (what, text) in &answers {
            assert!(
                !text.contains("<script"),
                "{what} carries the value unescaped:\n{text}"
            );
            if text.contains(escaped) {
                echoed.push(what.as_str());
            }
        }
        println!(
            "escaping: {} answers checked; escaped value echoed by {echoed:?}",
            answers.len()
        );
        assert!(
            !echoed.is_empty(),
            "no page echoes the value: the check proves nothing"
        );
    });
}

/// 140 Modbus TCP clients at once: 128 are served, the others closed at
/// once; eight of the served ones then flood FC3 requests for 4 s while
/// fresh HTTPS clients load the login page within 1 s; once the clients
/// leave, a new one is served.
#[test]
fn modbus_client_cap_and_flood_leave_the_login_page_answering() {
    let dir = tempfile::tempdir().unwrap();
    let site_file = dir.path().join("site.toml");
    std::fs::write(&site_file, fast_site_text(189)).unwrap();
    let p = Proc::start(&site_file, &dir.path().join("state"));
    let web = p.service("https");
    let mb = p.service("modbus");
    let mut served = Vec::new();
    let mut refused = 0;
    for i in 0..140u16 {
        let mut s = modbus_connect(&mb);
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        match modbus(&mut s, i, &[0x03, 0x00, 0x73, 0x00, 0x04]) {
            Ok(r) => {
                assert_eq!(r.first(), Some(&0x03), "{r:?}");
                served.push(s);
            }
            Err(_) => refused += 1,
        }
    }
    assert_eq!((served.len(), refused), (128, 12));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let flood: Vec<_> = served
        .drain(..8)
        .map(|mut s| {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut tid = 0u16;
                while !stop.load(Ordering::SeqCst) {
                    tid = tid.wrapping_add(1);
                    let r = modbus(&mut s, tid, &[0x03, 0x00, 0x73, 0x00, 0x04]).unwrap();
                    assert_eq!(r.first(), Some(&0x03));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let rt = runtime();
    let tls = tls::connector();
    let started = Instant::now();
    let mut lat = rt.block_on(async {
        let mut v = Vec::new();
        while started.elapsed() < Duration::from_secs(4) {
            v.push(login_page_latency(&tls, &web).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        v
    });
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    for t in flood {
        t.join().unwrap();
    }
    lat.sort();
    println!(
        "modbus flood: 128 of 140 clients served; {:.0} req/s from 8 of them; login page over {} \
         fresh connections: p50 {:?} p95 {:?} max {:?}",
        done.load(Ordering::SeqCst) as f64 / secs,
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        lat.last().unwrap()
    );
    assert!(
        *lat.last().unwrap() < Duration::from_secs(1),
        "login page took {:?} under the flood",
        lat.last().unwrap()
    );
    drop(served);
    // The slots free as the server sees the closes.
    let t = Instant::now();
    loop {
        let mut s = modbus_connect(&mb);
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        if modbus(&mut s, 1, &[0x03, 0x00, 0x73, 0x00, 0x04]).is_ok() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no slot freed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ------------------------------------------------ Data Logger: BLE and USB

/// The logger's USB console on its PTY (opened without becoming our
/// controlling terminal).
struct Console {
    tty: std::fs::File,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Console {
    fn open(path: &std::path::Path) -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        let t = Instant::now();
        while !path.exists() {
            assert!(t.elapsed() < Duration::from_secs(15), "no PTY at {path:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .unwrap();
        let mut reader = tty.try_clone().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self { tty, out }
    }

    /// Sends `bytes` and a line end; the answer once it has `lines` lines
    /// starting OK or ERROR.
    fn ask(&mut self, bytes: &[u8], lines: usize) -> Result<String, String> {
        self.out.lock().unwrap().clear();
        self.tty.write_all(bytes).map_err(|e| e.to_string())?;
        self.tty.write_all(b"\r\n").map_err(|e| e.to_string())?;
        let t = Instant::now();
        loop {
            let text = String::from_utf8_lossy(&self.out.lock().unwrap()).to_string();
            let done = text
                .lines()
                .filter(|l| l.starts_with("OK") || l.starts_with("ERROR"))
                .count();
            if done >= lines {
                return Ok(text);
            }
            if t.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "no answer to {:?}: {text:?}",
                    String::from_utf8_lossy(bytes)
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The Data Logger's peer-reachable links with fuzzed input: BLE frames
/// (raw bytes, framed bodies, mutated hellos) are slammed with no answer
/// and the real app (`fieldtwin ble`) still gets the status; any line on
/// the USB console gets OK or ERROR (a blank line none) and `status` still
/// answers.
#[test]
fn fuzzed_datalogger_ble_and_usb_leave_it_answering() {
    use fieldtwin_models::datalogger::ble;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let dir = tempfile::tempdir().unwrap();
    let usb = dir.path().join("dl1-usb");
    let link = dir.path().join("dl1-ble");
    let a = 183;
    let old =
        format!("id = \"dl1\"\nmodel = \"DataLogger\"\nip = \"10.77.{a}.30\"\nsegment = \"lan\"\n");
    let text = fast_site_text(a);
    assert!(text.contains(&old), "default site changed: {text}");
    let text = text.replace(
        &old,
        &format!(
            "{old}\n[device.datalogger]\nbroker = \"127.0.0.1:{}\"\nusb_pty = \"{}\"\nble_socket = \"{}\"\n",
            free_port(),
            usb.display(),
            link.display()
        ),
    );
    let site_file = dir.path().join("site.toml");
    std::fs::write(&site_file, text).unwrap();
    let p = Proc::start(&site_file, &dir.path().join("state"));
    let d = p.api("GET", "/api/v1/devices/dl1", "");
    let key = d["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == "ble (pairing key)")
        .unwrap_or_else(|| panic!("no pairing key: {d}"))["password"]
        .as_str()
        .unwrap()
        .to_string();
    let app_status = || {
        let out = Command::new(env!("CARGO_BIN_EXE_fieldtwin"))
            .args(["ble", "--socket", link.to_str().unwrap(), "--key", &key])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && text.contains("\"device\":\"dl1\""))
            .then_some(())
            .ok_or_else(|| TestCaseError::fail(format!("the app got no status: {out:?}")))
    };
    app_status().unwrap();
    let t = Instant::now();
    while !link.exists() {
        assert!(t.elapsed() < Duration::from_secs(15));
        std::thread::sleep(Duration::from_millis(20));
    }
    // BLE: raw bytes, framed arbitrary bodies, hellos with a wrong MAC.
    let hello_like = vec(any::<u8>(), 97).prop_map(|mut b| {
        b[0] = 0x01;
        ble::frame(&b)
    });
    let frames = prop_oneof![
        vec(any::<u8>(), 0..300),
        vec(vec(any::<u8>(), 0..200), 1..4)
            .prop_map(|bodies| bodies.iter().flat_map(|b| ble::frame(b)).collect()),
        hello_like,
    ];
    let mut runner = TestRunner::new(Config {
        cases: 120,
        failure_persistence: None,
        ..Config::default()
    });
    let n = AtomicU64::new(0);
    runner
        .run(&frames, |bytes| {
            let mut u = std::os::unix::net::UnixStream::connect(&link)
                .map_err(|e| TestCaseError::fail(format!("BLE link: {e}")))?;
            u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = u.write_all(&bytes);
            // A partial frame waits for more: close our side to end it.
            let _ = u.shutdown(std::net::Shutdown::Write);
            let mut buf = Vec::new();
            let r = u.read_to_end(&mut buf);
            prop_assert!(
                buf.is_empty(),
                "answered an unauthenticated peer: {:?} -> {:?} ({:?})",
                bytes,
                buf,
                r
            );
            if n.fetch_add(1, Ordering::SeqCst) % 20 == 19 {
                app_status()?;
            }
            Ok(())
        })
        .unwrap();
    app_status().unwrap();
    // USB: arbitrary bytes, and the commands with arbitrary arguments.
    let mut c = Console::open(&usb);
    let cmd = proptest::sample::select(vec![
        "apn set ",
        "baud set ",
        "at ",
        "AT",
        "trace ",
        "help ",
        "diag ",
        "status ",
        "",
    ]);
    let lines = prop_oneof![
        vec(
            any::<u8>().prop_filter("one line", |b| *b != b'\r' && *b != b'\n'),
            0..200
        ),
        (cmd, "\\PC{0,40}").prop_map(|(c, a)| format!("{c}{a}").into_bytes()),
    ]
    .prop_filter("no reboot", |b| {
        !String::from_utf8_lossy(b).to_lowercase().contains("reboot")
    });
    let mut runner = TestRunner::new(Config {
        cases: 150,
        failure_persistence: None,
        ..Config::default()
    });
    let console = Mutex::new(&mut c);
    runner
        .run(&lines, |line| {
            let mut c = console.lock().unwrap();
            if line.iter().all(u8::is_ascii_whitespace) {
                // A blank line is ignored, as on a terminal: no answer.
                c.tty.write_all(&line).unwrap();
                c.tty.write_all(b"\r\n").unwrap();
            } else {
                c.ask(&line, 1).map_err(TestCaseError::fail)?;
            }
            let r = c.ask(b"status", 1).map_err(TestCaseError::fail)?;
            prop_assert!(r.contains("TRACE battery="), "after {:?}: {}", line, r);
            Ok(())
        })
        .unwrap();
}
