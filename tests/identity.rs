//! Who is calling: credential sources and their order, 401s, suspended and expired
//! subscriptions, and the anonymous plan.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tollgate_testkit::*;

/// Each consumer has a plan whose only limit is named after it, so `RateLimit-Policy` tells
/// which consumer a request was counted for.
fn config(extra: &str) -> String {
    plugin(&format!(
        r#"{{
          "credentials": [{{"header": "x-api-key"}}, {{"authorization": "Bearer"}}, {{"query": "api_key"}}],
          "plans": {{
            "alpha": {{"limits": [{{"name": "alpha", "requests": 1000, "window": "day"}}]}},
            "bravo": {{"limits": [{{"name": "bravo", "requests": 1000, "window": "day"}}]}},
            "charlie": {{"limits": [{{"name": "charlie", "requests": 1000, "window": "day"}}]}},
            "anon": {{"limits": [{{"name": "anon", "requests": 2, "window": "day"}}]}}
          }},
          "consumers": {{
            "alpha": {{"plan": "alpha", "keys": ["alpha-key"]}},
            "bravo": {{"plan": "bravo", "keys": ["bravo-key"]}},
            "charlie": {{"plan": "charlie", "keys": ["a/b c+d"]}},
            "suspended": {{"plan": "alpha", "keys": ["suspended-key"], "status": "suspended"}},
            "expired": {{"plan": "alpha", "keys": ["expired-key"], "expires_at": "2026-01-01T00:00:00Z"}},
            "renewed": {{"plan": "alpha", "keys": ["renewed-key"], "status": "active", "expires_at": "2099-01-01T00:00:00+01:00"}}
          }}
          {extra}
        }}"#
    ))
}

fn counted_as(r: &Response) -> String {
    assert_eq!(r.status, 200, "{r:?}");
    let policy = r.header("ratelimit-policy").expect("RateLimit-Policy");
    policy
        .split(';')
        .next()
        .unwrap()
        .trim_matches('"')
        .to_string()
}

#[test]
fn credential_sources_are_tried_in_configured_order() {
    let envoy = Envoy::start(&config(""));
    // Each source on its own.
    assert_eq!(
        counted_as(&envoy.get("/", &[("x-api-key", "alpha-key")])),
        "alpha"
    );
    assert_eq!(
        counted_as(&envoy.get("/", &[("X-API-KEY", "alpha-key")])),
        "alpha"
    );
    assert_eq!(
        counted_as(&envoy.get("/", &[("authorization", "Bearer bravo-key")])),
        "bravo"
    );
    assert_eq!(
        counted_as(&envoy.get("/", &[("authorization", "bearer   bravo-key")])),
        "bravo"
    );
    assert_eq!(
        counted_as(&envoy.get("/v1/x?page=2&api_key=alpha-key", &[])),
        "alpha"
    );
    // Query values are percent-decoded; `+` stays a plus.
    assert_eq!(
        counted_as(&envoy.get("/?api_key=a%2Fb%20c+d", &[])),
        "charlie"
    );
    // The first present source wins, even over a valid key further down the list...
    assert_eq!(
        counted_as(&envoy.get(
            "/?api_key=bravo-key",
            &[
                ("x-api-key", "alpha-key"),
                ("authorization", "Bearer bravo-key")
            ]
        )),
        "alpha"
    );
    assert_eq!(
        counted_as(&envoy.get(
            "/?api_key=alpha-key",
            &[("authorization", "Bearer bravo-key")]
        )),
        "bravo"
    );
    // ...and when it is wrong, the request is refused rather than retried with another source.
    let wrong_first = envoy.get(
        "/?api_key=alpha-key",
        &[
            ("x-api-key", "wrong"),
            ("authorization", "Bearer bravo-key"),
        ],
    );
    assert_eq!(wrong_first.status, 401, "{wrong_first:?}");
    // Another Authorization scheme is not this source: the next one is tried.
    assert_eq!(
        counted_as(&envoy.get(
            "/?api_key=alpha-key",
            &[("authorization", "Basic YWxhZGRpbjpvcGVu")]
        )),
        "alpha"
    );
}

#[test]
fn missing_unknown_and_malformed_credentials_get_401() {
    let envoy = Envoy::start(&config(""));
    let missing = envoy.get("/", &[]);
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("ApiKey realm=\"tollgate\", Bearer realm=\"tollgate\"")
    );
    assert_eq!(
        missing.header("content-type"),
        Some("application/problem+json")
    );
    let body = missing.json();
    assert_eq!(body["type"], "urn:tollgate:problem:missing-credential");
    assert_eq!(body["status"], 401);
    assert!(body["title"].is_string() && body["detail"].is_string());

    let cases: [&[(&str, &str)]; 5] = [
        &[("x-api-key", "not-a-key-of-anyone")],
        &[("authorization", "Bearer not-a-key-of-anyone")],
        &[("x-api-key", "")],
        &[("authorization", "Bearer")],
        &[("x-api-key", "alpha-key-with-suffix")],
    ];
    for headers in cases {
        let r = envoy.get("/", headers);
        assert_eq!(r.status, 401, "{headers:?}: {r:?}");
        assert!(r.header("www-authenticate").is_some());
        assert_eq!(r.json()["type"], "urn:tollgate:problem:invalid-credential");
        assert!(
            !r.body.contains("not-a-key-of-anyone"),
            "the key is never echoed"
        );
        assert_eq!(r.header("ratelimit"), None);
    }
    let malformed = envoy.get("/?api_key=%zz", &[]);
    assert_eq!(malformed.status, 401);
    assert!(malformed.json()["detail"]
        .as_str()
        .unwrap()
        .contains("percent-encoding"));
    assert!(
        !envoy.log().contains("not-a-key-of-anyone"),
        "the key is never logged"
    );
}

#[test]
fn suspended_and_expired_subscriptions_get_402_with_their_own_type() {
    let envoy = Envoy::start(&config(""));
    for _ in 0..2 {
        let suspended = envoy.get_with_key("suspended-key");
        assert_eq!(suspended.status, 402);
        let body = suspended.json();
        assert_eq!(body["type"], "urn:tollgate:problem:subscription-suspended");
        assert_eq!(
            (body["consumer"].as_str(), body["plan"].as_str()),
            (Some("suspended"), Some("alpha"))
        );
        assert_eq!(
            suspended.header("content-type"),
            Some("application/problem+json")
        );

        let expired = envoy.get_with_key("expired-key");
        assert_eq!(expired.status, 402);
        let body = expired.json();
        assert_eq!(body["type"], "urn:tollgate:problem:subscription-expired");
        assert_eq!(body["expired-at"], "2026-01-01T00:00:00Z");
    }
    // A subscription that expires in the future is in good standing.
    assert_eq!(counted_as(&envoy.get_with_key("renewed-key")), "alpha");
}

#[test]
fn the_anonymous_plan_counts_keyless_requests_together() {
    let envoy = Envoy::start(&config(r#", "anonymous_plan": "anon""#));
    let responses = within_one_window(86_400, 30.0, 1, |_| {
        let mut r: Vec<Response> = ["/", "/other", "/"]
            .iter()
            .map(|p| envoy.get(p, &[]))
            .collect();
        r.push(envoy.get_with_key("wrong"));
        r.push(envoy.get_with_key("alpha-key"));
        r
    });
    assert_eq!(counted_as(&responses[0]), "anon");
    assert_eq!(responses[1].remaining("anon"), 0);
    assert_eq!(responses[2].status, 402);
    assert_eq!(responses[2].json()["consumer"], "anonymous");
    // A wrong key is refused, not downgraded to anonymous; real keys are unaffected.
    assert_eq!(responses[3].status, 401);
    assert_eq!(counted_as(&responses[4]), "alpha");
}

/// What a client sends to pass for someone else.
const SPOOFED: [(&str, &str); 2] = [
    ("x-tollgate-consumer", "mallory"),
    ("x-tollgate-plan", "gold"),
];

/// The identity headers envoy/envoy.yaml's demo backend received, from its echo of the request.
fn upstream_identity(r: &Response) -> Vec<(String, String)> {
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_string(),
                h[1].as_str().unwrap().to_string(),
            )
        })
        .filter(|(name, _)| name.starts_with("x-tollgate-"))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// envoy/envoy.yaml's one gateway route, as shipped.
const DEMO_ROUTE: &str =
    "              - match: { prefix: \"/\" }\n                route: { cluster: backend }\n";

/// envoy/envoy.yaml's early strip of the identity headers, exactly as shipped.
fn demo_strip() -> String {
    let file = read_repo("envoy/envoy.yaml");
    let start = file
        .find("          early_header_mutation_extensions:\n")
        .expect("envoy/envoy.yaml strips the identity headers on arrival");
    let end = start + file[start..].find("          route_config:\n").unwrap();
    file[start..end].to_string()
}

#[test]
fn identity_headers_a_client_sends_never_reach_the_upstream_of_a_route_without_tollgate() {
    // envoy/envoy.yaml as shipped, with tollgate disabled on its route.
    let disabled = format!(
        "{DEMO_ROUTE}                typed_per_filter_config:\n                  \
         envoy.filters.http.wasm:\n                    \
         \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig\n                    \
         disabled: true\n"
    );
    let envoy = Envoy::start_with(Options {
        plugin: Some(config("")),
        replace: vec![(DEMO_ROUTE.to_string(), disabled)],
        ..Options::default()
    });
    let r = envoy.get("/x", &SPOOFED);
    assert_eq!(r.header("ratelimit"), None, "tollgate is off here: {r:?}");
    assert_eq!(upstream_identity(&r), [], "{r:?}");
    let r = envoy.get("/x", &[("x-api-key", "alpha-key"), SPOOFED[0]]);
    assert_eq!(upstream_identity(&r), [], "{r:?}");
}

#[test]
fn with_identity_headers_off_tollgate_itself_removes_what_a_client_sent() {
    // Without the example's early strip: the filter alone.
    let start = |extra: &str| {
        Envoy::start_with(Options {
            plugin: Some(config(extra)),
            replace: vec![(demo_strip(), String::new())],
            ..Options::default()
        })
    };
    let off = start(r#", "identity_headers": false, "cors_preflight": "pass""#);
    let sent = [("x-api-key", "alpha-key"), SPOOFED[0], SPOOFED[1]];
    let r = off.get("/x", &sent);
    assert_eq!(counted_as(&r), "alpha");
    assert_eq!(upstream_identity(&r), [], "{r:?}");
    // A preflight passes without a key, and without what it sent either.
    let preflight = request(
        off.port,
        "OPTIONS",
        "/x",
        &[
            ("access-control-request-method", b"GET"),
            ("x-tollgate-consumer", b"mallory"),
        ],
    );
    assert_eq!(upstream_identity(&preflight), []);
    drop(off);
    // On, the caller is named and only tollgate's values arrive.
    let on = start("");
    let r = on.get("/x", &sent);
    assert_eq!(
        upstream_identity(&r),
        pairs(&[
            ("x-tollgate-consumer", "alpha"),
            ("x-tollgate-plan", "alpha")
        ])
    );
}

#[test]
fn the_per_route_example_strips_identity_headers_on_its_public_route_and_keeps_tollgates() {
    let envoy = Envoy::start_with(Options {
        bootstrap: "envoy/per-route.yaml".into(),
        file_ports: (10100, 10101, 9911),
        ..Options::default()
    });
    // Its backend answers with what it was told (`x-backend-saw-*`, absent when told nothing).
    let public = envoy.get("/public/x", &SPOOFED);
    assert_eq!(public.status, 200, "{public:?}");
    assert_eq!(
        public.header("ratelimit"),
        None,
        "not counted: tollgate is off"
    );
    assert_eq!(public.header("x-backend-saw-consumer"), None, "{public:?}");
    assert_eq!(public.header("x-backend-saw-plan"), None, "{public:?}");
    // On the guarded routes the strip leaves tollgate's own values.
    let guarded = envoy.get(
        "/v1/things",
        &[("x-api-key", "acme-key"), SPOOFED[0], SPOOFED[1]],
    );
    assert_eq!(guarded.status, 200, "{guarded:?}");
    assert_eq!(guarded.header("x-backend-saw-consumer"), Some("acme"));
    assert_eq!(guarded.header("x-backend-saw-plan"), Some("free"));
}
