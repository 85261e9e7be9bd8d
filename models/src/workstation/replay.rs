//! Replay of captured frames: the Workstation re-sends frames from a
//! segment's capture buffer (the last `switch::CAPTURE_FRAMES` frames the
//! switch forwarded) out of its own NIC, byte for byte, like `tcpreplay`.
//!
//! Contract:
//! - TAP mode only (host mode has no wire): the error says so.
//! - A [`Filter`] is a conjunction of terms, a small subset of the pcap
//!   filter language: `tcp`, `udp`, `arp`, `icmp`, `ip`, `port N`,
//!   `src port N`, `dst port N`, `host IP`, `src IP` / `src host IP`,
//!   `dst IP` / `dst host IP`, `ether src MAC`, `ether dst MAC`,
//!   `ether host MAC`, each optionally preceded by `not`, joined by `and`
//!   (or `&&`). An empty filter matches every frame. Parsing is total: a
//!   bad filter is an error naming the word that was wrong.
//! - The most recent `count` matching frames (1-1024) are sent, oldest
//!   first. Frames keep their source MAC: the switch sees them coming from
//!   the Workstation's port, as it would see a spoofing attacker.

use std::net::Ipv4Addr;

use fieldtwin_emulator::attack::{AttackEnv, AttackResult};
use fieldtwin_emulator::net::Stack;

/// Most frames one replay sends.
pub const MAX_REPLAY: u32 = 1024;

/// One test on a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    Tcp,
    Udp,
    Arp,
    Icmp,
    Ip,
    Port(u16),
    SrcPort(u16),
    DstPort(u16),
    Host(Ipv4Addr),
    SrcHost(Ipv4Addr),
    DstHost(Ipv4Addr),
    EtherSrc([u8; 6]),
    EtherDst([u8; 6]),
    EtherHost([u8; 6]),
}

/// A parsed filter: every term must hold (`bool` = negated).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter(pub Vec<(bool, Test)>);

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *m = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

impl Filter {
    pub fn parse(text: &str) -> Result<Self, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut terms = Vec::new();
        let mut i = 0;
        let help = "use tcp, udp, arp, icmp, ip, port N, src|dst port N, host IP, src|dst [host] IP, ether src|dst|host MAC, not TERM, joined by and";
        let err = |w: &str| format!("filter {text:?}: unexpected {w:?}; {help}");
        let missing = |w: &str| format!("filter {text:?}: {w:?} needs a value; {help}");
        while i < words.len() {
            let mut negated = false;
            while words.get(i) == Some(&"not") || words.get(i) == Some(&"!") {
                negated = !negated;
                i += 1;
            }
            let w = *words.get(i).ok_or_else(|| missing("not"))?;
            let arg = |k: usize| words.get(i + k).copied().ok_or_else(|| missing(w));
            let port = |s: &str| s.parse::<u16>().map_err(|_| err(s));
            let ip = |s: &str| s.parse::<Ipv4Addr>().map_err(|_| err(s));
            let mac = |s: &str| parse_mac(s).ok_or_else(|| err(s));
            let (test, used) = match w {
                "tcp" => (Test::Tcp, 1),
                "udp" => (Test::Udp, 1),
                "arp" => (Test::Arp, 1),
                "icmp" => (Test::Icmp, 1),
                "ip" => (Test::Ip, 1),
                "port" => (Test::Port(port(arg(1)?)?), 2),
                "host" => (Test::Host(ip(arg(1)?)?), 2),
                "src" | "dst" => {
                    let src = w == "src";
                    match arg(1)? {
                        "port" => {
                            let p = port(arg(2)?)?;
                            (
                                if src {
                                    Test::SrcPort(p)
                                } else {
                                    Test::DstPort(p)
                                },
                                3,
                            )
                        }
                        "host" => {
                            let a = ip(arg(2)?)?;
                            (
                                if src {
                                    Test::SrcHost(a)
                                } else {
                                    Test::DstHost(a)
                                },
                                3,
                            )
                        }
                        other => {
                            let a = ip(other)?;
                            (
                                if src {
                                    Test::SrcHost(a)
                                } else {
                                    Test::DstHost(a)
                                },
                                2,
                            )
                        }
                    }
                }
                "ether" => {
                    let m = mac(arg(2)?)?;
                    match arg(1)? {
                        "src" => (Test::EtherSrc(m), 3),
                        "dst" => (Test::EtherDst(m), 3),
                        "host" => (Test::EtherHost(m), 3),
                        other => return Err(err(other)),
                    }
                }
                other => return Err(err(other)),
            };
            terms.push((negated, test));
            i += used;
            match words.get(i) {
                None => {}
                Some(&"and") | Some(&"&&") => {
                    i += 1;
                    if i == words.len() {
                        return Err(missing("and"));
                    }
                }
                Some(other) => return Err(err(other)),
            }
        }
        Ok(Filter(terms))
    }

    pub fn matches(&self, frame: &[u8]) -> bool {
        let f = Frame::parse(frame);
        self.0.iter().all(|(neg, t)| f.test(t) != *neg)
    }
}

/// The fields of a frame the filter looks at.
#[derive(Debug, Default)]
struct Frame {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    arp: bool,
    ip: bool,
    proto: u8,
    src: Option<Ipv4Addr>,
    dst: Option<Ipv4Addr>,
    sport: Option<u16>,
    dport: Option<u16>,
}

impl Frame {
    fn parse(b: &[u8]) -> Self {
        let mut f = Frame::default();
        if b.len() < 14 {
            return f;
        }
        f.dst_mac.copy_from_slice(&b[0..6]);
        f.src_mac.copy_from_slice(&b[6..12]);
        let ip4 = |o: usize| -> Option<Ipv4Addr> {
            let s: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
            Some(Ipv4Addr::from(s))
        };
        match u16::from_be_bytes([b[12], b[13]]) {
            0x0806 => {
                f.arp = true;
                f.src = ip4(14 + 14);
                f.dst = ip4(14 + 24);
            }
            0x0800 if b.len() >= 34 => {
                f.ip = true;
                f.proto = b[23];
                f.src = ip4(26);
                f.dst = ip4(30);
                let ihl = usize::from(b[14] & 0x0f) * 4;
                let l4 = 14 + ihl;
                let fragment = u16::from_be_bytes([b[20], b[21]]) & 0x1fff != 0;
                if matches!(f.proto, 6 | 17) && !fragment && ihl >= 20 && b.len() >= l4 + 4 {
                    f.sport = Some(u16::from_be_bytes([b[l4], b[l4 + 1]]));
                    f.dport = Some(u16::from_be_bytes([b[l4 + 2], b[l4 + 3]]));
                }
            }
            _ => {}
        }
        f
    }

    fn test(&self, t: &Test) -> bool {
        match t {
            Test::Tcp => self.ip && self.proto == 6,
            Test::Udp => self.ip && self.proto == 17,
            Test::Icmp => self.ip && self.proto == 1,
            Test::Arp => self.arp,
            Test::Ip => self.ip,
            Test::Port(p) => self.sport == Some(*p) || self.dport == Some(*p),
            Test::SrcPort(p) => self.sport == Some(*p),
            Test::DstPort(p) => self.dport == Some(*p),
            Test::Host(a) => self.src == Some(*a) || self.dst == Some(*a),
            Test::SrcHost(a) => self.src == Some(*a),
            Test::DstHost(a) => self.dst == Some(*a),
            Test::EtherSrc(m) => self.src_mac == *m,
            Test::EtherDst(m) => self.dst_mac == *m,
            Test::EtherHost(m) => self.src_mac == *m || self.dst_mac == *m,
        }
    }
}

/// Re-sends the last `count` frames of `segment`'s buffer that match `filter`.
pub async fn replay(
    stack: &dyn Stack,
    env: &AttackEnv,
    segment: &str,
    filter: &str,
    count: u32,
) -> Result<AttackResult, String> {
    let net = env.network.as_ref().ok_or_else(|| {
        "replay needs TAP mode: in host mode there are no Ethernet frames to capture or re-send \
         (start the site with `fieldtwin run --tap`)"
            .to_string()
    })?;
    if !(1..=MAX_REPLAY).contains(&count) {
        return Err(format!(
            "count {count} is out of range; replay 1-{MAX_REPLAY} frames"
        ));
    }
    let filter = Filter::parse(filter)?;
    let seg = net.segment(segment).ok_or_else(|| {
        format!(
            "no segment {segment:?}; the site has {}",
            net.segment_names().join(", ")
        )
    })?;
    let frames = seg.recent_frames();
    let captured = frames.len();
    let matching: Vec<Vec<u8>> = frames.into_iter().filter(|f| filter.matches(f)).collect();
    let matched = matching.len();
    let skip = matched.saturating_sub(count as usize);
    let mut sent: usize = 0;
    for f in matching.into_iter().skip(skip) {
        stack
            .send_frame(f)
            .map_err(|e| format!("cannot send a frame: {e}"))?;
        sent += 1;
        // Let the switch and the receivers keep up, as a NIC would pace them.
        if sent.is_multiple_of(32) {
            tokio::task::yield_now().await;
        }
    }
    Ok(AttackResult::Replay {
        captured,
        matched,
        sent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP/UDP header.
    fn frame(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[23] = proto;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    fn arp() -> Vec<u8> {
        let mut f = vec![0u8; 42];
        f[0..6].copy_from_slice(&[0xff; 6]);
        f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        f[28..32].copy_from_slice(&[10, 77, 0, 1]);
        f[38..42].copy_from_slice(&[10, 77, 0, 10]);
        f
    }

    #[test]
    fn filters_select_the_right_frames() {
        let modbus = frame(6, [10, 77, 0, 1], [10, 77, 0, 10], 40000, 502);
        let dns = frame(17, [10, 77, 0, 1], [10, 77, 0, 10], 5353, 53);
        let f = |s: &str| Filter::parse(s).unwrap();
        assert!(f("").matches(&modbus) && f("").matches(&arp()));
        assert!(f("tcp and dst port 502").matches(&modbus));
        assert!(!f("tcp and dst port 502").matches(&dns));
        assert!(f("udp && port 53").matches(&dns));
        assert!(f("src 10.77.0.1 and dst host 10.77.0.10").matches(&modbus));
        assert!(!f("src host 10.77.0.10").matches(&modbus));
        assert!(f("host 10.77.0.10").matches(&arp()));
        assert!(f("arp").matches(&arp()) && !f("arp").matches(&modbus));
        assert!(f("not arp").matches(&modbus) && !f("not arp").matches(&arp()));
        assert!(f("not not arp").matches(&arp()));
        assert!(f("ether src 02:00:00:00:00:01").matches(&modbus));
        assert!(f("ether host 02-00-00-00-00-02").matches(&modbus));
        assert!(!f("ether dst 02:00:00:00:00:01").matches(&modbus));
        assert!(!f("icmp").matches(&modbus));
    }

    #[test]
    fn bad_filters_name_the_word() {
        for (text, word) in [
            ("tcp or udp", "\"or\""),
            ("port http", "\"http\""),
            ("port", "\"port\" needs"),
            ("tcp and", "\"and\" needs"),
            ("src port 70000", "\"70000\""),
            ("ether src 1:2:3", "\"1:2:3\""),
            ("ether foo 02:00:00:00:00:01", "\"foo\""),
            ("not", "needs"),
        ] {
            let e = Filter::parse(text).unwrap_err();
            assert!(e.contains(word), "{text}: {e}");
        }
    }

    #[test]
    fn short_or_odd_frames_never_panic() {
        let f = Filter::parse("tcp and port 502 and host 10.0.0.1").unwrap();
        for len in 0..60 {
            let mut b = frame(6, [10, 0, 0, 1], [10, 0, 0, 2], 1, 502);
            b.truncate(len);
            let _ = f.matches(&b);
        }
        let mut b = frame(6, [10, 0, 0, 1], [10, 0, 0, 2], 1, 502);
        b[14] = 0x4f; // IHL 60 bytes: the ports are past the end
        assert!(!f.matches(&b));
    }
}
