//! The `:` command line of the dashboard: parses a line into the one
//! [`Command`] enum of the control API (or a dashboard-only action), and
//! completes words with Tab.
//!
//! Contract: [`parse`] never panics; a bad line gives a message that names
//! what was wrong and what is allowed. Durations accept `90`, `90s`, `15m`,
//! `1h`, `2d` and sums such as `1h30m`.

use fieldtwin_emulator::control::{Command, PowerAction};
use fieldtwin_emulator::net::fault::LinkFault;

/// What a command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A command for the site (sent through `POST /api/v1/commands`).
    Send(Command),
    /// A command that needs a yes/no confirmation first (factory reset).
    Confirm(Command, String),
    /// Switch to a tab by name.
    Tab(String),
    /// Run a scenario of the site's library (`POST /api/v1/scenarios/run`).
    RunScenario(String),
    Quit,
}

/// Every command word, for completion and the help overlay.
pub const COMMANDS: &[(&str, &str)] = &[
    ("power", "power DEVICE on|off|cycle"),
    (
        "restart",
        "restart DEVICE [HOLD_S]   (Restart button; >= 10 s = factory reset)",
    ),
    (
        "reset",
        "reset DEVICE              (factory reset, asks first)",
    ),
    (
        "advance",
        "advance DURATION          (1h, 15m, 90s, 2d, 1h30m)",
    ),
    ("speed", "speed FACTOR"),
    ("pause", "pause                     (virtual time)"),
    ("resume", "resume"),
    (
        "link",
        "link DEVICE|segment:NAME down|up|loss PCT|latency MS  (TAP mode)",
    ),
    ("field", "field DEVICE FIELD on|off"),
    ("radio", "radio DEVICE FIELD in|out"),
    ("modbus", "modbus DEVICE eth1|eth2|wifi on|off"),
    (
        "scenario",
        "scenario run NAME         (a scenario of the site's library)",
    ),
    ("tab", "tab devices|events|clock|links|scenarios"),
    ("quit", "quit"),
];

const TABS: &[&str] = &["devices", "events", "clock", "links", "scenarios"];

/// Parses a duration: a number of seconds, or a sum of `N` + `s|m|h|d`.
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let bad = || format!("{s:?} is not a duration; use e.g. 90, 90s, 15m, 1h, 2d or 1h30m");
    if let Ok(v) = s.parse::<f64>() {
        return if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(bad())
        };
    }
    let mut total = 0.0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86_400.0,
            _ => return Err(bad()),
        };
        let n: f64 = num.parse().map_err(|_| bad())?;
        total += n * unit;
        num.clear();
    }
    if !num.is_empty() || s.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

fn on_off(word: Option<&str>, what: &str) -> Result<bool, String> {
    match word {
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        other => Err(format!(
            "{what}: expected on or off, got {:?}",
            other.unwrap_or("")
        )),
    }
}

/// Parses one command line (without the leading `:`).
pub fn parse(line: &str) -> Result<Line, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let arg = |i: usize, name: &str| {
        words
            .get(i)
            .copied()
            .ok_or_else(|| format!("{} needs {name}", words[0]))
    };
    let Some(&first) = words.first() else {
        return Err("empty command; type ? for help".into());
    };
    let n = words.len();
    let too_many = |max: usize| {
        if n > max {
            Err(format!(
                "too many words for {first}: {:?}",
                words[max..].join(" ")
            ))
        } else {
            Ok(())
        }
    };
    Ok(match first {
        "q" | "quit" | "q!" => Line::Quit,
        "power" => {
            too_many(3)?;
            let device = arg(1, "a device")?.to_string();
            let action = match arg(2, "on, off or cycle")? {
                "on" => PowerAction::On,
                "off" => PowerAction::Off,
                "cycle" => PowerAction::Cycle,
                a => return Err(format!("power: {a:?} is not on, off or cycle")),
            };
            Line::Send(Command::Power { device, action })
        }
        "restart" => {
            too_many(3)?;
            let device = arg(1, "a device")?.to_string();
            let hold_s = match words.get(2) {
                Some(h) => parse_duration(h)?,
                None => 1.0,
            };
            Line::Send(Command::RestartButton { device, hold_s })
        }
        "reset" | "factory-reset" => {
            too_many(2)?;
            let device = arg(1, "a device")?.to_string();
            let q = format!(
                "Factory reset {device}? Its configuration, accounts and logs are erased. (y/n)"
            );
            Line::Confirm(Command::FactoryReset { device }, q)
        }
        "advance" => {
            too_many(2)?;
            Line::Send(Command::AdvanceClock {
                seconds: parse_duration(arg(1, "a duration (1h, 15m, 90s)")?)?,
            })
        }
        "speed" => {
            too_many(2)?;
            let s = arg(1, "a factor")?;
            let speed = s
                .trim_end_matches('x')
                .parse::<f64>()
                .map_err(|_| format!("speed: {s:?} is not a number"))?;
            Line::Send(Command::SetSpeed { speed })
        }
        "pause" => {
            too_many(1)?;
            Line::Send(Command::Pause { paused: true })
        }
        "resume" => {
            too_many(1)?;
            Line::Send(Command::Pause { paused: false })
        }
        "link" => {
            let device = arg(1, "a device or segment:NAME")?.to_string();
            let mut fault = LinkFault::default();
            match arg(2, "down, up, loss PCT or latency MS")? {
                "down" => fault.down = true,
                "up" | "clear" => {}
                kind @ ("loss" | "latency") => {
                    let v = arg(3, "a number")?;
                    let v: f64 = v
                        .trim_end_matches(['%', 's', 'm'])
                        .parse()
                        .map_err(|_| format!("link {kind}: {v:?} is not a number"))?;
                    if kind == "loss" {
                        fault.loss_pct = v;
                    } else {
                        fault.latency_ms = v;
                    }
                }
                a => return Err(format!("link: {a:?} is not down, up, loss or latency")),
            }
            Line::Send(Command::SetLink { device, fault })
        }
        "field" => {
            too_many(4)?;
            Line::Send(Command::FieldPower {
                device: arg(1, "a device")?.to_string(),
                field: arg(2, "a field device")?.to_string(),
                on: on_off(words.get(3).copied(), "field")?,
            })
        }
        "radio" => {
            too_many(4)?;
            let in_contact = match words.get(3).copied() {
                Some("in") => true,
                Some("out") => false,
                o => {
                    return Err(format!(
                        "radio: expected in or out, got {:?}",
                        o.unwrap_or("")
                    ));
                }
            };
            Line::Send(Command::FieldRadio {
                device: arg(1, "a device")?.to_string(),
                field: arg(2, "a field device")?.to_string(),
                in_contact,
            })
        }
        "modbus" => {
            too_many(4)?;
            Line::Send(Command::ModbusService {
                device: arg(1, "a device")?.to_string(),
                interface: arg(2, "an interface (eth1, eth2, wifi)")?.to_string(),
                enabled: on_off(words.get(3).copied(), "modbus")?,
            })
        }
        "scenario" => {
            too_many(3)?;
            match words.get(1).copied() {
                Some("run") => Line::RunScenario(arg(2, "a scenario name")?.to_string()),
                other => {
                    return Err(format!(
                        "scenario: expected run NAME, got {:?}",
                        other.unwrap_or("")
                    ));
                }
            }
        }
        "tab" | "devices" | "events" | "clock" | "links" | "scenarios" => {
            let name = if first == "tab" {
                arg(1, "a tab name")?
            } else {
                first
            };
            if !TABS.contains(&name) {
                return Err(format!("no tab {name:?}; tabs: {}", TABS.join(", ")));
            }
            Line::Tab(name.to_string())
        }
        other => {
            let names: Vec<&str> = COMMANDS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "unknown command {other:?}; commands: {}",
                names.join(", ")
            ));
        }
    })
}

/// Candidates for the last word of `line`, given the site's device ids
/// and its scenario library (file stems).
pub fn candidates(line: &str, devices: &[&str], scenarios: &[&str]) -> Vec<String> {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    if line.ends_with(' ') || words.is_empty() {
        words.push("");
    }
    let last = *words.last().unwrap_or(&"");
    let pos = words.len() - 1;
    let pool: Vec<&str> = match (pos, words[0]) {
        (0, _) => COMMANDS.iter().map(|(n, _)| *n).collect(),
        (1, "tab") => TABS.to_vec(),
        (1, "advance") => vec!["1m", "15m", "1h", "1d"],
        (1, "speed") => vec!["1", "10", "100", "1000"],
        (1, "scenario") => vec!["run"],
        (2, "scenario") if words[1] == "run" => scenarios.to_vec(),
        (1, "power" | "restart" | "reset" | "link" | "field" | "radio" | "modbus") => {
            devices.to_vec()
        }
        (2, "power") => vec!["on", "off", "cycle"],
        (2, "link") => vec!["down", "up", "loss", "latency"],
        (2, "modbus") => vec!["eth1", "eth2", "wifi"],
        (3, "field" | "modbus") => vec!["on", "off"],
        (3, "radio") => vec!["in", "out"],
        _ => vec![],
    };
    pool.into_iter()
        .filter(|c| c.starts_with(last))
        .map(String::from)
        .collect()
}

/// Completes the last word of `line` (to the longest common prefix of the
/// candidates; a unique candidate gets a trailing space).
pub fn complete(line: &str, devices: &[&str], scenarios: &[&str]) -> String {
    let cands = candidates(line, devices, scenarios);
    let Some(first) = cands.first() else {
        return line.to_string();
    };
    let mut prefix = first.clone();
    for c in &cands[1..] {
        let common = prefix
            .chars()
            .zip(c.chars())
            .take_while(|(a, b)| a == b)
            .count();
        prefix = prefix.chars().take(common).collect();
    }
    let head = match line.rfind(' ') {
        Some(i) => &line[..=i],
        None => "",
    };
    let mut out = format!("{head}{prefix}");
    if cands.len() == 1 {
        out.push(' ');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90.0));
        assert_eq!(parse_duration("1h"), Ok(3600.0));
        assert_eq!(parse_duration("1h30m"), Ok(5400.0));
        assert_eq!(parse_duration("2d"), Ok(172_800.0));
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("-5").is_err());
        assert!(parse_duration("5h3").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn lines_become_commands() {
        assert_eq!(
            parse("power ps1 cycle"),
            Ok(Line::Send(Command::Power {
                device: "ps1".into(),
                action: PowerAction::Cycle
            }))
        );
        assert_eq!(
            parse("advance 1h"),
            Ok(Line::Send(Command::AdvanceClock { seconds: 3600.0 }))
        );
        assert_eq!(
            parse("speed 100"),
            Ok(Line::Send(Command::SetSpeed { speed: 100.0 }))
        );
        let Ok(Line::Send(Command::SetLink { device, fault })) = parse("link ot down") else {
            panic!("link");
        };
        assert_eq!(device, "ot");
        assert!(fault.down);
        assert!(matches!(
            parse("reset ps1"),
            Ok(Line::Confirm(Command::FactoryReset { .. }, _))
        ));
        assert_eq!(parse("tab clock"), Ok(Line::Tab("clock".into())));
        assert_eq!(parse("q"), Ok(Line::Quit));
        assert_eq!(
            parse("scenario run port-scan"),
            Ok(Line::RunScenario("port-scan".into()))
        );
    }

    #[test]
    fn bad_lines_say_what_is_allowed() {
        let e = parse("power ps1 sideways").unwrap_err();
        assert!(e.contains("on, off or cycle"), "{e}");
        let e = parse("frobnicate").unwrap_err();
        assert!(e.contains("commands: power"), "{e}");
        assert!(parse("power").unwrap_err().contains("needs a device"));
        assert!(parse("").is_err());
        assert!(parse("advance 1h extra").unwrap_err().contains("too many"));
        assert!(parse("tab nowhere").unwrap_err().contains("tabs:"));
        assert!(parse("scenario").unwrap_err().contains("expected run NAME"));
        assert!(
            parse("scenario list")
                .unwrap_err()
                .contains("expected run NAME")
        );
        let e = parse("scenario run").unwrap_err();
        assert!(e.contains("needs a scenario name"), "{e}");
        assert!(parse("scenario run a b").unwrap_err().contains("too many"));
    }

    #[test]
    fn completion() {
        let devs = ["ps1", "ps2", "dl1"];
        let lib = ["port-scan", "power-loss", "brute-force"];
        assert_eq!(complete("po", &devs, &lib), "power ");
        assert_eq!(complete("power p", &devs, &lib), "power ps");
        assert_eq!(complete("power ps1 c", &devs, &lib), "power ps1 cycle ");
        assert_eq!(complete("power d", &devs, &lib), "power dl1 ");
        assert_eq!(complete("zz", &devs, &lib), "zz");
        assert_eq!(candidates("power ", &devs, &lib).len(), 3);
        assert_eq!(complete("sc", &devs, &lib), "scenario ");
        assert_eq!(complete("scenario r", &devs, &lib), "scenario run ");
        assert_eq!(complete("scenario run po", &devs, &lib), "scenario run po");
        assert_eq!(
            complete("scenario run por", &devs, &lib),
            "scenario run port-scan "
        );
    }
}
