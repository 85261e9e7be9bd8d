//! DPWS discovery service of the running device (I/O edge of
//! [`crate::proto::dpws`]): UDP 3702 answering Probe and Resolve with
//! unicast ProbeMatches/ResolveMatches, Hello when it comes up and Bye when
//! it goes, and the WS-Transfer metadata over HTTP on the metadata port.
//!
//! Contract: started per interface only while DPWS is activated. Each
//! interface's discovery task follows the interface's address
//! ([`Stack::watch_ipv4`]): it announces (Hello) and answers only once the
//! interface has an address, so a DHCP device waits for its lease and then
//! sends Hello with the leased address in its XAddrs; a new lease sends a
//! new Hello. The task ends with a Bye, sent before it stops: when DPWS is
//! switched off, before a soft reboot, and at a power-off (the task is
//! spawned with [`fieldtwin_emulator::device::DeviceContext::spawn_orderly`],
//! so the power-off waits for the Bye to reach the wire). Hello and Bye go
//! to 239.255.255.250:3702 only from a non-loopback interface address: in
//! host mode (127.77.x.y) there is no multicast segment to announce on, and
//! a client reaches the device with a unicast (directed) Probe.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use fieldtwin_emulator::device::BootError;
use fieldtwin_emulator::net::{Datagram, Stack};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::panel_server::node::Node;
use crate::proto::dpws::{self, Identity, Message};

static MESSAGE_NUMBER: AtomicU64 = AtomicU64::new(1);

fn seq(node: &Node) -> (u64, u64) {
    (
        node.ctx.seed % 1_000_000 + 1,
        MESSAGE_NUMBER.fetch_add(1, Ordering::Relaxed),
    )
}

fn uuid(node: &Node) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.ps.identity.serial.bytes().chain(node.ps.id.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let l = h.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
    crate::proto::ssdp::uuid_text(h, l)
}

fn random_id() -> String {
    format!("urn:uuid:{}", &crate::security::session::token()[..32])
}

/// What the device announces on an interface.
pub fn identity(node: &Node, ip: Ipv4Addr, meta_port: u16, https_port: u16) -> Identity {
    let u = uuid(node);
    let s = node.settings();
    Identity {
        endpoint: format!("urn:uuid:{u}"),
        manufacturer: node.ps.identity.manufacturer.clone(),
        model: node.ps.identity.commercial_reference.clone(),
        serial: node.ps.identity.serial.clone(),
        firmware: s.firmware,
        friendly_name: format!("{} {}", node.ps.identity.product_model, node.ps.id),
        presentation_url: if https_port == 443 {
            format!("https://{ip}/")
        } else {
            format!("https://{ip}:{https_port}/")
        },
        xaddrs: format!("http://{ip}:{meta_port}/{u}"),
        metadata_version: 1,
    }
}

/// Starts DPWS on `iface`.
pub async fn start(
    node: &Arc<Node>,
    iface: &str,
    meta_port: u16,
    token: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), BootError> {
    let Some(stack) = node.ctx.interface(iface) else {
        return Ok(());
    };
    let udp = stack
        .bind_udp(dpws::PORT)
        .await
        .map_err(|source| BootError::Bind {
            service: "dpws".into(),
            port: dpws::PORT,
            source,
        })?;
    // Joining may fail on a loopback-only host: unicast probes still work.
    let _ = udp.join_multicast_v4(dpws::MULTICAST);
    let listener = node.ctx.listen_tcp(iface, "dpws", meta_port).await?;
    let ports = (stack.public_port(meta_port), stack.public_port(443));
    let shown = stack.ipv4();
    let current = Arc::new(RwLock::new(identity(node, shown, ports.0, ports.1)));
    let discovery = Discovery {
        node: node.clone(),
        stack,
        shown,
        udp,
        ports,
        current: current.clone(),
    };
    node.ctx
        .spawn_orderly(tracker.track_future(discovery.run(token.clone())));
    let app = Router::new()
        .route("/{uuid}", post(metadata))
        .with_state(current);
    let t = token.clone();
    let serve = crate::security::https::serve(
        node.ctx.clone(),
        listener,
        None,
        app.into(),
        token.clone(),
        tracker.clone(),
    );
    node.ctx.spawn(tracker.track_future(async move {
        tokio::select! { _ = t.cancelled() => {} _ = serve => {} }
    }));
    Ok(())
}

/// How long the goodbye may take before the task gives up on it.
const GOODBYE: Duration = Duration::from_secs(1);

/// The discovery side of one interface (UDP 3702).
struct Discovery {
    node: Arc<Node>,
    stack: Arc<dyn Stack>,
    udp: Box<dyn Datagram>,
    /// The address `current` was made for.
    shown: Ipv4Addr,
    /// Public metadata and HTTPS ports.
    ports: (u16, u16),
    /// What the device announces now (its address changes with DHCP).
    current: Arc<RwLock<Identity>>,
}

impl Discovery {
    fn identity(&self) -> Identity {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether `ip` may announce on the multicast group.
    fn announces(ip: Ipv4Addr) -> bool {
        !ip.is_loopback() && !ip.is_unspecified()
    }

    async fn run(mut self, token: CancellationToken) {
        let mut address = self.stack.watch_ipv4();
        let mut follow = true;
        let mut announced = false;
        let mut buf = vec![0u8; dpws::MAX_MESSAGE + 1];
        loop {
            let ip = *address.borrow_and_update();
            if ip != self.shown {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) =
                    identity(&self.node, ip, self.ports.0, self.ports.1);
                self.shown = ip;
                announced = false;
            }
            if !announced && Self::announces(ip) {
                let hello = dpws::hello(&self.identity(), &random_id(), seq(&self.node));
                let _ = self.udp.send_to(hello.as_bytes(), multicast()).await;
                announced = true;
            }
            tokio::select! {
                _ = token.cancelled() => break,
                changed = address.changed(), if follow => {
                    // A static address never changes: stop following it.
                    follow = changed.is_ok();
                }
                got = self.udp.recv_from(&mut buf) => {
                    if let Ok((len, from)) = got {
                        self.answer(&buf[..len], from).await;
                    }
                }
            }
        }
        if announced && Self::announces(self.shown) {
            let bye = dpws::bye(&self.identity(), &random_id(), seq(&self.node));
            let goodbye = async {
                let _ = self.udp.send_to(bye.as_bytes(), multicast()).await;
                let _ = self.udp.flush().await;
            };
            let _ = tokio::time::timeout(GOODBYE, goodbye).await;
        }
    }

    async fn answer(&self, datagram: &[u8], from: SocketAddr) {
        if self.stack.ipv4().is_unspecified() {
            // No address yet (DHCP): nothing to advertise.
            return;
        }
        // Most datagrams are other devices' Hello and Bye (every device of
        // the segment announces itself at boot): they are dropped before
        // they are decoded, since only a Probe or a Resolve gets an answer.
        let asks = |word: &[u8]| memchr::memmem::find(datagram, word).is_some();
        if !asks(b"Probe") && !asks(b"Resolve") {
            return;
        }
        let text = String::from_utf8_lossy(datagram);
        let reply = match dpws::parse(&text) {
            Message::Probe { message_id, types } if dpws::matches(&types) => Some(
                dpws::probe_matches(&self.identity(), &random_id(), &message_id, seq(&self.node)),
            ),
            Message::Resolve {
                message_id,
                address,
            } => {
                let id = self.identity();
                (address == id.endpoint)
                    .then(|| dpws::resolve_matches(&id, &random_id(), &message_id, seq(&self.node)))
            }
            _ => None,
        };
        if let Some(r) = reply {
            let _ = self.udp.send_to(r.as_bytes(), from).await;
        }
    }
}

fn multicast() -> SocketAddr {
    SocketAddr::from((dpws::MULTICAST, dpws::PORT))
}

async fn metadata(State(current): State<Arc<RwLock<Identity>>>, body: Bytes) -> impl IntoResponse {
    let id = current.read().unwrap_or_else(|e| e.into_inner()).clone();
    let text = String::from_utf8_lossy(&body);
    match dpws::parse(&text) {
        Message::Get { message_id } => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/soap+xml; charset=utf-8")],
            dpws::get_response(&id, &random_id(), &message_id),
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "expected a WS-Transfer Get (SOAP 1.2)".to_string(),
        ),
    }
}
