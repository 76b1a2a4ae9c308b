//! The root context: reads and validates the plugin configuration, creates the consumers'
//! shared-data records, and hands the compiled configuration to each HTTP context. The
//! composition root of the host layer: the module's entry point, imported by no other.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use super::clock::{now, now_ms};
use super::entitlements::Entitlements;
use super::events;
use super::fleet;
use super::http::Filter;
use super::logger;
use super::runtime::Runtime;
use super::shared_data::SharedData;
use crate::config::{Config, Settings, UntilFirstSnapshot};
use crate::counters::create_counters;

proxy_wasm::main! {{
    logger::install();
    proxy_wasm::set_root_context(|id| Box::new(Root::new(id)));
}}

#[derive(Default)]
pub struct Root {
    /// This root context's id (its requests' settlements are its own: `payments`).
    id: u32,
    /// Stopped by Envoy (`on_done`), waiting for its last answers: events' last batch
    /// (`events_done` once answered or overdue) and its settlements in flight.
    stopping: bool,
    events_done: bool,
    /// `proxy_done` was called.
    done_called: bool,
    runtime: Option<Rc<Runtime>>,
    /// Usage events and alerts: buffer, call in flight (with an `events` block).
    events: Option<events::Sender>,
    /// Live entitlements (`entitlements` configured): pulls and switches snapshots.
    entitlements: Option<Entitlements>,
    /// The facilitator's `GET /supported`, asked when a configuration that sells credits is
    /// loaded.
    supported: Option<u32>,
}

impl Root {
    pub fn new(context_id: u32) -> Root {
        fleet::set_root(context_id, METRICS_FLUSH);
        Root {
            id: context_id,
            ..Root::default()
        }
    }

    /// A stopping root with nothing left to wait for tells Envoy it is done (once).
    fn maybe_done(&mut self) {
        if self.stopping
            && self.events_done
            && !self.done_called
            && !super::payments::pending(self.id)
        {
            self.done_called = true;
            done();
        }
    }

    /// Serves `config` from the next request on (requests in flight keep theirs).
    fn switch(&mut self, config: Config) {
        // Usage events: the previous runtime's intervals go to the buffer as they are, and new
        // consumers' reminders get their claim records.
        if let Err(e) = events::prepare(&config) {
            log::warn!("events: shared data unavailable for the new consumers' reminders: {e}");
        }
        self.events = events::Sender::configure(
            self.events.take(),
            self.runtime.as_deref(),
            &config,
            now().unwrap_or_default(),
        );
        let same_plans = |previous: &Runtime| {
            let names = |c: &Config| c.plans.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
            names(&previous.config) == names(&config)
        };
        let runtime = match &self.runtime {
            Some(previous) if same_plans(previous) => {
                Runtime::with_metrics(config, Rc::clone(&previous.metrics))
            }
            Some(previous) => {
                previous.metrics.flush();
                Runtime::new(config)
            }
            None => Runtime::new(config),
        };
        self.runtime = Some(Rc::new(runtime));
    }
}

// The SDK's `done()` panics on any status but Ok; here the status is read as a plain integer.
#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_done() -> u32;
}

/// Tells Envoy that this root context, which answered `false` to `on_done`, is done now.
fn done() {
    // SAFETY: no arguments; the host only looks up the calling root context.
    let status = unsafe { proxy_done() };
    if status != 0 {
        log::debug!("proxy_done: status {status}");
    }
}

/// How often each VM hands its counts to Envoy.
const METRICS_FLUSH: Duration = Duration::from_secs(1);

impl Context for Root {
    // Fleet mode: answers to calls made while the tick decided held requests again.
    // Fleet mode's payments: the store's answers to the calls the root makes for them.
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let now_ms = now_ms().unwrap_or(0);
        if super::payments::owns(token_id) {
            super::payments::on_store_answer(token_id, status_code, response_size, now_ms);
            self.maybe_done();
            return;
        }
        // A draw made while the root decided a request (after its payment, or on the tick).
        if super::draws::on_answer(self.id, token_id, status_code, response_size, now_ms) {
            return;
        }
        fleet::on_response(token_id, status_code, response_size, now_ms);
    }

    // A configuration push (or Envoy's stop) ends this root context. With a batch of events
    // or settlements in flight it is not done yet: Envoy keeps it until `proxy_done` (the last
    // answer, or the tick past the deadlines, calls it). Its queued settlements go out now.
    fn on_done(&mut self) -> bool {
        let Some(runtime) = &self.runtime else {
            return true;
        };
        runtime.metrics.flush();
        self.events_done = match &mut self.events {
            Some(sender) => sender.stop(runtime, now().unwrap_or_default()),
            None => true,
        };
        self.stopping = true;
        if super::payments::pending(self.id) {
            super::payments::on_tick(self.id, now_ms().unwrap_or(0));
        }
        let done = self.events_done && !super::payments::pending(self.id);
        self.done_called = done;
        done
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if self.supported == Some(token_id) {
            self.supported = None;
            if let Some(runtime) = &self.runtime {
                super::payments::on_supported(runtime, num_headers, body_size);
            }
            return;
        }
        if super::payments::owns(token_id) {
            super::payments::on_call_answer(
                token_id,
                num_headers,
                body_size,
                now_ms().unwrap_or(0),
            );
            self.maybe_done();
            return;
        }
        if let (Some(sender), Some(runtime)) = (&mut self.events, &self.runtime) {
            if sender.owns(token_id) {
                if sender.response(runtime, now().unwrap_or_default()) == events::Answered::Finished
                {
                    self.events_done = true;
                    self.maybe_done();
                }
                return;
            }
            // A stopped root context only waits for its last batch: no snapshot switch.
            if sender.is_stopping() {
                return;
            }
        }
        let current = self.runtime.as_deref().map(|runtime| &runtime.config);
        let entitlements = self.entitlements.as_mut();
        if let Some(config) =
            entitlements.and_then(|e| e.on_http_call_response(token_id, body_size, current))
        {
            self.switch(config);
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        logger::sync_level();
        log::info!("version {} starting", crate::VERSION);
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        logger::sync_level();
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
        match create_counters(&config, &SharedData::default()) {
            Ok(created) => log::debug!("created {created} consumer records"),
            Err(e) => {
                log::error!("configuration refused: shared data unavailable: {}", e.0);
                return false;
            }
        }
        if config.payments.is_some() {
            // Defined with the configuration, so that dashboards and alerts see 0s from the
            // start rather than no series until the first payment.
            super::payments::define_counters();
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
            now().unwrap_or_default(),
        );
        if let Err(status) = hostcalls::set_tick_period(METRICS_FLUSH) {
            log::warn!("cannot set the tick period, metrics stay unflushed: {status:?}");
        }
        fleet::retick();
        log::info!("configured: {}", config.summary());
        let (entitlements, current) = match Entitlements::configure(&config, &bytes) {
            Some((entitlements, current)) => (Some(entitlements), current),
            None => (None, None),
        };
        self.entitlements = entitlements;
        let mut config = config;
        if current.is_none() {
            // No snapshot in shared data (a start, not a reconfiguration): until the first
            // one, keys the configuration does not hold wait for it, if so configured.
            config.awaiting_snapshot = config
                .entitlements
                .as_ref()
                .filter(|s| s.until_first_snapshot == UntilFirstSnapshot::Unavailable)
                .map(Settings::retry_after_s);
        }
        self.runtime = Some(Rc::new(Runtime::new(config)));
        // A pack the facilitator cannot settle is worth a warning now, not at the first payment.
        if let Some(runtime) = &self.runtime {
            self.supported = super::payments::check_supported(runtime);
        }
        if let Some(current) = current {
            self.switch(current);
        }
        true
    }

    fn on_tick(&mut self) {
        // A stopped root context waiting for its last answers does nothing else.
        if self.stopping {
            let overdue = self
                .events
                .as_ref()
                .is_some_and(|s| s.overdue(now().unwrap_or_default()));
            if !self.events_done && overdue {
                log::info!("events: VM stopping: no answer to the last batch; done");
                self.events_done = true;
            }
            // Settlements past their deadline are given up (their claims stay SETTLING).
            super::payments::on_tick(self.id, now_ms().unwrap_or(0));
            self.maybe_done();
            return;
        }
        if let Some(runtime) = &self.runtime {
            runtime.metrics.flush();
            if let (Some(sender), Some(now)) = (&mut self.events, now()) {
                sender.tick(runtime, now);
            }
        }
        // Settlements queued by paying requests (the tick is fast while there are any).
        if super::payments::busy(self.id)
            && super::payments::on_tick(self.id, now_ms().unwrap_or(0))
        {
            if let Err(status) = hostcalls::set_tick_period(METRICS_FLUSH) {
                log::warn!("cannot set the tick period: {status:?}");
            }
        }
        // Fleet mode's draws on prepaid credits whose answer never came.
        if super::draws::busy() {
            super::draws::on_tick(self.id, now_ms().unwrap_or(0));
        }
        // Fleet mode's held requests (the tick is faster while there are any).
        if !fleet::idle() {
            if let Some(now_ms) = now_ms() {
                fleet::on_tick(now_ms);
            }
        }
        if let Some(config) = self.entitlements.as_mut().and_then(Entitlements::on_tick) {
            self.switch(config);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter::new(
            self.runtime.clone(),
            context_id,
            self.id,
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
