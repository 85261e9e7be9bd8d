//! Factory-reset helpers: what a reset erases from NV memory.
//!
//! Contract: [`wipe`] erases every NV key of the device except the RTC and
//! the keys the model lists as surviving (its permanent choices).

use fieldtwin_emulator::storage::{Nv, StorageError};

/// NV key of the RTC, kept across a factory reset (the clock is hardware).
pub const RTC_KEY: &str = "rtc";

/// Erases NV memory except the RTC and `survivors`.
pub fn wipe(nv: &Nv, survivors: &[&str]) -> Result<(), StorageError> {
    let mut keep = vec![RTC_KEY];
    keep.extend_from_slice(survivors);
    nv.wipe_except(&keep)
}
