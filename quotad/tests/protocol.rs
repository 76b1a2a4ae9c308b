//! The RLS protocol from a plain gRPC client: bad input is refused with a message naming the
//! problem and writes nothing; hits_addend is all or nothing; gRPC health, /healthz, /metrics,
//! and a graceful SIGTERM.

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
use envoy_types::pb::google::protobuf::UInt64Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_by_name_and_writes_nothing() {
    clear_of_day_boundary();
    let redis = Redis::start();
    let quotad = Quotad::on(QUOTAD, &redis);
    let mut client = quotad.client().await;
    let ok = || limit("acme", "daily", "day", 10);
    let with =
        |mut d: envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor,
         key: &str,
         value: &str| {
            d.entries.push(envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry {
            key: key.into(),
            value: value.into(),
        });
            d
        };
    let mut cases = vec![
        (request(vec![]), "no descriptors"),
        (
            request(vec![descriptor(&[
                ("consumer", "acme"),
                ("limit", "daily"),
                ("window", "day"),
            ])]),
            "missing entry `requests`",
        ),
        (
            request(vec![descriptor(&[("remote_address", "10.0.0.1")])]),
            "unknown entry `remote_address`",
        ),
        (
            request(vec![with(ok(), "color", "blue")]),
            "unknown entry `color`",
        ),
        (
            request(vec![descriptor(&[
                ("limit", "daily"),
                ("consumer", "acme"),
            ])]),
            "entry 0 is `limit` where `consumer` belongs",
        ),
        (
            request(vec![limit("acme", "daily", "fortnight", 10)]),
            "`fortnight` is not a window",
        ),
        (
            request(vec![limit("acme", "daily", "400d", 10)]),
            "longer than 366 days",
        ),
        (
            request(vec![limit("acme", "daily", "day", 0)]),
            "requests `0`",
        ),
        (
            request(vec![with(ok(), "utc_offset", "+5:30")]),
            "utc_offset `+5:30`",
        ),
        (
            request(vec![limit(&"c".repeat(513), "daily", "day", 10)]),
            "a consumer is 1-512 bytes",
        ),
        (
            request(vec![limit("acme", "da:ily", "day", 10)]),
            "limit `da:ily`",
        ),
        (
            request(vec![limit("acme", &"x".repeat(65), "day", 10)]),
            "must be 1-64 characters",
        ),
        (
            request(vec![ok(), limit("globex", "burst", "10s", 5)]),
            "one request is one consumer's",
        ),
        (request(vec![ok(), ok()]), "limit `daily` appears twice"),
        (
            request(
                (0..17)
                    .map(|i| limit("acme", &format!("l{i}"), "day", 10))
                    .collect(),
            ),
            "17 descriptors; at most 16",
        ),
    ];
    let mut huge = ok();
    huge.hits_addend = Some(UInt64Value { value: u64::MAX });
    cases.push((
        request(vec![ok(), huge]),
        "hits_addend 18446744073709551615",
    ));
    let mut negative = ok();
    negative.is_negative_hits = true;
    cases.push((request(vec![negative]), "is_negative_hits"));
    let mut bad_domain = request(vec![ok()]);
    bad_domain.domain = "a{b}".into();
    cases.push((bad_domain, "domain `a{b}`"));
    // A bad descriptor after a good one: the good one is not counted either.
    cases.push((
        request(vec![ok(), limit("acme", "burst", "10s", 0)]),
        "descriptor 1: requests `0`",
    ));

    let count = cases.len();
    for (r, expected) in cases {
        let status = ask(&mut client, r).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(expected),
            "{:?} should name {expected:?}",
            status.message()
        );
    }
    assert_eq!(redis.dbsize(), 0, "a refused request writes nothing");
    assert_eq!(
        quotad.metric("quotad_decisions_total{code=\"invalid_argument\"}"),
        count as f64
    );

    // Still serving.
    let answer = ask(&mut client, request(vec![ok()])).await.unwrap();
    assert_eq!(answer.overall_code, Code::Ok as i32);
    assert_eq!(answer.statuses[0].limit_remaining, 9);
    assert_eq!(quotad.metric("quotad_decisions_total{code=\"ok\"}"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_addend_takes_all_or_nothing_and_says_what_is_left() {
    clear_of_day_boundary();
    let redis = Redis::start();
    let quotad = Quotad::on(QUOTAD, &redis);
    let mut client = quotad.client().await;
    let two = || {
        request(vec![
            limit("acme", "monthly", "month", 100),
            limit("acme", "daily", "day", 10),
        ])
    };
    let mut seven = two();
    seven.hits_addend = 7;
    let a = ask(&mut client, seven.clone()).await.unwrap();
    assert_eq!(a.overall_code, Code::Ok as i32);
    assert_eq!(
        (a.statuses[0].limit_remaining, a.statuses[1].limit_remaining),
        (93, 3)
    );
    // 7 more do not fit the daily limit: OVER_LIMIT, nothing taken, and what is left is said.
    let b = ask(&mut client, seven).await.unwrap();
    assert_eq!(b.overall_code, Code::OverLimit as i32);
    assert_eq!(
        b.statuses[0].code,
        Code::Ok as i32,
        "the monthly limit had room"
    );
    assert_eq!(b.statuses[1].code, Code::OverLimit as i32);
    assert_eq!(
        (b.statuses[0].limit_remaining, b.statuses[1].limit_remaining),
        (93, 3)
    );
    assert!(b.statuses[1].duration_until_reset.unwrap().seconds > 0);
    let unit = b.statuses[1].current_limit.as_ref().unwrap();
    assert_eq!((unit.name.as_str(), unit.requests_per_unit), ("daily", 10));
    // Asking for what is left passes and empties the daily limit.
    let mut three = two();
    three.hits_addend = 3;
    let c = ask(&mut client, three).await.unwrap();
    assert_eq!(c.overall_code, Code::Ok as i32);
    assert_eq!(
        (c.statuses[0].limit_remaining, c.statuses[1].limit_remaining),
        (90, 0)
    );
    let monthly = redis.keys(&key_pattern("acme", "monthly"));
    assert_eq!(redis.get(&monthly[0]), 10);
    let daily = redis.keys(&key_pattern("acme", "daily"));
    assert_eq!(redis.get(&daily[0]), 10);
    // A descriptor's own hits_addend of 0 only looks.
    let mut look = two();
    for d in &mut look.descriptors {
        d.hits_addend = Some(UInt64Value { value: 0 });
    }
    let d = ask(&mut client, look).await.unwrap();
    assert_eq!(d.overall_code, Code::Ok as i32);
    assert_eq!(redis.get(&monthly[0]), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_a_graceful_sigterm() {
    clear_of_day_boundary();
    let redis = Redis::start();
    // One worker thread (the bench's setting) serves gRPC, health and metrics alike.
    let mut quotad = Quotad::start(QUOTAD, &["--redis", &redis.url(), "--worker-threads", "1"]);
    quotad.wait_healthy();
    assert_eq!(quotad.http_get("/healthz"), (200, "ok\n".to_string()));

    // gRPC health (grpc.health.v1) of the rate limit service.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", quotad.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "envoy.service.ratelimit.v3.RateLimitService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut client = quotad.client().await;
    for _ in 0..3 {
        ask(&mut client, request(vec![limit("acme", "burst", "10s", 2)]))
            .await
            .unwrap();
    }
    assert_eq!(quotad.metric("quotad_decisions_total{code=\"ok\"}"), 2.0);
    assert_eq!(
        quotad.metric("quotad_decisions_total{code=\"over_limit\"}"),
        1.0
    );
    assert_eq!(quotad.metric("quotad_decision_duration_seconds_count"), 3.0);
    assert_eq!(quotad.metric("quotad_redis_up"), 1.0);
    // Aggregates only (the HTTP listener binds all interfaces by default): no consumer, limit
    // or domain reaches /metrics, and the only labels are the outcome, the error kind and the
    // histogram's buckets.
    let (_, body) = quotad.http_get("/metrics");
    for name in ["acme", "burst", "tollgate"] {
        assert!(!body.contains(name), "{name} in /metrics:\n{body}");
    }
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let labels = line.split_once('{').map_or("", |(_, rest)| rest);
        for label in labels.split(',').filter(|l| l.contains('=')) {
            let key = label.split('=').next().unwrap();
            assert!(
                ["code", "kind", "le"].contains(&key),
                "label {key} in /metrics: {line}"
            );
        }
    }

    // One start line with the configuration, no per-request lines at info.
    let log = quotad.log();
    assert_eq!(
        log.lines().filter(|l| l.contains("started: grpc")).count(),
        1,
        "{log}"
    );
    assert!(log.contains("redis timeout 300 ms"), "{log}");
    assert!(log.contains("worker threads 1"), "{log}");
    // ... and that one thread is the only one: no runtime worker beside the main thread.
    let threads = std::fs::read_dir(format!("/proc/{}/task", quotad.pid()))
        .unwrap()
        .count();
    assert_eq!(threads, 1, "quotad --worker-threads 1 runs on one thread");
    assert!(!log.contains("acme"), "no per-request logs at info: {log}");

    let status = quotad.terminate();
    assert!(
        status.success(),
        "SIGTERM must end quotad cleanly: {status}"
    );
    assert!(quotad.log().contains("quotad stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_url_can_come_from_a_file_and_a_bad_file_is_named() {
    clear_of_day_boundary();
    let redis = Redis::start();
    let dir = TempDir::named("secret");
    let file = dir.path().join("redis-url");
    std::fs::write(&file, format!("{}\n", redis.url())).unwrap();
    let path = file.display().to_string();
    let quotad = Quotad::start(QUOTAD, &["--redis-file", &path]);
    quotad.wait_healthy();
    let mut client = quotad.client().await;
    let answer = ask(
        &mut client,
        request(vec![limit("acme", "daily", "day", 10)]),
    )
    .await
    .unwrap();
    assert_eq!(answer.overall_code, Code::Ok as i32);
    assert_eq!(redis.counted("tollgate", "acme", "daily"), 1);
    // A file that cannot be read, or holds nothing: quotad does not start, and says why.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    for (bad, why) in [
        (dir.path().join("missing"), "cannot read it"),
        (empty, "it is empty"),
    ] {
        let out = std::process::Command::new(QUOTAD)
            .args(["--redis-file", &bad.display().to_string()])
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(log.contains("--redis-file") && log.contains(why), "{log}");
    }
    // And it is one way to name Redis, not two.
    let both = std::process::Command::new(QUOTAD)
        .args(["--redis-file", &path, "--redis", &redis.url()])
        .output()
        .unwrap();
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
}
