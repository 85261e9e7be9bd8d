//! SDI-12: command parsing, the 7E1 line framing and a sensor fed line
//! noise after a break never panic.
#![no_main]
use std::time::Duration;

use fieldtwin_models::datalogger::sdi12::{
    self, BREAK_MIN, Command, LineEvent, MARKING_MIN, Sensor,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Command::parse(data) {
        let _ = Command::parse(c.encode().as_bytes());
    }
    let _ = sdi12::parse_values(&String::from_utf8_lossy(data));
    let _ = sdi12::check_crc(data);
    let frames: Vec<u16> = data
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        .collect();
    let mut s = Sensor::new('0');
    s.line(&LineEvent::Break(BREAK_MIN), Duration::ZERO);
    s.line(&LineEvent::Marking(MARKING_MIN), Duration::ZERO);
    let _ = s.line(&LineEvent::Frames(frames), Duration::ZERO);
    let _ = s.poll(Duration::from_secs(10));
});
