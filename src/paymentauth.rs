//! The HTTP Payment authentication scheme (draft-httpauth-payment, with its `evm` method and
//! `charge` intent) as it crosses HTTP: the server's `WWW-Authenticate: Payment` challenges,
//! the client's credential (`Authorization: Payment <credential>`, or `Payment-Authorization`
//! when the API key travels in `Authorization`), and the server's `Payment-Receipt`. A leaf,
//! like [`crate::x402`]: it knows no configuration, no host and no count.
//!
//! - A challenge's `id` is HMAC-SHA256, under a secret of the operator's, of its parameters
//!   (the draft's seven slots joined by `|`: realm, method, intent, request, expires, digest,
//!   opaque), base64url without padding. The `opaque` parameter names the consumer it was made
//!   for, so a challenge is redeemable by that consumer only, until it `expires`.
//! - The `request` is base64url of JCS (RFC 8785) JSON: members in code-point order, no
//!   spaces, integers only. serde_json writes a struct's members in declaration order and
//!   escapes as JCS does (`"`, `\` and control characters, nothing else): the structs here
//!   declare their members sorted, and the tests pin the bytes.
//! - An `evm` charge is paid with an EIP-3009 authorization (`type: "authorization"`) whose
//!   nonce is keccak-256 of the challenge's `id` and `realm` ([`nonce`]): the signed transfer
//!   is bound to the challenge, and through it to the consumer. It is the x402 `exact` scheme's
//!   authorization, so the facilitator that settles x402 payments settles it.
//! - What comes from a client is bounded before it is decoded ([`crate::x402::MAX_HEADER`])
//!   and errors name where it is wrong, never a value.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha3::Digest as _;

use crate::x402::{from_json, Authorization, X402Error, MAX_HEADER};

/// The request headers a credential comes in.
pub const AUTHORIZATION: &str = "authorization";
pub const PAYMENT_AUTHORIZATION: &str = "payment-authorization";
/// x402's request headers (v2, then v1).
pub const PAYMENT_SIGNATURE: &str = "payment-signature";
pub const X_PAYMENT: &str = "x-payment";
/// Every request header a payment may come in, in the order they are read: x402 v2, v1, then
/// the HTTP Payment scheme's credential (`Payment-Authorization`, `Authorization: Payment`).
pub const PAYMENT_HEADERS: [&str; 4] = [
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    PAYMENT_AUTHORIZATION,
    AUTHORIZATION,
];
/// The response headers.
pub const WWW_AUTHENTICATE: &str = "www-authenticate";
pub const PAYMENT_RECEIPT: &str = "payment-receipt";
/// The one method and intent offered: EIP-3009 transfers on EVM chains, paid once.
pub const METHOD: &str = "evm";
pub const INTENT: &str = "charge";
/// The credential type of an EIP-3009 authorization.
pub const AUTHORIZATION_TYPE: &str = "authorization";

type HmacSha256 = Hmac<sha2::Sha256>;

/// A challenge's parameters that its `id` binds (`digest` is never offered: a credential may
/// be presented on any request of the consumer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound<'a> {
    pub realm: &'a str,
    pub method: &'a str,
    pub intent: &'a str,
    pub request: &'a str,
    pub expires: &'a str,
    pub digest: &'a str,
    pub opaque: &'a str,
}

impl Bound<'_> {
    fn mac(&self, secret: &[u8]) -> HmacSha256 {
        // Any key length is accepted by HMAC: `new_from_slice` cannot fail for it.
        let mut mac = match HmacSha256::new_from_slice(secret) {
            Ok(mac) => mac,
            Err(_) => HmacSha256::new(&Default::default()),
        };
        let slots = [
            self.realm,
            self.method,
            self.intent,
            self.request,
            self.expires,
            self.digest,
            self.opaque,
        ];
        for (i, slot) in slots.iter().enumerate() {
            if i > 0 {
                mac.update(b"|");
            }
            mac.update(slot.as_bytes());
        }
        mac
    }

    /// The challenge `id`: base64url (no padding) of HMAC-SHA256 of the seven slots.
    pub fn id(&self, secret: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(secret).finalize().into_bytes())
    }

    /// Whether `id` is this challenge's (compared in constant time).
    pub fn verifies(&self, secret: &[u8], id: &str) -> bool {
        match URL_SAFE_NO_PAD.decode(id) {
            Ok(tag) => self.mac(secret).verify_slice(&tag).is_ok(),
            Err(_) => false,
        }
    }
}

/// The canonical Permit2 contract (the same address on every chain): `methodDetails` names it
/// (the evm method requires the member), though only `authorization` credentials are offered.
pub const PERMIT2: &str = "0x000000000022D473030F116dDEE9F6B43aC78BA3";

/// `methodDetails` of an `evm` charge's request (members sorted, for JCS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodDetails {
    pub chain_id: u64,
    pub credential_types: Vec<String>,
    pub permit2_address: String,
}

/// An `evm` charge's request (members sorted, for JCS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargeRequest {
    /// In the token's base units, decimal.
    pub amount: String,
    /// The token contract.
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The pack's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub method_details: MethodDetails,
    pub recipient: String,
}

impl ChargeRequest {
    /// The `request` parameter: base64url (no padding) of its JCS JSON.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// The chain id of an EVM CAIP-2 network (`eip155:8453` → 8453).
pub fn chain_id(network: &str) -> Option<u64> {
    let reference = network.strip_prefix("eip155:")?;
    // Decimal digits only (`parse` would take a sign); empty or too large fails to parse.
    if !reference.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    reference.parse().ok()
}

/// `opaque`: whom a challenge is for (members sorted, for JCS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opaque {
    pub consumer: String,
}

/// The `opaque` parameter naming `consumer`.
pub fn opaque(consumer: &str) -> String {
    URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&Opaque {
            consumer: consumer.to_string(),
        })
        .unwrap_or_default(),
    )
}

/// The consumer an `opaque` parameter names (`None` if it is not one of ours).
pub fn opaque_consumer(opaque: &str) -> Option<String> {
    let json = URL_SAFE_NO_PAD.decode(opaque).ok()?;
    serde_json::from_slice::<Opaque>(&json)
        .ok()
        .map(|o| o.consumer)
}

/// Whether `text` can be an auth-param's quoted-string as is (visible ASCII and spaces, no
/// `"` or `\`).
pub fn quotable(text: &str) -> bool {
    text.bytes()
        .all(|b| (b == b' ' || b.is_ascii_graphic()) && b != b'"' && b != b'\\')
}

/// A `WWW-Authenticate` value: one `Payment` challenge (`description` only if quotable).
pub fn challenge(id: &str, bound: &Bound, description: Option<&str>) -> String {
    let mut out = format!(
        "Payment id=\"{id}\", realm=\"{}\", method=\"{}\", intent=\"{}\", request=\"{}\"",
        bound.realm, bound.method, bound.intent, bound.request
    );
    for (name, value) in [("expires", bound.expires), ("opaque", bound.opaque)] {
        if !value.is_empty() {
            out.push_str(&format!(", {name}=\"{value}\""));
        }
    }
    if let Some(description) = description.filter(|d| quotable(d)) {
        out.push_str(&format!(", description=\"{description}\""));
    }
    out
}

/// The EIP-3009 nonce an `evm` charge's authorization must carry for a challenge:
/// `0x` and the hex of keccak-256 of its `id` then its `realm` (abi.encodePacked of two
/// strings: their bytes, one after the other).
pub fn nonce(id: &str, realm: &str) -> String {
    let mut keccak = sha3::Keccak256::new();
    keccak.update(id.as_bytes());
    keccak.update(realm.as_bytes());
    let digest: [u8; 32] = keccak.finalize().into();
    format!("0x{}", crate::sha256::to_hex(&digest))
}

/// The challenge as a credential echoes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echoed {
    pub id: String,
    pub realm: String,
    pub method: String,
    pub intent: String,
    pub request: String,
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub opaque: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

impl Echoed {
    /// Its bound parameters.
    pub fn bound(&self) -> Bound<'_> {
        Bound {
            realm: &self.realm,
            method: &self.method,
            intent: &self.intent,
            request: &self.request,
            expires: self.expires.as_deref().unwrap_or(""),
            digest: self.digest.as_deref().unwrap_or(""),
            opaque: self.opaque.as_deref().unwrap_or(""),
        }
    }
}

/// An `evm` charge's payload. Its `type` is read first (a `permit2`, `transaction` or `hash`
/// payload is refused for what it is, not as malformed); the members of an `authorization`
/// one default to empty, so that a missing one is named by [`Authorization::check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPayload {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub valid_after: String,
    #[serde(default)]
    pub valid_before: String,
    #[serde(default)]
    pub nonce: String,
    #[serde(default)]
    pub signature: String,
}

impl AuthorizationPayload {
    /// Its EIP-3009 authorization, as x402's `exact` scheme carries it.
    pub fn authorization(&self) -> Authorization {
        Authorization {
            from: self.from.clone(),
            to: self.to.clone(),
            value: self.value.clone(),
            valid_after: self.valid_after.clone(),
            valid_before: self.valid_before.clone(),
            nonce: self.nonce.clone(),
        }
    }
}

/// A Payment credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub challenge: Echoed,
    pub payload: AuthorizationPayload,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The credential of a header value, if it is one: `Payment <base64url>` (`None` for another
/// scheme, such as the `Bearer` of an API key in `Authorization`).
pub fn credential_of(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..8)?;
    if !scheme.eq_ignore_ascii_case(b"payment ") {
        return None;
    }
    let rest = value.get(8..)?;
    let start = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
    rest.get(start..)
}

/// Reads a credential (what follows `Payment `): base64url, padded or not, at most
/// [`MAX_HEADER`] bytes, of a credential's JSON.
pub fn read_credential(token: &[u8], header: &str) -> Result<Credential, X402Error> {
    if token.len() > MAX_HEADER {
        return Err(X402Error(format!(
            "{header}: {} bytes; at most {MAX_HEADER} are read",
            token.len()
        )));
    }
    // Padding is not sent (the draft says so), but tolerated.
    let unpadded = token
        .iter()
        .rposition(|b| *b != b'=')
        .map_or(&[][..], |end| token.get(..=end).unwrap_or_default());
    let json = URL_SAFE_NO_PAD
        .decode(unpadded)
        .map_err(|_| X402Error(format!("{header}: the credential is not base64url")))?;
    from_json(&json, header)
}

/// A `Payment-Receipt` of an `evm` charge (members sorted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub chain_id: u64,
    pub challenge_id: String,
    /// The challenge request's `externalId` (the pack's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub method: String,
    /// The settlement's transaction.
    pub reference: String,
    pub status: String,
    /// RFC 3339.
    pub timestamp: String,
}

impl Receipt {
    /// The header value: base64url (no padding) of its JSON.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests;
