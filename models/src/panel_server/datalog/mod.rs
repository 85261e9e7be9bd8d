//! The Panel Server as a datalogger: samples its field devices on a logging
//! period, keeps the rows in NV memory and publishes them as CSV files to an
//! HTTPS server (devices.md §1.6; docs/panel-server.md "Data logging and
//! publication").
//!
//! Contract:
//! - Behaviour is plain state driven by the clock: [`Schedule::due`] takes
//!   `now` (virtual time) and returns the sample instants due since the last
//!   call, aligned on the period in site time (a 10-minute period samples at
//!   hh:00, hh:10, ...), and [`Schedule::next`] the next deadline. After a
//!   clock jump the instants of the jump are all sampled (the field devices'
//!   physics answer for any instant), except those older than the retention,
//!   which are counted as dropped without being computed.
//! - A catch-up is written in chunks of [`CHUNK`] instants, each chunk one
//!   atomic NV batch for every logged device ([`store::append`]), with a
//!   yield to the runtime between chunks: a jump of a month costs a few
//!   flushes, not one per row, and other devices keep running.
//! - Each row carries the RTC reading of its instant (rounded to the second)
//!   and an error flag: 0 when every value is valid, 19 when at least one is
//!   invalid (a device not connected has every value invalid).
//! - Retention: [`retention_days`] (1 month on PAS400/PAS600, 3 months on
//!   PAS800); older rows are dropped, oldest first; dropped unpublished rows
//!   are counted, reported in the device details and as a `datalog` event.
//! - Publication (HTTPS, [`https`]) runs a period (default 60 min) after the
//!   end of the previous one (and one period after boot): the devices'
//!   unpublished rows cut by [`csv::split`], oldest files first, at most
//!   [`csv::MAX_FILES`] files ([`csv::plan`]); each file accepted by the server moves that
//!   device's publication pointer past its rows, so a file is never sent
//!   twice and a failure leaves the rest for the next publication, in order.
//! - A power cut during an upload: the file in flight is recorded in NV
//!   memory before it is sent ([`InFlight`]); the next publication sends it
//!   again first, same rows, same name, same content, so a server that keeps
//!   files by name holds each row once.
//! - Logging stops while the device is off (no rows for that time); what was
//!   logged and not published survives in NV memory and is published later.
//!   A boot at an instant whose row was already taken (same RTC second)
//!   does not take it again.
//! - Files are CSV ([`csv`]) or JSON ([`json`]), a property of the
//!   publication ([`file`]), whatever carries them.
//! - The configuration in force is a [`Setup`] in NV memory
//!   ([`SETUP_KEY`]): the site file's at the first boot, none after a
//!   factory reset, then what the Data logging page or `PUT /api/datalog`
//!   saved ([`super::node::Node::set_datalog`] restarts logging with it).
//!   A change of period, devices or measurements keeps every logged row:
//!   rows keep the period and measurement set they were taken with (files
//!   are cut where those change), no instant is sampled twice, and a
//!   device no longer logged keeps its unpublished rows, which are still
//!   published.
//! - A server certificate that is not the pinned one stops publication
//!   ([`STOPPED_KEY`], an audit entry "publication stopped", a `datalog`
//!   event); logging goes on and the rows wait until the publication is
//!   reconfigured.

pub mod csv;
pub mod file;
pub mod https;
pub mod json;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use fieldtwin_emulator::site::{
    DatalogConfig, Model, PublicationConfig, PublicationFormat, parse_https_url, parse_pin,
};
use fieldtwin_emulator::storage::{Nv, StorageError};
use serde::{Deserialize, Serialize};

use super::node::Node;
use crate::field::{FieldDevice, Measure};
use store::{ERROR_INVALID, ERROR_OK, Ring, Row};

/// Instants written per NV batch during a catch-up.
pub const CHUNK: usize = 500;
/// NV key of the file being uploaded (see [`InFlight`]).
pub const INFLIGHT_KEY: &str = "pslog/inflight";

/// The file being uploaded, written before the upload and removed once the
/// server accepted it: after a power cut in between, the next publication
/// sends the same rows under the same name first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub device: String,
    pub from: u64,
    pub to: u64,
    pub name: String,
    /// The file's format (a change of format does not change a resend).
    #[serde(default)]
    pub format: PublicationFormat,
}

/// NV key of the logging and publication configuration in force.
pub const SETUP_KEY: &str = "pslog/setup";
/// NV key of the reason publication stopped (a pinned certificate that
/// changed); removed when the publication is reconfigured.
pub const STOPPED_KEY: &str = "pslog/stopped";

/// The logging and publication configuration in force (NV memory).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    /// `None`: nothing is logged.
    pub logging: Option<DatalogConfig>,
    /// `None`: nothing is published (method "none").
    pub publication: Option<PublicationConfig>,
}

/// The configuration in force: NV memory's, else (first boot) the site
/// file's, or none after a factory reset (`after_reset`). Stored.
pub fn load_setup(nv: &Nv, site: Setup, after_reset: bool) -> Result<Setup, StorageError> {
    if let Some(s) = nv.get::<Setup>(SETUP_KEY)? {
        return Ok(s);
    }
    let s = if after_reset { Setup::default() } else { site };
    nv.put(SETUP_KEY, &s)?;
    Ok(s)
}

/// The stored configuration (none if never stored).
pub fn setup(nv: &Nv) -> Setup {
    nv.get(SETUP_KEY).ok().flatten().unwrap_or_default()
}

/// The HTTPS target of a publication: URL, and the CA (PEM inline or
/// file) or the pin.
pub fn target(p: &PublicationConfig) -> Result<https::Target, String> {
    let (ip, port, path) = parse_https_url(&p.url)?;
    let addr = (ip, port).into();
    if let Some(pin) = &p.pin_sha256 {
        return https::Target::pinned(addr, path, p.field.clone(), parse_pin(pin)?);
    }
    let pem = match (&p.ca_pem, &p.ca_file) {
        (Some(pem), _) => pem.clone().into_bytes(),
        (None, Some(f)) => {
            std::fs::read(f).map_err(|e| format!("cannot read the CA file {}: {e}", f.display()))?
        }
        (None, None) => {
            return Err("no CA certificate and no pin to verify the server with".into());
        }
    };
    https::Target::new(addr, path, p.field.clone(), &pem)
}

/// Least virtual time between two audit entries of rows lost to retention.
const AUDIT_DROPS_EVERY: Duration = Duration::from_secs(86_400);

/// Pending rows read per device for one publication (the rest waits).
pub const MAX_ROWS_READ: usize = 20_000;
/// NV key of the publication statistics.
pub const STATS_KEY: &str = "pslog/stats";

/// Days of rows kept: 1 month on Entry/Universal, 3 months on Advanced.
pub fn retention_days(model: Model) -> u64 {
    if model.name().starts_with("PAS800") {
        92
    } else {
        31
    }
}

/// Row slots per device: the retention at the shortest period (1 minute).
pub fn slots(model: Model) -> u64 {
    retention_days(model) * 1440 + 1
}

/// When to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    period_s: u64,
    /// Site time (Unix seconds) at virtual time 0.
    epoch_s: f64,
    next: Duration,
}

/// What [`Schedule::due`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Due {
    /// Instants (virtual time) to sample, oldest first.
    pub instants: Vec<Duration>,
    /// Instants before those, older than the retention: not sampled.
    pub skipped: u64,
}

impl Schedule {
    /// A schedule whose first sample is the first period boundary at or
    /// after `now`.
    pub fn new(epoch_s: f64, period_min: u32, now: Duration) -> Self {
        let period_s = u64::from(period_min.max(1)) * 60;
        let site = epoch_s + now.as_secs_f64();
        let boundary = (site / period_s as f64).ceil() * period_s as f64;
        Self {
            period_s,
            epoch_s,
            next: Duration::from_secs_f64((boundary - epoch_s).max(0.0)),
        }
    }

    /// The next sample instant.
    pub fn next(&self) -> Duration {
        self.next
    }

    /// The instants due at `now`; at most `keep` of them are returned (the
    /// newest), the older ones counted in [`Due::skipped`].
    pub fn due(&mut self, now: Duration, keep: u64) -> Due {
        if now < self.next {
            return Due::default();
        }
        let period = Duration::from_secs(self.period_s);
        let n = (now - self.next).as_secs() / self.period_s + 1;
        let skipped = n.saturating_sub(keep);
        let first = self.next + period * (skipped as u32);
        let instants = (0..n - skipped)
            .map(|i| first + period * (i as u32))
            .collect();
        self.next += period * (n as u32);
        Due { instants, skipped }
    }
}

/// One logged field device.
pub struct Logged {
    pub device: Arc<FieldDevice>,
    pub measures: Vec<Measure>,
    pub header: csv::Header,
    /// Sampled now; `false`: no longer logged, only its unpublished rows
    /// are published.
    pub sampled: bool,
}

impl Logged {
    /// The row of this device at virtual time `t`, stamped `rtc_s`.
    pub fn sample(&self, t: Duration, rtc_s: i64, period_min: u32) -> Row {
        let all = self.device.measure(t.as_secs_f64());
        let values: Vec<Option<f64>> = self
            .measures
            .iter()
            .map(|m| {
                all.as_ref()
                    .and_then(|a| a.iter().find(|(x, _)| x == m))
                    .and_then(|(_, v)| *v)
            })
            .collect();
        Row {
            seq: 0,
            t: rtc_s,
            period_min,
            error: if all.is_some() && values.iter().all(Option::is_some) {
                ERROR_OK
            } else {
                ERROR_INVALID
            },
            codes: self
                .measures
                .iter()
                .map(|m| m.code())
                .collect::<Vec<_>>()
                .join(","),
            values,
        }
    }
}

/// Publication statistics kept in NV memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Publications that ended with every pending file accepted.
    pub publications: u64,
    /// Publications that stopped on an error.
    pub failures: u64,
    pub files: u64,
    pub rows_published: u64,
    pub last_error: Option<String>,
}

/// The datalog part of the device details: per device its counters, and
/// the statistics.
pub fn details(nv: &Nv, devices: &[String]) -> serde_json::Value {
    let mut per = serde_json::Map::new();
    for d in devices {
        let c: store::Counters = nv
            .get(&format!("pslog/{d}/counters"))
            .ok()
            .flatten()
            .unwrap_or_default();
        per.insert(d.clone(), serde_json::to_value(c).unwrap_or_default());
    }
    let stats: Stats = nv.get(STATS_KEY).ok().flatten().unwrap_or_default();
    let stopped: Option<String> = nv.get(STOPPED_KEY).ok().flatten();
    serde_json::json!({ "devices": per, "stats": stats, "stopped": stopped })
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The task that logs (and publishes, if configured) for this boot, if
/// anything is to be logged or published.
pub fn start(
    node: &Arc<Node>,
    cfg: &DatalogConfig,
    publication: Option<&PublicationConfig>,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static + use<>> {
    let ps = &node.ps;
    let fields = ps.fields.get()?;
    let eth1 = node.ctx.interface("eth1");
    let ip = eth1
        .as_ref()
        .map(|s| s.ipv4().to_string())
        .unwrap_or_default();
    let mac = eth1
        .as_ref()
        .and_then(|s| s.mac())
        .unwrap_or_else(|| fieldtwin_emulator::net::smol::mac_from_seed(node.ctx.seed));
    let wanted: Option<Vec<Measure>> = cfg
        .measurements
        .as_ref()
        .map(|v| v.iter().filter_map(|c| Measure::parse(c)).collect());
    let logged: Vec<Logged> = fields
        .line
        .slaves
        .iter()
        .map(|d| (d, format!("modbus:{}_mb", d.unit)))
        .chain(
            fields
                .wireless
                .iter()
                .map(|d| (d, format!("wireless:{}_wl", d.unit))),
        )
        .map(|(d, local_id)| Logged {
            measures: Measure::of(d.kind)
                .iter()
                .copied()
                .filter(|m| wanted.as_ref().is_none_or(|w| w.contains(m)))
                .collect(),
            sampled: cfg.devices.as_ref().is_none_or(|v| v.contains(&d.id)),
            header: csv::Header {
                gateway_name: ps.identity.product_model.clone(),
                gateway_sn: ps.identity.serial.clone(),
                gateway_ip: ip.clone(),
                gateway_mac: mac_text(mac),
                device_name: d.id.clone(),
                local_id,
                type_id: d.model.clone(),
                type_name: d.model.clone(),
                utc_offset_min: 0,
            },
            device: d.clone(),
        })
        .map(|mut l| {
            // A device that has none of the chosen measurements is not
            // sampled.
            l.sampled &= !l.measures.is_empty();
            l
        })
        // One not sampled stays for its unpublished rows, if it has any.
        .filter(|l| {
            l.sampled
                || node
                    .ctx
                    .nv
                    .get::<store::Counters>(&format!("pslog/{}/counters", l.device.id))
                    .ok()
                    .flatten()
                    .is_some_and(|c| c.head > c.published)
        })
        .collect();
    if logged.is_empty() {
        return None;
    }
    let target = match publication.map(|p| -> Result<_, String> {
        let t = target(p)?;
        Ok((
            t,
            Duration::from_secs(u64::from(p.period_min) * 60),
            p.format,
        ))
    }) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            node.ctx
                .emit("datalog", format!("publication not started: {e}"));
            None
        }
        None => None,
    };
    let n = node.clone();
    let period_min = cfg.period_min;
    // The schedule starts now, not when the task first runs: a clock jump
    // in between is caught up like any other.
    let started = node.ctx.clock.now();
    Some(async move {
        if let Err(e) = run(n.clone(), logged, period_min, target, started).await {
            n.ctx.emit("datalog", format!("logging stopped: {e}"));
        }
    })
}

/// Where and how to publish: target, period, file format.
type Publishing = (https::Target, Duration, PublicationFormat);

async fn run(
    node: Arc<Node>,
    logged: Vec<Logged>,
    period_min: u32,
    target: Option<Publishing>,
    started: Duration,
) -> Result<(), StorageError> {
    let ctx = &node.ctx;
    let clock = ctx.clock.clone();
    let model = node.ps.model;
    let slots = slots(model);
    let retention_s = retention_days(model) * 86_400;
    let keep = retention_s / (u64::from(period_min) * 60);
    let mut rings: Vec<Ring> = logged
        .iter()
        .map(|l| Ring::open(ctx.nv.clone(), &l.device.id, slots))
        .collect::<Result<_, _>>()?;
    // A boot at an instant already sampled before the power cut (same
    // RTC second) does not sample it again.
    let mut last_t = i64::MIN;
    for r in &rings {
        if let Some(row) = r.get(r.c.head.wrapping_sub(1))? {
            last_t = last_t.max(row.t);
        }
    }
    let epoch_s = clock.epoch().timestamp_millis() as f64 / 1000.0;
    let mut schedule = Schedule::new(epoch_s, period_min, started);
    let mut next_publication = target.as_ref().map(|(_, p, _)| started + *p);
    let mut stats: Stats = ctx.nv.get(STATS_KEY)?.unwrap_or_default();
    let mut last_drop_audit: Option<Duration> = None;
    loop {
        let now = clock.now();
        let due = schedule.due(now, keep);
        let mut skipped = due.skipped;
        for chunk in due.instants.chunks(CHUNK) {
            let mut batches: Vec<Vec<Row>> = vec![Vec::with_capacity(chunk.len()); logged.len()];
            for &t in chunk {
                let rtc = ctx.rtc.read_at(clock.utc_at(t));
                let rtc_s = (rtc.timestamp_millis() + 500).div_euclid(1000);
                if rtc_s <= last_t {
                    continue;
                }
                for (i, l) in logged.iter().enumerate().filter(|(_, l)| l.sampled) {
                    batches[i].push(l.sample(t, rtc_s, period_min));
                }
            }
            let cutoff = ctx.rtc.now().timestamp() - retention_s as i64;
            let skips = vec![skipped; logged.len()];
            let done = store::append(&mut rings, &mut batches, &skips, cutoff)?;
            skipped = 0;
            if done.dropped > 0 {
                let text = format!(
                    "{} unpublished rows older than the retention ({} days) dropped",
                    done.dropped,
                    retention_days(model)
                );
                // The audit log records a loss at most once a day (the
                // event and the `dropped` counters record every one).
                if last_drop_audit.is_none_or(|t| now >= t + AUDIT_DROPS_EVERY) {
                    last_drop_audit = Some(now);
                    node.audit(crate::security::audit::Kind::DataLogOverflow, text.clone());
                }
                ctx.emit("datalog", text);
            }
            tokio::task::yield_now().await;
        }
        // `now` as sampled above: a publication holds every row up to its
        // instant, however far a clock jump went meanwhile.
        if let (Some((t, period, format)), Some(at)) = (&target, next_publication)
            && now >= at
        {
            // A pinned certificate that changed stops publication until
            // it is reconfigured; the rows wait.
            if ctx.nv.get::<String>(STOPPED_KEY)?.is_none() {
                publish(&node, &logged, &mut rings, t, *format, &mut stats).await?;
                ctx.nv.put(STATS_KEY, &stats)?;
            }
            next_publication = Some(clock.now() + *period);
        }
        let wake = next_publication.map_or(schedule.next(), |p| p.min(schedule.next()));
        clock.sleep_until(wake).await;
    }
}

/// One publication: every device's pending rows, file by file.
async fn publish(
    node: &Arc<Node>,
    logged: &[Logged],
    rings: &mut [Ring],
    target: &https::Target,
    format: PublicationFormat,
    stats: &mut Stats,
) -> Result<(), StorageError> {
    let ctx = &node.ctx;
    // A failed upload: counted; a pin mismatch also stops publication.
    let failed = |stats: &mut Stats, e: &https::UploadError, what: String| {
        stats.failures += 1;
        stats.last_error = Some(e.to_string());
        if let https::UploadError::PinMismatch(..) = e {
            let reason = e.to_string();
            let _ = ctx.nv.put(STOPPED_KEY, &reason);
            node.audit(
                crate::security::audit::Kind::PublicationStopped,
                format!("HTTPS publication stopped: {reason}"),
            );
            ctx.emit("datalog", format!("publication stopped: {reason}"));
        } else {
            ctx.emit("datalog", what);
        }
    };
    let Some(stack) = ctx.interface("eth1") else {
        return Ok(());
    };
    let at = ctx.rtc.now();
    let mut names: std::collections::BTreeMap<String, usize> = Default::default();
    let mut files = 0;
    let mut rows = 0;
    // A file whose upload a power cut interrupted goes again first, with
    // its name and content unchanged (the server may already hold it).
    if let Some(f) = ctx.nv.get::<InFlight>(INFLIGHT_KEY)? {
        let i = logged.iter().position(|l| l.device.id == f.device);
        if let Some(i) = i
            && rings[i].c.published == f.from
            && f.to >= f.from
        {
            let part = rings[i].rows(f.from, (f.to - f.from + 1) as usize)?;
            if part.len() as u64 == f.to - f.from + 1 {
                let bytes = file::render(f.format, &logged[i].header, &part);
                if let Err(e) = https::upload(stack.as_ref(), target, &f.name, &bytes).await {
                    let what = format!(
                        "publication failed resending {}: {}; the rows wait",
                        f.name,
                        e.reason()
                    );
                    failed(stats, &e, what);
                    return Ok(());
                }
                rings[i].mark_published(f.to + 1)?;
                files += 1;
                rows += part.len() as u64;
            }
        }
        ctx.nv.remove(INFLIGHT_KEY)?;
    }
    let pending: Vec<Vec<Row>> = rings
        .iter()
        .map(|r| r.rows(r.c.published, MAX_ROWS_READ))
        .collect::<Result<_, _>>()?;
    for (i, part) in csv::plan(&pending) {
        let l = &logged[i];
        let base = file::name(format, &l.header, at, 0);
        let n = names.entry(base).or_insert(0);
        let name = file::name(format, &l.header, at, *n);
        *n += 1;
        let bytes = file::render(format, &l.header, part);
        let (from, to) = (
            part.first().map_or(0, |r| r.seq),
            part.last().map_or(0, |r| r.seq),
        );
        ctx.nv.put(
            INFLIGHT_KEY,
            &InFlight {
                device: l.device.id.clone(),
                from,
                to,
                name: name.clone(),
                format,
            },
        )?;
        if let Err(e) = https::upload(stack.as_ref(), target, &name, &bytes).await {
            let what = format!(
                "publication failed after {files} files: {}; the rows wait",
                e.reason()
            );
            failed(stats, &e, what);
            return Ok(());
        }
        rings[i].mark_published(to + 1)?;
        ctx.nv.remove(INFLIGHT_KEY)?;
        files += 1;
        rows += part.len() as u64;
    }
    stats.publications += 1;
    stats.files += files as u64;
    stats.rows_published += rows;
    stats.last_error = None;
    ctx.emit(
        "datalog",
        format!("publication: {files} files, {rows} rows"),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn samples_fall_on_period_boundaries_of_site_time() {
        // Site time 00:03:20 at virtual 0.
        let epoch = 1_767_225_600.0 + 200.0;
        let mut s = Schedule::new(epoch, 10, Duration::ZERO);
        assert_eq!(s.next(), Duration::from_secs(400));
        assert!(s.due(Duration::from_secs(399), 100).instants.is_empty());
        let d = s.due(Duration::from_secs(400), 100);
        assert_eq!(d.instants, [Duration::from_secs(400)]);
        assert_eq!(s.next(), Duration::from_secs(400) + 10 * MIN);
    }

    #[test]
    fn a_jump_yields_every_instant_once_in_order() {
        let mut s = Schedule::new(0.0, 10, Duration::ZERO);
        let mut all = s.due(Duration::ZERO, 1000).instants;
        all.extend(s.due(Duration::from_secs(3600 * 24), 1000).instants);
        all.extend(s.due(Duration::from_secs(3600 * 24 + 1), 1000).instants);
        assert_eq!(all.len(), 24 * 6 + 1);
        assert!(all.windows(2).all(|w| w[1] - w[0] == 10 * MIN));
    }

    #[test]
    fn a_jump_longer_than_the_retention_skips_the_oldest() {
        let mut s = Schedule::new(0.0, 60, Duration::from_secs(1));
        let d = s.due(Duration::from_secs(3600 * 100), 24);
        assert_eq!(d.instants.len(), 24);
        assert_eq!(d.skipped, 100 - 24);
        assert_eq!(d.instants[23], Duration::from_secs(3600 * 100));
        assert_eq!(s.next(), Duration::from_secs(3600 * 101));
    }

    #[test]
    fn retention_by_model() {
        assert_eq!(retention_days(Model::PAS400), 31);
        assert_eq!(retention_days(Model::PAS600L), 31);
        assert_eq!(retention_days(Model::PAS800), 92);
    }
}
