//! Site files: any text parses and checks to a site or an error naming
//! what is wrong, without panic.
#![no_main]
use fieldtwin_emulator::site::Site;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Site::parse(text);
    }
});
