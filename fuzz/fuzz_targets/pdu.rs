//! The PDU codec: any PDU decodes to a request or an exception without
//! panic; a decoded request encodes back to a PDU that decodes to itself.
#![no_main]
use fieldtwin_models::proto::modbus::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = Request::decode(data) {
        assert_eq!(Request::decode(&req.encode()), Ok(req));
    }
});
