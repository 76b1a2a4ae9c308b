//! Fleet mode's requests in waiting: the requests held while a consumer's lease is refilled,
//! the calls to the rate limit service, and their answers. A state machine over a small host
//! trait ([`FleetHost`]: the VM's state, the effective context, the tick, the gRPC call, the
//! request's decision, shared data), so that it runs against a fake host in unit tests; the
//! proxy-wasm side (`host/fleet.rs`) is glue.
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
//!
//! The state is borrowed only for short steps, never across a host call that may run one of
//! this module's entry points again (deciding or resuming a request).

use prost::Message;
use std::rc::Rc;
use std::time::Duration;

use crate::config::{format_utc_offset, Config, Rls};
use crate::decision::{Attempt, DrawAsk, Drawn, Price};
use crate::events::{crossings, Crossing};
use crate::lease::{self, Answer, Applied, Ask, Terms, CLAIM_MARGIN_MS};
use crate::quota::Usage;
use crate::response::RateLimitFields;
use crate::rls::{self, Code};
use crate::store::Store;
use crate::verdict::{Step, Wait};

/// How often held requests look at their lease again (the root context's tick meanwhile).
pub const POLL: Duration = Duration::from_millis(10);
/// The root context's tick while a refill ahead waits to be made.
pub const SOON: Duration = Duration::from_millis(1);

/// What fleet mode counts (`wasmcustom.tollgate.fleet.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Calls made to the rate limit service.
    StoreCalls,
    /// Of them, refills ahead of time.
    RefillsAhead,
    /// Requests held for a refill.
    Held,
}

impl Count {
    pub const NAMES: [&'static str; 3] = [
        "tollgate.fleet.store_calls",
        "tollgate.fleet.refills_ahead",
        "tollgate.fleet.held",
    ];
}

/// What the state machine needs from the host. `Runtime` is the host's per-configuration
/// state; the machine only reads its configuration.
pub trait FleetHost {
    type Runtime;
    type Store: Store;
    fn config(runtime: &Self::Runtime) -> &Config;
    /// Runs `f` on this VM's state; `None` if it is borrowed already.
    fn with<T>(&self, f: impl FnOnce(&mut State<Self::Runtime>) -> T) -> Option<T>;
    /// Makes `context` the one the host runs; false if it is gone.
    fn set_effective_context(&self, context: u32) -> bool;
    /// Resumes the request of the effective context; false if it could not be.
    fn resume_request(&self) -> bool;
    fn set_tick(&self, period: Duration);
    /// Calls the rate limit service's `ShouldRateLimit` through `rls.cluster`, from the
    /// effective context: the call's token, or why it could not be made.
    fn call(&self, rls: &Rls, message: &[u8]) -> Result<u32, String>;
    /// The body of the gRPC answer being handled.
    fn answer(&self, size: usize) -> Vec<u8>;
    /// Decides the request of `context` (the effective one) again and carries the verdict out.
    fn decide(
        &self,
        context: u32,
        runtime: &Rc<Self::Runtime>,
        attempt: &Attempt,
        now_ms: i64,
    ) -> Step;
    fn count(&self, which: Count);
    /// Alert thresholds a grant reached, for the events sink (see [`grant_crossings`]).
    fn alert(&self, runtime: &Rc<Self::Runtime>, crossings: Vec<Crossing>);
    /// Shared data, where the leases are.
    fn store(&self) -> &Self::Store;
    /// Draws on the consumer's prepaid balance for the request of `context` (the effective
    /// one), which waits for the answer in its own context and is then decided again with
    /// it (`attempt` plus [`Attempt::drawn`]).
    fn draw(&self, context: u32, runtime: &Rc<Self::Runtime>, attempt: &Attempt, ask: DrawAsk);
}

/// A request held for a refill.
struct Held<R> {
    context: u32,
    runtime: Rc<R>,
    consumer: usize,
    /// What the request costs, and whether its headers went upstream already (an LLM
    /// request held at its body): every attempt decides the same request.
    price: Price,
    headers_forwarded: bool,
    since_ms: i64,
    deadline_ms: i64,
    /// A refill this request claimed while it was decided again from another request's
    /// callback: made on the next tick, from the root context (a call made from a request's
    /// context is cancelled when that request ends, and its answer lost with the units).
    pending: Option<Ask>,
}

/// A call in flight.
struct Call<R> {
    /// The context the call was made from (its answer is read there).
    context: u32,
    runtime: Rc<R>,
    consumer: usize,
    ask: Ask,
    /// When it was made (ms): a failure after the whole timeout is the timeout.
    started_ms: i64,
}

/// One VM's requests in waiting and calls in flight.
pub struct State<R> {
    root: u32,
    held: Vec<Held<R>>,
    /// Calls in flight, by token (a handful: at most one per consumer being refilled).
    calls: Vec<(u32, Call<R>)>,
    /// RateLimit fields of requests resumed from another context, for their responses.
    fields: Vec<(u32, RateLimitFields)>,
    /// Refills ahead of time to make on the next tick.
    ahead: Vec<(Rc<R>, usize, Ask)>,
    /// The tick period asked for last.
    tick: Duration,
    /// The context the host is running while held requests are decided again from a callback
    /// (calls made then are filed under it).
    current: Option<u32>,
    /// The tick period outside of polling (the metrics flush).
    idle_tick: Duration,
}

impl<R> State<R> {
    pub const fn new() -> State<R> {
        State {
            root: 0,
            held: Vec::new(),
            calls: Vec::new(),
            fields: Vec::new(),
            ahead: Vec::new(),
            tick: Duration::from_secs(1),
            current: None,
            idle_tick: Duration::from_secs(1),
        }
    }

    /// Requests held now (for tests and logs).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Calls in flight now.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }
}

impl<R> Default for State<R> {
    fn default() -> Self {
        State::new()
    }
}

/// The root context's id and its usual tick period (called when it is created).
pub fn set_root<H: FleetHost>(host: &H, context: u32, idle_tick: Duration) {
    host.with(|s| {
        s.root = context;
        s.idle_tick = idle_tick;
    });
}

/// The root context has just set its tick to the idle period (on configuration): set it again
/// to what fleet mode needs, if that is faster.
pub fn retick<H: FleetHost>(host: &H) {
    host.with(|s| s.tick = s.idle_tick);
    settle(host);
}

fn terms(config: &Config) -> Option<(Terms, &Rls)> {
    let rls = config.store.as_ref()?;
    Some((Terms::of(rls, config.utc_offset), rls))
}

/// Holds the request of `context` (paused by the caller after `attempt`), and makes the store
/// call if it claimed the refill.
pub fn hold<H: FleetHost>(
    host: &H,
    context: u32,
    runtime: &Rc<H::Runtime>,
    wait: Wait,
    attempt: &Attempt,
    now_ms: i64,
) {
    let Some((terms, _)) = terms(H::config(runtime)) else {
        return;
    };
    let deadline_ms = now_ms + 2 * (terms.timeout_ms + CLAIM_MARGIN_MS);
    host.count(Count::Held);
    host.with(|s| {
        s.held.push(Held {
            context,
            runtime: Rc::clone(runtime),
            consumer: wait.consumer,
            price: attempt.price,
            headers_forwarded: attempt.headers_forwarded,
            since_ms: now_ms,
            deadline_ms,
            pending: None,
        });
    });
    settle(host);
    if let Some(ask) = wait.refill {
        dispatch(host, context, runtime, wait.consumer, ask, now_ms);
    }
}

/// Refills a consumer's lease ahead of time, for a request that claimed it and goes on: the
/// call is made on the root context's next tick (a call made from the request's context would
/// have its answer dropped once the request is done, and the units with it).
pub fn refill_ahead<H: FleetHost>(host: &H, runtime: &Rc<H::Runtime>, consumer: usize, ask: Ask) {
    host.count(Count::RefillsAhead);
    host.with(|s| s.ahead.push((Rc::clone(runtime), consumer, ask)));
    settle(host);
}

/// The `ShouldRateLimit` request for `ask`: one descriptor per limit of the consumer's plan.
pub fn request(config: &Config, rls: &Rls, consumer: usize, ask: &Ask) -> Option<Vec<u8>> {
    let hits: Vec<(usize, u64)> = ask
        .hits
        .iter()
        .enumerate()
        .filter(|(i, _)| ask.asks(*i))
        .map(|(i, h)| (i, *h))
        .collect();
    if hits.is_empty() {
        return None;
    }
    encode(config, rls, consumer, &hits)
}

/// A `RateLimitRequest` of the consumer's limits at the given indices, each with its hits:
/// one descriptor per limit (the descriptor contract, quotad/README.md).
fn encode(config: &Config, rls: &Rls, consumer: usize, hits: &[(usize, u64)]) -> Option<Vec<u8>> {
    let who = config.consumers.get(consumer)?;
    let plan = config.plan_of(who)?;
    let offset = (config.utc_offset != 0).then(|| format_utc_offset(config.utc_offset));
    let limits: Vec<&crate::config::Limit> = hits
        .iter()
        .filter_map(|(i, _)| plan.limits.get(*i))
        .collect();
    let sizes: Vec<String> = limits.iter().map(|l| l.requests.to_string()).collect();
    let descriptors: Vec<Vec<(&str, &str)>> = limits
        .iter()
        .zip(&sizes)
        .map(|(limit, size)| {
            let mut entries = vec![
                ("consumer", who.name()),
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
    let hits: Vec<u64> = hits.iter().map(|(_, h)| *h).collect();
    Some(rls::encode_request(&rls.domain, &descriptors, &hits))
}

/// The payments API's `Draw` for `ask`: its cost from the consumer's balance, and the limits
/// credits do not stand in for counted by their cost (none: an empty `limits`).
pub fn draw_request(config: &Config, rls: &Rls, ask: &DrawAsk) -> Option<Vec<u8>> {
    let who = config.consumers.get(ask.consumer)?;
    let plan = config.plan_of(who)?;
    let hits: Vec<(usize, u64)> = ask
        .counted(plan)
        .map(|i| (i, ask.usages.get(i).map_or(1, |u| u.cost)))
        .collect();
    let limits = if hits.is_empty() {
        Vec::new()
    } else {
        encode(config, rls, ask.consumer, &hits)?
    };
    Some(
        crate::paywire::DrawRequest {
            domain: rls.domain.clone(),
            consumer: who.name().to_string(),
            cost: ask.cost,
            limits,
        }
        .encode_to_vec(),
    )
}

/// What the store's answer to a draw means for `ask`: `None` if it is not an answer to it.
pub fn drawn_of(ask: DrawAsk, plan: &crate::config::Plan, body: &[u8]) -> Option<Drawn> {
    let answer = crate::paywire::DrawResponse::decode(body).ok()?;
    if answer.used.len() != ask.counted(plan).count() {
        return None;
    }
    Some(Drawn {
        ask,
        drawn: answer.drawn,
        balance: answer.balance,
        used: answer.used,
    })
}

/// Calls the rate limit service for `ask` from `context` (the context the host is running).
fn dispatch<H: FleetHost>(
    host: &H,
    context: u32,
    runtime: &Rc<H::Runtime>,
    consumer: usize,
    ask: Ask,
    now_ms: i64,
) {
    let config = H::config(runtime);
    let Some((_, rls)) = terms(config) else {
        return;
    };
    let Some(message) = request(config, rls, consumer, &ask) else {
        return;
    };
    // The SDK files the call under the context it is running; the host, under the effective
    // one: make them the same.
    host.set_effective_context(context);
    match host.call(rls, &message) {
        Ok(token) => {
            host.count(Count::StoreCalls);
            let name = config.consumers.get(consumer).map_or("?", |c| c.name());
            log::debug!("fleet: asking for {:?} of consumer {name}", ask.hits);
            let call = Call {
                context,
                runtime: Rc::clone(runtime),
                consumer,
                ask,
                started_ms: now_ms,
            };
            host.with(|s| s.calls.push((token, call)));
        }
        Err(why) => {
            let reason = format!(
                "cannot call the rate limit service (cluster {}): {why}",
                rls.cluster
            );
            finish(
                host,
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

/// What a `ShouldRateLimit` answer means for a lease, and why it failed if it did.
fn read_answer(status: u32, body: &[u8]) -> (Answer, Option<String>) {
    if status != 0 {
        let why = format!("the rate limit service answered gRPC status {status}");
        return (Answer::Failed, Some(why));
    }
    match rls::decode_response(body) {
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
}

/// The answer to a call (from the HTTP context that made it, or the root context).
pub fn on_response<H: FleetHost>(host: &H, token: u32, status: u32, size: usize, now_ms: i64) {
    let Some(Some(call)) = host.with(|s| {
        let at = s.calls.iter().position(|(t, _)| *t == token)?;
        Some(s.calls.swap_remove(at).1)
    }) else {
        return;
    };
    // Read where the host put the answer: the context the call was made from.
    host.set_effective_context(call.context);
    let body = if status == 0 {
        host.answer(size)
    } else {
        Vec::new()
    };
    let (read, mut reason) = read_answer(status, &body);
    // Per limit of the plan (the call left out the limits counted here alone).
    let answered = !matches!(read, Answer::Failed);
    let answer = read.spread(&call.ask);
    if answered && answer == Answer::Failed {
        reason = Some("the rate limit service answered for other limits".to_string());
    }
    // Envoy ends a call that outlived its timeout with a status of its own (UNAVAILABLE):
    // say what happened, the service answered nothing.
    let timeout_ms = terms(H::config(&call.runtime)).map_or(i64::MAX, |(t, _)| t.timeout_ms);
    if status != 0 && now_ms.saturating_sub(call.started_ms) >= timeout_ms {
        reason = Some(format!(
            "the rate limit service did not answer within the timeout ({timeout_ms} ms; \
             gRPC status {status} from Envoy)"
        ));
    }
    if let Some(reason) = &reason {
        let name = H::config(&call.runtime)
            .consumers
            .get(call.consumer)
            .map_or("?", |c| c.name());
        log::warn!("fleet: refill of consumer {name} failed: {reason}");
    }
    host.with(|s| s.current = Some(call.context));
    finish(
        host,
        &call.runtime,
        call.consumer,
        &call.ask,
        &answer,
        reason,
        now_ms,
        call.context,
    );
    host.with(|s| s.current = None);
}

/// Puts an answer into the lease, then asks again or decides the held requests again.
#[allow(clippy::too_many_arguments)] // one call's whole context, passed along as it is
fn finish<H: FleetHost>(
    host: &H,
    runtime: &Rc<H::Runtime>,
    consumer: usize,
    ask: &Ask,
    answer: &Answer,
    reason: Option<String>,
    now_ms: i64,
    context: u32,
) {
    let config = H::config(runtime);
    let Some((terms, _)) = terms(config) else {
        return;
    };
    let Some(who) = config.consumers.get(consumer) else {
        return;
    };
    let key = lease::key(who.name());
    let applied = lease::apply(host.store(), &key, ask, answer, now_ms, &terms);
    if let (Ok(Applied::Done), Answer::Granted { left }) = (&applied, answer) {
        let reached = grant_crossings(config, consumer, ask, left, now_ms);
        if !reached.is_empty() {
            host.alert(runtime, reached);
        }
    }
    let failed = match applied {
        Ok(Applied::AskAgain(again)) => {
            dispatch(host, context, runtime, consumer, again, now_ms);
            return;
        }
        // A reply that does not fit the request (statuses for other limits) was stored as a
        // failure by `apply`.
        Ok(Applied::Done) => match answer {
            Answer::Granted { left } | Answer::Over { left }
                if left.is_empty() && terms.lease != 1 =>
            {
                Some(
                    "the rate limit service answered without a status per limit (as Limitador \
                     does): set store.rls.lease to 1 for such a server"
                        .to_string(),
                )
            }
            Answer::Granted { left } | Answer::Over { left }
                if !left.is_empty() && left.len() != ask.windows.len() =>
            {
                Some("the rate limit service answered for other limits".to_string())
            }
            _ => reason,
        },
        Err(error) => Some(format!("cannot record the lease: {}", error.reason())),
    };
    wake(host, runtime, consumer, failed, now_ms);
}

/// The alert thresholds a grant reached: quotad counts every take atomically and answers what
/// is left after it, so each grant is a known range of the window's count, disjoint from every
/// other Envoy's — the one grant whose range holds a threshold's unit number crosses it, once
/// for the whole fleet, without a call of its own. A limit above quotad's 32-bit
/// `limit_remaining` has no known count (`left` saturated): no alert from it. A look (no hits)
/// and an answer without statuses cross nothing.
pub fn grant_crossings(
    config: &Config,
    consumer: usize,
    ask: &Ask,
    left: &[u64],
    now_ms: i64,
) -> Vec<Crossing> {
    let mut out = Vec::new();
    let Some(thresholds) = config
        .consumers
        .get(consumer)
        .and_then(|c| config.events.as_ref()?.alerts.get(c.plan))
        .filter(|t| !t.is_empty())
    else {
        return out;
    };
    if left.len() != ask.windows.len() {
        return out;
    }
    let saturated = u64::from(u32::MAX);
    let usages: Vec<Usage> = ask
        .windows
        .iter()
        .zip(left)
        .enumerate()
        .map(|(i, ((bounds, size), left))| {
            let known = *left < saturated || *size < saturated;
            Usage {
                used: size.saturating_sub(*left),
                requests: *size,
                bounds: *bounds,
                violated: false,
                cost: if known {
                    ask.hits.get(i).copied().unwrap_or(0)
                } else {
                    0
                },
            }
        })
        .collect();
    crossings(
        thresholds,
        consumer,
        &usages,
        now_ms.div_euclid(1000),
        &mut out,
    );
    out
}

/// Decides the held requests of `consumer` again (each in its own context).
fn wake<H: FleetHost>(
    host: &H,
    runtime: &Rc<H::Runtime>,
    consumer: usize,
    failed: Option<String>,
    now_ms: i64,
) {
    let held: Vec<Held<H::Runtime>> = host
        .with(|s| {
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut s.held)
                .into_iter()
                .partition(|h| h.consumer == consumer && Rc::ptr_eq(&h.runtime, runtime));
            s.held = rest;
            mine
        })
        .unwrap_or_default();
    for h in held {
        resume(host, h, failed.clone(), now_ms);
    }
    settle(host);
}

/// Decides one held request again in its own context: forward (resume), answer, or hold on.
fn resume<H: FleetHost>(host: &H, held: Held<H::Runtime>, failed: Option<String>, now_ms: i64) {
    if !host.set_effective_context(held.context) {
        return; // the request is gone
    }
    let failed = failed.or_else(|| {
        (now_ms >= held.deadline_ms)
            .then(|| "no lease from the rate limit service within the timeout".to_string())
    });
    let attempt = Attempt {
        now_ms,
        price: held.price,
        headers_forwarded: held.headers_forwarded,
        waiting_since_ms: Some(held.since_ms),
        failed,
        // A held request was decided once without paying: its payment is not taken now
        // (nobody would start it), and its headers are removed as usual.
        claimed: true,
        ..Attempt::default()
    };
    match host.decide(held.context, &held.runtime, &attempt, now_ms) {
        Step::Continue { fields, refill, .. } => {
            if let Some(fields) = fields {
                host.with(|s| s.fields.push((held.context, fields)));
            }
            if let Some((consumer, ask)) = refill {
                refill_ahead(host, &held.runtime, consumer, ask);
            }
            if !host.resume_request() {
                log::warn!("fleet: a held request could not be resumed");
            }
        }
        // Never a payment (`claimed`).
        Step::Replied | Step::Pay(_) => {}
        // The draw's answer goes to the context whose callback makes the call: the root's
        // (made now, from its tick) or, from another request's callback, that request's — which
        // may be gone by then. So off the root it waits for the root's next tick, held.
        Step::Draw(ask) => {
            let from_root = host.with(|s| s.current == Some(s.root)).unwrap_or(false);
            if from_root {
                host.draw(held.context, &held.runtime, &attempt, ask);
            } else {
                host.with(|s| s.held.push(held));
            }
        }
        Step::Wait(wait) => {
            let runtime = Rc::clone(&held.runtime);
            let root = host
                .with(|s| (s.current == Some(s.root)).then_some(s.root))
                .flatten();
            match (wait.refill, root) {
                // From the tick: the root context makes the call (it outlives every request).
                (Some(ask), Some(root)) => {
                    host.with(|s| s.held.push(held));
                    dispatch(host, root, &runtime, wait.consumer, ask, now_ms);
                }
                (refill, _) => {
                    host.with(|s| {
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
fn settle<H: FleetHost>(host: &H) {
    let change = host
        .with(|s| {
            let want = if !s.ahead.is_empty() {
                SOON
            } else if !s.held.is_empty() {
                POLL
            } else {
                s.idle_tick
            };
            (s.tick != want).then(|| {
                s.tick = want;
                want
            })
        })
        .flatten();
    if let Some(period) = change {
        host.set_tick(period);
    }
}

/// Whether nothing waits (no held request, no refill ahead): the tick has nothing to do.
pub fn idle<H: FleetHost>(host: &H) -> bool {
    host.with(|s| s.held.is_empty() && s.ahead.is_empty())
        .unwrap_or(true)
}

/// The root context's tick: decides every held request again (a refill on another worker may
/// have filled the lease, failed, or died).
pub fn on_tick<H: FleetHost>(host: &H, now_ms: i64) {
    if idle(host) {
        return;
    }
    let (root, ahead, held) = host
        .with(|s| {
            s.current = Some(s.root);
            (
                s.root,
                std::mem::take(&mut s.ahead),
                std::mem::take(&mut s.held),
            )
        })
        .unwrap_or_default();
    for (runtime, consumer, ask) in ahead {
        dispatch(host, root, &runtime, consumer, ask, now_ms);
    }
    for mut h in held {
        match h.pending.take() {
            Some(ask) => {
                let (runtime, consumer) = (Rc::clone(&h.runtime), h.consumer);
                host.with(|s| s.held.push(h));
                dispatch(host, root, &runtime, consumer, ask, now_ms);
            }
            None => resume(host, h, None, now_ms),
        }
    }
    host.with(|s| s.current = None);
    settle(host);
}

/// The RateLimit fields of a request that was resumed from another context.
pub fn fields_of<H: FleetHost>(host: &H, context: u32) -> Option<RateLimitFields> {
    host.with(|s| {
        let at = s.fields.iter().position(|(c, _)| *c == context)?;
        Some(s.fields.swap_remove(at).1)
    })
    .flatten()
}

/// A request's context is done: forget it, and give up the calls it made (Envoy cancels
/// them) so that the requests waiting on them take the refill over at once.
pub fn forget<H: FleetHost>(host: &H, context: u32, now_ms: i64) {
    let orphaned: Vec<Call<H::Runtime>> = host
        .with(|s| {
            s.held.retain(|h| h.context != context);
            s.fields.retain(|(c, _)| *c != context);
            let (orphaned, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut s.calls)
                .into_iter()
                .partition(|(_, c)| c.context == context);
            s.calls = kept;
            orphaned.into_iter().map(|(_, c)| c).collect()
        })
        .unwrap_or_default();
    for call in orphaned {
        let config = H::config(&call.runtime);
        if let (Some((terms, _)), Some(who)) = (terms(config), config.consumers.get(call.consumer))
        {
            let _ = lease::apply(
                host.store(),
                &lease::key(who.name()),
                &call.ask,
                &Answer::Abandoned,
                now_ms,
                &terms,
            );
        }
    }
    settle(host);
}

#[cfg(test)]
mod tests;
