//! Fleet mode's host side: the requests held while a consumer's lease is refilled, the gRPC
//! calls to the rate limit service, and their answers.
//!
//! - A request whose lease is empty is *held* (its HTTP context paused). If it claimed the
//!   refill, it calls `ShouldRateLimit` (with the configured timeout, Envoy enforces it).
//! - When the answer comes, it goes into the lease ([`crate::lease::apply`]) and every request of
//!   this VM held for that consumer is decided again in its own context
//!   (`proxy_set_effective_context`) and resumed, or answered.
//! - Requests held on behalf of another worker's refill (its claim is in shared data) are
//!   decided again on the root context's tick, which runs every [`POLL`] while any request is
//!   held (and at the metrics period otherwise): a refill that failed fails them too, and a
//!   claim past its deadline (the refiller died) is taken over.
//! - No request is held past its deadline: then it gets `on_store_error`.
//! - A lease that runs low is refilled ahead of time ([`crate::lease::ahead`]): the request
//!   that claimed it goes on, and the call is made on the root context's next tick, [`SOON`]
//!   later (the SDK files a call under the context it is running, and drops the answer of a
//!   context that is gone: only a call made from the root context outlives its request).
//! - Counters `wasmcustom.tollgate.fleet.{store_calls,refills_ahead,held}`: calls made, of
//!   them ahead of time, and requests held (defined on first use, so only in fleet mode).
//!
//! State is per VM (one thread): a `thread_local`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::BufferType;

use super::http::{run, Step};
use super::metrics::{bump, define_counter};
use super::root::Runtime;
use super::shared_data::SharedData;
use crate::config::format_utc_offset;
use crate::decision::Attempt;
use crate::lease::{self, Answer, Applied, Ask, Terms, CLAIM_MARGIN_MS};
use crate::response::RateLimitFields;
use crate::rls::{self, Code};
use crate::verdict::Wait;

/// How often held requests look at their lease again (the root context's tick meanwhile).
pub const POLL: Duration = Duration::from_millis(10);
/// The root context's tick while a refill ahead waits to be made.
pub const SOON: Duration = Duration::from_millis(1);

// The SDK's versions of these panic on any status but Ok (a context that went away meanwhile
// must not trap the VM): the ABI functions, statuses as integers.
#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
}

fn set_effective_context(context: u32) -> bool {
    // SAFETY: plain integer arguments.
    unsafe { proxy_set_effective_context(context) == 0 }
}

fn resume_request() -> bool {
    // SAFETY: plain integer argument (0: the HTTP request stream).
    unsafe { proxy_continue_stream(0) == 0 }
}

fn set_tick(period: Duration) {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: plain integer argument.
    let _ = unsafe { proxy_set_tick_period_milliseconds(ms) };
}

/// A request held for a refill.
struct Held {
    context: u32,
    runtime: Rc<Runtime>,
    consumer: usize,
    since_ms: i64,
    deadline_ms: i64,
    /// A refill this request claimed while it was decided again from another request's
    /// callback: made on the next tick, from the root context (a call made from a request's
    /// context is cancelled when that request ends, and its answer lost with the units).
    pending: Option<Ask>,
}

type Calls = Vec<(u32, Call)>;

/// A call in flight.
struct Call {
    /// The context the call was made from (its answer is read there).
    context: u32,
    runtime: Rc<Runtime>,
    consumer: usize,
    ask: Ask,
}

struct State {
    root: u32,
    held: Vec<Held>,
    /// Calls in flight, by token (a handful: at most one per consumer being refilled).
    calls: Calls,
    /// RateLimit fields of requests resumed from another context, for their responses.
    fields: Vec<(u32, RateLimitFields)>,
    /// Refills ahead of time to make on the next tick.
    ahead: Vec<(Rc<Runtime>, usize, Ask)>,
    /// The tick period asked for last.
    tick: Duration,
    /// The context the host is running while held requests are decided again from a callback
    /// (calls made then are filed under it).
    current: Option<u32>,
    /// The tick period outside of polling (the metrics flush).
    idle_tick: Duration,
    /// Envoy's ids of the [`Count`] counters, once defined (`Some(None)`: defining failed).
    counters: [Option<Option<u32>>; 3],
}

/// What fleet mode counts (rare next to requests: incremented in Envoy at once).
#[derive(Clone, Copy)]
enum Count {
    StoreCalls,
    RefillsAhead,
    Held,
}

const COUNTER_NAMES: [&str; 3] = [
    "tollgate.fleet.store_calls",
    "tollgate.fleet.refills_ahead",
    "tollgate.fleet.held",
];

#[inline(never)]
fn count(which: Count) {
    let index = which as usize;
    let id = with(|s| {
        let slot = s.counters.get_mut(index)?;
        *slot.get_or_insert_with(|| define_counter(COUNTER_NAMES.get(index)?))
    })
    .flatten();
    bump(id, 1);
}

impl State {
    const fn new() -> State {
        State {
            root: 0,
            held: Vec::new(),
            calls: Vec::new(),
            fields: Vec::new(),
            ahead: Vec::new(),
            tick: Duration::from_secs(1),
            current: None,
            idle_tick: Duration::from_secs(1),
            counters: [None; 3],
        }
    }
}

// A `const` initializer needs no lazy set-up code, and each entry point here is one copy
// (`inline(never)`), although the SDK's gRPC callbacks (HTTP and root contexts) all reach
// them: the .wasm has a size budget.
thread_local! {
    static STATE: RefCell<State> = const { RefCell::new(State::new()) };
}

fn with<T>(f: impl FnOnce(&mut State) -> T) -> Option<T> {
    STATE.with(|state| state.try_borrow_mut().ok().map(|mut s| f(&mut s)))
}

/// The root context's id and its usual tick period (called when it is created/configured).
pub fn set_root(context: u32, idle_tick: Duration) {
    with(|s| {
        s.root = context;
        s.idle_tick = idle_tick;
    });
}

/// The root context has just set its tick to the idle period (on configuration): set it again
/// to what fleet mode needs, if that is faster.
pub fn retick() {
    with(|s| s.tick = s.idle_tick);
    settle();
}

fn terms(runtime: &Runtime) -> Option<(Terms, &crate::config::Rls)> {
    let rls = runtime.config.store.as_ref()?;
    Some((
        Terms {
            lease: rls.lease,
            timeout_ms: i64::try_from(rls.timeout_ms).unwrap_or(i64::MAX),
            utc_offset: runtime.config.utc_offset,
        },
        rls,
    ))
}

/// Holds the request of `context` (paused by the caller), and makes the store call if it
/// claimed the refill.
#[inline(never)]
pub fn hold(context: u32, runtime: &Rc<Runtime>, wait: Wait, since_ms: i64, now_ms: i64) {
    let Some((terms, _)) = terms(runtime) else {
        return;
    };
    let deadline_ms = since_ms + 2 * (terms.timeout_ms + CLAIM_MARGIN_MS);
    count(Count::Held);
    with(|s| {
        s.held.push(Held {
            context,
            runtime: Rc::clone(runtime),
            consumer: wait.consumer,
            since_ms,
            deadline_ms,
            pending: None,
        });
    });
    settle();
    if let Some(ask) = wait.refill {
        dispatch(context, runtime, wait.consumer, ask, now_ms);
    }
}

/// Refills a consumer's lease ahead of time, for a request that claimed it and goes on: the
/// call is made on the root context's next tick (a call made from the request's context would
/// have its answer dropped once the request is done, and the units with it).
#[inline(never)]
pub fn refill_ahead(runtime: &Rc<Runtime>, consumer: usize, ask: Ask) {
    count(Count::RefillsAhead);
    with(|s| s.ahead.push((Rc::clone(runtime), consumer, ask)));
    settle();
}

/// Calls the rate limit service for `ask` from `context` (the context the host is running).
#[inline(never)]
fn dispatch(context: u32, runtime: &Rc<Runtime>, consumer: usize, ask: Ask, now_ms: i64) {
    let Some((_, rls)) = terms(runtime) else {
        return;
    };
    let config = &runtime.config;
    let Some(who) = config.consumers.get(consumer) else {
        return;
    };
    let Some(plan) = config.plan_of(who) else {
        return;
    };
    let offset = (config.utc_offset != 0).then(|| format_utc_offset(config.utc_offset));
    let sizes: Vec<String> = plan.limits.iter().map(|l| l.requests.to_string()).collect();
    let descriptors: Vec<Vec<(&str, &str)>> = plan
        .limits
        .iter()
        .zip(&sizes)
        .map(|(limit, size)| {
            let mut entries = vec![
                ("consumer", who.name.as_str()),
                ("limit", limit.name.as_str()),
                ("window", limit.window_text.as_str()),
                ("requests", size.as_str()),
            ];
            if let Some(offset) = &offset {
                entries.push(("utc_offset", offset.as_str()));
            }
            entries
        })
        .collect();
    let hits = u32::try_from(ask.hits).unwrap_or(u32::MAX);
    let message = rls::encode_request(&rls.domain, &descriptors, hits);
    // The SDK files the call under the context it is running; the host, under the effective
    // one: make them the same.
    set_effective_context(context);
    match hostcalls::dispatch_grpc_call(
        &rls.cluster,
        rls::SERVICE,
        rls::METHOD,
        Vec::new(),
        Some(&message),
        Duration::from_millis(rls.timeout_ms),
    ) {
        Ok(token) => {
            count(Count::StoreCalls);
            log::debug!("fleet: asking for {} of consumer {}", ask.hits, who.name);
            with(|s| {
                s.calls.push((
                    token,
                    Call {
                        context,
                        runtime: Rc::clone(runtime),
                        consumer,
                        ask,
                    },
                ))
            });
        }
        Err(status) => {
            let reason = format!(
                "cannot call the rate limit service (cluster {}): {status:?}",
                rls.cluster
            );
            finish(
                runtime,
                consumer,
                &ask,
                &Answer::Failed,
                Some(reason),
                now_ms,
                context,
            );
        }
    }
}

/// The answer to a call (from the HTTP context that made it, or the root context).
#[inline(never)]
pub fn on_response(token: u32, status: u32, size: usize, now_ms: i64) {
    let Some(Some(call)) = with(|s| {
        let at = s.calls.iter().position(|(t, _)| *t == token)?;
        Some(s.calls.swap_remove(at).1)
    }) else {
        return;
    };
    // Read where the host put the answer: the context the call was made from.
    set_effective_context(call.context);
    let name = call
        .runtime
        .config
        .consumers
        .get(call.consumer)
        .map_or("?", |c| c.name.as_str());
    let (answer, reason) = if status != 0 {
        (
            Answer::Failed,
            Some(format!(
                "the rate limit service answered gRPC status {status}"
            )),
        )
    } else {
        let body = hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        match rls::decode_response(&body) {
            Ok(response) => {
                let left: Vec<u64> = response
                    .statuses
                    .iter()
                    .map(|s| u64::from(s.remaining))
                    .collect();
                match response.overall {
                    Code::Ok => (Answer::Granted { left }, None),
                    Code::OverLimit => (Answer::Over { left }, None),
                    Code::Unknown => (
                        Answer::Failed,
                        Some("the rate limit service answered code UNKNOWN".to_string()),
                    ),
                }
            }
            Err(e) => (
                Answer::Failed,
                Some(format!(
                    "the rate limit service's answer is not readable: {}",
                    e.0
                )),
            ),
        }
    };
    if let Some(reason) = &reason {
        log::warn!("fleet: refill of consumer {name} failed: {reason}");
    }
    with(|s| s.current = Some(call.context));
    finish(
        &call.runtime,
        call.consumer,
        &call.ask,
        &answer,
        reason,
        now_ms,
        call.context,
    );
    with(|s| s.current = None);
}

/// Puts an answer into the lease, then asks again or decides the held requests again.
#[inline(never)]
fn finish(
    runtime: &Rc<Runtime>,
    consumer: usize,
    ask: &Ask,
    answer: &Answer,
    reason: Option<String>,
    now_ms: i64,
    context: u32,
) {
    let Some((terms, _)) = terms(runtime) else {
        return;
    };
    let Some(who) = runtime.config.consumers.get(consumer) else {
        return;
    };
    let key = lease::key(&who.name);
    let failed = match lease::apply(&SharedData::default(), &key, ask, answer, now_ms, &terms) {
        Ok(Applied::AskAgain(again)) => {
            dispatch(context, runtime, consumer, again, now_ms);
            return;
        }
        // A reply that does not fit the request (statuses for other limits) was stored as a
        // failure by `apply`.
        Ok(Applied::Done) => match answer {
            Answer::Granted { left } | Answer::Over { left } if left.len() != ask.windows.len() => {
                Some("the rate limit service answered for other limits".to_string())
            }
            _ => reason,
        },
        Err(crate::quota::CountError::Store(e)) => {
            Some(format!("cannot record the lease: {}", e.0))
        }
        Err(crate::quota::CountError::Contended) => Some("the lease stayed contended".into()),
    };
    wake(runtime, consumer, failed, now_ms);
}

/// Decides the held requests of `consumer` again (each in its own context).
#[inline(never)]
fn wake(runtime: &Rc<Runtime>, consumer: usize, failed: Option<String>, now_ms: i64) {
    let held: Vec<Held> = with(|s| {
        let (mine, rest): (Vec<Held>, Vec<Held>) = std::mem::take(&mut s.held)
            .into_iter()
            .partition(|h| h.consumer == consumer && Rc::ptr_eq(&h.runtime, runtime));
        s.held = rest;
        mine
    })
    .unwrap_or_default();
    for h in held {
        resume(h, failed.clone(), now_ms);
    }
    settle();
}

/// Decides one held request again in its own context: forward (resume), answer, or hold on.
#[inline(never)]
fn resume(held: Held, failed: Option<String>, now_ms: i64) {
    if !set_effective_context(held.context) {
        return; // the request is gone
    }
    let failed = failed.or_else(|| {
        (now_ms >= held.deadline_ms)
            .then(|| "no lease from the rate limit service within the timeout".to_string())
    });
    let input = Attempt {
        now_ms,
        waiting_since_ms: Some(held.since_ms),
        failed,
    };
    match run(&held.runtime, &input, now_ms) {
        Step::Continue(fields) => {
            if let Some(fields) = fields {
                with(|s| s.fields.push((held.context, fields)));
            }
            if !resume_request() {
                log::warn!("fleet: a held request could not be resumed");
            }
        }
        Step::Replied => {}
        Step::Wait(wait) => {
            let runtime = Rc::clone(&held.runtime);
            let root = with(|s| (s.current == Some(s.root)).then_some(s.root)).flatten();
            match (wait.refill, root) {
                // From the tick: the root context makes the call (it outlives every request).
                (Some(ask), Some(root)) => {
                    with(|s| s.held.push(held));
                    dispatch(root, &runtime, wait.consumer, ask, now_ms);
                }
                (refill, _) => {
                    with(|s| {
                        s.held.push(Held {
                            pending: refill,
                            ..held
                        })
                    });
                }
            }
        }
    }
}

/// The tick this VM needs: [`SOON`] for refills ahead, [`POLL`] while requests are held, else
/// the idle one.
fn settle() {
    with(|s| {
        let want = if !s.ahead.is_empty() {
            SOON
        } else if !s.held.is_empty() {
            POLL
        } else {
            s.idle_tick
        };
        if s.tick != want {
            s.tick = want;
            set_tick(want);
        }
    });
}

/// The root context's tick: decides every held request again (a refill on another worker may
/// have filled the lease, failed, or died).
#[inline(never)]
pub fn on_tick() {
    if with(|s| s.held.is_empty() && s.ahead.is_empty()).unwrap_or(true) {
        return;
    }
    let Some(now_ms) = super::now_ms() else {
        return;
    };
    let (root, ahead, held) = with(|s| {
        s.current = Some(s.root);
        (
            s.root,
            std::mem::take(&mut s.ahead),
            std::mem::take(&mut s.held),
        )
    })
    .unwrap_or_default();
    for (runtime, consumer, ask) in ahead {
        dispatch(root, &runtime, consumer, ask, now_ms);
    }
    for mut h in held {
        match h.pending.take() {
            Some(ask) => {
                let (runtime, consumer) = (Rc::clone(&h.runtime), h.consumer);
                with(|s| s.held.push(h));
                dispatch(root, &runtime, consumer, ask, now_ms);
            }
            None => resume(h, None, now_ms),
        }
    }
    with(|s| s.current = None);
    settle();
}

/// The RateLimit fields of a request that was resumed from another context.
pub fn fields_of(context: u32) -> Option<RateLimitFields> {
    with(|s| {
        let at = s.fields.iter().position(|(c, _)| *c == context)?;
        Some(s.fields.swap_remove(at).1)
    })
    .flatten()
}

/// A request's context is done: forget it, and give up the calls it made (Envoy cancels
/// them) so that the requests waiting on them take the refill over at once.
#[inline(never)]
pub fn forget(context: u32, now_ms: i64) {
    let orphaned: Vec<Call> = with(|s| {
        s.held.retain(|h| h.context != context);
        s.fields.retain(|(c, _)| *c != context);
        let (orphaned, kept): (Calls, Calls) = std::mem::take(&mut s.calls)
            .into_iter()
            .partition(|(_, c)| c.context == context);
        s.calls = kept;
        orphaned.into_iter().map(|(_, c)| c).collect()
    })
    .unwrap_or_default();
    for call in orphaned {
        if let (Some((terms, _)), Some(who)) = (
            terms(&call.runtime),
            call.runtime.config.consumers.get(call.consumer),
        ) {
            let _ = lease::apply(
                &SharedData::default(),
                &lease::key(&who.name),
                &call.ask,
                &Answer::Abandoned,
                now_ms,
                &terms,
            );
        }
    }
    settle();
}
