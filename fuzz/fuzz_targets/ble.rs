//! The Data Logger's BLE secure channel: any sequence of frames from an
//! unauthenticated peer is slammed, never panics and never authenticates.
#![no_main]
use fieldtwin_models::datalogger::ble::{Peer, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut dl = Peer::new(b"pairing key the fuzzer does not know");
    for frame in data.split(|&b| b == 0xFF) {
        match dl.on_frame(frame, |p| p.to_vec()) {
            Step::Slam(_) => break,
            _ => panic!("an unknown peer got an answer"),
        }
    }
    assert!(!dl.authenticated());
});
