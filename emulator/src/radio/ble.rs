//! Bluetooth Low Energy on the site's 2.4 GHz band: the link layer the
//! Data Logger's BLE secure channel (seed 004) is carried on, and its
//! sniffer (issue 12 item 7; docs/radio.md "BLE", docs/datalogger.md).
//!
//! Contract:
//! - A separate PHY from the IEEE 802.15.4 [`super::Medium`]: LE 1M
//!   (1 Mbit/s, 8 µs an octet, preamble 1 octet), 40 channels of 2 MHz
//!   ([`channel_mhz`]: advertising channels 37, 38, 39 at 2402, 2426 and
//!   2480 MHz). It shares the site's virtual clock: callers give the
//!   virtual time (since the Unix epoch) an operation starts at.
//! - [`BleAir`] is plain state: [`BleAir::connect`] plays the advertising
//!   event of the peripheral that the central (scanning channel 37)
//!   answers: ADV_IND with its name on channel 37, CONNECT_IND [`T_IFS`]
//!   after it (the advertiser stops there: no ADV_IND on 38 and 39), then the first connection events: LL_LENGTH_REQ/RSP
//!   (251-octet PDUs) and the ATT MTU exchange (247). Data travels as the
//!   byte stream of a GATT serial service ([NF] handles 0x0012/0x0015):
//!   central to peripheral in ATT Write Commands, peripheral to central in
//!   Handle Value Notifications, at most [`CHUNK`] octets each. Every
//!   connection event (one every [`INTERVAL`]) is one central PDU and the
//!   peripheral's answer [`T_IFS`] after it (an empty PDU when it has
//!   nothing to say), on the data channel of channel selection algorithm
//!   #1 (all 37 data channels used, a hop of 5-16). SN/NESN follow the
//!   acknowledgement scheme (nothing is lost). [`BleAir::terminate`] sends
//!   LL_TERMINATE_IND from either side; the other side acknowledges it.
//! - Packets are `access address | header | payload | CRC-24` (CRC init
//!   0x555555 on advertising channels, the CONNECT_IND's on a
//!   connection), exactly what LINKTYPE_BLUETOOTH_LE_LL (251) holds. A
//!   sniffer ([`BleAir::start_sniffer`]) follows every connection as
//!   Ubertooth or the nRF sniffer do and writes every packet to a pcap
//!   file stamped with virtual time.
//! - Not modelled: propagation, losses and the 802.15.4 jammers (a BLE
//!   packet always arrives), connection supervision timeouts, BLE 5 PHYs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::net::pcap::PcapWriter;

/// pcap link type of BLE link-layer packets.
pub const LINKTYPE_BLUETOOTH_LE_LL: u32 = 251;
/// Access address of the advertising channels.
pub const ADV_ACCESS_ADDRESS: u32 = 0x8E89_BED6;
/// CRC init of the advertising channels.
pub const ADV_CRC_INIT: u32 = 0x55_5555;
/// Inter-frame space.
pub const T_IFS: Duration = Duration::from_micros(150);
/// Connection interval (24 x 1.25 ms).
pub const INTERVAL: Duration = Duration::from_micros(30_000);
/// Octets of the stream one ATT PDU carries (ATT MTU 247 - 3).
pub const CHUNK: usize = 244;
/// Handle the central writes the stream to ([NF]).
pub const WRITE_HANDLE: u16 = 0x0012;
/// Handle the peripheral notifies the stream on ([NF]).
pub const NOTIFY_HANDLE: u16 = 0x0015;

/// A device address, as sent on air (least significant octet first).
pub type Addr = [u8; 6];

/// A random static address (two top bits set) from `seed`.
pub fn address_from_seed(seed: u64) -> Addr {
    let b = seed.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5] | 0xC0]
}

/// Centre frequency of BLE channel `ch` (0-39), MHz.
pub fn channel_mhz(ch: u8) -> u16 {
    match ch {
        37 => 2402,
        38 => 2426,
        39 => 2480,
        0..=10 => 2404 + 2 * u16::from(ch),
        _ => 2428 + 2 * (u16::from(ch) - 11),
    }
}

/// Time on air of a packet with `pdu` octets of PDU (header included).
pub fn airtime(pdu: usize) -> Duration {
    Duration::from_micros(8 * (1 + 4 + pdu as u64 + 3))
}

/// The BLE CRC-24 (polynomial 0x00065B, transmitted LSB first) of `pdu`
/// with `init`; the three octets as they are sent.
pub fn crc24(init: u32, pdu: &[u8]) -> [u8; 3] {
    // The register holds the CRC bit-reversed, so that bytes are fed LSB
    // first and the result comes out in transmission order.
    let mut state = reverse24(init);
    for &byte in pdu {
        let mut cur = byte;
        for _ in 0..8 {
            let next = (state ^ u32::from(cur)) & 1;
            cur >>= 1;
            state >>= 1;
            if next == 1 {
                state |= 1 << 23;
                state ^= 0x5A_6000;
            }
        }
    }
    [state as u8, (state >> 8) as u8, (state >> 16) as u8]
}

fn reverse24(v: u32) -> u32 {
    (v & 0xFF_FFFF).reverse_bits() >> 8
}

/// A whole packet: access address, PDU, CRC.
pub fn packet(aa: u32, crc_init: u32, pdu: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + pdu.len() + 3);
    p.extend_from_slice(&aa.to_le_bytes());
    p.extend_from_slice(pdu);
    p.extend_from_slice(&crc24(crc_init, pdu));
    p
}

/// ADV_IND of `adv` named `name` (flags: general discoverable, no BR/EDR).
pub fn adv_ind(adv: Addr, name: &str) -> Vec<u8> {
    let name = &name.as_bytes()[..name.len().min(31 - 3 - 2)];
    let mut payload = adv.to_vec();
    payload.extend_from_slice(&[0x02, 0x01, 0x06]);
    payload.push(1 + name.len() as u8);
    payload.push(0x09);
    payload.extend_from_slice(name);
    // PDU type 0 (ADV_IND), TxAdd = 1 (random).
    let mut pdu = vec![0x40, payload.len() as u8];
    pdu.extend_from_slice(&payload);
    pdu
}

/// The parameters of a connection (what CONNECT_IND carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkParams {
    pub aa: u32,
    pub crc_init: u32,
    pub hop: u8,
}

/// CONNECT_IND from `init` to `adv`.
pub fn connect_ind(init: Addr, adv: Addr, p: LinkParams) -> Vec<u8> {
    let interval_units = (INTERVAL.as_micros() / 1250) as u16;
    let mut payload = Vec::with_capacity(34);
    payload.extend_from_slice(&init);
    payload.extend_from_slice(&adv);
    payload.extend_from_slice(&p.aa.to_le_bytes());
    payload.extend_from_slice(&p.crc_init.to_le_bytes()[..3]);
    payload.push(2); // WinSize (x 1.25 ms)
    payload.extend_from_slice(&0u16.to_le_bytes()); // WinOffset
    payload.extend_from_slice(&interval_units.to_le_bytes());
    payload.extend_from_slice(&0u16.to_le_bytes()); // latency
    payload.extend_from_slice(&200u16.to_le_bytes()); // timeout: 2 s
    payload.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x1F]); // all 37
    payload.push(p.hop & 0x1F); // SCA 0 (251-500 ppm)
    // PDU type 5, TxAdd = RxAdd = 1.
    let mut pdu = vec![0xC5, payload.len() as u8];
    pdu.extend_from_slice(&payload);
    pdu
}

/// A data-channel PDU.
fn data_pdu(llid: u8, nesn: bool, sn: bool, payload: &[u8]) -> Vec<u8> {
    let h = llid | (u8::from(nesn) << 2) | (u8::from(sn) << 3);
    let mut pdu = vec![h, payload.len() as u8];
    pdu.extend_from_slice(payload);
    pdu
}

/// An L2CAP basic frame on the ATT channel.
fn att(pdu: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + pdu.len());
    v.extend_from_slice(&(pdu.len() as u16).to_le_bytes());
    v.extend_from_slice(&4u16.to_le_bytes());
    v.extend_from_slice(pdu);
    v
}

const LLID_CONTINUE: u8 = 1;
const LLID_START: u8 = 2;
const LLID_CONTROL: u8 = 3;

/// Error codes of LL_TERMINATE_IND.
pub const AUTHENTICATION_FAILURE: u8 = 0x05;
pub const REMOTE_USER_TERMINATED: u8 = 0x13;

/// One connection.
#[derive(Debug, Clone)]
struct Conn {
    params: LinkParams,
    /// Anchor of connection event 0, since the Unix epoch.
    anchor: Duration,
    /// Next connection event.
    event: u64,
    /// Events that carried packets so far (the SN/NESN parity: events
    /// with nothing to say are not played).
    played: u64,
}

/// A packet on the air.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AirPacket {
    /// Start of the packet, virtual time since the Unix epoch.
    pub at: Duration,
    pub channel: u8,
    /// Access address, PDU, CRC.
    pub bytes: Vec<u8>,
}

/// Identifies a connection.
pub type ConnId = u64;

struct Sniffer {
    path: PathBuf,
    writer: PcapWriter,
    packets: u64,
}

/// The BLE side of the air (see the module contract).
#[derive(Default)]
pub struct BleAir {
    conns: HashMap<ConnId, Conn>,
    next: ConnId,
    /// Packets sent so far.
    pub packets: u64,
    sniffer: Option<Sniffer>,
    /// Packets kept when no sniffer runs (tests), at most this many.
    pub keep: usize,
    kept: Vec<AirPacket>,
}

impl std::fmt::Debug for BleAir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BleAir")
            .field("connections", &self.conns.len())
            .field("packets", &self.packets)
            .finish()
    }
}

/// What a sniffer wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BleSnifferInfo {
    pub path: String,
    pub packets: u64,
}

impl BleAir {
    fn emit(&mut self, at: Duration, channel: u8, bytes: Vec<u8>) {
        self.packets += 1;
        if let Some(s) = &mut self.sniffer {
            s.writer.write_at(at, &bytes);
            s.packets += 1;
        }
        if self.kept.len() < self.keep {
            self.kept.push(AirPacket { at, channel, bytes });
        }
    }

    /// Packets kept (see `keep`), taken.
    pub fn take_kept(&mut self) -> Vec<AirPacket> {
        std::mem::take(&mut self.kept)
    }

    /// Starts the sniffer, writing `path` (replacing one running).
    pub fn start_sniffer(&mut self, path: &Path) -> Result<(), String> {
        let writer = PcapWriter::create_linktype(
            path,
            crate::net::pcap::DEFAULT_MAX_BYTES,
            LINKTYPE_BLUETOOTH_LE_LL,
        )
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        self.sniffer = Some(Sniffer {
            path: path.to_path_buf(),
            writer,
            packets: 0,
        });
        Ok(())
    }

    /// Stops the sniffer; what it wrote.
    pub fn stop_sniffer(&mut self) -> Result<BleSnifferInfo, String> {
        let s = self
            .sniffer
            .take()
            .ok_or_else(|| "no BLE sniffer is running".to_string())?;
        Ok(BleSnifferInfo {
            path: s.path.display().to_string(),
            packets: s.packets,
        })
    }

    /// Whether a sniffer runs.
    pub fn sniffing(&self) -> bool {
        self.sniffer.is_some()
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// `central` connects to `peripheral` (advertising as `name`) at `now`
    /// (see the module contract); `seed` draws the access address, CRC
    /// init and hop.
    pub fn connect(
        &mut self,
        now: Duration,
        central: Addr,
        peripheral: Addr,
        name: &str,
        seed: u64,
    ) -> ConnId {
        let id = self.next;
        self.next += 1;
        let r = seed
            .wrapping_add(id.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let params = LinkParams {
            // Bit patterns of the access-address rules: never the
            // advertising one, not all one value.
            aa: (r as u32 & 0x7F7F_7F7F) | 0x0101_0101,
            crc_init: (r >> 32) as u32 & 0xFF_FFFF,
            hop: 5 + ((r >> 56) % 12) as u8,
        };
        let adv = adv_ind(peripheral, name);
        self.emit(now, 37, packet(ADV_ACCESS_ADDRESS, ADV_CRC_INIT, &adv));
        // The central was scanning on 37: it answers at once.
        let req = connect_ind(central, peripheral, params);
        let at = now + airtime(adv.len()) + T_IFS;
        self.emit(at, 37, packet(ADV_ACCESS_ADDRESS, ADV_CRC_INIT, &req));
        let t = at + airtime(req.len());
        // transmitWindowDelay 1.25 ms, then the window (offset 0).
        let anchor = t + Duration::from_micros(1250 + 1250);
        self.conns.insert(
            id,
            Conn {
                params,
                anchor,
                event: 0,
                played: 0,
            },
        );
        let mut len = vec![0x14];
        for v in [251u16, 2120, 251, 2120] {
            len.extend_from_slice(&v.to_le_bytes());
        }
        let mut rsp = len.clone();
        rsp[0] = 0x15;
        self.event(id, now, (LLID_CONTROL, len), (LLID_CONTROL, rsp));
        let mtu = att(&[0x02, 247, 0]);
        let mtu_rsp = att(&[0x03, 247, 0]);
        self.event(id, now, (LLID_START, mtu), (LLID_START, mtu_rsp));
        id
    }

    /// One connection event at or after `now`: the central's PDU and the
    /// peripheral's answer (`(llid, payload)`; an empty payload with
    /// LLID 1 is an empty PDU).
    fn event(&mut self, id: ConnId, now: Duration, central: (u8, Vec<u8>), periph: (u8, Vec<u8>)) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        // The first event at or after `now`.
        if now > c.anchor {
            let due = (now - c.anchor).as_micros().div_ceil(INTERVAL.as_micros()) as u64;
            c.event = c.event.max(due);
        }
        let k = c.event;
        c.event += 1;
        // Channel selection #1 from unmapped channel 0, all channels used.
        let ch = ((u64::from(c.params.hop) * (k + 1)) % 37) as u8;
        let at = c.anchor + INTERVAL * k as u32;
        let (aa, crc) = (c.params.aa, c.params.crc_init);
        let odd = c.played % 2 == 1;
        c.played += 1;
        // Nothing is lost: each side's SN alternates per event, and its
        // NESN acknowledges the other's last packet.
        let m = data_pdu(central.0, odd, odd, &central.1);
        let s = data_pdu(periph.0, !odd, odd, &periph.1);
        let t2 = at + airtime(m.len()) + T_IFS;
        self.emit(at, ch, packet(aa, crc, &m));
        self.emit(t2, ch, packet(aa, crc, &s));
    }

    /// The central writes `bytes` of the stream to the peripheral.
    pub fn write(&mut self, id: ConnId, now: Duration, bytes: &[u8]) {
        for chunk in bytes.chunks(CHUNK) {
            let mut pdu = vec![0x52];
            pdu.extend_from_slice(&WRITE_HANDLE.to_le_bytes());
            pdu.extend_from_slice(chunk);
            self.event(
                id,
                now,
                (LLID_START, att(&pdu)),
                (LLID_CONTINUE, Vec::new()),
            );
        }
    }

    /// The peripheral notifies `bytes` of the stream to the central.
    pub fn notify(&mut self, id: ConnId, now: Duration, bytes: &[u8]) {
        for chunk in bytes.chunks(CHUNK) {
            let mut pdu = vec![0x1B];
            pdu.extend_from_slice(&NOTIFY_HANDLE.to_le_bytes());
            pdu.extend_from_slice(chunk);
            self.event(
                id,
                now,
                (LLID_CONTINUE, Vec::new()),
                (LLID_START, att(&pdu)),
            );
        }
    }

    /// One side ends the connection with LL_TERMINATE_IND (`reason`); the
    /// other acknowledges it. Unknown connections are ignored.
    pub fn terminate(&mut self, id: ConnId, now: Duration, by_peripheral: bool, reason: u8) {
        let ind = (LLID_CONTROL, vec![0x02, reason]);
        let empty = (LLID_CONTINUE, Vec::new());
        if by_peripheral {
            self.event(id, now, empty, ind);
            // The central acknowledges in the next event; the link is gone.
            self.event(
                id,
                now,
                (LLID_CONTINUE, Vec::new()),
                (LLID_CONTINUE, Vec::new()),
            );
        } else {
            self.event(id, now, ind, empty);
        }
        self.conns.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHONE: Addr = [1, 2, 3, 4, 5, 0xC6];
    const LOGGER: Addr = [0x11, 0x22, 0x33, 0x44, 0x55, 0xE6];

    #[test]
    fn crc_changes_with_every_bit() {
        // (tshark checks the CRCs of real captures: tests/datalogger_e2e.rs.)
        let pdu = [0x42, 0x06, 0x41, 0x3c, 0x0d, 0x71, 0x1b, 0xc3];
        let c = crc24(ADV_CRC_INIT, &pdu);
        let mut other = pdu;
        other[3] ^= 1;
        assert_ne!(c, crc24(ADV_CRC_INIT, &other));
        assert_eq!(reverse24(0x55_5555), 0xAA_AAAA);
        assert_eq!(reverse24(0x80_0000), 1);
    }

    #[test]
    fn channels_and_airtime() {
        assert_eq!(channel_mhz(37), 2402);
        assert_eq!(channel_mhz(0), 2404);
        assert_eq!(channel_mhz(10), 2424);
        assert_eq!(channel_mhz(38), 2426);
        assert_eq!(channel_mhz(11), 2428);
        assert_eq!(channel_mhz(36), 2478);
        assert_eq!(channel_mhz(39), 2480);
        // An empty data PDU: 80 µs.
        assert_eq!(airtime(2), Duration::from_micros(80));
    }

    #[test]
    fn a_connection_carries_the_stream_in_order() {
        let mut air = BleAir {
            keep: 1000,
            ..Default::default()
        };
        let t0 = Duration::from_secs(1_770_000_000);
        let id = air.connect(t0, PHONE, LOGGER, "dl1", 7);
        let stream: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
        air.write(id, t0, &stream);
        air.notify(id, t0, b"answer");
        air.terminate(id, t0, true, AUTHENTICATION_FAILURE);
        assert_eq!(air.connections(), 0);
        let p = air.take_kept();
        // ADV_IND, CONNECT_IND, 2 setup events, 3 writes, 1 notification,
        // 2 termination events: 2 packets an event.
        assert_eq!(p.len(), 2 + 2 * (2 + 3 + 1 + 2));
        assert_eq!(p[0].channel, 37);
        assert_eq!(&p[0].bytes[..4], &ADV_ACCESS_ADDRESS.to_le_bytes());
        assert_eq!(p[1].bytes[4] & 0x0F, 5, "CONNECT_IND");
        // Time goes forward; data channels are 0-36.
        assert!(p.windows(2).all(|w| w[0].at < w[1].at));
        assert!(p[2..].iter().all(|x| x.channel < 37));
        // The writes carry the stream in order, 244 octets at most each.
        let mut got = Vec::new();
        for x in &p[2..] {
            let pdu = &x.bytes[4..x.bytes.len() - 3];
            // header, length, L2CAP length and CID, ATT opcode, handle.
            if pdu[0] & 3 == 2 && pdu.len() > 9 && pdu[6] == 0x52 {
                got.extend_from_slice(&pdu[9..]);
            }
        }
        assert_eq!(got, stream);
        // The last but one event has the peripheral's LL_TERMINATE_IND.
        let n = p.len();
        let term = &p[n - 3].bytes;
        assert_eq!(term[4] & 3, 3, "a control PDU");
        assert_eq!(&term[5..8], &[2, 0x02, AUTHENTICATION_FAILURE][..]);
        // The CRC of every data packet is the connection's.
        let aa = u32::from_le_bytes(p[2].bytes[..4].try_into().unwrap());
        assert_ne!(aa, ADV_ACCESS_ADDRESS);
    }

    proptest::proptest! {
        /// Any stream in either direction arrives whole and in order, in
        /// PDUs that fit the negotiated 251 octets, with right lengths.
        #[test]
        fn any_stream_is_carried_whole(
            stream in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1200),
            up in proptest::prelude::any::<bool>(),
        ) {
            let mut air = BleAir { keep: 10_000, ..Default::default() };
            let t0 = Duration::from_secs(100);
            let id = air.connect(t0, PHONE, LOGGER, "x", 3);
            if up {
                air.write(id, t0, &stream);
            } else {
                air.notify(id, t0, &stream);
            }
            let op = if up { 0x52 } else { 0x1B };
            let mut got = Vec::new();
            for p in air.take_kept().iter().skip(2) {
                let pdu = &p.bytes[4..p.bytes.len() - 3];
                proptest::prop_assert!(pdu.len() <= 2 + 251);
                proptest::prop_assert_eq!(usize::from(pdu[1]), pdu.len() - 2);
                if pdu.len() > 9 && pdu[6] == op {
                    got.extend_from_slice(&pdu[9..]);
                }
            }
            proptest::prop_assert_eq!(got, stream);
        }
    }

    #[test]
    fn a_sniffer_writes_link_type_251() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ble.pcap");
        let mut air = BleAir::default();
        air.start_sniffer(&path).unwrap();
        let id = air.connect(Duration::from_secs(5), PHONE, LOGGER, "dl1", 1);
        air.terminate(id, Duration::from_secs(6), false, REMOTE_USER_TERMINATED);
        let info = air.stop_sniffer().unwrap();
        assert_eq!(info.packets, 2 + 2 * 3);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(u32::from_le_bytes(data[20..24].try_into().unwrap()), 251);
        assert!(air.stop_sniffer().is_err());
    }
}
