//! Settings page (network communication, Wi-Fi, IEEE 802.15.4, permanent
//! wireless deactivation, date and time) and `GET/PUT /api/settings`.
//!
//! Contract: every change goes through [`change_settings`], which refuses
//! wireless functions after a permanent deactivation, saves, restarts the
//! changed services and audits.

use super::*;

pub(super) async fn settings_page(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    Html(pages::settings(&node, &a.csrf, None)).into_response()
}

/// Applies a change to the settings and answers with the settings page.
pub(super) async fn change_settings(
    node: &Arc<Node>,
    csrf: &str,
    what: &str,
    f: impl FnOnce(&mut Settings) -> Result<(), String>,
) -> Response {
    let _guard = node.auth.lock().await;
    let mut s = node.settings();
    let r = f(&mut s).and_then(|()| wireless_allowed(node, &s));
    if let Err(m) = r {
        return (
            StatusCode::BAD_REQUEST,
            Html(pages::settings(
                node,
                csrf,
                Some(&format!("Not saved: {m}")),
            )),
        )
            .into_response();
    }
    if s == node.settings() {
        return Html(pages::settings(node, csrf, Some("No change."))).into_response();
    }
    match node.apply(s).await {
        Ok(()) => {
            node.audit(
                Kind::ConfigurationChanged,
                format!("{what} settings changed"),
            );
            Html(pages::settings(node, csrf, Some("Saved."))).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html(pages::settings(
                node,
                csrf,
                Some(&format!("Saved, but a service could not restart: {e}")),
            )),
        )
            .into_response(),
    }
}

/// Refuses wireless functions after a permanent deactivation.
pub(super) fn wireless_allowed(node: &Node, s: &Settings) -> Result<(), String> {
    let (wifi_off, ieee_off) = crate::panel_server::node::permanently_off(&node.ctx.nv);
    if wifi_off && (s.wifi.enabled || s.wifi.access_point || s.modbus.wifi) {
        return Err("Wi-Fi is permanently deactivated on this device; it cannot be activated again (not even by a factory reset)".into());
    }
    if ieee_off && s.ieee802154 {
        return Err("IEEE 802.15.4 is permanently deactivated on this device; it cannot be activated again (not even by a factory reset)".into());
    }
    Ok(())
}

#[derive(Deserialize)]
pub(super) struct PermanentOffForm {
    #[serde(default)]
    csrf: String,
    confirm: Option<String>,
    /// `wifi`, `ieee802154` or `both` (the default).
    #[serde(default)]
    radio: String,
}

pub(super) async fn wireless_permanent_off(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<PermanentOffForm>,
) -> Response {
    use crate::panel_server::node::{Radio, force_off};
    let a = post_auth!(node, headers, &f.csrf);
    let radio = match f.radio.as_str() {
        "" | "both" => Radio::Both,
        "wifi" => Radio::Wifi,
        "ieee802154" => Radio::Ieee802154,
        other => {
            return (
                StatusCode::BAD_REQUEST,
                Html(pages::settings(
                    &node,
                    &a.csrf,
                    Some(&format!(
                        "Not done: {other:?} is not a radio; choose wifi, ieee802154 or both."
                    )),
                )),
            )
                .into_response();
        }
    };
    if f.confirm.is_none() {
        return (
            StatusCode::BAD_REQUEST,
            Html(pages::settings(
                &node,
                &a.csrf,
                Some("Not done: tick the confirmation box to deactivate wireless permanently."),
            )),
        )
            .into_response();
    }
    if let Err(e) = node.ctx.nv.put(radio.key(), &true) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html(pages::message("Error", &e.to_string())),
        )
            .into_response();
    }
    node.audit(
        Kind::ConfigurationChanged,
        format!("{} permanently deactivated", radio.name()),
    );
    change_settings(&node, &a.csrf, "wireless", |s| {
        force_off(s, radio);
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct NetCommForm {
    #[serde(default)]
    csrf: String,
    modbus_eth1: Option<String>,
    modbus_eth2: Option<String>,
    modbus_wifi: Option<String>,
    dpws: Option<String>,
    #[serde(default)]
    dpws_port: String,
    rstp: Option<String>,
}

pub(super) async fn save_netcomm(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<NetCommForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    change_settings(&node, &a.csrf, "network communication", |s| {
        s.modbus.eth1 = f.modbus_eth1.is_some();
        s.modbus.eth2 = f.modbus_eth2.is_some();
        s.modbus.wifi = f.modbus_wifi.is_some();
        s.dpws = f.dpws.is_some();
        s.rstp = f.rstp.is_some();
        if !f.dpws_port.trim().is_empty() {
            let p: u16 = f.dpws_port.trim().parse().map_err(|_| {
                format!("DPWS port {:?} is not a port number (1-65535)", f.dpws_port)
            })?;
            if p == 0 || p == HTTPS_PORT || p == crate::panel_server::MODBUS_PORT {
                return Err(format!(
                    "DPWS port {p} is not allowed (1-65535, not 443 or 502)"
                ));
            }
            s.dpws_port = p;
        }
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct WifiForm {
    #[serde(default)]
    csrf: String,
    enabled: Option<String>,
    access_point: Option<String>,
    #[serde(default)]
    ap_password: String,
}

pub(super) async fn save_wifi(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<WifiForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    change_settings(&node, &a.csrf, "Wi-Fi", |s| {
        s.wifi.enabled = f.enabled.is_some();
        // Deactivating Wi-Fi also disables the access point (DOCA0211).
        s.wifi.access_point = f.enabled.is_some() && f.access_point.is_some();
        if !f.ap_password.is_empty() {
            password::check(&node.config.rules.wifi_ap, &f.ap_password)
                .map_err(|e| format!("Wi-Fi access point password: {e}"))?;
            s.wifi.ap_password = Some(f.ap_password.clone());
        }
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct WirelessForm {
    #[serde(default)]
    csrf: String,
    ieee802154: Option<String>,
    /// `on` or `off`; absent: unchanged.
    protect_plus: Option<String>,
}

pub(super) async fn save_wireless(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<WirelessForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    change_settings(&node, &a.csrf, "wireless devices", |s| {
        s.ieee802154 = f.ieee802154.is_some();
        match f.protect_plus.as_deref() {
            None => {}
            Some("on") => s.protect_plus = true,
            Some("off") => s.protect_plus = false,
            Some(other) => {
                return Err(format!(
                    "Protect Plus {other:?} is not a choice; use on or off"
                ));
            }
        }
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct DateTimeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    datetime: String,
    #[serde(default)]
    ntp_server: String,
}

pub(super) async fn save_datetime(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<DateTimeForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    if f.mode == "manual" && !f.datetime.is_empty() {
        let parsed = chrono::NaiveDateTime::parse_from_str(&f.datetime, "%Y-%m-%dT%H:%M")
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(&f.datetime, "%Y-%m-%dT%H:%M:%S"));
        let Ok(t) = parsed else {
            return (
                StatusCode::BAD_REQUEST,
                Html(pages::settings(
                    &node,
                    &a.csrf,
                    Some("Not saved: the date/time must be YYYY-MM-DDTHH:MM (UTC)"),
                )),
            )
                .into_response();
        };
        let before = node.ctx.rtc.now();
        if node.ctx.rtc.set(t.and_utc()).is_err() {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html(pages::message("Error", "the RTC could not be saved")),
            )
                .into_response();
        }
        node.audit(
            Kind::DateTimeChanged,
            format!(
                "date/time set manually from {} to {}",
                before.format("%Y-%m-%dT%H:%M:%SZ"),
                t.format("%Y-%m-%dT%H:%M:%SZ")
            ),
        );
    }
    let server = f.ntp_server.trim().to_string();
    let mode = f.mode.clone();
    change_settings(&node, &a.csrf, "date and time", move |s| {
        if mode == "ntp" {
            if server.is_empty() || server.len() > 253 || server.contains(char::is_whitespace) {
                return Err(
                    "NTP mode needs a server name or address (no spaces, at most 253 characters)"
                        .into(),
                );
            }
            s.ntp_server = Some(server);
        } else {
            s.ntp_server = None;
        }
        Ok(())
    })
    .await
}

pub(super) async fn api_settings(State(node): St, headers: HeaderMap) -> Response {
    api!(node, headers);
    let mut s = node.settings();
    s.wifi.ap_password = s.wifi.ap_password.map(|_| "********".into());
    // Install codes are keys: never read back.
    for c in &mut s.install_codes {
        c.install_code = "********".into();
    }
    Json(s).into_response()
}

pub(super) async fn api_put_settings(
    State(node): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    api!(node, headers);
    let new: Settings = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                &format!("invalid settings JSON: {e}"),
            );
        }
    };
    let _guard = node.auth.lock().await;
    let mut s = new;
    let cur = node.settings();
    s.firmware = cur.firmware.clone();
    s.topology = cur.topology;
    if s.modbus_devices.is_none() {
        s.modbus_devices = cur.modbus_devices.clone();
    }
    // Install codes are entered on the Settings page (or the control
    // API's radio_commission), not through this API.
    s.install_codes = cur.install_codes.clone();
    // Pairing needs the device's install code (Settings page); the API may
    // only remove paired devices.
    if let Some(p) = s.pairing.iter().find(|p| !cur.pairing.contains(p)) {
        return api_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "pairing: {:016X} (unit {}) is not paired; a wireless device is paired with its install code on the Settings page, the API can only remove devices",
                p.rf_id, p.unit
            ),
        );
    }
    if let Err(e) =
        crate::panel_server::topology::check(node.ps.model, s.modbus_devices(), &s.pairing)
    {
        return api_error(StatusCode::BAD_REQUEST, &format!("modbus_devices: {e}"));
    }
    match s.wifi.ap_password.as_deref() {
        Some("********") | None => s.wifi.ap_password = cur.wifi.ap_password.clone(),
        Some(p) => {
            if let Err(e) = password::check(&node.config.rules.wifi_ap, p) {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Wi-Fi access point password: {e}"),
                );
            }
        }
    }
    if let Err(e) = wireless_allowed(&node, &s) {
        return api_error(StatusCode::BAD_REQUEST, &e);
    }
    if s.dpws_port == 0
        || s.dpws_port == HTTPS_PORT
        || s.dpws_port == crate::panel_server::MODBUS_PORT
    {
        return api_error(
            StatusCode::BAD_REQUEST,
            "dpws_port must be 1-65535 and not 443 or 502",
        );
    }
    if s != cur {
        if let Err(e) = node.apply(s).await {
            return api_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
        node.audit(
            Kind::ConfigurationChanged,
            "settings changed through the API",
        );
    }
    Json(node.settings()).into_response()
}
