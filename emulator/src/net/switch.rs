//! In-process L2 switch and the site's Ethernet segments (DESIGN.md
//! "Networking"; Panel Server network segmentation, DOCA0211).
//!
//! Contract:
//! - A [`Segment`] is one learning switch: it learns source MACs per port,
//!   forwards known unicast to one port, floods broadcast, multicast and
//!   unknown unicast to every other port, and drops a frame for a port whose
//!   queue ([`PORT_QUEUE`] frames) is full, as a real switch does. IPv6
//!   multicast (33:33:..) is not flooded to devices (they speak IPv4 only).
//! - Ports: every device NIC, and the TAP for segments bridged to it.
//!   Device-to-device frames never leave the process.
//! - [`Network::from_site`] builds the segments of a site. A Panel Server in
//!   *switched* topology bridges its ETH1 segment with the segment its ETH2
//!   is wired to (the segment of its Modbus TCP downstream devices): its two
//!   ports are one switch. In *separated* topology no frame crosses between
//!   them.
//! - Every port has a [`fault::Shaper`] per direction; faults are set per
//!   device (all its ports) or per segment (all ports of the segment).
//! - With a capture directory, each segment writes `<segment>.pcap`.
//! - Every switch also keeps its last [`CAPTURE_FRAMES`] forwarded frames in
//!   memory ([`Segment::recent_frames`]), the buffer replay attacks draw on.
//! - A device port is an [`Inbox`]: frames wait there (at most
//!   [`PORT_QUEUE`]) for the device's stack. Outside a [`batch`] the stack's
//!   reactor is woken; inside one (the TAP reader's: every frame one read
//!   wake-up got), each inbox that got frames is handed to its stack's
//!   [`Runner`] once when the batch ends, on the reader's own task: a
//!   request from the host side reaches its socket without a hand-off to
//!   another task. Frames sent while a batch ends go the usual way, so a
//!   batch never recurses.
//! - Frame buffers: [`frame_from`] and [`frame_zeroed`] take MTU-sized
//!   buffers from a small per-thread pool and [`recycle`] gives them back
//!   (the TAP and the stacks recycle the frames they consume), so the
//!   request path allocates no frame. A port without a fault takes neither
//!   its shaper's lock nor the clock.
//! - Per forwarded frame the switch takes one lock for its MAC table and
//!   replay ring together ([`Table`]; the MAC table hashes with a keyed
//!   multiply, not SipHash) and reads its port list once per port looked
//!   up; a port is cloned out of the list only to deliver to it (or to
//!   shape a faulty one), never while a lock is held across a delivery.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Instant;

use tokio::sync::{Notify, mpsc};

use super::fault::{FaultError, LinkFault, Shaper, Verdict};
use super::nat::{self, CarrierLink, NatConfig};
use super::pcap::PcapWriter;
use super::smol::SmolStack;
use crate::site::{Bridge, Site, Subnet, Topology};

/// Frames a port queues before the switch drops.
pub const PORT_QUEUE: usize = 512;
/// Most recent frames a segment keeps in memory for replays.
pub const CAPTURE_FRAMES: usize = 2048;

type Mac = [u8; 6];

/// What is plugged into a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortKind {
    Device {
        device: String,
        iface: String,
    },
    Tap,
    /// The emulated router between the TAP and routed segments
    /// ([`super::router`]).
    Router,
    /// A carrier NAT between a cellular segment and this one
    /// ([`super::nat`]).
    CarrierNat,
}

/// A synchronous frame sink: returns false when the frame was dropped.
pub type DirectSink = Arc<dyn Fn(Vec<u8>) -> bool + Send + Sync>;

enum Sink {
    Queue(mpsc::Sender<Vec<u8>>),
    Direct(DirectSink),
    Inbox(Arc<Inbox>),
}

impl Sink {
    fn offer(&self, frame: Vec<u8>) -> bool {
        match self {
            Sink::Queue(tx) => tx.try_send(frame).is_ok(),
            Sink::Direct(f) => f(frame),
            Sink::Inbox(inbox) => inbox.offer(frame),
        }
    }
}

/// Buffers a frame pool hands out hold this much (an Ethernet frame of
/// MTU 1500 without FCS is 1514 bytes).
pub const FRAME_CAPACITY: usize = 1536;
/// Buffers kept per thread.
const POOL_FRAMES: usize = 256;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// The inboxes that got frames during this thread's [`batch`].
    static BATCH: RefCell<Option<Vec<Arc<Inbox>>>> = const { RefCell::new(None) };
}

fn pooled(len: usize) -> Vec<u8> {
    if len > FRAME_CAPACITY {
        return Vec::with_capacity(len);
    }
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(FRAME_CAPACITY))
}

/// A frame holding a copy of `data`, in a pooled buffer.
pub fn frame_from(data: &[u8]) -> Vec<u8> {
    let mut v = pooled(data.len());
    v.extend_from_slice(data);
    v
}

/// A frame of `len` zero bytes, in a pooled buffer.
pub fn frame_zeroed(len: usize) -> Vec<u8> {
    let mut v = pooled(len);
    v.resize(len, 0);
    v
}

/// Gives a consumed frame's buffer back to this thread's pool (buffers of
/// another size are freed).
pub fn recycle(mut frame: Vec<u8>) {
    if frame.capacity() != FRAME_CAPACITY {
        return;
    }
    frame.clear();
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_FRAMES {
            p.push(frame);
        }
    });
}

/// What an [`Inbox`] is handed to when a [`batch`] ends: the device stack
/// processes the frames waiting in its inbox (and sends its answers) on
/// the caller's task.
pub trait Runner: Send + Sync {
    fn run(&self);
}

/// A device port's queue of frames from the switch (see the module
/// contract).
pub struct Inbox {
    frames: Mutex<VecDeque<Vec<u8>>>,
    wake: Notify,
    /// Already on the current batch's list.
    batched: AtomicBool,
    runner: OnceLock<Weak<dyn Runner>>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inbox")
    }
}

impl Default for Inbox {
    fn default() -> Self {
        Self {
            frames: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            batched: AtomicBool::new(false),
            runner: OnceLock::new(),
        }
    }
}

impl Inbox {
    /// Queues a frame; false when the queue is full (the frame is dropped).
    fn offer(self: &Arc<Self>, frame: Vec<u8>) -> bool {
        {
            let mut q = self.frames.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= PORT_QUEUE {
                return false;
            }
            q.push_back(frame);
        }
        let batched = BATCH.with(|b| match b.borrow_mut().as_mut() {
            Some(list) => {
                if !self.batched.swap(true, Ordering::AcqRel) {
                    list.push(self.clone());
                }
                true
            }
            None => false,
        });
        if !batched {
            self.wake.notify_one();
        }
        true
    }

    /// Moves every waiting frame to the end of `to`.
    pub fn drain_into(&self, to: &mut VecDeque<Vec<u8>>) {
        let mut q = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        if to.is_empty() {
            std::mem::swap(&mut *q, to);
        } else {
            to.extend(q.drain(..));
        }
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.frames.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes the consumer (the stack's reactor).
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Resolves at the next [`Inbox::notify`] (or at once if one came since
    /// the last wait).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// Who processes the inbox inline at the end of a batch (set once).
    pub fn set_runner(&self, runner: Weak<dyn Runner>) {
        let _ = self.runner.set(runner);
    }
}

/// Runs `f` (which feeds frames into switches) as one batch: device
/// inboxes that got frames are run once each when `f` returns, on this
/// task, rather than waking their reactors frame by frame. Nested calls
/// join the outer batch.
pub fn batch<R>(f: impl FnOnce() -> R) -> R {
    let outer = BATCH.with(|b| {
        let mut b = b.borrow_mut();
        if b.is_some() {
            true
        } else {
            *b = Some(Vec::new());
            false
        }
    });
    if outer {
        return f();
    }
    // Ends the batch even if `f` unwinds (then the reactors are woken).
    struct End;
    impl Drop for End {
        fn drop(&mut self) {
            let list = BATCH.with(|b| b.borrow_mut().take()).unwrap_or_default();
            for inbox in list {
                inbox.batched.store(false, Ordering::Release);
                match inbox.runner.get().and_then(Weak::upgrade) {
                    Some(r) if !std::thread::panicking() => r.run(),
                    _ => inbox.notify(),
                }
            }
        }
    }
    let _end = End;
    f()
}

struct Port {
    kind: PortKind,
    tx: Arc<Sink>,
    /// A fault is set (otherwise the shapers are skipped).
    faulty: AtomicBool,
    /// Frames from the port into the switch.
    ingress: Mutex<Shaper>,
    /// Frames from the switch to the port.
    egress: Mutex<Shaper>,
}

impl Port {
    fn shape(&self, shaper: &Mutex<Shaper>, len: usize) -> Verdict {
        if !self.faulty.load(Ordering::Acquire) {
            return Verdict::Pass;
        }
        shaper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .offer(len, Instant::now())
    }
}

/// A MAC address as the key of the MAC table.
fn mac_key(mac: &[u8]) -> u64 {
    mac.iter().fold(0, |k, b| (k << 8) | u64::from(*b))
}

/// Builds [`MacHasher`]s with one random key per switch.
#[derive(Clone, Copy)]
struct MacHash {
    key: u64,
}

impl MacHash {
    fn new() -> Self {
        use std::hash::BuildHasher;
        Self {
            key: std::collections::hash_map::RandomState::new().hash_one(0u64) | 1,
        }
    }
}

impl std::hash::BuildHasher for MacHash {
    type Hasher = MacHasher;
    fn build_hasher(&self) -> MacHasher {
        MacHasher {
            key: self.key,
            hash: 0,
        }
    }
}

/// Hashes a MAC table key (a `u64`): the key xored with the switch's
/// random key, multiplied out to 128 bits and folded.
struct MacHasher {
    key: u64,
    hash: u64,
}

impl std::hash::Hasher for MacHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b) ^ self.hash.rotate_left(8));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let m = u128::from(n ^ self.key) * 0x9E37_79B9_7F4A_7C15_u128;
        self.hash = (m as u64) ^ ((m >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// What forwarding a frame updates, under one lock.
struct Table {
    /// Learnt source MACs ([`mac_key`]) and their ports.
    macs: HashMap<u64, usize, MacHash>,
    /// The last [`CAPTURE_FRAMES`] frames forwarded (replay buffer).
    recent: VecDeque<Vec<u8>>,
}

/// One L2 segment (a learning switch).
pub struct Segment {
    name: String,
    bridge: Bridge,
    subnet_prefix: u8,
    ports: RwLock<Vec<Arc<Port>>>,
    table: Mutex<Table>,
    pcap: Option<Mutex<PcapWriter>>,
    drops: AtomicU64,
    frames: AtomicU64,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Segment({})", self.name)
    }
}

/// A port's way into its segment (held by whoever feeds the port).
#[derive(Clone, Debug)]
pub struct PortHandle {
    segment: Arc<Segment>,
    port: usize,
}

impl PortHandle {
    /// Offers a frame from the port to the switch.
    pub fn send(&self, frame: Vec<u8>) {
        self.segment.input(self.port, frame);
    }
}

fn is_ipv6_multicast(mac: &[u8]) -> bool {
    mac[0] == 0x33 && mac[1] == 0x33
}

impl Segment {
    fn new(name: String, bridge: Bridge, subnet_prefix: u8, pcap: Option<PcapWriter>) -> Self {
        Self {
            name,
            bridge,
            subnet_prefix,
            ports: RwLock::new(Vec::new()),
            table: Mutex::new(Table {
                macs: HashMap::with_hasher(MacHash::new()),
                recent: VecDeque::with_capacity(CAPTURE_FRAMES),
            }),
            pcap: pcap.map(Mutex::new),
            drops: AtomicU64::new(0),
            frames: AtomicU64::new(0),
        }
    }

    /// A segment with no capture (for tests of the backends).
    #[cfg(test)]
    pub(crate) fn new_for_test(name: &str, bridge: Bridge) -> Self {
        Self::new(name.to_string(), bridge, 24, None)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The most recent frames forwarded on this switch, oldest first (at
    /// most [`CAPTURE_FRAMES`]).
    pub fn recent_frames(&self) -> Vec<Vec<u8>> {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recent
            .iter()
            .cloned()
            .collect()
    }

    /// Frames dropped on full queues or faults so far.
    pub fn drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }

    /// Plugs a port in; returns its handle and the receiver of the frames the
    /// switch sends to it.
    pub fn attach(
        self: &Arc<Self>,
        kind: PortKind,
        seed: u64,
    ) -> (PortHandle, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel(PORT_QUEUE);
        (self.attach_sink(kind, seed, Sink::Queue(tx)), rx)
    }

    /// Plugs a device port in; returns its handle and its inbox (see the
    /// module contract).
    pub fn attach_inbox(self: &Arc<Self>, kind: PortKind, seed: u64) -> (PortHandle, Arc<Inbox>) {
        let inbox = Arc::new(Inbox::default());
        (
            self.attach_sink(kind, seed, Sink::Inbox(inbox.clone())),
            inbox,
        )
    }

    /// Plugs in a port whose frames are handed to `sink` at once (a TAP
    /// file descriptor written without blocking: a full device queue drops).
    pub fn attach_direct(
        self: &Arc<Self>,
        kind: PortKind,
        seed: u64,
        sink: DirectSink,
    ) -> PortHandle {
        self.attach_sink(kind, seed, Sink::Direct(sink))
    }

    fn attach_sink(self: &Arc<Self>, kind: PortKind, seed: u64, sink: Sink) -> PortHandle {
        let port = Arc::new(Port {
            kind,
            tx: Arc::new(sink),
            faulty: AtomicBool::new(false),
            ingress: Mutex::new(Shaper::new(seed)),
            egress: Mutex::new(Shaper::new(seed.rotate_left(17) ^ 0xe9e5)),
        });
        let mut ports = self.ports.write().unwrap_or_else(|e| e.into_inner());
        ports.push(port);
        PortHandle {
            segment: self.clone(),
            port: ports.len() - 1,
        }
    }

    fn input(self: &Arc<Self>, from: usize, frame: Vec<u8>) {
        if frame.len() < 14 {
            return;
        }
        // Only a faulty port is taken out of the list (to shape).
        let faulty = {
            let ports = self.ports.read().unwrap_or_else(|e| e.into_inner());
            match ports.get(from) {
                Some(p) if p.faulty.load(Ordering::Acquire) => Some(p.clone()),
                Some(_) => None,
                None => return,
            }
        };
        let verdict = match &faulty {
            Some(port) => port.shape(&port.ingress, frame.len()),
            None => Verdict::Pass,
        };
        match verdict {
            Verdict::Pass => self.forward(from, frame),
            Verdict::Drop => {
                self.drops.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::DeliverAt(at) => {
                let seg = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    seg.forward(from, frame);
                });
            }
        }
    }

    fn forward(&self, from: usize, frame: Vec<u8>) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &self.pcap {
            p.lock().unwrap_or_else(|e| e.into_inner()).write(&frame);
        }
        let dst: Mac = frame[0..6].try_into().expect("14 bytes checked");
        let src: Mac = frame[6..12].try_into().expect("14 bytes checked");
        let known = {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            let Table { macs, recent } = &mut *table;
            // Once full, the oldest frame's buffer is reused: no allocation
            // per frame on the forwarding path.
            let mut slot = if recent.len() == CAPTURE_FRAMES {
                recent.pop_front().unwrap_or_default()
            } else {
                Vec::with_capacity(frame.len())
            };
            slot.clear();
            slot.extend_from_slice(&frame);
            recent.push_back(slot);
            if src[0] & 1 == 0 {
                let learnt = macs.entry(mac_key(&src)).or_insert(from);
                *learnt = from;
            }
            if dst[0] & 1 == 0 {
                macs.get(&mac_key(&dst)).copied()
            } else {
                None
            }
        };
        // Targets are taken out of the lock: delivering may run a stack
        // inline, whose answers come back through this switch. Known
        // unicast (nearly every frame of a connection) takes no allocation.
        if let Some(to) = known {
            if to == from {
                return;
            }
            let port = self
                .ports
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(to)
                .cloned();
            if let Some(p) = port {
                self.deliver(&p, frame);
            }
            return;
        }
        let targets: Vec<Arc<Port>> = {
            let ports = self.ports.read().unwrap_or_else(|e| e.into_inner());
            let v6 = is_ipv6_multicast(&dst);
            ports
                .iter()
                .enumerate()
                .filter(|(i, p)| *i != from && !(v6 && p.kind != PortKind::Tap))
                .map(|(_, p)| p.clone())
                .collect()
        };
        if let Some((last, rest)) = targets.split_last() {
            for p in rest {
                // Exact-size copies: a flood to many ports may wait in
                // many queues.
                self.deliver(p, frame.as_slice().to_vec());
            }
            self.deliver(last, frame);
        }
    }

    fn deliver(&self, port: &Arc<Port>, frame: Vec<u8>) {
        match port.shape(&port.egress, frame.len()) {
            Verdict::Pass => {
                if !port.tx.offer(frame) {
                    self.drops.fetch_add(1, Ordering::Relaxed);
                }
            }
            Verdict::Drop => {
                self.drops.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::DeliverAt(at) => {
                let tx = port.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    let _ = tx.offer(frame);
                });
            }
        }
    }

    fn set_fault(&self, filter: impl Fn(&PortKind) -> bool, fault: LinkFault) -> usize {
        let ports = self.ports.read().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for p in ports.iter().filter(|p| filter(&p.kind)) {
            p.ingress.lock().unwrap_or_else(|e| e.into_inner()).fault = fault;
            p.egress.lock().unwrap_or_else(|e| e.into_inner()).fault = fault;
            p.faulty.store(!fault.is_clear(), Ordering::Release);
            n += 1;
        }
        n
    }
}

/// Errors of building a site's network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("cannot create capture file {path}: {source}")]
    Pcap {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "device {device} interface {iface} is on segment {segment:?}, which the site does not define"
    )]
    UnknownSegment {
        device: String,
        iface: String,
        segment: String,
    },
    #[error(
        "device {device}: the carrier of segment {segment:?} has no private address left (250 cellular devices at most per segment)"
    )]
    CarrierFull { device: String, segment: String },
}

/// The switch fabric of a site: its segments and device ports.
pub struct Network {
    /// Segment name -> the switch it belongs to (bridged segments share one).
    segments: BTreeMap<String, Arc<Segment>>,
    faults: Mutex<BTreeMap<String, LinkFault>>,
    /// Segment name -> the default gateway of its static devices (the
    /// emulated router's address there, when the lab is routed).
    gateways: Mutex<BTreeMap<String, Ipv4Addr>>,
    /// Segment name -> its subnet.
    subnets: BTreeMap<String, Subnet>,
    /// Addresses the site gives out (devices, host side, gateways): the
    /// carrier pools avoid them.
    used: HashSet<Ipv4Addr>,
    /// Where captures go, and their bound.
    pcap: Option<(std::path::PathBuf, u64)>,
    /// The carrier NATs, one per switch that has cellular devices.
    carriers: Mutex<Vec<Carrier>>,
}

/// A carrier NAT (see [`super::nat`]) and its cellular segment.
struct Carrier {
    /// The site switch its pool is on.
    outside: Arc<Segment>,
    /// The cellular segment the devices' `cell` interfaces are on.
    inside: Arc<Segment>,
    link: Arc<CarrierLink>,
    /// Cellular interfaces attached so far.
    devices: u8,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("segments", &self.segments.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Network {
    /// Builds the segments of `site`; with `pcap_dir`, one capture per
    /// switch, bounded to `pcap_max` bytes.
    pub fn from_site(
        site: &Site,
        pcap_dir: Option<&Path>,
        pcap_max: u64,
    ) -> Result<Self, NetworkError> {
        // Union-find of segments bridged by a switched Panel Server.
        let names: Vec<String> = site.segments.iter().map(|s| s.name.clone()).collect();
        let mut parent: Vec<usize> = (0..names.len()).collect();
        fn find(p: &mut [usize], i: usize) -> usize {
            let mut r = i;
            while p[r] != r {
                r = p[r];
            }
            p[i] = r;
            r
        }
        let idx = |n: &str| names.iter().position(|x| x == n);
        for dev in &site.devices {
            let Some(ps) = &dev.panel_server else {
                continue;
            };
            if ps.topology != Topology::Switched {
                continue;
            }
            // ETH2 is wired to the segment of its Modbus TCP downstream
            // devices (and to `eth2_segment` if one is named).
            let eth2 = ps
                .eth2_segment
                .iter()
                .cloned()
                .chain(
                    ps.modbus_tcp
                        .iter()
                        .filter_map(|d| site.device(&d.device).map(|d| d.segment.clone())),
                )
                .collect::<Vec<_>>();
            for seg2 in eth2 {
                if let (Some(a), Some(b)) = (idx(&dev.segment), idx(&seg2)) {
                    let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                    parent[rb] = ra;
                }
            }
        }
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..names.len() {
            let r = find(&mut parent, i);
            groups.entry(r).or_default().push(i);
        }
        let mut segments = BTreeMap::new();
        for members in groups.values() {
            let name = members
                .iter()
                .map(|&i| names[i].as_str())
                .collect::<Vec<_>>()
                .join("+");
            let bridge = if members
                .iter()
                .any(|&i| site.segments[i].bridge == Bridge::Tap)
            {
                Bridge::Tap
            } else {
                Bridge::Internal
            };
            let prefix = site.segments[members[0]].subnet.prefix;
            let pcap = match pcap_dir {
                Some(dir) => {
                    let path = dir.join(format!("{name}.pcap"));
                    Some(PcapWriter::create(&path, pcap_max).map_err(|source| {
                        NetworkError::Pcap {
                            path: path.display().to_string(),
                            source,
                        }
                    })?)
                }
                None => None,
            };
            let seg = Arc::new(Segment::new(name, bridge, prefix, pcap));
            for &i in members {
                segments.insert(names[i].clone(), seg.clone());
            }
        }
        let mut used: HashSet<Ipv4Addr> = HashSet::new();
        for d in &site.devices {
            used.insert(d.ip);
            if let Some(ps) = &d.panel_server {
                used.extend(ps.eth2_ip);
                used.extend(ps.wifi_ap(&d.segment).map(|(ip, _)| ip));
            }
        }
        used.insert(site.network.host_address);
        used.extend(site.network.router_address);
        used.extend(site.segments.iter().map(|s| s.gateway_address()));
        Ok(Self {
            segments,
            faults: Mutex::new(BTreeMap::new()),
            gateways: Mutex::new(BTreeMap::new()),
            subnets: site
                .segments
                .iter()
                .map(|s| (s.name.clone(), s.subnet))
                .collect(),
            used,
            pcap: pcap_dir.map(|d| (d.to_path_buf(), pcap_max)),
            carriers: Mutex::new(Vec::new()),
        })
    }

    /// Plugs the cellular interface `cell` of `device`, whose site segment
    /// is `segment`, into the carrier of that segment's switch (made at the
    /// first one: a cellular segment with its NAT, see [`super::nat`]) and
    /// returns its smoltcp stack (call inside a tokio runtime). The
    /// interface gets the next private address of 100.64.0.0/24 from .2 and
    /// the NAT as its default gateway.
    pub fn attach_cellular(
        &self,
        device: &str,
        segment: &str,
        seed: u64,
    ) -> Result<SmolStack, NetworkError> {
        let unknown = || NetworkError::UnknownSegment {
            device: device.to_string(),
            iface: "cell".to_string(),
            segment: segment.to_string(),
        };
        let seg = self.segments.get(segment).ok_or_else(unknown)?;
        let subnet = *self.subnets.get(segment).ok_or_else(unknown)?;
        let mut carriers = self.carriers.lock().unwrap_or_else(|e| e.into_inner());
        let i = match carriers.iter().position(|c| Arc::ptr_eq(&c.outside, seg)) {
            Some(i) => i,
            None => {
                let n = carriers.len();
                let name = format!("carrier-{}", seg.name());
                let pcap = match &self.pcap {
                    Some((dir, max)) => {
                        let path = dir.join(format!("{name}.pcap"));
                        Some(PcapWriter::create(&path, *max).map_err(|source| {
                            NetworkError::Pcap {
                                path: path.display().to_string(),
                                source,
                            }
                        })?)
                    }
                    None => None,
                };
                let inside = Arc::new(Segment::new(
                    name,
                    Bridge::Internal,
                    nat::INSIDE_PREFIX,
                    pcap,
                ));
                let gateway = self
                    .gateways
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(segment)
                    .copied();
                let link = CarrierLink::attach(
                    NatConfig {
                        mac: nat::nat_mac(n as u8 + 1),
                        outside: subnet,
                        gateway,
                        pool: nat::pool_for(&subnet, &self.used),
                        seed: seed ^ 0x0ca7_71e7,
                    },
                    &inside,
                    seg,
                );
                carriers.push(Carrier {
                    outside: seg.clone(),
                    inside,
                    link,
                    devices: 0,
                });
                n
            }
        };
        let carrier = &mut carriers[i];
        if carrier.devices >= 250 {
            return Err(NetworkError::CarrierFull {
                device: device.to_string(),
                segment: segment.to_string(),
            });
        }
        carrier.devices += 1;
        let [a, b, c, _] = nat::INSIDE_NETWORK.octets();
        let ip = Ipv4Addr::new(a, b, c, 1 + carrier.devices);
        let (port, rx) = carrier.inside.attach_inbox(
            PortKind::Device {
                device: device.to_string(),
                iface: "cell".to_string(),
            },
            seed,
        );
        let stack = SmolStack::spawn(
            ip,
            false,
            nat::INSIDE_PREFIX,
            super::smol::mac_from_seed(seed),
            seed,
            port,
            rx,
        );
        stack.set_default_gateway(nat::INSIDE_GATEWAY);
        Ok(stack)
    }

    /// The carrier NATs: (site segment's switch name, its pool, the NAT).
    pub fn carriers(&self) -> Vec<(String, Vec<Ipv4Addr>, Arc<CarrierLink>)> {
        self.carriers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|c| (c.outside.name().to_string(), c.link.pool(), c.link.clone()))
            .collect()
    }

    /// The switch that segment `name` belongs to.
    pub fn segment(&self, name: &str) -> Option<&Arc<Segment>> {
        self.segments.get(name)
    }

    /// Names of the site's segments.
    pub fn segment_names(&self) -> Vec<String> {
        self.segments.keys().cloned().collect()
    }

    /// The distinct switches (bridged segments share one).
    pub fn switches(&self) -> Vec<Arc<Segment>> {
        let mut v: Vec<Arc<Segment>> = Vec::new();
        for s in self.segments.values() {
            if !v.iter().any(|x| Arc::ptr_eq(x, s)) {
                v.push(s.clone());
            }
        }
        v
    }

    /// Static devices plugged into segment `name` from now on take
    /// `gateway` as their default route.
    pub fn set_gateway(&self, name: &str, gateway: Ipv4Addr) {
        self.gateways
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), gateway);
    }

    /// The switches bridged to the TAP.
    pub fn tap_switches(&self) -> Vec<Arc<Segment>> {
        self.switches()
            .into_iter()
            .filter(|s| s.bridge == Bridge::Tap)
            .collect()
    }

    /// Plugs interface `iface` (static address `ip`, or a DHCPv4 client with
    /// `dhcp`) of `device` into `segment` and returns its smoltcp stack (call
    /// inside a tokio runtime).
    #[allow(clippy::too_many_arguments)]
    pub fn attach_device(
        &self,
        device: &str,
        iface: &str,
        ip: Ipv4Addr,
        dhcp: bool,
        segment: &str,
        seed: u64,
    ) -> Result<SmolStack, NetworkError> {
        let seg = self
            .segments
            .get(segment)
            .ok_or_else(|| NetworkError::UnknownSegment {
                device: device.to_string(),
                iface: iface.to_string(),
                segment: segment.to_string(),
            })?;
        let (port, rx) = seg.attach_inbox(
            PortKind::Device {
                device: device.to_string(),
                iface: iface.to_string(),
            },
            seed,
        );
        let mac = super::smol::mac_from_seed(seed);
        let stack = SmolStack::spawn(ip, dhcp, seg.subnet_prefix, mac, seed, port, rx);
        let gateway = self
            .gateways
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(segment)
            .copied();
        if let Some(gw) = gateway.filter(|_| !dhcp) {
            stack.set_default_gateway(gw);
        }
        Ok(stack)
    }

    /// Sets (or, with the default fault, clears) the fault on every port of
    /// `target`: a device id, or `segment:NAME` for every port of a segment.
    pub fn set_fault(&self, target: &str, fault: LinkFault) -> Result<(), FaultError> {
        fault.validate()?;
        let n = if let Some(seg) = target.strip_prefix("segment:") {
            let s = self
                .segments
                .get(seg)
                .ok_or_else(|| FaultError::Unknown(target.to_string()))?;
            s.set_fault(|_| true, fault)
        } else {
            let cellular: Vec<Arc<Segment>> = self
                .carriers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|c| c.inside.clone())
                .collect();
            self.switches()
                .iter()
                .chain(cellular.iter())
                .map(|s| {
                    s.set_fault(
                        |k| matches!(k, PortKind::Device { device, .. } if device == target),
                        fault,
                    )
                })
                .sum()
        };
        if n == 0 {
            return Err(FaultError::Unknown(target.to_string()));
        }
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        if fault.is_clear() {
            faults.remove(target);
        } else {
            faults.insert(target.to_string(), fault);
        }
        Ok(())
    }

    /// Faults in force, by target.
    pub fn faults(&self) -> BTreeMap<String, LinkFault> {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: Mac, src: Mac) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f
    }

    const A: Mac = [2, 0, 0, 0, 0, 1];
    const B: Mac = [2, 0, 0, 0, 0, 2];
    const BCAST: Mac = [0xff; 6];

    #[tokio::test]
    async fn learns_floods_and_forwards() {
        let seg = Arc::new(Segment::new("lan".into(), Bridge::Tap, 24, None));
        let (pa, mut ra) = seg.attach(PortKind::Tap, 1);
        let (pb, mut rb) = seg.attach(
            PortKind::Device {
                device: "b".into(),
                iface: "eth1".into(),
            },
            2,
        );
        let (_pc, mut rc) = seg.attach(
            PortKind::Device {
                device: "c".into(),
                iface: "eth1".into(),
            },
            3,
        );
        // Broadcast from A floods to B and C, not back to A.
        pa.send(frame(BCAST, A));
        assert!(rb.try_recv().is_ok());
        assert!(rc.try_recv().is_ok());
        assert!(ra.try_recv().is_err());
        // B answers A: A is learnt, so only A gets it.
        pb.send(frame(A, B));
        assert!(ra.try_recv().is_ok());
        assert!(rc.try_recv().is_err());
        // IPv6 multicast from the TAP is not flooded to devices.
        pa.send(frame([0x33, 0x33, 0, 0, 0, 1], A));
        assert!(rb.try_recv().is_err() && rc.try_recv().is_err());
    }

    #[tokio::test]
    async fn learns_many_macs_and_follows_a_mac_that_moves() {
        let seg = Arc::new(Segment::new("lan".into(), Bridge::Tap, 24, None));
        let (pa, mut ra) = seg.attach(PortKind::Tap, 1);
        let dev = |n: &str| PortKind::Device {
            device: n.into(),
            iface: "eth1".into(),
        };
        let (pb, mut rb) = seg.attach(dev("b"), 2);
        let (pc, mut rc) = seg.attach(dev("c"), 3);
        // 1,000 stations behind B (as behind a bridge), learnt one by one.
        let station = |i: u32| {
            let b = i.to_be_bytes();
            [2, 0x55, b[0], b[1], b[2], b[3]]
        };
        for i in 0..1000 {
            pb.send(frame(BCAST, station(i)));
            assert!(ra.try_recv().is_ok() && rc.try_recv().is_ok());
        }
        for i in 0..1000 {
            pa.send(frame(station(i), A));
            assert!(rb.try_recv().is_ok(), "station {i} is behind b");
            assert!(rc.try_recv().is_err(), "station {i} is not flooded");
        }
        // Station 7 moves to C: frames to it follow.
        pc.send(frame(A, station(7)));
        assert!(ra.try_recv().is_ok());
        pa.send(frame(station(7), A));
        assert!(rc.try_recv().is_ok());
        assert!(rb.try_recv().is_err());
        // A frame back to the port it came from is dropped.
        pc.send(frame(station(7), station(8)));
        assert!(rc.try_recv().is_err() && rb.try_recv().is_err());
    }

    #[tokio::test]
    async fn keeps_the_most_recent_frames_for_replays() {
        let seg = Arc::new(Segment::new("lan".into(), Bridge::Tap, 24, None));
        let (pa, _ra) = seg.attach(PortKind::Tap, 1);
        let (_pb, _rb) = seg.attach(
            PortKind::Device {
                device: "b".into(),
                iface: "eth1".into(),
            },
            2,
        );
        for i in 0..CAPTURE_FRAMES + 10 {
            let mut f = frame(B, A);
            f[20..28].copy_from_slice(&(i as u64).to_be_bytes());
            pa.send(f);
        }
        let recent = seg.recent_frames();
        assert_eq!(recent.len(), CAPTURE_FRAMES);
        let n = |f: &Vec<u8>| u64::from_be_bytes(f[20..28].try_into().unwrap());
        assert_eq!(n(&recent[0]), 10, "oldest kept");
        assert_eq!(n(&recent[CAPTURE_FRAMES - 1]), CAPTURE_FRAMES as u64 + 9);
        assert!(recent.iter().all(|f| f.len() == 60));
    }

    #[tokio::test]
    async fn full_queue_drops() {
        let seg = Arc::new(Segment::new("lan".into(), Bridge::Tap, 24, None));
        let (pa, _ra) = seg.attach(PortKind::Tap, 1);
        let (_pb, _rb) = seg.attach(
            PortKind::Device {
                device: "b".into(),
                iface: "eth1".into(),
            },
            2,
        );
        for _ in 0..PORT_QUEUE + 10 {
            pa.send(frame(BCAST, A));
        }
        assert_eq!(seg.drops(), 10);
    }

    #[test]
    fn frame_buffers_come_back_to_the_pool() {
        let a = frame_from(&[1, 2, 3]);
        assert_eq!(a, [1, 2, 3]);
        assert_eq!(a.capacity(), FRAME_CAPACITY);
        let ptr = a.as_ptr();
        recycle(a);
        // The next frame of this thread reuses the buffer, cleared.
        let b = frame_zeroed(5);
        assert_eq!(b.as_ptr(), ptr);
        assert_eq!(b, [0; 5]);
        // Buffers of another size are not pooled.
        recycle(Vec::with_capacity(10));
        let c = frame_zeroed(60);
        assert_eq!(c.capacity(), FRAME_CAPACITY);
        assert_ne!(c.as_ptr(), ptr, "b is still in use");
        // A frame larger than a pooled buffer gets its own.
        let big = frame_zeroed(FRAME_CAPACITY + 1);
        assert_eq!(big.len(), FRAME_CAPACITY + 1);
        recycle(big);
        assert_eq!(frame_zeroed(1).capacity(), FRAME_CAPACITY);
    }

    /// Counts its runs and drains its inbox; optionally forwards one frame
    /// per run to `then`.
    struct Counting {
        inbox: Arc<Inbox>,
        runs: AtomicU64,
        frames: AtomicU64,
        then: Option<(PortHandle, Mac)>,
    }

    impl Runner for Counting {
        fn run(&self) {
            self.runs.fetch_add(1, Ordering::SeqCst);
            let mut q = VecDeque::new();
            self.inbox.drain_into(&mut q);
            self.frames.fetch_add(q.len() as u64, Ordering::SeqCst);
            if let Some((port, to)) = &self.then {
                port.send(frame(*to, B));
            }
        }
    }

    fn counting(inbox: Arc<Inbox>, then: Option<(PortHandle, Mac)>) -> Arc<Counting> {
        let c = Arc::new(Counting {
            inbox: inbox.clone(),
            runs: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            then,
        });
        let r: Arc<dyn Runner> = c.clone();
        inbox.set_runner(Arc::downgrade(&r));
        c
    }

    #[tokio::test]
    async fn a_batch_runs_each_inbox_once_when_it_ends_and_never_recurses() {
        const C: Mac = [2, 0, 0, 0, 0, 3];
        let seg = Arc::new(Segment::new("lan".into(), Bridge::Tap, 24, None));
        let (tap, _tap_rx) = seg.attach(PortKind::Tap, 1);
        let dev = |n: &str| PortKind::Device {
            device: n.into(),
            iface: "eth1".into(),
        };
        let (pb, ib) = seg.attach_inbox(dev("b"), 2);
        let (pc, ic) = seg.attach_inbox(dev("c"), 3);
        // The switch learns B and C.
        pb.send(frame(BCAST, B));
        pc.send(frame(BCAST, C));
        ib.drain_into(&mut VecDeque::new());
        ic.drain_into(&mut VecDeque::new());
        let rc = counting(ic.clone(), None);
        // B's runner sends a frame to C each time it runs.
        let rb = counting(ib.clone(), Some((pb.clone(), C)));

        // Outside a batch a frame waits for the reactor: no inline run.
        tap.send(frame(B, A));
        assert_eq!(rb.runs.load(Ordering::SeqCst), 0);
        assert_eq!(ib.len(), 1);

        batch(|| {
            for _ in 0..3 {
                tap.send(frame(B, A));
            }
            // Nothing runs before the batch ends.
            assert_eq!(rb.runs.load(Ordering::SeqCst), 0);
        });
        assert_eq!(rb.runs.load(Ordering::SeqCst), 1, "one run per batch");
        assert_eq!(
            rb.frames.load(Ordering::SeqCst),
            4,
            "the batch and the earlier frame"
        );
        assert!(ib.is_empty());
        // What B sent while the batch ended waits in C's inbox for C's
        // reactor: no run inside a run.
        assert_eq!(rc.runs.load(Ordering::SeqCst), 0);
        assert_eq!(ic.len(), 1);

        // A batch whose frames go to nobody's inbox runs nothing; nested
        // batches join the outer one.
        batch(|| batch(|| tap.send(frame(C, A))));
        assert_eq!(rc.runs.load(Ordering::SeqCst), 1);
        assert_eq!(rc.frames.load(Ordering::SeqCst), 2);
        assert_eq!(rb.runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_full_inbox_drops() {
        let seg = Arc::new(Segment::new("lan".into(), Bridge::Tap, 24, None));
        let (pa, _ra) = seg.attach(PortKind::Tap, 1);
        let (_pb, ib) = seg.attach_inbox(
            PortKind::Device {
                device: "b".into(),
                iface: "eth1".into(),
            },
            2,
        );
        batch(|| {
            for _ in 0..PORT_QUEUE + 10 {
                pa.send(frame(BCAST, A));
            }
        });
        // No runner: the reactor was woken instead, and the queue is bounded.
        assert_eq!(ib.len(), PORT_QUEUE);
        assert_eq!(seg.drops(), 10);
    }

    #[tokio::test]
    async fn cellular_interfaces_sit_behind_one_carrier_per_switch() {
        use crate::net::Stack;
        let site = Site::default_site();
        let net = Network::from_site(&site, None, 0).unwrap();
        let a = net.attach_cellular("dl1", "lan", 1).unwrap();
        let b = net.attach_cellular("dl2", "lan", 2).unwrap();
        assert_eq!(a.ipv4(), Ipv4Addr::new(100, 64, 0, 2));
        assert_eq!(b.ipv4(), Ipv4Addr::new(100, 64, 0, 3));
        let carriers = net.carriers();
        assert_eq!(carriers.len(), 1, "one carrier for the lan switch");
        let (seg, pool, _) = &carriers[0];
        assert_eq!(seg, "lan");
        // The 8 highest addresses below .200 that the site does not use.
        let want: Vec<Ipv4Addr> = (192..=199)
            .rev()
            .map(|n| Ipv4Addr::new(10, 77, 0, n))
            .collect();
        assert_eq!(pool, &want);
        assert!(net.attach_cellular("dl3", "nowhere", 3).is_err());
        // A link fault on a logger reaches its cell port.
        net.set_fault("dl2", LinkFault::default()).unwrap();
    }

    #[test]
    fn separated_keeps_segments_apart_and_switched_bridges_them() {
        let sep = Site::default_site();
        let net = Network::from_site(&sep, None, 0).unwrap();
        assert!(!Arc::ptr_eq(
            net.segment("lan").unwrap(),
            net.segment("ot").unwrap()
        ));
        let mut sw = sep.clone();
        let ps = sw.devices[0].panel_server.as_mut().unwrap();
        ps.topology = Topology::Switched;
        ps.eth2_ip = None;
        ps.eth2_segment = None;
        sw.validate().unwrap();
        let net = Network::from_site(&sw, None, 0).unwrap();
        assert!(Arc::ptr_eq(
            net.segment("lan").unwrap(),
            net.segment("ot").unwrap()
        ));
        assert_eq!(net.tap_switches().len(), 1);
    }
}
