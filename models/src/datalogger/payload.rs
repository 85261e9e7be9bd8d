//! The binary payload of one MQTT message of the Data Logger, and its
//! decoding into JSON rows (`fieldtwin datalogger decode`, tests).
//!
//! Contract (docs/datalogger.md "Payload"): version byte `1`, the device id
//! (length u8 + UTF-8), the record count (u16 big-endian), then that many
//! [`Record`]s of [`RECORD_LEN`] bytes. [`decode`] is total: a payload that
//! does not have exactly this layout is an error that says why.

use chrono::DateTime;
use serde::Serialize;

use super::sensors::Status;
use super::store::{RECORD_LEN, Record};

/// Payload format version.
pub const VERSION: u8 = 1;

/// The payload carrying `records` of device `id`.
pub fn encode(id: &str, records: &[Record]) -> Vec<u8> {
    let id = &id.as_bytes()[..id.len().min(255)];
    let n = records.len().min(u16::MAX as usize);
    let mut out = Vec::with_capacity(4 + id.len() + n * RECORD_LEN);
    out.push(VERSION);
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    for r in &records[..n] {
        out.extend_from_slice(&r.encode());
    }
    out
}

/// A decoded payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub device: String,
    pub records: Vec<Record>,
}

/// Decodes a payload.
pub fn decode(b: &[u8]) -> Result<Decoded, String> {
    let (&v, rest) = b.split_first().ok_or("empty payload")?;
    if v != VERSION {
        return Err(format!(
            "payload version {v} is not supported (only {VERSION})"
        ));
    }
    let (&n, rest) = rest
        .split_first()
        .ok_or("payload ends before the device id")?;
    let (id, rest) = rest
        .split_at_checked(usize::from(n))
        .ok_or("payload ends inside the device id")?;
    let device = String::from_utf8(id.to_vec()).map_err(|_| "device id is not UTF-8")?;
    let (count, rest) = rest
        .split_at_checked(2)
        .ok_or("payload ends before the record count")?;
    let count = usize::from(u16::from_be_bytes([count[0], count[1]]));
    if rest.len() != count * RECORD_LEN {
        return Err(format!(
            "payload announces {count} records ({} bytes) but carries {} bytes",
            count * RECORD_LEN,
            rest.len()
        ));
    }
    let records = rest
        .chunks_exact(RECORD_LEN)
        .filter_map(Record::decode)
        .collect();
    Ok(Decoded { device, records })
}

/// One decoded record as a JSON row (reference devices.md §4:
/// `{deviceId, streamId, ts, raw, final}` plus the sequence number and status).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    #[serde(rename = "deviceId")]
    pub device_id: String,
    #[serde(rename = "streamId")]
    pub stream_id: String,
    pub seq: u32,
    pub ts: String,
    pub raw: f32,
    #[serde(rename = "final")]
    pub value: f32,
    pub status: &'static str,
}

/// JSON rows of a payload; `names` are the input names by index (the
/// logger's configuration), otherwise streams are called `in0`, `in1`, ...
pub fn rows(d: &Decoded, names: &[String]) -> Vec<Row> {
    d.records
        .iter()
        .map(|r| Row {
            device_id: d.device.clone(),
            stream_id: names
                .get(usize::from(r.input))
                .cloned()
                .unwrap_or_else(|| format!("in{}", r.input)),
            seq: r.seq,
            ts: DateTime::from_timestamp(i64::from(r.secs), u32::from(r.millis) * 1_000_000)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default(),
            raw: r.raw,
            value: r.value,
            status: Status::from_u8(r.status).map_or("unknown", Status::name),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip_and_rows() {
        let r = Record {
            seq: 41,
            secs: 1_772_409_600,
            millis: 5,
            input: 1,
            status: 0,
            raw: 6.5,
            value: 6.5,
        };
        let p = encode("dl1", &[r, Record { seq: 42, ..r }]);
        let d = decode(&p).unwrap();
        assert_eq!(d.device, "dl1");
        assert_eq!(d.records.len(), 2);
        let rows = rows(&d, &["level".into(), "pressure".into()]);
        assert_eq!(rows[0].stream_id, "pressure");
        assert_eq!(rows[0].ts, "2026-03-02T00:00:00.005Z");
        assert_eq!(rows[1].seq, 42);
        assert!(decode(&p[..p.len() - 1]).unwrap_err().contains("carries"));
        assert!(decode(&[2]).unwrap_err().contains("version"));
    }

    proptest! {
        #[test]
        fn decode_is_total(b in prop::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode(&b);
        }
    }
}
