//! End-to-end tests of the Panel Server security surface (issue 5) against
//! the real binary in host mode, with real clients: curl, openssl s_client,
//! nmap, the PyPI `wsdiscovery` codec and headless Chromium (Selenium +
//! chromedriver). Site octets 40-59 (tests/common/mod.rs).
//!
//! The nmap test runs against 127.77.S.10 (host mode); the TAP variant
//! (`nmap -p- 10.77.0.10` in a namespace) follows with the TAP lab.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::web::Ps;
use common::{
    RunningSite, api_login, bearer_of, curl, fast_site_text, label_install_code, site_text, tool,
};

impl Ps {
    fn power_cycle(&self) {
        let v = self
            .site
            .post_json("/api/v1/devices/ps1/power", r#"{"action":"cycle"}"#);
        assert_eq!(v["power"], "on", "{v}");
    }
}

fn python() -> PathBuf {
    let p = std::env::var_os("FIELDTWIN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    assert!(
        p.exists(),
        "{} is missing: scripts/test creates the venv (.venv with wsdiscovery==2.1.2 and selenium==4.51.0)",
        p.display()
    );
    p
}

fn script(name: &str) -> String {
    format!("{}/tests/security/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Directed WS-Discovery probe with the PyPI client; returns its JSON.
fn wsd_probe(ip: &str) -> serde_json::Value {
    let out = Command::new(python())
        .args([&script("wsd_probe.py"), ip])
        .output()
        .unwrap();
    assert!(out.status.success(), "wsd_probe failed: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Open TCP ports of `ip` per `nmap -p-`, minus ports some other program
/// listens on for every address (0.0.0.0 / [::]), which host mode cannot
/// tell apart from the device's.
fn open_ports(ip: &str) -> Vec<u16> {
    let out = tool("nmap", &["-n", "-Pn", "-p-", "-T4", ip]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "nmap failed: {text}");
    let ss = String::from_utf8_lossy(&tool("ss", &["-ltnH"]).stdout).to_string();
    let wildcard: Vec<u16> = ss
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter(|a| a.starts_with("0.0.0.0:") || a.starts_with("*:") || a.starts_with("[::]:"))
        .filter_map(|a| a.rsplit(':').next()?.parse().ok())
        .collect();
    text.lines()
        .filter(|l| l.contains("/tcp") && l.contains(" open "))
        .filter_map(|l| l.split('/').next()?.parse().ok())
        .filter(|p| !wildcard.contains(p))
        .collect()
}

#[test]
fn security_tls_and_port_surface() {
    let ps = Ps::start(40);
    // curl -k -v: TLS 1.2.
    let out = tool("curl", &["-k", "-v", "-o", "/dev/null", &ps.url("/login")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SSL connection using TLSv1.2"), "{err}");
    // Nothing below 1.2, and no 1.3 by default.
    for v in ["-tls1_1", "-tls1_3"] {
        let out = Command::new("sh")
            .args([
                "-c",
                &format!("echo | openssl s_client -connect {}:443 {v} 2>&1", ps.ip),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("BEGIN CERTIFICATE") && !text.contains("Cipher is ECDHE"),
            "{v} was accepted:\n{text}"
        );
    }
    // The certificate is X.509v3 and self-signed.
    let out = Command::new("sh")
        .args([
            "-c",
            &format!(
                "echo | openssl s_client -connect {}:443 -tls1_2 2>/dev/null | openssl x509 -noout -text",
                ps.ip
            ),
        ])
        .output()
        .unwrap();
    let cert = String::from_utf8_lossy(&out.stdout);
    assert!(cert.contains("Version: 3 (0x2)"), "{cert}");
    // Port surface: exactly 443, 502, 5357 (no 80, no SSH).
    assert_eq!(open_ports(&ps.ip), vec![443, 502, 5357]);
    // Disabling Modbus on ETH1 through the API closes 502; DPWS off closes 5357.
    let (code, body) = api_login(&ps.url("/api/login"), &ps.password);
    assert_eq!(code, 200, "{body}");
    let auth = bearer_of(&body).unwrap();
    let (code, body) = curl(&[
        "-sk",
        "-w",
        "\n%{http_code}",
        "-H",
        &auth,
        &ps.url("/api/settings"),
    ]);
    assert_eq!(code, 200, "{body}");
    let mut s: serde_json::Value = serde_json::from_str(&body).unwrap();
    s["modbus"]["eth1"] = false.into();
    s["dpws"] = false.into();
    let (code, body) = curl(&[
        "-sk",
        "-w",
        "\n%{http_code}",
        "-X",
        "PUT",
        "-H",
        &auth,
        "-H",
        "content-type: application/json",
        "-d",
        &s.to_string(),
        &ps.url("/api/settings"),
    ]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(open_ports(&ps.ip), vec![443]);
    // ... and it persists across a power cycle.
    ps.power_cycle();
    assert_eq!(open_ports(&ps.ip), vec![443]);
}

#[test]
fn security_lockout_bookmark_and_audit() {
    let ps = Ps::start(42);
    // A bookmarked settings URL without a session redirects to login.
    let out = tool(
        "curl",
        &[
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            &ps.url("/settings"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, format!("303 https://{}/login", ps.ip));
    // No password and wrong passwords: no access.
    let (code, body) = ps.login_as("SecurityAdmin", "");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("Wrong user name or password"));
    for i in 2..=9 {
        let (code, body) = ps.login_as("SecurityAdmin", &format!("Wrong-{i}"));
        assert_eq!(code, 401, "attempt {i}: {body}");
    }
    let (code, body) = ps.login_as("SecurityAdmin", "Wrong-10");
    assert_eq!(code, 403);
    assert!(body.contains("locked for 10 minutes"), "{body}");
    // Eleventh: locked, even with the right password; not counted.
    let (code, body) = ps.login_as("SecurityAdmin", &ps.password);
    assert_eq!(code, 403);
    assert!(body.contains("locked"), "{body}");
    // The lock survives a power cycle.
    ps.power_cycle();
    let (code, body) = ps.login_as("SecurityAdmin", &ps.password);
    assert_eq!(code, 403, "lock lost across power cycle: {body}");
    // After 10 minutes of device time: login works again...
    ps.advance(600);
    let (code, body) = ps.login_as("SecurityAdmin", &ps.password);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("Home - EcoStruxure Panel Server"), "{body}");
    // ... success reset the counter, so 10 failures lock again for 10 min;
    // then 5 more failures lock for 60 minutes.
    for i in 1..=10 {
        ps.login_as("SecurityAdmin", &format!("Wrong-{i}"));
    }
    ps.advance(600);
    for i in 1..=4 {
        let (code, _) = ps.login_as("SecurityAdmin", &format!("Again-{i}"));
        assert_eq!(code, 401, "attempt {i} after the first lock");
    }
    let (code, body) = ps.login_as("SecurityAdmin", "Again-5");
    assert_eq!(code, 403);
    assert!(body.contains("locked for 60 minutes"), "{body}");
    ps.advance(59 * 60);
    assert_eq!(
        ps.login_as("SecurityAdmin", &ps.password).0,
        403,
        "still locked after 59 min"
    );
    ps.advance(60);
    assert_eq!(ps.login_as("SecurityAdmin", &ps.password).0, 200);
    // Audit CSV: the failures and the lockouts, no passwords.
    let csv = ps.audit_csv();
    assert!(csv.starts_with("time,event,detail"), "{csv}");
    assert!(csv.matches(",login failed,").count() >= 25, "{csv}");
    assert_eq!(csv.matches(",lockout,").count(), 3, "{csv}");
    assert!(csv.contains("locked for 60 minutes"));
    assert!(csv.contains(",login refused (locked),"));
    assert!(!csv.contains(&ps.password) && !csv.contains("Wrong-") && !csv.contains("Again-"));
    // The session cookie flags.
    let out = tool(
        "curl",
        &[
            "-sk",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--data-urlencode",
            "username=SecurityAdmin",
            "--data-urlencode",
            &format!("password={}", ps.password),
            &ps.url("/login"),
        ],
    );
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let cookie = headers
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap_or_default()
        .to_string();
    for flag in ["secure", "httponly", "samesite=strict"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    // A form without the CSRF token is refused.
    let (code, _) = ps.curl(&["-d", "dpws=on", &ps.url("/settings/network-communication")]);
    assert_eq!(code, 403);
}

#[test]
fn security_firmware_update() {
    let ps = Ps::start(44);
    assert_eq!(ps.login_as("SecurityAdmin", &ps.password).0, 200);
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "this is not firmware\n").unwrap();
    let (code, body) = ps.upload_firmware(&txt);
    assert_eq!(code, 400);
    assert!(body.contains("wrong signature"), "{body}");
    assert!(ps.audit_csv().contains(",firmware update failed,"));
    // A lab-signed image.
    let bin = env!("CARGO_BIN_EXE_fieldtwin");
    let payload = dir.path().join("payload.bin");
    std::fs::write(&payload, vec![0x5au8; 4096]).unwrap();
    let img = dir.path().join("fw.img");
    common::sign_firmware(&payload, "002.003.000", None, &img);
    let out = Command::new(bin)
        .args(["firmware", "inspect"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("signature: valid"),
        "{out:?}"
    );
    let out = Command::new(bin)
        .args(["firmware", "inspect"])
        .arg(&txt)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let (code, body) = ps.upload_firmware(&img);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("installed"), "{body}");
    // It reboots: sessions are gone; log in again and see the version.
    ps.site.wait_until(Duration::from_secs(30), || {
        ps.login_as("SecurityAdmin", &ps.password)
            .1
            .contains("002.003.000")
    });
    // The unit-255 firmware register (0x0078, 6 registers, ASCII).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let regs = rt.block_on(async {
        use tokio_modbus::prelude::*;
        let addr = format!("{}:502", ps.ip).parse().unwrap();
        let mut ctx = tcp::connect_slave(addr, Slave(255)).await.unwrap();
        ctx.read_holding_registers(0x0078, 6)
            .await
            .unwrap()
            .unwrap()
    });
    let ascii: String = regs
        .iter()
        .flat_map(|r| r.to_be_bytes())
        .filter(|b| *b != 0)
        .map(char::from)
        .collect();
    assert_eq!(ascii, "002.003.000");
    let csv = ps.audit_csv();
    assert!(csv.contains("firmware 002.002.000 -> 002.003.000"), "{csv}");
    // Still installed after a power cycle (verified again at boot).
    ps.power_cycle();
    assert!(
        ps.login_as("SecurityAdmin", &ps.password)
            .1
            .contains("002.003.000")
    );
    // Date & time set on the page: audited, and later entries carry the
    // device's RTC time.
    let (code, body) = ps.submit(
        "/settings",
        "/settings/datetime",
        &[("mode", "manual"), ("datetime", "2031-02-03T04:05")],
    );
    assert_eq!(code, 200, "{body}");
    ps.login_as("SecurityAdmin", "Wrong-pw-1");
    let csv = ps.audit_csv();
    assert!(csv.contains("date/time set manually"), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("2031-02-03T04:0") && l.contains(",login failed,")),
        "{csv}"
    );
    // Issue 8 defect 3: a factory reset (the Restart button) keeps the
    // installed firmware; no silent revert to the site's version.
    let v = ps.site.post_json(
        "/api/v1/commands",
        r#"{"command":"restart_button","device":"ps1","hold_s":11}"#,
    );
    assert_eq!(v["power"], "on", "{v}");
    assert!(
        ps.login_as("SecurityAdmin", &ps.password)
            .1
            .contains("002.003.000"),
        "firmware reverted by the factory reset"
    );
}

#[test]
fn security_dpws_and_chromium() {
    let ps = Ps::start(46);
    let found = wsd_probe(&ps.ip);
    let m = &found["matches"][0];
    assert!(
        m["epr"].as_str().unwrap().starts_with("urn:uuid:"),
        "{found}"
    );
    assert_eq!(found["resolved"][0][0], m["xaddrs"][0]);
    let meta = found["metadata"].as_str().unwrap();
    for want in [
        "Schneider Electric",
        "PAS600L",
        "NK231730251",
        "002.002.000",
        &format!("https://{}/", ps.ip),
    ] {
        assert!(meta.contains(want), "{want} missing in {meta}");
    }
    // Headless Chromium: bookmark -> login -> Settings -> DPWS off -> Save.
    let art = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&art).unwrap();
    let shot = art.join("security-chromium-dpws-off.png");
    let _ = std::fs::remove_file(&shot);
    for t in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(t).exists(),
            "{t} missing: scripts/test installs apt packages chromium chromium-driver"
        );
    }
    let out = Command::new(python())
        .env("SE_AVOID_STATS", "true")
        .args([
            &script("chromium_dpws.py"),
            &format!("https://{}", ps.ip),
            "SecurityAdmin",
            &ps.password,
        ])
        .arg(&shot)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium run failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["bookmark_landed_on"],
        format!("https://{}/login", ps.ip),
        "{v}"
    );
    assert_eq!(v["dpws_was_checked"], true, "{v}");
    assert_eq!(v["dpws_now_checked"], false, "{v}");
    assert_eq!(v["message"], "Saved.", "{v}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    // A WS-Discovery probe now finds nothing, and 5357 is closed.
    let found = wsd_probe(&ps.ip);
    assert_eq!(found["matches"], serde_json::json!([]), "{found}");
    let err = std::net::TcpStream::connect(format!("{}:5357", ps.ip)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // Persisted across a power cycle.
    ps.power_cycle();
    assert_eq!(wsd_probe(&ps.ip)["matches"], serde_json::json!([]));
}

#[test]
fn security_passwords_backup_and_factory_reset() {
    let ps = Ps::start(48);
    assert_eq!(ps.login_as("SecurityAdmin", &ps.password).0, 200);
    // Password rules, each failure names the rule.
    let change = |new: &str| {
        ps.submit(
            "/users",
            "/users",
            &[("current", &ps.password), ("new", new), ("confirm", new)],
        )
    };
    let (code, body) = change("short1A");
    assert_eq!(code, 400);
    assert!(body.contains("between 8 and 50 characters"), "{body}");
    let (_, body) = change("alllowercase1");
    assert!(body.contains("at least three of"), "{body}");
    let (code, body) = change("New-Passw0rd");
    assert_eq!(code, 200, "{body}");
    // Backup: password rules, then a real encrypted file.
    let (code, body) = ps.submit("/backup", "/backup/download", &[("password", "abcdef")]);
    assert_eq!(code, 400);
    assert!(body.contains("uppercase"), "{body}");
    let csrf = ps.csrf("/backup");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.ftbk");
    assert_eq!(ps.download_backup(&csrf, "Back-up!", &file), 200);
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"FTBK"));
    assert!(
        !String::from_utf8_lossy(&bytes).contains("modbus"),
        "backup is not encrypted"
    );
    let (code, body) = ps.curl(&[
        "-F",
        &format!("csrf={csrf}"),
        "-F",
        &format!("file=@{}", file.display()),
        "-F",
        "password=Wrong-pw!",
        &ps.url("/backup/restore"),
    ]);
    assert_eq!(code, 400);
    assert!(body.contains("wrong backup password"), "{body}");
    let (code, body) = ps.curl(&[
        "-F",
        &format!("csrf={csrf}"),
        "-F",
        &format!("file=@{}", file.display()),
        "-F",
        "password=Back-up!",
        &ps.url("/backup/restore"),
    ]);
    assert_eq!(code, 200, "{body}");
    // The device reboots 0.3 s after answering; wait for the new boot.
    std::thread::sleep(Duration::from_secs(1));
    ps.site.wait_until(Duration::from_secs(30), || {
        ps.login_as("SecurityAdmin", "New-Passw0rd").0 == 200 && ps.get("/maintenance").0 == 200
    });
    // Factory reset asked on the page (issue 8 defect 3): nothing erased,
    // audited, the device reboots. Then the Restart button erases it.
    let fingerprint = || {
        let out = Command::new("sh")
            .args(["-c", &format!("echo | openssl s_client -connect {}:443 2>/dev/null | openssl x509 -noout -fingerprint -sha256", ps.ip)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let before = fingerprint();
    assert!(before.contains("Fingerprint"), "{before}");
    let (code, body) = ps.submit("/maintenance", "/maintenance/factory-reset", &[]);
    assert_eq!(code, 200);
    assert!(body.contains("Nothing was erased"), "{body}");
    std::thread::sleep(Duration::from_secs(1));
    ps.site.wait_until(Duration::from_secs(30), || {
        ps.login_as("SecurityAdmin", "New-Passw0rd").0 == 200 && ps.get("/logs").0 == 200
    });
    assert_eq!(fingerprint(), before, "a remote request must not erase");
    let csv = ps.audit_csv();
    assert!(csv.contains("password changed"), "{csv}");
    assert!(
        csv.contains("factory reset requested remotely (webpages): refused"),
        "{csv}"
    );
    let v = ps.site.post_json(
        "/api/v1/commands",
        r#"{"command":"restart_button","device":"ps1","hold_s":12}"#,
    );
    assert_eq!(v["power"], "on", "{v}");
    assert_eq!(ps.login_as("SecurityAdmin", &ps.password).0, 200);
    assert_ne!(fingerprint(), before, "certificate not regenerated");
    let csv = ps.audit_csv();
    assert!(!csv.contains("password changed"), "{csv}");
    // Permanent wireless deactivation...
    let (code, body) = ps.submit(
        "/settings",
        "/settings/wireless-permanent-off",
        &[("confirm", "on")],
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("permanently deactivated"), "{body}");
    // The physical Restart button held 15 s: factory reset again.
    let before = fingerprint();
    let v = ps.site.post_json(
        "/api/v1/commands",
        r#"{"command":"restart_button","device":"ps1","hold_s":15}"#,
    );
    assert_eq!(v["power"], "on", "{v}");
    assert_eq!(ps.login_as("SecurityAdmin", &ps.password).0, 200);
    assert_ne!(fingerprint(), before, "certificate not regenerated");
    let csv = ps.audit_csv();
    assert!(csv.contains("first boot with factory settings"), "{csv}");
    assert!(!csv.contains("factory reset requested"), "{csv}");
    // ... survives the factory reset and cannot be undone.
    let (code, body) = ps.submit("/settings", "/settings/wifi", &[("enabled", "on")]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("permanently deactivated"), "{body}");
}

#[test]
fn security_tls13_site_switch() {
    let text = fast_site_text(50).replacen(
        "pbkdf2_iterations = 1000",
        "pbkdf2_iterations = 1000\ntls13 = true",
        1,
    );
    let site = RunningSite::start(&text, &[]);
    let ip = "127.77.50.10";
    let handshake = |v: &str| {
        let out = Command::new("sh")
            .args([
                "-c",
                &format!("echo | openssl s_client -connect {ip}:443 {v} 2>&1"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let t13 = handshake("-tls1_3");
    assert!(
        t13.contains("TLSv1.3") && t13.contains("BEGIN CERTIFICATE"),
        "{t13}"
    );
    let t12 = handshake("-tls1_2");
    assert!(t12.contains("BEGIN CERTIFICATE"), "{t12}");
    let t11 = handshake("-tls1_1");
    assert!(!t11.contains("BEGIN CERTIFICATE"), "{t11}");
    drop(site);
}

/// Reads `count` registers at `addr` of `unit` with tokio-modbus; `Err` is
/// the Modbus exception code. Waits up to 10 s for port 502.
fn modbus_read(ip: &str, unit: u8, addr: u16, count: u16) -> Result<Vec<u16>, u8> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use tokio_modbus::prelude::*;
        let sock = format!("{ip}:502").parse().unwrap();
        // 502 closes for a moment while the device restarts its services.
        let mut tries = 0;
        let mut ctx = loop {
            match tcp::connect_slave(sock, Slave(unit)).await {
                Ok(ctx) => break ctx,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{ip}:502 refuses connections: {e}"),
            }
        };
        ctx.read_holding_registers(addr, count)
            .await
            .unwrap()
            .map_err(u8::from)
    })
}

/// The Wireless devices page adds a device by its install code and removes
/// it, and the gateway follows: device table at 501+, unit id routed or
/// answered 0x0A. A factory reset wipes the pairing.
#[test]
fn security_wireless_pairing_add_remove_and_factory_reset() {
    let ps = Ps::start(52);
    assert_eq!(ps.login_as("SecurityAdmin", &ps.password).0, 200);
    // Commissioned from the site file: PowerTag 0x2A3B0001 at unit 100.
    assert_eq!(
        modbus_read(&ps.ip, 255, 0x01F4, 5).unwrap(),
        vec![0, 0, 0x2A3B, 0x0001, 100]
    );
    assert!(modbus_read(&ps.ip, 100, 0x0BF3, 2).is_ok());
    let (_, page) = ps.get("/settings");
    assert!(
        page.contains("000000002A3B0001") && page.contains("A9MEM1520"),
        "{page}"
    );

    // Remove it: its unit id is no longer routed and its slot is empty.
    let (code, body) = ps.submit(
        "/settings",
        "/settings/wireless/remove",
        &[("rf_id", "000000002A3B0001")],
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("Saved."), "{body}");
    ps.site.wait_until(Duration::from_secs(10), || {
        modbus_read(&ps.ip, 100, 0x0BF3, 2) == Err(0x0A)
    });
    // The table closes up: slot 1 now lists the next paired PowerTag.
    assert_eq!(
        modbus_read(&ps.ip, 255, 0x01F4, 5).unwrap(),
        vec![0, 0, 0x2A3B, 0x0002, 101]
    );

    // Bad install codes are refused with the rule they break.
    let add = |rf_id: &str, code: &str| {
        ps.submit(
            "/settings",
            "/settings/wireless/add",
            &[("rf_id", rf_id), ("install_code", code)],
        )
    };
    let (code, body) = add("000000002A3B0001", "1234");
    assert_eq!(code, 400);
    assert!(body.contains("36 hexadecimal characters"), "{body}");
    let (code, body) = add("00000000DEADBEEF", "83FED3407A939723A5C639B26916D505C3B5");
    assert_eq!(code, 400);
    assert!(
        body.contains("no device with RF-ID 00000000DEADBEEF"),
        "{body}"
    );

    // Add it back with the install code of its label: routed again at unit 100.
    let install_code = label_install_code(&ps.text, "pt-lighting");
    let (code, body) = add("000000002A3B0001", &install_code);
    assert_eq!(code, 200, "{body}");
    ps.site.wait_until(Duration::from_secs(10), || {
        modbus_read(&ps.ip, 100, 0x0BF3, 2).is_ok()
    });
    let csv = ps.audit_csv();
    assert!(
        csv.contains("device removed") && csv.contains("device added"),
        "{csv}"
    );

    // A factory reset (the Restart button) wipes the pairing: no wireless
    // unit answers.
    let v = ps.site.post_json(
        "/api/v1/commands",
        r#"{"command":"restart_button","device":"ps1","hold_s":10}"#,
    );
    assert_eq!(v["power"], "on", "{v}");
    ps.site.wait_until(Duration::from_secs(30), || {
        modbus_read(&ps.ip, 255, 0x01F4, 5).ok() == Some(vec![0xFFFF; 5])
    });
    for unit in 100..=104 {
        assert_eq!(
            modbus_read(&ps.ip, unit, 0x0BF3, 2),
            Err(0x0A),
            "unit {unit}"
        );
    }
    // A power cycle does not bring the factory pairing back.
    ps.power_cycle();
    assert_eq!(modbus_read(&ps.ip, 100, 0x0BF3, 2), Err(0x0A));
}

/// The SupportUser account: disabled until the administrator sets its
/// password (same rules, confirmed with the administrator's password), then
/// it logs in; emptied, it is disabled again. Each step is audited.
#[test]
fn security_support_user_account() {
    let ps = Ps::start(54);
    assert_eq!(ps.login_as("SecurityAdmin", &ps.password).0, 200);
    // Disabled at first: no login, whatever the password.
    assert_eq!(ps.login_as("SupportUser", &ps.password).0, 401);
    assert_eq!(ps.login_as("SecurityAdmin", &ps.password).0, 200);
    let set = |admin_pw: &str, new: &str| {
        ps.submit(
            "/users",
            "/users",
            &[
                ("account", "SupportUser"),
                ("current", admin_pw),
                ("new", new),
                ("confirm", new),
            ],
        )
    };
    let (code, body) = set(&ps.password, "weakpassword");
    assert_eq!(code, 400);
    assert!(body.contains("at least three of"), "{body}");
    let (code, body) = set("Not-The-Admin-1", "Supp0rt-Access");
    assert_eq!(code, 400);
    assert!(body.contains("current password is wrong"), "{body}");
    let (code, body) = set(&ps.password, "Supp0rt-Access");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("id=\"support-state\">enabled"), "{body}");
    // SupportUser logs in with its own password, not the administrator's.
    assert_eq!(ps.login_as("SupportUser", &ps.password).0, 401);
    assert_eq!(ps.login_as("SupportUser", "Supp0rt-Access").0, 200);
    // Disabled again by the administrator.
    assert_eq!(ps.login_as("SecurityAdmin", &ps.password).0, 200);
    let (code, body) = set(&ps.password, "");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("id=\"support-state\">disabled"), "{body}");
    assert_eq!(ps.login_as("SupportUser", "Supp0rt-Access").0, 401);
    assert_eq!(ps.login_as("SecurityAdmin", &ps.password).0, 200);
    let csv = ps.audit_csv();
    for want in [
        "SupportUser password set (account enabled)",
        "support user logged in",
        "SupportUser account disabled",
    ] {
        assert!(csv.contains(want), "{want}: {csv}");
    }
    assert!(!csv.contains("Supp0rt-Access"), "no password in the log");
}

/// Issue 8 defect 5: a wrong current password on the Users page is a failed
/// login: counted toward the lockout (the tenth locks the webpages, so even
/// the right password is then refused at the login page) and audited.
#[test]
fn security_wrong_current_password_counts_toward_lockout() {
    let ps = Ps::start(56);
    assert_eq!(ps.login_as("SecurityAdmin", &ps.password).0, 200);
    let change = |current: &str| {
        ps.submit(
            "/users",
            "/users",
            &[
                ("current", current),
                ("new", "New-Passw0rd"),
                ("confirm", "New-Passw0rd"),
            ],
        )
    };
    for i in 1..10 {
        let (code, body) = change(&format!("Guess-{i:04}"));
        assert_eq!(code, 400, "{body}");
        assert!(
            body.contains(&format!("{} more failure(s) lock", 10 - i)),
            "{body}"
        );
    }
    let (code, body) = change("Guess-0010");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("locked for 10 minutes"), "{body}");
    // Locked: even the right current password is refused now.
    let (code, body) = change(&ps.password);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("Try again in"), "{body}");
    let csv = ps.audit_csv();
    assert!(
        csv.contains("users page: the administrator's current password is wrong (9 consecutive)"),
        "{csv}"
    );
    assert!(csv.contains("lockout"), "{csv}");
    assert!(!csv.contains("Guess-"), "no password in the log");
    // A new browser cannot log in either until the lock ends.
    let other = tempfile::NamedTempFile::new().unwrap();
    let jar = other.path().to_str().unwrap();
    let (code, body) = curl(&[
        "-sk",
        "-c",
        jar,
        "-w",
        "\n%{http_code}",
        "--data-urlencode",
        "username=SecurityAdmin",
        "--data-urlencode",
        &format!("password={}", ps.password),
        &ps.url("/login"),
    ]);
    assert_eq!(code, 403, "{body}");
    ps.advance(601);
    assert_eq!(ps.login_as("SecurityAdmin", &ps.password).0, 200);

    // Defect 9: pairing while the radio is permanently off says so.
    let (code, body) = ps.submit(
        "/settings",
        "/settings/wireless-permanent-off",
        &[("confirm", "on")],
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = ps.submit(
        "/settings",
        "/settings/wireless/add",
        &[(
            "install_code",
            &format!("000000002A3B0001{}", "A1".repeat(10)),
        )],
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("IEEE 802.15.4 radio of this device is permanently deactivated"),
        "{body}"
    );
}

/// Issue 8 defect 7: nothing a client can fetch from a device names the
/// emulator: every page and API answer with its headers, the certificate
/// (as `openssl x509 -text` prints it), a downloaded backup file, the
/// answer to a foreign backup file and the DPWS metadata. The `Date` header
/// is the device's RTC, the certificate's validity starts at the RTC when it
/// was made and lasts years, and an unknown method on a protected route gets
/// the login redirect, not 405.
#[test]
fn security_nothing_a_client_sees_names_the_emulator() {
    let ps = Ps::start(58);
    let mut seen = String::new();
    // Before login: the redirect of every protected page, with headers.
    for path in ["/", "/settings", "/login", "/api/status"] {
        seen += &ps.curl(&["-i", &ps.url(path)]).1;
    }
    // Unknown methods on protected routes: the login redirect (401 on the API).
    for (method, path) in [("PUT", "/settings"), ("DELETE", "/users"), ("PATCH", "/")] {
        let (code, text) = ps.curl(&["-i", "-X", method, &ps.url(path)]);
        assert_eq!(code, 303, "{method} {path}: {text}");
        assert!(text.to_lowercase().contains("location: /login"), "{text}");
        seen += &text;
    }
    let (code, text) = ps.curl(&["-i", "-X", "DELETE", &ps.url("/api/audit")]);
    assert_eq!(code, 401, "{text}");
    seen += &text;
    assert_eq!(ps.login_as("SecurityAdmin", &ps.password).0, 200);
    // Set the device clock: the Date header follows the RTC, not the host.
    let (code, body) = ps.submit(
        "/settings",
        "/settings/datetime",
        &[("mode", "manual"), ("datetime", "2031-05-06T07:08")],
    );
    assert_eq!(code, 200, "{body}");
    for path in [
        "/",
        "/settings",
        "/users",
        "/firmware",
        "/logs",
        "/logs/audit.csv",
        "/backup",
        "/maintenance",
    ] {
        let (code, text) = ps.curl(&["-i", &ps.url(path)]);
        assert_eq!(code, 200, "{path}: {text}");
        seen += &text;
    }
    let (_, home) = ps.curl(&["-i", &ps.url("/")]);
    let date = home
        .lines()
        .find(|l| l.to_lowercase().starts_with("date:"))
        .unwrap_or_else(|| panic!("no Date header: {home}"));
    assert!(
        date.contains("May 2031 07:0"),
        "Date not from the RTC: {date}"
    );
    // The JSON API.
    let (code, tok) = api_login(&ps.url("/api/login"), &ps.password);
    assert_eq!(code, 200, "{tok}");
    let bearer = bearer_of(&tok).unwrap();
    for path in ["/api/status", "/api/settings", "/api/audit"] {
        seen += &curl(&["-ski", "-w", "\n%{http_code}", "-H", &bearer, &ps.url(path)]).1;
    }
    // A downloaded backup and the answer to a foreign file.
    let csrf = ps.csrf("/backup");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.bin");
    assert_eq!(ps.download_backup(&csrf, "Back-up!", &file), 200);
    seen += &String::from_utf8_lossy(&std::fs::read(&file).unwrap());
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"this is not a backup").unwrap();
    let (code, text) = ps.curl(&[
        "-F",
        &format!("csrf={csrf}"),
        "-F",
        &format!("file=@{}", junk.display()),
        "-F",
        "password=Back-up!",
        &ps.url("/backup/restore"),
    ]);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("not a Panel Server backup file"), "{text}");
    seen += &text;
    // The certificate in text form.
    let pem = tool(
        "sh",
        &[
            "-c",
            &format!(
                "openssl s_client -connect {}:443 -servername {} </dev/null 2>/dev/null | openssl x509 -text -noout",
                ps.ip, ps.ip
            ),
        ],
    );
    let cert = String::from_utf8_lossy(&pem.stdout).to_string();
    assert!(cert.contains("Subject:"), "{cert}");
    assert!(cert.contains("O = Schneider Electric"), "{cert}");
    let year = |label: &str| -> i32 {
        let l = cert
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("{label}: {cert}"));
        l.split_whitespace()
            .find_map(|w| w.parse::<i32>().ok().filter(|y| *y > 1900))
            .unwrap_or_else(|| panic!("{l}"))
    };
    let (from, to) = (year("Not Before"), year("Not After"));
    let now: i32 = chrono_year();
    assert!(
        (now - 1..=now + 1).contains(&from),
        "notBefore {from}: {cert}"
    );
    assert!((5..=25).contains(&(to - from)), "validity {from}-{to}");
    seen += &cert;
    // DPWS metadata.
    seen += &wsd_probe(&ps.ip).to_string();
    assert!(seen.len() > 20_000, "too little fetched: {}", seen.len());
    let lower = seen.to_lowercase();
    if let Some(i) = lower.find("fieldtwin") {
        panic!(
            "a client sees the emulator's name: ...{}...",
            &seen[i.saturating_sub(200)..(i + 200).min(seen.len())]
        );
    }
}

/// Issue 15 item 1: a boot neither hashes the initial password nor makes
/// the TLS certificate; both are made on first use, off the boot path. The
/// first HTTPS clients, arriving together right after the process is up,
/// wait for them (the TLS handshakes for the certificate, the logins for
/// the accounts) and succeed: page logins through curl and an API login,
/// with the real PBKDF2 work (the default 100,000 iterations).
#[test]
fn security_first_https_logins_right_after_start_wait_and_succeed() {
    let text = site_text(170);
    assert!(!text.contains("pbkdf2_iterations"));
    let ps = Ps::start_with(170, text, &[]);
    let pages: Vec<_> = (0..3)
        .map(|_| {
            let (url, pw) = (ps.url("/login"), ps.password.clone());
            std::thread::spawn(move || {
                let jar = tempfile::NamedTempFile::new().unwrap();
                let jar = jar.path().to_str().unwrap().to_string();
                curl(&[
                    "-sk",
                    "--max-time",
                    "120",
                    "-b",
                    &jar,
                    "-c",
                    &jar,
                    "-L",
                    "-w",
                    "\n%{http_code}",
                    "--data-urlencode",
                    "username=SecurityAdmin",
                    "--data-urlencode",
                    &format!("password={pw}"),
                    &url,
                ])
            })
        })
        .collect();
    let (code, token) = curl(&[
        "-sk",
        "--max-time",
        "120",
        "-w",
        "\n%{http_code}",
        "-H",
        "content-type: application/json",
        "-d",
        &format!(
            "{{\"username\":\"SecurityAdmin\",\"password\":\"{}\"}}",
            ps.password
        ),
        &ps.url("/api/login"),
    ]);
    assert_eq!(code, 200, "first API login: {token}");
    assert!(token.contains("\"token\""), "{token}");
    for p in pages {
        let (code, body) = p.join().unwrap();
        assert_eq!(code, 200, "first page login: {body}");
        assert!(body.contains("csrf"), "not the home page: {body}");
    }
    // Every attempt was checked once, none refused.
    let (code, body) = ps.login_as("SecurityAdmin", &ps.password);
    assert_eq!(code, 200, "{body}");
    let csv = ps.audit_csv();
    assert_eq!(csv.matches("administrator logged in").count(), 5, "{csv}");
    assert!(!csv.contains("login failed"), "{csv}");
}

/// The host's current year (the site starts at the host's time).
fn chrono_year() -> i32 {
    let out = tool("date", &["-u", "+%Y"]);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}
