//! What the request path counts for usage events and alerts (no host call): read by the
//! root context's sender (`events.rs`) on its tick.

use std::cell::RefCell;

use crate::config::Config;
use crate::events::{Crossing, PaymentSettled, Tally};
use crate::settlement::Billed;
use crate::verdict::Verdict;

/// What the request path counts for events (one per VM and configuration).
pub struct Meter {
    pub tally: RefCell<Tally>,
    pub crossings: RefCell<Vec<Crossing>>,
    /// Payments settled since the last tick.
    pub payments: RefCell<Vec<PaymentSettled>>,
    /// Most crossings (and payments) kept between two ticks.
    max_crossings: usize,
}

impl Meter {
    /// `None` without an `events` block: the request path then does nothing more than today.
    pub fn new(config: &Config) -> Option<Meter> {
        let events = config.events.as_ref()?;
        Some(Meter {
            tally: RefCell::new(Tally::new(config.consumers.len(), events.interval)),
            crossings: RefCell::new(Vec::new()),
            payments: RefCell::new(Vec::new()),
            max_crossings: events.buffer,
        })
    }

    /// Counts one request (no host call; allocates only the first time a consumer is seen in
    /// a slot, or when a threshold is crossed).
    pub fn record(&self, now: i64, verdict: &mut Verdict) {
        let Some(consumer) = verdict.metered.consumer else {
            return;
        };
        if let Ok(mut tally) = self.tally.try_borrow_mut() {
            tally.record(consumer, now, verdict.metrics.iter().map(|(e, _)| e));
        }
        if !verdict.metered.crossings.is_empty() {
            self.record_crossings(std::mem::take(&mut verdict.metered.crossings));
        }
    }

    /// Keeps thresholds reached (a request's, or in fleet mode a grant's) for the next tick,
    /// at most `events.buffer` of them.
    pub fn record_crossings(&self, mut reached: Vec<Crossing>) {
        if let Ok(mut crossings) = self.crossings.try_borrow_mut() {
            let room = self.max_crossings.saturating_sub(crossings.len());
            reached.truncate(room);
            crossings.extend(reached);
        }
    }

    /// Keeps a settled payment for the next tick's `payment.settled` event.
    pub fn record_payment(&self, payment: PaymentSettled) {
        if let Ok(mut payments) = self.payments.try_borrow_mut() {
            if payments.len() < self.max_crossings {
                payments.push(payment);
            }
        }
    }

    /// Counts a settled LLM request's tokens (no host call).
    pub fn record_tokens(&self, consumer: usize, now: i64, billed: Billed) {
        if let Ok(mut tally) = self.tally.try_borrow_mut() {
            tally.record_tokens(consumer, billed.model, now, billed.tokens, billed.units);
        }
    }
}
