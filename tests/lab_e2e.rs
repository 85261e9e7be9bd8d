//! The "in the TAP lab" checks of the gateway and security issues: the
//! default site runs in TAP mode with its TAP in a namespace this test
//! creates, and real tools run inside it — nmap sees exactly the Panel
//! Server's three ports, curl negotiates TLS 1.2 and openssl's TLS 1.1 is
//! refused, mbpoll and pymodbus read the Panel Server, a PowerTag and the
//! serial meter through the gateway, a WS-Discovery multicast probe finds
//! the Panel Server. Site octet 80.

mod common;

use common::netns::{Netns, root, start, text};
use common::site_text;

/// Reads `count` float registers from register `reg` of `unit` with mbpoll
/// (big-endian word order, as the Modbus file says).
fn floats(ns: &Netns, ip: &str, unit: &str, reg: &str, count: &str) -> Vec<f32> {
    let out = ns.run(
        "mbpoll",
        &[
            "-1", "-m", "tcp", "-B", "-a", unit, "-t", "4:float", "-r", reg, "-c", count, ip,
        ],
    );
    let t = text(&out);
    let values: Vec<f32> = t
        .lines()
        .filter(|l| l.starts_with('['))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse().ok())
        .collect();
    assert!(!values.is_empty(), "mbpoll read nothing: {t}");
    values
}

#[test]
fn gateway_and_security_checks_in_the_tap_lab() {
    if !root() {
        return;
    }
    let ns = Netns::new("lab");
    let _site = start(&ns, &site_text(80), &[]);
    let ip = "10.77.80.10";

    // nmap -p- lists exactly 443, 502 and 5357.
    let out = ns.run("nmap", &["-n", "-Pn", "-p-", "-T4", ip]);
    let t = text(&out);
    let open: Vec<&str> = t
        .lines()
        .filter(|l| l.contains("/tcp") && l.contains(" open "))
        .filter_map(|l| l.split('/').next())
        .collect();
    assert_eq!(open, vec!["443", "502", "5357"], "{t}");

    // TLS 1.2 with curl; TLS 1.1 refused by openssl.
    let out = ns.run(
        "curl",
        &[
            "-k",
            "-v",
            "-s",
            "-o",
            "/dev/null",
            &format!("https://{ip}/"),
        ],
    );
    let t = text(&out);
    assert!(t.contains("SSL connection using TLSv1.2"), "{t}");
    let out = ns.run(
        "openssl",
        &["s_client", "-tls1_1", "-connect", &format!("{ip}:443")],
    );
    assert!(!out.status.success(), "TLS 1.1 must fail: {}", text(&out));

    // mbpoll: identification at 255, PowerTag power at unit 100, serial
    // meter voltages at its own unit id 1, all plausible.
    let out = ns.run(
        "mbpoll",
        &[
            "-1", "-m", "tcp", "-a", "255", "-t", "4:hex", "-r", "61", "-c", "4", ip,
        ],
    );
    let t = text(&out);
    assert!(t.contains("0x5041") && t.contains("0x5336"), "PAS600L: {t}");
    let p = floats(&ns, ip, "100", "3060", "1")[0];
    assert!((0.0..5_000.0).contains(&p), "PowerTag total power {p} W");
    let v = floats(&ns, ip, "1", "3028", "3");
    assert!(
        v.iter().all(|v| (200.0..260.0).contains(v)),
        "serial meter V L-N {v:?}"
    );
    // The PowerTag's voltages too (its sheet: V A-N at 3028).
    let v = floats(&ns, ip, "100", "3028", "1");
    assert!((200.0..260.0).contains(&v[0]), "PowerTag V A-N {v:?}");

    // A real WS-Discovery client's multicast Probe finds the Panel Server,
    // resolves it and reads its DPWS metadata.
    let python = std::env::var("FIELDTWIN_PYTHON")
        .unwrap_or_else(|_| format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR")));
    let probe = format!("{}/tests/security/wsd_probe.py", env!("CARGO_MANIFEST_DIR"));
    let out = ns.run(
        &python,
        &[&probe, "239.255.255.250", "--multicast-if", "10.77.80.1"],
    );
    let t = text(&out);
    let found: serde_json::Value = serde_json::from_str(t.trim()).expect(&t);
    let xaddr = found["matches"][0]["xaddrs"][0]
        .as_str()
        .unwrap_or_default();
    assert!(xaddr.contains("10.77.80.10:5357"), "{t}");
    assert!(
        found["metadata"]
            .as_str()
            .unwrap_or_default()
            .contains("PAS600L"),
        "{t}"
    );

    // pymodbus reads the same through the gateway.
    let script = format!("{}/tests/gateway_client.py", env!("CARGO_MANIFEST_DIR"));
    let out = ns.run(
        &python,
        &[
            &script,
            ip,
            "502",
            "read:255:61:4",
            "read:100:3060:2",
            "read:1:3028:2",
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "pymodbus: {t}");
    let lines: Vec<serde_json::Value> = t
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines.len(), 3, "{t}");
    assert_eq!(lines[0]["words"][0], 0x5041, "{t}");
    let word = |v: &serde_json::Value, i: usize| v["words"][i].as_u64().unwrap() as u32;
    let p = f32::from_bits((word(&lines[1], 0) << 16) | word(&lines[1], 1));
    assert!((0.0..5_000.0).contains(&p), "pymodbus PowerTag power {p}");
    let v = f32::from_bits((word(&lines[2], 0) << 16) | word(&lines[2], 1));
    assert!(
        (200.0..260.0).contains(&v),
        "pymodbus serial meter voltage {v}"
    );
}

/// Issue 8 defect 9: `lab up` run inside another network namespace says so
/// and creates nothing.
#[test]
fn lab_up_inside_another_namespace_says_so() {
    if !root() {
        return;
    }
    let ns = Netns::new("labin");
    let inner = format!("ftnet-labinner-{}", std::process::id());
    let out = ns.run(
        env!("CARGO_BIN_EXE_fieldtwin"),
        &["lab", "up", "--name", &inner],
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "runs inside the network namespace \"{}\"",
            ns.name
        )),
        "{t}"
    );
    assert!(t.contains("Leave this namespace"), "{t}");
    let list = common::tool("ip", &["netns", "list"]);
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&inner),
        "no namespace made"
    );
}
