//! The I/O edge of the radio medium: one [`Air`] per site shares the
//! [`Medium`] between the devices' radios, drives it on the site clock,
//! calls the devices' [`Node`]s back, and writes the sniffers' pcap files.
//!
//! Contract:
//! - A device registers a radio with [`Air::attach`] and a [`Node`]: the
//!   node is called when its wake-up is due ([`Node::wake`]) and when its
//!   receiver gets a frame ([`Node::receive`]), each time with the virtual
//!   time of the event, and answers frames to send and its next wake-up.
//!   Nodes are called without the medium's lock held, one at a time, in
//!   time order (after a clock jump, every event of the jump in order).
//!   A node also hears when a frame of its own is done ([`Node::sent`]:
//!   left the air, or dropped after channel access failure), and may put
//!   frames on the air at a given instant without CSMA-CA ([`Act::send_at`]:
//!   MAC acknowledgements).
//! - The driver task wakes at the medium's next deadline on the site
//!   clock (at most once per [`MIN_TICK`] of virtual time: events keep
//!   their own times, their effects batch) and when a command changes the
//!   medium; commands and clock jumps process what is due before they
//!   answer.
//! - Sniffers write classic pcap, link type 195 (IEEE802_15_4_WITHFCS),
//!   one file per channel, stamped with the site's virtual time.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Capture, Delivery, Jammer, Medium, Output, RadioConfig, RadioError, RadioId, Stats};
use crate::clock::{Clock, WeakClock};
use crate::net::pcap::PcapWriter;

/// Shortest sleep of the driver, in virtual time.
pub const MIN_TICK: Duration = Duration::from_millis(1);

/// pcap link type of IEEE 802.15.4 frames with FCS.
pub const LINKTYPE_IEEE802_15_4_WITHFCS: u32 = 195;

/// What a node does after an event.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Act {
    /// PSDUs (FCS included) to send through CSMA-CA, in order.
    pub send: Vec<Vec<u8>>,
    /// PSDUs to put on the air at the given instant without CSMA-CA
    /// ([`Medium::transmit_at`]: a MAC acknowledgement).
    pub send_at: Vec<(Duration, Vec<u8>)>,
    /// `Some(t)`: next wake-up at `t` (replacing any pending one).
    pub wake_at: Option<Duration>,
}

/// A device's radio logic, called by the driver.
pub trait Node: Send + Sync {
    /// The wake-up asked for is due (`at`, virtual time).
    fn wake(&self, at: Duration) -> Act;
    /// The receiver got a frame.
    fn receive(&self, d: &Delivery) -> Act {
        let _ = d;
        Act::default()
    }
    /// A frame of its own is done at `at`: its last symbol left (`ok`), or
    /// it was dropped after channel access failed (`!ok`).
    fn sent(&self, at: Duration, ok: bool) -> Act {
        let _ = (at, ok);
        Act::default()
    }
}

/// A sniffer's state, for the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnifferInfo {
    pub channel: u8,
    pub path: String,
    pub frames: u64,
}

/// The medium's state, for the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirStatus {
    pub radios: usize,
    pub jammers: Vec<Jammer>,
    pub sniffers: Vec<SnifferInfo>,
    pub stats: Stats,
}

struct Sniffer {
    path: PathBuf,
    writer: PcapWriter,
    frames: u64,
}

struct Inner {
    medium: Mutex<Medium>,
    nodes: RwLock<HashMap<RadioId, Arc<dyn Node>>>,
    sniffers: Mutex<BTreeMap<u8, Sniffer>>,
    /// The BLE side of the band ([`super::ble`]).
    ble: Mutex<super::ble::BleAir>,
    /// Serialises event processing (the driver and commands both process).
    processing: tokio::sync::Mutex<()>,
    changed: tokio::sync::Notify,
    clock: WeakClock,
}

/// The site's shared medium (cheap to clone).
#[derive(Clone)]
pub struct Air {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Air {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Air").finish_non_exhaustive()
    }
}

impl Air {
    /// A medium on `clock`, seeded by `seed`. Inside a tokio runtime the
    /// driver task starts at once.
    pub fn new(clock: &Clock, seed: u64) -> Self {
        let air = Self {
            inner: Arc::new(Inner {
                medium: Mutex::new(Medium::new(seed)),
                nodes: RwLock::new(HashMap::new()),
                sniffers: Mutex::new(BTreeMap::new()),
                ble: Mutex::new(super::ble::BleAir::default()),
                processing: tokio::sync::Mutex::new(()),
                changed: tokio::sync::Notify::new(),
                clock: clock.downgrade(),
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(run(Arc::downgrade(&air.inner)));
        }
        air
    }

    /// Seeds the propagation and the randomness (the site's seed).
    pub fn reseed(&self, seed: u64) {
        self.medium()
            .reseed(seed, Box::new(super::LogDistance::new(seed)));
    }

    /// The BLE side of the band, locked (keep it short).
    pub fn ble(&self) -> std::sync::MutexGuard<'_, super::ble::BleAir> {
        self.inner.ble.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The medium, locked (keep it short; never across an await).
    pub fn medium(&self) -> std::sync::MutexGuard<'_, Medium> {
        self.inner.medium.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds radio `id` driven by `node`, with a first wake-up at `wake_at`.
    pub fn attach(
        &self,
        id: RadioId,
        cfg: RadioConfig,
        node: Arc<dyn Node>,
        wake_at: Option<Duration>,
    ) -> Result<(), RadioError> {
        {
            let mut m = self.medium();
            m.add(id, cfg)?;
            m.set_wake(id, wake_at);
        }
        self.inner
            .nodes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, node);
        self.inner.changed.notify_one();
        Ok(())
    }

    /// Removes radio `id`.
    pub fn detach(&self, id: RadioId) {
        self.medium().remove(id);
        self.inner
            .nodes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Wakes the driver after a change made through [`Air::medium`].
    pub fn poke(&self) {
        self.inner.changed.notify_one();
    }

    /// Handles every event due at `now`, in time order.
    pub async fn process(&self, now: Duration) {
        let _g = self.inner.processing.lock().await;
        self.process_locked(now);
    }

    /// [`Air::process`] for callers that are not async (benchmarks).
    pub fn process_blocking(&self, now: Duration) {
        let _g = self.inner.processing.blocking_lock();
        self.process_locked(now);
    }

    fn process_locked(&self, now: Duration) {
        loop {
            let out = self.medium().step(now);
            let Some(out) = out else { break };
            let (radio, at, act) = match out {
                Output::Wake { radio, at } => {
                    let Some(node) = self.node(radio) else {
                        continue;
                    };
                    (radio, at, node.wake(at))
                }
                Output::Deliver(d) => {
                    let Some(node) = self.node(d.to) else {
                        continue;
                    };
                    (d.to, d.at, node.receive(&d))
                }
                Output::Sent { radio, at, ok } => {
                    let Some(node) = self.node(radio) else {
                        continue;
                    };
                    (radio, at, node.sent(at, ok))
                }
            };
            if act.send.is_empty() && act.send_at.is_empty() && act.wake_at.is_none() {
                continue;
            }
            let mut m = self.medium();
            for psdu in &act.send {
                if let Err(e) = m.transmit(at, radio, psdu) {
                    tracing::warn!("radio {radio:x}: frame not sent: {e}");
                }
            }
            for (t, psdu) in &act.send_at {
                if let Err(e) = m.transmit_at(*t, radio, psdu) {
                    tracing::warn!("radio {radio:x}: frame not sent: {e}");
                }
            }
            if let Some(w) = act.wake_at {
                m.set_wake(radio, Some(w));
            }
        }
        let caps = self.medium().take_captures();
        if !caps.is_empty() {
            self.write_captures(caps);
        }
    }

    fn node(&self, id: RadioId) -> Option<Arc<dyn Node>> {
        self.inner
            .nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    fn write_captures(&self, caps: Vec<Capture>) {
        let epoch = self.inner.clock.upgrade().map(|c| c.epoch());
        let mut sn = self
            .inner
            .sniffers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for c in caps {
            let Some(s) = sn.get_mut(&c.channel) else {
                continue;
            };
            let unix = epoch
                .map(|e| {
                    let t = e + chrono::Duration::from_std(c.at).unwrap_or_default();
                    Duration::from_micros(t.timestamp_micros().max(0) as u64)
                })
                .unwrap_or(c.at);
            s.writer.write_at(unix, &c.psdu);
            s.frames += 1;
        }
    }

    /// Starts a sniffer on `channel` writing `path` (replacing one there).
    pub fn start_sniffer(&self, channel: u8, path: &Path) -> Result<(), String> {
        super::check_channel(channel).map_err(|e| e.to_string())?;
        let writer = PcapWriter::create_linktype(
            path,
            crate::net::pcap::DEFAULT_MAX_BYTES,
            LINKTYPE_IEEE802_15_4_WITHFCS,
        )
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        self.inner
            .sniffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                channel,
                Sniffer {
                    path: path.to_path_buf(),
                    writer,
                    frames: 0,
                },
            );
        self.medium()
            .sniff(channel, true)
            .map_err(|e| e.to_string())
    }

    /// Stops the sniffer on `channel` (its file is complete); how many
    /// frames it wrote.
    pub async fn stop_sniffer(&self, channel: u8) -> Result<SnifferInfo, String> {
        super::check_channel(channel).map_err(|e| e.to_string())?;
        // Frames already on the air are written before the file closes.
        if let Some(c) = self.inner.clock.upgrade() {
            self.process(c.now()).await;
        }
        self.medium()
            .sniff(channel, false)
            .map_err(|e| e.to_string())?;
        let s = self
            .inner
            .sniffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&channel)
            .ok_or_else(|| format!("no sniffer on channel {channel}"))?;
        Ok(SnifferInfo {
            channel,
            path: s.path.display().to_string(),
            frames: s.frames,
        })
    }

    /// The medium's state.
    pub fn status(&self) -> AirStatus {
        let (radios, jammers, stats) = {
            let m = self.medium();
            (m.len(), m.jammers().to_vec(), m.stats().clone())
        };
        let sniffers = self
            .inner
            .sniffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(c, s)| SnifferInfo {
                channel: *c,
                path: s.path.display().to_string(),
                frames: s.frames,
            })
            .collect();
        AirStatus {
            radios,
            jammers,
            sniffers,
            stats,
        }
    }
}

/// The driver: handles what is due, sleeps until the next deadline on
/// the site clock (or a change), until the site is gone.
async fn run(inner: Weak<Inner>) {
    loop {
        let Some(inner) = inner.upgrade() else { return };
        let Some(clock) = inner.clock.upgrade() else {
            return;
        };
        let air = Air {
            inner: inner.clone(),
        };
        air.process(clock.now()).await;
        // At most one wake-up per millisecond of virtual time: events
        // keep their own times, their effects batch.
        let next = air
            .medium()
            .next_deadline()
            .map(|t| t.max(clock.now() + MIN_TICK));
        drop(air);
        let changed = inner.changed.notified();
        // Wake at the deadline, on a change, or after a wall second to
        // notice that the site is gone.
        match next {
            Some(t) => {
                tokio::select! {
                    _ = clock.sleep_until(t) => {}
                    _ = changed => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            None => {
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
        drop(clock);
        drop(inner);
    }
}
