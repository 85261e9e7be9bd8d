//! Virtual time for the whole site, and the per-device real-time clock.
//!
//! Contract:
//! - [`Clock`] is the one source of device time (DESIGN.md principle 2). Virtual
//!   time is a [`Duration`] since the site epoch; it runs at a speed factor
//!   (1x by default, up to [`MAX_SPEED`]), can be paused, resumed and jumped
//!   forward, and never goes back.
//! - [`Clock::sleep_until`] / [`Clock::sleep`] / [`Interval`] wait on virtual
//!   time. A jump or a speed change wakes every sleeper whose deadline has
//!   passed, in deadline order (ties in registration order). The pure part of
//!   that rule lives in [`Timers`], which is what the properties test.
//! - [`Interval`] ticks on virtual time; what it does with the ticks a jump
//!   passes is its [`MissedTicks`] behaviour (like tokio's
//!   `MissedTickBehavior`): `Burst` delivers every one (yielding to the
//!   scheduler between them, so a long backlog never starves other tasks),
//!   `Skip` coalesces them into one tick and keeps the phase.
//! - The site clock survives restarts: [`Clock::saved`] is what a state
//!   directory keeps ([`SavedClock`]: the epoch and the virtual time reached),
//!   [`Clock::resume`] starts from it, and [`Clock::changed`] reports every
//!   jump, speed change and pause so the owner of the state can save it at
//!   once (emulator::device does, and periodically; docs/site-file.md).
//! - [`Rtc`] is a device's battery-backed clock: site time + its own offset +
//!   drift in ppm. While the device is off the RTC keeps counting for a
//!   retention period (the guide's "a few months"; 90 days by default), after
//!   which it restarts from [`FACTORY_EPOCH`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

/// The highest speed factor accepted by [`Clock::set_speed`].
pub const MAX_SPEED: f64 = 1_000_000.0;

/// The date an RTC restarts from when its backup ran out (documented in docs/site-file.md).
pub const FACTORY_EPOCH: DateTime<Utc> = DateTime::from_timestamp_nanos(946_684_800_000_000_000);

/// Default RTC retention without power: 90 days.
pub const DEFAULT_RTC_RETENTION: Duration = Duration::from_secs(90 * 86_400);

/// Errors of clock commands.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClockError {
    #[error("speed must be a finite number between 0.001 and {MAX_SPEED}, got {0}")]
    BadSpeed(f64),
    #[error("advance must be a finite, non-negative number of seconds, got {0}")]
    BadAdvance(f64),
}

/// Ordered set of virtual-time deadlines. Pure state: no I/O, no wall clock.
#[derive(Debug)]
pub struct Timers<T> {
    entries: BTreeMap<(Duration, u64), T>,
    next_seq: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            next_seq: 0,
        }
    }
}

/// Key of one registered deadline, used to cancel it.
pub type TimerKey = (Duration, u64);

impl<T> Timers<T> {
    /// Registers `item` to fire at `deadline`; returns its key.
    pub fn insert(&mut self, deadline: Duration, item: T) -> TimerKey {
        let key = (deadline, self.next_seq);
        self.next_seq += 1;
        self.entries.insert(key, item);
        key
    }

    /// Removes a deadline that has not fired yet.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        self.entries.remove(&key)
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.entries.keys().next().map(|(d, _)| *d)
    }

    /// Removes and returns every item due at `now`, earliest deadline first.
    pub fn fire_due(&mut self, now: Duration) -> Vec<(Duration, T)> {
        let later = self.entries.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut self.entries, later);
        due.into_iter().map(|((d, _), t)| (d, t)).collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Pending deadlines, earliest first.
    pub fn deadlines(&self) -> impl Iterator<Item = Duration> + '_ {
        self.entries.keys().map(|(d, _)| *d)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Mapping of wall time to virtual time. Pure state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timebase {
    anchor_wall: Instant,
    anchor_virtual: Duration,
    speed: f64,
    paused: bool,
}

impl Timebase {
    pub fn new(wall: Instant, speed: f64) -> Self {
        Self::resume(wall, Duration::ZERO, speed)
    }

    /// A timebase that reads `elapsed` at `wall`.
    pub fn resume(wall: Instant, elapsed: Duration, speed: f64) -> Self {
        Self {
            anchor_wall: wall,
            anchor_virtual: elapsed,
            speed,
            paused: false,
        }
    }

    /// Virtual time at wall instant `wall` (never earlier than the anchor).
    pub fn at(&self, wall: Instant) -> Duration {
        if self.paused {
            return self.anchor_virtual;
        }
        let real = wall.saturating_duration_since(self.anchor_wall);
        self.anchor_virtual + real.mul_f64(self.speed)
    }

    /// Wall time still to wait until virtual `deadline`; `None` while paused.
    pub fn wall_until(&self, wall: Instant, deadline: Duration) -> Option<Duration> {
        if self.paused {
            return None;
        }
        let now = self.at(wall);
        Some(deadline.saturating_sub(now).div_f64(self.speed))
    }

    fn reanchor(&mut self, wall: Instant) {
        self.anchor_virtual = self.at(wall);
        self.anchor_wall = wall;
    }

    pub fn set_speed(&mut self, wall: Instant, speed: f64) {
        self.reanchor(wall);
        self.speed = speed;
    }

    pub fn set_paused(&mut self, wall: Instant, paused: bool) {
        self.reanchor(wall);
        self.paused = paused;
    }

    pub fn advance(&mut self, wall: Instant, by: Duration) {
        self.reanchor(wall);
        self.anchor_virtual += by;
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    pub fn paused(&self) -> bool {
        self.paused
    }
}

struct State {
    base: Timebase,
    timers: Timers<oneshot::Sender<()>>,
}

struct Inner {
    epoch: DateTime<Utc>,
    state: Mutex<State>,
    changed: Arc<Notify>,
    /// Bumped at every jump, speed change and pause (see [`Clock::changed`]).
    generation: tokio::sync::watch::Sender<u64>,
}

/// What a state directory keeps of the site clock: the site epoch (virtual
/// time zero) and the virtual time reached. Site time = epoch + elapsed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedClock {
    pub epoch: DateTime<Utc>,
    pub elapsed: Duration,
}

impl SavedClock {
    /// The site time it was saved at.
    pub fn site_time(&self) -> DateTime<Utc> {
        self.epoch + chrono::Duration::from_std(self.elapsed).unwrap_or(chrono::Duration::MAX)
    }
}

/// Where the site clock of a run starts (`fieldtwin run --start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Where the state directory's clock stopped; without a saved clock, the
    /// site file's `start` (or the host's time).
    Resume,
    /// The host's time now.
    Now,
    /// This site time.
    At(DateTime<Utc>),
}

impl std::str::FromStr for Start {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "resume" => Ok(Self::Resume),
            "now" => Ok(Self::Now),
            _ => DateTime::parse_from_rfc3339(s)
                .map(|t| Self::At(t.with_timezone(&Utc)))
                .map_err(|e| {
                    format!(
                        "{s:?} is not a start: use resume, now, or an RFC 3339 time such as \
                         2027-01-01T00:00:00Z ({e})"
                    )
                }),
        }
    }
}

/// Why a run cannot start where it was asked to.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StartError {
    #[error(
        "the state directory's site clock stopped at {saved}; starting at {asked} would run \
         every device clock, lockout and log backwards. Use --start resume (the default), a \
         start at or after {saved}, or another --state DIR"
    )]
    Backwards {
        saved: DateTime<Utc>,
        asked: DateTime<Utc>,
    },
}

/// The clock a run starts with. With a saved clock the epoch stays the
/// saved one, so virtual time never goes back over the life of a state; a
/// later start is a time during which the site was off (device RTCs ran on
/// their backup).
pub fn starting_clock(
    start: Start,
    site_start: Option<DateTime<Utc>>,
    saved: Option<SavedClock>,
    host_now: DateTime<Utc>,
) -> Result<SavedClock, StartError> {
    let asked = match start {
        Start::Resume => match saved {
            Some(s) => return Ok(s),
            None => site_start.unwrap_or(host_now),
        },
        Start::Now => host_now,
        Start::At(t) => t,
    };
    match saved {
        None => Ok(SavedClock {
            epoch: asked,
            elapsed: Duration::ZERO,
        }),
        Some(s) => {
            let off = (asked - s.site_time())
                .to_std()
                .map_err(|_| StartError::Backwards {
                    saved: s.site_time(),
                    asked,
                })?;
            Ok(SavedClock {
                epoch: s.epoch,
                elapsed: s.elapsed.saturating_add(off),
            })
        }
    }
}

/// A clock handle that does not keep the clock alive.
#[derive(Clone)]
pub struct WeakClock {
    inner: Weak<Inner>,
}

impl WeakClock {
    pub fn upgrade(&self) -> Option<Clock> {
        self.inner.upgrade().map(|inner| Clock { inner })
    }
}

/// Snapshot of the clock, as the control API reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClockStatus {
    /// Site time (UTC) now.
    pub site_time: DateTime<Utc>,
    /// Virtual seconds since the site epoch.
    pub elapsed_s: f64,
    pub speed: f64,
    pub paused: bool,
    /// Sleepers waiting on virtual time.
    pub pending_timers: usize,
    /// Virtual seconds from now to the earliest pending deadlines (at most
    /// [`NEXT_DEADLINES`], soonest first).
    #[serde(default)]
    pub next_deadlines_s: Vec<f64>,
}

/// How many upcoming deadlines [`ClockStatus`] lists.
pub const NEXT_DEADLINES: usize = 5;

/// The site's virtual clock. Cheap to clone; every clone is the same clock.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("status", &self.status())
            .finish()
    }
}

impl Clock {
    /// Starts a clock at `epoch` running at `speed`. Must be called inside a
    /// tokio runtime: it spawns the task that wakes sleepers.
    pub fn start(epoch: DateTime<Utc>, speed: f64) -> Result<Self, ClockError> {
        Self::resume(
            SavedClock {
                epoch,
                elapsed: Duration::ZERO,
            },
            speed,
        )
    }

    /// Starts a clock paused at exactly virtual zero: it moves only by
    /// [`Clock::advance`] (or once resumed), so a run that jumps it the
    /// same way sees the same times (scenario determinism).
    pub fn start_paused(epoch: DateTime<Utc>, speed: f64) -> Result<Self, ClockError> {
        Self::start_with(
            SavedClock {
                epoch,
                elapsed: Duration::ZERO,
            },
            speed,
            true,
        )
    }

    /// Starts a clock that continues from `saved` (a restart with the same
    /// state), running at `speed`. Must be called inside a tokio runtime.
    pub fn resume(saved: SavedClock, speed: f64) -> Result<Self, ClockError> {
        Self::start_with(saved, speed, false)
    }

    fn start_with(saved: SavedClock, speed: f64, paused: bool) -> Result<Self, ClockError> {
        check_speed(speed)?;
        let mut base = Timebase::resume(Instant::now(), saved.elapsed, speed);
        base.paused = paused;
        let inner = Arc::new(Inner {
            epoch: saved.epoch,
            state: Mutex::new(State {
                base,
                timers: Timers::default(),
            }),
            changed: Arc::new(Notify::new()),
            generation: tokio::sync::watch::channel(0).0,
        });
        tokio::spawn(drive(Arc::downgrade(&inner), inner.changed.clone()));
        Ok(Self { inner })
    }

    /// What a state directory keeps of this clock now.
    pub fn saved(&self) -> SavedClock {
        SavedClock {
            epoch: self.inner.epoch,
            elapsed: self.now(),
        }
    }

    /// A receiver that sees a new value at every jump, speed change and pause.
    pub fn changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    fn bump(&self) {
        self.inner
            .generation
            .send_modify(|g| *g = g.wrapping_add(1));
        self.inner.changed.notify_one();
    }

    /// A handle that does not keep the clock alive.
    pub fn downgrade(&self) -> WeakClock {
        WeakClock {
            inner: Arc::downgrade(&self.inner),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Virtual time since the site epoch.
    pub fn now(&self) -> Duration {
        self.lock().base.at(Instant::now())
    }

    /// The site epoch (virtual time zero) in UTC.
    pub fn epoch(&self) -> DateTime<Utc> {
        self.inner.epoch
    }

    /// Site time (UTC) at virtual time `at`.
    pub fn utc_at(&self, at: Duration) -> DateTime<Utc> {
        self.inner.epoch + chrono::Duration::from_std(at).unwrap_or(chrono::Duration::MAX)
    }

    /// Site time (UTC) now.
    pub fn utc_now(&self) -> DateTime<Utc> {
        self.utc_at(self.now())
    }

    pub fn status(&self) -> ClockStatus {
        let st = self.lock();
        let now = st.base.at(Instant::now());
        ClockStatus {
            site_time: self.utc_at(now),
            elapsed_s: now.as_secs_f64(),
            speed: st.base.speed(),
            paused: st.base.paused(),
            pending_timers: st.timers.len(),
            next_deadlines_s: st
                .timers
                .deadlines()
                .take(NEXT_DEADLINES)
                .map(|d| d.saturating_sub(now).as_secs_f64())
                .collect(),
        }
    }

    /// Changes the speed factor; time already elapsed is kept.
    pub fn set_speed(&self, speed: f64) -> Result<(), ClockError> {
        check_speed(speed)?;
        self.lock().base.set_speed(Instant::now(), speed);
        self.bump();
        Ok(())
    }

    pub fn set_paused(&self, paused: bool) {
        self.lock().base.set_paused(Instant::now(), paused);
        self.bump();
    }

    /// Jumps forward by `by`, waking every sleeper it passes in deadline order.
    pub fn advance(&self, by: Duration) {
        self.advance_announced(by, |_| {});
    }

    /// [`Clock::advance`] that hands the status after the jump to
    /// `announce` before it wakes any sleeper, so whatever `announce`
    /// publishes (the clock event) comes before every consequence of the
    /// jump, in the same order at every run.
    pub fn advance_announced(&self, by: Duration, announce: impl FnOnce(ClockStatus)) {
        let due = {
            let mut st = self.lock();
            let wall = Instant::now();
            st.base.advance(wall, by);
            let now = st.base.at(wall);
            st.timers.fire_due(now)
        };
        announce(self.status());
        for (_, tx) in due {
            let _ = tx.send(());
        }
        self.bump();
    }

    /// Jumps forward by a number of seconds given by a user.
    pub fn advance_secs(&self, secs: f64) -> Result<(), ClockError> {
        self.advance(check_advance(secs)?);
        Ok(())
    }

    /// Waits until virtual time reaches `deadline`.
    pub fn sleep_until(&self, deadline: Duration) -> Sleep {
        let mut st = self.lock();
        if st.base.at(Instant::now()) >= deadline {
            return Sleep {
                clock: self.clone(),
                key: None,
                rx: None,
            };
        }
        let (tx, rx) = oneshot::channel();
        let key = st.timers.insert(deadline, tx);
        drop(st);
        self.inner.changed.notify_one();
        Sleep {
            clock: self.clone(),
            key: Some(key),
            rx: Some(rx),
        }
    }

    /// Waits for `d` of virtual time.
    pub fn sleep(&self, d: Duration) -> Sleep {
        self.sleep_until(self.now().saturating_add(d))
    }

    /// A fixed-period tick on virtual time; missed ticks after a jump are
    /// delivered at once, one per call ([`MissedTicks::Burst`]; see
    /// [`Interval::set_missed_ticks`]).
    pub fn interval(&self, period: Duration) -> Interval {
        Interval {
            clock: self.clone(),
            next: self.now(),
            period: period.max(Duration::from_nanos(1)),
            missed: MissedTicks::Burst,
        }
    }
}

/// A jump of `secs` seconds given by a user, checked.
pub fn check_advance(secs: f64) -> Result<Duration, ClockError> {
    if !secs.is_finite() || !(0.0..=1e12).contains(&secs) {
        return Err(ClockError::BadAdvance(secs));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn check_speed(speed: f64) -> Result<(), ClockError> {
    if speed.is_finite() && (0.001..=MAX_SPEED).contains(&speed) {
        Ok(())
    } else {
        Err(ClockError::BadSpeed(speed))
    }
}

/// Wakes sleepers whose deadlines pass while the clock runs.
async fn drive(weak: Weak<Inner>, changed: Arc<Notify>) {
    loop {
        let notified = changed.notified();
        let Some(inner) = weak.upgrade() else { return };
        let wait = {
            let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            let wall = Instant::now();
            let now = st.base.at(wall);
            for (_, tx) in st.timers.fire_due(now) {
                let _ = tx.send(());
            }
            st.timers
                .next_deadline()
                .and_then(|d| st.base.wall_until(wall, d))
        };
        drop(inner);
        // The driver holds only a weak reference while it waits, so dropping
        // the last `Clock` ends it. A long wait is capped so that happens soon.
        let wait = wait
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Future returned by [`Clock::sleep_until`]. Dropping it cancels the timer.
pub struct Sleep {
    clock: Clock,
    key: Option<TimerKey>,
    rx: Option<oneshot::Receiver<()>>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(());
        };
        match Pin::new(rx).poll(cx) {
            Poll::Ready(_) => {
                self.rx = None;
                self.key = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.clock.lock().timers.cancel(key);
        }
    }
}

/// What an [`Interval`] does with the ticks a jump (or a slow consumer) passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissedTicks {
    /// Every missed tick is delivered, one per call, at its own virtual time;
    /// the task yields to the scheduler between them.
    Burst,
    /// The missed ticks collapse into one, delivered at once with the
    /// virtual time of the last one passed; later ticks keep the phase.
    Skip,
}

/// See [`Clock::interval`].
pub struct Interval {
    clock: Clock,
    next: Duration,
    period: Duration,
    missed: MissedTicks,
}

impl Interval {
    /// Chooses what happens to missed ticks (default [`MissedTicks::Burst`]).
    pub fn set_missed_ticks(&mut self, missed: MissedTicks) {
        self.missed = missed;
    }

    /// Waits for the next tick and returns its virtual time.
    pub async fn tick(&mut self) -> Duration {
        let now = self.clock.now();
        let at = if now >= self.next {
            // Already due: a backlog. Let other tasks run between ticks.
            tokio::task::consume_budget().await;
            match self.missed {
                MissedTicks::Burst => self.next,
                MissedTicks::Skip => {
                    let period = self.period.as_nanos();
                    let skip = (now - self.next).as_nanos() / period * period;
                    let skip = Duration::new(
                        u64::try_from(skip / 1_000_000_000).unwrap_or(u64::MAX),
                        (skip % 1_000_000_000) as u32,
                    );
                    self.next.saturating_add(skip)
                }
            }
        } else {
            self.clock.sleep_until(self.next).await;
            self.next
        };
        self.next = at.saturating_add(self.period);
        at
    }
}

/// Persisted state of a device's battery-backed real-time clock. Expressed in
/// site time (UTC) rather than virtual time, so it stays right across process
/// restarts with `--state`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Rtc {
    /// RTC reading (ms since the Unix epoch) at site time `base_site_ms`.
    base_rtc_ms: i64,
    base_site_ms: i64,
    /// Crystal error: +100 means the RTC gains 100 µs per second.
    drift_ppm: f64,
    /// Site time at which main power was lost, while the device is off.
    off_since_ms: Option<i64>,
}

impl Rtc {
    /// A new RTC that reads `site_now + offset`.
    pub fn new(site_now: DateTime<Utc>, offset_s: f64, drift_ppm: f64) -> Self {
        Self {
            base_rtc_ms: site_now.timestamp_millis() + (offset_s * 1000.0) as i64,
            base_site_ms: site_now.timestamp_millis(),
            drift_ppm,
            off_since_ms: None,
        }
    }

    /// Reads the RTC at site time `site_now`.
    pub fn read(&self, site_now: DateTime<Utc>) -> DateTime<Utc> {
        let elapsed = (site_now.timestamp_millis() - self.base_site_ms).max(0) as f64;
        let rtc = self.base_rtc_ms as f64 + elapsed * (1.0 + self.drift_ppm / 1e6);
        Utc.timestamp_millis_opt(rtc as i64)
            .single()
            .unwrap_or(FACTORY_EPOCH)
    }

    /// Sets the RTC to `t` at site time `site_now` (a date/time write).
    pub fn set(&mut self, site_now: DateTime<Utc>, t: DateTime<Utc>) {
        self.base_rtc_ms = t.timestamp_millis();
        self.base_site_ms = site_now.timestamp_millis();
    }

    pub fn drift_ppm(&self) -> f64 {
        self.drift_ppm
    }

    pub fn is_running_on_backup(&self) -> bool {
        self.off_since_ms.is_some()
    }

    /// Main power lost at `site_now`: the RTC keeps counting on its backup.
    pub fn power_lost(&mut self, site_now: DateTime<Utc>) {
        if self.off_since_ms.is_none() {
            self.off_since_ms = Some(site_now.timestamp_millis());
        }
    }

    /// Main power back at `site_now`. If the device was off longer than
    /// `retention`, the backup ran out and the RTC restarts from
    /// [`FACTORY_EPOCH`] now. Returns `true` when the time was lost.
    pub fn power_restored(&mut self, site_now: DateTime<Utc>, retention: Duration) -> bool {
        let Some(off) = self.off_since_ms.take() else {
            return false;
        };
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        if site_now.timestamp_millis() - off > retention_ms {
            self.base_rtc_ms = FACTORY_EPOCH.timestamp_millis();
            self.base_site_ms = site_now.timestamp_millis();
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn epoch() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn timers_fire_in_deadline_order() {
        let mut t = Timers::default();
        t.insert(Duration::from_secs(5), 'c');
        t.insert(Duration::from_secs(1), 'a');
        t.insert(Duration::from_secs(3), 'b');
        t.insert(Duration::from_secs(9), 'z');
        let fired: Vec<char> = t
            .fire_due(Duration::from_secs(5))
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(fired, vec!['a', 'b', 'c']);
        assert_eq!(t.next_deadline(), Some(Duration::from_secs(9)));
    }

    #[test]
    fn timebase_speed_pause_and_advance() {
        let w0 = Instant::now();
        let mut b = Timebase::new(w0, 10.0);
        assert_eq!(b.at(w0 + Duration::from_secs(2)), Duration::from_secs(20));
        b.set_paused(w0 + Duration::from_secs(2), true);
        assert_eq!(b.at(w0 + Duration::from_secs(100)), Duration::from_secs(20));
        assert_eq!(b.wall_until(w0, Duration::from_secs(30)), None);
        b.set_paused(w0 + Duration::from_secs(100), false);
        b.advance(w0 + Duration::from_secs(100), Duration::from_secs(3600));
        assert_eq!(
            b.at(w0 + Duration::from_secs(101)),
            Duration::from_secs(3630)
        );
        assert_eq!(
            b.wall_until(w0 + Duration::from_secs(101), Duration::from_secs(3640)),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn rtc_drifts_and_survives_short_outage() {
        let mut rtc = Rtc::new(epoch(), 0.0, 100.0);
        let day = chrono::Duration::days(1);
        let t = rtc.read(epoch() + day);
        // 100 ppm over a day is 8.64 s.
        assert_eq!((t - epoch()).num_milliseconds(), 86_400_000 + 8_640);
        rtc.power_lost(epoch() + day);
        assert!(rtc.is_running_on_backup());
        assert!(!rtc.power_restored(epoch() + day * 30, DEFAULT_RTC_RETENTION));
        assert!(rtc.read(epoch() + day * 30) > epoch() + chrono::Duration::days(29));
    }

    #[test]
    fn rtc_restarts_from_factory_epoch_after_retention() {
        let mut rtc = Rtc::new(epoch(), 0.0, 0.0);
        rtc.power_lost(epoch());
        let now = epoch() + chrono::Duration::days(90) + chrono::Duration::seconds(1);
        assert!(rtc.power_restored(now, DEFAULT_RTC_RETENTION));
        assert_eq!(rtc.read(now), FACTORY_EPOCH);
        assert_eq!(
            rtc.read(now + chrono::Duration::seconds(60)),
            FACTORY_EPOCH + chrono::Duration::seconds(60)
        );
    }

    #[test]
    fn rtc_set_rebases() {
        let mut rtc = Rtc::new(epoch(), 3600.0, 0.0);
        assert_eq!(rtc.read(epoch()), epoch() + chrono::Duration::hours(1));
        let t = Utc.with_ymd_and_hms(2030, 5, 6, 7, 8, 9).unwrap();
        rtc.set(epoch() + chrono::Duration::seconds(10), t);
        assert_eq!(
            rtc.read(epoch() + chrono::Duration::seconds(70)),
            t + chrono::Duration::seconds(60)
        );
    }

    #[test]
    fn bad_speed_is_refused_with_the_allowed_range() {
        let err = check_speed(0.0).unwrap_err();
        assert!(err.to_string().contains("between 0.001"));
        assert!(check_speed(f64::NAN).is_err());
        assert!(check_speed(10_000.0).is_ok());
    }

    #[tokio::test]
    async fn a_clock_started_paused_sits_at_zero_and_moves_by_jumps_only() {
        let clock = Clock::start_paused(epoch(), 1.0).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(clock.now(), Duration::ZERO);
        assert!(clock.status().paused);
        clock.advance(Duration::from_millis(1500));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(clock.now(), Duration::from_millis(1500));
        assert_eq!(
            clock.utc_now(),
            epoch() + chrono::Duration::milliseconds(1500)
        );
    }

    #[tokio::test]
    async fn advance_wakes_sleepers_in_deadline_order() {
        let clock = Clock::start(epoch(), 1.0).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for secs in [300u64, 100, 200, 5000] {
            let c = clock.clone();
            let o = order.clone();
            handles.push(tokio::spawn(async move {
                c.sleep(Duration::from_secs(secs)).await;
                o.lock().unwrap().push(secs);
            }));
        }
        tokio::task::yield_now().await;
        while clock.status().pending_timers < 4 {
            tokio::task::yield_now().await;
        }
        clock.advance(Duration::from_secs(1000));
        for h in handles.drain(..3) {
            h.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![100, 200, 300]);
        assert_eq!(clock.status().pending_timers, 1);
        clock.advance(Duration::from_secs(5000));
        handles.pop().unwrap().await.unwrap();
    }

    #[tokio::test]
    async fn sleep_runs_at_speed() {
        let clock = Clock::start(epoch(), 10_000.0).unwrap();
        let wall = Instant::now();
        clock.sleep(Duration::from_secs(3600)).await;
        assert!(clock.now() >= Duration::from_secs(3600));
        // An hour at 10,000x is 0.36 s of wall time.
        assert!(wall.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn dropped_sleep_cancels_its_timer() {
        let clock = Clock::start(epoch(), 1.0).unwrap();
        {
            let s = clock.sleep(Duration::from_secs(100));
            assert_eq!(clock.status().pending_timers, 1);
            drop(s);
        }
        assert_eq!(clock.status().pending_timers, 0);
    }

    #[tokio::test]
    async fn interval_delivers_missed_ticks_after_a_jump() {
        let clock = Clock::start(epoch(), 1.0).unwrap();
        let mut iv = clock.interval(Duration::from_secs(60));
        let t0 = iv.tick().await;
        clock.advance(Duration::from_secs(150));
        assert_eq!(iv.tick().await, t0 + Duration::from_secs(60));
        assert_eq!(iv.tick().await, t0 + Duration::from_secs(120));
    }

    #[test]
    fn a_run_resumes_the_saved_clock_unless_asked_for_a_later_start() {
        let year = Duration::from_secs(365 * 86_400);
        let saved = SavedClock {
            epoch: epoch(),
            elapsed: year,
        };
        let host = Utc.with_ymd_and_hms(2030, 6, 1, 0, 0, 0).unwrap();
        // No state: the site file's start, else the host's time.
        let fresh = starting_clock(Start::Resume, Some(epoch()), None, host).unwrap();
        assert_eq!((fresh.epoch, fresh.elapsed), (epoch(), Duration::ZERO));
        assert_eq!(
            starting_clock(Start::Resume, None, None, host)
                .unwrap()
                .epoch,
            host
        );
        // A saved clock: resumed as it was, whatever the site file says.
        assert_eq!(
            starting_clock(Start::Resume, Some(host), Some(saved), host).unwrap(),
            saved
        );
        // A later start keeps the epoch: virtual time only moves forward.
        let later = starting_clock(Start::Now, None, Some(saved), host).unwrap();
        assert_eq!(later.epoch, epoch());
        assert_eq!(later.site_time(), host);
        // An earlier one is refused, naming both times.
        let err = starting_clock(Start::At(epoch()), None, Some(saved), host).unwrap_err();
        assert!(err.to_string().contains("2027-01-01"), "{err}");
        assert_eq!("now".parse::<Start>(), Ok(Start::Now));
        assert_eq!(
            "2027-01-01T00:00:00Z".parse::<Start>(),
            Ok(Start::At(saved.site_time()))
        );
        assert!(
            "yesterday"
                .parse::<Start>()
                .unwrap_err()
                .contains("resume, now")
        );
    }

    #[tokio::test]
    async fn skipping_interval_coalesces_a_year_of_missed_ticks() {
        let clock = Clock::start(epoch(), 1.0).unwrap();
        let mut iv = clock.interval(Duration::from_secs(900));
        iv.set_missed_ticks(MissedTicks::Skip);
        let t0 = iv.tick().await;
        let year = Duration::from_secs(365 * 86_400);
        clock.advance(year + Duration::from_secs(100));
        // One tick for the whole backlog, at the last tick the jump passed...
        assert_eq!(iv.tick().await, t0 + year);
        // ... and the next one keeps the phase.
        let next = tokio::time::timeout(Duration::from_millis(50), iv.tick()).await;
        assert!(next.is_err(), "the next tick is 800 s of virtual time away");
        clock.advance(Duration::from_secs(800));
        assert_eq!(iv.tick().await, t0 + year + Duration::from_secs(900));
    }

    #[tokio::test]
    async fn a_bursting_backlog_does_not_starve_other_tasks() {
        let clock = Clock::start(epoch(), 1.0).unwrap();
        let mut iv = clock.interval(Duration::from_secs(900));
        iv.tick().await;
        clock.advance(Duration::from_secs(365 * 86_400));
        let other = tokio::spawn(async { 42 });
        // On this single-threaded runtime the other task only runs if the
        // burst yields.
        let mut ticks = 0u32;
        while !other.is_finished() {
            iv.tick().await;
            ticks += 1;
            assert!(ticks < 10_000, "the burst never yielded");
        }
        assert_eq!(other.await.unwrap(), 42);
    }

    #[tokio::test]
    async fn a_resumed_clock_continues_from_its_saved_time() {
        let saved = SavedClock {
            epoch: epoch(),
            elapsed: Duration::from_secs(365 * 86_400),
        };
        let clock = Clock::resume(saved, 1.0).unwrap();
        assert_eq!(clock.epoch(), epoch());
        assert!(clock.now() >= saved.elapsed);
        assert!(clock.utc_now() >= saved.site_time());
        let s = clock.saved();
        assert_eq!(s.epoch, epoch());
        assert!(s.elapsed >= saved.elapsed && s.elapsed < saved.elapsed + Duration::from_secs(5));
        let mut changed = clock.changed();
        clock.advance(Duration::from_secs(1));
        assert!(changed.has_changed().unwrap());
        changed.mark_unchanged();
        clock.set_speed(2.0).unwrap();
        assert!(changed.has_changed().unwrap());
    }

    proptest! {
        #[test]
        fn time_never_goes_back(ops in proptest::collection::vec((0u8..4, 0u64..10_000), 1..60)) {
            let w0 = Instant::now();
            let mut b = Timebase::new(w0, 1.0);
            let mut wall = w0;
            let mut last = b.at(wall);
            for (op, x) in ops {
                wall += Duration::from_millis(x % 500);
                match op {
                    0 => b.set_speed(wall, 0.001 + (x as f64)),
                    1 => b.set_paused(wall, x % 2 == 0),
                    2 => b.advance(wall, Duration::from_millis(x)),
                    _ => {}
                }
                let now = b.at(wall);
                prop_assert!(now >= last);
                last = now;
            }
        }

        #[test]
        fn jump_fires_every_passed_deadline_in_order(
            deadlines in proptest::collection::vec(0u64..1_000_000, 0..50),
            jump in 0u64..1_000_000,
        ) {
            let mut t = Timers::default();
            for (i, d) in deadlines.iter().enumerate() {
                t.insert(Duration::from_millis(*d), i);
            }
            let fired = t.fire_due(Duration::from_millis(jump));
            let mut expected: Vec<(u64, usize)> = deadlines
                .iter()
                .enumerate()
                .filter(|(_, d)| **d <= jump)
                .map(|(i, d)| (*d, i))
                .collect();
            expected.sort();
            let got: Vec<(u64, usize)> = fired.iter().map(|(d, i)| (d.as_millis() as u64, *i)).collect();
            prop_assert_eq!(got, expected);
            prop_assert!(t.next_deadline().is_none_or(|d| d > Duration::from_millis(jump)));
            prop_assert_eq!(t.len(), deadlines.iter().filter(|d| **d > jump).count());
        }
    }
}
