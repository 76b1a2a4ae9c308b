//! `tollgate check` says what the filter says inside real Envoy: the same summary line when a
//! configuration is accepted, the same refusal when it is not. Envoy runs in `--mode validate`
//! (it loads the release .wasm and configures it, then exits; no ports), from the repository
//! root, as `make test` prepares it.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;
use support::*;

use std::process::Command;

/// tollgate's own line in Envoy's `--mode validate` output that starts with `prefix`.
fn envoy_says(file: &str, prefix: &str) -> String {
    let out = Command::new(envoy_path())
        .current_dir(repo())
        .args(["--mode", "validate", "-l", "info", "-c", file])
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let marker = format!("wasm log tollgate tollgate: {prefix}");
    log.lines()
        .find_map(|l| l.split_once(&marker).map(|(_, rest)| rest.to_string()))
        .unwrap_or_else(|| panic!("Envoy did not log `{marker}` for {file}:\n{log}"))
}

#[test]
fn check_prints_the_summary_the_filter_logs_in_envoy() {
    for file in [
        "envoy/envoy.yaml",
        "envoy/minimal.yaml",
        "envoy/per-route.yaml",
    ] {
        let out = tollgate(&["check", file], "");
        assert_eq!(out.code, 0, "{out:?}");
        let summary = out.stdout.lines().nth(1).unwrap().trim_start();
        assert_eq!(summary, envoy_says(file, "configured: "), "{file}");
    }
}

#[test]
fn check_refuses_what_envoy_refuses_with_the_same_words() {
    let dir = TempDir::new();
    let shipped = read_repo("envoy/envoy.yaml");
    let cases = [
        (
            "typo",
            shipped.replacen("\"requests\": 1000,", "\"requets\": 1000,", 1),
        ),
        (
            "quoted",
            shipped.replacen("\"requests\": 1000,", "\"requests\": \"1000\",", 1),
        ),
        (
            "plan",
            shipped.replacen("\"plan\": \"trial\"", "\"plan\": \"gold\"", 1),
        ),
        (
            "syntax",
            shipped.replacen("\"window\": \"day\"},", "\"window\": \"day\"}", 1),
        ),
    ];
    for (name, text) in cases {
        assert_ne!(text, shipped, "{name}: the case changed nothing");
        let file = dir.write(&format!("{name}.yaml"), &text);
        let out = tollgate(&["check", &file], "");
        assert_eq!(out.code, 1, "{name}: {out:?}");
        let (_, refusal) = out
            .stderr
            .lines()
            .next()
            .unwrap()
            .split_once("configuration refused: ")
            .unwrap();
        assert_eq!(
            refusal,
            envoy_says(&file, "configuration refused: "),
            "{name}"
        );
    }
}
