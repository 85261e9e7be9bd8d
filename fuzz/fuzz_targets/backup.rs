//! The configuration backup file: no crafted file panics, hashes for long
//! (the iteration count is bounded) or opens without the password.
#![no_main]
use fieldtwin_models::security::backup;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert!(backup::open(data, "not the password").is_err());
});
