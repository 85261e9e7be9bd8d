//! IEEE 802.15.4 MAC frames (2006 format): the data frames the wireless
//! devices send, a total parser for any frame off the air, and the FCS.
//!
//! Contract:
//! - [`fcs`] is the standard's 16-bit ITU-T CRC as transmitted (CRC-16/
//!   KERMIT: polynomial 0x1021 reflected, init 0, no final xor), appended
//!   low octet first; [`with_fcs`] appends it.
//! - [`Mac::parse`] never panics: a frame too short for its header, a bad
//!   FCS or a reserved addressing mode is an error that names it.
//! - A PSDU never exceeds 127 octets ([`super::phy::MAX_PSDU`]).

use super::phy::MAX_PSDU;

/// Frame types (bits 0-2 of the frame control field).
pub const TYPE_BEACON: u8 = 0;
pub const TYPE_DATA: u8 = 1;
pub const TYPE_ACK: u8 = 2;
pub const TYPE_COMMAND: u8 = 3;

/// CRC-16/KERMIT of `data` (the 802.15.4 FCS).
pub fn fcs(data: &[u8]) -> u16 {
    crate::crc::crc16_reflected(0x8408, 0, data)
}

/// `mpdu` followed by its FCS.
pub fn with_fcs(mpdu: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(mpdu.len() + 2);
    v.extend_from_slice(mpdu);
    v.extend_from_slice(&fcs(mpdu).to_le_bytes());
    v
}

/// A device address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addr {
    None,
    Short(u16),
    Extended(u64),
}

/// A parsed MAC frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mac {
    pub frame_type: u8,
    /// Frame pending (bit 4): in an acknowledgement, the sender has a
    /// frame waiting for the receiver.
    pub frame_pending: bool,
    pub ack_request: bool,
    pub seq: u8,
    pub dst_pan: Option<u16>,
    pub dst: Addr,
    pub src_pan: Option<u16>,
    pub src: Addr,
    pub payload: Vec<u8>,
}

/// Why a frame off the air was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} octets: a MAC frame has at least 5 (header 3 + FCS 2) and at most 127")]
    Length(usize),
    #[error("bad FCS: computed {computed:#06x}, frame carries {carried:#06x}")]
    Fcs { computed: u16, carried: u16 },
    #[error("reserved addressing mode in frame control {0:#06x}")]
    AddressMode(u16),
    #[error("frame ends inside its addressing fields")]
    Truncated,
    #[error("secured frames are not understood (security bit set)")]
    Secured,
}

impl Mac {
    /// A data frame from extended address `src` to short address `dst` of
    /// PAN `pan` (PAN id compression, no acknowledgement request).
    pub fn data(seq: u8, pan: u16, dst: u16, src: u64, payload: Vec<u8>) -> Self {
        Self {
            frame_type: TYPE_DATA,
            frame_pending: false,
            ack_request: false,
            seq,
            dst_pan: Some(pan),
            dst: Addr::Short(dst),
            src_pan: None,
            src: Addr::Extended(src),
            payload,
        }
    }

    fn mode(a: &Addr) -> u16 {
        match a {
            Addr::None => 0,
            Addr::Short(_) => 2,
            Addr::Extended(_) => 3,
        }
    }

    /// Whether the source PAN id is elided (PAN id compression): both
    /// addresses present and the source PAN absent or equal to the
    /// destination's.
    fn compresses(&self) -> bool {
        self.dst != Addr::None
            && self.src != Addr::None
            && (self.src_pan.is_none() || self.src_pan == self.dst_pan)
    }

    /// The frame as [`Mac::parse`] gives it back: a PAN id exactly where
    /// the header carries one.
    pub fn normalized(mut self) -> Self {
        if self.dst == Addr::None {
            self.dst_pan = None;
        } else {
            self.dst_pan = Some(self.dst_pan.unwrap_or(0xffff));
        }
        if self.src == Addr::None || self.compresses() {
            self.src_pan = None;
        } else {
            self.src_pan = Some(self.src_pan.or(self.dst_pan).unwrap_or(0xffff));
        }
        self.frame_type &= 7;
        self
    }

    /// The MPDU without FCS.
    pub fn encode(&self) -> Vec<u8> {
        let compress = self.compresses();
        let fc: u16 = u16::from(self.frame_type & 7)
            | (u16::from(self.frame_pending) << 4)
            | (u16::from(self.ack_request) << 5)
            | (u16::from(compress) << 6)
            | (Self::mode(&self.dst) << 10)
            | (1 << 12)
            | (Self::mode(&self.src) << 14);
        let mut v = Vec::with_capacity(23 + self.payload.len());
        v.extend_from_slice(&fc.to_le_bytes());
        v.push(self.seq);
        let addr = |v: &mut Vec<u8>, a: &Addr| match a {
            Addr::None => {}
            Addr::Short(s) => v.extend_from_slice(&s.to_le_bytes()),
            Addr::Extended(e) => v.extend_from_slice(&e.to_le_bytes()),
        };
        if self.dst != Addr::None {
            v.extend_from_slice(&self.dst_pan.unwrap_or(0xffff).to_le_bytes());
            addr(&mut v, &self.dst);
        }
        if self.src != Addr::None {
            if !compress {
                v.extend_from_slice(
                    &self
                        .src_pan
                        .or(self.dst_pan)
                        .unwrap_or(0xffff)
                        .to_le_bytes(),
                );
            }
            addr(&mut v, &self.src);
        }
        v.extend_from_slice(&self.payload);
        v
    }

    /// The PSDU (MPDU + FCS).
    pub fn to_psdu(&self) -> Vec<u8> {
        with_fcs(&self.encode())
    }

    /// Parses a PSDU (with its FCS).
    pub fn parse(psdu: &[u8]) -> Result<Self, FrameError> {
        if psdu.len() < 5 || psdu.len() > MAX_PSDU {
            return Err(FrameError::Length(psdu.len()));
        }
        let (body, tail) = psdu.split_at(psdu.len() - 2);
        let carried = u16::from_le_bytes([tail[0], tail[1]]);
        let computed = fcs(body);
        if computed != carried {
            return Err(FrameError::Fcs { computed, carried });
        }
        let fc = u16::from_le_bytes([body[0], body[1]]);
        if fc & (1 << 3) != 0 {
            return Err(FrameError::Secured);
        }
        let dst_mode = (fc >> 10) & 3;
        let src_mode = (fc >> 14) & 3;
        if dst_mode == 1 || src_mode == 1 {
            return Err(FrameError::AddressMode(fc));
        }
        let compress = fc & (1 << 6) != 0;
        let mut at = 3usize;
        let mut take = |n: usize| -> Result<&[u8], FrameError> {
            let s = body.get(at..at + n).ok_or(FrameError::Truncated)?;
            at += n;
            Ok(s)
        };
        let mut dst_pan = None;
        let mut dst = Addr::None;
        if dst_mode != 0 {
            let b = take(2)?;
            dst_pan = Some(u16::from_le_bytes([b[0], b[1]]));
            dst = read_addr(dst_mode, &mut take)?;
        }
        let mut src_pan = None;
        let mut src = Addr::None;
        if src_mode != 0 {
            if !(compress && dst_mode != 0) {
                let b = take(2)?;
                src_pan = Some(u16::from_le_bytes([b[0], b[1]]));
            }
            src = read_addr(src_mode, &mut take)?;
        }
        Ok(Self {
            frame_type: (fc & 7) as u8,
            frame_pending: fc & (1 << 4) != 0,
            ack_request: fc & (1 << 5) != 0,
            seq: body[2],
            dst_pan,
            dst,
            src_pan,
            src,
            payload: body[at..].to_vec(),
        })
    }
}

/// An address of `mode` (2 short, 3 extended, else none) read with `take`.
fn read_addr<'a>(
    mode: u16,
    take: &mut impl FnMut(usize) -> Result<&'a [u8], FrameError>,
) -> Result<Addr, FrameError> {
    Ok(match mode {
        2 => {
            let b = take(2)?;
            Addr::Short(u16::from_le_bytes([b[0], b[1]]))
        }
        3 => {
            let b = take(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Addr::Extended(u64::from_le_bytes(a))
        }
        _ => Addr::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fcs_is_crc16_kermit() {
        assert_eq!(fcs(b"123456789"), 0x2189);
        // An 802.15.4 acknowledgement (seq 0x56) as captured: 02 00 56 + FCS.
        let ack = with_fcs(&[0x02, 0x00, 0x56]);
        assert_eq!(Mac::parse(&ack).unwrap().frame_type, TYPE_ACK);
    }

    #[test]
    fn data_frame_round_trips() {
        let m = Mac::data(7, 0x1a2b, 0x0000, 0x2A3B_0001, vec![0, 1, 2]);
        let psdu = m.to_psdu();
        // FC 0x9841: data, PAN id compression, short dst, 2006, long src.
        assert_eq!(&psdu[..2], &[0x41, 0xd8]);
        assert_eq!(psdu.len(), 3 + 2 + 2 + 8 + 3 + 2);
        assert_eq!(Mac::parse(&psdu).unwrap(), m);
        let mut bad = psdu.clone();
        bad[5] ^= 1;
        assert!(matches!(Mac::parse(&bad), Err(FrameError::Fcs { .. })));
    }

    fn addr() -> impl Strategy<Value = Addr> {
        prop_oneof![
            Just(Addr::None),
            any::<u16>().prop_map(Addr::Short),
            any::<u64>().prop_map(Addr::Extended),
        ]
    }

    proptest! {
        #[test]
        fn encode_parse_round_trips(
            frame_type in 0u8..8,
            frame_pending in any::<bool>(),
            ack_request in any::<bool>(),
            seq in any::<u8>(),
            dst_pan in proptest::option::of(any::<u16>()),
            dst in addr(),
            src_pan in proptest::option::of(any::<u16>()),
            src in addr(),
            payload in proptest::collection::vec(any::<u8>(), 0..90),
        ) {
            let m = Mac { frame_type, frame_pending, ack_request, seq, dst_pan, dst, src_pan, src, payload }.normalized();
            let psdu = m.to_psdu();
            prop_assert!(psdu.len() <= MAX_PSDU);
            prop_assert_eq!(Mac::parse(&psdu), Ok(m.clone()));
            // Any single flipped bit is caught by the FCS.
            let bit = (usize::from(seq) * 7) % (psdu.len() * 8);
            let mut bad = psdu.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Mac::parse(&bad).is_err());
        }

        #[test]
        fn parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..140)) {
            let _ = Mac::parse(&bytes);
            let _ = Mac::parse(&with_fcs(&bytes));
        }
    }
}
