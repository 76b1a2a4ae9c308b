//! `cargo fuzz run quotad_request`: see `quotad::quotad_request` (fuzz/src/quotad.rs) for the
//! input format and the properties.
#![no_main]

#[path = "../src/quotad.rs"]
#[allow(dead_code)] // rls_response_agrees is another target's
mod quotad;

libfuzzer_sys::fuzz_target!(|data: &[u8]| quotad::quotad_request(data));
