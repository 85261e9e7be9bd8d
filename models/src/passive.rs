//! A device whose behaviour is not emulated yet (Data Logger, EV Charging
//! Expert, charging stations, networked meters until their issues land). It
//! powers on and off, keeps its RTC and NV memory, and opens no port — which
//! is already what the cellular Data Logger really does (seed 004: no
//! listening ports).

use std::sync::Arc;

use fieldtwin_emulator::device::{BootError, Device, DeviceContext};
use fieldtwin_emulator::site::DeviceConfig;
use futures::FutureExt;
use futures::future::BoxFuture;

pub struct Passive {
    id: String,
    model: &'static str,
}

impl Passive {
    pub fn new(dev: &DeviceConfig) -> Self {
        Self {
            id: dev.id.clone(),
            model: dev.model.name(),
        }
    }
}

impl Device for Passive {
    fn id(&self) -> &str {
        &self.id
    }
    fn model(&self) -> &str {
        self.model
    }
    fn boot(self: Arc<Self>, _ctx: DeviceContext) -> BoxFuture<'static, Result<(), BootError>> {
        async { Ok(()) }.boxed()
    }
}
