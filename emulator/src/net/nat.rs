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
//!   that would reach 0 is dropped and answered with ICMP time exceeded:
//!   from [`INSIDE_GATEWAY`] to an inside sender, from the pool address
//!   it was sent to for an outside one), MACs rewritten, and every checksum the
//!   rewrite touches (IPv4 header, TCP/UDP with their pseudo-header)
//!   updated incrementally (RFC 1624, [`super::router::checksum_update`]).
//!   A UDP datagram without checksum (0) keeps none.
//! - Translation (RFC 4787/5382 behaviour of a carrier-grade NAT): TCP,
//!   UDP and ICMP queries; a mapping is created by a TCP SYN, any UDP
//!   datagram or an ICMP echo/timestamp request from the inside and
//!   rewrites the source address and port (a query's identifier stands
//!   for the port, RFC 5508) outwards and the destination inwards, per
//!   5-tuple (address- and port-dependent filtering). The inside port or
//!   identifier is kept when it is free on the chosen address, else a
//!   random one is taken (ports from 1024 up); a SYN on the 5-tuple of a
//!   closed mapping (FIN both ways, RST) replaces it. From the outside
//!   only packets of a mapping get in (for a query, its reply); everything
//!   else (a SYN, a scan, a ping to a pool address) is dropped without
//!   answer, as a CGNAT does. Other protocols are dropped.
//! - ICMP errors (destination unreachable, time exceeded, parameter
//!   problem; RFC 5508): one from the outside, to a pool address, about a
//!   packet of a mapping (the quoted packet: TCP, UDP or an echo request,
//!   with at least 8 bytes of its transport header) goes to the inside host
//!   with the quoted packet translated back (its addresses, port or
//!   identifier, header checksum and, when quoted whole, transport
//!   checksum) and the ICMP checksum recomputed; one from an inside host
//!   about a packet it received through a mapping leaves from the
//!   mapping's pool address the same way. An error with a wrong ICMP
//!   checksum, a fragmented one, or one about no mapping is dropped; an
//!   error renews no mapping.
//! - Fragments (RFC 4787 REQ-14: received out of order): the first
//!   fragment (it has the ports) is translated like a whole packet and
//!   names the datagram's mapping (by side, addresses, protocol and IP
//!   identification); later fragments get their address rewritten by that
//!   mapping. A later fragment that comes before its first one waits for
//!   it ([`FRAGMENTS_HELD`] per datagram, [`FRAGMENTED_MAX`] datagrams,
//!   [`FRAGMENT_TIMEOUT`]; then dropped and counted). No reassembly: the
//!   transport checksum is in the first fragment and its incremental update
//!   holds for the whole datagram.
//! - Address per session (paired pooling, RFC 4787 REQ-2): all open
//!   connections of one inside address share one pool address. When it
//!   has none open (every one closed by FIN both ways or RST, or expired),
//!   its next connection starts a new session and draws a random pool
//!   address other than the one it had, so a server sees the source
//!   address change from one session to the next.
//! - Timeouts (wall time: they belong to the network, like real peers'
//!   TCP timers): TCP established [`TCP_ESTABLISHED`] (RFC 5382 minimum),
//!   TCP before establishment or after FIN both ways [`TCP_TRANSITORY`],
//!   after RST [`TCP_RESET`], UDP [`UDP_TIMEOUT`] (RFC 4787 REQ-5), ICMP
//!   query [`ICMP_TIMEOUT`] (RFC 5508 REQ-2). Each packet of a mapping
//!   (not an ICMP error about it) renews it.
//! - Next hop on the outside: the destination when it is on the outside
//!   subnet, else the segment's gateway (the emulated router in a routed
//!   lab); without one the packet is dropped. Unknown next hops are
//!   resolved by ARP ([`super::pending_arp`]: three requests a second
//!   apart, at most [`PENDING_MAX`] frames queued, dropped and counted
//!   when unanswered).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::pending_arp::{Due, PendingArp, Queued};
use super::router::{
    arp_frame_as, be16, checksum, checksum_update, icmp_error_packet, ip_at, ipv4_header,
};
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
/// Idle timeout of an ICMP query mapping (RFC 5508 REQ-2: at least 60 s).
pub const ICMP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the NAT follows a fragmented datagram after its last
/// fragment seen (Linux's `ipfrag_time`).
pub const FRAGMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Fragmented datagrams followed at once.
pub const FRAGMENTED_MAX: usize = 256;
/// Fragments held per datagram while its first fragment is missing.
pub const FRAGMENTS_HELD: usize = 16;
/// Frames queued per next hop while its ARP is unanswered.
pub const PENDING_MAX: usize = 8;
const ARP_TRIES: u8 = 3;
const ARP_RETRY: Duration = Duration::from_secs(1);

const ETH_ARP: u16 = 0x0806;
const ETH_IPV4: u16 = 0x0800;
const BROADCAST: Mac = [0xff; 6];
const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ECHO_REPLY: u8 = 0;
const UNREACHABLE: u8 = 3;
const ECHO: u8 = 8;
const TIME_EXCEEDED: u8 = 11;
const PARAMETER_PROBLEM: u8 = 12;
const TIMESTAMP: u8 = 13;
const TIMESTAMP_REPLY: u8 = 14;
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
            ICMP => ICMP_TIMEOUT,
            _ if self.reset => TCP_RESET,
            _ if self.established && self.open() => TCP_ESTABLISHED,
            _ => TCP_TRANSITORY,
        }
    }
}

/// (protocol, source address, source port, destination address,
/// destination port) as a packet carries them.
/// For an ICMP query the identifier stands for the inside host's port
/// and for the pool port, and the remote's port is 0.
type Key = (u8, Ipv4Addr, u16, Ipv4Addr, u16);

/// (side it came from, source, destination, protocol, identification) of
/// a fragmented datagram.
type FragKey = (Side, Ipv4Addr, Ipv4Addr, u8, u16);

/// A fragmented datagram being followed.
struct Datagram {
    /// The mapping its first fragment crossed by.
    mapping: Option<u64>,
    /// Later fragments that came before the first.
    held: Vec<Vec<u8>>,
    expires: Instant,
}

/// A translation as the control API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MappingInfo {
    /// `tcp`, `udp` or `icmp` (an ICMP query: the port of `inside` and
    /// `outside` is its identifier, `remote`'s is 0).
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
    /// Fragmented datagrams crossing.
    fragments: HashMap<FragKey, Datagram>,
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

/// Where one IPv4 packet sits in a frame: the frame's own, or the one an
/// ICMP error quotes.
#[derive(Debug, Clone, Copy)]
struct Pkt {
    /// Offset of its IPv4 header.
    ip: usize,
    /// Offset of its transport header; `None` on a later fragment.
    l4: Option<usize>,
    /// Where its bytes end (a quoted packet: where the quote ends).
    end: usize,
    proto: u8,
}

/// The IPv4 header of a frame the NAT may translate.
struct Head {
    pkt: Pkt,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    /// Identification, fragment offset (8-byte units), more fragments.
    ident: u16,
    offset: u16,
    more: bool,
}

/// What a packet (or a first fragment, or a quoted packet: its first 8
/// transport bytes at least) carries.
enum Kind {
    Transport {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    /// An ICMP query or its answer: `id` is its identifier.
    Query {
        ty: u8,
        id: u16,
    },
    /// An ICMP error the NAT relays (unreachable, time exceeded,
    /// parameter problem).
    Error,
}

/// The header of a frame with a sound IPv4 packet of TCP, UDP or ICMP
/// whose transport header is complete (when it is not a later fragment).
fn head(f: &[u8]) -> Option<Head> {
    let (ihl, total) = ipv4_header(f)?;
    let ip = &f[14..];
    let proto = ip[9];
    let frag = be16(ip, 6);
    let (offset, more) = (frag & 0x1fff, frag & 0x2000 != 0);
    let need = match proto {
        TCP => 20,
        UDP | ICMP => 8,
        _ => return None,
    };
    let l4 = 14 + ihl;
    let end = 14 + total;
    if offset == 0 && end < l4 + need {
        return None;
    }
    Some(Head {
        pkt: Pkt {
            ip: 14,
            l4: (offset == 0).then_some(l4),
            end,
            proto,
        },
        src: ip_at(f, 26),
        dst: ip_at(f, 30),
        ident: be16(ip, 4),
        offset,
        more,
    })
}

fn kind(f: &[u8], p: Pkt) -> Option<Kind> {
    let l4 = p.l4?;
    match p.proto {
        TCP => Some(Kind::Transport {
            sport: be16(f, l4),
            dport: be16(f, l4 + 2),
            // A quoted header may stop after 8 bytes.
            flags: if l4 + 14 <= p.end { f[l4 + 13] } else { 0 },
        }),
        UDP => Some(Kind::Transport {
            sport: be16(f, l4),
            dport: be16(f, l4 + 2),
            flags: 0,
        }),
        _ => match f[l4] {
            ty @ (ECHO | ECHO_REPLY | TIMESTAMP | TIMESTAMP_REPLY) => Some(Kind::Query {
                ty,
                id: be16(f, l4 + 4),
            }),
            UNREACHABLE | TIME_EXCEEDED | PARAMETER_PROBLEM => Some(Kind::Error),
            _ => None,
        },
    }
}

/// The 5-tuple (and TCP flags) of packet `p` from `src` to `dst`, coming
/// from `side`, when it may belong to a mapping: TCP and UDP either way,
/// ICMP queries from the inside and their replies from the outside.
fn flow(f: &[u8], p: Pkt, src: Ipv4Addr, dst: Ipv4Addr, side: Side) -> Option<(Key, u8)> {
    match (kind(f, p)?, side) {
        (
            Kind::Transport {
                sport,
                dport,
                flags,
            },
            _,
        ) => Some(((p.proto, src, sport, dst, dport), flags)),
        (
            Kind::Query {
                ty: ECHO | TIMESTAMP,
                id,
            },
            Side::Inside,
        ) => Some(((ICMP, src, id, dst, 0), 0)),
        (
            Kind::Query {
                ty: ECHO_REPLY | TIMESTAMP_REPLY,
                id,
            },
            Side::Outside,
        ) => Some(((ICMP, src, 0, dst, id), 0)),
        _ => None,
    }
}

/// The packet quoted by the ICMP error `h` (unfragmented, checksum right),
/// with its source and destination, when it is TCP, UDP or ICMP with its
/// first 8 transport bytes quoted (RFC 792).
fn quoted(f: &[u8], h: &Head) -> Option<(Pkt, Ipv4Addr, Ipv4Addr)> {
    let l4 = h.pkt.l4?;
    if h.more || checksum(&f[l4..h.pkt.end]) != 0 {
        return None;
    }
    let e = l4 + 8;
    if h.pkt.end < e + 20 || f[e] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(f[e] & 0x0f) * 4;
    let end = h.pkt.end.min(e + usize::from(be16(f, e + 2)));
    if ihl < 20 || e + ihl + 8 > end || be16(f, e + 6) & 0x1fff != 0 {
        return None;
    }
    let proto = f[e + 9];
    if !matches!(proto, TCP | UDP | ICMP) {
        return None;
    }
    let q = Pkt {
        ip: e,
        l4: Some(e + ihl),
        end,
        proto,
    };
    Some((q, ip_at(f, e + 12), ip_at(f, e + 16)))
}

/// The checksum covering the pseudo-header (TCP, or UDP with one), when
/// the packet holds it.
fn pseudo_sum(f: &[u8], p: Pkt) -> Option<usize> {
    let l4 = p.l4?;
    match p.proto {
        TCP if l4 + 18 <= p.end => Some(l4 + 16),
        UDP if l4 + 8 <= p.end && be16(f, l4 + 6) != 0 => Some(l4 + 6),
        _ => None,
    }
}

/// A UDP checksum that computes to 0 is sent as all ones (RFC 768).
fn udp_zero(f: &mut [u8], p: Pkt, sum: Option<usize>) {
    if p.proto == UDP
        && let Some(s) = sum
        && be16(f, s) == 0
    {
        f[s..s + 2].copy_from_slice(&[0xff, 0xff]);
    }
}

/// Replaces the source (`src`) or destination address of packet `p`,
/// keeping its header checksum and its TCP/UDP checksum right (RFC 1624).
fn set_address(f: &mut [u8], p: Pkt, src: bool, addr: Ipv4Addr) {
    let l4_sum = pseudo_sum(f, p);
    let sums = [Some(p.ip + 10), l4_sum];
    let at = p.ip + if src { 12 } else { 16 };
    let o = addr.octets();
    set_word(f, at, u16::from_be_bytes([o[0], o[1]]), &sums);
    set_word(f, at + 2, u16::from_be_bytes([o[2], o[3]]), &sums);
    udp_zero(f, p, l4_sum);
}

/// Replaces the source (`src`) or destination port of TCP/UDP packet `p`,
/// or the identifier of an ICMP query, keeping its checksum right.
fn set_port(f: &mut [u8], p: Pkt, src: bool, port: u16) {
    let Some(l4) = p.l4 else { return };
    if p.proto == ICMP {
        set_word(f, l4 + 4, port, &[Some(l4 + 2)]);
        return;
    }
    let l4_sum = pseudo_sum(f, p);
    set_word(f, l4 + if src { 0 } else { 2 }, port, &[l4_sum]);
    udp_zero(f, p, l4_sum);
}

/// Decrements the frame's TTL (the word it shares with the protocol).
fn decrement_ttl(f: &mut [u8]) {
    let (ttl, proto) = (f[14 + 8] - 1, f[14 + 9]);
    set_word(
        f,
        14 + 8,
        u16::from_be_bytes([ttl, proto]),
        &[Some(14 + 10)],
    );
}

/// Recomputes the checksum of the ICMP message `p` (after a rewrite of
/// the packet it quotes).
fn icmp_checksum(f: &mut [u8], p: Pkt) {
    let Some(l4) = p.l4 else { return };
    f[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
    let sum = checksum(&f[l4..p.end]);
    f[l4 + 2..l4 + 4].copy_from_slice(&sum.to_be_bytes());
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
            fragments: HashMap::new(),
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
                    protocol: match m.proto {
                        TCP => "tcp",
                        UDP => "udp",
                        _ => "icmp",
                    }
                    .to_string(),
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

    /// Handles later fragments and ICMP errors from `side`; gives back
    /// anything else with its flow (5-tuple, TCP flags) when it may belong
    /// to a mapping, else drops it (a ping to a pool address, among
    /// others: a CGNAT is silent).
    fn classify(
        &mut self,
        side: Side,
        f: Vec<u8>,
        h: &Head,
        now: Instant,
        out: &mut Vec<Out>,
    ) -> Option<(Vec<u8>, Key, u8)> {
        if h.offset != 0 {
            self.later_fragment(side, f, h, now, out);
            return None;
        }
        if matches!(kind(&f, h.pkt), Some(Kind::Error)) {
            self.error(side, f, h, now, out);
            return None;
        }
        match flow(&f, h.pkt, h.src, h.dst, side) {
            Some((key, flags)) => Some((f, key, flags)),
            None => {
                self.dropped += 1;
                None
            }
        }
    }

    /// Translates an IPv4 packet from the inside outwards.
    fn outbound(&mut self, f: Vec<u8>, now: Instant, out: &mut Vec<Out>) {
        let Some(h) = head(&f) else {
            self.dropped += 1;
            return;
        };
        let src_mac: Mac = f[6..12].try_into().expect("14 bytes");
        let inside = inside_subnet();
        if !inside.contains(h.src)
            || inside.contains(h.dst)
            || h.dst.is_broadcast()
            || h.dst.is_multicast()
            || h.dst.is_unspecified()
        {
            self.dropped += 1;
            return;
        }
        if f[14 + 8] <= 1 {
            // It would leave with TTL 0: time exceeded, from the gateway
            // address the inside host knows (traceroute's first hop).
            self.dropped += 1;
            if let Some(e) = icmp_error_packet(&f, self.cfg.mac, INSIDE_GATEWAY, 11, 0) {
                out.push(Out {
                    side: Side::Inside,
                    frame: e,
                });
            }
            return;
        }
        let Some((f, key, flags)) = self.classify(Side::Inside, f, &h, now, out) else {
            return;
        };
        let (proto, _, sport, dst, dport) = key;
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
                match self.create(proto, (h.src, sport), src_mac, (dst, dport), now) {
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
        self.translate(Side::Inside, f, &h, id, now, out);
        if h.more {
            self.first_fragment(Side::Inside, &h, id, now, out);
        }
    }

    /// Translates an IPv4 packet from the outside inwards, when it belongs
    /// to a mapping.
    fn inbound(&mut self, f: Vec<u8>, now: Instant, out: &mut Vec<Out>) {
        let Some(h) = head(&f) else {
            self.dropped += 1;
            return;
        };
        if self.cfg.outside.contains(h.src) && !self.cfg.pool.contains(&h.src) {
            // On-link sender: it knows us, we learn it.
            let mac: Mac = f[6..12].try_into().expect("14 bytes");
            if mac[0] & 1 == 0 {
                self.arp.insert(h.src, mac);
            }
        }
        if f[14 + 8] <= 1 {
            // Time exceeded, from the pool address it was sent to, back to
            // the hop it came from (nothing for an address not ours).
            self.dropped += 1;
            if self.cfg.pool.contains(&h.dst)
                && let Some(e) = icmp_error_packet(&f, self.cfg.mac, h.dst, 11, 0)
            {
                out.push(Out {
                    side: Side::Outside,
                    frame: e,
                });
            }
            return;
        }
        let Some((f, key, flags)) = self.classify(Side::Outside, f, &h, now, out) else {
            return;
        };
        let Some(&id) = self.by_outside.get(&key) else {
            self.dropped += 1;
            return;
        };
        let m = self.maps.get_mut(&id).expect("indexed mapping");
        m.seen(flags, Side::Outside, now);
        self.translate(Side::Outside, f, &h, id, now, out);
        if h.more {
            self.first_fragment(Side::Outside, &h, id, now, out);
        }
    }

    /// An ICMP error about a packet of a mapping (RFC 5508). From the
    /// outside (a router on the path, the remote host; sent to the pool
    /// address), the quoted packet is one the NAT sent out: it and the
    /// error's destination are translated back to the inside host. From an
    /// inside host (say port unreachable for a late UDP answer), the quoted
    /// packet is one it got through the NAT: the error leaves from the
    /// pool address, the quoted packet as the remote sent it.
    fn error(&mut self, side: Side, mut f: Vec<u8>, h: &Head, now: Instant, out: &mut Vec<Out>) {
        let Some((q, qsrc, qdst)) = quoted(&f, h) else {
            self.dropped += 1;
            return;
        };
        // The quoted packet went the other way: its flow, seen from its
        // receiver, is the mapping's.
        let other = match side {
            Side::Inside => Side::Outside,
            Side::Outside => Side::Inside,
        };
        let (index, ours) = match side {
            Side::Outside => (&self.by_outside, qsrc == h.dst),
            Side::Inside => (&self.by_inside, qdst == h.src),
        };
        let id = match flow(&f, q, qsrc, qdst, other) {
            Some(((p, s, sp, d, dp), _)) if ours => index.get(&(p, d, dp, s, sp)).copied(),
            _ => None,
        };
        let Some(id) = id else {
            self.dropped += 1;
            return;
        };
        // An error renews no mapping.
        let m = &self.maps[&id];
        let ((iip, iport), mac, (oip, oport)) = (m.inside, m.inside_mac, m.outside);
        self.translated += 1;
        match side {
            Side::Outside => {
                set_address(&mut f, q, true, iip);
                set_port(&mut f, q, true, iport);
                set_address(&mut f, h.pkt, false, iip);
            }
            Side::Inside => {
                set_address(&mut f, q, false, oip);
                set_port(&mut f, q, false, oport);
                set_address(&mut f, h.pkt, true, oip);
            }
        }
        decrement_ttl(&mut f);
        icmp_checksum(&mut f, h.pkt);
        match side {
            Side::Outside => self.send_in(mac, f, out),
            Side::Inside => self.send_out(h.dst, f, now, out),
        }
    }

    /// The first fragment of a datagram crossed through mapping `id`: the
    /// later ones follow it, those that came before it leave now.
    fn first_fragment(&mut self, side: Side, h: &Head, id: u64, now: Instant, out: &mut Vec<Out>) {
        let key = (side, h.src, h.dst, h.pkt.proto, h.ident);
        let room = self.fragments.len() < FRAGMENTED_MAX;
        let held = match self.fragments.get_mut(&key) {
            Some(d) => {
                d.mapping = Some(id);
                d.expires = now + FRAGMENT_TIMEOUT;
                std::mem::take(&mut d.held)
            }
            None => {
                if room {
                    let d = Datagram {
                        mapping: Some(id),
                        held: Vec::new(),
                        expires: now + FRAGMENT_TIMEOUT,
                    };
                    self.fragments.insert(key, d);
                }
                Vec::new()
            }
        };
        for f in held {
            self.forward_fragment(side, f, id, now, out);
        }
    }

    /// A fragment other than the first: it follows its first fragment's
    /// mapping, or waits for it (out of order, RFC 4787 REQ-14).
    fn later_fragment(
        &mut self,
        side: Side,
        f: Vec<u8>,
        h: &Head,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        let key = (side, h.src, h.dst, h.pkt.proto, h.ident);
        if let Some(d) = self.fragments.get(&key)
            && let Some(id) = d.mapping
        {
            return self.forward_fragment(side, f, id, now, out);
        }
        if !self.fragments.contains_key(&key) && self.fragments.len() >= FRAGMENTED_MAX {
            self.dropped += 1;
            return;
        }
        let d = self.fragments.entry(key).or_insert_with(|| Datagram {
            mapping: None,
            held: Vec::new(),
            expires: now + FRAGMENT_TIMEOUT,
        });
        if d.held.len() < FRAGMENTS_HELD {
            d.held.push(f);
        } else {
            self.dropped += 1;
        }
    }

    /// Translates a later fragment of a datagram of mapping `id` (its
    /// address only: the ports are in the first fragment).
    fn forward_fragment(
        &mut self,
        side: Side,
        f: Vec<u8>,
        id: u64,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        let (Some(m), Some(h)) = (self.maps.get_mut(&id), head(&f)) else {
            self.dropped += 1;
            return;
        };
        m.seen(0, side, now);
        self.translate(side, f, &h, id, now, out);
    }

    /// Rewrites packet `h` of mapping `id` that came from `side` (its
    /// source outwards, its destination inwards, with the port or query
    /// identifier when it carries one) and sends it on.
    fn translate(
        &mut self,
        side: Side,
        mut f: Vec<u8>,
        h: &Head,
        id: u64,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        let m = &self.maps[&id];
        let ((iip, iport), mac, (oip, oport)) = (m.inside, m.inside_mac, m.outside);
        let (addr, port) = match side {
            Side::Inside => (oip, oport),
            Side::Outside => (iip, iport),
        };
        let src = side == Side::Inside;
        set_address(&mut f, h.pkt, src, addr);
        set_port(&mut f, h.pkt, src, port);
        decrement_ttl(&mut f);
        self.translated += 1;
        match side {
            Side::Inside => self.send_out(h.dst, f, now, out),
            Side::Outside => self.send_in(mac, f, out),
        }
    }

    /// Sends a translated frame to the inside host at `mac`.
    fn send_in(&self, mac: Mac, mut f: Vec<u8>, out: &mut Vec<Out>) {
        f[0..6].copy_from_slice(&mac);
        f[6..12].copy_from_slice(&self.cfg.mac);
        out.push(Out {
            side: Side::Inside,
            frame: f,
        });
    }

    /// Sends a translated frame towards `dst` on the outside: to it when
    /// on-link, else to the segment's gateway (dropped without one).
    fn send_out(&mut self, dst: Ipv4Addr, f: Vec<u8>, now: Instant, out: &mut Vec<Out>) {
        let hop = if self.cfg.outside.contains(dst) {
            dst
        } else if let Some(gw) = self.cfg.gateway {
            gw
        } else {
            self.dropped += 1;
            return;
        };
        let source = ip_at(&f, 14 + 12);
        self.send_outside(hop, source, f, now, out);
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
        // Ports from 1024 up; ICMP identifiers any.
        let low = if proto == ICMP { 0 } else { 1024 };
        let free = |nat: &Self, p: u16| p >= low && !nat.taken.contains(&(proto, address, p));
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
        let stale: Vec<FragKey> = self
            .fragments
            .iter()
            .filter(|(_, d)| d.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            if let Some(d) = self.fragments.remove(&k) {
                self.dropped += d.held.len() as u64;
            }
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
            .chain(self.fragments.values().map(|d| d.expires))
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
        let sum = match l4_checksum(&f) {
            // A UDP checksum that computes to 0 is sent as all ones: 0
            // means "no checksum" (RFC 768), which the NAT keeps as is.
            0 if proto == UDP => 0xffff,
            sum => sum,
        };
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

    /// A NAT that knows the server's MAC (its ARP answered just now), the
    /// instant, and what it sent.
    fn resolved() -> (Nat, Instant, Vec<Out>) {
        let mut nat = nat();
        let now = Instant::now();
        let mut out = Vec::new();
        arp_reply(&mut nat, now, &mut out);
        (nat, now, out)
    }

    fn syn(port: u16) -> Vec<u8> {
        packet((DEV, NAT), TCP, (DEV_IP, port), (SERVER, 8883), SYN, b"")
    }

    /// `f` with its TTL set to `ttl` (header checksum redone).
    fn with_ttl(mut f: Vec<u8>, ttl: u8) -> Vec<u8> {
        f[22] = ttl;
        f[24..26].fill(0);
        let sum = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        f
    }

    /// Asserts `e` is a well-formed ICMP time exceeded from `from` to
    /// `to`, quoting `about` as it arrived.
    fn assert_time_exceeded(e: &[u8], from: Ipv4Addr, to: Ipv4Addr, about: &[u8]) {
        assert_eq!(be16(e, 12), ETH_IPV4);
        assert_eq!((ip_at(e, 26), ip_at(e, 30)), (from, to));
        assert_eq!(e[23], 1, "ICMP");
        assert_eq!((e[34], e[35]), (11, 0), "time exceeded in transit");
        assert_eq!(checksum(&e[14..34]), 0, "IPv4 header checksum");
        assert_eq!(checksum(&e[34..]), 0, "ICMP checksum");
        assert_eq!(&e[42..], &about[14..], "the packet quoted as it came");
    }

    #[test]
    fn a_packet_whose_ttl_runs_out_gets_time_exceeded_from_the_nat() {
        let (mut nat, now, mut out) = resolved();
        // From the inside: answered from the inside gateway, no mapping.
        out.clear();
        let late = with_ttl(syn(50001), 1);
        nat.input(Side::Inside, late.clone(), now, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].side, Side::Inside);
        assert_eq!(
            (&out[0].frame[0..6], &out[0].frame[6..12]),
            (&DEV[..], &NAT[..])
        );
        assert_time_exceeded(&out[0].frame, INSIDE_GATEWAY, DEV_IP, &late);
        assert!(nat.by_inside.is_empty(), "no mapping for it");
        // From the outside, to a mapped pool address: answered from that
        // address, back to the hop it came from.
        out.clear();
        nat.input(Side::Inside, syn(50000), now, &mut out);
        let public = ip_at(&out[0].frame, 26);
        out.clear();
        let back = |dst: Ipv4Addr| {
            with_ttl(
                packet(
                    (HOST, NAT),
                    TCP,
                    (SERVER, 8883),
                    (dst, 50000),
                    SYN | ACK,
                    b"",
                ),
                1,
            )
        };
        nat.input(Side::Outside, back(public), now, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].side, Side::Outside);
        assert_eq!(
            (&out[0].frame[0..6], &out[0].frame[6..12]),
            (&HOST[..], &NAT[..])
        );
        assert_time_exceeded(&out[0].frame, public, SERVER, &back(public));
        // To an address that is not the NAT's: nothing.
        out.clear();
        nat.input(
            Side::Outside,
            back(Ipv4Addr::new(10, 77, 0, 250)),
            now,
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        // About an ICMP error: nothing (RFC 1812 4.3.2.7).
        let mut err = with_ttl(syn(50002), 1);
        err[23] = 1;
        err[34] = 3;
        let sum = {
            err[24..26].fill(0);
            checksum(&err[14..34])
        };
        err[24..26].copy_from_slice(&sum.to_be_bytes());
        nat.input(Side::Inside, err, now, &mut out);
        assert!(out.is_empty(), "{out:?}");
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
        let (mut nat, now, mut out) = resolved();
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
        let (mut nat, t0, mut out) = resolved();
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
        let (mut nat, now, mut out) = resolved();
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
        let (mut nat, t0, mut out) = resolved();
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

    /// The proptest case that found the test's own UDP checksum of 0 (a
    /// datagram "without checksum", which the NAT rightly keeps so).
    #[test]
    fn a_udp_checksum_that_computes_to_zero_crosses_both_ways() {
        let (mut nat, now, mut out) = resolved();
        out.clear();
        let payload = [
            167u8, 203, 52, 115, 109, 122, 137, 95, 120, 243, 109, 236, 77,
        ];
        let (sport, dport) = (34949u16, 23269u16);
        let f = packet(
            (DEV, NAT),
            UDP,
            (DEV_IP, sport),
            (SERVER, dport),
            0,
            &payload,
        );
        nat.input(Side::Inside, f, now, &mut out);
        let o = &out[0].frame;
        assert_eq!(l4_checksum(o), 0);
        let (public, port) = (ip_at(o, 26), be16(o, 34));
        out.clear();
        let back = packet(
            (HOST, NAT),
            UDP,
            (SERVER, dport),
            (public, port),
            0,
            &payload,
        );
        assert_eq!(be16(&back, 40), 0xffff, "computed 0, sent as all ones");
        nat.input(Side::Outside, back, now, &mut out);
        let i = &out[0].frame;
        assert_eq!((be16(i, 36), l4_checksum(i)), (sport, 0));
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
            let (mut nat, now, mut out) = resolved();
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

    const DEV2: Mac = [0x02, 0x77, 0, 0, 0, 0x31];
    const DEV2_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 3);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 50);

    /// A frame with an IPv4 packet of `proto` carrying `body` (its
    /// transport bytes, checksums already in), header checksum right.
    #[allow(clippy::too_many_arguments)]
    fn ip_frame(
        eth: (Mac, Mac),
        proto: u8,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ident: u16,
        frag: u16,
        body: &[u8],
    ) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&eth.1);
        f.extend_from_slice(&eth.0);
        f.extend_from_slice(&ETH_IPV4.to_be_bytes());
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&((20 + body.len()) as u16).to_be_bytes());
        f.extend_from_slice(&ident.to_be_bytes());
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, proto, 0, 0]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        let sum = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    /// The TCP/UDP checksum of `segment` between `src` and `dst` (0 when
    /// the stored one is right).
    fn pseudo_check(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
        let mut p = Vec::new();
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(segment.len() as u16).to_be_bytes());
        p.extend_from_slice(segment);
        checksum(&p)
    }

    /// A TCP (SYN) or UDP segment with its checksum, or an ICMP echo
    /// request (`sport` its identifier) for `proto` ICMP.
    fn segment(proto: u8, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), data: &[u8]) -> Vec<u8> {
        let mut s = Vec::new();
        match proto {
            TCP => {
                s.extend_from_slice(&src.1.to_be_bytes());
                s.extend_from_slice(&dst.1.to_be_bytes());
                s.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, SYN, 0x10, 0, 0, 0, 0, 0]);
            }
            UDP => {
                s.extend_from_slice(&src.1.to_be_bytes());
                s.extend_from_slice(&dst.1.to_be_bytes());
                s.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
                s.extend_from_slice(&[0, 0]);
            }
            _ => return icmp(ECHO, 0, &[src.1.to_be_bytes(), [0, 1]].concat(), data),
        }
        s.extend_from_slice(data);
        let sum = pseudo_check(proto, src.0, dst.0, &s);
        let at = if proto == TCP { 16 } else { 6 };
        s[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        s
    }

    /// An ICMP message: type, code, the 4 bytes after the checksum, data.
    fn icmp(ty: u8, code: u8, rest: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = vec![ty, code, 0, 0];
        m.extend_from_slice(rest);
        m.extend_from_slice(data);
        let sum = checksum(&m);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        m
    }

    /// The IPv4 packet of a frame (without Ethernet padding).
    fn ip_of(f: &[u8]) -> &[u8] {
        &f[14..14 + usize::from(be16(f, 16))]
    }

    /// Checks the IPv4 header and the ICMP checksums of an ICMP frame.
    fn icmp_sound(f: &[u8]) -> bool {
        let ip = ip_of(f);
        checksum(&ip[..20]) == 0 && checksum(&ip[20..]) == 0
    }

    /// A NAT whose outside neighbours (server, router) are known.
    fn ready_nat(now: Instant) -> Nat {
        let mut nat = nat();
        let mut out = Vec::new();
        arp_reply(&mut nat, now, &mut out);
        let mut n = arp_frame_as(HOST, 2, NAT, ROUTER, NAT, nat.pool()[0]);
        n[22..28].copy_from_slice(&[0x0a, 0, 0, 0, 0, 2]);
        n[6..12].copy_from_slice(&[0x0a, 0, 0, 0, 0, 2]);
        nat.input(Side::Outside, n, now, &mut out);
        nat
    }

    /// Sends one frame in and returns what came out.
    fn cross(nat: &mut Nat, side: Side, f: Vec<u8>, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        nat.input(side, f, now, &mut out);
        out
    }

    fn echo_frame(
        eth: (Mac, Mac),
        ty: u8,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        id: u16,
        data: &[u8],
    ) -> Vec<u8> {
        let body = icmp(ty, 0, &[id.to_be_bytes(), [0, 7]].concat(), data);
        ip_frame(eth, ICMP, src, dst, 0x4242, 0x4000, &body)
    }

    #[test]
    fn echo_is_mapped_by_identifier_and_expires_after_a_minute() {
        let t0 = Instant::now();
        let mut nat = ready_nat(t0);
        // Two hosts ping the server with the same identifier.
        let a = echo_frame((DEV, NAT), ECHO, DEV_IP, SERVER, 77, b"ping");
        let o = cross(&mut nat, Side::Inside, a, t0);
        assert_eq!(o.len(), 1);
        assert!(icmp_sound(&o[0].frame));
        let pa = ip_at(&o[0].frame, 26);
        assert!(nat.pool().contains(&pa));
        assert_eq!(be16(&o[0].frame, 38), 77, "identifier kept when free");
        let b = echo_frame((DEV2, NAT), ECHO, DEV2_IP, SERVER, 77, b"ping");
        let o = cross(&mut nat, Side::Inside, b, t0);
        let (pb, idb) = (ip_at(&o[0].frame, 26), be16(&o[0].frame, 38));
        assert!(icmp_sound(&o[0].frame));
        assert!(
            pb != pa || idb != 77,
            "two mappings never share (address, id)"
        );
        let m = nat.mappings();
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|m| m.protocol == "icmp"), "{m:?}");
        // Each reply goes back to its own host with its own identifier.
        for (public, id, mac, host) in [(pa, 77, DEV, DEV_IP), (pb, idb, DEV2, DEV2_IP)] {
            let r = echo_frame((HOST, NAT), ECHO_REPLY, SERVER, public, id, b"ping");
            let o = cross(&mut nat, Side::Outside, r, t0 + Duration::from_secs(1));
            assert_eq!(o.len(), 1);
            assert_eq!(o[0].side, Side::Inside);
            assert_eq!(&o[0].frame[0..6], &mac);
            assert_eq!(ip_at(&o[0].frame, 30), host);
            assert_eq!(be16(&o[0].frame, 38), 77);
            assert!(icmp_sound(&o[0].frame));
        }
        // A ping from outside to a pool address, or a reply with an
        // unknown identifier, gets nothing.
        let probe = echo_frame((HOST, NAT), ECHO, SERVER, pa, 77, b"");
        assert!(cross(&mut nat, Side::Outside, probe, t0).is_empty());
        let stray = echo_frame((HOST, NAT), ECHO_REPLY, SERVER, pa, 78, b"");
        assert!(cross(&mut nat, Side::Outside, stray, t0).is_empty());
        // Idle for the query timeout (from the last reply): gone.
        let mut out = Vec::new();
        nat.poll(t0 + ICMP_TIMEOUT, &mut out);
        assert_eq!(nat.mappings().len(), 2, "renewed by the replies");
        nat.poll(t0 + Duration::from_secs(1) + ICMP_TIMEOUT, &mut out);
        assert!(nat.mappings().is_empty());
        let late = echo_frame((HOST, NAT), ECHO_REPLY, SERVER, pa, 77, b"ping");
        assert!(cross(&mut nat, Side::Outside, late, t0 + ICMP_TIMEOUT * 2).is_empty());
    }

    #[test]
    fn errors_about_a_flow_go_back_inside_and_renew_nothing() {
        let t0 = Instant::now();
        let mut nat = ready_nat(t0);
        let d = packet((DEV, NAT), UDP, (DEV_IP, 40000), (SERVER, 53), 0, b"query");
        let sent = cross(&mut nat, Side::Inside, d.clone(), t0)[0]
            .frame
            .clone();
        let (public, port) = (ip_at(&sent, 26), be16(&sent, 34));
        // A router on the way says port unreachable, quoting 28 bytes.
        let quote = &ip_of(&sent)[..28];
        let body = icmp(UNREACHABLE, 3, &[0; 4], quote);
        let e = ip_frame((HOST, NAT), ICMP, ROUTER, public, 9, 0, &body);
        let o = cross(&mut nat, Side::Inside, e.clone(), t0);
        assert!(
            o.is_empty(),
            "an outside error sent from the inside side is no flow's"
        );
        let o = cross(
            &mut nat,
            Side::Outside,
            e.clone(),
            t0 + Duration::from_secs(100),
        );
        assert_eq!(o.len(), 1);
        let f = &o[0].frame;
        assert_eq!(o[0].side, Side::Inside);
        assert_eq!(&f[0..6], &DEV);
        assert_eq!(ip_at(f, 26), ROUTER);
        assert_eq!(ip_at(f, 30), DEV_IP);
        assert!(icmp_sound(f));
        let q = &ip_of(f)[28..];
        assert_eq!(ip_at(q, 12), DEV_IP, "quoted source translated back");
        assert_eq!(be16(q, 20), 40000);
        assert_eq!(checksum(&q[..20]), 0, "quoted header checksum");
        // The quoted UDP checksum is the one the host sent.
        assert_eq!(be16(q, 26), be16(&d, 40));
        // A broken checksum, an unknown flow, or a quote whose source is
        // not the error's destination: dropped.
        let mut bad = e.clone();
        bad[40] ^= 1;
        assert!(cross(&mut nat, Side::Outside, bad, t0).is_empty());
        let mut other = quote.to_vec();
        other[22..24].copy_from_slice(&54u16.to_be_bytes());
        let body = icmp(UNREACHABLE, 3, &[0; 4], &other);
        let e2 = ip_frame((HOST, NAT), ICMP, ROUTER, public, 9, 0, &body);
        assert!(cross(&mut nat, Side::Outside, e2, t0).is_empty());
        let other_pool = *nat.pool().iter().find(|a| **a != public).unwrap();
        let e3 = ip_frame(
            (HOST, NAT),
            ICMP,
            ROUTER,
            other_pool,
            9,
            0,
            &icmp(UNREACHABLE, 3, &[0; 4], quote),
        );
        assert!(cross(&mut nat, Side::Outside, e3, t0).is_empty());
        // The error at 100 s renewed nothing: the mapping ends at 300 s.
        let mut out = Vec::new();
        nat.poll(t0 + UDP_TIMEOUT, &mut out);
        assert!(nat.mappings().is_empty());
        let _ = port;
    }

    #[test]
    fn an_inside_error_leaves_from_the_pool_address() {
        let t0 = Instant::now();
        let mut nat = ready_nat(t0);
        let d = packet((DEV, NAT), UDP, (DEV_IP, 40000), (SERVER, 53), 0, b"q");
        let sent = cross(&mut nat, Side::Inside, d, t0)[0].frame.clone();
        let (public, port) = (ip_at(&sent, 26), be16(&sent, 34));
        let answer = packet((HOST, NAT), UDP, (SERVER, 53), (public, port), 0, b"late");
        let got = cross(&mut nat, Side::Outside, answer, t0)[0].frame.clone();
        // The host has closed its socket: port unreachable, quoting all.
        let body = icmp(UNREACHABLE, 3, &[0; 4], ip_of(&got));
        let e = ip_frame((DEV, NAT), ICMP, DEV_IP, SERVER, 5, 0, &body);
        let o = cross(&mut nat, Side::Inside, e, t0);
        assert_eq!(o.len(), 1);
        let f = &o[0].frame;
        assert_eq!(o[0].side, Side::Outside);
        assert_eq!(&f[0..6], &HOST);
        assert_eq!(ip_at(f, 26), public);
        assert!(icmp_sound(f));
        let q = &ip_of(f)[28..];
        assert_eq!((ip_at(q, 16), be16(q, 22)), (public, port));
        assert_eq!(checksum(&q[..20]), 0);
        assert_eq!(
            pseudo_check(UDP, SERVER, public, &q[20..]),
            0,
            "whole quoted datagram sound"
        );
    }

    #[test]
    fn fragments_whose_first_never_comes_are_dropped_in_time() {
        let t0 = Instant::now();
        let mut nat = ready_nat(t0);
        let later = ip_frame((DEV, NAT), UDP, DEV_IP, SERVER, 99, 0x0002, &[0; 16]);
        assert!(cross(&mut nat, Side::Inside, later, t0).is_empty());
        let before = nat.dropped;
        let mut out = Vec::new();
        let next = nat.poll(t0 + Duration::from_secs(1), &mut out);
        assert_eq!(next, Some(t0 + FRAGMENT_TIMEOUT));
        nat.poll(t0 + FRAGMENT_TIMEOUT, &mut out);
        assert_eq!(nat.dropped, before + 1);
        assert!(out.is_empty());
        // At most FRAGMENTS_HELD wait per datagram.
        for i in 0..FRAGMENTS_HELD as u16 + 3 {
            let f = ip_frame((DEV, NAT), UDP, DEV_IP, SERVER, 7, 1 + i, &[0; 8]);
            nat.input(Side::Inside, f, t0, &mut out);
        }
        assert_eq!(nat.dropped, before + 4);
    }

    /// Splits the IP payload `body` into fragments of `chunk` 8-byte
    /// units (the last shorter), each a frame.
    fn fragments(
        eth: (Mac, Mac),
        proto: u8,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        body: &[u8],
        chunk: usize,
    ) -> Vec<Vec<u8>> {
        let step = chunk * 8;
        let n = body.len().div_ceil(step);
        (0..n)
            .map(|i| {
                let part = &body[i * step..body.len().min((i + 1) * step)];
                let more = if i + 1 < n { 0x2000 } else { 0 };
                ip_frame(
                    eth,
                    proto,
                    src,
                    dst,
                    0x5151,
                    more | (i * chunk) as u16,
                    part,
                )
            })
            .collect()
    }

    /// Puts fragment frames back together: (source, destination, payload).
    fn reassemble(frames: &[Vec<u8>]) -> (Ipv4Addr, Ipv4Addr, Vec<u8>) {
        let mut parts: Vec<(usize, &[u8])> = frames
            .iter()
            .map(|f| (usize::from(be16(f, 20) & 0x1fff) * 8, &ip_of(f)[20..]))
            .collect();
        parts.sort_by_key(|p| p.0);
        let mut body = Vec::new();
        for (at, p) in parts {
            assert_eq!(at, body.len(), "fragments contiguous");
            body.extend_from_slice(p);
        }
        (ip_at(&frames[0], 26), ip_at(&frames[0], 30), body)
    }

    proptest::proptest! {
        /// Any IPv4 packet with a sound header (any protocol, fragment
        /// field and body; ICMP errors quoting anything) from either side:
        /// no panic, and what crosses keeps a sound header.
        #[test]
        fn any_ip_packet_is_handled(
            proto in proptest::sample::select(vec![ICMP, TCP, UDP, 47]),
            frag in proptest::prelude::any::<u16>(),
            ty in proptest::sample::select(vec![ECHO, ECHO_REPLY, UNREACHABLE, TIME_EXCEEDED, PARAMETER_PROBLEM, 5]),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            inside in proptest::prelude::any::<bool>(),
        ) {
            let now = Instant::now();
            let mut nat = ready_nat(now);
            let d = packet((DEV, NAT), UDP, (DEV_IP, 40000), (SERVER, 53), 0, b"q");
            let public = ip_at(&cross(&mut nat, Side::Inside, d, now)[0].frame, 26);
            let body = if proto == ICMP { icmp(ty, 0, &[0; 4], &body) } else { body };
            let f = if inside {
                ip_frame((DEV, NAT), proto, DEV_IP, SERVER, 1, frag, &body)
            } else {
                ip_frame((HOST, NAT), proto, SERVER, public, 1, frag, &body)
            };
            let side = if inside { Side::Inside } else { Side::Outside };
            for o in cross(&mut nat, side, f, now) {
                proptest::prop_assert_eq!(checksum(&ip_of(&o.frame)[..20]), 0);
            }
            let mut out = Vec::new();
            nat.poll(now + FRAGMENT_TIMEOUT, &mut out);
        }

        /// Echo requests and replies of any identifier and data cross
        /// with right checksums.
        #[test]
        fn echo_checksums_stay_right(
            id in proptest::prelude::any::<u16>(),
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let now = Instant::now();
            let mut nat = ready_nat(now);
            let o = cross(&mut nat, Side::Inside, echo_frame((DEV, NAT), ECHO, DEV_IP, SERVER, id, &data), now);
            proptest::prop_assert_eq!(o.len(), 1);
            proptest::prop_assert!(icmp_sound(&o[0].frame));
            let (public, oid) = (ip_at(&o[0].frame, 26), be16(&o[0].frame, 38));
            let r = echo_frame((HOST, NAT), ECHO_REPLY, SERVER, public, oid, &data);
            let o = cross(&mut nat, Side::Outside, r, now);
            proptest::prop_assert_eq!(o.len(), 1);
            proptest::prop_assert!(icmp_sound(&o[0].frame));
            proptest::prop_assert_eq!(be16(&o[0].frame, 38), id);
            proptest::prop_assert_eq!(ip_at(&o[0].frame, 30), DEV_IP);
        }

        /// An ICMP error about any TCP, UDP or echo flow, quoting any
        /// length, translates back inside with every checksum right, and
        /// the quoted packet is the host's own (but for its TTL).
        #[test]
        fn errors_translate_back_with_right_checksums(
            proto in proptest::sample::select(vec![TCP, UDP, ICMP]),
            sport in 1u16..,
            dport in 1u16..,
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48),
            // Quotes end on a 16-bit boundary: one that cuts the TCP
            // checksum in half leaves a byte no NAT can update.
            quote_words in 0usize..40,
            kind in proptest::sample::select(vec![(UNREACHABLE, 3), (UNREACHABLE, 4), (TIME_EXCEEDED, 0), (PARAMETER_PROBLEM, 0)]),
        ) {
            let now = Instant::now();
            let mut nat = ready_nat(now);
            let dport = if proto == ICMP { 0 } else { dport };
            let seg = segment(proto, (DEV_IP, sport), (SERVER, dport), &data);
            let sent_in = ip_frame((DEV, NAT), proto, DEV_IP, SERVER, 0x1111, 0, &seg);
            let o = cross(&mut nat, Side::Inside, sent_in.clone(), now);
            proptest::prop_assert_eq!(o.len(), 1);
            let sent = o[0].frame.clone();
            let public = ip_at(&sent, 26);
            let ip = ip_of(&sent);
            let quote = &ip[..ip.len().min(28 + 2 * quote_words)];
            let body = icmp(kind.0, kind.1, &[0; 4], quote);
            let e = ip_frame((HOST, NAT), ICMP, ROUTER, public, 3, 0, &body);
            let o = cross(&mut nat, Side::Outside, e, now);
            proptest::prop_assert_eq!(o.len(), 1);
            let f = &o[0].frame;
            proptest::prop_assert!(icmp_sound(f));
            proptest::prop_assert_eq!(ip_at(f, 30), DEV_IP);
            let q = &ip_of(f)[28..];
            proptest::prop_assert_eq!(checksum(&q[..20]), 0);
            // The host's packet as it sent it, but for TTL and header sum.
            let mine = ip_of(&sent_in);
            proptest::prop_assert_eq!(q.len(), quote.len());
            proptest::prop_assert_eq!(&q[..8], &mine[..8]);
            proptest::prop_assert_eq!(&q[12..], &mine[12..q.len()]);
        }

        /// A UDP datagram or a ping split in fragments, in any order (the
        /// first fragment anywhere), crosses out and its answer in, each
        /// fragment with a right header checksum and the reassembled
        /// datagram with a right transport checksum.
        #[test]
        fn fragments_cross_in_any_order(
            udp in proptest::prelude::any::<bool>(),
            // At most FRAGMENTS_HELD fragments (8-byte ones: 14).
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 24..100),
            chunk in 1usize..6,
            order in proptest::collection::vec(proptest::prelude::any::<u16>(), 64),
        ) {
            let now = Instant::now();
            let mut nat = ready_nat(now);
            let proto = if udp { UDP } else { ICMP };
            let seg = segment(proto, (DEV_IP, 40000), (SERVER, 7), &data);
            let mut frags = fragments((DEV, NAT), proto, DEV_IP, SERVER, &seg, chunk);
            let n = frags.len();
            // A permutation from `order`.
            let mut keyed: Vec<(u16, Vec<u8>)> = frags.drain(..).enumerate().map(|(i, f)| (order[i % 64].wrapping_add(i as u16), f)).collect();
            keyed.sort_by_key(|k| k.0);
            let mut out = Vec::new();
            for (_, f) in keyed {
                nat.input(Side::Inside, f, now, &mut out);
            }
            proptest::prop_assert_eq!(out.len(), n);
            let frames: Vec<Vec<u8>> = out.iter().map(|o| o.frame.clone()).collect();
            for f in &frames {
                proptest::prop_assert_eq!(checksum(&ip_of(f)[..20]), 0);
            }
            let (src, dst, body) = reassemble(&frames);
            proptest::prop_assert!(nat.pool().contains(&src));
            proptest::prop_assert_eq!(dst, SERVER);
            let id_or_port = be16(&body, if udp { 0 } else { 4 });
            if udp {
                proptest::prop_assert_eq!(pseudo_check(UDP, src, dst, &body), 0);
            } else {
                proptest::prop_assert_eq!(checksum(&body), 0);
            }
            // The answer, fragmented the same way, comes back in.
            let answer = if udp {
                segment(UDP, (SERVER, 7), (src, id_or_port), &data)
            } else {
                icmp(ECHO_REPLY, 0, &[id_or_port.to_be_bytes(), [0, 1]].concat(), &data)
            };
            let mut back = fragments((HOST, NAT), proto, SERVER, src, &answer, chunk);
            back.reverse();
            out.clear();
            for f in back {
                nat.input(Side::Outside, f, now, &mut out);
            }
            proptest::prop_assert_eq!(out.len(), n);
            let frames: Vec<Vec<u8>> = out.iter().map(|o| o.frame.clone()).collect();
            proptest::prop_assert!(frames.iter().all(|f| checksum(&ip_of(f)[..20]) == 0 && f[0..6] == DEV));
            let (src2, dst2, body) = reassemble(&frames);
            proptest::prop_assert_eq!((src2, dst2), (SERVER, DEV_IP));
            if udp {
                proptest::prop_assert_eq!(be16(&body, 2), 40000);
                proptest::prop_assert_eq!(pseudo_check(UDP, src2, dst2, &body), 0);
            } else {
                proptest::prop_assert_eq!(be16(&body, 4), 40000);
                proptest::prop_assert_eq!(checksum(&body), 0);
            }
        }
    }
}
