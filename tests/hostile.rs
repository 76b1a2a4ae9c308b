//! Hostile input: every request below gets a clear answer, and the filter keeps serving the
//! next request (no Wasm VM failure: with FAIL_CLOSED a trapped VM would refuse everything).

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tollgate_testkit::*;

const WEIRD_KEY: &str = "a:b/c%d e";

fn config() -> String {
    plugin(&format!(
        r#"{{
          "credentials": [{{"header": "x-api-key"}}, {{"authorization": "Bearer"}}, {{"query": "api_key"}}],
          "plans": {{
            "big": {{"limits": [{{"name": "daily", "requests": 100000, "window": "day"}}]}},
            "weird": {{"limits": [{{"name": "weird", "requests": 100000, "window": "day"}}]}}
          }},
          "consumers": {{
            "acme": {{"plan": "big", "keys": ["acme-key"]}},
            "odd": {{"plan": "weird", "keys": ["{WEIRD_KEY}"]}}
          }}
        }}"#
    ))
}

/// One hostile request: its expected status, then a valid request must still pass.
struct Case {
    what: &'static str,
    path: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    expect: &'static [u16],
}

fn case(
    what: &'static str,
    path: &str,
    headers: &[(&'static str, &[u8])],
    expect: &'static [u16],
) -> Case {
    Case {
        what,
        path: path.to_string(),
        headers: headers.iter().map(|(n, v)| (*n, v.to_vec())).collect(),
        expect,
    }
}

fn counted_as(r: &Response) -> Option<String> {
    let policy = r.header("ratelimit-policy")?;
    Some(policy.split(';').next()?.trim_matches('"').to_string())
}

#[test]
fn hostile_requests_get_clear_answers_and_the_filter_keeps_serving() {
    let envoy = Envoy::start(&config());
    let big_key = "k".repeat(8 * 1024);
    // Envoy's default header limit is 60 KiB; this key fits with room for the other headers.
    let huge_key = "k".repeat(59 * 1024);
    let over_limit_key = "k".repeat(61 * 1024);
    let long_query = format!("/?x={}&api_key=nope", "y".repeat(30 * 1024));
    let cases = vec![
        case("empty key", "/", &[("x-api-key", b"")], &[401]),
        case("whitespace key", "/", &[("x-api-key", b"   ")], &[401]),
        case(
            "8 KiB key",
            "/",
            &[("x-api-key", big_key.as_bytes())],
            &[401],
        ),
        case(
            "key just under the header limit",
            "/",
            &[("x-api-key", huge_key.as_bytes())],
            &[401],
        ),
        case(
            "key over the header limit (Envoy answers)",
            "/",
            &[("x-api-key", over_limit_key.as_bytes())],
            &[431],
        ),
        case(
            "non-ASCII UTF-8 key",
            "/",
            &[("x-api-key", "clé-ü".as_bytes())],
            &[401],
        ),
        case(
            "non-UTF-8 key",
            "/",
            &[("x-api-key", b"\xff\xfe\x80abc")],
            &[401, 400],
        ),
        case(
            "control character (Envoy's codec refuses)",
            "/",
            &[("x-api-key", b"a\x01b")],
            &[400, 401],
        ),
        case(
            "repeated header, wrong value first",
            "/",
            &[("x-api-key", b"wrong"), ("x-api-key", b"acme-key")],
            &[401],
        ),
        case(
            "Authorization with another scheme",
            "/",
            &[("authorization", b"Basic YWNtZS1rZXk6")],
            &[401],
        ),
        case(
            "Authorization, scheme without a key",
            "/",
            &[("authorization", b"Bearer")],
            &[401],
        ),
        case(
            "Authorization, key with inner space",
            "/",
            &[("authorization", b"Bearer acme key")],
            &[401],
        ),
        case(
            "two Authorization headers",
            "/",
            &[
                ("authorization", b"Bearer acme-key"),
                ("authorization", b"Bearer other"),
            ],
            &[401],
        ),
        case("empty query value", "/?api_key=", &[], &[401]),
        case("query parameter without =", "/?api_key", &[], &[401]),
        case("malformed percent-encoding", "/?api_key=%zz", &[], &[401]),
        case(
            "truncated percent-encoding",
            "/?api_key=acme-key%",
            &[],
            &[401],
        ),
        case("very long query", &long_query, &[], &[401]),
        case("percent-encoded NUL", "/?api_key=acme%00key", &[], &[401]),
        case(
            "spoofed identity headers, no key",
            "/",
            &[
                ("x-tollgate-consumer", b"acme"),
                ("x-tollgate-plan", b"big"),
            ],
            &[401],
        ),
    ];
    for c in &cases {
        let headers: Vec<(&str, &[u8])> =
            c.headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let r = request(envoy.port, "GET", &c.path, &headers);
        assert!(
            c.expect.contains(&r.status),
            "{}: got {} {:?}",
            c.what,
            r.status,
            r.body
        );
        if r.status == 401 {
            assert_eq!(
                r.header("content-type"),
                Some("application/problem+json"),
                "{}",
                c.what
            );
            assert!(r.json()["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:tollgate:problem:"));
            assert!(
                r.body.len() < 512,
                "{}: the body does not echo the input",
                c.what
            );
        }
        let next = envoy.get_with_key("acme-key");
        assert_eq!(next.status, 200, "after {}: {next:?}", c.what);
    }

    // Accepted oddities, each counted for the right consumer.
    type Accepted<'a> = (&'a str, String, Vec<(&'a str, &'a [u8])>, &'a str);
    let accepted: Vec<Accepted> = vec![
        (
            "repeated header, valid first: the first wins",
            "/".into(),
            vec![("x-api-key", b"acme-key"), ("x-api-key", b"wrong")],
            "daily",
        ),
        (
            "extra spaces around a Bearer key",
            "/".into(),
            vec![("authorization", b"Bearer     acme-key   ")],
            "daily",
        ),
        (
            "repeated query parameter: the first wins",
            "/?api_key=acme-key&api_key=wrong".into(),
            vec![],
            "daily",
        ),
        (
            "percent-encoded query key",
            "/?api_key=acme%2Dkey".into(),
            vec![],
            "daily",
        ),
        (
            "empty pairs around the key",
            "/?&&api_key=acme-key&&".into(),
            vec![],
            "daily",
        ),
        (
            "key with : / % and a space, as a header",
            "/".into(),
            vec![("x-api-key", WEIRD_KEY.as_bytes())],
            "weird",
        ),
        (
            "key with : / % and a space, percent-encoded in the query",
            "/?api_key=a%3Ab%2Fc%25d%20e".into(),
            vec![],
            "weird",
        ),
    ];
    for (what, path, headers, limit) in &accepted {
        let r = request(envoy.port, "GET", path, headers);
        assert_eq!(r.status, 200, "{what}: {r:?}");
        assert_eq!(counted_as(&r).as_deref(), Some(*limit), "{what}");
    }

    // No VM ever failed, nothing panicked, and no key reached the log.
    let log = envoy.log();
    for sign in [
        "panicked",
        "Uncaught",
        "Wasm VM failed",
        "Function: proxy_on",
    ] {
        assert!(!log.contains(sign), "the log shows a VM failure ({sign})");
    }
    let stats = envoy.stats();
    for line in [
        "wasm.tollgate.vm_reload: 0",
        "wasm.tollgate.vm_reload_failure: 0",
    ] {
        assert!(stats.contains(line), "{line} not in stats");
    }
    for key in ["acme-key", "clé", WEIRD_KEY] {
        assert!(!log.contains(key), "the log contains a key: {key}");
    }
}
