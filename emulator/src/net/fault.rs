//! Link faults: latency, jitter, loss, bandwidth and partition, applied as a
//! wrapper on a switch port (DESIGN.md principle 4, "Networking").
//!
//! Contract:
//! - A [`LinkFault`] is plain configuration; [`Shaper`] is its state and
//!   decides, per frame, whether it is dropped or when it is delivered
//!   (`now` is passed in, no wall clock inside).
//! - Each direction of a port has its own shaper; a fault applies to both.
//! - The default fault ([`LinkFault::is_clear`]) passes every frame at once.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// What a link suffers (the body of `POST /api/v1/links/{device}`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LinkFault {
    /// Added one-way delay in milliseconds.
    pub latency_ms: f64,
    /// Uniform random extra delay in `0..jitter_ms` milliseconds.
    pub jitter_ms: f64,
    /// Share of frames lost, in percent (0-100).
    pub loss_pct: f64,
    /// Link rate in kbit/s; 0 = unlimited.
    pub bandwidth_kbps: f64,
    /// Cable pulled: every frame is lost.
    pub down: bool,
}

/// Why a fault was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    #[error("{field} must be a number between {min} and {max}, got {value}")]
    Range {
        field: &'static str,
        min: f64,
        max: f64,
        value: f64,
    },
    #[error("no device or segment {0:?} on the switch (links exist in TAP mode only)")]
    Unknown(String),
}

impl LinkFault {
    pub fn is_clear(&self) -> bool {
        *self == LinkFault::default()
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), FaultError> {
        let check = |field, value: f64, max| {
            if value.is_finite() && (0.0..=max).contains(&value) {
                Ok(())
            } else {
                Err(FaultError::Range {
                    field,
                    min: 0.0,
                    max,
                    value,
                })
            }
        };
        check("latency_ms", self.latency_ms, 60_000.0)?;
        check("jitter_ms", self.jitter_ms, 60_000.0)?;
        check("loss_pct", self.loss_pct, 100.0)?;
        check("bandwidth_kbps", self.bandwidth_kbps, 10_000_000.0)
    }
}

/// What happens to one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    DeliverAt(Instant),
}

/// One direction of a faulty link.
#[derive(Debug)]
pub struct Shaper {
    pub fault: LinkFault,
    next_free: Instant,
    rng: SmallRng,
}

impl Shaper {
    pub fn new(seed: u64) -> Self {
        Self {
            fault: LinkFault::default(),
            next_free: Instant::now(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// Decides the fate of a frame of `len` bytes offered at `now`.
    pub fn offer(&mut self, len: usize, now: Instant) -> Verdict {
        let f = self.fault;
        if f.is_clear() {
            return Verdict::Pass;
        }
        if f.down || (f.loss_pct > 0.0 && self.rng.random_range(0.0..100.0) < f.loss_pct) {
            return Verdict::Drop;
        }
        let mut at = now;
        if f.bandwidth_kbps > 0.0 {
            let start = self.next_free.max(now);
            let tx = Duration::from_secs_f64(len as f64 * 8.0 / (f.bandwidth_kbps * 1000.0));
            // Queue more than 2 s deep: the frame is dropped like a full
            // switch queue would.
            if start.duration_since(now) > Duration::from_secs(2) {
                return Verdict::Drop;
            }
            self.next_free = start + tx;
            at = self.next_free;
        }
        let mut delay = f.latency_ms;
        if f.jitter_ms > 0.0 {
            delay += self.rng.random_range(0.0..f.jitter_ms);
        }
        at += Duration::from_secs_f64(delay / 1000.0);
        if at <= now {
            Verdict::Pass
        } else {
            Verdict::DeliverAt(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_link_passes_everything() {
        let mut s = Shaper::new(1);
        let now = Instant::now();
        assert!((0..1000).all(|_| s.offer(100, now) == Verdict::Pass));
    }

    #[test]
    fn loss_drops_about_its_share_and_down_drops_all() {
        let mut s = Shaper::new(1);
        s.fault.loss_pct = 20.0;
        let now = Instant::now();
        let lost = (0..10_000)
            .filter(|_| s.offer(100, now) == Verdict::Drop)
            .count();
        assert!((1700..2300).contains(&lost), "lost {lost}");
        s.fault = LinkFault {
            down: true,
            ..LinkFault::default()
        };
        assert_eq!(s.offer(100, now), Verdict::Drop);
    }

    #[test]
    fn latency_and_bandwidth_delay_frames() {
        let mut s = Shaper::new(1);
        s.fault.latency_ms = 50.0;
        let now = Instant::now();
        assert_eq!(
            s.offer(100, now),
            Verdict::DeliverAt(now + Duration::from_millis(50))
        );
        s.fault = LinkFault {
            bandwidth_kbps: 8.0,
            ..LinkFault::default()
        };
        // 1000 bytes at 8 kbit/s = 1 s each; the second waits for the first.
        assert_eq!(
            s.offer(1000, now),
            Verdict::DeliverAt(now + Duration::from_secs(1))
        );
        assert_eq!(
            s.offer(1000, now),
            Verdict::DeliverAt(now + Duration::from_secs(2))
        );
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let f = LinkFault {
            loss_pct: 120.0,
            ..LinkFault::default()
        };
        assert!(f.validate().is_err());
        assert!(LinkFault::default().validate().is_ok());
    }
}
