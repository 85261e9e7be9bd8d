//! Publication files in the Panel Server's CSV layout (devices.md §1.6),
//! as pure functions.
//!
//! Contract:
//! - [`file_name`]: `ReducedID_DeviceName_YYYYMMDDhhmmssSSS[_n].csv`, the
//!   time being the publication's (RTC), `_n` (n = 1, 2, ...) for the
//!   second and later files of one publication that would get the same
//!   name; characters a file name cannot hold (`\ / : * ? " < > |` and
//!   control characters) become `~`.
//! - [`split`]: the rows of one device cut into files: one sampling period,
//!   one measurement set and at most one (UTC) day per file, rows in order.
//! - [`render`]: the file. Row 1 the gateway/device headings, row 2 their
//!   values (Logging Interval in minutes, Historical Intervals = the number
//!   of data rows), a blank row, row 4 `,,,Topic ID1,...`, row 5 the topic
//!   ids in quotes, a blank row, row 7 `Error,UTC Offset (minutes),Local
//!   Time Stamp,<heading (unit)>...`, then one line per row: error flag
//!   (0 OK, 19 at least one value invalid), UTC offset, local time
//!   `YYYY-MM-DD hh:mm:ss`, values (empty when invalid). Lines end in CRLF,
//!   UTF-8. A field holding a comma, a quote or a line break is quoted.
//! - [`MAX_FILES`] files at most per publication.

use chrono::{DateTime, Utc};

use super::store::Row;
use crate::field::Measure;

/// Most files in one publication.
pub const MAX_FILES: usize = 200;

/// Who logged the rows and about which device.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub gateway_name: String,
    pub gateway_sn: String,
    pub gateway_ip: String,
    pub gateway_mac: String,
    pub device_name: String,
    /// e.g. `modbus:1_mb`.
    pub local_id: String,
    pub type_id: String,
    pub type_name: String,
    /// Minutes east of UTC of the local time stamps.
    pub utc_offset_min: i32,
}

impl Header {
    /// The reduced id of the file name: the local id without its protocol.
    pub fn reduced_id(&self) -> &str {
        self.local_id
            .split_once(':')
            .map_or(self.local_id.as_str(), |(_, r)| r)
    }
}

/// `s` with the characters a file name cannot hold replaced by `~`.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\\' | '/' | ':' | '*' | '?' | '"' | '<' | '>' | '|') {
                '~'
            } else {
                c
            }
        })
        .collect()
}

/// The file name; `n` = 0 for the first file of that name in a publication.
pub fn file_name(h: &Header, at: DateTime<Utc>, n: usize) -> String {
    let suffix = if n == 0 {
        String::new()
    } else {
        format!("_{n}")
    };
    sanitize(&format!(
        "{}_{}_{}{suffix}.csv",
        h.reduced_id(),
        h.device_name,
        at.format("%Y%m%d%H%M%S%3f")
    ))
}

fn day(t: i64) -> i64 {
    t.div_euclid(86_400)
}

/// Cuts `rows` (one device, in order) into files: a new file starts where
/// the period, the measurement set or the UTC day changes.
pub fn split(rows: &[Row]) -> Vec<&[Row]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=rows.len() {
        let cut = i == rows.len() || {
            let (a, b) = (&rows[i - 1], &rows[i]);
            a.period_min != b.period_min || a.codes != b.codes || day(a.t) != day(b.t)
        };
        if cut && i > start {
            out.push(&rows[start..i]);
            start = i;
        }
    }
    out
}

/// The files of one publication: every device's pending rows (`pending[i]`
/// for device `i`, in order) cut by [`split`], oldest first across devices
/// (by the first row's time, then device), at most [`MAX_FILES`]. Each
/// device's files come in its order and without a hole: a file is planned
/// only if the device's earlier files are.
pub fn plan(pending: &[Vec<Row>]) -> Vec<(usize, &[Row])> {
    let mut files: Vec<(usize, &[Row])> = pending
        .iter()
        .enumerate()
        .flat_map(|(i, rows)| split(rows).into_iter().map(move |f| (i, f)))
        .collect();
    files.sort_by_key(|(i, f)| (f.first().map_or(i64::MIN, |r| r.t), *i));
    files.truncate(MAX_FILES);
    files
}

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A value as the file shows it (at most 3 decimals, no trailing zeros).
pub fn value(v: f64) -> String {
    let r = (v * 1000.0).round() / 1000.0;
    let r = if r == 0.0 { 0.0 } else { r };
    format!("{r}")
}

/// The CSV text of one file (rows of one device, as [`split`] cuts them).
pub fn render(h: &Header, rows: &[Row]) -> String {
    let period = rows.first().map_or(0, |r| r.period_min);
    let codes: Vec<&str> = rows
        .first()
        .map(|r| r.codes.split(',').filter(|c| !c.is_empty()).collect())
        .unwrap_or_default();
    let mut out = String::new();
    let mut line = |fields: Vec<String>| {
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    };
    line(
        [
            "Gateway Name",
            "Gateway SN",
            "Gateway IP Address",
            "Gateway MAC Address",
            "Device Name",
            "Device Local ID",
            "Device Type ID",
            "Device Type Name",
            "Logging Interval",
            "Historical Intervals",
        ]
        .map(String::from)
        .to_vec(),
    );
    line(vec![
        field(&h.gateway_name),
        field(&h.gateway_sn),
        field(&h.gateway_ip),
        field(&h.gateway_mac),
        field(&h.device_name),
        field(&h.local_id),
        field(&h.type_id),
        field(&h.type_name),
        period.to_string(),
        rows.len().to_string(),
    ]);
    line(vec![]);
    let lead = || vec![String::new(); 3];
    let mut ids = lead();
    let mut topics = lead();
    let mut headings = vec![
        "Error".to_string(),
        "UTC Offset (minutes)".to_string(),
        "Local Time Stamp".to_string(),
    ];
    for (i, c) in codes.iter().enumerate() {
        ids.push(format!("Topic ID{}", i + 1));
        topics.push(format!(
            "\"{}\"",
            format!("{}_{c}", h.local_id).replace('"', "\"\"")
        ));
        headings.push(field(Measure::parse(c).map_or(*c, |m| m.heading())));
    }
    line(ids);
    line(topics);
    line(vec![]);
    line(headings);
    let offset = chrono::Duration::minutes(i64::from(h.utc_offset_min));
    for r in rows {
        let local = DateTime::<Utc>::from_timestamp(r.t, 0).unwrap_or_default() + offset;
        let mut f = vec![
            r.error.to_string(),
            h.utc_offset_min.to_string(),
            local.format("%Y-%m-%d %H:%M:%S").to_string(),
        ];
        f.extend(r.values.iter().map(|v| v.map(value).unwrap_or_default()));
        line(f);
    }
    out
}

/// A parsed data line of a file: (error, UTC offset, local time, values).
pub type DataLine = (u8, i32, String, Vec<Option<f64>>);

/// Reads the data lines back from a file made by [`render`] (for tests and
/// for checking a receiver's copy); `None` if the layout is not ours.
pub fn parse_data(text: &str) -> Option<Vec<DataLine>> {
    let lines: Vec<&str> = text.split("\r\n").collect();
    if lines.len() < 7 || !lines[6].starts_with("Error,UTC Offset (minutes),Local Time Stamp") {
        return None;
    }
    lines[7..]
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            if f.len() < 3 {
                return None;
            }
            Some((
                f[0].parse().ok()?,
                f[1].parse().ok()?,
                f[2].to_string(),
                f[3..].iter().map(|v| v.parse().ok()).collect(),
            ))
        })
        .collect()
}

/// Rows and a header for the tests of the file layouts (CSV and JSON).
#[cfg(test)]
pub(super) mod fixtures {
    use super::super::store::{ERROR_INVALID, ERROR_OK};
    use super::*;

    /// The reference's gateway and device, local time at `utc_offset_min`.
    pub fn header(utc_offset_min: i32) -> Header {
        Header {
            gateway_name: "EcoStruxure Panel Server".into(),
            gateway_sn: "542206310926".into(),
            gateway_ip: "10.195.253.81".into(),
            gateway_mac: "00:00:54:E5:8A:36".into(),
            device_name: "F160 3P 3P+N".into(),
            local_id: "modbus:1_mb".into(),
            type_id: "F160 3P 3P+N".into(),
            type_name: "F160 3P 3P+N".into(),
            utc_offset_min,
        }
    }

    /// A row of `VAN,P` at `t`, flagged invalid if a value is missing.
    pub fn row(t: i64, period: u32, values: Vec<Option<f64>>) -> Row {
        Row {
            seq: 0,
            t,
            period_min: period,
            error: if values.iter().all(Option::is_some) {
                ERROR_OK
            } else {
                ERROR_INVALID
            },
            codes: "VAN,P".into(),
            values,
        }
    }

    /// Values read back from a file are the logged ones: the same ones
    /// missing, the others to the file's 3 decimals.
    pub fn values_match(
        got: &[Option<f64>],
        logged: &[Option<f64>],
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        for (x, y) in got.iter().zip(logged) {
            proptest::prop_assert_eq!(x.is_some(), y.is_some());
            if let (Some(x), Some(y)) = (x, y) {
                proptest::prop_assert!((x - y).abs() <= 0.0005 + y.abs() * 1e-12);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::fixtures::{row, values_match};

    /// The reference's gateway and device at UTC-5.
    fn header() -> Header {
        super::fixtures::header(-300)
    }

    #[test]
    fn file_name_follows_the_reference_example() {
        let mut h = header();
        h.local_id = "modbus:11_mb".into();
        let at = "2022-11-04T08:48:30.994Z".parse().unwrap();
        assert_eq!(
            file_name(&h, at, 0),
            "11_mb_F160 3P 3P+N_20221104084830994.csv"
        );
        assert_eq!(
            file_name(&h, at, 2),
            "11_mb_F160 3P 3P+N_20221104084830994_2.csv"
        );
        h.device_name = "a/b:c*d?\"e<f>g|h\\".into();
        assert_eq!(
            file_name(&h, at, 0),
            "11_mb_a~b~c~d~~e~f~g~h~_20221104084830994.csv"
        );
    }

    #[test]
    fn layout_matches_the_reference_rows() {
        // 2008-10-09 19:15:00 UTC is 14:15:00 at UTC-5 (the reference row 8).
        let t0 = DateTime::parse_from_rfc3339("2008-10-09T19:15:00Z")
            .unwrap()
            .timestamp();
        let rows: Vec<Row> = (0..7)
            .map(|i| row(t0 + i * 300, 5, vec![Some(230.25), Some(1200.0)]))
            .collect();
        let text = render(&header(), &rows);
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "Gateway Name,Gateway SN,Gateway IP Address,Gateway MAC Address,Device Name,Device Local ID,Device Type ID,Device Type Name,Logging Interval,Historical Intervals"
        );
        assert_eq!(
            lines[1],
            "EcoStruxure Panel Server,542206310926,10.195.253.81,00:00:54:E5:8A:36,F160 3P 3P+N,modbus:1_mb,F160 3P 3P+N,F160 3P 3P+N,5,7"
        );
        assert_eq!(lines[2], "");
        assert_eq!(lines[3], ",,,Topic ID1,Topic ID2");
        assert_eq!(lines[4], ",,,\"modbus:1_mb_VAN\",\"modbus:1_mb_P\"");
        assert_eq!(lines[5], "");
        assert_eq!(
            lines[6],
            "Error,UTC Offset (minutes),Local Time Stamp,RmsVoltagePhsAN (V),ActivePower (W)"
        );
        assert_eq!(lines[7], "0,-300,2008-10-09 14:15:00,230.25,1200");
        assert_eq!(lines[13], "0,-300,2008-10-09 14:45:00,230.25,1200");
        assert_eq!(lines.len(), 15, "7 data lines and a final CRLF");
        let back = parse_data(&text).unwrap();
        assert_eq!(back.len(), 7);
        assert_eq!(back[0].3, vec![Some(230.25), Some(1200.0)]);
    }

    #[test]
    fn an_invalid_value_is_empty_and_flags_the_row() {
        let text = render(&header(), &[row(0, 10, vec![None, Some(5.0)])]);
        let last = text.split("\r\n").nth(7).unwrap();
        assert_eq!(last, "19,-300,1969-12-31 19:00:00,,5");
        let back = parse_data(&text).unwrap();
        assert_eq!(back[0].0, 19);
        assert_eq!(back[0].3, vec![None, Some(5.0)]);
    }

    #[test]
    fn files_hold_one_period_one_set_and_one_day() {
        let day = 86_400;
        let mut rows: Vec<Row> = (0..6)
            .map(|i| row(day - 1800 + i * 600, 10, vec![Some(1.0), Some(2.0)]))
            .collect();
        // Period change at the end.
        rows.push(row(day + 3000, 5, vec![Some(1.0), Some(2.0)]));
        let files = split(&rows);
        let sizes: Vec<usize> = files.iter().map(|f| f.len()).collect();
        assert_eq!(sizes, [3, 3, 1]);
        let mut other = rows[1].clone();
        other.codes = "VAN".into();
        other.values.pop();
        let rows2 = vec![rows[0].clone(), other, rows[2].clone()];
        assert_eq!(split(&rows2).len(), 3);
        assert!(split(&[]).is_empty());
    }

    #[test]
    fn a_publication_takes_the_oldest_200_files_in_each_devices_order() {
        let days = |n: i64| -> Vec<Row> {
            (0..n)
                .map(|d| {
                    let mut r = row(d * 86_400 + 600, 10, vec![Some(1.0), Some(2.0)]);
                    r.seq = d as u64;
                    r
                })
                .collect()
        };
        // Device 0: 150 days pending, device 1: 90 days, device 2: nothing.
        let pending = vec![days(150), days(90), vec![]];
        let p = plan(&pending);
        assert_eq!(p.len(), MAX_FILES);
        let of = |dev: usize| -> Vec<u64> {
            p.iter()
                .filter(|(i, _)| *i == dev)
                .map(|(_, f)| f[0].seq)
                .collect()
        };
        // Oldest first across devices: 90 days of device 1 and the first
        // 110 of device 0, each in order from its first pending row.
        assert_eq!(of(1), (0..90).collect::<Vec<_>>());
        assert_eq!(of(0), (0..110).collect::<Vec<_>>());
        assert!(of(2).is_empty());
        assert!(p.windows(2).all(|w| w[0].1[0].t <= w[1].1[0].t));
        assert_eq!(plan(&[days(3)]).len(), 3);
    }

    proptest::proptest! {
        /// Whatever the rows, the file reads back with every row, its flag,
        /// its time and its values (to 3 decimals), and the split keeps
        /// every row once, in order.
        #[test]
        fn files_read_back_exactly(
            start in 0i64..4_000_000_000,
            vals in proptest::collection::vec(
                proptest::collection::vec(proptest::option::of(-1.0e9f64..1.0e9), 2),
                1..50,
            ),
            name in "\\PC{0,20}",
        ) {
            let mut h = header();
            h.device_name = name;
            let rows: Vec<Row> = vals
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let mut r = row(start + i as i64 * 3600, 60, v.clone());
                    r.seq = i as u64;
                    r
                })
                .collect();
            let files = split(&rows);
            let seqs: Vec<u64> = files.iter().flat_map(|f| f.iter().map(|r| r.seq)).collect();
            proptest::prop_assert_eq!(seqs, (0..rows.len() as u64).collect::<Vec<_>>());
            for f in files {
                let back = parse_data(&render(&h, f)).unwrap();
                proptest::prop_assert_eq!(back.len(), f.len());
                for (b, r) in back.iter().zip(f) {
                    proptest::prop_assert_eq!(b.0, r.error);
                    values_match(&b.3, &r.values)?;
                }
            }
            let n = file_name(&h, DateTime::<Utc>::from_timestamp(start, 0).unwrap(), 0);
            proptest::prop_assert!(!n.contains(['/', '\\', ':', '*', '?', '"', '<', '>', '|']));
        }
    }

    #[test]
    fn values_are_short() {
        assert_eq!(value(230.0), "230");
        assert_eq!(value(0.12345), "0.123");
        assert_eq!(value(-0.0001), "0");
        assert_eq!(value(1234567.5), "1234567.5");
    }
}
