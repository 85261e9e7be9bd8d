//! The Panel Server's IEEE 802.15.4 side: its coordinator radio, the
//! reports of its wireless devices over the site's medium, and the link
//! state it keeps per device (devices.md §1.3, §1.5; docs/radio.md).
//!
//! Contract:
//! - Every wireless device sends a report ([`report::Report`]) every
//!   reporting period (site file `report_period_s`, 5-60 s; default
//!   PowerTag 5 s, sensors 60 s, [NF]) with a frame counter that grows by
//!   one per report, whether or not anyone listens; a sensor without
//!   supply is silent. Reports are spread by a seeded phase and ±2 % of
//!   jitter so devices do not collide in lockstep.
//! - The coordinator listens only while the Panel Server runs with IEEE
//!   802.15.4 activated (not permanently deactivated). A report counts
//!   when it is addressed to its PAN and comes from a paired RF-ID with a
//!   counter above the last one (older counters are replays: dropped).
//! - [`LinkTable`] is pure state: per paired device it keeps connected /
//!   Not connected, last report, last RSSI/LQI, the packet error rate over
//!   the last [`WINDOW`] counters (missing counters are lost frames), the
//!   mean and worst figures of the last [`RECENT`] frames received. A device is Not connected once
//!   [`TIMEOUT_PERIODS`] reporting periods pass without a report; its
//!   Modbus values then read the no-value markers and 31146 = 0. A
//!   report brings it back. At boot the paired devices are presumed
//!   connected as of the boot ([NF]), so a reboot does not blank them.
//! - An RF-ID that is not paired is listed as discovered (never connected,
//!   never routed) until the administrator pairs it. With Protect Plus
//!   off ([`Coordinator::set_protect_plus`], devices.md §1.5) a
//!   16-character RF-ID is discovered the same way, and a paired one
//!   without an install code entered is accepted with an unkeyed join
//!   accept (integrity code zeros), which a device takes as it takes one
//!   keyed with its own install code. Commissioning
//!   (docs/radio.md "Commissioning", [`super::commission`]): a device not
//!   in the network sends join requests ([`join::Request`]) instead of
//!   reports and listens; the coordinator answers a paired one with a
//!   join accept over the air. An unpaired 16-character RF-ID (Protect
//!   Plus, [`protect_plus`]) is never discovered: its join request is
//!   ignored without an install code entered, refused when its integrity
//!   code ([`join_mic`]) does not match the code entered, and otherwise
//!   admitted (the running boot pairs it) and accepted.
//! - Leaving: a device the administrator unpairs (remove, rebuild, reset)
//!   is told to leave over the air, as an indirect transmission: at the
//!   next report the coordinator hears from it, the acknowledgement has
//!   its frame-pending bit set and the coordinator then sends a MAC
//!   command Disassociation Notification ([`join::Leave`]) through
//!   CSMA-CA; the device, told a frame is pending, listens for up to
//!   [`FRAME_WAIT`] (macMaxFrameTotalWaitTime), acknowledges the leave
//!   and goes back to asking to join. It acts on it only if it hears it:
//!   jammed or out of range, it keeps reporting as before (the Panel
//!   Server ignores those reports as from an unpaired device, lists an
//!   8-character one as discovered) and the leave stays pending until
//!   the device acknowledges it, asks to join, or is paired again.
//! - Reports ask for a MAC acknowledgement; the coordinator's MAC sends
//!   one for each report addressed to it ([`ack_psdu`]) as IEEE
//!   802.15.4-2006 does: without CSMA-CA, [`TURNAROUND`] (192 µs) after
//!   the report's last symbol. A device listens for it from the end of
//!   its report for [`ACK_WAIT`] (macAckWaitDuration, 864 µs); a report
//!   dropped after channel access failure or not acknowledged in time is
//!   counted unacknowledged. It reports its own figures (unacknowledged
//!   share, the acknowledgements' RSSI and LQI: readings
//!   [`Q_DEVICE_PER`], [`Q_DOWNLINK_RSSI`], [`Q_DOWNLINK_LQI`]) in its
//!   next report; they fill 31147-31151.
//! - Clock jumps: events older than [`CATCH_UP`] before `now` are not
//!   simulated one by one (reports resume [`CATCH_UP`] before `now`, and
//!   timeouts count from there), so a jump of a year costs as much as one
//!   of two minutes.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldtwin_emulator::control::{Event, EventBus};
use fieldtwin_emulator::radio::air::{Act, Air, Node};
use fieldtwin_emulator::radio::frame::{Addr, Mac as FrameMac, TYPE_ACK};
use fieldtwin_emulator::radio::phy::{mix, radio_id};
use fieldtwin_emulator::radio::{Delivery, Position, RadioConfig, RadioId, join, report};
use fieldtwin_emulator::site::InstallCode;
use serde::{Deserialize, Serialize};

use crate::field::{FieldDevice, GatewayCopy, Kind, LinkFigures};

/// Reporting periods without a report after which a device is Not
/// connected ([NF]).
pub const TIMEOUT_PERIODS: u32 = 3;
/// Frame counters over which the packet error rate is computed.
pub const WINDOW: u32 = 32;
/// Received frames whose RSSI and LQI make the mean and worst figures.
pub const RECENT: usize = 16;
/// Oldest past a clock jump that is simulated event by event.
pub const CATCH_UP: Duration = Duration::from_secs(120);
/// Transmit power of the wireless devices ([NF]).
pub const DEVICE_TX_DBM: f64 = 0.0;
/// Transmit power of the Panel Server ([NF]).
pub const PS_TX_DBM: f64 = 3.0;
/// How long a device listens for the MAC acknowledgement of a report
/// after its last symbol (macAckWaitDuration, 54 symbols).
pub const ACK_WAIT: Duration = fieldtwin_emulator::radio::ACK_WAIT;
/// Gap between a report and its acknowledgement (aTurnaroundTime).
pub const TURNAROUND: Duration = fieldtwin_emulator::radio::TURNAROUND;
/// How long a device keeps its receiver on after an acknowledgement with
/// the frame-pending bit set (macMaxFrameTotalWaitTime with the default
/// macMinBE 3, macMaxBE 5, macMaxCSMABackoffs 4: (8 + 16 + 31 x 2) x 20
/// + 266 = 1986 symbols).
pub const FRAME_WAIT: Duration = Duration::from_micros(1986 * 16);
/// Reading ids a device adds to its reports: the figures of the Panel
/// Server's acknowledgements as the device received them ([NF]).
pub const Q_DOWNLINK_RSSI: u8 = 7;
pub const Q_DOWNLINK_LQI: u8 = 8;
pub const Q_DEVICE_PER: u8 = 9;

/// Whether an RF-ID has 16 characters (a Protect Plus device: PowerTag
/// Control, HeatTag, ...), which is discovered only by its install code;
/// an 8-character RF-ID (PowerTag Energy) is discovered automatically
/// (devices.md §1.5).
pub fn protect_plus(rf_id: u64) -> bool {
    rf_id > 0xFFFF_FFFF
}

/// The 4-octet integrity code of a join request (`accept: false`) or of
/// a join accept (`true`): the first octets of HMAC-SHA256 keyed with the
/// install code's 128-bit key over a label, the RF-ID and the nonce
/// ([NF]; docs/radio.md "Commissioning").
pub fn join_mic(code: &InstallCode, accept: bool, rf_id: u64, nonce: u32) -> [u8; 4] {
    join::mic(&code.key, accept, rf_id, nonce)
}

/// The default reporting period of a model ([NF]).
pub fn default_period(kind: Kind) -> Duration {
    match kind {
        Kind::PowerTag => Duration::from_secs(5),
        _ => Duration::from_secs(60),
    }
}

/// Link state of one paired device.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub rf_id: u64,
    pub period: Duration,
    pub connected: bool,
    /// Virtual time of the last report (or of the boot it was presumed
    /// connected at).
    pub last_report: Option<Duration>,
    /// Time the timeout counts from.
    since: Duration,
    pub counter: Option<u32>,
    /// Bit i: counter - i was received.
    window: u64,
    /// Counters the window covers so far (up to [`WINDOW`]).
    span: u32,
    /// The last [`RECENT`] frames received: (error-model PER, RSSI, LQI).
    recent: Vec<(f32, f32, u8)>,
    /// The device's own figures from its last report: the share of its
    /// reports that were not acknowledged, and the RSSI and LQI of the
    /// last acknowledgement it received.
    device: Option<(f32, f32, u8)>,
    pub reports: u64,
}

impl Link {
    fn new(rf_id: u64, period: Duration) -> Self {
        Self {
            rf_id,
            period,
            connected: false,
            last_report: None,
            since: Duration::ZERO,
            counter: None,
            window: 0,
            span: 0,
            recent: Vec::new(),
            device: None,
            reports: 0,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.period * TIMEOUT_PERIODS
    }

    /// Lost fraction of the counters of the window.
    pub fn per(&self) -> Option<f64> {
        if self.span == 0 {
            return None;
        }
        let mask = if self.span >= 64 {
            u64::MAX
        } else {
            (1u64 << self.span) - 1
        };
        let got = (self.window & mask).count_ones();
        Some(1.0 - f64::from(got) / f64::from(self.span))
    }

    /// The last report as the Panel Server received it: (error-model
    /// PER, RSSI, LQI).
    pub fn uplink(&self) -> Option<(f64, f64, u8)> {
        self.recent
            .last()
            .map(|r| (f64::from(r.0), f64::from(r.1), r.2))
    }

    /// The figures of registers 31147-31161.
    pub fn figures(&self) -> LinkFigures {
        let f = |r: &(f32, f32, u8)| (f64::from(r.0), f64::from(r.1), r.2);
        // The device's own figures when its reports carry them (it heard
        // acknowledgements), else the last report as received.
        let last = self.device.as_ref().or(self.recent.last()).map(f);
        let n = self.recent.len() as f64;
        let average = (!self.recent.is_empty()).then(|| {
            let rssi = self.recent.iter().map(|r| f64::from(r.1)).sum::<f64>() / n;
            let lqi = self.recent.iter().map(|r| f64::from(r.2)).sum::<f64>() / n;
            let per = self.per().unwrap_or(0.0);
            (per, (rssi * 10.0).round() / 10.0, lqi.round() as u8)
        });
        let worst = average.map(|(per, _, _)| {
            let frame_per = self
                .recent
                .iter()
                .map(|r| f64::from(r.0))
                .fold(0.0, f64::max);
            let rssi = self
                .recent
                .iter()
                .map(|r| f64::from(r.1))
                .fold(f64::INFINITY, f64::min);
            let lqi = self.recent.iter().map(|r| r.2).min().unwrap_or(0);
            (per.max(frame_per), rssi, lqi)
        });
        LinkFigures {
            last,
            average,
            worst,
        }
    }
}

/// An RF-ID heard that is not paired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Discovered {
    pub rf_id: u64,
    pub first_heard_s: f64,
    pub last_heard_s: f64,
    pub rssi_dbm: f64,
    pub lqi: u8,
    pub reports: u64,
    /// Device kind its frames give (1 PowerTag, 2 sensor).
    #[serde(default)]
    pub kind: u8,
}

/// What a received report changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// From a paired device; `true` when it was Not connected before.
    Paired { rf_id: u64, reconnected: bool },
    /// From an RF-ID heard for the first time, not paired.
    NewlyDiscovered(u64),
    /// From an unpaired RF-ID already listed.
    Discovered(u64),
    /// A replayed or stale counter (dropped).
    Replay(u64),
    /// From an unpaired Protect Plus RF-ID (16 characters): ignored.
    Ignored(u64),
}

/// Most discovered RF-IDs listed ([NF]).
pub const MAX_DISCOVERED: usize = 64;

/// A join request the Panel Server refused: the install code entered for
/// that RF-ID does not match the device's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    pub rf_id: u64,
    pub last_s: f64,
    pub requests: u64,
}

/// The Panel Server's link state (see the module contract).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkTable {
    pub links: Vec<Link>,
    pub discovered: Vec<Discovered>,
    /// Protect Plus devices whose join requests failed the install code.
    pub refused: Vec<Refused>,
    /// Protect Plus RF-IDs heard asking to join without an install code
    /// entered (ignored; kept so the event is reported once).
    pub ignored: Vec<u64>,
    /// Protect Plus is off: 16-character RF-IDs are discovered like
    /// 8-character ones.
    pub protect_plus_off: bool,
}

impl LinkTable {
    /// Keeps the links of RF-IDs still paired, adds the new ones (Not
    /// connected until they report), drops the others.
    pub fn set_paired(&mut self, paired: &[(u64, Duration)]) {
        let old = std::mem::take(&mut self.links);
        for &(rf_id, period) in paired {
            let l = old
                .iter()
                .find(|l| l.rf_id == rf_id)
                .cloned()
                .unwrap_or_else(|| Link::new(rf_id, period));
            self.links.push(Link { period, ..l });
        }
        self.discovered
            .retain(|d| !paired.iter().any(|(r, _)| *r == d.rf_id));
        self.refused
            .retain(|d| !paired.iter().any(|(r, _)| *r == d.rf_id));
    }

    /// Pairs one more device (a Protect Plus device whose join request
    /// carried the right code), Not connected until it reports.
    pub fn admit(&mut self, rf_id: u64, period: Duration) {
        if self.link(rf_id).is_none() {
            self.links.push(Link::new(rf_id, period));
        }
        self.refused.retain(|d| d.rf_id != rf_id);
        self.ignored.retain(|r| *r != rf_id);
    }

    /// A frame from RF-ID `rf_id`, not paired, heard at `now`: listed as
    /// discovered (true when for the first time).
    pub fn discover(&mut self, now: Duration, rf_id: u64, kind: u8, rssi: f64, lqi: u8) -> bool {
        let t = now.as_secs_f64();
        if let Some(d) = self.discovered.iter_mut().find(|d| d.rf_id == rf_id) {
            d.last_heard_s = t;
            d.rssi_dbm = rssi;
            d.lqi = lqi;
            d.kind = kind;
            d.reports += 1;
            return false;
        }
        if self.discovered.len() >= MAX_DISCOVERED {
            self.discovered.remove(0);
        }
        self.discovered.push(Discovered {
            rf_id,
            first_heard_s: t,
            last_heard_s: t,
            rssi_dbm: rssi,
            lqi,
            reports: 1,
            kind,
        });
        true
    }

    /// A join request of `rf_id` failed its install code at `now` (true
    /// when for the first time).
    pub fn refuse(&mut self, now: Duration, rf_id: u64) -> bool {
        let t = now.as_secs_f64();
        if let Some(r) = self.refused.iter_mut().find(|r| r.rf_id == rf_id) {
            r.last_s = t;
            r.requests += 1;
            return false;
        }
        if self.refused.len() >= MAX_DISCOVERED {
            self.refused.remove(0);
        }
        self.refused.push(Refused {
            rf_id,
            last_s: t,
            requests: 1,
        });
        true
    }

    /// Forgets what was heard of unpaired devices (rebuilding the network).
    pub fn forget(&mut self) {
        self.discovered.clear();
        self.refused.clear();
        self.ignored.clear();
    }

    /// Boot: every paired device presumed connected as of `now`.
    pub fn presume(&mut self, now: Duration) {
        for l in &mut self.links {
            l.connected = true;
            l.since = now;
        }
    }

    /// The radio is off: every device Not connected; the ones that were.
    pub fn silence(&mut self) -> Vec<u64> {
        let mut v = Vec::new();
        for l in &mut self.links {
            if l.connected {
                l.connected = false;
                v.push(l.rf_id);
            }
        }
        v
    }

    /// A report `r` received at `now` with these figures.
    pub fn receive(
        &mut self,
        now: Duration,
        r: &report::Report,
        rssi: f64,
        lqi: u8,
        per: f64,
    ) -> Heard {
        let Some(l) = self.links.iter_mut().find(|l| l.rf_id == r.rf_id) else {
            if protect_plus(r.rf_id) && !self.protect_plus_off {
                // Protect Plus: discovered only by its install code.
                return Heard::Ignored(r.rf_id);
            }
            return if self.discover(now, r.rf_id, r.kind, rssi, lqi) {
                Heard::NewlyDiscovered(r.rf_id)
            } else {
                Heard::Discovered(r.rf_id)
            };
        };
        match l.counter {
            Some(c) if r.counter <= c => return Heard::Replay(r.rf_id),
            Some(c) if r.counter - c < 64 => {
                let gap = r.counter - c;
                l.window = (l.window << gap) | 1;
                l.span = (l.span + gap).min(WINDOW);
            }
            _ => {
                l.window = 1;
                l.span = 1;
                l.recent.clear();
            }
        }
        l.counter = Some(r.counter);
        if l.recent.len() >= RECENT {
            l.recent.remove(0);
        }
        l.recent.push((per as f32, rssi as f32, lqi));
        let get = |q: u8| r.readings.iter().find(|(k, _)| *k == q).map(|(_, v)| *v);
        if let (Some(p), Some(rs), Some(lq)) =
            (get(Q_DEVICE_PER), get(Q_DOWNLINK_RSSI), get(Q_DOWNLINK_LQI))
            && p.is_finite()
            && rs.is_finite()
        {
            l.device = Some((p.clamp(0.0, 1.0), rs, lq.clamp(0.0, 255.0) as u8));
        }
        l.last_report = Some(now);
        l.since = now;
        l.reports += 1;
        let reconnected = !l.connected;
        l.connected = true;
        Heard::Paired {
            rf_id: r.rf_id,
            reconnected,
        }
    }

    /// Devices whose timeout passed at `now`: now Not connected.
    pub fn expire(&mut self, now: Duration) -> Vec<u64> {
        let mut v = Vec::new();
        for l in &mut self.links {
            if l.connected && l.since + l.timeout() <= now {
                l.connected = false;
                v.push(l.rf_id);
            }
        }
        v
    }

    /// A clock jump: timeouts count from `horizon` at the earliest.
    pub fn defer(&mut self, horizon: Duration) {
        for l in &mut self.links {
            l.since = l.since.max(horizon);
        }
    }

    /// When the next device may time out.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.links
            .iter()
            .filter(|l| l.connected)
            .map(|l| l.since + l.timeout())
            .min()
    }

    pub fn link(&self, rf_id: u64) -> Option<&Link> {
        self.links.iter().find(|l| l.rf_id == rf_id)
    }
}

/// The coordinator radio of one Panel Server and its link table.
pub struct Coordinator {
    pub ps_id: String,
    pub radio: RadioId,
    pub pan: u16,
    pub channel: u8,
    pub table: Mutex<LinkTable>,
    /// The site's wireless devices, then the ones known only by their
    /// reports that the administrator added ([`FieldDevice::heard`]).
    devices: Mutex<Vec<Arc<FieldDevice>>>,
    /// The transmitters of the site's wireless devices (the medium drives
    /// them; kept here so tests can look at the devices' side).
    #[cfg_attr(not(test), allow(dead_code))]
    reporters: Vec<Arc<Reporter>>,
    /// Install codes the administrator entered (selective discovery).
    codes: Mutex<Vec<(u64, InstallCode)>>,
    /// Where verified joins are sent to be paired (set by each boot).
    joins: Mutex<Option<tokio::sync::mpsc::UnboundedSender<u64>>>,
    gateway: GatewayCopy,
    seq: AtomicU8,
    /// Devices unpaired that have not acknowledged their leave yet: RF-ID
    /// and the sequence number of the last leave put on the air.
    leaves: Mutex<Vec<(u64, Option<u8>)>>,
    /// Frames waiting to go through CSMA-CA once their time comes (a
    /// leave, after the acknowledgement that announced it).
    outbox: Mutex<Vec<(Duration, Vec<u8>)>>,
    events: EventBus,
    air: Air,
    clock: fieldtwin_emulator::clock::WeakClock,
}

impl Coordinator {
    fn lock_leaves(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Option<u8>)>> {
        self.leaves.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_outbox(&self) -> std::sync::MutexGuard<'_, Vec<(Duration, Vec<u8>)>> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Protect Plus on (the default) or off (every device discovered
    /// automatically).
    pub fn set_protect_plus(&self, on: bool) {
        let mut t = self.lock();
        t.protect_plus_off = !on;
        if !on {
            t.ignored.clear();
        }
    }

    /// RF-IDs told to leave that have not acknowledged it yet.
    pub fn leaving(&self) -> Vec<u64> {
        self.lock_leaves().iter().map(|(r, _)| *r).collect()
    }

    /// The next wake-up: the link table's next timeout or the next frame
    /// of the outbox, whichever comes first.
    fn next_wake(&self, table: Option<Duration>) -> Option<Duration> {
        let out = self.lock_outbox().iter().map(|(t, _)| *t).min();
        match (table, out) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A leave for `rf_id` if one is pending (its sequence number noted
    /// to match the acknowledgement).
    fn leave_for(&self, rf_id: u64) -> Option<Vec<u8>> {
        let mut leaves = self.lock_leaves();
        let l = leaves.iter_mut().find(|(r, _)| *r == rf_id)?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        l.1 = Some(seq);
        Some(
            join::Leave {
                pan: self.pan,
                rf_id,
                coordinator: join::coordinator_address(self.radio),
                seq,
                reason: join::REASON_COORDINATOR,
            }
            .to_psdu(),
        )
    }

    /// The name an event gives RF-ID `rf_id`.
    fn label(&self, rf_id: u64) -> String {
        match self.device(rf_id) {
            Some(d) => format!("{} ({rf_id:016X})", d.id),
            None => format!("{rf_id:016X}"),
        }
    }

    fn emit(&self, kind: &str, message: String) {
        self.events.send(Event::Device {
            device: self.ps_id.clone(),
            kind: kind.into(),
            message,
        });
    }

    /// The device with RF-ID `rf_id` (a site device or one known only by
    /// its reports).
    pub fn device(&self, rf_id: u64) -> Option<Arc<FieldDevice>> {
        self.lock_devices()
            .iter()
            .find(|d| d.rf_id == Some(rf_id))
            .cloned()
    }

    fn lock_devices(&self) -> std::sync::MutexGuard<'_, Vec<Arc<FieldDevice>>> {
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device that serves the registers of paired RF-ID `rf_id` at
    /// unit `unit`: the site's device, or one known only by its reports
    /// (created here, kind from its reports, a PowerTag until one came).
    pub fn adopt(&self, rf_id: u64, unit: u8) -> Arc<FieldDevice> {
        match self.device(rf_id) {
            // Added again at another unit id: a new record.
            Some(d) if d.is_heard() && d.unit != unit => {
                self.lock_devices().retain(|x| !Arc::ptr_eq(x, &d));
            }
            Some(d) => return d,
            None => {}
        }
        let kind = self
            .lock()
            .discovered
            .iter()
            .find(|d| d.rf_id == rf_id)
            .map_or(Kind::PowerTag, |d| {
                if d.kind == 2 {
                    Kind::Co2
                } else {
                    Kind::PowerTag
                }
            });
        let d = Arc::new(FieldDevice::heard(rf_id, unit, kind, self.gateway.clone()));
        self.lock_devices().push(d.clone());
        d
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets where verified joins go (the running boot pairs them).
    pub fn set_join_sink(&self, tx: Option<tokio::sync::mpsc::UnboundedSender<u64>>) {
        *self.joins.lock().unwrap_or_else(|e| e.into_inner()) = tx;
    }

    fn code(&self, rf_id: u64) -> Option<InstallCode> {
        self.codes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(r, _)| *r == rf_id)
            .map(|(_, c)| *c)
    }

    fn disconnected(&self, gone: Vec<u64>, why: &str) {
        for rf_id in gone {
            if let Some(d) = self.device(rf_id) {
                d.set_contact(false);
                self.emit(
                    "wireless",
                    format!("{} ({rf_id:016X}) Not connected: {why}", d.id),
                );
            }
        }
    }

    /// Settings applied: which devices are paired (with their periods),
    /// the install codes entered, and whether the receiver is on. A device
    /// that is no longer paired is told to leave over the air at its next
    /// report heard (see the module contract).
    pub fn configure(
        &self,
        paired: &[u64],
        codes: &[(u64, InstallCode)],
        listening: bool,
        now: Duration,
        boot: bool,
    ) {
        *self.codes.lock().unwrap_or_else(|e| e.into_inner()) = codes.to_vec();
        let periods: Vec<(u64, Duration)> = paired
            .iter()
            .map(|r| {
                let period = self
                    .device(*r)
                    .map(|d| d.report_period())
                    .unwrap_or(Duration::from_secs(5));
                (*r, period)
            })
            .collect();
        let (gone, next, dropped) = {
            let mut t = self.lock();
            let dropped: Vec<u64> = t
                .links
                .iter()
                .map(|l| l.rf_id)
                .filter(|r| !paired.contains(r))
                .collect();
            t.set_paired(&periods);
            if boot && listening {
                t.presume(now);
            }
            let gone = if listening { Vec::new() } else { t.silence() };
            (gone, t.next_deadline(), dropped)
        };
        {
            let mut leaves = self.lock_leaves();
            leaves.retain(|(r, _)| !paired.contains(r));
            for r in &dropped {
                if !leaves.iter().any(|(x, _)| x == r) {
                    leaves.push((*r, None));
                }
            }
        }
        // Devices no longer paired read as not connected.
        let devices = self.lock_devices().clone();
        for d in &devices {
            let in_table = d.rf_id.is_some_and(|r| paired.contains(&r));
            let connected = d
                .rf_id
                .and_then(|r| self.lock().link(r).map(|l| l.connected))
                .unwrap_or(false);
            if !in_table || boot {
                d.set_contact(in_table && connected);
            }
        }
        self.disconnected(gone, "IEEE 802.15.4 is off");
        let next = self.next_wake(next);
        {
            let mut m = self.air.medium();
            m.set_listening(self.radio, listening);
            if next.is_some() {
                m.set_wake(self.radio, next);
            }
        }
        for r in dropped {
            self.emit(
                "wireless",
                format!(
                    "{} removed from the network: told to leave (Disassociation Notification) at its next report heard",
                    self.label(r)
                ),
            );
        }
        self.air.poke();
    }

    /// Rebuilding the network: what was heard of unpaired devices is
    /// forgotten.
    pub fn forget(&self) {
        self.lock().forget();
    }

    /// The site's medium.
    pub fn air(&self) -> &Air {
        &self.air
    }

    /// The Panel Server lost power: its receiver stops (the links stay as
    /// they were until the next boot presumes them again).
    pub fn power_off(&self) {
        self.air.medium().set_listening(self.radio, false);
    }

    /// A join request heard (see docs/radio.md "Commissioning").
    fn join(&self, d: &Delivery, q: &join::Request) -> Act {
        let rf_id = q.rf_id;
        // Asking to join: it is out of the network (a leave it heard, or
        // whose acknowledgement was lost).
        self.lock_leaves().retain(|(r, _)| *r != rf_id);
        let paired = self.lock().link(rf_id).is_some();
        let code = self.code(rf_id);
        let accept = |code: Option<InstallCode>| {
            let a = join::Accept {
                pan: self.pan,
                rf_id,
                seq: self.seq.fetch_add(1, Ordering::Relaxed),
                nonce: q.nonce,
                status: 0,
                mic: code.map_or([0; 4], |c| join_mic(&c, true, rf_id, q.nonce)),
            };
            Act {
                send: vec![a.to_psdu()],
                wake_at: None,
                ..Act::default()
            }
        };
        if paired {
            if let Some(c) = code
                && join_mic(&c, false, rf_id, q.nonce) != q.mic
            {
                self.lock().refuse(d.at, rf_id);
                return Act::default();
            }
            self.emit(
                "wireless",
                format!("join request of {rf_id:016X} accepted (paired device)"),
            );
            return accept(code);
        }
        let open = self.lock().protect_plus_off;
        if !protect_plus(rf_id) || (open && code.is_none()) {
            if self.lock().discover(d.at, rf_id, q.kind, d.rssi_dbm, d.lqi) {
                self.emit(
                    "wireless",
                    format!(
                        "unknown wireless device {rf_id:016X} asks to join (RSSI {:.1} dBm): discovered, not connected, not routed until the administrator adds it",
                        d.rssi_dbm
                    ),
                );
            }
            return Act::default();
        }
        let Some(c) = code else {
            let mut t = self.lock();
            if !t.ignored.contains(&rf_id) {
                if t.ignored.len() >= MAX_DISCOVERED {
                    t.ignored.remove(0);
                }
                t.ignored.push(rf_id);
                drop(t);
                self.emit(
                    "wireless",
                    format!(
                        "join request of Protect Plus device {rf_id:016X} ignored: its install code has not been entered"
                    ),
                );
            }
            return Act::default();
        };
        if join_mic(&c, false, rf_id, q.nonce) != q.mic {
            if self.lock().refuse(d.at, rf_id) {
                self.emit(
                    "wireless",
                    format!(
                        "join request of {rf_id:016X} refused: the install code entered for it does not match the device's"
                    ),
                );
            }
            return Act::default();
        }
        let period = self
            .device(rf_id)
            .map_or(Duration::from_secs(5), |d| d.report_period());
        let next = {
            let mut t = self.lock();
            t.admit(rf_id, period);
            t.next_deadline()
        };
        if let Some(tx) = self
            .joins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = tx.send(rf_id);
        }
        self.emit(
            "wireless",
            format!(
                "Protect Plus device {rf_id:016X} joined with its install code (RSSI {:.1} dBm)",
                d.rssi_dbm
            ),
        );
        Act {
            wake_at: self.next_wake(next),
            ..accept(Some(c))
        }
    }
}

impl Node for Coordinator {
    fn wake(&self, at: Duration) -> Act {
        let now = self.clock.upgrade().map_or(at, |c| c.now());
        let mut t = self.lock();
        if now > at + CATCH_UP {
            t.defer(now - CATCH_UP);
        }
        let gone = t.expire(at);
        let next = t.next_deadline();
        drop(t);
        self.disconnected(gone, "no report for its timeout");
        // Frames whose time has come go through CSMA-CA.
        let send: Vec<Vec<u8>> = {
            let mut out = self.lock_outbox();
            let (due, later): (Vec<_>, Vec<_>) = out.drain(..).partition(|(t, _)| *t <= at);
            *out = later;
            due.into_iter().map(|(_, p)| p).collect()
        };
        Act {
            send,
            wake_at: self.next_wake(next),
            ..Act::default()
        }
    }

    fn receive(&self, d: &Delivery) -> Act {
        // A device's acknowledgement of a leave: it is out.
        if let Ok(m) = FrameMac::parse(&d.psdu)
            && m.frame_type == TYPE_ACK
        {
            let left = {
                let mut leaves = self.lock_leaves();
                let i = leaves.iter().position(|(_, s)| *s == Some(m.seq));
                i.map(|i| leaves.remove(i).0)
            };
            if let Some(rf_id) = left {
                self.emit(
                    "wireless",
                    format!(
                        "{} left the network (it acknowledged the Disassociation Notification)",
                        self.label(rf_id)
                    ),
                );
            }
            return Act::default();
        }
        if let Ok(q) = join::Request::parse(&d.psdu) {
            if q.pan != self.pan {
                return Act::default();
            }
            return self.join(d, &q);
        }
        let Ok(r) = report::Report::parse(&d.psdu) else {
            return Act::default();
        };
        if r.pan != self.pan {
            return Act::default();
        }
        // The MAC acknowledges a frame addressed to it that asks for it;
        // a leave waiting for that device is announced (frame pending)
        // and follows once the acknowledgement is over.
        let asked = FrameMac::parse(&d.psdu).is_ok_and(|m| m.ack_request);
        let leave = asked.then(|| self.leave_for(r.rf_id)).flatten();
        let ack = asked.then(|| ack_frame(r.seq, leave.is_some()));
        if let Some(l) = leave {
            let after = d.at + TURNAROUND + fieldtwin_emulator::radio::phy::airtime(5);
            self.lock_outbox().push((after, l));
        }
        let (heard, figures, next) = {
            let mut t = self.lock();
            let heard = t.receive(d.at, &r, d.rssi_dbm, d.lqi, d.per);
            let figures = t.link(r.rf_id).map(|l| l.figures());
            (heard, figures, t.next_deadline())
        };
        match heard {
            Heard::Paired { rf_id, reconnected } => {
                if let Some(dev) = self.device(rf_id) {
                    if let Some(f) = figures {
                        dev.set_link(f);
                    }
                    dev.set_reported(&r.readings);
                    dev.set_contact(true);
                    if reconnected {
                        self.emit(
                            "wireless",
                            format!(
                                "{} ({rf_id:016X}) connected, RSSI {:.1} dBm, LQI {}",
                                dev.id, d.rssi_dbm, d.lqi
                            ),
                        );
                    }
                }
            }
            Heard::NewlyDiscovered(rf_id) => self.emit(
                "wireless",
                format!(
                    "unknown wireless device {rf_id:016X} discovered (RSSI {:.1} dBm); not paired, not routed",
                    d.rssi_dbm
                ),
            ),
            Heard::Discovered(_) | Heard::Ignored(_) => {}
            Heard::Replay(rf_id) => self.emit(
                "wireless",
                format!("report of {rf_id:016X} with counter {} dropped: replayed or stale", r.counter),
            ),
        }
        Act {
            send: Vec::new(),
            // No CSMA-CA: aTurnaroundTime after the report's last symbol.
            send_at: ack.map(|a| (d.at + TURNAROUND, a)).into_iter().collect(),
            wake_at: self.next_wake(next),
        }
    }
}

/// A MAC acknowledgement frame of sequence number `seq` (PSDU, FCS
/// included).
pub fn ack_psdu(seq: u8) -> Vec<u8> {
    ack_frame(seq, false)
}

/// An acknowledgement, with the frame-pending bit when the coordinator
/// has a frame for the device.
fn ack_frame(seq: u8, frame_pending: bool) -> Vec<u8> {
    FrameMac {
        frame_type: TYPE_ACK,
        frame_pending,
        ack_request: false,
        seq,
        dst_pan: None,
        dst: Addr::None,
        src_pan: None,
        src: Addr::None,
        payload: Vec::new(),
    }
    .to_psdu()
}

/// A report's PSDU with the acknowledgement request set.
fn with_ack_request(psdu: Vec<u8>) -> Vec<u8> {
    match FrameMac::parse(&psdu) {
        Ok(mut m) => {
            m.ack_request = true;
            m.to_psdu()
        }
        Err(_) => psdu,
    }
}

/// A device's record of the acknowledgements of its reports.
#[derive(Debug, Default)]
struct Acks {
    /// The report waiting for its acknowledgement: (sequence number, when
    /// the next report is due).
    waiting: Option<(u8, Duration)>,
    /// When the wait for the acknowledgement ends (the report's end plus
    /// [`ACK_WAIT`]); `None` while the report waits for the channel.
    deadline: Option<Duration>,
    /// Bit i: report n - i was acknowledged.
    window: u64,
    span: u32,
    /// RSSI and LQI of the last acknowledgement received.
    last: Option<(f32, u8)>,
    /// After an acknowledgement with the frame-pending bit: the receiver
    /// stays on until the first instant, the next report is due at the
    /// second.
    pending: Option<(Duration, Duration)>,
}

impl Acks {
    fn record(&mut self, acked: bool) {
        self.window = (self.window << 1) | u64::from(acked);
        self.span = (self.span + 1).min(WINDOW);
    }

    /// The readings that report them: PER, downlink RSSI and LQI.
    fn readings(&self) -> Vec<(u8, f32)> {
        let Some((rssi, lqi)) = self.last else {
            return Vec::new();
        };
        let mask = (1u64 << self.span) - 1;
        let got = (self.window & mask).count_ones();
        let per = 1.0 - got as f32 / self.span.max(1) as f32;
        vec![
            (Q_DEVICE_PER, per),
            (Q_DOWNLINK_RSSI, rssi),
            (Q_DOWNLINK_LQI, f32::from(lqi)),
        ]
    }
}

/// One wireless device's transmitter: reports while it is in the
/// network (joined), join requests otherwise.
struct Reporter {
    dev: Arc<FieldDevice>,
    radio: RadioId,
    pan: u16,
    period: Duration,
    counter: AtomicU32,
    /// In the Panel Server's network: sends reports; otherwise sends join
    /// requests and listens for the accept.
    joined: AtomicBool,
    /// Its install code (the key of its join exchange).
    code: InstallCode,
    acks: Mutex<Acks>,
    air: Air,
    clock: fieldtwin_emulator::clock::WeakClock,
}

impl Reporter {
    fn jitter(&self, n: u32) -> Duration {
        let h = mix(self.dev.rf_id.unwrap_or(0) ^ u64::from(n).rotate_left(32));
        // ±2 % of the period.
        let f = (h % 4001) as f64 / 100_000.0 - 0.02;
        Duration::from_secs_f64((self.period.as_secs_f64() * (1.0 + f)).max(0.001))
    }

    fn joined(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
    }

    fn kind(&self) -> u8 {
        if self.dev.kind == Kind::PowerTag {
            1
        } else {
            2
        }
    }
}

impl Reporter {
    fn lock_acks(&self) -> std::sync::MutexGuard<'_, Acks> {
        self.acks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops listening after an acknowledgement (or its timeout), unless
    /// it is asking to join.
    fn stop_listening(&self) {
        if self.joined() {
            self.air.medium().set_listening(self.radio, false);
        }
    }
}

impl Node for Reporter {
    fn wake(&self, at: Duration) -> Act {
        // While a report waits for its acknowledgement, the only wake-up
        // asked for is the end of that wait (or, should the medium never
        // say the report left, the next report): no acknowledgement came.
        let waited = {
            let mut acks = self.lock_acks();
            acks.deadline = None;
            acks.waiting.take()
        };
        if let Some((_, next)) = waited {
            self.lock_acks().record(false);
            self.stop_listening();
            return Act {
                wake_at: Some(next.max(at)),
                ..Act::default()
            };
        }
        // The frame announced by the acknowledgement did not come.
        let pending = self.lock_acks().pending.take();
        if let Some((_, next)) = pending {
            self.stop_listening();
            return Act {
                wake_at: Some(next.max(at)),
                ..Act::default()
            };
        }
        let now = self.clock.upgrade().map_or(at, |c| c.now());
        if now > at + CATCH_UP {
            // Far behind after a jump: resume CATCH_UP before now.
            let behind = (now - CATCH_UP - at).as_secs_f64();
            let skip = (behind / self.period.as_secs_f64()).floor() as u32;
            self.counter.fetch_add(skip, Ordering::Relaxed);
            return Act {
                send: Vec::new(),
                wake_at: Some(at + self.period * skip.max(1)),
                ..Act::default()
            };
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let next = Some(at + self.jitter(n));
        let (Some(rf_id), true) = (self.dev.rf_id, self.dev.transmits()) else {
            return Act {
                send: Vec::new(),
                wake_at: next,
                ..Act::default()
            };
        };
        if !self.joined() {
            let q = join::Request {
                pan: self.pan,
                rf_id,
                seq: n as u8,
                nonce: n,
                kind: self.kind(),
                mic: join_mic(&self.code, false, rf_id, n),
            };
            return Act {
                send: vec![q.to_psdu()],
                wake_at: next,
                ..Act::default()
            };
        }
        let mut readings = self.dev.readings(at.as_secs_f64());
        readings.extend(self.lock_acks().readings());
        let r = report::Report {
            pan: self.pan,
            rf_id,
            seq: n as u8,
            kind: self.kind(),
            counter: n,
            readings,
        };
        // It listens for the acknowledgement once the report has left
        // ([`Node::sent`]).
        self.lock_acks().waiting = next.map(|t| (n as u8, t));
        Act {
            send: vec![with_ack_request(r.to_psdu())],
            wake_at: next,
            ..Act::default()
        }
    }

    /// The report left at `at`: listen for its acknowledgement until
    /// [`ACK_WAIT`] after; dropped (channel access failure): counted
    /// unacknowledged at once.
    fn sent(&self, at: Duration, ok: bool) -> Act {
        let mut acks = self.lock_acks();
        let Some((_, next)) = acks.waiting else {
            return Act::default();
        };
        if ok {
            acks.deadline = Some(at + ACK_WAIT);
            drop(acks);
            self.air.medium().set_listening(self.radio, true);
            return Act {
                wake_at: Some(at + ACK_WAIT),
                ..Act::default()
            };
        }
        acks.waiting = None;
        acks.record(false);
        drop(acks);
        Act {
            wake_at: Some(next.max(at)),
            ..Act::default()
        }
    }

    /// Listening while it asks to join: an accept addressed to it from its
    /// Panel Server's PAN, with the code its install code gives (or none
    /// for an 8-character RF-ID, discovered automatically), lets it in.
    fn receive(&self, d: &Delivery) -> Act {
        if let Ok(m) = FrameMac::parse(&d.psdu)
            && m.frame_type == TYPE_ACK
        {
            let mut acks = self.lock_acks();
            let Some((seq, next)) = acks.waiting else {
                return Act::default();
            };
            // Only within the wait that follows the report's last symbol.
            if m.seq != seq || acks.deadline.is_none_or(|end| d.at > end) {
                return Act::default();
            }
            acks.waiting = None;
            acks.deadline = None;
            acks.record(true);
            acks.last = Some((d.rssi_dbm as f32, d.lqi));
            if m.frame_pending {
                // The coordinator has a frame for it: keep listening.
                let until = d.at + FRAME_WAIT;
                acks.pending = Some((until, next));
                return Act {
                    wake_at: Some(until),
                    ..Act::default()
                };
            }
            drop(acks);
            self.stop_listening();
            return Act {
                wake_at: Some(next),
                ..Act::default()
            };
        }
        // Told to leave by its coordinator: acknowledged (no CSMA-CA),
        // then it asks to join again.
        if let (Ok(l), Some(rf_id)) = (join::Leave::parse(&d.psdu), self.dev.rf_id) {
            if l.rf_id != rf_id || l.pan != self.pan || !self.joined() {
                return Act::default();
            }
            self.joined.store(false, Ordering::Relaxed);
            let next = self.lock_acks().pending.take().map(|(_, next)| next);
            self.air.medium().set_listening(self.radio, true);
            return Act {
                send_at: vec![(d.at + TURNAROUND, ack_psdu(l.seq))],
                wake_at: next,
                ..Act::default()
            };
        }
        let (Ok(a), Some(rf_id)) = (join::Accept::parse(&d.psdu), self.dev.rf_id) else {
            return Act::default();
        };
        if a.rf_id != rf_id || a.pan != self.pan || a.status != 0 || self.joined() {
            return Act::default();
        }
        // Keyed with its own install code, or unkeyed (an 8-character
        // device, or a Panel Server with Protect Plus off).
        let right = join_mic(&self.code, true, rf_id, a.nonce) == a.mic;
        if !right && a.mic != [0; 4] {
            return Act::default();
        }
        self.joined.store(true, Ordering::Relaxed);
        self.air.medium().set_listening(self.radio, false);
        Act::default()
    }
}

/// Where a Panel Server's radios are: its own position and channel, and
/// each wireless device's position and reporting period.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub position: Position,
    pub channel: u8,
    pub devices: Vec<(Position, Option<Duration>)>,
    /// Each wireless device's install code and whether it is already
    /// commissioned (in the network at power-up); default: a derived code
    /// and commissioned.
    pub commissioning: Vec<(InstallCode, bool)>,
}

/// The default position of wireless device `i` of `n` around a Panel
/// Server at `ps`: on a circle of 3 m, 1 m lower ([NF]).
pub fn default_device_position(ps: Position, i: usize, n: usize) -> Position {
    let a = std::f64::consts::TAU * i as f64 / n.max(1) as f64;
    Position::new(
        ps.x + 3.0 * a.cos(),
        ps.y + 3.0 * a.sin(),
        (ps.z - 1.0).max(0.0),
    )
}

/// The radio name of wireless device `field` of Panel Server `ps`.
pub fn device_radio_name(ps: &str, field: &str) -> String {
    format!("{ps}/{field}")
}

/// Puts a Panel Server's coordinator and its wireless devices on the
/// medium. The devices start reporting (or, not commissioned, asking to
/// join) at once (seeded phase); the coordinator listens once
/// [`Coordinator::configure`] says so.
pub fn attach(
    air: &Air,
    ps_id: &str,
    place: &Placement,
    devices: &[Arc<FieldDevice>],
    gateway: &GatewayCopy,
    events: &EventBus,
    clock: &fieldtwin_emulator::clock::Clock,
) -> Result<Arc<Coordinator>, String> {
    let now = clock.now();
    let radio = radio_id(ps_id);
    let pan = fieldtwin_emulator::radio::pan_of(ps_id);
    let mut reporters = Vec::new();
    let mut radios = Vec::new();
    for (i, dev) in devices.iter().enumerate() {
        let (pos, period) = place.devices.get(i).copied().unwrap_or((
            default_device_position(place.position, i, devices.len()),
            None,
        ));
        let (code, commissioned) = place
            .commissioning
            .get(i)
            .copied()
            .unwrap_or((InstallCode::derived(0, &dev.id), true));
        let period = period.unwrap_or_else(|| default_period(dev.kind));
        dev.set_report_period(period);
        let name = device_radio_name(ps_id, &dev.id);
        let id = radio_id(&name);
        let phase =
            Duration::from_secs_f64(period.as_secs_f64() * (mix(id) % 10_000) as f64 / 10_000.0);
        reporters.push(Arc::new(Reporter {
            dev: dev.clone(),
            radio: id,
            pan,
            period,
            counter: AtomicU32::new(0),
            joined: AtomicBool::new(commissioned),
            code,
            acks: Mutex::new(Acks::default()),
            air: air.clone(),
            clock: clock.downgrade(),
        }));
        radios.push((
            id,
            RadioConfig {
                name,
                position: pos,
                channel: place.channel,
                tx_power_dbm: DEVICE_TX_DBM,
                listening: !commissioned,
            },
            now + phase,
        ));
    }
    let coordinator = Arc::new(Coordinator {
        ps_id: ps_id.to_string(),
        radio,
        pan,
        channel: place.channel,
        table: Mutex::new(LinkTable::default()),
        devices: Mutex::new(devices.to_vec()),
        reporters: reporters.clone(),
        codes: Mutex::new(Vec::new()),
        joins: Mutex::new(None),
        leaves: Mutex::new(Vec::new()),
        outbox: Mutex::new(Vec::new()),
        gateway: gateway.clone(),
        seq: AtomicU8::new(0),
        events: events.clone(),
        air: air.clone(),
        clock: clock.downgrade(),
    });
    air.attach(
        radio,
        RadioConfig {
            name: ps_id.to_string(),
            position: place.position,
            channel: place.channel,
            tx_power_dbm: PS_TX_DBM,
            listening: false,
        },
        coordinator.clone(),
        None,
    )
    .map_err(|e| e.to_string())?;
    for ((id, cfg, wake), r) in radios.into_iter().zip(reporters) {
        air.attach(id, cfg, r, Some(wake))
            .map_err(|e| e.to_string())?;
    }
    Ok(coordinator)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(rf_id: u64, counter: u32) -> report::Report {
        report::Report {
            pan: 1,
            rf_id,
            seq: 0,
            kind: 1,
            counter,
            readings: vec![],
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    /// A PowerTag (A9MEM1540) `id` at Modbus unit `unit` with RF-ID `rf`.
    fn powertag(id: &str, unit: u8, rf: u64, seed: u64) -> Arc<FieldDevice> {
        let spec = crate::field::Spec {
            id: id.into(),
            model: "A9MEM1540".into(),
            unit,
            rf_id: Some(rf),
            profile: None,
            powered: true,
            seed,
            day0: 0.0,
        };
        Arc::new(FieldDevice::new(&spec, GatewayCopy::default()).unwrap())
    }

    /// The Panel Server `ps1` at (0, 0, 2) on `channel` of a medium seeded
    /// with `seed`, with `devs` and its `commissioning` codes; the clock is
    /// paused (time moves by [`Rig::jump`]).
    struct Rig {
        clock: fieldtwin_emulator::clock::Clock,
        air: Air,
        devs: Vec<Arc<FieldDevice>>,
        events: EventBus,
        c: Arc<Coordinator>,
    }

    impl Rig {
        fn new(
            seed: u64,
            channel: u8,
            devs: Vec<Arc<FieldDevice>>,
            commissioning: Vec<(InstallCode, bool)>,
        ) -> Self {
            let clock = fieldtwin_emulator::clock::Clock::start(chrono::Utc::now(), 1.0).unwrap();
            clock.set_paused(true);
            let air = Air::new(&clock, seed);
            let place = Placement {
                position: Position::new(0.0, 0.0, 2.0),
                channel,
                devices: Vec::new(),
                commissioning,
            };
            let events = EventBus::new();
            let c = attach(
                &air,
                "ps1",
                &place,
                &devs,
                &GatewayCopy::default(),
                &events,
                &clock,
            )
            .unwrap();
            Self {
                clock,
                air,
                devs,
                events,
                c,
            }
        }

        /// Moves the clock `s` seconds on and lets the medium catch up.
        async fn jump(&self, s: u64) {
            self.clock.advance(Duration::from_secs(s));
            self.air.process(self.clock.now()).await;
        }

        /// A listening radio `probe` at (1, 1, 1) on `channel`.
        fn probe(&self, channel: u8) -> Arc<Probe> {
            let probe = Arc::new(Probe::default());
            self.air
                .attach(
                    radio_id("probe"),
                    RadioConfig {
                        name: "probe".into(),
                        position: Position::new(1.0, 1.0, 1.0),
                        channel,
                        tx_power_dbm: 0.0,
                        listening: true,
                    },
                    probe.clone(),
                    None,
                )
                .unwrap();
            probe
        }
    }

    #[test]
    fn a_device_times_out_and_comes_back() {
        let mut t = LinkTable::default();
        t.set_paired(&[(7, S(5))]);
        t.presume(S(0));
        assert_eq!(t.next_deadline(), Some(S(15)));
        assert_eq!(
            t.receive(S(4), &rep(7, 1), -60.0, 255, 0.0),
            Heard::Paired {
                rf_id: 7,
                reconnected: false
            }
        );
        assert!(t.expire(S(18)).is_empty());
        assert_eq!(t.expire(S(19)), vec![7]);
        assert!(!t.link(7).unwrap().connected);
        assert_eq!(
            t.receive(S(30), &rep(7, 6), -61.0, 250, 0.0),
            Heard::Paired {
                rf_id: 7,
                reconnected: true
            }
        );
        // Counters 2-5 were lost: 4 of 6.
        let per = t.link(7).unwrap().per().unwrap();
        assert!((per - 4.0 / 6.0).abs() < 1e-9, "{per}");
        let f = t.link(7).unwrap().figures();
        assert_eq!(f.last, Some((0.0, -61.0, 250)));
        assert_eq!(f.worst.unwrap().1, -61.0);
        assert_eq!(f.average.unwrap().1, -60.5);
    }

    #[test]
    fn unknown_rf_ids_are_discovered_and_replays_dropped() {
        let mut t = LinkTable::default();
        t.set_paired(&[(7, S(5))]);
        assert_eq!(
            t.receive(S(1), &rep(0xdead, 1), -70.0, 200, 0.0),
            Heard::NewlyDiscovered(0xdead)
        );
        assert_eq!(
            t.receive(S(2), &rep(0xdead, 2), -70.0, 200, 0.0),
            Heard::Discovered(0xdead)
        );
        assert!(t.link(0xdead).is_none());
        t.receive(S(3), &rep(7, 10), -60.0, 255, 0.0);
        assert_eq!(
            t.receive(S(4), &rep(7, 10), -60.0, 255, 0.0),
            Heard::Replay(7)
        );
        assert_eq!(
            t.receive(S(4), &rep(7, 3), -60.0, 255, 0.0),
            Heard::Replay(7)
        );
        // Pairing it moves it out of the discovered list.
        t.set_paired(&[(7, S(5)), (0xdead, S(5))]);
        assert!(t.discovered.is_empty());
        assert!(!t.link(0xdead).unwrap().connected);
    }

    /// The whole chain on a paused clock: devices report over the medium,
    /// the coordinator connects them with real RSSI/LQI in 31146-31161, a
    /// jammer makes them Not connected after 3 periods (no-value markers),
    /// and they come back once it stops; 802.15.4 off silences them.
    #[tokio::test]
    async fn reports_cross_the_medium_and_a_jammer_cuts_them() {
        use crate::proto::modbus::{Request, Response};
        use fieldtwin_emulator::radio::{Jammer, Pattern};

        let devs = (0..3u64)
            .map(|i| powertag(&format!("pt{i}"), 100 + i as u8, 0x2A3B_0001 + i, i))
            .collect();
        let rig = Rig::new(3, 15, devs, Vec::new());
        let Rig {
            clock,
            air,
            devs,
            c,
            ..
        } = &rig;
        let rf: Vec<u64> = devs.iter().filter_map(|d| d.rf_id).collect();
        c.configure(&rf, &[], true, clock.now(), true);
        let read = |d: &FieldDevice, reg: u16, n: u16| match d.handle(
            clock.now().as_secs_f64(),
            &Request::ReadHolding {
                addr: reg - 1,
                count: n,
            },
        ) {
            Some(Ok(Response::Registers { values, .. })) => values,
            other => panic!("{other:?}"),
        };
        let jump = |s| rig.jump(s);
        jump(6).await;
        for d in devs {
            let l = c
                .table
                .lock()
                .unwrap()
                .link(d.rf_id.unwrap())
                .unwrap()
                .clone();
            assert!(l.connected && l.reports >= 1, "{l:?}");
            assert!(d.in_contact());
            assert_eq!(read(d, 31146, 1), vec![1]);
            let w = read(d, 31154, 2);
            let rssi = f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1]));
            assert!((-80.0..-40.0).contains(&rssi), "{rssi}");
            assert!(read(d, 31156, 1)[0] > 200);
        }
        // The Panel Server acknowledges each report; the next report
        // carries the device's own figures (31147-31151): no report
        // unacknowledged, and the acknowledgement's RSSI, 3 dB above the
        // report's (PS +3 dBm, device 0 dBm, the same path both ways).
        let acks_before = air.medium().stats().frames;
        jump(6).await;
        assert!(
            air.medium().stats().frames >= acks_before + 6,
            "reports and acks"
        );
        for d in devs {
            let l = c
                .table
                .lock()
                .unwrap()
                .link(d.rf_id.unwrap())
                .unwrap()
                .clone();
            let up = l.uplink().unwrap().1;
            let w = read(d, 31149, 2);
            let down = f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1]));
            assert!((f64::from(down) - up - 3.0).abs() < 0.6, "{down} vs {up}");
            assert_eq!(read(d, 31147, 2), vec![0, 0], "device PER 0");
        }
        air.medium().start_jammer(
            Jammer::new(
                "j",
                Position::new(1.0, 0.0, 1.0),
                20.0,
                &[],
                Pattern::Constant,
                clock.now(),
            )
            .unwrap(),
        );
        jump(20).await;
        assert!(air.medium().stats().channel_access_failures > 0);
        for d in devs {
            assert!(!d.in_contact(), "{} still connected", d.id);
            assert_eq!(read(d, 31146, 1), vec![0]);
            assert_eq!(read(d, 3060, 2), vec![0xFFC0, 0]);
        }
        air.medium().stop_jammer("j");
        jump(6).await;
        assert!(devs.iter().all(|d| d.in_contact()));
        assert_eq!(read(&devs[0], 31146, 1), vec![1]);
        // 802.15.4 off: Not connected at once, whatever the air carries.
        c.configure(&rf, &[], false, clock.now(), false);
        assert!(devs.iter().all(|d| !d.in_contact()));
        jump(6).await;
        assert!(devs.iter().all(|d| !d.in_contact()));
        // A year later: cheap, and still reporting (counters grew).
        c.configure(&rf, &[], true, clock.now(), false);
        jump(365 * 86_400).await;
        let l = c.table.lock().unwrap().link(rf[0]).unwrap().clone();
        assert!(l.connected && l.counter.unwrap() > 6_000_000, "{l:?}");
    }

    /// A listening radio that records what it hears: (end of the frame,
    /// PSDU).
    #[derive(Default)]
    struct Probe(Mutex<Vec<(Duration, Vec<u8>)>>);

    impl Node for Probe {
        fn wake(&self, _: Duration) -> Act {
            Act::default()
        }
        fn receive(&self, d: &Delivery) -> Act {
            self.0.lock().unwrap().push((d.at, d.psdu.to_vec()));
            Act::default()
        }
    }

    /// IEEE 802.15.4-2006 acknowledgements: the Panel Server's goes out
    /// 192 µs (aTurnaroundTime) after the report's last symbol, without
    /// CSMA; a device whose report is not acknowledged counts it missing
    /// exactly 864 µs (macAckWaitDuration) after its report ended.
    #[tokio::test]
    async fn acknowledgements_follow_the_report_by_192_us_and_are_missed_after_864_us() {
        use fieldtwin_emulator::radio::phy::airtime;

        let rig = Rig::new(
            11,
            15,
            vec![powertag("pt0", 100, 0x2A3B_0001, 0)],
            Vec::new(),
        );
        let Rig { clock, air, c, .. } = &rig;
        let probe = rig.probe(15);
        let rf = [0x2A3B_0001];
        c.configure(&rf, &[], true, clock.now(), true);
        clock.advance(Duration::from_secs(6));
        air.process(clock.now()).await;
        let heard = std::mem::take(&mut *probe.0.lock().unwrap());
        let report = heard
            .iter()
            .find(|(_, p)| report::Report::parse(p).is_ok())
            .unwrap_or_else(|| panic!("no report heard: {heard:?}"));
        let ack = heard
            .iter()
            .find(|(_, p)| p.len() == 5)
            .unwrap_or_else(|| panic!("no acknowledgement heard: {heard:?}"));
        assert_eq!(ack.1, ack_psdu(report.1[2]), "the report's sequence number");
        // The ack's start (its end minus its airtime) is 192 µs after the
        // report's end.
        assert_eq!(ack.0 - airtime(5) - report.0, Duration::from_micros(192));
        let r = &c.reporters[0];
        {
            let a = r.lock_acks();
            assert_eq!((a.span, a.window & 1), (1, 1), "acknowledged");
            assert!(a.waiting.is_none() && a.last.is_some());
        }
        assert!(!air.medium().is_listening(r.radio), "receiver off again");

        // The Panel Server stops listening: the next report goes
        // unacknowledged. Step to the instant it leaves the air.
        c.configure(&rf, &[], false, clock.now(), false);
        let mut t = report.0 + Duration::from_millis(4800);
        let deadline = loop {
            t += Duration::from_micros(50);
            air.process(t).await;
            if let Some(d) = r.lock_acks().deadline {
                break d;
            }
            assert!(t < report.0 + Duration::from_secs(6), "no second report");
        };
        let heard = std::mem::take(&mut *probe.0.lock().unwrap());
        let end = heard
            .iter()
            .find(|(_, p)| report::Report::parse(p).is_ok())
            .map(|(at, _)| *at)
            .unwrap_or_else(|| panic!("{heard:?}"));
        assert_eq!(deadline, end + Duration::from_micros(864));
        assert!(air.medium().is_listening(r.radio));
        air.process(deadline - Duration::from_micros(1)).await;
        assert!(r.lock_acks().waiting.is_some(), "still waiting at 863 µs");
        air.process(deadline).await;
        let a = r.lock_acks();
        assert!(a.waiting.is_none());
        assert_eq!((a.span, a.window & 0b11), (2, 0b10), "counted missing");
        drop(a);
        assert!(!air.medium().is_listening(r.radio));
        assert!(heard.iter().all(|(_, p)| p.len() != 5), "no ack: {heard:?}");
    }

    /// Removing a device puts a Disassociation Notification on the air,
    /// announced by the frame-pending bit of the acknowledgement of its
    /// next report; a device out of range never hears it and keeps
    /// reporting (ignored as unpaired), and leaves once it hears it.
    #[tokio::test]
    async fn a_removed_device_leaves_only_when_it_hears_the_leave() {
        use fieldtwin_emulator::radio::phy::airtime;

        let rf = 0x2A3B_0005u64;
        let rig = Rig::new(12, 16, vec![powertag("pt0", 100, rf, 0)], Vec::new());
        let Rig {
            clock,
            air,
            devs,
            events,
            c,
        } = &rig;
        let mut ev = events.subscribe();
        let probe = rig.probe(16);
        let jump = |s| rig.jump(s);
        c.configure(&[rf], &[], true, clock.now(), true);
        jump(6).await;
        assert!(devs[0].in_contact());
        let r = c.reporters[0].clone();
        let home = air.medium().position(r.radio).unwrap();
        // Out of range, then removed: the leave waits for a report.
        air.medium()
            .set_position(r.radio, Position::new(5000.0, 0.0, 0.0))
            .unwrap();
        c.configure(&[], &[], true, clock.now(), false);
        assert_eq!(c.leaving(), vec![rf]);
        let counter = r.counter.load(Ordering::Relaxed);
        probe.0.lock().unwrap().clear();
        jump(12).await;
        assert!(r.joined(), "it never heard the leave: still in the network");
        assert!(
            r.counter.load(Ordering::Relaxed) >= counter + 2,
            "reporting"
        );
        assert_eq!(c.leaving(), vec![rf]);
        assert!(
            probe.0.lock().unwrap().is_empty(),
            "nothing on the air here"
        );
        assert!(!devs[0].in_contact());
        // Back in range: its report is heard from an unpaired device
        // (discovered), the acknowledgement announces a frame, and the
        // leave follows it; the device acknowledges it and leaves.
        air.medium().set_position(r.radio, home).unwrap();
        jump(6).await;
        let heard = std::mem::take(&mut *probe.0.lock().unwrap());
        let t = c.table.lock().unwrap().clone();
        assert!(t.discovered.iter().any(|d| d.rf_id == rf), "{t:?}");
        assert!(t.link(rf).is_none());
        let ack = heard
            .iter()
            .find_map(|(at, p)| {
                FrameMac::parse(p)
                    .ok()
                    .filter(|m| m.frame_type == TYPE_ACK && m.frame_pending)
                    .map(|_| *at)
            })
            .unwrap_or_else(|| panic!("no acknowledgement with frame pending: {heard:?}"));
        let (leave_end, leave) = heard
            .iter()
            .find_map(|(at, p)| join::Leave::parse(p).ok().map(|l| (*at, l)))
            .unwrap_or_else(|| panic!("no leave on the air: {heard:?}"));
        assert_eq!((leave.rf_id, leave.pan), (rf, c.pan));
        assert_eq!(leave.reason, join::REASON_COORDINATOR);
        let leave_len = heard
            .iter()
            .find(|(at, _)| *at == leave_end)
            .unwrap()
            .1
            .len();
        let leave_start = leave_end - airtime(leave_len);
        assert!(leave_start >= ack, "after the acknowledgement");
        assert!(leave_end <= ack + FRAME_WAIT, "within the device's wait");
        // The device's acknowledgement of the leave, 192 µs after it.
        assert!(
            heard
                .iter()
                .any(|(at, p)| p == &ack_psdu(leave.seq)
                    && *at == leave_end + TURNAROUND + airtime(5)),
            "{heard:?}"
        );
        assert!(!r.joined(), "it left");
        assert!(c.leaving().is_empty());
        assert!(
            air.medium().is_listening(r.radio),
            "listening for an accept"
        );
        // Now it asks to join: still discovered, never connected.
        jump(6).await;
        let heard = std::mem::take(&mut *probe.0.lock().unwrap());
        assert!(
            heard.iter().any(|(_, p)| join::Request::parse(p).is_ok()),
            "{heard:?}"
        );
        assert!(!devs[0].in_contact());
        let mut msgs = Vec::new();
        while let Ok(e) = ev.try_recv() {
            msgs.push(format!("{e:?}"));
        }
        assert!(
            msgs.iter().any(|m| m.contains("left the network")),
            "{msgs:?}"
        );
    }

    /// Commissioning over the medium: a new 8-character device asking to
    /// join is discovered only, and joins once paired; a Protect Plus
    /// device's join requests are ignored without its install code,
    /// refused with a wrong one, and accepted over the air with its own:
    /// then it reports and is connected.
    #[tokio::test]
    async fn new_devices_join_over_the_medium() {
        let (pt, pp) = (0x2A3B_0009u64, 0x8A3B_0000_0000_C0DEu64);
        let devs = vec![powertag("d0", 100, pt, 0), powertag("d1", 101, pp, 1)];
        let own = InstallCode::derived(9, "d1");
        let commissioning = vec![(InstallCode::derived(9, "d0"), false), (own, false)];
        let rig = Rig::new(5, 20, devs, commissioning);
        let Rig { clock, devs, c, .. } = &rig;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        c.set_join_sink(Some(tx));
        let jump = |s| rig.jump(s);
        c.configure(&[], &[], true, clock.now(), true);
        jump(12).await;
        {
            let t = c.table.lock().unwrap();
            assert_eq!(t.discovered.len(), 1, "{t:?}");
            assert_eq!(t.discovered[0].rf_id, pt);
            assert_eq!(t.ignored, vec![pp]);
            assert!(t.links.is_empty());
        }
        // A wrong code: refused.
        let wrong = InstallCode::derived(9, "other");
        c.configure(&[], &[(pp, wrong)], true, clock.now(), false);
        jump(12).await;
        assert_eq!(c.table.lock().unwrap().refused[0].rf_id, pp);
        assert!(rx.try_recv().is_err());
        // The 8-character one paired, the right code for the other.
        c.configure(&[pt], &[(pp, own)], true, clock.now(), false);
        jump(12).await;
        assert_eq!(rx.try_recv().ok(), Some(pp), "the join goes to be paired");
        c.configure(&[pt, pp], &[(pp, own)], true, clock.now(), false);
        jump(12).await;
        for (rf, d) in [(pt, &devs[0]), (pp, &devs[1])] {
            let l = c.table.lock().unwrap().link(rf).unwrap().clone();
            assert!(l.connected && l.reports >= 1, "{rf:016X}: {l:?}");
            assert!(d.in_contact());
        }
        // Removed: it asks to join again (discovered, not connected).
        c.configure(&[pp], &[(pp, own)], true, clock.now(), false);
        jump(12).await;
        assert!(!devs[0].in_contact());
        assert!(
            c.table
                .lock()
                .unwrap()
                .discovered
                .iter()
                .any(|d| d.rf_id == pt)
        );
        // Added back: it joins again and reports.
        c.configure(&[pp, pt], &[(pp, own)], true, clock.now(), false);
        jump(12).await;
        let l = c.table.lock().unwrap().link(pt).unwrap().clone();
        assert!(l.connected, "{l:?}");
    }

    /// Protect Plus off: a 16-character RF-ID is discovered like an
    /// 8-character one; on (the default), ignored.
    #[test]
    fn protect_plus_off_discovers_sixteen_character_rf_ids() {
        let pp = 0x8A3B_0000_0000_C0DE;
        let mut t = LinkTable::default();
        assert_eq!(
            t.receive(S(1), &rep(pp, 1), -60.0, 255, 0.0),
            Heard::Ignored(pp)
        );
        t.protect_plus_off = true;
        assert_eq!(
            t.receive(S(2), &rep(pp, 2), -60.0, 255, 0.0),
            Heard::NewlyDiscovered(pp)
        );
    }

    /// Over the medium: with Protect Plus off, a new Protect Plus device
    /// asking to join is discovered, and once added (no install code) it
    /// joins and reports.
    #[tokio::test]
    async fn protect_plus_off_lets_a_sixteen_character_device_join_without_its_code() {
        let pp = 0x8A3B_0000_0000_C0DEu64;
        let rig = Rig::new(
            7,
            21,
            vec![powertag("heattag", 100, pp, 0)],
            vec![(InstallCode::derived(3, "heattag"), false)],
        );
        let Rig { clock, devs, c, .. } = &rig;
        let jump = |s| rig.jump(s);
        c.configure(&[], &[], true, clock.now(), true);
        jump(6).await;
        assert_eq!(c.table.lock().unwrap().ignored, vec![pp], "on: ignored");
        c.set_protect_plus(false);
        jump(6).await;
        {
            let t = c.table.lock().unwrap();
            assert!(t.discovered.iter().any(|d| d.rf_id == pp), "{t:?}");
            assert!(t.ignored.is_empty());
        }
        c.configure(&[pp], &[], true, clock.now(), false);
        jump(6).await;
        jump(6).await;
        let l = c.table.lock().unwrap().link(pp).unwrap().clone();
        assert!(l.connected && l.reports >= 1, "{l:?}");
        assert!(devs[0].in_contact());
    }

    #[test]
    fn a_jump_defers_timeouts_to_the_catch_up_horizon() {
        let mut t = LinkTable::default();
        t.set_paired(&[(7, S(5))]);
        t.presume(S(0));
        t.defer(S(1000));
        assert!(t.expire(S(1010)).is_empty());
        assert_eq!(t.expire(S(1015)), vec![7]);
        assert_eq!(t.silence(), Vec::<u64>::new());
    }
}
