//! Plans, their limits, and consumers with their standing: the part of the compiled
//! configuration that the counting and every feature section read.

use crate::window::Window;

/// Name of the consumer that counts requests without a credential (with `anonymous_plan`).
pub const ANONYMOUS: &str = "anonymous";
/// Most limits one plan may have (each one is a counter in the consumer's shared-data record).
pub const MAX_LIMITS_PER_PLAN: usize = 16;
/// Largest `requests` of a limit: a structured-field integer has at most 15 digits.
pub const MAX_REQUESTS: u64 = 999_999_999_999_999;

/// What a limit counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Requests (`"requests": N`): every counted request takes 1, or its route's `cost`.
    Requests,
    /// LLM tokens (`"tokens": N`): reserved on admission on `llm` routes, settled from the
    /// response's usage; other routes take none.
    Tokens,
    /// Any other unit (`"units": N, "unit": "credits"`): a request takes 1, or its route's
    /// `cost`, settled from the upstream's cost header where the route names one.
    Named(Box<str>),
}

impl Unit {
    /// The unit as configured and as `RateLimit-Policy`'s `qu` and refusals name it.
    pub fn name(&self) -> &str {
        match self {
            Unit::Requests => "requests",
            Unit::Tokens => "tokens",
            Unit::Named(name) => name,
        }
    }

    /// Counts in this unit may go down after admission (settlement refunds), so a refusal
    /// is not known to last until the window ends.
    pub fn settled(&self) -> bool {
        !matches!(self, Unit::Requests)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub name: String,
    /// The limit's size, in its [`Unit`] (requests, for a request limit).
    pub requests: u64,
    pub unit: Unit,
    pub window: Window,
    /// The window as configured (`day`, `15m`), for messages.
    pub window_text: String,
    /// HTTP status sent when this limit is exhausted.
    pub status: u16,
    /// `scope: envoy`: in fleet mode, counted by each Envoy on its own in its shared data,
    /// never asked of the store (a burst limit beside fleet-wide quotas). Local mode counts
    /// every limit per Envoy anyway.
    pub per_envoy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub limits: Vec<Limit>,
    /// Where a caller whose quota is spent can upgrade or buy more (`https` only).
    pub upgrade_url: Option<String>,
    /// The largest output cap (`max_tokens` and kin) this plan's LLM requests may ask for.
    pub max_output_tokens: Option<u64>,
    /// The limits (indices into `limits`) that prepaid credits stand in for: a request they
    /// refuse is paid from the consumer's balance instead (`payments`). Empty: no credits.
    pub credits: Vec<usize>,
}

impl Plan {
    /// The unit prepaid credits count in (that of the limits they stand in for), if any.
    pub fn credits_unit(&self) -> Option<&Unit> {
        self.credits
            .first()
            .and_then(|i| self.limits.get(*i))
            .map(|l| &l.unit)
    }
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
    /// Index into [`Config::plans`].
    pub plan: usize,
    pub status: Status,
    /// Unix seconds after which the subscription has expired.
    pub expires_at: Option<i64>,
    /// This consumer's billing page (`https` only); [`Config::billing_url`] otherwise.
    pub billing_url: Option<Box<str>>,
    /// The consumer's shared-data key (by consumer name, never by API key), which also holds
    /// the name: `tollgate:v1:consumer:<name>` (`tollgate:v1:anonymous` for the anonymous
    /// consumer). One allocation per consumer instead of two (a million consumers).
    pub store_key: Box<str>,
}

/// The shared-data key of a consumer named `name`.
pub fn consumer_store_key(name: &str) -> Box<str> {
    format!("{CONSUMER_KEY_PREFIX}{name}").into_boxed_str()
}

/// What precedes a consumer's name in its shared-data key.
const CONSUMER_KEY_PREFIX: &str = "tollgate:v1:consumer:";

/// Consumers per chunk of [`Consumers`] (a power of two: an index splits with a shift and a
/// mask).
const CONSUMER_CHUNK: usize = 1 << 14;

/// The configuration's consumers, by index, in chunks of [`CONSUMER_CHUNK`]: compiled while the
/// parsed consumers are freed chunk by chunk, a new chunk takes the memory an old one gave
/// back, where one `Vec` of a million would be allocated beside all of them — and a VM's memory
/// never shrinks below that peak (docs/benchmarks.md, A million consumers).
#[derive(Debug, Default)]
pub struct Consumers(Vec<Vec<Consumer>>);

impl Consumers {
    pub fn get(&self, index: usize) -> Option<&Consumer> {
        self.0
            .get(index / CONSUMER_CHUNK)?
            .get(index % CONSUMER_CHUNK)
    }

    pub fn len(&self) -> usize {
        match self.0.last() {
            Some(last) => (self.0.len() - 1) * CONSUMER_CHUNK + last.len(),
            None => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Consumer> + Clone {
        self.0.iter().flatten()
    }

    pub fn push(&mut self, consumer: Consumer) {
        match self.0.last_mut() {
            Some(chunk) if chunk.len() < CONSUMER_CHUNK => chunk.push(consumer),
            _ => {
                let mut chunk = Vec::with_capacity(CONSUMER_CHUNK);
                chunk.push(consumer);
                self.0.push(chunk);
            }
        }
    }
}

impl From<Vec<Consumer>> for Consumers {
    fn from(all: Vec<Consumer>) -> Consumers {
        let mut consumers = Consumers::default();
        for consumer in all {
            consumers.push(consumer);
        }
        consumers
    }
}

#[cfg(test)]
impl std::ops::Index<usize> for Consumers {
    type Output = Consumer;
    #[allow(clippy::expect_used)] // tests only: a missing consumer is the test's failure
    fn index(&self, index: usize) -> &Consumer {
        self.get(index).expect("no consumer at this index")
    }
}

impl<'a> IntoIterator for &'a Consumers {
    type Item = &'a Consumer;
    type IntoIter = std::iter::Flatten<std::slice::Iter<'a, Vec<Consumer>>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().flatten()
    }
}

impl Consumer {
    /// The consumer's name, as configured. (Not inlined: it has forty callers.)
    #[inline(never)]
    pub fn name(&self) -> &str {
        self.store_key
            .strip_prefix(CONSUMER_KEY_PREFIX)
            .unwrap_or(ANONYMOUS)
    }

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
