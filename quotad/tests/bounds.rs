//! What a client can make quotad hold is bounded (src/bounds.rs): an oversized message is
//! refused from its length, and a flood of them — 200 concurrent requests of 3.9 MB, which took
//! an unbounded quotad to 179 MB — leaves quotad within its manifest's 128 MiB and answering
//! valid calls all along.

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

/// quotad's peak resident memory (VmHWM), in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A request whose domain alone is `bytes` long.
fn oversized(bytes: usize) -> envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest {
    let mut r = request(vec![limit("acme", "daily", "day", 10)]);
    r.domain = "d".repeat(bytes);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_and_valid_calls_go_on() {
    clear_of_day_boundary();
    let redis = Redis::start();
    let quotad = Quotad::on(QUOTAD, &redis);
    let mut client = quotad.client().await;
    let refused = ask(&mut client, oversized(70 * 1024)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("too large"), "{refused:?}");
    // Just under the bound, the message is read (and refused for its domain, by name).
    let mut client = quotad.client().await;
    let read = ask(&mut client, oversized(60 * 1024)).await.unwrap_err();
    assert_eq!(read.code(), tonic::Code::InvalidArgument, "{read:?}");
    // The message names the value, cut short: a 60 KB header would break the client.
    assert!(read.message().starts_with("domain `ddd"), "{read:?}");
    assert!(
        read.message().len() < 1200,
        "{} bytes",
        read.message().len()
    );
    let ok = ask(
        &mut client,
        request(vec![limit("acme", "daily", "day", 10)]),
    )
    .await
    .unwrap();
    assert_eq!(ok.overall_code, Code::Ok as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_messages_keeps_quotad_small_and_answering() {
    clear_of_day_boundary();
    let redis = Redis::start();
    let quotad = Quotad::on(QUOTAD, &redis);
    let before = peak_kib(quotad.pid());
    // 200 requests of 3.9 MB at once, over 8 connections.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(quotad.client().await);
    }
    let flood = oversized(3_900_000);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut client = clients[i % clients.len()].clone();
        let r = flood.clone();
        tasks.push(tokio::spawn(async move { ask(&mut client, r).await }));
    }
    // Meanwhile valid calls, from a connection of their own, are answered.
    let mut valid = quotad.client().await;
    let started = Instant::now();
    let mut answered = 0;
    while tasks.iter().any(|t| !t.is_finished()) && started.elapsed() < Duration::from_secs(60) {
        let r = ask(
            &mut valid,
            request(vec![limit("acme", "daily", "day", 1_000_000)]),
        )
        .await;
        assert_eq!(r.unwrap().overall_code, Code::Ok as i32);
        answered += 1;
    }
    let mut refused = 0;
    for t in tasks {
        let status = t.await.unwrap().unwrap_err();
        assert!(
            matches!(
                status.code(),
                tonic::Code::OutOfRange | tonic::Code::Cancelled
            ),
            "{status:?}"
        );
        refused += 1;
    }
    let after = peak_kib(quotad.pid());
    eprintln!(
        "quotad peak RSS {before} KiB before, {after} KiB after {refused} refused floods; \
         {answered} valid calls answered meanwhile"
    );
    assert_eq!(refused, 200);
    assert!(answered > 0, "valid calls answered during the flood");
    assert!(
        after < 64 * 1024,
        "peak {after} KiB: within half the manifest's 128 MiB"
    );
}
