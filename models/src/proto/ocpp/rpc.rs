//! OCPP-J RPC over one WebSocket: both ends of a link (a station and its
//! central system, the EVCE and a CSMS) use it the same way.
//!
//! Contract:
//! - [`start`] takes an open WebSocket (over any [`BoxStream`]: kernel
//!   socket, smoltcp, TLS) and returns an [`Rpc`] handle for outgoing CALLs,
//!   the receiver of incoming CALLs (each with its [`Responder`]) and the
//!   driver future, which the caller spawns. The driver ends when the peer
//!   closes, the socket fails, [`Rpc::close`] is called or no pong (or any
//!   frame) came back within two ping intervals.
//! - CALL unique ids are numbers, unique across every link of the process.
//! - Calls on one link are serialised: a CALL leaves only once the
//!   previous one was answered, failed or timed out (OCPP-J: one CALL
//!   outstanding per direction).
//! - [`Rpc::call`] waits for the CALLRESULT or CALLERROR with the same id,
//!   at most `timeout` (wall time: the peer is a real TCP peer), and fails
//!   with [`CallFailed::Closed`] if the link ends first.
//! - A malformed incoming frame gets its CALLERROR when its id is readable
//!   and is dropped otherwise; the link stays up (DESIGN.md principle 5).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldtwin_emulator::net::BoxStream;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{ErrorCode, Frame};

/// An OCPP-J link over a WebSocket.
pub type Ws = WebSocketStream<BoxStream>;

/// Why a CALL got no result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallFailed {
    #[error("the peer answered {code:?}: {description}")]
    Error {
        code: ErrorCode,
        description: String,
    },
    #[error("no answer within the message timeout")]
    Timeout,
    #[error("the link is closed")]
    Closed,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Result<Value, CallFailed>>>>>;

/// Handle for outgoing CALLs on one link.
#[derive(Clone)]
pub struct Rpc {
    /// One CALL outstanding at a time per link (OCPP-J 1.6 §4.1.1).
    serial: Arc<tokio::sync::Mutex<()>>,
    out: mpsc::UnboundedSender<Frame>,
    pending: Pending,
    closed: CancellationToken,
}

/// A CALL received from the peer.
pub struct Incoming {
    pub id: String,
    pub action: String,
    pub payload: Value,
    pub reply: Responder,
}

/// Answers one incoming CALL.
pub struct Responder {
    id: String,
    out: mpsc::UnboundedSender<Frame>,
}

impl Responder {
    pub fn ok(self, payload: impl serde::Serialize) {
        let _ = self.out.send(Frame::result(self.id, payload));
    }
    pub fn value(self, payload: Value) {
        let _ = self.out.send(Frame::CallResult {
            id: self.id,
            payload,
        });
    }
    pub fn error(self, code: ErrorCode, description: &str) {
        let _ = self.out.send(Frame::error(self.id, code, description));
    }
}

impl Rpc {
    /// Sends CALL `action` and waits for its answer.
    pub async fn call(
        &self,
        action: &str,
        payload: Value,
        timeout: Duration,
    ) -> Result<Value, CallFailed> {
        if self.closed.is_cancelled() {
            return Err(CallFailed::Closed);
        }
        let _one_at_a_time = tokio::select! {
            g = self.serial.lock() => g,
            _ = tokio::time::sleep(timeout) => return Err(CallFailed::Timeout),
            _ = self.closed.cancelled() => return Err(CallFailed::Closed),
        };
        // Unique ids across every link of the process, so a peer's log of
        // several connections never sees one id twice.
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed).to_string();
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id.clone(), tx);
        if self
            .out
            .send(Frame::Call {
                id: id.clone(),
                action: action.to_string(),
                payload,
            })
            .is_err()
        {
            lock(&self.pending).remove(&id);
            return Err(CallFailed::Closed);
        }
        let r = tokio::select! {
            r = rx => r.unwrap_or(Err(CallFailed::Closed)),
            _ = tokio::time::sleep(timeout) => Err(CallFailed::Timeout),
            _ = self.closed.cancelled() => Err(CallFailed::Closed),
        };
        lock(&self.pending).remove(&id);
        r
    }

    /// Ends the link (the driver closes the WebSocket).
    pub fn close(&self) {
        self.closed.cancel();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// A token cancelled when the link ends.
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts RPC on `ws` (see the module contract). `ping`: WebSocket ping
/// interval (none: never ping).
pub fn start(
    ws: Ws,
    ping: Option<Duration>,
) -> (
    Rpc,
    mpsc::UnboundedReceiver<Incoming>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Frame>();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let pending: Pending = Arc::default();
    let closed = CancellationToken::new();
    let rpc = Rpc {
        serial: Arc::default(),
        out: out_tx.clone(),
        pending: pending.clone(),
        closed: closed.clone(),
    };
    let driver = async move {
        // The link counts as closed however the driver ends, also when the
        // task running it is aborted (the device lost power).
        let _closed_on_drop = closed.clone().drop_guard();
        let mut ws = ws;
        let period = ping.unwrap_or(Duration::from_secs(3600));
        let mut ticker = tokio::time::interval(period);
        ticker.tick().await;
        let mut heard = true;
        loop {
            tokio::select! {
                _ = closed.cancelled() => break,
                f = out_rx.recv() => {
                    let Some(f) = f else { break };
                    if ws.send(Message::text(f.encode())).await.is_err() {
                        break;
                    }
                }
                _ = ticker.tick(), if ping.is_some() => {
                    if !heard {
                        tracing::debug!("OCPP peer silent for two ping intervals; closing");
                        break;
                    }
                    heard = false;
                    if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                        break;
                    }
                }
                m = ws.next() => {
                    let Some(Ok(m)) = m else { break };
                    heard = true;
                    let text = match m {
                        Message::Text(t) => t.to_string(),
                        Message::Binary(_) => {
                            tracing::debug!("OCPP-J binary frame dropped");
                            continue;
                        }
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    match Frame::parse(&text) {
                        Ok(Frame::Call { id, action, payload }) => {
                            let reply = Responder { id: id.clone(), out: out_tx.clone() };
                            let _ = in_tx.send(Incoming { id, action, payload, reply });
                        }
                        Ok(Frame::CallResult { id, payload }) => {
                            if let Some(tx) = lock(&pending).remove(&id) {
                                let _ = tx.send(Ok(payload));
                            }
                        }
                        Ok(Frame::CallError { id, code, description, .. }) => {
                            if let Some(tx) = lock(&pending).remove(&id) {
                                let _ = tx.send(Err(CallFailed::Error { code, description }));
                            }
                        }
                        Err(bad) => {
                            tracing::debug!("bad OCPP-J frame: {}", bad.description);
                            if let Some(r) = bad.reply()
                                && ws.send(Message::text(r.encode())).await.is_err()
                            {
                                break;
                            }
                        }
                    }
                }
            }
        }
        closed.cancel();
        let _ = ws.close(None).await;
        for (_, tx) in lock(&pending).drain() {
            let _ = tx.send(Err(CallFailed::Closed));
        }
    };
    (rpc, in_rx, driver)
}
