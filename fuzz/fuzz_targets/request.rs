//! `cargo fuzz run request`: see `tollgate_fuzz::request` for the input format and the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::request(data));
