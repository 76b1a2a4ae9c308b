//! `cargo fuzz run payment`: see `tollgate_fuzz::payment` for the input format and the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::payment(data));
