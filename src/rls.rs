//! The few protobuf messages of Envoy's rate limit service (`envoy.service.ratelimit.v3`)
//! that fleet mode sends and reads: a `RateLimitRequest` out (domain, descriptors of key/value
//! entries, `hits_addend`) and a `RateLimitResponse` in (overall code, and per descriptor its
//! code, `limit_remaining`, `duration_until_reset`).
//!
//! prost encodes and decodes them (as in quotad, which serves the generated types of
//! `envoy-types`); the messages are declared here with only the fields fleet mode uses, so that
//! the filter needs no protobuf compiler and no generated tree. Every other field of a response
//! (headers to add, metadata, quota) is skipped as an unknown field. The bytes are checked
//! against `envoy-types`' encoding of the same messages in `quotad/tests/wire.rs` and by the
//! known-answer tests below. Decoding never panics: a truncated or malformed message is an
//! [`RlsError`].

use prost::Message;

/// The service and method fleet mode calls.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

/// `RateLimitResponse.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unknown,
    Ok,
    OverLimit,
}

impl Code {
    fn from_wire(value: u64) -> Code {
        match value {
            1 => Code::Ok,
            2 => Code::OverLimit,
            _ => Code::Unknown,
        }
    }
}

/// One `DescriptorStatus`: what the service says of one descriptor (one limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    /// Requests left in the limit's window after this call (what was taken already deducted).
    pub remaining: u32,
    /// Seconds until the window resets, if the service said.
    pub reset_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub overall: Code,
    pub statuses: Vec<Status>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsError(pub &'static str);

/// The wire messages (field numbers from Envoy's `rls.proto` and `ratelimit.proto`).
mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RateLimitRequest {
        #[prost(string, tag = "1")]
        pub domain: String,
        #[prost(message, repeated, tag = "2")]
        pub descriptors: Vec<RateLimitDescriptor>,
        #[prost(uint32, tag = "3")]
        pub hits_addend: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RateLimitDescriptor {
        #[prost(message, repeated, tag = "1")]
        pub entries: Vec<Entry>,
        #[prost(message, optional, tag = "3")]
        pub hits_addend: Option<UInt64Value>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `google.protobuf.UInt64Value`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UInt64Value {
        #[prost(uint64, tag = "1")]
        pub value: u64,
    }

    // The codes (an enum, int32 on the wire) and `limit_remaining` (uint32) are read as uint64:
    // the same varints, but an out-of-range value stays out of range (a code is then UNKNOWN,
    // a remainder the largest u32) instead of being truncated into a valid one.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RateLimitResponse {
        #[prost(uint64, tag = "1")]
        pub overall_code: u64,
        #[prost(message, repeated, tag = "2")]
        pub statuses: Vec<DescriptorStatus>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DescriptorStatus {
        #[prost(uint64, tag = "1")]
        pub code: u64,
        #[prost(uint64, tag = "3")]
        pub limit_remaining: u64,
        #[prost(message, optional, tag = "4")]
        pub duration_until_reset: Option<Duration>,
    }

    /// `google.protobuf.Duration`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Duration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// Encodes a `RateLimitRequest`: `domain`, one descriptor per slice of (key, value) entries,
/// and what to take from each (`hits`, one per descriptor; a missing one is 0). The same
/// non-zero hits for every descriptor go in the request-wide `hits_addend` alone (what every
/// server reads). Otherwise each descriptor carries its own `hits_addend` (0 only looks: it
/// cannot be said request-wide, proto3's default, which services read as 1), and the
/// request-wide field the largest of them — so that a server that reads only the request-wide
/// field over-counts the other limits rather than admitting past one.
pub fn encode_request(domain: &str, descriptors: &[Vec<(&str, &str)>], hits: &[u64]) -> Vec<u8> {
    let hit = |i: usize| hits.get(i).copied().unwrap_or(0);
    let largest = (0..descriptors.len()).map(hit).max().unwrap_or(0);
    let uniform = largest > 0
        && u32::try_from(largest).is_ok()
        && (0..descriptors.len()).all(|i| hit(i) == largest);
    let request = wire::RateLimitRequest {
        domain: domain.to_string(),
        descriptors: descriptors
            .iter()
            .enumerate()
            .map(|(i, entries)| wire::RateLimitDescriptor {
                entries: entries
                    .iter()
                    .map(|(key, value)| wire::Entry {
                        key: key.to_string(),
                        value: value.to_string(),
                    })
                    .collect(),
                hits_addend: (!uniform).then_some(wire::UInt64Value { value: hit(i) }),
            })
            .collect(),
        hits_addend: u32::try_from(largest).unwrap_or(u32::MAX),
    };
    request.encode_to_vec()
}

/// Decodes a `RateLimitResponse`.
pub fn decode_response(bytes: &[u8]) -> Result<Response, RlsError> {
    let response = wire::RateLimitResponse::decode(bytes)
        .map_err(|_| RlsError("not a RateLimitResponse (truncated or malformed protobuf)"))?;
    Ok(Response {
        overall: Code::from_wire(response.overall_code),
        statuses: response
            .statuses
            .iter()
            .map(|s| Status {
                code: Code::from_wire(s.code),
                remaining: u32::try_from(s.limit_remaining).unwrap_or(u32::MAX),
                reset_seconds: s.duration_until_reset.as_ref().map(|d| d.seconds),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from prost (envoy-types 0.7.7, quotad's types): RateLimitRequest { domain:
    // "tollgate", descriptors: [consumer=acme, limit=daily, window=day, requests=1000],
    // hits_addend: 5 }. quotad/tests/wire.rs compares the encoders on many more messages.
    const REQUEST: &[u8] = b"\x0a\x08tollgate\x12\x43\x0a\x10\x0a\x08consumer\x12\x04acme\
        \x0a\x0e\x0a\x05limit\x12\x05daily\x0a\x0d\x0a\x06window\x12\x03day\
        \x0a\x10\x0a\x08requests\x12\x041000\x18\x05";

    #[test]
    fn encodes_a_request_as_prost_does() {
        let bytes = encode_request(
            "tollgate",
            &[vec![
                ("consumer", "acme"),
                ("limit", "daily"),
                ("window", "day"),
                ("requests", "1000"),
            ]],
            &[5],
        );
        assert_eq!(bytes, REQUEST);
        // hits 0: on each descriptor, as an empty UInt64Value.
        let bytes = encode_request("d", &[vec![("k", "v")]], &[0]);
        assert_eq!(
            bytes,
            b"\x0a\x01d\x12\x0a\x0a\x06\x0a\x01k\x12\x01v\x1a\x00"
        );
    }

    #[test]
    fn long_fields_get_multi_byte_lengths() {
        let value = "x".repeat(300);
        let bytes = encode_request("d", &[vec![("k", value.as_str())]], &[300]);
        // 300 = 0xAC 0x02 as a varint.
        assert!(bytes.windows(3).any(|w| w == b"\x12\xac\x02"));
        assert!(bytes.ends_with(b"\x18\xac\x02"));
    }

    // Captured from prost: RateLimitResponse { overall_code: OVER_LIMIT, statuses: [
    //   { code: OK, current_limit: {name: "daily", requests_per_unit: 1000, unit: DAY},
    //     limit_remaining: 7, duration_until_reset: {seconds: 3600, nanos: 5} },
    //   { code: OVER_LIMIT, limit_remaining: 0, duration_until_reset: {seconds: 9, nanos: 5} } ] }
    const RESPONSE: &[u8] = b"\x08\x02\x12\x19\x08\x01\x12\x0c\x08\xe8\x07\x10\x04\x1a\x05daily\
        \x18\x07\x22\x05\x08\x90\x1c\x10\x05\x12\x08\x08\x02\x22\x04\x08\x09\x10\x05";

    #[test]
    fn decodes_a_response_as_prost_encodes_it() {
        let response = decode_response(RESPONSE).unwrap();
        assert_eq!(
            response,
            Response {
                overall: Code::OverLimit,
                statuses: vec![
                    Status {
                        code: Code::Ok,
                        remaining: 7,
                        reset_seconds: Some(3600)
                    },
                    Status {
                        code: Code::OverLimit,
                        remaining: 0,
                        reset_seconds: Some(9)
                    },
                ],
            }
        );
        // An empty message is all defaults.
        assert_eq!(
            decode_response(b"").unwrap(),
            Response {
                overall: Code::Unknown,
                statuses: vec![]
            }
        );
    }

    #[test]
    fn out_of_range_values_stay_out_of_range() {
        // overall_code 2^32 + 1; one status with code 2^32 + 2 and limit_remaining 2^32 + 5.
        let bytes =
            b"\x08\x81\x80\x80\x80\x10\x12\x0c\x08\x82\x80\x80\x80\x10\x18\x85\x80\x80\x80\x10";
        let response = decode_response(bytes).unwrap();
        assert_eq!(response.overall, Code::Unknown, "not truncated to OK");
        assert_eq!(
            response.statuses,
            [Status {
                code: Code::Unknown,
                remaining: u32::MAX,
                reset_seconds: None
            }]
        );
    }

    #[test]
    fn unknown_fields_are_skipped_and_broken_messages_refused() {
        // Field 3 (response_headers_to_add) and a fixed64 field 15 before the code.
        let mut bytes = b"\x1a\x03abc\x79\x01\x02\x03\x04\x05\x06\x07\x08".to_vec();
        bytes.extend_from_slice(b"\x08\x01");
        assert_eq!(decode_response(&bytes).unwrap().overall, Code::Ok);
        for broken in [
            &b"\x08"[..],                                    // truncated varint
            b"\x12\x05\x08",                                 // truncated status
            b"\x0b",                                         // group wire type
            b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", // 11-byte varint
            b"\x0a\x01x",                                    // overall_code as bytes
        ] {
            assert!(decode_response(broken).is_err(), "{broken:?}");
        }
    }
}
