//! The Workstation: the attacker/engineering node that scenarios act from
//! (issue 9; DESIGN.md "Scenarios").
//!
//! Contract:
//! - A site device of its own (model `Workstation`, in the site file or
//!   added at run time with `add_workstation`): its own MAC and IP on a
//!   segment in TAP mode, its own loopback address in host mode. It serves
//!   nothing (no open port), except the OCPP relay of [`ocpp::Mitm`] while
//!   it runs.
//! - Everything it does goes through its own [`Stack`] (DESIGN.md principle
//!   12): its traffic crosses the switch, the link faults and the segment's
//!   capture like any outside client's.
//! - [`Device::attack`] runs one [`Attack`] and reports what the target
//!   answered ([`fieldtwin_emulator::attack`] states the common rules). An
//!   attack ends when the Workstation loses power.
//! - Modules: [`web`] (HTTPS login and firmware upload), [`modbus`] (reads,
//!   writes, floods), [`scan`] (TCP connect scan, half-open connections),
//!   [`replay`] (frame filter and re-sending of captured frames), [`ocpp`]
//!   (a rogue charge point, a man-in-the-middle OCPP relay: the one
//!   attack that keeps running in the background, and opens ports on the
//!   Workstation while it does).

pub mod modbus;
pub mod ocpp;
pub mod replay;
pub mod scan;
pub mod web;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fieldtwin_emulator::attack::{Attack, AttackEnv, AttackReport, AttackResult};
use fieldtwin_emulator::device::{BootError, Device, DeviceContext};
use fieldtwin_emulator::net::{BoxStream, Stack};
use fieldtwin_emulator::site::DeviceConfig;
use futures::FutureExt;
use futures::future::BoxFuture;

/// How long a TCP connect may take before the target counts as silent.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may wait for its answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most half-open connections one Workstation holds.
pub const MAX_HELD: usize = 1024;

/// A Workstation device.
pub struct Workstation {
    id: String,
    /// The context of the current boot (`None` before the first boot).
    ctx: Mutex<Option<DeviceContext>>,
    /// Connections left half-open by `half_open`, kept (never closed) until
    /// the Workstation loses power.
    held: Mutex<Vec<BoxStream>>,
    /// Counter of attacks, for the seeds of their random choices.
    runs: std::sync::atomic::AtomicU64,
    /// The running OCPP relay, if any.
    mitm: Mutex<Option<ocpp::Mitm>>,
}

impl Workstation {
    pub fn new(dev: &DeviceConfig) -> Self {
        Self {
            id: dev.id.clone(),
            ctx: Mutex::new(None),
            held: Mutex::new(Vec::new()),
            runs: std::sync::atomic::AtomicU64::new(0),
            mitm: Mutex::new(None),
        }
    }

    /// The context of the running boot, or why the Workstation cannot act.
    fn running(&self) -> Result<DeviceContext, String> {
        let ctx = self
            .ctx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|c| !c.power_lost().is_cancelled());
        ctx.ok_or_else(|| {
            format!(
                "workstation {} is off; power it on before running an attack",
                self.id
            )
        })
    }

    /// Number of half-open connections held.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The Workstation's one network interface.
fn nic(ctx: &DeviceContext) -> Result<Arc<dyn Stack>, String> {
    ctx.interface("eth1")
        .ok_or_else(|| format!("workstation {} has no network interface", ctx.id))
}

/// Where a client really connects to reach service port `port` at `ip`: in
/// host mode a loopback target listens on its public port (the port offset
/// applies); a site address is mapped by the host backend itself.
pub fn endpoint(stack: &dyn Stack, ip: Ipv4Addr, port: u16) -> SocketAddr {
    if ip.is_loopback() {
        SocketAddr::from((ip, stack.public_port(port)))
    } else {
        SocketAddr::from((ip, port))
    }
}

/// Connects from `stack` to `to` within [`CONNECT_TIMEOUT`].
pub async fn connect(stack: &dyn Stack, to: SocketAddr) -> Result<BoxStream, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, stack.connect_tcp(to)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("cannot connect to {to}: {e}")),
        Err(_) => Err(format!(
            "cannot connect to {to}: no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

impl Device for Workstation {
    fn id(&self) -> &str {
        &self.id
    }

    fn model(&self) -> &str {
        "Workstation"
    }

    fn boot(self: Arc<Self>, ctx: DeviceContext) -> BoxFuture<'static, Result<(), BootError>> {
        async move {
            // Connections of a previous boot died with the power.
            self.held.lock().unwrap_or_else(|e| e.into_inner()).clear();
            if let Some(m) = self.mitm.lock().unwrap_or_else(|e| e.into_inner()).take() {
                m.stop();
            }
            *self.ctx.lock().unwrap_or_else(|e| e.into_inner()) = Some(ctx);
            Ok(())
        }
        .boxed()
    }

    fn details(
        &self,
        _nv: &fieldtwin_emulator::storage::Nv,
        _clock: &fieldtwin_emulator::clock::Clock,
    ) -> fieldtwin_emulator::device::Details {
        let mut d = fieldtwin_emulator::device::Details::default();
        if let Some(m) = self.mitm.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let stats = m.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
            d.extra.insert(
                "mitm".into(),
                serde_json::to_value(stats).unwrap_or_default(),
            );
        }
        d
    }

    fn attack<'a>(
        &'a self,
        attack: Attack,
        env: AttackEnv,
    ) -> BoxFuture<'a, Result<AttackReport, String>> {
        async move {
            let ctx = self.running()?;
            let stack = nic(&ctx)?;
            let run = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let started = Instant::now();
            let lost = ctx.power_lost();
            let work = self.run(&ctx, &stack, &env, attack, run);
            let (target, result) = tokio::select! {
                r = work => r?,
                _ = lost.cancelled() => {
                    return Err(format!("workstation {} lost power during the attack", self.id));
                }
            };
            Ok(AttackReport {
                from: self.id.clone(),
                source: stack.ipv4().to_string(),
                target,
                wall_ms: started.elapsed().as_millis() as u64,
                result,
            })
        }
        .boxed()
    }
}

impl Workstation {
    async fn run(
        &self,
        ctx: &DeviceContext,
        stack: &Arc<dyn Stack>,
        env: &AttackEnv,
        attack: Attack,
        run: u64,
    ) -> Result<(String, AttackResult), String> {
        let s: &dyn Stack = stack.as_ref();
        match attack {
            Attack::HttpsLogin {
                target,
                user,
                password,
            } => {
                let to = endpoint(s, env.resolve(&target)?, web::HTTPS_PORT);
                let r = web::login(s, to, &user, &password).await?;
                Ok((to.to_string(), r.into_result()))
            }
            Attack::FirmwareUpload {
                target,
                user,
                password,
                bytes_hex,
                random_len,
            } => {
                let image = web::image(bytes_hex.as_deref(), random_len, ctx.seed ^ run)?;
                let to = endpoint(s, env.resolve(&target)?, web::HTTPS_PORT);
                Ok((
                    to.to_string(),
                    web::firmware_upload(s, to, &user, &password, image).await?,
                ))
            }
            Attack::ModbusRead {
                target,
                unit,
                function,
                address,
                count,
            } => {
                let req = modbus::read_request(unit, function, address, count)?;
                let to = endpoint(s, env.resolve(&target)?, modbus::PORT);
                Ok((to.to_string(), modbus::read(s, to, req).await?))
            }
            Attack::ModbusWrite {
                target,
                unit,
                function,
                address,
                values,
            } => {
                let req = modbus::write_request(unit, function, address, &values)?;
                let to = endpoint(s, env.resolve(&target)?, modbus::PORT);
                Ok((to.to_string(), modbus::write(s, to, req).await?))
            }
            Attack::ModbusFlood {
                target,
                unit,
                connections,
                duration_s,
                address,
                count,
            } => {
                let plan = modbus::flood_plan(unit, connections, duration_s, address, count)?;
                let to = endpoint(s, env.resolve(&target)?, modbus::PORT);
                Ok((to.to_string(), modbus::flood(stack.clone(), to, plan).await))
            }
            Attack::PortScan {
                target,
                ports,
                proto: _,
            } => {
                let ports = ports.expand()?;
                let ip = env.resolve(&target)?;
                Ok((
                    ip.to_string(),
                    scan::port_scan(stack.clone(), ip, ports).await,
                ))
            }
            Attack::HalfOpen { target, port } => {
                if port == 0 {
                    return Err("port 0 cannot be connected to; give the service port".into());
                }
                if self.held() >= MAX_HELD {
                    return Err(format!(
                        "workstation {} already holds {MAX_HELD} half-open connections; power-cycle it to drop them",
                        self.id
                    ));
                }
                let to = endpoint(s, env.resolve(&target)?, port);
                let stream = connect(s, to).await?;
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                held.push(stream);
                Ok((
                    to.to_string(),
                    AttackResult::HalfOpen {
                        local: s.ipv4().to_string(),
                        held: held.len(),
                    },
                ))
            }
            Attack::OcppConnect {
                target,
                box_id,
                authorization_key,
                tls,
                port,
            } => {
                let default = if tls { ocpp::WSS_PORT } else { ocpp::WS_PORT };
                let to = endpoint(s, env.resolve(&target)?, port.unwrap_or(default));
                Ok((
                    to.to_string(),
                    ocpp::connect(s, to, tls, &box_id, authorization_key.as_deref()).await?,
                ))
            }
            Attack::OcppMitm {
                target,
                spoof_source,
                factor,
            } => {
                let ip = env.resolve(&target)?;
                let upstream = match &spoof_source {
                    None => stack.clone(),
                    Some(v) => env.stacks.get(v).cloned().ok_or_else(|| {
                        format!("no device {v:?} whose address the relay could spoof")
                    })?,
                };
                let old = self.mitm.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(old) = old {
                    old.stop();
                    // Its listeners close before the new ones bind.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let (m, r) = ocpp::Mitm::start(ctx, stack.clone(), upstream, ip, factor).await?;
                *self.mitm.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
                Ok((ip.to_string(), r))
            }
            Attack::OcppMitmStop {} => {
                let m = self
                    .mitm
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or_else(|| format!("workstation {} runs no OCPP relay", self.id))?;
                let r = m.stop();
                Ok((
                    m.stats
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .target
                        .clone(),
                    r,
                ))
            }
            Attack::Replay {
                segment,
                filter,
                count,
            } => {
                let r = replay::replay(s, env, &segment, &filter, count).await?;
                Ok((format!("segment:{segment}"), r))
            }
        }
    }
}
