//! A bad plugin configuration is refused by Envoy itself (on_configure fails, Envoy does not
//! start), with one tollgate log line that names the field.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tollgate_testkit::*;

fn refused(json: &str) -> String {
    let failure = match Envoy::try_start(Options {
        plugin: Some(json.to_string()),
        ..Options::default()
    }) {
        Ok(envoy) => panic!(
            "Envoy accepted a bad configuration:\n{json}\nlog:\n{}",
            envoy.log()
        ),
        Err(failure) => failure,
    };
    assert_ne!(
        failure.status, "exit status: 0",
        "Envoy must exit with an error"
    );
    let lines: Vec<&str> = failure
        .log
        .lines()
        .filter(|l| l.contains("wasm log tollgate") && l.contains("configuration refused"))
        .collect();
    assert!(
        !lines.is_empty(),
        "no tollgate error line for:\n{json}\nlog:\n{}",
        failure.log
    );
    assert!(
        failure.log.contains("Unable to create Wasm"),
        "Envoy did not report the plugin failure:\n{}",
        failure.log
    );
    lines[0].to_string()
}

#[test]
fn bad_configurations_are_refused_with_a_line_naming_the_field() {
    let plans =
        r#""plans": {"free": {"limits": [{"name": "daily", "requests": 10, "window": "day"}]}}"#;
    let cases = [
        ("{\n  \"plans\": {\n    \"free\": {\"limits\": [}\n  }\n}".to_string(), "invalid JSON at line 3 column 25 of the plugin configuration: expected value"),
        (format!(r#"{{{plans}, "consumer": {{}}}}"#), "unknown field `consumer`"),
        (r#"{"plans": {"free": {"limits": [{"name": "daily", "requets": 10, "window": "day"}]}}}"#.to_string(), "plans.free.limits[0]: unknown field `requets`, expected one of `name`, `requests`, `tokens`, `units`, `unit`, `window`, `status`, `scope`"),
        (r#"{"plans": {"free": {"limits": [{"name": "daily", "requests": "100", "window": "day"}]}}}"#.to_string(), "plans.free.limits[0].requests: expected a whole number, found a string (write numbers without quotes)"),
        (format!(r#"{{{plans}, "consumers": {{"acme": {{"plan": "gold", "keys": ["k"]}}}}}}"#), "consumers.acme.plan: plan `gold` does not exist (plans: free)"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "keys": ["k1"]}}, "b": {{"plan": "free", "keys": ["k1"]}}}}}}"#), "consumers.b.keys[0]: this key is listed twice (also a key of consumer `a`)"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 10, "window": "fortnight"}]}}}"#.to_string(), "plans.p.limits[0].window: `fortnight` is not a window"),
        (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 0, "window": "day"}]}}}"#.to_string(), "plans.p.limits[0].requests: must be greater than 0"),
        (format!(r#"{{{plans}, "anonymous_plan": "nope"}}"#), "anonymous_plan: plan `nope` does not exist"),
        (format!(r#"{{{plans}, "billing_url": "http://example.com/pay"}}"#), "billing_url: `http://example.com/pay` is not an https URL"),
        (r#"{"plans": {"free": {"limits": [], "upgrade_url": "https://example.com/up grade"}}}"#.to_string(), "plans.free.upgrade_url: `https://example.com/up grade` has characters a URL cannot contain"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "billing_url": "https://k1:secret@example.com/"}}}}}}"#), "consumers.a.billing_url: the URL has user information"),
        (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "grace_until": "2027-01-01T00:00:00Z"}}}}}}"#), "consumers.a.grace_until: applies only to \"status\": \"past_due\""),
    ];
    for (json, expected) in cases {
        let line = refused(&json);
        assert!(
            line.contains(expected),
            "for {json}\nwant: {expected}\n got: {line}"
        );
        assert!(!line.contains("k1"), "keys are not logged: {line}");
    }
}

#[test]
fn a_refused_configuration_never_logs_a_key() {
    // A key where a list was expected, and a trailing comma after one: serde would quote the
    // value and the excerpt would show the line; both are redacted.
    for json in [
        r#"{"plans": {"p": {"limits": []}}, "consumers": {"a": {"plan": "p", "keys": "sk_live_SECRET123"}}}"#,
        r#"{"plans": {"p": {"limits": []}}, "consumers": {"a": {"plan": "p", "keys": ["sk_live_SECRET123"],}}}"#,
    ] {
        let failure = match Envoy::try_start(Options {
            plugin: Some(json.into()),
            ..Options::default()
        }) {
            Ok(_) => panic!("accepted {json}"),
            Err(f) => f,
        };
        assert!(
            failure.log.contains("configuration refused"),
            "{}",
            failure.log
        );
        assert!(
            !failure.log.contains("SECRET"),
            "the key was logged:\n{}",
            failure.log
        );
    }
}

#[test]
fn the_json_syntax_error_line_shows_the_offending_text_with_a_caret() {
    let line = refused("{\"plans\": {\"free\": {\"limits\": [}}}");
    assert!(line.contains("line 1 column 32"), "{line}");
    assert!(
        line.contains("{\"plans\": {\"free\": {\"limits\": [}}}"),
        "{line}"
    );
    assert!(line.trim_end().ends_with('^'), "{line}");
}
