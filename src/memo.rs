//! What one VM remembers between requests so that the request path does less: consumers whose
//! quota is spent (until the limit's window ends), and each plan's rendered `RateLimit-Policy`.
//!
//! One memo per configuration and VM (single-threaded, hence `RefCell`); a new configuration
//! starts with an empty one, so a raised quota or a changed plan applies at once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use crate::config::{Limit, Plan};
use crate::quota::Usage;
use crate::response::{rate_limit_policy, QuotaRefusal};
use crate::window::Window;

#[derive(Debug, Default)]
pub struct Memo {
    /// Consumer id → what is known of it since it was refused for quota.
    exhausted: RefCell<HashMap<usize, Spent, BuildHasherDefault<IdHasher>>>,
    /// Plan index → its policy, with the key of the month lengths it was rendered for.
    policies: RefCell<Vec<Option<Policy>>>,
}

/// A rendered `RateLimit-Policy` and the [`month_lengths`] key it is valid for.
type Policy = (u64, Rc<str>);

/// A consumer refused for quota: its usages, and its refusal rendered for them (dropped when a
/// violated limit's window ends, which changes what the refusal says).
#[derive(Debug)]
struct Spent {
    usages: Vec<Usage>,
    refusal: Option<Rc<QuotaRefusal>>,
}

impl Memo {
    /// The usages of a consumer known to be refused at `now`, brought up to date: limits whose
    /// window has ended since are shown fresh. `None` once no limit is exhausted any more.
    ///
    /// Why this is exact: only refusals that last are remembered — every violated limit spent
    /// and counting requests, whose counts only grow within a window (settled units can go
    /// down with refunds: see `admission::lasting`) — and a refused request writes nothing
    /// (see [`crate::quota`]), so until the spent limit's window ends every request of that
    /// consumer that takes from it would be refused anyway: a flood of refused requests needs
    /// no shared-data access at all.
    pub fn refused(
        &self,
        consumer: usize,
        limits: &[Limit],
        now: i64,
        utc_offset: i64,
    ) -> Option<Vec<Usage>> {
        let mut consumers = self.exhausted.try_borrow_mut().ok()?;
        if consumers.is_empty() {
            return None;
        }
        let spent = consumers.get_mut(&consumer)?;
        for (usage, limit) in spent.usages.iter_mut().zip(limits) {
            if now >= usage.bounds.end {
                // The refusal names the violated limits: it is stale once one of them resets.
                if usage.violated {
                    spent.refusal = None;
                }
                *usage = Usage {
                    used: 0,
                    requests: limit.requests,
                    bounds: limit.window.bounds(now, utc_offset),
                    violated: false,
                    cost: usage.cost,
                };
            }
        }
        if spent.usages.iter().any(|u| u.violated) {
            return Some(spent.usages.clone());
        }
        consumers.remove(&consumer);
        None
    }

    /// Remembers that a consumer was refused for quota with these usages.
    pub fn remember_refused(&self, consumer: usize, usages: &[Usage]) {
        if let Ok(mut consumers) = self.exhausted.try_borrow_mut() {
            let usages = usages.to_vec();
            consumers.insert(
                consumer,
                Spent {
                    usages,
                    refusal: None,
                },
            );
        }
    }

    /// The refusal of a consumer refused for quota: the one rendered for its current usages
    /// and this protocol, or a new one from `render`, remembered.
    pub fn quota_refusal(
        &self,
        consumer: usize,
        grpc: bool,
        render: impl FnOnce() -> QuotaRefusal,
    ) -> Rc<QuotaRefusal> {
        let Ok(mut consumers) = self.exhausted.try_borrow_mut() else {
            return Rc::new(render());
        };
        let Some(spent) = consumers.get_mut(&consumer) else {
            return Rc::new(render());
        };
        if let Some(refusal) = spent.refusal.as_ref().filter(|r| r.grpc() == grpc) {
            return Rc::clone(refusal);
        }
        let refusal = Rc::new(render());
        spent.refusal = Some(Rc::clone(&refusal));
        refusal
    }

    /// The plan's `RateLimit-Policy` for these usages, rendered once per VM — and, for plans
    /// with monthly limits, again only when a month of another length comes.
    pub fn policy(&self, plan_index: usize, plan: &Plan, usages: &[Usage]) -> Rc<str> {
        let key = month_lengths(plan, usages);
        let Ok(mut policies) = self.policies.try_borrow_mut() else {
            return rate_limit_policy(plan, usages).into();
        };
        if let Some(Some((cached, text))) = policies.get(plan_index) {
            if *cached == key {
                return Rc::clone(text);
            }
        }
        let text: Rc<str> = rate_limit_policy(plan, usages).into();
        if policies.len() <= plan_index {
            policies.resize(plan_index + 1, None);
        }
        if let Some(slot) = policies.get_mut(plan_index) {
            *slot = Some((key, Rc::clone(&text)));
        }
        text
    }
}

/// What a plan's policy depends on besides the configuration: the length of each monthly
/// limit's window (28 to 31 days), two bits per monthly limit (a plan has at most 16 limits).
fn month_lengths(plan: &Plan, usages: &[Usage]) -> u64 {
    plan.limits
        .iter()
        .zip(usages)
        .filter(|(limit, _)| limit.window == Window::Month)
        .fold(1, |key, (_, usage)| {
            let days = usage.bounds.seconds() / crate::time::DAY;
            (key << 2) | (days.clamp(28, 31) - 28).unsigned_abs()
        })
}

/// Hashes a consumer id (a small integer chosen by the configuration, never by a client):
/// SipHash's flood resistance buys nothing here.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::window::Bounds;

    fn usage(start: i64, end: i64) -> Usage {
        Usage {
            used: 1,
            requests: 5,
            bounds: Bounds { start, end },
            violated: false,
            cost: 1,
        }
    }

    #[test]
    fn a_policy_is_rendered_once_per_plan_and_month_length() {
        let config = Config::from_json(
            br#"{"plans": {
                  "fixed": {"limits": [{"name": "d", "requests": 5, "window": "day"}]},
                  "monthly": {"limits": [{"name": "m", "requests": 7, "window": "month"},
                                         {"name": "s", "requests": 9, "window": "1s"}]}}}"#,
        )
        .unwrap();
        let memo = Memo::default();
        let (fixed, monthly) = (&config.plans[0], &config.plans[1]);
        let day = [usage(0, 86_400)];
        let first = memo.policy(0, fixed, &day);
        assert_eq!(&*first, "\"d\";q=5;w=86400");
        assert!(Rc::ptr_eq(&first, &memo.policy(0, fixed, &day)), "cached");
        let november = 1_793_491_200; // 2026-11-01T00:00:00Z
        let december = november + 30 * 86_400;
        let january = december + 31 * 86_400;
        let nov = [usage(november, december), usage(0, 1)];
        let dec = [usage(december, january), usage(0, 1)];
        let p = memo.policy(1, monthly, &nov);
        assert_eq!(&*p, "\"m\";q=7;w=2592000, \"s\";q=9;w=1");
        assert!(Rc::ptr_eq(&p, &memo.policy(1, monthly, &nov)));
        let p = memo.policy(1, monthly, &dec);
        assert_eq!(&*p, "\"m\";q=7;w=2678400, \"s\";q=9;w=1", "a longer month");
        // The fixed plan's entry was not disturbed by the other plan's.
        assert!(Rc::ptr_eq(&first, &memo.policy(0, fixed, &day)));
    }
}
