//! Modbus devices on the Settings page: the topology behind the gateway
//! ([`crate::panel_server::topology`]), added and removed by unit id.
//!
//! Contract: every change goes through
//! [`super::settings::change_settings`] (saved in NV memory, the Modbus
//! service restarted with the new routes, audited) after
//! [`crate::panel_server::topology::check`]; a refusal names the rule.

use std::net::Ipv4Addr;

use super::settings::change_settings;
use super::*;
use crate::panel_server::topology::{self, Downstream};

#[derive(Deserialize)]
pub(super) struct AddModbusForm {
    #[serde(default)]
    csrf: String,
    /// `serial` or `tcp`.
    #[serde(default)]
    link: String,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    ip: String,
    #[serde(default)]
    port: String,
}

fn parse_unit(text: &str) -> Result<u8, String> {
    text.trim()
        .parse::<u8>()
        .ok()
        .filter(|u| (1..=247).contains(u))
        .ok_or_else(|| format!("unit id {:?} is not a number from 1 to 247", text.trim()))
}

impl AddModbusForm {
    fn device(&self) -> Result<Downstream, String> {
        let unit = parse_unit(&self.unit)?;
        match self.link.as_str() {
            "serial" => Ok(Downstream::Serial { unit }),
            "tcp" => {
                let ip: Ipv4Addr = self.ip.trim().parse().map_err(|_| {
                    format!(
                        "{:?} is not an IPv4 address (write it like 10.77.1.11)",
                        self.ip.trim()
                    )
                })?;
                let port = if self.port.trim().is_empty() {
                    crate::panel_server::MODBUS_PORT
                } else {
                    self.port
                        .trim()
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| {
                            format!("port {:?} is not a number from 1 to 65535", self.port)
                        })?
                };
                Ok(Downstream::Tcp { unit, ip, port })
            }
            other => Err(format!(
                "link {other:?} is not one of: serial (Modbus-SL), tcp (Modbus TCP)"
            )),
        }
    }
}

pub(super) async fn add_modbus_device(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<AddModbusForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    let model = node.ps.model;
    change_settings(&node, &a.csrf, "Modbus devices (device added)", |s| {
        let d = f.device()?;
        let mut list = s.modbus_devices().to_vec();
        list.push(d);
        topology::check(model, &list, &s.pairing)?;
        s.modbus_devices = Some(list);
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct RemoveModbusForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    unit: String,
}

pub(super) async fn remove_modbus_device(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<RemoveModbusForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    change_settings(&node, &a.csrf, "Modbus devices (device removed)", |s| {
        let unit = parse_unit(&f.unit)?;
        let mut list = s.modbus_devices().to_vec();
        let before = list.len();
        list.retain(|d| d.unit() != unit);
        if list.len() == before {
            return Err(format!("no Modbus device has unit id {unit}"));
        }
        s.modbus_devices = Some(list);
        Ok(())
    })
    .await
}
