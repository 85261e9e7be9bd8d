//! Security state of the Panel Server (DOCA0211): login lockout, password
//! hashing and rules, web sessions, the audit log and backup encryption.
//!
//! Contract: everything here is plain state and pure functions driven by a
//! `now` passed in by the caller (the device's virtual clock); no sockets and
//! no wall clock. The web service ([`super::web`]) does the I/O.

pub mod audit;
pub mod backup;
pub mod lockout;
pub mod password;
pub mod session;
