//! Prepaid credits bought with x402 payments: reading a payment a request carries, matching it
//! to one of the configured packs, the replay claim that lets one payment be settled once,
//! what the facilitator's answers mean, and the credit. Pure apart from the [`Store`]; the
//! host makes the calls (`src/host/payments.rs`).
//!
//! A payment goes through these states, one claim per payment in shared data (its replay key:
//! network, asset, payer and the authorization's nonce, so one payment is one claim whoever
//! presents it and however often):
//!
//! ```text
//!  (none) ──claim──▶ VERIFYING ──valid──▶ SETTLING ──settled──▶ credited ──▶ SETTLED
//!                       │                    │
//!                   invalid/refused      refused before broadcast ──▶ FAILED
//!                       ▼                    │
//!                     FAILED             timeout, 5xx, cut, "receipt unknown" ──▶ UNKNOWN
//! ```
//!
//! - A claim is taken (a compare-and-swap on its shard) **before** any facilitator call, so
//!   concurrent copies of a payment make one call: the others are answered 503 with
//!   `Retry-After` (pending) and see the outcome when they retry.
//! - `SETTLED` and `FAILED` are final: a replay credits nothing and calls nothing (a settled
//!   payment's request is decided as if it carried none; a failed one is refused again).
//! - `UNKNOWN` (the facilitator may have settled): 503 with `Retry-After`, never a fresh 402.
//!   The same payment presented again is settled again; a facilitator that answers a settled
//!   payment's retry with its transaction gets it credited then, once (the ledger in the
//!   consumer's record is keyed by the transaction). One that answers `nonce_already_used`
//!   leaves it unresolved (409): the operator settles it from the facilitator's records.
//! - A request that goes away while verifying drops its claim; its settlement is the root
//!   context's, which credits it whatever became of the request. A claim whose VM stopped
//!   mid-call is taken over once stale ([`stale_ms`]): a VERIFYING one verified afresh, a
//!   SETTLING one settled again.
//! - Claims live in this Envoy's shared data: lost with it on a restart (with the counts and
//!   the balances: see docs/payments.md).

use serde::{Deserialize, Serialize};

use crate::config::{Pack, Payments};
use crate::counters::{payment_shard_key, PAYMENT_SHARDS};
use crate::decision::Caller;
use crate::paymentauth;
use crate::quota::{credit, Credited};
use crate::response::{payment_reply, Reply};
use crate::sha256::{sha256, to_hex};
use crate::store::{read_modify_write, CountError, Rewrite, Store, StoreError};
use crate::x402::{self, PaymentPayload, PaymentPayloadV1, SettleResponse};

/// The request headers a payment comes in (v2, then v1).
pub use crate::paymentauth::{PAYMENT_HEADERS as HEADERS, PAYMENT_SIGNATURE, X_PAYMENT};
/// The response headers that say what became of it.
pub const PAYMENT_RESPONSE: &str = "payment-response";
pub const X_PAYMENT_RESPONSE: &str = "x-payment-response";

/// Most claims a shard keeps (claims go when their authorization has expired).
pub const MAX_CLAIMS_PER_SHARD: usize = 512;
/// An authorization must stay valid at least this long (seconds) to be settled.
pub const MIN_VALID_SECONDS: i64 = 5;
/// How long after its authorization expired a claim is kept (an UNKNOWN one: a day).
const KEEP_SECONDS: i64 = 60;
const KEEP_UNKNOWN_SECONDS: i64 = crate::paywire::KEEP_SETTLING_SECONDS;
/// Most claims one consumer may hold in one shard that are not settled (being verified or
/// settled, refused, unknown): a consumer sending payments nobody will settle fills its own
/// share of claims (at most this × the shards), not every consumer's — checked where the claim
/// is taken, with no read of another shard.
pub const MAX_OPEN_CLAIMS_PER_SHARD: usize = 2;

/// Attempts of a claim's compare-and-swap cycle.
const ATTEMPTS: u32 = 32;

/// A payment as a request presents it, matched to a pack.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Presented {
    /// 1 (`X-PAYMENT`) or 2 (`PAYMENT-SIGNATURE`).
    pub version: u32,
    /// The pack's index in `payments.packs`.
    pub pack: usize,
    /// The claim's key (hex digest of network, asset, payer and nonce).
    pub replay: String,
    /// The authorization's `validBefore` (Unix seconds).
    pub valid_before: i64,
    /// The body of `/verify` and `/settle`: the payment as sent, and the pack's requirements
    /// from the configuration (never the client's copy).
    pub call_body: Vec<u8>,
    pub network: String,
    /// The authorization's `from`.
    pub payer: String,
    /// Why it cannot be settled now (not valid yet, expired, valid for too long), if so: a
    /// fresh payment is refused for it, one whose settlement is under way or unknown is not.
    pub untimely: Option<&'static str>,
    /// An HTTP Payment credential's: its challenge's `id` and chain id (for `Payment-Receipt`).
    pub challenge: Option<(String, u64)>,
}

impl Presented {
    /// The problem type of its refusal: x402's `payment-refused`, or the HTTP Payment
    /// scheme's `verification-failed`.
    pub fn refused(&self) -> &'static str {
        if self.challenge.is_some() {
            crate::response::VERIFICATION_FAILED
        } else {
            crate::response::PAYMENT_REFUSED
        }
    }
}

/// A request held while its payment is verified (if `verify`) and settled.
#[derive(Debug, Clone, PartialEq)]
pub struct Pay {
    /// The consumer's index in the configuration.
    pub consumer: usize,
    pub presented: Presented,
    /// False: a retry of a settlement whose outcome was unknown (settle only).
    pub verify: bool,
    /// Fleet mode: not claimed yet; the root context claims it in the store first (and
    /// `verify` then follows the claim).
    pub remote: bool,
    /// Fleet mode: a payment this request would turn away, to be looked up first under these
    /// claim keys ([`replay_candidates`]): one under way or unknown is decided by its claim
    /// (settled again if `readable`, else 409 for the operator); none, the request is decided
    /// again as if it had been looked up (`Attempt::looked`). Empty: claim it.
    pub look: Vec<String>,
    /// `presented` is the payment as read (false: it could not be read or matched, and
    /// `presented` is empty).
    pub readable: bool,
}

impl Eq for Pay {}

/// The reply to a payment that is not served (see [`crate::response::payment_reply`]).
pub fn reply(
    payments: &Payments,
    caller: &Caller,
    kind: &'static str,
    detail: String,
    retry_after: Option<u64>,
    now: i64,
) -> Reply {
    payment_reply(payments, Some(caller), kind, detail, retry_after, now)
}

/// Why a payment was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not a payment message (400): says where, never a value.
    Malformed(String),
    /// A payment, but not for one of the offers, or not valid now (402 with the offers).
    Mismatch(String),
    /// An HTTP Payment credential refused before any call: the problem type (the scheme's own,
    /// 402 with fresh challenges) and why.
    Credential(&'static str, String),
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Reads the payment of `header` (`payment-signature` or `x-payment`) at `now` (Unix
/// seconds) and finds the pack it pays for.
pub fn read(
    payments: &Payments,
    header: &str,
    value: &[u8],
    now: i64,
) -> Result<Presented, Refused> {
    let malformed = |e: x402::X402Error| Refused::Malformed(e.0);
    let mismatch = |why: &str| Refused::Mismatch(why.to_string());
    // The document as sent goes to the facilitator; it is read here to check it.
    let raw = x402::decode_json(value, header).map_err(malformed)?;
    let (version, pack, authorization, network) = if header == PAYMENT_SIGNATURE {
        let payment: PaymentPayload = x402::from_json(&raw, header).map_err(malformed)?;
        if payment.x402_version != 2 {
            return Err(mismatch(
                "PAYMENT-SIGNATURE carries x402 version 2 payments",
            ));
        }
        let a = &payment.accepted;
        let pack = payments.packs.iter().position(|p| {
            let o = &p.offer;
            o.scheme == a.scheme
                && o.network == a.network
                && o.amount == a.amount
                && same(&o.asset, &a.asset)
                && same(&o.pay_to, &a.pay_to)
        });
        let Some(pack) = pack else {
            return Err(mismatch("the payment does not accept one of the offers"));
        };
        (2, pack, payment.payload.authorization, a.network.clone())
    } else {
        let payment: PaymentPayloadV1 = x402::from_json(&raw, header).map_err(malformed)?;
        if payment.x402_version != 1 {
            return Err(mismatch("X-PAYMENT carries x402 version 1 payments"));
        }
        let a = &payment.payload.authorization;
        let pack = payments.packs.iter().position(|p| {
            p.offer.scheme == payment.scheme
                && p.v1_network.as_deref() == Some(payment.network.as_str())
                && same(&p.offer.pay_to, &a.to)
                && p.offer.amount == a.value
        });
        let Some(pack) = pack else {
            return Err(mismatch("the payment does not match one of the offers"));
        };
        let network = payments
            .packs
            .get(pack)
            .map(|p| p.offer.network.clone())
            .unwrap_or_default();
        (1, pack, payment.payload.authorization, network)
    };
    authorization.check().map_err(malformed)?;
    present(
        payments,
        version,
        pack,
        &authorization,
        network,
        &raw,
        now,
        None,
    )
}

/// A payment matched to pack `pack`, as the facilitator will be asked to settle it: `raw` is
/// its x402 payload's JSON (as sent, or made from an HTTP Payment credential).
#[allow(clippy::too_many_arguments)] // the parts of a payment, as they are
fn present(
    payments: &Payments,
    version: u32,
    pack: usize,
    authorization: &x402::Authorization,
    network: String,
    raw: &[u8],
    now: i64,
    challenge: Option<(String, u64)>,
) -> Result<Presented, Refused> {
    let mismatch = |why: &str| Refused::Mismatch(why.to_string());
    let Some(offer) = payments.packs.get(pack).map(|p: &Pack| &p.offer) else {
        return Err(mismatch("no such offer"));
    };
    // What is signed must be what is offered: the payee and the amount.
    if !same(&authorization.to, &offer.pay_to) || authorization.value != offer.amount {
        return Err(mismatch(
            "the authorization does not pay the offer's amount to its payee",
        ));
    }
    // Whether it can be settled now is for the caller to weigh against its claim: a payment
    // whose settlement is under way or unknown is never refused for its time.
    let after: i64 = authorization.valid_after.parse().unwrap_or(i64::MAX);
    let before: i64 = authorization.valid_before.parse().unwrap_or(0);
    let longest = i64::try_from(offer.max_timeout_seconds).unwrap_or(i64::MAX);
    let untimely = if after > now {
        Some("the authorization is not valid yet")
    } else if before < now.saturating_add(MIN_VALID_SECONDS) {
        Some("the authorization has expired")
    } else if before > now.saturating_add(longest).saturating_add(KEEP_SECONDS) {
        Some("the authorization is valid for longer than the offer's maxTimeoutSeconds")
    } else {
        None
    };
    let replay = replay_key(
        &network,
        &offer.asset,
        &authorization.from,
        &authorization.nonce,
    );
    let requirements = match version {
        2 => serde_json::to_vec(offer),
        // The v1 offer of the pack (`accepts` lists one per pack with a v1 network).
        _ => serde_json::to_vec(&payments.v1_body.accepts.iter().find(|r| {
            payments.packs.get(pack).and_then(|p| p.v1_network.as_ref()) == Some(&r.network)
                && r.max_amount_required == offer.amount
                && r.pay_to == offer.pay_to
                && r.asset == offer.asset
        })),
    }
    .unwrap_or_default();
    // `{"x402Version":V,"paymentPayload":<the payment as sent>,"paymentRequirements":<ours>}`:
    // the payment's JSON was read whole above (one document, nothing after it).
    let mut call_body = Vec::with_capacity(raw.len() + requirements.len() + 64);
    call_body.extend_from_slice(b"{\"x402Version\":");
    call_body.extend_from_slice(version.to_string().as_bytes());
    call_body.extend_from_slice(b",\"paymentPayload\":");
    call_body.extend_from_slice(raw);
    call_body.extend_from_slice(b",\"paymentRequirements\":");
    call_body.extend_from_slice(&requirements);
    call_body.push(b'}');
    Ok(Presented {
        version,
        pack,
        replay,
        valid_before: before,
        call_body,
        network,
        payer: authorization.from.clone(),
        untimely,
        challenge,
    })
}

/// Reads an HTTP Payment credential (`token`, what follows `Payment `, from `header`) that
/// `consumer` presents at `now`: its challenge must be one this API made for this consumer
/// (the HMAC of its parameters, `opaque` naming the consumer), and its EIP-3009 authorization
/// must pay the pack's amount to its payee with the nonce bound to the challenge. It is then
/// an x402 v2 payment of the pack, settled by the facilitator like any other.
pub fn read_credential(
    payments: &Payments,
    header: &str,
    token: &[u8],
    now: i64,
    consumer: &str,
) -> Result<Presented, Refused> {
    use crate::response::{CHALLENGE_INVALID, CREDENTIAL_MALFORMED, VERIFICATION_FAILED};
    let refuse = |kind: &'static str, why: &str| Err(Refused::Credential(kind, why.to_string()));
    let Some(http) = &payments.http_payment else {
        return refuse(CHALLENGE_INVALID, "this API makes no Payment challenges");
    };
    let credential = match paymentauth::read_credential(token, header) {
        Ok(credential) => credential,
        Err(e) => return Err(Refused::Credential(CREDENTIAL_MALFORMED, e.0)),
    };
    let echoed = &credential.challenge;
    let bound = echoed.bound();
    if echoed.realm != http.realm
        || echoed.method != paymentauth::METHOD
        || echoed.intent != paymentauth::INTENT
        || !bound.digest.is_empty()
    {
        return refuse(CHALLENGE_INVALID, "the challenge is not one of this API's");
    }
    if !bound.verifies(http.secret.0.as_bytes(), &echoed.id) {
        return refuse(
            CHALLENGE_INVALID,
            "the challenge's id does not match its parameters",
        );
    }
    // Made by this API, so its parameters are its own: whom it is for, when it expires.
    if paymentauth::opaque_consumer(bound.opaque).as_deref() != Some(consumer) {
        return refuse(
            CHALLENGE_INVALID,
            "the challenge was made for another consumer",
        );
    }
    let expires = crate::time::parse_rfc3339(bound.expires).unwrap_or(i64::MIN);
    let Some((pack, chain)) = http.requests.iter().enumerate().find_map(|(i, r)| {
        r.as_ref()
            .filter(|c| c.request == echoed.request)
            .map(|c| (i, c.chain_id))
    }) else {
        return refuse(
            CHALLENGE_INVALID,
            "the challenge's pack is no longer offered",
        );
    };
    let payload = &credential.payload;
    if payload.kind != paymentauth::AUTHORIZATION_TYPE {
        return refuse(
            VERIFICATION_FAILED,
            "only `authorization` (EIP-3009) credentials are accepted",
        );
    }
    let authorization = &payload.authorization();
    if let Err(e) = authorization.check() {
        let why = e.0.replacen("payload.authorization.", "payload.", 1);
        return Err(Refused::Credential(CREDENTIAL_MALFORMED, why));
    }
    let Some(offer) = payments.packs.get(pack).map(|p| &p.offer) else {
        return refuse(
            CHALLENGE_INVALID,
            "the challenge's pack is no longer offered",
        );
    };
    if !same(&authorization.to, &offer.pay_to) || authorization.value != offer.amount {
        return refuse(
            VERIFICATION_FAILED,
            "the authorization does not pay the challenge's amount to its recipient",
        );
    }
    if !same(
        &authorization.nonce,
        &paymentauth::nonce(&echoed.id, &echoed.realm),
    ) {
        return refuse(
            VERIFICATION_FAILED,
            "the authorization's nonce is not keccak256(challenge id, realm)",
        );
    }
    // The facilitator settles it as the x402 v2 payment of the pack it is.
    let raw = serde_json::to_vec(&PaymentPayload {
        x402_version: 2,
        resource: Some(payments.resource.clone()),
        accepted: offer.clone(),
        payload: x402::ExactPayload {
            signature: payload.signature.clone(),
            authorization: authorization.clone(),
        },
    })
    .unwrap_or_default();
    let network = offer.network.clone();
    let mut presented = present(
        payments,
        2,
        pack,
        authorization,
        network,
        &raw,
        now,
        Some((echoed.id.clone(), chain)),
    )?;
    // An expired challenge is refused like an expired authorization: unless its settlement is
    // under way or unknown (the claim decides).
    if presented.untimely.is_none() && expires < now {
        presented.untimely = Some("the challenge has expired");
    }
    Ok(presented)
}

/// The claim keys the payment `value` (in `header`) may have, read leniently — no offer,
/// challenge or time need match — to find the claim of a payment whose settlement is under way
/// or unknown even when the configuration that took it has changed since (a pack repriced, a
/// plan without credits, a consumer suspended, x402 or the HTTP Payment scheme switched off,
/// another secret). An x402 v2 payment names its network and asset; a v1 payment and an HTTP
/// Payment credential are tried with those of every pack (a pack moved to another network or
/// asset is not found: its claim is left to the operator's log of the first answer).
pub fn replay_candidates(payments: &Payments, header: &str, value: &[u8]) -> Vec<String> {
    let packs = |from: &str, nonce: &str| -> Vec<String> {
        payments
            .packs
            .iter()
            .map(|p| replay_key(&p.offer.network, &p.offer.asset, from, nonce))
            .collect()
    };
    match header {
        PAYMENT_SIGNATURE | X_PAYMENT => {
            let Ok(raw) = x402::decode_json(value, header) else {
                return Vec::new();
            };
            // Read as `read` reads them (one deserializer for each message in the .wasm).
            if header == PAYMENT_SIGNATURE {
                let Ok(payment) = x402::from_json::<PaymentPayload>(&raw, header) else {
                    return Vec::new();
                };
                let (a, o) = (&payment.payload.authorization, &payment.accepted);
                return vec![replay_key(&o.network, &o.asset, &a.from, &a.nonce)];
            }
            match x402::from_json::<PaymentPayloadV1>(&raw, header) {
                Ok(p) => packs(
                    &p.payload.authorization.from,
                    &p.payload.authorization.nonce,
                ),
                Err(_) => Vec::new(),
            }
        }
        _ => match paymentauth::read_credential(value, header) {
            Ok(c) => packs(&c.payload.from, &c.payload.nonce),
            Err(_) => Vec::new(),
        },
    }
}

/// The claim key of the payment of `value` if its settlement is under way or unknown: the
/// money may have moved, so it is never refused before its claim is looked at.
/// With `consumer`, only its own claims count (another consumer's copy is refused by its
/// claim).
pub fn settling(
    store: &impl Store,
    payments: &Payments,
    header: &str,
    value: &[u8],
    consumer: Option<&str>,
) -> Option<String> {
    replay_candidates(payments, header, value)
        .into_iter()
        .find(|replay| {
            let Ok(Some((bytes, _))) = store.get(&shard_of(replay)) else {
                return false;
            };
            decode_claims(&bytes).iter().any(|c| {
                c.k == *replay
                    && consumer.is_none_or(|name| c.c == name)
                    && matches!(c.s, State::Settling | State::Unknown)
            })
        })
}

/// Whether an untimely payment's reason is that it (or its challenge) has expired.
pub fn expired(why: &str) -> bool {
    why.ends_with("has expired")
}

/// A payment's claim key: one per authorization, whoever presents it.
pub fn replay_key(network: &str, asset: &str, from: &str, nonce: &str) -> String {
    let text = format!(
        "{network}|{}|{}|{}",
        asset.to_ascii_lowercase(),
        from.to_ascii_lowercase(),
        nonce.to_ascii_lowercase()
    );
    let mut hex = to_hex(&sha256(text.as_bytes()));
    hex.truncate(32);
    hex
}

/// A settlement's ledger name in the consumer's record (network and transaction).
pub fn ledger_key(network: &str, transaction: &str) -> String {
    let mut hex = to_hex(&sha256(
        format!("{network}|{}", transaction.to_ascii_lowercase()).as_bytes(),
    ));
    hex.truncate(24);
    hex
}

fn shard_of(replay: &str) -> String {
    let i = replay
        .get(..2)
        .and_then(|h| usize::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    payment_shard_key(i % PAYMENT_SHARDS)
}

/// Where a claimed payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Verifying,
    Settling,
    Settled,
    Failed,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Claim {
    /// Replay key.
    k: String,
    s: State,
    /// The consumer who presented it.
    c: String,
    /// When the state was set (ms).
    t: i64,
    /// Kept until (Unix seconds).
    u: i64,
}

/// What claiming a payment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// New (or a stale verification taken over): verify, then settle.
    Fresh,
    /// Its settlement's outcome was unknown: settle again (no verification).
    Retry,
    /// Another request is verifying or settling it now.
    Busy,
    /// Settled and credited already: a replay.
    Settled,
    /// Refused before.
    Failed,
    /// Presented before by another consumer.
    Taken,
    /// Its shard holds [`MAX_CLAIMS_PER_SHARD`] live claims.
    Full,
    /// Its shard holds [`MAX_OPEN_CLAIMS_PER_SHARD`] of this consumer's claims not settled.
    TooMany,
    /// No claim, or a verification nobody finished, and it cannot be settled now (the reason).
    Untimely(&'static str),
}

/// What a paying request is told, where several paths answer alike (local mode's verdict,
/// fleet mode's root).
pub const UNRESOLVED: &str =
    "The settlement of this payment cannot be confirmed; it was not credited. Contact the API's operator.";
pub const NOT_CREDITED_YET: &str = "The payment was settled but not credited yet; send the same payment again shortly (do not pay again).";
pub const NOT_TAKEN: &str = "The payment cannot be taken now; try again shortly.";

/// A reply to a paying request: its problem type, detail and `Retry-After`.
pub type PayReply = (&'static str, String, Option<u64>);

/// What a claim makes of the request that presented the payment: verify and settle it
/// (`Ok(true)`), settle it again (`Ok(false)`: its settlement was unknown), decide the request
/// as usual (`Err(None)`: a replay of a settled payment), or reply.
pub fn after_claim(
    claimed: Claimed,
    presented: &Presented,
    consumer: &str,
) -> Result<bool, Option<PayReply>> {
    use crate::response::{
        CHALLENGE_EXPIRED, CHALLENGE_INVALID, PAYMENT_PENDING, PAYMENT_REFUSED, VERIFICATION_FAILED,
    };
    let reply = |kind: &'static str, detail: &str, retry: Option<u64>| {
        Err(Some((kind, detail.to_string(), retry)))
    };
    match claimed {
        Claimed::Fresh => Ok(true),
        Claimed::Retry => Ok(false),
        Claimed::Settled => Err(None),
        Claimed::Busy => reply(
            PAYMENT_PENDING,
            "This payment is being settled; try again shortly.",
            Some(1),
        ),
        Claimed::Failed => reply(presented.refused(), "this payment was refused before", None),
        Claimed::Taken => {
            let kind = match presented.challenge {
                Some(_) => CHALLENGE_INVALID,
                None => PAYMENT_REFUSED,
            };
            reply(kind, "this payment has been used", None)
        }
        // A payment whose settlement is under way, unknown or done is never refused for its
        // time (its claim decides); one that nothing happened to is.
        Claimed::Untimely(why) => {
            let kind = match presented.challenge {
                Some(_) if expired(why) => CHALLENGE_EXPIRED,
                Some(_) => VERIFICATION_FAILED,
                None => PAYMENT_REFUSED,
            };
            reply(kind, why, None)
        }
        Claimed::TooMany => {
            log::warn!(
                "consumer={consumer}: too many of its payments are not settled; its next ones wait"
            );
            reply(
                PAYMENT_PENDING,
                "Too many of this consumer's payments are pending or were refused; try again \
                 later, or sign a new payment.",
                Some(60),
            )
        }
        Claimed::Full => {
            log::warn!("payments: a claim shard is full; payments are refused until claims expire");
            reply(
                PAYMENT_PENDING,
                "Too many payments are being settled; try again later.",
                Some(60),
            )
        }
    }
}

/// Unix seconds a new claim is kept until: past its authorization, and past the calls that
/// may still be made for it.
pub fn keep_until(presented: &Presented, now_ms: i64, stale_ms: i64) -> i64 {
    let now = now_ms.div_euclid(1000);
    presented.valid_before.saturating_add(KEEP_SECONDS).max(
        now.saturating_add(stale_ms.div_euclid(1000))
            .saturating_add(KEEP_SECONDS),
    )
}

/// Fleet mode: what the store's answer to a claim means ([`crate::paywire::Claimed`]); `None`
/// for an answer this version does not know.
pub fn claimed_of(answer: crate::paywire::Claimed, presented: &Presented) -> Option<Claimed> {
    use crate::paywire::Claimed as Wire;
    Some(match answer {
        Wire::Fresh => Claimed::Fresh,
        Wire::Retry => Claimed::Retry,
        Wire::Busy => Claimed::Busy,
        Wire::Settled => Claimed::Settled,
        Wire::Failed => Claimed::Failed,
        Wire::Taken => Claimed::Taken,
        Wire::TooMany => Claimed::TooMany,
        Wire::Untimely => {
            Claimed::Untimely(presented.untimely.unwrap_or("the payment has expired"))
        }
        Wire::Absent | Wire::Unspecified => return None,
    })
}

/// Fleet mode's states of a claim, on the wire.
pub fn wire_state(state: Option<State>) -> crate::paywire::ClaimState {
    use crate::paywire::ClaimState as Wire;
    match state {
        None => Wire::None,
        Some(State::Verifying) => Wire::Verifying,
        Some(State::Settling) => Wire::Settling,
        Some(State::Settled) => Wire::Settled,
        Some(State::Failed) => Wire::Failed,
        Some(State::Unknown) => Wire::Unknown,
    }
}

/// How long a VERIFYING or SETTLING claim may go without news before another request takes
/// it over: both calls' timeouts and a margin.
pub fn stale_ms(payments: &Payments) -> i64 {
    i64::try_from(payments.timeout_ms.saturating_mul(2))
        .unwrap_or(i64::MAX)
        .saturating_add(5_000)
}

fn decode_claims(bytes: &[u8]) -> Vec<Claim> {
    serde_json::from_slice(bytes).unwrap_or_default()
}

/// Claims `presented` for `consumer` at `now_ms`.
pub fn claim(
    store: &impl Store,
    presented: &Presented,
    consumer: &str,
    now_ms: i64,
    stale_ms: i64,
) -> Result<Claimed, CountError> {
    let key = shard_of(&presented.replay);
    let now = now_ms.div_euclid(1000);
    // A claim outlives its authorization and the calls that may still be made for it.
    let fresh_until = keep_until(presented, now_ms, stale_ms);
    read_modify_write(store, &key, ATTEMPTS, |bytes, _| {
        let mut claims = decode_claims(&bytes);
        claims.retain(|c| c.u >= now);
        let write = |claims: &[Claim], done: Claimed| {
            Ok(Rewrite::Write(
                serde_json::to_vec(claims).unwrap_or_else(|_| b"[]".to_vec()),
                done,
            ))
        };
        let Some(at) = claims.iter().position(|c| c.k == presented.replay) else {
            // Nothing may have happened to it yet: its time is checked.
            if let Some(why) = presented.untimely {
                return Ok(Rewrite::Keep(Claimed::Untimely(why)));
            }
            if claims.len() >= MAX_CLAIMS_PER_SHARD {
                return Ok(Rewrite::Keep(Claimed::Full));
            }
            let open = claims
                .iter()
                .filter(|c| c.c == consumer && c.s != State::Settled)
                .count();
            if open >= MAX_OPEN_CLAIMS_PER_SHARD {
                return Ok(Rewrite::Keep(Claimed::TooMany));
            }
            claims.push(Claim {
                k: presented.replay.clone(),
                s: State::Verifying,
                c: consumer.to_string(),
                t: now_ms,
                u: fresh_until,
            });
            return write(&claims, Claimed::Fresh);
        };
        let Some(c) = claims.get_mut(at) else {
            return Ok(Rewrite::Keep(Claimed::Full));
        };
        if c.c != consumer {
            return Ok(Rewrite::Keep(Claimed::Taken));
        }
        let stale = now_ms.saturating_sub(c.t) > stale_ms;
        let (state, done) = match c.s {
            State::Settled => return Ok(Rewrite::Keep(Claimed::Settled)),
            State::Failed => return Ok(Rewrite::Keep(Claimed::Failed)),
            State::Verifying | State::Settling if !stale => {
                return Ok(Rewrite::Keep(Claimed::Busy))
            }
            // A verification nobody finished moved no money: taken over, if it can still be
            // settled; dropped otherwise.
            State::Verifying => match presented.untimely {
                Some(why) => {
                    claims.swap_remove(at);
                    return write(&claims, Claimed::Untimely(why));
                }
                None => (State::Verifying, Claimed::Fresh),
            },
            // The money may have moved: settled again, whatever its time.
            State::Settling | State::Unknown => (State::Settling, Claimed::Retry),
        };
        c.s = state;
        c.t = now_ms;
        if state == State::Settling {
            c.u = c.u.max(now.saturating_add(KEEP_UNKNOWN_SECONDS));
        }
        write(&claims, done)
    })
}

/// Sets the state of a claim (`None`: drops it, so the payment may be presented again — a
/// verification that could not be made moved no money). A claim that reaches SETTLING is kept
/// a day (the money may move from then on); SETTLED is final (a late mark from another request
/// never downgrades it). Setting the state of a claim that is gone is an error: the caller
/// must not go on as if it were recorded.
pub fn mark(
    store: &impl Store,
    replay: &str,
    state: Option<State>,
    now_ms: i64,
) -> Result<(), CountError> {
    let key = shard_of(replay);
    let now = now_ms.div_euclid(1000);
    read_modify_write(store, &key, ATTEMPTS, |bytes, _| {
        let mut claims = decode_claims(&bytes);
        claims.retain(|c| c.u >= now || c.k == replay);
        match state {
            None => claims.retain(|c| c.k != replay),
            Some(state) => {
                let Some(c) = claims.iter_mut().find(|c| c.k == replay) else {
                    return Err(CountError::Store(StoreError(
                        "the payment's claim is gone".into(),
                    )));
                };
                if c.s == State::Settled && state != State::Settled {
                    return Ok(Rewrite::Keep(()));
                }
                c.s = state;
                c.t = now_ms;
                if state == State::Settling {
                    c.u = c.u.max(now.saturating_add(KEEP_UNKNOWN_SECONDS));
                }
            }
        }
        Ok(Rewrite::Write(
            serde_json::to_vec(&claims).unwrap_or_else(|_| b"[]".to_vec()),
            (),
        ))
    })
}

/// The state of a claim, if there is one.
pub fn state_of(store: &impl Store, replay: &str) -> Option<State> {
    let (bytes, _) = store.get(&shard_of(replay)).ok()??;
    decode_claims(&bytes)
        .into_iter()
        .find(|c| c.k == replay)
        .map(|c| c.s)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Kind {
    x402_version: u32,
    scheme: String,
    network: String,
}

#[derive(Deserialize)]
struct Supported {
    kinds: Vec<Kind>,
}

/// Reads the facilitator's `GET /supported` answer (checked when a configuration is loaded):
/// the offers it cannot settle, one line each (a pack's x402 v2 network, and its v1 network if
/// it has one), or why the answer is not one.
pub fn unsupported(
    payments: &Payments,
    status: Option<u16>,
    body: &[u8],
) -> Result<Vec<String>, String> {
    if status != Some(200) {
        return Err(match status {
            Some(s) => format!("it answered {s}"),
            None => "it did not answer".into(),
        });
    }
    let supported: Supported = serde_json::from_slice(body)
        .map_err(|_| "its answer is not a list of supported kinds".to_string())?;
    let has = |version: u32, scheme: &str, network: &str| {
        supported
            .kinds
            .iter()
            .any(|k| k.x402_version == version && k.scheme == scheme && k.network == network)
    };
    let mut out = Vec::new();
    for pack in &payments.packs {
        let offer = &pack.offer;
        if !has(2, &offer.scheme, &offer.network) {
            out.push(format!(
                "pack `{}`: x402 v2 `{}` on `{}` is not supported by the facilitator",
                pack.name, offer.scheme, offer.network
            ));
        }
        if let Some(v1) = &pack.v1_network {
            if !has(1, &offer.scheme, v1) {
                out.push(format!(
                    "pack `{}`: x402 v1 `{}` on `{v1}` is not supported by the facilitator",
                    pack.name, offer.scheme
                ));
            }
        }
    }
    Ok(out)
}

/// What a facilitator's `/verify` answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    Valid,
    /// The facilitator refused it (the reason it gave, bounded).
    Invalid(String),
    /// No usable answer (status, timeout, not JSON): nothing happened to the money.
    Unavailable(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerifyResponse {
    is_valid: bool,
    #[serde(default)]
    invalid_reason: Option<String>,
}

/// A reason from a facilitator, as a client may read it: at most 64 visible ASCII characters.
fn reason(text: Option<String>) -> String {
    let text = text.unwrap_or_else(|| "refused".into());
    let clean: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect();
    if clean.is_empty() {
        "refused".into()
    } else {
        clean
    }
}

/// Reads `/verify`'s answer: `status` (None: no answer) and body.
pub fn verified(status: Option<u16>, body: &[u8]) -> Verified {
    let unavailable = || {
        Verified::Unavailable(match status {
            Some(s) => format!("the facilitator answered {s}"),
            None => "the facilitator did not answer".into(),
        })
    };
    // x402's facilitators answer a refusal with its verify response under a 4xx too.
    let Some(status @ (200 | 400..=499)) = status else {
        return unavailable();
    };
    match serde_json::from_slice::<VerifyResponse>(body) {
        Ok(v) if v.is_valid && status == 200 => Verified::Valid,
        Ok(v) if !v.is_valid => Verified::Invalid(reason(v.invalid_reason)),
        _ => unavailable(),
    }
}

/// Settlement refusals known to come before any transfer (the reasons of x402's reference
/// facilitators, with or without their `invalid_exact_evm_` prefix): no money moved. Any other
/// refusal — a reverted or unconfirmed transaction, a reason this list does not know — may
/// have moved it, so its outcome is unknown.
const BEFORE_TRANSFER: [&str; 31] = [
    "insufficient_funds",
    "insufficient_balance",
    "invalid_scheme",
    "invalid_network",
    "invalid_payload",
    "invalid_payment_requirements",
    "invalid_x402_version",
    "scheme",
    "network_mismatch",
    "payload",
    "payload_missing_signature",
    "missing_eip712_domain",
    "recipient_mismatch",
    "authorization_value",
    "required_amount",
    "payload_authorization_value_mismatch",
    "signature_format",
    "failed_to_verify_signature",
    "signature",
    "payload_authorization_valid_before",
    "payload_authorization_valid_after",
    "token_name_mismatch",
    "token_version_mismatch",
    "eip3009_not_supported",
    "transaction_simulation_failed",
    "verification_failed",
    "failed_to_parse_signature",
    // The legacy TypeScript and Python facilitators' names.
    "payload_signature",
    "payload_recipient_mismatch",
    "payload_authorization_value",
    "unsupported_scheme",
];

fn before_transfer(reason: &str) -> bool {
    let short = reason.strip_prefix("invalid_exact_evm_").unwrap_or(reason);
    BEFORE_TRANSFER.contains(&short) || BEFORE_TRANSFER.contains(&reason)
}

/// What a facilitator's `/settle` answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Settled in this transaction; the answer is passed on in `PAYMENT-RESPONSE`.
    Done {
        transaction: String,
        response: SettleResponse,
    },
    /// Refused before any transfer: no money moved.
    Refused(String),
    /// The payment's nonce was used already: by this payment (a retry whose first answer was
    /// lost) or another transfer — the facilitator does not say which.
    NonceUsed,
    /// No usable answer, or a refusal that may come after a transfer: the money may have moved.
    Unknown(String),
}

/// Reads `/settle`'s answer (a refusal may come under a 4xx, as x402's facilitators send it).
pub fn settled(status: Option<u16>, body: &[u8]) -> Settled {
    let unknown = || {
        Settled::Unknown(match status {
            Some(s) => format!("the facilitator answered {s}"),
            None => "the facilitator did not answer".into(),
        })
    };
    let Some(status @ (200 | 400..=499)) = status else {
        return unknown();
    };
    let Ok(answer) = serde_json::from_slice::<SettleResponse>(body) else {
        return unknown();
    };
    if answer.success {
        let tx = &answer.transaction;
        if status != 200
            || tx.is_empty()
            || tx.len() > 256
            || !tx.bytes().all(|b| b.is_ascii_graphic())
        {
            return Settled::Unknown("the settlement names no transaction".into());
        }
        return Settled::Done {
            transaction: tx.clone(),
            response: answer,
        };
    }
    let why = answer.error_reason.clone().unwrap_or_default();
    if why.ends_with("nonce_already_used") {
        return Settled::NonceUsed;
    }
    if before_transfer(&why) {
        return Settled::Refused(reason(Some(why)));
    }
    Settled::Unknown(reason(Some(why)))
}

/// Credits a settled payment's pack to the consumer's record (once per transaction) and
/// marks its claim settled.
pub fn credit_settled(
    store: &impl Store,
    record_key: &str,
    presented: &Presented,
    credits: u64,
    transaction: &str,
    now_ms: i64,
) -> Result<Credited, CountError> {
    let ledger = ledger_key(&presented.network, transaction);
    let credited = credit(store, record_key, credits, &ledger, now_ms.div_euclid(1000))?;
    // Credited, whatever comes next: a lost mark leaves the claim SETTLING, so a retry settles
    // again and the ledger credits nothing twice.
    if let Err(e) = mark(store, &presented.replay, Some(State::Settled), now_ms) {
        log::warn!(
            "payments: a credited payment's claim could not be marked settled ({})",
            e.reason()
        );
    }
    Ok(credited)
}

#[cfg(test)]
mod tests;
