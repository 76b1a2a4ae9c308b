//! Replays every saved fuzz input (`fuzz/regressions/<target>/*`: hand-written edge cases and
//! any input a fuzzer ever crashed on) through the same harness the cargo-fuzz target runs
//! (`fuzz/src/lib.rs`), so that `make test` keeps them fixed. No Envoy, well under a second.
//! The harnesses that need quotad (`fuzz/src/quotad.rs`) are replayed by
//! `quotad/tests/fuzz_regressions.rs`.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../fuzz/src/lib.rs"]
mod harness;

use tollgate_testkit::replay_fuzz_inputs as replay;

#[test]
fn config_inputs() {
    replay("config", harness::config);
}

#[test]
fn credentials_inputs() {
    replay("credentials", harness::credentials);
}

#[test]
fn record_inputs() {
    replay("record", harness::record);
}

#[test]
fn window_inputs() {
    replay("window", harness::window);
}

#[test]
fn request_inputs() {
    replay("request", harness::request);
}

#[test]
fn rls_response_inputs() {
    replay("rls_response", harness::rls_response);
}

#[test]
fn payment_inputs() {
    replay("payment", harness::payment);
}
