//! The few protobuf messages of Envoy's rate limit service (`envoy.service.ratelimit.v3`)
//! that fleet mode sends and reads, encoded and decoded by hand: a `RateLimitRequest` out
//! (domain, descriptors of key/value entries, `hits_addend`) and a `RateLimitResponse` in
//! (overall code, and per descriptor its code, `limit_remaining`, `duration_until_reset`).
//!
//! Why not prost: the filter needs four messages, one direction each; the wire format for them
//! is ~150 lines, while prost and its generated types would add to a `.wasm` that has a size
//! budget. Everything else in a response (headers to add, metadata, quota) is skipped by its
//! wire type. The bytes are checked against prost's own encoding of the same messages in
//! `quotad/tests/wire.rs` (quotad has the generated types) and by the known-answer tests below.
//!
//! Decoding never panics: a truncated or malformed message is an [`RlsError`].

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

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, u64::from(field << 3 | 2));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Encodes a `RateLimitRequest`: `domain`, one descriptor per slice of (key, value) entries,
/// and the request-wide `hits_addend`. Hits 0 (only look) cannot be said request-wide (proto3's
/// default, which services read as 1): each descriptor then carries `hits_addend: {value: 0}`.
pub fn encode_request(domain: &str, descriptors: &[Vec<(&str, &str)>], hits: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 96 * descriptors.len());
    put_bytes(&mut out, 1, domain.as_bytes());
    let mut descriptor = Vec::new();
    let mut entry = Vec::new();
    for entries in descriptors {
        descriptor.clear();
        for (key, value) in entries {
            entry.clear();
            put_bytes(&mut entry, 1, key.as_bytes());
            put_bytes(&mut entry, 2, value.as_bytes());
            put_bytes(&mut descriptor, 1, &entry);
        }
        if hits == 0 {
            // google.protobuf.UInt64Value { value: 0 }: an empty message.
            put_bytes(&mut descriptor, 3, &[]);
        }
        put_bytes(&mut out, 2, &descriptor);
    }
    if hits != 0 {
        put_varint(&mut out, 3 << 3);
        put_varint(&mut out, u64::from(hits));
    }
    out
}

/// A reader over one message's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, RlsError> {
        let mut value: u64 = 0;
        let mut shift = 0;
        while let Some((&byte, rest)) = self.bytes.split_first() {
            self.bytes = rest;
            if shift == 63 && byte > 1 {
                return Err(RlsError("varint overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift > 63 {
                return Err(RlsError("varint longer than 10 bytes"));
            }
        }
        Err(RlsError("truncated varint"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RlsError> {
        if n > self.bytes.len() {
            return Err(RlsError("truncated field"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// The next field: its number and value; `None` at the end of the message.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, RlsError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| RlsError("length out of range"))?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            _ => return Err(RlsError("unsupported wire type")),
        };
        Ok(Some((key >> 3, value)))
    }
}

fn decode_duration_seconds(bytes: &[u8]) -> Result<i64, RlsError> {
    let mut reader = Reader { bytes };
    let mut seconds = 0;
    while let Some((field, value)) = reader.field()? {
        if let (1, Value::Varint(v)) = (field, value) {
            // int64 on the wire: two's complement in 64 bits.
            seconds = v as i64;
        }
    }
    Ok(seconds)
}

fn decode_status(bytes: &[u8]) -> Result<Status, RlsError> {
    let mut reader = Reader { bytes };
    let mut status = Status {
        code: Code::Unknown,
        remaining: 0,
        reset_seconds: None,
    };
    while let Some((field, value)) = reader.field()? {
        match (field, value) {
            (1, Value::Varint(v)) => status.code = Code::from_wire(v),
            (3, Value::Varint(v)) => status.remaining = u32::try_from(v).unwrap_or(u32::MAX),
            (4, Value::Bytes(b)) => status.reset_seconds = Some(decode_duration_seconds(b)?),
            (1 | 3, _) | (4, Value::Varint(_)) => return Err(RlsError("field of the wrong type")),
            _ => {}
        }
    }
    Ok(status)
}

/// Decodes a `RateLimitResponse`.
pub fn decode_response(bytes: &[u8]) -> Result<Response, RlsError> {
    let mut reader = Reader { bytes };
    let mut response = Response {
        overall: Code::Unknown,
        statuses: Vec::new(),
    };
    while let Some((field, value)) = reader.field()? {
        match (field, value) {
            (1, Value::Varint(v)) => response.overall = Code::from_wire(v),
            (2, Value::Bytes(b)) => response.statuses.push(decode_status(b)?),
            (1 | 2, _) => return Err(RlsError("field of the wrong type")),
            _ => {}
        }
    }
    Ok(response)
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
            5,
        );
        assert_eq!(bytes, REQUEST);
        // hits 0: on each descriptor, as an empty UInt64Value.
        let bytes = encode_request("d", &[vec![("k", "v")]], 0);
        assert_eq!(
            bytes,
            b"\x0a\x01d\x12\x0a\x0a\x06\x0a\x01k\x12\x01v\x1a\x00"
        );
    }

    #[test]
    fn long_fields_get_multi_byte_lengths() {
        let value = "x".repeat(300);
        let bytes = encode_request("d", &[vec![("k", value.as_str())]], 300);
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
