//! The event documents: CloudEvents 1.0 in JSON, with ids that are the same on every resend
//! and on every Envoy that emits the same event.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::*;

/// An event ready to send: its id (kept across resends) and its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: String,
    pub json: String,
}

fn event_id(parts: &[&str]) -> String {
    let digest = to_hex(&sha256(parts.join("\n").as_bytes()));
    digest.get(..32).unwrap_or(&digest).to_string()
}

/// Where this VM's events come from: the instance (node id or configured name), the Envoy
/// process's incarnation and the VM's worker slot (both from shared data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub instance: String,
    pub incarnation: String,
    pub worker: u64,
}

impl Origin {
    fn source(&self) -> String {
        format!("tollgate/{}", self.instance)
    }
}

/// The counts of [`REASONS`], as a JSON object in that order (`{"quota": 0, ...}`).
struct Reasons<'a>(&'a [u64; 5]);

impl Serialize for Reasons<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(REASONS.len()))?;
        for (reason, count) in REASONS.iter().zip(self.0) {
            map.serialize_entry(reason.name(), count)?;
        }
        map.end()
    }
}

/// The CloudEvents 1.0 envelope around `data`.
#[derive(Serialize)]
struct Envelope<'a, D> {
    specversion: &'static str,
    id: &'a str,
    source: String,
    #[serde(rename = "type")]
    kind: &'a str,
    subject: &'a str,
    time: String,
    datacontenttype: &'static str,
    data: D,
}

#[derive(Serialize)]
struct UsageData<'a> {
    consumer: &'a str,
    plan: &'a str,
    interval_start: String,
    interval_end: String,
    requests: u64,
    admitted: u64,
    refused: Reasons<'a>,
    shadowed: Reasons<'a>,
}

/// One consumer's LLM tokens of one model in one interval: what a billing system prices.
#[derive(Serialize)]
struct TokensData<'a> {
    consumer: &'a str,
    plan: &'a str,
    model: &'a str,
    interval_start: String,
    interval_end: String,
    requests: u64,
    input_tokens: u64,
    cached_input_tokens: u64,
    output_tokens: u64,
    /// Quota units charged (weighted; reservations of unreported responses included).
    units: u64,
    /// Requests charged their reservation: their response reported no usage.
    unreported: u64,
}

#[derive(Serialize)]
struct ThresholdData<'a> {
    consumer: &'a str,
    plan: &'a str,
    limit: &'a str,
    threshold: u8,
    used: u64,
    requests: u64,
    window_start: String,
    reset: String,
}

#[derive(Serialize)]
struct PaymentData<'a> {
    consumer: &'a str,
    plan: &'a str,
    pack: &'a str,
    credits: u64,
    balance: u64,
    network: &'a str,
    asset: &'a str,
    amount: &'a str,
    pay_to: &'a str,
    payer: &'a str,
    transaction: &'a str,
}

/// A settled payment. Its id names the network and the transaction only: a retried
/// settlement, or another Envoy's copy, is the same event.
pub fn payment_event(config: &Config, origin: &Origin, p: &PaymentSettled) -> Pending {
    let (consumer, plan) = plan_name(config, p.consumer);
    let pack = config.payments.as_ref().and_then(|c| c.packs.get(p.pack));
    let offer = pack.map(|pack| &pack.offer);
    let id = event_id(&["payment", &p.network, &p.transaction]);
    let data = PaymentData {
        consumer,
        plan,
        pack: pack.map_or("", |pack| pack.name.as_str()),
        credits: p.credits,
        balance: p.balance,
        network: &p.network,
        asset: offer.map_or("", |o| o.asset.as_str()),
        amount: offer.map_or("", |o| o.amount.as_str()),
        pay_to: offer.map_or("", |o| o.pay_to.as_str()),
        payer: &p.payer,
        transaction: &p.transaction,
    };
    let json = envelope(&id, origin, PAYMENT_TYPE, consumer, p.at, data);
    Pending { id, json }
}

#[derive(Serialize)]
struct ReminderData<'a> {
    consumer: &'a str,
    plan: &'a str,
    expires_at: String,
    before_seconds: i64,
}

fn plan_name(config: &Config, consumer: usize) -> (&str, &str) {
    let Some(c) = config.consumers.get(consumer) else {
        return ("", "");
    };
    (c.name(), config.plan_of(c).map_or("", |p| p.name.as_str()))
}

/// The event's JSON: `data` in its CloudEvents envelope.
fn envelope(
    id: &str,
    origin: &Origin,
    kind: &str,
    subject: &str,
    time: i64,
    data: impl Serialize,
) -> String {
    let envelope = Envelope {
        specversion: "1.0",
        id,
        source: origin.source(),
        kind,
        subject,
        time: format_rfc3339(time),
        datacontenttype: "application/json",
        data,
    };
    // Strings, integers and a map with string keys: serialization cannot fail.
    serde_json::to_string(&envelope).unwrap_or_default()
}

/// The usage event of one consumer's closed interval. Its id names the instance, the Envoy
/// process, the worker, the consumer and the interval: a resend is the same event.
pub fn usage_event(config: &Config, origin: &Origin, closed: &Closed) -> Pending {
    let (consumer, plan) = plan_name(config, closed.consumer);
    let id = event_id(&[
        "usage",
        &origin.instance,
        &origin.incarnation,
        &origin.worker.to_string(),
        consumer,
        &closed.start.to_string(),
    ]);
    let c = &closed.counts;
    let data = UsageData {
        consumer,
        plan,
        interval_start: format_rfc3339(closed.start),
        interval_end: format_rfc3339(closed.end),
        requests: c.total(),
        admitted: c.admitted,
        refused: Reasons(&c.refused),
        shadowed: Reasons(&c.shadowed),
    };
    let json = envelope(&id, origin, USAGE_TYPE, consumer, closed.end, data);
    Pending { id, json }
}

/// The token events of one consumer's closed interval, one per model (its pricing entry in
/// `llm.models`). Ids as the usage event's, with the model: a resend is the same event.
pub fn token_events(config: &Config, origin: &Origin, closed: &Closed) -> Vec<Pending> {
    let (consumer, plan) = plan_name(config, closed.consumer);
    closed
        .tokens
        .iter()
        .map(|(model, t)| {
            let model = config
                .llm
                .as_ref()
                .and_then(|l| l.models.get(*model))
                .map_or("", |m| m.name.as_str());
            let id = event_id(&[
                "tokens",
                &origin.instance,
                &origin.incarnation,
                &origin.worker.to_string(),
                consumer,
                &closed.start.to_string(),
                model,
            ]);
            let data = TokensData {
                consumer,
                plan,
                model,
                interval_start: format_rfc3339(closed.start),
                interval_end: format_rfc3339(closed.end),
                requests: t.requests,
                input_tokens: t.input,
                cached_input_tokens: t.cached_input,
                output_tokens: t.output,
                units: t.units,
                unreported: t.unreported,
            };
            let json = envelope(&id, origin, TOKENS_TYPE, consumer, closed.end, data);
            Pending { id, json }
        })
        .collect()
}

/// The alert for a threshold crossed. Its id names the instance, consumer, limit, window and
/// threshold (not the worker: one per Envoy, whichever worker counted the request).
pub fn threshold_event(config: &Config, origin: &Origin, x: &Crossing) -> Pending {
    let (consumer, plan) = plan_name(config, x.consumer);
    let limit = config
        .consumers
        .get(x.consumer)
        .and_then(|c| config.plan_of(c))
        .and_then(|p| p.limits.get(x.limit))
        .map_or("", |l| l.name.as_str());
    // Fleet mode: one id for the whole fleet (no node id), so that a sink deduplicates the
    // copies an `on_store_error: local` period may add (docs/fleet.md).
    let instance = if config.store.is_some() {
        ""
    } else {
        origin.instance.as_str()
    };
    let id = event_id(&[
        "threshold",
        instance,
        consumer,
        limit,
        &x.window_start.to_string(),
        &x.threshold.to_string(),
    ]);
    let data = ThresholdData {
        consumer,
        plan,
        limit,
        threshold: x.threshold,
        used: x.used,
        requests: x.requests,
        window_start: format_rfc3339(x.window_start),
        reset: format_rfc3339(x.window_end),
    };
    let json = envelope(&id, origin, THRESHOLD_TYPE, consumer, x.at, data);
    Pending { id, json }
}

/// A subscription reminder. Its id names only the consumer, its `expires_at` and the lead
/// time, so that a sink can deduplicate the copies several Envoys send.
pub fn reminder_event(config: &Config, origin: &Origin, r: &Reminder, now: i64) -> Pending {
    let (consumer, plan) = plan_name(config, r.consumer);
    let id = event_id(&[
        "reminder",
        consumer,
        &r.expires_at.to_string(),
        &r.before.to_string(),
    ]);
    let data = ReminderData {
        consumer,
        plan,
        expires_at: format_rfc3339(r.expires_at),
        before_seconds: r.before,
    };
    let json = envelope(&id, origin, REMINDER_TYPE, consumer, now, data);
    Pending { id, json }
}
