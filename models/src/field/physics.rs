//! Load profiles and physics of metered circuits and rooms, on virtual time.
//!
//! Contract (issue 4 §7):
//! - Time is the site's virtual time in seconds since the clock started
//!   (`t`), plus the time of day at which it started (`day0`); nothing here
//!   reads a wall clock.
//! - A [`Circuit`]'s total active power is piecewise linear between points
//!   one minute apart ([`GRID_S`]); each point is the load profile of that
//!   time of day times seeded noise (±5 %). So the energy register is the
//!   exact integral of power over virtual time, computed analytically minute
//!   by minute, and does not depend on how often it is read: 24 h at 1x or in
//!   one jump give the same value. Same seed -> same values at the same `t`.
//! - Per phase: a fixed seeded share of the total power, a voltage of
//!   230 V ±1 % and a power factor from the profile; I = P / (V * PF), so
//!   P = V * I * PF per phase and totals are sums.
//! - A circuit switched off draws nothing and its energy stops counting.
//! - An [`Ambient`] room follows a daily temperature/humidity/CO2 cycle.

use std::f64::consts::PI;

/// Spacing of the power points, in seconds.
pub const GRID_S: f64 = 60.0;
/// Nominal phase-to-neutral voltage.
pub const NOMINAL_V: f64 = 230.0;

/// A daily load profile (site file `profile = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Office,
    Hvac,
    Lighting,
    EvCharging,
    SiteMain,
    Indoor,
}

impl Profile {
    /// Profile names accepted in the site file.
    pub const NAMES: [&'static str; 6] = fieldtwin_emulator::site::PROFILES;

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "office" => Self::Office,
            "hvac" => Self::Hvac,
            "lighting" => Self::Lighting,
            "ev_charging" => Self::EvCharging,
            "site_main" => Self::SiteMain,
            "indoor" => Self::Indoor,
            _ => return None,
        })
    }

    /// Fraction of the rated power drawn at hour `h` of the day (0..24).
    pub fn shape(self, h: f64) -> f64 {
        let window = |from: f64, to: f64, ramp: f64| {
            let up = ((h - from) / ramp).clamp(0.0, 1.0);
            let down = ((to - h) / ramp).clamp(0.0, 1.0);
            up.min(down)
        };
        match self {
            Self::Office => {
                let lunch = 1.0 - 0.25 * window(12.0, 13.5, 0.5);
                0.12 + 0.78 * window(7.5, 18.5, 1.0) * lunch
            }
            Self::Hvac => 0.25 + 0.6 * (PI * (h - 6.0) / 14.0).sin().max(0.0),
            Self::Lighting => 0.06 + 0.84 * window(6.5, 19.5, 0.5),
            Self::EvCharging => {
                0.02 + 0.85 * window(8.0, 11.5, 0.25) + 0.6 * window(13.5, 17.0, 0.25)
            }
            Self::SiteMain => 0.3 + 0.5 * Self::Office.shape(h) + 0.2 * Self::Hvac.shape(h),
            Self::Indoor => window(8.0, 18.0, 1.0),
        }
    }

    /// Typical power factor of the load.
    pub fn power_factor(self) -> f64 {
        match self {
            Self::Office => 0.93,
            Self::Hvac => 0.86,
            Self::Lighting => 0.95,
            Self::EvCharging => 0.99,
            Self::SiteMain | Self::Indoor => 0.92,
        }
    }
}

/// Seeded noise in [-1, 1] for point `k` of stream `salt` (splitmix64).
pub fn noise(seed: u64, salt: u64, k: i64) -> f64 {
    let mut z = seed
        .wrapping_add(salt.wrapping_mul(0xD6E8_FEB8_6659_FD93))
        .wrapping_add((k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// Instantaneous values of a circuit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Phase-to-neutral voltages (V).
    pub v: [f64; 3],
    /// Phase currents (A).
    pub i: [f64; 3],
    /// Phase active powers (W).
    pub p: [f64; 3],
    pub p_total: f64,
    /// Apparent power (VA), sum of the phases.
    pub s_total: f64,
    /// Reactive power (var), sum of the phases.
    pub q_total: f64,
    pub pf: f64,
    pub freq: f64,
    /// Total active energy (Wh).
    pub energy_wh: f64,
    pub on: bool,
}

/// A metered circuit.
#[derive(Debug, Clone)]
pub struct Circuit {
    seed: u64,
    profile: Profile,
    rated_w: f64,
    phases: usize,
    shares: [f64; 3],
    day0: f64,
    /// Energy (Wh) accumulated up to `acc_t`.
    acc_wh: f64,
    acc_t: f64,
    on: bool,
}

impl Circuit {
    /// A circuit of `phases` (1 or 3) phases and rated power `rated_w`.
    pub fn new(seed: u64, profile: Profile, rated_w: f64, phases: usize, day0: f64) -> Self {
        let phases = phases.clamp(1, 3);
        let shares = if phases == 1 {
            [1.0, 0.0, 0.0]
        } else {
            let a = 1.0 / 3.0 + 0.04 * noise(seed, 11, 0);
            let b = 1.0 / 3.0 + 0.04 * noise(seed, 12, 0);
            [a, b, 1.0 - a - b]
        };
        // A plausible register value at commissioning: 100-400 days of use.
        let days = 100.0 + 150.0 * (1.0 + noise(seed, 13, 0));
        Self {
            seed,
            profile,
            rated_w,
            phases,
            shares,
            day0,
            acc_wh: (rated_w * 0.4 * 24.0 * days).round(),
            acc_t: 0.0,
            on: true,
        }
    }

    pub fn phases(&self) -> usize {
        self.phases
    }

    pub fn rated_w(&self) -> f64 {
        self.rated_w
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    fn hour(&self, t: f64) -> f64 {
        ((self.day0 + t) / 3600.0).rem_euclid(24.0)
    }

    /// Power (W) at grid point `k`.
    fn point(&self, k: i64) -> f64 {
        let t = k as f64 * GRID_S;
        let p =
            self.rated_w * self.profile.shape(self.hour(t)) * (1.0 + 0.05 * noise(self.seed, 1, k));
        p.max(0.0)
    }

    /// Total active power (W) at `t` if the circuit is on.
    pub fn power_at(&self, t: f64) -> f64 {
        let k = (t / GRID_S).floor();
        let f = t / GRID_S - k;
        let k = k as i64;
        self.point(k) * (1.0 - f) + self.point(k + 1) * f
    }

    /// Exact integral of the power (Wh) from `a` to `b`, both in one grid interval or not.
    pub fn integral_wh(&self, a: f64, b: f64) -> f64 {
        let mut sum = 0.0;
        let mut t = a;
        while t < b {
            let next = ((t / GRID_S).floor() + 1.0) * GRID_S;
            let end = next.min(b);
            sum += (self.power_at(t) + self.power_at(end)) / 2.0 * (end - t);
            t = end;
        }
        sum / 3600.0
    }

    /// Moves the accumulator to the last grid point at or before `t`.
    ///
    /// Whole grid intervals are summed with each power point computed once
    /// and the same floating-point operations as [`Circuit::integral_wh`], so
    /// a jump of a year costs one point per minute and gives bit for bit the
    /// value that reading every second would.
    fn advance(&mut self, t: f64) {
        let next = ((self.acc_t / GRID_S).floor() + 1.0) * GRID_S;
        if next > t {
            return;
        }
        if self.on {
            self.acc_wh += self.integral_wh(self.acc_t, next);
        }
        self.acc_t = next;
        let k0 = (next / GRID_S).round() as i64;
        let k1 = (t / GRID_S).floor() as i64;
        if k1 <= k0 {
            return;
        }
        if self.on {
            let mut pa = self.point(k0);
            for k in k0..k1 {
                let pb = self.point(k + 1);
                self.acc_wh += (pa + pb) / 2.0 * GRID_S / 3600.0;
                pa = pb;
            }
        }
        self.acc_t = k1 as f64 * GRID_S;
    }

    /// Total active energy (Wh) at `t` (`t` never goes back).
    pub fn energy_wh(&mut self, t: f64) -> f64 {
        self.advance(t);
        if self.on && t > self.acc_t {
            self.acc_wh + self.integral_wh(self.acc_t, t)
        } else {
            self.acc_wh
        }
    }

    /// Restores the energy register saved in NV memory, as the value at
    /// virtual time `t` (the boot that restores it); energy counts on from there.
    pub fn restore(&mut self, energy_wh: f64, t: f64) {
        if energy_wh.is_finite() && energy_wh >= 0.0 && t.is_finite() {
            self.acc_wh = energy_wh;
            self.acc_t = t.max(0.0);
        }
    }

    /// Switches the circuit's supply on or off at `t`.
    pub fn set_on(&mut self, t: f64, on: bool) {
        if on == self.on {
            return;
        }
        let e = self.energy_wh(t);
        if t > self.acc_t {
            self.acc_wh = e;
            self.acc_t = t;
        }
        self.on = on;
    }

    /// Everything the meter shows at `t`.
    pub fn sample(&mut self, t: f64) -> Sample {
        let energy_wh = self.energy_wh(t);
        let k = (t / GRID_S).floor() as i64;
        let tick = t.floor() as i64;
        let freq = 50.0 + 0.02 * noise(self.seed, 5, tick);
        if !self.on {
            return Sample {
                v: [0.0; 3],
                i: [0.0; 3],
                p: [0.0; 3],
                p_total: 0.0,
                s_total: 0.0,
                q_total: 0.0,
                pf: 1.0,
                freq: 0.0,
                energy_wh,
                on: false,
            };
        }
        let pf = (self.profile.power_factor() + 0.015 * noise(self.seed, 3, k)).min(0.999);
        let p_total = self.power_at(t);
        let mut v = [0.0; 3];
        let mut i = [0.0; 3];
        let mut p = [0.0; 3];
        for ph in 0..3 {
            v[ph] = NOMINAL_V * (1.0 + 0.01 * noise(self.seed, 20 + ph as u64, tick));
            if ph < self.phases {
                p[ph] = p_total * self.shares[ph];
                i[ph] = p[ph] / (v[ph] * pf);
            }
        }
        let p_sum: f64 = p.iter().sum();
        let s_total: f64 = (0..3).map(|ph| v[ph] * i[ph]).sum();
        let q_total = (s_total * s_total - p_sum * p_sum).max(0.0).sqrt();
        Sample {
            v,
            i,
            p,
            p_total: p_sum,
            s_total,
            q_total,
            pf,
            freq,
            energy_wh,
            on: true,
        }
    }
}

/// The climate of a room.
#[derive(Debug, Clone)]
pub struct Ambient {
    seed: u64,
    day0: f64,
}

/// What an environmental sensor measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Climate {
    pub temperature_c: f64,
    /// Relative humidity as a fraction (0.50 = 50 %).
    pub humidity: f64,
    pub co2_ppm: f64,
}

impl Ambient {
    pub fn new(seed: u64, day0: f64) -> Self {
        Self { seed, day0 }
    }

    fn smooth(&self, salt: u64, t: f64) -> f64 {
        let k = (t / GRID_S).floor();
        let f = t / GRID_S - k;
        noise(self.seed, salt, k as i64) * (1.0 - f) + noise(self.seed, salt, k as i64 + 1) * f
    }

    pub fn at(&self, t: f64) -> Climate {
        let h = ((self.day0 + t) / 3600.0).rem_euclid(24.0);
        let daily = (2.0 * PI * (h - 9.0) / 24.0).sin();
        let occupancy = Profile::Indoor.shape(h);
        Climate {
            temperature_c: 21.0 + 2.5 * daily + 0.2 * self.smooth(30, t),
            humidity: (0.45 - 0.08 * daily + 0.01 * self.smooth(31, t)).clamp(0.05, 0.95),
            co2_ppm: 420.0 + 480.0 * occupancy + 15.0 * self.smooth(32, t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_does_not_depend_on_how_often_it_is_read() {
        let mut fine = Circuit::new(7, Profile::Office, 9000.0, 3, 3600.0 * 5.0);
        let mut jump = fine.clone();
        let mut t = 0.0;
        while t < 86_400.0 {
            t += 1.0;
            fine.sample(t);
        }
        assert_eq!(
            fine.energy_wh(86_400.0).to_bits(),
            jump.energy_wh(86_400.0).to_bits()
        );
    }

    #[test]
    fn a_year_in_one_jump_is_exact_and_cheap() {
        let mut c = Circuit::new(11, Profile::SiteMain, 50_000.0, 3, 0.0);
        let mut steps = c.clone();
        let year = 365.0 * 86_400.0;
        let wall = std::time::Instant::now();
        let e = c.energy_wh(year);
        let took = wall.elapsed();
        // Reading once an hour gives the same value to the bit.
        let mut t = 0.0;
        while t < year {
            t = (t + 3600.0 + 0.5).min(year);
            steps.energy_wh(t);
        }
        assert_eq!(e.to_bits(), steps.energy_wh(year).to_bits());
        // One point per minute: well under a second even in a debug build.
        assert!(took < std::time::Duration::from_millis(500), "{took:?}");
    }

    #[test]
    fn restored_energy_counts_on_from_the_restoring_time() {
        let mut c = Circuit::new(4, Profile::Office, 9000.0, 3, 0.0);
        let year = 365.0 * 86_400.0;
        c.restore(1234.5, year);
        assert_eq!(c.energy_wh(year), 1234.5);
        let day = c.energy_wh(year + 86_400.0) - 1234.5;
        assert!(day > 0.0 && day < 9.0 * 24.0 * 1000.0, "{day}");
    }

    #[test]
    fn power_is_consistent_per_phase_and_in_total() {
        let mut c = Circuit::new(3, Profile::Hvac, 12_000.0, 3, 0.0);
        let s = c.sample(12.0 * 3600.0 + 17.0);
        for ph in 0..3 {
            assert!((s.p[ph] - s.v[ph] * s.i[ph] * s.pf).abs() < 1e-6);
        }
        assert!((s.p_total - s.p.iter().sum::<f64>()).abs() < 1e-9);
        assert!(s.p_total > 1000.0 && s.p_total < 12_000.0, "{s:?}");
        assert!((s.s_total * s.pf - s.p_total).abs() < 1e-6);
    }

    #[test]
    fn energy_is_the_integral_of_power_and_stops_when_off() {
        let mut c = Circuit::new(5, Profile::Lighting, 3000.0, 1, 0.0);
        let e0 = c.energy_wh(36_000.0);
        let e1 = c.energy_wh(39_600.0);
        // Numerical integral of the power with 1 s steps.
        let mut num = 0.0;
        for s in 0..3600 {
            num += c.power_at(36_000.0 + f64::from(s) + 0.5) / 3600.0;
        }
        assert!(((e1 - e0) - num).abs() / num < 1e-3, "{} vs {num}", e1 - e0);
        c.set_on(39_600.0, false);
        assert_eq!(c.energy_wh(43_200.0), c.energy_wh(39_600.0));
        assert_eq!(c.sample(43_200.0).p_total, 0.0);
    }

    #[test]
    fn same_seed_same_values() {
        let a = Circuit::new(9, Profile::EvCharging, 22_000.0, 3, 0.0).sample(50_000.0);
        let b = Circuit::new(9, Profile::EvCharging, 22_000.0, 3, 0.0).sample(50_000.0);
        let c = Circuit::new(10, Profile::EvCharging, 22_000.0, 3, 0.0).sample(50_000.0);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
