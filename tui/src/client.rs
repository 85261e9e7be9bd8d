//! The dashboard's side of the control API: polls the devices, the clock,
//! the link faults, the open device's details and the scenarios
//! (`GET /api/v1/scenarios`; a site that does not serve them just shows
//! none), follows the server-sent event stream, sends [`Command`]s through
//! `POST /api/v1/commands` and starts scenarios through
//! `POST /api/v1/scenarios/run`.
//! It fills the shared [`Snapshot`]; it never draws.
//!
//! Contract: runs on a thread of its own (a current-thread tokio runtime)
//! until the [`Client`] is dropped. When the site stops answering the
//! snapshot says `Conn::Lost` and keeps the last data; both the poller and
//! the event stream retry every half second and the snapshot counts the
//! reconnection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use fieldtwin_emulator::clock::ClockStatus;
use fieldtwin_emulator::control::{Command, Event, Reply};
use fieldtwin_emulator::device::DeviceStatus;
use fieldtwin_emulator::net::fault::LinkFault;
use fieldtwin_emulator::scenario_api::{Run, RunRequest, Scenarios};
use tokio::sync::{Notify, mpsc};

use crate::state::{Conn, Snapshot, power_name};

enum Request {
    Send(Command),
    Detail(Option<String>),
    RunScenario(String),
}

/// Handle of the background client.
pub struct Client {
    snap: Arc<Mutex<Snapshot>>,
    tx: mpsc::UnboundedSender<Request>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Starts polling `api` every `every`.
    pub fn spawn(api: SocketAddr, every: Duration) -> anyhow::Result<Self> {
        let snap = Arc::new(Mutex::new(Snapshot::new(&api.to_string())));
        let (tx, rx) = mpsc::unbounded_channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Shared {
            api,
            snap: snap.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            detail: Arc::new(Mutex::new(None)),
            wake: Arc::new(Notify::new()),
            clock_seen: Arc::new(Mutex::new(None)),
        };
        std::thread::Builder::new()
            .name("tui-client".into())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::select! {
                        _ = shared.poll(every) => {}
                        _ = shared.events() => {}
                        _ = shared.requests(rx) => {}
                    }
                })
            })?;
        Ok(Self { snap, tx })
    }

    /// The snapshot, locked (render while holding it; keep it short).
    pub fn snapshot(&self) -> MutexGuard<'_, Snapshot> {
        self.snap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a command to the site (the answer lands in `Snapshot::reply`).
    pub fn send(&self, cmd: Command) {
        let _ = self.tx.send(Request::Send(cmd));
    }

    /// Opens (or closes) the detail view of a device.
    pub fn detail(&self, id: Option<String>) {
        let _ = self.tx.send(Request::Detail(id));
    }

    /// Starts a scenario of the site's library (the answer lands in
    /// `Snapshot::reply`, its steps in `Snapshot::scenarios`).
    pub fn run_scenario(&self, name: String) {
        let _ = self.tx.send(Request::RunScenario(name));
    }
}

#[derive(Clone)]
struct Shared {
    api: SocketAddr,
    snap: Arc<Mutex<Snapshot>>,
    http: reqwest::Client,
    detail: Arc<Mutex<Option<String>>>,
    wake: Arc<Notify>,
    /// The last clock and when it was read, to stamp events with site time.
    clock_seen: Arc<Mutex<Option<(ClockStatus, Instant)>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Polled = (
    Vec<DeviceStatus>,
    ClockStatus,
    BTreeMap<String, LinkFault>,
    Option<DeviceStatus>,
    Option<Scenarios>,
);

impl Shared {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.http.get(self.url(path)).send().await?;
        let status = resp.status();
        if !status.is_success() {
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            anyhow::bail!(
                "{path}: {}",
                body["error"].as_str().unwrap_or(status.as_str())
            );
        }
        resp.json()
            .await
            .with_context(|| format!("{path}: unexpected answer"))
    }

    async fn fetch(&self) -> anyhow::Result<Polled> {
        let detail_id = lock(&self.detail).clone();
        let devices = self.get("/api/v1/devices").await?;
        let clock = self.get("/api/v1/clock").await?;
        let links = self.get("/api/v1/links").await?;
        let detail = match detail_id {
            Some(id) => Some(self.get(&format!("/api/v1/devices/{id}")).await?),
            None => None,
        };
        // Optional: a site without the scenario endpoints is still a site.
        let scenarios = self.get("/api/v1/scenarios").await.ok();
        Ok((devices, clock, links, detail, scenarios))
    }

    async fn poll(&self, every: Duration) {
        let mut last: Option<Instant> = None;
        let mut ever = false;
        loop {
            let started = Instant::now();
            match self.fetch().await {
                Ok((devices, clock, links, detail, scenarios)) => {
                    *lock(&self.clock_seen) = Some((clock.clone(), Instant::now()));
                    let mut s = lock(&self.snap);
                    if s.conn != Conn::Connected {
                        if ever {
                            s.reconnects += 1;
                            s.reply = Some(("reconnected to the site".into(), false));
                        }
                        s.conn = Conn::Connected;
                    }
                    ever = true;
                    let dt = last.map(|l| started.duration_since(l).as_secs_f64());
                    s.set_devices(devices, dt);
                    s.clock = Some(clock);
                    s.links = links;
                    s.detail = detail;
                    s.scenarios = scenarios;
                    last = Some(started);
                }
                Err(e) => {
                    let mut s = lock(&self.snap);
                    s.conn = Conn::Lost(format!("{} ({e:#})", self.api));
                    last = None;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Site time now, estimated from the last clock read.
    fn site_now(&self) -> Option<DateTime<Utc>> {
        let seen = lock(&self.clock_seen);
        let (c, at) = seen.as_ref()?;
        let dt = if c.paused {
            0.0
        } else {
            at.elapsed().as_secs_f64() * c.speed
        };
        Some(c.site_time + chrono::Duration::microseconds((dt * 1e6) as i64))
    }

    async fn events(&self) {
        loop {
            // Errors show through the poller's connection state.
            let _ = self.follow_events().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn follow_events(&self) -> anyhow::Result<()> {
        // No timeout on the stream itself (it idles between events).
        let mut resp = reqwest::Client::new()
            .get(self.url("/api/v1/events"))
            .send()
            .await?
            .error_for_status()?;
        let mut buf = String::new();
        while let Some(chunk) = resp.chunk().await? {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n");
                if data.is_empty() {
                    continue;
                }
                if let Ok(ev) = serde_json::from_str::<Event>(&data) {
                    let at = match &ev {
                        Event::Clock(c) => Some(c.site_time),
                        _ => self.site_now(),
                    };
                    if let Event::Clock(c) = &ev {
                        *lock(&self.clock_seen) = Some((c.clone(), Instant::now()));
                    }
                    lock(&self.snap).push_event(at, ev);
                }
            }
        }
        Ok(())
    }

    async fn requests(&self, mut rx: mpsc::UnboundedReceiver<Request>) {
        while let Some(req) = rx.recv().await {
            match req {
                Request::Detail(id) => {
                    *lock(&self.detail) = id;
                    lock(&self.snap).detail = None;
                    self.wake.notify_one();
                }
                Request::RunScenario(name) => {
                    lock(&self.snap).reply = Some((format!("starting scenario {name}…"), false));
                    let reply = match self.start_scenario(&name).await {
                        Ok(run) => (
                            format!("scenario {name} started (run {}: {})", run.id, run.name),
                            false,
                        ),
                        Err(e) => (format!("scenario run {name}: {e:#}"), true),
                    };
                    lock(&self.snap).reply = Some(reply);
                    self.wake.notify_one();
                }
                Request::Send(cmd) => {
                    lock(&self.snap).reply = Some((format!("sending {}…", describe(&cmd)), false));
                    let reply = self.send(&cmd).await;
                    let mut s = lock(&self.snap);
                    s.reply = Some(match reply {
                        Ok(Reply::Device(d)) => (
                            format!(
                                "{}: {} — power {}",
                                describe(&cmd),
                                d.id,
                                power_name(d.power)
                            ),
                            false,
                        ),
                        Ok(Reply::Clock(c)) => {
                            s.clock = Some(c.clone());
                            *lock(&self.clock_seen) = Some((c.clone(), Instant::now()));
                            (
                                format!(
                                    "{}: site time {}",
                                    describe(&cmd),
                                    c.site_time.format("%Y-%m-%d %H:%M:%S")
                                ),
                                false,
                            )
                        }
                        Ok(Reply::Links(l)) => {
                            s.links = l;
                            (format!("{}: done", describe(&cmd)), false)
                        }
                        Ok(other) => (
                            format!(
                                "{}: {}",
                                describe(&cmd),
                                serde_json::to_string(&other).unwrap_or_default()
                            ),
                            false,
                        ),
                        Err(e) => (format!("{}: {e:#}", describe(&cmd)), true),
                    });
                    drop(s);
                    self.wake.notify_one();
                }
            }
        }
    }

    async fn start_scenario(&self, name: &str) -> anyhow::Result<Run> {
        let run = RunRequest {
            name: name.to_string(),
        };
        self.post("/api/v1/scenarios/run", &run).await
    }

    async fn send(&self, cmd: &Command) -> anyhow::Result<Reply> {
        self.post("/api/v1/commands", cmd).await
    }

    /// POSTs `body` as JSON to `path` of the control API: its answer, or
    /// the `error` it gives when it refuses.
    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        let resp = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .with_context(|| format!("no fieldtwin answers at {}", self.api))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.context("unexpected answer")?;
        if !status.is_success() {
            anyhow::bail!("{}", body["error"].as_str().unwrap_or("refused"));
        }
        Ok(serde_json::from_value(body)?)
    }
}

/// A short text for a command (status line).
pub fn describe(cmd: &Command) -> String {
    serde_json::to_value(cmd)
        .ok()
        .and_then(|v| {
            let o = v.as_object()?;
            let mut parts: Vec<String> = vec![o.get("command")?.as_str()?.replace('_', " ")];
            for (k, v) in o.iter().filter(|(k, _)| *k != "command") {
                parts.push(match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => format!("{k}={other}"),
                });
            }
            Some(parts.join(" "))
        })
        .unwrap_or_else(|| format!("{cmd:?}"))
}
