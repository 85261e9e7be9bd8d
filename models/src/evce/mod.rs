//! EcoStruxure EV Charging Expert (DOCA0349): its OCPP local controller
//! (`controller`, `ocpp`, `device`), hardened web surface, SSH, SSDP
//! enrollment and Modbus TCP server for a BMS/EMS.

pub mod controller;
pub mod device;
pub mod load;
pub mod ocpp;
