//! The EV Charging Expert's Modbus TCP server for a BMS/EMS (DOCA0349
//! "Supported Protocols": Modbus TCP with Building Management Systems).
//! The vendor's register table is not public: the map below is ours [NF],
//! documented in docs/ev-charging.md "Modbus TCP server for a BMS/EMS".
//!
//! Contract:
//! - TCP 502 on every interface, unit ids 1 and 255 (others: exception
//!   0x0B, no such unit behind this device). FC3 and FC4 read the same
//!   map; a read outside it, or longer than 125 registers, is exception
//!   0x02 / 0x03. The map is read-only: FC6/FC16 answer exception 0x01.
//! - [`registers`] is a pure function of a [`Snapshot`] (what the node
//!   knows now: the enrolled stations, their OCPP state, power and energy,
//!   the site meter and the site limit), so the values are exactly what the
//!   pages and the OCPP side show.
//!
//! Map (16-bit registers, 32-bit values big-endian word order):
//!
//! | Address | Count | Value |
//! |---|---|---|
//! | 0 | 1 | map version (1) |
//! | 1 | 1 | enrolled stations |
//! | 2 | 1 | stations connected (OCPP) |
//! | 3 | 1 | stations charging |
//! | 10 | 2 | site power limit, W (0xFFFFFFFF: none) |
//! | 12 | 2 | site power from the site meter, W (signed) |
//! | 14 | 2 | power of all stations, W |
//! | 16 | 2 | energy delivered by all stations, Wh |
//! | 100 + 20 n | 20 | station n (0-15), in enrollment order: |
//! | +0 | 10 | box id, ASCII, 2 characters per register, NUL padded |
//! | +10 | 1 | connector 1 status (OCPP 1.6: 0 offline/unknown, 1 Available, 2 Preparing, 3 Charging, 4 SuspendedEV, 5 SuspendedEVSE, 6 Finishing, 7 Reserved, 8 Unavailable, 9 Faulted) |
//! | +11 | 1 | connected to the EVCE (0/1) |
//! | +12 | 2 | active power, W |
//! | +14 | 2 | energy register, Wh |
//! | +16 | 2 | power limit set by the EVCE, W (0xFFFFFFFF: none) |
//! | +18 | 2 | reserved (0) |

use std::sync::Arc;

use fieldtwin_emulator::device::BootError;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::web::Web;
use crate::proto::modbus::server::{self, Handler};
use crate::proto::modbus::{Exception, Request, Response};

/// Modbus TCP port.
pub const PORT: u16 = 502;
/// Connections served at once ([NF]).
pub const MAX_CLIENTS: usize = 16;
/// Station slots in the map.
pub const SLOTS: usize = 16;
/// First register of station slot 0.
pub const STATIONS_BASE: u16 = 100;
/// Registers per station slot.
pub const SLOT_LEN: u16 = 20;
/// Registers in the map.
pub const LEN: u16 = STATIONS_BASE + SLOT_LEN * SLOTS as u16;
/// "No value" of a 32-bit register pair.
pub const NONE: u32 = 0xFFFF_FFFF;

/// One station as the BMS sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StationRow {
    pub box_id: String,
    /// OCPP 1.6 ChargePointStatus of connector 1 (`Available`, ...), if known.
    pub status: Option<String>,
    pub connected: bool,
    pub power_w: f64,
    pub energy_wh: f64,
    pub limit_w: Option<f64>,
}

/// What the node knows now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub stations: Vec<StationRow>,
    pub site_limit_w: Option<f64>,
    pub site_power_w: f64,
}

/// Where the node's [`Snapshot`] comes from (the OCPP side).
pub trait Source: Send + Sync + 'static {
    fn snapshot(&self) -> Snapshot;
}

/// OCPP 1.6 status code of the map.
pub fn status_code(status: Option<&str>) -> u16 {
    match status {
        Some("Available") => 1,
        Some("Preparing") => 2,
        Some("Charging") => 3,
        Some("SuspendedEV") => 4,
        Some("SuspendedEVSE") => 5,
        Some("Finishing") => 6,
        Some("Reserved") => 7,
        Some("Unavailable") => 8,
        Some("Faulted") => 9,
        _ => 0,
    }
}

fn u32_of(v: f64) -> u32 {
    if v.is_finite() {
        v.round().clamp(0.0, f64::from(u32::MAX - 1)) as u32
    } else {
        0
    }
}

fn put32(r: &mut [u16], at: usize, v: u32) {
    r[at] = (v >> 16) as u16;
    r[at + 1] = v as u16;
}

/// The whole map for `s`.
pub fn registers(s: &Snapshot) -> Vec<u16> {
    let mut r = vec![0u16; LEN as usize];
    let rows = &s.stations[..s.stations.len().min(SLOTS)];
    r[0] = 1;
    r[1] = s.stations.len().min(u16::MAX as usize) as u16;
    r[2] = s.stations.iter().filter(|x| x.connected).count() as u16;
    r[3] = s
        .stations
        .iter()
        .filter(|x| x.status.as_deref() == Some("Charging"))
        .count() as u16;
    put32(&mut r, 10, s.site_limit_w.map_or(NONE, u32_of));
    let site = if s.site_power_w.is_finite() {
        s.site_power_w
            .round()
            .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
    } else {
        0
    };
    put32(&mut r, 12, site as u32);
    put32(
        &mut r,
        14,
        u32_of(s.stations.iter().map(|x| x.power_w).sum()),
    );
    put32(
        &mut r,
        16,
        u32_of(s.stations.iter().map(|x| x.energy_wh).sum()),
    );
    for (n, st) in rows.iter().enumerate() {
        let base = (STATIONS_BASE + SLOT_LEN * n as u16) as usize;
        let id: Vec<u8> = st.box_id.bytes().take(20).collect();
        for (i, pair) in id.chunks(2).enumerate() {
            r[base + i] = u16::from(pair[0]) << 8 | u16::from(*pair.get(1).unwrap_or(&0));
        }
        r[base + 10] = status_code(st.status.as_deref());
        r[base + 11] = u16::from(st.connected);
        put32(&mut r, base + 12, u32_of(st.power_w));
        put32(&mut r, base + 14, u32_of(st.energy_wh));
        put32(&mut r, base + 16, st.limit_w.map_or(NONE, u32_of));
    }
    r
}

/// Answers one request against the map of `s` (see the module contract).
pub fn answer(unit: u8, req: Request, s: impl FnOnce() -> Snapshot) -> Result<Response, Exception> {
    if unit != 1 && unit != 255 {
        return Err(Exception::GatewayTargetFailedToRespond);
    }
    let (function, addr, count) = match req {
        Request::ReadHolding { addr, count } => (3, addr, count),
        Request::ReadInput { addr, count } => (4, addr, count),
        _ => return Err(Exception::IllegalFunction),
    };
    if count == 0 || count > 125 {
        return Err(Exception::IllegalDataValue);
    }
    let end = u32::from(addr) + u32::from(count);
    if end > u32::from(LEN) {
        return Err(Exception::IllegalDataAddress);
    }
    let all = registers(&s());
    Ok(Response::Registers {
        function,
        values: all[addr as usize..end as usize].to_vec(),
    })
}

struct Bms(Arc<dyn Source>);

impl Handler for Bms {
    fn handle(&self, unit: u8, req: Request) -> BoxFuture<'_, Result<Response, Exception>> {
        let r = answer(unit, req, || self.0.snapshot());
        async move { r }.boxed()
    }
}

/// Starts the server on every interface, as a task of the boot of `web`.
pub async fn start(web: &Arc<Web>, source: Arc<dyn Source>) -> Result<(), BootError> {
    let handler: Arc<dyn Handler> = Arc::new(Bms(source));
    for iface in web.ctx.interface_names() {
        let listener = web.ctx.listen_tcp(&iface, "modbus", PORT).await?;
        web.spawn(server::serve(
            web.ctx.clone(),
            listener,
            handler.clone(),
            MAX_CLIENTS,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn snap() -> Snapshot {
        Snapshot {
            stations: vec![
                StationRow {
                    box_id: "cs1".into(),
                    status: Some("Charging".into()),
                    connected: true,
                    power_w: 7360.4,
                    energy_wh: 12_345.0,
                    limit_w: Some(11_000.0),
                },
                StationRow {
                    box_id: "cs2".into(),
                    status: None,
                    connected: false,
                    ..Default::default()
                },
            ],
            site_limit_w: Some(40_000.0),
            site_power_w: -1500.0,
        }
    }

    #[test]
    fn the_map_says_what_the_snapshot_says() {
        let r = registers(&snap());
        assert_eq!(&r[0..4], &[1, 2, 1, 1]);
        assert_eq!((r[10], r[11]), (0, 40_000));
        assert_eq!(((u32::from(r[12]) << 16) | u32::from(r[13])) as i32, -1500);
        assert_eq!((r[14], r[15]), (0, 7360));
        assert_eq!(
            &r[100..102],
            &[u16::from_be_bytes(*b"cs"), u16::from_be_bytes([b'1', 0])]
        );
        assert_eq!(&r[110..118], &[3, 1, 0, 7360, 0, 12_345, 0, 11_000]);
        assert_eq!(&r[130..132], &[0, 0], "cs2 offline, unknown");
        assert_eq!((r[136], r[137]), (0xFFFF, 0xFFFF), "no limit");
        assert_eq!(r.len(), LEN as usize);
    }

    #[test]
    fn bad_requests_get_exceptions() {
        let read = |unit, addr, count| answer(unit, Request::ReadHolding { addr, count }, snap);
        assert!(read(1, 0, 4).is_ok());
        assert!(read(255, LEN - 1, 1).is_ok());
        assert_eq!(read(1, LEN - 1, 2), Err(Exception::IllegalDataAddress));
        assert_eq!(read(1, 0, 126), Err(Exception::IllegalDataValue));
        assert_eq!(read(7, 0, 1), Err(Exception::GatewayTargetFailedToRespond));
        assert_eq!(
            answer(1, Request::WriteSingle { addr: 10, value: 1 }, snap),
            Err(Exception::IllegalFunction)
        );
        match answer(
            1,
            Request::ReadInput {
                addr: 100,
                count: 20,
            },
            snap,
        ) {
            Ok(Response::Registers {
                function: 4,
                values,
            }) => assert_eq!(values.len(), 20),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn any_snapshot_and_read_is_total(
            n in 0usize..40,
            power in proptest::num::f64::ANY,
            id in "\\PC{0,30}",
            addr in any::<u16>(),
            count in any::<u16>(),
        ) {
            let s = Snapshot {
                stations: (0..n).map(|i| StationRow {
                    box_id: format!("{id}{i}"),
                    power_w: power,
                    energy_wh: -power,
                    limit_w: Some(power),
                    ..Default::default()
                }).collect(),
                site_limit_w: Some(power),
                site_power_w: power,
            };
            let _ = answer(1, Request::ReadHolding { addr, count }, || s.clone());
        }
    }
}
