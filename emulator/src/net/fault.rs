//! Link faults: latency, jitter, loss, bandwidth and partition, applied as a
//! wrapper on a switch port (DESIGN.md principle 4, "Networking").
//!
//! Contract:
//! - A [`LinkFault`] is plain configuration; [`Shaper`] is its state and
//!   decides, per frame, whether it is dropped or when it is delivered
//!   (`now` is passed in, no wall clock inside).
//! - Each direction of a port has its own shaper; a fault applies to both.
//! - The default fault ([`LinkFault::is_clear`]) passes every frame at once.
//! - Loss is Bernoulli (`loss_pct`, each frame independently) or bursty
//!   with the Gilbert-Elliott model ([`GilbertElliott`]: a good and a bad
//!   state, each with its own loss rate, and per-frame transition
//!   probabilities between them); with both, a frame survives only if
//!   neither drops it.

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
    /// Bursty loss (Gilbert-Elliott two-state model), on top of `loss_pct`.
    pub gilbert_elliott: Option<GilbertElliott>,
}

/// The Gilbert-Elliott loss model: a Markov chain of a good and a bad
/// state, evaluated once per frame. The mean burst length is
/// `100 / bad_to_good_pct` frames; the share of time in the bad state is
/// `good_to_bad / (good_to_bad + bad_to_good)`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GilbertElliott {
    /// Chance per frame, in percent, of going from the good to the bad state.
    pub good_to_bad_pct: f64,
    /// Chance per frame, in percent, of going from the bad to the good state.
    pub bad_to_good_pct: f64,
    /// Loss in the good state, in percent (default 0).
    #[serde(default)]
    pub loss_good_pct: f64,
    /// Loss in the bad state, in percent (default 100).
    #[serde(default = "hundred")]
    pub loss_bad_pct: f64,
}

fn hundred() -> f64 {
    100.0
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
        check("bandwidth_kbps", self.bandwidth_kbps, 10_000_000.0)?;
        if let Some(ge) = &self.gilbert_elliott {
            check("gilbert_elliott.good_to_bad_pct", ge.good_to_bad_pct, 100.0)?;
            check("gilbert_elliott.bad_to_good_pct", ge.bad_to_good_pct, 100.0)?;
            check("gilbert_elliott.loss_good_pct", ge.loss_good_pct, 100.0)?;
            check("gilbert_elliott.loss_bad_pct", ge.loss_bad_pct, 100.0)?;
        }
        Ok(())
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
    /// Gilbert-Elliott state: in the bad state.
    bad: bool,
}

impl Shaper {
    pub fn new(seed: u64) -> Self {
        Self {
            fault: LinkFault::default(),
            next_free: Instant::now(),
            rng: SmallRng::seed_from_u64(seed),
            bad: false,
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
        if let Some(ge) = f.gilbert_elliott {
            let flip = if self.bad {
                ge.bad_to_good_pct
            } else {
                ge.good_to_bad_pct
            };
            if self.rng.random_range(0.0..100.0) < flip {
                self.bad = !self.bad;
            }
            let loss = if self.bad {
                ge.loss_bad_pct
            } else {
                ge.loss_good_pct
            };
            if loss > 0.0 && self.rng.random_range(0.0..100.0) < loss {
                return Verdict::Drop;
            }
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
    fn gilbert_elliott_loses_in_bursts() {
        let mut s = Shaper::new(3);
        // 1 % good->bad, 20 % bad->good: bad about 1/21 of the time, bursts
        // of 5 frames on average, every bad frame lost.
        s.fault.gilbert_elliott = Some(GilbertElliott {
            good_to_bad_pct: 1.0,
            bad_to_good_pct: 20.0,
            loss_good_pct: 0.0,
            loss_bad_pct: 100.0,
        });
        let now = Instant::now();
        let lost: Vec<bool> = (0..100_000)
            .map(|_| s.offer(100, now) == Verdict::Drop)
            .collect();
        let n = lost.iter().filter(|l| **l).count();
        assert!((3_500..6_000).contains(&n), "lost {n}");
        let bursts = lost.windows(2).filter(|w| !w[0] && w[1]).count();
        let mean = n as f64 / bursts as f64;
        assert!((3.5..6.5).contains(&mean), "mean burst {mean}");
        // Bernoulli loss of the same share has bursts of about 1.05 frames.
        let mut b = Shaper::new(3);
        b.fault.loss_pct = 4.8;
        let lost: Vec<bool> = (0..100_000)
            .map(|_| b.offer(100, now) == Verdict::Drop)
            .collect();
        let n = lost.iter().filter(|l| **l).count();
        let bursts = lost.windows(2).filter(|w| !w[0] && w[1]).count();
        assert!((n as f64 / bursts as f64) < 1.2);
        // Parsed with defaults; out of range refused.
        let f: LinkFault = serde_json::from_str(
            r#"{"gilbert_elliott":{"good_to_bad_pct":1,"bad_to_good_pct":20}}"#,
        )
        .unwrap();
        assert_eq!(f.gilbert_elliott.unwrap().loss_bad_pct, 100.0);
        assert!(!f.is_clear());
        let bad = LinkFault {
            gilbert_elliott: Some(GilbertElliott {
                good_to_bad_pct: 101.0,
                ..f.gilbert_elliott.unwrap()
            }),
            ..f
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("good_to_bad_pct")
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
