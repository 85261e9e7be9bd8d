//! The load of `bench modbus`: N tokio-modbus client connections, each
//! reading 10 holding registers (FC3) in a loop for D seconds.
//!
//! Contract: the load connects every connection first, then prints the
//! line `start`, loads for D seconds, prints `stop` once every connection
//! has finished its last request (before any connection is closed), and
//! finally one JSON object (requests, errors, seconds, p50_us, p99_us).
//! The parent samples the server's CPU at `start` and `stop`, so connection
//! set-up and tear-down are outside the measured window.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio_modbus::client::{Reader, tcp};
use tokio_modbus::slave::Slave;

#[derive(Debug, Args, Clone)]
pub struct Options {
    /// Server address.
    pub addr: SocketAddr,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Duration in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Modbus unit id.
    #[arg(long, default_value_t = 255)]
    pub unit: u8,
    /// First register address.
    #[arg(long, default_value_t = 10)]
    pub register: u16,
}

/// Result of one load.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

/// The line printed once every connection is up, before the load.
pub const START: &str = "start";
/// The line printed once the load is over, before connections close.
pub const STOP: &str = "stop";

pub fn run(o: Options) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let r = rt.block_on(load(o))?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn load(o: Options) -> anyhow::Result<LoadResult> {
    let dur = Duration::from_secs_f64(o.seconds);
    let ready = Arc::new(tokio::sync::Barrier::new(o.connections + 1));
    let mut tasks = Vec::new();
    for _ in 0..o.connections {
        let o = o.clone();
        let ready = ready.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let connected = tcp::connect_slave(o.addr, Slave(o.unit)).await;
            ready.wait().await;
            let mut ctx = match connected {
                Ok(c) => c,
                Err(_) => return (lat, 1, None),
            };
            let start = Instant::now();
            while start.elapsed() < dur {
                let t = Instant::now();
                match ctx.read_holding_registers(o.register, 10).await {
                    Ok(Ok(_)) => lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32),
                    _ => {
                        errors += 1;
                        if errors > 1000 {
                            break;
                        }
                    }
                }
            }
            (lat, errors, Some(ctx))
        }));
    }
    ready.wait().await;
    say(START);
    let mut all = Vec::new();
    let mut errors = 0;
    let mut open = Vec::new();
    for t in tasks {
        let (l, e, ctx) = t.await?;
        all.extend(l);
        errors += e;
        open.push(ctx);
    }
    say(STOP);
    drop(open);
    all.sort_unstable();
    let pct = |p: f64| -> u64 {
        if all.is_empty() {
            0
        } else {
            u64::from(all[((all.len() - 1) as f64 * p) as usize])
        }
    };
    Ok(LoadResult {
        requests: all.len() as u64,
        errors,
        seconds: o.seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}
