//! The application payload of a wireless device's periodic report, inside
//! an IEEE 802.15.4 data frame ([NF]: the real devices' payload is
//! proprietary; this one is documented in docs/radio.md so a lab can read
//! and forge it).
//!
//! Contract:
//! - MAC: data frame, 2006 format, PAN id compression, no acknowledgement
//!   request, destination the coordinator's short address 0x0000 in the
//!   Panel Server's PAN, source the device's RF-ID as extended address.
//! - Payload: octet 0 = [`MARKER`] (0x3F, a "not a LoWPAN frame" dispatch,
//!   so Wireshark shows it as data), octet 1 = [`Report::kind`], octets
//!   2-5 = frame counter (u32, little endian), then up to 16 readings of
//!   5 octets each: a quantity id ([`Quantity`]) and an f32 (little endian).
//! - [`Report::parse`] is total: anything else is an error naming it.

use super::frame::{Addr, FrameError, Mac, TYPE_DATA};

/// First payload octet of a report.
pub const MARKER: u8 = 0x3F;
/// Short address of the coordinator (the Panel Server).
pub const COORDINATOR: u16 = 0x0000;
/// Most readings in one report.
pub const MAX_READINGS: usize = 16;

/// Quantity ids of the readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Quantity {
    /// Active power, W.
    ActivePower = 1,
    /// Total active energy, kWh.
    EnergyKwh = 2,
    /// Voltage A-N, V.
    Voltage = 3,
    /// Temperature, °C.
    Temperature = 4,
    /// Relative humidity, %.
    Humidity = 5,
    /// CO2, ppm.
    Co2 = 6,
}

/// A parsed report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub pan: u16,
    pub rf_id: u64,
    /// MAC sequence number.
    pub seq: u8,
    /// 1 = PowerTag, 2 = ambient sensor ([NF]).
    pub kind: u8,
    pub counter: u32,
    pub readings: Vec<(u8, f32)>,
}

/// Why a frame is not a report.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("not a data frame from an extended address to a short one")]
    Addressing,
    #[error("the payload is not a report (first octet {0:#04x}, a report starts with 0x3f)")]
    Marker(u8),
    #[error("report payload of {0} octets: 6 + 5 per reading (at most 16)")]
    Length(usize),
}

impl Report {
    /// The PSDU (FCS included) of this report.
    pub fn to_psdu(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(6 + 5 * self.readings.len());
        p.push(MARKER);
        p.push(self.kind);
        p.extend_from_slice(&self.counter.to_le_bytes());
        for (q, v) in self.readings.iter().take(MAX_READINGS) {
            p.push(*q);
            p.extend_from_slice(&v.to_le_bytes());
        }
        Mac::data(self.seq, self.pan, COORDINATOR, self.rf_id, p).to_psdu()
    }

    /// Parses a PSDU off the air.
    pub fn parse(psdu: &[u8]) -> Result<Self, ReportError> {
        let m = Mac::parse(psdu)?;
        let (TYPE_DATA, Some(pan), Addr::Short(_), Addr::Extended(rf_id)) =
            (m.frame_type, m.dst_pan, m.dst, m.src)
        else {
            return Err(ReportError::Addressing);
        };
        let p = &m.payload;
        match p.first() {
            Some(&MARKER) => {}
            Some(&b) => return Err(ReportError::Marker(b)),
            None => return Err(ReportError::Length(0)),
        }
        if p.len() < 6 || (p.len() - 6) % 5 != 0 || (p.len() - 6) / 5 > MAX_READINGS {
            return Err(ReportError::Length(p.len()));
        }
        let readings = p[6..]
            .chunks_exact(5)
            .map(|c| (c[0], f32::from_le_bytes([c[1], c[2], c[3], c[4]])))
            .collect();
        Ok(Self {
            pan,
            rf_id,
            seq: m.seq,
            kind: p[1],
            counter: u32::from_le_bytes([p[2], p[3], p[4], p[5]]),
            readings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_report_round_trips() {
        let r = Report {
            pan: 0x5e15,
            rf_id: 0x2A3B_0001,
            seq: 9,
            kind: 1,
            counter: 70_000,
            readings: vec![
                (Quantity::ActivePower as u8, 1234.5),
                (Quantity::EnergyKwh as u8, 12.0),
            ],
        };
        let psdu = r.to_psdu();
        assert_eq!(psdu.len(), 15 + 6 + 10 + 2);
        assert_eq!(Report::parse(&psdu), Ok(r));
        let not = Mac::data(1, 1, 0, 2, vec![0x41, 0, 0, 0, 0, 0]).to_psdu();
        assert_eq!(Report::parse(&not), Err(ReportError::Marker(0x41)));
    }

    proptest! {
        #[test]
        fn parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..130)) {
            let _ = Report::parse(&bytes);
            let _ = Report::parse(&super::super::frame::with_fcs(&bytes));
        }

        #[test]
        fn reports_round_trip(pan in any::<u16>(), rf_id in any::<u64>(), seq in any::<u8>(),
                              kind in any::<u8>(), counter in any::<u32>(),
                              readings in proptest::collection::vec((any::<u8>(), -1e6f32..1e6), 0..16)) {
            let r = Report { pan, rf_id, seq, kind, counter, readings };
            prop_assert_eq!(Report::parse(&r.to_psdu()), Ok(r));
        }
    }
}
