//! The Data Logger's local store: compact binary records in a ring in NV
//! memory, with the sequence numbers that make loss measurable.
//!
//! Contract (seed 004 "logged locally ... with a timestamp ... in a
//! proprietary binary format"; docs/datalogger.md "Local store"):
//! - A [`Record`] is [`RECORD_LEN`] bytes, big-endian: sequence number u32,
//!   RTC time (Unix seconds u32 + milliseconds u16), input index u8, status
//!   u8, raw f32, value f32. [`Record::decode`] is total.
//! - The ring has `capacity` slots in NV memory (key `dl/ring/N`, slot =
//!   seq mod capacity) and two counters: `dl/head` (the next sequence number
//!   to write) and `dl/sent` (the first sequence number the broker has not
//!   acknowledged). An append writes its slots and the counters in one
//!   atomic batch, flushed before it returns ([`Nv::put_batch`]), so a power
//!   cut at any moment keeps either the whole append or none of it and never
//!   reuses a sequence number.
//! - Overflow: when `head - sent` would exceed the capacity, the oldest
//!   unsent record is overwritten and `sent` moves past it; the number of
//!   records lost that way is counted in `dl/overwritten`, and the server
//!   sees the gap in the sequence numbers. Samples the ring could not have
//!   kept anyway (a clock jump longer than the ring holds) are not computed:
//!   [`Ring::skip`] counts them the same way.
//! - Readers without the ring (the device's details) read the counters
//!   from NV memory: while a batch is being flushed they see the values
//!   committed before it (emulator::storage's contract), so what the device
//!   reports stored survives a power cut at any moment.
//! - Only this module's public API and `Nv`'s public API are used.

use fieldtwin_emulator::storage::{Nv, StorageError};

/// Size of one record in bytes.
pub const RECORD_LEN: usize = 20;

const HEAD: &str = "dl/head";
const SENT: &str = "dl/sent";
const OVERWRITTEN: &str = "dl/overwritten";

/// A counter as the NV store keeps it (JSON, as [`Nv::put`] writes it).
fn json(n: u64) -> Vec<u8> {
    n.to_string().into_bytes()
}

fn slot_key(slot: u64) -> String {
    format!("dl/ring/{slot}")
}

/// One stored sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record {
    pub seq: u32,
    /// RTC time: seconds since 1970.
    pub secs: u32,
    pub millis: u16,
    pub input: u8,
    pub status: u8,
    pub raw: f32,
    pub value: f32,
}

impl Record {
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0..4].copy_from_slice(&self.seq.to_be_bytes());
        b[4..8].copy_from_slice(&self.secs.to_be_bytes());
        b[8..10].copy_from_slice(&self.millis.to_be_bytes());
        b[10] = self.input;
        b[11] = self.status;
        b[12..16].copy_from_slice(&self.raw.to_be_bytes());
        b[16..20].copy_from_slice(&self.value.to_be_bytes());
        b
    }

    /// The record in `b` (exactly [`RECORD_LEN`] bytes).
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; RECORD_LEN] = b.try_into().ok()?;
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Self {
            seq: u32_at(0),
            secs: u32_at(4),
            millis: u16::from_be_bytes([b[8], b[9]]),
            input: b[10],
            status: b[11],
            raw: f32::from_bits(u32_at(12)),
            value: f32::from_bits(u32_at(16)),
        })
    }
}

/// The ring of records in a device's NV memory.
#[derive(Debug, Clone)]
pub struct Ring {
    nv: Nv,
    capacity: u64,
    head: u64,
    sent: u64,
    overwritten: u64,
}

impl Ring {
    /// Opens the ring in `nv` (state from NV memory; empty on first use).
    pub fn open(nv: Nv, capacity: u32) -> Result<Self, StorageError> {
        let capacity = u64::from(capacity.max(1));
        let mut head: u64 = nv.get(HEAD)?.unwrap_or(0);
        let sent: u64 = nv.get(SENT)?.unwrap_or(0);
        let overwritten = nv.get(OVERWRITTEN)?.unwrap_or(0);
        // A record written just before a power cut, whose head update was
        // lost, is still valid: adopt it.
        while let Some(r) = nv
            .get_raw(&slot_key(head % capacity))?
            .and_then(|b| Record::decode(&b))
            && u64::from(r.seq) == head
        {
            head += 1;
        }
        let mut ring = Self {
            nv,
            capacity,
            head,
            sent: sent.min(head),
            overwritten,
        };
        // The capacity may have shrunk since the records were written.
        if ring.head - ring.sent > capacity {
            ring.overwritten += ring.head - ring.sent - capacity;
            ring.sent = ring.head - capacity;
            ring.save_sent()?;
        }
        Ok(ring)
    }

    fn save_sent(&self) -> Result<(), StorageError> {
        self.nv.put(SENT, &self.sent)?;
        self.nv.put(OVERWRITTEN, &self.overwritten)
    }

    /// Next sequence number to be written.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// First sequence number not yet acknowledged by the server.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Records waiting for transmission.
    pub fn pending(&self) -> u64 {
        self.head - self.sent
    }

    /// Unsent records lost to overflow since the store was created.
    pub fn overwritten(&self) -> u64 {
        self.overwritten
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Appends records (their `seq` is assigned here); returns the first seq.
    /// The slots and the counters are written in one atomic batch: after a
    /// power cut either every record of the call is stored and counted, or
    /// none is.
    pub fn append(&mut self, records: &mut [Record]) -> Result<u64, StorageError> {
        let first = self.head;
        if records.is_empty() {
            return Ok(first);
        }
        let (mut head, mut sent, mut overwritten) = (self.head, self.sent, self.overwritten);
        // A call of more records than the ring holds stores only the last
        // `capacity` of them (the others would be overwritten at once).
        let skip = (records.len() as u64).saturating_sub(self.capacity) as usize;
        let mut slots: Vec<(String, [u8; RECORD_LEN])> = Vec::new();
        for (i, r) in records.iter_mut().enumerate() {
            r.seq = head as u32;
            if i >= skip {
                slots.push((slot_key(head % self.capacity), r.encode()));
            }
            head += 1;
            if head - sent > self.capacity {
                sent = head - self.capacity;
                overwritten += 1;
            }
        }
        let counters = [
            (HEAD, json(head)),
            (SENT, json(sent)),
            (OVERWRITTEN, json(overwritten)),
        ];
        let mut entries: Vec<(&str, &[u8])> =
            slots.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
        entries.extend(counters.iter().map(|(k, v)| (*k, v.as_slice())));
        self.nv.put_batch(&entries)?;
        (self.head, self.sent, self.overwritten) = (head, sent, overwritten);
        Ok(first)
    }

    /// Counts `n` samples the logger took but the ring could not keep (a
    /// clock jump longer than the ring holds): their sequence numbers are
    /// used and they count as overwritten, as if appended and overwritten.
    pub fn skip(&mut self, n: u64) -> Result<(), StorageError> {
        if n == 0 {
            return Ok(());
        }
        let head = self.head + n;
        let sent = self.sent.max(head.saturating_sub(self.capacity));
        let overwritten = self.overwritten + (sent - self.sent);
        let counters = [
            (HEAD, json(head)),
            (SENT, json(sent)),
            (OVERWRITTEN, json(overwritten)),
        ];
        let entries: Vec<(&str, &[u8])> =
            counters.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        self.nv.put_batch(&entries)?;
        (self.head, self.sent, self.overwritten) = (head, sent, overwritten);
        Ok(())
    }

    /// Up to `max` unsent records, oldest first.
    pub fn unsent(&self, max: usize) -> Result<Vec<Record>, StorageError> {
        let mut out = Vec::new();
        let mut seq = self.sent;
        while seq < self.head && out.len() < max {
            match self
                .nv
                .get_raw(&slot_key(seq % self.capacity))?
                .and_then(|b| Record::decode(&b))
            {
                Some(r) if u64::from(r.seq) == seq => out.push(r),
                // A slot that does not hold `seq` cannot be sent: stop here.
                _ => break,
            }
            seq += 1;
        }
        Ok(out)
    }

    /// The server acknowledged every record before `seq`.
    pub fn acknowledge(&mut self, seq: u64) -> Result<(), StorageError> {
        let seq = seq.min(self.head);
        if seq > self.sent {
            self.nv.put(SENT, &seq)?;
            self.sent = seq;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldtwin_emulator::storage::Store;
    use proptest::prelude::*;

    fn rec(i: u8) -> Record {
        Record {
            seq: 0,
            secs: 1_700_000_000,
            millis: 250,
            input: i,
            status: 0,
            raw: 12.5,
            value: 2.5,
        }
    }

    #[test]
    fn records_survive_reopen_and_keep_their_sequence() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(Some(dir.path())).unwrap();
            let mut ring = Ring::open(store.device("dl1").unwrap(), 100).unwrap();
            let mut rs = vec![rec(0), rec(1), rec(2)];
            assert_eq!(ring.append(&mut rs).unwrap(), 0);
            ring.acknowledge(1).unwrap();
        }
        let store = Store::open(Some(dir.path())).unwrap();
        let mut ring = Ring::open(store.device("dl1").unwrap(), 100).unwrap();
        assert_eq!((ring.head(), ring.sent(), ring.pending()), (3, 1, 2));
        let un = ring.unsent(10).unwrap();
        assert_eq!(un.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(un[0].input, 1);
        assert_eq!(ring.append(&mut [rec(3)]).unwrap(), 3);
    }

    /// The counters as a reader without the ring sees them (another handle
    /// on the device's NV memory, as the details read them).
    fn counters(nv: &Nv) -> (u64, u64, u64) {
        let get = |k: &str| nv.get::<u64>(k).unwrap().unwrap_or(0);
        // `sent` first: read apart, an older `sent` never passes a newer head.
        let (sent, overwritten) = (get(SENT), get(OVERWRITTEN));
        (get(HEAD), sent, overwritten)
    }

    #[test]
    fn the_counters_in_nv_follow_every_durable_change_and_only_those() {
        let store = Store::open(None).unwrap();
        let nv = store.device("dl1").unwrap();
        let reader = store.device("dl1").unwrap();
        let mut ring = Ring::open(nv.clone(), 2).unwrap();
        assert_eq!(counters(&reader), (0, 0, 0));
        ring.append(&mut [rec(0), rec(1), rec(2)]).unwrap();
        assert_eq!(
            counters(&reader),
            (3, 1, 1),
            "one record overwritten in a ring of 2"
        );
        ring.acknowledge(2).unwrap();
        ring.skip(5).unwrap();
        assert_eq!(counters(&reader), (8, 6, 5));
        // A batch refused by NV memory changes nothing that is reported.
        let big = vec![0u8; fieldtwin_emulator::storage::LARGE_VALUE];
        assert!(nv.put_batch(&[("x", &big)]).is_err());
        assert_eq!(
            counters(&reader),
            (ring.head(), ring.sent(), ring.overwritten())
        );
    }

    #[test]
    fn a_reader_during_appends_sees_the_counters_only_move_on_and_a_power_cut_keeps_them() {
        // Appends flushed to disk one batch at a time while another thread
        // reads the counters from NV memory: what it reads only moves on,
        // and a power cut (the store reopened) keeps at least what it read
        // and every unsent record. (That a reader never sees a batch before
        // it is durable is emulator::storage's own unit test, and
        // tests/reliability.rs checks it with kill -9.)
        let dir = tempfile::tempdir().unwrap();
        let seen = {
            let store = Store::open(Some(dir.path())).unwrap();
            let reader = store.device("dl1").unwrap();
            let mut ring = Ring::open(store.device("dl1").unwrap(), 32).unwrap();
            let done = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|s| {
                let watcher = s.spawn(|| {
                    let mut last = (0, 0, 0);
                    while !done.load(std::sync::atomic::Ordering::Acquire) {
                        let now = counters(&reader);
                        assert!(
                            now.0 >= last.0 && now.1 >= last.1 && now.2 >= last.2,
                            "{last:?} then {now:?}"
                        );
                        assert!(now.1 <= now.0, "{now:?}: sent past the head");
                        last = now;
                    }
                    last
                });
                for i in 0..60u8 {
                    ring.append(&mut [rec(i), rec(i)]).unwrap();
                    if i % 3 == 0 {
                        ring.acknowledge(ring.head().saturating_sub(4)).unwrap();
                    }
                }
                done.store(true, std::sync::atomic::Ordering::Release);
                watcher.join().unwrap()
            })
        };
        let store = Store::open(Some(dir.path())).unwrap();
        let ring = Ring::open(store.device("dl1").unwrap(), 32).unwrap();
        assert_eq!(ring.head(), 120);
        assert!(seen.0 <= ring.head() && seen.1 <= ring.sent(), "{seen:?}");
        let un = ring.unsent(100).unwrap();
        assert_eq!(
            un.iter().map(|r| u64::from(r.seq)).collect::<Vec<_>>(),
            (ring.sent()..ring.head()).collect::<Vec<_>>(),
            "every unsent record is still there after the power cut"
        );
    }

    #[test]
    fn the_ring_works_beside_a_large_firmware_image_across_reopen() {
        // A 100 kB firmware image is a large value (a file of its own in the
        // NV store); ring writes in the same namespace neither rewrite nor
        // lose it, and the ring reopens as it was.
        use fieldtwin_emulator::storage::LARGE_DIR;
        let dir = tempfile::tempdir().unwrap();
        let image: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let files = || -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
            let mut v: Vec<_> = std::fs::read_dir(dir.path().join(LARGE_DIR))
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (e.path(), e.metadata().unwrap().modified().unwrap())
                })
                .collect();
            v.sort();
            v
        };
        {
            let store = Store::open(Some(dir.path())).unwrap();
            let nv = store.device("dl1").unwrap();
            nv.put_raw(crate::security::firmware::IMAGE_KEY, &image)
                .unwrap();
            let before = files();
            assert_eq!(before.len(), 1, "{before:?}");
            let mut ring = Ring::open(nv.clone(), 64).unwrap();
            for _ in 0..10 {
                let mut rs: Vec<Record> = (0..10).map(rec).collect();
                ring.append(&mut rs).unwrap();
            }
            ring.acknowledge(50).unwrap();
            assert_eq!(files(), before, "a ring write touched the image");
        }
        let store = Store::open(Some(dir.path())).unwrap();
        let nv = store.device("dl1").unwrap();
        assert_eq!(
            nv.get_raw(crate::security::firmware::IMAGE_KEY)
                .unwrap()
                .unwrap(),
            image
        );
        let ring = Ring::open(nv, 64).unwrap();
        assert_eq!((ring.head(), ring.sent(), ring.pending()), (100, 50, 50));
        assert_eq!(ring.overwritten(), 36);
        let un = ring.unsent(100).unwrap();
        assert_eq!(
            un.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (50..100).collect::<Vec<u32>>()
        );
    }

    #[test]
    fn a_record_whose_head_update_was_lost_is_adopted() {
        let store = Store::open(None).unwrap();
        let nv = store.device("dl1").unwrap();
        let mut ring = Ring::open(nv.clone(), 10).unwrap();
        ring.append(&mut [rec(0), rec(1)]).unwrap();
        // Power cut after the slot write, before the head write.
        let mut r = rec(2);
        r.seq = 2;
        nv.put_raw("dl/ring/2", &r.encode()).unwrap();
        let ring = Ring::open(nv, 10).unwrap();
        assert_eq!(ring.head(), 3);
    }

    #[test]
    fn overflow_overwrites_the_oldest_unsent_and_counts_it() {
        let store = Store::open(None).unwrap();
        let mut ring = Ring::open(store.device("dl1").unwrap(), 16).unwrap();
        let mut rs: Vec<Record> = (0..20).map(rec).collect();
        ring.append(&mut rs).unwrap();
        assert_eq!(ring.pending(), 16);
        assert_eq!(ring.sent(), 4);
        assert_eq!(ring.overwritten(), 4);
        let un = ring.unsent(100).unwrap();
        assert_eq!(un.first().unwrap().seq, 4);
        assert_eq!(un.last().unwrap().seq, 19);
        ring.acknowledge(10).unwrap();
        assert_eq!(ring.unsent(100).unwrap().first().unwrap().seq, 10);
        // Acknowledging beyond the head is clamped.
        ring.acknowledge(1000).unwrap();
        assert_eq!(ring.pending(), 0);
    }

    #[test]
    fn skipped_samples_use_their_sequence_numbers_and_count_as_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(Some(dir.path())).unwrap();
            let mut ring = Ring::open(store.device("dl1").unwrap(), 16).unwrap();
            ring.append(&mut [rec(0), rec(1), rec(2)]).unwrap();
            ring.acknowledge(1).unwrap();
            // A jump of 1000 samples the ring could not keep, then its last 16.
            ring.skip(1000).unwrap();
            let mut last: Vec<Record> = (0..16).map(rec).collect();
            assert_eq!(ring.append(&mut last).unwrap(), 1003);
        }
        let store = Store::open(Some(dir.path())).unwrap();
        let ring = Ring::open(store.device("dl1").unwrap(), 16).unwrap();
        assert_eq!(ring.head(), 1019);
        assert_eq!(ring.sent(), 1003);
        // 2 unsent records and the 1000 skipped ones are lost, all counted.
        assert_eq!(ring.overwritten(), 1002);
        let un = ring.unsent(100).unwrap();
        assert_eq!(un.len(), 16);
        assert_eq!(un[0].seq, 1003);
    }

    proptest! {
        #[test]
        fn encode_decode_roundtrip(seq: u32, secs: u32, millis in 0u16..1000, input: u8, status: u8, raw: f32, value: f32) {
            let r = Record { seq, secs, millis, input, status, raw, value };
            let back = Record::decode(&r.encode()).unwrap();
            prop_assert_eq!(back.encode(), r.encode());
        }

        #[test]
        fn decode_is_total(b in prop::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(Record::decode(&b).is_some(), b.len() == RECORD_LEN);
        }
    }
}
