//! EcoStruxure Panel Server (PAS400/600/800 and variants): the device model.
//!
//! Contract (DOCA0211 cybersecurity guide; Panel Server Modbus file):
//! - Boot loads the persisted [`Settings`] from NV memory (written on first
//!   boot from the site file) and starts the Modbus TCP server on port 502 of
//!   every interface where the Modbus service is activated. Defaults follow
//!   the guide's "Network Segmentation" table: switched topology -> activated;
//!   separated topology -> ETH1 activated, ETH2 deactivated.
//! - Unit id 255 answers the Panel Server's own registers ([`registers`]),
//!   with the date/time taken from the device's RTC and writable with FC16.
//!   Other unit ids answer 0x0A (gateway path unavailable) until the gateway
//!   routes them.
//! - At most 128 Modbus TCP clients at once.
//! - The security surface (HTTPS webpages and /api on 443, login lockout,
//!   audit log, signed firmware verified at every boot, backup, factory
//!   reset, DPWS) lives in [`node`], [`web`] and [`security`]
//!   (docs/panel-server.md).

pub mod node;
pub mod registers;
pub mod security;
pub mod web;

use std::sync::Arc;

use fieldtwin_emulator::device::{BootError, Credential, Device, DeviceContext, RtcHandle};
use fieldtwin_emulator::site::{DeviceConfig, Model, Site, Topology, parse_rf_id};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::proto::modbus::server::Handler;
use crate::proto::modbus::{Exception, Request, Response, function};
use registers::{Health, Identity, Live, OwnRegisters, WirelessSlot};

/// Unit id of the Panel Server's own registers.
pub const OWN_UNIT: u8 = 255;
/// Modbus TCP port.
pub const MODBUS_PORT: u16 = 502;
/// Most simultaneous Modbus TCP clients (DOCA0172).
pub const MAX_MODBUS_CLIENTS: usize = 128;
/// Firmware version of a new device unless the site file says otherwise.
pub const DEFAULT_FIRMWARE: &str = "002.002.000";
/// First virtual address given to wireless devices.
pub const FIRST_WIRELESS_UNIT: u8 = 100;

/// Which interfaces serve Modbus TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModbusService {
    pub eth1: bool,
    pub eth2: bool,
    pub wifi: bool,
}

/// Settings kept in NV memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub topology: Topology,
    pub modbus: ModbusService,
    pub firmware: String,
    /// DPWS discovery (active by default, DOCA0211).
    #[serde(default = "yes")]
    pub dpws: bool,
    /// DPWS metadata TCP port (5357 by default, configurable).
    #[serde(default = "dpws_port")]
    pub dpws_port: u16,
    /// RSTP (not active by default).
    #[serde(default)]
    pub rstp: bool,
    /// Wi-Fi and its access point.
    #[serde(default)]
    pub wifi: WifiSettings,
    /// IEEE 802.15.4 radio activation (not active by default).
    #[serde(default)]
    pub ieee802154: bool,
    /// NTP server; `None`: date and time set manually.
    #[serde(default)]
    pub ntp_server: Option<String>,
}

/// Wi-Fi settings (the radio itself arrives with the radio issue).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WifiSettings {
    pub enabled: bool,
    pub access_point: bool,
    /// WPA2 passphrase of the access point ([NF]: kept in NV memory as the
    /// WPA2 handshake needs it).
    pub ap_password: Option<String>,
}

impl Default for WifiSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            access_point: true,
            ap_password: None,
        }
    }
}

fn yes() -> bool {
    true
}

fn dpws_port() -> u16 {
    crate::proto::dpws::METADATA_PORT
}

const SETTINGS_KEY: &str = "settings";

/// A Panel Server of the site.
pub struct PanelServer {
    id: String,
    model: Model,
    identity: Identity,
    defaults: Settings,
    wireless: Vec<WirelessSlot>,
    /// Initial web password (printed at start; changed on the Users page).
    default_password: String,
    /// PBKDF2 iterations for stored passwords.
    iterations: u32,
    /// Offer TLS 1.3 as well as 1.2.
    tls13: bool,
}

impl PanelServer {
    pub fn new(site: &Site, dev: &DeviceConfig) -> Self {
        let cfg = dev.panel_server.clone().unwrap_or_default();
        let topology = cfg.topology;
        let defaults = Settings {
            topology,
            modbus: ModbusService {
                eth1: true,
                eth2: topology == Topology::Switched,
                wifi: false,
            },
            firmware: dev
                .firmware
                .clone()
                .unwrap_or_else(|| DEFAULT_FIRMWARE.to_string()),
            dpws: true,
            dpws_port: dpws_port(),
            rstp: false,
            wifi: WifiSettings::default(),
            ieee802154: false,
            ntp_server: None,
        };
        let mut next_unit = FIRST_WIRELESS_UNIT;
        let taken: Vec<u8> = cfg
            .serial
            .iter()
            .chain(cfg.wireless.iter())
            .filter_map(|f| f.unit)
            .chain(cfg.modbus_tcp.iter().map(|t| t.unit))
            .collect();
        let wireless = cfg
            .wireless
            .iter()
            .map(|w| {
                let unit = w.unit.unwrap_or_else(|| {
                    while taken.contains(&next_unit) {
                        next_unit += 1;
                    }
                    next_unit += 1;
                    next_unit - 1
                });
                WirelessSlot {
                    rf_id: w.rf_id.as_deref().and_then(parse_rf_id).unwrap_or(0),
                    unit,
                }
            })
            .collect();
        let serial = serial(site, dev);
        Self {
            id: dev.id.clone(),
            model: dev.model,
            default_password: default_password(site, dev),
            identity: identity(dev.model, serial),
            defaults,
            wireless,
            iterations: cfg
                .pbkdf2_iterations
                .unwrap_or(security::password::DEFAULT_ITERATIONS),
            tls13: cfg.tls13,
        }
    }
}

/// The serial number of the site file, or one derived from seed and id in
/// the format of the Modbus file: plant, year, week, weekday, sequence.
fn serial(site: &Site, dev: &DeviceConfig) -> String {
    if let Some(s) = &dev.serial {
        return s.clone();
    }
    let h = dev
        .id
        .bytes()
        .fold(site.site.seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    format!(
        "NK{:02}{:02}{}{:04}",
        20 + h % 6,
        1 + (h >> 8) % 52,
        1 + (h >> 16) % 7,
        (h >> 24) % 10_000
    )
}

/// The initial web password, derived from seed and id like the device code
/// printed on a real unit's QR label ([NF]); it follows the user rules.
fn default_password(site: &Site, dev: &DeviceConfig) -> String {
    let h = dev.id.bytes().fold(site.site.seed ^ 0x5eed_0fa5, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("Ps-{:010x}", h & 0xff_ffff_ffff)
}

/// Identification of each model ([NF] values documented in docs/panel-server.md).
fn identity(model: Model, serial: String) -> Identity {
    let (family, capability, product_id) = match model {
        Model::PAS400 => ("Panel Server Entry", "Wireless gateway", 0x0190),
        m if m.name().starts_with("PAS800") => (
            "Panel Server Advanced",
            "Modbus gateway, wireless, datalogger",
            0x0320,
        ),
        _ => ("Panel Server Universal", "Modbus gateway, wireless", 0x0258),
    };
    Identity {
        range: "EcoStruxure".into(),
        family: family.into(),
        vendor_url: "www.se.com".into(),
        commercial_reference: model.name().into(),
        hardware_version: "000.000.002".into(),
        serial,
        capability: capability.into(),
        additional_capability: "IEEE 802.15.4, Modbus-SL".into(),
        manufacturer: "Schneider Electric".into(),
        product_id,
        product_model: format!("EcoStruxure {family}"),
        application_name: String::new(),
    }
}

impl Device for PanelServer {
    fn id(&self) -> &str {
        &self.id
    }

    fn model(&self) -> &str {
        self.model.name()
    }

    fn credentials(&self) -> Vec<Credential> {
        vec![
            Credential {
                service: "modbus".into(),
                user: "-".into(),
                password: "- (Modbus TCP has no authentication)".into(),
            },
            Credential {
                service: "https".into(),
                user: node::WEB_USER.into(),
                password: format!(
                    "{} (until changed on the Users page)",
                    self.default_password
                ),
            },
        ]
    }

    fn survives_factory_reset(&self) -> &'static [&'static str] {
        &[node::WIRELESS_OFF_KEY]
    }

    fn boot(self: Arc<Self>, ctx: DeviceContext) -> BoxFuture<'static, Result<(), BootError>> {
        node::run(self, ctx)
    }
}

impl PanelServer {
    /// The Modbus handler of one boot (started by [`node`]).
    fn modbus_handler(&self, ctx: &DeviceContext, settings: &Settings) -> Arc<dyn Handler> {
        Arc::new(Gateway {
            registers: OwnRegisters::new(&self.identity, &self.wireless),
            rtc: ctx.rtc.clone(),
            firmware: settings.firmware.clone(),
            events: ctx.clone(),
        })
    }
}

/// Answers Modbus requests by unit id.
struct Gateway {
    registers: OwnRegisters,
    rtc: RtcHandle,
    firmware: String,
    events: DeviceContext,
}

impl Gateway {
    fn live(&self) -> Live {
        Live {
            rtc: self.rtc.now(),
            health: Health::Nominal,
            firmware: self.firmware.clone(),
        }
    }

    fn own(&self, req: Request) -> Result<Response, Exception> {
        match req {
            Request::ReadHolding { addr, count } => Ok(Response::Registers {
                function: function::READ_HOLDING_REGISTERS,
                values: self.registers.read(addr, count, &self.live())?,
            }),
            Request::ReadScattered { addrs } => Ok(Response::Scattered {
                values: self.registers.read_scattered(&addrs, &self.live())?,
            }),
            Request::WriteMultiple { addr, values } => {
                let t = self.registers.write(addr, &values)?;
                let before = self.rtc.now();
                self.rtc
                    .set(t)
                    .map_err(|_| Exception::ServerDeviceFailure)?;
                self.events.emit(
                    "datetime",
                    format!("date/time set over Modbus from {before} to {t}"),
                );
                Ok(Response::WriteMultiple {
                    addr,
                    count: values.len() as u16,
                })
            }
            // The Modbus file lists only FC3, FC16 and FC100-4 for unit 255.
            Request::ReadInput { .. }
            | Request::WriteSingle { .. }
            | Request::ReadDeviceId { .. } => Err(Exception::IllegalFunction),
        }
    }
}

impl Handler for Gateway {
    fn handle(&self, unit: u8, req: Request) -> BoxFuture<'_, Result<Response, Exception>> {
        let result = if unit == OWN_UNIT {
            self.own(req)
        } else {
            Err(Exception::GatewayPathUnavailable)
        };
        async move { result }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_serials_follow_the_format() {
        let site = Site::default_site();
        let mut dev = site.device("ps1").unwrap().clone();
        dev.serial = None;
        let s = serial(&site, &dev);
        assert_eq!(s.len(), 11, "{s}");
        assert!(s.starts_with("NK"));
        assert!(s[2..].chars().all(|c| c.is_ascii_digit()));
        assert_eq!(s, serial(&site, &dev), "stable for a seed");
    }

    #[test]
    fn wireless_devices_get_first_free_units_from_100() {
        let site = Site::default_site();
        let ps = PanelServer::new(&site, site.device("ps1").unwrap());
        let units: Vec<u8> = ps.wireless.iter().map(|w| w.unit).collect();
        assert_eq!(units, vec![100, 101, 102, 103, 104]);
        assert_eq!(ps.wireless[0].rf_id, 0x2A3B0001);
        assert_eq!(
            ps.defaults.modbus,
            ModbusService {
                eth1: true,
                eth2: false,
                wifi: false
            }
        );
    }
}
