//! A Redis restart costs no decision once Redis answers again: quotad does not use the
//! connection the old server closed (issue 23, "A Redis restart without a burst of 503s").

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_after_a_redis_restart_are_answered_from_the_first() {
    clear_of_day_boundary();
    let mut redis = Redis::start_aof();
    let quotad = Quotad::on(QUOTAD, &redis);
    let mut client = quotad.client().await;
    let one = || request(vec![limit("acme", "daily", "day", 1000)]);
    for _ in 0..3 {
        assert_eq!(
            ask(&mut client, one()).await.unwrap().overall_code,
            Code::Ok as i32
        );
    }
    for round in 0..4 {
        if round == 3 {
            // An outage longer than quotad's reconnection attempts (~0.4 s): Redis down for
            // 1.5 s, every decision meanwhile UNAVAILABLE.
            redis.kill();
            let down = Instant::now();
            while down.elapsed() < Duration::from_millis(1500) {
                let status = ask(&mut client, one()).await.unwrap_err();
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            }
            // Then no call for 0.7 s: quotad's last reconnection attempt has given up.
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        // SIGKILL and a new redis-server on the same port, ready when it answers PING.
        redis.restart();
        let mut answers = Vec::new();
        for _ in 0..10 {
            answers.push(match ask(&mut client, one()).await {
                Ok(answer) => format!("{:?}", Code::try_from(answer.overall_code).unwrap()),
                Err(status) => format!("{:?}: {}", status.code(), status.message()),
            });
        }
        assert!(
            answers.iter().all(|a| a == "Ok"),
            "round {round}: the decisions after Redis answered again: {answers:#?}"
        );
    }
    assert_eq!(redis.counted("tollgate", "acme", "daily"), 43);
}
