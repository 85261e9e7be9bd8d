//! The Data Logger's USB console: a small command language on a
//! pseudo-terminal, limited to what seed 004 allows over USB.
//!
//! Contract (seed 004 "USB Interface"; docs/datalogger.md "USB console"):
//! - Allowed: real-time trace and status (battery voltage, internal
//!   humidity, signal strength, health; never history), configuration
//!   commands (APN, reboot, serial sensor baud rate), diagnostics, and the
//!   modem's AT command interface.
//! - Refused with a message: firmware (upload, download, update), stored
//!   data (records, logs, dumps), uploads to the server, and any binary
//!   transfer (a line with a byte outside printable ASCII, an XMODEM/YMODEM
//!   start).
//! - [`parse`] is total and injection-safe: a line is at most [`MAX_LINE`]
//!   bytes of a whitelist of characters ([`allowed`]); anything else is
//!   refused naming the character, before any word is looked at. Values
//!   (an APN, a baud rate, an AT command) are checked against their own
//!   grammar, so nothing a user types reaches a shell, a file name or the
//!   modem except a checked value.

/// Longest accepted line, bytes.
pub const MAX_LINE: usize = 128;

/// Serial sensor baud rates the logger supports.
pub const BAUDS: [u32; 8] = [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200];

/// A console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Help,
    Status,
    Diag,
    Trace(bool),
    ApnShow,
    ApnSet(String),
    BaudShow,
    BaudSet(u32),
    Reboot,
    /// An AT command for the modem (without the line end).
    At(String),
    /// Lists the digital outputs.
    OutputShow,
    /// Sets a manual digital output (name as typed, checked: letters,
    /// digits, '-').
    OutputSet(String, bool),
}

/// Why a line is refused (the text is shown to the user).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused: {0}")]
pub struct Refusal(pub String);

fn refuse(s: impl Into<String>) -> Refusal {
    Refusal(s.into())
}

/// Whether `b` may appear in a console line.
pub fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b' ' | b'.' | b'-' | b'+' | b'?' | b'=' | b',' | b'"')
}

/// Whether `s` is a valid APN (RFC 1035 labels: letters, digits, '-', '.').
pub fn valid_apn(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

const NOT_OVER_USB: &str = "firmware, stored data and uploads are not available over USB; \
     firmware comes over the cellular path only";

/// Parses one line (without its line end).
pub fn parse(line: &[u8]) -> Result<Cmd, Refusal> {
    if line.len() > MAX_LINE {
        return Err(refuse(format!(
            "line of {} bytes; at most {MAX_LINE}",
            line.len()
        )));
    }
    if let [b @ (0x01 | 0x02 | 0x04 | 0x15 | 0x18)] = line {
        return Err(refuse(format!(
            "binary transfer start (0x{b:02X}); {NOT_OVER_USB}"
        )));
    }
    if let Some((i, &b)) = line.iter().enumerate().find(|(_, b)| !allowed(**b)) {
        let shown = if b.is_ascii_graphic() {
            format!(" '{}'", b as char)
        } else {
            String::new()
        };
        let what = if b.is_ascii() && !b.is_ascii_control() {
            "character"
        } else {
            "byte"
        };
        return Err(refuse(format!(
            "{what} 0x{b:02X}{shown} at column {} is not allowed; use letters, digits, \
             space and . - + ? = , \" (type help)",
            i + 1
        )));
    }
    let text = std::str::from_utf8(line).map_err(|_| refuse("not ASCII"))?;
    let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
    let Some((&first, rest)) = words.split_first() else {
        return Err(refuse("empty line (type help)"));
    };
    let word = first.to_ascii_lowercase();
    if word.len() > 2 && word.starts_with("at") {
        // An AT command typed directly (`AT+CSQ`).
        return Ok(Cmd::At(words.join(" ")));
    }
    let one = |v: &[&str], usage: &str| -> Result<(), Refusal> {
        if v.is_empty() {
            Ok(())
        } else {
            Err(refuse(format!(
                "unexpected {:?}; usage: {usage}",
                v.join(" ")
            )))
        }
    };
    match (word.as_str(), rest) {
        ("help", r) => one(r, "help").map(|_| Cmd::Help),
        ("status", r) => one(r, "status").map(|_| Cmd::Status),
        ("diag", r) => one(r, "diag").map(|_| Cmd::Diag),
        ("reboot", r) => one(r, "reboot").map(|_| Cmd::Reboot),
        ("trace", [v]) if v.eq_ignore_ascii_case("on") => Ok(Cmd::Trace(true)),
        ("trace", [v]) if v.eq_ignore_ascii_case("off") => Ok(Cmd::Trace(false)),
        ("trace", _) => Err(refuse("usage: trace on | trace off")),
        ("apn", []) => Ok(Cmd::ApnShow),
        ("apn", [set, name]) if set.eq_ignore_ascii_case("set") => {
            if valid_apn(name) {
                Ok(Cmd::ApnSet(name.to_string()))
            } else {
                Err(refuse(format!(
                    "{name:?} is not an APN; use 1-63 characters of labels of letters, digits \
                     and '-' separated by '.'"
                )))
            }
        }
        ("apn", _) => Err(refuse("usage: apn | apn set NAME")),
        ("baud", []) => Ok(Cmd::BaudShow),
        ("baud", [set, rate]) if set.eq_ignore_ascii_case("set") => rate
            .parse::<u32>()
            .ok()
            .filter(|r| BAUDS.contains(r))
            .map(Cmd::BaudSet)
            .ok_or_else(|| {
                refuse(format!(
                    "{rate:?} is not a supported baud rate; use one of {}",
                    BAUDS.map(|b| b.to_string()).join(", ")
                ))
            }),
        ("baud", _) => Err(refuse("usage: baud | baud set RATE")),
        ("output" | "outputs", []) => Ok(Cmd::OutputShow),
        ("output", [name, state]) => {
            let ok =
                name.len() <= 32 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            match (ok, super::outputs::parse_state(state)) {
                (true, Some(on)) => Ok(Cmd::OutputSet(name.to_string(), on)),
                (false, _) => Err(refuse(format!(
                    "{name:?} is not an output name; use letters, digits and '-' (type output)"
                ))),
                (true, None) => Err(refuse(format!(
                    "{state:?} is not a state; usage: output NAME on|off"
                ))),
            }
        }
        ("output", _) => Err(refuse("usage: output | output NAME on|off")),
        ("at", []) => Ok(Cmd::At("AT".into())),
        ("at", r) => {
            let cmd = r.join(" ");
            if cmd.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("at")) {
                Ok(Cmd::At(cmd))
            } else {
                Err(refuse(format!("{cmd:?} is not an AT command (AT...)")))
            }
        }
        (
            "firmware" | "fw" | "update" | "upgrade" | "flash" | "upload" | "download" | "dump"
            | "records" | "data" | "log" | "logs" | "history" | "send" | "push" | "xmodem"
            | "ymodem" | "get" | "put",
            _,
        ) => Err(refuse(NOT_OVER_USB.to_string())),
        (w, _) => Err(refuse(format!("unknown command {w:?} (type help)"))),
    }
}

/// What the console shows of the logger at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub battery_v: f64,
    pub humidity_pct: f64,
    pub rssi_dbm: Option<f64>,
    pub technology: String,
    pub attached: bool,
    pub apn: String,
    pub baud: u32,
    pub health: &'static str,
    pub unsent: u64,
    pub firmware: String,
}

/// One trace line (real-time only).
pub fn trace_line(s: &Snapshot) -> String {
    format!(
        "TRACE battery={:.2}V humidity={:.0}% rssi={} tech={} health={}",
        s.battery_v,
        s.humidity_pct,
        s.rssi_dbm
            .map_or("none".to_string(), |r| format!("{r:.0}dBm")),
        s.technology,
        s.health
    )
}

/// The help text.
pub const HELP: &str = "commands: help | status | diag | trace on|off | apn | apn set NAME | \
baud | baud set RATE | output | output NAME on|off | reboot | at AT-COMMAND";

/// The modem's answer to an AT command (passthrough to the modem model).
pub fn at_answer(cmd: &str, s: &Snapshot) -> String {
    let up = cmd.to_ascii_uppercase();
    // RSSI in dBm to the 0-31 scale of AT+CSQ (99: unknown).
    let csq = s
        .rssi_dbm
        .map_or(99, |r| ((r + 113.0) / 2.0).clamp(0.0, 31.0) as u32);
    match up.as_str() {
        "AT" => "OK".into(),
        "ATI" => "LTE-M cellular module\r\nRevision: 01.000.000\r\nOK".into(),
        "AT+CSQ" => format!("+CSQ: {csq},99\r\nOK"),
        "AT+CREG?" => format!("+CREG: 0,{}\r\nOK", if s.attached { 1 } else { 2 }),
        "AT+COPS?" => {
            let act = match s.technology.as_str() {
                "4G" => 7,
                "3G" => 2,
                _ => 0,
            };
            if s.attached {
                format!("+COPS: 0,0,\"FIELDTWIN\",{act}\r\nOK")
            } else {
                "+COPS: 0\r\nOK".into()
            }
        }
        "AT+CGDCONT?" => format!("+CGDCONT: 1,\"IP\",\"{}\"\r\nOK", s.apn),
        _ => "ERROR".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commands() {
        assert_eq!(parse(b"help"), Ok(Cmd::Help));
        assert_eq!(
            parse(b"apn set iot.example-1.net"),
            Ok(Cmd::ApnSet("iot.example-1.net".into()))
        );
        assert_eq!(parse(b"APN"), Ok(Cmd::ApnShow));
        assert_eq!(parse(b"baud set 9600"), Ok(Cmd::BaudSet(9600)));
        assert!(parse(b"baud set 9601").unwrap_err().0.contains("9600"));
        assert_eq!(parse(b"at AT+CSQ"), Ok(Cmd::At("AT+CSQ".into())));
        assert_eq!(parse(b"AT+COPS?"), Ok(Cmd::At("AT+COPS?".into())));
        assert_eq!(parse(b"AT"), Ok(Cmd::At("AT".into())));
        assert_eq!(parse(b"trace on"), Ok(Cmd::Trace(true)));
        assert_eq!(parse(b"reboot"), Ok(Cmd::Reboot));
        assert!(parse(b"reboot now").is_err());
        assert_eq!(parse(b"output"), Ok(Cmd::OutputShow));
        assert_eq!(
            parse(b"output DO1 ON"),
            Ok(Cmd::OutputSet("DO1".into(), true))
        );
        assert!(parse(b"output DO1 maybe").unwrap_err().0.contains("on|off"));
        assert!(
            parse(b"output D.1 on")
                .unwrap_err()
                .0
                .contains("not an output")
        );
        assert!(parse(b"output DO1").is_err());
    }

    #[test]
    fn injection_and_forbidden_operations_are_refused() {
        let e = parse(b"apn set x;reboot").unwrap_err().0;
        assert!(e.contains("0x3B ';'") && e.contains("column 10"), "{e}");
        assert!(parse(b"apn set $(id)").is_err());
        assert!(parse(b"at AT+CGDCONT=1,\"IP\",\"a\"|rm").is_err());
        assert!(parse(b"status\x00").is_err());
        let e = parse(b"firmware upload").unwrap_err().0;
        assert!(e.contains("not available over USB"), "{e}");
        assert!(parse(b"records").unwrap_err().0.contains("stored data"));
        assert!(parse(&[0x01]).unwrap_err().0.contains("binary transfer"));
        assert!(parse(b"apn set -bad").is_err());
        assert!(parse(&[b'a'; 200]).unwrap_err().0.contains("at most"));
    }

    #[test]
    fn at_passthrough() {
        let s = Snapshot {
            battery_v: 3.6,
            humidity_pct: 20.0,
            rssi_dbm: Some(-85.0),
            technology: "4G".into(),
            attached: true,
            apn: "internet".into(),
            baud: 9600,
            health: "ok",
            unsent: 0,
            firmware: "001.000.000".into(),
        };
        assert_eq!(at_answer("AT+CSQ", &s), "+CSQ: 14,99\r\nOK");
        assert!(at_answer("at+cgdcont?", &s).contains("internet"));
        assert_eq!(at_answer("AT+CFUN=0", &s), "ERROR");
    }

    proptest! {
        #[test]
        fn parse_is_total(b in prop::collection::vec(any::<u8>(), 0..160)) {
            let _ = parse(&b);
        }

        /// A line with any character outside the whitelist is refused, and
        /// the refusal names that character's code.
        #[test]
        fn any_forbidden_character_is_refused(
            prefix in "[a-z ]{0,10}",
            bad in any::<u8>().prop_filter("forbidden", |b| !allowed(*b)),
            suffix in "[a-z ]{0,10}",
        ) {
            let mut line = prefix.into_bytes();
            line.push(bad);
            line.extend_from_slice(suffix.as_bytes());
            let e = parse(&line).unwrap_err();
            prop_assert!(e.0.contains(&format!("0x{bad:02X}")), "{}", e.0);
        }

        /// Every accepted value is clean: an APN set is a valid APN, an AT
        /// command only has whitelisted characters.
        #[test]
        fn accepted_values_are_clean(b in prop::collection::vec(any::<u8>(), 0..64)) {
            match parse(&b) {
                Ok(Cmd::ApnSet(a)) => prop_assert!(valid_apn(&a)),
                Ok(Cmd::At(a)) => prop_assert!(a.bytes().all(allowed)),
                Ok(Cmd::OutputSet(n, _)) => prop_assert!(
                    n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                ),
                _ => {}
            }
        }
    }
}
