//! Modbus TCP framing: the MBAP header (Modbus Messaging on TCP/IP
//! Implementation Guide V1.0b, §3.1.3).
//!
//! Contract: [`decode`] is incremental and total. On a partial frame it
//! returns `Ok(None)` and consumes nothing; on a complete frame it consumes
//! exactly that frame; on a header no conforming client sends (protocol id
//! other than 0, length outside 2..=254) it returns [`FrameError`] and the
//! connection must be closed — the only safe answer, as the stream can no
//! longer be resynchronised.

use bytes::{Buf, BytesMut};

/// MBAP header length (transaction, protocol, length, unit).
pub const HEADER_LEN: usize = 7;
/// Largest PDU (the MBAP length counts unit id + PDU, at most 254).
pub const MAX_PDU: usize = 253;

/// One Modbus TCP application data unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adu {
    pub transaction: u16,
    pub unit: u8,
    pub pdu: Vec<u8>,
}

/// A header that cannot start a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("MBAP protocol id {0} is not Modbus (0)")]
    Protocol(u16),
    #[error("MBAP length {0} is outside 2..=254")]
    Length(u16),
}

/// Takes one complete frame off the front of `buf`, if there is one.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Adu>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let protocol = u16::from_be_bytes([buf[2], buf[3]]);
    if protocol != 0 {
        return Err(FrameError::Protocol(protocol));
    }
    let length = u16::from_be_bytes([buf[4], buf[5]]);
    if !(2..=254).contains(&length) {
        return Err(FrameError::Length(length));
    }
    let total = 6 + usize::from(length);
    if buf.len() < total {
        return Ok(None);
    }
    let transaction = u16::from_be_bytes([buf[0], buf[1]]);
    let unit = buf[6];
    let pdu = buf[HEADER_LEN..total].to_vec();
    buf.advance(total);
    Ok(Some(Adu {
        transaction,
        unit,
        pdu,
    }))
}

/// Appends the encoded frame to `out`.
pub fn encode(adu: &Adu, out: &mut Vec<u8>) {
    let pdu = &adu.pdu[..adu.pdu.len().min(MAX_PDU)];
    out.extend_from_slice(&adu.transaction.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
    out.push(adu.unit);
    out.extend_from_slice(pdu);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixtures() -> Vec<Vec<u8>> {
        vec![
            // mbpoll reading 8 registers at 0x3C from unit 255.
            vec![0, 1, 0, 0, 0, 6, 0xFF, 3, 0, 0x3C, 0, 8],
            // FC16 date/time write.
            vec![
                0x12, 0x34, 0, 0, 0, 0x0F, 0xFF, 0x10, 0, 0x73, 0, 4, 8, 0, 26, 0x0B, 0x16, 0x0A,
                0x1E, 0x75, 0x30,
            ],
            // Smallest legal frame: unit + function.
            vec![0xFF, 0xFF, 0, 0, 0, 2, 1, 0x2B],
        ]
    }

    #[test]
    fn every_split_point_of_every_fixture() {
        for frame in fixtures() {
            for split in 0..=frame.len() {
                let mut buf = BytesMut::from(&frame[..split]);
                let first = decode(&mut buf).unwrap();
                if split < frame.len() {
                    assert_eq!(first, None, "split {split}");
                    assert_eq!(buf.len(), split, "nothing consumed");
                    buf.extend_from_slice(&frame[split..]);
                    let adu = decode(&mut buf).unwrap().expect("complete frame");
                    let mut re = Vec::new();
                    encode(&adu, &mut re);
                    assert_eq!(re, frame);
                } else {
                    assert!(first.is_some());
                }
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn back_to_back_frames() {
        let mut buf = BytesMut::new();
        for f in fixtures() {
            buf.extend_from_slice(&f);
        }
        let mut n = 0;
        while decode(&mut buf).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn hostile_headers_are_errors() {
        let mut b = BytesMut::from(&[0u8, 1, 0, 1, 0, 6, 1][..]);
        assert_eq!(decode(&mut b), Err(FrameError::Protocol(1)));
        let mut b = BytesMut::from(&[0u8, 1, 0, 0, 0xFF, 0xFF, 1][..]);
        assert_eq!(decode(&mut b), Err(FrameError::Length(0xFFFF)));
        let mut b = BytesMut::from(&[0u8, 1, 0, 0, 0, 1, 1][..]);
        assert_eq!(decode(&mut b), Err(FrameError::Length(1)));
    }

    proptest! {
        #[test]
        fn round_trip(transaction: u16, unit: u8, pdu in proptest::collection::vec(any::<u8>(), 1..=MAX_PDU)) {
            let adu = Adu { transaction, unit, pdu };
            let mut out = Vec::new();
            encode(&adu, &mut out);
            let mut buf = BytesMut::from(&out[..]);
            prop_assert_eq!(decode(&mut buf).unwrap(), Some(adu));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode(&mut buf) {}
        }
    }
}
