//! Stage 1: the JSON model, as serde reads it (`deny_unknown_fields`, defaults, duplicate
//! members refused). [`super::compile`] turns it into the compiled [`super::Config`].

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::marker::PhantomData;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::entitlements::RawSettings;
use super::events::RawEvents;
use super::keys::DigestHasher;
use super::payments::RawPayments;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig<'a> {
    #[serde(default)]
    pub(super) credentials: Option<Vec<RawSource>>,
    pub(super) plans: UniqueMap<RawPlan>,
    #[serde(default, borrow)]
    pub(super) consumers: RawConsumers<'a>,
    #[serde(default)]
    pub(super) anonymous_plan: Option<String>,
    #[serde(default)]
    pub(super) mode: Mode,
    #[serde(default)]
    pub(super) on_store_error: OnStoreError,
    #[serde(default)]
    pub(super) usage_path: Option<String>,
    #[serde(default)]
    pub(super) cors_preflight: CorsPreflight,
    #[serde(default)]
    pub(super) consumer_header: Option<String>,
    #[serde(default)]
    pub(super) plan_header: Option<String>,
    #[serde(default)]
    pub(super) hide_credentials: bool,
    #[serde(default)]
    pub(super) calendar_utc_offset: Option<String>,
    #[serde(default = "yes")]
    pub(super) identity_headers: bool,
    #[serde(default = "yes")]
    pub(super) ratelimit_policy: bool,
    #[serde(default)]
    pub(super) billing_url: Option<String>,
    /// Usage events, threshold alerts and reminders (see [`crate::events`]).
    #[serde(default)]
    pub(super) events: Option<RawEvents>,
    /// Fleet mode: where counts are kept instead of this Envoy's shared data.
    #[serde(default)]
    pub(super) store: Option<RawStore>,
    #[serde(default)]
    pub(super) entitlements: Option<RawSettings>,
    /// What a request costs per Envoy route (by route name), and which routes are LLM APIs.
    #[serde(default)]
    pub(super) routes: UniqueMap<RawRoute>,
    /// LLM routes' body bound, models and weights.
    #[serde(default)]
    pub(super) llm: Option<RawLlm>,
    #[serde(default)]
    pub(super) payments: Option<RawPayments>,
}

/// `routes.<route name>`: the Envoy route's name (`xds.route_name`) keys it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    /// Units a request of this route takes, per unit name (`requests`, or a named unit).
    #[serde(default)]
    pub(super) cost: UniqueMap<u64>,
    /// Per unit: the upstream response header whose integer value settles the request's
    /// cost in that unit (removed before the client sees the response).
    #[serde(default)]
    pub(super) cost_headers: UniqueMap<String>,
    /// The LLM API this route serves: `openai-chat`, `openai-responses`,
    /// `anthropic-messages`.
    #[serde(default)]
    pub(super) llm: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLlm {
    #[serde(default)]
    pub(super) max_body_bytes: Option<u64>,
    #[serde(default)]
    pub(super) max_n: Option<u64>,
    #[serde(default)]
    pub(super) bytes_per_input_token: Option<u64>,
    pub(super) models: UniqueMap<RawModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    #[serde(default)]
    pub(super) max_output_tokens: Option<u64>,
    #[serde(default)]
    pub(super) weights: Option<RawWeights>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeights {
    #[serde(default)]
    pub(super) input: Option<f64>,
    #[serde(default)]
    pub(super) cached_input: Option<f64>,
    #[serde(default)]
    pub(super) output: Option<f64>,
}

/// `"store": {"rls": {...}}`: the only store kind so far.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) rls: RawRls,
}

/// A rate limit service (Envoy's RLS protocol, e.g. quotad) reached through an Envoy cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRls {
    pub(super) cluster: String,
    #[serde(default)]
    pub(super) domain: Option<String>,
    #[serde(default)]
    pub(super) timeout: Option<String>,
    #[serde(default)]
    pub(super) lease: Option<u64>,
}

pub(super) fn yes() -> bool {
    true
}

/// `enforce` refuses; `shadow` counts, adds headers and metrics, logs what it would refuse,
/// and refuses nothing.
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

/// What a request gets when shared data fails or CAS retries run out.
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// 503 problem+json.
    #[default]
    Deny,
    /// Forward uncounted.
    Allow,
    /// Fleet mode only: when the rate limit service fails, count in this Envoy's shared data
    /// against the plan's limits, as local mode does (each Envoy on its own until it is back).
    Local,
}

/// CORS preflights (`OPTIONS` with `Access-Control-Request-Method`) carry no credentials.
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CorsPreflight {
    /// Forward without a credential, uncounted.
    #[default]
    Pass,
    /// Treat like any other request.
    Authenticate,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum RawSource {
    Header(String),
    Authorization(String),
    Query(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    pub(super) limits: Vec<RawLimit>,
    #[serde(default)]
    pub(super) upgrade_url: Option<String>,
    /// This plan's alert thresholds, instead of `events.alerts` (see [`crate::events`]).
    #[serde(default)]
    pub(super) alerts: Option<Vec<u64>>,
    #[serde(default)]
    pub(super) max_output_tokens: Option<u64>,
    /// The limits prepaid credits stand in for, by name (see `payments`).
    #[serde(default)]
    pub(super) credits: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimit {
    pub(super) name: String,
    /// Exactly one of `requests`, `tokens` and `units` (with `unit`).
    #[serde(default)]
    pub(super) requests: Option<u64>,
    #[serde(default)]
    pub(super) tokens: Option<u64>,
    #[serde(default)]
    pub(super) units: Option<u64>,
    #[serde(default)]
    pub(super) unit: Option<String>,
    pub(super) window: String,
    #[serde(default)]
    pub(super) status: Option<u16>,
    /// `fleet` (the default) or `envoy`.
    #[serde(default)]
    pub(super) scope: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsumer<'a> {
    #[serde(borrow)]
    pub(super) plan: Text<'a>,
    /// A boxed slice: serde's `Vec` keeps room for 4 keys where most consumers have one.
    #[serde(default, borrow)]
    pub(super) keys: Box<[Text<'a>]>,
    #[serde(default)]
    pub(super) status: Option<RawStatus>,
    #[serde(default)]
    pub(super) expires_at: Option<String>,
    #[serde(default)]
    pub(super) grace_until: Option<String>,
    #[serde(default)]
    pub(super) billing_url: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawStatus {
    Active,
    Suspended,
    PastDue,
}

/// A string of the configuration borrowed from the document where it has no escape (a
/// million consumers' names, plans and keys are then no allocation each while the document is
/// compiled), owned where it has one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A JSON object kept in document order that refuses duplicate member names (serde's maps
/// would silently keep the last one, hiding a copy-paste mistake in a consumer list).
#[derive(Debug)]
pub struct UniqueMap<V, K = String>(pub Vec<(K, V)>);

impl<V, K> Default for UniqueMap<V, K> {
    fn default() -> Self {
        UniqueMap(Vec::new())
    }
}

/// Where a [`UniqueMap`]'s or a [`Chunked`] map's visitor puts the members.
trait Entries<K, V>: Default {
    fn push(&mut self, entry: (K, V));
    fn has(&self, name: &K) -> bool;
}

impl<K: PartialEq, V> Entries<K, V> for UniqueMap<V, K> {
    fn push(&mut self, entry: (K, V)) {
        self.0.push(entry);
    }
    fn has(&self, name: &K) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }
}

/// Members per chunk of a [`Chunked`] map.
const CHUNK: usize = 16_384;

/// A [`UniqueMap`] kept in chunks of [`CHUNK`] members: a million consumers grow it without
/// the copy (and the moment both copies exist) each doubling of one `Vec` costs; the filter's
/// memory never shrinks below its high-water mark, so that moment would stay.
#[derive(Debug)]
pub(super) struct Chunked<V, K>(Vec<Vec<(K, V)>>);

impl<V, K> Default for Chunked<V, K> {
    fn default() -> Self {
        Chunked(Vec::new())
    }
}

impl<V, K> Chunked<V, K> {
    pub(super) fn len(&self) -> usize {
        self.0.iter().map(Vec::len).sum()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &(K, V)> {
        self.0.iter().flatten()
    }

    /// The members in document order, each chunk freed once it has been gone through.
    pub(super) fn into_members(self) -> impl Iterator<Item = (K, V)> {
        self.0.into_iter().flatten()
    }
}

impl<K: PartialEq, V> Entries<K, V> for Chunked<V, K> {
    fn push(&mut self, entry: (K, V)) {
        match self.0.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(entry),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(entry);
                self.0.push(chunk);
            }
        }
    }
    fn has(&self, name: &K) -> bool {
        self.iter().any(|(n, _)| n == name)
    }
}

/// The members of a JSON object into `E`, refusing a name listed twice.
fn unique<'de, D, K, V, E>(deserializer: D) -> Result<E, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + std::hash::Hash + PartialEq + fmt::Display,
    V: Deserialize<'de>,
    E: Entries<K, V>,
{
    struct UniqueVisitor<K, V, E>(PhantomData<(K, V, E)>);
    impl<'de, K, V, E> Visitor<'de> for UniqueVisitor<K, V, E>
    where
        K: Deserialize<'de> + std::hash::Hash + PartialEq + fmt::Display,
        V: Deserialize<'de>,
        E: Entries<K, V>,
    {
        type Value = E;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            // Hashes of the names seen, not copies of them (100 000 consumers): a hash seen
            // before is confirmed against the names themselves.
            let state = RandomState::new();
            let mut seen: HashSet<u64, BuildHasherDefault<DigestHasher>> = HashSet::default();
            let mut entries = E::default();
            while let Some(name) = map.next_key::<K>()? {
                if !seen.insert(state.hash_one(&name)) && entries.has(&name) {
                    return Err(serde::de::Error::custom(format!(
                        "`{name}` is listed twice"
                    )));
                }
                entries.push((name, map.next_value()?));
            }
            Ok(entries)
        }
    }
    deserializer.deserialize_map(UniqueVisitor(PhantomData))
}

impl<'de, V, K> Deserialize<'de> for UniqueMap<V, K>
where
    K: Deserialize<'de> + std::hash::Hash + PartialEq + fmt::Display,
    V: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        unique(deserializer)
    }
}

impl<'de, V, K> Deserialize<'de> for Chunked<V, K>
where
    K: Deserialize<'de> + std::hash::Hash + PartialEq + fmt::Display,
    V: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        unique(deserializer)
    }
}

/// The consumers of a configuration or a snapshot, by name.
pub(super) type RawConsumers<'a> = Chunked<RawConsumer<'a>, Text<'a>>;
