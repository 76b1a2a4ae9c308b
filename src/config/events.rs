//! The `events` section: usage events, threshold alerts and reminders sent to an HTTP sink
//! (the feature is `crate::events`); its JSON model and its validation (every error names
//! its field).

use serde::Deserialize;

use crate::duration::parse_seconds;
use crate::names::{is_header_value, valid_cluster, CLUSTER_RULE};

use super::errors::ConfigError;
use super::plan::Plan;
use super::secret::{authorization, Env, Secret};

/// Default interval of usage events, in seconds.
pub const DEFAULT_INTERVAL: i64 = 10;
/// Longest interval accepted (one hour).
pub const MAX_INTERVAL: i64 = 3600;
pub const DEFAULT_BUFFER: usize = 10_000;
pub const MAX_BUFFER: usize = 1_000_000;
/// Events per batch (a batch of 100 usage events is ~45 KB of JSON).
pub const DEFAULT_BATCH: usize = 100;
/// How long the sink has to answer a batch before it counts as failed (and is resent).
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;

/// The `events` block as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvents {
    pub cluster: String,
    /// `http://host[:port]/path` (or `https://`): the `:authority` and `:path` of the calls;
    /// the connection itself (TLS, address) is the cluster's.
    pub url: String,
    #[serde(default)]
    pub authorization: Option<String>,
    /// The name of the Wasm VM's environment variable holding the `Authorization` value.
    #[serde(default)]
    pub authorization_env: Option<String>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default = "default_buffer")]
    pub buffer: u64,
    #[serde(default)]
    pub alerts: Option<Vec<u64>>,
    #[serde(default)]
    pub reminders: Vec<String>,
}

fn default_buffer() -> u64 {
    DEFAULT_BUFFER as u64
}

/// The validated `events` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// The Envoy cluster the batches go to.
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub authorization: Option<Secret>,
    /// Seconds per usage interval (epoch-aligned).
    pub interval: i64,
    pub timeout_ms: u64,
    /// Most events a VM keeps unsent.
    pub buffer: usize,
    /// Most events per batch.
    pub batch: usize,
    /// Alert thresholds (percent, ascending) per plan, in [`Config::plans`] order.
    pub alerts: Vec<Vec<u8>>,
    /// Reminder lead times in seconds, descending.
    pub reminders: Vec<i64>,
}

fn thresholds(field: &str, raw: &[u64]) -> Result<Vec<u8>, ConfigError> {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for (i, t) in raw.iter().enumerate() {
        let Some(t) = u8::try_from(*t)
            .ok()
            .filter(|t| (1..=100).contains(t) && !out.contains(t))
        else {
            return Err(ConfigError(format!(
                "{field}[{i}]: {t} is not a percentage of a limit (1 to 100, each once)"
            )));
        };
        // Kept ascending (a handful of values: no sort routine in the .wasm for this).
        let at = out.iter().position(|x| *x > t).unwrap_or(out.len());
        out.insert(at, t);
    }
    Ok(out)
}

/// `reminders`: lead times in seconds, each once, kept descending.
fn reminders(raw: &[String]) -> Result<Vec<i64>, ConfigError> {
    let mut reminders: Vec<i64> = Vec::new();
    for (i, text) in raw.iter().enumerate() {
        match parse_seconds(text) {
            Some(s) if (1..=366 * 86_400).contains(&s) && !reminders.contains(&s) => {
                // Kept descending.
                let at = reminders
                    .iter()
                    .position(|x| *x < s)
                    .unwrap_or(reminders.len());
                reminders.insert(at, s);
            }
            _ => {
                return Err(ConfigError(format!(
                    "events.reminders[{i}]: `{text}` must be a duration up to 366d (e.g. \"7d\"), each once"
                )))
            }
        }
    }
    Ok(reminders)
}

/// `http://host[:port]/path` (or `https://`) → its `:authority` and `:path`.
pub(super) fn split_url(url: &str) -> Option<(&str, &str)> {
    url.strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .filter(|rest| is_header_value(rest) && !rest.contains(' '))
        .map(|rest| match rest.find('/') {
            Some(at) => (
                rest.get(..at).unwrap_or(rest),
                rest.get(at..).unwrap_or("/"),
            ),
            None => (rest, "/"),
        })
        .filter(|(host, _)| !host.is_empty())
}

/// Validates the `events` block against the compiled plans.
/// `plan_alerts` are the plans' own `alerts` (`plans.<name>.alerts`), in plan order;
/// `authorization_env` is read with `env`.
pub fn compile(
    raw: Option<RawEvents>,
    plans: &[Plan],
    plan_alerts: Vec<Option<Vec<u64>>>,
    env: Env,
) -> Result<Option<EventsConfig>, ConfigError> {
    let Some(raw) = raw else {
        if let Some((plan, _)) = plans.iter().zip(&plan_alerts).find(|(_, a)| a.is_some()) {
            return Err(ConfigError(format!(
                "plans.{}.alerts: alerts are sent to the events sink: configure `events` too",
                plan.name
            )));
        }
        return Ok(None);
    };
    let err = |field: &str, why: String| Err(ConfigError(format!("events.{field}: {why}")));
    if !valid_cluster(&raw.cluster) {
        return err("cluster", CLUSTER_RULE.into());
    }
    let Some((authority, path)) = split_url(&raw.url) else {
        return err(
            "url",
            format!(
                "`{}` must be an http(s) URL like \"http://sink.example.com/events\"",
                raw.url
            ),
        );
    };
    let (authority, path) = (authority.to_string(), path.to_string());
    let authorization = authorization("events", raw.authorization, raw.authorization_env, env)?;
    let interval = match &raw.interval {
        None => DEFAULT_INTERVAL,
        Some(text) => match parse_seconds(text) {
            Some(s) if (1..=MAX_INTERVAL).contains(&s) => s,
            _ => {
                return err(
                    "interval",
                    format!("`{text}` must be a duration from 1s to 1h (e.g. \"10s\", \"1m\")"),
                )
            }
        },
    };
    let buffer = usize::try_from(raw.buffer).unwrap_or(usize::MAX);
    if !(1..=MAX_BUFFER).contains(&buffer) {
        return err(
            "buffer",
            format!("{buffer}: must be from 1 to {MAX_BUFFER} events"),
        );
    }
    let global = thresholds("events.alerts", raw.alerts.as_deref().unwrap_or_default())?;
    let mut alerts: Vec<Vec<u8>> = Vec::with_capacity(plans.len());
    for (plan, own) in plans.iter().zip(plan_alerts) {
        alerts.push(match own {
            Some(own) => thresholds(&format!("plans.{}.alerts", plan.name), &own)?,
            None => global.clone(),
        });
    }
    let reminders = reminders(&raw.reminders)?;
    Ok(Some(EventsConfig {
        cluster: raw.cluster,
        path,
        authority,
        authorization,
        interval,
        timeout_ms: DEFAULT_TIMEOUT_MS,
        buffer,
        batch: DEFAULT_BATCH,
        alerts,
        reminders,
    }))
}
