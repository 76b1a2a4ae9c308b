//! The shipped `envoy/envoy.yaml`, started as it is (on free ports): envoy/README.md's session.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tollgate_testkit::*;

#[test]
fn the_readme_session_works_against_the_shipped_configuration() {
    let envoy = Envoy::start_with(Options::default());

    // A known key goes through to the demo backend, with RateLimit fields.
    let ok = envoy.get("/hello", &[("x-api-key", "acme-key-1")]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["path"], "/hello");
    assert!(ok.body.contains("hello from the demo backend"), "{ok:?}");
    assert_eq!(
        ok.header("ratelimit-policy"),
        Some("\"daily\";q=1000;w=86400, \"burst\";q=5;w=10")
    );
    assert_eq!(ok.remaining("daily"), 999);

    // No key, unknown key: 401 problem+json with a challenge.
    let missing = envoy.get("/hello", &[]);
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("content-type"),
        Some("application/problem+json")
    );
    assert!(missing.header("www-authenticate").is_some());
    assert_eq!(envoy.get_with_key("not-a-key").status, 401);

    // The trial consumer has 3 requests a month: the 4th is 402 Payment Required.
    for i in 1..=3u64 {
        let r = envoy.get("/hello?api_key=wayne-key", &[]);
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.remaining("monthly"), 3 - i);
    }
    let refused = envoy.get("/hello?api_key=wayne-key", &[]);
    assert_eq!(refused.status, 402, "{refused:?}");
    assert_eq!(
        refused.json()["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );
    assert!(refused.header("retry-after").is_some());

    // Hashed key, Bearer token, suspended, expired, unlimited.
    let globex = envoy.get("/", &[("authorization", "Bearer globex-key")]);
    assert_eq!(globex.status, 200, "{globex:?}");
    assert_eq!(envoy.get_with_key("initech-key").status, 402);
    assert_eq!(
        envoy.get_with_key("initech-key").json()["title"],
        "Subscription suspended"
    );
    assert_eq!(
        envoy.get_with_key("umbrella-key").json()["title"],
        "Subscription expired"
    );
    let ops = envoy.get_with_key("ops-key");
    assert_eq!(ops.status, 200);
    assert_eq!(
        ops.header("ratelimit"),
        None,
        "an unlimited plan has no RateLimit fields"
    );

    // The usage endpoint answers without counting.
    let usage = envoy.get("/tollgate/usage", &[("x-api-key", "acme-key-2")]);
    assert_eq!(usage.status, 200, "{usage:?}");
    assert_eq!(usage.json()["limits"][0]["used"], 1);
    assert_eq!(
        envoy
            .get("/tollgate/usage", &[("x-api-key", "acme-key-1")])
            .json()["limits"][0]["used"],
        1
    );

    // The demo backend echoes what it received: tollgate told it who called.
    let echoed = envoy.get_with_key("acme-key-1").json();
    assert!(
        echoed["headers"]
            .to_string()
            .contains("[\"x-tollgate-consumer\",\"acme\"]"),
        "{echoed}"
    );

    // tollgate logged its version and configuration summary, never a key.
    let log = envoy.tollgate_log().join("\n");
    assert!(log.contains("version 0.1.0"), "{log}");
    assert!(log.contains("6 consumers, 7 keys"), "{log}");
    for secret in ["acme-key-1", "wayne-key", "globex-key", "not-a-key"] {
        assert!(
            !envoy.log().contains(secret),
            "the log contains the key {secret}"
        );
    }
}
