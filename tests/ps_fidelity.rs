//! End-to-end tests of issue 8's Panel Server fidelity against the real
//! binary in host mode, with real clients (curl, openssl, mbpoll,
//! tokio-modbus, a raw WS-Discovery Probe over UDP): the factory reset of
//! the product (defect 3), install codes (defect 4) with the Users page's
//! current password (defect 5), nothing a client fetches naming the
//! emulator (defect 7) and the model matrix (defect 8). Site octets
//! 140-149 (tests/common/mod.rs).

mod common;

use std::process::Command;
use std::time::Duration;

use common::web::Ps;
use common::{RunningSite, api_login, bearer_of, curl, fast_site_text, label_install_code, tool};

impl Ps {
    /// A bearer token of the JSON API (waiting out a reboot).
    fn api_token(&self, pw: &str) -> String {
        let login = || api_login(&self.url("/api/login"), pw);
        let mut answer = login();
        self.site.wait_until(Duration::from_secs(30), || {
            answer = login();
            answer.0 == 200
        });
        bearer_of(&answer.1).unwrap()
    }

    /// Waits until the device has booted again with the audit entry
    /// `boot` (the reason of the reboot), logged in with `pw`.
    fn wait_rebooted(&self, pw: &str, boot: &str) {
        self.site.wait_until(Duration::from_secs(30), || {
            self.login(pw).0 == 200 && self.get("/logs/audit.csv").1.contains(boot)
        });
    }

    /// Reads holding registers at `unit`: the values or the exception code.
    fn modbus(&self, unit: u8, addr: u16, count: u16) -> Result<Vec<u16>, u8> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            use tokio_modbus::prelude::*;
            let sock = format!("{}:502", self.ip).parse().unwrap();
            // 502 closes for a moment while the device restarts.
            let mut tries = 0;
            let mut ctx = loop {
                match tcp::connect_slave(sock, Slave(unit)).await {
                    Ok(ctx) => break ctx,
                    Err(_) if tries < 150 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("{sock} refuses connections: {e}"),
                }
            };
            match tokio::time::timeout(
                Duration::from_secs(5),
                ctx.read_holding_registers(addr, count),
            )
            .await
            {
                Ok(Ok(r)) => r.map_err(u8::from),
                // The connection closed under a restart: no answer.
                _ => Err(0xFF),
            }
        })
    }

    /// The firmware version of the unit-255 register 121 (6 words, ASCII).
    fn firmware_register(&self) -> String {
        let regs = self.modbus(255, 0x0078, 6).unwrap();
        regs.iter()
            .flat_map(|r| r.to_be_bytes())
            .filter(|b| *b != 0)
            .map(char::from)
            .collect()
    }

    fn restart_button(&self, hold_s: u32) -> serde_json::Value {
        self.site.post_json(
            "/api/v1/commands",
            &format!(r#"{{"command":"restart_button","device":"ps1","hold_s":{hold_s}}}"#),
        )
    }
}

/// Register 3060 (0x0BF3) of an iEM3155/PM5560: a float.
const METER_REG: u16 = 0x0BF3;

/// Defect 3: a remote factory reset (Maintenance page, /api/factory-reset)
/// erases nothing; the Restart button held 10 s erases the Modbus topology
/// (units 1 and 10 answer 0x0A), the passwords and the data, keeps the
/// installed firmware; the topology is configured again on the Settings page.
#[test]
fn fidelity_factory_reset_is_physical_and_erases_the_topology() {
    let ps = Ps::start(140);
    // Commissioned from the site file: serial unit 1, Modbus TCP unit 10.
    assert!(ps.modbus(1, METER_REG, 2).is_ok());
    assert!(ps.modbus(10, METER_REG, 2).is_ok());
    assert_eq!(ps.modbus(2, METER_REG, 2), Err(0x0A));
    assert_eq!(ps.login(&ps.password).0, 200);
    let (_, page) = ps.get("/settings");
    assert!(page.contains("Modbus TCP 10.77.141.11:502"), "{page}");

    // The topology is the device's own: remove unit 10, add it back.
    let (code, body) = ps.submit(
        "/settings",
        "/settings/modbus-devices/remove",
        &[("unit", "10")],
    );
    assert_eq!(code, 200, "{body}");
    ps.site.wait_until(Duration::from_secs(10), || {
        ps.modbus(10, METER_REG, 2) == Err(0x0A)
    });
    let add =
        |fields: &[(&str, &str)]| ps.submit("/settings", "/settings/modbus-devices/add", fields);
    let (code, body) = add(&[("link", "tcp"), ("unit", "1"), ("ip", "10.77.141.11")]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("unit id 1 is already used"), "{body}");
    let (code, body) = add(&[("link", "tcp"), ("unit", "10"), ("ip", "10.77.141.300")]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("is not an IPv4 address"), "{body}");
    let (code, body) = add(&[
        ("link", "tcp"),
        ("unit", "10"),
        ("ip", "10.77.141.11"),
        ("port", "502"),
    ]);
    assert_eq!(code, 200, "{body}");
    ps.site.wait_until(Duration::from_secs(10), || {
        ps.modbus(10, METER_REG, 2).is_ok()
    });

    // A signed firmware image, a new administrator password and a Wi-Fi
    // access point password.
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("payload.bin");
    std::fs::write(&payload, vec![0x5au8; 4096]).unwrap();
    let img = dir.path().join("fw.img");
    common::sign_firmware(&payload, "002.003.000", None, &img);
    let bearer = ps.api_token(&ps.password);
    let (code, body) = curl(&[
        "-sk",
        "-w",
        "\n%{http_code}",
        "-H",
        &bearer,
        "--data-binary",
        &format!("@{}", img.display()),
        &ps.url("/api/firmware"),
    ]);
    assert_eq!(code, 200, "{body}");
    ps.site.wait_until(Duration::from_secs(30), || {
        ps.login(&ps.password).1.contains("002.003.000")
    });
    let new_pw = "Changed-Passw0rd";
    let (code, body) = ps.submit(
        "/users",
        "/users",
        &[
            ("current", &ps.password),
            ("new", new_pw),
            ("confirm", new_pw),
        ],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(ps.login(new_pw).0, 200);
    let (code, body) = ps.submit(
        "/settings",
        "/settings/wifi",
        &[
            ("enabled", "on"),
            ("access_point", "on"),
            ("ap_password", "MyOwnAp1pass"),
        ],
    );
    assert_eq!(code, 200, "{body}");

    // Remote factory reset, from the Maintenance page and from the API:
    // refused (audited), the device only reboots; nothing is erased.
    let (code, body) = ps.submit("/maintenance", "/maintenance/factory-reset", &[]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("Restart button"), "{body}");
    ps.wait_rebooted(
        new_pw,
        "reboot after a remote factory-reset request (webpages)",
    );
    let bearer = ps.api_token(new_pw);
    let (code, body) = curl(&[
        "-sk",
        "-w",
        "\n%{http_code}",
        "-X",
        "POST",
        "-H",
        &bearer,
        &ps.url("/api/factory-reset"),
    ]);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["factory_reset"], false, "{v}");
    ps.wait_rebooted(new_pw, "reboot after a remote factory-reset request (api)");
    assert!(ps.modbus(1, METER_REG, 2).is_ok());
    assert!(ps.modbus(10, METER_REG, 2).is_ok());
    assert_eq!(ps.firmware_register(), "002.003.000");
    let csv = ps.audit_csv();
    assert!(
        csv.contains("factory reset requested remotely (webpages): refused")
            && csv.contains("factory reset requested remotely (api): refused"),
        "{csv}"
    );
    assert!(csv.contains("administrator password changed"), "{csv}");

    // The physical path: the Restart button held 12 s.
    let v = ps.restart_button(12);
    assert_eq!(v["power"], "on", "{v}");
    ps.site.wait_until(Duration::from_secs(30), || {
        ps.modbus(1, METER_REG, 2) == Err(0x0A)
    });
    assert_eq!(ps.modbus(10, METER_REG, 2), Err(0x0A));
    for unit in 100..=104 {
        assert_eq!(ps.modbus(unit, METER_REG, 2), Err(0x0A), "unit {unit}");
    }
    // The firmware is kept (no revert to the site's 002.002.000).
    assert_eq!(ps.firmware_register(), "002.003.000");
    // Passwords erased: the changed one is refused, the initial one works.
    assert_eq!(ps.login(new_pw).0, 401);
    assert_eq!(ps.login(&ps.password).0, 200);
    let (_, page) = ps.get("/");
    assert!(page.contains("002.003.000"), "{page}");
    // Data erased: the audit log starts again at the reset.
    let csv = ps.audit_csv();
    assert!(!csv.contains("administrator password changed"), "{csv}");
    assert!(!csv.contains("requested remotely"), "{csv}");
    assert!(
        csv.contains("first boot with factory settings, after a factory reset (Restart button)"),
        "{csv}"
    );
    // The Settings page lists no Modbus device, and the Wi-Fi access point
    // password is the label's device code again: the API masks it, the
    // device status names it as the factory one.
    let (_, page) = ps.get("/settings");
    assert!(!page.contains("Modbus TCP 10.77.141.11"), "{page}");
    // A power cycle does not bring the commissioning back.
    let v = ps
        .site
        .post_json("/api/v1/devices/ps1/power", r#"{"action":"cycle"}"#);
    assert_eq!(v["power"], "on", "{v}");
    assert_eq!(ps.modbus(1, METER_REG, 2), Err(0x0A));
    // Configured again on the Settings page, the serial meter answers.
    assert_eq!(ps.login(&ps.password).0, 200);
    let (code, body) = ps.submit(
        "/settings",
        "/settings/modbus-devices/add",
        &[("link", "serial"), ("unit", "1")],
    );
    assert_eq!(code, 200, "{body}");
    ps.site.wait_until(Duration::from_secs(10), || {
        ps.modbus(1, METER_REG, 2).is_ok()
    });
}

/// Defects 4 and 5: a wrong install code and a wrong current password on
/// the Users page are refused, counted toward the same lockout and audited;
/// the right install code of the device's label pairs it.
#[test]
fn fidelity_wrong_install_code_and_current_password_are_counted_and_audited() {
    let ps = Ps::start(142);
    assert_eq!(ps.login(&ps.password).0, 200);
    let (code, body) = ps.submit(
        "/settings",
        "/settings/wireless/remove",
        &[("rf_id", "000000002A3B0001")],
    );
    assert_eq!(code, 200, "{body}");
    ps.site.wait_until(Duration::from_secs(10), || {
        ps.modbus(100, METER_REG, 2) == Err(0x0A)
    });
    // The JSON API cannot pair it back without its install code.
    let bearer = ps.api_token(&ps.password);
    let api = |args: &[&str]| {
        let mut a = vec!["-sk", "-w", "\n%{http_code}", "-H", &bearer];
        a.extend_from_slice(args);
        curl(&a)
    };
    let (code, body) = api(&[&ps.url("/api/settings")]);
    assert_eq!(code, 200, "{body}");
    let mut settings: serde_json::Value = serde_json::from_str(&body).unwrap();
    settings["pairing"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"rf_id": 0x2A3B0001u64, "unit": 100}));
    let (code, body) = api(&[
        "-X",
        "PUT",
        "-H",
        "content-type: application/json",
        "-d",
        &settings.to_string(),
        &ps.url("/api/settings"),
    ]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("install code"), "{body}");
    let right = label_install_code(&ps.text, "pt-lighting");
    // Another device's code (well-formed, right CRC) is not this one's.
    let other = label_install_code(&ps.text, "pt-hvac");
    assert_ne!(right, other);
    let add = |code: &str| {
        ps.submit(
            "/settings",
            "/settings/wireless/add",
            &[("rf_id", "000000002A3B0001"), ("install_code", code)],
        )
    };
    let (code, body) = add(&other);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("install code"), "{body}");
    assert!(body.contains("9 more failure(s) lock"), "{body}");
    // A typing error (bad CRC) is refused with the rule, not counted.
    let mut typo = right.clone();
    typo.replace_range(0..1, if typo.starts_with('0') { "1" } else { "0" });
    let (code, body) = add(&typo);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("CRC"), "{body}");
    // A wrong current password on the Users page counts on the same lockout.
    let (code, body) = ps.submit(
        "/users",
        "/users",
        &[
            ("current", "Not-The-Passw0rd"),
            ("new", "New-Passw0rd"),
            ("confirm", "New-Passw0rd"),
        ],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("8 more failure(s) lock"), "{body}");
    assert_eq!(ps.modbus(100, METER_REG, 2), Err(0x0A), "not paired");
    let csv = ps.audit_csv();
    assert!(
        csv.contains(
            "wireless pairing: the install code given for wireless device 000000002A3B0001 is wrong (1 consecutive)"
        ),
        "{csv}"
    );
    assert!(
        csv.contains("users page: the administrator's current password is wrong (2 consecutive)"),
        "{csv}"
    );
    assert!(
        !csv.contains(&other) && !csv.contains(&right),
        "no code in the log"
    );
    // Eight more wrong codes lock the webpages; the right code is then
    // refused too, until the lock ends.
    for i in 0..8 {
        let (code, body) = add(&other);
        assert_eq!(code, if i == 7 { 403 } else { 400 }, "{i}: {body}");
    }
    let (code, body) = add(&right);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("Try again in"), "{body}");
    assert!(ps.audit_csv().contains("lockout"));
    ps.site.post_json("/api/v1/clock", r#"{"advance_s": 601}"#);
    assert_eq!(ps.login(&ps.password).0, 200);
    let (code, body) = add(&right);
    assert_eq!(code, 200, "{body}");
    ps.site.wait_until(Duration::from_secs(10), || {
        ps.modbus(100, METER_REG, 2).is_ok()
    });
    assert!(ps.audit_csv().contains("device added"));
}

/// Defect 7: nothing a client can fetch from a device names the emulator:
/// every page before and after login with its headers, the JSON API, the
/// certificate (PEM and text), a downloaded backup, the answer to a raw
/// WS-Discovery Probe and Resolve on UDP 3702 and the DPWS metadata
/// (WS-Transfer Get over HTTP on 5357, with headers).
#[test]
fn fidelity_nothing_a_client_fetches_names_the_emulator() {
    let ps = Ps::start(144);
    let mut seen: Vec<(String, String)> = Vec::new();
    for path in ["/", "/login", "/settings", "/users", "/nope", "/api/status"] {
        seen.push((
            format!("GET {path} (no session)"),
            ps.curl(&["-i", &ps.url(path)]).1,
        ));
    }
    assert_eq!(ps.login("Wrong-Passw0rd").0, 401);
    assert_eq!(ps.login(&ps.password).0, 200);
    let pages = [
        "/",
        "/settings",
        "/users",
        "/firmware",
        "/logs",
        "/logs/audit.csv",
        "/backup",
        "/maintenance",
        "/nope",
    ];
    for path in pages {
        seen.push((format!("GET {path}"), ps.curl(&["-i", &ps.url(path)]).1));
    }
    let bearer = ps.api_token(&ps.password);
    for path in ["/api/status", "/api/settings", "/api/audit", "/api/nope"] {
        let text = curl(&["-ski", "-w", "\n%{http_code}", "-H", &bearer, &ps.url(path)]).1;
        seen.push((format!("GET {path} (api)"), text));
    }
    // A downloaded backup file.
    let csrf = ps.csrf("/backup");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.bin");
    assert_eq!(ps.download_backup(&csrf, "Back-up!", &file), 200);
    let backup = std::fs::read(&file).unwrap();
    assert!(backup.len() > 64, "a backup file: {} bytes", backup.len());
    seen.push((
        "backup file".into(),
        String::from_utf8_lossy(&backup).into(),
    ));
    // The certificate: PEM and decoded text.
    let out = tool(
        "sh",
        &[
            "-c",
            &format!(
                "openssl s_client -connect {0}:443 -servername {0} </dev/null 2>/dev/null | openssl x509 -outform PEM -text",
                ps.ip
            ),
        ],
    );
    let cert = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        cert.contains("BEGIN CERTIFICATE") && cert.contains("Subject:"),
        "{cert}"
    );
    seen.push(("certificate".into(), cert));
    // WS-Discovery: a raw Probe and Resolve, unicast to the device.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let probe = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:wsd="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:wsdp="http://schemas.xmlsoap.org/ws/2006/02/devprof"><soap:Header><wsa:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</wsa:To><wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</wsa:Action><wsa:MessageID>urn:uuid:{}</wsa:MessageID></soap:Header><soap:Body><wsd:Probe><wsd:Types>wsdp:Device</wsd:Types></wsd:Probe></soap:Body></soap:Envelope>"#,
        "3f0c5a9e-1b2d-4c6e-8f70-9a1b2c3d4e5f"
    );
    let target = format!("{}:3702", ps.ip);
    let ask = |msg: &str| -> String {
        sock.send_to(msg.as_bytes(), &target).unwrap();
        let mut buf = vec![0u8; 65535];
        let (n, _) = sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no answer from {target}: {e}"));
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let matches = ask(&probe);
    assert!(matches.contains("ProbeMatches"), "{matches}");
    let epr = matches
        .split("<wsa:Address>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or_else(|| panic!("no endpoint reference: {matches}"))
        .to_string();
    let xaddr = matches
        .split("XAddrs>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no XAddrs: {matches}"))
        .to_string();
    seen.push(("ProbeMatches".into(), matches));
    let resolve = probe
        .replace("discovery/Probe<", "discovery/Resolve<")
        .replace(
            "<wsd:Probe><wsd:Types>wsdp:Device</wsd:Types></wsd:Probe>",
            &format!("<wsd:Resolve><wsa:EndpointReference><wsa:Address>{epr}</wsa:Address></wsa:EndpointReference></wsd:Resolve>"),
        )
        .replace("9a1b2c3d4e5f", "9a1b2c3d4e60");
    let resolved = ask(&resolve);
    assert!(resolved.contains("ResolveMatches"), "{resolved}");
    seen.push(("ResolveMatches".into(), resolved));
    let get = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"><s:Header><a:Action>http://schemas.xmlsoap.org/ws/2004/09/transfer/Get</a:Action><a:MessageID>urn:uuid:0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0</a:MessageID><a:To>{epr}</a:To></s:Header><s:Body/></s:Envelope>"#
    );
    assert!(
        xaddr.starts_with(&format!("http://{}:5357/", ps.ip)),
        "{xaddr}"
    );
    let (code, metadata) = curl(&[
        "-si",
        "-w",
        "\n%{http_code}",
        "-H",
        "Content-Type: application/soap+xml",
        "--data-binary",
        &get,
        &xaddr,
    ]);
    assert_eq!(code, 200, "{metadata}");
    assert!(metadata.contains("ThisModel"), "{metadata}");
    seen.push(("DPWS metadata".into(), metadata));
    // Other requests to the metadata port.
    for path in ["/", "/nope"] {
        let url = format!("http://{}:5357{path}", ps.ip);
        seen.push((format!("5357 GET {path}"), curl(&["-si", &url]).1));
    }
    let total: usize = seen.iter().map(|(_, t)| t.len()).sum();
    assert!(total > 20_000, "too little fetched: {total} bytes");
    for (what, text) in &seen {
        let lower = text.to_lowercase();
        if let Some(i) = lower.find("fieldtwin") {
            panic!(
                "{what} names the emulator: ...{}...",
                &text[i.saturating_sub(200).min(i)..(i + 200).min(text.len())]
            );
        }
    }
}

/// Runs mbpoll once; returns the values it printed, or its error text.
fn mbpoll(args: &[&str]) -> Result<Vec<u16>, String> {
    let mut all = vec!["-1", "-o", "2"];
    all.extend_from_slice(args);
    let out = tool("mbpoll", &all);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(text);
    }
    Ok(text
        .lines()
        .filter(|l| l.starts_with('['))
        .filter_map(|l| l.split(':').nth(1))
        .filter_map(|v| v.trim().parse::<i64>().ok())
        .map(|v| v as u16)
        .collect())
}

/// Defect 8: the digital inputs answer on a PAS600L (mbpoll at unit 255,
/// registers 1001+) and not on a model without them; a PAS400 site with a
/// serial device is refused by `site check`, naming the field.
#[test]
fn fidelity_model_matrix_digital_inputs_and_pas400() {
    let text = fast_site_text(146);
    let site = RunningSite::start(&text, &[]);
    let ip = "127.77.146.10";
    // Validity DI1/DI2, mode DI1 (pulse) / DI2 (status).
    let v = mbpoll(&["-a", "255", "-t", "4", "-r", "1001", "-c", "4", ip]).unwrap();
    assert_eq!(v, vec![1, 1, 0, 1]);
    // Logical status of DI2 (the breaker's closed contact): active.
    let v = mbpoll(&["-a", "255", "-t", "4", "-r", "1054", "-c", "1", ip]).unwrap();
    assert_eq!(v, vec![1]);
    // Between the blocks: not a register.
    let e = mbpoll(&["-a", "255", "-t", "4", "-r", "1131", "-c", "1", ip]).unwrap_err();
    assert!(e.to_lowercase().contains("illegal data address"), "{e}");
    drop(site);

    let dir = tempfile::tempdir().unwrap();
    let pas400 = text
        .replacen("model = \"PAS600L\"", "model = \"PAS400\"", 1)
        .replacen(
            "topology = \"separated\"\npbkdf2_iterations = 1000\neth2_ip = \"10.77.147.1\"\neth2_segment = \"ot\"\n",
            "",
            1,
        );
    assert!(!pas400.contains("eth2_ip"), "{pas400}");
    let file = dir.path().join("pas400.toml");
    std::fs::write(&file, &pas400).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fieldtwin"))
        .args(["site", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "PAS400 with a serial meter accepted");
    assert!(
        err.contains("device[0].panel_server.serial[0]: PAS400 has no Modbus-SL port"),
        "{err}"
    );
    // A bad install code in the site file is refused, naming the field.
    let bad = text.replacen(
        "rf_id = \"0x000000002A3B0001\"",
        "rf_id = \"0x000000002A3B0001\"\ninstall_code = \"83FED3407A939723A5C639B26916D505C3B6\"",
        1,
    );
    std::fs::write(&file, &bad).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fieldtwin"))
        .args(["site", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("device[0].panel_server.wireless[0].install_code"),
        "{err}"
    );
}
