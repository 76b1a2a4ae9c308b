//! The fuzz harnesses: one function of raw bytes per target, shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/<target>.rs`) and by the main crate's `tests/fuzz_regressions.rs`, which
//! replays every saved input under `fuzz/regressions/<target>/` in `make test`.
//!
//! Each harness decodes its input itself (no `arbitrary`), so that a saved input replays exactly
//! as the fuzzer ran it without the main crate depending on a fuzz-only crate, and so that the
//! seeds are easy to write by hand. A harness panics only on a finding: a panic inside tollgate
//! (or an arithmetic overflow: the fuzz build has overflow checks on), or a broken property.

use std::collections::HashMap;

use tollgate::config::{Config, Limit, Plan};
use tollgate::credentials::Source;
use tollgate::credentials::{extract, percent_decode, strip_query_param, Credential};
use tollgate::memo::Memo;
use tollgate::quota::{check_and_take, create_records, peek};
use tollgate::response::{rate_limit_policy, rate_limit_state};
use tollgate::shadow_log::ShadowLog;
use tollgate::store::{MemoryStore, Store};
use tollgate::time::{civil_from_days, days_from_civil, days_in_month, format_rfc3339};
use tollgate::time::{parse_rfc3339, DAY};
use tollgate::verdict::{handle, Action, Verdict};
use tollgate::window::{Bounds, Window, MAX_FIXED_SECONDS};

/// A fixed "now" for the harnesses that do not take it from the input: 2026-11-18T11:06:40Z.
pub const NOW: i64 = 1_795_000_000;

/// Largest calendar offset the configuration accepts (`calendar_utc_offset`: ±14:00).
pub const MAX_UTC_OFFSET: i64 = 14 * 3600;

/// `Window::bounds(now, offset)` is exact (start <= now < end, aligned, right length) for every
/// window and every offset within ±14 h when `|now| <= WINDOW_DOMAIN`: i64::MAX less 367 days
/// (about ±2.9e11 years). Beyond it the arithmetic can overflow (a `month` that ends after
/// i64::MAX, `now + offset` itself); the host's clock (u64 nanoseconds since the epoch, as
/// seconds) stays below 1.9e10, so the filter never gets there.
pub const WINDOW_DOMAIN: i64 = i64::MAX - 367 * DAY;

/// First and last second that RFC 3339 (four-digit years) can write: 0000-01-01T00:00:00Z and
/// 9999-12-31T23:59:59Z.
pub const RFC3339_MIN: i64 = -62_167_219_200;
pub const RFC3339_MAX: i64 = 253_402_300_799;

/// Reads fixed-size values off the front of the input; past its end, zeros.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((first, rest)) => {
                self.0 = rest;
                *first
            }
            None => 0,
        }
    }

    fn i64(&mut self) -> i64 {
        let mut buf = [0u8; 8];
        for b in &mut buf {
            *b = self.u8();
        }
        i64::from_le_bytes(buf)
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}

// A model written apart from src/credentials.rs on purpose: the harness checks extraction
// against it, so it must not share the code under test.
fn trim(bytes: &[u8]) -> &[u8] {
    let is_space = |c: &u8| *c == b' ' || *c == b'\t';
    let start = bytes
        .iter()
        .position(|c| !is_space(c))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|c| !is_space(c))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn percent_encode_all(bytes: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for b in bytes {
        out.extend([b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
    }
    out
}

/// Checks what every verdict must satisfy, whatever the request.
fn check_verdict(config: &Config, verdict: &Verdict) {
    match &verdict.action {
        Action::Forward(forward) => {
            // Identity headers a client sent never survive: each is removed, or set (which
            // replaces every value the client sent).
            for identity in [&config.consumer_header, &config.plan_header] {
                let set = forward
                    .set_headers()
                    .iter()
                    .any(|(name, _)| name == identity);
                assert!(
                    set || forward.removed().contains(&identity.as_str()),
                    "{identity}"
                );
            }
            for (name, value) in &forward.response_headers() {
                assert!(name.starts_with("ratelimit"), "{name}");
                assert!(
                    value.bytes().all(|c| (b' '..0x7f).contains(&c)),
                    "{value:?}"
                );
            }
        }
        // Fleet mode only (the fuzzed configurations have no store).
        Action::Wait(_) => {}
        Action::Draw(_) => assert!(config.store.is_some() && config.payments.is_some()),
        // A payment claimed: only with `payments` configured.
        Action::Pay(_) => assert!(config.payments.is_some()),
        Action::Reply(reply) => {
            if reply.grpc_status.is_some() {
                return;
            }
            let body: serde_json::Value =
                serde_json::from_str(&reply.body).expect("a reply body is JSON");
            if reply.status == 200 {
                assert!(body.get("consumer").is_some(), "usage document: {body}");
            } else if reply.status != 405 {
                assert!((400..=599).contains(&reply.status), "{}", reply.status);
                assert_eq!(
                    body.get("status").and_then(serde_json::Value::as_u64),
                    Some(u64::from(reply.status))
                );
            }
            for (_, value) in &reply.headers {
                assert!(!value.contains(['\r', '\n']), "{value:?}");
            }
        }
    }
}

/// (consumer, plaintext key) pairs of a configuration, in document order.
fn plaintext_keys(json: &[u8]) -> Vec<(String, String)> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let Some(consumers) = value.get("consumers").and_then(|c| c.as_object()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, consumer) in consumers {
        let keys = consumer.get("keys").and_then(|k| k.as_array());
        for key in keys.into_iter().flatten().filter_map(|k| k.as_str()) {
            if !key.starts_with("sha256:") {
                out.push((name.clone(), key.to_string()));
            }
        }
    }
    out
}

/// A request with these headers (first occurrence of a name wins).
fn fake_request(headers: Vec<(String, Vec<u8>)>) -> impl FnMut(&str) -> Option<Vec<u8>> {
    let mut map: HashMap<String, Vec<u8>> = HashMap::new();
    for (name, value) in headers {
        map.entry(name).or_insert(value);
    }
    move |name: &str| map.get(name).cloned()
}

const REQUEST_PATH: &str = "/fuzz/request";

/// `config`: the bytes are the plugin configuration. `Config::from_json` must never panic; a
/// configuration it accepts must be usable: records created, and requests (no credential, each
/// plaintext key through the first credential source) handled, at three instants. A key of an
/// active, unexpired consumer is admitted on its consumer's first request.
pub fn config(data: &[u8]) {
    let Ok(config) = Config::from_json(data) else {
        return;
    };
    assert!(!config.plans.is_empty());
    assert!(!config.credentials.is_empty());
    for consumer in &config.consumers {
        let plan = config.plan_of(consumer).expect("a consumer's plan exists");
        assert!(plan.limits.iter().all(|l| l.requests > 0));
    }
    let store = MemoryStore::new();
    create_records(&config, &store).expect("a MemoryStore does not fail");
    let keys = plaintext_keys(data);
    let mut counted: Vec<&str> = Vec::new();
    for now in [NOW, NOW + 1, NOW + 40 * DAY] {
        let mut anonymous = fake_request(vec![
            (":method".into(), b"GET".to_vec()),
            (":path".into(), REQUEST_PATH.into()),
        ]);
        check_verdict(
            &config,
            &handle(
                &config,
                &mut anonymous,
                now,
                &store,
                &Memo::default(),
                &ShadowLog::default(),
            ),
        );
        for (consumer_name, key) in keys.iter().take(8) {
            let Some(first) = config.credentials.first() else {
                return;
            };
            let mut headers = vec![(":method".to_string(), b"GET".to_vec())];
            let mut path = REQUEST_PATH.as_bytes().to_vec();
            let exact = match first {
                Source::Header(name) => {
                    headers.push((name.clone(), key.clone().into_bytes()));
                    trim(key.as_bytes()) == key.as_bytes()
                }
                Source::Authorization(scheme) => {
                    headers.push(("authorization".into(), format!("{scheme} {key}").into()));
                    trim(key.as_bytes()) == key.as_bytes()
                }
                Source::Query(name) => {
                    path.push(b'?');
                    path.extend(percent_encode_all(name.as_bytes()));
                    path.push(b'=');
                    path.extend(percent_encode_all(key.as_bytes()));
                    true
                }
            };
            headers.push((":path".into(), path));
            let verdict = handle(
                &config,
                &mut fake_request(headers),
                now,
                &store,
                &Memo::default(),
                &ShadowLog::default(),
            );
            check_verdict(&config, &verdict);
            let Some(consumer) = config.consumers.iter().find(|c| c.name() == *consumer_name)
            else {
                panic!("consumer {consumer_name} of the JSON is not in the configuration");
            };
            let in_good_standing = consumer.standing(now).admitted();
            let first_request = !counted.contains(&consumer_name.as_str());
            if exact
                && in_good_standing
                && first_request
                && config.usage_path.as_deref() != Some(REQUEST_PATH)
            {
                let Action::Forward(forward) = &verdict.action else {
                    panic!("the first request of {consumer_name} was refused: {verdict:?}");
                };
                assert!(forward
                    .set_headers()
                    .contains(&(config.consumer_header.as_str(), consumer.name())));
                counted.push(consumer_name.as_str());
            }
        }
    }
}

const API_KEY: &str = "x-api-key";

/// `credentials`: the first byte says which of `x-api-key`, `authorization` and `:path` the
/// request carries (bits 0, 1, 2) and in which of the six orders the sources
/// `{"header":"x-api-key"}`, `{"authorization":"Bearer"}`, `{"query":"api_key"}` are tried
/// (byte >> 3, mod 6); the rest, split at `\n`, is their values in that order.
pub fn credentials(data: &[u8]) {
    let mut input = Bytes(data);
    let flags = input.u8();
    let mut parts = input.rest().splitn(3, |c| *c == b'\n');
    let header = parts.next().unwrap_or_default();
    let authorization = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let present = |bit: u8| flags & (1 << bit) != 0;
    let lookup = |name: &str| -> Option<Vec<u8>> {
        match name {
            API_KEY if present(0) => Some(header.to_vec()),
            "authorization" if present(1) => Some(authorization.to_vec()),
            ":path" if present(2) => Some(path.to_vec()),
            _ => None,
        }
    };
    let all = [
        Source::Header(API_KEY.into()),
        Source::Authorization("bearer".into()),
        Source::Query("api_key".into()),
    ];
    const ORDERS: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let order = ORDERS[usize::from(flags >> 3) % ORDERS.len()];
    let sources: Vec<Source> = order.iter().map(|i| all[*i].clone()).collect();

    let found = extract(&sources, lookup);
    // The first present source decides: the same as asking each source alone, in order.
    let alone: Vec<Credential> = sources
        .iter()
        .map(|s| extract(std::slice::from_ref(s), lookup))
        .collect();
    let expected = alone
        .iter()
        .enumerate()
        .find(|(_, c)| **c != Credential::Missing)
        .map_or(Credential::Missing, |(index, c)| match c {
            Credential::Key(p) => Credential::Key(tollgate::credentials::Presented {
                key: p.key.clone(),
                source: index,
            }),
            other => other.clone(),
        });
    assert_eq!(found, expected);

    // Each source against an independent reading of its rule.
    for (source, got) in sources.iter().zip(&alone) {
        match source {
            Source::Header(_) => {
                let want = if !present(0) {
                    Credential::Missing
                } else if trim(header).is_empty() {
                    Credential::Malformed("the API key header is empty")
                } else {
                    Credential::Key(tollgate::credentials::Presented {
                        key: trim(header).to_vec(),
                        source: 0,
                    })
                };
                assert_eq!(*got, want);
            }
            Source::Authorization(scheme) => {
                let value = trim(authorization);
                let word_end = value
                    .iter()
                    .position(|c| *c == b' ' || *c == b'\t')
                    .unwrap_or(value.len());
                let ours = present(1) && value[..word_end].eq_ignore_ascii_case(scheme.as_bytes());
                match got {
                    Credential::Missing => assert!(!ours),
                    Credential::Malformed(_) => {
                        assert!(ours && trim(&value[word_end..]).is_empty())
                    }
                    Credential::Key(p) => {
                        assert!(ours);
                        assert_eq!(p.key, trim(&value[word_end..]));
                    }
                }
            }
            Source::Query(name) => {
                if let Credential::Key(p) = got {
                    assert!(!p.key.is_empty());
                }
                if !present(2) {
                    assert_eq!(*got, Credential::Missing);
                    continue;
                }
                // hide_credentials: the stripped path carries no key any more.
                let stripped = strip_query_param(path, name);
                if let Some(stripped) = &stripped {
                    let base = path.split(|c| *c == b'?').next().unwrap_or_default();
                    assert!(stripped.starts_with(base) && stripped.len() <= path.len());
                    let again = extract(std::slice::from_ref(source), |n: &str| {
                        (n == ":path").then(|| stripped.clone())
                    });
                    assert!(!matches!(again, Credential::Key(_)), "{again:?}");
                }
                if !path.contains(&b'#') {
                    // Without a fragment, the reader and the stripper see the same parameters.
                    assert_eq!(stripped.is_some(), *got != Credential::Missing);
                } else if matches!(got, Credential::Key(_)) {
                    assert!(stripped.is_some());
                }
            }
        }
    }

    for part in [header, authorization, path] {
        let escapes = part.iter().filter(|c| **c == b'%').count();
        match percent_decode(part) {
            Some(decoded) => {
                assert_eq!(decoded.len(), part.len() - 2 * escapes);
                assert_eq!(percent_decode(&percent_encode_all(&decoded)), Some(decoded));
            }
            None => assert!(escapes > 0),
        }
    }
}

/// `record`: the bytes are a consumer's shared-data value (as another version, a truncation or
/// a foreign plugin may have left it). Counting against it must never panic nor fail; a value
/// that is not a record is a fresh counter; a refusal writes nothing; `peek` agrees with
/// `check_and_take` and writes nothing.
pub fn record(data: &[u8]) {
    const KEY: &str = "tollgate:v1:consumer:fuzz";
    let limit = |name: &str, requests: u64, window: Window| Limit {
        name: name.into(),
        requests,
        unit: tollgate::config::Unit::Requests,
        window,
        window_text: String::new(),
        status: 402,
        per_envoy: false,
    };
    let plans = [
        vec![limit("a", 5, Window::Fixed(DAY))],
        vec![
            limit("a", 1, Window::Fixed(1)),
            limit("b", 3, Window::Month),
            limit("c", 999_999_999_999_999, Window::Week),
            limit("daily", 2, Window::Day),
        ],
    ];
    for limits in &plans {
        let plan = Plan {
            name: "p".into(),
            limits: limits.clone(),
            upgrade_url: None,
            max_output_tokens: None,
            credits: Vec::new(),
        };
        for (now, offset) in [(NOW, 0), (NOW + 40 * DAY, -MAX_UTC_OFFSET)] {
            let store = MemoryStore::new();
            store
                .set(KEY, data, 0)
                .expect("a MemoryStore does not fail");
            let before = peek(&store, KEY, limits, now, offset).expect("peek");
            assert_eq!(store.value(KEY).as_deref(), Some(data), "peek wrote");
            let counted = check_and_take(&store, KEY, limits, &[], now, offset)
                .expect("counting against an existing record does not fail");
            assert_eq!((counted.usages.len(), counted.attempts), (limits.len(), 1));
            if counted.replaced_corrupt {
                assert!(counted.admitted, "a corrupt value is a fresh counter");
                assert!(counted.usages.iter().all(|u| u.used == 1));
            }
            for ((usage, was), limit) in counted.usages.iter().zip(&before).zip(limits) {
                assert_eq!(usage.requests, limit.requests);
                assert_eq!(usage.bounds, was.bounds);
                assert_eq!(usage.used, was.used + u64::from(counted.admitted));
                assert!(usage.bounds.start < usage.bounds.end);
                let own = limit.window.bounds(now, offset);
                // The current window, or a later one another worker already counted in.
                assert!(usage.bounds == own || usage.bounds.start >= own.end);
                if counted.admitted {
                    assert!((1..=usage.requests).contains(&usage.used), "{usage:?}");
                } else {
                    assert_eq!(usage.violated, usage.used >= usage.requests);
                }
            }
            let _ = rate_limit_policy(&plan, &counted.usages);
            let _ = rate_limit_state(&plan, &counted.usages, now);
            if counted.admitted {
                // What was written is a record that reads back the same.
                let after = peek(&store, KEY, limits, now, offset).expect("peek");
                let used: Vec<u64> = after.iter().map(|u| u.used).collect();
                let want: Vec<u64> = counted.usages.iter().map(|u| u.used).collect();
                assert_eq!(used, want);
                let again = check_and_take(&store, KEY, limits, &[], now, offset).expect("count");
                assert!(
                    !again.replaced_corrupt,
                    "tollgate wrote a value it cannot read"
                );
            } else {
                assert!(counted.usages.iter().any(|u| u.violated));
                assert_eq!(store.value(KEY).as_deref(), Some(data), "a refusal wrote");
            }
        }
    }
}

/// Checks the window containing `now`; `offset` within ±14 h, `|now| <= WINDOW_DOMAIN`.
fn check_bounds(window: Window, now: i64, offset: i64) -> Bounds {
    let b = window.bounds(now, offset);
    assert!(
        b.start <= now && now < b.end,
        "{window:?} {now} {offset}: {b:?}"
    );
    let length = b.end - b.start;
    assert_eq!(b.seconds(), length);
    assert_eq!(b.seconds_to_reset(now), b.end - now);
    match window {
        Window::Fixed(n) => {
            assert_eq!(length, n);
            assert_eq!(b.start.rem_euclid(n), 0);
        }
        Window::Day | Window::Week | Window::Month => {
            let local = b.start + offset;
            assert_eq!(local.rem_euclid(DAY), 0, "{window:?} starts at 00:00 local");
            let day = local.div_euclid(DAY);
            let date = civil_from_days(day);
            match window {
                Window::Day => assert_eq!(length, DAY),
                Window::Week => {
                    assert_eq!(length, 7 * DAY);
                    assert_eq!((day + 3).rem_euclid(7), 0, "a week starts on Monday");
                }
                _ => {
                    assert_eq!(date.day, 1, "a month starts on the 1st");
                    assert_eq!(
                        length,
                        i64::from(days_in_month(date.year, date.month)) * DAY
                    );
                }
            }
        }
    }
    b
}

/// `window`: 8 bytes `now`, 8 bytes offset, 8 bytes a fixed length (all little-endian i64),
/// then a window text. `Window::parse` must never panic and only accept 1 s..=366 d;
/// `bounds` must be exact inside `WINDOW_DOMAIN` (see there), including the first and the
/// last second of the window; `format_rfc3339` must never panic, and `parse_rfc3339` must read
/// back exactly what it wrote in the years 0000-9999 and refuse it outside them.
pub fn window(data: &[u8]) {
    let mut input = Bytes(data);
    let now = input.i64();
    let offset = input.i64() % (MAX_UTC_OFFSET + 1);
    let fixed = input.i64().rem_euclid(MAX_FIXED_SECONDS) + 1;
    let text = input.rest();

    let mut windows = vec![
        Window::Fixed(1),
        Window::Fixed(fixed),
        Window::Fixed(MAX_FIXED_SECONDS),
        Window::Day,
        Window::Week,
        Window::Month,
    ];
    if let Ok(text) = std::str::from_utf8(text) {
        if let Ok(parsed) = Window::parse(text) {
            if let Window::Fixed(n) = parsed {
                assert!((1..=MAX_FIXED_SECONDS).contains(&n), "{text:?} -> {n}");
            }
            windows.push(parsed);
        }
        // RFC 3339 text: whatever parses formats back to the same instant.
        if let Ok(at) = parse_rfc3339(text) {
            let written = format_rfc3339(at);
            if (RFC3339_MIN..=RFC3339_MAX).contains(&at) {
                assert_eq!(parse_rfc3339(&written), Ok(at), "{text:?}");
            }
            let canonical = text.len() == 20
                && text.ends_with('Z')
                && text.as_bytes()[10] == b'T'
                && text.get(17..19) != Some("60");
            if canonical {
                assert_eq!(written, text);
            }
        }
    }

    if now.unsigned_abs() <= WINDOW_DOMAIN.unsigned_abs() {
        for window in windows {
            let b = check_bounds(window, now, offset);
            // The first and the last second belong to the window; the next second does not.
            if b.start.unsigned_abs() <= WINDOW_DOMAIN.unsigned_abs() {
                assert_eq!(window.bounds(b.start, offset), b);
            }
            if (b.end - 1).unsigned_abs() <= WINDOW_DOMAIN.unsigned_abs() {
                assert_eq!(window.bounds(b.end - 1, offset), b);
            }
            if b.end.unsigned_abs() <= WINDOW_DOMAIN.unsigned_abs() {
                assert_eq!(window.bounds(b.end, offset).start, b.end);
            }
        }
    }

    // Calendar: every instant formats; the civil date round-trips.
    let written = format_rfc3339(now);
    let date = civil_from_days(now.div_euclid(DAY));
    assert!((1..=12).contains(&date.month));
    assert!((1..=days_in_month(date.year, date.month)).contains(&date.day));
    assert_eq!(
        days_from_civil(date.year, date.month, date.day),
        now.div_euclid(DAY)
    );
    if (RFC3339_MIN..=RFC3339_MAX).contains(&now) {
        assert_eq!(parse_rfc3339(&written), Ok(now), "{written}");
    } else {
        assert!(parse_rfc3339(&written).is_err(), "{written}");
    }
}

/// Two fixed configurations for `request`: (0) enforce, every credential source, hidden
/// credentials, an anonymous plan, the usage endpoint, a calendar offset; (1) shadow mode,
/// `on_store_error: allow`, CORS preflights authenticated, custom identity headers.
const REQUEST_CONFIGS: [&str; 2] = [
    r#"{
      "credentials": [{"header": "x-api-key"}, {"authorization": "Bearer"}, {"query": "api_key"}],
      "plans": {
        "free": {"limits": [{"name": "daily", "requests": 3, "window": "day"},
                            {"name": "burst", "requests": 2, "window": "10s", "status": 429}],
                 "upgrade_url": "https://example.com/upgrade?plan=free"},
        "trial": {"limits": [{"name": "monthly", "requests": 1, "window": "month"}]},
        "internal": {"limits": []}
      },
      "consumers": {
        "acme": {"plan": "free", "keys": ["acme-key", "k"]},
        "wayne": {"plan": "trial", "keys": ["wayne-key"], "expires_at": "2027-01-01T00:00:00Z"},
        "initech": {"plan": "free", "keys": ["initech-key"], "status": "suspended"},
        "ops": {"plan": "internal", "keys": ["ops-key"]},
        "stark": {"plan": "free", "keys": ["stark-key"], "status": "past_due",
                  "grace_until": "2027-01-01T00:00:00Z", "billing_url": "https://example.com/stark"}
      },
      "anonymous_plan": "trial",
      "billing_url": "https://example.com/billing",
      "usage_path": "/tollgate/usage",
      "hide_credentials": true,
      "calendar_utc_offset": "+05:30"
    }"#,
    r#"{
      "credentials": [{"query": "key"}, {"header": "x-key"}, {"authorization": "token"}],
      "plans": {
        "free": {"limits": [{"name": "daily", "requests": 1, "window": "week"}]}
      },
      "consumers": {
        "acme": {"plan": "free", "keys": ["acme-key", "k"], "expires_at": "2026-11-18T11:06:41Z"}
      },
      "mode": "shadow",
      "on_store_error": "allow",
      "cors_preflight": "authenticate",
      "consumer_header": "x-who",
      "plan_header": "x-plan",
      "usage_path": "/usage"
    }"#,
];

/// `request`: the first byte picks the configuration (bit 0) and the clock (NOW plus
/// `byte >> 1` days); the rest is header lines `name value` separated by `\n` (`:path`,
/// `:method` included; names are lowercased, the first occurrence wins). Two requests run
/// against one store; every verdict must be well formed, and with `hide_credentials` nothing
/// of the credential used may be forwarded.
pub fn request(data: &[u8]) {
    static CONFIGS: std::sync::OnceLock<Vec<Config>> = std::sync::OnceLock::new();
    let configs = CONFIGS.get_or_init(|| {
        REQUEST_CONFIGS
            .iter()
            .map(|json| Config::from_json(json.as_bytes()).expect("a valid configuration"))
            .collect()
    });
    let mut input = Bytes(data);
    let flags = input.u8();
    let config = &configs[usize::from(flags & 1)];
    let now = NOW + i64::from(flags >> 1) * DAY;
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    for line in input.rest().split(|c| *c == b'\n') {
        let space = line.iter().position(|c| *c == b' ').unwrap_or(line.len());
        let (name, value) = line.split_at(space);
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        headers.push((
            name.to_ascii_lowercase(),
            value.get(1..).unwrap_or_default().to_vec(),
        ));
    }
    let store = MemoryStore::new();
    create_records(config, &store).expect("a MemoryStore does not fail");
    for _ in 0..2 {
        let mut lookup = fake_request(headers.clone());
        let verdict = handle(
            config,
            &mut lookup,
            now,
            &store,
            &Memo::default(),
            &ShadowLog::default(),
        );
        check_verdict(config, &verdict);
        let Action::Forward(forward) = &verdict.action else {
            continue;
        };
        if !config.hide_credentials {
            continue;
        }
        let mut lookup = fake_request(headers.clone());
        let Credential::Key(presented) = extract(&config.credentials, &mut lookup) else {
            continue;
        };
        match &config.credentials[presented.source] {
            Source::Header(name) => assert!(forward.removed().contains(&name.as_str())),
            Source::Authorization(_) => assert!(forward.removed().contains(&"authorization")),
            Source::Query(name) => {
                let path = forward.path.as_ref().expect("the parameter is stripped");
                let source = Source::Query(name.clone());
                let again = extract(std::slice::from_ref(&source), |n: &str| {
                    (n == ":path").then(|| path.clone())
                });
                assert!(!matches!(again, Credential::Key(_)), "{again:?}");
            }
        }
    }
}

/// `rls_response`: the bytes as the body of a `ShouldRateLimit` answer (what fleet mode reads
/// from quotad or any rate limit service). Decoding never panics; a decoded answer holds no
/// more statuses than the bytes can encode (each takes at least two: its tag and its length);
/// and protobuf's rule for concatenated messages holds — the answer twice over decodes to its
/// statuses twice, the same overall code — so that no field is read from the wrong place.
/// `quotad::rls_response_agrees` checks the same bytes against `envoy-types`' decoder.
pub fn rls_response(data: &[u8]) {
    let Ok(response) = tollgate::rls::decode_response(data) else {
        return;
    };
    assert!(
        response.statuses.len() <= data.len() / 2,
        "{} statuses from {} bytes",
        response.statuses.len(),
        data.len()
    );
    let twice = [data, data].concat();
    let again = tollgate::rls::decode_response(&twice).expect("a message twice is a message");
    assert_eq!(again.overall, response.overall);
    assert_eq!(again.statuses.len(), 2 * response.statuses.len());
    let (first, second) = again.statuses.split_at(response.statuses.len());
    assert_eq!(first, response.statuses.as_slice());
    assert_eq!(second, response.statuses.as_slice());
}

/// The configuration of the `payment` harness: two packs (one also for x402 v1).
fn payment_config() -> &'static Config {
    static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
    CONFIG.get_or_init(|| {
        let json = r#"{
          "plans": {"p": {"limits": [{"name": "daily", "requests": 2, "window": "day"}], "credits": ["daily"]}},
          "consumers": {"a": {"plan": "p", "keys": ["k"]}},
          "payments": {
            "facilitator": {"cluster": "f", "url": "http://f/x402"},
            "resource": {"url": "https://api.example.com/"},
            "packs": [
              {"name": "s", "credits": 5, "network": "eip155:84532", "v1_network": "base-sepolia",
               "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "amount": "10000",
               "pay_to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "max_timeout_seconds": 3600,
               "extra": {"name": "USDC", "version": "2"}},
              {"name": "l", "credits": 50, "network": "eip155:84532",
               "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "amount": "90000",
               "pay_to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "max_timeout_seconds": 60,
               "extra": {"name": "USDC", "version": "2"}}
            ],
            "http_payment": {"realm": "api.example.com", "secret_env": "SECRET"}
          }
        }"#;
        let env = |_: &str| Some("0123456789abcdef0123456789abcdef".to_string());
        Config::from_json_in(json.as_bytes(), &env).expect("the payment harness's configuration")
    })
}

/// `payment`: a flags byte (bit 0: the value is an `X-PAYMENT`, else a `PAYMENT-SIGNATURE`;
/// bit 1 overrides both: an HTTP Payment credential, what follows `Payment `), the header value
/// up to the first `\n`, then what every claim shard holds. Reading a payment
/// never panics; one that is taken names a configured pack, pays its amount to its payee, and
/// gives the facilitator a JSON body with the pack's requirements; a refusal says why in a
/// bounded line that never repeats the value. Claiming and marking it against any shard content
/// never panics, and leaves every shard a JSON list within its bound.
pub fn payment(data: &[u8]) {
    use tollgate::counters::{payment_shard_key, PAYMENT_SHARDS};
    use tollgate::payments::{
        claim, mark, read, read_credential, stale_ms, Refused, State, MAX_CLAIMS_PER_SHARD,
        PAYMENT_SIGNATURE, X_PAYMENT,
    };
    let config = payment_config();
    let payments = config.payments.as_ref().expect("payments");
    let mut input = Bytes(data);
    let flags = input.u8();
    let mut parts = input.rest().splitn(2, |c| *c == b'\n');
    let value = parts.next().unwrap_or_default();
    let shards = parts.next().unwrap_or_default();
    let header = if flags & 1 == 1 {
        X_PAYMENT
    } else {
        PAYMENT_SIGNATURE
    };
    let now = NOW + i64::from(flags >> 2) * 3600;
    let read = if flags & 2 == 2 {
        read_credential(payments, "authorization", value, now, "a")
    } else {
        read(payments, header, value, now)
    };
    let presented = match read {
        Ok(p) => p,
        Err(Refused::Malformed(why) | Refused::Mismatch(why) | Refused::Credential(_, why)) => {
            assert!(why.len() < 300, "{why}");
            if value.len() >= 16 {
                let text = String::from_utf8_lossy(value);
                assert!(
                    !why.contains(text.as_ref()),
                    "the refusal repeats the value"
                );
            }
            return;
        }
    };
    let pack = payments
        .packs
        .get(presented.pack)
        .expect("a configured pack");
    assert_eq!(presented.replay.len(), 32);
    assert!(presented.replay.bytes().all(|b| b.is_ascii_hexdigit()));
    // Taken whatever its time (a claim may decide for it); one that can be settled now has
    // time left to be.
    if presented.untimely.is_none() {
        assert!(presented.valid_before >= now + tollgate::payments::MIN_VALID_SECONDS);
    }
    let body: serde_json::Value =
        serde_json::from_slice(&presented.call_body).expect("the facilitator's body is JSON");
    assert_eq!(body["x402Version"], u64::from(presented.version));
    let amount = if presented.version == 2 {
        &body["paymentRequirements"]["amount"]
    } else {
        &body["paymentRequirements"]["maxAmountRequired"]
    };
    assert_eq!(amount.as_str(), Some(pack.offer.amount.as_str()));
    let store = MemoryStore::new();
    for i in 0..PAYMENT_SHARDS {
        store
            .set(&payment_shard_key(i), shards, 0)
            .expect("a MemoryStore does not fail");
    }
    let stale = stale_ms(payments);
    let _ = claim(&store, &presented, "a", now * 1000, stale).expect("claim");
    for state in [
        Some(State::Settling),
        Some(State::Unknown),
        None,
        Some(State::Settled),
    ] {
        // A claim that is gone (never taken: the shard was full, or dropped) is an error.
        let _ = mark(&store, &presented.replay, state, now * 1000);
    }
    let _ = claim(&store, &presented, "b", now * 1000, stale).expect("claim");
    // Claims are only ever added within the bound (a shard someone else filled beyond it is
    // only ever shrunk).
    let original = serde_json::from_slice::<Vec<serde_json::Value>>(shards).map_or(0, |v| v.len());
    for i in 0..PAYMENT_SHARDS {
        let bytes = store.value(&payment_shard_key(i)).unwrap_or_default();
        if bytes == shards {
            continue;
        }
        let claims: Vec<serde_json::Value> =
            serde_json::from_slice(&bytes).expect("a written shard is a JSON list");
        assert!(claims.len() <= MAX_CLAIMS_PER_SHARD.max(original));
    }
}
