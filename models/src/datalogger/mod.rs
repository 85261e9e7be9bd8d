//! Cellular Data Logger (seed 004): sensors sampled on virtual time, a ring
//! of binary records in NV memory, a cellular modem, and store-and-forward
//! transmission to an MQTT broker over MQTTS. The device model.
//!
//! Contract (docs/datalogger.md):
//! - Boot opens the record ring ([`store`]), restores the pulse counters,
//!   powers the modem and starts two tasks: the sampler ([`sensors`],
//!   [`sdi12`]) writes one record per sample, stamped with the device's RTC
//!   at the sample's virtual time, and the uplink ([`uplink`]) opens a
//!   session every `transmit_s` (and at once when a threshold is crossed
//!   upwards) once the modem is attached, and delivers every unsent record.
//! - The logger opens no listening port on any interface: every connection
//!   it has, it initiated (seed 004 "no listening TCP/UDP communication
//!   ports"). A TCP SYN to it gets a RST, from the kernel in host mode and
//!   from smoltcp in TAP mode.
//! - The uplink runs as an orderly task: at power loss it finishes the
//!   message in flight (its PUBACK) and says DISCONNECT before the power
//!   goes, so no record is delivered twice.
//! - Commands: `Cellular` (coverage, signal, technology; field `modem`),
//!   `FieldPower` on an input's name (off = wire broken). Coverage and
//!   wiring belong to the place, not the logger: they survive power cycles.
//! - The uplink leaves from the `cell` interface when the runtime gives
//!   one (TAP mode: behind the carrier NAT, emulator::net::nat), else from
//!   `eth1` through `Stack::connect_tcp_carrier` (host mode's pool).
//! - Digital outputs ([`outputs`]): alarm outputs follow the samples,
//!   manual ones are set from the USB console or the BLE app and kept in
//!   NV memory.
//! - Every BLE connection is also played on the site's air (`OnAir`,
//!   emulator::radio::ble), where a BLE sniffer records it.

pub mod ble;
pub mod https;
mod local;
pub mod modem;
pub mod mqtt;
pub mod ota;
pub mod outputs;
pub mod payload;
pub mod sdi12;
pub mod sensors;
pub mod serial;
pub mod store;
pub mod uplink;
pub mod usb;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldtwin_emulator::clock::Clock;
use fieldtwin_emulator::device::{
    BootError, Credential, Details, Device, DeviceContext, FieldAction,
};
use fieldtwin_emulator::local::{LocalPort, Transcript};
use fieldtwin_emulator::site::{
    CellTechnology, DataLoggerConfig, DeviceConfig, Site, UplinkProtocol,
};
use fieldtwin_emulator::storage::Nv;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::json;
use sha2::Digest;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::field::physics::noise as physics_noise;
use modem::Modem;
use sensors::{Bank, Wiring};
use store::{Record, Ring};

/// NV key of the pulse counters.
const PULSES_KEY: &str = "dl/pulses";
/// NV key of the last session's summary.
const LAST_SESSION_KEY: &str = "dl/last_session";
/// NV key of the manual digital outputs' settings.
const OUTPUTS_KEY: &str = "dl/outputs";
/// NV key of the APN set over USB.
const APN_KEY: &str = "dl/apn";
/// NV key of the serial sensors' baud rate set over USB.
const BAUD_KEY: &str = "dl/serial_baud";
pub use ota::{FACTORY_VERSION, FAMILY};
/// NV key of the outcome of the last firmware message received.
const FIRMWARE_STATUS_KEY: &str = "dl/firmware_status";
/// Period of the USB trace lines (virtual time).
const TRACE_PERIOD: Duration = Duration::from_secs(10);
/// MQTT port (MQTTS).
pub const MQTTS_PORT: u16 = 8883;
/// HTTPS port.
pub const HTTPS_PORT: u16 = 443;

/// The Data Logger.
pub struct DataLogger {
    id: String,
    config: DataLoggerConfig,
    broker: String,
    username: String,
    password: String,
    seed: u64,
    modem: Mutex<Modem>,
    wiring: Mutex<Vec<Wiring>>,
    powered: Mutex<bool>,
    /// Wakes the uplink: coverage changed or a threshold was crossed.
    wake: Notify,
    /// The running firmware's tasks (ended by a reboot).
    generation: Mutex<Option<(CancellationToken, TaskTracker)>>,
    /// Version of the firmware running (set at boot from the stored image).
    running: Mutex<String>,
    /// The context of the current power-on (for the local ports).
    ctx: Mutex<Option<DeviceContext>>,
    /// The digital outputs (restored from NV memory at boot).
    outputs: Mutex<outputs::Outputs>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DataLogger {
    pub fn new(site: &Site, dev: &DeviceConfig) -> Self {
        let config = dev.datalogger.clone().unwrap_or_default();
        let seed = site.site.seed ^ 0xDA7A_1099;
        let broker = config.broker.clone().unwrap_or_else(|| {
            let port = match config.uplink {
                UplinkProtocol::Mqtts => MQTTS_PORT,
                UplinkProtocol::Https => HTTPS_PORT,
            };
            format!("{}:{port}", site.network.host_address)
        });
        let username = config.username.clone().unwrap_or_else(|| dev.id.clone());
        let password = config.password.clone().unwrap_or_else(|| {
            let h = sha2::Sha256::digest(format!("{}/{}/mqtt", site.site.seed, dev.id));
            h[..8].iter().map(|b| format!("{b:02x}")).collect()
        });
        let (config_outputs, config_inputs) = (config.output.clone(), config.input.clone());
        Self {
            id: dev.id.clone(),
            modem: Mutex::new(Modem::new(config.technology, config.signal_dbm, seed)),
            wiring: Mutex::new(vec![Wiring::Sound; config.input.len()]),
            config,
            broker,
            username,
            password,
            seed,
            powered: Mutex::new(false),
            wake: Notify::new(),
            generation: Mutex::new(None),
            running: Mutex::new(FACTORY_VERSION.to_string()),
            ctx: Mutex::new(None),
            outputs: Mutex::new(outputs::Outputs::new(
                &config_outputs,
                &config_inputs,
                &Default::default(),
            )),
        }
    }

    /// Input names by index (to decode payloads).
    pub fn input_names(&self) -> Vec<String> {
        self.config.input.iter().map(|i| i.name.clone()).collect()
    }

    fn topic(&self) -> String {
        format!("{}/{}/records", self.config.topic_prefix, self.id)
    }

    fn broker_addr(&self) -> Result<(SocketAddr, String), String> {
        let host = self
            .broker
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_default();
        let addr = self
            .broker
            .to_socket_addrs()
            .map_err(|e| format!("broker {}: {e}", self.broker))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("broker {} has no IPv4 address", self.broker))?;
        Ok((addr, host))
    }

    async fn sampler(self: Arc<Self>, ctx: DeviceContext, ring: Arc<Mutex<Ring>>) {
        let pulses: Vec<u64> = ctx.nv.get(PULSES_KEY).ok().flatten().unwrap_or_default();
        let mut bank = Bank::new(&self.config.input, self.seed, ctx.clock.now(), &pulses);
        let samples = ctx.counter("samples");
        loop {
            {
                let baud = ctx.nv.get(BAUD_KEY).ok().flatten().unwrap_or(9600);
                let wiring = lock(&self.wiring);
                for (inp, w) in bank.inputs.iter_mut().zip(wiring.iter()) {
                    inp.wiring = *w;
                    inp.baud = baud;
                }
            }
            let now = ctx.clock.now();
            // After a clock jump longer than the ring holds, only the samples
            // it can keep are taken; the others are counted as overwritten.
            let capacity = lock(&ring).capacity();
            let skipped = bank.skip_backlog(now, capacity);
            if skipped > 0 {
                let result = lock(&ring).skip(skipped);
                match result {
                    Ok(()) => ctx.emit(
                        "store",
                        format!(
                            "{skipped} samples of a clock jump did not fit the store (overwritten)"
                        ),
                    ),
                    Err(e) => ctx.emit("store", format!("writing the ring counters failed: {e}")),
                }
                samples.add(skipped);
            }
            let (due, exception) = bank.due(now);
            if !due.is_empty() {
                let mut records: Vec<Record> = due
                    .iter()
                    .map(|s| {
                        let t = ctx.rtc.read_at(ctx.clock.utc_at(s.at));
                        Record {
                            seq: 0,
                            secs: t.timestamp().clamp(0, i64::from(u32::MAX)) as u32,
                            millis: t.timestamp_subsec_millis().min(999) as u16,
                            input: s.input,
                            status: s.status as u8,
                            raw: s.raw as f32,
                            value: s.value as f32,
                        }
                    })
                    .collect();
                self.drive_outputs(&ctx, &due);
                let result = lock(&ring).append(&mut records);
                if let Err(e) = result {
                    ctx.emit("store", format!("writing records failed: {e}"));
                }
                samples.add(records.len() as u64);
                let counts: Vec<u64> = bank.inputs.iter().map(|i| i.pulses()).collect();
                if counts.iter().any(|c| *c > 0)
                    && let Err(e) = ctx.nv.put(PULSES_KEY, &counts)
                {
                    ctx.emit("store", format!("saving the pulse counters failed: {e}"));
                }
                if exception {
                    self.wake.notify_one();
                }
            }
            let Some(next) = bank.next_deadline() else {
                return;
            };
            ctx.clock.sleep_until(next).await;
        }
    }

    async fn uplink(
        self: Arc<Self>,
        ctx: DeviceContext,
        ring: Arc<Mutex<Ring>>,
        power: CancellationToken,
    ) {
        let (broker, name) = match self.broker_addr() {
            Ok(b) => b,
            Err(e) => {
                ctx.emit("uplink", e);
                return;
            }
        };
        let connector = match uplink::connector(self.config.ca_file.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                ctx.emit("uplink", e.to_string());
                return;
            }
        };
        // TAP mode gives the modem its own interface behind the carrier's
        // NAT; in host mode `eth1` picks a source from its loopback pool.
        let Some(stack) = ctx.interface("cell").or_else(|| ctx.interface("eth1")) else {
            return;
        };
        let transmit = Duration::from_secs_f64(self.config.transmit_s);
        let sessions = ctx.counter("mqtt_sessions");
        let published = ctx.counter("records_sent");
        let mut next = ctx.clock.now();
        loop {
            // Wait for the schedule (or an exception), then for the network.
            tokio::select! {
                _ = power.cancelled() => return,
                _ = ctx.clock.sleep_until(next) => {}
                _ = self.wake.notified() => {}
            }
            loop {
                let now = ctx.clock.now();
                let (attached, at) = {
                    let m = lock(&self.modem);
                    (m.attached(now), m.attached_at())
                };
                if attached {
                    break;
                }
                tokio::select! {
                    _ = power.cancelled() => return,
                    _ = self.wake.notified() => {}
                    _ = async {
                        match at {
                            Some(at) => ctx.clock.sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    } => {}
                }
            }
            if lock(&ring).pending() == 0 {
                next = ctx.clock.now() + transmit;
                continue;
            }
            let me = self.clone();
            let clock = ctx.clock.clone();
            let stop_power = power.clone();
            let session = uplink::Session {
                stack: stack.as_ref(),
                broker,
                nat_pick: ((physics_noise(self.seed, 0x4E47, sessions.get() as i64) + 1.0)
                    * f64::from(u32::MAX / 2)) as u32,
                broker_name: &name,
                connector: &connector,
                verify: self.config.ca_file.is_some(),
                device_id: &self.id,
                username: &self.username,
                password: &self.password,
                topic: self.topic(),
                https_path: (self.config.uplink == UplinkProtocol::Https)
                    .then_some(self.config.https_path.as_str()),
                firmware_topic: format!("{}/{}/firmware", self.config.topic_prefix, self.id),
                on_firmware: &|offer| self.firmware_received(&ctx, offer),
                ring: &ring,
                clock: &ctx.clock,
                session_max: Duration::from_secs_f64(self.config.session_max_s),
                stop: Arc::new(move || {
                    stop_power.is_cancelled() || !lock(&me.modem).attached(clock.now())
                }),
            };
            sessions.inc();
            let result = session.run().await;
            let summary = match &result {
                Ok(r) => {
                    published.add(r.delivered.1 - r.delivered.0);
                    format!(
                        "session {}: delivered seq {}..{} in {} messages, {:.1} s, {:?}",
                        sessions.get(),
                        r.delivered.0,
                        r.delivered.1,
                        r.messages,
                        r.duration.as_secs_f64(),
                        r.end
                    )
                }
                Err(e) => format!("session {} failed: {e}", sessions.get()),
            };
            let _ = ctx.nv.put(LAST_SESSION_KEY, &summary);
            ctx.emit("uplink", summary);
            // A reboot into new firmware ends this generation too.
            if power.is_cancelled() {
                return;
            }
            next = match result {
                // Records left over (time limit): a new session soon.
                Ok(r)
                    if matches!(
                        r.end,
                        uplink::SessionEnd::TimeLimit | uplink::SessionEnd::Closed
                    ) =>
                {
                    ctx.clock.now() + Duration::from_secs(30)
                }
                // A failed session is retried at the next schedule, at
                // most a minute away.
                Err(_) => ctx.clock.now() + transmit.min(Duration::from_secs(60)),
                _ => ctx.clock.now() + transmit,
            };
        }
    }

    /// Starts the firmware: opens the ring, powers the modem, starts the
    /// sampler and the uplink as one generation (a reboot ends it).
    fn start(self: &Arc<Self>, ctx: &DeviceContext) -> Result<(), BootError> {
        // Only vendor-signed firmware runs: the stored image is checked at
        // every boot.
        let image = crate::security::firmware::verify_stored(&ctx.nv, FAMILY)?;
        *lock(&self.running) = image.map_or_else(|| FACTORY_VERSION.to_string(), |i| i.version);
        ctx.counter("firmware_starts").inc();
        let ring = Ring::open(ctx.nv.clone(), self.config.store_records)?;
        let ring = Arc::new(Mutex::new(ring));
        let generation = ctx.power_lost().child_token();
        let tracker = TaskTracker::new();
        *lock(&self.generation) = Some((generation.clone(), tracker.clone()));
        *lock(&self.powered) = true;
        *lock(&self.ctx) = Some(ctx.clone());
        let saved: std::collections::BTreeMap<String, bool> =
            ctx.nv.get(OUTPUTS_KEY).ok().flatten().unwrap_or_default();
        *lock(&self.outputs) =
            outputs::Outputs::new(&self.config.output, &self.config.input, &saved);
        lock(&self.modem).set_powered(true, ctx.clock.now());
        let sampler = self.clone().sampler(ctx.clone(), ring.clone());
        let g = generation.clone();
        ctx.spawn(tracker.track_future(async move {
            tokio::select! {
                _ = g.cancelled() => {}
                _ = sampler => {}
            }
        }));
        let me = self.clone();
        let c = ctx.clone();
        ctx.spawn_orderly(tracker.track_future(async move {
            me.clone().uplink(c.clone(), ring, generation).await;
            *lock(&me.powered) = false;
            lock(&me.modem).set_powered(false, c.clock.now());
        }));
        tracker.close();
        Ok(())
    }

    /// Reboots the firmware (USB `reboot`): the uplink finishes its message,
    /// every task ends, then the logger starts again.
    fn reboot(self: &Arc<Self>, ctx: &DeviceContext, reason: &str) {
        let Some((generation, tracker)) = lock(&self.generation).take() else {
            return;
        };
        generation.cancel();
        let me = self.clone();
        let c = ctx.clone();
        let reason = reason.to_string();
        ctx.spawn(async move {
            tracker.wait().await;
            c.emit("reboot", reason);
            if let Err(e) = me.start(&c) {
                c.emit("boot_failed", e.to_string());
            }
        });
    }

    /// The firmware version running (the verified image's it booted, else
    /// the factory one).
    fn firmware_version(&self) -> String {
        lock(&self.running).clone()
    }

    /// A firmware message received over the cellular path ([`ota`]): a
    /// newer vendor-signed Data Logger image is stored and the logger
    /// reboots into it; anything else is refused and reported, and the
    /// logger runs on. Returns the report to publish when the outcome is
    /// new (a retained message comes again at every session).
    fn firmware_received(
        self: &Arc<Self>,
        ctx: &DeviceContext,
        offer: &uplink::FirmwareOffer,
    ) -> Option<String> {
        let running = self.firmware_version();
        let mut outcome = match offer {
            uplink::FirmwareOffer::Image(bytes) => ota::judge(bytes, &running),
            uplink::FirmwareOffer::TooLarge(n) => ota::too_large(*n, mqtt::MAX_PACKET),
        };
        if let (ota::Outcome::Install { version }, uplink::FirmwareOffer::Image(bytes)) =
            (&outcome, offer)
            && let Err(e) = ctx.nv.put_raw(crate::security::firmware::IMAGE_KEY, bytes)
        {
            outcome = ota::Outcome::Refused(format!("image {version} could not be stored: {e}"));
        }
        let message = outcome.message(&running)?;
        let previous: Option<String> = ctx.nv.get(FIRMWARE_STATUS_KEY).ok().flatten();
        let new = previous.as_deref() != Some(message.as_str());
        if new {
            let _ = ctx.nv.put(FIRMWARE_STATUS_KEY, &message);
            ctx.emit("firmware", message);
        }
        if let ota::Outcome::Install { version } = &outcome {
            self.reboot(ctx, &format!("reboot into firmware {version}"));
        }
        if new { outcome.report(&running) } else { None }
    }

    /// Alarm outputs follow the samples just taken.
    fn drive_outputs(&self, ctx: &DeviceContext, samples: &[sensors::Sample]) {
        let mut outs = lock(&self.outputs);
        for s in samples {
            for c in outs.sample(s.input, s.status, s.value) {
                ctx.emit(
                    "output",
                    format!(
                        "output {} {} (alarm on input {}: {:.3})",
                        c.name,
                        if c.on { "on" } else { "off" },
                        self.config.input[usize::from(s.input)].name,
                        s.value
                    ),
                );
            }
        }
    }

    /// A user sets a manual output (`via`: USB console, BLE app); the
    /// setting is saved in NV memory. Answers what the user sees.
    fn set_output(
        &self,
        ctx: &DeviceContext,
        name: &str,
        on: bool,
        via: &str,
    ) -> Result<String, String> {
        let mut outs = lock(&self.outputs);
        let changed = outs.set(name, on)?;
        ctx.nv
            .put(OUTPUTS_KEY, &outs.saved())
            .map_err(|e| format!("saving the outputs failed: {e}"))?;
        if changed {
            ctx.emit(
                "output",
                format!(
                    "output {name} {} from the {via}",
                    if on { "on" } else { "off" }
                ),
            );
        }
        Ok(outs.line())
    }

    /// The APN in force (set over USB, else the site file's).
    fn apn(&self, nv: &Nv) -> String {
        nv.get::<String>(APN_KEY)
            .ok()
            .flatten()
            .unwrap_or_else(|| self.config.apn.clone())
    }

    fn snapshot(&self, ctx: &DeviceContext) -> usb::Snapshot {
        let now = ctx.clock.now();
        let m = lock(&self.modem);
        let k = (now.as_secs() / 60) as i64;
        let get = |key: &str| ctx.nv.get::<u64>(key).ok().flatten().unwrap_or(0);
        let attached = m.attached(now);
        usb::Snapshot {
            battery_v: 3.62 + 0.02 * physics_noise(self.seed, 0xBA77, k),
            humidity_pct: 22.0 + 3.0 * physics_noise(self.seed, 0x4B1D, k),
            rssi_dbm: m.rssi(now),
            technology: format!("{}G", m.technology.generation()),
            attached,
            apn: self.apn(&ctx.nv),
            baud: ctx.nv.get(BAUD_KEY).ok().flatten().unwrap_or(9600),
            health: if !m.coverage {
                "no_coverage"
            } else if attached {
                "ok"
            } else {
                "attaching"
            },
            unsent: get("dl/head").saturating_sub(get("dl/sent")),
            firmware: self.firmware_version(),
        }
    }

    /// Answers one console line.
    fn console_line(
        self: &Arc<Self>,
        ctx: &DeviceContext,
        line: &[u8],
        trace: &mut bool,
    ) -> String {
        let cmd = match usb::parse(line) {
            Ok(c) => c,
            Err(e) => {
                ctx.emit("usb", format!("{e}"));
                return format!("ERROR {e}");
            }
        };
        let snap = self.snapshot(ctx);
        match cmd {
            usb::Cmd::Help => format!("{}\r\nOK", usb::HELP),
            usb::Cmd::Status => format!("{}\r\nOK", usb::trace_line(&snap)),
            usb::Cmd::Diag => format!(
                "DIAG firmware={} modem={} attached={} apn={} baud={} unsent_records={}\r\nOK",
                snap.firmware, snap.technology, snap.attached, snap.apn, snap.baud, snap.unsent
            ),
            usb::Cmd::Trace(on) => {
                *trace = on;
                "OK".into()
            }
            usb::Cmd::ApnShow => format!("APN {}\r\nOK", snap.apn),
            usb::Cmd::ApnSet(apn) => match ctx.nv.put(APN_KEY, &apn) {
                Ok(()) => {
                    // The modem attaches again with the new APN.
                    lock(&self.modem).set_powered(true, ctx.clock.now());
                    ctx.emit("usb", format!("APN set to {apn} over USB"));
                    format!("APN {apn}\r\nOK")
                }
                Err(e) => format!("ERROR {e}"),
            },
            usb::Cmd::BaudShow => format!("BAUD {}\r\nOK", snap.baud),
            usb::Cmd::BaudSet(b) => match ctx.nv.put(BAUD_KEY, &b) {
                Ok(()) => format!("BAUD {b}\r\nOK"),
                Err(e) => format!("ERROR {e}"),
            },
            usb::Cmd::Reboot => {
                self.reboot(ctx, "reboot requested on the USB console");
                "OK rebooting".into()
            }
            usb::Cmd::At(at) => usb::at_answer(&at, &snap),
            usb::Cmd::OutputShow => format!("OUTPUT {}\r\nOK", lock(&self.outputs).line()),
            usb::Cmd::OutputSet(name, on) => match self.set_output(ctx, &name, on, "USB console") {
                Ok(line) => format!("OUTPUT {line}\r\nOK"),
                Err(e) => {
                    ctx.emit("usb", format!("refused: {e}"));
                    format!("ERROR refused: {e}")
                }
            },
        }
    }

    /// The pairing key of the BLE link (pre-shared, unique per device).
    pub fn ble_pairing_key(&self) -> String {
        let h = sha2::Sha256::digest(format!("{}/{}/ble-pairing", self.seed, self.id));
        h[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The answer to an authenticated BLE request (installation and
    /// maintenance status; real-time only).
    fn ble_answer(&self, ctx: &DeviceContext, req: &[u8]) -> Vec<u8> {
        let s = self.snapshot(ctx);
        let v = match req {
            b"status" => json!({
                "device": self.id,
                "firmware": s.firmware,
                "battery_v": (s.battery_v * 100.0).round() / 100.0,
                "humidity_pct": s.humidity_pct.round(),
                "rssi_dbm": s.rssi_dbm,
                "technology": s.technology,
                "attached": s.attached,
                "apn": s.apn,
                "health": s.health,
                "unsent_records": s.unsent,
                "inputs": self.input_names(),
                "outputs": lock(&self.outputs).json(true),
            }),
            _ => match ble_output_request(req) {
                Some(Ok((name, on))) => match self.set_output(ctx, &name, on, "BLE app") {
                    Ok(_) => json!({"outputs": lock(&self.outputs).json(true)}),
                    Err(e) => json!({"error": e}),
                },
                Some(Err(e)) => json!({"error": e}),
                None => json!({
                    "error": "unknown request; the app may ask \"status\" or \"output NAME on|off\""
                }),
            },
        };
        v.to_string().into_bytes()
    }

    /// Serves BLE connections on the link socket until the power goes.
    async fn ble(self: Arc<Self>, ctx: DeviceContext, listener: tokio::net::UnixListener) {
        let key = self.ble_pairing_key();
        while let Ok((mut s, _)) = listener.accept().await {
            let me = self.clone();
            let c = ctx.clone();
            let key = key.clone();
            ctx.spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut peer = ble::Peer::new(key.as_bytes());
                let mut air = OnAir::connect(&c);
                loop {
                    let mut len = [0u8; 2];
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let n = usize::from(u16::from_be_bytes(len));
                    if n > ble::MAX_FRAME {
                        c.emit("ble", "connection slammed: frame too long");
                        air.slam();
                        return;
                    }
                    let mut body = vec![0u8; n];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    air.central(&body);
                    match me.ble_step(&c, &mut peer, &body) {
                        ble::Step::Reply(r) => {
                            air.peripheral(&r);
                            if s.write_all(&ble::frame(&r)).await.is_err() {
                                return;
                            }
                        }
                        ble::Step::Silent => {}
                        // Dropping the stream closes the link at once.
                        ble::Step::Slam(_) => {
                            air.slam();
                            return;
                        }
                    }
                }
            });
        }
    }

    /// Serves the USB console on `pty` until the power goes.
    async fn console(self: Arc<Self>, ctx: DeviceContext, pty: crate::serial_bus::Pty) {
        let mut line: Vec<u8> = Vec::new();
        let mut buf = [0u8; 256];
        let mut trace = false;
        let mut overflow = false;
        loop {
            let read = tokio::select! {
                r = pty.read(&mut buf) => Some(r),
                _ = ctx.clock.sleep(TRACE_PERIOD), if trace => None,
            };
            let n = match read {
                None => {
                    let t = usb::trace_line(&self.snapshot(&ctx));
                    if pty.write_all(format!("{t}\r\n").as_bytes()).await.is_err() {
                        return;
                    }
                    continue;
                }
                Some(Ok(n)) => n,
                Some(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => {
                    // No client has the terminal open.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Some(Err(_)) => return,
            };
            for &b in &buf[..n] {
                if b == b'\r' || b == b'\n' {
                    if line.is_empty() && !overflow {
                        continue;
                    }
                    let answer = if overflow {
                        format!("ERROR refused: line longer than {} bytes", usb::MAX_LINE)
                    } else {
                        self.console_line(&ctx, &line, &mut trace)
                    };
                    line.clear();
                    overflow = false;
                    if pty
                        .write_all(format!("{answer}\r\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                } else if line.len() > usb::MAX_LINE {
                    overflow = true;
                } else {
                    line.push(b);
                }
            }
        }
    }
}

impl Device for DataLogger {
    fn id(&self) -> &str {
        &self.id
    }

    fn model(&self) -> &str {
        "DataLogger"
    }

    fn survives_factory_reset(&self) -> &'static [&'static str] {
        // The installed firmware stays: a factory reset erases settings and
        // records, it does not revert the firmware.
        &[crate::security::firmware::IMAGE_KEY]
    }

    fn credentials(&self) -> Vec<Credential> {
        vec![
            Credential {
                service: match self.config.uplink {
                    UplinkProtocol::Mqtts => {
                        format!("mqtt (account on the broker {})", self.broker)
                    }
                    UplinkProtocol::Https => format!("https (basic auth at {})", self.broker),
                },
                user: self.username.clone(),
                password: self.password.clone(),
            },
            Credential {
                service: "ble (pairing key)".into(),
                user: String::new(),
                password: self.ble_pairing_key(),
            },
        ]
    }

    fn boot(self: Arc<Self>, ctx: DeviceContext) -> BoxFuture<'static, Result<(), BootError>> {
        async move {
            self.start(&ctx)?;
            if let Some(path) = &self.config.usb_pty {
                let pty = crate::serial_bus::Pty::open(path)
                    .map_err(|e| BootError::Other(format!("USB console: {e}")))?;
                ctx.spawn(self.clone().console(ctx.clone(), pty));
            }
            if let Some(path) = &self.config.ble_socket {
                let _ = std::fs::remove_file(path);
                let l = tokio::net::UnixListener::bind(path)
                    .map_err(|e| BootError::Other(format!("BLE link socket {path}: {e}")))?;
                ctx.spawn(self.clone().ble(ctx.clone(), l));
            }
            Ok(())
        }
        .boxed()
    }

    fn local_port(
        self: Arc<Self>,
        port: LocalPort,
    ) -> BoxFuture<'static, Result<Transcript, String>> {
        let r = self.local(port);
        async move { r }.boxed()
    }

    fn field_command(&self, field: &str, action: FieldAction, now: Duration) -> Result<(), String> {
        match (field, action) {
            (
                "modem",
                FieldAction::Cellular {
                    coverage,
                    signal_dbm,
                    generation,
                },
            ) => {
                let tech = match generation {
                    Some(g) => Some(CellTechnology::from_generation(g).ok_or_else(|| {
                        format!("generation {g} is not a cellular technology; use 4, 3 or 2")
                    })?),
                    None => None,
                };
                if let Some(s) = signal_dbm
                    && !(-120..=-40).contains(&s)
                {
                    return Err(format!("signal_dbm {s} is out of range; use -120 to -40"));
                }
                let powered = *lock(&self.powered);
                let mut m = lock(&self.modem);
                if let Some(t) = tech {
                    m.technology = t;
                }
                if let Some(s) = signal_dbm {
                    m.signal_dbm = f64::from(s);
                }
                if let Some(c) = coverage {
                    m.set_coverage(c, powered, now);
                }
                drop(m);
                self.wake.notify_one();
                Ok(())
            }
            ("modem", other) => Err(format!(
                "the modem takes cellular commands (coverage, signal, technology), not {other:?}"
            )),
            (name, FieldAction::Power { on }) => {
                let i = self
                    .config
                    .input
                    .iter()
                    .position(|i| i.name == name)
                    .ok_or_else(|| {
                        format!(
                            "{} has no input {name:?}; it has: modem, {}",
                            self.id,
                            self.input_names().join(", ")
                        )
                    })?;
                lock(&self.wiring)[i] = if on { Wiring::Sound } else { Wiring::Broken };
                Ok(())
            }
            (name, _) => Err(format!(
                "{} input {name:?} takes power commands only (off = wire broken); \
                 cellular commands go to field \"modem\"",
                self.id
            )),
        }
    }

    fn details(&self, nv: &Nv, clock: &Clock) -> Details {
        let now = clock.now();
        let m = lock(&self.modem);
        let get = |k: &str| nv.get::<u64>(k).ok().flatten().unwrap_or(0);
        let mut extra = std::collections::BTreeMap::new();
        extra.insert(
            "modem".to_string(),
            json!({
                "technology": format!("{}G", m.technology.generation()),
                "coverage": m.coverage,
                "attached": m.attached(now),
                "rssi_dbm": m.rssi(now),
                "apn": self.apn(nv),
                // TAP mode: the private address behind the carrier NAT.
                "cell_address": lock(&self.ctx)
                    .as_ref()
                    .and_then(|c| c.interface("cell"))
                    .map(|c| c.ipv4().to_string()),
            }),
        );
        // NV memory shows the counters as committed, never a batch still
        // being flushed (emulator::storage).
        let (head, sent, overwritten) = (get("dl/head"), get("dl/sent"), get("dl/overwritten"));
        extra.insert(
            "store".to_string(),
            json!({
                "capacity": self.config.store_records,
                "next_seq": head,
                "unsent": head.saturating_sub(sent),
                "overwritten": overwritten,
            }),
        );
        extra.insert(
            "uplink".to_string(),
            json!({
                "protocol": self.config.uplink,
                "broker": self.broker,
                "topic": self.topic(),
                "last_session": nv.get::<String>(LAST_SESSION_KEY).ok().flatten(),
            }),
        );
        extra.insert("inputs".to_string(), json!(self.input_names()));
        extra.insert(
            "outputs".to_string(),
            lock(&self.outputs).json(*lock(&self.powered)),
        );
        extra.insert(
            "firmware".to_string(),
            json!({
                "version": self.firmware_version(),
                "last_image": nv.get::<String>(FIRMWARE_STATUS_KEY).ok().flatten(),
            }),
        );
        Details {
            extra,
            ..Default::default()
        }
    }
}

/// A BLE app request `output NAME on|off`: `None` when it is not one,
/// else the output and state or what is wrong with it.
fn ble_output_request(req: &[u8]) -> Option<Result<(String, bool), String>> {
    let text = std::str::from_utf8(req).ok()?;
    let words: Vec<&str> = text.split(' ').collect();
    match words.as_slice() {
        ["output", name, state] => Some(
            outputs::parse_state(state)
                .map(|on| (name.to_string(), on))
                .ok_or_else(|| format!("{state:?} is not a state; use on or off")),
        ),
        ["output", ..] => Some(Err("usage: output NAME on|off".into())),
        _ => None,
    }
}

/// A BLE connection of the app (central) to the logger (peripheral) as it
/// shows on the site's air (emulator::radio::ble): every frame of the
/// secure channel, the logger's slam (LL_TERMINATE_IND, authentication
/// failure) and the app's disconnection (when dropped), stamped with the
/// logger's virtual time.
pub(crate) struct OnAir {
    radio: fieldtwin_emulator::radio::air::Air,
    clock: Clock,
    conn: fieldtwin_emulator::radio::ble::ConnId,
    open: bool,
}

impl OnAir {
    /// The app connects (one advertising event, CONNECT_IND, setup).
    pub(crate) fn connect(ctx: &DeviceContext) -> Self {
        use fieldtwin_emulator::radio::ble::address_from_seed;
        let now = Self::at(&ctx.clock);
        let conn = ctx.radio.ble().connect(
            now,
            address_from_seed(ctx.seed ^ 0x0A99_0A99),
            address_from_seed(ctx.seed),
            &ctx.id,
            ctx.seed,
        );
        Self {
            radio: ctx.radio.clone(),
            clock: ctx.clock.clone(),
            conn,
            open: true,
        }
    }

    fn at(clock: &Clock) -> Duration {
        Duration::from_micros(clock.utc_now().timestamp_micros().max(0) as u64)
    }

    /// A frame body from the app.
    pub(crate) fn central(&self, body: &[u8]) {
        if self.open {
            let now = Self::at(&self.clock);
            self.radio.ble().write(self.conn, now, &ble::frame(body));
        }
    }

    /// A frame body from the logger.
    pub(crate) fn peripheral(&self, body: &[u8]) {
        if self.open {
            let now = Self::at(&self.clock);
            self.radio.ble().notify(self.conn, now, &ble::frame(body));
        }
    }

    /// The logger slams the connection.
    pub(crate) fn slam(&mut self) {
        if std::mem::replace(&mut self.open, false) {
            let now = Self::at(&self.clock);
            self.radio.ble().terminate(
                self.conn,
                now,
                true,
                fieldtwin_emulator::radio::ble::AUTHENTICATION_FAILURE,
            );
        }
    }
}

impl Drop for OnAir {
    fn drop(&mut self) {
        if self.open {
            let now = Self::at(&self.clock);
            self.radio.ble().terminate(
                self.conn,
                now,
                false,
                fieldtwin_emulator::radio::ble::REMOTE_USER_TERMINATED,
            );
        }
    }
}
