//! Unit tests of [`crate::lease`] (kept apart so that the module itself reads in one go).

use super::*;
use crate::store::MemoryStore;
use crate::window::Window;

const K: &str = "tollgate:v1:lease:acme";
const NOW: i64 = 1_795_000_000;
const TERMS: Terms = Terms {
    lease: 100,
    timeout_ms: 50,
    utc_offset: 0,
};

fn limits(sizes: &[(u64, Window)]) -> Vec<Limit> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, (requests, window))| Limit {
            name: format!("l{i}"),
            requests: *requests,
            unit: crate::config::Unit::Requests,
            window: *window,
            window_text: String::new(),
            status: 402,
            per_envoy: false,
        })
        .collect()
}

fn fresh() -> MemoryStore {
    let store = MemoryStore::new();
    store.set(K, &Lease::default().encode(), 0).unwrap();
    store
}

fn at(ms: i64) -> Clock {
    Clock {
        now: NOW + ms / 1000,
        now_ms: NOW * 1000 + ms,
    }
}

/// A store that grants what is asked while it has room (one fleet-wide count per limit).
struct Service {
    used: Vec<u64>,
}

impl Service {
    fn answer(&mut self, ask: &Ask) -> Answer {
        let fits = ask
            .windows
            .iter()
            .zip(&self.used)
            .zip(&ask.hits)
            .all(|(((_, requests), used), hits)| used + hits <= *requests);
        if fits {
            for (u, hits) in self.used.iter_mut().zip(&ask.hits) {
                *u += hits;
            }
        }
        let left = ask
            .windows
            .iter()
            .zip(&self.used)
            .map(|((_, requests), used)| requests - used)
            .collect();
        if fits {
            Answer::Granted { left }
        } else {
            Answer::Over { left }
        }
    }
}

/// Makes the store call `ask` (and its asks again) and applies the answers.
fn fill(store: &MemoryStore, service: &mut Service, mut ask: Ask, now_ms: i64) {
    loop {
        let answer = service.answer(&ask);
        match apply(store, K, &ask, &answer, now_ms, &TERMS).unwrap() {
            Applied::Done => return,
            Applied::AskAgain(again) => ask = again,
        }
    }
}

/// Takes until refused, refilling from `service` as asked (ahead of time too); returns the
/// admitted count.
fn drain(store: &MemoryStore, limits: &[Limit], service: &mut Service, clock: Clock) -> u64 {
    let mut admitted = 0;
    for _ in 0..100_000 {
        match take(store, K, limits, &[], clock, &TERMS, None).unwrap() {
            Take::Admitted(_, ahead) => {
                admitted += 1;
                if let Some(ask) = ahead {
                    fill(store, service, ask, clock.now_ms);
                }
            }
            Take::Refused(usages) => {
                assert!(usages.iter().any(|u| u.violated && u.remaining() == 0));
                return admitted;
            }
            Take::Refill(ask) => fill(store, service, ask, clock.now_ms),
            Take::Wait { .. } | Take::Over(_) => panic!("nobody else is refilling"),
        }
    }
    panic!("never refused")
}

#[test]
fn the_record_round_trips_and_foreign_bytes_are_an_empty_lease() {
    let lease = Lease {
        answered_at_ms: 11,
        claim_until_ms: 123,
        failed_at_ms: -5,
        refused_at_ms: 77,
        granted: 9,
        granted_at_ms: 99,
        figures: vec![
            Figure {
                start: 1,
                end: 2,
                requests: 3,
                left: 4,
                units: -7,
            },
            Figure::default(),
        ],
    };
    let bytes = lease.encode();
    assert_eq!(bytes.len(), HEAD + 2 * PER_LIMIT);
    assert_eq!(Lease::decode(&bytes), Some(lease));
    for cut in 0..bytes.len() {
        assert_eq!(Lease::decode(&bytes[..cut]), None, "cut at {cut}");
    }
    assert_eq!(Lease::decode(b"TG\x02"), None);
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(Lease::decode(&longer), None);
}

#[test]
fn a_drained_lease_admits_exactly_the_quota_then_refuses_without_a_call() {
    for quota in [1, 2, 7, 8, 9, 63, 100, 500, 1001] {
        let store = fresh();
        let limits = limits(&[(quota, Window::Day), (quota * 3, Window::Month)]);
        let mut service = Service { used: vec![0, 0] };
        assert_eq!(
            drain(&store, &limits, &mut service, at(0)),
            quota,
            "{quota}"
        );
        assert_eq!(
            service.used,
            [quota, quota],
            "nothing lost or double-counted"
        );
        // Refused again from the lease alone.
        assert!(matches!(
            take(&store, K, &limits, &[], at(10), &TERMS, None).unwrap(),
            Take::Refused(_)
        ));
    }
}

#[test]
fn two_envoys_sharing_one_service_admit_exactly_the_quota() {
    for quota in [1, 5, 17, 250] {
        let (a, b) = (fresh(), fresh());
        let limits = limits(&[(quota, Window::Day)]);
        let mut service = Service { used: vec![0] };
        // Alternate between the two Envoys' leases, one request at a time.
        let mut admitted = 0;
        let mut refused = [false, false];
        let mut turn = 0;
        while !(refused[0] && refused[1]) {
            let store = if turn % 2 == 0 { &a } else { &b };
            turn += 1;
            match take(store, K, &limits, &[], at(0), &TERMS, None).unwrap() {
                Take::Admitted(_, ahead) => {
                    admitted += 1;
                    if let Some(ask) = ahead {
                        fill(store, &mut service, ask, 0);
                    }
                }
                Take::Refused(_) => refused[turn % 2] = true,
                Take::Refill(ask) => fill(store, &mut service, ask, 0),
                Take::Wait { .. } | Take::Over(_) => unreachable!(),
            }
            assert!(turn < 100_000);
        }
        assert_eq!(admitted, quota);
    }
}

#[test]
fn lease_sizes_shrink_to_one_near_the_end() {
    let store = fresh();
    let limits = limits(&[(1000, Window::Day)]);
    let Take::Refill(ask) = take(&store, K, &limits, &[], at(0), &TERMS, None).unwrap() else {
        panic!()
    };
    assert_eq!(ask.hits, [100], "the lease, below 1000/8");
    let small = Terms { lease: 1, ..TERMS };
    let store = fresh();
    let Take::Refill(ask) = take(&store, K, &limits, &[], at(0), &small, None).unwrap() else {
        panic!()
    };
    assert_eq!(ask.hits, [1], "lease 1: one call per request");
    let lease = |left: u64| Lease {
        granted: 10,
        granted_at_ms: NOW * 1000,
        figures: vec![Figure {
            start: 0,
            end: 0,
            requests: 1000,
            left,
            units: 0,
        }],
        ..Lease::default()
    };
    let windows = current(&limits, NOW, 0);
    assert_eq!(
        size(
            &lease(80),
            true,
            &windows,
            &[],
            &[],
            &TERMS,
            NOW * 1000 + 10
        ),
        10
    );
    assert_eq!(
        size(&lease(7), true, &windows, &[], &[], &TERMS, NOW * 1000 + 10),
        1
    );
    assert_eq!(
        size(
            &lease(900),
            true,
            &windows,
            &[],
            &[],
            &TERMS,
            NOW * 1000 + 10
        ),
        20,
        "doubles"
    );
    assert_eq!(
        size(
            &lease(900),
            true,
            &windows,
            &[],
            &[],
            &TERMS,
            NOW * 1000 + 5000
        ),
        2,
        "10 in 5 s: 2 a second"
    );
    assert_eq!(
        size(
            &lease(900),
            true,
            &windows,
            &[],
            &[],
            &TERMS,
            NOW * 1000 + 60_000
        ),
        1
    );
}

#[test]
fn a_lease_down_to_half_is_refilled_ahead_once_and_never_past_the_lease() {
    let store = fresh();
    let limits = limits(&[(10_000, Window::Day)]);
    let mut service = Service { used: vec![0] };
    let Take::Refill(ask) = take(&store, K, &limits, &[], at(0), &TERMS, None).unwrap() else {
        panic!()
    };
    assert_eq!(ask.hits, [100]);
    fill(&store, &mut service, ask, at(0).now_ms);
    // 100 granted: the first 49 requests leave more than half; the 50th claims the refill.
    for i in 1..50 {
        assert!(
            matches!(
                take(&store, K, &limits, &[], at(1), &TERMS, None).unwrap(),
                Take::Admitted(_, None)
            ),
            "request {i}"
        );
    }
    let Take::Admitted(_, Some(early)) =
        take(&store, K, &limits, &[], at(1), &TERMS, None).unwrap()
    else {
        panic!("down to 50 of 100: refill ahead")
    };
    assert_eq!(
        early.hits,
        [50],
        "200 by the rate, capped at the lease: 50 held + 50"
    );
    // Claimed like a refill: until the call's timeout and the margin.
    assert_eq!(
        stored(&store).claim_until_ms,
        at(1).now_ms + TERMS.timeout_ms + CLAIM_MARGIN_MS
    );
    // While it is in flight, requests spend and nobody else calls.
    for _ in 0..50 {
        assert!(matches!(
            take(&store, K, &limits, &[], at(2), &TERMS, None).unwrap(),
            Take::Admitted(_, None)
        ));
    }
    assert!(matches!(
        take(&store, K, &limits, &[], at(3), &TERMS, None).unwrap(),
        Take::Wait { .. }
    ));
    fill(&store, &mut service, early, at(3).now_ms);
    let lease = Lease::decode(&store.value(K).unwrap()).unwrap();
    assert_eq!((lease.figures[0].units, lease.claim_until_ms), (50, 0));
    assert_eq!(service.used, [150]);

    // Topped up to the size a refill would have; none after a failure less than a timeout
    // ago, once a limit is spent, or when the size is one (a quota's last units).
    let cases = [
        (
            5,
            10,
            0,
            500,
            15,
            "20 by the rate (10 in 10 ms, doubled), less the 5 held",
        ),
        (6, 10, 0, 500, 0, "less than half of the last grant spent"),
        (1, 3, 0, 500, 0, "a grant of 3: too little traffic to go by"),
        (5, 10, at(0).now_ms, 500, 0, "failed"),
        (5, 10, 0, 0, 0, "spent"),
        (5, 10, 0, 15, 0, "15 left: an eighth is 1"),
    ];
    for (units, granted, failed_at_ms, left, hits, why) in cases {
        let lease = Lease {
            granted,
            granted_at_ms: at(0).now_ms,
            failed_at_ms,
            figures: vec![Figure {
                left,
                units,
                ..lease.figures[0]
            }],
            ..Lease::default()
        };
        let asked = ahead(&lease, &[], &[], at(10).now_ms, &TERMS).map(|a| a.hits);
        let want = (hits > 0).then(|| vec![hits]);
        assert_eq!(asked, want, "{why}");
    }
}

#[test]
fn one_refill_at_a_time_and_a_dead_refiller_blocks_only_until_its_deadline() {
    let store = fresh();
    let limits = limits(&[(100, Window::Day)]);
    assert!(matches!(
        take(&store, K, &limits, &[], at(0), &TERMS, None).unwrap(),
        Take::Refill(_)
    ));
    let until = NOW * 1000 + 50 + CLAIM_MARGIN_MS;
    assert_eq!(
        take(&store, K, &limits, &[], at(10), &TERMS, None).unwrap(),
        Take::Wait { until_ms: until }
    );
    // The claimer never answers: once its deadline passes, the next request claims.
    assert!(matches!(
        take(
            &store,
            K,
            &limits,
            &[],
            at(50 + CLAIM_MARGIN_MS),
            &TERMS,
            None
        )
        .unwrap(),
        Take::Refill(_)
    ));
}

#[test]
fn a_failed_refill_fails_its_waiters_and_not_the_next_request() {
    let store = fresh();
    let limits = limits(&[(100, Window::Day)]);
    let Take::Refill(ask) = take(&store, K, &limits, &[], at(0), &TERMS, None).unwrap() else {
        panic!()
    };
    let waiting_since = Some(NOW * 1000 + 5);
    assert!(matches!(
        take(&store, K, &limits, &[], at(5), &TERMS, waiting_since).unwrap(),
        Take::Wait { .. }
    ));
    assert_eq!(
        apply(&store, K, &ask, &Answer::Failed, NOW * 1000 + 50, &TERMS).unwrap(),
        Applied::Done
    );
    assert!(matches!(
        take(&store, K, &limits, &[], at(60), &TERMS, waiting_since),
        Err(CountError::Store(_))
    ));
    // Within a timeout of the failure, new requests fail at once too; then they call.
    assert!(matches!(
        take(&store, K, &limits, &[], at(99), &TERMS, None),
        Err(CountError::Store(_))
    ));
    assert!(matches!(
        take(&store, K, &limits, &[], at(100), &TERMS, None).unwrap(),
        Take::Refill(_)
    ));
}

#[test]
fn over_limit_with_room_asks_again_for_the_room() {
    let store = fresh();
    let limits = limits(&[(100, Window::Day), (100, Window::Month)]);
    let Take::Refill(ask) = take(&store, K, &limits, &[], at(0), &TERMS, None).unwrap() else {
        panic!()
    };
    let answer = Answer::Over { left: vec![3, 9] };
    let Applied::AskAgain(again) = apply(&store, K, &ask, &answer, at(0).now_ms, &TERMS).unwrap()
    else {
        panic!()
    };
    assert_eq!(again.hits, [3, 3], "in step: the limit with the least room");
    // Still claimed while asking again.
    assert!(matches!(
        take(&store, K, &limits, &[], at(1), &TERMS, None).unwrap(),
        Take::Wait { .. }
    ));
    let answer = Answer::Granted { left: vec![0, 6] };
    assert_eq!(
        apply(&store, K, &again, &answer, at(1).now_ms, &TERMS).unwrap(),
        Applied::Done
    );
    let Take::Admitted(usages, None) = take(&store, K, &limits, &[], at(2), &TERMS, None).unwrap()
    else {
        panic!()
    };
    // Left: the store's figure plus this Envoy's unspent lease (2 of 3).
    assert_eq!(
        usages.iter().map(Usage::remaining).collect::<Vec<_>>(),
        [2, 8]
    );
}

#[test]
fn the_usage_endpoint_asks_the_store_for_nothing_and_spends_nothing() {
    let store = fresh();
    let limits = limits(&[(100, Window::Day)]);
    let Take::Refill(ask) = take(&store, K, &limits, &[], at(0), &TERMS, None).unwrap() else {
        panic!()
    };
    let answer = Answer::Granted { left: vec![88] };
    apply(&store, K, &ask, &answer, at(1).now_ms, &TERMS).unwrap();
    // A valid lease with units: still a store call, for 0 hits.
    let Take::Refill(look_ask) = look(&store, K, &limits, at(2), &TERMS, None).unwrap() else {
        panic!("the usage endpoint asks the store")
    };
    assert_eq!(look_ask.hits, [0]);
    let answer = Answer::Granted { left: vec![80] };
    apply(&store, K, &look_ask, &answer, at(3).now_ms, &TERMS).unwrap();
    let Take::Admitted(usages, None) =
        look(&store, K, &limits, at(4), &TERMS, Some(at(2).now_ms)).unwrap()
    else {
        panic!()
    };
    // 80 left in the store (another Envoy took 8), and this Envoy's 12 unspent units.
    assert_eq!(usages[0].remaining(), 92);
    let lease = Lease::decode(&store.value(K).unwrap()).unwrap();
    assert_eq!(
        (lease.figures[0].units, lease.granted),
        (12, 12),
        "nothing spent, sizing kept"
    );
}

#[test]
fn a_new_window_drops_the_old_lease() {
    let store = fresh();
    let limits = limits(&[(1000, Window::Fixed(60))]);
    let start = NOW - NOW % 60;
    let clock = |s: i64| Clock {
        now: s,
        now_ms: s * 1000,
    };
    let Take::Refill(ask) = take(&store, K, &limits, &[], clock(start), &TERMS, None).unwrap()
    else {
        panic!()
    };
    let answer = Answer::Granted { left: vec![900] };
    apply(&store, K, &ask, &answer, start * 1000, &TERMS).unwrap();
    assert!(matches!(
        take(&store, K, &limits, &[], clock(start + 59), &TERMS, None).unwrap(),
        Take::Admitted(..)
    ));
    let Take::Refill(next) =
        take(&store, K, &limits, &[], clock(start + 60), &TERMS, None).unwrap()
    else {
        panic!("the next minute needs a new lease")
    };
    assert_eq!(next.windows[0].0.start, start + 60);
    let lease = Lease::decode(&store.value(K).unwrap()).unwrap();
    assert!(
        lease.figures.is_empty(),
        "98 units of the last minute are gone"
    );
}

#[test]
fn a_missing_lease_is_a_store_error_and_leases_are_created_once() {
    let store = MemoryStore::new();
    let limits = limits(&[(10, Window::Day)]);
    assert!(matches!(
        take(&store, K, &limits, &[], at(0), &TERMS, None),
        Err(CountError::Store(_))
    ));
    let config = Config::from_json(
        br#"{"plans": {"p": {"limits": [{"name": "d", "requests": 5, "window": "day"}]},
                       "u": {"limits": []}},
             "consumers": {"acme": {"plan": "p", "keys": ["a"]}, "ops": {"plan": "u", "keys": ["o"]}}}"#,
    )
    .unwrap();
    assert_eq!(create_leases(&config, &store).unwrap(), 1);
    assert_eq!(create_leases(&config, &store).unwrap(), 0);
    assert!(
        store.value("tollgate:v1:lease:ops").is_none(),
        "unlimited: no lease"
    );
    assert!(matches!(
        take(&store, K, &limits, &[], at(0), &TERMS, None).unwrap(),
        Take::Refill(_)
    ));
}

fn stored(store: &MemoryStore) -> Lease {
    Lease::decode(&store.value(K).unwrap()).unwrap()
}

#[test]
fn a_refill_claim_lasts_the_calls_timeout_and_the_margin_exactly() {
    let store = fresh();
    let l = limits(&[(1000, Window::Day)]);
    let Take::Refill(_) = take(&store, K, &l, &[], at(0), &TERMS, None).unwrap() else {
        panic!("an empty lease is refilled");
    };
    let deadline = NOW * 1000 + TERMS.timeout_ms + CLAIM_MARGIN_MS;
    assert_eq!(stored(&store).claim_until_ms, deadline);
    // Until then another request waits for it, and not a millisecond longer.
    assert_eq!(
        take(
            &store,
            K,
            &l,
            &[],
            at(TERMS.timeout_ms + CLAIM_MARGIN_MS - 1),
            &TERMS,
            None
        )
        .unwrap(),
        Take::Wait { until_ms: deadline }
    );
    assert!(matches!(
        take(
            &store,
            K,
            &l,
            &[],
            at(TERMS.timeout_ms + CLAIM_MARGIN_MS),
            &TERMS,
            None
        )
        .unwrap(),
        Take::Refill(_)
    ));
}

#[test]
fn an_answer_for_another_number_of_limits_is_a_failure_not_figures() {
    let store = fresh();
    let l = limits(&[(1000, Window::Day), (10, Window::Fixed(60))]);
    let Take::Refill(ask) = take(&store, K, &l, &[], at(0), &TERMS, None).unwrap() else {
        panic!("an empty lease is refilled");
    };
    for answer in [
        Answer::Granted { left: vec![5] },
        Answer::Over {
            left: vec![0, 0, 0],
        },
    ] {
        apply(&store, K, &ask, &answer, NOW * 1000 + 5, &TERMS).unwrap();
        let lease = stored(&store);
        assert!(lease.figures.iter().all(|f| f.units == 0), "{answer:?}");
        assert_eq!(lease.failed_at_ms, NOW * 1000 + 5, "{answer:?}");
        assert!(lease.figures.is_empty(), "{answer:?}");
    }
}

#[test]
fn over_with_room_for_less_asks_again_for_that_room_and_keeps_the_claim() {
    let store = fresh();
    let l = limits(&[(1000, Window::Day)]);
    let Take::Refill(ask) = take(&store, K, &l, &[], at(0), &TERMS, None).unwrap() else {
        panic!("an empty lease is refilled");
    };
    assert!(ask.hits[0] > 3);
    let now_ms = NOW * 1000 + 7;
    let again = apply(
        &store,
        K,
        &ask,
        &Answer::Over { left: vec![3] },
        now_ms,
        &TERMS,
    )
    .unwrap();
    assert_eq!(
        again,
        Applied::AskAgain(Ask {
            hits: vec![3],
            needs: vec![1],
            worth: 3,
            windows: ask.windows.clone(),
            per_envoy: ask.per_envoy.clone(),
        })
    );
    assert_eq!(
        stored(&store).claim_until_ms,
        now_ms + TERMS.timeout_ms + CLAIM_MARGIN_MS
    );
    // Room for exactly what was asked is not "less": nothing to ask again.
    let exact = Ask {
        hits: vec![3],
        ..ask.clone()
    };
    assert_eq!(
        apply(
            &store,
            K,
            &exact,
            &Answer::Over { left: vec![3] },
            now_ms,
            &TERMS
        )
        .unwrap(),
        Applied::Done
    );
    assert_eq!(stored(&store).claim_until_ms, 0);
}

#[test]
fn a_lease_for_the_same_windows_but_another_size_is_not_valid() {
    let mut lease = Lease::default();
    let day = limits(&[(1000, Window::Day)]);
    let bounds = day[0].window.bounds(NOW, 0);
    lease.figures = vec![Figure {
        start: bounds.start,
        end: bounds.end,
        requests: 1000,
        left: 10,
        units: 0,
    }];
    assert!(lease.valid(&[(bounds, 1000)], &[]));
    assert!(!lease.valid(&[(bounds, 999)], &[]), "a resized limit");
    assert!(
        !lease.valid(&[(bounds, 1000), (bounds, 1000)], &[]),
        "another plan"
    );
    assert!(!lease.valid(&[], &[]));
}

/// A plan of a request limit and a token limit (costs `[1, tokens]` per request).
fn with_tokens(requests: u64, tokens: u64) -> Vec<Limit> {
    let mut l = limits(&[(requests, Window::Day), (tokens, Window::Day)]);
    l[1].unit = crate::config::Unit::Tokens;
    l
}

#[test]
fn a_lease_holds_each_limit_in_its_own_unit_and_asks_for_requests_worth() {
    let store = fresh();
    let l = with_tokens(1000, 100_000);
    let Take::Refill(ask) = take(&store, K, &l, &[1, 500], at(0), &TERMS, None).unwrap() else {
        panic!("an empty lease is refilled");
    };
    // 1000/8 = 125 requests, 100000/8/500 = 25 of these: 25 requests' worth, in each unit.
    assert_eq!(
        (ask.hits.clone(), ask.needs.clone(), ask.worth),
        (vec![25, 12_500], vec![1, 500], 25)
    );
    let mut service = Service { used: vec![0, 0] };
    fill(&store, &mut service, ask, at(0).now_ms);
    let Take::Admitted(usages, None) = take(&store, K, &l, &[1, 500], at(1), &TERMS, None).unwrap()
    else {
        panic!("paid from the lease");
    };
    assert_eq!(
        (usages[1].cost, usages[1].remaining()),
        (500, 100_000 - 500)
    );
    let lease = stored(&store);
    assert_eq!(
        lease.figures.iter().map(|f| f.units).collect::<Vec<_>>(),
        [24, 12_000]
    );
    // A cheaper request takes less; a request that costs nothing in a limit takes nothing.
    take(&store, K, &l, &[1, 20], at(2), &TERMS, None).unwrap();
    take(&store, K, &l, &[0, 30], at(2), &TERMS, None).unwrap();
    assert_eq!(
        stored(&store)
            .figures
            .iter()
            .map(|f| f.units)
            .collect::<Vec<_>>(),
        [23, 11_950]
    );
    assert_eq!(service.used, [25, 12_500], "the store was asked once");
}

#[test]
fn settlements_refund_into_the_lease_and_an_overrun_is_a_debt_the_next_grant_pays() {
    let store = fresh();
    let l = with_tokens(1000, 4_000);
    let mut service = Service { used: vec![0, 0] };
    let Take::Refill(ask) = take(&store, K, &l, &[1, 500], at(0), &TERMS, None).unwrap() else {
        panic!();
    };
    assert_eq!(ask.hits, [1, 500], "4000/8/500: one request's worth");
    fill(&store, &mut service, ask, at(0).now_ms);
    let Take::Admitted(usages, _) = take(&store, K, &l, &[1, 500], at(1), &TERMS, None).unwrap()
    else {
        panic!();
    };
    let settle_as = |actual: u64, taken: u64| {
        let s = Settlement {
            limit: 1,
            bounds: usages[1].bounds,
            taken,
            actual,
        };
        settle(&store, K, &[s]).unwrap()
    };
    // Used 300 of the 500 reserved: 200 back into this lease (the store keeps its 500).
    assert_eq!(settle_as(300, 500), 1);
    assert_eq!(stored(&store).figures[1].units, 200);
    // The next request reserves 500: the lease has 200, so it asks for what it lacks (and
    // a requests' worth on top: 3500/8/500 = 0, so only that).
    let Take::Refill(ask) = take(&store, K, &l, &[1, 500], at(2), &TERMS, None).unwrap() else {
        panic!();
    };
    assert_eq!(
        (ask.hits.clone(), ask.needs.clone()),
        (vec![1, 300], vec![1, 300])
    );
    fill(&store, &mut service, ask, at(2).now_ms);
    let Take::Admitted(..) = take(&store, K, &l, &[1, 500], at(3), &TERMS, None).unwrap() else {
        panic!();
    };
    // It used 900: 400 more than reserved, a debt of 400 the next grant pays first.
    assert_eq!(settle_as(900, 500), 1);
    assert_eq!(stored(&store).figures[1].units, -400);
    let Take::Refill(ask) = take(&store, K, &l, &[1, 500], at(4), &TERMS, None).unwrap() else {
        panic!();
    };
    assert_eq!(ask.needs, [1, 900], "the debt and the request");
    fill(&store, &mut service, ask, at(4).now_ms);
    assert!(matches!(
        take(&store, K, &l, &[1, 500], at(5), &TERMS, None).unwrap(),
        Take::Admitted(..)
    ));
    // What the store counted is what was used, plus what this lease holds.
    let held = stored(&store).figures[1].units;
    assert_eq!(service.used[1] as i64 - held, 300 + 900 + 500);
    // A settlement for another window is dropped: nothing to take back there.
    let old = Settlement {
        limit: 1,
        bounds: Bounds {
            start: 0,
            end: 86_400,
        },
        taken: 500,
        actual: 0,
    };
    assert_eq!(settle(&store, K, &[old]).unwrap(), 0);
    assert_eq!(stored(&store).figures[1].units, held);
}

#[test]
fn a_request_the_lease_and_the_store_cannot_pay_is_refused_without_a_call() {
    let store = fresh();
    let l = with_tokens(1000, 4_000);
    let mut service = Service {
        used: vec![0, 3_700],
    };
    let Take::Refill(ask) = take(&store, K, &l, &[1, 200], at(0), &TERMS, None).unwrap() else {
        panic!();
    };
    fill(&store, &mut service, ask, at(0).now_ms);
    // Two requests' worth asked (4000/8/200), 300 left: cut to the room, all of it.
    assert_eq!(service.used, [1, 4_000]);
    // 300 held and none in the store cannot pay for 500: refused from the lease alone; the
    // request limit is not the one violated.
    let Take::Refused(usages) = take(&store, K, &l, &[1, 500], at(1), &TERMS, None).unwrap() else {
        panic!("refused");
    };
    assert_eq!(
        usages
            .iter()
            .map(|u| (u.violated, u.remaining()))
            .collect::<Vec<_>>(),
        [(false, 1000), (true, 300)]
    );
    // A request for 250 fits in the lease.
    assert!(matches!(
        take(&store, K, &l, &[1, 250], at(2), &TERMS, None).unwrap(),
        Take::Admitted(..)
    ));
    // A cost larger than the limit is refused before any call, even with an empty lease.
    let empty = fresh();
    let Take::Refused(usages) = take(&empty, K, &l, &[1, 4_001], at(3), &TERMS, None).unwrap()
    else {
        panic!("never fits");
    };
    assert!(usages[1].violated && !usages[0].violated);
    assert_eq!(stored(&empty), Lease::default(), "nothing claimed");
}

#[test]
fn a_dry_run_peeks_at_the_lease_and_never_writes_or_calls() {
    let store = fresh();
    let l = with_tokens(1000, 4_000);
    // Nothing known yet: admitted, nothing claimed.
    assert!(matches!(
        peek(&store, K, &l, &[1, 0], at(0), &TERMS).unwrap(),
        Take::Admitted(_, None)
    ));
    assert_eq!(stored(&store), Lease::default());
    let mut service = Service {
        used: vec![1000, 0],
    };
    let Take::Refill(ask) = take(&store, K, &l, &[1, 0], at(0), &TERMS, None).unwrap() else {
        panic!();
    };
    fill(&store, &mut service, ask, at(0).now_ms);
    let before = stored(&store);
    // The request limit is spent: the dry run refuses, and writes nothing.
    assert!(matches!(
        peek(&store, K, &l, &[1, 0], at(1), &TERMS).unwrap(),
        Take::Refused(_)
    ));
    assert_eq!(stored(&store), before);
}

#[test]
fn two_envoys_paying_token_reservations_never_take_more_than_the_quota() {
    // Reservations of 500 settled at 300, from two Envoys over one service: the used tokens
    // never pass the quota, and each Envoy refuses only when it and the store cannot pay.
    for quota in [500, 999, 4_000, 10_000, 33_333] {
        let stores = [fresh(), fresh()];
        let l = with_tokens(1_000_000, quota);
        let mut service = Service { used: vec![0, 0] };
        let mut used = 0;
        let mut refused = [false, false];
        let mut turn = 0;
        while !(refused[0] && refused[1]) {
            let e = turn % 2;
            turn += 1;
            let store = &stores[e];
            match take(store, K, &l, &[1, 500], at(turn as i64), &TERMS, None).unwrap() {
                Take::Admitted(usages, ahead) => {
                    used += 300;
                    let s = Settlement {
                        limit: 1,
                        bounds: usages[1].bounds,
                        taken: 500,
                        actual: 300,
                    };
                    settle(store, K, &[s]).unwrap();
                    if let Some(ask) = ahead {
                        fill(store, &mut service, ask, at(turn as i64).now_ms);
                    }
                }
                Take::Refused(_) => refused[e] = true,
                Take::Refill(ask) => fill(store, &mut service, ask, at(turn as i64).now_ms),
                Take::Wait { .. } | Take::Over(_) => unreachable!(),
            }
            assert!(turn < 100_000);
        }
        let held: i64 = stores
            .iter()
            .map(|s| Lease::decode(&s.value(K).unwrap()).unwrap().figures[1].units)
            .sum();
        assert!(used <= quota, "{quota}: used {used}");
        assert_eq!(
            service.used[1] as i64 - held,
            used as i64,
            "{quota}: counted = used + held"
        );
        // What is lost to the fleet: under one reservation in the store and in each lease.
        assert!(quota - used < 3 * 500, "{quota}: used {used}");
    }
}

#[test]
fn a_server_that_answers_only_overall_code_decides_each_request_with_lease_one() {
    // Limitador answers `overall_code` and no statuses: with lease 1, OK pays for the request
    // (no figures: no RateLimit fields), OVER_LIMIT refuses the request that waited for it
    // (every limit named, nothing remembered), and the next request asks again.
    let one = Terms { lease: 1, ..TERMS };
    let store = fresh();
    let l = limits(&[(5, Window::Day), (50, Window::Month)]);
    let Take::Refill(ask) = take(&store, K, &l, &[], at(0), &one, None).unwrap() else {
        panic!();
    };
    let granted = Answer::Granted { left: vec![] };
    assert_eq!(
        apply(&store, K, &ask, &granted, at(1).now_ms, &one).unwrap(),
        Applied::Done
    );
    assert_eq!(stored(&store).failed_at_ms, 0);
    let Take::Admitted(usages, None) =
        take(&store, K, &l, &[], at(2), &one, Some(at(0).now_ms)).unwrap()
    else {
        panic!("admitted from the grant");
    };
    assert!(usages.is_empty(), "no figures: no RateLimit fields");
    let Take::Refill(ask) = take(&store, K, &l, &[], at(3), &one, None).unwrap() else {
        panic!("the next request asks again");
    };
    let over = Answer::Over { left: vec![] };
    assert_eq!(
        apply(&store, K, &ask, &over, at(4).now_ms, &one).unwrap(),
        Applied::Done
    );
    let Take::Over(usages) = take(&store, K, &l, &[], at(5), &one, Some(at(3).now_ms)).unwrap()
    else {
        panic!("the request that waited is refused");
    };
    // The day ends before the month: the daily limit is named, with nothing left.
    assert_eq!(
        usages
            .iter()
            .map(|u| (u.violated, u.remaining()))
            .collect::<Vec<_>>(),
        [(true, 0), (false, 50)]
    );
    // A request that came after the answer asks again (the server may have room by then).
    assert!(matches!(
        take(&store, K, &l, &[], at(6), &one, Some(at(5).now_ms)).unwrap(),
        Take::Refill(_)
    ));
    // With a lease above 1 such an answer is a failure: sizes need figures.
    let store = fresh();
    let Take::Refill(ask) = take(&store, K, &l, &[], at(0), &TERMS, None).unwrap() else {
        panic!();
    };
    apply(&store, K, &ask, &granted, at(1).now_ms, &TERMS).unwrap();
    assert_eq!(stored(&store).failed_at_ms, at(1).now_ms);
    assert!(stored(&store).figures.is_empty());
}

#[test]
fn what_the_lease_holds_counts_with_what_the_store_has_left() {
    // A lease holding 400 tokens (refunds) and a store with 100 left can pay for 450: it asks
    // the store for what it lacks instead of refusing; for 501 it refuses.
    let store = fresh();
    let l = with_tokens(1000, 4_000);
    let mut service = Service {
        used: vec![0, 3_500],
    };
    let Take::Refill(ask) = take(&store, K, &l, &[1, 500], at(0), &TERMS, None).unwrap() else {
        panic!();
    };
    fill(&store, &mut service, ask, at(0).now_ms);
    let Take::Admitted(usages, _) = take(&store, K, &l, &[1, 500], at(1), &TERMS, None).unwrap()
    else {
        panic!();
    };
    let refund = Settlement {
        limit: 1,
        bounds: usages[1].bounds,
        taken: 500,
        actual: 100,
    };
    settle(&store, K, &[refund]).unwrap();
    // 400 held, 0 left in the store.
    assert_eq!(stored(&store).figures[1].units, 400);
    assert_eq!(stored(&store).figures[1].left, 0);
    assert!(matches!(
        take(&store, K, &l, &[1, 450], at(2), &TERMS, None).unwrap(),
        Take::Refused(_)
    ));
    // With 100 left in the store (as a fresher answer would say), 450 is worth a call.
    let mut lease = stored(&store);
    lease.figures[1].left = 100;
    store.set(K, &lease.encode(), 0).unwrap();
    assert!(matches!(
        take(&store, K, &l, &[1, 450], at(3), &TERMS, None).unwrap(),
        Take::Refill(_)
    ));
    assert!(matches!(
        take(&store, K, &l, &[1, 501], at(300), &TERMS, None).unwrap(),
        Take::Refused(_)
    ));
    // A limit in debt with nothing left refuses only what takes from it.
    let mut lease = stored(&store);
    lease.claim_until_ms = 0;
    lease.figures[0].units = 5;
    lease.figures[1] = Figure {
        units: -50,
        left: 0,
        ..lease.figures[1]
    };
    store.set(K, &lease.encode(), 0).unwrap();
    assert!(matches!(
        take(&store, K, &l, &[1, 0], at(400), &TERMS, None).unwrap(),
        Take::Admitted(..)
    ));
}

#[test]
fn a_lease_is_refilled_ahead_in_requests_worth_of_the_request_that_spends_it() {
    // Granted 8 requests' worth of 500 tokens; once at most half of that is held (4 × 500),
    // the request that spends down to it claims a refill ahead — in tokens.
    let figure = |units: i64| Figure {
        start: 0,
        end: 86_400,
        requests: 1_000_000,
        left: 900_000,
        units,
    };
    let lease = |units: i64| Lease {
        granted: 8,
        granted_at_ms: at(0).now_ms,
        figures: vec![figure(units)],
        ..Lease::default()
    };
    assert_eq!(
        ahead(&lease(2_500), &[500], &[], at(10).now_ms, &TERMS),
        None,
        "5 held: more than half"
    );
    let ask = ahead(&lease(2_000), &[500], &[], at(10).now_ms, &TERMS).unwrap();
    // 16 by the rate (8 in 10 ms, doubled): 16 × 500, less the 2 000 held; worth 16 − 4.
    assert_eq!((ask.hits.clone(), ask.worth), (vec![6_000], 12));
    assert_eq!(ask.needs, [0], "nobody waits on a refill ahead");
}

#[test]
fn with_lease_one_the_usage_endpoint_never_calls_the_store() {
    // Servers other than quotad count a look (hits_addend 0) as one hit: with lease 1 the
    // usage endpoint shows the figures of the last answer, and none before one.
    let one = Terms { lease: 1, ..TERMS };
    let store = fresh();
    let l = limits(&[(100, Window::Day)]);
    assert_eq!(
        look(&store, K, &l, at(0), &one, None).unwrap(),
        Take::Admitted(Vec::new(), None)
    );
    let Take::Refill(ask) = take(&store, K, &l, &[], at(0), &one, None).unwrap() else {
        panic!();
    };
    apply(
        &store,
        K,
        &ask,
        &Answer::Granted { left: vec![70] },
        at(1).now_ms,
        &one,
    )
    .unwrap();
    let Take::Admitted(usages, None) = look(&store, K, &l, at(2), &one, None).unwrap() else {
        panic!("no call");
    };
    assert_eq!(
        usages[0].remaining(),
        71,
        "70 in the store and the unit this lease holds"
    );
    assert_eq!(stored(&store).claim_until_ms, 0, "nothing claimed");
}

/// `limits`, with those at `per_envoy` marked `scope: envoy`.
fn scoped(sizes: &[(u64, Window)], per_envoy: &[usize]) -> Vec<Limit> {
    let mut limits = limits(sizes);
    for i in per_envoy {
        limits[*i].per_envoy = true;
    }
    limits
}

/// The call the filter makes for `ask` (the store's limits only, as `fleet::request` sends
/// them), answered by `service` (one count per limit of the call), laid out per limit of the
/// plan again and applied, with its asks again. Returns the calls made.
fn fill_scoped(store: &MemoryStore, service: &mut Service, mut ask: Ask, now_ms: i64) -> usize {
    let mut calls = 0;
    loop {
        let sent = Ask {
            hits: (0..ask.hits.len())
                .filter(|i| ask.asks(*i))
                .map(|i| ask.hits[i])
                .collect(),
            windows: (0..ask.windows.len())
                .filter(|i| ask.asks(*i))
                .map(|i| ask.windows[i])
                .collect(),
            needs: Vec::new(),
            worth: ask.worth,
            per_envoy: Vec::new(),
        };
        assert!(!sent.windows.is_empty(), "a call with no limit: {ask:?}");
        calls += 1;
        let answer = service.answer(&sent).spread(&ask);
        match apply(store, K, &ask, &answer, now_ms, &TERMS).unwrap() {
            Applied::Done => return calls,
            Applied::AskAgain(again) => ask = again,
        }
    }
}

/// Takes at `clock` until refused, as [`drain`] does through [`fill_scoped`]: (admitted,
/// calls, the refusal's violated limits).
fn drain_scoped(
    store: &MemoryStore,
    limits: &[Limit],
    service: &mut Service,
    clock: Clock,
) -> (u64, usize, Vec<usize>) {
    let (mut admitted, mut calls) = (0, 0);
    for _ in 0..100_000 {
        match take(store, K, limits, &[], clock, &TERMS, None).unwrap() {
            Take::Admitted(_, ahead) => {
                admitted += 1;
                if let Some(ask) = ahead {
                    calls += fill_scoped(store, service, ask, clock.now_ms);
                }
            }
            Take::Refused(usages) => {
                let violated = (0..usages.len()).filter(|i| usages[*i].violated).collect();
                return (admitted, calls, violated);
            }
            Take::Refill(ask) => calls += fill_scoped(store, service, ask, clock.now_ms),
            Take::Wait { .. } | Take::Over(_) => panic!("nobody else is refilling"),
        }
    }
    panic!("never refused")
}

#[test]
fn a_per_envoy_limit_is_counted_here_and_never_asked_of_the_store() {
    // The usual plan: 1 000 a day fleet-wide, 5 a second per Envoy.
    let limits = scoped(&[(1000, Window::Day), (5, Window::Fixed(1))], &[1]);
    let store = fresh();
    let mut service = Service { used: vec![0] };
    let mut calls = 0;
    for second in 0..4 {
        let (admitted, made, violated) =
            drain_scoped(&store, &limits, &mut service, at(second * 1000));
        assert_eq!(admitted, 5, "second {second}: the burst, exactly");
        assert_eq!(violated, [1], "second {second}: refused by the burst limit");
        calls += made;
    }
    // One call for the daily lease; each new second's burst starts here without one.
    assert_eq!(calls, 1);
    assert_eq!(
        service.used,
        [100],
        "the daily lease: the store counts only it"
    );
    let lease = stored(&store);
    assert_eq!(
        lease.figures[0].units,
        100 - 20,
        "20 spent from the daily lease"
    );
    assert_eq!(
        lease.figures[1].left, HERE_LEFT,
        "the burst is counted here alone"
    );
}

#[test]
fn a_per_envoy_count_goes_on_when_the_stores_window_turns() {
    // The store's limit turns every 10 s; the per-Envoy one is per minute.
    let limits = scoped(&[(100, Window::Fixed(10)), (7, Window::Fixed(60))], &[1]);
    let store = fresh();
    let mut service = Service { used: vec![0] };
    // NOW is 40 s into a minute and at a 10 s boundary: 4 now, 3 in the next 10 s window of
    // the same minute (after a refill for that window), then the minute's 7 are spent.
    for _ in 0..4 {
        match take(&store, K, &limits, &[], at(0), &TERMS, None).unwrap() {
            Take::Admitted(..) => {}
            Take::Refill(ask) => {
                fill_scoped(&store, &mut service, ask, at(0).now_ms);
                assert!(matches!(
                    take(&store, K, &limits, &[], at(0), &TERMS, None).unwrap(),
                    Take::Admitted(..)
                ));
            }
            other => panic!("{other:?}"),
        }
    }
    service.used = vec![0];
    let (admitted, calls, violated) = drain_scoped(&store, &limits, &mut service, at(10_000));
    assert_eq!(
        (admitted, violated),
        (3, vec![1]),
        "the minute's count went on"
    );
    assert!(calls >= 1, "a refill for the new 10 s window");
    // A new minute and a new 10 s window: 7 more.
    let (admitted, _, violated) = drain_scoped(&store, &limits, &mut service, at(20_000));
    assert_eq!((admitted, violated), (7, vec![1]), "a new window");
}

#[test]
fn a_plan_of_per_envoy_limits_only_never_calls_the_store() {
    let limits = scoped(&[(3, Window::Fixed(1)), (10, Window::Day)], &[0, 1]);
    let store = fresh();
    let mut service = Service { used: vec![] };
    let mut total = 0;
    for second in 0..5 {
        let (admitted, calls, violated) =
            drain_scoped(&store, &limits, &mut service, at(second * 1000));
        assert_eq!(calls, 0);
        total += admitted;
        if total < 10 {
            assert_eq!((admitted, violated.clone()), (3, vec![0]), "{second}");
        } else {
            assert_eq!(violated, [1], "{second}: the day is spent");
        }
    }
    assert_eq!(total, 10);
    // The usage endpoint reads the count here, with no call.
    let Take::Admitted(usages, None) = look(&store, K, &limits, at(5000), &TERMS, None).unwrap()
    else {
        panic!("a look needs no call")
    };
    assert_eq!(usages[1].used, 10);
}
// Found by an independent review of `scope: envoy`; each failed before its fix.

/// A refill ahead asked in one per-Envoy window and answered in the next keeps the new
/// window's per-Envoy count. (Before the fix, apply wrote a fresh figure of the ask's, older,
/// window over the rolled one, and the next take rolled it again, to a full window.)
#[test]
fn an_answer_after_the_per_envoy_window_turned_keeps_the_new_windows_count() {
    let limits = scoped(&[(1000, Window::Day), (60, Window::Fixed(1))], &[1]);
    let store = fresh();
    let mut service = Service { used: vec![0] };
    // Second 0: a lease of 100 for the day, then spend until a refill ahead is claimed.
    let mut pending = None;
    for _ in 0..60 {
        match take(&store, K, &limits, &[], at(0), &TERMS, None).unwrap() {
            Take::Refill(ask) => {
                fill_scoped(&store, &mut service, ask, at(0).now_ms);
            }
            Take::Admitted(_, Some(ask)) => {
                pending = Some(ask);
                break;
            }
            Take::Admitted(_, None) => {}
            other => panic!("{other:?}"),
        }
    }
    let ask = pending.expect("a refill ahead in second 0");
    // Second 1, before the answer arrives: 3 requests spend the new second's burst.
    for _ in 0..3 {
        assert!(matches!(
            take(&store, K, &limits, &[], at(1000), &TERMS, None).unwrap(),
            Take::Admitted(..)
        ));
    }
    assert_eq!(
        stored(&store).figures[1].units,
        57,
        "3 of second 1's 60 spent"
    );
    // The answer to the refill ahead arrives (in second 1).
    fill_scoped(&store, &mut service, ask, at(1000).now_ms);
    let Take::Admitted(usages, _) = take(&store, K, &limits, &[], at(1000), &TERMS, None).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        usages[1].used, 4,
        "second 1's burst count must go on (3 + this one)"
    );
}

/// A limit whose scope changes from `envoy` to `fleet` (a reload, or the consumer moved to a
/// plan with the same limit sizes) is counted by the store from then on. (Before the fix, this
/// Envoy's own count was read as units taken from the store: the store never counted those
/// requests, and once they were spent the limit was refused for the rest of the window.)
#[test]
fn a_limit_changed_from_envoy_to_fleet_is_counted_by_the_store() {
    let before = scoped(&[(1000, Window::Day), (50, Window::Day)], &[1]);
    let after = limits(&[(1000, Window::Day), (50, Window::Day)]);
    let store = fresh();
    let mut service = Service { used: vec![0] };
    // One request under the old plan: the burst limit counted here.
    let Take::Refill(ask) = take(&store, K, &before, &[], at(0), &TERMS, None).unwrap() else {
        panic!("the first request asks for the daily lease")
    };
    fill_scoped(&store, &mut service, ask, at(0).now_ms);
    assert!(matches!(
        take(&store, K, &before, &[], at(0), &TERMS, None).unwrap(),
        Take::Admitted(..)
    ));
    // The limit is fleet-wide now: the store counts every request admitted under it, all 50
    // (what this Envoy counted alone is not in the store's count).
    let mut service = Service {
        used: vec![service.used[0], 0],
    };
    let (admitted, _, violated) = drain_scoped(&store, &after, &mut service, at(1000));
    assert_eq!((admitted, violated), (50, vec![1]));
    assert_eq!(
        service.used[1], 50,
        "counted by the store: {:?}",
        service.used
    );
}

/// A limit whose scope changes from `fleet` to `envoy` starts a per-Envoy count and never
/// asks the store. (Before the fix, the store's lease figure was kept as the per-Envoy count:
/// once its units were spent a plan of per-Envoy limits only claimed a refill that
/// `fleet::request` never sends, and the request waited out its deadline.)
#[test]
fn a_limit_changed_from_fleet_to_envoy_never_asks_for_a_refill() {
    let before = limits(&[(10, Window::Day)]);
    let after = scoped(&[(10, Window::Day)], &[0]);
    let store = fresh();
    let mut service = Service { used: vec![0] };
    drain(&store, &before, &mut service, at(0));
    // 10 admitted from the store; make the lease hold nothing but the store say 5 left:
    let mut lease = stored(&store);
    lease.figures[0].units = 0;
    lease.figures[0].left = 5;
    store.set(K, &lease.encode(), 0).ok();
    if let Take::Refill(ask) = take(&store, K, &after, &[], at(1000), &TERMS, None).unwrap() {
        panic!("a plan of per-Envoy limits only claimed a refill: {ask:?}");
    }
}

/// With a server that answers without statuses (`lease: 1`), a silent refusal names the
/// store's limit, never the per-Envoy one (not in the call, with room, its window ending
/// first).
#[test]
fn a_silent_over_never_names_a_per_envoy_limit() {
    let terms = Terms { lease: 1, ..TERMS };
    let limits = scoped(&[(1000, Window::Day), (5, Window::Fixed(1))], &[1]);
    let store = fresh();
    let Take::Refill(ask) = take(&store, K, &limits, &[], at(0), &terms, None).unwrap() else {
        panic!()
    };
    let answer = Answer::Over { left: vec![] }.spread(&ask);
    apply(&store, K, &ask, &answer, at(10).now_ms, &terms).unwrap();
    let Take::Over(usages) =
        take(&store, K, &limits, &[], at(20), &terms, Some(at(0).now_ms)).unwrap()
    else {
        panic!()
    };
    let violated: Vec<usize> = (0..usages.len()).filter(|i| usages[*i].violated).collect();
    assert_eq!(
        violated,
        [0],
        "the store refused its own limit, not the burst"
    );
}

/// A request over the per-Envoy limit is refused from the record without a call, also when
/// the store's limits' lease is of another window (docs/fleet.md says so).
#[test]
fn a_request_over_the_per_envoy_limit_makes_no_call() {
    let limits = scoped(&[(1000, Window::Fixed(10)), (5, Window::Fixed(60))], &[1]);
    let store = fresh();
    let mut service = Service { used: vec![0] };
    let (admitted, _, violated) = drain_scoped(&store, &limits, &mut service, at(0));
    assert_eq!((admitted, violated), (5, vec![1]));
    // Same minute, the store's 10 s window turned.
    match take(&store, K, &limits, &[], at(10_000), &TERMS, None).unwrap() {
        Take::Refused(_) => {}
        other => panic!("refused from the record expected, got {other:?}"),
    }
}

/// The same in a mixed plan: after `fleet` -> `envoy` a request is decided. (Before the fix,
/// once the kept figure's units were spent every take claimed a refill that took nothing: a
/// store call per attempt, the request neither admitted nor refused until its deadline.)
#[test]
fn a_limit_changed_from_fleet_to_envoy_in_a_mixed_plan_settles() {
    let before = limits(&[(1000, Window::Day), (10, Window::Day)]);
    let after = scoped(&[(1000, Window::Day), (10, Window::Day)], &[1]);
    let store = fresh();
    let mut service = Service { used: vec![0, 0] };
    let Take::Refill(ask) = take(&store, K, &before, &[], at(0), &TERMS, None).unwrap() else {
        panic!()
    };
    fill(&store, &mut service, ask, at(0).now_ms); // share of 10: 1 unit of l1 held, left 9
    assert!(matches!(
        take(&store, K, &before, &[], at(0), &TERMS, None).unwrap(),
        Take::Admitted(..)
    ));
    let mut service = Service {
        used: vec![service.used[0]],
    };
    let mut refills = 0;
    for _ in 0..5 {
        match take(
            &store,
            K,
            &after,
            &[],
            at(1000),
            &TERMS,
            Some(at(1000).now_ms),
        )
        .unwrap()
        {
            Take::Refill(ask) => {
                refills += 1;
                fill_scoped(&store, &mut service, ask, at(1000).now_ms);
            }
            _ => break,
        }
    }
    assert!(
        refills < 5,
        "the request was decided (admitted or refused), not refilled forever"
    );
}
