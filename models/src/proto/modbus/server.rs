//! Modbus TCP server loop over the transport API: accepts clients on a
//! device listener, frames requests with [`super::mbap`], asks a [`Handler`]
//! and writes the answers.
//!
//! Contract:
//! - Requests on one connection are answered in order; every decodable
//!   request gets an answer (data or exception). A frame with a bad MBAP
//!   header closes the connection; nothing a client sends can panic or stop
//!   the server.
//! - At most `max_clients` connections are served at once (the Panel Server
//!   allows 128); the next client is accepted and closed at once.
//! - A connection on which no byte arrives during a whole [`IDLE_WINDOW`]
//!   of device time is closed (FIN): a client that vanished without closing
//!   (a half-open connection) frees its slot after 5 to 10 minutes, as TCP
//!   keep-alive or an idle timeout does on the product (window length [NF]:
//!   docs/panel-server.md "Modbus TCP connections").
//! - Connection tasks belong to the device ([`DeviceContext::spawn`]), so they
//!   end when it loses power.
//! - Every decoded request bumps the device's [`REQUESTS_COUNTER`] (shown by
//!   the control API and the dashboard as requests per second).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use fieldtwin_emulator::clock::Clock;
use fieldtwin_emulator::device::{Counter, DeviceContext, TrackedListener};
use fieldtwin_emulator::net::BoxStream;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::mbap::{self, Adu};
use super::{Exception, Request, Response};

/// Device time a connection may stay silent, checked once per window: a
/// connection silent for a whole window is closed.
pub const IDLE_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// Name of the device counter of Modbus requests served.
pub const REQUESTS_COUNTER: &str = "modbus_requests";

/// What answers Modbus requests: the device's register logic.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request addressed to unit `unit`.
    fn handle(&self, unit: u8, req: Request) -> BoxFuture<'_, Result<Response, Exception>>;
}

/// Answers one request PDU: decode, handle, encode (exceptions included).
pub async fn answer(handler: &dyn Handler, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let function = pdu.first().copied().unwrap_or(0);
    let response = match Request::decode(pdu) {
        Ok(req) => handler
            .handle(unit, req)
            .await
            .unwrap_or_else(|e| Response::exception(function, e)),
        Err(e) => Response::exception(function, e),
    };
    response.encode()
}

/// Serves `listener` until the device loses power.
pub async fn serve(
    ctx: DeviceContext,
    mut listener: TrackedListener,
    handler: Arc<dyn Handler>,
    max_clients: usize,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let requests = ctx.counter(REQUESTS_COUNTER);
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        if active.load(Ordering::Acquire) >= max_clients {
            drop(stream);
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let guard = ActiveGuard(active.clone());
        let handler = handler.clone();
        let requests = requests.clone();
        let clock = ctx.clock.clone();
        ctx.spawn(async move {
            let _guard = guard;
            let _ = connection(stream, &*handler, &requests, &clock).await;
        });
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn connection(
    mut stream: BoxStream,
    handler: &dyn Handler,
    requests: &Counter,
    clock: &Clock,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(512);
    let mut out = Vec::with_capacity(512);
    // Reads are counted rather than timed, so a busy connection costs no
    // clock operation per request; the window timer is re-armed once per
    // window.
    let mut reads = 0u64;
    let mut reads_at_window = 0u64;
    let mut window = std::pin::pin!(clock.sleep(IDLE_WINDOW));
    loop {
        loop {
            match mbap::decode(&mut buf) {
                Ok(Some(req)) => {
                    requests.inc();
                    let pdu = answer(handler, req.unit, &req.pdu).await;
                    mbap::encode(
                        &Adu {
                            transaction: req.transaction,
                            unit: req.unit,
                            pdu,
                        },
                        &mut out,
                    );
                }
                Ok(None) => break,
                Err(_) => {
                    stream.write_all(&out).await?;
                    return stream.shutdown().await;
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        loop {
            tokio::select! {
                n = stream.read_buf(&mut buf) => {
                    if n? == 0 {
                        return Ok(());
                    }
                    reads += 1;
                    break;
                }
                () = &mut window => {
                    if reads == reads_at_window {
                        return stream.shutdown().await;
                    }
                    reads_at_window = reads;
                    window.set(clock.sleep(IDLE_WINDOW));
                }
            }
        }
    }
}
