//! Frames waiting for a next hop's MAC: the ARP retry loop the emulated
//! router ([`super::router`]) and the carrier NAT ([`super::nat`]) share.
//!
//! Contract:
//! - [`PendingArp`] is plain state keyed by next hop (`K`: whatever names
//!   a neighbour for its owner, e.g. (port, address)), holding frames of
//!   any type `F`. It sends nothing itself: [`PendingArp::push`] says
//!   whether to send the first ARP request now, [`PendingArp::poll`]
//!   returns what is due at `now` ([`Due::Retry`]: send another request;
//!   [`Due::GiveUp`]: the hop never answered, here are its frames), and
//!   the owner decides what a give-up means (ICMP host unreachable for the
//!   router, a drop counted for the NAT).
//! - At most `max` frames are queued per hop; a frame beyond that is
//!   refused ([`Queued::Full`]) and the owner counts it dropped.
//! - A hop is asked `tries` times, `retry` apart; the give-up comes
//!   `retry` after the last request. [`PendingArp::resolved`] (its MAC
//!   learnt) hands the frames back in the order they came.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What [`PendingArp::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Queued, first for its hop: send an ARP request now.
    Ask,
    /// Queued behind others; the request is out already.
    Waiting,
    /// The hop's queue is full: the frame is dropped.
    Full,
}

/// Work due at a [`PendingArp::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due<K, F> {
    /// Send another ARP request for this hop.
    Retry(K),
    /// The hop did not answer: its frames, oldest first.
    GiveUp(K, Vec<F>),
}

struct Queue<F> {
    frames: Vec<F>,
    tries: u8,
    next: Instant,
}

/// Frames per next hop while its ARP is unanswered.
pub struct PendingArp<K, F> {
    queues: HashMap<K, Queue<F>>,
    max: usize,
    tries: u8,
    retry: Duration,
}

impl<K: Hash + Eq + Clone, F> PendingArp<K, F> {
    /// `max` frames per hop, `tries` requests `retry` apart.
    pub fn new(max: usize, tries: u8, retry: Duration) -> Self {
        Self {
            queues: HashMap::new(),
            max,
            tries: tries.max(1),
            retry,
        }
    }

    /// Queues `frame` for `hop`.
    pub fn push(&mut self, hop: K, frame: F, now: Instant) -> Queued {
        let retry = self.retry;
        let q = self.queues.entry(hop).or_insert_with(|| Queue {
            frames: Vec::new(),
            tries: 0,
            next: now,
        });
        if q.frames.len() >= self.max {
            return Queued::Full;
        }
        q.frames.push(frame);
        if q.tries == 0 {
            q.tries = 1;
            q.next = now + retry;
            Queued::Ask
        } else {
            Queued::Waiting
        }
    }

    /// The frames waiting for `hop`, now that its MAC is known (none when
    /// nothing waited).
    pub fn resolved(&mut self, hop: &K) -> Vec<F> {
        self.queues
            .remove(hop)
            .map(|q| q.frames)
            .unwrap_or_default()
    }

    /// The frames waiting for `hop`, oldest first.
    pub fn waiting(&self, hop: &K) -> &[F] {
        self.queues.get(hop).map_or(&[], |q| &q.frames)
    }

    /// Retries and give-ups due at `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<Due<K, F>> {
        let due: Vec<K> = self
            .queues
            .iter()
            .filter(|(_, q)| q.next <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut work = Vec::with_capacity(due.len());
        for hop in due {
            let Some(q) = self.queues.get_mut(&hop) else {
                continue;
            };
            if q.tries < self.tries {
                q.tries += 1;
                q.next = now + self.retry;
                work.push(Due::Retry(hop));
            } else if let Some(q) = self.queues.remove(&hop) {
                work.push(Due::GiveUp(hop, q.frames));
            }
        }
        work
    }

    /// When [`PendingArp::poll`] has work next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queues.values().map(|q| q.next).min()
    }

    /// Whether no frame waits.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Duration = Duration::from_secs(1);

    #[test]
    fn asks_once_then_queues_up_to_the_cap() {
        let mut p: PendingArp<u8, u32> = PendingArp::new(2, 3, RETRY);
        let t0 = Instant::now();
        assert!(p.is_empty());
        assert_eq!(p.push(1, 10, t0), Queued::Ask);
        assert_eq!(p.push(1, 11, t0), Queued::Waiting);
        assert_eq!(p.push(1, 12, t0), Queued::Full);
        assert_eq!(p.push(2, 20, t0), Queued::Ask, "another hop asks too");
        assert_eq!(p.waiting(&1), &[10, 11]);
        assert_eq!(p.next_deadline(), Some(t0 + RETRY));
        assert_eq!(p.resolved(&1), vec![10, 11], "in order");
        assert!(p.resolved(&1).is_empty());
        assert_eq!(p.resolved(&2), vec![20]);
        assert!(p.is_empty());
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn retries_then_gives_up_with_the_frames() {
        let mut p: PendingArp<&str, u32> = PendingArp::new(8, 3, RETRY);
        let t0 = Instant::now();
        assert_eq!(p.push("gw", 1, t0), Queued::Ask);
        assert_eq!(p.push("gw", 2, t0), Queued::Waiting);
        assert!(p.poll(t0).is_empty(), "nothing due before a second");
        assert_eq!(p.poll(t0 + RETRY), vec![Due::Retry("gw")]);
        assert!(p.poll(t0 + RETRY).is_empty(), "a retry re-arms the timer");
        assert_eq!(p.poll(t0 + RETRY * 2), vec![Due::Retry("gw")]);
        assert_eq!(p.next_deadline(), Some(t0 + RETRY * 3));
        assert_eq!(p.poll(t0 + RETRY * 3), vec![Due::GiveUp("gw", vec![1, 2])]);
        assert!(p.is_empty());
        // A late frame for the same hop starts over with a request.
        assert_eq!(p.push("gw", 3, t0 + RETRY * 4), Queued::Ask);
    }

    #[test]
    fn a_late_poll_does_one_step_per_hop() {
        let mut p: PendingArp<u8, ()> = PendingArp::new(8, 2, RETRY);
        let t0 = Instant::now();
        p.push(1, (), t0);
        p.push(2, (), t0 + RETRY / 2);
        let mut work = p.poll(t0 + RETRY * 10);
        work.sort_by_key(|d| match d {
            Due::Retry(k) | Due::GiveUp(k, _) => *k,
        });
        assert_eq!(work, vec![Due::Retry(1), Due::Retry(2)]);
        let work = p.poll(t0 + RETRY * 20);
        assert_eq!(work.len(), 2);
        assert!(
            work.iter()
                .all(|d| matches!(d, Due::GiveUp(_, f) if f.len() == 1))
        );
        assert!(p.is_empty());
    }
}
