//! x402's messages as they cross HTTP (v1 and v2 transports), read and written with bounds: the
//! groundwork of a 402 a machine can pay (issue 25). A leaf: it knows no configuration, no
//! host and no count.
//!
//! Every message travels as standard base64 (with padding) of a JSON document: the server's
//! `PAYMENT-REQUIRED` (v2; v1 sends the same in the 402 body), the client's `PAYMENT-SIGNATURE`
//! (v2) or `X-PAYMENT` (v1), and the server's `PAYMENT-RESPONSE` (v2) or `X-PAYMENT-RESPONSE`
//! (v1). What comes from a client is refused before it is decoded when it is longer than
//! [`MAX_HEADER`], or not base64, and after when it is not the message (unknown members are
//! ignored, a member listed twice is not). Fields that name money and parties are checked for
//! their shape ([`Authorization::check`]): an address is `0x` and 40 hex digits, a nonce `0x`
//! and 64, an amount at most 78 decimal digits (a uint256), a time at most 20.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The longest payment header read, in bytes (the v2 golden `PAYMENT-SIGNATURE` is 1 088; the
/// HTTP Payment draft asks servers to accept at least 4 KB).
pub const MAX_HEADER: usize = 8192;

/// Why a payment header was refused (said to the client in a 400; never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X402Error(pub String);

/// What a resource is, as `PAYMENT-REQUIRED` (v2) describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// One way to pay (v2 `PaymentRequirements`): an offer in `accepts`, and what a payment says
/// it accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirements {
    pub scheme: String,
    /// CAIP-2 (`eip155:8453`).
    pub network: String,
    /// In the asset's atomic units, decimal.
    pub amount: String,
    pub asset: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The server's `PAYMENT-REQUIRED` (v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    pub x402_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub resource: Resource,
    pub accepts: Vec<Requirements>,
}

/// An EIP-3009 transfer authorization (the `exact` scheme on EVM networks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    pub from: String,
    pub to: String,
    pub value: String,
    pub valid_after: String,
    pub valid_before: String,
    pub nonce: String,
}

/// The `exact` scheme's payload: the authorization and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactPayload {
    pub signature: String,
    pub authorization: Authorization,
}

/// The client's `PAYMENT-SIGNATURE` (v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    pub x402_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    pub accepted: Requirements,
    pub payload: ExactPayload,
}

/// The client's `X-PAYMENT` (v1): no copy of the offer it pays, only its scheme and network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadV1 {
    pub x402_version: u32,
    pub scheme: String,
    pub network: String,
    pub payload: ExactPayload,
}

/// One offer of a v1 402 body (`accepts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequirementsV1 {
    pub scheme: String,
    pub network: String,
    pub max_amount_required: String,
    pub asset: String,
    pub pay_to: String,
    pub resource: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    pub max_timeout_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A v1 402 body's x402 members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV1 {
    pub x402_version: u32,
    pub error: String,
    pub accepts: Vec<RequirementsV1>,
}

/// A facilitator's `/settle` answer, and the server's `PAYMENT-RESPONSE` (`X-PAYMENT-RESPONSE`
/// in v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// The settlement's transaction (`""` when none was made).
    pub transaction: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// A message read from a header value: base64 (standard, padded), at most [`MAX_HEADER`]
/// bytes, of a JSON document of type `T`.
pub fn decode<T: serde::de::DeserializeOwned>(value: &[u8], header: &str) -> Result<T, X402Error> {
    let json = decode_json(value, header)?;
    from_json(&json, header)
}

/// The JSON text of a header value (base64, standard, padded; at most [`MAX_HEADER`] bytes),
/// not yet read: [`from_json`] reads it.
pub fn decode_json(value: &[u8], header: &str) -> Result<Vec<u8>, X402Error> {
    if value.len() > MAX_HEADER {
        return Err(X402Error(format!(
            "{header}: {} bytes; at most {MAX_HEADER} are read",
            value.len()
        )));
    }
    STANDARD
        .decode(value)
        .map_err(|_| X402Error(format!("{header}: not base64 (standard, padded)")))
}

/// Reads one JSON document of type `T` from `json` (nothing after it), naming where it is
/// wrong, never a value.
pub fn from_json<T: serde::de::DeserializeOwned>(
    json: &[u8],
    header: &str,
) -> Result<T, X402Error> {
    // Errors name where, never a value (which may be a signature): serde's own messages quote
    // the values of mistyped members.
    let mut de = serde_json::Deserializer::from_slice(json);
    let message = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            return X402Error(format!("{header}: not JSON"));
        }
        let text = inner.to_string();
        let what = match text.strip_prefix("missing field `") {
            Some(rest) => format!(
                "member `{}` is missing",
                rest.split('`').next().unwrap_or("")
            ),
            None if text.starts_with("duplicate field") => "a member is listed twice".into(),
            None => "a member is not of its type".into(),
        };
        X402Error(format!("{header}: at `{}`: {what}", e.path()))
    })?;
    de.end()
        .map_err(|_| X402Error(format!("{header}: not JSON (more after the document)")))?;
    Ok(message)
}

/// A message as a header value: base64 (standard, padded) of its JSON.
pub fn encode<T: Serialize>(message: &T) -> String {
    STANDARD.encode(serde_json::to_vec(message).unwrap_or_default())
}

/// Whether `text` is `0x` and `digits` hex digits.
fn hex(text: &str, digits: usize) -> bool {
    text.len() == 2 + digits
        && text.starts_with("0x")
        && text.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
}

/// Whether `text` is a decimal of 1 to `digits` digits.
fn decimal(text: &str, digits: usize) -> bool {
    (1..=digits).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

impl Authorization {
    /// The authorization's fields have their shapes (addresses, a 32-byte nonce, a uint256
    /// value, times), or the first that does not is named.
    pub fn check(&self) -> Result<(), X402Error> {
        let fields = [
            ("from", hex(&self.from, 40)),
            ("to", hex(&self.to, 40)),
            ("value", decimal(&self.value, 78)),
            ("validAfter", decimal(&self.valid_after, 20)),
            ("validBefore", decimal(&self.valid_before, 20)),
            ("nonce", hex(&self.nonce, 64)),
        ];
        match fields.iter().find(|(_, ok)| !ok) {
            Some((name, _)) => Err(X402Error(format!(
                "payload.authorization.{name}: not of its form"
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
