//! `fieldtwin bench soak --devices N --minutes M`: N Panel Servers in TAP
//! mode polled for M minutes, a rotating slice of the devices every second
//! over Modbus TCP and HTTPS, from a client inside the bench's namespace.
//!
//! Contract:
//! - The site is the generated one of `bench scale`; the soak starts once
//!   every device answers Modbus (the `bench probe` child).
//! - Every second the `bench soak-load` child picks the next `--percent` of
//!   the devices (at least one; the slice rotates, so every device is polled
//!   in turn) and, for each, reads 10 holding registers of unit 255 and
//!   GETs `/` over HTTPS (one connection per request, any certificate:
//!   the devices' are self-signed). A Modbus exception, an HTTP status of
//!   500 or more, a failed connection or handshake, or no answer within
//!   10 s is an error.
//! - Reports requests, errors (with the first few messages), p50/p99/max
//!   latency per protocol (HTTPS split into each device's first contact,
//!   which creates its certificate, and later requests), and the site
//!   process's RSS, open file descriptors and threads at the start and the
//!   end of the soak, after one rotation (every device contacted once, so
//!   later growth is not warm-up), and every 30 s in between. It
//!   asserts nothing: the figures go to docs/performance.md.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use fieldtwin_emulator::site::Site;
use tokio_modbus::client::{Reader, tcp};
use tokio_modbus::slave::Slave;

use super::modbus::start_site;
use super::scale::{proc_rss_kib, run_probe};
use super::{BenchNetns, Layout, generate_site, machine};

/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Error messages kept for the report.
const ERRORS_SHOWN: usize = 5;

#[derive(Debug, Args, Clone)]
pub struct Options {
    /// Number of Panel Servers.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Length of the soak in minutes.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Percentage of the devices polled each second.
    #[arg(long, default_value_t = 1.0)]
    pub percent: f64,
}

#[derive(Debug, Args, Clone)]
pub struct LoadOptions {
    /// Site file whose devices are polled.
    #[arg(long)]
    pub site: PathBuf,
    #[arg(long)]
    pub seconds: f64,
    #[arg(long)]
    pub percent: f64,
}

/// Latencies (ms) of one kind of request, and its errors.
#[derive(Debug, Default)]
struct Series {
    ok_ms: Vec<f64>,
    errors: usize,
    first_errors: Vec<String>,
}

impl Series {
    fn record(&mut self, r: Result<f64, String>) {
        match r {
            Ok(ms) => self.ok_ms.push(ms),
            Err(e) => {
                self.errors += 1;
                if self.first_errors.len() < ERRORS_SHOWN {
                    self.first_errors.push(e);
                }
            }
        }
    }

    fn summary(mut self) -> Summary {
        self.ok_ms.sort_by(f64::total_cmp);
        let q = |p: f64| {
            self.ok_ms
                .get(((self.ok_ms.len() as f64 - 1.0) * p).round() as usize)
                .copied()
        };
        Summary {
            requests: self.ok_ms.len() + self.errors,
            errors: self.errors,
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            max_ms: q(1.0),
            first_errors: self.first_errors,
        }
    }
}

/// What the soak's client reports of one kind of request.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Summary {
    requests: usize,
    errors: usize,
    first_errors: Vec<String>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
}

impl Summary {
    fn line(&self, what: &str) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
        format!(
            "{what:<40} {} requests, {} errors; p50 {}, p99 {}, max {}",
            self.requests,
            self.errors,
            ms(self.p50_ms),
            ms(self.p99_ms),
            ms(self.max_ms)
        )
    }
}

#[derive(Debug, Default)]
struct Load {
    modbus: Series,
    https_first: Series,
    https: Series,
    late_ticks: u64,
}

/// What the soak's client prints (JSON, one line).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LoadResult {
    modbus: Summary,
    https_first: Summary,
    https: Summary,
    /// Seconds in which the slice could not be started on time (the load
    /// generator fell behind).
    late_ticks: u64,
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

async fn modbus_read(ip: std::net::Ipv4Addr) -> Result<f64, String> {
    let t = Instant::now();
    let work = async {
        let mut ctx = tcp::connect_slave((ip, 502).into(), Slave(255))
            .await
            .map_err(|e| format!("modbus {ip}: connect: {e}"))?;
        ctx.read_holding_registers(10, 10)
            .await
            .map_err(|e| format!("modbus {ip}: {e}"))?
            .map_err(|e| format!("modbus {ip}: exception {e}"))?;
        Ok(ms_since(t))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(format!("modbus {ip}: no answer within {REQUEST_TIMEOUT:?}")))
}

async fn https_get(ip: std::net::Ipv4Addr) -> Result<f64, String> {
    let t = Instant::now();
    let target = format!("{ip}:443");
    let work = fieldtwin_scenarios::web::request(&target, "GET", "/", "", None);
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Err(_) => Err(format!("https {ip}: no answer within {REQUEST_TIMEOUT:?}")),
        Ok(Err(e)) => Err(format!("https {ip}: {e}")),
        Ok(Ok(r)) if r.status >= 500 => Err(format!("https {ip}: status {}", r.status)),
        Ok(Ok(_)) => Ok(ms_since(t)),
    }
}

/// Inside the namespace: the soak's client (see the module documentation).
pub fn load(o: LoadOptions) -> anyhow::Result<()> {
    let site = Site::load(&o.site)?;
    let ips: Vec<_> = site.devices.iter().map(|d| d.ip).collect();
    anyhow::ensure!(!ips.is_empty(), "the site has no devices");
    let per_tick = ((ips.len() as f64 * o.percent / 100.0).round() as usize).max(1);
    let ticks = o.seconds.round().max(1.0) as u64;
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async move {
        let out = Arc::new(Mutex::new(Load::default()));
        let contacted = Arc::new(Mutex::new(HashSet::new()));
        let mut tasks = tokio::task::JoinSet::new();
        let start = tokio::time::Instant::now();
        let mut next = 0usize;
        for tick in 0..ticks {
            let due = start + Duration::from_secs(tick);
            if tokio::time::Instant::now() > due + Duration::from_millis(500) {
                out.lock().unwrap().late_ticks += 1;
            }
            tokio::time::sleep_until(due).await;
            for _ in 0..per_tick {
                let ip = ips[next % ips.len()];
                next += 1;
                let out = out.clone();
                let contacted = contacted.clone();
                tasks.spawn(async move {
                    let m = modbus_read(ip).await;
                    let first = contacted.lock().unwrap().insert(ip);
                    let h = https_get(ip).await;
                    let mut o = out.lock().unwrap();
                    o.modbus.record(m);
                    if first {
                        o.https_first.record(h);
                    } else {
                        o.https.record(h);
                    }
                });
            }
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        let l = std::mem::take(&mut *out.lock().unwrap());
        LoadResult {
            modbus: l.modbus.summary(),
            https_first: l.https_first.summary(),
            https: l.https.summary(),
            late_ticks: l.late_ticks,
        }
    });
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// Open file descriptors and threads of `pid`.
fn fds_threads(pid: u32) -> (usize, usize) {
    let count = |d: String| std::fs::read_dir(d).map_or(0, |r| r.count());
    (
        count(format!("/proc/{pid}/fd")),
        count(format!("/proc/{pid}/task")),
    )
}

pub fn run(o: Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        o.minutes > 0.0 && o.percent > 0.0 && o.percent <= 100.0,
        "--minutes must be positive and --percent in (0, 100]"
    );
    let dir = tempfile::tempdir()?;
    let site = dir.path().join("site.toml");
    std::fs::write(
        &site,
        generate_site(o.devices, 1, Layout::for_devices(o.devices))?,
    )?;
    println!(
        "bench soak: {} Panel Servers in TAP mode, {}% a second for {} min over Modbus and HTTPS; {}",
        o.devices,
        o.percent,
        o.minutes,
        machine()
    );
    let ns = BenchNetns::create("k")?;
    let proc = start_site(
        &site,
        &["--tap", "--netns", &ns.name, "--tap-name", "ftbenchk"],
        Duration::from_secs(900),
    )?;
    let pid = proc.0.id();
    let probe = run_probe(&ns, &site)?;
    if probe.answered < probe.total {
        bail!(
            "only {} of {} devices answered Modbus before the soak",
            probe.answered,
            probe.total
        );
    }
    let rss0 = proc_rss_kib(pid).unwrap_or(0);
    let (fd0, th0) = fds_threads(pid);
    let seconds = o.minutes * 60.0;
    let exe = std::env::current_exe()?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&exe)
        .args(["bench", "soak-load", "--site"])
        .arg(&site)
        .args(["--seconds", &seconds.to_string()])
        .args(["--percent", &o.percent.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run the soak load")?;
    // Read the child's output as it comes, so a full pipe never blocks it.
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|s| Box::new(s) as _));
    let stderr = drain(child.stderr.take().map(|s| Box::new(s) as _));
    let t0 = Instant::now();
    let mut samples = Vec::new();
    // Every device has been contacted once after one rotation: growth
    // after that is not warm-up (certificates made on first use, sessions).
    let per_tick = ((o.devices as f64 * o.percent / 100.0).round() as usize).max(1);
    let rotation = Duration::from_secs(o.devices.div_ceil(per_tick) as u64 + 5);
    let mut warm = None;
    while child.try_wait()?.is_none() {
        std::thread::sleep(Duration::from_millis(200));
        if t0.elapsed().as_secs() >= 30 * (samples.len() as u64 + 1) {
            samples.push(proc_rss_kib(pid).unwrap_or(0));
        }
        if warm.is_none() && t0.elapsed() >= rotation {
            warm = proc_rss_kib(pid);
        }
    }
    let status = child.wait()?;
    let (stdout, stderr) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    if !status.success() {
        bail!(
            "the soak load failed ({status}): {}",
            String::from_utf8_lossy(&stderr)
        );
    }
    let r: LoadResult = serde_json::from_slice(&stdout)?;
    let rss1 = proc_rss_kib(pid).unwrap_or(0);
    let (fd1, th1) = fds_threads(pid);
    drop(proc);
    let mib = |k: u64| k as f64 / 1024.0;
    println!("{:<40} {}", "devices", o.devices);
    println!("{}", r.modbus.line("Modbus FC3 (unit 255)"));
    println!("{}", r.https_first.line("HTTPS GET / (first contact)"));
    println!("{}", r.https.line("HTTPS GET / (later)"));
    let errors = r.modbus.errors + r.https_first.errors + r.https.errors;
    println!("{:<40} {errors}", "errors");
    for e in r
        .modbus
        .first_errors
        .iter()
        .chain(&r.https_first.first_errors)
        .chain(&r.https.first_errors)
    {
        println!("  {e}");
    }
    println!(
        "{:<40} {}",
        "seconds the load generator fell behind", r.late_ticks
    );
    println!(
        "{:<40} {:.1} -> {:.1} MiB ({:+.1} MiB, {:+.2} %)",
        "RSS start -> end",
        mib(rss0),
        mib(rss1),
        mib(rss1) - mib(rss0),
        (rss1 as f64 / rss0.max(1) as f64 - 1.0) * 100.0
    );
    match warm {
        Some(w) => println!(
            "{:<40} {:.1} -> {:.1} MiB ({:+.2} %)",
            "RSS after one rotation -> end",
            mib(w),
            mib(rss1),
            (rss1 as f64 / w.max(1) as f64 - 1.0) * 100.0
        ),
        None => println!(
            "{:<40} the soak was shorter than one rotation ({} s)",
            "RSS after one rotation -> end",
            rotation.as_secs()
        ),
    }
    let trace: Vec<String> = samples.iter().map(|k| format!("{:.1}", mib(*k))).collect();
    println!("{:<40} [{}] MiB", "RSS every 30 s", trace.join(", "));
    println!(
        "{:<40} {fd0} -> {fd1}",
        "open file descriptors start -> end"
    );
    println!("{:<40} {th0} -> {th1}", "threads start -> end");
    Ok(())
}
