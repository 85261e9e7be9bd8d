//! The EV Charging Expert's SSH service (DOCA0349 "Supported Protocols":
//! SSH for advanced diagnostics, restricted to the vendor's support
//! engineers, disabled in factory settings, enabled by the product owner
//! from the embedded web pages). A real SSH-2 server (russh) over the
//! device's own transport (DESIGN.md principle 12).
//!
//! Contract:
//! - Off in factory settings: nothing listens on TCP 22 until the
//!   administrator enables SSH on the Maintenance page (or `PUT /api/ssh`).
//!   The choice is kept in NV memory under [`ENABLED_KEY`] (a reboot keeps
//!   it, a factory reset erases it: SSH is off again). [`set`] opens or
//!   closes port 22 on every interface at once and audits the change
//!   (`service enabled` / `service disabled`).
//! - Login: password authentication only, as the `support` account
//!   ([`super::policy::SUPPORT_USER`]), which is disabled until the
//!   administrator gives it a password. Every attempt goes through the
//!   shared login ([`crate::security::login`]): one lockout with the web
//!   pages, each success and failure audited (`via` = `ssh`). Any other
//!   user name is a failed login, counted and audited the same way.
//! - After login the support engineer gets a small diagnostic shell
//!   ([`run_command`]): `help`, `version`, `whoami`, `uptime`, `stations`,
//!   `audit`, `exit`; as an interactive shell (prompt, echo) or one
//!   command per `ssh host CMD`, whose exit status is 0, or 127 for an
//!   unknown command.
//! - The host key is an Ed25519 key made on first use and kept in NV memory
//!   ([`HOST_KEY`]) until a factory reset.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fieldtwin_emulator::device::BootError;
use russh::keys::PrivateKey;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::policy::SUPPORT_USER;
use super::web::Web;
use crate::security::audit::{self, Kind};
use crate::security::login::{self, Outcome};

/// SSH port.
pub const PORT: u16 = 22;
/// NV key: SSH enabled (absent: factory setting, disabled).
pub const ENABLED_KEY: &str = "evce.ssh_enabled";
/// NV key of the host key's 32-byte Ed25519 seed (hex).
pub const HOST_KEY: &str = "evce.ssh_host_key";
/// Identification string ([NF]: the product's OpenSSH build).
pub const SERVER_ID: &str = "SSH-2.0-OpenSSH_8.4p1 Debian-5+deb11u3";
/// An idle SSH connection is closed after this long ([NF]).
pub const IDLE: Duration = Duration::from_secs(600);
/// Shell prompt.
pub const PROMPT: &str = "support@evce:~$ ";

/// The running SSH listeners of one boot (none while SSH is disabled).
#[derive(Default)]
pub struct Switch {
    running: tokio::sync::Mutex<Option<(CancellationToken, TaskTracker)>>,
}

impl Switch {
    /// Whether SSH is enabled in NV memory.
    pub fn enabled(&self, nv: &fieldtwin_emulator::storage::Nv) -> bool {
        nv.get::<bool>(ENABLED_KEY).ok().flatten() == Some(true)
    }

    /// Whether port 22 is open now.
    pub async fn listening(&self) -> bool {
        self.running.lock().await.is_some()
    }

    async fn stop(&self) {
        if let Some((token, tracker)) = self.running.lock().await.take() {
            token.cancel();
            tracker.close();
            tracker.wait().await;
        }
    }
}

/// Opens or closes port 22 as NV memory says (a step of the boot).
pub async fn apply(web: &Arc<Web>) -> Result<(), BootError> {
    web.ssh.stop().await;
    if !web.ssh.enabled(&web.ctx.nv) {
        return Ok(());
    }
    let config = Arc::new(config(web)?);
    let token = web.token.child_token();
    let tracker = TaskTracker::new();
    for iface in web.ctx.interface_names() {
        let mut listener = web.ctx.listen_tcp(&iface, "ssh", PORT).await?;
        let (w, cfg, t, tr) = (web.clone(), config.clone(), token.clone(), tracker.clone());
        let task = async move {
            loop {
                let accepted = tokio::select! {
                    _ = t.cancelled() => break,
                    a = listener.accept() => a,
                };
                let Ok((stream, peer)) = accepted else {
                    continue;
                };
                let handler = Handler {
                    web: w.clone(),
                    peer,
                    authed: false,
                    line: Vec::new(),
                };
                let (cfg, t2) = (cfg.clone(), t.clone());
                w.ctx
                    .spawn(w.tracker.track_future(tr.track_future(async move {
                    tokio::select! {
                        _ = t2.cancelled() => {}
                        _ = async {
                            if let Ok(s) = russh::server::run_stream(cfg, stream, handler).await {
                                let _ = s.await;
                            }
                        } => {}
                    }
                })));
            }
        };
        // Tracked by the boot too: a reboot waits until 22 is closed.
        web.ctx
            .spawn(web.tracker.track_future(tracker.track_future(task)));
    }
    *web.ssh.running.lock().await = Some((token, tracker));
    Ok(())
}

/// Enables or disables SSH (through `via`: "webpages", "api"), audited.
/// The error says what failed.
pub async fn set(web: &Arc<Web>, on: bool, via: &str) -> Result<(), String> {
    let _serial = web.auth.lock().await;
    let was = web.ssh.enabled(&web.ctx.nv);
    web.ctx
        .nv
        .put(ENABLED_KEY, &on)
        .map_err(|e| format!("the setting could not be stored: {e}"))?;
    if let Err(e) = apply(web).await {
        let _ = web.ctx.nv.put(ENABLED_KEY, &was);
        return Err(format!("SSH could not be started: {e}"));
    }
    if was != on {
        if on {
            web.audit(
                Kind::ServiceEnabled,
                format!("{via}: SSH enabled (TCP {PORT} open)"),
            );
        } else {
            web.audit(
                Kind::ServiceDisabled,
                format!("{via}: SSH disabled (TCP {PORT} closed)"),
            );
        }
    }
    Ok(())
}

/// The host key, made on first use and kept in NV memory.
fn host_key(web: &Web) -> Result<PrivateKey, BootError> {
    let nv = &web.ctx.nv;
    let seed = match nv.get::<String>(HOST_KEY)? {
        Some(h) => crate::security::password::unhex(&h),
        None => None,
    };
    let seed: [u8; 32] = match seed.and_then(|s| s.try_into().ok()) {
        Some(s) => s,
        None => {
            let s: [u8; 32] = rand::random();
            nv.put(HOST_KEY, &crate::security::password::hex(&s))?;
            s
        }
    };
    Ok(PrivateKey::from(Ed25519Keypair::from_seed(&seed)))
}

fn config(web: &Web) -> Result<russh::server::Config, BootError> {
    Ok(russh::server::Config {
        server_id: russh::SshId::Standard(SERVER_ID.into()),
        methods: MethodSet::from(&[MethodKind::Password][..]),
        auth_rejection_time: Duration::from_millis(500),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key(web)?],
        max_auth_attempts: 6,
        inactivity_timeout: Some(IDLE),
        nodelay: true,
        ..Default::default()
    })
}

/// One SSH connection.
struct Handler {
    web: Arc<Web>,
    peer: SocketAddr,
    authed: bool,
    /// The interactive shell's line being typed.
    line: Vec<u8>,
}

impl Handler {
    fn via(&self) -> String {
        format!("ssh from {}", self.peer.ip())
    }
}

/// The answer of the diagnostic shell to `cmd`: (output, exit status).
pub fn run_command(web: &Web, cmd: &str) -> (String, u32) {
    let nv = &web.ctx.nv;
    let words: Vec<&str> = cmd.split_whitespace().collect();
    match words.as_slice() {
        [] => (String::new(), 0),
        ["help"] => (
            "commands: help, version, whoami, uptime, stations, audit [N], exit\n".into(),
            0,
        ),
        ["version"] => (
            format!("EV Charging Expert firmware {}\n", web.host.firmware()),
            0,
        ),
        ["whoami"] | ["id"] => (format!("{SUPPORT_USER}\n"), 0),
        ["uptime"] => (
            format!("{}\n", web.ctx.rtc.now().format("%Y-%m-%d %H:%M:%S UTC")),
            0,
        ),
        ["stations"] => {
            let mut s = String::new();
            for st in super::enrollment::list(nv) {
                s += &format!("{} {}\n", st.box_id, st.ip);
            }
            (s, 0)
        }
        ["audit", rest @ ..] => {
            let n: usize = rest.first().and_then(|n| n.parse().ok()).unwrap_or(20);
            let log = audit::read(nv).unwrap_or_default();
            let from = log.len().saturating_sub(n);
            let mut s = String::new();
            for e in &log[from..] {
                s += &format!("{} {}: {}\n", e.time.to_rfc3339(), e.kind.name(), e.detail);
            }
            (s, 0)
        }
        [other, ..] => (format!("{other}: command not found (type help)\n"), 127),
    }
}

impl russh::server::Handler for Handler {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let via = self.via();
        let ok = if user == SUPPORT_USER {
            match login::login(&self.web.sec, user, password, &via).await {
                Outcome::Ok(token) => {
                    // SSH needs no web session.
                    self.web.close_session(&token);
                    true
                }
                _ => false,
            }
        } else {
            let _guard = self.web.auth.lock().await;
            let _ = login::check_credential(
                &self.web.sec,
                false,
                &via,
                &format!("user {user:?} may not log in over SSH"),
            );
            false
        };
        self.authed = ok;
        Ok(if ok { Auth::Accept } else { Auth::reject() })
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.authed {
            reply.accept().await;
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        let banner = format!(
            "EV Charging Expert {} - support diagnostics. Type help.\r\n{PROMPT}",
            self.web.ctx.id
        );
        session.data(channel, banner.into_bytes())?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        let cmd = String::from_utf8_lossy(data).to_string();
        let (out, status) = if cmd.trim() == "exit" {
            (String::new(), 0)
        } else {
            run_command(&self.web, &cmd)
        };
        session.data(channel, out.into_bytes())?;
        session.exit_status_request(channel, status)?;
        session.eof(channel)?;
        session.close(channel)?;
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        for &b in data {
            match b {
                b'\r' | b'\n' => {
                    let cmd = String::from_utf8_lossy(&self.line).to_string();
                    self.line.clear();
                    session.data(channel, &b"\r\n"[..])?;
                    if matches!(cmd.trim(), "exit" | "logout") {
                        session.exit_status_request(channel, 0)?;
                        session.eof(channel)?;
                        session.close(channel)?;
                        return Ok(());
                    }
                    let (out, _) = run_command(&self.web, &cmd);
                    let out = out.replace('\n', "\r\n") + PROMPT;
                    session.data(channel, out.into_bytes())?;
                }
                // Backspace / DEL.
                0x08 | 0x7f if self.line.pop().is_some() => {
                    session.data(channel, &b"\x08 \x08"[..])?;
                }
                // Ctrl-C: drop the line; Ctrl-D on an empty line: exit.
                0x03 => {
                    self.line.clear();
                    session.data(channel, format!("^C\r\n{PROMPT}").into_bytes())?;
                }
                0x04 if self.line.is_empty() => {
                    session.exit_status_request(channel, 0)?;
                    session.close(channel)?;
                    return Ok(());
                }
                b if b >= 0x20 && self.line.len() < 1024 => {
                    self.line.push(b);
                    session.data(channel, vec![b])?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
