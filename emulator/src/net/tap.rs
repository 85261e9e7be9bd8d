//! The TAP device: the host side's port on the switch (tun-rs, Linux).
//!
//! Contract:
//! - [`Tap::open`] creates a TAP (Ethernet) device, gives it the site's
//!   host-side address and brings it up, either in the network namespace the
//!   process runs in, or — with `netns` — in that named namespace (created
//!   by `fieldtwin lab up` or by a test): the TAP is created here, moved into
//!   the namespace with `ip link set .. netns ..` and configured there, while
//!   the process (and its control API) stays in its own namespace. The open
//!   file descriptor keeps working across the move.
//! - Direct ([`Tap::open`]): frames read from the TAP enter every switch
//!   bridged to it; frames those switches send to the TAP port are written
//!   to it. The host side's address has the prefix of the lab subnet, so
//!   the host keeps one neighbour entry per device it talks to.
//! - Routed ([`Tap::open_routed`]): the TAP is plugged into the emulated
//!   [`super::router`] only, which is plugged into the bridged switches.
//!   The host side's address keeps its prefix but gets no on-link route
//!   (`noprefixroute`); instead the router's address is on-link and every
//!   routed subnet goes via it, so the host keeps one neighbour entry
//!   however many devices there are (docs/lab.md "Routed lab").
//! - The reader reads until the TAP has nothing more (at most
//!   [`READ_BATCH`] frames per wake-up) and feeds the frames of one wake-up
//!   to the switches as one [`switch::batch`]: each device that got frames
//!   processes them once, on the reader's task. Frames to the TAP are
//!   written at once by whoever sends them (a TAP write carries one frame,
//!   so a queue would only add a hand-off). Frame buffers come from the
//!   switch's pool and go back to it once written.
//! - Without CAP_NET_ADMIN the error says so and how to get it.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;

use tun_rs::{DeviceBuilder, Layer};

use super::router::{RouterLink, RouterPlan};
use super::switch::{self, Network, PortKind, Segment};

/// Frames read from the TAP per wake-up, at most (then other tasks run).
pub const READ_BATCH: usize = 64;

/// Reads frames from `dev` and hands each to `deliver`, one
/// [`switch::batch`] per wake-up, until the TAP fails.
async fn read_loop(dev: Arc<tun_rs::AsyncDevice>, mut deliver: impl FnMut(&[u8])) {
    let mut buf = vec![0u8; 65536];
    loop {
        let first = match dev.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("TAP read failed: {e}; the host side is cut off");
                return;
            }
        };
        switch::batch(|| {
            drain(first, &mut buf, |b| dev.try_recv(b), &mut deliver);
        });
    }
}

/// One wake-up's worth of frames: delivers the frame of `first` bytes
/// already in `buf`, then reads more with `try_read` (nothing more, or an
/// error the next blocking read reports, ends it) and delivers each, at
/// most [`READ_BATCH`] in all. Every frame read is delivered.
fn drain(
    first: usize,
    buf: &mut [u8],
    mut try_read: impl FnMut(&mut [u8]) -> std::io::Result<usize>,
    deliver: &mut impl FnMut(&[u8]),
) -> usize {
    let mut n = first;
    let mut count = 1;
    loop {
        deliver(&buf[..n]);
        if count == READ_BATCH {
            return count;
        }
        match try_read(buf) {
            Ok(m) => {
                n = m;
                count += 1;
            }
            Err(_) => return count,
        }
    }
}

/// Errors of opening the TAP.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(
        "cannot create TAP device {name}. TAP mode needs CAP_NET_ADMIN: run it as root \
         (`sudo fieldtwin lab up`, then `sudo fieldtwin run --tap --netns fieldtwin`), \
         or use host mode (no --tap)"
    )]
    Create {
        name: String,
        source: std::io::Error,
    },
    #[error("network namespace {0:?} does not exist; create it with `fieldtwin lab up --name {0}`")]
    NoNamespace(String),
    #[error("configuring TAP device {name} failed: `{command}`: {message}")]
    Configure {
        name: String,
        command: String,
        message: String,
    },
    #[error("no segment of the site is bridged to the TAP (set bridge = \"tap\" on one)")]
    NothingBridged,
}

/// Settings of the TAP.
#[derive(Debug, Clone)]
pub struct TapConfig {
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// Host-side address on the TAP.
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// Named network namespace to put the TAP in (default: the current one).
    pub netns: Option<String>,
}

/// An open TAP, plugged into the switches bridged to it or into the router.
#[derive(Debug)]
pub struct Tap {
    pub name: String,
    pub netns: Option<String>,
    /// The router between the TAP and the switches, when routed.
    pub router: Option<Arc<RouterLink>>,
}

/// Runs `ip ARGS` (inside `ns` when given: `ip -n NS ARGS`).
fn ip_in(ns: Option<&str>, args: &[&str], name: &str) -> Result<(), TapError> {
    let mut all: Vec<&str> = Vec::new();
    if let Some(ns) = ns {
        all.extend(["-n", ns]);
    }
    all.extend_from_slice(args);
    ip(&all, name)
}

fn ip(args: &[&str], name: &str) -> Result<(), TapError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| TapError::Configure {
            name: name.to_string(),
            command: format!("ip {}", args.join(" ")),
            message: format!("cannot run ip (iproute2): {e}"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TapError::Configure {
            name: name.to_string(),
            command: format!("ip {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether named network namespace `name` exists.
pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// How the routes of the host side are set.
enum Addressing<'a> {
    /// `address/prefix`, on-link.
    Direct,
    /// `address/prefix noprefixroute`, the router on-link, every routed
    /// subnet via the router.
    Routed(&'a RouterPlan),
}

impl Tap {
    /// Creates the TAP and starts moving frames between it and `switches`
    /// (call inside a tokio runtime).
    pub fn open(cfg: &TapConfig, switches: Vec<Arc<Segment>>) -> Result<Tap, TapError> {
        if switches.is_empty() {
            return Err(TapError::NothingBridged);
        }
        let dev = Arc::new(Self::create(cfg, Addressing::Direct)?);
        let mut handles = Vec::new();
        for seg in &switches {
            let dev = dev.clone();
            // Written without blocking from the switch; a full TAP queue
            // drops the frame like a full switch port.
            let sink = Arc::new(move |frame: Vec<u8>| {
                let sent = dev.try_send(&frame).is_ok();
                switch::recycle(frame);
                sent
            });
            handles.push(seg.attach_direct(PortKind::Tap, 0x7a9, sink));
        }
        tokio::spawn(read_loop(dev.clone(), move |frame| {
            for h in &handles {
                h.send(switch::frame_from(frame));
            }
        }));
        Ok(Tap {
            name: cfg.name.clone(),
            netns: cfg.netns.clone(),
            router: None,
        })
    }

    /// Creates the TAP with the routes of `plan` and puts the emulated
    /// router between it and the switches of `network` that `plan` routes
    /// (call inside a tokio runtime).
    pub fn open_routed(
        cfg: &TapConfig,
        plan: &RouterPlan,
        network: &Network,
    ) -> Result<Tap, TapError> {
        let switches: Vec<Arc<Segment>> = plan
            .segments
            .iter()
            .filter_map(|s| network.segment(&s.name).cloned())
            .collect();
        if switches.is_empty() || switches.len() != plan.segments.len() {
            return Err(TapError::NothingBridged);
        }
        let dev = Arc::new(Self::create(cfg, Addressing::Routed(plan))?);
        let writer = dev.clone();
        let link = RouterLink::attach(
            plan,
            &switches,
            Arc::new(move |frame: &[u8]| writer.try_send(frame).is_ok()),
        );
        let weak = Arc::downgrade(&link);
        tokio::spawn(read_loop(dev.clone(), move |frame| {
            if let Some(link) = weak.upgrade() {
                link.from_tap(switch::frame_from(frame));
            }
        }));
        Ok(Tap {
            name: cfg.name.clone(),
            netns: cfg.netns.clone(),
            router: Some(link),
        })
    }

    /// Creates the TAP device, in `cfg.netns` if given, with its address
    /// and routes.
    fn create(
        cfg: &TapConfig,
        addressing: Addressing<'_>,
    ) -> Result<tun_rs::AsyncDevice, TapError> {
        let ns = cfg.netns.as_deref();
        if let Some(ns) = ns
            && !netns_exists(ns)
        {
            return Err(TapError::NoNamespace(ns.to_string()));
        }
        let dev = match (ns, &addressing) {
            (None, Addressing::Direct) => {
                return DeviceBuilder::new()
                    .name(&cfg.name)
                    .layer(Layer::L2)
                    .mtu(1500)
                    .ipv4(cfg.address, cfg.prefix, None)
                    .build_async()
                    .map_err(|source| TapError::Create {
                        name: cfg.name.clone(),
                        source,
                    });
            }
            (None, Addressing::Routed(_)) => DeviceBuilder::new()
                .name(&cfg.name)
                .layer(Layer::L2)
                .mtu(1500)
                .enable(false)
                .build_async()
                .map_err(|source| TapError::Create {
                    name: cfg.name.clone(),
                    source,
                })?,
            (Some(ns), _) => {
                // A temporary unique name in this namespace, renamed there.
                let tmp = format!("ftt{}", std::process::id() % 10_000_000);
                let dev = DeviceBuilder::new()
                    .name(&tmp)
                    .layer(Layer::L2)
                    .mtu(1500)
                    .enable(false)
                    .build_async()
                    .map_err(|source| TapError::Create {
                        name: cfg.name.clone(),
                        source,
                    })?;
                ip(&["link", "set", "dev", &tmp, "netns", ns], &cfg.name)?;
                ip_in(
                    Some(ns),
                    &["link", "set", "dev", &tmp, "name", &cfg.name],
                    &cfg.name,
                )?;
                dev
            }
        };
        let name = cfg.name.as_str();
        let cidr = format!("{}/{}", cfg.address, cfg.prefix);
        match addressing {
            Addressing::Direct => {
                ip_in(ns, &["addr", "add", &cidr, "dev", name], name)?;
                ip_in(ns, &["link", "set", "dev", name, "up"], name)?;
            }
            Addressing::Routed(plan) => {
                ip_in(
                    ns,
                    &["addr", "add", &cidr, "dev", name, "noprefixroute"],
                    name,
                )?;
                ip_in(ns, &["link", "set", "dev", name, "up"], name)?;
                let router = plan.router.to_string();
                ip_in(
                    ns,
                    &["route", "replace", &format!("{router}/32"), "dev", name],
                    name,
                )?;
                for s in &plan.segments {
                    let net = Ipv4Addr::from(u32::from(s.subnet.network) & s.subnet.mask());
                    ip_in(
                        ns,
                        &[
                            "route",
                            "replace",
                            &format!("{net}/{}", s.subnet.prefix),
                            "via",
                            &router,
                            "dev",
                            name,
                        ],
                        name,
                    )?;
                }
            }
        }
        Ok(dev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source of `total` one-byte frames (0, 1, ...), the first of
    /// which is already in the buffer; then WouldBlock.
    fn run(total: usize) -> (Vec<u8>, usize, usize) {
        let mut buf = vec![0u8; 16];
        let mut next = 1u8;
        let mut delivered = Vec::new();
        let count = drain(
            1,
            &mut buf,
            |b| {
                if usize::from(next) == total {
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                b[0] = next;
                next += 1;
                Ok(1)
            },
            &mut |f: &[u8]| delivered.push(f[0]),
        );
        (delivered, count, usize::from(next))
    }

    #[test]
    fn every_frame_read_is_delivered_in_order() {
        for total in [1, 2, READ_BATCH - 1, READ_BATCH] {
            let (delivered, count, read) = run(total);
            assert_eq!(
                delivered,
                (0..total as u8).collect::<Vec<_>>(),
                "{total} frames"
            );
            assert_eq!((count, read), (total, total));
        }
    }

    #[test]
    fn a_full_batch_stops_before_reading_a_frame_it_would_not_deliver() {
        // More frames wait than a batch takes: the batch delivers
        // READ_BATCH and leaves the rest in the TAP for the next wake-up
        // (a frame read but not delivered would be lost).
        let (delivered, count, read) = run(READ_BATCH + 10);
        assert_eq!(delivered.len(), READ_BATCH);
        assert_eq!(count, READ_BATCH);
        assert_eq!(read, READ_BATCH, "read exactly the frames delivered");
    }
}
