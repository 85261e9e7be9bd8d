//! fieldtwin-tui: the terminal dashboard. It only reads snapshots and sends
//! `Command`s through the control API (DESIGN.md principle 8); the dashboard
//! arrives with the TUI issue.

/// The control API address the dashboard talks to by default.
pub const DEFAULT_API: &str = "127.0.0.1:7780";
