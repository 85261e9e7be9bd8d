//! Web sessions: random 256-bit tokens (sent as a Secure, HttpOnly,
//! SameSite=Strict cookie), a per-session CSRF token, and an idle timeout
//! on the device's virtual clock. The timeout and the most simultaneous
//! sessions are a [`Policy`] of the model.
//!
//! Contract: sessions live in RAM only (a reboot logs everyone out);
//! [`Sessions::touch`] returns the session if it exists and has not been
//! idle longer than the timeout, and refreshes it.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use rand::RngCore;

use super::password::hex;

/// The per-model limits of sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Idle timeout of a web session.
    pub idle: Duration,
    /// Most simultaneous sessions; the oldest is dropped beyond it.
    pub max: usize,
}

/// One logged-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub csrf: String,
    pub last_seen: DateTime<Utc>,
}

/// All open sessions.
#[derive(Debug)]
pub struct Sessions {
    policy: Policy,
    map: HashMap<String, Session>,
}

/// A fresh random token (hex of 32 bytes).
pub fn token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex(&b)
}

impl Sessions {
    /// No session yet, under `policy`.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            map: HashMap::new(),
        }
    }

    /// Opens a session; returns its token.
    pub fn open(&mut self, now: DateTime<Utc>) -> String {
        let idle = self.policy.idle;
        self.map.retain(|_, s| now - s.last_seen <= idle);
        if self.map.len() >= self.policy.max
            && let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
        {
            self.map.remove(&oldest);
        }
        let t = token();
        self.map.insert(
            t.clone(),
            Session {
                csrf: token(),
                last_seen: now,
            },
        );
        t
    }

    /// The live session of `token`, refreshed.
    pub fn touch(&mut self, token: &str, now: DateTime<Utc>) -> Option<Session> {
        let s = self.map.get_mut(token)?;
        if now - s.last_seen > self.policy.idle {
            self.map.remove(token);
            return None;
        }
        s.last_seen = now;
        Some(s.clone())
    }

    pub fn close(&mut self, token: &str) {
        self.map.remove(token);
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_sessions_expire() {
        let t = DateTime::from_timestamp(1_750_000_000, 0).unwrap();
        let mut s = Sessions::new(Policy {
            idle: Duration::minutes(15),
            max: 32,
        });
        let tok = s.open(t);
        assert_eq!(tok.len(), 64);
        assert!(s.touch(&tok, t + Duration::minutes(14)).is_some());
        assert!(s.touch(&tok, t + Duration::minutes(28)).is_some());
        assert!(s.touch(&tok, t + Duration::minutes(44)).is_none());
        assert!(s.touch("nope", t).is_none());
    }
}
