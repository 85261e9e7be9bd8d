//! Issue 13: the Panel Server publishes its logged rows as CSV files to a
//! real Debian OpenSSH server over SFTP (russh on the device's own
//! transport), with the server's host key recorded at first configuration
//! and pinned; its alarms go by email, STARTTLS, to a real SMTP server
//! (Python aiosmtpd in the project's venv).
//!
//! The test starts its own sshd (`/usr/sbin/sshd -D`, config, host keys and
//! authorized key in a temp dir; the account is sftp-only: `ForceCommand
//! internal-sftp`, no forwarding, no TTY) on loopback, never the system's,
//! and its own aiosmtpd with a certificate signed by a CA made here. The
//! clock is paused and jumped an hour at a time. Site octets 190-199
//! (190: host mode; 192: TAP mode, sshd inside the test's namespace).

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::datalog::{self, advance, check_rows, failures, publications, stats};
use common::{RunningSite, free_port, site_text};

const SMTP_SERVER: &str = r#""""SMTP server for tests/ps_sftp.rs (aiosmtpd).

Usage: smtp.py CERT KEY PORT OUTDIR
STARTTLS offered and required (a MAIL before it gets 530); each message is
stored as OUTDIR/NNNN.eml, headed by X-Test-TLS (the TLS version the
session used), X-Test-From and X-Test-To (the envelope).
"""
import os
import ssl
import sys
import threading

from aiosmtpd.controller import Controller

cert, key, port, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
lock = threading.Lock()


class Handler:
    async def handle_DATA(self, server, session, envelope):
        tls = session.ssl.get("cipher", ("", "none"))[1] if session.ssl else "none"
        with lock:
            n = len([f for f in os.listdir(out) if f.endswith(".eml")])
            tmp = os.path.join(out, "%04d.tmp" % n)
            with open(tmp, "wb") as f:
                f.write(("X-Test-TLS: %s\r\nX-Test-From: %s\r\nX-Test-To: %s\r\n" % (
                    tls, envelope.mail_from, ",".join(envelope.rcpt_tos))).encode())
                f.write(envelope.original_content)
            os.rename(tmp, os.path.join(out, "%04d.eml" % n))
        return "250 Message accepted"


ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
ctx.load_cert_chain(cert, key)
c = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=ctx,
               require_starttls=True, ready_timeout=20)
c.start()
print("ready", flush=True)
threading.Event().wait()
"#;

fn run(program: &str, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process killed (by its own PID) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn smtp_server(dir: &Path, port: u16, out: &Path) -> Proc {
    let script = dir.join("smtp.py");
    std::fs::write(&script, SMTP_SERVER).unwrap();
    let mut child = Command::new(datalog::python())
        .arg(&script)
        .arg(dir.join("smtp.pem"))
        .arg(dir.join("smtp.key"))
        .arg(port.to_string())
        .arg(out)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start aiosmtpd");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the SMTP server did not start");
    Proc(child)
}

/// The test's own OpenSSH server: an sftp-only login for `root` by key
/// (the account the test runs as; no shell: `ForceCommand internal-sftp`
/// starting in `upload`), host key `host_key`, on `listen`:`port`, inside
/// namespace `netns` if given.
struct Sshd {
    dir: PathBuf,
    port: u16,
    listen: String,
    netns: Option<String>,
}

impl Sshd {
    fn new(dir: &Path, port: u16) -> Self {
        let dir = dir.join("sshd");
        std::fs::create_dir_all(dir.join("upload")).unwrap();
        // The privilege separation directory sshd needs (what systemd's
        // tmpfiles would make for the system's sshd).
        std::fs::create_dir_all("/run/sshd").unwrap();
        run(
            "ssh-keygen",
            &dir,
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "device",
                "-f",
                "client_key",
            ],
        );
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let s = Self {
            dir,
            port,
            listen: "127.0.0.1".into(),
            netns: None,
        };
        s.new_host_key();
        s
    }

    /// A new host key (replacing the old one) and its fingerprint.
    fn new_host_key(&self) -> String {
        let _ = std::fs::remove_file(self.dir.join("host_key"));
        let _ = std::fs::remove_file(self.dir.join("host_key.pub"));
        run(
            "ssh-keygen",
            &self.dir,
            &[
                "-q", "-t", "ed25519", "-N", "", "-C", "host", "-f", "host_key",
            ],
        );
        self.fingerprint()
    }

    fn fingerprint(&self) -> String {
        let out = run("ssh-keygen", &self.dir, &["-lf", "host_key.pub"]);
        out.split_whitespace().nth(1).unwrap().to_string()
    }

    fn start(&self) -> Proc {
        let d = self.dir.display();
        let config = format!(
            "Port {port}\nListenAddress {listen}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PermitRootLogin prohibit-password\nAuthenticationMethods publickey\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nAllowUsers root\n\
             AllowTcpForwarding no\nX11Forwarding no\nPermitTTY no\nPermitTunnel no\n\
             Subsystem sftp internal-sftp\nForceCommand internal-sftp -d {d}/upload\n\
             LogLevel VERBOSE\n",
            port = self.port,
            listen = self.listen
        );
        std::fs::write(self.dir.join("sshd_config"), config).unwrap();
        let log = std::fs::File::create(self.dir.join("sshd.log")).unwrap();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                // `ip netns exec` execs sshd: the child's PID is sshd's.
                c.args(["netns", "exec", ns, "/usr/sbin/sshd"]);
                c
            }
            None => Command::new("/usr/sbin/sshd"),
        };
        let child = cmd
            .args(["-D", "-e", "-f"])
            .arg(self.dir.join("sshd_config"))
            .stderr(log)
            .spawn()
            .expect("start /usr/sbin/sshd (apt package openssh-server)");
        let p = Proc(child);
        let start = Instant::now();
        let listening = || {
            std::fs::read_to_string(self.dir.join("sshd.log"))
                .unwrap_or_default()
                .contains("Server listening on")
        };
        while !listening() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sshd did not listen: {}",
                std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    fn upload(&self) -> PathBuf {
        self.dir.join("upload")
    }
}

/// Per device name: every data row received, oldest publication first,
/// and the number of files; checks each file's CSV layout and name.
fn received(out: &Path) -> (BTreeMap<String, Vec<String>>, usize) {
    let all: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        all.iter().all(|n| n.ends_with(".csv")),
        "only complete CSV files on the server: {all:?}"
    );
    let mut names = all;
    // The publication time is part of the name: sort by it.
    names.sort_by_key(|n| {
        let ts = datalog::publication_stamp(n)
            .unwrap_or_else(|| panic!("{n}: no yyyyMMddHHmmssSSS time stamp in the name"))
            .to_string();
        (ts, n.clone())
    });
    let mut rows: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in &names {
        let text = std::fs::read_to_string(out.join(n)).unwrap();
        let row2 = datalog::add_file(&mut rows, n, &text);
        assert!(
            row2[0].starts_with("EcoStruxure Panel Server "),
            "{n}: gateway name {:?}",
            row2[0]
        );
    }
    (rows, names.len())
}

/// The device's JSON API (HTTPS on its own address). Each call logs in
/// first: a session expires after 15 idle minutes of virtual time, and the
/// test jumps hours.
struct DeviceApi {
    base: String,
    password: String,
}

impl DeviceApi {
    fn new(site: &RunningSite, ip: &str) -> Self {
        let out_text = site.stdout.lock().unwrap().clone();
        let password = out_text
            .split("https: SecurityAdmin / ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("the https login is printed")
            .to_string();
        Self {
            base: format!("https://{ip}"),
            password,
        }
    }

    fn bearer(&self) -> String {
        let (code, body) = common::api_login(&format!("{}/api/login", self.base), &self.password);
        assert_eq!(code, 200, "{body}");
        common::bearer_of(&body).unwrap()
    }

    fn call(&self, method: &str, path: &str, json: &str) -> (u16, serde_json::Value) {
        let bearer = self.bearer();
        let url = format!("{}{path}", self.base);
        let mut args = vec!["-sk", "-w", "\n%{http_code}", "-X", method, "-H", &bearer];
        if method != "GET" {
            args.extend(["-H", "content-type: application/json", "-d", json]);
        }
        args.push(&url);
        let (code, body) = common::curl(&args);
        (
            code,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        )
    }

    fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.call("GET", path, "")
    }

    fn put(&self, path: &str, json: &str) -> (u16, serde_json::Value) {
        self.call("PUT", path, json)
    }
}

/// The mails received so far, in order.
fn mails(out: &Path) -> Vec<String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

fn header<'a>(mail: &'a str, name: &str) -> &'a str {
    mail.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or("")
}

#[test]
fn sftp_publication_to_openssh_outage_power_cycle_and_host_key_change() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    datalog::make_certs(dir.path(), "smtp", "127.0.0.1");
    let sshd = Sshd::new(dir.path(), free_port());
    let first_key = sshd.fingerprint();
    let mut server = Some(sshd.start());
    let mail_dir = dir.path().join("mail");
    std::fs::create_dir(&mail_dir).unwrap();
    let smtp_port = free_port();
    let mut smtp = Some(smtp_server(dir.path(), smtp_port, &mail_dir));
    let config = format!(
        "[device.panel_server.datalog]\nperiod_min = 10\n\n\
         [device.panel_server.publication]\nmethod = \"sftp\"\n\n\
         [device.panel_server.publication.sftp]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"root\"\nkey_file = \"{}\"\n\n\
         [device.panel_server.email]\nserver = \"127.0.0.1\"\nport = {smtp_port}\nfrom = \"ps1@site.example\"\nto = [\"ops@site.example\", \"oncall@site.example\"]\nca_file = \"{}\"\n\n\
         [[device.panel_server.alarm]]\ndevice = \"meter-sl\"\nmeasurement = \"VAN\"\nabove = 1000.0\n\n\
         [[device.panel_server.alarm]]\ndevice = \"th-room\"\nmeasurement = \"T\"\nabove = -40.0\n\n",
        sshd.port,
        sshd.dir.join("client_key").display(),
        dir.path().join("ca.pem").display()
    );
    let text = site_text(190)
        .replacen("model = \"PAS600L\"", "model = \"PAS800L\"", 1)
        .replacen(
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
    let api = DeviceApi::new(&site, "127.77.190.10");

    // --- 24 hours, logging every 10 min, publication every hour ---
    let day = Instant::now();
    for h in 1..=24u64 {
        advance(&site, 3600);
        site.wait_until(Duration::from_secs(30), || publications(&site) == h);
        if h == 1 {
            // The first connection showed the host key; it is recorded.
            let (code, v) = api.get("/api/sftp");
            assert_eq!(code, 200, "{v}");
            assert_eq!(v["settings"]["fingerprint"], first_key.as_str(), "{v}");
            assert_eq!(v["settings"]["publication_stopped"], false);
            assert!(
                !v.to_string().contains("PRIVATE KEY"),
                "no secret shown: {v}"
            );
        }
    }
    let day = day.elapsed();
    let (rows, files) = received(&sshd.upload());
    let total = check_rows(&site, &rows);
    assert!(files >= 24 * devices, "{files} files for 24 publications");
    assert!(
        (143 * devices as u64..=145 * devices as u64).contains(&total),
        "{total} rows for 24 h of 10-minute samples of {devices} devices"
    );
    assert_eq!(failures(&site), 0, "{}", stats(&site));
    let log = std::fs::read_to_string(sshd.dir.join("sshd.log")).unwrap();
    assert!(
        log.contains("from 127.77.190.10 "),
        "sessions come from the Panel Server's own address: {log}"
    );
    // The rule th-room T above -40 degC holds from the first row: one
    // alarm, one mail (not one per row); VAN above 1000 V never holds.
    let m = mails(&mail_dir);
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        header(&m[0], "Subject").contains("th-room T = "),
        "{}",
        m[0]
    );
    assert!(header(&m[0], "Subject").contains("above -40"), "{}", m[0]);
    assert!(
        header(&m[0], "X-Test-TLS").starts_with("TLSv1."),
        "STARTTLS was used: {}",
        m[0]
    );

    // --- a field device disconnected while the SMTP server is away: the
    // alarm waits in the outbox and goes when the server is back ---
    drop(smtp.take());
    site.post_json(
        "/api/v1/devices/ps1/fields/meter-sl/power",
        r#"{"action":"off"}"#,
    );
    advance(&site, 600);
    let email_state = || api.get("/api/email").1;
    site.wait_until(Duration::from_secs(30), || {
        email_state()["last_error"].is_string()
    });
    let st = email_state();
    assert_eq!(st["waiting"], 1, "{st}");
    assert_eq!(st["sent"], 1, "{st}");
    assert_eq!(st["offered"], true, "{st}");
    assert!(!st.to_string().contains("BEGIN CERTIFICATE"), "{st}");
    smtp = Some(smtp_server(dir.path(), smtp_port, &mail_dir));
    advance(&site, 60);
    site.wait_until(Duration::from_secs(30), || mails(&mail_dir).len() == 2);
    assert_eq!(email_state()["waiting"], 0);
    let m = &mails(&mail_dir)[1];
    assert!(
        header(m, "Subject").contains("meter-sl is not connected"),
        "{m}"
    );
    assert!(
        header(m, "X-Test-TLS").starts_with("TLSv1."),
        "STARTTLS was used: {m}"
    );
    assert_eq!(header(m, "X-Test-From"), "ps1@site.example");
    assert_eq!(
        header(m, "X-Test-To"),
        "ops@site.example,oncall@site.example"
    );
    site.post_json(
        "/api/v1/devices/ps1/fields/meter-sl/power",
        r#"{"action":"on"}"#,
    );
    advance(&site, 2940);
    site.wait_until(Duration::from_secs(30), || publications(&site) == 25);
    let (code, v) = api.get("/api/alarms");
    assert_eq!(code, 200, "{v}");
    let a = v["alarms"].as_array().unwrap();
    assert_eq!(a.len(), 2, "{v}");
    assert_eq!(a[0]["code"], "threshold:th-room:T");
    assert!(a[0]["cleared"].is_null(), "still above: {v}");
    assert_eq!(a[1]["code"], "device_not_connected:meter-sl");
    assert!(
        a[1]["cleared"].is_string(),
        "cleared once it answers again: {v}"
    );

    // --- the server away for 6 hours, a power cycle in the middle ---
    drop(server.take());
    let failed0 = datalog::six_failed_hours_with_a_power_cycle(&site);
    assert_eq!(publications(&site), 25);
    server = Some(sshd.start());
    advance(&site, 3600);
    site.wait_until(Duration::from_secs(30), || publications(&site) == 26);
    let (rows, _) = received(&sshd.upload());
    let total2 = check_rows(&site, &rows);
    assert_eq!(
        total2,
        total + 8 * 6 * devices as u64,
        "8 more hours of rows, each once"
    );

    // --- the server's host key changes: publication stops ---
    drop(server.take());
    let second_key = sshd.new_host_key();
    assert_ne!(second_key, first_key);
    server = Some(sshd.start());
    let files_before = received(&sshd.upload()).1;
    let mails_before = mails(&mail_dir).len();
    advance(&site, 3600);
    site.wait_until(Duration::from_secs(30), || failures(&site) == failed0 + 7);
    let (_, v) = api.get("/api/sftp");
    assert_eq!(v["settings"]["publication_stopped"], true, "{v}");
    assert_eq!(
        v["settings"]["changed_fingerprint"],
        second_key.as_str(),
        "{v}"
    );
    assert_eq!(v["settings"]["fingerprint"], first_key.as_str(), "{v}");
    let (_, audit) = api.get("/api/audit");
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["detail"]
                .as_str()
                .unwrap_or("")
                .contains("host key changed")
        })
        .unwrap_or_else(|| panic!("no audit entry: {audit}"));
    assert!(
        entry["detail"].as_str().unwrap().contains(&second_key),
        "{entry}"
    );
    site.wait_until(Duration::from_secs(30), || {
        mails(&mail_dir).len() > mails_before
    });
    let m = &mails(&mail_dir)[mails_before];
    assert!(header(m, "Subject").contains("host key changed"), "{m}");
    assert!(m.contains(&second_key) && m.contains(&first_key), "{m}");
    assert!(header(m, "X-Test-TLS").starts_with("TLSv1."), "{m}");
    let (_, v) = api.get("/api/alarms");
    assert!(
        v["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["code"] == "sftp_host_key_changed" && a["cleared"].is_null()),
        "{v}"
    );
    // Stopped: the next hour does not even connect; nothing arrives.
    advance(&site, 3600);
    site.wait_until(Duration::from_secs(30), || failures(&site) == failed0 + 8);
    assert_eq!(
        received(&sshd.upload()).1,
        files_before,
        "nothing published"
    );
    assert_eq!(
        mails(&mail_dir).len(),
        mails_before + 1,
        "one alarm, one mail"
    );

    // A reconfiguration expecting another key saves nothing.
    let (code, v) = api.put(
        "/api/sftp",
        &format!(
            "{{\"host\":\"127.0.0.1\",\"port\":{},\"user\":\"root\",\"fingerprint\":\"{first_key}\"}}",
            sshd.port
        ),
    );
    assert_eq!(code, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains(&second_key), "{v}");
    // --- reconfiguring records the new key and resumes publication ---
    let (code, v) = api.put(
        "/api/sftp",
        &format!(
            "{{\"host\":\"127.0.0.1\",\"port\":{},\"user\":\"root\"}}",
            sshd.port
        ),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["settings"]["fingerprint"],
        second_key.as_str(),
        "shown at configuration: {v}"
    );
    assert_eq!(v["settings"]["publication_stopped"], false);
    let (_, audit) = api.get("/api/audit");
    assert!(
        audit.as_array().unwrap().iter().any(|e| {
            let d = e["detail"].as_str().unwrap_or("");
            d.contains("SFTP publication server set") && d.contains(&second_key)
        }),
        "the reconfiguration is audited: {audit}"
    );
    advance(&site, 3600);
    site.wait_until(Duration::from_secs(30), || publications(&site) == 27);
    let (rows, _) = received(&sshd.upload());
    let total3 = check_rows(&site, &rows);
    assert_eq!(
        total3,
        total2 + 3 * 6 * devices as u64,
        "3 more hours, each row once"
    );
    let (_, v) = api.get("/api/alarms");
    assert!(
        v["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["code"] == "sftp_host_key_changed" && a["cleared"].is_string()),
        "the key alarm ends with the reconfiguration: {v}"
    );
    // The pages show the same: the recorded key, the alarms; saving the
    // form (key kept, the expected fingerprint given) records it again.
    let web = common::web::Web::of(&site, "127.77.190.10");
    let (code, _) = web.login_as("SecurityAdmin", &web.password);
    assert_eq!(code, 200);
    let (code, page) = web.get("/settings/sftp");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains(&second_key), "{page}");
    let (code, page) = web.get("/alarms");
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("host key changed") && page.contains("meter-sl is not connected"),
        "{page}"
    );
    let port = sshd.port.to_string();
    let (code, page) = web.submit(
        "/settings/sftp",
        "/settings/sftp",
        &[
            ("host", "127.0.0.1"),
            ("port", &port),
            ("user", "root"),
            ("fingerprint", &second_key),
        ],
    );
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Saved"), "{page}");
    let (code, page) = web.submit(
        "/settings/sftp",
        "/settings/sftp",
        &[
            ("host", "127.0.0.1"),
            ("port", &port),
            ("user", "root"),
            ("fingerprint", &first_key),
        ],
    );
    assert_eq!(code, 409, "a fingerprint that is not the server's: {page}");
    eprintln!(
        "24 h: {files} files, {total} rows in {day:?}; after outage {total2}, after key change {total3}; whole test {:?}",
        started.elapsed()
    );
    drop(server);
    drop(smtp);
}

/// TAP mode, in a namespace of this test: the SSH sessions leave from the
/// Panel Server's own MAC and IP through the userspace stack and reach an
/// sshd listening on the host side of the TAP. Site octet 192.
#[test]
fn tap_mode_sftp_sessions_leave_from_the_panel_servers_own_address() {
    if !common::netns::root() {
        return;
    }
    let ns = common::netns::Netns::named(&format!("ft-sftp-tap-{}", std::process::id()));
    let a = 192;
    let host = format!("10.77.{a}.1");
    let dir = tempfile::tempdir().unwrap();
    let mut sshd = Sshd::new(dir.path(), 2222);
    sshd.listen = host.clone();
    sshd.netns = Some(ns.name.clone());
    let config = format!(
        "[device.panel_server.datalog]\nperiod_min = 10\n\n\
         [device.panel_server.publication]\nmethod = \"sftp\"\n\n\
         [device.panel_server.publication.sftp]\nhost = \"{host}\"\nport = 2222\nuser = \"root\"\nkey_file = \"{}\"\nfingerprint = \"{}\"\n\n",
        sshd.dir.join("client_key").display(),
        sshd.fingerprint()
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
    let _server = sshd.start();
    for h in 1..=2u64 {
        advance(&site, 3600);
        site.wait_until(Duration::from_secs(60), || {
            stats(&site)["stats"]["publications"].as_u64() == Some(h)
        });
    }
    let (rows, files) = received(&sshd.upload());
    assert!(files >= 12, "{files} files for 2 publications of 6 devices");
    let total = check_rows(&site, &rows);
    assert!((11 * 6..=13 * 6).contains(&total), "{total} rows for 2 h");
    let log = std::fs::read_to_string(sshd.dir.join("sshd.log")).unwrap();
    let from = format!("Connection from 10.77.{a}.10 port");
    assert_eq!(
        log.matches(&from).count(),
        2,
        "one session a publication, from the Panel Server's own address: {log}"
    );
    assert_eq!(log.matches("Connection from").count(), 2, "{log}");
}
