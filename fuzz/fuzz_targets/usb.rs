//! The Data Logger's USB console: any line parses to a command or a
//! refusal without panic.
#![no_main]
use fieldtwin_models::datalogger::usb;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        let _ = usb::parse(line);
    }
});
