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

const DATA_PASSWORD: &str = "data-s3cret";
const SENTINEL_PASSWORD: &str = "sentinel-s3cret";

/// Two decisions of `consumer`'s limit of 2, then a refusal.
async fn two_of_two(quotad: &Quotad, consumer: &str) {
    let mut client = quotad.client().await;
    for (i, code) in [Code::Ok, Code::Ok, Code::OverLimit]
        .into_iter()
        .enumerate()
    {
        let answer = ask(
            &mut client,
            request(vec![limit(consumer, "daily", "day", 2)]),
        )
        .await
        .unwrap();
        assert_eq!(answer.overall_code, code as i32, "call {i}");
    }
}

/// A primary and replica with `requirepass` (the sentinel with `auth-pass`, and a password of
/// its own, in its URL): quotad decides with their password from --redis-sentinel-auth-file,
/// and without it gets NOAUTH from the primary (decisions UNAVAILABLE, health 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_primary_needs_the_sentinel_auth_file() {
    clear_of_day_boundary();
    let access = Access {
        tls: None,
        password: Some(DATA_PASSWORD.into()),
    };
    let redis = RedisSentinel::start_with_access(&access, Some(SENTINEL_PASSWORD));
    assert!(redis.url().contains(SENTINEL_PASSWORD), "{}", redis.url());
    let dir = TempDir::named("sentinel-auth");
    // `user:password`, the user being Redis's `default` (whom requirepass sets).
    let auth = dir.write("auth", &format!("default:{DATA_PASSWORD}\n"));
    let args = [
        "--redis-sentinel",
        &redis.url(),
        "--redis-sentinel-primary",
        SENTINEL_PRIMARY,
    ];

    let mut with_auth = args.to_vec();
    with_auth.extend(["--redis-sentinel-auth-file", &auth]);
    let quotad = Quotad::start(QUOTAD, &with_auth);
    quotad.wait_healthy();
    assert!(!quotad.log().contains(DATA_PASSWORD), "{}", quotad.log());
    let consumer = unique("sentinel-auth");
    two_of_two(&quotad, &consumer).await;
    assert_eq!(redis.primary.counted("tollgate", &consumer, "daily"), 2);

    let without = Quotad::start(QUOTAD, &args);
    poll(DEADLINE, "quotad to log NOAUTH", || {
        without
            .log()
            .lines()
            .find(|l| l.contains("Redis is unreachable") && l.contains("NOAUTH"))
            .map(str::to_string)
    });
    assert_eq!(without.http_get("/healthz").0, 503);
    let mut client = without.client().await;
    let status = ask(&mut client, request(vec![limit("acme", "daily", "day", 2)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(redis.primary.counted("tollgate", "acme", "daily"), 0);
}

/// Sentinel over TLS: rediss:// sentinels mean TLS to the primary too, with the same CA and
/// client certificate (every node speaks TLS only and asks for a client certificate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_sentinels_and_the_primary_are_reached_with_the_same_certificates() {
    clear_of_day_boundary();
    let dir = TempDir::named("sentinel-tls");
    let pki = tollgate_testkit::tls::Pki::new(dir.path(), "ca");
    let access = Access {
        tls: Some(RedisCerts::new(&pki)),
        password: Some(DATA_PASSWORD.into()),
    };
    let redis = RedisSentinel::start_with_access(&access, None);
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    let client = pki.issue("quotad-client", &["quotad"]);
    let auth = dir.write("auth", DATA_PASSWORD);
    let path = |p: &std::path::Path| p.display().to_string();
    let quotad = Quotad::start(
        QUOTAD,
        &[
            "--redis-sentinel",
            &redis.url(),
            "--redis-sentinel-primary",
            SENTINEL_PRIMARY,
            "--redis-sentinel-auth-file",
            &auth,
            "--redis-ca",
            &path(&pki.ca()),
            "--redis-client-cert",
            &path(&client.cert),
            "--redis-client-key",
            &path(&client.key),
        ],
    );
    quotad.wait_healthy();
    let consumer = unique("sentinel-tls");
    two_of_two(&quotad, &consumer).await;
    assert_eq!(redis.primary.counted("tollgate", &consumer, "daily"), 2);
}
