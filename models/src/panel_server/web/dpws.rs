//! DPWS discovery service of the running device (I/O edge of
//! [`crate::proto::dpws`]): UDP 3702 answering Probe and Resolve with
//! unicast ProbeMatches/ResolveMatches, Hello when started and Bye when
//! stopped, and the WS-Transfer metadata over HTTP on the metadata port.
//!
//! Contract: started per interface only while DPWS is activated; disabling
//! it sends Bye and closes 3702 and the metadata port. Hello and Bye go to
//! 239.255.255.250:3702 only from a non-loopback interface address: in host
//! mode (127.77.x.y) there is no multicast segment to announce on, and a
//! client reaches the device with a unicast (directed) Probe.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use fieldtwin_emulator::device::BootError;
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
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        l >> 52,
        l & 0xffff_ffff_ffff
    )
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
    let id = identity(
        node,
        stack.ipv4(),
        stack.public_port(meta_port),
        stack.public_port(443),
    );
    if !stack.ipv4().is_loopback() {
        let hello = dpws::hello(&id, &random_id(), seq(node));
        let _ = udp.send_to(hello.as_bytes(), multicast()).await;
    }
    let n = node.clone();
    let id2 = id.clone();
    let udp_loop = async move {
        let mut buf = vec![0u8; dpws::MAX_MESSAGE + 1];
        loop {
            let Ok((len, from)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..len]);
            let reply = match dpws::parse(&text) {
                Message::Probe { message_id, types } if dpws::matches(&types) => Some(
                    dpws::probe_matches(&id2, &random_id(), &message_id, seq(&n)),
                ),
                Message::Resolve {
                    message_id,
                    address,
                } if address == id2.endpoint => Some(dpws::resolve_matches(
                    &id2,
                    &random_id(),
                    &message_id,
                    seq(&n),
                )),
                _ => None,
            };
            if let Some(r) = reply {
                let _ = udp.send_to(r.as_bytes(), from).await;
            }
        }
    };
    let t = token.clone();
    node.ctx.spawn(tracker.track_future(async move {
        tokio::select! { _ = t.cancelled() => {} _ = udp_loop => {} }
    }));
    let app = Router::new()
        .route("/{uuid}", post(metadata))
        .with_state(Arc::new(id));
    let t = token.clone();
    let serve = crate::security::https::serve(
        node.ctx.clone(),
        listener,
        None,
        app,
        token.clone(),
        tracker.clone(),
    );
    node.ctx.spawn(tracker.track_future(async move {
        tokio::select! { _ = t.cancelled() => {} _ = serve => {} }
    }));
    Ok(())
}

fn multicast() -> SocketAddr {
    SocketAddr::from((dpws::MULTICAST, dpws::PORT))
}

/// Sends Bye from every non-loopback interface.
pub async fn bye(node: &Arc<Node>) {
    for iface in node.ctx.interface_names() {
        let Some(stack) = node.ctx.interface(&iface) else {
            continue;
        };
        if stack.ipv4().is_loopback() {
            continue;
        }
        if let Ok(udp) = stack.bind_udp(0).await {
            let id = identity(node, stack.ipv4(), 0, 443);
            let b = dpws::bye(&id, &random_id(), seq(node));
            let _ = udp.send_to(b.as_bytes(), multicast()).await;
        }
    }
}

async fn metadata(State(id): State<Arc<Identity>>, body: Bytes) -> impl IntoResponse {
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
