//! Firmware image header and signature check: no crafted image panics or
//! verifies without the vendor's signature.
#![no_main]
use fieldtwin_models::proto::firmware::{self, Image, PANEL_SERVER_FAMILY, lab_vendor_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((img, signed)) = firmware::header(data) {
        assert_eq!(signed + 64, data.len());
        assert!(img.payload_len <= data.len());
    }
    assert!(Image::verify(data, &lab_vendor_key(), PANEL_SERVER_FAMILY).is_err());
    let _ = firmware::inspect(data, None);
});
