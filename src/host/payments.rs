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
use crate::response::{PAYMENT_PENDING, PAYMENT_UNRESOLVED};
use crate::verdict::Step;

#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
}

/// The root's tick while settlements wait to be dispatched or answered.
const FAST_TICK_MS: u32 = 10;

/// A settlement to be made by the root context `root`, for the request of `context`.
struct Queued {
    root: u32,
    context: u32,
    runtime: Rc<Runtime>,
    pay: Pay,
    price: Price,
    store: SharedData,
}

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
    pub header: (&'static str, String),
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
    if !pay.verify {
        // A retry of an unknown settlement: settled again, by the root.
        queue_settle(root, context, runtime, pay.clone(), price, *store);
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
            queue_settle(root, context, runtime, pay.clone(), price, *store);
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

/// Queues a settlement for the request's root context, and makes its tick fast until it is
/// answered.
fn queue_settle(
    root: u32,
    context: u32,
    runtime: &Rc<Runtime>,
    pay: Pay,
    price: Price,
    store: SharedData,
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

/// Root `root`'s tick (and its stop): dispatches its queued settlements (it owns their
/// answers) and gives up those overdue (their claims stay SETTLING: the same payment settles
/// again once stale). Returns whether its tick may go back to its usual period. Leaves `root`
/// the effective context.
#[inline(never)]
pub fn on_tick(root: u32, now_ms: i64) -> bool {
    let mine: Vec<Queued> = QUEUED.with(|q| {
        let Ok(mut q) = q.try_borrow_mut() else {
            return Vec::new();
        };
        let (mine, others) = std::mem::take(&mut *q)
            .into_iter()
            .partition(|e| e.root == root);
        *q = others;
        mine
    });
    for q in mine {
        match call(&q.runtime, &q.pay, Stage::Settle) {
            Some(token) => {
                let timeout = q
                    .runtime
                    .config
                    .payments
                    .as_ref()
                    .map_or(0, |p| i64::try_from(p.timeout_ms).unwrap_or(i64::MAX));
                let deadline = now_ms.saturating_add(timeout).saturating_add(2_000);
                put_entry(&IN_FLIGHT, (token, deadline, q));
            }
            None => {
                // Nothing was sent: the money did not move. A first settlement's claim is
                // dropped (the payment may be presented again); a retry's stays unknown.
                count(Count::Unavailable, 1);
                let state = if q.pay.verify {
                    None
                } else {
                    Some(State::Unknown)
                };
                let _ = core::mark(&q.store, &q.pay.presented.replay, state, now_ms);
                if alive(q.context) {
                    reply(
                        &q.runtime,
                        &q.pay,
                        PAYMENT_PENDING,
                        "The payment facilitator cannot be reached; try again shortly.".into(),
                        Some(RETRY_UNKNOWN),
                    );
                }
                let _ = take_entry(&WAITING, |c| *c == q.context);
                become_root(root);
            }
        }
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
        log::warn!("payments: a settlement got no answer in time; its claim stays settling");
        let _ = take_entry(&WAITING, |c| *c == q.context);
    }
    let idle = !pending(root);
    if idle {
        let _ = take_entry(&FAST, |r| *r == root);
    }
    idle
}

/// Whether `token` is a settlement a root made.
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

/// The facilitator answered a settlement the root made (in the root's context).
#[inline(never)]
pub fn on_settle_answer(token: u32, num_headers: usize, body_size: usize, now_ms: i64) {
    let Some((_, _, q)) = take_entry(&IN_FLIGHT, |(t, _, _)| *t == token) else {
        return;
    };
    let root = q.root;
    let (status, body) = answer(num_headers, body_size);
    let Queued {
        context,
        runtime,
        pay,
        price,
        store,
        ..
    } = q;
    let replay = pay.presented.replay.clone();
    let mark = |state: Option<State>| {
        if let Err(e) = core::mark(&store, &replay, state, now_ms) {
            log::error!("payments: cannot record a payment's state: {}", e.reason());
        }
    };
    let outcome = core::settled(status, &body);
    // The money's side first, whatever became of the request; then the request, if it is
    // still there (made the effective context).
    let respond = |kind: &'static str, detail: String, retry: Option<u64>| {
        if alive(context) {
            reply(&runtime, &pay, kind, detail, retry);
        }
    };
    match outcome {
        Settled::Done {
            transaction,
            response,
        } => settled_payment(
            context,
            &runtime,
            &pay,
            price,
            &store,
            &transaction,
            response,
            now_ms,
        ),
        // A retry of a settlement whose outcome was unknown: whatever refuses it now (the
        // nonce used, the funds gone) may be the first settlement's doing.
        Settled::Refused(_) | Settled::NonceUsed if !pay.verify => {
            unresolved(&runtime, &pay, &mark);
            respond(
                PAYMENT_UNRESOLVED,
                "The settlement of this payment cannot be confirmed; it was not credited. \
                 Contact the API's operator."
                    .into(),
                None,
            );
        }
        Settled::Refused(why) => {
            count(Count::Refused, 1);
            mark(Some(State::Failed));
            log::info!("payments: a settlement was refused ({why})");
            respond(pay.presented.refused(), why, None);
        }
        Settled::NonceUsed => {
            count(Count::Refused, 1);
            mark(Some(State::Failed));
            respond(
                pay.presented.refused(),
                "the authorization's nonce was used already".into(),
                None,
            );
        }
        Settled::Unknown(why) => {
            count(Count::Unknown, 1);
            mark(Some(State::Unknown));
            log::warn!("payments: the outcome of a settlement is unknown: {why}");
            respond(
                PAYMENT_PENDING,
                "The payment's settlement is not confirmed yet; send the same payment \
                 again shortly (do not pay again)."
                    .into(),
                Some(RETRY_UNKNOWN),
            );
        }
    }
    let _ = take_entry(&WAITING, |c| *c == context);
    become_root(root);
}

/// The retry of an unknown settlement that the facilitator refuses: not credited, never a
/// fresh 402; the operator resolves it (the log line and `tollgate.payments.unresolved`).
fn unresolved(runtime: &Runtime, pay: &Pay, mark: &dyn Fn(Option<State>)) {
    count(Count::Unresolved, 1);
    mark(Some(State::Unknown));
    let consumer = runtime
        .config
        .consumers
        .get(pay.consumer)
        .map_or("?", |c| c.name());
    log::error!(
        "payments: consumer={consumer}: a payment whose settlement was unknown is refused on its \
         retry: not credited; resolve it from the facilitator's records (replay key {})",
        pay.presented.replay
    );
}

/// A settled payment: credit it; then, if its request is still there, decide it as usual (it
/// now draws on the balance) with the settlement's response header, and resume it.
#[allow(clippy::too_many_arguments)] // the settlement and its request, as they are
fn settled_payment(
    context: u32,
    runtime: &Rc<Runtime>,
    pay: &Pay,
    price: Price,
    store: &SharedData,
    transaction: &str,
    response: crate::x402::SettleResponse,
    now_ms: i64,
) {
    let config = &runtime.config;
    let (Some(payments), Some(consumer)) = (&config.payments, config.consumers.get(pay.consumer))
    else {
        return;
    };
    let credits = payments
        .packs
        .get(pay.presented.pack)
        .map_or(0, |p| p.credits);
    match core::credit_settled(
        store,
        &consumer.store_key,
        &pay.presented,
        credits,
        transaction,
        now_ms,
    ) {
        Ok(credited) => {
            if credited.added {
                count(Count::Settled, 1);
                count(Count::Credits, credits);
            }
            log::info!(
                "payments: consumer={} bought {credits} credits ({}; balance {})",
                consumer.name(),
                if credited.added {
                    "credited"
                } else {
                    "already credited"
                },
                credited.balance
            );
            // Also when it was credited already: the event's id is the transaction's, so a
            // sink keeps one (a VM that stopped before its tick may have lost the first).
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
        }
        Err(e) => {
            let _ = core::mark(store, &pay.presented.replay, Some(State::Unknown), now_ms);
            log::error!(
                "payments: consumer={}: a settled payment could not be credited ({}); it will \
                 be credited when presented again (network {}, transaction {transaction}, \
                 replay key {})",
                consumer.name(),
                e.reason(),
                pay.presented.network,
                pay.presented.replay
            );
            if alive(context) {
                reply(
                    runtime,
                    pay,
                    PAYMENT_PENDING,
                    "The payment was settled but not credited yet; send the same payment again \
                     shortly (do not pay again)."
                        .into(),
                    Some(RETRY_UNKNOWN),
                );
            }
            return;
        }
    }
    if !alive(context) {
        log::info!(
            "payments: consumer={}: the paying request went away; its payment is credited",
            consumer.name()
        );
        return;
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
        price,
        paid: Some(paid.clone()),
        ..Attempt::default()
    };
    match run(runtime, &attempt, now_ms) {
        Step::Continue {
            fields, charged, ..
        } => {
            // Its own context picks these up with the response (and settles a priced request).
            if let Some(charged) = charged {
                super::held::hand_over(context, charged);
            }
            put_entry(
                &PAID,
                (
                    context,
                    Paid {
                        header: paid,
                        fields,
                    },
                ),
            );
            resume();
        }
        Step::Replied => {}
        // Neither happens in local mode (payments are refused with `store`) nor once paid.
        Step::Wait(_) | Step::Pay(_) => {
            log::error!("payments: a paid request could not be decided");
            super::request::unavailable("tollgate could not decide the paid request\n");
        }
    }
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
