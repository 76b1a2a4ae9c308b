//! TLS on quotad's gRPC listener (src/tls.rs): plaintext refused on a reachable address unless
//! asked for, mutual TLS admitting only the clients on the allow-list, and certificates renewed
//! without a restart.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;

use common::*;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use tollgate_testkit::tls::Pki;

const SERVER: &str = "quotad.tollgate";
const GATEWAY: &str = "gateway.tollgate";
const MESH: &str = "spiffe://cluster.local/ns/gateways/sa/envoy";

fn one() -> envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest {
    request(vec![limit("acme", "daily", "day", 1000)])
}

#[test]
fn plaintext_on_a_reachable_address_needs_the_flag() {
    let out = Command::new(QUOTAD)
        .args(["--listen", "0.0.0.0:0", "--http-listen", "127.0.0.1:0"])
        .args(["--redis", "redis://127.0.0.1:1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--tls-cert") && stderr.contains("--plaintext"),
        "{stderr}"
    );
    // Asked for, it serves.
    let dir = TempDir::named("quotad-plaintext");
    let mut command = Command::new(QUOTAD);
    command
        .args(["--listen", "0.0.0.0:0", "--http-listen", "127.0.0.1:0"])
        .args(["--redis", "redis://127.0.0.1:1", "--plaintext"])
        .env("RUST_LOG", "info");
    let mut process = Process::spawn("quotad", command, dir.join("quotad.log"));
    wait_for("quotad starts", STARTUP_DEADLINE, || {
        if let Some(status) = process.exited() {
            panic!("quotad exited ({status}):\n{}", process.log());
        }
        process.log().contains("gRPC over plaintext")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_the_allowed_clients_only() {
    clear_of_day_boundary();
    let dir = TempDir::named("quotad-mtls");
    let pki = Pki::new(dir.path(), "fleet");
    let server = pki.issue("quotad", &[SERVER, "127.0.0.1"]);
    let gateway = pki.issue("gateway", &[GATEWAY]);
    let mesh = pki.issue("mesh", &[MESH]);
    let stranger = pki.issue("stranger", &["stranger.tollgate"]);
    let forged = Pki::new(dir.path(), "forger").issue("forged", &[GATEWAY]);
    let redis = Redis::start();
    let quotad = Quotad::start(
        QUOTAD,
        &[
            "--redis",
            &redis.url(),
            "--tls-cert",
            server.cert.to_str().unwrap(),
            "--tls-key",
            server.key.to_str().unwrap(),
            "--tls-client-ca",
            pki.ca().to_str().unwrap(),
            "--tls-allow",
            &format!("{GATEWAY},{MESH}"),
        ],
    );
    assert!(
        quotad
            .log()
            .contains("gRPC over mutual TLS (2 client identities allowed)"),
        "{}",
        quotad.log()
    );
    // Allowed by DNS name and by URI (SPIFFE id): answered and counted.
    for identity in [&gateway, &mesh] {
        let mut client = quotad
            .tls_client(&pki.ca(), SERVER, Some(identity))
            .await
            .unwrap();
        let answer = ask(&mut client, one()).await.unwrap();
        assert_eq!(answer.overall_code, Code::Ok as i32);
    }
    assert_eq!(quotad.decisions(), 2);
    // Refused: a client of the CA not on the list, a certificate of another CA naming an
    // allowed identity, no certificate, and plaintext. None reaches a decision.
    for (who, identity) in [
        ("a client not on the allow-list", Some(&stranger)),
        ("a certificate of another CA", Some(&forged)),
        ("no client certificate", None),
    ] {
        let refused = match quotad.tls_client(&pki.ca(), SERVER, identity).await {
            Err(e) => format!("connect: {e:?}"),
            Ok(mut client) => match ask(&mut client, one()).await {
                Err(status) => format!("call: {status:?}"),
                Ok(answer) => panic!("{who} was answered: {answer:?}"),
            },
        };
        assert!(!refused.is_empty(), "{who}");
    }
    let mut plaintext = quotad.client().await;
    assert!(
        ask(&mut plaintext, one()).await.is_err(),
        "a plaintext call was answered"
    );
    assert_eq!(quotad.decisions(), 2, "a refused client reached a decision");
    wait_for("quotad logs the refused identity", DEADLINE, || {
        quotad
            .log()
            .contains("names [stranger.tollgate] none of --tls-allow")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_serves_new_connections_without_a_restart() {
    clear_of_day_boundary();
    let dir = TempDir::named("quotad-reload");
    let old_ca = Pki::new(dir.path(), "old");
    let new_ca = Pki::new(dir.path(), "new");
    // The Secret's files: the server's certificate and key, issued by the old CA.
    let server = old_ca.issue("server", &[SERVER]);
    let redis = Redis::start();
    let quotad = Quotad::start(
        QUOTAD,
        &[
            "--redis",
            &redis.url(),
            "--tls-cert",
            server.cert.to_str().unwrap(),
            "--tls-key",
            server.key.to_str().unwrap(),
            "--tls-reload-ms",
            "100",
        ],
    );
    // TLS without client certificates.
    let mut before = quotad.tls_client(&old_ca.ca(), SERVER, None).await.unwrap();
    assert_eq!(
        ask(&mut before, one()).await.unwrap().overall_code,
        Code::Ok as i32
    );
    assert!(
        quotad.tls_client(&new_ca.ca(), SERVER, None).await.is_err(),
        "a client trusting only the new CA connected before the renewal"
    );
    // Renewed in place by the new CA (the same file names, as a Secret update writes them).
    new_ca.issue("server", &[SERVER]);
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut after = loop {
        if let Ok(client) = quotad.tls_client(&new_ca.ca(), SERVER, None).await {
            break client;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate was never served:\n{}",
            quotad.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        ask(&mut after, one()).await.unwrap().overall_code,
        Code::Ok as i32
    );
    // The connection made before keeps working.
    assert_eq!(
        ask(&mut before, one()).await.unwrap().overall_code,
        Code::Ok as i32
    );
    assert!(quotad.log().contains("TLS: certificates reloaded"));
    // A broken renewal is refused, logged, and the last good certificate goes on serving.
    std::fs::write(&server.cert, "not a certificate\n").unwrap();
    wait_for("quotad logs the broken renewal", DEADLINE, || {
        quotad
            .log()
            .contains("still serving the certificates loaded before")
    });
    let mut still = quotad.tls_client(&new_ca.ca(), SERVER, None).await.unwrap();
    assert_eq!(
        ask(&mut still, one()).await.unwrap().overall_code,
        Code::Ok as i32
    );
}
