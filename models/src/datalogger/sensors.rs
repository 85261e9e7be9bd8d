//! The Data Logger's sensor inputs: seeded process physics and the
//! electrical front ends (4-20 mA with the NAMUR NE43 bands, 0-10 V, pulse
//! counting with a weight, digital inputs), sampled on virtual time.
//!
//! Contract (seed 004 "analog (4-20mA and 0-10V) ... discrete (pulse
//! counting, digital I/O)"; reference devices.md §4):
//! - A [`Process`] gives the physical value of a quantity at virtual time `t`
//!   (seconds since the site clock started): a daily cycle plus seeded noise
//!   per minute, the same for the same seed and `t` whatever the sampling.
//!   Flow has an analytic volume integral, so a pulse count does not depend
//!   on how often it is read.
//! - A 4-20 mA transmitter outputs I = 4 + 16 (PV - LRV)/(URV - LRV), saturated
//!   to 3.8..20.5 mA (NE43); a wire break reads 0 mA, a failed transmitter
//!   signals 21.5 mA. The logger classifies the reading with [`ne43`] and
//!   scales PV = LRV + (I - 4)/16 (URV - LRV). 0-10 V inputs scale the same way
//!   over 0..10 V (saturating at 10.5 V; a broken wire reads 0 V).
//! - [`Bank`] holds every input's runtime state and yields [`Sample`]s for
//!   every deadline that has passed (`due(now)`), so a clock jump produces
//!   every sample of the jumped-over period with its own time — bounded by
//!   [`Bank::skip_backlog`] to what the store can keep.

use std::f64::consts::PI;
use std::time::Duration;

use fieldtwin_emulator::site::{InputConfig, InputKind, Quantity, default_range};

use super::{sdi12, serial};
use crate::field::physics::noise;

/// Status of one sample (stored in the record; docs/datalogger.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    /// NE43: 3.8-4.0 mA (or below 0 V).
    UnderRange = 1,
    /// NE43: 20-20.5 mA (or above 10 V).
    OverRange = 2,
    /// NE43: below 3.6 mA (wire break, short, no supply).
    FaultLow = 3,
    /// NE43: above 21 mA (transmitter signals a failure).
    FaultHigh = 4,
    /// The sensor did not answer (SDI-12 timeout) or is unpowered.
    NoResponse = 5,
    /// 3.6-3.8 mA or 20.5-21 mA: outside the NE43 measurement bands but not a
    /// declared fault (undefined zone).
    Undefined = 6,
}

impl Status {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Ok,
            1 => Self::UnderRange,
            2 => Self::OverRange,
            3 => Self::FaultLow,
            4 => Self::FaultHigh,
            5 => Self::NoResponse,
            6 => Self::Undefined,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::UnderRange => "under_range",
            Self::OverRange => "over_range",
            Self::FaultLow => "fault_low",
            Self::FaultHigh => "fault_high",
            Self::NoResponse => "no_response",
            Self::Undefined => "undefined",
        }
    }
}

/// NAMUR NE43 classification of a loop current in mA.
pub fn ne43(ma: f64) -> Status {
    if ma < 3.6 {
        Status::FaultLow
    } else if ma < 3.8 {
        Status::Undefined
    } else if ma < 4.0 {
        Status::UnderRange
    } else if ma <= 20.0 {
        Status::Ok
    } else if ma <= 20.5 {
        Status::OverRange
    } else if ma <= 21.0 {
        Status::Undefined
    } else {
        Status::FaultHigh
    }
}

/// PV of a 4-20 mA reading.
pub fn scale_current(ma: f64, lrv: f64, urv: f64) -> f64 {
    lrv + (ma - 4.0) / 16.0 * (urv - lrv)
}

/// Loop current a healthy transmitter outputs for `pv` (NE43 saturation).
pub fn transmit_current(pv: f64, lrv: f64, urv: f64) -> f64 {
    (4.0 + 16.0 * (pv - lrv) / (urv - lrv)).clamp(3.8, 20.5)
}

/// PV of a 0-10 V reading.
pub fn scale_voltage(v: f64, lrv: f64, urv: f64) -> f64 {
    lrv + v / 10.0 * (urv - lrv)
}

/// Seeded physics of one measured quantity.
#[derive(Debug, Clone, Copy)]
pub struct Process {
    pub quantity: Quantity,
    seed: u64,
    salt: u64,
}

const DAY: f64 = 86_400.0;

impl Process {
    pub fn new(quantity: Quantity, seed: u64, salt: u64) -> Self {
        Self {
            quantity,
            seed,
            salt,
        }
    }

    fn jitter(&self, t: f64) -> f64 {
        noise(self.seed, self.salt, (t / 60.0).floor() as i64)
    }

    /// Physical value at `t` (units: docs/datalogger.md).
    pub fn value(&self, t: f64) -> f64 {
        let phase = 2.0 * PI * t / DAY;
        match self.quantity {
            // A reservoir: 2.5 m +- 1 m over the day, a few cm of ripple.
            Quantity::Level => 2.5 + (phase).sin() + 0.03 * self.jitter(t),
            // Network pressure: 4.5 bar, lower when demand is high.
            Quantity::Pressure => 4.5 - 0.8 * (phase - 0.5).sin() + 0.05 * self.jitter(t),
            Quantity::Flow => self.flow(t),
            // Water temperature: 12 degC +- 3 over the day.
            Quantity::Temperature => 12.0 + 3.0 * (phase - PI / 2.0).sin() + 0.1 * self.jitter(t),
            // A door: open 5 minutes now and then (about 1 % of the time).
            Quantity::Contact => {
                let k = (t / 300.0).floor() as i64;
                if noise(self.seed, self.salt, k) > 0.98 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// Flow in m3/h: 20 +- 8 over the day (no noise, so the volume is exact).
    fn flow(&self, t: f64) -> f64 {
        let a = 2.0 * PI / DAY;
        20.0 + 8.0 * (a * t).sin()
    }

    /// Volume in m3 that flowed from 0 to `t` (exact integral of [`Self::flow`]).
    pub fn volume(&self, t: f64) -> f64 {
        let a = 2.0 * PI / DAY;
        (20.0 * t + 8.0 / a * (1.0 - (a * t).cos())) / 3600.0
    }
}

/// A fault the instructor puts on an input (`FieldPower` off = wire break).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wiring {
    #[default]
    Sound,
    /// Wire broken (0 mA / 0 V / no pulses / no SDI-12 answer).
    Broken,
}

/// One sample of one input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Index of the input in the configuration.
    pub input: u8,
    /// Virtual time of the sample.
    pub at: Duration,
    pub status: Status,
    /// Electrical reading: mA, V, pulse count, 0/1, or the SDI-12 value.
    pub raw: f64,
    /// Engineering value (scaled).
    pub value: f64,
}

/// Runtime state of one input.
#[derive(Debug, Clone)]
pub struct Input {
    pub config: InputConfig,
    pub process: Process,
    pub wiring: Wiring,
    /// Baud rate the logger's serial ports run at (set over USB).
    pub baud: u32,
    period: Duration,
    next: Duration,
    /// Pulse inputs: pulses counted, and the process volume when counting resumed.
    pulses: u64,
    volume_base: Option<f64>,
    /// SDI-12 inputs: the sensor on the line.
    sdi12: Option<sdi12::Sensor>,
    /// RS-485 / RS-232 inputs: the transmitter on the line.
    rs485: Option<serial::ModbusSensor>,
    rs232: Option<serial::AsciiSensor>,
    last_value: Option<f64>,
}

impl Input {
    fn range(&self) -> (f64, f64) {
        let (l, u) = default_range(self.config.quantity);
        (self.config.lrv.unwrap_or(l), self.config.urv.unwrap_or(u))
    }

    /// Pulses counted so far (kept in NV by the logger).
    pub fn pulses(&self) -> u64 {
        self.pulses
    }

    fn sample(&mut self, index: u8, at: Duration) -> Sample {
        let t = at.as_secs_f64();
        let (lrv, urv) = self.range();
        let broken = self.wiring == Wiring::Broken;
        let (status, raw, value) = match self.config.kind {
            InputKind::Current => {
                let ma = if broken {
                    0.0
                } else {
                    transmit_current(self.process.value(t), lrv, urv)
                };
                (ne43(ma), ma, scale_current(ma, lrv, urv))
            }
            InputKind::Voltage => {
                let v = if broken {
                    0.0
                } else {
                    (10.0 * (self.process.value(t) - lrv) / (urv - lrv)).clamp(0.0, 10.5)
                };
                let status = if v > 10.0 {
                    Status::OverRange
                } else {
                    Status::Ok
                };
                (status, v, scale_voltage(v, lrv, urv))
            }
            InputKind::Pulse => {
                let weight = self.config.pulse_weight.unwrap_or(1.0);
                let vol = self.process.volume(t);
                // While the wire is broken no pulse arrives: the base moves on.
                let base = *self.volume_base.get_or_insert(vol);
                if broken {
                    self.volume_base = Some(vol);
                } else {
                    let n = ((vol - base) / weight).floor().max(0.0) as u64;
                    self.pulses += n;
                    self.volume_base = Some(base + n as f64 * weight);
                }
                let c = self.pulses as f64;
                (Status::Ok, c, c * weight)
            }
            InputKind::Digital => {
                let v = if broken { 0.0 } else { self.process.value(t) };
                (Status::Ok, v, v)
            }
            InputKind::Sdi12 => {
                let pv = self.process.value(t);
                let sensor = self
                    .sdi12
                    .get_or_insert_with(|| sdi12::Sensor::new(self.config.address.unwrap_or('0')));
                sensor.set_reading(pv);
                sensor.set_connected(!broken);
                match sdi12::Recorder::measure(sensor, self.config.address.unwrap_or('0'), at) {
                    Some(v) => (Status::Ok, v, v),
                    None => (Status::NoResponse, f64::NAN, f64::NAN),
                }
            }
            InputKind::Rs485 => {
                let unit = self.config.unit.unwrap_or(1);
                let sensor = self
                    .rs485
                    .get_or_insert_with(|| serial::ModbusSensor::new(unit));
                sensor.reading = self.process.value(t) as f32;
                sensor.connected = !broken && self.baud == serial::SENSOR_BAUD;
                match serial::modbus_measure(sensor, unit) {
                    Some(v) => (Status::Ok, v, v),
                    None => (Status::NoResponse, f64::NAN, f64::NAN),
                }
            }
            InputKind::Rs232 => {
                let sensor = self.rs232.get_or_insert_with(serial::AsciiSensor::new);
                sensor.reading = self.process.value(t);
                sensor.connected = !broken && self.baud == serial::SENSOR_BAUD;
                match serial::ascii_measure(sensor) {
                    Some(v) => (Status::Ok, v, v),
                    None => (Status::NoResponse, f64::NAN, f64::NAN),
                }
            }
        };
        Sample {
            input: index,
            at,
            status,
            raw,
            value,
        }
    }
}

/// Every input of a logger.
#[derive(Debug, Clone)]
pub struct Bank {
    pub inputs: Vec<Input>,
}

impl Bank {
    /// Inputs of `configs`, first samples at `now`; `pulses` restores counters.
    pub fn new(configs: &[InputConfig], seed: u64, now: Duration, pulses: &[u64]) -> Self {
        let inputs = configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let period = Duration::from_secs_f64(c.sample_s);
                Input {
                    config: c.clone(),
                    process: Process::new(c.quantity, seed, 0xD17A + i as u64),
                    wiring: Wiring::Sound,
                    baud: serial::SENSOR_BAUD,
                    period,
                    next: now,
                    pulses: pulses.get(i).copied().unwrap_or(0),
                    volume_base: None,
                    sdi12: None,
                    rs485: None,
                    rs232: None,
                    last_value: None,
                }
            })
            .collect();
        Self { inputs }
    }

    /// The earliest sampling deadline.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.inputs.iter().map(|i| i.next).min()
    }

    /// Moves every input's next sample forward so that at most `keep` of its
    /// samples are due at `now`; returns how many samples were passed over
    /// (the oldest ones of a backlog longer than the store holds). Their
    /// values are never computed; counters (pulses) still count them, since
    /// they follow the process's volume, not the samples.
    pub fn skip_backlog(&mut self, now: Duration, keep: u64) -> u64 {
        let mut skipped = 0;
        for inp in &mut self.inputs {
            if inp.next > now || inp.period.is_zero() {
                continue;
            }
            let due =
                ((now - inp.next).as_secs_f64() / inp.period.as_secs_f64()).floor() as u64 + 1;
            if due > keep {
                let n = due - keep;
                inp.next += inp
                    .period
                    .saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
                skipped += n;
            }
        }
        skipped
    }

    /// Every sample due at or before `now`, in time order; also whether a
    /// threshold was crossed upwards (transmission by exception).
    pub fn due(&mut self, now: Duration) -> (Vec<Sample>, bool) {
        let mut out = Vec::new();
        let mut exception = false;
        while let Some((i, at)) = self
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, inp)| inp.next <= now)
            .min_by_key(|(i, inp)| (inp.next, *i))
            .map(|(i, inp)| (i, inp.next))
        {
            let inp = &mut self.inputs[i];
            let s = inp.sample(i as u8, at);
            if let Some(th) = inp.config.threshold
                && s.value > th
                && inp.last_value.is_none_or(|v| v <= th)
            {
                exception = true;
            }
            if s.value.is_finite() {
                inp.last_value = Some(s.value);
            }
            inp.next = at + inp.period;
            out.push(s);
        }
        (out, exception)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldtwin_emulator::site::default_inputs;

    #[test]
    fn ne43_bands() {
        assert_eq!(ne43(0.0), Status::FaultLow);
        assert_eq!(ne43(3.59), Status::FaultLow);
        assert_eq!(ne43(3.7), Status::Undefined);
        assert_eq!(ne43(3.9), Status::UnderRange);
        assert_eq!(ne43(4.0), Status::Ok);
        assert_eq!(ne43(12.0), Status::Ok);
        assert_eq!(ne43(20.0), Status::Ok);
        assert_eq!(ne43(20.3), Status::OverRange);
        assert_eq!(ne43(20.8), Status::Undefined);
        assert_eq!(ne43(21.5), Status::FaultHigh);
    }

    #[test]
    fn scaling_roundtrips_and_saturates() {
        let (lrv, urv) = (0.0, 5.0);
        let ma = transmit_current(2.5, lrv, urv);
        assert!((ma - 12.0).abs() < 1e-9);
        assert!((scale_current(ma, lrv, urv) - 2.5).abs() < 1e-9);
        assert_eq!(transmit_current(-3.0, lrv, urv), 3.8);
        assert_eq!(transmit_current(99.0, lrv, urv), 20.5);
        assert!((scale_voltage(5.0, 0.0, 10.0) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn samples_follow_their_periods_and_a_jump_yields_every_sample() {
        let mut cfg = default_inputs();
        cfg[0].sample_s = 10.0;
        let mut b = Bank::new(&cfg, 7, Duration::ZERO, &[]);
        let (s, _) = b.due(Duration::from_secs(60));
        // input 0 every 10 s: 0..=60 -> 7 samples; the others every 60 s: 2 each.
        assert_eq!(s.iter().filter(|x| x.input == 0).count(), 7);
        assert_eq!(s.iter().filter(|x| x.input == 1).count(), 2);
        assert!(s.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(b.next_deadline(), Some(Duration::from_secs(70)));
        let level = s.iter().find(|x| x.input == 0).unwrap();
        assert_eq!(level.status, Status::Ok);
        assert!((1.0..4.0).contains(&level.value), "{level:?}");
    }

    #[test]
    fn a_backlog_longer_than_the_store_is_skipped_to_its_last_samples() {
        let mut cfg = default_inputs();
        cfg[0].sample_s = 10.0;
        let mut b = Bank::new(&cfg, 7, Duration::ZERO, &[]);
        let year = Duration::from_secs(365 * 86_400);
        let skipped = b.skip_backlog(year, 100);
        let (s, _) = b.due(year);
        // Each input keeps exactly its last 100 samples, ending at `year`.
        for i in 0..cfg.len() as u8 {
            let mine: Vec<_> = s.iter().filter(|x| x.input == i).collect();
            assert_eq!(mine.len(), 100, "input {i}");
            assert_eq!(mine.last().unwrap().at, year, "input {i}");
        }
        let period_samples = |p: f64| (year.as_secs_f64() / p) as u64 + 1;
        let total: u64 = cfg.iter().map(|c| period_samples(c.sample_s)).sum();
        assert_eq!(skipped + s.len() as u64, total);
        // Nothing more is skipped once caught up.
        assert_eq!(b.skip_backlog(year, 100), 0);
    }

    #[test]
    fn wire_break_reads_fault_low_and_same_seed_same_values() {
        let cfg = default_inputs();
        let mut a = Bank::new(&cfg, 3, Duration::ZERO, &[]);
        let mut b = Bank::new(&cfg, 3, Duration::ZERO, &[]);
        let t = Duration::from_secs(3600);
        assert_eq!(a.due(t).0, b.due(t).0);
        a.inputs[0].wiring = Wiring::Broken;
        a.inputs[4].wiring = Wiring::Broken;
        let (s, _) = a.due(Duration::from_secs(3660));
        assert_eq!(s[0].status, Status::FaultLow);
        assert_eq!(s[0].raw, 0.0);
        assert_eq!(s[4].status, Status::NoResponse);
    }

    #[test]
    fn serial_sensors_read_the_process_over_their_protocols() {
        use fieldtwin_emulator::site::InputKind;
        let mut cfg = default_inputs();
        cfg[1].kind = InputKind::Rs485; // pressure, bar
        cfg[1].unit = Some(12);
        cfg[0].kind = InputKind::Rs232; // level, m
        let mut b = Bank::new(&cfg, 5, Duration::ZERO, &[]);
        let t = Duration::from_secs(7200);
        let (s, _) = b.due(t);
        let last = |i: u8| *s.iter().rfind(|x| x.input == i).unwrap();
        let (level, pressure) = (last(0), last(1));
        assert_eq!(pressure.status, Status::Ok);
        let pv = b.inputs[1].process.value(pressure.at.as_secs_f64());
        assert_eq!(pressure.value, f64::from(pv as f32), "float32 registers");
        assert_eq!(level.status, Status::Ok);
        let pv = b.inputs[0].process.value(level.at.as_secs_f64());
        assert!((level.value - pv).abs() <= 0.0005, "{level:?} {pv}");
        b.inputs[0].wiring = Wiring::Broken;
        b.inputs[1].wiring = Wiring::Broken;
        let (s, _) = b.due(Duration::from_secs(7260));
        assert!(
            s.iter()
                .filter(|x| x.input < 2)
                .all(|x| x.status == Status::NoResponse)
        );
        // Sound wires, but the ports at another baud rate than the
        // transmitters': nothing readable comes back.
        b.inputs[0].wiring = Wiring::Sound;
        b.inputs[1].wiring = Wiring::Sound;
        b.inputs[0].baud = 4800;
        b.inputs[1].baud = 19200;
        let (s, _) = b.due(Duration::from_secs(7320));
        assert!(
            s.iter()
                .filter(|x| x.input < 2)
                .all(|x| x.status == Status::NoResponse)
        );
    }

    #[test]
    fn pulse_count_does_not_depend_on_sampling() {
        let mut cfg = default_inputs();
        cfg[2].sample_s = 1.0;
        let mut fast = Bank::new(&cfg, 1, Duration::ZERO, &[]);
        cfg[2].sample_s = 3600.0;
        let mut slow = Bank::new(&cfg, 1, Duration::ZERO, &[]);
        let t = Duration::from_secs(3600);
        let f = fast.due(t).0.into_iter().rfind(|s| s.input == 2).unwrap();
        let s = slow.due(t).0.into_iter().rfind(|s| s.input == 2).unwrap();
        assert_eq!(f.raw, s.raw);
        // About 20 m3 in the first hour at 0.01 m3 a pulse.
        assert!((1900.0..2200.0).contains(&f.raw), "{f:?}");
    }

    #[test]
    fn threshold_crossing_is_an_exception() {
        let mut cfg = default_inputs();
        cfg[0].threshold = Some(2.6);
        cfg[0].sample_s = 600.0;
        let mut b = Bank::new(&cfg, 1, Duration::ZERO, &[]);
        // Level rises from 2.5 m at t=0; above 2.6 m within the first hours.
        let mut crossed = false;
        for h in 1..6 {
            crossed |= b.due(Duration::from_secs(h * 3600)).1;
        }
        assert!(crossed);
    }
}
