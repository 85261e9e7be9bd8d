//! Wireless devices on the Settings page: pairing by install code and
//! removal.

use super::settings::change_settings;
use super::*;

#[derive(Deserialize)]
pub(super) struct AddWirelessForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    install_code: String,
}

/// The RF-ID an install code starts with. [NF] layout: 36 hexadecimal
/// characters, the device's 16-digit RF-ID then 20 of key and check
/// (docs/panel-server.md).
pub fn install_code_rf_id(code: &str) -> Result<u64, String> {
    let code = code.trim();
    if code.chars().count() != 36 {
        return Err(format!(
            "an install code has 36 characters, this one has {}",
            code.chars().count()
        ));
    }
    if !code.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("an install code has only hexadecimal characters (0-9, A-F)".into());
    }
    u64::from_str_radix(&code[..16], 16).map_err(|e| e.to_string())
}

/// Pairs the in-range device whose RF-ID the install code carries.
pub(super) async fn add_wireless(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<AddWirelessForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    if node.wireless_permanently_off() {
        node.audit(
            Kind::ConfigurationChanged,
            "wireless device not added: IEEE 802.15.4 is permanently deactivated",
        );
        return (
            StatusCode::BAD_REQUEST,
            Html(pages::settings(
                &node,
                &a.csrf,
                Some("Not added: the IEEE 802.15.4 radio of this device is permanently deactivated, so no wireless device can be paired (not even after a factory reset)."),
            )),
        )
            .into_response();
    }
    let found = install_code_rf_id(&f.install_code).and_then(|rf_id| {
        node.ps
            .wireless_in_range()
            .into_iter()
            .find(|(slot, _)| slot.rf_id == rf_id)
            .map(|(slot, _)| slot)
            .ok_or_else(|| format!("no device with RF-ID {rf_id:016X} answered the discovery"))
    });
    change_settings(&node, &a.csrf, "wireless devices (device added)", |s| {
        let slot = found?;
        if s.pairing.iter().any(|p| p.rf_id == slot.rf_id) {
            return Err(format!("{:016X} is already paired", slot.rf_id));
        }
        if s.pairing.len() >= usize::from(crate::panel_server::registers::WIRELESS_SLOTS) {
            return Err("the wireless device table is full (100 devices)".into());
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
