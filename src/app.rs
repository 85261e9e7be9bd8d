//! Wiring of a running site: site file -> clock, NV store, devices on their
//! network backend, control API; and the `site` subcommands.
//!
//! Contract: `run` powers on every device the site marks powered, prints the
//! device table, serves the control API until Ctrl-C or SIGTERM, then powers
//! every device off (RTC backups saved), saves the site clock and flushes the
//! state before exiting. With `--state DIR` site time resumes where the last
//! run stopped (`--start` chooses another, later start).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use fieldtwin_emulator::clock::{Clock, Start};
use fieldtwin_emulator::control::{self, EventBus};
use fieldtwin_emulator::device::{DeviceSetup, Provisioner, Runtime};
use fieldtwin_emulator::net::Stack;
use fieldtwin_emulator::net::host::{self, HostStack};
use fieldtwin_emulator::site::{Model, Site, device_seed};
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
    /// Where site time starts: `resume` (default) continues the clock saved
    /// in the --state directory (or starts at the site file's `start`, else
    /// the host's time, when there is none); `now` starts at the host's time;
    /// an RFC 3339 time (2027-01-01T00:00:00Z) starts there. With a saved
    /// clock a start may not be earlier than where it stopped.
    #[arg(long, default_value = "resume")]
    start: Start,
    /// Speed of virtual time (1 = real time, up to 1000000).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Show the terminal dashboard (docs/tui.md) instead of the device
    /// table; quitting it stops the site.
    #[arg(long)]
    tui: bool,
    /// Scenario library served by the control API (`/api/v1/scenarios`,
    /// docs/control-api.md).
    #[arg(long, default_value = fieldtwin_scenarios::LIBRARY_DIR)]
    scenarios: PathBuf,
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

/// Builds the runtime of `site`: host mode, or TAP mode on the switch fabric
/// `net` (call inside a tokio runtime).
pub fn build_runtime(
    site: &Site,
    clock: Clock,
    store: Store,
    net: Option<&std::sync::Arc<fieldtwin_emulator::net::switch::Network>>,
) -> anyhow::Result<Runtime> {
    let retention =
        Duration::try_from_secs_f64(site.site.rtc_retention_days * 86_400.0).map_err(|_| {
            anyhow::anyhow!(
                "site.rtc_retention_days: {} is not a number of days from 0 to {}",
                site.site.rtc_retention_days,
                fieldtwin_emulator::site::MAX_RTC_RETENTION_DAYS
            )
        })?;
    let mut rt = Runtime::new(clock, store, EventBus::new(), retention);
    rt.radio().reseed(site.site.seed);
    rt.wifi().add_networks(site);
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
        if let Some(net) = net.filter(|_| dev.model == Model::DataLogger) {
            // TAP mode: the modem's data session crosses the carrier's NAT
            // (docs/datalogger.md "Carrier NAT").
            let stack = net.attach_cellular(&dev.id, &dev.segment, seed ^ 0xce11)?;
            interfaces.insert("cell".to_string(), Arc::new(stack));
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
    rt.set_provisioner(Provisioner {
        site: site.clone(),
        build: Arc::new(fieldtwin_models::build),
    });
    Ok(rt)
}

/// Every core in host mode; half of them, at least one, in TAP mode.
fn default_threads(tap: bool) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if tap { (cores / 2).max(1) } else { cores }
}

/// Devices on the most populated segment: one broadcast domain.
fn largest_segment(site: &Site) -> usize {
    let mut per = std::collections::HashMap::<&str, usize>::new();
    for d in &site.devices {
        *per.entry(d.segment.as_str()).or_default() += 1;
    }
    per.into_values().max().unwrap_or(0)
}

/// Boots in flight at start on a large site of small segments (see [`run`]).
pub const BOOT_PARALLEL: usize = 64;

/// Time between two power-ons at start, on a site whose largest segment
/// holds more than 256 devices (see [`run`]).
pub const BOOT_PACE: std::time::Duration = std::time::Duration::from_millis(1);

pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    let site = load_site(opts.site.as_deref())?;
    let tap = opts.net.tap || opts.net.netns.is_some();
    let threads = opts.threads.unwrap_or_else(|| default_threads(tap)).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = Store::open(opts.state.as_deref())?;
        let saved = store.saved_clock();
        let start = fieldtwin_emulator::clock::starting_clock(
            opts.start,
            site.site.start,
            saved,
            chrono::Utc::now(),
        )?;
        let clock = Clock::resume(start, opts.speed)?;
        let net = crate::tap::setup(&site, &opts.net)?;
        let rt = Arc::new(build_runtime(&site, clock, store, net.as_ref().map(|n| &n.network))?);
        let api = tokio::net::TcpListener::bind(opts.api)
            .await
            .with_context(|| format!("cannot open the control API on {} (use --api)", opts.api))?;
        // A boot takes well under a millisecond of CPU (no PBKDF2, no key
        // generation: models::security::work) but waits for its NV writes
        // to be durable. Powering thousands at once on ONE segment would
        // flood every port with their announcements (DPWS Hello, ARP)
        // faster than the devices drain them, and the process would keep
        // the peak of those queues (2.2x the RSS at 1,000 devices,
        // docs/performance.md): there one boot per BOOT_PACE lets the
        // devices already on handle them as they come. On segments of at
        // most ROUTER_ABOVE devices (a generated large site has 250 per
        // segment) a large site boots BOOT_PARALLEL devices at a time, so
        // their NV flushes overlap; a small site boots in site-file order,
        // one after the other (its event log stays in that order).
        let largest = largest_segment(&site);
        let powered: Vec<&str> = site
            .devices
            .iter()
            .filter(|d| d.powered)
            .map(|d| d.id.as_str())
            .collect();
        if largest > fieldtwin_emulator::site::ROUTER_ABOVE {
            for id in powered {
                rt.power_on(id).await?;
                tokio::time::sleep(BOOT_PACE).await;
            }
        } else if powered.len() > fieldtwin_emulator::site::ROUTER_ABOVE {
            // Spawned, so the boots run on every worker thread, not only on
            // the thread that polls this future.
            let mut boots = tokio::task::JoinSet::new();
            for id in powered {
                if boots.len() >= BOOT_PARALLEL
                    && let Some(r) = boots.join_next().await
                {
                    r??;
                }
                let (rt, id) = (rt.clone(), id.to_string());
                boots.spawn(async move { rt.power_on(&id).await.map(drop) });
            }
            while let Some(r) = boots.join_next().await {
                r??;
            }
        } else {
            for id in powered {
                rt.power_on(id).await?;
            }
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
        let site_time = start.site_time().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match saved {
            Some(s) if s == start => println!("site time: {site_time}, resumed from the state"),
            Some(s) => println!(
                "site time: {site_time}; the state stopped at {} (the site was off in between)",
                s.site_time().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => println!("site time: {site_time}"),
        }
        println!("control API: http://{}/api/v1/devices", api.local_addr()?);
        match opts.state.as_deref() {
            Some(dir) => println!("state: {}", dir.display()),
            None => println!("state: temporary (use --state DIR to keep it)"),
        }
        // The control API, with the scenario endpoints (the engine runs
        // scenarios against this very API).
        let routes = control::router(rt.clone()).merge(fieldtwin_scenarios::serve::router(
            fieldtwin_scenarios::serve::Service::new(
                api.local_addr()?,
                opts.scenarios.clone(),
                Some(rt.events().clone()),
            ),
        ));
        if opts.tui {
            // The dashboard is a client of the API like any other.
            let addr = api.local_addr()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(serve_api(api, routes, async move {
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
            serve_api(api, routes, shutdown_signal()).await?;
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
            let mut text = format!("#   {}: {}\n", d.id, label.text());
            // The wireless devices' labels: RF-ID and install code.
            for w in d.panel_server.iter().flat_map(|p| &p.wireless) {
                let rf_id = w
                    .rf_id
                    .as_deref()
                    .and_then(fieldtwin_emulator::site::parse_rf_id)
                    .unwrap_or(0);
                text += &format!(
                    "#     {}: {}  RF-ID {rf_id:016X}  Install code {}\n",
                    w.id,
                    w.model,
                    w.install_code(site.site.seed).text()
                );
            }
            text
        })
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "\n# Product labels (the QR code gives the device code, the Wi-Fi access point's default password;\n# a wireless device's label gives its RF-ID and the install code that pairs it):\n{}",
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

#[cfg(test)]
mod tests {
    //! Issue 16: no value in any field of a site file makes `site check`
    //! (`Site::parse`) or building the runtime panic; absurd numbers are
    //! refused naming the field.

    use super::*;
    use fieldtwin_emulator::site::SiteError;
    use proptest::prelude::*;
    use toml::Value;

    /// One step of a path into the TOML tree.
    #[derive(Debug, Clone)]
    enum Step {
        Key(String),
        Index(usize),
    }

    /// Paths of every leaf of `v` (and of every table and array, which a
    /// mutation may also replace whole).
    fn paths(v: &Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        match v {
            Value::Table(t) => {
                for (k, v) in t {
                    at.push(Step::Key(k.clone()));
                    out.push(at.clone());
                    paths(v, at, out);
                    at.pop();
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    at.push(Step::Index(i));
                    out.push(at.clone());
                    paths(v, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }

    fn key(k: &str) -> Step {
        Step::Key(k.to_string())
    }

    /// Every field of the default site: the fields its serialised form
    /// has, plus the optional ones it leaves out.
    fn every_field(base: &Value) -> Vec<Vec<Step>> {
        let mut out = Vec::new();
        paths(base, &mut Vec::new(), &mut out);
        out.push(vec![key("site"), key("start")]);
        out.push(vec![key("site"), key("rtc_retention_days")]);
        let devices = base
            .get("device")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..devices {
            let d = |k: &str| vec![key("device"), Step::Index(i), key(k)];
            for k in ["serial", "firmware", "profile", "dhcp", "powered"] {
                out.push(d(k));
            }
            out.push(vec![
                key("device"),
                Step::Index(i),
                key("rtc"),
                key("offset_s"),
            ]);
            out.push(vec![
                key("device"),
                Step::Index(i),
                key("rtc"),
                key("drift_ppm"),
            ]);
        }
        let ps = |k: &str| vec![key("device"), Step::Index(0), key("panel_server"), key(k)];
        for k in [
            "pbkdf2_iterations",
            "serial_pty",
            "device_code",
            "eth2_ip",
            "rstp",
            "tls13",
            "wifi_ap_ip",
            "wifi_ap_segment",
        ] {
            out.push(ps(k));
        }
        for j in 0..5 {
            let mut p = ps("wireless");
            p.extend([Step::Index(j), key("unit")]);
            out.push(p);
        }
        for j in 0..2 {
            for k in [
                "offset",
                "pulse_weight",
                "pulses_per_hour",
                "input",
                "polarity",
            ] {
                let mut p = ps("digital_input");
                p.extend([Step::Index(j), key(k)]);
                out.push(p);
            }
        }
        out
    }

    /// Sets `path` in `v` to `new` (creating the last key of a table).
    fn set(v: &mut Value, path: &[Step], new: Value) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut cur = v;
        for s in parents {
            cur = match (s, cur) {
                (Step::Key(k), Value::Table(t)) => match t.get_mut(k) {
                    Some(v) => v,
                    None => return,
                },
                (Step::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                    Some(v) => v,
                    None => return,
                },
                _ => return,
            };
        }
        match (last, cur) {
            (Step::Key(k), Value::Table(t)) => {
                t.insert(k.clone(), new);
            }
            (Step::Index(i), Value::Array(a)) if *i < a.len() => a[*i] = new,
            _ => {}
        }
    }

    fn scalar() -> impl Strategy<Value = Value> {
        let ints = prop_oneof![
            any::<i64>(),
            Just(0i64),
            Just(-1),
            Just(1),
            Just(255),
            Just(256),
            Just(65_535),
            Just(65_536),
            Just(i64::from(u32::MAX)),
            Just(i64::from(u32::MAX) + 1),
            Just(i64::MAX),
            Just(i64::MIN),
        ];
        let floats = prop_oneof![
            any::<f64>(),
            Just(1e300),
            Just(-1e300),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(1e19),
            Just(-0.0),
            Just(5e-324),
        ];
        let strings = prop_oneof![
            "\\PC{0,24}",
            Just(String::new()),
            Just("0x".to_string()),
            Just("10.77.0.999".to_string()),
            Just("10.77.0.255".to_string()),
            Just("0.0.0.0/0".to_string()),
            Just("999.999.999".to_string()),
            Just("000.000.000".to_string()),
            Just("ffffffffffffffffff".to_string()),
        ];
        let datetimes = (0u16..=9999, 1u8..=12, 1u8..=28, 0u8..=23).prop_filter_map(
            "a TOML datetime",
            |(y, m, d, h)| {
                format!("{y:04}-{m:02}-{d:02}T{h:02}:00:00Z")
                    .parse::<toml::value::Datetime>()
                    .ok()
                    .map(Value::Datetime)
            },
        );
        prop_oneof![
            3 => ints.prop_map(Value::Integer),
            3 => floats.prop_map(Value::Float),
            2 => strings.prop_map(Value::String),
            1 => any::<bool>().prop_map(Value::Boolean),
            1 => datetimes,
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            8 => scalar(),
            1 => proptest::collection::vec(scalar(), 0..3).prop_map(Value::Array),
            1 => proptest::collection::btree_map("[a-z_]{1,8}", scalar(), 0..3)
                .prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    }

    /// Builds the runtime of `site` in host mode without powering anything
    /// (no port is bound), as `run` does before power-on.
    fn build(site: &Site, tokio: &tokio::runtime::Runtime) -> anyhow::Result<()> {
        tokio.block_on(async {
            let epoch = site.site.start.unwrap_or_else(chrono::Utc::now);
            let clock = Clock::start(epoch, 1.0)?;
            let store = Store::open(None)?;
            let rt = build_runtime(site, clock, store, None)?;
            let _ = rt.statuses();
            let _ = labels(site);
            anyhow::Ok(())
        })
    }

    fn default_value() -> Value {
        Value::Table(toml::from_str(&Site::default_site().to_toml()).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        /// One or two fields of the default site take arbitrary TOML
        /// values: parsing never panics, and a site that passes the check
        /// builds its runtime without panicking.
        #[test]
        fn any_value_in_any_field_never_panics(
            picks in proptest::collection::vec((any::<prop::sample::Index>(), value()), 1..=2)
        ) {
            thread_local! {
                static TOKIO: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
            }
            let mut v = default_value();
            let fields = every_field(&v);
            for (i, new) in picks {
                set(&mut v, &fields[i.index(fields.len())], new);
            }
            let Ok(text) = toml::to_string(&v) else { return Ok(()) };
            if let Ok(site) = Site::parse(&text) {
                TOKIO.with(|t| build(&site, t)).map_err(|e| {
                    TestCaseError::fail(format!("a checked site does not build: {e:#}\n{text}"))
                })?;
            }
        }
    }

    /// Values no field of a site should take, or should take carefully.
    fn absurd_values() -> Vec<Value> {
        let mut v: Vec<Value> = [
            0i64,
            -1,
            1,
            255,
            256,
            65_536,
            i64::from(u32::MAX) + 1,
            i64::MAX,
            i64::MIN,
        ]
        .into_iter()
        .map(Value::Integer)
        .collect();
        v.extend(
            [
                0.0,
                -0.0,
                -1.0,
                0.5,
                1e300,
                -1e300,
                1e19,
                5e-324,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
            ]
            .into_iter()
            .map(Value::Float),
        );
        v.extend(
            [
                "",
                "0x",
                "10.77.0.255",
                "999.999.999",
                "../../etc",
                "\u{0}",
                "🙂🙂🙂",
            ]
            .into_iter()
            .map(|s| Value::String(s.into())),
        );
        v.extend(
            [
                "0000-01-01T00:00:00Z",
                "9999-12-31T23:59:59Z",
                "2026-01-01T00:00:00",
            ]
            .into_iter()
            .map(|s| Value::Datetime(s.parse().unwrap())),
        );
        v.push(Value::Boolean(true));
        v.push(Value::Array(vec![]));
        v.push(Value::Table(toml::Table::new()));
        v
    }

    /// Every field of the default site at every absurd value, one at a
    /// time: no panic in the check or in building the runtime.
    #[test]
    fn every_field_at_every_absurd_value_never_panics() {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let base = default_value();
        let fields = every_field(&base);
        let values = absurd_values();
        let (mut tried, mut accepted) = (0, 0);
        for path in &fields {
            for value in &values {
                let mut v = base.clone();
                set(&mut v, path, value.clone());
                let Ok(text) = toml::to_string(&v) else {
                    continue;
                };
                tried += 1;
                if let Ok(site) = Site::parse(&text) {
                    accepted += 1;
                    if let Err(e) = build(&site, &tokio) {
                        panic!("{path:?} = {value}: checked but does not build: {e:#}");
                    }
                }
            }
        }
        assert!(
            tried > 5000 && accepted > 100,
            "{tried} tried, {accepted} accepted"
        );
        println!(
            "{} fields x {} values: {tried} sites checked, {accepted} accepted and built",
            fields.len(),
            values.len()
        );
    }

    /// The site with `field = value` put into its TOML text at `path`.
    fn with(path: &[Step], value: Value) -> Result<Site, SiteError> {
        let mut v = default_value();
        set(&mut v, path, value);
        Site::parse(&toml::to_string(&v).unwrap())
    }

    #[test]
    fn absurd_numbers_are_refused_naming_the_field() {
        let ps = |k: &str| vec![key("device"), Step::Index(0), key("panel_server"), key(k)];
        let rtc = |k: &str| vec![key("device"), Step::Index(1), key("rtc"), key(k)];
        let di = |k: &str| {
            let mut p = ps("digital_input");
            p.extend([Step::Index(0), key(k)]);
            p
        };
        let cases: Vec<(Vec<Step>, Value, &str)> = vec![
            (
                vec![key("site"), key("rtc_retention_days")],
                Value::Float(1e300),
                "site.rtc_retention_days: 1e300 is out of range; allowed 0 to 3650 days",
            ),
            (
                vec![key("site"), key("rtc_retention_days")],
                Value::Float(-1.0),
                "site.rtc_retention_days",
            ),
            (
                vec![key("site"), key("start")],
                Value::Datetime("9999-01-01T00:00:00Z".parse().unwrap()),
                "site.start",
            ),
            (
                rtc("offset_s"),
                Value::Float(1e300),
                "device[1].rtc.offset_s",
            ),
            (
                rtc("offset_s"),
                Value::Float(-1e12),
                "device[1].rtc.offset_s",
            ),
            (
                rtc("drift_ppm"),
                Value::Float(1e6),
                "device[1].rtc.drift_ppm",
            ),
            (
                ps("pbkdf2_iterations"),
                Value::Integer(0),
                "pbkdf2_iterations: 0 is out of range",
            ),
            (
                ps("pbkdf2_iterations"),
                Value::Integer(i64::from(u32::MAX)),
                "device[0].panel_server.pbkdf2_iterations",
            ),
            (
                di("pulse_weight"),
                Value::Float(1e300),
                "digital_input[0].pulse_weight",
            ),
            (
                di("offset"),
                Value::Integer(i64::MAX),
                "digital_input[0].offset",
            ),
            (
                di("pulses_per_hour"),
                Value::Float(1e300),
                "digital_input[0].pulses_per_hour",
            ),
        ];
        for (path, value, want) in cases {
            let err = with(&path, value.clone())
                .expect_err(&format!("{path:?} = {value} was accepted"))
                .to_string();
            assert!(err.contains(want), "{path:?} = {value}: {err}");
        }
        // Values out of an integer field's type are named by the parser.
        let err = with(&ps("pbkdf2_iterations"), Value::Integer(-5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pbkdf2_iterations"), "{err}");
        // The largest allowed values still build.
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut v = default_value();
        set(
            &mut v,
            &[key("site"), key("rtc_retention_days")],
            Value::Float(3650.0),
        );
        set(&mut v, &rtc("offset_s"), Value::Float(-1.5e9));
        let site = Site::parse(&toml::to_string(&v).unwrap()).unwrap();
        build(&site, &tokio).unwrap();
    }
}
