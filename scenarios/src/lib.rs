//! fieldtwin-scenarios: the scenario engine (faults and attacks scripted on
//! virtual time). The engine arrives with the scenarios issue; this crate
//! exists now so the workspace has the layout of DESIGN.md.

/// Scenario files live here once the engine lands.
pub const LIBRARY_DIR: &str = "scenarios/library";
