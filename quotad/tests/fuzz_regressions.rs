//! Replays the saved fuzz inputs of the targets that need quotad (`fuzz/regressions/
//! quotad_request/*` and `fuzz/regressions/rls_response/*`: hand-written edge cases and any
//! input a fuzzer ever failed on) through the harnesses the cargo-fuzz targets run
//! (`fuzz/src/quotad.rs`), so that `make test` keeps them fixed. The filter's own harnesses are
//! replayed by the main crate's `tests/fuzz_regressions.rs`. No Redis, well under a second.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../fuzz/src/quotad.rs"]
mod harness;

use tollgate_testkit::replay_fuzz_inputs as replay;

#[test]
fn quotad_request_inputs() {
    replay("quotad_request", harness::quotad_request);
}

#[test]
fn rls_response_inputs_read_as_envoy_types_read_them() {
    replay("rls_response", harness::rls_response_agrees);
}
