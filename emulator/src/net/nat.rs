//! The carrier's NAT in TAP mode: what a cellular device (the Data Logger,
//! seed 004) crosses to reach a server (issue 12 item 4; docs/datalogger.md
//! "Carrier NAT", docs/lab.md).
//!
//! Contract:
//! - [`Nat`] is plain state: a frame, its side and `now` in, frames out, and
//!   [`Nat::poll`] for its timers (mapping timeouts, ARP retries) returning
//!   the next deadline; the I/O glue is [`CarrierLink`], a node with one MAC
//!   ([`nat_mac`]) on two switches: the carrier's *inside* segment, where
//!   the cellular interfaces of the loggers sit on private addresses of
//!   100.64.0.0/24 (RFC 6598 shared address space) with the NAT at
//!   [`INSIDE_GATEWAY`] as their default gateway, and the *outside*
//!   segment (the logger's site segment), where the NAT owns a pool of
//!   [`POOL_SIZE`] addresses and answers ARP for them.
//! - Forwarding is the router's (RFC 1812): TTL decremented (a packet
//!   that would reach 0 is dropped), MACs rewritten, and every checksum the
//!   rewrite touches (IPv4 header, TCP/UDP with their pseudo-header)
//!   updated incrementally (RFC 1624, [`super::router::checksum_update`]).
//!   A UDP datagram without checksum (0) keeps none.
//! - Translation (RFC 4787/5382 behaviour of a carrier-grade NAT): TCP and
//!   UDP only; a mapping is created by a TCP SYN (or any UDP datagram) from
//!   the inside and rewrites the source address and port outwards and the
//!   destination inwards, per 5-tuple (address- and port-dependent
//!   filtering). The inside port is kept when it is free on the chosen
//!   address, else a random port from 1024 up is taken; a SYN on the
//!   5-tuple of a closed mapping (FIN both ways, RST) replaces it. From the outside
//!   only packets of a mapping get in; everything else (a SYN, a scan, a
//!   ping to a pool address) is dropped without answer, as a CGNAT does.
//!   Fragments, other protocols and ICMP are dropped.
//! - Address per session (paired pooling, RFC 4787 REQ-2): all open
//!   connections of one inside address share one pool address. When it
//!   has none open (every one closed by FIN both ways or RST, or expired),
//!   its next connection starts a new session and draws a random pool
//!   address other than the one it had, so a server sees the source
//!   address change from one session to the next.
//! - Timeouts (wall time: they belong to the network, like real peers'
//!   TCP timers): TCP established [`TCP_ESTABLISHED`] (RFC 5382 minimum),
//!   TCP before establishment or after FIN both ways [`TCP_TRANSITORY`],
//!   after RST [`TCP_RESET`], UDP [`UDP_TIMEOUT`] (RFC 4787 REQ-5). Each
//!   packet of a mapping renews it.
//! - Next hop on the outside: the destination when it is on the outside
//!   subnet, else the segment's gateway (the emulated router in a routed
//!   lab); without one the packet is dropped. Unknown next hops are
//!   resolved by ARP (three requests a second apart, at most
//!   [`PENDING_MAX`] frames queued, dropped when unanswered).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::pending_arp::{Due, PendingArp, Queued};
use super::router::{arp_frame_as, be16, checksum_update, ip_at, ipv4_header};
use super::switch::{PortHandle, PortKind, Segment};
use crate::site::Subnet;

type Mac = [u8; 6];

/// Addresses in a carrier NAT's pool.
pub const POOL_SIZE: usize = 8;
/// The inside (cellular) network of every carrier: RFC 6598 space.
pub const INSIDE_NETWORK: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);
/// Prefix length of [`INSIDE_NETWORK`].
pub const INSIDE_PREFIX: u8 = 24;
/// The NAT's address on the inside: the cellular interfaces' gateway.
pub const INSIDE_GATEWAY: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
/// Idle timeout of an established TCP mapping (RFC 5382 REQ-5).
pub const TCP_ESTABLISHED: Duration = Duration::from_secs(7440);
/// Idle timeout of a TCP mapping being opened or closed (RFC 5382).
pub const TCP_TRANSITORY: Duration = Duration::from_secs(240);
/// Lifetime of a TCP mapping after a RST.
pub const TCP_RESET: Duration = Duration::from_secs(10);
/// Idle timeout of a UDP mapping (RFC 4787 REQ-5: at least 2 minutes).
pub const UDP_TIMEOUT: Duration = Duration::from_secs(300);
/// Frames queued per next hop while its ARP is unanswered.
pub const PENDING_MAX: usize = 8;
const ARP_TRIES: u8 = 3;
const ARP_RETRY: Duration = Duration::from_secs(1);

const ETH_ARP: u16 = 0x0806;
const ETH_IPV4: u16 = 0x0800;
const BROADCAST: Mac = [0xff; 6];
const TCP: u8 = 6;
const UDP: u8 = 17;
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// The MAC of carrier NAT number `n` of a site.
pub fn nat_mac(n: u8) -> Mac {
    [0x02, 0x63, 0x67, 0x6e, 0x00, n]
}

/// Which switch a frame comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The carrier's cellular segment (private addresses).
    Inside,
    /// The site segment the pool addresses are on.
    Outside,
}

/// A frame the NAT sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub side: Side,
    pub frame: Vec<u8>,
}

/// How a carrier NAT is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct NatConfig {
    pub mac: Mac,
    /// The outside segment's subnet.
    pub outside: Subnet,
    /// The outside segment's gateway (routed labs), for destinations off
    /// its subnet.
    pub gateway: Option<Ipv4Addr>,
    /// The pool (on `outside`).
    pub pool: Vec<Ipv4Addr>,
    /// Seed of the address and port draws.
    pub seed: u64,
}

/// One translation.
#[derive(Debug, Clone)]
struct Mapping {
    proto: u8,
    inside: (Ipv4Addr, u16),
    inside_mac: Mac,
    outside: (Ipv4Addr, u16),
    remote: (Ipv4Addr, u16),
    expires: Instant,
    established: bool,
    fin_in: bool,
    fin_out: bool,
    reset: bool,
}

impl Mapping {
    /// Still part of its inside host's session (not closing).
    fn open(&self) -> bool {
        !(self.reset || (self.fin_in && self.fin_out))
    }

    /// A packet with TCP `flags` (0 for other protocols) crossed from
    /// `side`: the connection's state follows, the timeout restarts.
    fn seen(&mut self, flags: u8, side: Side, now: Instant) {
        if self.proto == TCP && side == Side::Outside && flags & ACK != 0 {
            self.established = true;
        }
        if flags & RST != 0 {
            self.reset = true;
        }
        if flags & FIN != 0 {
            match side {
                Side::Inside => self.fin_in = true,
                Side::Outside => self.fin_out = true,
            }
        }
        self.expires = now + self.timeout();
    }

    fn timeout(&self) -> Duration {
        match self.proto {
            UDP => UDP_TIMEOUT,
            _ if self.reset => TCP_RESET,
            _ if self.established && self.open() => TCP_ESTABLISHED,
            _ => TCP_TRANSITORY,
        }
    }
}

/// (protocol, source address, source port, destination address,
/// destination port) as a packet carries them.
type Key = (u8, Ipv4Addr, u16, Ipv4Addr, u16);

/// A translation as the control API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MappingInfo {
    /// `tcp` or `udp`.
    pub protocol: String,
    pub inside: String,
    pub outside: String,
    pub remote: String,
}

/// A carrier NAT as the control API shows it (`carrier_nat` command).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CarrierStatus {
    /// The site switch its pool is on.
    pub segment: String,
    pub pool: Vec<Ipv4Addr>,
    /// Live translations, oldest first.
    pub mappings: Vec<MappingInfo>,
    /// Packets translated and dropped, sessions started (new pool
    /// address drawn) so far.
    pub translated: u64,
    pub dropped: u64,
    pub sessions: u64,
}

/// The NAT's state.
pub struct Nat {
    cfg: NatConfig,
    rng: SmallRng,
    maps: HashMap<u64, Mapping>,
    next_id: u64,
    /// Outbound 5-tuple (inside source) -> mapping.
    by_inside: HashMap<Key, u64>,
    /// Inbound 5-tuple (remote source, pool destination) -> mapping.
    by_outside: HashMap<Key, u64>,
    /// (protocol, pool address, port) in use.
    taken: HashSet<(u8, Ipv4Addr, u16)>,
    /// Inside address -> the pool address of its current or last session.
    session: HashMap<Ipv4Addr, Ipv4Addr>,
    /// Outside neighbours.
    arp: HashMap<Ipv4Addr, Mac>,
    /// Translated frames waiting for their next hop's MAC.
    pending: PendingArp<Ipv4Addr, Vec<u8>>,
    /// Packets translated, packets dropped, sessions started.
    pub translated: u64,
    pub dropped: u64,
    pub sessions: u64,
}

fn inside_subnet() -> Subnet {
    Subnet {
        network: INSIDE_NETWORK,
        prefix: INSIDE_PREFIX,
    }
}

/// Replaces the 16-bit word at `at` with `new`, updating the checksums at
/// `sums` (offsets into `f`; `None` for none).
fn set_word(f: &mut [u8], at: usize, new: u16, sums: &[Option<usize>]) {
    let old = be16(f, at);
    f[at..at + 2].copy_from_slice(&new.to_be_bytes());
    for s in sums.iter().flatten() {
        let sum = checksum_update(be16(f, *s), old, new);
        f[*s..*s + 2].copy_from_slice(&sum.to_be_bytes());
    }
}

impl Nat {
    pub fn new(cfg: NatConfig) -> Self {
        let rng = SmallRng::seed_from_u64(cfg.seed ^ 0xc6a7);
        Self {
            cfg,
            rng,
            maps: HashMap::new(),
            next_id: 0,
            by_inside: HashMap::new(),
            by_outside: HashMap::new(),
            taken: HashSet::new(),
            session: HashMap::new(),
            arp: HashMap::new(),
            pending: PendingArp::new(PENDING_MAX, ARP_TRIES, ARP_RETRY),
            translated: 0,
            dropped: 0,
            sessions: 0,
        }
    }

    /// The pool.
    pub fn pool(&self) -> &[Ipv4Addr] {
        &self.cfg.pool
    }

    /// Live translations, oldest first.
    pub fn mappings(&self) -> Vec<MappingInfo> {
        let mut ids: Vec<&u64> = self.maps.keys().collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|id| {
                let m = &self.maps[id];
                MappingInfo {
                    protocol: if m.proto == TCP { "tcp" } else { "udp" }.to_string(),
                    inside: format!("{}:{}", m.inside.0, m.inside.1),
                    outside: format!("{}:{}", m.outside.0, m.outside.1),
                    remote: format!("{}:{}", m.remote.0, m.remote.1),
                }
            })
            .collect()
    }

    /// Handles one frame from `side`; frames to send are pushed on `out`.
    pub fn input(&mut self, side: Side, frame: Vec<u8>, now: Instant, out: &mut Vec<Out>) {
        if frame.len() < 14 {
            return;
        }
        let dst_mac: Mac = frame[0..6].try_into().expect("14 bytes");
        match be16(&frame, 12) {
            ETH_ARP if dst_mac == BROADCAST || dst_mac == self.cfg.mac => {
                self.arp_in(side, &frame, now, out)
            }
            ETH_IPV4 if dst_mac == self.cfg.mac => match side {
                Side::Inside => self.outbound(frame, now, out),
                Side::Outside => self.inbound(frame, now, out),
            },
            _ => {}
        }
    }

    fn arp_in(&mut self, side: Side, f: &[u8], now: Instant, out: &mut Vec<Out>) {
        if f.len() < 42 || be16(f, 14) != 1 || be16(f, 16) != ETH_IPV4 || f[18] != 6 || f[19] != 4 {
            return;
        }
        let op = be16(f, 20);
        let sha: Mac = f[22..28].try_into().expect("42 bytes");
        let spa = ip_at(f, 28);
        let tpa = ip_at(f, 38);
        if sha[0] & 1 != 0 || spa.is_unspecified() || spa.is_broadcast() {
            return;
        }
        let ours = match side {
            Side::Inside => tpa == INSIDE_GATEWAY,
            Side::Outside => {
                if self.cfg.outside.contains(spa) && !self.cfg.pool.contains(&spa) {
                    self.arp.insert(spa, sha);
                    self.flush(spa, sha, out);
                }
                self.cfg.pool.contains(&tpa)
            }
        };
        let _ = now;
        if op == 1 && ours {
            out.push(Out {
                side,
                frame: arp_frame_as(self.cfg.mac, 2, sha, tpa, sha, spa),
            });
        }
    }

    /// (header length, total length, layer-4 offset in the frame) of a
    /// translatable packet: sound header, TCP or UDP, not a fragment,
    /// transport header complete.
    fn transport(f: &[u8]) -> Option<(usize, u8)> {
        let (ihl, total) = ipv4_header(f)?;
        let ip = &f[14..];
        if be16(ip, 6) & 0x3fff != 0 {
            return None;
        }
        let proto = ip[9];
        let need = match proto {
            TCP => 20,
            UDP => 8,
            _ => return None,
        };
        if total < ihl + need {
            return None;
        }
        Some((14 + ihl, proto))
    }

    fn outbound(&mut self, mut f: Vec<u8>, now: Instant, out: &mut Vec<Out>) {
        let Some((l4, proto)) = Self::transport(&f) else {
            self.dropped += 1;
            return;
        };
        let src_mac: Mac = f[6..12].try_into().expect("14 bytes");
        let src = ip_at(&f, 14 + 12);
        let dst = ip_at(&f, 14 + 16);
        let sport = be16(&f, l4);
        let dport = be16(&f, l4 + 2);
        let inside = inside_subnet();
        if !inside.contains(src)
            || inside.contains(dst)
            || dst.is_broadcast()
            || dst.is_multicast()
            || dst.is_unspecified()
            || f[14 + 8] <= 1
        {
            self.dropped += 1;
            return;
        }
        let flags = if proto == TCP { f[l4 + 13] } else { 0 };
        let key = (proto, src, sport, dst, dport);
        if proto == TCP
            && flags & (SYN | ACK | RST) == SYN
            && let Some(&old) = self.by_inside.get(&key)
            && !self.maps[&old].open()
        {
            // The same 5-tuple opens a new connection after the old one
            // closed: a new mapping (and maybe a new session).
            self.remove(old);
        }
        let id = match self.by_inside.get(&key) {
            Some(&id) => id,
            None => {
                if proto == TCP && flags & (SYN | ACK | RST) != SYN {
                    // Not the start of a connection: no mapping for it.
                    self.dropped += 1;
                    return;
                }
                match self.create(proto, (src, sport), src_mac, (dst, dport), now) {
                    Some(id) => id,
                    None => {
                        self.dropped += 1;
                        return;
                    }
                }
            }
        };
        let m = self.maps.get_mut(&id).expect("indexed mapping");
        m.inside_mac = src_mac;
        m.seen(flags, Side::Inside, now);
        let (oip, oport) = m.outside;
        Self::rewrite(&mut f, l4, proto, true, oip, oport);
        self.translated += 1;
        let hop = if self.cfg.outside.contains(dst) {
            dst
        } else if let Some(gw) = self.cfg.gateway {
            gw
        } else {
            self.dropped += 1;
            return;
        };
        self.send_outside(hop, oip, f, now, out);
    }

    fn inbound(&mut self, mut f: Vec<u8>, now: Instant, out: &mut Vec<Out>) {
        let Some((l4, proto)) = Self::transport(&f) else {
            self.dropped += 1;
            return;
        };
        let src = ip_at(&f, 14 + 12);
        let dst = ip_at(&f, 14 + 16);
        if self.cfg.outside.contains(src) && !self.cfg.pool.contains(&src) {
            // On-link sender: it knows us, we learn it.
            let mac: Mac = f[6..12].try_into().expect("14 bytes");
            if mac[0] & 1 == 0 {
                self.arp.insert(src, mac);
            }
        }
        let key = (proto, src, be16(&f, l4), dst, be16(&f, l4 + 2));
        let Some(&id) = self.by_outside.get(&key) else {
            self.dropped += 1;
            return;
        };
        if f[14 + 8] <= 1 {
            self.dropped += 1;
            return;
        }
        let flags = if proto == TCP { f[l4 + 13] } else { 0 };
        let m = self.maps.get_mut(&id).expect("indexed mapping");
        m.seen(flags, Side::Outside, now);
        let (iip, iport) = m.inside;
        let mac = m.inside_mac;
        Self::rewrite(&mut f, l4, proto, false, iip, iport);
        f[0..6].copy_from_slice(&mac);
        f[6..12].copy_from_slice(&self.cfg.mac);
        self.translated += 1;
        out.push(Out {
            side: Side::Inside,
            frame: f,
        });
    }

    /// Rewrites the source (`src`) or destination address and port of the
    /// TCP/UDP packet in `f` and decrements its TTL, keeping every checksum
    /// right (RFC 1624).
    fn rewrite(f: &mut [u8], l4: usize, proto: u8, src: bool, ip: Ipv4Addr, port: u16) {
        let hdr_sum = Some(14 + 10);
        let l4_sum = match proto {
            TCP => Some(l4 + 16),
            _ if be16(f, l4 + 6) == 0 => None,
            _ => Some(l4 + 6),
        };
        let addr = 14 + if src { 12 } else { 16 };
        let o = ip.octets();
        set_word(
            f,
            addr,
            u16::from_be_bytes([o[0], o[1]]),
            &[hdr_sum, l4_sum],
        );
        set_word(
            f,
            addr + 2,
            u16::from_be_bytes([o[2], o[3]]),
            &[hdr_sum, l4_sum],
        );
        set_word(f, l4 + if src { 0 } else { 2 }, port, &[l4_sum]);
        // TTL (the word it shares with the protocol).
        let ttl = f[14 + 8] - 1;
        set_word(f, 14 + 8, u16::from_be_bytes([ttl, proto]), &[hdr_sum]);
        if proto == UDP && l4_sum.is_some() && be16(f, l4 + 6) == 0 {
            // A computed UDP checksum of 0 is sent as all ones (RFC 768).
            f[l4 + 6..l4 + 8].copy_from_slice(&[0xff, 0xff]);
        }
    }

    /// A new mapping for an outbound packet, or `None` when the pool has
    /// no port left.
    fn create(
        &mut self,
        proto: u8,
        inside: (Ipv4Addr, u16),
        inside_mac: Mac,
        remote: (Ipv4Addr, u16),
        now: Instant,
    ) -> Option<u64> {
        if self.cfg.pool.is_empty() {
            return None;
        }
        let in_session = self
            .maps
            .values()
            .any(|m| m.inside.0 == inside.0 && m.open());
        let address = match (in_session, self.session.get(&inside.0)) {
            (true, Some(&a)) => a,
            (_, last) => {
                let choices: Vec<Ipv4Addr> = self
                    .cfg
                    .pool
                    .iter()
                    .copied()
                    .filter(|a| Some(a) != last || self.cfg.pool.len() == 1)
                    .collect();
                let a = choices[self.rng.random_range(0..choices.len())];
                self.session.insert(inside.0, a);
                self.sessions += 1;
                a
            }
        };
        let free = |nat: &Self, p: u16| p >= 1024 && !nat.taken.contains(&(proto, address, p));
        let port = if free(self, inside.1) {
            inside.1
        } else {
            let mut p = None;
            for _ in 0..64 {
                let c = self.rng.random_range(1024..=u16::MAX);
                if free(self, c) {
                    p = Some(c);
                    break;
                }
            }
            p.or_else(|| (1024..=u16::MAX).find(|&c| free(self, c)))?
        };
        let id = self.next_id;
        self.next_id += 1;
        let m = Mapping {
            proto,
            inside,
            inside_mac,
            outside: (address, port),
            remote,
            expires: now + TCP_TRANSITORY,
            established: false,
            fin_in: false,
            fin_out: false,
            reset: false,
        };
        self.by_inside
            .insert((proto, inside.0, inside.1, remote.0, remote.1), id);
        self.by_outside
            .insert((proto, remote.0, remote.1, address, port), id);
        self.taken.insert((proto, address, port));
        self.maps.insert(id, m);
        Some(id)
    }

    fn remove(&mut self, id: u64) {
        if let Some(m) = self.maps.remove(&id) {
            self.by_inside
                .remove(&(m.proto, m.inside.0, m.inside.1, m.remote.0, m.remote.1));
            self.by_outside
                .remove(&(m.proto, m.remote.0, m.remote.1, m.outside.0, m.outside.1));
            self.taken.remove(&(m.proto, m.outside.0, m.outside.1));
        }
    }

    fn send_outside(
        &mut self,
        hop: Ipv4Addr,
        source: Ipv4Addr,
        mut f: Vec<u8>,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        f[6..12].copy_from_slice(&self.cfg.mac);
        if let Some(mac) = self.arp.get(&hop) {
            f[0..6].copy_from_slice(mac);
            out.push(Out {
                side: Side::Outside,
                frame: f,
            });
            return;
        }
        match self.pending.push(hop, f, now) {
            Queued::Ask => out.push(self.arp_request(source, hop)),
            Queued::Waiting => {}
            Queued::Full => self.dropped += 1,
        }
    }

    /// An ARP request for `hop` on the outside, from pool address `source`.
    fn arp_request(&self, source: Ipv4Addr, hop: Ipv4Addr) -> Out {
        Out {
            side: Side::Outside,
            frame: arp_frame_as(self.cfg.mac, 1, BROADCAST, source, [0; 6], hop),
        }
    }

    fn flush(&mut self, ip: Ipv4Addr, mac: Mac, out: &mut Vec<Out>) {
        for mut f in self.pending.resolved(&ip) {
            f[0..6].copy_from_slice(&mac);
            out.push(Out {
                side: Side::Outside,
                frame: f,
            });
        }
    }

    /// Expires idle mappings and retries ARP; returns when to call again.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Out>) -> Option<Instant> {
        let expired: Vec<u64> = self
            .maps
            .iter()
            .filter(|(_, m)| m.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.remove(id);
        }
        for due in self.pending.poll(now) {
            match due {
                Due::Retry(hop) => {
                    // Asked from the pool address of the first frame
                    // waiting (translated: its source).
                    let source = self
                        .pending
                        .waiting(&hop)
                        .first()
                        .map_or(self.cfg.pool[0], |f| ip_at(f, 14 + 12));
                    out.push(self.arp_request(source, hop));
                }
                Due::GiveUp(_, frames) => self.dropped += frames.len() as u64,
            }
        }
        self.maps
            .values()
            .map(|m| m.expires)
            .chain(self.pending.next_deadline())
            .min()
    }
}

/// A carrier NAT wired to its two switches.
pub struct CarrierLink {
    state: Mutex<Nat>,
    ports: OnceLock<(PortHandle, PortHandle)>,
}

impl std::fmt::Debug for CarrierLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CarrierLink")
    }
}

impl CarrierLink {
    /// Plugs a NAT configured by `cfg` into `inside` and `outside` and
    /// starts its timer (call inside a tokio runtime).
    pub fn attach(cfg: NatConfig, inside: &Arc<Segment>, outside: &Arc<Segment>) -> Arc<Self> {
        let seed = cfg.seed;
        let link = Arc::new(Self {
            state: Mutex::new(Nat::new(cfg)),
            ports: OnceLock::new(),
        });
        let port = |seg: &Arc<Segment>, side: Side, n: u64| {
            let weak: Weak<Self> = Arc::downgrade(&link);
            let sink = Arc::new(move |frame: Vec<u8>| {
                if let Some(l) = weak.upgrade() {
                    l.input(side, frame);
                }
                true
            });
            seg.attach_direct(PortKind::CarrierNat, seed.wrapping_add(n), sink)
        };
        let ports = (
            port(inside, Side::Inside, 1),
            port(outside, Side::Outside, 2),
        );
        let _ = link.ports.set(ports);
        let weak = Arc::downgrade(&link);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(l) = weak.upgrade() else { return };
                let mut out = Vec::new();
                l.lock().poll(Instant::now(), &mut out);
                l.dispatch(out);
            }
        });
        link
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Nat> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn input(&self, side: Side, frame: Vec<u8>) {
        let mut out = Vec::new();
        self.lock().input(side, frame, Instant::now(), &mut out);
        self.dispatch(out);
    }

    /// Sends frames with the lock released (a switch may run a device
    /// stack inline, whose answer comes back here).
    fn dispatch(&self, out: Vec<Out>) {
        let Some((inside, outside)) = self.ports.get() else {
            return;
        };
        for o in out {
            match o.side {
                Side::Inside => inside.send(o.frame),
                Side::Outside => outside.send(o.frame),
            }
        }
    }

    /// The pool.
    pub fn pool(&self) -> Vec<Ipv4Addr> {
        self.lock().pool().to_vec()
    }

    /// Live translations.
    pub fn mappings(&self) -> Vec<MappingInfo> {
        self.lock().mappings()
    }

    /// (packets translated, packets dropped, sessions started).
    pub fn counters(&self) -> (u64, u64, u64) {
        let st = self.lock();
        (st.translated, st.dropped, st.sessions)
    }

    /// The NAT for the control API, its pool on `segment`.
    pub fn status(&self, segment: &str) -> CarrierStatus {
        let st = self.lock();
        CarrierStatus {
            segment: segment.to_string(),
            pool: st.pool().to_vec(),
            mappings: st.mappings(),
            translated: st.translated,
            dropped: st.dropped,
            sessions: st.sessions,
        }
    }
}

/// The pool of a carrier NAT on `subnet`: the [`POOL_SIZE`] highest
/// addresses below .200 (for a /24; below the last usable one on smaller
/// subnets) that are not in `used`. Addresses .200 up are where
/// `add-workstation` puts workstations, and the last usable one is the
/// router's.
pub fn pool_for(subnet: &Subnet, used: &HashSet<Ipv4Addr>) -> Vec<Ipv4Addr> {
    let net = u32::from(subnet.network) & subnet.mask();
    let last = u32::from(subnet.last_usable());
    let top = if subnet.prefix <= 24 {
        (net | 199).min(last.saturating_sub(1))
    } else {
        last.saturating_sub(1)
    };
    (net + 1..=top)
        .rev()
        .map(Ipv4Addr::from)
        .filter(|a| !used.contains(a) && a.octets()[3] != 0 && a.octets()[3] != 255)
        .take(POOL_SIZE)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::router::checksum;

    const NAT: Mac = [0x02, 0x63, 0x67, 0x6e, 0, 1];
    const DEV: Mac = [0x02, 0x77, 0, 0, 0, 0x30];
    const HOST: Mac = [0x0a, 0, 0, 0, 0, 1];
    const DEV_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    fn subnet(s: &str) -> Subnet {
        Subnet::try_from(s.to_string()).unwrap()
    }

    fn nat() -> Nat {
        let used = HashSet::from([Ipv4Addr::new(10, 77, 0, 199), SERVER]);
        let pool = pool_for(&subnet("10.77.0.0/24"), &used);
        Nat::new(NatConfig {
            mac: NAT,
            outside: subnet("10.77.0.0/24"),
            gateway: None,
            pool,
            seed: 7,
        })
    }

    /// An Ethernet frame with an IPv4 TCP (or UDP) packet, checksums right.
    #[allow(clippy::too_many_arguments)]
    fn packet(
        eth: (Mac, Mac),
        proto: u8,
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        flags: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let l4len = if proto == TCP { 20 } else { 8 } + payload.len();
        let total = 20 + l4len;
        let mut f = Vec::new();
        f.extend_from_slice(&eth.1);
        f.extend_from_slice(&eth.0);
        f.extend_from_slice(&ETH_IPV4.to_be_bytes());
        f.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
        f[16..18].copy_from_slice(&(total as u16).to_be_bytes());
        f.extend_from_slice(&src.0.octets());
        f.extend_from_slice(&dst.0.octets());
        let sum = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&src.1.to_be_bytes());
        f.extend_from_slice(&dst.1.to_be_bytes());
        if proto == TCP {
            f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0x10, 0, 0, 0, 0, 0]);
        } else {
            f.extend_from_slice(&(l4len as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        }
        f.extend_from_slice(payload);
        let sum = l4_checksum(&f);
        let at = if proto == TCP { 34 + 16 } else { 34 + 6 };
        f[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        f
    }

    /// The TCP/UDP checksum over the pseudo-header and segment of `f`
    /// (0 when the stored checksum is right).
    fn l4_checksum(f: &[u8]) -> u16 {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[26..34]);
        pseudo.extend_from_slice(&[0, f[23]]);
        pseudo.extend_from_slice(&((f.len() - 34) as u16).to_be_bytes());
        pseudo.extend_from_slice(&f[34..]);
        checksum(&pseudo)
    }

    fn arp_reply(nat: &mut Nat, now: Instant, out: &mut Vec<Out>) {
        let reply = arp_frame_as(HOST, 2, NAT, SERVER, NAT, nat.pool()[0]);
        nat.input(Side::Outside, reply, now, out);
    }

    fn syn(port: u16) -> Vec<u8> {
        packet((DEV, NAT), TCP, (DEV_IP, port), (SERVER, 8883), SYN, b"")
    }

    #[test]
    fn pool_skips_used_addresses_and_the_workstation_range() {
        let used = HashSet::from([Ipv4Addr::new(10, 77, 0, 198)]);
        let pool = pool_for(&subnet("10.77.0.0/24"), &used);
        assert_eq!(pool.len(), POOL_SIZE);
        assert_eq!(pool[0], Ipv4Addr::new(10, 77, 0, 199));
        assert_eq!(pool[1], Ipv4Addr::new(10, 77, 0, 197));
        assert!(!pool.contains(&Ipv4Addr::new(10, 77, 0, 198)));
        let small = pool_for(&subnet("10.9.0.0/29"), &HashSet::new());
        assert_eq!(small.len(), 5, "{small:?}");
        assert!(!small.contains(&Ipv4Addr::new(10, 9, 0, 6)), "router's");
    }

    #[test]
    fn translates_both_ways_with_right_checksums() {
        let mut nat = nat();
        let now = Instant::now();
        let mut out = Vec::new();
        nat.input(Side::Inside, syn(50000), now, &mut out);
        // Unknown next hop: an ARP request for the server first.
        assert_eq!(out.len(), 1);
        assert_eq!(be16(&out[0].frame, 12), ETH_ARP);
        assert_eq!(ip_at(&out[0].frame, 38), SERVER);
        out.clear();
        arp_reply(&mut nat, now, &mut out);
        assert_eq!(out.len(), 1, "the queued SYN leaves");
        let f = &out[0].frame;
        assert_eq!(out[0].side, Side::Outside);
        assert_eq!(&f[0..6], &HOST);
        assert_eq!(&f[6..12], &NAT);
        let public = ip_at(f, 26);
        assert!(nat.pool().contains(&public));
        assert_eq!(be16(f, 34), 50000, "inside port kept");
        assert_eq!(f[22], 63, "TTL decremented");
        assert_eq!(checksum(&f[14..34]), 0, "IPv4 header checksum");
        assert_eq!(l4_checksum(f), 0, "TCP checksum");
        // The answer comes back to the device.
        out.clear();
        let synack = packet(
            (HOST, NAT),
            TCP,
            (SERVER, 8883),
            (public, 50000),
            SYN | ACK,
            b"",
        );
        nat.input(Side::Outside, synack, now, &mut out);
        let f = &out[0].frame;
        assert_eq!(out[0].side, Side::Inside);
        assert_eq!(&f[0..6], &DEV);
        assert_eq!(ip_at(f, 30), DEV_IP);
        assert_eq!(checksum(&f[14..34]), 0);
        assert_eq!(l4_checksum(f), 0);
        // UDP with a payload of odd length, both ways.
        out.clear();
        let d = packet((DEV, NAT), UDP, (DEV_IP, 40000), (SERVER, 53), 0, b"odd");
        nat.input(Side::Inside, d, now, &mut out);
        let f = &out[0].frame;
        assert_eq!(ip_at(f, 26), public, "same session, same address");
        assert_eq!(l4_checksum(f), 0, "UDP checksum");
        assert_eq!(nat.mappings().len(), 2);
    }

    #[test]
    fn outside_gets_in_only_through_a_mapping() {
        let mut nat = nat();
        let now = Instant::now();
        let mut out = Vec::new();
        arp_reply(&mut nat, now, &mut out);
        let pool0 = nat.pool()[0];
        // ARP for a pool address is answered; a SYN to it is dropped.
        let req = arp_frame_as(HOST, 1, BROADCAST, SERVER, [0; 6], pool0);
        nat.input(Side::Outside, req, now, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(be16(&out[0].frame, 20), 2);
        out.clear();
        let probe = packet((HOST, NAT), TCP, (SERVER, 4000), (pool0, 22), SYN, b"");
        nat.input(Side::Outside, probe, now, &mut out);
        assert!(out.is_empty());
        assert_eq!(nat.dropped, 1);
        // A non-SYN from the inside without mapping is dropped too.
        let ack = packet((DEV, NAT), TCP, (DEV_IP, 1234), (SERVER, 80), ACK, b"");
        nat.input(Side::Inside, ack, now, &mut out);
        assert!(out.is_empty());
        // Garbage never panics.
        for n in [0, 13, 14, 20, 34, 40, 60] {
            let mut g = syn(1);
            g.truncate(n);
            nat.input(Side::Inside, g.clone(), now, &mut out);
            nat.input(Side::Outside, g, now, &mut out);
        }
    }

    #[test]
    fn each_session_gets_another_address_and_mappings_expire() {
        let mut nat = nat();
        let t0 = Instant::now();
        let mut out = Vec::new();
        arp_reply(&mut nat, t0, &mut out);
        let mut seen = Vec::new();
        for (i, port) in [50000u16, 50001, 50002, 50003].into_iter().enumerate() {
            let now = t0 + Duration::from_secs(i as u64 * 60);
            out.clear();
            nat.input(Side::Inside, syn(port), now, &mut out);
            let public = ip_at(&out[0].frame, 26);
            // A second connection of the same session shares the address.
            out.clear();
            nat.input(Side::Inside, syn(port + 100), now, &mut out);
            assert_eq!(ip_at(&out[0].frame, 26), public);
            if let Some(&last) = seen.last() {
                assert_ne!(public, last, "a new session draws another address");
            }
            seen.push(public);
            // Both connections close (FIN both ways).
            for p in [port, port + 100] {
                let fin = packet((DEV, NAT), TCP, (DEV_IP, p), (SERVER, 8883), FIN | ACK, b"");
                nat.input(Side::Inside, fin, now, &mut out);
                let fin = packet(
                    (HOST, NAT),
                    TCP,
                    (SERVER, 8883),
                    (public, p),
                    FIN | ACK,
                    b"",
                );
                nat.input(Side::Outside, fin, now, &mut out);
            }
        }
        // Closed mappings linger for the transitory timeout, then go.
        let last = t0 + Duration::from_secs(180);
        assert_eq!(nat.mappings().len(), 8);
        let next = nat.poll(last + Duration::from_secs(1), &mut out);
        assert!(next.is_some());
        nat.poll(last + TCP_TRANSITORY, &mut out);
        assert!(nat.mappings().is_empty());
        assert!(nat.poll(last + TCP_TRANSITORY, &mut out).is_none());
        assert_eq!(nat.sessions, 4);
    }

    #[test]
    fn a_reused_port_after_close_opens_a_new_session() {
        let mut nat = nat();
        let now = Instant::now();
        let mut out = Vec::new();
        arp_reply(&mut nat, now, &mut out);
        out.clear();
        nat.input(Side::Inside, syn(50000), now, &mut out);
        let first = ip_at(&out[0].frame, 26);
        let rst = packet((DEV, NAT), TCP, (DEV_IP, 50000), (SERVER, 8883), RST, b"");
        nat.input(Side::Inside, rst, now, &mut out);
        out.clear();
        nat.input(Side::Inside, syn(50000), now, &mut out);
        assert_ne!(ip_at(&out[0].frame, 26), first);
        assert_eq!(nat.mappings().len(), 1);
        assert_eq!(nat.sessions, 2);
    }

    #[test]
    fn established_connections_last_and_idle_udp_expires() {
        let mut nat = nat();
        let t0 = Instant::now();
        let mut out = Vec::new();
        arp_reply(&mut nat, t0, &mut out);
        nat.input(Side::Inside, syn(50000), t0, &mut out);
        let public = ip_at(&out[0].frame, 26);
        let synack = packet(
            (HOST, NAT),
            TCP,
            (SERVER, 8883),
            (public, 50000),
            SYN | ACK,
            b"",
        );
        nat.input(Side::Outside, synack, t0, &mut out);
        let d = packet((DEV, NAT), UDP, (DEV_IP, 40000), (SERVER, 53), 0, b"x");
        nat.input(Side::Inside, d, t0, &mut out);
        nat.poll(t0 + UDP_TIMEOUT, &mut out);
        let m = nat.mappings();
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].protocol, "tcp");
        nat.poll(t0 + TCP_ESTABLISHED, &mut out);
        assert!(nat.mappings().is_empty());
    }

    proptest::proptest! {
        /// Any bytes from either side: no panic, and nothing the NAT
        /// sends is shorter than an Ethernet header.
        #[test]
        fn any_frame_is_handled(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
            inside in proptest::prelude::any::<bool>(),
            ours in proptest::prelude::any::<bool>(),
        ) {
            let mut nat = nat();
            let mut f = bytes;
            if ours && f.len() >= 14 {
                f[0..6].copy_from_slice(&NAT);
                f[12..14].copy_from_slice(&ETH_IPV4.to_be_bytes());
            }
            let mut out = Vec::new();
            let side = if inside { Side::Inside } else { Side::Outside };
            nat.input(side, f, Instant::now(), &mut out);
            proptest::prop_assert!(out.iter().all(|o| o.frame.len() >= 14));
        }

        /// Any TCP or UDP packet of any ports and payload crosses with
        /// right checksums both ways.
        #[test]
        fn checksums_stay_right(
            udp in proptest::prelude::any::<bool>(),
            sport in 1u16..,
            dport in 1u16..,
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let proto = if udp { UDP } else { TCP };
            let mut nat = nat();
            let now = Instant::now();
            let mut out = Vec::new();
            arp_reply(&mut nat, now, &mut out);
            out.clear();
            let f = packet((DEV, NAT), proto, (DEV_IP, sport), (SERVER, dport), SYN, &payload);
            nat.input(Side::Inside, f, now, &mut out);
            proptest::prop_assert_eq!(out.len(), 1);
            let o = &out[0].frame;
            proptest::prop_assert_eq!(checksum(&o[14..34]), 0);
            proptest::prop_assert_eq!(l4_checksum(o), 0);
            let (public, port) = (ip_at(o, 26), be16(o, 34));
            out.clear();
            let back = packet((HOST, NAT), proto, (SERVER, dport), (public, port), SYN | ACK, &payload);
            nat.input(Side::Outside, back, now, &mut out);
            proptest::prop_assert_eq!(out.len(), 1);
            let i = &out[0].frame;
            proptest::prop_assert_eq!(ip_at(i, 30), DEV_IP);
            proptest::prop_assert_eq!(be16(i, 36), sport);
            proptest::prop_assert_eq!(checksum(&i[14..34]), 0);
            proptest::prop_assert_eq!(l4_checksum(i), 0);
        }
    }

    #[test]
    fn unanswered_arp_gives_up_after_three_tries() {
        let mut nat = nat();
        let t0 = Instant::now();
        let mut out = Vec::new();
        nat.input(Side::Inside, syn(50000), t0, &mut out);
        assert_eq!(out.len(), 1);
        for i in 1..=3u64 {
            out.clear();
            nat.poll(t0 + ARP_RETRY * i as u32, &mut out);
        }
        assert!(nat.pending.is_empty());
        assert_eq!(nat.dropped, 1);
    }
}
