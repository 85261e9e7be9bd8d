//! Wireless devices on the Settings page: adding by RF-ID (automatic
//! discovery) or install code (Protect Plus, selective discovery),
//! removal, and rebuilding the network ([`commission`], docs/radio.md
//! "Commissioning").
//!
//! Contract: an 8-character RF-ID is added only when the Panel Server
//! heard it (discovered) or it is one of the site's devices; a
//! 16-character one needs its install code and is paired when it joins
//! over the radio with it. A malformed code is refused with the rule it
//! breaks; a well-formed code given for one of the site's devices that
//! is not its own is a failed authentication (counted toward the
//! webpages' lockout and audited, [`crate::security::login::check_credential`]).

use super::settings::change_settings;
use crate::panel_server::commission;

use super::*;

#[derive(Deserialize)]
pub(super) struct AddWirelessForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    rf_id: String,
    #[serde(default)]
    install_code: String,
}

/// Parses the RF-ID typed on the page: up to 16 hexadecimal digits.
pub fn parse_rf_id(text: &str) -> Result<u64, String> {
    fieldtwin_emulator::site::parse_rf_id(text.trim()).ok_or_else(|| {
        format!(
            "{:?} is not an RF-ID; an RF-ID has up to 16 hexadecimal digits (0-9, A-F)",
            text.trim()
        )
    })
}

fn refusal(node: &Arc<Node>, csrf: &str, code: StatusCode, m: &str) -> Response {
    (
        code,
        Html(pages::settings(
            node,
            csrf,
            Some(&format!("Not added: {m}")),
        )),
    )
        .into_response()
}

/// Adds a device (docs/radio.md "Commissioning", [`commission::add`]):
/// a discovered device with an 8-character RF-ID at once; a Protect Plus
/// device (16 characters) by its install code, when it next asks to join.
/// An install code given for one of the site's devices is checked against
/// its label: a well-formed code that is not the device's is refused,
/// counted toward the lockout and audited like a failed login.
pub(super) async fn add_wireless(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<AddWirelessForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    if node.ieee802154_permanently_off() {
        node.audit(
            Kind::ConfigurationChanged,
            "wireless device not added: IEEE 802.15.4 is permanently deactivated",
        );
        return refusal(
            &node,
            &a.csrf,
            StatusCode::BAD_REQUEST,
            "the IEEE 802.15.4 radio of this device is permanently deactivated, so no wireless device can be paired (not even after a factory reset).",
        );
    }
    let parsed = parse_rf_id(&f.rf_id)
        .and_then(|rf_id| commission::parse_code(Some(&f.install_code)).map(|c| (rf_id, c)));
    let (rf_id, code) = match parsed {
        Ok(v) => v,
        Err(m) => return refusal(&node, &a.csrf, StatusCode::BAD_REQUEST, &m),
    };
    // An 8-character site device's code is checked at once (it answers
    // the discovery); a Protect Plus device's when it asks to join.
    let own = node
        .ps
        .site_install_code(rf_id)
        .filter(|_| !crate::panel_server::radio::protect_plus(rf_id));
    if let (Some(code), Some(own)) = (code, own) {
        let _guard = node.auth.lock().await;
        let what = format!("the install code given for wireless device {rf_id:016X} is wrong");
        if let Err(refused) =
            crate::security::login::check_credential(&node, code == own, "wireless pairing", &what)
        {
            let (status, m) = https::refusal(refused);
            return refusal(&node, &a.csrf, status, &m);
        }
    }
    let known = node.ps.site_unit(rf_id).is_some()
        || node
            .ps
            .wireless_discovered()
            .iter()
            .any(|d| d.rf_id == rf_id);
    let selective = commission::selective(&node.settings(), rf_id, code.is_some());
    if !known && !selective {
        return refusal(
            &node,
            &a.csrf,
            StatusCode::BAD_REQUEST,
            &format!("no device with RF-ID {rf_id:016X} answered the discovery"),
        );
    }
    let what = if selective {
        "wireless devices (install code entered)"
    } else {
        "wireless devices (device added)"
    };
    let reserved = node.ps.site_units();
    let units = commission::Units {
        site: node.ps.site_unit(rf_id),
        reserved: &reserved,
    };
    change_settings(&node, &a.csrf, what, |s| {
        commission::add(s, rf_id, code, known, units).map(|_| ())
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct RemoveWirelessForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    rf_id: String,
}

pub(super) async fn remove_wireless(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<RemoveWirelessForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    change_settings(&node, &a.csrf, "wireless devices (device removed)", |s| {
        let rf_id = u64::from_str_radix(f.rf_id.trim(), 16)
            .map_err(|_| format!("{:?} is not an RF-ID", f.rf_id))?;
        commission::remove(s, rf_id)
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct RebuildForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: Option<String>,
}

/// Rebuilds the IEEE 802.15.4 network: every device is removed and must
/// join again (the install codes entered stay), so only identified
/// devices are added back (seed "Connected Devices").
pub(super) async fn rebuild_wireless(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<RebuildForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    if f.confirm.is_none() {
        return refusal(
            &node,
            &a.csrf,
            StatusCode::BAD_REQUEST,
            "tick the confirmation: rebuilding removes every wireless device from the network.",
        );
    }
    if let Some(c) = node.ps.coordinator() {
        c.forget();
    }
    change_settings(&node, &a.csrf, "wireless devices (network rebuilt)", |s| {
        commission::rebuild(s);
        Ok(())
    })
    .await
}
