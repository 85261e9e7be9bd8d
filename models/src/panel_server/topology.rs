//! The Modbus topology behind the gateway: which Modbus-SL slaves and which
//! Modbus TCP devices the Panel Server routes to, by unit id (DOCA0172
//! "Modbus addressing"; DOCA0211 "Factory reset": the reset erases it).
//!
//! Contract:
//! - The topology is part of the NV [`super::Settings`]
//!   (`modbus_devices`), so it survives power cycles and is part of a
//!   backup; the gateway routes only the unit ids it lists (and the paired
//!   wireless devices); any other unit id answers 0x0A.
//! - The site file's `serial` and `modbus_tcp` devices are the
//!   commissioning: written at the first boot of a device, like the
//!   wireless pairing. A factory reset erases the topology: afterwards the
//!   list is empty until devices are added again on the Settings page (or
//!   with `PUT /api/settings`). The devices themselves stay wired.
//! - [`check`] refuses a topology the model cannot have (serial devices
//!   without a Modbus-SL port, Modbus TCP devices on a model without
//!   downstream Modbus TCP), unit ids outside 1-247 and a unit id used
//!   twice (also against the paired wireless devices), naming the entry.

use std::net::Ipv4Addr;

use fieldtwin_emulator::site::Model;
use serde::{Deserialize, Serialize};

use super::registers::WirelessSlot;

/// One Modbus device configured behind the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "link", rename_all = "snake_case", deny_unknown_fields)]
pub enum Downstream {
    /// A slave on the RS-485 line, by its slave address.
    Serial { unit: u8 },
    /// A Modbus TCP device, reached at `ip:port`, under virtual unit id `unit`.
    Tcp { unit: u8, ip: Ipv4Addr, port: u16 },
}

impl Downstream {
    pub fn unit(&self) -> u8 {
        match *self {
            Downstream::Serial { unit } | Downstream::Tcp { unit, .. } => unit,
        }
    }

    /// How the Settings page shows the link.
    pub fn describe(&self) -> String {
        match self {
            Downstream::Serial { .. } => "Modbus-SL".into(),
            Downstream::Tcp { ip, port, .. } => format!("Modbus TCP {ip}:{port}"),
        }
    }
}

/// Checks a topology for `model` (see the module contract).
pub fn check(model: Model, devices: &[Downstream], pairing: &[WirelessSlot]) -> Result<(), String> {
    let caps = model.capabilities();
    let mut seen: Vec<u8> = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let at = format!("Modbus device {} (unit {})", i + 1, d.unit());
        match d {
            Downstream::Serial { .. } if !caps.is_some_and(|c| c.modbus_sl) => {
                return Err(format!(
                    "{at}: {} has no Modbus-SL port; serial devices need one of {}",
                    model.name(),
                    fieldtwin_emulator::site::Capabilities::models_with_modbus_sl()
                ));
            }
            Downstream::Tcp { .. } if !caps.is_some_and(|c| c.downstream_modbus_tcp) => {
                return Err(format!(
                    "{at}: {} has no downstream Modbus TCP; Modbus TCP devices need a PAS600 or PAS800",
                    model.name()
                ));
            }
            Downstream::Tcp { port: 0, .. } => {
                return Err(format!("{at}: the TCP port must be 1-65535"));
            }
            Downstream::Tcp { ip, .. } if ip.is_unspecified() || ip.is_broadcast() => {
                return Err(format!("{at}: {ip} is not a device address"));
            }
            _ => {}
        }
        let unit = d.unit();
        if !(1..=247).contains(&unit) {
            return Err(format!(
                "{at}: unit id {unit} is out of range; allowed 1-247 (255 is the Panel Server itself)"
            ));
        }
        if seen.contains(&unit) || pairing.iter().any(|p| p.unit == unit) {
            return Err(format!("{at}: unit id {unit} is already used"));
        }
        seen.push(unit);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_and_the_unit_ids_are_checked() {
        let serial = Downstream::Serial { unit: 1 };
        let tcp = Downstream::Tcp {
            unit: 10,
            ip: Ipv4Addr::new(10, 77, 1, 11),
            port: 502,
        };
        assert!(check(Model::PAS600L, &[serial, tcp], &[]).is_ok());
        let e = check(Model::PAS400, &[serial], &[]).unwrap_err();
        assert!(e.contains("PAS400 has no Modbus-SL port"), "{e}");
        let e = check(Model::PAS400, &[tcp], &[]).unwrap_err();
        assert!(e.contains("no downstream Modbus TCP"), "{e}");
        let e = check(
            Model::PAS600L,
            &[serial, Downstream::Serial { unit: 1 }],
            &[],
        )
        .unwrap_err();
        assert!(e.contains("unit id 1 is already used"), "{e}");
        let slot = WirelessSlot { rf_id: 1, unit: 10 };
        let e = check(Model::PAS600L, &[tcp], &[slot]).unwrap_err();
        assert!(e.contains("unit id 10 is already used"), "{e}");
        let e = check(Model::PAS600L, &[Downstream::Serial { unit: 0 }], &[]).unwrap_err();
        assert!(e.contains("1-247"), "{e}");
        let json = serde_json::to_string(&tcp).unwrap();
        assert_eq!(
            json,
            r#"{"link":"tcp","unit":10,"ip":"10.77.1.11","port":502}"#
        );
        assert_eq!(serde_json::from_str::<Downstream>(&json).unwrap(), tcp);
    }
}
