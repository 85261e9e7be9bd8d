//! Server-rendered HTML of the webpages (plain forms, no JavaScript).
//! Every form carries the session's CSRF token in a hidden `csrf` field.

use crate::panel_server::node::Node;
use crate::panel_server::policy::{SUPPORT_USER, WEB_USER};
use crate::security::audit::Entry;
use crate::security::html;
pub use crate::security::html::esc;

/// The header of the Panel Server's pages.
const CHROME: html::Chrome = html::Chrome {
    product: "EcoStruxure Panel Server",
    brand: "EcoStruxure Panel Server",
    links: r#"<a href="/">Home</a><a href="/settings">Settings</a><a href="/datalog">Data logging</a><a href="/settings/sftp">SFTP server</a><a href="/alarms">Alarms</a><a href="/users">Users</a><a href="/firmware">Firmware update</a><a href="/logs">Logs</a><a href="/backup">Backup</a><a href="/maintenance">Maintenance</a>"#,
};

pub(super) fn layout(title: &str, csrf: Option<&str>, msg: Option<&str>, body: &str) -> String {
    html::layout(&CHROME, title, csrf, msg, body)
}

pub(super) fn hidden(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(csrf))
}

pub(super) fn checked(b: bool) -> &'static str {
    if b { " checked" } else { "" }
}

pub fn message(title: &str, text: &str) -> String {
    layout(
        title,
        None,
        Some(text),
        r#"<p><a href="/">Home</a> · <a href="/login">Log in</a></p>"#,
    )
}

pub fn login(msg: Option<&str>) -> String {
    layout(
        "Login",
        None,
        msg,
        r#"<section><form method="post" action="/login"><label>User name <input id="username" name="username" autocomplete="username"></label><label>Password <input id="password" type="password" name="password" autocomplete="current-password"></label><button id="login" type="submit">Log in</button></form></section>"#,
    )
}

pub fn home(node: &Node, csrf: &str) -> String {
    let id = &node.ps.identity;
    let s = node.settings();
    let rows = [
        ("Device", node.ps.id.clone()),
        ("Commercial reference", id.commercial_reference.clone()),
        ("Product", id.product_model.clone()),
        ("Serial number", id.serial.clone()),
        ("Hardware version", id.hardware_version.clone()),
        ("Firmware version", s.firmware.clone()),
        ("Health", "Nominal".into()),
        (
            "Date and time (device clock, UTC)",
            node.ctx.rtc.now().format("%Y-%m-%d %H:%M:%S").to_string(),
        ),
    ];
    let t: String = rows
        .iter()
        .map(|(k, v)| {
            format!(
                "<tr><th>{}</th><td id=\"{}\">{}</td></tr>",
                esc(k),
                esc(&k.to_lowercase().replace([' ', '(', ')', ','], "-")),
                esc(v)
            )
        })
        .collect();
    layout(
        "Home",
        Some(csrf),
        None,
        &format!("<section><table>{t}</table></section>"),
    )
}

/// The access point's state for the Wi-Fi section.
fn access_point_state(node: &Node) -> String {
    let Some(ap) = node.access_point() else {
        return "Access point: not available (Wi-Fi or the access point deactivated, or none on this device)".into();
    };
    let st = node
        .ctx
        .wifi
        .access_points()
        .into_iter()
        .find(|a| *a.device == *node.ctx.id);
    match st {
        Some(a) if a.on_air => format!(
            "Access point {}: on the air; connected: {}",
            ap.ssid,
            if a.stations.is_empty() {
                "none".to_string()
            } else {
                a.stations.join(", ")
            }
        ),
        _ => format!(
            "Access point {}: enabled, not on the air (press the button on the front face)",
            ap.ssid
        ),
    }
}

pub fn settings(node: &Node, csrf: &str, msg: Option<&str>) -> String {
    let s = node.settings();
    let h = hidden(csrf);
    let addrs: String = node
        .ctx
        .interface_names()
        .iter()
        .filter_map(|i| node.ctx.interface(i).map(|st| (i.clone(), st.ipv4())))
        .map(|(i, ip)| format!("<tr><td>{}</td><td>{ip}</td></tr>", esc(&i.to_uppercase())))
        .collect();
    let topo = format!("{:?}", s.topology).to_lowercase();
    let in_range = node.ps.wireless_in_range();
    let coordinator = node.ps.coordinator();
    let table = coordinator
        .as_ref()
        .map(|c| c.table.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default();
    let remove = |rf_id: u64| {
        format!(
            "<form method=\"post\" action=\"/settings/wireless/remove\">{h}<input type=\"hidden\" name=\"rf_id\" value=\"{rf_id:016X}\"><button type=\"submit\">Remove</button></form>"
        )
    };
    let wireless: String = s
        .pairing
        .iter()
        .map(|w| {
            let model = in_range
                .iter()
                .find(|(slot, _, _)| slot.rf_id == w.rf_id)
                .map(|(_, m, _)| m.clone())
                .or_else(|| {
                    coordinator
                        .as_ref()
                        .and_then(|c| c.device(w.rf_id))
                        .map(|d| d.model.clone())
                })
                .unwrap_or_default();
            format!(
                "<tr><td>{:016X}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                w.rf_id,
                esc(&model),
                w.unit,
                if s.ieee802154 && node.ps.wireless_connected(w.rf_id) {
                    "Connected"
                } else {
                    "Not connected"
                },
                remove(w.rf_id),
            )
        })
        .chain(
            s.install_codes
                .iter()
                .filter(|c| !s.pairing.iter().any(|p| p.rf_id == c.rf_id))
                .map(|c| {
                    let state = if table.refused.iter().any(|r| r.rf_id == c.rf_id) {
                        "Join refused: the install code entered does not match the device's"
                    } else {
                        "Awaiting join (install code entered)"
                    };
                    format!(
                        "<tr class=\"awaiting\"><td>{:016X}</td><td></td><td></td><td>{state}</td><td>{}</td></tr>",
                        c.rf_id,
                        remove(c.rf_id)
                    )
                }),
        )
        .chain(table.discovered.iter().map(|d| {
            format!(
                "<tr class=\"discovered\"><td>{:016X}</td><td></td><td></td><td>Discovered (not paired, not routed, RSSI {:.1} dBm)</td><td><form method=\"post\" action=\"/settings/wireless/add\">{h}<input type=\"hidden\" name=\"rf_id\" value=\"{:016X}\"><button type=\"submit\">Add</button></form></td></tr>",
                d.rf_id, d.rssi_dbm, d.rf_id
            )
        }))
        .collect();
    let modbus_devices: String = s
        .modbus_devices()
        .iter()
        .map(|d| {
            format!(
                "<tr><td>{unit}</td><td>{link}</td><td><form method=\"post\" action=\"/settings/modbus-devices/remove\">{h}<input type=\"hidden\" name=\"unit\" value=\"{unit}\"><button type=\"submit\">Remove</button></form></td></tr>",
                unit = d.unit(),
                link = esc(&d.describe()),
            )
        })
        .collect();
    let ntp = s.ntp_server.clone().unwrap_or_default();
    let ntp_status = |node: &Node, s: &crate::panel_server::Settings| -> String {
        if s.ntp_server.is_none() {
            return String::new();
        }
        let st = node.ntp_status(|_| {});
        match (st.error, st.last_sync) {
            (Some(e), _) => format!("Not synchronised: {e}"),
            (None, Some(t)) => format!(
                "Last synchronisation: {} (corrected {:+.3} s)",
                t.format("%Y-%m-%d %H:%M:%S UTC"),
                st.last_offset_s
            ),
            (None, None) => "Synchronising...".into(),
        }
    };
    let body = format!(
        r#"<section id="network"><h2>Network</h2><p>Topology: <strong>{topo}</strong></p><table><tr><th>Interface</th><th>IPv4 address</th></tr>{addrs}</table></section>
<section id="network-communication"><h2>Network Communication</h2><form method="post" action="/settings/network-communication">{h}
<fieldset><legend>Modbus TCP gateway</legend>
<label><input type="checkbox" id="modbus_eth1" name="modbus_eth1"{m1}> ETH1</label>
<label><input type="checkbox" id="modbus_eth2" name="modbus_eth2"{m2}> ETH2</label>
<label><input type="checkbox" id="modbus_wifi" name="modbus_wifi"{mw}> Wi-Fi</label></fieldset>
<fieldset><legend>DPWS</legend><label><input type="checkbox" id="dpws" name="dpws"{dp}> DPWS discovery</label>
<label>Metadata port <input id="dpws_port" name="dpws_port" value="{port}" size="6"></label></fieldset>
<fieldset><legend>RSTP</legend><label><input type="checkbox" id="rstp" name="rstp"{rs}> RSTP</label></fieldset>
<button id="save-network-communication" type="submit">Save</button></form></section>
<section id="wifi"><h2>Wi-Fi</h2><form method="post" action="/settings/wifi">{h}
<label><input type="checkbox" name="enabled"{we}> Wi-Fi activation</label>
<label><input type="checkbox" name="access_point"{wa}> Wi-Fi access point</label>
<label>Access point password (leave empty to keep) <input type="password" name="ap_password" autocomplete="new-password"></label>
<button type="submit">Save</button></form><p id="wifi-ap-state">{ap_state}</p></section>
<section id="wireless"><h2>Wireless devices</h2><table><tr><th>RF-ID</th><th>Model</th><th>Modbus unit</th><th>State</th><th></th></tr>{wireless}</table>
<form method="post" action="/settings/wireless">{h}<label><input type="checkbox" name="ieee802154"{ie}> IEEE 802.15.4 activation</label> <label>Protect Plus <select name="protect_plus"><option value="on"{ppon}>On: 16-character RF-IDs only by their install code</option><option value="off"{ppoff}>Off: every device discovered automatically</option></select></label><button type="submit">Save</button></form>
<form method="post" action="/settings/wireless/add">{h}<label>RF-ID (8 or 16 hexadecimal digits) <input type="text" name="rf_id" size="18" autocomplete="off"></label> <label>Install code (36 hexadecimal characters, from the device label; needed for a 16-character RF-ID, Protect Plus) <input type="text" name="install_code" size="40" autocomplete="off"></label><button type="submit">Add device</button></form>
<form method="post" action="/settings/wireless/rebuild">{h}<label><input type="checkbox" name="confirm"> Remove every device from the network; they must join again (install codes entered stay)</label><button type="submit">Rebuild network</button></form>
<form method="post" action="/settings/wireless-permanent-off">{h}<p>Wireless: <strong id="wireless-state">{perm}</strong></p><label>Radio <select name="radio"><option value="both">Wi-Fi and IEEE 802.15.4</option><option value="wifi">Wi-Fi</option><option value="ieee802154">IEEE 802.15.4</option></select></label> <label><input type="checkbox" name="confirm"> I understand that the radio chosen can never be activated again, even after a factory reset</label><button type="submit">Deactivate permanently</button></form></section>
<section id="modbus-devices"><h2>Modbus devices</h2><table><tr><th>Modbus unit</th><th>Link</th><th></th></tr>{modbus_devices}</table>
<form method="post" action="/settings/modbus-devices/add">{h}<label>Link <select name="link"><option value="serial">Modbus-SL</option><option value="tcp">Modbus TCP</option></select></label> <label>Unit id (1-247) <input name="unit" size="4"></label> <label>IP address (Modbus TCP) <input name="ip" size="16"></label> <label>Port <input name="port" size="6" value="502"></label><button type="submit">Add device</button></form></section>
<section id="datetime"><h2>Date &amp; time</h2><form method="post" action="/settings/datetime">{h}
<label><input type="radio" name="mode" value="manual"{man}> Manual, UTC: <input type="datetime-local" name="datetime"></label>
<label><input type="radio" name="mode" value="ntp"{nt}> NTP server <input name="ntp_server" value="{ntp}"></label>
<button type="submit">Save</button></form><p id="ntp-status">{ntp_status}</p></section>"#,
        m1 = checked(s.modbus.eth1),
        m2 = checked(s.modbus.eth2),
        mw = checked(s.modbus.wifi),
        dp = checked(s.dpws),
        port = s.dpws_port,
        rs = checked(s.rstp),
        we = checked(s.wifi.enabled),
        wa = checked(s.wifi.access_point),
        ie = checked(s.ieee802154),
        ppon = if s.protect_plus { " selected" } else { "" },
        ppoff = if s.protect_plus { "" } else { " selected" },
        man = checked(s.ntp_server.is_none()),
        nt = checked(s.ntp_server.is_some()),
        ntp = esc(&ntp),
        ntp_status = esc(&ntp_status(node, &s)),
        ap_state = esc(&access_point_state(node)),
        perm = match (
            node.wifi_permanently_off(),
            node.ieee802154_permanently_off()
        ) {
            (true, true) => "permanently deactivated",
            (true, false) => "Wi-Fi permanently deactivated; IEEE 802.15.4 available",
            (false, true) => "IEEE 802.15.4 permanently deactivated; Wi-Fi available",
            (false, false) => "available",
        },
    );
    layout("Settings", Some(csrf), msg, &body)
}

pub fn users(csrf: &str, msg: Option<&str>, support_enabled: bool) -> String {
    let support = if support_enabled {
        "enabled"
    } else {
        "disabled"
    };
    let body = format!(
        r##"<section><h2>Change password of {WEB_USER}</h2><p>8 to 50 characters: ASCII letters, digits and special characters, with at least three of: uppercase letters (A-Z), lowercase letters (a-z), digits (0-9), special characters (space and !"#$%&amp;'()*+,-./:;&lt;=&gt;?@[\]^_`{{|}}~).</p><form method="post" action="/users">{h}
<label>Current password <input type="password" name="current" autocomplete="current-password"></label>
<label>New password <input type="password" name="new" autocomplete="new-password"></label>
<label>Confirm new password <input type="password" name="confirm" autocomplete="new-password"></label>
<button type="submit">Change password</button></form></section>
<section><h2>{SUPPORT_USER}</h2><p>The account for the vendor's support is <strong id="support-state">{support}</strong>. Setting its password (same rules) enables it; leaving both fields empty disables it. Confirm with the password of {WEB_USER}.</p><form method="post" action="/users">{h}
<input type="hidden" name="account" value="{SUPPORT_USER}">
<label>Password of {WEB_USER} <input type="password" name="current" autocomplete="current-password"></label>
<label>New {SUPPORT_USER} password <input type="password" name="new" autocomplete="new-password"></label>
<label>Confirm <input type="password" name="confirm" autocomplete="new-password"></label>
<button type="submit">Save</button></form></section>"##,
        h = hidden(csrf)
    );
    layout("Users", Some(csrf), msg, &body)
}

pub fn firmware(node: &Node, csrf: &str, msg: Option<&str>) -> String {
    let body = format!(
        r#"<section><p>Installed firmware: <strong id="firmware-version">{}</strong></p><p>Only firmware signed by the vendor key installs. The device reboots after installing.</p>
<form method="post" action="/firmware" enctype="multipart/form-data">{}<label>Firmware image <input type="file" id="image" name="image"></label><button id="upload" type="submit">Upload and install</button></form></section>"#,
        esc(&node.settings().firmware),
        hidden(csrf)
    );
    layout("Firmware update", Some(csrf), msg, &body)
}

pub fn logs(csrf: &str, entries: &[Entry]) -> String {
    let rows: String = entries
        .iter()
        .rev()
        .take(500)
        .map(|e| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                e.time.format("%Y-%m-%d %H:%M:%S"),
                esc(e.kind.name()),
                esc(&e.detail)
            )
        })
        .collect();
    let body = format!(
        r#"<section><p><a id="download" href="/logs/audit.csv">Download the audit log (CSV)</a></p><table><tr><th>Time (device clock, UTC)</th><th>Event</th><th>Detail</th></tr>{rows}</table></section>"#
    );
    layout("Logs", Some(csrf), None, &body)
}

pub fn backup(csrf: &str, msg: Option<&str>) -> String {
    let h = hidden(csrf);
    let body = format!(
        r#"<section><h2>Download a backup</h2><p>The file is encrypted (AES-256-GCM) with this password: 6 to 32 characters (ASCII letters, digits and special characters) with at least one uppercase letter (A-Z), one lowercase letter (a-z) and one special character.</p><form method="post" action="/backup/download">{h}<label>Backup password <input type="password" name="password" autocomplete="new-password"></label><button type="submit">Download</button></form></section>
<section><h2>Restore</h2><form method="post" action="/backup/restore" enctype="multipart/form-data">{h}<label>Backup file <input type="file" name="file"></label><label>Backup password <input type="password" name="password"></label><button type="submit">Restore</button></form></section>"#
    );
    layout("Backup", Some(csrf), msg, &body)
}

pub fn maintenance(csrf: &str) -> String {
    let h = hidden(csrf);
    let body = format!(
        r#"<section><h2>Reboot</h2><form method="post" action="/maintenance/reboot">{h}<button type="submit">Reboot</button></form></section>
<section><h2>Factory reset</h2><p>A factory reset needs physical access: hold the Restart button of the Panel Server for at least 10 seconds. It erases configuration, accounts, logs, Wi-Fi passwords and wireless pairing, makes a new certificate and keeps the installed firmware. From this page the Panel Server only reboots.</p><form method="post" action="/maintenance/factory-reset">{h}<button type="submit">Factory reset</button></form></section>"#
    );
    layout("Maintenance", Some(csrf), None, &body)
}
