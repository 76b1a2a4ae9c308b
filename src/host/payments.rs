//! Payments, host side: the `/verify` and `/settle` calls of a request that carries a payment
//! (made from its own HTTP context, which stays paused meanwhile), and what their answers make
//! of the request. What an answer means, and the claim's states, are [`crate::payments`].

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};

use super::buffers;
use super::metrics::{bump, define_counter};
use super::request::{run, send};
use super::runtime::Runtime;
use super::shared_data::SharedData;
use crate::decision::{Attempt, Caller, Price};
use crate::payments::{self as core, Pay, Settled, State, Verified};
use crate::response::{PAYMENT_PENDING, PAYMENT_REFUSED, PAYMENT_UNRESOLVED};
use crate::verdict::Step;

#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_continue_stream(stream_type: u32) -> u32;
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

/// A request held for its payment.
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
    send(&core::reply(payments, &caller, kind, detail, retry));
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

/// Starts the calls of a claimed payment: `Some` (hold the request) or `None` (replied).
pub fn start(
    runtime: &Runtime,
    pay: Pay,
    price: Price,
    store: &SharedData,
    now_ms: i64,
) -> Option<Paying> {
    let stage = if pay.verify {
        Stage::Verify
    } else {
        Stage::Settle
    };
    match call(runtime, &pay, stage) {
        Some(token) => Some(Paying {
            pay,
            stage,
            token,
            price,
        }),
        None => {
            // Nothing was asked: the payment may be presented again.
            let state = match stage {
                Stage::Verify => None,
                Stage::Settle => Some(State::Unknown),
            };
            let _ = core::mark(store, &pay.presented.replay, state, now_ms);
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

/// What became of a paying request after an answer.
pub enum Next {
    /// Still held: the next call was made.
    Held(Paying),
    /// Replied, or resumed with its decision carried out: the RateLimit fields and the
    /// payment's response header, if it goes on.
    Done(Option<Step>, Option<(&'static str, String)>),
}

/// The facilitator answered the call of `paying`.
pub fn on_answer(
    runtime: &Rc<Runtime>,
    paying: Paying,
    store: &SharedData,
    num_headers: usize,
    body_size: usize,
    now_ms: i64,
) -> Next {
    let (status, body) = answer(num_headers, body_size);
    let Paying {
        pay, stage, price, ..
    } = paying;
    let replay = pay.presented.replay.clone();
    let mark = |state: Option<State>| {
        if let Err(e) = core::mark(store, &replay, state, now_ms) {
            log::error!("payments: cannot record a payment's state: {}", e.reason());
        }
    };
    match stage {
        Stage::Verify => match core::verified(status, &body) {
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
                    return Next::Done(None, None);
                }
                match call(runtime, &pay, Stage::Settle) {
                    Some(token) => Next::Held(Paying {
                        pay,
                        stage: Stage::Settle,
                        token,
                        price,
                    }),
                    None => {
                        mark(None);
                        reply(
                            runtime,
                            &pay,
                            PAYMENT_PENDING,
                            "The payment facilitator cannot be reached; try again shortly.".into(),
                            Some(RETRY_UNKNOWN),
                        );
                        Next::Done(None, None)
                    }
                }
            }
            Verified::Invalid(why) => {
                count(Count::Refused, 1);
                mark(Some(State::Failed));
                log::info!("payments: a payment was refused by the facilitator ({why})");
                reply(runtime, &pay, PAYMENT_REFUSED, why, None);
                Next::Done(None, None)
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
                Next::Done(None, None)
            }
        },
        Stage::Settle => match core::settled(status, &body) {
            Settled::Done {
                transaction,
                response,
            } => settled_payment(runtime, &pay, price, store, &transaction, response, now_ms),
            // A retry of a settlement whose outcome was unknown: whatever refuses it now (the
            // nonce used, the funds gone) may be the first settlement's doing.
            Settled::Refused(_) | Settled::NonceUsed if !pay.verify => {
                unresolved(runtime, &pay, &mark)
            }
            Settled::Refused(why) => {
                count(Count::Refused, 1);
                mark(Some(State::Failed));
                log::info!("payments: a settlement was refused ({why})");
                reply(runtime, &pay, PAYMENT_REFUSED, why, None);
                Next::Done(None, None)
            }
            Settled::NonceUsed => {
                count(Count::Refused, 1);
                mark(Some(State::Failed));
                reply(
                    runtime,
                    &pay,
                    PAYMENT_REFUSED,
                    "the authorization's nonce was used already".into(),
                    None,
                );
                Next::Done(None, None)
            }
            Settled::Unknown(why) => {
                count(Count::Unknown, 1);
                mark(Some(State::Unknown));
                log::warn!("payments: the outcome of a settlement is unknown: {why}");
                reply(
                    runtime,
                    &pay,
                    PAYMENT_PENDING,
                    "The payment's settlement is not confirmed yet; send the same payment \
                     again shortly (do not pay again)."
                        .into(),
                    Some(RETRY_UNKNOWN),
                );
                Next::Done(None, None)
            }
        },
    }
}

/// The retry of an unknown settlement that the facilitator refuses: not credited, never a
/// fresh 402; the operator resolves it (the log line and `tollgate.payments.unresolved`).
fn unresolved(runtime: &Runtime, pay: &Pay, mark: &dyn Fn(Option<State>)) -> Next {
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
    reply(
        runtime,
        pay,
        PAYMENT_UNRESOLVED,
        "The settlement of this payment cannot be confirmed; it was not credited. \
         Contact the API's operator."
            .into(),
        None,
    );
    Next::Done(None, None)
}

/// A settled payment: credit it, then decide the request as usual (it now draws on the
/// balance) with the settlement's response header.
fn settled_payment(
    runtime: &Rc<Runtime>,
    pay: &Pay,
    price: Price,
    store: &SharedData,
    transaction: &str,
    response: crate::x402::SettleResponse,
    now_ms: i64,
) -> Next {
    let config = &runtime.config;
    let (Some(payments), Some(consumer)) = (&config.payments, config.consumers.get(pay.consumer))
    else {
        return Next::Done(None, None);
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
                 be credited when presented again",
                consumer.name(),
                e.reason()
            );
            reply(
                runtime,
                pay,
                PAYMENT_PENDING,
                "The payment was settled but not credited yet; send the same payment again \
                 shortly (do not pay again)."
                    .into(),
                Some(RETRY_UNKNOWN),
            );
            return Next::Done(None, None);
        }
    }
    let header = if pay.presented.version == 1 {
        core::X_PAYMENT_RESPONSE
    } else {
        core::PAYMENT_RESPONSE
    };
    let paid = (header, crate::x402::encode(&response));
    let attempt = Attempt {
        now_ms,
        price,
        paid: Some(paid.clone()),
        ..Attempt::default()
    };
    let step = run(runtime, &attempt, now_ms);
    Next::Done(Some(step), Some(paid))
}

/// Resumes the paused request of the effective context.
pub fn resume() {
    // SAFETY: plain integer argument (0: the HTTP request stream).
    if unsafe { proxy_continue_stream(0) } != 0 {
        log::warn!("payments: a paid request could not be resumed");
    }
}

/// A paying request went away before its answer (whose answer the SDK then drops): a
/// verification leaves nothing (the claim is dropped); a settlement's claim stays SETTLING —
/// its call may still be under way — until it is stale, when the same payment presented again
/// settles again (`crate::payments::stale_ms`).
pub fn abandon(paying: &Paying, store: &SharedData, now_ms: i64) {
    if paying.stage == Stage::Verify {
        let _ = core::mark(store, &paying.pay.presented.replay, None, now_ms);
    }
}
