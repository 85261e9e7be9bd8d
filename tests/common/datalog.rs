//! The Panel Server's published data-log CSV files read back (whatever
//! carried them: HTTPS in ps_datalog, SFTP in ps_sftp) and the checks of
//! their rows against what the device says it logged; and what the
//! receivers of those tests share: a test CA with a server certificate
//! signed by it (openssl), and the Python that runs them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::{RunningSite, openssl};

/// The `yyyyMMddHHmmssSSS` publication time in a file name (`.csv`, or
/// `.dup` for a name received twice).
pub fn publication_stamp(name: &str) -> Option<&str> {
    name.trim_end_matches(".dup")
        .trim_end_matches(".csv")
        .rsplit('_')
        .find(|p| p.len() == 17 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks one published file `name` (its CSV layout: header rows, logging
/// interval, row count, one day, the device in the name) and adds its data
/// rows to `rows` under the device name. Returns the fields of row 2.
pub fn add_file(rows: &mut BTreeMap<String, Vec<String>>, name: &str, text: &str) -> Vec<String> {
    let n = name;
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert!(
        lines[0].starts_with("Gateway Name,Gateway SN,Gateway IP Address,Gateway MAC Address,Device Name,Device Local ID,Device Type ID,Device Type Name,Logging Interval,Historical Intervals"),
        "{n}: row 1 {:?}",
        lines[0]
    );
    let row2: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(row2[8], "10", "{n}: logging interval");
    assert!(lines[3].starts_with(",,,Topic ID1"), "{n}: {:?}", lines[3]);
    assert!(
        lines[6].starts_with("Error,UTC Offset (minutes),Local Time Stamp,"),
        "{n}"
    );
    let data: Vec<&str> = lines[7..]
        .iter()
        .copied()
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(row2[9], data.len().to_string(), "{n}: historical intervals");
    let days: std::collections::BTreeSet<&str> = data
        .iter()
        .map(|l| &l.split(',').nth(2).unwrap()[..10])
        .collect();
    assert_eq!(days.len(), 1, "{n}: one day per file");
    let device = row2[4].to_string();
    assert!(
        n.contains(&format!("_{device}_")),
        "{n} does not name {device}"
    );
    rows.entry(device)
        .or_default()
        .extend(data.iter().map(|l| l.to_string()));
    row2.iter().map(|f| f.to_string()).collect()
}

/// The data-log state of `ps1` (the dashboard's details).
pub fn stats(site: &RunningSite) -> serde_json::Value {
    site.get_json("/api/v1/devices/ps1")["details"]["extra"]["datalog"].clone()
}

/// Publications made by `ps1` (0 before its log is up).
pub fn publications(site: &RunningSite) -> u64 {
    stats(site)["stats"]["publications"].as_u64().unwrap_or(0)
}

/// Publications of `ps1` that failed.
pub fn failures(site: &RunningSite) -> u64 {
    stats(site)["stats"]["failures"].as_u64().unwrap_or(0)
}

/// Six hours with the receiver away: each hourly publication fails, and a
/// power cycle after the third leaves the unpublished log in NV memory as
/// it was. Returns the failure count before the first hour.
pub fn six_failed_hours_with_a_power_cycle(site: &RunningSite) -> u64 {
    let failed0 = failures(site);
    for h in 1..=6u64 {
        advance(site, 3600);
        site.wait_until(Duration::from_secs(30), || failures(site) == failed0 + h);
        if h == 3 {
            let before = stats(site)["devices"].clone();
            site.post_json("/api/v1/devices/ps1/power", r#"{"action":"cycle"}"#);
            site.wait_until(Duration::from_secs(30), || {
                site.get_json("/api/v1/devices/ps1")["power"] == "on"
            });
            assert_eq!(
                stats(site)["devices"],
                before,
                "the log survives the power cycle"
            );
        }
    }
    failed0
}

/// Moves the site's clock `secs` seconds on.
pub fn advance(site: &RunningSite, secs: u64) {
    let r = site.post_json("/api/v1/clock", &format!("{{\"advance_s\": {secs}}}"));
    assert!(r.is_object(), "advance: {r}");
}

/// Every device's rows: as many as it logged, each once, 10 minutes
/// apart, flags and values well formed. Returns the total.
pub fn check_rows(site: &RunningSite, rows: &BTreeMap<String, Vec<String>>) -> u64 {
    let st = stats(site);
    let mut total = 0;
    for (dev, c) in st["devices"].as_object().unwrap() {
        let head = c["head"].as_u64().unwrap();
        let got = rows.get(dev).map_or(&[][..], |v| v.as_slice());
        assert_eq!(got.len() as u64, head, "{dev}: rows received vs logged");
        assert_eq!(c["published"].as_u64(), Some(head), "{dev}: all published");
        let times: Vec<chrono::NaiveDateTime> = got
            .iter()
            .map(|l| {
                chrono::NaiveDateTime::parse_from_str(
                    l.split(',').nth(2).unwrap(),
                    "%Y-%m-%d %H:%M:%S",
                )
                .unwrap()
            })
            .collect();
        for w in times.windows(2) {
            let d = (w[1] - w[0]).num_seconds();
            assert!(
                (599..=601).contains(&d),
                "{dev}: gap or duplicate between {w:?}"
            );
        }
        for l in got {
            let f: Vec<&str> = l.split(',').collect();
            assert!(f[0] == "0" || f[0] == "19", "{dev}: error flag {l}");
            if f[0] == "0" {
                assert!(
                    f[3..].iter().all(|v| v.parse::<f64>().is_ok()),
                    "{dev}: {l}"
                );
            }
        }
        total += head;
    }
    total
}

/// The project venv's Python (`.venv/bin/python`), else `python3`.
pub fn python() -> String {
    let venv = format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR"));
    if Path::new(&venv).exists() {
        venv
    } else {
        "python3".into()
    }
}

/// Makes, in `dir`, a test CA (`ca.pem`, `ca.key`; P-256, 30 days) and a
/// server certificate signed by it, `NAME.pem` with its key `NAME.key`
/// (CN 127.0.0.1, subjectAltName `IP:ip`, serverAuth).
pub fn make_certs(dir: &Path, name: &str, ip: &str) {
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    // `openssl req` with a new P-256 key written to `key`.
    let new_key = |x509: bool, key: &str, rest: &[&str]| {
        let mut args = vec!["req"];
        if x509 {
            args.push("-x509");
        }
        args.extend([
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key,
        ]);
        args.extend(rest);
        openssl(dir, &args);
    };
    new_key(
        true,
        "ca.key",
        &[
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=fieldtwin test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    new_key(false, &key, &["-out", &csr, "-subj", "/CN=127.0.0.1"]);
    std::fs::write(
        dir.join("ext.cnf"),
        format!("subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "30",
            "-extfile",
            "ext.cnf",
        ],
    );
}
