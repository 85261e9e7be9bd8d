//! The wire types of the control API's scenario endpoints
//! (`GET /api/v1/scenarios`, `POST /api/v1/scenarios/run`), shared by the
//! server (the `fieldtwin` binary, which owns the scenario engine: its
//! steps are these [`Step`]s) and the dashboard, which only reads them
//! (docs/control-api.md).
//!
//! Contract: plain serde data, no behaviour; a run's `steps` grow while it
//! is `running` and never change once it has ended.

use serde::{Deserialize, Serialize};

/// `GET /api/v1/scenarios`: the library the site serves and the current
/// (or last) run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scenarios {
    /// The library directory of the running site.
    pub library_dir: String,
    /// Its scenarios, sorted by file name.
    pub library: Vec<Entry>,
    /// Why the library could not be listed (missing directory, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library_error: Option<String>,
    /// The scenario running now, or the last one that ran.
    #[serde(default)]
    pub run: Option<Run>,
}

/// One scenario of the library.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The file stem: what `POST /api/v1/scenarios/run` takes as `name`.
    pub file: String,
    /// The header's `name` (empty if the header is invalid).
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    /// Why the header could not be read, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /api/v1/scenarios/run`'s body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// A scenario of the library, by file stem (`web-authentication`).
    pub name: String,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    /// Every assertion held.
    Passed,
    /// An assertion failed.
    Failed,
    /// The script errored (syntax, bad call, operation limit, ...).
    Error,
}

/// A run of one scenario against this site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Counts the runs this process started (1-based).
    pub id: u64,
    /// The file stem.
    pub file: String,
    /// The header's name.
    pub name: String,
    pub state: RunState,
    /// The steps recorded so far.
    pub steps: Vec<Step>,
    /// The script error (file:line:column: message), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall seconds since the run started (final once it ended).
    pub wall_s: f64,
}

/// One recorded step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// 1-based number in the scenario.
    pub n: usize,
    /// `expect`, `expect_eq`, `eventually`, `always`, `require`, `fail`,
    /// `expect_audit`, `expect_event`, or `log` (informative, always passes).
    pub kind: String,
    pub message: String,
    pub passed: bool,
    /// What was observed (the value compared, the last audit kinds, ...).
    pub observed: String,
    /// Virtual seconds since the site epoch when the step was recorded.
    pub virtual_s: f64,
    /// Wall seconds since the run started.
    pub wall_s: f64,
    /// Script line (0 if unknown).
    pub line: usize,
}
