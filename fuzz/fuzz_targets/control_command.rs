//! Control-API commands: any JSON body deserialises to a `Command` or an
//! error without panic; a command re-serialises and parses to itself.
#![no_main]
use fieldtwin_emulator::control::Command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cmd) = serde_json::from_slice::<Command>(data) {
        let text = serde_json::to_string(&cmd).expect("a command serialises");
        assert_eq!(serde_json::from_str::<Command>(&text).ok(), Some(cmd));
    }
});
