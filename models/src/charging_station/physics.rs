//! The physics of a charging station's connector and of the EV plugged
//! into it, on virtual time (docs/ev-charging.md "Physics").
//!
//! Contract (plain state, no I/O):
//! - An [`Ev`] has a usable battery capacity, a state of charge (SoC) and
//!   a charging curve: it accepts its on-board charger's full power up to
//!   80 % SoC, then linearly less down to 10 % of it at 100 %, and nothing
//!   once it reached its target SoC ([`Ev::acceptance_w`]).
//! - [`Meter::advance`] integrates from the last time to `t` in steps of at
//!   most [`STEP_S`]: the power drawn at each step is the smaller of what
//!   the station offers at that time (its own rating and the charging
//!   profiles in force, given by the caller) and what the EV accepts; the
//!   energy register and the EV's SoC follow. A clock jump is integrated
//!   the same way, so an hour jumped is an hour charged.
//! - [`profile_limit_w`] evaluates OCPP 1.6 charging profiles (§3.13): per
//!   purpose the valid profile of the highest stack level, its schedule
//!   period in force (Absolute from `startSchedule`, Relative from the
//!   transaction's start, Recurring from the start of the day/week);
//!   ChargePointMaxProfile caps the TxProfile, or the TxDefaultProfile when
//!   the transaction has no TxProfile. Amperes are converted to watts with
//!   the period's number of phases (default: the station's) and the phase
//!   voltage.

use chrono::{DateTime, Datelike, Timelike, Utc};
use fieldtwin_emulator::device::EvSpec;
use serde::Serialize;

use crate::proto::ocpp::messages::{
    ChargingProfile, ChargingProfileKind, ChargingProfilePurpose, ChargingRateUnit,
};

/// Longest integration step, s.
pub const STEP_S: f64 = 60.0;

/// An EV plugged into a connector.
#[derive(Debug, Clone, Serialize)]
pub struct Ev {
    pub spec: EvSpec,
    /// State of charge, 0-1.
    pub soc: f64,
}

impl Ev {
    pub fn new(spec: EvSpec) -> Self {
        Self {
            soc: spec.soc,
            spec,
        }
    }

    /// Power the EV accepts now, W (its charging curve).
    pub fn acceptance_w(&self) -> f64 {
        let max = self.spec.max_kw * 1000.0;
        if self.soc >= self.spec.target_soc || self.soc >= 1.0 {
            0.0
        } else if self.soc < 0.8 {
            max
        } else {
            max * (1.0 - 0.9 * (self.soc - 0.8) / 0.2)
        }
    }

    /// Whether it wants no more energy.
    pub fn full(&self) -> bool {
        self.acceptance_w() <= 0.0
    }
}

/// A connector's energy meter and the EV on it.
#[derive(Debug, Clone, Serialize)]
pub struct Meter {
    /// Energy delivered since the station was made, Wh (the register).
    pub energy_wh: f64,
    /// Power drawn at the last step, W.
    pub power_w: f64,
    /// Virtual time of the last integration, s.
    pub t: f64,
    pub ev: Option<Ev>,
}

impl Meter {
    pub fn new(t: f64) -> Self {
        Self {
            energy_wh: 0.0,
            power_w: 0.0,
            t,
            ev: None,
        }
    }

    /// Integrates up to `t` (see the module contract); `offer(t)`: the
    /// power the station offers at time `t`, W (0 when not charging).
    pub fn advance(&mut self, t: f64, mut offer: impl FnMut(f64) -> f64) {
        // Nothing to integrate without an EV that wants energy: one step,
        // however long the jump (a year jumped costs nothing).
        if self.ev.as_ref().is_none_or(|e| e.full()) {
            self.t = self.t.max(t);
            self.power_w = 0.0;
            return;
        }
        while self.t < t {
            if self.ev.as_ref().is_none_or(|e| e.full()) {
                self.t = t;
                break;
            }
            let dt = (t - self.t).min(STEP_S);
            let p = match &self.ev {
                Some(ev) => offer(self.t).min(ev.acceptance_w()).max(0.0),
                None => 0.0,
            };
            let wh = p * dt / 3600.0;
            self.energy_wh += wh;
            if let Some(ev) = &mut self.ev {
                ev.soc = (ev.soc + wh / 1000.0 / ev.spec.battery_kwh).min(1.0);
            }
            self.power_w = p;
            self.t += dt;
        }
        if let Some(ev) = &self.ev {
            self.power_w = offer(self.t).min(ev.acceptance_w()).max(0.0);
        } else {
            self.power_w = 0.0;
        }
    }
}

/// A profile installed on a connector (0: the whole station).
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub connector: u32,
    pub profile: ChargingProfile,
}

/// The limit the profiles set on `connector` at `now`, W (None: no limit).
/// `tx_start`: start of the running transaction (Relative profiles);
/// `tx_id`: its id as the central system knows it (TxProfiles name it).
pub fn profile_limit_w(
    installed: &[Installed],
    connector: u32,
    now: DateTime<Utc>,
    tx_start: Option<DateTime<Utc>>,
    tx_id: Option<i64>,
    phases: u8,
    voltage: f64,
) -> Option<f64> {
    let best = |purpose: ChargingProfilePurpose, on: &[u32]| {
        installed
            .iter()
            .filter(|i| i.profile.charging_profile_purpose == purpose && on.contains(&i.connector))
            .filter(|i| {
                purpose != ChargingProfilePurpose::TxProfile
                    || i.profile.transaction_id.is_none()
                    || i.profile.transaction_id == tx_id
            })
            .filter(|i| valid(&i.profile, now))
            .filter_map(|i| limit_of(&i.profile, now, tx_start, phases, voltage).map(|l| (i, l)))
            .max_by_key(|(i, _)| i.profile.stack_level)
            .map(|(_, l)| l)
    };
    let max = best(ChargingProfilePurpose::ChargePointMaxProfile, &[0]);
    let tx = if tx_start.is_some() {
        best(ChargingProfilePurpose::TxProfile, &[connector])
            .or_else(|| best(ChargingProfilePurpose::TxDefaultProfile, &[connector, 0]))
    } else {
        best(ChargingProfilePurpose::TxDefaultProfile, &[connector, 0])
    };
    match (max, tx) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse(t: &Option<String>) -> Option<DateTime<Utc>> {
    t.as_deref()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
}

fn valid(p: &ChargingProfile, now: DateTime<Utc>) -> bool {
    parse(&p.valid_from).is_none_or(|f| f <= now) && parse(&p.valid_to).is_none_or(|t| now < t)
}

fn limit_of(
    p: &ChargingProfile,
    now: DateTime<Utc>,
    tx_start: Option<DateTime<Utc>>,
    phases: u8,
    voltage: f64,
) -> Option<f64> {
    let s = &p.charging_schedule;
    let elapsed = match p.charging_profile_kind {
        ChargingProfileKind::Absolute => {
            let start = parse(&s.start_schedule).or(tx_start).unwrap_or(now);
            (now - start).num_seconds()
        }
        ChargingProfileKind::Relative => (now - tx_start.unwrap_or(now)).num_seconds(),
        ChargingProfileKind::Recurring => {
            let day = now.num_seconds_from_midnight() as i64;
            if p.recurrency_kind.as_deref() == Some("Weekly") {
                now.weekday().num_days_from_monday() as i64 * 86_400 + day
            } else {
                day
            }
        }
    };
    if elapsed < 0 || s.duration.is_some_and(|d| elapsed >= d) {
        return None;
    }
    let period = s
        .charging_schedule_period
        .iter()
        .filter(|x| x.start_period <= elapsed)
        .max_by_key(|x| x.start_period)?;
    let n = period.number_phases.unwrap_or(phases).clamp(1, 3) as f64;
    Some(match s.charging_rate_unit {
        ChargingRateUnit::W => period.limit,
        ChargingRateUnit::A => period.limit * voltage * n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ocpp::messages::{ChargingSchedule, ChargingSchedulePeriod};

    fn ev(soc: f64) -> Ev {
        Ev::new(EvSpec {
            battery_kwh: 50.0,
            soc,
            target_soc: 1.0,
            max_kw: 11.0,
        })
    }

    #[test]
    fn a_year_jumped_is_cheap() {
        let mut m = Meter::new(0.0);
        m.ev = Some(ev(0.2));
        let start = std::time::Instant::now();
        m.advance(365.0 * 86_400.0, |_| 22_000.0);
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert!(m.ev.as_ref().unwrap().full());
        assert!((m.energy_wh - 40_000.0).abs() < 20.0, "{}", m.energy_wh);
    }

    #[test]
    fn an_hour_at_11_kw_adds_11_kwh() {
        let mut m = Meter::new(0.0);
        m.ev = Some(ev(0.2));
        m.advance(3600.0, |_| 22_000.0);
        assert!((m.energy_wh - 11_000.0).abs() < 1.0, "{}", m.energy_wh);
        assert!((m.ev.as_ref().unwrap().soc - 0.42).abs() < 1e-6);
        assert_eq!(m.power_w, 11_000.0);
    }

    #[test]
    fn the_curve_tapers_and_stops_at_the_target() {
        assert!(ev(0.9).acceptance_w() < 11_000.0 * 0.6);
        let mut m = Meter::new(0.0);
        let mut e = ev(0.7);
        e.spec.target_soc = 0.75;
        m.ev = Some(e);
        m.advance(36_000.0, |_| 22_000.0);
        let soc = m.ev.as_ref().unwrap().soc;
        assert!((0.75..0.77).contains(&soc), "{soc}");
        assert_eq!(m.power_w, 0.0);
    }

    fn profile(purpose: ChargingProfilePurpose, level: u32, amps: f64) -> ChargingProfile {
        ChargingProfile {
            charging_profile_id: level as i64,
            transaction_id: None,
            stack_level: level,
            charging_profile_purpose: purpose,
            charging_profile_kind: ChargingProfileKind::Relative,
            recurrency_kind: None,
            valid_from: None,
            valid_to: None,
            charging_schedule: ChargingSchedule {
                duration: None,
                start_schedule: None,
                charging_rate_unit: ChargingRateUnit::A,
                charging_schedule_period: vec![
                    ChargingSchedulePeriod {
                        start_period: 0,
                        limit: amps,
                        number_phases: None,
                    },
                    ChargingSchedulePeriod {
                        start_period: 600,
                        limit: amps / 2.0,
                        number_phases: Some(1),
                    },
                ],
                min_charging_rate: None,
            },
        }
    }

    #[test]
    fn profiles_stack_and_cap() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let inst = vec![
            Installed {
                connector: 1,
                profile: profile(ChargingProfilePurpose::TxProfile, 1, 16.0),
            },
            Installed {
                connector: 1,
                profile: profile(ChargingProfilePurpose::TxProfile, 2, 10.0),
            },
            Installed {
                connector: 0,
                profile: profile(ChargingProfilePurpose::ChargePointMaxProfile, 0, 32.0),
            },
        ];
        let w = profile_limit_w(&inst, 1, t0, Some(t0), Some(5), 3, 230.0).unwrap();
        assert_eq!(w, 10.0 * 230.0 * 3.0);
        let later = t0 + chrono::Duration::seconds(700);
        let w = profile_limit_w(&inst, 1, later, Some(t0), Some(5), 3, 230.0).unwrap();
        assert_eq!(w, 5.0 * 230.0);
        // No transaction: only the station maximum applies.
        let w = profile_limit_w(&inst, 1, t0, None, None, 3, 230.0).unwrap();
        assert_eq!(w, 32.0 * 230.0 * 3.0);
    }
}
