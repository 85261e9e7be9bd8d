//! Logins (DOCA0211 "Web Authentication"): the account check under the
//! lockout, with every outcome audited.
//!
//! Contract:
//! - While locked, an attempt is refused without checking the password, is
//!   not counted and is audited as refused.
//! - The password hash is computed whatever the user name, so the answer time
//!   does not tell whether the user exists. A success resets the lockout and
//!   opens a session; a failure counts toward the lockout and is audited.
//! - The lockout state is written to NV memory at every change.

use super::Surface;
use super::accounts::{self, Accounts};
use super::audit::Kind;
use super::lockout::{Failure, Lockout};

/// NV key of the lockout state.
pub const LOCKOUT_KEY: &str = "lockout";

/// The result of a login.
pub enum Outcome {
    /// Logged in: the session token.
    Ok(String),
    /// Wrong user or password; the message says how many failures are left.
    Wrong(String),
    /// Locked (before or because of this attempt).
    Locked(String),
}

/// Checks a login made through `via` ("webpages", "api").
pub async fn login(sec: &Surface, user: &str, pw: &str, via: &str) -> Outcome {
    let _guard = sec.auth.lock().await;
    let now = sec.now();
    let nv = &sec.ctx.nv;
    let names = sec.config.accounts;
    let mut lock: Lockout = nv.get(LOCKOUT_KEY).ok().flatten().unwrap_or_default();
    if let Some(rem) = lock.locked(now) {
        let min = (rem.num_seconds() + 59) / 60;
        sec.audit(
            Kind::LoginRefusedLocked,
            format!("{via}: attempt refused while locked"),
        );
        return Outcome::Locked(format!(
            "The webpages are locked after too many failed logins. Try again in {min} minute(s)."
        ));
    }
    let stored: Option<Accounts> = accounts::load(nv);
    let pw_len = pw.len();
    let support = names.support == Some(user);
    let ok = match stored {
        Some(a) => {
            let pw = pw.to_string();
            let known = user == names.admin || (support && a.support.is_some());
            let hash = match (support, a.support) {
                (true, Some(h)) => h,
                _ => a.admin,
            };
            let verified = tokio::task::spawn_blocking(move || hash.verify(&pw))
                .await
                .unwrap_or(false);
            verified && known && pw_len > 0
        }
        None => false,
    };
    let who = if support {
        "support user"
    } else {
        "administrator"
    };
    if ok {
        lock.succeed();
        let _ = nv.put(LOCKOUT_KEY, &lock);
        sec.audit(Kind::LoginSucceeded, format!("{via}: {who} logged in"));
        return Outcome::Ok(sec.open_session());
    }
    let outcome = lock.fail(&sec.config.lockout, now);
    let _ = nv.put(LOCKOUT_KEY, &lock);
    match outcome {
        Failure::Counted { left } => {
            sec.audit(
                Kind::LoginFailed,
                format!(
                    "{via}: wrong user name or password ({} consecutive)",
                    lock.failures
                ),
            );
            Outcome::Wrong(format!(
                "Wrong user name or password. {left} more failure(s) lock the webpages."
            ))
        }
        Failure::LockedNow { minutes } => {
            sec.audit(
                Kind::LoginFailed,
                format!("{via}: wrong user name or password"),
            );
            sec.audit(
                Kind::Lockout,
                format!(
                    "webpages locked for {minutes} minutes after repeated failed logins (lock #{})",
                    lock.locks
                ),
            );
            Outcome::Locked(format!(
                "Wrong user name or password. Too many failed logins: the webpages are locked for {minutes} minutes."
            ))
        }
    }
}
