//! The Data Logger's BLE secure channel (seed 004 "Bluetooth Low-Energy"):
//! key establishment with a pre-shared pairing key, ECDH P-256 and HKDF,
//! then AES-CBC + HMAC-SHA256 per message with a fresh salt; replays,
//! unexpected, badly encrypted or wrong-length messages slam the link.
//!
//! Contract (docs/datalogger.md "BLE secure channel"; the frame layout is
//! [NF]):
//! - Frames on the link are `len (u16 BE) | body`. [`Peer::on_frame`] is
//!   total: any body gives [`Step::Reply`], [`Step::Silent`] or
//!   [`Step::Slam`], never a panic.
//! - Handshake: the app sends `0x01 | app_pub (65) | HMAC(K, "hello" |
//!   app_pub)`; the logger checks it with its pairing key K and answers
//!   `0x02 | dl_pub (65) | HMAC(K, "hello-ack" | dl_pub | app_pub)`. Both
//!   derive 64 bytes with HKDF-SHA256(ikm = ECDH secret, salt = K, info =
//!   "dl-ble-v1" | app_pub | dl_pub): an AES-128 key, an HMAC key
//!   and 32 spare bytes.
//! - A message is `0x10 | counter (u32) | salt (16) | iv (16) | AES-128-CBC
//!   ciphertext | HMAC-SHA256(mac key, everything before)`. The message key
//!   is HKDF(aes key, salt, "msg"); the receiver keeps every salt it saw
//!   and needs a counter above the last one, so a replayed message is
//!   refused.
//! - Until the handshake succeeded the logger answers nothing, and any
//!   frame that is not a valid hello slams the connection. Afterwards any
//!   frame that is not a valid message (type, length, tag, padding, salt
//!   or counter reuse) slams it. The app does the same with the logger's
//!   answers.

use std::collections::HashSet;

use hmac::{Hmac, Mac};
use openssl::bn::BigNumContext;
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::symm::{Cipher, decrypt, encrypt};
use sha2::Sha256;

/// Length of an uncompressed P-256 public key.
pub const PUB_LEN: usize = 65;
const TAG_LEN: usize = 32;
const HELLO: u8 = 0x01;
const HELLO_ACK: u8 = 0x02;
const MESSAGE: u8 = 0x10;
/// Largest frame body accepted.
pub const MAX_FRAME: usize = 1024;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn hmac_ok(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.verify_slice(tag).is_ok()
}

/// HKDF-SHA256 (RFC 5869), `n` <= 255 * 32 bytes.
pub fn hkdf(ikm: &[u8], salt: &[u8], info: &[u8], n: usize) -> Vec<u8> {
    let prk = hmac(salt, &[ikm]);
    let mut out = Vec::with_capacity(n);
    let mut t: Vec<u8> = Vec::new();
    let mut i = 1u8;
    while out.len() < n {
        t = hmac(&prk, &[&t, info, &[i]]).to_vec();
        out.extend_from_slice(&t);
        i = i.wrapping_add(1);
    }
    out.truncate(n);
    out
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    openssl::rand::rand_bytes(&mut b).expect("the system RNG works");
    b
}

/// An ephemeral P-256 key pair.
struct Ephemeral {
    key: PKey<Private>,
    public: Vec<u8>,
}

fn group() -> EcGroup {
    EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256 exists")
}

impl Ephemeral {
    fn new() -> Self {
        let g = group();
        let ec = EcKey::generate(&g).expect("key generation");
        let mut ctx = BigNumContext::new().expect("bn ctx");
        let public = ec
            .public_key()
            .to_bytes(&g, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .expect("encode point");
        Self {
            key: PKey::from_ec_key(ec).expect("pkey"),
            public,
        }
    }

    /// The ECDH secret with `peer` (65 bytes), `None` if not a P-256 point.
    fn agree(&self, peer: &[u8]) -> Option<Vec<u8>> {
        let g = group();
        let mut ctx = BigNumContext::new().ok()?;
        let point = EcPoint::from_bytes(&g, peer, &mut ctx).ok()?;
        let pk = PKey::from_ec_key(EcKey::from_public_key(&g, &point).ok()?).ok()?;
        let mut d = Deriver::new(&self.key).ok()?;
        d.set_peer(&pk).ok()?;
        d.derive_to_vec().ok()
    }
}

/// Session keys after the handshake.
struct Keys {
    aes: Vec<u8>,
    mac: Vec<u8>,
}

fn session_keys(secret: &[u8], pairing: &[u8], app_pub: &[u8], dl_pub: &[u8]) -> Keys {
    let okm = hkdf(
        secret,
        pairing,
        &[b"dl-ble-v1".as_slice(), app_pub, dl_pub].concat(),
        64,
    );
    Keys {
        aes: okm[..16].to_vec(),
        mac: okm[16..48].to_vec(),
    }
}

/// A sealed message body (type 0x10).
fn seal(keys: &Keys, counter: u32, plain: &[u8]) -> Vec<u8> {
    let salt: [u8; 16] = random();
    let iv: [u8; 16] = random();
    let mk = hkdf(&keys.aes, &salt, b"msg", 16);
    let ct = encrypt(Cipher::aes_128_cbc(), &mk, Some(&iv), plain).expect("AES-CBC");
    let mut b = vec![MESSAGE];
    b.extend_from_slice(&counter.to_be_bytes());
    b.extend_from_slice(&salt);
    b.extend_from_slice(&iv);
    b.extend_from_slice(&ct);
    let tag = hmac(&keys.mac, &[&b]);
    b.extend_from_slice(&tag);
    b
}

/// Replay state of one direction.
#[derive(Default)]
struct Seen {
    last: Option<u32>,
    salts: HashSet<[u8; 16]>,
}

/// Opens a message body; `None` on any fault (wrong type or length, bad
/// tag, bad padding, replayed salt or counter).
fn open(keys: &Keys, seen: &mut Seen, b: &[u8]) -> Option<Vec<u8>> {
    // type + counter + salt + iv + at least one block + tag
    if b.len() < 1 + 4 + 16 + 16 + 16 + TAG_LEN || b[0] != MESSAGE {
        return None;
    }
    let (body, tag) = b.split_at(b.len() - TAG_LEN);
    if (body.len() - 37) % 16 != 0 || !hmac_ok(&keys.mac, &[body], tag) {
        return None;
    }
    let counter = u32::from_be_bytes(body[1..5].try_into().ok()?);
    let salt: [u8; 16] = body[5..21].try_into().ok()?;
    if seen.last.is_some_and(|l| counter <= l) || seen.salts.contains(&salt) {
        return None;
    }
    let iv = &body[21..37];
    let mk = hkdf(&keys.aes, &salt, b"msg", 16);
    let plain = decrypt(Cipher::aes_128_cbc(), &mk, Some(iv), &body[37..]).ok()?;
    seen.last = Some(counter);
    seen.salts.insert(salt);
    Some(plain)
}

/// What to do after a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this frame body.
    Reply(Vec<u8>),
    /// Nothing to send (the app's side after a good answer).
    Silent,
    /// Close the connection at once.
    Slam(&'static str),
}

/// The logger's side of one BLE connection.
pub struct Peer {
    pairing: Vec<u8>,
    keys: Option<Keys>,
    seen: Seen,
    counter: u32,
}

impl Peer {
    pub fn new(pairing_key: &[u8]) -> Self {
        Self {
            pairing: pairing_key.to_vec(),
            keys: None,
            seen: Seen::default(),
            counter: 0,
        }
    }

    /// Whether the handshake succeeded.
    pub fn authenticated(&self) -> bool {
        self.keys.is_some()
    }

    /// Handles one frame body; `answer` computes the plaintext answer to an
    /// authenticated request.
    pub fn on_frame(&mut self, b: &[u8], answer: impl FnOnce(&[u8]) -> Vec<u8>) -> Step {
        if b.len() > MAX_FRAME {
            return Step::Slam("frame too long");
        }
        let Some(keys) = &self.keys else {
            if b.len() != 1 + PUB_LEN + TAG_LEN || b[0] != HELLO {
                return Step::Slam("not an authentication message");
            }
            let app_pub = &b[1..1 + PUB_LEN];
            if !hmac_ok(&self.pairing, &[b"hello", app_pub], &b[1 + PUB_LEN..]) {
                return Step::Slam("wrong pairing key");
            }
            let eph = Ephemeral::new();
            let Some(secret) = eph.agree(app_pub) else {
                return Step::Slam("not a P-256 public key");
            };
            self.keys = Some(session_keys(&secret, &self.pairing, app_pub, &eph.public));
            let mut r = vec![HELLO_ACK];
            r.extend_from_slice(&eph.public);
            r.extend_from_slice(&hmac(&self.pairing, &[b"hello-ack", &eph.public, app_pub]));
            return Step::Reply(r);
        };
        let Some(plain) = open(keys, &mut self.seen, b) else {
            return Step::Slam("bad, replayed or wrong-length message");
        };
        self.counter += 1;
        Step::Reply(seal(keys, self.counter, &answer(&plain)))
    }
}

/// The mobile app's side (`fieldtwin ble`, tests).
pub struct App {
    pairing: Vec<u8>,
    eph: Ephemeral,
    keys: Option<Keys>,
    seen: Seen,
    counter: u32,
}

impl App {
    pub fn new(pairing_key: &[u8]) -> Self {
        Self {
            pairing: pairing_key.to_vec(),
            eph: Ephemeral::new(),
            keys: None,
            seen: Seen::default(),
            counter: 0,
        }
    }

    /// The hello frame body.
    pub fn hello(&self) -> Vec<u8> {
        let mut b = vec![HELLO];
        b.extend_from_slice(&self.eph.public);
        b.extend_from_slice(&hmac(&self.pairing, &[b"hello", &self.eph.public]));
        b
    }

    /// Checks the logger's hello-ack; `Err` says why the app slams.
    pub fn on_hello_ack(&mut self, b: &[u8]) -> Result<(), &'static str> {
        if b.len() != 1 + PUB_LEN + TAG_LEN || b[0] != HELLO_ACK {
            return Err("not a hello-ack");
        }
        let dl_pub = &b[1..1 + PUB_LEN];
        if !hmac_ok(
            &self.pairing,
            &[b"hello-ack", dl_pub, &self.eph.public],
            &b[1 + PUB_LEN..],
        ) {
            return Err("the logger does not know the pairing key");
        }
        let secret = self.eph.agree(dl_pub).ok_or("not a P-256 public key")?;
        self.keys = Some(session_keys(
            &secret,
            &self.pairing,
            &self.eph.public,
            dl_pub,
        ));
        Ok(())
    }

    /// A sealed request.
    pub fn request(&mut self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys.as_ref()?;
        self.counter += 1;
        Some(seal(keys, self.counter, plain))
    }

    /// Opens the logger's answer.
    pub fn open(&mut self, b: &[u8]) -> Option<Vec<u8>> {
        open(self.keys.as_ref()?, &mut self.seen, b)
    }
}

/// Frames a body for the link.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len().min(u16::MAX as usize) as u16)
        .to_be_bytes()
        .to_vec();
    f.extend_from_slice(body);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn echo(p: &[u8]) -> Vec<u8> {
        [b"re:".as_slice(), p].concat()
    }

    fn handshake(key: &[u8]) -> (App, Peer) {
        let mut app = App::new(key);
        let mut dl = Peer::new(key);
        let Step::Reply(ack) = dl.on_frame(&app.hello(), echo) else {
            panic!("no hello-ack");
        };
        app.on_hello_ack(&ack).unwrap();
        (app, dl)
    }

    #[test]
    fn hkdf_matches_rfc5869_case_1() {
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let okm = hkdf(&ikm, &salt, &info, 42);
        assert_eq!(okm[..8], [0x3c, 0xb2, 0x5f, 0x25, 0xfa, 0xac, 0xd5, 0x7a]);
        assert_eq!(okm[41], 0x65);
    }

    #[test]
    fn request_and_answer_after_the_handshake() {
        let (mut app, mut dl) = handshake(b"pairing-key-0001");
        let req = app.request(b"status").unwrap();
        let Step::Reply(ans) = dl.on_frame(&req, echo) else {
            panic!()
        };
        assert_eq!(app.open(&ans).unwrap(), b"re:status");
        // A second request works (fresh salt, higher counter).
        let req2 = app.request(b"again").unwrap();
        assert!(matches!(dl.on_frame(&req2, echo), Step::Reply(_)));
        // The replay of the first one slams.
        assert!(matches!(dl.on_frame(&req, echo), Step::Slam(_)));
    }

    #[test]
    fn nothing_before_authentication_and_wrong_key_slams() {
        let mut dl = Peer::new(b"right");
        assert!(matches!(dl.on_frame(b"status", echo), Step::Slam(_)));
        let (mut app, _) = handshake(b"right");
        let req = app.request(b"status").unwrap();
        let mut fresh = Peer::new(b"right");
        assert!(matches!(fresh.on_frame(&req, echo), Step::Slam(_)));
        let wrong = App::new(b"wrong");
        let mut dl = Peer::new(b"right");
        assert_eq!(
            dl.on_frame(&wrong.hello(), echo),
            Step::Slam("wrong pairing key")
        );
        assert!(!dl.authenticated());
    }

    #[test]
    fn tampered_or_truncated_messages_slam() {
        let (mut app, mut dl) = handshake(b"k");
        let mut req = app.request(b"status").unwrap();
        req[40] ^= 1;
        assert!(matches!(dl.on_frame(&req, echo), Step::Slam(_)));
        let (mut app, mut dl) = handshake(b"k");
        let req = app.request(b"status").unwrap();
        assert!(matches!(
            dl.on_frame(&req[..req.len() - 1], echo),
            Step::Slam(_)
        ));
    }

    proptest! {
        #[test]
        fn any_frame_is_answered_or_slammed_never_panics(b in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut dl = Peer::new(b"k");
            let step = dl.on_frame(&b, echo);
            prop_assert!(matches!(step, Step::Slam(_)));
        }
    }
}
