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

use std::path::PathBuf;

/// Runs `harness` on every file of `fuzz/regressions/<target>/`; fails naming each input that
/// panics.
fn replay(target: &str, harness: fn(&[u8])) {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "fuzz", "regressions", target]
        .iter()
        .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            std::panic::catch_unwind(|| harness(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: these inputs fail: {failed:#?}"
    );
}

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
