//! The transaction-message queue of an OCPP 1.6 client whose central
//! system may be unreachable (OCPP 1.6 §4.7 "Transaction-related
//! messages"): StartTransaction, StopTransaction and MeterValues are kept
//! in order and delivered exactly once when the link is up, with the
//! transaction ids the central system gave.
//!
//! Contract (plain state, no I/O; used by the charging stations towards
//! their controller and by the EVCE towards each CSMS):
//! - [`TxQueue::push`] appends a message that names its transaction by a
//!   LOCAL id (the id the sender uses itself). Messages leave in push
//!   order, one at a time: [`TxQueue::front`] gives the next CALL with the
//!   local id replaced by the REMOTE one (the `transactionId` of the
//!   StartTransaction answer), and [`TxQueue::ack`] removes it once the
//!   peer answered. A StartTransaction is always acknowledged before the
//!   messages behind it leave, so their remote id is known when they do.
//! - A message that is sent but not answered (the link fell) stays at the
//!   front and is sent again: the queue never skips or duplicates a
//!   message it considers answered. (An answer lost on the wire can make
//!   the peer see a message twice; OCPP has no sequence number to prevent
//!   that, and this model never loses answers on a link that stays up.)
//! - A CALLERROR answer counts as an attempt ([`TxQueue::failed`]); after
//!   [`MAX_ATTEMPTS`] the message is discarded (OCPP 1.6 §4.7:
//!   TransactionMessageAttempts), and with a StartTransaction every later
//!   message of that transaction, since it has no remote id.
//! - [`TxQueue::remote_of`] / [`TxQueue::local_of`] translate ids for calls
//!   in the other direction (RemoteStop, SetChargingProfile).
//! - [`TxQueue::push_bounded`] keeps the queue at a cap: when it is full,
//!   the oldest waiting MeterValues makes room (counted in
//!   [`TxQueue::dropped`]); StartTransaction and StopTransaction are never
//!   dropped, so a queue holding only those may exceed the cap.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Attempts of one message that got a CALLERROR before it is discarded.
pub const MAX_ATTEMPTS: u32 = 3;

/// A queued transaction message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    /// `StartTransaction`, `StopTransaction` or `MeterValues`.
    pub action: String,
    /// The sender's id of the transaction.
    pub local_tx: i64,
    /// The payload; its `transactionId` (if any) holds `local_tx`.
    pub payload: Value,
    pub attempts: u32,
}

/// What [`TxQueue::ack`] learnt.
#[derive(Debug, Clone, PartialEq)]
pub enum Acked {
    /// A StartTransaction: local id -> remote id.
    Started {
        local: i64,
        remote: i64,
    },
    Other,
    /// Nothing was waiting.
    Nothing,
}

/// The queue (see the module contract).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TxQueue {
    items: VecDeque<Queued>,
    /// local -> remote transaction ids.
    map: BTreeMap<i64, i64>,
    /// Messages discarded after [`MAX_ATTEMPTS`].
    pub discarded: u64,
    /// Messages delivered (acknowledged).
    pub delivered: u64,
    /// MeterValues dropped to keep the queue at its cap.
    #[serde(default)]
    pub dropped: u64,
}

impl TxQueue {
    /// Appends a message of local transaction `local_tx`.
    pub fn push(&mut self, action: &str, local_tx: i64, payload: Value) {
        self.items.push_back(Queued {
            action: action.to_string(),
            local_tx,
            payload,
            attempts: 0,
        });
    }

    /// [`TxQueue::push`] with the queue kept at `cap` messages (see the
    /// module contract); returns whether a MeterValues was dropped.
    pub fn push_bounded(
        &mut self,
        action: &str,
        local_tx: i64,
        payload: Value,
        cap: usize,
    ) -> bool {
        let mut dropped = false;
        if self.items.len() >= cap {
            // The oldest MeterValues that is not on the wire (the front may
            // be, and must then stay for its answer).
            let victim = self
                .items
                .iter()
                .enumerate()
                .skip(1)
                .find(|(_, q)| q.action == "MeterValues")
                .map(|(i, _)| i)
                .or((action == "MeterValues").then_some(usize::MAX));
            match victim {
                Some(usize::MAX) => {
                    self.dropped += 1;
                    return true;
                }
                Some(i) => {
                    self.items.remove(i);
                    self.dropped += 1;
                    dropped = true;
                }
                None => {}
            }
        }
        self.push(action, local_tx, payload);
        dropped
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The waiting messages, front first.
    pub fn items(&self) -> impl Iterator<Item = &Queued> {
        self.items.iter()
    }

    /// The next CALL to send: (action, payload with the remote id).
    pub fn front(&self) -> Option<(String, Value)> {
        let q = self.items.front()?;
        let mut payload = q.payload.clone();
        if q.action != "StartTransaction"
            && let Some(obj) = payload.as_object_mut()
        {
            let remote = self.map.get(&q.local_tx).copied().unwrap_or(q.local_tx);
            obj.insert("transactionId".into(), Value::from(remote));
        }
        Some((q.action.clone(), payload))
    }

    /// The front message was answered with `result`.
    pub fn ack(&mut self, result: &Value) -> Acked {
        let Some(q) = self.items.pop_front() else {
            return Acked::Nothing;
        };
        self.delivered += 1;
        if q.action == "StartTransaction" {
            let remote = result
                .get("transactionId")
                .and_then(Value::as_i64)
                .unwrap_or(q.local_tx);
            self.map.insert(q.local_tx, remote);
            Acked::Started {
                local: q.local_tx,
                remote,
            }
        } else {
            Acked::Other
        }
    }

    /// The front message got a CALLERROR; returns true if it was discarded.
    pub fn failed(&mut self) -> bool {
        let Some(q) = self.items.front_mut() else {
            return false;
        };
        q.attempts += 1;
        if q.attempts < MAX_ATTEMPTS {
            return false;
        }
        let q = self.items.pop_front().unwrap_or_else(|| unreachable!());
        self.discarded += 1;
        if q.action == "StartTransaction" {
            let before = self.items.len();
            self.items.retain(|x| x.local_tx != q.local_tx);
            self.discarded += (before - self.items.len()) as u64;
        }
        true
    }

    /// Every known local -> remote transaction id.
    pub fn mapping(&self) -> &BTreeMap<i64, i64> {
        &self.map
    }

    /// The remote id of local transaction `local`, once known.
    pub fn remote_of(&self, local: i64) -> Option<i64> {
        self.map.get(&local).copied()
    }

    /// The local id of remote transaction `remote`.
    pub fn local_of(&self, remote: i64) -> Option<i64> {
        self.map
            .iter()
            .find(|(_, r)| **r == remote)
            .map(|(l, _)| *l)
    }

    /// Forgets the mapping of a finished transaction whose messages have
    /// all left (keeps the map small).
    pub fn forget(&mut self, local: i64) {
        if !self.items.iter().any(|q| q.local_tx == local) {
            self.map.remove(&local);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn ids_are_mapped_in_order() {
        let mut q = TxQueue::default();
        q.push("StartTransaction", 7, json!({"connectorId": 1}));
        q.push("MeterValues", 7, json!({"transactionId": 7}));
        q.push("StopTransaction", 7, json!({"transactionId": 7}));
        assert_eq!(q.front().unwrap().0, "StartTransaction");
        assert_eq!(
            q.ack(&json!({"transactionId": 1001})),
            Acked::Started {
                local: 7,
                remote: 1001
            }
        );
        let (a, p) = q.front().unwrap();
        assert_eq!(
            (a.as_str(), p["transactionId"].as_i64()),
            ("MeterValues", Some(1001))
        );
        q.ack(&json!({}));
        assert_eq!(q.front().unwrap().1["transactionId"], 1001);
        assert_eq!(q.local_of(1001), Some(7));
        q.ack(&json!({}));
        assert!(q.front().is_none());
        assert_eq!(q.delivered, 3);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_meter_values_never_a_start_or_stop() {
        let mut q = TxQueue::default();
        q.push_bounded("StartTransaction", 1, json!({"n": 0}), 4);
        for n in 1..=3 {
            assert!(!q.push_bounded("MeterValues", 1, json!({"n": n, "transactionId": 1}), 4));
        }
        // Full: the oldest MeterValues after the front goes.
        assert!(q.push_bounded("MeterValues", 1, json!({"n": 4, "transactionId": 1}), 4));
        assert!(q.push_bounded("StopTransaction", 1, json!({"n": 5, "transactionId": 1}), 4));
        let ns: Vec<i64> = q
            .items()
            .map(|x| x.payload["n"].as_i64().unwrap())
            .collect();
        assert_eq!(ns, [0, 3, 4, 5]);
        assert_eq!(q.dropped, 2);
        // Only starts and stops: nothing can go, the cap is exceeded.
        let mut q = TxQueue::default();
        for t in 1..=3 {
            q.push_bounded("StartTransaction", t, json!({}), 2);
            q.push_bounded("StopTransaction", t, json!({"transactionId": t}), 2);
        }
        assert_eq!(q.len(), 6);
        assert_eq!(q.dropped, 0);
        // A MeterValues arriving at a queue of starts and stops is the one dropped.
        assert!(q.push_bounded("MeterValues", 3, json!({"transactionId": 3}), 2));
        assert_eq!(q.len(), 6);
        assert_eq!(q.dropped, 1);
    }

    #[test]
    fn a_start_refused_three_times_takes_its_transaction_along() {
        let mut q = TxQueue::default();
        q.push("StartTransaction", 1, json!({}));
        q.push("MeterValues", 1, json!({"transactionId": 1}));
        q.push("StartTransaction", 2, json!({}));
        assert!(!q.failed());
        assert!(!q.failed());
        assert!(q.failed());
        assert_eq!(q.discarded, 2);
        assert_eq!(q.len(), 1);
        assert_eq!(q.items().next().unwrap().local_tx, 2);
    }

    proptest! {
        /// Whatever the interleaving of pushes, acks and lost links, every
        /// message is delivered once, in push order, with its remote id.
        #[test]
        fn no_loss_no_duplicate(ops in proptest::collection::vec(0u8..4, 1..200)) {
            let mut q = TxQueue::default();
            let mut pushed = Vec::new();
            let mut seen = Vec::new();
            let mut next_local = 1i64;
            let mut open: Option<i64> = None;
            let mut remote = 5000i64;
            let mut n = 0u64;
            for op in ops {
                match op {
                    0 => {
                        // a message of the open transaction, or a new one
                        let (action, tx) = match open {
                            None => { open = Some(next_local); next_local += 1; ("StartTransaction", next_local - 1) }
                            Some(t) if n.is_multiple_of(3) => { open = None; ("StopTransaction", t) }
                            Some(t) => ("MeterValues", t),
                        };
                        n += 1;
                        let mut p = json!({"n": n});
                        if action != "StartTransaction" { p["transactionId"] = json!(tx); }
                        q.push(action, tx, p);
                        pushed.push(n);
                    }
                    1 | 2 => {
                        // the link is up: the front leaves and is answered
                        if let Some((action, p)) = q.front() {
                            let local = q.items().next().unwrap().local_tx;
                            if action != "StartTransaction" {
                                prop_assert_eq!(p["transactionId"].as_i64(), q.remote_of(local));
                            }
                            seen.push(p["n"].as_u64().unwrap());
                            remote += 1;
                            q.ack(&json!({"transactionId": remote}));
                        }
                    }
                    _ => {
                        // the link falls after sending: nothing is acknowledged
                        let _ = q.front();
                    }
                }
            }
            while let Some((_, p)) = q.front() {
                seen.push(p["n"].as_u64().unwrap());
                remote += 1;
                q.ack(&json!({"transactionId": remote}));
            }
            prop_assert_eq!(seen, pushed);
        }
    }
}
