//! The EV Charging Expert as a site device (`EVChargingExpert`): boots its
//! OCPP local controller ([`super::ocpp`]) together with its security
//! surface ([`super::standalone::Evce`]: web pages, SSH, SSDP, enrollment,
//! BMS Modbus server, SD card, local console) and answers the model
//! commands `ocpp_upstream` and `site_limit` (docs/ev-charging.md,
//! docs/control-api.md).
//!
//! Contract:
//! - One boot runs under one boot token and task tracker; a reboot or
//!   factory reset from the web pages cancels and awaits them (OCPP servers,
//!   links and upstream tasks included), wipes NV memory except
//!   [`super::standalone::SURVIVORS`] on a factory reset, and boots again.
//! - The surface boots first (an unverifiable firmware image fails the
//!   boot); the OCPP servers admit only enrolled stations from their
//!   enrolled address ([`super::enrollment::admit`], HTTP 403 otherwise).
//!   Enrolled at the first boot: the stations below, each at its site
//!   address, and the `[[device.evce.station]]` entries at their `ip` (none:
//!   pinned at their first connection).
//! - The stations it knows: every `ChargingStation` of the site whose
//!   `controller` is this EVCE (or names none while this is the site's
//!   first EVCE), with the AuthorizationKey their security profile uses,
//!   plus the `[[device.evce.station]]` entries (whose key and group take
//!   precedence for the same box id).
//! - Upstream links are allowed at every boot; `ocpp_upstream` cuts or
//!   restores them (volatile, like pulling the WAN cable).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldtwin_emulator::clock::Clock;
use fieldtwin_emulator::device::{
    BootError, Credential, Details, Device, DeviceContext, ModelCommand,
};
use fieldtwin_emulator::local::{LocalPort, Transcript};
use fieldtwin_emulator::site::{
    DeviceConfig, EvceConfig, Model, OCPP_WS_PORT, OCPP_WSS_PORT, Site, default_authorization_key,
};
use fieldtwin_emulator::storage::Nv;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::controller::Controller;
use super::enrollment::Station;
use super::ocpp::{Known, Ocpp};
use super::standalone::{self, SURVIVORS};
use super::web::Host;
use crate::security;

/// An EV Charging Expert.
pub struct Evce {
    id: String,
    cfg: EvceConfig,
    ip: std::net::Ipv4Addr,
    known: BTreeMap<String, Known>,
    groups: BTreeMap<String, String>,
    /// The site meter's Modbus TCP address (load management).
    meter: Option<std::net::SocketAddr>,
    /// The OCPP side of the current boot.
    ocpp: Mutex<Option<Arc<Ocpp>>>,
    /// Web pages, SSH, SSDP, enrollment, BMS server, SD card, console.
    surface: standalone::Evce,
}

impl Evce {
    pub fn new(site: &Site, dev: &DeviceConfig) -> Self {
        let cfg = dev.evce.clone().unwrap_or_default();
        let first_evce = site
            .devices
            .iter()
            .find(|d| d.model == Model::EVChargingExpert)
            .is_some_and(|d| d.id == dev.id);
        let mut known = BTreeMap::new();
        let mut enrolled: Vec<Station> = Vec::new();
        for d in &site.devices {
            if d.model != Model::ChargingStation {
                continue;
            }
            let cs = d.charging_station.clone().unwrap_or_default();
            let mine = match &cs.controller {
                Some(c) => c == &dev.id,
                None => first_evce && cs.url.is_none(),
            };
            if !mine {
                continue;
            }
            let box_id = cs.box_id.clone().unwrap_or_else(|| d.id.clone());
            let key = (1..=2).contains(&cs.security_profile).then(|| {
                cs.authorization_key
                    .clone()
                    .unwrap_or_else(|| default_authorization_key(site.site.seed, &box_id))
            });
            enrolled.push(Station {
                box_id: box_id.clone(),
                ip: d.ip,
                uuid: Some(crate::proto::ssdp::uuid_from(&format!("station/{box_id}"))),
            });
            known.insert(
                box_id.clone(),
                Known {
                    box_id,
                    authorization_key: key,
                },
            );
        }
        let mut groups = BTreeMap::new();
        for s in &cfg.station {
            let k = known.entry(s.box_id.clone()).or_insert(Known {
                box_id: s.box_id.clone(),
                authorization_key: None,
            });
            if s.authorization_key.is_some() {
                k.authorization_key = s.authorization_key.clone();
            }
            if let Some(g) = &s.group {
                groups.insert(s.box_id.clone(), g.clone());
            }
            match enrolled.iter_mut().find(|e| e.box_id == s.box_id) {
                Some(e) => e.ip = s.ip.unwrap_or(e.ip),
                None => enrolled.push(Station {
                    box_id: s.box_id.clone(),
                    ip: s.ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    uuid: None,
                }),
            }
        }
        let meter = crate::charging_station::site_meter(site, Some(dev))
            .and_then(|m| site.devices.iter().find(|d| d.id == m))
            .map(|d| std::net::SocketAddr::from((d.ip, crate::field::tcp_meter::PORT)));
        Self {
            id: dev.id.clone(),
            meter,
            cfg,
            ip: dev.ip,
            known,
            groups,
            ocpp: Mutex::new(None),
            surface: standalone::Evce::new(site, dev).with_stations(enrolled),
        }
    }

    /// With `iterations` of PBKDF2 for the accounts (tests).
    pub fn with_iterations(mut self, iterations: u32) -> Self {
        self.surface = self.surface.with_iterations(iterations);
        self
    }

    /// The security surface (web pages, SSH, SSDP, ...).
    pub fn surface(&self) -> &standalone::Evce {
        &self.surface
    }

    /// The OCPP side, once booted.
    pub fn ocpp(&self) -> Option<Arc<Ocpp>> {
        self.ocpp.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Device for Evce {
    fn id(&self) -> &str {
        &self.id
    }
    fn model(&self) -> &str {
        "EVChargingExpert"
    }

    fn model_command(&self, cmd: ModelCommand, _now: Duration) -> Result<(), String> {
        match cmd {
            ModelCommand::Upstream { connected } => {
                let o = self
                    .ocpp()
                    .ok_or_else(|| format!("{} has not booted yet; power it on first", self.id))?;
                o.set_upstream(connected);
                Ok(())
            }
            ModelCommand::SiteLimit { kw } => {
                let o = self
                    .ocpp()
                    .ok_or_else(|| format!("{} has not booted yet; power it on first", self.id))?;
                let mut load = o.load.lock().unwrap_or_else(|e| e.into_inner());
                let m = load.as_mut().ok_or_else(|| {
                    format!(
                        "{} has no site meter (site file: [device.evce] site_meter, or a meter with profile ev_charging)",
                        self.id
                    )
                })?;
                m.limit_w = kw.map(|k| k * 1000.0);
                Ok(())
            }
            other => Err(format!(
                "{} is an EVChargingExpert; it takes ocpp_upstream and site_limit, not {} (EVs plug into a ChargingStation)",
                self.id,
                other.name()
            )),
        }
    }

    fn details(&self, nv: &Nv, clock: &Clock) -> Details {
        let mut d = self.surface.details(nv, clock);
        if let Some(o) = self.ocpp() {
            d.extra.insert("ocpp".into(), o.details());
        }
        d
    }

    fn credentials(&self) -> Vec<Credential> {
        self.surface.credentials()
    }

    fn survives_factory_reset(&self) -> &'static [&'static str] {
        SURVIVORS
    }

    fn local_port(
        self: Arc<Self>,
        port: LocalPort,
    ) -> BoxFuture<'static, Result<Transcript, String>> {
        async move { self.surface.local(port).await }.boxed()
    }

    fn boot(self: Arc<Self>, ctx: DeviceContext) -> BoxFuture<'static, Result<(), BootError>> {
        run(self, ctx)
    }
}

/// One boot of the EVCE (the [`Host`] of its web pages).
struct Boot {
    evce: Arc<Evce>,
    ctx: DeviceContext,
    token: CancellationToken,
    tracker: TaskTracker,
    firmware: String,
}

impl Host for Boot {
    fn restart(&self, reason: &str, wipe: bool) {
        let (evce, ctx) = (self.evce.clone(), self.ctx.clone());
        let (token, tracker) = (self.token.clone(), self.tracker.clone());
        let reason = reason.to_string();
        self.ctx.spawn(async move {
            // The answer reaches the browser first.
            tokio::time::sleep(Duration::from_millis(300)).await;
            token.cancel();
            tracker.close();
            tracker.wait().await;
            if wipe && let Err(e) = security::reset::wipe(&ctx.nv, SURVIVORS) {
                tracing::error!("{}: factory reset failed: {e}", ctx.id);
            }
            let _ = ctx.nv.put(standalone::RESTART_KEY, &reason);
            ctx.emit("reboot", reason.clone());
            if let Err(e) = run(evce, ctx.clone()).await {
                tracing::error!("{}: boot after restart failed: {e}", ctx.id);
                ctx.emit("boot_failed", e.to_string());
            }
        });
    }

    fn firmware(&self) -> String {
        self.firmware.clone()
    }

    fn stations_online(&self) -> Vec<(String, String)> {
        let Some(o) = self.evce.ocpp() else {
            return Vec::new();
        };
        let c = o.controller.lock().unwrap_or_else(|e| e.into_inner());
        c.state
            .stations
            .iter()
            .filter(|(_, s)| s.connected)
            .map(|(b, s)| {
                let st = s
                    .statuses
                    .get(&1)
                    .and_then(|v| v.get("status"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("connected");
                (b.clone(), st.to_string())
            })
            .collect()
    }
}

/// The BMS Modbus server's view of the OCPP side.
struct BmsFeed {
    nv: Nv,
    ocpp: Arc<Ocpp>,
}

impl super::bms::Source for BmsFeed {
    fn snapshot(&self) -> super::bms::Snapshot {
        let c = self
            .ocpp
            .controller
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (limit, meter_w, shares) = self
            .ocpp
            .load
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|m| (m.limit_w, m.meter_w, m.shares.clone()))
            .unwrap_or_default();
        let stations = super::enrollment::list(&self.nv)
            .into_iter()
            .map(|e| {
                let s = c.state.stations.get(&e.box_id);
                super::bms::StationRow {
                    status: s
                        .filter(|s| s.connected)
                        .and_then(|s| s.statuses.get(&1))
                        .and_then(|v| v.get("status"))
                        .and_then(|v| v.as_str())
                        .map(str::to_string),
                    connected: s.is_some_and(|s| s.connected),
                    // From the station's MeterValues (every
                    // MeterValueSampleInterval) and status.
                    power_w: s.map_or(0.0, |s| s.meter.values().map(|m| m.power_w).sum()),
                    energy_wh: s.map_or(0.0, |s| s.meter.values().map(|m| m.energy_wh).sum()),
                    limit_w: shares.get(&e.box_id).copied(),
                    box_id: e.box_id,
                }
            })
            .collect();
        drop(c);
        super::bms::Snapshot {
            stations,
            site_limit_w: limit,
            site_power_w: meter_w.unwrap_or(0.0),
        }
    }
}

fn run(evce: Arc<Evce>, ctx: DeviceContext) -> BoxFuture<'static, Result<(), BootError>> {
    async move {
        let token = ctx.power_lost().child_token();
        let tracker = TaskTracker::new();
        let r = boot_once(&evce, &ctx, &token, &tracker).await;
        if r.is_err() {
            token.cancel();
        }
        r
    }
    .boxed()
}

async fn boot_once(
    evce: &Arc<Evce>,
    ctx: &DeviceContext,
    token: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), BootError> {
    let controller = Controller::new(
        evce.cfg.supervision_mode,
        evce.cfg.supervision.clone(),
        evce.groups.clone(),
        evce.cfg.local_list.clone(),
        Ocpp::load(ctx),
    );
    let ocpp = Arc::new(Ocpp::new(controller, evce.known.clone()));
    // Every boot starts a fresh runtime on the same NV state.
    *evce.ocpp.lock().unwrap_or_else(|e| e.into_inner()) = Some(ocpp.clone());
    let bms = Arc::new(BmsFeed {
        nv: ctx.nv.clone(),
        ocpp: ocpp.clone(),
    });
    let (e, c, t, tr) = (evce.clone(), ctx.clone(), token.clone(), tracker.clone());
    evce.surface
        .boot_part(ctx, token, tracker, bms, move |firmware| {
            Arc::new(Boot {
                evce: e,
                ctx: c,
                token: t,
                tracker: tr,
                firmware,
            })
        })
        .await?;
    // The OCPP side's tasks belong to this boot.
    let bctx = ctx.for_boot(token.clone(), tracker);
    ocpp.clone()
        .start(
            bctx.clone(),
            evce.ip,
            evce.cfg.ocpp_port.unwrap_or(OCPP_WS_PORT),
            evce.cfg.ocpp_tls_port.unwrap_or(OCPP_WSS_PORT),
        )
        .await?;
    if let (Some(meter), Some(stack)) = (evce.meter, bctx.interface("eth1")) {
        let period = Duration::from_secs(evce.cfg.load_period_s.unwrap_or(5) as u64);
        let limit = evce.cfg.site_limit_kw.map(|k| k * 1000.0);
        bctx.spawn(ocpp.load_loop(bctx.clone(), stack, meter, limit, period));
    }
    Ok(())
}
