//! Audit log (DOCA0211 "Audit Logs"): security events kept in NV memory,
//! timestamped by the device's RTC (so a drifted clock shows in the log).
//!
//! Contract: entries carry an [`Kind`] and a fixed-form detail written by the
//! device itself; never a password and never a client-supplied user name.
//! The log keeps the newest [`KEEP`] entries: once it holds 100 more, the
//! oldest are removed and a [`Kind::LogOverflow`] entry records how many
//! (and how many since the last factory reset), so a reader knows the log is
//! not complete. [`csv`] renders it for download.

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
    LogOverflow,
    /// Data publication stopped by the device (a pinned server certificate
    /// that changed); it resumes when the publication is reconfigured.
    PublicationStopped,
    /// Logged rows not yet published dropped by the data log's retention.
    DataLogOverflow,
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
            Kind::LogOverflow => "audit log overflow",
            Kind::PublicationStopped => "publication stopped",
            Kind::DataLogOverflow => "data log overflow",
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

/// NV key: entries removed by trimming since the last factory reset.
const DROPPED_KEY: &str = "audit_dropped";

/// Appends an entry and trims the log.
pub fn record(
    nv: &Nv,
    time: DateTime<Utc>,
    kind: Kind,
    detail: impl Into<String>,
) -> Result<(), StorageError> {
    record_capped(nv, KEEP, time, kind, detail)
}

/// [`record`] with a cap of `keep` entries: once per 100 entries (by
/// sequence number) past `keep + 100`, a log longer than `keep` loses its
/// oldest entries down to `keep` and the overflow is recorded.
fn record_capped(
    nv: &Nv,
    keep: usize,
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
    if n as usize > keep + 100 && n % 100 == 0 {
        let len = nv.read_log::<serde_json::Value>(LOG)?.len();
        if len > keep {
            nv.trim_log(LOG, keep)?;
            let removed = (len - keep) as u64;
            let total = nv.get::<u64>(DROPPED_KEY)?.unwrap_or(0) + removed;
            nv.put(DROPPED_KEY, &total)?;
            nv.append(
                LOG,
                &Entry {
                    time,
                    kind: Kind::LogOverflow,
                    detail: format!(
                        "log full: the {removed} oldest entries were removed ({total} since the last factory reset); the newest {keep} are kept"
                    ),
                },
            )?;
        }
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
    fn a_full_log_keeps_the_newest_entries_and_records_the_overflow() {
        let store = fieldtwin_emulator::storage::Store::open(None).unwrap();
        let nv = store.device("ps").unwrap();
        let t0 = DateTime::from_timestamp(1_750_000_000, 0).unwrap();
        let keep = 20;
        let (mut trims, mut len) = (0usize, 0usize);
        for i in 0..300i64 {
            let t = t0 + chrono::Duration::seconds(i);
            record_capped(&nv, keep, t, Kind::LoginFailed, format!("n{i}")).unwrap();
            let now = read(&nv).unwrap().len();
            if now < len {
                trims += 1;
            }
            len = now;
        }
        assert!(trims >= 2, "{trims}");
        let log = read(&nv).unwrap();
        assert!(log.len() <= keep + 101, "{}", log.len());
        // The newest entry is last, the kept ones are consecutive and in
        // order: only the oldest went.
        let numbered: Vec<i64> = log
            .iter()
            .filter_map(|e| e.detail.strip_prefix('n').and_then(|n| n.parse().ok()))
            .collect();
        assert_eq!(numbered.last(), Some(&299));
        assert!(
            numbered.windows(2).all(|w| w[1] == w[0] + 1),
            "{numbered:?}"
        );
        assert!(numbered.len() >= keep - 1, "{numbered:?}");
        let overflow: Vec<&Entry> = log.iter().filter(|e| e.kind == Kind::LogOverflow).collect();
        let last = overflow.last().expect("an overflow entry");
        assert!(
            last.detail.contains("oldest entries were removed"),
            "{}",
            last.detail
        );
        assert!(
            last.detail.contains(&format!("the newest {keep} are kept")),
            "{}",
            last.detail
        );
        // The running total counts every removed entry: all written (300
        // plus one overflow entry per trim) minus what is still there.
        let total: u64 = nv.get(DROPPED_KEY).unwrap().unwrap();
        assert_eq!(total as usize, 300 + trims - log.len());
        assert!(
            last.detail.contains(&format!("({total} since")),
            "{}",
            last.detail
        );
        assert!(csv(&log).contains("audit log overflow"));
    }

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
