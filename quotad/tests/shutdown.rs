//! Shutdown with a deadline (src/shutdown.rs): after SIGTERM a connection whose peer never
//! closes it (a frozen client, a connection that never spoke) holds quotad no longer than
//! `--shutdown-timeout-ms`; a second SIGTERM exits at once (status 143); a call in flight at
//! the signal is still answered, NOT_SERVING is reported, and quotad then exits by itself.
//!
//! The drain deadline is set through `QUOTAD_SHUTDOWN_TIMEOUT_MS`, which a quotad without the
//! setting ignores: run against one, these tests fail on the hang itself, not on a flag.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::*;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use tonic_health::pb::health_check_response::ServingStatus;

/// Longer than any drain these tests wait for, on a loaded machine: an exit past it is a hang.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// A client of `quotad` that made one call and then stops answering, as a frozen Envoy would:
/// its runtime no longer runs once `block_on` returns, so quotad's GOAWAY and PING go
/// unanswered (a live tonic client would close the connection at GOAWAY). Drop the client, then
/// the runtime, outside any runtime.
fn frozen_client(
    quotad: &Quotad,
) -> (
    tokio::runtime::Runtime,
    RateLimitServiceClient<tonic::transport::Channel>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = runtime.block_on(async {
        let mut client = quotad.client().await;
        let answer = ask(
            &mut client,
            request(vec![limit("acme", "daily", "day", 10)]),
        )
        .await
        .unwrap();
        assert_eq!(answer.overall_code, Code::Ok as i32);
        client
    });
    (runtime, client)
}

/// Waits until quotad's log shows it has taken the first signal.
fn wait_stopping(quotad: &Quotad) {
    wait_for("quotad to log that it is stopping", DEADLINE, || {
        quotad.log().contains("quotad stopping")
    });
}

#[test]
fn connections_that_never_close_hold_quotad_no_longer_than_the_drain_deadline() {
    let redis = Redis::start();
    let mut quotad = Quotad::start_with_env(
        QUOTAD,
        &["--redis", &redis.url()],
        &[("QUOTAD_SHUTDOWN_TIMEOUT_MS", "1000")],
    );
    quotad.wait_healthy();
    // A connection that never speaks HTTP/2, then a client that stops answering (accepted in
    // that order: once the client's call is answered, both are open in quotad).
    let silent = TcpStream::connect(("127.0.0.1", quotad.grpc)).unwrap();
    let (frozen, client) = frozen_client(&quotad);

    let signalled = Instant::now();
    quotad.signal("TERM");
    let status = quotad.wait_exit(EXIT_DEADLINE).unwrap_or_else(|| {
        panic!(
            "quotad still runs {EXIT_DEADLINE:?} after SIGTERM, with a 1000 ms drain deadline:\n{}",
            quotad.log()
        )
    });
    let took = signalled.elapsed();
    assert!(
        status.success(),
        "a drain cut short by its deadline exits 0: {status}"
    );
    assert!(
        took >= Duration::from_millis(1000),
        "quotad waited for the deadline, its connections being open: exited after {took:?}"
    );
    let log = quotad.log();
    assert!(
        log.contains("the drain deadline (1000 ms) passed; gRPC connections cut: 2"),
        "the log says what was cut:\n{log}"
    );
    drop((client, silent));
    drop(frozen);
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let redis = Redis::start();
    // A drain of ten minutes, held open by a client that stops answering.
    let mut quotad = Quotad::start_with_env(
        QUOTAD,
        &["--redis", &redis.url()],
        &[("QUOTAD_SHUTDOWN_TIMEOUT_MS", "600000")],
    );
    quotad.wait_healthy();
    let (frozen, client) = frozen_client(&quotad);

    quotad.signal("TERM");
    wait_stopping(&quotad);
    assert!(
        quotad.wait_exit(Duration::ZERO).is_none(),
        "the first SIGTERM drains: quotad still runs"
    );
    let signalled = Instant::now();
    quotad.signal("TERM");
    let status = quotad.wait_exit(EXIT_DEADLINE).unwrap_or_else(|| {
        panic!(
            "quotad still runs {EXIT_DEADLINE:?} after a second SIGTERM:\n{}",
            quotad.log()
        )
    });
    assert_eq!(
        status.code(),
        Some(143),
        "a second SIGTERM exits with 128 + 15, as SIGTERM's own kill would report: {status} \
         (signal {:?}), after {:?}",
        status.signal(),
        signalled.elapsed()
    );
    assert!(
        quotad
            .log()
            .contains("a second signal (SIGTERM); gRPC connections cut: 1; exit status 143"),
        "{}",
        quotad.log()
    );
    drop(client);
    drop(frozen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_at_sigterm_is_answered_and_not_serving_is_reported() {
    clear_of_day_boundary();
    let redis = Redis::start();
    // Redis waits, quotad waits for it: the call stays in flight until the test lets it go.
    let mut quotad = Quotad::start_with_env(
        QUOTAD,
        &[
            "--redis",
            &redis.url(),
            "--redis-timeout-ms",
            "60000",
            "--request-timeout-ms",
            "120000",
        ],
        &[("QUOTAD_SHUTDOWN_TIMEOUT_MS", "600000")],
    );
    quotad.wait_healthy();
    let mut client = quotad.client().await;
    let decide = || request(vec![limit("acme", "daily", "day", 10)]);
    // The first call loads the script: the one in flight below is one EVALSHA.
    ask(&mut client, decide()).await.unwrap();

    // A health watcher on a connection of its own sees SERVING, then NOT_SERVING.
    let health_channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", quotad.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(health_channel);
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "envoy.service.ratelimit.v3.RateLimitService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let status = watch.message().await.unwrap().unwrap().status;
    assert_eq!(status, ServingStatus::Serving as i32);

    // Redis holds writes (EVALSHA included; PING goes on): the next call is in flight once
    // Redis shows its EVALSHA blocked.
    redis.cli(&["CLIENT", "PAUSE", "600000", "WRITE"]);
    let in_flight = {
        let mut client = client.clone();
        tokio::spawn(async move { ask(&mut client, decide()).await })
    };
    wait_for("quotad's EVALSHA to wait in Redis", DEADLINE, || {
        redis
            .cli(&["CLIENT", "LIST"])
            .lines()
            .any(|l| l.contains("flags=b") && l.contains("cmd=evalsha"))
    });

    quotad.signal("TERM");
    wait_stopping(&quotad);
    let status = watch.message().await.unwrap().unwrap().status;
    assert_eq!(
        status,
        ServingStatus::NotServing as i32,
        "after SIGTERM gRPC health says NOT_SERVING"
    );
    drop(watch);
    assert!(!in_flight.is_finished(), "the call is still in flight");
    assert!(
        quotad.wait_exit(Duration::ZERO).is_none(),
        "quotad waits for the call in flight:\n{}",
        quotad.log()
    );

    redis.cli(&["CLIENT", "UNPAUSE"]);
    let answer = in_flight.await.unwrap().unwrap_or_else(|e| {
        panic!(
            "the call in flight at SIGTERM is answered: {e}\n{}",
            quotad.log()
        )
    });
    assert_eq!(answer.overall_code, Code::Ok as i32);
    assert_eq!(redis.counted("tollgate", "acme", "daily"), 2);

    // Every connection closes (the clients answer GOAWAY): quotad exits by itself, long before
    // its ten-minute deadline.
    drop(client);
    let status = quotad.wait_exit(EXIT_DEADLINE).unwrap_or_else(|| {
        panic!(
            "quotad still runs {EXIT_DEADLINE:?} after its last call:\n{}",
            quotad.log()
        )
    });
    assert!(status.success(), "{status}");
    assert!(
        quotad
            .log()
            .contains("quotad stopped: every connection closed"),
        "{}",
        quotad.log()
    );
}
