//! `fieldtwin lab up|down|exec`: the lab network namespace that holds the
//! TAP and the host side's address, so that a trainee's or a test's tools run
//! inside it while the emulator and its control API stay on the host's
//! loopback (docs/lab.md).
//!
//! Contract: `up` refuses to run from inside another network namespace than
//! the host's (PID 1's), saying so; it creates the namespace (idempotent)
//! and brings its loopback up. It leaves neighbour-table limits alone: they
//! are global (not per namespace), and large sites go through the emulated
//! router, which needs one neighbour entry (docs/lab.md "Routed lab");
//! `down` deletes it
//! (the TAP inside goes with it); `exec` runs a command inside it and exits
//! with its status. Nothing here touches the host's own namespace.

use std::process::Command;

use anyhow::{Context, bail};
use clap::Subcommand;

/// Default name of the lab namespace.
pub const DEFAULT_NETNS: &str = "fieldtwin";

#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Create the lab network namespace (needs CAP_SYS_ADMIN, e.g. root).
    Up {
        #[arg(long, default_value = DEFAULT_NETNS)]
        name: String,
    },
    /// Delete the lab network namespace and the TAP inside it.
    Down {
        #[arg(long, default_value = DEFAULT_NETNS)]
        name: String,
    },
    /// Run a command inside the lab namespace: `fieldtwin lab exec -- nmap 10.77.0.10`.
    Exec {
        #[arg(long, default_value = DEFAULT_NETNS)]
        name: String,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn exists(name: &str) -> bool {
    fieldtwin_emulator::net::tap::netns_exists(name)
}

/// Creates namespace `name` ready for a site.
pub fn up(name: &str) -> anyhow::Result<()> {
    up_quiet(name)?;
    println!("lab namespace {name} is up; now run: fieldtwin run --tap --netns {name}");
    println!("then: fieldtwin lab exec --name {name} -- ping 10.77.0.10");
    Ok(())
}

/// Which other network namespace this process runs in, if it is not the
/// host's: a named one (`ip netns exec NAME ...`) or, when PID 1's is
/// readable, any namespace other than PID 1's.
fn inside_other_netns() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/self/ns/net").ok()?.ino();
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            if std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == own) {
                return Some(format!(
                    "the network namespace {:?}",
                    e.file_name().to_string_lossy()
                ));
            }
        }
    }
    let host = std::fs::metadata("/proc/1/ns/net").ok()?.ino();
    (host != own).then(|| format!("network namespace net:[{own}], not the host's net:[{host}]"))
}

/// [`up`] without the banner.
pub fn up_quiet(name: &str) -> anyhow::Result<()> {
    if let Some(other) = inside_other_netns() {
        bail!(
            "`fieldtwin lab up` must run in the host's network namespace, but it runs inside \
             {other} (e.g. in `ip netns exec`): a lab namespace made from here would not be \
             reachable as documented. Leave this namespace (exit the `ip netns exec` shell) \
             and run `sudo fieldtwin lab up --name {name}` again."
        );
    }
    if !exists(name) {
        ip(&["netns", "add", name]).with_context(
            || "creating a network namespace needs CAP_SYS_ADMIN: run `sudo fieldtwin lab up`",
        )?;
    }
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Deletes namespace `name`.
pub fn down(name: &str) -> anyhow::Result<()> {
    if !exists(name) {
        println!("lab namespace {name} does not exist; nothing to do");
        return Ok(());
    }
    ip(&["netns", "del", name])?;
    println!("lab namespace {name} removed");
    Ok(())
}

/// Runs `command` inside namespace `name`; returns its exit code.
pub fn exec(name: &str, command: &[String]) -> anyhow::Result<i32> {
    if !exists(name) {
        bail!(
            "lab namespace {name} does not exist; create it with `fieldtwin lab up --name {name}`"
        );
    }
    let status = Command::new("ip")
        .args(["netns", "exec", name])
        .args(command)
        .status()
        .context("cannot run `ip netns exec`")?;
    Ok(status.code().unwrap_or(1))
}

/// Runs a `lab` subcommand.
pub fn run(cmd: LabCmd) -> anyhow::Result<i32> {
    match cmd {
        LabCmd::Up { name } => up(&name).map(|_| 0),
        LabCmd::Down { name } => down(&name).map(|_| 0),
        LabCmd::Exec { name, command } => exec(&name, &command),
    }
}
