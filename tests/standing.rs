//! Payment standing and remedies, through real Envoy: a `past_due` consumer is admitted and
//! counted until its `grace_until`, then refused with 402 and the payment problem; refusals
//! say where to fix them (`billing_url`, a plan's `upgrade_url`) as a member and a `Link`.
//! "Before" and "after" use a `grace_until` far in the future and one in the past: no waiting.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;
use tollgate_testkit::*;

const DAY: u64 = 86_400;
const BILLING: &str = "https://example.com/billing";
const LAPSED_BILLING: &str = "https://billing.example.com/lapsed?from=api";
const UPGRADE: &str = "https://example.com/upgrade?plan=free";

fn config(extra: &str) -> String {
    plugin(&format!(
        r#"{{
          "plans": {{
            "free":  {{"limits": [{{"name": "daily", "requests": 3, "window": "day"}}],
                       "upgrade_url": "{UPGRADE}"}},
            "plain": {{"limits": [{{"name": "daily", "requests": 2, "window": "day"}}]}}
          }},
          "consumers": {{
            "grace":     {{"plan": "free", "keys": ["grace-key"], "status": "past_due",
                           "grace_until": "2999-01-01T00:00:00Z"}},
            "lapsed":    {{"plan": "free", "keys": ["lapsed-key"], "status": "past_due",
                           "grace_until": "2020-01-01T00:00:00Z", "billing_url": "{LAPSED_BILLING}"}},
            "nograce":   {{"plan": "plain", "keys": ["nograce-key"], "status": "past_due"}},
            "suspended": {{"plan": "plain", "keys": ["suspended-key"], "status": "suspended"}},
            "expired":   {{"plan": "plain", "keys": ["expired-key"], "expires_at": "2020-01-01T00:00:00Z"}},
            "payer":     {{"plan": "plain", "keys": ["payer-key"]}}
          }},
          "billing_url": "{BILLING}",
          "usage_path": "/tollgate/usage"
          {extra}
        }}"#
    ))
}

fn billing_link(url: &str) -> String {
    format!("<{url}>; rel=\"payment urn:tollgate:rel:billing\"")
}

fn usage(envoy: &Envoy, key: &str) -> serde_json::Value {
    let r = envoy.get("/tollgate/usage", &[("x-api-key", key)]);
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

#[test]
fn past_due_is_admitted_and_counted_until_grace_until_then_refused_with_the_payment_problem() {
    let envoy = Envoy::start(&config(""));
    let (in_grace, lapsed, lapsed_usage) = within_one_window(DAY, 30.0, 1, |_| {
        // In grace: counted as usual, so the quota of 3 runs out like anyone's.
        let in_grace: Vec<Response> = (0..4).map(|_| envoy.get_with_key("grace-key")).collect();
        let lapsed: Vec<Response> = (0..2).map(|_| envoy.get_with_key("lapsed-key")).collect();
        (in_grace, lapsed, usage(&envoy, "lapsed-key"))
    });
    for (i, ok) in in_grace.iter().take(3).enumerate() {
        assert_eq!(ok.status, 200, "request {i} in grace: {ok:?}");
        assert_eq!(ok.remaining("daily"), 2 - i as u64, "counted");
        assert_eq!(ok.header("link"), None, "no hint on admitted responses");
    }
    let spent = &in_grace[3];
    assert_eq!(spent.status, 402, "{spent:?}");
    assert_eq!(
        spent.json()["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded",
        "in grace, a spent quota is a quota refusal"
    );
    let grace = usage(&envoy, "grace-key");
    assert_eq!(grace["status"], "past_due");
    assert_eq!(grace["grace_until"], "2999-01-01T00:00:00Z");
    assert_eq!(grace["limits"][0]["used"], 3);

    // After grace_until: 402, the payment problem, the consumer's own billing page.
    for r in &lapsed {
        assert_eq!(r.status, 402, "{r:?}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        let body = r.json();
        assert_eq!(body["type"], "urn:tollgate:problem:payment-required");
        assert_eq!(body["title"], "Payment required");
        assert_eq!(body["consumer"], "lapsed");
        assert_eq!(body["grace-until"], "2020-01-01T00:00:00Z");
        assert_eq!(body["billing-url"], LAPSED_BILLING, "the consumer's wins");
        assert_eq!(
            r.header("link"),
            Some(billing_link(LAPSED_BILLING).as_str())
        );
        assert_eq!(r.header("ratelimit"), None, "refused before counting");
    }
    assert_eq!(lapsed_usage["status"], "past_due");
    assert_eq!(lapsed_usage["grace_until"], "2020-01-01T00:00:00Z");
    assert_eq!(
        lapsed_usage["limits"][0]["used"], 0,
        "refusals consume nothing"
    );

    // past_due without grace_until: refused at once, with the configuration's billing page.
    let none = envoy.get_with_key("nograce-key");
    assert_eq!(none.status, 402);
    let body = none.json();
    assert_eq!(body["type"], "urn:tollgate:problem:payment-required");
    assert!(body.get("grace-until").is_none(), "{body}");
    assert_eq!(body["billing-url"], BILLING);
    assert_eq!(none.header("link"), Some(billing_link(BILLING).as_str()));
    assert_eq!(usage(&envoy, "nograce-key")["status"], "past_due");
}

#[test]
fn refusals_carry_their_remedy_link_and_other_refusals_none() {
    let envoy = Envoy::start(&config(""));
    for (key, kind) in [
        (
            "suspended-key",
            "urn:tollgate:problem:subscription-suspended",
        ),
        ("expired-key", "urn:tollgate:problem:subscription-expired"),
    ] {
        let r = envoy.get_with_key(key);
        assert_eq!(r.status, 402, "{r:?}");
        let body = r.json();
        assert_eq!(body["type"], kind);
        assert_eq!(body["billing-url"], BILLING);
        assert_eq!(r.header("link"), Some(billing_link(BILLING).as_str()));
    }
    // A quota refusal: the plan's upgrade page — rendered once per spent consumer, so every
    // refusal of the flood must carry it; a plan without one gets no Link.
    let (grace, payer) = within_one_window(DAY, 30.0, 1, |_| {
        let grace: Vec<Response> = (0..6).map(|_| envoy.get_with_key("grace-key")).collect();
        let payer: Vec<Response> = (0..3).map(|_| envoy.get_with_key("payer-key")).collect();
        (grace, payer)
    });
    for refused in &grace[3..] {
        assert_eq!(refused.status, 402, "{refused:?}");
        let body = refused.json();
        assert_eq!(body["upgrade-url"], UPGRADE);
        assert!(body["retry-after"].as_u64().unwrap() > 0, "{body}");
        assert!(body.get("billing-url").is_none(), "{body}");
        assert_eq!(
            refused.header("link"),
            Some(format!("<{UPGRADE}>; rel=\"payment urn:tollgate:rel:upgrade\"").as_str())
        );
    }
    let plain = &payer[2];
    assert_eq!(plain.status, 402, "{plain:?}");
    assert_eq!(plain.header("link"), None);
    assert!(plain.json().get("upgrade-url").is_none());
    // Nothing of the request ever becomes a link: a 401 has none.
    let unknown = envoy.get("/", &[("x-api-key", "https://evil.example/")]);
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.header("link"), None);
}

#[test]
fn grpc_clients_get_permission_denied_and_the_link_as_metadata() {
    let envoy = Envoy::start(&config(""));
    let text = curl_grpc(
        envoy.port,
        "/demo.Greeter/SayHello",
        &["x-api-key: lapsed-key"],
    );
    let lower = text.to_ascii_lowercase();
    assert!(lower.starts_with("http/2 200"), "{text}");
    assert!(
        lower.contains("grpc-status: 7"),
        "PERMISSION_DENIED: {text}"
    );
    assert!(
        text.contains(&format!("link: {}", billing_link(LAPSED_BILLING))),
        "{text}"
    );
    assert!(
        lower.contains("past due"),
        "the detail as grpc-message: {text}"
    );
}

/// A counter from Envoy's /stats (custom metrics are `wasmcustom.<name>`).
fn counter(envoy: &Envoy, name: &str) -> u64 {
    let prefix = format!("wasmcustom.{name}: ");
    envoy
        .stats()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no counter {name} in /stats"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn past_due_refusals_are_counted_globally_and_per_plan() {
    let envoy = Envoy::start(&config(""));
    envoy.get_with_key("lapsed-key");
    envoy.get_with_key("lapsed-key");
    envoy.get_with_key("nograce-key");
    envoy.get_with_key("grace-key"); // admitted in grace
    envoy.get_with_key("suspended-key");
    let expected = [
        ("tollgate.requests.refused.past_due", 3),
        ("tollgate.plan.free.refused.past_due", 2),
        ("tollgate.plan.plain.refused.past_due", 1),
        ("tollgate.plan.free.allowed", 1),
        ("tollgate.requests.refused.suspended", 1),
        ("tollgate.plan.plain.refused.suspended", 1),
        ("tollgate.requests.shadowed.past_due", 0),
        ("tollgate.plan.free.shadowed.past_due", 0),
    ];
    poll(Duration::from_secs(10), "the counters", || {
        expected
            .iter()
            .all(|(name, value)| counter(&envoy, name) == *value)
            .then_some(())
    });
    drop(envoy);

    // Shadow mode forwards what it would refuse, and counts it as shadowed.
    let shadow = Envoy::start(&config(r#", "mode": "shadow""#));
    assert_eq!(shadow.get_with_key("lapsed-key").status, 200);
    poll(Duration::from_secs(10), "the shadow counters", || {
        (counter(&shadow, "tollgate.requests.shadowed.past_due") == 1
            && counter(&shadow, "tollgate.plan.free.shadowed.past_due") == 1
            && counter(&shadow, "tollgate.requests.refused.past_due") == 0)
            .then_some(())
    });
}
