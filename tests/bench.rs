//! The benchmark's floor filter (bench/floor-filter) must make the host calls of an admitted
//! tollgate request with values of the same sizes: check its constants against tollgate's own
//! rendering of the benchmark's plan, so that the floor cannot drift from what it stands for.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate::config::Config;
use tollgate::quota::Usage;
use tollgate::record::encoded_len;
use tollgate::response::{rate_limit_policy, rate_limit_state};

fn floor_source() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bench/floor-filter/src/lib.rs"
    ))
    .unwrap()
}

fn constant(source: &str, name: &str) -> String {
    let line = source
        .lines()
        .find(|l| l.starts_with(&format!("const {name}:")))
        .unwrap_or_else(|| panic!("no const {name} in the floor filter"));
    let value = line.split_once(" = ").unwrap().1.trim_end_matches(';');
    value.to_string()
}

#[test]
fn the_floor_filter_sends_values_of_tollgates_sizes() {
    let source = floor_source();
    let limits = ["monthly", "per-second"];
    let record_len: usize = constant(&source, "RECORD_LEN").parse().unwrap();
    assert_eq!(record_len, encoded_len(limits));
    // The bench's plan (bench/run.py): a month and a 1 s limit of 10^9 requests each.
    let config = Config::from_json(
        br#"{"plans": {"basic": {"limits": [
              {"name": "monthly", "requests": 1000000000, "window": "month"},
              {"name": "per-second", "requests": 1000000000, "window": "1s"}]}}}"#,
    )
    .unwrap();
    let plan = &config.plans[0];
    let now = 1_796_130_000; // 2026-12-01T13:00:00Z: a month from its end, as in the bench
    let usages: Vec<Usage> = plan
        .limits
        .iter()
        .map(|l| Usage {
            used: 1234,
            requests: l.requests,
            bounds: l.window.bounds(now, 0),
            violated: false,
            cost: 1,
        })
        .collect();
    let quoted = |name: &str| {
        constant(&source, name)
            .trim_matches('"')
            .replace("\\\"", "\"")
    };
    assert_eq!(
        quoted("POLICY").len(),
        rate_limit_policy(plan, &usages).len()
    );
    assert_eq!(
        quoted("STATE").len(),
        rate_limit_state(plan, &usages, now).len()
    );
    // The floor writes a changing remaining count over the first limit's nine digits.
    let at: usize = constant(&source, "REMAINING_AT").parse().unwrap();
    let state = quoted("STATE");
    assert_eq!(state.get(at - 2..at), Some("r="));
    assert!(
        state[at..at + 9].bytes().all(|b| b.is_ascii_digit()),
        "{state}"
    );
}
