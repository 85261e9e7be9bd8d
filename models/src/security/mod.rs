//! The hardened web surface every device model with web pages shares
//! (DESIGN.md principle 13; DOCA0211 "Security Features"): accounts with
//! salted hashes, password rules, login lockout, sessions with CSRF tokens,
//! the audit log, signed-firmware verification at boot, encrypted backup,
//! the HTTPS server scaffolding (TLS acceptor, the device certificate kept in
//! NV memory, cookies, security headers) and factory-reset helpers.
//!
//! Nothing here runs on a device's boot path that costs more than an NV
//! read: the accounts' PBKDF2 hash and the certificate are made on first
//! use through the process-wide pool of [`work`], and a client that arrives
//! before they are ready waits for them (at most [`work::READY_WAIT`]).
//!
//! Contract: the rules that differ between models (password rules, lockout
//! numbers, account names, session limits) are one [`Policy`] value per
//! model (its `policy` module); with what the site file sets per device
//! (PBKDF2 iterations, TLS versions) it makes the device's [`Config`]
//! ([`Policy::config`]). The code here is written once. Everything
//! except [`https`] and [`Surface`]'s NV access is plain state driven by a
//! `now` passed in by the caller (the device's virtual clock); no wall clock.

pub mod accounts;
pub mod audit;
pub mod backup;
pub mod firmware;
pub mod html;
pub mod https;
pub mod lockout;
pub mod login;
pub mod password;
pub mod reset;
pub mod session;
pub mod tls;
pub mod work;

use std::sync::{Arc, Mutex};

use fieldtwin_emulator::device::DeviceContext;

/// What the dashboard shows of the security surface of a device (lockout
/// state and the newest audit entries), read from its NV memory at site time
/// `now`; `Device::details` of every model with web pages uses it.
pub fn details(
    nv: &fieldtwin_emulator::storage::Nv,
    policy: &lockout::Policy,
    now: chrono::DateTime<chrono::Utc>,
) -> (
    fieldtwin_emulator::device::LockoutInfo,
    Vec<fieldtwin_emulator::device::AuditInfo>,
) {
    let lock: lockout::Lockout = nv
        .get(login::LOCKOUT_KEY)
        .ok()
        .flatten()
        .unwrap_or_default();
    let info = fieldtwin_emulator::device::LockoutInfo {
        failures: lock.failures,
        threshold: lock.threshold(policy),
        locks: lock.locks,
        locked_until: lock.locked_until.filter(|&t| t > now),
    };
    let audit = nv
        .read_log_tail::<audit::Entry>(audit::LOG, fieldtwin_emulator::device::AUDIT_TAIL)
        .unwrap_or_default()
        .into_iter()
        .map(|e| fieldtwin_emulator::device::AuditInfo {
            time: e.time,
            kind: e.kind.name().to_string(),
            detail: e.detail,
        })
        .collect();
    (info, audit)
}

/// A model's rules of the security surface: values only, one per model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Account names.
    pub accounts: accounts::Names,
    /// Login lockout numbers.
    pub lockout: lockout::Policy,
    /// Session idle timeout and count.
    pub session: session::Policy,
    /// Password rules.
    pub rules: password::Rules,
}

impl Policy {
    /// The configuration of one device of the model: PBKDF2 `iterations`
    /// and the `tls` versions come from the site file (or the model).
    pub fn config(&self, iterations: u32, tls: tls::Versions) -> Config {
        Config {
            accounts: self.accounts,
            lockout: self.lockout,
            session: self.session,
            rules: self.rules,
            iterations,
            tls,
        }
    }
}

/// The rules of the security surface of one device ([`Policy::config`]).
#[derive(Debug, Clone)]
pub struct Config {
    /// Account names.
    pub accounts: accounts::Names,
    /// Login lockout numbers.
    pub lockout: lockout::Policy,
    /// Session idle timeout and count.
    pub session: session::Policy,
    /// Password rules.
    pub rules: password::Rules,
    /// PBKDF2 iterations for stored passwords and backup keys.
    pub iterations: u32,
    /// TLS versions the HTTPS server offers.
    pub tls: tls::Versions,
}

/// The security surface of one boot of a device: its configuration, its
/// sessions (RAM only: a reboot logs everyone out) and the lock that
/// serialises logins (the lockout's read-modify-write in NV) and account
/// changes.
pub struct Surface {
    pub ctx: DeviceContext,
    pub config: Config,
    pub sessions: Mutex<session::Sessions>,
    /// Serialises logins, password changes and setting changes.
    pub auth: tokio::sync::Mutex<()>,
    /// The device's initial web password (RAM only: NV memory holds its
    /// hash once [`Surface::accounts_ready`] has made it).
    initial_password: String,
    /// The accounts in NV memory, made on first use.
    accounts: Arc<work::Deferred<Result<(), String>>>,
}

impl Surface {
    /// The surface of one boot; `initial_password` is the administrator's
    /// password of a device without accounts (hashed on first use).
    pub fn new(ctx: DeviceContext, config: Config, initial_password: &str) -> Self {
        Self {
            sessions: Mutex::new(session::Sessions::new(config.session)),
            ctx,
            config,
            auth: tokio::sync::Mutex::new(()),
            initial_password: initial_password.to_string(),
            accounts: Arc::new(work::Deferred::new()),
        }
    }

    /// Waits until the accounts exist in NV memory, making them from the
    /// initial password if there are none (the first use after a first
    /// boot); at most [`work::READY_WAIT`]. The error says what to do.
    pub async fn accounts_ready(&self) -> Result<(), String> {
        let nv = self.ctx.nv.clone();
        let pw = self.initial_password.clone();
        let it = self.config.iterations;
        let made = self
            .accounts
            .get(
                move || async move { accounts::ensure(&nv, &pw, it).await },
                Result::is_err,
                work::READY_WAIT,
            )
            .await;
        made.unwrap_or_else(|| {
            Err("the device is still preparing its accounts; try again in a minute".into())
        })
    }

    /// Whether the accounts have been made (or found) in this boot.
    pub fn accounts_made(&self) -> bool {
        matches!(self.accounts.peek(), Some(Ok(())))
    }

    /// The device's site-time now (lockout and sessions run on it).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.ctx.clock.utc_now()
    }

    /// Writes an audit entry stamped by the RTC and reports it as a device
    /// event.
    pub fn audit(&self, kind: audit::Kind, detail: impl Into<String>) {
        let detail = detail.into();
        if let Err(e) = audit::record(&self.ctx.nv, self.ctx.rtc.now(), kind, detail.clone()) {
            tracing::error!("{}: audit log write failed: {e}", self.ctx.id);
        }
        self.ctx.emit("audit", format!("{}: {detail}", kind.name()));
    }

    /// The live session of `token`, refreshed.
    pub fn session(&self, token: Option<String>) -> Option<(String, session::Session)> {
        let t = token?;
        let s = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .touch(&t, self.now())?;
        Some((t, s))
    }

    /// Opens a session; returns its token.
    pub fn open_session(&self) -> String {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open(self.now())
    }

    /// Closes the session of `token`.
    pub fn close_session(&self, token: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .close(token);
    }
}
