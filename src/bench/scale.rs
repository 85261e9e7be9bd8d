//! `fieldtwin bench scale --devices N`: N Panel Servers in one process in
//! TAP mode; boot time until every device answers Modbus, ping sweep, RSS per
//! device and idle CPU of the process. Above 256 devices the site is routed
//! (the emulated router, docs/lab.md "Routed lab") unless `--routing`
//! says otherwise; the bench prints the namespace's neighbour entries.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use fieldtwin_emulator::site::{Routing, Site};
use tokio_modbus::client::{Reader, tcp};
use tokio_modbus::slave::Slave;

use super::modbus::start_site;
use super::{BenchNetns, Layout, generate_site, machine};

#[derive(Debug, Args, Clone)]
pub struct Options {
    /// Number of Panel Servers.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Seconds over which idle CPU is measured.
    #[arg(long, default_value_t = 10.0)]
    pub idle_seconds: f64,
    /// `--routing` of `fieldtwin run` (default: the site's `auto`: routed
    /// above 256 devices).
    #[arg(long, value_name = "MODE")]
    pub routing: Option<Routing>,
}

#[derive(Debug, Args, Clone)]
pub struct ProbeOptions {
    /// Site file whose devices must answer.
    #[arg(long)]
    pub site: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct ProbeResult {
    pub(super) total: usize,
    pub(super) answered: usize,
    pub(super) seconds: f64,
}

/// Devices the probe reads at once: a SCADA polling a large site keeps
/// many connections open; 64 made the probe, not the devices, the limit
/// (a connection and its read take a few ms of latency each).
const PROBE_PARALLEL: usize = 256;

/// Runs `bench probe --site site` (this executable) inside `ns` and gives
/// what it found.
pub(super) fn run_probe(ns: &BenchNetns, site: &Path) -> anyhow::Result<ProbeResult> {
    let exe = std::env::current_exe()?;
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&exe)
        .args(["bench", "probe", "--site"])
        .arg(site)
        .output()
        .context("cannot run the probe")?;
    if !out.status.success() {
        bail!("probe failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Inside the namespace: read one register of every device until all answer.
pub fn probe(o: ProbeOptions) -> anyhow::Result<()> {
    let site = Site::load(&o.site)?;
    let ips: Vec<_> = site.devices.iter().map(|d| d.ip).collect();
    let rt = tokio::runtime::Runtime::new()?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.timeout);
    let answered = rt.block_on(async move {
        let sem = Arc::new(tokio::sync::Semaphore::new(PROBE_PARALLEL));
        let mut tasks = Vec::new();
        for ip in ips {
            let sem = sem.clone();
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let _permit = sem.acquire().await.ok()?;
                    let attempt = async {
                        let mut ctx = tcp::connect_slave((ip, 502).into(), Slave(255))
                            .await
                            .ok()?;
                        ctx.read_holding_registers(10, 10).await.ok()?.ok()
                    };
                    if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(3), attempt).await
                    {
                        return Some(());
                    }
                    drop(_permit);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None
            }));
        }
        let mut n = 0;
        for t in tasks {
            if let Ok(Some(())) = t.await {
                n += 1;
            }
        }
        n
    });
    let r = ProbeResult {
        total: site.devices.len(),
        answered,
        seconds: start.elapsed().as_secs_f64(),
    };
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

pub(super) fn proc_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The 1-minute load average (`/proc/loadavg`), as printed there.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are 12 and 13 after the command name.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub fn run(o: Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let site = dir.path().join("site.toml");
    // Forced direct access needs every device on the TAP's own segment.
    let layout = match o.routing {
        Some(Routing::Direct) => Layout::Flat,
        _ => Layout::for_devices(o.devices),
    };
    std::fs::write(&site, generate_site(o.devices, 1, layout)?)?;
    let ips = dir.path().join("ips.txt");
    let list: Vec<String> = (0..o.devices)
        .map(|i| super::generated_ip(1, i).to_string())
        .collect();
    std::fs::write(&ips, list.join("\n"))?;
    println!(
        "bench scale: {} Panel Servers in TAP mode; {}",
        o.devices,
        machine()
    );
    let routed = fieldtwin_emulator::net::router::plan(&Site::load(&site)?, o.routing)
        .map_err(anyhow::Error::msg)?;
    let routing = match &routed {
        Some(p) => format!("routed via {}", p.router),
        None => "direct (the TAP on the devices' switch)".to_string(),
    };
    let ns = BenchNetns::create("s")?;
    let mut args = vec!["--tap", "--netns", &ns.name, "--tap-name", "ftbench1"];
    let mode = o.routing.map(|r| r.to_string());
    if let Some(m) = &mode {
        args.extend(["--routing", m.as_str()]);
    }
    let t0 = Instant::now();
    let proc = start_site(&site, &args, Duration::from_secs(900))?;
    let started = t0.elapsed();
    let probe = run_probe(&ns, &site)?;
    let boot = t0.elapsed();
    let pid = proc.0.id();
    // CPU the emulator spent until every device answered: on a busy
    // machine the wall time says more about the neighbours than about it.
    let boot_cpu = proc_cpu_ticks(pid).unwrap_or(0) as f64 / 100.0;
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "nmap",
            "-sn",
            "-n",
            "--send-ip",
            "-PE",
            "-T5",
            "-iL",
        ])
        .arg(&ips)
        .output();
    let pinged = match &ping {
        Ok(o) => {
            let t = String::from_utf8_lossy(&o.stdout);
            t.lines()
                .find(|l| l.contains("hosts up") || l.contains("host up"))
                .and_then(|l| l.split('(').nth(1))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse::<usize>().ok())
                .map_or_else(|| "?".to_string(), |n| n.to_string())
        }
        Err(e) => format!("nmap not run: {e}"),
    };
    let neigh = Command::new("ip")
        .args(["-n", &ns.name, "-4", "neigh", "show"])
        .output()
        .map(|o| {
            let t = String::from_utf8_lossy(&o.stdout).to_string();
            let all = t.lines().filter(|l| !l.trim().is_empty()).count();
            let resolved = t.lines().filter(|l| l.contains("lladdr")).count();
            format!("{all} ({resolved} resolved)")
        })
        .unwrap_or_else(|e| format!("ip neigh not run: {e}"));
    std::thread::sleep(Duration::from_secs(2));
    let rss = proc_rss_kib(pid).unwrap_or(0);
    let c0 = proc_cpu_ticks(pid).unwrap_or(0);
    std::thread::sleep(Duration::from_secs_f64(o.idle_seconds));
    let c1 = proc_cpu_ticks(pid).unwrap_or(0);
    let idle_cpu = (c1.saturating_sub(c0)) as f64 / 100.0 / o.idle_seconds * 100.0;
    drop(proc);
    println!("{:<40} {}", "devices", o.devices);
    println!("{:<40} {}", "host side", routing);
    println!(
        "{:<40} {:.2} s",
        "process up (control API answers)",
        started.as_secs_f64()
    );
    println!(
        "{:<40} {:.2} s ({} of {} answered)",
        "boot to all answering Modbus",
        boot.as_secs_f64(),
        probe.answered,
        probe.total
    );
    println!(
        "{:<40} {:.2} s user+system ({:.2} cores over the boot; 1 min load {})",
        "emulator CPU until all answered",
        boot_cpu,
        boot_cpu / boot.as_secs_f64(),
        load_average()
    );
    println!(
        "{:<40} {} of {}",
        "answering ping (nmap -sn -PE)", pinged, o.devices
    );
    println!("{:<40} {}", "namespace neighbour entries (ip neigh)", neigh);
    println!(
        "{:<40} {:.1} MiB total, {:.3} MiB per device",
        "RSS",
        rss as f64 / 1024.0,
        rss as f64 / 1024.0 / o.devices as f64
    );
    println!(
        "{:<40} {:.2} % of one core (over {} s)",
        "idle CPU", idle_cpu, o.idle_seconds
    );
    Ok(())
}
