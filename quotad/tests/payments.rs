//! Fleet mode's payments API (`tollgate.payments.v1.Payments`) against the quotad binary and a
//! real Redis: a payment claimed once among concurrent copies, its states, a settlement
//! credited once whatever the retries, draws that never overdraw and count the other limits
//! with the balance in one script, the bound on a consumer's open claims, refusals before
//! Redis is called, and the same scripts on a Redis Cluster (each call in one slot).

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use tollgate::paywire::{
    BalanceRequest, ClaimRequest, ClaimState, Claimed, CreditRequest, DrawRequest, MarkRequest,
};
use tollgate_quotad::payments::api::payments_client::PaymentsClient;
use tonic::transport::Channel;

const DOMAIN: &str = "tollgate";

async fn client(quotad: &Quotad) -> PaymentsClient<Channel> {
    client_at(quotad.grpc).await
}

async fn client_at(port: u16) -> PaymentsClient<Channel> {
    PaymentsClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A replay key of its own (hex).
fn replay(tag: &str) -> String {
    let bytes = tollgate::sha256::sha256(unique(tag).as_bytes());
    tollgate::sha256::to_hex(&bytes)[..40].to_string()
}

fn claim_of(consumer: &str, replay: &str) -> ClaimRequest {
    ClaimRequest {
        domain: DOMAIN.into(),
        consumer: consumer.into(),
        replay: replay.into(),
        keep_until: now() + 600,
        stale_ms: 60_000,
        untimely: false,
        look: false,
        settling_stale_ms: 0,
    }
}

async fn claim(c: &mut PaymentsClient<Channel>, request: ClaimRequest) -> (Claimed, ClaimState) {
    let answer = c.claim(request).await.unwrap().into_inner();
    (Claimed::of(answer.outcome), ClaimState::of(answer.state))
}

async fn mark(c: &mut PaymentsClient<Channel>, replay: &str, state: ClaimState) -> bool {
    c.mark(MarkRequest {
        domain: DOMAIN.into(),
        replay: replay.into(),
        state: state as i32,
    })
    .await
    .unwrap()
    .into_inner()
    .found
}

fn credit_of(consumer: &str, replay: &str, credits: u64, ledger: &str) -> CreditRequest {
    CreditRequest {
        domain: DOMAIN.into(),
        consumer: consumer.into(),
        replay: replay.into(),
        credits,
        ledger: ledger.into(),
    }
}

async fn balance(c: &mut PaymentsClient<Channel>, consumer: &str) -> u64 {
    c.balance(BalanceRequest {
        domain: DOMAIN.into(),
        consumer: consumer.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .balance
}

/// A draw of `cost`, counting `limits` (name, window, size) by `hits` each.
fn draw_of(consumer: &str, cost: u64, limits: &[(&str, &str, u64)], hits: u64) -> DrawRequest {
    let sizes: Vec<String> = limits.iter().map(|(_, _, s)| s.to_string()).collect();
    let descriptors: Vec<Vec<(&str, &str)>> = limits
        .iter()
        .zip(&sizes)
        .map(|((name, window, _), size)| {
            vec![
                ("consumer", consumer),
                ("limit", *name),
                ("window", *window),
                ("requests", size.as_str()),
            ]
        })
        .collect();
    DrawRequest {
        domain: DOMAIN.into(),
        consumer: consumer.into(),
        cost,
        limits: if limits.is_empty() {
            Vec::new()
        } else {
            tollgate::rls::encode_request(DOMAIN, &descriptors, &vec![hits; limits.len()])
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_is_claimed_once_and_its_claim_follows_the_payment() {
    let redis = Redis::start();
    let quotad = Quotad::on(QUOTAD, &redis);
    let acme = unique("acme");
    let r = replay("p1");

    // 32 concurrent copies of one payment: one is verified, the others are told it is busy.
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let request = claim_of(&acme, &r);
            let port = quotad.grpc;
            async move { claim(&mut client_at(port).await, request).await.0 }
        })
        .collect();
    let outcomes = futures_join(calls).await;
    let fresh = outcomes.iter().filter(|o| **o == Claimed::Fresh).count();
    let busy = outcomes.iter().filter(|o| **o == Claimed::Busy).count();
    assert_eq!((fresh, busy), (1, 31), "{outcomes:?}");

    let mut c = client(&quotad).await;
    // Another consumer presenting it is turned away; a look of theirs sees nothing.
    let globex = unique("globex");
    assert_eq!(claim(&mut c, claim_of(&globex, &r)).await.0, Claimed::Taken);
    let mut look = claim_of(&globex, &r);
    look.look = true;
    assert_eq!(claim(&mut c, look.clone()).await.0, Claimed::Absent);
    look.consumer = acme.clone();
    assert_eq!(
        claim(&mut c, look.clone()).await,
        (Claimed::Unspecified, ClaimState::Verifying)
    );

    // Settling, then unknown: a retry settles again (no verification), and the claim is kept
    // at least a day from then on.
    assert!(mark(&mut c, &r, ClaimState::Settling).await);
    assert_eq!(claim(&mut c, claim_of(&acme, &r)).await.0, Claimed::Busy);
    assert!(mark(&mut c, &r, ClaimState::Unknown).await);
    assert_eq!(
        claim(&mut c, claim_of(&acme, &r)).await,
        (Claimed::Retry, ClaimState::Settling)
    );
    let key = format!("tollgate:v1:claim:{{{DOMAIN}:{r}}}");
    let ttl: i64 = redis.cli(&["TTL", &key]).trim().parse().unwrap();
    assert!(ttl > 86_000, "kept a day once settling: {ttl}");

    // Credited once, whatever the retries; the claim is then settled, and final.
    let ledger = replay("tx1");
    let answers: Vec<_> = (0..16)
        .map(|_| {
            let request = credit_of(&acme, &r, 100, &ledger);
            let port = quotad.grpc;
            async move {
                client_at(port)
                    .await
                    .credit(request)
                    .await
                    .unwrap()
                    .into_inner()
            }
        })
        .collect();
    let answers = futures_join(answers).await;
    assert_eq!(answers.iter().filter(|a| a.added).count(), 1, "{answers:?}");
    assert!(answers.iter().all(|a| a.balance == 100), "{answers:?}");
    assert_eq!(balance(&mut c, &acme).await, 100);
    assert_eq!(claim(&mut c, claim_of(&acme, &r)).await.0, Claimed::Settled);
    assert!(mark(&mut c, &r, ClaimState::Unknown).await);
    assert_eq!(
        claim(&mut c, claim_of(&acme, &r)).await.0,
        Claimed::Settled,
        "SETTLED is never downgraded"
    );
    // Another settlement credits again; the balance has no TTL.
    let second = c
        .credit(credit_of(&acme, &replay("p2"), 50, &replay("tx2")))
        .await
        .unwrap()
        .into_inner();
    assert!(second.added);
    assert_eq!(second.balance, 150);
    let balance_key = format!("tollgate:v1:{{{DOMAIN}:{acme}}}:$credits");
    assert_eq!(redis.cli(&["TTL", &balance_key]).trim(), "-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_nobody_finished_is_taken_over_or_dropped_and_a_drop_frees_it() {
    let redis = Redis::start();
    let quotad = Quotad::on(QUOTAD, &redis);
    let mut c = client(&quotad).await;
    let acme = unique("acme");

    // An untimely payment with no claim: nothing is made.
    let r = replay("late");
    let mut late = claim_of(&acme, &r);
    late.untimely = true;
    assert_eq!(claim(&mut c, late.clone()).await.0, Claimed::Untimely);
    assert_eq!(
        redis
            .keys(&format!("tollgate:v1:claim:{{{DOMAIN}:{r}}}"))
            .len(),
        0
    );

    // A verification that went stale is taken over (fresh again), or dropped if untimely.
    let mut quick = claim_of(&acme, &r);
    quick.stale_ms = 1;
    assert_eq!(claim(&mut c, quick.clone()).await.0, Claimed::Fresh);
    poll_until(Duration::from_secs(5), || async {
        claim(&mut client(&quotad).await, quick.clone()).await.0 == Claimed::Fresh
    })
    .await;
    late.stale_ms = 1;
    poll_until(Duration::from_secs(5), || async {
        claim(&mut client(&quotad).await, late.clone()).await.0 == Claimed::Untimely
    })
    .await;
    assert_eq!(
        redis
            .keys(&format!("tollgate:v1:claim:{{{DOMAIN}:{r}}}"))
            .len(),
        0
    );

    // A dropped claim may be presented again; setting the state of a gone claim finds nothing.
    let r2 = replay("drop");
    assert_eq!(claim(&mut c, claim_of(&acme, &r2)).await.0, Claimed::Fresh);
    assert!(mark(&mut c, &r2, ClaimState::None).await);
    assert!(!mark(&mut c, &r2, ClaimState::Settling).await);
    assert_eq!(claim(&mut c, claim_of(&acme, &r2)).await.0, Claimed::Fresh);
    assert!(mark(&mut c, &r2, ClaimState::Failed).await);
    assert_eq!(claim(&mut c, claim_of(&acme, &r2)).await.0, Claimed::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_has_at_most_32_claims_open_and_settling_one_frees_its_place() {
    let redis = Redis::start();
    let quotad = Quotad::on(QUOTAD, &redis);
    let mut c = client(&quotad).await;
    let acme = unique("acme");
    let replays: Vec<String> = (0..33).map(|i| replay(&format!("open{i}"))).collect();
    for r in &replays[..32] {
        assert_eq!(claim(&mut c, claim_of(&acme, r)).await.0, Claimed::Fresh);
    }
    assert_eq!(
        claim(&mut c, claim_of(&acme, &replays[32])).await,
        (Claimed::TooMany, ClaimState::None)
    );
    // Refused whole: the 33rd's claim was not kept.
    assert_eq!(
        redis
            .keys(&format!("tollgate:v1:claim:{{{DOMAIN}:{}}}", replays[32]))
            .len(),
        0
    );
    // Another consumer is not held back by acme's.
    assert_eq!(
        claim(&mut c, claim_of(&unique("globex"), &replays[32]))
            .await
            .0,
        Claimed::Fresh
    );
    // A settled payment frees its place; a dropped one too.
    c.credit(credit_of(&acme, &replays[0], 10, &replay("tx")))
        .await
        .unwrap();
    let next = replay("next");
    assert_eq!(
        claim(&mut c, claim_of(&acme, &next)).await.0,
        Claimed::Fresh
    );
    assert_eq!(
        claim(&mut c, claim_of(&acme, &replay("more"))).await.0,
        Claimed::TooMany
    );
    // A drop that keeps its claim (UNKNOWN: its money may have moved) keeps its place too.
    assert!(mark(&mut c, &replays[2], ClaimState::Unknown).await);
    assert!(mark(&mut c, &replays[2], ClaimState::None).await);
    assert_eq!(
        claim(&mut c, claim_of(&acme, &replay("kept"))).await.0,
        Claimed::TooMany
    );
    assert!(mark(&mut c, &replays[1], ClaimState::None).await);
    assert_eq!(
        claim(&mut c, claim_of(&acme, &replay("more2"))).await.0,
        Claimed::Fresh
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draws_never_overdraw_and_count_the_other_limits_with_the_balance() {
    clear_of_day_boundary();
    let redis = Redis::start();
    let quotad = Quotad::on(QUOTAD, &redis);
    let mut c = client(&quotad).await;
    let acme = unique("acme");
    c.credit(credit_of(&acme, &replay("p"), 10, &replay("tx")))
        .await
        .unwrap();

    // 32 concurrent draws of 1, each also counted in a daily limit of 8: exactly 8 go through,
    // and the balance and the counter say so.
    let draws: Vec<_> = (0..32)
        .map(|_| {
            let request = draw_of(&acme, 1, &[("daily", "1d", 8)], 1);
            let port = quotad.grpc;
            async move {
                client_at(port)
                    .await
                    .draw(request)
                    .await
                    .unwrap()
                    .into_inner()
            }
        })
        .collect();
    let answers = futures_join(draws).await;
    assert_eq!(answers.iter().filter(|a| a.drawn).count(), 8, "{answers:?}");
    assert_eq!(balance(&mut c, &acme).await, 2);
    assert_eq!(redis.counted(DOMAIN, &acme, "daily"), 8);
    // A refused draw takes nothing: from the balance or the limit.
    let refused = c
        .draw(draw_of(&acme, 1, &[("daily", "1d", 8)], 1))
        .await
        .unwrap()
        .into_inner();
    assert!(!refused.drawn);
    assert_eq!((refused.balance, refused.used.clone()), (2, vec![8]));
    // With no other limit: down to 0, never below.
    let mut drawn = 0;
    for _ in 0..4 {
        drawn += u64::from(
            c.draw(draw_of(&acme, 1, &[], 0))
                .await
                .unwrap()
                .into_inner()
                .drawn,
        );
    }
    assert_eq!(drawn, 2);
    assert_eq!(balance(&mut c, &acme).await, 0);
    // A draw larger than the balance takes nothing.
    c.credit(credit_of(&acme, &replay("p2"), 3, &replay("tx2")))
        .await
        .unwrap();
    assert!(
        !c.draw(draw_of(&acme, 4, &[], 0))
            .await
            .unwrap()
            .into_inner()
            .drawn
    );
    assert_eq!(balance(&mut c, &acme).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outside_the_contract_or_the_policy_is_refused_before_redis() {
    let redis = Redis::start();
    let quotad = Quotad::start(
        QUOTAD,
        &[
            "--redis",
            &redis.url(),
            "--allow-domains",
            DOMAIN,
            "--max-requests",
            "1000",
        ],
    );
    let mut c = client(&quotad).await;
    let acme = unique("acme");
    let code = |e: tonic::Status| e.code();
    let mut bad = claim_of(&acme, "NOT-HEX");
    assert_eq!(
        code(c.claim(bad.clone()).await.unwrap_err()),
        tonic::Code::InvalidArgument
    );
    bad.replay = "a".repeat(65);
    assert_eq!(
        code(c.claim(bad.clone()).await.unwrap_err()),
        tonic::Code::InvalidArgument
    );
    bad.replay = replay("ok");
    bad.keep_until = now() + 3 * 86_400;
    assert_eq!(
        code(c.claim(bad.clone()).await.unwrap_err()),
        tonic::Code::InvalidArgument
    );
    bad.keep_until = now() + 60;
    bad.domain = "other".into();
    assert_eq!(
        code(c.claim(bad.clone()).await.unwrap_err()),
        tonic::Code::PermissionDenied
    );
    let mut mark = MarkRequest {
        domain: DOMAIN.into(),
        replay: replay("m"),
        state: 9,
    };
    assert_eq!(
        code(c.mark(mark.clone()).await.unwrap_err()),
        tonic::Code::InvalidArgument
    );
    mark.state = ClaimState::Failed as i32;
    assert!(!c.mark(mark).await.unwrap().into_inner().found);
    // Credits: at least 1; not bounded by --max-requests (the money has moved by then).
    let e = c
        .credit(credit_of(&acme, &replay("c"), 0, &replay("l")))
        .await
        .unwrap_err();
    assert_eq!(code(e), tonic::Code::InvalidArgument);
    // A draw's limits are one consumer's, of its domain, within the policy.
    let mut other = draw_of(&acme, 1, &[("daily", "1d", 8)], 1);
    other.consumer = unique("globex");
    let e = c.draw(other).await.unwrap_err();
    assert_eq!(code(e.clone()), tonic::Code::InvalidArgument);
    assert!(e.message().contains("differs"), "{}", e.message());
    let too_big = draw_of(&acme, 1, &[("daily", "1d", 5000)], 1);
    assert_eq!(
        code(c.draw(too_big).await.unwrap_err()),
        tonic::Code::PermissionDenied
    );
    let mut garbage = draw_of(&acme, 1, &[], 0);
    garbage.limits = vec![0xff, 0xff, 0xff];
    assert_eq!(
        code(c.draw(garbage).await.unwrap_err()),
        tonic::Code::InvalidArgument
    );
    // Nothing of it reached Redis.
    assert_eq!(redis.dbsize(), 0);
    let refused =
        quotad.metric("quotad_payment_calls_total{code=\"invalid_argument\",method=\"claim\"}");
    assert_eq!(refused, 3.0);
    // A pack larger than --max-requests is credited all the same: its money has moved.
    let big = c
        .credit(credit_of(&acme, &replay("big"), 5000, &replay("bigtx")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((big.added, big.balance), (true, 5000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settling_claim_waits_out_its_credit_and_an_unknown_one_is_never_dropped() {
    let redis = Redis::start();
    let quotad = Quotad::on(QUOTAD, &redis);
    let mut c = client(&quotad).await;
    let acme = unique("acme");
    let r = replay("settling");
    let mut quick = claim_of(&acme, &r);
    quick.stale_ms = 1;
    assert_eq!(claim(&mut c, quick.clone()).await.0, Claimed::Fresh);
    assert!(mark(&mut c, &r, ClaimState::Settling).await);
    // Not a synchronisation: the claim's 1 ms of `stale_ms` must pass on the clock.
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Its credit may still be under way: a SETTLING claim is stale only after its own time.
    quick.settling_stale_ms = 60_000;
    assert_eq!(claim(&mut c, quick.clone()).await.0, Claimed::Busy);
    quick.settling_stale_ms = 0;
    assert_eq!(
        claim(&mut c, quick.clone()).await,
        (Claimed::Retry, ClaimState::Settling)
    );
    // A drop never removes a claim whose money may have moved.
    assert!(mark(&mut c, &r, ClaimState::Unknown).await);
    assert!(mark(&mut c, &r, ClaimState::None).await);
    assert_eq!(claim(&mut c, claim_of(&acme, &r)).await.0, Claimed::Retry);
    c.credit(credit_of(&acme, &r, 1, &replay("tx")))
        .await
        .unwrap();
    assert!(mark(&mut c, &r, ClaimState::None).await);
    assert_eq!(claim(&mut c, claim_of(&acme, &r)).await.0, Claimed::Settled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_redis_cluster_each_call_stays_in_one_slot() {
    clear_of_day_boundary();
    let cluster = RedisCluster::start();
    let quotad = Quotad::start(
        QUOTAD,
        &[
            "--redis-cluster",
            &cluster.seeds(),
            "--redis-timeout-ms",
            "5000",
        ],
    );
    let mut c = client(&quotad).await;
    for i in 0..6 {
        let consumer = unique(&format!("c{i}"));
        let r = replay(&format!("p{i}"));
        assert_eq!(
            claim(&mut c, claim_of(&consumer, &r)).await.0,
            Claimed::Fresh
        );
        assert!(mark(&mut c, &r, ClaimState::Settling).await);
        let credited = c
            .credit(credit_of(&consumer, &r, 5, &replay("tx")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((credited.added, credited.balance), (true, 5));
        assert_eq!(
            claim(&mut c, claim_of(&consumer, &r)).await.0,
            Claimed::Settled
        );
        let drawn = c
            .draw(draw_of(
                &consumer,
                2,
                &[("daily", "1d", 10), ("burst", "1m", 100)],
                1,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(drawn.drawn, "{drawn:?}");
        assert_eq!(balance(&mut c, &consumer).await, 3);
    }
}

/// Runs the futures concurrently (on this runtime's threads) and returns their outputs.
async fn futures_join<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Polls `check` until it holds, failing after `deadline`.
async fn poll_until<F, Fut>(deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < deadline, "not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
