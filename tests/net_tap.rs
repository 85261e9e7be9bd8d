//! End-to-end tests of TAP mode (issues 3 and 15): the real `fieldtwin run --tap`
//! with its TAP in a network namespace that each test creates and removes,
//! reached by real tools run inside it (ping, mbpoll, ss, tshark, python3
//! sockets). Nothing leaves the namespace. Site octets 60-79 (see
//! tests/common/mod.rs).

mod common;

use std::process::Output;
use std::time::Duration;

use common::netns::{Netns, root, start, text};
use common::{site_text, tool};

/// Loss in percent from `ping -q` output.
fn loss(o: &Output) -> f64 {
    let t = text(o);
    let l = t
        .split(',')
        .find(|p| p.contains("packet loss"))
        .unwrap_or_else(|| panic!("no loss figure in ping output: {t}"));
    l.trim()
        .trim_end_matches("packet loss")
        .trim()
        .trim_end_matches('%')
        .parse()
        .unwrap_or_else(|_| panic!("cannot read loss in {l:?}"))
}

#[test]
fn ping_mbpoll_syn_burst_probes_and_time_wait() {
    if !root() {
        return;
    }
    let ns = Netns::new("basic");
    let site = start(&ns, &site_text(60), &[]);
    let ps = "10.77.60.10";

    let p = ns.ping(ps, 3, "0.2");
    assert!(p.status.success() && loss(&p) == 0.0, "ping: {}", text(&p));

    let m = ns.mbpoll(ps);
    assert!(m.status.success(), "mbpoll: {}", text(&m));
    assert!(
        text(&m).contains("[11]:"),
        "mbpoll read nothing: {}",
        text(&m)
    );

    // 64 clients connect at the same instant; all must be established.
    let burst = format!(
        r#"
import socket, select, time
ss = []
for i in range(64):
    s = socket.socket(); s.setblocking(False)
    try: s.connect(("{ps}", 502))
    except BlockingIOError: pass
    ss.append(s)
deadline = time.time() + 10
pending = list(ss)
while pending and time.time() < deadline:
    _, w, _ = select.select([], pending, [], 1)
    for s in w: pending.remove(s)
ok = sum(1 for s in ss if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and s not in pending)
# Each connection also answers a Modbus request (FC3, unit 255, address 10).
answered = 0
for i, s in enumerate(ss):
    s.setblocking(True); s.settimeout(5)
    s.sendall(bytes([0, i, 0, 0, 0, 6, 255, 3, 0, 10, 0, 1]))
    r = s.recv(64)
    if len(r) >= 9 and r[7] == 3: answered += 1
print("connected", ok, "answered", answered)
"#
    );
    let b = ns.python(&burst);
    assert!(
        text(&b).contains("connected 64 answered 64"),
        "SYN burst: {}",
        text(&b)
    );

    // 500 connect-and-close probes, then Modbus still answers.
    let probes = format!(
        r#"
import socket
for i in range(500):
    s = socket.create_connection(("{ps}", 502), timeout=5)
    s.close()
print("probes done")
"#
    );
    let pr = ns.python(&probes);
    assert!(text(&pr).contains("probes done"), "probes: {}", text(&pr));
    let m = ns.mbpoll(ps);
    assert!(
        m.status.success() && text(&m).contains("[11]:"),
        "mbpoll after probes: {}",
        text(&m)
    );

    // The client closed first: its sockets end in TIME_WAIT, none hang in
    // FIN_WAIT2 (the device closed its side with FIN).
    std::thread::sleep(Duration::from_millis(500));
    let tw = ns.run("ss", &["-tanH", "state", "time-wait", "dst", ps]);
    let fw2 = ns.run("ss", &["-tanH", "state", "fin-wait-2", "dst", ps]);
    assert!(
        text(&tw).contains(&format!("{ps}:502")),
        "no TIME_WAIT socket: {}",
        text(&tw)
    );
    assert!(
        text(&fw2).trim().is_empty(),
        "sockets stuck in FIN_WAIT2: {}",
        text(&fw2)
    );
    let st = site.stop();
    assert!(st.success(), "fieldtwin exited with {st:?}");
}

/// The OT segment of the site (10.77.A+1.0/24), made reachable on-link from
/// the namespace so that only the switch decides.
fn route_ot(ns: &Netns, a: u8) {
    let out = tool(
        "ip",
        &[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("10.77.{}.2/24", a + 1),
            "dev",
            "ftlab0",
        ],
    );
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn separated_topology_hides_the_ot_segment() {
    if !root() {
        return;
    }
    let ns = Netns::new("sep");
    let site = start(&ns, &site_text(62), &[]);
    route_ot(&ns, 62);
    // The IT side answers, the OT meter and the Panel Server's ETH2 do not.
    let p = ns.ping("10.77.62.10", 2, "0.2");
    assert_eq!(loss(&p), 0.0, "{}", text(&p));
    // A 3000-byte echo is fragmented both ways (IPv4 reassembly on the device).
    let big = ns.run(
        "ping",
        &[
            "-n",
            "-q",
            "-c",
            "2",
            "-s",
            "3000",
            "-W",
            "2",
            "10.77.62.10",
        ],
    );
    assert_eq!(loss(&big), 0.0, "fragmented ping: {}", text(&big));
    for ot in ["10.77.63.11", "10.77.63.1"] {
        let p = ns.ping(ot, 3, "0.2");
        assert!(
            !p.status.success() && loss(&p) == 100.0,
            "{ot} reachable: {}",
            text(&p)
        );
    }
    drop(site);
}

#[test]
fn switched_topology_reaches_the_ot_device() {
    if !root() {
        return;
    }
    let ns = Netns::new("sw");
    let text_site = site_text(64)
        .replace("topology = \"separated\"", "topology = \"switched\"")
        .lines()
        .filter(|l| !l.starts_with("eth2_ip") && !l.starts_with("eth2_segment"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text_site.contains("topology = \"switched\""));
    let site = start(&ns, &text_site, &[]);
    route_ot(&ns, 64);
    let p = ns.ping("10.77.65.11", 3, "0.2");
    assert!(
        p.status.success() && loss(&p) == 0.0,
        "OT meter unreachable: {}",
        text(&p)
    );
    drop(site);
}

#[test]
fn pcap_shows_modbus_frames_in_tshark() {
    if !root() {
        return;
    }
    let ns = Netns::new("pcap");
    let dir = tempfile::tempdir().unwrap();
    let pcap_dir = dir.path().join("cap");
    let site = start(&ns, &site_text(66), &["--pcap", pcap_dir.to_str().unwrap()]);
    let m = ns.mbpoll("10.77.66.10");
    assert!(m.status.success(), "mbpoll: {}", text(&m));
    let st = site.stop();
    assert!(st.success());
    let lan = pcap_dir.join("lan.pcap");
    assert!(pcap_dir.join("ot.pcap").exists(), "one capture per segment");
    let out = tool("tshark", &["-r", lan.to_str().unwrap(), "-Y", "mbtcp"]);
    let t = text(&out);
    assert!(out.status.success(), "tshark: {t}");
    assert!(
        t.contains("Modbus/TCP") && t.contains("Read Holding Registers"),
        "no Modbus frames in the capture: {t}"
    );
}

#[test]
fn loss_fault_loses_pings_and_clearing_restores() {
    if !root() {
        return;
    }
    let ns = Netns::new("fault");
    let site = start(&ns, &site_text(68), &[]);
    let ps = "10.77.68.10";
    assert_eq!(loss(&ns.ping(ps, 3, "0.2")), 0.0);
    let r = site.post_json("/api/v1/links/ps1", r#"{"loss_pct": 20}"#);
    assert_eq!(r["ps1"]["loss_pct"], 20.0, "{r}");
    let p = ns.ping(ps, 60, "0.01");
    let l = loss(&p);
    assert!(
        l > 0.0 && l < 100.0,
        "20% loss each way should lose some pings: {}",
        text(&p)
    );
    let r = site.post_json("/api/v1/links/ps1", "{}");
    assert!(r.as_object().unwrap().is_empty(), "{r}");
    let p = ns.ping(ps, 30, "0.01");
    assert_eq!(loss(&p), 0.0, "cleared link still loses: {}", text(&p));
    // Bad input is refused with a message.
    let (code, body) = site.post("/api/v1/links/ps1", r#"{"loss_pct": 150}"#);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("loss_pct"), "{body}");
    let (code, body) = site.post("/api/v1/links/nope", r#"{"down": true}"#);
    assert_eq!(code, 404, "{body}");
    // A device that is off answers nothing, not even ping; on again, it does.
    site.post_json("/api/v1/devices/ps1/power", r#"{"action":"off"}"#);
    let p = ns.ping(ps, 3, "0.2");
    assert_eq!(
        loss(&p),
        100.0,
        "an unpowered device answered: {}",
        text(&p)
    );
    site.post_json("/api/v1/devices/ps1/power", r#"{"action":"on"}"#);
    let p = ns.ping(ps, 3, "0.2");
    assert_eq!(loss(&p), 0.0, "{}", text(&p));
    let m = ns.mbpoll(ps);
    assert!(m.status.success(), "mbpoll after power cycle: {}", text(&m));
}

/// A DHCP server (dnsmasq) on the host side of the TAP in `ns`, leasing
/// 10.77.A.200-220; stopped (by its pid file) when dropped, however the
/// test ends.
struct Dnsmasq {
    dir: tempfile::TempDir,
}

impl Dnsmasq {
    fn leases(&self) -> std::path::PathBuf {
        self.dir.path().join("leases")
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pid")) {
            let _ = tool("kill", &[pid.trim()]);
        }
    }
}

fn dnsmasq(ns: &Netns, a: u8) -> Dnsmasq {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Dnsmasq { dir };
    let out = ns.run(
        "dnsmasq",
        &[
            "--port=0",
            "--interface=ftlab0",
            "--bind-interfaces",
            &format!("--dhcp-range=10.77.{a}.200,10.77.{a}.220,255.255.255.0,1h"),
            &format!("--dhcp-option=3,10.77.{a}.1"),
            &format!("--dhcp-leasefile={}", daemon.leases().display()),
            &format!("--pid-file={}", daemon.dir.path().join("pid").display()),
        ],
    );
    assert!(out.status.success(), "dnsmasq: {}", text(&out));
    daemon
}

#[test]
fn dhcp_client_takes_its_address_from_a_dhcp_server_in_the_lab() {
    if !root() {
        return;
    }
    let ns = Netns::new("dhcp");
    // The Data Logger takes its address by DHCPv4 (its static one is unused).
    let text_site = site_text(72).replacen(
        "id = \"dl1\"\nmodel = \"DataLogger\"\nip = \"10.77.72.30\"",
        "id = \"dl1\"\nmodel = \"DataLogger\"\nip = \"10.77.72.30\"\ndhcp = true",
        1,
    );
    assert!(text_site.contains("dhcp = true"));
    let site = start(&ns, &text_site, &[]);
    let daemon = dnsmasq(&ns, 72);
    let mut got = String::new();
    site.wait_until(Duration::from_secs(30), || {
        got = site.get_json("/api/v1/devices/dl1")["addresses"]["eth1"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        got.starts_with("10.77.72.2")
    });
    // The first echo may go while the device still resolves the host's MAC.
    let _ = ns.ping(&got, 1, "0.2");
    let p = ns.ping(&got, 3, "0.2");
    let lease = std::fs::read_to_string(daemon.leases()).unwrap_or_default();
    drop(daemon);
    assert!(p.status.success() && loss(&p) == 0.0, "{got}: {}", text(&p));
    assert!(lease.contains(&got), "dnsmasq lease file: {lease}");
    // Devices with a static address keep it.
    assert_eq!(
        site.get_json("/api/v1/devices/ps1")["addresses"]["eth1"],
        "10.77.72.10"
    );
    drop(site);
}

#[test]
fn lab_up_exec_down_manage_the_namespace() {
    if !root() {
        return;
    }
    let name = format!("ftnet-lab-{}", std::process::id());
    let up = common::fieldtwin(&["lab", "up", "--name", &name]);
    assert!(up.status.success(), "lab up: {}", text(&up));
    let ns = Netns { name: name.clone() };
    let site = start(&ns, &site_text(70), &[]);
    // A tool run by `lab exec` sees the TAP and reaches the Panel Server;
    // the control API stays on the host's loopback.
    let ex = common::fieldtwin(&[
        "lab",
        "exec",
        "--name",
        &name,
        "--",
        "ping",
        "-n",
        "-c",
        "2",
        "-i",
        "0.2",
        "10.77.70.10",
    ]);
    assert!(ex.status.success(), "lab exec ping: {}", text(&ex));
    // ps1, meter-tcp, dl1, csms1, evce1, cs1, cs2, meter-ev.
    assert_eq!(
        site.get_json("/api/v1/devices").as_array().unwrap().len(),
        8
    );
    let fail = common::fieldtwin(&["lab", "exec", "--name", &name, "--", "false"]);
    assert!(
        !fail.status.success(),
        "exit status of the command is passed on"
    );
    drop(site);
    let down = common::fieldtwin(&["lab", "down", "--name", &name]);
    assert!(down.status.success(), "lab down: {}", text(&down));
    assert!(!std::path::Path::new("/run/netns").join(&name).exists());
    let ex = common::fieldtwin(&["lab", "exec", "--name", &name, "--", "true"]);
    assert!(!ex.status.success());
    assert!(text(&ex).contains("lab up"), "{}", text(&ex));
}

/// The WS-Discovery messages a device multicast, in capture order:
/// (source address, "Hello"/"Bye", the SOAP text).
fn ws_discovery_announcements(pcap: &std::path::Path, from: &str) -> Vec<(String, String)> {
    let out = tool(
        "tshark",
        &[
            "-r",
            pcap.to_str().unwrap(),
            "-Y",
            &format!("udp.dstport == 3702 && ip.dst == 239.255.255.250 && ip.src == {from}"),
            "-T",
            "fields",
            "-e",
            "udp.payload",
        ],
    );
    assert!(out.status.success(), "tshark: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|hex| {
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            let soap = String::from_utf8_lossy(&bytes).to_string();
            let kind = ["Hello", "Bye", "Probe"]
                .into_iter()
                .find(|k| soap.contains(&format!("/discovery/{k}</")))
                .unwrap_or("other");
            (kind.to_string(), soap)
        })
        .collect()
}

/// Issue 8 defect 6 in the TAP lab: a Panel Server with `dhcp = true`
/// announces itself (Hello) with its leased address once dnsmasq leases
/// one, a multicast Probe finds it at that address (XAddrs, presentation
/// URL, service list, certificate SAN), and it says Bye on the wire when
/// DPWS is switched off on its API and when it is powered off. Site octet 74.
#[test]
fn dpws_hello_after_a_dhcp_lease_and_bye_when_switched_off_or_powered_off() {
    if !root() {
        return;
    }
    let ns = Netns::named(&format!("ft-dpwsmodels-dpws-{}", std::process::id()));
    let text_site = site_text(74)
        .replacen(
            "ip = \"10.77.74.10\"\nsegment = \"lan\"\n",
            "ip = \"10.77.74.10\"\nsegment = \"lan\"\ndhcp = true\n",
            1,
        )
        .replacen(
            "[device.panel_server]\n",
            "[device.panel_server]\npbkdf2_iterations = 1000\n",
            1,
        );
    assert!(text_site.contains("dhcp = true") && text_site.contains("pbkdf2"));
    let dir = tempfile::tempdir().unwrap();
    let pcap_dir = dir.path().join("cap");
    let site = start(&ns, &text_site, &["--pcap", pcap_dir.to_str().unwrap()]);
    let daemon = dnsmasq(&ns, 74);
    let mut ip = String::new();
    site.wait_until(Duration::from_secs(30), || {
        ip = site.get_json("/api/v1/devices/ps1")["addresses"]["eth1"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        ip.starts_with("10.77.74.2")
    });
    // The service list carries the leased address, not 0.0.0.0.
    let status = site.get_json("/api/v1/devices/ps1");
    let services = status["services"].as_array().unwrap();
    assert!(
        services
            .iter()
            .filter(|s| s["interface"] == "eth1")
            .all(|s| s["address"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{ip}:"))),
        "{status}"
    );
    // A real WS-Discovery client's multicast Probe for the Schneider type.
    let python = std::env::var("FIELDTWIN_PYTHON")
        .unwrap_or_else(|_| format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR")));
    let probe = format!("{}/tests/security/wsd_probe.py", env!("CARGO_MANIFEST_DIR"));
    let found = ns.run(
        &python,
        &[
            &probe,
            "239.255.255.250",
            "--multicast-if",
            "10.77.74.1",
            "--type",
            "{http://www.schneider-electric.com/CyberSecurity}EcoStruxurePanelServer",
        ],
    );
    let t = text(&found);
    let found: serde_json::Value = serde_json::from_str(t.trim()).expect(&t);
    assert_eq!(
        found["matches"][0]["xaddrs"][0]
            .as_str()
            .unwrap_or_default()
            .split('/')
            .nth(2),
        Some(format!("{ip}:5357").as_str()),
        "{t}"
    );
    let metadata = found["metadata"].as_str().unwrap_or_default();
    assert!(
        metadata.contains(&format!("<wsdp:PresentationUrl>https://{ip}/<")),
        "{t}"
    );
    assert!(!t.contains("0.0.0.0"), "{t}");
    // The HTTPS certificate names the leased address.
    let mut cert = String::new();
    site.wait_until(Duration::from_secs(10), || {
        let out = ns.run(
            "sh",
            &[
                "-c",
                &format!(
                    "echo | openssl s_client -connect {ip}:443 2>/dev/null | openssl x509 -noout -text"
                ),
            ],
        );
        cert = text(&out);
        cert.contains(&format!("IP Address:{ip}"))
    });
    assert!(!cert.contains("IP Address:0.0.0.0"), "{cert}");

    // DPWS off through the device's own API (curl in the namespace).
    let password = status["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == "https")
        .and_then(|c| c["password"].as_str()?.split_whitespace().next())
        .unwrap()
        .to_string();
    let curl = |args: &[&str]| {
        let mut all = vec!["-sk", "--max-time", "20"];
        all.extend_from_slice(args);
        let out = ns.run("curl", &all);
        assert!(out.status.success(), "curl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let login = curl(&[
        "-H",
        "content-type: application/json",
        "-d",
        &format!(r#"{{"username":"SecurityAdmin","password":"{password}"}}"#),
        &format!("https://{ip}/api/login"),
    ]);
    let token: serde_json::Value = serde_json::from_str(&login).expect(&login);
    let auth = format!("Authorization: Bearer {}", token["token"].as_str().unwrap());
    let settings_url = format!("https://{ip}/api/settings");
    let mut settings: serde_json::Value =
        serde_json::from_str(&curl(&["-H", &auth, &settings_url])).unwrap();
    for on in [false, true] {
        settings["dpws"] = on.into();
        let body = settings.to_string();
        let answer = curl(&[
            "-X",
            "PUT",
            "-H",
            &auth,
            "-H",
            "content-type: application/json",
            "-d",
            &body,
            &settings_url,
        ]);
        assert!(answer.contains(&format!("\"dpws\":{on}")), "{answer}");
    }
    // Power off (through the control API): Bye before the NIC goes down.
    site.post_json("/api/v1/devices/ps1/power", r#"{"action":"off"}"#);
    drop(daemon);
    assert!(site.stop().success());

    let said = ws_discovery_announcements(&pcap_dir.join("lan.pcap"), &ip);
    let kinds: Vec<&str> = said.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["Hello", "Bye", "Hello", "Bye"],
        "lease -> Hello, DPWS off -> Bye, on -> Hello, power off -> Bye"
    );
    for (kind, soap) in &said {
        assert!(
            soap.contains("urn:uuid:") && !soap.contains("0.0.0.0"),
            "{kind}: {soap}"
        );
        if kind == "Hello" {
            assert!(
                soap.contains(&format!("<wsd:XAddrs>http://{ip}:5357/")),
                "{soap}"
            );
        }
    }
    // Nothing left from the unleased address either.
    assert!(ws_discovery_announcements(&pcap_dir.join("lan.pcap"), "0.0.0.0").is_empty());
}

/// chronyd serving the namespace as a local-stratum server (it never
/// reaches outside: no source is configured, and `-x` leaves the host clock
/// alone); stopped when dropped.
struct Chrony {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Chrony {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chrony(ns: &Netns) -> Chrony {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("chrony.conf");
    std::fs::write(
        &conf,
        format!(
            "local stratum 10\nallow all\ncmdport 0\npidfile {}\n",
            dir.path().join("pid").display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "chronyd", "-x", "-d", "-u", "root", "-f",
        ])
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chronyd (apt package chrony) must be installed");
    Chrony { child, _dir: dir }
}

/// Issue 10 item 6: the Panel Server's NTP client steps an RTC that is one
/// hour fast to chrony's time, over its own TAP-mode transport, and audits
/// the change. Site octet 76.
#[test]
fn ntp_client_steps_the_rtc_from_chrony_in_the_lab() {
    if !root() {
        return;
    }
    let ns = Netns::new("ntp");
    let _chrony = chrony(&ns);
    let site_text = site_text(76)
        .replacen(
            "rtc = { offset_s = 0, drift_ppm = 8.0 }",
            "rtc = { offset_s = 3600, drift_ppm = 8.0 }",
            1,
        )
        .replacen(
            "[device.panel_server]\n",
            "[device.panel_server]\nntp_server = \"10.77.76.1\"\n",
            1,
        );
    assert!(site_text.contains("offset_s = 3600") && site_text.contains("ntp_server"));
    let site = start(&ns, &site_text, &[]);
    // The RTC (unit 255, registers 116-119) comes within 1 s of chrony's
    // clock (this host's clock). Until chrony answers, the client retries
    // every 64 s of device time: jump to make it retry.
    let rtc_error = || -> f64 {
        let o = ns.run(
            "mbpoll",
            &[
                "-1",
                "-a",
                "255",
                "-r",
                "116",
                "-c",
                "4",
                "-t",
                "4",
                "-o",
                "3",
                "10.77.76.10",
            ],
        );
        let w: Vec<u16> = text(&o)
            .lines()
            .filter_map(|l| l.split_once("]:"))
            // mbpoll prints `34010 (-31526)` for words above 32767.
            .filter_map(|(_, v)| v.split_whitespace().next()?.parse::<u16>().ok())
            .collect();
        if w.len() != 4 {
            eprintln!("mbpoll: {}", text(&o));
            return f64::INFINITY;
        }
        let Some(date) = chrono::NaiveDate::from_ymd_opt(
            2000 + i32::from(w[0] & 0x7F),
            u32::from(w[1] >> 8),
            u32::from(w[1] & 0xFF),
        ) else {
            return f64::INFINITY;
        };
        let Some(t) = date.and_hms_milli_opt(
            u32::from(w[2] >> 8),
            u32::from(w[2] & 0xFF),
            u32::from(w[3]) / 1000,
            u32::from(w[3]) % 1000,
        ) else {
            return f64::INFINITY;
        };
        (t.and_utc() - chrono::Utc::now()).num_milliseconds() as f64 / 1e3
    };
    let mut before = f64::INFINITY;
    for _ in 0..20 {
        before = rtc_error();
        if before.is_finite() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if !before.is_finite() {
        eprintln!(
            "DIAG addr: {}\nping: {}\nsite: {}",
            text(&ns.run("ip", &["-br", "addr"])),
            text(&ns.ping("10.77.76.10", 1, "0.2")),
            site.stdout.lock().unwrap()
        );
    }
    assert!(
        (3590.0..3610.0).contains(&before) || before.abs() < 1.0,
        "RTC off by {before} s at start"
    );
    let mut err = before;
    for _ in 0..20 {
        err = rtc_error();
        if err.abs() < 1.0 {
            break;
        }
        site.post_json(
            "/api/v1/commands",
            r#"{"command":"advance_clock","seconds":64}"#,
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(err.abs() < 1.0, "RTC still {err} s away from chrony's time");
    let status = site.get_json("/api/v1/devices/ps1");
    let audit = status["details"]["audit_tail"].to_string();
    assert!(
        audit.contains("set by NTP server 10.77.76.1"),
        "no NTP step in the audit log: {audit}"
    );
}

/// Issue 15 item 2: with `--routing router` the namespace reaches every
/// device of both bridged segments through the emulated router: ping and
/// Modbus answer across it (TTL decremented once; on the OT segment through
/// the devices' default gateway), the router answers TTL 1 with time exceeded,
/// and the namespace's neighbour table holds one entry for the whole
/// device range, the router's, however many devices it talked to.
#[test]
fn routed_lab_reaches_devices_through_one_neighbour_entry() {
    if !root() {
        return;
    }
    let ns = Netns::named(&format!("ft-router-{}", std::process::id()));
    // The OT segment is bridged too: a second routed segment, whose subnet
    // does not hold the host side's address (its devices reach the host
    // through their default gateway, the router's address there).
    let text_site = site_text(78).replacen("bridge = \"internal\"", "bridge = \"tap\"", 1);
    assert!(!text_site.contains("bridge = \"internal\""));
    let site = start(&ns, &text_site, &["--routing", "router"]);
    assert!(
        site.stdout
            .lock()
            .unwrap()
            .contains("devices routed via 10.77.78.254"),
        "no router in the banner:\n{}",
        site.stdout.lock().unwrap()
    );
    // The namespace routes the device subnet via the router, which alone is
    // on-link.
    let routes = text(&ns.run("ip", &["-4", "route", "show", "dev", "ftlab0"]));
    assert!(
        routes.contains("10.77.78.0/24 via 10.77.78.254")
            && routes.contains("10.77.79.0/24 via 10.77.78.254")
            && routes.contains("10.77.78.254 scope link"),
        "routes: {routes}"
    );
    // Every device of the lab segment answers ping across the router.
    let devices = [
        "10.77.78.10",
        // The EVCE and the charging stations: the router first heard them
        // ask for another device (the stations for the EVCE, the EVCE for
        // its CSMS), which taught them nothing of the router (see
        // router::a_device_heard_asking_for_another_is_taught...).
        "10.77.78.20",
        "10.77.78.21",
        "10.77.78.22",
        "10.77.78.23",
        "10.77.78.24",
        "10.77.78.30",
        // The Panel Server's ETH2 and the Modbus TCP meter, on the OT segment.
        "10.77.79.1",
        "10.77.79.11",
    ];
    for ip in devices {
        let p = ns.run("ping", &["-n", "-c", "2", "-i", "0.2", "-W", "2", ip]);
        assert!(
            p.status.success() && loss(&p) == 0.0,
            "ping {ip}: {}",
            text(&p)
        );
        assert!(
            text(&p).contains("ttl=63"),
            "ping {ip} did not cross one router: {}",
            text(&p)
        );
    }
    // Modbus TCP (a real mbpoll) through the router.
    let m = ns.mbpoll("10.77.78.10");
    assert!(
        m.status.success() && text(&m).contains("[11]:"),
        "mbpoll through the router: {}",
        text(&m)
    );
    // The router itself answers ping and reports an expired TTL.
    let p = ns.run("ping", &["-n", "-c", "1", "-W", "2", "10.77.78.254"]);
    assert!(text(&p).contains("ttl=64"), "ping router: {}", text(&p));
    let p = ns.run(
        "ping",
        &["-n", "-c", "1", "-t", "1", "-W", "2", "10.77.78.10"],
    );
    assert!(
        text(&p).contains("From 10.77.78.254") && text(&p).contains("Time to live exceeded"),
        "TTL 1: {}",
        text(&p)
    );
    // One neighbour entry for all of them: the router's MAC, and no
    // device address.
    let neigh = text(&ns.run("ip", &["neigh", "show", "dev", "ftlab0"]));
    let v4: Vec<&str> = neigh.lines().filter(|l| l.starts_with("10.")).collect();
    assert_eq!(v4.len(), 1, "neighbour table: {neigh}");
    assert!(
        v4[0].starts_with("10.77.78.254 ") && v4[0].contains("lladdr 02:52:54:00:00:01"),
        "neighbour table: {neigh}"
    );
    for ip in devices {
        assert!(
            !neigh.contains(&format!("{ip} ")),
            "{ip} in the neighbour table: {neigh}"
        );
    }
    let st = site.stop();
    assert!(st.success(), "fieldtwin exited with {st:?}");
}
