//! Fleet mode's host glue: the proxy-wasm calls behind [`crate::fleet`]'s state machine (held
//! requests, calls to the rate limit service), its per-VM state, and its counters
//! (`wasmcustom.tollgate.fleet.{store_calls,refills_ahead,held}`, defined on first use, so
//! only in fleet mode).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;

use super::metrics::{bump, define_counter};
use super::request::run;
use super::runtime::Runtime;
use super::shared_data::SharedData;
use crate::config::{Config, Rls};
use crate::decision::{Attempt, DrawAsk};
use crate::events::Crossing;
use crate::fleet::{self as core, Count, FleetHost, State};
use crate::lease::Ask;
use crate::response::RateLimitFields;
use crate::rls;
use crate::verdict::{Step, Wait};

// The SDK's versions of these panic on any status but Ok (a context that went away meanwhile
// must not trap the VM): the ABI functions, statuses as integers.
#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
}

// A `const` initializer needs no lazy set-up code. State is per VM (one thread).
thread_local! {
    static STATE: RefCell<State<Runtime>> = const { RefCell::new(State::new()) };
    /// Envoy's ids of the [`Count`] counters, once defined (`Some(None)`: defining failed).
    static COUNTERS: RefCell<[Option<Option<u32>>; 3]> = const { RefCell::new([None; 3]) };
}

/// The host as [`crate::fleet`] sees it.
#[derive(Default)]
struct Host {
    shared: SharedData,
}

impl FleetHost for Host {
    type Runtime = Runtime;
    type Store = SharedData;

    fn config(runtime: &Runtime) -> &Config {
        &runtime.config
    }

    fn with<T>(&self, f: impl FnOnce(&mut State<Runtime>) -> T) -> Option<T> {
        STATE.with(|state| state.try_borrow_mut().ok().map(|mut s| f(&mut s)))
    }

    fn set_effective_context(&self, context: u32) -> bool {
        // SAFETY: plain integer arguments.
        unsafe { proxy_set_effective_context(context) == 0 }
    }

    fn resume_request(&self) -> bool {
        // SAFETY: plain integer argument (0: the HTTP request stream).
        unsafe { proxy_continue_stream(0) == 0 }
    }

    fn set_tick(&self, period: Duration) {
        let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
        // SAFETY: plain integer argument.
        let _ = unsafe { proxy_set_tick_period_milliseconds(ms) };
    }

    fn call(&self, rls: &Rls, message: &[u8]) -> Result<u32, String> {
        hostcalls::dispatch_grpc_call(
            &rls.cluster,
            rls::SERVICE,
            rls::METHOD,
            Vec::new(),
            Some(message),
            Duration::from_millis(rls.timeout_ms),
        )
        .map_err(|status| format!("{status:?}"))
    }

    fn answer(&self, size: usize) -> Vec<u8> {
        super::buffers::grpc_answer(0, size).unwrap_or_default()
    }

    fn decide(&self, context: u32, runtime: &Rc<Runtime>, attempt: &Attempt, now_ms: i64) -> Step {
        if attempt.headers_forwarded {
            // An LLM request held at its body: its headers are gone upstream.
            return super::held::decide_held_body(context, runtime, attempt, now_ms);
        }
        let step = run(runtime, attempt, now_ms);
        // A priced request (a route's cost) admitted from another context: its own context
        // settles it (a cost header), as one that was never held.
        if let Step::Continue {
            charged: Some(charged),
            ..
        } = &step
        {
            super::held::hand_over(context, charged.clone());
        }
        step
    }

    #[inline(never)]
    fn count(&self, which: Count) {
        let index = which as usize;
        let id = COUNTERS.with(|ids| {
            let mut ids = ids.try_borrow_mut().ok()?;
            let slot = ids.get_mut(index)?;
            *slot.get_or_insert_with(|| define_counter(Count::NAMES.get(index)?))
        });
        bump(id, 1);
    }

    fn alert(&self, runtime: &Rc<Runtime>, crossings: Vec<Crossing>) {
        if let Some(meter) = &runtime.meter {
            meter.record_crossings(crossings);
        }
    }

    fn store(&self) -> &SharedData {
        &self.shared
    }

    fn draw(&self, context: u32, runtime: &Rc<Runtime>, attempt: &Attempt, ask: DrawAsk) {
        super::draws::start_held(context, runtime, attempt, ask);
    }
}

// Each entry point is one copy (`inline(never)`), although the SDK's gRPC callbacks (HTTP and
// root contexts) both reach them.

/// The root context's id and its usual tick period (called when it is created).
pub fn set_root(context: u32, idle_tick: Duration) {
    core::set_root(&Host::default(), context, idle_tick);
}

/// The root context has just set its tick to the idle period (on configuration).
pub fn retick() {
    core::retick(&Host::default());
}

/// Holds the request of `context` (paused by the caller after `attempt`), and makes the store
/// call if it claimed the refill.
#[inline(never)]
pub fn hold(context: u32, runtime: &Rc<Runtime>, wait: Wait, attempt: &Attempt, now_ms: i64) {
    core::hold(&Host::default(), context, runtime, wait, attempt, now_ms);
}

/// Refills a consumer's lease ahead of time, on the root context's next tick.
#[inline(never)]
pub fn refill_ahead(runtime: &Rc<Runtime>, consumer: usize, ask: Ask) {
    core::refill_ahead(&Host::default(), runtime, consumer, ask);
}

/// The answer to a call (from the HTTP context that made it, or the root context).
#[inline(never)]
pub fn on_response(token: u32, status: u32, size: usize, now_ms: i64) {
    core::on_response(&Host::default(), token, status, size, now_ms);
}

/// Whether fleet mode has nothing to do on this tick (checked before reading the clock).
pub fn idle() -> bool {
    core::idle(&Host::default())
}

/// The root context's tick.
#[inline(never)]
pub fn on_tick(now_ms: i64) {
    core::on_tick(&Host::default(), now_ms);
}

/// The RateLimit fields of a request that was resumed from another context.
pub fn fields_of(context: u32) -> Option<RateLimitFields> {
    core::fields_of(&Host::default(), context)
}

/// A request's context is done: forget it and give up the calls it made.
#[inline(never)]
pub fn forget(context: u32, now_ms: i64) {
    core::forget(&Host::default(), context, now_ms);
}
