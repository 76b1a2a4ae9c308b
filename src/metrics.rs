//! The metrics tollgate emits, as counters Envoy shows as `wasmcustom.<name>` (in Prometheus:
//! `envoy_wasmcustom_<name with _>`), summed over workers. Cardinality is bounded by the
//! configuration: global counters plus a fixed set per plan — never per consumer or key.
//!
//! Counters are numbered: the host defines them once per configuration in [`names`] order and
//! increments them by index, so the request path does no string work.

use crate::config::Plan;
use crate::decision::Reason;

/// Something worth counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Forwarded upstream after counting (or uncounted, on an unlimited plan).
    Allowed,
    Refused(Reason),
    /// Shadow mode: would have been refused, was forwarded.
    Shadowed(Reason),
    /// A CORS preflight passed without a credential.
    Preflight,
    /// The usage endpoint answered.
    Usage,
    /// Shared data failed.
    StoreFailed,
    /// CAS retries were exhausted.
    Contended,
    /// Shadow mode held back a log line (see [`crate::shadow_log`]).
    ShadowLogSuppressed,
    /// A priced request's reservation was replaced by what it cost (see
    /// [`crate::settlement`]).
    Settled,
    /// A response that should report its usage did not (a cut stream): the reservation
    /// stays the charge.
    Unreported,
    /// An upstream error without usage: the token reservation was given back.
    Released,
    /// The settlement could not be written (shared data failed): the reservation stays.
    SettleFailed,
    /// A store error's log line was held back (see [`crate::shadow_log`]).
    StoreLogSuppressed,
}

/// What to count for one request: at most four metric increments (a store error, its log line
/// held back, what became of the request, a shadow-mode log line held back), each with the
/// index of the plan it concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Increments([Option<(Metric, Option<usize>)>; 4]);

impl Increments {
    pub fn one(metric: Metric, plan: Option<usize>) -> Increments {
        Increments([Some((metric, plan)), None, None, None])
    }

    pub fn push(&mut self, metric: Metric, plan: Option<usize>) {
        if let Some(slot) = self.0.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some((metric, plan));
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Metric, Option<usize>)> + '_ {
        self.0.iter().flatten().copied()
    }
}

impl<const N: usize> PartialEq<[(Metric, Option<usize>); N]> for Increments {
    fn eq(&self, other: &[(Metric, Option<usize>); N]) -> bool {
        self.iter().eq(other.iter().copied())
    }
}

const GLOBAL_PREFIX: &str = "tollgate.";
const GLOBALS: usize = 1 + 2 * Reason::ALL.len() + 10;
const PLAN_REASONS: [Reason; 5] = Reason::OF_CONSUMERS;
const PER_PLAN: usize = 1 + 2 * PLAN_REASONS.len();

fn reason_index(reason: Reason) -> usize {
    Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0)
}

fn plan_reason_index(reason: Reason) -> Option<usize> {
    PLAN_REASONS.iter().position(|r| *r == reason)
}

/// Every counter name, in index order.
pub fn names(plans: &[Plan]) -> Vec<String> {
    let mut out = Vec::with_capacity(GLOBALS + PER_PLAN * plans.len());
    out.push(format!("{GLOBAL_PREFIX}requests.allowed"));
    for r in Reason::ALL {
        out.push(format!("{GLOBAL_PREFIX}requests.refused.{}", r.name()));
    }
    for r in Reason::ALL {
        out.push(format!("{GLOBAL_PREFIX}requests.shadowed.{}", r.name()));
    }
    out.push(format!("{GLOBAL_PREFIX}requests.cors_preflight"));
    out.push(format!("{GLOBAL_PREFIX}usage.served"));
    out.push(format!("{GLOBAL_PREFIX}errors.store"));
    out.push(format!("{GLOBAL_PREFIX}errors.cas_exhausted"));
    out.push(format!("{GLOBAL_PREFIX}logs.shadow_suppressed"));
    out.push(format!("{GLOBAL_PREFIX}settlements.settled"));
    out.push(format!("{GLOBAL_PREFIX}settlements.unreported"));
    out.push(format!("{GLOBAL_PREFIX}settlements.released"));
    out.push(format!("{GLOBAL_PREFIX}errors.settle"));
    out.push(format!("{GLOBAL_PREFIX}logs.store_error_suppressed"));
    for plan in plans {
        let p = format!("{GLOBAL_PREFIX}plan.{}.", plan.name);
        out.push(format!("{p}allowed"));
        for r in PLAN_REASONS {
            out.push(format!("{p}refused.{}", r.name()));
        }
        for r in PLAN_REASONS {
            out.push(format!("{p}shadowed.{}", r.name()));
        }
    }
    out
}

/// The counters a metric increments: its global one, and its plan's one if it has a plan.
pub fn indices(metric: Metric, plan: Option<usize>) -> [Option<usize>; 2] {
    let (global, per_plan) = match metric {
        Metric::Allowed => (0, Some(0)),
        Metric::Refused(r) => (1 + reason_index(r), plan_reason_index(r).map(|i| 1 + i)),
        Metric::Shadowed(r) => (
            1 + Reason::ALL.len() + reason_index(r),
            plan_reason_index(r).map(|i| 1 + PLAN_REASONS.len() + i),
        ),
        Metric::Preflight => (GLOBALS - 10, None),
        Metric::Usage => (GLOBALS - 9, None),
        Metric::StoreFailed => (GLOBALS - 8, None),
        Metric::Contended => (GLOBALS - 7, None),
        Metric::ShadowLogSuppressed => (GLOBALS - 6, None),
        Metric::Settled => (GLOBALS - 5, None),
        Metric::Unreported => (GLOBALS - 4, None),
        Metric::Released => (GLOBALS - 3, None),
        Metric::SettleFailed => (GLOBALS - 2, None),
        Metric::StoreLogSuppressed => (GLOBALS - 1, None),
    };
    let plan_counter = match (plan, per_plan) {
        (Some(plan), Some(offset)) => Some(GLOBALS + plan * PER_PLAN + offset),
        _ => None,
    };
    let plan_counter = match metric {
        Metric::Refused(r) | Metric::Shadowed(r) if !r.has_plan() => None,
        _ => plan_counter,
    };
    [Some(global), plan_counter]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans() -> Vec<Plan> {
        ["free", "pro"]
            .iter()
            .map(|n| Plan {
                name: n.to_string(),
                limits: vec![],
                upgrade_url: None,
                max_output_tokens: None,
                credits: Vec::new(),
            })
            .collect()
    }

    fn named(metric: Metric, plan: Option<usize>) -> Vec<String> {
        let names = names(&plans());
        indices(metric, plan)
            .iter()
            .flatten()
            .map(|i| names[*i].clone())
            .collect()
    }

    #[test]
    fn every_metric_maps_to_its_named_counters() {
        assert_eq!(
            named(Metric::Allowed, Some(1)),
            ["tollgate.requests.allowed", "tollgate.plan.pro.allowed"]
        );
        assert_eq!(
            named(Metric::Refused(Reason::Quota), Some(0)),
            [
                "tollgate.requests.refused.quota",
                "tollgate.plan.free.refused.quota"
            ]
        );
        assert_eq!(
            named(Metric::Shadowed(Reason::Expired), Some(1)),
            [
                "tollgate.requests.shadowed.expired",
                "tollgate.plan.pro.shadowed.expired"
            ]
        );
        assert_eq!(
            named(Metric::Refused(Reason::InvalidCredential), None),
            ["tollgate.requests.refused.invalid_credential"]
        );
        assert_eq!(
            named(Metric::Shadowed(Reason::MissingCredential), Some(0)),
            ["tollgate.requests.shadowed.missing_credential"]
        );
        assert_eq!(
            named(Metric::Preflight, None),
            ["tollgate.requests.cors_preflight"]
        );
        assert_eq!(named(Metric::Usage, Some(0)), ["tollgate.usage.served"]);
        assert_eq!(
            named(Metric::StoreFailed, Some(0)),
            ["tollgate.errors.store"]
        );
        assert_eq!(
            named(Metric::Contended, None),
            ["tollgate.errors.cas_exhausted"]
        );
        assert_eq!(
            named(Metric::Refused(Reason::PastDue), Some(1)),
            [
                "tollgate.requests.refused.past_due",
                "tollgate.plan.pro.refused.past_due"
            ]
        );
        assert_eq!(
            named(Metric::Shadowed(Reason::PastDue), Some(0)),
            [
                "tollgate.requests.shadowed.past_due",
                "tollgate.plan.free.shadowed.past_due"
            ]
        );
        assert_eq!(
            named(Metric::ShadowLogSuppressed, Some(0)),
            ["tollgate.logs.shadow_suppressed"]
        );
        assert_eq!(
            named(Metric::Settled, Some(0)),
            ["tollgate.settlements.settled"]
        );
        assert_eq!(
            named(Metric::Unreported, None),
            ["tollgate.settlements.unreported"]
        );
        assert_eq!(
            named(Metric::Released, None),
            ["tollgate.settlements.released"]
        );
        assert_eq!(
            named(Metric::SettleFailed, None),
            ["tollgate.errors.settle"]
        );
        assert_eq!(
            named(Metric::StoreLogSuppressed, Some(1)),
            ["tollgate.logs.store_error_suppressed"]
        );
        assert_eq!(
            named(Metric::Refused(Reason::StoreError), Some(1)),
            [
                "tollgate.requests.refused.store_error",
                "tollgate.plan.pro.refused.store_error"
            ]
        );
    }

    #[test]
    fn names_are_unique_and_bounded_by_plans() {
        let names = names(&plans());
        assert_eq!(names.len(), GLOBALS + 2 * PER_PLAN);
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }
}
