//! The CLI's tests use the workspace's test kit (`testkit/`). What only they can name is here:
//! the `tollgate` cargo builds for this package's tests, and the filter's own SHA-256.

// Each test file uses some of it.
#![allow(dead_code, unused_imports)]

pub use tollgate_testkit::*;

/// Runs `tollgate ARGS` in the repository root with `stdin` as its input.
pub fn tollgate(args: &[&str], stdin: &str) -> Out {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command.args(args).current_dir(repo());
    run_with_input(&mut command, stdin)
}

pub fn sha256_hex(key: &[u8]) -> String {
    tollgate::sha256::to_hex(&tollgate::sha256::sha256(key))
}
