//! EcoStruxure Panel Server (PAS400/600/800 and variants): the device model.
//!
//! Contract (DOCA0211 cybersecurity guide; Panel Server Modbus file):
//! - Boot loads the persisted [`Settings`] from NV memory (written on first
//!   boot from the site file) and starts the Modbus TCP server on port 502 of
//!   every interface where the Modbus service is activated. Defaults follow
//!   the guide's "Network Segmentation" table: switched topology -> activated;
//!   separated topology -> ETH1 activated, ETH2 deactivated.
//! - Unit id 255 answers the Panel Server's own registers ([`registers`]),
//!   with the date/time taken from the device's RTC and writable with FC16;
//!   on the L models also the digital inputs DI1/DI2 ([`inputs`], driven by
//!   the site file and the `DigitalInput` command, counters kept in NV
//!   memory under `digital_inputs`). Models without inputs answer 0x02
//!   there, as for any address that is not a register.
//!   Other unit ids are routed by [`gateway::Router`] to the serial meters,
//!   the Modbus TCP devices of the OT side and the wireless devices
//!   (docs/gateway.md); a unit id nobody has answers 0x0A.
//! - Field devices (serial and wireless) live as long as the Panel Server
//!   model; `FieldPower`/`FieldRadio` commands reach them through
//!   [`Device::field_command`].
//! - At most 128 Modbus TCP clients at once.
//! - The security surface (HTTPS webpages and /api on 443, login lockout,
//!   audit log, signed firmware verified at every boot, backup, factory
//!   reset) is the shared [`crate::security`] configured by [`policy`]; the
//!   Panel Server's pages and DPWS live in [`node`] and [`web`]
//!   (docs/panel-server.md).

pub mod alarms;
pub mod commission;
pub mod datalog;
pub mod email;
pub mod gateway;
pub mod inputs;
pub mod label;
pub mod node;
pub mod ntp;
pub mod policy;
pub mod radio;
pub mod registers;
pub mod topology;
pub mod web;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fieldtwin_emulator::clock::Clock;
use fieldtwin_emulator::device::{
    BootError, Credential, Details, Device, DeviceContext, FieldAction, FieldDeviceInfo,
    ModelCommand, RtcHandle,
};
use fieldtwin_emulator::site::{
    DeviceConfig, FirmwareEdition, InstallCode, Model, Site, Subnet, Topology, parse_rf_id,
};
use fieldtwin_emulator::storage::Nv;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::field::{self, FieldDevice, GatewayCopy, Spec};
use crate::proto::modbus::server::Handler;
use crate::proto::modbus::{Exception, Request, Response, function};
use crate::serial_bus::Line;
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
    /// Protect Plus (on by default, devices.md §1.5): a device with a
    /// 16-character RF-ID is discovered only by its install code; off,
    /// every device is discovered automatically.
    #[serde(default = "yes")]
    pub protect_plus: bool,
    /// NTP server; `None`: date and time set manually.
    #[serde(default)]
    pub ntp_server: Option<String>,
    /// Wireless devices paired with the gateway (the device table at 501+
    /// and the unit ids it routes); empty after a factory reset.
    #[serde(default)]
    pub pairing: Vec<WirelessSlot>,
    /// Install codes the administrator entered (selective discovery of
    /// Protect Plus devices, [`commission`]): such a device is paired
    /// when its join request over the radio carries the right code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub install_codes: Vec<commission::Selective>,
    /// The Modbus topology behind the gateway ([`topology`]): the site's
    /// at commissioning, empty after a factory reset. `None` only in
    /// settings saved before it was kept in NV memory (the boot fills in
    /// the site's).
    #[serde(default)]
    pub modbus_devices: Option<Vec<topology::Downstream>>,
}

impl Settings {
    /// The configured Modbus devices.
    pub fn modbus_devices(&self) -> &[topology::Downstream] {
        self.modbus_devices.as_deref().unwrap_or(&[])
    }
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
    /// The product label (serial number, device code of the QR code).
    pub label: label::Label,
    defaults: Settings,
    wireless: Vec<WirelessSlot>,
    /// The install code of each wireless device of `wireless`.
    install_codes: Vec<InstallCode>,
    serial_specs: Vec<Spec>,
    wireless_specs: Vec<Spec>,
    line_cfg: fieldtwin_emulator::site::SerialLineConfig,
    serial_pty: Option<String>,
    /// The subnet of ETH2's segment (separated topology): Modbus TCP
    /// devices there are reached from ETH2, others from ETH1.
    eth2_subnet: Option<Subnet>,
    /// DI1/DI2 (L models); `None` on models without digital inputs.
    inputs: Option<Arc<inputs::Bank>>,
    /// Data logging of the field devices (site file), if configured.
    datalog: Option<fieldtwin_emulator::site::DatalogConfig>,
    /// Publication of the data log (site file), if configured.
    publication: Option<fieldtwin_emulator::site::PublicationConfig>,
    /// Alarm email settings and threshold rules (site file; [`email`]).
    email: Option<fieldtwin_emulator::site::EmailConfig>,
    alarm_rules: Vec<fieldtwin_emulator::site::AlarmRule>,
    /// The site's Modbus TCP devices: id, model, address (for the
    /// dashboard, which names a configured target by them).
    site_tcp: Vec<(String, String, std::net::Ipv4Addr)>,
    /// The Modbus TCP targets of the running boot's routes.
    tcp_live: std::sync::Mutex<Vec<Arc<gateway::TcpTarget>>>,
    fields: OnceLock<Fields>,
    /// The running boot, for commands that change settings.
    current: std::sync::Mutex<std::sync::Weak<node::Node>>,
    /// Initial web password (printed at start; changed on the Users page).
    default_password: String,
    /// The shared security surface's rules for this device (PBKDF2
    /// iterations and TLS 1.3 from the site file).
    security: crate::security::Config,
    /// Where its radios are on the site's medium.
    placement: radio::Placement,
    /// Wi-Fi infrastructure mode: the network its station joins.
    wifi_client: Option<fieldtwin_emulator::site::WifiClientConfig>,
}

/// The field devices behind a Panel Server, created at first boot.
struct Fields {
    line: Arc<Line>,
    wireless: Vec<Arc<FieldDevice>>,
    /// The coordinator radio on the site's medium (`None` if it could not
    /// join it).
    radio: Option<Arc<radio::Coordinator>>,
}

impl Fields {
    fn find(&self, id: &str) -> Option<&Arc<FieldDevice>> {
        self.line
            .slaves
            .iter()
            .chain(self.wireless.iter())
            .find(|d| d.id == id)
    }
}

impl PanelServer {
    pub fn new(site: &Site, dev: &DeviceConfig) -> Self {
        let cfg = dev.panel_server.clone().unwrap_or_default();
        let topology = cfg.topology;
        let mut defaults = Settings {
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
            rstp: cfg.rstp,
            wifi: WifiSettings::default(),
            ieee802154: false,
            protect_plus: true,
            ntp_server: cfg.ntp_server.map(|ip| ip.to_string()),
            pairing: Vec::new(),
            install_codes: Vec::new(),
            modbus_devices: None,
        };
        let mut next_unit = FIRST_WIRELESS_UNIT;
        let taken: Vec<u8> = cfg
            .serial
            .iter()
            .chain(cfg.wireless.iter())
            .filter_map(|f| f.unit)
            .chain(cfg.modbus_tcp.iter().map(|t| t.unit))
            .collect();
        let wireless: Vec<WirelessSlot> = cfg
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
        let spec = |f: &fieldtwin_emulator::site::FieldDeviceConfig, unit: u8| Spec {
            id: f.id.clone(),
            model: f.model.clone(),
            unit,
            rf_id: f.rf_id.as_deref().and_then(parse_rf_id),
            profile: f.profile.clone(),
            powered: f.powered,
            seed: field::seed_of(site.site.seed, &f.id),
            day0: 0.0,
        };
        let serial_specs = cfg
            .serial
            .iter()
            .map(|f| spec(f, f.unit.unwrap_or(1)))
            .collect();
        let wireless_specs = cfg
            .wireless
            .iter()
            .zip(&wireless)
            .map(|(f, slot): (_, &WirelessSlot)| spec(f, slot.unit))
            .collect();
        // The site's Modbus devices are the commissioning topology.
        let mut modbus_devices: Vec<topology::Downstream> = cfg
            .serial
            .iter()
            .filter_map(|f| f.unit)
            .map(|unit| topology::Downstream::Serial { unit })
            .collect();
        modbus_devices.extend(cfg.modbus_tcp.iter().filter_map(|t| {
            let target = site.device(&t.device)?;
            Some(topology::Downstream::Tcp {
                unit: t.unit,
                ip: target.ip,
                port: field::tcp_meter::PORT,
            })
        }));
        defaults.modbus_devices = Some(modbus_devices);
        let eth2_subnet = cfg.eth2_segment.as_deref().and_then(|name| {
            site.segments
                .iter()
                .find(|g| g.name == name)
                .map(|g| g.subnet)
        });
        let install_codes = cfg
            .wireless
            .iter()
            .map(|w| w.install_code(site.site.seed))
            .collect();
        let site_tcp = cfg
            .modbus_tcp
            .iter()
            .filter_map(|t| {
                let d = site.device(&t.device)?;
                Some((d.id.clone(), d.model.name().to_string(), d.ip))
            })
            .collect();
        // The site's wireless devices are commissioned: paired at first
        // boot, with IEEE 802.15.4 active (a new device has it off).
        defaults.pairing = wireless
            .iter()
            .zip(&cfg.wireless)
            .filter(|(_, w)| w.is_commissioned())
            .map(|(slot, _)| *slot)
            .collect();
        defaults.ieee802154 =
            !defaults.pairing.is_empty() && dev.model.capabilities().is_some_and(|c| c.ieee802154);
        let k = site
            .devices
            .iter()
            .filter(|d| d.panel_server.is_some())
            .position(|d| d.id == dev.id)
            .unwrap_or(0);
        let ps_pos = cfg
            .position
            .unwrap_or(fieldtwin_emulator::radio::Position::new(
                100.0 * k as f64,
                0.0,
                2.0,
            ));
        let placement = radio::Placement {
            position: ps_pos,
            channel: cfg.channel.unwrap_or(11 + ((4 + 5 * k) % 16) as u8),
            devices: cfg
                .wireless
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    (
                        w.position.unwrap_or_else(|| {
                            radio::default_device_position(ps_pos, i, cfg.wireless.len())
                        }),
                        w.report_period_s.map(Duration::from_secs_f64),
                    )
                })
                .collect(),
            commissioning: cfg
                .wireless
                .iter()
                .map(|w| (w.install_code(site.site.seed), w.is_commissioned()))
                .collect(),
        };
        let label = label::Label::of(site, dev);
        Self {
            id: dev.id.clone(),
            model: dev.model,
            default_password: default_password(site, dev),
            identity: identity(dev.model, label.serial.clone()),
            label,
            defaults,
            wireless,
            install_codes,
            serial_specs,
            wireless_specs,
            line_cfg: cfg.serial_line,
            serial_pty: cfg.serial_pty.clone(),
            eth2_subnet,
            inputs: dev
                .model
                .capabilities()
                .filter(|c| c.digital_inputs > 0)
                .map(|_| Arc::new(inputs::Bank::new(&cfg.digital_input))),
            site_tcp,
            datalog: cfg.datalog.clone(),
            publication: cfg.publication.clone(),
            email: cfg.email.clone(),
            alarm_rules: cfg.alarm.clone(),
            tcp_live: Default::default(),
            fields: OnceLock::new(),
            current: Default::default(),
            security: policy::config(
                cfg.pbkdf2_iterations
                    .unwrap_or(crate::security::password::DEFAULT_ITERATIONS),
                cfg.tls13,
            ),
            placement,
            wifi_client: cfg.wifi_client.clone(),
        }
    }

    /// Factory settings of a device running firmware `version`: the site's
    /// settings, with Wi-Fi, its access point and RSTP as the model and that
    /// firmware's edition have them (a Wired by Design model has no Wi-Fi;
    /// firmware before the EN-10 edition has Wi-Fi off, no access point and
    /// no RSTP). The access point's password is the device code.
    pub(crate) fn factory_settings(&self, version: &str) -> Settings {
        let mut s = self.defaults.clone();
        s.firmware = version.to_string();
        let edition = FirmwareEdition::of(version);
        let caps = self.model.capabilities();
        let wifi = caps.is_some_and(|c| c.wifi);
        s.wifi = WifiSettings {
            enabled: wifi && edition.wifi_on_by_default(),
            access_point: wifi && edition.has_access_point(),
            ap_password: Some(self.label.device_code.clone()),
        };
        s.rstp = s.rstp && caps.is_some_and(|c| c.rstp()) && edition.has_rstp();
        s
    }

    /// Creates the field devices (once: they outlive reboots of the Panel Server).
    fn fields(&self, ctx: &DeviceContext) -> &Fields {
        self.fields.get_or_init(|| {
            let day0 = field::day0(&ctx.clock);
            let copy = GatewayCopy {
                product_id: self.identity.product_id,
                commercial_reference: self.identity.commercial_reference.clone(),
                firmware: self.defaults.firmware.clone(),
                serial: self.identity.serial.clone(),
                model: self.identity.product_model.clone(),
            };
            let make = |specs: &[Spec]| -> Vec<Arc<FieldDevice>> {
                specs
                    .iter()
                    .filter_map(|s| {
                        let mut s = s.clone();
                        s.day0 = day0;
                        FieldDevice::new(&s, copy.clone()).map(Arc::new)
                    })
                    .collect()
            };
            let wireless = make(&self.wireless_specs);
            let radio = match radio::attach(
                &ctx.radio,
                &self.id,
                &self.placement,
                &wireless,
                &copy,
                &ctx.events,
                &ctx.clock,
            ) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!("{}: its radio could not join the medium: {e}", self.id);
                    None
                }
            };
            Fields {
                line: Arc::new(Line::new(&self.line_cfg, make(&self.serial_specs))),
                wireless,
                radio,
            }
        })
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

/// The "additional product capability" text ([NF] wording): the model's
/// field interfaces from the interface matrix, at most 32 characters.
fn additional_capability(model: Model) -> String {
    let Some(c) = model.capabilities() else {
        return String::new();
    };
    let mut v = Vec::new();
    if c.ieee802154 {
        v.push("IEEE 802.15.4".to_string());
    }
    if c.modbus_sl {
        v.push("Modbus-SL".to_string());
    }
    if c.digital_inputs > 0 {
        v.push(format!("{} DI", c.digital_inputs));
    }
    v.join(", ")
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
        additional_capability: additional_capability(model),
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
        let firmware = self
            .running()
            .map_or_else(|| self.defaults.firmware.clone(), |n| n.settings().firmware);
        let access_point = self.model.capabilities().is_some_and(|c| c.wifi)
            && FirmwareEdition::of(&firmware).has_access_point();
        let code = &self.label.device_code;
        let mut v = vec![
            Credential {
                service: "modbus".into(),
                user: "-".into(),
                password: "- (Modbus TCP has no authentication)".into(),
            },
            Credential {
                service: "https".into(),
                user: policy::WEB_USER.into(),
                password: format!(
                    "{} (until changed on the Users page)",
                    self.default_password
                ),
            },
            Credential {
                service: "qr-label".into(),
                user: format!("S/N {}", self.label.serial),
                password: format!("device code {code}"),
            },
        ];
        if access_point {
            v.push(Credential {
                service: "wifi-ap".into(),
                user: self.label.ssid(),
                password: format!("{code} (the device code, until changed on the Wi-Fi page)"),
            });
        }
        v
    }

    fn survives_factory_reset(&self) -> &'static [&'static str] {
        // The installed firmware stays: a factory reset erases settings and
        // data, not the firmware (no silent revert to the site's version).
        // The field devices' energy counters are kept in this device's NV
        // store by the twin, but they are the meters' own memory: a reset
        // of the Panel Server does not zero a meter's index.
        &[
            node::WIRELESS_OFF_KEY,
            node::WIFI_OFF_KEY,
            node::IEEE802154_OFF_KEY,
            node::COMMISSIONED_KEY,
            crate::security::firmware::IMAGE_KEY,
            field::SAVED_KEY,
        ]
    }

    fn boot(self: Arc<Self>, ctx: DeviceContext) -> BoxFuture<'static, Result<(), BootError>> {
        async move {
            let first_boot = self.fields.get().is_none();
            let fields = self.fields(&ctx);
            let all: Vec<Arc<FieldDevice>> = fields
                .line
                .slaves
                .iter()
                .chain(&fields.wireless)
                .cloned()
                .collect();
            field::persist(&ctx, all, first_boot);
            if let Some(path) = &self.serial_pty {
                let pty = crate::serial_bus::Pty::open(path)
                    .map_err(|e| BootError::Other(e.to_string()))?;
                ctx.spawn(crate::serial_bus::serve_pty(
                    fields.line.clone(),
                    ctx.clock.clone(),
                    pty,
                ));
            }
            node::run(self, ctx).await
        }
        .boxed()
    }

    fn model_command_async(
        self: Arc<Self>,
        cmd: ModelCommand,
        _now: Duration,
    ) -> BoxFuture<'static, Result<(), String>> {
        async move {
            let ModelCommand::Commission {
                op,
                rf_id,
                install_code,
            } = cmd
            else {
                return Err(format!(
                    "{} is a Panel Server; it takes radio_commission, not {}",
                    self.id,
                    cmd.name()
                ));
            };
            if !self.model.capabilities().is_some_and(|c| c.ieee802154) {
                return Err(format!(
                    "{} is a {} without IEEE 802.15.4 radio (Wired by Design); it has no wireless devices to commission",
                    self.id,
                    self.model.name()
                ));
            }
            let node = self
                .running()
                .ok_or_else(|| format!("{} is off; power it on before commissioning", self.id))?;
            node.commission(op, rf_id.as_deref(), install_code.as_deref())
                .await
                .map(|_| ())
        }
        .boxed()
    }

    fn set_modbus_service<'a>(
        &'a self,
        interface: &'a str,
        enabled: bool,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let off = || {
                format!(
                    "{} is off; power it on before changing its Modbus service",
                    self.id
                )
            };
            let node = self
                .current
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .upgrade()
                .ok_or_else(off)?;
            if node.ctx.power_lost().is_cancelled() {
                return Err(off());
            }
            let mut settings = node.settings();
            match interface {
                "eth1" => settings.modbus.eth1 = enabled,
                "eth2" if self.model.has_two_ethernet_ports() => settings.modbus.eth2 = enabled,
                "eth2" => {
                    return Err(format!(
                        "{} has one Ethernet port; use eth1 or wifi",
                        self.model.name()
                    ));
                }
                "wifi" if !self.model.capabilities().is_some_and(|c| c.wifi) => {
                    return Err(format!(
                        "{} is a Wired by Design model without Wi-Fi; use eth1 or eth2",
                        self.model.name()
                    ));
                }
                "wifi" if enabled && node.wifi_permanently_off() => {
                    return Err(format!(
                        "Wi-Fi is permanently deactivated on {}; Modbus cannot be activated on it",
                        self.id
                    ));
                }
                "wifi" => settings.modbus.wifi = enabled,
                other => return Err(format!("no interface {other:?}; use eth1, eth2 or wifi")),
            }
            node.apply_audited(
                settings,
                format!(
                    "Modbus TCP service {} on {interface} (control API)",
                    if enabled { "activated" } else { "deactivated" }
                ),
            )
            .await
            .map_err(|e| e.to_string())
        }
        .boxed()
    }
    fn details(&self, nv: &Nv, clock: &Clock) -> Details {
        let (lockout, audit_tail) =
            crate::security::details(nv, &policy::POLICY.lockout, clock.utc_now());
        let mut extra = std::collections::BTreeMap::new();
        if self.datalog.is_some() || datalog::setup(nv).logging.is_some() {
            let ids: Vec<String> = self
                .serial_specs
                .iter()
                .chain(&self.wireless_specs)
                .map(|s| s.id.clone())
                .collect();
            extra.insert("datalog".to_string(), datalog::details(nv, &ids));
        }
        if let Some(r) = self.radio_details() {
            extra.insert("radio".to_string(), r);
        }
        Details {
            field_devices: self.field_devices(nv, clock),
            web_lockout: Some(lockout),
            audit_tail,
            extra,
        }
    }

    fn field_command(&self, field: &str, action: FieldAction, now: Duration) -> Result<(), String> {
        if let FieldAction::DigitalInput { closed, pulses } = action {
            return self.digital_input(field, closed, pulses, now);
        }
        let ids = || {
            self.serial_specs
                .iter()
                .chain(&self.wireless_specs)
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let fields = self.fields.get().ok_or_else(|| {
            format!(
                "{} has not booted yet; power it on before acting on its field devices",
                self.id
            )
        })?;
        let dev = fields.find(field).ok_or_else(|| {
            format!(
                "{} has no field device {field:?}; it has: {}",
                self.id,
                ids()
            )
        })?;
        let t = now.as_secs_f64();
        match action {
            FieldAction::Power { on } => dev.set_power(t, on),
            FieldAction::Radio { in_contact } => {
                if dev.kind == field::Kind::Meter {
                    return Err(format!(
                        "{field} is a serial device; only wireless devices take radio commands"
                    ));
                }
                self.move_out_of_range(fields, field, in_contact)?;
            }
            FieldAction::Responsive { responsive } => dev.set_responsive(responsive)?,
            FieldAction::Force { register, force } => dev.force(t, register, force)?,
            FieldAction::DigitalInput { .. } => unreachable!("handled above"),
            FieldAction::Cellular { .. } => {
                return Err(format!(
                    "{} has no cellular modem; cellular commands are for Data Loggers",
                    self.id
                ));
            }
        }
        Ok(())
    }
}

impl PanelServer {
    /// The `field_radio` shortcut: moves wireless device `field`'s radio
    /// 10 km away (out of range) or back to its place; the Panel Server
    /// notices at its next report or after its timeout.
    fn move_out_of_range(
        &self,
        fields: &Fields,
        field: &str,
        in_contact: bool,
    ) -> Result<(), String> {
        let c = fields
            .radio
            .as_ref()
            .ok_or_else(|| format!("{} has no radio on the medium", self.id))?;
        let i = self
            .wireless_specs
            .iter()
            .position(|s| s.id == field)
            .ok_or_else(|| format!("{field} is not a wireless device of {}", self.id))?;
        let home = self.placement.devices.get(i).map_or_else(
            || {
                radio::default_device_position(
                    self.placement.position,
                    i,
                    self.wireless_specs.len(),
                )
            },
            |d| d.0,
        );
        let pos = if in_contact {
            home
        } else {
            fieldtwin_emulator::radio::Position::new(home.x + 10_000.0, home.y, home.z)
        };
        let id =
            fieldtwin_emulator::radio::phy::radio_id(&radio::device_radio_name(&self.id, field));
        c.air()
            .medium()
            .set_position(id, pos)
            .map_err(|e| e.to_string())
    }

    /// Applies the radio side of `settings` (receiver on or off, paired
    /// devices) at virtual time `now`; `boot`: the devices are presumed
    /// connected as of now.
    pub(crate) fn radio_configure(
        &self,
        settings: &Settings,
        permanently_off: bool,
        now: Duration,
        boot: bool,
    ) {
        let Some(c) = self.fields.get().and_then(|f| f.radio.clone()) else {
            return;
        };
        let listening = settings.ieee802154 && !permanently_off;
        let paired: Vec<u64> = settings.pairing.iter().map(|p| p.rf_id).collect();
        for p in &settings.pairing {
            c.adopt(p.rf_id, p.unit);
        }
        c.set_protect_plus(settings.protect_plus);
        c.configure(
            &paired,
            &commission::codes(&settings.install_codes),
            listening,
            now,
            boot,
        );
    }

    /// The Panel Server lost power: its receiver stops.
    pub(crate) fn radio_power_off(&self) {
        if let Some(c) = self.fields.get().and_then(|f| f.radio.clone()) {
            c.power_off();
        }
    }

    /// Whether paired device `rf_id` is connected (its reports arrive).
    pub(crate) fn wireless_connected(&self, rf_id: u64) -> bool {
        self.coordinator().is_some_and(|c| {
            c.table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .link(rf_id)
                .is_some_and(|l| l.connected)
        })
    }

    /// RF-IDs heard that are not paired.
    pub(crate) fn wireless_discovered(&self) -> Vec<radio::Discovered> {
        self.coordinator().map_or_else(Vec::new, |c| {
            c.table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .discovered
                .clone()
        })
    }

    /// The coordinator, once the Panel Server has booted.
    pub(crate) fn coordinator(&self) -> Option<Arc<radio::Coordinator>> {
        self.fields.get().and_then(|f| f.radio.clone())
    }
}

/// NV key of the digital inputs' counters.
pub const INPUTS_KEY: &str = "digital_inputs";

impl PanelServer {
    /// The `DigitalInput` command: the contact on `input` ("DI1"/"DI2")
    /// closes or opens, or gives `pulses` pulses.
    fn digital_input(
        &self,
        input: &str,
        closed: Option<bool>,
        pulses: u32,
        now: Duration,
    ) -> Result<(), String> {
        let bank = self.inputs.as_ref().ok_or_else(|| {
            format!(
                "{} is a {} without digital inputs; DI1 and DI2 exist on {}",
                self.id,
                self.model.name(),
                fieldtwin_emulator::site::Capabilities::models_with_digital_inputs()
            )
        })?;
        let n = match input.to_ascii_uppercase().as_str() {
            "DI1" | "1" => 1,
            "DI2" | "2" => 2,
            other => return Err(format!("no digital input {other:?}; use DI1 or DI2")),
        };
        if closed.is_none() && pulses == 0 {
            return Err("say what happens: \"closed\": true|false and/or \"pulses\": N".into());
        }
        if pulses > 0 {
            bank.add_pulses(n, pulses, now)?;
        }
        if let Some(high) = closed {
            bank.set_level(n, high, now)?;
        }
        if let Some(node) = self.running() {
            let counters = bank.counters(now, false);
            node.ctx
                .nv
                .put(INPUTS_KEY, &counters)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The running boot, if the device is on.
    fn running(&self) -> Option<Arc<node::Node>> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade()
            .filter(|n| !n.ctx.power_lost().is_cancelled())
    }

    /// Boot: the digital inputs' counters from NV memory, counting from now;
    /// saved again when this boot ends (power-off, reboot).
    fn start_inputs(&self, node: &Arc<node::Node>) -> Result<(), BootError> {
        let Some(bank) = self.inputs.clone() else {
            return Ok(());
        };
        let ctx = &node.ctx;
        bank.restore(ctx.nv.get(INPUTS_KEY)?, ctx.clock.now());
        let (token, ctx2) = (node.boot_token(), ctx.clone());
        ctx.spawn_orderly(node.boot_tracker().track_future(async move {
            token.cancelled().await;
            let counters = bank.counters(ctx2.clock.now(), true);
            if let Err(e) = ctx2.nv.put(INPUTS_KEY, &counters) {
                tracing::error!("{}: saving the digital inputs failed: {e}", ctx2.id);
            }
        }));
        Ok(())
    }

    /// The Modbus handler of one boot (started by [`node`]): unit 255 and the
    /// gateway routes to the field devices created in [`Device::boot`].
    fn modbus_handler(
        &self,
        ctx: &DeviceContext,
        settings: &Settings,
        datetime_audit: DateTimeAudit,
    ) -> Arc<dyn Handler> {
        let fields = self.fields(ctx);
        let paired =
            |d: &Arc<FieldDevice>| settings.pairing.iter().any(|p| Some(p.rf_id) == d.rf_id);
        let tcp: Vec<Arc<gateway::TcpTarget>> = settings
            .modbus_devices()
            .iter()
            .filter_map(|d| match *d {
                topology::Downstream::Tcp { unit, ip, port } => {
                    Some(Arc::new(gateway::TcpTarget::new(
                        ip.to_string(),
                        unit,
                        self.tcp_interface(ip).to_string(),
                        SocketAddr::from((ip, port)),
                    )))
                }
                topology::Downstream::Serial { .. } => None,
            })
            .collect();
        *self.tcp_live.lock().unwrap_or_else(|e| e.into_inner()) = tcp.clone();
        Arc::new(Gateway {
            registers: OwnRegisters::new(&self.identity, &settings.firmware, &settings.pairing),
            inputs: self.inputs.clone(),
            rtc: ctx.rtc.clone(),
            events: ctx.clone(),
            datetime_audit,
            router: gateway::Router {
                line: fields.line.clone(),
                wireless: match &fields.radio {
                    // The site's devices and the ones known only by their
                    // reports that the administrator added.
                    Some(c) => settings
                        .pairing
                        .iter()
                        .map(|p| c.adopt(p.rf_id, p.unit))
                        .collect(),
                    None => fields
                        .wireless
                        .iter()
                        .filter(|d| paired(d))
                        .cloned()
                        .collect(),
                },
                serial_units: settings
                    .modbus_devices()
                    .iter()
                    .filter_map(|d| match d {
                        topology::Downstream::Serial { unit } => Some(*unit),
                        topology::Downstream::Tcp { .. } => None,
                    })
                    .collect(),
                tcp,
            },
        })
    }

    /// The interface a Modbus TCP device at `ip` is reached from: ETH2
    /// when its address is on ETH2's segment, otherwise ETH1.
    fn tcp_interface(&self, ip: std::net::Ipv4Addr) -> &'static str {
        if self.eth2_subnet.is_some_and(|n| n.contains(ip)) {
            "eth2"
        } else {
            "eth1"
        }
    }

    /// The field devices for the dashboard: serial meters, Modbus TCP
    /// targets and wireless devices (connected = in radio contact and
    /// paired), with their state once the Panel Server has booted.
    fn field_devices(&self, nv: &Nv, clock: &Clock) -> Vec<FieldDeviceInfo> {
        let fields = self.fields.get();
        let live = |id: &str| fields.and_then(|f| f.find(id));
        let saved = nv.get::<Settings>(SETTINGS_KEY).ok().flatten();
        let modbus_devices = saved
            .as_ref()
            .and_then(|s| s.modbus_devices.clone())
            .or_else(|| self.defaults.modbus_devices.clone())
            .unwrap_or_default();
        let install_codes = saved
            .as_ref()
            .map(|s| s.install_codes.clone())
            .unwrap_or_default();
        let pairing = saved.map_or_else(|| self.defaults.pairing.clone(), |s| s.pairing);
        let mut out = Vec::new();
        for s in &self.serial_specs {
            let d = live(&s.id);
            // Reached when powered and configured in the topology.
            let configured =
                modbus_devices.contains(&topology::Downstream::Serial { unit: s.unit });
            out.push(FieldDeviceInfo {
                id: s.id.clone(),
                model: s.model.clone(),
                link: "serial".into(),
                unit: Some(s.unit),
                powered: d.map(|d| d.is_powered()),
                connected: d.map(|d| d.is_powered() && configured),
                ..Default::default()
            });
        }
        // The configured Modbus TCP devices, named after the site's device
        // at that address.
        let live_tcp = self
            .tcp_live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for d in &modbus_devices {
            let topology::Downstream::Tcp { unit, ip, port } = *d else {
                continue;
            };
            let known = self.site_tcp.iter().find(|(_, _, a)| *a == ip);
            let live = live_tcp.iter().find(|t| t.unit == unit);
            out.push(FieldDeviceInfo {
                id: known.map_or_else(|| ip.to_string(), |(id, _, _)| id.clone()),
                model: known.map(|(_, m, _)| m.clone()).unwrap_or_default(),
                link: "modbus_tcp".into(),
                unit: Some(unit),
                address: Some(format!("{ip}:{port} via {}", self.tcp_interface(ip))),
                connected: live.and_then(|t| t.is_connected()),
                ..Default::default()
            });
        }
        let table = self
            .coordinator()
            .map(|c| c.table.lock().unwrap_or_else(|e| e.into_inner()).clone());
        for s in &self.wireless_specs {
            let d = live(&s.id);
            let paired = pairing.iter().any(|p| Some(p.rf_id) == s.rf_id);
            let link = table
                .as_ref()
                .zip(s.rf_id)
                .and_then(|(t, r)| t.link(r).cloned());
            let connected = d.map(|d| d.in_contact() && paired);
            out.push(FieldDeviceInfo {
                id: s.id.clone(),
                model: s.model.clone(),
                link: "wireless".into(),
                unit: Some(s.unit),
                address: s.rf_id.map(|r| format!("{r:016X}")),
                powered: d.map(|d| d.is_powered()),
                connected,
                state: Some(
                    match (paired, connected) {
                        (false, _) => "not_paired",
                        (true, Some(true)) => "connected",
                        _ => "not_connected",
                    }
                    .into(),
                ),
                ..link_figures(link.as_ref(), clock)
            });
        }
        // Paired devices known only by their reports (added by RF-ID).
        let coordinator = self.coordinator();
        for p in &pairing {
            if self.wireless_specs.iter().any(|s| s.rf_id == Some(p.rf_id)) {
                continue;
            }
            let d = coordinator.as_ref().and_then(|c| c.device(p.rf_id));
            let link = table.as_ref().and_then(|t| t.link(p.rf_id).cloned());
            let connected = d.as_ref().is_some_and(|d| d.in_contact());
            out.push(FieldDeviceInfo {
                id: format!("rf-{:016X}", p.rf_id),
                model: d.as_ref().map(|d| d.model.clone()).unwrap_or_default(),
                link: "wireless".into(),
                unit: Some(p.unit),
                address: Some(format!("{:016X}", p.rf_id)),
                connected: Some(connected),
                state: Some(
                    if connected {
                        "connected"
                    } else {
                        "not_connected"
                    }
                    .into(),
                ),
                ..link_figures(link.as_ref(), clock)
            });
        }
        // Install codes entered for devices that have not joined yet.
        for c in &install_codes {
            if pairing.iter().any(|p| p.rf_id == c.rf_id) {
                continue;
            }
            let refused = table
                .as_ref()
                .is_some_and(|t| t.refused.iter().any(|r| r.rf_id == c.rf_id));
            if let Some(e) = out
                .iter_mut()
                .find(|e| e.address.as_deref() == Some(&format!("{:016X}", c.rf_id)))
            {
                e.state = Some(
                    if refused {
                        "join_refused"
                    } else {
                        "awaiting_join"
                    }
                    .into(),
                );
                continue;
            }
            out.push(FieldDeviceInfo {
                id: format!("awaiting-{:016X}", c.rf_id),
                link: "wireless".into(),
                address: Some(format!("{:016X}", c.rf_id)),
                connected: Some(false),
                state: Some(
                    if refused {
                        "join_refused"
                    } else {
                        "awaiting_join"
                    }
                    .into(),
                ),
                ..Default::default()
            });
        }
        // RF-IDs heard that are not paired: discovered, never routed.
        for d in table.iter().flat_map(|t| t.discovered.iter()) {
            out.push(FieldDeviceInfo {
                id: format!("discovered-{:016X}", d.rf_id),
                link: "wireless".into(),
                address: Some(format!("{:016X}", d.rf_id)),
                connected: Some(false),
                rssi_dbm: Some(d.rssi_dbm),
                lqi: Some(d.lqi),
                last_report: Duration::try_from_secs_f64(d.last_heard_s)
                    .ok()
                    .map(|t| clock.utc_at(t)),
                state: Some("discovered".into()),
                ..Default::default()
            });
        }
        out
    }

    /// The radio side for the dashboard: channel, PAN, position.
    fn radio_details(&self) -> Option<serde_json::Value> {
        let c = self.coordinator()?;
        let m = c.air().medium();
        let pos = m.position(c.radio)?;
        Some(serde_json::json!({
            "channel": c.channel,
            "pan_id": format!("0x{:04X}", c.pan),
            "position": pos,
            "listening": m.is_listening(c.radio),
        }))
    }

    /// The wireless devices in radio range (the site's), as slots with the
    /// unit id each gets when paired, their commercial references and
    /// install codes.
    pub(crate) fn wireless_in_range(&self) -> Vec<(WirelessSlot, String, InstallCode)> {
        let models = self.wireless_specs.iter().map(|s| s.model.clone());
        self.wireless
            .iter()
            .copied()
            .zip(models)
            .zip(self.install_codes.iter().copied())
            .map(|((slot, model), code)| (slot, model, code))
            .collect()
    }

    /// The unit id the site file gives wireless device `rf_id`, if it is
    /// one of the site's.
    pub(crate) fn site_unit(&self, rf_id: u64) -> Option<u8> {
        self.wireless
            .iter()
            .find(|s| s.rf_id == rf_id)
            .map(|s| s.unit)
    }

    /// The unit ids the site file gives its wireless devices (kept for
    /// them when other devices are added).
    pub(crate) fn site_units(&self) -> Vec<u8> {
        self.wireless.iter().map(|s| s.unit).collect()
    }

    /// The install code of the site's wireless device `rf_id`.
    pub(crate) fn site_install_code(&self, rf_id: u64) -> Option<InstallCode> {
        self.wireless
            .iter()
            .zip(&self.install_codes)
            .find(|(s, _)| s.rf_id == rf_id)
            .map(|(_, c)| *c)
    }

    /// The install codes of the site's wireless devices (device id, RF-ID,
    /// code), as their labels show them.
    pub fn install_codes(&self) -> Vec<(String, u64, InstallCode)> {
        self.wireless_specs
            .iter()
            .zip(&self.wireless)
            .zip(&self.install_codes)
            .map(|((spec, slot), code)| (spec.id.clone(), slot.rf_id, *code))
            .collect()
    }
}

/// Writes a date/time change made over Modbus to the device's audit log.
pub(crate) type DateTimeAudit = Arc<dyn Fn(String) + Send + Sync>;

/// Answers Modbus requests by unit id.
struct Gateway {
    registers: OwnRegisters,
    inputs: Option<Arc<inputs::Bank>>,
    rtc: RtcHandle,
    events: DeviceContext,
    datetime_audit: DateTimeAudit,
    router: gateway::Router,
}

impl Gateway {
    /// What changes between reads; the inputs' image only when the request
    /// reads them.
    /// What a read sees of the live registers; the RTC is read only for a
    /// read of the date/time block, the inputs only for one of theirs.
    fn live(&self, reads_datetime: bool, reads_inputs: bool) -> Live {
        let mut live = if reads_datetime {
            Live::new(self.rtc.now(), Health::Nominal)
        } else {
            Live::without_datetime(Health::Nominal)
        };
        if reads_inputs && let Some(bank) = &self.inputs {
            live.inputs = Some(bank.image(self.events.clock.now()));
        }
        live
    }

    fn own(&self, req: Request) -> Result<Response, Exception> {
        match req {
            Request::ReadHolding { addr, count } => Ok(Response::Registers {
                function: function::READ_HOLDING_REGISTERS,
                values: self.registers.read(
                    addr,
                    count,
                    &self.live(
                        registers::touches_datetime(addr, count),
                        inputs::touches(addr, count),
                    ),
                )?,
            }),
            Request::ReadScattered { addrs } => {
                let reads_datetime = addrs.iter().any(|a| registers::touches_datetime(*a, 1));
                let reads_inputs = addrs.iter().any(|a| inputs::touches(*a, 1));
                Ok(Response::Scattered {
                    values: self
                        .registers
                        .read_scattered(&addrs, &self.live(reads_datetime, reads_inputs))?,
                })
            }
            Request::WriteMultiple { addr, values }
                if inputs::touches(addr, values.len() as u16) =>
            {
                let bank = self.inputs.as_ref().ok_or(Exception::IllegalDataAddress)?;
                bank.write(addr, &values, self.events.clock.now(), self.rtc.now())?;
                let counters = bank.counters(self.events.clock.now(), false);
                self.events
                    .nv
                    .put(INPUTS_KEY, &counters)
                    .map_err(|_| Exception::ServerDeviceFailure)?;
                Ok(Response::WriteMultiple {
                    addr,
                    count: values.len() as u16,
                })
            }
            Request::WriteMultiple { addr, values } => {
                let t = self.registers.write(addr, &values)?;
                let before = self.rtc.now();
                self.rtc
                    .set(t)
                    .map_err(|_| Exception::ServerDeviceFailure)?;
                let message = format!("date/time set over Modbus from {before} to {t}");
                (self.datetime_audit)(message.clone());
                self.events.emit("datetime", message);
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
        async move {
            if unit == OWN_UNIT {
                self.own(req)
            } else {
                self.router.route(&self.events, unit, req).await
            }
        }
        .boxed()
    }
}

/// A wireless device's radio figures from its `link` (none without one):
/// the last report's RSSI and LQI, the packet error rate and when the last
/// report came (site time).
fn link_figures(link: Option<&radio::Link>, clock: &Clock) -> FieldDeviceInfo {
    let last = link.and_then(|l| l.uplink());
    FieldDeviceInfo {
        rssi_dbm: last.map(|l| l.1),
        lqi: last.map(|l| l.2),
        per: link.and_then(|l| l.per()),
        last_report: link.and_then(|l| l.last_report).map(|t| clock.utc_at(t)),
        ..Default::default()
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

    fn credential(ps: &PanelServer, service: &str) -> Option<Credential> {
        ps.credentials().into_iter().find(|c| c.service == service)
    }

    #[test]
    fn factory_settings_follow_the_model_and_the_firmware_edition() {
        let site = Site::default_site();
        let mut dev = site.device("ps1").unwrap().clone();
        let ps = PanelServer::new(&site, &dev);
        let code = ps.label.device_code.clone();
        let s = ps.factory_settings("002.002.000");
        assert!(s.wifi.enabled && s.wifi.access_point);
        assert_eq!(s.wifi.ap_password.as_deref(), Some(code.as_str()));
        let ap = credential(&ps, "wifi-ap").unwrap();
        assert_eq!(ap.user, "PAS600L-0251");
        assert!(ap.password.starts_with(&code), "{ap:?}");
        let label = credential(&ps, "qr-label").unwrap();
        assert_eq!(label.password, format!("device code {code}"));
        // The EN-08 edition's firmware: Wi-Fi off, no access point, no RSTP.
        let s = ps.factory_settings("001.008.007");
        assert!(!s.wifi.enabled && !s.wifi.access_point && !s.rstp);
        assert_eq!(s.firmware, "001.008.007");
        dev.firmware = Some("001.008.007".into());
        let old = PanelServer::new(&site, &dev);
        assert!(credential(&old, "wifi-ap").is_none());
        assert!(credential(&old, "qr-label").is_some());
        // Wired by Design: no Wi-Fi whatever the firmware; RSTP from the site.
        dev.firmware = None;
        dev.model = Model::PAS600LWD;
        let cfg = dev.panel_server.as_mut().unwrap();
        cfg.wireless.clear();
        cfg.rstp = true;
        let wd = PanelServer::new(&site, &dev);
        let s = wd.factory_settings("002.002.000");
        assert!(!s.wifi.enabled && !s.wifi.access_point && s.rstp);
        assert!(credential(&wd, "wifi-ap").is_none());
        assert_eq!(additional_capability(Model::PAS600LWD), "Modbus-SL, 2 DI");
        assert_eq!(additional_capability(Model::PAS400), "IEEE 802.15.4");
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
