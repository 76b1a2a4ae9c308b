//! quotad on a Redis Sentinel setup (a primary, a replica, one sentinel): decisions follow a
//! failover to the replica, with the counts it replicated.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_follow_a_sentinel_failover() {
    clear_of_day_boundary();
    let redis = RedisSentinel::start();
    let quotad = Quotad::start(
        QUOTAD,
        &[
            "--redis-sentinel",
            &redis.url(),
            "--redis-sentinel-primary",
            SENTINEL_PRIMARY,
        ],
    );
    let mut client = quotad.client().await;
    let one = || request(vec![limit("acme", "monthly", "month", 6)]);
    for _ in 0..3 {
        assert_eq!(
            ask(&mut client, one()).await.unwrap().overall_code,
            Code::Ok as i32
        );
    }
    let key = redis.primary.keys(&key_pattern("acme", "monthly"))[0].clone();
    wait_for("the replica has the count", DEADLINE, || {
        redis.replica.get(&key) == 3
    });

    // The sentinel accepts a failover once it has heard from the replica itself.
    wait_for("the sentinel starts a failover", DEADLINE, || {
        redis
            .sentinel_cli(&["SENTINEL", "FAILOVER", SENTINEL_PRIMARY])
            .is_some_and(|s| s.trim() == "OK")
    });
    wait_for(
        "the sentinel names the replica as primary",
        DEADLINE,
        || redis.primary_port() == Some(redis.replica.port),
    );
    wait_for("the old primary is a replica", DEADLINE, || {
        redis
            .primary
            .try_cli(&["ROLE"])
            .is_some_and(|r| r.starts_with("slave"))
    });
    // Decisions go on against the new primary, from the count it had (3 of 6).
    let mut admitted = 0;
    let mut over = 0;
    let until = std::time::Instant::now() + DEADLINE;
    while over == 0 {
        assert!(
            std::time::Instant::now() < until,
            "no OVER_LIMIT after the failover"
        );
        match ask(&mut client, one()).await {
            Ok(a) if a.overall_code == Code::Ok as i32 => admitted += 1,
            Ok(_) => over += 1,
            Err(s) => assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}"),
        }
    }
    assert_eq!(admitted, 3, "3 left after the failover");
    assert_eq!(redis.replica.get(&key), 6);
}
