//! Audit log (DOCA0211 "Audit Logs"): security events kept in NV memory,
//! timestamped by the device's RTC (so a drifted clock shows in the log).
//!
//! Contract: entries carry an [`Kind`] and a fixed-form detail written by the
//! device itself; never a password and never a client-supplied user name.
//! The log keeps the newest [`KEEP`] entries; [`csv`] renders it for download.

use chrono::{DateTime, SecondsFormat, Utc};
use fieldtwin_emulator::storage::{Nv, StorageError};
use serde::{Deserialize, Serialize};

/// NV log name.
pub const LOG: &str = "audit";
/// Entries kept ([NF]).
pub const KEEP: usize = 2000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    LoginFailed,
    LoginSucceeded,
    LoginRefusedLocked,
    Lockout,
    Logout,
    PasswordChanged,
    FirmwareUpdateFailed,
    FirmwareUpdated,
    Boot,
    Reboot,
    ConfigurationChanged,
    DateTimeChanged,
    BackupCreated,
    RestoreFailed,
    Restored,
    FactoryReset,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::LoginFailed => "login failed",
            Kind::LoginSucceeded => "login succeeded",
            Kind::LoginRefusedLocked => "login refused (locked)",
            Kind::Lockout => "lockout",
            Kind::Logout => "logout",
            Kind::PasswordChanged => "password changed",
            Kind::FirmwareUpdateFailed => "firmware update failed",
            Kind::FirmwareUpdated => "firmware updated",
            Kind::Boot => "boot",
            Kind::Reboot => "reboot",
            Kind::ConfigurationChanged => "configuration changed",
            Kind::DateTimeChanged => "date/time changed",
            Kind::BackupCreated => "backup created",
            Kind::RestoreFailed => "restore failed",
            Kind::Restored => "configuration restored",
            Kind::FactoryReset => "factory reset",
        }
    }
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// RTC time of the event.
    pub time: DateTime<Utc>,
    pub kind: Kind,
    /// Device-written detail (no personal information).
    pub detail: String,
}

/// Appends an entry and trims the log.
pub fn record(
    nv: &Nv,
    time: DateTime<Utc>,
    kind: Kind,
    detail: impl Into<String>,
) -> Result<(), StorageError> {
    let n = nv.append(
        LOG,
        &Entry {
            time,
            kind,
            detail: detail.into(),
        },
    )?;
    if n as usize > KEEP + 100 {
        nv.trim_log(LOG, KEEP)?;
    }
    Ok(())
}

/// The log, oldest first.
pub fn read(nv: &Nv) -> Result<Vec<Entry>, StorageError> {
    nv.read_log(LOG)
}

/// CSV with a header row; fields quoted when needed.
pub fn csv(entries: &[Entry]) -> String {
    let mut out = String::from("time,event,detail\r\n");
    for e in entries {
        out.push_str(&format!(
            "{},{},{}\r\n",
            e.time.to_rfc3339_opts(SecondsFormat::Secs, true),
            quote(e.kind.name()),
            quote(&e.detail)
        ));
    }
    out
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lists_entries() {
        let t = DateTime::from_timestamp(1_750_000_000, 0).unwrap();
        let e = vec![
            Entry {
                time: t,
                kind: Kind::LoginFailed,
                detail: "from 10.0.0.1".into(),
            },
            Entry {
                time: t,
                kind: Kind::Lockout,
                detail: "locked, 10 min".into(),
            },
        ];
        let c = csv(&e);
        assert_eq!(c.lines().count(), 3);
        assert!(c.contains("2025-06-15T15:06:40Z,login failed,from 10.0.0.1"));
        assert!(c.contains("lockout,\"locked, 10 min\""));
    }
}
