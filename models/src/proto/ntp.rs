//! SNTP client side of the NTPv4 on-wire format (RFC 5905 §7.3, RFC 4330):
//! the 48-byte packet, 64-bit timestamps, the checks a client makes on a
//! server's reply, and the clock offset and round-trip delay of an exchange.
//!
//! Contract:
//! - [`Packet::decode`] is total: any byte string gives a packet or an
//!   [`NtpError`] that says what was wrong; bytes after the 48-byte header
//!   (extension fields, a MAC) are ignored.
//! - [`Timestamp`] converts to and from UTC across NTP era 0 and era 1
//!   (1968-01-20 to 2104-02-26; RFC 4330 §3: a timestamp whose top bit is
//!   clear is in era 1, after 2036-02-07), which covers every date an RTC of
//!   the emulated devices can hold (2000-2099).
//! - [`check_reply`] accepts only a server reply (mode 4) that is
//!   synchronised (leap indicator not 3, stratum 1-15), echoes the request's
//!   transmit timestamp as its origin (so a forged or stale packet is
//!   refused) and carries non-zero receive and transmit timestamps. A
//!   kiss-o'-death (stratum 0) names its code.
//! - [`offset_and_delay`] is the standard on-wire calculation:
//!   offset = ((t2 - t1) + (t3 - t4)) / 2, delay = (t4 - t1) - (t3 - t2).

use chrono::{DateTime, TimeZone, Utc};

/// Length of an NTP header without extension fields.
pub const PACKET_LEN: usize = 48;
/// The NTP port.
pub const PORT: u16 = 123;
/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
const UNIX_OFFSET: i64 = 2_208_988_800;
/// Seconds in one NTP era.
const ERA: i64 = 1 << 32;

/// Association modes used here.
pub const MODE_CLIENT: u8 = 3;
pub const MODE_SERVER: u8 = 4;

/// A 64-bit NTP timestamp: seconds since the era start (high 32 bits) and a
/// binary fraction of a second (low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `t` as an NTP timestamp (era 0 before 2036-02-07, era 1 after).
    pub fn from_utc(t: DateTime<Utc>) -> Self {
        let secs = (t.timestamp() + UNIX_OFFSET).rem_euclid(ERA) as u64;
        let frac = (u64::from(t.timestamp_subsec_nanos()) << 32) / 1_000_000_000;
        Timestamp((secs << 32) | frac)
    }

    /// The UTC time of this timestamp; `None` for zero (unset).
    pub fn to_utc(self) -> Option<DateTime<Utc>> {
        if self.0 == 0 {
            return None;
        }
        let secs = (self.0 >> 32) as i64;
        // RFC 4330 §3: top bit clear = era 1.
        let secs = if secs & 0x8000_0000 == 0 {
            secs + ERA
        } else {
            secs
        };
        let nanos = ((self.0 & 0xFFFF_FFFF) * 1_000_000_000) >> 32;
        Utc.timestamp_opt(secs - UNIX_OFFSET, nanos as u32).single()
    }
}

/// An NTP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Packet {
    /// Leap indicator (3 = clock not synchronised).
    pub leap: u8,
    pub version: u8,
    pub mode: u8,
    pub stratum: u8,
    pub poll: i8,
    pub precision: i8,
    pub root_delay: u32,
    pub root_dispersion: u32,
    /// Reference id; for stratum 0 the kiss code in ASCII.
    pub reference_id: [u8; 4],
    pub reference: Timestamp,
    pub origin: Timestamp,
    pub receive: Timestamp,
    pub transmit: Timestamp,
}

/// What was wrong with a packet or a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NtpError {
    #[error("NTP packet of {0} bytes; a header is {PACKET_LEN} bytes")]
    Short(usize),
    #[error("NTP version {0}; versions 1 to 4 are understood")]
    Version(u8),
    #[error("NTP mode {0} is not a server reply (mode 4)")]
    NotServer(u8),
    #[error("the server sent a kiss-o'-death ({0}): it refuses to serve now")]
    KissOfDeath(String),
    #[error("the server is not synchronised (leap indicator 3 or stratum {0})")]
    Unsynchronised(u8),
    #[error("the reply does not answer this request (origin timestamp differs)")]
    OriginMismatch,
    #[error("the reply carries no receive or transmit time")]
    MissingTime,
}

impl Packet {
    /// A client request (NTPv4, mode 3) whose transmit timestamp is `transmit`.
    pub fn request(transmit: Timestamp) -> Self {
        Packet {
            version: 4,
            mode: MODE_CLIENT,
            transmit,
            ..Default::default()
        }
    }

    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = (self.leap & 3) << 6 | (self.version & 7) << 3 | (self.mode & 7);
        b[1] = self.stratum;
        b[2] = self.poll as u8;
        b[3] = self.precision as u8;
        b[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        b[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        b[12..16].copy_from_slice(&self.reference_id);
        for (i, t) in [self.reference, self.origin, self.receive, self.transmit]
            .iter()
            .enumerate()
        {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&t.0.to_be_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, NtpError> {
        if b.len() < PACKET_LEN {
            return Err(NtpError::Short(b.len()));
        }
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let ts = |i: usize| Timestamp(u64::from(word(i)) << 32 | u64::from(word(i + 4)));
        let version = (b[0] >> 3) & 7;
        if !(1..=4).contains(&version) {
            return Err(NtpError::Version(version));
        }
        Ok(Packet {
            leap: b[0] >> 6,
            version,
            mode: b[0] & 7,
            stratum: b[1],
            poll: b[2] as i8,
            precision: b[3] as i8,
            root_delay: word(4),
            root_dispersion: word(8),
            reference_id: [b[12], b[13], b[14], b[15]],
            reference: ts(16),
            origin: ts(24),
            receive: ts(32),
            transmit: ts(40),
        })
    }
}

/// Checks `reply` as the answer to a request sent with `sent` as its
/// transmit timestamp; returns the server's receive (t2) and transmit (t3)
/// times.
pub fn check_reply(
    sent: Timestamp,
    reply: &Packet,
) -> Result<(DateTime<Utc>, DateTime<Utc>), NtpError> {
    if reply.mode != MODE_SERVER {
        return Err(NtpError::NotServer(reply.mode));
    }
    if reply.stratum == 0 {
        let code: String = reply
            .reference_id
            .iter()
            .map(|&c| if c.is_ascii_graphic() { c as char } else { '?' })
            .collect();
        return Err(NtpError::KissOfDeath(code));
    }
    if reply.leap == 3 || reply.stratum > 15 {
        return Err(NtpError::Unsynchronised(reply.stratum));
    }
    if reply.origin != sent {
        return Err(NtpError::OriginMismatch);
    }
    match (reply.receive.to_utc(), reply.transmit.to_utc()) {
        (Some(t2), Some(t3)) => Ok((t2, t3)),
        _ => Err(NtpError::MissingTime),
    }
}

/// Clock offset (add it to the local clock) and round-trip delay, in
/// seconds, of one exchange: t1 request sent and t4 reply received (local
/// clock), t2 request received and t3 reply sent (server clock).
pub fn offset_and_delay(
    t1: DateTime<Utc>,
    t2: DateTime<Utc>,
    t3: DateTime<Utc>,
    t4: DateTime<Utc>,
) -> (f64, f64) {
    let s = |a: DateTime<Utc>, b: DateTime<Utc>| {
        (a - b).num_nanoseconds().map_or_else(
            || (a - b).num_milliseconds() as f64 / 1e3,
            |n| n as f64 / 1e9,
        )
    };
    let offset = (s(t2, t1) + s(t3, t4)) / 2.0;
    let delay = s(t4, t1) - s(t3, t2);
    (offset, delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn timestamps_of_both_eras() {
        // RFC 5905 figure 4: 1900 is era 0 second 0; 2036-02-07T06:28:16Z
        // starts era 1.
        let unix = Timestamp::from_utc(t("1970-01-01T00:00:00Z"));
        assert_eq!(unix.0 >> 32, 2_208_988_800);
        let era1 = Timestamp::from_utc(t("2036-02-07T06:28:16Z"));
        assert_eq!(era1.0 >> 32, 0);
        assert_eq!(Timestamp(1 << 32).to_utc(), Some(t("2036-02-07T06:28:17Z")));
        for s in [
            "2000-01-01T00:00:00Z",
            "2026-11-23T10:42:45.5Z",
            "2099-12-31T23:59:59.999Z",
        ] {
            let back = Timestamp::from_utc(t(s)).to_utc().unwrap();
            assert!((back - t(s)).num_microseconds().unwrap().abs() <= 1, "{s}");
        }
        assert_eq!(Timestamp(0).to_utc(), None);
    }

    #[test]
    fn a_reply_is_checked_and_measured() {
        let t1 = t("2027-01-01T01:00:00Z");
        let sent = Timestamp::from_utc(t1);
        // The local clock is one hour fast; 20 ms each way, 2 ms in the server.
        let t2 = t("2027-01-01T00:00:00.020Z");
        let t3 = t("2027-01-01T00:00:00.022Z");
        let t4 = t("2027-01-01T01:00:00.042Z");
        let reply = Packet {
            version: 4,
            mode: MODE_SERVER,
            stratum: 10,
            origin: sent,
            receive: Timestamp::from_utc(t2),
            transmit: Timestamp::from_utc(t3),
            ..Default::default()
        };
        let back = Packet::decode(&reply.encode()).unwrap();
        assert_eq!(back, reply);
        let (r2, r3) = check_reply(sent, &back).unwrap();
        let (offset, delay) = offset_and_delay(t1, r2, r3, t4);
        assert!((offset + 3600.0).abs() < 1e-6, "{offset}");
        assert!((delay - 0.040).abs() < 1e-6, "{delay}");

        let mut stale = reply;
        stale.origin = Timestamp(sent.0 + 1);
        assert_eq!(check_reply(sent, &stale), Err(NtpError::OriginMismatch));
        let mut kod = reply;
        kod.stratum = 0;
        kod.reference_id = *b"RATE";
        assert_eq!(
            check_reply(sent, &kod),
            Err(NtpError::KissOfDeath("RATE".into()))
        );
        let mut unsync = reply;
        unsync.leap = 3;
        assert_eq!(
            check_reply(sent, &unsync),
            Err(NtpError::Unsynchronised(10))
        );
        let request = Packet::request(sent);
        assert_eq!(check_reply(sent, &request), Err(NtpError::NotServer(3)));
        assert_eq!(Packet::decode(&[0x23; 47]), Err(NtpError::Short(47)));
    }

    proptest! {
        #[test]
        fn decode_is_total(b in prop::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(p) = Packet::decode(&b) {
                // Whatever decodes re-encodes to the same header.
                prop_assert_eq!(&p.encode()[..], &b[..PACKET_LEN]);
                let _ = check_reply(Timestamp(1), &p);
                let _ = p.transmit.to_utc();
            }
        }

        #[test]
        fn utc_roundtrip(ms in 946_684_800_000i64..4_102_444_799_000i64) {
            let u = Utc.timestamp_millis_opt(ms).unwrap();
            let back = Timestamp::from_utc(u).to_utc().unwrap();
            prop_assert!((back - u).num_microseconds().unwrap().abs() <= 1);
        }
    }
}
