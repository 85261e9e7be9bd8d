//! fieldtwin-models: device behaviour and protocols.
//!
//! - [`proto`]: protocol codecs (Modbus MBAP/RTU, ...), total and incremental.
//! - [`security`]: the hardened web surface shared by every model with
//!   web pages (accounts, lockout, sessions, audit, firmware, backup, HTTPS).
//! - [`panel_server`]: EcoStruxure Panel Server PAS400/600/800.
//! - [`datalogger`]: the cellular Data Logger (sensors, NV ring, MQTTS uplink).
//! - [`field`]: meters, PowerTags, environmental sensors and their physics.
//! - [`serial_bus`]: the simulated RS-485 line of a Panel Server's Modbus-SL port.
//! - [`charging_station`]: OCPP 1.6J charging stations and the EVs on them.
//! - [`evce`]: the EV Charging Expert (OCPP local controller).
//! - [`csms`]: an emulated OCPP central system (CSMS) for the EVCE's supervision.
//! - [`passive`]: devices whose behaviour is not emulated yet.
//! - [`workstation`]: the attacker/engineering node scenarios act from.
//!
//! [`build`] turns one `[[device]]` of the site file into a [`Device`].

pub mod charging_station;
pub mod csms;
pub mod datalogger;
pub mod evce;
pub mod field;
pub mod panel_server;
pub mod passive;
pub mod proto;
pub mod security;
pub mod serial_bus;
pub mod workstation;

use std::sync::Arc;

use fieldtwin_emulator::device::Device;
use fieldtwin_emulator::site::{DeviceConfig, Site};

/// Builds the model of site device `dev`.
pub fn build(site: &Site, dev: &DeviceConfig) -> Arc<dyn Device> {
    match dev.model {
        m if m.is_panel_server() => Arc::new(panel_server::PanelServer::new(site, dev)),
        fieldtwin_emulator::site::Model::Workstation => {
            Arc::new(workstation::Workstation::new(dev))
        }
        m if field::Kind::of_model(m.name()) == Some(field::Kind::Meter) => {
            Arc::new(field::tcp_meter::TcpMeter::new(site.site.seed, dev))
        }
        fieldtwin_emulator::site::Model::ChargingStation => {
            Arc::new(charging_station::ChargingStation::new(site, dev))
        }
        fieldtwin_emulator::site::Model::EVChargingExpert => {
            Arc::new(evce::device::Evce::new(site, dev))
        }
        fieldtwin_emulator::site::Model::CSMS => Arc::new(csms::Csms::new(dev)),
        fieldtwin_emulator::site::Model::DataLogger => {
            Arc::new(datalogger::DataLogger::new(site, dev))
        }
        _ => Arc::new(passive::Passive::new(dev)),
    }
}

/// Interface names of a site device: `eth1`, plus `eth2` for a Panel Server
/// in separated topology and `wifi` for the side of its Wi-Fi access point
/// (`wifi_ap_ip`); each is a real interface in host and TAP mode.
pub fn interfaces(dev: &DeviceConfig) -> Vec<(String, std::net::Ipv4Addr, String)> {
    let mut v = vec![("eth1".to_string(), dev.ip, dev.segment.clone())];
    if let Some(ps) = &dev.panel_server
        && let (Some(ip), Some(seg)) = (ps.eth2_ip, &ps.eth2_segment)
    {
        v.push(("eth2".to_string(), ip, seg.clone()));
    }
    if let Some((ip, seg)) = dev
        .panel_server
        .as_ref()
        .and_then(|ps| ps.wifi_ap(&dev.segment))
    {
        v.push(("wifi".to_string(), ip, seg));
    }
    v
}
