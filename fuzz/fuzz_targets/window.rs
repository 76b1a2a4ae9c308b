//! `cargo fuzz run window`: see `tollgate_fuzz::window` for the input format and the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::window(data));
