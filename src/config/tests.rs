use std::hash::Hasher;

use super::errors::redact_values;
use super::*;
use crate::credentials::Source;
use crate::sha256::Digest;
use crate::window::Window;

const EXAMPLE: &str = r#"{
  "credentials": [ {"header": "X-Api-Key"}, {"authorization": "Bearer"}, {"query": "api_key"} ],
  "plans": {
    "free": { "limits": [ {"name": "daily", "requests": 1000, "window": "day"},
                          {"name": "burst", "requests": 10, "window": "1s", "status": 429} ] },
    "pro":  { "limits": [ {"name": "monthly", "requests": 1000000, "window": "month"} ] },
    "internal": { "limits": [] }
  },
  "consumers": {
    "acme":    { "plan": "free", "keys": ["acme-key-1", "acme-key-2"] },
    "globex":  { "plan": "pro",  "keys": ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"], "expires_at": "2027-01-01T00:00:00Z" },
    "initech": { "plan": "pro",  "keys": ["initech-key"], "status": "suspended" }
  },
  "anonymous_plan": "free"
}"#;

fn err(json: &str) -> String {
    Config::from_json(json.as_bytes()).unwrap_err().0
}

#[test]
fn compiles_the_documented_example() {
    let c = Config::from_json(EXAMPLE.as_bytes()).unwrap();
    assert_eq!(
        c.credentials,
        vec![
            Source::Header("x-api-key".into()),
            Source::Authorization("bearer".into()),
            Source::Query("api_key".into())
        ]
    );
    assert_eq!(c.plans.len(), 3);
    let free = &c.plans[0];
    assert_eq!(free.limits[0].window, Window::Day);
    assert_eq!(free.limits[0].status, 402);
    assert_eq!(free.limits[1].status, 429);
    assert!(
        c.identity_headers && c.ratelimit_policy,
        "both on by default"
    );
    let acme = c.consumer_for_key(b"acme-key-2").unwrap();
    assert_eq!(acme.name(), "acme");
    assert_eq!(c.plan_of(acme).unwrap().name, "free");
    assert_eq!(
        c.consumer_for_key(b"acme-key-1").unwrap().store_key,
        acme.store_key
    );
    // "foo" hashes to 2c26b4...: hashed keys match the plaintext a client sends.
    let globex = c.consumer_for_key(b"foo").unwrap();
    assert_eq!(globex.name(), "globex");
    assert_eq!(globex.expires_at, Some(1_798_761_600));
    assert!(c.consumer_for_key(b"initech-key").unwrap().status == Status::Suspended);
    assert!(c.consumer_for_key(b"nobody").is_none());
    let anon = &c.consumers[c.anonymous.unwrap()];
    assert_eq!((anon.name(), anon.plan), ("anonymous", 0));
    assert_eq!(c.key_count(), 4);
    assert_eq!(
        c.challenge,
        "ApiKey realm=\"tollgate\", Bearer realm=\"tollgate\""
    );
}

#[test]
fn operational_options() {
    let c = Config::from_json(
        br#"{"plans": {"p": {"limits": []}}, "mode": "shadow", "on_store_error": "allow",
             "usage_path": "/tollgate/usage", "cors_preflight": "authenticate",
             "consumer_header": "X-Consumer", "plan_header": "x-plan",
             "hide_credentials": true, "calendar_utc_offset": "+05:30"}"#,
    )
    .unwrap();
    assert_eq!(
        (c.mode, c.on_store_error),
        (Mode::Shadow, OnStoreError::Allow)
    );
    assert_eq!(c.usage_path.as_deref(), Some("/tollgate/usage"));
    assert_eq!(c.cors_preflight, CorsPreflight::Authenticate);
    assert_eq!(
        (c.consumer_header.as_str(), c.plan_header.as_str()),
        ("x-consumer", "x-plan")
    );
    assert!(c.hide_credentials);
    assert_eq!(c.utc_offset, 19_800);
    let d = Config::from_json(br#"{"plans": {"p": {"limits": []}}}"#).unwrap();
    assert_eq!(
        (d.mode, d.on_store_error, d.cors_preflight),
        (Mode::Enforce, OnStoreError::Deny, CorsPreflight::Pass)
    );
    assert_eq!(
        (d.consumer_header.as_str(), d.plan_header.as_str()),
        ("x-tollgate-consumer", "x-tollgate-plan")
    );
    assert_eq!(
        (d.usage_path, d.hide_credentials, d.utc_offset),
        (None, false, 0)
    );
}

#[test]
fn utc_offsets() {
    assert_eq!(parse_utc_offset("Z"), Ok(0));
    assert_eq!(parse_utc_offset("+00:00"), Ok(0));
    assert_eq!(parse_utc_offset("-08:00"), Ok(-28_800));
    assert_eq!(parse_utc_offset("+14:00"), Ok(50_400));
    assert_eq!(parse_utc_offset("+05:45"), Ok(20_700));
    for bad in [
        "",
        "+5:30",
        "05:30",
        "+05:60",
        "+14:01",
        "+0530",
        "+05:30 ",
        "UTC",
        "+٠٥:٣٠",
    ] {
        assert!(parse_utc_offset(bad).is_err(), "{bad}");
    }
}

#[test]
fn defaults() {
    let c = Config::from_json(br#"{"plans": {"p": {"limits": []}}}"#).unwrap();
    assert_eq!(c.credentials, vec![Source::Header("x-api-key".into())]);
    assert!(c.consumers.is_empty() && c.anonymous.is_none());
}

#[test]
fn refuses_bad_configurations_naming_the_field() {
    let plans = r#""plans": {"free": {"limits": [{"name": "d", "requests": 5, "window": "day"}]}}"#;
    let cases: Vec<(String, &str)> = vec![
        ("{".into(), "invalid JSON at line 1 column 1 of the plugin configuration: EOF while parsing an object | { | ^"),
        ("[]".into(), "the configuration must be a JSON object"),
        ("  \n".into(), "the configuration is empty"),
        ("".into(), "the configuration is empty"),
        ("{}".into(), "missing field `plans`"),
        (format!(r#"{{{plans}, "bogus": 1}}"#), "unknown field `bogus`, expected one of `credentials`, `plans`"),
        (r#"{"plans": {}}"#.into(), "plans: at least one plan"),
        (r#"{"plans": {"p": {"limits": [], "x": 1}}}"#.into(), "plans.p: unknown field `x`, expected one of `limits`, `upgrade_url`, `alerts`"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "requets": 1, "window": "day"}]}}}"#.into(), "plans.p.limits[0]: unknown field `requets`, expected one of `name`, `requests`, `tokens`, `units`, `unit`, `window`, `status`, `scope`"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "window": "day"}]}}}"#.into(), "plans.p.limits[0]: give exactly one of `requests`, `tokens` or `units` (with `unit`)"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 1, "tokens": 5, "window": "day"}]}}}"#.into(), "plans.p.limits[0]: give exactly one of `requests`, `tokens` or `units` (with `unit`)"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "units": 5, "window": "day"}]}}}"#.into(), "plans.p.limits[0].unit: `units` needs the unit's name (e.g. \"unit\": \"credits\")"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "tokens": 5, "unit": "x", "window": "day"}]}}}"#.into(), "plans.p.limits[0].unit: only with `units` (`requests` and `tokens` name their unit)"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "units": 5, "unit": "tokens", "window": "day"}]}}}"#.into(), "plans.p.limits[0].unit: write `\"tokens\": N` instead of a unit named `tokens`"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "units": 5, "unit": "a b", "window": "day"}]}}}"#.into(), "plans.p.limits[0].unit: name `a b` must be 1-64 characters of A-Z a-z 0-9 _ - ."),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "tokens": 0, "window": "day"}]}}}"#.into(), "plans.p.limits[0].tokens: must be greater than 0 (a plan with no limits is unlimited; suspend a consumer to refuse it; 0 with the limit in `credits` is pay-as-you-go)"),
        (r#"{"plans": {"p": {"limits": [], "max_output_tokens": 0}}}"#.into(), "plans.p.max_output_tokens: from 1 to 100000000"),
        (r#"{"plans": {"p": {"limits": []}}, "routes": {"r": {"cost": {"tokens": 5}}}}"#.into(), "routes.r.cost.tokens: tokens are not priced per route: mark the route `\"llm\": \"openai-chat\"` (or another API) and tokens are reserved from its body"),
        (r#"{"plans": {"p": {"limits": []}}, "routes": {"r": {"cost": {"requests": 1000000000000000}}}}"#.into(), "routes.r.cost.requests: at most 999999999999999"),
        (r#"{"plans": {"p": {"limits": []}}, "routes": {"r": {"cost_headers": {"credits": "bad header"}}}}"#.into(), "routes.r.cost_headers.credits: `bad header` is not a valid header name"),
        (r#"{"plans": {"p": {"limits": []}}, "routes": {"r": {"llm": "openai-chat"}}}"#.into(), "routes.r.llm: an LLM route needs the `llm` section (its models and their weights)"),
        (r#"{"plans": {"p": {"limits": []}}, "routes": {"r": {"cost_headers": {"requests": "x-n"}}}}"#.into(), "routes.r.cost_headers.requests: requests are counted on admission and never settled; price the route in a named unit (credits) to settle it from the upstream"),
        (r#"{"plans": {"p": {"limits": []}}, "routes": {"r": {"llm": "gemini"}}, "llm": {"models": {"*": {}}}}"#.into(), "routes.r.llm: `gemini` is not an LLM API tollgate reads (openai-chat, openai-responses, anthropic-messages)"),
        (r#"{"plans": {"p": {"limits": []}}, "routes": {"": {}}}"#.into(), "routes.: a route name is 1-255 bytes (the `name` of the Envoy route)"),
        (r#"{"plans": {"p": {"limits": []}}, "llm": {"models": {}}}"#.into(), "llm.models: list 1-1000 models (`*` prices every model not listed; without it, other models are refused)"),
        (r#"{"plans": {"p": {"limits": []}}, "llm": {"models": {"m": {"weights": {"output": -1}}}}}"#.into(), "llm.models.m.weights.output: a weight is a number from 0 to 1000 (quota units per token)"),
        (r#"{"plans": {"p": {"limits": []}}, "llm": {"models": {"m": {"weights": {"input": 0.0001}}}}}"#.into(), "llm.models.m.weights.input: at most three decimals (weights are kept in thousandths)"),
        (r#"{"plans": {"p": {"limits": []}}, "llm": {"max_body_bytes": 0, "models": {"m": {}}}}"#.into(), "llm.max_body_bytes: from 1 to 16777216"),
        (r#"{"plans": {"p": {"limits": []}}, "llm": {"max_n": 129, "models": {"m": {}}}}"#.into(), "llm.max_n: from 1 to 128"),
        (r#"{"plans": {"p": {"limits": []}}, "llm": {"models": {"m": {"max_output_tokens": 100000001}}}}"#.into(), "llm.models.m.max_output_tokens: from 1 to 100000000"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": "100", "window": "day"}]}}}"#.into(), "plans.p.limits[0].requests: expected a whole number, found a string (write numbers without quotes)"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 1.5, "window": "day"}]}}}"#.into(), "plans.p.limits[0].requests: expected a whole number, found 1.5"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 1, "window": "day", "status": 70000}]}}}"#.into(), "plans.p.limits[0].status: expected a whole number up to 65535, found 70000"),
        (r#"{"plans": {"p": {"limits": {}}}}"#.into(), "plans.p.limits: expected a list [...], found an object"),
        (r#"{"plans": {"p": {"limits": [[]]}}}"#.into(), "plans.p.limits[0]: expected an object {...}, found a list"),
        (r#"{"plans": {"p": {"limits": null}}}"#.into(), "plans.p.limits: expected a list [...], found null"),
        (r#"{"plans": []}"#.into(), "plans: expected an object {...}, found a list"),
        (r#"{"plans": {"p": {"limits": []}}} x"#.into(), "invalid JSON at line 1 column 34 of the plugin configuration: trailing characters"),
        (r#"{"plans": {"p": {"limits": []}, "p": {"limits": []}}}"#.into(), "plans: `p` is listed twice"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 0, "window": "day"}]}}}"#.into(), "plans.p.limits[0].requests: must be greater than 0"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": -1, "window": "day"}]}}}"#.into(), "plans.p.limits[0].requests: expected a whole number, found -1"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 1, "window": "fortnight"}]}}}"#.into(), "plans.p.limits[0].window: `fortnight` is not a window"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 1, "window": "day", "status": 200}]}}}"#.into(), "plans.p.limits[0].status: 200"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 1, "window": "day"}, {"name": "d", "requests": 1, "window": "1s"}]}}}"#.into(), "plans.p.limits[1].name: limit `d` is listed twice"),
        (r#"{"plans": {"p": {"limits": [{"name": "has space", "requests": 1, "window": "day"}]}}}"#.into(), "plans.p.limits[0].name"),
        (r#"{"plans": {"bad name": {"limits": []}}}"#.into(), "plans.bad name: name"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "gold", "keys": ["k"]}}}}}}"#), "consumers.a.plan: plan `gold` does not exist (plans: free)"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "keys": ["k", "k"]}}}}}}"#), "consumers.a.keys[1]: this key is listed twice (also a key of consumer `a`)"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "keys": ["foo"]}}, "b": {{"plan": "free", "keys": ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]}}}}}}"#), "consumers.b.keys[0]: this key is listed twice (also a key of consumer `a`)"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "keys": ["sha256:ABC"]}}}}}}"#), "consumers.a.keys[0]: a hashed key is"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "keys": ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]}}, "b": {{"plan": "free", "keys": ["x", "foo"]}}}}}}"#), "consumers.b.keys[1]: this key is listed twice (also a key of consumer `a`)"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "keys": ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae", "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]}}}}}}"#), "consumers.a.keys[1]: this key is listed twice"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "keys": [""]}}}}}}"#), "consumers.a.keys[0]: a key cannot be empty"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "status": "paused"}}}}}}"#), "consumers.a.status: unknown variant `paused`, expected one of `active`, `suspended`, `past_due`"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "expires_at": "tomorrow"}}}}}}"#), "consumers.a.expires_at: `tomorrow` is not an RFC 3339"),
        (format!(r#"{{{plans}, "consumers": {{"anonymous": {{"plan": "free"}}}}}}"#), "consumers.anonymous: the name `anonymous` is reserved"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free"}}, "a": {{"plan": "free"}}}}}}"#), "consumers: `a` is listed twice"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "keys": [1]}}}}}}"#), "consumers.a.keys[0]: expected a string, found 1"),
        (format!(r#"{{{plans}, "anonymous_plan": "gold"}}"#), "anonymous_plan: plan `gold` does not exist"),
        (format!(r#"{{{plans}, "credentials": []}}"#), "credentials: the list is empty"),
        (format!(r#"{{{plans}, "credentials": [{{"cookie": "k"}}]}}"#), "credentials[0]: unknown variant `cookie`, expected one of `header`, `authorization`, `query`"),
        (format!(r#"{{{plans}, "credentials": [{{"header": 1}}]}}"#), "credentials[0].header: expected a string, found 1"),
        (format!(r#"{{{plans}, "credentials": [{{"header": "bad header"}}]}}"#), "credentials[0].header: `bad header`"),
        (format!(r#"{{{plans}, "credentials": [{{"header": "Authorization"}}]}}"#), "credentials[0].header: use {\"authorization\""),
        (format!(r#"{{{plans}, "credentials": [{{"authorization": ""}}]}}"#), "credentials[0].authorization"),
        (format!(r#"{{{plans}, "credentials": [{{"query": "a=b"}}]}}"#), "credentials[0].query"),
        (format!(r#"{{{plans}, "credentials": [{{"query": "k"}}, {{"query": "k"}}]}}"#), "credentials[1]: the same source is listed twice"),
        (format!(r#"{{{plans}, "credentials": [{{"header": "X-Key"}}, {{"header": "x-key"}}]}}"#), "credentials[1]: the same source is listed twice"),
        (format!(r#"{{{plans}, "mode": "audit"}}"#), "mode: unknown variant `audit`"),
        (format!(r#"{{{plans}, "mode": null}}"#), "mode: this value has the wrong type"),
        (format!("{{{plans},\n \"mode\": [1]}}"), "mode: this value has the wrong type"),
        (format!(r#"{{{plans}, "mode": -1}}"#), "mode: this value has the wrong type"),
        (format!(r#"{{{plans}, "credentials": [true]}}"#), "credentials[0]: this value has the wrong type"),
        (r#"{"plans": {"p": {"limits": [],}}}"#.into(), "invalid JSON at line 1 column 31 of the plugin configuration: trailing comma"),
        (format!(r#"{{{plans}, "on_store_error": "retry"}}"#), "on_store_error: unknown variant `retry`"),
        (format!(r#"{{{plans}, "usage_path": "usage"}}"#), "usage_path: `usage` must be a path"),
        (format!(r#"{{{plans}, "usage_path": "/u?x=1"}}"#), "usage_path"),
        (format!(r#"{{{plans}, "consumer_header": "x-api-key"}}"#), "consumer_header: `x-api-key` is a credential or reserved header"),
        (format!(r#"{{{plans}, "plan_header": "bad header"}}"#), "plan_header: `bad header` is not a valid header name"),
        (format!(r#"{{{plans}, "plan_header": "X-Tollgate-Consumer"}}"#), "plan_header: `x-tollgate-consumer` is also the consumer_header"),
        (format!(r#"{{{plans}, "calendar_utc_offset": "Asia/Kolkata"}}"#), "calendar_utc_offset: `Asia/Kolkata` is not a fixed UTC offset"),
        (format!(r#"{{{plans}, "hide_credentials": "yes"}}"#), "hide_credentials: expected true or false, found a string (write true or false without quotes)"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "status": "suspended", "grace_until": "2027-01-01T00:00:00Z"}}}}}}"#), "consumers.a.grace_until: applies only to \"status\": \"past_due\""),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "grace_until": "2027-01-01T00:00:00Z"}}}}}}"#), "consumers.a.grace_until: applies only to"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "status": "past_due", "grace_until": "soon"}}}}}}"#), "consumers.a.grace_until: `soon` is not an RFC 3339"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "status": "pastdue"}}}}}}"#), "consumers.a.status: unknown variant `pastdue`, expected one of `active`, `suspended`, `past_due`"),
        (format!(r#"{{{plans}, "billing_url": "http://example.com/billing"}}"#), "billing_url: `http://example.com/billing` is not an https URL"),
        (format!(r#"{{{plans}, "billing_url": "/billing"}}"#), "billing_url: `/billing` is not an https URL"),
        (format!(r#"{{{plans}, "billing_url": "javascript:alert(1)"}}"#), "billing_url: `javascript:alert(1)` is not an https URL"),
        (format!(r#"{{{plans}, "billing_url": "https://"}}"#), "billing_url: `https://` has no valid host name"),
        (format!(r#"{{{plans}, "billing_url": "https://example.com:x/"}}"#), "billing_url: `https://example.com:x/` has no valid host name"),
        (format!(r#"{{{plans}, "billing_url": "https://evil.example@example.com/"}}"#), "billing_url: the URL has user information"),
        (format!(r#"{{{plans}, "billing_url": 1}}"#), "billing_url: expected a string, found 1"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "billing_url": "https://example.com/a b"}}}}}}"#), "consumers.a.billing_url: `https://example.com/a b` has characters a URL cannot contain"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "billing_url": "https://example.com/>; rel=x"}}}}}}"#), "consumers.a.billing_url: `https://example.com/>; rel=x` has characters"),
        (r#"{"plans": {"p": {"limits": [], "upgrade_url": "ftp://example.com"}}}"#.into(), "plans.p.upgrade_url: `ftp://example.com` is not an https URL"),
        (r#"{"plans": {"p": {"limits": [], "upgrade_url": "https://example.com/100%"}}}"#.into(), "plans.p.upgrade_url: `https://example.com/100%` has a `%` that is not followed by two hex digits"),
        (r#"{"plans": {"p": {"limits": [], "upgrade_url": "https://example.com/%zz"}}}"#.into(), "plans.p.upgrade_url: `https://example.com/%zz` has a `%`"),
        (r#"{"plans": {"p": {"limits": [], "upgrade_url": "https://example.com/é"}}}"#.into(), "plans.p.upgrade_url: `https://example.com/é` has characters"),
    ];
    for (json, expected) in cases {
        let message = err(&json);
        assert!(
            message.contains(expected),
            "for {json}\n got: {message}\nwant: {expected}"
        );
        assert!(!message.contains('\n'), "one line: {message}");
    }
}

#[test]
fn json_syntax_errors_show_line_column_and_a_caret() {
    let message = err("{\n  \"plans\": {\n    \"free\": {\"limits\": [}\n  }\n}");
    assert!(message.contains("line 3 column 25"), "{message}");
    assert!(message.contains("\"free\": {\"limits\": [}"), "{message}");
    assert!(message.ends_with('^'), "{message}");
    assert!(
        message.starts_with(
            "invalid JSON at line 3 column 25 of the plugin configuration: expected value \
             (in plans.free.limits[0])"
        ),
        "{message}"
    );
    // serde_json's expected punctuation is shown, not redacted.
    let message =
        err(r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 1, "window": "day"} {}]}}}"#);
    assert!(message.contains("expected `,` or `]`"), "{message}");
}

#[test]
fn errors_never_show_a_key() {
    let plans = r#""plans": {"p": {"limits": []}}"#;
    for json in [
        format!(
            r#"{{{plans}, "consumers": {{"a": {{"plan": "p", "keys": "sk_live_SECRET123"}}}}}}"#
        ),
        format!(
            r#"{{{plans}, "consumers": {{"a": {{"plan": "p", "keys": ["sk_live_SECRET123"],}}}}}}"#
        ),
        format!(
            r#"{{{plans}, "consumers": {{"a": {{"plan": "p", "keys": ["sk_live_SECRET123"], "status": "sk_live_SECRET123"}}}}}}"#
        ),
        format!(
            r#"{{{plans}, "consumers": {{"a": {{"plan": "p", "keys": [1, "sk_live_SECRET123"]}}}}}}"#
        ),
        // A key pasted where a field name belongs: the path leaves the unknown field out.
        format!(
            r#"{{{plans}, "consumers": {{"a": {{"plan": "p", "sk_live_SECRET123": ["k"]}}}}}}"#
        ),
        format!(r#"{{{plans}, "sk_live_SECRET123": 1}}"#),
    ] {
        let message = err(&json);
        assert!(!message.contains("SECRET"), "{message}");
        assert!(
            message.contains("consumers.a") || message.starts_with("unknown field `…`"),
            "{message}"
        );
    }
    // Field names stay readable.
    assert!(err(&format!(r#"{{{plans}, "consumer": {{}}}}"#)).contains("unknown field `consumer`"));
    assert_eq!(
        redact_values(r#"{"keys": ["a\"b", "c"], "n": 1}"#),
        r#"{"keys": ["****", "*"], "n": 1}"#
    );
}

#[test]
fn the_summary_reads_like_the_configuration() {
    let c = Config::from_json(EXAMPLE.as_bytes()).unwrap();
    assert_eq!(
        c.summary(),
        "3 plans [free (2 limits), pro (1 limit), internal (unlimited)], 3 consumers, 4 keys, \
         credentials [header x-api-key, authorization Bearer, query api_key], \
         anonymous_plan free, mode enforce, on_store_error deny, usage_path off, \
         calendar_utc_offset Z"
    );
    let one = Config::from_json(
        br#"{"plans": {"p": {"limits": [{"name": "d", "requests": 1, "window": "day"}]}},
             "consumers": {"a": {"plan": "p", "keys": ["k"]}}, "mode": "shadow",
             "on_store_error": "allow", "usage_path": "/u", "calendar_utc_offset": "+05:30"}"#,
    )
    .unwrap();
    assert_eq!(
        one.summary(),
        "1 plan [p (1 limit)], 1 consumer, 1 key, credentials [header x-api-key], \
         anonymous_plan off, mode shadow, on_store_error allow, usage_path /u, \
         calendar_utc_offset +05:30"
    );
    for (text, seconds) in [
        ("Z", 0),
        ("+05:30", 19_800),
        ("-08:00", -28_800),
        ("+14:00", 50_400),
        ("-00:30", -1_800),
    ] {
        assert_eq!(parse_utc_offset(text), Ok(seconds));
        assert_eq!(format_utc_offset(seconds), text);
    }
}

#[test]
fn remedy_urls_that_are_accepted() {
    for url in [
        "https://example.com",
        "HTTPS://Example.COM/billing",
        "https://billing.example.com:8443/account?tab=payment#card",
        "https://example.com/a%20b/(x)*;y=1,z",
        "https://192.0.2.1/pay",
    ] {
        assert_eq!(
            compile_https_url("f", Some(url.to_string())),
            Ok(Some(url.to_string()))
        );
    }
    let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
    assert_eq!(
        compile_https_url("f", Some(long)),
        Err(ConfigError(
            "f: the URL is longer than 2048 characters".into()
        ))
    );
    let c = Config::from_json(
        br#"{"plans": {"p": {"limits": [], "upgrade_url": "https://example.com/up"}},
             "consumers": {"a": {"plan": "p", "billing_url": "https://example.com/a"},
                           "b": {"plan": "p"}},
             "billing_url": "https://example.com/all", "anonymous_plan": "p"}"#,
    )
    .unwrap();
    assert_eq!(
        c.plans[0].upgrade_url.as_deref(),
        Some("https://example.com/up")
    );
    let billing: Vec<Option<&str>> = c.consumers.iter().map(|x| c.billing_url_of(x)).collect();
    assert_eq!(
        billing,
        [
            Some("https://example.com/a"),
            Some("https://example.com/all"),
            Some("https://example.com/all")
        ]
    );
}

#[test]
fn standing_follows_status_expiry_and_grace() {
    let c = Config::from_json(
        br#"{"plans": {"p": {"limits": []}},
             "consumers": {
               "active": {"plan": "p"},
               "ends": {"plan": "p", "expires_at": "2027-01-01T00:00:00Z"},
               "suspended": {"plan": "p", "status": "suspended", "expires_at": "2020-01-01T00:00:00Z"},
               "grace": {"plan": "p", "status": "past_due", "grace_until": "2027-01-01T00:00:00+01:00"},
               "no_grace": {"plan": "p", "status": "past_due"},
               "both": {"plan": "p", "status": "past_due", "grace_until": "2027-02-01T00:00:00Z",
                        "expires_at": "2027-01-01T00:00:00Z"}}}"#,
    )
    .unwrap();
    let jan = 1_798_761_600; // 2027-01-01T00:00:00Z
    let grace_end = jan - 3600;
    let at = |name: &str, now: i64| {
        c.consumers
            .iter()
            .find(|x| x.name() == name)
            .unwrap()
            .standing(now)
    };
    assert_eq!(at("active", jan), Standing::Active);
    assert_eq!(at("ends", jan - 1), Standing::Active);
    assert_eq!(at("ends", jan), Standing::Expired { at: jan });
    assert_eq!(at("suspended", 0), Standing::Suspended);
    assert_eq!(
        at("grace", grace_end - 1),
        Standing::Grace { until: grace_end }
    );
    assert_eq!(
        at("grace", grace_end),
        Standing::PaymentRequired {
            grace_until: Some(grace_end)
        }
    );
    assert_eq!(
        at("no_grace", 0),
        Standing::PaymentRequired { grace_until: None }
    );
    assert_eq!(at("both", jan - 1).name(), "past_due");
    assert_eq!(at("both", jan), Standing::Expired { at: jan });
    let admitted: Vec<bool> = [
        Standing::Active,
        Standing::Grace { until: 0 },
        Standing::Suspended,
        Standing::Expired { at: 0 },
        Standing::PaymentRequired { grace_until: None },
    ]
    .iter()
    .map(|s| s.admitted())
    .collect();
    assert_eq!(admitted, [true, true, false, false, false]);
}

#[test]
fn requests_fit_in_a_structured_field_integer() {
    let ok = r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 999999999999999, "window": "day"}]}}}"#;
    assert!(Config::from_json(ok.as_bytes()).is_ok());
    let big = ok.replace("999999999999999", "1000000000000000");
    assert!(err(&big).contains("plans.p.limits[0].requests: at most 999999999999999"));
}

#[test]
fn too_many_limits() {
    let limits: Vec<String> = (0..17)
        .map(|i| format!(r#"{{"name": "l{i}", "requests": 1, "window": "day"}}"#))
        .collect();
    let json = format!(
        r#"{{"plans": {{"p": {{"limits": [{}]}}}}}}"#,
        limits.join(",")
    );
    assert!(err(&json).contains("at most 16"));
}

#[test]
fn error_messages_say_what_was_expected_and_display_as_is() {
    let message = err(r#"{"plans": []}"#);
    assert!(message.contains("expected an object"), "{message}");
    let error = Config::from_json(b"{").unwrap_err();
    assert_eq!(error.to_string(), error.0);
    assert!(!error.0.is_empty());
}

#[test]
fn a_long_line_is_shown_around_the_error_only() {
    // An error at column 12 of a 200-character line: the excerpt is cut 20 characters
    // after the column.
    let json = format!(r#"{{"plans": x{} }}"#, " ".repeat(190));
    let message = err(&json);
    let excerpt = message.split(" | ").nth(1).unwrap();
    assert_eq!(excerpt, r#"{"plans": x                    "#, "{message}");
}

#[test]
fn backquoted_names_are_kept_only_when_lowercase() {
    let plans = r#""plans": {"p": {"limits": []}}"#;
    let message = err(&format!(r#"{{{plans}, "sk_Live_KEY": 1}}"#));
    // (The excerpt after " | " keeps member names: they say where the error is.)
    let head = message.split(" | ").next().unwrap();
    assert!(head.contains("unknown field `…`"), "{message}");
    assert!(!head.contains("KEY"), "{message}");
    let message = err(&format!(r#"{{{plans}, "anonymous_plans": 1}}"#));
    assert!(
        message.contains("unknown field `anonymous_plans`"),
        "{message}"
    );
}

#[test]
fn a_weekly_limit_has_a_fixed_policy_of_seven_days() {
    let c = Config::from_json(
        br#"{"plans": {"p": {"limits": [{"name": "w", "requests": 5, "window": "week"}]}}}"#,
    )
    .unwrap();
    let bounds = c.plans[0].limits[0].window.bounds(1_795_000_000, 0);
    let usage = crate::quota::Usage {
        used: 0,
        requests: 5,
        bounds,
        violated: false,
        cost: 1,
    };
    assert_eq!(
        crate::response::rate_limit_policy(&c.plans[0], &[usage]),
        "\"w\";q=5;w=604800"
    );
}

#[test]
fn the_key_hasher_uses_the_first_eight_bytes_of_the_digest() {
    // Digests are uniform, so their first 8 bytes are the hash: distinct keys spread
    // over the map instead of colliding (100 000 consumers stay O(1) per lookup).
    let hash = |digest: &Digest| {
        let mut h = DigestHasher::default();
        h.write(digest);
        h.finish()
    };
    let a = crate::sha256::sha256(b"a");
    assert_eq!(hash(&a), u64::from_be_bytes(a[..8].try_into().unwrap()));
    let b = crate::sha256::sha256(b"b");
    assert_ne!(hash(&a), hash(&b));
}

#[test]
fn the_bounds_of_limits_offsets_and_header_and_path_rules_are_exact() {
    let plans = r#""plans": {"p": {"limits": []}}"#;
    // Exactly 16 limits are allowed (17 are not: see too_many_limits).
    let limits: Vec<String> = (0..16)
        .map(|i| format!(r#"{{"name": "l{i}", "requests": 1, "window": "day"}}"#))
        .collect();
    let json = format!(
        r#"{{"plans": {{"p": {{"limits": [{}]}}}}}}"#,
        limits.join(",")
    );
    assert_eq!(
        Config::from_json(json.as_bytes()).unwrap().plans[0]
            .limits
            .len(),
        16
    );
    let offset = |text: &str| {
        Config::from_json(format!(r#"{{{plans}, "calendar_utc_offset": "{text}"}}"#).as_bytes())
            .map(|c| c.utc_offset)
    };
    assert_eq!(offset("+00:59"), Ok(59 * 60));
    assert_eq!(offset("-14:00"), Ok(-14 * 3600));
    assert!(offset("+00:60").is_err());
    assert!(offset("+14:01").is_err());
    for name in ["authorization", "Host", "x-api-key"] {
        let message = err(&format!(r#"{{{plans}, "consumer_header": "{name}"}}"#));
        assert!(
            message.contains("is a credential or reserved header"),
            "{message}"
        );
    }
    for path in ["/u?x", "/u#x", "/u x", "/u\\u0001", "/u\\u007f", "/é"] {
        let message = err(&format!(r#"{{{plans}, "usage_path": "{path}"}}"#));
        assert!(message.starts_with("usage_path: "), "{path}: {message}");
    }
}

fn with_store(store: &str) -> String {
    format!(r#"{{"plans": {{"p": {{"limits": []}}}}, "store": {store}}}"#)
}

#[test]
fn store_rls_defaults_and_validation_name_the_field() {
    let config = Config::from_json(
        with_store(r#"{"rls": {"cluster": "outbound|8081||quotad.tollgate.svc.cluster.local"}}"#)
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        config.store,
        Some(Rls {
            cluster: "outbound|8081||quotad.tollgate.svc.cluster.local".into(),
            domain: "tollgate".into(),
            timeout_ms: 100,
            lease: 1000,
        })
    );
    assert!(config.summary().ends_with(
        ", store rls (cluster outbound|8081||quotad.tollgate.svc.cluster.local, domain tollgate, timeout 100ms, lease 1000)"
    ));
    let full = Config::from_json(
        with_store(r#"{"rls": {"cluster": "q", "domain": "d-1", "timeout": "2s", "lease": 1}}"#)
            .as_bytes(),
    )
    .unwrap()
    .store
    .unwrap();
    assert_eq!(
        (full.timeout_ms, full.lease, full.domain.as_str()),
        (2000, 1, "d-1")
    );
    assert_eq!(
        Config::from_json(
            with_store(r#"{"rls": {"cluster": "q", "timeout": "10000ms"}}"#).as_bytes()
        )
        .unwrap()
        .store
        .unwrap()
        .timeout_ms,
        10_000
    );
    // Without `store`, local mode, as before.
    assert_eq!(
        Config::from_json(br#"{"plans": {"p": {"limits": []}}}"#)
            .unwrap()
            .store,
        None
    );
    for (store, field) in [
        (r#"{"rls": {"cluster": ""}}"#, "store.rls.cluster"),
        (r#"{"rls": {"cluster": "a b"}}"#, "store.rls.cluster"),
        (
            r#"{"rls": {"cluster": "q", "domain": "a:b"}}"#,
            "store.rls.domain",
        ),
        (
            r#"{"rls": {"cluster": "q", "timeout": "0ms"}}"#,
            "store.rls.timeout",
        ),
        (
            r#"{"rls": {"cluster": "q", "timeout": "11s"}}"#,
            "store.rls.timeout",
        ),
        (
            r#"{"rls": {"cluster": "q", "timeout": "50"}}"#,
            "store.rls.timeout",
        ),
        (
            r#"{"rls": {"cluster": "q", "timeout": "-5ms"}}"#,
            "store.rls.timeout",
        ),
        (
            r#"{"rls": {"cluster": "q", "lease": 0}}"#,
            "store.rls.lease",
        ),
        (
            r#"{"rls": {"cluster": "q", "lease": 100001}}"#,
            "store.rls.lease",
        ),
        (r#"{"rls": {"cluster": "q", "leases": 5}}"#, "store.rls"),
        (r#"{"redis": {}}"#, "store"),
        (r#"{"rls": {}}"#, "store.rls"),
    ] {
        let e = err(&with_store(store));
        assert!(e.starts_with(field), "{store}: {e}");
    }
}

#[test]
fn threshold_alerts_and_usage_events_are_configured_in_fleet_mode_as_in_local_mode() {
    let config = |events: &str| {
        format!(
            r#"{{"plans": {{"p": {{"limits": [{{"name": "d", "requests": 5, "window": "day"}}]}}}},
                "store": {{"rls": {{"cluster": "quotad"}}}}, "events": {events}}}"#
        )
    };
    let fleet = Config::from_json(
        config(r#"{"cluster": "sink", "url": "http://sink/", "alerts": [80]}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(fleet.events.unwrap().alerts, [vec![80]]);
    Config::from_json(config(r#"{"cluster": "sink", "url": "http://sink/"}"#).as_bytes()).unwrap();
}

#[test]
fn routes_and_llm_bounds_are_inclusive_and_refused_one_past() {
    let with = |extra: &str| {
        Config::from_json(format!(r#"{{"plans": {{"p": {{"limits": []}}}}{extra}}}"#).as_bytes())
    };
    let routes = |n: usize| {
        let list: Vec<String> = (0..n).map(|i| format!(r#""r{i}": {{}}"#)).collect();
        format!(r#", "routes": {{{}}}"#, list.join(","))
    };
    assert!(with(&routes(1000)).is_ok());
    assert!(with(&routes(1001))
        .unwrap_err()
        .0
        .starts_with("routes: 1001 routes; at most 1000"));
    let named = |len: usize| format!(r#", "routes": {{"{}": {{}}}}"#, "r".repeat(len));
    assert!(with(&named(255)).is_ok());
    assert!(with(&named(256)).is_err());
    assert!(with(r#", "routes": {"r": {"cost": {"requests": 999999999999999}}}"#).is_ok());
    assert_eq!(
        with(r#", "routes": {"r": {"cost": {"a b": 1}}}"#)
            .unwrap_err()
            .0,
        "routes.r.cost.a b: `a b` is not a unit name (1-64 characters of A-Z a-z 0-9 _ - .)"
    );
    let llm = |section: &str| with(&format!(r#", "llm": {section}"#));
    assert!(llm(r#"{"max_body_bytes": 16777216, "max_n": 128, "bytes_per_input_token": 16, "models": {"m": {}}}"#).is_ok());
    assert!(llm(r#"{"max_body_bytes": 16777217, "models": {"m": {}}}"#).is_err());
    assert!(llm(r#"{"bytes_per_input_token": 17, "models": {"m": {}}}"#).is_err());
    let weights = |w: &str| {
        llm(&format!(
            r#"{{"models": {{"m": {{"weights": {{"output": {w}}}}}}}}}"#
        ))
    };
    for ok in ["0", "0.001", "1000", "999.999"] {
        assert!(weights(ok).is_ok(), "{ok}");
    }
    for bad in ["1000.001", "-0.001", "1001"] {
        assert!(weights(bad).is_err(), "{bad}");
    }
    let model = |len: usize| llm(&format!(r#"{{"models": {{"{}": {{}}}}}}"#, "m".repeat(len)));
    assert!(model(256).is_ok());
    assert!(model(257).is_err());
    let models = |n: usize| {
        let list: Vec<String> = (0..n).map(|i| format!(r#""m{i}": {{}}"#)).collect();
        llm(&format!(r#"{{"models": {{{}}}}}"#, list.join(",")))
    };
    assert!(models(1000).is_ok());
    assert!(models(1001).is_err());
    // Look-ups: by name, `*` for the rest; routes by Envoy route name.
    let c = with(r#", "routes": {"chat": {"llm": "openai-chat"}}, "llm": {"models": {"a": {"max_output_tokens": 5}, "*": {"max_output_tokens": 9}}}"#).unwrap();
    let l = c.llm.as_ref().unwrap();
    assert_eq!(l.model("a").and_then(|m| m.max_output_tokens), Some(5));
    assert_eq!(l.model("zzz").and_then(|m| m.max_output_tokens), Some(9));
    assert!(!c.routes.is_empty());
    assert_eq!(
        c.routes.find(b"chat").map(|(i, r)| (i, r.llm)),
        Some((0, Some(crate::llm::Api::OpenAiChat)))
    );
    assert!(c.routes.find(b"other").is_none());
    assert!(with("").unwrap().routes.is_empty());
}

#[test]
fn a_limit_scope_is_fleet_by_default_or_envoy_and_nothing_else() {
    let plan = |scope: &str| {
        format!(
            r#"{{"plans": {{"p": {{"limits": [
                {{"name": "daily", "requests": 1000, "window": "day"}},
                {{"name": "burst", "requests": 5, "window": "1s"{scope}}}]}}}}}}"#
        )
    };
    let scopes = |json: &str| -> Vec<bool> {
        let c = Config::from_json(json.as_bytes()).unwrap();
        c.plans[0].limits.iter().map(|l| l.per_envoy).collect()
    };
    assert_eq!(scopes(&plan("")), [false, false]);
    assert_eq!(scopes(&plan(r#", "scope": "fleet""#)), [false, false]);
    assert_eq!(scopes(&plan(r#", "scope": "envoy""#)), [false, true]);
    assert_eq!(
        err(&plan(r#", "scope": "worker""#)),
        "plans.p.limits[1].scope: `worker` is not a scope (`fleet` or `envoy`)"
    );
}

fn with_payments(plan_extra: &str, payments: &str) -> String {
    format!(
        r#"{{"plans": {{"p": {{"limits": [{{"name": "daily", "requests": 5, "window": "day"}},
                                          {{"name": "tok", "tokens": 5, "window": "day"}}]{plan_extra}}}}},
            "consumers": {{"a": {{"plan": "p", "keys": ["k"]}}}}{payments}}}"#
    )
}

const PACK: &str = r#"{"name": "ten", "credits": 10, "network": "eip155:84532",
    "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "amount": "10000",
    "pay_to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "extra": {"name": "USDC", "version": "2"}}"#;

fn payments_section(packs: &str) -> String {
    format!(
        r#", "payments": {{"facilitator": {{"cluster": "f", "url": "http://f/x402"}},
             "resource": {{"url": "https://api.example.com/"}}, "packs": [{packs}]}}"#
    )
}

#[test]
fn payments_are_validated_naming_the_field() {
    let ok = Config::from_json(
        with_payments(r#", "credits": ["daily"]"#, &payments_section(PACK)).as_bytes(),
    )
    .unwrap();
    assert_eq!(ok.plans[0].credits, vec![0]);
    // Fleet mode sells credits that stand in for request limits.
    let fleet = with_payments(
        r#", "credits": ["daily"]"#,
        &format!(
            r#"{}, "store": {{"rls": {{"cluster": "q"}}}}"#,
            payments_section(PACK)
        ),
    );
    assert!(Config::from_json(fleet.as_bytes()).unwrap().store.is_some());
    let p = ok.payments.unwrap();
    assert_eq!((p.authority.as_str(), p.base_path.as_str()), ("f", "/x402"));
    assert_eq!(p.packs[0].offer.max_timeout_seconds, 60);
    let cases = [
        (
            with_payments(r#", "credits": ["daily"]"#, ""),
            "plans.p.credits: credits are bought through `payments`",
        ),
        (
            with_payments(r#", "credits": ["nope"]"#, &payments_section(PACK)),
            "plans.p.credits[0]: plan `p` has no limit `nope`",
        ),
        (
            with_payments(r#", "credits": ["daily", "tok"]"#, &payments_section(PACK)),
            "plans.p.credits[1]: credits are counted in one unit; `tok` counts tokens, the limits before it requests",
        ),
        (
            with_payments(
                r#", "credits": ["daily", "daily"]"#,
                &payments_section(PACK),
            ),
            "plans.p.credits[1]: listed twice",
        ),
        (
            with_payments("", &payments_section(&PACK.replace("10000", "0"))),
            "payments.packs[0].amount",
        ),
        (
            with_payments("", &payments_section(&PACK.replace("eip155:84532", "base"))),
            "payments.packs[0].network",
        ),
        (
            with_payments("", &payments_section(&PACK.replace("0x2096", "0x96"))),
            "payments.packs[0].pay_to",
        ),
        (
            with_payments(
                "",
                &payments_section(&format!(
                    "{PACK}, {}",
                    PACK.replace("\"ten\"", "\"eleven\"")
                )),
            ),
            "payments.packs[1].amount: pack `ten` has the same",
        ),
        (
            with_payments("", &payments_section("")),
            "payments.packs: from 1 to 8 packs",
        ),
        (
            with_payments(
                "",
                &payments_section(&PACK.replace("\"credits\": 10", "\"credits\": 0")),
            ),
            "payments.packs[0].credits",
        ),
        (
            with_payments(
                "",
                &payments_section(PACK).replace("http://f/x402", "f/x402"),
            ),
            "payments.facilitator.url",
        ),
        (
            with_payments(
                "",
                &payments_section(
                    &PACK.replace(r#", "extra": {"name": "USDC", "version": "2"}"#, ""),
                ),
            ),
            "payments.packs[0].extra: an EVM pack names its token's EIP-712 domain",
        ),
        (
            with_payments(r#", "credits": ["daily"]"#, &payments_section(PACK)).replacen(
                '{',
                r#"{"anonymous_plan": "p", "#,
                1,
            ),
            "anonymous_plan: plan `p` has credits",
        ),
        (
            with_payments(
                r#", "credits": ["tok"]"#,
                &format!(
                    r#"{}, "store": {{"rls": {{"cluster": "q"}}}}"#,
                    payments_section(PACK)
                ),
            ),
            "plans.p.credits: in fleet mode (store.rls), credits stand in for request limits",
        ),
        (
            with_payments(
                r#", "credits": ["daily"]"#,
                &format!(
                    r#"{}, "store": {{"rls": {{"cluster": "q"}}}}"#,
                    payments_section(PACK)
                ),
            )
            .replace(r#""tokens": 5, "window": "day""#, r#""tokens": 5, "window": "day", "scope": "envoy""#),
            "plans.p.limits: `tok` is counted per Envoy (scope: envoy)",
        ),
    ];
    for (json, expected) in cases {
        let e = err(&json);
        assert!(
            e.contains(expected),
            "{json}\n=> {e}\n(expected {expected})"
        );
    }
}

#[test]
fn payments_show_in_the_summary_and_an_inline_facilitator_secret_is_warned_about() {
    let json = with_payments(r#", "credits": ["daily"]"#, &payments_section(PACK));
    let config = Config::from_json(json.as_bytes()).unwrap();
    assert!(
        config
            .summary()
            .ends_with(", payments (1 pack, facilitator cluster f)"),
        "{}",
        config.summary()
    );
    let about = |json: &str| -> Vec<String> {
        warnings(json.as_bytes())
            .into_iter()
            .filter(|w| w.starts_with("payments"))
            .collect()
    };
    assert!(about(&json).is_empty());
    let inline = json.replace(
        r#""url": "http://f/x402""#,
        r#""url": "http://f/x402", "authorization": "Bearer SECRET""#,
    );
    let found = about(&inline);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with(
        "payments.facilitator.authorization: the secret is in the plugin configuration"
    ));
    assert!(found[0].contains("TOLLGATE_FACILITATOR_AUTH") && !found[0].contains("SECRET"));
}

#[test]
fn http_payment_takes_its_secret_from_the_vm_environment_and_offers_evm_packs() {
    let section = |http: &str| {
        payments_section(PACK).replacen(
            r#""packs": ["#,
            &format!(r#""http_payment": {http}, "packs": ["#),
            1,
        )
    };
    let env = |name: &str| match name {
        "SECRET" => Some("s".repeat(32)),
        "SHORT" => Some("s".repeat(31)),
        _ => None,
    };
    let load = |http: &str| {
        Config::from_json_in(with_payments("", &section(http)).as_bytes(), &env).map_err(|e| e.0)
    };
    let ok = load(r#"{"realm": "api.example.com", "secret_env": "SECRET"}"#).unwrap();
    assert!(
        ok.summary().ends_with(
            ", payments (1 pack, facilitator cluster f, HTTP Payment realm api.example.com)"
        ),
        "{}",
        ok.summary()
    );
    let http = ok.payments.unwrap().http_payment.unwrap();
    assert_eq!(http.realm, "api.example.com");
    assert_eq!(http.secret.0.len(), 32);
    assert_eq!(format!("{http:?}").matches("sss").count(), 0, "{http:?}");
    let challenge = http.requests[0].clone().unwrap();
    let (request, chain) = (challenge.request, challenge.chain_id);
    assert_eq!(challenge.description, "10 credits");
    assert_eq!(chain, 84532);
    use base64::Engine as _;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&request)
        .unwrap();
    let request: crate::paymentauth::ChargeRequest = serde_json::from_slice(&json).unwrap();
    assert_eq!(request.amount, "10000");
    assert_eq!(request.external_id.as_deref(), Some("ten"));
    assert_eq!(request.method_details.credential_types, ["authorization"]);
    let cases = [
        (
            r#"{"realm": "api.example.com", "secret_env": "MISSING"}"#,
            "payments.http_payment.secret_env: environment variable `MISSING` is not set in the Wasm VM",
        ),
        (
            r#"{"realm": "api.example.com", "secret_env": "SHORT"}"#,
            "payments.http_payment.secret_env: environment variable `SHORT` holds fewer than 32 bytes",
        ),
        (
            r#"{"realm": "api.example.com", "secret_env": "not a name"}"#,
            "payments.http_payment.secret_env: must be the name of an environment variable",
        ),
        (
            r#"{"realm": "api \"x\"", "secret_env": "SECRET"}"#,
            "payments.http_payment.realm: 1-128 characters",
        ),
        (
            r#"{"realm": "a|b", "secret_env": "SECRET"}"#,
            "payments.http_payment.realm",
        ),
        (
            r#"{"realm": "api.example.com", "secret": "inline"}"#,
            "unknown field `secret`",
        ),
    ];
    for (http, expected) in cases {
        let e = load(http).unwrap_err();
        assert!(
            e.contains(expected),
            "{http}\n=> {e}\n(expected {expected})"
        );
        assert!(!e.contains(&"s".repeat(31)), "{e}");
    }
    // Only packs on an EVM chain have a challenge; none at all is an error.
    let solana = PACK
        .replace("eip155:84532", "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp")
        .replace(r#", "extra": {"name": "USDC", "version": "2"}"#, "");
    let json = with_payments("", &payments_section(&solana)).replacen(
        r#""packs": ["#,
        r#""http_payment": {"realm": "r", "secret_env": "SECRET"}, "packs": ["#,
        1,
    );
    let e = Config::from_json_in(json.as_bytes(), &env).unwrap_err().0;
    assert!(e.contains("no pack is on an EVM chain"), "{e}");

    // x402 off: challenges only, which needs them; offers and v1 members gone.
    let only = with_payments(
        r#", "credits": ["daily"]"#,
        &section(r#"{"realm": "r", "secret_env": "SECRET"}, "x402": false"#),
    );
    let p = Config::from_json_in(only.as_bytes(), &env)
        .unwrap()
        .payments
        .unwrap();
    assert_eq!((p.x402, p.x402_offers()), (false, None));
    assert!(p.v1_body.accepts.is_empty());
    let none = with_payments(
        "",
        &payments_section(PACK).replacen(r#""packs": ["#, r#""x402": false, "packs": ["#, 1),
    );
    let e = Config::from_json_in(none.as_bytes(), &env).unwrap_err().0;
    assert!(
        e.starts_with("payments.x402: false leaves nothing to pay with"),
        "{e}"
    );
    // The `Payment` scheme is the credential's, never an API key's; a key in `Authorization`
    // is warned about (HTTP Payment clients send their credential there).
    let with_source = |scheme: &str| {
        with_payments("", &section(r#"{"realm": "r", "secret_env": "SECRET"}"#)).replacen(
            '{',
            &format!(r#"{{"credentials": [{{"authorization": "{scheme}"}}], "#),
            1,
        )
    };
    let e = Config::from_json_in(with_source("Payment").as_bytes(), &env)
        .unwrap_err()
        .0;
    assert!(
        e.starts_with("credentials[0].authorization: the `Payment` scheme"),
        "{e}"
    );
    let header_source = with_payments("", &payments_section(PACK)).replacen(
        '{',
        r#"{"credentials": [{"header": "x-api-key"}, {"header": "payment-signature"}], "#,
        1,
    );
    let e = err(&header_source);
    assert!(
        e.starts_with("credentials[1].header: a payment header"),
        "{e}"
    );
    let bearer = with_source("Bearer");
    assert!(Config::from_json_in(bearer.as_bytes(), &env).is_ok());
    let said = warnings(bearer.as_bytes());
    assert!(
        said.iter().any(|w| w.starts_with("payments.http_payment: API keys are read from `Authorization`")),
        "{said:?}"
    );
    assert!(warnings(
        with_payments("", &section(r#"{"realm": "r", "secret_env": "S"}"#)).as_bytes()
    )
    .iter()
    .all(|w| !w.starts_with("payments.http_payment")));
}
