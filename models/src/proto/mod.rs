//! Protocol codecs. Every codec is incremental ("need more bytes" on a
//! partial frame) and total (malformed input gets a protocol-correct error,
//! never a panic) — DESIGN.md principle 5.

pub mod dpws;
pub mod firmware;
pub mod modbus;
pub mod ntp;
pub mod ocpp;
