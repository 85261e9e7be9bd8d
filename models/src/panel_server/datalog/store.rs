//! The Panel Server's data log in NV memory: per field device, a ring of
//! rows with RTC timestamps and an error flag, and the publication pointer.
//!
//! Contract (devices.md §1.6 "Backlog"; docs/panel-server.md "Data logging"):
//! - A [`Row`] is one sample of one field device: sequence number, RTC
//!   time (Unix seconds), logging period, error flag ([`ERROR_OK`] or
//!   [`ERROR_INVALID`]), the measurement codes and their values (`None` =
//!   invalid).
//! - Each device has a [`Ring`] under `pslog/<device>/`: rows at
//!   `row/<seq mod SLOTS>`, counters `first` (oldest row kept), `head` (next
//!   sequence number), `published` (first row not yet accepted by the
//!   publication server) and `dropped` (unpublished rows lost to retention).
//!   The slot count holds the retention at the shortest logging period, so a
//!   slot is never reused while its row is kept.
//! - Retention: a row older than the retention (1 month on Entry/Universal,
//!   3 months on Advanced) is dropped, oldest first; if it was not published
//!   yet, `dropped` counts it.
//! - [`append`] writes the rows of any number of devices and their counters
//!   in one atomic [`Nv::put_batch`] (one flush): after a power cut either
//!   the whole call is stored or none of it.
//! - [`Ring::mark_published`] moves `published` forward only (a row is
//!   published once).

use std::collections::BTreeMap;

use fieldtwin_emulator::storage::{Nv, StorageError};
use serde::{Deserialize, Serialize};

/// Error flag of a row whose values are all valid.
pub const ERROR_OK: u8 = 0;
/// Error flag of a row with at least one invalid value (device not
/// connected: every value is invalid).
pub const ERROR_INVALID: u8 = 19;

/// One sample of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub seq: u64,
    /// RTC time of the sample, Unix seconds.
    pub t: i64,
    /// Logging period (minutes) the row was taken with.
    pub period_min: u32,
    pub error: u8,
    /// Measurement codes, comma-separated (e.g. "VAN,P,E").
    pub codes: String,
    pub values: Vec<Option<f64>>,
}

/// Counters of one device's ring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub first: u64,
    pub head: u64,
    pub published: u64,
    pub dropped: u64,
}

/// One device's ring.
#[derive(Debug, Clone)]
pub struct Ring {
    nv: Nv,
    device: String,
    slots: u64,
    pub c: Counters,
}

fn key(device: &str, what: &str) -> String {
    format!("pslog/{device}/{what}")
}

impl Ring {
    /// Opens the ring of `device` with `slots` row slots.
    pub fn open(nv: Nv, device: &str, slots: u64) -> Result<Self, StorageError> {
        let c = nv.get(&key(device, "counters"))?.unwrap_or_default();
        Ok(Self {
            nv,
            device: device.to_string(),
            slots: slots.max(1),
            c,
        })
    }

    fn slot_key(&self, seq: u64) -> String {
        key(&self.device, &format!("row/{}", seq % self.slots))
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    /// Rows waiting for publication.
    pub fn pending(&self) -> u64 {
        self.c.head - self.c.published
    }

    /// Row `seq`, if kept.
    pub fn get(&self, seq: u64) -> Result<Option<Row>, StorageError> {
        if seq < self.c.first || seq >= self.c.head {
            return Ok(None);
        }
        Ok(self
            .nv
            .get::<Row>(&self.slot_key(seq))?
            .filter(|r| r.seq == seq))
    }

    /// Up to `max` rows from `from` on, in order (stops at a missing row).
    pub fn rows(&self, from: u64, max: usize) -> Result<Vec<Row>, StorageError> {
        let mut out = Vec::new();
        let mut seq = from.max(self.c.first);
        while seq < self.c.head && out.len() < max {
            match self.get(seq)? {
                Some(r) => out.push(r),
                None => break,
            }
            seq += 1;
        }
        Ok(out)
    }

    /// Every row before `seq` has been published.
    pub fn mark_published(&mut self, seq: u64) -> Result<(), StorageError> {
        let seq = seq.min(self.c.head);
        if seq > self.c.published {
            let mut c = self.c;
            c.published = seq;
            self.nv.put(&key(&self.device, "counters"), &c)?;
            self.c = c;
        }
        Ok(())
    }

    /// Drops the rows older than `cutoff` (Unix seconds) from the counters
    /// (the slots are reused later); returns how many unpublished rows went.
    fn expire(&self, c: &mut Counters, pending: &BTreeMap<u64, &Row>, cutoff: i64) -> u64 {
        let before = c.dropped;
        while c.first < c.head {
            let t = match pending.get(&c.first) {
                Some(r) => r.t,
                None => match self.nv.get::<Row>(&self.slot_key(c.first)) {
                    Ok(Some(r)) if r.seq == c.first => r.t,
                    _ => i64::MIN,
                },
            };
            if t >= cutoff {
                break;
            }
            if c.first >= c.published {
                c.dropped += 1;
                c.published = c.first + 1;
            }
            c.first += 1;
        }
        c.dropped - before
    }
}

/// What one [`append`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    pub rows: u64,
    /// Unpublished rows dropped by retention.
    pub dropped: u64,
}

/// Appends rows to several rings at once: `batches[i]` goes to `rings[i]`
/// (their `seq` is assigned here); rows older than `cutoff` (Unix seconds)
/// are dropped, and `skipped[i]` samples that were never stored (a clock
/// jump longer than the retention) use sequence numbers and count as
/// dropped. One atomic NV batch. A ring without a batch gets no rows.
pub fn append(
    rings: &mut [Ring],
    batches: &mut [Vec<Row>],
    skipped: &[u64],
    cutoff: i64,
) -> Result<Appended, StorageError> {
    let Some(nv) = rings.first().map(|r| r.nv.clone()) else {
        return Ok(Appended::default());
    };
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut news = Vec::with_capacity(rings.len());
    let mut done = Appended::default();
    let mut none = Vec::new();
    for (i, ring) in rings.iter().enumerate() {
        let mut c = ring.c;
        let skip = skipped.get(i).copied().unwrap_or(0);
        if skip > 0 {
            c.head += skip;
            let lost = c.head - c.published.max(c.first);
            c.dropped += lost;
            done.dropped += lost;
            c.first = c.head;
            c.published = c.published.max(c.head);
        }
        let rows = batches.get_mut(i).unwrap_or(&mut none);
        for r in rows.iter_mut() {
            r.seq = c.head;
            c.head += 1;
        }
        let by_seq: BTreeMap<u64, &Row> = rows.iter().map(|r| (r.seq, r)).collect();
        done.dropped += ring.expire(&mut c, &by_seq, cutoff);
        for r in rows.iter().filter(|r| r.seq >= c.first) {
            let v = serde_json::to_vec(r).expect("a row serialises");
            entries.push((ring.slot_key(r.seq), v));
            done.rows += 1;
        }
        entries.push((
            key(&ring.device, "counters"),
            serde_json::to_vec(&c).expect("counters serialise"),
        ));
        news.push(c);
    }
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    nv.put_batch(&refs)?;
    for (ring, c) in rings.iter_mut().zip(news) {
        ring.c = c;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldtwin_emulator::storage::Store;

    fn row(t: i64) -> Row {
        Row {
            seq: 0,
            t,
            period_min: 10,
            error: ERROR_OK,
            codes: "P".into(),
            values: vec![Some(t as f64)],
        }
    }

    #[test]
    fn rows_keep_order_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(Some(dir.path())).unwrap();
            let nv = store.device("ps").unwrap();
            let mut rings = vec![
                Ring::open(nv.clone(), "a", 100).unwrap(),
                Ring::open(nv, "b", 100).unwrap(),
            ];
            let mut b = vec![vec![row(600), row(1200)], vec![row(600)]];
            let done = append(&mut rings, &mut b, &[], 0).unwrap();
            assert_eq!(
                done,
                Appended {
                    rows: 3,
                    dropped: 0
                }
            );
            rings[0].mark_published(1).unwrap();
        }
        let store = Store::open(Some(dir.path())).unwrap();
        let nv = store.device("ps").unwrap();
        let a = Ring::open(nv.clone(), "a", 100).unwrap();
        assert_eq!((a.c.head, a.c.published, a.pending()), (2, 1, 1));
        let rows = a.rows(a.c.published, 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].seq, rows[0].t), (1, 1200));
        assert_eq!(Ring::open(nv, "b", 100).unwrap().c.head, 1);
    }

    #[test]
    fn retention_drops_the_oldest_and_counts_unpublished_ones() {
        let store = Store::open(None).unwrap();
        let nv = store.device("ps").unwrap();
        let mut rings = vec![Ring::open(nv, "a", 1000).unwrap()];
        let mut b = vec![(0..10).map(|i| row(i * 600)).collect()];
        append(&mut rings, &mut b, &[], 0).unwrap();
        rings[0].mark_published(3).unwrap();
        // Retention cutoff at 3000 s: rows at 0..=2400 go (5 rows), 3 of
        // them were published, 2 were not.
        let mut b = vec![vec![row(6000)]];
        let done = append(&mut rings, &mut b, &[], 3000).unwrap();
        assert_eq!(done.dropped, 2);
        let c = rings[0].c;
        assert_eq!((c.first, c.published, c.head, c.dropped), (5, 5, 11, 2));
        let kept: Vec<i64> = rings[0].rows(0, 100).unwrap().iter().map(|r| r.t).collect();
        assert_eq!(kept, [3000, 3600, 4200, 4800, 5400, 6000]);
    }

    #[test]
    fn no_ring_or_fewer_batches_than_rings_is_no_panic() {
        assert_eq!(
            append(&mut [], &mut [], &[], 0).unwrap(),
            Appended::default()
        );
        let store = Store::open(None).unwrap();
        let nv = store.device("ps").unwrap();
        let mut rings = vec![
            Ring::open(nv.clone(), "a", 10).unwrap(),
            Ring::open(nv, "b", 10).unwrap(),
        ];
        let done = append(&mut rings, &mut [vec![row(0)]], &[], 0).unwrap();
        assert_eq!(done.rows, 1);
        assert_eq!((rings[0].c.head, rings[1].c.head), (1, 0));
    }

    #[test]
    fn skipped_samples_count_as_dropped_and_leave_no_gap_in_reading() {
        let store = Store::open(None).unwrap();
        let nv = store.device("ps").unwrap();
        let mut rings = vec![Ring::open(nv, "a", 10).unwrap()];
        append(&mut rings, &mut [vec![row(0), row(600)]], &[], 0).unwrap();
        let mut b = vec![vec![row(99_000)]];
        let done = append(&mut rings, &mut b, &[50], 0).unwrap();
        assert_eq!(done.dropped, 52);
        let c = rings[0].c;
        assert_eq!((c.first, c.published, c.head), (52, 52, 53));
        let rows = rings[0].rows(c.published, 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].seq, 52);
    }
}
