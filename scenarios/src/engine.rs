//! Runs one scenario: a sandboxed Rhai engine with the scenario API bound to
//! a [`SiteClient`], recording every assertion as a [`Step`].
//!
//! Contract:
//! - Sandbox: at most [`MAX_OPERATIONS`] operations, call depth
//!   [`MAX_CALL_LEVELS`], strings of [`MAX_STRING`] bytes, arrays of
//!   [`MAX_ARRAY`] items, maps of [`MAX_MAP`] entries; no `import` (no
//!   module resolver), no `eval`; the only outside access is the API below.
//!   The header's `wall_timeout` stops a script that waits too long, its
//!   `timeout` bounds the virtual time it may advance.
//! - Assertions (`expect`, `expect_eq`, `eventually`, `always`,
//!   `expect_audit`, `expect_event`) record a step and the script goes on;
//!   `require` and `fail` record a failed step and stop the scenario. A
//!   script error (bad call, unknown device, malformed duration, operation
//!   limit) stops the scenario and names file, line and column.
//! - Time: `sleep(d)` jumps the site's virtual clock by `d` (every timer due
//!   in between fires in order), then gives the site a few wall
//!   milliseconds to react; `eventually`/`always` poll on that clock.
//! - Every function of the API is listed in docs/scenarios.md.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext, Position};
use serde_json::{Value, json};

use crate::duration::parse_duration;
use crate::header::{Header, HeaderError};
use crate::site::{ModbusOutcome, SiteClient};

/// Operation budget of a script.
pub const MAX_OPERATIONS: u64 = 20_000_000;
/// Nesting of function calls.
pub const MAX_CALL_LEVELS: usize = 64;
/// Longest string, in bytes.
pub const MAX_STRING: usize = 4 << 20;
/// Longest array.
pub const MAX_ARRAY: usize = 100_000;
/// Largest map.
pub const MAX_MAP: usize = 10_000;
/// Wall time given to the site after each clock jump.
const SETTLE: Duration = Duration::from_millis(25);
/// Quiet spell the site's start must end with before the first step.
const START_QUIET: Duration = Duration::from_millis(150);
/// Longest wait for the site's start to go quiet.
const START_SETTLE_MAX: Duration = Duration::from_secs(3);

const STOP: &str = "\u{1}scenario stopped";

/// One recorded step: the control API's (the served runs show the same).
pub use fieldtwin_emulator::scenario_api::Step;

/// A step as one line of the runner's output.
pub fn line_text(step: &Step) -> String {
    let mark = match (step.kind.as_str(), step.passed) {
        ("log", _) => "  ..",
        (_, true) => "  ok",
        (_, false) => "FAIL",
    };
    let observed = if step.observed.is_empty() || (step.passed && step.kind == "log") {
        String::new()
    } else {
        format!(" (observed: {})", step.observed)
    };
    format!(
        "{mark} [{:>3}] t={:.3}s wall={:.2}s line {}: {} {}{observed}",
        step.n, step.virtual_s, step.wall_s, step.line, step.kind, step.message
    )
}

/// A scenario file: its path, text and header.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: PathBuf,
    pub text: String,
    pub header: Header,
}

/// Why a scenario could not be loaded or compiled.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: header {source}")]
    Header { path: String, source: HeaderError },
    #[error("{path}:{line}:{column}: syntax error: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_text(path, text)
    }

    pub fn from_text(path: &Path, text: String) -> Result<Self, LoadError> {
        let header = Header::parse(&text).map_err(|source| LoadError::Header {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            text,
            header,
        })
    }

    /// Compiles the script (syntax check) without running it.
    pub fn check(&self) -> Result<(), LoadError> {
        let engine = sandbox(Arc::new(AtomicU64::new(u64::MAX)));
        engine.compile(&self.text).map(|_| ()).map_err(|e| {
            let pos = e.position();
            LoadError::Syntax {
                path: self.path.display().to_string(),
                line: pos.line().unwrap_or(0),
                column: pos.position().unwrap_or(0),
                message: e.err_type().to_string(),
            }
        })
    }
}

/// The outcome of one scenario.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    pub path: PathBuf,
    pub name: String,
    pub steps: Vec<Step>,
    /// A script error, with file, line and column.
    pub error: Option<String>,
    pub wall_s: f64,
    /// The site's events seen while the scenario ran, in stream order.
    pub events: Vec<Value>,
}

impl ScenarioResult {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.steps.iter().all(|s| s.passed)
    }

    /// The first failed step, if any.
    pub fn first_failure(&self) -> Option<&Step> {
        self.steps.iter().find(|s| !s.passed)
    }

    /// A result for a scenario that could not start.
    pub fn not_run(path: &Path, name: &str, error: String) -> Self {
        Self {
            path: path.to_path_buf(),
            name: name.to_string(),
            steps: Vec::new(),
            error: Some(error),
            wall_s: 0.0,
            events: Vec::new(),
        }
    }
}

/// A bare sandboxed engine (limits, no modules, no eval).
fn sandbox(wall_deadline_ms: Arc<AtomicU64>) -> Engine {
    sandbox_with(wall_deadline_ms, MAX_OPERATIONS)
}

fn sandbox_with(wall_deadline_ms: Arc<AtomicU64>, max_operations: u64) -> Engine {
    let mut e = Engine::new();
    e.set_max_operations(max_operations)
        .set_max_call_levels(MAX_CALL_LEVELS)
        .set_max_expr_depths(128, 64)
        .set_max_string_size(MAX_STRING)
        .set_max_array_size(MAX_ARRAY)
        .set_max_map_size(MAX_MAP)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
        .disable_symbol("eval");
    let start = Instant::now();
    e.on_progress(move |ops| {
        if ops % 1024 == 0
            && start.elapsed().as_millis() as u64 > wall_deadline_ms.load(Ordering::Relaxed)
        {
            Some(Dynamic::from("wall timeout".to_string()))
        } else {
            None
        }
    });
    e
}

struct Ctx {
    site: Arc<SiteClient>,
    steps: Mutex<Vec<Step>>,
    on_step: Box<dyn Fn(&Step) + Send + Sync>,
    started: Instant,
    /// Event stream position when the scenario started.
    first_event: usize,
    /// Virtual seconds advanced by the scenario, and its budget.
    advanced: Mutex<f64>,
    budget_s: f64,
    /// The publication server, once the script starts it.
    receiver: Mutex<Option<crate::receiver::Receiver>>,
}

type R<T> = Result<T, Box<EvalAltResult>>;

fn rerr(msg: impl Into<String>) -> Box<EvalAltResult> {
    msg.into().into()
}

impl Ctx {
    fn record(&self, pos: Position, kind: &str, message: &str, passed: bool, observed: String) {
        let virtual_s = self.site.elapsed_s().unwrap_or(f64::NAN);
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let step = Step {
            n: steps.len() + 1,
            kind: kind.to_string(),
            message: message.to_string(),
            passed,
            observed,
            virtual_s,
            wall_s: self.started.elapsed().as_secs_f64(),
            line: pos.line().unwrap_or(0),
        };
        (self.on_step)(&step);
        steps.push(step);
    }

    fn advance(&self, secs: f64) -> R<()> {
        {
            let mut a = self.advanced.lock().unwrap_or_else(|e| e.into_inner());
            if *a + secs > self.budget_s {
                return Err(rerr(format!(
                    "the scenario would advance virtual time past its timeout of {} s (raise `//! timeout:`)",
                    self.budget_s
                )));
            }
            *a += secs;
        }
        if secs > 0.0 {
            self.site
                .command(&json!({"command": "advance_clock", "seconds": secs}))
                .map_err(rerr)?;
        }
        self.site.settle(SETTLE);
        Ok(())
    }

    /// Runs a command, then lets the site settle, so the events it causes
    /// (a boot, a reboot) land before the next step.
    fn cmd(&self, v: Value) -> R<Dynamic> {
        let reply = self.site.command(&v).map_err(rerr)?;
        self.site.settle(SETTLE);
        to_dyn(&reply)
    }

    fn device(&self, id: &str) -> R<Value> {
        self.site.device(id).map_err(rerr)
    }
}

fn to_dyn(v: &Value) -> R<Dynamic> {
    rhai::serde::to_dynamic(v)
}

fn to_json(d: &Dynamic) -> R<Value> {
    rhai::serde::from_dynamic(d)
}

/// A duration argument: a string like "10s"/"10min" or a number of seconds.
fn secs(d: &Dynamic) -> R<f64> {
    if let Some(s) = d.clone().try_cast::<rhai::ImmutableString>() {
        return parse_duration(&s).map(|d| d.as_secs_f64()).map_err(rerr);
    }
    if let Ok(i) = d.as_int() {
        return parse_duration(&i.to_string())
            .map(|d| d.as_secs_f64())
            .map_err(rerr);
    }
    if let Ok(f) = d.as_float() {
        return parse_duration(&f.to_string())
            .map(|d| d.as_secs_f64())
            .map_err(rerr);
    }
    Err(rerr(format!(
        "malformed duration {d} (a {}); write e.g. \"10s\", \"10min\" or a number of seconds",
        d.type_name()
    )))
}

fn show(d: &Dynamic) -> String {
    let s = d.to_string();
    if s.len() > 300 {
        format!("{}...", &s[..s.floor_char_boundary(300)])
    } else {
        s
    }
}

fn unit(i: i64) -> R<u8> {
    u8::try_from(i).map_err(|_| rerr(format!("unknown unit id {i}; a Modbus unit id is 0..=255")))
}

/// A register number as the guides write it (1-based, like `mbpoll -r`) to
/// the protocol address (0-based).
fn register_addr(i: i64) -> R<u16> {
    if (1..=65_536).contains(&i) {
        Ok((i - 1) as u16)
    } else {
        Err(rerr(format!(
            "register {i} is out of range 1..=65536 (registers are numbered as in the guides, from 1)"
        )))
    }
}

fn reg(i: i64, what: &str) -> R<u16> {
    u16::try_from(i).map_err(|_| rerr(format!("{what} {i} is out of range 0..=65535")))
}

fn modbus_map(o: ModbusOutcome) -> Map {
    let mut m = Map::new();
    let (ok, values, exception, error) = match o {
        ModbusOutcome::Values(v) => (
            true,
            v.into_iter()
                .map(|x| Dynamic::from(i64::from(x)))
                .collect::<Array>(),
            0,
            String::new(),
        ),
        ModbusOutcome::Written => (true, Array::new(), 0, String::new()),
        ModbusOutcome::Exception(c) => (false, Array::new(), i64::from(c), String::new()),
        ModbusOutcome::Failed(e) => (false, Array::new(), 0, e),
    };
    m.insert("ok".into(), ok.into());
    m.insert("values".into(), values.into());
    m.insert("exception".into(), exception.into());
    m.insert("error".into(), error.into());
    m
}

fn web_map(r: crate::web::WebResponse) -> Map {
    let mut m = Map::new();
    m.insert("status".into(), i64::from(r.status).into());
    m.insert(
        "location".into(),
        r.header("location").unwrap_or("").to_string().into(),
    );
    let mut h = Map::new();
    for (k, v) in &r.headers {
        h.insert(k.as_str().into(), v.clone().into());
    }
    m.insert("headers".into(), h.into());
    m.insert("body".into(), r.body.into());
    m
}

fn fields(m: &Map) -> Vec<(String, String)> {
    m.iter()
        .map(|(k, v)| {
            let v = v
                .clone()
                .try_cast::<rhai::ImmutableString>()
                .map(|s| s.to_string())
                .unwrap_or_else(|| v.to_string());
            (k.to_string(), v)
        })
        .collect()
}

/// The CSRF token of a page's form.
fn csrf_of(body: &str) -> Option<String> {
    body.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .map(String::from)
}

/// GETs `page` of device `id` over HTTPS and gives the CSRF token of its
/// form (an error naming the page when it has none: not logged in, ...).
fn page_csrf(cx: &Ctx, id: &str, page: &str) -> R<String> {
    let p = cx.site.https(id, "GET", page, None).map_err(rerr)?;
    csrf_of(&p.body).ok_or_else(|| {
        rerr(format!(
            "{page} has no form with a CSRF token (status {}; logged in?)",
            p.status
        ))
    })
}

fn call_bool(ctx: &NativeCallContext, f: &FnPtr) -> R<bool> {
    let v: Dynamic = f.call_within_context(ctx, ())?;
    v.as_bool()
        .map_err(|t| rerr(format!("the condition closure returned a {t}, not a bool")))
}

/// Subset match of an event against a pattern map.
fn matches(event: &Value, pattern: &Value) -> bool {
    match (event, pattern) {
        (Value::Object(e), Value::Object(p)) => p
            .iter()
            .all(|(k, pv)| e.get(k).is_some_and(|ev| matches(ev, pv))),
        (Value::String(e), Value::String(p)) => e == p || e.contains(p.as_str()),
        (e, p) => e == p,
    }
}

/// Runs `scenario` against `site`; `on_step` sees each step as it is recorded.
pub fn run(
    scenario: &Scenario,
    site: Arc<SiteClient>,
    on_step: impl Fn(&Step) + Send + Sync + 'static,
) -> ScenarioResult {
    // What the site was doing before (boots, first sessions, stations
    // connecting to their controller over TLS) has its say before the first
    // step: a longer quiet spell than between steps, so a slow start on a
    // loaded machine does not leak into the scenario's event log.
    site.settle_within(START_QUIET, START_SETTLE_MAX);
    let started = Instant::now();
    let first_event = site.events().len();
    let ctx = Arc::new(Ctx {
        site,
        steps: Mutex::new(Vec::new()),
        on_step: Box::new(on_step),
        started,
        first_event,
        advanced: Mutex::new(0.0),
        budget_s: scenario.header.timeout.as_secs_f64(),
        receiver: Mutex::new(None),
    });
    let deadline = Arc::new(AtomicU64::new(
        scenario.header.wall_timeout.as_millis() as u64
    ));
    let mut engine = sandbox(deadline);
    register(&mut engine, &ctx);
    let path = scenario.path.display().to_string();
    let error = match engine.compile(&scenario.text) {
        Err(e) => {
            let pos = e.position();
            Some(format!(
                "{path}:{}:{}: syntax error: {}",
                pos.line().unwrap_or(0),
                pos.position().unwrap_or(0),
                e.err_type()
            ))
        }
        Ok(ast) => match engine.run_ast(&ast) {
            Ok(()) => None,
            Err(e) => describe(&path, &e, &scenario.header, MAX_OPERATIONS),
        },
    };
    let steps = ctx.steps.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let wall_s = started.elapsed().as_secs_f64();
    ctx.site.settle(SETTLE);
    let events = ctx.site.events()[first_event..]
        .iter()
        .map(|e| e.event.clone())
        .collect();
    ScenarioResult {
        path: scenario.path.clone(),
        name: scenario.header.name.clone(),
        steps,
        error,
        wall_s,
        events,
    }
}

/// The message of a script error (None for a deliberate stop).
fn describe(path: &str, e: &EvalAltResult, header: &Header, max_operations: u64) -> Option<String> {
    let mut inner = e;
    // A closure error arrives wrapped in ErrorInFunctionCall; report the innermost.
    while let EvalAltResult::ErrorInFunctionCall(_, _, next, _) = inner {
        inner = next;
    }
    if let EvalAltResult::ErrorRuntime(v, _) = inner
        && v.to_string() == STOP
    {
        return None;
    }
    let pos = match inner.position() {
        p if p.is_none() => e.position(),
        p => p,
    };
    let what = match inner {
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "the script exceeded its limit of {max_operations} operations and was stopped (an endless loop?)"
        ),
        EvalAltResult::ErrorTerminated(..) => format!(
            "the script ran longer than its wall_timeout of {} s and was stopped",
            header.wall_timeout.as_secs_f64()
        ),
        EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
        other => other.to_string(),
    };
    let what = what.split(" (line ").next().unwrap_or(&what).to_string();
    Some(format!(
        "{path}:{}:{}: {what}",
        pos.line().unwrap_or(0),
        pos.position().unwrap_or(0)
    ))
}

fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    macro_rules! c {
        () => {
            ctx.clone()
        };
    }
    // ---- output ----
    {
        let cx = c!();
        engine.on_print(move |s| cx.record(Position::NONE, "log", s, true, String::new()));
        let cx = c!();
        engine.on_debug(move |s, _, pos| cx.record(pos, "log", s, true, String::new()));
        let cx = c!();
        engine.register_fn("log", move |n: NativeCallContext, s: &str| {
            cx.record(n.call_position(), "log", s, true, String::new());
        });
    }
    // ---- assertions ----
    let cx = c!();
    engine.register_fn(
        "expect",
        move |n: NativeCallContext, cond: bool, msg: &str| {
            cx.record(n.call_position(), "expect", msg, cond, String::new());
            cond
        },
    );
    let cx = c!();
    engine.register_fn("expect", move |n: NativeCallContext, cond: bool| {
        cx.record(
            n.call_position(),
            "expect",
            "condition holds",
            cond,
            String::new(),
        );
        cond
    });
    let cx = c!();
    engine.register_fn(
        "expect_eq",
        move |n: NativeCallContext, actual: Dynamic, expected: Dynamic, msg: &str| -> R<bool> {
            let ok = to_json(&actual)? == to_json(&expected)?;
            let observed = if ok {
                show(&actual)
            } else {
                format!("{} != expected {}", show(&actual), show(&expected))
            };
            cx.record(n.call_position(), "expect_eq", msg, ok, observed);
            Ok(ok)
        },
    );
    let cx = c!();
    engine.register_fn(
        "require",
        move |n: NativeCallContext, cond: bool, msg: &str| -> R<()> {
            cx.record(n.call_position(), "require", msg, cond, String::new());
            if cond { Ok(()) } else { Err(rerr(STOP)) }
        },
    );
    let cx = c!();
    engine.register_fn("fail", move |n: NativeCallContext, msg: &str| -> R<()> {
        cx.record(n.call_position(), "fail", msg, false, String::new());
        Err(rerr(STOP))
    });
    for (name, always) in [("eventually", false), ("always", true)] {
        let cx = c!();
        let poll =
            move |n: &NativeCallContext, within: &Dynamic, msg: &str, f: &FnPtr| -> R<bool> {
                let total = secs(within)?;
                let step = (total / 50.0).clamp(0.05, 5.0);
                let mut waited = 0.0;
                loop {
                    let ok = call_bool(n, f)?;
                    if always && !ok {
                        let m = format!("{msg} (false after {waited:.3} s of {total} s)");
                        cx.record(n.call_position(), name, &m, false, "false".into());
                        return Ok(false);
                    }
                    if !always && ok {
                        let m = format!("{msg} (held after {waited:.3} s, within {total} s)");
                        cx.record(n.call_position(), name, &m, true, "true".into());
                        return Ok(true);
                    }
                    if waited >= total {
                        let m = if always {
                            format!("{msg} (held for {total} s)")
                        } else {
                            format!("{msg} (still false after {total} s)")
                        };
                        cx.record(n.call_position(), name, &m, always, ok.to_string());
                        return Ok(always);
                    }
                    let d = step.min(total - waited);
                    cx.advance(d)?;
                    waited += d;
                }
            };
        let p = poll.clone();
        engine.register_fn(
            name,
            move |n: NativeCallContext, within: Dynamic, msg: &str, f: FnPtr| {
                p(&n, &within, msg, &f)
            },
        );
        engine.register_fn(
            name,
            move |n: NativeCallContext, within: Dynamic, f: FnPtr| {
                let msg = if always {
                    "condition always holds"
                } else {
                    "condition eventually holds"
                };
                poll(&n, &within, msg, &f)
            },
        );
    }
    let cx = c!();
    engine.register_fn(
        "expect_audit",
        move |n: NativeCallContext, device: &str, kind: &str| -> R<bool> {
            let st = cx.device(device)?;
            let tail = st["details"]["audit_tail"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ok = tail.iter().any(|a| {
                a["kind"].as_str() == Some(kind)
                    || a["detail"].as_str().is_some_and(|d| d.contains(kind))
            });
            let kinds: Vec<&str> = tail
                .iter()
                .rev()
                .take(5)
                .filter_map(|a| a["kind"].as_str())
                .collect();
            cx.record(
                n.call_position(),
                "expect_audit",
                &format!("{device} audit log has a {kind:?} entry"),
                ok,
                format!("newest kinds: {kinds:?}"),
            );
            Ok(ok)
        },
    );
    let cx = c!();
    let find_event = move |pattern: &Value| -> bool {
        cx.site.events()[cx.first_event..]
            .iter()
            .any(|e| matches(&e.event, pattern))
    };
    let fe = find_event.clone();
    let cx = c!();
    engine.register_fn(
        "expect_event",
        move |n: NativeCallContext, pattern: Map| -> R<bool> {
            cx.site.settle(SETTLE);
            let p = to_json(&Dynamic::from_map(pattern))?;
            let ok = fe(&p);
            cx.record(
                n.call_position(),
                "expect_event",
                &format!("an event matching {p}"),
                ok,
                String::new(),
            );
            Ok(ok)
        },
    );
    let cx = c!();
    engine.register_fn(
        "expect_event",
        move |n: NativeCallContext, device: &str, kind: &str| -> R<bool> {
            cx.site.settle(SETTLE);
            let p = json!({"event": "device", "device": device, "kind": kind});
            let ok = find_event(&p);
            cx.record(
                n.call_position(),
                "expect_event",
                &format!("a {kind:?} event from {device}"),
                ok,
                String::new(),
            );
            Ok(ok)
        },
    );
    // ---- the site ----
    let cx = c!();
    engine.register_fn("devices", move || -> R<Dynamic> {
        to_dyn(&cx.site.devices().map_err(rerr)?)
    });
    let cx = c!();
    engine.register_fn("device", move |id: &str| -> R<Dynamic> {
        to_dyn(&cx.device(id)?)
    });
    let cx = c!();
    engine.register_fn("power_state", move |id: &str| -> R<String> {
        Ok(cx.device(id)?["power"]
            .as_str()
            .unwrap_or("unknown")
            .to_string())
    });
    for (name, action) in [
        ("power_on", "on"),
        ("power_off", "off"),
        ("power_cycle", "cycle"),
    ] {
        let cx = c!();
        engine.register_fn(name, move |id: &str| -> R<Dynamic> {
            cx.cmd(json!({"command": "power", "device": id, "action": action}))
        });
    }
    let cx = c!();
    engine.register_fn("factory_reset", move |id: &str| -> R<Dynamic> {
        cx.cmd(json!({"command": "factory_reset", "device": id}))
    });
    let cx = c!();
    engine.register_fn(
        "restart_button",
        move |id: &str, hold: Dynamic| -> R<Dynamic> {
            let hold_s = secs(&hold)?;
            cx.cmd(json!({"command": "restart_button", "device": id, "hold_s": hold_s}))
        },
    );
    let cx = c!();
    engine.register_fn("command", move |m: Map| -> R<Dynamic> {
        cx.cmd(to_json(&Dynamic::from_map(m))?)
    });
    let cx = c!();
    engine.register_fn(
        "field_power",
        move |id: &str, field: &str, on: bool| -> R<Dynamic> {
            cx.cmd(json!({"command": "field_power", "device": id, "field": field, "on": on}))
        },
    );
    let cx = c!();
    engine.register_fn("modbus_service", move |id: &str, iface: &str, on: bool| -> R<Dynamic> {
        cx.cmd(json!({"command": "modbus_service", "device": id, "interface": iface, "enabled": on}))
    });
    let cx = c!();
    engine.register_fn("link", move |id: &str, fault: Map| -> R<Dynamic> {
        cx.cmd(json!({"command": "set_link", "device": id, "fault": to_json(&Dynamic::from_map(fault))?}))
    });
    let cx = c!();
    engine.register_fn("password", move |id: &str, service: &str| -> R<String> {
        let st = cx.device(id)?;
        st["credentials"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["service"].as_str() == Some(service))
            .and_then(|c| c["password"].as_str())
            .and_then(|p| p.split_whitespace().next())
            .map(String::from)
            .ok_or_else(|| rerr(format!("device {id} lists no {service:?} login")))
    });
    let cx = c!();
    engine.register_fn("rtc_offset", move |id: &str| -> R<f64> {
        cx.device(id)?["rtc_offset_s"]
            .as_f64()
            .ok_or_else(|| rerr(format!("device {id} has no running RTC (is it on?)")))
    });
    let cx = c!();
    engine.register_fn("audit", move |id: &str| -> R<Dynamic> {
        to_dyn(&cx.device(id)?["details"]["audit_tail"].clone())
    });
    let cx = c!();
    engine.register_fn("events", move || -> R<Dynamic> {
        cx.site.settle(SETTLE);
        let ev: Vec<Value> = cx.site.events()[cx.first_event..]
            .iter()
            .map(|e| e.event.clone())
            .collect();
        to_dyn(&Value::Array(ev))
    });
    // ---- the clock ----
    // Typed overloads: Rhai's own `sleep(INT|FLOAT)` (a wall-time sleep)
    // would win over a `Dynamic` parameter.
    let cx = c!();
    engine.register_fn("sleep", move |d: i64| -> R<()> {
        cx.advance(secs(&d.into())?)
    });
    let cx = c!();
    engine.register_fn("sleep", move |d: f64| -> R<()> {
        cx.advance(secs(&d.into())?)
    });
    let cx = c!();
    engine.register_fn("sleep", move |d: rhai::ImmutableString| -> R<()> {
        cx.advance(secs(&d.into())?)
    });
    let cx = c!();
    engine.register_fn("sleep", move |d: Dynamic| -> R<()> {
        cx.advance(secs(&d)?)
    });
    let cx = c!();
    engine.register_fn("now", move || -> R<f64> {
        cx.site.elapsed_s().map_err(rerr)
    });
    let cx = c!();
    engine.register_fn("clock", move || -> R<Dynamic> {
        to_dyn(&cx.site.clock().map_err(rerr)?)
    });
    let cx = c!();
    engine.register_fn("set_speed", move |x: f64| -> R<Dynamic> {
        cx.cmd(json!({"command": "set_speed", "speed": x}))
    });
    let cx = c!();
    engine.register_fn("set_speed", move |x: i64| -> R<Dynamic> {
        cx.cmd(json!({"command": "set_speed", "speed": x as f64}))
    });
    let cx = c!();
    engine.register_fn("pause", move || -> R<Dynamic> {
        cx.cmd(json!({"command": "pause", "paused": true}))
    });
    let cx = c!();
    engine.register_fn("resume", move || -> R<Dynamic> {
        cx.cmd(json!({"command": "pause", "paused": false}))
    });
    let cx = c!();
    engine.register_fn("wall_ms", move || -> f64 {
        cx.started.elapsed().as_secs_f64() * 1000.0
    });
    // ---- Modbus ----
    // Holding registers (function 3) and input registers (function 4).
    for (name, function) in [("modbus_read", 3), ("modbus_read_input", 4)] {
        let cx = c!();
        engine.register_fn(
            name,
            move |id: &str, u: i64, addr: i64, count: i64| -> R<Map> {
                cx.device(id)?;
                Ok(modbus_map(cx.site.modbus_read(
                    id,
                    unit(u)?,
                    function,
                    register_addr(addr)?,
                    reg(count, "count")?,
                )))
            },
        );
    }
    let cx = c!();
    engine.register_fn(
        "modbus_write",
        move |id: &str, u: i64, addr: i64, value: i64| -> R<Map> {
            cx.device(id)?;
            Ok(modbus_map(cx.site.modbus_write(
                id,
                unit(u)?,
                register_addr(addr)?,
                reg(value, "value")?,
            )))
        },
    );
    let cx = c!();
    engine.register_fn(
        "modbus_flood_start",
        move |id: &str, u: i64, addr: i64, count: i64, connections: i64| -> R<()> {
            cx.device(id)?;
            let conns = usize::try_from(connections)
                .ok()
                .filter(|c| (1..=64).contains(c))
                .ok_or_else(|| rerr(format!("{connections} connections: use 1..=64")))?;
            cx.site
                .flood_start(
                    id,
                    unit(u)?,
                    register_addr(addr)?,
                    reg(count, "count")?,
                    conns,
                )
                .map_err(rerr)
        },
    );
    let cx = c!();
    engine.register_fn("modbus_flood_stop", move || -> R<Map> {
        let r = cx.site.flood_stop().map_err(rerr)?;
        let mut m = Map::new();
        m.insert("requests".into(), (r.requests as i64).into());
        m.insert("errors".into(), (r.errors as i64).into());
        m.insert("wall_s".into(), r.wall_s.into());
        m.insert(
            "rate".into(),
            (r.requests as f64 / r.wall_s.max(1e-9)).into(),
        );
        Ok(m)
    });
    // ---- web ----
    let cx = c!();
    engine.register_fn("https_get", move |id: &str, path: &str| -> R<Map> {
        Ok(web_map(cx.site.https(id, "GET", path, None).map_err(rerr)?))
    });
    let cx = c!();
    engine.register_fn(
        "https_post",
        move |id: &str, path: &str, form: Map| -> R<Map> {
            let body = crate::web::form(&fields(&form));
            Ok(web_map(
                cx.site
                    .https(
                        id,
                        "POST",
                        path,
                        Some(("application/x-www-form-urlencoded", body)),
                    )
                    .map_err(rerr)?,
            ))
        },
    );
    let cx = c!();
    engine.register_fn(
        "web_login",
        move |id: &str, user: &str, pw: &str| -> R<Map> {
            let body = crate::web::form(&[
                ("username".into(), user.into()),
                ("password".into(), pw.into()),
            ]);
            Ok(web_map(
                cx.site
                    .https(
                        id,
                        "POST",
                        "/login",
                        Some(("application/x-www-form-urlencoded", body)),
                    )
                    .map_err(rerr)?,
            ))
        },
    );
    let cx = c!();
    engine.register_fn("web_forget", move |id: &str| cx.site.forget_cookies(id));
    let cx = c!();
    engine.register_fn(
        "web_form",
        move |id: &str, page: &str, action: &str, form: Map| -> R<Map> {
            let csrf = page_csrf(&cx, id, page)?;
            let mut f = vec![("csrf".to_string(), csrf)];
            f.extend(fields(&form));
            Ok(web_map(
                cx.site
                    .https(
                        id,
                        "POST",
                        action,
                        Some(("application/x-www-form-urlencoded", crate::web::form(&f))),
                    )
                    .map_err(rerr)?,
            ))
        },
    );
    let cx = c!();
    engine.register_fn(
        "web_upload",
        move |id: &str, page: &str, field: &str, file_name: &str, content: &str| -> R<Map> {
            let csrf = page_csrf(&cx, id, page)?;
            let (ctype, body) = crate::web::multipart(
                &[("csrf".into(), csrf)],
                field,
                file_name,
                content.as_bytes(),
            );
            Ok(web_map(
                cx.site
                    .https(id, "POST", page, Some((&ctype, body)))
                    .map_err(rerr)?,
            ))
        },
    );
    // ---- publication server ----
    let cx = c!();
    engine.register_fn("publication_server_start", move || -> R<Map> {
        let mut slot = cx.receiver.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(crate::receiver::Receiver::new().map_err(rerr)?);
        }
        let r = slot.as_mut().expect("set above");
        r.start().map_err(rerr)?;
        let mut m = Map::new();
        m.insert("url".into(), r.url().unwrap_or_default().into());
        m.insert("pin_sha256".into(), r.pin_sha256().into());
        m.insert("cert_pem".into(), r.cert_pem().to_string().into());
        Ok(m)
    });
    let cx = c!();
    engine.register_fn("publication_server_stop", move || {
        if let Some(r) = cx
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            r.stop();
        }
    });
    let cx = c!();
    engine.register_fn("publication_server_uploads", move || -> Array {
        let slot = cx.receiver.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref()
            .map(|r| r.uploads())
            .unwrap_or_default()
            .into_iter()
            .map(|u| {
                let mut m = Map::new();
                m.insert("path".into(), u.path.into());
                m.insert("field".into(), u.field.into());
                m.insert("file_name".into(), u.file_name.into());
                m.insert("content_type".into(), u.content_type.into());
                m.insert(
                    "content".into(),
                    String::from_utf8_lossy(&u.content).into_owned().into(),
                );
                Dynamic::from_map(m)
            })
            .collect()
    });
    // ---- waiting in wall time ----
    let cx = c!();
    let wait = move |n: &NativeCallContext, within: &Dynamic, msg: &str, f: &FnPtr| -> R<bool> {
        let total = secs(within)?;
        let t = Instant::now();
        loop {
            if call_bool(n, f)? {
                // What the device did meanwhile lands before the next step.
                cx.site.settle(SETTLE);
                let m = format!("{msg} (within {total} s of wall time)");
                cx.record(n.call_position(), "wait_wall", &m, true, "true".into());
                return Ok(true);
            }
            if t.elapsed().as_secs_f64() >= total {
                let m = format!("{msg} (still false after {total} s of wall time)");
                cx.record(n.call_position(), "wait_wall", &m, false, "false".into());
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    engine.register_fn(
        "wait_wall",
        move |n: NativeCallContext, within: Dynamic, msg: &str, f: FnPtr| {
            wait(&n, &within, msg, &f)
        },
    );
    // ---- TCP ----
    let cx = c!();
    engine.register_fn("tcp_open", move |id: &str, port: i64| -> R<bool> {
        cx.site.tcp_open(id, reg(port, "port")?).map_err(rerr)
    });
    let cx = c!();
    engine.register_fn(
        "port_scan",
        move |id: &str, from: i64, to: i64| -> R<Array> {
            let (from, to) = (reg(from, "port")?, reg(to, "port")?);
            if from == 0 || from > to {
                return Err(rerr(format!(
                    "port range {from}..{to} is empty; ports are 1..=65535"
                )));
            }
            Ok(cx
                .site
                .port_scan(id, from, to)
                .map_err(rerr)?
                .into_iter()
                .map(|p| Dynamic::from(i64::from(p)))
                .collect())
        },
    );
    let _ = c!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(body: &str) -> Scenario {
        Scenario::from_text(
            Path::new("t.rhai"),
            format!("//! name: t\n//! description: d\n{body}"),
        )
        .unwrap()
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let s = scenario("let x = 1;\nlet y = ;\n");
        let e = s.check().unwrap_err().to_string();
        assert!(e.starts_with("t.rhai:4:9: syntax error"), "{e}");
    }

    #[test]
    fn sandbox_stops_an_endless_loop_with_a_clear_message() {
        let e = sandbox_with(Arc::new(AtomicU64::new(u64::MAX)), 100_000);
        let err = e.run("let i = 0;\nloop { i += 1; }").unwrap_err();
        let msg = describe(
            "t.rhai",
            &err,
            &Header::parse("//! name: a\n//! description: b").unwrap(),
            100_000,
        )
        .unwrap();
        assert!(
            msg.contains(
                "exceeded its limit of 100000 operations and was stopped (an endless loop?)"
            ),
            "{msg}"
        );
        assert!(msg.starts_with("t.rhai:2:"), "{msg}");
    }

    #[test]
    fn sandbox_limits_strings_arrays_and_depth_and_has_no_modules() {
        let e = sandbox(Arc::new(AtomicU64::new(u64::MAX)));
        let err = e.run("let s = \"x\"; loop { s += s; }").unwrap_err();
        assert!(
            matches!(*err, EvalAltResult::ErrorDataTooLarge(..)),
            "{err}"
        );
        let err = e.run("let a = []; loop { a.push(1); }").unwrap_err();
        assert!(
            matches!(*err, EvalAltResult::ErrorDataTooLarge(..)),
            "{err}"
        );
        let err = e.run("fn f(n) { f(n + 1) } f(0);").unwrap_err();
        let s = err.to_string();
        assert!(matches!(*err, EvalAltResult::ErrorStackOverflow(..)), "{s}");
        assert!(e.run("import \"os\" as os;").is_err());
        assert!(e.compile("eval(\"1\")").is_err());
    }

    #[test]
    fn wall_timeout_stops_a_script() {
        let e = sandbox_with(Arc::new(AtomicU64::new(0)), 0);
        let err = e.run("loop {}").unwrap_err();
        assert!(matches!(*err, EvalAltResult::ErrorTerminated(..)), "{err}");
    }

    #[test]
    fn durations_as_arguments() {
        assert_eq!(secs(&Dynamic::from("10min")).unwrap(), 600.0);
        assert_eq!(secs(&Dynamic::from(3_i64)).unwrap(), 3.0);
        assert_eq!(secs(&Dynamic::from(0.5_f64)).unwrap(), 0.5);
        let e = secs(&Dynamic::from("ten")).unwrap_err().to_string();
        assert!(e.contains("malformed duration \"ten\""), "{e}");
        assert!(secs(&Dynamic::from(true)).is_err());
    }

    #[test]
    fn event_patterns_match_subsets() {
        let e = json!({"event": "device", "device": "ps1", "kind": "audit", "message": "lockout: locked for 10 minutes"});
        assert!(matches(&e, &json!({"device": "ps1", "kind": "audit"})));
        assert!(matches(&e, &json!({"message": "locked for 10"})));
        assert!(!matches(&e, &json!({"device": "ps2"})));
    }
}
