//! Scenarios served by a running site (`fieldtwin run`): the library and
//! one run at a time, through the control API (docs/control-api.md).
//!
//! Contract:
//! - `GET /api/v1/scenarios` answers [`Scenarios`]: the library (each
//!   file's header, or why it could not be read) and the current or last
//!   [`Run`] with the steps recorded so far.
//! - `POST /api/v1/scenarios/run {"name": STEM}` starts the library
//!   scenario `STEM.rhai` and answers `202` with the run (`running`, no
//!   steps yet). The scenario runs on a thread of its own against the
//!   site's own control API (the engine is an API client like any other),
//!   so the site keeps its state and the scenario's effects; its header's
//!   `site` is not used. Each step appears in the run as it is recorded,
//!   and goes on the site's event stream (`scenario_step`, then
//!   `scenario_ended`).
//!   Errors (`{"error": ...}`): `400` a name that is not a bare file stem,
//!   `404` no such scenario (the message lists the library), `409` a
//!   scenario is already running, `415`/`422` a body that is not
//!   `{"name": ...}` JSON, `422` the scenario's header is invalid. A syntax or script error ends the run in state `error`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fieldtwin_emulator::control::{Event, EventBus};
use fieldtwin_emulator::scenario_api::{Entry, Run, RunRequest, RunState, Scenarios};

use crate::engine::{self, Scenario};
use crate::site::SiteClient;

/// The scenarios of one running site.
#[derive(Debug)]
pub struct Service {
    /// The site's own control API, which runs talk to.
    api: SocketAddr,
    library: PathBuf,
    run: Mutex<Option<Run>>,
    /// The site's event bus: steps and the end of a run go on it too.
    events: Option<EventBus>,
}

/// Why a run could not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StartError {
    #[error("{0:?} is not a scenario name: give a file stem of the library, e.g. \"port-scan\"")]
    BadName(String),
    #[error("no scenario {name:?} in {dir}; the library has: {available}")]
    Unknown {
        name: String,
        dir: String,
        available: String,
    },
    #[error("scenario {0:?} is still running; wait for it to end")]
    Busy(String),
    #[error("{0}")]
    Load(String),
}

impl StartError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadName(_) => StatusCode::BAD_REQUEST,
            Self::Unknown { .. } => StatusCode::NOT_FOUND,
            Self::Busy(_) => StatusCode::CONFLICT,
            Self::Load(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Service {
    /// Serves the library in `library` and runs scenarios against the
    /// control API at `api` (the address this process serves it on);
    /// `events`: the site's bus, where each step and the end of each run
    /// are also sent.
    pub fn new(api: SocketAddr, library: PathBuf, events: Option<EventBus>) -> Arc<Self> {
        let api = match api.ip() {
            // Connect where a wildcard listener answers.
            ip if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], api.port())),
            _ => api,
        };
        Arc::new(Self {
            api,
            library,
            run: Mutex::new(None),
            events,
        })
    }

    /// The library and the current or last run.
    pub fn list(&self) -> Scenarios {
        let mut out = Scenarios {
            library_dir: self.library.display().to_string(),
            run: lock(&self.run).clone(),
            ..Scenarios::default()
        };
        match crate::library(&self.library) {
            Err(e) => out.library_error = Some(format!("cannot list {}: {e}", out.library_dir)),
            Ok(files) => {
                out.library = files
                    .iter()
                    .map(|f| match Scenario::load(f) {
                        Ok(s) => Entry {
                            file: stem(f),
                            name: s.header.name,
                            description: s.header.description,
                            tags: s.header.tags,
                            error: None,
                        },
                        Err(e) => Entry {
                            file: stem(f),
                            error: Some(e.to_string()),
                            ..Entry::default()
                        },
                    })
                    .collect()
            }
        }
        out
    }

    /// The current or last run.
    pub fn current(&self) -> Option<Run> {
        lock(&self.run).clone()
    }

    /// Starts the library scenario `name` on a thread of its own; answers
    /// the run as it starts.
    pub fn start(self: &Arc<Self>, name: &str) -> Result<Run, StartError> {
        let bare = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !name.starts_with('.');
        if !bare {
            return Err(StartError::BadName(name.to_string()));
        }
        let path = self.library.join(format!("{name}.rhai"));
        if !path.is_file() {
            let available = crate::library(&self.library)
                .map(|f| f.iter().map(|p| stem(p)).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            return Err(StartError::Unknown {
                name: name.to_string(),
                dir: self.library.display().to_string(),
                available,
            });
        }
        let scenario = Scenario::load(&path).map_err(|e| StartError::Load(e.to_string()))?;
        let run = {
            let mut cur = lock(&self.run);
            if let Some(r) = cur.as_ref().filter(|r| r.state == RunState::Running) {
                return Err(StartError::Busy(r.file.clone()));
            }
            let run = Run {
                id: cur.as_ref().map_or(1, |r| r.id + 1),
                file: name.to_string(),
                name: scenario.header.name.clone(),
                state: RunState::Running,
                steps: Vec::new(),
                error: None,
                wall_s: 0.0,
            };
            *cur = Some(run.clone());
            run
        };
        let me = self.clone();
        let id = run.id;
        let spawned = std::thread::Builder::new()
            .name(format!("scenario-{name}"))
            .spawn(move || me.execute(id, &scenario));
        if let Err(e) = spawned {
            self.finish(
                id,
                RunState::Error,
                Some(format!("cannot start a thread: {e}")),
                0.0,
            );
        }
        Ok(run)
    }

    /// Runs `scenario` as run `id` (on its own thread: the engine blocks).
    fn execute(self: Arc<Self>, id: u64, scenario: &Scenario) {
        let started = Instant::now();
        let site = match SiteClient::connect(self.api) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                self.finish(
                    id,
                    RunState::Error,
                    Some(e),
                    started.elapsed().as_secs_f64(),
                );
                return;
            }
        };
        let me = self.clone();
        let file = self.file_of(id);
        let result = engine::run(scenario, site, move |s| {
            let step = s.clone();
            if let Some(bus) = &me.events {
                bus.send(Event::ScenarioStep {
                    run: id,
                    scenario: file.clone(),
                    step: step.clone(),
                });
            }
            let mut cur = lock(&me.run);
            if let Some(r) = cur.as_mut().filter(|r| r.id == id) {
                r.steps.push(step);
                r.wall_s = s.wall_s;
            }
        });
        let state = match (&result.error, result.passed()) {
            (Some(_), _) => RunState::Error,
            (None, true) => RunState::Passed,
            (None, false) => RunState::Failed,
        };
        {
            let mut cur = lock(&self.run);
            if let Some(r) = cur.as_mut().filter(|r| r.id == id) {
                r.steps = result.steps.clone();
            }
        }
        self.finish(id, state, result.error, result.wall_s);
    }

    fn file_of(&self, id: u64) -> String {
        lock(&self.run)
            .as_ref()
            .filter(|r| r.id == id)
            .map(|r| r.file.clone())
            .unwrap_or_default()
    }

    /// Ends run `id` (and says so on the event bus).
    fn finish(&self, id: u64, state: RunState, error: Option<String>, wall_s: f64) {
        let mut cur = lock(&self.run);
        if let Some(r) = cur.as_mut().filter(|r| r.id == id) {
            r.state = state;
            r.error = error.clone();
            r.wall_s = wall_s;
            if let Some(bus) = &self.events {
                bus.send(Event::ScenarioEnded {
                    run: id,
                    scenario: r.file.clone(),
                    state,
                    error,
                });
            }
        }
    }
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// The routes of the scenario endpoints, to merge into the control API.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/api/v1/scenarios", get(list))
        .route("/api/v1/scenarios/run", post(start))
        .with_state(service)
}

async fn list(State(s): State<Arc<Service>>) -> Json<Scenarios> {
    // Reading the library touches the disk.
    let listed = tokio::task::spawn_blocking(move || s.list()).await;
    Json(listed.unwrap_or_default())
}

async fn start(
    State(s): State<Arc<Service>>,
    body: Result<Json<RunRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let Json(req) = body.map_err(|e| {
        ApiError(
            e.status(),
            format!("{}; expected {{\"name\": \"SCENARIO\"}}", e.body_text()),
        )
    })?;
    let run = tokio::task::spawn_blocking(move || s.start(&req.name))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(e.status(), e.to_string()))?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn library(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    const OK: &str =
        "//! name: Fine\n//! description: does nothing\n//! tags: a, b\nexpect(true, \"yes\");\n";

    #[test]
    fn lists_headers_and_names_broken_ones() {
        let dir = library(&[("fine.rhai", OK), ("broken.rhai", "let x = 1;\n")]);
        let s = Service::new("127.0.0.1:1".parse().unwrap(), dir.path().into(), None);
        let l = s.list();
        assert_eq!(l.library.len(), 2);
        assert_eq!(l.library[0].file, "broken");
        assert!(
            l.library[0].error.as_deref().unwrap().contains("name"),
            "{l:?}"
        );
        assert_eq!(l.library[1].name, "Fine");
        assert_eq!(l.library[1].tags, ["a", "b"]);
        assert!(l.run.is_none());
        let missing = Service::new(
            "127.0.0.1:1".parse().unwrap(),
            "/nonexistent/lib".into(),
            None,
        );
        assert!(
            missing
                .list()
                .library_error
                .unwrap()
                .contains("/nonexistent/lib")
        );
    }

    #[test]
    fn refuses_bad_and_unknown_names() {
        let dir = library(&[("fine.rhai", OK), ("broken.rhai", "let x = 1;\n")]);
        let s = Service::new("127.0.0.1:1".parse().unwrap(), dir.path().into(), None);
        for bad in ["", "../fine", "a/b", ".hidden"] {
            let e = s.start(bad).unwrap_err();
            assert!(matches!(e, StartError::BadName(_)), "{bad}: {e}");
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        }
        let e = s.start("nope").unwrap_err();
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert!(e.to_string().contains("broken, fine"), "{e}");
        let e = s.start("broken").unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(s.current().is_none());
    }

    #[test]
    fn a_run_without_a_site_ends_in_error_and_a_second_one_gets_the_next_id() {
        // Port 1 on loopback: nothing answers, so the run cannot connect.
        let dir = library(&[("fine.rhai", OK)]);
        let bus = EventBus::new();
        let mut seen = bus.subscribe();
        let s = Service::new(
            "0.0.0.0:1".parse().unwrap(),
            dir.path().into(),
            Some(bus.clone()),
        );
        let run = s.start("fine").unwrap();
        assert_eq!((run.id, run.state), (1, RunState::Running));
        let t = Instant::now();
        while s.current().unwrap().state == RunState::Running {
            assert!(t.elapsed().as_secs() < 20, "run never ended");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let done = s.current().unwrap();
        assert_eq!(done.state, RunState::Error);
        assert!(done.error.clone().unwrap().contains("127.0.0.1:1"));
        // The end of the run went on the event bus too.
        match seen.try_recv() {
            Ok(Event::ScenarioEnded {
                run: 1,
                scenario,
                state: RunState::Error,
                error,
            }) => assert_eq!((scenario.as_str(), error), ("fine", done.error)),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.start("fine").unwrap().id, 2);
    }
}
