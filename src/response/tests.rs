//! Unit tests of [`crate::response`] (kept apart so that the module itself reads in one go).

use super::*;
use crate::admission::decide;
use crate::credentials::{Credential, Presented};
use crate::decision::Decision;
use crate::memo::Memo;
use crate::store::MemoryStore;
use serde_json::Value;

const CONFIG: &str = r#"{
  "credentials": [{"header": "x-api-key"}, {"authorization": "Bearer"}],
  "plans": {
    "free": { "limits": [ {"name": "daily", "requests": 3, "window": "day"},
                          {"name": "burst", "requests": 1, "window": "1s", "status": 429} ] }
  },
  "consumers": {
    "acme": { "plan": "free", "keys": ["acme"] },
    "initech": { "plan": "free", "keys": ["initech"], "status": "suspended" },
    "globex": { "plan": "free", "keys": ["globex"], "expires_at": "2026-01-01T00:00:00Z" }
  }
}"#;
// 2026-11-25T13:00:00Z
const NOW: i64 = 1_795_611_600;

fn key(k: &str) -> Credential {
    Credential::Key(Presented {
        key: k.as_bytes().to_vec(),
        source: 0,
    })
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply
        .headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

fn deny(config: &Config, store: &MemoryStore, credential: Credential, now: i64) -> Reply {
    match decide(config, credential, now, store, &Memo::default()) {
        Decision::Deny(d) => refusal(config, &d, now, false),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn allowed_requests_get_ratelimit_fields() {
    let config = Config::from_json(CONFIG.as_bytes()).unwrap();
    let store = MemoryStore::new();
    crate::quota::create_records(&config, &store).unwrap();
    let Decision::Allow { caller, usages, .. } =
        decide(&config, key("acme"), NOW, &store, &Memo::default())
    else {
        panic!()
    };
    let headers = RateLimitFields {
        policy: Some(rate_limit_policy(caller.plan, &usages).into()),
        state: rate_limit_state(caller.plan, &usages, NOW),
    }
    .headers();
    assert_eq!(
        headers,
        vec![
            (
                "ratelimit-policy",
                "\"daily\";q=3;w=86400, \"burst\";q=1;w=1".to_string()
            ),
            (
                "ratelimit",
                "\"daily\";r=2;t=39600, \"burst\";r=0;t=1".to_string()
            ),
        ]
    );
}

#[test]
fn quota_exceeded_is_problem_json_with_the_binding_limit() {
    let config = Config::from_json(CONFIG.as_bytes()).unwrap();
    let store = MemoryStore::new();
    crate::quota::create_records(&config, &store).unwrap();
    assert!(matches!(
        decide(&config, key("acme"), NOW, &store, &Memo::default()),
        Decision::Allow { .. }
    ));
    // Same second: only the burst limit is exhausted -> its status 429, Retry-After 1.
    let reply = deny(&config, &store, key("acme"), NOW);
    assert_eq!(reply.status, 429);
    assert_eq!(header(&reply, "retry-after"), Some("1"));
    assert_eq!(header(&reply, "content-type"), Some(PROBLEM_JSON));
    assert_eq!(
        header(&reply, "ratelimit"),
        Some("\"daily\";r=2;t=39600, \"burst\";r=0;t=1")
    );
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["type"], QUOTA_EXCEEDED);
    assert_eq!(body["status"], 429);
    assert_eq!(body["violated-policies"], serde_json::json!(["burst"]));
    assert_eq!(body["consumer"], "acme");
    assert_eq!(body["plan"], "free");
    assert_eq!(body["reset"], "2026-11-25T13:00:01Z");
    assert_eq!(body["retry-after"], 1);
    // Spend the daily quota: both limits violated, daily resets last -> 402, Retry-After to midnight.
    assert!(matches!(
        decide(&config, key("acme"), NOW + 1, &store, &Memo::default()),
        Decision::Allow { .. }
    ));
    assert!(matches!(
        decide(&config, key("acme"), NOW + 2, &store, &Memo::default()),
        Decision::Allow { .. }
    ));
    let reply = deny(&config, &store, key("acme"), NOW + 2);
    assert_eq!(reply.status, 402);
    assert_eq!(header(&reply, "retry-after"), Some("39598"));
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        body["violated-policies"],
        serde_json::json!(["daily", "burst"])
    );
    assert_eq!(body["reset"], "2026-11-26T00:00:00Z");
    assert!(body["detail"].as_str().unwrap().contains("\"daily\" (day)"));
}

#[test]
fn decimals_are_written_as_core_fmt_writes_them() {
    let mut cases: Vec<u64> = vec![
        0,
        1,
        9,
        10,
        11,
        99,
        100,
        101,
        999,
        1000,
        u64::MAX,
        u64::MAX - 1,
    ];
    cases.extend((0..64).map(|bit| 1u64 << bit));
    cases.extend((1..20).map(|digits| 10u64.pow(digits) - 1));
    cases.extend((0..19).map(|digits| 10u64.pow(digits)));
    for n in cases {
        let mut out = b"x".to_vec();
        push_decimal(&mut out, n);
        assert_eq!(String::from_utf8(out).unwrap(), format!("x{n}"));
    }
}

#[test]
fn problem_documents_escape_what_they_carry() {
    let mut p = Problem::new(EXPIRED, "t", 402, "a\"b\\c\nd\u{1}é".into());
    p.violated_policies = Some(vec!["x", "y"]);
    let body = to_json(&p);
    assert_eq!(
        body,
        r#"{"type":"urn:tollgate:problem:subscription-expired","title":"t","status":402,"detail":"a\"b\\c\nd\u0001é","violated-policies":["x","y"]}"#
    );
    let parsed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(parsed["detail"], "a\"b\\c\nd\u{1}é");
}

#[test]
fn credential_and_standing_refusals() {
    let config = Config::from_json(CONFIG.as_bytes()).unwrap();
    let store = MemoryStore::new();
    crate::quota::create_records(&config, &store).unwrap();
    let cases = [
        (Credential::Missing, 401, MISSING_CREDENTIAL),
        (Credential::Malformed("x"), 401, INVALID_CREDENTIAL),
        (key("secret-nobody-has"), 401, INVALID_CREDENTIAL),
        (key("initech"), 402, SUSPENDED),
        (key("globex"), 402, EXPIRED),
    ];
    for (credential, status, kind) in cases {
        let reply = deny(&config, &store, credential, NOW);
        assert_eq!(reply.status, status);
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            (body["type"].as_str(), body["status"].as_u64()),
            (Some(kind), Some(status.into()))
        );
        assert!(body["title"].is_string() && body["detail"].is_string());
        assert!(
            !reply.body.contains("secret-nobody-has"),
            "never echo a key"
        );
        assert_eq!(header(&reply, "www-authenticate").is_some(), status == 401);
        assert_eq!(
            header(&reply, "ratelimit"),
            None,
            "not counted, no RateLimit fields"
        );
    }
    let expired = deny(&config, &store, key("globex"), NOW);
    let body: Value = serde_json::from_str(&expired.body).unwrap();
    assert_eq!(body["expired-at"], "2026-01-01T00:00:00Z");
    assert_eq!(body["consumer"], "globex");
}

const REMEDIES: &str = r#"{
  "plans": {
    "free": { "limits": [ {"name": "daily", "requests": 1, "window": "day"} ],
              "upgrade_url": "https://example.com/upgrade?plan=free" },
    "bare": { "limits": [ {"name": "daily", "requests": 1, "window": "day"} ] }
  },
  "consumers": {
    "acme":    { "plan": "free", "keys": ["acme"] },
    "bob":     { "plan": "bare", "keys": ["bob"] },
    "initech": { "plan": "free", "keys": ["initech"], "status": "suspended" },
    "globex":  { "plan": "free", "keys": ["globex"], "expires_at": "2026-01-01T00:00:00Z",
                 "billing_url": "https://billing.example.com/globex" },
    "stark":   { "plan": "free", "keys": ["stark"], "status": "past_due",
                 "grace_until": "2026-11-25T12:00:00Z" },
    "wayne":   { "plan": "free", "keys": ["wayne"], "status": "past_due" }
  },
  "billing_url": "https://example.com/billing"
}"#;

#[test]
fn standing_refusals_carry_the_billing_page_consumer_first() {
    let config = Config::from_json(REMEDIES.as_bytes()).unwrap();
    let store = MemoryStore::new();
    crate::quota::create_records(&config, &store).unwrap();
    let cases = [
        ("initech", SUSPENDED, "https://example.com/billing"),
        ("globex", EXPIRED, "https://billing.example.com/globex"),
        ("stark", PAYMENT_REQUIRED, "https://example.com/billing"),
        ("wayne", PAYMENT_REQUIRED, "https://example.com/billing"),
    ];
    for (who, kind, url) in cases {
        let reply = deny(&config, &store, key(who), NOW);
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!((reply.status, body["type"].as_str()), (402, Some(kind)));
        assert_eq!(body["billing-url"], url, "{who}");
        assert_eq!(
            header(&reply, "link"),
            Some(format!("<{url}>; rel=\"payment urn:tollgate:rel:billing\"").as_str())
        );
        assert!(body.get("upgrade-url").is_none(), "not a quota refusal");
        // gRPC: the same Link as metadata, PERMISSION_DENIED like the other standings.
        let Decision::Deny(d) = decide(&config, key(who), NOW, &store, &Memo::default()) else {
            panic!()
        };
        let grpc = refusal(&config, &d, NOW, true);
        assert_eq!(grpc.grpc_status, Some(grpc::PERMISSION_DENIED));
        assert_eq!(header(&grpc, "link"), header(&reply, "link"));
    }
    let stark: Value =
        serde_json::from_str(&deny(&config, &store, key("stark"), NOW).body).unwrap();
    assert_eq!(stark["grace-until"], "2026-11-25T12:00:00Z");
    assert_eq!(
        stark["detail"],
        "The payment for the subscription of consumer stark is past due (the grace period \
         ended at 2026-11-25T12:00:00Z); the payment method needs attention."
    );
    let wayne: Value =
        serde_json::from_str(&deny(&config, &store, key("wayne"), NOW).body).unwrap();
    assert!(wayne.get("grace-until").is_none());
    // Without any billing page: no member, no Link.
    let bare = Config::from_json(CONFIG.as_bytes()).unwrap();
    let reply = deny(&bare, &store, key("initech"), NOW);
    assert_eq!(header(&reply, "link"), None);
    assert!(!reply.body.contains("billing-url"));
}

#[test]
fn a_quota_refusal_carries_its_plans_upgrade_page() {
    let config = Config::from_json(REMEDIES.as_bytes()).unwrap();
    let store = MemoryStore::new();
    crate::quota::create_records(&config, &store).unwrap();
    for who in ["acme", "bob"] {
        assert!(matches!(
            decide(&config, key(who), NOW, &store, &Memo::default()),
            Decision::Allow { .. }
        ));
    }
    let reply = deny(&config, &store, key("acme"), NOW);
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["type"], QUOTA_EXCEEDED);
    assert_eq!(body["upgrade-url"], "https://example.com/upgrade?plan=free");
    assert_eq!(
        body["retry-after"], 39_600,
        "still the last member, filled in"
    );
    assert!(
        body.get("billing-url").is_none(),
        "a quota refusal is no billing matter"
    );
    assert_eq!(
        header(&reply, "link"),
        Some("<https://example.com/upgrade?plan=free>; rel=\"payment urn:tollgate:rel:upgrade\"")
    );
    let bob = deny(&config, &store, key("bob"), NOW);
    assert_eq!(header(&bob, "link"), None);
    assert!(!bob.body.contains("upgrade-url"));
}

#[test]
fn bodies_are_compact_json_as_documented() {
    // docs/responses.md shows these bodies byte for byte; JSON escaping stops below U+0020.
    let config = Config::from_json(CONFIG.as_bytes()).unwrap();
    let store = MemoryStore::new();
    crate::quota::create_records(&config, &store).unwrap();
    assert_eq!(
        deny(&config, &store, Credential::Missing, NOW).body,
        r#"{"type":"urn:tollgate:problem:missing-credential","title":"Missing API key","status":401,"detail":"This API requires an API key."}"#
    );
    assert_eq!(
        deny(&config, &store, key("initech"), NOW).body,
        r#"{"type":"urn:tollgate:problem:subscription-suspended","title":"Subscription suspended","status":402,"detail":"The subscription of consumer initech is suspended.","consumer":"initech","plan":"free"}"#
    );
}

#[test]
fn a_store_error_is_unavailable_for_grpc_clients() {
    let config = Config::from_json(CONFIG.as_bytes()).unwrap();
    let denial = match decide(
        &config,
        key("acme"),
        NOW,
        &crate::store::FailingStore,
        &Memo::default(),
    ) {
        Decision::Deny(d) => d,
        other => panic!("a failing store refuses, got {other:?}"),
    };
    let grpc = refusal(&config, &denial, NOW, true);
    assert_eq!(grpc.grpc_status, Some(grpc::UNAVAILABLE));
    assert_eq!(header(&grpc, "retry-after"), Some("1"));
    let http = refusal(&config, &denial, NOW, false);
    assert_eq!((http.status, http.grpc_status), (503, None));
}

#[test]
fn a_priced_refusal_names_its_unit_what_it_needed_and_what_is_left() {
    let json = r#"{"plans": {"llm": {"limits": [
                     {"name": "daily", "requests": 10, "window": "day"},
                     {"name": "tokens", "tokens": 1000, "window": "day"}]}},
                   "consumers": {"acme": {"plan": "llm", "keys": ["acme"]}}}"#;
    let config = Config::from_json(json.as_bytes()).unwrap();
    let caller = crate::decision::Caller {
        consumer: &config.consumers[0],
        plan: &config.plans[0],
    };
    let bounds = config.plans[0].limits[0].window.bounds(NOW, 0);
    let usage = |used, requests, cost, violated| Usage {
        used,
        requests,
        bounds,
        violated,
        cost,
    };
    let short = [usage(3, 10, 1, false), usage(700, 1000, 500, true)];
    let reply =
        QuotaRefusal::new(&caller, &short, false, None, None).at(&caller, &short, NOW, None);
    assert_eq!(reply.status, 402);
    let p: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        (&p["unit"], &p["needed"], &p["remaining"]),
        (&Value::from("tokens"), &Value::from(500), &Value::from(300))
    );
    assert_eq!(
        p["detail"],
        "Consumer acme needs 500 tokens of limit \"tokens\" (day) for this request and has 300 \
         left; it resets at 2026-11-26T00:00:00Z."
    );
    // A spent token limit says it is spent, in tokens.
    let spent = [usage(3, 10, 1, false), usage(1000, 1000, 20, true)];
    let reply =
        QuotaRefusal::new(&caller, &spent, false, None, None).at(&caller, &spent, NOW, None);
    let p: Value = serde_json::from_str(&reply.body).unwrap();
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .starts_with("Consumer acme has used all 1000 tokens of limit \"tokens\""),
        "{p}"
    );
    // A plain request's refusal keeps the document it always had.
    let plain = [usage(10, 10, 1, true), usage(0, 1000, 0, false)];
    let reply =
        QuotaRefusal::new(&caller, &plain, false, None, None).at(&caller, &plain, NOW, None);
    let p: Value = serde_json::from_str(&reply.body).unwrap();
    assert!(p.get("unit").is_none() && p.get("needed").is_none(), "{p}");
    // The policy names the unit of limits that do not count requests.
    assert_eq!(
        rate_limit_policy(caller.plan, &short),
        "\"daily\";q=10;w=86400, \"tokens\";q=1000;w=86400;qu=\"tokens\""
    );
}
