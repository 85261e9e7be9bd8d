//! The reflected (least significant bit first) CRC-16 that the emulated
//! links share: IEEE 802.15.4's FCS (CRC-16/KERMIT), Zigbee install codes
//! (CRC-16/X-25), Modbus RTU and SDI-12 differ only in the polynomial and
//! the initial value.
//!
//! Contract: [`crc16_reflected`] is the bitwise register, no final XOR
//! (callers that need one apply it); its `poly` is the reflected polynomial
//! (0x8408 for x^16 + x^12 + x^5 + 1, 0xA001 for x^16 + x^15 + x^2 + 1).

/// CRC-16 of `data`, bits least significant first, with the reflected
/// polynomial `poly` and the register starting at `init`.
#[inline]
pub fn crc16_reflected(poly: u16, init: u16, data: &[u8]) -> u16 {
    let mut crc = init;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ poly
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check values of the catalogue of parametrised CRC algorithms
    /// (reveng) for "123456789".
    #[test]
    fn check_values_of_the_four_variants() {
        let d = b"123456789";
        assert_eq!(crc16_reflected(0x8408, 0, d), 0x2189, "KERMIT");
        assert_eq!(!crc16_reflected(0x8408, 0xFFFF, d), 0x906E, "X-25");
        assert_eq!(crc16_reflected(0xA001, 0xFFFF, d), 0x4B37, "MODBUS");
        assert_eq!(crc16_reflected(0xA001, 0, d), 0xBB3D, "ARC");
    }
}
