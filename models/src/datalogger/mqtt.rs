//! A minimal MQTT 3.1.1 packet codec, for the Data Logger's uplink over its
//! own transport stream (DESIGN.md principle 12: the codec runs on the
//! device's stream, no client library opens kernel sockets).
//!
//! Contract (MQTT 3.1.1, OASIS 2014):
//! - [`Packet::encode`] writes CONNECT, CONNACK, PUBLISH (QoS 0/1), PUBACK,
//!   PINGREQ, PINGRESP and DISCONNECT; [`decode`] reads the same set and is
//!   incremental and total: `Ok(None)` means "need more bytes", any bytes
//!   give a packet or a [`DecodeError`], never a panic.
//! - Remaining length is the 1-4 byte variable integer; a packet longer
//!   than [`MAX_PACKET`] is refused.

/// Largest packet accepted (bytes after the fixed header).
pub const MAX_PACKET: usize = 256 * 1024;

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

/// Decodes one packet from the start of `buf`: `Ok(Some((packet, used)))`,
/// `Ok(None)` when more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(Packet, usize)>, DecodeError> {
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
    }
}
