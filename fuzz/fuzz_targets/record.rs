//! `cargo fuzz run record`: see `tollgate_fuzz::record` for the input format and the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::record(data));
