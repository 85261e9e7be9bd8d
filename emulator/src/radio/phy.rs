//! IEEE 802.15.4 O-QPSK PHY at 2.4 GHz (channels 11-26): airtime, the bit
//! error model, link quality and the propagation trait.
//!
//! Contract:
//! - [`airtime`]: 250 kbit/s, 32 µs per octet, the synchronisation header
//!   (preamble 4 + SFD 1) and the PHY header (1) precede the PSDU.
//! - [`ber`]: the error model ns-3's lr-wpan uses (`LrWpanErrorModel`): the
//!   16-ary orthogonal modulation's symbol errors turned into bit errors,
//!   `BER = 8/15 · 1/16 · Σ_{k=2..16} (-1)^k C(16,k) e^{20·SNR·(1/k - 1)}`
//!   with SNR linear; [`per`] = 1 - (1 - BER)^bits.
//! - [`lqi`] maps SINR to 0-255 ([NF]: linear from -5 dB (0) to +20 dB
//!   (255), where the error model goes from unusable to error free).
//! - [`Propagation`] gives the path loss between two radios; the default
//!   [`LogDistance`] is `PL(d) = PL0 + 10·n·log10(d/1 m) + X`, X a seeded
//!   shadowing term fixed per link (normal, σ dB, clipped at ±3σ),
//!   symmetric, so a link does not change from frame to frame.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// First and last 2.4 GHz channel.
pub const CHANNELS: std::ops::RangeInclusive<u8> = 11..=26;
/// Bit rate of the 2.4 GHz O-QPSK PHY.
pub const BIT_RATE: u32 = 250_000;
/// Octets sent before the PSDU: preamble (4), SFD (1), PHR (1).
pub const PHY_OVERHEAD: usize = 6;
/// Largest PSDU (aMaxPHYPacketSize).
pub const MAX_PSDU: usize = 127;
/// One symbol (4 bits) at 62.5 ksymbol/s.
pub const SYMBOL: Duration = Duration::from_micros(16);
/// Thermal noise in 2 MHz plus a 11 dB receiver noise figure ([NF]).
pub const NOISE_DBM: f64 = -100.0;
/// Weakest signal a receiver synchronises on (the standard asks -85 dBm;
/// typical chips reach -100 dBm; [NF] -97 dBm).
pub const SENSITIVITY_DBM: f64 = -97.0;
/// Energy above which clear-channel assessment (mode 1) says busy: 10 dB
/// above the standard's -85 dBm sensitivity ([NF] -75 dBm).
pub const CCA_THRESHOLD_DBM: f64 = -75.0;

/// Time on air of a PSDU of `psdu_len` octets (MAC header, payload, FCS).
pub fn airtime(psdu_len: usize) -> Duration {
    Duration::from_micros(32 * (PHY_OVERHEAD + psdu_len) as u64)
}

/// Longest time on air of a frame.
pub fn max_airtime() -> Duration {
    airtime(MAX_PSDU)
}

/// Bit error rate at linear signal-to-noise(-plus-interference) ratio `snr`.
pub fn ber(snr: f64) -> f64 {
    if !snr.is_finite() || snr <= 0.0 {
        return 0.5;
    }
    let mut sum = 0.0;
    let mut c = 16.0; // C(16, 1)
    for k in 2..=16u32 {
        c = c * f64::from(17 - k) / f64::from(k);
        let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
        sum += sign * c * (20.0 * snr * (1.0 / f64::from(k) - 1.0)).exp();
    }
    (sum * (8.0 / 15.0) / 16.0).clamp(0.0, 0.5)
}

/// Packet error rate of `bits` bits at linear SINR `sinr`.
pub fn per(sinr: f64, bits: usize) -> f64 {
    let b = ber(sinr);
    (1.0 - (1.0 - b).powi(bits as i32)).clamp(0.0, 1.0)
}

/// Link quality indicator at `sinr_db`.
pub fn lqi(sinr_db: f64) -> u8 {
    if !sinr_db.is_finite() {
        return if sinr_db > 0.0 { 255 } else { 0 };
    }
    ((sinr_db + 5.0) * 255.0 / 25.0).round().clamp(0.0, 255.0) as u8
}

/// dBm to mW.
pub fn mw(dbm: f64) -> f64 {
    10f64.powf(dbm / 10.0)
}

/// mW to dBm.
pub fn dbm(mw: f64) -> f64 {
    10.0 * mw.log10()
}

/// A position in metres.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Position {
    pub x: f64,
    pub y: f64,
    #[serde(default)]
    pub z: f64,
}

impl Position {
    pub const fn new(x: f64, y: f64, z: f64) -> Self {
        Self { x, y, z }
    }

    pub fn distance(&self, o: &Position) -> f64 {
        ((self.x - o.x).powi(2) + (self.y - o.y).powi(2) + (self.z - o.z).powi(2)).sqrt()
    }

    /// Whether every coordinate is a finite number.
    pub fn is_finite(&self) -> bool {
        self.x.is_finite() && self.y.is_finite() && self.z.is_finite()
    }
}

/// Path loss between two radios (`a`, `b` identify them, for per-link
/// effects such as shadowing).
pub trait Propagation: Send + Sync {
    /// Loss in dB from `a` at `pa` to `b` at `pb`.
    fn loss_db(&self, a: u64, pa: &Position, b: u64, pb: &Position) -> f64;
    /// A distance beyond which the loss always exceeds `budget_db`.
    fn range_m(&self, budget_db: f64) -> f64;
}

/// Log-distance path loss with seeded log-normal shadowing.
#[derive(Debug, Clone)]
pub struct LogDistance {
    /// Loss at 1 m (free space at 2.44 GHz: 40.2 dB).
    pub pl0_db: f64,
    /// Path-loss exponent ([NF] 3.0: indoor, cluttered switchboard room).
    pub exponent: f64,
    /// Shadowing standard deviation ([NF] 4 dB).
    pub sigma_db: f64,
    pub seed: u64,
}

impl LogDistance {
    pub fn new(seed: u64) -> Self {
        Self {
            pl0_db: 40.2,
            exponent: 3.0,
            sigma_db: 4.0,
            seed,
        }
    }

    /// The shadowing term of link (`a`, `b`), same both ways.
    pub fn shadowing_db(&self, a: u64, b: u64) -> f64 {
        if self.sigma_db == 0.0 {
            return 0.0;
        }
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let h1 = mix(self.seed ^ mix(lo) ^ mix(hi).rotate_left(17));
        let h2 = mix(h1 ^ 0x9e37_79b9_7f4a_7c15);
        let u1 = ((h1 >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (h2 >> 11) as f64 / (1u64 << 53) as f64;
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (z * self.sigma_db).clamp(-3.0 * self.sigma_db, 3.0 * self.sigma_db)
    }
}

impl Propagation for LogDistance {
    fn loss_db(&self, a: u64, pa: &Position, b: u64, pb: &Position) -> f64 {
        let d = pa.distance(pb).max(0.1);
        self.pl0_db + 10.0 * self.exponent * d.log10() + self.shadowing_db(a, b)
    }

    fn range_m(&self, budget_db: f64) -> f64 {
        let db = budget_db - self.pl0_db + 3.0 * self.sigma_db;
        10f64.powf(db / (10.0 * self.exponent)).max(1.0)
    }
}

/// SplitMix64 finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable radio id from a name (FNV-1a, mixed).
pub fn radio_id(name: &str) -> u64 {
    mix(name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn airtime_is_exact() {
        // 6 octets of PHY overhead + 127 of PSDU at 32 µs per octet.
        assert_eq!(max_airtime(), Duration::from_micros(4256));
        assert_eq!(airtime(0), Duration::from_micros(192));
        assert_eq!(airtime(20), Duration::from_micros(832));
        // 250 kbit/s.
        assert_eq!(
            airtime(119).as_secs_f64() * f64::from(BIT_RATE),
            125.0 * 8.0
        );
    }

    #[test]
    fn error_model_matches_ns3_landmarks() {
        assert!((ber(0.0) - 0.5).abs() < 1e-12);
        // 0 dB: BER 1.6e-4 (the ns-3 lr-wpan curve).
        assert!(ber(1.0) > 1e-4 && ber(1.0) < 2e-4, "{}", ber(1.0));
        // 10 dB: error free for practical purposes.
        assert!(ber(10.0) < 1e-20);
        // A 20-octet PSDU (+ PHR) at -3 dB loses most, at +1 dB almost none.
        let bits = 8 * 26;
        assert!(per(10f64.powf(-0.3), bits) > 0.9);
        assert!(per(10f64.powf(0.1), bits) < 0.01);
    }

    #[test]
    fn shadowing_is_symmetric_and_seeded() {
        let p = LogDistance::new(7);
        assert_eq!(p.shadowing_db(1, 2), p.shadowing_db(2, 1));
        assert_ne!(p.shadowing_db(1, 2), LogDistance::new(8).shadowing_db(1, 2));
        let a = Position::new(0.0, 0.0, 0.0);
        let b = Position::new(10.0, 0.0, 0.0);
        assert!(p.loss_db(1, &a, 2, &b) <= p.pl0_db + 30.0 + 12.0);
    }

    proptest! {
        #[test]
        fn ber_is_monotone_and_bounded(s in 0.0f64..40.0, d in 0.001f64..5.0) {
            let (a, b) = (ber(s), ber(s + d));
            prop_assert!((0.0..=0.5).contains(&a));
            prop_assert!(b <= a + 1e-12);
        }

        #[test]
        fn per_grows_with_distance(d in 0.5f64..300.0, extra in 0.1f64..100.0, bits in 8usize..1064) {
            let p = LogDistance { sigma_db: 0.0, ..LogDistance::new(1) };
            let o = Position::default();
            let per_at = |m: f64| {
                let rx = 0.0 - p.loss_db(1, &o, 2, &Position::new(m, 0.0, 0.0));
                per(mw(rx) / mw(NOISE_DBM), bits)
            };
            prop_assert!(per_at(d + extra) >= per_at(d) - 1e-12);
        }

        #[test]
        fn range_bounds_the_loss(budget in 40.0f64..140.0, a in any::<u64>(), b in any::<u64>()) {
            let p = LogDistance::new(3);
            let r = p.range_m(budget);
            let loss = p.loss_db(a, &Position::default(), b, &Position::new(r * 1.01, 0.0, 0.0));
            prop_assert!(loss >= budget - 1e-9);
        }
    }
}
