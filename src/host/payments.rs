//! Payments, host side: the `/verify` and `/settle` calls of a request that carries a payment,
//! and what their answers make of the request (paused meanwhile). What an answer means, and the
//! claim's states, are [`crate::payments`].
//!
//! `/verify` is called from the request's own HTTP context: if the request goes away, its answer
//! is lost with it, and nothing happened to the money. `/settle` is called by the root context
//! (queued by the request, dispatched on the root's next tick, which is fast while settlements
//! wait): the SDK hands the answer to whoever made the call, and a request's context that is
//! gone would lose it — and with it a payment that moved money. The root credits the payment
//! whatever became of the request, then answers or resumes the request if it is still there.
//!
//! Fleet mode keeps claims and balances in the store (quotad's payments API): the root makes
//! every call of a payment, one after the other — `Claim`, `/verify`, `Mark SETTLING`,
//! `/settle`, `Credit` — so that none is lost with a request that goes away; the request
//! waits, and is answered or decided again by the root as in local mode.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};

use super::buffers;
use super::held::{put_entry, take_entry};
use super::metrics::{bump, define_counter};
use super::request::{run, send};
use super::runtime::Runtime;
use super::shared_data::SharedData;
use crate::decision::{Attempt, Caller, Price};
use crate::payments::{self as core, Pay, Settled, State, Verified};
use crate::paywire;
use crate::response::{PAYMENT_PENDING, PAYMENT_UNRESOLVED};
use crate::verdict::Step;
use prost::Message;

#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
}

/// The root's tick while settlements wait to be dispatched or answered.
const FAST_TICK_MS: u32 = 10;

/// A call the root context `root` makes for the payment of the request of `context`.
struct Queued {
    root: u32,
    context: u32,
    runtime: Rc<Runtime>,
    pay: Pay,
    price: Price,
    store: SharedData,
    job: Job,
    /// Not made before this time (ms): a credit tried again.
    retry_at: i64,
}

/// Which call (fleet mode makes them all from the root; local mode only the settlement).
#[derive(Clone)]
enum Job {
    /// Look up the payment's claim in the store under its `look` keys, from `next` (a payment
    /// this request would turn away: decided by its claim if one is under way).
    Look { next: usize },
    /// Claim the payment in the store.
    Claim,
    /// `/verify`.
    Verify,
    /// Mark the claim SETTLING in the store, before the money can move.
    Settling,
    /// `/settle`.
    Settle,
    /// Credit the settled payment in the store (`tries` made so far).
    Credit {
        transaction: String,
        response: crate::x402::SettleResponse,
        tries: u32,
    },
}

/// A credit the store did not confirm is tried again this many times, further apart each
/// time (1 s, 2 s, 4 s, … 30 s: about five minutes), then left to the operator.
const CREDIT_TRIES: u32 = 12;

// Per VM (one thread): settlements waiting for the root's tick, those in flight (by token),
// and what a resumed paid request adds to its response (its `PAYMENT-RESPONSE` and RateLimit
// fields), picked up by its own context.
thread_local! {
    static QUEUED: RefCell<Vec<Queued>> = const { RefCell::new(Vec::new()) };
    /// By token, with the time (ms) past which the call is given up.
    static IN_FLIGHT: RefCell<Vec<(u32, i64, Queued)>> = const { RefCell::new(Vec::new()) };
    static PAID: RefCell<Vec<(u32, Paid)>> = const { RefCell::new(Vec::new()) };
    /// The roots whose tick is fast (several roots share a VM across a configuration push).
    static FAST: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// The requests waiting for a settlement: only those are answered or resumed by a root.
    static WAITING: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// What a paid request that goes on adds to its response.
pub struct Paid {
    /// `PAYMENT-RESPONSE` or `Payment-Receipt` (none for a replay of a settled payment).
    pub header: Option<(&'static str, String)>,
    pub fields: Option<crate::response::RateLimitFields>,
}

/// tollgate's payment counters (`wasmcustom.tollgate.payments.*`), defined on first use.
#[derive(Debug, Clone, Copy)]
enum Count {
    /// Payments settled and credited.
    Settled = 0,
    /// Credits those payments added.
    Credits = 1,
    /// Payments the facilitator refused.
    Refused = 2,
    /// Settlements whose outcome is unknown (503).
    Unknown = 3,
    /// Unknown settlements that cannot be confirmed (409, for the operator).
    Unresolved = 4,
    /// Calls the facilitator did not answer usably (timeouts, 5xx, cut).
    Unavailable = 5,
}

const COUNT_NAMES: [&str; 6] = [
    "tollgate.payments.settled",
    "tollgate.payments.credits",
    "tollgate.payments.refused",
    "tollgate.payments.unknown",
    "tollgate.payments.unresolved",
    "tollgate.payments.facilitator_unavailable",
];

thread_local! {
    static COUNTERS: RefCell<[Option<Option<u32>>; 6]> = const { RefCell::new([None; 6]) };
}

/// Defines every payment counter (a configuration that sells credits).
pub fn define_counters() {
    for which in [
        Count::Settled,
        Count::Credits,
        Count::Refused,
        Count::Unknown,
        Count::Unresolved,
        Count::Unavailable,
    ] {
        count(which, 0);
    }
}

fn count(which: Count, by: u64) {
    let index = which as usize;
    let id = COUNTERS.with(|ids| {
        let mut ids = ids.try_borrow_mut().ok()?;
        let slot = ids.get_mut(index)?;
        *slot.get_or_insert_with(|| define_counter(COUNT_NAMES.get(index)?))
    });
    bump(id, usize::try_from(by).unwrap_or(usize::MAX));
}

/// Which call a paying request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Verify,
    Settle,
}

/// A request held for its payment: its `/verify` call (`token`), or its settlement by the root
/// (`Settle`, token 0: the root answers or resumes it).
pub struct Paying {
    pub pay: Pay,
    pub stage: Stage,
    pub token: u32,
    /// What the request costs (its route's), for its decision once paid.
    pub price: Price,
}

/// Seconds a client is told to wait when a payment's outcome is not known yet.
const RETRY_UNKNOWN: u64 = 5;

fn caller_of<'c>(runtime: &'c Runtime, pay: &Pay) -> Option<Caller<'c>> {
    let consumer = runtime.config.consumers.get(pay.consumer)?;
    let plan = runtime.config.plan_of(consumer)?;
    Some(Caller { consumer, plan })
}

/// Replies to the paying request (its claim already set): `kind` a payment problem type.
fn reply(runtime: &Runtime, pay: &Pay, kind: &'static str, detail: String, retry: Option<u64>) {
    let (Some(payments), Some(caller)) = (&runtime.config.payments, caller_of(runtime, pay)) else {
        super::request::unavailable("tollgate lost the payment's configuration\n");
        return;
    };
    let now = super::clock::now().unwrap_or_default();
    send(&core::reply(payments, &caller, kind, detail, retry, now));
}

/// Asks the facilitator which kinds of payment it settles (from the root, when a configuration
/// is loaded): the call's token.
pub fn check_supported(runtime: &Runtime) -> Option<u32> {
    let payments = runtime.config.payments.as_ref()?;
    let path = format!("{}/supported", payments.base_path);
    let mut headers = vec![
        (":method", "GET"),
        (":path", path.as_str()),
        (":authority", payments.authority.as_str()),
    ];
    if let Some(auth) = &payments.authorization {
        headers.push(("authorization", &auth.0));
    }
    hostcalls::dispatch_http_call(
        &payments.cluster,
        headers,
        None,
        vec![],
        Duration::from_millis(payments.timeout_ms),
    )
    .map_err(|status| {
        log::warn!(
            "payments: cannot ask the facilitator what it supports (cluster `{}`): {status:?}",
            payments.cluster
        )
    })
    .ok()
}

/// The facilitator's `/supported` answer: a warning per offer it cannot settle (payments for
/// them would fail), or that it could not be checked.
pub fn on_supported(runtime: &Runtime, num_headers: usize, body_size: usize) {
    let Some(payments) = runtime.config.payments.as_ref() else {
        return;
    };
    let (status, body) = answer(num_headers, body_size);
    match core::unsupported(payments, status, &body) {
        Ok(lines) if lines.is_empty() => {
            log::info!("payments: the facilitator supports every pack");
        }
        Ok(lines) => {
            for line in lines {
                log::warn!("payments: {line}: payments for it will be refused");
            }
        }
        Err(why) => log::warn!(
            "payments: could not check what the facilitator supports (GET {}/supported): {why}",
            payments.base_path
        ),
    }
}

/// Makes the call of `stage` for `pay`; `None` if it could not be made.
pub fn call(runtime: &Runtime, pay: &Pay, stage: Stage) -> Option<u32> {
    let payments = runtime.config.payments.as_ref()?;
    let path = match stage {
        Stage::Verify => format!("{}/verify", payments.base_path),
        Stage::Settle => format!("{}/settle", payments.base_path),
    };
    let mut headers = vec![
        (":method", "POST"),
        (":path", path.as_str()),
        (":authority", payments.authority.as_str()),
        ("content-type", "application/json"),
    ];
    if let Some(auth) = &payments.authorization {
        headers.push(("authorization", &auth.0));
    }
    match hostcalls::dispatch_http_call(
        &payments.cluster,
        headers,
        Some(&pay.presented.call_body),
        vec![],
        Duration::from_millis(payments.timeout_ms),
    ) {
        Ok(token) => Some(token),
        Err(status) => {
            log::error!(
                "payments: cannot call the facilitator (cluster `{}`): {status:?}",
                payments.cluster
            );
            None
        }
    }
}

/// Starts a claimed payment's calls for the request of `context`: `Some` (hold the request)
/// or `None` (replied).
pub fn start(
    root: u32,
    context: u32,
    runtime: &Rc<Runtime>,
    pay: Pay,
    price: Price,
    store: &SharedData,
    now_ms: i64,
) -> Option<Paying> {
    if pay.remote || !pay.verify {
        // Fleet mode: claimed first, by the root. A retry of an unknown settlement: settled
        // again, by the root.
        let job = match (pay.remote, pay.look.is_empty()) {
            (true, false) => Job::Look { next: 0 },
            (true, true) => Job::Claim,
            (false, _) => Job::Settle,
        };
        queue(root, context, runtime, pay.clone(), price, *store, job);
        return Some(Paying {
            pay,
            stage: Stage::Settle,
            token: 0,
            price,
        });
    }
    match call(runtime, &pay, Stage::Verify) {
        Some(token) => Some(Paying {
            pay,
            stage: Stage::Verify,
            token,
            price,
        }),
        None => {
            // Nothing was asked: the payment may be presented again.
            let _ = core::mark(store, &pay.presented.replay, None, now_ms);
            reply(
                runtime,
                &pay,
                PAYMENT_PENDING,
                "The payment facilitator cannot be reached; try again shortly.".into(),
                Some(RETRY_UNKNOWN),
            );
            None
        }
    }
}

/// The answer's status (`None`: no answer: a timeout, a reset) and body.
fn answer(num_headers: usize, body_size: usize) -> (Option<u16>, Vec<u8>) {
    if num_headers == 0 {
        return (None, Vec::new());
    }
    let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok());
    let body = if body_size > 0 && body_size <= 64 * 1024 {
        buffers::get(BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default()
    } else {
        Vec::new()
    };
    (status, body)
}

/// What became of a paying request after its `/verify` answer.
pub enum Next {
    /// Still held: its settlement is queued for the root.
    Held(Paying),
    /// Replied.
    Done,
}

/// The facilitator answered the `/verify` call of `paying`, made from the request's context.
#[allow(clippy::too_many_arguments)] // the request (its root, context, runtime) and the answer
pub fn on_verify_answer(
    root: u32,
    context: u32,
    runtime: &Rc<Runtime>,
    paying: Paying,
    store: &SharedData,
    num_headers: usize,
    body_size: usize,
    now_ms: i64,
) -> Next {
    let (status, body) = answer(num_headers, body_size);
    let Paying { pay, price, .. } = paying;
    let replay = pay.presented.replay.clone();
    let mark = |state: Option<State>| {
        if let Err(e) = core::mark(store, &replay, state, now_ms) {
            log::error!("payments: cannot record a payment's state: {}", e.reason());
        }
    };
    match core::verified(status, &body) {
        Verified::Valid => {
            // Settled only once the claim says so: a settlement the claim does not know of
            // could be verified and settled again by another request.
            if let Err(e) = core::mark(store, &replay, Some(State::Settling), now_ms) {
                log::warn!(
                    "payments: a payment's claim could not be marked: {}",
                    e.reason()
                );
                mark(None);
                reply(
                    runtime,
                    &pay,
                    PAYMENT_PENDING,
                    "The payment cannot be settled now; try again shortly.".into(),
                    Some(RETRY_UNKNOWN),
                );
                return Next::Done;
            }
            queue(
                root,
                context,
                runtime,
                pay.clone(),
                price,
                *store,
                Job::Settle,
            );
            Next::Held(Paying {
                pay,
                stage: Stage::Settle,
                token: 0,
                price,
            })
        }
        Verified::Invalid(why) => {
            count(Count::Refused, 1);
            mark(Some(State::Failed));
            log::info!("payments: a payment was refused by the facilitator ({why})");
            reply(runtime, &pay, pay.presented.refused(), why, None);
            Next::Done
        }
        Verified::Unavailable(why) => {
            count(Count::Unavailable, 1);
            mark(None);
            log::warn!("payments: verify failed: {why}");
            reply(
                runtime,
                &pay,
                PAYMENT_PENDING,
                "The payment could not be verified now; try again shortly.".into(),
                Some(RETRY_UNKNOWN),
            );
            Next::Done
        }
    }
}

/// Queues a call for the request's root context, and makes its tick fast until it is
/// answered.
fn queue(
    root: u32,
    context: u32,
    runtime: &Rc<Runtime>,
    pay: Pay,
    price: Price,
    store: SharedData,
    job: Job,
) {
    put_entry(&WAITING, context);
    put_entry(
        &QUEUED,
        Queued {
            root,
            context,
            runtime: Rc::clone(runtime),
            pay,
            price,
            store,
            job,
            retry_at: 0,
        },
    );
    let fast = FAST.with(|f| f.try_borrow().is_ok_and(|f| f.contains(&root)));
    if !fast {
        put_entry(&FAST, root);
        // SAFETY: plain integer argument (the tick of this request's root).
        let _ = unsafe { proxy_set_tick_period_milliseconds(FAST_TICK_MS) };
    }
}

/// Whether root `root` has a fast tick for settlements (queued or in flight).
pub fn busy(root: u32) -> bool {
    FAST.with(|f| f.try_borrow().is_ok_and(|f| f.contains(&root)))
}

/// Whether root `root` has settlements queued or in flight.
pub fn pending(root: u32) -> bool {
    QUEUED.with(|q| {
        q.try_borrow()
            .is_ok_and(|q| q.iter().any(|e| e.root == root))
    }) || IN_FLIGHT.with(|f| {
        f.try_borrow()
            .is_ok_and(|f| f.iter().any(|(_, _, e)| e.root == root))
    })
}

/// Root `root`'s tick (and its stop): makes its queued calls (it owns their answers) and
/// gives up those overdue (a settlement's claim stays SETTLING: the same payment settles again
/// once stale). Returns whether its tick may go back to its usual period. Leaves `root` the
/// effective context.
#[inline(never)]
pub fn on_tick(root: u32, now_ms: i64) -> bool {
    let mine: Vec<Queued> = QUEUED.with(|q| {
        let Ok(mut q) = q.try_borrow_mut() else {
            return Vec::new();
        };
        let (mine, others) = std::mem::take(&mut *q)
            .into_iter()
            .partition(|e| e.root == root && e.retry_at <= now_ms);
        *q = others;
        mine
    });
    for q in mine {
        dispatch(q, now_ms);
    }
    let overdue: Vec<(u32, i64, Queued)> = IN_FLIGHT.with(|f| {
        let Ok(mut f) = f.try_borrow_mut() else {
            return Vec::new();
        };
        let (late, rest) = std::mem::take(&mut *f)
            .into_iter()
            .partition(|(_, deadline, e)| e.root == root && *deadline < now_ms);
        *f = rest;
        late
    });
    for (_, _, q) in overdue {
        failed(q, "no answer in time".into(), now_ms);
    }
    become_root(root);
    let idle = !pending(root);
    if idle {
        let _ = take_entry(&FAST, |r| *r == root);
    }
    idle
}

/// How long a SETTLING claim is not taken over in fleet mode (ms): past the settlement's
/// timeout and every try of its credit (their delays and the store's timeouts), so that a copy
/// sent meanwhile waits instead of settling the payment again (which a facilitator refuses:
/// "nonce used", then a false 409). At least [`paywire::SETTLING_STALE_MS`].
fn settling_horizon(runtime: &Runtime) -> i64 {
    let settle = runtime.config.payments.as_ref().map_or(0, |p| p.timeout_ms);
    let store = runtime.config.store.as_ref().map_or(0, |r| r.timeout_ms);
    let delays: u64 = (0..CREDIT_TRIES)
        .map(|t| credit_delay_ms(t).unsigned_abs())
        .sum();
    let tries = u64::from(CREDIT_TRIES).saturating_mul(store.saturating_add(2_000));
    let ms = settle
        .saturating_add(delays)
        .saturating_add(tries)
        .saturating_add(60_000);
    i64::try_from(ms)
        .unwrap_or(i64::MAX)
        .clamp(paywire::SETTLING_STALE_MS, paywire::MAX_STALE_MS)
}

/// The delay before the credit's try after try `tries` (ms): 1 s, 2 s, 4 s, … at most 30 s.
fn credit_delay_ms(tries: u32) -> i64 {
    1_000_i64.saturating_mul(1 << tries.min(5)).min(30_000)
}

/// Calls the payments API of the store (fleet mode) from the effective context.
fn store_call(runtime: &Runtime, method: &str, message: &[u8]) -> Result<u32, String> {
    let Some(rls) = &runtime.config.store else {
        return Err("no store is configured".into());
    };
    hostcalls::dispatch_grpc_call(
        &rls.cluster,
        paywire::SERVICE,
        method,
        Vec::new(),
        Some(message),
        Duration::from_millis(rls.timeout_ms),
    )
    .map_err(|status| {
        format!(
            "cannot call the payments API (cluster {}): {status:?}",
            rls.cluster
        )
    })
}

fn domain(runtime: &Runtime) -> String {
    runtime
        .config
        .store
        .as_ref()
        .map_or_else(String::new, |r| r.domain.clone())
}

fn consumer_name(runtime: &Runtime, pay: &Pay) -> String {
    runtime
        .config
        .consumers
        .get(pay.consumer)
        .map_or_else(|| "?".to_string(), |c| c.name().to_string())
}

/// Makes the call of `q`'s job from its root context.
fn dispatch(q: Queued, now_ms: i64) {
    become_root(q.root);
    let runtime = Rc::clone(&q.runtime);
    let replay = q.pay.presented.replay.clone();
    let made = match &q.job {
        Job::Look { next } => {
            let message = paywire::ClaimRequest {
                domain: domain(&runtime),
                consumer: consumer_name(&runtime, &q.pay),
                replay: q.pay.look.get(*next).cloned().unwrap_or_default(),
                stale_ms: runtime.config.payments.as_ref().map_or(1, core::stale_ms),
                look: true,
                ..paywire::ClaimRequest::default()
            };
            store_call(&runtime, paywire::CLAIM, &message.encode_to_vec())
        }
        Job::Claim => {
            let stale = runtime.config.payments.as_ref().map_or(0, core::stale_ms);
            // Within what the store keeps (an authorization valid for longer is untimely).
            let keep = core::keep_until(&q.pay.presented, now_ms, stale).min(
                now_ms
                    .div_euclid(1000)
                    .saturating_add(paywire::MAX_KEEP_SECONDS - 600),
            );
            let message = paywire::ClaimRequest {
                domain: domain(&runtime),
                consumer: consumer_name(&runtime, &q.pay),
                replay,
                keep_until: keep,
                stale_ms: stale,
                untimely: q.pay.presented.untimely.is_some(),
                look: false,
                settling_stale_ms: settling_horizon(&runtime).max(stale),
            };
            store_call(&runtime, paywire::CLAIM, &message.encode_to_vec())
        }
        Job::Settling => {
            let message = paywire::MarkRequest {
                domain: domain(&runtime),
                replay,
                state: paywire::ClaimState::Settling as i32,
            };
            store_call(&runtime, paywire::MARK, &message.encode_to_vec())
        }
        Job::Credit { transaction, .. } => {
            let credits = runtime
                .config
                .payments
                .as_ref()
                .and_then(|p| p.packs.get(q.pay.presented.pack))
                .map_or(0, |p| p.credits);
            let message = paywire::CreditRequest {
                domain: domain(&runtime),
                consumer: consumer_name(&runtime, &q.pay),
                replay,
                credits,
                ledger: core::ledger_key(&q.pay.presented.network, transaction),
            };
            store_call(&runtime, paywire::CREDIT, &message.encode_to_vec())
        }
        Job::Verify => call(&runtime, &q.pay, Stage::Verify).ok_or_else(String::new),
        Job::Settle => call(&runtime, &q.pay, Stage::Settle).ok_or_else(String::new),
    };
    match made {
        Ok(token) => {
            let timeout = match &q.job {
                Job::Verify | Job::Settle => {
                    runtime.config.payments.as_ref().map_or(0, |p| p.timeout_ms)
                }
                _ => runtime.config.store.as_ref().map_or(0, |r| r.timeout_ms),
            };
            let deadline = now_ms
                .saturating_add(i64::try_from(timeout).unwrap_or(i64::MAX))
                .saturating_add(2_000);
            put_entry(&IN_FLIGHT, (token, deadline, q));
        }
        Err(why) => {
            if !why.is_empty() {
                log::error!("payments: {why}");
            }
            failed(q, "the call could not be made".into(), now_ms);
        }
    }
}

/// A call of `q`'s job that was not made, or not answered usably (`why`): what that leaves of
/// the payment, and the request's answer.
fn failed(q: Queued, why: String, now_ms: i64) {
    let pending = |detail: &str| {
        respond(&q, PAYMENT_PENDING, detail.into(), Some(RETRY_UNKNOWN));
    };
    match &q.job {
        // Nothing was claimed, or nothing moved the money: the payment may be presented again.
        // (A look that failed may have missed a claim under way: never a fresh 402 then.)
        Job::Claim | Job::Look { .. } => {
            log::warn!("payments: a payment could not be claimed in the store: {why}");
            pending(core::NOT_TAKEN);
        }
        Job::Verify | Job::Settling => {
            count(Count::Unavailable, u64::from(matches!(q.job, Job::Verify)));
            log::warn!("payments: a payment could not be verified or marked: {why}");
            set_state(&q, None, now_ms);
            pending("The payment could not be verified now; try again shortly.");
        }
        Job::Settle => {
            count(Count::Unavailable, 1);
            // A settlement that was never sent moved no money: a first one's claim is dropped
            // (the payment may be presented again), a retry's stays unknown. One sent and not
            // answered stays SETTLING: settled again once stale.
            if why == "no answer in time" {
                log::warn!(
                    "payments: a settlement got no answer in time; its claim stays settling"
                );
                pending(
                    "The payment's settlement is not confirmed yet; send the same payment again \
                     shortly (do not pay again).",
                );
            } else {
                let state = if q.pay.verify {
                    None
                } else {
                    Some(State::Unknown)
                };
                set_state(&q, state, now_ms);
                pending("The payment facilitator cannot be reached; try again shortly.");
            }
        }
        Job::Credit {
            transaction,
            response,
            tries,
        } => {
            let consumer = consumer_name(&q.runtime, &q.pay);
            if *tries + 1 >= CREDIT_TRIES {
                count(Count::Unresolved, 1);
                respond(
                    &q,
                    PAYMENT_UNRESOLVED,
                    "The payment was settled but cannot be credited; contact the API's operator \
                     (do not pay again)."
                        .into(),
                    None,
                );
                log::error!(
                    "payments: consumer={consumer}: a settled payment could not be credited in \
                     the store ({why}); resolve it by hand (network {}, transaction \
                     {transaction}, replay key {})",
                    q.pay.presented.network,
                    q.pay.presented.replay
                );
                set_state(&q, Some(State::Unknown), now_ms);
            } else {
                log::warn!(
                    "payments: consumer={consumer}: a settled payment is not credited yet \
                     ({why}); trying again (transaction {transaction})"
                );
                pending(core::NOT_CREDITED_YET);
                let delay = credit_delay_ms(*tries);
                let again = Queued {
                    job: Job::Credit {
                        transaction: transaction.clone(),
                        response: response.clone(),
                        tries: tries + 1,
                    },
                    retry_at: now_ms.saturating_add(delay),
                    root: q.root,
                    context: q.context,
                    runtime: Rc::clone(&q.runtime),
                    pay: q.pay.clone(),
                    price: q.price,
                    store: q.store,
                };
                // The request was answered: the credit goes on without it.
                let _ = take_entry(&WAITING, |c| *c == q.context);
                put_entry(&QUEUED, again);
                return;
            }
        }
    }
    let _ = take_entry(&WAITING, |c| *c == q.context);
    become_root(q.root);
}

/// Answers the request of `q`, if it is still there and waiting (then the root is made the
/// effective context again).
fn respond(q: &Queued, kind: &'static str, detail: String, retry: Option<u64>) {
    if alive(q.context) {
        reply(&q.runtime, &q.pay, kind, detail, retry);
    }
    become_root(q.root);
}

/// Sets the state of `q`'s claim (`None`: drops it): in shared data, or (fleet mode) in the
/// store, without waiting for the answer.
fn set_state(q: &Queued, state: Option<State>, now_ms: i64) {
    let replay = &q.pay.presented.replay;
    if q.runtime.config.store.is_none() {
        if let Err(e) = core::mark(&q.store, replay, state, now_ms) {
            log::error!("payments: cannot record a payment's state: {}", e.reason());
        }
        return;
    }
    become_root(q.root);
    let message = paywire::MarkRequest {
        domain: domain(&q.runtime),
        replay: replay.clone(),
        state: core::wire_state(state) as i32,
    };
    if let Err(why) = store_call(&q.runtime, paywire::MARK, &message.encode_to_vec()) {
        log::error!("payments: cannot record a payment's state: {why}");
    }
}

/// Whether `token` is a call a root made for a payment.
pub fn owns(token: u32) -> bool {
    IN_FLIGHT.with(|f| {
        f.try_borrow()
            .is_ok_and(|f| f.iter().any(|(t, _, _)| *t == token))
    })
}

/// Makes the request of `context` the effective one, if it is still there and waiting for its
/// settlement.
fn alive(context: u32) -> bool {
    let waiting = WAITING.with(|w| w.try_borrow().is_ok_and(|w| w.contains(&context)));
    // SAFETY: plain integer argument.
    waiting && unsafe { proxy_set_effective_context(context) == 0 }
}

/// Makes root `root` the effective context again (after acting on a request's).
fn become_root(root: u32) {
    // SAFETY: plain integer argument.
    let _ = unsafe { proxy_set_effective_context(root) };
}

/// A paying request is done: no root acts on it any more.
pub fn forget(context: u32) {
    let _ = take_entry(&WAITING, |c| *c == context);
}

/// A paid request's response additions, for its own context.
pub fn take_paid(context: u32) -> Option<Paid> {
    take_entry(&PAID, |(c, _)| *c == context).map(|(_, paid)| paid)
}

/// The facilitator answered a call the root made (in the root's context): a settlement, or
/// (fleet mode) a verification.
#[inline(never)]
pub fn on_call_answer(token: u32, num_headers: usize, body_size: usize, now_ms: i64) {
    let Some((_, _, q)) = take_entry(&IN_FLIGHT, |(t, _, _)| *t == token) else {
        return;
    };
    let (status, body) = answer(num_headers, body_size);
    match q.job {
        Job::Verify => on_verified(q, status, &body, now_ms),
        _ => on_settled(q, status, &body, now_ms),
    }
}

/// The store answered a call the root made (fleet mode; in the root's context).
#[inline(never)]
pub fn on_store_answer(token: u32, status: u32, size: usize, now_ms: i64) {
    let Some((_, _, mut q)) = take_entry(&IN_FLIGHT, |(t, _, _)| *t == token) else {
        return;
    };
    let body = super::buffers::grpc_answer(status, size);
    // Past the bound it is no answer (UNAVAILABLE): nothing of it is believed.
    let status = if body.is_none() && status == 0 {
        14
    } else {
        status
    };
    let body = body.unwrap_or_default();
    let why = format!("the payments API answered gRPC status {status}");
    match std::mem::replace(&mut q.job, Job::Claim) {
        Job::Look { next } => {
            let Some(answer) = paywire::ClaimResponse::decode(body.as_slice())
                .ok()
                .filter(|_| status == 0)
            else {
                q.job = Job::Look { next };
                return failed(q, why, now_ms);
            };
            let state = paywire::ClaimState::of(answer.state);
            let under_way = matches!(
                state,
                paywire::ClaimState::Settling | paywire::ClaimState::Unknown
            ) && paywire::Claimed::of(answer.outcome) != paywire::Claimed::Absent;
            let found = q.pay.look.get(next).cloned().unwrap_or_default();
            if under_way && q.pay.readable {
                // Its money may have moved: decided by the claim found (settled again), under
                // its key (a pack's network may have changed since).
                q.pay.presented.replay = found;
                q.job = Job::Claim;
                dispatch(q, now_ms);
            } else if under_way && state == paywire::ClaimState::Settling {
                // Being settled elsewhere (its outcome not known yet): the client waits.
                respond(
                    &q,
                    PAYMENT_PENDING,
                    "This payment is being settled; try again shortly.".into(),
                    Some(RETRY_UNKNOWN),
                );
                let _ = take_entry(&WAITING, |c| *c == q.context);
            } else if under_way {
                // What took it is no longer offered: never a fresh 402; the operator settles it
                // from the facilitator's records.
                count(Count::Unresolved, 1);
                log::error!(
                    "payments: consumer={}: a payment whose settlement is unknown (replay key {}) \
                     can no longer be settled here (it matches no pack now); check it with the \
                     facilitator and credit it by hand",
                    consumer_name(&q.runtime, &q.pay),
                    q.pay.look.get(next).map_or("?", String::as_str)
                );
                respond(&q, PAYMENT_UNRESOLVED, core::UNRESOLVED.into(), None);
                let _ = take_entry(&WAITING, |c| *c == q.context);
            } else if next + 1 < q.pay.look.len() {
                q.job = Job::Look { next: next + 1 };
                dispatch(q, now_ms);
            } else {
                // No claim under way: decided again as local mode decides with none.
                decide_again(
                    &q,
                    Attempt {
                        looked: true,
                        ..Attempt::default()
                    },
                    now_ms,
                );
            }
        }
        Job::Claim => {
            let claimed = paywire::ClaimResponse::decode(body.as_slice())
                .ok()
                .filter(|_| status == 0)
                .and_then(|a| core::claimed_of(paywire::Claimed::of(a.outcome), &q.pay.presented));
            let Some(claimed) = claimed else {
                return failed(q, why, now_ms);
            };
            let name = consumer_name(&q.runtime, &q.pay);
            if claimed == core::Claimed::Fresh && !q.pay.look.is_empty() {
                // The claim a look found is gone since (dropped, expired): nothing of it may
                // move money for a request this Envoy turns away. The new claim is dropped
                // again, and the request decided as if nothing had been found.
                set_state(&q, None, now_ms);
                decide_again(
                    &q,
                    Attempt {
                        looked: true,
                        ..Attempt::default()
                    },
                    now_ms,
                );
                return;
            }
            match core::after_claim(claimed, &q.pay.presented, &name) {
                Ok(verify) => {
                    q.pay.verify = verify;
                    q.job = if verify { Job::Verify } else { Job::Settle };
                    dispatch(q, now_ms);
                }
                // A replay of a settled payment: the request is decided as usual.
                Err(None) => {
                    decide_again(
                        &q,
                        Attempt {
                            claimed: true,
                            ..Attempt::default()
                        },
                        now_ms,
                    );
                }
                Err(Some((kind, detail, retry))) => {
                    respond(&q, kind, detail, retry);
                    let _ = take_entry(&WAITING, |c| *c == q.context);
                }
            }
        }
        Job::Settling => {
            let found = paywire::MarkResponse::decode(body.as_slice())
                .ok()
                .filter(|_| status == 0)
                .map(|a| a.found);
            match found {
                Some(true) => {
                    q.job = Job::Settle;
                    dispatch(q, now_ms);
                }
                Some(false) => {
                    q.job = Job::Settling;
                    failed(q, "the payment's claim is gone".into(), now_ms);
                }
                None => {
                    q.job = Job::Settling;
                    failed(q, why, now_ms);
                }
            }
        }
        Job::Credit {
            transaction,
            response,
            tries,
        } => {
            let answer = paywire::CreditResponse::decode(body.as_slice())
                .ok()
                .filter(|_| status == 0);
            match answer {
                Some(a) => {
                    let credited = crate::quota::Credited {
                        added: a.added,
                        balance: a.balance,
                    };
                    credited_payment(&q, &transaction, response, &credited, now_ms);
                }
                // Refused as it is (INVALID_ARGUMENT): trying again would not help; the money
                // moved, so the operator credits it by hand.
                None if status == 3 => {
                    q.job = Job::Credit {
                        transaction,
                        response,
                        tries: CREDIT_TRIES,
                    };
                    failed(q, why, now_ms);
                }
                None => {
                    q.job = Job::Credit {
                        transaction,
                        response,
                        tries,
                    };
                    failed(q, why, now_ms);
                }
            }
        }
        // HTTP calls are answered in `on_call_answer`.
        Job::Verify | Job::Settle => {}
    }
}

/// The facilitator answered the `/verify` call the root made (fleet mode).
fn on_verified(mut q: Queued, status: Option<u16>, body: &[u8], now_ms: i64) {
    match core::verified(status, body) {
        Verified::Valid => {
            // Settled only once the claim says so: a settlement the claim does not know of
            // could be verified and settled again by another request.
            q.job = Job::Settling;
            dispatch(q, now_ms);
        }
        Verified::Invalid(why) => {
            count(Count::Refused, 1);
            set_state(&q, Some(State::Failed), now_ms);
            log::info!("payments: a payment was refused by the facilitator ({why})");
            let kind = q.pay.presented.refused();
            respond(&q, kind, why, None);
            let _ = take_entry(&WAITING, |c| *c == q.context);
        }
        Verified::Unavailable(why) => failed(q, format!("verify failed: {why}"), now_ms),
    }
}

/// The facilitator answered a settlement the root made.
fn on_settled(q: Queued, status: Option<u16>, body: &[u8], now_ms: i64) {
    let outcome = core::settled(status, body);
    // The money's side first, whatever became of the request; then the request, if it is
    // still there (made the effective context).
    match outcome {
        Settled::Done {
            transaction,
            response,
        } => {
            settled_payment(q, transaction, response, now_ms);
            return;
        }
        // A retry of a settlement whose outcome was unknown: whatever refuses it now (the
        // nonce used, the funds gone) may be the first settlement's doing.
        Settled::Refused(_) | Settled::NonceUsed if !q.pay.verify => {
            unresolved(&q, now_ms);
            respond(&q, PAYMENT_UNRESOLVED, core::UNRESOLVED.into(), None);
        }
        Settled::Refused(why) => {
            count(Count::Refused, 1);
            set_state(&q, Some(State::Failed), now_ms);
            log::info!("payments: a settlement was refused ({why})");
            let kind = q.pay.presented.refused();
            respond(&q, kind, why, None);
        }
        Settled::NonceUsed => {
            count(Count::Refused, 1);
            set_state(&q, Some(State::Failed), now_ms);
            let kind = q.pay.presented.refused();
            respond(
                &q,
                kind,
                "the authorization's nonce was used already".into(),
                None,
            );
        }
        Settled::Unknown(why) => {
            count(Count::Unknown, 1);
            set_state(&q, Some(State::Unknown), now_ms);
            log::warn!("payments: the outcome of a settlement is unknown: {why}");
            respond(
                &q,
                PAYMENT_PENDING,
                "The payment's settlement is not confirmed yet; send the same payment \
                 again shortly (do not pay again)."
                    .into(),
                Some(RETRY_UNKNOWN),
            );
        }
    }
    let _ = take_entry(&WAITING, |c| *c == q.context);
    become_root(q.root);
}

/// The retry of an unknown settlement that the facilitator refuses: not credited, never a
/// fresh 402; the operator resolves it (the log line and `tollgate.payments.unresolved`).
fn unresolved(q: &Queued, now_ms: i64) {
    count(Count::Unresolved, 1);
    set_state(q, Some(State::Unknown), now_ms);
    log::error!(
        "payments: consumer={}: a payment whose settlement was unknown is refused on its \
         retry: not credited; resolve it from the facilitator's records (replay key {})",
        consumer_name(&q.runtime, &q.pay),
        q.pay.presented.replay
    );
}

/// A settled payment: credited in shared data now, or (fleet mode) by a call to the store.
fn settled_payment(
    q: Queued,
    transaction: String,
    response: crate::x402::SettleResponse,
    now_ms: i64,
) {
    if q.runtime.config.store.is_some() {
        let q = Queued {
            job: Job::Credit {
                transaction,
                response,
                tries: 0,
            },
            ..q
        };
        dispatch(q, now_ms);
        return;
    }
    let config = &q.runtime.config;
    let (Some(payments), Some(consumer)) = (&config.payments, config.consumers.get(q.pay.consumer))
    else {
        return;
    };
    let credits = payments
        .packs
        .get(q.pay.presented.pack)
        .map_or(0, |p| p.credits);
    match core::credit_settled(
        &q.store,
        &consumer.store_key,
        &q.pay.presented,
        credits,
        &transaction,
        now_ms,
    ) {
        Ok(credited) => credited_payment(&q, &transaction, response, &credited, now_ms),
        Err(e) => {
            set_state(&q, Some(State::Unknown), now_ms);
            log::error!(
                "payments: consumer={}: a settled payment could not be credited ({}); it will \
                 be credited when presented again (network {}, transaction {transaction}, \
                 replay key {})",
                consumer.name(),
                e.reason(),
                q.pay.presented.network,
                q.pay.presented.replay
            );
            respond(
                &q,
                PAYMENT_PENDING,
                core::NOT_CREDITED_YET.into(),
                Some(RETRY_UNKNOWN),
            );
            let _ = take_entry(&WAITING, |c| *c == q.context);
        }
    }
}

/// A credited payment: counted, logged and sent as an event; then, if its request is still
/// there, decided as usual (it now draws on the balance) with the settlement's response
/// header.
fn credited_payment(
    q: &Queued,
    transaction: &str,
    response: crate::x402::SettleResponse,
    credited: &crate::quota::Credited,
    now_ms: i64,
) {
    let runtime = &q.runtime;
    let pay = &q.pay;
    let config = &runtime.config;
    let credits = config
        .payments
        .as_ref()
        .and_then(|p| p.packs.get(pay.presented.pack))
        .map_or(0, |p| p.credits);
    let name = consumer_name(runtime, pay);
    if credited.added {
        count(Count::Settled, 1);
        count(Count::Credits, credits);
    }
    log::info!(
        "payments: consumer={name} bought {credits} credits ({}; balance {})",
        if credited.added {
            "credited"
        } else {
            "already credited"
        },
        credited.balance
    );
    // Also when it was credited already: the event's id is the transaction's, so a sink
    // keeps one (a VM that stopped before its tick may have lost the first).
    if let Some(meter) = &runtime.meter {
        meter.record_payment(crate::events::PaymentSettled {
            consumer: pay.consumer,
            pack: pay.presented.pack,
            credits,
            balance: credited.balance,
            network: pay.presented.network.clone(),
            transaction: transaction.to_string(),
            payer: pay.presented.payer.clone(),
            at: now_ms.div_euclid(1000),
        });
    }
    let paid = match &pay.presented.challenge {
        // An HTTP Payment credential's receipt names its challenge and the transaction.
        Some((challenge_id, chain_id)) => (
            crate::paymentauth::PAYMENT_RECEIPT,
            crate::paymentauth::Receipt {
                chain_id: *chain_id,
                challenge_id: challenge_id.clone(),
                external_id: config
                    .payments
                    .as_ref()
                    .and_then(|p| p.packs.get(pay.presented.pack))
                    .map(|p| p.name.clone()),
                method: crate::paymentauth::METHOD.into(),
                reference: transaction.to_string(),
                status: "success".into(),
                timestamp: crate::time::format_rfc3339(now_ms.div_euclid(1000)),
            }
            .encode(),
        ),
        None if pay.presented.version == 1 => {
            (core::X_PAYMENT_RESPONSE, crate::x402::encode(&response))
        }
        None => (core::PAYMENT_RESPONSE, crate::x402::encode(&response)),
    };
    let attempt = Attempt {
        now_ms,
        price: q.price,
        paid: Some(paid.clone()),
        ..Attempt::default()
    };
    if !WAITING.with(|w| w.try_borrow().is_ok_and(|w| w.contains(&q.context))) {
        log::info!(
            "payments: consumer={name}: the paying request went away; its payment is credited"
        );
    } else {
        let _ = decide(q, Some(paid), &attempt, now_ms);
    }
    let _ = take_entry(&WAITING, |c| *c == q.context);
    become_root(q.root);
}

/// Decides the request of `q` again from the root context (its payment settled, or a replay
/// of a settled one) and carries the decision out: resumed with `paid` on its response, held
/// for a lease refill, drawn on the balance (fleet mode), or answered.
/// Decides the request of `q` again with `attempt` (its time and price set here), with no
/// payment header on its response; it no longer waits on the root unless its payment was
/// taken up again.
fn decide_again(q: &Queued, attempt: Attempt, now_ms: i64) {
    let attempt = Attempt {
        now_ms,
        price: q.price,
        ..attempt
    };
    if !decide(q, None, &attempt, now_ms) {
        let _ = take_entry(&WAITING, |c| *c == q.context);
    }
}

/// Returns whether the request waits on the root again (its payment was queued).
fn decide(
    q: &Queued,
    paid: Option<(&'static str, String)>,
    attempt: &Attempt,
    now_ms: i64,
) -> bool {
    let context = q.context;
    if !alive(context) {
        become_root(q.root);
        return false;
    }
    let runtime = &q.runtime;
    let step = run(runtime, attempt, now_ms);
    let hand_paid = |fields| {
        put_entry(
            &PAID,
            (
                context,
                Paid {
                    header: paid.clone(),
                    fields,
                },
            ),
        )
    };
    match step {
        Step::Continue {
            fields, charged, ..
        } => {
            // Its own context picks these up with the response (and settles a priced request).
            if let Some(charged) = charged {
                super::held::hand_over(context, charged);
            }
            hand_paid(fields);
            resume();
        }
        Step::Replied => {}
        Step::Draw(ask) => {
            hand_paid(None);
            super::draws::start_held(context, runtime, attempt, ask);
        }
        Step::Wait(wait) => {
            hand_paid(None);
            super::fleet::hold(context, runtime, wait, attempt, now_ms);
        }
        // Decided again after a look (its payment has no claim under way): claimed now.
        Step::Pay(pay) if pay.remote && paid.is_none() => {
            let job = if pay.look.is_empty() {
                Job::Claim
            } else {
                Job::Look { next: 0 }
            };
            become_root(q.root);
            // Its WAITING entry is the caller's to keep.
            dispatch(
                Queued {
                    root: q.root,
                    context,
                    runtime: Rc::clone(runtime),
                    pay,
                    price: attempt.price,
                    store: q.store,
                    job,
                    retry_at: 0,
                },
                now_ms,
            );
            return true;
        }
        Step::Pay(_) => {
            log::error!("payments: a paid request could not be decided");
            super::request::unavailable("tollgate could not decide the paid request\n");
        }
    }
    become_root(q.root);
    false
}

/// Resumes the paused request of the effective context.
pub fn resume() {
    // SAFETY: plain integer argument (0: the HTTP request stream).
    if unsafe { proxy_continue_stream(0) } != 0 {
        log::warn!("payments: a paid request could not be resumed");
    }
}

/// A paying request went away before its answer. A verification leaves nothing (the claim is
/// dropped: no money moved); a settlement is the root's, which credits it whatever became of
/// the request.
pub fn abandon(paying: &Paying, store: &SharedData, now_ms: i64) {
    if paying.stage == Stage::Verify {
        let _ = core::mark(store, &paying.pay.presented.replay, None, now_ms);
    }
}
