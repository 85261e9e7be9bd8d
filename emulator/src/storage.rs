//! Non-volatile memory of every device (sled).
//!
//! Contract:
//! - One [`Store`] per process; `--state DIR` keeps it across restarts, without
//!   it a fresh temporary store is used and removed at exit.
//! - Each device gets its own namespace, an [`Nv`] handle: keyed values
//!   (configuration, accounts, RTC backup, firmware slot, pairing) and
//!   append-only logs (audit log, data log) that keep their order.
//! - Every write returns only after it is flushed to disk, so a device may
//!   acknowledge it (an audit entry, a config save) right after.
//! - [`Nv::wipe`] erases the namespace (factory reset); keys listed in
//!   [`Nv::wipe_except`] survive it (e.g. a permanent radio deactivation).

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Errors of the non-volatile store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open the state directory {path}: {source} (is another fieldtwin using it?)")]
    Open { path: PathBuf, source: sled::Error },
    #[error("non-volatile memory failure: {0}")]
    Io(#[from] sled::Error),
    #[error("stored value for {key:?} is unreadable: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
}

/// The process-wide store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens the store in `dir`, or a temporary one when `dir` is `None`.
    pub fn open(dir: Option<&Path>) -> Result<Self, StorageError> {
        let config = match dir {
            Some(d) => sled::Config::new().path(d),
            None => sled::Config::new().temporary(true),
        };
        let db = config.open().map_err(|source| StorageError::Open {
            path: dir.map(Path::to_path_buf).unwrap_or_default(),
            source,
        })?;
        Ok(Self {
            db,
            path: dir.map(Path::to_path_buf),
        })
    }

    /// Where the state lives, if persistent.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The namespace of device `id`.
    pub fn device(&self, id: &str) -> Result<Nv, StorageError> {
        Ok(Nv {
            tree: self.db.open_tree(format!("device/{id}"))?,
        })
    }

    /// Flushes everything (clean shutdown).
    pub fn flush(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        Ok(())
    }
}

/// One device's non-volatile memory.
#[derive(Clone)]
pub struct Nv {
    tree: sled::Tree,
}

impl std::fmt::Debug for Nv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nv")
            .field("entries", &self.tree.len())
            .finish()
    }
}

const LOG_PREFIX: &str = "log/";

fn log_key(log: &str, seq: u64) -> Vec<u8> {
    let mut k = format!("{LOG_PREFIX}{log}/").into_bytes();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl Nv {
    /// Reads value `key`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        match self.tree.get(key)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StorageError::Corrupt {
                        key: key.to_string(),
                        source,
                    })
            }
        }
    }

    /// Writes value `key` and flushes it.
    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|source| StorageError::Corrupt {
            key: key.to_string(),
            source,
        })?;
        self.tree.insert(key, bytes)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Raw bytes of `key` (firmware images and other blobs).
    pub fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    /// Writes raw bytes under `key` and flushes them.
    pub fn put_raw(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.tree.insert(key, bytes)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Removes `key` and flushes.
    pub fn remove(&self, key: &str) -> Result<(), StorageError> {
        self.tree.remove(key)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Appends `entry` to log `log`, flushes, and returns its sequence number.
    pub fn append<T: Serialize>(&self, log: &str, entry: &T) -> Result<u64, StorageError> {
        let seq = self
            .tree
            .scan_prefix(format!("{LOG_PREFIX}{log}/"))
            .keys()
            .next_back()
            .transpose()?
            .and_then(|k| k.get(k.len().saturating_sub(8)..).map(<[u8]>::to_vec))
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(|b| u64::from_be_bytes(b) + 1)
            .unwrap_or(0);
        let bytes = serde_json::to_vec(entry).map_err(|source| StorageError::Corrupt {
            key: format!("{LOG_PREFIX}{log}"),
            source,
        })?;
        self.tree.insert(log_key(log, seq), bytes)?;
        self.tree.flush()?;
        Ok(seq)
    }

    /// Every entry of log `log`, oldest first.
    pub fn read_log<T: DeserializeOwned>(&self, log: &str) -> Result<Vec<T>, StorageError> {
        self.tree
            .scan_prefix(format!("{LOG_PREFIX}{log}/"))
            .values()
            .map(|v| {
                let v = v?;
                serde_json::from_slice(&v).map_err(|source| StorageError::Corrupt {
                    key: format!("{LOG_PREFIX}{log}"),
                    source,
                })
            })
            .collect()
    }

    /// The newest `n` entries of log `log`, oldest first (reads only those).
    pub fn read_log_tail<T: DeserializeOwned>(
        &self,
        log: &str,
        n: usize,
    ) -> Result<Vec<T>, StorageError> {
        let mut tail = self
            .tree
            .scan_prefix(format!("{LOG_PREFIX}{log}/"))
            .values()
            .rev()
            .take(n)
            .map(|v| {
                let v = v?;
                serde_json::from_slice(&v).map_err(|source| StorageError::Corrupt {
                    key: format!("{LOG_PREFIX}{log}"),
                    source,
                })
            })
            .collect::<Result<Vec<T>, _>>()?;
        tail.reverse();
        Ok(tail)
    }

    /// Drops the oldest entries of log `log` so at most `keep` remain.
    pub fn trim_log(&self, log: &str, keep: usize) -> Result<(), StorageError> {
        let keys: Vec<_> = self
            .tree
            .scan_prefix(format!("{LOG_PREFIX}{log}/"))
            .keys()
            .collect::<Result<_, _>>()?;
        for k in keys.iter().take(keys.len().saturating_sub(keep)) {
            self.tree.remove(k)?;
        }
        self.tree.flush()?;
        Ok(())
    }

    /// Erases the whole namespace (factory reset).
    pub fn wipe(&self) -> Result<(), StorageError> {
        self.wipe_except(&[])
    }

    /// Erases the namespace except the keys in `keep`.
    pub fn wipe_except(&self, keep: &[&str]) -> Result<(), StorageError> {
        let keys: Vec<_> = self.tree.iter().keys().collect::<Result<_, _>>()?;
        for k in keys {
            if !keep.iter().any(|kept| k.as_ref() == kept.as_bytes()) {
                self.tree.remove(k)?;
            }
        }
        self.tree.flush()?;
        Ok(())
    }

    /// Whether the namespace holds nothing (a device that never booted or was reset).
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_logs_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(Some(dir.path())).unwrap();
            let nv = store.device("ps1").unwrap();
            nv.put("config", &("switched", 3u32)).unwrap();
            for i in 0..300u32 {
                nv.append("audit", &format!("entry {i}")).unwrap();
            }
        }
        let store = Store::open(Some(dir.path())).unwrap();
        let nv = store.device("ps1").unwrap();
        assert_eq!(
            nv.get::<(String, u32)>("config").unwrap(),
            Some(("switched".to_string(), 3))
        );
        let log: Vec<String> = nv.read_log("audit").unwrap();
        assert_eq!(log.len(), 300);
        assert_eq!(log[0], "entry 0");
        assert_eq!(log[299], "entry 299");
        let tail: Vec<String> = nv.read_log_tail("audit", 3).unwrap();
        assert_eq!(tail, ["entry 297", "entry 298", "entry 299"]);
        assert!(nv.read_log_tail::<String>("none", 3).unwrap().is_empty());
        nv.trim_log("audit", 10).unwrap();
        let log: Vec<String> = nv.read_log("audit").unwrap();
        assert_eq!(log.first().map(String::as_str), Some("entry 290"));
    }

    #[test]
    fn namespaces_are_separate_and_wipe_keeps_listed_keys() {
        let store = Store::open(None).unwrap();
        let a = store.device("a").unwrap();
        let b = store.device("b").unwrap();
        a.put("x", &1).unwrap();
        a.put("fuse", &true).unwrap();
        a.append("audit", &"hello").unwrap();
        b.put("x", &2).unwrap();
        a.wipe_except(&["fuse"]).unwrap();
        assert_eq!(a.get::<i32>("x").unwrap(), None);
        assert_eq!(a.get::<bool>("fuse").unwrap(), Some(true));
        assert!(a.read_log::<String>("audit").unwrap().is_empty());
        assert_eq!(b.get::<i32>("x").unwrap(), Some(2));
    }

    #[test]
    fn corrupt_value_is_an_error_not_a_panic() {
        let store = Store::open(None).unwrap();
        let a = store.device("a").unwrap();
        a.put_raw("config", b"\xff\x00garbage").unwrap();
        let err = a.get::<u32>("config").unwrap_err();
        assert!(err.to_string().contains("config"));
    }
}
