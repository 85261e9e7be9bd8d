//! SFTP publication client: an SSH session (russh) on a TCP stream of the
//! device's own transport, the SFTP subsystem (russh-sftp) on it, and the
//! server's host key pinned by its SHA256 fingerprint.
//!
//! Contract (devices.md §1.6 "SFTP / HTTPS"; DOCA0211 "SFTP Server Key
//! Fingerprint"):
//! - The TCP connection is opened with the interface's
//!   [`Stack::connect_tcp`] and handed to russh's `connect_stream`, so the
//!   session leaves from the device's address in host mode and from its
//!   MAC in TAP mode.
//! - [`fingerprint`] is OpenSSH's: `SHA256:` and the unpadded base64 of the
//!   SHA-256 of the key blob (what `ssh-keygen -lf` prints).
//! - [`connect`] with a pinned fingerprint accepts only a server whose host
//!   key has it; any other key ends the handshake before authentication
//!   (no password or signature is sent) with [`Error::HostKeyChanged`]
//!   naming both fingerprints. Without a pin the key is accepted and its
//!   fingerprint returned, for the caller to record ([`probe`] only reads
//!   it, without logging in).
//! - Authentication by password or by private key (OpenSSH or PEM format,
//!   Ed25519, ECDSA or RSA with SHA-2 signatures).
//! - [`Session::put`] writes `<dir>/<name>.part` and renames it to
//!   `<dir>/<name>`, replacing a file of that name (a resend after a power
//!   cut): a reader of the directory never sees half a file under the final
//!   name.
//! - Wall-time limits ([`CONNECT_TIMEOUT`], [`OP_TIMEOUT`]) bound every
//!   step: a server that stops answering fails the publication instead of
//!   hanging it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldtwin_emulator::net::Stack;
use russh::client;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::OpenFlags;
use tokio::io::AsyncWriteExt;

/// Wall-time limit to connect, exchange keys and log in.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Wall-time limit of one file's upload.
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("{0} did not answer within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error(
        "the SFTP server {addr} shows host key {seen}, not the recorded {pinned}: publication stops until the publication is reconfigured"
    )]
    HostKeyChanged {
        addr: SocketAddr,
        pinned: String,
        seen: String,
    },
    #[error("SSH with {0} failed: {1}")]
    Ssh(SocketAddr, String),
    #[error("{0} refused the login of {1:?}")]
    Auth(SocketAddr, String),
    #[error("SFTP on {0}: {1}")]
    Sftp(SocketAddr, String),
}

/// How the device logs in.
#[derive(Clone)]
pub enum Credential {
    Password(String),
    Key(Arc<PrivateKey>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Password(_) => "password",
            Credential::Key(_) => "key",
        })
    }
}

/// A private key from its text (OpenSSH or PEM).
pub fn parse_key(text: &str) -> Result<PrivateKey, String> {
    russh::keys::decode_secret_key(text, None)
        .map_err(|e| format!("the SSH key is not an unencrypted OpenSSH or PEM private key: {e}"))
}

/// Where and how files are written.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub user: String,
    pub credential: Credential,
    pub dir: String,
    /// The recorded host-key fingerprint, if any.
    pub pinned: Option<String>,
}

/// OpenSSH's SHA256 fingerprint of a public key.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

struct Checker {
    pinned: Option<String>,
    seen: Arc<Mutex<Option<String>>>,
    /// Accept even an unpinned key (login); `false` only reads it (probe).
    accept_new: bool,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let pk = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(c) => c.public_key().clone().into(),
        };
        let f = fingerprint(&pk);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(f.clone());
        Ok(match &self.pinned {
            Some(p) => *p == f,
            None => self.accept_new,
        })
    }
}

fn config() -> Arc<client::Config> {
    Arc::new(client::Config {
        inactivity_timeout: Some(OP_TIMEOUT),
        ..Default::default()
    })
}

async fn handshake(
    stack: &dyn Stack,
    addr: SocketAddr,
    pinned: Option<String>,
    accept_new: bool,
) -> Result<(client::Handle<Checker>, String), Error> {
    let seen = Arc::new(Mutex::new(None));
    let checker = Checker {
        pinned: pinned.clone(),
        seen: seen.clone(),
        accept_new,
    };
    let go = async {
        let tcp = stack
            .connect_tcp(addr)
            .await
            .map_err(|e| Error::Connect(addr, e))?;
        client::connect_stream(config(), tcp, checker)
            .await
            .map_err(|e| Error::Ssh(addr, e.to_string()))
    };
    let result = tokio::time::timeout(CONNECT_TIMEOUT, go)
        .await
        .map_err(|_| Error::Timeout(addr, CONNECT_TIMEOUT))?;
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match (result, seen, pinned) {
        (Ok(h), Some(f), _) => Ok((h, f)),
        (_, Some(seen), Some(pinned)) if seen != pinned => {
            Err(Error::HostKeyChanged { addr, pinned, seen })
        }
        (Err(e), _, _) => Err(e),
        (Ok(_), None, _) => Err(Error::Ssh(addr, "no host key was shown".into())),
    }
}

/// The fingerprint of the host key `addr` shows, without logging in (what
/// the configuration page displays for the administrator to accept).
pub async fn probe(stack: &dyn Stack, addr: SocketAddr) -> Result<String, Error> {
    let seen = Arc::new(Mutex::new(None));
    let checker = Checker {
        pinned: None,
        seen: seen.clone(),
        accept_new: false,
    };
    let go = async {
        let tcp = stack
            .connect_tcp(addr)
            .await
            .map_err(|e| Error::Connect(addr, e))?;
        // The checker refuses the key: the handshake ends there, after the
        // key was shown.
        let _ = client::connect_stream(config(), tcp, checker).await;
        Ok::<_, Error>(())
    };
    tokio::time::timeout(CONNECT_TIMEOUT, go)
        .await
        .map_err(|_| Error::Timeout(addr, CONNECT_TIMEOUT))??;
    let f = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    f.ok_or_else(|| Error::Ssh(addr, "no SSH server there (no host key shown)".into()))
}

/// A logged-in SFTP session.
pub struct Session {
    addr: SocketAddr,
    dir: String,
    ssh: client::Handle<Checker>,
    sftp: SftpSession,
    /// Fingerprint of the server's host key.
    pub fingerprint: String,
}

/// Connects, checks the host key against the pin and logs in.
pub async fn connect(stack: &dyn Stack, target: &Target) -> Result<Session, Error> {
    let addr = target.addr;
    let (mut ssh, fingerprint) = handshake(stack, addr, target.pinned.clone(), true).await?;
    let login = async {
        let r = match &target.credential {
            Credential::Password(p) => ssh.authenticate_password(&target.user, p).await,
            Credential::Key(k) => {
                let hash = ssh.best_supported_rsa_hash().await.ok().flatten().flatten();
                ssh.authenticate_publickey(
                    &target.user,
                    PrivateKeyWithHashAlg::new(k.clone(), hash),
                )
                .await
            }
        }
        .map_err(|e| Error::Ssh(addr, e.to_string()))?;
        if !r.success() {
            return Err(Error::Auth(addr, target.user.clone()));
        }
        let channel = ssh
            .channel_open_session()
            .await
            .map_err(|e| Error::Ssh(addr, e.to_string()))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| Error::Ssh(addr, e.to_string()))?;
        let sftp = SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| Error::Sftp(addr, e.to_string()))?;
        sftp.set_timeout(OP_TIMEOUT.as_secs());
        Ok(sftp)
    };
    let sftp = tokio::time::timeout(CONNECT_TIMEOUT, login)
        .await
        .map_err(|_| Error::Timeout(addr, CONNECT_TIMEOUT))??;
    Ok(Session {
        addr,
        dir: target.dir.trim_end_matches('/').to_string(),
        ssh,
        sftp,
        fingerprint,
    })
}

impl Session {
    fn path(&self, name: &str) -> String {
        if self.dir.is_empty() {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.dir)
        }
    }

    /// Writes one file (see the module contract).
    pub async fn put(&self, name: &str, content: &[u8]) -> Result<(), Error> {
        let addr = self.addr;
        let err = |e: russh_sftp::client::error::Error| Error::Sftp(addr, e.to_string());
        let (part, path) = (self.path(&format!("{name}.part")), self.path(name));
        let go = async {
            let mut f = self
                .sftp
                .open_with_flags(
                    part.clone(),
                    OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
                )
                .await
                .map_err(err)?;
            f.write_all(content)
                .await
                .map_err(|e| Error::Sftp(addr, e.to_string()))?;
            f.shutdown()
                .await
                .map_err(|e| Error::Sftp(addr, e.to_string()))?;
            if self.sftp.rename(part.clone(), path.clone()).await.is_err() {
                // SFTP v3 rename does not replace: a file of that name is
                // the same file sent before a power cut; replace it.
                let _ = self.sftp.remove_file(path.clone()).await;
                self.sftp.rename(part, path).await.map_err(err)?;
            }
            Ok(())
        };
        tokio::time::timeout(OP_TIMEOUT, go)
            .await
            .map_err(|_| Error::Timeout(addr, OP_TIMEOUT))?
    }

    /// Ends the session politely.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.sftp.close().await;
            let _ = self
                .ssh
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway test key and what `ssh-keygen -lf` prints for it.
    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACAtObyioaf2eaXb368fBGxwXwqC/SJMb/rLzWsYQFKGtQAAAIiYILxlmCC8\nZQAAAAtzc2gtZWQyNTUxOQAAACAtObyioaf2eaXb368fBGxwXwqC/SJMb/rLzWsYQFKGtQ\nAAAEBNkBT863hY93IH8Qra74cCDSa0e+8oElqffVcqTj6ikS05vKKhp/Z5pdvfrx8EbHBf\nCoL9Ikxv+svNaxhAUoa1AAAABHRlc3QB\n-----END OPENSSH PRIVATE KEY-----\n";
    const KEY_FINGERPRINT: &str = "SHA256:c+ED9NkQRBAIh6+z7QN5l82o3caCyLC1eFkYnIfcPdk";

    #[test]
    fn fingerprints_are_openssh_sha256() {
        let k = parse_key(KEY).unwrap();
        let f = fingerprint(k.public_key());
        assert_eq!(f, KEY_FINGERPRINT);
        assert!(fieldtwin_emulator::site::valid_fingerprint(&f), "{f}");
    }

    #[test]
    fn keys_that_are_not_keys_say_so() {
        let e = parse_key("-----BEGIN NOTHING-----\n").unwrap_err();
        assert!(e.contains("OpenSSH or PEM"), "{e}");
        let e = parse_key(&KEY.replace("AAAA", "AAAB")).unwrap_err();
        assert!(e.contains("OpenSSH or PEM"), "{e}");
    }

    #[tokio::test]
    async fn a_port_without_ssh_is_an_error_not_a_hang() {
        let stack = fieldtwin_emulator::net::host::HostStack::new("127.0.0.1".parse().unwrap());
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = probe(&stack, closed).await.unwrap_err();
        assert!(matches!(e, Error::Connect(..)), "{e}");
    }
}
