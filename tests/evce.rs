//! Issue 11 items 6-8, end to end against the real clients, in TAP mode
//! inside a network namespace of the test's own (site octets 210-211):
//! the EV Charging Expert's HTTPS pages (TLS 1.2 only, self-signed X.509v3,
//! the forced change of the factory password, the audit log), SSH off in
//! factory settings and switched on from the pages (nmap, OpenSSH's `ssh`
//! with the support account), SSDP (`gssdp-discover` lists the EVCE and
//! both stations; the EVCE's own discovery feeds its Stations page, where
//! enrollment needs the administrator), and the factory reset (accounts,
//! enrolled stations and SSH back to factory settings).

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::netns::{Netns, root, start, text};
use common::site_text;

const A: u8 = 210;

/// A browser (curl with a cookie jar) inside the namespace.
struct Browser<'a> {
    ns: &'a Netns,
    ip: String,
    jar: tempfile::NamedTempFile,
}

impl<'a> Browser<'a> {
    fn new(ns: &'a Netns, ip: &str) -> Self {
        Self {
            ns,
            ip: ip.to_string(),
            jar: tempfile::NamedTempFile::new().unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{}", self.ip, path)
    }

    /// curl -k with the jar; returns (status, final URL, body).
    fn curl(&self, args: &[&str]) -> (u16, String, String) {
        let jar = self.jar.path().to_str().unwrap();
        let mut a = vec![
            "-sk",
            "--max-time",
            "60",
            "-b",
            jar,
            "-c",
            jar,
            "-w",
            "\n%{http_code} %{url_effective}",
        ];
        a.extend_from_slice(args);
        let out = self.ns.run("curl", &a);
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, tail) = s.rsplit_once('\n').unwrap_or(("", &s));
        let mut t = tail.split_whitespace();
        let code = t.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        let url = t.next().unwrap_or_default().to_string();
        (code, url, body.to_string())
    }

    fn get(&self, path: &str) -> (u16, String, String) {
        self.curl(&["-L", &self.url(path)])
    }

    fn login(&self, user: &str, pw: &str) -> (u16, String, String) {
        self.curl(&[
            "-L",
            "--data-urlencode",
            &format!("username={user}"),
            "--data-urlencode",
            &format!("password={pw}"),
            &self.url("/login"),
        ])
    }

    fn csrf(&self, path: &str) -> String {
        let (code, _, body) = self.get(path);
        assert_eq!(code, 200, "{path}: {body}");
        body.split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("no csrf on {path}: {body}"))
            .to_string()
    }

    /// Posts a form of `page` (with its CSRF token) to `action`.
    fn submit(&self, page: &str, action: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let csrf = self.csrf(page);
        let mut args: Vec<String> = vec!["--data-urlencode".into(), format!("csrf={csrf}")];
        for (k, v) in fields {
            args.push("--data-urlencode".into());
            args.push(format!("{k}={v}"));
        }
        args.push(self.url(action));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, body) = self.curl(&a);
        (code, body)
    }
}

/// The value mbpoll printed for register `reg` (`[reg]: value`).
fn register(mbpoll: &str, reg: u16) -> Option<u16> {
    mbpoll.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(&format!("[{reg}]:"))?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn nmap_22(ns: &Netns, ip: &str) -> String {
    let out = ns.run("nmap", &["-Pn", "-n", "-p", "22", ip]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    t
}

fn ssh(ns: &Netns, user: &str, pw: &str, ip: &str, cmd: &str) -> Output {
    ns.run(
        "sshpass",
        &[
            "-p",
            pw,
            "ssh",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "ConnectTimeout=20",
            &format!("{user}@{ip}"),
            cmd,
        ],
    )
}

fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<String>) {
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < timeout {
        match f() {
            None => return,
            Some(why) => last = Some(why),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "{what} not reached in {timeout:?}: {}",
        last.unwrap_or_default()
    );
}

#[test]
fn evce_web_ssh_ssdp_enrollment_and_factory_reset() {
    if !root() {
        return;
    }
    let ns = Netns::named(&format!("ft-evce-{}", std::process::id()));
    let site = start(&ns, &site_text(A), &[]);
    site.wait_until(Duration::from_secs(30), || {
        site.get_json("/api/v1/devices/evce1")["power"] == "on"
    });
    let ip = format!("10.77.{A}.20");
    let b = Browser::new(&ns, &ip);

    // TLS 1.2 only, with a self-signed X.509v3 certificate.
    let tls = |v: &str| {
        ns.run(
            "sh",
            &[
                "-c",
                &format!(
                    "echo | timeout 60 openssl s_client -connect {ip}:443 {v} 2>&1 | openssl x509 -noout -text 2>&1"
                ),
            ],
        )
    };
    let t12 = text(&tls("-tls1_2"));
    assert!(t12.contains("Version: 3 (0x2)"), "{t12}");
    let issuer = t12
        .lines()
        .find(|l| l.trim().starts_with("Issuer:"))
        .unwrap();
    let subject = t12
        .lines()
        .find(|l| l.trim().starts_with("Subject:"))
        .unwrap();
    assert_eq!(
        issuer.trim().trim_start_matches("Issuer:"),
        subject.trim().trim_start_matches("Subject:"),
        "self-signed"
    );
    assert!(t12.contains(&format!("IP Address:{ip}")), "{t12}");
    assert!(
        !text(&tls("-tls1_3")).contains("BEGIN") && !text(&tls("-tls1_3")).contains("Version: 3")
    );

    // SSH is closed in factory settings.
    let scan = nmap_22(&ns, &ip);
    assert!(scan.contains("22/tcp closed"), "{scan}");

    // The Modbus TCP server for a BMS/EMS: the map's header and the first
    // station slot (box id "cs1", offline until the OCPP side reports it).
    let out = ns.run(
        "mbpoll",
        &[
            "-1", "-a", "1", "-0", "-r", "0", "-c", "4", "-t", "4", "-o", "3", &ip,
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert_eq!(register(&t, 0), Some(1), "map version: {t}");
    assert_eq!(register(&t, 1), Some(2), "two enrolled stations: {t}");
    let out = ns.run(
        "mbpoll",
        &[
            "-1", "-a", "1", "-0", "-r", "100", "-c", "2", "-t", "4", "-o", "3", &ip,
        ],
    );
    let t = text(&out);
    assert_eq!(register(&t, 100), Some(u16::from_be_bytes(*b"cs")), "{t}");
    assert_eq!(
        register(&t, 101),
        Some(u16::from_be_bytes([b'1', 0])),
        "{t}"
    );

    // The first login goes to the forced password change; every other page
    // and the API send there until the factory password is replaced.
    let (code, url, body) = b.login("admin", "admin");
    assert_eq!(code, 200, "{body}");
    assert!(
        url.ends_with("/password") && body.contains("id=\"forced\""),
        "{url} {body}"
    );
    for page in ["/", "/stations", "/maintenance", "/logs", "/firmware"] {
        let (_, url, _) = b.get(page);
        assert!(url.ends_with("/password"), "{page} -> {url}");
    }
    // The JSON API says the same: a token, but nothing until the change.
    let (code, _, body) = b.curl(&[
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"username":"admin","password":"admin"}"#,
        &b.url("/api/login"),
    ]);
    assert_eq!(code, 200, "{body}");
    let login: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(login["must_change_password"], true, "{body}");
    let bearer = format!("Authorization: Bearer {}", login["token"].as_str().unwrap());
    let (code, _, body) = b.curl(&["-H", &bearer, &b.url("/api/status")]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("factory password must be changed"), "{body}");
    let (code, _) = b.submit(
        "/password",
        "/password",
        &[("current", "admin"), ("new", "short"), ("confirm", "short")],
    );
    assert_eq!(code, 400, "a weak password is refused");
    let admin_pw = "Evce-Admin-2026";
    let (code, body) = b.submit(
        "/password",
        "/password",
        &[
            ("current", "admin"),
            ("new", admin_pw),
            ("confirm", admin_pw),
        ],
    );
    assert_eq!(code, 200, "{body}");
    let (code, url, body) = b.get("/");
    assert_eq!((code, url.ends_with('/')), (200, true), "{url} {body}");
    assert!(body.contains("EV Charging Expert"), "{body}");

    // The API token works now; an unsigned firmware image is refused and
    // audited, nothing changes.
    let (code, _, body) = b.curl(&["-H", &bearer, &b.url("/api/status")]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"firmware\":\"005.002.000\""), "{body}");
    let (code, _, body) = b.curl(&[
        "-H",
        &bearer,
        "--data-binary",
        "not a firmware image",
        &b.url("/api/firmware"),
    ]);
    assert_eq!(code, 400, "{body}");

    // A wrong login is audited (invalid login attempts).
    let other = Browser::new(&ns, &ip);
    let (code, _, _) = other.login("admin", "admin");
    assert_eq!(code, 401, "the factory password is gone");

    // The support account gets a password; SSH is switched on.
    let support_pw = "Support-Diag-7";
    let (code, body) = b.submit(
        "/maintenance",
        "/maintenance/support",
        &[
            ("current", admin_pw),
            ("password", support_pw),
            ("confirm", support_pw),
        ],
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("id=\"support-state\">enabled"), "{body}");
    let (code, body) = b.submit("/maintenance", "/maintenance/ssh", &[("ssh", "on")]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("id=\"ssh-state\">enabled"), "{body}");
    let scan = nmap_22(&ns, &ip);
    assert!(scan.contains("22/tcp open"), "{scan}");

    // OpenSSH logs in with the support account; the administrator and a
    // wrong password are refused.
    let out = ssh(&ns, "support", support_pw, &ip, "version");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("EV Charging Expert firmware"),
        "{}",
        text(&out)
    );
    let out = ssh(&ns, "support", support_pw, &ip, "whoami");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "support");
    assert!(
        !ssh(&ns, "support", "Wrong-Pass-1", &ip, "version")
            .status
            .success()
    );
    assert!(!ssh(&ns, "admin", admin_pw, &ip, "version").status.success());

    // The audit log records the whole story.
    let (code, _, log) = b.get("/logs");
    assert_eq!(code, 200);
    for needle in [
        "first boot with factory settings",
        "webpages: administrator password changed",
        "wrong user name or password",
        "webpages: SSH enabled (TCP 22 open)",
        "support user logged in",
        "may not log in over SSH",
        "api: image rejected",
    ] {
        assert!(log.contains(needle), "audit log lacks {needle:?}:\n{log}");
    }

    // USB keyboard + HDMI display: a local console login prompt, checked
    // by the same accounts and lockout, audited.
    let t = site.post_json(
        "/api/v1/commands",
        &format!(
            r#"{{"command":"usb_console","device":"evce1","lines":["","admin","wrong","support","{support_pw}","whoami","exit"]}}"#
        ),
    );
    let answers: Vec<String> = t["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["answer"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(answers[0], "evce1 login: ", "{t}");
    assert_eq!(answers[1], "Password: ", "{t}");
    assert!(answers[2].starts_with("Login incorrect"), "{t}");
    assert!(answers[4].contains("local console (support)"), "{t}");
    assert!(answers[5].starts_with("support\n"), "{t}");
    assert!(answers[6].ends_with("evce1 login: "), "{t}");
    assert_eq!(
        t["exchanges"][4]["sent"], "********",
        "the password is not echoed"
    );

    // SD card: read at boot only if it carries a signed image.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, b"#!/bin/sh\nnc -l -p 4444 -e /bin/sh\n").unwrap();
    let card = |path: &std::path::Path| {
        site.post_json(
            "/api/v1/commands",
            &format!(
                r#"{{"command":"sd_card","device":"evce1","image":"{}"}}"#,
                path.display()
            ),
        )
    };
    let cycle = || {
        site.post_json(
            "/api/v1/commands",
            r#"{"command":"power","device":"evce1","action":"cycle"}"#,
        )
    };
    let t = card(&junk);
    assert!(t.to_string().contains("read at the next boot"), "{t}");
    cycle();
    let payload = dir.path().join("payload");
    std::fs::write(&payload, b"evce firmware payload").unwrap();
    let img = dir.path().join("evce.img");
    common::sign_firmware(&payload, "005.003.000", Some("EV Charging Expert"), &img);
    card(&img);
    cycle();
    eventually(
        "the EVCE back with the SD card's firmware",
        Duration::from_secs(60),
        || {
            let (code, _, body) = b.login("admin", admin_pw);
            (!(code == 200 && body.contains("005.003.000"))).then(|| format!("{code} {body}"))
        },
    );
    let (_, _, log) = b.get("/logs");
    assert!(
        log.contains("SD card ignored at boot: not a signed EV Charging Expert image"),
        "{log}"
    );
    assert!(
        log.contains("SD card: signed firmware 005.003.000 installed at boot"),
        "{log}"
    );
    assert!(
        log.contains("local console: support user logged in"),
        "{log}"
    );
    site.post_json(
        "/api/v1/commands",
        r#"{"command":"sd_card","device":"evce1"}"#,
    );
    let scan = nmap_22(&ns, &ip);
    assert!(
        scan.contains("22/tcp open"),
        "SSH stays enabled across a reboot: {scan}"
    );

    // SSDP: gssdp-discover lists the EVCE and both stations.
    let out = ns.run(
        "gssdp-discover",
        &["-i", "ftlab0", "-n", "4", "-m", "available"],
    );
    let found = text(&out);
    assert!(
        found.contains("urn:schneider-electric-com:device:EVChargingExpert:1")
            && found.contains(&format!("https://{ip}/")),
        "{found}"
    );
    for cs in [21, 22] {
        assert!(
            found.contains(&format!("http://10.77.{A}.{cs}/")),
            "station .{cs} not listed:\n{found}"
        );
    }
    assert!(
        found.contains("urn:schneider-electric-com:device:EVChargingStation:1"),
        "{found}"
    );

    // The EVCE discovered both stations; the site's are enrolled
    // (commissioning). Removing and enrolling again are the
    // administrator's acts, audited; only a discovered station enrolls.
    eventually("both stations discovered", Duration::from_secs(75), || {
        let (_, _, p) = b.get("/stations");
        let d = p.split("id=\"discovered\"").nth(1).unwrap_or_default();
        let d = d.split("</table>").next().unwrap_or_default();
        (!(d.contains(&format!("10.77.{A}.21")) && d.contains(&format!("10.77.{A}.22"))))
            .then(|| p.clone())
    });
    let (code, body) = b.submit("/stations", "/stations/remove", &[("box_id", "cs2")]);
    assert_eq!(code, 200, "{body}");
    let enrolled = |p: &str| {
        p.split("id=\"enrolled\"")
            .nth(1)
            .unwrap_or_default()
            .split("</table>")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        !enrolled(&body).contains("cs2") && enrolled(&body).contains("cs1"),
        "{body}"
    );
    let (code, body) = b.submit(
        "/stations",
        "/stations/enroll",
        &[("box_id", "cs9"), ("ip", &format!("10.77.{A}.99"))],
    );
    assert_eq!(code, 400, "only discovered stations enroll: {body}");
    let (code, body) = b.submit(
        "/stations",
        "/stations/enroll",
        &[("box_id", "cs2"), ("ip", &format!("10.77.{A}.22"))],
    );
    assert_eq!(code, 200, "{body}");
    assert!(enrolled(&body).contains("cs2"), "{body}");
    let (_, _, log) = b.get("/logs");
    assert!(log.contains("webpages: station cs2 removed"), "{log}");
    assert!(
        log.contains(&format!("webpages: station cs2 at 10.77.{A}.22 enrolled")),
        "{log}"
    );

    // Factory reset from the pages: accounts, enrolled stations and the
    // SSH setting are erased (badges and transaction history with them:
    // everything but the firmware and the commissioning flag).
    let (code, body) = b.submit("/maintenance", "/maintenance/factory-reset", &[]);
    assert_eq!(code, 200, "{body}");
    eventually("factory reset done", Duration::from_secs(60), || {
        let fresh = Browser::new(&ns, &ip);
        let (code, url, body) = fresh.login("admin", "admin");
        (!(code == 200 && url.ends_with("/password"))).then(|| format!("{code} {url} {body}"))
    });
    let scan = nmap_22(&ns, &ip);
    assert!(scan.contains("22/tcp closed"), "SSH off again: {scan}");
    let fresh = Browser::new(&ns, &ip);
    let (code, _, _) = fresh.login("admin", admin_pw);
    assert_eq!(code, 401, "the changed password is gone");
    let (_, url, _) = fresh.login("admin", "admin");
    assert!(
        url.ends_with("/password"),
        "the first login forces a change again"
    );
    let pw2 = "Evce-Admin-2027";
    let (code, body) = fresh.submit(
        "/password",
        "/password",
        &[("current", "admin"), ("new", pw2), ("confirm", pw2)],
    );
    assert_eq!(code, 200, "{body}");
    let (_, _, p) = fresh.get("/stations");
    let e = enrolled(&p);
    assert!(
        !e.contains("cs1") && !e.contains("cs2"),
        "no station enrolled: {p}"
    );
    let (_, _, log) = fresh.get("/logs");
    assert!(log.contains("factory reset from the webpages"), "{log}");
    assert!(
        !log.contains("SSH enabled"),
        "the old audit log is erased: {log}"
    );
    assert!(site.stop().success());
}
