//! The decision for one request: who is calling, are they in good standing, and do their
//! limits allow one more request. Pure apart from the [`Store`] it counts in.

use crate::config::{Config, Plan, Rls, Standing};
use crate::credentials::Credential;
use crate::decision::{Attempt, Caller, Decision, Denial, DrawAsk, Drawn};
use crate::lease::{self, Clock, Take, Terms};
use crate::memo::Memo;
use crate::quota::{check_and_take_with, cost_at, look, Usage};
use crate::store::CountError;
use crate::store::Store;

/// Who presented the credential: its consumer (or the anonymous one) and plan.
#[inline]
fn caller_of(config: &Config, credential: Credential) -> Result<Caller<'_>, Denial<'_>> {
    let consumer = match credential {
        Credential::Key(presented) => config
            .consumer_for_key(&presented.key)
            .ok_or_else(|| config.unknown_key())?,
        Credential::Missing => config
            .anonymous
            .and_then(|i| config.consumers.get(i))
            .ok_or(Denial::MissingCredential)?,
        Credential::Malformed(reason) => return Err(Denial::MalformedCredential(reason)),
    };
    // No plan is unreachable for a validated configuration; refuse rather than trap.
    let plan = config.plan_of(consumer).ok_or(Denial::UnknownKey)?;
    Ok(Caller { consumer, plan })
}

/// Local mode: counts the request in the consumer's record in this Envoy's shared data.
#[inline]
fn from_record<'c>(
    config: &Config,
    caller: Caller<'c>,
    costs: &[u64],
    now: i64,
    store: &impl Store,
    memo: &Memo,
) -> Decision<'c> {
    let (consumer, plan) = (caller.consumer, caller.plan);
    match check_and_take_with(
        store,
        &consumer.store_key,
        &plan.limits,
        costs,
        &plan.credits,
        now,
        config.utc_offset,
    ) {
        Ok(counted) => {
            if counted.replaced_corrupt {
                log::warn!(
                    "consumer {}: its shared-data record was not readable and was reset",
                    consumer.name()
                );
            }
            if counted.admitted {
                Decision::Allow {
                    caller,
                    usages: counted.usages,
                    refill: None,
                    drawn: counted.drawn,
                }
            } else {
                if lasting(plan, &counted.usages) {
                    memo.remember_refused(consumer.id, &counted.usages);
                }
                Decision::Deny(Denial::QuotaExceeded {
                    caller,
                    usages: counted.usages,
                })
            }
        }
        Err(error) => {
            let reason = error.reason();
            Decision::Deny(Denial::StoreUnavailable {
                caller,
                contended: error == CountError::Contended,
                reason,
            })
        }
    }
}

/// Whether a refusal lasts until a violated limit's window ends, so that the memo may answer
/// for the consumer until then: every violated limit is spent (not merely short of this
/// request's cost) and counts requests (counts in settled units go down with refunds).
fn lasting(plan: &Plan, usages: &[Usage]) -> bool {
    // A plan with credits: a purchase may cure the refusal at any time.
    plan.credits.is_empty()
        && plan.limits.iter().zip(usages).all(|(limit, usage)| {
            !usage.violated || (!limit.unit.settled() && usage.used >= usage.requests)
        })
}

/// The memo's answer for a consumer known to be refused, if it refuses this request: a
/// remembered spent limit refuses every request that takes from it (cost above 0).
fn remembered<'c>(
    memo: &Memo,
    caller: Caller<'c>,
    costs: &[u64],
    now: i64,
    utc_offset: i64,
) -> Option<Decision<'c>> {
    let mut usages = memo.refused(caller.consumer.id, &caller.plan.limits, now, utc_offset)?;
    for (i, usage) in usages.iter_mut().enumerate() {
        usage.cost = cost_at(costs, i);
        usage.violated = usage.violated && usage.cost > 0;
    }
    usages
        .iter()
        .any(|u| u.violated)
        .then_some(Decision::Deny(Denial::QuotaExceeded { caller, usages }))
}

/// A dry run: the decision [`from_record`] would make, nothing taken or remembered.
fn look_at_record<'c>(
    config: &Config,
    caller: Caller<'c>,
    costs: &[u64],
    now: i64,
    store: &impl Store,
) -> Decision<'c> {
    let (consumer, plan) = (caller.consumer, caller.plan);
    match look(
        store,
        &consumer.store_key,
        &plan.limits,
        costs,
        now,
        config.utc_offset,
    ) {
        // A limit credits stand in for is left to the decision with the body (which draws
        // on the balance, or refuses).
        Ok(usages)
            if usages
                .iter()
                .enumerate()
                .any(|(i, u)| u.violated && !plan.credits.contains(&i)) =>
        {
            Decision::Deny(Denial::QuotaExceeded { caller, usages })
        }
        Ok(usages) => Decision::Allow {
            caller,
            usages,
            refill: None,
            drawn: 0,
        },
        Err(e) => Decision::Deny(Denial::StoreUnavailable {
            caller,
            contended: false,
            reason: e.0,
        }),
    }
}

/// Decides a request. `now` is Unix seconds.
pub fn decide<'c>(
    config: &'c Config,
    credential: Credential,
    now: i64,
    store: &impl Store,
    memo: &Memo,
) -> Decision<'c> {
    let attempt = Attempt {
        now_ms: now.saturating_mul(1000),
        ..Attempt::default()
    };
    decide_with(config, credential, now, store, memo, &attempt)
}

/// [`decide`], for one attempt: its price, a dry run, and fleet mode's inputs.
pub fn decide_with<'c>(
    config: &'c Config,
    credential: Credential,
    now: i64,
    store: &impl Store,
    memo: &Memo,
    attempt: &Attempt,
) -> Decision<'c> {
    let caller = match caller_of(config, credential) {
        Ok(caller) => caller,
        Err(denial) => return Decision::Deny(denial),
    };
    let (consumer, plan) = (caller.consumer, caller.plan);
    match consumer.standing(now) {
        Standing::Active | Standing::Grace { .. } => {}
        Standing::Suspended => return Decision::Deny(Denial::Suspended(caller)),
        Standing::Expired { at } => {
            return Decision::Deny(Denial::Expired {
                caller,
                expired_at: at,
            })
        }
        Standing::PaymentRequired { grace_until } => {
            return Decision::Deny(Denial::PaymentRequired {
                caller,
                grace_until,
            })
        }
    }
    if plan.limits.is_empty() {
        return Decision::Allow {
            caller,
            usages: Vec::new(),
            refill: None,
            drawn: 0,
        };
    }
    let costs = attempt.price.costs(config, plan);
    if let Some(refused) = remembered(memo, caller, &costs, now, config.utc_offset) {
        return refused;
    }
    if let Some(rls) = &config.store {
        return from_lease(config, rls, caller, &costs, now, store, memo, attempt);
    }
    if attempt.dry_run {
        return look_at_record(config, caller, &costs, now, store);
    }
    from_record(config, caller, &costs, now, store, memo)
}

/// Fleet mode: pay for the request from the consumer's lease, or wait for its refill. A dry
/// run only looks at the lease (no call, nothing spent).
#[allow(clippy::too_many_arguments)] // the request's whole context, passed along as it is
fn from_lease<'c>(
    config: &'c Config,
    rls: &Rls,
    caller: Caller<'c>,
    costs: &[u64],
    now: i64,
    store: &impl Store,
    memo: &Memo,
    attempt: &Attempt,
) -> Decision<'c> {
    let store_error = |contended: bool, reason: String| {
        Decision::Deny(Denial::StoreUnavailable {
            caller,
            contended,
            reason,
        })
    };
    if let Some(reason) = &attempt.failed {
        return store_error(false, reason.clone());
    }
    if let Some(drawn) = &attempt.drawn {
        return from_draw(caller, drawn);
    }
    let terms = Terms::of(rls, config.utc_offset);
    let clock = Clock {
        now,
        now_ms: attempt.now_ms,
    };
    let key = lease::key(caller.consumer.name());
    let limits = &caller.plan.limits;
    let taken = if attempt.dry_run {
        lease::peek(store, &key, limits, costs, clock, &terms)
    } else {
        lease::take(
            store,
            &key,
            limits,
            costs,
            clock,
            &terms,
            attempt.waiting_since_ms,
        )
    };
    match taken {
        Ok(Take::Admitted(usages, refill)) => Decision::Allow {
            caller,
            usages,
            refill,
            drawn: 0,
        },
        Ok(Take::Refused(usages)) => {
            if let Some(cost) = drawable(config, caller.plan, &usages, attempt) {
                let ask = DrawAsk {
                    consumer: caller.consumer.id,
                    cost,
                    usages,
                };
                return Decision::Draw { caller, ask };
            }
            if !attempt.dry_run && lasting(caller.plan, &usages) {
                memo.remember_refused(caller.consumer.id, &usages);
            }
            Decision::Deny(Denial::QuotaExceeded { caller, usages })
        }
        // The store said no without saying which limit: nothing to remember.
        Ok(Take::Over(usages)) => Decision::Deny(Denial::QuotaExceeded { caller, usages }),
        Ok(Take::Refill(ask)) => Decision::Wait {
            caller,
            refill: Some(ask),
        },
        Ok(Take::Wait { .. }) => Decision::Wait {
            caller,
            refill: None,
        },
        Err(error) => store_error(error == CountError::Contended, error.reason()),
    }
}

/// Fleet mode: the credits to draw for a refusal that only limits credits stand in for made,
/// if a draw can pay for it: the largest cost among them (as local mode draws). Not for a
/// dry run, nor for a request whose cost is settled from its response (LLM and cost-header
/// routes: a draw cannot be given back in part, yet).
fn drawable(config: &Config, plan: &Plan, usages: &[Usage], attempt: &Attempt) -> Option<u64> {
    if plan.credits.is_empty() || attempt.dry_run || attempt.headers_forwarded {
        return None;
    }
    if attempt.price.settled_later(config) {
        return None;
    }
    let covered = |i: &usize| plan.credits.contains(i);
    let mut cost = None;
    for (i, usage) in usages.iter().enumerate().filter(|(_, u)| u.violated) {
        if !covered(&i) {
            return None;
        }
        cost = cost.max(Some(usage.cost));
    }
    cost
}

/// Fleet mode: the decision a draw's answer makes. Drawn: the limits credits stand in for
/// took nothing, the others what the store counted. Not drawn: the refusal, with what the
/// store said of the counted limits.
fn from_draw<'c>(caller: Caller<'c>, drawn: &Drawn) -> Decision<'c> {
    let mut usages = drawn.ask.usages.clone();
    let counted: Vec<usize> = drawn.ask.counted(caller.plan).collect();
    for (i, used) in counted.iter().zip(&drawn.used) {
        if let Some(u) = usages.get_mut(*i) {
            u.used = *used;
            u.violated = used.saturating_add(u.cost) > u.requests;
        }
    }
    if !drawn.drawn {
        return Decision::Deny(Denial::QuotaExceeded { caller, usages });
    }
    for (i, u) in usages.iter_mut().enumerate() {
        u.violated = false;
        if counted.contains(&i) {
            u.used = u.used.saturating_add(u.cost);
        } else {
            // Paid from the balance: the limits credits stand in for count nothing of it.
            u.cost = 0;
        }
    }
    Decision::Allow {
        caller,
        usages,
        refill: None,
        drawn: drawn.ask.cost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Presented;
    use crate::decision::{Price, TokenAsk};
    use crate::store::MemoryStore;

    const CONFIG: &str = r#"{
      "plans": {
        "free": { "limits": [ {"name": "daily", "requests": 2, "window": "day"} ] },
        "unlimited": { "limits": [] }
      },
      "consumers": {
        "acme":    { "plan": "free", "keys": ["acme-1", "acme-2"] },
        "globex":  { "plan": "free", "keys": ["globex"], "expires_at": "2027-01-01T00:00:00Z" },
        "initech": { "plan": "free", "keys": ["initech"], "status": "suspended" },
        "hooli":   { "plan": "unlimited", "keys": ["hooli"] },
        "stark":   { "plan": "free", "keys": ["stark"], "status": "past_due", "grace_until": "2026-11-18T11:06:40Z" },
        "wayne":   { "plan": "free", "keys": ["wayne"], "status": "past_due" },
        "tyrell":  { "plan": "free", "keys": ["tyrell"], "status": "past_due", "grace_until": "2026-11-18T11:06:40Z",
                     "expires_at": "2026-11-01T00:00:00Z" }
      }
    }"#;
    const NOW: i64 = 1_795_000_000;

    fn key(k: &str) -> Credential {
        Credential::Key(Presented {
            key: k.as_bytes().to_vec(),
            source: 0,
        })
    }

    fn name(d: &Decision) -> String {
        match d {
            Decision::Allow { caller, .. } => format!("allow {}", caller.consumer.name()),
            Decision::Wait { .. } => "wait".into(),
            Decision::Draw { .. } => "draw".into(),
            Decision::Deny(denial) => format!("{denial:?}")
                .split([' ', '('])
                .next()
                .unwrap()
                .into(),
        }
    }

    #[test]
    fn decisions() {
        let config = Config::from_json(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        crate::quota::create_records(&config, &store).unwrap();
        let cases = [
            (Credential::Missing, NOW, "MissingCredential"),
            (Credential::Malformed("empty"), NOW, "MalformedCredential"),
            (key("nobody"), NOW, "UnknownKey"),
            (key("initech"), NOW, "Suspended"),
            (key("globex"), 1_798_761_600, "Expired"),
            (key("globex"), 1_798_761_599, "allow globex"),
            (key("acme-1"), NOW, "allow acme"),
            (key("acme-2"), NOW, "allow acme"),
            (key("acme-1"), NOW, "QuotaExceeded"),
            (key("hooli"), NOW, "allow hooli"),
            // NOW is 2026-11-18T11:06:40Z, stark's grace_until: admitted and counted before it.
            (key("stark"), NOW - 1, "allow stark"),
            (key("stark"), NOW - 1, "allow stark"),
            (key("stark"), NOW - 1, "QuotaExceeded"),
            (key("stark"), NOW, "PaymentRequired"),
            (key("wayne"), NOW, "PaymentRequired"),
            // An ended subscription is expired, whatever its payment.
            (key("tyrell"), NOW - 1, "Expired"),
        ];
        for (credential, now, want) in cases {
            let d = decide(&config, credential.clone(), now, &store, &Memo::default());
            assert_eq!(name(&d), want, "{credential:?}");
        }
        // Suspended callers consume nothing; the unlimited plan has no record at all.
        let record = |name: &str| store.value(&format!("tollgate:v1:consumer:{name}"));
        assert_eq!(
            record("initech").as_deref(),
            Some(crate::quota::empty_record())
        );
        assert_eq!(record("hooli"), None);
        assert_eq!(
            store.len(),
            6 + 1,
            "six records and the marker of their creation"
        );
    }

    #[test]
    fn anonymous_plan_counts_requests_without_credential_together() {
        let json = CONFIG.replace(
            "\"consumers\"",
            "\"anonymous_plan\": \"free\", \"consumers\"",
        );
        let config = Config::from_json(json.as_bytes()).unwrap();
        let store = MemoryStore::new();
        crate::quota::create_records(&config, &store).unwrap();
        let keyless = || {
            name(&decide(
                &config,
                Credential::Missing,
                NOW,
                &store,
                &Memo::default(),
            ))
        };
        assert_eq!(keyless(), "allow anonymous");
        assert_eq!(keyless(), "allow anonymous");
        assert_eq!(keyless(), "QuotaExceeded");
        // A wrong key is still refused, not downgraded to anonymous.
        assert_eq!(
            name(&decide(
                &config,
                key("nobody"),
                NOW,
                &store,
                &Memo::default()
            )),
            "UnknownKey"
        );
    }

    use crate::store::CountingStore as Counting;

    #[test]
    fn a_flood_of_refused_requests_does_not_touch_the_store() {
        let config = Config::from_json(
            br#"{"plans": {"p": {"limits": [{"name": "minute", "requests": 2, "window": "minute"},
                                              {"name": "second", "requests": 100, "window": "second"}]}},
                 "consumers": {"a": {"plan": "p", "keys": ["a"]}}}"#,
        )
        .unwrap();
        let inner = MemoryStore::new();
        crate::quota::create_records(&config, &inner).unwrap();
        let store = Counting::new(&inner);
        let memo = Memo::default();
        let start = NOW - NOW % 60;
        for _ in 0..2 {
            assert!(matches!(
                decide(&config, key("a"), start, &store, &memo),
                Decision::Allow { .. }
            ));
        }
        let first = decide(&config, key("a"), start, &store, &memo);
        assert!(matches!(
            first,
            Decision::Deny(Denial::QuotaExceeded { .. })
        ));
        let reads = store.gets.get();
        for now in start..start + 60 {
            let Decision::Deny(Denial::QuotaExceeded { usages, .. }) =
                decide(&config, key("a"), now, &store, &memo)
            else {
                panic!("refused until the minute ends")
            };
            // The per-second limit is reported for the current second, untouched.
            assert_eq!(
                (usages[1].used, usages[1].bounds.start),
                (if now == start { 2 } else { 0 }, now)
            );
            assert_eq!(usages[0].remaining(), 0);
        }
        assert_eq!(
            store.gets.get(),
            reads,
            "no shared-data read while the minute is spent"
        );
        // The next minute: the store is asked again and the request is admitted.
        assert!(matches!(
            decide(&config, key("a"), start + 60, &store, &memo),
            Decision::Allow { .. }
        ));
        assert_eq!(store.gets.get(), reads + 1);
    }

    #[test]
    fn log_descriptions_name_the_reason_and_consumer_never_the_key() {
        let config = Config::from_json(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        crate::quota::create_records(&config, &store).unwrap();
        let describe = |credential: Credential, now: i64| match decide(
            &config,
            credential,
            now,
            &store,
            &Memo::default(),
        ) {
            Decision::Deny(denial) => denial.describe(),
            Decision::Allow { .. } | Decision::Wait { .. } | Decision::Draw { .. } => {
                "allow".into()
            }
        };
        assert_eq!(describe(Credential::Missing, NOW), "missing_credential");
        assert_eq!(
            describe(Credential::Malformed("empty key"), NOW),
            "invalid_credential (empty key)"
        );
        assert_eq!(describe(key("nobody"), NOW), "invalid_credential");
        assert_eq!(
            describe(key("initech"), NOW),
            "suspended consumer=initech plan=free"
        );
        assert_eq!(
            describe(key("globex"), 1_798_761_600),
            "expired consumer=globex plan=free"
        );
        for _ in 0..2 {
            describe(key("acme-1"), NOW);
        }
        assert_eq!(
            describe(key("acme-1"), NOW),
            "quota consumer=acme plan=free"
        );
        let failed = decide(
            &config,
            key("acme-2"),
            NOW,
            &crate::store::FailingStore,
            &Memo::default(),
        );
        let Decision::Deny(denial) = failed else {
            panic!("a failing store refuses")
        };
        assert_eq!(
            denial.describe(),
            "store_error consumer=acme (shared data failed: down)"
        );
    }

    /// Shared data where every write loses its CAS race.
    struct AlwaysRaced(MemoryStore);

    impl Store for AlwaysRaced {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, crate::store::StoreError> {
            self.0.get(key)
        }

        fn set(&self, _: &str, _: &[u8], _: u32) -> Result<(), crate::store::SetError> {
            Err(crate::store::SetError::CasMismatch)
        }
    }

    #[test]
    fn a_record_or_lease_that_stays_contended_is_a_contended_store_error() {
        let fleet = r#"{"plans": {"free": {"limits": [{"name": "d", "requests": 5, "window": "day"}]}},
                        "consumers": {"acme": {"plan": "free", "keys": ["acme-1"]}},
                        "store": {"rls": {"cluster": "quotad"}}}"#;
        for json in [CONFIG, fleet] {
            let config = Config::from_json(json.as_bytes()).unwrap();
            let raced = AlwaysRaced(MemoryStore::new());
            crate::counters::create_counters(&config, &raced.0).unwrap();
            let contended = decide(&config, key("acme-1"), NOW, &raced, &Memo::default());
            let Decision::Deny(Denial::StoreUnavailable {
                contended, reason, ..
            }) = contended
            else {
                panic!("{contended:?}");
            };
            assert!(contended, "{reason}");
            assert!(reason.contains("stayed contended"), "{reason}");
            let failed = decide(
                &config,
                key("acme-1"),
                NOW,
                &crate::store::FailingStore,
                &Memo::default(),
            );
            assert!(
                matches!(
                    failed,
                    Decision::Deny(Denial::StoreUnavailable {
                        contended: false,
                        ..
                    })
                ),
                "{failed:?}"
            );
        }
    }

    const PRICED: &str = r#"{"plans": {"llm": {"max_output_tokens": 300, "limits": [
                              {"name": "daily", "requests": 100, "window": "day"},
                              {"name": "tokens", "tokens": 1000, "window": "day"},
                              {"name": "credits", "units": 50, "unit": "credits", "window": "day"}]}},
                            "consumers": {"acme": {"plan": "llm", "keys": ["acme-1"]}},
                            "routes": {"images": {"cost": {"credits": 10}},
                                       "free": {"cost": {"credits": 0, "requests": 0}}}}"#;

    fn priced(route: Option<&str>, tokens: Option<TokenAsk>, config: &Config) -> Attempt {
        Attempt {
            now_ms: NOW * 1000,
            price: Price {
                route: route.and_then(|r| config.routes.find(r.as_bytes()).map(|(i, _)| i)),
                tokens,
            },
            ..Attempt::default()
        }
    }

    fn used(d: &Decision) -> Vec<u64> {
        match d {
            Decision::Allow { usages, .. } => usages.iter().map(|u| u.used).collect(),
            Decision::Deny(Denial::QuotaExceeded { usages, .. }) => {
                usages.iter().map(|u| u.used).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_route_prices_its_units_and_tokens_are_taken_only_on_llm_requests() {
        let config = Config::from_json(PRICED.as_bytes()).unwrap();
        let store = MemoryStore::new();
        crate::quota::create_records(&config, &store).unwrap();
        let memo = Memo::default();
        let go =
            |attempt: &Attempt| decide_with(&config, key("acme-1"), NOW, &store, &memo, attempt);
        // A plain request: 1 request, 1 credit, no tokens.
        assert_eq!(used(&go(&priced(None, None, &config))), [1, 0, 1]);
        // The images route: 10 credits.
        assert_eq!(
            used(&go(&priced(Some("images"), None, &config))),
            [2, 0, 11]
        );
        // A free route takes nothing it prices at 0.
        assert_eq!(used(&go(&priced(Some("free"), None, &config))), [2, 0, 11]);
        // An LLM request: input 100 + cap 500 lowered to the plan's 300 × n 2 × weight 1.
        let ask = TokenAsk {
            input: 100,
            cap: 500,
            n: 2,
            output_weight: 1000,
        };
        let d = go(&priced(None, Some(ask), &config));
        assert_eq!(used(&d), [3, 700, 12]);
        assert_eq!(ask.cap_for(&config.plans[0]), 300);
        // The next one needs 700 and 300 are left: refused, nothing taken, and not
        // remembered (a smaller request still fits).
        let d = go(&priced(None, Some(ask), &config));
        let Decision::Deny(Denial::QuotaExceeded { usages, .. }) = &d else {
            panic!("{d:?}");
        };
        assert_eq!((usages[1].cost, usages[1].remaining()), (700, 300));
        assert!(usages[1].violated && !usages[0].violated);
        let small = TokenAsk {
            cap: 100,
            n: 1,
            ..ask
        };
        assert_eq!(used(&go(&priced(None, Some(small), &config))), [4, 900, 13]);
    }

    #[test]
    fn a_spent_request_limit_is_remembered_but_never_refuses_a_request_it_does_not_price() {
        let json = r#"{"plans": {"p": {"limits": [{"name": "daily", "requests": 1, "window": "day"}]}},
                       "consumers": {"acme": {"plan": "p", "keys": ["acme-1"]}},
                       "routes": {"free": {"cost": {"requests": 0}}}}"#;
        let config = Config::from_json(json.as_bytes()).unwrap();
        let store = MemoryStore::new();
        crate::quota::create_records(&config, &store).unwrap();
        let memo = Memo::default();
        let go =
            |attempt: &Attempt| decide_with(&config, key("acme-1"), NOW, &store, &memo, attempt);
        assert!(matches!(
            go(&priced(None, None, &config)),
            Decision::Allow { .. }
        ));
        assert!(matches!(
            go(&priced(None, None, &config)),
            Decision::Deny(_)
        ));
        // Remembered now: a plain request is refused without the store.
        let failing = crate::store::FailingStore;
        let from_memo = decide_with(
            &config,
            key("acme-1"),
            NOW,
            &failing,
            &memo,
            &priced(None, None, &config),
        );
        assert!(
            matches!(from_memo, Decision::Deny(Denial::QuotaExceeded { .. })),
            "{from_memo:?}"
        );
        // The free route takes nothing from the spent limit: admitted.
        assert!(matches!(
            go(&priced(Some("free"), None, &config)),
            Decision::Allow { .. }
        ));
    }
}
