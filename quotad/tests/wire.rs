//! The filter's RLS messages (`tollgate::rls`, declared for prost by hand, used by fleet mode) against
//! prost's encoding of the same messages (envoy-types, the types quotad serves): the filter's
//! requests decode to what it meant, and what quotad answers decodes to the same figures.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::{Duration, UInt64Value};
use prost::Message;
use tollgate::rls;
use tollgate_testkit::rls::descriptor;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\x{b:02x}")).collect()
}

type Descriptors<'a> = Vec<Vec<(&'a str, &'a str)>>;

#[test]
fn requests_encode_byte_for_byte_as_prost() {
    let long = "v".repeat(300);
    let cases: Vec<(&str, Descriptors, Vec<u64>)> = vec![
        (
            "tollgate",
            vec![vec![
                ("consumer", "acme"),
                ("limit", "daily"),
                ("window", "day"),
                ("requests", "1000"),
            ]],
            vec![5],
        ),
        (
            "d",
            vec![
                vec![
                    ("consumer", "c"),
                    ("limit", "a"),
                    ("window", "month"),
                    ("requests", "3"),
                    ("utc_offset", "+05:30"),
                ],
                vec![
                    ("consumer", "c"),
                    ("limit", "b"),
                    ("window", "10s"),
                    ("requests", "999999999999999"),
                ],
            ],
            vec![0, 0],
        ),
        // A limit in tokens beside one in requests: each descriptor its own hits.
        (
            "tollgate",
            vec![
                vec![("consumer", "c"), ("limit", "daily")],
                vec![("consumer", "c"), ("limit", "tokens")],
                vec![("consumer", "c"), ("limit", "free")],
            ],
            vec![3, 12_000_000_000, 0],
        ),
        (
            "x",
            vec![vec![("k", long.as_str())]],
            vec![u64::from(u32::MAX)],
        ),
    ];
    for (domain, descriptors, hits) in cases {
        let ours = rls::encode_request(domain, &descriptors, &hits);
        let largest = hits.iter().copied().max().unwrap();
        let uniform = largest > 0 && hits.iter().all(|h| *h == largest);
        let theirs = RateLimitRequest {
            domain: domain.into(),
            descriptors: descriptors
                .iter()
                .zip(&hits)
                .map(|(entries, hits)| RateLimitDescriptor {
                    hits_addend: (!uniform).then_some(UInt64Value { value: *hits }),
                    ..descriptor(entries)
                })
                .collect(),
            hits_addend: u32::try_from(largest).unwrap_or(u32::MAX),
        };
        println!("{}", hex(&theirs.encode_to_vec()));
        assert_eq!(ours, theirs.encode_to_vec(), "{domain}");
        assert_eq!(RateLimitRequest::decode(&ours[..]).unwrap(), theirs);
    }
}

#[test]
fn responses_decode_from_prost_bytes() {
    let status = |code: Code, remaining: u32, reset: Option<i64>, limit: bool| DescriptorStatus {
        code: code as i32,
        current_limit: limit.then(|| RateLimit {
            name: "daily".into(),
            requests_per_unit: 1000,
            unit: Unit::Day as i32,
        }),
        limit_remaining: remaining,
        duration_until_reset: reset.map(|seconds| Duration { seconds, nanos: 5 }),
        quota: None,
    };
    let responses = [
        RateLimitResponse {
            overall_code: Code::OverLimit as i32,
            statuses: vec![
                status(Code::Ok, 7, Some(3600), true),
                status(Code::OverLimit, 0, Some(9), false),
            ],
            ..Default::default()
        },
        RateLimitResponse {
            overall_code: Code::Ok as i32,
            statuses: vec![status(Code::Ok, u32::MAX, Some(2_678_400), true)],
            response_headers_to_add: vec![HeaderValue {
                key: "x".into(),
                value: "y".into(),
                ..Default::default()
            }],
            request_headers_to_add: vec![HeaderValue {
                key: "a".into(),
                value: "b".into(),
                ..Default::default()
            }],
            raw_body: b"body".to_vec(),
            ..Default::default()
        },
        RateLimitResponse::default(),
    ];
    let _ = HeaderValueOption::default();
    for response in responses {
        let bytes = response.encode_to_vec();
        println!("{}", hex(&bytes));
        let decoded = rls::decode_response(&bytes).unwrap();
        let code = |c: i32| match c {
            1 => rls::Code::Ok,
            2 => rls::Code::OverLimit,
            _ => rls::Code::Unknown,
        };
        assert_eq!(decoded.overall, code(response.overall_code));
        assert_eq!(decoded.statuses.len(), response.statuses.len());
        for (ours, theirs) in decoded.statuses.iter().zip(&response.statuses) {
            assert_eq!(ours.code, code(theirs.code));
            assert_eq!(ours.remaining, theirs.limit_remaining);
            assert_eq!(
                ours.reset_seconds,
                theirs.duration_until_reset.map(|d| d.seconds)
            );
        }
        // Every truncation is an error or a shorter message, never a panic.
        for cut in 0..bytes.len() {
            let _ = rls::decode_response(&bytes[..cut]);
        }
    }
}
