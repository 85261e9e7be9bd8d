//! A minimal MQTT 3.1.1 packet codec, for the Data Logger's uplink over its
//! own transport stream (DESIGN.md principle 12: the codec runs on the
//! device's stream, no client library opens kernel sockets).
//!
//! Contract (MQTT 3.1.1, OASIS 2014):
//! - [`Packet::encode`] writes CONNECT, CONNACK, PUBLISH (QoS 0/1), PUBACK,
//!   SUBSCRIBE, SUBACK, PINGREQ, PINGRESP and DISCONNECT; [`decode`] reads the same set and is
//!   incremental and total: `Ok(None)` means "need more bytes", any bytes
//!   give a packet or a [`DecodeError`], never a panic.
//! - Remaining length is the 1-4 byte variable integer; a packet longer
//!   than [`MAX_PACKET`] is refused by [`decode`].
//! - [`Framer`] reads a byte stream into packets, also incrementally and
//!   totally; a PUBLISH longer than [`MAX_PACKET`] (a firmware image too
//!   big for the logger) is skipped, its bytes discarded as they come, and
//!   reported as [`Frame::TooLarge`], so the session goes on.

/// Largest packet accepted (bytes after the fixed header).
pub const MAX_PACKET: usize = 1024 * 1024;

/// An MQTT control packet (the subset the logger uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect {
        client_id: String,
        username: Option<String>,
        password: Option<Vec<u8>>,
        keep_alive: u16,
        clean_session: bool,
    },
    ConnAck {
        session_present: bool,
        code: u8,
    },
    Publish {
        topic: String,
        /// Packet identifier (QoS 1); `None` for QoS 0.
        id: Option<u16>,
        dup: bool,
        retain: bool,
        payload: Vec<u8>,
    },
    PubAck(u16),
    /// SUBSCRIBE: packet id and (topic filter, requested QoS) pairs.
    Subscribe {
        id: u16,
        topics: Vec<(String, u8)>,
    },
    /// SUBACK: packet id and one return code per filter.
    SubAck {
        id: u16,
        codes: Vec<u8>,
    },
    PingReq,
    PingResp,
    Disconnect,
}

/// Why bytes are not a valid packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("remaining length is malformed or above {MAX_PACKET} bytes")]
    Length,
    #[error("packet type {0} is not supported")]
    Type(u8),
    #[error("malformed {0} packet")]
    Malformed(&'static str),
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(&s[..s.len().min(u16::MAX as usize)]);
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

impl Packet {
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let first: u8 = match self {
            Packet::Connect {
                client_id,
                username,
                password,
                keep_alive,
                clean_session,
            } => {
                put_str(&mut body, b"MQTT");
                body.push(4);
                let mut flags = 0u8;
                if *clean_session {
                    flags |= 0x02;
                }
                if username.is_some() {
                    flags |= 0x80;
                }
                if password.is_some() {
                    flags |= 0x40;
                }
                body.push(flags);
                body.extend_from_slice(&keep_alive.to_be_bytes());
                put_str(&mut body, client_id.as_bytes());
                if let Some(u) = username {
                    put_str(&mut body, u.as_bytes());
                }
                if let Some(p) = password {
                    put_str(&mut body, p);
                }
                0x10
            }
            Packet::ConnAck {
                session_present,
                code,
            } => {
                body.push(u8::from(*session_present));
                body.push(*code);
                0x20
            }
            Packet::Publish {
                topic,
                id,
                dup,
                retain,
                payload,
            } => {
                put_str(&mut body, topic.as_bytes());
                if let Some(id) = id {
                    body.extend_from_slice(&id.to_be_bytes());
                }
                body.extend_from_slice(payload);
                0x30 | (u8::from(*dup && id.is_some()) << 3)
                    | if id.is_some() { 0x02 } else { 0 }
                    | u8::from(*retain)
            }
            Packet::PubAck(id) => {
                body.extend_from_slice(&id.to_be_bytes());
                0x40
            }
            Packet::Subscribe { id, topics } => {
                body.extend_from_slice(&id.to_be_bytes());
                for (t, q) in topics {
                    put_str(&mut body, t.as_bytes());
                    body.push(*q);
                }
                0x82
            }
            Packet::SubAck { id, codes } => {
                body.extend_from_slice(&id.to_be_bytes());
                body.extend_from_slice(codes);
                0x90
            }
            Packet::PingReq => 0xC0,
            Packet::PingResp => 0xD0,
            Packet::Disconnect => 0xE0,
        };
        let mut out = vec![first];
        put_len(&mut out, body.len());
        out.extend_from_slice(&body);
        out
    }
}

struct Reader<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let (x, rest) = self
            .b
            .split_first()
            .ok_or(DecodeError::Malformed(self.what))?;
        self.b = rest;
        Ok(*x)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        let (x, rest) = self
            .b
            .split_at_checked(n)
            .ok_or(DecodeError::Malformed(self.what))?;
        self.b = rest;
        Ok(x)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| DecodeError::Malformed(self.what))
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(self.what))
        }
    }
}

/// The fixed header at the start of `buf`: (first byte, header length,
/// remaining length); `Ok(None)` when more bytes are needed.
fn fixed_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7F) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Err(DecodeError::Length);
        }
    }
    Ok(Some((first, i, len)))
}

/// One item read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Packet(Packet),
    /// A PUBLISH of this many bytes (after the fixed header), above
    /// [`MAX_PACKET`]: skipped.
    TooLarge(usize),
}

/// Reads a byte stream into [`Frame`]s (see the module contract).
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Bytes of a skipped PUBLISH still to discard.
    skip: usize,
}

impl Framer {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        let k = self.skip.min(bytes.len());
        self.skip -= k;
        self.buf.extend_from_slice(&bytes[k..]);
    }

    /// The next frame; `Ok(None)` when more bytes are needed. After an
    /// error the stream is unusable (the connection must close).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        match decode(&self.buf) {
            Ok(Some((p, used))) => {
                self.buf.drain(..used);
                Ok(Some(Frame::Packet(p)))
            }
            Ok(None) => Ok(None),
            Err(DecodeError::Length) => match fixed_header(&self.buf)? {
                Some((first, h, len)) if first >> 4 == 3 && len > MAX_PACKET => {
                    let total = h + len;
                    let k = total.min(self.buf.len());
                    self.buf.drain(..k);
                    self.skip = total - k;
                    Ok(Some(Frame::TooLarge(len)))
                }
                _ => Err(DecodeError::Length),
            },
            Err(e) => Err(e),
        }
    }
}

/// Decodes one packet from the start of `buf`: `Ok(Some((packet, used)))`,
/// `Ok(None)` when more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(Packet, usize)>, DecodeError> {
    let Some((first, i, len)) = fixed_header(buf)? else {
        return Ok(None);
    };
    if len > MAX_PACKET {
        return Err(DecodeError::Length);
    }
    let Some(body) = buf.get(i..i + len) else {
        return Ok(None);
    };
    let flags = first & 0x0F;
    let kind = first >> 4;
    let fixed = |name: &'static str, want: u8| {
        if flags == want {
            Ok(())
        } else {
            Err(DecodeError::Malformed(name))
        }
    };
    let p = match kind {
        1 => {
            fixed("CONNECT", 0)?;
            let mut r = Reader {
                b: body,
                what: "CONNECT",
            };
            if r.bytes()? != b"MQTT" || r.u8()? != 4 {
                return Err(DecodeError::Malformed("CONNECT"));
            }
            let f = r.u8()?;
            if f & 0x01 != 0 || f & 0x04 != 0 {
                // Reserved bit, or a will (not supported).
                return Err(DecodeError::Malformed("CONNECT"));
            }
            let keep_alive = r.u16()?;
            let client_id = r.string()?;
            let username = if f & 0x80 != 0 {
                Some(r.string()?)
            } else {
                None
            };
            let password = if f & 0x40 != 0 {
                Some(r.bytes()?.to_vec())
            } else {
                None
            };
            r.end()?;
            Packet::Connect {
                client_id,
                username,
                password,
                keep_alive,
                clean_session: f & 0x02 != 0,
            }
        }
        2 => {
            fixed("CONNACK", 0)?;
            let mut r = Reader {
                b: body,
                what: "CONNACK",
            };
            let sp = r.u8()?;
            let code = r.u8()?;
            r.end()?;
            if sp > 1 {
                return Err(DecodeError::Malformed("CONNACK"));
            }
            Packet::ConnAck {
                session_present: sp == 1,
                code,
            }
        }
        3 => {
            let qos = (flags >> 1) & 0x03;
            if qos > 1 {
                return Err(DecodeError::Malformed("PUBLISH"));
            }
            let mut r = Reader {
                b: body,
                what: "PUBLISH",
            };
            let topic = r.string()?;
            let id = if qos == 1 { Some(r.u16()?) } else { None };
            if id == Some(0) || (qos == 0 && flags & 0x08 != 0) {
                return Err(DecodeError::Malformed("PUBLISH"));
            }
            Packet::Publish {
                topic,
                id,
                dup: flags & 0x08 != 0,
                retain: flags & 0x01 != 0,
                payload: r.b.to_vec(),
            }
        }
        4 => {
            fixed("PUBACK", 0)?;
            let mut r = Reader {
                b: body,
                what: "PUBACK",
            };
            let id = r.u16()?;
            r.end()?;
            Packet::PubAck(id)
        }
        8 => {
            fixed("SUBSCRIBE", 2)?;
            let mut r = Reader {
                b: body,
                what: "SUBSCRIBE",
            };
            let id = r.u16()?;
            let mut topics = Vec::new();
            while !r.b.is_empty() {
                let t = r.string()?;
                let q = r.u8()?;
                if q > 2 || t.is_empty() {
                    return Err(DecodeError::Malformed("SUBSCRIBE"));
                }
                topics.push((t, q));
            }
            if topics.is_empty() || id == 0 {
                return Err(DecodeError::Malformed("SUBSCRIBE"));
            }
            Packet::Subscribe { id, topics }
        }
        9 => {
            fixed("SUBACK", 0)?;
            let mut r = Reader {
                b: body,
                what: "SUBACK",
            };
            let id = r.u16()?;
            // One return code per filter: a granted QoS or 0x80 (failure).
            if r.b.is_empty() || r.b.iter().any(|c| !matches!(c, 0..=2 | 0x80)) {
                return Err(DecodeError::Malformed("SUBACK"));
            }
            Packet::SubAck {
                id,
                codes: r.b.to_vec(),
            }
        }
        12..=14 => {
            let name = ["PINGREQ", "PINGRESP", "DISCONNECT"][usize::from(kind - 12)];
            fixed(name, 0)?;
            if !body.is_empty() {
                return Err(DecodeError::Malformed(name));
            }
            match kind {
                12 => Packet::PingReq,
                13 => Packet::PingResp,
                _ => Packet::Disconnect,
            }
        }
        k => return Err(DecodeError::Type(k)),
    };
    Ok(Some((p, i + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn connect_matches_the_spec_layout() {
        let p = Packet::Connect {
            client_id: "dl1".into(),
            username: Some("u".into()),
            password: Some(b"p".to_vec()),
            keep_alive: 60,
            clean_session: true,
        };
        let b = p.encode();
        assert_eq!(
            b,
            [
                0x10, 21, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60, 0, 3, b'd', b'l', b'1', 0,
                1, b'u', 0, 1, b'p'
            ]
        );
        assert_eq!(decode(&b), Ok(Some((p, b.len()))));
    }

    #[test]
    fn partial_input_needs_more_bytes() {
        let b = Packet::Publish {
            topic: "a/b".into(),
            id: Some(7),
            dup: false,
            retain: false,
            payload: vec![1; 300],
        }
        .encode();
        for n in 0..b.len() {
            assert_eq!(decode(&b[..n]), Ok(None), "prefix {n}");
        }
        assert!(decode(&b).unwrap().is_some());
        assert_eq!(
            decode(&[0x20, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(DecodeError::Length)
        );
        assert_eq!(decode(&[0x50, 0]), Err(DecodeError::Type(5)));
    }

    fn sub_packet() -> impl Strategy<Value = Packet> {
        prop_oneof![
            (
                1u16..,
                prop::collection::vec(("[a-z/#+]{1,20}", 0u8..3), 1..4)
            )
                .prop_map(|(id, topics)| Packet::Subscribe { id, topics }),
            (
                any::<u16>(),
                prop::collection::vec(prop_oneof![0u8..3, Just(0x80u8)], 1..4)
            )
                .prop_map(|(id, codes)| Packet::SubAck { id, codes }),
        ]
    }

    fn any_packet() -> impl Strategy<Value = Packet> {
        prop_oneof![
            (
                "[a-z0-9]{0,20}",
                proptest::option::of("[ -~]{0,20}"),
                proptest::option::of(prop::collection::vec(any::<u8>(), 0..20)),
                any::<u16>(),
                any::<bool>()
            )
                .prop_map(|(c, u, p, k, cs)| Packet::Connect {
                    client_id: c,
                    username: u,
                    password: p,
                    keep_alive: k,
                    clean_session: cs
                }),
            (any::<bool>(), any::<u8>()).prop_map(|(s, c)| Packet::ConnAck {
                session_present: s,
                code: c
            }),
            (
                "[a-z/]{1,30}",
                proptest::option::of(1u16..),
                any::<bool>(),
                any::<bool>(),
                prop::collection::vec(any::<u8>(), 0..400)
            )
                .prop_map(|(t, id, dup, retain, payload)| Packet::Publish {
                    topic: t,
                    dup: dup && id.is_some(),
                    id,
                    retain,
                    payload
                }),
            any::<u16>().prop_map(Packet::PubAck),
            sub_packet(),
            Just(Packet::PingReq),
            Just(Packet::PingResp),
            Just(Packet::Disconnect),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip(p in any_packet(), tail in prop::collection::vec(any::<u8>(), 0..8)) {
            let mut b = p.encode();
            let n = b.len();
            b.extend_from_slice(&tail);
            prop_assert_eq!(decode(&b), Ok(Some((p, n))));
        }

        #[test]
        fn decode_is_total(b in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some((_, used))) = decode(&b) {
                prop_assert!(used <= b.len());
            }
        }

        /// SUBSCRIBE and SUBACK (the firmware topic's packets): any flags,
        /// any length bytes, any body decode to a packet or an error.
        #[test]
        fn subscribe_and_suback_decoding_is_total(
            first in prop_oneof![0x80u8..=0x8F, 0x90u8..=0x9F],
            body in prop::collection::vec(any::<u8>(), 0..200),
            len in prop_oneof![Just(None), any::<u8>().prop_map(Some)],
        ) {
            let mut b = vec![first];
            put_len(&mut b, len.map_or(body.len(), usize::from));
            b.extend_from_slice(&body);
            if let Ok(Some((p, used))) = decode(&b) {
                prop_assert!(used <= b.len());
                let sub = matches!(p, Packet::Subscribe { .. } | Packet::SubAck { .. });
                prop_assert!(sub, "{:?}", p);
            }
        }

        /// Valid SUBSCRIBE/SUBACK with one byte changed or cut short: a
        /// packet, "need more bytes" or an error, never a panic; a cut
        /// packet never decodes as a whole one.
        #[test]
        fn damaged_subscribe_and_suback_never_panic(
            p in sub_packet(),
            at in any::<prop::sample::Index>(),
            x in 1u8..,
            cut in any::<prop::sample::Index>(),
        ) {
            let b = p.encode();
            let mut flipped = b.clone();
            flipped[at.index(b.len())] ^= x;
            let _ = decode(&flipped);
            let short = &b[..cut.index(b.len())];
            prop_assert_eq!(decode(short), Ok(None));
        }

        /// The framer gives the same packets however the stream is cut,
        /// and never panics on arbitrary bytes.
        #[test]
        fn framer_is_total_and_chunking_does_not_matter(
            ps in prop::collection::vec(any_packet(), 1..5),
            cuts in prop::collection::vec(1usize..50, 1..20),
            junk in prop::collection::vec(any::<u8>(), 0..100),
        ) {
            let stream: Vec<u8> = ps.iter().flat_map(Packet::encode).collect();
            let mut f = Framer::default();
            let mut got = Vec::new();
            let mut rest = &stream[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                f.push(&rest[..n]);
                rest = &rest[n..];
                i += 1;
                while let Some(fr) = f.next_frame().unwrap() {
                    got.push(fr);
                }
            }
            prop_assert_eq!(got, ps.into_iter().map(Frame::Packet).collect::<Vec<_>>());
            let mut f = Framer::default();
            for c in junk.chunks(7) {
                f.push(c);
                while let Ok(Some(_)) = f.next_frame() {}
            }
        }
    }

    #[test]
    fn framer_skips_a_publish_above_the_limit() {
        let big = Packet::Publish {
            topic: "telemetry/dl1/firmware".into(),
            id: Some(3),
            dup: false,
            retain: true,
            payload: vec![0xAB; MAX_PACKET + 10],
        }
        .encode();
        let mut stream = big.clone();
        stream.extend_from_slice(&Packet::PingResp.encode());
        let mut f = Framer::default();
        let mut got = Vec::new();
        for c in stream.chunks(4096) {
            f.push(c);
            while let Some(fr) = f.next_frame().unwrap() {
                got.push(fr);
            }
        }
        assert_eq!(
            got,
            [
                Frame::TooLarge(big.len() - 4),
                Frame::Packet(Packet::PingResp)
            ]
        );
        // Any other packet above the limit is an error.
        let mut f = Framer::default();
        f.push(&[0x90, 0xFF, 0xFF, 0x7F]);
        assert_eq!(f.next_frame(), Err(DecodeError::Length));
    }
}
