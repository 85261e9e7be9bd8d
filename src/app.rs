//! Wiring of a running site: site file -> clock, NV store, devices on their
//! network backend, control API; and the `site` subcommands.
//!
//! Contract: `run` powers on every device the site marks powered, prints the
//! device table, serves the control API until Ctrl-C or SIGTERM, then powers
//! every device off (RTC backups saved) and flushes the state before exiting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use fieldtwin_emulator::clock::Clock;
use fieldtwin_emulator::control::{self, EventBus};
use fieldtwin_emulator::device::{DeviceSetup, Runtime};
use fieldtwin_emulator::net::Stack;
use fieldtwin_emulator::net::host::{self, HostStack};
use fieldtwin_emulator::site::Site;
use fieldtwin_emulator::storage::Store;

/// Default address of the control API.
pub const DEFAULT_API: &str = "127.0.0.1:7780";

/// Options of `fieldtwin run`.
#[derive(Debug, Args)]
pub struct RunOptions {
    /// Site file (TOML); default: the embedded default site.
    #[arg(long)]
    site: Option<PathBuf>,
    /// Directory that keeps every device's NV memory across runs; default: a
    /// fresh temporary state.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Address of the REST control API.
    #[arg(long, default_value = DEFAULT_API)]
    api: SocketAddr,
    /// Worker threads of the emulator; default: every core in host mode,
    /// half of them (at least one) in TAP mode, where the TAP, the device
    /// stacks and their services hand frames to each other and one thread
    /// avoids cross-thread wake-ups (docs/performance.md).
    #[arg(long)]
    threads: Option<usize>,
    /// Speed of virtual time (1 = real time, up to 1000000).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Show the terminal dashboard (docs/tui.md) instead of the device
    /// table; quitting it stops the site.
    #[arg(long)]
    tui: bool,
    /// Network backend (host loopback or TAP) and capture.
    #[command(flatten)]
    net: crate::tap::NetOptions,
}

fn load_site(file: Option<&Path>) -> anyhow::Result<Site> {
    Ok(match file {
        Some(f) => Site::load(f)?,
        None => Site::default_site(),
    })
}

/// Per-device seed: stable for a site seed and a device id.
fn device_seed(site_seed: u64, id: &str) -> u64 {
    id.bytes().fold(site_seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Builds the runtime of `site`: host mode, or TAP mode on the switch fabric
/// `net` (call inside a tokio runtime).
pub fn build_runtime(
    site: &Site,
    clock: Clock,
    store: Store,
    net: Option<&std::sync::Arc<fieldtwin_emulator::net::switch::Network>>,
) -> anyhow::Result<Runtime> {
    let retention = Duration::from_secs_f64(site.site.rtc_retention_days * 86_400.0);
    let mut rt = Runtime::new(clock, store, EventBus::new(), retention);
    let mut taken: BTreeMap<std::net::Ipv4Addr, &str> = BTreeMap::new();
    for dev in &site.devices {
        for (_, ip, _) in fieldtwin_models::interfaces(dev) {
            let h = host::host_address(ip);
            if let Some(other) = taken.insert(h, &dev.id) {
                anyhow::bail!(
                    "devices {other} and {} both map to {h} in host mode (127.77.S.N keeps the \
                     last two octets of 10.77.S.N); give them addresses that differ there",
                    dev.id
                );
            }
        }
    }
    for dev in &site.devices {
        let seed = device_seed(site.site.seed, &dev.id);
        let mut interfaces: BTreeMap<String, Arc<dyn Stack>> = BTreeMap::new();
        for (i, (name, ip, segment)) in fieldtwin_models::interfaces(dev).into_iter().enumerate() {
            let stack: Arc<dyn Stack> = match net {
                None => Arc::new(HostStack::new(host::host_address(ip))),
                Some(net) => Arc::new(net.attach_device(
                    &dev.id,
                    &name,
                    ip,
                    dev.dhcp && i == 0,
                    &segment,
                    seed.wrapping_add(i as u64),
                )?),
            };
            interfaces.insert(name, stack);
        }
        rt.add(DeviceSetup {
            device: fieldtwin_models::build(site, dev),
            interfaces,
            rtc: dev.rtc,
            seed,
        })
        .with_context(|| format!("adding device {}", dev.id))?;
        let segments = fieldtwin_models::interfaces(dev)
            .into_iter()
            .map(|(name, _, segment)| (name, segment))
            .collect();
        rt.set_segments(&dev.id, segments)?;
    }
    if let Some(net) = net {
        rt.set_network(net.clone());
    }
    Ok(rt)
}

/// Every core in host mode; half of them, at least one, in TAP mode.
fn default_threads(tap: bool) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if tap { (cores / 2).max(1) } else { cores }
}

pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    let site = load_site(opts.site.as_deref())?;
    let tap = opts.net.tap || opts.net.netns.is_some();
    let threads = opts.threads.unwrap_or_else(|| default_threads(tap)).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let epoch = site.site.start.unwrap_or_else(chrono::Utc::now);
        let clock = Clock::start(epoch, opts.speed)?;
        let store = Store::open(opts.state.as_deref())?;
        let net = crate::tap::setup(&site, &opts.net)?;
        let rt = Arc::new(build_runtime(&site, clock, store, net.as_ref().map(|n| &n.network))?);
        let api = tokio::net::TcpListener::bind(opts.api)
            .await
            .with_context(|| format!("cannot open the control API on {} (use --api)", opts.api))?;
        for dev in site.devices.iter().filter(|d| d.powered) {
            rt.power_on(&dev.id).await?;
        }
        if net.is_none() && !host::privileged_ports() {
            println!(
                "note: this process may not bind ports below 1024; they are moved up by {} \
                 (502 -> {}, 443 -> {}). Run as root or grant CAP_NET_BIND_SERVICE to use the real ports.",
                host::PORT_OFFSET,
                502 + host::PORT_OFFSET,
                443 + host::PORT_OFFSET
            );
        }
        let mode = net.as_ref().map_or_else(|| "host mode".to_string(), |n| n.describe());
        println!("fieldtwin: site {:?}, {mode}, {} devices", site.site.name, site.devices.len());
        print!("{}", crate::report::table(&rt.statuses()));
        println!("control API: http://{}/api/v1/devices", api.local_addr()?);
        match opts.state.as_deref() {
            Some(dir) => println!("state: {}", dir.display()),
            None => println!("state: temporary (use --state DIR to keep it)"),
        }
        if opts.tui {
            // The dashboard is a client of the API like any other.
            let addr = api.local_addr()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(serve_api(api, control::router(rt.clone()), async move {
                tokio::select! {
                    _ = shutdown_signal() => {}
                    _ = stopped => {}
                }
            }));
            let dashboard = tokio::task::spawn_blocking(move || fieldtwin_tui::run(addr)).await;
            let _ = stop.send(());
            server.await??;
            dashboard??;
        } else {
            serve_api(api, control::router(rt.clone()), shutdown_signal()).await?;
        }
        println!("fieldtwin: shutting down");
        rt.shutdown().await?;
        anyhow::Ok(())
    })
}

/// How long the control API waits, once asked to stop, for its clients to
/// hang up. Event streams (a dashboard, `curl -N`) never do on their own.
const API_GRACE: Duration = Duration::from_secs(2);

/// Serves the control API until `stop` completes, then lets requests in
/// flight finish for at most [`API_GRACE`] and closes whatever is left
/// (open event streams), so a signal always ends the process.
async fn serve_api(
    api: tokio::net::TcpListener,
    router: axum::Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stopping = Arc::new(tokio::sync::Notify::new());
    let notify = stopping.clone();
    let server = axum::serve(api, router).with_graceful_shutdown(async move {
        stop.await;
        notify.notify_one();
    });
    tokio::select! {
        r = server.into_future() => r.context("control API failed"),
        _ = async {
            stopping.notified().await;
            tokio::time::sleep(API_GRACE).await;
        } => Ok(()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub fn site_show(file: Option<&Path>) -> anyhow::Result<()> {
    let site = match file {
        None => {
            print!("{}", fieldtwin_emulator::site::DEFAULT_SITE_TOML);
            Site::default_site()
        }
        Some(f) => {
            let site = Site::load(f)?;
            print!("{}", site.to_toml());
            site
        }
    };
    print!("{}", labels(&site));
    Ok(())
}

/// The product labels of the site's Panel Servers, as TOML comments: what
/// the sticker shows, device code included (derived from the seed where
/// the site file gives none).
fn labels(site: &Site) -> String {
    let lines: Vec<String> = site
        .devices
        .iter()
        .filter(|d| d.model.is_panel_server())
        .map(|d| {
            let label = fieldtwin_models::panel_server::label::Label::of(site, d);
            format!("#   {}: {}\n", d.id, label.text())
        })
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "\n# Product labels (the QR code gives the device code, the Wi-Fi access point's default password):\n{}",
        lines.concat()
    )
}

pub fn site_check(file: &Path) -> anyhow::Result<()> {
    let site =
        Site::load(file).with_context(|| format!("{} is not a valid site file", file.display()))?;
    println!(
        "{}: valid site {:?} with {} devices",
        file.display(),
        site.site.name,
        site.devices.len()
    );
    Ok(())
}
