//! The running Panel Server: which services are up, and the operations the
//! webpages and the /api trigger on the running device (apply settings,
//! install firmware, reboot, factory reset).
//!
//! Contract (DOCA0211 "Security Features", "Disable Unused Features"):
//! - [`run`] is the boot sequence: verify the stored firmware image's
//!   Ed25519 signature (a bad one fails the boot: health "Out of order"),
//!   load or create NV settings, then start Modbus TCP (502, per
//!   interface), HTTPS (443) and DPWS (UDP 3702 + TCP metadata port) as
//!   configured. Nothing on this path hashes a password or generates a key:
//!   the web accounts and the TLS certificate of a first boot are made by
//!   their first user through [`crate::security::work`] (see
//!   [`crate::security`]), so the device answers Modbus, DPWS and the
//!   network as soon as it is powered.
//! - Every service runs under the node's generation token: a soft reboot
//!   (page, API) stops them all, closes their ports, and runs [`run`] again.
//! - [`Node::apply`] restarts only the services whose settings changed, so
//!   disabling Modbus on ETH1 closes 502 there at once; settings persist in
//!   NV under `settings`.

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldtwin_emulator::device::{BootError, DeviceContext};
use fieldtwin_emulator::site::DatalogConfig;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{PanelServer, SETTINGS_KEY, Settings, web};
use crate::proto::firmware::{self, Image};
use crate::proto::modbus::server;
use crate::security::audit::Kind;
use crate::security::{self, Surface};
/// NV key of the reason for the next boot (set before a soft reboot).
pub const RESTART_KEY: &str = "restart_reason";
/// NV key set at first boot, once the site's wireless devices are paired; it
/// survives a factory reset, after which the gateway starts unpaired.
pub const COMMISSIONED_KEY: &str = "commissioned";
/// NV key of a permanent deactivation of both radios (survives factory
/// reset; written by firmware before the radios could be deactivated one
/// by one, still honoured).
pub const WIRELESS_OFF_KEY: &str = "wireless_permanently_off";
/// NV key of a permanent Wi-Fi deactivation (survives factory reset).
pub const WIFI_OFF_KEY: &str = "wifi_permanently_off";
/// NV key of a permanent IEEE 802.15.4 deactivation (survives factory reset).
pub const IEEE802154_OFF_KEY: &str = "ieee802154_permanently_off";

/// Which radio a permanent deactivation concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Radio {
    Wifi,
    Ieee802154,
    /// Both radios.
    #[default]
    Both,
}

impl Radio {
    /// The NV key recording its permanent deactivation.
    pub fn key(self) -> &'static str {
        match self {
            Radio::Wifi => WIFI_OFF_KEY,
            Radio::Ieee802154 => IEEE802154_OFF_KEY,
            Radio::Both => WIRELESS_OFF_KEY,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Radio::Wifi => "Wi-Fi",
            Radio::Ieee802154 => "IEEE 802.15.4",
            Radio::Both => "Wi-Fi and IEEE 802.15.4",
        }
    }
}

/// Which radios are permanently deactivated according to `nv`: (Wi-Fi,
/// IEEE 802.15.4).
pub fn permanently_off(nv: &fieldtwin_emulator::storage::Nv) -> (bool, bool) {
    let set = |k: &str| nv.get::<bool>(k).ok().flatten() == Some(true);
    let both = set(WIRELESS_OFF_KEY);
    (both || set(WIFI_OFF_KEY), both || set(IEEE802154_OFF_KEY))
}
/// The interface of the Wi-Fi access point's side.
pub const WIFI_IFACE: &str = "wifi";
/// Interface of the Wi-Fi station (infrastructure mode, `wifi_client`).
pub const WLAN_IFACE: &str = "wlan";

/// A group of tasks that stop together.
struct Group {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Group {
    fn new(parent: &CancellationToken) -> Self {
        Self {
            token: parent.child_token(),
            tracker: TaskTracker::new(),
        }
    }

    async fn stop(self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// One boot of a Panel Server.
pub struct Node {
    pub ps: Arc<PanelServer>,
    pub ctx: DeviceContext,
    pub settings: Mutex<Settings>,
    /// Accounts, sessions, lockout and audit of this boot (the shared
    /// security surface with the Panel Server's rules); `node.auth`
    /// serialises logins and setting changes.
    pub sec: Surface,
    /// The installed image, if any.
    pub image: Option<Image>,
    generation: CancellationToken,
    tracker: TaskTracker,
    modbus: tokio::sync::Mutex<Option<Group>>,
    dpws: tokio::sync::Mutex<Option<Group>>,
    ntp: tokio::sync::Mutex<Option<Group>>,
    ntp_status: Mutex<super::ntp::Status>,
    datalog: tokio::sync::Mutex<Option<Group>>,
}

impl Deref for Node {
    type Target = Surface;

    fn deref(&self) -> &Surface {
        &self.sec
    }
}

impl Node {
    /// Whether Wi-Fi and IEEE 802.15.4 are both permanently deactivated.
    pub fn wireless_permanently_off(&self) -> bool {
        self.wifi_permanently_off() && self.ieee802154_permanently_off()
    }

    /// Whether Wi-Fi is permanently deactivated.
    pub fn wifi_permanently_off(&self) -> bool {
        permanently_off(&self.ctx.nv).0
    }

    /// Whether IEEE 802.15.4 is permanently deactivated.
    pub fn ieee802154_permanently_off(&self) -> bool {
        permanently_off(&self.ctx.nv).1
    }

    pub fn settings(&self) -> Settings {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A token cancelled when this boot ends (soft reboot or power loss).
    pub fn boot_token(&self) -> CancellationToken {
        self.generation.child_token()
    }

    /// The tracker of this boot's tasks (a soft reboot waits for them).
    pub fn boot_tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }

    /// Spawns a task of this boot.
    pub fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        spawn_in(&self.ctx, &self.generation, &self.tracker, fut);
    }

    /// [`Node::apply`] for a change made outside the webpages (control API),
    /// serialised with page changes and written to the audit log.
    pub async fn apply_audited(
        self: &Arc<Self>,
        new: Settings,
        what: String,
    ) -> Result<(), BootError> {
        let _serial = self.auth.lock().await;
        self.apply(new).await?;
        self.audit(Kind::ConfigurationChanged, what);
        Ok(())
    }

    /// Saves `new` and restarts the services whose settings changed.
    pub async fn apply(self: &Arc<Self>, new: Settings) -> Result<(), BootError> {
        let old = self.settings();
        self.ctx.nv.put(SETTINGS_KEY, &new)?;
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = new.clone();
        if old.modbus != new.modbus
            || old.pairing != new.pairing
            || old.modbus_devices != new.modbus_devices
        {
            self.start_modbus().await?;
        }
        if (old.dpws, old.dpws_port) != (new.dpws, new.dpws_port) {
            self.start_dpws().await?;
        }
        if old.ntp_server != new.ntp_server {
            self.start_ntp().await;
        }
        if (
            old.ieee802154,
            old.protect_plus,
            &old.pairing,
            &old.install_codes,
        ) != (
            new.ieee802154,
            new.protect_plus,
            &new.pairing,
            &new.install_codes,
        ) {
            self.ps.radio_configure(
                &new,
                self.ieee802154_permanently_off(),
                self.ctx.clock.now(),
                false,
            );
        }
        if old.wifi != new.wifi {
            let why = if !new.wifi.enabled {
                "Wi-Fi deactivated"
            } else {
                "access point disabled"
            };
            self.sync_access_point(why);
            if old.wifi.enabled != new.wifi.enabled {
                self.sync_station("Wi-Fi deactivated");
            }
        }
        Ok(())
    }

    /// The access point these settings enable: the model and its firmware
    /// have one, Wi-Fi and the access point are activated and Wi-Fi is not
    /// permanently deactivated. Its SSID is derived from the device
    /// (label), its passphrase is the access point password (the device
    /// code until changed).
    pub fn access_point(&self) -> Option<fieldtwin_emulator::wifi::AccessPoint> {
        let s = self.settings();
        let has = self
            .ps
            .model
            .capabilities()
            .is_some_and(|c| c.wifi_access_point)
            && fieldtwin_emulator::site::FirmwareEdition::of(&s.firmware).has_access_point();
        if !(has && s.wifi.enabled && s.wifi.access_point) || self.wifi_permanently_off() {
            return None;
        }
        Some(fieldtwin_emulator::wifi::AccessPoint {
            ssid: self.ps.label.ssid(),
            passphrase: s
                .wifi
                .ap_password
                .clone()
                .unwrap_or_else(|| self.ps.label.device_code.clone()),
        })
    }

    /// Arms the access point as the settings say (the front-face button
    /// puts an armed one on the air), or disarms it, saying `why`.
    pub fn sync_access_point(&self, why: &str) {
        let id = &*self.ctx.id;
        match self.access_point() {
            Some(ap) => self.ctx.wifi.arm(id, ap, self.ctx.interface(WIFI_IFACE)),
            None => self.ctx.wifi.disarm(id, why),
        }
    }

    /// Infrastructure mode: while Wi-Fi is activated (and not permanently
    /// deactivated) the station joins the site file's `wifi_client`
    /// network on its interface `wlan`; otherwise it leaves it (`why`).
    pub fn sync_station(&self, why: &str) {
        let Some(c) = &self.ps.wifi_client else {
            return;
        };
        let id = &*self.ctx.id;
        if self.settings().wifi.enabled && !self.wifi_permanently_off() {
            let offer = fieldtwin_emulator::wifi::Offer {
                ssid: c.ssid.clone(),
                passphrase: c.passphrase.clone(),
                cipher: c.cipher,
            };
            self.ctx
                .wifi
                .join(id, offer, self.ctx.interface(WLAN_IFACE));
        } else {
            self.ctx.wifi.leave(id, why);
        }
    }

    /// The NTP client's last outcome.
    pub fn ntp_status(&self, f: impl FnOnce(&mut super::ntp::Status)) -> super::ntp::Status {
        let mut s = self.ntp_status.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
        s.clone()
    }

    /// The data logging configuration in force.
    pub fn datalog_setup(&self) -> super::datalog::Setup {
        super::datalog::setup(&self.ctx.nv)
    }

    /// Saves a new data logging and publication configuration, restarts
    /// logging with it and audits `what`. A changed publication clears a
    /// stop (the reconfiguration the stop waits for). Serialised with the
    /// other setting changes by the caller (`node.auth`).
    pub async fn set_datalog(
        self: &Arc<Self>,
        new: super::datalog::Setup,
        what: String,
    ) -> Result<(), BootError> {
        let old = self.datalog_setup();
        self.ctx.nv.put(super::datalog::SETUP_KEY, &new)?;
        if old.publication != new.publication {
            self.ctx.nv.remove(super::datalog::STOPPED_KEY)?;
        }
        self.audit(Kind::ConfigurationChanged, what);
        self.start_datalog().await;
        Ok(())
    }

    /// (Re)starts data logging with the configuration in force; the old
    /// task ends first (an upload in flight is resent by the new one).
    async fn start_datalog(self: &Arc<Self>) {
        let mut slot = self.datalog.lock().await;
        if let Some(g) = slot.take() {
            g.stop().await;
        }
        let setup = self.datalog_setup();
        // Logging off: nothing is sampled, but the rows still waiting are
        // published.
        let cfg = setup.logging.clone().unwrap_or(DatalogConfig {
            devices: Some(Vec::new()),
            ..Default::default()
        });
        let Some(task) = super::datalog::start(self, &cfg, setup.publication.as_ref()) else {
            return;
        };
        let group = Group::new(&self.generation);
        spawn_in(&self.ctx, &group.token, &group.tracker, task);
        *slot = Some(group);
    }

    /// (Re)starts the NTP client for the configured server, if any.
    async fn start_ntp(self: &Arc<Self>) {
        let mut slot = self.ntp.lock().await;
        if let Some(g) = slot.take() {
            g.stop().await;
        }
        self.ntp_status(|s| *s = Default::default());
        let Some(server) = self.settings().ntp_server else {
            return;
        };
        let group = Group::new(&self.generation);
        spawn_in(
            &self.ctx,
            &group.token,
            &group.tracker,
            super::ntp::run(self.clone(), server),
        );
        *slot = Some(group);
    }

    async fn start_modbus(self: &Arc<Self>) -> Result<(), BootError> {
        let mut slot = self.modbus.lock().await;
        if let Some(g) = slot.take() {
            g.stop().await;
        }
        let s = self.settings();
        let group = Group::new(&self.generation);
        // Date/time set over Modbus (FC16 at unit 255) goes to the audit
        // log; the gateway calls back rather than every device listening to
        // the site's event bus (that woke all N devices for every event).
        let me = Arc::downgrade(self);
        let audit: super::DateTimeAudit = Arc::new(move |message: String| {
            if let Some(n) = me.upgrade() {
                n.audit(Kind::DateTimeChanged, message);
            }
        });
        let handler = self.ps.modbus_handler(&self.ctx, &s, audit);
        for (iface, on) in [
            ("eth1", s.modbus.eth1),
            ("eth2", s.modbus.eth2),
            (WIFI_IFACE, s.modbus.wifi),
            (WLAN_IFACE, s.modbus.wifi),
        ] {
            if on && self.ctx.interface(iface).is_some() {
                let listener = self
                    .ctx
                    .listen_tcp(iface, "modbus", super::MODBUS_PORT)
                    .await?;
                spawn_in(
                    &self.ctx,
                    &group.token,
                    &group.tracker,
                    server::serve(
                        self.ctx.clone(),
                        listener,
                        handler.clone(),
                        super::MAX_MODBUS_CLIENTS,
                    ),
                );
            }
        }
        *slot = Some(group);
        Ok(())
    }

    async fn start_dpws(self: &Arc<Self>) -> Result<(), BootError> {
        let mut slot = self.dpws.lock().await;
        if let Some(g) = slot.take() {
            // Each interface's discovery task says Bye as it stops.
            g.stop().await;
        }
        let s = self.settings();
        if !s.dpws {
            return Ok(());
        }
        let group = Group::new(&self.generation);
        for iface in self.ctx.interface_names() {
            web::dpws::start(self, &iface, s.dpws_port, &group.token, &group.tracker).await?;
        }
        *slot = Some(group);
        Ok(())
    }

    /// Soft reboot: after a short delay (so the answer reaches the
    /// browser) every service stops and the boot sequence runs again.
    /// With `wipe`, NV memory is wiped first (factory reset).
    pub fn restart(self: &Arc<Self>, reason: &str, wipe: bool) {
        let me = self.clone();
        let reason = reason.to_string();
        self.ctx.spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // The access point goes off the air with the reboot.
            me.ctx.wifi.disarm(&me.ctx.id, "reboot");
            // DPWS first: its Bye leaves while the network is up.
            if let Some(g) = me.dpws.lock().await.take() {
                g.stop().await;
            }
            // The Modbus listeners are gone before the boot below binds
            // port 502 again (cancelling alone leaves them open until their
            // task is next polled: the new bind then fails, "address in
            // use", and the device never comes back).
            if let Some(g) = me.modbus.lock().await.take() {
                g.stop().await;
            }
            if let Some(g) = me.ntp.lock().await.take() {
                g.stop().await;
            }
            // The data log's rings are opened again by the next boot only
            // after this boot's logging task has ended.
            if let Some(g) = me.datalog.lock().await.take() {
                g.stop().await;
            }
            me.generation.cancel();
            me.tracker.close();
            me.tracker.wait().await;
            let nv = &me.ctx.nv;
            if wipe {
                let keep = fieldtwin_emulator::device::Device::survives_factory_reset(&*me.ps);
                if let Err(e) = security::reset::wipe(nv, keep) {
                    tracing::error!("factory reset failed: {e}");
                }
            }
            let _ = nv.put(RESTART_KEY, &reason);
            me.ctx.emit("reboot", reason.clone());
            if let Err(e) = run(me.ps.clone(), me.ctx.clone()).await {
                tracing::error!("{}: boot after restart failed: {e}", me.ctx.id);
                me.ctx.emit("boot_failed", e.to_string());
            }
        });
    }
}

/// Turns every wireless function off (permanent deactivation).
pub fn force_wireless_off(s: &mut Settings) {
    force_off(s, Radio::Both);
}

/// Turns the functions of `radio` off (permanent deactivation).
pub fn force_off(s: &mut Settings, radio: Radio) {
    if radio != Radio::Ieee802154 {
        s.wifi.enabled = false;
        s.wifi.access_point = false;
        s.modbus.wifi = false;
    }
    if radio != Radio::Wifi {
        s.ieee802154 = false;
    }
}

fn spawn_in<F>(ctx: &DeviceContext, token: &CancellationToken, tracker: &TaskTracker, fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let token = token.clone();
    ctx.spawn(tracker.track_future(async move {
        tokio::select! {
            _ = token.cancelled() => {}
            _ = fut => {}
        }
    }));
}

/// Verifies the stored image, if any.
pub fn verify_stored(ctx: &DeviceContext) -> Result<Option<Image>, BootError> {
    security::firmware::verify_stored(&ctx.nv, firmware::PANEL_SERVER_FAMILY)
}

/// The boot sequence (see the module contract).
pub fn run(
    ps: Arc<PanelServer>,
    ctx: DeviceContext,
) -> futures::future::BoxFuture<'static, Result<(), BootError>> {
    async move {
        let first = ctx.nv.get::<Settings>(SETTINGS_KEY)?.is_none();
        let after_reset = first && ctx.nv.get::<bool>(COMMISSIONED_KEY)?.is_some();
        // A stored image that fails its check fails the boot, except at the
        // first boot after a factory reset: then the boot loader falls back
        // to the factory firmware (the recovery of docs/panel-server.md).
        let (image, recovered) = match verify_stored(&ctx) {
            Ok(image) => (image, None),
            Err(e) if after_reset => {
                ctx.nv.remove(security::firmware::IMAGE_KEY)?;
                (None, Some(e.to_string()))
            }
            Err(e) => return Err(e),
        };
        let mut settings = match ctx.nv.get::<Settings>(SETTINGS_KEY)? {
            Some(s) => s,
            None => {
                let version = image
                    .as_ref()
                    .map_or_else(|| ps.defaults.firmware.clone(), |i| i.version.clone());
                let mut s = ps.factory_settings(&version);
                if ctx.nv.get::<bool>(COMMISSIONED_KEY)?.is_some() {
                    // After a factory reset: no wireless pairing and no
                    // Modbus topology (the site's is the commissioning).
                    s.pairing.clear();
                    s.ieee802154 = false;
                    s.modbus_devices = Some(Vec::new());
                } else {
                    ctx.nv.put(COMMISSIONED_KEY, &true)?;
                }
                s
            }
        };
        if settings.modbus_devices.is_none() {
            // Settings saved before the topology was kept in NV memory.
            settings.modbus_devices = ps.defaults.modbus_devices.clone();
        }
        if let Some(img) = &image {
            settings.firmware = img.version.clone();
        }
        match permanently_off(&ctx.nv) {
            (true, true) => force_off(&mut settings, Radio::Both),
            (true, false) => force_off(&mut settings, Radio::Wifi),
            (false, true) => force_off(&mut settings, Radio::Ieee802154),
            (false, false) => {}
        }
        ctx.nv.put(SETTINGS_KEY, &settings)?;
        let generation = ctx.power_lost().child_token();
        let node = Arc::new(Node {
            ps: ps.clone(),
            ctx: ctx.clone(),
            settings: Mutex::new(settings),
            sec: Surface::new(ctx.clone(), ps.security.clone(), &ps.default_password),
            image,
            generation,
            tracker: TaskTracker::new(),
            modbus: tokio::sync::Mutex::new(None),
            dpws: tokio::sync::Mutex::new(None),
            ntp: tokio::sync::Mutex::new(None),
            ntp_status: Mutex::new(Default::default()),
            datalog: tokio::sync::Mutex::new(None),
        });
        *ps.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(&node);
        let reason: Option<String> = ctx.nv.get(RESTART_KEY)?;
        ctx.nv.remove(RESTART_KEY)?;
        let why = match (first, reason) {
            (_, Some(r)) => r,
            (true, None) if after_reset => {
                "first boot with factory settings, after a factory reset (Restart button)".into()
            }
            (true, None) => "first boot with factory settings".into(),
            (false, None) => "power on (after power loss or power cycle)".into(),
        };
        if let Some(e) = recovered {
            node.audit(
                Kind::FirmwareUpdateFailed,
                format!("{e}; factory firmware restored by the factory reset"),
            );
        }
        node.audit(
            Kind::Boot,
            format!("{why}; firmware {}", node.settings().firmware),
        );
        // Nothing reaches the access point's side, or the station's,
        // before an association.
        for iface in [WIFI_IFACE, WLAN_IFACE] {
            if let Some(wifi) = ctx.interface(iface) {
                wifi.set_carrier(false);
            }
        }
        ps.start_inputs(&node)?;
        node.start_modbus().await?;
        web::start(&node).await?;
        node.start_dpws().await?;
        node.start_ntp().await;
        node.sync_access_point("not enabled at boot");
        node.sync_station("Wi-Fi deactivated");
        // The access point's idle timeout, checked every virtual minute.
        {
            let (ctx2, token) = (ctx.clone(), node.boot_token());
            node.spawn(async move {
                let mut tick = ctx2.clock.interval(Duration::from_secs(60));
                tick.set_missed_ticks(fieldtwin_emulator::clock::MissedTicks::Skip);
                loop {
                    tokio::select! {
                        _ = token.cancelled() => break,
                        t = tick.tick() => {
                            ctx2.wifi.expire_idle(&ctx2.id, t);
                        }
                    }
                }
            });
        }
        super::email::start(&node, after_reset);
        // The data logging configuration: NV memory's, else the site
        // file's (first boot) or none (after a factory reset).
        let site = super::datalog::Setup {
            logging: ps.datalog.clone(),
            publication: ps.publication.clone(),
        };
        super::datalog::load_setup(&ctx.nv, site, after_reset)?;
        node.start_datalog().await;
        // The coordinator listens while this boot runs.
        ps.radio_configure(
            &node.settings(),
            node.ieee802154_permanently_off(),
            ctx.clock.now(),
            true,
        );
        // Protect Plus devices that join with their install code are
        // paired by this boot.
        if let Some(c) = ps.coordinator() {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
            c.set_join_sink(Some(tx));
            let (weak, token) = (Arc::downgrade(&node), node.boot_token());
            node.spawn(async move {
                loop {
                    let rf_id = tokio::select! {
                        _ = token.cancelled() => break,
                        r = rx.recv() => match r {
                            Some(r) => r,
                            None => break,
                        },
                    };
                    let Some(node) = weak.upgrade() else { break };
                    node.joined(rf_id).await;
                }
            });
        }
        let (token, p) = (node.boot_token(), ps.clone());
        ctx.spawn_orderly(node.boot_tracker().track_future(async move {
            token.cancelled().await;
            p.radio_power_off();
        }));
        Ok(())
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use fieldtwin_emulator::clock::Clock;
    use fieldtwin_emulator::control::EventBus;
    use fieldtwin_emulator::device::{DeviceSetup, Power, Runtime};
    use fieldtwin_emulator::net::Stack;
    use fieldtwin_emulator::net::host::HostStack;
    use fieldtwin_emulator::site::{DeviceConfig, Model, RtcConfig, Site};
    use fieldtwin_emulator::storage::Store;

    use super::*;
    use crate::security::accounts;

    /// The default site's `ps1`, its password hashing made cheap.
    fn ps1(site: &Site) -> DeviceConfig {
        let mut dev = site.device("ps1").unwrap().clone();
        dev.panel_server.as_mut().unwrap().pbkdf2_iterations = Some(10);
        dev
    }

    /// A runtime holding the Panel Server `dev` of `site`, off, its `eth1`
    /// a host-mode stack at 127.77.57.`octet`.
    fn runtime(site: &Site, dev: &DeviceConfig, octet: u8) -> (Runtime, Arc<PanelServer>) {
        let ps = Arc::new(PanelServer::new(site, dev));
        let clock = Clock::start(chrono::Utc::now(), 1.0).unwrap();
        let mut rt = Runtime::new(
            clock,
            Store::open(None).unwrap(),
            EventBus::new(),
            Duration::from_secs(3600),
        );
        let mut ifs: BTreeMap<String, Arc<dyn Stack>> = BTreeMap::new();
        ifs.insert(
            "eth1".into(),
            Arc::new(HostStack::new(Ipv4Addr::new(127, 77, 57, octet))),
        );
        rt.add(DeviceSetup {
            device: ps.clone(),
            interfaces: ifs,
            rtc: RtcConfig::default(),
            seed: 1,
        })
        .unwrap();
        (rt, ps)
    }

    /// Issue 8 defect 3: the Restart-button factory reset erases the Modbus
    /// topology, the pairing, the Wi-Fi access point password, the
    /// accounts and the data, and keeps the firmware image.
    #[tokio::test]
    async fn factory_reset_erases_topology_passwords_and_data() {
        let site = Site::default_site();
        let (rt, running) = runtime(&site, &ps1(&site), 12);
        let code = running.label.device_code.clone();
        assert_eq!(rt.power_on("ps1").await.unwrap(), Power::On);
        let nv = rt.nv("ps1").unwrap();
        // The accounts are made on first use (a login), not by the boot.
        assert!(nv.get_raw(accounts::KEY).unwrap().is_none());
        running.running().unwrap().accounts_ready().await.unwrap();
        let s: Settings = nv.get(SETTINGS_KEY).unwrap().unwrap();
        // Commissioned from the site file.
        assert_eq!(
            s.modbus_devices()
                .iter()
                .map(|d| d.unit())
                .collect::<Vec<_>>(),
            vec![1, 10]
        );
        assert_eq!(s.pairing.len(), 5);
        assert_eq!(s.wifi.ap_password.as_deref(), Some(code.as_str()));
        // A settings record from before the topology was in NV memory gets
        // the site's at the next boot.
        let mut old = s.clone();
        old.modbus_devices = None;
        old.wifi.ap_password = Some("MyOwnAp1pass".into());
        nv.put(SETTINGS_KEY, &old).unwrap();
        let key = firmware::signing_key(include_str!("../../../keys/lab-vendor.key")).unwrap();
        let img =
            firmware::sign(&key, firmware::PANEL_SERVER_FAMILY, "002.004.000", b"fw").unwrap();
        nv.put_raw(security::firmware::IMAGE_KEY, &img).unwrap();
        let accounts_before = nv.get_raw(accounts::KEY).unwrap();
        assert_eq!(rt.power_cycle("ps1").await.unwrap(), Power::On);
        let s: Settings = nv.get(SETTINGS_KEY).unwrap().unwrap();
        assert_eq!(s.modbus_devices().len(), 2);
        assert_eq!(s.wifi.ap_password.as_deref(), Some("MyOwnAp1pass"));
        assert_eq!(s.firmware, "002.004.000");
        assert_eq!(rt.factory_reset("ps1").await.unwrap(), Power::On);
        let s: Settings = nv.get(SETTINGS_KEY).unwrap().unwrap();
        assert_eq!(s.modbus_devices, Some(Vec::new()), "topology erased");
        assert!(s.pairing.is_empty(), "pairing erased");
        assert_eq!(
            s.wifi.ap_password.as_deref(),
            Some(code.as_str()),
            "the access point password is the device code again"
        );
        assert_eq!(s.firmware, "002.004.000", "firmware kept");
        assert!(nv.get_raw(security::firmware::IMAGE_KEY).unwrap().is_some());
        // The accounts are erased; the first use makes new ones (new salt),
        // and the audit log starts again.
        assert!(nv.get_raw(accounts::KEY).unwrap().is_none());
        running.running().unwrap().accounts_ready().await.unwrap();
        assert!(nv.get_raw(accounts::KEY).unwrap().is_some());
        assert_ne!(nv.get_raw(accounts::KEY).unwrap(), accounts_before);
        let log = security::audit::read(&nv).unwrap();
        assert!(
            log.first()
                .is_some_and(|e| e.detail.contains("after a factory reset")),
            "{log:?}"
        );
        rt.power_off("ps1").await.unwrap();
    }

    /// Issue 10 item 5: the access point is enabled by default on current
    /// firmware (armed: the button puts it on the air), absent on the
    /// oldest edition's firmware and on Wired by Design models; a
    /// permanent Wi-Fi deactivation disarms it for good, IEEE 802.15.4's
    /// does not.
    #[tokio::test]
    async fn access_point_follows_model_firmware_and_permanent_deactivation() {
        let site = Site::default_site();
        let boot = |model: Model, firmware: Option<&str>, octet: u8| {
            let mut dev = ps1(&site);
            dev.model = model;
            dev.firmware = firmware.map(str::to_string);
            if model.name().ends_with("WD") {
                dev.panel_server.as_mut().unwrap().wireless.clear();
            }
            runtime(&site, &dev, octet)
        };
        let (rt, ps) = boot(Model::PAS600L, None, 20);
        assert_eq!(rt.power_on("ps1").await.unwrap(), Power::On);
        assert_eq!(rt.wifi().access_points().len(), 1, "enabled by default");
        assert!(!rt.wifi().on_air("ps1"), "on the air only with the button");
        assert_eq!(rt.wifi().button("ps1").unwrap(), "PAS600L-0251");
        // Permanent IEEE 802.15.4 deactivation leaves Wi-Fi alone ...
        let nv = rt.nv("ps1").unwrap();
        nv.put(IEEE802154_OFF_KEY, &true).unwrap();
        assert_eq!(rt.factory_reset("ps1").await.unwrap(), Power::On);
        let s: Settings = nv.get(SETTINGS_KEY).unwrap().unwrap();
        assert!(s.wifi.enabled && !s.ieee802154);
        assert!(rt.wifi().button("ps1").is_ok());
        // ... a permanent Wi-Fi deactivation does not, even after a reset.
        nv.put(WIFI_OFF_KEY, &true).unwrap();
        assert_eq!(rt.factory_reset("ps1").await.unwrap(), Power::On);
        let s: Settings = nv.get(SETTINGS_KEY).unwrap().unwrap();
        assert!(!s.wifi.enabled && !s.wifi.access_point && !s.modbus.wifi);
        assert!(rt.wifi().access_points().is_empty());
        assert!(rt.wifi().button("ps1").is_err());
        let node = ps.running().unwrap();
        assert!(node.wifi_permanently_off() && node.ieee802154_permanently_off());
        rt.power_off("ps1").await.unwrap();
        assert!(rt.wifi().access_points().is_empty());
        // The oldest edition's firmware: Wi-Fi off, no access point.
        let (rt, _) = boot(Model::PAS600L, Some("001.008.007"), 21);
        assert_eq!(rt.power_on("ps1").await.unwrap(), Power::On);
        let e = rt.wifi().button("ps1").unwrap_err().to_string();
        assert!(e.contains("not enabled"), "{e}");
        rt.power_off("ps1").await.unwrap();
        // Wired by Design: no radio at all.
        let (rt, _) = boot(Model::PAS600PWD, None, 22);
        assert_eq!(rt.power_on("ps1").await.unwrap(), Power::On);
        assert!(rt.wifi().access_points().is_empty());
        rt.power_off("ps1").await.unwrap();
    }

    /// DOCA0211: the firmware signature is validated at each boot; a
    /// tampered stored image keeps the device from booting.
    #[tokio::test]
    async fn stored_image_is_verified_at_every_boot() {
        let site = Site::default_site();
        let (rt, _) = runtime(&site, &ps1(&site), 10);
        assert_eq!(rt.power_on("ps1").await.unwrap(), Power::On);
        let nv = rt.nv("ps1").unwrap();
        let key = firmware::signing_key(include_str!("../../../keys/lab-vendor.key")).unwrap();
        let mut img =
            firmware::sign(&key, firmware::PANEL_SERVER_FAMILY, "002.004.000", b"fw").unwrap();
        nv.put_raw(security::firmware::IMAGE_KEY, &img).unwrap();
        assert_eq!(rt.power_cycle("ps1").await.unwrap(), Power::On);
        assert_eq!(
            nv.get::<Settings>(SETTINGS_KEY).unwrap().unwrap().firmware,
            "002.004.000"
        );
        img[12] ^= 0x20;
        nv.put_raw(security::firmware::IMAGE_KEY, &img).unwrap();
        assert_eq!(rt.power_cycle("ps1").await.unwrap(), Power::Failed);
        let st = rt.status("ps1").unwrap();
        assert!(st.failure.unwrap().contains("wrong signature"));
        assert!(
            st.services.is_empty(),
            "no service runs after a failed boot"
        );
        let log = security::audit::read(&nv).unwrap();
        assert!(
            log.iter()
                .any(|e| e.kind == Kind::Boot && e.detail.contains("002.004.000"))
        );
        // Recovery: a factory reset (the Restart button) falls back to the
        // factory firmware and boots.
        assert_eq!(rt.factory_reset("ps1").await.unwrap(), Power::On);
        assert_eq!(
            nv.get::<Settings>(SETTINGS_KEY).unwrap().unwrap().firmware,
            super::super::DEFAULT_FIRMWARE
        );
        assert!(nv.get_raw(security::firmware::IMAGE_KEY).unwrap().is_none());
        let log = security::audit::read(&nv).unwrap();
        assert!(
            log.iter()
                .any(|e| e.detail.contains("factory firmware restored")),
            "{log:?}"
        );
        rt.power_off("ps1").await.unwrap();
    }

    /// Issue 15 item 1: nothing expensive on the boot path. With every slot
    /// of the process-wide pool taken (as when thousands of devices make
    /// their accounts and certificates), a first boot still completes and
    /// the device answers Modbus at once; its accounts and certificate are
    /// not made by the boot. A login arriving then waits for them rather
    /// than failing, and succeeds once the pool is free; the first HTTPS
    /// connection makes the certificate.
    #[tokio::test]
    async fn first_boot_answers_modbus_while_the_pool_is_busy() {
        use crate::security::{login, tls, work};
        use tokio_modbus::client::{Reader, tcp};
        use tokio_modbus::slave::Slave;

        let site = Site::default_site();
        let ip = Ipv4Addr::new(127, 77, 57, 14);
        let (rt, ps) = runtime(&site, &ps1(&site), 14);
        let busy = work::hold().await;
        assert_eq!(work::free(), 0);
        let on = tokio::time::timeout(Duration::from_secs(10), rt.power_on("ps1")).await;
        assert_eq!(
            on.expect("the boot waited for the pool").unwrap(),
            Power::On
        );
        let port = fieldtwin_emulator::net::host::map_port(super::super::MODBUS_PORT);
        let read = async {
            let mut c = tcp::connect_slave((ip, port).into(), Slave(255)).await?;
            c.read_holding_registers(10, 10).await
        };
        let regs = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("Modbus answered while the pool was busy")
            .unwrap()
            .unwrap();
        assert_eq!(regs.len(), 10);
        let nv = rt.nv("ps1").unwrap();
        assert!(
            nv.get_raw(accounts::KEY).unwrap().is_none(),
            "no PBKDF2 at boot"
        );
        assert!(tls::load(&nv).unwrap().is_none(), "no certificate at boot");
        // An HTTPS client arrives: its connection is accepted and waits; a
        // login waits too.
        let https = fieldtwin_emulator::net::host::map_port(web::HTTPS_PORT);
        let _client = tokio::net::TcpStream::connect((ip, https)).await.unwrap();
        let node = ps.running().unwrap();
        let pw = ps.default_password.clone();
        let n = node.clone();
        let mut attempt =
            tokio::spawn(async move { login::login(&n, "SecurityAdmin", &pw, "api").await });
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut attempt)
                .await
                .is_err(),
            "the login waits for the accounts"
        );
        assert!(nv.get_raw(accounts::KEY).unwrap().is_none());
        assert!(tls::load(&nv).unwrap().is_none());
        drop(busy);
        let outcome = tokio::time::timeout(Duration::from_secs(10), attempt)
            .await
            .expect("the login ends once the pool is free")
            .unwrap();
        assert!(matches!(outcome, login::Outcome::Ok(_)), "login failed");
        assert!(node.accounts_made());
        let stored = nv
            .get::<accounts::Accounts>(accounts::KEY)
            .unwrap()
            .unwrap();
        assert!(stored.admin.verify(&ps.default_password));
        let raw = nv.get_raw(accounts::KEY).unwrap().unwrap();
        let clear = ps.default_password.as_bytes();
        assert!(
            !raw.windows(clear.len()).any(|w| w == clear),
            "the password is stored in clear"
        );
        let t0 = std::time::Instant::now();
        while tls::load(&nv).unwrap().is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no certificate made"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rt.power_off("ps1").await.unwrap();
    }
}
