//! Usage events, threshold alerts and subscription reminders (the pure part; the host glue is
//! `host/events.rs`). Everything here runs natively in unit tests.
//!
//! - [`Tally`]: what a VM counts per consumer and interval on the request path: a few array
//!   increments, no host call, no allocation once a consumer has been seen in a slot.
//! - [`crossings`]: which alert thresholds a counted request reached. The count is decided by
//!   the CAS of the consumer's record, so each count value of a window is written by exactly
//!   one request of one worker: the request whose count *equals* a threshold's request number
//!   is the only one that crosses it — once per (consumer, limit, window, threshold) per Envoy,
//!   with no extra bookkeeping in the record.
//! - [`Reminders`]: when each consumer's `expires_at` reminder is due.
//! - [`Outbox`]: the bounded buffer of unsent events, batches, retries with backoff, drops.
//! - [`handover`]: a stopping VM's unsent events handed to the VMs that go on, through shared
//!   data (a configuration push must not lose them).
//! - The event documents themselves (CloudEvents 1.0, JSON) and their deterministic ids:
//!   `events/cloudevents.rs`. The `events` configuration block is `config/events.rs`.

use crate::config::Config;
use crate::decision::Reason;
use crate::metrics::Metric;
use crate::quota::Usage;
use crate::sha256::{sha256, to_hex};
use crate::store::{read_modify_write, CountError, Rewrite, Store, StoreError};
use crate::time::format_rfc3339;

/// `Content-Type` of a batch (CloudEvents JSON batch format).
pub const CONTENT_TYPE: &str = "application/cloudevents-batch+json";
pub const USAGE_TYPE: &str = "io.tollgate.usage";
pub const TOKENS_TYPE: &str = "io.tollgate.tokens";
pub const THRESHOLD_TYPE: &str = "io.tollgate.quota.threshold";
pub const REMINDER_TYPE: &str = "io.tollgate.subscription.reminder";
pub const PAYMENT_TYPE: &str = "io.tollgate.payment.settled";

/// A payment settled and credited (see [`crate::payments`]): a `payment.settled` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentSettled {
    pub consumer: usize,
    /// The pack's index in `payments.packs`.
    pub pack: usize,
    pub credits: u64,
    /// The balance after it was credited.
    pub balance: u64,
    pub network: String,
    pub transaction: String,
    pub payer: String,
    pub at: i64,
}

/// Longest wait between two attempts while the sink fails, in seconds.
pub const MAX_BACKOFF: i64 = 30;

/// The refusal reasons a usage event counts per consumer (those that concern a known consumer).
pub const REASONS: [Reason; 5] = Reason::OF_CONSUMERS;

mod cloudevents;
pub mod handover;

pub use cloudevents::*;

fn reason_slot(reason: Reason) -> Option<usize> {
    REASONS.iter().position(|r| *r == reason)
}

/// One consumer's requests in one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Forwarded upstream (counted, on an unlimited plan, or uncounted with on_store_error allow).
    pub admitted: u64,
    /// Refused, by [`REASONS`].
    pub refused: [u64; 5],
    /// Shadow mode: forwarded, but enforcing would have refused it, by [`REASONS`].
    pub shadowed: [u64; 5],
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.admitted + self.refused.iter().sum::<u64>() + self.shadowed.iter().sum::<u64>()
    }
}

/// One consumer's LLM tokens of one model (its pricing entry) in one interval, as settled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// LLM requests settled.
    pub requests: u64,
    /// Tokens the responses reported (uncached input, cached input, output).
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
    /// Quota units charged for them (weighted), reservations of unreported ones included.
    pub units: u64,
    /// Requests charged their reservation because their response reported no usage.
    pub unreported: u64,
}

/// Slots of the tally: interval `k` counts into slot `k % SLOTS`, so a timer that runs late by
/// up to `SLOTS - 1` intervals still closes every interval exactly.
const SLOTS: usize = 4;

#[derive(Debug, Default)]
struct Slot {
    /// The interval (index: start / interval length) this slot counts.
    interval: i64,
    /// Consumer id → position in `dense` (a sparse set: valid when `dense` agrees).
    sparse: Vec<u32>,
    dense: Vec<(u32, Counts)>,
    /// (consumer, model index in `llm.models`) → tokens settled.
    tokens: std::collections::HashMap<(u32, u32), TokenCounts>,
}

impl Slot {
    fn counts(&mut self, consumer: usize) -> Option<&mut Counts> {
        let id = u32::try_from(consumer).ok()?;
        let pos = *self.sparse.get(consumer)?;
        let found = self
            .dense
            .get(pos as usize)
            .is_some_and(|(owner, _)| *owner == id);
        if !found {
            let pos = u32::try_from(self.dense.len()).ok()?;
            *self.sparse.get_mut(consumer)? = pos;
            self.dense.push((id, Counts::default()));
        }
        let pos = *self.sparse.get(consumer)?;
        self.dense.get_mut(pos as usize).map(|(_, c)| c)
    }
}

/// A closed interval of one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub consumer: usize,
    /// Interval start and end, Unix seconds.
    pub start: i64,
    pub end: i64,
    pub counts: Counts,
    /// LLM tokens by model (index in `llm.models`), in model order.
    pub tokens: Vec<(usize, TokenCounts)>,
}

/// What a VM counts for usage events (see the module documentation).
#[derive(Debug)]
pub struct Tally {
    interval: i64,
    slots: [Slot; SLOTS],
}

impl Tally {
    pub fn new(consumers: usize, interval: i64) -> Tally {
        let slot = || Slot {
            interval: i64::MIN,
            sparse: vec![0; consumers],
            dense: Vec::new(),
            tokens: std::collections::HashMap::new(),
        };
        Tally {
            interval: interval.max(1),
            slots: [slot(), slot(), slot(), slot()],
        }
    }

    /// Counts one request of `consumer` at `now` from the verdict's events.
    pub fn record(&mut self, consumer: usize, now: i64, metrics: impl Iterator<Item = Metric>) {
        let k = now.div_euclid(self.interval);
        let index = usize::try_from(k.rem_euclid(SLOTS as i64)).unwrap_or(0);
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if slot.interval != k && slot.dense.is_empty() {
            slot.interval = k;
        }
        // A slot still holding an older interval means the timer stalled for SLOTS intervals:
        // the request is reported with that older interval rather than lost.
        let Some(counts) = slot.counts(consumer) else {
            return;
        };
        for metric in metrics {
            match metric {
                Metric::Allowed => counts.admitted += 1,
                Metric::Refused(r) => {
                    if let Some(c) = reason_slot(r).and_then(|i| counts.refused.get_mut(i)) {
                        *c += 1;
                    }
                }
                Metric::Shadowed(r) => {
                    if let Some(c) = reason_slot(r).and_then(|i| counts.shadowed.get_mut(i)) {
                        *c += 1;
                    }
                }
                _ => {}
            }
        }
    }

    /// Counts an LLM request's settled tokens for `consumer` at `now`: `tokens` reported (none:
    /// its reservation, `units`, was charged), `units` charged. `model` is the pricing entry's
    /// index in `llm.models`, so models per consumer are bounded by the configuration.
    pub fn record_tokens(
        &mut self,
        consumer: usize,
        model: usize,
        now: i64,
        tokens: Option<crate::llm::Tokens>,
        units: u64,
    ) {
        let k = now.div_euclid(self.interval);
        let index = usize::try_from(k.rem_euclid(SLOTS as i64)).unwrap_or(0);
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if slot.interval != k && slot.dense.is_empty() {
            slot.interval = k;
        }
        // The consumer's interval is reported even if it had no request of its own in it.
        if slot.counts(consumer).is_none() {
            return;
        }
        let (Ok(id), Ok(model)) = (u32::try_from(consumer), u32::try_from(model)) else {
            return;
        };
        let counts = slot.tokens.entry((id, model)).or_default();
        counts.requests += 1;
        counts.units = counts.units.saturating_add(units);
        match tokens {
            Some(t) => {
                counts.input = counts.input.saturating_add(t.input);
                counts.cached_input = counts.cached_input.saturating_add(t.cached_input);
                counts.output = counts.output.saturating_add(t.output);
            }
            None => counts.unreported += 1,
        }
    }

    /// Closes every interval that ended at or before `now` (all of them with `everything`).
    pub fn close(&mut self, now: i64, everything: bool) -> Vec<Closed> {
        let current = now.div_euclid(self.interval);
        let mut out = Vec::new();
        for slot in &mut self.slots {
            if slot.dense.is_empty() || (!everything && slot.interval >= current) {
                continue;
            }
            let start = slot.interval.saturating_mul(self.interval);
            let mut tokens: Vec<((u32, u32), TokenCounts)> = slot.tokens.drain().collect();
            tokens.sort_unstable_by_key(|(key, _)| *key);
            for (consumer, counts) in slot.dense.drain(..) {
                // Sorted by consumer: its entries are one run, found by two binary searches.
                let from = tokens.partition_point(|((c, _), _)| *c < consumer);
                let to = tokens.partition_point(|((c, _), _)| *c <= consumer);
                let own: Vec<(usize, TokenCounts)> = tokens
                    .get(from..to)
                    .unwrap_or_default()
                    .iter()
                    .map(|((_, m), t)| (*m as usize, *t))
                    .collect();
                out.push(Closed {
                    consumer: consumer as usize,
                    start,
                    end: start.saturating_add(self.interval),
                    counts,
                    tokens: own,
                });
            }
        }
        out
    }
}

/// A threshold a counted request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crossing {
    pub consumer: usize,
    /// Index of the limit in its plan.
    pub limit: usize,
    pub threshold: u8,
    pub used: u64,
    pub requests: u64,
    pub window_start: i64,
    pub window_end: i64,
    /// When the request was counted.
    pub at: i64,
}

/// The request number at which `threshold` percent of `requests` is reached.
pub fn threshold_count(requests: u64, threshold: u8) -> u64 {
    let product = u128::from(requests) * u128::from(threshold);
    u64::try_from(product.div_ceil(100))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The thresholds an admitted request's counts reached: those whose unit number is among the
/// units this request took (each count value of a window belongs to one request: for a plain
/// request, the threshold's request number *is* its count).
pub fn crossings(
    thresholds: &[u8],
    consumer: usize,
    usages: &[Usage],
    at: i64,
    out: &mut Vec<Crossing>,
) {
    for (limit, usage) in usages.iter().enumerate() {
        for threshold in thresholds {
            let at_count = threshold_count(usage.requests, *threshold);
            let before = usage.used.saturating_sub(usage.cost);
            if usage.cost > 0 && before < at_count && at_count <= usage.used {
                out.push(Crossing {
                    consumer,
                    limit,
                    threshold: *threshold,
                    used: usage.used,
                    requests: usage.requests,
                    window_start: usage.bounds.start,
                    window_end: usage.bounds.end,
                    at,
                });
            }
        }
    }
}

/// A reminder due: `before` seconds ahead of the consumer's `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reminder {
    pub due: i64,
    pub consumer: usize,
    pub expires_at: i64,
    pub before: i64,
}

/// The reminders of a configuration, by due time, and how far the timer has got.
#[derive(Debug, Default)]
pub struct Reminders {
    /// In no particular order: the timer scans them (a compare per reminder, once per tick)
    /// rather than the .wasm carrying a sort routine.
    queue: Vec<Reminder>,
}

impl Reminders {
    /// Every reminder still to come at `now`. Of the reminders already due when the
    /// configuration arrives (a consumer added 3 days before expiring, with a 7-day
    /// reminder), only the nearest one is kept: one reminder, not a burst of stale ones.
    pub fn new(config: &Config, lead_times: &[i64], now: i64) -> Reminders {
        let mut all: Vec<Reminder> = Vec::new();
        for consumer in &config.consumers {
            let Some(expires_at) = consumer.expires_at.filter(|at| *at > now) else {
                continue;
            };
            // `lead_times` is descending: the last one already due is the nearest.
            let mut due_now: Option<Reminder> = None;
            for before in lead_times {
                let reminder = Reminder {
                    due: expires_at.saturating_sub(*before),
                    consumer: consumer.id,
                    expires_at,
                    before: *before,
                };
                if reminder.due <= now {
                    due_now = Some(reminder);
                } else {
                    all.push(reminder);
                }
            }
            all.extend(due_now);
        }
        Reminders { queue: all }
    }

    /// The reminders due at `now` that are not past their expiry.
    pub fn due(&mut self, now: i64) -> Vec<Reminder> {
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(r) = self.queue.get(i).copied() {
            if r.due <= now {
                self.queue.swap_remove(i);
                if r.expires_at > now {
                    out.push(r);
                }
            } else {
                i += 1;
            }
        }
        out
    }

    /// Reminders still to come.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The shared-data key through which one VM of an Envoy claims a consumer's reminders.
pub fn reminder_key(consumer: &str) -> String {
    format!("{}events:reminded:{consumer}", crate::config::STORE_PREFIX)
}

/// The line a claimed reminder adds to its consumer's key.
pub fn reminder_mark(r: &Reminder) -> String {
    format!("{} {}\n", r.expires_at, r.before)
}

/// Attempts of a claim's read-modify-write before giving up.
const CLAIM_ATTEMPTS: u32 = 16;

/// Claims `mark` in an existing key with a CAS write: `true` for exactly one caller, whichever
/// worker it runs in; `false` if it was claimed already.
pub fn claim(store: &impl Store, key: &str, mark: &str) -> Result<bool, StoreError> {
    read_modify_write(store, key, CLAIM_ATTEMPTS, |value, _| {
        let claimed = value
            .split(|c| *c == b'\n')
            .any(|line| line == mark.trim_end().as_bytes());
        if claimed {
            return Ok(Rewrite::Keep(false));
        }
        let mut next = value;
        next.extend_from_slice(mark.as_bytes());
        Ok(Rewrite::Write(next, true))
    })
    .map_err(|e| claim_error(key, e))
}

/// A claim's error, naming its key.
fn claim_error(key: &str, error: CountError) -> StoreError {
    match error {
        CountError::Store(e) => e,
        CountError::Contended => {
            StoreError(format!("{key}: contended for {CLAIM_ATTEMPTS} attempts"))
        }
    }
}

/// The shared-data key holding this Envoy process's incarnation and the next worker slot.
pub fn workers_key() -> String {
    format!("{}events:workers", crate::config::STORE_PREFIX)
}

/// Takes the next worker slot from the (existing) workers key: `(incarnation, slot)`.
pub fn take_worker_slot(store: &impl Store) -> Result<(String, u64), StoreError> {
    let key = workers_key();
    read_modify_write(store, &key, CLAIM_ATTEMPTS, |value, _| {
        let text = String::from_utf8_lossy(&value);
        let (incarnation, next) = text
            .split_once(' ')
            .and_then(|(i, n)| Some((i.to_string(), n.trim().parse::<u64>().ok()?)))
            .ok_or_else(|| {
                CountError::Store(StoreError(format!("{key} holds no worker counter")))
            })?;
        let written = format!("{incarnation} {}", next.saturating_add(1));
        Ok(Rewrite::Write(written.into_bytes(), (incarnation, next)))
    })
    .map_err(|e| claim_error(&key, e))
}

/// Unsent events: bounded, sent in batches, one batch in flight at a time, retried with
/// exponential backoff while the sink fails. When full, new events are dropped (counted by
/// the caller): what is already buffered — the oldest usage — is kept and sent first.
#[derive(Debug)]
pub struct Outbox {
    queue: Vec<Pending>,
    capacity: usize,
    /// Events at the front of `queue` in the batch in flight.
    in_flight: usize,
    failures: u32,
    retry_at: i64,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            queue: Vec::new(),
            capacity: capacity.max(1),
            in_flight: 0,
            failures: 0,
            retry_at: i64::MIN,
        }
    }

    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight > 0
    }

    /// Whether the next [`Outbox::push`] would be dropped.
    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.capacity
    }

    /// How many more events fit.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.queue.len())
    }

    /// Every buffered event, in order, and how many at the front are in the batch in flight;
    /// the outbox is left empty (a stopping VM hands them over).
    pub fn take_all(&mut self) -> (Vec<Pending>, usize) {
        let in_flight = self.in_flight.min(self.queue.len());
        self.in_flight = 0;
        (std::mem::take(&mut self.queue), in_flight)
    }

    /// Buffers an event; `false` if the buffer is full and it was dropped.
    pub fn push(&mut self, event: Pending) -> bool {
        if self.queue.len() >= self.capacity {
            return false;
        }
        self.queue.push(event);
        true
    }

    /// The next batch to send at `now` (a JSON array of at most `max` events) and its size,
    /// if nothing is in flight, the backoff has passed and something is buffered.
    pub fn next_batch(&mut self, now: i64, max: usize) -> Option<(String, usize)> {
        if self.in_flight > 0 || now < self.retry_at || self.queue.is_empty() {
            return None;
        }
        let n = self.queue.len().min(max.max(1));
        let mut body = String::from("[");
        for (i, event) in self.queue.iter().take(n).enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&event.json);
        }
        body.push(']');
        self.in_flight = n;
        Some((body, n))
    }

    /// The batch in flight was accepted: its events are gone. Returns how many.
    pub fn delivered(&mut self) -> usize {
        let n = self.in_flight.min(self.queue.len());
        self.queue.drain(..n);
        self.in_flight = 0;
        self.failures = 0;
        self.retry_at = i64::MIN;
        n
    }

    /// The batch in flight failed (error status, timeout, no connection): its events stay,
    /// first in line, and the next attempt waits 1, 2, 4 … up to [`MAX_BACKOFF`] seconds.
    pub fn failed(&mut self, now: i64) -> i64 {
        self.in_flight = 0;
        self.failures = self.failures.saturating_add(1);
        let wait = 1_i64
            .checked_shl(self.failures.saturating_sub(1).min(10))
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF);
        self.retry_at = now.saturating_add(wait);
        wait
    }

    /// The ids buffered, in order (tests and logs).
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.queue.iter().map(|p| p.id.as_str())
    }
}

#[cfg(test)]
mod tests;
