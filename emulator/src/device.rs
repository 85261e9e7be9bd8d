//! Device runtime: the [`Device`] trait and the lifecycle every device goes
//! through.
//!
//! Contract:
//! - power on -> boot ([`Device::boot`]: load NV state, verify firmware, start
//!   services) -> running -> power off (every task the device spawned through
//!   its [`DeviceContext`] is cancelled and awaited, so its ports close and its
//!   volatile state is gone; NV memory and the RTC stay) -> power on again.
//!   Tasks spawned with [`DeviceContext::spawn_orderly`] see the power loss
//!   and finish (a last message, a last save) before the interfaces go down.
//!   A reboot is off then on; a factory reset wipes the NV namespace (except
//!   [`Device::survives_factory_reset`]) and boots again.
//! - Every transition is published as an [`Event`].
//! - The RTC is kept here, not in the model: it counts on its backup while the
//!   device is off and is saved in NV memory at every change.
//! - The site clock is kept with the state: [`Runtime::new`] saves it at
//!   every jump, speed change and pause, and every [`CLOCK_SAVE_PERIOD`] of
//!   wall time; [`Runtime::shutdown`] saves it last. A process killed without
//!   a clean shutdown loses at most that period of virtual time (times the
//!   speed); its devices' RTCs are then treated as having lost power at the
//!   last saved site time, like hardware whose supply was cut.
//! - Services opened through [`DeviceContext::listen_tcp`] are listed while
//!   open, so the control API shows the ports that really answer.
//! - What the dashboard shows of a device beyond its lifecycle comes from
//!   the same status: [`Counter`]s a service bumps through
//!   [`DeviceContext::counter`] (e.g. `modbus_requests`), the uptime, the RTC
//!   offset from site time, and the model's [`Details`]
//!   ([`Device::details`]: field devices, web lockout, audit tail).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::attack::{Attack, AttackEnv, AttackReport};
use crate::clock::{Clock, Rtc, WeakClock};
use crate::control::{Event, EventBus};
use crate::local::{LocalPort, Transcript};
use crate::net::{BoxStream, Listener, Stack};
use crate::site::{DeviceConfig, RtcConfig, Site};
use crate::storage::{Nv, StorageError, Store};

/// Power state of a device.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Power {
    Off,
    Booting,
    On,
    /// Powered, but boot failed (e.g. firmware signature); health "Out of order".
    Failed,
}

/// Why a boot failed.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("non-volatile memory: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot open {service} on port {port}: {source}")]
    Bind {
        service: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("firmware image rejected: {0}")]
    Firmware(String),
    #[error("{0}")]
    Other(String),
}

/// A network service that is open right now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceInfo {
    pub name: String,
    /// Interface name (`eth1`, `eth2`, ...).
    pub interface: String,
    pub protocol: String,
    /// Port of the service on the device.
    pub port: u16,
    /// `host:port` a client uses (after any host-mode port offset).
    pub address: String,
}

/// A login a user of the site needs (printed at start, listed by the API).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Credential {
    pub service: String,
    pub user: String,
    pub password: String,
}

/// A device model: configuration plus behaviour.
pub trait Device: Send + Sync + 'static {
    fn id(&self) -> &str;
    /// Commercial reference or model name.
    fn model(&self) -> &str;
    /// Logins printed at start.
    fn credentials(&self) -> Vec<Credential> {
        Vec::new()
    }
    /// NV keys that a factory reset keeps.
    fn survives_factory_reset(&self) -> &'static [&'static str] {
        &[]
    }
    /// Boots: loads NV state, verifies firmware and starts the services as
    /// tasks of `ctx`. Returns once the device is running.
    fn boot(self: Arc<Self>, ctx: DeviceContext) -> BoxFuture<'static, Result<(), BootError>>;
    /// Acts on field device `field` behind this device (a serial meter or a
    /// wireless sensor of a Panel Server) at virtual time `now`. The error
    /// says what was wrong and what is allowed.
    fn field_command(&self, field: &str, action: FieldAction, now: Duration) -> Result<(), String> {
        let _ = (action, now);
        Err(format!(
            "device {} has no field device {field:?} (it has no field devices)",
            self.id()
        ))
    }
    /// What the dashboard shows of this device beyond its lifecycle (field
    /// devices, web lockout, audit tail), read from its NV memory `nv` and
    /// its state at the time of `clock`. Called while the device is on or
    /// off, so it reads what survives power loss from `nv`.
    fn details(&self, nv: &Nv, clock: &Clock) -> Details {
        let _ = (nv, clock);
        Details::default()
    }
    /// Carries out a model-specific command (plugging an EV, cutting an
    /// EVCE's upstream) at virtual time `now`; by default the model says it
    /// does not support it.
    fn model_command(&self, cmd: ModelCommand, now: Duration) -> Result<(), String> {
        let _ = now;
        Err(format!(
            "device {} is a {}, which does not support {}",
            self.id(),
            self.model(),
            cmd.name()
        ))
    }
    /// Activates or deactivates the Modbus TCP service on `interface`
    /// (`eth1`, `eth2`, `wifi`); the choice is kept in NV memory.
    fn set_modbus_service<'a>(
        &'a self,
        interface: &'a str,
        enabled: bool,
    ) -> BoxFuture<'a, Result<(), String>> {
        let _ = (interface, enabled);
        let id = self.id().to_string();
        Box::pin(async move {
            Err(format!(
                "device {id} has no Modbus TCP service to configure"
            ))
        })
    }
    /// A person at one of the device's physical, non-network ports (USB
    /// console, BLE link) does `port`; the answer is what they saw.
    fn local_port(
        self: Arc<Self>,
        port: LocalPort,
    ) -> BoxFuture<'static, Result<Transcript, String>> {
        let what = match port {
            LocalPort::Usb { .. } => "a USB console",
            LocalPort::Ble { .. } => "a BLE link",
            LocalPort::SdCard { .. } => "an SD card reader",
        };
        let msg = format!("device {} ({}) has no {what}", self.id(), self.model());
        Box::pin(async move { Err(msg) })
    }
    /// Runs `attack` from this device (a Workstation) over its own network
    /// stack; `env` says where the site's devices are.
    fn attack<'a>(
        &'a self,
        attack: Attack,
        env: AttackEnv,
    ) -> BoxFuture<'a, Result<AttackReport, String>> {
        let _ = (attack, env);
        let msg = format!(
            "device {} is a {}, not a Workstation; attacks run from a Workstation \
             (add one with the add_workstation command)",
            self.id(),
            self.model()
        );
        Box::pin(async move { Err(msg) })
    }
}

/// A command only some models understand (see [`Device::model_command`];
/// docs/control-api.md and docs/ev-charging.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelCommand {
    /// An EV is plugged into `connector` (1-based) of a charging station.
    /// `id_tag`: a badge presented at the same time (starts a transaction
    /// once authorised).
    EvPlug {
        connector: u32,
        ev: EvSpec,
        #[serde(default)]
        id_tag: Option<String>,
    },
    /// The EV on `connector` is unplugged (ends its transaction).
    EvUnplug { connector: u32 },
    /// An RFID badge is presented to the station's reader for `connector`:
    /// starts a transaction if an EV waits there, stops the running one if
    /// it is the same badge.
    Badge { connector: u32, id_tag: String },
    /// An EVCE's upstream links to its supervisions are cut (`false`) or
    /// restored (`true`).
    Upstream { connected: bool },
    /// An EVCE's load-management limit on the site meter, kW (`None`: no
    /// load management).
    SiteLimit { kw: Option<f64> },
    /// A charging station's central-system URL is repointed (`None`: back
    /// to the configured one).
    OcppUrl { url: Option<String> },
}

impl ModelCommand {
    pub fn name(&self) -> &'static str {
        match self {
            ModelCommand::EvPlug { .. } => "ev_plug",
            ModelCommand::EvUnplug { .. } => "ev_unplug",
            ModelCommand::Badge { .. } => "badge",
            ModelCommand::Upstream { .. } => "ocpp_upstream",
            ModelCommand::SiteLimit { .. } => "site_limit",
            ModelCommand::OcppUrl { .. } => "ocpp_url",
        }
    }
}

/// The EV of an [`ModelCommand::EvPlug`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvSpec {
    /// Usable battery capacity, kWh (1-200).
    #[serde(default = "ev_battery")]
    pub battery_kwh: f64,
    /// State of charge at plug-in, 0-1.
    #[serde(default = "ev_soc")]
    pub soc: f64,
    /// State of charge at which the EV stops drawing, 0-1.
    #[serde(default = "ev_target")]
    pub target_soc: f64,
    /// The on-board charger's maximum power, kW (1-350).
    #[serde(default = "ev_max_kw")]
    pub max_kw: f64,
}

impl Default for EvSpec {
    fn default() -> Self {
        Self {
            battery_kwh: ev_battery(),
            soc: ev_soc(),
            target_soc: ev_target(),
            max_kw: ev_max_kw(),
        }
    }
}

impl EvSpec {
    /// Checks the ranges; the error names the field and the allowed range.
    pub fn check(&self) -> Result<(), String> {
        let fields = [
            ("battery_kwh", self.battery_kwh, 1.0, 200.0),
            ("soc", self.soc, 0.0, 1.0),
            ("target_soc", self.target_soc, 0.0, 1.0),
            ("max_kw", self.max_kw, 1.0, 350.0),
        ];
        for (name, v, lo, hi) in fields {
            if !(lo..=hi).contains(&v) {
                return Err(format!(
                    "ev.{name}: {v} is out of range; allowed {lo} to {hi}"
                ));
            }
        }
        Ok(())
    }
}

fn ev_battery() -> f64 {
    60.0
}
fn ev_soc() -> f64 {
    0.2
}
fn ev_target() -> f64 {
    1.0
}
fn ev_max_kw() -> f64 {
    11.0
}

/// What can be done to a field device (see [`Device::field_command`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldAction {
    /// Supply (for a PowerTag: the voltage of its circuit) on or off.
    Power { on: bool },
    /// In or out of radio contact with the Panel Server (wireless devices).
    Radio { in_contact: bool },
    /// The contact wired to a digital input (`field` = `DI1`/`DI2`) closes
    /// or opens, and/or gives `pulses` whole pulses.
    DigitalInput { closed: Option<bool>, pulses: u32 },
    /// A serial device stops answering (or answers again) while it stays
    /// powered: its measurements keep running, its Modbus link is silent.
    Responsive { responsive: bool },
    /// Forces the value a register of the field device reads (`register`
    /// as numbered in its register sheet), or clears the forcing.
    Force { register: u16, force: Force },
    /// The cellular network around a Data Logger (`field` = `modem`):
    /// coverage present or lost, the received signal strength in dBm, the
    /// technology (4, 3 or 2 for 4G/3G/2G). `None` leaves a value as it is.
    Cellular {
        coverage: Option<bool>,
        signal_dbm: Option<i16>,
        generation: Option<u8>,
    },
}

/// How a forced register reads (see [`FieldAction::Force`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Force {
    /// Holds the value it read when forced (a frozen sensor).
    Stuck,
    /// The true value plus `per_hour` per hour of virtual time since forced
    /// (a drifting sensor).
    Drift { per_hour: f64 },
    /// A fixed value, in the register's unit (e.g. 1000 V: out of range).
    Value { value: f64 },
    /// Back to the true value.
    Clear,
}

/// A device's RTC, shared by its services; every change is saved to NV.
#[derive(Clone)]
pub struct RtcHandle {
    rtc: Arc<Mutex<Rtc>>,
    nv: Nv,
    clock: Clock,
}

const RTC_KEY: &str = "rtc";

impl RtcHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Rtc> {
        self.rtc.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The RTC's reading now.
    pub fn now(&self) -> DateTime<Utc> {
        self.lock().read(self.clock.utc_now())
    }

    /// The RTC's reading at site time `site`.
    pub fn read_at(&self, site: DateTime<Utc>) -> DateTime<Utc> {
        self.lock().read(site)
    }

    /// Sets the RTC (and saves it).
    pub fn set(&self, t: DateTime<Utc>) -> Result<(), StorageError> {
        let mut rtc = self.lock();
        rtc.set(self.clock.utc_now(), t);
        self.nv.put(RTC_KEY, &*rtc)
    }

    fn update(&self, f: impl FnOnce(&mut Rtc, DateTime<Utc>) -> bool) -> bool {
        let mut rtc = self.lock();
        let r = f(&mut rtc, self.clock.utc_now());
        if let Err(e) = self.nv.put(RTC_KEY, &*rtc) {
            tracing::error!("saving the RTC failed: {e}");
        }
        r
    }
}

/// What a booting device gets: its clock, memory, RTC, network and task set.
#[derive(Clone)]
pub struct DeviceContext {
    pub id: Arc<str>,
    pub clock: Clock,
    pub nv: Nv,
    pub rtc: RtcHandle,
    pub events: EventBus,
    /// Seed for this device's random choices (stable per site seed and id).
    pub seed: u64,
    /// The site's radio medium.
    pub radio: crate::radio::air::Air,
    /// The site's Wi-Fi (access points and associations).
    pub wifi: Arc<crate::wifi::Air>,
    interfaces: Arc<BTreeMap<String, Arc<dyn Stack>>>,
    services: Arc<Mutex<Vec<ServiceInfo>>>,
    counters: Counters,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// The tracker of one boot of a device that soft-reboots (see
    /// [`DeviceContext::for_boot`]).
    boot: Option<TaskTracker>,
}

impl DeviceContext {
    /// The context of one boot of a device that soft-reboots: its
    /// [`DeviceContext::power_lost`] is `token` (cancel it to end the
    /// boot), and what it spawns is tracked by `tracker` as well as by the
    /// device (a soft reboot cancels `token`, then waits for `tracker`).
    pub fn for_boot(&self, token: CancellationToken, tracker: &TaskTracker) -> DeviceContext {
        DeviceContext {
            cancel: token,
            boot: Some(tracker.clone()),
            ..self.clone()
        }
    }

    fn track<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match &self.boot {
            Some(b) => self.tracker.spawn(b.track_future(fut)),
            None => self.tracker.spawn(fut),
        };
    }

    /// The device's counter `name` (created at 0 on first use). Counters
    /// outlive reboots (they count since the site started) and are listed in
    /// the status as `counters`.
    pub fn counter(&self, name: &str) -> Counter {
        self.counters.get(name)
    }

    /// The network interface named `name` (`eth1`, `eth2`, ...).
    pub fn interface(&self, name: &str) -> Option<Arc<dyn Stack>> {
        self.interfaces.get(name).cloned()
    }

    /// Names of the device's interfaces.
    pub fn interface_names(&self) -> Vec<String> {
        self.interfaces.keys().cloned().collect()
    }

    /// Spawns a task that lives until the device loses power.
    pub fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.track(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    /// Spawns a task that watches [`DeviceContext::power_lost`] itself
    /// instead of being dropped when power goes: a power-off waits for it
    /// with the network still up, so it can say goodbye (a WS-Discovery
    /// Bye, a last NV write). It must end promptly once the token fires.
    pub fn spawn_orderly<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.track(fut);
    }

    /// A token cancelled when the device loses power.
    pub fn power_lost(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Publishes a device event.
    pub fn emit(&self, kind: &str, message: impl Into<String>) {
        self.events.send(Event::Device {
            device: self.id.to_string(),
            kind: kind.to_string(),
            message: message.into(),
        });
    }

    /// Opens TCP `port` on interface `iface` for service `name`; the service
    /// is listed while the returned listener lives.
    pub async fn listen_tcp(
        &self,
        iface: &str,
        name: &str,
        port: u16,
    ) -> Result<TrackedListener, BootError> {
        let stack = self.interface(iface).ok_or_else(|| {
            BootError::Other(format!("device {} has no interface {iface}", self.id))
        })?;
        let inner = stack
            .listen_tcp(port)
            .await
            .map_err(|source| BootError::Bind {
                service: name.to_string(),
                port,
                source,
            })?;
        let info = ServiceInfo {
            name: name.to_string(),
            interface: iface.to_string(),
            protocol: "tcp".into(),
            port,
            address: inner.local_addr().to_string(),
        };
        self.services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(info.clone());
        Ok(TrackedListener {
            inner,
            info,
            services: self.services.clone(),
        })
    }
}

/// A listener that is listed as a service while it lives.
pub struct TrackedListener {
    inner: Box<dyn Listener>,
    info: ServiceInfo,
    services: Arc<Mutex<Vec<ServiceInfo>>>,
}

impl TrackedListener {
    pub async fn accept(&mut self) -> std::io::Result<(BoxStream, SocketAddr)> {
        self.inner.accept().await
    }

    pub fn info(&self) -> &ServiceInfo {
        &self.info
    }
}

impl Drop for TrackedListener {
    fn drop(&mut self) {
        let mut s = self.services.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = s.iter().position(|x| *x == self.info) {
            s.remove(i);
        }
    }
}

// ---- What the dashboard reads (counters, health, details) ----

/// A monotonic event counter of a device (cheap to clone and bump).
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters of one device, by name.
#[derive(Clone, Debug, Default)]
struct Counters(Arc<Mutex<BTreeMap<String, Counter>>>);

impl Counters {
    fn get(&self, name: &str) -> Counter {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    fn values(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, c)| (k.clone(), c.get()))
            .collect()
    }
}

/// Health of a device as the dashboard shows it, derived from its power
/// state (the Panel Server's health register says the same: "Nominal"
/// when running, "Out of order" when the boot failed).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Nominal,
    /// Powered and booting.
    Starting,
    /// Powered but the boot failed.
    OutOfOrder,
    /// Not powered.
    #[default]
    Off,
}

impl From<Power> for Health {
    fn from(p: Power) -> Self {
        match p {
            Power::On => Health::Nominal,
            Power::Booting => Health::Starting,
            Power::Failed => Health::OutOfOrder,
            Power::Off => Health::Off,
        }
    }
}

/// What a model reports of itself for the dashboard
/// (`GET /api/v1/devices/{id}` only; docs/control-api.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Details {
    /// Devices behind this one (serial, Modbus TCP, wireless).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub field_devices: Vec<FieldDeviceInfo>,
    /// The web login's lockout state, for devices with web pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_lockout: Option<LockoutInfo>,
    /// The newest audit entries, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit_tail: Vec<AuditInfo>,
    /// Anything else a model wants to show, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// How many audit entries [`Details::audit_tail`] carries at most.
pub const AUDIT_TAIL: usize = 20;

/// One field device behind a device.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FieldDeviceInfo {
    pub id: String,
    pub model: String,
    /// `serial`, `modbus_tcp` or `wireless`.
    pub link: String,
    /// Modbus unit id through the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<u8>,
    /// Network address (Modbus TCP) or RF-ID (wireless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Supplied (for a PowerTag: its circuit has voltage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub powered: Option<bool>,
    /// In contact with the gateway (wireless: radio contact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    /// Received signal strength, dBm (wireless, once the radio reports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rssi_dbm: Option<f64>,
    /// Link quality indicator 0-255 (wireless, once the radio reports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lqi: Option<u8>,
    /// Packet error rate 0-1 over the gateway's window (wireless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<f64>,
    /// Site time of the last radio report received (wireless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report: Option<DateTime<Utc>>,
    /// Link state as the gateway shows it (wireless): `connected`,
    /// `not_connected`, or `discovered` (heard, not paired, never routed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// Lockout state of a web login.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LockoutInfo {
    /// Consecutive failures counted toward the next lock.
    pub failures: u32,
    /// Failures that lock the login (the threshold now).
    pub threshold: u32,
    /// Locks since the last successful login.
    pub locks: u32,
    /// End of the lock in force (site time), if locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<DateTime<Utc>>,
}

/// One audit-log entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuditInfo {
    /// RTC time of the entry.
    pub time: DateTime<Utc>,
    pub kind: String,
    pub detail: String,
}

// ---- end of what the dashboard reads ----

/// What the control API shows of a device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceStatus {
    pub id: String,
    pub model: String,
    pub power: Power,
    /// Interface name -> IPv4 address.
    pub addresses: BTreeMap<String, String>,
    pub services: Vec<ServiceInfo>,
    pub rtc: Option<DateTime<Utc>>,
    pub credentials: Vec<Credential>,
    /// Why the last boot failed, while `power` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Interface name -> segment of the site file.
    #[serde(default)]
    pub segments: BTreeMap<String, String>,
    #[serde(default)]
    pub health: Health,
    /// Virtual seconds since power-on; `None` while off.
    #[serde(default)]
    pub uptime_s: Option<f64>,
    /// RTC minus site time now, seconds (offset plus accumulated drift).
    #[serde(default)]
    pub rtc_offset_s: Option<f64>,
    /// Counters of the device's services since the site started (e.g.
    /// `modbus_requests`).
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// The model's details (only in `GET /api/v1/devices/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
}

struct Running {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

struct Lifecycle {
    power: Power,
    running: Option<Running>,
    failure: Option<String>,
}

struct Slot {
    device: Arc<dyn Device>,
    nv: Nv,
    rtc: RtcHandle,
    interfaces: Arc<BTreeMap<String, Arc<dyn Stack>>>,
    services: Arc<Mutex<Vec<ServiceInfo>>>,
    seed: u64,
    state: tokio::sync::Mutex<Lifecycle>,
    power: Mutex<Power>,
    counters: Counters,
    /// Virtual time of the last power-on, while powered.
    powered_at: Mutex<Option<Duration>>,
    segments: Mutex<BTreeMap<String, String>>,
}

/// Errors of lifecycle commands.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no device {0:?}; GET /api/v1/devices lists them")]
    UnknownDevice(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A request that cannot be carried out as asked (the message says why).
    #[error("{0}")]
    Refused(String),
}

/// Everything a device needs to be added to a [`Runtime`].
pub struct DeviceSetup {
    pub device: Arc<dyn Device>,
    pub interfaces: BTreeMap<String, Arc<dyn Stack>>,
    pub rtc: RtcConfig,
    pub seed: u64,
}

/// Builds the model of a site device (the binary wires `models::build`).
pub type ModelBuilder = Arc<dyn Fn(&Site, &DeviceConfig) -> Arc<dyn Device> + Send + Sync>;

/// What the runtime needs to add devices while the site runs.
pub struct Provisioner {
    pub site: Site,
    pub build: ModelBuilder,
}

/// All devices of a site and their lifecycles.
pub struct Runtime {
    clock: Clock,
    store: Store,
    events: EventBus,
    retention: Duration,
    slots: std::sync::RwLock<BTreeMap<String, Arc<Slot>>>,
    network: Option<Arc<crate::net::switch::Network>>,
    provisioner: Option<Provisioner>,
    /// Devices added while running: site address -> id.
    added: Mutex<BTreeMap<std::net::Ipv4Addr, String>>,
    /// The site's radio medium.
    radio: crate::radio::air::Air,
    /// The site's Wi-Fi.
    wifi: Arc<crate::wifi::Air>,
}

/// Wall time between two saves of the site clock while nothing changes it.
pub const CLOCK_SAVE_PERIOD: Duration = Duration::from_secs(1);

/// Saves the site clock at every change and every [`CLOCK_SAVE_PERIOD`].
async fn keep_clock(
    store: Store,
    clock: WeakClock,
    mut changed: tokio::sync::watch::Receiver<u64>,
) {
    loop {
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(CLOCK_SAVE_PERIOD) => {}
        }
        let Some(saved) = clock.upgrade().map(|c| c.saved()) else {
            return;
        };
        if let Err(e) = store.save_clock_async(saved).await {
            tracing::error!("saving the site clock failed: {e}");
        }
    }
}

impl Runtime {
    /// A runtime of no devices yet. Inside a tokio runtime it starts saving
    /// the clock in `store` (see the module contract).
    pub fn new(clock: Clock, store: Store, events: EventBus, retention: Duration) -> Self {
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(keep_clock(
                store.clone(),
                clock.downgrade(),
                clock.changed(),
            ));
        }
        let radio = crate::radio::air::Air::new(&clock, 0);
        Self {
            radio,
            clock,
            store,
            retention,
            slots: std::sync::RwLock::new(BTreeMap::new()),
            network: None,
            provisioner: None,
            added: Mutex::new(BTreeMap::new()),
            wifi: Arc::new(crate::wifi::Air::new(events.clone())),
            events,
        }
    }

    /// Attaches the switch fabric of TAP mode (for link faults).
    pub fn set_network(&mut self, net: Arc<crate::net::switch::Network>) {
        self.network = Some(net);
    }

    /// Lets the runtime add devices while it runs ([`Runtime::add_workstation`]).
    pub fn set_provisioner(&mut self, p: Provisioner) {
        self.provisioner = Some(p);
    }

    /// The switch fabric, in TAP mode.
    pub fn network(&self) -> Option<&Arc<crate::net::switch::Network>> {
        self.network.as_ref()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The site's radio medium.
    pub fn radio(&self) -> &crate::radio::air::Air {
        &self.radio
    }

    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The site's Wi-Fi (access points and associations).
    pub fn wifi(&self) -> &Arc<crate::wifi::Air> {
        &self.wifi
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Adds a device (powered off). Its RTC comes from NV memory, or starts
    /// at site time + its configured offset on first boot.
    pub fn add(&mut self, setup: DeviceSetup) -> Result<(), RuntimeError> {
        self.insert(setup)
    }

    /// [`Runtime::add`] on a running site.
    pub fn insert(&self, setup: DeviceSetup) -> Result<(), RuntimeError> {
        let id = setup.device.id().to_string();
        let nv = self.store.device(&id)?;
        let rtc = match nv.get::<Rtc>(RTC_KEY)? {
            Some(mut rtc) => {
                if !rtc.is_running_on_backup() {
                    // The last run ended without powering this device off
                    // (killed): its supply was cut when the clock was last saved.
                    let at = self
                        .store
                        .saved_clock()
                        .map_or_else(|| self.clock.utc_now(), |c| c.site_time());
                    rtc.power_lost(at);
                    nv.put(RTC_KEY, &rtc)?;
                }
                rtc
            }
            None => {
                let mut rtc = Rtc::new(
                    self.clock.utc_now(),
                    setup.rtc.offset_s,
                    setup.rtc.drift_ppm,
                );
                rtc.power_lost(self.clock.utc_now());
                nv.put(RTC_KEY, &rtc)?;
                rtc
            }
        };
        for stack in setup.interfaces.values() {
            stack.set_powered(false);
        }
        let slot = Slot {
            device: setup.device,
            rtc: RtcHandle {
                rtc: Arc::new(Mutex::new(rtc)),
                nv: nv.clone(),
                clock: self.clock.clone(),
            },
            nv,
            interfaces: Arc::new(setup.interfaces),
            services: Arc::default(),
            seed: setup.seed,
            state: tokio::sync::Mutex::new(Lifecycle {
                power: Power::Off,
                running: None,
                failure: None,
            }),
            power: Mutex::new(Power::Off),
            counters: Counters::default(),
            powered_at: Mutex::new(None),
            segments: Mutex::new(BTreeMap::new()),
        };
        self.slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::new(slot));
        Ok(())
    }

    /// Records which site segment each interface of device `id` is on
    /// (shown in its status).
    pub fn set_segments(
        &self,
        id: &str,
        segments: BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        *self
            .slot(id)?
            .segments
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = segments;
        Ok(())
    }

    fn slot(&self, id: &str) -> Result<Arc<Slot>, RuntimeError> {
        self.slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::UnknownDevice(id.to_string()))
    }

    /// Sends `action` to field device `field` behind device `id`.
    pub fn field_command(
        &self,
        id: &str,
        field: &str,
        action: FieldAction,
    ) -> Result<Result<(), String>, RuntimeError> {
        let slot = self.slot(id)?;
        Ok(slot.device.field_command(field, action, self.clock.now()))
    }

    /// Sends model command `cmd` to device `id`.
    pub fn model_command(
        &self,
        id: &str,
        cmd: ModelCommand,
    ) -> Result<Result<(), String>, RuntimeError> {
        let slot = self.slot(id)?;
        Ok(slot.device.model_command(cmd, self.clock.now()))
    }

    /// Activates or deactivates the Modbus TCP service of device `id` on `interface`.
    pub async fn set_modbus_service(
        &self,
        id: &str,
        interface: &str,
        enabled: bool,
    ) -> Result<Result<(), String>, RuntimeError> {
        let slot = self.slot(id)?;
        Ok(slot.device.set_modbus_service(interface, enabled).await)
    }

    /// Plays `port` at a local port of device `id`.
    pub async fn local_port(
        &self,
        id: &str,
        port: LocalPort,
    ) -> Result<Result<Transcript, String>, RuntimeError> {
        let device = self.slot(id)?.device.clone();
        Ok(device.local_port(port).await)
    }

    /// Runs `attack` from device `from` (a Workstation).
    pub async fn attack(
        &self,
        from: &str,
        attack: Attack,
    ) -> Result<Result<AttackReport, String>, RuntimeError> {
        let slot = self.slot(from)?;
        let env = self.attack_env();
        let device = slot.device.clone();
        Ok(device.attack(attack, env).await)
    }

    /// Where every device is, for attacks.
    pub fn attack_env(&self) -> AttackEnv {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        let devices = slots
            .iter()
            .map(|(id, s)| {
                (
                    id.clone(),
                    crate::attack::TargetInfo {
                        model: s.device.model().to_string(),
                        addresses: s
                            .interfaces
                            .iter()
                            .map(|(n, st)| (n.clone(), st.ipv4()))
                            .collect(),
                    },
                )
            })
            .collect();
        let stacks = slots
            .iter()
            .filter_map(|(id, s)| {
                s.interfaces
                    .get("eth1")
                    .or_else(|| s.interfaces.values().next())
                    .map(|st| (id.clone(), st.clone()))
            })
            .collect();
        AttackEnv {
            devices,
            stacks,
            network: self.network.clone(),
        }
    }

    /// Adds a Workstation (the attacker/engineering node) with id `id` on
    /// `segment`, at `ip` or the first free address from .200 of the
    /// segment's subnet, and powers it on. In TAP mode it gets its own MAC
    /// on the segment's switch; in host mode its own loopback address.
    pub async fn add_workstation(
        &self,
        id: &str,
        segment: &str,
        ip: Option<std::net::Ipv4Addr>,
    ) -> Result<DeviceStatus, RuntimeError> {
        let refuse = |m: String| RuntimeError::Refused(m);
        let p = self.provisioner.as_ref().ok_or_else(|| {
            refuse("this runtime cannot add devices while it runs (no site wired)".into())
        })?;
        let site = &p.site;
        let name_ok = !id.is_empty()
            && id.len() <= 32
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(refuse(format!(
                "{id:?} is not a device id; use 1-32 characters from a-z, A-Z, 0-9, '-' and '_'"
            )));
        }
        if self.slot(id).is_ok() {
            return Err(refuse(format!(
                "a device {id:?} already exists; choose another id"
            )));
        }
        let seg = site.segment(segment).ok_or_else(|| {
            refuse(format!(
                "no segment {segment:?}; the site has {}",
                site.segments
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        // Addresses in use: site devices (both interfaces), the host side,
        // devices added earlier; in host mode also their loopback images.
        let mut used: BTreeMap<std::net::Ipv4Addr, String> = BTreeMap::new();
        for d in &site.devices {
            used.insert(d.ip, d.id.clone());
            if let Some(ps) = &d.panel_server
                && let Some(ip2) = ps.eth2_ip
            {
                used.insert(ip2, d.id.clone());
            }
        }
        used.insert(site.network.host_address, "the host side".into());
        if let Some(net) = &self.network {
            for (seg, pool, _) in net.carriers() {
                for ip in pool {
                    used.insert(ip, format!("the carrier NAT pool of segment {seg}"));
                }
            }
        }
        used.extend(
            self.added
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(a, b)| (*a, b.clone())),
        );
        let host_images: BTreeMap<std::net::Ipv4Addr, String> = used
            .iter()
            .map(|(ip, who)| (crate::net::host::host_address(*ip), who.clone()))
            .collect();
        let clash = |ip: std::net::Ipv4Addr| {
            used.get(&ip).cloned().or_else(|| {
                self.network
                    .is_none()
                    .then(|| {
                        host_images
                            .get(&crate::net::host::host_address(ip))
                            .cloned()
                    })
                    .flatten()
            })
        };
        let ip = match ip {
            Some(ip) => {
                if !seg.subnet.contains(ip) {
                    return Err(refuse(format!(
                        "{ip} is outside segment {}'s subnet {}",
                        seg.name, seg.subnet
                    )));
                }
                let last = ip.octets()[3];
                if last == 0 || last == 255 {
                    return Err(refuse(format!(
                        "{ip} is a network or broadcast address; use .1 to .254"
                    )));
                }
                if let Some(who) = clash(ip) {
                    return Err(refuse(format!("{ip} is already used by {who}")));
                }
                ip
            }
            None => {
                let base = u32::from(seg.subnet.network) & !0xff;
                (200u32..=254)
                    .chain(2..200)
                    .map(|n| std::net::Ipv4Addr::from(base | n))
                    .find(|ip| seg.subnet.contains(*ip) && clash(*ip).is_none())
                    .ok_or_else(|| refuse(format!("segment {segment} has no free address left")))?
            }
        };
        let cfg = DeviceConfig {
            id: id.to_string(),
            model: crate::site::Model::Workstation,
            ip,
            segment: segment.to_string(),
            dhcp: false,
            serial: None,
            firmware: None,
            rtc: RtcConfig::default(),
            powered: true,
            profile: None,
            panel_server: None,
            datalogger: None,
            charging_station: None,
            evce: None,
        };
        let seed = crate::site::device_seed(site.site.seed, id);
        let stack: Arc<dyn Stack> = match &self.network {
            Some(net) => Arc::new(
                net.attach_device(id, "eth1", ip, false, segment, seed)
                    .map_err(|e| refuse(e.to_string()))?,
            ),
            None => Arc::new(crate::net::host::HostStack::new(
                crate::net::host::host_address(ip),
            )),
        };
        let device = (p.build)(site, &cfg);
        self.insert(DeviceSetup {
            device,
            interfaces: [("eth1".to_string(), stack)].into(),
            rtc: RtcConfig::default(),
            seed,
        })?;
        self.added
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ip, id.to_string());
        self.set_segments(id, [("eth1".to_string(), segment.to_string())].into())?;
        self.power_on(id).await?;
        self.events.send(Event::Device {
            device: id.to_string(),
            kind: "workstation".into(),
            message: format!("workstation added on segment {segment} at {ip}"),
        });
        self.status(id)
    }

    pub fn ids(&self) -> Vec<String> {
        self.slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn set_power(&self, id: &str, slot: &Slot, life: &mut Lifecycle, power: Power) {
        life.power = power;
        *slot.power.lock().unwrap_or_else(|e| e.into_inner()) = power;
        let mut at = slot.powered_at.lock().unwrap_or_else(|e| e.into_inner());
        match power {
            Power::Off => *at = None,
            _ if at.is_none() => *at = Some(self.clock.now()),
            _ => {}
        }
        drop(at);
        self.events.send(Event::Power {
            device: id.to_string(),
            power,
        });
    }

    /// Powers a device on and boots it. No-op if it is already on.
    pub async fn power_on(&self, id: &str) -> Result<Power, RuntimeError> {
        let slot = self.slot(id)?;
        let mut life = slot.state.lock().await;
        if life.power != Power::Off {
            return Ok(life.power);
        }
        if slot
            .rtc
            .update(|rtc, now| rtc.power_restored(now, self.retention))
        {
            self.events.send(Event::Device {
                device: id.to_string(),
                kind: "rtc".into(),
                message: "RTC backup ran out while off; clock restarted from the factory epoch"
                    .into(),
            });
        }
        self.set_power(id, &slot, &mut life, Power::Booting);
        for stack in slot.interfaces.values() {
            stack.set_powered(true);
        }
        let running = Running {
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        let ctx = DeviceContext {
            id: Arc::from(id),
            clock: self.clock.clone(),
            nv: slot.nv.clone(),
            rtc: slot.rtc.clone(),
            events: self.events.clone(),
            seed: slot.seed,
            radio: self.radio.clone(),
            wifi: self.wifi.clone(),
            interfaces: slot.interfaces.clone(),
            services: slot.services.clone(),
            counters: slot.counters.clone(),
            cancel: running.cancel.clone(),
            tracker: running.tracker.clone(),
            boot: None,
        };
        let outcome = slot.device.clone().boot(ctx).await;
        life.running = Some(running);
        match outcome {
            Ok(()) => {
                life.failure = None;
                self.set_power(id, &slot, &mut life, Power::On);
            }
            Err(e) => {
                tracing::warn!("{id}: boot failed: {e}");
                life.failure = Some(e.to_string());
                self.events.send(Event::BootFailed {
                    device: id.to_string(),
                    reason: e.to_string(),
                });
                self.set_power(id, &slot, &mut life, Power::Failed);
            }
        }
        Ok(life.power)
    }

    /// Cuts a device's power: its tasks end and its ports close before this
    /// returns. The RTC goes on counting on its backup.
    pub async fn power_off(&self, id: &str) -> Result<Power, RuntimeError> {
        let slot = self.slot(id)?;
        let mut life = slot.state.lock().await;
        if life.power == Power::Off {
            return Ok(Power::Off);
        }
        if let Some(running) = life.running.take() {
            running.cancel.cancel();
            running.tracker.close();
            running.tracker.wait().await;
        }
        self.wifi.device_off(id);
        for stack in slot.interfaces.values() {
            stack.set_powered(false);
        }
        slot.rtc.update(|rtc, now| {
            rtc.power_lost(now);
            false
        });
        self.set_power(id, &slot, &mut life, Power::Off);
        Ok(Power::Off)
    }

    /// Power off, then on.
    pub async fn power_cycle(&self, id: &str) -> Result<Power, RuntimeError> {
        self.power_off(id).await?;
        self.power_on(id).await
    }

    /// Wipes the device's NV memory (except what survives a reset) and boots it.
    pub async fn factory_reset(&self, id: &str) -> Result<Power, RuntimeError> {
        let slot = self.slot(id)?;
        let was_on = *slot.power.lock().unwrap_or_else(|e| e.into_inner()) != Power::Off;
        self.power_off(id).await?;
        let mut keep = vec![RTC_KEY];
        keep.extend_from_slice(slot.device.survives_factory_reset());
        slot.nv.wipe_except(&keep)?;
        self.events.send(Event::FactoryReset {
            device: id.to_string(),
        });
        if was_on {
            self.power_on(id).await
        } else {
            Ok(Power::Off)
        }
    }

    /// Powers off every device (clean shutdown), saves the clock and
    /// flushes the store.
    pub async fn shutdown(&self) -> Result<(), RuntimeError> {
        for id in self.ids() {
            self.power_off(&id).await?;
        }
        self.save_clock().await?;
        self.store.flush()?;
        Ok(())
    }

    /// Saves the site clock in the state now (durably).
    pub async fn save_clock(&self) -> Result<(), RuntimeError> {
        self.store.save_clock_async(self.clock.saved()).await?;
        Ok(())
    }

    /// The device's NV memory (for tools and tests).
    pub fn nv(&self, id: &str) -> Result<Nv, RuntimeError> {
        Ok(self.slot(id)?.nv.clone())
    }

    pub fn status(&self, id: &str) -> Result<DeviceStatus, RuntimeError> {
        let slot = self.slot(id)?;
        let power = *slot.power.lock().unwrap_or_else(|e| e.into_inner());
        let failure = slot.state.try_lock().ok().and_then(|l| l.failure.clone());
        let now = self.clock.now();
        let site_now = self.clock.utc_at(now);
        let rtc = slot.rtc.read_at(site_now);
        let uptime_s = slot
            .powered_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|at| now.saturating_sub(at).as_secs_f64());
        Ok(DeviceStatus {
            id: id.to_string(),
            model: slot.device.model().to_string(),
            power,
            addresses: slot
                .interfaces
                .iter()
                .map(|(name, s)| (name.clone(), s.ipv4().to_string()))
                .collect(),
            services: self.services_now(&slot),
            rtc: Some(rtc),
            credentials: slot.device.credentials(),
            failure,
            segments: slot
                .segments
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            health: power.into(),
            uptime_s,
            rtc_offset_s: Some((rtc - site_now).num_microseconds().unwrap_or(0) as f64 / 1e6),
            counters: slot.counters.values(),
            details: None,
        })
    }

    /// [`Runtime::status`] with the model's [`Details`].
    pub fn status_detailed(&self, id: &str) -> Result<DeviceStatus, RuntimeError> {
        let mut st = self.status(id)?;
        let slot = self.slot(id)?;
        st.details = Some(slot.device.details(&slot.nv, &self.clock));
        Ok(st)
    }

    /// The open services, each with its interface's address now (a DHCP
    /// interface opens its ports before it has a lease).
    fn services_now(&self, slot: &Slot) -> Vec<ServiceInfo> {
        let mut services = slot
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for s in &mut services {
            if let (Some(stack), Ok(addr)) = (
                slot.interfaces.get(&s.interface),
                s.address.parse::<SocketAddr>(),
            ) {
                s.address = SocketAddr::from((stack.ipv4(), addr.port())).to_string();
            }
        }
        services
    }

    pub fn statuses(&self) -> Vec<DeviceStatus> {
        self.ids()
            .iter()
            .filter_map(|id| self.status(id).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::host::HostStack;
    use futures::FutureExt;
    use std::net::Ipv4Addr;
    use tokio::io::AsyncWriteExt;

    /// A device with one TCP service that counts its boots in NV memory.
    struct Probe {
        fail: bool,
    }

    impl Device for Probe {
        fn id(&self) -> &str {
            "probe"
        }
        fn model(&self) -> &str {
            "Probe"
        }
        fn survives_factory_reset(&self) -> &'static [&'static str] {
            &["fuse"]
        }
        fn boot(self: Arc<Self>, ctx: DeviceContext) -> BoxFuture<'static, Result<(), BootError>> {
            async move {
                let boots: u32 = ctx.nv.get("boots")?.unwrap_or(0) + 1;
                ctx.nv.put("boots", &boots)?;
                if self.fail {
                    return Err(BootError::Firmware("bad signature".into()));
                }
                let mut l = ctx.listen_tcp("eth1", "echo", 0).await?;
                ctx.spawn(async move {
                    while let Ok((mut s, _)) = l.accept().await {
                        let _ = s.write_all(b"hi").await;
                    }
                });
                Ok(())
            }
            .boxed()
        }
    }

    async fn runtime(fail: bool) -> Runtime {
        let clock = Clock::start(Utc::now(), 1.0).unwrap();
        let store = Store::open(None).unwrap();
        let mut rt = Runtime::new(clock, store, EventBus::new(), Duration::from_secs(3600));
        let mut ifs: BTreeMap<String, Arc<dyn Stack>> = BTreeMap::new();
        ifs.insert(
            "eth1".into(),
            Arc::new(HostStack::new(Ipv4Addr::new(127, 77, 201, 1))),
        );
        rt.add(DeviceSetup {
            device: Arc::new(Probe { fail }),
            interfaces: ifs,
            rtc: RtcConfig::default(),
            seed: 1,
        })
        .unwrap();
        rt
    }

    #[tokio::test]
    async fn power_cycle_closes_ports_and_keeps_nv() {
        let rt = runtime(false).await;
        let mut events = rt.events().subscribe();
        assert_eq!(rt.power_on("probe").await.unwrap(), Power::On);
        let st = rt.status("probe").unwrap();
        assert_eq!(st.services.len(), 1);
        let addr: SocketAddr = st.services[0].address.parse().unwrap();
        tokio::net::TcpStream::connect(addr).await.unwrap();
        rt.power_off("probe").await.unwrap();
        assert!(rt.status("probe").unwrap().services.is_empty());
        let err = tokio::net::TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        rt.power_on("probe").await.unwrap();
        assert_eq!(
            rt.nv("probe").unwrap().get::<u32>("boots").unwrap(),
            Some(2)
        );
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            if let Event::Power { power, .. } = e {
                seen.push(power);
            }
        }
        assert_eq!(
            seen,
            vec![
                Power::Booting,
                Power::On,
                Power::Off,
                Power::Booting,
                Power::On
            ]
        );
    }

    #[tokio::test]
    async fn failed_boot_is_reported() {
        let rt = runtime(true).await;
        assert_eq!(rt.power_on("probe").await.unwrap(), Power::Failed);
        let st = rt.status("probe").unwrap();
        assert!(st.failure.unwrap().contains("bad signature"));
        assert!(matches!(
            rt.power_on("nope").await,
            Err(RuntimeError::UnknownDevice(_))
        ));
    }

    #[tokio::test]
    async fn factory_reset_wipes_all_but_kept_keys() {
        let rt = runtime(false).await;
        rt.power_on("probe").await.unwrap();
        let nv = rt.nv("probe").unwrap();
        nv.put("fuse", &true).unwrap();
        nv.append("audit", &"x").unwrap();
        rt.factory_reset("probe").await.unwrap();
        assert_eq!(nv.get::<bool>("fuse").unwrap(), Some(true));
        assert!(nv.read_log::<String>("audit").unwrap().is_empty());
        assert_eq!(nv.get::<u32>("boots").unwrap(), Some(1));
    }

    #[tokio::test]
    async fn rtc_keeps_counting_while_off() {
        let rt = runtime(false).await;
        rt.power_on("probe").await.unwrap();
        let before = rt.status("probe").unwrap().rtc.unwrap();
        rt.power_off("probe").await.unwrap();
        rt.clock().advance(Duration::from_secs(1800));
        rt.power_on("probe").await.unwrap();
        let after = rt.status("probe").unwrap().rtc.unwrap();
        assert!((after - before).num_seconds() >= 1800);
        // Longer than the retention (one hour here): the RTC restarts.
        rt.power_off("probe").await.unwrap();
        rt.clock().advance(Duration::from_secs(7200));
        rt.power_on("probe").await.unwrap();
        let t = rt.status("probe").unwrap().rtc.unwrap();
        assert!(t < crate::clock::FACTORY_EPOCH + chrono::Duration::seconds(5));
    }
}
