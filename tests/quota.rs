//! Quotas end to end: exact admission, the 402 answer, per-limit statuses, refusals that
//! consume nothing, windows that reset, and keys that share their consumer's quota.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tollgate_testkit::*;

const DAY: u64 = 86_400;

#[test]
fn admits_exactly_the_quota_then_answers_402_problem_json() {
    let envoy = Envoy::start(&plugin(
        r#"{
          "plans": {"small": {"limits": [{"name": "daily", "requests": 5, "window": "day"}]}},
          "consumers": {"acme": {"plan": "small", "keys": ["acme-key"]}}
        }"#,
    ));
    // Requests are sent inside one window; assertions come after the window check.
    let (before, responses) = within_one_window(DAY, 30.0, 1, |_| {
        let before = unix_now();
        let responses: Vec<Response> = (0..8).map(|_| envoy.get_with_key("acme-key")).collect();
        (before, responses)
    });
    let (admitted, refused) = responses.split_at(5);
    {
        for (i, ok) in (1..=5u64).zip(admitted) {
            assert_eq!(ok.status, 200, "request {i}: {ok:?}");
            assert_eq!(ok.header("ratelimit-policy"), Some("\"daily\";q=5;w=86400"));
            assert_eq!(ok.remaining("daily"), 5 - i);
        }
        for refused in refused {
            assert_eq!(refused.status, 402, "{refused:?}");
            assert_eq!(
                refused.header("content-type"),
                Some("application/problem+json")
            );
            assert_eq!(
                refused.header("ratelimit-policy"),
                Some("\"daily\";q=5;w=86400")
            );
            assert_eq!(refused.remaining("daily"), 0);
            // Retry-After is the time to the next UTC midnight.
            let midnight = window_start(before, DAY) + DAY as f64;
            let retry_after: f64 = refused.header("retry-after").unwrap().parse().unwrap();
            assert!(
                (retry_after - (midnight - before)).abs() <= 2.0,
                "{retry_after}"
            );
            let body = refused.json();
            assert_eq!(
                body["type"],
                "https://iana.org/assignments/http-problem-types#quota-exceeded"
            );
            assert_eq!(
                body["title"],
                "Request cannot be satisfied as assigned quota has been exceeded"
            );
            assert_eq!(body["status"], 402);
            assert_eq!(body["violated-policies"], serde_json::json!(["daily"]));
            assert_eq!(
                (body["consumer"].as_str(), body["plan"].as_str()),
                (Some("acme"), Some("small"))
            );
            assert!(
                body["reset"].as_str().unwrap().ends_with("T00:00:00Z"),
                "{body}"
            );
            assert_eq!(body["retry-after"].as_f64(), Some(retry_after));
            assert!(body["detail"]
                .as_str()
                .unwrap()
                .contains("all 5 requests of limit \"daily\""));
        }
    }
}

#[test]
fn each_limit_answers_with_its_own_status_and_refusals_consume_nothing() {
    let envoy = Envoy::start(&plugin(
        r#"{
          "plans": {"free": {"limits": [
            {"name": "daily", "requests": 3, "window": "day"},
            {"name": "burst", "requests": 2, "window": "4s", "status": 429}
          ]}},
          "consumers": {
            "c0": {"plan": "free", "keys": ["k0"]},
            "c1": {"plan": "free", "keys": ["k1"]},
            "c2": {"plan": "free", "keys": ["k2"]}
          }
        }"#,
    ));
    let (key, responses) = within_one_window(4, 3.5, 3, |attempt| {
        let key = format!("k{attempt}");
        let responses: Vec<Response> = (0..7).map(|_| envoy.get_with_key(&key)).collect();
        (key, responses)
    });
    assert_eq!(responses[0].status, 200);
    assert_eq!(responses[1].status, 200);
    for burst in &responses[2..] {
        assert_eq!(burst.status, 429, "{burst:?}");
        assert_eq!(
            burst.json()["violated-policies"],
            serde_json::json!(["burst"])
        );
        assert_eq!(burst.remaining("burst"), 0);
        assert_eq!(
            burst.remaining("daily"),
            1,
            "the refusals did not touch the daily count"
        );
        let retry_after: u64 = burst.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=4).contains(&retry_after), "{retry_after}");
    }
    // Once the burst window rolls over, the one request left of the daily quota goes through.
    let ok = poll(
        std::time::Duration::from_secs(20),
        "the burst window to reset",
        || {
            let r = envoy.get_with_key(&key);
            (r.status == 200).then_some(r)
        },
    );
    assert_eq!(ok.remaining("daily"), 0);
    // Now the daily limit binds: 402, even when the burst limit has room.
    let refused = envoy.get_with_key(&key);
    assert_eq!(refused.status, 402, "{refused:?}");
    assert_eq!(
        refused.json()["violated-policies"],
        serde_json::json!(["daily"])
    );
    assert!(refused.remaining("burst") >= 1, "{refused:?}");
}

#[test]
fn a_short_window_resets_at_its_boundary_and_not_before() {
    let envoy = Envoy::start(&plugin(
        r#"{
          "plans": {"tiny": {"limits": [{"name": "per2s", "requests": 2, "window": "2s"}]}},
          "consumers": {
            "c0": {"plan": "tiny", "keys": ["k0"]}, "c1": {"plan": "tiny", "keys": ["k1"]},
            "c2": {"plan": "tiny", "keys": ["k2"]}, "c3": {"plan": "tiny", "keys": ["k3"]}
          }
        }"#,
    ));
    let (key, refused_at, responses) = within_one_window(2, 1.8, 4, |attempt| {
        let key = format!("k{attempt}");
        let mut responses: Vec<Response> = (0..2).map(|_| envoy.get_with_key(&key)).collect();
        let refused_at = unix_now();
        responses.push(envoy.get_with_key(&key));
        (key, refused_at, responses)
    });
    assert_eq!((responses[0].status, responses[1].status), (200, 200));
    let refused = &responses[2];
    assert_eq!(refused.status, 402, "{refused:?}");
    let t = refused.ratelimit()[0].2;
    assert!((1..=2).contains(&t), "reset in {t}s");
    let boundary = window_start(refused_at, 2) + 2.0;
    let (answered, ok) = poll(
        std::time::Duration::from_secs(20),
        "the 2s window to reset",
        || {
            let r = envoy.get_with_key(&key);
            (r.status == 200).then(|| (unix_now(), r))
        },
    );
    // Admitted again only in the next window: Envoy decided before the answer arrived, and it
    // may not have decided before the boundary.
    assert!(
        answered >= boundary,
        "readmitted by {answered}, before the window ended at {boundary}"
    );
    assert_eq!(ok.remaining("per2s"), 1);
}

#[test]
fn all_keys_of_a_consumer_share_its_quota_and_consumers_are_counted_apart() {
    // The second key is "acme-key-2", configured by its SHA-256 only.
    let envoy = Envoy::start(&plugin(
        r#"{
          "plans": {"small": {"limits": [{"name": "daily", "requests": 4, "window": "day"}]}},
          "consumers": {
            "acme": {"plan": "small", "keys": ["acme-key-1",
              "sha256:c8f4a2b3c3b6b96b8d9e2b8f3c2d61d7f7a4c7a0e2d5b8a6f6f3c0b4f2a1e9d8"]},
            "globex": {"plan": "small", "keys": ["globex-key"]}
          }
        }"#
        .replace(
            "c8f4a2b3c3b6b96b8d9e2b8f3c2d61d7f7a4c7a0e2d5b8a6f6f3c0b4f2a1e9d8",
            &sha256_hex("acme-key-2"),
        )
        .as_str(),
    ));
    let keys = [
        "acme-key-1",
        "acme-key-2",
        "acme-key-1",
        "acme-key-2",
        "acme-key-1",
        "acme-key-2",
        "globex-key",
    ];
    let responses = within_one_window(DAY, 30.0, 1, |_| {
        keys.iter()
            .map(|key| envoy.get_with_key(key))
            .collect::<Vec<Response>>()
    });
    for (i, r) in responses[..4].iter().enumerate() {
        assert_eq!(r.status, 200, "{}: {r:?}", keys[i]);
        assert_eq!(r.remaining("daily"), 3 - i as u64);
    }
    assert_eq!((responses[4].status, responses[5].status), (402, 402));
    let other = &responses[6];
    assert_eq!(other.status, 200);
    assert_eq!(
        other.remaining("daily"),
        3,
        "another consumer has its own count"
    );
}

/// SHA-256 hex through the system's `sha256sum`, independent of tollgate's implementation.
fn sha256_hex(text: &str) -> String {
    run_with_input(&mut std::process::Command::new("sha256sum"), text)
        .stdout
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
