//! `cargo fuzz run config`: see `tollgate_fuzz::config` for the input format and the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::config(data));
