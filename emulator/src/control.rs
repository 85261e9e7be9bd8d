//! Control plane: the one [`Command`] enum that the CLI, the TUI, the REST API
//! and scenarios send, the one [`Event`] enum they all watch, and the REST API
//! (documented in docs/control-api.md).
//!
//! Contract:
//! - [`execute`] is the only way a command reaches the runtime.
//! - REST: `GET /api/v1/devices`, `GET /api/v1/devices/{id}`,
//!   `POST /api/v1/devices/{id}/power` `{"action":"on"|"off"|"cycle"}`,
//!   `POST /api/v1/devices/{id}/factory-reset`, `GET|POST /api/v1/clock`,
//!   `GET /api/v1/radio` (the IEEE 802.15.4 medium),
//!   `POST /api/v1/devices/{id}/fields/{field}/power` `{"action":"on"|"off"}`,
//!   `POST /api/v1/devices/{id}/fields/{field}/radio` `{"in_contact":bool}`,
//!   `POST /api/v1/devices/{id}/fields/{field}/responsive` `{"responsive":bool}`,
//!   `POST /api/v1/devices/{id}/fields/{field}/force`
//!   `{"register":3028,"force":{"mode":"value","value":1000.0}}`,
//!   `POST /api/v1/devices/{id}/modbus-service` `{"interface":"eth2","enabled":true}`,
//!   `POST /api/v1/devices/{id}/digital-inputs/{1|2}` `{"closed":bool,"pulses":N}`,
//!   `POST /api/v1/commands` (any [`Command`] as JSON), `GET /api/v1/events`
//!   (server-sent events), `GET /api/v1/wifi` (the access points and their
//!   stations), `GET /api/v1/links`, `POST /api/v1/links/{device}`
//!   (a [`LinkFault`]; TAP mode), `POST /api/v1/workstations`
//!   `{"id","segment","ip"?}`, `POST /api/v1/devices/{id}/attack` (an
//!   [`Attack`] run from Workstation `id`). A clock command (jump, speed,
//!   pause) is answered once the new site time is saved in the state.
//!   Every error is a 4xx/5xx with a JSON body
//!   `{"error": "..."}` that says what was wrong.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::attack::{Attack, AttackReport};
use crate::clock::{ClockError, ClockStatus};
use crate::device::{
    DeviceStatus, EvSpec, FieldAction, Force, ModelCommand, Power, Runtime, RuntimeError,
};
use crate::local::{BleAction, LocalPort, Transcript};
use crate::net::fault::{FaultError, LinkFault};
use crate::radio::air::AirStatus;
use crate::radio::{Pattern, Position};

/// What a power command does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    On,
    Off,
    Cycle,
}

/// Everything that can be asked of a running site.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    Power {
        device: String,
        action: PowerAction,
    },
    FactoryReset {
        device: String,
    },
    /// The physical Restart button: held at least [`RESTART_BUTTON_RESET_S`]
    /// seconds it erases the device (factory reset), shorter it reboots it
    /// ([NF] durations, docs/panel-server.md).
    RestartButton {
        device: String,
        #[serde(default)]
        hold_s: f64,
    },
    AdvanceClock {
        seconds: f64,
    },
    SetSpeed {
        speed: f64,
    },
    Pause {
        paused: bool,
    },
    /// Sets (or clears, with all fields default) a link fault on every port
    /// of a device, or of a segment with `device = "segment:NAME"`.
    SetLink {
        device: String,
        fault: LinkFault,
    },
    /// Switches a field device behind `device` (its serial meter, a PowerTag's
    /// circuit, a wireless sensor) on or off.
    FieldPower {
        device: String,
        field: String,
        on: bool,
    },
    /// Puts a wireless field device behind `device` in or out of radio contact.
    FieldRadio {
        device: String,
        field: String,
        in_contact: bool,
    },
    /// Drives a digital input of a Panel Server L model (`input` 1 = DI1,
    /// 2 = DI2): the contact wired to it closes or opens (`closed`; a
    /// closing counts a pulse in pulse mode, an operation in status mode),
    /// and/or it receives `pulses` whole pulses (pulse mode).
    DigitalInput {
        device: String,
        input: u8,
        #[serde(default)]
        closed: Option<bool>,
        #[serde(default)]
        pulses: u32,
    },
    /// Activates or deactivates a Panel Server's Modbus TCP service on one
    /// interface (`eth1`, `eth2`, `wifi`).
    ModbusService {
        device: String,
        interface: String,
        enabled: bool,
    },
    // --- Workstations, attacks and field faults (issue 9; docs/control-api.md) ---
    /// Adds a device of model `Workstation` on `segment` (at `ip`, or the
    /// first free address from .200) and powers it on.
    AddWorkstation {
        id: String,
        segment: String,
        #[serde(default)]
        ip: Option<std::net::Ipv4Addr>,
    },
    /// Runs an attack from Workstation `from`; answers an [`AttackReport`].
    Attack {
        from: String,
        attack: Attack,
    },
    /// A serial field device behind `device` (or a networked meter, with
    /// `field` = its own id) hangs: powered, but silent on its Modbus link
    /// (`responsive: false`), or answers again.
    FieldResponsive {
        device: String,
        field: String,
        responsive: bool,
    },
    /// Forces what register `register` (numbered as in the field device's
    /// sheet) of a field device reads: stuck, drifting, a fixed (e.g. out of
    /// range) value, or back to the true value (`{"mode":"clear"}`).
    FieldForce {
        device: String,
        field: String,
        register: u16,
        force: Force,
    },
    /// Lines typed on a device's USB console (a Data Logger's), answered in
    /// order; answers a [`Transcript`].
    UsbConsole {
        device: String,
        lines: Vec<String>,
    },
    /// An SD card is put into a device's card reader (an EV Charging
    /// Expert's): `image` is a file on the emulator's host whose bytes the
    /// card carries; without it the card is taken out. Answers a
    /// [`Transcript`] (`port` `sd`).
    SdCard {
        device: String,
        #[serde(default)]
        image: Option<std::path::PathBuf>,
    },
    /// The mobile app (or an impostor) on a device's BLE link does `action`
    /// (`status`, `replay`, `unauthenticated`, `wrong_key`); answers a
    /// [`Transcript`].
    Ble {
        device: String,
        action: BleAction,
    },
    /// The cellular network around a Data Logger: coverage lost (`false`) or
    /// back (`true`), signal strength in dBm (-120 to -40), technology
    /// generation (4, 3 or 2). Omitted fields stay as they are.
    Cellular {
        device: String,
        #[serde(default)]
        coverage: Option<bool>,
        #[serde(default)]
        signal_dbm: Option<i16>,
        #[serde(default)]
        generation: Option<u8>,
    },
    /// Starts (`on: true`, writing pcap to `path`, link type 251
    /// BLUETOOTH_LE_LL) or stops the BLE sniffer of the site's air: every
    /// BLE packet (a Data Logger's advertising, connections, secure-channel
    /// frames, slams), stamped with virtual time. Answers the radio status;
    /// a `ble_sniffer` event says what was written.
    BleSniffer {
        #[serde(default)]
        path: Option<String>,
        on: bool,
    },
    /// The carrier NATs the Data Loggers' sessions cross in TAP mode:
    /// pools, live translations, counters (docs/datalogger.md "Carrier
    /// NAT"). Host mode has none (400).
    CarrierNat,
    // --- EV charging (issue 11; docs/ev-charging.md) ---
    /// An EV is plugged into `connector` of charging station `device`;
    /// `id_tag` presents a badge at the same time.
    EvPlug {
        device: String,
        #[serde(default = "connector_one")]
        connector: u32,
        #[serde(default)]
        ev: EvSpec,
        #[serde(default)]
        id_tag: Option<String>,
    },
    /// The EV on `connector` of `device` is unplugged.
    EvUnplug {
        device: String,
        #[serde(default = "connector_one")]
        connector: u32,
    },
    /// RFID badge `id_tag` is presented to `device`'s reader for `connector`.
    Badge {
        device: String,
        #[serde(default = "connector_one")]
        connector: u32,
        id_tag: String,
    },
    /// Cuts (`connected: false`) or restores the upstream OCPP links of
    /// EV Charging Expert `device` to its supervisions.
    OcppUpstream {
        device: String,
        connected: bool,
    },
    /// Sets (or with `kw` null clears) the load-management limit of EV
    /// Charging Expert `device` on its site meter, kW (1-10000).
    SiteLimit {
        device: String,
        #[serde(default)]
        kw: Option<f64>,
    },
    /// Repoints charging station `device` to the central system at `url`
    /// (`ws://` or `wss://`, the box id is appended), as a rogue DHCP/DNS
    /// answer or a tampered configuration would; `url` null: back to the
    /// site file's. The station drops its link and connects there at once.
    OcppUrl {
        device: String,
        #[serde(default)]
        url: Option<String>,
    },
    // --- Wi-Fi (issue 10; docs/control-api.md "Wi-Fi") ---
    /// A station (`host`, the lab's client, by default; or a device id)
    /// associates with the access point on the air with SSID `ssid`,
    /// offering `password` and `cipher` (`ccmp`/`wpa2`, or `tkip`/`wpa`,
    /// which is refused). Answers the access points.
    WifiAssociate {
        ssid: String,
        password: String,
        #[serde(default)]
        cipher: crate::wifi::Cipher,
        #[serde(default = "wifi_host")]
        station: String,
    },
    /// The station leaves the access point with SSID `ssid`.
    WifiDisassociate {
        ssid: String,
        #[serde(default = "wifi_host")]
        station: String,
    },
    /// The front-face button of a Panel Server: puts its Wi-Fi access point
    /// on the air, if the access point is enabled.
    WifiButton {
        device: String,
    },
    // --- Radio medium (issue 10; docs/control-api.md "Radio") ---
    /// Starts (`on: true`, replacing one of the same id) or stops a jammer:
    /// at `position` (metres) or 1 m from radio `near` (a Panel Server id,
    /// or a wireless device id), radiating `power_dbm` (default 10) on
    /// `channels` (default all of 11-26) with `pattern` (default constant).
    Jammer {
        id: String,
        #[serde(default)]
        position: Option<Position>,
        #[serde(default)]
        near: Option<String>,
        #[serde(default = "default_jammer_dbm")]
        power_dbm: f64,
        #[serde(default)]
        channels: Vec<u8>,
        #[serde(default)]
        pattern: Pattern,
        on: bool,
    },
    /// Puts one frame on the air at once (an attacker's transmitter): the
    /// MPDU `frame` in hexadecimal (FCS appended), or a device report from
    /// RF-ID `report.rf_id` to Panel Server `report.to` (its PAN and
    /// channel). From `position` or 1 m from `near` (default: the target
    /// Panel Server), at `power_dbm` (default 0), on `channel` (default:
    /// the target's).
    RadioInject {
        #[serde(default)]
        channel: Option<u8>,
        #[serde(default)]
        position: Option<Position>,
        #[serde(default)]
        near: Option<String>,
        #[serde(default)]
        power_dbm: f64,
        #[serde(default)]
        frame: Option<String>,
        #[serde(default)]
        report: Option<InjectReport>,
    },
    /// Moves radio `radio` (a Panel Server id or a wireless device id) to
    /// `position`, or 1 m from radio `near`.
    RadioMove {
        radio: String,
        #[serde(default)]
        position: Option<Position>,
        #[serde(default)]
        near: Option<String>,
    },
    /// Starts (`on: true`, writing pcap to `path`) or stops the sniffer of
    /// `channel`.
    Sniffer {
        channel: u8,
        #[serde(default)]
        path: Option<String>,
        on: bool,
    },
}

/// A forged device report for [`Command::RadioInject`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InjectReport {
    /// RF-ID, hexadecimal (`0x` prefix allowed).
    pub rf_id: String,
    /// Panel Server the report is addressed to.
    pub to: String,
    #[serde(default)]
    pub counter: u32,
    /// Active power reading, W.
    #[serde(default)]
    pub power_w: f32,
}

fn default_jammer_dbm() -> f64 {
    10.0
}

fn connector_one() -> u32 {
    1
}

fn wifi_host() -> String {
    crate::wifi::HOST.to_string()
}

/// The site's Wi-Fi access points (the answer of the Wi-Fi commands).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WifiStatus {
    pub access_points: Vec<crate::wifi::AccessPointStatus>,
}

/// Seconds the Restart button must be held for a factory reset.
pub const RESTART_BUTTON_RESET_S: f64 = 10.0;

/// Everything a running site reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Power {
        device: String,
        power: Power,
    },
    BootFailed {
        device: String,
        reason: String,
    },
    FactoryReset {
        device: String,
    },
    Clock(ClockStatus),
    /// Something a device model reports (audit entries, alarms, ...).
    Device {
        device: String,
        kind: String,
        message: String,
    },
    /// A step of a scenario run started through the control API
    /// (`POST /api/v1/scenarios/run`), as it is recorded.
    ScenarioStep {
        run: u64,
        /// The scenario's file stem.
        scenario: String,
        step: crate::scenario_api::Step,
    },
    /// A scenario run started through the control API has ended.
    ScenarioEnded {
        run: u64,
        scenario: String,
        state: crate::scenario_api::RunState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// Broadcast bus of [`Event`]s. Slow subscribers miss events rather than
/// slowing the site down.
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(4096).0,
        }
    }

    pub fn send(&self, e: Event) {
        let _ = self.tx.send(e);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// The answer to a command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Reply {
    Device(Box<DeviceStatus>),
    Clock(ClockStatus),
    /// Link faults in force, by device or `segment:NAME`.
    Links(BTreeMap<String, LinkFault>),
    /// What an attack observed.
    Attack(Box<AttackReport>),
    /// The radio medium after a radio command.
    Radio(Box<AirStatus>),
    /// The access points after a Wi-Fi command.
    Wifi(WifiStatus),
    /// What a person at a local port (USB, BLE) saw.
    Local(Box<Transcript>),
    /// The carrier NATs (TAP mode).
    Carriers(CarrierReport),
}

/// The answer of the `carrier_nat` command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CarrierReport {
    pub carriers: Vec<crate::net::nat::CarrierStatus>,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Clock(#[from] ClockError),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Link(#[from] FaultError),
}

/// Carries out one command.
pub async fn execute(rt: &Runtime, cmd: Command) -> Result<Reply, CommandError> {
    let clock_reply = |rt: &Runtime| {
        let st = rt.clock().status();
        rt.events().send(Event::Clock(st.clone()));
        Ok(Reply::Clock(st))
    };
    match cmd {
        Command::Power { device, action } => {
            match action {
                PowerAction::On => rt.power_on(&device).await?,
                PowerAction::Off => rt.power_off(&device).await?,
                PowerAction::Cycle => rt.power_cycle(&device).await?,
            };
            Ok(Reply::Device(Box::new(rt.status(&device)?)))
        }
        Command::FactoryReset { device } => {
            rt.factory_reset(&device).await?;
            Ok(Reply::Device(Box::new(rt.status(&device)?)))
        }
        Command::RestartButton { device, hold_s } => {
            if hold_s >= RESTART_BUTTON_RESET_S {
                rt.factory_reset(&device).await?;
            } else {
                rt.power_cycle(&device).await?;
            }
            Ok(Reply::Device(Box::new(rt.status(&device)?)))
        }
        Command::AdvanceClock { seconds } => {
            // The jump's clock event goes out before the jump wakes
            // anything, so on the stream it precedes its consequences.
            let by = crate::clock::check_advance(seconds)?;
            rt.clock()
                .advance_announced(by, |st| rt.events().send(Event::Clock(st)));
            // The radio events of the jump are handled before the answer.
            rt.radio().process(rt.clock().now()).await;
            rt.save_clock().await?;
            Ok(Reply::Clock(rt.clock().status()))
        }
        Command::SetSpeed { speed } => {
            rt.clock().set_speed(speed)?;
            rt.save_clock().await?;
            clock_reply(rt)
        }
        Command::Pause { paused } => {
            rt.clock().set_paused(paused);
            rt.save_clock().await?;
            clock_reply(rt)
        }
        Command::SetLink { device, fault } => {
            let net = rt.network().ok_or_else(|| {
                CommandError::BadRequest(
                    "link faults exist in TAP mode only (start with `fieldtwin run --tap`)".into(),
                )
            })?;
            net.set_fault(&device, fault)?;
            Ok(Reply::Links(net.faults()))
        }
        Command::FieldPower { device, field, on } => {
            field_command(rt, &device, &field, FieldAction::Power { on })
        }
        Command::FieldRadio {
            device,
            field,
            in_contact,
        } => field_command(rt, &device, &field, FieldAction::Radio { in_contact }),
        Command::FieldResponsive {
            device,
            field,
            responsive,
        } => field_command(rt, &device, &field, FieldAction::Responsive { responsive }),
        Command::FieldForce {
            device,
            field,
            register,
            force,
        } => field_command(rt, &device, &field, FieldAction::Force { register, force }),
        Command::DigitalInput {
            device,
            input,
            closed,
            pulses,
        } => field_command(
            rt,
            &device,
            &format!("DI{input}"),
            FieldAction::DigitalInput { closed, pulses },
        ),
        Command::ModbusService {
            device,
            interface,
            enabled,
        } => {
            rt.set_modbus_service(&device, &interface, enabled)
                .await?
                .map_err(CommandError::BadRequest)?;
            rt.events().send(Event::Device {
                device: device.clone(),
                kind: "modbus_service".into(),
                message: format!(
                    "Modbus TCP service {} on {interface}",
                    if enabled { "activated" } else { "deactivated" }
                ),
            });
            Ok(Reply::Device(Box::new(rt.status(&device)?)))
        }
        Command::AddWorkstation { id, segment, ip } => Ok(Reply::Device(Box::new(
            rt.add_workstation(&id, &segment, ip).await?,
        ))),
        Command::Attack { from, attack } => {
            let kind = attack.kind();
            let report = rt
                .attack(&from, attack)
                .await?
                .map_err(CommandError::BadRequest)?;
            rt.events().send(Event::Device {
                device: from.clone(),
                kind: "attack".into(),
                message: format!("{kind} on {}", report.target),
            });
            Ok(Reply::Attack(Box::new(report)))
        }
        Command::WifiAssociate {
            ssid,
            password,
            cipher,
            station,
        } => {
            if station != crate::wifi::HOST && rt.status(&station).is_err() {
                return Err(CommandError::BadRequest(format!(
                    "station {station:?} is neither \"host\" (the lab's client) nor a device of the site"
                )));
            }
            let offer = crate::wifi::Offer {
                ssid,
                passphrase: password,
                cipher,
            };
            rt.wifi()
                .associate(&offer, &station)
                .map_err(|e| CommandError::BadRequest(e.to_string()))?;
            Ok(wifi_reply(rt))
        }
        Command::WifiDisassociate { ssid, station } => {
            rt.wifi()
                .disassociate(&ssid, &station)
                .map_err(|e| CommandError::BadRequest(e.to_string()))?;
            Ok(wifi_reply(rt))
        }
        Command::WifiButton { device } => {
            let power = rt.status(&device)?.power;
            if power != Power::On {
                return Err(CommandError::BadRequest(format!(
                    "{device} is not on ({power:?}); its button does nothing"
                )));
            }
            rt.wifi()
                .button(&device)
                .map_err(|e| CommandError::BadRequest(e.to_string()))?;
            Ok(wifi_reply(rt))
        }
        Command::UsbConsole { device, lines } => {
            local_port(rt, &device, LocalPort::Usb { lines }).await
        }
        Command::Ble { device, action } => local_port(rt, &device, LocalPort::Ble { action }).await,
        Command::SdCard { device, image } => {
            let image = match image {
                None => None,
                Some(p) => Some(read_card(&p)?),
            };
            local_port(rt, &device, LocalPort::SdCard { image }).await
        }
        Command::Cellular {
            device,
            coverage,
            signal_dbm,
            generation,
        } => field_command(
            rt,
            &device,
            "modem",
            FieldAction::Cellular {
                coverage,
                signal_dbm,
                generation,
            },
        ),
        Command::CarrierNat => match rt.network() {
            None => Err(CommandError::BadRequest(
                "the carrier NAT node is on the TAP-mode switch; in host mode each session of a \
                 Data Logger leaves from an address of its loopback pool 127.78.S.2-251"
                    .into(),
            )),
            Some(net) => Ok(Reply::Carriers(CarrierReport {
                carriers: net
                    .carriers()
                    .into_iter()
                    .map(|(segment, _, link)| link.status(&segment))
                    .collect(),
            })),
        },
        Command::BleSniffer { path, on } => {
            let air = rt.radio();
            let message = if on {
                let path = path.ok_or_else(|| {
                    CommandError::BadRequest(
                        "a BLE sniffer needs \"path\": the pcap file to write".into(),
                    )
                })?;
                air.ble()
                    .start_sniffer(std::path::Path::new(&path))
                    .map_err(CommandError::BadRequest)?;
                format!("BLE sniffer -> {path}")
            } else {
                let info = air.ble().stop_sniffer().map_err(CommandError::BadRequest)?;
                format!(
                    "BLE sniffer stopped: {} packets in {}",
                    info.packets, info.path
                )
            };
            radio_event(rt, "ble_sniffer", message);
            Ok(Reply::Radio(Box::new(air.status())))
        }
        Command::Jammer {
            id,
            position,
            near,
            power_dbm,
            channels,
            pattern,
            on,
        } => {
            let air = rt.radio();
            let message = if on {
                let pos = locate(rt, position, near.as_deref(), "jammer")?;
                let j = crate::radio::Jammer::new(
                    &id,
                    pos,
                    power_dbm,
                    &channels,
                    pattern,
                    rt.clock().now(),
                )
                .map_err(|e| CommandError::BadRequest(e.to_string()))?;
                let m = format!(
                    "jammer {id} on at ({:.1}, {:.1}, {:.1}) m, {power_dbm} dBm, channels {:?}, {pattern:?}",
                    pos.x, pos.y, pos.z, j.channels
                );
                air.process(rt.clock().now()).await;
                air.medium().start_jammer(j);
                m
            } else {
                air.process(rt.clock().now()).await;
                if !air.medium().stop_jammer(&id) {
                    return Err(CommandError::BadRequest(format!(
                        "no jammer {id:?} is on; jammers on: {:?}",
                        air.medium()
                            .jammers()
                            .iter()
                            .map(|j| j.id.clone())
                            .collect::<Vec<_>>()
                    )));
                }
                format!("jammer {id} off")
            };
            air.poke();
            radio_event(rt, "jammer", message);
            Ok(Reply::Radio(Box::new(air.status())))
        }
        Command::RadioInject {
            channel,
            position,
            near,
            power_dbm,
            frame,
            report,
        } => {
            let air = rt.radio();
            let target = report.as_ref().map(|r| r.to.clone());
            let (target_channel, target_name) = match &target {
                Some(t) => {
                    let (name, id) = radio_named(rt, t)?;
                    (air.medium().channel(id), Some(name))
                }
                None => (None, None),
            };
            let psdu = match (&frame, &report) {
                (Some(hex), None) => {
                    let mpdu = parse_hex(hex)?;
                    crate::radio::frame::with_fcs(&mpdu)
                }
                (None, Some(r)) => {
                    let rf_id = crate::site::parse_rf_id(r.rf_id.trim()).ok_or_else(|| {
                        CommandError::BadRequest(format!(
                            "{:?} is not an RF-ID; use up to 16 hexadecimal digits",
                            r.rf_id
                        ))
                    })?;
                    crate::radio::report::Report {
                        pan: crate::radio::pan_of(target_name.as_deref().unwrap_or(&r.to)),
                        rf_id,
                        seq: r.counter as u8,
                        kind: 1,
                        counter: r.counter,
                        readings: vec![(
                            crate::radio::report::Quantity::ActivePower as u8,
                            r.power_w,
                        )],
                    }
                    .to_psdu()
                }
                _ => {
                    return Err(CommandError::BadRequest(
                        "give exactly one of \"frame\" (the MPDU in hexadecimal, FCS appended by the injector) or \"report\" ({\"rf_id\", \"to\"})".into(),
                    ));
                }
            };
            let near = near.or(target_name);
            let pos = locate(rt, position, near.as_deref(), "injector")?;
            let channel = channel.or(target_channel).ok_or_else(|| {
                CommandError::BadRequest("say on which \"channel\" (11-26) to inject".into())
            })?;
            let now = rt.clock().now();
            air.process(now).await;
            air.medium()
                .inject(now, channel, pos, power_dbm, &psdu)
                .map_err(|e| CommandError::BadRequest(e.to_string()))?;
            air.poke();
            radio_event(
                rt,
                "radio_inject",
                format!("{} octets injected on channel {channel}", psdu.len()),
            );
            Ok(Reply::Radio(Box::new(air.status())))
        }
        Command::RadioMove {
            radio,
            position,
            near,
        } => {
            let (name, id) = radio_named(rt, &radio)?;
            let pos = locate(rt, position, near.as_deref(), "radio")?;
            let air = rt.radio();
            air.process(rt.clock().now()).await;
            air.medium()
                .set_position(id, pos)
                .map_err(|e| CommandError::BadRequest(e.to_string()))?;
            radio_event(
                rt,
                "radio_move",
                format!(
                    "{name} moved to ({:.1}, {:.1}, {:.1}) m",
                    pos.x, pos.y, pos.z
                ),
            );
            Ok(Reply::Radio(Box::new(air.status())))
        }
        Command::Sniffer { channel, path, on } => {
            let air = rt.radio();
            if on {
                let path = path.ok_or_else(|| {
                    CommandError::BadRequest(
                        "a sniffer needs \"path\": the pcap file to write".into(),
                    )
                })?;
                air.process(rt.clock().now()).await;
                air.start_sniffer(channel, std::path::Path::new(&path))
                    .map_err(CommandError::BadRequest)?;
                radio_event(
                    rt,
                    "sniffer",
                    format!("sniffer on channel {channel} -> {path}"),
                );
            } else {
                let info = air
                    .stop_sniffer(channel)
                    .await
                    .map_err(CommandError::BadRequest)?;
                radio_event(
                    rt,
                    "sniffer",
                    format!(
                        "sniffer on channel {channel} stopped: {} frames in {}",
                        info.frames, info.path
                    ),
                );
            }
            Ok(Reply::Radio(Box::new(air.status())))
        }
        Command::EvPlug {
            device,
            connector,
            ev,
            id_tag,
        } => {
            ev.check().map_err(CommandError::BadRequest)?;
            model_command(
                rt,
                &device,
                ModelCommand::EvPlug {
                    connector,
                    ev,
                    id_tag,
                },
            )
        }
        Command::EvUnplug { device, connector } => {
            model_command(rt, &device, ModelCommand::EvUnplug { connector })
        }
        Command::Badge {
            device,
            connector,
            id_tag,
        } => model_command(rt, &device, ModelCommand::Badge { connector, id_tag }),
        Command::OcppUpstream { device, connected } => {
            model_command(rt, &device, ModelCommand::Upstream { connected })
        }
        Command::SiteLimit { device, kw } => {
            if let Some(k) = kw
                && !(1.0..=10_000.0).contains(&k)
            {
                return Err(CommandError::BadRequest(format!(
                    "kw: {k} is out of range; allowed 1 to 10000 (null: no limit)"
                )));
            }
            model_command(rt, &device, ModelCommand::SiteLimit { kw })
        }
        Command::OcppUrl { device, url } => {
            model_command(rt, &device, ModelCommand::OcppUrl { url })
        }
    }
}

/// Largest SD card image the `sd_card` command reads.
pub const MAX_SD_IMAGE: u64 = 256 << 20;

fn read_card(p: &std::path::Path) -> Result<Vec<u8>, CommandError> {
    let len = std::fs::metadata(p)
        .map_err(|e| CommandError::BadRequest(format!("image {}: {e}", p.display())))?
        .len();
    if len > MAX_SD_IMAGE {
        return Err(CommandError::BadRequest(format!(
            "image {} is {len} bytes; an SD card image may be at most {MAX_SD_IMAGE}",
            p.display()
        )));
    }
    std::fs::read(p).map_err(|e| CommandError::BadRequest(format!("image {}: {e}", p.display())))
}

fn radio_event(rt: &Runtime, kind: &str, message: String) {
    rt.events().send(Event::Device {
        device: "radio".into(),
        kind: kind.into(),
        message,
    });
}

/// The radio named `name` (exactly, or a unique `PANEL_SERVER/name`).
fn radio_named(rt: &Runtime, name: &str) -> Result<(String, crate::radio::RadioId), CommandError> {
    let found = rt.radio().medium().matching(name);
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(CommandError::BadRequest(format!(
            "no radio {name:?} on the medium; radios are named after their Panel Server (ps1) or wireless device (pt-hvac, or ps1/pt-hvac)"
        ))),
        many => Err(CommandError::BadRequest(format!(
            "{name:?} names several radios ({}); say which",
            many.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `position`, or 1 m east of radio `near`.
fn locate(
    rt: &Runtime,
    position: Option<Position>,
    near: Option<&str>,
    what: &str,
) -> Result<Position, CommandError> {
    match (position, near) {
        (Some(p), None) => Ok(p),
        (None, Some(n)) => {
            let (_, id) = radio_named(rt, n)?;
            let p = rt
                .radio()
                .medium()
                .position(id)
                .ok_or_else(|| CommandError::BadRequest(format!("radio {n:?} is gone")))?;
            Ok(Position::new(p.x + 1.0, p.y, p.z))
        }
        _ => Err(CommandError::BadRequest(format!(
            "place the {what} with exactly one of \"position\" ({{\"x\",\"y\",\"z\"}} in metres) or \"near\" (a radio's name)"
        ))),
    }
}

/// Hexadecimal octets (spaces and colons allowed).
fn parse_hex(text: &str) -> Result<Vec<u8>, CommandError> {
    let digits: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if !digits.len().is_multiple_of(2) || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CommandError::BadRequest(format!(
            "\"frame\" must be hexadecimal octets (two digits each), not {text:?}"
        )));
    }
    Ok((0..digits.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&digits[i..i + 2], 16).ok())
        .collect())
}

fn model_command(rt: &Runtime, device: &str, cmd: ModelCommand) -> Result<Reply, CommandError> {
    let name = cmd.name();
    rt.model_command(device, cmd)?
        .map_err(CommandError::BadRequest)?;
    rt.events().send(Event::Device {
        device: device.to_string(),
        kind: name.into(),
        message: format!("{name} done"),
    });
    Ok(Reply::Device(Box::new(rt.status(device)?)))
}

fn wifi_reply(rt: &Runtime) -> Reply {
    Reply::Wifi(WifiStatus {
        access_points: rt.wifi().access_points(),
    })
}

async fn local_port(rt: &Runtime, device: &str, port: LocalPort) -> Result<Reply, CommandError> {
    let t = rt
        .local_port(device, port)
        .await?
        .map_err(CommandError::BadRequest)?;
    Ok(Reply::Local(Box::new(t)))
}

fn field_command(
    rt: &Runtime,
    device: &str,
    field: &str,
    action: FieldAction,
) -> Result<Reply, CommandError> {
    rt.field_command(device, field, action)?
        .map_err(CommandError::BadRequest)?;
    rt.events().send(Event::Device {
        device: device.to_string(),
        kind: "field".into(),
        message: format!("field device {field}: {action:?}"),
    });
    Ok(Reply::Device(Box::new(rt.status(device)?)))
}

/// An error as the REST API returns it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let status = match &e {
            CommandError::Runtime(RuntimeError::UnknownDevice(_)) => StatusCode::NOT_FOUND,
            CommandError::Runtime(RuntimeError::Storage(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            CommandError::Runtime(RuntimeError::Refused(_)) => StatusCode::BAD_REQUEST,
            CommandError::Link(FaultError::Unknown(_)) => StatusCode::NOT_FOUND,
            CommandError::Clock(_) | CommandError::BadRequest(_) | CommandError::Link(_) => {
                StatusCode::BAD_REQUEST
            }
        };
        Self {
            status,
            message: e.to_string(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self {
            status: e.status(),
            message: e.body_text(),
        }
    }
}

/// JSON body of `POST /api/v1/devices/{id}/power`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PowerBody {
    action: PowerAction,
}

/// JSON body of `POST /api/v1/clock`: exactly one field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    advance_s: Option<f64>,
    speed: Option<f64>,
    paused: Option<bool>,
}

type Shared = Arc<Runtime>;

/// The REST router of the control API.
pub fn router(rt: Arc<Runtime>) -> Router {
    Router::new()
        .route("/api/v1/devices", get(list_devices))
        .route("/api/v1/devices/{id}", get(get_device))
        .route("/api/v1/devices/{id}/power", post(power))
        .route("/api/v1/devices/{id}/factory-reset", post(factory_reset))
        .route(
            "/api/v1/devices/{id}/fields/{field}/power",
            post(field_power),
        )
        .route(
            "/api/v1/devices/{id}/fields/{field}/radio",
            post(field_radio),
        )
        .route(
            "/api/v1/devices/{id}/fields/{field}/responsive",
            post(field_responsive),
        )
        .route(
            "/api/v1/devices/{id}/fields/{field}/force",
            post(field_force),
        )
        .route("/api/v1/devices/{id}/modbus-service", post(modbus_service))
        .route(
            "/api/v1/devices/{id}/digital-inputs/{input}",
            post(digital_input),
        )
        .route("/api/v1/clock", get(get_clock).post(set_clock))
        .route("/api/v1/radio", get(get_radio))
        .route("/api/v1/commands", post(command))
        .route("/api/v1/links", get(get_links))
        .route("/api/v1/wifi", get(get_wifi))
        .route("/api/v1/links/{device}", post(set_link))
        .route("/api/v1/events", get(events))
        .route("/api/v1/workstations", post(add_workstation))
        .route("/api/v1/devices/{id}/attack", post(attack))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                message: "no such endpoint; see docs/control-api.md".into(),
            }
        })
        .with_state(rt)
}

async fn list_devices(State(rt): State<Shared>) -> Json<Vec<DeviceStatus>> {
    Json(rt.statuses())
}

async fn get_device(
    State(rt): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<DeviceStatus>, ApiError> {
    Ok(Json(rt.status_detailed(&id).map_err(CommandError::from)?))
}

async fn power(
    State(rt): State<Shared>,
    Path(id): Path<String>,
    body: Result<Json<PowerBody>, JsonRejection>,
) -> Result<Json<Reply>, ApiError> {
    let Json(body) = body?;
    let cmd = Command::Power {
        device: id,
        action: body.action,
    };
    Ok(Json(execute(&rt, cmd).await?))
}

async fn factory_reset(
    State(rt): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Reply>, ApiError> {
    Ok(Json(
        execute(&rt, Command::FactoryReset { device: id }).await?,
    ))
}

/// JSON body of `POST /api/v1/devices/{id}/fields/{field}/radio`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RadioBody {
    in_contact: bool,
}

async fn field_power(
    State(rt): State<Shared>,
    Path((device, field)): Path<(String, String)>,
    body: Result<Json<PowerBody>, JsonRejection>,
) -> Result<Json<Reply>, ApiError> {
    let Json(body) = body?;
    let on = match body.action {
        PowerAction::On => true,
        PowerAction::Off => false,
        PowerAction::Cycle => {
            return Err(ApiError::bad_request(
                "a field device takes {\"action\": \"on\"} or {\"action\": \"off\"}",
            ));
        }
    };
    Ok(Json(
        execute(&rt, Command::FieldPower { device, field, on }).await?,
    ))
}

async fn field_radio(
    State(rt): State<Shared>,
    Path((device, field)): Path<(String, String)>,
    body: Result<Json<RadioBody>, JsonRejection>,
) -> Result<Json<Reply>, ApiError> {
    let Json(body) = body?;
    let cmd = Command::FieldRadio {
        device,
        field,
        in_contact: body.in_contact,
    };
    Ok(Json(execute(&rt, cmd).await?))
}

/// JSON body of `POST /api/v1/devices/{id}/fields/{field}/responsive`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponsiveBody {
    responsive: bool,
}

async fn field_responsive(
    State(rt): State<Shared>,
    Path((device, field)): Path<(String, String)>,
    body: Result<Json<ResponsiveBody>, JsonRejection>,
) -> Result<Json<Reply>, ApiError> {
    let Json(body) = body?;
    let cmd = Command::FieldResponsive {
        device,
        field,
        responsive: body.responsive,
    };
    Ok(Json(execute(&rt, cmd).await?))
}

/// JSON body of `POST /api/v1/devices/{id}/fields/{field}/force`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceBody {
    register: u16,
    force: Force,
}

async fn field_force(
    State(rt): State<Shared>,
    Path((device, field)): Path<(String, String)>,
    body: Result<Json<ForceBody>, JsonRejection>,
) -> Result<Json<Reply>, ApiError> {
    let Json(body) = body?;
    let cmd = Command::FieldForce {
        device,
        field,
        register: body.register,
        force: body.force,
    };
    Ok(Json(execute(&rt, cmd).await?))
}

/// JSON body of `POST /api/v1/devices/{id}/modbus-service`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModbusServiceBody {
    interface: String,
    enabled: bool,
}

async fn modbus_service(
    State(rt): State<Shared>,
    Path(device): Path<String>,
    body: Result<Json<ModbusServiceBody>, JsonRejection>,
) -> Result<Json<Reply>, ApiError> {
    let Json(body) = body?;
    let cmd = Command::ModbusService {
        device,
        interface: body.interface,
        enabled: body.enabled,
    };
    Ok(Json(execute(&rt, cmd).await?))
}

/// JSON body of `POST /api/v1/devices/{id}/digital-inputs/{input}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DigitalInputBody {
    #[serde(default)]
    closed: Option<bool>,
    #[serde(default)]
    pulses: u32,
}

async fn digital_input(
    State(rt): State<Shared>,
    Path((device, input)): Path<(String, String)>,
    body: Result<Json<DigitalInputBody>, JsonRejection>,
) -> Result<Json<Reply>, ApiError> {
    let Json(body) = body?;
    let input = match input.to_ascii_uppercase().trim_start_matches("DI").parse() {
        Ok(n @ 1..=2) => n,
        _ => {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!("no digital input {input:?}; use 1 (DI1) or 2 (DI2)"),
            });
        }
    };
    let cmd = Command::DigitalInput {
        device,
        input,
        closed: body.closed,
        pulses: body.pulses,
    };
    Ok(Json(execute(&rt, cmd).await?))
}

async fn get_radio(State(rt): State<Shared>) -> Json<AirStatus> {
    Json(rt.radio().status())
}

async fn get_clock(State(rt): State<Shared>) -> Json<ClockStatus> {
    Json(rt.clock().status())
}

async fn set_clock(
    State(rt): State<Shared>,
    body: Result<Json<ClockBody>, JsonRejection>,
) -> Result<Json<Reply>, ApiError> {
    let Json(body) = body?;
    let cmd = match (body.advance_s, body.speed, body.paused) {
        (Some(seconds), None, None) => Command::AdvanceClock { seconds },
        (None, Some(speed), None) => Command::SetSpeed { speed },
        (None, None, Some(paused)) => Command::Pause { paused },
        _ => {
            return Err(ApiError::bad_request(
                "send exactly one of {\"advance_s\": seconds}, {\"speed\": factor}, {\"paused\": true|false}",
            ));
        }
    };
    Ok(Json(execute(&rt, cmd).await?))
}

async fn get_wifi(State(rt): State<Shared>) -> Json<WifiStatus> {
    Json(WifiStatus {
        access_points: rt.wifi().access_points(),
    })
}

async fn get_links(State(rt): State<Shared>) -> Json<BTreeMap<String, LinkFault>> {
    Json(rt.network().map(|n| n.faults()).unwrap_or_default())
}

async fn set_link(
    State(rt): State<Shared>,
    Path(device): Path<String>,
    body: Result<Json<LinkFault>, JsonRejection>,
) -> Result<Json<Reply>, ApiError> {
    let Json(fault) = body?;
    Ok(Json(
        execute(&rt, Command::SetLink { device, fault }).await?,
    ))
}

/// JSON body of `POST /api/v1/workstations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkstationBody {
    id: String,
    segment: String,
    #[serde(default)]
    ip: Option<std::net::Ipv4Addr>,
}

async fn add_workstation(
    State(rt): State<Shared>,
    body: Result<Json<WorkstationBody>, JsonRejection>,
) -> Result<Json<Reply>, ApiError> {
    let Json(b) = body?;
    let cmd = Command::AddWorkstation {
        id: b.id,
        segment: b.segment,
        ip: b.ip,
    };
    Ok(Json(execute(&rt, cmd).await?))
}

async fn attack(
    State(rt): State<Shared>,
    Path(from): Path<String>,
    body: Result<Json<Attack>, JsonRejection>,
) -> Result<Json<Reply>, ApiError> {
    let Json(attack) = body?;
    Ok(Json(execute(&rt, Command::Attack { from, attack }).await?))
}

async fn command(
    State(rt): State<Shared>,
    body: Result<Json<Command>, JsonRejection>,
) -> Result<Json<Reply>, ApiError> {
    let Json(cmd) = body?;
    Ok(Json(execute(&rt, cmd).await?))
}

async fn events(
    State(rt): State<Shared>,
) -> Sse<impl Stream<Item = Result<axum::response::sse::Event, Infallible>>> {
    let stream = BroadcastStream::new(rt.events().subscribe()).filter_map(|e| {
        let e = e.ok()?;
        let name = serde_json::to_value(&e)
            .ok()
            .and_then(|v| v.get("event").and_then(|n| n.as_str().map(String::from)))
            .unwrap_or_else(|| "event".into());
        axum::response::sse::Event::default()
            .event(name)
            .json_data(&e)
            .ok()
            .map(Ok)
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    //! Issue 16: whatever a client posts to the control API (arbitrary
    //! bytes, or JSON shaped like a command with arbitrary values), the
    //! API answers 2xx/4xx without panicking and keeps answering.

    use std::net::SocketAddr;
    use std::time::Duration;

    use futures::FutureExt;
    use futures::future::BoxFuture;
    use proptest::prelude::*;
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::clock::Clock;
    use crate::device::{BootError, Device, DeviceContext, DeviceSetup};
    use crate::site::RtcConfig;
    use crate::storage::Store;

    /// A device without services that counts its boots in NV memory.
    struct Quiet;

    impl Device for Quiet {
        fn id(&self) -> &str {
            "quiet"
        }
        fn model(&self) -> &str {
            "Quiet"
        }
        fn boot(self: Arc<Self>, ctx: DeviceContext) -> BoxFuture<'static, Result<(), BootError>> {
            async move {
                let boots: u32 = ctx.nv.get("boots")?.unwrap_or(0) + 1;
                ctx.nv.put("boots", &boots)?;
                Ok(())
            }
            .boxed()
        }
    }

    /// The API of a runtime with one device, on a free loopback port.
    async fn serve() -> SocketAddr {
        let clock = Clock::start(chrono::Utc::now(), 1.0).unwrap();
        let mut rt = Runtime::new(
            clock,
            Store::open(None).unwrap(),
            EventBus::new(),
            Duration::from_secs(3600),
        );
        rt.add(DeviceSetup {
            device: Arc::new(Quiet),
            interfaces: BTreeMap::new(),
            rtc: RtcConfig::default(),
            seed: 1,
        })
        .unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(axum::serve(l, router(Arc::new(rt))).into_future());
        addr
    }

    /// One HTTP/1.1 request on its own connection; the status code.
    async fn request(api: SocketAddr, method: &str, path: &str, body: &[u8]) -> u16 {
        let mut s = tokio::net::TcpStream::connect(api).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: fieldtwin\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("the control API answers within 10 s")
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        text.strip_prefix("HTTP/1.1 ")
            .and_then(|t| t.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"))
    }

    fn json_scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            prop_oneof![
                any::<f64>(),
                Just(1e300),
                Just(-1e300),
                Just(1e12),
                Just(11.0),
                Just(-0.0)
            ]
            .prop_map(Value::from),
            prop_oneof![
                "\\PC{0,12}",
                Just("quiet".to_string()),
                Just("on".to_string()),
                Just("off".to_string()),
                Just("cycle".to_string()),
                Just("eth1".to_string()),
                Just("segment:lan".to_string()),
                Just("DI1".to_string()),
            ]
            .prop_map(Value::from),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        json_scalar().prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const COMMANDS: [&str; 16] = [
        "power",
        "factory_reset",
        "restart_button",
        "advance_clock",
        "set_speed",
        "pause",
        "set_link",
        "field_power",
        "field_radio",
        "digital_input",
        "modbus_service",
        "jammer",
        "radio_inject",
        "radio_move",
        "sniffer",
        "no_such_command",
    ];
    const FIELDS: [&str; 28] = [
        "device",
        "action",
        "hold_s",
        "seconds",
        "speed",
        "paused",
        "fault",
        "field",
        "on",
        "in_contact",
        "input",
        "closed",
        "pulses",
        "interface",
        "enabled",
        "advance_s",
        "latency_ms",
        "extra",
        "id",
        "near",
        "position",
        "power_dbm",
        "channels",
        "channel",
        "pattern",
        "frame",
        "report",
        "radio",
    ];

    /// A JSON object shaped like a command: a known name (mostly), known
    /// field names, arbitrary values.
    fn command_like() -> impl Strategy<Value = Value> {
        (
            proptest::sample::select(&COMMANDS[..]),
            proptest::collection::vec((proptest::sample::select(&FIELDS[..]), json_value()), 0..5),
        )
            .prop_map(|(name, fields)| {
                let mut m = serde_json::Map::new();
                m.insert("command".into(), name.into());
                for (k, v) in fields {
                    m.insert(k.into(), v);
                }
                Value::Object(m)
            })
    }

    const PATHS: [&str; 10] = [
        "/api/v1/commands",
        "/api/v1/clock",
        "/api/v1/devices/quiet/power",
        "/api/v1/devices/nobody/power",
        "/api/v1/devices/quiet/factory-reset",
        "/api/v1/devices/quiet/fields/DI1/power",
        "/api/v1/devices/quiet/fields/x/radio",
        "/api/v1/devices/quiet/modbus-service",
        "/api/v1/devices/quiet/digital-inputs/300",
        "/api/v1/links/quiet",
    ];

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => command_like().prop_map(|v| v.to_string().into_bytes()),
            2 => json_value().prop_map(|v| v.to_string().into_bytes()),
            1 => proptest::collection::vec(any::<u8>(), 0..200),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_posts_get_an_answer_and_the_api_keeps_answering(
            posts in proptest::collection::vec((proptest::sample::select(&PATHS[..]), body()), 1..4)
        ) {
            thread_local! {
                static TOKIO: tokio::runtime::Runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap();
                static API: std::cell::OnceCell<SocketAddr> = const { std::cell::OnceCell::new() };
            }
            TOKIO.with(|t| {
                let api = API.with(|a| *a.get_or_init(|| t.block_on(serve())));
                t.block_on(async {
                    for (path, body) in &posts {
                        let code = request(api, "POST", path, body).await;
                        prop_assert!(
                            (200..500).contains(&code),
                            "POST {} {:?}: {}", path, String::from_utf8_lossy(body), code
                        );
                    }
                    prop_assert_eq!(request(api, "GET", "/api/v1/devices/quiet", b"").await, 200);
                    Ok(())
                })
            })?;
        }
    }

    /// The shapes a client gets wrong are refused with 4xx naming the
    /// problem: the parser's word, not a panic or a 500.
    #[tokio::test]
    async fn typical_mistakes_are_4xx() {
        let api = serve().await;
        for (path, body) in [
            (
                "/api/v1/commands",
                r#"{"command":"advance_clock","seconds":1e300}"#,
            ),
            ("/api/v1/commands", r#"{"command":"set_speed","speed":-1}"#),
            (
                "/api/v1/commands",
                r#"{"command":"digital_input","device":"quiet","input":300}"#,
            ),
            (
                "/api/v1/commands",
                r#"{"command":"power","device":"quiet"}"#,
            ),
            ("/api/v1/commands", "{"),
            ("/api/v1/clock", r#"{"advance_s":"x"}"#),
        ] {
            let code = request(api, "POST", path, body.as_bytes()).await;
            assert!((400..500).contains(&code), "{path} {body}: {code}");
        }
    }
}
