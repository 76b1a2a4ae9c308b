//! `tollgate explain`: what a request with a given key meets, decided by the filter's own
//! code (`admission::decide` and `response::refusal`) against a fresh, in-memory count.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::exit::REFUSED;
use crate::locate::read;
use tollgate::admission::decide;
use tollgate::config::{Config, Consumer, Limit, Mode, Standing};
use tollgate::counters::create_counters;
use tollgate::credentials::Source;
use tollgate::credentials::{Credential, Presented};
use tollgate::decision::{Decision, Denial};
use tollgate::memo::Memo;
use tollgate::quota::Usage;
use tollgate::response::refusal;
use tollgate::store::MemoryStore;
use tollgate::time::format_rfc3339;

use crate::environment::Environment;

/// Explains `key` (`None`: a request without a credential) at `now` against every
/// configuration in `file`.
pub fn run(file: &Path, key: Option<&[u8]>, now: i64) -> ExitCode {
    let name = file.display().to_string();
    let found = match read(file) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(REFUSED);
        }
    };
    let mut refused = false;
    for config in found {
        let heading = config.heading(&name);
        // What a key meets does not depend on secrets: variables not set here stand in.
        match config.compile(&Environment::default()) {
            Ok(compiled) => print!("{}", explain(&heading, &compiled, key, now)),
            Err(e) => {
                refused = true;
                eprintln!("{heading}: configuration refused: {e}");
            }
        }
    }
    if refused {
        ExitCode::from(REFUSED)
    } else {
        ExitCode::SUCCESS
    }
}

/// Who the request is from: consumer, plan, standing and limits (or why nobody).
fn caller_lines(decision: &Decision, keyed: bool, now: i64) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    let caller = match decision {
        Decision::Allow { caller, .. }
        | Decision::Wait { caller, .. }
        | Decision::Draw { caller, .. } => Some(*caller),
        Decision::Deny(denial) => denial.caller(),
    };
    match caller {
        Some(caller) => {
            let who = if keyed {
                caller.consumer.name().to_string()
            } else {
                "anonymous (no credential; anonymous_plan)".to_string()
            };
            lines.push(("consumer", who));
            lines.push(("plan", caller.plan.name.clone()));
            let consumer = caller.consumer;
            lines.push(("standing", standing(consumer, now)));
            let usages: &[Usage] = match decision {
                Decision::Allow { usages, .. } => usages,
                _ => &[],
            };
            lines.extend(limit_lines(&caller.plan.limits, usages, now));
        }
        None => {
            let who = match keyed {
                true => "none: no consumer has this key",
                false => "none: the request has no credential and there is no anonymous_plan",
            };
            lines.push(("consumer", who.to_string()));
        }
    }
    lines
}

/// Where the consumer stands at `now`, in words.
fn standing(consumer: &Consumer, now: i64) -> String {
    let until = |at: Option<i64>| match at {
        Some(at) => format!(" until {} (expires_at)", format_rfc3339(at)),
        None => String::new(),
    };
    match consumer.standing(now) {
        Standing::Suspended => "suspended".to_string(),
        Standing::Expired { at } => {
            format!("expired at {} (expires_at)", format_rfc3339(at))
        }
        Standing::Active => format!("active{}", until(consumer.expires_at)),
        Standing::Grace { until } => format!(
            "past_due: a payment failed; admitted and counted until {} (grace_until), \
             in {}, then refused with 402 payment required",
            format_rfc3339(until),
            duration(until - now)
        ),
        Standing::PaymentRequired {
            grace_until: Some(at),
        } => format!(
            "past_due: a payment failed; the grace period ended at {} (grace_until)",
            format_rfc3339(at)
        ),
        Standing::PaymentRequired { grace_until: None } => {
            "past_due: a payment failed; no grace period (grace_until)".to_string()
        }
    }
}

/// One line per limit (`limits` labels the first): its size, window and status.
fn limit_lines(limits: &[Limit], usages: &[Usage], now: i64) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    if limits.is_empty() {
        lines.push((
            "limits",
            "none: the plan is unlimited, requests are not counted".to_string(),
        ));
    }
    for (i, limit) in limits.iter().enumerate() {
        let mut text = format!(
            "{}: {} per {}",
            limit.name,
            plural(limit.requests, "request"),
            limit.window_text
        );
        if limit.per_envoy {
            text.push_str(" in each Envoy (scope: envoy)");
        }
        if let Some(usage) = usages.get(i) {
            let _ = write!(
                text,
                ", window {} to {} (resets in {})",
                format_rfc3339(usage.bounds.start),
                format_rfc3339(usage.bounds.end),
                duration(usage.bounds.end - now)
            );
        }
        let _ = write!(text, "; when spent: {}", limit.status);
        lines.push((if i == 0 { "limits" } else { "" }, text));
    }
    lines
}

/// What the filter does with the request, in words.
fn verdict(config: &Config, decision: &Decision, now: i64) -> String {
    match decision {
        Decision::Allow { usages, .. } if usages.is_empty() => "forwarded, not counted".to_string(),
        Decision::Allow { .. } => {
            "counted; forwarded while every limit has requests left in its window, \
             then refused with the spent limit's status until that window ends"
                .to_string()
        }
        Decision::Deny(denial) => refused(config, denial, now),
        // Fleet mode against a fresh count: the lease is empty, the store would be asked.
        Decision::Wait { .. } => {
            "counted by the fleet store (store.rls); forwarded while every limit has requests \
             left in its window across the fleet, then refused with the spent limit's status \
             until that window ends"
                .to_string()
        }
        Decision::Draw { .. } => {
            "paid from the consumer's prepaid credits in the fleet store (its limits that \
             credits stand in for are spent), or refused with 402 when they are spent too"
                .to_string()
        }
    }
}

/// The explanation, one `label  text` line per fact.
fn explain(heading: &str, config: &Config, key: Option<&[u8]>, now: i64) -> String {
    let mut out = format!("{heading}, at {}:\n", format_rfc3339(now));
    let mut line = |label: &str, text: &str| {
        let _ = writeln!(out, "  {label:<9} {text}");
    };
    let credential = match key {
        Some(key) => Credential::Key(Presented {
            key: key.to_vec(),
            source: 0,
        }),
        None => Credential::Missing,
    };
    // The filter's decision against an empty count: the records a configured filter creates,
    // in memory.
    let store = MemoryStore::new();
    // Fleet mode: empty leases (the decision then says the store would be asked).
    let created = create_counters(config, &store);
    let decision = match created {
        Ok(_) => decide(config, credential, now, &store, &Memo::default()),
        Err(e) => {
            line("error", &format!("cannot prepare the count: {}", e.0));
            return out;
        }
    };
    for (label, text) in caller_lines(&decision, key.is_some(), now) {
        line(label, &text);
    }
    let verdict = verdict(config, &decision, now);
    match (&decision, config.mode) {
        (Decision::Deny(_), Mode::Shadow) => line(
            "verdict",
            &format!("forwarded (shadow mode); enforced, it would be {verdict}"),
        ),
        _ => line("verdict", &verdict),
    }
    if let Some(remedy) = remedy(config, &decision, now) {
        line("remedy", &remedy);
    }
    if matches!(
        decision,
        Decision::Deny(Denial::UnknownKey | Denial::MissingCredential)
    ) {
        line(
            "send",
            &format!("the key as {}", sources(&config.credentials)),
        );
        if key.is_some_and(|k| k.starts_with(b"sha256:")) {
            line(
                "hint",
                "this is a hashed key: pass the key itself (`tollgate hash-key` makes the hash)",
            );
        } else if key.is_some() {
            line(
                "hint",
                "keys match byte for byte (case counts); hashed entries match the key whose \
                 SHA-256 they are",
            );
        }
    }
    if let (Decision::Wait { .. }, Some(rls)) = (&decision, &config.store) {
        line(
            "counts",
            &format!(
                "kept by the rate limit service behind cluster {} (domain {}), shared by the fleet",
                rls.cluster, rls.domain
            ),
        );
    }
    if matches!(&decision, Decision::Allow { usages, .. } if !usages.is_empty()) {
        let counts = match &config.usage_path {
            Some(path) => format!(
                "kept by each Envoy process, not in this file: GET {path} with the key shows them"
            ),
            None => "kept by each Envoy process, not in this file: each response's RateLimit \
                     header shows what is left"
                .to_string(),
        };
        line("counts", &counts);
    }
    out
}

/// `refused with 402 Subscription suspended (urn:...): detail`, from the filter's own reply.
fn refused(config: &Config, denial: &Denial, now: i64) -> String {
    let reply = refusal(config, denial, now, false);
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap_or_default();
    let field = |name: &str| body.get(name).and_then(|v| v.as_str()).unwrap_or("");
    let when = match denial {
        Denial::QuotaExceeded { .. } | Denial::StoreUnavailable { .. } => "",
        _ => ", before counting (nothing is counted)",
    };
    format!(
        "refused with {} {} ({}){when}: {}",
        reply.status,
        field("title"),
        field("type"),
        field("detail")
    )
}

/// The remedy link a refusal carries (`Link: <url>; rel="..."`), or, for a counted consumer,
/// the one its refusals would carry.
fn remedy(config: &Config, decision: &Decision, now: i64) -> Option<String> {
    match decision {
        Decision::Deny(denial) => refusal(config, denial, now, false)
            .headers
            .into_iter()
            .find(|(name, _)| *name == "link")
            .map(|(_, value)| format!("Link: {value}")),
        Decision::Allow { caller, .. }
        | Decision::Wait { caller, .. }
        | Decision::Draw { caller, .. } => {
            let mut out = Vec::new();
            if let Some(url) = caller.plan.upgrade_url.as_deref() {
                out.push(format!("{url} when a limit is spent (upgrade_url)"));
            }
            if let (Standing::Grace { .. }, Some(url)) = (
                caller.consumer.standing(now),
                config.billing_url_of(caller.consumer),
            ) {
                out.push(format!("{url} once refused for payment (billing_url)"));
            }
            (!out.is_empty()).then(|| out.join("; "))
        }
    }
}

/// `header x-api-key, Authorization: Bearer <key> or query ?api_key=<key>`.
fn sources(sources: &[Source]) -> String {
    let items: Vec<String> = sources
        .iter()
        .map(|s| match s {
            Source::Header(name) => format!("header {name}"),
            Source::Authorization(_) => {
                let described = s.describe();
                let scheme = described
                    .strip_prefix("authorization ")
                    .unwrap_or(&described);
                format!("Authorization: {scheme} <key>")
            }
            Source::Query(name) => format!("query ?{name}=<key>"),
        })
        .collect();
    match items.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `5d 10h 13m`, `42s`.
fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m"), (sec, "s")]
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .take(3)
        .filter(|(n, _)| *n != 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if parts.is_empty() {
        "0s".to_string()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(3600), "1h");
        assert_eq!(duration(468_776), "5d 10h 12m");
        assert_eq!(duration(86_401), "1d");
    }
}
