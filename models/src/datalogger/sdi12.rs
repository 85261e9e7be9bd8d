//! SDI-12 (v1.4): the command/response codec, the 7E1 character framing of
//! the 1200-baud line, a sensor on the line and the logger's recorder side.
//!
//! Contract (reference devices.md §4, SDI-12 v1.4):
//! - [`Command::parse`] is total: any bytes give a command or a
//!   [`ParseError`] (no panic); [`Command::encode`] and `parse` round-trip.
//!   Commands: `a!`, `?!`, `aAb!`, `aI!`, `aM!`/`aM1!`..`aM9!`, `aMC!`..,
//!   `aC!`/`aCC!`.., `aD0!`..`aD9!`, `aR0!`..`aR9!`/`aRC0!`.., `aV!`.
//! - Replies end with `<CR><LF>`; CRC variants append the three-character
//!   ASCII encoding of the CRC-16 (poly 0xA001, init 0) over the reply
//!   (address included) before `<CR><LF>` ([`crc_ascii`]).
//! - Line: 1200 baud, 7 data bits, even parity, 1 stop bit ([`frame_7e1`],
//!   [`unframe_7e1`]: a character with a bad parity or stop bit is dropped).
//!   A sleeping sensor only listens after a break of at least 12 ms followed
//!   by at least 8.33 ms of marking; it falls asleep again after 100 ms of
//!   marking without a command ([`Sensor::line`]).
//! - `aM!` answers `atttn`; when `ttt > 0` the sensor sends the service
//!   request `a<CR><LF>` once the data is ready, then `aD0!` returns the
//!   values (a `D` reply to an M measurement is at most 35 characters). A
//!   data request before the data is ready aborts the measurement: `a<CR><LF>`.

use std::time::Duration;

/// An SDI-12 command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `a!`
    Acknowledge(char),
    /// `?!`
    Query,
    /// `aAb!`
    ChangeAddress(char, char),
    /// `aI!`
    Identify(char),
    /// `aM!`, `aMn!`, `aMC!`, `aMCn!`
    Measure { addr: char, index: u8, crc: bool },
    /// `aC!`, `aCn!`, `aCC!`, `aCCn!`
    Concurrent { addr: char, index: u8, crc: bool },
    /// `aDn!`
    Data { addr: char, index: u8 },
    /// `aRn!`, `aRCn!`
    Continuous { addr: char, index: u8, crc: bool },
    /// `aV!`
    Verify(char),
}

/// Why bytes are not an SDI-12 command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("an SDI-12 command ends with '!'")]
    NoTerminator,
    #[error("{0:?} is not an SDI-12 address (0-9, a-z, A-Z)")]
    BadAddress(char),
    #[error("unknown SDI-12 command {0:?}")]
    Unknown(String),
}

/// Whether `c` is a valid sensor address.
pub fn is_address(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

fn digit(s: &str) -> Option<u8> {
    match s.as_bytes() {
        [] => Some(0),
        [d @ b'0'..=b'9'] => Some(d - b'0'),
        _ => None,
    }
}

impl Command {
    /// Parses one command (with its final `!`).
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let text = String::from_utf8_lossy(bytes);
        let body = text.strip_suffix('!').ok_or(ParseError::NoTerminator)?;
        // SDI-12 is 7-bit ASCII; anything else is no command (and would
        // not split on character boundaries below).
        if !bytes.is_ascii() {
            return Err(ParseError::Unknown(text.to_string()));
        }
        let mut chars = body.chars();
        let addr = chars
            .next()
            .ok_or_else(|| ParseError::Unknown(text.to_string()))?;
        let rest: &str = chars.as_str();
        if addr == '?' {
            return if rest.is_empty() {
                Ok(Command::Query)
            } else {
                Err(ParseError::Unknown(text.to_string()))
            };
        }
        if !is_address(addr) {
            return Err(ParseError::BadAddress(addr));
        }
        let unknown = || ParseError::Unknown(text.to_string());
        let cmd = match rest {
            "" => Command::Acknowledge(addr),
            "I" => Command::Identify(addr),
            "V" => Command::Verify(addr),
            _ => {
                // The first character, whatever its width (a non-ASCII byte
                // arrives as U+FFFD, three bytes).
                let first = rest.chars().next().map_or(0, char::len_utf8);
                let (head, tail) = rest.split_at(first);
                match head {
                    "A" => {
                        let mut t = tail.chars();
                        match (t.next(), t.next()) {
                            (Some(b), None) if is_address(b) => Command::ChangeAddress(addr, b),
                            (Some(b), None) => return Err(ParseError::BadAddress(b)),
                            _ => return Err(unknown()),
                        }
                    }
                    "M" | "C" | "R" => {
                        let (crc, n) = match tail.strip_prefix('C') {
                            Some(n) => (true, n),
                            None => (false, tail),
                        };
                        let index = if head == "R" {
                            match n.as_bytes() {
                                [d @ b'0'..=b'9'] => d - b'0',
                                _ => return Err(unknown()),
                            }
                        } else {
                            digit(n).ok_or_else(unknown)?
                        };
                        match head {
                            "M" => Command::Measure { addr, index, crc },
                            "C" => Command::Concurrent { addr, index, crc },
                            _ => Command::Continuous { addr, index, crc },
                        }
                    }
                    "D" => match tail.as_bytes() {
                        [d @ b'0'..=b'9'] => Command::Data {
                            addr,
                            index: d - b'0',
                        },
                        _ => return Err(unknown()),
                    },
                    _ => return Err(unknown()),
                }
            }
        };
        Ok(cmd)
    }

    /// The command's text.
    pub fn encode(&self) -> String {
        let n = |i: u8| {
            if i == 0 { String::new() } else { i.to_string() }
        };
        let c = |crc: bool| if crc { "C" } else { "" };
        match *self {
            Command::Acknowledge(a) => format!("{a}!"),
            Command::Query => "?!".into(),
            Command::ChangeAddress(a, b) => format!("{a}A{b}!"),
            Command::Identify(a) => format!("{a}I!"),
            Command::Measure { addr, index, crc } => format!("{addr}M{}{}!", c(crc), n(index)),
            Command::Concurrent { addr, index, crc } => {
                format!("{addr}C{}{}!", c(crc), n(index))
            }
            Command::Data { addr, index } => format!("{addr}D{index}!"),
            Command::Continuous { addr, index, crc } => format!("{addr}R{}{index}!", c(crc)),
            Command::Verify(a) => format!("{a}V!"),
        }
    }

    /// The address the command is for (`None` for `?!`).
    pub fn address(&self) -> Option<char> {
        match *self {
            Command::Query => None,
            Command::Acknowledge(a)
            | Command::ChangeAddress(a, _)
            | Command::Identify(a)
            | Command::Verify(a) => Some(a),
            Command::Measure { addr, .. }
            | Command::Concurrent { addr, .. }
            | Command::Data { addr, .. }
            | Command::Continuous { addr, .. } => Some(addr),
        }
    }
}

/// CRC-16 of SDI-12 (reflected polynomial 0xA001, initial value 0).
pub fn crc16(data: &[u8]) -> u16 {
    fieldtwin_emulator::crc::crc16_reflected(0xA001, 0, data)
}

/// The CRC as the three printable characters SDI-12 appends.
pub fn crc_ascii(data: &[u8]) -> [u8; 3] {
    let c = crc16(data);
    [
        0x40 | (c >> 12) as u8,
        0x40 | ((c >> 6) & 0x3F) as u8,
        0x40 | (c & 0x3F) as u8,
    ]
}

/// Checks and strips the CRC of a reply body (without `<CR><LF>`).
pub fn check_crc(body: &[u8]) -> Option<&[u8]> {
    let (data, crc) = body.split_at_checked(body.len().checked_sub(3)?)?;
    (crc_ascii(data) == crc).then_some(data)
}

/// Formats values the SDI-12 way: each with its sign (`+1.23-0.5`).
pub fn format_values(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| {
            let v = if v.is_finite() { *v } else { 0.0 };
            format!("{}{:.3}", if v < 0.0 { '-' } else { '+' }, v.abs())
        })
        .collect()
}

/// Parses sign-prefixed values (`+1.23-0.5`); `None` on malformed text.
pub fn parse_values(text: &str) -> Option<Vec<f64>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        if c == '+' || c == '-' {
            if let Some(s) = start {
                out.push(text[s..i].parse().ok()?);
            }
            start = Some(i);
        } else if !(c.is_ascii_digit() || c == '.') || start.is_none() {
            return None;
        }
    }
    if let Some(s) = start {
        out.push(text[s..].parse().ok()?);
    }
    Some(out)
}

/// One character on the wire as 10 bits (start, 7 data LSB first, even
/// parity, stop), LSB = start bit.
pub fn frame_7e1(c: u8) -> u16 {
    let data = u16::from(c & 0x7F);
    let parity = (data.count_ones() & 1) as u16;
    // start bit 0, data bits 1..=7, parity bit 8, stop bit 9 (1).
    (data << 1) | (parity << 8) | (1 << 9)
}

/// The character of a 10-bit frame, or `None` on a framing or parity error.
pub fn unframe_7e1(f: u16) -> Option<u8> {
    if f & 1 != 0 || f & (1 << 9) == 0 || f >> 10 != 0 {
        return None;
    }
    let data = ((f >> 1) & 0x7F) as u8;
    let parity = ((f >> 8) & 1) as u32;
    (data.count_ones() + parity)
        .is_multiple_of(2)
        .then_some(data)
}

/// Time one character takes at 1200 baud (10 bits).
pub const CHAR_TIME: Duration = Duration::from_micros(8_333);
/// Shortest break that wakes a sensor.
pub const BREAK_MIN: Duration = Duration::from_millis(12);
/// Marking a sensor needs after the break.
pub const MARKING_MIN: Duration = Duration::from_micros(8_330);
/// Marking after which a sensor goes back to sleep.
pub const SLEEP_AFTER: Duration = Duration::from_millis(100);

/// What happens on the data line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// Spacing (break) for a duration.
    Break(Duration),
    /// Marking (idle) for a duration.
    Marking(Duration),
    /// Characters, as 7E1 frames.
    Frames(Vec<u16>),
}

/// A sensor on the SDI-12 line (an SDI-12 water-temperature probe).
#[derive(Debug, Clone)]
pub struct Sensor {
    addr: char,
    awake: bool,
    /// Break seen, waiting for the marking.
    after_break: bool,
    idle: Duration,
    reading: f64,
    connected: bool,
    /// Seconds a measurement takes (`ttt`).
    pub measure_s: u16,
    /// Measurement in progress: (ready at, values, crc).
    pending: Option<(Duration, Vec<f64>, bool)>,
    /// Data of the last finished measurement, and whether it carries a CRC.
    data: Option<(Vec<f64>, bool)>,
}

/// Identification string of the emulated probe (`aI!`): SDI-12 1.4,
/// vendor, model, version, serial.
pub const IDENT: &str = "14FIELDTWNSDITMP100SN0001";

impl Sensor {
    pub fn new(addr: char) -> Self {
        Self {
            addr,
            awake: false,
            after_break: false,
            idle: Duration::ZERO,
            reading: 0.0,
            connected: true,
            measure_s: 2,
            pending: None,
            data: None,
        }
    }

    pub fn address(&self) -> char {
        self.addr
    }

    /// The physical value the probe sees now (temperature, degC).
    pub fn set_reading(&mut self, v: f64) {
        self.reading = v;
    }

    /// A disconnected sensor never answers.
    pub fn set_connected(&mut self, on: bool) {
        self.connected = on;
    }

    /// The line does `ev`; returns the characters the sensor answers (7E1 frames).
    pub fn line(&mut self, ev: &LineEvent, now: Duration) -> Vec<u16> {
        if !self.connected {
            return Vec::new();
        }
        match ev {
            LineEvent::Break(d) => {
                if *d >= BREAK_MIN {
                    self.after_break = true;
                    self.awake = false;
                    self.idle = Duration::ZERO;
                    // A break aborts a measurement in progress.
                    self.pending = None;
                }
                Vec::new()
            }
            LineEvent::Marking(d) => {
                if self.after_break && *d >= MARKING_MIN {
                    self.after_break = false;
                    self.awake = true;
                    self.idle = *d;
                } else if self.awake {
                    self.idle += *d;
                    if self.idle > SLEEP_AFTER {
                        self.awake = false;
                    }
                }
                Vec::new()
            }
            LineEvent::Frames(frames) => {
                self.idle = Duration::ZERO;
                if !self.awake {
                    return Vec::new();
                }
                let Some(bytes) = frames
                    .iter()
                    .map(|f| unframe_7e1(*f))
                    .collect::<Option<Vec<u8>>>()
                else {
                    // A garbled command is ignored (no reply).
                    return Vec::new();
                };
                match Command::parse(&bytes) {
                    Ok(cmd) => self
                        .handle(cmd, now)
                        .map(|r| r.bytes().map(frame_7e1).collect())
                        .unwrap_or_default(),
                    Err(_) => Vec::new(),
                }
            }
        }
    }

    /// The service request the sensor sends at `now` if a measurement just
    /// finished (`a<CR><LF>`).
    pub fn poll(&mut self, now: Duration) -> Option<String> {
        if !self.connected {
            return None;
        }
        let (ready, _, _) = self.pending.as_ref()?;
        if *ready > now {
            return None;
        }
        let (_, v, crc) = self.pending.take()?;
        self.data = Some((v, crc));
        Some(format!("{}\r\n", self.addr))
    }

    /// When the pending measurement is ready.
    pub fn ready_at(&self) -> Option<Duration> {
        self.pending.as_ref().map(|p| p.0)
    }

    fn values(&self) -> Vec<f64> {
        // Temperature and the probe's supply voltage.
        vec![self.reading, 12.1]
    }

    fn reply(&self, body: &str, crc: bool) -> String {
        let mut s = body.as_bytes().to_vec();
        if crc {
            let c = crc_ascii(&s);
            s.extend_from_slice(&c);
        }
        format!("{}\r\n", String::from_utf8_lossy(&s))
    }

    /// Handles a parsed command at `now`; the reply text, if the command is
    /// for this sensor.
    pub fn handle(&mut self, cmd: Command, now: Duration) -> Option<String> {
        let a = self.addr;
        if cmd.address().is_some_and(|x| x != a) {
            return None;
        }
        // Any command for us other than a data request aborts a measurement.
        if !matches!(cmd, Command::Data { .. }) && self.pending.is_some() {
            self.pending = None;
        }
        let r = match cmd {
            Command::Acknowledge(_) | Command::Query => format!("{a}\r\n"),
            Command::ChangeAddress(_, b) => {
                self.addr = b;
                format!("{b}\r\n")
            }
            Command::Identify(_) => format!("{a}{IDENT}\r\n"),
            Command::Verify(_) => {
                self.data = Some((vec![0.0], false));
                format!("{a}0001\r\n")
            }
            Command::Measure { index, crc, .. } => {
                if index > 0 {
                    // Only M0 is implemented: zero values.
                    self.data = Some((Vec::new(), crc));
                    return Some(format!("{a}0000\r\n"));
                }
                let v = self.values();
                let n = v.len();
                if self.measure_s == 0 {
                    self.data = Some((v, crc));
                } else {
                    self.pending =
                        Some((now + Duration::from_secs(u64::from(self.measure_s)), v, crc));
                    self.data = None;
                }
                format!("{a}{:03}{n}\r\n", self.measure_s)
            }
            Command::Concurrent { index, crc, .. } => {
                let v = if index == 0 { self.values() } else { vec![] };
                let n = v.len();
                // Concurrent: no service request; data after ttt seconds.
                self.data = Some((v, crc));
                format!("{a}{:03}{n:02}\r\n", self.measure_s)
            }
            Command::Data { index, .. } => {
                if let Some((ready, _, _)) = &self.pending
                    && *ready > now
                {
                    self.pending = None;
                    self.data = None;
                    return Some(format!("{a}\r\n"));
                }
                if self.pending.is_some() {
                    self.poll(now);
                }
                match (&self.data, index) {
                    (Some((v, crc)), 0) => self.reply(&format!("{a}{}", format_values(v)), *crc),
                    (Some((_, crc)), _) => self.reply(&a.to_string(), *crc),
                    (None, _) => format!("{a}\r\n"),
                }
            }
            Command::Continuous { index, crc, .. } => {
                if index == 0 {
                    self.reply(&format!("{a}{}", format_values(&[self.reading])), crc)
                } else {
                    self.reply(&a.to_string(), crc)
                }
            }
        };
        Some(r)
    }
}

/// The logger's side of the line.
#[derive(Debug)]
pub struct Recorder;

impl Recorder {
    fn send(sensor: &mut Sensor, text: &str, now: Duration) -> Option<String> {
        let frames: Vec<u16> = text.bytes().map(frame_7e1).collect();
        let answer = sensor.line(&LineEvent::Frames(frames), now);
        let bytes: Option<Vec<u8>> = answer.iter().map(|f| unframe_7e1(*f)).collect();
        let s = String::from_utf8(bytes?).ok()?;
        (!s.is_empty()).then_some(s)
    }

    fn wake(sensor: &mut Sensor, now: Duration) {
        sensor.line(&LineEvent::Break(BREAK_MIN), now);
        sensor.line(&LineEvent::Marking(MARKING_MIN), now);
    }

    /// Takes one measurement from the sensor at `addr` starting at `now`:
    /// break, `aMC!`, waits for the service request, `aD0!`, checks the CRC.
    /// The first value, or `None` if the sensor did not answer properly.
    pub fn measure(sensor: &mut Sensor, addr: char, now: Duration) -> Option<f64> {
        Self::wake(sensor, now);
        let cmd = Command::Measure {
            addr,
            index: 0,
            crc: true,
        };
        let r = Self::send(sensor, &cmd.encode(), now)?;
        let body = r.strip_suffix("\r\n")?;
        let (a, rest) = body.split_at_checked(1)?;
        if a.chars().next()? != addr || rest.len() != 4 {
            return None;
        }
        let ttt: u64 = rest.get(..3)?.parse().ok()?;
        let n: usize = rest.get(3..)?.parse().ok()?;
        let mut t = now;
        if ttt > 0 {
            t = sensor.ready_at()?;
            let sr = sensor.poll(t)?;
            if sr != format!("{addr}\r\n") {
                return None;
            }
            Self::wake(sensor, t);
        }
        let r = Self::send(sensor, &Command::Data { addr, index: 0 }.encode(), t)?;
        let body = r.strip_suffix("\r\n")?;
        let data = check_crc(body.as_bytes())?;
        let text = std::str::from_utf8(data).ok()?;
        let values = parse_values(text.strip_prefix(addr)?)?;
        (values.len() == n).then(|| values.first().copied())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_command_table() {
        assert_eq!(Command::parse(b"0!"), Ok(Command::Acknowledge('0')));
        assert_eq!(Command::parse(b"?!"), Ok(Command::Query));
        assert_eq!(
            Command::parse(b"0A5!"),
            Ok(Command::ChangeAddress('0', '5'))
        );
        assert_eq!(Command::parse(b"5I!"), Ok(Command::Identify('5')));
        assert_eq!(
            Command::parse(b"5M!"),
            Ok(Command::Measure {
                addr: '5',
                index: 0,
                crc: false
            })
        );
        assert_eq!(
            Command::parse(b"aMC3!"),
            Ok(Command::Measure {
                addr: 'a',
                index: 3,
                crc: true
            })
        );
        assert_eq!(
            Command::parse(b"0CC!"),
            Ok(Command::Concurrent {
                addr: '0',
                index: 0,
                crc: true
            })
        );
        assert_eq!(
            Command::parse(b"0D0!"),
            Ok(Command::Data {
                addr: '0',
                index: 0
            })
        );
        assert_eq!(
            Command::parse(b"0RC0!"),
            Ok(Command::Continuous {
                addr: '0',
                index: 0,
                crc: true
            })
        );
        assert_eq!(Command::parse(b"0V!"), Ok(Command::Verify('0')));
        assert_eq!(Command::parse(b"0M"), Err(ParseError::NoTerminator));
        assert_eq!(Command::parse(b"#!"), Err(ParseError::BadAddress('#')));
        assert!(Command::parse(b"0D!").is_err());
        assert!(Command::parse(b"0R!").is_err());
        assert!(Command::parse(b"0MM!").is_err());
    }

    #[test]
    fn crc_matches_the_standard_example() {
        // SDI-12 v1.4 §4.4.12.3 example: "0+3.14" -> CRC "OqZ".
        assert_eq!(&crc_ascii(b"0+3.14"), b"OqZ");
        assert_eq!(check_crc(b"0+3.14OqZ"), Some(&b"0+3.14"[..]));
        assert_eq!(check_crc(b"0+3.14OqY"), None);
        assert_eq!(check_crc(b"ab"), None);
    }

    #[test]
    fn measure_with_service_request_then_data() {
        let mut s = Sensor::new('0');
        s.set_reading(21.5);
        let t0 = Duration::from_secs(10);
        // Asleep: no answer without a break.
        assert!(
            s.line(
                &LineEvent::Frames(b"0M!".iter().map(|b| frame_7e1(*b)).collect()),
                t0
            )
            .is_empty()
        );
        let m = Command::parse(b"0M!").unwrap();
        assert_eq!(s.handle(m, t0).as_deref(), Some("00022\r\n"));
        assert_eq!(s.poll(t0 + Duration::from_secs(1)), None);
        assert_eq!(
            s.poll(t0 + Duration::from_secs(2)).as_deref(),
            Some("0\r\n")
        );
        let d = Command::parse(b"0D0!").unwrap();
        assert_eq!(
            s.handle(d, t0 + Duration::from_secs(2)).as_deref(),
            Some("0+21.500+12.100\r\n")
        );
        // Early data request aborts.
        s.handle(m, t0);
        assert_eq!(s.handle(d, t0).as_deref(), Some("0\r\n"));
        // Other addresses are silent.
        assert_eq!(s.handle(Command::Acknowledge('1'), t0), None);
        assert_eq!(
            s.handle(Command::Identify('0'), t0).as_deref(),
            Some("014FIELDTWNSDITMP100SN0001\r\n")
        );
        assert_eq!(
            s.handle(
                Command::Concurrent {
                    addr: '0',
                    index: 0,
                    crc: false
                },
                t0
            )
            .as_deref(),
            Some("000202\r\n")
        );
    }

    #[test]
    fn recorder_measures_over_the_line_with_crc() {
        let mut s = Sensor::new('3');
        s.set_reading(-4.25);
        assert_eq!(
            Recorder::measure(&mut s, '3', Duration::from_secs(5)),
            Some(-4.25)
        );
        assert_eq!(Recorder::measure(&mut s, '4', Duration::from_secs(5)), None);
        s.set_connected(false);
        assert_eq!(Recorder::measure(&mut s, '3', Duration::from_secs(9)), None);
    }

    #[test]
    fn break_too_short_does_not_wake() {
        let mut s = Sensor::new('0');
        s.line(&LineEvent::Break(Duration::from_millis(5)), Duration::ZERO);
        s.line(&LineEvent::Marking(MARKING_MIN), Duration::ZERO);
        let f = b"0!".iter().map(|b| frame_7e1(*b)).collect();
        assert!(s.line(&LineEvent::Frames(f), Duration::ZERO).is_empty());
    }

    fn any_command() -> impl Strategy<Value = Command> {
        let addr = prop::sample::select(
            ('0'..='9')
                .chain('a'..='z')
                .chain('A'..='Z')
                .collect::<Vec<_>>(),
        );
        (addr.clone(), addr, 0u8..10, any::<bool>(), 0u8..9).prop_map(|(a, b, i, crc, k)| match k {
            0 => Command::Acknowledge(a),
            1 => Command::Query,
            2 => Command::ChangeAddress(a, b),
            3 => Command::Identify(a),
            4 => Command::Measure {
                addr: a,
                index: i,
                crc,
            },
            5 => Command::Concurrent {
                addr: a,
                index: i,
                crc,
            },
            6 => Command::Data { addr: a, index: i },
            7 => Command::Continuous {
                addr: a,
                index: i,
                crc,
            },
            _ => Command::Verify(a),
        })
    }

    #[test]
    fn non_ascii_is_no_command() {
        // Found by the fuzz target: a multi-byte character after the
        // address panicked on a char boundary.
        assert!(matches!(
            Command::parse(b"5\x90!"),
            Err(ParseError::Unknown(_))
        ));
        assert!(matches!(
            Command::parse("0é!".as_bytes()),
            Err(ParseError::Unknown(_))
        ));
    }

    proptest! {
        #[test]
        fn commands_roundtrip(c in any_command()) {
            prop_assert_eq!(Command::parse(c.encode().as_bytes()), Ok(c));
        }

        #[test]
        fn parse_is_total(bytes in prop::collection::vec(any::<u8>(), 0..12)) {
            let _ = Command::parse(&bytes);
        }

        /// An address, then a non-ASCII byte: the case that once panicked.
        #[test]
        fn non_ascii_after_the_address_is_refused(
            a in "[0-9a-zA-Z]",
            b in prop::collection::vec(0x80u8.., 1..4),
            tail in prop::collection::vec(any::<u8>(), 0..4),
        ) {
            let mut bytes = a.into_bytes();
            bytes.extend_from_slice(&b);
            bytes.extend_from_slice(&tail);
            bytes.push(b'!');
            prop_assert!(Command::parse(&bytes).is_err());
        }

        #[test]
        fn sensor_never_panics_on_line_noise(frames in prop::collection::vec(any::<u16>(), 0..16)) {
            let mut s = Sensor::new('0');
            s.line(&LineEvent::Break(BREAK_MIN), Duration::ZERO);
            s.line(&LineEvent::Marking(MARKING_MIN), Duration::ZERO);
            let _ = s.line(&LineEvent::Frames(frames), Duration::ZERO);
        }

        #[test]
        fn framing_roundtrips_and_detects_single_bit_errors(c in 0u8..128, bit in 0u32..10) {
            let f = frame_7e1(c);
            prop_assert_eq!(unframe_7e1(f), Some(c));
            prop_assert_eq!(unframe_7e1(f ^ (1 << bit)), None);
        }

        #[test]
        fn crc_detects_any_single_byte_change(data in prop::collection::vec(0x20u8..0x7f, 1..40), i in 0usize..40, x in 1u8..=255) {
            let i = i % data.len();
            let mut body = data.clone();
            body.extend_from_slice(&crc_ascii(&data));
            prop_assert!(check_crc(&body).is_some());
            body[i] ^= x;
            prop_assert!(check_crc(&body).is_none());
        }

        #[test]
        fn values_roundtrip(v in prop::collection::vec(-9999.0f64..9999.0, 0..5)) {
            let text = format_values(&v);
            let back = parse_values(&text).unwrap();
            prop_assert_eq!(back.len(), v.len());
            for (a, b) in back.iter().zip(&v) {
                prop_assert!((a - b).abs() < 0.001);
            }
        }
    }
}
