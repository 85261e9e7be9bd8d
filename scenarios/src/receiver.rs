//! A publication server for scenarios: a small HTTPS receiver of
//! `multipart/form-data` uploads on loopback, which a host-mode Panel
//! Server publishes its data log to (docs/scenarios.md "Publication
//! server").
//!
//! Contract:
//! - [`Receiver::start`] listens on `127.0.0.1`, on a free port the first
//!   time and on the same port after a [`Receiver::stop`], with the same
//!   self-signed certificate (ECDSA P-256, naming 127.0.0.1) for its whole
//!   life, so a device that pinned it (`pin_sha256`) keeps accepting it.
//!   TLS 1.2 and 1.3.
//! - Each `POST` is one [`Upload`]: the path, and for the first part that
//!   carries a file, the form field name, file name, content type and
//!   content. A request with a file part is answered `201`, anything else
//!   `400`; the connection is closed after the answer.
//! - [`Receiver::stop`] closes the listener and every open connection: a
//!   device then gets "connection refused".
//! - Requests larger than [`MAX_REQUEST`] are refused with `413`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest request accepted.
pub const MAX_REQUEST: usize = 16 << 20;

/// One request received.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub path: String,
    /// Form field of the file part ("" without one).
    pub field: String,
    pub file_name: String,
    pub content_type: String,
    pub content: Vec<u8>,
}

/// The receiver (owns its runtime).
pub struct Receiver {
    rt: tokio::runtime::Runtime,
    acceptor: tokio_rustls::TlsAcceptor,
    /// The certificate, DER and PEM.
    cert_der: Vec<u8>,
    cert_pem: String,
    port: Option<u16>,
    task: Option<tokio::task::JoinHandle<()>>,
    uploads: Arc<Mutex<Vec<Upload>>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("port", &self.port)
            .field("running", &self.task.is_some())
            .finish()
    }
}

impl Receiver {
    /// A receiver with its certificate, not listening yet.
    pub fn new() -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the publication server runtime: {e}"))?;
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .map_err(|e| e.to_string())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fieldtwin publication server");
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let cert_der = cert.der().to_vec();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .map_err(|e| e.to_string())?;
        Ok(Self {
            rt,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            cert_der,
            cert_pem: cert.pem(),
            port: None,
            task: None,
            uploads: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Listens (again); returns the address.
    pub fn start(&mut self) -> Result<SocketAddr, String> {
        if let (Some(p), Some(_)) = (self.port, &self.task) {
            return Ok(SocketAddr::from(([127, 0, 0, 1], p)));
        }
        let want = SocketAddr::from(([127, 0, 0, 1], self.port.unwrap_or(0)));
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind(want))
            .map_err(|e| format!("the publication server cannot listen on {want}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        self.port = Some(addr.port());
        let (acceptor, uploads) = (self.acceptor.clone(), self.uploads.clone());
        self.task = Some(self.rt.spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    a = listener.accept() => {
                        let Ok((tcp, _)) = a else { continue };
                        let (acceptor, uploads) = (acceptor.clone(), uploads.clone());
                        conns.spawn(async move {
                            let served = tokio::time::timeout(Duration::from_secs(30), async {
                                let tls = acceptor.accept(tcp).await.ok()?;
                                serve(tls, &uploads).await
                            });
                            let _ = served.await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
            // Dropping the task (abort) drops the listener and the JoinSet,
            // which aborts the open connections.
        }));
        Ok(addr)
    }

    /// Stops listening and closes the open connections.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = self.rt.block_on(t);
        }
    }

    /// The URL a device posts to.
    pub fn url(&self) -> Option<String> {
        self.port.map(|p| format!("https://127.0.0.1:{p}/upload"))
    }

    /// SHA-256 of the certificate (DER), colon-separated upper-case hex.
    pub fn pin_sha256(&self) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(&self.cert_der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The certificate as PEM (it is its own CA).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Every request received so far, in order.
    pub fn uploads(&self) -> Vec<Upload> {
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads one request, records it, answers.
async fn serve<S>(mut s: S, uploads: &Mutex<Vec<Upload>>) -> Option<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return answer(&mut s, "431 Request Header Fields Too Large").await;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or("");
    let mut parts = request.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if length > MAX_REQUEST {
        return answer(&mut s, "413 Content Too Large").await;
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    let mut up = Upload {
        path: path.to_string(),
        field: String::new(),
        file_name: String::new(),
        content_type: String::new(),
        content: Vec::new(),
    };
    let boundary = header("content-type").and_then(|ct| {
        ct.split(';').find_map(|p| {
            p.trim()
                .strip_prefix("boundary=")
                .map(|b| b.trim_matches('"').to_string())
        })
    });
    if method == "POST"
        && let Some(b) = boundary
    {
        let delim = format!("--{b}");
        for part in split(&body, delim.as_bytes()) {
            let Some(i) = find(part, b"\r\n\r\n") else {
                continue;
            };
            let h = String::from_utf8_lossy(&part[..i]);
            let Some(file_name) = quoted(&h, "filename=") else {
                continue;
            };
            let mut content = &part[i + 4..];
            if content.ends_with(b"\r\n") {
                content = &content[..content.len() - 2];
            }
            up.field = quoted(&h, " name=").unwrap_or_default();
            up.file_name = file_name;
            up.content_type = h
                .split("\r\n")
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-type")
                        .then(|| v.trim().to_string())
                })
                .unwrap_or_default();
            up.content = content.to_vec();
            break;
        }
    }
    let ok = !up.file_name.is_empty();
    uploads.lock().unwrap_or_else(|e| e.into_inner()).push(up);
    answer(&mut s, if ok { "201 Created" } else { "400 Bad Request" }).await
}

async fn answer<S: tokio::io::AsyncWrite + Unpin>(s: &mut S, status: &str) -> Option<()> {
    let r = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(r.as_bytes()).await.ok()?;
    let _ = s.shutdown().await;
    Some(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The parts of `body` between `delim` lines.
fn split<'a>(body: &'a [u8], delim: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = find(rest, delim) {
        out.push(&rest[..i]);
        rest = &rest[i + delim.len()..];
    }
    out.push(rest);
    out
}

/// The quoted value after `key` in a header (`name="x"`).
fn quoted(h: &str, key: &str) -> Option<String> {
    let i = h.find(key)? + key.len();
    let rest = h[i..].strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_file_parts_are_found() {
        let body = b"--XY\r\nContent-Disposition: form-data; name=\"datafile1\"; filename=\"a.csv\"\r\nContent-Type: text/csv\r\n\r\nx,y\r\n1,2\r\n--XY--\r\n";
        let parts = split(body, b"--XY");
        assert_eq!(parts.len(), 3);
        let h = String::from_utf8_lossy(parts[1]);
        assert_eq!(quoted(&h, "filename=").as_deref(), Some("a.csv"));
        assert_eq!(quoted(&h, " name=").as_deref(), Some("datafile1"));
        assert_eq!(quoted("no quotes here", "filename="), None);
    }

    #[test]
    fn stops_and_listens_again_on_the_same_port_with_the_same_certificate() {
        let mut r = Receiver::new().unwrap();
        let a = r.start().unwrap();
        let pin = r.pin_sha256();
        assert_eq!(pin.len(), 95);
        r.stop();
        assert!(
            std::net::TcpStream::connect(a).is_err(),
            "refused while stopped"
        );
        let b = r.start().unwrap();
        assert_eq!(a, b);
        assert_eq!(r.pin_sha256(), pin);
        assert!(std::net::TcpStream::connect(b).is_ok());
        assert!(r.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
