//! What each Panel Server model has (the interface matrix of the DOCA0211
//! cybersecurity guide, editions EN-08 to EN-12), which firmware edition a
//! version belongs to, the per-model parts of the site file (digital inputs,
//! the device code of the QR label), and the checks that refuse what a model
//! does not have.
//!
//! Contract:
//! - [`Model::capabilities`] is the one table of interfaces per model; the
//!   site check here and the device models read it, nothing else decides
//!   what a model has.
//! - [`FirmwareEdition::of`] maps a firmware version to the guide edition
//!   that describes it; the boundary ([NF], docs/panel-server.md) is
//!   [`CURRENT_EDITION_FROM`].
//! - [`Site::check_model_matrix`] runs for every Panel Server before its
//!   other checks; every error names the field path and says what the model
//!   allows (`device[0].panel_server.serial[0]: PAS400 has no Modbus-SL
//!   port ...`).
//! - [`check_device_code`] applies the Wi-Fi access point password rule
//!   (the device code is the access point's default password).

use serde::{Deserialize, Serialize};

use super::{DeviceConfig, Model, PanelServerConfig, Site, SiteError, Topology, invalid};

/// Interfaces and I/O of one Panel Server model (DOCA0211EN-12 "EcoStruxure
/// Panel Server Interfaces").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// RJ45 Ethernet ports (1 on Entry, 2 on Universal and Advanced).
    pub ethernet_ports: u8,
    /// Downstream Modbus-SL (RS-485) port.
    pub modbus_sl: bool,
    /// Downstream Modbus TCP devices through the gateway.
    pub downstream_modbus_tcp: bool,
    /// Wi-Fi infrastructure (upstream Wi-Fi connectivity); none on Wired
    /// by Design.
    pub wifi: bool,
    /// Wi-Fi access point (with a firmware that has one, see
    /// [`FirmwareEdition::has_access_point`]); none on Wired by Design.
    pub wifi_access_point: bool,
    /// Connector for an external Wi-Fi antenna.
    pub wifi_external_antenna: bool,
    /// IEEE 802.15.4 radio; none on Wired by Design.
    pub ieee802154: bool,
    /// Connector for an external IEEE 802.15.4 antenna (hardware V2.0 of
    /// PAS600/PAS600L, PAS600P, every PAS800; see docs/panel-server.md).
    pub ieee802154_external_antenna: bool,
    /// Local digital inputs (DI1, DI2 on the L models).
    pub digital_inputs: u8,
    /// Alarm notification by email (Advanced).
    pub email: bool,
}

impl Capabilities {
    /// The models that have digital inputs, for error messages.
    pub fn models_with_digital_inputs() -> String {
        names(|c| c.digital_inputs > 0)
    }

    /// The models that have a Wi-Fi access point, for error messages.
    pub fn models_with_access_point() -> String {
        names(|c| c.wifi_access_point)
    }

    /// The models that have a Modbus-SL port, for error messages.
    pub fn models_with_modbus_sl() -> String {
        names(|c| c.modbus_sl)
    }

    /// RSTP needs a ring, hence two ports.
    pub fn rstp(&self) -> bool {
        self.ethernet_ports >= 2
    }

    /// One line a user reads: what the model has.
    pub fn describe(&self) -> String {
        let mut v = vec![if self.ethernet_ports == 1 {
            "one Ethernet port".to_string()
        } else {
            format!("{} Ethernet ports", self.ethernet_ports)
        }];
        if self.modbus_sl {
            v.push("Modbus-SL".into());
        }
        if self.wifi {
            v.push(if self.wifi_access_point {
                "Wi-Fi (infrastructure, access point)".into()
            } else {
                "Wi-Fi".into()
            });
        }
        if self.ieee802154 {
            v.push("IEEE 802.15.4".into());
        }
        if !self.wifi && !self.ieee802154 {
            v.push("no radio".into());
        }
        if self.digital_inputs > 0 {
            v.push(format!("{} digital inputs", self.digital_inputs));
        }
        v.join(", ")
    }
}

/// Every Panel Server model.
pub const PANEL_SERVERS: [Model; 10] = [
    Model::PAS400,
    Model::PAS600,
    Model::PAS600L,
    Model::PAS600T,
    Model::PAS600P,
    Model::PAS600LWD,
    Model::PAS600PWD,
    Model::PAS800,
    Model::PAS800L,
    Model::PAS800P,
];

fn names(f: impl Fn(&Capabilities) -> bool) -> String {
    PANEL_SERVERS
        .iter()
        .filter(|m| m.capabilities().is_some_and(|c| f(&c)))
        .map(|m| m.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Model {
    /// The model's interfaces; `None` for devices that are not Panel Servers.
    pub fn capabilities(self) -> Option<Capabilities> {
        // The hardware V2.0 column where the matrix lists two hardware
        // versions of a model (the one on sale; docs/panel-server.md).
        let universal = Capabilities {
            ethernet_ports: 2,
            modbus_sl: true,
            downstream_modbus_tcp: true,
            wifi: true,
            wifi_access_point: true,
            wifi_external_antenna: true,
            ieee802154: true,
            ieee802154_external_antenna: true,
            digital_inputs: 0,
            email: false,
        };
        let wired = Capabilities {
            wifi: false,
            wifi_access_point: false,
            wifi_external_antenna: false,
            ieee802154: false,
            ieee802154_external_antenna: false,
            ..universal
        };
        let advanced = Capabilities {
            email: true,
            ..universal
        };
        let di = |c: Capabilities| Capabilities {
            digital_inputs: 2,
            ..c
        };
        Some(match self {
            Model::PAS400 => Capabilities {
                ethernet_ports: 1,
                modbus_sl: false,
                downstream_modbus_tcp: false,
                wifi_external_antenna: false,
                ieee802154_external_antenna: false,
                ..universal
            },
            // PAS600T exists in hardware V1.0 only: no 802.15.4 antenna connector.
            Model::PAS600T => Capabilities {
                ieee802154_external_antenna: false,
                ..universal
            },
            Model::PAS600 | Model::PAS600P => universal,
            Model::PAS600L => di(universal),
            Model::PAS600LWD => di(wired),
            Model::PAS600PWD => wired,
            Model::PAS800 | Model::PAS800P => advanced,
            Model::PAS800L => di(advanced),
            _ => return None,
        })
    }
}

/// The guide edition whose behaviour a firmware version has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirmwareEdition {
    /// DOCA0211EN-08 (05/2023): Wi-Fi not active by default, no Wi-Fi
    /// access point, no RSTP.
    En08,
    /// DOCA0211EN-10 and later (validity: firmware 002.002.000 or greater
    /// for EN-12): Wi-Fi and its access point active by default, RSTP
    /// available (not active by default).
    Current,
}

/// First firmware version of the [`FirmwareEdition::Current`] behaviour
/// ([NF]: the guide editions name no version before EN-12; see
/// docs/panel-server.md).
pub const CURRENT_EDITION_FROM: (u16, u16, u16) = (2, 0, 0);

/// [`CURRENT_EDITION_FROM`] written as a version.
pub fn current_edition_from() -> String {
    let (a, b, c) = CURRENT_EDITION_FROM;
    format!("{a:03}.{b:03}.{c:03}")
}

impl FirmwareEdition {
    /// The edition of firmware `version` (`NNN.NNN.NNN`); an unreadable
    /// version is taken as current.
    pub fn of(version: &str) -> Self {
        match parse_version(version) {
            Some(v) if v < CURRENT_EDITION_FROM => FirmwareEdition::En08,
            _ => FirmwareEdition::Current,
        }
    }

    /// Whether the firmware has a Wi-Fi access point.
    pub fn has_access_point(self) -> bool {
        self == FirmwareEdition::Current
    }

    /// Whether Wi-Fi is active in factory settings.
    pub fn wifi_on_by_default(self) -> bool {
        self == FirmwareEdition::Current
    }

    /// Whether the firmware has the RSTP setting.
    pub fn has_rstp(self) -> bool {
        self == FirmwareEdition::Current
    }
}

/// `NNN.NNN.NNN` as numbers.
pub fn parse_version(v: &str) -> Option<(u16, u16, u16)> {
    let mut parts = v.split('.');
    let mut next = || -> Option<u16> {
        let p = parts.next()?;
        if p.len() != 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let v = (next()?, next()?, next()?);
    parts.next().is_none().then_some(v)
}

/// How a digital input counts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum InputMode {
    /// Counts pulses of a meter (water, gas, ...), register value 0.
    #[default]
    Pulse,
    /// Reports an open/closed status (breaker, door, ...), register value 1.
    Status,
}

/// What a pulse input meters (the Modbus file's "commodity" codes).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Commodity {
    Electricity,
    Gas,
    FuelOil,
    Air,
    Steam,
    #[default]
    Water,
    Environment,
    Other,
}

impl Commodity {
    /// The register code (Modbus file, register 1219).
    pub fn code(self) -> u16 {
        self as u16 + 1
    }
}

/// Meaning of the input's electrical level.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Polarity {
    /// Voltage present = active.
    #[default]
    Normal,
    /// Voltage present = inactive.
    Inverted,
}

/// `[[device.panel_server.digital_input]]`: what is wired to DI1 or DI2.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DigitalInputConfig {
    /// 1 (DI1) or 2 (DI2).
    pub input: u8,
    /// Name of the connected device (up to 40 ASCII characters).
    #[serde(default)]
    pub name: String,
    /// Electrical label (up to 5 ASCII characters).
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub mode: InputMode,
    #[serde(default)]
    pub polarity: Polarity,
    /// Pulse mode: what is metered.
    #[serde(default)]
    pub commodity: Commodity,
    /// Pulse mode: quantity per pulse (e.g. litres, Wh).
    #[serde(default = "one")]
    pub pulse_weight: f64,
    /// Pulse mode: metered quantity already on the meter at commissioning.
    #[serde(default)]
    pub offset: i64,
    /// Pulse mode: pulses per hour the connected meter gives on virtual
    /// time (0: only the control API's commands give pulses).
    #[serde(default)]
    pub pulses_per_hour: f64,
    /// The input's electrical level at start (voltage present).
    #[serde(default)]
    pub high: bool,
}

fn one() -> f64 {
    1.0
}

/// Largest quantity per pulse of a digital input.
pub const MAX_PULSE_WEIGHT: f64 = 1e6;

/// Largest meter index at commissioning, either way (15 digits).
pub const MAX_METER_OFFSET: u64 = 999_999_999_999_999;

/// Most pulses per hour a digital input counts ([NF]: 25 Hz).
pub const MAX_PULSES_PER_HOUR: f64 = 90_000.0;

/// Allowed special characters of the DOCA0211 password rules.
const SPECIALS: &str = " !\"#$%&'()*+,-./:;<=>?@[]^_`{|}~";

/// The device code is the Wi-Fi access point's default password, so it
/// follows that password's rule: 8-32 characters, at least one uppercase
/// letter, one lowercase letter and one digit, specials from the guide's set.
pub fn check_device_code(code: &str) -> Result<(), String> {
    let n = code.chars().count();
    let bad = code
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !SPECIALS.contains(*c));
    if !(8..=32).contains(&n) {
        return Err(format!(
            "is {n} characters long; the device code is the Wi-Fi access point password: 8-32 characters"
        ));
    }
    if let Some(c) = bad {
        return Err(format!(
            "{c:?} is not allowed; use ASCII letters, digits, space and {}",
            SPECIALS.trim_start()
        ));
    }
    let has = |f: fn(&char) -> bool| code.chars().any(|c| f(&c));
    if !(has(char::is_ascii_uppercase)
        && has(char::is_ascii_lowercase)
        && has(char::is_ascii_digit))
    {
        return Err(
            "needs at least one uppercase letter, one lowercase letter and one digit (the Wi-Fi access point password rule)"
                .into(),
        );
    }
    Ok(())
}

impl Site {
    /// Refuses what Panel Server model `d.model` does not have (see the
    /// module contract); `at` is `device[i]`.
    pub(super) fn check_model_matrix(
        &self,
        at: &str,
        d: &DeviceConfig,
        ps: &PanelServerConfig,
    ) -> Result<(), SiteError> {
        let Some(caps) = d.model.capabilities() else {
            return Ok(());
        };
        let model = d.model.name();
        let has = caps.describe();
        let at = format!("{at}.panel_server");
        if let Some(v) = &d.firmware
            && parse_version(v).is_none()
        {
            return Err(invalid(
                at.replace(".panel_server", ".firmware"),
                format!("{v:?} is not a firmware version; write it like \"002.002.000\""),
            ));
        }
        if let Some(l) = &ps.datalog {
            let ids: Vec<&str> = ps
                .serial
                .iter()
                .chain(&ps.wireless)
                .map(|f| f.id.as_str())
                .collect();
            l.validate(&format!("{at}.datalog"), &ids)?;
        }
        if let Some(p) = &ps.publication {
            p.validate(&format!("{at}.publication"))?;
            if ps.datalog.is_none() {
                return Err(invalid(
                    format!("{at}.publication"),
                    "publication needs data to publish: add [device.panel_server.datalog] \
                     (period_min, devices, measurements)",
                ));
            }
        }
        if let Some(e) = &ps.email {
            if !caps.email {
                return Err(invalid(
                    format!("{at}.email"),
                    format!(
                        "{model} has no notification of alarms by email; it exists on {}",
                        names(|c| c.email)
                    ),
                ));
            }
            e.validate(&format!("{at}.email"))?;
        }
        for (i, rule) in ps.alarm.iter().enumerate() {
            let ids: Vec<&str> = ps
                .serial
                .iter()
                .chain(&ps.wireless)
                .map(|f| f.id.as_str())
                .collect();
            rule.validate(&format!("{at}.alarm[{i}]"), &ids)?;
        }
        let edition = FirmwareEdition::of(d.firmware.as_deref().unwrap_or("999.999.999"));
        if caps.ethernet_ports < 2 {
            let why = format!("{model} has {has}; only topology = \"switched\" on ETH1");
            if ps.topology == Topology::Separated {
                return Err(invalid(format!("{at}.topology"), why));
            }
            if ps.eth2_ip.is_some() {
                return Err(invalid(format!("{at}.eth2_ip"), why));
            }
            if ps.eth2_segment.is_some() {
                return Err(invalid(format!("{at}.eth2_segment"), why));
            }
        }
        if ps.rstp && !caps.rstp() {
            return Err(invalid(
                format!("{at}.rstp"),
                format!("{model} has {has}; RSTP needs the two Ethernet ports of PAS600/PAS800"),
            ));
        }
        if ps.rstp && !edition.has_rstp() {
            return Err(invalid(
                format!("{at}.rstp"),
                format!(
                    "firmware {} has no RSTP (it came with the DOCA0211EN-10 edition, firmware {} and later)",
                    d.firmware.as_deref().unwrap_or_default(),
                    current_edition_from()
                ),
            ));
        }
        if !caps.modbus_sl {
            let why = format!(
                "{model} has no Modbus-SL port ({has}); serial devices need one of {}",
                Capabilities::models_with_modbus_sl()
            );
            if !ps.serial.is_empty() {
                return Err(invalid(format!("{at}.serial[0]"), why));
            }
            if ps.serial_pty.is_some() {
                return Err(invalid(format!("{at}.serial_pty"), why));
            }
        }
        if !caps.downstream_modbus_tcp && !ps.modbus_tcp.is_empty() {
            return Err(invalid(
                format!("{at}.modbus_tcp[0]"),
                format!(
                    "{model} is not a downstream Modbus TCP gateway ({has}); use PAS600 or PAS800"
                ),
            ));
        }
        if !caps.ieee802154 && !ps.wireless.is_empty() {
            return Err(invalid(
                format!("{at}.wireless[0]"),
                format!("{model} is a Wired by Design model without radio ({has})"),
            ));
        }
        if ps.wifi_client.is_some() && !caps.wifi {
            return Err(invalid(
                format!("{at}.wifi_client"),
                format!("{model} has no Wi-Fi ({has}); Wi-Fi exists on the models with a radio"),
            ));
        }
        if ps.wifi_ap_ip.is_some() && !caps.wifi_access_point {
            return Err(invalid(
                format!("{at}.wifi_ap_ip"),
                format!(
                    "{model} has no Wi-Fi access point ({has}); the access point exists on {}",
                    Capabilities::models_with_access_point()
                ),
            ));
        }
        if ps.wifi_ap_ip.is_some() && !edition.has_access_point() {
            return Err(invalid(
                format!("{at}.wifi_ap_ip"),
                format!(
                    "firmware {} has no Wi-Fi access point (it came with the DOCA0211EN-10 edition, firmware {} and later)",
                    d.firmware.as_deref().unwrap_or_default(),
                    current_edition_from()
                ),
            ));
        }
        if let Some(code) = &ps.device_code {
            check_device_code(code)
                .map_err(|e| invalid(format!("{at}.device_code"), format!("{code:?} {e}")))?;
        }
        self.check_digital_inputs(&at, d.model, caps, &ps.digital_input)
    }

    fn check_digital_inputs(
        &self,
        at: &str,
        model: Model,
        caps: Capabilities,
        inputs: &[DigitalInputConfig],
    ) -> Result<(), SiteError> {
        let mut seen = [false; 2];
        for (j, di) in inputs.iter().enumerate() {
            let at = format!("{at}.digital_input[{j}]");
            if caps.digital_inputs == 0 {
                return Err(invalid(
                    at,
                    format!(
                        "{} has no digital inputs; DI1 and DI2 exist on {}",
                        model.name(),
                        Capabilities::models_with_digital_inputs()
                    ),
                ));
            }
            if !(1..=caps.digital_inputs).contains(&di.input) {
                return Err(invalid(
                    format!("{at}.input"),
                    format!("{} is not an input; use 1 (DI1) or 2 (DI2)", di.input),
                ));
            }
            let slot = &mut seen[usize::from(di.input - 1)];
            if std::mem::replace(slot, true) {
                return Err(invalid(
                    format!("{at}.input"),
                    format!("DI{} is configured twice", di.input),
                ));
            }
            let ascii = |field: &str, v: &str, max: usize| {
                if v.len() > max || !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                    Err(invalid(
                        format!("{at}.{field}"),
                        format!("{v:?}: use up to {max} printable ASCII characters"),
                    ))
                } else {
                    Ok(())
                }
            };
            ascii("name", &di.name, 40)?;
            ascii("label", &di.label, 5)?;
            if !(di.pulse_weight.is_finite()
                && di.pulse_weight > 0.0
                && di.pulse_weight <= MAX_PULSE_WEIGHT)
            {
                return Err(invalid(
                    format!("{at}.pulse_weight"),
                    format!(
                        "{} is out of range; must be a positive number (quantity per pulse) up to {MAX_PULSE_WEIGHT}",
                        super::number(di.pulse_weight)
                    ),
                ));
            }
            if di.offset.unsigned_abs() > MAX_METER_OFFSET {
                return Err(invalid(
                    format!("{at}.offset"),
                    format!(
                        "{} is out of range; allowed -{MAX_METER_OFFSET} to {MAX_METER_OFFSET}",
                        di.offset
                    ),
                ));
            }
            if !(di.pulses_per_hour.is_finite()
                && (0.0..=MAX_PULSES_PER_HOUR).contains(&di.pulses_per_hour))
            {
                return Err(invalid(
                    format!("{at}.pulses_per_hour"),
                    format!("must be between 0 and {MAX_PULSES_PER_HOUR} (25 pulses a second)"),
                ));
            }
            if di.mode == InputMode::Status && di.pulses_per_hour > 0.0 {
                return Err(invalid(
                    format!("{at}.pulses_per_hour"),
                    "only for mode = \"pulse\"; a status input changes with the control API",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::DEFAULT_SITE_TOML;

    /// The default site without ps1's digital inputs.
    fn default_without_inputs() -> String {
        let t = DEFAULT_SITE_TOML;
        let from = t.find("# The L model's digital inputs").unwrap();
        let to = t.find("[[device.panel_server.serial]]").unwrap();
        format!("{}{}", &t[..from], &t[to..])
    }

    /// The default site with ps1 turned into `model`, its table extended by `extra`.
    fn site_with(model: &str, extra: &str) -> Result<Site, SiteError> {
        let text = default_without_inputs()
            .replacen("model = \"PAS600L\"", &format!("model = \"{model}\""), 1)
            .replacen(
                "[device.panel_server]\n",
                &format!("[device.panel_server]\n{extra}"),
                1,
            );
        Site::parse(&text)
    }

    /// A PAS400 site: switched, no serial, no OT-side device.
    fn entry_site(extra: &str) -> String {
        let mut text = default_without_inputs()
            .replacen("model = \"PAS600L\"", "model = \"PAS400\"", 1)
            .replace(
                "topology = \"separated\"\neth2_ip = \"10.77.1.1\"\neth2_segment = \"ot\"\n",
                "",
            );
        for block in [
            "[[device.panel_server.serial]]\nid = \"meter-sl\"\nmodel = \"iEM3155\"\nunit = 1\nprofile = \"office\"\n",
            "[[device.panel_server.modbus_tcp]]\ndevice = \"meter-tcp\"\nunit = 10\n",
        ] {
            assert!(text.contains(block), "{block}");
            text = text.replace(block, "");
        }
        text.replacen(
            "[device.panel_server]\n",
            &format!("[device.panel_server]\n{extra}"),
            1,
        )
    }

    #[test]
    fn the_interface_matrix_of_the_guide() {
        let c = |m: Model| m.capabilities().unwrap();
        assert_eq!(c(Model::PAS400).ethernet_ports, 1);
        assert!(!c(Model::PAS400).modbus_sl && !c(Model::PAS400).downstream_modbus_tcp);
        assert!(c(Model::PAS400).wifi && c(Model::PAS400).ieee802154);
        for m in PANEL_SERVERS {
            let caps = c(m);
            assert_eq!(
                caps.digital_inputs,
                if m.name().contains('L') { 2 } else { 0 },
                "{m:?}"
            );
            assert_eq!(caps.wifi, !m.name().ends_with("WD"), "{m:?}");
            assert_eq!(caps.ieee802154, caps.wifi, "{m:?}");
            assert_eq!(caps.email, m.name().starts_with("PAS800"), "{m:?}");
            if m != Model::PAS400 {
                assert_eq!(caps.ethernet_ports, 2);
                assert!(caps.modbus_sl && caps.downstream_modbus_tcp);
            }
        }
        assert_eq!(
            Capabilities::models_with_digital_inputs(),
            "PAS600L, PAS600LWD, PAS800L"
        );
        assert_eq!(Model::DataLogger.capabilities(), None);
    }

    #[test]
    fn firmware_editions() {
        assert_eq!(FirmwareEdition::of("001.008.007"), FirmwareEdition::En08);
        assert_eq!(FirmwareEdition::of("001.999.999"), FirmwareEdition::En08);
        assert_eq!(FirmwareEdition::of("002.000.000"), FirmwareEdition::Current);
        assert_eq!(FirmwareEdition::of("002.002.000"), FirmwareEdition::Current);
        assert!(!FirmwareEdition::En08.wifi_on_by_default());
        assert!(!FirmwareEdition::En08.has_access_point());
        assert_eq!(parse_version("2.2.0"), None);
        assert_eq!(parse_version("002.002.000.1"), None);
        assert_eq!(parse_version("002.010.003"), Some((2, 10, 3)));
    }

    #[test]
    fn datalog_and_publication_are_checked_naming_the_field() {
        let ok = "datalog = { period_min = 5, devices = [\"pt-hvac\"], measurements = [\"P\", \"e\"] }\npublication = { url = \"https://10.77.0.1:8443/up\", ca_file = \"/x/ca.pem\" }\n";
        let site = site_with("PAS600L", ok).unwrap();
        let ps = site.devices[0].panel_server.as_ref().unwrap();
        assert_eq!(ps.datalog.as_ref().unwrap().period_min, 5);
        let p = ps.publication.as_ref().unwrap();
        assert_eq!((p.period_min, p.field.as_str()), (60, "datafile1"));
        for (extra, field) in [
            ("datalog = { period_min = 7 }\n", "datalog.period_min"),
            ("datalog = { devices = [\"nope\"] }\n", "datalog.devices[0]"),
            (
                "datalog = { measurements = [\"kWh\"] }\n",
                "datalog.measurements[0]",
            ),
            (
                "publication = { url = \"https://10.77.0.1/\", ca_file = \"/x\" }\n",
                "publication",
            ),
            (
                "datalog = {}\npublication = { url = \"ftp://10.77.0.1/\", ca_file = \"/x\" }\n",
                "publication.url",
            ),
            (
                "datalog = {}\npublication = { url = \"https://10.77.0.1/\", ca_file = \"/x\", period_min = 0 }\n",
                "publication.period_min",
            ),
        ] {
            let err = site_with("PAS600L", extra).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("device[0].panel_server.{field}: ")),
                "{extra}: {err}"
            );
        }
    }

    #[test]
    fn entry_model_refuses_serial_eth2_rstp_and_ot_devices() {
        assert!(
            Site::parse(&entry_site("")).is_ok(),
            "{:?}",
            Site::parse(&entry_site(""))
        );
        // The default site as it is, but PAS400: the separated topology goes first.
        let err = site_with("PAS400", "").unwrap_err().to_string();
        assert!(
            err.starts_with("device[0].panel_server.topology: PAS400 has one Ethernet port"),
            "{err}"
        );
        let serial = entry_site("").replacen(
            "[[device.panel_server.wireless]]",
            "[[device.panel_server.serial]]\nid = \"m\"\nmodel = \"iEM3155\"\nunit = 1\n\n[[device.panel_server.wireless]]",
            1,
        );
        let err = Site::parse(&serial).unwrap_err().to_string();
        assert!(
            err.starts_with("device[0].panel_server.serial[0]: PAS400 has no Modbus-SL port")
                && err.contains("PAS600"),
            "{err}"
        );
        for (extra, start) in [
            ("serial_pty = \"/tmp/x\"\n", "serial_pty:"),
            ("rstp = true\n", "rstp: PAS400 has one Ethernet port"),
            ("eth2_ip = \"10.77.1.1\"\n", "eth2_ip: PAS400"),
        ] {
            let err = Site::parse(&entry_site(extra)).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("device[0].panel_server.{start}")),
                "{extra}: {err}"
            );
        }
        let tcp = entry_site("").replacen(
            "[[device.panel_server.wireless]]",
            "[[device.panel_server.modbus_tcp]]\ndevice = \"meter-tcp\"\nunit = 10\n\n[[device.panel_server.wireless]]",
            1,
        );
        let err = Site::parse(&tcp).unwrap_err().to_string();
        assert!(
            err.starts_with("device[0].panel_server.modbus_tcp[0]: PAS400"),
            "{err}"
        );
        // RSTP is fine on two ports.
        assert!(site_with("PAS600", "rstp = true\n").is_ok());
    }

    #[test]
    fn wired_by_design_has_no_radio() {
        let err = site_with("PAS600LWD", "").unwrap_err().to_string();
        assert!(
            err.starts_with("device[0].panel_server.wireless[0]: PAS600LWD is a Wired by Design"),
            "{err}"
        );
        assert!(err.contains("no radio"), "{err}");
    }

    /// Which models have the access point, and the external antennas
    /// (hardware V2.0 column where the matrix has two).
    #[test]
    fn radios_and_antennas_per_model() {
        let c = |m: Model| m.capabilities().unwrap();
        for m in PANEL_SERVERS {
            let caps = c(m);
            let wd = m.name().ends_with("WD");
            assert_eq!(caps.wifi_access_point, !wd, "{m:?}");
            assert_eq!(
                caps.wifi_external_antenna,
                !wd && m != Model::PAS400,
                "{m:?}"
            );
            assert_eq!(
                caps.ieee802154_external_antenna,
                !wd && !matches!(m, Model::PAS400 | Model::PAS600T),
                "{m:?}"
            );
        }
        assert!(c(Model::PAS600PWD).describe().contains("no radio"));
        assert_eq!(
            Capabilities::models_with_access_point(),
            "PAS400, PAS600, PAS600L, PAS600T, PAS600P, PAS800, PAS800L, PAS800P"
        );
    }

    #[test]
    fn the_access_point_side_is_checked_naming_the_field() {
        let site = site_with("PAS600L", "wifi_ap_ip = \"10.77.0.11\"\n").unwrap();
        let ps = site.devices[0].panel_server.as_ref().unwrap();
        assert_eq!(
            ps.wifi_ap("lan"),
            Some(("10.77.0.11".parse().unwrap(), "lan".to_string()))
        );
        let t = default_without_inputs();
        let from = t.find("[[device.panel_server.wireless]]").unwrap();
        let to = t.find("# Modbus TCP meter").unwrap();
        let wd = format!("{}{}", &t[..from], &t[to..])
            .replacen("model = \"PAS600L\"", "model = \"PAS600PWD\"", 1)
            .replacen(
                "[device.panel_server]\n",
                "[device.panel_server]\nwifi_ap_ip = \"10.77.0.11\"\n",
                1,
            );
        let err = Site::parse(&wd).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "device[0].panel_server.wifi_ap_ip: PAS600PWD has no Wi-Fi access point"
            ),
            "{err}"
        );
        for (extra, field) in [
            ("wifi_ap_ip = \"10.77.9.11\"\n", "wifi_ap_ip"),
            ("wifi_ap_ip = \"10.77.0.10\"\n", "wifi_ap_ip"),
            (
                "wifi_ap_ip = \"10.77.0.11\"\nwifi_ap_segment = \"air\"\n",
                "wifi_ap_segment",
            ),
            ("wifi_ap_segment = \"lan\"\n", "wifi_ap_segment"),
        ] {
            let err = site_with("PAS600L", extra).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("device[0].panel_server.{field}:")),
                "{extra}: {err}"
            );
        }
        let old = site_with("PAS600L", "wifi_ap_ip = \"10.77.0.11\"\n").unwrap();
        let mut old = old;
        old.devices[0].firmware = Some("001.008.007".into());
        let text = toml::to_string(&old).unwrap();
        let err = Site::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("wifi_ap_ip") && err.contains("no Wi-Fi access point"),
            "{err}"
        );
    }

    const DI: &str = "[[device.panel_server.digital_input]]\ninput = 1\nname = \"Water\"\nmode = \"pulse\"\npulse_weight = 10.0\npulses_per_hour = 120.0\n\n";

    fn with_di(model: &str, di: &str) -> Result<Site, SiteError> {
        let text = default_without_inputs()
            .replacen("model = \"PAS600L\"", &format!("model = \"{model}\""), 1)
            .replacen(
                "[[device.panel_server.serial]]",
                &format!("{di}[[device.panel_server.serial]]"),
                1,
            );
        Site::parse(&text)
    }

    #[test]
    fn the_default_site_wires_both_inputs_of_its_pas600l() {
        let s = Site::default_site();
        let di = &s.devices[0].panel_server.as_ref().unwrap().digital_input;
        assert_eq!(s.devices[0].model, Model::PAS600L);
        assert_eq!(
            di.iter().map(|d| (d.input, d.mode)).collect::<Vec<_>>(),
            [(1, InputMode::Pulse), (2, InputMode::Status)]
        );
        let err = Site::parse(&DEFAULT_SITE_TOML.replacen("PAS600L", "PAS600", 1))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "device[0].panel_server.digital_input[0]: PAS600 has no digital inputs"
            ),
            "{err}"
        );
    }

    #[test]
    fn digital_inputs_only_on_l_models_and_checked() {
        let s = with_di("PAS600L", DI).unwrap();
        let di = &s.devices[0].panel_server.as_ref().unwrap().digital_input;
        assert_eq!(di.len(), 1);
        assert_eq!(di[0].mode, InputMode::Pulse);
        assert_eq!(Site::parse(&s.to_toml()).unwrap(), s, "round trip");
        assert!(with_di("PAS800L", DI).is_ok());
        let err = with_di("PAS600", DI).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "device[0].panel_server.digital_input[0]: PAS600 has no digital inputs"
            ) && err.contains("PAS600L"),
            "{err}"
        );
        let err = with_di("PAS600L", &DI.replace("input = 1", "input = 3"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("digital_input[0].input: 3 is not an input"),
            "{err}"
        );
        let err = with_di("PAS600L", &format!("{DI}{DI}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("digital_input[1].input: DI1 is configured twice"),
            "{err}"
        );
        let err = with_di("PAS600L", &DI.replace("10.0", "-1.0"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("digital_input[0].pulse_weight"), "{err}");
        let err = with_di("PAS600L", &DI.replace("120.0", "1e9"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("digital_input[0].pulses_per_hour"), "{err}");
        let err = with_di("PAS600L", &DI.replace("\"pulse\"", "\"status\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("only for mode = \"pulse\""), "{err}");
        let err = with_di("PAS600L", &DI.replace("\"Water\"", "\"Wasser\u{e4}\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("digital_input[0].name"), "{err}");
    }

    #[test]
    fn device_code_and_firmware_are_checked() {
        assert!(site_with("PAS600L", "device_code = \"Ab3dEf7h\"\n").is_ok());
        for (code, says) in [
            ("Ab3d", "8-32"),
            ("abcdefg1", "uppercase"),
            ("Abcdéfg1", "not allowed"),
        ] {
            let err = site_with("PAS600L", &format!("device_code = \"{code}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("device[0].panel_server.device_code:") && err.contains(says),
                "{err}"
            );
        }
        let text = DEFAULT_SITE_TOML.replacen(
            "serial = \"NK231730251\"",
            "serial = \"NK231730251\"\nfirmware = \"2.1\"",
            1,
        );
        let err = Site::parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("device[0].firmware: \"2.1\""), "{err}");
        let old = DEFAULT_SITE_TOML.replacen(
            "serial = \"NK231730251\"",
            "serial = \"NK231730251\"\nfirmware = \"001.008.007\"",
            1,
        );
        assert!(Site::parse(&old).is_ok());
        let err = Site::parse(&old.replacen(
            "[device.panel_server]\n",
            "[device.panel_server]\nrstp = true\n",
            1,
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("device[0].panel_server.rstp: firmware 001.008.007 has no RSTP"),
            "{err}"
        );
    }
}
