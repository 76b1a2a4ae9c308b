//! Defines tollgate's counters in Envoy (`wasmcustom.<name>`) and increments them by index.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::config::Config;
use crate::metrics::{indices, names, Event};

/// Envoy's ids of the counters, in [`names`] order (`None` where defining one failed).
pub struct Metrics {
    ids: Vec<Option<u32>>,
}

impl Metrics {
    /// Defines every counter for this configuration (Envoy returns the existing counter when
    /// a name is defined again, so reconfiguration keeps the counts).
    pub fn define(config: &Config) -> Metrics {
        let ids = names(&config.plans)
            .iter()
            .map(
                |name| match hostcalls::define_metric(MetricType::Counter, name) {
                    Ok(id) => Some(id),
                    Err(status) => {
                        log::warn!("cannot define metric {name}: {status:?}");
                        None
                    }
                },
            )
            .collect();
        Metrics { ids }
    }

    pub fn record(&self, events: &[(Event, Option<usize>)]) {
        for (event, plan) in events {
            for index in indices(*event, *plan).into_iter().flatten() {
                if let Some(Some(id)) = self.ids.get(index) {
                    let _ = hostcalls::increment_metric(*id, 1);
                }
            }
        }
    }
}
