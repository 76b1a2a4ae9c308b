//! The fleet state machine against a fake host: the decisions are the real core's
//! ([`crate::verdict::handle_with`] over a [`MemoryStore`] holding the leases), the host calls
//! are recorded, and the rate limit service's answers are scripted.

use std::cell::{Cell, RefCell};

use super::*;
use crate::counters::create_counters;
use crate::memo::Memo;
use crate::shadow_log::ShadowLog;
use crate::store::MemoryStore;
use crate::verdict::{handle_with, Action, Step};

const NOW_MS: i64 = 1_795_000_000_000;
const ROOT: u32 = 1;

struct Runtime {
    config: Config,
    memo: Memo,
    shadow_log: ShadowLog,
}

fn runtime(lease: u64) -> Rc<Runtime> {
    runtime_with(lease, "")
}

/// Two consumers on plans whose limits have different names (so that their RateLimit fields
/// differ): `acme` (key `acme-key`) and `beta` (key `beta-key`).
fn runtime_with(lease: u64, extra: &str) -> Rc<Runtime> {
    let config = Config::from_json(
        format!(
            r#"{{"plans": {{"free": {{"limits": [{{"name": "daily", "requests": 100, "window": "day"}}]}},
                           "pro": {{"limits": [{{"name": "hourly", "requests": 100, "window": "hour"}}]}}}},
                "consumers": {{"acme": {{"plan": "free", "keys": ["acme-key"]}},
                               "beta": {{"plan": "pro", "keys": ["beta-key"]}}}},
                "store": {{"rls": {{"cluster": "quotad", "timeout": "50ms", "lease": {lease}}}}}
                {extra}}}"#
        )
        .as_bytes(),
    )
    .unwrap();
    Rc::new(Runtime {
        config,
        memo: Memo::default(),
        shadow_log: ShadowLog::default(),
    })
}

/// What the fake host was asked to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Did {
    Effective(u32),
    Call { token: u32, context: u32, hits: u64 },
    Resume(u32),
    Tick(Duration),
}

struct Fake {
    state: RefCell<State<Runtime>>,
    store: MemoryStore,
    did: RefCell<Vec<Did>>,
    counts: RefCell<Vec<Count>>,
    /// Contexts whose requests are gone.
    gone: RefCell<Vec<u32>>,
    effective: Cell<u32>,
    next_token: Cell<u32>,
    /// `Some(why)`: dispatching a call fails.
    refuse_calls: RefCell<Option<String>>,
    /// The body of the answer being handled.
    body: RefCell<Vec<u8>>,
    /// Each decision: the context and the attempt.
    decided: RefCell<Vec<(u32, Attempt)>>,
    /// The contexts whose requests carry `beta-key` (the others carry `acme-key`).
    beta: RefCell<Vec<u32>>,
    /// The calls' messages, by token.
    messages: RefCell<Vec<(u32, Vec<u8>)>>,
    /// Thresholds reached, as the host was told.
    alerts: RefCell<Vec<Crossing>>,
    /// Draws on prepaid credits the host was asked to make: context, attempt, ask.
    draws: RefCell<Vec<(u32, Attempt, DrawAsk)>>,
}

impl Fake {
    fn new(runtime: &Runtime) -> Fake {
        let store = MemoryStore::new();
        create_counters(&runtime.config, &store).unwrap();
        let fake = Fake {
            state: RefCell::new(State::new()),
            store,
            did: RefCell::new(Vec::new()),
            counts: RefCell::new(Vec::new()),
            gone: RefCell::new(Vec::new()),
            effective: Cell::new(0),
            next_token: Cell::new(100),
            refuse_calls: RefCell::new(None),
            body: RefCell::new(Vec::new()),
            decided: RefCell::new(Vec::new()),
            beta: RefCell::new(Vec::new()),
            messages: RefCell::new(Vec::new()),
            alerts: RefCell::new(Vec::new()),
            draws: RefCell::new(Vec::new()),
        };
        set_root(&fake, ROOT, Duration::from_secs(1));
        fake
    }

    /// A request of `acme` arrives on `context`: decided, and held if it must wait.
    fn request(&self, runtime: &Rc<Runtime>, context: u32, now_ms: i64) -> Step {
        let attempt = Attempt {
            now_ms,
            ..Attempt::default()
        };
        self.attempt(runtime, context, attempt)
    }

    /// [`Fake::request`] for this attempt (a price, headers gone upstream).
    fn attempt(&self, runtime: &Rc<Runtime>, context: u32, attempt: Attempt) -> Step {
        self.effective.set(context);
        let now_ms = attempt.now_ms;
        let step = self.decide(context, runtime, &attempt, now_ms);
        match &step {
            Step::Wait(wait) => hold(self, context, runtime, wait.clone(), &attempt, now_ms),
            Step::Continue {
                refill: Some((consumer, ask)),
                ..
            } => refill_ahead(self, runtime, *consumer, ask.clone()),
            _ => {}
        }
        step
    }

    fn calls(&self) -> Vec<(u32, u32, u64)> {
        self.did
            .borrow()
            .iter()
            .filter_map(|d| match d {
                Did::Call {
                    token,
                    context,
                    hits,
                } => Some((*token, *context, *hits)),
                _ => None,
            })
            .collect()
    }

    fn resumed(&self) -> Vec<u32> {
        self.did
            .borrow()
            .iter()
            .filter_map(|d| match d {
                Did::Resume(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    fn ticks(&self) -> Vec<Duration> {
        self.did
            .borrow()
            .iter()
            .filter_map(|d| match d {
                Did::Tick(t) => Some(*t),
                _ => None,
            })
            .collect()
    }

    fn held(&self) -> usize {
        self.state.borrow().held()
    }
}

impl FleetHost for Fake {
    type Runtime = Runtime;
    type Store = MemoryStore;

    fn alert(&self, _runtime: &Rc<Runtime>, crossings: Vec<Crossing>) {
        self.alerts.borrow_mut().extend(crossings);
    }

    fn config(runtime: &Runtime) -> &Config {
        &runtime.config
    }

    fn with<T>(&self, f: impl FnOnce(&mut State<Runtime>) -> T) -> Option<T> {
        // borrow_mut, not try_: a state borrowed across a host call that re-enters the
        // machine (which Envoy can do) fails the test instead of being skipped.
        Some(f(&mut self.state.borrow_mut()))
    }

    fn set_effective_context(&self, context: u32) -> bool {
        self.did.borrow_mut().push(Did::Effective(context));
        self.effective.set(context);
        !self.gone.borrow().contains(&context)
    }

    fn resume_request(&self) -> bool {
        self.did
            .borrow_mut()
            .push(Did::Resume(self.effective.get()));
        true
    }

    fn set_tick(&self, period: Duration) {
        self.did.borrow_mut().push(Did::Tick(period));
    }

    fn call(&self, rls: &Rls, message: &[u8]) -> Result<u32, String> {
        assert_eq!(rls.cluster, "quotad");
        if let Some(why) = self.refuse_calls.borrow().clone() {
            return Err(why);
        }
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        // The hits are the request's last field (hits_addend, field 3): read them back.
        let hits = hits_addend(message);
        self.did.borrow_mut().push(Did::Call {
            token,
            context: self.effective.get(),
            hits,
        });
        self.messages.borrow_mut().push((token, message.to_vec()));
        Ok(token)
    }

    fn answer(&self, _size: usize) -> Vec<u8> {
        self.body.borrow().clone()
    }

    fn decide(&self, _context: u32, runtime: &Rc<Runtime>, attempt: &Attempt, now_ms: i64) -> Step {
        self.decided
            .borrow_mut()
            .push((self.effective.get(), attempt.clone()));
        let key: &[u8] = if self.beta.borrow().contains(&self.effective.get()) {
            b"beta-key"
        } else {
            b"acme-key"
        };
        let mut request = |name: &str| (name == "x-api-key").then(|| key.to_vec());
        let verdict = handle_with(
            &runtime.config,
            &mut request,
            now_ms.div_euclid(1000),
            &self.store,
            &runtime.memo,
            &runtime.shadow_log,
            attempt,
        );
        match verdict.action {
            Action::Reply(_) => Step::Replied,
            Action::Wait(wait) => Step::Wait(wait),
            Action::Pay(pay) => Step::Pay(pay),
            Action::Draw(ask) => Step::Draw(ask),
            Action::Forward(forward) => Step::Continue {
                fields: forward.rate_limit,
                refill: forward.refill,
                charged: forward.charged,
            },
        }
    }

    fn count(&self, which: Count) {
        self.counts.borrow_mut().push(which);
    }

    fn draw(&self, context: u32, _runtime: &Rc<Runtime>, attempt: &Attempt, ask: DrawAsk) {
        self.draws
            .borrow_mut()
            .push((context, attempt.clone(), ask));
    }

    fn store(&self) -> &MemoryStore {
        &self.store
    }
}

/// `hits_addend` (field 3, varint) of an encoded `RateLimitRequest`.
fn hits_addend(message: &[u8]) -> u64 {
    let mut at = 0;
    let varint = |at: &mut usize| {
        let (mut value, mut shift) = (0u64, 0);
        loop {
            let byte = message[*at];
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte < 0x80 {
                return value;
            }
        }
    };
    while at < message.len() {
        let key = varint(&mut at);
        match key & 7 {
            0 if key >> 3 == 3 => return varint(&mut at),
            0 => {
                varint(&mut at);
            }
            2 => {
                let len = varint(&mut at) as usize;
                at += len;
            }
            other => panic!("wire type {other}"),
        }
    }
    0
}

/// A `RateLimitResponse`: `overall` and one status per limit with its `limit_remaining`.
fn answer(overall: u8, remaining: &[u32]) -> Vec<u8> {
    let mut out = vec![0x08, overall];
    for left in remaining {
        let mut status = vec![0x08, overall];
        status.push(0x18);
        let mut v = *left;
        while v >= 0x80 {
            status.push((v as u8) | 0x80);
            v >>= 7;
        }
        status.push(v as u8);
        out.push(0x12);
        out.push(status.len() as u8);
        out.extend(status);
    }
    out
}

#[test]
fn an_empty_lease_holds_the_request_calls_once_and_a_grant_resumes_it() {
    let rt = runtime(10);
    let host = Fake::new(&rt);
    assert!(matches!(host.request(&rt, 7, NOW_MS), Step::Wait(_)));
    assert_eq!(host.held(), 1);
    assert_eq!(
        host.calls().len(),
        1,
        "the request claimed the refill and called"
    );
    let (token, context, _) = host.calls()[0];
    assert_eq!(context, 7, "called from the request's own context");
    assert_eq!(host.ticks(), [POLL], "held requests poll");
    assert_eq!(*host.counts.borrow(), [Count::Held, Count::StoreCalls]);
    // A second request of the same consumer waits for the same refill: no second call.
    assert!(matches!(host.request(&rt, 8, NOW_MS + 1), Step::Wait(_)));
    assert_eq!((host.held(), host.calls().len()), (2, 1));

    *host.body.borrow_mut() = answer(1, &[90]);
    on_response(&host, token, 0, 0, NOW_MS + 5);
    assert_eq!(host.resumed(), [7, 8], "both held requests go on");
    assert_eq!(host.held(), 0);
    assert_eq!(host.state.borrow().calls(), 0);
    assert_eq!(
        host.ticks().last(),
        Some(&Duration::from_secs(1)),
        "back to the idle tick"
    );
    // Each was decided again as a request that waited, and got its RateLimit fields.
    let decided = host.decided.borrow();
    let again: Vec<_> = decided.iter().filter(|(c, _)| *c == 7 || *c == 8).collect();
    assert_eq!(again.len(), 4);
    assert_eq!(again[2].1.waiting_since_ms, Some(NOW_MS));
    assert_eq!(again[2].1.failed, None);
    assert!(fields_of(&host, 7).is_some() && fields_of(&host, 8).is_some());
    assert!(fields_of(&host, 7).is_none(), "taken once");
}

#[test]
fn a_failed_call_fails_every_request_waiting_on_it() {
    let rt = runtime(10);
    let host = Fake::new(&rt);
    host.request(&rt, 7, NOW_MS);
    host.request(&rt, 8, NOW_MS);
    let (token, _, _) = host.calls()[0];
    on_response(&host, token, 14, 0, NOW_MS + 5);
    let decided = host.decided.borrow();
    let failed: Vec<_> = decided
        .iter()
        .filter_map(|(_, a)| a.failed.clone())
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(failed[0].contains("gRPC status 14"), "{}", failed[0]);
    assert!(!failed[0].contains("timeout"), "{}", failed[0]);
    assert_eq!(host.held(), 0, "answered (on_store_error), not held on");
}

#[test]
fn a_call_that_ends_after_the_timeout_is_named_a_timeout() {
    let rt = runtime(10);
    let host = Fake::new(&rt);
    host.request(&rt, 7, NOW_MS);
    let (token, _, _) = host.calls()[0];
    // The timeout is 50 ms: Envoy ends the call with UNAVAILABLE of its own.
    on_response(&host, token, 14, 0, NOW_MS + 50);
    let decided = host.decided.borrow();
    let failed = decided.iter().find_map(|(_, a)| a.failed.clone()).unwrap();
    assert_eq!(
        failed,
        "the rate limit service did not answer within the timeout (50 ms; gRPC status 14 from Envoy)"
    );
}

#[test]
fn a_call_that_cannot_be_made_fails_its_request_naming_the_cluster() {
    let rt = runtime(10);
    let host = Fake::new(&rt);
    *host.refuse_calls.borrow_mut() = Some("BadArgument".into());
    host.request(&rt, 7, NOW_MS);
    let decided = host.decided.borrow();
    let (_, last) = decided.last().unwrap();
    let why = last.failed.as_deref().unwrap();
    assert!(
        why.contains("cluster quotad") && why.contains("BadArgument"),
        "{why}"
    );
    assert!(!host.counts.borrow().contains(&Count::StoreCalls));
}

#[test]
fn an_unreadable_answer_is_a_failure_and_over_limit_refuses() {
    let rt = runtime(10);
    let host = Fake::new(&rt);
    host.request(&rt, 7, NOW_MS);
    let (token, _, _) = host.calls()[0];
    *host.body.borrow_mut() = vec![0x0a];
    on_response(&host, token, 0, 1, NOW_MS + 5);
    let why = host
        .decided
        .borrow()
        .last()
        .unwrap()
        .1
        .failed
        .clone()
        .unwrap();
    assert!(why.contains("not readable"), "{why}");

    let host = Fake::new(&rt);
    host.request(&rt, 9, NOW_MS);
    let (token, _, _) = host.calls()[0];
    *host.body.borrow_mut() = answer(2, &[0]);
    on_response(&host, token, 0, 0, NOW_MS + 5);
    assert!(
        host.resumed().is_empty(),
        "over the limit: answered, not resumed"
    );
    assert_eq!(host.held(), 0);
}

#[test]
fn a_request_held_past_its_deadline_gets_a_store_error_on_the_tick() {
    let rt = runtime(10);
    let host = Fake::new(&rt);
    host.request(&rt, 7, NOW_MS);
    // Before the deadline (2 × (timeout + claim margin)) the tick decides it again and it
    // stays held on the claimed refill.
    on_tick(&host, NOW_MS + 100);
    assert_eq!(host.held(), 1);
    assert_eq!(host.decided.borrow().last().unwrap().1.failed, None);
    let deadline = NOW_MS + 2 * (50 + CLAIM_MARGIN_MS);
    on_tick(&host, deadline);
    let why = host.decided.borrow().last().unwrap().1.failed.clone();
    assert_eq!(
        why.as_deref(),
        Some("no lease from the rate limit service within the timeout")
    );
    assert_eq!(host.held(), 0);
}

#[test]
fn a_gone_request_gives_up_its_call_and_the_next_one_takes_the_refill_over() {
    let rt = runtime(10);
    let host = Fake::new(&rt);
    host.request(&rt, 7, NOW_MS);
    host.request(&rt, 8, NOW_MS);
    assert_eq!(host.calls().len(), 1);
    host.gone.borrow_mut().push(7);
    forget(&host, 7, NOW_MS + 1);
    assert_eq!(host.state.borrow().calls(), 0, "the call of 7 is given up");
    assert_eq!(host.held(), 1);
    // The claim was released: on the tick, 8 claims the refill and the root context calls.
    on_tick(&host, NOW_MS + 10);
    let calls = host.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].1, ROOT,
        "made from the root context, which outlives 8"
    );
    // The answer to a call of a gone request is ignored.
    on_response(&host, calls[0].0, 0, 0, NOW_MS + 20);
    assert!(host.resumed().is_empty());
}

#[test]
fn a_lease_down_to_half_is_refilled_ahead_from_the_root_context_on_the_next_tick() {
    let rt = runtime(10);
    let host = Fake::new(&rt);
    host.request(&rt, 7, NOW_MS);
    let (token, _, _) = host.calls()[0];
    *host.body.borrow_mut() = answer(1, &[90]);
    on_response(&host, token, 0, 0, NOW_MS + 5);
    let granted = host.calls()[0].2;
    assert!(granted >= 4, "a grant of {granted} can be refilled ahead");
    // Spend the lease until a request claims the refill ahead (it goes on at once).
    let mut context = 10;
    while host.ticks().last() != Some(&SOON) {
        assert!(context < 10 + granted as u32, "no refill ahead was claimed");
        let step = host.request(&rt, context, NOW_MS + 10);
        assert!(matches!(step, Step::Continue { .. }), "{step:?}");
        context += 1;
    }
    assert_eq!(host.calls().len(), 1, "not from the request's context");
    assert!(host.counts.borrow().contains(&Count::RefillsAhead));
    on_tick(&host, NOW_MS + 11);
    let calls = host.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].1, ROOT);
    assert_eq!(host.ticks().last(), Some(&Duration::from_secs(1)));
}

#[test]
fn retick_restores_the_polling_tick_after_a_reconfiguration() {
    let rt = runtime(10);
    let host = Fake::new(&rt);
    host.request(&rt, 7, NOW_MS);
    assert_eq!(host.ticks(), [POLL]);
    retick(&host);
    assert_eq!(
        host.ticks(),
        [POLL, POLL],
        "set again: the root reset it to idle"
    );
}

/// The RateLimit field of a request resumed from another context.
fn state_of(host: &Fake, context: u32) -> String {
    fields_of(host, context)
        .map(|f| f.state)
        .unwrap_or_default()
}

#[test]
fn an_answer_wakes_only_its_consumers_requests_and_each_keeps_its_fields() {
    let rt = runtime(10);
    let host = Fake::new(&rt);
    assert!(idle(&host));
    host.beta.borrow_mut().push(8);
    host.request(&rt, 7, NOW_MS);
    host.request(&rt, 8, NOW_MS);
    assert!(!idle(&host));
    assert_eq!(
        host.state.borrow().calls(),
        2,
        "one refill per consumer, in flight"
    );
    let calls = host.calls();
    *host.body.borrow_mut() = answer(1, &[90]);
    on_response(&host, calls[0].0, 0, 0, NOW_MS + 5);
    assert_eq!(
        host.resumed(),
        [7],
        "beta's request waits for beta's answer"
    );
    let decided_8 = || {
        host.decided
            .borrow()
            .iter()
            .filter(|(c, _)| *c == 8)
            .count()
    };
    assert_eq!(decided_8(), 1, "not even decided again");
    assert_eq!((host.held(), host.state.borrow().calls()), (1, 1));
    on_response(&host, calls[1].0, 0, 0, NOW_MS + 6);
    assert_eq!(host.resumed(), [7, 8]);
    // Forgetting one request drops its fields only; each context gets its own.
    forget(&host, 8, NOW_MS + 7);
    assert!(state_of(&host, 8).is_empty());
    assert!(state_of(&host, 7).starts_with("\"daily\""), "acme's plan");
    assert!(idle(&host));

    let host = Fake::new(&rt);
    host.beta.borrow_mut().push(8);
    host.request(&rt, 7, NOW_MS);
    host.request(&rt, 8, NOW_MS);
    let calls = host.calls();
    *host.body.borrow_mut() = answer(1, &[90]);
    on_response(&host, calls[0].0, 0, 0, NOW_MS + 5);
    on_response(&host, calls[1].0, 0, 0, NOW_MS + 6);
    assert!(state_of(&host, 8).starts_with("\"hourly\""), "beta's plan");
    assert!(state_of(&host, 7).starts_with("\"daily\""));
}

#[test]
fn an_answer_for_other_limits_fails_its_waiters() {
    let rt = runtime(10);
    let host = Fake::new(&rt);
    host.request(&rt, 7, NOW_MS);
    *host.body.borrow_mut() = answer(1, &[90, 80]);
    on_response(&host, host.calls()[0].0, 0, 0, NOW_MS + 5);
    let why = host.decided.borrow().last().unwrap().1.failed.clone();
    assert_eq!(
        why.as_deref(),
        Some("the rate limit service answered for other limits")
    );
}

#[test]
fn a_refill_claimed_from_another_requests_callback_is_made_from_the_root_on_the_tick() {
    // Leases of one: the answer to 7's call grants one unit, which 7 takes; 8, decided again
    // in that callback, claims the next refill, made from the root context on the next tick
    // (a call filed under 7's context would be lost when 7 ends).
    let rt = runtime(1);
    let host = Fake::new(&rt);
    host.request(&rt, 7, NOW_MS);
    host.request(&rt, 8, NOW_MS);
    *host.body.borrow_mut() = answer(1, &[99]);
    on_response(&host, host.calls()[0].0, 0, 0, NOW_MS + 5);
    assert_eq!(host.resumed(), [7]);
    assert_eq!(host.calls().len(), 1, "not from 7's callback");
    on_tick(&host, NOW_MS + 10);
    let calls = host.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[1].1, calls[1].2), (ROOT, 1), "from the root context");
}

#[test]
fn the_request_names_the_calendar_offset_only_when_one_is_configured() {
    let has_offset = |rt: &Rc<Runtime>| {
        let host = Fake::new(rt);
        host.request(rt, 7, NOW_MS);
        let messages = host.messages.borrow();
        let message = &messages[0].1;
        let text = String::from_utf8_lossy(message).to_string();
        (text.contains("utc_offset"), text.contains("+05:30"))
    };
    assert_eq!(has_offset(&runtime(10)), (false, false));
    let offset = runtime_with(10, r#", "calendar_utc_offset": "+05:30""#);
    assert_eq!(has_offset(&offset), (true, true));
}

#[test]
fn a_request_is_held_until_its_deadline_and_not_a_millisecond_more() {
    let rt = runtime(10);
    let host = Fake::new(&rt);
    host.request(&rt, 7, NOW_MS);
    let deadline = NOW_MS + 2 * (50 + CLAIM_MARGIN_MS);
    on_tick(&host, deadline - 1);
    assert_eq!(host.held(), 1, "held up to its deadline");
    assert_eq!(host.decided.borrow().last().unwrap().1.failed, None);
    on_tick(&host, deadline);
    assert_eq!(host.held(), 0);
}

#[test]
fn a_held_request_is_decided_again_at_its_own_price() {
    let rt = runtime_with(10, r#", "routes": {"img": {"cost": {"requests": 5}}}"#);
    let host = Fake::new(&rt);
    let priced = Attempt {
        now_ms: NOW_MS,
        price: Price {
            route: Some(0),
            tokens: None,
        },
        headers_forwarded: true,
        ..Attempt::default()
    };
    assert!(matches!(host.attempt(&rt, 7, priced), Step::Wait(_)));
    let (token, _, hits) = host.calls()[0];
    // 100 / 8 / 5: two requests' worth of 5.
    assert_eq!(hits, 10);
    *host.body.borrow_mut() = answer(1, &[90]);
    on_response(&host, token, 0, 0, NOW_MS + 5);
    assert_eq!(host.resumed(), [7]);
    let (context, again) = host.decided.borrow().last().cloned().unwrap();
    assert_eq!(context, 7);
    assert_eq!(
        (
            again.price.route,
            again.headers_forwarded,
            again.waiting_since_ms
        ),
        (Some(0), true, Some(NOW_MS))
    );
    let lease =
        crate::lease::Lease::decode(&host.store.value("tollgate:v1:lease:acme").unwrap()).unwrap();
    assert_eq!(lease.figures[0].units, 5, "10 granted, 5 paid");
}

#[test]
fn a_grant_whose_range_holds_a_threshold_crosses_it_once_for_the_fleet() {
    let rt = runtime_with(
        10,
        r#", "events": {"cluster": "sink", "url": "http://sink/events", "alerts": [50, 80, 100]}"#,
    );
    let host = Fake::new(&rt);
    // acme's daily limit is 100. This Envoy asks for 10; quotad says 52 are left after it:
    // the grant holds counts 39..48 — no threshold.
    host.request(&rt, 7, NOW_MS);
    let (token, _, hits) = host.calls()[0];
    assert_eq!(hits, 10);
    *host.body.borrow_mut() = answer(1, &[52]);
    on_response(&host, token, 0, 0, NOW_MS + 5);
    assert!(host.alerts.borrow().is_empty());
    // Its next grant, after other Envoys took 30: counts 79..88 hold 80.
    let ask = Ask {
        hits: vec![10],
        needs: vec![1],
        worth: 10,
        windows: lease::Lease::decode(&host.store.value("tollgate:v1:lease:acme").unwrap())
            .unwrap()
            .figures
            .iter()
            .map(|f| {
                (
                    crate::window::Bounds {
                        start: f.start,
                        end: f.end,
                    },
                    f.requests,
                )
            })
            .collect(),
        per_envoy: Vec::new(),
    };
    let reached = grant_crossings(&rt.config, 0, &ask, &[12], NOW_MS + 10);
    assert_eq!(
        reached
            .iter()
            .map(|c| (c.threshold, c.used))
            .collect::<Vec<_>>(),
        [(80, 88)]
    );
    // The range 89..100 holds 100 (the last unit): that grant alerts for 100, once.
    let last = grant_crossings(
        &rt.config,
        0,
        &Ask {
            hits: vec![12],
            ..ask.clone()
        },
        &[0],
        NOW_MS,
    );
    assert_eq!(last.iter().map(|c| c.threshold).collect::<Vec<_>>(), [100]);
    // A look (no hits) and an answer of another shape cross nothing.
    assert!(grant_crossings(
        &rt.config,
        0,
        &Ask {
            hits: vec![0],
            ..ask.clone()
        },
        &[0],
        NOW_MS
    )
    .is_empty());
    assert!(grant_crossings(&rt.config, 0, &ask, &[], NOW_MS).is_empty());
    // A plan without alerts (beta's own plan has them too: the global list) ... and a
    // configuration without events: nothing.
    let quiet = runtime(10);
    assert!(grant_crossings(&quiet.config, 0, &ask, &[12], NOW_MS).is_empty());
}

#[test]
fn the_answer_to_a_refill_is_where_a_fleet_alert_comes_from() {
    let rt = runtime_with(
        10,
        r#", "events": {"cluster": "sink", "url": "http://sink/events", "alerts": [50]}"#,
    );
    let host = Fake::new(&rt);
    host.request(&rt, 7, NOW_MS);
    let (token, _, _) = host.calls()[0];
    // 10 granted, 45 left after: counts 46..55 hold 50.
    *host.body.borrow_mut() = answer(1, &[45]);
    on_response(&host, token, 0, 0, NOW_MS + 5);
    let alerts = host.alerts.borrow();
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0].threshold, alerts[0].used, alerts[0].requests),
        (50, 55, 100)
    );
    // The admission itself reached no threshold of its own (the lease's view is not a count).
    assert_eq!(host.resumed(), [7]);
}

/// A `RateLimitResponse` with each limit's own code and `limit_remaining`.
fn answer_each(overall: u8, each: &[(u8, u32)]) -> Vec<u8> {
    let mut out = vec![0x08, overall];
    for (code, left) in each {
        let status = vec![0x08, *code, 0x18, *left as u8];
        out.push(0x12);
        out.push(status.len() as u8);
        out.extend(status);
    }
    out
}

/// acme's plan sells credits for its daily quota (3 a day); its burst limit stays counted.
fn credits_runtime() -> Rc<Runtime> {
    let config = Config::from_json(
        br#"{"plans": {"free": {"limits": [{"name": "daily", "requests": 3, "window": "day"},
                                          {"name": "burst", "requests": 100, "window": "minute"}],
                               "credits": ["daily"]}},
             "consumers": {"acme": {"plan": "free", "keys": ["acme-key"]}},
             "store": {"rls": {"cluster": "quotad", "timeout": "50ms", "lease": 10}},
             "payments": {"facilitator": {"cluster": "f", "url": "http://f/x402"},
                          "resource": {"url": "https://api.example.com/"},
                          "packs": [{"name": "ten", "credits": 10, "network": "eip155:84532",
                                     "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                                     "amount": "10000",
                                     "pay_to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
                                     "extra": {"name": "USDC", "version": "2"}}]}}"#,
    )
    .unwrap();
    Rc::new(Runtime {
        config,
        memo: Memo::default(),
        shadow_log: ShadowLog::default(),
    })
}

#[test]
fn a_refusal_only_credits_cure_draws_on_the_balance_and_counts_the_other_limits() {
    let rt = credits_runtime();
    let host = Fake::new(&rt);
    assert!(matches!(host.request(&rt, 7, NOW_MS), Step::Wait(_)));
    let (token, _, _) = host.calls()[0];
    // The store: the daily quota is spent, the burst limit has room.
    *host.body.borrow_mut() = answer_each(2, &[(2, 0), (1, 50)]);
    on_response(&host, token, 0, 0, NOW_MS + 5);
    assert_eq!(
        host.resumed(),
        Vec::<u32>::new(),
        "not resumed: it draws first"
    );
    // Decided from a request's callback, the draw waits for the root's tick: its answer goes
    // to the context that makes the call, and only the root outlives every request.
    assert!(host.draws.borrow().is_empty());
    assert_eq!(host.held(), 1);
    on_tick(&host, NOW_MS + 15);
    assert_eq!(host.held(), 0);
    let draws = host.draws.borrow();
    assert_eq!(draws.len(), 1, "the held request was handed to a draw");
    let (context, attempt, ask) = draws[0].clone();
    assert_eq!(context, 7);
    assert_eq!((ask.consumer, ask.cost), (0, 1));
    assert!(ask.usages[0].violated && !ask.usages[1].violated);

    // The draw: one credit, and the burst limit counted by its cost, in one call.
    let rls = rt.config.store.as_ref().unwrap();
    let message = draw_request(&rt.config, rls, &ask).unwrap();
    let draw = crate::paywire::DrawRequest::decode(message.as_slice()).unwrap();
    assert_eq!(
        (draw.domain.as_str(), draw.consumer.as_str(), draw.cost),
        ("tollgate", "acme", 1)
    );
    assert_eq!(hits_addend(&draw.limits), 1);
    let text = String::from_utf8_lossy(&draw.limits);
    assert!(text.contains("burst") && !text.contains("daily"), "{text}");

    // Drawn: admitted, the burst limit's count as the store said plus this request; the
    // daily quota took nothing.
    let plan = &rt.config.plans[0];
    let answered = crate::paywire::DrawResponse {
        drawn: true,
        balance: 9,
        used: vec![7],
    }
    .encode_to_vec();
    let drawn = drawn_of(ask.clone(), plan, &answered).unwrap();
    let step = host.attempt(
        &rt,
        7,
        Attempt {
            drawn: Some(drawn),
            ..attempt.clone()
        },
    );
    let Step::Continue {
        fields: Some(fields),
        ..
    } = step
    else {
        panic!("{step:?}");
    };
    assert!(fields.state.contains("\"burst\";r=92"), "{}", fields.state);
    // Not drawn (the balance is short): refused, nothing else asked.
    let short = crate::paywire::DrawResponse {
        drawn: false,
        balance: 0,
        used: vec![7],
    }
    .encode_to_vec();
    let refused = drawn_of(ask.clone(), plan, &short).unwrap();
    let step = host.attempt(
        &rt,
        7,
        Attempt {
            drawn: Some(refused),
            ..attempt.clone()
        },
    );
    assert_eq!(step, Step::Replied);
    // An answer for other limits is not an answer to this draw.
    let other = crate::paywire::DrawResponse {
        drawn: true,
        balance: 0,
        used: vec![1, 2],
    }
    .encode_to_vec();
    assert!(drawn_of(ask, plan, &other).is_none());
}

#[test]
fn a_refusal_by_a_limit_credits_do_not_stand_in_for_draws_nothing() {
    let rt = credits_runtime();
    let host = Fake::new(&rt);
    host.request(&rt, 7, NOW_MS);
    let (token, _, _) = host.calls()[0];
    // The burst limit is spent: no credit cures that.
    *host.body.borrow_mut() = answer_each(2, &[(1, 2), (2, 0)]);
    on_response(&host, token, 0, 0, NOW_MS + 5);
    assert!(host.draws.borrow().is_empty());
    let last = host.decided.borrow().last().cloned().unwrap();
    assert_eq!(last.0, 7);
}
