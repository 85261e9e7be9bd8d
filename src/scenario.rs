//! `fieldtwin scenario run|list|check`: runs scenario files (docs/scenarios.md)
//! against a site this process starts (host mode, a fresh site with fresh
//! state for each scenario) or against a running site (`--api`).
//!
//! Contract: each step is printed as it is recorded, then a summary; with
//! `--junit` the JUnit XML is written; the exit status is non-zero when a
//! scenario failed, errored or could not be loaded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use fieldtwin_emulator::clock::Clock;
use fieldtwin_emulator::control;
use fieldtwin_emulator::site::Site;
use fieldtwin_emulator::storage::Store;
use fieldtwin_scenarios::engine::{self, Scenario, ScenarioResult};
use fieldtwin_scenarios::site::SiteClient;

#[derive(Debug, Subcommand)]
pub enum ScenarioCmd {
    /// Run scenarios (files, or names of the library) and report each step.
    Run {
        /// Scenario files or library names.
        #[arg(required = true)]
        scenarios: Vec<String>,
        /// Site file for every scenario (default: the one each header names).
        #[arg(long)]
        site: Option<PathBuf>,
        /// Attach to a running site's control API instead of starting one.
        #[arg(long, conflicts_with = "site")]
        api: Option<SocketAddr>,
        /// Write JUnit XML here.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Override the site's seed; a site file without a `start` then
        /// starts at 2026-01-01T00:00:00Z, and the clock is paused from the
        /// start (it moves only by the scenario's jumps), so runs
        /// repeat exactly.
        #[arg(long)]
        seed: Option<u64>,
        /// Write each scenario's event log here (JSON lines, a `# NAME`
        /// line before each scenario's events; clock events without their
        /// pending-timer fields).
        #[arg(long)]
        events: Option<PathBuf>,
        /// Library directory for names.
        #[arg(long, default_value = fieldtwin_scenarios::LIBRARY_DIR)]
        library: PathBuf,
    },
    /// List the scenarios of the library with their descriptions.
    List {
        #[arg(long, default_value = fieldtwin_scenarios::LIBRARY_DIR)]
        library: PathBuf,
    },
    /// Validate headers and compile scripts without running them.
    Check {
        #[arg(required = true)]
        scenarios: Vec<String>,
        #[arg(long, default_value = fieldtwin_scenarios::LIBRARY_DIR)]
        library: PathBuf,
    },
}

/// Runs the subcommand; returns the process exit code.
pub fn run(cmd: ScenarioCmd) -> anyhow::Result<u8> {
    match cmd {
        ScenarioCmd::List { library } => list(&library),
        ScenarioCmd::Check { scenarios, library } => check(&scenarios, &library),
        ScenarioCmd::Run {
            scenarios,
            site,
            api,
            junit,
            seed,
            events,
            library,
        } => run_all(
            &scenarios,
            &Outputs {
                site: site.as_deref(),
                api,
                junit: junit.as_deref(),
                events: events.as_deref(),
                seed,
            },
            &library,
        ),
    }
}

fn list(library: &Path) -> anyhow::Result<u8> {
    let files = fieldtwin_scenarios::library(library)
        .with_context(|| format!("cannot read the library {}", library.display()))?;
    let mut bad = 0;
    for f in files {
        let stem = f.file_stem().unwrap_or_default().to_string_lossy();
        match Scenario::load(&f) {
            Ok(s) => println!(
                "{stem:<32} {}{}\n{:<32} {}",
                s.header.name,
                if s.header.tags.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", s.header.tags.join(", "))
                },
                "",
                s.header.description
            ),
            Err(e) => {
                bad += 1;
                println!("{stem:<32} INVALID: {e}");
            }
        }
    }
    Ok(u8::from(bad > 0))
}

fn check(args: &[String], library: &Path) -> anyhow::Result<u8> {
    let mut bad = 0;
    for a in args {
        let checked = fieldtwin_scenarios::resolve(a, library)
            .map_err(anyhow::Error::msg)
            .and_then(|p| {
                let s = Scenario::load(&p)?;
                s.check()?;
                Ok(s)
            });
        match checked {
            Ok(s) => println!("{}: valid scenario {:?}", s.path.display(), s.header.name),
            Err(e) => {
                bad += 1;
                println!("{e}");
            }
        }
    }
    Ok(u8::from(bad > 0))
}

/// A site started in this process for one scenario.
struct LocalSite {
    tokio: tokio::runtime::Runtime,
    rt: Arc<fieldtwin_emulator::device::Runtime>,
    api: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LocalSite {
    /// Starts `site`; `paused`: the clock is paused from the start, so
    /// virtual time moves only when the scenario jumps it.
    fn start(site: &Site, paused: bool) -> anyhow::Result<Self> {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (rt, api, stop) = tokio.block_on(async {
            let epoch = site.site.start.unwrap_or_else(chrono::Utc::now);
            let clock = if paused {
                Clock::start_paused(epoch, 1.0)?
            } else {
                Clock::start(epoch, 1.0)?
            };
            let store = Store::open(None)?;
            let rt = Arc::new(crate::app::build_runtime(site, clock, store, None)?);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let api = listener.local_addr()?;
            for dev in site.devices.iter().filter(|d| d.powered) {
                rt.power_on(&dev.id).await?;
            }
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = axum::serve(listener, control::router(rt.clone())).with_graceful_shutdown(
                async move {
                    let _ = stopped.await;
                },
            );
            tokio::spawn(server.into_future());
            anyhow::Ok((rt, api, stop))
        })?;
        Ok(Self {
            tokio,
            rt,
            api,
            stop: Some(stop),
        })
    }

    fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let rt = self.rt.clone();
        if let Err(e) = self.tokio.block_on(async move { rt.shutdown().await }) {
            eprintln!("warning: site shutdown: {e}");
        }
        self.tokio
            .shutdown_timeout(std::time::Duration::from_secs(5));
    }
}

/// An event as the event log writes it. Clock events keep site time,
/// elapsed time, speed and pause, not the sleepers pending at that instant:
/// those include the timers of connection tasks still winding down, which
/// depend on thread scheduling rather than on the site's behaviour.
fn log_line(e: &serde_json::Value) -> String {
    let mut e = e.clone();
    if e["event"] == "clock"
        && let Some(m) = e.as_object_mut()
    {
        m.remove("pending_timers");
        m.remove("next_deadlines_s");
    }
    e.to_string()
}

/// Site start of a seeded run whose site file gives none.
const SEEDED_START: chrono::DateTime<chrono::Utc> =
    chrono::DateTime::from_timestamp_nanos(1_767_225_600_000_000_000);

/// Where a run reads its site and writes its reports.
struct Outputs<'a> {
    site: Option<&'a Path>,
    api: Option<SocketAddr>,
    junit: Option<&'a Path>,
    events: Option<&'a Path>,
    seed: Option<u64>,
}

fn load_site(scenario: &Scenario, over: Option<&Path>, seed: Option<u64>) -> anyhow::Result<Site> {
    let mut site = match over {
        Some(f) => Site::load(f)?,
        None if scenario.header.site == "default" => Site::default_site(),
        None => {
            let base = scenario.path.parent().unwrap_or(Path::new("."));
            let f = base.join(&scenario.header.site);
            Site::load(&f).with_context(|| {
                format!(
                    "{}: the header's site {:?} is not a valid site file",
                    scenario.path.display(),
                    f.display()
                )
            })?
        }
    };
    if let Some(s) = seed {
        site.site.seed = s;
        site.site.start.get_or_insert(SEEDED_START);
    }
    Ok(site)
}

fn run_one(
    scenario: &Scenario,
    site: Option<&Path>,
    api: Option<SocketAddr>,
    seed: Option<u64>,
) -> ScenarioResult {
    let fail = |e: String| ScenarioResult::not_run(&scenario.path, &scenario.header.name, e);
    let local = match api {
        Some(_) => None,
        None => match load_site(scenario, site, seed)
            .and_then(|s| LocalSite::start(&s, seed.is_some()))
        {
            Ok(l) => Some(l),
            Err(e) => {
                return fail(format!(
                    "{}: cannot start the site: {e:#}",
                    scenario.path.display()
                ));
            }
        },
    };
    let addr = api
        .or(local.as_ref().map(|l| l.api))
        .expect("api or local site");
    let result = match SiteClient::connect(addr) {
        Ok(client) => engine::run(scenario, Arc::new(client), |step| {
            println!("{}", engine::line_text(step))
        }),
        Err(e) => fail(e),
    };
    if let Some(l) = local {
        l.stop();
    }
    result
}

fn run_all(args: &[String], o: &Outputs, library: &Path) -> anyhow::Result<u8> {
    let (site, api, junit, seed) = (o.site, o.api, o.junit, o.seed);
    let mut results = Vec::new();
    for a in args {
        let loaded = fieldtwin_scenarios::resolve(a, library)
            .map_err(anyhow::Error::msg)
            .and_then(|p| {
                let s = Scenario::load(&p)?;
                s.check()?;
                Ok(s)
            });
        let scenario = match loaded {
            Ok(s) => s,
            Err(e) => {
                println!("ERROR {e:#}");
                results.push(ScenarioResult::not_run(Path::new(a), a, format!("{e:#}")));
                continue;
            }
        };
        println!("== {} ({})", scenario.header.name, scenario.path.display());
        let r = run_one(&scenario, site, api, seed);
        if let Some(e) = &r.error {
            println!("ERROR {e}");
        }
        println!(
            "{} {} ({} steps, {} failed, {:.2} s wall)\n",
            if r.passed() { "PASS" } else { "FAIL" },
            r.name,
            r.steps.len(),
            r.steps.iter().filter(|s| !s.passed).count(),
            r.wall_s
        );
        results.push(r);
    }
    let passed = results.iter().filter(|r| r.passed()).count();
    println!(
        "scenarios: {passed} passed, {} failed, {:.2} s wall",
        results.len() - passed,
        results.iter().map(|r| r.wall_s).sum::<f64>()
    );
    for r in results.iter().filter(|r| !r.passed()) {
        match (&r.error, r.first_failure()) {
            (Some(e), _) => println!("  FAILED {}: {e}", r.name),
            (None, Some(s)) => println!(
                "  FAILED {}: step {} ({}:{}): {}",
                r.name,
                s.n,
                r.path.display(),
                s.line,
                s.message
            ),
            _ => {}
        }
    }
    if let Some(out) = o.events {
        let mut text = String::new();
        for r in &results {
            text.push_str(&format!("# {}\n", r.name));
            for e in &r.events {
                text.push_str(&log_line(e));
                text.push('\n');
            }
        }
        std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
        println!("events: {}", out.display());
    }
    if let Some(out) = junit {
        std::fs::write(
            out,
            fieldtwin_scenarios::junit::write("fieldtwin scenarios", &results),
        )
        .with_context(|| format!("cannot write {}", out.display()))?;
        println!("JUnit: {}", out.display());
    }
    Ok(u8::from(passed != results.len()))
}
