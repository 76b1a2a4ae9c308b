//! Bounds what shadow mode logs. Shadow mode runs on live traffic and would log every request
//! it would refuse — a host call per request, and a flood of identical lines for a consumer
//! over quota. Instead each VM logs a would-be refusal at most once per [`INTERVAL`] per
//! consumer and reason; the lines it holds back are counted (metric
//! `tollgate.logs.shadow_suppressed`) and the next line says how many there were.
//!
//! The same bound holds the log lines of store errors (see `verdict::store_error`): an outage
//! fails every request that needs the store, so those lines go under one key for all consumers
//! — one line a minute per VM — and what is held back is counted in
//! `tollgate.logs.store_error_suppressed`.
//!
//! Memory is bounded by the configuration: one entry per configured consumer (plus one for
//! requests without a consumer: missing or invalid credentials, and one for store errors), each
//! with at most one slot per reason. One per configuration and VM, like the memo of exhausted
//! consumers.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::decision::Reason;

/// At most one line per consumer and reason in this many seconds, per VM.
pub const INTERVAL: i64 = 60;

#[derive(Debug, Clone, Copy)]
struct Slot {
    reason: Reason,
    /// When the last line was logged (Unix seconds).
    logged_at: i64,
    /// Lines held back since.
    suppressed: u64,
}

#[derive(Debug, Default)]
pub struct ShadowLog {
    /// By consumer name ("" for requests without a consumer).
    consumers: RefCell<HashMap<String, Vec<Slot>>>,
}

impl ShadowLog {
    /// Whether a would-be refusal of `consumer` (its name, or "" when there is none) for
    /// `reason` at `now` is logged: `Some(n)` to log it, `n` lines having been held back since
    /// the last one; `None` to hold it back (it is then counted).
    pub fn admit(&self, consumer: &str, reason: Reason, now: i64) -> Option<u64> {
        let Ok(mut consumers) = self.consumers.try_borrow_mut() else {
            return Some(0);
        };
        let fresh = Slot {
            reason,
            logged_at: now,
            suppressed: 0,
        };
        let Some(slots) = consumers.get_mut(consumer) else {
            consumers.insert(consumer.to_string(), vec![fresh]);
            return Some(0);
        };
        let Some(slot) = slots.iter_mut().find(|s| s.reason == reason) else {
            slots.push(fresh);
            return Some(0);
        };
        // A clock that went back counts as time passed: better a line too many than none.
        if now >= slot.logged_at.saturating_add(INTERVAL) || now < slot.logged_at {
            let held_back = slot.suppressed;
            *slot = fresh;
            return Some(held_back);
        }
        slot.suppressed += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_611_600;

    #[test]
    fn one_line_per_consumer_and_reason_per_interval() {
        let log = ShadowLog::default();
        assert_eq!(log.admit("acme", Reason::Quota, NOW), Some(0));
        for t in NOW..NOW + INTERVAL {
            assert_eq!(log.admit("acme", Reason::Quota, t), None, "at +{}", t - NOW);
        }
        // Another reason, another consumer, no consumer: each has its own line.
        assert_eq!(log.admit("acme", Reason::Suspended, NOW + 1), Some(0));
        assert_eq!(log.admit("globex", Reason::Quota, NOW + 1), Some(0));
        assert_eq!(log.admit("", Reason::MissingCredential, NOW + 1), Some(0));
        assert_eq!(log.admit("", Reason::InvalidCredential, NOW + 1), Some(0));
        assert_eq!(log.admit("", Reason::MissingCredential, NOW + 2), None);
        // The interval over: a line again, telling how many were held back.
        assert_eq!(
            log.admit("acme", Reason::Quota, NOW + INTERVAL),
            Some(INTERVAL as u64)
        );
        assert_eq!(log.admit("acme", Reason::Quota, NOW + INTERVAL), None);
        assert_eq!(
            log.admit("acme", Reason::Quota, NOW + 2 * INTERVAL),
            Some(1)
        );
        // A clock that went back logs rather than staying silent.
        assert_eq!(log.admit("globex", Reason::Quota, NOW), Some(0));
        // Bounded: one entry per consumer seen.
        assert_eq!(log.consumers.borrow().len(), 3);
    }
}
