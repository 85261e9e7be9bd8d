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

pub mod registers;
pub mod security;

use std::sync::Arc;

use fieldtwin_emulator::device::{BootError, Credential, Device, DeviceContext, RtcHandle};
use fieldtwin_emulator::site::{DeviceConfig, Model, Site, Topology, parse_rf_id};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::proto::modbus::server::{self, Handler};
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
}

const SETTINGS_KEY: &str = "settings";

/// A Panel Server of the site.
pub struct PanelServer {
    id: String,
    model: Model,
    identity: Identity,
    defaults: Settings,
    wireless: Vec<WirelessSlot>,
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
        Self {
            id: dev.id.clone(),
            model: dev.model,
            identity: identity(dev.model, serial(site, dev)),
            defaults,
            wireless,
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
        vec![Credential {
            service: "modbus".into(),
            user: "-".into(),
            password: "- (Modbus TCP has no authentication)".into(),
        }]
    }

    fn boot(self: Arc<Self>, ctx: DeviceContext) -> BoxFuture<'static, Result<(), BootError>> {
        async move {
            let settings = match ctx.nv.get::<Settings>(SETTINGS_KEY)? {
                Some(s) => s,
                None => {
                    ctx.nv.put(SETTINGS_KEY, &self.defaults)?;
                    self.defaults.clone()
                }
            };
            let handler: Arc<dyn Handler> = Arc::new(Gateway {
                registers: OwnRegisters::new(&self.identity, &self.wireless),
                rtc: ctx.rtc.clone(),
                firmware: settings.firmware.clone(),
                events: ctx.clone(),
            });
            let wanted = [
                ("eth1", settings.modbus.eth1),
                ("eth2", settings.modbus.eth2),
            ];
            for (iface, on) in wanted {
                if on && ctx.interface(iface).is_some() {
                    let listener = ctx.listen_tcp(iface, "modbus", MODBUS_PORT).await?;
                    ctx.spawn(server::serve(
                        ctx.clone(),
                        listener,
                        handler.clone(),
                        MAX_MODBUS_CLIENTS,
                    ));
                }
            }
            Ok(())
        }
        .boxed()
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
