//! Physical, non-network ports of a device, played through the control API:
//! a laptop on the USB console, the installer's mobile app on the BLE link.
//!
//! Contract (docs/control-api.md "Local ports"):
//! - [`LocalPort`] says what the person at the device does; the device model
//!   answers with a [`Transcript`]: every message sent, in order, with the
//!   answer it got (`None` when the device said nothing) and whether the
//!   device closed the link after it. The device's own rules decide every
//!   answer: the command drives the same code as a terminal on the
//!   pseudo-terminal or a client on the BLE link socket would.
//! - A device without the port, or a device that is off, refuses the command
//!   with a message naming what it has.
//! - Nothing here touches the network: these ports are outside the site's
//!   Ethernet segments (a lab shows them as the physical attack surface).

use serde::{Deserialize, Serialize};

/// What is done at a local port (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalPort {
    /// Lines typed on the USB console, one after the other (without line
    /// ends).
    Usb { lines: Vec<String> },
    /// The mobile app on the BLE link does `action`.
    Ble { action: BleAction },
}

/// What the app (or someone pretending to be it) does on the BLE link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BleAction {
    /// Pairs with the device's key and asks for its status.
    Status,
    /// Records a genuine status exchange, then replays its request on the
    /// same connection and, from the start (hello included), on a new one.
    Replay,
    /// Asks for the status without pairing first.
    Unauthenticated,
    /// Tries to pair with a key that is not the device's.
    WrongKey,
}

impl BleAction {
    /// The accepted action names, for error messages.
    pub const NAMES: &'static str = "status, replay, unauthenticated, wrong_key";
}

/// What happened at a local port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    pub device: String,
    /// `usb` or `ble`.
    pub port: String,
    pub exchanges: Vec<Exchange>,
}

/// One message sent to a local port and what came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// What was sent (a console line, or a description of a BLE frame such
    /// as `hello` or `status request (replayed)`).
    pub sent: String,
    /// The device's answer: console text, or the decrypted BLE answer
    /// (`hello-ack` for a handshake). `None`: no answer.
    pub answer: Option<String>,
    /// The device closed the link after this message (a BLE slam).
    pub closed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ble_actions_read_from_the_api_json_and_others_are_named() {
        let a: BleAction = serde_json::from_str(r#""wrong_key""#).unwrap();
        assert_eq!(a, BleAction::WrongKey);
        let e = serde_json::from_str::<BleAction>(r#""sniff""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `sniff`"), "{e}");
        for name in BleAction::NAMES.split(", ") {
            serde_json::from_str::<BleAction>(&format!("\"{name}\"")).unwrap();
        }
    }
}
