//! Network namespaces for TAP-mode tests: each test makes its own, runs the
//! real tools inside it, and removes it when dropped. Nothing leaves the
//! namespace.

use std::process::{Command, Output};

use super::{RunningSite, tool};

/// A network namespace owned by one test; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        Self::named(&format!("ftnet-{tag}-{}", std::process::id()))
    }

    /// A namespace called exactly `name` (unique to the caller).
    pub fn named(name: &str) -> Self {
        let name = name.to_string();
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = tool("ip", &["netns", "add", &name]);
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        let out = tool("ip", &["-n", &name, "link", "set", "lo", "up"]);
        assert!(out.status.success(), "{out:?}");
        Self { name }
    }

    /// Runs `program args` inside the namespace.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        tool("ip", &all)
    }

    pub fn ping(&self, ip: &str, count: u32, interval: &str) -> Output {
        self.run(
            "ping",
            &[
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                interval,
                "-W",
                "1",
                ip,
            ],
        )
    }

    /// Reads 6 holding registers of unit 255 at address 10 with mbpoll.
    pub fn mbpoll(&self, ip: &str) -> Output {
        self.run(
            "mbpoll",
            &[
                "-1", "-a", "255", "-r", "11", "-c", "6", "-t", "4", "-o", "3", ip,
            ],
        )
    }

    pub fn python(&self, script: &str) -> Output {
        self.run("python3", &["-c", script])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Privileged tests need root (CAP_NET_ADMIN); others get a loud skip.
pub fn root() -> bool {
    let out = tool("id", &["-u"]);
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if uid != "0" {
        eprintln!(
            "\n!!!!! SKIPPED: TAP-mode tests need root (CAP_NET_ADMIN); uid is {uid} !!!!!\n"
        );
        return false;
    }
    true
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Starts `site` in TAP mode with its TAP in `ns`.
pub fn start(ns: &Netns, site: &str, extra: &[&str]) -> RunningSite {
    let mut args = vec!["--tap", "--netns", ns.name.as_str(), "--tap-name", "ftlab0"];
    args.extend_from_slice(extra);
    let site = RunningSite::start(site, &args);
    assert!(
        site.stdout.lock().unwrap().contains("TAP mode"),
        "not in TAP mode:\n{}",
        site.stdout.lock().unwrap()
    );
    site
}
