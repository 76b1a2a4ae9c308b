//! What every HTTP context of one configuration shares, switched whole on reconfiguration.

use std::rc::Rc;

use super::meter::Meter;
use super::metrics::Metrics;
use crate::config::Config;
use crate::memo::Memo;
use crate::shadow_log::ShadowLog;

/// What every HTTP context of this configuration shares.
pub struct Runtime {
    pub config: Config,
    /// Shared with the next runtime when a snapshot switch keeps the plans' names (the
    /// counter ids depend on nothing else): a request that started on the previous runtime
    /// then still counts into the counters that are flushed.
    pub metrics: Rc<Metrics>,
    pub memo: Memo,
    pub shadow_log: ShadowLog,
    /// Usage counts and crossings for events (`None` without an `events` block).
    pub meter: Option<Meter>,
}

impl Runtime {
    pub fn new(config: Config) -> Runtime {
        let metrics = Rc::new(Metrics::define(&config));
        Runtime::with_metrics(config, metrics)
    }

    pub fn with_metrics(config: Config, metrics: Rc<Metrics>) -> Runtime {
        Runtime {
            meter: Meter::new(&config),
            metrics,
            config,
            memo: Memo::default(),
            shadow_log: ShadowLog::default(),
        }
    }
}
