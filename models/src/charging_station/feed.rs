//! Which charging stations feed which site meter, so the meter's power is
//! its base load plus what the stations draw (issue 11 item 4;
//! docs/ev-charging.md "Load management").
//!
//! Contract: a process-wide table keyed by meter device id. A station
//! [`publish`]es its total power and energy at virtual time `t` after every
//! change of its physics; [`load_of`] gives a meter the sum over its
//! stations at any `t`, extrapolated at constant power from each station's
//! last publication (the stations' power is piecewise constant between
//! their own events), and the energy counted since each station's first
//! publication.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::field::ExtraLoad;

#[derive(Debug, Clone, Copy)]
struct Published {
    t: f64,
    power_w: f64,
    energy_wh: f64,
    first_wh: f64,
}

type Table = Mutex<BTreeMap<String, BTreeMap<String, Published>>>;

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(Table::default)
}

/// Station `station` feeding meter `meter` draws `power_w` at `t`, its
/// energy register reading `energy_wh`.
pub fn publish(meter: &str, station: &str, t: f64, power_w: f64, energy_wh: f64) {
    let mut tab = table().lock().unwrap_or_else(|e| e.into_inner());
    let m = tab.entry(meter.to_string()).or_default();
    let first_wh = m.get(station).map_or(energy_wh, |p| p.first_wh);
    m.insert(
        station.to_string(),
        Published {
            t,
            power_w,
            energy_wh,
            first_wh,
        },
    );
}

/// (power W, energy Wh since coupling) of the stations feeding `meter` at `t`.
pub fn total(meter: &str, t: f64) -> (f64, f64) {
    let tab = table().lock().unwrap_or_else(|e| e.into_inner());
    let Some(m) = tab.get(meter) else {
        return (0.0, 0.0);
    };
    m.values().fold((0.0, 0.0), |(p, e), x| {
        let dt = (t - x.t).max(0.0);
        (
            p + x.power_w,
            e + x.energy_wh - x.first_wh + x.power_w * dt / 3600.0,
        )
    })
}

/// The [`ExtraLoad`] of meter `meter`.
pub fn load_of(meter: &str) -> ExtraLoad {
    let m = meter.to_string();
    ExtraLoad(Arc::new(move |t| total(&m, t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stations_add_up_and_extrapolate() {
        publish("m-test", "a", 0.0, 7000.0, 100.0);
        publish("m-test", "b", 0.0, 3000.0, 50.0);
        let (p, e) = total("m-test", 3600.0);
        assert_eq!(p, 10_000.0);
        assert!((e - 10_000.0).abs() < 1e-6);
        publish("m-test", "a", 3600.0, 0.0, 7100.0);
        let (p, e) = total("m-test", 7200.0);
        assert_eq!(p, 3000.0);
        assert!((e - (7000.0 + 6000.0)).abs() < 1e-6);
        assert_eq!(total("nothing", 1.0), (0.0, 0.0));
    }
}
