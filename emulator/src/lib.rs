//! fieldtwin-emulator: the machine that emulated devices run on.
//!
//! - [`attack`]: the attacks a Workstation runs, as data.
//! - [`clock`]: virtual time and per-device RTCs.
//! - [`crc`]: the reflected CRC-16 of the emulated links.
//! - [`net`]: the transport API services are written against, and its backends.
//! - [`radio`]: the IEEE 802.15.4 medium shared by a site's radios.
//! - [`storage`]: per-device non-volatile memory.
//! - [`device`]: the `Device` trait and the power/boot lifecycle.
//! - [`local`]: the physical, non-network ports (USB console, BLE link).
//! - [`control`]: the `Command`/`Event` bus and the REST control API.
//! - [`scenario_api`]: wire types of the control API's scenario endpoints.
//! - [`site`]: the site file.
//! - [`wifi`]: Wi-Fi access points and associations.
//! - [`tls_client`]: the any-certificate TLS client of attacks, scenarios and tests.

pub mod attack;
pub mod clock;
pub mod control;
pub mod crc;
pub mod device;
pub mod local;
pub mod net;
pub mod radio;
pub mod scenario_api;
pub mod site;
pub mod storage;
pub mod tls_client;
pub mod wifi;
