//! The product label of a Panel Server: commercial reference, serial number
//! and the device code that its QR code gives (DOCA0211 "Physical Security
//! of the Device": the device code is a credential of the device, used for
//! the secure claiming in cloud applications and as the password of the
//! Wi-Fi access point).
//!
//! Contract: [`Label::of`] is the label of a site device: the serial number
//! and device code of the site file, or ones derived deterministically from
//! the site seed (and the serial number, for the code) when the site file
//! has none ([NF]: 12 characters from letters and digits without the
//! look-alikes 0/O, 1/l/I, with at least one uppercase letter, one
//! lowercase letter and one digit, so it satisfies the access point
//! password rule). [`Label::text`] is what the sticker shows.

use fieldtwin_emulator::site::{DeviceConfig, Site};

/// What the label of one Panel Server says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub commercial_reference: String,
    pub serial: String,
    pub device_code: String,
}

const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const LOWER: &[u8] = b"abcdefghijkmnpqrstuvwxyz";
const DIGITS: &[u8] = b"23456789";

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The device code derived from the site seed and the serial number.
pub fn derived_device_code(site_seed: u64, serial: &str) -> String {
    let mut state = serial
        .bytes()
        .fold(site_seed ^ 0xdc0d_e5ee_d000_0001, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let all: Vec<u8> = [UPPER, LOWER, DIGITS].concat();
    let mut code: Vec<u8> = (0..12)
        .map(|_| all[(splitmix(&mut state) % all.len() as u64) as usize])
        .collect();
    // One of each class, at three distinct positions chosen by the seed.
    let mut slots: Vec<usize> = (0..code.len()).collect();
    for class in [UPPER, LOWER, DIGITS] {
        if !code.iter().any(|c| class.contains(c)) {
            let i = (splitmix(&mut state) % slots.len() as u64) as usize;
            let at = slots.swap_remove(i);
            code[at] = class[(splitmix(&mut state) % class.len() as u64) as usize];
        } else if let Some(p) = code.iter().position(|c| class.contains(c)) {
            slots.retain(|s| *s != p);
        }
    }
    String::from_utf8(code).unwrap_or_default()
}

impl Label {
    /// The label of site device `dev` (a Panel Server).
    pub fn of(site: &Site, dev: &DeviceConfig) -> Self {
        let serial = super::serial(site, dev);
        let device_code = dev
            .panel_server
            .as_ref()
            .and_then(|p| p.device_code.clone())
            .unwrap_or_else(|| derived_device_code(site.site.seed, &serial));
        Self {
            commercial_reference: dev.model.name().to_string(),
            serial,
            device_code,
        }
    }

    /// The label as printed: reference, serial number, device code.
    pub fn text(&self) -> String {
        format!(
            "{}  S/N {}  Device code {}",
            self.commercial_reference, self.serial, self.device_code
        )
    }

    /// The access point's network name ([NF]: reference and the last four
    /// digits of the serial number).
    pub fn ssid(&self) -> String {
        let tail: String = self
            .serial
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{}-{tail}", self.commercial_reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldtwin_emulator::site::check_device_code;
    use proptest::prelude::*;

    #[test]
    fn the_default_sites_label() {
        let site = Site::default_site();
        let l = Label::of(&site, site.device("ps1").unwrap());
        assert_eq!(l.serial, "NK231730251");
        assert_eq!(l.device_code.len(), 12);
        assert!(check_device_code(&l.device_code).is_ok(), "{l:?}");
        assert_eq!(l, Label::of(&site, site.device("ps1").unwrap()), "stable");
        assert_eq!(l.ssid(), "PAS600L-0251");
        assert!(
            l.text()
                .starts_with("PAS600L  S/N NK231730251  Device code ")
        );
        // Another serial or seed, another code; the site file's code wins.
        assert_ne!(derived_device_code(1, "NK231730252"), l.device_code);
        assert_ne!(derived_device_code(2, "NK231730251"), l.device_code);
        let mut dev = site.device("ps1").unwrap().clone();
        dev.panel_server.as_mut().unwrap().device_code = Some("Given1Code".into());
        assert_eq!(Label::of(&site, &dev).device_code, "Given1Code");
    }

    proptest! {
        /// Every derived code is a valid access point password without
        /// look-alike characters.
        #[test]
        fn derived_codes_follow_the_rule(seed: u64, serial in "[A-Z0-9]{0,12}") {
            let c = derived_device_code(seed, &serial);
            prop_assert!(check_device_code(&c).is_ok(), "{}", c);
            prop_assert!(!c.contains(['0', 'O', '1', 'l', 'I']), "{}", c);
        }
    }
}
