//! `cargo fuzz run credentials`: see `tollgate_fuzz::credentials` for the input format and the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::credentials(data));
