//! `fieldtwin bench modbus`: the same Modbus load against four servers
//! (see the module doc of [`super`]).

use std::io::{BufRead, BufReader};
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

use super::load::LoadResult;
use super::{BenchNetns, Layout, generate_site, machine};

#[derive(Debug, Args, Clone)]
pub struct Options {
    /// Concurrent client connections.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Seconds of load per server.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Python interpreter for the pymodbus server (d); default: the venv
    /// that scripts/test creates (.venv), else `python3`.
    #[arg(long, default_value_t = default_python())]
    pub python: String,
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
    // arm64 (sysconf(_SC_CLK_TCK); 10 ms, under 1 % of a 10 s load's CPU).
    Some(ticks * 10_000)
}

/// A load's result and the server's CPU per request.
struct Measured {
    load: LoadResult,
    /// Server CPU microseconds per request answered.
    cpu_us_per_req: Option<f64>,
}

/// Runs the load against `addr` while process `server` serves it, and
/// reads the server's CPU time before and after.
fn measure(
    o: &Options,
    addr: SocketAddr,
    netns: Option<&str>,
    server: u32,
) -> anyhow::Result<Measured> {
    let c0 = process_cpu_us(server);
    let load = run_load(o, addr, netns)?;
    let c1 = process_cpu_us(server);
    let cpu_us_per_req = match (c0, c1) {
        (Some(a), Some(b)) if load.requests > 0 => {
            Some(b.saturating_sub(a) as f64 / load.requests as f64)
        }
        _ => None,
    };
    Ok(Measured {
        load,
        cpu_us_per_req,
    })
}

/// Runs the load in a child process (inside `netns` if given).
fn run_load(o: &Options, addr: SocketAddr, netns: Option<&str>) -> anyhow::Result<LoadResult> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(exe());
            c
        }
        None => Command::new(exe()),
    };
    let out = cmd
        .args(["bench", "load", &addr.to_string()])
        .args(["--connections", &o.connections.to_string()])
        .args(["--seconds", &o.seconds.to_string()])
        .output()
        .context("cannot run the load")?;
    if !out.status.success() {
        bail!("load failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).context("load printed no result")
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

/// (a): a bare tokio-modbus server on 127.0.0.1 in this process.
fn bare_server(rt: &tokio::runtime::Runtime) -> anyhow::Result<SocketAddr> {
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    rt.spawn(async move {
        let server = Server::new(listener);
        let svc = Arc::new(Bare);
        let new = move |_| Ok(Some(svc.clone()));
        let on_connected = move |stream, peer| {
            let new = new.clone();
            async move { accept_tcp_connection(stream, peer, new) }
        };
        let _ = server.serve(&on_connected, |_| {}).await;
    });
    Ok(addr)
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

struct Row {
    name: &'static str,
    result: Result<Measured, String>,
}

pub fn run(o: Options) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let mut rows = Vec::new();
    println!(
        "bench modbus: {} connections, FC3 x 10 registers, {} s per server; {}",
        o.connections,
        o.seconds,
        machine()
    );

    // (a) bare tokio-modbus server on kernel loopback.
    let addr = bare_server(&rt)?;
    rows.push(Row {
        name: "a: tokio-modbus server, loopback",
        result: measure(&o, addr, None, std::process::id()).map_err(|e| format!("{e:#}")),
    });

    let dir = tempfile::tempdir()?;
    // (b) Panel Server, host mode (10.77.78.2 -> 127.77.78.2).
    let site_b = dir.path().join("host.toml");
    std::fs::write(&site_b, generate_site(1, 78, Layout::Flat)?)?;
    rows.push(Row {
        name: "b: Panel Server, host mode",
        result: (|| {
            let site = start_site(&site_b, &[], Duration::from_secs(60))?;
            let addr = SocketAddr::from((
                host::host_address(super::generated_ip(78, 0)),
                host::map_port(502),
            ));
            measure(&o, addr, None, site.0.id())
        })()
        .map_err(|e| format!("{e:#}")),
    });

    // (c) Panel Server, TAP mode in a namespace of our own.
    let site_c = dir.path().join("tap.toml");
    std::fs::write(&site_c, generate_site(1, 1, Layout::Flat)?)?;
    rows.push(Row {
        name: "c: Panel Server, TAP mode",
        result: (|| {
            let ns = BenchNetns::create("m")?;
            let site = start_site(
                &site_c,
                &["--tap", "--netns", &ns.name, "--tap-name", "ftbench0"],
                Duration::from_secs(60),
            )?;
            let addr = SocketAddr::from((super::generated_ip(1, 0), 502));
            measure(&o, addr, Some(&ns.name), site.0.id())
        })()
        .map_err(|e| format!("{e:#}")),
    });

    // (c') the same through the emulated router (docs/lab.md "Routed lab").
    rows.push(Row {
        name: "c': Panel Server, TAP via router",
        result: (|| {
            let ns = BenchNetns::create("r")?;
            let site = start_site(
                &site_c,
                &[
                    "--tap",
                    "--netns",
                    &ns.name,
                    "--tap-name",
                    "ftbench0",
                    "--routing",
                    "router",
                ],
                Duration::from_secs(60),
            )?;
            let addr = SocketAddr::from((super::generated_ip(1, 0), 502));
            measure(&o, addr, Some(&ns.name), site.0.id())
        })()
        .map_err(|e| format!("{e:#}")),
    });

    // (d) pymodbus, when installed.
    rows.push(Row {
        name: "d: pymodbus server, loopback",
        result: if pymodbus_available(&o.python) {
            (|| {
                let port = free_port()?;
                let mut child = Command::new(&o.python)
                    .args(["-c", PYMODBUS_SERVER, &port.to_string()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .env("PYTHONWARNINGS", "ignore")
                    .spawn()?;
                let out = child.stdout.take().expect("piped");
                let pid = child.id();
                let _p = Proc(child);
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
                measure(&o, addr, None, pid)
            })()
            .map_err(|e| format!("{e:#}"))
        } else {
            Err(format!(
                "skipped: {} cannot import pymodbus (pip install pymodbus, or --python)",
                o.python
            ))
        },
    });

    let base = rows[0].result.as_ref().ok();
    let base_rate = base.map(|m| m.load.rate());
    let base_cpu = base.and_then(|m| m.cpu_us_per_req);
    println!(
        "{:<34} {:>10} {:>8} {:>8} {:>8} {:>7} {:>12} {:>7}",
        "server", "req/s", "p50 ms", "p99 ms", "errors", "vs a", "CPU µs/req", "vs a"
    );
    for r in &rows {
        match &r.result {
            Ok(m) => {
                let l = &m.load;
                println!(
                    "{:<34} {:>10.0} {:>8.3} {:>8.3} {:>8} {:>7} {:>12} {:>7}",
                    r.name,
                    l.rate(),
                    l.p50_us as f64 / 1000.0,
                    l.p99_us as f64 / 1000.0,
                    l.errors,
                    base_rate.map_or("-".into(), |b| format!("{:.2}x", l.rate() / b)),
                    m.cpu_us_per_req.map_or("-".into(), |c| format!("{c:.2}")),
                    match (m.cpu_us_per_req, base_cpu) {
                        (Some(c), Some(b)) if b > 0.0 => format!("{:.2}x", c / b),
                        _ => "-".into(),
                    }
                );
            }
            Err(e) => println!("{:<34} {e}", r.name),
        }
    }
    println!(
        "CPU µs/req: the server process's user + system CPU time (its /proc/PID/stat) \
         over the load, divided by the requests answered; (a) is measured in this \
         process, which does nothing else meanwhile."
    );
    drop(rt);
    Ok(())
}
