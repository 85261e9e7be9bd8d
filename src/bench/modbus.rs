//! `fieldtwin bench modbus`: the same Modbus load against up to five
//! servers, interleaved in short rounds (see the module doc of [`super`]).
//!
//! Contract:
//! - Every server is started once, then each round loads every server in
//!   turn (the order rotates from round to round), so slow drifts of a
//!   shared machine hit all of them alike.
//! - A server's CPU per request is its process's user + system time
//!   (/proc/PID/stat) between the load's `start` and `stop` lines (every
//!   connection up, every request answered; see [`super::load`]), divided
//!   by the requests answered in that window. Idle time between rounds,
//!   start-up and connection set-up are not charged.
//! - Per server: medians over the rounds; against (a): the ratio of the
//!   medians and the lowest and highest per-round ratio (both measured in
//!   the same round). The verdict line compares TAP mode (c) with (a).
//! - (a) runs in a child process of its own (`bench bare-server`), like
//!   every other server, so the bench's own work is never charged to it.

use std::io::{BufRead, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use fieldtwin_emulator::net::host;
use tokio_modbus::prelude::*;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};

use super::load::{LoadResult, START, STOP};
use super::{BenchNetns, Layout, generate_site, machine};

#[derive(Debug, Args, Clone)]
pub struct Options {
    /// Concurrent client connections.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Seconds of load per server and round.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Rounds; each loads every server once.
    #[arg(long, default_value_t = 6)]
    pub rounds: usize,
    /// Servers to measure, from a (bare tokio-modbus), b (host mode),
    /// c (TAP mode), r (TAP mode via the router, c'), d (pymodbus).
    #[arg(long, default_value = "a,b,c,r,d", value_delimiter = ',')]
    pub servers: Vec<String>,
    /// Worker threads of the bare server (a); default: tokio's, one per core.
    #[arg(long)]
    pub bare_threads: Option<usize>,
    /// Python interpreter for the pymodbus server (d); default: the venv
    /// that scripts/test creates (.venv), else `python3`.
    #[arg(long, default_value_t = default_python())]
    pub python: String,
}

/// `bench bare-server`: the bare tokio-modbus server (a) on its own.
#[derive(Debug, Args, Clone)]
pub struct BareOptions {
    /// Worker threads; default: tokio's, one per core.
    #[arg(long)]
    pub threads: Option<usize>,
}

fn default_python() -> String {
    let venv = std::path::Path::new(".venv/bin/python");
    if venv.exists() {
        venv.display().to_string()
    } else {
        "python3".into()
    }
}

/// A child process killed (SIGTERM, then SIGKILL) on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exe() -> std::path::PathBuf {
    std::env::current_exe().unwrap_or_else(|_| "fieldtwin".into())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `fieldtwin run ARGS` and waits until it prints its control API.
pub fn start_site(site: &Path, args: &[&str], timeout: Duration) -> anyhow::Result<Proc> {
    let api = format!("127.0.0.1:{}", free_port()?);
    let mut child = Command::new(exe())
        .args(["run", "--site"])
        .arg(site)
        .args(["--api", &api])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start fieldtwin run")?;
    let out = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("control API:") {
                let _ = tx.send(());
            }
        }
    });
    let proc = Proc(child);
    rx.recv_timeout(timeout)
        .map_err(|_| anyhow::anyhow!("the site did not start within {timeout:?}"))?;
    Ok(proc)
}

/// CPU time (user + system) process `pid` has used so far, in
/// microseconds, from its own accounting (/proc/PID/stat, clock ticks).
pub fn process_cpu_us(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are 12 and 13 after the command name.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // In USER_HZ ticks, which the kernel fixes at 100 a second on x86 and
    // arm64 (sysconf(_SC_CLK_TCK); 10 ms, about 1 % of a 2 s load's CPU).
    Some(ticks * 10_000)
}

/// The load average (/proc/loadavg's first three fields).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// One load against one server in one round.
#[derive(Debug, Clone, Copy)]
struct Sample {
    load: LoadResult,
    /// Server CPU microseconds per request answered.
    cpu_us_per_req: Option<f64>,
}

/// Runs one load against `t` (in a child process, inside the server's
/// namespace if it has one) and reads the server's CPU at the load's
/// `start` and `stop` lines.
fn measure(o: &Options, t: &Target) -> anyhow::Result<Sample> {
    let mut cmd = match &t.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(exe());
            c
        }
        None => Command::new(exe()),
    };
    let mut child = cmd
        .args(["bench", "load", &t.addr.to_string()])
        .args(["--connections", &o.connections.to_string()])
        .args(["--seconds", &o.seconds.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run the load")?;
    let out = child.stdout.take().expect("piped");
    let (mut c0, mut c1, mut result) = (None, None, None);
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        let line = line.trim();
        if line == START {
            c0 = process_cpu_us(t.pid);
        } else if line == STOP {
            c1 = process_cpu_us(t.pid);
        } else if line.starts_with('{') {
            result = Some(serde_json::from_str::<LoadResult>(line).context("bad load result")?);
        }
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait()?;
    let Some(load) = result.filter(|_| status.success()) else {
        bail!("load failed: {}", err.trim());
    };
    let cpu_us_per_req = match (c0, c1) {
        (Some(a), Some(b)) if load.requests > 0 => {
            Some(b.saturating_sub(a) as f64 / load.requests as f64)
        }
        _ => None,
    };
    Ok(Sample {
        load,
        cpu_us_per_req,
    })
}

#[derive(Clone)]
struct Bare;

impl tokio_modbus::server::Service for Bare {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Request<'static>) -> Self::Future {
        std::future::ready(match req {
            Request::ReadHoldingRegisters(_, n) => {
                Ok(Response::ReadHoldingRegisters(vec![0x1234; usize::from(n)]))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// `bench bare-server`: serves (a) on 127.0.0.1 until killed; prints
/// `listening ADDR` once it accepts.
pub fn bare_server(o: BareOptions) -> anyhow::Result<()> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = o.threads {
        b.worker_threads(n.max(1));
    }
    let rt = b.enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?);
        let server = Server::new(listener);
        let svc = Arc::new(Bare);
        let new = move |_| Ok(Some(svc.clone()));
        let on_connected = move |stream, peer| {
            let new = new.clone();
            async move { accept_tcp_connection(stream, peer, new) }
        };
        server.serve(&on_connected, |_| {}).await?;
        Ok(())
    })
}

const PYMODBUS_SERVER: &str = r#"
import sys, asyncio
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext
try:
    from pymodbus.datastore import ModbusDeviceContext as Ctx
    kw = "devices"
except ImportError:
    from pymodbus.datastore import ModbusSlaveContext as Ctx
    kw = "slaves"
from pymodbus.server import StartAsyncTcpServer
block = ModbusSequentialDataBlock(1, [0x1234] * 200)
ctx = ModbusServerContext(**{kw: Ctx(hr=block)}, single=True)
print("ready", flush=True)
asyncio.run(StartAsyncTcpServer(context=ctx, address=("127.0.0.1", int(sys.argv[1]))))
"#;

fn pymodbus_available(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import pymodbus"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What a [`Target`] keeps alive (dropped in order: processes before
/// their namespace).
#[allow(dead_code)]
enum Guard {
    Proc(Proc),
    Netns(BenchNetns),
}

/// A started server.
struct Target {
    pid: u32,
    addr: SocketAddr,
    netns: Option<String>,
    _guards: Vec<Guard>,
}

/// The servers, in table order: (key, name).
const SERVERS: [(&str, &str); 5] = [
    ("a", "a: tokio-modbus server, loopback"),
    ("b", "b: Panel Server, host mode"),
    ("c", "c: Panel Server, TAP mode"),
    ("r", "c': Panel Server, TAP via router"),
    ("d", "d: pymodbus server, loopback"),
];

fn start_bare(o: &Options) -> anyhow::Result<Target> {
    let mut cmd = Command::new(exe());
    cmd.args(["bench", "bare-server"]);
    if let Some(n) = o.bare_threads {
        cmd.args(["--threads", &n.to_string()]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the bare server")?;
    let out = child.stdout.take().expect("piped");
    let pid = child.id();
    let proc = Proc(child);
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening ")
        .context("the bare server did not start")?
        .parse()?;
    Ok(Target {
        pid,
        addr,
        netns: None,
        _guards: vec![Guard::Proc(proc)],
    })
}

fn start_pymodbus(o: &Options) -> anyhow::Result<Target> {
    if !pymodbus_available(&o.python) {
        bail!(
            "skipped: {} cannot import pymodbus (pip install pymodbus, or --python)",
            o.python
        );
    }
    let port = free_port()?;
    let mut child = Command::new(&o.python)
        .args(["-c", PYMODBUS_SERVER, &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("PYTHONWARNINGS", "ignore")
        .spawn()?;
    let out = child.stdout.take().expect("piped");
    let pid = child.id();
    let proc = Proc(child);
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    while line.trim() != "ready" {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("the pymodbus server did not start");
        }
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            bail!("the pymodbus server does not listen on {addr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Target {
        pid,
        addr,
        netns: None,
        _guards: vec![Guard::Proc(proc)],
    })
}

fn start_tap(site: &Path, tag: &str, extra: &[&str]) -> anyhow::Result<Target> {
    let ns = BenchNetns::create(tag)?;
    let mut args = vec!["--tap", "--netns", &ns.name, "--tap-name", "ftbench0"];
    args.extend_from_slice(extra);
    let proc = start_site(site, &args, Duration::from_secs(60))?;
    Ok(Target {
        pid: proc.0.id(),
        addr: SocketAddr::from((super::generated_ip(1, 0), 502)),
        netns: Some(ns.name.clone()),
        _guards: vec![Guard::Proc(proc), Guard::Netns(ns)],
    })
}

fn start(o: &Options, key: &str, dir: &Path) -> anyhow::Result<Target> {
    match key {
        "a" => start_bare(o),
        "b" => {
            // 10.77.78.2 -> 127.77.78.2.
            let site = dir.join("host.toml");
            std::fs::write(&site, generate_site(1, 78, Layout::Flat)?)?;
            let proc = start_site(&site, &[], Duration::from_secs(60))?;
            Ok(Target {
                pid: proc.0.id(),
                addr: SocketAddr::from((
                    host::host_address(super::generated_ip(78, 0)),
                    host::map_port(502),
                )),
                netns: None,
                _guards: vec![Guard::Proc(proc)],
            })
        }
        "c" | "r" => {
            let site = dir.join("tap.toml");
            std::fs::write(&site, generate_site(1, 1, Layout::Flat)?)?;
            if key == "c" {
                start_tap(&site, "m", &[])
            } else {
                start_tap(&site, "r", &["--routing", "router"])
            }
        }
        "d" => start_pymodbus(o),
        _ => unreachable!("keys are checked"),
    }
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// One server's figures over the rounds, against a reference measured in
/// the same rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Versus {
    /// Median of the server's values.
    pub median: f64,
    /// Median of the reference's values.
    pub base_median: f64,
    /// `median / base_median`.
    pub ratio: f64,
    /// Lowest and highest per-round ratio (rounds where both have a value).
    pub round_min: f64,
    pub round_max: f64,
}

/// Compares per-round `values` with the reference's per-round `base`
/// (same length; `None` where a round has no value).
pub fn versus(values: &[Option<f64>], base: &[Option<f64>]) -> Option<Versus> {
    let own: Vec<f64> = values.iter().flatten().copied().collect();
    let theirs: Vec<f64> = base.iter().flatten().copied().collect();
    let (median, base_median) = (median(&own)?, median(&theirs)?);
    if base_median <= 0.0 {
        return None;
    }
    let rounds: Vec<f64> = values
        .iter()
        .zip(base)
        .filter_map(|(v, b)| match (v, b) {
            (Some(v), Some(b)) if *b > 0.0 => Some(v / b),
            _ => None,
        })
        .collect();
    let round_min = rounds.iter().copied().fold(f64::INFINITY, f64::min);
    let round_max = rounds.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Versus {
        median,
        base_median,
        ratio: median / base_median,
        round_min,
        round_max,
    })
}

pub fn run(o: Options) -> anyhow::Result<()> {
    let keys: Vec<&str> = SERVERS
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| o.servers.iter().any(|s| s == k))
        .collect();
    if let Some(bad) = o
        .servers
        .iter()
        .find(|s| !SERVERS.iter().any(|(k, _)| k == s))
    {
        bail!("--servers: unknown server {bad:?}; choose among a, b, c, r, d");
    }
    anyhow::ensure!(o.rounds >= 1, "--rounds must be at least 1");
    println!(
        "bench modbus: {} connections, FC3 x 10 registers, {} rounds of {} s per server \
         (interleaved); {}; load average {}",
        o.connections,
        o.rounds,
        o.seconds,
        machine(),
        load_average()
    );
    let dir = tempfile::tempdir()?;
    let mut targets: Vec<(&str, Result<Target, String>)> = Vec::new();
    for &k in &keys {
        targets.push((k, start(&o, k, dir.path()).map_err(|e| format!("{e:#}"))));
    }
    // samples[server][round]
    let mut samples: Vec<Vec<Option<Sample>>> = vec![vec![None; o.rounds]; keys.len()];
    let mut errors: Vec<Option<String>> = vec![None; keys.len()];
    #[allow(clippy::needless_range_loop)] // rounds index the inner vectors
    for round in 0..o.rounds {
        for j in 0..keys.len() {
            let i = (j + round) % keys.len();
            let Ok(t) = &targets[i].1 else { continue };
            match measure(&o, t) {
                Ok(s) => samples[i][round] = Some(s),
                Err(e) => errors[i] = Some(format!("{e:#}")),
            }
        }
    }
    let load_end = load_average();

    let name = |k: &'static str| -> &'static str {
        SERVERS.iter().find(|(x, _)| *x == k).map_or(k, |(_, n)| *n)
    };
    let cpu = |i: usize| -> Vec<Option<f64>> {
        samples[i]
            .iter()
            .map(|s| s.and_then(|s| s.cpu_us_per_req))
            .collect()
    };
    let rate = |i: usize| -> Vec<Option<f64>> {
        samples[i]
            .iter()
            .map(|s| s.map(|s| s.load.rate()))
            .collect()
    };
    let base = keys.iter().position(|k| *k == "a");

    // Per round: CPU µs per request of every server.
    print!("{:<6}", "round");
    for k in &keys {
        print!(" {:>14}", format!("{} µs/req", short(k)));
    }
    if base.is_some() && keys.contains(&"c") {
        print!(" {:>8}", "c/a");
    }
    println!();
    for round in 0..o.rounds {
        print!("{:<6}", round + 1);
        for i in 0..keys.len() {
            print!(
                " {:>14}",
                cpu(i)[round].map_or("-".into(), |c| format!("{c:.2}"))
            );
        }
        if let (Some(b), Some(c)) = (base, keys.iter().position(|k| *k == "c")) {
            print!(
                " {:>8}",
                match (cpu(c)[round], cpu(b)[round]) {
                    (Some(c), Some(a)) if a > 0.0 => format!("{:.2}x", c / a),
                    _ => "-".into(),
                }
            );
        }
        println!();
    }
    println!();
    println!(
        "{:<34} {:>10} {:>7} {:>8} {:>8} {:>7} {:>11} {:>7} {:>13}",
        "server (median of rounds)",
        "req/s",
        "vs a",
        "p50 ms",
        "p99 ms",
        "errors",
        "CPU µs/req",
        "vs a",
        "rounds vs a"
    );
    for (i, k) in keys.iter().enumerate() {
        let got: Vec<Sample> = samples[i].iter().flatten().copied().collect();
        if got.is_empty() {
            let why = match &targets[i].1 {
                Err(e) => e.clone(),
                Ok(_) => errors[i].clone().unwrap_or_else(|| "no result".into()),
            };
            println!("{:<34} {why}", name(k));
            continue;
        }
        let p50 = median(&got.iter().map(|s| s.load.p50_us as f64).collect::<Vec<_>>());
        let p99 = median(&got.iter().map(|s| s.load.p99_us as f64).collect::<Vec<_>>());
        let errs: u64 = got.iter().map(|s| s.load.errors).sum();
        let r = base.and_then(|b| versus(&rate(i), &rate(b)));
        let c = base.and_then(|b| versus(&cpu(i), &cpu(b)));
        println!(
            "{:<34} {:>10.0} {:>7} {:>8.3} {:>8.3} {:>7} {:>11} {:>7} {:>13}",
            name(k),
            median(&rate(i).into_iter().flatten().collect::<Vec<_>>()).unwrap_or(0.0),
            r.map_or("-".into(), |r| format!("{:.2}x", r.ratio)),
            p50.unwrap_or(0.0) / 1000.0,
            p99.unwrap_or(0.0) / 1000.0,
            errs,
            median(&cpu(i).into_iter().flatten().collect::<Vec<_>>())
                .map_or("-".into(), |c| format!("{c:.2}")),
            c.map_or("-".into(), |c| format!("{:.2}x", c.ratio)),
            c.map_or("-".into(), |c| format!(
                "{:.2}-{:.2}x",
                c.round_min, c.round_max
            )),
        );
    }
    println!(
        "CPU µs/req: the server process's user + system CPU time (/proc/PID/stat) \
         between the load's start and stop (every connection up, every request \
         answered), divided by the requests answered; medians over the rounds. \
         Load average at the end: {load_end}."
    );
    if let (Some(b), Some(c)) = (base, keys.iter().position(|k| *k == "c"))
        && let Some(v) = versus(&cpu(c), &cpu(b))
    {
        println!(
            "verdict: TAP mode (c) costs {:.2}x the bare server's CPU per request \
             (median {:.2} vs {:.2} µs; per round {:.2}-{:.2}x): TAP <= 1.0x {}",
            v.ratio,
            v.median,
            v.base_median,
            v.round_min,
            v.round_max,
            if v.ratio <= 1.0 {
                "holds"
            } else {
                "does NOT hold"
            }
        );
    }
    Ok(())
}

fn short(k: &str) -> &str {
    if k == "r" { "c'" } else { k }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn versus_takes_the_ratio_of_medians_and_the_per_round_spread() {
        let tap = [Some(10.0), Some(12.0), None, Some(9.0)];
        let bare = [Some(10.0), Some(10.0), Some(11.0), Some(12.0)];
        let v = versus(&tap, &bare).unwrap();
        assert_eq!(v.median, 10.0);
        assert_eq!(v.base_median, 10.5);
        assert!((v.ratio - 10.0 / 10.5).abs() < 1e-12);
        // Round 3 has no TAP figure: only rounds 1, 2 and 4 are paired.
        assert!((v.round_min - 0.75).abs() < 1e-12);
        assert!((v.round_max - 1.2).abs() < 1e-12);
        assert_eq!(versus(&[None], &[Some(1.0)]), None);
        assert_eq!(versus(&[Some(1.0)], &[Some(0.0)]), None);
    }
}
