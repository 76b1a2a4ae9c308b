//! The compiled configuration the request path reads, and its look-ups.

use crate::credentials::Source;

use super::entitlements::Settings;
use super::events::EventsConfig;
use super::keys::Keys;
use super::payments::Payments;
use super::plan::{Consumer, Consumers, Plan};
use super::raw::{CorsPreflight, Mode, OnStoreError};
use super::routes::{Llm, Routes};

/// Prefix of every shared-data key tollgate writes.
pub const STORE_PREFIX: &str = "tollgate:v1:";

/// The validated configuration the request path reads.
#[derive(Debug)]
pub struct Config {
    pub credentials: Vec<Source>,
    pub plans: Vec<Plan>,
    pub consumers: Consumers,
    /// Index into `consumers` of the anonymous consumer, with `anonymous_plan`.
    pub anonymous: Option<usize>,
    /// The `WWW-Authenticate` challenge sent with every 401.
    pub challenge: String,
    pub mode: Mode,
    pub on_store_error: OnStoreError,
    /// Path (without query) of the usage endpoint, if enabled.
    pub usage_path: Option<String>,
    pub cors_preflight: CorsPreflight,
    /// Request headers that tell the upstream who called (lowercase).
    pub consumer_header: String,
    pub plan_header: String,
    /// Remove the credential before the request goes upstream.
    pub hide_credentials: bool,
    /// Seconds east of UTC for day/week/month windows.
    pub utc_offset: i64,
    /// Set the consumer and plan headers on forwarded requests (and remove client copies).
    pub identity_headers: bool,
    /// Send `RateLimit-Policy` with `RateLimit`.
    pub ratelimit_policy: bool,
    /// The billing page for consumers without one of their own (`https` only).
    pub billing_url: Option<String>,
    /// Usage events, threshold alerts and reminders, when configured.
    pub events: Option<EventsConfig>,
    /// Fleet mode (`store.rls`): counts live in a rate limit service, taken in leases. `None`:
    /// this Envoy's shared data, as always.
    pub store: Option<Rls>,
    /// Where live consumers are pulled from (`entitlements`), if anywhere.
    pub entitlements: Option<Settings>,
    /// Set by the host while live entitlements have brought this VM no snapshot and
    /// `entitlements.until_first_snapshot` is `unavailable`: a key none of these consumers
    /// holds is answered 503 with this `Retry-After` (seconds) instead of 401. Never set by a
    /// load.
    pub awaiting_snapshot: Option<u64>,
    /// What requests cost per Envoy route (empty: 1 request each, and the route is never
    /// looked up).
    pub routes: Routes,
    /// LLM routes' bounds, models and weights.
    pub llm: Option<Llm>,
    /// Prepaid credits sold through x402 (`payments`), if offered.
    pub payments: Option<Payments>,
    pub(super) keys: Keys,
}

/// Default `store.rls.domain`.
pub const DEFAULT_RLS_DOMAIN: &str = "tollgate";
/// Default `store.rls.timeout`, in milliseconds.
pub const DEFAULT_RLS_TIMEOUT_MS: u64 = 100;
/// Longest `store.rls.timeout`, in milliseconds: requests wait at most this (plus a margin).
pub const MAX_RLS_TIMEOUT_MS: u64 = 10_000;
/// Default and largest `store.rls.lease`. Leases are sized by the consumer's rate (a second or
/// two of its traffic), so the default only caps hot consumers; it must be large enough for a
/// hot consumer not to outrun its refills (the measurements are in docs/).
pub const DEFAULT_LEASE: u64 = 1000;
pub const MAX_LEASE: u64 = 100_000;

/// The rate limit service of fleet mode, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rls {
    /// The Envoy cluster (HTTP/2) that reaches the service.
    pub cluster: String,
    /// The RLS domain of every request.
    pub domain: String,
    /// The gRPC call's timeout, in milliseconds.
    pub timeout_ms: u64,
    /// The most requests taken from the service in one call (1: one call per request).
    pub lease: u64,
}

impl Config {
    /// The consumer that owns a presented API key.
    pub fn consumer_for_key(&self, key: &[u8]) -> Option<&Consumer> {
        self.keys
            .lookup(key)
            .and_then(|index| self.consumers.get(index))
    }

    pub fn plan_of(&self, consumer: &Consumer) -> Option<&Plan> {
        self.plans.get(consumer.plan)
    }

    /// The billing page of a consumer: its own, or the configuration's.
    pub fn billing_url_of<'a>(&'a self, consumer: &'a Consumer) -> Option<&'a str> {
        consumer
            .billing_url
            .as_deref()
            .or(self.billing_url.as_deref())
    }

    /// Number of configured keys (for the start-up summary).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}
