//! Modbus RTU framing (Modbus over Serial Line V1.02, §2.5): `[unit][PDU][CRC-16 lo, hi]`.
//!
//! Contract:
//! - [`crc16`] is the Modbus CRC-16 (polynomial 0xA001 reflected, init 0xFFFF),
//!   transmitted low byte first.
//! - [`encode`] builds a frame; [`decode`] is total: it returns the unit and
//!   PDU of a well-formed frame, or an [`RtuError`] saying what was wrong
//!   (too short, too long, bad CRC) — never a panic.
//! - [`char_bits`] and [`frame_time`] give the time a frame occupies the
//!   line: start bit + 8 data bits + parity bit (if any) + stop bits per
//!   character, plus the 3.5-character silence that ends a frame (fixed at
//!   1.75 ms above 19200 baud, §2.5.1.1).

use std::time::Duration;

/// Longest RTU frame (§2.5.1): 256 bytes.
pub const MAX_FRAME: usize = 256;

/// Why an RTU frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtuError {
    #[error("RTU frame of {0} bytes is too short (at least 4: unit, function, CRC)")]
    TooShort(usize),
    #[error("RTU frame of {0} bytes is too long (at most 256)")]
    TooLong(usize),
    #[error("RTU frame CRC is {got:#06x}, expected {expected:#06x}")]
    BadCrc { got: u16, expected: u16 },
}

/// Modbus CRC-16 of `data`.
pub fn crc16(data: &[u8]) -> u16 {
    fieldtwin_emulator::crc::crc16_reflected(0xA001, 0xFFFF, data)
}

/// Builds the RTU frame of `pdu` for `unit`.
pub fn encode(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pdu.len() + 3);
    out.push(unit);
    out.extend_from_slice(pdu);
    let crc = crc16(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a whole frame (as delimited by line silence); returns unit and PDU.
pub fn decode(frame: &[u8]) -> Result<(u8, &[u8]), RtuError> {
    if frame.len() < 4 {
        return Err(RtuError::TooShort(frame.len()));
    }
    if frame.len() > MAX_FRAME {
        return Err(RtuError::TooLong(frame.len()));
    }
    let (body, crc) = frame.split_at(frame.len() - 2);
    let got = u16::from_le_bytes([crc[0], crc[1]]);
    let expected = crc16(body);
    if got != expected {
        return Err(RtuError::BadCrc { got, expected });
    }
    Ok((body[0], &body[1..]))
}

/// Bits per character on a line with this parity and stop bits.
pub fn char_bits(parity: bool, stop_bits: u8) -> u32 {
    1 + 8 + u32::from(parity) + u32::from(stop_bits)
}

/// Time a frame of `len` bytes occupies the line, inter-frame silence included.
pub fn frame_time(len: usize, baud: u32, bits_per_char: u32) -> Duration {
    let baud = f64::from(baud.max(1));
    let char_s = f64::from(bits_per_char) / baud;
    let silence = if baud > 19_200.0 {
        0.001_75
    } else {
        3.5 * char_s
    };
    Duration::from_secs_f64(len as f64 * char_s + silence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc_matches_the_spec_example() {
        // Read holding registers, unit 1, address 0, count 1: 01 03 00 00 00 01 84 0A.
        assert_eq!(
            encode(1, &[3, 0, 0, 0, 1]),
            vec![1, 3, 0, 0, 0, 1, 0x84, 0x0A]
        );
    }

    #[test]
    fn corrupted_frames_are_rejected() {
        let mut f = encode(7, &[3, 0x0B, 0xD3, 0, 2]);
        f[3] ^= 0x40;
        assert!(matches!(decode(&f), Err(RtuError::BadCrc { .. })));
        assert_eq!(decode(&[1, 3]), Err(RtuError::TooShort(2)));
    }

    #[test]
    fn a_9600_baud_8e1_request_takes_its_time() {
        // 8 bytes x 11 bits at 9600 baud = 9.17 ms, + 3.5 chars = 4.01 ms.
        let t = frame_time(8, 9600, char_bits(true, 1));
        assert!((t.as_secs_f64() - 0.013_177).abs() < 1e-5, "{t:?}");
    }

    proptest! {
        #[test]
        fn frames_round_trip(unit in any::<u8>(), pdu in proptest::collection::vec(any::<u8>(), 1..253)) {
            let f = encode(unit, &pdu);
            prop_assert_eq!(decode(&f), Ok((unit, &pdu[..])));
        }

        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }
    }
}
