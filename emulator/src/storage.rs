//! Non-volatile memory of every device (sled), and the saved site clock.
//!
//! Contract:
//! - One [`Store`] per process; `--state DIR` keeps it across restarts, without
//!   it a fresh temporary store is used and removed at exit. A directory
//!   already used by another running fieldtwin is refused with
//!   [`StorageError::Locked`].
//! - Each device gets its own namespace, an [`Nv`] handle: keyed values
//!   (configuration, accounts, RTC backup, firmware slot, pairing) and
//!   append-only logs (audit log, data log) that keep their order. Every
//!   namespace lives in one sled tree under a prefix of its own, so opening
//!   a namespace costs the same at 10 devices and at 10,000; a directory
//!   written with a tree per namespace (before 2026-11-24) is migrated at
//!   open, without loss.
//! - Each key is stored on its own. A value of [`LARGE_VALUE`] bytes or more
//!   (a firmware image) is written once, to a file of its own under
//!   `DIR/large-values/`, and the namespace keeps a small reference to it; a
//!   new value of the key replaces the file (the previous file is deleted as
//!   soon as the reference to the new one is durable, so at most the current
//!   and, during a write, the previous value exist). Small writes of the same
//!   device never rewrite a large value.
//! - "Committed" = durable: every write returns only after it is on disk
//!   (sled flushed, large files fsynced and renamed into place), so a device
//!   may acknowledge it (an audit entry, a config save) right after. The
//!   flush is blocking I/O; inside a multi-threaded tokio runtime it runs
//!   through `tokio::task::block_in_place`, so the worker's other tasks (other
//!   devices, the control API) move to another thread and are never stalled
//!   by it. The `*_async` variants wait for the flush on the blocking pool
//!   instead. A temporary store (no `--state`) is removed at exit, so it is
//!   never flushed: nothing could read it back.
//! - Readers see committed values only: while a write of a namespace is
//!   being flushed, every read of that namespace (through any [`Nv`] handle
//!   on it: values, large values, logs) sees what the key held when it was
//!   last committed, never the new value that the flush has not yet made
//!   durable ([`InFlight`]). A write's own caller sees it once it returns.
//! - [`Nv::put_batch`] writes several small values atomically (after a power
//!   cut either all of them or none are there) with one flush: a device that
//!   stores many records at once (a logger catching up) pays one flush, not
//!   one per record.
//! - [`Nv::wipe`] erases the namespace (factory reset); keys listed in
//!   [`Nv::wipe_except`] survive it (e.g. a permanent radio deactivation).
//! - The site clock is saved under its own namespace ([`Store::save_clock`]);
//!   [`Store::saved_clock`] is what the directory held when it was opened.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::SavedClock;

/// Values of this many bytes or more are kept in a file of their own.
pub const LARGE_VALUE: usize = 64 * 1024;

/// Sub-directory of the state directory that holds large values.
pub const LARGE_DIR: &str = "large-values";

/// Prefix of the reference a namespace keeps for a large value.
const LARGE_REF: &str = "\u{0}large/";

/// Errors of the non-volatile store. Each message says what failed and why
/// in one line; none has a `source()`, so a report that prints the error
/// chain says it once.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(
        "the state directory {path} is in use by another running fieldtwin; stop that one \
         first, or give this one another --state DIR"
    )]
    Locked { path: PathBuf },
    #[error("cannot open the state directory {path}: {cause}")]
    Open { path: PathBuf, cause: sled::Error },
    #[error("non-volatile memory failure: {0}")]
    Io(sled::Error),
    #[error("non-volatile memory failure on {path}: {cause}")]
    File {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("stored value for {key:?} is unreadable: {cause}")]
    Corrupt {
        key: String,
        cause: serde_json::Error,
    },
    #[error(
        "value for {key:?} is {len} bytes; a batch write takes values under {LARGE_VALUE} bytes \
         (write large values on their own)"
    )]
    TooLargeForBatch { key: String, len: usize },
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        Self::Io(e)
    }
}

/// Where large values live, and whether anything must be flushed.
struct Files {
    dir: PathBuf,
    /// `false` for a temporary store: nothing is ever flushed.
    durable: bool,
    /// Keeps a temporary store's directory until the last handle is gone.
    _temp: Option<tempfile::TempDir>,
    /// The clock saved last (a save never goes back in time).
    last_clock: std::sync::Mutex<Option<SavedClock>>,
    /// The writes being flushed, per namespace (shared by its handles).
    in_flight: std::sync::Mutex<HashMap<String, Arc<std::sync::Mutex<InFlight>>>>,
}

/// The committed value of a key that a write has changed but not yet
/// flushed, and how many such writes there are.
struct Shadow {
    committed: Option<sled::IVec>,
    /// The write whose value `committed` is (0: the value before them).
    committed_by: u64,
    writers: usize,
}

/// The writes of one namespace applied to sled but not yet flushed: sled
/// shows a change to its readers as soon as it is applied, before the
/// flush that makes it durable returns. Writers register their keys here
/// before applying and leave after flushing, both under this lock, and
/// readers read under it, so they see [`Shadow::committed`] for those keys.
#[derive(Default)]
struct InFlight {
    /// Number of the last write begun.
    last: u64,
    keys: HashMap<Vec<u8>, Shadow>,
}

/// A change to one key: its new value (`None`: removed).
type Change = (Vec<u8>, Option<sled::IVec>);

impl InFlight {
    /// Registers a write of `changes` (before it is applied to `tree`);
    /// returns its number.
    fn begin(&mut self, tree: &Ns, changes: &[Change]) -> Result<u64, StorageError> {
        self.last += 1;
        for (k, _) in changes {
            match self.keys.get_mut(k) {
                Some(s) => s.writers += 1,
                None => {
                    let committed = tree.get(k)?;
                    self.keys.insert(
                        k.clone(),
                        Shadow {
                            committed,
                            committed_by: 0,
                            writers: 1,
                        },
                    );
                }
            }
        }
        Ok(self.last)
    }

    /// Ends write `n`: its values are committed (`durable`) or it failed.
    fn end(&mut self, changes: &[Change], n: u64, durable: bool) {
        for (k, v) in changes {
            let Some(s) = self.keys.get_mut(k) else {
                continue;
            };
            s.writers -= 1;
            if s.writers == 0 {
                self.keys.remove(k);
            } else if durable && n >= s.committed_by {
                s.committed = v.clone();
                s.committed_by = n;
            }
        }
    }

    /// What a reader sees of `key`.
    fn view(&self, tree: &Ns, key: &[u8]) -> Result<Option<sled::IVec>, StorageError> {
        match self.keys.get(key) {
            Some(s) => Ok(s.committed.clone()),
            None => Ok(tree.get(key)?),
        }
    }

    /// Replaces, in `entries` read from `tree` under `prefix`, the keys
    /// being written by their committed values; keys at or above `from`
    /// only (`None`: all).
    fn overlay(
        &self,
        prefix: &[u8],
        from: Option<&[u8]>,
        entries: &mut BTreeMap<Vec<u8>, sled::IVec>,
    ) {
        for (k, s) in &self.keys {
            if !k.starts_with(prefix) || from.is_some_and(|f| k.as_slice() < f) {
                continue;
            }
            match &s.committed {
                Some(v) => entries.insert(k.clone(), v.clone()),
                None => entries.remove(k),
            };
        }
    }

    /// How many keys under `prefix` are being written.
    fn count(&self, prefix: &[u8]) -> usize {
        self.keys.keys().filter(|k| k.starts_with(prefix)).count()
    }
}

/// The process-wide store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    path: Option<PathBuf>,
    files: Arc<Files>,
    saved_clock: Option<SavedClock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

const SITE_TREE: &str = "site";
const CLOCK_KEY: &str = "clock";

/// Whether opening failed because another process holds the directory's
/// lock (sled 0.34 reports the `flock` failure as an `Other` error whose
/// message starts "could not acquire lock").
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::WouldBlock
            || io.to_string().starts_with("could not acquire lock"))
}

/// Runs blocking I/O `f` without stalling a tokio worker: through
/// `block_in_place` on a multi-threaded runtime, directly elsewhere.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The one sled tree that holds every namespace. A tree per namespace
/// would cost O(namespaces) at each new one (sled rewrites its whole tree
/// catalogue to add a tree): quadratic at boot of a 10,000-device site.
const NV_TREE: &str = "nv";

/// The key prefix of namespace `name` in [`NV_TREE`]: its length (2 bytes,
/// big-endian) then its bytes, so no namespace's keys start with another's
/// prefix.
fn ns_prefix(name: &str) -> Vec<u8> {
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    let mut p = len.to_be_bytes().to_vec();
    p.extend_from_slice(&name.as_bytes()[..usize::from(len)]);
    p
}

/// One namespace of [`NV_TREE`]: the subset of `sled::Tree` that [`Nv`]
/// uses, on the namespace's own keys (prefixed on the way in, stripped on
/// the way out).
#[derive(Clone)]
struct Ns {
    tree: sled::Tree,
    prefix: Arc<[u8]>,
}

impl Ns {
    fn key(&self, k: impl AsRef<[u8]>) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + k.as_ref().len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(k.as_ref());
        full
    }

    fn get(&self, k: impl AsRef<[u8]>) -> sled::Result<Option<sled::IVec>> {
        self.tree.get(self.key(k))
    }

    fn insert(&self, k: impl AsRef<[u8]>, v: impl Into<sled::IVec>) -> sled::Result<()> {
        self.tree.insert(self.key(k), v).map(drop)
    }

    fn remove(&self, k: impl AsRef<[u8]>) -> sled::Result<Option<sled::IVec>> {
        self.tree.remove(self.key(k))
    }

    fn compare_and_swap(
        &self,
        k: impl AsRef<[u8]>,
        old: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> sled::Result<Result<(), sled::CompareAndSwapError>> {
        self.tree.compare_and_swap(self.key(k), old, new)
    }

    /// Entries whose key starts with `p`, keys stripped of the namespace.
    fn scan_prefix(&self, p: impl AsRef<[u8]>) -> NsIter {
        NsIter {
            inner: self.tree.scan_prefix(self.key(p)),
            strip: self.prefix.len(),
        }
    }

    fn iter(&self) -> NsIter {
        self.scan_prefix([])
    }

    fn flush(&self) -> sled::Result<usize> {
        self.tree.flush()
    }
}

/// Entries of one namespace ([`Ns::scan_prefix`]).
struct NsIter {
    inner: sled::Iter,
    strip: usize,
}

impl NsIter {
    fn strip(&self, r: sled::Result<(sled::IVec, sled::IVec)>) -> <Self as Iterator>::Item {
        r.map(|(k, v)| (k[self.strip.min(k.len())..].into(), v))
    }

    fn keys(self) -> impl DoubleEndedIterator<Item = sled::Result<sled::IVec>> {
        self.map(|r| r.map(|(k, _)| k))
    }
}

impl Iterator for NsIter {
    type Item = sled::Result<(sled::IVec, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        let r = self.inner.next()?;
        Some(self.strip(r))
    }
}

impl DoubleEndedIterator for NsIter {
    fn next_back(&mut self) -> Option<Self::Item> {
        let r = self.inner.next_back()?;
        Some(self.strip(r))
    }
}

impl Store {
    /// Opens the store in `dir`, or a temporary one when `dir` is `None`.
    pub fn open(dir: Option<&Path>) -> Result<Self, StorageError> {
        let (root, temp) = match dir {
            Some(d) => (d.to_path_buf(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("fieldtwin-state-")
                    .tempdir()
                    .map_err(|cause| StorageError::File {
                        path: std::env::temp_dir(),
                        cause,
                    })?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut config = sled::Config::new().path(&root);
        if temp.is_some() {
            // Nothing reads a temporary store back: no background flushes.
            config = config.flush_every_ms(None);
        }
        let db = config.open().map_err(|cause| {
            if is_lock_error(&cause) {
                StorageError::Locked { path: root.clone() }
            } else {
                StorageError::Open {
                    path: root.clone(),
                    cause,
                }
            }
        })?;
        let large = root.join(LARGE_DIR);
        std::fs::create_dir_all(&large).map_err(|cause| StorageError::File {
            path: large.clone(),
            cause,
        })?;
        let saved_clock = db
            .open_tree(SITE_TREE)?
            .get(CLOCK_KEY)?
            .and_then(|b| serde_json::from_slice(&b).ok());
        let store = Self {
            db,
            path: dir.map(Path::to_path_buf),
            files: Arc::new(Files {
                dir: large,
                durable: temp.is_none(),
                _temp: temp,
                last_clock: std::sync::Mutex::new(saved_clock),
                in_flight: Default::default(),
            }),
            saved_clock,
        };
        store.migrate_tree_per_namespace()?;
        store.collect_garbage()?;
        Ok(store)
    }

    /// Where the state lives, if persistent.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The namespace of device `id`.
    pub fn device(&self, id: &str) -> Result<Nv, StorageError> {
        let name = format!("device/{id}");
        let in_flight = self
            .files
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.clone())
            .or_default()
            .clone();
        Ok(Nv {
            tree: Ns {
                tree: self.db.open_tree(NV_TREE)?,
                prefix: ns_prefix(&name).into(),
            },
            files: self.files.clone(),
            file_prefix: hex(name.as_bytes()),
            in_flight,
        })
    }

    /// The site clock the directory held when it was opened (`None` for a
    /// new or temporary state).
    pub fn saved_clock(&self) -> Option<SavedClock> {
        self.saved_clock
    }

    /// Saves the site clock durably (blocking; see the module contract). A
    /// clock earlier than the one saved last is not written: saves that
    /// overtake each other never move the saved time back.
    pub fn save_clock(&self, clock: &SavedClock) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(clock).map_err(|cause| StorageError::Corrupt {
            key: CLOCK_KEY.into(),
            cause,
        })?;
        let tree = self.db.open_tree(SITE_TREE)?;
        {
            let mut last = self
                .files
                .last_clock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|l| l.epoch == clock.epoch && l.elapsed > clock.elapsed) {
                return Ok(());
            }
            tree.insert(CLOCK_KEY, bytes)?;
            *last = Some(*clock);
        }
        if self.files.durable {
            blocking(|| tree.flush())?;
        }
        Ok(())
    }

    /// [`Store::save_clock`], waiting for the flush on the blocking pool.
    pub async fn save_clock_async(&self, clock: SavedClock) -> Result<(), StorageError> {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || store.save_clock(&clock)).await {
            Ok(r) => r,
            Err(e) => Err(StorageError::File {
                path: self.files.dir.clone(),
                cause: std::io::Error::other(e.to_string()),
            }),
        }
    }

    /// Flushes everything (clean shutdown).
    pub fn flush(&self) -> Result<(), StorageError> {
        if self.files.durable {
            blocking(|| self.db.flush())?;
        }
        Ok(())
    }

    /// Bytes the state occupies on disk (sled files and large values).
    pub fn disk_size(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(p) else {
                return 0;
            };
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        self.files.dir.parent().map_or(0, walk)
    }

    /// Moves the namespaces of a state directory written by an earlier
    /// fieldtwin, which kept each in a sled tree of its own (`device/ID`),
    /// into [`NV_TREE`]; each old tree is dropped once its entries are
    /// durable in the new one, so a crash midway loses nothing (the next
    /// open copies that tree again).
    fn migrate_tree_per_namespace(&self) -> Result<(), StorageError> {
        let nv = self.db.open_tree(NV_TREE)?;
        for name in self.db.tree_names() {
            let Ok(name) = std::str::from_utf8(&name) else {
                continue;
            };
            if !name.starts_with("device/") {
                continue;
            }
            let old = self.db.open_tree(name)?;
            let prefix = ns_prefix(name);
            let mut batch = sled::Batch::default();
            for item in old.iter() {
                let (k, v) = item?;
                let mut key = prefix.clone();
                key.extend_from_slice(&k);
                batch.insert(key, v);
            }
            nv.apply_batch(batch)?;
            if self.files.durable {
                blocking(|| nv.flush())?;
            }
            self.db.drop_tree(name)?;
        }
        Ok(())
    }

    /// Deletes large-value files no namespace refers to (left by a crash
    /// between writing a value and deleting the one it replaced).
    fn collect_garbage(&self) -> Result<(), StorageError> {
        let mut referenced = BTreeSet::new();
        for item in self.db.open_tree(NV_TREE)?.iter() {
            let (k, v) = item?;
            let name_len = k
                .get(..2)
                .map_or(0, |l| usize::from(u16::from_be_bytes([l[0], l[1]])));
            if k.get(2 + name_len..)
                .is_some_and(|k| k.starts_with(LARGE_REF.as_bytes()))
                && let Ok(r) = serde_json::from_slice::<LargeRef>(&v)
            {
                referenced.insert(r.file);
            }
        }
        let Ok(rd) = std::fs::read_dir(&self.files.dir) else {
            return Ok(());
        };
        for e in rd.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !referenced.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

/// What a namespace keeps for a large value.
#[derive(Debug, Serialize, Deserialize)]
struct LargeRef {
    /// File name under `large-values/`.
    file: String,
    len: u64,
}

/// One device's non-volatile memory.
#[derive(Clone)]
pub struct Nv {
    tree: Ns,
    files: Arc<Files>,
    /// Hex of the namespace name: prefix of its large-value files.
    file_prefix: String,
    /// The namespace's writes being flushed.
    in_flight: Arc<std::sync::Mutex<InFlight>>,
}

impl std::fmt::Debug for Nv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nv")
            .field("entries", &self.tree.iter().count())
            .finish()
    }
}

const LOG_PREFIX: &str = "log/";

fn log_key(log: &str, seq: u64) -> Vec<u8> {
    let mut k = format!("{LOG_PREFIX}{log}/").into_bytes();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn large_ref_key(key: &str) -> String {
    format!("{LARGE_REF}{key}")
}

impl Nv {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `changes` with `apply` and flushes them; readers see the
    /// keys' committed values until the flush has returned.
    fn write(
        &self,
        changes: &[Change],
        apply: impl FnOnce() -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let n = {
            let mut f = self.in_flight();
            let n = f.begin(&self.tree, changes)?;
            if let Err(e) = apply() {
                f.end(changes, n, false);
                return Err(e);
            }
            n
        };
        let r = self.commit();
        self.in_flight().end(changes, n, r.is_ok());
        r
    }

    /// Entries under `prefix` as readers see them, newest `tail` only if set.
    fn scan_visible(
        &self,
        prefix: &[u8],
        tail: Option<usize>,
    ) -> Result<Vec<sled::IVec>, StorageError> {
        let f = self.in_flight();
        let scan = self.tree.scan_prefix(prefix);
        let mut entries = BTreeMap::new();
        let from = match tail {
            None => {
                for item in scan {
                    let (k, v) = item?;
                    entries.insert(k.to_vec(), v);
                }
                None
            }
            Some(n) => {
                // Writes in flight hide at most as many newer entries as
                // they touch: read that many more.
                let want = n + f.count(prefix);
                for item in scan.rev().take(want) {
                    let (k, v) = item?;
                    entries.insert(k.to_vec(), v);
                }
                (entries.len() == want)
                    .then(|| entries.keys().next().cloned())
                    .flatten()
            }
        };
        f.overlay(prefix, from.as_deref(), &mut entries);
        drop(f);
        let mut values: Vec<sled::IVec> = entries.into_values().collect();
        if let Some(n) = tail {
            values.drain(..values.len().saturating_sub(n));
        }
        Ok(values)
    }

    /// Makes every write so far durable (see the module contract).
    fn commit(&self) -> Result<(), StorageError> {
        #[cfg(test)]
        tests::BEFORE_FLUSH.with(|h| {
            if let Some(f) = &*h.borrow() {
                f();
            }
        });
        if self.files.durable {
            blocking(|| self.tree.flush())?;
        }
        Ok(())
    }

    fn file_error(&self, path: PathBuf) -> impl FnOnce(std::io::Error) -> StorageError {
        move |cause| StorageError::File { path, cause }
    }

    /// Reads value `key`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        match self.get_raw(key)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|cause| StorageError::Corrupt {
                        key: key.to_string(),
                        cause,
                    })
            }
        }
    }

    /// Writes value `key` and flushes it.
    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|cause| StorageError::Corrupt {
            key: key.to_string(),
            cause,
        })?;
        self.put_raw(key, &bytes)
    }

    /// [`Nv::put`], waiting for the flush on the blocking pool (for device
    /// tasks that write often, e.g. periodic saves).
    pub async fn put_async<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|cause| StorageError::Corrupt {
            key: key.to_string(),
            cause,
        })?;
        let nv = self.clone();
        let key = key.to_string();
        match tokio::task::spawn_blocking(move || nv.put_raw(&key, &bytes)).await {
            Ok(r) => r,
            Err(e) => Err(StorageError::File {
                path: self.files.dir.clone(),
                cause: std::io::Error::other(e.to_string()),
            }),
        }
    }

    /// Raw bytes of `key` (firmware images and other blobs).
    pub fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let large = {
            let f = self.in_flight();
            if let Some(v) = f.view(&self.tree, key.as_bytes())? {
                return Ok(Some(v.to_vec()));
            }
            f.view(&self.tree, large_ref_key(key).as_bytes())?
        };
        let Some(r) = large.and_then(|v| serde_json::from_slice::<LargeRef>(&v).ok()) else {
            return Ok(None);
        };
        let path = self.files.dir.join(&r.file);
        let bytes = blocking(|| std::fs::read(&path)).map_err(self.file_error(path.clone()))?;
        Ok(Some(bytes))
    }

    fn large_ref(&self, key: &str) -> Result<Option<LargeRef>, StorageError> {
        Ok(self
            .tree
            .get(large_ref_key(key))?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Writes raw bytes under `key` and flushes them.
    pub fn put_raw(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let old = self.large_ref(key)?;
        if bytes.len() < LARGE_VALUE {
            let mut changes = vec![(key.as_bytes().to_vec(), Some(bytes.into()))];
            if old.is_some() {
                changes.push((large_ref_key(key).into_bytes(), None));
            }
            self.write(&changes, || {
                self.tree.insert(key, bytes)?;
                if old.is_some() {
                    self.tree.remove(large_ref_key(key))?;
                }
                Ok(())
            })?;
        } else {
            let file = self.write_large_file(key, bytes)?;
            let r = serde_json::to_vec(&LargeRef {
                file,
                len: bytes.len() as u64,
            })
            .map_err(|cause| StorageError::Corrupt {
                key: key.to_string(),
                cause,
            })?;
            let changes = [
                (large_ref_key(key).into_bytes(), Some(r.as_slice().into())),
                (key.as_bytes().to_vec(), None),
            ];
            self.write(&changes, || {
                self.tree.insert(large_ref_key(key), r.as_slice())?;
                self.tree.remove(key)?;
                Ok(())
            })?;
        }
        if let Some(old) = old {
            let _ = std::fs::remove_file(self.files.dir.join(old.file));
        }
        Ok(())
    }

    /// Writes small values (each under [`LARGE_VALUE`] bytes) atomically and
    /// flushes once (see the module contract). A value of [`LARGE_VALUE`]
    /// bytes or more is refused before anything is written.
    pub fn put_batch(&self, entries: &[(&str, &[u8])]) -> Result<(), StorageError> {
        if let Some((key, v)) = entries.iter().find(|(_, v)| v.len() >= LARGE_VALUE) {
            return Err(StorageError::TooLargeForBatch {
                key: key.to_string(),
                len: v.len(),
            });
        }
        let mut batch = sled::Batch::default();
        let mut changes = Vec::new();
        let mut old_files = Vec::new();
        for (key, bytes) in entries {
            if let Some(old) = self.large_ref(key)? {
                batch.remove(self.tree.key(large_ref_key(key)));
                changes.push((large_ref_key(key).into_bytes(), None));
                old_files.push(old.file);
            }
            batch.insert(self.tree.key(key), *bytes);
            changes.push((key.as_bytes().to_vec(), Some((*bytes).into())));
        }
        self.write(&changes, || Ok(self.tree.tree.apply_batch(batch)?))?;
        for f in old_files {
            let _ = std::fs::remove_file(self.files.dir.join(f));
        }
        Ok(())
    }

    /// Writes `bytes` to a new file (fsynced, renamed into place); returns its name.
    fn write_large_file(&self, key: &str, bytes: &[u8]) -> Result<String, StorageError> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{}.{}.{stamp:x}-{n}", self.file_prefix, hex(key.as_bytes()));
        let dir = self.files.dir.clone();
        let tmp = dir.join(format!("{name}.tmp"));
        let path = dir.join(&name);
        let durable = self.files.durable;
        blocking(|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            if durable {
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            if durable {
                std::fs::File::open(&dir)?.sync_all()?;
            }
            Ok(())
        })
        .map_err(self.file_error(path.clone()))?;
        Ok(name)
    }

    /// Removes `key` and flushes.
    pub fn remove(&self, key: &str) -> Result<(), StorageError> {
        let old = self.large_ref(key)?;
        let changes = [
            (key.as_bytes().to_vec(), None),
            (large_ref_key(key).into_bytes(), None),
        ];
        self.write(&changes, || {
            self.tree.remove(key)?;
            self.tree.remove(large_ref_key(key))?;
            Ok(())
        })?;
        if let Some(old) = old {
            let _ = std::fs::remove_file(self.files.dir.join(old.file));
        }
        Ok(())
    }

    fn next_seq(&self, log: &str) -> Result<u64, StorageError> {
        Ok(self
            .tree
            .scan_prefix(format!("{LOG_PREFIX}{log}/"))
            .keys()
            .next_back()
            .transpose()?
            .and_then(|k| k.get(k.len().saturating_sub(8)..).map(<[u8]>::to_vec))
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(|b| u64::from_be_bytes(b) + 1)
            .unwrap_or(0))
    }

    /// Appends `entry` to log `log`, flushes, and returns its sequence number.
    pub fn append<T: Serialize>(&self, log: &str, entry: &T) -> Result<u64, StorageError> {
        let bytes = serde_json::to_vec(entry).map_err(|cause| StorageError::Corrupt {
            key: format!("{LOG_PREFIX}{log}"),
            cause,
        })?;
        // Sequence numbers are allocated under the tree's own ordering: a
        // compare-and-swap on the new key retries if another writer took it.
        loop {
            let seq = self.next_seq(log)?;
            let changes = [(log_key(log, seq), Some(bytes.as_slice().into()))];
            let taken = std::cell::Cell::new(false);
            self.write(&changes, || {
                let cas = self.tree.compare_and_swap(
                    log_key(log, seq),
                    None as Option<&[u8]>,
                    Some(bytes.clone()),
                )?;
                taken.set(cas.is_err());
                Ok(())
            })?;
            if !taken.get() {
                return Ok(seq);
            }
        }
    }

    /// Every entry of log `log`, oldest first.
    pub fn read_log<T: DeserializeOwned>(&self, log: &str) -> Result<Vec<T>, StorageError> {
        self.read_log_last(log, None)
    }

    /// The newest `n` entries of log `log`, oldest first (reads only those).
    pub fn read_log_tail<T: DeserializeOwned>(
        &self,
        log: &str,
        n: usize,
    ) -> Result<Vec<T>, StorageError> {
        self.read_log_last(log, Some(n))
    }

    /// The entries of log `log`, oldest first: the newest `n` of them, or
    /// all without `n`.
    fn read_log_last<T: DeserializeOwned>(
        &self,
        log: &str,
        n: Option<usize>,
    ) -> Result<Vec<T>, StorageError> {
        self.scan_visible(format!("{LOG_PREFIX}{log}/").as_bytes(), n)?
            .into_iter()
            .map(|v| {
                serde_json::from_slice(&v).map_err(|cause| StorageError::Corrupt {
                    key: format!("{LOG_PREFIX}{log}"),
                    cause,
                })
            })
            .collect()
    }

    /// Drops the oldest entries of log `log` so at most `keep` remain.
    pub fn trim_log(&self, log: &str, keep: usize) -> Result<(), StorageError> {
        let keys: Vec<_> = self
            .tree
            .scan_prefix(format!("{LOG_PREFIX}{log}/"))
            .keys()
            .collect::<Result<_, _>>()?;
        let changes: Vec<Change> = keys
            .iter()
            .take(keys.len().saturating_sub(keep))
            .map(|k| (k.to_vec(), None))
            .collect();
        self.write(&changes, || {
            for (k, _) in &changes {
                self.tree.remove(k)?;
            }
            Ok(())
        })
    }

    /// Erases the whole namespace (factory reset).
    pub fn wipe(&self) -> Result<(), StorageError> {
        self.wipe_except(&[])
    }

    /// Erases the namespace except the keys in `keep`.
    pub fn wipe_except(&self, keep: &[&str]) -> Result<(), StorageError> {
        let keys: Vec<_> = self.tree.iter().keys().collect::<Result<_, _>>()?;
        let changes: Vec<Change> = keys
            .iter()
            .filter(|k| {
                let logical = k.strip_prefix(LARGE_REF.as_bytes()).unwrap_or(k);
                !keep.iter().any(|kept| logical == kept.as_bytes())
            })
            .map(|k| (k.to_vec(), None))
            .collect();
        let mut files = Vec::new();
        self.write(&changes, || {
            for (k, _) in &changes {
                if let Some(v) = self.tree.remove(k)?
                    && k.starts_with(LARGE_REF.as_bytes())
                    && let Ok(r) = serde_json::from_slice::<LargeRef>(&v)
                {
                    files.push(r.file);
                }
            }
            Ok(())
        })?;
        for f in files {
            let _ = std::fs::remove_file(self.files.dir.join(f));
        }
        Ok(())
    }

    /// Whether the namespace holds nothing (a device that never booted or was reset).
    pub fn is_empty(&self) -> bool {
        let f = self.in_flight();
        !f.keys.values().any(|s| s.committed.is_some())
            && !self
                .tree
                .iter()
                .keys()
                .any(|k| k.map_or(true, |k| !f.keys.contains_key(&*k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::cell::RefCell;

    thread_local! {
        /// Runs in [`Nv::commit`] between a write and its flush.
        pub(super) static BEFORE_FLUSH: RefCell<Option<Box<dyn Fn()>>> = RefCell::new(None);
    }

    /// Runs `write`, calling `during` between its change and its flush.
    fn while_flushing(write: impl FnOnce(), during: impl Fn() + 'static) {
        BEFORE_FLUSH.with(|h| *h.borrow_mut() = Some(Box::new(during)));
        write();
        BEFORE_FLUSH.with(|h| *h.borrow_mut() = None);
    }

    #[test]
    fn readers_see_the_last_committed_value_while_a_write_is_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(Some(dir.path())).unwrap();
        let nv = store.device("dl1").unwrap();
        nv.put("head", &1u64).unwrap();
        nv.put("sent", &1u64).unwrap();
        nv.append("audit", &"first").unwrap();
        let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let watch = |nv: Nv, seen: Arc<std::sync::Mutex<Vec<String>>>| {
            move || {
                let head: Option<u64> = nv.get("head").unwrap();
                let sent: Option<u64> = nv.get("sent").unwrap();
                let log: Vec<String> = nv.read_log("audit").unwrap();
                let tail: Vec<String> = nv.read_log_tail("audit", 1).unwrap();
                let empty = nv.is_empty();
                seen.lock()
                    .unwrap()
                    .push(format!("{head:?} {sent:?} {log:?} {tail:?} {empty}"));
            }
        };
        // Another handle on the same namespace reads while each write of
        // this one is between its change and its flush.
        let other = store.device("dl1").unwrap();
        while_flushing(
            || nv.put("head", &2u64).unwrap(),
            watch(other.clone(), seen.clone()),
        );
        while_flushing(
            || {
                nv.put_batch(&[("head", b"3"), ("sent", b"3")]).unwrap();
            },
            watch(other.clone(), seen.clone()),
        );
        while_flushing(
            || {
                nv.append("audit", &"second").unwrap();
            },
            watch(other.clone(), seen.clone()),
        );
        while_flushing(
            || nv.remove("sent").unwrap(),
            watch(other.clone(), seen.clone()),
        );
        while_flushing(
            || nv.trim_log("audit", 1).unwrap(),
            watch(other.clone(), seen.clone()),
        );
        while_flushing(|| nv.wipe().unwrap(), watch(other.clone(), seen.clone()));
        let first = r#"["first"]"#;
        let both = r#"["first", "second"]"#;
        let second = r#"["second"]"#;
        assert_eq!(
            *seen.lock().unwrap(),
            [
                format!("Some(1) Some(1) {first} {first} false"),
                format!("Some(2) Some(1) {first} {first} false"),
                format!("Some(3) Some(3) {first} {first} false"),
                format!("Some(3) Some(3) {both} {second} false"),
                format!("Some(3) None {both} {second} false"),
                format!("Some(3) None {second} {second} false"),
            ],
            "what a reader saw during each flush"
        );
        // Once the writes have returned, readers see them.
        assert_eq!(other.get::<u64>("head").unwrap(), None);
        assert!(other.is_empty());
        assert!(other.read_log::<String>("audit").unwrap().is_empty());
    }

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
        // A namespace whose name starts with another's sees none of its keys.
        let ps1 = store.device("ps1").unwrap();
        let ps10 = store.device("ps10").unwrap();
        ps10.put("x", &10).unwrap();
        ps10.append("audit", &"ps10").unwrap();
        assert!(ps1.is_empty());
        assert_eq!(ps1.get::<i32>("x").unwrap(), None);
        assert!(ps1.read_log::<String>("audit").unwrap().is_empty());
        ps1.wipe().unwrap();
        assert_eq!(ps10.get::<i32>("x").unwrap(), Some(10));
    }

    #[test]
    fn a_state_with_a_tree_per_namespace_is_migrated_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let image = vec![7u8; LARGE_VALUE + 1];
        let large_file;
        {
            // The layout of earlier versions: one sled tree per namespace.
            let store = Store::open(Some(dir.path())).unwrap();
            let nv = store.device("ps1").unwrap();
            nv.put_raw("firmware", &image).unwrap();
            large_file = large_files(dir.path());
            let db = &store.db;
            let old = db.open_tree("device/ps1").unwrap();
            let nv_tree = db.open_tree(NV_TREE).unwrap();
            for item in nv_tree.iter() {
                let (k, v) = item.unwrap();
                old.insert(&k[ns_prefix("device/ps1").len()..], v).unwrap();
            }
            nv_tree.clear().unwrap();
            old.insert("config", serde_json::to_vec(&42u32).unwrap())
                .unwrap();
            for (seq, e) in ["a", "b"].iter().enumerate() {
                old.insert(log_key("audit", seq as u64), serde_json::to_vec(e).unwrap())
                    .unwrap();
            }
            db.flush().unwrap();
        }
        let store = Store::open(Some(dir.path())).unwrap();
        assert!(
            !store
                .db
                .tree_names()
                .iter()
                .any(|n| n.starts_with(b"device/")),
            "the old tree is dropped"
        );
        let nv = store.device("ps1").unwrap();
        assert_eq!(nv.get::<u32>("config").unwrap(), Some(42));
        assert_eq!(nv.read_log::<String>("audit").unwrap(), vec!["a", "b"]);
        assert_eq!(nv.append("audit", &"c").unwrap(), 2);
        assert_eq!(nv.get_raw("firmware").unwrap(), Some(image));
        // The large value's file is still referenced: not collected.
        assert_eq!(large_files(dir.path()), large_file);
    }

    #[test]
    fn corrupt_value_is_an_error_not_a_panic() {
        let store = Store::open(None).unwrap();
        let a = store.device("a").unwrap();
        a.put_raw("config", b"\xff\x00garbage").unwrap();
        let err = a.get::<u32>("config").unwrap_err();
        assert!(err.to_string().contains("config"));
    }

    fn large_files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join(LARGE_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_large_value_is_written_once_and_replaced_not_multiplied() {
        let dir = tempfile::tempdir().unwrap();
        let image: Vec<u8> = (0..4 * 1024 * 1024u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        {
            let store = Store::open(Some(dir.path())).unwrap();
            let nv = store.device("ps1").unwrap();
            nv.put_raw("firmware_image", &image).unwrap();
            let after_install = store.disk_size();
            assert_eq!(large_files(dir.path()).len(), 1);
            // Many small writes of the same device: the image is not rewritten.
            for i in 0..2000u32 {
                nv.put("field_energy", &i).unwrap();
                nv.append("audit", &format!("entry {i}")).unwrap();
            }
            nv.trim_log("audit", 100).unwrap();
            let after_writes = store.disk_size();
            assert!(
                after_writes < after_install + 2 * 1024 * 1024,
                "{after_install} -> {after_writes}"
            );
            assert_eq!(nv.get_raw("firmware_image").unwrap().unwrap(), image);
            // A new image replaces the old file.
            let mut image2 = image.clone();
            image2[0] ^= 0xFF;
            nv.put_raw("firmware_image", &image2).unwrap();
            assert_eq!(large_files(dir.path()).len(), 1);
            // Turning into a small value drops the file.
            nv.put_raw("firmware_image", b"small").unwrap();
            assert!(large_files(dir.path()).is_empty());
            nv.put_raw("firmware_image", &image2).unwrap();
        }
        // A crash between writing a file and dropping the old one leaves an
        // orphan; reopening deletes it.
        std::fs::write(dir.path().join(LARGE_DIR).join("orphan.tmp"), b"x").unwrap();
        let store = Store::open(Some(dir.path())).unwrap();
        assert_eq!(large_files(dir.path()).len(), 1);
        let nv = store.device("ps1").unwrap();
        assert_eq!(
            nv.get_raw("firmware_image").unwrap().unwrap()[0],
            image[0] ^ 0xFF
        );
        // A factory reset that keeps the image keeps its file; one that does
        // not removes it.
        nv.wipe_except(&["firmware_image"]).unwrap();
        assert!(nv.get_raw("firmware_image").unwrap().is_some());
        assert_eq!(large_files(dir.path()).len(), 1);
        nv.wipe().unwrap();
        assert!(nv.get_raw("firmware_image").unwrap().is_none());
        assert!(large_files(dir.path()).is_empty());
    }

    #[test]
    fn a_locked_directory_is_reported_once_and_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(Some(dir.path())).unwrap();
        // sled locks with flock, which is per open file description, so a
        // second open in this process sees the lock like another process does.
        let err = Store::open(Some(dir.path())).unwrap_err();
        assert!(matches!(err, StorageError::Locked { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("in use by another running fieldtwin"),
            "{text}"
        );
        assert!(std::error::Error::source(&err).is_none());
    }

    #[test]
    fn the_clock_is_saved_and_found_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let saved = SavedClock {
            epoch: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            elapsed: std::time::Duration::from_secs(365 * 86_400),
        };
        {
            let store = Store::open(Some(dir.path())).unwrap();
            assert_eq!(store.saved_clock(), None);
            store.save_clock(&saved).unwrap();
        }
        let store = Store::open(Some(dir.path())).unwrap();
        assert_eq!(store.saved_clock(), Some(saved));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_inside_a_multithreaded_runtime_do_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(Some(dir.path())).unwrap();
        let nv = store.device("a").unwrap();
        nv.put("x", &1).unwrap();
        nv.put_async("y", &2).await.unwrap();
        nv.put_raw("big", &vec![1u8; LARGE_VALUE]).unwrap();
        assert_eq!(nv.get::<i32>("y").unwrap(), Some(2));
        assert_eq!(nv.get_raw("big").unwrap().unwrap().len(), LARGE_VALUE);
    }
}
