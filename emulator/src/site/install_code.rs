//! Install codes of IEEE 802.15.4 wireless devices (PowerTag Energy,
//! environmental sensors), as Zigbee install codes are: a 128-bit key
//! followed by its CRC-16.
//!
//! Contract:
//! - [`InstallCode::parse`] reads 36 hexadecimal characters (16 key bytes,
//!   then the CRC-16/X-25 of the key, least significant byte first, the
//!   order in which Zigbee install codes are printed); spaces, `-` and `:`
//!   between digits are ignored. A code of another length, with other
//!   characters or whose CRC does not match the key is refused with the
//!   rule it breaks.
//! - [`InstallCode::derived`] is the code of a device whose site file gives
//!   none: the key comes from the site seed and the device id, so it is
//!   stable for a site and differs per device ([NF]).
//! - [`InstallCode::text`] prints the 36 characters in uppercase.

use std::fmt;

/// Length of an install code in hexadecimal characters (16 + 2 bytes).
pub const INSTALL_CODE_HEX_LEN: usize = 36;

/// A wireless device's install code: key and CRC.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InstallCode {
    pub key: [u8; 16],
}

impl fmt::Debug for InstallCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A credential: never printed by Debug.
        f.write_str("InstallCode(..)")
    }
}

/// CRC-16/X-25 (poly 0x1021 reflected, init 0xFFFF, xorout 0xFFFF): the
/// check of Zigbee install codes.
pub fn crc16_x25(data: &[u8]) -> u16 {
    !crate::crc::crc16_reflected(0x8408, 0xFFFF, data)
}

impl InstallCode {
    /// Parses a printed install code (see the module contract).
    pub fn parse(text: &str) -> Result<Self, String> {
        let hex: String = text
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | ':'))
            .collect();
        if let Some(c) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(format!(
                "an install code has only hexadecimal characters (0-9, A-F), not {c:?}"
            ));
        }
        if hex.len() != INSTALL_CODE_HEX_LEN {
            return Err(format!(
                "an install code has {INSTALL_CODE_HEX_LEN} hexadecimal characters (32 of key, 4 of CRC), this one has {}",
                hex.len()
            ));
        }
        let mut bytes = [0u8; 18];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| "an install code has only hexadecimal characters".to_string())?;
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&bytes[..16]);
        let crc = u16::from_le_bytes([bytes[16], bytes[17]]);
        if crc != crc16_x25(&key) {
            return Err(
                "the install code's check digits (CRC, the last 4 characters) do not match its key: a typing error?"
                    .into(),
            );
        }
        Ok(Self { key })
    }

    /// The code of a device without one in the site file, from the site
    /// seed and the device id.
    pub fn derived(site_seed: u64, device_id: &str) -> Self {
        let mut state = device_id
            .bytes()
            .fold(site_seed ^ 0x1c0d_e000_5eed_0001, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        let mut key = [0u8; 16];
        for chunk in key.chunks_mut(8) {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_be_bytes());
        }
        Self { key }
    }

    /// The 36 characters as printed on the device's label.
    pub fn text(&self) -> String {
        let crc = crc16_x25(&self.key).to_le_bytes();
        self.key
            .iter()
            .chain(crc.iter())
            .map(|b| format!("{b:02X}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_the_x25_of_zigbee_install_codes() {
        assert_eq!(crc16_x25(b"123456789"), 0x906E);
        // The install code example of the Zigbee specifications.
        let c = InstallCode::parse("83FED3407A939723A5C639B26916D505C3B5").unwrap();
        assert_eq!(c.text(), "83FED3407A939723A5C639B26916D505C3B5");
        assert!(InstallCode::parse("83FE D340 7A93 9723 A5C6 39B2 6916 D505 C3B5").is_ok());
        assert!(InstallCode::parse("83fed3407a939723a5c639b26916d505c3b5").is_ok());
    }

    #[test]
    fn bad_codes_are_refused_with_the_rule() {
        let e = InstallCode::parse("1234").unwrap_err();
        assert!(e.contains("36 hexadecimal characters"), "{e}");
        let e = InstallCode::parse("83FED3407A939723A5C639B26916D505C3B4").unwrap_err();
        assert!(e.contains("CRC"), "{e}");
        let e = InstallCode::parse("83FED3407A939723A5C639B26916D505C3BZ").unwrap_err();
        assert!(e.contains("hexadecimal"), "{e}");
    }

    #[test]
    fn derived_codes_are_valid_stable_and_per_device() {
        let a = InstallCode::derived(1, "pt-lighting");
        assert_eq!(a, InstallCode::derived(1, "pt-lighting"));
        assert_ne!(a, InstallCode::derived(1, "pt-hvac"));
        assert_ne!(a, InstallCode::derived(2, "pt-lighting"));
        assert_eq!(InstallCode::parse(&a.text()).unwrap(), a);
    }

    proptest::proptest! {
        /// Any text is parsed or refused with a message, never a panic;
        /// every key prints as a code that parses back to it, and a
        /// changed character is caught.
        #[test]
        fn parse_is_total_and_round_trips(text in ".{0,60}", key in proptest::array::uniform16(0u8..), at in 0usize..36) {
            let _ = InstallCode::parse(&text);
            let code = InstallCode { key };
            let printed = code.text();
            proptest::prop_assert_eq!(InstallCode::parse(&printed), Ok(code));
            let mut typo: Vec<char> = printed.chars().collect();
            typo[at] = if typo[at] == '0' { '1' } else { '0' };
            let typo: String = typo.into_iter().collect();
            proptest::prop_assert!(InstallCode::parse(&typo).is_err());
        }
    }
}
