//! Logins (DOCA0211 "Web Authentication"): the account check under the
//! lockout, with every outcome audited.
//!
//! Contract:
//! - A login waits for the accounts ([`Surface::accounts_ready`]: made
//!   from the initial password on first use); if they cannot be made in
//!   time the attempt is [`Outcome::Unavailable`], neither counted nor
//!   audited.
//! - While locked, an attempt is refused without checking the password, is
//!   not counted and is audited as refused.
//! - The password hash is computed whatever the user name, so the answer time
//!   does not tell whether the user exists. A success resets the lockout and
//!   opens a session; a failure counts toward the lockout and is audited.
//! - The lockout state is written to NV memory at every change.
//! - A wrong current password given to confirm an operation (a password
//!   change) is a failed login: [`reauthenticate`] refuses it while locked,
//!   counts it toward the lockout and audits it.
//! - A wrong device credential entered by a logged-in session (a wireless
//!   device's install code) is counted and audited the same way by
//!   [`check_credential`], so a session cannot guess one without limit.

use super::Surface;
use super::accounts::{self, Accounts};
use super::audit::Kind;
use super::lockout::{Failure, Lockout};
use super::work;

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
    /// Not checked: the accounts could not be made ready in time (a first
    /// use while the pool of [`super::work`] is busy) or at all; nothing
    /// is counted. The message says what to do.
    Unavailable(String),
}

/// Checks a login made through `via` ("webpages", "api").
pub async fn login(sec: &Surface, user: &str, pw: &str, via: &str) -> Outcome {
    // A login right after the first boot waits for the accounts to be made.
    if let Err(e) = sec.accounts_ready().await {
        return Outcome::Unavailable(format!("Login not checked: {e}."));
    }
    let _guard = sec.auth.lock().await;
    let nv = &sec.ctx.nv;
    let names = sec.config.accounts;
    let mut lock: Lockout = nv.get(LOCKOUT_KEY).ok().flatten().unwrap_or_default();
    if let Some(refused) = refuse_if_locked(sec, &lock, via) {
        return refused;
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
            let verified = work::run(move || hash.verify(&pw)).await.unwrap_or(false);
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
    count_failure(sec, &mut lock, via, "wrong user name or password")
}

/// The refusal of an attempt while locked (audited), if locked.
fn refuse_if_locked(sec: &Surface, lock: &Lockout, via: &str) -> Option<Outcome> {
    let rem = lock.locked(sec.now())?;
    let min = (rem.num_seconds() + 59) / 60;
    sec.audit(
        Kind::LoginRefusedLocked,
        format!("{via}: attempt refused while locked"),
    );
    Some(Outcome::Locked(format!(
        "The webpages are locked after too many failed logins. Try again in {min} minute(s)."
    )))
}

/// Counts a failed authentication (`what` went wrong) and audits it.
fn count_failure(sec: &Surface, lock: &mut Lockout, via: &str, what: &str) -> Outcome {
    let outcome = lock.fail(&sec.config.lockout, sec.now());
    let _ = sec.ctx.nv.put(LOCKOUT_KEY, &*lock);
    let cap = {
        let mut c = what.chars();
        c.next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default()
    };
    match outcome {
        Failure::Counted { left } => {
            sec.audit(
                Kind::LoginFailed,
                format!("{via}: {what} ({} consecutive)", lock.failures),
            );
            Outcome::Wrong(format!("{cap}. {left} more failure(s) lock the webpages."))
        }
        Failure::LockedNow { minutes } => {
            sec.audit(Kind::LoginFailed, format!("{via}: {what}"));
            sec.audit(
                Kind::Lockout,
                format!(
                    "webpages locked for {minutes} minutes after repeated failed logins (lock #{})",
                    lock.locks
                ),
            );
            Outcome::Locked(format!(
                "{cap}. Too many failed logins: the webpages are locked for {minutes} minutes."
            ))
        }
    }
}

/// Checks the administrator's current password given to confirm an
/// operation of a logged-in session, under the lockout: `Ok(())` when it is
/// right (the failure count is reset), otherwise the refusal, counted and
/// audited like a failed login. The caller holds `sec.auth`.
pub async fn reauthenticate(sec: &Surface, current: &str, via: &str) -> Result<(), Outcome> {
    if let Err(e) = sec.accounts_ready().await {
        return Err(Outcome::Unavailable(format!("Not checked: {e}.")));
    }
    let nv = &sec.ctx.nv;
    let mut lock: Lockout = nv.get(LOCKOUT_KEY).ok().flatten().unwrap_or_default();
    if let Some(refused) = refuse_if_locked(sec, &lock, via) {
        return Err(refused);
    }
    let ok = match accounts::load(nv) {
        Some(a) => {
            let (hash, pw) = (a.admin, current.to_string());
            work::run(move || hash.verify(&pw)).await.unwrap_or(false) && !current.is_empty()
        }
        None => false,
    };
    if ok {
        if lock != Lockout::default() {
            lock.succeed();
            let _ = nv.put(LOCKOUT_KEY, &lock);
        }
        return Ok(());
    }
    Err(count_failure(
        sec,
        &mut lock,
        via,
        "the administrator's current password is wrong",
    ))
}

/// Counts a wrong credential that a logged-in session entered through `via`
/// (`what` says what was wrong) like a failed login: refused while locked,
/// otherwise counted toward the lockout and audited. `right` credentials
/// pass without touching the lockout (they are not the account's password).
/// The caller holds `sec.auth`.
pub fn check_credential(sec: &Surface, right: bool, via: &str, what: &str) -> Result<(), Outcome> {
    let mut lock: Lockout = sec
        .ctx
        .nv
        .get(LOCKOUT_KEY)
        .ok()
        .flatten()
        .unwrap_or_default();
    if let Some(refused) = refuse_if_locked(sec, &lock, via) {
        return Err(refused);
    }
    if right {
        return Ok(());
    }
    Err(count_failure(sec, &mut lock, via, what))
}
