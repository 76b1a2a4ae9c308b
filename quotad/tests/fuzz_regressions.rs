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

use std::path::PathBuf;

/// Runs `harness` on every file of `fuzz/regressions/<target>/`; fails naming each input that
/// panics.
fn replay(target: &str, harness: fn(&[u8])) {
    let dir: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "fuzz",
        "regressions",
        target,
    ]
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
fn quotad_request_inputs() {
    replay("quotad_request", harness::quotad_request);
}

#[test]
fn rls_response_inputs_read_as_envoy_types_read_them() {
    replay("rls_response", harness::rls_response_agrees);
}
