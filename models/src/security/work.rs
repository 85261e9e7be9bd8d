//! The expensive work of the security surface (PBKDF2 hashes, certificate
//! generation) and the values it makes lazily, kept off every boot path.
//!
//! Contract:
//! - [`run`] runs a CPU-heavy closure on tokio's blocking threads, at most
//!   [`size`] at a time for the whole process (one per core): ten thousand
//!   devices hashing at once queue here instead of starving the reactors
//!   that answer Modbus, DPWS and ARP. Waiters are served in arrival order.
//! - [`Deferred`] is a value made once, the first time someone asks for it
//!   ([`Deferred::get`]): the making runs in a task of its own, so a caller
//!   that gives up (its bounded wait ends, its connection closes) does not
//!   cancel it and the next caller finds it ready. A making that fails is
//!   tried again by the next caller.
//! - [`hold`] takes every slot of the pool (tests and benchmarks use it to
//!   show that a boot does not need the pool).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit, watch};

/// How long a client waits for a value that is being made (the device's
/// certificate before its TLS handshake, its accounts before a login)
/// before it is told to come back.
pub const READY_WAIT: Duration = Duration::from_secs(60);

static POOL: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(size()));

/// Slots of the pool: the host's cores.
pub fn size() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `f` on a blocking thread once a slot of the process-wide pool is
/// free; `None` if it panicked.
pub async fn run<T, F>(f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let _slot = POOL.acquire().await.ok()?;
    tokio::task::spawn_blocking(f).await.ok()
}

/// Slots free now.
pub fn free() -> usize {
    POOL.available_permits()
}

/// Takes every slot of the pool until the guard is dropped.
pub async fn hold() -> SemaphorePermit<'static> {
    POOL.acquire_many(size() as u32)
        .await
        .expect("the pool is never closed")
}

/// A value made on first use, off the caller's path (see the module
/// contract). `T` is usually a `Result`: an `Err` is handed to the callers
/// waiting then, and the next [`Deferred::get`] makes it again.
pub struct Deferred<T> {
    value: watch::Sender<Option<T>>,
    started: AtomicBool,
}

impl<T: Clone + Send + Sync + 'static> Default for Deferred<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone + Send + Sync + 'static> Deferred<T> {
    /// Not made yet.
    pub fn new() -> Self {
        Self {
            value: watch::Sender::new(None),
            started: AtomicBool::new(false),
        }
    }

    /// Already made.
    pub fn ready(v: T) -> Self {
        Self {
            value: watch::Sender::new(Some(v)),
            started: AtomicBool::new(true),
        }
    }

    /// The value if it is made.
    pub fn peek(&self) -> Option<T> {
        self.value.borrow().clone()
    }

    /// Whether the value is made.
    pub fn is_ready(&self) -> bool {
        self.value.borrow().is_some()
    }

    /// Replaces the value (a new certificate after an address change).
    pub fn set(&self, v: T) {
        self.started.store(true, Ordering::SeqCst);
        self.value.send_replace(Some(v));
    }

    /// The value: made by `make` in a task of its own if nobody started it
    /// yet, waited for at most `wait`; `None` when the wait ends first.
    /// `retry` says whether a made value must be made again (a failure).
    pub async fn get<F, Fut>(
        self: &Arc<Self>,
        make: F,
        retry: fn(&T) -> bool,
        wait: Duration,
    ) -> Option<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        if let Some(v) = self.peek().filter(|v| !retry(v)) {
            return Some(v);
        }
        if !self.started.swap(true, Ordering::SeqCst) {
            self.value.send_replace(None);
            let fut = make();
            let me = self.clone();
            tokio::spawn(async move {
                let v = fut.await;
                let again = retry(&v);
                me.value.send_replace(Some(v));
                if again {
                    me.started.store(false, Ordering::SeqCst);
                }
            });
        }
        let mut rx = self.value.subscribe();
        let made = tokio::time::timeout(wait, rx.wait_for(|v| v.is_some())).await;
        made.ok()?.ok().and_then(|v| v.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[tokio::test]
    async fn pool_is_bounded_and_deferred_values_are_made_once() {
        let d: Arc<Deferred<Result<u32, String>>> = Arc::new(Deferred::new());
        let made = Arc::new(AtomicUsize::new(0));
        let make = || {
            let made = made.clone();
            async move {
                made.fetch_add(1, Ordering::SeqCst);
                run(|| 7).await.ok_or_else(|| "panicked".to_string())
            }
        };
        let failed = |v: &Result<u32, String>| v.is_err();
        // While the pool is held, a caller's bounded wait ends empty...
        let guard = hold().await;
        assert_eq!(free(), 0);
        let short = Duration::from_millis(100);
        assert_eq!(d.get(make, failed, short).await, None);
        assert!(!d.is_ready());
        // ... and the making continues: once the pool is free, the next
        // caller gets the value made by the first.
        drop(guard);
        assert_eq!(d.get(make, failed, READY_WAIT).await, Some(Ok(7)));
        assert_eq!(d.get(make, failed, short).await, Some(Ok(7)));
        assert_eq!(made.load(Ordering::SeqCst), 1);
        // A failure is handed out and made again by the next caller.
        let e: Arc<Deferred<Result<u32, String>>> = Arc::new(Deferred::new());
        let n = Arc::new(AtomicUsize::new(0));
        let flaky = || {
            let n = n.clone();
            async move {
                match n.fetch_add(1, Ordering::SeqCst) {
                    0 => Err("first".to_string()),
                    _ => Ok(1),
                }
            }
        };
        assert_eq!(
            e.get(flaky, failed, READY_WAIT).await,
            Some(Err("first".into()))
        );
        assert_eq!(e.get(flaky, failed, READY_WAIT).await, Some(Ok(1)));
        assert_eq!(Arc::new(Deferred::ready(3)).peek(), Some(3));
    }
}
