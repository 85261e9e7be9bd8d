//! Issue 10 items 4 and 5, end to end against the real binary (host mode,
//! site octets 200-209): radios per model (a Wired by Design model with
//! wireless devices is refused naming the field; a permanent deactivation
//! of IEEE 802.15.4 survives a factory reset) and the Wi-Fi access point
//! at the association level (the front-face button, WPA2 only, the device
//! code as password, the web pages over the access point's interface with
//! curl over HTTPS, and deactivating Wi-Fi dropping the association), the
//! access point's idle timeout, and infrastructure mode (the Panel Server
//! joining the site's Wi-Fi network as a station; a wrong passphrase never
//! associates). In TAP mode (in a namespace of their own), the access
//! point's side (208) and the station (240) are interfaces with MACs of
//! their own on the lab segment.

mod common;

use std::time::Duration;

use common::web::Web;
use common::{RunningSite, curl, fieldtwin, site_text};

/// The device code printed on the QR label of ps1 (the access point's
/// factory password).
const CODE: &str = "Lab-Code-2024";

/// The default site on octets `a`/`a + 1`, ps1 with its access point's
/// side at .12 of the lab segment and the device code [`CODE`].
fn site(a: u8) -> String {
    let t = site_text(a);
    assert!(t.contains("topology = \"separated\""));
    t.replacen(
        "topology = \"separated\"",
        &format!(
            "topology = \"separated\"\npbkdf2_iterations = 1000\nwifi_ap_ip = \"10.77.{a}.12\"\ndevice_code = \"{CODE}\""
        ),
        1,
    )
}

/// `POST /api/v1/commands` with `json`: (status, body).
fn command(run: &RunningSite, json: &str) -> (u16, String) {
    run.post("/api/v1/commands", json)
}

/// The status of a plain HTTPS GET of the login page at `ip` (0: no answer,
/// as curl reports a reset or refused connection).
fn https_status(ip: &str) -> u16 {
    curl(&[
        "-sk",
        "--max-time",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("https://{ip}/login"),
    ])
    .0
}

#[test]
fn wifi_access_point_wpa2_only_and_dropped_when_deactivated() {
    let a = 200;
    let run = RunningSite::start(&site(a), &[]);
    let eth1 = format!("127.77.{a}.10");
    let ap_side = format!("127.77.{a}.12");
    // The access point's side is an interface of the device, but nothing
    // reaches it before an association.
    let st = run.get_json("/api/v1/devices/ps1");
    let ssid = st["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == "wifi-ap")
        .map(|c| c["user"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no wifi-ap credential: {st}"));
    assert_eq!(ssid, "PAS600L-0251", "SSID derived from model and serial");
    assert_eq!(https_status(&eth1), 200);
    assert_eq!(https_status(&ap_side), 0, "reachable before association");
    // Enabled by default, but on the air only once the button is pressed.
    let v = run.get_json("/api/v1/wifi");
    assert_eq!(v["access_points"][0]["device"], "ps1", "{v}");
    assert_eq!(v["access_points"][0]["on_air"], false, "{v}");
    let wpa2 = format!(
        r#"{{"command":"wifi_associate","ssid":"{ssid}","password":"{CODE}","cipher":"ccmp"}}"#
    );
    let (code, body) = command(&run, &wpa2);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("is on the air"), "{body}");
    let (code, body) = command(&run, r#"{"command":"wifi_button","device":"ps1"}"#);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"on_air\":true"), "{body}");
    // A client offering TKIP is refused, even with the right password.
    let (code, body) = command(
        &run,
        &format!(
            r#"{{"command":"wifi_associate","ssid":"{ssid}","password":"{CODE}","cipher":"tkip"}}"#
        ),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("TKIP is not supported"), "{body}");
    assert_eq!(https_status(&ap_side), 0, "reachable after a refusal");
    // A station is the lab's client (`host`) or a device of the site.
    let (code, body) = command(
        &run,
        &format!(
            r#"{{"command":"wifi_associate","ssid":"{ssid}","password":"{CODE}","station":"nobody"}}"#
        ),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("neither"), "{body}");
    // A wrong password is refused too.
    let (code, body) = command(
        &run,
        &format!(
            r#"{{"command":"wifi_associate","ssid":"{ssid}","password":"Wrong-Pass1","cipher":"wpa2"}}"#
        ),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("wrong passphrase"), "{body}");
    // WPA2 with the device code of the QR label is accepted.
    let (code, body) = command(&run, &wpa2);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"stations\":[\"host\"]"), "{body}");
    // The web pages answer over the access point: log in and read a page.
    run.wait_until(Duration::from_secs(10), || https_status(&ap_side) == 200);
    let over_ap = Web::of(&run, ap_side.clone());
    let (code, body) = over_ap.login_as("SecurityAdmin", &over_ap.password);
    assert_eq!(code, 200, "{body}");
    let (code, body) = over_ap.get("/settings");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("Wi-Fi activation"), "{body}");
    assert!(
        body.contains("Access point PAS600L-0251: on the air; connected: host"),
        "{body}"
    );
    // Modbus TCP over Wi-Fi follows its per-interface setting (off by
    // default).
    let modbus = |ip: &str| {
        let out = common::tool(
            "mbpoll",
            &[
                "-1", "-a", "255", "-r", "11", "-c", "6", "-t", "4", "-o", "3", ip,
            ],
        );
        out.status.success()
    };
    assert!(modbus(&eth1), "Modbus on ETH1");
    assert!(
        !modbus(&ap_side),
        "Modbus over Wi-Fi while deactivated there"
    );
    let (code, body) = command(
        &run,
        r#"{"command":"modbus_service","device":"ps1","interface":"wifi","enabled":true}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        modbus(&ap_side),
        "no Modbus over Wi-Fi once activated there"
    );
    // Deactivating Wi-Fi (here from ETH1) takes the access point off the
    // air and drops the association.
    let web = Web::of(&run, eth1.clone());
    assert_eq!(web.login_as("SecurityAdmin", &web.password).0, 200);
    let (code, body) = web.submit("/settings", "/settings/wifi", &[]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("Saved."), "{body}");
    let v = run.get_json("/api/v1/wifi");
    assert_eq!(v["access_points"], serde_json::json!([]), "{v}");
    assert_eq!(https_status(&ap_side), 0, "still reachable over Wi-Fi");
    let (code, _) = over_ap.get("/settings");
    assert_ne!(code, 200, "the session over Wi-Fi still answers");
    let (code, body) = command(&run, &wpa2);
    assert_eq!(code, 400, "{body}");
    // The button no longer starts it.
    let (code, body) = command(&run, r#"{"command":"wifi_button","device":"ps1"}"#);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not enabled"), "{body}");
    assert!(!modbus(&ap_side), "Modbus over Wi-Fi after the drop");
    // ETH1 is untouched.
    assert_eq!(https_status(&eth1), 200);
    run.stop();
}

#[test]
fn permanent_ieee802154_deactivation_survives_factory_reset() {
    let a = 202;
    let run = RunningSite::start(&site(a), &[]);
    let web = Web::of(&run, format!("127.77.{a}.10"));
    assert_eq!(web.login_as("SecurityAdmin", &web.password).0, 200);
    let on = |body: &str| body.contains("name=\"ieee802154\" checked");
    let (code, body) = web.submit("/settings", "/settings/wireless", &[("ieee802154", "on")]);
    assert_eq!(code, 200, "{body}");
    assert!(on(&body), "IEEE 802.15.4 not activated: {body}");
    let (code, body) = web.submit(
        "/settings",
        "/settings/wireless-permanent-off",
        &[("radio", "ieee802154"), ("confirm", "on")],
    );
    assert_eq!(code, 200, "{body}");
    assert!(!on(&body), "{body}");
    assert!(
        body.contains("IEEE 802.15.4 permanently deactivated; Wi-Fi available"),
        "{body}"
    );
    let (code, audit) = web.get("/logs/audit.csv");
    assert_eq!(code, 200, "{audit}");
    assert!(
        audit.contains("IEEE 802.15.4 permanently deactivated"),
        "{audit}"
    );
    // The Restart button held 15 s: factory reset.
    let v = run.post_json(
        "/api/v1/commands",
        r#"{"command":"restart_button","device":"ps1","hold_s":15}"#,
    );
    assert_eq!(v["power"], "on", "{v}");
    let web = Web::of(&run, format!("127.77.{a}.10"));
    assert_eq!(web.login_as("SecurityAdmin", &web.password).0, 200);
    let (code, body) = web.get("/settings");
    assert_eq!(code, 200, "{body}");
    assert!(
        !on(&body),
        "IEEE 802.15.4 on after the factory reset: {body}"
    );
    assert!(
        body.contains("IEEE 802.15.4 permanently deactivated"),
        "{body}"
    );
    let (code, body) = web.submit("/settings", "/settings/wireless", &[("ieee802154", "on")]);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("IEEE 802.15.4 is permanently deactivated"),
        "{body}"
    );
    // Wi-Fi was not deactivated permanently: the factory settings have it
    // on, and its access point starts with the button.
    assert!(body.contains("name=\"enabled\" checked"), "{body}");
    let (code, body) = command(&run, r#"{"command":"wifi_button","device":"ps1"}"#);
    assert_eq!(code, 200, "{body}");
    run.stop();
}

#[test]
fn wired_by_design_with_wireless_devices_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wd.toml");
    let text = site_text(204).replacen("model = \"PAS600L\"", "model = \"PAS600LWD\"", 1);
    std::fs::write(&path, &text).unwrap();
    let out = fieldtwin(&["site", "check", path.to_str().unwrap()]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("device[0].panel_server.wireless[0]: PAS600LWD is a Wired by Design model"),
        "{err}"
    );
    // `run` refuses it the same way, before starting anything.
    let out = fieldtwin(&[
        "run",
        "--site",
        path.to_str().unwrap(),
        "--api",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("device[0].panel_server.wireless[0]"),
        "{out:?}"
    );
    // So is an access point given to a Wired by Design model.
    let text = site(206).replacen("model = \"PAS600L\"", "model = \"PAS600PWD\"", 1);
    let from = text.find("[[device.panel_server.digital_input]]").unwrap();
    let to = text.find("# Modbus TCP meter").unwrap();
    let text = format!("{}{}", &text[..from], &text[to..]);
    std::fs::write(&path, &text).unwrap();
    let out = fieldtwin(&["site", "check", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("device[0].panel_server.wifi_ap_ip: PAS600PWD has no Wi-Fi access point"),
        "{err}"
    );
}

/// Modbus over ps1's Wi-Fi station (`answers`) is refused until the
/// service is activated on Wi-Fi (control API), then answers.
fn modbus_follows_the_wifi_setting(run: &RunningSite, answers: impl Fn() -> bool) {
    assert!(!answers(), "Modbus over Wi-Fi while deactivated there");
    let (code, body) = command(
        run,
        r#"{"command":"modbus_service","device":"ps1","interface":"wifi","enabled":true}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert!(answers(), "no Modbus over the Wi-Fi station");
}

/// `site` running in TAP mode in a namespace of its own named after
/// `tag`; `None` without root (the TAP tests are skipped then).
fn in_netns(tag: &str, site: &str) -> Option<(common::netns::Netns, RunningSite)> {
    if !common::netns::root() {
        return None;
    }
    let ns = common::netns::Netns::named(&format!("{tag}-{}", std::process::id()));
    let run = common::netns::start(&ns, site, &[]);
    Some((ns, run))
}

/// The HTTP status of `GET https://ip/login` from a client inside `ns`
/// ("000": no answer within 3 s).
fn ns_https(ns: &common::netns::Netns, ip: &str) -> String {
    let out = ns.run(
        "curl",
        &[
            "-sk",
            "--max-time",
            "3",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("https://{ip}/login"),
        ],
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The MAC the namespace's neighbour table holds for `ip`.
fn ns_mac(ns: &common::netns::Netns, ip: &str) -> Option<String> {
    let out = ns.run("ip", &["-4", "neigh", "show", ip]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_string)
}

/// TAP mode: the access point's side is an interface with its own MAC on
/// the lab segment; a lab client in the namespace reaches the webpages over
/// it only while associated.
#[test]
fn wifi_access_point_side_in_tap_mode() {
    let a = 208;
    let Some((ns, run)) = in_netns("ft-wifi-tap", &site(a)) else {
        return;
    };
    let ap_side = format!("10.77.{a}.12");
    let https = |ip: &str| ns_https(&ns, ip);
    run.wait_until(Duration::from_secs(20), || {
        https(&format!("10.77.{a}.10")) == "200"
    });
    assert_eq!(https(&ap_side), "000", "reachable before association");
    let (code, body) = command(&run, r#"{"command":"wifi_button","device":"ps1"}"#);
    assert_eq!(code, 200, "{body}");
    let (code, body) = command(
        &run,
        &format!(r#"{{"command":"wifi_associate","ssid":"PAS600L-0251","password":"{CODE}"}}"#),
    );
    assert_eq!(code, 200, "{body}");
    run.wait_until(Duration::from_secs(20), || https(&ap_side) == "200");
    let (code, body) = command(
        &run,
        r#"{"command":"wifi_disassociate","ssid":"PAS600L-0251"}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"stations\":[]"), "{body}");
    assert_eq!(https(&ap_side), "000", "reachable after leaving");
    run.stop();
}

/// The default site on octets `a`/`a + 1` with a Wi-Fi network on the lab
/// segment ("PlantWiFi") and ps1 joining it as a station on .13 with
/// `passphrase`.
fn site_with_station(a: u8, passphrase: &str) -> String {
    let t = site_text(a);
    let lan = "name = \"lan\"\n";
    let anchor = "# Modbus TCP meter on the Panel Server's OT side.\n[[device]]";
    assert!(t.contains(lan) && t.contains(anchor), "{t}");
    t.replacen(
        lan,
        &format!("{lan}wifi_ssid = \"PlantWiFi\"\nwifi_passphrase = \"Plant-Passw0rd\"\n"),
        1,
    )
    .replacen(
        "topology = \"separated\"",
        "topology = \"separated\"\npbkdf2_iterations = 1000",
        1,
    )
    .replacen(
        anchor,
        &format!(
            "[device.panel_server.wifi_client]\nssid = \"PlantWiFi\"\npassphrase = \"{passphrase}\"\nip = \"10.77.{a}.13\"\n\n{anchor}"
        ),
        1,
    )
}

/// Issue 10 item 5, infrastructure mode: ps1 joins the site's Wi-Fi
/// network named in its site file as a station; its interface `wlan`
/// carries the web pages (and Modbus when activated on Wi-Fi) once
/// associated, `GET /api/v1/wifi` shows the association, deactivating
/// Wi-Fi leaves the network; a wrong passphrase never associates.
#[test]
fn wifi_infrastructure_mode_joins_the_site_network_as_a_station() {
    let a = 204;
    let run = RunningSite::start(&site_with_station(a, "Plant-Passw0rd"), &[]);
    let eth1 = format!("127.77.{a}.10");
    let wlan = format!("127.77.{a}.13");
    let v = run.get_json("/api/v1/wifi");
    let net = v["access_points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["device"] == "segment:lan")
        .unwrap_or_else(|| panic!("no site network: {v}"));
    assert_eq!(net["ssid"], "PlantWiFi", "{v}");
    assert_eq!(net["on_air"], true, "{v}");
    assert_eq!(net["stations"], serde_json::json!(["ps1"]), "{v}");
    let st = &v["stations"][0];
    assert_eq!(st["device"], "ps1", "{v}");
    assert_eq!(st["associated"], "segment:lan", "{v}");
    run.wait_until(Duration::from_secs(10), || https_status(&wlan) == 200);
    let over_wlan = Web::of(&run, wlan.clone());
    assert_eq!(
        over_wlan.login_as("SecurityAdmin", &over_wlan.password).0,
        200
    );
    // Modbus over the station follows the Wi-Fi setting.
    let modbus = |ip: &str| {
        common::tool(
            "mbpoll",
            &[
                "-1", "-a", "255", "-r", "11", "-c", "6", "-t", "4", "-o", "3", ip,
            ],
        )
        .status
        .success()
    };
    modbus_follows_the_wifi_setting(&run, || modbus(&wlan));
    // Deactivating Wi-Fi (from ETH1) leaves the network.
    let web = Web::of(&run, eth1.clone());
    assert_eq!(web.login_as("SecurityAdmin", &web.password).0, 200);
    let (code, body) = web.submit("/settings", "/settings/wifi", &[]);
    assert_eq!(code, 200, "{body}");
    let v = run.get_json("/api/v1/wifi");
    assert_eq!(v["stations"], serde_json::json!([]), "{v}");
    assert_eq!(https_status(&wlan), 0, "still reachable over the station");
    // Activated again: it joins again.
    let (code, body) = web.submit(
        "/settings",
        "/settings/wifi",
        &[("enabled", "on"), ("access_point", "on")],
    );
    assert_eq!(code, 200, "{body}");
    let v = run.get_json("/api/v1/wifi");
    assert_eq!(v["stations"][0]["associated"], "segment:lan", "{v}");
    run.wait_until(Duration::from_secs(10), || https_status(&wlan) == 200);
    // ps1's own access point, started by its button, goes off the air
    // after 30 minutes without a station ([NF]); the site's network and
    // the station's association stay.
    let (code, body) = command(&run, r#"{"command":"wifi_button","device":"ps1"}"#);
    assert_eq!(code, 200, "{body}");
    let ap_on = |run: &RunningSite| {
        let v = run.get_json("/api/v1/wifi");
        v["access_points"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["device"] == "ps1" && p["on_air"] == true)
    };
    assert!(ap_on(&run));
    run.post_json("/api/v1/clock", r#"{"advance_s":1500}"#);
    std::thread::sleep(Duration::from_millis(300));
    assert!(ap_on(&run), "off the air before its idle timeout");
    run.post_json("/api/v1/clock", r#"{"advance_s":360}"#);
    run.wait_until(Duration::from_secs(10), || !ap_on(&run));
    let v = run.get_json("/api/v1/wifi");
    assert_eq!(v["stations"][0]["associated"], "segment:lan", "{v}");
    run.stop();

    // A wrong passphrase: never associated, the reason in the API.
    let a = 206;
    let run = RunningSite::start(&site_with_station(a, "Not-The-Passw0rd"), &[]);
    let v = run.get_json("/api/v1/wifi");
    let st = &v["stations"][0];
    assert_eq!(st["device"], "ps1", "{v}");
    assert!(st["associated"].is_null(), "{v}");
    assert!(
        st["error"]
            .as_str()
            .unwrap_or("")
            .contains("wrong passphrase"),
        "{v}"
    );
    assert_eq!(https_status(&format!("127.77.{a}.13")), 0);
    assert_eq!(https_status(&format!("127.77.{a}.10")), 200);
    run.stop();
}

/// TAP mode, infrastructure mode: ps1's Wi-Fi station is an interface of
/// its own on the lab segment (its own MAC, ARP, TCP): a lab client in the
/// namespace reaches its pages over it while it is associated, Modbus
/// over it only once activated on Wi-Fi, and nothing once it has left the
/// network.
#[test]
fn wifi_station_in_tap_mode() {
    let a = 240;
    let Some((ns, run)) = in_netns("ft-wifi-sta", &site_with_station(a, "Plant-Passw0rd")) else {
        return;
    };
    let (eth1, wlan) = (format!("10.77.{a}.10"), format!("10.77.{a}.13"));
    run.wait_until(Duration::from_secs(20), || ns_https(&ns, &eth1) == "200");
    run.wait_until(Duration::from_secs(20), || ns_https(&ns, &wlan) == "200");
    let (mac_eth1, mac_wlan) = (ns_mac(&ns, &eth1), ns_mac(&ns, &wlan));
    assert!(
        mac_eth1.is_some() && mac_wlan.is_some(),
        "{mac_eth1:?} {mac_wlan:?}"
    );
    assert_ne!(mac_eth1, mac_wlan, "the station has a MAC of its own");
    let modbus = |ip: &str| {
        ns.run(
            "mbpoll",
            &[
                "-1", "-a", "255", "-r", "11", "-c", "6", "-t", "4", "-o", "3", ip,
            ],
        )
        .status
        .success()
    };
    assert!(modbus(&eth1));
    modbus_follows_the_wifi_setting(&run, || modbus(&wlan));
    let (code, body) = command(
        &run,
        r#"{"command":"wifi_disassociate","ssid":"PlantWiFi","station":"ps1"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let v = run.get_json("/api/v1/wifi");
    assert!(v["stations"][0]["associated"].is_null(), "{v}");
    assert_eq!(ns_https(&ns, &wlan), "000", "reachable after leaving");
    assert!(!modbus(&wlan), "Modbus after leaving");
    assert_eq!(ns_https(&ns, &eth1), "200", "ETH1 unaffected");
    run.stop();
}
