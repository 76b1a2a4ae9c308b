//! Unit tests of [`crate::verdict`] (kept apart so that the module itself reads in one go).

use super::*;
use crate::decision::Reason;
use crate::store::MemoryStore;
use std::collections::HashMap;

const NOW: i64 = 1_795_611_600; // 2026-11-25T13:00:00Z

fn config(extra: &str) -> Config {
    Config::from_json(
        format!(
            r#"{{
              "credentials": [{{"header": "x-api-key"}}, {{"authorization": "Bearer"}}, {{"query": "api_key"}}],
              "plans": {{"free": {{"limits": [{{"name": "daily", "requests": 1, "window": "day"}}]}}}},
              "consumers": {{
                "acme": {{"plan": "free", "keys": ["acme"]}},
                "initech": {{"plan": "free", "keys": ["initech"], "status": "suspended"}}
              }}
              {extra}
            }}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

fn req(headers: &[(&str, &str)]) -> impl FnMut(&str) -> Option<Vec<u8>> {
    let map: HashMap<String, Vec<u8>> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    move |name: &str| map.get(name).cloned()
}

fn get(headers: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut h: Vec<(&'static str, String)> = vec![(":method", "GET".into()), (":path", "/".into())];
    for (k, v) in headers {
        let k: &'static str = Box::leak(k.to_string().into_boxed_str());
        h.retain(|(n, _)| *n != k);
        h.push((k, v.to_string()));
    }
    h
}

/// A store with every counted consumer's record created, as a configuration load leaves it.
fn counted(config: &Config) -> MemoryStore {
    let store = MemoryStore::new();
    crate::quota::create_records(config, &store).unwrap();
    store
}

fn run<'c>(config: &'c Config, store: &MemoryStore, headers: &[(&str, &str)]) -> Verdict<'c> {
    let h = get(headers);
    let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    handle(
        config,
        &mut req(&pairs),
        NOW,
        store,
        &Memo::default(),
        &ShadowLog::default(),
    )
}

/// [`run`] for one attempt, with this memo.
fn run_with<'c>(
    config: &'c Config,
    store: &MemoryStore,
    memo: &Memo,
    headers: &[(&str, &str)],
    attempt: &Attempt,
) -> Verdict<'c> {
    let h = get(headers);
    let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    handle_with(
        config,
        &mut req(&pairs),
        NOW,
        store,
        memo,
        &ShadowLog::default(),
        attempt,
    )
}

fn forwarded<'a, 'c>(v: &'a Verdict<'c>) -> &'a Forward<'c> {
    match &v.action {
        Action::Forward(f) => f,
        other => panic!("expected forward, got {other:?}"),
    }
}

fn replied(v: &Verdict) -> Reply {
    match &v.action {
        Action::Reply(r) => r.clone(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn admitted_requests_carry_identity_and_client_copies_are_removed() {
    let c = config("");
    let store = counted(&c);
    let v = run(
        &c,
        &store,
        &[("x-api-key", "acme"), ("x-tollgate-consumer", "spoofed")],
    );
    let f = forwarded(&v);
    assert!(f.removed().is_empty(), "set replaces the client's values");
    assert_eq!(
        f.set_headers(),
        [("x-tollgate-consumer", "acme"), ("x-tollgate-plan", "free")]
    );
    assert_eq!(f.path, None);
    assert_eq!(v.metrics, [(Metric::Allowed, Some(0))]);
    assert!(f.response_headers().iter().any(|(n, _)| *n == "ratelimit"));
}

#[test]
fn hide_credentials_removes_the_source_that_was_used() {
    let c = config(r#", "hide_credentials": true"#);
    let store = counted(&c);
    let v = run(&c, &store, &[("x-api-key", "acme")]);
    assert!(forwarded(&v).removed().contains(&"x-api-key"));
    let v = run(&c, &store, &[("authorization", "Bearer initech")]);
    assert!(
        matches!(v.action, Action::Reply(_)),
        "suspended is still refused"
    );
    let c = config(r#", "hide_credentials": true, "mode": "shadow""#);
    let v = run(&c, &store, &[("authorization", "Bearer acme")]);
    assert!(forwarded(&v).removed().contains(&"authorization"));
    let v = run(&c, &store, &[(":path", "/x?a=1&api_key=acme")]);
    assert_eq!(forwarded(&v).path.as_deref(), Some(&b"/x?a=1"[..]));
}

#[test]
fn shadow_mode_forwards_what_it_would_refuse_and_says_so() {
    let c = config(r#", "mode": "shadow""#);
    let store = counted(&c);
    assert_eq!(
        run(&c, &store, &[("x-api-key", "acme")]).metrics,
        [(Metric::Allowed, Some(0))]
    );
    let over = run(&c, &store, &[("x-api-key", "acme")]);
    assert_eq!(over.metrics, [(Metric::Shadowed(Reason::Quota), Some(0))]);
    let f = forwarded(&over);
    assert!(f
        .response_headers()
        .iter()
        .any(|(n, v)| *n == "ratelimit" && v.contains("r=0")));
    assert_eq!(
        f.set_headers(),
        [("x-tollgate-consumer", "acme"), ("x-tollgate-plan", "free")]
    );
    let missing = run(&c, &store, &[]);
    assert_eq!(
        missing.metrics,
        [(Metric::Shadowed(Reason::MissingCredential), None)]
    );
    assert!(forwarded(&missing).set_headers().is_empty());
    let suspended = run(&c, &store, &[("x-api-key", "initech")]);
    assert_eq!(
        suspended.metrics,
        [(Metric::Shadowed(Reason::Suspended), Some(0))]
    );
}

use crate::store::CountingStore as Counting;

/// Sends `headers` `times` times through one memo, as one VM does; returns the verdicts
/// and how many of the requests read the store.
fn through_one_memo<'c>(
    config: &'c Config,
    headers: &[(&str, &str)],
    times: usize,
) -> (Vec<Verdict<'c>>, u32) {
    let inner = MemoryStore::new();
    crate::quota::create_records(config, &inner).unwrap();
    let store = Counting::new(&inner);
    let memo = Memo::default();
    let shadow_log = ShadowLog::default();
    let h = get(headers);
    let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let verdicts = (0..times)
        .map(|_| handle(config, &mut req(&pairs), NOW, &store, &memo, &shadow_log))
        .collect();
    (verdicts, store.gets.get())
}

#[test]
fn shadow_mode_forwards_with_identity_and_ratelimit_when_the_memo_answers() {
    let c = config(r#", "mode": "shadow""#);
    // acme's quota is 1: the first is counted, the second refused by the store (and
    // remembered), the rest answered by the memo without reading the store.
    let (verdicts, reads) = through_one_memo(&c, &[("x-api-key", "acme")], 5);
    assert_eq!(reads, 2, "requests 3 to 5 come from the memo");
    assert_eq!(verdicts[0].metrics, [(Metric::Allowed, Some(0))]);
    assert_eq!(
        verdicts[1].metrics,
        [(Metric::Shadowed(Reason::Quota), Some(0))]
    );
    for v in &verdicts[2..] {
        // Logged once; the same line is then held back (and counted).
        assert_eq!(
            v.metrics,
            [
                (Metric::ShadowLogSuppressed, None),
                (Metric::Shadowed(Reason::Quota), Some(0))
            ]
        );
    }
    for v in &verdicts[1..] {
        let f = forwarded(v);
        assert_eq!(
            f.set_headers(),
            [("x-tollgate-consumer", "acme"), ("x-tollgate-plan", "free")]
        );
        assert_eq!(
            f.response_headers(),
            [
                ("ratelimit-policy", "\"daily\";q=1;w=86400".to_string()),
                ("ratelimit", "\"daily\";r=0;t=39600".to_string())
            ]
        );
    }
    assert_eq!(
        verdicts[1].action, verdicts[4].action,
        "the memo answers as the store did"
    );
}

#[test]
fn hide_credentials_still_hides_the_key_when_the_memo_answers() {
    for (mode, refused) in [("enforce", true), ("shadow", false)] {
        let c = config(&format!(r#", "hide_credentials": true, "mode": "{mode}""#));
        // (request headers, header removed upstream, path sent upstream)
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, Option<&'a [u8]>);
        let cases: [Case; 3] = [
            (&[("x-api-key", "acme")], Some("x-api-key"), None),
            (
                &[("authorization", "Bearer acme")],
                Some("authorization"),
                None,
            ),
            (&[(":path", "/p?api_key=acme&x=1")], None, Some(b"/p?x=1")),
        ];
        for (headers, removed, path) in cases {
            let (verdicts, reads) = through_one_memo(&c, headers, 4);
            assert_eq!(
                reads, 2,
                "{mode} {headers:?}: the last two come from the memo"
            );
            for v in &verdicts[2..] {
                if refused {
                    assert_eq!(replied(v).status, 402, "{mode} {headers:?}");
                    continue;
                }
                let f = forwarded(v);
                if let Some(name) = removed {
                    assert!(f.removed().contains(&name), "{mode} {headers:?}: {f:?}");
                }
                assert_eq!(f.path.as_deref(), path, "{mode} {headers:?}");
            }
        }
    }
}

use crate::store::FailingStore as Broken;

#[test]
fn store_errors_deny_with_503_or_allow_by_policy() {
    let deny = config("");
    let headers = get(&[("x-api-key", "acme")]);
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let v = handle(
        &deny,
        &mut req(&pairs),
        NOW,
        &Broken,
        &Memo::default(),
        &ShadowLog::default(),
    );
    assert_eq!(replied(&v).status, 503);
    assert_eq!(
        v.metrics,
        [
            (Metric::StoreFailed, None),
            (Metric::Refused(Reason::StoreError), Some(0))
        ]
    );
    let allow = config(r#", "on_store_error": "allow""#);
    let v = handle(
        &allow,
        &mut req(&pairs),
        NOW,
        &Broken,
        &Memo::default(),
        &ShadowLog::default(),
    );
    let f = forwarded(&v);
    assert!(f.response_headers().is_empty());
    assert_eq!(
        f.set_headers(),
        [("x-tollgate-consumer", "acme"), ("x-tollgate-plan", "free")]
    );
    assert_eq!(
        v.metrics,
        [(Metric::StoreFailed, None), (Metric::Allowed, Some(0))]
    );
}

#[test]
fn a_remembered_refusal_is_the_refusal_rendered_afresh() {
    // The memo renders a spent consumer's refusal once and fills in the seconds: every
    // answer must equal the one a VM without memo renders (which reads shared data).
    let c = config(r#", "calendar_utc_offset": "+05:30""#);
    let store = counted(&c);
    let memo = Memo::default();
    let at = |now: i64, memo: &Memo, headers: &[(&str, &str)]| {
        let h = get(headers);
        let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        handle(
            &c,
            &mut req(&pairs),
            now,
            &store,
            memo,
            &ShadowLog::default(),
        )
    };
    let http = [("x-api-key", "acme")];
    let grpc = [("x-api-key", "acme"), ("content-type", "application/grpc")];
    assert!(matches!(at(NOW, &memo, &http).action, Action::Forward(_)));
    let mut retry_after = Vec::new();
    for now in [NOW, NOW, NOW + 7, NOW + 3599] {
        for headers in [&http[..], &grpc[..]] {
            let remembered = replied(&at(now, &memo, headers));
            let fresh = replied(&at(now, &Memo::default(), headers));
            assert_eq!(remembered, fresh, "at {now}, {headers:?}");
            if headers.len() == 1 {
                let value = remembered.headers.iter().find(|(n, _)| *n == "retry-after");
                retry_after.push(value.unwrap().1.clone());
            }
        }
    }
    // 13:00Z is 18:30 at +05:30: the day resets in 5 h 30 min.
    assert_eq!(retry_after, ["19800", "19800", "19793", "16201"]);
}

#[test]
fn a_remembered_refusal_follows_a_limit_whose_window_ended() {
    let c = Config::from_json(
        br#"{"plans": {"p": {"limits": [{"name": "minute", "requests": 1, "window": "minute"},
                                          {"name": "daily", "requests": 1, "window": "day"}]}},
             "consumers": {"a": {"plan": "p", "keys": ["a"]}}}"#,
    )
    .unwrap();
    let store = counted(&c);
    let memo = Memo::default();
    let h = get(&[("x-api-key", "a")]);
    let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let start = NOW - NOW % 60;
    assert!(matches!(
        handle(
            &c,
            &mut req(&pairs),
            start,
            &store,
            &memo,
            &ShadowLog::default()
        )
        .action,
        Action::Forward(_)
    ));
    let violated = |now: i64| {
        let r = replied(&handle(
            &c,
            &mut req(&pairs),
            now,
            &store,
            &memo,
            &ShadowLog::default(),
        ));
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        body["violated-policies"].clone()
    };
    assert_eq!(violated(start + 1), serde_json::json!(["minute", "daily"]));
    assert_eq!(violated(start + 61), serde_json::json!(["daily"]));
}

#[test]
fn cors_preflights_pass_unless_configured_to_authenticate() {
    let store = MemoryStore::new();
    crate::quota::create_records(&config(""), &store).unwrap();
    let preflight = [
        (":method", "OPTIONS"),
        ("access-control-request-method", "POST"),
    ];
    let c = config("");
    let v = run(&c, &store, &preflight);
    assert_eq!(v.metrics, [(Metric::Preflight, None)]);
    assert!(forwarded(&v).set_headers().is_empty());
    // Nobody is named, so whatever the client sent as identity is removed.
    assert_eq!(
        forwarded(&v).removed(),
        ["x-tollgate-consumer", "x-tollgate-plan"]
    );
    // A plain OPTIONS is not a preflight.
    assert_eq!(
        replied(&run(&c, &store, &[(":method", "OPTIONS")])).status,
        401
    );
    let c = config(r#", "cors_preflight": "authenticate""#);
    assert_eq!(replied(&run(&c, &store, &preflight)).status, 401);
}

#[test]
fn a_preflight_that_carries_a_key_is_an_ordinary_request_and_its_key_is_hidden() {
    // Found by the `request` fuzz target: a preflight used to be forwarded before the
    // credential was hidden. Browsers send preflights without credentials; one that has a
    // key is handled like any request, so `hide_credentials` applies and a bad key is a 401.
    let c = config(r#", "hide_credentials": true"#);
    let store = counted(&c);
    let preflight = [
        (":method", "OPTIONS"),
        ("access-control-request-method", "GET"),
    ];
    let with_key = [preflight[0], preflight[1], ("x-api-key", "acme")];
    let v = run(&c, &store, &with_key);
    assert!(forwarded(&v).removed().contains(&"x-api-key"));
    assert_eq!(v.metrics, [(Metric::Allowed, Some(0))]);
    let bad = [preflight[0], preflight[1], ("authorization", "Bearer nope")];
    assert_eq!(replied(&run(&c, &store, &bad)).status, 401);
    let query = [preflight[0], preflight[1], (":path", "/?api_key=acme")];
    assert_eq!(
        replied(&run(&c, &store, &query)).status,
        402,
        "acme's quota of 1 is spent"
    );
}

#[test]
fn grpc_requests_get_grpc_statuses() {
    let c = config("");
    let store = counted(&c);
    let grpc = ("content-type", "application/grpc+proto");
    let r = replied(&run(&c, &store, &[grpc]));
    assert_eq!(r.grpc_status, Some(16));
    assert_eq!(r.body, "This API requires an API key.");
    assert!(r.headers.iter().any(|(n, _)| *n == "www-authenticate"));
    assert!(!r.headers.iter().any(|(n, _)| *n == "content-type"));
    assert!(matches!(
        run(&c, &store, &[grpc, ("x-api-key", "acme")]).action,
        Action::Forward(_)
    ));
    let quota = replied(&run(&c, &store, &[grpc, ("x-api-key", "acme")]));
    assert_eq!(quota.grpc_status, Some(8));
    assert!(quota.headers.iter().any(|(n, _)| *n == "retry-after"));
    assert_eq!(
        replied(&run(&c, &store, &[grpc, ("x-api-key", "initech")])).grpc_status,
        Some(7)
    );
    assert_eq!(
        replied(&run(&c, &store, &[("x-api-key", "acme")])).grpc_status,
        None
    );
}

#[test]
fn the_usage_endpoint_reports_without_counting() {
    let c = config(r#", "usage_path": "/tollgate/usage""#);
    let store = counted(&c);
    let usage = [(":path", "/tollgate/usage?x=1"), ("x-api-key", "acme")];
    for _ in 0..3 {
        let r = replied(&run(&c, &store, &usage));
        assert_eq!(r.status, 200);
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["consumer"], "acme");
        assert_eq!(body["limits"][0]["used"], 0);
        assert_eq!(body["limits"][0]["remaining"], 1);
        assert_eq!(body["limits"][0]["reset"], "2026-11-26T00:00:00Z");
    }
    assert!(matches!(
        run(&c, &store, &[("x-api-key", "acme")]).action,
        Action::Forward(_)
    ));
    let r = replied(&run(&c, &store, &usage));
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (body["limits"][0]["used"].as_u64(), body["status"].as_str()),
        (Some(1), Some("active"))
    );
    assert_eq!(
        replied(&run(&c, &store, &[(":path", "/tollgate/usage")])).status,
        401
    );
    assert_eq!(
        replied(&run(
            &c,
            &store,
            &[(":path", "/tollgate/usage"), ("x-api-key", "nope")]
        ))
        .status,
        401
    );
    let post = [
        (":method", "POST"),
        (":path", "/tollgate/usage"),
        ("x-api-key", "acme"),
    ];
    assert_eq!(replied(&run(&c, &store, &post)).status, 405);
    let suspended = replied(&run(
        &c,
        &store,
        &[(":path", "/tollgate/usage"), ("x-api-key", "initech")],
    ));
    assert!(suspended.body.contains("\"status\":\"suspended\""));
}

#[test]
fn past_due_is_counted_in_grace_refused_after_and_reported_by_the_usage_endpoint() {
    let c = Config::from_json(
        br#"{"plans": {"free": {"limits": [{"name": "daily", "requests": 5, "window": "day"}],
                                 "upgrade_url": "https://example.com/upgrade"}},
             "consumers": {
               "late": {"plan": "free", "keys": ["late"], "status": "past_due",
                        "grace_until": "2026-11-25T13:00:01Z"}},
             "billing_url": "https://example.com/billing", "usage_path": "/u"}"#,
    )
    .unwrap();
    let store = counted(&c);
    let memo = Memo::default();
    let at = |now: i64, path: &str| {
        let h = get(&[("x-api-key", "late"), (":path", path)]);
        let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        handle(
            &c,
            &mut req(&pairs),
            now,
            &store,
            &memo,
            &ShadowLog::default(),
        )
    };
    let admitted = at(NOW, "/");
    assert_eq!(admitted.metrics, [(Metric::Allowed, Some(0))]);
    let usage: serde_json::Value = serde_json::from_str(&replied(&at(NOW, "/u")).body).unwrap();
    assert_eq!(
        (
            &usage["status"],
            &usage["grace_until"],
            &usage["limits"][0]["used"]
        ),
        (
            &serde_json::json!("past_due"),
            &serde_json::json!("2026-11-25T13:00:01Z"),
            &serde_json::json!(1)
        )
    );
    let refused = at(NOW + 1, "/");
    assert_eq!(
        refused.metrics,
        [(Metric::Refused(Reason::PastDue), Some(0))]
    );
    let reply = replied(&refused);
    assert_eq!(reply.status, 402);
    assert!(reply.body.contains("urn:tollgate:problem:payment-required"));
    assert!(reply.headers.contains(&(
        "link",
        "<https://example.com/billing>; rel=\"payment urn:tollgate:rel:billing\"".into()
    )));
    let usage: serde_json::Value = serde_json::from_str(&replied(&at(NOW + 1, "/u")).body).unwrap();
    assert_eq!(usage["status"], "past_due");
    assert_eq!(usage["limits"][0]["used"], 1, "the refusal counted nothing");
}

#[test]
fn a_remembered_refusal_keeps_its_upgrade_link() {
    let c = Config::from_json(
        br#"{"plans": {"free": {"limits": [{"name": "daily", "requests": 1, "window": "day"}],
                                 "upgrade_url": "https://example.com/upgrade"}},
             "consumers": {"acme": {"plan": "free", "keys": ["acme"]}}}"#,
    )
    .unwrap();
    let store = counted(&c);
    let memo = Memo::default();
    let h = get(&[("x-api-key", "acme")]);
    let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert!(matches!(
        handle(
            &c,
            &mut req(&pairs),
            NOW,
            &store,
            &memo,
            &ShadowLog::default()
        )
        .action,
        Action::Forward(_)
    ));
    for now in [NOW, NOW + 5] {
        let remembered = replied(&handle(
            &c,
            &mut req(&pairs),
            now,
            &store,
            &memo,
            &ShadowLog::default(),
        ));
        let fresh = replied(&handle(
            &c,
            &mut req(&pairs),
            now,
            &store,
            &Memo::default(),
            &ShadowLog::default(),
        ));
        assert_eq!(remembered, fresh);
        assert!(remembered.headers.contains(&(
            "link",
            "<https://example.com/upgrade>; rel=\"payment urn:tollgate:rel:upgrade\"".into()
        )));
        assert!(remembered
            .body
            .contains("\"upgrade-url\":\"https://example.com/upgrade\""));
    }
}

#[test]
fn on_store_error_local_counts_in_this_envoys_record_when_the_fleet_store_fails() {
    let config = config(r#", "store": {"rls": {"cluster": "q"}}, "on_store_error": "local""#);
    let store = counted(&config);
    crate::lease::create_leases(&config, &store).unwrap();
    let memo = Memo::default();
    let down = Attempt {
        now_ms: NOW * 1000,
        waiting_since_ms: Some(NOW * 1000),
        failed: Some("the rate limit service did not answer".into()),
        ..Attempt::default()
    };
    let decide = || run_with(&config, &store, &memo, &[("x-api-key", "acme")], &down);
    // The plan allows 1 a day: counted in this Envoy's record, with its RateLimit fields.
    let v = decide();
    let forward = forwarded(&v);
    assert_eq!(forward.caller, Some(("acme", "free")));
    assert_eq!(
        forward.rate_limit.as_ref().map(|f| f.state.as_str()),
        Some("\"daily\";r=0;t=39600")
    );
    assert_eq!(
        v.metrics,
        [(Metric::StoreFailed, None), (Metric::Allowed, Some(0))]
    );
    // Then refused for quota, from the local count — and not remembered, so that the fleet's
    // store decides again once it answers.
    let v = decide();
    assert_eq!(replied(&v).status, 402);
    assert_eq!(
        v.metrics,
        [
            (Metric::StoreFailed, None),
            (Metric::Refused(Reason::Quota), Some(0))
        ]
    );
    let acme = &config.consumers[0];
    let plan = config.plan_of(acme).unwrap();
    assert_eq!(memo.refused(acme.id, &plan.limits, NOW, 0), None);

    // Without a fleet store, counts are always local: `local` is refused, naming the field.
    let err = Config::from_json(
        br#"{"credentials": [{"header": "k"}], "plans": {"p": {"limits": []}},
             "consumers": {"c": {"plan": "p", "keys": ["x"]}}, "on_store_error": "local"}"#,
    )
    .unwrap_err();
    assert!(err.0.starts_with("on_store_error: `local`"), "{err:?}");
}

#[test]
fn a_dry_run_counts_nothing_and_refuses_what_the_body_cannot_change() {
    let config = config(
        r#", "routes": {"chat": {"llm": "openai-chat"}}, "llm": {"models": {"*": {"max_output_tokens": 10}}}"#,
    );
    let store = counted(&config);
    let memo = Memo::default();
    let attempt = |dry_run: bool| Attempt {
        now_ms: NOW * 1000,
        price: crate::decision::Price {
            route: config.routes.find(b"chat").map(|(i, _)| i),
            tokens: None,
        },
        dry_run,
        ..Attempt::default()
    };
    let decide = |a: &Attempt| run_with(&config, &store, &memo, &[("x-api-key", "acme")], a);
    // Twice in a dry run: admitted, nothing taken, no charge to settle.
    for _ in 0..2 {
        let v = decide(&attempt(true));
        let f = forwarded(&v);
        assert_eq!(f.caller, Some(("acme", "free")));
        assert!(v.metered.crossings.is_empty());
    }
    // The real decision takes the one request of the day; a dry run now refuses.
    let v = decide(&attempt(false));
    assert!(
        forwarded(&v).charged.is_some(),
        "a priced route's request has a charge"
    );
    let refused = decide(&attempt(true));
    assert_eq!(replied(&refused).status, 402);
}

#[test]
fn a_dry_run_during_a_store_outage_only_looks_at_this_envoys_record() {
    let config = config(r#", "store": {"rls": {"cluster": "q"}}, "on_store_error": "local""#);
    let store = counted(&config);
    crate::lease::create_leases(&config, &store).unwrap();
    let memo = Memo::default();
    let down = |dry_run: bool| Attempt {
        now_ms: NOW * 1000,
        dry_run,
        failed: Some("the rate limit service did not answer".into()),
        ..Attempt::default()
    };
    let decide =
        |attempt: &Attempt| run_with(&config, &store, &memo, &[("x-api-key", "acme")], attempt);
    // The plan allows 1 a day: dry runs pass and take nothing...
    for _ in 0..3 {
        let v = decide(&down(true));
        assert_eq!(forwarded(&v).caller, Some(("acme", "free")));
    }
    // ... so the request itself is still admitted, then the next one's dry run refuses.
    forwarded(&decide(&down(false)));
    assert_eq!(replied(&decide(&down(true))).status, 402);
}

#[test]
fn before_the_first_snapshot_an_unknown_key_is_unavailable_not_invalid() {
    let mut c = config(r#", "usage_path": "/usage", "on_store_error": "allow""#);
    c.awaiting_snapshot = Some(10);
    let store = counted(&c);
    let unknown = run(&c, &store, &[("x-api-key", "mallory")]);
    let reply = replied(&unknown);
    assert_eq!(reply.status, 503);
    assert!(reply.headers.contains(&("retry-after", "10".into())));
    assert!(
        reply
            .body
            .contains("urn:tollgate:problem:quota-unavailable")
            && reply.body.contains(r#""retry-after":10"#),
        "{}",
        reply.body
    );
    assert!(!reply.headers.iter().any(|(n, _)| *n == "www-authenticate"));
    assert_eq!(
        unknown.metrics,
        [(Metric::Refused(Reason::EntitlementsUnavailable), None)],
        "not a store error: on_store_error does not forward it"
    );
    let usage = run(&c, &store, &[(":path", "/usage"), ("x-api-key", "mallory")]);
    assert_eq!(replied(&usage).status, 503);
    // The configuration's own consumers serve; what no snapshot can change is answered as ever.
    assert!(matches!(
        run(&c, &store, &[("x-api-key", "acme")]).action,
        Action::Forward(_)
    ));
    assert_eq!(replied(&run(&c, &store, &[])).status, 401);
    assert_eq!(
        replied(&run(&c, &store, &[(":path", "/?api_key=%zz")])).status,
        401
    );
    let grpc = run(
        &c,
        &store,
        &[
            ("x-api-key", "mallory"),
            ("content-type", "application/grpc"),
        ],
    );
    assert_eq!(replied(&grpc).grpc_status, Some(14));
    // Shadow mode refuses nothing, this included.
    let mut c = config(r#", "mode": "shadow""#);
    c.awaiting_snapshot = Some(10);
    let v = run(&c, &store, &[("x-api-key", "mallory")]);
    assert!(forwarded(&v).set_headers().is_empty());
    assert_eq!(
        v.metrics,
        [(Metric::Shadowed(Reason::EntitlementsUnavailable), None)]
    );
    // Without the flag (a snapshot applied, or until_first_snapshot static): 401.
    c.awaiting_snapshot = None;
    assert_eq!(
        run(&c, &store, &[("x-api-key", "mallory")]).metrics,
        [(Metric::Shadowed(Reason::InvalidCredential), None)]
    );
}

#[test]
fn with_identity_headers_off_a_clients_identity_headers_are_still_removed() {
    let c = config(r#", "identity_headers": false, "plan_header": "x-plan", "mode": "shadow""#);
    let store = counted(&c);
    for headers in [
        &[("x-api-key", "acme"), ("x-tollgate-consumer", "mallory")][..],
        &[("x-api-key", "nobody")],
        &[("x-api-key", "initech")],
        &[],
    ] {
        let v = run(&c, &store, headers);
        let f = forwarded(&v);
        assert!(f.set_headers().is_empty(), "{headers:?}: nobody is named");
        assert_eq!(
            f.removed(),
            ["x-tollgate-consumer", "x-plan"],
            "{headers:?}"
        );
    }
}

mod payments {
    use super::*;
    use crate::payments::{claim, mark, read, stale_ms, Claimed, State, PAYMENT_SIGNATURE};
    use crate::x402::{self, Authorization, ExactPayload};

    const ASSET: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
    const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";

    fn config() -> Config {
        Config::from_json(serde_json::to_string(&config_json()).unwrap().as_bytes()).unwrap()
    }

    /// [`config`] as JSON (compact when re-serialised), for variants of it.
    fn config_json() -> serde_json::Value {
        let json = format!(
            r#"{{
              "credentials": [{{"header": "x-api-key"}}],
              "plans": {{"metered": {{"limits": [{{"name": "daily", "requests": 1, "window": "day", "status": 429}},
                                                 {{"name": "burst", "requests": 3, "window": "1h"}}],
                                      "credits": ["daily"]}},
                         "free": {{"limits": [{{"name": "daily", "requests": 1, "window": "day"}}]}}}},
              "consumers": {{"acme": {{"plan": "metered", "keys": ["acme"]}},
                             "initech": {{"plan": "metered", "keys": ["initech"], "status": "suspended"}},
                             "hooli": {{"plan": "free", "keys": ["hooli"]}}}},
              "payments": {{
                "facilitator": {{"cluster": "facilitator", "url": "http://facilitator/x402"}},
                "resource": {{"url": "https://api.example.com/"}},
                "packs": [{{"name": "ten", "credits": 10, "network": "eip155:84532", "v1_network": "base-sepolia",
                            "asset": "{ASSET}", "amount": "10000", "pay_to": "{PAY_TO}",
                            "extra": {{"name": "USDC", "version": "2"}}}}]
              }}
            }}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    fn payment(config: &Config, value: &str, nonce: char) -> String {
        payment_until(config, value, nonce, NOW + 60)
    }

    fn payment_until(config: &Config, value: &str, nonce: char, before: i64) -> String {
        payment_with(config, value, &nonce.to_string().repeat(64), before)
    }

    fn payment_with(config: &Config, value: &str, nonce: &str, before: i64) -> String {
        x402::encode(&x402::PaymentPayload {
            x402_version: 2,
            resource: None,
            accepted: config.payments.as_ref().unwrap().packs[0].offer.clone(),
            payload: ExactPayload {
                signature: format!("0x{}", "ab".repeat(65)),
                authorization: Authorization {
                    from: format!("0x{}", "1".repeat(40)),
                    to: PAY_TO.into(),
                    value: value.into(),
                    valid_after: "0".into(),
                    valid_before: before.to_string(),
                    nonce: format!("0x{nonce}"),
                },
            },
        })
    }

    fn reply(v: Verdict) -> Reply {
        match v.action {
            Action::Reply(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn header<'r>(reply: &'r Reply, name: &str) -> Option<&'r str> {
        reply
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn store_for(config: &Config) -> MemoryStore {
        let store = MemoryStore::new();
        crate::counters::create_counters(config, &store).unwrap();
        store
    }

    #[test]
    fn a_refusal_credits_would_cure_offers_them_and_is_a_402() {
        let config = config();
        let store = store_for(&config);
        assert!(matches!(
            run(&config, &store, &[("x-api-key", "acme")]).action,
            Action::Forward(_)
        ));
        let refused = reply(run(&config, &store, &[("x-api-key", "acme")]));
        // The limit says 429; an offer of credits makes it a 402.
        assert_eq!(refused.status, 402);
        let offers: x402::PaymentRequired = x402::decode(
            header(&refused, "payment-required").unwrap().as_bytes(),
            "t",
        )
        .unwrap();
        assert_eq!(offers.x402_version, 2);
        assert_eq!(offers.accepts.len(), 1);
        assert_eq!(offers.accepts[0].amount, "10000");
        assert_eq!(offers.resource.url, "https://api.example.com/");
        let body: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
        assert_eq!(body["x402Version"], 1);
        assert_eq!(body["accepts"][0]["network"], "base-sepolia");
        assert_eq!(body["accepts"][0]["maxAmountRequired"], "10000");
        assert_eq!(header(&refused, "cache-control"), Some("no-store"));
        // A plan without credits offers nothing.
        run(&config, &store, &[("x-api-key", "hooli")]);
        let plain = reply(run(&config, &store, &[("x-api-key", "hooli")]));
        assert!(header(&plain, "payment-required").is_none());
        assert!(!plain.body.contains("accepts"));
    }

    #[test]
    fn in_fleet_mode_a_payment_goes_to_the_root_unclaimed_except_where_credits_cannot_pay() {
        let mut json = config_json();
        json["store"] = serde_json::json!({"rls": {"cluster": "quotad"}});
        json["routes"] =
            serde_json::json!({"metered-route": {"cost_headers": {"credits": "x-cost"}}});
        let config = Config::from_json(json.to_string().as_bytes()).unwrap();
        let store = store_for(&config);
        let pay = payment(&config, "10000", '1');
        let headers = [("x-api-key", "acme"), (PAYMENT_SIGNATURE, pay.as_str())];
        // Claimed by the root in the store, not here: nothing in shared data, verified after.
        for _ in 0..2 {
            match run(&config, &store, &headers).action {
                Action::Pay(p) => assert!(p.remote && p.verify),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            crate::payments::state_of(
                &store,
                &read(
                    config.payments.as_ref().unwrap(),
                    PAYMENT_SIGNATURE,
                    pay.as_bytes(),
                    NOW
                )
                .unwrap()
                .replay
            ),
            None
        );
        // On a route whose cost is settled from the response, credits cannot pay in fleet mode:
        // the payment is never claimed there, only looked up (its settlement may be unknown);
        // with nothing under way it is not taken (and not forwarded).
        let attempt = Attempt {
            now_ms: NOW * 1000,
            price: crate::decision::Price {
                route: Some(0),
                tokens: None,
            },
            ..Attempt::default()
        };
        let verdict = run_with(&config, &store, &Memo::default(), &headers, &attempt);
        match verdict.action {
            Action::Pay(p) => assert!(!p.look.is_empty() && !p.verify),
            other => panic!("{other:?}"),
        }
        let looked = Attempt {
            looked: true,
            ..attempt
        };
        let verdict = run_with(&config, &store, &Memo::default(), &headers, &looked);
        assert!(
            !matches!(verdict.action, Action::Pay(_)),
            "{:?}",
            verdict.action
        );
    }

    #[test]
    fn in_fleet_mode_a_payment_this_envoy_would_turn_away_is_looked_up_in_the_store_first() {
        let mut json = config_json();
        json["store"] = serde_json::json!({"rls": {"cluster": "quotad"}});
        let config = Config::from_json(json.to_string().as_bytes()).unwrap();
        let store = store_for(&config);
        let pay = payment(&config, "10000", '2');
        let look_of = |key: &str, payment: &str, attempt: &Attempt| {
            let headers = [("x-api-key", key), (PAYMENT_SIGNATURE, payment)];
            match run_with(&config, &store, &Memo::default(), &headers, attempt).action {
                Action::Pay(p) => Some((p.look.len(), p.readable, p.remote, p.verify)),
                _ => None,
            }
        };
        let first = Attempt {
            now_ms: NOW * 1000,
            ..Attempt::default()
        };
        // A plan without credits, a suspended consumer: looked up (one key: an x402 v2
        // payment names its network and asset), readable.
        assert_eq!(look_of("hooli", &pay, &first), Some((1, true, true, false)));
        assert_eq!(
            look_of("initech", &pay, &first),
            Some((1, true, true, false))
        );
        // A payment that matches no pack: looked up too, unreadable (409 if a claim is under
        // way, its refusal otherwise).
        let short = payment(&config, "1", '3');
        assert_eq!(
            look_of("acme", &short, &first),
            Some((1, false, true, false))
        );
        // Once looked up (nothing under way), decided as local mode would with no claim.
        let looked = Attempt {
            looked: true,
            ..first.clone()
        };
        assert_eq!(look_of("hooli", &pay, &looked), None);
        assert_eq!(look_of("initech", &pay, &looked), None);
        let refused = run_with(
            &config,
            &store,
            &Memo::default(),
            &[("x-api-key", "acme"), (PAYMENT_SIGNATURE, short.as_str())],
            &looked,
        );
        assert_eq!(reply(refused).status, 402);
        // A fresh, matching payment is claimed directly: no look.
        assert_eq!(look_of("acme", &pay, &first), Some((0, true, true, true)));
    }

    #[test]
    fn a_payment_is_claimed_once_and_held_for_its_settlement() {
        let config = config();
        let store = store_for(&config);
        let pay = payment(&config, "10000", '1');
        let headers = [("x-api-key", "acme"), (PAYMENT_SIGNATURE, pay.as_str())];
        match run(&config, &store, &headers).action {
            Action::Pay(p) => assert!(p.verify && p.presented.pack == 0),
            other => panic!("{other:?}"),
        }
        // A copy while it is settled: 503, never a second call.
        let busy = reply(run(&config, &store, &headers));
        assert_eq!(busy.status, 503);
        assert_eq!(header(&busy, "retry-after"), Some("1"));
        assert!(header(&busy, "payment-required").is_none());
        // Another consumer presenting it: refused, with the offers.
        let p = config.payments.as_ref().unwrap();
        let presented = read(p, PAYMENT_SIGNATURE, pay.as_bytes(), NOW).unwrap();
        mark(&store, &presented.replay, Some(State::Settled), NOW * 1000).unwrap();
        // Settled: a replay is decided as if it carried nothing (credits nothing).
        assert!(matches!(
            run(&config, &store, &headers).action,
            Action::Forward(_)
        ));
        assert_eq!(reply(run(&config, &store, &headers)).status, 402);
        assert_eq!(
            claim(&store, &presented, "acme", NOW * 1000, stale_ms(p)).unwrap(),
            Claimed::Settled
        );
    }

    #[test]
    fn an_unknown_settlement_is_decided_by_its_claim_whatever_changed_since() {
        let config = config();
        let store = store_for(&config);
        let pay = payment(&config, "10000", '7');
        let headers = [("x-api-key", "acme"), (PAYMENT_SIGNATURE, pay.as_str())];
        assert!(matches!(
            run(&config, &store, &headers).action,
            Action::Pay(_)
        ));
        let p = config.payments.as_ref().unwrap();
        let presented = read(p, PAYMENT_SIGNATURE, pay.as_bytes(), NOW).unwrap();
        mark(&store, &presented.replay, Some(State::Unknown), NOW * 1000).unwrap();
        // Then acme is suspended, and its plan sells no credits any more: its retry is still
        // settled again (the money may have moved), never a fresh 402.
        let mut json = config_json();
        json["consumers"]["acme"]["plan"] = "free".into();
        json["consumers"]["acme"]["status"] = "suspended".into();
        let changed = Config::from_json(json.to_string().as_bytes()).unwrap();
        assert!(changed
            .plans
            .iter()
            .all(|p| p.name != "free" || p.credits.is_empty()));
        match run(&changed, &store, &headers).action {
            Action::Pay(p) => assert!(!p.verify, "a retry settles, never verifies again"),
            other => panic!("{other:?}"),
        }
        mark(&store, &presented.replay, Some(State::Unknown), NOW * 1000).unwrap();
        // With its pack gone (another amount), it cannot be settled here: 409, for the operator.
        let mut json = config_json();
        json["payments"]["packs"][0]["amount"] = "20000".into();
        let repriced = Config::from_json(json.to_string().as_bytes()).unwrap();
        let unresolved = reply(run(&repriced, &store, &headers));
        assert_eq!(unresolved.status, 409, "{}", unresolved.body);
        assert!(unresolved.body.contains("payment-unresolved"));
        assert!(header(&unresolved, "payment-required").is_none());
        // A payment nothing happened to is refused as before under the new offer.
        let fresh = payment(&config, "10000", '8');
        let refused = reply(run(
            &repriced,
            &store,
            &[("x-api-key", "acme"), (PAYMENT_SIGNATURE, fresh.as_str())],
        ));
        assert_eq!(refused.status, 402);
    }

    #[test]
    fn a_bad_payment_is_answered_before_any_claim() {
        let config = config();
        let store = store_for(&config);
        let malformed = reply(run(
            &config,
            &store,
            &[("x-api-key", "acme"), (PAYMENT_SIGNATURE, "%%%")],
        ));
        assert_eq!(malformed.status, 400);
        assert!(malformed.body.contains("payment-malformed"));
        let cheap = payment(&config, "1", '2');
        let refused = reply(run(
            &config,
            &store,
            &[("x-api-key", "acme"), (PAYMENT_SIGNATURE, cheap.as_str())],
        ));
        assert_eq!(refused.status, 402);
        assert!(refused.body.contains("payment-refused"));
        let offers: x402::PaymentRequired = x402::decode(
            header(&refused, "payment-required").unwrap().as_bytes(),
            "t",
        )
        .unwrap();
        assert!(offers.error.unwrap().contains("amount"));
        // Nothing was claimed: the shards hold no claim.
        for i in 0..crate::counters::PAYMENT_SHARDS {
            let key = crate::counters::payment_shard_key(i);
            assert_eq!(store.value(&key).unwrap(), b"[]");
        }
        // A consumer whose plan sells no credits: the payment is not looked at.
        let pay = payment(&config, "10000", '3');
        let v = run(
            &config,
            &store,
            &[("x-api-key", "hooli"), (PAYMENT_SIGNATURE, pay.as_str())],
        );
        assert!(matches!(v.action, Action::Forward(_)));
    }

    #[test]
    fn a_paid_request_is_decided_without_its_payment() {
        let config = config();
        let store = store_for(&config);
        let pay = payment(&config, "10000", '4');
        let attempt = Attempt {
            now_ms: NOW * 1000,
            paid: Some(("payment-response", "x".into())),
            ..Attempt::default()
        };
        let headers = [("x-api-key", "acme"), (PAYMENT_SIGNATURE, pay.as_str())];
        let v = run_with(&config, &store, &Memo::default(), &headers, &attempt);
        assert!(matches!(v.action, Action::Forward(_)));
    }

    #[test]
    fn an_expired_payment_is_refused_unless_its_settlement_is_under_way_or_unknown() {
        let config = config();
        let store = store_for(&config);
        let p = config.payments.as_ref().unwrap();
        let late = payment_until(&config, "10000", '5', NOW + 2);
        let headers = [("x-api-key", "acme"), (PAYMENT_SIGNATURE, late.as_str())];
        let refused = reply(run(&config, &store, &headers));
        assert_eq!(refused.status, 402);
        assert!(refused.body.contains("expired"));
        // The same payment, whose settlement's outcome became unknown before it expired: its
        // retry settles again, never a fresh 402.
        let presented = read(p, PAYMENT_SIGNATURE, late.as_bytes(), NOW - 100).unwrap();
        assert_eq!(
            claim(&store, &presented, "acme", (NOW - 100) * 1000, stale_ms(p)).unwrap(),
            Claimed::Fresh
        );
        mark(
            &store,
            &presented.replay,
            Some(State::Unknown),
            (NOW - 99) * 1000,
        )
        .unwrap();
        match run(&config, &store, &headers).action {
            Action::Pay(pay) => assert!(!pay.verify),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_payment_that_would_not_let_the_request_through_is_not_taken() {
        let config = config();
        let store = store_for(&config);
        // Suspended: refused as usual, nothing claimed.
        let pay = payment(&config, "10000", '6');
        let v = run(
            &config,
            &store,
            &[("x-api-key", "initech"), (PAYMENT_SIGNATURE, pay.as_str())],
        );
        assert_eq!(reply(v).status, 402);
        // The burst (which credits do not stand in for) spent: refused as usual.
        let acme = config.consumer_for_key(b"acme").unwrap();
        crate::quota::credit(&store, &acme.store_key, 10, "0000", NOW).unwrap();
        for _ in 0..3 {
            assert!(matches!(
                run(&config, &store, &[("x-api-key", "acme")]).action,
                Action::Forward(_)
            ));
        }
        let v = run(
            &config,
            &store,
            &[("x-api-key", "acme"), (PAYMENT_SIGNATURE, pay.as_str())],
        );
        let refused = reply(v);
        // Both limits violated: the daily one (429) resets last, and binds.
        assert_eq!(refused.status, 429);
        assert!(refused.body.contains("quota-exceeded") && refused.body.contains("burst"));
        assert!(
            header(&refused, "payment-required").is_none(),
            "credits would not cure it"
        );
        for i in 0..crate::counters::PAYMENT_SHARDS {
            let key = crate::counters::payment_shard_key(i);
            assert_eq!(store.value(&key).unwrap(), b"[]");
        }
    }

    #[test]
    fn a_consumer_with_too_many_open_claims_waits() {
        let config = config();
        let store = store_for(&config);
        let mut answers = Vec::new();
        for n in 0..40 {
            let pay = payment_with(&config, "10000", &format!("{n:064x}"), NOW + 60);
            let v = run(
                &config,
                &store,
                &[("x-api-key", "acme"), (PAYMENT_SIGNATURE, pay.as_str())],
            );
            answers.push(match v.action {
                Action::Pay(_) => 0,
                Action::Reply(r) => {
                    assert_eq!((r.status, header(&r, "retry-after")), (503, Some("60")));
                    1
                }
                other => panic!("{other:?}"),
            });
        }
        let held: usize = answers.iter().sum();
        assert!(
            held > 0,
            "40 open payments over 16 shards of 2: some must wait"
        );
        assert!(40 - held <= 32);
    }

    fn at(ms: i64) -> Attempt {
        Attempt {
            now_ms: ms,
            ..Attempt::default()
        }
    }

    /// Found by the second review: a client gone during /settle left the claim SETTLING, kept
    /// only until its authorization expired; the same payment two minutes later was verified
    /// afresh or refused with fresh offers, although the money may have moved.
    #[test]
    fn an_abandoned_settlement_is_never_a_fresh_402_later() {
        let config = config();
        let store = store_for(&config);
        let p = config.payments.as_ref().unwrap();
        let pay = payment(&config, "10000", '7');
        let headers = [("x-api-key", "acme"), (PAYMENT_SIGNATURE, pay.as_str())];
        assert!(matches!(run(&config, &store, &headers).action, Action::Pay(ref p) if p.verify));
        let presented = read(p, PAYMENT_SIGNATURE, pay.as_bytes(), NOW).unwrap();
        mark(
            &store,
            &presented.replay,
            Some(State::Settling),
            NOW * 1000 + 500,
        )
        .unwrap();
        let later = (NOW + 121) * 1000;
        // Another write of the shard (it prunes expired claims) comes first.
        let neighbour = format!("{}{}", &presented.replay[..2], "f".repeat(30));
        mark(&store, &neighbour, None, later).unwrap();
        let v = run_with(&config, &store, &Memo::default(), &headers, &at(later));
        match v.action {
            Action::Pay(pay) => assert!(!pay.verify, "settled again, never verified as new"),
            other => panic!("{other:?}"),
        }
    }
}
