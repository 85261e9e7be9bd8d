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

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use fieldtwin_emulator::net::{BoxStream, Stack};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

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
