//! IEEE 802.15.4 commissioning of a Panel Server's wireless devices
//! (seed "Wireless Network" and "Connected Devices"; devices.md §1.5;
//! docs/radio.md "Commissioning"): the changes to the settings that the
//! Settings page and the control API (`radio_commission`) both make.
//!
//! Contract (pure functions of the settings; the caller saves them):
//! - [`add`] of an 8-character RF-ID (automatic discovery) pairs it at
//!   once, with the first free unit id from 100 (a site device keeps the
//!   unit id its site file gives), provided the Panel Server heard it
//!   (discovered) or it is one of its site's devices; otherwise no device
//!   with that RF-ID answered the discovery. An install code given with
//!   it is kept (the join accept is then keyed with it).
//! - [`add`] of a 16-character RF-ID (Protect Plus) needs its 36-character
//!   install code while Protect Plus is on (the default): the code goes to
//!   the selective list and the device is paired only when its next join
//!   request over the radio carries the integrity code that install code
//!   gives ([`join`]). With Protect Plus off ([`Settings::protect_plus`])
//!   such a device is added like an 8-character one (it must have been
//!   discovered); given with its code it still takes the selective way.
//! - [`remove`] unpairs an RF-ID and drops its install code; [`rebuild`]
//!   unpairs every device (the install codes entered stay: the devices
//!   identified by them join again, the others must be added again).
//! - Refusals say what was wrong and what is allowed.

use fieldtwin_emulator::site::InstallCode;
use serde::{Deserialize, Serialize};

use super::FIRST_WIRELESS_UNIT;
use super::Settings;
use super::radio::protect_plus;
use super::registers::{WIRELESS_SLOTS, WirelessSlot};

/// An install code the administrator entered for an RF-ID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selective {
    pub rf_id: u64,
    /// The 36 hexadecimal characters.
    pub install_code: String,
}

/// The install codes of the selective list that parse.
pub fn codes(list: &[Selective]) -> Vec<(u64, InstallCode)> {
    list.iter()
        .filter_map(|s| {
            InstallCode::parse(&s.install_code)
                .ok()
                .map(|c| (s.rf_id, c))
        })
        .collect()
}

/// What [`add`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Added {
    /// Paired at this unit id.
    Paired(WirelessSlot),
    /// A Protect Plus device: paired when it joins with that code.
    AwaitingJoin,
}

/// Where a device's unit id comes from: the unit id the site file gives
/// it (`site`), else the first free one from 100 that is not `reserved`
/// (the site devices' unit ids, kept for them).
#[derive(Debug, Clone, Copy, Default)]
pub struct Units<'a> {
    pub site: Option<u8>,
    pub reserved: &'a [u8],
}

/// A unit id for `rf_id` (see [`Units`]).
fn unit_for(s: &Settings, rf_id: u64, units: Units) -> Result<u8, String> {
    let site_unit = units.site;
    if s.pairing.len() >= usize::from(WIRELESS_SLOTS) {
        return Err(format!(
            "the wireless device table is full ({WIRELESS_SLOTS} devices); remove one first"
        ));
    }
    let taken = |u: u8| {
        s.pairing.iter().any(|p| p.unit == u) || s.modbus_devices().iter().any(|d| d.unit() == u)
    };
    if let Some(u) = site_unit {
        if taken(u) {
            return Err(format!(
                "unit id {u} of {rf_id:016X} is used by another device; remove it first"
            ));
        }
        return Ok(u);
    }
    (FIRST_WIRELESS_UNIT..=247)
        .find(|u| !taken(*u) && !units.reserved.contains(u))
        .ok_or_else(|| "no unit id is free (100-247)".to_string())
}

/// Adds device `rf_id` (see the module contract). `known`: the Panel
/// Server heard it or it is one of its site's devices.
pub fn add(
    s: &mut Settings,
    rf_id: u64,
    code: Option<InstallCode>,
    known: bool,
    units: Units,
) -> Result<Added, String> {
    if s.pairing.iter().any(|p| p.rf_id == rf_id) {
        return Err(format!("{rf_id:016X} is already paired"));
    }
    if selective(s, rf_id, code.is_some()) {
        let code = code.ok_or_else(|| {
            format!(
                "{rf_id:016X} has a 16-character RF-ID (a Protect Plus device): it is discovered only by its 36-character install code; enter the code printed on its label"
            )
        })?;
        set_code(s, rf_id, &code);
        return Ok(Added::AwaitingJoin);
    }
    if !known {
        return Err(format!(
            "no device with RF-ID {rf_id:016X} answered the discovery"
        ));
    }
    let unit = unit_for(s, rf_id, units)?;
    let slot = WirelessSlot { rf_id, unit };
    s.pairing.push(slot);
    if let Some(c) = code {
        set_code(s, rf_id, &c);
    }
    Ok(Added::Paired(slot))
}

/// Whether adding `rf_id` goes through the selective list (its install
/// code checked at its join): a 16-character RF-ID while Protect Plus is
/// on, or whenever its code is given.
pub fn selective(s: &Settings, rf_id: u64, code_given: bool) -> bool {
    protect_plus(rf_id) && (s.protect_plus || code_given)
}

fn set_code(s: &mut Settings, rf_id: u64, code: &InstallCode) {
    s.install_codes.retain(|c| c.rf_id != rf_id);
    s.install_codes.push(Selective {
        rf_id,
        install_code: code.text(),
    });
}

/// A Protect Plus device joined with the right code: paired.
pub fn join(s: &mut Settings, rf_id: u64, units: Units) -> Result<WirelessSlot, String> {
    if let Some(p) = s.pairing.iter().find(|p| p.rf_id == rf_id) {
        return Ok(*p);
    }
    let unit = unit_for(s, rf_id, units)?;
    let slot = WirelessSlot { rf_id, unit };
    s.pairing.push(slot);
    Ok(slot)
}

/// Removes device `rf_id` and its install code.
pub fn remove(s: &mut Settings, rf_id: u64) -> Result<(), String> {
    let before = (s.pairing.len(), s.install_codes.len());
    s.pairing.retain(|p| p.rf_id != rf_id);
    s.install_codes.retain(|c| c.rf_id != rf_id);
    if (s.pairing.len(), s.install_codes.len()) == before {
        return Err(format!(
            "{rf_id:016X} is neither paired nor awaiting its join"
        ));
    }
    Ok(())
}

/// Unpairs every device; returns how many were paired.
pub fn rebuild(s: &mut Settings) -> usize {
    std::mem::take(&mut s.pairing).len()
}

/// Parses an RF-ID as typed: up to 16 hexadecimal digits.
pub fn parse_rf_id(text: &str) -> Result<u64, String> {
    fieldtwin_emulator::site::parse_rf_id(text.trim()).ok_or_else(|| {
        format!(
            "{:?} is not an RF-ID; an RF-ID has up to 16 hexadecimal digits (0-9, A-F)",
            text.trim()
        )
    })
}

/// Parses an optional install code as typed (empty: none).
pub fn parse_code(text: Option<&str>) -> Result<Option<InstallCode>, String> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => InstallCode::parse(t).map(Some),
    }
}

impl super::node::Node {
    /// Carries out commissioning action `op` for the control API
    /// (`radio_commission`), audited; answers what was done.
    pub async fn commission(
        self: &std::sync::Arc<Self>,
        op: fieldtwin_emulator::device::CommissionAction,
        rf_id: Option<&str>,
        code: Option<&str>,
    ) -> Result<String, String> {
        use fieldtwin_emulator::device::CommissionAction as Op;
        let rf = || {
            rf_id
                .ok_or_else(|| {
                    format!("{op:?} needs \"rf_id\" (up to 16 hexadecimal digits)").to_lowercase()
                })
                .and_then(parse_rf_id)
        };
        if op == Op::Add && self.ieee802154_permanently_off() {
            return Err(
                "the IEEE 802.15.4 radio of this device is permanently deactivated, so no wireless device can be added (not even after a factory reset)".into(),
            );
        }
        let _serial = self.auth.lock().await;
        let mut s = self.settings();
        let msg = match op {
            Op::Add => {
                let rf_id = rf()?;
                let code = parse_code(code)?;
                // An 8-character site device answers the discovery with
                // its code at once; a Protect Plus device when it joins.
                let own = self
                    .ps
                    .site_install_code(rf_id)
                    .filter(|_| !protect_plus(rf_id));
                if let (Some(c), Some(own)) = (code, own)
                    && c != own
                {
                    return Err(format!(
                        "the install code given for wireless device {rf_id:016X} is wrong"
                    ));
                }
                let known = self.ps.site_unit(rf_id).is_some()
                    || self
                        .ps
                        .wireless_discovered()
                        .iter()
                        .any(|d| d.rf_id == rf_id);
                let reserved = self.ps.site_units();
                let units = Units {
                    site: self.ps.site_unit(rf_id),
                    reserved: &reserved,
                };
                match add(&mut s, rf_id, code, known, units)? {
                    Added::Paired(slot) => {
                        format!("wireless device {rf_id:016X} added (unit {})", slot.unit)
                    }
                    Added::AwaitingJoin => format!(
                        "install code of wireless device {rf_id:016X} entered: it is added when it asks to join"
                    ),
                }
            }
            Op::Remove => {
                let rf_id = rf()?;
                remove(&mut s, rf_id)?;
                format!("wireless device {rf_id:016X} removed")
            }
            Op::Rebuild => {
                let n = rebuild(&mut s);
                if let Some(c) = self.ps.coordinator() {
                    c.forget();
                }
                format!("wireless network rebuilt: {n} device(s) removed, they must join again")
            }
        };
        self.apply(s).await.map_err(|e| e.to_string())?;
        self.audit(
            crate::security::audit::Kind::ConfigurationChanged,
            format!("{msg} (control API)"),
        );
        Ok(msg)
    }

    /// A Protect Plus device joined over the radio with the install code
    /// entered for it: paired (unit id saved, Modbus routes restarted).
    pub async fn joined(self: &std::sync::Arc<Self>, rf_id: u64) {
        let _serial = self.auth.lock().await;
        let mut s = self.settings();
        let before = s.clone();
        let reserved = self.ps.site_units();
        let units = Units {
            site: self.ps.site_unit(rf_id),
            reserved: &reserved,
        };
        match join(&mut s, rf_id, units) {
            Ok(slot) if s != before => {
                if let Err(e) = self.apply(s).await {
                    tracing::error!("{}: pairing {rf_id:016X}: {e}", self.ctx.id);
                }
                self.audit(
                    crate::security::audit::Kind::ConfigurationChanged,
                    format!(
                        "wireless device {rf_id:016X} joined with its install code (unit {})",
                        slot.unit
                    ),
                );
            }
            Ok(_) => {}
            Err(e) => {
                self.audit(
                    crate::security::audit::Kind::ConfigurationChanged,
                    format!("wireless device {rf_id:016X} joined but was not added: {e}"),
                );
                // Not paired after all: the coordinator lets it go again.
                self.ps.radio_configure(
                    &self.settings(),
                    self.ieee802154_permanently_off(),
                    self.ctx.clock.now(),
                    false,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> InstallCode {
        InstallCode::derived(1, "x")
    }

    fn settings() -> Settings {
        serde_json::from_str(
            r#"{"topology":"switched","modbus":{"eth1":true,"eth2":true,"wifi":false},"firmware":"002.002.000"}"#,
        )
        .unwrap()
    }

    #[test]
    fn eight_character_rf_ids_pair_at_once_sixteen_wait_for_their_join() {
        let mut s = settings();
        assert!(
            add(&mut s, 0xDEAD_BEEF, None, false, Units::default())
                .unwrap_err()
                .contains("answered the discovery")
        );
        assert_eq!(
            add(&mut s, 0xDEAD_BEEF, None, true, Units::default()),
            Ok(Added::Paired(WirelessSlot {
                rf_id: 0xDEAD_BEEF,
                unit: 100
            }))
        );
        assert!(add(&mut s, 0xDEAD_BEEF, None, true, Units::default()).is_err());
        let pp = 0x8A3B_0000_0000_C0DE;
        assert!(
            add(&mut s, pp, None, true, Units::default())
                .unwrap_err()
                .contains("install code")
        );
        assert_eq!(
            add(&mut s, pp, Some(code()), false, Units::default()),
            Ok(Added::AwaitingJoin)
        );
        assert!(s.pairing.iter().all(|p| p.rf_id != pp));
        assert_eq!(codes(&s.install_codes), vec![(pp, code())]);
        assert_eq!(join(&mut s, pp, Units::default()).unwrap().unit, 101);
        assert_eq!(rebuild(&mut s), 2);
        assert_eq!(codes(&s.install_codes).len(), 1, "the codes stay");
        assert!(remove(&mut s, pp).is_ok());
        assert!(remove(&mut s, pp).is_err());
    }

    /// devices.md §1.5: Protect Plus is on by default; off, a
    /// 16-character RF-ID is discovered automatically and added like an
    /// 8-character one (its code, if given, still checked at its join).
    #[test]
    fn protect_plus_off_adds_sixteen_character_rf_ids_like_eight() {
        let mut s = settings();
        assert!(s.protect_plus, "on by default");
        let pp = 0x8A3B_0000_0000_C0DE;
        s.protect_plus = false;
        assert!(
            add(&mut s, pp, None, false, Units::default())
                .unwrap_err()
                .contains("answered the discovery")
        );
        assert_eq!(
            add(&mut s, pp, None, true, Units::default()),
            Ok(Added::Paired(WirelessSlot {
                rf_id: pp,
                unit: 100
            }))
        );
        let other = 0x8A3B_0000_0000_C0DF;
        assert_eq!(
            add(&mut s, other, Some(code()), false, Units::default()),
            Ok(Added::AwaitingJoin)
        );
        s.protect_plus = true;
        let third = 0x8A3B_0000_0000_C0E0;
        assert!(
            add(&mut s, third, None, true, Units::default())
                .unwrap_err()
                .contains("install code")
        );
    }

    #[test]
    fn a_site_unit_taken_is_refused() {
        let mut s = Settings {
            pairing: vec![WirelessSlot {
                rf_id: 1,
                unit: 100,
            }],
            ..settings()
        };
        assert!(
            add(
                &mut s,
                2,
                None,
                true,
                Units {
                    site: Some(100),
                    reserved: &[]
                }
            )
            .unwrap_err()
            .contains("unit id 100")
        );
        let reserved = [101, 102];
        let units = Units {
            site: None,
            reserved: &reserved,
        };
        assert_eq!(join(&mut s, 3, units).unwrap().unit, 103);
    }
}
