//! Attacks a `Workstation` device runs (issue 9 "attacks that speak the real
//! protocols over the network"): the request ([`Attack`], tagged by `kind`)
//! and the answer ([`AttackReport`]) as plain data. The behaviour lives in
//! the Workstation model (`models::workstation`); the runtime only hands it
//! an [`AttackEnv`] (where the site's devices are, and the switch fabric for
//! replays).
//!
//! Contract:
//! - Every attack is bounded in wall time (connect and read timeouts, a flood
//!   of at most [`MAX_FLOOD_S`] seconds, a scan of at most 65,535 ports).
//! - `target` is a device id (`ps1`, its first interface), `id:iface`
//!   (`ps1:eth2`), or an IPv4 address. Ports are the ports of the device's
//!   services; in host mode the Workstation connects where the service really
//!   listens (the host-mode port offset, if any, is applied as for every
//!   client) and reports device ports.
//! - Modbus `address` is the register number of the vendor tables (as
//!   `mbpoll -r`): register 61 is protocol address 60.
//! - What the target answered is a successful [`AttackReport`] (a refused
//!   login, a Modbus exception, a closed port); only what prevented the
//!   attack from being run at all (an unknown target, a workstation that is
//!   off, a bad parameter) is an error, whose message says what was wrong.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::net::switch::Network;

/// Longest Modbus flood, in wall-clock seconds.
pub const MAX_FLOOD_S: f64 = 30.0;
/// Most parallel connections of a Modbus flood.
pub const MAX_FLOOD_CONNECTIONS: u32 = 256;

/// Which ports a scan tries: `"1-1024"`, `"22,80,443,5000-5400"`, or a list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Ports {
    Spec(String),
    List(Vec<u32>),
}

impl Ports {
    /// The ports, sorted and without duplicates; the error says what is allowed.
    pub fn expand(&self) -> Result<Vec<u16>, String> {
        let mut out = Vec::new();
        let port = |v: u64| -> Result<u16, String> {
            if (1..=65_535).contains(&v) {
                Ok(v as u16)
            } else {
                Err(format!("port {v} is out of range; ports are 1-65535"))
            }
        };
        match self {
            Ports::List(list) => {
                for p in list {
                    out.push(port(u64::from(*p))?);
                }
            }
            Ports::Spec(s) => {
                let bad = |part: &str| {
                    format!(
                        "{part:?} in ports {s:?} is not a port or a range; write e.g. \"1-1024\" or \"22,443,5000-5400\""
                    )
                };
                for part in s.split(',').map(str::trim) {
                    let (a, b) = match part.split_once('-') {
                        Some((a, b)) => (a.trim(), b.trim()),
                        None => (part, part),
                    };
                    let a: u64 = a.parse().map_err(|_| bad(part))?;
                    let b: u64 = b.parse().map_err(|_| bad(part))?;
                    let (a, b) = (port(a)?, port(b)?);
                    if a > b {
                        return Err(format!(
                            "range {part:?} in ports {s:?} goes backwards; write the low port first"
                        ));
                    }
                    out.extend(a..=b);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        if out.is_empty() {
            return Err("no port to scan; give e.g. \"1-1024\"".into());
        }
        Ok(out)
    }
}

/// Transport protocol of a port scan (TCP only for now).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Tcp,
}

fn default_function() -> u8 {
    3
}

fn default_write_function() -> u8 {
    16
}

fn default_count() -> u32 {
    1
}

/// An attack, run from a Workstation (the body of `POST
/// /api/v1/devices/{workstation}/attack`, tagged by `kind`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Attack {
    /// One login attempt on the HTTPS webpages (`POST /login`).
    HttpsLogin {
        target: String,
        user: String,
        password: String,
    },
    /// Logs in, then uploads a firmware image on the firmware page: the
    /// given bytes (hex) or `random_len` random bytes.
    FirmwareUpload {
        target: String,
        user: String,
        password: String,
        #[serde(default)]
        bytes_hex: Option<String>,
        #[serde(default)]
        random_len: Option<u32>,
    },
    /// One Modbus TCP read (function 3 or 4) on port 502.
    ModbusRead {
        target: String,
        unit: u32,
        #[serde(default = "default_function")]
        function: u8,
        address: u32,
        #[serde(default = "default_count")]
        count: u32,
    },
    /// One Modbus TCP write of registers: function 16 (default) or 6 (one
    /// value).
    ModbusWrite {
        target: String,
        unit: u32,
        #[serde(default = "default_write_function")]
        function: u8,
        address: u32,
        values: Vec<u16>,
    },
    /// Reads as fast as possible on `connections` parallel connections for
    /// `duration_s` wall-clock seconds.
    ModbusFlood {
        target: String,
        unit: u32,
        connections: u32,
        duration_s: f64,
        address: u32,
        #[serde(default = "default_count")]
        count: u32,
    },
    /// A TCP connect scan.
    PortScan {
        target: String,
        ports: Ports,
        #[serde(default)]
        proto: Proto,
    },
    /// Re-sends frames of a segment's capture buffer from the Workstation's
    /// NIC (TAP mode).
    Replay {
        segment: String,
        /// Which frames: `""` (all), or terms joined by `and`: `tcp`, `udp`,
        /// `arp`, `icmp`, `port N`, `src port N`, `dst port N`, `host IP`,
        /// `src IP`, `dst IP`, `ether src MAC`, `ether dst MAC`, `not TERM`.
        #[serde(default)]
        filter: String,
        /// How many frames (the most recent that match), at most 1024.
        count: u32,
    },
    /// Opens a TCP connection and goes silent: no data, no FIN, no RST.
    HalfOpen { target: String, port: u16 },
    /// Connects to an OCPP-J server as charge point `box_id`, with HTTP
    /// Basic auth if `authorization_key` is given; if admitted, sends a
    /// BootNotification. `ws://` on an EV Charging Expert's plain port
    /// (8887 by default), or with `tls` `wss://` (8443 by default; any
    /// server certificate accepted, no client certificate).
    OcppConnect {
        target: String,
        box_id: String,
        #[serde(default)]
        authorization_key: Option<String>,
        #[serde(default)]
        tls: bool,
        /// Default 8887, with `tls` 8443.
        #[serde(default)]
        port: Option<u16>,
    },
    /// Starts (or restarts) a man-in-the-middle relay of OCPP-J on the
    /// Workstation: it listens on 8887 (`ws://`) and 8443 (`wss://`, its own
    /// self-signed certificate) and relays every charge point that connects
    /// to it to the OCPP server of `target` (same port kind), reading
    /// everything and multiplying the energy and power of MeterValues (and
    /// the meterStop of StopTransaction) by `factor` (default 0.5). With
    /// `spoof_source` (a device id) its connections to `target` leave from
    /// that device's address, as an on-path (ARP-spoofing) attacker's do;
    /// without it they leave from the Workstation's own. Runs in the
    /// background until `ocpp_mitm_stop` or the Workstation loses power;
    /// what it saw is in the Workstation's details (`mitm`).
    OcppMitm {
        target: String,
        #[serde(default)]
        spoof_source: Option<String>,
        #[serde(default = "default_factor")]
        factor: f64,
    },
    /// Stops the Workstation's OCPP relay.
    OcppMitmStop {},
}

fn default_factor() -> f64 {
    0.5
}

impl Attack {
    /// The `kind` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Attack::HttpsLogin { .. } => "https_login",
            Attack::FirmwareUpload { .. } => "firmware_upload",
            Attack::ModbusRead { .. } => "modbus_read",
            Attack::ModbusWrite { .. } => "modbus_write",
            Attack::ModbusFlood { .. } => "modbus_flood",
            Attack::PortScan { .. } => "port_scan",
            Attack::Replay { .. } => "replay",
            Attack::HalfOpen { .. } => "half_open",
            Attack::OcppConnect { .. } => "ocpp_connect",
            Attack::OcppMitm { .. } => "ocpp_mitm",
            Attack::OcppMitmStop { .. } => "ocpp_mitm_stop",
        }
    }
}

/// How a login attempt ended, from what the page answered.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LoginOutcome {
    /// Logged in (a session cookie and a redirect).
    Ok,
    /// Refused: wrong user name or password.
    WrongPassword,
    /// Refused: the webpages are locked after too many failures.
    Locked,
    /// Anything else (see `status` and `message`).
    Other,
}

/// What an attack observed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttackResult {
    HttpsLogin {
        /// HTTP status of the answer to `POST /login` (303 on success).
        status: u16,
        outcome: LoginOutcome,
        /// Where a redirect pointed.
        location: Option<String>,
        /// The message the page showed, if any.
        message: Option<String>,
    },
    FirmwareUpload {
        /// HTTP status of the upload (or of the failed login).
        status: u16,
        /// Whether the device accepted and installed the image.
        installed: bool,
        /// `login` if the login was refused, `upload` otherwise.
        stage: String,
        message: Option<String>,
        bytes: usize,
    },
    ModbusRead {
        function: u8,
        values: Option<Vec<u16>>,
        /// The Modbus exception code, if the target answered one.
        exception: Option<u8>,
        exception_name: Option<String>,
    },
    ModbusWrite {
        function: u8,
        ok: bool,
        exception: Option<u8>,
        exception_name: Option<String>,
    },
    ModbusFlood {
        connections: u32,
        /// Connections that could not be opened (refused, timed out).
        connect_failures: u32,
        /// Requests that got an answer (data or exception).
        requests: u64,
        /// Answers that were exceptions.
        exceptions: u64,
        /// Requests lost: timeouts and dropped connections.
        errors: u64,
        duration_s: f64,
        req_per_s: f64,
    },
    PortScan {
        /// Open ports (device ports), ascending.
        open: Vec<u16>,
        /// Host mode: ports that answer on every loopback address (listeners
        /// of the host on 0.0.0.0, not of the device); not in `open`.
        host_listeners: Vec<u16>,
        scanned: usize,
        /// Ports that timed out (no answer at all: filtered or unreachable).
        filtered: usize,
        /// The host-mode port offset applied to ports below 1024 (0 in TAP mode).
        port_offset: u16,
    },
    Replay {
        /// Frames in the segment's capture buffer.
        captured: usize,
        /// Frames that matched the filter.
        matched: usize,
        /// Frames re-sent from the Workstation's NIC.
        sent: usize,
    },
    HalfOpen {
        /// The Workstation's end of the connection.
        local: String,
        /// Half-open connections this Workstation now holds.
        held: usize,
    },
    OcppConnect {
        /// HTTP status of the WebSocket handshake (101: admitted).
        status: u16,
        admitted: bool,
        /// The server's reason when it refused.
        message: Option<String>,
        /// The BootNotification answer's status, if admitted.
        boot_status: Option<String>,
    },
    OcppMitm {
        /// Where charge points must be pointed (`ws://` and `wss://` URLs).
        listening: Vec<String>,
        /// The address its relayed connections leave from.
        upstream_source: String,
    },
    OcppMitmStop {
        /// Messages relayed and MeterValues tampered while it ran.
        relayed: u64,
        tampered: u64,
    },
}

/// The answer to an attack.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttackReport {
    /// The Workstation that ran it.
    pub from: String,
    /// Its address.
    pub source: String,
    /// `ip:port` (or the segment) the attack went to.
    pub target: String,
    /// Wall time the attack took, in milliseconds.
    pub wall_ms: u64,
    #[serde(flatten)]
    pub result: AttackResult,
}

/// A device as an attack target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetInfo {
    pub model: String,
    /// Interface -> address as clients reach it (127.77.S.N in host mode).
    pub addresses: BTreeMap<String, Ipv4Addr>,
}

/// What the runtime tells a Workstation about the site.
#[derive(Clone, Default)]
pub struct AttackEnv {
    /// Every device by id.
    pub devices: BTreeMap<String, TargetInfo>,
    /// Every device's first interface, by id: an on-path attack sends
    /// with a victim's source address through it (see
    /// [`Attack::OcppMitm`]).
    pub stacks: BTreeMap<String, Arc<dyn crate::net::Stack>>,
    /// The switch fabric (TAP mode), for replays.
    pub network: Option<Arc<Network>>,
}

impl std::fmt::Debug for AttackEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttackEnv")
            .field("devices", &self.devices.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl AttackEnv {
    /// Resolves a target: a device id, `id:iface`, or an IPv4 address.
    pub fn resolve(&self, target: &str) -> Result<Ipv4Addr, String> {
        if let Ok(ip) = target.parse::<Ipv4Addr>() {
            return Ok(ip);
        }
        let (id, iface) = match target.split_once(':') {
            Some((id, iface)) => (id, Some(iface)),
            None => (target, None),
        };
        let dev = self.devices.get(id).ok_or_else(|| {
            format!(
                "no device {id:?} to attack; give a device id ({}) or an IPv4 address",
                self.devices.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        match iface {
            Some(i) => dev.addresses.get(i).copied().ok_or_else(|| {
                format!(
                    "device {id} has no interface {i:?}; it has {}",
                    dev.addresses.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            }),
            None => dev
                .addresses
                .get("eth1")
                .or_else(|| dev.addresses.values().next())
                .copied()
                .ok_or_else(|| format!("device {id} has no network interface")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_expand_and_bad_ones_say_why() {
        assert_eq!(
            Ports::Spec("443, 502,5357".into()).expand().unwrap(),
            vec![443, 502, 5357]
        );
        assert_eq!(Ports::Spec("1-1024".into()).expand().unwrap().len(), 1024);
        assert_eq!(
            Ports::List(vec![502, 443, 502]).expand().unwrap(),
            vec![443, 502]
        );
        let e = Ports::Spec("1-70000".into()).expand().unwrap_err();
        assert!(e.contains("70000") && e.contains("1-65535"), "{e}");
        let e = Ports::Spec("http".into()).expand().unwrap_err();
        assert!(e.contains("\"http\""), "{e}");
        let e = Ports::Spec("100-1".into()).expand().unwrap_err();
        assert!(e.contains("backwards"), "{e}");
        assert!(Ports::List(vec![0]).expand().is_err());
        assert!(Ports::List(vec![]).expand().is_err());
    }

    #[test]
    fn attacks_are_tagged_by_kind() {
        let a: Attack = serde_json::from_str(
            r#"{"kind":"modbus_read","target":"ps1","unit":255,"address":61,"count":8}"#,
        )
        .unwrap();
        assert_eq!(
            a,
            Attack::ModbusRead {
                target: "ps1".into(),
                unit: 255,
                function: 3,
                address: 61,
                count: 8
            }
        );
        let a: Attack =
            serde_json::from_str(r#"{"kind":"port_scan","target":"10.77.0.10","ports":[443]}"#)
                .unwrap();
        assert_eq!(a.kind(), "port_scan");
        let e = serde_json::from_str::<Attack>(r#"{"kind":"nuke","target":"ps1"}"#).unwrap_err();
        assert!(e.to_string().contains("nuke"), "{e}");
    }

    #[test]
    fn targets_resolve_by_id_interface_or_address() {
        let mut env = AttackEnv::default();
        env.devices.insert(
            "ps1".into(),
            TargetInfo {
                model: "PAS600L".into(),
                addresses: [
                    ("eth1".to_string(), Ipv4Addr::new(127, 77, 0, 10)),
                    ("eth2".to_string(), Ipv4Addr::new(127, 77, 1, 1)),
                ]
                .into(),
            },
        );
        assert_eq!(env.resolve("ps1").unwrap(), Ipv4Addr::new(127, 77, 0, 10));
        assert_eq!(
            env.resolve("ps1:eth2").unwrap(),
            Ipv4Addr::new(127, 77, 1, 1)
        );
        assert_eq!(
            env.resolve("10.77.0.10").unwrap(),
            Ipv4Addr::new(10, 77, 0, 10)
        );
        let e = env.resolve("ps9").unwrap_err();
        assert!(e.contains("\"ps9\"") && e.contains("ps1"), "{e}");
        let e = env.resolve("ps1:eth7").unwrap_err();
        assert!(e.contains("eth7") && e.contains("eth1, eth2"), "{e}");
    }
}
