//! The root context: reads and validates the plugin configuration, creates the consumers'
//! shared-data records, and hands the compiled configuration to each HTTP context.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use super::events;
use super::http::Filter;
use super::metrics::Metrics;
use super::shared_data::SharedData;
use crate::config::Config;
use crate::memo::Memo;
use crate::quota::create_records;
use crate::shadow_log::ShadowLog;

/// What every HTTP context of this configuration shares.
pub struct Runtime {
    pub config: Config,
    pub metrics: Metrics,
    pub memo: Memo,
    pub shadow_log: ShadowLog,
    /// Usage counts and crossings for events (`None` without an `events` block).
    pub meter: Option<events::Meter>,
}

#[derive(Default)]
pub struct Root {
    runtime: Option<Rc<Runtime>>,
    /// Usage events and alerts: buffer, call in flight (with an `events` block).
    events: Option<events::Sender>,
}

impl Root {
    pub fn new(context_id: u32) -> Root {
        super::fleet::set_root(context_id, METRICS_FLUSH);
        Root::default()
    }
}

/// How often each VM hands its counts to Envoy.
const METRICS_FLUSH: Duration = Duration::from_secs(1);

impl Context for Root {
    // Fleet mode: answers to calls made while the tick decided held requests again.
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let now_ms = super::now_ms().unwrap_or(0);
        super::fleet::on_response(token_id, status_code, response_size, now_ms);
    }

    fn on_done(&mut self) -> bool {
        if let Some(runtime) = &self.runtime {
            runtime.metrics.flush();
            if let (Some(sender), Some(now)) = (&mut self.events, super::now()) {
                sender.done(runtime, now);
            }
        }
        true
    }

    fn on_http_call_response(&mut self, token_id: u32, _: usize, _: usize, _: usize) {
        if let (Some(sender), Some(runtime)) = (&mut self.events, &self.runtime) {
            if sender.owns(token_id) {
                sender.response(runtime, super::now().unwrap_or_default());
            }
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        super::logger::sync_level();
        log::info!("version {} starting", crate::VERSION);
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        super::logger::sync_level();
        let bytes = match hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        ) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => Vec::new(),
            Err(status) => {
                log::error!("cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        let config = match Config::from_json(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log::error!("configuration refused: {e}");
                return false;
            }
        };
        // Create every counted consumer's record now, before any request is counted: Envoy
        // does not check CAS when a key is first created (see quota.rs).
        // Fleet mode counts in leases (created the same way, for the same reason).
        let created = match config.store {
            None => create_records(&config, &SharedData::default()),
            Some(_) => crate::lease::create_leases(&config, &SharedData::default()),
        };
        match created {
            Ok(created) => log::debug!("created {created} consumer records"),
            Err(e) => {
                log::error!("configuration refused: shared data unavailable: {}", e.0);
                return false;
            }
        }
        if let Err(e) = events::prepare(&config) {
            log::error!("configuration refused: shared data unavailable for events: {e}");
            return false;
        }
        if let Some(previous) = &self.runtime {
            previous.metrics.flush();
        }
        self.events = events::Sender::configure(
            self.events.take(),
            self.runtime.as_deref(),
            &config,
            super::now().unwrap_or_default(),
        );
        let metrics = Metrics::define(&config);
        if let Err(status) = hostcalls::set_tick_period(METRICS_FLUSH) {
            log::warn!("cannot set the tick period, metrics stay unflushed: {status:?}");
        }
        log::info!("configured: {}", config.summary());
        let meter = events::Meter::new(&config);
        self.runtime = Some(Rc::new(Runtime {
            config,
            metrics,
            memo: Memo::default(),
            shadow_log: ShadowLog::default(),
            meter,
        }));
        true
    }

    fn on_tick(&mut self) {
        if let Some(runtime) = &self.runtime {
            runtime.metrics.flush();
            if let (Some(sender), Some(now)) = (&mut self.events, super::now()) {
                sender.tick(runtime, now);
            }
        }
        // Fleet mode's held requests (the tick is faster while there are any).
        super::fleet::on_tick();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter::new(self.runtime.clone(), context_id)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
