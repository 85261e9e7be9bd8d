//! The local digital inputs DI1 and DI2 of the L models (PAS600L, PAS600LWD,
//! PAS800L): the Modbus file's "Local Digital Inputs" registers 1001-1448 at
//! unit 255 (devices.md §1.2), in pulse mode (a meter's pulses: counters,
//! metered value, flow) or status mode (a contact: logical status,
//! operation counter, operating time).
//!
//! Contract: plain state, no I/O, time passed in (`now`: the site's virtual
//! time, for durations and pulse rates; `rtc`: the device's date, stamped on
//! counter resets).
//! - What is wired to an input comes from the site file
//!   ([`DigitalInputConfig`]); an input with nothing wired answers the
//!   Modbus file's invalid values (validity 0xFFFF, NaN, INT64 min, ...).
//! - [`Bank::set_level`] is the contact: each rising edge of the logical
//!   status counts a pulse (pulse mode) or an operation (status mode);
//!   [`Bank::add_pulses`] gives whole pulses at once; a configured
//!   `pulses_per_hour` adds pulses on virtual time while the device runs
//!   (nothing is counted while it is off).
//! - [`Bank::image`] is the register image of 0x03E8-0x05A7 (`None`: a
//!   gap of the Modbus file, answered 0x02). [`Bank::write`] accepts FC16
//!   writes of 0 to the resettable counters (operating time 0x0422/0x0424,
//!   operation counter 0x0432/0x0434, pulse count 0x0452/0x0456), which
//!   reset them and stamp the reset date; another value is 0x03 ([NF]), any
//!   other address or length 0x02.
//! - [`Bank::counters`]/[`Bank::restore`] are what NV memory keeps.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fieldtwin_emulator::site::{Commodity, DigitalInputConfig, InputMode, Polarity};
use serde::{Deserialize, Serialize};

use super::registers::datetime_words;
use crate::proto::modbus::{Exception, encode};

/// First protocol address of the block (DI1 validity, register 1001).
pub const FIRST: u16 = 0x03E8;
/// Last protocol address of the block (end of DI2's flow custom unit).
pub const LAST: u16 = 0x05A7;
/// Logical status of DI1 (DI2 at +1).
pub const STATUS: u16 = 0x041C;
/// Non-resettable operation counter of DI1 (UINT32; DI2 at +2).
pub const OPERATIONS: u16 = 0x042E;
/// Non-resettable operating time of DI1 (UINT32 seconds; DI2 at +2).
pub const OPERATING_TIME: u16 = 0x041E;
/// Resettable operating time of DI1 (RW).
pub const OPERATING_TIME_RESETTABLE: u16 = 0x0422;
/// Resettable operation counter of DI1 (RW).
pub const OPERATIONS_RESETTABLE: u16 = 0x0432;
/// Non-resettable pulse counter of DI1 (INT64; DI2 at +4).
pub const PULSES: u16 = 0x044A;
/// Resettable pulse count of DI1 (RW, INT64).
pub const PULSES_RESETTABLE: u16 = 0x0452;
/// Date of the last reset of DI1's pulse count (DI2 at +4).
pub const PULSES_RESET_DATE: u16 = 0x045A;
/// Metering accumulated value of DI1 (INT64; DI2 at +4).
pub const METERED: u16 = 0x0462;

const NAN: [u16; 2] = [0xFFC0, 0x0000];
const I64_INVALID: [u16; 4] = [0x8000, 0, 0, 0];
const U32_INVALID: [u16; 2] = [0xFFFF, 0xFFFF];
const DATE_INVALID: [u16; 4] = [0xFFFF; 4];

/// Counters of one input, as NV memory keeps them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Electrical level (voltage present on the input).
    pub high: bool,
    /// Pulses since commissioning.
    pub pulses: i64,
    /// `pulses` when the resettable count was last reset.
    pub pulses_base: i64,
    pub pulses_reset: Option<DateTime<Utc>>,
    /// Rising edges of the logical status since commissioning.
    pub operations: u32,
    pub operations_base: u32,
    pub operations_reset: Option<DateTime<Utc>>,
    /// Milliseconds the logical status was active.
    pub active_ms: u64,
    pub active_base_ms: u64,
    pub active_reset: Option<DateTime<Utc>>,
    /// Part of a pulse accrued from `pulses_per_hour`.
    #[serde(default)]
    pub fraction: f64,
}

/// One input at run time.
#[derive(Debug, Clone)]
struct Input {
    cfg: DigitalInputConfig,
    c: Counters,
    /// Virtual time up to which the counters are advanced.
    at: Duration,
    /// Flow window: start and pulses counted since.
    window: (Duration, i64),
    /// Flow of the last full window, in quantity per hour.
    flow: Option<f32>,
}

impl Input {
    fn active(&self) -> bool {
        self.c.high != (self.cfg.polarity == Polarity::Inverted)
    }

    /// Counts what happened between `at` and `now` while running.
    fn advance(&mut self, now: Duration, running: bool) {
        let dt = now.saturating_sub(self.at);
        self.at = now.max(self.at);
        if !running || dt.is_zero() {
            self.window = (self.at, self.c.pulses);
            return;
        }
        if self.active() {
            self.c.active_ms = self.c.active_ms.saturating_add(dt.as_millis() as u64);
        }
        if self.cfg.mode == InputMode::Pulse && self.cfg.pulses_per_hour > 0.0 {
            self.c.fraction += self.cfg.pulses_per_hour * dt.as_secs_f64() / 3600.0;
            let whole = self.c.fraction.floor();
            self.c.fraction -= whole;
            self.c.pulses = self.c.pulses.saturating_add(whole as i64);
        }
        let span = self.at.saturating_sub(self.window.0);
        if span >= FLOW_WINDOW {
            let pulses = self.c.pulses - self.window.1;
            self.flow =
                Some((pulses as f64 * self.cfg.pulse_weight * 3600.0 / span.as_secs_f64()) as f32);
            self.window = (self.at, self.c.pulses);
        }
    }

    /// A rising edge of the logical status.
    fn edge(&mut self) {
        self.c.operations = self.c.operations.wrapping_add(1);
        if self.cfg.mode == InputMode::Pulse {
            self.c.pulses = self.c.pulses.saturating_add(1);
        }
    }

    fn metered(&self) -> i64 {
        self.cfg
            .offset
            .saturating_add((self.c.pulses as f64 * self.cfg.pulse_weight).round() as i64)
    }
}

/// Flow is measured over windows of this length ([NF]).
pub const FLOW_WINDOW: Duration = Duration::from_secs(60);

struct State {
    inputs: [Option<Input>; 2],
    running: bool,
}

/// The two inputs of one Panel Server.
pub struct Bank {
    state: Mutex<State>,
}

/// The register image of [`FIRST`]..=[`LAST`].
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    words: Vec<Option<u16>>,
}

impl Image {
    /// The word at protocol address `addr`, if the Modbus file has it.
    pub fn word(&self, addr: u16) -> Option<u16> {
        let i = usize::from(addr.checked_sub(FIRST)?);
        self.words.get(i).copied().flatten()
    }

    fn put(&mut self, addr: u16, words: &[u16]) {
        for (k, w) in words.iter().enumerate() {
            self.words[usize::from(addr - FIRST) + k] = Some(*w);
        }
    }
}

/// Whether a block of `count` registers from `addr` touches the inputs.
pub fn touches(addr: u16, count: u16) -> bool {
    let end = u32::from(addr) + u32::from(count);
    u32::from(addr) <= u32::from(LAST) && end > u32::from(FIRST)
}

fn date(d: Option<DateTime<Utc>>) -> [u16; 4] {
    d.map_or(DATE_INVALID, datetime_words)
}

fn feature(c: Commodity) -> u16 {
    // Modbus file register 1287: 15 total delivered active energy, 49 water
    // volume, 50 gas volume, 53 custom.
    match c {
        Commodity::Electricity => 15,
        Commodity::Water => 49,
        Commodity::Gas => 50,
        _ => 53,
    }
}

impl Bank {
    /// The inputs wired as `cfg` says (an input not listed has nothing).
    pub fn new(cfg: &[DigitalInputConfig]) -> Self {
        let input = |n: u8| {
            cfg.iter().find(|c| c.input == n).map(|c| Input {
                cfg: c.clone(),
                c: Counters {
                    high: c.high,
                    ..Counters::default()
                },
                at: Duration::ZERO,
                window: (Duration::ZERO, 0),
                flow: None,
            })
        };
        Self {
            state: Mutex::new(State {
                inputs: [input(1), input(2)],
                running: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether anything is wired to an input.
    pub fn is_empty(&self) -> bool {
        self.lock().inputs.iter().all(Option::is_none)
    }

    /// Boot: counters from NV memory (if any), counting from `now`.
    pub fn restore(&self, saved: Option<[Counters; 2]>, now: Duration) {
        let mut st = self.lock();
        st.running = true;
        for (i, input) in st.inputs.iter_mut().enumerate() {
            if let Some(input) = input {
                // The level is physical: it stays what it is now. Without
                // saved counters (first boot, factory reset) they start at 0.
                let high = input.c.high;
                input.c = saved.as_ref().map(|s| s[i].clone()).unwrap_or_default();
                input.c.high = high;
                input.at = now;
                input.window = (now, input.c.pulses);
                input.flow = None;
            }
        }
    }

    /// Counters up to `now` (what NV memory keeps); with `stop`, counting
    /// stops there (power-off, reboot).
    pub fn counters(&self, now: Duration, stop: bool) -> [Counters; 2] {
        let mut st = self.lock();
        let running = st.running;
        st.running = running && !stop;
        let mut out: [Counters; 2] = Default::default();
        for (i, input) in st.inputs.iter_mut().enumerate() {
            if let Some(input) = input {
                input.advance(now, running);
                out[i] = input.c.clone();
            }
        }
        out
    }

    fn with_input<R>(
        &self,
        n: u8,
        now: Duration,
        f: impl FnOnce(&mut Input, bool) -> R,
    ) -> Result<R, String> {
        let mut st = self.lock();
        let running = st.running;
        let input = st
            .inputs
            .get_mut(usize::from(n.wrapping_sub(1)))
            .ok_or_else(|| format!("DI{n} does not exist; use 1 (DI1) or 2 (DI2)"))?
            .as_mut()
            .ok_or_else(|| {
                format!(
                    "nothing is wired to DI{n} (site file: [[device.panel_server.digital_input]] input = {n})"
                )
            })?;
        input.advance(now, running);
        Ok(f(input, running))
    }

    /// The contact on input `n` closes (voltage present) or opens at `now`.
    pub fn set_level(&self, n: u8, high: bool, now: Duration) -> Result<(), String> {
        self.with_input(n, now, |input, running| {
            let was = input.active();
            input.c.high = high;
            if running && !was && input.active() {
                input.edge();
            }
        })
    }

    /// `count` whole pulses on input `n` (a pulse input of a running device).
    pub fn add_pulses(&self, n: u8, count: u32, now: Duration) -> Result<(), String> {
        self.with_input(n, now, |input, running| {
            if input.cfg.mode != InputMode::Pulse {
                return Err(format!(
                    "DI{n} is a status input; pulses go to a pulse input (mode = \"pulse\")"
                ));
            }
            if running {
                input.c.pulses = input.c.pulses.saturating_add(i64::from(count));
                input.c.operations = input.c.operations.wrapping_add(count);
            }
            Ok(())
        })?
    }

    /// The register image at `now`.
    pub fn image(&self, now: Duration) -> Image {
        let mut st = self.lock();
        let running = st.running;
        let mut img = Image {
            words: vec![None; usize::from(LAST - FIRST) + 1],
        };
        for (i, input) in st.inputs.iter_mut().enumerate() {
            let n = i as u16;
            if let Some(input) = input.as_mut() {
                input.advance(now, running);
            }
            let input = input.as_ref();
            let pulse = input.filter(|x| x.cfg.mode == InputMode::Pulse);
            let status = input.filter(|x| x.cfg.mode == InputMode::Status);
            let or = |v: Option<u16>| [v.unwrap_or(0xFFFF)];
            img.put(0x03E8 + n, &or(input.map(|_| 1)));
            img.put(
                0x03EA + n,
                &or(input.map(|x| u16::from(x.cfg.mode == InputMode::Status))),
            );
            let text = |f: &dyn Fn(&Input) -> String, words: usize| {
                encode::ascii(&input.map(f).unwrap_or_default(), words)
            };
            img.put(0x03EC + 20 * n, &text(&|x| x.cfg.name.clone(), 20));
            img.put(0x0414 + 3 * n, &text(&|x| x.cfg.label.clone(), 3));
            // Usage of the connected device: 21 = Other ([NF]).
            img.put(0x041A + n, &or(input.map(|_| 21)));
            img.put(STATUS + n, &or(input.map(|x| u16::from(x.active()))));
            let secs = |ms: u64| encode::u32((ms / 1000).min(u64::from(u32::MAX)) as u32);
            let u32_or = |v: Option<[u16; 2]>| v.unwrap_or(U32_INVALID);
            img.put(
                OPERATING_TIME + 2 * n,
                &u32_or(input.map(|x| secs(x.c.active_ms))),
            );
            img.put(
                OPERATING_TIME_RESETTABLE + 2 * n,
                &u32_or(input.map(|x| secs(x.c.active_ms - x.c.active_base_ms.min(x.c.active_ms)))),
            );
            img.put(
                0x0426 + 4 * n,
                &input.map_or(DATE_INVALID, |x| date(x.c.active_reset)),
            );
            img.put(
                OPERATIONS + 2 * n,
                &u32_or(input.map(|x| encode::u32(x.c.operations))),
            );
            img.put(
                OPERATIONS_RESETTABLE + 2 * n,
                &u32_or(
                    input.map(|x| encode::u32(x.c.operations.wrapping_sub(x.c.operations_base))),
                ),
            );
            img.put(
                0x0436 + 4 * n,
                &input.map_or(DATE_INVALID, |x| date(x.c.operations_reset)),
            );
            let f32_or = |v: Option<f32>| v.map_or(NAN, encode::f32);
            let i64_or = |v: Option<i64>| v.map_or(I64_INVALID, encode::i64);
            img.put(
                0x043E + 2 * n,
                &f32_or(pulse.map(|x| x.cfg.pulse_weight as f32)),
            );
            img.put(0x0442 + 4 * n, &i64_or(pulse.map(|x| x.cfg.offset)));
            img.put(PULSES + 4 * n, &i64_or(pulse.map(|x| x.c.pulses)));
            img.put(
                PULSES_RESETTABLE + 4 * n,
                &i64_or(pulse.map(|x| x.c.pulses - x.c.pulses_base)),
            );
            img.put(
                PULSES_RESET_DATE + 4 * n,
                &pulse.map_or(DATE_INVALID, |x| date(x.c.pulses_reset)),
            );
            img.put(METERED + 4 * n, &i64_or(pulse.map(Input::metered)));
            img.put(0x0494 + 2 * n, &f32_or(pulse.and_then(|x| x.flow)));
            img.put(0x04C2 + n, &or(pulse.map(|x| x.cfg.commodity.code())));
            // Feature of a status input: 1 = Custom, with the texts below.
            img.put(0x04C4 + n, &or(status.map(|_| 1)));
            img.put(0x04C6 + n, &or(input.map(|x| u16::from(x.c.high))));
            img.put(
                0x04C8 + n,
                &or(input.map(|x| u16::from(x.cfg.polarity == Polarity::Inverted))),
            );
            let custom = |s: &str| encode::ascii(if status.is_some() { s } else { "" }, 10);
            let context: String = status
                .map(|x| x.cfg.name.chars().take(20).collect())
                .unwrap_or_default();
            img.put(0x04CA + 10 * n, &encode::ascii(&context, 10));
            img.put(0x04DE + 10 * n, &custom("Inactive"));
            img.put(0x04F2 + 10 * n, &custom("Active"));
            img.put(0x0506 + n, &or(pulse.map(|x| feature(x.cfg.commodity))));
            for base in [0x0508, 0x0530, 0x0558, 0x0580] {
                img.put(base + 20 * n, &encode::ascii("", 20));
            }
        }
        img
    }

    /// An FC16 write at `addr` (see the module contract).
    pub fn write(
        &self,
        addr: u16,
        values: &[u16],
        now: Duration,
        rtc: DateTime<Utc>,
    ) -> Result<(), Exception> {
        #[derive(Clone, Copy)]
        enum Which {
            ActiveTime,
            Operations,
            Pulses,
        }
        let (which, n, len) = match addr {
            a if a == OPERATING_TIME_RESETTABLE || a == OPERATING_TIME_RESETTABLE + 2 => {
                (Which::ActiveTime, (a - OPERATING_TIME_RESETTABLE) / 2, 2)
            }
            a if a == OPERATIONS_RESETTABLE || a == OPERATIONS_RESETTABLE + 2 => {
                (Which::Operations, (a - OPERATIONS_RESETTABLE) / 2, 2)
            }
            a if a == PULSES_RESETTABLE || a == PULSES_RESETTABLE + 4 => {
                (Which::Pulses, (a - PULSES_RESETTABLE) / 4, 4)
            }
            _ => return Err(Exception::IllegalDataAddress),
        };
        if values.len() != len {
            return Err(Exception::IllegalDataAddress);
        }
        if values.iter().any(|w| *w != 0) {
            return Err(Exception::IllegalDataValue);
        }
        let mut st = self.lock();
        let running = st.running;
        let input = st.inputs[usize::from(n)]
            .as_mut()
            .ok_or(Exception::IllegalDataAddress)?;
        input.advance(now, running);
        match which {
            Which::ActiveTime => {
                input.c.active_base_ms = input.c.active_ms;
                input.c.active_reset = Some(rtc);
            }
            Which::Operations => {
                input.c.operations_base = input.c.operations;
                input.c.operations_reset = Some(rtc);
            }
            Which::Pulses if input.cfg.mode == InputMode::Pulse => {
                input.c.pulses_base = input.c.pulses;
                input.c.pulses_reset = Some(rtc);
            }
            Which::Pulses => return Err(Exception::IllegalDataAddress),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn cfg(input: u8, mode: InputMode, per_hour: f64) -> DigitalInputConfig {
        DigitalInputConfig {
            input,
            name: "Water meter".into(),
            label: "WM1".into(),
            mode,
            polarity: Polarity::Normal,
            commodity: Commodity::Water,
            pulse_weight: 10.0,
            offset: 1000,
            pulses_per_hour: per_hour,
            high: false,
        }
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn rtc() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).unwrap()
    }

    fn i64_at(img: &Image, addr: u16) -> i64 {
        let w: Vec<u16> = (0..4).map(|k| img.word(addr + k).unwrap()).collect();
        i64::from_be_bytes(
            w.iter()
                .flat_map(|w| w.to_be_bytes())
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
        )
    }

    fn u32_at(img: &Image, addr: u16) -> u32 {
        (u32::from(img.word(addr).unwrap()) << 16) | u32::from(img.word(addr + 1).unwrap())
    }

    #[test]
    fn pulse_input_counts_rate_and_edges_and_meters() {
        let b = Bank::new(&[cfg(1, InputMode::Pulse, 120.0)]);
        b.restore(None, s(0));
        // Half an hour at 120 pulses/h, then three closings of the contact.
        let _ = b.image(s(1800));
        for t in [1801, 1803, 1805] {
            b.set_level(1, true, s(t)).unwrap();
            b.set_level(1, false, s(t + 1)).unwrap();
        }
        b.add_pulses(1, 7, s(1810)).unwrap();
        let img = b.image(s(1810));
        assert_eq!(img.word(0x03E8), Some(1), "DI1 valid");
        assert_eq!(img.word(0x03E9), Some(0xFFFF), "nothing on DI2");
        assert_eq!(img.word(0x03EA), Some(0), "pulse mode");
        assert_eq!(i64_at(&img, PULSES), 60 + 3 + 7);
        assert_eq!(i64_at(&img, PULSES_RESETTABLE), 70);
        assert_eq!(i64_at(&img, METERED), 1000 + 700);
        assert_eq!(img.word(0x04C2), Some(6), "water");
        assert_eq!(img.word(0x0506), Some(49), "water volume");
        // Pulse weight 10.0 as float32.
        assert_eq!(
            (img.word(0x043E), img.word(0x043F)),
            (Some(0x4120), Some(0))
        );
        // DI2 answers the invalid values of the Modbus file.
        assert_eq!(i64_at(&img, PULSES + 4), i64::MIN);
        assert_eq!(
            (img.word(0x0440), img.word(0x0441)),
            (Some(0xFFC0), Some(0))
        );
        // Gaps of the Modbus file are not registers.
        assert_eq!(img.word(0x046A), None);
        assert_eq!(img.word(0x04C1), None);
        assert_eq!(img.word(LAST), Some(0));
        assert_eq!(img.word(LAST + 1), None);
    }

    #[test]
    fn flow_over_a_window() {
        let b = Bank::new(&[cfg(1, InputMode::Pulse, 360.0)]);
        b.restore(None, s(0));
        let img = b.image(s(30));
        assert_eq!(
            (img.word(0x0494), img.word(0x0495)),
            (Some(0xFFC0), Some(0))
        );
        let img = b.image(s(120));
        let flow = f32::from_bits(
            (u32::from(img.word(0x0494).unwrap()) << 16) | u32::from(img.word(0x0495).unwrap()),
        );
        // 360 pulses/h of 10 units each.
        assert!((flow - 3600.0).abs() < 1.0, "{flow}");
    }

    #[test]
    fn status_input_counts_operations_and_operating_time() {
        let mut c = cfg(2, InputMode::Status, 0.0);
        c.polarity = Polarity::Inverted;
        c.high = true;
        let b = Bank::new(&[c]);
        b.restore(None, s(100));
        let img = b.image(s(100));
        assert_eq!(img.word(STATUS + 1), Some(0), "high + inverted = inactive");
        assert_eq!(img.word(0x04C7), Some(1), "electrical level high");
        assert_eq!(img.word(0x04C9), Some(1), "inverted");
        b.set_level(2, false, s(200)).unwrap(); // active from 200
        b.set_level(2, true, s(260)).unwrap(); // inactive from 260
        b.set_level(2, false, s(300)).unwrap(); // active again
        let img = b.image(s(310));
        assert_eq!(img.word(STATUS + 1), Some(1));
        assert_eq!(u32_at(&img, OPERATIONS + 2), 2);
        assert_eq!(u32_at(&img, OPERATING_TIME + 2), 70);
        // A status input has no pulse registers, and refuses pulses.
        assert_eq!(i64_at(&img, PULSES + 4), i64::MIN);
        assert!(
            b.add_pulses(2, 1, s(311))
                .unwrap_err()
                .contains("status input")
        );
        assert_eq!(img.word(0x04C5), Some(1), "custom feature");
        // Resets: only 0, stamped with the RTC.
        assert_eq!(
            b.write(OPERATIONS_RESETTABLE + 2, &[0, 1], s(320), rtc()),
            Err(Exception::IllegalDataValue)
        );
        b.write(OPERATIONS_RESETTABLE + 2, &[0, 0], s(320), rtc())
            .unwrap();
        b.write(OPERATING_TIME_RESETTABLE + 2, &[0, 0], s(320), rtc())
            .unwrap();
        let img = b.image(s(330));
        assert_eq!(u32_at(&img, OPERATIONS_RESETTABLE + 2), 0);
        assert_eq!(u32_at(&img, OPERATIONS + 2), 2, "non-resettable stays");
        assert_eq!(u32_at(&img, OPERATING_TIME_RESETTABLE + 2), 10);
        assert_eq!(img.word(0x043A), Some(26), "reset date year");
        // Unknown addresses, lengths and unwired inputs.
        assert_eq!(
            b.write(OPERATIONS, &[0, 0], s(330), rtc()),
            Err(Exception::IllegalDataAddress)
        );
        assert_eq!(
            b.write(OPERATIONS_RESETTABLE + 2, &[0], s(330), rtc()),
            Err(Exception::IllegalDataAddress)
        );
        assert_eq!(
            b.write(OPERATIONS_RESETTABLE, &[0, 0], s(330), rtc()),
            Err(Exception::IllegalDataAddress)
        );
        assert!(
            b.set_level(1, true, s(331))
                .unwrap_err()
                .contains("nothing is wired to DI1")
        );
        assert!(b.set_level(3, true, s(331)).unwrap_err().contains("use 1"));
    }

    #[test]
    fn counters_survive_a_restore_and_stop_while_off() {
        let b = Bank::new(&[cfg(1, InputMode::Pulse, 3600.0)]);
        b.restore(None, s(0));
        let saved = b.counters(s(10), true);
        assert_eq!(saved[0].pulses, 10);
        // Off: no pulses, neither from the rate nor from the contact.
        b.set_level(1, true, s(20)).unwrap();
        b.set_level(1, false, s(30)).unwrap();
        assert_eq!(b.counters(s(40), false)[0].pulses, 10);
        let again = Bank::new(&[cfg(1, InputMode::Pulse, 3600.0)]);
        again.restore(Some(saved), s(1000));
        assert_eq!(i64_at(&again.image(s(1005)), PULSES), 15);
    }

    proptest! {
        /// Any FC16 write into the block gives a result, never a panic.
        #[test]
        fn writes_never_panic(addr in FIRST..=LAST, values in proptest::collection::vec(any::<u16>(), 0..8)) {
            let b = Bank::new(&[cfg(1, InputMode::Pulse, 1.0), cfg(2, InputMode::Status, 0.0)]);
            b.restore(None, s(0));
            let _ = b.write(addr, &values, s(1), rtc());
            let _ = b.image(s(2));
        }
    }
}
