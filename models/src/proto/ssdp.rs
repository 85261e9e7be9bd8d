//! SSDP, the discovery part of UPnP Device Architecture 1.1 (reference
//! devices.md §3 "SSDP"): HTTP-over-UDP messages on 239.255.255.250:1900.
//!
//! Contract: pure message codec, no I/O.
//! - [`parse`] reads one datagram as an `M-SEARCH` ([`Message::Search`]), a
//!   `NOTIFY` ([`Message::Notify`], `ssdp:alive`, `ssdp:byebye` or
//!   `ssdp:update`) or a search answer `HTTP/1.1 200 OK`
//!   ([`Message::Response`]). It never panics: anything else is an
//!   [`Error`] naming what was wrong (SSDP has no error answer: a bad
//!   datagram is dropped by the caller). Header names are case-insensitive;
//!   values are trimmed; lines may end in CRLF or LF.
//! - A search needs `MAN: "ssdp:discover"` and an `ST`; `MX` defaults to 1
//!   when missing or not a number (UDA 1.1 makes it required for multicast
//!   searches, but unicast searches may omit it). A NOTIFY needs `NT`, `NTS`
//!   and `USN`; `alive` also needs `LOCATION`. A response needs `ST` and
//!   `USN`.
//! - The writers ([`search`], [`notify_alive`], [`notify_byebye`],
//!   [`response`]) produce what [`parse`] reads back.
//! - [`Description::answers`] lists the (ST, USN) pairs a device answers a
//!   search target with: `ssdp:all` gets the root device, the uuid and the
//!   device type (three answers, as UDA 1.1 requires for a root device);
//!   `upnp:rootdevice`, `uuid:<uuid>` and the device type get one each.
//!
//! The EVCE and its charging stations put the OCPP box id (charge point
//! identity) of a station in an `X-OCPP-BOX-ID` header ([NF]: the vendor's
//! header is not public; documented in docs/ev-charging.md).

use std::net::Ipv4Addr;

/// SSDP port.
pub const PORT: u16 = 1900;
/// SSDP IPv4 multicast group.
pub const MULTICAST: Ipv4Addr = Ipv4Addr::new(239, 255, 255, 250);
/// Largest datagram read.
pub const MAX_DATAGRAM: usize = 8192;
/// Root device search target.
pub const ROOT_DEVICE: &str = "upnp:rootdevice";
/// The "everything" search target.
pub const ALL: &str = "ssdp:all";
/// Header carrying a charging station's OCPP identity ([NF]).
pub const BOX_ID_HEADER: &str = "X-OCPP-BOX-ID";

/// NOTIFY sub-types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nts {
    Alive,
    Byebye,
    Update,
}

impl Nts {
    pub fn as_str(self) -> &'static str {
        match self {
            Nts::Alive => "ssdp:alive",
            Nts::Byebye => "ssdp:byebye",
            Nts::Update => "ssdp:update",
        }
    }
}

/// What a device says about itself in answers and announcements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// Notification type or search target of this message.
    pub target: String,
    /// Unique service name (`uuid:X` or `uuid:X::<target>`).
    pub usn: String,
    /// URL of the device (description or presentation page).
    pub location: Option<String>,
    /// `CACHE-CONTROL: max-age` in seconds.
    pub max_age: Option<u32>,
    /// `SERVER` product tokens.
    pub server: Option<String>,
    /// The OCPP box id, for a charging station.
    pub box_id: Option<String>,
}

impl Advert {
    /// The uuid of the USN (`uuid:X` or `uuid:X::...` gives `X`).
    pub fn uuid(&self) -> Option<&str> {
        let rest = self.usn.strip_prefix("uuid:")?;
        Some(rest.split("::").next().unwrap_or(rest))
    }
}

/// One SSDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `M-SEARCH * HTTP/1.1`.
    Search { target: String, mx: u32 },
    /// `NOTIFY * HTTP/1.1`.
    Notify { nts: Nts, advert: Advert },
    /// `HTTP/1.1 200 OK` (answer to a search).
    Response(Advert),
}

/// Why a datagram is not an SSDP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not UTF-8 text")]
    NotText,
    #[error("start line {0:?} is not M-SEARCH * HTTP/1.1, NOTIFY * HTTP/1.1 or HTTP/1.1 200 OK")]
    StartLine(String),
    #[error("header line {0:?} has no colon")]
    Header(String),
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("MAN is {0:?}; a search needs MAN: \"ssdp:discover\"")]
    Man(String),
    #[error("NTS {0:?} is not ssdp:alive, ssdp:byebye or ssdp:update")]
    Nts(String),
    #[error("datagram of {0} bytes is over {MAX_DATAGRAM}")]
    TooLong(usize),
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn max_age(cache_control: Option<&str>) -> Option<u32> {
    cache_control?.split(',').find_map(|d| {
        let (k, v) = d.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| v.trim().parse().ok())?
    })
}

fn advert(headers: &[(String, String)], target_header: &'static str) -> Result<Advert, Error> {
    let get = |n| header(headers, n).map(str::to_string);
    Ok(Advert {
        target: get(target_header).ok_or(Error::Missing(target_header))?,
        usn: get("USN").ok_or(Error::Missing("USN"))?,
        location: get("LOCATION"),
        max_age: max_age(header(headers, "CACHE-CONTROL")),
        server: get("SERVER"),
        box_id: get(BOX_ID_HEADER),
    })
}

/// Reads one datagram (see the module contract).
pub fn parse(bytes: &[u8]) -> Result<Message, Error> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(Error::TooLong(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Error::NotText)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = lines.next().unwrap_or_default().trim();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| Error::Header(line.chars().take(80).collect()))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let words: Vec<&str> = start.split_ascii_whitespace().collect();
    match words.as_slice() {
        [m, "*", v] if m.eq_ignore_ascii_case("M-SEARCH") && v.eq_ignore_ascii_case("HTTP/1.1") => {
            let man = header(&headers, "MAN").ok_or(Error::Missing("MAN"))?;
            if man.trim_matches('"') != "ssdp:discover" {
                return Err(Error::Man(man.to_string()));
            }
            let target = header(&headers, "ST").ok_or(Error::Missing("ST"))?;
            let mx = header(&headers, "MX")
                .and_then(|m| m.parse().ok())
                .unwrap_or(1);
            Ok(Message::Search {
                target: target.to_string(),
                mx,
            })
        }
        [m, "*", v] if m.eq_ignore_ascii_case("NOTIFY") && v.eq_ignore_ascii_case("HTTP/1.1") => {
            let nts = header(&headers, "NTS").ok_or(Error::Missing("NTS"))?;
            let nts = match nts {
                "ssdp:alive" => Nts::Alive,
                "ssdp:byebye" => Nts::Byebye,
                "ssdp:update" => Nts::Update,
                other => return Err(Error::Nts(other.to_string())),
            };
            let advert = advert(&headers, "NT")?;
            if nts == Nts::Alive && advert.location.is_none() {
                return Err(Error::Missing("LOCATION"));
            }
            Ok(Message::Notify { nts, advert })
        }
        [v, "200", ..]
            if v.eq_ignore_ascii_case("HTTP/1.1") || v.eq_ignore_ascii_case("HTTP/1.0") =>
        {
            Ok(Message::Response(advert(&headers, "ST")?))
        }
        _ => Err(Error::StartLine(start.chars().take(80).collect())),
    }
}

/// An `M-SEARCH` for `target` to the multicast group.
pub fn search(target: &str, mx: u32) -> String {
    format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: {mx}\r\nST: {target}\r\n\r\n"
    )
}

fn advert_headers(a: &Advert) -> String {
    let mut s = String::new();
    if let Some(m) = a.max_age {
        s += &format!("CACHE-CONTROL: max-age={m}\r\n");
    }
    if let Some(l) = &a.location {
        s += &format!("LOCATION: {l}\r\n");
    }
    if let Some(sv) = &a.server {
        s += &format!("SERVER: {sv}\r\n");
    }
    if let Some(b) = &a.box_id {
        s += &format!("{BOX_ID_HEADER}: {b}\r\n");
    }
    s
}

/// A `NOTIFY ssdp:alive`.
pub fn notify_alive(a: &Advert) -> String {
    format!(
        "NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n{}NT: {}\r\nNTS: ssdp:alive\r\nUSN: {}\r\n\r\n",
        advert_headers(a),
        a.target,
        a.usn
    )
}

/// A `NOTIFY ssdp:byebye` (no LOCATION, no CACHE-CONTROL, no SERVER).
pub fn notify_byebye(a: &Advert) -> String {
    let mut s = format!(
        "NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: {}\r\nNTS: ssdp:byebye\r\nUSN: {}\r\n",
        a.target, a.usn
    );
    if let Some(b) = &a.box_id {
        s += &format!("{BOX_ID_HEADER}: {b}\r\n");
    }
    s + "\r\n"
}

/// The unicast answer to a search (`date` is an RFC 1123 date).
pub fn response(a: &Advert, date: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\n{}DATE: {date}\r\nEXT:\r\nST: {}\r\nUSN: {}\r\n\r\n",
        advert_headers(a),
        a.target,
        a.usn
    )
}

/// A device as SSDP shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// The device uuid (without `uuid:`).
    pub uuid: String,
    /// Its device type URN.
    pub device_type: String,
    pub location: String,
    pub server: String,
    pub max_age: u32,
    pub box_id: Option<String>,
}

impl Description {
    fn advert(&self, target: &str, usn: String) -> Advert {
        Advert {
            target: target.to_string(),
            usn,
            location: Some(self.location.clone()),
            max_age: Some(self.max_age),
            server: Some(self.server.clone()),
            box_id: self.box_id.clone(),
        }
    }

    /// Everything the device announces (root device, uuid, device type).
    pub fn adverts(&self) -> Vec<Advert> {
        let u = format!("uuid:{}", self.uuid);
        vec![
            self.advert(ROOT_DEVICE, format!("{u}::{ROOT_DEVICE}")),
            self.advert(&u, u.clone()),
            self.advert(&self.device_type, format!("{u}::{}", self.device_type)),
        ]
    }

    /// The answers to a search for `target` (see the module contract).
    pub fn answers(&self, target: &str) -> Vec<Advert> {
        let all = self.adverts();
        if target == ALL {
            return all;
        }
        all.into_iter().filter(|a| a.target == target).collect()
    }
}

/// A stable uuid (RFC 4122 layout, version 4 bits) made from `seed` text.
pub fn uuid_from(seed: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut l: u64 = 0x6c62_272e_07bb_0142;
    for b in seed.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        l = (l ^ u64::from(b))
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(7);
    }
    uuid_text(h, l)
}

/// A uuid's text (RFC 4122 layout, version 4, variant `8`) from hash bits:
/// all of `h` but its bits 12-15, then the top 12 and the low 48 bits of
/// `l`.
pub fn uuid_text(h: u64, l: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        l >> 52,
        l & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn desc() -> Description {
        Description {
            uuid: uuid_from("cs1"),
            device_type: "urn:schemas-upnp-org:device:Basic:1".into(),
            location: "http://10.77.0.21/".into(),
            server: "Linux/5.10 UPnP/1.0 EVLink/1.0".into(),
            max_age: 1800,
            box_id: Some("cs1".into()),
        }
    }

    #[test]
    fn parses_a_gssdp_search() {
        // As gssdp-discover sends it.
        let m = parse(
            b"M-SEARCH * HTTP/1.1\r\nHost: 239.255.255.250:1900\r\nMan: \"ssdp:discover\"\r\nST: ssdp:all\r\nMX: 3\r\nUser-Agent: gssdp-discover GSSDP/1.6.2\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            m,
            Message::Search {
                target: "ssdp:all".into(),
                mx: 3
            }
        );
        assert_eq!(
            parse(b"M-SEARCH * HTTP/1.1\nMAN: ssdp:discover\nST: upnp:rootdevice\n\n").unwrap(),
            Message::Search {
                target: ROOT_DEVICE.into(),
                mx: 1
            }
        );
    }

    #[test]
    fn writers_read_back() {
        let d = desc();
        for a in d.adverts() {
            assert_eq!(
                parse(notify_alive(&a).as_bytes()).unwrap(),
                Message::Notify {
                    nts: Nts::Alive,
                    advert: a.clone()
                }
            );
            let Message::Notify { nts, advert } = parse(notify_byebye(&a).as_bytes()).unwrap()
            else {
                panic!("not a notify")
            };
            assert_eq!(nts, Nts::Byebye);
            assert_eq!(
                (advert.usn.as_str(), advert.uuid()),
                (a.usn.as_str(), Some(d.uuid.as_str()))
            );
            assert_eq!(advert.box_id.as_deref(), Some("cs1"));
            assert_eq!(
                parse(response(&a, "Mon, 01 Jan 2024 00:00:00 GMT").as_bytes()).unwrap(),
                Message::Response(a.clone())
            );
        }
        assert_eq!(
            parse(search("ssdp:all", 2).as_bytes()).unwrap(),
            Message::Search {
                target: ALL.into(),
                mx: 2
            }
        );
    }

    #[test]
    fn answers_follow_the_search_target() {
        let d = desc();
        assert_eq!(d.answers(ALL).len(), 3);
        assert_eq!(d.answers(ROOT_DEVICE).len(), 1);
        assert_eq!(
            d.answers(&format!("uuid:{}", d.uuid))[0].usn,
            format!("uuid:{}", d.uuid)
        );
        assert_eq!(d.answers(&d.device_type).len(), 1);
        assert!(
            d.answers("urn:schemas-upnp-org:device:MediaServer:1")
                .is_empty()
        );
    }

    #[test]
    fn bad_datagrams_say_what_is_wrong() {
        assert_eq!(parse(&[0xff, 0xfe]), Err(Error::NotText));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n\r\n"),
            Err(Error::StartLine(_))
        ));
        assert_eq!(
            parse(b"M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\n\r\n"),
            Err(Error::Missing("MAN"))
        );
        assert!(matches!(
            parse(b"M-SEARCH * HTTP/1.1\r\nMAN: \"ssdp:nope\"\r\nST: a\r\n\r\n"),
            Err(Error::Man(_))
        ));
        assert!(matches!(
            parse(b"NOTIFY * HTTP/1.1\r\nNT: a\r\nNTS: ssdp:what\r\nUSN: u\r\n\r\n"),
            Err(Error::Nts(_))
        ));
        assert_eq!(
            parse(b"NOTIFY * HTTP/1.1\r\nNT: a\r\nNTS: ssdp:alive\r\nUSN: u\r\n\r\n"),
            Err(Error::Missing("LOCATION"))
        );
        assert!(matches!(
            parse(b"NOTIFY * HTTP/1.1\r\nno colon here\r\n\r\n"),
            Err(Error::Header(_))
        ));
        assert_eq!(
            parse(&[b'a'; MAX_DATAGRAM + 1]),
            Err(Error::TooLong(MAX_DATAGRAM + 1))
        );
    }

    proptest! {
        #[test]
        fn parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parse_is_total_on_near_messages(
            start in prop::sample::select(vec!["M-SEARCH * HTTP/1.1", "NOTIFY * HTTP/1.1", "HTTP/1.1 200 OK", "m-search * http/1.1", ""]),
            lines in proptest::collection::vec(
                (prop::sample::select(vec!["MAN", "ST", "MX", "NT", "NTS", "USN", "LOCATION", "CACHE-CONTROL", "SERVER", "X-OCPP-BOX-ID", ""]),
                 "[ -~]{0,40}"), 0..10),
            lf in any::<bool>(),
        ) {
            let eol = if lf { "\n" } else { "\r\n" };
            let mut s = format!("{start}{eol}");
            for (k, v) in &lines {
                s += &format!("{k}:{v}{eol}");
            }
            s += eol;
            let _ = parse(s.as_bytes());
        }

        #[test]
        fn adverts_round_trip(
            uuid in "[0-9a-f-]{1,36}",
            box_id in proptest::option::of("[A-Za-z0-9_-]{1,20}"),
            max_age in 1u32..100_000,
            port in 1u16..,
        ) {
            let d = Description {
                uuid,
                device_type: "urn:schneider-electric:device:EVChargingStation:1".into(),
                location: format!("http://10.0.0.1:{port}/"),
                server: "Linux UPnP/1.0 x/1".into(),
                max_age,
                box_id,
            };
            for a in d.adverts() {
                prop_assert_eq!(parse(notify_alive(&a).as_bytes()).unwrap(), Message::Notify { nts: Nts::Alive, advert: a.clone() });
                prop_assert_eq!(parse(response(&a, "x").as_bytes()).unwrap(), Message::Response(a.clone()));
            }
        }
    }
}
