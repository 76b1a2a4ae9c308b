//! Operating tollgate: metrics, the usage endpoint, shadow mode, the store-error policy, CORS
//! preflights, gRPC refusals, identity headers for the upstream, hidden credentials and the
//! calendar offset. The upstream is envoy.yaml's demo backend, which echoes the path and the
//! headers it received.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tollgate_testkit::*;

use std::time::Duration;

fn config(extra: &str) -> String {
    plugin(&format!(
        r#"{{
          "credentials": [{{"header": "x-api-key"}}, {{"authorization": "Bearer"}}, {{"query": "api_key"}}],
          "plans": {{
            "free": {{"limits": [{{"name": "daily", "requests": 2, "window": "day"}}]}},
            "pro": {{"limits": [{{"name": "daily", "requests": 1000, "window": "day"}},
                               {{"name": "monthly", "requests": 5000, "window": "month"}}]}}
          }},
          "consumers": {{
            "acme": {{"plan": "free", "keys": ["acme-key"]}},
            "globex": {{"plan": "pro", "keys": ["globex-key"]}},
            "initech": {{"plan": "pro", "keys": ["initech-key"], "status": "suspended"}},
            "umbrella": {{"plan": "pro", "keys": ["umbrella-key"], "expires_at": "2020-01-01T00:00:00Z"}}
          }}
          {extra}
        }}"#
    ))
}

/// What the echo backend received: its path and headers.
fn upstream_saw(r: &Response) -> (String, Vec<(String, String)>) {
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    let path = body["path"].as_str().unwrap().to_string();
    let headers = body["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_string(),
                pair[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (path, headers)
}

fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A counter from Envoy's /stats (custom metrics are `wasmcustom.<name>`).
fn counter(envoy: &Envoy, name: &str) -> u64 {
    let stats = envoy.stats();
    let prefix = format!("wasmcustom.{name}: ");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no counter {name} in /stats"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn metrics_count_every_outcome_globally_and_per_plan() {
    let envoy = Envoy::start(&config(""));
    for _ in 0..3 {
        envoy.get_with_key("acme-key"); // 2 allowed, then 1 refused (quota)
    }
    envoy.get_with_key("globex-key"); // allowed, plan pro
    envoy.get("/", &[]); // missing credential
    envoy.get_with_key("nobody"); // invalid credential
    envoy.get_with_key("initech-key"); // suspended
    envoy.get_with_key("umbrella-key"); // expired
    let expected = [
        ("tollgate.requests.allowed", 3),
        ("tollgate.requests.refused.quota", 1),
        ("tollgate.requests.refused.missing_credential", 1),
        ("tollgate.requests.refused.invalid_credential", 1),
        ("tollgate.requests.refused.suspended", 1),
        ("tollgate.requests.refused.expired", 1),
        ("tollgate.requests.refused.store_error", 0),
        ("tollgate.errors.store", 0),
        ("tollgate.errors.cas_exhausted", 0),
        ("tollgate.plan.free.allowed", 2),
        ("tollgate.plan.free.refused.quota", 1),
        ("tollgate.plan.pro.allowed", 1),
        ("tollgate.plan.pro.refused.suspended", 1),
        ("tollgate.plan.pro.refused.expired", 1),
    ];
    // Counters are summed over both workers; poll in case a flush is still under way.
    poll(Duration::from_secs(10), "the counters", || {
        expected
            .iter()
            .all(|(name, value)| counter(&envoy, name) == *value)
            .then_some(())
    });
    // Prometheus: Envoy strips the wasmcustom prefix from custom metrics.
    let prometheus = request(envoy.admin, "GET", "/stats/prometheus", &[]).body;
    assert!(
        prometheus.contains("tollgate_requests_allowed{} 3"),
        "{prometheus}"
    );
    assert!(prometheus.contains("tollgate_plan_free_refused_quota{} 1"));
    // Bounded cardinality: nothing per consumer or per key.
    for name in ["acme", "globex", "nobody"] {
        assert!(!envoy.stats().contains(name), "a metric names {name}");
    }
}

#[test]
fn the_usage_endpoint_reports_a_callers_usage_without_counting() {
    let envoy = Envoy::start(&config(r#", "usage_path": "/tollgate/usage""#));
    assert_eq!(envoy.get_with_key("globex-key").status, 200);
    for _ in 0..3 {
        let usage = envoy.get("/tollgate/usage", &[("x-api-key", "globex-key")]);
        assert_eq!(usage.status, 200, "{usage:?}");
        assert_eq!(usage.header("content-type"), Some("application/json"));
        let body = usage.json();
        assert_eq!(body["consumer"], "globex");
        assert_eq!(body["plan"], "pro");
        assert_eq!(body["status"], "active");
        let daily = &body["limits"][0];
        assert_eq!(daily["name"], "daily");
        assert_eq!(daily["requests"], 1000);
        assert_eq!(daily["window"], "day");
        assert_eq!(
            (daily["used"].as_u64(), daily["remaining"].as_u64()),
            (Some(1), Some(999))
        );
        assert!(daily["reset"].as_str().unwrap().ends_with("T00:00:00Z"));
        assert_eq!(body["limits"][1]["name"], "monthly");
        assert!(body["limits"][1]["reset"]
            .as_str()
            .unwrap()
            .ends_with("-01T00:00:00Z"));
    }
    // The usage calls were not counted.
    assert_eq!(envoy.get_with_key("globex-key").remaining("daily"), 998);
    // Any credential source works; a query key is accepted too.
    assert_eq!(
        envoy.get("/tollgate/usage?api_key=acme-key", &[]).json()["consumer"],
        "acme"
    );
    assert_eq!(envoy.get("/tollgate/usage", &[]).status, 401);
    assert_eq!(
        envoy
            .get("/tollgate/usage", &[("x-api-key", "nobody")])
            .status,
        401
    );
    let post = request(
        envoy.port,
        "POST",
        "/tollgate/usage",
        &[("x-api-key", b"globex-key"), ("content-length", b"0")],
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(
        post.json()["detail"],
        "The usage endpoint answers GET and HEAD.",
        "the detail names the methods `allow` names"
    );
    // Other paths are untouched by it.
    let (path, _) = upstream_saw(&envoy.get("/tollgate/usagex", &[("x-api-key", "globex-key")]));
    assert_eq!(path, "/tollgate/usagex");
    poll(Duration::from_secs(10), "the usage counter", || {
        (counter(&envoy, "tollgate.usage.served") == 4).then_some(())
    });
}

#[test]
fn shadow_mode_counts_and_reports_but_refuses_nothing() {
    let envoy = Envoy::start(&config(r#", "mode": "shadow""#));
    let statuses: Vec<u16> = (0..4)
        .map(|_| envoy.get_with_key("acme-key").status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200]);
    let over = envoy.get_with_key("acme-key");
    assert_eq!(
        over.remaining("daily"),
        0,
        "RateLimit fields tell the truth"
    );
    let (_, headers) = upstream_saw(&over);
    assert_eq!(values(&headers, "x-tollgate-consumer"), ["acme"]);
    // Credential and standing failures pass as well.
    for r in [
        envoy.get("/", &[]),
        envoy.get_with_key("nobody"),
        envoy.get_with_key("initech-key"),
        envoy.get_with_key("umbrella-key"),
    ] {
        assert_eq!(r.status, 200, "{r:?}");
    }
    poll(Duration::from_secs(10), "the shadow counters", || {
        (counter(&envoy, "tollgate.requests.shadowed.quota") == 3
            && counter(&envoy, "tollgate.requests.shadowed.missing_credential") == 1
            && counter(&envoy, "tollgate.requests.shadowed.invalid_credential") == 1
            && counter(&envoy, "tollgate.requests.shadowed.suspended") == 1
            && counter(&envoy, "tollgate.requests.shadowed.expired") == 1
            && counter(&envoy, "tollgate.plan.free.shadowed.quota") == 3
            && counter(&envoy, "tollgate.requests.allowed") == 2
            && counter(&envoy, "tollgate.requests.refused.quota") == 0)
            .then_some(())
    });
    let log = envoy.tollgate_log().join("\n");
    assert!(
        log.contains("shadow mode: would refuse quota consumer=acme plan=free"),
        "{log}"
    );
    assert!(
        log.contains("shadow mode: would refuse missing_credential"),
        "{log}"
    );
}

#[test]
fn shadow_mode_logs_a_would_be_refusal_once_a_minute_per_consumer_and_reason() {
    // One worker, so that one VM sees every request: at most one line per consumer and
    // reason per minute, the others counted as held back.
    let envoy = Envoy::start_with(Options {
        plugin: Some(config(r#", "mode": "shadow""#)),
        concurrency: 1,
        ..Options::default()
    });
    let started = std::time::Instant::now();
    let mut conn = Conn::new(envoy.port);
    for _ in 0..2 {
        assert_eq!(conn.get("/", &[("x-api-key", b"acme-key")]).status, 200);
    }
    let (over, keyless) = (30, 10);
    for _ in 0..over {
        let r = conn.get("/", &[("x-api-key", b"acme-key")]);
        assert_eq!((r.status, r.remaining("daily")), (200, 0), "{r:?}");
    }
    for _ in 0..keyless {
        assert_eq!(conn.get("/", &[]).status, 200);
    }
    // Lines allowed: one per minute begun since the first (a slow machine may cross one).
    let most = 1 + started.elapsed().as_secs() / 60;
    let lines = |what: &str| {
        envoy
            .tollgate_log()
            .iter()
            .filter(|l| l.contains(&format!("shadow mode: would refuse {what}")))
            .count() as u64
    };
    let (quota_lines, keyless_lines) = (
        lines("quota consumer=acme plan=free"),
        lines("missing_credential"),
    );
    assert!((1..=most).contains(&quota_lines), "{quota_lines} lines");
    assert!((1..=most).contains(&keyless_lines), "{keyless_lines} lines");
    let held_back = over + keyless - quota_lines - keyless_lines;
    poll(Duration::from_secs(10), "the shadow counters", || {
        (counter(&envoy, "tollgate.requests.shadowed.quota") == over
            && counter(&envoy, "tollgate.requests.shadowed.missing_credential") == keyless
            && counter(&envoy, "tollgate.logs.shadow_suppressed") == held_back)
            .then_some(())
    });
}

/// Asks the fault-injection build to make this request's shared-data reads (`get`) or
/// writes (`set`) fail in Envoy.
const FAULT: &str = "x-tollgate-fault-injection";

#[test]
fn on_store_error_deny_answers_503_and_allow_forwards_uncounted_when_shared_data_fails() {
    // The test-only fault-injection build makes Envoy refuse the shared-data call itself
    // (InvalidMemoryAccess), so the failure goes through the real ABI and tollgate's handling
    // of the status. One worker: a trapped VM would refuse every later request (FAIL_CLOSED).
    for policy in ["deny", "allow"] {
        let envoy = Envoy::start_with(Options {
            plugin: Some(config(&format!(r#", "on_store_error": "{policy}""#))),
            wasm: Some(fault_wasm_path()),
            concurrency: 1,
            ..Options::default()
        });
        assert_eq!(envoy.get_with_key("globex-key").remaining("daily"), 999);
        // Store-error lines are bounded (one a minute per VM): each policy's first failure is
        // the one logged, so the two orders log both host calls' statuses.
        let faults = if policy == "deny" {
            ["get", "set"]
        } else {
            ["set", "get"]
        };
        for fault in faults {
            let r = envoy.get("/", &[("x-api-key", "globex-key"), (FAULT, fault)]);
            let what = format!("on_store_error={policy}, {fault} fails: {r:?}");
            assert_eq!(r.header("ratelimit"), None, "{what}");
            assert_eq!(r.header("ratelimit-policy"), None, "{what}");
            if policy == "deny" {
                assert_eq!(r.status, 503, "{what}");
                assert_eq!(
                    r.header("content-type"),
                    Some("application/problem+json"),
                    "{what}"
                );
                assert_eq!(r.header("retry-after"), Some("1"), "{what}");
                assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
                let body = r.json();
                assert_eq!(
                    body["type"], "urn:tollgate:problem:quota-unavailable",
                    "{what}"
                );
                assert_eq!(body["status"], 503, "{what}");
            } else {
                let (_, headers) = upstream_saw(&r);
                assert_eq!(
                    values(&headers, "x-tollgate-consumer"),
                    ["globex"],
                    "{what}"
                );
                assert_eq!(values(&headers, "x-tollgate-plan"), ["pro"], "{what}");
            }
        }
        let mut failures = 2;
        if policy == "deny" {
            // gRPC callers get UNAVAILABLE.
            let grpc = grpc_call(&envoy, &["x-api-key: globex-key", &format!("{FAULT}: get")]);
            assert_eq!(grpc.status, 200, "{grpc:?}");
            assert_eq!(
                grpc.header("grpc-status"),
                Some("14"),
                "UNAVAILABLE: {grpc:?}"
            );
            assert_eq!(grpc.header("retry-after"), Some("1"), "{grpc:?}");
            failures += 1;
        }
        // The failed requests counted nothing, and the VM still serves (no trap).
        assert_eq!(envoy.get_with_key("globex-key").remaining("daily"), 998);
        let (allowed, refused) = if policy == "deny" {
            (2, failures)
        } else {
            (2 + failures, 0)
        };
        poll(Duration::from_secs(10), "the store-error counters", || {
            (counter(&envoy, "tollgate.errors.store") == failures
                && counter(&envoy, "tollgate.requests.allowed") == allowed
                && counter(&envoy, "tollgate.requests.refused.store_error") == refused
                && counter(&envoy, "tollgate.plan.pro.refused.store_error") == refused
                && counter(&envoy, "tollgate.errors.cas_exhausted") == 0)
                .then_some(())
        });
        let log = envoy.log();
        let call = format!("{}_shared_data", faults[0]);
        assert!(
            log.contains(&format!("{call}: InvalidMemoryAccess (6)")),
            "the host's own status is logged for {call}:\n{log}"
        );
        assert_eq!(
            log.matches("cannot count the request").count(),
            1,
            "one line, the others held back:\n{log}"
        );
        poll(Duration::from_secs(10), "the held-back lines", || {
            (counter(&envoy, "tollgate.logs.store_error_suppressed") == failures - 1).then_some(())
        });
        assert!(!log.contains("panicked"), "{log}");
        assert!(!log.contains("Uncaught"), "a VM trapped:\n{log}");
    }
}

#[test]
fn cors_preflights_pass_without_a_credential_unless_configured_otherwise() {
    let envoy = Envoy::start(&config(""));
    let preflight = |envoy: &Envoy| {
        request(
            envoy.port,
            "OPTIONS",
            "/v1/things",
            &[
                ("origin", b"https://app.example"),
                ("access-control-request-method", b"POST"),
            ],
        )
    };
    let r = preflight(&envoy);
    let (_, headers) = upstream_saw(&r);
    assert!(values(&headers, "x-tollgate-consumer").is_empty());
    assert_eq!(r.header("ratelimit"), None, "not counted");
    // An OPTIONS that is not a preflight needs a key like any request.
    assert_eq!(
        request(envoy.port, "OPTIONS", "/v1/things", &[]).status,
        401
    );
    drop(envoy);
    let strict = Envoy::start(&config(r#", "cors_preflight": "authenticate""#));
    assert_eq!(preflight(&strict).status, 401);
}

/// A response as curl printed it (`-i`): status, headers (names lowercase), body.
struct Http2 {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Http2 {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Debug for Http2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {:?}", self.status, self.headers, self.body)
    }
}

/// An HTTP/2 gRPC call with curl (prior knowledge, no TLS).
fn grpc_call(envoy: &Envoy, headers: &[&str]) -> Http2 {
    let text = curl_grpc(envoy.port, "/demo.Greeter/SayHello", headers);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    assert!(status_line.starts_with("HTTP/2 "), "not HTTP/2: {text}");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Http2 {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Asserts a trailers-only gRPC refusal: HTTP 200, this `grpc-status` and `grpc-message`.
fn assert_grpc_refusal(r: &Http2, code: &str, message: &str) {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("grpc-status"), Some(code), "{r:?}");
    assert_eq!(r.header("grpc-message"), Some(message), "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/grpc"), "{r:?}");
    assert!(r.body.is_empty(), "trailers-only: {r:?}");
}

#[test]
fn grpc_clients_get_grpc_statuses_not_402() {
    let envoy = Envoy::start(&config(""));
    let missing = grpc_call(&envoy, &[]);
    assert_grpc_refusal(&missing, "16", "This API requires an API key.");
    assert!(missing.header("www-authenticate").is_some(), "{missing:?}");
    let unknown = grpc_call(&envoy, &["x-api-key: nobody"]);
    assert_grpc_refusal(&unknown, "16", "The API key is not valid.");
    let suspended = grpc_call(&envoy, &["x-api-key: initech-key"]);
    assert_grpc_refusal(
        &suspended,
        "7",
        "The subscription of consumer initech is suspended.",
    );
    // Spend acme's quota (2): admitted calls reach the upstream. The demo backend answers
    // JSON, not gRPC, which Envoy hands to a gRPC client as grpc-status 2 (UNKNOWN) with the
    // body as the message: the backend's echo shows tollgate named the caller.
    for remaining in [1, 0] {
        let ok = grpc_call(&envoy, &["x-api-key: acme-key"]);
        assert_eq!(ok.status, 200, "{ok:?}");
        assert_eq!(ok.header("grpc-status"), Some("2"), "{ok:?}");
        let echo = ok.header("grpc-message").unwrap_or_default();
        assert!(echo.contains("hello from the demo backend"), "{ok:?}");
        assert!(echo.contains(r#"["x-tollgate-consumer","acme"]"#), "{ok:?}");
        assert!(
            ok.header("ratelimit")
                .is_some_and(|v| v.starts_with(&format!("\"daily\";r={remaining};"))),
            "{ok:?}"
        );
    }
    let exhausted = grpc_call(&envoy, &["x-api-key: acme-key"]);
    let message = exhausted
        .header("grpc-message")
        .unwrap_or_default()
        .to_string();
    assert!(
        message.starts_with("Consumer acme has used all 2 requests of limit \"daily\" (day)"),
        "{exhausted:?}"
    );
    assert_grpc_refusal(&exhausted, "8", &message);
    assert!(
        exhausted
            .header("ratelimit")
            .is_some_and(|v| v.starts_with("\"daily\";r=0;")),
        "{exhausted:?}"
    );
    let retry: u64 = exhausted.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{exhausted:?}");
}

#[test]
fn the_upstream_learns_who_called_and_cannot_be_lied_to() {
    let envoy = Envoy::start(&config(r#", "anonymous_plan": "free""#));
    let r = envoy.get(
        "/who",
        &[
            ("x-api-key", "globex-key"),
            ("x-tollgate-consumer", "acme"),
            ("x-tollgate-consumer", "initech"),
            ("x-tollgate-plan", "enterprise"),
        ],
    );
    let (_, headers) = upstream_saw(&r);
    assert_eq!(values(&headers, "x-tollgate-consumer"), ["globex"]);
    assert_eq!(values(&headers, "x-tollgate-plan"), ["pro"]);
    // The credential is forwarded unless hide_credentials is set.
    assert_eq!(values(&headers, "x-api-key"), ["globex-key"]);
    // Anonymous callers are named so too; spoofed values are removed.
    let (_, headers) = upstream_saw(&envoy.get("/", &[("x-tollgate-consumer", "globex")]));
    assert_eq!(values(&headers, "x-tollgate-consumer"), ["anonymous"]);
    drop(envoy);
    // Configurable names; the default names are then left alone.
    let custom = Envoy::start(&config(
        r#", "consumer_header": "x-consumer", "plan_header": "x-plan""#,
    ));
    let (_, headers) =
        upstream_saw(&custom.get("/", &[("x-api-key", "acme-key"), ("x-consumer", "spoof")]));
    assert_eq!(values(&headers, "x-consumer"), ["acme"]);
    assert_eq!(values(&headers, "x-plan"), ["free"]);
    assert!(values(&headers, "x-tollgate-consumer").is_empty());
}

#[test]
fn identity_headers_and_the_policy_field_can_be_turned_off() {
    // Default: RateLimit-Policy and RateLimit are *added*: an upstream's own RateLimit stays.
    let envoy = Envoy::start(&config(""));
    let r = envoy.get("/with-ratelimit/x", &[("x-api-key", "globex-key")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(values(&r.headers, "ratelimit")[0], "\"backend\";r=7;t=30");
    let ours = values(&r.headers, "ratelimit")[1];
    assert!(ours.starts_with("\"daily\";r=999;t="), "{r:?}");
    assert_eq!(values(&r.headers, "ratelimit-policy").len(), 1, "{r:?}");
    drop(envoy);

    let lean = Envoy::start(&config(
        r#", "identity_headers": false, "ratelimit_policy": false"#,
    ));
    let r = lean.get(
        "/",
        &[("x-api-key", "globex-key"), ("x-tollgate-plan", "sent")],
    );
    let (_, headers) = upstream_saw(&r);
    assert!(
        values(&headers, "x-tollgate-consumer").is_empty(),
        "{headers:?}"
    );
    // Off names nobody, and what a client sent is still removed (tests/identity.rs).
    assert!(
        values(&headers, "x-tollgate-plan").is_empty(),
        "{headers:?}"
    );
    assert_eq!(r.header("ratelimit-policy"), None, "{r:?}");
    assert_eq!(r.remaining("daily"), 999, "a new Envoy counts afresh");
    // Refusals leave the policy out too, and still count as before.
    let spent = lean.get("/", &[("x-api-key", "acme-key")]);
    assert_eq!(spent.status, 200);
    lean.get("/", &[("x-api-key", "acme-key")]);
    let refused = lean.get("/", &[("x-api-key", "acme-key")]);
    assert_eq!(refused.status, 402, "{refused:?}");
    assert_eq!(refused.header("ratelimit-policy"), None, "{refused:?}");
    assert_eq!(refused.remaining("daily"), 0);
}

#[test]
fn hide_credentials_removes_the_key_before_the_upstream() {
    let envoy = Envoy::start(&config(r#", "hide_credentials": true"#));
    let (_, headers) =
        upstream_saw(&envoy.get("/a", &[("x-api-key", "globex-key"), ("x-other", "kept")]));
    assert!(values(&headers, "x-api-key").is_empty());
    assert_eq!(values(&headers, "x-other"), ["kept"]);
    assert_eq!(values(&headers, "x-tollgate-consumer"), ["globex"]);
    let (_, headers) = upstream_saw(&envoy.get("/b", &[("authorization", "Bearer globex-key")]));
    assert!(values(&headers, "authorization").is_empty());
    let (path, _) = upstream_saw(&envoy.get("/c?page=2&api_key=globex-key&sort=asc", &[]));
    assert_eq!(path, "/c?page=2&sort=asc");
    let (path, _) = upstream_saw(&envoy.get("/d?api_key=globex-key", &[]));
    assert_eq!(path, "/d");
    // Without the option the key goes through.
    drop(envoy);
    let plain = Envoy::start(&config(""));
    let (path, _) = upstream_saw(&plain.get("/c?api_key=globex-key", &[]));
    assert_eq!(path, "/c?api_key=globex-key");
}

#[test]
fn calendar_windows_follow_the_configured_utc_offset() {
    let envoy = Envoy::start(&config(
        r#", "usage_path": "/usage", "calendar_utc_offset": "+05:30""#,
    ));
    let body = envoy.get("/usage", &[("x-api-key", "globex-key")]).json();
    // Days and months begin at 00:00 in UTC+05:30, i.e. 18:30 UTC the day before.
    assert!(
        body["limits"][0]["reset"]
            .as_str()
            .unwrap()
            .ends_with("T18:30:00Z"),
        "{body}"
    );
    let monthly = body["limits"][1]["reset"].as_str().unwrap();
    assert!(monthly.ends_with("T18:30:00Z"), "{body}");
    // The RateLimit reset agrees: seconds to the next 18:30 UTC.
    let now = unix_now();
    let next = {
        let local = now + 19_800.0;
        (local / 86_400.0).floor() * 86_400.0 + 86_400.0 - 19_800.0
    };
    let t = envoy.get_with_key("globex-key").ratelimit()[0].2 as f64;
    assert!(
        (t - (next - now)).abs() <= 2.0,
        "t={t}, expected about {}",
        next - now
    );
}
