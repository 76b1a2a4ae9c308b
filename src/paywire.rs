//! Fleet mode's payments API (`tollgate.payments.v1.Payments`): the messages the filter sends
//! quotad, beside the rate limit protocol, to keep a payment's claim, a consumer's prepaid
//! balance and its ledger in Redis for every Envoy of a fleet (docs/payments.md, "Fleet mode").
//!
//! Declared here once with prost's derive, as the rate limit messages are in [`crate::rls`]:
//! the filter encodes them with no protobuf compiler, and quotad serves them with tonic's
//! generated glue over these same types (quotad/build.rs). A leaf: nothing of the
//! configuration, nothing of the host. Every field is checked by quotad before Redis is
//! called; an answer's enumerations are read with [`Claimed::of`] and [`ClaimState::of`],
//! which map a value this version does not know to a refusal, never a panic.

/// The service, and each method's route (`/<package>.<service>/<method>`).
pub const SERVICE: &str = "tollgate.payments.v1.Payments";
pub const CLAIM: &str = "Claim";
pub const MARK: &str = "Mark";
pub const CREDIT: &str = "Credit";
pub const DRAW: &str = "Draw";
pub const BALANCE: &str = "Balance";

/// Longest replay key or ledger digest (hex digits).
pub const MAX_DIGEST_HEX: usize = 64;
/// A claim whose settlement began is kept at least this long (s): the money may have moved,
/// and a retry must find it.
pub const KEEP_SETTLING_SECONDS: i64 = 86_400;
/// A ledger entry is kept this long (s): longer than any claim that could bring its
/// settlement again.
pub const LEDGER_SECONDS: i64 = 8 * 86_400;
/// Most claims not settled yet per consumer (as in local mode: 2 in each of 16 shards).
pub const MAX_OPEN_CLAIMS: u64 = 32;
/// The farthest a claim's `keep_until` may be (s from now): an authorization's longest
/// validity and the calls' timeouts are far below it.
pub const MAX_KEEP_SECONDS: i64 = 2 * 86_400;
/// The longest `stale_ms` and `settling_stale_ms` (ms).
pub const MAX_STALE_MS: i64 = 3_600_000;
/// How long a SETTLING claim is not taken over in fleet mode (ms): longer than the filter
/// tries a credit the store did not confirm, so that a copy sent meanwhile waits (503)
/// instead of settling the payment again (which a facilitator refuses: "nonce used").
pub const SETTLING_STALE_MS: i64 = 300_000;

/// Where a claimed payment stands (`NONE`: no claim; in a [`MarkRequest`]: drop it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ClaimState {
    None = 0,
    Verifying = 1,
    Settling = 2,
    Settled = 3,
    Failed = 4,
    Unknown = 5,
}

impl ClaimState {
    /// A wire value: `None` for one this version does not know.
    pub fn of(value: i32) -> ClaimState {
        ClaimState::try_from(value).unwrap_or(ClaimState::None)
    }
}

/// What claiming a payment found (the meaning of each: [`crate::payments::Claimed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Claimed {
    Unspecified = 0,
    Fresh = 1,
    Retry = 2,
    Busy = 3,
    Settled = 4,
    Failed = 5,
    Taken = 6,
    TooMany = 7,
    Untimely = 8,
    /// A look (`look`) found no claim of this consumer's.
    Absent = 9,
}

impl Claimed {
    /// A wire value: `Unspecified` for one this version does not know.
    pub fn of(value: i32) -> Claimed {
        Claimed::try_from(value).unwrap_or(Claimed::Unspecified)
    }
}

/// Claims a payment for a consumer, or looks at its claim.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClaimRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(string, tag = "2")]
    pub consumer: String,
    /// The payment's replay key (hex).
    #[prost(string, tag = "3")]
    pub replay: String,
    /// Unix seconds the claim is kept at least (its authorization's validity and a margin).
    #[prost(int64, tag = "4")]
    pub keep_until: i64,
    /// How long a VERIFYING or SETTLING claim may go without news before another request
    /// takes it over (ms).
    #[prost(int64, tag = "5")]
    pub stale_ms: i64,
    /// The payment cannot be settled now (its time): create nothing, drop a stale verification.
    #[prost(bool, tag = "6")]
    pub untimely: bool,
    /// Only look: change nothing, and answer the claim's state if it is this consumer's.
    #[prost(bool, tag = "7")]
    pub look: bool,
    /// How long a SETTLING claim may go without news before it is taken over (ms; 0: as
    /// `stale_ms`): the money may have moved, and its credit may still be under way.
    #[prost(int64, tag = "8")]
    pub settling_stale_ms: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ClaimResponse {
    #[prost(enumeration = "Claimed", tag = "1")]
    pub outcome: i32,
    /// The claim's state after the call.
    #[prost(enumeration = "ClaimState", tag = "2")]
    pub state: i32,
}

/// Sets the state of a claim (`NONE`: drops it).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MarkRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(string, tag = "2")]
    pub replay: String,
    #[prost(enumeration = "ClaimState", tag = "3")]
    pub state: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MarkResponse {
    /// Whether the claim was there (setting the state of a claim that is gone is not done).
    #[prost(bool, tag = "1")]
    pub found: bool,
}

/// Credits a settled payment's credits to a consumer's balance, once per ledger entry, and
/// marks its claim SETTLED.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreditRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(string, tag = "2")]
    pub consumer: String,
    #[prost(string, tag = "3")]
    pub replay: String,
    #[prost(uint64, tag = "4")]
    pub credits: u64,
    /// The settlement's digest ([`crate::payments::ledger_key`]).
    #[prost(string, tag = "5")]
    pub ledger: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreditResponse {
    /// False: this ledger entry was credited before (nothing added).
    #[prost(bool, tag = "1")]
    pub added: bool,
    #[prost(uint64, tag = "2")]
    pub balance: u64,
}

/// Pays one request from a consumer's balance, and counts it in the limits credits do not
/// stand in for, all or nothing.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DrawRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(string, tag = "2")]
    pub consumer: String,
    #[prost(uint64, tag = "3")]
    pub cost: u64,
    /// An encoded `envoy.service.ratelimit.v3.RateLimitRequest` of the same domain and
    /// consumer, as fleet mode sends it ([`crate::rls::encode_request`]): the other limits
    /// and what to take from each. Empty: none.
    #[prost(bytes = "vec", tag = "4")]
    pub limits: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DrawResponse {
    #[prost(bool, tag = "1")]
    pub drawn: bool,
    /// The balance after the call.
    #[prost(uint64, tag = "2")]
    pub balance: u64,
    /// Each limit's count before the call, in `limits`' order.
    #[prost(uint64, repeated, tag = "3")]
    pub used: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BalanceRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(string, tag = "2")]
    pub consumer: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BalanceResponse {
    #[prost(uint64, tag = "1")]
    pub balance: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn an_unknown_enumeration_value_is_read_as_a_refusal() {
        let answer = ClaimResponse {
            outcome: 42,
            state: -1,
        };
        let bytes = answer.encode_to_vec();
        let read = ClaimResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(Claimed::of(read.outcome), Claimed::Unspecified);
        assert_eq!(ClaimState::of(read.state), ClaimState::None);
        assert_eq!(Claimed::of(Claimed::Taken as i32), Claimed::Taken);
    }

    #[test]
    fn a_truncated_answer_is_an_error_not_a_panic() {
        let bytes = DrawResponse {
            drawn: true,
            balance: 7,
            used: vec![1, 2],
        }
        .encode_to_vec();
        for cut in 0..bytes.len() {
            let _ = DrawResponse::decode(bytes.get(..cut).unwrap_or_default());
        }
        assert!(DrawResponse::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
