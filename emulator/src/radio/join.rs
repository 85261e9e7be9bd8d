//! Commissioning frames of the wireless devices ([NF]: the products'
//! join exchange is proprietary; this one is documented in docs/radio.md
//! "Commissioning" so a lab can read and forge it).
//!
//! Contract:
//! - A [`Request`] (device -> Panel Server) is a data frame addressed like
//!   a report (PAN id compression, destination the coordinator's short
//!   address 0x0000 in the Panel Server's PAN, source the device's RF-ID
//!   as extended address). Payload: `0x3F` ([`super::report::MARKER`]),
//!   [`REQUEST`] (0x10), a nonce (u32, little endian), the device kind
//!   (1 PowerTag, 2 sensor) and a 4-octet message integrity code.
//! - An [`Accept`] (Panel Server -> device) is a data frame from the
//!   coordinator's short address to the device's extended address in the
//!   same PAN. Payload: `0x3F`, [`ACCEPT`] (0x11), the nonce of the
//!   request it answers, a status (0 = accepted) and a 4-octet code.
//! - The integrity codes ([`mic`], [NF]): the first 4 octets of
//!   HMAC-SHA256 keyed with the device's install code key (128 bits) over
//!   `ft-join-request` or `ft-join-accept`, the RF-ID (u64 LE) and the
//!   nonce. Parsing is total: anything else is an error naming it.
//! - A [`Leave`] (Panel Server -> device) is the standard's MAC command
//!   Disassociation Notification (IEEE 802.15.4-2006 7.3.3): command frame,
//!   acknowledgement requested, PAN id compression, destination the
//!   device's RF-ID as extended address in the Panel Server's PAN, source
//!   the coordinator's extended address ([`coordinator_address`], [NF]);
//!   payload: command 0x03 ([`DISASSOCIATION`]) and the reason (0x01: the
//!   coordinator wishes the device to leave).

use super::frame::{Addr, FrameError, Mac, TYPE_COMMAND, TYPE_DATA};
use super::report::{COORDINATOR, MARKER};

/// Second payload octet of a join request.
pub const REQUEST: u8 = 0x10;
/// Second payload octet of a join accept.
pub const ACCEPT: u8 = 0x11;
/// MAC command identifier of the Disassociation Notification.
pub const DISASSOCIATION: u8 = 0x03;
/// Disassociation reason: the coordinator wishes the device to leave.
pub const REASON_COORDINATOR: u8 = 0x01;

/// The extended address of the coordinator of the Panel Server whose
/// radio id is `radio` ([NF]: derived from its id, with the locally
/// administered bit of an EUI-64 set so it never looks like a vendor's).
pub fn coordinator_address(radio: u64) -> u64 {
    (radio & !(0xFF << 56)) | (0x02 << 56)
}

/// Payload length of both frames.
pub const PAYLOAD_LEN: usize = 11;

/// A device asks to join the Panel Server's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub pan: u16,
    pub rf_id: u64,
    pub seq: u8,
    pub nonce: u32,
    /// 1 = PowerTag, 2 = ambient sensor.
    pub kind: u8,
    pub mic: [u8; 4],
}

/// The Panel Server lets a device in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    pub pan: u16,
    pub rf_id: u64,
    pub seq: u8,
    pub nonce: u32,
    pub status: u8,
    pub mic: [u8; 4],
}

/// Why a frame is not a join frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("not a join frame (addressing, marker or type octet)")]
    NotJoin,
    #[error("join payload of {0} octets: a join frame has {PAYLOAD_LEN}")]
    Length(usize),
    #[error("disassociation notification payload of {0} octets: it has 2 (command 0x03, reason)")]
    LeaveLength(usize),
}

/// The integrity code of a join request (`accept: false`) or accept
/// (`true`) of RF-ID `rf_id` with `nonce`, keyed with install code `key`.
pub fn mic(key: &[u8; 16], accept: bool, rf_id: u64, nonce: u32) -> [u8; 4] {
    use hmac::{Hmac, Mac as _};
    let mut m = <Hmac<sha2::Sha256>>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(if accept {
        b"ft-join-accept"
    } else {
        b"ft-join-request"
    });
    m.update(&rf_id.to_le_bytes());
    m.update(&nonce.to_le_bytes());
    let h = m.finalize().into_bytes();
    [h[0], h[1], h[2], h[3]]
}

fn payload(kind: u8, nonce: u32, octet: u8, mic: [u8; 4]) -> Vec<u8> {
    let mut p = Vec::with_capacity(PAYLOAD_LEN);
    p.extend_from_slice(&[MARKER, kind]);
    p.extend_from_slice(&nonce.to_le_bytes());
    p.push(octet);
    p.extend_from_slice(&mic);
    p
}

/// The type octet, nonce, the octet after it and the code of a join payload.
fn fields(p: &[u8], want: u8) -> Result<(u32, u8, [u8; 4]), JoinError> {
    if p.len() < 2 || p[0] != MARKER || p[1] != want {
        return Err(JoinError::NotJoin);
    }
    if p.len() != PAYLOAD_LEN {
        return Err(JoinError::Length(p.len()));
    }
    let nonce = u32::from_le_bytes([p[2], p[3], p[4], p[5]]);
    Ok((nonce, p[6], [p[7], p[8], p[9], p[10]]))
}

impl Request {
    /// The PSDU (FCS included).
    pub fn to_psdu(&self) -> Vec<u8> {
        Mac::data(
            self.seq,
            self.pan,
            COORDINATOR,
            self.rf_id,
            payload(REQUEST, self.nonce, self.kind, self.mic),
        )
        .to_psdu()
    }

    /// Parses a PSDU off the air.
    pub fn parse(psdu: &[u8]) -> Result<Self, JoinError> {
        let m = Mac::parse(psdu)?;
        let (TYPE_DATA, Some(pan), Addr::Short(COORDINATOR), Addr::Extended(rf_id)) =
            (m.frame_type, m.dst_pan, m.dst, m.src)
        else {
            return Err(JoinError::NotJoin);
        };
        let (nonce, kind, mic) = fields(&m.payload, REQUEST)?;
        Ok(Self {
            pan,
            rf_id,
            seq: m.seq,
            nonce,
            kind,
            mic,
        })
    }
}

/// The Panel Server tells a device to leave its network (the MAC
/// command Disassociation Notification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leave {
    pub pan: u16,
    /// The device's RF-ID (its extended address).
    pub rf_id: u64,
    /// The coordinator's extended address.
    pub coordinator: u64,
    pub seq: u8,
    pub reason: u8,
}

impl Leave {
    /// The PSDU (FCS included).
    pub fn to_psdu(&self) -> Vec<u8> {
        Mac {
            frame_type: TYPE_COMMAND,
            frame_pending: false,
            ack_request: true,
            seq: self.seq,
            dst_pan: Some(self.pan),
            dst: Addr::Extended(self.rf_id),
            src_pan: None,
            src: Addr::Extended(self.coordinator),
            payload: vec![DISASSOCIATION, self.reason],
        }
        .to_psdu()
    }

    /// Parses a PSDU off the air.
    pub fn parse(psdu: &[u8]) -> Result<Self, JoinError> {
        let m = Mac::parse(psdu)?;
        let (TYPE_COMMAND, Some(pan), Addr::Extended(rf_id), Addr::Extended(coordinator)) =
            (m.frame_type, m.dst_pan, m.dst, m.src)
        else {
            return Err(JoinError::NotJoin);
        };
        match m.payload[..] {
            [DISASSOCIATION, reason] => Ok(Self {
                pan,
                rf_id,
                coordinator,
                seq: m.seq,
                reason,
            }),
            [DISASSOCIATION, ..] => Err(JoinError::LeaveLength(m.payload.len())),
            _ => Err(JoinError::NotJoin),
        }
    }
}

impl Accept {
    /// The PSDU (FCS included).
    pub fn to_psdu(&self) -> Vec<u8> {
        Mac {
            frame_type: TYPE_DATA,
            frame_pending: false,
            ack_request: false,
            seq: self.seq,
            dst_pan: Some(self.pan),
            dst: Addr::Extended(self.rf_id),
            src_pan: None,
            src: Addr::Short(COORDINATOR),
            payload: payload(ACCEPT, self.nonce, self.status, self.mic),
        }
        .to_psdu()
    }

    /// Parses a PSDU off the air.
    pub fn parse(psdu: &[u8]) -> Result<Self, JoinError> {
        let m = Mac::parse(psdu)?;
        let (TYPE_DATA, Some(pan), Addr::Extended(rf_id), Addr::Short(COORDINATOR)) =
            (m.frame_type, m.dst_pan, m.dst, m.src)
        else {
            return Err(JoinError::NotJoin);
        };
        let (nonce, status, mic) = fields(&m.payload, ACCEPT)?;
        Ok(Self {
            pan,
            rf_id,
            seq: m.seq,
            nonce,
            status,
            mic,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn join_frames_round_trip_and_are_not_reports() {
        let r = Request {
            pan: 0x5e15,
            rf_id: 0x8A3B_0000_0000_C0DE,
            seq: 3,
            nonce: 77,
            kind: 2,
            mic: [1, 2, 3, 4],
        };
        assert_eq!(Request::parse(&r.to_psdu()), Ok(r));
        assert_eq!(Accept::parse(&r.to_psdu()), Err(JoinError::NotJoin));
        let a = Accept {
            pan: 0x5e15,
            rf_id: r.rf_id,
            seq: 9,
            nonce: 77,
            status: 0,
            mic: [9, 8, 7, 6],
        };
        assert_eq!(Accept::parse(&a.to_psdu()), Ok(a));
        assert_eq!(Request::parse(&a.to_psdu()), Err(JoinError::NotJoin));
        let report = super::super::report::Report {
            pan: 1,
            rf_id: 2,
            seq: 0,
            kind: 1,
            counter: 1,
            readings: vec![(1, 2.0)],
        };
        assert_eq!(Request::parse(&report.to_psdu()), Err(JoinError::NotJoin));
        let l = Leave {
            pan: 0x5e15,
            rf_id: r.rf_id,
            coordinator: coordinator_address(0x1234_5678_9abc_def0),
            seq: 4,
            reason: REASON_COORDINATOR,
        };
        let psdu = l.to_psdu();
        // FC 0xDC63: command, ack request, PAN id compression, long dst,
        // 2006, long src; the command id and the reason close the MPDU.
        assert_eq!(&psdu[..2], &[0x63, 0xdc]);
        assert_eq!(&psdu[psdu.len() - 4..psdu.len() - 2], &[0x03, 0x01]);
        assert_eq!(psdu.len(), 3 + 2 + 8 + 8 + 2 + 2);
        assert_eq!(Leave::parse(&psdu), Ok(l));
        assert_eq!(Leave::parse(&a.to_psdu()), Err(JoinError::NotJoin));
        assert_eq!(Request::parse(&psdu), Err(JoinError::NotJoin));
        assert_eq!(l.coordinator >> 56, 0x02);
    }

    proptest! {
        #[test]
        fn parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..130)) {
            let _ = Request::parse(&bytes);
            let _ = Accept::parse(&super::super::frame::with_fcs(&bytes));
            let _ = Leave::parse(&super::super::frame::with_fcs(&bytes));
        }
    }
}
