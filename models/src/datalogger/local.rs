//! The Data Logger's local ports played through the control API
//! (`usb_console` and `ble` commands; emulator::local).
//!
//! Contract:
//! - USB: each line goes through the same parser and answers as a line
//!   typed on the console's pseudo-terminal ([`DataLogger::console_line`]),
//!   so refusals, the APN change and the reboot behave identically. The
//!   real-time trace is not streamed here (`trace on` only answers OK).
//! - BLE: the app's side ([`ble::App`]) talks to a fresh logger side
//!   ([`ble::Peer`]) exactly as over the link socket, and every slam is
//!   reported as an event of kind `ble`, like the socket's. A replay is the
//!   genuine app's frames sent again: on the same connection (counter and
//!   salt already seen) and on a new one (the hello is genuine, but the
//!   request was sealed with the old session's keys). Both are slammed.
//! - Both answer only while the logger is powered.
//! - Every BLE connection is also played on the site's air
//!   (emulator::radio::ble, [`OnAir`]): a BLE sniffer sees it.

use std::sync::Arc;

use fieldtwin_emulator::device::DeviceContext;
use fieldtwin_emulator::local::{BleAction, Exchange, LocalPort, Transcript};

use super::{DataLogger, OnAir, ble, lock};

/// One side of a BLE connection the command plays: the logger's peer and
/// the transcript so far.
struct Link<'a> {
    dl: &'a DataLogger,
    ctx: &'a DeviceContext,
    peer: ble::Peer,
    closed: bool,
    exchanges: &'a mut Vec<Exchange>,
    /// The connection on the air (what a BLE sniffer sees).
    air: OnAir,
}

impl<'a> Link<'a> {
    fn new(
        dl: &'a DataLogger,
        ctx: &'a DeviceContext,
        key: &str,
        exchanges: &'a mut Vec<Exchange>,
    ) -> Self {
        Self {
            dl,
            ctx,
            peer: ble::Peer::new(key.as_bytes()),
            closed: false,
            exchanges,
            air: OnAir::connect(ctx),
        }
    }

    /// Sends one frame body described as `sent`; returns the logger's
    /// reply frame body, if any.
    fn send(&mut self, sent: &str, body: &[u8]) -> Option<Vec<u8>> {
        if self.closed {
            return None;
        }
        self.air.central(body);
        let (answer, reply) = match self.dl.ble_step(self.ctx, &mut self.peer, body) {
            ble::Step::Reply(r) => {
                self.air.peripheral(&r);
                (None, Some(r))
            }
            ble::Step::Silent => (None, None),
            ble::Step::Slam(_) => {
                self.air.slam();
                self.closed = true;
                (None, None)
            }
        };
        self.exchanges.push(Exchange {
            sent: sent.to_string(),
            answer,
            closed: self.closed,
        });
        reply
    }

    /// Sets the answer of the last exchange.
    fn answered(&mut self, text: String) {
        if let Some(e) = self.exchanges.last_mut() {
            e.answer = Some(text);
        }
    }
}

impl DataLogger {
    /// The context of the running firmware, or why there is none.
    fn running_ctx(&self) -> Result<DeviceContext, String> {
        lock(&self.ctx)
            .clone()
            .filter(|c| !c.power_lost().is_cancelled() && *lock(&self.powered))
            .ok_or_else(|| {
                format!(
                    "{} is off: its local ports answer only while it is powered",
                    self.id
                )
            })
    }

    /// Plays `port` (see the module documentation).
    pub(super) fn local(self: &Arc<Self>, port: LocalPort) -> Result<Transcript, String> {
        let ctx = self.running_ctx()?;
        let mut exchanges = Vec::new();
        let port_name = match port {
            LocalPort::Usb { lines } => {
                let mut trace = false;
                for line in lines {
                    let answer = self.console_line(&ctx, line.as_bytes(), &mut trace);
                    exchanges.push(Exchange {
                        sent: line,
                        answer: Some(answer),
                        closed: false,
                    });
                }
                "usb"
            }
            LocalPort::Ble { action } => {
                self.ble_play(&ctx, action, &mut exchanges);
                "ble"
            }
            LocalPort::SdCard { .. } => {
                return Err(format!(
                    "device {} (DataLogger) has no SD card reader",
                    self.id
                ));
            }
        };
        Ok(Transcript {
            device: self.id.clone(),
            port: port_name.into(),
            exchanges,
        })
    }

    fn ble_play(&self, ctx: &DeviceContext, action: BleAction, exchanges: &mut Vec<Exchange>) {
        let key = self.ble_pairing_key();
        match action {
            BleAction::Unauthenticated => {
                Link::new(self, ctx, &key, exchanges)
                    .send("status request (no pairing)", b"status");
            }
            BleAction::WrongKey => {
                let app = ble::App::new(b"00000000000000000000000000000000");
                Link::new(self, ctx, &key, exchanges)
                    .send("hello (wrong pairing key)", &app.hello());
            }
            BleAction::Status | BleAction::Replay => {
                let mut app = ble::App::new(key.as_bytes());
                let hello = app.hello();
                let mut l = Link::new(self, ctx, &key, exchanges);
                let request = l.send("hello", &hello).and_then(|ack| {
                    let ok = app.on_hello_ack(&ack);
                    l.answered(match ok {
                        Ok(()) => "hello-ack".into(),
                        Err(why) => format!("hello-ack refused by the app: {why}"),
                    });
                    ok.ok()?;
                    app.request(b"status")
                });
                let Some(request) = request else { return };
                if let Some(r) = l.send("status request", &request) {
                    let text = app.open(&r).map_or_else(
                        || "an answer the app could not open".to_string(),
                        |p| String::from_utf8_lossy(&p).into_owned(),
                    );
                    l.answered(text);
                }
                if action == BleAction::Replay {
                    l.send("status request (replayed)", &request);
                    let mut again = Link::new(self, ctx, &key, l.exchanges);
                    if again.send("hello (replayed)", &hello).is_some() {
                        again.answered("hello-ack".into());
                    }
                    again.send("status request (replayed on a new connection)", &request);
                }
            }
        }
    }

    /// One frame of a BLE connection on the logger's side; a slam is
    /// reported as an event.
    pub(super) fn ble_step(
        &self,
        ctx: &DeviceContext,
        peer: &mut ble::Peer,
        body: &[u8],
    ) -> ble::Step {
        let step = peer.on_frame(body, |req| self.ble_answer(ctx, req));
        if let ble::Step::Slam(why) = &step {
            ctx.emit("ble", format!("connection slammed: {why}"));
        }
        step
    }
}
