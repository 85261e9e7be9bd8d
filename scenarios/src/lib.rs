//! fieldtwin-scenarios: the scenario engine. A scenario is a Rhai script
//! with a `//!` header ([`header`]); [`engine`] runs it, sandboxed, against
//! a running site through [`site::SiteClient`] (the control API plus real
//! clients of the devices' services), recording each assertion as a step;
//! [`junit`] writes the results for CI; [`serve`] serves the library and
//! one run at a time through a running site's control API; [`receiver`] is
//! the publication server scenarios start. docs/scenarios.md is the user guide.

pub mod duration;
pub mod engine;
pub mod header;
pub mod junit;
pub mod receiver;
pub mod serve;
pub mod site;
pub mod web;

use std::path::{Path, PathBuf};

pub use engine::{Scenario, ScenarioResult, Step};

/// The scenario library, relative to the repository root.
pub const LIBRARY_DIR: &str = "scenarios/library";

/// The `.rhai` files of a directory, sorted by name.
pub fn library(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .collect();
    files.sort();
    Ok(files)
}

/// Resolves a scenario argument: an existing file, or the name (file stem)
/// of a scenario in `library_dir`.
pub fn resolve(arg: &str, library_dir: &Path) -> Result<PathBuf, String> {
    let p = Path::new(arg);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    let named = library_dir.join(format!("{arg}.rhai"));
    if named.is_file() {
        return Ok(named);
    }
    Err(format!(
        "no scenario file {arg:?} and no {arg}.rhai in {} (see `fieldtwin scenario list`)",
        library_dir.display()
    ))
}
