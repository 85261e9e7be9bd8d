//! Login lockout (DOCA0211 "Security Functionality Verification", Web
//! Authentication), shared by every model with web pages. The numbers are a
//! [`Policy`] the model fills in; the Panel Server's: 10 consecutive failed
//! logins lock the webpages for 10 minutes; after that lock, 5 more failures
//! lock them for 60 minutes (and every further 5 failures lock them for 60
//! minutes again [NF]).
//!
//! Contract: plain state driven by the caller's `now` (the device's virtual
//! site clock, never the wall clock and never the user-settable RTC, so
//! setting the date cannot unlock the device). Attempts while locked are
//! refused and not counted. A success resets everything. The state is
//! serialisable; the web service keeps it in NV memory after every change so
//! it survives reboots and power loss.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// The per-model numbers of the lockout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures before the first lock.
    pub first_threshold: u32,
    /// Failures before each later lock.
    pub next_threshold: u32,
    /// Length of the first lock.
    pub first_lock: Duration,
    /// Length of each later lock.
    pub next_lock: Duration,
}

/// Lockout state of the webpages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lockout {
    /// Consecutive failures since the last lock (or success).
    pub failures: u32,
    /// Locks since the last success.
    pub locks: u32,
    /// End of the current lock, if any.
    pub locked_until: Option<DateTime<Utc>>,
}

/// What a failed attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted; `left` more failures lock the device.
    Counted { left: u32 },
    /// This failure started a lock of `minutes`.
    LockedNow { minutes: i64 },
}

impl Lockout {
    /// `Some(remaining)` while locked at `now`.
    pub fn locked(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.locked_until.filter(|&t| t > now).map(|t| t - now)
    }

    /// Failures that start the next lock.
    pub fn threshold(&self, policy: &Policy) -> u32 {
        if self.locks == 0 {
            policy.first_threshold
        } else {
            policy.next_threshold
        }
    }

    /// Records a failed attempt. Must not be called while locked (the
    /// attempt is refused before checking the password); if it is, the
    /// attempt is ignored and the remaining lock is reported.
    pub fn fail(&mut self, policy: &Policy, now: DateTime<Utc>) -> Failure {
        if let Some(rem) = self.locked(now) {
            return Failure::LockedNow {
                minutes: (rem.num_seconds() + 59) / 60,
            };
        }
        self.locked_until = None;
        self.failures += 1;
        if self.failures >= self.threshold(policy) {
            let len = if self.locks == 0 {
                policy.first_lock
            } else {
                policy.next_lock
            };
            self.locks += 1;
            self.failures = 0;
            self.locked_until = Some(now + len);
            Failure::LockedNow {
                minutes: len.num_minutes(),
            }
        } else {
            Failure::Counted {
                left: self.threshold(policy) - self.failures,
            }
        }
    }

    /// A successful login: counter and lock history reset.
    pub fn succeed(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The Panel Server's numbers (DOCA0211).
    const P: Policy = Policy {
        first_threshold: 10,
        next_threshold: 5,
        first_lock: Duration::minutes(10),
        next_lock: Duration::minutes(60),
    };

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 0).unwrap()
    }

    #[test]
    fn ten_then_five_failures() {
        let mut l = Lockout::default();
        let now = t0();
        for i in 1..10 {
            assert_eq!(l.fail(&P, now), Failure::Counted { left: 10 - i });
        }
        assert_eq!(l.fail(&P, now), Failure::LockedNow { minutes: 10 });
        assert!(l.locked(now).is_some());
        assert!(l.locked(now + Duration::minutes(9)).is_some());
        let later = now + Duration::minutes(10);
        assert!(l.locked(later).is_none());
        for i in 1..5 {
            assert_eq!(l.fail(&P, later), Failure::Counted { left: 5 - i });
        }
        assert_eq!(l.fail(&P, later), Failure::LockedNow { minutes: 60 });
        assert!(l.locked(later + Duration::minutes(59)).is_some());
        assert!(l.locked(later + Duration::minutes(60)).is_none());
    }

    #[test]
    fn success_resets() {
        let mut l = Lockout::default();
        for _ in 0..9 {
            l.fail(&P, t0());
        }
        l.succeed();
        assert_eq!(l.fail(&P, t0()), Failure::Counted { left: 9 });
    }

    #[test]
    fn survives_serialisation() {
        let mut l = Lockout::default();
        for _ in 0..10 {
            l.fail(&P, t0());
        }
        let back: Lockout = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
        assert!(back.locked(t0()).is_some());
    }

    proptest! {
        /// Attempts while locked never change the state.
        #[test]
        fn attempts_while_locked_are_not_counted(n in 0u32..50, at in 0i64..599) {
            let mut l = Lockout::default();
            for _ in 0..10 { l.fail(&P, t0()); }
            let before = l.clone();
            for _ in 0..n { l.fail(&P, t0() + Duration::seconds(at)); }
            prop_assert_eq!(l, before);
        }

        /// The device is never locked before 10 consecutive failures.
        #[test]
        fn no_lock_before_ten(n in 0u32..10) {
            let mut l = Lockout::default();
            for _ in 0..n { l.fail(&P, t0()); }
            prop_assert!(l.locked(t0()).is_none());
        }
    }
}
