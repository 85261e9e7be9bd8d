//! `[device.charging_station]` and `[device.evce]`: configuration of the
//! charging stations and of the EV Charging Expert's local OCPP controller
//! (seed 003; reference devices.md §3; docs/ev-charging.md).
//!
//! Contract: configuration only (DESIGN.md principle 6). Every field has a
//! default, so a `ChargingStation` or `EVChargingExpert` without its table
//! gets the documented defaults; `validate` range-checks every field and
//! names it in the error (`device[5].charging_station.max_current_a`).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{SiteError, invalid};

/// Default port of the EVCE's plain OCPP-J server (security profiles 0/1).
pub const OCPP_WS_PORT: u16 = 8887;
/// Default port of the EVCE's OCPP-J server over TLS (profiles 2/3).
pub const OCPP_WSS_PORT: u16 = 8443;

/// `[device.charging_station]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChargingStationConfig {
    /// The charge-box identity (OCPP `ChargePointId`); default: the device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub box_id: Option<String>,
    /// Device id of the EVCE the station connects to; default: the site's
    /// first `EVChargingExpert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// Central system URL (`ws://` or `wss://`, the box id is appended)
    /// instead of an EVCE of the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// OCPP security profile 0-3 (0: none, 1: Basic auth on ws, 2: Basic
    /// auth on TLS, 3: TLS client certificate).
    #[serde(default = "default_profile")]
    pub security_profile: u8,
    /// The AuthorizationKey (Basic auth password, profiles 1-2); default:
    /// derived from the site seed and the box id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_key: Option<String>,
    /// Number of connectors (1-4).
    #[serde(default = "one")]
    pub connectors: u8,
    /// Current the station can deliver per phase, A (6-80).
    #[serde(default = "default_max_current")]
    pub max_current_a: f64,
    /// 1 or 3 phases.
    #[serde(default = "three")]
    pub phases: u8,
    /// Phase voltage, V (100-260).
    #[serde(default = "default_voltage")]
    pub voltage_v: f64,
}

impl Default for ChargingStationConfig {
    fn default() -> Self {
        Self {
            box_id: None,
            controller: None,
            url: None,
            security_profile: default_profile(),
            authorization_key: None,
            connectors: 1,
            max_current_a: default_max_current(),
            phases: 3,
            voltage_v: default_voltage(),
        }
    }
}

fn default_profile() -> u8 {
    2
}
fn one() -> u8 {
    1
}
fn three() -> u8 {
    3
}
fn default_max_current() -> f64 {
    32.0
}
fn default_voltage() -> f64 {
    230.0
}

/// Who handles a station's badges and transactions (devices.md §3).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SupervisionMode {
    /// The EVCE itself: no upstream.
    #[default]
    Local,
    /// One CPO supervision for the whole installation.
    Unique,
    /// Stations in groups, each group with its supervision (or local).
    Multiple,
}

/// `[device.evce]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct EvceConfig {
    #[serde(default)]
    pub supervision_mode: SupervisionMode,
    /// `[[device.evce.supervision]]`: the CPO supervisions (CSMS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supervision: Vec<SupervisionConfig>,
    /// `[[device.evce.station]]`: stations enrolled besides the site's
    /// `ChargingStation` devices that name this EVCE.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub station: Vec<EnrolledStation>,
    /// Badges (idTags) the EVCE accepts itself (the local list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_list: Vec<String>,
    /// Port of the ws:// server (default 8887).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocpp_port: Option<u16>,
    /// Port of the wss:// server (default 8443).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocpp_tls_port: Option<u16>,
    /// Device id of the site meter the stations' supply goes through
    /// (default: the site's meter with profile `ev_charging`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_meter: Option<String>,
    /// Load management: the site meter's total active power must stay
    /// under this, kW (1-10000); none: no load management.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_limit_kw: Option<f64>,
    /// Load management period (meter poll and profile update), virtual
    /// seconds (1-3600; default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_period_s: Option<u32>,
}

/// `[[device.evce.supervision]]`: one CSMS.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SupervisionConfig {
    pub name: String,
    /// `ws://host:port/path` or `wss://...`; the station's id is appended.
    pub url: String,
    /// PEM file of the CA that signed the CSMS's certificate (wss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// WebSocket ping interval, s (1-60).
    #[serde(default = "default_ping")]
    pub ping_interval_s: u32,
    /// Time a request waits for its answer before the link is lost, s (1-60).
    #[serde(default = "default_timeout")]
    pub message_timeout_s: u32,
}

fn default_ping() -> u32 {
    30
}
fn default_timeout() -> u32 {
    30
}

/// `[[device.evce.station]]`: an enrolled station.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnrolledStation {
    pub box_id: String,
    /// Address it must connect from; none: any address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// Its AuthorizationKey (Basic auth password, to the EVCE and upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_key: Option<String>,
    /// Supervision name of its group in `multiple` mode, or `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

fn check_box_id(field: &str, id: &str) -> Result<(), SiteError> {
    if id.is_empty()
        || id.len() > 48
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(invalid(
            field,
            format!("{id:?} is not a charge-box id; use 1-48 of a-z, A-Z, 0-9, '-', '_', '.'"),
        ));
    }
    Ok(())
}

fn check_url(field: &str, url: &str) -> Result<(), SiteError> {
    if !(url.starts_with("ws://") || url.starts_with("wss://")) || url.len() < 7 {
        return Err(invalid(
            field,
            format!("{url:?} is not an OCPP-J URL; write ws://HOST:PORT/PATH or wss://..."),
        ));
    }
    Ok(())
}

impl ChargingStationConfig {
    pub fn validate(&self, at: &str) -> Result<(), SiteError> {
        if let Some(b) = &self.box_id {
            check_box_id(&format!("{at}.box_id"), b)?;
        }
        if let Some(u) = &self.url {
            check_url(&format!("{at}.url"), u)?;
        }
        if self.security_profile > 3 {
            return Err(invalid(
                format!("{at}.security_profile"),
                format!(
                    "{} is not a security profile; allowed 0 to 3",
                    self.security_profile
                ),
            ));
        }
        if let Some(k) = &self.authorization_key
            && (k.len() < 8 || k.len() > 40 || !k.is_ascii())
        {
            return Err(invalid(
                format!("{at}.authorization_key"),
                "an AuthorizationKey is 8 to 40 ASCII characters",
            ));
        }
        if !(1..=4).contains(&self.connectors) {
            return Err(invalid(
                format!("{at}.connectors"),
                format!("{} is out of range; allowed 1 to 4", self.connectors),
            ));
        }
        if !(6.0..=80.0).contains(&self.max_current_a) {
            return Err(invalid(
                format!("{at}.max_current_a"),
                format!("{} is out of range; allowed 6 to 80 A", self.max_current_a),
            ));
        }
        if self.phases != 1 && self.phases != 3 {
            return Err(invalid(
                format!("{at}.phases"),
                format!("{} is not allowed; 1 or 3", self.phases),
            ));
        }
        if !(100.0..=260.0).contains(&self.voltage_v) {
            return Err(invalid(
                format!("{at}.voltage_v"),
                format!("{} is out of range; allowed 100 to 260 V", self.voltage_v),
            ));
        }
        Ok(())
    }
}

impl EvceConfig {
    pub fn validate(&self, at: &str) -> Result<(), SiteError> {
        for (i, s) in self.supervision.iter().enumerate() {
            let f = format!("{at}.supervision[{i}]");
            if s.name.is_empty() || s.name == "local" {
                return Err(invalid(
                    format!("{f}.name"),
                    "a supervision needs a name other than \"local\"",
                ));
            }
            check_url(&format!("{f}.url"), &s.url)?;
            for (name, v) in [
                ("ping_interval_s", s.ping_interval_s),
                ("message_timeout_s", s.message_timeout_s),
            ] {
                if !(1..=60).contains(&v) {
                    return Err(invalid(
                        format!("{f}.{name}"),
                        format!("{v} is out of range; allowed 1 to 60 s"),
                    ));
                }
            }
        }
        match self.supervision_mode {
            SupervisionMode::Local => {}
            SupervisionMode::Unique if self.supervision.len() != 1 => {
                return Err(invalid(
                    format!("{at}.supervision"),
                    format!(
                        "mode \"unique\" takes exactly one supervision, not {}",
                        self.supervision.len()
                    ),
                ));
            }
            SupervisionMode::Unique | SupervisionMode::Multiple => {}
        }
        for (i, s) in self.station.iter().enumerate() {
            let f = format!("{at}.station[{i}]");
            check_box_id(&format!("{f}.box_id"), &s.box_id)?;
            if let Some(g) = &s.group
                && g != "local"
                && !self.supervision.iter().any(|x| &x.name == g)
            {
                return Err(invalid(
                    format!("{f}.group"),
                    format!("no supervision is named {g:?}; name one, or \"local\""),
                ));
            }
        }
        if let Some(l) = self.site_limit_kw
            && !(1.0..=10_000.0).contains(&l)
        {
            return Err(invalid(
                format!("{at}.site_limit_kw"),
                format!("{l} is out of range; allowed 1 to 10000 kW"),
            ));
        }
        if let Some(p) = self.load_period_s
            && !(1..=3600).contains(&p)
        {
            return Err(invalid(
                format!("{at}.load_period_s"),
                format!("{p} is out of range; allowed 1 to 3600 s"),
            ));
        }
        for (i, b) in self.local_list.iter().enumerate() {
            if b.is_empty() || b.len() > 20 {
                return Err(invalid(
                    format!("{at}.local_list[{i}]"),
                    "an idTag is 1 to 20 characters (OCPP 1.6 IdToken)",
                ));
            }
        }
        Ok(())
    }
}

/// The AuthorizationKey of a station whose site file names none: derived
/// from the site seed and the box id, so the station and its EVCE agree
/// without it being written anywhere ([NF]; docs/ev-charging.md).
pub fn default_authorization_key(site_seed: u64, box_id: &str) -> String {
    let a = super::device_seed(site_seed, &format!("ocpp-key-a:{box_id}"));
    let b = super::device_seed(site_seed, &format!("ocpp-key-b:{box_id}"));
    format!("{a:016x}{b:08x}")[..24].to_string()
}
