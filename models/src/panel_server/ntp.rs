//! The Panel Server's NTP client (seed "Date and Time": the date and time
//! come from an NTP server or are set manually). It synchronises the
//! device's RTC from the configured server over the device's own transport
//! (UDP from ETH1, so in TAP mode the request crosses the switch, the link
//! faults and the pcap like any device traffic).
//!
//! Contract ([NF] choices, docs/panel-server.md "Date and time"):
//! - Runs while the settings name a server ([`Settings::ntp_server`]); it
//!   is restarted when that setting changes. The server is an IPv4 address
//!   (the device has no DNS resolver); a name is reported as unusable.
//! - One SNTP exchange ([`crate::proto::ntp`]) at start, then every
//!   [`POLL`] of device time after a success and every [`RETRY`] after a
//!   failure (no answer within [`TIMEOUT`] of wall time — network timeouts
//!   stay in wall time — a refused or forged reply).
//! - An offset of [`STEP`] or more steps the RTC and writes a "date/time
//!   changed" audit entry with the old and new times and the server; a
//!   smaller offset is corrected at once without an audit entry (the
//!   product slews it; the emulator's RTC has no slew rate).
//! - While the server is unreachable the RTC keeps running at its
//!   site-file drift (ppm): nothing else changes it.
//! - Every outcome is a device event `ntp`; [`Status`] keeps the last one
//!   for the Settings page.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::node::Node;
use crate::proto::ntp::{self, Packet, Timestamp};
use crate::security::audit::Kind;

/// Device time between two synchronisations after a success (2^10 s, NTP's
/// default maximum poll interval).
pub const POLL: Duration = Duration::from_secs(1024);
/// Device time before a new attempt after a failure (2^6 s, NTP's minimum
/// poll interval).
pub const RETRY: Duration = Duration::from_secs(64);
/// Wall time to wait for the server's reply.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Offsets of this size or more are stepped and audited.
pub const STEP: f64 = 0.128;

/// The last synchronisation, for the Settings page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// RTC time of the last successful exchange.
    pub last_sync: Option<DateTime<Utc>>,
    /// Offset corrected then, in seconds.
    pub last_offset_s: f64,
    /// What went wrong with the last attempt, if it failed.
    pub error: Option<String>,
}

/// What to do with a measured offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Correction {
    /// Set the RTC and audit it.
    Step(f64),
    /// Correct it silently.
    Adjust(f64),
}

/// The correction of an offset (see the module contract).
pub fn correction(offset_s: f64) -> Correction {
    if offset_s.abs() >= STEP {
        Correction::Step(offset_s)
    } else {
        Correction::Adjust(offset_s)
    }
}

/// The server's address from the setting.
pub fn server_addr(setting: &str) -> Result<SocketAddr, String> {
    setting
        .parse::<Ipv4Addr>()
        .map(|ip| SocketAddr::from((ip, ntp::PORT)))
        .map_err(|_| {
            format!(
                "NTP server {setting:?} is not an IPv4 address; this device has no DNS resolver"
            )
        })
}

/// Synchronises until the node's boot ends or the setting changes (the
/// caller cancels the task).
pub async fn run(node: Arc<Node>, server: String) {
    let mut nonce: u64 = node.ctx.seed;
    loop {
        nonce = nonce
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait = match exchange(&node, &server, nonce).await {
            Ok(offset) => {
                apply(&node, &server, offset);
                POLL
            }
            Err(e) => {
                node.ctx
                    .emit("ntp", format!("synchronisation with {server} failed: {e}"));
                node.ntp_status(|s| s.error = Some(e));
                RETRY
            }
        };
        node.ctx.clock.sleep(wait).await;
    }
}

/// One exchange; returns the clock offset in seconds.
async fn exchange(node: &Node, server: &str, nonce: u64) -> Result<f64, String> {
    let to = server_addr(server)?;
    let stack = node
        .ctx
        .interface("eth1")
        .ok_or_else(|| "no ETH1 interface".to_string())?;
    let sock = stack
        .bind_udp(0)
        .await
        .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let t1 = node.ctx.rtc.now();
    // The low bits of the fraction are random (RFC 5905 §9.1 suggests it):
    // a reply must echo them, which a blind forger cannot.
    let sent = Timestamp((Timestamp::from_utc(t1).0 & !0xFFFF) | (nonce >> 48));
    sock.send_to(&Packet::request(sent).encode(), to)
        .await
        .map_err(|e| format!("cannot send to {to}: {e}"))?;
    let mut buf = [0u8; 512];
    let reply = tokio::time::timeout(TIMEOUT, async {
        loop {
            let (n, from) = sock.recv_from(&mut buf).await?;
            if from != to {
                continue;
            }
            let t4 = node.ctx.rtc.now();
            return Ok::<_, std::io::Error>((Packet::decode(&buf[..n]), t4));
        }
    })
    .await
    .map_err(|_| format!("no answer from {to} within {} s", TIMEOUT.as_secs()))?
    .map_err(|e| format!("receiving from {to}: {e}"))?;
    let (packet, t4) = reply;
    let packet = packet.map_err(|e| e.to_string())?;
    let (t2, t3) = ntp::check_reply(sent, &packet).map_err(|e| e.to_string())?;
    let (offset, _delay) = ntp::offset_and_delay(t1, t2, t3, t4);
    if !offset.is_finite() || offset.abs() > 200.0 * 365.0 * 86_400.0 {
        return Err(format!("offset {offset} s is out of range"));
    }
    Ok(offset)
}

fn apply(node: &Node, server: &str, offset: f64) {
    let before = node.ctx.rtc.now();
    let after = before + chrono::Duration::microseconds((offset * 1e6) as i64);
    if let Err(e) = node.ctx.rtc.set(after) {
        node.ctx.emit("ntp", format!("saving the RTC failed: {e}"));
        return;
    }
    node.ntp_status(|s| {
        s.last_sync = Some(after);
        s.last_offset_s = offset;
        s.error = None;
    });
    match correction(offset) {
        Correction::Step(o) => {
            let f = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            node.audit(
                Kind::DateTimeChanged,
                format!(
                    "date/time set by NTP server {server} from {} to {} (offset {o:+.3} s)",
                    f(before),
                    f(after)
                ),
            );
        }
        Correction::Adjust(o) => {
            node.ctx.emit(
                "ntp",
                format!("synchronised with {server} (offset {o:+.3} s)"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_offsets_are_stepped_small_ones_adjusted() {
        assert_eq!(correction(3600.0), Correction::Step(3600.0));
        assert_eq!(correction(-0.2), Correction::Step(-0.2));
        assert_eq!(correction(0.05), Correction::Adjust(0.05));
    }

    #[test]
    fn the_server_must_be_an_address() {
        assert_eq!(
            server_addr("10.77.0.1").unwrap(),
            "10.77.0.1:123".parse().unwrap()
        );
        assert!(server_addr("pool.ntp.org").unwrap_err().contains("DNS"));
    }
}
