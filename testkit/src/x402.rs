//! The client's side of x402 in the tests: payment headers as a paying client sends them (v2
//! `PAYMENT-SIGNATURE`, v1 `X-PAYMENT`: standard padded base64 of the payment's JSON), with an
//! EIP-3009 authorization of the `exact` scheme whose fields have their shapes but whose
//! signature signs nothing (the fake facilitator, [`crate::Facilitator`], checks none).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

/// A signature's shape (`0x` and 130 hex digits, 65 bytes), signing nothing.
pub(crate) const SIGNATURE: &str = concat!(
    "0x",
    "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed",
    "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed",
    "1b"
);

/// The packs the tests sell: USDC on Base Sepolia, paid to one address, by one payer.
pub const ASSET: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
pub const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
pub const PAYER: &str = "0x857b06519E91e3A54538791bDbb0E22373e36b66";

/// A nonce of an authorization's shape (`0x` and 64 hex digits), distinct for each `n`.
pub fn x402_nonce(n: u64) -> String {
    format!("0x{n:064x}")
}

/// The `exact` scheme's payload: an authorization from `from` to `to` of `value`, valid from
/// time 0 to an hour from now, and a signature.
fn exact_payload(from: &str, to: &str, value: &str, nonce: &str) -> Value {
    let hour_from_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    json!({
        "signature": SIGNATURE,
        "authorization": {
            "from": from,
            "to": to,
            "value": value,
            "validAfter": "0",
            "validBefore": hour_from_now.to_string(),
            "nonce": nonce,
        },
    })
}

/// A v2 PaymentPayload paying `accepted` (one offer of a `PAYMENT-REQUIRED`'s `accepts`,
/// copied as is): `from` authorizes `accepted.amount` to `accepted.payTo` with `nonce`.
pub fn payment_payload(accepted: &Value, from: &str, nonce: &str) -> Value {
    let member = |name: &str| {
        accepted
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("the offer has no string {name}: {accepted}"))
    };
    json!({
        "x402Version": 2,
        "accepted": accepted,
        "payload": exact_payload(from, member("payTo"), member("amount"), nonce),
    })
}

/// The `PAYMENT-SIGNATURE` (v2) header value of [`payment_payload`].
pub fn payment_signature(accepted: &Value, from: &str, nonce: &str) -> String {
    encode_x402(&payment_payload(accepted, from, nonce))
}

/// A v1 payment payload (`exact` on `network`): `from` authorizes `value` to `to` with `nonce`.
pub fn payment_payload_v1(network: &str, to: &str, value: &str, from: &str, nonce: &str) -> Value {
    json!({
        "x402Version": 1,
        "scheme": "exact",
        "network": network,
        "payload": exact_payload(from, to, value, nonce),
    })
}

/// The `X-PAYMENT` (v1) header value of [`payment_payload_v1`].
pub fn x_payment_v1(network: &str, to: &str, value: &str, from: &str, nonce: &str) -> String {
    encode_x402(&payment_payload_v1(network, to, value, from, nonce))
}

/// An x402 header value: standard padded base64 of `message`'s JSON.
pub fn encode_x402(message: &Value) -> String {
    STANDARD.encode(message.to_string())
}

/// The JSON of an x402 header value (`PAYMENT-REQUIRED`, `PAYMENT-RESPONSE`, ...); panics,
/// saying why, when it is not standard padded base64 of JSON.
pub fn decode_x402(value: &str) -> Value {
    let json = STANDARD
        .decode(value)
        .unwrap_or_else(|e| panic!("not standard padded base64 ({e}): {value:?}"));
    serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&json)))
}
