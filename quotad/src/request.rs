//! The protocol side: an RLS `RateLimitRequest` becomes a [`Decision`] (one consumer, its limits,
//! the Redis keys and TTLs at this instant), and the store's answer becomes a `RateLimitResponse`.
//!
//! The descriptor contract (quotad/README.md): each descriptor is one limit, its entries in this
//! order: `consumer`, `limit`, `window`, `requests`, optionally `utc_offset`. quotad keeps no copy
//! of any plan: everything it needs to decide is in the request.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tollgate::config::{parse_utc_offset, MAX_REQUESTS, STORE_PREFIX};
use tollgate::names::{valid_name, MAX_NAME_LEN};
use tollgate::window::{Bounds, Window};

/// Most descriptors (limits) in one request.
pub const MAX_DESCRIPTORS: usize = 16;
/// Largest `hits_addend`: a count of the largest limit, so that counts stay exact in Redis' Lua
/// numbers (doubles: exact to 2^53).
pub const MAX_HITS: u64 = MAX_REQUESTS;

/// Longest consumer value, in bytes: identities an identity provider issues (an e-mail
/// address, `auth0|5f…`, a URL-shaped subject) fit; a key part is never longer than a digest.
pub const MAX_CONSUMER_BYTES: usize = 512;

/// The consumer's part of a Redis key: the value itself when it is a name (what tollgate's
/// filter sends, and what keys have always held), else `~` and the first 32 hex digits of its
/// SHA-256 — any bytes, one key per value, nothing that could break the hash tag (`~` is not a
/// name character, so a digest never equals a name).
pub fn consumer_key(consumer: &str) -> String {
    if valid_name(consumer) {
        return consumer.to_string();
    }
    let hex = tollgate::sha256::to_hex(&tollgate::sha256::sha256(consumer.as_bytes()));
    format!("~{}", hex.get(..32).unwrap_or(&hex))
}

/// The entries of a descriptor, in contract order.
const ENTRIES: [&str; 5] = ["consumer", "limit", "window", "requests", "utc_offset"];

/// One limit of a request, resolved at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub limit: String,
    pub window: Window,
    pub requests: u64,
    pub hits: u64,
    pub bounds: Bounds,
    /// The Redis counter of this limit's current window.
    pub key: String,
    /// Seconds the key lives: to the window's end plus the margin.
    pub ttl: i64,
}

/// One request: a consumer and the limits it must fit in, all or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub consumer: String,
    pub asks: Vec<Ask>,
    pub now: i64,
}

/// What the store answered: admitted, and each counter's value before this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub admitted: bool,
    pub used: Vec<u64>,
}

fn name(what: &str, value: &str) -> Result<(), String> {
    if valid_name(value) {
        Ok(())
    } else {
        Err(format!(
            "{what} `{value}` must be 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 _ - ."
        ))
    }
}

/// Parses and checks a request at `now` (Unix seconds); `margin` is added to every TTL. The
/// error names the problem and the descriptor, for an `INVALID_ARGUMENT` status.
pub fn decide(request: &RateLimitRequest, now: i64, margin: i64) -> Result<Decision, String> {
    name("domain", &request.domain)?;
    if request.descriptors.is_empty() {
        return Err("no descriptors: each descriptor is one limit".into());
    }
    if request.descriptors.len() > MAX_DESCRIPTORS {
        return Err(format!(
            "{} descriptors; at most {MAX_DESCRIPTORS} limits are decided at once",
            request.descriptors.len()
        ));
    }
    // An unset request-wide hits_addend (0 in proto3) means 1.
    let default_hits = match request.hits_addend {
        0 => 1,
        n => u64::from(n),
    };
    let mut consumer: Option<String> = None;
    let mut asks: Vec<Ask> = Vec::with_capacity(request.descriptors.len());
    for (i, descriptor) in request.descriptors.iter().enumerate() {
        let parsed = parse_descriptor(descriptor, default_hits)
            .map_err(|e| format!("descriptor {i}: {e}"))?;
        match &consumer {
            None => consumer = Some(parsed.consumer.clone()),
            Some(c) if *c != parsed.consumer => {
                return Err(format!(
                "descriptor {i}: consumer `{}` differs from `{c}`: one request is one consumer's",
                parsed.consumer
            ))
            }
            Some(_) => {}
        }
        if asks.iter().any(|a| a.limit == parsed.limit) {
            return Err(format!(
                "descriptor {i}: limit `{}` appears twice in one request",
                parsed.limit
            ));
        }
        let bounds = parsed.window.bounds(now, parsed.utc_offset);
        let key = format!(
            "{STORE_PREFIX}{{{}:{}}}:{}:{}:{}",
            request.domain,
            consumer_key(&parsed.consumer),
            parsed.limit,
            parsed.window.canonical(),
            bounds.start
        );
        asks.push(Ask {
            limit: parsed.limit,
            window: parsed.window,
            requests: parsed.requests,
            hits: parsed.hits,
            bounds,
            key,
            ttl: (bounds.end - now).max(1).saturating_add(margin.max(0)),
        });
    }
    Ok(Decision {
        consumer: consumer.unwrap_or_default(),
        asks,
        now,
    })
}

struct Parsed {
    consumer: String,
    limit: String,
    window: Window,
    requests: u64,
    utc_offset: i64,
    hits: u64,
}

fn parse_descriptor(d: &RateLimitDescriptor, default_hits: u64) -> Result<Parsed, String> {
    if d.is_negative_hits {
        return Err("is_negative_hits is not supported: quotad never gives counts back".into());
    }
    if d.limit.is_some() {
        return Err(
            "a limit override is not supported: the size is the `requests` entry".to_string(),
        );
    }
    if d.entries.len() > ENTRIES.len() {
        let extra = d.entries.get(ENTRIES.len()).map(|e| e.key.as_str());
        return Err(format!(
            "unknown entry `{}`: the entries are consumer, limit, window, requests[, utc_offset]",
            extra.unwrap_or_default()
        ));
    }
    let mut values: [Option<&str>; 5] = [None; 5];
    for (at, entry) in d.entries.iter().enumerate() {
        let Some(expected) = ENTRIES.get(at) else {
            break;
        };
        if entry.key != *expected {
            return Err(if ENTRIES.contains(&entry.key.as_str()) {
                format!(
                    "entry {at} is `{}` where `{expected}` belongs: the entries are consumer, \
                     limit, window, requests[, utc_offset] in this order",
                    entry.key
                )
            } else {
                format!(
                    "unknown entry `{}` where `{expected}` belongs: the entries are consumer, \
                     limit, window, requests[, utc_offset]",
                    entry.key
                )
            });
        }
        if let Some(slot) = values.get_mut(at) {
            *slot = Some(entry.value.as_str());
        }
    }
    let [consumer, limit, window, requests, utc_offset] = values;
    let missing = |what: &str| format!("missing entry `{what}`");
    let consumer = consumer.ok_or_else(|| missing("consumer"))?;
    let limit = limit.ok_or_else(|| missing("limit"))?;
    let window_text = window.ok_or_else(|| missing("window"))?;
    let requests = requests.ok_or_else(|| missing("requests"))?;
    if consumer.is_empty() || consumer.len() > MAX_CONSUMER_BYTES {
        return Err(format!(
            "consumer: {} bytes; a consumer is 1-{MAX_CONSUMER_BYTES} bytes",
            consumer.len()
        ));
    }
    name("limit", limit)?;
    let window = Window::parse(window_text)?;
    let bad_requests =
        || format!("requests `{requests}` must be a whole number from 1 to {MAX_REQUESTS}");
    if requests.is_empty() || !requests.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad_requests());
    }
    let requests: u64 = requests.parse().map_err(|_| bad_requests())?;
    if requests == 0 || requests > MAX_REQUESTS {
        return Err(bad_requests());
    }
    let utc_offset = match utc_offset {
        None => 0,
        Some(text) => parse_utc_offset(text).map_err(|_| {
            format!("utc_offset `{text}` is not a fixed UTC offset like +05:30, -08:00 or Z")
        })?,
    };
    let hits = match &d.hits_addend {
        Some(v) => v.value,
        None => default_hits,
    };
    if hits > MAX_HITS {
        return Err(format!("hits_addend {hits} is more than {MAX_HITS}"));
    }
    Ok(Parsed {
        consumer: consumer.to_string(),
        limit: limit.to_string(),
        window,
        requests,
        utc_offset,
        hits,
    })
}

/// The RLS unit of a window, where one fits: fixed lengths other than one unit (`10s`) have none.
fn unit(window: Window) -> Option<Unit> {
    match window {
        Window::Fixed(1) => Some(Unit::Second),
        Window::Fixed(60) => Some(Unit::Minute),
        Window::Fixed(3600) => Some(Unit::Hour),
        Window::Fixed(86_400) | Window::Day => Some(Unit::Day),
        Window::Week => Some(Unit::Week),
        Window::Month => Some(Unit::Month),
        Window::Fixed(_) => None,
    }
}

fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The response to a decided request: `OVER_LIMIT` on the descriptors that did not fit (and
/// overall) when refused, with remaining counts as they stand (nothing was taken).
pub fn respond(decision: &Decision, outcome: &Outcome) -> RateLimitResponse {
    let statuses = decision
        .asks
        .iter()
        .enumerate()
        .map(|(i, ask)| {
            let used = outcome.used.get(i).copied().unwrap_or(0);
            let fits = used.saturating_add(ask.hits) <= ask.requests;
            let after = if outcome.admitted {
                used.saturating_add(ask.hits)
            } else {
                used
            };
            DescriptorStatus {
                code: if fits { Code::Ok } else { Code::OverLimit } as i32,
                current_limit: unit(ask.window).map(|unit| RateLimit {
                    name: ask.limit.clone(),
                    requests_per_unit: clamp_u32(ask.requests),
                    unit: unit as i32,
                }),
                limit_remaining: clamp_u32(ask.requests.saturating_sub(after)),
                duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: ask.bounds.seconds_to_reset(decision.now),
                    nanos: 0,
                }),
                quota: None,
            }
        })
        .collect();
    RateLimitResponse {
        overall_code: if outcome.admitted {
            Code::Ok
        } else {
            Code::OverLimit
        } as i32,
        statuses,
        ..RateLimitResponse::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    use envoy_types::pb::google::protobuf::UInt64Value;
    use tollgate::time::parse_rfc3339;
    use tollgate_testkit::rls::descriptor;

    fn request(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
        RateLimitRequest {
            domain: "tollgate".into(),
            descriptors,
            hits_addend: 0,
        }
    }

    fn limit(consumer: &str, limit: &str, window: &str, requests: &str) -> RateLimitDescriptor {
        descriptor(&[
            ("consumer", consumer),
            ("limit", limit),
            ("window", window),
            ("requests", requests),
        ])
    }

    #[test]
    fn keys_are_hash_tagged_by_consumer_and_live_to_the_window_end() {
        let now = parse_rfc3339("2026-11-25T13:00:00Z").unwrap();
        let d = decide(
            &request(vec![
                limit("acme", "daily", "day", "1000"),
                limit("acme", "burst", "10s", "5"),
            ]),
            now,
            60,
        )
        .unwrap();
        let day = parse_rfc3339("2026-11-25T00:00:00Z").unwrap();
        assert_eq!(
            d.asks[0].key,
            format!("tollgate:v1:{{tollgate:acme}}:daily:day:{day}")
        );
        assert_eq!(d.asks[0].ttl, 11 * 3600 + 60);
        assert_eq!(
            d.asks[1].key,
            format!("tollgate:v1:{{tollgate:acme}}:burst:10s:{now}")
        );
        assert_eq!(d.asks[1].ttl, 10 + 60);
        assert_eq!((d.asks[0].hits, d.asks[0].requests), (1, 1000));
    }

    #[test]
    fn a_month_at_an_offset_starts_at_local_midnight() {
        // 2026-11-30T20:00Z is already December 1st at +05:30.
        let now = parse_rfc3339("2026-11-30T20:00:00Z").unwrap();
        let mut m = limit("acme", "monthly", "month", "10");
        m.entries.push(Entry {
            key: "utc_offset".into(),
            value: "+05:30".into(),
        });
        let d = decide(&request(vec![m]), now, 0).unwrap();
        let start = parse_rfc3339("2026-12-01T00:00:00+05:30").unwrap();
        let end = parse_rfc3339("2027-01-01T00:00:00+05:30").unwrap();
        assert_eq!((d.asks[0].bounds.start, d.asks[0].bounds.end), (start, end));
        assert!(d.asks[0].key.ends_with(&format!(":monthly:month:{start}")));
    }

    #[test]
    fn hits_addend_comes_from_the_descriptor_then_the_request() {
        let mut r = request(vec![
            limit("a", "x", "day", "10"),
            limit("a", "y", "day", "10"),
        ]);
        r.hits_addend = 3;
        r.descriptors[1].hits_addend = Some(UInt64Value { value: 7 });
        let d = decide(&r, 0, 0).unwrap();
        assert_eq!((d.asks[0].hits, d.asks[1].hits), (3, 7));
    }

    #[test]
    fn bad_input_is_named() {
        let cases: Vec<(RateLimitRequest, &str)> = vec![
            (request(vec![]), "no descriptors"),
            (
                request(vec![descriptor(&[
                    ("consumer", "a"),
                    ("limit", "x"),
                    ("window", "day"),
                ])]),
                "missing entry `requests`",
            ),
            (
                request(vec![descriptor(&[("limit", "x")])]),
                "entry 0 is `limit` where `consumer` belongs",
            ),
            (
                request(vec![descriptor(&[("user", "a")])]),
                "unknown entry `user`",
            ),
            (
                request(vec![limit("a", "x", "fortnight", "5")]),
                "`fortnight` is not a window",
            ),
            (request(vec![limit("a", "x", "day", "0")]), "requests `0`"),
            (request(vec![limit("a", "x", "day", "-1")]), "requests `-1`"),
            (
                request(vec![limit("a", "x", "day", "1000000000000000")]),
                "requests `1000000000000000`",
            ),
            (
                request(vec![limit(&"c".repeat(513), "x", "day", "5")]),
                "consumer: 513 bytes; a consumer is 1-512 bytes",
            ),
            (
                request(vec![limit("", "x", "day", "5")]),
                "consumer: 0 bytes",
            ),
            (request(vec![limit("a", "", "day", "5")]), "limit ``"),
            (
                request(vec![
                    limit("a", "x", "day", "5"),
                    limit("b", "y", "day", "5"),
                ]),
                "one request is one consumer's",
            ),
            (
                request(vec![
                    limit("a", "x", "day", "5"),
                    limit("a", "x", "10s", "5"),
                ]),
                "limit `x` appears twice",
            ),
            (
                request(
                    (0..17)
                        .map(|i| limit("a", &format!("l{i}"), "day", "5"))
                        .collect(),
                ),
                "17 descriptors",
            ),
        ];
        for (r, expected) in cases {
            let err = decide(&r, 0, 0).unwrap_err();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
        let mut r = request(vec![limit("a", "x", "day", "5")]);
        r.domain = "my{domain}".into();
        assert!(decide(&r, 0, 0).unwrap_err().contains("domain"));
        let mut r = request(vec![limit("a", "x", "day", "5")]);
        r.descriptors[0].hits_addend = Some(UInt64Value {
            value: MAX_HITS + 1,
        });
        assert!(decide(&r, 0, 0).unwrap_err().contains("hits_addend"));
        let mut r = request(vec![limit("a", "x", "day", "5")]);
        r.descriptors[0].entries.push(Entry {
            key: "utc_offset".into(),
            value: "+25:00".into(),
        });
        assert!(decide(&r, 0, 0)
            .unwrap_err()
            .contains("utc_offset `+25:00`"));
    }

    #[test]
    fn any_consumer_bytes_get_a_key_of_their_own_and_every_spelling_of_a_window_one_key() {
        let key = |consumer: &str, window: &str| {
            decide(&request(vec![limit(consumer, "daily", window, "5")]), 0, 0)
                .unwrap()
                .asks[0]
                .key
                .clone()
        };
        // A name is its own key part, as always.
        assert_eq!(
            key("acme", "day"),
            "tollgate:v1:{tollgate:acme}:daily:day:0"
        );
        // What identity providers issue: accepted, keyed by a digest, one key each.
        let long = "u".repeat(512);
        let others = [
            "alice@example.com",
            "auth0|5f1b2c",
            "a}b{c",
            long.as_str(),
            "ünïcode",
        ];
        let keys: Vec<String> = others.iter().map(|c| key(c, "day")).collect();
        for (consumer, k) in others.iter().zip(&keys) {
            let part = k
                .strip_prefix("tollgate:v1:{tollgate:~")
                .and_then(|rest| rest.strip_suffix("}:daily:day:0"))
                .unwrap_or_else(|| panic!("{consumer}: {k}"));
            assert_eq!(part.len(), 32, "{k}");
            assert!(part.bytes().all(|b| b.is_ascii_hexdigit()), "{k}");
        }
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "one key per consumer");
        assert_eq!(
            key("alice@example.com", "day"),
            keys[0],
            "the same value, the same key"
        );
        // 1d, 24h, 86400s and 01d are one window: one counter.
        let day = key("acme", "1d");
        for spelling in ["24h", "86400s", "01d", "1440m"] {
            assert_eq!(key("acme", spelling), day, "{spelling}");
        }
        assert!(day.ends_with(":daily:1d:0"), "{day}");
    }

    #[test]
    fn a_refusal_reports_what_is_left_and_which_limit_did_not_fit() {
        let now = parse_rfc3339("2026-11-25T13:00:00Z").unwrap();
        let mut r = request(vec![
            limit("a", "daily", "day", "10"),
            limit("a", "burst", "10s", "5"),
        ]);
        r.hits_addend = 4;
        let d = decide(&r, now, 0).unwrap();
        let refused = respond(
            &d,
            &Outcome {
                admitted: false,
                used: vec![3, 2],
            },
        );
        assert_eq!(refused.overall_code, Code::OverLimit as i32);
        let s = &refused.statuses;
        assert_eq!((s[0].code, s[0].limit_remaining), (Code::Ok as i32, 7));
        assert_eq!(
            (s[1].code, s[1].limit_remaining),
            (Code::OverLimit as i32, 3)
        );
        assert_eq!(s[0].current_limit.as_ref().unwrap().unit, Unit::Day as i32);
        assert!(s[1].current_limit.is_none(), "10s is no RLS unit");
        assert_eq!(s[0].duration_until_reset.unwrap().seconds, 11 * 3600);
        let admitted = respond(
            &d,
            &Outcome {
                admitted: true,
                used: vec![3, 1],
            },
        );
        assert_eq!(admitted.overall_code, Code::Ok as i32);
        assert_eq!(admitted.statuses[0].limit_remaining, 3);
        assert_eq!(admitted.statuses[1].limit_remaining, 0);
    }
}
