//! The SFTP publication settings kept in NV memory: server, login, remote
//! directory, the pinned host-key fingerprint and, after the server showed
//! another key, that key (publication stopped until it is accepted).
//!
//! Contract (DOCA0211 "SFTP Server Key Fingerprint"; docs/panel-server.md
//! "SFTP publication"):
//! - First boot copies the site file's `[device.panel_server.publication.sftp]`
//!   here ([`Stored::from_site`], the key file read into NV memory); the
//!   webpage and `PUT /api/sftp` change it from then on.
//! - `fingerprint` is the recorded host key; `changed` holds the key a
//!   server showed instead: while it is set no connection is attempted.
//!   [`Stored::accept`] records a fingerprint and clears `changed`.
//! - Secrets (password, private key) are never shown back: [`Stored::view`]
//!   says only whether they are set.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use fieldtwin_emulator::site::SftpConfig;
use serde::{Deserialize, Serialize};

use super::sftp::{Credential, Target, parse_key};

/// NV key of the SFTP settings.
pub const KEY: &str = "pslog/sftp";

/// SFTP settings in NV memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub host: Ipv4Addr,
    pub port: u16,
    pub user: String,
    #[serde(default)]
    pub password: Option<String>,
    /// Private key text (OpenSSH or PEM).
    #[serde(default)]
    pub key: Option<String>,
    pub dir: String,
    /// The recorded host-key fingerprint.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// A host key the server showed instead of the recorded one.
    #[serde(default)]
    pub changed: Option<String>,
}

impl Stored {
    /// From the site file (reads the key file).
    pub fn from_site(c: &SftpConfig) -> Result<Self, String> {
        let key = match &c.key_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read the SSH key file {}: {e}", p.display()))?,
            ),
            None => None,
        };
        Ok(Self {
            host: c.host,
            port: c.port,
            user: c.user.clone(),
            password: c.password.clone(),
            key,
            dir: c.dir.clone(),
            fingerprint: c.fingerprint.clone(),
            changed: None,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        (self.host, self.port).into()
    }

    /// The client's target, or why it cannot log in.
    pub fn target(&self) -> Result<Target, String> {
        let credential = match (&self.key, &self.password) {
            (Some(k), _) => Credential::Key(Arc::new(parse_key(k)?)),
            (None, Some(p)) => Credential::Password(p.clone()),
            (None, None) => return Err("no SFTP password or key is configured".into()),
        };
        Ok(Target {
            addr: self.addr(),
            user: self.user.clone(),
            credential,
            dir: self.dir.clone(),
            pinned: self.fingerprint.clone(),
        })
    }

    /// Records `fingerprint` as the server's key; publication resumes.
    pub fn accept(&mut self, fingerprint: String) {
        self.fingerprint = Some(fingerprint);
        self.changed = None;
    }

    /// What the page and the API show (no secret).
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "host": self.host.to_string(),
            "port": self.port,
            "user": self.user,
            "auth": if self.key.is_some() { "key" } else { "password" },
            "password_set": self.password.is_some(),
            "key_set": self.key.is_some(),
            "dir": self.dir,
            "fingerprint": self.fingerprint,
            "changed_fingerprint": self.changed,
            "publication_stopped": self.changed.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_holds_no_secret_and_accept_resumes() {
        let mut s = Stored {
            host: Ipv4Addr::LOCALHOST,
            port: 22,
            user: "ps".into(),
            password: Some("Very$ecret1".into()),
            key: None,
            dir: "up".into(),
            fingerprint: Some("SHA256:a".into()),
            changed: Some("SHA256:b".into()),
        };
        let v = s.view().to_string();
        assert!(!v.contains("Very$ecret1"), "{v}");
        assert!(v.contains("\"publication_stopped\":true"), "{v}");
        s.accept("SHA256:b".into());
        assert_eq!(s.changed, None);
        assert_eq!(s.fingerprint.as_deref(), Some("SHA256:b"));
        assert!(matches!(
            s.target().unwrap().credential,
            Credential::Password(_)
        ));
        s.password = None;
        assert!(s.target().unwrap_err().contains("no SFTP password"));
    }
}
