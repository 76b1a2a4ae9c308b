//! `make bench-entitlements` (part of `make bench`; ignored by `make test`): how long a VM
//! takes to compile a snapshot of 100 000 consumers, against a configuration load of the same
//! consumers today — natively, one run after the other on the same machine, so that the two
//! are compared under the same load. In Envoy (V8), `tests/entitlements.rs` logs each VM's
//! `applied in N ms` and the slowest request during the switch.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};
use tollgate::config::Config;

const N: usize = 100_000;
const PLANS: &str = r#""plans": {"p": {"limits": [{"name": "daily", "requests": 1000, "window": "day"},
                                             {"name": "burst", "requests": 100, "window": "1s"}]}}"#;

fn consumers(n: usize) -> String {
    let mut out = String::with_capacity(n * 48);
    out.push_str("\"consumers\": {");
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(r#""c{i}": {{"plan": "p", "keys": ["key-{i}"]}}"#));
    }
    out.push('}');
    out
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

#[test]
#[ignore = "a benchmark: make bench-entitlements"]
fn snapshot_of_100k_consumers_against_a_configuration_load() {
    let list = consumers(N);
    let full = format!("{{{PLANS}, {list}}}");
    let base =
        format!(r#"{{{PLANS}, "entitlements": {{"cluster": "cp", "path": "/v1/consumers"}}}}"#);
    let snapshot = format!("{{{list}}}");
    let (mut load, mut apply) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        let started = Instant::now();
        let config = Config::from_json(full.as_bytes()).unwrap();
        load.push(started.elapsed());
        assert_eq!(config.consumers.len(), N);
        drop(config);
        let started = Instant::now();
        let config = Config::with_snapshot(base.as_bytes(), snapshot.as_bytes()).unwrap();
        apply.push(started.elapsed());
        assert_eq!(config.consumers.len(), N);
    }
    let (load, apply) = (median(load), median(apply));
    println!(
        "{{\"consumers\": {N}, \"document_bytes\": {}, \"configuration_load_ms\": {:.1}, \"snapshot_apply_ms\": {:.1}}}",
        snapshot.len(),
        load.as_secs_f64() * 1000.0,
        apply.as_secs_f64() * 1000.0
    );
}
