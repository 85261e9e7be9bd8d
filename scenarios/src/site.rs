//! The scenario engine's view of a running site: its control API (commands,
//! device status, clock, the event stream) and the clients a scenario uses
//! on the devices' own services (Modbus TCP, HTTPS, TCP connects).
//!
//! Contract: every call blocks the calling (script) thread and runs on the
//! client's own tokio runtime, so a site started in the same process keeps
//! running on its runtime meanwhile. Commands go through
//! `POST /api/v1/commands` as JSON (any [`Command`] variant, present or
//! future); errors carry the API's own message. Events are collected from
//! `GET /api/v1/events` from [`SiteClient::connect`] on, with the virtual
//! time at which they arrived.
//!
//! [`Command`]: fieldtwin_emulator::control::Command

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::web::{self, WebResponse};

/// A loopback address no host-mode device uses (127.77.S.N with N = 254 of
/// segment 255), to tell the machine's wildcard listeners apart.
const SPARE_LOOPBACK: &str = "127.77.255.254";
/// Longest [`Site::settle`] waits for the site to go quiet.
const SETTLE_MAX: Duration = Duration::from_millis(500);

/// One event seen on the stream.
#[derive(Debug, Clone)]
pub struct SeenEvent {
    /// Position in the stream since connect (0-based).
    pub seq: usize,
    pub event: Value,
}

/// A blocking client of one site.
pub struct SiteClient {
    rt: tokio::runtime::Runtime,
    api: SocketAddr,
    http: reqwest::Client,
    events: Arc<Mutex<Vec<SeenEvent>>>,
    /// Cookie jars by device id (HTTPS sessions of the scenario).
    jars: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    flood: Mutex<Option<Flood>>,
}

/// A Modbus flood running in the background.
struct Flood {
    stop: Arc<std::sync::atomic::AtomicBool>,
    requests: Arc<std::sync::atomic::AtomicU64>,
    errors: Arc<std::sync::atomic::AtomicU64>,
    started: std::time::Instant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What a flood did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodReport {
    /// Requests answered (data or exception).
    pub requests: u64,
    /// Transport errors (refused, reset, timeout).
    pub errors: u64,
    pub wall_s: f64,
}

impl std::fmt::Debug for SiteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteClient")
            .field("api", &self.api)
            .finish()
    }
}

/// Modbus outcome: registers, an exception code, or a transport error.
#[derive(Debug, Clone, PartialEq)]
pub enum ModbusOutcome {
    Values(Vec<u16>),
    Written,
    Exception(u8),
    Failed(String),
}

impl SiteClient {
    /// Connects to the control API at `api` and starts collecting events.
    pub fn connect(api: SocketAddr) -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the scenario client runtime: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let client = Self {
            rt,
            api,
            http,
            events: events.clone(),
            jars: Mutex::new(BTreeMap::new()),
            flood: Mutex::new(None),
        };
        // The event stream first, so nothing the scenario causes is missed.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let url = format!("http://{api}/api/v1/events");
        client.rt.spawn(async move {
            let Ok(mut resp) = reqwest::Client::new().get(&url).send().await else {
                let _ = ready_tx.send(false);
                return;
            };
            let _ = ready_tx.send(resp.status().is_success());
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    for line in block.lines() {
                        if let Some(data) = line.strip_prefix("data:")
                            && let Ok(v) = serde_json::from_str::<Value>(data.trim())
                        {
                            let mut ev = events.lock().unwrap_or_else(|e| e.into_inner());
                            let seq = ev.len();
                            ev.push(SeenEvent { seq, event: v });
                        }
                    }
                }
            }
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(true) => Ok(client),
            _ => Err(format!(
                "no fieldtwin control API answers at {api}; is `fieldtwin run` running? (use --api)"
            )),
        }
    }

    pub fn api(&self) -> SocketAddr {
        self.api
    }

    fn get(&self, path: &str) -> Result<Value, String> {
        let url = format!("http://{}{path}", self.api);
        self.rt.block_on(async {
            let resp = self
                .http
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("control API unreachable: {e}"))?;
            answer(resp).await
        })
    }

    /// Sends any command (JSON of a `Command`); returns the reply.
    pub fn command(&self, cmd: &Value) -> Result<Value, String> {
        let url = format!("http://{}/api/v1/commands", self.api);
        self.rt.block_on(async {
            let resp = self
                .http
                .post(&url)
                .json(cmd)
                .send()
                .await
                .map_err(|e| format!("control API unreachable: {e}"))?;
            answer(resp).await
        })
    }

    pub fn devices(&self) -> Result<Value, String> {
        self.get("/api/v1/devices")
    }

    /// Detailed status of one device; the error names an unknown id.
    pub fn device(&self, id: &str) -> Result<Value, String> {
        self.get(&format!("/api/v1/devices/{}", encode_path(id)))
    }

    pub fn clock(&self) -> Result<Value, String> {
        self.get("/api/v1/clock")
    }

    /// Virtual seconds since the site epoch.
    pub fn elapsed_s(&self) -> Result<f64, String> {
        self.clock()?["elapsed_s"]
            .as_f64()
            .ok_or_else(|| "the clock answer has no elapsed_s".to_string())
    }

    /// Every event seen since connect.
    pub fn events(&self) -> Vec<SeenEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Lets the site's tasks react: waits until no new event has arrived
    /// for `quiet` of wall time (at most [`SETTLE_MAX`]; the site's clock
    /// may run meanwhile at its speed). After a jump of a paused clock the
    /// site goes quiet once every task the jump woke has had its say, so
    /// what they report lands before the scenario's next step.
    pub fn settle(&self, quiet: Duration) {
        self.settle_within(quiet, SETTLE_MAX);
    }

    /// [`SiteClient::settle`] with its own limit `max` (the site's start,
    /// whose devices connect to each other in wall time, takes longer).
    pub fn settle_within(&self, quiet: Duration, max: Duration) {
        let count = || self.events.lock().unwrap_or_else(|e| e.into_inner()).len();
        let give_up = std::time::Instant::now() + max;
        let mut seen = count();
        loop {
            std::thread::sleep(quiet);
            let now = count();
            if now == seen || std::time::Instant::now() >= give_up {
                return;
            }
            seen = now;
        }
    }

    /// The `host:port` a client uses for a device's service on `port`
    /// (host-mode port offset applied), from the device's service list, or
    /// its first address and `port` itself.
    pub fn service_address(&self, device: &str, port: u16) -> Result<String, String> {
        let st = self.device(device)?;
        if let Some(s) = st["services"].as_array().and_then(|l| {
            l.iter()
                .find(|s| s["port"].as_u64() == Some(u64::from(port)))
        }) && let Some(a) = s["address"].as_str()
        {
            return Ok(a.to_string());
        }
        Ok(format!("{}:{port}", self.host_ip(device, &st)?))
    }

    /// The address a client reaches the device at (host mode: 127.77.S.N).
    fn host_ip(&self, device: &str, st: &Value) -> Result<String, String> {
        if let Some(a) = st["services"]
            .as_array()
            .and_then(|l| l.first())
            .and_then(|s| s["address"].as_str())
            .and_then(|a| a.rsplit_once(':').map(|(h, _)| h.to_string()))
        {
            return Ok(a);
        }
        st["addresses"]
            .as_object()
            .and_then(|m| m.values().next())
            .and_then(|v| v.as_str())
            .map(String::from)
            .ok_or_else(|| format!("device {device} has no address"))
    }

    /// Offset the host adds to the device's low ports (0 when it binds real ports).
    fn port_offset(st: &Value) -> u16 {
        st["services"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|s| {
                let port = s["port"].as_u64()? as u16;
                let used: u16 = s["address"].as_str()?.rsplit_once(':')?.1.parse().ok()?;
                (used != port).then(|| used.wrapping_sub(port))
            })
            .unwrap_or(0)
    }

    /// Reads (`fc` 3 holding, 4 input) registers through a device's Modbus TCP server.
    pub fn modbus_read(
        &self,
        device: &str,
        unit: u8,
        fc: u8,
        addr: u16,
        count: u16,
    ) -> ModbusOutcome {
        let target = match self.service_address(device, 502) {
            Ok(t) => t,
            Err(e) => return ModbusOutcome::Failed(e),
        };
        self.rt
            .block_on(modbus(target, unit, ModbusOp::Read { fc, addr, count }))
    }

    /// Writes one holding register (function 6).
    pub fn modbus_write(&self, device: &str, unit: u8, addr: u16, value: u16) -> ModbusOutcome {
        let target = match self.service_address(device, 502) {
            Ok(t) => t,
            Err(e) => return ModbusOutcome::Failed(e),
        };
        self.rt
            .block_on(modbus(target, unit, ModbusOp::Write { addr, value }))
    }

    /// Starts a Modbus flood: `connections` clients each sending function-3
    /// reads of `count` registers at `addr` back to back, as fast as the
    /// device answers, until [`SiteClient::flood_stop`].
    pub fn flood_start(
        &self,
        device: &str,
        unit: u8,
        addr: u16,
        count: u16,
        connections: usize,
    ) -> Result<(), String> {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let mut slot = self.flood.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Err("a Modbus flood is already running; stop it first".into());
        }
        let target: SocketAddr = self
            .service_address(device, 502)?
            .parse()
            .map_err(|e| format!("bad Modbus address of {device}: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let tasks = (0..connections.clamp(1, 64))
            .map(|_| {
                let (stop, requests, errors) = (stop.clone(), requests.clone(), errors.clone());
                self.rt.spawn(async move {
                    use tokio_modbus::prelude::*;
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(Ok(mut ctx)) = tokio::time::timeout(
                            Duration::from_secs(2),
                            tcp::connect_slave(target, Slave(unit)),
                        )
                        .await
                        else {
                            errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        while !stop.load(Ordering::Relaxed) {
                            match tokio::time::timeout(
                                Duration::from_secs(2),
                                ctx.read_holding_registers(addr, count),
                            )
                            .await
                            {
                                Ok(Ok(_)) => {
                                    requests.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        *slot = Some(Flood {
            stop,
            requests,
            errors,
            started: std::time::Instant::now(),
            tasks,
        });
        Ok(())
    }

    /// Stops the flood and reports what it did.
    pub fn flood_stop(&self) -> Result<FloodReport, String> {
        use std::sync::atomic::Ordering;
        let flood = self
            .flood
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| "no Modbus flood is running (modbus_flood_start first)".to_string())?;
        flood.stop.store(true, Ordering::Relaxed);
        let wall_s = flood.started.elapsed().as_secs_f64();
        self.rt.block_on(async {
            for t in flood.tasks {
                let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
            }
        });
        Ok(FloodReport {
            requests: flood.requests.load(Ordering::Relaxed),
            errors: flood.errors.load(Ordering::Relaxed),
            wall_s,
        })
    }

    /// One HTTPS request to a device's web server (port 443), with the
    /// scenario's cookie jar of that device.
    pub fn https(
        &self,
        device: &str,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<WebResponse, String> {
        let target = self.service_address(device, 443)?;
        let cookie = {
            let jars = self.jars.lock().unwrap_or_else(|e| e.into_inner());
            jars.get(device)
                .map(|j| {
                    j.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default()
        };
        let resp = self
            .rt
            .block_on(web::request(&target, method, path, &cookie, body))?;
        let mut jars = self.jars.lock().unwrap_or_else(|e| e.into_inner());
        let jar = jars.entry(device.to_string()).or_default();
        for (k, v) in &resp.set_cookies {
            if v.is_empty() {
                jar.remove(k);
            } else {
                jar.insert(k.clone(), v.clone());
            }
        }
        Ok(resp)
    }

    /// Forgets the HTTPS session cookies of a device (a new browser).
    pub fn forget_cookies(&self, device: &str) {
        self.jars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(device);
    }

    /// Whether a TCP connect to the device's `port` succeeds (host-mode
    /// offset applied to the ports the device lists).
    pub fn tcp_open(&self, device: &str, port: u16) -> Result<bool, String> {
        let st = self.device(device)?;
        let ip = self.host_ip(device, &st)?;
        let offset = Self::port_offset(&st);
        let p = if port < 1024 {
            port.wrapping_add(offset)
        } else {
            port
        };
        Ok(self.rt.block_on(async {
            matches!(
                tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect((ip.as_str(), p))
                )
                .await,
                Ok(Ok(_))
            )
        }))
    }

    /// TCP connect scan of the device's ports `from..=to`; returns the open
    /// ports as the device numbers them (host-mode offset removed).
    pub fn port_scan(&self, device: &str, from: u16, to: u16) -> Result<Vec<u16>, String> {
        let st = self.device(device)?;
        let ip = self.host_ip(device, &st)?;
        let offset = Self::port_offset(&st);
        let ports: Vec<u16> = (from..=to).collect();
        let open = self.rt.block_on(async {
            let mut open = Vec::new();
            for chunk in ports.chunks(256) {
                let mut set = tokio::task::JoinSet::new();
                for &p in chunk {
                    let ip = ip.clone();
                    set.spawn(async move {
                        let ok = matches!(
                            tokio::time::timeout(
                                Duration::from_secs(1),
                                tokio::net::TcpStream::connect((ip.as_str(), p))
                            )
                            .await,
                            Ok(Ok(_))
                        );
                        (p, ok)
                    });
                }
                while let Some(Ok((p, ok))) = set.join_next().await {
                    if ok {
                        open.push(p);
                    }
                }
            }
            open
        });
        // In host mode, listeners on 0.0.0.0 of this machine answer on every
        // loopback address: drop the ports a spare loopback address also has.
        let open = if ip.starts_with("127.") {
            self.rt.block_on(async {
                let mut own = Vec::new();
                for p in open {
                    let elsewhere = matches!(
                        tokio::time::timeout(
                            Duration::from_secs(1),
                            tokio::net::TcpStream::connect((SPARE_LOOPBACK, p))
                        )
                        .await,
                        Ok(Ok(_))
                    );
                    if !elsewhere {
                        own.push(p);
                    }
                }
                own
            })
        } else {
            open
        };
        let mut device_ports: Vec<u16> = open
            .into_iter()
            .filter_map(|p| {
                if offset == 0 {
                    return Some(p);
                }
                // Low ports appear moved up by the offset; a real low port
                // cannot be bound without privileges.
                let back = p.wrapping_sub(offset);
                if p >= offset && back < 1024 {
                    Some(back)
                } else if p >= 1024 {
                    Some(p)
                } else {
                    None
                }
            })
            .collect();
        device_ports.sort_unstable();
        device_ports.dedup();
        Ok(device_ports)
    }
}

async fn answer(resp: reqwest::Response) -> Result<Value, String> {
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .map_err(|e| format!("the control API sent an unexpected answer: {e}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(body["error"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| format!("control API refused the request ({status})")))
    }
}

fn encode_path(s: &str) -> String {
    web::percent_encode(s)
}

enum ModbusOp {
    Read { fc: u8, addr: u16, count: u16 },
    Write { addr: u16, value: u16 },
}

async fn modbus(target: String, unit: u8, op: ModbusOp) -> ModbusOutcome {
    use tokio_modbus::prelude::*;
    let addr: SocketAddr = match tokio::net::lookup_host(&target)
        .await
        .ok()
        .and_then(|mut a| a.next())
    {
        Some(a) => a,
        None => return ModbusOutcome::Failed(format!("bad Modbus address {target}")),
    };
    let work = async {
        let mut ctx = tcp::connect_slave(addr, Slave(unit))
            .await
            .map_err(|e| format!("cannot connect to Modbus TCP at {target}: {e}"))?;
        let r = match op {
            ModbusOp::Read { fc: 4, addr, count } => ctx
                .read_input_registers(addr, count)
                .await
                .map(|r| r.map(ModbusOutcome::Values)),
            ModbusOp::Read { addr, count, .. } => ctx
                .read_holding_registers(addr, count)
                .await
                .map(|r| r.map(ModbusOutcome::Values)),
            ModbusOp::Write { addr, value } => ctx
                .write_single_register(addr, value)
                .await
                .map(|r| r.map(|()| ModbusOutcome::Written)),
        };
        let _ = ctx.disconnect().await;
        Ok::<_, String>(match r {
            Ok(Ok(o)) => o,
            Ok(Err(exc)) => ModbusOutcome::Exception(u8::from(exc)),
            Err(e) => ModbusOutcome::Failed(format!("Modbus request to {target} failed: {e}")),
        })
    };
    match tokio::time::timeout(Duration::from_secs(10), work).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => ModbusOutcome::Failed(e),
        Err(_) => ModbusOutcome::Failed(format!("no Modbus answer from {target} within 10 s")),
    }
}
