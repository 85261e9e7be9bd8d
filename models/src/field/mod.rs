//! Field devices behind a Panel Server and on its OT network: PowerTag
//! Energy sensors (A9MEM15xx), PM5xxx/iEM3xxx meters and environmental
//! sensors (TH110, TRH, CO2), with their register maps as data
//! ([`regmap`]) and their physics on virtual time ([`physics`]).
//!
//! Contract (devices.md §1.3, §2; Panel Server Modbus file sheets):
//! - [`FieldDevice::handle`] answers one Modbus request at virtual time `t`
//!   (seconds): `None` when the device does not answer at all (a meter
//!   without supply), otherwise data or the device's own exception: 0x01
//!   for a function its sheet does not list, 0x02 for an unlisted register
//!   or a write to a read-only one, 0x03 for a bad value.
//! - Instantaneous values are refreshed every [`FieldDevice::period_s`]
//!   seconds of virtual time ([NF]: PowerTag 5 s, meters 1 s, sensors 60 s),
//!   so two reads in the same period give identical registers.
//! - PowerTag power off: the circuit loses voltage: V, I, P read 0, energy
//!   stops counting, alarm bit 0 (voltage loss) of 3300 is set; the tag keeps
//!   answering through the Panel Server. A wireless device the Panel
//!   Server has marked Not connected (`set_contact(false)`: its reports
//!   stopped arriving over the radio, see `panel_server::radio`):
//!   measurements read the sheet's no-value markers and 31146
//!   (communication status) reads 0. 31147-31161 read the link figures the
//!   Panel Server last computed ([`LinkFigures`]). A sensor without supply
//!   stops reporting ([`FieldDevice::transmits`]).
//! - Meter power off: it stops answering (the gateway turns that into 0x0B).

pub mod physics;
pub mod regmap;
pub mod tcp_meter;

use std::collections::BTreeMap;
use std::sync::Mutex;

use fieldtwin_emulator::device::Force;

use crate::proto::modbus::{Exception, Request, Response, function};
use physics::{Ambient, Circuit, Profile, Sample};
use regmap::{Entry, Map, Value};

/// Which kind of field device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    PowerTag,
    Meter,
    Th110,
    Trh,
    Co2,
}

impl Kind {
    /// The kind of a commercial reference, or `None` if it is not emulated.
    pub fn of_model(model: &str) -> Option<Self> {
        Some(match model {
            m if m.starts_with("A9MEM15") => Self::PowerTag,
            m if m.starts_with("PM5") || m.starts_with("iEM3") => Self::Meter,
            "TH110" => Self::Th110,
            m if m.starts_with("TRH") || m == "CL110" => Self::Trh,
            m if m.starts_with("CO2") || m.starts_with("SED-CO2") => Self::Co2,
            _ => return None,
        })
    }

    fn map(self) -> &'static Map {
        regmap::map(match self {
            Self::PowerTag => "powertag_energy",
            Self::Meter => "meter",
            Self::Th110 => "th110",
            Self::Trh => "trh",
            Self::Co2 => "co2",
        })
    }

    fn is_wireless(self) -> bool {
        self != Self::Meter
    }
}

/// A measurement a datalogger can log from a field device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Measure {
    VoltageAN,
    CurrentA,
    ActivePower,
    PowerFactor,
    ActiveEnergy,
    Temperature,
    Humidity,
    Co2,
}

impl Measure {
    /// Every measurement, in catalogue order.
    pub const ALL: [Measure; 8] = [
        Self::VoltageAN,
        Self::CurrentA,
        Self::ActivePower,
        Self::PowerFactor,
        Self::ActiveEnergy,
        Self::Temperature,
        Self::Humidity,
        Self::Co2,
    ];

    /// The measurements a device of `kind` offers.
    pub fn of(kind: Kind) -> &'static [Measure] {
        use Measure::*;
        match kind {
            Kind::PowerTag | Kind::Meter => {
                &[VoltageAN, CurrentA, ActivePower, PowerFactor, ActiveEnergy]
            }
            Kind::Th110 => &[Temperature],
            Kind::Trh => &[Temperature, Humidity],
            Kind::Co2 => &[Temperature, Humidity, Co2],
        }
    }

    /// Short code (the end of the topic id, e.g. `modbus:1_mb_VAN`).
    pub fn code(self) -> &'static str {
        match self {
            Self::VoltageAN => "VAN",
            Self::CurrentA => "IA",
            Self::ActivePower => "P",
            Self::PowerFactor => "PF",
            Self::ActiveEnergy => "E",
            Self::Temperature => "T",
            Self::Humidity => "RH",
            Self::Co2 => "CO2",
        }
    }

    /// Column heading of the CSV file: name and unit.
    pub fn heading(self) -> &'static str {
        match self {
            Self::VoltageAN => "RmsVoltagePhsAN (V)",
            Self::CurrentA => "RmsCurrentPhsA (A)",
            Self::ActivePower => "ActivePower (W)",
            Self::PowerFactor => "PowerFactor",
            Self::ActiveEnergy => "ActiveEnergyDelivered (Wh)",
            Self::Temperature => "Temperature (degC)",
            Self::Humidity => "RelativeHumidity (%)",
            Self::Co2 => "CO2Concentration (ppm)",
        }
    }

    /// The measurement whose code is `code` (case-insensitive).
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.code().eq_ignore_ascii_case(code))
    }
}

/// Models accepted in the site file for field devices.
pub const MODELS: &str = "A9MEM15xx (PowerTag Energy), PM5xxx, iEM3xxx, TH110, TRH, CO2";

/// The Panel Server identity every wireless unit repeats at 30501..
#[derive(Debug, Clone, Default)]
pub struct GatewayCopy {
    pub product_id: u16,
    pub commercial_reference: String,
    pub firmware: String,
    pub serial: String,
    pub model: String,
}

/// The registers a device keeps over a power loss (sheets: "Saved = Y").
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    pub energy_wh: f64,
    pub partial_base_wh: f64,
}

/// NV key under which a Panel Server or a networked meter keeps [`Saved`] values.
pub const SAVED_KEY: &str = "field_energy";
/// How often (virtual time) energies are written to NV memory ([NF]).
pub const SAVE_PERIOD: std::time::Duration = std::time::Duration::from_secs(900);

/// Site-file description of one field device.
#[derive(Debug, Clone)]
pub struct Spec {
    pub id: String,
    pub model: String,
    pub unit: u8,
    pub rf_id: Option<u64>,
    pub profile: Option<String>,
    pub powered: bool,
    pub seed: u64,
    /// Seconds of the day at virtual time 0.
    pub day0: f64,
}

#[derive(Debug)]
struct State {
    circuit: Option<Circuit>,
    ambient: Option<Ambient>,
    powered: bool,
    in_contact: bool,
    partial_base_wh: f64,
    /// `false`: a serial device is hung (powered, silent on the bus).
    responsive: bool,
    /// Forced registers (issue 9 field faults).
    forced: BTreeMap<u16, Forced>,
    /// Radio figures of the link, as the Panel Server computes them.
    link: LinkFigures,
    /// Seconds between two radio reports (wireless devices).
    report_period: std::time::Duration,
    /// Load added downstream of the metered circuit (EV charging stations
    /// feeding a site meter: [`crate::charging_station::feed`]).
    extra: Option<ExtraLoad>,
    /// A device known only by its radio reports (added by its RF-ID, not
    /// in the site file): the readings of its last report, which its
    /// measurement registers serve. `None` for a site device.
    reported: Option<Vec<(u8, f32)>>,
}

impl State {
    /// A powered, responsive device with nothing forced and no extra load;
    /// a PowerTag reports by radio every 5 s, other devices every 60 s.
    fn new(
        kind: Kind,
        circuit: Option<Circuit>,
        ambient: Option<Ambient>,
        in_contact: bool,
        reported: Option<Vec<(u8, f32)>>,
    ) -> Self {
        Self {
            circuit,
            ambient,
            powered: true,
            in_contact,
            partial_base_wh: 0.0,
            responsive: true,
            forced: BTreeMap::new(),
            link: LinkFigures::default(),
            report_period: std::time::Duration::from_secs(if kind == Kind::PowerTag {
                5
            } else {
                60
            }),
            extra: None,
            reported,
        }
    }
}

/// The radio diagnostics of a wireless device (31147-31161): the last
/// report as received, the Panel Server's figures over its window, and
/// the worst of that window. `None` (no report yet) reads as the sheet's
/// no-value markers (0xFFC00000, LQI 0xFFFF).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkFigures {
    pub last: Option<(f64, f64, u8)>,
    pub average: Option<(f64, f64, u8)>,
    pub worst: Option<(f64, f64, u8)>,
}

/// A load added to a meter's circuit: `f(t)` = (power W, energy Wh it
/// consumed since it was coupled), spread evenly over the phases.
#[derive(Clone)]
pub struct ExtraLoad(pub std::sync::Arc<dyn Fn(f64) -> (f64, f64) + Send + Sync>);

impl std::fmt::Debug for ExtraLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtraLoad")
    }
}

/// A forced register: how, since when (virtual seconds), and the value it
/// held when forced (for [`Force::Stuck`]).
#[derive(Debug, Clone)]
struct Forced {
    force: Force,
    since: f64,
    held: Value,
}

/// One field device.
#[derive(Debug)]
pub struct FieldDevice {
    pub id: String,
    pub model: String,
    pub kind: Kind,
    pub unit: u8,
    pub rf_id: Option<u64>,
    pub period_s: f64,
    serial: String,
    gateway: GatewayCopy,
    state: Mutex<State>,
}

/// Rated power (W) and phases of a model ([NF]: typical ratings).
fn rating(model: &str, profile: Profile) -> (f64, usize) {
    match model {
        "A9MEM1520" | "A9MEM1521" | "A9MEM1522" => (3_000.0, 1),
        m if m.starts_with("A9MEM156") => (5_000.0, 1),
        m if m.starts_with("A9MEM15") => (
            if profile == Profile::EvCharging {
                22_000.0
            } else {
                15_000.0
            },
            3,
        ),
        m if m.starts_with("PM5") => (
            if profile == Profile::EvCharging {
                44_000.0
            } else {
                120_000.0
            },
            3,
        ),
        _ => (20_000.0, 3),
    }
}

/// Wireless product identifier of 31032 (devices.md §1.3).
fn product_id(model: &str) -> u16 {
    match model {
        "A9MEM1520" => 17200,
        "A9MEM1521" => 17201,
        "A9MEM1522" => 17202,
        "A9MEM1540" => 17203,
        "A9MEM1541" => 17204,
        "A9MEM1542" => 17205,
        "A9MEM1560" => 17206,
        "A9MEM1570" => 17210,
        "A9MEM1573" => 17214,
        _ => 0xFFFF,
    }
}

impl FieldDevice {
    pub fn new(spec: &Spec, gateway: GatewayCopy) -> Option<Self> {
        let kind = Kind::of_model(&spec.model)?;
        let default_profile = if kind == Kind::Meter || kind == Kind::PowerTag {
            "office"
        } else {
            "indoor"
        };
        let profile = Profile::parse(spec.profile.as_deref().unwrap_or(default_profile))?;
        let (circuit, ambient) = match kind {
            Kind::PowerTag | Kind::Meter => {
                let (w, ph) = rating(&spec.model, profile);
                (
                    Some(Circuit::new(spec.seed, profile, w, ph, spec.day0)),
                    None,
                )
            }
            _ => (None, Some(Ambient::new(spec.seed, spec.day0))),
        };
        let period_s = match kind {
            Kind::PowerTag => 5.0,
            Kind::Meter => 1.0,
            _ => 60.0,
        };
        let mut dev = Self {
            id: spec.id.clone(),
            model: spec.model.clone(),
            kind,
            unit: spec.unit,
            rf_id: spec.rf_id,
            period_s,
            serial: format!("{:010}", spec.seed % 10_000_000_000),
            gateway,
            state: Mutex::new(State::new(kind, circuit, ambient, true, None)),
        };
        if !spec.powered {
            dev.set_power(0.0, false);
        }
        dev.serial.truncate(10);
        Some(dev)
    }

    /// A wireless device known only by its radio reports (an RF-ID the
    /// administrator added that is not one of the site's devices): `kind`
    /// from its reports (PowerTag or ambient sensor), no physics; its
    /// measurement registers serve its last report's readings and read
    /// the no-value markers until one arrives. Not connected until then.
    pub fn heard(rf_id: u64, unit: u8, kind: Kind, gateway: GatewayCopy) -> Self {
        Self {
            id: format!("rf-{rf_id:016X}"),
            model: match kind {
                Kind::PowerTag => "PowerTag (unidentified)",
                _ => "Sensor (unidentified)",
            }
            .into(),
            kind,
            unit,
            rf_id: Some(rf_id),
            period_s: if kind == Kind::PowerTag { 5.0 } else { 60.0 },
            serial: "0000000000".into(),
            gateway,
            state: Mutex::new(State::new(kind, None, None, false, Some(Vec::new()))),
        }
    }

    /// Whether the device is known only by its reports ([`FieldDevice::heard`]).
    pub fn is_heard(&self) -> bool {
        self.lock().reported.is_some()
    }

    /// Records the readings of a report received from a device known only
    /// by its reports (ignored for a site device, whose physics are known).
    pub fn set_reported(&self, readings: &[(u8, f32)]) {
        let mut st = self.lock();
        if let Some(r) = st.reported.as_mut() {
            *r = readings.to_vec();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Switches the device's supply (the metered circuit for a PowerTag).
    pub fn set_power(&self, t: f64, on: bool) {
        let mut st = self.lock();
        st.powered = on;
        if let Some(c) = st.circuit.as_mut() {
            c.set_on(t, on);
        }
    }

    /// Whether the device sends its reports (a sensor needs its supply; a
    /// PowerTag keeps reporting the voltage loss of its circuit).
    pub fn transmits(&self) -> bool {
        self.kind == Kind::PowerTag || self.lock().powered
    }

    /// Records the radio figures the Panel Server computed.
    pub fn set_link(&self, link: LinkFigures) {
        self.lock().link = link;
    }

    pub fn link(&self) -> LinkFigures {
        self.lock().link
    }

    pub fn report_period(&self) -> std::time::Duration {
        self.lock().report_period
    }

    pub fn set_report_period(&self, p: std::time::Duration) {
        self.lock().report_period = p;
    }

    /// What the device puts in a radio report at `t`: (quantity id of
    /// `fieldtwin_emulator::radio::report::Quantity`, value).
    pub fn readings(&self, t: f64) -> Vec<(u8, f32)> {
        use fieldtwin_emulator::radio::report::Quantity as Q;
        let mut st = self.lock();
        let ts = (t / self.period_s).floor() * self.period_s;
        let sample = Self::sample(&mut st, ts);
        let mut v = Vec::new();
        if let Some(s) = sample {
            let on = s.on;
            v.push((
                Q::ActivePower as u8,
                if on { s.p_total as f32 } else { 0.0 },
            ));
            v.push((Q::EnergyKwh as u8, (s.energy_wh / 1000.0) as f32));
            v.push((Q::Voltage as u8, if on { s.v[0] as f32 } else { 0.0 }));
        }
        if let Some(c) = st.ambient.as_ref().map(|a| a.at(ts)) {
            v.push((Q::Temperature as u8, c.temperature_c as f32));
            match self.kind {
                Kind::Trh => v.push((Q::Humidity as u8, (c.humidity * 100.0) as f32)),
                Kind::Co2 => v.push((Q::Co2 as u8, c.co2_ppm as f32)),
                _ => {}
            }
        }
        v.retain(|(_, x)| x.is_finite());
        v
    }

    /// Puts a wireless device in or out of radio contact with its Panel Server.
    pub fn set_contact(&self, in_contact: bool) {
        self.lock().in_contact = in_contact;
    }

    /// Makes a serial device hang (silent on its Modbus link while powered:
    /// the Panel Server gateway answers 0x0B for it) or answer again.
    /// Wireless devices answer through the Panel Server: they are taken out
    /// of radio contact instead ([`FieldDevice::set_contact`]).
    pub fn set_responsive(&self, responsive: bool) -> Result<(), String> {
        if self.kind.is_wireless() {
            return Err(format!(
                "{} is a wireless device; take it out of radio contact instead (field_radio)",
                self.id
            ));
        }
        self.lock().responsive = responsive;
        Ok(())
    }

    /// Whether a serial device answers on its link (when powered).
    pub fn is_responsive(&self) -> bool {
        self.lock().responsive
    }

    /// Forces register `reg` (numbered as in the device's sheet) at virtual
    /// time `t`, or clears it ([`Force::Clear`]). The error names what is
    /// wrong: an unknown register, a text register, a value that is not a
    /// finite number.
    pub fn force(&self, t: f64, reg: u16, force: Force) -> Result<(), String> {
        let map = self.kind.map();
        let e = map.entry(reg).ok_or_else(|| {
            format!(
                "{} ({}) has no register {reg}; force a register its sheet lists (numbered as in the sheet, e.g. 3028 for voltage V1-N of a meter)",
                self.id, self.model
            )
        })?;
        let mut st = self.lock();
        if force == Force::Clear {
            st.forced.remove(&reg);
            return Ok(());
        }
        if numeric_type(&e.typ).is_none() {
            return Err(format!(
                "register {reg} of {} is {} ({}); only number registers can be forced",
                self.id, e.typ, e.description
            ));
        }
        let number = match force {
            Force::Drift { per_hour } => per_hour,
            Force::Value { value } => value,
            _ => 0.0,
        };
        if !number.is_finite() {
            return Err(format!("the forced number must be finite, not {number}"));
        }
        let ts = (t / self.period_s).floor() * self.period_s;
        let sample = Self::sample(&mut st, ts);
        st.forced.remove(&reg);
        let held = self.value(&st, e, &sample, ts);
        st.forced.insert(
            reg,
            Forced {
                force,
                since: t,
                held,
            },
        );
        Ok(())
    }

    /// Registers forced now, with how.
    pub fn forced(&self) -> Vec<(u16, Force)> {
        self.lock()
            .forced
            .iter()
            .map(|(r, f)| (*r, f.force))
            .collect()
    }

    pub fn is_powered(&self) -> bool {
        self.lock().powered
    }

    pub fn in_contact(&self) -> bool {
        self.lock().in_contact
    }

    /// Total active energy (Wh) at `t`, if the device meters energy.
    pub fn energy_wh(&self, t: f64) -> Option<f64> {
        self.lock().circuit.as_mut().map(|c| c.energy_wh(t))
    }

    /// Energy registers to keep in NV memory, at `t`.
    pub fn saved(&self, t: f64) -> Option<Saved> {
        let mut st = self.lock();
        let base = st.partial_base_wh;
        st.circuit.as_mut().map(|c| Saved {
            energy_wh: c.energy_wh(t),
            partial_base_wh: base,
        })
    }

    /// Restores the energy registers of a previous run as their values at
    /// virtual time `t` (call at boot, before any read).
    pub fn restore(&self, saved: Saved, t: f64) {
        let mut st = self.lock();
        if let Some(c) = st.circuit.as_mut() {
            c.restore(saved.energy_wh, t);
            st.partial_base_wh = saved.partial_base_wh.clamp(0.0, saved.energy_wh.max(0.0));
        }
    }

    /// The measurements a datalogger reads at virtual time `t`
    /// ([`Measure`] list of the device's kind, in that order); `None` when the
    /// device is not connected (a wireless device out of contact, a serial
    /// device without supply or hung). A value the device does not hold (a
    /// PowerTag without supply) is `None`.
    pub fn measure(&self, t: f64) -> Option<Vec<(Measure, Option<f64>)>> {
        let mut st = self.lock();
        let connected = if self.kind.is_wireless() {
            st.in_contact
        } else {
            st.powered && st.responsive
        };
        if !connected {
            return None;
        }
        let ts = (t / self.period_s).floor() * self.period_s;
        let sample = Self::sample(&mut st, ts);
        let climate = st.ambient.as_ref().map(|a| a.at(ts));
        Some(
            Measure::of(self.kind)
                .iter()
                .map(|&m| {
                    let v = match (m, &sample, &climate) {
                        (Measure::VoltageAN, Some(s), _) if s.on => Some(s.v[0]),
                        (Measure::CurrentA, Some(s), _) if s.on => Some(s.i[0]),
                        (Measure::ActivePower, Some(s), _) if s.on => Some(s.p_total),
                        (Measure::PowerFactor, Some(s), _) if s.on => Some(s.pf),
                        (Measure::ActiveEnergy, Some(s), _) => Some(s.energy_wh),
                        (Measure::Temperature, _, Some(c)) => Some(c.temperature_c),
                        (Measure::Humidity, _, Some(c)) => Some(c.humidity * 100.0),
                        (Measure::Co2, _, Some(c)) => Some(c.co2_ppm),
                        _ => None,
                    };
                    (m, v.filter(|v| v.is_finite()))
                })
                .collect(),
        )
    }

    /// Does the device answer requests at all?
    pub fn answers(&self) -> bool {
        let st = self.lock();
        if self.kind.is_wireless() {
            true
        } else {
            st.powered && st.responsive
        }
    }

    /// Answers one request at virtual time `t`; `None` = no answer.
    pub fn handle(&self, t: f64, req: &Request) -> Option<Result<Response, Exception>> {
        if !self.answers() {
            return None;
        }
        let ts = (t / self.period_s).floor() * self.period_s;
        let map = self.kind.map();
        let meter = self.kind == Kind::Meter;
        Some(match req {
            Request::ReadHolding { addr, count } => {
                self.read(map, ts, *addr, *count, function::READ_HOLDING_REGISTERS)
            }
            // [NF] PM5xxx/iEM3xxx answer FC4 like FC3; the Panel Server sheets list FC3 only.
            Request::ReadInput { addr, count } if meter => {
                self.read(map, ts, *addr, *count, function::READ_INPUT_REGISTERS)
            }
            Request::ReadScattered { addrs } if !meter => {
                let mut st = self.lock();
                let sample = Self::sample(&mut st, ts);
                map.read_scattered(addrs, |e| self.value(&st, e, &sample, ts))
                    .map(|values| Response::Scattered { values })
            }
            Request::WriteMultiple { addr, values } if !meter => self.write(map, t, *addr, values),
            Request::WriteMultiple { addr, .. } | Request::WriteSingle { addr, .. } if meter => {
                // [NF] meter registers of devices.md §2 are all read-only.
                let _ = addr;
                Err(Exception::IllegalDataAddress)
            }
            Request::ReadDeviceId { code, object } if meter => self.device_id(*code, *object),
            _ => Err(Exception::IllegalFunction),
        })
    }

    fn device_id(&self, code: u8, object: u8) -> Result<Response, Exception> {
        if !(1..=4).contains(&code) || object > 2 && code != 4 {
            return Err(Exception::IllegalDataValue);
        }
        let objects = vec![
            (0u8, b"Schneider Electric".to_vec()),
            (1u8, self.model.as_bytes().to_vec()),
            (2u8, b"002.001.004".to_vec()),
        ];
        let objects = if code == 4 {
            objects
                .into_iter()
                .filter(|o| o.0 == object)
                .collect::<Vec<_>>()
        } else {
            objects
        };
        if objects.is_empty() {
            return Err(Exception::IllegalDataAddress);
        }
        Ok(Response::DeviceId {
            code,
            conformity: 0x01,
            objects,
        })
    }

    fn sample(st: &mut State, ts: f64) -> Option<Sample> {
        let mut s = st.circuit.as_mut().map(|c| c.sample(ts))?;
        if let (Some(x), Some(c)) = (&st.extra, &st.circuit)
            && s.on
        {
            let (p, e) = (x.0)(ts);
            let n = c.phases();
            for ph in 0..n {
                s.p[ph] += p / n as f64;
                s.i[ph] = s.p[ph] / (s.v[ph] * s.pf);
            }
            s.p_total = s.p.iter().sum();
            s.s_total = (0..3).map(|ph| s.v[ph] * s.i[ph]).sum();
            s.q_total = (s.s_total * s.s_total - s.p_total * s.p_total)
                .max(0.0)
                .sqrt();
            s.energy_wh += e;
        }
        Some(s)
    }

    /// Adds a load downstream of the metered circuit ([`ExtraLoad`]).
    pub fn set_extra_load(&self, load: ExtraLoad) {
        self.lock().extra = Some(load);
    }

    fn read(
        &self,
        map: &Map,
        ts: f64,
        addr: u16,
        count: u16,
        function: u8,
    ) -> Result<Response, Exception> {
        let mut st = self.lock();
        let sample = Self::sample(&mut st, ts);
        let values = map.read(addr, count, |e| self.value(&st, e, &sample, ts))?;
        Ok(Response::Registers { function, values })
    }

    fn write(&self, map: &Map, t: f64, addr: u16, values: &[u16]) -> Result<Response, Exception> {
        let e = map.check_write(addr, values.len())?;
        if e.typ == "INT64" && e.description.contains("resettable")
            || e.description.starts_with("Set partial")
        {
            // [NF] only 0 is accepted: the counter "returns to zero".
            if values.iter().any(|v| *v != 0) {
                return Err(Exception::IllegalDataValue);
            }
            let mut st = self.lock();
            let e_now = st.circuit.as_mut().map(|c| c.energy_wh(t)).unwrap_or(0.0);
            st.partial_base_wh = e_now;
            return Ok(Response::WriteMultiple {
                addr,
                count: values.len() as u16,
            });
        }
        Err(Exception::IllegalDataAddress)
    }

    /// The value of register `e` (the heart of the device model).
    fn value(&self, st: &State, e: &Entry, s: &Option<Sample>, ts: f64) -> Value {
        let v = self.true_value(st, e, s, ts);
        let silent = self.kind.is_wireless() && !st.in_contact && e.is_measurement();
        match st.forced.get(&e.reg) {
            Some(f) if !silent => f.apply(e, v, ts),
            _ => v,
        }
    }

    /// The register's value as the device's physics make it (unforced).
    fn true_value(&self, st: &State, e: &Entry, s: &Option<Sample>, ts: f64) -> Value {
        use Value::*;
        let wireless = self.kind.is_wireless();
        if wireless && !st.in_contact {
            if e.reg == 31146 {
                return U16(0);
            }
            if e.reg == 31145 {
                return U16(1);
            }
            if e.is_measurement() {
                return Invalid;
            }
        }
        if let Some(v) = self.common_value(e) {
            return v;
        }
        match self.kind {
            _ if (31147..=31161).contains(&e.reg) => Self::link_value(&st.link, e.reg),
            _ if st.reported.is_some() => self.reported_value(st, e.reg),
            Kind::PowerTag => self.powertag_value(st, e.reg, s.as_ref()),
            Kind::Meter => self.meter_value(e.reg, s.as_ref()),
            _ => self.sensor_value(st, e.reg, ts),
        }
    }

    /// Identification and radio registers shared by every wireless family.
    fn common_value(&self, e: &Entry) -> Option<Value> {
        use Value::*;
        if !self.kind.is_wireless() {
            return None;
        }
        let g = &self.gateway;
        Some(match e.reg {
            30501 => U16(g.product_id),
            30502 => Text(g.commercial_reference.clone()),
            30518 => Text(g.firmware.clone()),
            30524 => Text(g.serial.clone()),
            30534 => Text(g.model.clone()),
            31001 => Text(self.id.clone()),
            31011 => Text(self.id.chars().take(5).collect()),
            31026 => U16(u16::from(self.unit)),
            31027 => U64(self.rf_id.unwrap_or(u64::MAX)),
            31032 => U16(product_id(&self.model)),
            31045 => Text("Schneider Electric".into()),
            31061 => Text(self.model.clone()),
            31077 => Text("002.000.016".into()),
            31083 => Text("001.000.000".into()),
            31089 => Text(self.serial.clone()),
            31099 => Text(
                match self.kind {
                    Kind::PowerTag => "PowerTag",
                    _ => "EcoStruxure",
                }
                .into(),
            ),
            31107 => Text(self.model.clone()),
            31115 => Text(
                match self.kind {
                    Kind::PowerTag => "PowerTag Energy",
                    _ => "Ambient sensor",
                }
                .into(),
            ),
            31145 => U16(1),
            31146 => U16(1),
            _ => return None,
        })
    }

    /// A device known only by its reports: the registers its readings
    /// give (active power, energy, voltage; temperature, humidity, CO2).
    fn reported_value(&self, st: &State, reg: u16) -> Value {
        use Value::*;
        use fieldtwin_emulator::radio::report::Quantity as Q;
        let get = |q: Q| {
            st.reported
                .as_ref()
                .and_then(|r| r.iter().find(|(k, _)| *k == q as u8))
                .map(|(_, v)| f64::from(*v))
                .filter(|v| v.is_finite())
        };
        let v = match (self.kind, reg) {
            (Kind::PowerTag, 3060) => get(Q::ActivePower).map(|w| F32(w as f32)),
            (Kind::PowerTag, 3028) => get(Q::Voltage).map(|v| F32(v as f32)),
            (Kind::PowerTag, 3204 | 5013) => get(Q::EnergyKwh).map(|k| I64((k * 1000.0) as i64)),
            (Kind::PowerTag, _) => None,
            (_, 4001) => get(Q::Temperature).map(|c| F32(c as f32)),
            (_, 4007) => get(Q::Humidity).map(|h| F32((h / 100.0) as f32)),
            (_, 4015) => get(Q::Co2).map(|c| F32((c * 1e-6) as f32)),
            _ => None,
        };
        v.unwrap_or(Invalid)
    }

    /// 31147-31161: PER (fraction), RSSI (dBm) and LQI of the last
    /// report, of the Panel Server's window, and the window's worst.
    fn link_value(link: &LinkFigures, reg: u16) -> Value {
        use Value::*;
        let (set, off) = match reg {
            31147..=31151 => (link.last, reg - 31147),
            31152..=31156 => (link.average, reg - 31152),
            _ => (link.worst, reg - 31157),
        };
        match (set, off) {
            (Some((per, _, _)), 0) => F32(per as f32),
            (Some((_, rssi, _)), 2) => F32(rssi as f32),
            (Some((_, _, lqi)), 4) => U16(u16::from(lqi)),
            (None, 4) => U16(0xFFFF),
            _ => Invalid,
        }
    }

    fn powertag_value(&self, st: &State, reg: u16, s: Option<&Sample>) -> Value {
        use Value::*;
        let (Some(s), Some(c)) = (s, st.circuit.as_ref()) else {
            return Invalid;
        };
        let phases = c.phases();
        let phase = |k: usize, v: f64| if k < phases { F32(v as f32) } else { Invalid };
        let vll = |a: usize, b: usize| {
            if phases < 3 {
                Invalid
            } else {
                F32((s.v[a] * s.v[a] + s.v[b] * s.v[b] + s.v[a] * s.v[b]).sqrt() as f32)
            }
        };
        let e = s.energy_wh;
        let partial = (e - st.partial_base_wh).max(0.0);
        let share = |k: usize| {
            if phases == 1 {
                [1.0, 0.0, 0.0][k]
            } else {
                s.p[k] / s.p_total.max(1e-9)
            }
        };
        let wh = |v: f64| I64(v.floor() as i64);
        let rated_v = 230.0;
        match reg {
            3000 | 3002 | 3004 => phase(
                usize::from((reg - 3000) / 2),
                s.i[usize::from((reg - 3000) / 2)],
            ),
            3020 => vll(0, 1),
            3022 => vll(1, 2),
            3024 => vll(2, 0),
            3028 | 3030 | 3032 => phase(
                usize::from((reg - 3028) / 2),
                s.v[usize::from((reg - 3028) / 2)],
            ),
            3054 | 3056 | 3058 => phase(
                usize::from((reg - 3054) / 2),
                s.p[usize::from((reg - 3054) / 2)],
            ),
            3060 => F32(s.p_total as f32),
            3076 => F32(s.s_total as f32),
            3084 => F32(s.pf as f32),
            3132 => F32((24.0 + 12.0 * s.p_total / c.rated_w()) as f32),
            3204 | 5013 => wh(e),
            3256 | 3260 | 3264 | 3268 | 5009 => wh(partial),
            3272 | 3276 | 5017 | 5021 => I64(0),
            5049 | 5089 | 5129 => {
                let k = usize::from((reg - 5049) / 40);
                if k < phases {
                    wh(partial * share(k))
                } else {
                    Invalid
                }
            }
            5053 | 5093 | 5133 => {
                let k = usize::from((reg - 5053) / 40);
                if k < phases {
                    wh(e * share(k))
                } else {
                    Invalid
                }
            }
            5057 | 5061 | 5097 | 5101 | 5137 | 5141 => I64(0),
            // Alarm validity: voltage loss, load current loss, over/undervoltage, 45/50/80 %.
            3298 => U32(0b11_0000_0111_1001),
            3300 => U32(u32::from(!s.on)),
            3302 | 3304 | 3306 => Invalid,
            3310 => F32(0.0),
            31014 => U16(match c.phases() {
                1 => 26,
                _ => 1,
            }),
            31015 => U16(if phases == 1 { 1 } else { 7 }),
            31016 => U16(1),
            31018 => U16(63),
            31020 => F32(rated_v),
            31022 => U16(1),
            31024 => U16(2),
            _ => Invalid,
        }
    }

    fn meter_value(&self, reg: u16, s: Option<&Sample>) -> Value {
        use Value::*;
        let Some(s) = s else { return Invalid };
        let avg = |x: [f64; 3]| F32(((x[0] + x[1] + x[2]) / 3.0) as f32);
        let vll = |a: usize, b: usize| (s.v[a] * s.v[a] + s.v[b] * s.v[b] + s.v[a] * s.v[b]).sqrt();
        let e = s.energy_wh;
        let q_ratio = s.q_total / s.p_total.max(1e-9);
        let wh = |v: f64| I64(v.floor() as i64);
        let share = |k: usize| s.p[k] / s.p_total.max(1e-9);
        match reg {
            30 => Text(self.id.clone()),
            50 => Text(self.model.clone()),
            70 => Text("Schneider Electric".into()),
            // [NF] model code of the PM5560 (not in the public lists).
            90 => U16(if self.model.starts_with("PM5") {
                15281
            } else {
                0xFFFF
            }),
            130 => U32((self.serial.parse::<u64>().unwrap_or(0) % 4_000_000_000) as u32),
            1637 => U16(if self.model.starts_with("iEM") {
                0x0203
            } else {
                0xFFFF
            }),
            1638 => U16(2),
            1639 => U16(1),
            1641 => U16(4),
            2016 => U16(11),
            3000 | 3002 | 3004 => F32(s.i[usize::from((reg - 3000) / 2)] as f32),
            3006 => F32((0.05 * (s.i[0] + s.i[1] + s.i[2]) / 3.0) as f32),
            3010 => avg(s.i),
            3020 => F32(vll(0, 1) as f32),
            3022 => F32(vll(1, 2) as f32),
            3024 => F32(vll(2, 0) as f32),
            3026 => F32(((vll(0, 1) + vll(1, 2) + vll(2, 0)) / 3.0) as f32),
            3028 | 3030 | 3032 => F32(s.v[usize::from((reg - 3028) / 2)] as f32),
            3036 => avg(s.v),
            3054 | 3056 | 3058 => F32((s.p[usize::from((reg - 3054) / 2)] / 1000.0) as f32),
            3060 => F32((s.p_total / 1000.0) as f32),
            3068 => F32((s.q_total / 1000.0) as f32),
            3076 => F32((s.s_total / 1000.0) as f32),
            3084 => F32(s.pf as f32),
            3110 => F32(s.freq as f32),
            3204 => wh(e),
            3208 | 3224 | 3240 => I64(0),
            3220 => wh(e * q_ratio),
            3236 => wh(e / s.pf.max(0.1)),
            3518 | 3522 | 3526 => wh(e * share(usize::from((reg - 3518) / 4))),
            _ => Invalid,
        }
    }

    fn sensor_value(&self, st: &State, reg: u16, ts: f64) -> Value {
        use Value::*;
        let Some(a) = st.ambient.as_ref() else {
            return Invalid;
        };
        let c = a.at(ts);
        match reg {
            4001 => F32(c.temperature_c as f32),
            4003 => F32(if self.kind == Kind::Th110 {
                125.0
            } else {
                60.0
            }),
            4005 => F32(if self.kind == Kind::Th110 {
                -25.0
            } else {
                -10.0
            }),
            4007 => F32(c.humidity as f32),
            4009 => F32(1.0),
            4011 => F32(0.0),
            4015 => F32((c.co2_ppm * 1e-6) as f32),
            // [NF] a fresh battery, slowly discharging (3.0 V -> 2.9 V over a year).
            3316 => F32((3.0 - 0.1 * ts / (365.0 * 86_400.0)) as f32),
            3298 => U32(0b10_1000_0000),
            3300 => U32(0),
            31022 => U16(if self.kind == Kind::Co2 { 3 } else { 2 }),
            _ => Invalid,
        }
    }
}

/// Seed of a field device: stable for a site seed and a device id.
pub fn seed_of(site_seed: u64, id: &str) -> u64 {
    id.bytes().fold(site_seed ^ 0x5851_F42D_4C95_7F2D, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Restores `devices` from NV and saves them every [`SAVE_PERIOD`] of
/// virtual time while the owning device is powered.
pub fn persist(
    ctx: &fieldtwin_emulator::device::DeviceContext,
    devices: Vec<std::sync::Arc<FieldDevice>>,
    restore: bool,
) {
    use std::collections::BTreeMap;
    if restore && let Ok(Some(saved)) = ctx.nv.get::<BTreeMap<String, Saved>>(SAVED_KEY) {
        let now = ctx.clock.now().as_secs_f64();
        for d in &devices {
            if let Some(s) = saved.get(&d.id) {
                d.restore(*s, now);
            }
        }
    }
    let ctx2 = ctx.clone();
    ctx.spawn(async move {
        let mut tick = ctx2.clock.interval(SAVE_PERIOD);
        // A jump passes many periods: one save at its end says the same as
        // one per period (the energies are exact integrals at any time).
        tick.set_missed_ticks(fieldtwin_emulator::clock::MissedTicks::Skip);
        tick.tick().await;
        loop {
            let now = tick.tick().await.as_secs_f64();
            let map: BTreeMap<String, Saved> = devices
                .iter()
                .filter_map(|d| d.saved(now).map(|s| (d.id.clone(), s)))
                .collect();
            if let Err(e) = ctx2.nv.put_async(SAVED_KEY, &map).await {
                ctx2.emit("nv", format!("cannot save field energies: {e}"));
            }
        }
    });
}

/// Seconds of the day (UTC) at virtual time 0 of `clock`.
pub fn day0(clock: &fieldtwin_emulator::clock::Clock) -> f64 {
    use chrono::Timelike;
    let e = clock.epoch();
    f64::from(e.num_seconds_from_midnight()) + f64::from(e.nanosecond()) / 1e9
}

/// Every metered or sensing field device of `site` (the serial and wireless
/// devices of each Panel Server, and the networked meters), built as the
/// running site builds them, with time of day `day0` at virtual time 0.
/// Used by `fieldtwin bench physics`.
pub fn site_devices(site: &fieldtwin_emulator::site::Site, day0: f64) -> Vec<FieldDevice> {
    let mut out = Vec::new();
    for d in &site.devices {
        if Kind::of_model(d.model.name()) == Some(Kind::Meter) {
            let spec = Spec {
                id: d.id.clone(),
                model: d.model.name().to_string(),
                unit: 1,
                rf_id: None,
                profile: Some(d.profile.clone().unwrap_or_else(|| "site_main".into())),
                powered: true,
                seed: seed_of(site.site.seed, &d.id),
                day0,
            };
            out.extend(FieldDevice::new(&spec, GatewayCopy::default()));
        }
        for f in d
            .panel_server
            .iter()
            .flat_map(|p| p.serial.iter().chain(&p.wireless))
        {
            let spec = Spec {
                id: f.id.clone(),
                model: f.model.clone(),
                unit: f.unit.unwrap_or(0),
                rf_id: f
                    .rf_id
                    .as_deref()
                    .and_then(fieldtwin_emulator::site::parse_rf_id),
                profile: f.profile.clone(),
                powered: f.powered,
                seed: seed_of(site.site.seed, &f.id),
                day0,
            };
            out.extend(FieldDevice::new(&spec, GatewayCopy::default()));
        }
    }
    out
}

/// The value variant a sheet type holds numbers in (`None` for text).
fn numeric_type(typ: &str) -> Option<fn(f64) -> Value> {
    Some(match typ {
        "Float32" => |x| Value::F32(x as f32),
        "INT64" => |x| Value::I64(x.round() as i64),
        "UINT64" => |x| Value::U64(x.round().max(0.0) as u64),
        "UINT32" => |x| Value::U32(x.round().clamp(0.0, f64::from(u32::MAX)) as u32),
        "UINT16" | "BITMAP" => |x| Value::U16(x.round().clamp(0.0, 65_535.0) as u16),
        _ => return None,
    })
}

fn as_number(v: &Value) -> Option<f64> {
    Some(match v {
        Value::F32(x) => f64::from(*x),
        Value::I64(x) => *x as f64,
        Value::U16(x) => f64::from(*x),
        Value::U32(x) => f64::from(*x),
        Value::U64(x) => *x as f64,
        Value::Text(_) | Value::Invalid => return None,
    })
}

impl Forced {
    /// What register `e`, whose true value is `v`, reads at `ts`. Numbers
    /// outside the register's type saturate (a UINT16 reads 0..65535).
    fn apply(&self, e: &Entry, v: Value, ts: f64) -> Value {
        let Some(make) = numeric_type(&e.typ) else {
            return v;
        };
        match self.force {
            Force::Stuck => self.held.clone(),
            Force::Value { value } => make(value),
            Force::Drift { per_hour } => match as_number(&v) {
                Some(x) => make(x + per_hour * (ts - self.since).max(0.0) / 3600.0),
                None => v,
            },
            Force::Clear => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(model: &str) -> FieldDevice {
        FieldDevice::new(
            &Spec {
                id: "pt".into(),
                model: model.into(),
                unit: 100,
                rf_id: Some(0x2A3B0001),
                profile: Some("office".into()),
                powered: true,
                seed: 42,
                day0: 0.0,
            },
            GatewayCopy::default(),
        )
        .unwrap()
    }

    fn f32_at(d: &FieldDevice, t: f64, reg: u16) -> f32 {
        let Some(Ok(Response::Registers { values, .. })) = d.handle(
            t,
            &Request::ReadHolding {
                addr: reg - 1,
                count: 2,
            },
        ) else {
            panic!("read {reg}")
        };
        f32::from_bits(u32::from(values[0]) << 16 | u32::from(values[1]))
    }

    #[test]
    fn forced_registers_read_stuck_drifting_or_fixed_values() {
        let d = tag("A9MEM1540");
        let t = 11.0 * 3600.0;
        // A fixed, out-of-range voltage.
        d.force(t, 3028, Force::Value { value: 1000.0 }).unwrap();
        assert_eq!(f32_at(&d, t + 60.0, 3028), 1000.0);
        // Other registers keep their true values.
        assert!((220.0..240.0).contains(&f32_at(&d, t + 60.0, 3030)));
        // Stuck: the power reads the same hours later while the truth moves.
        let p0 = f32_at(&d, t, 3060);
        d.force(t, 3060, Force::Stuck).unwrap();
        assert_eq!(f32_at(&d, t + 5.0 * 3600.0, 3060), p0);
        d.force(t, 3060, Force::Clear).unwrap();
        assert_ne!(f32_at(&d, t + 5.0 * 3600.0, 3060), p0);
        // Drift: +10 V an hour on top of the true value.
        d.force(t, 3032, Force::Drift { per_hour: 10.0 }).unwrap();
        let true_v = tag("A9MEM1540");
        let later = t + 2.0 * 3600.0;
        let drift = f32_at(&d, later, 3032) - f32_at(&true_v, later, 3032);
        assert!((drift - 20.0).abs() < 0.01, "drift {drift}");
        assert_eq!(d.forced().len(), 2);
        // Saturation of integer registers; energy reads the forced Wh.
        d.force(t, 3204, Force::Value { value: -5.0 }).unwrap();
        let Some(Ok(Response::Registers { values, .. })) = d.handle(
            t,
            &Request::ReadHolding {
                addr: 3203,
                count: 4,
            },
        ) else {
            panic!()
        };
        assert_eq!(values, vec![0xFFFF, 0xFFFF, 0xFFFF, 0xFFFB]);
        // Bad forcings are refused with a reason.
        let e = d.force(t, 9, Force::Stuck).unwrap_err();
        assert!(e.contains("no register 9"), "{e}");
        let e = d.force(t, 31001, Force::Stuck).unwrap_err();
        assert!(e.contains("ASCII"), "{e}");
        let e = d
            .force(t, 3028, Force::Value { value: f64::NAN })
            .unwrap_err();
        assert!(e.contains("finite"), "{e}");
    }

    #[test]
    fn a_hung_serial_meter_is_silent_but_keeps_counting() {
        let d = FieldDevice::new(
            &Spec {
                id: "m".into(),
                model: "iEM3155".into(),
                unit: 1,
                rf_id: None,
                profile: Some("office".into()),
                powered: true,
                seed: 7,
                day0: 0.0,
            },
            GatewayCopy::default(),
        )
        .unwrap();
        let read = Request::ReadHolding {
            addr: 3027,
            count: 2,
        };
        assert!(d.handle(10.0, &read).is_some());
        d.set_responsive(false).unwrap();
        assert!(d.handle(20.0, &read).is_none());
        assert!(d.is_powered());
        let e0 = d.energy_wh(20.0).unwrap();
        assert!(d.energy_wh(36_000.0).unwrap() > e0);
        d.set_responsive(true).unwrap();
        assert!(d.handle(36_010.0, &read).is_some());
        // Wireless devices go out of contact instead.
        let e = tag("A9MEM1520").set_responsive(false).unwrap_err();
        assert!(e.contains("radio"), "{e}");
    }

    #[test]
    fn powertag_values_are_consistent() {
        let d = tag("A9MEM1540");
        let t = 11.0 * 3600.0;
        let p: f32 = [3054, 3056, 3058].iter().map(|r| f32_at(&d, t, *r)).sum();
        let total = f32_at(&d, t, 3060);
        assert!((p - total).abs() < 0.01 * total, "{p} vs {total}");
        let v = f32_at(&d, t, 3028);
        let i = f32_at(&d, t, 3000);
        let pf = f32_at(&d, t, 3084);
        assert!(((v * i * pf) - f32_at(&d, t, 3054)).abs() < 0.5);
        assert!((220.0..240.0).contains(&v));
    }

    #[test]
    fn powered_off_tag_raises_voltage_loss_and_stops_counting() {
        let d = tag("A9MEM1520");
        d.set_power(100.0, false);
        let Some(Ok(Response::Registers { values, .. })) = d.handle(
            200.0,
            &Request::ReadHolding {
                addr: 3299,
                count: 2,
            },
        ) else {
            panic!()
        };
        assert_eq!(values, vec![0, 1]);
        assert_eq!(d.energy_wh(100.0), d.energy_wh(5000.0));
        assert_eq!(f32_at(&d, 5000.0, 3060), 0.0);
    }

    #[test]
    fn out_of_contact_reads_no_value_markers() {
        let d = tag("A9MEM1520");
        d.set_contact(false);
        let Some(Ok(Response::Registers { values, .. })) = d.handle(
            10.0,
            &Request::ReadHolding {
                addr: 3059,
                count: 2,
            },
        ) else {
            panic!()
        };
        assert_eq!(values, vec![0xFFC0, 0]);
        let Some(Ok(Response::Registers { values, .. })) = d.handle(
            10.0,
            &Request::ReadHolding {
                addr: 31145,
                count: 1,
            },
        ) else {
            panic!()
        };
        assert_eq!(values, vec![0]);
    }

    #[test]
    fn writes_only_where_the_sheet_allows() {
        let d = tag("A9MEM1540");
        let w = |addr: u16, values: Vec<u16>| {
            d.handle(10.0, &Request::WriteMultiple { addr, values })
                .unwrap()
        };
        assert_eq!(w(3203, vec![0; 4]), Err(Exception::IllegalDataAddress));
        assert_eq!(w(3259, vec![0, 0, 0, 1]), Err(Exception::IllegalDataValue));
        assert!(w(3259, vec![0; 4]).is_ok());
        assert_eq!(
            d.handle(
                10.0,
                &Request::WriteSingle {
                    addr: 3259,
                    value: 0
                }
            )
            .unwrap(),
            Err(Exception::IllegalFunction)
        );
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn scattered_reads_and_device_id() {
        let spec = |model: &str| Spec {
            id: "d".into(),
            model: model.into(),
            unit: 100,
            rf_id: Some(7),
            profile: None,
            powered: true,
            seed: 3,
            day0: 0.0,
        };
        let tag = FieldDevice::new(&spec("A9MEM1540"), GatewayCopy::default()).unwrap();
        let Some(Ok(Response::Scattered { values })) = tag.handle(
            1.0,
            &Request::ReadScattered {
                addrs: vec![31025, 31029],
            },
        ) else {
            panic!()
        };
        assert_eq!(values, vec![100, 7]);
        let meter = FieldDevice::new(&spec("PM5560"), GatewayCopy::default()).unwrap();
        let Some(Ok(Response::DeviceId { objects, .. })) =
            meter.handle(1.0, &Request::ReadDeviceId { code: 1, object: 0 })
        else {
            panic!()
        };
        assert_eq!(objects[1].1, b"PM5560".to_vec());
        assert_eq!(
            tag.handle(1.0, &Request::ReadDeviceId { code: 1, object: 0 }),
            Some(Err(Exception::IllegalFunction))
        );
        let th = FieldDevice::new(&spec("TH110"), GatewayCopy::default()).unwrap();
        assert_eq!(
            th.handle(
                1.0,
                &Request::ReadHolding {
                    addr: 4006,
                    count: 2
                }
            ),
            Some(Err(Exception::IllegalDataAddress)),
            "TH110 has no humidity register"
        );
    }
}
