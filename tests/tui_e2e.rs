//! End-to-end check of the terminal dashboard: the real `fieldtwin tui`
//! binary runs in a detached tmux session of fixed size (a tmux server on a
//! socket of this test's own, `-L`), attached to a site the test starts on
//! its own addresses and port; the test types keys with `tmux send-keys` and
//! reads the screen with `tmux capture-pane -p`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use common::{RunningSite, site_text, tool};

/// A tmux server and session of this test only; killed on drop.
struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    fn start(shell_cmd: &str, cols: u16, rows: u16) -> Self {
        let socket = format!("ft-tui-e2e-{}", std::process::id());
        let session = "dash".to_string();
        let out = tool(
            "tmux",
            &[
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                &cols.to_string(),
                "-y",
                &rows.to_string(),
                shell_cmd,
            ],
        );
        assert!(out.status.success(), "tmux new-session: {out:?}");
        Self { socket, session }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let mut all = vec!["-L", &self.socket];
        all.extend_from_slice(args);
        let out = tool("tmux", &all);
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `keys` (tmux key names, e.g. `Enter`, or literal text).
    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.tmux(&["send-keys", "-t", &self.session, k]);
            // Let the dashboard see each key alone (an Esc followed at once by
            // a key reads as Alt+key).
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", &self.session])
    }

    /// Waits until the screen satisfies `f`; panics with the screen after
    /// `secs` seconds.
    fn wait(&self, what: &str, secs: u64, f: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if f(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-session", "-t", &self.session])
            .output();
    }
}

/// The site time the Clock tab shows.
fn clock_tab_time(screen: &str) -> NaiveDateTime {
    let line = screen
        .lines()
        .find_map(|l| l.split("site time").nth(1).filter(|r| r.contains("UTC")))
        .unwrap_or_else(|| panic!("no site time on the Clock tab:\n{screen}"));
    let text = line.trim_start().get(..19).expect("a date-time");
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// Lines of the Events tab that are power events of `dev`, in order.
fn power_events(screen: &str, dev: &str) -> Vec<String> {
    screen
        .lines()
        .filter_map(|l| {
            l.split(&format!("{dev} power "))
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .map(String::from)
        })
        .collect()
}

#[test]
fn dashboard_power_cycles_the_panel_server_and_advances_the_clock() {
    let text = site_text(92);
    let keep = tempfile::tempdir().unwrap();
    let site_file = keep.path().join("site.toml");
    std::fs::write(&site_file, &text).unwrap();
    let site = RunningSite::start(&text, &[]);
    let api = site.api.to_string();
    let devices = site.get_json("/api/v1/devices");
    let ids: Vec<String> = devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&"ps1".to_string()), "{ids:?}");

    let bin = env!("CARGO_BIN_EXE_fieldtwin");
    // After the dashboard exits the shell prints its status and waits, so a
    // crash stays readable on the screen.
    let tmux = Tmux::start(
        &format!("{bin} tui --api {api}; echo DASHBOARD-EXITED-$?; sleep 60"),
        200,
        45,
    );

    // Every device of the default site is listed, with the Panel Server on.
    let s = tmux.wait("the device table", 30, |s| {
        ids.iter().all(|id| s.contains(id.as_str())) && s.contains(" connected ")
    });
    assert!(s.contains(&format!("{} devices", ids.len())), "{s}");
    let ps1_row = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("│ps1 "))
            .map(String::from)
            .unwrap_or_default()
    };
    assert!(ps1_row(&s).contains("PAS600L"), "{s}");
    assert!(ps1_row(&s).contains(" on "), "{s}");

    // Select the Panel Server with the filter and press the power-cycle key.
    tmux.keys(&["/", "ps1", "Enter"]);
    tmux.wait("the filtered table", 10, |s| {
        s.contains(&format!("Devices 1/{}", ids.len()))
    });
    tmux.keys(&["c"]);
    let s = tmux.wait("the answer to the power cycle", 20, |s| {
        s.contains("power cycle ps1: ps1 — power on")
    });
    assert!(ps1_row(&s).contains(" on "), "{s}");
    // The site really cycled it: its uptime restarted.
    let st = site.get_json("/api/v1/devices/ps1");
    assert_eq!(st["power"], "on");
    assert!(st["uptime_s"].as_f64().unwrap() < 10.0, "{st}");

    // The Events tab shows off, booting, on, in that order.
    tmux.keys(&["2"]);
    let s = tmux.wait("the power events", 10, |s| {
        power_events(s, "ps1").ends_with(&["off".into(), "booting".into(), "on".into()])
    });
    assert!(s.contains("Events ("), "{s}");

    // Clock tab: pause, then :advance 1h moves the shown site time by 1 h.
    tmux.keys(&["3", ":", "pause", "Enter"]);
    let before = clock_tab_time(&tmux.wait("the paused clock", 10, |s| s.contains("PAUSED")));
    tmux.keys(&[":", "adv", "Tab", "1h", "Enter"]);
    let s = tmux.wait("the advanced clock", 10, |s| {
        s.contains("PAUSED") && clock_tab_time(s) != before
    });
    let after = clock_tab_time(&s);
    assert_eq!(
        (after - before).num_seconds(),
        3600,
        "{before} -> {after}\n{s}"
    );
    let api_time: chrono::DateTime<chrono::Utc> = site.get_json("/api/v1/clock")["site_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        api_time.naive_utc().format("%H:%M:%S").to_string(),
        after.format("%H:%M:%S").to_string()
    );

    // A bad command says what is allowed, and the dashboard keeps running.
    tmux.keys(&[":", "power ps1 sideways", "Enter"]);
    tmux.wait("the error", 10, |s| s.contains("is not on, off or cycle"));

    // The emulator goes away: the screen says so; a new one on the same
    // address is picked up again.
    drop(site);
    tmux.wait("the lost connection", 20, |s| {
        s.contains("connection lost, reconnecting")
    });
    let mut again = Command::new(bin)
        .args(["run", "--site", site_file.to_str().unwrap(), "--api", &api])
        .stdout(Stdio::null())
        .spawn()
        .expect("restart fieldtwin");
    let reconnected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tmux.wait("the reconnection", 60, |s| s.contains("reconnected 1x"));
        tmux.keys(&["1"]);
        tmux.wait("the Panel Server on again", 20, |s| {
            ps1_row(s).contains(" on ")
        });
    }));
    // SIGTERM stops the site even with the dashboard's event stream open.
    let _ = Command::new("kill")
        .args(["-TERM", &again.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    let exited = loop {
        match again.try_wait() {
            Ok(Some(status)) => break Some(status),
            _ if Instant::now() > deadline => break None,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    if exited.is_none() {
        let _ = again.kill();
        let _ = again.wait();
    }
    reconnected.unwrap_or_else(|e| std::panic::resume_unwind(e));
    let status = exited.expect("fieldtwin run did not stop within 15 s of SIGTERM");
    assert!(status.success(), "fieldtwin run after SIGTERM: {status}");

    // q quits cleanly.
    tmux.keys(&["Escape", "q"]);
    tmux.wait("the dashboard to exit", 10, |s| {
        s.contains("DASHBOARD-EXITED-0")
    });
}
