//! The client's side of the HTTP Payment scheme in the tests, written apart from the filter's
//! (`src/paymentauth.rs`) so that each checks the other: a `WWW-Authenticate: Payment`
//! challenge parsed, its HMAC id recomputed from a known secret, and a credential
//! (`Payment <base64url>`) paying an `evm` charge with an EIP-3009 authorization whose nonce is
//! keccak-256 of the challenge's id and realm, and whose signature signs nothing (the fake
//! facilitator checks none).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha3::Digest;

/// A challenge's auth-params (`id`, `realm`, `method`, ...), unquoted.
pub type Challenge = BTreeMap<String, String>;

/// Parses one `WWW-Authenticate` value of the `Payment` scheme (quoted values without escapes,
/// as tollgate sends them); panics, saying why, on anything else.
pub fn parse_challenge(value: &str) -> Challenge {
    let rest = value
        .strip_prefix("Payment ")
        .unwrap_or_else(|| panic!("not a Payment challenge: {value:?}"));
    let mut params = Challenge::new();
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("no name=\"value\" at {rest:?} in {value:?}"));
        let (param, after) = after
            .split_once('"')
            .unwrap_or_else(|| panic!("an unterminated value in {value:?}"));
        let previous = params.insert(name.trim().to_string(), param.to_string());
        assert!(previous.is_none(), "{name} twice in {value:?}");
        rest = after
            .trim_start()
            .strip_prefix(',')
            .unwrap_or(after)
            .trim_start();
    }
    params
}

/// The draft's HMAC-SHA256 id of a challenge under `secret`: its seven slots joined by `|`.
pub fn challenge_id(secret: &str, c: &Challenge) -> String {
    let slot = |name: &str| c.get(name).map_or("", String::as_str);
    let input = [
        "realm", "method", "intent", "request", "expires", "digest", "opaque",
    ]
    .map(slot)
    .join("|");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The JSON of a base64url parameter (`request`, `opaque`) or header (`Payment-Receipt`).
pub fn decode_base64url(value: &str) -> Value {
    let json = URL_SAFE_NO_PAD
        .decode(value)
        .unwrap_or_else(|e| panic!("not base64url without padding ({e}): {value:?}"));
    serde_json::from_slice(&json).unwrap()
}

/// keccak256(abi.encodePacked(id, realm)), `0x` and hex: the nonce an `evm` charge's
/// authorization must carry.
pub fn challenge_nonce(id: &str, realm: &str) -> String {
    let mut keccak = sha3::Keccak256::new();
    keccak.update(id.as_bytes());
    keccak.update(realm.as_bytes());
    let digest = keccak.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{hex}")
}

/// The credential of `challenge`, as JSON: `from` authorizes the request's amount to its
/// recipient with `nonce` (the bound one: [`challenge_nonce`]), valid for 50 seconds.
pub fn credential_json(challenge: &Challenge, from: &str, nonce: &str) -> Value {
    let request = decode_base64url(&challenge["request"]);
    let valid_before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 50;
    json!({
        "challenge": challenge,
        "payload": {
            "type": "authorization",
            "from": from,
            "to": request["recipient"],
            "value": request["amount"],
            "validAfter": "0",
            "validBefore": valid_before.to_string(),
            "nonce": nonce,
            "signature": crate::x402::SIGNATURE,
        },
        "source": format!("did:pkh:eip155:{}:{from}", request["methodDetails"]["chainId"]),
    })
}

/// The `Authorization` (or `Payment-Authorization`) value of a credential: `Payment ` and
/// base64url of its JSON.
pub fn payment_credential(credential: &Value) -> String {
    format!("Payment {}", URL_SAFE_NO_PAD.encode(credential.to_string()))
}

/// [`payment_credential`] of [`credential_json`] with the bound nonce: what a paying client
/// sends for `challenge`.
pub fn pay_challenge(challenge: &Challenge, from: &str) -> String {
    let nonce = challenge_nonce(&challenge["id"], &challenge["realm"]);
    payment_credential(&credential_json(challenge, from, &nonce))
}
