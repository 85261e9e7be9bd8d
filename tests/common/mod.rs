//! Shared harness of the end-to-end tests: starts the real `fieldtwin`
//! binary on a site of its own and talks to it with real clients (curl,
//! mbpoll, ...).
//!
//! Tests run in parallel, and in host mode a device binds its real ports on
//! 127.77.S.N, so every test uses its own site octets: [`site_text`] moves the
//! default site from 10.77.0.x/10.77.1.x to 10.77.A.x/10.77.A+1.x. Each test
//! picks a distinct even `A`; the list of octets in use is kept here:
//!
//! | octet | test |
//! |---|---|
//! | 8 | foundation_e2e::unprivileged_run_moves_low_ports_by_the_documented_offset |
//! | 10 | foundation_e2e::panel_server_slice |
//! | 12 | foundation_e2e::power_and_clock |
//! | 14 | foundation_e2e::state_survives_restart |
//! | 16 | foundation_e2e::malformed_modbus_never_kills_the_device |
//! | 18 | foundation_e2e::events_stream_reports_power_changes |
//! | 20-39 | gateway tests |
//! | 40-59 | security tests |
//! | 60-79 | network tests (72: DHCP) |
//! | 80 | lab_e2e (TAP-lab checks of the gateway and security issues) |
//! | 84, 86, 87, 88 | datalogger_e2e (TAP mode; MQTTS store-and-forward; HTTPS uplink; ClientHello) |
//! | 92 | tui_e2e (the dashboard in tmux) |
//! | 96, 98, 100, 102 | scenarios_e2e (library run, failing scenarios, seeded runs, served runs) |
//! | 106 | attacker (attacker node, attacks and field faults; 108: its TAP test) |
//! | 110-119 | radio (issue 10: IEEE 802.15.4 medium, jamming, sniffer, rogue device) |
//! | 120-129 | ev_charging (issue 11: stations, EVCE local controller, upstream cut) |
//! | 140-149 | ps_fidelity (issue 8: factory reset, install codes, tells, model matrix) |
//! | 150-153 | state_restart (issue 8: time across restarts, NV storage growth) |
//! | 160-169 | ps_datalog (issue 13: Panel Server logging and HTTPS publication; 162: TAP mode) |
//! | 170 | security_e2e::security_first_https_logins_right_after_start_wait_and_succeed (issue 15) |
//! | 180-189 | reliability (site-file ranges, kill -9 crash consistency, hostile web input) |
//! | 190-199 | ps_sftp (issue 13: SFTP publication to a real OpenSSH server, alarm emails over STARTTLS) |
//! | 200-209 | wifi (issue 10 items 4-5: radios per model, Wi-Fi access point) |
//! | 210-219 | evce (issue 11: EVCE pages, SSH, SSDP, enrollment, factory reset in TAP mode: 210-211; 219: unit tests of models::evce) |
//! | 220-223 | scenario runs by hand of the EV scenarios (issue 11 item 9, helper evscen) |
//! | 224-227 | datalogger_e2e (issue 12: carrier NAT through the router in TAP mode: 224) |
//! | 236-239 | scenario runs by hand (helper natsta: the rogue station over wss) |
//! | 240 | wifi::wifi_station_in_tap_mode |

#![allow(dead_code)]

pub mod datalog;
pub mod netns;
pub mod web;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free TCP port on loopback for the control API.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The default site moved to octets `a` (lan) and `a + 1` (ot).
pub fn site_text(a: u8) -> String {
    fieldtwin_default_site()
        .replace("10.77.1.", "@OT@")
        .replace("10.77.0.", &format!("10.77.{a}."))
        .replace("@OT@", &format!("10.77.{}.", a + 1))
}

/// [`site_text`] with fast password hashing (1,000 PBKDF2 rounds) for the
/// debug builds the tests run.
pub fn fast_site_text(a: u8) -> String {
    let t = site_text(a);
    assert!(t.contains("topology = \"separated\""));
    t.replacen(
        "topology = \"separated\"",
        "topology = \"separated\"\npbkdf2_iterations = 1000",
        1,
    )
}

/// The embedded default site, as `fieldtwin site show` prints it.
pub fn fieldtwin_default_site() -> String {
    let out = fieldtwin(&["site", "show"]);
    assert!(out.status.success(), "site show failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The install code of wireless device `id` from the labels that
/// `fieldtwin site show` prints at the end of the site text.
pub fn label_install_code(site_text: &str, id: &str) -> String {
    site_text
        .lines()
        .find(|l| {
            l.trim_start_matches(['#', ' '])
                .starts_with(&format!("{id}:"))
        })
        .and_then(|l| l.split("Install code ").nth(1))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|| panic!("no label of {id} in the site text"))
}

/// Runs `fieldtwin ARGS` to completion.
pub fn fieldtwin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fieldtwin"))
        .args(args)
        .output()
        .expect("run fieldtwin")
}

/// Signs `payload` into the firmware image `img` with the lab vendor key
/// (`fieldtwin firmware sign`): `version`, and `family` (else the Panel
/// Server's). Panics if signing fails.
pub fn sign_firmware(payload: &Path, version: &str, family: Option<&str>, img: &Path) {
    let key = format!("{}/keys/lab-vendor.key", env!("CARGO_MANIFEST_DIR"));
    let mut args = vec!["firmware", "sign", "--key", &key, "--version", version];
    if let Some(f) = family {
        args.extend(["--family", f]);
    }
    args.extend([payload.to_str().unwrap(), "-o", img.to_str().unwrap()]);
    let out = fieldtwin(&args);
    assert!(out.status.success(), "{out:?}");
}

/// Runs a command and returns its output; panics with a clear message if the
/// tool is not installed (scripts/test installs it).
pub fn tool(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); scripts/test installs it"))
}

/// Runs `openssl ARGS` in `dir`; panics with its output if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A running `fieldtwin run`, stopped with SIGTERM when dropped.
pub struct RunningSite {
    child: Child,
    pub api: SocketAddr,
    pub dir: tempfile::TempDir,
    pub stdout: Arc<Mutex<String>>,
}

impl RunningSite {
    /// Starts the site of `text` with extra `args`, waits until the API answers.
    pub fn start(text: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site.toml");
        std::fs::write(&site, text).unwrap();
        Self::start_file(&site, dir, args)
    }

    pub fn start_file(site: &Path, dir: tempfile::TempDir, args: &[&str]) -> Self {
        Self::start_wrapped(&[], site, dir, args)
    }

    /// Starts the site as an unprivileged user (nobody) through `setpriv`.
    pub fn start_unprivileged(text: &str, args: &[&str]) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let site = dir.path().join("site.toml");
        std::fs::write(&site, text).unwrap();
        std::fs::set_permissions(&site, std::fs::Permissions::from_mode(0o644)).unwrap();
        let wrapper = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ];
        Self::start_wrapped(&wrapper, &site, dir, args)
    }

    /// Starts `fieldtwin run`, behind `wrapper` (a command that execs its arguments) if any.
    pub fn start_wrapped(
        wrapper: &[&str],
        site: &Path,
        dir: tempfile::TempDir,
        args: &[&str],
    ) -> Self {
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let bin = env!("CARGO_BIN_EXE_fieldtwin");
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .arg("run")
            .arg("--site")
            .arg(site)
            .arg("--api")
            .arg(api.to_string())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fieldtwin");
        let stdout = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let site = Self {
            child,
            api,
            dir,
            stdout,
        };
        site.wait_until(Duration::from_secs(60), || {
            site.stdout.lock().unwrap().contains("control API:")
        });
        site
    }

    /// Polls `f` until it is true; panics after `timeout`.
    pub fn wait_until(&self, timeout: Duration, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < timeout,
                "timed out; fieldtwin printed:\n{}",
                self.stdout.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    /// `curl` GET; returns (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        curl(&["-s", "-w", "\n%{http_code}", &self.url(path)])
    }

    /// `curl` POST of a JSON body; returns (status, body).
    pub fn post(&self, path: &str, json: &str) -> (u16, String) {
        curl(&[
            "-s",
            "-w",
            "\n%{http_code}",
            "-H",
            "content-type: application/json",
            "-d",
            json,
            &self.url(path),
        ])
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn post_json(&self, path: &str, json: &str) -> serde_json::Value {
        let (status, body) = self.post(path, json);
        assert_eq!(status, 200, "{path} {json}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Stops the process with SIGTERM and waits; returns its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

impl Drop for RunningSite {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

/// Runs curl with `args`, expecting `-w "\n%{http_code}"` at the end.
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = tool("curl", args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Logs in to a device's JSON API at `url` (its `/api/login`) as
/// SecurityAdmin with `password`: the HTTP status and the answer.
pub fn api_login(url: &str, password: &str) -> (u16, String) {
    curl(&[
        "-sk",
        "-w",
        "\n%{http_code}",
        "-H",
        "content-type: application/json",
        "-d",
        &format!(r#"{{"username":"SecurityAdmin","password":"{password}"}}"#),
        url,
    ])
}

/// The `Authorization: Bearer …` header of the token in a login answer
/// ([`api_login`]); none if it has no token.
pub fn bearer_of(answer: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(answer).ok()?;
    Some(format!("Authorization: Bearer {}", v["token"].as_str()?))
}
