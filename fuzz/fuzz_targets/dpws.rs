//! WS-Discovery / DPWS SOAP envelopes: any text parses to a message
//! without panic (lossy UTF-8, as the UDP and HTTP front ends read it).
#![no_main]
use fieldtwin_models::proto::dpws;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dpws::parse(&String::from_utf8_lossy(data));
});
