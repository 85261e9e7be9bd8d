//! `[device.datalogger]`: configuration of a cellular Data Logger (seed 004;
//! docs/datalogger.md).
//!
//! Contract: configuration only (DESIGN.md principle 6). Every field has a
//! default, so a `DataLogger` device without the table gets the default
//! sensor set and uplink; [`DataLoggerConfig::validate`] range-checks every
//! field and names it in the error (`device[3].datalogger.input[1].sample_s`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{SiteError, check_name, invalid};

/// Cellular technology of the modem.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CellTechnology {
    #[serde(rename = "4g")]
    #[default]
    Lte,
    #[serde(rename = "3g")]
    Umts,
    #[serde(rename = "2g")]
    Gsm,
}

impl CellTechnology {
    /// 4, 3 or 2.
    pub fn generation(self) -> u8 {
        match self {
            CellTechnology::Lte => 4,
            CellTechnology::Umts => 3,
            CellTechnology::Gsm => 2,
        }
    }

    pub fn from_generation(g: u8) -> Option<Self> {
        match g {
            4 => Some(Self::Lte),
            3 => Some(Self::Umts),
            2 => Some(Self::Gsm),
            _ => None,
        }
    }
}

/// The electrical kind of a sensor input.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// 4-20 mA current loop (NAMUR NE43 bands).
    Current,
    /// 0-10 V.
    Voltage,
    /// Pulse counter (count x weight).
    Pulse,
    /// Digital input (contact open/closed).
    Digital,
    /// An SDI-12 sensor on the logger's SDI-12 line.
    Sdi12,
    /// A Modbus RTU transmitter on the logger's RS-485 line.
    Rs485,
    /// An ASCII transmitter on the logger's RS-232 port.
    Rs232,
}

/// What an input measures (chooses its seeded physics).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Volume flow, m3/h.
    Flow,
    /// Water level, m.
    Level,
    /// Pressure, bar.
    Pressure,
    /// Temperature, degC.
    Temperature,
    /// A contact (digital inputs).
    Contact,
}

/// `[[device.datalogger.input]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Stream name (1-32 of a-z, A-Z, 0-9, '-', '_').
    pub name: String,
    pub kind: InputKind,
    pub quantity: Quantity,
    /// Value at 4 mA / 0 V (lower range value).
    #[serde(default)]
    pub lrv: Option<f64>,
    /// Value at 20 mA / 10 V (upper range value).
    #[serde(default)]
    pub urv: Option<f64>,
    /// Sampling period in seconds of virtual time (1 to 86400).
    #[serde(default = "default_sample_s")]
    pub sample_s: f64,
    /// Pulse inputs: engineering units per pulse (e.g. 0.01 m3).
    #[serde(default)]
    pub pulse_weight: Option<f64>,
    /// SDI-12 inputs: the sensor's address (`0`-`9`, `a`-`z`, `A`-`Z`).
    #[serde(default)]
    pub address: Option<char>,
    /// RS-485 inputs: the transmitter's Modbus unit id (1-247, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<u8>,
    /// Transmit by exception when the value crosses this threshold upwards.
    #[serde(default)]
    pub threshold: Option<f64>,
}

fn default_sample_s() -> f64 {
    60.0
}

/// Digital outputs the logger has (DO1 to DO4) [NF].
pub const MAX_OUTPUTS: usize = 4;

/// What drives a digital output.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputMode {
    /// Set by a user (USB console, BLE app); the setting survives power
    /// cycles.
    #[default]
    Manual,
    /// Follows an input: on when its value rises above `above` (or its
    /// reading is a fault), off when it falls below `below`.
    Alarm,
}

/// `[[device.datalogger.output]]`: one digital output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Output name (1-32 of a-z, A-Z, 0-9, '-', so it can be typed on the
    /// USB console).
    pub name: String,
    #[serde(default)]
    pub mode: OutputMode,
    /// Alarm outputs: the input they follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Alarm outputs: on above this value (default: the input's threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Alarm outputs: off again below this value (default: `above`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
}

/// The default outputs: DO1 and DO2, manual.
pub fn default_outputs() -> Vec<OutputConfig> {
    ["DO1", "DO2"]
        .into_iter()
        .map(|n| OutputConfig {
            name: n.into(),
            mode: OutputMode::Manual,
            input: None,
            above: None,
            below: None,
        })
        .collect()
}

fn is_default_outputs(v: &[OutputConfig]) -> bool {
    v == default_outputs().as_slice()
}

/// How the logger uploads (docs/datalogger.md "Uplink").
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UplinkProtocol {
    /// MQTT 3.1.1 over TLS 1.2 (default port 8883).
    #[default]
    Mqtts,
    /// HTTP/1.1 POST over TLS 1.2 (default port 443).
    Https,
}

/// `[device.datalogger]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataLoggerConfig {
    /// Server `host:port`: the MQTT broker (MQTTS) or the HTTPS server;
    /// default: the host side, port 8883 (MQTTS) or 443 (HTTPS).
    #[serde(default)]
    pub broker: Option<String>,
    /// `mqtts` (default) or `https`.
    #[serde(default)]
    pub uplink: UplinkProtocol,
    /// Path the HTTPS uplink posts records to.
    #[serde(default = "default_https_path")]
    pub https_path: String,
    /// MQTT user name; default: the device id.
    #[serde(default)]
    pub username: Option<String>,
    /// MQTT password; default: derived from the site seed and the device id.
    #[serde(default)]
    pub password: Option<String>,
    /// PEM file of the CA that signed the broker's certificate; without it
    /// the logger does not verify the broker (lab default, docs/datalogger.md).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// First level of the MQTT topics (`PREFIX/ID/records`).
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Transmission period in seconds of virtual time (10 to 86400).
    #[serde(default = "default_transmit_s")]
    pub transmit_s: f64,
    /// Longest cellular session, seconds of virtual time (10 to 600).
    #[serde(default = "default_session_max_s")]
    pub session_max_s: f64,
    /// Records the NV ring holds (16 to 1000000).
    #[serde(default = "default_store_records")]
    pub store_records: u32,
    /// Access point name of the cellular network.
    #[serde(default = "default_apn")]
    pub apn: String,
    #[serde(default)]
    pub technology: CellTechnology,
    /// Mean received signal strength in dBm (-120 to -40).
    #[serde(default = "default_signal_dbm")]
    pub signal_dbm: f64,
    /// Expose the USB console on a pseudo-terminal linked at this path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usb_pty: Option<String>,
    /// Carry the BLE link on a Unix socket at this path (the mobile app,
    /// `fieldtwin ble`, connects there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ble_socket: Option<String>,
    /// Sensor inputs; default: docs/datalogger.md "Default inputs".
    #[serde(default = "default_inputs")]
    pub input: Vec<InputConfig>,
    /// Digital outputs; default: DO1 and DO2, manual.
    #[serde(
        default = "default_outputs",
        skip_serializing_if = "is_default_outputs"
    )]
    pub output: Vec<OutputConfig>,
}

impl Default for DataLoggerConfig {
    fn default() -> Self {
        Self {
            broker: None,
            uplink: UplinkProtocol::default(),
            https_path: default_https_path(),
            username: None,
            password: None,
            ca_file: None,
            topic_prefix: default_topic_prefix(),
            transmit_s: default_transmit_s(),
            session_max_s: default_session_max_s(),
            store_records: default_store_records(),
            apn: default_apn(),
            technology: CellTechnology::default(),
            signal_dbm: default_signal_dbm(),
            usb_pty: None,
            ble_socket: None,
            input: default_inputs(),
            output: default_outputs(),
        }
    }
}

fn default_https_path() -> String {
    "/telemetry".into()
}
fn default_topic_prefix() -> String {
    "telemetry".into()
}
fn default_transmit_s() -> f64 {
    900.0
}
fn default_session_max_s() -> f64 {
    120.0
}
fn default_store_records() -> u32 {
    20_000
}
fn default_apn() -> String {
    "internet".into()
}
fn default_signal_dbm() -> f64 {
    -85.0
}

fn input(name: &str, kind: InputKind, quantity: Quantity) -> InputConfig {
    InputConfig {
        name: name.into(),
        kind,
        quantity,
        lrv: None,
        urv: None,
        sample_s: default_sample_s(),
        pulse_weight: None,
        address: None,
        unit: None,
        threshold: None,
    }
}

/// The default sensor set: a level transmitter (4-20 mA), a pressure
/// transmitter (0-10 V), a flow meter's pulse output, a door contact and an
/// SDI-12 water-temperature probe.
pub fn default_inputs() -> Vec<InputConfig> {
    vec![
        input("level", InputKind::Current, Quantity::Level),
        input("pressure", InputKind::Voltage, Quantity::Pressure),
        InputConfig {
            pulse_weight: Some(0.01),
            ..input("flow", InputKind::Pulse, Quantity::Flow)
        },
        input("door", InputKind::Digital, Quantity::Contact),
        InputConfig {
            address: Some('0'),
            ..input("water_temp", InputKind::Sdi12, Quantity::Temperature)
        },
    ]
}

/// Default (LRV, URV) of a quantity.
pub fn default_range(q: Quantity) -> (f64, f64) {
    match q {
        Quantity::Flow => (0.0, 100.0),
        Quantity::Level => (0.0, 5.0),
        Quantity::Pressure => (0.0, 10.0),
        Quantity::Temperature => (-20.0, 60.0),
        Quantity::Contact => (0.0, 1.0),
    }
}

fn range(field: String, v: f64, lo: f64, hi: f64, unit: &str) -> Result<(), SiteError> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{v} is out of range; allowed: {lo} to {hi} {unit}"),
        ))
    }
}

impl DataLoggerConfig {
    /// Range-checks every field; `at` is the table's path (`device[3].datalogger`).
    pub fn validate(&self, at: &str) -> Result<(), SiteError> {
        if let Some(b) = &self.broker {
            let ok = b
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(invalid(
                    format!("{at}.broker"),
                    format!("{b:?} is not host:port (e.g. \"10.77.0.1:8883\")"),
                ));
            }
        }
        let path_ok = self.https_path.starts_with('/')
            && self.https_path.len() <= 128
            && self
                .https_path
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'#' | b'"' | b'<' | b'>' | b'\\'));
        if !path_ok {
            return Err(invalid(
                format!("{at}.https_path"),
                "must start with '/' and be at most 128 printable ASCII characters \
                 without spaces, '#', '\"', '<', '>' or '\\'",
            ));
        }
        for (name, v) in [("username", &self.username), ("password", &self.password)] {
            if let Some(v) = v
                && (v.is_empty() || v.len() > 64 || v.chars().any(char::is_control))
            {
                return Err(invalid(
                    format!("{at}.{name}"),
                    "must be 1 to 64 printable characters",
                ));
            }
        }
        let topic_ok = !self.topic_prefix.is_empty()
            && self.topic_prefix.len() <= 64
            && !self
                .topic_prefix
                .chars()
                .any(|c| matches!(c, '#' | '+' | '\0') || c.is_control());
        if !topic_ok {
            return Err(invalid(
                format!("{at}.topic_prefix"),
                "must be 1 to 64 characters without '#', '+' or control characters",
            ));
        }
        range(
            format!("{at}.transmit_s"),
            self.transmit_s,
            10.0,
            86_400.0,
            "s",
        )?;
        range(
            format!("{at}.session_max_s"),
            self.session_max_s,
            10.0,
            600.0,
            "s",
        )?;
        range(
            format!("{at}.store_records"),
            f64::from(self.store_records),
            16.0,
            1_000_000.0,
            "records",
        )?;
        range(
            format!("{at}.signal_dbm"),
            self.signal_dbm,
            -120.0,
            -40.0,
            "dBm",
        )?;
        let apn_ok = !self.apn.is_empty()
            && self.apn.len() <= 63
            && self
                .apn
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !apn_ok {
            return Err(invalid(
                format!("{at}.apn"),
                "must be 1 to 63 characters from a-z, A-Z, 0-9, '.' and '-'",
            ));
        }
        for (name, path) in [("usb_pty", &self.usb_pty), ("ble_socket", &self.ble_socket)] {
            if let Some(p) = path
                && (p.is_empty() || p.len() > 100 || p.chars().any(char::is_control))
            {
                return Err(invalid(
                    format!("{at}.{name}"),
                    "must be a path of 1 to 100 characters",
                ));
            }
        }
        if self.input.len() > 32 {
            return Err(invalid(format!("{at}.input"), "at most 32 inputs"));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut addresses = std::collections::BTreeSet::new();
        let mut units = std::collections::BTreeSet::new();
        let mut rs232 = 0;
        for (i, inp) in self.input.iter().enumerate() {
            let f = |name: &str| format!("{at}.input[{i}].{name}");
            check_name(&f("name"), &inp.name)?;
            if !names.insert(inp.name.as_str()) {
                return Err(invalid(
                    f("name"),
                    format!("input {:?} is defined twice", inp.name),
                ));
            }
            range(f("sample_s"), inp.sample_s, 1.0, 86_400.0, "s")?;
            let contact = inp.quantity == Quantity::Contact;
            if (inp.kind == InputKind::Digital) != contact {
                return Err(invalid(
                    f("quantity"),
                    "digital inputs measure \"contact\", and only digital inputs do",
                ));
            }
            let (lrv, urv) = default_range(inp.quantity);
            let (lrv, urv) = (inp.lrv.unwrap_or(lrv), inp.urv.unwrap_or(urv));
            for (n, v) in [("lrv", lrv), ("urv", urv)] {
                range(f(n), v, -1e9, 1e9, "")?;
            }
            if lrv >= urv {
                return Err(invalid(
                    f("urv"),
                    format!("must be above lrv ({lrv}), got {urv}"),
                ));
            }
            match (inp.kind, inp.pulse_weight) {
                (InputKind::Pulse, Some(w)) => range(f("pulse_weight"), w, 1e-6, 1e6, "")?,
                (InputKind::Pulse, None) => {
                    return Err(invalid(
                        f("pulse_weight"),
                        "a pulse input needs pulse_weight (units per pulse)",
                    ));
                }
                (_, Some(_)) => {
                    return Err(invalid(
                        f("pulse_weight"),
                        "only pulse inputs take pulse_weight",
                    ));
                }
                _ => {}
            }
            match (inp.kind, inp.address) {
                (InputKind::Sdi12, a) => {
                    let a = a.unwrap_or('0');
                    if !a.is_ascii_alphanumeric() {
                        return Err(invalid(
                            f("address"),
                            format!("{a:?} is not an SDI-12 address; use 0-9, a-z or A-Z"),
                        ));
                    }
                    if !addresses.insert(a) {
                        return Err(invalid(
                            f("address"),
                            format!("SDI-12 address {a:?} is used twice on the line"),
                        ));
                    }
                }
                (_, Some(_)) => {
                    return Err(invalid(f("address"), "only sdi12 inputs take an address"));
                }
                _ => {}
            }
            match (inp.kind, inp.unit) {
                (InputKind::Rs485, u) => {
                    let u = u.unwrap_or(1);
                    if !(1..=247).contains(&u) {
                        return Err(invalid(
                            f("unit"),
                            format!("{u} is not a Modbus unit id; use 1 to 247"),
                        ));
                    }
                    if !units.insert(u) {
                        return Err(invalid(
                            f("unit"),
                            format!("Modbus unit {u} is used twice on the RS-485 line"),
                        ));
                    }
                }
                (_, Some(_)) => {
                    return Err(invalid(f("unit"), "only rs485 inputs take a unit"));
                }
                _ => {}
            }
            if inp.kind == InputKind::Rs232 {
                rs232 += 1;
                if rs232 > 1 {
                    return Err(invalid(
                        f("kind"),
                        "the logger has one RS-232 port: at most one rs232 input",
                    ));
                }
            }
            if let Some(t) = inp.threshold {
                range(f("threshold"), t, -1e9, 1e9, "")?;
            }
        }
        self.validate_outputs(at)
    }

    fn validate_outputs(&self, at: &str) -> Result<(), SiteError> {
        if self.output.len() > MAX_OUTPUTS {
            return Err(invalid(
                format!("{at}.output"),
                format!("the logger has {MAX_OUTPUTS} digital outputs at most"),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, out) in self.output.iter().enumerate() {
            let f = |name: &str| format!("{at}.output[{i}].{name}");
            check_name(&f("name"), &out.name)?;
            if out.name.contains('_') {
                return Err(invalid(
                    f("name"),
                    "use letters, digits and '-' (the USB console has no '_')",
                ));
            }
            if !names.insert(out.name.to_ascii_lowercase()) {
                return Err(invalid(
                    f("name"),
                    format!("output {:?} is defined twice", out.name),
                ));
            }
            match out.mode {
                OutputMode::Manual => {
                    if out.input.is_some() || out.above.is_some() || out.below.is_some() {
                        return Err(invalid(
                            f("mode"),
                            "only alarm outputs take input, above and below",
                        ));
                    }
                }
                OutputMode::Alarm => {
                    let Some(name) = &out.input else {
                        return Err(invalid(f("input"), "an alarm output needs an input"));
                    };
                    let Some(inp) = self.input.iter().find(|i| &i.name == name) else {
                        return Err(invalid(
                            f("input"),
                            format!(
                                "no input {name:?}; the logger has: {}",
                                self.input
                                    .iter()
                                    .map(|i| i.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                    };
                    let Some(above) = out.above.or(inp.threshold) else {
                        return Err(invalid(
                            f("above"),
                            format!("input {name:?} has no threshold: give the output `above`"),
                        ));
                    };
                    range(f("above"), above, -1e9, 1e9, "")?;
                    let below = out.below.unwrap_or(above);
                    range(f("below"), below, -1e9, 1e9, "")?;
                    if below > above {
                        return Err(invalid(
                            f("below"),
                            format!("must not be above `above` ({above}), got {below}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        DataLoggerConfig::default().validate("d").unwrap();
    }

    #[test]
    fn outputs_are_checked() {
        let alarm = |input: &str, above: Option<f64>, below: Option<f64>| OutputConfig {
            name: "alarm".into(),
            mode: OutputMode::Alarm,
            input: Some(input.into()),
            above,
            below,
        };
        let with = |o: OutputConfig| {
            let mut c = DataLoggerConfig::default();
            c.output.push(o);
            c.validate("d").map_err(|e| e.to_string())
        };
        with(alarm("level", Some(4.0), Some(3.5))).unwrap();
        let e = with(alarm("level", None, None)).unwrap_err();
        assert!(
            e.contains("d.output[2].above") && e.contains("no threshold"),
            "{e}"
        );
        let e = with(alarm("tank", Some(1.0), None)).unwrap_err();
        assert!(
            e.contains("d.output[2].input") && e.contains("level, pressure"),
            "{e}"
        );
        let e = with(alarm("level", Some(1.0), Some(2.0))).unwrap_err();
        assert!(e.contains("d.output[2].below"), "{e}");
        let e = with(OutputConfig {
            name: "do1".into(),
            ..default_outputs()[0].clone()
        })
        .unwrap_err();
        assert!(e.contains("defined twice"), "{e}");
        let e = with(OutputConfig {
            name: "a_b".into(),
            ..default_outputs()[0].clone()
        })
        .unwrap_err();
        assert!(e.contains("'-'"), "{e}");
        let c = DataLoggerConfig {
            output: (1..=5)
                .map(|i| OutputConfig {
                    name: format!("DO{i}"),
                    ..default_outputs()[0].clone()
                })
                .collect(),
            ..Default::default()
        };
        let e = c.validate("d").unwrap_err().to_string();
        assert!(e.contains("at most"), "{e}");
        // The default outputs are left out of a saved site file.
        let text = toml::to_string(&DataLoggerConfig::default()).unwrap();
        assert!(!text.contains("output"), "{text}");
    }

    #[test]
    fn errors_name_the_field() {
        let mut c = DataLoggerConfig::default();
        c.input[1].sample_s = 0.0;
        let e = c.validate("device[3].datalogger").unwrap_err().to_string();
        assert!(e.contains("device[3].datalogger.input[1].sample_s"), "{e}");
        let mut c = DataLoggerConfig {
            store_records: 3,
            ..Default::default()
        };
        let e = c.validate("d").unwrap_err().to_string();
        assert!(e.contains("d.store_records") && e.contains("16"), "{e}");
        c.store_records = 100;
        c.broker = Some("nohost".into());
        assert!(
            c.validate("d")
                .unwrap_err()
                .to_string()
                .contains("d.broker")
        );
        c.broker = None;
        c.https_path = "/up load".into();
        let e = c.validate("d").unwrap_err().to_string();
        assert!(e.contains("d.https_path"), "{e}");
        c.https_path = "/telemetry".into();
        c.input[2].pulse_weight = None;
        let e = c.validate("d").unwrap_err().to_string();
        assert!(e.contains("input[2].pulse_weight"), "{e}");
        let mut c = DataLoggerConfig::default();
        c.input[0].unit = Some(3);
        let e = c.validate("d").unwrap_err().to_string();
        assert!(
            e.contains("input[0].unit") && e.contains("only rs485"),
            "{e}"
        );
        c.input[0].kind = InputKind::Rs485;
        c.input[1].kind = InputKind::Rs485;
        c.input[1].unit = Some(3);
        let e = c.validate("d").unwrap_err().to_string();
        assert!(e.contains("input[1].unit") && e.contains("twice"), "{e}");
        c.input[1].unit = Some(248);
        let e = c.validate("d").unwrap_err().to_string();
        assert!(e.contains("1 to 247"), "{e}");
        c.input[1].unit = None;
        c.validate("d").unwrap();
        c.input[0].kind = InputKind::Rs232;
        c.input[0].unit = None;
        c.input[1].kind = InputKind::Rs232;
        let e = c.validate("d").unwrap_err().to_string();
        assert!(
            e.contains("input[1].kind") && e.contains("one RS-232"),
            "{e}"
        );
        let mut c = DataLoggerConfig::default();
        c.input[4].address = Some('!');
        let e = c.validate("d").unwrap_err().to_string();
        assert!(e.contains("input[4].address"), "{e}");
        let c = DataLoggerConfig {
            signal_dbm: -10.0,
            ..Default::default()
        };
        assert!(
            c.validate("d")
                .unwrap_err()
                .to_string()
                .contains("signal_dbm")
        );
    }
}
