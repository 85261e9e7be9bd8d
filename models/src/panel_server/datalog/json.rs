//! Publication files in the Panel Server's JSON layout (devices.md §1.6
//! "JSON publication"), as pure functions.
//!
//! Contract (the record fields are the reference's; the rest is [NF],
//! documented in docs/panel-server.md "JSON files"):
//! - A file holds the same rows as the CSV file of the same cut
//!   ([`super::csv::split`]: one device, one logging period, one
//!   measurement set, at most one UTC day).
//! - [`render`]: one JSON object: the CSV header's rows 1-2 as camelCase
//!   keys (`gatewayName`, `gatewaySN`, `gatewayIpAddress`,
//!   `gatewayMacAddress`, `deviceName`, `deviceLocalId`, `deviceTypeId`,
//!   `deviceTypeName`, `loggingInterval` in minutes, `historicalIntervals`
//!   = the number of rows), `utcOffsetMinutes`, and `records`: per row, per
//!   measurement in the row's order, one record `{valueItemId, timestamp,
//!   v, t}`: `valueItemId` the topic id of the CSV (`modbus:1_mb_VAN`),
//!   `timestamp` the start of the logging period the sample falls in (UTC,
//!   `2023-03-28T08:10:00Z`), `t` the sample's offset from it in
//!   milliseconds (0 unless the RTC drifted), `v` the value (3 decimals as
//!   in the CSV) or `null` when invalid. A row is therefore exactly
//!   `measurements` consecutive records with one `timestamp + t`.
//! - [`file_name`]: the CSV name with `.json` for `.csv`.
//! - [`parse_rows`] reads a file back into rows (tests and receivers).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::csv::{self, Header};
use super::store::Row;

/// One record of the reference's JSON publication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub value_item_id: String,
    /// Start of the logging period, RFC 3339 UTC.
    pub timestamp: String,
    /// The value; `None` (JSON `null`) when invalid.
    pub v: Option<f64>,
    /// Milliseconds from `timestamp` to the sample.
    pub t: i64,
}

/// A whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct File {
    pub gateway_name: String,
    #[serde(rename = "gatewaySN")]
    pub gateway_sn: String,
    pub gateway_ip_address: String,
    pub gateway_mac_address: String,
    pub device_name: String,
    pub device_local_id: String,
    pub device_type_id: String,
    pub device_type_name: String,
    pub logging_interval: u32,
    pub historical_intervals: usize,
    pub utc_offset_minutes: i32,
    pub records: Vec<Record>,
}

/// The file name: as the CSV's, ending in `.json`.
pub fn file_name(h: &Header, at: DateTime<Utc>, n: usize) -> String {
    let name = csv::file_name(h, at, n);
    format!("{}.json", name.strip_suffix(".csv").unwrap_or(&name))
}

fn rfc3339(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A value as the file holds it (the CSV's 3 decimals).
fn value(v: f64) -> Option<f64> {
    let r = (v * 1000.0).round() / 1000.0;
    r.is_finite().then_some(if r == 0.0 { 0.0 } else { r })
}

/// The JSON text of one file (rows of one device, as
/// [`super::csv::split`] cuts them).
pub fn render(h: &Header, rows: &[Row]) -> String {
    let period = rows.first().map_or(0, |r| r.period_min);
    let mut records = Vec::new();
    for r in rows {
        let p = i64::from(r.period_min.max(1)) * 60;
        let start = r.t.div_euclid(p) * p;
        let timestamp = rfc3339(start);
        let codes = r.codes.split(',').filter(|c| !c.is_empty());
        for (code, v) in codes.zip(&r.values) {
            records.push(Record {
                value_item_id: format!("{}_{code}", h.local_id),
                timestamp: timestamp.clone(),
                v: v.and_then(value),
                t: (r.t - start) * 1000,
            });
        }
    }
    let file = File {
        gateway_name: h.gateway_name.clone(),
        gateway_sn: h.gateway_sn.clone(),
        gateway_ip_address: h.gateway_ip.clone(),
        gateway_mac_address: h.gateway_mac.clone(),
        device_name: h.device_name.clone(),
        device_local_id: h.local_id.clone(),
        device_type_id: h.type_id.clone(),
        device_type_name: h.type_name.clone(),
        logging_interval: period,
        historical_intervals: rows.len(),
        utc_offset_minutes: h.utc_offset_min,
        records,
    };
    serde_json::to_string_pretty(&file).expect("a file serialises")
}

/// One row read back: (Unix seconds of the sample, measurement codes,
/// values).
pub type ReadRow = (i64, Vec<String>, Vec<Option<f64>>);

/// Reads the rows back from a file made by [`render`]: consecutive records
/// with the same sample time form a row. `None` if the text is not such a
/// file (not JSON, a record without the fields, a bad timestamp, or a
/// `valueItemId` not of the file's device).
pub fn parse_rows(text: &str) -> Option<(File, Vec<ReadRow>)> {
    let file: File = serde_json::from_str(text).ok()?;
    let prefix = format!("{}_", file.device_local_id);
    let mut rows: Vec<ReadRow> = Vec::new();
    for r in &file.records {
        let start = DateTime::parse_from_rfc3339(&r.timestamp).ok()?.timestamp();
        let at = start + r.t.div_euclid(1000);
        let code = r.value_item_id.strip_prefix(&prefix)?.to_string();
        // A new row starts at a new sample time, or when a code comes
        // again at the same time (two rows in the same second cannot be:
        // the log takes one row per RTC second at most).
        match rows.last_mut() {
            Some(row) if row.0 == at && !row.1.contains(&code) => {
                row.1.push(code);
                row.2.push(r.v);
            }
            _ => rows.push((at, vec![code], vec![r.v])),
        }
    }
    Some((file, rows))
}

#[cfg(test)]
mod tests {
    use super::csv::fixtures::{row, values_match};
    use super::*;

    /// The reference's gateway and device at UTC.
    fn header() -> Header {
        super::csv::fixtures::header(0)
    }

    #[test]
    fn records_carry_the_references_fields() {
        // 2023-03-28T08:13:00Z (the reference's example timestamp) with a
        // 1-minute period, and a sample 2 s late (RTC drift): 08:14:02 in
        // the period that starts at 08:14.
        let t0 = DateTime::parse_from_rfc3339("2023-03-28T08:13:00Z")
            .unwrap()
            .timestamp();
        let rows = vec![
            row(t0, 1, vec![Some(230.25), Some(1200.0)]),
            row(t0 + 62, 1, vec![None, Some(0.12345)]),
        ];
        let text = render(&header(), &rows);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let recs = v["records"].as_array().unwrap();
        assert_eq!(recs.len(), 4, "one record per row and measurement");
        for r in recs {
            let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["t", "timestamp", "v", "valueItemId"], "{r}");
        }
        assert_eq!(recs[0]["valueItemId"], "modbus:1_mb_VAN");
        assert_eq!(recs[0]["timestamp"], "2023-03-28T08:13:00Z");
        assert_eq!(recs[0]["v"], 230.25);
        assert_eq!(recs[0]["t"], 0);
        assert_eq!(recs[1]["valueItemId"], "modbus:1_mb_P");
        assert_eq!(recs[2]["timestamp"], "2023-03-28T08:14:00Z");
        assert_eq!(recs[2]["t"], 2000);
        assert!(recs[2]["v"].is_null(), "an invalid value is null");
        assert_eq!(recs[3]["v"], 0.123);
        assert_eq!(v["gatewaySN"], "542206310926");
        assert_eq!(v["deviceLocalId"], "modbus:1_mb");
        assert_eq!(v["loggingInterval"], 1);
        assert_eq!(v["historicalIntervals"], 2);
        let (_, back) = parse_rows(&text).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].0, t0 + 62);
        assert_eq!(back[1].2, vec![None, Some(0.123)]);
    }

    #[test]
    fn the_name_is_the_csv_name_in_json() {
        let at = "2022-11-04T08:48:30.994Z".parse().unwrap();
        let mut h = header();
        h.local_id = "modbus:11_mb".into();
        assert_eq!(
            file_name(&h, at, 0),
            "11_mb_F160 3P 3P+N_20221104084830994.json"
        );
        assert_eq!(
            file_name(&h, at, 1),
            "11_mb_F160 3P 3P+N_20221104084830994_1.json"
        );
    }

    #[test]
    fn not_our_json_is_none() {
        assert!(parse_rows("").is_none());
        assert!(parse_rows("[1,2]").is_none());
        let mut text = render(&header(), &[row(0, 10, vec![Some(1.0), Some(2.0)])]);
        text = text.replace("modbus:1_mb_VAN", "other_VAN");
        assert!(parse_rows(&text).is_none());
    }

    proptest::proptest! {
        /// Every logged row appears once in the JSON files, in order, with
        /// its time, its measurements and its values (to 3 decimals),
        /// whatever the periods, values, drift and gaps.
        #[test]
        fn every_row_appears_once(
            start in 0i64..4_000_000_000,
            steps in proptest::collection::vec(
                (
                    proptest::sample::select(vec![1u32, 5, 10, 15, 30, 60]),
                    0i64..3,
                    -2i64..3,
                    proptest::collection::vec(proptest::option::of(-1.0e9f64..1.0e9), 2),
                ),
                1..60,
            ),
        ) {
            let mut t = start;
            let mut rows = Vec::new();
            for (i, (period, skip, drift, vals)) in steps.iter().enumerate() {
                let p = i64::from(*period) * 60;
                t = (t.div_euclid(p) + 1 + skip) * p;
                let mut r = row(t + drift, *period, vals.clone());
                r.seq = i as u64;
                if i % 7 == 3 {
                    r.codes = "E".into();
                    r.values.truncate(1);
                }
                rows.push(r);
                t += 3;
            }
            let mut back = Vec::new();
            for f in csv::split(&rows) {
                let (file, got) = parse_rows(&render(&header(), f)).unwrap();
                proptest::prop_assert_eq!(file.historical_intervals, f.len());
                proptest::prop_assert_eq!(got.len(), f.len());
                back.extend(got);
            }
            proptest::prop_assert_eq!(back.len(), rows.len());
            for (b, r) in back.iter().zip(&rows) {
                proptest::prop_assert_eq!(b.0, r.t);
                proptest::prop_assert_eq!(b.1.join(","), r.codes.clone());
                values_match(&b.2, &r.values)?;
            }
        }
    }
}
