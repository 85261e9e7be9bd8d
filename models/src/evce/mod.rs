//! EcoStruxure EV Charging Expert (DOCA0349): its hardened web surface,
//! SSH, SSDP enrollment and Modbus TCP server for a BMS/EMS.

pub mod bms;
pub mod console;
pub mod enrollment;
pub mod policy;
pub mod ssdp;
pub mod ssh;
pub mod standalone;
pub mod web;
