//! Exactness under concurrent load: many parallel connections spread over Envoy's workers
//! never get one request more than the quota admitted, from the very first request of a
//! brand-new consumer on.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tollgate_testkit::*;

use std::sync::{Arc, Barrier};

const QUOTA: u64 = 100;
const CONSUMERS: usize = 5;
const THREADS: usize = 60;
const REQUESTS_PER_THREAD: usize = 5; // 300 requests per consumer, 3x the quota

fn config() -> String {
    let consumers: Vec<String> = (0..CONSUMERS)
        .map(|i| format!(r#""c{i}": {{"plan": "metered", "keys": ["key-{i}"]}}"#))
        .collect();
    plugin(&format!(
        r#"{{
          "plans": {{"metered": {{"limits": [
            {{"name": "daily", "requests": {QUOTA}, "window": "day"}},
            {{"name": "hourly", "requests": 1000000, "window": "hour"}}
          ]}}}},
          "consumers": {{ {} }}
        }}"#,
        consumers.join(", ")
    ))
}

/// Fires THREADS x REQUESTS_PER_THREAD requests at once for one consumer; returns
/// (admitted, refused with 402).
fn storm(envoy: &Envoy, key: &str) -> (u64, u64) {
    let barrier = Arc::new(Barrier::new(THREADS));
    let port = envoy.port;
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let barrier = barrier.clone();
            let key = key.to_string();
            std::thread::spawn(move || {
                barrier.wait();
                (0..REQUESTS_PER_THREAD)
                    .map(|_| request(port, "GET", "/", &[("x-api-key", key.as_bytes())]).status)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let admitted = statuses.iter().filter(|s| **s == 200).count() as u64;
    let refused = statuses.iter().filter(|s| **s == 402).count() as u64;
    assert_eq!(
        admitted + refused,
        statuses.len() as u64,
        "only 200 and 402 expected: {statuses:?}"
    );
    (admitted, refused)
}

fn exact_under_load(concurrency: u32) {
    let envoy = Envoy::start_with(Options {
        plugin: Some(config()),
        concurrency,
        ..Options::default()
    });
    let results = within_one_window(86_400, 120.0, 1, |_| {
        (0..CONSUMERS)
            .map(|i| storm(&envoy, &format!("key-{i}")))
            .collect::<Vec<(u64, u64)>>()
    });
    for (i, (admitted, refused)) in results.into_iter().enumerate() {
        eprintln!(
            "concurrency {concurrency}, consumer c{i}: sent {}, admitted {admitted}, refused {refused}, quota {QUOTA}",
            admitted + refused
        );
        assert_eq!(
            admitted, QUOTA,
            "consumer c{i}: admitted {admitted} of quota {QUOTA}"
        );
    }
    // The gateway's connections were spread over the workers (per-worker listener counters).
    let stats = envoy.stats();
    let busy_workers = stats
        .lines()
        .filter(|l| {
            l.starts_with(&format!("listener.127.0.0.1_{}.worker_", envoy.port))
                && l.contains("downstream_cx_total")
        })
        .filter(|l| {
            l.rsplit(": ")
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                > 0
        })
        .count();
    assert!(
        busy_workers >= 2,
        "expected the load to spread over workers:\n{stats}"
    );
}

#[test]
fn parallel_requests_never_exceed_the_quota_with_2_workers() {
    exact_under_load(2);
}

#[test]
fn parallel_requests_never_exceed_the_quota_with_4_workers() {
    exact_under_load(4);
}
