//! The one-line description of a configuration: logged by the filter when configured and
//! printed by `tollgate check`. Never a key.

use crate::credentials::Source;

use super::model::Config;
use super::raw::{Mode, OnStoreError};

impl Config {
    /// One line describing the configuration: plans, consumers, credential sources and
    /// options, never a key. The filter logs it when configured (`configured: ...`) and
    /// `tollgate check` prints it.
    pub fn summary(&self) -> String {
        let plans: Vec<String> = self
            .plans
            .iter()
            .map(|p| match p.limits.len() {
                0 => format!("{} (unlimited)", p.name),
                n => format!("{} ({})", p.name, count(n, "limit")),
            })
            .collect();
        let sources: Vec<String> = self.credentials.iter().map(Source::describe).collect();
        let consumers = self.consumers.len() - usize::from(self.anonymous.is_some());
        format!(
            "{} [{}], {}, {}, credentials [{}], anonymous_plan {}, mode {}, \
             on_store_error {}, usage_path {}, calendar_utc_offset {}",
            count(self.plans.len(), "plan"),
            plans.join(", "),
            count(consumers, "consumer"),
            count(self.key_count(), "key"),
            sources.join(", "),
            match self.anonymous.and_then(|i| self.consumers.get(i)) {
                Some(c) => self.plan_of(c).map_or("?", |p| p.name.as_str()),
                None => "off",
            },
            match self.mode {
                Mode::Enforce => "enforce",
                Mode::Shadow => "shadow",
            },
            match self.on_store_error {
                OnStoreError::Deny => "deny",
                OnStoreError::Allow => "allow",
                OnStoreError::Local => "local",
            },
            self.usage_path.as_deref().unwrap_or("off"),
            format_utc_offset(self.utc_offset),
        ) + match (self.identity_headers, self.ratelimit_policy) {
            (true, true) => "",
            (false, true) => ", identity_headers off",
            (true, false) => ", ratelimit_policy off",
            (false, false) => ", identity_headers off, ratelimit_policy off",
        } + &match &self.store {
            None => String::new(),
            Some(rls) => format!(
                ", store rls (cluster {}, domain {}, timeout {}ms, lease {})",
                rls.cluster, rls.domain, rls.timeout_ms, rls.lease
            ),
        } + &self.entitlements.as_ref().map_or(String::new(), |e| {
            format!(
                ", entitlements from cluster {} path {} every {} ms",
                e.cluster, e.path, e.refresh_ms
            )
        }) + &self.payments.as_ref().map_or(String::new(), |p| {
            format!(
                ", payments ({}, facilitator cluster {}{})",
                count(p.packs.len(), "pack"),
                p.cluster,
                p.http_payment.as_ref().map_or(String::new(), |h| format!(
                    ", HTTP Payment realm {}{}",
                    h.realm,
                    if p.x402 { "" } else { " only" }
                ))
            )
        })
    }
}

/// `1 plan`, `2 plans`.
pub(super) fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// An offset in seconds east of UTC as configured: `Z`, `+05:30`, `-08:00`.
pub fn format_utc_offset(seconds: i64) -> String {
    if seconds == 0 {
        return "Z".to_string();
    }
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}
