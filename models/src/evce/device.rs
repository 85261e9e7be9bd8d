//! The EV Charging Expert as a site device (`EVChargingExpert`): boots its
//! OCPP local controller ([`super::ocpp`]) and answers the model command
//! `ocpp_upstream` (docs/ev-charging.md, docs/control-api.md).
//!
//! Contract:
//! - The stations it knows: every `ChargingStation` of the site whose
//!   `controller` is this EVCE (or names none while this is the site's
//!   first EVCE), with the AuthorizationKey their security profile uses,
//!   plus the `[[device.evce.station]]` entries (whose key and group take
//!   precedence for the same box id).
//! - Upstream links are allowed at every boot; `ocpp_upstream` cuts or
//!   restores them (volatile, like pulling the WAN cable).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldtwin_emulator::clock::Clock;
use fieldtwin_emulator::device::{BootError, Details, Device, DeviceContext, ModelCommand};
use fieldtwin_emulator::site::{
    DeviceConfig, EvceConfig, Model, OCPP_WS_PORT, OCPP_WSS_PORT, Site, default_authorization_key,
};
use fieldtwin_emulator::storage::Nv;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::controller::Controller;
use super::ocpp::{Known, Ocpp};

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
        }
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

    fn details(&self, _nv: &Nv, _clock: &Clock) -> Details {
        let mut d = Details::default();
        if let Some(o) = self.ocpp() {
            d.extra.insert("ocpp".into(), o.details());
        }
        d
    }

    fn boot(self: Arc<Self>, ctx: DeviceContext) -> BoxFuture<'static, Result<(), BootError>> {
        async move {
            let controller = Controller::new(
                self.cfg.supervision_mode,
                self.cfg.supervision.clone(),
                self.groups.clone(),
                self.cfg.local_list.clone(),
                Ocpp::load(&ctx),
            );
            let ocpp = Arc::new(Ocpp::new(controller, self.known.clone()));
            // Every boot starts a fresh runtime on the same NV state.
            *self.ocpp.lock().unwrap_or_else(|e| e.into_inner()) = Some(ocpp.clone());
            ocpp.clone()
                .start(
                    ctx.clone(),
                    self.ip,
                    self.cfg.ocpp_port.unwrap_or(OCPP_WS_PORT),
                    self.cfg.ocpp_tls_port.unwrap_or(OCPP_WSS_PORT),
                )
                .await?;
            if let (Some(meter), Some(stack)) = (self.meter, ctx.interface("eth1")) {
                let period = Duration::from_secs(self.cfg.load_period_s.unwrap_or(5) as u64);
                let limit = self.cfg.site_limit_kw.map(|k| k * 1000.0);
                ctx.spawn(ocpp.load_loop(ctx.clone(), stack, meter, limit, period));
            }
            Ok(())
        }
        .boxed()
    }
}
