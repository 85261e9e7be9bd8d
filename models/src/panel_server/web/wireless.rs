//! Wireless devices on the Settings page: pairing by RF-ID and install
//! code, and removal.
//!
//! Contract: a device is paired only when it is in radio range and the
//! install code typed is its own (docs/panel-server.md "Wireless
//! devices"); a malformed code is refused with the rule it breaks, a
//! well-formed wrong one is a failed authentication (counted toward the
//! webpages' lockout and audited, [`crate::security::login::check_credential`]).

use super::settings::change_settings;
use fieldtwin_emulator::site::InstallCode;

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

/// Pairs the in-range device with that RF-ID when the install code is its
/// own. A well-formed code that is not the device's is refused, counted
/// toward the lockout and audited like a failed login.
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
        .and_then(|rf_id| InstallCode::parse(&f.install_code).map(|code| (rf_id, code)));
    let (rf_id, code) = match parsed {
        Ok(v) => v,
        Err(m) => return refusal(&node, &a.csrf, StatusCode::BAD_REQUEST, &m),
    };
    let Some((slot, _, own)) = node
        .ps
        .wireless_in_range()
        .into_iter()
        .find(|(slot, _, _)| slot.rf_id == rf_id)
    else {
        return refusal(
            &node,
            &a.csrf,
            StatusCode::BAD_REQUEST,
            &format!("no device with RF-ID {rf_id:016X} answered the discovery"),
        );
    };
    {
        let _guard = node.auth.lock().await;
        let what = format!("the install code given for wireless device {rf_id:016X} is wrong");
        if let Err(refused) =
            crate::security::login::check_credential(&node, code == own, "wireless pairing", &what)
        {
            let (status, m) = match refused {
                Outcome::Locked(m) => (StatusCode::FORBIDDEN, m),
                Outcome::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
                Outcome::Wrong(m) | Outcome::Ok(m) => (StatusCode::BAD_REQUEST, m),
            };
            return refusal(&node, &a.csrf, status, &m);
        }
    }
    change_settings(&node, &a.csrf, "wireless devices (device added)", |s| {
        if s.pairing.iter().any(|p| p.rf_id == slot.rf_id) {
            return Err(format!("{:016X} is already paired", slot.rf_id));
        }
        if s.pairing.len() >= usize::from(crate::panel_server::registers::WIRELESS_SLOTS) {
            return Err("the wireless device table is full (100 devices)".into());
        }
        if s.modbus_devices().iter().any(|d| d.unit() == slot.unit) {
            return Err(format!(
                "unit id {} is used by a Modbus device; remove it first",
                slot.unit
            ));
        }
        s.pairing.push(slot);
        Ok(())
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
        let before = s.pairing.len();
        s.pairing.retain(|p| p.rf_id != rf_id);
        if s.pairing.len() == before {
            return Err(format!("{rf_id:016X} is not paired"));
        }
        Ok(())
    })
    .await
}
