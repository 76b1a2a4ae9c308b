//! The fuzz harnesses that need quotad (`tollgate-quotad`) and `envoy-types`: a file of its own,
//! included with `#[path]` by the cargo-fuzz targets that use it (`fuzz_targets/quotad_request.rs`,
//! `fuzz_targets/rls_response.rs`) and by `quotad/tests/fuzz_regressions.rs`, which replays
//! `fuzz/regressions/quotad_request/` and `fuzz/regressions/rls_response/` through them. (The
//! filter's harnesses, `src/lib.rs`, are replayed by the main crate, which has neither.)
//!
//! As there, each harness is a plain function of bytes that panics only on a finding.

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use prost::Message;
use tollgate::config::{MAX_REQUESTS, STORE_PREFIX};
use tollgate::rls;
use tollgate_quotad::request::{
    consumer_key, decide, respond, Outcome, MAX_CONSUMER_BYTES, MAX_DESCRIPTORS, MAX_HITS,
};

/// The clocks quotad can have: Unix seconds from 0 to 2^35 (the year 3058).
const CLOCK_SPAN: i64 = 1 << 35;

/// Largest `--ttl-margin-seconds`.
const MAX_MARGIN: i64 = 86_400;

/// Reads a little-endian integer off the front of `data` (zeros past its end).
fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut buf = [0u8; N];
    for b in &mut buf {
        if let Some((first, rest)) = data.split_first() {
            *b = *first;
            *data = rest;
        }
    }
    buf
}

/// `quotad_request`: 8 bytes of clock (little-endian, taken modulo 2^35), 4 of TTL margin
/// (modulo 86 401), 8 of the counts the store is said to hold, then a protobuf
/// `RateLimitRequest` (an input that is not one is skipped: prost's decoder is not under test).
///
/// `decide` never panics, and a decision keeps the descriptor contract: 1 to 16 limits, one
/// consumer of 1 to 512 bytes, no limit twice, sizes and hits in range, each window holding
/// `now`, each key's hash tag exactly `{domain:consumer key}` (so one consumer's keys share one
/// Cluster slot) and each TTL reaching the window's end. Its response, for the counts the store
/// is said to hold, has one status per limit, says OVER_LIMIT exactly where a limit does not
/// fit, and reads back through the filter's decoder (`tollgate::rls::decode_response`) as sent.
pub fn quotad_request(data: &[u8]) {
    let mut input = data;
    let now = i64::from_le_bytes(take::<8>(&mut input)).rem_euclid(CLOCK_SPAN);
    let margin = i64::from(u32::from_le_bytes(take::<4>(&mut input))) % (MAX_MARGIN + 1);
    let seed = u64::from_le_bytes(take::<8>(&mut input));
    let Ok(request) = RateLimitRequest::decode(input) else {
        return;
    };
    let decision = match decide(&request, now, margin) {
        Ok(decision) => decision,
        Err(message) => {
            assert!(!message.is_empty(), "a refusal says why");
            return;
        }
    };

    let asks = &decision.asks;
    assert!(
        !asks.is_empty() && asks.len() <= MAX_DESCRIPTORS,
        "{asks:?}"
    );
    assert_eq!(asks.len(), request.descriptors.len());
    assert_eq!(decision.now, now);
    let consumer = &decision.consumer;
    assert!(!consumer.is_empty() && consumer.len() <= MAX_CONSUMER_BYTES);
    let tag = format!("{}:{}", request.domain, consumer_key(consumer));
    for (i, ask) in asks.iter().enumerate() {
        let descriptor = &request.descriptors[i];
        assert_eq!(descriptor.entries[0].value, *consumer, "one consumer");
        assert_eq!(descriptor.entries[1].value, ask.limit);
        assert!(
            asks[..i].iter().all(|other| other.limit != ask.limit),
            "limit {} twice",
            ask.limit
        );
        assert!((1..=MAX_REQUESTS).contains(&ask.requests), "{ask:?}");
        assert!(ask.hits <= MAX_HITS, "{ask:?}");
        assert!(
            ask.bounds.start <= now && now < ask.bounds.end,
            "{now} outside {:?}",
            ask.bounds
        );
        assert!(
            ask.ttl > margin && ask.ttl >= ask.bounds.end - now,
            "{ask:?}"
        );
        let key = ask
            .key
            .strip_prefix(STORE_PREFIX)
            .expect("the store prefix");
        let open = key.find('{').expect("a hash tag");
        let close = open + key[open..].find('}').expect("a closed hash tag");
        assert_eq!(&key[open + 1..close], tag, "the hash tag of {}", ask.key);
    }

    // What the store holds: below, at and above each limit (or anything, when the seed's top
    // bit says so); the store admits a request exactly when every limit fits.
    let used: Vec<u64> = asks
        .iter()
        .enumerate()
        .map(|(i, ask)| {
            let mixed = seed.rotate_left(7 * i as u32);
            if seed >> 63 == 1 {
                mixed
            } else {
                mixed % ask.requests.saturating_add(2)
            }
        })
        .collect();
    let fits: Vec<bool> = asks
        .iter()
        .zip(&used)
        .map(|(ask, used)| used.saturating_add(ask.hits) <= ask.requests)
        .collect();
    let admitted = fits.iter().all(|f| *f);
    let response = respond(&decision, &Outcome { admitted, used });
    assert_eq!(response.statuses.len(), asks.len());
    let overall = if admitted { Code::Ok } else { Code::OverLimit };
    assert_eq!(response.overall_code, overall as i32);
    for ((status, ask), fits) in response.statuses.iter().zip(asks).zip(&fits) {
        let code = if *fits { Code::Ok } else { Code::OverLimit };
        assert_eq!(status.code, code as i32, "{ask:?}");
        assert!(u64::from(status.limit_remaining) <= ask.requests);
        let reset = status
            .duration_until_reset
            .as_ref()
            .expect("a reset")
            .seconds;
        assert!(
            reset >= 1 && reset <= ask.bounds.end - ask.bounds.start,
            "{reset}"
        );
    }

    let read =
        rls::decode_response(&response.encode_to_vec()).expect("the filter reads quotad's answer");
    let wire = |code: i32| match code {
        1 => rls::Code::Ok,
        2 => rls::Code::OverLimit,
        _ => rls::Code::Unknown,
    };
    assert_eq!(read.overall, wire(response.overall_code));
    assert_eq!(read.statuses.len(), response.statuses.len());
    for (read, sent) in read.statuses.iter().zip(&response.statuses) {
        assert_eq!(read.code, wire(sent.code));
        assert_eq!(read.remaining, sent.limit_remaining);
        assert_eq!(
            read.reset_seconds,
            sent.duration_until_reset.as_ref().map(|d| d.seconds)
        );
    }
}

/// `rls_response`, against `envoy-types`: bytes that Envoy's own generated types decode as a
/// `RateLimitResponse`, the filter's decoder reads too, the same way — except where it is
/// stricter on purpose: a code or `limit_remaining` whose varint does not fit 32 bits, which
/// prost truncates into range, is UNKNOWN (a failed call) and 2^32-1 for the filter.
pub fn rls_response_agrees(data: &[u8]) {
    let Ok(envoy) = RateLimitResponse::decode(data) else {
        return;
    };
    let read = rls::decode_response(data).expect("what Envoy's types decode, the filter reads");
    let code = |read: rls::Code, envoy: i32| match read {
        rls::Code::Ok => assert_eq!(envoy, Code::Ok as i32),
        rls::Code::OverLimit => assert_eq!(envoy, Code::OverLimit as i32),
        // UNKNOWN where prost read 1 or 2 only from a varint above 32 bits.
        rls::Code::Unknown => {}
    };
    code(read.overall, envoy.overall_code);
    assert_eq!(read.statuses.len(), envoy.statuses.len());
    for (read, envoy) in read.statuses.iter().zip(&envoy.statuses) {
        code(read.code, envoy.code);
        assert!(
            read.remaining == envoy.limit_remaining || read.remaining == u32::MAX,
            "{read:?} {envoy:?}"
        );
        assert_eq!(
            read.reset_seconds,
            envoy.duration_until_reset.as_ref().map(|d| d.seconds)
        );
    }
}
