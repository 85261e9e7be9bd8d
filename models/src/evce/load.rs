//! Load management of the EVCE (issue 11 item 4; docs/ev-charging.md
//! "Load management"): keeps the site meter's total active power under
//! `site_limit_kw` by capping the stations with SetChargingProfile.
//!
//! Contract:
//! - Every `load_period_s` of virtual time the EVCE reads the site meter's
//!   total active power (PM5560 register 3060, Float32 kW) over Modbus TCP
//!   from its own address ([`read_power_w`]).
//! - [`Manager::step`] is an integral controller: the power allotted to
//!   the EVs moves by the gap between the target (the limit minus a 2 %
//!   margin) and the measured power, within 0 and the stations' ratings;
//!   each station with a transaction gets an equal share as a
//!   ChargePointMaxProfile (connector 0, W, stack level 0, id
//!   [`PROFILE_ID`]), sent only when its share moved by more than
//!   [`DEADBAND_W`]. With the meter's power = base load + the stations'
//!   draw (the stations publish it to the meter), the loop is closed: the
//!   meter settles under the limit within a few periods when the EVs want
//!   more than the limit leaves them.
//! - A meter that does not answer leaves the profiles as they are. With no
//!   limit (`site_limit` command with `kw` null) the profiles stay as last
//!   sent; a new limit takes effect at the next period.

use std::net::SocketAddr;
use std::time::Duration;

use fieldtwin_emulator::net::Stack;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Charging profile id of the load manager's ChargePointMaxProfile.
pub const PROFILE_ID: i64 = 9000;
/// Share changes smaller than this are not sent, W.
pub const DEADBAND_W: f64 = 100.0;
/// Margin under the limit the controller aims at.
pub const MARGIN: f64 = 0.02;
/// Highest power a station is given, W (80 A × 3 × 230 V).
pub const STATION_MAX_W: f64 = 55_200.0;

/// The controller (see the module contract).
#[derive(Debug, Clone, Serialize)]
pub struct Manager {
    /// None: no load management (the meter is still read).
    pub limit_w: Option<f64>,
    /// Power allotted to all the EVs, W.
    pub alloc_w: f64,
    /// Last measured site power, W.
    pub meter_w: Option<f64>,
    /// The share last sent to each station, W (its ChargePointMaxProfile).
    pub shares: std::collections::BTreeMap<String, f64>,
    /// Periods done so far: the meter answered and the profiles due were
    /// sent (a scenario waits for the next one after a clock jump).
    pub periods: u64,
}

impl Manager {
    pub fn new(limit_w: Option<f64>) -> Self {
        Self {
            limit_w,
            alloc_w: 0.0,
            meter_w: None,
            periods: 0,
            shares: Default::default(),
        }
    }

    /// One period: the site draws `meter_w`, `active` stations charge;
    /// returns each one's share, W.
    pub fn step(&mut self, meter_w: f64, active: usize) -> Option<f64> {
        self.meter_w = Some(meter_w);
        let limit = self.limit_w?;
        if active == 0 || !meter_w.is_finite() {
            return None;
        }
        let target = limit * (1.0 - MARGIN);
        self.alloc_w = (self.alloc_w + target - meter_w).clamp(0.0, STATION_MAX_W * active as f64);
        Some(self.alloc_w / active as f64)
    }
}

/// The ChargePointMaxProfile capping a station at `w`.
pub fn profile(w: f64, start: &str) -> Value {
    json!({
        "connectorId": 0,
        "csChargingProfiles": {
            "chargingProfileId": PROFILE_ID,
            "stackLevel": 0,
            "chargingProfilePurpose": "ChargePointMaxProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {
                "startSchedule": start,
                "chargingRateUnit": "W",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": w.round()}],
            },
        },
    })
}

/// Reads register 3060 (total active power, Float32 kW) of the meter at
/// `addr`; W.
pub async fn read_power_w(stack: &dyn Stack, addr: SocketAddr) -> Result<f64, String> {
    let io = async {
        let mut s = stack
            .connect_tcp(addr)
            .await
            .map_err(|e| format!("site meter {addr}: {e}"))?;
        // MBAP: transaction 1, protocol 0, length 6, unit 1; read holding
        // registers at address 3059 (register 3060), 2 words.
        let req = [0u8, 1, 0, 0, 0, 6, 1, 3, 0x0b, 0xf3, 0, 2];
        s.write_all(&req).await.map_err(|e| e.to_string())?;
        let mut resp = [0u8; 13];
        s.read_exact(&mut resp).await.map_err(|e| e.to_string())?;
        if resp[7] != 3 || resp[8] != 4 {
            return Err(format!("site meter {addr}: Modbus exception {}", resp[8]));
        }
        let kw = f32::from_be_bytes([resp[9], resp[10], resp[11], resp[12]]) as f64;
        if !kw.is_finite() {
            return Err(format!("site meter {addr}: power not available"));
        }
        Ok(kw * 1000.0)
    };
    tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| format!("site meter {addr}: no answer"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closed loop with a plant: meter = base + min(share, want) each.
    #[test]
    fn the_site_settles_under_the_limit() {
        let mut m = Manager::new(Some(20_000.0));
        let base = 8_000.0;
        let want: [f64; 2] = [11_000.0, 7_400.0];
        let mut share = 0.0;
        let mut meter = base;
        for _ in 0..10 {
            share = m.step(meter, 2).unwrap();
            meter = base + want.iter().map(|w| w.min(share)).sum::<f64>();
        }
        assert!(meter <= 20_000.0, "{meter}");
        assert!(
            meter >= 19_000.0,
            "{meter}: the EVs should get what is left"
        );
        assert!(share > 5_000.0);
        // The base load jumps: back under the limit within a few periods.
        let base = 14_000.0;
        for _ in 0..4 {
            share = m.step(meter, 2).unwrap();
            meter = base + want.iter().map(|w| w.min(share)).sum::<f64>();
        }
        assert!(meter <= 20_000.0, "{meter}");
        assert_eq!(m.step(meter, 0), None);
        m.limit_w = None;
        assert_eq!(m.step(meter, 2), None);
    }
}
