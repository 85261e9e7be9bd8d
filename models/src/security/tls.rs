//! TLS of the HTTPS server (DOCA0211 "Supported Protocols": TLS 1.2; the
//! device's default certificate is a self-signed X.509v3 one).
//!
//! Contract:
//! - [`make`] builds a self-signed certificate for a [`CertificateSpec`]
//!   (subject, the addresses/names of its SAN, validity from the device's
//!   RTC); [`store`] keeps it in NV memory under [`KEY`] so it survives
//!   reboots and changes only with a factory reset or an explicit
//!   [`remake`] (a new address, for instance). [`remake_in_pool`] makes it
//!   through the pool of [`super::work`].
//! - [`acceptor`] offers exactly the model's [`Versions`], never below 1.2,
//!   and ALPN `http/1.1`. [`reloadable_acceptor`] does the same with a
//!   certificate that can be replaced while the server runs
//!   ([`Reloadable::set`]; handshakes after the call get the new one).
//! - [`deferred_acceptor`] starts without a certificate: the first client
//!   makes it (its maker runs once, through the pool of [`super::work`]),
//!   and every client waits for it in [`Acceptor::ready`] (at most
//!   [`super::work::READY_WAIT`]) rather than failing its handshake. A boot
//!   therefore never generates a key.
//! - [`names_ip`] tells whether a certificate's SAN has an IPv4 address;
//!   [`stored_naming`] is the stored certificate if it names every address
//!   of the device's interfaces ([`addresses`]), else none (to be made).
//! - Every acceptor resumes sessions from a cache of at most
//!   [`SESSION_CACHE`] entries, as an embedded web server does ([NF];
//!   rustls' default of 256 per device let the cache grow to gigabytes at
//!   10,000 devices under `bench soak`).
//! - [`client_connector`] is the client side (a device's uploads, mail):
//!   TLS 1.2 or 1.3, the server verified against the CA certificate(s) in
//!   PEM it is given; no usable certificate there is an error, not a
//!   connector that trusts nothing.

use std::sync::Arc;

use fieldtwin_emulator::device::{BootError, DeviceContext};
use fieldtwin_emulator::storage::Nv;
use futures::future::BoxFuture;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;

use super::password::{hex, unhex};
use super::work;

/// TLS sessions kept for resumption per server ([NF], docs/performance.md).
pub const SESSION_CACHE: usize = 16;

/// A device's bounded session cache (see [`SESSION_CACHE`]).
fn bounded_sessions(cfg: &mut rustls::ServerConfig) {
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
}

/// NV key of the TLS certificate and key.
pub const KEY: &str = "tls";

/// TLS versions offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// TLS 1.2 only.
    Tls12,
    /// TLS 1.2 and 1.3.
    Tls12And13,
}

/// What the certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSpec {
    /// Subject CN.
    pub common_name: String,
    /// Subject O.
    pub organization: String,
    /// Subject alternative names: IP addresses and DNS names.
    pub names: Vec<String>,
    /// Start of validity (the device's RTC when the certificate is made).
    pub not_before: chrono::DateTime<chrono::Utc>,
    /// Length of validity.
    pub validity: chrono::Duration,
}

/// A certificate and its private key, DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

/// Certificate and key as kept in NV memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    cert_der: String,
    key_der: String,
}

fn boot_err(e: rcgen::Error) -> BootError {
    BootError::Other(format!("certificate generation failed: {e}"))
}

/// A fresh self-signed certificate for `spec`.
pub fn make(spec: &CertificateSpec) -> Result<Material, BootError> {
    let mut params = rcgen::CertificateParams::new(spec.names.clone()).map_err(boot_err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, spec.common_name.clone());
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, spec.organization.clone());
    let at = |t: chrono::DateTime<chrono::Utc>| {
        time::OffsetDateTime::from_unix_timestamp(t.timestamp())
            .map_err(|e| BootError::Other(format!("certificate validity {t}: {e}")))
    };
    params.not_before = at(spec.not_before)?;
    params.not_after = at(spec.not_before + spec.validity)?;
    let key = rcgen::KeyPair::generate().map_err(boot_err)?;
    let cert = params.self_signed(&key).map_err(boot_err)?;
    Ok(Material {
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    })
}

/// The stored certificate, if any.
pub fn load(nv: &Nv) -> Result<Option<Material>, BootError> {
    Ok(nv.get::<Stored>(KEY)?.and_then(|m| {
        Some(Material {
            cert_der: unhex(&m.cert_der)?,
            key_der: unhex(&m.key_der)?,
        })
    }))
}

/// The device's interface addresses now (none for an interface without
/// one, such as a DHCP interface without a lease).
pub fn addresses(ctx: &DeviceContext) -> Vec<std::net::Ipv4Addr> {
    ctx.interface_names()
        .iter()
        .filter_map(|i| ctx.interface(i))
        .map(|s| s.ipv4())
        .filter(|ip| !ip.is_unspecified())
        .collect()
}

/// The certificate in NV memory if it names every address of the device's
/// interfaces ([`addresses`]); `None` when there is none or it does not
/// (the first boot, after a factory reset, a new address): a new one is
/// to be made.
pub fn stored_naming(ctx: &DeviceContext) -> Result<Option<Material>, BootError> {
    let ips = addresses(ctx);
    Ok(load(&ctx.nv)?.filter(|m| ips.iter().all(|ip| names_ip(&m.cert_der, *ip))))
}

/// Stores `m` (replacing any).
pub fn store(nv: &Nv, m: &Material) -> Result<(), BootError> {
    nv.put(
        KEY,
        &Stored {
            cert_der: hex(&m.cert_der),
            key_der: hex(&m.key_der),
        },
    )?;
    Ok(())
}

/// Makes a new certificate for `spec` and stores it (replacing any).
pub fn remake(nv: &Nv, spec: &CertificateSpec) -> Result<Material, BootError> {
    let m = make(spec)?;
    store(nv, &m)?;
    Ok(m)
}

/// Makes a new certificate for `spec` in the pool of [`super::work`] and
/// stores it (replacing any).
pub async fn remake_in_pool(nv: &Nv, spec: CertificateSpec) -> Result<Material, BootError> {
    let m = work::run(move || make(&spec))
        .await
        .ok_or_else(|| BootError::Other("certificate generation panicked".into()))??;
    store(nv, &m)?;
    Ok(m)
}

/// Makes the first certificate of a [`deferred_acceptor`].
pub type Maker = Box<dyn Fn() -> BoxFuture<'static, Result<Material, BootError>> + Send + Sync>;

/// The certificate a [`reloadable_acceptor`] serves; replaceable.
pub struct Reloadable {
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: std::sync::RwLock<Option<(Material, Arc<rustls::sign::CertifiedKey>)>>,
    /// Whether the first certificate is made (by `maker`, on first use).
    made: Arc<work::Deferred<Result<(), String>>>,
    maker: Option<Maker>,
}

impl std::fmt::Debug for Reloadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloadable")
            .field("ready", &self.made.is_ready())
            .finish_non_exhaustive()
    }
}

impl Reloadable {
    fn certified(
        provider: &rustls::crypto::CryptoProvider,
        m: &Material,
    ) -> Result<Arc<rustls::sign::CertifiedKey>, BootError> {
        rustls::sign::CertifiedKey::from_der(
            vec![CertificateDer::from(m.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(m.key_der.clone())),
            provider,
        )
        .map(Arc::new)
        .map_err(|e| BootError::Other(format!("TLS certificate: {e}")))
    }

    /// Serves `m` from the next handshake on.
    pub fn set(&self, m: Material) -> Result<(), BootError> {
        let key = Self::certified(&self.provider, &m)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some((m, key));
        self.made.set(Ok(()));
        Ok(())
    }

    /// The certificate served now; `None` before the first one is made.
    pub fn material(&self) -> Option<Material> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.0.clone())
    }

    /// Waits until there is a certificate to serve, making the first one
    /// if nobody has yet (at most [`work::READY_WAIT`]).
    pub async fn ready(self: &Arc<Self>) -> Result<(), String> {
        if self.made.is_ready() && self.material().is_some() {
            return Ok(());
        }
        if self.maker.is_none() {
            return Err("no certificate".into());
        }
        let me = self.clone();
        let make = move || async move {
            let maker = me.maker.as_ref().expect("checked above");
            let m = maker().await.map_err(|e| e.to_string())?;
            me.set(m).map_err(|e| e.to_string())
        };
        self.made
            .get(make, Result::is_err, work::READY_WAIT)
            .await
            .unwrap_or_else(|| Err("the certificate is not ready yet".into()))
    }
}

/// A TLS acceptor whose certificate may still be in the making: its
/// handshakes wait for it ([`Acceptor::ready`]).
#[derive(Clone)]
pub struct Acceptor {
    acceptor: TlsAcceptor,
    certs: Option<Arc<Reloadable>>,
}

impl Acceptor {
    /// An acceptor whose certificate is there already.
    pub fn fixed(acceptor: TlsAcceptor) -> Self {
        Self {
            acceptor,
            certs: None,
        }
    }

    /// Waits until the certificate is there (see [`Reloadable::ready`]).
    pub async fn ready(&self) -> Result<(), String> {
        match &self.certs {
            Some(c) => c.ready().await,
            None => Ok(()),
        }
    }

    /// The rustls acceptor (call [`Acceptor::ready`] first).
    pub fn tls(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

impl rustls::server::ResolvesServerCert for Reloadable {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.1.clone())
    }
}

/// A TLS acceptor like [`acceptor`] whose certificate can be replaced.
pub fn reloadable_acceptor(
    material: &Material,
    versions: Versions,
) -> Result<(Acceptor, Arc<Reloadable>), BootError> {
    with_certs(Some(material), None, versions)
}

/// A TLS acceptor like [`reloadable_acceptor`] that serves `material` if
/// given, and otherwise makes its first certificate with `maker` when the
/// first client arrives (see the module contract).
pub fn deferred_acceptor(
    material: Option<&Material>,
    maker: Maker,
    versions: Versions,
) -> Result<(Acceptor, Arc<Reloadable>), BootError> {
    with_certs(material, Some(maker), versions)
}

fn with_certs(
    material: Option<&Material>,
    maker: Option<Maker>,
    versions: Versions,
) -> Result<(Acceptor, Arc<Reloadable>), BootError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let current = match material {
        Some(m) => Some((m.clone(), Reloadable::certified(&provider, m)?)),
        None => None,
    };
    let made = match current {
        Some(_) => work::Deferred::ready(Ok(())),
        None => work::Deferred::new(),
    };
    let certs = Arc::new(Reloadable {
        provider: provider.clone(),
        current: std::sync::RwLock::new(current),
        made: Arc::new(made),
        maker,
    });
    let err = |e: rustls::Error| BootError::Other(format!("TLS configuration: {e}"));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(protocol_versions(versions))
        .map_err(err)?
        .with_no_client_auth()
        .with_cert_resolver(certs.clone());
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    bounded_sessions(&mut cfg);
    let acceptor = Acceptor {
        acceptor: TlsAcceptor::from(Arc::new(cfg)),
        certs: Some(certs.clone()),
    };
    Ok((acceptor, certs))
}

/// Whether the certificate's subject alternative names include `ip` (an
/// iPAddress GeneralName: context tag 7, four octets).
pub fn names_ip(cert_der: &[u8], ip: std::net::Ipv4Addr) -> bool {
    let o = ip.octets();
    let needle = [0x87, 0x04, o[0], o[1], o[2], o[3]];
    cert_der.windows(needle.len()).any(|w| w == needle)
}

fn protocol_versions(versions: Versions) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS12, &rustls::version::TLS13];
    match versions {
        Versions::Tls12 => &TLS12,
        Versions::Tls12And13 => &BOTH,
    }
}

/// A TLS acceptor serving `material` with `versions`.
pub fn acceptor(material: &Material, versions: Versions) -> Result<TlsAcceptor, BootError> {
    let versions: &[&rustls::SupportedProtocolVersion] = match versions {
        Versions::Tls12 => &[&rustls::version::TLS12],
        Versions::Tls12And13 => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let err = |e: rustls::Error| BootError::Other(format!("TLS configuration: {e}"));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(err)?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(material.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(material.key_der.clone())),
        )
        .map_err(err)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    bounded_sessions(&mut cfg);
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// A TLS 1.2/1.3 client connector that verifies servers against the CA
/// certificate(s) in `ca_pem`. The errors read "`{ca} is not PEM: …`"
/// (`ca` names where the CA came from, for the user) and `none` when
/// `ca_pem` holds no certificate.
pub fn client_connector(
    ca_pem: &[u8],
    ca: &str,
    none: &str,
) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("{ca} is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the CA certificate is not usable: {e}"))?;
    }
    if roots.is_empty() {
        return Err(none.into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(names: &[&str]) -> CertificateSpec {
        CertificateSpec {
            common_name: "PAS600L NK231730251".into(),
            organization: "Schneider Electric".into(),
            names: names.iter().map(|n| n.to_string()).collect(),
            not_before: chrono::DateTime::from_timestamp(1_770_000_000, 0).unwrap(),
            validity: chrono::Duration::days(3652),
        }
    }

    #[test]
    fn san_addresses_are_found_and_certificates_reload() {
        let a = make(&spec(&["10.77.74.201", "ps1"])).unwrap();
        assert!(names_ip(&a.cert_der, "10.77.74.201".parse().unwrap()));
        assert!(!names_ip(&a.cert_der, "10.77.74.202".parse().unwrap()));
        assert!(!names_ip(&a.cert_der, "0.0.0.0".parse().unwrap()));
        let (_acceptor, certs) = reloadable_acceptor(&a, Versions::Tls12).unwrap();
        let b = make(&spec(&["10.77.74.202", "ps1"])).unwrap();
        certs.set(b.clone()).unwrap();
        assert_eq!(certs.material(), Some(b.clone()));
        // A key that does not match its certificate is refused.
        let bad = Material {
            cert_der: a.cert_der.clone(),
            key_der: b.key_der.clone(),
        };
        assert!(certs.set(bad).is_err());
        assert_eq!(certs.material(), Some(b));
    }

    /// However many clients a device has seen, it keeps at most
    /// SESSION_CACHE sessions for resumption (both kinds of acceptor).
    #[test]
    fn the_session_cache_is_bounded() {
        let a = make(&spec(&["10.77.74.201"])).unwrap();
        let (reloadable, _) = reloadable_acceptor(&a, Versions::Tls12).unwrap();
        let fixed = acceptor(&a, Versions::Tls12And13).unwrap();
        for acc in [reloadable.acceptor, fixed] {
            let store = &acc.config().session_storage;
            let key = |i: u32| i.to_be_bytes().repeat(8);
            for i in 0..1000 {
                assert!(store.put(key(i), vec![7; 100]));
            }
            let kept = (0..1000).filter(|&i| store.get(&key(i)).is_some()).count();
            assert!((1..=SESSION_CACHE).contains(&kept), "{kept} sessions kept");
        }
    }
}
