//! The Panel Server's alarm list: what is wrong now and what was, kept in
//! NV memory, shown by `GET /api/alarms` and notified by email on the
//! models that have it ([`super::email`]).
//!
//! Contract (devices.md §1.6 "Limits": 100 alarms; docs/panel-server.md
//! "Alarms"):
//! - An alarm has a `code` naming its cause and source (one active alarm
//!   per code): `device_not_connected:<device>`,
//!   `threshold:<device>:<measurement>`, `sftp_host_key_changed`.
//! - [`raise`] adds an active alarm unless one with that code is active
//!   (then nothing changes and it returns `None`); [`clear`] marks the
//!   active one cleared. Both return what changed, for the caller to
//!   notify; both are one NV write under a process-wide lock.
//! - At most [`MAX_ALARMS`] entries are kept: the oldest cleared ones go
//!   first, then the oldest active ones.
//! - Alarms are never written into publication files (devices.md §1.6).

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use fieldtwin_emulator::storage::{Nv, StorageError};
use serde::{Deserialize, Serialize};

/// NV key of the alarm list.
pub const KEY: &str = "alarms";
/// Most alarms kept (devices.md §1.6: 100 alarms).
pub const MAX_ALARMS: usize = 100;
/// Code of the SFTP host-key alarm.
pub const SFTP_KEY_CHANGED: &str = "sftp_host_key_changed";

/// One alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    pub id: u64,
    pub code: String,
    /// What kind: `device_not_connected`, `threshold`, `sftp_host_key_changed`.
    pub kind: String,
    /// The field device or service it is about.
    pub source: String,
    pub text: String,
    pub raised: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared: Option<DateTime<Utc>>,
}

impl Alarm {
    pub fn active(&self) -> bool {
        self.cleared.is_none()
    }
}

/// The list in NV memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct List {
    pub next_id: u64,
    pub alarms: Vec<Alarm>,
}

static LOCK: Mutex<()> = Mutex::new(());

/// The list as stored.
pub fn list(nv: &Nv) -> Result<List, StorageError> {
    Ok(nv.get(KEY)?.unwrap_or_default())
}

/// Raises alarm `code` unless it is active; returns the new alarm.
pub fn raise(
    nv: &Nv,
    code: &str,
    kind: &str,
    source: &str,
    text: &str,
    at: DateTime<Utc>,
) -> Result<Option<Alarm>, StorageError> {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = list(nv)?;
    if l.alarms.iter().any(|a| a.code == code && a.active()) {
        return Ok(None);
    }
    let a = Alarm {
        id: l.next_id,
        code: code.into(),
        kind: kind.into(),
        source: source.into(),
        text: text.into(),
        raised: at,
        cleared: None,
    };
    l.next_id += 1;
    l.alarms.push(a.clone());
    while l.alarms.len() > MAX_ALARMS {
        let i = l.alarms.iter().position(|a| !a.active()).unwrap_or(0);
        l.alarms.remove(i);
    }
    nv.put(KEY, &l)?;
    Ok(Some(a))
}

/// Clears the active alarm `code`; returns it, cleared.
pub fn clear(nv: &Nv, code: &str, at: DateTime<Utc>) -> Result<Option<Alarm>, StorageError> {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = list(nv)?;
    let Some(a) = l.alarms.iter_mut().find(|a| a.code == code && a.active()) else {
        return Ok(None);
    };
    a.cleared = Some(at);
    let out = a.clone();
    nv.put(KEY, &l)?;
    Ok(Some(out))
}

/// Whether alarm `code` is active.
pub fn is_active(nv: &Nv, code: &str) -> bool {
    list(nv).is_ok_and(|l| l.alarms.iter().any(|a| a.code == code && a.active()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldtwin_emulator::storage::Store;

    #[test]
    fn one_active_alarm_per_code_and_at_most_a_hundred() {
        let store = Store::open(None).unwrap();
        let nv = store.device("ps").unwrap();
        let t = Utc::now();
        assert!(
            raise(&nv, "x", "threshold", "pt", "hot", t)
                .unwrap()
                .is_some()
        );
        assert!(
            raise(&nv, "x", "threshold", "pt", "hot", t)
                .unwrap()
                .is_none()
        );
        assert!(is_active(&nv, "x"));
        let c = clear(&nv, "x", t).unwrap().unwrap();
        assert_eq!(c.cleared, Some(t));
        assert!(clear(&nv, "x", t).unwrap().is_none());
        assert!(
            raise(&nv, "x", "threshold", "pt", "hot", t)
                .unwrap()
                .is_some()
        );
        for i in 0..150 {
            raise(&nv, &format!("d{i}"), "device_not_connected", "d", "-", t).unwrap();
        }
        let l = list(&nv).unwrap();
        assert_eq!(l.alarms.len(), MAX_ALARMS);
        assert!(
            l.alarms.iter().all(Alarm::active),
            "cleared ones went first"
        );
        assert_eq!(l.alarms.last().unwrap().code, "d149");
    }
}
