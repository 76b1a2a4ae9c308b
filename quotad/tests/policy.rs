//! quotad's policy (src/policy.rs): a caller on the allow-list still cannot claim any limit.
//! The reviewer's call (`requests: 999999999999999, hits_addend: 4294967295` for `acme`) spent
//! acme's real quota; with the policy flags it is refused before Redis, naming the flag.

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
async fn requests_outside_the_policy_are_refused_before_redis() {
    clear_of_day_boundary();
    let redis = Redis::start();
    let quotad = Quotad::start(
        QUOTAD,
        &[
            "--redis",
            &redis.url(),
            "--allow-domains",
            "tollgate",
            "--max-requests",
            "1000000",
            "--max-hits-addend",
            "100000",
            "--allow-windows",
            "day,month,1s",
        ],
    );
    let mut client = quotad.client().await;
    let refused = |r| {
        let mut c = client.clone();
        async move { ask(&mut c, r).await.unwrap_err() }
    };

    let mut huge = request(vec![limit("acme", "monthly", "month", 999_999_999_999_999)]);
    huge.hits_addend = 4_294_967_295;
    let status = refused(huge).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("--max-requests 1000000"),
        "{status:?}"
    );

    let mut greedy = request(vec![limit("acme", "monthly", "month", 1000)]);
    greedy.hits_addend = 4_294_967_295;
    let status = refused(greedy).await;
    assert!(status.message().contains("--max-hits-addend"), "{status:?}");

    let status = refused(request(vec![limit("acme", "hourly", "hour", 10)])).await;
    assert!(status.message().contains("window `hour`"), "{status:?}");

    let mut elsewhere = request(vec![limit("acme", "daily", "day", 10)]);
    elsewhere.domain = "other".into();
    let status = refused(elsewhere).await;
    assert!(status.message().contains("domain `other`"), "{status:?}");

    // Nothing reached Redis; within the policy, decisions go on (`second` is `1s`).
    assert!(redis.keys("tollgate:v1:*").is_empty());
    assert!(redis.keys("*").is_empty());
    for r in [
        request(vec![limit("acme", "daily", "day", 10)]),
        request(vec![limit("acme", "burst", "second", 10)]),
    ] {
        assert_eq!(
            ask(&mut client, r).await.unwrap().overall_code,
            Code::Ok as i32
        );
    }
    assert_eq!(
        quotad.metric("quotad_decisions_total{code=\"denied\"}"),
        4.0
    );
}
