//! The site file: which devices exist, their addresses, segments and field
//! devices (TOML, documented in docs/site-file.md).
//!
//! Contract:
//! - [`Site::parse`] accepts only known fields (`deny_unknown_fields`) and
//!   validates the whole file; every error names the field (as a path like
//!   `device[2].ip`) and says what is allowed.
//! - [`Site::default_site`] is the embedded default site (DESIGN.md "Default
//!   site"); [`DEFAULT_SITE_TOML`] is its text.
//! - The types here are configuration only (DESIGN.md principle 6): models
//!   build their runtime state from them.

mod datalogger;
mod ev;
mod install_code;
mod matrix;
mod ps_datalog;
mod ps_sftp;

pub use datalogger::{
    CellTechnology, DataLoggerConfig, InputConfig, InputKind, MAX_OUTPUTS, OutputConfig,
    OutputMode, Quantity, UplinkProtocol, default_inputs, default_outputs, default_range,
};
pub use ev::{
    ChargingStationConfig, EnrolledStation, EvceConfig, OCPP_WS_PORT, OCPP_WSS_PORT,
    SupervisionConfig, SupervisionMode, default_authorization_key,
};
pub use install_code::{INSTALL_CODE_HEX_LEN, InstallCode, crc16_x25};
pub use ps_datalog::{
    DatalogConfig, LOGGING_PERIODS_MIN, MEASUREMENT_CODES, PublicationConfig, PublicationFormat,
    PublicationMethod, parse_https_url, parse_pin,
};
pub use ps_sftp::{AlarmRule, EmailConfig, SftpConfig, valid_address, valid_fingerprint};

pub use matrix::{
    Capabilities, Commodity, DigitalInputConfig, FirmwareEdition, InputMode, PANEL_SERVERS,
    Polarity, check_device_code, current_edition_from, parse_version,
};

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Text of the embedded default site.
pub const DEFAULT_SITE_TOML: &str = include_str!("default.toml");

/// Errors of loading a site file.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("cannot read site file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("site file is not valid: {0}")]
    Syntax(String),
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> SiteError {
    SiteError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// A whole site.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub site: SiteInfo,
    pub network: NetworkConfig,
    #[serde(default, rename = "segment")]
    pub segments: Vec<SegmentConfig>,
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceConfig>,
}

/// `[site]`: name, seed and time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SiteInfo {
    pub name: String,
    /// Seed of every random choice (noise, serial numbers, TCP sequence numbers).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Site time at start (RFC 3339, a TOML date-time or a string);
    /// default: the host's time at start.
    #[serde(default, deserialize_with = "site_start")]
    pub start: Option<DateTime<Utc>>,
    /// How long a powered-off device's RTC keeps time on its backup.
    #[serde(default = "default_retention_days")]
    pub rtc_retention_days: f64,
}

/// `start` written as a TOML date-time (`start = 2026-01-01T00:00:00Z`) or
/// as a string (`start = "2026-01-01T00:00:00Z"`).
fn site_start<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Toml(toml::value::Datetime),
        Text(String),
    }
    let text = match Written::deserialize(d)? {
        Written::Toml(t) => t.to_string(),
        Written::Text(s) => s,
    };
    DateTime::parse_from_rfc3339(&text)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not an RFC 3339 time with its offset ({e}); write it like 2026-01-01T08:00:00Z"
            ))
        })
}

fn default_seed() -> u64 {
    1
}

fn default_retention_days() -> f64 {
    90.0
}

/// `[network]`: the lab subnet and the host side's address on it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub subnet: Subnet,
    pub host_address: Ipv4Addr,
    /// TAP mode: how the host side reaches the devices (docs/lab.md): on
    /// their L2 segments (`direct`), through the emulated router
    /// (`router`), or chosen by size (`auto`, the default).
    #[serde(default, skip_serializing_if = "Routing::is_auto")]
    pub routing: Routing,
    /// The router's address on the host side (default: the last usable
    /// address of `subnet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_address: Option<Ipv4Addr>,
}

/// `network.routing`: how the TAP side reaches the devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// `router` when more than [`ROUTER_ABOVE`] devices sit on segments
    /// bridged to the TAP, `direct` otherwise.
    #[default]
    Auto,
    /// The TAP is one more port of every bridged switch (one host
    /// neighbour entry per device).
    Direct,
    /// An emulated router between the TAP and the bridged segments (one
    /// host neighbour entry for the router).
    Router,
}

/// Above this many devices on TAP-bridged segments, `routing = "auto"`
/// puts the router in (the host's neighbour table starts evicting at 512
/// entries by default and stops at 1,024).
pub const ROUTER_ABOVE: usize = 256;

impl Routing {
    pub fn is_auto(&self) -> bool {
        *self == Routing::Auto
    }
}

impl std::fmt::Display for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Direct => "direct",
            Self::Router => "router",
        })
    }
}

impl std::str::FromStr for Routing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "direct" => Ok(Self::Direct),
            "router" => Ok(Self::Router),
            _ => Err(format!(
                "{s:?} is not a routing mode; use auto, direct or router"
            )),
        }
    }
}

impl Subnet {
    /// The last address of the subnet that is neither network nor
    /// broadcast address (the default router and gateway address).
    pub fn last_usable(&self) -> Ipv4Addr {
        let host_bits = !self.mask();
        Ipv4Addr::from((u32::from(self.network) & self.mask()) | (host_bits & !1))
    }
}

/// An IPv4 subnet written `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = self.mask();
        u32::from(ip) & mask == u32::from(self.network) & mask
    }

    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }
}

impl TryFrom<String> for Subnet {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let err = || format!("{s:?} is not a subnet; write it like \"10.77.0.0/24\"");
        let (ip, len) = s.split_once('/').ok_or_else(err)?;
        let network: Ipv4Addr = ip.parse().map_err(|_| err())?;
        let prefix: u8 = len.parse().map_err(|_| err())?;
        if prefix > 32 {
            return Err(err());
        }
        Ok(Self { network, prefix })
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `[[segment]]`: an Ethernet segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SegmentConfig {
    pub name: String,
    pub subnet: Subnet,
    /// `tap`: bridged to the host side; `internal`: devices only.
    pub bridge: Bridge,
    /// The emulated router's address on this segment, the devices' default
    /// gateway when the router is in (default: the last usable address of
    /// `subnet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
}

impl SegmentConfig {
    /// The router's address on this segment.
    pub fn gateway_address(&self) -> Ipv4Addr {
        self.gateway.unwrap_or_else(|| self.subnet.last_usable())
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Bridge {
    Tap,
    Internal,
}

/// Every device model fieldtwin knows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Model {
    PAS400,
    PAS600,
    PAS600L,
    PAS600T,
    PAS600P,
    PAS600LWD,
    PAS600PWD,
    PAS800,
    PAS800L,
    PAS800P,
    DataLogger,
    EVChargingExpert,
    ChargingStation,
    PM5560,
    #[serde(rename = "iEM3155")]
    IEM3155,
    /// The attacker/engineering node scenarios act from (serves nothing).
    Workstation,
    /// An emulated OCPP 1.6J central system (CSMS) for an EVCE's supervision.
    CSMS,
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Model::PAS400 => "PAS400",
            Model::PAS600 => "PAS600",
            Model::PAS600L => "PAS600L",
            Model::PAS600T => "PAS600T",
            Model::PAS600P => "PAS600P",
            Model::PAS600LWD => "PAS600LWD",
            Model::PAS600PWD => "PAS600PWD",
            Model::PAS800 => "PAS800",
            Model::PAS800L => "PAS800L",
            Model::PAS800P => "PAS800P",
            Model::DataLogger => "DataLogger",
            Model::EVChargingExpert => "EVChargingExpert",
            Model::ChargingStation => "ChargingStation",
            Model::PM5560 => "PM5560",
            Model::IEM3155 => "iEM3155",
            Model::Workstation => "Workstation",
            Model::CSMS => "CSMS",
        }
    }

    pub fn is_panel_server(self) -> bool {
        self.name().starts_with("PAS")
    }

    /// Panel Servers with two Ethernet ports (Universal and Advanced).
    pub fn has_two_ethernet_ports(self) -> bool {
        self.capabilities().is_some_and(|c| c.ethernet_ports >= 2)
    }
}

/// `[[device]]`: one networked device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub id: String,
    pub model: Model,
    /// Static address on `segment`.
    pub ip: Ipv4Addr,
    pub segment: String,
    /// Take the address by DHCPv4 instead (TAP mode).
    #[serde(default)]
    pub dhcp: bool,
    /// Serial number; default: derived from the seed and the id.
    #[serde(default)]
    pub serial: Option<String>,
    /// Firmware version at first boot; default: the model's current version.
    #[serde(default)]
    pub firmware: Option<String>,
    #[serde(default)]
    pub rtc: RtcConfig,
    /// Whether the device is powered at start.
    #[serde(default = "yes")]
    pub powered: bool,
    /// Load profile of a metering device (see docs/site-file.md).
    #[serde(default)]
    pub profile: Option<String>,
    /// Panel Server settings; only for PAS models.
    #[serde(default)]
    pub panel_server: Option<PanelServerConfig>,
    /// Data Logger settings (sensors, uplink, modem); only for `DataLogger`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datalogger: Option<DataLoggerConfig>,
    /// Charging station settings (OCPP, connectors); only for `ChargingStation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charging_station: Option<ChargingStationConfig>,
    /// EV Charging Expert settings (supervision, enrolled stations); only
    /// for `EVChargingExpert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evce: Option<EvceConfig>,
}

fn yes() -> bool {
    true
}

/// RTC offset and drift of a device.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RtcConfig {
    /// Offset from site time at first boot, in seconds.
    #[serde(default)]
    pub offset_s: f64,
    /// Crystal error in parts per million (positive: runs fast).
    #[serde(default)]
    pub drift_ppm: f64,
}

/// `[device.panel_server]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct PanelServerConfig {
    #[serde(default)]
    pub topology: Topology,
    /// ETH2 address in separated topology.
    #[serde(default)]
    pub eth2_ip: Option<Ipv4Addr>,
    /// ETH2 segment in separated topology.
    #[serde(default)]
    pub eth2_segment: Option<String>,
    #[serde(default)]
    pub serial_line: SerialLineConfig,
    /// Also expose the Modbus-SL line on a pseudo-terminal, linked at this
    /// path, for an external RTU master (`mbpoll -m rtu PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_pty: Option<String>,
    /// Modbus-SL devices on the RS-485 port.
    #[serde(default)]
    pub serial: Vec<FieldDeviceConfig>,
    /// Modbus TCP devices reached through the gateway.
    #[serde(default)]
    pub modbus_tcp: Vec<TcpDownstreamConfig>,
    /// IEEE 802.15.4 wireless devices.
    #[serde(default)]
    pub wireless: Vec<FieldDeviceConfig>,
    /// PBKDF2-HMAC-SHA256 iterations for stored passwords (default 100000).
    #[serde(default)]
    pub pbkdf2_iterations: Option<u32>,
    /// Also offer TLS 1.3 on HTTPS (default: TLS 1.2 only, as DOCA0211 states).
    #[serde(default)]
    pub tls13: bool,
    /// RSTP active in factory settings (two-port models, firmware with RSTP).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rstp: bool,
    /// The device code of the QR label (the Wi-Fi access point's default
    /// password); default: derived from the seed and the serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_code: Option<String>,
    /// What is wired to the digital inputs DI1/DI2 (L models).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub digital_input: Vec<DigitalInputConfig>,
    /// Data logging of the field devices (none unless present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datalog: Option<DatalogConfig>,
    /// Publication of the logged data (none unless present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication: Option<PublicationConfig>,
    /// Alarm notification by email (PAS800 models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailConfig>,
    /// Threshold alarms on measurements of the field devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarm: Vec<AlarmRule>,
    /// NTP server (an IPv4 address) in the commissioned settings; default:
    /// none, date and time set manually (the factory setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntp_server: Option<Ipv4Addr>,
    /// Position in metres of the Panel Server's radio (default: the k-th
    /// Panel Server of the site at x = 100·k m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<crate::radio::Position>,
    /// IEEE 802.15.4 channel, 11-26 (default: 15 for the first Panel
    /// Server, then 5 channels further each, modulo 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<u8>,
    /// Address of the Wi-Fi access point's side (the interface `wifi` a
    /// station reaches after associating); none: the access point has no
    /// interface on the site's network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wifi_ap_ip: Option<Ipv4Addr>,
    /// Segment of the access point's side; default: the device's segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wifi_ap_segment: Option<String>,
}

impl PanelServerConfig {
    /// The access point's side: address and segment, if configured
    /// (`device_segment` is the device's ETH1 segment).
    pub fn wifi_ap(&self, device_segment: &str) -> Option<(Ipv4Addr, String)> {
        let ip = self.wifi_ap_ip?;
        Some((
            ip,
            self.wifi_ap_segment
                .clone()
                .unwrap_or_else(|| device_segment.to_string()),
        ))
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    #[default]
    Switched,
    Separated,
}

/// RS-485 line settings.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SerialLineConfig {
    pub baud: u32,
    pub parity: Parity,
    pub stop_bits: u8,
}

impl Default for SerialLineConfig {
    fn default() -> Self {
        Self {
            baud: 19200,
            parity: Parity::Even,
            stop_bits: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    None,
    Even,
    Odd,
}

/// A field device behind a Panel Server (serial or wireless).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FieldDeviceConfig {
    pub id: String,
    /// Commercial reference, e.g. `A9MEM1520`, `iEM3155`, `TH110`.
    pub model: String,
    /// Modbus unit id; wireless default: first free from 100.
    #[serde(default)]
    pub unit: Option<u8>,
    /// Wireless RF-ID (hex, `0x` prefix allowed).
    #[serde(default)]
    pub rf_id: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default = "yes")]
    pub powered: bool,
    /// Install code of a wireless device (36 hex characters: 128-bit key +
    /// CRC-16, as on its label); default: derived from the seed and the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_code: Option<String>,
    /// Position in metres of a wireless device (default: on a circle of
    /// 3 m around its Panel Server; docs/radio.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<crate::radio::Position>,
    /// Seconds between two reports of a wireless device, 5-60 (default:
    /// PowerTag 5, sensors 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_period_s: Option<f64>,
}

impl FieldDeviceConfig {
    /// The install code of this wireless device: the site file's, or the
    /// one derived from the site seed and the device id.
    pub fn install_code(&self, site_seed: u64) -> InstallCode {
        self.install_code
            .as_deref()
            .and_then(|c| InstallCode::parse(c).ok())
            .unwrap_or_else(|| InstallCode::derived(site_seed, &self.id))
    }
}

/// A Modbus TCP device that a Panel Server reaches on its OT side.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpDownstreamConfig {
    /// Id of a `[[device]]` of the site.
    pub device: String,
    /// Virtual server id given at commissioning (1-247).
    pub unit: u8,
}

impl Site {
    /// The embedded default site.
    pub fn default_site() -> Self {
        Self::parse(DEFAULT_SITE_TOML).expect("the embedded default site is valid")
    }

    /// Reads and validates a site file.
    pub fn load(path: &Path) -> Result<Self, SiteError> {
        let text = std::fs::read_to_string(path).map_err(|source| SiteError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates site-file text.
    pub fn parse(text: &str) -> Result<Self, SiteError> {
        let site: Site = toml::from_str(text).map_err(|e| SiteError::Syntax(e.to_string()))?;
        site.validate()?;
        Ok(site)
    }

    /// The site as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn device(&self, id: &str) -> Option<&DeviceConfig> {
        self.devices.iter().find(|d| d.id == id)
    }

    pub fn segment(&self, name: &str) -> Option<&SegmentConfig> {
        self.segments.iter().find(|s| s.name == name)
    }

    /// Checks everything serde cannot: names, addresses, references, ranges.
    pub fn validate(&self) -> Result<(), SiteError> {
        check_name("site.name", &self.site.name)?;
        check_range(
            "site.rtc_retention_days",
            self.site.rtc_retention_days,
            0.0..=MAX_RTC_RETENTION_DAYS,
            "days",
        )?;
        if let Some(start) = self.site.start
            && !(site_time_range()).contains(&start)
        {
            return Err(invalid(
                "site.start",
                format!(
                    "{} is outside the devices' calendar; use a time from {} to {}",
                    start.to_rfc3339(),
                    site_time_range().start().to_rfc3339(),
                    site_time_range().end().to_rfc3339()
                ),
            ));
        }
        if !self.network.subnet.contains(self.network.host_address) {
            return Err(invalid(
                "network.host_address",
                format!(
                    "{} is outside network.subnet {}",
                    self.network.host_address, self.network.subnet
                ),
            ));
        }
        if self.network.router_address == Some(self.network.host_address) {
            return Err(invalid(
                "network.router_address",
                "is the host side's own address; give the router another one",
            ));
        }
        let mut segments = BTreeSet::new();
        for (i, s) in self.segments.iter().enumerate() {
            check_name(&format!("segment[{i}].name"), &s.name)?;
            if let Some(gw) = s.gateway {
                let last = u32::from(gw) & !s.subnet.mask();
                if !s.subnet.contains(gw) || last == 0 || last == !s.subnet.mask() {
                    return Err(invalid(
                        format!("segment[{i}].gateway"),
                        format!(
                            "{gw} is not a host address of the segment's subnet {}",
                            s.subnet
                        ),
                    ));
                }
            }
            if !segments.insert(s.name.as_str()) {
                return Err(invalid(
                    format!("segment[{i}].name"),
                    format!("segment {:?} is defined twice", s.name),
                ));
            }
        }
        let allowed_segments = segments.iter().copied().collect::<Vec<_>>().join(", ");
        let mut ids = BTreeSet::new();
        let mut ips: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
        ips.insert(self.network.host_address, "the host side".into());
        for (i, d) in self.devices.iter().enumerate() {
            let at = format!("device[{i}]");
            check_name(&format!("{at}.id"), &d.id)?;
            if !ids.insert(d.id.as_str()) {
                return Err(invalid(
                    format!("{at}.id"),
                    format!("device id {:?} is used twice; ids must be unique", d.id),
                ));
            }
            self.check_address(&format!("{at}.ip"), d.ip, &d.segment, &allowed_segments)?;
            if let Some(other) = ips.insert(d.ip, d.id.clone()) {
                return Err(invalid(
                    format!("{at}.ip"),
                    format!("{} is already used by {other}", d.ip),
                ));
            }
            check_range(
                &format!("{at}.rtc.drift_ppm"),
                d.rtc.drift_ppm,
                -MAX_DRIFT_PPM..=MAX_DRIFT_PPM,
                "ppm",
            )?;
            check_range(
                &format!("{at}.rtc.offset_s"),
                d.rtc.offset_s,
                -MAX_RTC_OFFSET_S..=MAX_RTC_OFFSET_S,
                "seconds (50 years)",
            )?;
            check_profile(&format!("{at}.profile"), d.profile.as_deref())?;
            if let Some(ps) = &d.panel_server {
                if !d.model.is_panel_server() {
                    return Err(invalid(
                        format!("{at}.panel_server"),
                        format!(
                            "only Panel Server models (PAS...) take this table, not {}",
                            d.model.name()
                        ),
                    ));
                }
                self.check_model_matrix(&at, d, ps)?;
                self.check_panel_server(&at, d, ps, &allowed_segments, &mut ips)?;
            }
            if let Some(dl) = &d.datalogger {
                if d.model != Model::DataLogger {
                    return Err(invalid(
                        format!("{at}.datalogger"),
                        format!(
                            "only DataLogger devices take this table, not {}",
                            d.model.name()
                        ),
                    ));
                }
                dl.validate(&format!("{at}.datalogger"))?;
            }
            if let Some(cs) = &d.charging_station {
                if d.model != Model::ChargingStation {
                    return Err(invalid(
                        format!("{at}.charging_station"),
                        format!(
                            "only ChargingStation devices take this table, not {}",
                            d.model.name()
                        ),
                    ));
                }
                cs.validate(&format!("{at}.charging_station"))?;
                if let Some(c) = &cs.controller
                    && !self
                        .devices
                        .iter()
                        .any(|x| &x.id == c && x.model == Model::EVChargingExpert)
                {
                    return Err(invalid(
                        format!("{at}.charging_station.controller"),
                        format!("no EVChargingExpert has id {c:?}"),
                    ));
                }
            }
            if let Some(ev) = &d.evce {
                if d.model != Model::EVChargingExpert {
                    return Err(invalid(
                        format!("{at}.evce"),
                        format!(
                            "only EVChargingExpert devices take this table, not {}",
                            d.model.name()
                        ),
                    ));
                }
                ev.validate(&format!("{at}.evce"))?;
            }
        }
        // Cross-device references are checked once all ids are known.
        for (i, d) in self.devices.iter().enumerate() {
            for (j, t) in d
                .panel_server
                .iter()
                .flat_map(|p| p.modbus_tcp.iter())
                .enumerate()
            {
                if !ids.contains(t.device.as_str()) {
                    return Err(invalid(
                        format!("device[{i}].panel_server.modbus_tcp[{j}].device"),
                        format!("no device has id {:?}", t.device),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_address(
        &self,
        field: &str,
        ip: Ipv4Addr,
        segment: &str,
        allowed: &str,
    ) -> Result<(), SiteError> {
        let seg = self.segment(segment).ok_or_else(|| {
            invalid(
                field
                    .replace(".ip", ".segment")
                    .replace("eth2_ip", "eth2_segment")
                    .replace("wifi_ap_ip", "wifi_ap_segment"),
                format!("no segment named {segment:?}; defined segments: {allowed}"),
            )
        })?;
        if !seg.subnet.contains(ip) {
            return Err(invalid(
                field,
                format!(
                    "{ip} is outside segment {}'s subnet {}",
                    seg.name, seg.subnet
                ),
            ));
        }
        let last = ip.octets()[3];
        if last == 0 || last == 255 {
            return Err(invalid(
                field,
                format!("{ip} is a network or broadcast address; use .1 to .254"),
            ));
        }
        Ok(())
    }

    fn check_panel_server(
        &self,
        at: &str,
        d: &DeviceConfig,
        ps: &PanelServerConfig,
        allowed: &str,
        ips: &mut BTreeMap<Ipv4Addr, String>,
    ) -> Result<(), SiteError> {
        let at = format!("{at}.panel_server");
        match (ps.topology, ps.eth2_ip, ps.eth2_segment.as_deref()) {
            (Topology::Separated, Some(ip), Some(seg)) => {
                if !d.model.has_two_ethernet_ports() {
                    return Err(invalid(
                        format!("{at}.topology"),
                        format!(
                            "{} has one Ethernet port; only \"switched\" is allowed",
                            d.model.name()
                        ),
                    ));
                }
                if seg == d.segment {
                    return Err(invalid(
                        format!("{at}.eth2_segment"),
                        "in separated topology ETH2 must be on another segment than ETH1",
                    ));
                }
                self.check_address(&format!("{at}.eth2_ip"), ip, seg, allowed)?;
                if let Some(other) = ips.insert(ip, d.id.clone()) {
                    return Err(invalid(
                        format!("{at}.eth2_ip"),
                        format!("{ip} is already used by {other}"),
                    ));
                }
            }
            (Topology::Separated, _, _) => {
                return Err(invalid(
                    format!("{at}.eth2_ip"),
                    "separated topology needs eth2_ip and eth2_segment",
                ));
            }
            (Topology::Switched, None, None) => {}
            (Topology::Switched, _, _) => {
                return Err(invalid(
                    format!("{at}.eth2_ip"),
                    "eth2_ip and eth2_segment are only for topology = \"separated\"",
                ));
            }
        }
        if ps.wifi_ap_segment.is_some() && ps.wifi_ap_ip.is_none() {
            return Err(invalid(
                format!("{at}.wifi_ap_segment"),
                "give the access point's address too (wifi_ap_ip)",
            ));
        }
        if let Some((ip, seg)) = ps.wifi_ap(&d.segment) {
            self.check_address(&format!("{at}.wifi_ap_ip"), ip, &seg, allowed)?;
            if let Some(other) = ips.insert(ip, d.id.clone()) {
                return Err(invalid(
                    format!("{at}.wifi_ap_ip"),
                    format!("{ip} is already used by {other}"),
                ));
            }
        }
        const BAUDS: [u32; 4] = [9600, 19200, 38400, 115_200];
        if !BAUDS.contains(&ps.serial_line.baud) {
            return Err(invalid(
                format!("{at}.serial_line.baud"),
                format!(
                    "{} is not supported; use one of 9600, 19200, 38400, 115200",
                    ps.serial_line.baud
                ),
            ));
        }
        if !(1..=2).contains(&ps.serial_line.stop_bits) {
            return Err(invalid(
                format!("{at}.serial_line.stop_bits"),
                "must be 1 or 2",
            ));
        }
        if let Some(n) = ps.pbkdf2_iterations
            && !PBKDF2_ITERATIONS.contains(&n)
        {
            return Err(invalid(
                format!("{at}.pbkdf2_iterations"),
                format!(
                    "{n} is out of range; allowed {} to {} (default 100000)",
                    PBKDF2_ITERATIONS.start(),
                    PBKDF2_ITERATIONS.end()
                ),
            ));
        }
        if let Some(c) = ps.channel
            && !crate::radio::phy::CHANNELS.contains(&c)
        {
            return Err(invalid(
                format!("{at}.channel"),
                format!("{c} is not a 2.4 GHz IEEE 802.15.4 channel; use 11 to 26"),
            ));
        }
        if let Some(p) = ps.position {
            check_position(&format!("{at}.position"), p)?;
        }
        let mut units: BTreeMap<u8, String> = BTreeMap::new();
        let mut field_ids = BTreeSet::new();
        let lists = [("serial", &ps.serial), ("wireless", &ps.wireless)];
        for (kind, list) in lists {
            for (j, f) in list.iter().enumerate() {
                let at = format!("{at}.{kind}[{j}]");
                check_name(&format!("{at}.id"), &f.id)?;
                if !field_ids.insert(f.id.clone()) {
                    return Err(invalid(
                        format!("{at}.id"),
                        format!("{:?} is used twice", f.id),
                    ));
                }
                let known = if kind == "serial" {
                    f.model.starts_with("PM5") || f.model.starts_with("iEM3")
                } else {
                    f.model.starts_with("A9MEM15")
                        || ["TH110", "CL110"].contains(&f.model.as_str())
                        || f.model.starts_with("TRH")
                        || f.model.starts_with("CO2")
                };
                if !known {
                    let allowed = if kind == "serial" {
                        "PM5xxx or iEM3xxx meters"
                    } else {
                        "A9MEM15xx (PowerTag Energy), TH110, CL110, TRH or CO2 sensors"
                    };
                    return Err(invalid(
                        format!("{at}.model"),
                        format!(
                            "{:?} is not emulated on the {kind} side; use {allowed}",
                            f.model
                        ),
                    ));
                }
                check_profile(&format!("{at}.profile"), f.profile.as_deref())?;
                if kind == "serial" && f.unit.is_none() {
                    return Err(invalid(
                        format!("{at}.unit"),
                        "a Modbus-SL device needs its unit id (1-247)",
                    ));
                }
                if kind == "wireless" {
                    match &f.rf_id {
                        None => {
                            return Err(invalid(
                                format!("{at}.rf_id"),
                                "a wireless device needs its RF-ID (hex, e.g. \"0x000000002A3B0001\")",
                            ));
                        }
                        Some(r) => {
                            parse_rf_id(r).ok_or_else(|| {
                                invalid(
                                    format!("{at}.rf_id"),
                                    format!("{r:?} is not an RF-ID; write up to 16 hex digits"),
                                )
                            })?;
                        }
                    }
                }
                if let Some(code) = &f.install_code {
                    if kind == "serial" {
                        return Err(invalid(
                            format!("{at}.install_code"),
                            "only wireless devices have an install code",
                        ));
                    }
                    InstallCode::parse(code).map_err(|e| {
                        invalid(
                            format!("{at}.install_code"),
                            format!("{e} (e.g. \"83FED3407A939723A5C639B26916D505C3B5\")"),
                        )
                    })?;
                }
                if let Some(u) = f.unit {
                    check_unit(&format!("{at}.unit"), u, &f.id, &mut units)?;
                }
                if kind == "serial" && (f.position.is_some() || f.report_period_s.is_some()) {
                    return Err(invalid(
                        format!("{at}.position"),
                        "position and report_period_s are for wireless devices only",
                    ));
                }
                if let Some(p) = f.position {
                    check_position(&format!("{at}.position"), p)?;
                }
                if let Some(s) = f.report_period_s {
                    check_range(&format!("{at}.report_period_s"), s, 5.0..=60.0, "s")?;
                }
            }
        }
        for (j, t) in ps.modbus_tcp.iter().enumerate() {
            check_unit(
                &format!("{at}.modbus_tcp[{j}].unit"),
                t.unit,
                &t.device,
                &mut units,
            )?;
        }
        Ok(())
    }
}

/// Refuses a position that is not a finite point within 10,000 km.
fn check_position(field: &str, p: crate::radio::Position) -> Result<(), SiteError> {
    if p.is_finite() && p.x.abs() < 1e7 && p.y.abs() < 1e7 && p.z.abs() < 1e7 {
        Ok(())
    } else {
        Err(invalid(
            field.to_string(),
            "a position is {x, y, z} in metres, finite and within 10,000 km",
        ))
    }
}

/// Longest RTC backup retention a site may give (ten years).
pub const MAX_RTC_RETENTION_DAYS: f64 = 3650.0;
/// Largest crystal error of an RTC, in ppm either way.
pub const MAX_DRIFT_PPM: f64 = 1000.0;
/// Largest RTC offset from site time at first boot (50 years), in seconds.
pub const MAX_RTC_OFFSET_S: f64 = 50.0 * 365.25 * 86_400.0;
/// PBKDF2 iterations a site may set: at least one, at most ten times the
/// default (a login then takes seconds, not hours).
pub const PBKDF2_ITERATIONS: std::ops::RangeInclusive<u32> = 1..=1_000_000;

/// Site times the devices' calendars hold: the Modbus date/time registers
/// count years from 2000 (docs/site-file.md).
pub fn site_time_range() -> std::ops::RangeInclusive<DateTime<Utc>> {
    let at = |y, m, d, h, mi, s| {
        chrono::NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(h, mi, s))
            .map(|t| t.and_utc())
            .unwrap_or_default()
    };
    at(2000, 1, 1, 0, 0, 0)..=at(2099, 12, 31, 23, 59, 59)
}

/// Refuses a number that is not finite or outside `range`, naming `field`,
/// the allowed range and its `unit`.
pub(crate) fn check_range(
    field: &str,
    value: f64,
    range: std::ops::RangeInclusive<f64>,
    unit: &str,
) -> Result<(), SiteError> {
    if value.is_finite() && range.contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{} is out of range; allowed {} to {} {unit}",
                number(value),
                number(*range.start()),
                number(*range.end())
            ),
        ))
    }
}

/// A number as a user wrote it: `1e300` rather than 301 digits.
pub(crate) fn number(v: f64) -> String {
    if v != 0.0 && v.is_finite() && !(1e-4..1e15).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// Load profiles of metered circuits and rooms (models::field::physics).
pub const PROFILES: [&str; 6] = [
    "office",
    "hvac",
    "lighting",
    "ev_charging",
    "site_main",
    "indoor",
];

fn check_profile(field: &str, profile: Option<&str>) -> Result<(), SiteError> {
    match profile {
        Some(p) if !PROFILES.contains(&p) => Err(invalid(
            field.to_string(),
            format!("unknown profile {p:?}; use one of {}", PROFILES.join(", ")),
        )),
        _ => Ok(()),
    }
}

fn check_unit(
    field: &str,
    unit: u8,
    who: &str,
    units: &mut BTreeMap<u8, String>,
) -> Result<(), SiteError> {
    if !(1..=247).contains(&unit) {
        return Err(invalid(
            field,
            format!(
                "unit id {unit} is out of range; allowed 1-247 (255 is the Panel Server itself)"
            ),
        ));
    }
    if let Some(other) = units.insert(unit, who.to_string()) {
        return Err(invalid(
            field,
            format!("unit id {unit} is already used by {other}"),
        ));
    }
    Ok(())
}

/// Per-device seed: stable for a site seed and a device id (MAC address,
/// TCP sequence numbers, serial number of a device derive from it).
pub fn device_seed(site_seed: u64, id: &str) -> u64 {
    id.bytes().fold(site_seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Parses an RF-ID written in hex with an optional `0x`.
pub fn parse_rf_id(s: &str) -> Option<u64> {
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn check_name(field: &str, name: &str) -> Result<(), SiteError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{name:?} is not allowed; use 1-32 characters from a-z, A-Z, 0-9, '-' and '_'"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_site_is_valid_and_complete() {
        let s = Site::default_site();
        let ps = s.device("ps1").unwrap();
        assert_eq!(ps.model, Model::PAS600L);
        assert_eq!(ps.ip, Ipv4Addr::new(10, 77, 0, 10));
        let cfg = ps.panel_server.as_ref().unwrap();
        assert_eq!(cfg.wireless.len(), 5);
        assert_eq!(cfg.serial.len(), 1);
        assert!(s.device("evce1").is_some());
        assert!(s.device("dl1").is_some());
        // The printed form parses back to the same site.
        assert_eq!(Site::parse(&s.to_toml()).unwrap(), s);
    }

    fn with(text_from: &str, to: &str) -> String {
        assert!(DEFAULT_SITE_TOML.contains(text_from));
        DEFAULT_SITE_TOML.replacen(text_from, to, 1)
    }

    #[test]
    fn field_device_models_and_profiles_are_checked() {
        let err = Site::parse(&with("model = \"A9MEM1540\"", "model = \"A9XYZ\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("wireless[1].model") && err.contains("A9MEM15xx"),
            "{err}"
        );
        let err = Site::parse(&with("profile = \"hvac\"", "profile = \"sauna\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("wireless[1].profile") && err.contains("office"),
            "{err}"
        );
        let err = Site::parse(&with("model = \"iEM3155\"", "model = \"A9MEM1540\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("serial[0].model"), "{err}");
    }

    #[test]
    fn routing_settings_parse_and_bad_ones_are_named() {
        let text = with(
            "host_address = \"10.77.0.1\"",
            "host_address = \"10.77.0.1\"\nrouting = \"router\"\nrouter_address = \"10.77.0.250\"",
        );
        let text = text.replacen(
            "bridge = \"tap\"",
            "bridge = \"tap\"\ngateway = \"10.77.0.249\"",
            1,
        );
        let s = Site::parse(&text).unwrap();
        assert_eq!(s.network.routing, Routing::Router);
        assert_eq!(
            s.network.router_address,
            Some(Ipv4Addr::new(10, 77, 0, 250))
        );
        assert_eq!(
            s.segments[0].gateway_address(),
            Ipv4Addr::new(10, 77, 0, 249)
        );
        assert_eq!(
            Site::parse(&s.to_toml()).unwrap(),
            s,
            "printed form round-trips"
        );
        // Defaults: auto, and the last usable address of the subnet.
        let d = Site::default_site();
        assert_eq!(d.network.routing, Routing::Auto);
        assert_eq!(
            d.segments[0].gateway_address(),
            Ipv4Addr::new(10, 77, 0, 254)
        );
        assert!(!d.to_toml().contains("routing"), "auto is not printed");
        let err = Site::parse(&with(
            "host_address = \"10.77.0.1\"",
            "host_address = \"10.77.0.1\"\nrouting = \"bridge\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("bridge") && err.contains("router"), "{err}");
        let err = Site::parse(&with(
            "host_address = \"10.77.0.1\"",
            "host_address = \"10.77.0.1\"\nrouter_address = \"10.77.0.1\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("network.router_address"), "{err}");
        for bad in ["10.77.5.1", "10.77.0.0", "10.77.0.255"] {
            let err = Site::parse(&with(
                "bridge = \"tap\"",
                &format!("bridge = \"tap\"\ngateway = \"{bad}\""),
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("segment[0].gateway") && err.contains(bad),
                "{err}"
            );
        }
        assert_eq!("router".parse::<Routing>(), Ok(Routing::Router));
        assert!(
            "x".parse::<Routing>()
                .unwrap_err()
                .contains("auto, direct or router")
        );
    }

    #[test]
    fn unknown_field_is_named() {
        let text = with("serial = \"NK231730251\"", "serail = \"x\"");
        let err = Site::parse(&text).unwrap_err().to_string();
        assert!(err.contains("serail"), "{err}");
    }

    #[test]
    fn bad_address_is_named() {
        let err = Site::parse(&with("ip = \"10.77.0.10\"", "ip = \"10.77.0.300\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ip"), "{err}");
        let err = Site::parse(&with("ip = \"10.77.0.10\"", "ip = \"10.78.0.10\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("device[0].ip: 10.78.0.10 is outside"),
            "{err}"
        );
        let err = Site::parse(&with("ip = \"10.77.0.20\"", "ip = \"10.77.0.10\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("already used by ps1"), "{err}");
    }

    #[test]
    fn bad_model_lists_the_allowed_ones() {
        let err = Site::parse(&with("model = \"PAS600L\"", "model = \"PAS999\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("PAS999") && err.contains("PAS800"), "{err}");
    }

    #[test]
    fn unit_ids_are_checked() {
        let err = Site::parse(&with("unit = 10", "unit = 1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("already used by meter-sl"), "{err}");
        let err = Site::parse(&with("unit = 10", "unit = 250"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("1-247"), "{err}");
    }

    #[test]
    fn install_codes_are_checked_and_derived_when_absent() {
        let rf = "rf_id = \"0x000000002A3B0001\"";
        let good = "83FED3407A939723A5C639B26916D505C3B5";
        let site = Site::parse(&with(rf, &format!("{rf}\ninstall_code = \"{good}\""))).unwrap();
        let ps = site.devices[0].panel_server.as_ref().unwrap();
        assert_eq!(ps.wireless[0].install_code(1).text(), good);
        assert_eq!(
            ps.wireless[1].install_code(1),
            InstallCode::derived(1, "pt-hvac")
        );
        let bad = format!("{rf}\ninstall_code = \"83FED3407A939723A5C639B26916D505C3B6\"");
        let err = Site::parse(&with(rf, &bad)).unwrap_err().to_string();
        assert!(
            err.contains("wireless[0].install_code") && err.contains("CRC"),
            "{err}"
        );
    }

    #[test]
    fn references_are_checked() {
        let err = Site::parse(&with("device = \"meter-tcp\"", "device = \"nope\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("modbus_tcp[0].device"), "{err}");
        let err = Site::parse(&with("segment = \"lan\"", "segment = \"wan\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("device[0].segment") && err.contains("lan, ot"),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in ["", "[[[", "site = 3", "\u{0}\u{1}"] {
            assert!(Site::parse(text).is_err());
        }
    }

    #[test]
    fn start_is_a_toml_datetime_or_a_string() {
        for written in [
            "2026-03-01T08:00:00Z",
            "\"2026-03-01T08:00:00Z\"",
            "2026-03-01T09:00:00+01:00",
        ] {
            let s =
                Site::parse(&with("seed = 1", &format!("seed = 1\nstart = {written}"))).unwrap();
            assert_eq!(
                s.site.start.unwrap().to_rfc3339(),
                "2026-03-01T08:00:00+00:00"
            );
        }
        let err = Site::parse(&with("seed = 1", "seed = 1\nstart = 2026-03-01T08:00:00"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("offset"), "{err}");
        let err = Site::parse(&with("seed = 1", "seed = 1\nstart = 1999-12-31T23:59:59Z"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("site.start: 1999-12-31T23:59:59+00:00 is outside"),
            "{err}"
        );
    }

    #[test]
    fn subnets() {
        let s = Subnet::try_from("10.77.0.0/24".to_string()).unwrap();
        assert!(s.contains(Ipv4Addr::new(10, 77, 0, 200)));
        assert!(!s.contains(Ipv4Addr::new(10, 77, 1, 1)));
        assert!(Subnet::try_from("10.77.0.0/33".to_string()).is_err());
        assert!(Subnet::try_from("10.77.0.0".to_string()).is_err());
        assert_eq!(parse_rf_id("0x2A"), Some(42));
        assert_eq!(parse_rf_id("0x"), None);
        assert_eq!(parse_rf_id("12345678901234567"), None);
    }
}
