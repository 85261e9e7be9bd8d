//! HTTPS publication client: one file per POST, `multipart/form-data`, over
//! the device's own transport.
//!
//! Contract (devices.md §1.6 "SFTP / HTTPS"; DOCA0211 "TLS 1.2 minimum"):
//! - The TCP connection is opened with the interface's
//!   [`Stack::connect_tcp`], so it leaves from the device's address in host
//!   mode and from its MAC in TAP mode; TLS (rustls) runs on that stream.
//! - TLS 1.2 or 1.3 only. The server is verified either against the
//!   configured CA ([`Target::new`]: the certificate must chain to it and
//!   name the URL's IP address) or by a pin ([`Target::pinned`]: the
//!   SHA-256 of the server's certificate, DER, must equal the pin; chain,
//!   names and dates are then not checked, the handshake signature is).
//!   A failed CA check fails the upload with [`UploadError::Tls`]; a
//!   certificate that is not the pinned one with [`UploadError::PinMismatch`]
//!   naming the fingerprint the server showed. Nothing is sent then.
//! - The file is the part named by the configured field (`datafile1` by
//!   default), `filename` = the file name, `Content-Type` by its extension
//!   (`text/csv`, `application/json`: [`super::file::content_type`]).
//! - A 2xx answer is success; anything else (other status, no answer within
//!   the wall-time limits, connection refused) is an [`UploadError`] and the
//!   file stays unpublished.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fieldtwin_emulator::net::Stack;
use rustls::pki_types::{CertificateDer, IpAddr, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Wall-time limit to connect and finish the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Wall-time limit for the whole request and its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("TLS with {0} failed: {1}")]
    Tls(SocketAddr, std::io::Error),
    #[error("{0} did not answer within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("{0} closed the connection or sent no HTTP answer: {1}")]
    Protocol(SocketAddr, String),
    #[error("{0} refused the file: HTTP {1}")]
    Status(SocketAddr, u16),
    #[error(
        "{0} showed a certificate whose SHA-256 is {1}, not the pinned one; publication stops until it is reconfigured"
    )]
    PinMismatch(SocketAddr, String),
}

impl UploadError {
    /// What went wrong, without the server's address (the device events
    /// say this; [`std::fmt::Display`] names the address too).
    pub fn reason(&self) -> String {
        match self {
            UploadError::Connect(_, e) => format!("cannot connect: {e}"),
            UploadError::Tls(_, e) => format!("TLS failed: {e}"),
            UploadError::Timeout(_, d) => format!("no answer within {d:?}"),
            UploadError::Protocol(_, m) => format!("no HTTP answer: {m}"),
            UploadError::Status(_, c) => format!("the server refused the file: HTTP {c}"),
            UploadError::PinMismatch(_, fp) => {
                format!("the server certificate (SHA-256 {fp}) is not the pinned one")
            }
        }
    }
}

/// Start of the rustls error a pin mismatch gives (the seen fingerprint follows).
const PIN_MISMATCH: &str = "certificate pin mismatch: ";

/// SHA-256 of a certificate (DER) as colon-separated upper-case hex, as
/// `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Accepts exactly the server certificate whose SHA-256 is the pin, and
/// checks the handshake signatures with it.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use sha2::Digest;
        let seen: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
        if seen == self.pin {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "{PIN_MISMATCH}{}",
                fingerprint(end_entity.as_ref())
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The fingerprint a pin mismatch reported, if `e` is one.
fn pin_mismatch(e: &std::io::Error) -> Option<String> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    match inner {
        rustls::Error::General(m) => m.strip_prefix(PIN_MISMATCH).map(str::to_string),
        _ => None,
    }
}

/// Where and how files are posted.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub field: String,
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "https://{}{}", self.addr, self.path)
    }
}

impl Target {
    /// A target from the URL's parts and the CA certificate(s) in PEM.
    pub fn new(
        addr: SocketAddr,
        path: String,
        field: String,
        ca_pem: &[u8],
    ) -> Result<Self, String> {
        let connector = crate::security::tls::client_connector(
            ca_pem,
            "the CA file",
            "the CA file holds no certificate",
        )?;
        Ok(Self {
            addr,
            path,
            field,
            connector,
        })
    }

    /// A target whose server certificate is pinned by its SHA-256.
    pub fn pinned(
        addr: SocketAddr,
        path: String,
        field: String,
        pin: [u8; 32],
    ) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(Pinned {
            pin,
            algorithms: provider.signature_verification_algorithms,
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            addr,
            path,
            field,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

/// The multipart body carrying `content` as `field`/`file_name`.
pub fn multipart(field: &str, file_name: &str, content: &[u8], boundary: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(content.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
            file_name.replace('"', "~"),
            super::file::content_type(file_name)
        )
        .as_bytes(),
    );
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// The status code of an HTTP/1.x answer head.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Posts one file to `target` through `stack`.
pub async fn upload(
    stack: &dyn Stack,
    target: &Target,
    file_name: &str,
    content: &[u8],
) -> Result<(), UploadError> {
    let addr = target.addr;
    let timeout = |d| move |_| UploadError::Timeout(addr, d);
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, stack.connect_tcp(addr))
        .await
        .map_err(timeout(CONNECT_TIMEOUT))?
        .map_err(|e| UploadError::Connect(addr, e))?;
    let name = ServerName::IpAddress(IpAddr::from(addr.ip()));
    let mut tls = tokio::time::timeout(CONNECT_TIMEOUT, target.connector.connect(name, tcp))
        .await
        .map_err(timeout(CONNECT_TIMEOUT))?
        .map_err(|e| match pin_mismatch(&e) {
            Some(seen) => UploadError::PinMismatch(addr, seen),
            None => UploadError::Tls(addr, e),
        })?;
    let boundary = format!("----fieldtwin-{:016x}", rand::random::<u64>());
    let body = multipart(&target.field, file_name, content, &boundary);
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: EcoStruxure Panel Server\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        target.path,
        body.len()
    );
    let exchange = async {
        tls.write_all(head.as_bytes()).await?;
        tls.write_all(&body).await?;
        tls.flush().await?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 2048];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.len() < 16 * 1024 {
            let n = tls.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        let _ = tls.shutdown().await;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(timeout(REQUEST_TIMEOUT))?
        .map_err(|e| UploadError::Protocol(addr, e.to_string()))?;
    match status_of(&answer) {
        Some(s) if (200..300).contains(&s) => Ok(()),
        Some(s) => Err(UploadError::Status(addr, s)),
        None => Err(UploadError::Protocol(
            addr,
            format!("{} bytes without an HTTP status line", answer.len()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_names_the_field_and_file() {
        let b = multipart("datafile1", "1_mb_x_2022.csv", b"a,b\r\n", "XyZ");
        let s = String::from_utf8(b).unwrap();
        assert!(s.starts_with("--XyZ\r\nContent-Disposition: form-data; name=\"datafile1\"; filename=\"1_mb_x_2022.csv\"\r\n"));
        assert!(s.contains("\r\n\r\na,b\r\n\r\n--XyZ--\r\n"));
    }

    proptest::proptest! {
        #[test]
        fn any_answer_bytes_give_a_status_or_none(b in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = status_of(&b);
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 201 Created\r\n\r\n"), Some(201));
        assert_eq!(status_of(b"HTTP/1.0 500 Oops\r\n"), Some(500));
        assert_eq!(status_of(b"SSH-2.0-x\r\n"), None);
        assert_eq!(status_of(b""), None);
    }

    /// A CA, and a certificate for 127.0.0.1 it signed: (CA PEM, cert DER, key DER).
    fn pki() -> (String, Vec<u8>, Vec<u8>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        (ca_cert.pem(), cert.der().to_vec(), key.serialize_der())
    }

    /// A one-request HTTPS server on loopback answering `status`; returns
    /// its address and the request it got.
    async fn server(
        cert: Vec<u8>,
        key: Vec<u8>,
        status: u16,
    ) -> (SocketAddr, tokio::task::JoinHandle<Option<String>>) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert)],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.ok()?;
            let mut tls = acceptor.accept(tcp).await.ok()?;
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = tls.read(&mut buf).await.ok()?;
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            tls.write_all(answer.as_bytes()).await.ok()?;
            let _ = tls.shutdown().await;
            Some(String::from_utf8_lossy(&req).to_string())
        });
        (addr, task)
    }

    fn stack() -> fieldtwin_emulator::net::host::HostStack {
        fieldtwin_emulator::net::host::HostStack::new("127.0.0.1".parse().unwrap())
    }

    #[tokio::test]
    async fn a_file_reaches_a_server_whose_certificate_the_ca_signed() {
        let (ca, cert, key) = pki();
        let (addr, task) = server(cert, key, 201).await;
        let t = Target::new(addr, "/up".into(), "datafile1".into(), ca.as_bytes()).unwrap();
        upload(&stack(), &t, "1_mb_m_20260101000000000.csv", b"x,y\r\n")
            .await
            .unwrap();
        let req = task.await.unwrap().unwrap();
        assert!(req.starts_with("POST /up HTTP/1.1\r\n"), "{req}");
        assert!(
            req.contains("name=\"datafile1\"; filename=\"1_mb_m_20260101000000000.csv\""),
            "{req}"
        );
        assert!(req.contains("\r\n\r\nx,y\r\n\r\n--"), "{req}");
    }

    #[tokio::test]
    async fn a_server_the_ca_did_not_sign_gets_nothing() {
        let (_, cert, key) = pki();
        let (other_ca, _, _) = pki();
        let (addr, task) = server(cert, key, 201).await;
        let t = Target::new(addr, "/".into(), "datafile1".into(), other_ca.as_bytes()).unwrap();
        let e = upload(&stack(), &t, "f.csv", b"secret").await.unwrap_err();
        assert!(matches!(e, UploadError::Tls(..)), "{e}");
        assert_eq!(task.await.unwrap(), None, "the server got no request");
    }

    #[tokio::test]
    async fn a_pinned_certificate_is_accepted_and_another_one_refused() {
        use sha2::Digest;
        let (_, cert, key) = pki();
        let pin: [u8; 32] = sha2::Sha256::digest(&cert).into();
        let (addr, task) = server(cert.clone(), key.clone(), 201).await;
        let t = Target::pinned(addr, "/up".into(), "datafile1".into(), pin).unwrap();
        upload(&stack(), &t, "1_mb_m_20260101000000000.json", b"{}")
            .await
            .unwrap();
        let req = task.await.unwrap().unwrap();
        assert!(req.contains("Content-Type: application/json\r\n"), "{req}");
        // Another certificate (same names, same CA kind): refused, nothing sent.
        let (_, other, other_key) = pki();
        let (addr, task) = server(other.clone(), other_key, 201).await;
        let t = Target::pinned(addr, "/up".into(), "datafile1".into(), pin).unwrap();
        let e = upload(&stack(), &t, "f.csv", b"secret").await.unwrap_err();
        match &e {
            UploadError::PinMismatch(_, seen) => assert_eq!(*seen, fingerprint(&other)),
            e => panic!("not a pin mismatch: {e}"),
        }
        assert!(e.to_string().contains("not the pinned one"), "{e}");
        assert_eq!(task.await.unwrap(), None, "the server got no request");
    }

    #[test]
    fn fingerprints_read_like_openssl() {
        let f = fingerprint(b"abc");
        assert_eq!(f.len(), 32 * 3 - 1);
        assert!(f.starts_with("BA:78:16:BF:"), "{f}");
        let pin = fieldtwin_emulator::site::parse_pin(&f).unwrap();
        assert_eq!(pin[0], 0xBA);
    }

    #[tokio::test]
    async fn a_refusal_or_a_closed_port_is_an_error() {
        let (ca, cert, key) = pki();
        let (addr, _task) = server(cert, key, 500).await;
        let t = Target::new(addr, "/".into(), "datafile1".into(), ca.as_bytes()).unwrap();
        let e = upload(&stack(), &t, "f.csv", b"x").await.unwrap_err();
        assert!(matches!(e, UploadError::Status(_, 500)), "{e}");
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let t = Target::new(closed, "/".into(), "datafile1".into(), ca.as_bytes()).unwrap();
        let e = upload(&stack(), &t, "f.csv", b"x").await.unwrap_err();
        assert!(matches!(e, UploadError::Connect(..)), "{e}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let addr = "127.0.0.1:443".parse().unwrap();
        let e = Target::new(addr, "/".into(), "datafile1".into(), b"nothing").unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
    }
}
