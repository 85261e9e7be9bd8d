//! Opening and accepting OCPP-J WebSocket links, with the security
//! profiles of the OCPP 1.6 Security Whitepaper (reference devices.md §3).
//!
//! Contract:
//! - [`connect`] opens a link from a device's own [`Stack`] (DESIGN.md
//!   principle 12): TCP, then TLS 1.2 for `wss://` (rustls, the server
//!   checked against the given roots; a client certificate for profile 3),
//!   then the WebSocket handshake (`tokio-tungstenite::client_async`) to
//!   `URL/<box id>` with subprotocol `ocpp1.6` and, for profiles 1-2, HTTP
//!   Basic auth (user = box id, password = AuthorizationKey). URL hosts are
//!   IPv4 addresses (the devices have no resolver).
//! - [`SiteCa`]: the OCPP PKI of a running site ([NF]: generated once per
//!   process, docs/ev-charging.md): it signs the EVCE's server certificate
//!   and the stations' client certificates (CN = serial number, O = the
//!   CSO name), and is the root every station trusts.
//! - [`basic_auth`] reads an `Authorization: Basic` header.
//! - [`serve`] accepts a server's links: every connection on its `ws://`
//!   listener, and on its `wss://` one after a TLS handshake of at most
//!   [`HANDSHAKE_TIMEOUT`] (the client certificate's CN kept), is a task of
//!   the device. [`accept`] is the WebSocket handshake of one (at most
//!   [`HANDSHAKE_TIMEOUT`]): the path's last segment is the charge point
//!   id, which the server's [`Admission`] identifies first (a refusal
//!   there, 404 for instance, comes before anything else is looked at);
//!   then subprotocol `ocpp1.6` is required (HTTP 400 otherwise); then the
//!   [`Admission`] admits or refuses the request (credentials,
//!   enrollment); an admitted link answers with subprotocol `ocpp1.6`.
//!   Every refusal is told to the admission before its answer leaves.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use fieldtwin_emulator::device::{DeviceContext, TrackedListener};
use fieldtwin_emulator::net::{BoxStream, Stack};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

use super::SUBPROTOCOL;
use super::rpc::Ws;

/// Where a `ws://` / `wss://` URL points.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub tls: bool,
    pub addr: SocketAddr,
    /// Path without the box id, without a trailing `/`.
    pub path: String,
}

/// Parses `ws[s]://A.B.C.D[:PORT][/PATH]`.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else {
        return Err(format!("{url:?} is not a ws:// or wss:// URL"));
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{url:?}: {p:?} is not a port"))?,
        ),
        None => (hostport, if tls { 443 } else { 80 }),
    };
    let ip: Ipv4Addr = host
        .parse()
        .map_err(|_| format!("{url:?}: the host must be an IPv4 address, not {host:?}"))?;
    Ok(Target {
        tls,
        addr: SocketAddr::from((ip, port)),
        path: path.to_string(),
    })
}

/// How a link authenticates (security profiles 0-3).
#[derive(Clone)]
pub struct Credentials {
    pub box_id: String,
    /// Basic auth password (profiles 1-2).
    pub authorization_key: Option<String>,
    /// TLS client configuration (wss); `None` for ws://.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Opens a link (see the module contract).
pub async fn connect(
    stack: &dyn Stack,
    url: &str,
    creds: &Credentials,
    timeout: Duration,
) -> Result<Ws, String> {
    let target = parse_url(url)?;
    let fut = async {
        let tcp = stack
            .connect_tcp(target.addr)
            .await
            .map_err(|e| format!("TCP to {}: {e}", target.addr))?;
        let stream: BoxStream = if target.tls {
            let cfg = creds
                .tls
                .clone()
                .ok_or_else(|| format!("{url}: wss needs a TLS configuration"))?;
            let name = ServerName::IpAddress(
                IpAddr::V4(match target.addr {
                    SocketAddr::V4(a) => *a.ip(),
                    SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
                })
                .into(),
            );
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS to {}: {e}", target.addr))?;
            Box::new(tls)
        } else {
            tcp
        };
        let full = format!(
            "{}://{}{}/{}",
            if target.tls { "wss" } else { "ws" },
            target.addr,
            target.path,
            creds.box_id
        );
        let mut req = full
            .as_str()
            .into_client_request()
            .map_err(|e| format!("{full}: {e}"))?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        if let Some(key) = &creds.authorization_key {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{key}", creds.box_id));
            if let Ok(v) = HeaderValue::from_str(&format!("Basic {token}")) {
                req.headers_mut().insert("Authorization", v);
            }
        }
        let (ws, _resp) = tokio_tungstenite::client_async(req, stream)
            .await
            .map_err(|e| format!("WebSocket handshake with {full}: {e}"))?;
        Ok(ws)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("{url}: no connection within {timeout:?}"))?
}

/// Reads `Authorization: Basic base64(user:password)`.
pub fn basic_auth(header: Option<&HeaderValue>) -> Option<(String, String)> {
    let v = header?.to_str().ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Time a client has for its TLS handshake and for its WebSocket one.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP answer refusing a WebSocket handshake (boxed: it is large).
pub type Refusal = Box<ErrorResponse>;

/// A refusal: `code`, with `msg` as its body.
pub fn refusal(code: StatusCode, msg: &str) -> Refusal {
    let mut r = ErrorResponse::new(Some(msg.to_string()));
    *r.status_mut() = code;
    Box::new(r)
}

/// What a server checks of a handshake ([`accept`]): the server's own
/// rules.
pub trait Admission {
    /// What the server keeps of an admitted link.
    type Admitted;
    /// Whether the server serves the charge point `id` (the path's last
    /// segment, maybe empty); checked first.
    fn identify(&mut self, id: &str) -> Result<(), Refusal>;
    /// Admits the request of charge point `id` (its credentials, its
    /// enrollment), after the subprotocol check.
    fn admit(&mut self, id: String, req: &Request) -> Result<Self::Admitted, Refusal>;
    /// Told of every refusal before its answer leaves.
    fn refused(&mut self, _refusal: &Refusal) {}
}

/// Why a connection gave no link.
#[derive(Debug)]
pub enum AcceptError {
    /// The handshake did not end within [`HANDSHAKE_TIMEOUT`].
    Timeout,
    /// Refused (told to the [`Admission`]).
    Refused,
    /// The handshake failed (a client speaking something else, a cut).
    Failed(tokio_tungstenite::tungstenite::Error),
}

/// The WebSocket handshake of an OCPP-J link on `s`, checked by
/// `admission` (see the module contract).
pub async fn accept<A>(s: BoxStream, mut admission: A) -> Result<(Ws, A::Admitted), AcceptError>
where
    A: Admission,
{
    let mut admitted = None;
    let mut refused = false;
    #[allow(clippy::result_large_err)] // tungstenite's callback type fixes the error type.
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let checked = (|| {
            let id = req
                .uri()
                .path()
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string();
            admission.identify(&id)?;
            let offers = req
                .headers()
                .get_all("Sec-WebSocket-Protocol")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.split(',').any(|p| p.trim() == SUBPROTOCOL));
            if !offers {
                return Err(refusal(
                    StatusCode::BAD_REQUEST,
                    "subprotocol ocpp1.6 required",
                ));
            }
            admission.admit(id, req)
        })();
        match checked {
            Ok(a) => {
                admitted = Some(a);
                resp.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    HeaderValue::from_static(SUBPROTOCOL),
                );
                Ok(resp)
            }
            Err(r) => {
                admission.refused(&r);
                refused = true;
                Err(*r)
            }
        }
    };
    let handshake = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::accept_hdr_async(s, callback),
    )
    .await;
    match handshake {
        Err(_) => Err(AcceptError::Timeout),
        Ok(Err(_)) if refused => Err(AcceptError::Refused),
        Ok(Err(e)) => Err(AcceptError::Failed(e)),
        Ok(Ok(ws)) => admitted.map(|a| (ws, a)).ok_or(AcceptError::Refused),
    }
}

/// Serves a device's OCPP-J links: each connection on `plain` (ws://), and
/// each on `tls` (wss://) after a TLS handshake with `server` of at most
/// [`HANDSHAKE_TIMEOUT`], is a task of `ctx` running `link(stream, peer,
/// tls)`, where `tls` is `None` for ws:// and the client certificate's CN,
/// if any, for wss://. The listeners are tasks of `ctx` too.
pub fn serve<F, Fut>(
    ctx: &DeviceContext,
    mut plain: TrackedListener,
    mut tls: TrackedListener,
    server: Arc<rustls::ServerConfig>,
    link: F,
) where
    F: Fn(BoxStream, SocketAddr, Option<Option<String>>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let link = Arc::new(link);
    let (l, c) = (link.clone(), ctx.clone());
    ctx.spawn(async move {
        while let Ok((s, peer)) = plain.accept().await {
            c.spawn(l(s, peer, None));
        }
    });
    let c = ctx.clone();
    ctx.spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        while let Ok((s, peer)) = tls.accept().await {
            let (link, acceptor) = (link.clone(), acceptor.clone());
            c.spawn(async move {
                let Ok(Ok(t)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(s)).await
                else {
                    return;
                };
                let cn = t
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| common_name(c));
                link(Box::new(t), peer, Some(cn)).await
            });
        }
    });
}

/// TLS 1.2 only, as the seed's devices speak it.
fn versions() -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS12_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    &TLS12_ONLY
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting `roots` (PEM certificates), with a
/// client certificate (profile 3) if given.
pub fn client_config(
    roots_pem: &[u8],
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut rd = roots_pem;
    for c in rustls_pemfile_certs(&mut rd)? {
        roots
            .add(c)
            .map_err(|e| format!("CA certificate rejected: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no CA certificate in the PEM data".into());
    }
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions())
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let cfg = match client {
        Some((chain, key)) => b
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("client certificate: {e}"))?,
        None => b.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// Certificates of a PEM text.
fn rustls_pemfile_certs(pem: &mut &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("PEM: {e}"))
}

/// The OCPP PKI of the running site (see the module contract).
pub struct SiteCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    pub pem: String,
}

impl SiteCa {
    /// The process's OCPP CA.
    pub fn get() -> &'static SiteCa {
        static CA: OnceLock<SiteCa> = OnceLock::new();
        CA.get_or_init(|| {
            let mut p = rcgen::CertificateParams::default();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.distinguished_name
                .push(rcgen::DnType::CommonName, "OCPP Root CA");
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, "Site CSO");
            p.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::CrlSign,
            ];
            let key = rcgen::KeyPair::generate().expect("ECDSA key generation");
            let cert = p.self_signed(&key).expect("self-signed CA");
            let pem = cert.pem();
            SiteCa { cert, key, pem }
        })
    }

    fn issue(
        &self,
        cn: &str,
        ips: &[Ipv4Addr],
        client: bool,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Site CSO");
        p.subject_alt_names = ips
            .iter()
            .map(|ip| rcgen::SanType::IpAddress(IpAddr::V4(*ip)))
            .collect();
        p.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().expect("ECDSA key generation");
        let cert = p
            .signed_by(&key, &self.cert, &self.key)
            .expect("certificate signed by the site CA");
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    /// A station's client certificate (profile 3): CN = its serial number.
    pub fn client_cert(
        &self,
        serial: &str,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        self.issue(serial, &[], true)
    }

    /// The TLS server configuration of a local controller reachable at
    /// `ips`: TLS 1.2, client certificates signed by this CA asked for but
    /// optional (profile 2 stations have none; the controller requires one
    /// of a profile-3 station).
    pub fn server_config(&self, ips: &[Ipv4Addr]) -> Result<Arc<rustls::ServerConfig>, String> {
        let (chain, key) = self.issue("ocpp-local-controller", ips, false);
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert.der().clone())
            .map_err(|e| e.to_string())?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| e.to_string())?;
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions())
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(cfg))
    }
}

/// The common name of a DER certificate's subject, if it has one.
pub fn common_name(der: &[u8]) -> Option<String> {
    // CN attribute: OID 2.5.4.3 = 06 03 55 04 03, then a string TLV.
    let oid = [0x06, 0x03, 0x55, 0x04, 0x03];
    let mut last = None;
    let mut i = 0;
    while i + oid.len() + 2 <= der.len() {
        if der[i..i + oid.len()] == oid {
            let at = i + oid.len();
            let len = der[at + 1] as usize;
            if der.len() >= at + 2 + len && len < 128 {
                last = String::from_utf8(der[at + 2..at + 2 + len].to_vec()).ok();
            }
        }
        i += 1;
    }
    // The subject comes after the issuer in a certificate: the last CN.
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refuses box id "nobody" (404), admits the others with what they
    /// sent as Basic auth user, and keeps the refusals it is told of.
    struct Test(Vec<u16>);

    impl Admission for &mut Test {
        type Admitted = (String, Option<String>);
        fn identify(&mut self, id: &str) -> Result<(), Refusal> {
            if id == "nobody" {
                return Err(refusal(StatusCode::NOT_FOUND, "unknown"));
            }
            Ok(())
        }
        fn admit(&mut self, id: String, req: &Request) -> Result<Self::Admitted, Refusal> {
            let user = basic_auth(req.headers().get("Authorization")).map(|(u, _)| u);
            Ok((id, user))
        }
        fn refused(&mut self, r: &Refusal) {
            self.0.push(r.status().as_u16());
        }
    }

    /// A handshake of `path` (offering ocpp1.6 if `ocpp`) against
    /// [`accept`]: the server's result and the client's status.
    async fn handshake(
        t: &mut Test,
        path: &str,
        ocpp: bool,
    ) -> (Result<(Ws, (String, Option<String>)), AcceptError>, u16) {
        let (client, server) = tokio::io::duplex(4096);
        let mut req = format!("ws://127.0.0.1{path}")
            .into_client_request()
            .unwrap();
        if ocpp {
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static("ocpp1.6"),
            );
        }
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_static("Basic Y3AxOmtleQ=="),
        );
        let (server, client) = tokio::join!(
            accept(Box::new(server), t),
            tokio_tungstenite::client_async(req, client)
        );
        let status = match client {
            Ok((_, resp)) => {
                assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], "ocpp1.6");
                resp.status().as_u16()
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
            Err(e) => panic!("{e}"),
        };
        (server, status)
    }

    #[tokio::test]
    async fn a_link_is_identified_then_needs_ocpp16_then_is_admitted() {
        let mut t = Test(Vec::new());
        let (r, status) = handshake(&mut t, "/ocpp/cp1/", true).await;
        assert_eq!(status, 101);
        let (_ws, admitted) = r.unwrap();
        assert_eq!(admitted, ("cp1".to_string(), Some("cp1".to_string())));
        // An unknown id is refused before the subprotocol is looked at.
        let (r, status) = handshake(&mut t, "/ocpp/nobody", false).await;
        assert!(matches!(r, Err(AcceptError::Refused)), "{:?}", r.err());
        assert_eq!(status, 404);
        let (r, status) = handshake(&mut t, "/ocpp/cp2", false).await;
        assert!(matches!(r, Err(AcceptError::Refused)), "{:?}", r.err());
        assert_eq!(status, 400);
        assert_eq!(t.0, [404, 400], "every refusal is told");
    }

    #[test]
    fn urls() {
        let t = parse_url("wss://127.0.0.1:9000/ocpp/").unwrap();
        assert!(t.tls);
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(t.path, "/ocpp");
        assert_eq!(parse_url("ws://10.0.0.1").unwrap().addr.port(), 80);
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("ws://host.example:80/").is_err());
        assert!(parse_url("ws://1.2.3.4:99999/").is_err());
    }

    #[test]
    fn basic_auth_reads_user_and_key() {
        let v = HeaderValue::from_static("Basic Y3MxOnNlY3JldGtleQ==");
        assert_eq!(
            basic_auth(Some(&v)),
            Some(("cs1".into(), "secretkey".into()))
        );
        assert_eq!(
            basic_auth(Some(&HeaderValue::from_static("Basic !!"))),
            None
        );
        assert_eq!(basic_auth(None), None);
    }

    #[test]
    fn client_certificates_carry_the_serial_as_cn() {
        let ca = SiteCa::get();
        let (chain, _) = ca.client_cert("SN-1234");
        assert_eq!(common_name(&chain[0]).as_deref(), Some("SN-1234"));
        assert!(ca.server_config(&[Ipv4Addr::LOCALHOST]).is_ok());
        assert!(client_config(ca.pem.as_bytes(), None).is_ok());
    }
}
