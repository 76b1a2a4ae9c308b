//! quotad to Redis over TLS (`rediss://`), against real redis-server speaking TLS only: a
//! private CA given with --redis-ca is trusted and nothing else is, and a Redis that asks for
//! client certificates (`tls-auth-clients yes`) gets --redis-client-cert.

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
use tollgate_testkit::tls::Pki;

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// Asks for `consumer`'s limit of 2 three times: OK, OK, OVER_LIMIT.
async fn two_of_two(quotad: &Quotad, consumer: &str) {
    let mut client = quotad.client().await;
    let codes = [Code::Ok, Code::Ok, Code::OverLimit];
    for (i, code) in codes.into_iter().enumerate() {
        let answer = ask(
            &mut client,
            request(vec![limit(consumer, "daily", "day", 2)]),
        )
        .await
        .unwrap();
        assert_eq!(answer.overall_code, code as i32, "call {i}");
    }
}

/// quotad cannot reach Redis: its log says why (one of `cause`), /healthz says so, and a
/// decision is UNAVAILABLE.
async fn cannot_reach(quotad: &Quotad, cause: &[&str]) {
    poll(
        DEADLINE,
        &format!("quotad to log Redis unreachable: {cause:?}"),
        || {
            quotad
                .log()
                .lines()
                .find(|l| l.contains("Redis is unreachable") && cause.iter().any(|c| l.contains(c)))
                .map(str::to_string)
        },
    );
    assert_eq!(quotad.http_get("/healthz").0, 503);
    let mut client = quotad.client().await;
    let status = ask(&mut client, request(vec![limit("acme", "daily", "day", 2)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotad_decides_over_tls_trusting_the_private_ca_only() {
    clear_of_day_boundary();
    let dir = TempDir::named("redis-tls");
    let pki = Pki::new(dir.path(), "ca");
    let certs = RedisCerts::new(&pki);
    let redis = Redis::start_tls(&certs, &["--tls-auth-clients", "no"]);
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());

    let ca = path(&pki.ca());
    let quotad = Quotad::start(QUOTAD, &["--redis", &redis.url(), "--redis-ca", &ca]);
    quotad.wait_healthy();
    let consumer = unique("tls");
    two_of_two(&quotad, &consumer).await;
    assert_eq!(redis.counted("tollgate", &consumer, "daily"), 2);

    // Without the CA, the system's roots do not know Redis's certificate.
    let untrusting = Quotad::start(QUOTAD, &["--redis", &redis.url()]);
    cannot_reach(&untrusting, &["invalid peer certificate: UnknownIssuer"]).await;
    // Nor does another CA's certificate.
    let other = Pki::new(dir.path(), "other-ca");
    let other_ca = path(&other.ca());
    let wrong = Quotad::start(QUOTAD, &["--redis", &redis.url(), "--redis-ca", &other_ca]);
    cannot_reach(&wrong, &["invalid peer certificate: UnknownIssuer"]).await;
    assert_eq!(redis.counted("tollgate", "acme", "daily"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_asks_for_client_certificates_gets_quotads() {
    clear_of_day_boundary();
    let dir = TempDir::named("redis-mtls");
    let pki = Pki::new(dir.path(), "ca");
    let certs = RedisCerts::new(&pki);
    // Redis's default: `tls-auth-clients yes`.
    let redis = Redis::start_tls(&certs, &[]);
    let client = pki.issue("quotad-client", &["quotad"]);
    let ca = path(&pki.ca());

    let with_cert = Quotad::start(
        QUOTAD,
        &[
            "--redis",
            &redis.url(),
            "--redis-ca",
            &ca,
            "--redis-client-cert",
            &path(&client.cert),
            "--redis-client-key",
            &path(&client.key),
        ],
    );
    with_cert.wait_healthy();
    let consumer = unique("mtls");
    two_of_two(&with_cert, &consumer).await;
    assert_eq!(redis.counted("tollgate", &consumer, "daily"), 2);

    // Without one, Redis ends the handshake with TLS 1.3's certificate_required alert.
    let without = Quotad::start(QUOTAD, &["--redis", &redis.url(), "--redis-ca", &ca]);
    cannot_reach(&without, &["received fatal alert: CertificateRequired"]).await;
}

/// TLS files are checked at start: quotad refuses to start, the error naming the flag and the
/// file, never their contents.
#[test]
fn tls_settings_that_cannot_work_stop_quotad_at_start() {
    let dir = TempDir::named("redis-tls-flags");
    let pki = Pki::new(dir.path(), "ca");
    let pair = pki.issue("quotad-client", &["quotad"]);
    let other = pki.issue("other", &["other"]);
    let ca = path(&pki.ca());
    let secret = "BEGIN-NOT-A-CERTIFICATE-s3cret";
    let junk = dir.write("junk.pem", secret);
    let big = dir.write("big.pem", &"x".repeat(1024 * 1024 + 1));
    let other_key = path(&other.key);
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        // A CA for a plaintext URL would silently not apply.
        (
            vec![
                "--redis".into(),
                "redis://127.0.0.1:1".into(),
                "--redis-ca".into(),
                ca.clone(),
            ],
            vec!["--redis-ca", "rediss://"],
        ),
        (
            vec![
                "--redis".into(),
                "rediss://127.0.0.1:1".into(),
                "--redis-ca".into(),
                junk.clone(),
            ],
            vec!["--redis-ca", &junk],
        ),
        (
            vec![
                "--redis".into(),
                "rediss://127.0.0.1:1".into(),
                "--redis-ca".into(),
                big.clone(),
            ],
            vec!["--redis-ca", &big, "larger than"],
        ),
        (
            vec![
                "--redis".into(),
                "rediss://127.0.0.1:1".into(),
                "--redis-client-cert".into(),
                path(&pair.cert),
                "--redis-client-key".into(),
                path(&other.key),
            ],
            vec!["--redis-client-cert", "--redis-client-key", &other_key],
        ),
        (
            vec![
                "--redis".into(),
                "rediss://127.0.0.1:1".into(),
                "--redis-client-cert".into(),
                path(&pair.cert),
                "--redis-client-key".into(),
                junk.clone(),
            ],
            vec!["--redis-client-key", &junk],
        ),
        (
            vec!["--redis".into(), "rediss://127.0.0.1:1/#insecure".into()],
            vec!["#insecure"],
        ),
        (
            vec![
                "--redis-cluster".into(),
                "rediss://127.0.0.1:1,redis://127.0.0.1:2".into(),
            ],
            vec!["--redis-cluster", "redis:// and rediss://"],
        ),
    ];
    for (args, expected) in cases {
        let mut command = std::process::Command::new(QUOTAD);
        command
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(&args);
        let mut process = Process::spawn("quotad", command, dir.join(format!("{}.log", next_id())));
        // A quotad that started would serve until stopped: a deadline, not a wait for its exit.
        let status = poll(STARTUP_DEADLINE, "quotad to exit", || process.exited());
        let log = process.log();
        assert!(
            !status.contains("exit status: 0"),
            "{args:?}: {status}\n{log}"
        );
        assert!(!log.contains("started: grpc"), "{args:?} started:\n{log}");
        for e in expected {
            assert!(log.contains(e), "{args:?}: no {e:?} in:\n{log}");
        }
        assert!(!log.contains("s3cret"), "{args:?} quotes the file:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_over_tls_counts_with_each_consumer_in_one_slot() {
    clear_of_day_boundary();
    let dir = TempDir::named("cluster-tls");
    let pki = Pki::new(dir.path(), "ca");
    let certs = RedisCerts::new(&pki);
    let cluster = RedisCluster::start_tls(&certs);
    assert!(
        cluster.seeds().starts_with("rediss://"),
        "{}",
        cluster.seeds()
    );
    let client = pki.issue("quotad-client", &["quotad"]);
    let quotad = Quotad::start(
        QUOTAD,
        &[
            "--redis-cluster",
            &cluster.seeds(),
            "--redis-ca",
            &path(&pki.ca()),
            "--redis-client-cert",
            &path(&client.cert),
            "--redis-client-key",
            &path(&client.key),
            "--redis-timeout-ms",
            "5000",
        ],
    );
    quotad.wait_healthy();
    let consumers: Vec<String> = (0..8).map(|i| unique(&format!("t{i}"))).collect();
    let admitted = hammer(&quotad, &consumers, 5, 8, 8).await;
    let mut nodes_used = std::collections::BTreeSet::new();
    for c in &consumers {
        assert_eq!(admitted.get(c).copied().unwrap_or(0), 5, "{c}");
        let keys = cluster.keys(&format!("tollgate:v1:{{tollgate:{c}}}:*"));
        assert_eq!(keys.len(), 2, "{c}: {keys:?}");
        for (n, k) in &keys {
            assert_eq!(cluster.get(*n, k), 5, "{k}");
        }
        nodes_used.insert(keys[0].0);
    }
    assert!(
        nodes_used.len() >= 2,
        "8 consumers should spread over the masters: {nodes_used:?}"
    );
}
