//! `cargo fuzz run rls_response`: see `tollgate_fuzz::rls_response` and
//! `quotad::rls_response_agrees` (fuzz/src/quotad.rs) for the properties.
#![no_main]

#[path = "../src/quotad.rs"]
#[allow(dead_code)] // quotad_request is another target's
mod quotad;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tollgate_fuzz::rls_response(data);
    quotad::rls_response_agrees(data);
});
