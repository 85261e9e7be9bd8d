//! `fieldtwin bench tui`: frame time of the dashboard with N devices.
//!
//! Contract: renders the Devices tab of a synthetic N-device snapshot into
//! ratatui's `TestBackend` (no terminal I/O) F times, and in the same run
//! two references: the same dashboard with 10 devices, and a plain table
//! that builds a row for every device (no virtualisation). Prints wall and
//! CPU time per frame and the ratios. Measures; asserts nothing.

use clap::Args;

use super::cpu_s;

#[derive(Debug, Args)]
pub struct Options {
    /// Devices in the snapshot.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Frames to render per measurement.
    #[arg(long, default_value_t = 200)]
    frames: usize,
    /// Terminal size, COLSxROWS.
    #[arg(long, default_value = "200x50")]
    size: String,
}

pub fn run(o: Options) -> anyhow::Result<()> {
    let (w, h) = o
        .size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u16>().ok()?, h.parse::<u16>().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--size {:?}: use COLSxROWS, e.g. 200x50", o.size))?;
    anyhow::ensure!(w >= 20 && h >= 10, "--size: at least 20x10");
    anyhow::ensure!(
        o.frames >= 1 && o.devices >= 1,
        "--frames and --devices: at least 1"
    );
    println!(
        "fieldtwin bench tui: {} devices, {} frames of {w}x{h}, {}",
        o.devices,
        o.frames,
        super::machine()
    );
    let big = fieldtwin_tui::bench::synthetic(o.devices);
    let small = fieldtwin_tui::bench::synthetic(10);
    // (wall ms per frame, CPU ms per frame) of one measurement.
    let timed = |f: &dyn Fn() -> f64| {
        let cpu0 = cpu_s();
        let wall = f();
        (wall, (cpu_s() - cpu0) * 1000.0 / (o.frames + 1) as f64)
    };
    use fieldtwin_tui::bench::{dashboard_ms, naive_ms};
    let dash = timed(&|| dashboard_ms(&big, o.frames, w, h));
    let refs = timed(&|| dashboard_ms(&small, o.frames, w, h));
    let naive = timed(&|| naive_ms(&big, o.frames, w, h));
    println!("| measure | wall ms per frame | CPU ms per frame | wall vs reference |");
    println!("|---|---:|---:|---:|");
    let n = o.devices;
    for (name, (wall, cpu)) in [
        (format!("dashboard, {n} devices"), dash),
        ("reference: dashboard, 10 devices".to_string(), refs),
        (format!("plain table building all {n} rows"), naive),
    ] {
        println!("| {name} | {wall:.3} | {cpu:.2} | {:.2}x |", wall / refs.0);
    }
    println!(
        "target < 10 ms per frame with 10,000 devices: {} ({:.3} ms)",
        if dash.0 < 10.0 { "met" } else { "NOT met" },
        dash.0
    );
    Ok(())
}
