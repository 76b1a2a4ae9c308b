//! The plugin configuration: its JSON model (stage 1, serde) and its validation into the
//! compiled [`Config`] the hot path reads (stage 2: plans resolved, windows parsed, keys hashed
//! into a map). Any error is one line that names the field, and the whole configuration is
//! refused: nothing is half-applied.
//!
//! - this file: the compiled configuration (what the request path reads) and its look-ups;
//! - [`raw`]: the JSON model serde reads (stage 1);
//! - [`compile`]: validation into the compiled form (stage 2), names, URLs, offsets;
//! - [`keys`]: the key → consumer map (plaintext and `sha256:` keys);
//! - [`errors`]: error messages with field paths, in a user's words, never showing a key;
//! - [`summary`]: the one-line description logged at start and printed by `tollgate check`.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::marker::PhantomData;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::sha256::{from_hex, sha256, Digest};
use crate::time::parse_rfc3339;
use crate::window::Window;

mod compile;
mod errors;
mod keys;
mod raw;
mod snapshot;
mod summary;
#[cfg(test)]
mod tests;

use compile::*;
use errors::*;
use keys::*;
use raw::*;
use snapshot::build;

pub use compile::{compile_https_url, parse_utc_offset, valid_name, MAX_URL_LEN};
pub use keys::DigestHasher;
pub use raw::{CorsPreflight, Mode, OnStoreError, UniqueMap};
pub use summary::{capitalized, format_utc_offset};

/// Name of the consumer that counts requests without a credential (with `anonymous_plan`).
pub const ANONYMOUS: &str = "anonymous";
/// Most limits one plan may have (each one is a counter in the consumer's shared-data record).
pub const MAX_LIMITS_PER_PLAN: usize = 16;
/// Longest plan, consumer or limit name.
pub const MAX_NAME_LEN: usize = 64;
/// Largest `requests` of a limit: a structured-field integer has at most 15 digits.
pub const MAX_REQUESTS: u64 = 999_999_999_999_999;
/// Prefix of every shared-data key tollgate writes.
pub const STORE_PREFIX: &str = "tollgate:v1:";

/// Where an API key may come from, tried in configuration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A request header (name stored lowercase).
    Header(String),
    /// `Authorization: <scheme> <key>`; the scheme is stored lowercase and matched without case.
    Authorization(String),
    /// A URL query parameter (percent-decoded).
    Query(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub name: String,
    pub requests: u64,
    pub window: Window,
    /// The window as configured (`day`, `15m`), for messages.
    pub window_text: String,
    /// HTTP status sent when this limit is exhausted.
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub limits: Vec<Limit>,
    /// Where a caller whose quota is spent can upgrade or buy more (`https` only).
    pub upgrade_url: Option<String>,
}

/// A consumer's configured `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Suspended,
    /// A payment failed: admitted until `grace_until` (Unix seconds), refused from then on
    /// (at once without one).
    PastDue {
        grace_until: Option<i64>,
    },
}

/// Where a consumer stands at an instant: its status and `expires_at` taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Active,
    /// Past due and within its grace period: admitted and counted as usual.
    Grace {
        until: i64,
    },
    Suspended,
    Expired {
        at: i64,
    },
    /// Past due after its grace period (or without one): refused, 402 payment required.
    PaymentRequired {
        grace_until: Option<i64>,
    },
}

impl Standing {
    /// The standing as the usage endpoint names it: `active`, `past_due`, `suspended`, `expired`.
    pub fn name(self) -> &'static str {
        match self {
            Standing::Active => "active",
            Standing::Grace { .. } | Standing::PaymentRequired { .. } => "past_due",
            Standing::Suspended => "suspended",
            Standing::Expired { .. } => "expired",
        }
    }

    /// Whether requests of a consumer standing so are counted (and possibly admitted).
    pub fn admitted(self) -> bool {
        matches!(self, Standing::Active | Standing::Grace { .. })
    }

    /// The end of the grace period of a past-due consumer.
    pub fn grace_until(self) -> Option<i64> {
        match self {
            Standing::Grace { until } => Some(until),
            Standing::PaymentRequired { grace_until } => grace_until,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// Index into [`Config::consumers`].
    pub id: usize,
    pub name: String,
    /// Index into [`Config::plans`].
    pub plan: usize,
    pub status: Status,
    /// Unix seconds after which the subscription has expired.
    pub expires_at: Option<i64>,
    /// This consumer's billing page (`https` only); [`Config::billing_url`] otherwise.
    pub billing_url: Option<Box<str>>,
    /// The consumer's shared-data key (by consumer name, never by API key).
    pub store_key: String,
}

impl Consumer {
    /// Where the consumer stands at `now`: suspended first, then expired (a subscription that
    /// ended is not one whose payment is late), then past due.
    pub fn standing(&self, now: i64) -> Standing {
        if self.status == Status::Suspended {
            return Standing::Suspended;
        }
        if let Some(at) = self.expires_at.filter(|at| now >= *at) {
            return Standing::Expired { at };
        }
        match self.status {
            Status::PastDue {
                grace_until: Some(until),
            } if now < until => Standing::Grace { until },
            Status::PastDue { grace_until } => Standing::PaymentRequired { grace_until },
            Status::Active | Status::Suspended => Standing::Active,
        }
    }
}

/// The validated configuration the request path reads.
#[derive(Debug)]
pub struct Config {
    pub credentials: Vec<Source>,
    pub plans: Vec<Plan>,
    pub consumers: Vec<Consumer>,
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
    pub events: Option<crate::events::EventsConfig>,
    /// Fleet mode (`store.rls`): counts live in a rate limit service, taken in leases. `None`:
    /// this Envoy's shared data, as always.
    pub store: Option<Rls>,
    /// Where live consumers are pulled from (`entitlements`), if anywhere.
    pub entitlements: Option<crate::entitlements::Settings>,
    keys: Keys,
}

/// Default `store.rls.domain`.
pub const DEFAULT_RLS_DOMAIN: &str = "tollgate";
/// Default `store.rls.timeout`, in milliseconds.
pub const DEFAULT_RLS_TIMEOUT_MS: u64 = 100;
/// Longest `store.rls.timeout`, in milliseconds: requests wait at most this (plus a margin).
pub const MAX_RLS_TIMEOUT_MS: u64 = 10_000;
/// Default and largest `store.rls.lease`. Leases are sized by the consumer's rate (a second or
/// two of its traffic), so the default only caps hot consumers: at 100, one with 30 000 req/s
/// per Envoy outran its refills (`make bench`: 0.37× local mode's req/s; 1 000: 0.84–0.93×).
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

/// A configuration error: one line, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// Parses and validates the plugin configuration bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        build(bytes, None)
    }
}

/// Stage 1 alone (also for [`Config::with_snapshot`], which replaces the consumers).
fn parse_raw(bytes: &[u8]) -> Result<RawConfig, ConfigError> {
    match bytes.iter().find(|c| !c.is_ascii_whitespace()) {
        None => {
            return Err(ConfigError(
                "the configuration is empty: it must be a JSON object ({\"plans\": ...})".into(),
            ))
        }
        Some(c) if *c != b'{' => {
            return Err(ConfigError(
                "the configuration must be a JSON object ({\"plans\": ...})".into(),
            ))
        }
        Some(_) => {}
    }
    // serde_path_to_error records where in the document a type error happened, so that
    // every error names its field (`plans.free.limits[0].requests`), as semantic ones do.
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let raw: RawConfig = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| json_error(bytes, Some(e.path()), e.inner()))?;
    deserializer
        .end()
        .map_err(|e| json_error(bytes, None, &e))?;
    Ok(raw)
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
