//! TAP-mode wiring of `fieldtwin run`: the `--tap`, `--netns`, `--pcap`
//! options, and building the switch fabric and the TAP of a site
//! (docs/lab.md).
//!
//! Contract: without `--tap` nothing here runs (host mode). With `--tap`,
//! every device interface gets a smoltcp stack on its segment's switch; the
//! TAP carries the site's `network.host_address` with the prefix of
//! `network.subnet`, in the current network namespace or in `--netns NAME`
//! (the control API stays where the process runs). A large site (or
//! `--routing router`) puts the emulated router between the TAP and the
//! devices: the namespace then routes the device subnets via the router's
//! address and keeps one neighbour entry (docs/lab.md "Routed lab").

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use fieldtwin_emulator::net::pcap;
use fieldtwin_emulator::net::router;
use fieldtwin_emulator::net::switch::Network;
use fieldtwin_emulator::net::tap::{Tap, TapConfig};
use fieldtwin_emulator::site::{Routing, Site};

/// Network options of `fieldtwin run`.
#[derive(Debug, Args, Clone, Default)]
pub struct NetOptions {
    /// TAP mode: every device gets its own MAC and IP on a userspace network
    /// bridged to a TAP device (needs CAP_NET_ADMIN).
    #[arg(long)]
    pub tap: bool,
    /// Put the TAP in this named network namespace (see `fieldtwin lab up`);
    /// implies --tap.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Name of the TAP interface.
    #[arg(long, default_value = "fieldtwin0", value_name = "IFNAME")]
    pub tap_name: String,
    /// Write one pcap capture per segment into DIR (TAP mode).
    #[arg(long, value_name = "DIR")]
    pub pcap: Option<PathBuf>,
    /// Size bound of each capture file, in MiB.
    #[arg(long, default_value_t = pcap::DEFAULT_MAX_BYTES / (1024 * 1024), value_name = "MIB")]
    pub pcap_max_mib: u64,
    /// How the host side reaches the devices: `direct` (on their segment),
    /// `router` (through the emulated router, one neighbour entry) or
    /// `auto` (router above 256 devices on bridged segments). Default: the
    /// site's `network.routing`.
    #[arg(long, value_name = "MODE")]
    pub routing: Option<Routing>,
}

/// A site's network in TAP mode.
#[derive(Debug)]
pub struct NetSetup {
    pub network: Arc<Network>,
    pub tap: Tap,
    pub address: String,
    /// The router's address on the TAP side, when routed.
    pub router: Option<std::net::Ipv4Addr>,
}

impl NetSetup {
    /// One line for the start banner.
    pub fn describe(&self) -> String {
        let ns = self
            .tap
            .netns
            .as_deref()
            .map(|n| format!(" in network namespace {n}"))
            .unwrap_or_default();
        let via = self
            .router
            .map(|r| format!(", devices routed via {r}"))
            .unwrap_or_default();
        format!("TAP mode (TAP {} {}{ns}{via})", self.tap.name, self.address)
    }
}

/// Builds the switch fabric and opens the TAP when TAP mode is asked for
/// (call inside a tokio runtime).
pub fn setup(site: &Site, opts: &NetOptions) -> anyhow::Result<Option<NetSetup>> {
    if !opts.tap && opts.netns.is_none() {
        anyhow::ensure!(
            opts.pcap.is_none(),
            "--pcap captures the userspace network: use it with --tap"
        );
        return Ok(None);
    }
    anyhow::ensure!(
        !opts.tap_name.is_empty() && opts.tap_name.len() <= 15,
        "--tap-name {:?}: an interface name has 1 to 15 characters",
        opts.tap_name
    );
    if let Some(dir) = &opts.pcap {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create capture directory {}", dir.display()))?;
    }
    let network = Arc::new(Network::from_site(
        site,
        opts.pcap.as_deref(),
        opts.pcap_max_mib.saturating_mul(1024 * 1024),
    )?);
    let cfg = TapConfig {
        name: opts.tap_name.clone(),
        address: site.network.host_address,
        prefix: site.network.subnet.prefix,
        netns: opts.netns.clone(),
    };
    let plan = router::plan(site, opts.routing).map_err(anyhow::Error::msg)?;
    let tap = match &plan {
        None => Tap::open(&cfg, network.tap_switches())?,
        Some(plan) => {
            for s in &plan.segments {
                network.set_gateway(&s.name, s.gateway);
            }
            Tap::open_routed(&cfg, plan, &network)?
        }
    };
    Ok(Some(NetSetup {
        network,
        tap,
        address: format!("{}/{}", cfg.address, cfg.prefix),
        router: plan.map(|p| p.router),
    }))
}
