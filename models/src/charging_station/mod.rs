//! A charging station (`ChargingStation`): an OCPP 1.6J charge point with
//! connectors and EVs on them (issue 11 item 2; reference devices.md §3;
//! docs/ev-charging.md).
//!
//! Contract:
//! - Powered on, the station connects from its own address (its `Stack`,
//!   DESIGN.md principle 12) to its central system: the EVCE of the site
//!   (`controller`, by default the first `EVChargingExpert`), at
//!   `wss://EVCE:8443/ocpp/<box id>` for security profiles 2-3 and
//!   `ws://EVCE:8887/ocpp/<box id>` for 0-1, or the site file's `url`.
//!   Profile 1-2: HTTP Basic auth with the AuthorizationKey; 2-3: TLS 1.2
//!   checked against the site's OCPP CA; 3: a client certificate whose CN
//!   is the box id. A lost link is retried every [`RETRY`] of wall time.
//! - On every connection: BootNotification (repeated at the answered
//!   interval while Pending/Rejected), then every connector's status, then
//!   the queued transaction messages, Heartbeats at the interval.
//! - Behaviour is [`station::Station`] (plain state); this module only
//!   moves its messages: one sender per link sends the plain messages,
//!   then the transaction queue, one CALL at a time.
//! - Model commands: `ev_plug`, `ev_unplug`, `badge`
//!   ([`ModelCommand`]); the answer names what was wrong.
//! - Power loss stops the transactions (reason PowerLoss, queued), the
//!   EVs stay plugged; the configuration keys are kept in NV memory
//!   ([`KEYS_KEY`]); the transaction queue is volatile ([NF]).
//! - SSDP: it answers searches with its box id
//!   ([`crate::evce::standalone::start_station_ssdp`]).

pub mod feed;
pub mod physics;
pub mod station;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use fieldtwin_emulator::clock::Clock;
use fieldtwin_emulator::device::{BootError, Details, Device, DeviceContext, ModelCommand};
use fieldtwin_emulator::net::Stack;
use fieldtwin_emulator::site::{
    ChargingStationConfig, DeviceConfig, Model, OCPP_WS_PORT, OCPP_WSS_PORT, Site,
    default_authorization_key,
};
use fieldtwin_emulator::storage::Nv;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::proto::ocpp::link::{self, Credentials, SiteCa};
use crate::proto::ocpp::messages::{BootNotificationConf, RegistrationStatus};
use crate::proto::ocpp::rpc::{self, CallFailed, Incoming, Rpc};
use crate::proto::ocpp::{decode, queue::Acked};
use station::{Keys, Now, Purpose, Rating, Station};

/// Wall time between two connection attempts.
pub const RETRY: Duration = Duration::from_secs(2);
/// Wall time a CALL waits for its answer.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// NV key of the configuration keys.
pub const KEYS_KEY: &str = "ocpp.keys";
/// Vendor in BootNotification.
pub const VENDOR: &str = "Schneider Electric";
/// Model in BootNotification ([NF]).
pub const MODEL: &str = "EVlink Pro AC";

/// A charging station device.
pub struct ChargingStation {
    id: String,
    cfg: ChargingStationConfig,
    box_id: String,
    url: String,
    default_keys: Keys,
    state: Arc<Mutex<Station>>,
    /// Wakes the sender (something to send).
    work: Arc<Notify>,
    /// Wakes the time task (the deadlines changed).
    retick: Arc<Notify>,
    /// The central system URL set by `ocpp_url` (None: `url`).
    url_override: Mutex<Option<String>>,
    /// Drops the link to connect again at once (the URL changed).
    relink: Arc<Notify>,
    clock: OnceLock<Clock>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ChargingStation {
    pub fn new(site: &Site, dev: &DeviceConfig) -> Self {
        let cfg = dev.charging_station.clone().unwrap_or_default();
        let box_id = cfg.box_id.clone().unwrap_or_else(|| dev.id.clone());
        let tls = cfg.security_profile >= 2;
        let evce = site.devices.iter().find(|d| {
            d.model == Model::EVChargingExpert && cfg.controller.as_ref().is_none_or(|c| c == &d.id)
        });
        let feeds = site_meter(site, evce);
        let url = match &cfg.url {
            Some(u) => u.clone(),
            None => {
                let (ip, ws, wss) = match evce {
                    Some(e) => {
                        let ev = e.evce.clone().unwrap_or_default();
                        (
                            e.ip,
                            ev.ocpp_port.unwrap_or(OCPP_WS_PORT),
                            ev.ocpp_tls_port.unwrap_or(OCPP_WSS_PORT),
                        )
                    }
                    None => (dev.ip, OCPP_WS_PORT, OCPP_WSS_PORT),
                };
                if tls {
                    format!("wss://{ip}:{wss}/ocpp")
                } else {
                    format!("ws://{ip}:{ws}/ocpp")
                }
            }
        };
        let key = match cfg.security_profile {
            1 | 2 => Some(
                cfg.authorization_key
                    .clone()
                    .unwrap_or_else(|| default_authorization_key(site.site.seed, &box_id)),
            ),
            _ => None,
        };
        let default_keys = Keys {
            heartbeat_interval: 300,
            meter_value_sample_interval: 300,
            authorization_key: key,
            security_profile: cfg.security_profile,
            local_authorize_offline: true,
        };
        let rating = Rating {
            box_id: box_id.clone(),
            connectors: cfg.connectors as u32,
            max_current_a: cfg.max_current_a,
            phases: cfg.phases,
            voltage_v: cfg.voltage_v,
        };
        let mut station = Station::new(rating, default_keys.clone(), 0.0);
        station.feeds = feeds;
        Self {
            id: dev.id.clone(),
            state: Arc::new(Mutex::new(station)),
            cfg,
            box_id,
            url,
            default_keys,
            work: Arc::new(Notify::new()),
            retick: Arc::new(Notify::new()),
            url_override: Mutex::new(None),
            relink: Arc::new(Notify::new()),
            clock: OnceLock::new(),
        }
    }

    /// The charge-box identity.
    pub fn box_id(&self) -> &str {
        &self.box_id
    }

    /// The central system URL in use (the site file's, or `ocpp_url`'s).
    pub fn url(&self) -> String {
        lock(&self.url_override)
            .clone()
            .unwrap_or_else(|| self.url.clone())
    }

    /// Total power the station draws now, W.
    pub fn power_w(&self) -> f64 {
        lock(&self.state).power_w()
    }

    fn now_at(&self, t: Duration) -> Now {
        let utc = match self.clock.get() {
            Some(c) => c.utc_at(t),
            None => DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::from_std(t).unwrap_or_default(),
        };
        Now {
            t: t.as_secs_f64(),
            utc,
        }
    }
}

/// The site meter behind EVCE `evce`'s stations: its `site_meter`, else
/// the site's meter with profile `ev_charging`.
pub fn site_meter(site: &Site, evce: Option<&DeviceConfig>) -> Option<String> {
    let named = evce
        .and_then(|e| e.evce.as_ref())
        .and_then(|c| c.site_meter.clone());
    named.or_else(|| {
        site.devices
            .iter()
            .find(|d| d.profile.as_deref() == Some("ev_charging"))
            .map(|d| d.id.clone())
    })
}

fn now_of(clock: &Clock) -> Now {
    let t = clock.now();
    Now {
        t: t.as_secs_f64(),
        utc: clock.utc_at(t),
    }
}

impl Device for ChargingStation {
    fn id(&self) -> &str {
        &self.id
    }
    fn model(&self) -> &str {
        "ChargingStation"
    }

    fn credentials(&self) -> Vec<fieldtwin_emulator::device::Credential> {
        // The AuthorizationKey (Basic auth password of profiles 1-2), as the
        // installer wrote it into the station.
        self.default_keys
            .authorization_key
            .iter()
            .map(|k| fieldtwin_emulator::device::Credential {
                service: "ocpp".into(),
                user: self.box_id.clone(),
                password: k.clone(),
            })
            .collect()
    }

    fn model_command(&self, cmd: ModelCommand, now: Duration) -> Result<(), String> {
        if let ModelCommand::OcppUrl { url } = &cmd {
            if let Some(u) = url {
                link::parse_url(u).map_err(|e| {
                    format!("{e}; give ws://A.B.C.D:PORT/PATH or wss://... (null: the site file's)")
                })?;
            }
            *lock(&self.url_override) = url.clone();
            self.relink.notify_one();
            return Ok(());
        }
        let now = self.now_at(now);
        let mut st = lock(&self.state);
        let r = match cmd {
            ModelCommand::EvPlug {
                connector,
                ev,
                id_tag,
            } => {
                ev.check()?;
                st.plug(connector, ev, id_tag, now)
            }
            ModelCommand::EvUnplug { connector } => st.unplug(connector, now),
            ModelCommand::Badge { connector, id_tag } => st.badge(connector, id_tag, now),
            other => Err(format!(
                "{} is a ChargingStation; it takes ev_plug, ev_unplug, badge and ocpp_url, not {}",
                self.id,
                other.name()
            )),
        };
        drop(st);
        self.retick.notify_one();
        self.work.notify_one();
        r
    }

    fn details(&self, _nv: &Nv, _clock: &Clock) -> Details {
        let st = lock(&self.state);
        let mut d = Details::default();
        let conns: Vec<Value> = st
            .conns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({
                    "connector": i + 1,
                    "status": c.status,
                    "power_w": c.meter.power_w,
                    "energy_wh": c.meter.energy_wh,
                    "soc": c.meter.ev.as_ref().map(|e| e.soc),
                    "transaction": c.tx.as_ref().map(|t| json!({
                        "local": t.local,
                        "id": st.queue.remote_of(t.local),
                        "id_tag": t.id_tag,
                    })),
                })
            })
            .collect();
        d.extra.insert(
            "ocpp".into(),
            json!({
                "box_id": self.box_id,
                "url": self.url(),
                "security_profile": st.keys.security_profile,
                "online": st.online,
                "connectors": conns,
                "power_w": st.power_w(),
                "queued": st.queue.len(),
                "delivered": st.queue.delivered,
                "discarded": st.queue.discarded,
                "dropped": st.queue.dropped,
                "queue_cap": station::QUEUE_CAP,
                "sent": st.sent,
                "firmware": st.firmware,
                "firmware_status": st.firmware_status,
            }),
        );
        d
    }

    fn boot(self: Arc<Self>, ctx: DeviceContext) -> BoxFuture<'static, Result<(), BootError>> {
        async move {
            let _ = self.clock.set(ctx.clock.clone());
            let keys: Keys = ctx
                .nv
                .get(KEYS_KEY)?
                .unwrap_or_else(|| self.default_keys.clone());
            // The installed firmware must verify at every boot.
            let firmware =
                crate::security::firmware::verify_stored(&ctx.nv, station::FIRMWARE_FAMILY)?
                    .map_or_else(|| station::FACTORY_FIRMWARE.to_string(), |i| i.version);
            {
                let mut st = lock(&self.state);
                st.keys = keys;
                st.firmware = firmware;
                st.firmware_update = None;
                st.download = None;
                st.offline();
                st.tick(now_of(&ctx.clock));
            }
            let stack = ctx
                .interface("eth1")
                .ok_or_else(|| BootError::Other("no eth1 interface".into()))?;
            // Time: samples and heartbeats on virtual time; firmware
            // downloads when they are due.
            let me = self.clone();
            let clock = ctx.clock.clone();
            let (c2, s2) = (ctx.clone(), stack.clone());
            ctx.spawn(async move {
                loop {
                    let (next, download) = {
                        let mut st = lock(&me.state);
                        (st.tick(now_of(&clock)), st.download.take())
                    };
                    if let Some(u) = download {
                        let (me, ctx, stack) = (me.clone(), c2.clone(), s2.clone());
                        c2.spawn(async move { me.update_firmware(ctx, stack, u).await });
                    }
                    me.work.notify_one();
                    let deadline = Duration::from_secs_f64(next.max(0.0));
                    tokio::select! {
                        _ = clock.sleep_until(deadline) => {}
                        _ = me.retick.notified() => {}
                    }
                }
            });
            // Power loss: transactions end.
            let me = self.clone();
            let lost = ctx.power_lost();
            let clock = ctx.clock.clone();
            tokio::spawn(async move {
                lost.cancelled().await;
                let mut st = lock(&me.state);
                st.stop_all("PowerLoss", now_of(&clock));
                st.offline();
            });
            ctx.spawn(self.clone().run(ctx.clone(), stack));
            // SSDP: the EVCE discovers it by its box id.
            crate::evce::standalone::start_station_ssdp(&ctx, &self.box_id, &ctx.power_lost());
            Ok(())
        }
        .boxed()
    }
}

impl ChargingStation {
    fn link_credentials(&self, keys: &Keys, url: &str) -> Result<Credentials, String> {
        if keys.security_profile >= 2 && !url.starts_with("wss://") {
            return Err(format!(
                "security profile {} needs TLS; refusing the plain URL {url}",
                keys.security_profile
            ));
        }
        let tls = if url.starts_with("wss://") {
            let client =
                (keys.security_profile >= 3).then(|| SiteCa::get().client_cert(&self.box_id));
            Some(link::client_config(SiteCa::get().pem.as_bytes(), client)?)
        } else {
            None
        };
        Ok(Credentials {
            box_id: self.box_id.clone(),
            authorization_key: if (1..=2).contains(&keys.security_profile) {
                keys.authorization_key.clone()
            } else {
                None
            },
            tls,
        })
    }

    async fn run(self: Arc<Self>, ctx: DeviceContext, stack: Arc<dyn Stack>) {
        // A failure is reported once until it changes or the link is up
        // (no event every retry: the event stream stays readable and
        // repeatable).
        let mut last_error: Option<String> = None;
        fn report(ctx: &DeviceContext, last: &mut Option<String>, e: String) {
            if last.as_ref() != Some(&e) {
                ctx.emit("ocpp", e.clone());
                *last = Some(e);
            }
        }
        loop {
            let keys = lock(&self.state).keys.clone();
            let _ = ctx.nv.put(KEYS_KEY, &keys);
            let url = self.url();
            let creds = match self.link_credentials(&keys, &url) {
                Ok(c) => c,
                Err(e) => {
                    report(&ctx, &mut last_error, format!("cannot connect: {e}"));
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY * 5) => {}
                        _ = self.relink.notified() => {}
                    }
                    continue;
                }
            };
            match link::connect(stack.as_ref(), &url, &creds, MESSAGE_TIMEOUT).await {
                Ok(ws) => {
                    last_error = None;
                    let (rpc, incoming, driver) = rpc::start(ws, Some(Duration::from_secs(30)));
                    ctx.spawn(driver);
                    let relinked = tokio::select! {
                        _ = self.session(&ctx, &url, rpc.clone(), incoming) => false,
                        _ = self.relink.notified() => true,
                    };
                    rpc.close();
                    lock(&self.state).offline();
                    if relinked {
                        // Repointed by `ocpp_url`, whose own event says so
                        // (one event, in a fixed order).
                        continue;
                    }
                    ctx.emit("ocpp", format!("link to {url} closed"));
                }
                Err(e) => report(&ctx, &mut last_error, format!("cannot reach {url}: {e}")),
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = self.relink.notified() => {}
            }
        }
    }

    /// One connection: boot, then serve until the link ends or a Reset.
    async fn session(
        &self,
        ctx: &DeviceContext,
        url: &str,
        rpc: Rpc,
        mut incoming: tokio::sync::mpsc::UnboundedReceiver<Incoming>,
    ) {
        let boot = json!({
            "chargePointVendor": VENDOR,
            "chargePointModel": MODEL,
            "chargePointSerialNumber": self.box_id,
            "chargeBoxSerialNumber": self.box_id,
            "firmwareVersion": lock(&self.state).firmware.clone(),
        });
        loop {
            let r = rpc
                .call("BootNotification", boot.clone(), MESSAGE_TIMEOUT)
                .await;
            *lock(&self.state)
                .sent
                .entry("BootNotification".into())
                .or_default() += 1;
            let conf = match r {
                Ok(v) => decode::<BootNotificationConf>(&v).ok(),
                Err(CallFailed::Closed) | Err(CallFailed::Timeout) => return,
                Err(_) => None,
            };
            match conf {
                Some(c) if c.status == RegistrationStatus::Accepted => {
                    let mut st = lock(&self.state);
                    if c.interval > 0 {
                        st.keys.heartbeat_interval = c.interval as u64;
                    }
                    st.announce(now_of(&ctx.clock));
                    break;
                }
                other => {
                    let wait = other.map_or(10, |c| c.interval.clamp(1, 3600));
                    tokio::select! {
                        _ = ctx.clock.sleep(Duration::from_secs(wait as u64)) => {}
                        _ = rpc.closed().cancelled_owned() => return,
                    }
                }
            }
        }
        ctx.emit("ocpp", format!("connected to {url}"));
        self.retick.notify_one();
        self.work.notify_one();
        let sender = self.send_loop(ctx.clock.clone(), rpc.clone());
        tokio::pin!(sender);
        loop {
            tokio::select! {
                _ = &mut sender => return,
                _ = rpc.closed().cancelled_owned() => return,
                call = incoming.recv() => {
                    let Some(call) = call else { return };
                    let r = lock(&self.state).handle(&call.action, &call.payload, now_of(&ctx.clock));
                    match r {
                        Ok(v) => call.reply.value(v),
                        Err((code, d)) => call.reply.error(code, &d),
                    }
                    self.retick.notify_one();
                    self.work.notify_one();
                    let reset = lock(&self.state).reset.take();
                    if let Some(kind) = reset {
                        // Let the answer leave, end the transactions, boot again.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let reason = match kind {
                            crate::proto::ocpp::messages::ResetType::Hard => "HardReset",
                            crate::proto::ocpp::messages::ResetType::Soft => "SoftReset",
                        };
                        lock(&self.state).stop_all(reason, now_of(&ctx.clock));
                        ctx.emit("ocpp", format!("{reason}: booting the OCPP stack again"));
                        // The Stop messages leave on the next connection.
                        return;
                    }
                }
            }
        }
    }

    /// Sends the outbox, then the transaction queue, one CALL at a time.
    async fn send_loop(&self, clock: Clock, rpc: Rpc) {
        enum Next {
            Plain(String, Value, Purpose),
            Tx(String, Value),
        }
        loop {
            let next = {
                let mut st = lock(&self.state);
                if let Some((a, p, purpose)) = st.outbox.pop_front() {
                    Some(Next::Plain(a, p, purpose))
                } else {
                    st.queue.front().map(|(a, p)| Next::Tx(a, p))
                }
            };
            match next {
                None => {
                    tokio::select! {
                        _ = self.work.notified() => {}
                        _ = rpc.closed().cancelled_owned() => return,
                    }
                }
                Some(Next::Plain(action, payload, purpose)) => {
                    let r = rpc.call(&action, payload, MESSAGE_TIMEOUT).await;
                    let mut st = lock(&self.state);
                    *st.sent.entry(action).or_default() += 1;
                    match r {
                        Ok(v) => st.answered(purpose, &v, now_of(&clock)),
                        Err(CallFailed::Error { .. }) => st.undelivered(purpose, now_of(&clock)),
                        Err(_) => {
                            st.undelivered(purpose, now_of(&clock));
                            return;
                        }
                    }
                }
                Some(Next::Tx(action, payload)) => {
                    let r = rpc.call(&action, payload, MESSAGE_TIMEOUT).await;
                    let mut st = lock(&self.state);
                    match r {
                        Ok(v) => {
                            *st.sent.entry(action).or_default() += 1;
                            if let Acked::Started { local, remote } = st.queue.ack(&v) {
                                tracing::debug!("{}: transaction {local} is {remote}", self.id);
                            }
                        }
                        Err(CallFailed::Error { .. }) => {
                            st.queue.failed();
                        }
                        Err(_) => return,
                    }
                }
            }
        }
    }

    /// Downloads and installs a firmware update (UpdateFirmware): the
    /// image comes from its `http://` location through the station's own
    /// stack; a verified image is kept in NV memory and the OCPP stack
    /// boots again under the new version (transactions stop, reason
    /// `Reboot`).
    async fn update_firmware(
        self: Arc<Self>,
        ctx: DeviceContext,
        stack: Arc<dyn Stack>,
        update: station::FirmwareUpdate,
    ) {
        let got = fetch(stack.as_ref(), &update.location).await;
        let r = lock(&self.state).downloaded(update, got, now_of(&ctx.clock));
        self.work.notify_one();
        self.retick.notify_one();
        match r {
            Ok(image) => {
                if let Err(e) = ctx.nv.put_raw(crate::security::firmware::IMAGE_KEY, &image) {
                    ctx.emit("firmware", format!("cannot keep the new firmware: {e}"));
                    return;
                }
                let version = lock(&self.state).firmware.clone();
                ctx.emit(
                    "firmware",
                    format!("firmware {version} installed; the OCPP stack boots again"),
                );
                // The Installed notification leaves first (at most 2 s).
                for _ in 0..40 {
                    if lock(&self.state).outbox.is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                lock(&self.state).stop_all("Reboot", now_of(&ctx.clock));
                self.relink.notify_one();
            }
            Err(e) => ctx.emit("firmware", e),
        }
    }

    /// The station's configuration table.
    pub fn config(&self) -> &ChargingStationConfig {
        &self.cfg
    }
}

/// Largest firmware download, bytes.
pub const MAX_DOWNLOAD: usize = crate::proto::firmware::MAX_LEN + 1024;

/// GETs `http://A.B.C.D[:PORT]/PATH` from `stack` (HTTP/1.1, body by
/// Content-Length or up to the close); the error says what went wrong.
pub async fn fetch(stack: &dyn Stack, url: &str) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("{url:?}: only http:// firmware locations are supported (http://A.B.C.D:PORT/PATH)")
    })?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>().map_err(|_| format!("{url:?}: bad port"))?,
        ),
        None => (hostport, 80),
    };
    let ip: std::net::Ipv4Addr = host
        .parse()
        .map_err(|_| format!("{url:?}: the host must be an IPv4 address"))?;
    let io = async {
        let mut s = stack
            .connect_tcp(std::net::SocketAddr::from((ip, port)))
            .await
            .map_err(|e| format!("{host}:{port}: {e}"))?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_DOWNLOAD + 16 * 1024 {
                return Err(format!("the file is larger than {MAX_DOWNLOAD} bytes"));
            }
        }
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no HTTP answer")?;
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or("no HTTP status")?;
        if status != 200 {
            return Err(format!("HTTP {status}"));
        }
        let mut body = buf[end + 4..].to_vec();
        if let Some(len) = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        }) {
            if body.len() < len {
                return Err(format!(
                    "the download ended after {} of {len} bytes",
                    body.len()
                ));
            }
            body.truncate(len);
        }
        Ok(body)
    };
    tokio::time::timeout(Duration::from_secs(60), io)
        .await
        .map_err(|_| format!("{url}: no complete answer within 60 s"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldtwin_emulator::net::host::HostStack;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP server on loopback answering `answer`.
    async fn serve(answer: Vec<u8>) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut req = vec![0u8; 1024];
                let _ = s.read(&mut req).await;
                let _ = s.write_all(&answer).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn firmware_is_fetched_over_http_from_the_station_stack() {
        let stack = HostStack::new(std::net::Ipv4Addr::LOCALHOST);
        let port = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nimage".to_vec()).await;
        let got = fetch(&stack, &format!("http://127.0.0.1:{port}/fw.bin")).await;
        assert_eq!(got.unwrap(), b"image");
        let port = serve(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
        let e = fetch(&stack, &format!("http://127.0.0.1:{port}/nope"))
            .await
            .unwrap_err();
        assert!(e.contains("404"), "{e}");
        let port = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort".to_vec()).await;
        let e = fetch(&stack, &format!("http://127.0.0.1:{port}/cut"))
            .await
            .unwrap_err();
        assert!(e.contains("ended after 5 of 50"), "{e}");
        let e = fetch(&stack, "ftp://127.0.0.1/x").await.unwrap_err();
        assert!(e.contains("only http://"), "{e}");
    }
}
