//! Modbus RTU framing: any frame decodes without panic; a frame whose CRC
//! checks re-encodes to itself.
#![no_main]
use fieldtwin_models::proto::modbus::{Request, rtu};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((unit, pdu)) = rtu::decode(data) {
        assert_eq!(rtu::encode(unit, pdu), data);
        let _ = Request::decode(pdu);
    }
});
