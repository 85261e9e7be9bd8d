//! Data Logger uplink payloads and NV ring records: any bytes decode or
//! are refused without panic.
#![no_main]
use fieldtwin_models::datalogger::{payload, store::Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = payload::decode(data) {
        let _ = payload::rows(&d, &[]);
    }
    if let Some(r) = Record::decode(data) {
        let again = Record::decode(&r.encode()).expect("an encoded record decodes");
        assert_eq!(again.encode(), r.encode());
    }
});
