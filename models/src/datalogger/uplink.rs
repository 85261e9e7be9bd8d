//! The Data Logger's uplink: one MQTTS session to the broker over the
//! device's own transport stream.
//!
//! Contract (seed 004 "Cellular Modem"; docs/datalogger.md "Uplink"):
//! - TLS 1.2 only, offering exactly [`CIPHERS`] (the seed's four suites).
//!   rustls has no CBC suites, so this client is OpenSSL (`openssl` +
//!   `tokio-openssl`) on the stream the device's [`Stack`] opened. With a CA
//!   file the broker's certificate and name (or IP) are verified; without
//!   one they are not (lab default, printed in the docs).
//! - MQTT 3.1.1 ([`super::mqtt`]): CONNECT with the device's user name and
//!   password and a clean session, then the unsent records of the ring, at
//!   most [`BATCH`] per PUBLISH (QoS 1) on `PREFIX/ID/records`. A record
//!   counts as delivered only when its PUBACK arrives, and the ring's `sent`
//!   counter moves then (flushed to NV), so a record is sent again after
//!   any failure before its PUBACK and never after.
//! - Every session subscribes (QoS 1) to the firmware topic; a retained
//!   image there arrives in the session. Unless the session was
//!   interrupted, it ends with a PINGREQ round trip (so an image the broker
//!   sent after the SUBACK has arrived), hands every image to
//!   `on_firmware` (the model judges and installs it, [`super::ota`]) and
//!   publishes the report it returns on `FIRMWARE_TOPIC/status` (QoS 1,
//!   retained) before DISCONNECT. An image above [`mqtt::MAX_PACKET`] is
//!   skipped on the stream and handed over as [`FirmwareOffer::TooLarge`].
//!   Firmware comes over this cellular path only.
//! - A session ends when nothing is left, when it has lasted `session_max`
//!   of virtual time, when coverage or power goes ([`SessionEnd`]), or on
//!   any error; it always closes the stream. A message already sent waits
//!   for its PUBACK (at most [`ACK_TIMEOUT`] of wall time) before the end is
//!   honoured, so coverage loss and power loss fall between messages.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldtwin_emulator::clock::Clock;
use fieldtwin_emulator::net::{BoxStream, Stack};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_openssl::SslStream;

use super::mqtt::{self, Packet};
use super::payload;
use super::store::Ring;

/// The seed's cipher suites, in OpenSSL names, in the order offered.
pub const CIPHERS: &str = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256:\
ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA256";

/// Records per MQTT message.
pub const BATCH: usize = 100;
/// How long the logger waits for a CONNACK or a PUBACK (wall time).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// MQTT keep-alive announced in CONNECT, seconds.
pub const KEEP_ALIVE: u16 = 60;

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("cannot connect to the broker {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("broker refused the connection (CONNACK code {0}: {1})")]
    Refused(u8, &'static str),
    #[error("MQTT: {0}")]
    Protocol(String),
    #[error("the server answered HTTP {0} {1}")]
    Http(u16, String),
    #[error("the broker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("non-volatile memory: {0}")]
    Storage(#[from] fieldtwin_emulator::storage::StorageError),
}

/// How a session ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Every record was delivered.
    Done,
    /// The session lasted its maximum; records remain.
    TimeLimit,
    /// Coverage or power went.
    Interrupted,
    /// The server closed the connection (HTTPS); records remain.
    Closed,
}

/// What one session did.
#[derive(Debug, Clone)]
pub struct SessionReport {
    pub end: SessionEnd,
    pub messages: u64,
    /// First and one-past-last sequence numbers delivered.
    pub delivered: (u64, u64),
    /// Virtual time the session lasted.
    pub duration: Duration,
    /// Messages received on the firmware topic.
    pub firmware: usize,
}

/// A message received on the firmware topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirmwareOffer {
    /// The payload (an image, if the sender is honest).
    Image(Vec<u8>),
    /// A message of this many bytes, too large to take: skipped.
    TooLarge(usize),
}

/// The TLS client context: TLS 1.2 only, the seed's suites.
pub fn connector(ca_file: Option<&Path>) -> Result<SslConnector, UplinkError> {
    let tls = |e: openssl::error::ErrorStack| UplinkError::Tls(e.to_string());
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(tls)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(tls)?;
    b.set_max_proto_version(Some(SslVersion::TLS1_2))
        .map_err(tls)?;
    b.set_cipher_list(CIPHERS).map_err(tls)?;
    match ca_file {
        Some(ca) => {
            b.set_ca_file(ca).map_err(|e| {
                UplinkError::Tls(format!("cannot read the CA file {}: {e}", ca.display()))
            })?;
            b.set_verify(SslVerifyMode::PEER);
        }
        None => b.set_verify(SslVerifyMode::NONE),
    }
    Ok(b.build())
}

/// Everything a session needs.
pub struct Session<'a> {
    pub stack: &'a dyn Stack,
    pub broker: SocketAddr,
    /// Random number of this session: picks the carrier NAT address.
    pub nat_pick: u32,
    /// Name checked against the broker's certificate (host or IP).
    pub broker_name: &'a str,
    pub connector: &'a SslConnector,
    pub verify: bool,
    pub device_id: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub topic: String,
    /// Upload by HTTPS POST to this path instead of MQTT ([`super::https`]).
    pub https_path: Option<&'a str>,
    /// Topic the session subscribes to for firmware images (retained).
    pub firmware_topic: String,
    /// Judges a firmware message (and installs it); returns the status
    /// report to publish, if any.
    pub on_firmware: &'a (dyn Fn(&FirmwareOffer) -> Option<String> + Send + Sync),
    pub ring: &'a Mutex<Ring>,
    pub clock: &'a Clock,
    pub session_max: Duration,
    /// Whether the session must stop (coverage or power gone).
    pub stop: Arc<dyn Fn() -> bool + Send + Sync + 'a>,
}

struct Conn {
    s: SslStream<BoxStream>,
    framer: mqtt::Framer,
    /// Topic whose messages are kept (the firmware topic).
    wanted: String,
    /// Messages received on it.
    incoming: Vec<FirmwareOffer>,
}

impl Conn {
    async fn send(&mut self, p: &Packet) -> Result<(), UplinkError> {
        self.s.write_all(&p.encode()).await?;
        self.s.flush().await?;
        Ok(())
    }

    async fn recv(&mut self) -> Result<mqtt::Frame, UplinkError> {
        let fut = async {
            loop {
                match self.framer.next_frame() {
                    Ok(Some(f)) => return Ok(f),
                    Ok(None) => {}
                    Err(e) => return Err(UplinkError::Protocol(e.to_string())),
                }
                let mut chunk = [0u8; 16384];
                let n = self.s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(UplinkError::Protocol(
                        "the broker closed the connection".into(),
                    ));
                }
                self.framer.push(&chunk[..n]);
            }
        };
        tokio::time::timeout(ACK_TIMEOUT, fut)
            .await
            .map_err(|_| UplinkError::Timeout(ACK_TIMEOUT))?
    }

    /// The next packet that is not a PUBLISH to the logger: those are
    /// acknowledged (QoS 1), and kept in `incoming` when on the wanted
    /// topic (an empty payload clears a retained message: nothing to keep).
    async fn next(&mut self) -> Result<Packet, UplinkError> {
        loop {
            match self.recv().await? {
                mqtt::Frame::Packet(Packet::Publish {
                    topic, id, payload, ..
                }) => {
                    if let Some(id) = id {
                        self.send(&Packet::PubAck(id)).await?;
                    }
                    if topic == self.wanted && !payload.is_empty() {
                        self.incoming.push(FirmwareOffer::Image(payload));
                    }
                }
                // Skipped without its packet id: no PUBACK (a clean session
                // leaves nothing for the broker to send again).
                mqtt::Frame::TooLarge(n) => self.incoming.push(FirmwareOffer::TooLarge(n)),
                mqtt::Frame::Packet(p) => return Ok(p),
            }
        }
    }
}

fn connack_reason(code: u8) -> &'static str {
    match code {
        1 => "unacceptable protocol version",
        2 => "client identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown",
    }
}

impl Session<'_> {
    /// Runs one session.
    pub async fn run(self) -> Result<SessionReport, UplinkError> {
        let start = self.clock.now();
        let s = self.open().await?;
        match self.https_path {
            Some(path) => super::https::session(&self, s, path, start).await,
            None => self.mqtt(s, start).await,
        }
    }

    /// The TCP connection (through the carrier NAT) and the TLS handshake.
    async fn open(&self) -> Result<SslStream<BoxStream>, UplinkError> {
        let tcp = self
            .stack
            .connect_tcp_carrier(self.broker, self.nat_pick)
            .await
            .map_err(|e| UplinkError::Connect(self.broker, e))?;
        let tls = |e: openssl::error::ErrorStack| UplinkError::Tls(e.to_string());
        let mut cfg = self.connector.configure().map_err(tls)?;
        if !self.verify {
            cfg.set_verify_hostname(false);
        }
        let ssl = cfg.into_ssl(self.broker_name).map_err(tls)?;
        let mut s = SslStream::new(ssl, tcp).map_err(tls)?;
        tokio::time::timeout(ACK_TIMEOUT, Pin::new(&mut s).connect())
            .await
            .map_err(|_| UplinkError::Timeout(ACK_TIMEOUT))?
            .map_err(|e| UplinkError::Tls(e.to_string()))?;
        Ok(s)
    }

    /// The MQTT part of a session on the open TLS stream.
    async fn mqtt(
        &self,
        s: SslStream<BoxStream>,
        start: Duration,
    ) -> Result<SessionReport, UplinkError> {
        let mut c = Conn {
            s,
            framer: mqtt::Framer::default(),
            wanted: self.firmware_topic.clone(),
            incoming: Vec::new(),
        };
        c.send(&Packet::Connect {
            client_id: self.device_id.to_string(),
            username: Some(self.username.to_string()),
            password: Some(self.password.as_bytes().to_vec()),
            keep_alive: KEEP_ALIVE,
            clean_session: true,
        })
        .await?;
        match c.next().await? {
            Packet::ConnAck { code: 0, .. } => {}
            Packet::ConnAck { code, .. } => {
                return Err(UplinkError::Refused(code, connack_reason(code)));
            }
            other => {
                return Err(UplinkError::Protocol(format!(
                    "expected CONNACK, got {other:?}"
                )));
            }
        }
        c.send(&Packet::Subscribe {
            id: 1,
            topics: vec![(self.firmware_topic.clone(), 1)],
        })
        .await?;
        // A refused subscription (return code 0x80) is no reason to keep
        // the records: the session goes on without firmware.
        match c.next().await? {
            Packet::SubAck { id: 1, .. } => {}
            other => {
                return Err(UplinkError::Protocol(format!(
                    "expected SUBACK, got {other:?}"
                )));
            }
        }
        let first = lock(self.ring).sent();
        let mut messages = 0u64;
        let mut id: u16 = 1;
        let end = loop {
            if (self.stop)() {
                break SessionEnd::Interrupted;
            }
            if self.clock.now().saturating_sub(start) >= self.session_max {
                break SessionEnd::TimeLimit;
            }
            let batch = lock(self.ring).unsent(BATCH)?;
            let Some(last) = batch.last().map(|r| u64::from(r.seq)) else {
                break SessionEnd::Done;
            };
            id = id.wrapping_add(1).max(1);
            c.send(&Packet::Publish {
                topic: self.topic.clone(),
                id: Some(id),
                dup: false,
                retain: false,
                payload: payload::encode(self.device_id, &batch),
            })
            .await?;
            loop {
                match c.next().await? {
                    Packet::PubAck(a) if a == id => break,
                    Packet::PubAck(_) | Packet::PingResp => {}
                    other => {
                        return Err(UplinkError::Protocol(format!(
                            "expected PUBACK {id}, got {other:?}"
                        )));
                    }
                }
            }
            lock(self.ring).acknowledge(last + 1)?;
            messages += 1;
        };
        let firmware = if end == SessionEnd::Interrupted {
            0
        } else {
            self.firmware(&mut c, &mut id).await?
        };
        let _ = c.send(&Packet::Disconnect).await;
        let _ = c.s.shutdown().await;
        Ok(SessionReport {
            end,
            messages,
            delivered: (first, lock(self.ring).sent()),
            duration: self.clock.now().saturating_sub(start),
            firmware,
        })
    }

    /// The end of a session: a round trip, so a retained firmware image
    /// sent after the SUBACK has arrived, then every firmware message
    /// judged and its report published. Returns the number of messages.
    async fn firmware(&self, c: &mut Conn, id: &mut u16) -> Result<usize, UplinkError> {
        c.send(&Packet::PingReq).await?;
        loop {
            match c.next().await? {
                Packet::PingResp => break,
                Packet::PubAck(_) => {}
                other => {
                    return Err(UplinkError::Protocol(format!(
                        "expected PINGRESP, got {other:?}"
                    )));
                }
            }
        }
        let offers = std::mem::take(&mut c.incoming);
        for offer in &offers {
            let Some(report) = (self.on_firmware)(offer) else {
                continue;
            };
            *id = id.wrapping_add(1).max(1);
            c.send(&Packet::Publish {
                topic: format!("{}/status", self.firmware_topic),
                id: Some(*id),
                dup: false,
                retain: true,
                payload: report.into_bytes(),
            })
            .await?;
            loop {
                match c.next().await? {
                    Packet::PubAck(a) if a == *id => break,
                    Packet::PubAck(_) | Packet::PingResp => {}
                    other => {
                        return Err(UplinkError::Protocol(format!(
                            "expected PUBACK {id}, got {other:?}"
                        )));
                    }
                }
            }
        }
        Ok(offers.len())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
