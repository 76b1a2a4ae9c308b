//! The decision types: who called, what was decided, and why a request was refused. Rendering
//! (`response`), metrics, memos and usage events import these without importing the algorithm
//! that decides (`admission`).

use crate::config::{Config, Consumer, Plan, Unit};
use crate::lease::Ask;
use crate::quota::Usage;

/// Why a request was (or in shadow mode, would have been) refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Quota,
    MissingCredential,
    InvalidCredential,
    Suspended,
    Expired,
    /// `past_due` after its grace period.
    PastDue,
    StoreError,
    /// A key the configuration's consumers do not hold, while live entitlements have brought
    /// no snapshot yet (`until_first_snapshot: unavailable`).
    EntitlementsUnavailable,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::Quota,
        Reason::MissingCredential,
        Reason::InvalidCredential,
        Reason::Suspended,
        Reason::Expired,
        Reason::PastDue,
        Reason::StoreError,
        Reason::EntitlementsUnavailable,
    ];

    /// The reasons that concern a known consumer: they have per-plan counters and are counted
    /// per consumer in usage events.
    pub const OF_CONSUMERS: [Reason; 5] = [
        Reason::Quota,
        Reason::Suspended,
        Reason::Expired,
        Reason::PastDue,
        Reason::StoreError,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::Quota => "quota",
            Reason::MissingCredential => "missing_credential",
            Reason::InvalidCredential => "invalid_credential",
            Reason::Suspended => "suspended",
            Reason::Expired => "expired",
            Reason::PastDue => "past_due",
            Reason::StoreError => "store_error",
            Reason::EntitlementsUnavailable => "entitlements_unavailable",
        }
    }

    /// Reasons that concern a known consumer, and so also have a per-plan counter.
    pub fn has_plan(self) -> bool {
        !matches!(
            self,
            Reason::MissingCredential | Reason::InvalidCredential | Reason::EntitlementsUnavailable
        )
    }
}

impl Config {
    /// The refusal of a key no consumer owns: 401, or 503 while live entitlements have
    /// brought no snapshot ([`Config::awaiting_snapshot`]).
    pub fn unknown_key(&self) -> Denial<'_> {
        match self.awaiting_snapshot {
            Some(retry_after) => Denial::EntitlementsUnavailable { retry_after },
            None => Denial::UnknownKey,
        }
    }
}

/// A consumer and its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'c> {
    pub consumer: &'c Consumer,
    pub plan: &'c Plan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'c> {
    /// Forward upstream; `usages` (one per limit of the plan) feed the RateLimit headers.
    /// Fleet mode: with `refill`, the consumer's lease ran low and this request claimed its
    /// refill ahead of time (the store call is made without holding the request).
    Allow {
        caller: Caller<'c>,
        usages: Vec<Usage>,
        refill: Option<Ask>,
        /// Prepaid credits the request was paid with (local mode; 0: none).
        drawn: u64,
    },
    Deny(Denial<'c>),
    /// Fleet mode: only limits prepaid credits stand in for refuse: draw on the balance.
    Draw {
        caller: Caller<'c>,
        ask: DrawAsk,
    },
    /// Fleet mode: the consumer's lease is empty. With `refill`, this request claimed the
    /// refill and must ask the store; without, another request of this Envoy is refilling.
    /// Either way the request waits, then is decided again.
    Wait {
        caller: Caller<'c>,
        refill: Option<Ask>,
    },
}

/// The terms of an LLM request's token reservation, read from its body (see [`crate::llm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenAsk {
    /// The prompt's estimate, already weighted (quota units).
    pub input: u64,
    /// The output cap: the client's, or the model's default (at most the model's).
    pub cap: u64,
    /// Completions asked for (OpenAI's `n`).
    pub n: u64,
    /// Quota units per output token, in thousandths.
    pub output_weight: u64,
}

impl TokenAsk {
    /// The cap the provider is sent: the request's, at most the plan's `max_output_tokens`.
    pub fn cap_for(&self, plan: &Plan) -> u64 {
        plan.max_output_tokens.map_or(self.cap, |p| p.min(self.cap))
    }

    /// Quota units reserved with output capped at `cap`: the input estimate plus every
    /// completion's cap, weighted.
    pub fn reserve(&self, cap: u64) -> u64 {
        let output = u128::from(cap) * u128::from(self.n) * u128::from(self.output_weight);
        self.input
            .saturating_add(u64::try_from(output.div_ceil(1000)).unwrap_or(u64::MAX))
    }
}

/// What a request costs, as far as it is known before its plan is: its route (index into
/// `config.routes`) and, on an LLM route, its token reservation's terms. The default is a
/// plain request: 1 of every unit but tokens, and no allocation to say so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub route: Option<usize>,
    pub tokens: Option<TokenAsk>,
}

impl Price {
    pub fn is_plain(&self) -> bool {
        self.route.is_none() && self.tokens.is_none()
    }

    /// One cost per limit of `plan` (empty for a plain request, which
    /// [`crate::quota::cost_at`] reads as 1 each).
    pub fn costs(&self, config: &Config, plan: &Plan) -> Vec<u64> {
        if self.is_plain() && plan.limits.iter().all(|l| l.unit != Unit::Tokens) {
            return Vec::new();
        }
        let route = self.route.and_then(|i| config.routes.get(i));
        let tokens = self.tokens.map_or(0, |t| t.reserve(t.cap_for(plan)));
        plan.limits
            .iter()
            .map(|limit| match &limit.unit {
                Unit::Tokens => tokens,
                unit => route.and_then(|r| r.cost(unit)).unwrap_or(1),
            })
            .collect()
    }
}

impl Price {
    /// Whether what the request costs is settled from its response (an LLM request's tokens,
    /// a route that states its cost in response headers), not known when it is admitted.
    pub fn settled_later(&self, config: &Config) -> bool {
        self.tokens.is_some()
            || self
                .route
                .and_then(|r| config.routes.get(r))
                .is_some_and(|r| !r.cost_headers.is_empty())
    }
}

/// One attempt at deciding a request: the first, or (fleet mode) another after the request
/// waited for its consumer's lease to be refilled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempt {
    /// What the request costs.
    pub price: Price,
    /// Decide without taking anything (an LLM request's headers, before its body prices it:
    /// who is calling, their standing, and the limits a request takes from without its
    /// body). Local mode only; nothing is counted or remembered.
    pub dry_run: bool,
    /// The request's headers went upstream already (after a dry run): they cannot change.
    pub headers_forwarded: bool,
    /// The time in milliseconds (refill claims, lease sizing).
    pub now_ms: i64,
    /// Set when the request already waited for a refill, since then (ms).
    pub waiting_since_ms: Option<i64>,
    /// The refill this request waited for failed, so: a store error.
    pub failed: Option<String>,
    /// The request's payment was settled and credited: the response header that says so
    /// (name, value). The request is decided as usual, its payment headers ignored.
    pub paid: Option<(&'static str, String)>,
    /// Fleet mode: the request's payment was claimed already (a replay of a settled one, or
    /// one being paid): it is decided as usual, its payment headers ignored.
    pub claimed: bool,
    /// Fleet mode: what the draw from the prepaid balance made for this request answered.
    pub drawn: Option<Drawn>,
    /// Fleet mode: the store has no claim under way for the request's payment (the root
    /// looked): the request is decided as local mode would decide it with none.
    pub looked: bool,
}

/// Fleet mode: a request that only limits prepaid credits stand in for refuse, to be paid by
/// one call to the store that draws `cost` from the consumer's balance and counts the request
/// in its other limits, all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrawAsk {
    /// The consumer's index in the configuration.
    pub consumer: usize,
    /// Credits to draw: the largest cost among the refusing limits credits stand in for.
    pub cost: u64,
    /// The refusal (one per limit of the plan): the limits credits do not stand in for are
    /// counted with the draw, by their cost.
    pub usages: Vec<Usage>,
}

impl DrawAsk {
    /// The limits counted with the draw (indices into the plan's limits): those credits do
    /// not stand in for.
    pub fn counted<'a>(&'a self, plan: &'a Plan) -> impl Iterator<Item = usize> + 'a {
        (0..self.usages.len()).filter(|i| !plan.credits.contains(i))
    }
}

/// What a draw answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drawn {
    pub ask: DrawAsk,
    pub drawn: bool,
    /// The balance after it.
    pub balance: u64,
    /// Each counted limit's count before it, in [`DrawAsk::counted`] order.
    pub used: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial<'c> {
    /// No configured credential source is present, and there is no anonymous plan.
    MissingCredential,
    /// A source is present but unusable (empty key, broken encoding).
    MalformedCredential(&'static str),
    /// No consumer owns the key.
    UnknownKey,
    /// No consumer of the configuration owns the key, and live entitlements have brought no
    /// snapshot yet: it may be a consumer of the snapshot (503, retry after `retry_after` s).
    EntitlementsUnavailable {
        retry_after: u64,
    },
    Suspended(Caller<'c>),
    Expired {
        caller: Caller<'c>,
        expired_at: i64,
    },
    /// `past_due` after its `grace_until` (or without one): the payment method needs attention.
    PaymentRequired {
        caller: Caller<'c>,
        grace_until: Option<i64>,
    },
    /// At least one limit is exhausted; `usages` has one entry per limit, violated ones marked.
    QuotaExceeded {
        caller: Caller<'c>,
        usages: Vec<Usage>,
    },
    /// Shared data failed (or, with `contended`, every CAS attempt lost its race): the
    /// request cannot be counted.
    StoreUnavailable {
        caller: Caller<'c>,
        contended: bool,
        reason: String,
    },
}

impl<'c> Denial<'c> {
    /// The metrics reason.
    pub fn reason(&self) -> Reason {
        match self {
            Denial::MissingCredential => Reason::MissingCredential,
            Denial::MalformedCredential(_) | Denial::UnknownKey => Reason::InvalidCredential,
            Denial::EntitlementsUnavailable { .. } => Reason::EntitlementsUnavailable,
            Denial::Suspended(_) => Reason::Suspended,
            Denial::Expired { .. } => Reason::Expired,
            Denial::PaymentRequired { .. } => Reason::PastDue,
            Denial::QuotaExceeded { .. } => Reason::Quota,
            Denial::StoreUnavailable { .. } => Reason::StoreError,
        }
    }

    /// The consumer, when the refusal concerns a known one.
    pub fn caller(&self) -> Option<Caller<'c>> {
        match self {
            Denial::MissingCredential
            | Denial::MalformedCredential(_)
            | Denial::UnknownKey
            | Denial::EntitlementsUnavailable { .. } => None,
            Denial::Suspended(caller)
            | Denial::Expired { caller, .. }
            | Denial::PaymentRequired { caller, .. }
            | Denial::QuotaExceeded { caller, .. }
            | Denial::StoreUnavailable { caller, .. } => Some(*caller),
        }
    }

    /// For logs: the reason and the consumer, never the key.
    pub fn describe(&self) -> String {
        match self {
            Denial::MalformedCredential(why) => format!("invalid_credential ({why})"),
            Denial::StoreUnavailable { caller, reason, .. } => {
                format!("store_error consumer={} ({reason})", caller.consumer.name())
            }
            other => match other.caller() {
                Some(c) => format!(
                    "{} consumer={} plan={}",
                    other.reason().name(),
                    c.consumer.name(),
                    c.plan.name
                ),
                None => other.reason().name().to_string(),
            },
        }
    }
}

/// What a priced request took on admission, for its settlement once the response is known
/// (see [`crate::settlement`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charged {
    /// The consumer's index in the configuration.
    pub consumer: usize,
    /// One per limit of its plan, with what the request took (`cost`) and in which window.
    pub usages: Vec<Usage>,
    /// The output cap the provider must be sent (LLM routes).
    pub output_cap: Option<u64>,
    /// Taken from the consumer's record in this Envoy (local mode, or fleet mode's
    /// `on_store_error: local`), not from a fleet lease: where the settlement goes.
    pub in_record: bool,
    /// Prepaid credits it was paid with instead of the limits they stand in for (those took
    /// nothing): its settlement goes to the balance.
    pub drawn: u64,
}
