//! End-to-end tests of the cellular Data Logger (issue 12) against real
//! components started by the test on loopback: Debian's mosquitto with a
//! TLS 1.2 listener and a password file, mosquitto_sub decoding every
//! record, `openssl s_server -trace` to see the logger's ClientHello, and
//! nmap for the port checks.
//!
//! Site octets 84, 86-88 and 224 belong to these tests (see tests/common/mod.rs).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{RunningSite, free_port, site_text, tool};
use fieldtwin_models::datalogger::payload;

const START: &str = "start = \"2026-03-02T00:00:00Z\"\n";

/// A child process killed (by its PID) when dropped.
struct Proc {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Self {
        // stdin stays open while the child lives (s_server stops at EOF).
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?} ({e}); scripts/test installs it"));
        let out = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        Self { child, out }
    }

    fn text(&self) -> String {
        self.out.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`wait_for`] that prints `context()` when it times out.
fn wait_or_show(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}:\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A CA and a server certificate for 127.0.0.1 (and `also`), made with the
/// openssl CLI.
fn certificates(dir: &Path, also: Option<&str>) {
    let run = |args: &[&str]| common::openssl(dir, args);
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=fieldtwin test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    let extra = also.map(|ip| format!(",IP:{ip}")).unwrap_or_default();
    std::fs::write(
        dir.join("ext.cnf"),
        format!("subjectAltName=IP:127.0.0.1{extra}\n"),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// Makes `dir` and its files readable by the mosquitto user (it drops root).
fn readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

fn wait_port(port: u16) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for("the broker's port", Duration::from_secs(15), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
}

/// The default site at octet `a` with dl1 uploading to `broker_port`.
fn site(a: u8, broker_port: u16, ca: &Path, transmit_s: u32, usb: Option<&Path>) -> String {
    site_with_broker(a, &format!("127.0.0.1:{broker_port}"), ca, transmit_s, usb)
}

fn site_with_broker(a: u8, broker: &str, ca: &Path, transmit_s: u32, usb: Option<&Path>) -> String {
    let text = site_text(a).replace("seed = 1\n", &format!("seed = 1\n{START}"));
    let dl = format!(
        "id = \"dl1\"\nmodel = \"DataLogger\"\nip = \"10.77.{a}.30\"\nsegment = \"lan\"\n\n\
         [device.datalogger]\nbroker = \"{broker}\"\npassword = \"dl1-secret\"\n\
         ca_file = \"{}\"\ntransmit_s = {transmit_s}\n{}",
        ca.display(),
        usb.map(|p| format!(
            "usb_pty = \"{}\"\nble_socket = \"{}\"\n",
            p.display(),
            p.with_file_name("dl1-ble").display()
        ))
        .unwrap_or_default()
    );
    let old =
        format!("id = \"dl1\"\nmodel = \"DataLogger\"\nip = \"10.77.{a}.30\"\nsegment = \"lan\"\n");
    assert!(text.contains(&old), "default site changed: {text}");
    text.replace(&old, &dl)
}

/// Records the subscriber printed (one hex payload a line), by sequence number.
fn received(sub: &Proc) -> Vec<payload::Row> {
    let names = ["level", "pressure", "flow", "door", "water_temp"].map(String::from);
    sub.text()
        .lines()
        .filter(|l| !l.starts_with("Client") && !l.is_empty())
        .filter_map(|l| {
            let bytes: Option<Vec<u8>> = (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(l.get(i..i + 2)?, 16).ok())
                .collect();
            payload::decode(&bytes?).ok()
        })
        .flat_map(|d| payload::rows(&d, &names))
        .collect()
}

/// Every sequence number from 0 up arrived exactly once.
fn no_gap_no_duplicate(rows: &[payload::Row]) {
    let mut seqs: Vec<u32> = rows.iter().map(|r| r.seq).collect();
    let n = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "duplicates at the server");
    let max = *seqs.last().unwrap();
    assert_eq!(
        seqs,
        (0..=max).collect::<Vec<_>>(),
        "gap in the sequence numbers"
    );
}

fn command(site: &RunningSite, json: &str) {
    site.post_json("/api/v1/commands", json);
}

#[test]
fn records_reach_mosquitto_without_gap_or_duplicate_across_coverage_loss_and_power_cycle() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), None);
    let port = free_port();
    let (broker, sub) = broker_and_subscriber(dir.path(), port, "listener {port} 127.0.0.1", None);
    let ca = dir.path().join("ca.crt");

    let a = 86;
    let s = RunningSite::start(&site(a, port, &ca, 60, None), &["--speed", "60"]);
    // A few sessions in coverage.
    let show = || format!("broker:\n{}\nsubscriber:\n{}", broker.text(), sub.text());
    wait_or_show(
        "the first records",
        Duration::from_secs(60),
        || received(&sub).len() >= 15,
        show,
    );
    let st = s.get_json("/api/v1/devices/dl1");
    assert!(
        st["services"].as_array().unwrap().is_empty(),
        "the logger lists a listening service: {st}"
    );
    assert_eq!(st["details"]["extra"]["modem"]["attached"], true, "{st}");

    // Coverage lost for 6 virtual hours, with a power cycle in the middle.
    command(
        &s,
        r#"{"command":"cellular","device":"dl1","coverage":false}"#,
    );
    let lost_at = received(&sub).len();
    command(&s, r#"{"command":"advance_clock","seconds":10800}"#);
    s.post_json("/api/v1/devices/dl1/power", r#"{"action":"cycle"}"#);
    command(&s, r#"{"command":"advance_clock","seconds":10800}"#);
    std::thread::sleep(Duration::from_secs(2));
    let st = s.get_json("/api/v1/devices/dl1");
    let unsent = st["details"]["extra"]["store"]["unsent"].as_u64().unwrap();
    assert!(
        unsent >= 6 * 60 * 5 - 60,
        "6 h at 5 samples a minute should be waiting: {st}"
    );
    assert!(
        received(&sub).len() <= lost_at + 5,
        "records arrived without coverage"
    );
    command(
        &s,
        r#"{"command":"cellular","device":"dl1","coverage":true}"#,
    );
    let head = st["details"]["extra"]["store"]["next_seq"]
        .as_u64()
        .unwrap();
    wait_or_show(
        "the stored records",
        Duration::from_secs(90),
        || received(&sub).iter().any(|r| u64::from(r.seq) >= head),
        || format!("{}\n{}", show(), s.get("/api/v1/devices/dl1").1),
    );

    let rows = received(&sub);
    no_gap_no_duplicate(&rows);
    // Samples timestamped inside the coverage loss reached the broker.
    let by_stream: BTreeMap<&str, usize> = rows.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.stream_id.as_str()).or_default() += 1;
        m
    });
    for s in ["level", "pressure", "flow", "door", "water_temp"] {
        assert!(
            by_stream.get(s).copied().unwrap_or(0) > 300,
            "{by_stream:?}"
        );
    }
    let hours: std::collections::BTreeSet<&str> = rows.iter().map(|r| &r.ts[..13]).collect();
    assert!(hours.len() >= 6, "timestamps span {hours:?}");
    // The samples are physical: a level of 1.5-3.5 m on 4-20 mA, an SDI-12
    // temperature of 9-15 degC, a growing pulse count.
    for r in &rows {
        assert_eq!(r.status, "ok", "{r:?}");
        match r.stream_id.as_str() {
            "level" => {
                assert!(
                    (4.0..=20.0).contains(&r.raw) && (1.4..=3.6).contains(&r.value),
                    "{r:?}"
                )
            }
            "water_temp" => assert!((8.5..=15.5).contains(&r.value), "{r:?}"),
            _ => {}
        }
    }
    let flow: Vec<f32> = rows
        .iter()
        .filter(|r| r.stream_id == "flow")
        .map(|r| r.raw)
        .collect();
    assert!(
        flow.windows(2).all(|w| w[0] <= w[1]),
        "pulse count went back"
    );

    // The carrier NAT: sessions come from addresses of the pool, at least
    // two different ones; no session lasts more than about 2 minutes of
    // virtual time (mosquitto logs wall seconds; the site runs at 60x).
    let log = broker.text();
    let sources: std::collections::BTreeSet<&str> = log
        .lines()
        .filter_map(|l| l.split("New connection from ").nth(1))
        .filter_map(|r| r.split(':').next())
        .filter(|ip| *ip != "127.0.0.1")
        .collect();
    assert!(sources.len() >= 2, "source addresses: {sources:?}");
    assert!(
        sources
            .iter()
            .all(|ip| ip.starts_with(&format!("127.78.{a}."))),
        "not from the carrier pool: {sources:?}"
    );
    let stamp = |l: &str| l.split(':').next().and_then(|t| t.parse::<u64>().ok());
    let mut opened = None;
    let mut sessions = 0;
    for l in log.lines() {
        if l.contains("as dl1 ") {
            opened = stamp(l);
        } else if l.contains("Client dl1 disconnected")
            && let (Some(a), Some(b)) = (opened.take(), stamp(l))
        {
            sessions += 1;
            assert!(
                b - a <= 3,
                "a session lasted {} wall s at 60x:\n{log}",
                b - a
            );
        }
    }
    assert!(sessions >= 3, "{sessions} sessions:\n{log}");

    // `fieldtwin datalogger decode` gives the same rows as the library.
    let line = sub
        .text()
        .lines()
        .find(|l| !l.starts_with("Client") && l.len() > 40)
        .unwrap()
        .to_string();
    let out = common::fieldtwin(&["datalogger", "decode", &line]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["deviceId"], "dl1");
    assert_eq!(first["streamId"], "level");
    assert_eq!(first["seq"], 0);

    // Nothing listens on the logger: every TCP port it could have is
    // refused, and a full nmap scan finds no more open ports on its address
    // than on an address no device uses (host mode shares the kernel's
    // wildcard listeners of the machine).
    let ip = format!("127.77.{a}.30");
    for port in [22u16, 80, 443, 502, 1883, 8883, 8080, 10443, 10502] {
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let e = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{port}");
    }
    let open = |host: &str| -> Vec<String> {
        let out = tool(
            "nmap",
            &["-n", "-Pn", "-p-", "-T5", "--open", "-oG", "-", host],
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{text}");
        let mut v: Vec<String> = text
            .split("Ports:")
            .nth(1)
            .unwrap_or("")
            .split(',')
            .filter(|p| p.contains("/open/"))
            .map(|p| p.trim().split('/').next().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let reference = format!("127.77.{a}.222");
    assert_eq!(
        open(&ip),
        open(&reference),
        "the logger has a listening port"
    );
    let udp = |host: &str| -> String {
        let out = tool(
            "nmap",
            &[
                "-n",
                "-Pn",
                "-sU",
                "--top-ports",
                "20",
                "-T5",
                "--open",
                "-oG",
                "-",
                host,
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines()
            .filter(|l| l.contains("Ports:"))
            .map(|l| {
                l.split("Ports:")
                    .nth(1)
                    .unwrap_or("")
                    .replace("open|filtered", "?")
            })
            .collect()
    };
    let u = udp(&ip);
    assert!(!u.contains("/open/"), "UDP port open on the logger: {u}");

    // Firmware over the air, through the broker only: a retained image on
    // dl1's firmware topic. A tampered image is refused and reported on the
    // status topic without a reboot; the signed one installs and the logger
    // reboots into it, its records going on without gap or duplicate.
    let sign = |family: &str, version: &str, name: &str| {
        // 100 kB: above the NV store's large-value threshold (64 KiB),
        // below the logger's 1 MiB MQTT limit.
        let payload = dir.path().join("fw.bin");
        let body: Vec<u8> = format!("data logger firmware {version}\n")
            .bytes()
            .cycle()
            .take(100_000)
            .collect();
        std::fs::write(&payload, body).unwrap();
        let img = dir.path().join(name);
        common::sign_firmware(&payload, version, Some(family), &img);
        img
    };
    let img = sign("Data Logger", "001.001.000", "fw.img");
    let mut bad = std::fs::read(&img).unwrap();
    let n = bad.len();
    bad[n - 70] ^= 0x55; // in the payload: the signature no longer matches
    let bad_img = dir.path().join("bad.img");
    std::fs::write(&bad_img, &bad).unwrap();
    let panel_img = sign("Panel Server", "009.000.000", "ps.img");
    // Above the logger's MQTT packet limit: skipped on the stream.
    let huge = dir.path().join("huge.img");
    std::fs::write(&huge, vec![0x5Au8; 1_200_000]).unwrap();
    let broker_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--cafile",
            ca.to_str().unwrap(),
            "--tls-version",
            "tlsv1.2",
            "-u",
            "reader",
            "-P",
            "reader-secret",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    };
    let publish = |file: &Path| {
        let args = broker_args(&[
            "-q",
            "1",
            "-r",
            "-t",
            "telemetry/dl1/firmware",
            "-f",
            file.to_str().unwrap(),
        ]);
        let out = tool(
            "mosquitto_pub",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert!(out.status.success(), "{out:?}");
    };
    // The logger's retained report on the status topic.
    let report = || -> serde_json::Value {
        let args = broker_args(&["-t", "telemetry/dl1/firmware/status", "-C", "1", "-W", "3"]);
        let out = tool(
            "mosquitto_sub",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let device = || s.get_json("/api/v1/devices/dl1");
    let firmware = || device()["details"]["extra"]["firmware"].clone();
    let starts = || device()["counters"]["firmware_starts"].as_u64().unwrap();
    assert_eq!(firmware()["version"], "001.000.000");
    let booted = starts();
    for (file, why) in [
        (&bad_img, "not signed by the vendor key"),
        (&panel_img, "accepts only \"Data Logger\""),
        (&huge, "the logger takes at most 1048576"),
    ] {
        publish(file);
        wait_or_show(
            "the refusal of a bad image",
            Duration::from_secs(30),
            || report()["detail"].as_str().is_some_and(|m| m.contains(why)),
            || format!("{}\n{}", firmware(), report()),
        );
        let r = report();
        assert_eq!(r["result"], "refused", "{r}");
        assert_eq!(r["running"], "001.000.000", "{r}");
        assert!(
            firmware()["last_image"]
                .as_str()
                .is_some_and(|m| m.contains(why)),
            "{}",
            firmware()
        );
        assert_eq!(firmware()["version"], "001.000.000");
        assert_eq!(starts(), booted, "a refused image rebooted the logger");
    }
    publish(&img);
    wait_or_show(
        "the signed image",
        Duration::from_secs(30),
        || firmware()["version"] == "001.001.000",
        || format!("{}\n{}", firmware(), report()),
    );
    assert_eq!(starts(), booted + 1, "one reboot into the new firmware");
    let r = report();
    assert_eq!(r["result"], "installed", "{r}");
    assert_eq!(r["image"], "001.001.000", "{r}");
    // The image stays retained: later sessions see the running version and
    // neither reinstall nor reboot; the records go on after the reboot.
    let head = device()["details"]["extra"]["store"]["next_seq"]
        .as_u64()
        .unwrap();
    wait_or_show(
        "records after the reboot",
        Duration::from_secs(60),
        || received(&sub).iter().any(|r| u64::from(r.seq) >= head + 10),
        || format!("{}\n{}", show(), device()),
    );
    assert_eq!(
        starts(),
        booted + 1,
        "the retained image was installed again"
    );
    assert!(
        firmware()["last_image"]
            .as_str()
            .is_some_and(|m| m.contains("001.001.000 verified and installed")),
        "{}",
        firmware()
    );
    no_gap_no_duplicate(&received(&sub));
    // A factory reset erases the ring, not the installed firmware.
    command(&s, r#"{"command":"factory_reset","device":"dl1"}"#);
    wait_or_show(
        "the logger back from its factory reset",
        Duration::from_secs(30),
        || starts() == booted + 2,
        || device().to_string(),
    );
    assert_eq!(firmware()["version"], "001.001.000");
    drop(broker);
}

/// mosquitto (TLS 1.2, password file, `listener` line with `{port}`) and a
/// subscriber to dl1's records, both run through `ns` if given.
fn broker_and_subscriber(dir: &Path, port: u16, listener: &str, ns: Option<&str>) -> (Proc, Proc) {
    let passwd = dir.join("passwd");
    std::fs::write(&passwd, "").unwrap();
    for (user, pass) in [("dl1", "dl1-secret"), ("reader", "reader-secret")] {
        let out = tool(
            "mosquitto_passwd",
            &["-b", passwd.to_str().unwrap(), user, pass],
        );
        assert!(out.status.success(), "{out:?}");
    }
    let d = dir.display();
    let listener = listener.replace("{port}", &port.to_string());
    std::fs::write(
        dir.join("mosquitto.conf"),
        format!(
            "per_listener_settings false\nallow_anonymous false\npassword_file {d}/passwd\n\
             persistence false\nlog_type all\n{listener}\ncafile {d}/ca.crt\n\
             certfile {d}/server.crt\nkeyfile {d}/server.key\ntls_version tlsv1.2\n"
        ),
    )
    .unwrap();
    readable(dir);
    let conf = dir.join("mosquitto.conf");
    let in_ns = |program: &str| -> Command {
        match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        }
    };
    let broker = Proc::spawn(in_ns("mosquitto").args(["-c", conf.to_str().unwrap()]));
    let ca = dir.join("ca.crt");
    wait_for("the broker", Duration::from_secs(15), || {
        broker.text().contains("running")
    });
    // Line-buffered, so every payload shows as soon as it arrives.
    let sub = Proc::spawn(in_ns("stdbuf").args([
        "-oL",
        "mosquitto_sub",
        "-d",
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--cafile",
        ca.to_str().unwrap(),
        "--tls-version",
        "tlsv1.2",
        "-u",
        "reader",
        "-P",
        "reader-secret",
        "-q",
        "1",
        "-t",
        "telemetry/dl1/records",
        "-F",
        "%x",
    ]));
    wait_for("the subscription", Duration::from_secs(15), || {
        sub.text().contains("SUBACK") || broker.text().contains("Sending SUBACK")
    });
    (broker, sub)
}

/// A TLS 1.2 HTTPS server (Python's http.server and ssl) that takes POSTs
/// with the right Basic credentials on /api/telemetry, prints the peer,
/// the TLS version and suite, then the body in hex, and answers 204; while
/// the file `refuse` exists it answers 401 to everything.
const HTTPS_SERVER: &str = r#"
import base64, http.server, os, ssl, sys
port, crt, key, want, refuse = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        auth = self.headers.get("Authorization", "")
        if os.path.exists(refuse) or self.path != "/api/telemetry" or auth != "Basic " + base64.b64encode(want.encode()).decode():
            print("REFUSED", self.path, auth, flush=True)
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        c = self.request.cipher()
        print("FROM", self.client_address[0], c[1], c[0], self.headers.get("Content-Type"), flush=True)
        print(body.hex(), flush=True)
        self.send_response(204)
        self.end_headers()
    def log_message(self, *a):
        pass
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
ctx.load_cert_chain(crt, key)
srv = http.server.HTTPServer(("127.0.0.1", port), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("running", flush=True)
srv.serve_forever()
"#;

/// The HTTPS uplink (`uplink = "https"`): the same TLS client posts the
/// records to a real HTTPS server with Basic authentication, keep-alive,
/// from the carrier pool; every record arrives once. Site octet 87.
#[test]
fn https_uplink_posts_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), None);
    readable(dir.path());
    let port = free_port();
    let python = format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR"));
    let server = Proc::spawn(Command::new(&python).args([
        "-u",
        "-c",
        HTTPS_SERVER,
        &port.to_string(),
        dir.path().join("server.crt").to_str().unwrap(),
        dir.path().join("server.key").to_str().unwrap(),
        "dl1:dl1-secret",
        dir.path().join("refuse").to_str().unwrap(),
    ]));
    wait_or_show(
        "the HTTPS server",
        Duration::from_secs(15),
        || server.text().contains("running"),
        || server.text(),
    );
    let ca = dir.path().join("ca.crt");
    let a = 87;
    // The default inputs plus the serial transmitters: a Modbus RTU one
    // on the RS-485 line and an ASCII one on the RS-232 port.
    let inputs = "[[device.datalogger.input]]\nname = \"level\"\nkind = \"current\"\nquantity = \"level\"\n\
         [[device.datalogger.input]]\nname = \"pressure\"\nkind = \"voltage\"\nquantity = \"pressure\"\n\
         [[device.datalogger.input]]\nname = \"flow\"\nkind = \"pulse\"\nquantity = \"flow\"\npulse_weight = 0.01\n\
         [[device.datalogger.input]]\nname = \"door\"\nkind = \"digital\"\nquantity = \"contact\"\n\
         [[device.datalogger.input]]\nname = \"water_temp\"\nkind = \"sdi12\"\nquantity = \"temperature\"\n\
         [[device.datalogger.input]]\nname = \"line_pressure\"\nkind = \"rs485\"\nquantity = \"pressure\"\nunit = 17\n\
         [[device.datalogger.input]]\nname = \"tank_level\"\nkind = \"rs232\"\nquantity = \"level\"\n";
    let text = site(a, port, &ca, 60, None)
        .replace(
            "[device.datalogger]\n",
            "[device.datalogger]\nuplink = \"https\"\nhttps_path = \"/api/telemetry\"\n",
        )
        .replace("transmit_s = 60\n", &format!("transmit_s = 60\n{inputs}"));
    let s = RunningSite::start(&text, &["--speed", "60"]);
    wait_or_show(
        "records over HTTPS",
        Duration::from_secs(60),
        || received(&server).len() >= 28,
        || format!("{}\n{}", server.text(), s.get("/api/v1/devices/dl1").1),
    );
    let log = server.text();
    assert!(!log.contains("REFUSED"), "{log}");
    // The server refuses for a while: the session fails with the status,
    // the records wait and arrive afterwards, once each.
    std::fs::write(dir.path().join("refuse"), "").unwrap();
    let last_session = || {
        s.get_json("/api/v1/devices/dl1")["details"]["extra"]["uplink"]["last_session"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    wait_or_show(
        "a refused session",
        Duration::from_secs(30),
        || last_session().contains("the server answered HTTP 401 Unauthorized"),
        || format!("{}\n{}", server.text(), last_session()),
    );
    let before = received(&server).len();
    std::fs::remove_file(dir.path().join("refuse")).unwrap();
    wait_or_show(
        "records after the refusal",
        Duration::from_secs(60),
        || received(&server).len() >= before + 14,
        || format!("{}\n{}", server.text(), last_session()),
    );
    let posts: Vec<&str> = log.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(!posts.is_empty(), "{log}");
    for p in &posts {
        let f: Vec<&str> = p.split(' ').collect();
        assert!(
            f[1].starts_with(&format!("127.78.{a}.")),
            "not from the carrier pool: {p}"
        );
        assert_eq!(f[2], "TLSv1.2", "{p}");
        assert!(
            uplink_suites().contains(&f[3]),
            "suite outside the seed's: {p}"
        );
        assert_eq!(f[4], "application/octet-stream", "{p}");
    }
    let rows = received(&server);
    no_gap_no_duplicate(&rows);
    // The serial transmitters' samples (inputs 5 and 6) are physical.
    for (stream, lo, hi) in [("in5", 3.0, 6.0), ("in6", 1.3, 3.7)] {
        let got: Vec<&payload::Row> = rows.iter().filter(|r| r.stream_id == stream).collect();
        assert!(got.len() >= 2, "{stream}: {rows:?}");
        for r in got {
            assert_eq!(r.status, "ok", "{r:?}");
            assert!((lo..=hi).contains(&r.value), "{r:?}");
        }
    }
    let st = s.get_json("/api/v1/devices/dl1");
    assert_eq!(st["details"]["extra"]["inputs"][5], "line_pressure", "{st}");
    assert_eq!(
        st["details"]["extra"]["uplink"]["protocol"], "https",
        "{st}"
    );
    assert!(
        st["details"]["extra"]["uplink"]["last_session"]
            .as_str()
            .is_some_and(|l| l.contains("delivered seq")),
        "{st}"
    );
}

/// Waits until dl1 has opened `n` MQTT sessions to `broker` and returns
/// the source addresses they came from: every one from the carrier NAT's
/// pool on 10.77.`a`.0/24 (never the logger's own .30), at least two
/// different ones, each new session from another address than the last.
fn carrier_sessions(broker: &Proc, sub: &Proc, a: u8, n: usize) -> Vec<String> {
    let sources = || -> Vec<String> {
        broker
            .text()
            .lines()
            .filter(|l| l.contains("New connection from") && l.contains("on port 8883"))
            .filter_map(|l| {
                let from = l.split("New connection from ").nth(1)?;
                Some(from.split(':').next()?.to_string())
            })
            .filter(|ip| *ip != "127.0.0.1")
            .collect()
    };
    wait_or_show(
        "sessions through the carrier NAT",
        Duration::from_secs(60),
        || sources().len() >= n && received(sub).len() >= 10,
        || format!("broker:\n{}\nsubscriber:\n{}", broker.text(), sub.text()),
    );
    let seen = sources();
    let prefix = format!("10.77.{a}.");
    for ip in &seen {
        let last: u8 = ip
            .strip_prefix(&prefix)
            .and_then(|o| o.parse().ok())
            .unwrap_or_else(|| panic!("{ip} is not on the logger's segment: {seen:?}"));
        assert!(
            (150..200).contains(&last),
            "{ip} is not in the carrier pool (below .200): {seen:?}"
        );
    }
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "a session kept the previous one's address: {seen:?}"
    );
    eprintln!("sources of the sessions through the carrier NAT: {seen:?}");
    let distinct: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert!(distinct.len() >= 2, "{seen:?}");
    seen
}

fn uplink_suites() -> Vec<&'static str> {
    fieldtwin_models::datalogger::uplink::CIPHERS
        .split(':')
        .collect()
}

/// TAP mode, in a namespace of this test: the logger's MQTTS sessions
/// leave from its cellular interface (100.64.0.2) through the userspace
/// stack and the carrier NAT on the switch, and reach mosquitto on the host
/// side from addresses of the NAT's pool, changing from one session to the
/// next; nmap finds every TCP port of the logger's site address closed
/// (RST) and every scanned UDP port closed (ICMP port unreachable), and a
/// SYN to a pool address gets no answer at all. Site octet 84 (direct
/// lab); 224 (the same through the emulated router).
#[test]
fn tap_mode_uplink_through_the_carrier_nat_and_no_open_port() {
    if !common::netns::root() {
        return;
    }
    let ns = common::netns::Netns::named(&format!("ft-dlnat-tap-{}", std::process::id()));
    let a = 84;
    let host = format!("10.77.{a}.1");
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), Some(&host));
    let (broker, sub) = broker_and_subscriber(dir.path(), 8883, "listener {port}", Some(&ns.name));
    let ca = dir.path().join("ca.crt");
    let site = site_with_broker(a, &format!("{host}:8883"), &ca, 60, None);
    let s = common::netns::start(&ns, &site, &["--speed", "60"]);
    let pool = carrier_sessions(&broker, &sub, a, 3);
    let modem = s.get_json("/api/v1/devices/dl1")["details"]["extra"]["modem"].clone();
    assert_eq!(modem["cell_address"], "100.64.0.2", "{modem}");
    // The control API shows the NAT: its pool holds every address seen.
    let nat = s.post_json("/api/v1/commands", r#"{"command":"carrier_nat"}"#);
    let c = &nat["carriers"][0];
    assert_eq!(c["segment"], "lan", "{nat}");
    let pool_now: Vec<&str> = c["pool"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(pool_now.len(), 8, "{nat}");
    assert!(
        pool.iter().all(|ip| pool_now.contains(&ip.as_str())),
        "{nat}"
    );
    assert!(c["sessions"].as_u64().unwrap() >= 3, "{nat}");
    assert!(c["translated"].as_u64().unwrap() > 0, "{nat}");
    let ip = format!("10.77.{a}.30");
    let mut seqs: Vec<u32> = received(&sub).iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..seqs.len() as u32).collect::<Vec<_>>());
    // The pool is the NAT's: nothing answers a SYN to it (no RST either).
    let out = ns.run(
        "nmap",
        &["-n", "-Pn", "-p", "22,80,8883", "--reason", &pool[0]],
    );
    let t = common::netns::text(&out);
    assert!(t.contains("filtered") && !t.contains(" open "), "{t}");
    let out = ns.run("nmap", &["-n", "-Pn", "-p-", "-T4", "--reason", &ip]);
    let t = common::netns::text(&out);
    assert!(!t.contains(" open "), "open TCP port on the logger: {t}");
    assert!(t.contains("65535 closed tcp ports (reset)"), "{t}");
    let out = ns.run(
        "nmap",
        &[
            "-n",
            "-Pn",
            "-sU",
            "--top-ports",
            "10",
            "-T4",
            "--reason",
            &ip,
        ],
    );
    let t = common::netns::text(&out);
    assert!(!t.contains(" open "), "open UDP port on the logger: {t}");
    assert!(
        t.contains("port-unreach"),
        "UDP ports do not answer ICMP: {t}"
    );
}

/// The same through the emulated router (`--routing router`): the NAT's
/// outside next hop is the host side, which the router answers for on the
/// segment. Site octet 224.
#[test]
fn tap_mode_carrier_nat_through_the_router() {
    if !common::netns::root() {
        return;
    }
    let ns = common::netns::Netns::named(&format!("ft-dlnat-rt-{}", std::process::id()));
    let a = 224;
    let host = format!("10.77.{a}.1");
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), Some(&host));
    let (broker, sub) = broker_and_subscriber(dir.path(), 8883, "listener {port}", Some(&ns.name));
    let ca = dir.path().join("ca.crt");
    let site = site_with_broker(a, &format!("{host}:8883"), &ca, 60, None);
    let s = common::netns::start(&ns, &site, &["--speed", "60", "--routing", "router"]);
    assert!(
        s.stdout.lock().unwrap().contains("devices routed via"),
        "{}",
        s.stdout.lock().unwrap()
    );
    carrier_sessions(&broker, &sub, a, 3);
    no_gap_no_duplicate(&received(&sub));
}

#[test]
fn client_hello_offers_exactly_the_seed_suites_and_tls12_only() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), None);
    let port = free_port();
    // A server that offers only suites outside the seed's list.
    let server = Proc::spawn(
        Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &port.to_string(),
                "-cert",
                "server.crt",
                "-key",
                "server.key",
                "-tls1_2",
                "-cipher",
                "AES256-SHA:ECDHE-RSA-AES256-GCM-SHA384",
                "-trace",
            ])
            .current_dir(dir.path()),
    );
    wait_port(port);
    let ca = dir.path().join("ca.crt");
    let usb = dir.path().join("dl1-usb");
    let s = RunningSite::start(&site(88, port, &ca, 60, Some(&usb)), &["--speed", "60"]);
    wait_for("the ClientHello", Duration::from_secs(60), || {
        server.text().contains("ClientHello") && server.text().contains("extensions")
    });
    let text = server.text();
    let hello = &text[text.find("ClientHello").unwrap()..];
    let suites: Vec<&str> = hello
        .lines()
        .skip_while(|l| !l.contains("cipher_suites"))
        .skip(1)
        .take_while(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| l.split('}').nth(1))
        .map(str::trim)
        .collect();
    assert_eq!(
        suites,
        [
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
            "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
        ],
        "{hello}"
    );
    assert!(
        hello.contains("client_version=0x303 (TLS 1.2)"),
        "ClientHello version: {hello}"
    );
    assert!(
        !hello.contains("supported_versions"),
        "the logger offers TLS 1.3: {hello}"
    );
    // The handshake fails: no shared suite.
    wait_for("the failed session", Duration::from_secs(30), || {
        s.get_json("/api/v1/devices/dl1")["details"]["extra"]["uplink"]["last_session"]
            .as_str()
            .is_some_and(|m| m.contains("failed") && m.contains("TLS"))
    });
    let st = s.get_json("/api/v1/devices/dl1");
    assert_eq!(
        st["details"]["extra"]["store"]["unsent"]
            .as_u64()
            .map(|u| u > 0),
        Some(true)
    );
    usb_checks(&s, &usb);
    let pcap = dir.path().join("ble.pcap");
    command(
        &s,
        &format!(
            r#"{{"command":"ble_sniffer","path":"{}","on":true}}"#,
            pcap.display()
        ),
    );
    ble_checks(&s, &usb.with_file_name("dl1-ble"));
    command(&s, r#"{"command":"ble","device":"dl1","action":"replay"}"#);
    command(&s, r#"{"command":"ble_sniffer","on":false}"#);
    ble_air_checks(&pcap);
    local_port_refusals(&s);
}

/// What a BLE sniffer recorded while the app connected over the link
/// socket and the `ble` command replayed a request: tshark decodes every
/// packet (no malformed one, no bad CRC), the logger advertises its name,
/// the app connects, the secure-channel frames are ATT writes and
/// notifications, and the replayed request shows twice before the logger's
/// LL_TERMINATE_IND (authentication failure).
fn ble_air_checks(pcap: &Path) {
    let p = pcap.to_str().unwrap();
    let out = tool("tshark", &["-r", p, "-V"]);
    assert!(out.status.success(), "{out:?}");
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.contains("Bluetooth Low Energy Link Layer"), "{v}");
    assert!(!v.contains("Malformed"), "malformed packets: {v}");
    assert!(!v.contains("Incorrect CRC"), "bad CRC: {v}");
    assert!(v.contains("Device Name: dl1"), "no advertising of dl1");
    assert!(v.contains("CONNECT_IND"), "no connection");
    assert!(v.contains("Write Command") && v.contains("Handle Value Notification"));
    assert!(
        v.contains("Authentication Failure"),
        "no slam on the air: {v}"
    );
    let out = tool("tshark", &["-r", p, "-T", "fields", "-e", "btatt.value"]);
    let values: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    // The replayed request is on the air three times: sent, replayed on
    // the same connection, replayed on a new one.
    let mut counts = BTreeMap::new();
    for v in &values {
        *counts.entry(v.as_str()).or_insert(0) += 1;
    }
    assert!(counts.values().any(|&n| n >= 3), "{counts:?}");
}

/// The control API's local-port commands name what was wrong: an unknown
/// BLE action (with the allowed ones), a device without the port, a logger
/// that is off. (What they do is checked by the library scenarios
/// datalogger-ble-replay and datalogger-usb-injection.)
fn local_port_refusals(s: &RunningSite) {
    let (code, body) = s.post("/api/v1/commands", r#"{"command":"carrier_nat"}"#);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("127.78.S.2-251"), "{body}");
    let (code, body) = s.post(
        "/api/v1/commands",
        r#"{"command":"ble","device":"dl1","action":"sniff"}"#,
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("unknown variant `sniff`") && body.contains("wrong_key"),
        "{body}"
    );
    let (code, body) = s.post(
        "/api/v1/commands",
        r#"{"command":"usb_console","device":"nope","lines":["status"]}"#,
    );
    assert_eq!(code, 404, "{body}");
    command(s, r#"{"command":"power","device":"dl1","action":"off"}"#);
    let (code, body) = s.post(
        "/api/v1/commands",
        r#"{"command":"usb_console","device":"dl1","lines":["status"]}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("dl1 is off"), "{body}");
}

/// The USB console of the logger of `site` (octet 88), on its PTY.
struct Console {
    tty: std::fs::File,
    out: Arc<Mutex<String>>,
}

impl Console {
    fn open(path: &Path) -> Self {
        wait_for("the USB console's PTY", Duration::from_secs(15), || {
            path.exists()
        });
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut reader = tty.try_clone().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok(n) = std::io::Read::read(&mut reader, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self { tty, out }
    }

    /// Sends `line` and returns the answer (up to its OK or ERROR line).
    fn ask(&mut self, line: &[u8]) -> String {
        self.out.lock().unwrap().clear();
        std::io::Write::write_all(&mut self.tty, line).unwrap();
        std::io::Write::write_all(&mut self.tty, b"\r\n").unwrap();
        let start = Instant::now();
        loop {
            let text = self.out.lock().unwrap().clone();
            let done = text
                .lines()
                .any(|l| l.starts_with("OK") || l.starts_with("ERROR"));
            if done {
                return text;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no answer to {:?}: {text:?}",
                String::from_utf8_lossy(line)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn usb_checks(s: &RunningSite, usb: &Path) {
    let mut c = Console::open(usb);
    assert!(c.ask(b"apn").contains("APN internet"));
    let r = c.ask(b"apn set iot.example.net");
    assert!(r.contains("APN iot.example.net") && r.contains("OK"), "{r}");
    let apn = || s.get_json("/api/v1/devices/dl1")["details"]["extra"]["modem"]["apn"].clone();
    assert_eq!(apn(), "iot.example.net");
    // Injection: refused with the character named, nothing changed.
    let r = c.ask(b"apn set x;reboot");
    assert!(
        r.starts_with("ERROR refused: character 0x3B ';' at column 10"),
        "{r}"
    );
    let r = c.ask(b"apn set $(touch /tmp/pwned)");
    assert!(r.starts_with("ERROR refused"), "{r}");
    assert_eq!(apn(), "iot.example.net");
    // No firmware, no stored data, no binary transfer over USB.
    let r = c.ask(b"firmware upload");
    assert!(
        r.contains("ERROR refused") && r.contains("not available over USB"),
        "{r}"
    );
    assert!(c.ask(b"records").contains("not available over USB"));
    let r = c.ask(&[0x01]);
    assert!(r.contains("binary transfer"), "{r}");
    // Real-time status, AT passthrough.
    let r = c.ask(b"status");
    assert!(r.contains("TRACE battery=") && r.contains("rssi="), "{r}");
    let r = c.ask(b"at AT+CGDCONT?");
    assert!(r.contains("+CGDCONT: 1,\"IP\",\"iot.example.net\""), "{r}");
    assert!(c.ask(b"AT+CSQ").contains("+CSQ: "));
    let r = c.ask(b"baud set 4800");
    assert!(r.contains("BAUD 4800"), "{r}");
    // Digital outputs: a manual one is set, the control API shows it.
    let r = c.ask(b"output DO2 on");
    assert!(
        r.contains("DO1=off(manual) DO2=on(manual)") && r.contains("OK"),
        "{r}"
    );
    let outputs = s.get_json("/api/v1/devices/dl1")["details"]["extra"]["outputs"].clone();
    assert_eq!(outputs[1]["name"], "DO2");
    assert_eq!(outputs[1]["on"], true, "{outputs}");
    let r = c.ask(b"output DO7 on");
    assert!(r.starts_with("ERROR refused: no output \"DO7\""), "{r}");
}

fn ble_checks(s: &RunningSite, link: &Path) {
    use std::io::{Read, Write};
    let st = s.get_json("/api/v1/devices/dl1");
    let key = st["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == "ble (pairing key)")
        .unwrap()["password"]
        .as_str()
        .unwrap()
        .to_string();
    let link_s = link.to_str().unwrap();
    // The app with the pairing key gets the status; its replayed request
    // slams the connection.
    let out = common::fieldtwin(&["ble", "--socket", link_s, "--key", &key, "--replay"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("\"device\":\"dl1\"")
            && text.contains("\"battery_v\"")
            && text.contains("{\"mode\":\"manual\",\"name\":\"DO2\",\"on\":true}"),
        "{text}"
    );
    assert!(
        text.contains("replay: the logger slammed the connection"),
        "{text}"
    );
    // A wrong pairing key is slammed at the handshake.
    let out = common::fieldtwin(&["ble", "--socket", link_s, "--key", "wrong-key"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("slammed"),
        "{out:?}"
    );
    // An unauthenticated status request gets no answer: the link closes.
    let mut u = std::os::unix::net::UnixStream::connect(link).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    u.write_all(&fieldtwin_models::datalogger::ble::frame(b"status"))
        .unwrap();
    let mut buf = Vec::new();
    let r = u.read_to_end(&mut buf);
    assert!(
        r.is_ok() && buf.is_empty(),
        "answered before authentication: {r:?} {buf:?}"
    );
}
