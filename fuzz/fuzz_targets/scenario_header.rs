//! Scenario file headers and durations: any text parses or gets an error
//! naming a line of the text.
#![no_main]
use fieldtwin_scenarios::duration::parse_duration;
use fieldtwin_scenarios::header::Header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = Header::parse(&text) {
        assert!(e.line >= 1 && e.line <= text.lines().count().max(1));
    }
    let _ = parse_duration(&text);
});
