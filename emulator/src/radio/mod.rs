//! The IEEE 802.15.4 medium shared by every radio of a site (2.4 GHz
//! O-QPSK, channels 11-26): positions, propagation, airtime, clear-channel
//! assessment, collisions, packet errors from SINR, and the hooks a lab
//! needs (sniffer, injector, jammers). docs/radio.md describes it for users.
//!
//! Contract:
//! - [`Medium`] is plain state driven by virtual time: callers give `now`,
//!   [`Medium::step`] hands out what is due (a radio's wake-up, a frame
//!   delivered) one output at a time in time order, and
//!   [`Medium::next_deadline`] says when to call again. It never reads a
//!   clock, never sleeps, never does I/O; [`air`] is the I/O edge.
//! - [`Medium::transmit`] runs unslotted CSMA-CA (macMinBE 3, macMaxBE 5,
//!   at most 4 backoffs of 320 µs units, CCA of 128 µs, turnaround 192 µs):
//!   a busy channel (energy above [`phy::CCA_THRESHOLD_DBM`] at the sender)
//!   delays the frame, and after 5 busy assessments it is dropped (channel
//!   access failure). [`Medium::inject`] transmits at once, without CSMA.
//! - [`Medium::transmit_at`] puts a radio's frame on the air at a given
//!   instant without CSMA-CA: a MAC acknowledgement, sent [`TURNAROUND`]
//!   (aTurnaroundTime) after the end of the frame it answers. It is a
//!   frame like any other: it collides, is lost per the SINR model and is
//!   sniffed. A sender learns when its frame has left (or was dropped)
//!   from [`Output::Sent`], and waits [`ACK_WAIT`] (macAckWaitDuration)
//!   from then for the acknowledgement.
//! - A frame occupies its channel for [`phy::airtime`]. At its end it is
//!   delivered to every listening radio on the channel whose received
//!   power is at least [`phy::SENSITIVITY_DBM`], with probability
//!   `1 - PER(SINR)`; the interference is every other frame overlapping it
//!   in time on the same channel plus the jammers on during it, each at
//!   its own path loss. RSSI is the frame's received power; LQI comes from
//!   the SINR ([`phy::lqi`]).
//! - Jammers ([`Jammer`]) radiate on their channels: constantly, on a
//!   duty cycle, or reactively (after [`REACTION`] of a frame they hear,
//!   until its end). Constant and periodic jammers make CCA busy; a
//!   reactive one is silent until a frame starts.
//! - A sniffer on a channel records every frame transmitted on it, as sent
//!   (an ideal tap: corrupted copies are never recorded, so the FCS is
//!   always right); [`Medium::take_captures`] hands them to the edge.
//! - Randomness (backoffs, packet errors) comes from the medium's seed:
//!   the same seed and the same inputs give the same outputs.

pub mod air;
pub mod ble;
pub mod frame;
pub mod join;
pub mod phy;
pub mod report;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use phy::{LogDistance, Position, Propagation};

/// Identifies a radio on the medium.
pub type RadioId = u64;

/// Unit backoff period (20 symbols).
pub const BACKOFF_UNIT: Duration = Duration::from_micros(320);
/// Clear-channel assessment (8 symbols).
pub const CCA_TIME: Duration = Duration::from_micros(128);
/// Receive-to-transmit turnaround (aTurnaroundTime, 12 symbols): also
/// the gap between a frame and its acknowledgement.
pub const TURNAROUND: Duration = Duration::from_micros(192);
/// How long a sender waits for an acknowledgement after its frame ends
/// (macAckWaitDuration: aUnitBackoffPeriod 20 + aTurnaroundTime 12 +
/// phySHRDuration 10 + 6 octets x 2 symbols = 54 symbols at 2.4 GHz).
pub const ACK_WAIT: Duration = Duration::from_micros(864);
/// How long a reactive jammer takes to start after a frame begins ([NF]:
/// the synchronisation header, 5 octets).
pub const REACTION: Duration = Duration::from_micros(160);
const MIN_BE: u8 = 3;
const MAX_BE: u8 = 5;
const MAX_BACKOFFS: u8 = 4;

/// Why the medium refused something.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RadioError {
    #[error("channel {0} does not exist at 2.4 GHz; use 11 to 26")]
    Channel(u8),
    #[error("no radio {0:?} on the medium")]
    Unknown(String),
    #[error("a frame of {0} octets does not fit: a PSDU has 5 to 127 octets (FCS included)")]
    Length(usize),
    #[error("position {0:?} is not a finite point (metres)")]
    Position(Position),
    #[error("power {0} dBm is out of range; use -40 to +40 dBm")]
    Power(f64),
    #[error("{0}")]
    Pattern(String),
}

/// The PAN id of the network a coordinator named `name` forms ([NF]:
/// derived from its name; never 0xFFFF, the broadcast PAN).
pub fn pan_of(name: &str) -> u16 {
    (phy::radio_id(name) % 0xFFFF) as u16
}

/// Checks a channel number.
pub fn check_channel(c: u8) -> Result<u8, RadioError> {
    if phy::CHANNELS.contains(&c) {
        Ok(c)
    } else {
        Err(RadioError::Channel(c))
    }
}

fn check_power(p: f64) -> Result<f64, RadioError> {
    if p.is_finite() && (-40.0..=40.0).contains(&p) {
        Ok(p)
    } else {
        Err(RadioError::Power(p))
    }
}

fn check_position(p: Position) -> Result<Position, RadioError> {
    if p.is_finite() && p.x.abs() < 1e7 && p.y.abs() < 1e7 && p.z.abs() < 1e7 {
        Ok(p)
    } else {
        Err(RadioError::Position(p))
    }
}

/// A radio as it joins the medium.
#[derive(Debug, Clone, PartialEq)]
pub struct RadioConfig {
    pub name: String,
    pub position: Position,
    pub channel: u8,
    pub tx_power_dbm: f64,
    /// A receiver that is always on (a coordinator); end devices only
    /// transmit.
    pub listening: bool,
}

#[derive(Debug)]
struct Radio {
    name: Box<str>,
    pos: Position,
    channel: u8,
    tx_dbm: f64,
    listening: bool,
    /// Generation of the pending wake-up; older heap entries are stale.
    wake_gen: u32,
    wake_at: Option<Duration>,
    /// A heap entry of the current generation is queued (at or before
    /// `wake_at`: a later wake-up is postponed lazily, not re-queued).
    queued: bool,
}

/// How a jammer radiates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pattern {
    /// All the time.
    #[default]
    Constant,
    /// `on_ms` out of every `period_ms`, from the moment it starts.
    Periodic { on_ms: u32, period_ms: u32 },
    /// Only while a frame it hears is on the air (after [`REACTION`]).
    Reactive,
}

/// A jammer on the medium.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Jammer {
    pub id: String,
    pub position: Position,
    pub power_dbm: f64,
    /// Channels it radiates on (all of 11-26 when started without a list).
    pub channels: Vec<u8>,
    pub pattern: Pattern,
    /// Virtual time it started at.
    #[serde(with = "secs")]
    pub since: Duration,
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Ok(Duration::try_from_secs_f64(v).unwrap_or_default())
    }
}

impl Jammer {
    /// A checked jammer (`channels` empty: all of 11-26).
    pub fn new(
        id: &str,
        position: Position,
        power_dbm: f64,
        channels: &[u8],
        pattern: Pattern,
        since: Duration,
    ) -> Result<Self, RadioError> {
        let mut channels: Vec<u8> = if channels.is_empty() {
            phy::CHANNELS.collect()
        } else {
            channels
                .iter()
                .map(|c| check_channel(*c))
                .collect::<Result<_, _>>()?
        };
        channels.sort_unstable();
        channels.dedup();
        if let Pattern::Periodic { on_ms, period_ms } = pattern
            && (period_ms == 0 || on_ms == 0 || on_ms > period_ms)
        {
            return Err(RadioError::Pattern(format!(
                "a periodic jammer needs 0 < on_ms <= period_ms (got on_ms {on_ms}, period_ms {period_ms})"
            )));
        }
        Ok(Self {
            id: id.to_string(),
            position: check_position(position)?,
            power_dbm: check_power(power_dbm)?,
            channels,
            pattern,
            since,
        })
    }

    /// Whether it radiates at some time within `[s, e)` on its own (a
    /// reactive jammer never does: its bursts are frames of the medium).
    fn on_during(&self, s: Duration, e: Duration) -> bool {
        match self.pattern {
            Pattern::Constant => e > self.since,
            Pattern::Reactive => false,
            Pattern::Periodic { on_ms, period_ms } => {
                if e <= self.since {
                    return false;
                }
                let period = u128::from(period_ms) * 1000;
                let on = u128::from(on_ms) * 1000;
                let t0 = s.max(self.since).saturating_sub(self.since).as_micros();
                let phase = t0 % period;
                if phase < on {
                    return true;
                }
                let next_on = t0 + (period - phase);
                next_on < e.saturating_sub(self.since).as_micros()
            }
        }
    }
}

/// Something on the air: a frame or a reactive jammer's burst.
#[derive(Debug, Clone)]
struct Tx {
    id: u64,
    from: Option<RadioId>,
    /// Shadowing id of the source.
    src_key: u64,
    pos: Position,
    power_dbm: f64,
    channel: u8,
    start: Duration,
    end: Duration,
    /// `None`: a jamming burst.
    psdu: Option<Arc<[u8]>>,
}

/// A frame waiting for a clear channel.
#[derive(Debug)]
struct Pending {
    from: RadioId,
    psdu: Arc<[u8]>,
    nb: u8,
    be: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Wake(RadioId, u32),
    Csma(u64),
    TxEnd(u64),
}

/// A frame received by a radio.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub to: RadioId,
    /// The sending radio; `None` for an injected frame.
    pub from: Option<RadioId>,
    /// End of the frame (virtual time).
    pub at: Duration,
    pub channel: u8,
    pub psdu: Arc<[u8]>,
    pub rssi_dbm: f64,
    pub lqi: u8,
    pub sinr_db: f64,
    /// The error model's packet error rate at that SINR.
    pub per: f64,
}

/// What the medium hands out.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A radio's wake-up (asked with [`Medium::set_wake`]) is due.
    Wake {
        radio: RadioId,
        at: Duration,
    },
    Deliver(Delivery),
    /// A radio's frame is done: its last symbol left at `at` (`ok`), or
    /// it was dropped at `at` after channel access failed (`!ok`).
    Sent {
        radio: RadioId,
        at: Duration,
        ok: bool,
    },
}

/// A frame recorded by a sniffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    pub channel: u8,
    /// Start of the frame (virtual time).
    pub at: Duration,
    pub psdu: Arc<[u8]>,
}

/// Counters of the medium.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Frames put on the air (injected ones included).
    pub frames: u64,
    pub injected: u64,
    /// Copies received intact by a listening radio.
    pub delivered: u64,
    /// Copies lost to bit errors (low SINR: noise, collisions, jamming).
    pub corrupted: u64,
    /// Frames dropped after 5 busy clear-channel assessments.
    pub channel_access_failures: u64,
    /// Frames recorded by sniffers.
    pub captured: u64,
}

/// The medium (see the module contract).
pub struct Medium {
    radios: HashMap<RadioId, Radio>,
    names: HashMap<Box<str>, RadioId>,
    /// Listening radios per channel (index channel - 11).
    listeners: [Vec<RadioId>; 16],
    /// Frames and bursts recently on the air, per channel.
    air: [Vec<Tx>; 16],
    pending: HashMap<u64, Pending>,
    heap: BinaryHeap<Reverse<(Duration, u64, Ev)>>,
    ready: VecDeque<Output>,
    jammers: Vec<Jammer>,
    sniffing: [bool; 16],
    captures: Vec<Capture>,
    prop: Box<dyn Propagation>,
    rng: u64,
    next_id: u64,
    stats: Stats,
}

impl std::fmt::Debug for Medium {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Medium")
            .field("radios", &self.radios.len())
            .field("jammers", &self.jammers)
            .field("stats", &self.stats)
            .finish()
    }
}

fn ch(c: u8) -> usize {
    usize::from(c.clamp(11, 26) - 11)
}

impl Medium {
    /// An empty medium with log-distance propagation seeded by `seed`.
    pub fn new(seed: u64) -> Self {
        Self::with_propagation(seed, Box::new(LogDistance::new(seed)))
    }

    pub fn with_propagation(seed: u64, prop: Box<dyn Propagation>) -> Self {
        Self {
            radios: HashMap::new(),
            names: HashMap::new(),
            listeners: Default::default(),
            air: Default::default(),
            pending: HashMap::new(),
            heap: BinaryHeap::new(),
            ready: VecDeque::new(),
            jammers: Vec::new(),
            sniffing: [false; 16],
            captures: Vec::new(),
            prop,
            rng: phy::mix(seed ^ 0x7261_6469_6f00),
            next_id: 1,
            stats: Stats::default(),
        }
    }

    /// Replaces the propagation model and the random seed (before use).
    pub fn reseed(&mut self, seed: u64, prop: Box<dyn Propagation>) {
        self.prop = prop;
        self.rng = phy::mix(seed ^ 0x7261_6469_6f00);
    }

    fn rand(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        phy::mix(self.rng)
    }

    fn unit(&mut self) -> f64 {
        (self.rand() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn push(&mut self, at: Duration, ev: Ev) {
        let seq = self.next_id;
        self.next_id += 1;
        self.heap.push(Reverse((at, seq, ev)));
    }

    /// Adds (or replaces) radio `id`.
    pub fn add(&mut self, id: RadioId, cfg: RadioConfig) -> Result<(), RadioError> {
        check_channel(cfg.channel)?;
        check_position(cfg.position)?;
        check_power(cfg.tx_power_dbm)?;
        self.remove(id);
        let name: Box<str> = cfg.name.into();
        self.names.insert(name.clone(), id);
        if cfg.listening {
            self.listeners[ch(cfg.channel)].push(id);
        }
        self.radios.insert(
            id,
            Radio {
                name,
                pos: cfg.position,
                channel: cfg.channel,
                tx_dbm: cfg.tx_power_dbm,
                listening: cfg.listening,
                wake_gen: 0,
                wake_at: None,
                queued: false,
            },
        );
        Ok(())
    }

    /// Removes radio `id` (its pending wake-up and frames go with it).
    pub fn remove(&mut self, id: RadioId) {
        if let Some(r) = self.radios.remove(&id) {
            self.names.remove(&r.name);
            self.listeners[ch(r.channel)].retain(|x| *x != id);
            self.pending.retain(|_, p| p.from != id);
        }
    }

    /// The id of the radio named `name`.
    pub fn find(&self, name: &str) -> Option<RadioId> {
        self.names.get(name).copied()
    }

    /// Names of the radios whose name is `name` or ends with `/name`.
    pub fn matching(&self, name: &str) -> Vec<(String, RadioId)> {
        if let Some(id) = self.find(name) {
            return vec![(name.to_string(), id)];
        }
        let suffix = format!("/{name}");
        let mut v: Vec<(String, RadioId)> = self
            .names
            .iter()
            .filter(|(n, _)| n.ends_with(&suffix))
            .map(|(n, id)| (n.to_string(), *id))
            .collect();
        v.sort();
        v
    }

    pub fn len(&self) -> usize {
        self.radios.len()
    }

    pub fn is_empty(&self) -> bool {
        self.radios.is_empty()
    }

    pub fn position(&self, id: RadioId) -> Option<Position> {
        self.radios.get(&id).map(|r| r.pos)
    }

    pub fn channel(&self, id: RadioId) -> Option<u8> {
        self.radios.get(&id).map(|r| r.channel)
    }

    pub fn name(&self, id: RadioId) -> Option<&str> {
        self.radios.get(&id).map(|r| &*r.name)
    }

    /// Moves radio `id`.
    pub fn set_position(&mut self, id: RadioId, pos: Position) -> Result<(), RadioError> {
        check_position(pos)?;
        let r = self
            .radios
            .get_mut(&id)
            .ok_or_else(|| RadioError::Unknown(format!("#{id:x}")))?;
        r.pos = pos;
        Ok(())
    }

    /// Tunes radio `id` to `channel`.
    pub fn set_channel(&mut self, id: RadioId, channel: u8) -> Result<(), RadioError> {
        check_channel(channel)?;
        let r = self
            .radios
            .get_mut(&id)
            .ok_or_else(|| RadioError::Unknown(format!("#{id:x}")))?;
        if r.listening {
            self.listeners[ch(r.channel)].retain(|x| *x != id);
            self.listeners[ch(channel)].push(id);
        }
        r.channel = channel;
        Ok(())
    }

    /// Turns radio `id`'s receiver on or off.
    pub fn set_listening(&mut self, id: RadioId, on: bool) {
        let Some(r) = self.radios.get_mut(&id) else {
            return;
        };
        if r.listening != on {
            r.listening = on;
            let l = &mut self.listeners[ch(r.channel)];
            if on {
                l.push(id);
            } else {
                l.retain(|x| *x != id);
            }
        }
    }

    pub fn is_listening(&self, id: RadioId) -> bool {
        self.radios.get(&id).is_some_and(|r| r.listening)
    }

    /// Asks for a [`Output::Wake`] of radio `id` at `at` (replacing the
    /// one pending), or cancels it (`None`).
    pub fn set_wake(&mut self, id: RadioId, at: Option<Duration>) {
        let Some(r) = self.radios.get_mut(&id) else {
            return;
        };
        match at {
            // Later than the queued entry: it is postponed when it pops.
            Some(t) if r.queued && r.wake_at.is_some_and(|w| t >= w) => r.wake_at = Some(t),
            Some(t) => {
                r.wake_gen = r.wake_gen.wrapping_add(1);
                r.wake_at = Some(t);
                r.queued = true;
                let g = r.wake_gen;
                self.push(t, Ev::Wake(id, g));
            }
            None => {
                r.wake_gen = r.wake_gen.wrapping_add(1);
                r.wake_at = None;
                r.queued = false;
            }
        }
    }

    /// Radio `id` sends `psdu` (FCS included) at `now`, after CSMA-CA.
    pub fn transmit(&mut self, now: Duration, id: RadioId, psdu: &[u8]) -> Result<(), RadioError> {
        if !(5..=phy::MAX_PSDU).contains(&psdu.len()) {
            return Err(RadioError::Length(psdu.len()));
        }
        if !self.radios.contains_key(&id) {
            return Err(RadioError::Unknown(format!("#{id:x}")));
        }
        let key = self.next_id;
        self.next_id += 1;
        self.pending.insert(
            key,
            Pending {
                from: id,
                psdu: psdu.into(),
                nb: 0,
                be: MIN_BE,
            },
        );
        let at = now + self.backoff(MIN_BE) + CCA_TIME;
        self.push(at, Ev::Csma(key));
        Ok(())
    }

    /// Radio `id` puts `psdu` (FCS included) on the air at instant `at`,
    /// without CSMA-CA (a MAC acknowledgement: the frame it answers ended
    /// [`TURNAROUND`] before `at`).
    pub fn transmit_at(
        &mut self,
        at: Duration,
        id: RadioId,
        psdu: &[u8],
    ) -> Result<(), RadioError> {
        if !(5..=phy::MAX_PSDU).contains(&psdu.len()) {
            return Err(RadioError::Length(psdu.len()));
        }
        let r = self
            .radios
            .get(&id)
            .ok_or_else(|| RadioError::Unknown(format!("#{id:x}")))?;
        let (pos, tx_dbm, channel) = (r.pos, r.tx_dbm, r.channel);
        self.start_tx(at, Some(id), id, pos, tx_dbm, channel, psdu.into());
        Ok(())
    }

    fn backoff(&mut self, be: u8) -> Duration {
        let slots = self.rand() % (1u64 << be);
        BACKOFF_UNIT * slots as u32
    }

    /// Puts `psdu` on `channel` at once from `pos` with `power_dbm`, as an
    /// attacker's transmitter would (no CSMA, no radio of the site).
    pub fn inject(
        &mut self,
        now: Duration,
        channel: u8,
        pos: Position,
        power_dbm: f64,
        psdu: &[u8],
    ) -> Result<(), RadioError> {
        check_channel(channel)?;
        check_position(pos)?;
        check_power(power_dbm)?;
        if !(5..=phy::MAX_PSDU).contains(&psdu.len()) {
            return Err(RadioError::Length(psdu.len()));
        }
        self.stats.injected += 1;
        self.start_tx(
            now,
            None,
            phy::radio_id("injector"),
            pos,
            power_dbm,
            channel,
            psdu.into(),
        );
        Ok(())
    }

    /// Starts (or replaces) a jammer.
    pub fn start_jammer(&mut self, j: Jammer) {
        self.stop_jammer(&j.id);
        self.jammers.push(j);
    }

    /// Stops jammer `id`; whether it was on.
    pub fn stop_jammer(&mut self, id: &str) -> bool {
        let n = self.jammers.len();
        self.jammers.retain(|j| j.id != id);
        n != self.jammers.len()
    }

    pub fn jammers(&self) -> &[Jammer] {
        &self.jammers
    }

    /// Starts or stops recording the frames of `channel`.
    pub fn sniff(&mut self, channel: u8, on: bool) -> Result<(), RadioError> {
        self.sniffing[ch(check_channel(channel)?)] = on;
        Ok(())
    }

    /// Frames recorded since the last call, oldest first (by start: an
    /// acknowledgement is recorded when it is scheduled, before frames
    /// that start earlier may be).
    pub fn take_captures(&mut self) -> Vec<Capture> {
        let mut v = std::mem::take(&mut self.captures);
        v.sort_by_key(|c| c.at);
        v
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// When [`Medium::step`] has something next.
    pub fn next_deadline(&self) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// The next output due at or before `now`, in time order.
    pub fn step(&mut self, now: Duration) -> Option<Output> {
        loop {
            if let Some(o) = self.ready.pop_front() {
                return Some(o);
            }
            let &Reverse((at, _, ev)) = self.heap.peek()?;
            if at > now {
                return None;
            }
            self.heap.pop();
            match ev {
                Ev::Wake(id, g) => {
                    let Some(r) = self.radios.get_mut(&id) else {
                        continue;
                    };
                    if r.wake_gen != g {
                        continue;
                    }
                    match r.wake_at {
                        Some(w) if w > at => self.push(w, Ev::Wake(id, g)),
                        _ => {
                            r.wake_at = None;
                            r.queued = false;
                            return Some(Output::Wake { radio: id, at });
                        }
                    }
                }
                Ev::Csma(key) => self.csma(at, key),
                Ev::TxEnd(tx) => self.end_tx(at, tx),
            }
        }
    }

    /// Energy (dBm) on `channel` at `pos` at instant `t`, without noise.
    fn energy_mw(&self, channel: u8, pos: &Position, key: u64, t: Duration) -> f64 {
        let mut mw = 0.0;
        for tx in &self.air[ch(channel)] {
            if tx.start <= t && t < tx.end {
                mw += phy::mw(tx.power_dbm - self.prop.loss_db(tx.src_key, &tx.pos, key, pos));
            }
        }
        for j in &self.jammers {
            if j.channels.contains(&channel) && j.on_during(t, t + Duration::from_nanos(1)) {
                let jk = phy::radio_id(&j.id);
                mw += phy::mw(j.power_dbm - self.prop.loss_db(jk, &j.position, key, pos));
            }
        }
        mw
    }

    fn csma(&mut self, at: Duration, key: u64) {
        let Some(p) = self.pending.get(&key) else {
            return;
        };
        let Some(r) = self.radios.get(&p.from) else {
            self.pending.remove(&key);
            return;
        };
        let (channel, pos, tx_dbm, from) = (r.channel, r.pos, r.tx_dbm, p.from);
        let busy = phy::dbm(self.energy_mw(channel, &pos, from, at)) >= phy::CCA_THRESHOLD_DBM;
        if !busy {
            let Some(p) = self.pending.remove(&key) else {
                return;
            };
            self.start_tx(
                at + TURNAROUND,
                Some(from),
                from,
                pos,
                tx_dbm,
                channel,
                p.psdu,
            );
            return;
        }
        let (nb, be) = {
            let Some(p) = self.pending.get_mut(&key) else {
                return;
            };
            p.nb += 1;
            p.be = (p.be + 1).min(MAX_BE);
            (p.nb, p.be)
        };
        if nb > MAX_BACKOFFS {
            self.pending.remove(&key);
            self.stats.channel_access_failures += 1;
            self.ready.push_back(Output::Sent {
                radio: from,
                at,
                ok: false,
            });
            return;
        }
        let next = at + self.backoff(be) + CCA_TIME;
        self.push(next, Ev::Csma(key));
    }

    #[allow(clippy::too_many_arguments)]
    fn start_tx(
        &mut self,
        start: Duration,
        from: Option<RadioId>,
        src_key: u64,
        pos: Position,
        power_dbm: f64,
        channel: u8,
        psdu: Arc<[u8]>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let end = start + phy::airtime(psdu.len());
        self.stats.frames += 1;
        if self.sniffing[ch(channel)] {
            self.stats.captured += 1;
            self.captures.push(Capture {
                channel,
                at: start,
                psdu: psdu.clone(),
            });
        }
        // Reactive jammers that hear the frame answer it with a burst.
        let mut bursts = Vec::new();
        for j in &self.jammers {
            if j.pattern == Pattern::Reactive && j.channels.contains(&channel) {
                let jk = phy::radio_id(&j.id);
                let heard = power_dbm - self.prop.loss_db(src_key, &pos, jk, &j.position);
                if heard >= phy::SENSITIVITY_DBM && start + REACTION < end {
                    bursts.push((jk, j.position, j.power_dbm));
                }
            }
        }
        for (jk, jpos, jp) in bursts {
            let bid = self.next_id;
            self.next_id += 1;
            self.air[ch(channel)].push(Tx {
                id: bid,
                from: None,
                src_key: jk,
                pos: jpos,
                power_dbm: jp,
                channel,
                start: start + REACTION,
                end,
                psdu: None,
            });
        }
        self.air[ch(channel)].push(Tx {
            id,
            from,
            src_key,
            pos,
            power_dbm,
            channel,
            start,
            end,
            psdu: Some(psdu),
        });
        self.push(end, Ev::TxEnd(id));
    }

    fn end_tx(&mut self, at: Duration, id: u64) {
        let Some((c, tx)) = self
            .air
            .iter()
            .enumerate()
            .find_map(|(c, v)| v.iter().find(|t| t.id == id).map(|t| (c, t.clone())))
        else {
            return;
        };
        let Some(psdu) = tx.psdu.clone() else {
            return;
        };
        if let Some(radio) = tx.from {
            self.ready.push_back(Output::Sent {
                radio,
                at,
                ok: true,
            });
        }
        let bits = 8 * (psdu.len() + 1);
        // Only listeners within the range where the loss can stay under
        // the link budget (shadowing included) may hear it.
        let reach = self.prop.range_m(tx.power_dbm - phy::SENSITIVITY_DBM);
        let reach2 = reach * reach;
        let d2 = |p: &Position| {
            let (dx, dy, dz) = (p.x - tx.pos.x, p.y - tx.pos.y, p.z - tx.pos.z);
            dx * dx + dy * dy + dz * dz
        };
        let candidates: Vec<(RadioId, Position)> = self.listeners[c]
            .iter()
            .filter(|to| Some(**to) != tx.from)
            .filter_map(|to| self.radios.get(to).map(|r| (*to, r.pos)))
            .filter(|(_, p)| d2(p) <= reach2)
            .collect();
        for (to, rpos) in candidates {
            let rx = tx.power_dbm - self.prop.loss_db(tx.src_key, &tx.pos, to, &rpos);
            if rx < phy::SENSITIVITY_DBM {
                continue;
            }
            // A receiver synchronised on an earlier frame it hears misses
            // the start of this one.
            let busy = self.air[c].iter().any(|o| {
                o.id != tx.id
                    && o.psdu.is_some()
                    && o.start < tx.start
                    && o.end > tx.start
                    && o.from != Some(to)
                    && o.power_dbm - self.prop.loss_db(o.src_key, &o.pos, to, &rpos)
                        >= phy::SENSITIVITY_DBM
            });
            if busy {
                self.stats.corrupted += 1;
                continue;
            }
            let mut interference = phy::mw(phy::NOISE_DBM);
            for o in &self.air[c] {
                if o.id != tx.id && o.start < tx.end && o.end > tx.start {
                    interference +=
                        phy::mw(o.power_dbm - self.prop.loss_db(o.src_key, &o.pos, to, &rpos));
                }
            }
            for j in &self.jammers {
                if j.channels.contains(&tx.channel) && j.on_during(tx.start, tx.end) {
                    let jk = phy::radio_id(&j.id);
                    interference +=
                        phy::mw(j.power_dbm - self.prop.loss_db(jk, &j.position, to, &rpos));
                }
            }
            let sinr = phy::mw(rx) / interference;
            let sinr_db = phy::dbm(sinr);
            let per = phy::per(sinr, bits);
            if self.unit() < per {
                self.stats.corrupted += 1;
                continue;
            }
            self.stats.delivered += 1;
            self.ready.push_back(Output::Deliver(Delivery {
                to,
                from: tx.from,
                at,
                channel: tx.channel,
                psdu: psdu.clone(),
                rssi_dbm: (rx * 10.0).round() / 10.0,
                lqi: phy::lqi(sinr_db),
                sinr_db,
                per,
            }));
        }
        // Nothing still to end can overlap what ended a frame ago.
        let horizon = at.saturating_sub(phy::max_airtime());
        self.air[c].retain(|t| t.end >= horizon);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frame::Mac;

    fn medium() -> Medium {
        Medium::with_propagation(
            1,
            Box::new(LogDistance {
                sigma_db: 0.0,
                ..LogDistance::new(1)
            }),
        )
    }

    fn radio(name: &str, x: f64, listening: bool) -> RadioConfig {
        RadioConfig {
            name: name.into(),
            position: Position::new(x, 0.0, 0.0),
            channel: 15,
            tx_power_dbm: 0.0,
            listening,
        }
    }

    /// Wake-ups and deliveries up to `until` (the senders' [`Output::Sent`]
    /// left out).
    fn run(m: &mut Medium, until: Duration) -> Vec<Output> {
        run_all(m, until)
            .into_iter()
            .filter(|o| !matches!(o, Output::Sent { .. }))
            .collect()
    }

    fn run_all(m: &mut Medium, until: Duration) -> Vec<Output> {
        let mut v = Vec::new();
        while let Some(o) = m.step(until) {
            v.push(o);
        }
        v
    }

    fn frame(n: u8) -> Vec<u8> {
        Mac::data(n, 0x1234, 0, 0x2A3B_0000 + u64::from(n), vec![n; 10]).to_psdu()
    }

    #[test]
    fn a_frame_arrives_after_its_airtime_with_rssi_and_lqi() {
        let mut m = medium();
        m.add(1, radio("ps", 0.0, true)).unwrap();
        m.add(2, radio("tag", 3.0, false)).unwrap();
        m.add(3, radio("far", 0.0, true)).unwrap();
        m.set_channel(3, 20).unwrap();
        m.transmit(Duration::ZERO, 2, &frame(1)).unwrap();
        let out = run(&mut m, Duration::from_secs(1));
        assert_eq!(out.len(), 1, "{out:?}");
        let Output::Deliver(d) = &out[0] else {
            panic!()
        };
        assert_eq!(d.to, 1);
        assert_eq!(&*d.psdu, &frame(1)[..]);
        // 40.2 + 30 log10(3) = 54.5 dB.
        assert!((d.rssi_dbm + 54.5).abs() < 0.1, "{}", d.rssi_dbm);
        assert_eq!(d.lqi, 255);
        // Backoff (0-7 units) + CCA + turnaround + airtime.
        let air = phy::airtime(frame(1).len());
        assert!(d.at >= CCA_TIME + TURNAROUND + air);
        assert!(d.at <= BACKOFF_UNIT * 7 + CCA_TIME + TURNAROUND + air);
    }

    fn ack(seq: u8) -> Vec<u8> {
        Mac {
            frame_type: frame::TYPE_ACK,
            frame_pending: false,
            ack_request: false,
            seq,
            dst_pan: None,
            dst: frame::Addr::None,
            src_pan: None,
            src: frame::Addr::None,
            payload: Vec::new(),
        }
        .to_psdu()
    }

    /// IEEE 802.15.4-2006 7.5.6.4.2: the acknowledgement goes out
    /// aTurnaroundTime (192 µs) after the frame it answers, without CCA;
    /// the sender learns when its frame left, and hears the
    /// acknowledgement within macAckWaitDuration (864 µs) of that.
    #[test]
    fn an_acknowledgement_starts_192_us_after_the_frame_without_csma() {
        let mut m = medium();
        m.add(1, radio("ps", 0.0, true)).unwrap();
        m.add(2, radio("tag", 3.0, true)).unwrap();
        m.sniff(15, true).unwrap();
        m.transmit(Duration::ZERO, 2, &frame(1)).unwrap();
        let out = run_all(&mut m, Duration::from_secs(1));
        let end = out
            .iter()
            .find_map(|o| match o {
                Output::Sent { radio: 2, at, ok } => {
                    assert!(ok);
                    Some(*at)
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Sent: {out:?}"));
        let Some(Output::Deliver(d)) = out.iter().find(|o| matches!(o, Output::Deliver(_))) else {
            panic!("{out:?}")
        };
        assert_eq!((d.to, d.at), (1, end));
        // The coordinator answers at that instant: no backoff, no CCA.
        m.transmit_at(d.at + TURNAROUND, 1, &ack(1)).unwrap();
        let out = run_all(&mut m, Duration::from_secs(2));
        let caps = m.take_captures();
        assert_eq!(caps.len(), 2, "{caps:?}");
        let report_end = caps[0].at + phy::airtime(caps[0].psdu.len());
        assert_eq!(report_end, end);
        assert_eq!(
            caps[1].at,
            report_end + TURNAROUND,
            "the ack starts 192 µs after"
        );
        assert_eq!(&*caps[1].psdu, &ack(1)[..]);
        let got = out
            .iter()
            .find_map(|o| match o {
                Output::Deliver(d) if d.to == 2 => Some(d.at),
                _ => None,
            })
            .unwrap_or_else(|| panic!("the tag did not hear its ack: {out:?}"));
        // 192 µs + 11 octets of 32 µs = 544 µs, within the 864 µs wait.
        assert_eq!(got - end, TURNAROUND + phy::airtime(5));
        assert!(got - end <= ACK_WAIT);
        assert_eq!(ACK_WAIT, phy::SYMBOL * 54);
        assert_eq!(TURNAROUND, phy::SYMBOL * 12);
    }

    /// An acknowledgement is a frame like any other: a frame overlapping
    /// it corrupts it, and the sniffer still records it; a radio that is
    /// not on the medium cannot send one.
    #[test]
    fn an_acknowledgement_collides_like_any_frame() {
        let mut m = medium();
        m.add(1, radio("ps", 0.0, true)).unwrap();
        m.add(2, radio("tag", 3.0, true)).unwrap();
        m.sniff(15, true).unwrap();
        let t = Duration::from_millis(10);
        m.transmit_at(t, 1, &ack(7)).unwrap();
        // A stronger frame 1 m from the tag, starting 100 µs later.
        m.inject(
            t + Duration::from_micros(100),
            15,
            Position::new(4.0, 0.0, 0.0),
            0.0,
            &frame(3),
        )
        .unwrap();
        let out = run(&mut m, Duration::from_secs(1));
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::Deliver(d) if d.to == 2 && d.psdu.len() == 5)),
            "{out:?}"
        );
        assert!(m.stats().corrupted >= 1);
        assert_eq!(m.take_captures().len(), 2);
        assert!(m.transmit_at(t, 9, &ack(1)).is_err());
        assert!(matches!(
            m.transmit_at(t, 1, &[0, 1]),
            Err(RadioError::Length(2))
        ));
    }

    #[test]
    fn a_channel_access_failure_is_reported_to_the_sender() {
        let mut m = medium();
        m.add(2, radio("tag", 3.0, false)).unwrap();
        m.start_jammer(
            Jammer::new(
                "j",
                Position::new(4.0, 0.0, 0.0),
                10.0,
                &[15],
                Pattern::Constant,
                Duration::ZERO,
            )
            .unwrap(),
        );
        m.transmit(Duration::ZERO, 2, &frame(1)).unwrap();
        let out = run_all(&mut m, Duration::from_secs(1));
        assert!(
            matches!(
                out[..],
                [Output::Sent {
                    radio: 2,
                    ok: false,
                    ..
                }]
            ),
            "{out:?}"
        );
    }

    #[test]
    fn out_of_range_and_other_channels_hear_nothing() {
        let mut m = medium();
        m.add(1, radio("ps", 0.0, true)).unwrap();
        m.add(2, radio("tag", 2000.0, false)).unwrap();
        m.transmit(Duration::ZERO, 2, &frame(1)).unwrap();
        assert!(run(&mut m, Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn overlapping_injected_frames_collide() {
        let mut m = medium();
        m.add(1, radio("ps", 0.0, true)).unwrap();
        let p = Position::new(3.0, 0.0, 0.0);
        // The second one is 9 dB stronger: the first is lost to it, and
        // the receiver, synchronised on the first, misses the second.
        let q = Position::new(-1.5, 0.0, 0.0);
        m.inject(Duration::ZERO, 15, p, 0.0, &frame(1)).unwrap();
        m.inject(Duration::from_micros(100), 15, q, 0.0, &frame(2))
            .unwrap();
        assert!(run(&mut m, Duration::from_secs(1)).is_empty());
        assert_eq!(m.stats().corrupted, 2);
        // Apart in time, both arrive.
        m.inject(Duration::from_secs(2), 15, p, 0.0, &frame(1))
            .unwrap();
        m.inject(Duration::from_secs(3), 15, q, 0.0, &frame(2))
            .unwrap();
        assert_eq!(run(&mut m, Duration::from_secs(4)).len(), 2);
    }

    #[test]
    fn a_constant_jammer_blocks_csma_and_reception_until_stopped() {
        let mut m = medium();
        m.add(1, radio("ps", 0.0, true)).unwrap();
        m.add(2, radio("tag", 3.0, false)).unwrap();
        m.sniff(15, true).unwrap();
        let j = Jammer::new(
            "j",
            Position::new(4.0, 0.0, 0.0),
            10.0,
            &[15],
            Pattern::Constant,
            Duration::ZERO,
        )
        .unwrap();
        m.start_jammer(j);
        m.transmit(Duration::ZERO, 2, &frame(1)).unwrap();
        assert!(run(&mut m, Duration::from_secs(1)).is_empty());
        assert_eq!(m.stats().channel_access_failures, 1);
        // An attacker's frame ignores CCA but is lost in the noise.
        m.inject(
            Duration::from_secs(1),
            15,
            Position::new(3.0, 0.0, 0.0),
            0.0,
            &frame(2),
        )
        .unwrap();
        assert!(run(&mut m, Duration::from_secs(2)).is_empty());
        assert_eq!(m.stats().corrupted, 1);
        assert_eq!(m.take_captures().len(), 1, "the sniffer saw the frame sent");
        // Another channel is untouched; stopping it clears the air.
        assert!(m.stop_jammer("j"));
        m.transmit(Duration::from_secs(2), 2, &frame(3)).unwrap();
        assert_eq!(run(&mut m, Duration::from_secs(3)).len(), 1);
    }

    #[test]
    fn a_reactive_jammer_is_silent_until_a_frame_starts() {
        let mut m = medium();
        m.add(1, radio("ps", 0.0, true)).unwrap();
        m.add(2, radio("tag", 3.0, false)).unwrap();
        let j = Jammer::new(
            "r",
            Position::new(4.0, 0.0, 0.0),
            10.0,
            &[],
            Pattern::Reactive,
            Duration::ZERO,
        )
        .unwrap();
        m.start_jammer(j);
        m.transmit(Duration::ZERO, 2, &frame(1)).unwrap();
        assert!(run(&mut m, Duration::from_secs(1)).is_empty());
        // CCA was clear (no access failure): the burst corrupted the frame.
        assert_eq!(m.stats().channel_access_failures, 0);
        assert_eq!(m.stats().corrupted, 1);
    }

    #[test]
    fn a_periodic_jammer_hits_frames_in_its_bursts_only() {
        let j = Jammer::new(
            "p",
            Position::default(),
            0.0,
            &[11],
            Pattern::Periodic {
                on_ms: 10,
                period_ms: 100,
            },
            Duration::from_secs(1),
        )
        .unwrap();
        let ms = Duration::from_millis;
        assert!(!j.on_during(ms(0), ms(999)));
        assert!(j.on_during(ms(1000), ms(1001)));
        assert!(!j.on_during(ms(1011), ms(1098)));
        assert!(j.on_during(ms(1095), ms(1101)));
        assert!(
            Jammer::new(
                "x",
                Position::default(),
                0.0,
                &[],
                Pattern::Periodic {
                    on_ms: 5,
                    period_ms: 0
                },
                ms(0)
            )
            .is_err()
        );
        assert!(
            Jammer::new(
                "x",
                Position::default(),
                0.0,
                &[27],
                Pattern::Constant,
                ms(0)
            )
            .is_err()
        );
    }

    #[test]
    fn wakes_come_in_time_order_and_replace_each_other() {
        let mut m = medium();
        m.add(1, radio("a", 0.0, false)).unwrap();
        m.add(2, radio("b", 0.0, false)).unwrap();
        m.set_wake(1, Some(Duration::from_secs(5)));
        m.set_wake(2, Some(Duration::from_secs(3)));
        m.set_wake(1, Some(Duration::from_secs(4)));
        // Postponed lazily: 2 fires at 6, not at 3.
        m.set_wake(2, Some(Duration::from_secs(6)));
        assert_eq!(m.next_deadline(), Some(Duration::from_secs(3)));
        let out = run(&mut m, Duration::from_secs(10));
        assert_eq!(
            out,
            vec![
                Output::Wake {
                    radio: 1,
                    at: Duration::from_secs(4)
                },
                Output::Wake {
                    radio: 2,
                    at: Duration::from_secs(6)
                }
            ]
        );
        m.set_wake(1, Some(Duration::from_secs(20)));
        m.set_wake(1, None);
        assert!(run(&mut m, Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let mut m = medium();
        assert!(
            m.add(
                1,
                RadioConfig {
                    channel: 10,
                    ..radio("a", 0.0, true)
                }
            )
            .is_err()
        );
        m.add(1, radio("a", 0.0, true)).unwrap();
        assert!(matches!(
            m.transmit(Duration::ZERO, 1, &[1, 2]),
            Err(RadioError::Length(2))
        ));
        assert!(m.transmit(Duration::ZERO, 9, &frame(1)).is_err());
        assert!(
            m.inject(
                Duration::ZERO,
                15,
                Position::new(f64::NAN, 0.0, 0.0),
                0.0,
                &frame(1)
            )
            .is_err()
        );
        assert!(
            m.set_position(1, Position::new(f64::INFINITY, 0.0, 0.0))
                .is_err()
        );
    }
}
