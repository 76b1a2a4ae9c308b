//! Prepaid credits in fleet mode, end to end: Redis, quotad (mutual TLS) and three Envoys with
//! two workers each running the release .wasm with `store.rls`, and the test kit's fake
//! facilitator. A payment's claim, the balance and the ledger are the fleet's (quotad's
//! payments API): copies of one payment sent to every Envoy settle once and credit once, the
//! credits are spent across the fleet exactly, and a settlement whose outcome was unknown is
//! credited once when the same payment comes back through another Envoy — also an Envoy whose
//! configuration changed since (a fleet in the middle of a rollout).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use serde_json::Value;
use tollgate_testkit::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// A plan of 2 requests a day that credits stand in for, beside a burst limit they do not, a
/// pack of 5 credits; the fleet's store is quotad.
fn plugin_json(timeout: &str) -> String {
    format!(
        r#"{{
      "store": {{ "rls": {{ "cluster": "tollgate_quotad", "timeout": "2s", "lease": 10 }} }},
      "plans": {{
        "metered": {{ "limits": [ {{"name": "daily", "requests": 2, "window": "day"}},
                                  {{"name": "burst", "requests": 1000, "window": "1m"}} ],
                      "credits": ["daily"] }}
      }},
      "consumers": {{
        "acme":   {{ "plan": "metered", "keys": ["acme-key"] }},
        "globex": {{ "plan": "metered", "keys": ["globex-key"] }}
      }},
      "payments": {{
        "facilitator": {{ "cluster": "facilitator", "url": "http://facilitator.test/x402", "timeout": "{timeout}" }},
        "resource": {{ "url": "https://api.example.com/", "description": "API credits" }},
        "packs": [
          {{ "name": "five", "credits": 5, "network": "eip155:84532",
             "asset": "{ASSET}", "amount": "10000", "pay_to": "{PAY_TO}", "max_timeout_seconds": 3600,
             "extra": {{"name": "USDC", "version": "2"}} }}
        ]
      }},
      "usage_path": "/tollgate/usage"
    }}"#
    )
}

struct Fleet {
    redis: Redis,
    _quotad: Quotad,
    envoys: Vec<Envoy>,
    facilitator: Facilitator,
}

impl Fleet {
    fn start(timeout: &str) -> Fleet {
        let json = plugin_json(timeout);
        Fleet::start_with(&[&json, &json, &json])
    }

    /// A fleet whose Envoys have these plugin configurations (JSON), one each.
    fn start_with(configs: &[&str]) -> Fleet {
        let redis = Redis::start();
        let quotad = Quotad::fleet(&redis);
        let facilitator = Facilitator::start("/x402");
        let envoys = configs
            .iter()
            .map(|json| {
                Envoy::start_with(Options {
                    clusters: vec![("facilitator".into(), facilitator.port)],
                    ..fleet_options(&quotad, &plugin(json), 2)
                })
            })
            .collect();
        Fleet {
            redis,
            _quotad: quotad,
            envoys,
            facilitator,
        }
    }

    fn ports(&self) -> Vec<u16> {
        self.envoys.iter().map(|e| e.port).collect()
    }

    /// Spends `key`'s daily quota across the fleet (2 requests in all), and returns a 402
    /// that offers credits.
    fn spend(&self, key: &str) -> Response {
        assert_eq!(drain_until_refused(&self.ports(), key, 10), 2);
        let refused = self.envoys[1].get_with_key(key);
        assert_eq!(refused.status, 402, "{}", refused.body);
        refused
    }

    /// The fleet-wide balance of `consumer`, as Redis holds it.
    fn balance(&self, consumer: &str) -> u64 {
        self.redis
            .get(&format!("tollgate:v1:{{tollgate:{consumer}}}:$credits"))
    }

    fn settles(&self) -> usize {
        self.facilitator.settles()
    }
}

fn offer(refused: &Response) -> Value {
    decode_x402(
        refused
            .header("payment-required")
            .expect("PAYMENT-REQUIRED"),
    )["accepts"][0]
        .clone()
}

fn pay(envoy: &Envoy, key: &str, payment: &str) -> Response {
    envoy.get("/", &[("x-api-key", key), ("payment-signature", payment)])
}

#[test]
fn copies_of_one_payment_to_three_envoys_settle_once_and_its_credits_are_the_fleets() {
    let fleet = Fleet::start("5s");
    let accepted = offer(&fleet.spend("acme-key"));
    // The settlement takes a while, so that the copies arrive while it is under way.
    fleet
        .facilitator
        .script_settle(&[Outcome::Slow(Duration::from_millis(500))]);
    let payment = payment_signature(&accepted, PAYER, &x402_nonce(7));
    let ports = fleet.ports();
    let copies: Vec<_> = (0..32)
        .map(|i| {
            let payment = payment.clone();
            let port = ports[i % ports.len()];
            std::thread::spawn(move || {
                request(
                    port,
                    "GET",
                    "/",
                    &[
                        ("x-api-key", b"acme-key"),
                        ("payment-signature", payment.as_bytes()),
                    ],
                )
            })
        })
        .collect();
    let answers: Vec<Response> = copies.into_iter().map(|h| h.join().unwrap()).collect();
    for r in &answers {
        assert!(
            [200, 503].contains(&r.status),
            "a copy got {}: {}",
            r.status,
            r.body
        );
        if r.status == 503 {
            assert!(r.header("retry-after").is_some());
            assert!(
                r.header("payment-required").is_none(),
                "never asked to pay again"
            );
        }
    }
    let served = answers.iter().filter(|r| r.status == 200).count() as u64;
    assert!(served >= 1, "the paying copy is served");
    assert_eq!(
        fleet.settles(),
        1,
        "one settlement for one payment, fleet-wide"
    );
    assert_eq!(fleet.facilitator.verifies(), 1);
    // One credit of 5 in Redis, spent across the three Envoys exactly: what the copies were
    // served, and what each Envoy serves until the fleet's balance is gone.
    let drained = drain_until_refused(&ports, "acme-key", 10);
    assert_eq!(served + drained, 5, "served {served}, then {drained}");
    assert_eq!(fleet.balance("acme"), 0);
    // A replay of the settled payment, at any Envoy, credits nothing.
    for envoy in &fleet.envoys {
        assert_eq!(pay(envoy, "acme-key", &payment).status, 402);
    }
    assert_eq!(fleet.settles(), 1);
    // Another consumer presenting acme's payment is refused before any call.
    let globex = offer(&fleet.spend("globex-key"));
    assert_eq!(globex, accepted, "the same pack");
    let taken = pay(&fleet.envoys[2], "globex-key", &payment);
    assert_eq!(taken.status, 402, "{}", taken.body);
    assert_eq!(fleet.settles(), 1);
    assert_eq!(fleet.balance("globex"), 0);
}

#[test]
fn an_unknown_settlement_is_credited_once_when_the_payment_comes_back_elsewhere() {
    let fleet = Fleet::start("1s");
    fleet.facilitator.set_idempotent(true);
    let accepted = offer(&fleet.spend("acme-key"));
    // The facilitator settles, but answers after tollgate's timeout.
    fleet
        .facilitator
        .script_settle(&[Outcome::Slow(Duration::from_secs(3))]);
    let nonce = x402_nonce(21);
    let payment = payment_signature(&accepted, PAYER, &nonce);
    let unknown = pay(&fleet.envoys[0], "acme-key", &payment);
    assert_eq!(unknown.status, 503, "{}", unknown.body);
    assert_eq!(
        unknown.json()["type"],
        "urn:tollgate:problem:payment-pending"
    );
    assert!(unknown.header("payment-required").is_none());
    assert_eq!(fleet.balance("acme"), 0, "nothing credited meanwhile");
    poll(DEADLINE, "the facilitator to have settled", || {
        fleet.facilitator.settled().contains(&nonce).then_some(())
    });
    // The same payment through another Envoy: its claim (in the store) says the money may
    // have moved: settled again (never verified again), credited once.
    let paid = pay(&fleet.envoys[2], "acme-key", &payment);
    assert_eq!(paid.status, 200, "{}", paid.body);
    let receipt = decode_x402(paid.header("payment-response").unwrap());
    assert_eq!(
        receipt["transaction"],
        Facilitator::transaction_for(&nonce).as_str()
    );
    assert_eq!(fleet.facilitator.verifies(), 1);
    assert_eq!(fleet.settles(), 2);
    assert_eq!(fleet.balance("acme"), 4);
    // The usage endpoint of any Envoy reports the fleet's balance (and offers the packs).
    for envoy in &fleet.envoys {
        let usage = envoy.get("/tollgate/usage", &[("x-api-key", "acme-key")]);
        assert_eq!(usage.status, 200, "{}", usage.body);
        assert_eq!(usage.json()["credits"], 4, "{}", usage.body);
        assert!(usage.header("payment-required").is_some());
    }
    assert_eq!(fleet.balance("acme"), 4, "reading it draws nothing");
    assert_eq!(drain_until_refused(&fleet.ports(), "acme-key", 10), 4);
    assert_eq!(
        pay(&fleet.envoys[1], "acme-key", &payment).status,
        402,
        "credited once"
    );
}

#[test]
fn an_unknown_settlement_is_decided_by_its_claim_on_an_envoy_configured_otherwise() {
    // A rollout in progress: the second Envoy has acme suspended, the third a repriced pack.
    let base = plugin_json("1s");
    let suspended = base.replace(
        r#""acme":   { "plan": "metered", "keys": ["acme-key"] }"#,
        r#""acme":   { "plan": "metered", "keys": ["acme-key"], "status": "suspended" }"#,
    );
    let repriced = base.replace(r#""amount": "10000""#, r#""amount": "20000""#);
    assert!(suspended != base && repriced != base);
    let fleet = Fleet::start_with(&[&base, &suspended, &repriced]);
    fleet.facilitator.set_idempotent(true);
    let first = &fleet.envoys[0];
    assert_eq!(drain_until_refused(&[first.port], "acme-key", 10), 2);
    let accepted = offer(&first.get_with_key("acme-key"));
    // Two payments whose settlements go unknown (answered after tollgate's timeout).
    fleet.facilitator.script_settle(&[
        Outcome::Slow(Duration::from_secs(3)),
        Outcome::Slow(Duration::from_secs(3)),
    ]);
    let nonces = [x402_nonce(31), x402_nonce(32)];
    let payments: Vec<String> = nonces
        .iter()
        .map(|n| payment_signature(&accepted, PAYER, n))
        .collect();
    for payment in &payments {
        assert_eq!(pay(first, "acme-key", payment).status, 503);
    }
    poll(DEADLINE, "the facilitator to have settled both", || {
        let settled = fleet.facilitator.settled();
        nonces.iter().all(|n| settled.contains(n)).then_some(())
    });
    assert_eq!(fleet.settles(), 2);

    // Through the Envoy that suspends acme: its claim says the money may have moved, so it is
    // settled again and credited — the request itself is then refused for the suspension,
    // saying what became of the payment.
    let suspended = pay(&fleet.envoys[1], "acme-key", &payments[0]);
    assert_eq!(suspended.status, 402, "{}", suspended.body);
    assert_eq!(
        suspended.json()["type"],
        "urn:tollgate:problem:subscription-suspended",
        "{}",
        suspended.body
    );
    let receipt = decode_x402(suspended.header("payment-response").unwrap());
    assert_eq!(
        receipt["transaction"],
        Facilitator::transaction_for(&nonces[0]).as_str()
    );
    assert_eq!(fleet.settles(), 3);
    assert_eq!(fleet.balance("acme"), 5);

    // Through the Envoy whose pack was repriced: the payment matches no pack there, but its
    // money may have moved: 409 for the operator, never a fresh 402.
    let unresolved = pay(&fleet.envoys[2], "acme-key", &payments[1]);
    assert_eq!(unresolved.status, 409, "{}", unresolved.body);
    assert_eq!(
        unresolved.json()["type"],
        "urn:tollgate:problem:payment-unresolved"
    );
    assert!(unresolved.header("payment-required").is_none());
    assert_eq!(fleet.settles(), 3);
    assert_eq!(fleet.facilitator.verifies(), 2, "never verified again");
    // The second payment, sent back where it was taken, is settled again and credited once.
    let paid = pay(first, "acme-key", &payments[1]);
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert_eq!(fleet.balance("acme"), 9);
}

#[test]
fn a_credit_the_store_did_not_confirm_is_tried_again_and_lands_once() {
    let fleet = Fleet::start("10s");
    let accepted = offer(&fleet.spend("acme-key"));
    fleet
        .facilitator
        .script_settle(&[Outcome::Slow(Duration::from_secs(4))]);
    let nonce = x402_nonce(41);
    let payment = payment_signature(&accepted, PAYER, &nonce);
    let port = fleet.envoys[0].port;
    let paying = {
        let payment = payment.clone();
        std::thread::spawn(move || {
            request(
                port,
                "GET",
                "/",
                &[
                    ("x-api-key", b"acme-key"),
                    ("payment-signature", payment.as_bytes()),
                ],
            )
        })
    };
    // Redis stops answering once the settlement is under way (its claim is SETTLING; the
    // facilitator answers 4 s after it got the call): the credit that follows cannot be
    // confirmed.
    poll(DEADLINE, "the settlement to have started", || {
        (fleet.settles() == 1).then_some(())
    });
    fleet.redis.freeze();
    let answered = paying.join().unwrap();
    assert_eq!(answered.status, 503, "{}", answered.body);
    assert_eq!(
        answered.json()["type"],
        "urn:tollgate:problem:payment-pending"
    );
    assert!(answered.header("payment-required").is_none());
    assert!(
        answered.body.contains("do not pay again"),
        "{}",
        answered.body
    );
    // A copy meanwhile is not settled again.
    let copy = pay(&fleet.envoys[1], "acme-key", &payment);
    assert_eq!(copy.status, 503, "{}", copy.body);
    fleet.redis.thaw();
    // The root tries the credit again by itself: it lands, once.
    poll(DEADLINE, "the credit to land", || {
        (fleet.balance("acme") == 5).then_some(())
    });
    // The same payment again, through any Envoy: a replay of a settled payment, served from
    // the credits (never settled again).
    let served = pay(&fleet.envoys[2], "acme-key", &payment);
    assert_eq!(served.status, 200, "{}", served.body);
    assert_eq!(fleet.settles(), 1);
    assert_eq!(fleet.facilitator.verifies(), 1);
    assert_eq!(fleet.balance("acme"), 4);
    assert_eq!(drain_until_refused(&fleet.ports(), "acme-key", 10), 4);
}
