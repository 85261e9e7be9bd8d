//! The EVCE's OCPP-J services: the local controller its stations connect
//! to and the upstream links to the supervisions (issue 11 item 3;
//! docs/ev-charging.md). The behaviour is [`super::controller`]; this
//! module moves its messages.
//!
//! Contract:
//! - Servers on `eth1`: `ws://` on port 8887 (security profiles 0-1) and
//!   `wss://` on 8443 (TLS 1.2, certificate of the site's OCPP CA;
//!   profiles 2-3), path `/ocpp/<box id>` (any prefix; the last segment is
//!   the box id), subprotocol `ocpp1.6` required (else HTTP 400).
//!   A box id the EVCE does not know gets 404; one that is not enrolled,
//!   or connects from another address than the enrolled one, gets 403
//!   ([`super::enrollment::admit`]: audited, a rogue station raises an
//!   alert). A station with an
//!   AuthorizationKey must send Basic auth `box id : key` (else 401),
//!   except over TLS with a client certificate of the site CA whose CN is
//!   its box id (profile 3). A second connection of a box id replaces the
//!   first.
//! - Upstream: one task per supervised station. While upstream links are
//!   allowed ([`ModelCommand::Upstream`]) and the station has booted at
//!   least once, it connects to the supervision's URL + `/<box id>` from
//!   the EVCE's own address, with the station's Basic auth and TLS 1.2
//!   against the supervision's `ca` PEM file; sends the station's
//!   BootNotification and statuses, then the plain messages and the
//!   transaction queue in order, one CALL at a time; relays the CSMS's
//!   CALLs to the station (ids mapped) and the station's answers back.
//!   A lost link is retried every [`RETRY`] of wall time.
//! - The controller's persistent part (transaction counter, authorization
//!   cache, queues) is saved in NV memory ([`STATE_KEY`]) after every
//!   change, so a reboot loses no queued message; a factory reset wipes it.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldtwin_emulator::device::{BootError, DeviceContext};
use fieldtwin_emulator::net::{BoxStream, Stack};
use fieldtwin_emulator::site::SupervisionConfig;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::handshake::server::Request;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

use super::controller::{Answer, Controller, Persisted};
use crate::proto::ocpp::ErrorCode;
use crate::proto::ocpp::link::{self, Credentials, SiteCa};
use crate::proto::ocpp::queue::Acked;
use crate::proto::ocpp::rpc::{self, CallFailed, Incoming, Rpc};

/// NV key of the controller's persistent state.
pub const STATE_KEY: &str = "ocpp.controller";
/// Wall time between two upstream connection attempts.
pub const RETRY: Duration = Duration::from_secs(1);
/// Wall time the EVCE waits for a station's answer.
pub const STATION_TIMEOUT: Duration = Duration::from_secs(10);

/// A station the EVCE knows.
#[derive(Debug, Clone)]
pub struct Known {
    pub box_id: String,
    pub authorization_key: Option<String>,
}

/// The address of a `host:port` peer, without its (ephemeral) port.
fn host_of(peer: &str) -> &str {
    peer.rsplit_once(':').map_or(peer, |(h, _)| h)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The EVCE's handshake rules for its stations (the module contract): a
/// box id it knows (else 404); Basic auth `box id : AuthorizationKey` for a
/// station that has a key (else 401), unless its TLS client certificate
/// names it; enrolled and from its enrolled address (else 403). Every
/// refusal is a device event.
struct StationAdmission<'a> {
    ctx: &'a DeviceContext,
    known: &'a BTreeMap<String, Known>,
    /// Some(client certificate CN) over wss.
    tls: Option<Option<String>>,
    from: Ipv4Addr,
}

impl link::Admission for StationAdmission<'_> {
    type Admitted = String;

    fn identify(&mut self, box_id: &str) -> Result<(), link::Refusal> {
        match self.known.get(box_id) {
            Some(_) => Ok(()),
            None => Err(link::refusal(
                StatusCode::NOT_FOUND,
                "unknown charge point identity",
            )),
        }
    }

    fn admit(&mut self, box_id: String, req: &Request) -> Result<String, link::Refusal> {
        let cert_ok = matches!(&self.tls, Some(Some(cn)) if cn == &box_id);
        if let Some(key) = self
            .known
            .get(&box_id)
            .and_then(|k| k.authorization_key.as_ref())
            && !cert_ok
        {
            let ok = link::basic_auth(req.headers().get("Authorization"))
                .is_some_and(|(u, p)| u == box_id && &p == key);
            if !ok {
                let mut r = link::refusal(StatusCode::UNAUTHORIZED, "wrong or missing Basic auth");
                r.headers_mut().insert(
                    "WWW-Authenticate",
                    HeaderValue::from_static("Basic realm=\"OCPP\""),
                );
                return Err(r);
            }
        }
        // Enrollment: only enrolled stations, from their address (after
        // authentication, so no one pins an address unauthenticated).
        if let Err(r) = super::enrollment::admit(self.ctx, &box_id, self.from) {
            return Err(link::refusal(StatusCode::FORBIDDEN, &r.to_string()));
        }
        Ok(box_id)
    }

    /// Reported before the answer leaves, so the event precedes whatever
    /// the client does next.
    fn refused(&mut self, r: &link::Refusal) {
        self.ctx.emit(
            "ocpp",
            format!(
                "station connection from {} refused: {} {}",
                self.from,
                r.status().as_u16(),
                r.body().as_deref().unwrap_or("")
            ),
        );
    }
}

/// The running OCPP side of an EVCE.
pub struct Ocpp {
    pub controller: Mutex<Controller>,
    pub known: BTreeMap<String, Known>,
    /// Upstream links allowed (the `ocpp_upstream` command).
    pub upstream_allowed: AtomicBool,
    downstream: Mutex<HashMap<String, Rpc>>,
    upstream: Mutex<HashMap<String, Rpc>>,
    /// Wakes the upstream task of a station.
    wake: Mutex<HashMap<String, Arc<Notify>>>,
    /// Load management, if configured.
    pub load: Mutex<Option<super::load::Manager>>,
}

impl Ocpp {
    pub fn new(controller: Controller, known: BTreeMap<String, Known>) -> Self {
        Self {
            controller: Mutex::new(controller),
            known,
            upstream_allowed: AtomicBool::new(true),
            downstream: Mutex::default(),
            upstream: Mutex::default(),
            wake: Mutex::default(),
            load: Mutex::default(),
        }
    }

    /// Load management (see [`super::load`]): every `period` of virtual
    /// time, reads the meter at `meter` and caps the charging stations.
    pub async fn load_loop(
        self: Arc<Self>,
        ctx: DeviceContext,
        stack: Arc<dyn Stack>,
        meter: std::net::SocketAddr,
        limit_w: Option<f64>,
        period: Duration,
    ) {
        *lock(&self.load) = Some(super::load::Manager::new(limit_w));
        let mut sent: HashMap<String, f64> = HashMap::new();
        loop {
            ctx.clock.sleep(period).await;
            let p = match super::load::read_power_w(stack.as_ref(), meter).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!("load management: {e}");
                    continue;
                }
            };
            let active: Vec<String> = {
                let c = lock(&self.controller);
                c.state
                    .stations
                    .iter()
                    .filter(|(_, s)| {
                        s.connected
                            && s.statuses.iter().any(|(k, v)| {
                                *k > 0
                                    && matches!(
                                        v["status"].as_str(),
                                        Some("Charging" | "SuspendedEVSE" | "SuspendedEV")
                                    )
                            })
                    })
                    .map(|(id, _)| id.clone())
                    .collect()
            };
            let share = lock(&self.load)
                .as_mut()
                .and_then(|m| m.step(p, active.len()));
            let start = crate::charging_station::station::stamp(ctx.clock.utc_now());
            for id in active.into_iter().filter(|_| share.is_some()) {
                let share = share.unwrap_or_default();
                if sent
                    .get(&id)
                    .is_some_and(|w| (w - share).abs() <= super::load::DEADBAND_W)
                {
                    continue;
                }
                let down = lock(&self.downstream).get(&id).cloned();
                let Some(down) = down else { continue };
                let r = down
                    .call(
                        "SetChargingProfile",
                        super::load::profile(share, &start),
                        STATION_TIMEOUT,
                    )
                    .await;
                if r.is_ok() {
                    if let Some(m) = lock(&self.load).as_mut() {
                        m.shares.insert(id.clone(), share);
                    }
                    sent.insert(id, share);
                }
            }
            if let Some(m) = lock(&self.load).as_mut() {
                m.periods += 1;
            }
        }
    }

    fn wake(&self, box_id: &str) -> Arc<Notify> {
        lock(&self.wake)
            .entry(box_id.to_string())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Allows or cuts the upstream links.
    pub fn set_upstream(&self, allowed: bool) {
        self.upstream_allowed.store(allowed, Ordering::SeqCst);
        if !allowed {
            for r in lock(&self.upstream).values() {
                r.close();
            }
        }
        for n in lock(&self.wake).values() {
            n.notify_one();
        }
    }

    fn save(&self, ctx: &DeviceContext) {
        let state = lock(&self.controller).state.clone();
        let _ = ctx.nv.put(STATE_KEY, &state);
    }

    /// The saved state, if any.
    pub fn load(ctx: &DeviceContext) -> Persisted {
        ctx.nv.get(STATE_KEY).ok().flatten().unwrap_or_default()
    }

    /// What the dashboard shows.
    pub fn details(&self) -> Value {
        let c = lock(&self.controller);
        let stations: BTreeMap<String, Value> = c
            .state
            .stations
            .iter()
            .map(|(id, s)| {
                (
                    id.clone(),
                    json!({
                        "connected": s.connected,
                        "supervision": c.supervision_of(id).map(|x| x.name.clone()),
                        "upstream_online": s.online,
                        "queued": s.queue.len(),
                        "delivered": s.queue.delivered,
                        "discarded": s.queue.discarded,
                        "dropped": s.queue.dropped,
                        "transaction_ids": s.queue.mapping().iter().map(|(l, r)| (l.to_string(), *r)).collect::<BTreeMap<_, _>>(),
                        "statuses": s.statuses.iter().map(|(k, v)| (k.to_string(), v["status"].clone())).collect::<BTreeMap<_, _>>(),
                    }),
                )
            })
            .collect();
        let load = lock(&self.load).clone();
        json!({
            "load_management": load,
            "mode": c.mode,
            "upstream_allowed": self.upstream_allowed.load(Ordering::SeqCst),
            "next_transaction_id": c.state.next_tx,
            "stations": stations,
        })
    }

    /// Opens the servers and starts the upstream tasks.
    pub async fn start(
        self: Arc<Self>,
        ctx: DeviceContext,
        site_ip: Ipv4Addr,
        ws_port: u16,
        wss_port: u16,
    ) -> Result<(), BootError> {
        let stack = ctx
            .interface("eth1")
            .ok_or_else(|| BootError::Other("no eth1 interface".into()))?;
        {
            let mut c = lock(&self.controller);
            for s in c.state.stations.values_mut() {
                s.online = false;
                s.connected = false;
            }
        }
        let plain = ctx.listen_tcp("eth1", "ocpp", ws_port).await?;
        let tls = ctx.listen_tcp("eth1", "ocpp-tls", wss_port).await?;
        let server_cfg = SiteCa::get()
            .server_config(&[site_ip, stack.ipv4(), Ipv4Addr::LOCALHOST])
            .map_err(BootError::Other)?;
        let (me, c2) = (self.clone(), ctx.clone());
        link::serve(&ctx, plain, tls, server_cfg, move |s, peer, tls| {
            me.clone()
                .station_link(c2.clone(), s, tls, peer.to_string())
        });
        let ids: Vec<String> = self.known.keys().cloned().collect();
        for id in ids {
            let sup = lock(&self.controller).supervision_of(&id).cloned();
            if let Some(sup) = sup {
                let me = self.clone();
                let stack = stack.clone();
                let c2 = ctx.clone();
                ctx.spawn(async move { me.upstream_task(c2, stack, id, sup).await });
            }
        }
        Ok(())
    }

    /// One station connection. `tls`: Some(client certificate CN) over wss.
    async fn station_link(
        self: Arc<Self>,
        ctx: DeviceContext,
        s: BoxStream,
        tls: Option<Option<String>>,
        peer: String,
    ) {
        let from = peer
            .parse::<std::net::SocketAddr>()
            .ok()
            .and_then(|a| match a.ip() {
                std::net::IpAddr::V4(ip) => Some(ip),
                std::net::IpAddr::V6(_) => None,
            })
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let admission = StationAdmission {
            ctx: &ctx,
            known: &self.known,
            tls,
            from,
        };
        let (ws, box_id) = match link::accept(s, admission).await {
            Ok(accepted) => accepted,
            Err(link::AcceptError::Failed(e)) => {
                ctx.emit(
                    "ocpp",
                    format!("station connection from {} failed: {e}", host_of(&peer)),
                );
                return;
            }
            // Refusals are reported as they leave.
            Err(link::AcceptError::Refused | link::AcceptError::Timeout) => return,
        };
        let (rpc, mut incoming, driver) = rpc::start(ws, Some(Duration::from_secs(30)));
        ctx.spawn(driver);
        if let Some(old) = lock(&self.downstream).insert(box_id.clone(), rpc.clone()) {
            old.close();
        }
        lock(&self.controller).station(&box_id).connected = true;
        ctx.emit(
            "ocpp",
            format!("station {box_id} connected from {}", host_of(&peer)),
        );
        while let Some(call) = incoming.recv().await {
            self.station_call(&ctx, &box_id, call).await;
        }
        let mut d = lock(&self.downstream);
        if d.get(&box_id).is_some_and(|r| r.is_closed()) {
            d.remove(&box_id);
            lock(&self.controller).station(&box_id).connected = false;
        }
    }

    async fn station_call(&self, ctx: &DeviceContext, box_id: &str, call: Incoming) {
        let now = ctx.clock.utc_now();
        let answer = lock(&self.controller).station_call(box_id, &call.action, &call.payload, now);
        self.save(ctx);
        self.wake(box_id).notify_one();
        match answer {
            Answer::Reply(v) => call.reply.value(v),
            Answer::Error(code, d) => call.reply.error(code, &d),
            Answer::AskUpstream { fallback } => {
                let timeout = lock(&self.controller)
                    .supervision_of(box_id)
                    .map_or(10, |s| s.message_timeout_s);
                // A link coming up gets up to the message timeout; a cut
                // link none.
                let until = tokio::time::Instant::now() + Duration::from_secs(timeout as u64);
                let mut up = lock(&self.upstream).get(box_id).cloned();
                while up.is_none()
                    && self.upstream_allowed.load(Ordering::SeqCst)
                    && tokio::time::Instant::now() < until
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    up = lock(&self.upstream).get(box_id).cloned();
                }
                let r = match up {
                    Some(up) => up
                        .call(
                            &call.action,
                            call.payload.clone(),
                            Duration::from_secs(timeout as u64),
                        )
                        .await
                        .ok(),
                    None => None,
                };
                match r {
                    Some(v) => {
                        lock(&self.controller).upstream_answered(&call.action, &call.payload, &v);
                        self.save(ctx);
                        call.reply.value(v);
                    }
                    None => call.reply.value(fallback),
                }
            }
        }
    }

    fn credentials(&self, box_id: &str, sup: &SupervisionConfig) -> Result<Credentials, String> {
        let tls = if sup.url.starts_with("wss://") {
            let pem = match &sup.ca {
                Some(p) => std::fs::read(p).map_err(|e| {
                    format!("supervision {}: CA file {}: {e}", sup.name, p.display())
                })?,
                None => SiteCa::get().pem.clone().into_bytes(),
            };
            Some(link::client_config(&pem, None)?)
        } else {
            None
        };
        Ok(Credentials {
            box_id: box_id.to_string(),
            authorization_key: self
                .known
                .get(box_id)
                .and_then(|k| k.authorization_key.clone()),
            tls,
        })
    }

    async fn upstream_task(
        self: Arc<Self>,
        ctx: DeviceContext,
        stack: Arc<dyn Stack>,
        box_id: String,
        sup: SupervisionConfig,
    ) {
        let wake = self.wake(&box_id);
        loop {
            let ready = self.upstream_allowed.load(Ordering::SeqCst)
                && lock(&self.controller).station(&box_id).boot.is_some();
            if !ready {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(RETRY) => {}
                }
                continue;
            }
            let creds = match self.credentials(&box_id, &sup) {
                Ok(c) => c,
                Err(e) => {
                    ctx.emit("ocpp", e);
                    tokio::time::sleep(RETRY * 10).await;
                    continue;
                }
            };
            let timeout = Duration::from_secs(sup.message_timeout_s as u64);
            match link::connect(stack.as_ref(), &sup.url, &creds, timeout).await {
                Ok(ws) => {
                    let (rpc, incoming, driver) =
                        rpc::start(ws, Some(Duration::from_secs(sup.ping_interval_s as u64)));
                    ctx.spawn(driver);
                    if !self.upstream_allowed.load(Ordering::SeqCst) {
                        rpc.close();
                        continue;
                    }
                    // Per-link news goes to the log, not the event stream:
                    // the links of several stations come up in wall time, in
                    // no fixed order (the stream stays repeatable; the
                    // details show `upstream_online`).
                    tracing::debug!("{}: {box_id}: upstream to {} up", ctx.id, sup.name);
                    let relay = {
                        let me = self.clone();
                        let b = box_id.clone();
                        let c2 = ctx.clone();
                        tokio::spawn(async move { me.relay_to_station(c2, b, incoming).await })
                    };
                    self.send_upstream(&ctx, &box_id, &rpc, timeout).await;
                    rpc.close();
                    relay.abort();
                    lock(&self.upstream).remove(&box_id);
                    lock(&self.controller).upstream_down(&box_id);
                    tracing::debug!("{}: {box_id}: upstream to {} down", ctx.id, sup.name);
                }
                Err(e) => tracing::debug!("{box_id}: upstream: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = wake.notified() => {}
            }
        }
    }

    /// Sends boot + statuses, then plain messages and the queue, until the
    /// link ends.
    async fn send_upstream(&self, ctx: &DeviceContext, box_id: &str, rpc: &Rpc, timeout: Duration) {
        let first = lock(&self.controller).upstream_up(box_id);
        for (action, payload) in first {
            if rpc.call(&action, payload, timeout).await.is_err() {
                return;
            }
        }
        // Forwarded CALLs (Authorize) use the link once it has booted.
        lock(&self.upstream).insert(box_id.to_string(), rpc.clone());
        let wake = self.wake(box_id);
        loop {
            let next = {
                let mut c = lock(&self.controller);
                let st = c.station(box_id);
                match st.outbox.pop_front() {
                    Some((a, p)) => Some((false, a, p)),
                    None => st.queue.front().map(|(a, p)| (true, a, p)),
                }
            };
            let Some((tx, action, payload)) = next else {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = rpc.closed().cancelled_owned() => return,
                }
                continue;
            };
            let r = rpc.call(&action, payload, timeout).await;
            match (tx, r) {
                (false, Ok(_)) | (false, Err(CallFailed::Error { .. })) => {}
                (true, Ok(v)) => {
                    let a = lock(&self.controller).station(box_id).queue.ack(&v);
                    if let Acked::Started { local, remote } = a {
                        tracing::debug!(
                            "{}: {box_id}: transaction {local} is {remote} at the CSMS",
                            ctx.id
                        );
                    }
                    self.save(ctx);
                }
                (true, Err(CallFailed::Error { code, description })) => {
                    let dropped = lock(&self.controller).station(box_id).queue.failed();
                    if dropped {
                        ctx.emit(
                            "ocpp",
                            format!(
                                "{}: {} discarded after CALLERROR {:?}: {}",
                                box_id, action, code, description
                            ),
                        );
                    }
                    self.save(ctx);
                }
                (_, Err(_)) => return,
            }
        }
    }

    /// CALLs of the CSMS for `box_id`: relayed to the station.
    async fn relay_to_station(
        self: Arc<Self>,
        _ctx: DeviceContext,
        box_id: String,
        mut incoming: tokio::sync::mpsc::UnboundedReceiver<Incoming>,
    ) {
        while let Some(call) = incoming.recv().await {
            let payload = lock(&self.controller).to_station(&box_id, &call.action, &call.payload);
            let down = lock(&self.downstream).get(&box_id).cloned();
            let Some(down) = down else {
                call.reply.error(
                    ErrorCode::GenericError,
                    &format!("station {box_id} is not connected to the EV Charging Expert"),
                );
                continue;
            };
            match down.call(&call.action, payload, STATION_TIMEOUT).await {
                Ok(v) => call.reply.value(v),
                Err(CallFailed::Error { code, description }) => {
                    call.reply.error(code, &description)
                }
                Err(e) => call
                    .reply
                    .error(ErrorCode::GenericError, &format!("station {box_id}: {e}")),
            }
        }
    }
}
