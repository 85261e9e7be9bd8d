//! The Data Logger's cellular modem: technology, signal strength, network
//! coverage and the attach state, as plain state on virtual time.
//!
//! Contract (seed 004 "Cellular Modem (4G, 3G, 2G)"; docs/datalogger.md):
//! - Coverage and the mean signal are properties of the place (the network
//!   around the logger): they survive the logger's power cycles and change
//!   only by the `Cellular` command.
//! - After power-on, or when coverage comes back, the modem attaches after
//!   [`ATTACH_S`] seconds of virtual time ([NF] figure); it detaches at once
//!   when coverage is lost or the power goes.
//! - The reported RSSI is the mean signal plus seeded +-3 dB per minute.

use std::time::Duration;

use fieldtwin_emulator::site::CellTechnology;

use crate::field::physics::noise;

/// Seconds from power-on (or coverage back) to attached.
pub const ATTACH_S: u64 = 8;

/// The radio environment and the modem.
#[derive(Debug, Clone)]
pub struct Modem {
    pub technology: CellTechnology,
    /// Mean received signal strength, dBm.
    pub signal_dbm: f64,
    pub coverage: bool,
    seed: u64,
    /// When the modem started (re)attaching; `None` while off or out of coverage.
    attaching_since: Option<Duration>,
}

impl Modem {
    pub fn new(technology: CellTechnology, signal_dbm: f64, seed: u64) -> Self {
        Self {
            technology,
            signal_dbm,
            coverage: true,
            seed,
            attaching_since: None,
        }
    }

    /// The logger powers the modem on (or off) at `now`.
    pub fn set_powered(&mut self, on: bool, now: Duration) {
        self.attaching_since = (on && self.coverage).then_some(now);
    }

    /// Coverage lost or back at `now`; `powered` is the logger's state.
    pub fn set_coverage(&mut self, coverage: bool, powered: bool, now: Duration) {
        if coverage != self.coverage {
            self.coverage = coverage;
            self.attaching_since = (coverage && powered).then_some(now);
        }
    }

    /// Whether the modem is attached (can carry data) at `now`.
    pub fn attached(&self, now: Duration) -> bool {
        self.coverage
            && self
                .attaching_since
                .is_some_and(|t| now >= t + Duration::from_secs(ATTACH_S))
    }

    /// When it will be attached, if it is attaching.
    pub fn attached_at(&self) -> Option<Duration> {
        self.attaching_since
            .filter(|_| self.coverage)
            .map(|t| t + Duration::from_secs(ATTACH_S))
    }

    /// RSSI in dBm at `now` (`None` without coverage).
    pub fn rssi(&self, now: Duration) -> Option<f64> {
        self.coverage.then(|| {
            let k = (now.as_secs() / 60) as i64;
            (self.signal_dbm + 3.0 * noise(self.seed, 0xCE11, k)).round()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attaches_after_the_delay_and_detaches_on_coverage_loss() {
        let mut m = Modem::new(CellTechnology::Lte, -85.0, 1);
        let t = Duration::from_secs(100);
        assert!(!m.attached(t));
        m.set_powered(true, t);
        assert!(!m.attached(t + Duration::from_secs(ATTACH_S - 1)));
        assert!(m.attached(t + Duration::from_secs(ATTACH_S)));
        m.set_coverage(false, true, t + Duration::from_secs(20));
        assert!(!m.attached(t + Duration::from_secs(30)));
        assert_eq!(m.rssi(t), None);
        m.set_coverage(true, true, t + Duration::from_secs(40));
        assert!(!m.attached(t + Duration::from_secs(41)));
        assert!(m.attached(t + Duration::from_secs(40 + ATTACH_S)));
        let r = m.rssi(t).unwrap();
        assert!((-88.0..=-82.0).contains(&r));
        m.set_powered(false, t + Duration::from_secs(60));
        assert!(!m.attached(t + Duration::from_secs(100)));
    }
}
