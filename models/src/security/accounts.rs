//! Web accounts (DOCA0211 "User Accounts"): an administrator and an
//! optional support account, each a salted slow hash ([`Hashed`]), kept in
//! NV memory under [`KEY`].
//!
//! Contract: the names are per-model configuration ([`Names`]). A device
//! without accounts in NV memory (the first boot, the first boot after a
//! factory reset) gets the administrator with the device's initial password
//! and the support account disabled, made on first use, not at boot
//! ([`ensure`], through the pool of [`super::work`]): a boot never runs
//! PBKDF2, and ten thousand devices come up in seconds. Until then the
//! initial password exists only in the device model's memory (it is printed
//! at start); NV memory only ever holds its salted hash.

use fieldtwin_emulator::storage::Nv;
use serde::{Deserialize, Serialize};

use super::password::Hashed;
use super::work;

/// NV key of the web accounts.
pub const KEY: &str = "accounts";

/// The account names of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names {
    /// The administrator.
    pub admin: &'static str,
    /// The vendor support account, if the model has one.
    pub support: Option<&'static str>,
}

/// Web accounts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accounts {
    pub admin: Hashed,
    /// The support account's password; `None`: the account is disabled.
    #[serde(default)]
    pub support: Option<Hashed>,
}

/// The stored accounts, if any.
pub fn load(nv: &Nv) -> Option<Accounts> {
    nv.get(KEY).ok().flatten()
}

/// Creates the accounts with `initial_password` unless they exist (the
/// PBKDF2 runs in the pool of [`super::work`]). An error says what failed.
pub async fn ensure(nv: &Nv, initial_password: &str, iterations: u32) -> Result<(), String> {
    let stored = |nv: &Nv| nv.get::<Accounts>(KEY).map(|a| a.is_some());
    if stored(nv).map_err(|e| e.to_string())? {
        return Ok(());
    }
    let pw = initial_password.to_string();
    let admin = work::run(move || Hashed::new(&pw, iterations))
        .await
        .ok_or("the password hash could not be computed")?;
    // Someone may have stored accounts meanwhile (a backup restored): keep
    // theirs.
    if !stored(nv).map_err(|e| e.to_string())? {
        nv.put(
            KEY,
            &Accounts {
                admin,
                support: None,
            },
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}
