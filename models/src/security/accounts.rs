//! Web accounts (DOCA0211 "User Accounts"): an administrator and an
//! optional support account, each a salted slow hash ([`Hashed`]), kept in
//! NV memory under [`KEY`].
//!
//! Contract: the names are per-model configuration ([`Names`]); the first
//! boot (and the first boot after a factory reset) creates the administrator
//! with the device's default password and the support account disabled.

use fieldtwin_emulator::device::BootError;
use fieldtwin_emulator::storage::Nv;
use serde::{Deserialize, Serialize};

use super::password::Hashed;

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

/// Creates the accounts with `default_password` unless they exist.
pub async fn ensure(nv: &Nv, default_password: &str, iterations: u32) -> Result<(), BootError> {
    if nv.get::<Accounts>(KEY)?.is_some() {
        return Ok(());
    }
    let pw = default_password.to_string();
    let admin = tokio::task::spawn_blocking(move || Hashed::new(&pw, iterations))
        .await
        .map_err(|e| BootError::Other(e.to_string()))?;
    nv.put(
        KEY,
        &Accounts {
            admin,
            support: None,
        },
    )?;
    Ok(())
}
