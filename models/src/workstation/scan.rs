//! TCP connect scan through the Workstation's own stack (what `nmap -sT`
//! does): a port is open when the three-way handshake completes, closed
//! when the target resets, filtered when nothing answers in time.
//!
//! Contract:
//! - At most [`PARALLEL`] connects are in flight; each waits at most
//!   [`PROBE_TIMEOUT`], so 65,535 filtered ports take at most about
//!   65535 / PARALLEL * PROBE_TIMEOUT.
//! - Ports are device ports. In host mode with the port offset (ports below
//!   1024 moved up by `host::PORT_OFFSET`), port P < 1024 is probed where it
//!   really listens and the ports those moved services occupy are not
//!   reported a second time as themselves.
//! - Host mode: a port open on the target's loopback address is probed
//!   again on [`CONTROL_ADDRESS`], which no device uses; if it answers
//!   there too it is a listener of the host on 0.0.0.0 (another program),
//!   reported in `host_listeners` and not as a port of the device.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use fieldtwin_emulator::attack::AttackResult;
use fieldtwin_emulator::net::Stack;
use futures::StreamExt;

use super::endpoint;

/// Connects in flight at once.
pub const PARALLEL: usize = 256;
/// A loopback address no device uses (host mode control probes).
pub const CONTROL_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 77, 255, 253);
/// How long one probe waits for an answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

enum Probe {
    Open,
    Closed,
    Filtered,
}

/// Scans `ports` of `ip` from `stack`.
pub async fn port_scan(stack: Arc<dyn Stack>, ip: Ipv4Addr, ports: Vec<u16>) -> AttackResult {
    // The host-mode offset (0 when services keep their ports).
    let offset = stack.public_port(1).saturating_sub(1);
    let shadow = |p: u16| offset > 0 && p >= offset && p - offset < 1024;
    let scanned = ports.len();
    let probes = futures::stream::iter(ports.into_iter().filter(|p| !shadow(*p)))
        .map(|port| {
            let stack = stack.clone();
            async move {
                let to = endpoint(stack.as_ref(), ip, port);
                let r = match tokio::time::timeout(PROBE_TIMEOUT, stack.connect_tcp(to)).await {
                    Ok(Ok(s)) => {
                        drop(s);
                        Probe::Open
                    }
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => Probe::Filtered,
                    Ok(Err(_)) => Probe::Closed,
                    Err(_) => Probe::Filtered,
                };
                (port, r)
            }
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await;
    let mut open: Vec<u16> = probes
        .iter()
        .filter(|(_, r)| matches!(r, Probe::Open))
        .map(|(p, _)| *p)
        .collect();
    open.sort_unstable();
    let mut host_listeners = Vec::new();
    if stack.mac().is_none() {
        // Host mode: the same port on an address of nobody answers too?
        for p in std::mem::take(&mut open) {
            let to = endpoint(stack.as_ref(), CONTROL_ADDRESS, p);
            let host = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, stack.connect_tcp(to)).await,
                Ok(Ok(_))
            );
            if host {
                host_listeners.push(p);
            } else {
                open.push(p);
            }
        }
    }
    AttackResult::PortScan {
        open,
        host_listeners,
        scanned,
        filtered: probes
            .iter()
            .filter(|(_, r)| matches!(r, Probe::Filtered))
            .count(),
        port_offset: offset,
    }
}
