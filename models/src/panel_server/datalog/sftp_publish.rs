//! The publication channel, whatever the method: HTTPS (one POST per file,
//! [`super::https`]) or SFTP (one session per publication, [`super::sftp`]
//! with the settings of [`super::sftp_config`]).
//!
//! Contract (DOCA0211 "SFTP Server Key Fingerprint"; docs/panel-server.md
//! "SFTP publication"):
//! - [`init`] copies the site file's `sftp` table into NV memory when NV
//!   memory has no SFTP settings yet (the first configuration); from then on
//!   `PUT /api/sftp` changes them.
//! - [`open`] for SFTP reads the NV settings at each publication (so a
//!   reconfiguration applies to the next one). While a changed host key is
//!   recorded it does not connect. A first connection without a recorded
//!   fingerprint records the key shown (audit entry). A server showing
//!   another key than the recorded one: the key is recorded as `changed`,
//!   an audit entry "server host key changed" names both, the alarm
//!   `sftp_host_key_changed` is raised (mailed where the model can), and
//!   publication stays stopped until the server is configured again.
//! - [`Out::put`] delivers one file; [`Out::close`] ends the session.

use std::sync::Arc;

use fieldtwin_emulator::net::Stack;
use fieldtwin_emulator::site::PublicationConfig;
use fieldtwin_emulator::storage::Nv;

use super::super::node::Node;
use super::{https, sftp, sftp_config};
use crate::security::audit::Kind;

/// How files are published (one method at a time).
pub enum Method {
    Https(https::Target),
    /// The settings are in NV memory ([`sftp_config`]).
    Sftp,
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::Https(t) => write!(f, "{t:?}"),
            Method::Sftp => f.write_str("sftp"),
        }
    }
}

/// Why a file was not delivered.
#[derive(Debug)]
pub enum PutError {
    Https(https::UploadError),
    Sftp(sftp::Error),
}

impl std::fmt::Display for PutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PutError::Https(e) => write!(f, "{e}"),
            PutError::Sftp(e) => write!(f, "{e}"),
        }
    }
}

impl PutError {
    /// What went wrong, for the device events.
    pub fn reason(&self) -> String {
        match self {
            PutError::Https(e) => e.reason(),
            PutError::Sftp(e) => e.to_string(),
        }
    }
}

/// The SFTP settings in NV memory, if any.
pub fn stored(nv: &Nv) -> Result<Option<sftp_config::Stored>, String> {
    nv.get(sftp_config::KEY).map_err(|e| e.to_string())
}

/// The first configuration of SFTP from the publication settings (see the
/// module contract).
pub fn init(nv: &Nv, p: &PublicationConfig) -> Result<(), String> {
    if stored(nv)?.is_some() {
        return Ok(());
    }
    let site = p
        .sftp
        .as_ref()
        .ok_or("method = \"sftp\" without an sftp table (configure the server: PUT /api/sftp)")?;
    let st = sftp_config::Stored::from_site(site)?;
    nv.put(sftp_config::KEY, &st).map_err(|e| e.to_string())
}

/// An open publication channel.
pub enum Out<'a> {
    Https(&'a dyn Stack, &'a https::Target),
    Sftp(Box<sftp::Session>),
}

impl Out<'_> {
    pub async fn put(&self, name: &str, content: &[u8]) -> Result<(), PutError> {
        match self {
            Out::Https(stack, t) => https::upload(*stack, t, name, content)
                .await
                .map_err(PutError::Https),
            Out::Sftp(s) => s.put(name, content).await.map_err(PutError::Sftp),
        }
    }

    pub async fn close(self) {
        if let Out::Sftp(s) = self {
            s.close().await;
        }
    }
}

/// Opens the channel of `method`; `Err` says why nothing can be sent now.
pub async fn open<'a>(
    node: &Arc<Node>,
    stack: &'a dyn Stack,
    method: &'a Method,
) -> Result<Out<'a>, String> {
    let Method::Https(t) = method else {
        return open_sftp(node, stack).await;
    };
    Ok(Out::Https(stack, t))
}

async fn open_sftp<'a>(node: &Arc<Node>, stack: &'a dyn Stack) -> Result<Out<'a>, String> {
    let ctx = &node.ctx;
    let Some(mut st) = stored(&ctx.nv)? else {
        return Err("SFTP is not configured (PUT /api/sftp)".into());
    };
    if let Some(seen) = &st.changed {
        return Err(format!(
            "publication stopped: the SFTP server {} showed host key {seen}, not the recorded {}; configure the server again to record it",
            st.addr(),
            st.fingerprint.as_deref().unwrap_or("-")
        ));
    }
    let target = st.target()?;
    match sftp::connect(stack, &target).await {
        Ok(session) => {
            if st.fingerprint.is_none() {
                st.accept(session.fingerprint.clone());
                ctx.nv
                    .put(sftp_config::KEY, &st)
                    .map_err(|e| e.to_string())?;
                node.audit(
                    Kind::ConfigurationChanged,
                    format!(
                        "SFTP server {} host key fingerprint recorded at the first connection: {}",
                        st.addr(),
                        session.fingerprint
                    ),
                );
            }
            Ok(Out::Sftp(Box::new(session)))
        }
        Err(sftp::Error::HostKeyChanged { addr, pinned, seen }) => {
            st.changed = Some(seen.clone());
            ctx.nv
                .put(sftp_config::KEY, &st)
                .map_err(|e| e.to_string())?;
            let text = format!(
                "SFTP server {addr} host key changed: recorded {pinned}, shown {seen}; publication stopped until the server is configured again"
            );
            node.audit(Kind::HostKeyChanged, text.clone());
            ctx.emit("datalog", format!("publication stopped: {text}"));
            super::super::email::raise(
                node,
                super::super::alarms::SFTP_KEY_CHANGED,
                "sftp_host_key_changed",
                &addr.to_string(),
                &format!("SFTP server {addr} host key changed: recorded {pinned}, shown {seen}"),
            );
            Err(text)
        }
        Err(e) => Err(e.to_string()),
    }
}
