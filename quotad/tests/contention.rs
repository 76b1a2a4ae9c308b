//! Exactness under contention: many concurrent callers on fresh consumers, one Redis node.
//! Admitted == quota exactly, every round.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_are_admitted_exactly_the_quota_every_time() {
    clear_of_day_boundary();
    let redis = Redis::start();
    let quotad = Quotad::start(
        QUOTAD,
        &["--redis", &redis.url(), "--redis-timeout-ms", "5000"],
    );
    for round in 0..3 {
        let consumers: Vec<String> = (0..6).map(|i| unique(&format!("r{round}c{i}"))).collect();
        let admitted = hammer(&quotad, &consumers, 40, 100, 48).await;
        for c in &consumers {
            assert_eq!(
                admitted.get(c).copied().unwrap_or(0),
                40,
                "round {round}: {c}"
            );
            let daily = redis.keys(&key_pattern(c, "daily"));
            assert_eq!(redis.get(&daily[0]), 40, "round {round}: {c} daily counter");
            let monthly = redis.keys(&key_pattern(c, "monthly"));
            assert_eq!(redis.get(&monthly[0]), 40, "a refusal takes from no limit");
        }
    }
}

#[test]
fn two_envoys_under_contention_admit_exactly_the_quota_together() {
    clear_of_day_boundary();
    let redis = Redis::start();
    let quotad = Quotad::start(
        QUOTAD,
        &["--redis", &redis.url(), "--redis-timeout-ms", "5000"],
    );
    let envoys = [
        Envoy::native_ratelimit(&quotad),
        Envoy::native_ratelimit(&quotad),
    ];
    // Plan "reports": 4 a day. 16 callers, 8 per Envoy, 3 requests each, on a fresh consumer.
    for round in 0..5 {
        let consumer = unique(&format!("e{round}"));
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let callers: Vec<_> = (0..16)
                .map(|i| {
                    let envoy = &envoys[i % 2];
                    let consumer = consumer.as_str();
                    s.spawn(move || envoy.statuses("/reports", consumer, 3))
                })
                .collect();
            callers
                .into_iter()
                .flat_map(|c| c.join().unwrap())
                .collect()
        });
        let admitted = statuses.iter().filter(|s| **s == 200).count();
        let refused = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!((admitted, refused), (4, 44), "round {round}: {statuses:?}");
        let key = redis.keys(&key_pattern(&consumer, "reports"));
        assert_eq!(redis.get(&key[0]), 4, "round {round}");
    }
}
