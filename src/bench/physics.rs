//! `fieldtwin bench physics`: 24 virtual hours of the default site's field
//! devices at full speed.
//!
//! Contract: every metered/sensing device of the site (serial and wireless
//! devices of the Panel Server, networked meters) is polled through its
//! Modbus register map once per virtual second for 24 h (a SCADA poller at
//! 1x would do the same in a day), then a fresh copy of each device is read
//! once at 24 h (what a 10,000x or jumped clock gives). The table prints the
//! energy totals of both runs, whether they are identical, and the wall time
//! of the stepped run. Figures: docs/performance.md.

use std::time::Instant;

use fieldtwin_emulator::site::Site;
use fieldtwin_models::field::{self, Kind};
use fieldtwin_models::proto::modbus::{Request, Response};

const DAY_S: u32 = 86_400;

fn read(dev: &field::FieldDevice, t: f64, reg: u16, count: u16) -> Vec<u16> {
    match dev.handle(
        t,
        &Request::ReadHolding {
            addr: reg - 1,
            count,
        },
    ) {
        Some(Ok(Response::Registers { values, .. })) => values,
        other => panic!("{}: read {reg} failed: {other:?}", dev.id),
    }
}

fn energy_register(dev: &field::FieldDevice, t: f64) -> Option<i64> {
    if !matches!(dev.kind, Kind::PowerTag | Kind::Meter) {
        return None;
    }
    let w = read(dev, t, 3204, 4);
    Some(w.iter().fold(0i64, |acc, x| (acc << 16) | i64::from(*x)))
}

pub fn run() -> anyhow::Result<()> {
    let site = Site::default_site();
    let day0 = 0.0;
    let stepped = field::site_devices(&site, day0);
    let jumped = field::site_devices(&site, day0);
    let start: Vec<Option<i64>> = stepped.iter().map(|d| energy_register(d, 0.0)).collect();
    let wall = Instant::now();
    let mut reads = 0u64;
    for s in 1..=DAY_S {
        let t = f64::from(s);
        for d in &stepped {
            match d.kind {
                Kind::PowerTag | Kind::Meter => {
                    read(d, t, 3000, 6);
                    read(d, t, 3028, 6);
                    read(d, t, 3054, 8);
                    read(d, t, 3204, 4);
                    reads += 4;
                }
                _ => {
                    read(d, t, 4001, 2);
                    reads += 1;
                }
            }
        }
    }
    let elapsed = wall.elapsed();
    println!(
        "fieldtwin bench physics: default site, 24 virtual hours, polled every virtual second"
    );
    println!(
        "{:<12} {:<10} {:>16} {:>16} {:>16} {:>6}",
        "DEVICE", "MODEL", "START (Wh)", "24H STEPPED (Wh)", "24H JUMPED (Wh)", "SAME"
    );
    let mut total = 0i64;
    let mut all_same = true;
    for (i, d) in stepped.iter().enumerate() {
        let (Some(e0), Some(e1)) = (start[i], energy_register(d, f64::from(DAY_S))) else {
            continue;
        };
        let ej = energy_register(&jumped[i], f64::from(DAY_S)).unwrap_or(-1);
        let same = e1 == ej;
        all_same &= same;
        total += e1 - e0;
        println!(
            "{:<12} {:<10} {:>16} {:>16} {:>16} {:>6}",
            d.id,
            d.model,
            e0,
            e1,
            ej,
            if same { "yes" } else { "NO" }
        );
    }
    println!(
        "energy consumed in 24 h, all meters: {:.3} kWh",
        total as f64 / 1000.0
    );
    println!(
        "wall time: {:.3} s for {} register reads ({:.0} reads/s); stepped and jumped runs {}",
        elapsed.as_secs_f64(),
        reads,
        reads as f64 / elapsed.as_secs_f64(),
        if all_same { "agree" } else { "DISAGREE" }
    );
    if !all_same {
        anyhow::bail!("stepped and jumped energy totals differ");
    }
    Ok(())
}
