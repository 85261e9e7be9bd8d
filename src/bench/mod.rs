//! `fieldtwin bench ...` and `fieldtwin site generate`: benchmarks of the
//! network backends and of the field-device physics. Benchmarks measure;
//! they assert nothing.
//!
//! Contract:
//! - `bench modbus`: one load (N connections reading 10 holding registers
//!   with FC3 for D seconds, run by a `bench load` child process) against
//!   (a) a bare tokio-modbus server on kernel loopback (a `bench
//!   bare-server` child process), (b) the Panel Server in host mode, (c)
//!   the Panel Server in TAP mode in a namespace the bench creates, (c') the
//!   same through the emulated router (`--routing router`), (d) a pymodbus
//!   server when python's pymodbus is importable; interleaved in R rounds
//!   (each round loads every server once). Prints each round's server CPU
//!   microseconds per request (the server process's own /proc accounting
//!   over the load window only), then per server the medians of req/s,
//!   p50, p99 and CPU per request, their ratios to (a) and the spread of
//!   the per-round ratios, and a verdict line for TAP mode against (a).
//! - `bench scale --devices N`: boots a generated site of N Panel Servers in
//!   TAP mode in its own namespace and prints the time until every device
//!   answers Modbus and ping, the namespace's neighbour entries (one when
//!   the site is routed), RSS per device and idle CPU.
//! - `bench soak --devices N --minutes M`: the same site polled for M
//!   minutes, 1 % of the devices a second over Modbus and HTTPS; errors,
//!   latency, and RSS, file descriptors and threads at start and end.
//! - `bench physics`: 24 virtual hours of the default site's field devices
//!   at full speed; wall time and energy totals.
//! - `bench radio`: N Panel Servers x M wireless devices reporting over
//!   the IEEE 802.15.4 medium at speed 1: CPU per virtual second, RSS per
//!   radio, frames and losses ([`radio`]).
//! - `bench tui`: frame time of the dashboard with N devices against two
//!   references of the same run (docs/performance.md).
//! - TAP-mode runs always use a namespace created here (`ftnet-bench-PID`)
//!   and deleted afterwards; nothing leaves the machine.

pub mod load;
pub mod modbus;
pub mod physics;
pub mod radio;
pub mod scale;
pub mod soak;
pub mod tui;

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Modbus TCP throughput and latency: bare server, host mode, TAP mode, pymodbus.
    Modbus(modbus::Options),
    /// Boot N Panel Servers in TAP mode: boot time, RSS per device, idle CPU.
    Scale(scale::Options),
    /// Poll a rotating 1 % of N Panel Servers a second over Modbus and HTTPS for M minutes.
    Soak(soak::Options),
    /// 24 virtual hours of the default site's field devices at full speed.
    Physics,
    /// The IEEE 802.15.4 medium: N Panel Servers x M radios reporting.
    Radio(radio::Options),
    /// Frame time of the terminal dashboard with N devices.
    Tui(tui::Options),
    /// (internal) Run one load against ADDR and print the result as JSON.
    #[command(hide = true)]
    Load(load::Options),
    /// (internal) The bare tokio-modbus server of `bench modbus` (a).
    #[command(hide = true)]
    BareServer(modbus::BareOptions),
    /// (internal) The soak's client: poll a site's devices; print JSON.
    #[command(hide = true)]
    SoakLoad(soak::LoadOptions),
    /// (internal) Wait until every device of a site answers Modbus; print JSON.
    #[command(hide = true)]
    Probe(scale::ProbeOptions),
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Modbus(o) => modbus::run(o),
        BenchCmd::Scale(o) => scale::run(o),
        BenchCmd::Soak(o) => soak::run(o),
        BenchCmd::SoakLoad(o) => soak::load(o),
        BenchCmd::Physics => physics::run(),
        BenchCmd::Radio(o) => radio::run(o),
        BenchCmd::Tui(o) => tui::run(o),
        BenchCmd::Load(o) => load::run(o),
        BenchCmd::BareServer(o) => modbus::bare_server(o),
        BenchCmd::Probe(o) => scale::probe(o),
    }
}

/// Address of the `i`-th generated Panel Server: 10.77.(first_octet +
/// i / 100).(i % 100 + 2).
pub fn generated_ip(first_octet: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        77,
        first_octet + (i / SEGMENT_DEVICES) as u8,
        (i % SEGMENT_DEVICES + 2) as u8,
    )
}

/// Devices per segment of a segmented generated site: one /24 each (.2 to
/// .101). Every device's boot announcements (ARP, DPWS Hello) reach every
/// port of its segment, so a boot costs the segment's size in deliveries:
/// at 250 per segment, 10,000 devices cost 2.5 million deliveries, at 100,
/// one million (docs/performance.md).
pub const SEGMENT_DEVICES: usize = 100;

/// Largest generated site on one flat segment (above: segmented).
pub const FLAT_DEVICES: usize = 250;

/// How a generated site lays its devices out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One TAP-bridged /16 segment for every device (direct L2 access from
    /// the lab; one broadcast domain).
    Flat,
    /// Up to [`SEGMENT_DEVICES`] devices per TAP-bridged /24 segment, as a
    /// large site is cabled (one switch or VLAN per panel room), reached
    /// from the lab through the emulated router. A device's boot
    /// announcements (ARP, DPWS Hello) then reach its segment's 100 ports,
    /// not every port of the site.
    Segmented,
}

impl Layout {
    /// Segmented above [`FLAT_DEVICES`] devices, flat otherwise.
    pub fn for_devices(n: usize) -> Self {
        if n > FLAT_DEVICES {
            Layout::Segmented
        } else {
            Layout::Flat
        }
    }
}

/// A site of `n` Panel Servers (PAS600L, switched, no field devices) in
/// 10.77.0.0/16, host side 10.77.0.1; device `i` at [`generated_ip`].
/// [`Layout::Segmented`] puts the devices of 10.77.K.x on segment `lan-K`
/// (10.77.K.0/24, the router at 10.77.K.254) and routes the site.
pub fn generate_site(n: usize, first_octet: u8, layout: Layout) -> anyhow::Result<String> {
    anyhow::ensure!(n >= 1, "--panel-servers must be at least 1");
    let max = (255 - usize::from(first_octet)) * SEGMENT_DEVICES;
    anyhow::ensure!(
        n <= max,
        "--panel-servers {n}: at most {max} fit in 10.77.0.0/16 from 10.77.{first_octet}.x"
    );
    let mut s = String::new();
    let routing = match layout {
        Layout::Flat => "",
        Layout::Segmented => "routing = \"router\"\n",
    };
    let _ = writeln!(
        s,
        "# Generated by `fieldtwin site generate --panel-servers {n}`.\n\n\
         [site]\nname = \"generated-{n}\"\nseed = 1\n\n\
         [network]\nsubnet = \"10.77.0.0/16\"\nhost_address = \"10.77.0.1\"\n{routing}"
    );
    let segment = |i: usize| match layout {
        Layout::Flat => "lan".to_string(),
        Layout::Segmented => format!("lan-{}", generated_ip(first_octet, i).octets()[2]),
    };
    match layout {
        Layout::Flat => {
            let _ = writeln!(
                s,
                "[[segment]]\nname = \"lan\"\nsubnet = \"10.77.0.0/16\"\nbridge = \"tap\"\n"
            );
        }
        Layout::Segmented => {
            for first in (0..n).step_by(SEGMENT_DEVICES) {
                let k = generated_ip(first_octet, first).octets()[2];
                let _ = writeln!(
                    s,
                    "[[segment]]\nname = \"lan-{k}\"\nsubnet = \"10.77.{k}.0/24\"\nbridge = \"tap\"\n"
                );
            }
        }
    }
    for i in 0..n {
        let _ = writeln!(
            s,
            "[[device]]\nid = \"ps{:04}\"\nmodel = \"PAS600L\"\nip = \"{}\"\nsegment = \"{}\"\n",
            i + 1,
            generated_ip(first_octet, i),
            segment(i)
        );
    }
    fieldtwin_emulator::site::Site::parse(&s)?;
    Ok(s)
}

/// `fieldtwin site generate`.
pub fn site_generate(n: usize, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    let text = generate_site(n, 1, Layout::for_devices(n))?;
    match out {
        Some(p) => {
            std::fs::write(p, text)?;
            println!("{}: site of {n} Panel Servers", p.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// A namespace owned by a benchmark; deleted on drop.
pub struct BenchNetns {
    pub name: String,
}

impl BenchNetns {
    pub fn create(tag: &str) -> anyhow::Result<Self> {
        let name = format!("ftnet-bench{tag}-{}", std::process::id());
        crate::lab::up_quiet(&name)?;
        Ok(Self { name })
    }
}

impl Drop for BenchNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// CPU seconds this process has used: fields 14 and 15 of /proc/self/stat
/// (user and system time, in USER_HZ = 100 ticks per second on Linux); 0
/// where it cannot be read.
pub fn cpu_s() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

/// Machine details for the tables.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{n} cores, {cpu}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_site_of_1000_is_valid_with_distinct_addresses() {
        for layout in [Layout::Flat, Layout::Segmented] {
            let text = generate_site(1000, 1, layout).unwrap();
            let site = fieldtwin_emulator::site::Site::parse(&text).unwrap();
            assert_eq!(site.devices.len(), 1000);
            let ips: std::collections::BTreeSet<_> = site.devices.iter().map(|d| d.ip).collect();
            assert_eq!(ips.len(), 1000);
            assert!(!ips.contains(&site.network.host_address));
            assert!(generate_site(0, 1, layout).is_err());
            assert!(generate_site(100_000, 1, layout).is_err());
        }
    }

    #[test]
    fn a_segmented_site_has_100_devices_per_routed_24() {
        use fieldtwin_emulator::site::Routing;
        let text = generate_site(10_000, 1, Layout::Segmented).unwrap();
        let site = fieldtwin_emulator::site::Site::parse(&text).unwrap();
        assert_eq!(site.segments.len(), 100);
        assert_eq!(site.network.routing, Routing::Router);
        for seg in &site.segments {
            let on: Vec<_> = site
                .devices
                .iter()
                .filter(|d| d.segment == seg.name)
                .collect();
            assert_eq!(on.len(), SEGMENT_DEVICES, "{}", seg.name);
            assert!(on.iter().all(|d| seg.subnet.contains(d.ip)), "{}", seg.name);
            assert!(on.iter().all(|d| d.ip != seg.gateway_address()));
        }
        let plan = fieldtwin_emulator::net::router::plan(&site, None)
            .unwrap()
            .unwrap();
        assert_eq!(plan.router, std::net::Ipv4Addr::new(10, 77, 255, 254));
        assert_eq!(Layout::for_devices(250), Layout::Flat);
        assert_eq!(Layout::for_devices(251), Layout::Segmented);
    }
}
