//! Defines tollgate's counters in Envoy (`wasmcustom.<name>`) and counts into them. Counts are
//! kept in the VM and flushed to Envoy once a second (on the root context's tick) and when the
//! VM is done: one host call per changed counter per second instead of two per request.

use std::cell::RefCell;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::config::Config;
use crate::metrics::{indices, names, Increments};

/// Envoy's ids of the counters, in [`names`] order (`None` where defining one failed), and the
/// counts not yet flushed.
pub struct Metrics {
    ids: Vec<Option<u32>>,
    pending: RefCell<Vec<u64>>,
}

/// Defines the counter `name` in Envoy (or finds it: Envoy returns the existing counter when a
/// name is defined again, so reconfiguration keeps the counts); `None`, logged, if it cannot.
#[inline(never)]
pub fn define_counter(name: &str) -> Option<u32> {
    match hostcalls::define_metric(MetricType::Counter, name) {
        Ok(id) => Some(id),
        Err(status) => {
            log::warn!("cannot define metric {name}: {status:?}");
            None
        }
    }
}

/// Adds `by` to a counter at once (for rare events; request counters go through [`Metrics`]).
#[inline(never)]
pub fn bump(id: Option<u32>, by: usize) {
    if let (Some(id), Ok(by)) = (id, i64::try_from(by)) {
        if by > 0 {
            let _ = hostcalls::increment_metric(id, by);
        }
    }
}

impl Metrics {
    /// Defines every counter for this configuration.
    pub fn define(config: &Config) -> Metrics {
        let ids: Vec<Option<u32>> = names(&config.plans)
            .iter()
            .map(|name| define_counter(name))
            .collect();
        let pending = RefCell::new(vec![0; ids.len()]);
        Metrics { ids, pending }
    }

    pub fn record(&self, increments: &Increments) {
        let Ok(mut pending) = self.pending.try_borrow_mut() else {
            return;
        };
        for (metric, plan) in increments.iter() {
            for index in indices(metric, plan).into_iter().flatten() {
                if let Some(count) = pending.get_mut(index) {
                    *count += 1;
                }
            }
        }
    }

    /// Hands the pending counts to Envoy.
    pub fn flush(&self) {
        let Ok(mut pending) = self.pending.try_borrow_mut() else {
            return;
        };
        for (count, id) in pending.iter_mut().zip(&self.ids) {
            if let (Some(id), true) = (id, *count > 0) {
                if let Ok(offset) = i64::try_from(*count) {
                    let _ = hostcalls::increment_metric(*id, offset);
                }
                *count = 0;
            }
        }
    }
}
