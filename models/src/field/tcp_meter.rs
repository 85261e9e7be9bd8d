//! A PM5xxx/iEM3xxx meter with its own Ethernet port (Modbus TCP server on
//! port 502), e.g. the PM5560 on a Panel Server's OT segment.
//!
//! Contract:
//! - Powered on, it serves its register map ([`super::FieldDevice`]) on
//!   port 502 of `eth1` to any unit id ([NF]: like PM5xxx meters, which
//!   answer on their TCP port whatever the unit id).
//! - Powered off, the port is closed (connections refused) and its energy
//!   stops counting; the energy restarts from where it stopped.
//! - Field faults act on the meter itself (`field` = its own id): forced
//!   registers ([`FieldAction::Force`]) and a hung meter
//!   ([`FieldAction::Responsive`]: the port stays open, requests get no
//!   answer).

use std::sync::{Arc, OnceLock};

use std::time::Duration;

use fieldtwin_emulator::device::{BootError, Device, DeviceContext, FieldAction};
use fieldtwin_emulator::site::DeviceConfig;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::{FieldDevice, GatewayCopy, Spec};
use crate::proto::modbus::server::{self, Handler};
use crate::proto::modbus::{Exception, Request, Response};

/// Modbus TCP port of the meter.
pub const PORT: u16 = 502;

/// A networked meter.
pub struct TcpMeter {
    id: String,
    model: &'static str,
    spec: Spec,
    meter: OnceLock<Arc<FieldDevice>>,
}

impl TcpMeter {
    pub fn new(site_seed: u64, dev: &DeviceConfig) -> Self {
        Self {
            id: dev.id.clone(),
            model: dev.model.name(),
            spec: Spec {
                id: dev.id.clone(),
                model: dev.model.name().to_string(),
                unit: 1,
                rf_id: None,
                profile: Some(dev.profile.clone().unwrap_or_else(|| "site_main".into())),
                powered: true,
                seed: super::seed_of(site_seed, &dev.id),
                day0: 0.0,
            },
            meter: OnceLock::new(),
        }
    }

    /// The meter model, once booted.
    pub fn meter(&self) -> Option<&Arc<FieldDevice>> {
        self.meter.get()
    }
}

struct MeterHandler {
    meter: Arc<FieldDevice>,
    ctx: DeviceContext,
}

impl Handler for MeterHandler {
    fn handle(&self, _unit: u8, req: Request) -> BoxFuture<'_, Result<Response, Exception>> {
        async move {
            // A hung meter keeps the connection but answers nothing until
            // it is responsive again (or loses power).
            let lost = self.ctx.power_lost();
            while self.meter.is_powered() && !self.meter.answers() {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                    _ = lost.cancelled() => break,
                }
            }
            let t = self.ctx.clock.now().as_secs_f64();
            self.meter
                .handle(t, &req)
                .unwrap_or(Err(Exception::ServerDeviceFailure))
        }
        .boxed()
    }
}

impl Device for TcpMeter {
    fn id(&self) -> &str {
        &self.id
    }
    fn model(&self) -> &str {
        self.model
    }
    fn field_command(&self, field: &str, action: FieldAction, now: Duration) -> Result<(), String> {
        if field != self.id {
            return Err(format!(
                "{} is a networked meter; its only field device is itself ({:?}), not {field:?}",
                self.id, self.id
            ));
        }
        let meter = self.meter.get().ok_or_else(|| {
            format!(
                "{} has not booted yet; power it on before forcing its values",
                self.id
            )
        })?;
        let t = now.as_secs_f64();
        match action {
            FieldAction::Force { register, force } => meter.force(t, register, force),
            FieldAction::Responsive { responsive } => meter.set_responsive(responsive),
            _ => Err(format!(
                "{} takes field commands force and responsive; power it with the power command",
                self.id
            )),
        }
    }
    fn boot(self: Arc<Self>, ctx: DeviceContext) -> BoxFuture<'static, Result<(), BootError>> {
        async move {
            let first_boot = self.meter.get().is_none();
            let meter = self
                .meter
                .get_or_init(|| {
                    let mut spec = self.spec.clone();
                    spec.day0 = super::day0(&ctx.clock);
                    Arc::new(
                        FieldDevice::new(&spec, GatewayCopy::default())
                            .expect("networked meters are PM5xxx/iEM3xxx"),
                    )
                })
                .clone();
            super::persist(&ctx, vec![meter.clone()], first_boot);
            // Charging stations behind this meter add their draw.
            meter.set_extra_load(crate::charging_station::feed::load_of(&self.id));
            let now = ctx.clock.now().as_secs_f64();
            meter.set_power(now, true);
            let listener = ctx.listen_tcp("eth1", "modbus", PORT).await?;
            let handler: Arc<dyn Handler> = Arc::new(MeterHandler {
                meter: meter.clone(),
                ctx: ctx.clone(),
            });
            ctx.spawn(server::serve(ctx.clone(), listener, handler, 32));
            // Stop counting when the supply goes.
            let lost = ctx.power_lost();
            let clock = ctx.clock.clone();
            tokio::spawn(async move {
                lost.cancelled().await;
                meter.set_power(clock.now().as_secs_f64(), false);
            });
            Ok(())
        }
        .boxed()
    }
}
