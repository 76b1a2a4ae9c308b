//! Redis going away, freezing, losing its script cache, restarting; quotad restarting.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;

/// Longest answer accepted while Redis is unusable: quotad's 300 ms timeout plus room for a
/// loaded 2-core machine. The point is "bounded", not "fast" (speed is `make bench-quotad`).
const BOUND: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_unavailable_within_the_timeout_and_decisions_resume_when_it_is_back() {
    clear_of_day_boundary();
    let mut redis = Redis::start();
    let quotad = Quotad::on(QUOTAD, &redis);
    let envoy = Envoy::native_ratelimit(&quotad);
    let mut client = quotad.client().await;
    let one = || request(vec![limit("acme", "daily", "day", 100)]);
    assert_eq!(
        ask(&mut client, one()).await.unwrap().overall_code,
        Code::Ok as i32
    );

    redis.kill();
    for _ in 0..5 {
        let started = Instant::now();
        let status = ask(&mut client, one()).await.unwrap_err();
        assert!(
            started.elapsed() < BOUND,
            "answered after {:?}",
            started.elapsed()
        );
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("Redis"), "{status:?}");
    }
    // Envoy (failure_mode_deny) refuses rather than letting an uncounted request through.
    assert_eq!(envoy.get_as("/reports", "acme").status, 500);
    wait_for("/healthz turns 503", DEADLINE, || {
        quotad.http_get("/healthz").0 == 503
    });
    assert!(quotad.metric("quotad_decisions_total{code=\"unavailable\"}") >= 5.0);
    assert!(
        quotad.metric("quotad_redis_errors_total{kind=\"error\"}")
            + quotad.metric("quotad_redis_errors_total{kind=\"timeout\"}")
            >= 5.0
    );
    assert_eq!(quotad.metric("quotad_redis_up"), 0.0);

    // Back (empty: no persistence, no script cache): decisions resume, quotad not restarted;
    // the first EVALSHA meets NOSCRIPT and the script is loaded again.
    redis.restart();
    wait_for("decisions resume", DEADLINE, || {
        let mut c = client.clone();
        futures_lite(async move { ask(&mut c, look(one())).await.is_ok() })
    });
    assert_eq!(
        envoy.statuses("/reports", "acme", 5),
        [200, 200, 200, 200, 429]
    );
    wait_for("/healthz turns 200", DEADLINE, || {
        quotad.http_get("/healthz").0 == 200
    });
}

/// The same request, only looking (hits_addend 0 on every descriptor): a probe that counts nothing.
fn look(
    mut r: envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest,
) -> envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest {
    for d in &mut r.descriptors {
        d.hits_addend = Some(envoy_types::pb::google::protobuf::UInt64Value { value: 0 });
    }
    r
}

/// Runs a future to completion on a fresh single-thread runtime (from a sync poll closure).
fn futures_lite<F: std::future::Future<Output = bool> + Send + 'static>(f: F) -> bool {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_script_cache_is_reloaded() {
    clear_of_day_boundary();
    let redis = Redis::start();
    let quotad = Quotad::on(QUOTAD, &redis);
    let mut client = quotad.client().await;
    let one = || request(vec![limit("acme", "daily", "day", 3)]);
    assert_eq!(
        ask(&mut client, one()).await.unwrap().overall_code,
        Code::Ok as i32
    );
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]).trim(), "OK");
    assert_eq!(
        ask(&mut client, one()).await.unwrap().overall_code,
        Code::Ok as i32
    );
    assert_eq!(
        ask(&mut client, one()).await.unwrap().overall_code,
        Code::Ok as i32
    );
    assert_eq!(
        ask(&mut client, one()).await.unwrap().overall_code,
        Code::OverLimit as i32
    );
    let stats = redis.cli(&["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_evalsha"), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_redis_gets_bounded_answers_and_no_pile_up() {
    clear_of_day_boundary();
    let redis = Redis::start();
    let quotad = Quotad::on(QUOTAD, &redis);
    let mut client = quotad.client().await;
    let one = |c: &str| request(vec![limit(c, "daily", "day", 1000)]);
    assert!(ask(&mut client, one("acme")).await.is_ok());

    redis.freeze();
    // 40 concurrent callers, twice: every one answered UNAVAILABLE within the bound.
    for _round in 0..2 {
        let mut tasks = Vec::new();
        for i in 0..40 {
            let mut c = client.clone();
            let r = one(&format!("c{i}"));
            tasks.push(tokio::spawn(async move {
                let started = Instant::now();
                let result = ask(&mut c, r).await;
                (started.elapsed(), result.map(|_| ()).map_err(|s| s.code()))
            }));
        }
        for t in tasks {
            let (elapsed, result) = t.await.unwrap();
            assert!(elapsed < BOUND, "answered after {elapsed:?}");
            assert_eq!(result, Err(tonic::Code::Unavailable));
        }
    }
    assert!(quotad.metric("quotad_redis_errors_total{kind=\"timeout\"}") >= 80.0);

    // Thawed: fresh decisions are answered promptly again.
    redis.thaw();
    wait_for("decisions resume after SIGCONT", DEADLINE, || {
        let mut c = client.clone();
        futures_lite(async move { ask(&mut c, one("fresh")).await.is_ok() })
    });
    let started = Instant::now();
    assert!(ask(&mut client, one("fresh")).await.is_ok());
    assert!(started.elapsed() < BOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_survive_a_redis_restart_with_aof_and_quotad_restarts() {
    clear_of_day_boundary();
    let mut redis = Redis::start_aof();
    let mut quotad = Quotad::on(QUOTAD, &redis);
    let mut client = quotad.client().await;
    let one = || request(vec![limit("acme", "monthly", "month", 5)]);
    for _ in 0..3 {
        assert_eq!(
            ask(&mut client, one()).await.unwrap().overall_code,
            Code::Ok as i32
        );
    }

    // Redis killed (SIGKILL) and started again from its append-only file: the 3 are kept.
    redis.restart();
    wait_for("decisions resume", DEADLINE, || {
        let mut c = client.clone();
        futures_lite(async move { ask(&mut c, look(one())).await.is_ok() })
    });
    let fourth = ask(&mut client, one()).await.unwrap();
    assert_eq!(fourth.overall_code, Code::Ok as i32);
    assert_eq!(
        fourth.statuses[0].limit_remaining, 1,
        "the 3 before the restart are kept"
    );
    let fifth = ask(&mut client, one()).await.unwrap();
    assert_eq!(fifth.overall_code, Code::Ok as i32);
    assert_eq!(fifth.statuses[0].limit_remaining, 0);

    // quotad stopped and another started: it is stateless, nothing is lost.
    assert!(quotad.terminate().success());
    let second = Quotad::on(QUOTAD, &redis);
    let mut client = second.client().await;
    assert_eq!(
        ask(&mut client, one()).await.unwrap().overall_code,
        Code::OverLimit as i32
    );
    let keys = redis.keys(&key_pattern("acme", "monthly"));
    assert_eq!(redis.get(&keys[0]), 5);
}
