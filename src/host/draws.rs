//! Fleet mode's draws on a consumer's prepaid balance, host side: the payments API's `Draw`
//! for a request that only limits credits stand in for refuse. The call is made with the
//! request's own context effective (Envoy keeps it, and its answer, there); the SDK hands the
//! answer to the context whose callback made the call — the request's, or the root's when the
//! request was decided from its tick or after a settlement — and either passes it here by its
//! token. The request is then decided again with it ([`Attempt::drawn`]), in its own context
//! made effective. A request that goes away first loses the answer: what it drew is spent,
//! like a counted request whose client left.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;

use super::held::{put_entry, take_entry};
use super::request::run;
use super::runtime::Runtime;
use crate::decision::{Attempt, DrawAsk};
use crate::paywire;
use crate::response::RateLimitFields;
use crate::verdict::Step;

#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
}

/// A draw in flight, by the request's context and the call's token.
struct Drawing {
    context: u32,
    token: u32,
    /// Past this time (ms) the call is given up: a store error.
    deadline_ms: i64,
    runtime: Rc<Runtime>,
    attempt: Attempt,
    ask: DrawAsk,
}

thread_local! {
    static DRAWING: RefCell<Vec<Drawing>> = const { RefCell::new(Vec::new()) };
    /// The RateLimit fields of a request admitted by a draw, for its response.
    static FIELDS: RefCell<Vec<(u32, RateLimitFields)>> = const { RefCell::new(Vec::new()) };
}

/// Draws for the request of `context` (made the effective context). `None`: the call is made
/// and the request waits for its answer; else the decision already made (the call could not
/// be: a store error, decided by `on_store_error`).
pub fn start(context: u32, runtime: &Rc<Runtime>, attempt: &Attempt, ask: DrawAsk) -> Option<Step> {
    let config = &runtime.config;
    let message = config
        .store
        .as_ref()
        .and_then(|rls| Some((rls, crate::fleet::draw_request(config, rls, &ask)?)));
    // SAFETY: plain integer argument.
    let _ = unsafe { proxy_set_effective_context(context) };
    let now_ms = attempt.now_ms;
    let failed = match message {
        None => "the draw could not be made (no consumer or store)".to_string(),
        Some((rls, message)) => match hostcalls::dispatch_grpc_call(
            &rls.cluster,
            paywire::SERVICE,
            paywire::DRAW,
            Vec::new(),
            Some(&message),
            Duration::from_millis(rls.timeout_ms),
        ) {
            Ok(token) => {
                let timeout = i64::try_from(rls.timeout_ms).unwrap_or(i64::MAX);
                put_entry(
                    &DRAWING,
                    Drawing {
                        context,
                        token,
                        deadline_ms: now_ms.saturating_add(timeout).saturating_add(2_000),
                        runtime: Rc::clone(runtime),
                        attempt: attempt.clone(),
                        ask,
                    },
                );
                return None;
            }
            Err(status) => format!(
                "cannot call the payments API (cluster {}): {status:?}",
                rls.cluster
            ),
        },
    };
    log::warn!("fleet: a draw on prepaid credits failed: {failed}");
    let attempt = Attempt {
        failed: Some(failed),
        ..attempt.clone()
    };
    Some(run(runtime, &attempt, now_ms))
}

/// [`start`] for a request decided from another context (the root's): a decision made at once
/// resumes it (or it was answered).
pub fn start_held(context: u32, runtime: &Rc<Runtime>, attempt: &Attempt, ask: DrawAsk) {
    if let Some(Step::Continue { .. }) = start(context, runtime, attempt, ask) {
        // SAFETY: plain integer argument (0: the HTTP request stream).
        if unsafe { proxy_continue_stream(0) } != 0 {
            log::warn!("fleet: a request could not be resumed");
        }
    }
}

/// The answer to a call, if it is a draw's (then `true`), handled from the context `caller`
/// (the one whose callback this is, made effective again at the end): the request is decided
/// again with what the draw answered (a failed call: a store error) and resumed or answered.
pub fn on_answer(caller: u32, token: u32, status: u32, size: usize, now_ms: i64) -> bool {
    let Some(drawing) = take_entry(&DRAWING, |d| d.token == token) else {
        return false;
    };
    let context = drawing.context;
    // SAFETY: plain integer arguments.
    if unsafe { proxy_set_effective_context(context) } != 0 {
        // The request is gone.
        let _ = unsafe { proxy_set_effective_context(caller) };
        return true;
    }
    let config = &drawing.runtime.config;
    let plan = config
        .consumers
        .get(drawing.ask.consumer)
        .and_then(|c| config.plan_of(c));
    // Read where Envoy put the answer: the request's context.
    let body = super::buffers::grpc_answer(status, size);
    let status = if body.is_none() && status == 0 {
        14
    } else {
        status
    };
    let body = body.unwrap_or_default();
    let mut attempt = drawing.attempt;
    attempt.now_ms = now_ms;
    match plan.and_then(|p| crate::fleet::drawn_of(drawing.ask, p, &body)) {
        Some(drawn) if status == 0 => attempt.drawn = Some(drawn),
        _ => {
            let why = format!("the payments API's draw failed (gRPC status {status})");
            log::warn!("fleet: {why}");
            attempt.failed = Some(why);
        }
    }
    match run(&drawing.runtime, &attempt, now_ms) {
        Step::Continue { fields, .. } => {
            if let Some(fields) = fields {
                put_entry(&FIELDS, (context, fields));
            }
            // SAFETY: plain integer argument (0: the HTTP request stream).
            if unsafe { proxy_continue_stream(0) } != 0 {
                log::warn!("fleet: a request admitted by a draw could not be resumed");
            }
        }
        Step::Replied => {}
        // A draw's answer decides: never a wait, a payment or another draw.
        Step::Wait(_) | Step::Pay(_) | Step::Draw(_) => {
            super::request::unavailable("tollgate could not decide the request\n");
        }
    }
    // SAFETY: plain integer argument.
    let _ = unsafe { proxy_set_effective_context(caller) };
    true
}

/// The root context `root`'s tick: draws past their deadline (an answer Envoy never
/// delivered) decide their requests as store errors.
pub fn on_tick(root: u32, now_ms: i64) {
    let overdue: Vec<u32> = DRAWING.with(|d| {
        d.try_borrow()
            .map(|d| {
                d.iter()
                    .filter(|d| d.deadline_ms < now_ms)
                    .map(|d| d.token)
                    .collect()
            })
            .unwrap_or_default()
    });
    for token in overdue {
        // Envoy's own status for a call past its timeout.
        on_answer(root, token, 4, 0, now_ms);
    }
}

/// Whether draws are in flight (the root's tick sweeps them).
pub fn busy() -> bool {
    DRAWING.with(|d| d.try_borrow().is_ok_and(|d| !d.is_empty()))
}

/// The RateLimit fields of a request a draw admitted, once.
pub fn take_fields(context: u32) -> Option<RateLimitFields> {
    take_entry(&FIELDS, |(c, _)| *c == context).map(|(_, f)| f)
}

/// The request of `context` is done: a draw's answer is nobody's.
pub fn forget(context: u32) {
    while take_entry(&DRAWING, |d| d.context == context).is_some() {}
    let _ = take_fields(context);
}
