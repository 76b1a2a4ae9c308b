//! The event documents: CloudEvents 1.0 in JSON, with ids that are the same on every resend
//! and on every Envoy that emits the same event.

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

/// A JSON string literal.
fn js(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

fn reasons_object(counts: &[u64; 5]) -> String {
    let mut out = String::from("{");
    for (reason, count) in REASONS.iter().zip(counts) {
        if out.len() > 1 {
            out.push(',');
        }
        out.push('"');
        out.push_str(reason.name());
        out.push_str("\":");
        out.push_str(&count.to_string());
    }
    out.push('}');
    out
}

fn plan_name(config: &Config, consumer: usize) -> (&str, &str) {
    let Some(c) = config.consumers.get(consumer) else {
        return ("", "");
    };
    (
        c.name.as_str(),
        config.plan_of(c).map_or("", |p| p.name.as_str()),
    )
}

/// The CloudEvents envelope around `data` (a JSON object).
fn envelope(id: &str, origin: &Origin, kind: &str, subject: &str, time: i64, data: &str) -> String {
    format!(
        "{{\"specversion\":\"1.0\",\"id\":\"{id}\",\"source\":{},\"type\":\"{kind}\",\"subject\":{},\
         \"time\":\"{}\",\"datacontenttype\":\"application/json\",\"data\":{data}}}",
        js(&origin.source()),
        js(subject),
        format_rfc3339(time),
    )
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
    let data = format!(
        "{{\"consumer\":{},\"plan\":{},\"interval_start\":\"{}\",\"interval_end\":\"{}\",\
         \"requests\":{},\"admitted\":{},\"refused\":{},\"shadowed\":{}}}",
        js(consumer),
        js(plan),
        format_rfc3339(closed.start),
        format_rfc3339(closed.end),
        c.total(),
        c.admitted,
        reasons_object(&c.refused),
        reasons_object(&c.shadowed),
    );
    let json = envelope(&id, origin, USAGE_TYPE, consumer, closed.end, &data);
    Pending { id, json }
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
    let id = event_id(&[
        "threshold",
        &origin.instance,
        consumer,
        limit,
        &x.window_start.to_string(),
        &x.threshold.to_string(),
    ]);
    let data = format!(
        "{{\"consumer\":{},\"plan\":{},\"limit\":{},\"threshold\":{},\"used\":{},\
         \"requests\":{},\"window_start\":\"{}\",\"reset\":\"{}\"}}",
        js(consumer),
        js(plan),
        js(limit),
        x.threshold,
        x.used,
        x.requests,
        format_rfc3339(x.window_start),
        format_rfc3339(x.window_end),
    );
    let json = envelope(&id, origin, THRESHOLD_TYPE, consumer, x.at, &data);
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
    let data = format!(
        "{{\"consumer\":{},\"plan\":{},\"expires_at\":\"{}\",\"before_seconds\":{}}}",
        js(consumer),
        js(plan),
        format_rfc3339(r.expires_at),
        r.before,
    );
    let json = envelope(&id, origin, REMINDER_TYPE, consumer, now, &data);
    Pending { id, json }
}
