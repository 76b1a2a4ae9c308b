//! Prepaid credits bought with x402, end to end: real Envoy (two workers) with the release
//! .wasm, a spent consumer's 402 offering credit packs, and a fake facilitator (the test kit's
//! [`Facilitator`], through an Envoy cluster) that verifies and settles as scripted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tollgate_testkit::*;

use std::time::Duration;

use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

/// A plan of 2 requests a day that credits stand in for, beside a burst limit they do not;
/// packs of 5 (v2 and v1) and 20 credits.
fn plugin_json(timeout: &str) -> String {
    plugin_json_with(timeout, "")
}

/// [`plugin_json`] with more top-level members (`extra` starts with a comma).
fn plugin_json_with(timeout: &str, extra: &str) -> String {
    format!(
        r#"{{
      "plans": {{
        "metered": {{ "limits": [ {{"name": "daily", "requests": 2, "window": "day"}},
                                  {{"name": "burst", "requests": 1000, "window": "1m"}} ],
                      "credits": ["daily"] }},
        "free": {{ "limits": [ {{"name": "daily", "requests": 2, "window": "day"}} ] }},
        "payg": {{ "limits": [ {{"name": "paid", "requests": 0, "window": "month"}} ], "credits": ["paid"] }}
      }},
      "consumers": {{
        "acme":    {{ "plan": "metered", "keys": ["acme-key"] }},
        "globex":  {{ "plan": "metered", "keys": ["globex-key"] }},
        "initech": {{ "plan": "metered", "keys": ["initech-key"] }},
        "hooli":   {{ "plan": "free",    "keys": ["hooli-key"] }},
        "wayne":   {{ "plan": "payg",    "keys": ["wayne-key"] }}
      }},
      "payments": {{
        "facilitator": {{ "cluster": "facilitator", "url": "http://facilitator.test/x402", "timeout": "{timeout}" }},
        "resource": {{ "url": "https://api.example.com/", "description": "API credits" }},
        "packs": [
          {{ "name": "five", "credits": 5, "network": "eip155:84532", "v1_network": "base-sepolia",
             "asset": "{ASSET}", "amount": "10000", "pay_to": "{PAY_TO}", "max_timeout_seconds": 3600,
             "extra": {{"name": "USDC", "version": "2"}} }},
          {{ "name": "twenty", "credits": 20, "network": "eip155:84532",
             "asset": "{ASSET}", "amount": "35000", "pay_to": "{PAY_TO}", "max_timeout_seconds": 3600,
             "extra": {{"name": "USDC", "version": "2"}} }}
        ]
      }},
      "usage_path": "/tollgate/usage"{extra}
    }}"#
    )
}

/// The calls a payment made (not the `/supported` check each VM makes when configured).
fn payment_calls(facilitator: &Facilitator) -> Vec<FacilitatorCall> {
    facilitator
        .calls()
        .into_iter()
        .filter(|c| !c.path.ends_with("/supported"))
        .collect()
}

fn start(facilitator: &Facilitator, timeout: &str) -> Envoy {
    Envoy::start_with(Options {
        plugin: Some(plugin(&plugin_json(timeout))),
        concurrency: 2,
        clusters: vec![("facilitator".into(), facilitator.port)],
        ..Options::default()
    })
}

/// Spends `key`'s daily quota (2 requests): the third is the 402 that offers credits.
fn spend(envoy: &Envoy, key: &str) -> Response {
    for _ in 0..2 {
        assert_eq!(envoy.get_with_key(key).status, 200);
    }
    let refused = envoy.get_with_key(key);
    assert_eq!(refused.status, 402, "{}", refused.body);
    refused
}

/// The v2 offers of a 402.
fn offers(refused: &Response) -> Value {
    decode_x402(
        refused
            .header("payment-required")
            .expect("a PAYMENT-REQUIRED header"),
    )
}

fn pay(envoy: &Envoy, key: &str, payment: &str) -> Response {
    envoy.get("/", &[("x-api-key", key), ("payment-signature", payment)])
}

/// Requests as `key` until one is refused: how many were served.
fn served_until_refused(envoy: &Envoy, key: &str) -> usize {
    let mut served = 0;
    loop {
        let r = envoy.get_with_key(key);
        match r.status {
            200 => served += 1,
            402 => return served,
            other => panic!("unexpected {other}: {}", r.body),
        }
        assert!(served < 1000, "never refused");
    }
}

#[test]
fn a_spent_consumer_pays_for_a_pack_and_is_served_exactly_its_credits() {
    let facilitator = Facilitator::start("/x402");
    let envoy = start(&facilitator, "5s");
    let refused = spend(&envoy, "acme-key");
    // The offers: v2 in the header, v1 in the body beside the problem, never cached.
    let v2 = offers(&refused);
    assert_eq!(v2["x402Version"], 2);
    assert_eq!(v2["resource"]["url"], "https://api.example.com/");
    let accepts = v2["accepts"].as_array().unwrap();
    assert_eq!(accepts.len(), 2);
    assert_eq!(accepts[0]["amount"], "10000");
    assert_eq!(accepts[0]["payTo"], PAY_TO);
    assert_eq!(accepts[0]["network"], "eip155:84532");
    assert_eq!(accepts[0]["extra"]["name"], "USDC");
    assert_eq!(accepts[1]["amount"], "35000");
    let body = refused.json();
    assert_eq!(
        body["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );
    assert_eq!(body["x402Version"], 1);
    assert_eq!(body["accepts"][0]["network"], "base-sepolia");
    assert_eq!(body["accepts"][0]["maxAmountRequired"], "10000");
    assert_eq!(refused.header("cache-control"), Some("no-store"));

    // Paying the first pack serves this request, from the credits it bought.
    let nonce = x402_nonce(1);
    let paid = pay(
        &envoy,
        "acme-key",
        &payment_signature(&accepts[0], PAYER, &nonce),
    );
    assert_eq!(paid.status, 200, "{}", paid.body);
    let receipt = decode_x402(paid.header("payment-response").expect("PAYMENT-RESPONSE"));
    assert_eq!(receipt["success"], true);
    assert_eq!(
        receipt["transaction"],
        Facilitator::transaction_for(&nonce).as_str()
    );
    // The upstream never sees the payment.
    let seen = paid.json()["headers"].to_string();
    assert!(!seen.contains("payment-signature"), "{seen}");
    // One verify and one settle, each with the configured offer (not the client's copy).
    let calls = payment_calls(&facilitator);
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/x402/verify", "/x402/settle"]);
    for call in &calls {
        assert_eq!(call.body["paymentRequirements"]["amount"], "10000");
        assert_eq!(call.body["paymentRequirements"]["payTo"], PAY_TO);
        assert_eq!(call.body["x402Version"], 2);
    }
    let usage = envoy.get("/tollgate/usage", &[("x-api-key", "acme-key")]);
    assert_eq!(usage.json()["credits"], 4);
    // The usage endpoint offers the packs too: a client may buy before it runs out.
    assert_eq!(
        decode_x402(usage.header("payment-required").unwrap())["accepts"],
        v2["accepts"]
    );
    // 5 credits: the paying request took one, 4 more are served, then 402 again with offers.
    assert_eq!(served_until_refused(&envoy, "acme-key"), 4);
    let again = envoy.get_with_key("acme-key");
    assert!(again.header("payment-required").is_some());
    assert_eq!(facilitator.settles(), 1);
    assert_eq!(envoy.counter("tollgate.payments.settled"), 1);
    assert_eq!(envoy.counter("tollgate.payments.credits"), 5);
}

#[test]
fn thirty_two_copies_of_one_payment_settle_once_and_credit_once() {
    let facilitator = Facilitator::start("/x402");
    let envoy = start(&facilitator, "5s");
    let accepted = offers(&spend(&envoy, "acme-key"))["accepts"][0].clone();
    // The settlement takes a while, so that the copies arrive while it is under way.
    facilitator.script_settle(&[Outcome::Slow(Duration::from_millis(500))]);
    let payment = payment_signature(&accepted, PAYER, &x402_nonce(7));
    let port = envoy.port;
    let copies: Vec<_> = (0..32)
        .map(|_| {
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
        })
        .collect();
    let answers: Vec<Response> = copies.into_iter().map(|h| h.join().unwrap()).collect();
    let served = answers.iter().filter(|r| r.status == 200).count();
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
    assert_eq!(facilitator.settles(), 1, "one settlement for one payment");
    assert_eq!(facilitator.verifies(), 1);
    // One credit of 5: whatever the copies were served, and the rest, add up to 5.
    assert_eq!(served + served_until_refused(&envoy, "acme-key"), 5);
}

#[test]
fn a_payment_is_redeemed_once_by_the_consumer_who_presented_it() {
    let facilitator = Facilitator::start("/x402");
    let envoy = start(&facilitator, "5s");
    let accepted = offers(&spend(&envoy, "acme-key"))["accepts"][0].clone();
    spend(&envoy, "globex-key");
    let payment = payment_signature(&accepted, PAYER, &x402_nonce(11));
    assert_eq!(pay(&envoy, "acme-key", &payment).status, 200);
    assert_eq!(served_until_refused(&envoy, "acme-key"), 4);
    // A replay credits nothing (no call: decided as a request without payment).
    let replay = pay(&envoy, "acme-key", &payment);
    assert_eq!(replay.status, 402);
    assert!(replay.header("payment-response").is_none());
    // Another consumer presenting it: refused, with the offers, no call.
    let stolen = pay(&envoy, "globex-key", &payment);
    assert_eq!(stolen.status, 402);
    assert_eq!(
        stolen.json()["type"],
        "urn:tollgate:problem:payment-refused"
    );
    assert!(offers(&stolen)["error"].as_str().unwrap().contains("used"));
    assert_eq!(facilitator.settles(), 1);

    // Tampered: an amount below the offer's, or another payee: refused before any call.
    let calls = payment_calls(&facilitator).len();
    let mut cheap = accepted.clone();
    cheap["amount"] = "1".into();
    let r = pay(
        &envoy,
        "globex-key",
        &payment_signature(&cheap, PAYER, &x402_nonce(12)),
    );
    assert_eq!(r.status, 402);
    assert_eq!(r.json()["type"], "urn:tollgate:problem:payment-refused");
    let mut elsewhere = accepted.clone();
    elsewhere["payTo"] = "0x000000000000000000000000000000000000dEaD".into();
    let r = pay(
        &envoy,
        "globex-key",
        &payment_signature(&elsewhere, PAYER, &x402_nonce(13)),
    );
    assert_eq!(r.status, 402);
    // Malformed: 400.
    let r = pay(&envoy, "globex-key", "not-a-payment");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "urn:tollgate:problem:payment-malformed");
    assert_eq!(
        payment_calls(&facilitator).len(),
        calls,
        "no facilitator call for a bad payment"
    );
    assert_eq!(envoy.get_with_key("globex-key").status, 402);
}

#[test]
fn an_unknown_settlement_is_a_503_and_the_same_payment_is_credited_once_later() {
    let facilitator = Facilitator::start("/x402");
    facilitator.set_idempotent(true);
    let envoy = start(&facilitator, "1s");
    let accepted = offers(&spend(&envoy, "acme-key"))["accepts"][0].clone();
    // The facilitator settles, but answers after tollgate's timeout.
    facilitator.script_settle(&[Outcome::Slow(Duration::from_secs(3))]);
    let nonce = x402_nonce(21);
    let payment = payment_signature(&accepted, PAYER, &nonce);
    let unknown = pay(&envoy, "acme-key", &payment);
    assert_eq!(unknown.status, 503, "{}", unknown.body);
    assert_eq!(
        unknown.json()["type"],
        "urn:tollgate:problem:payment-pending"
    );
    assert!(unknown.header("retry-after").is_some());
    assert!(
        unknown.header("payment-required").is_none(),
        "never asked to pay again"
    );
    // Nothing credited meanwhile.
    assert_eq!(envoy.get_with_key("acme-key").status, 402);
    poll(DEADLINE, "the facilitator to have settled", || {
        facilitator.settled().contains(&nonce).then_some(())
    });
    // The same payment again: settled again (no second verification), credited once.
    let paid = pay(&envoy, "acme-key", &payment);
    assert_eq!(paid.status, 200, "{}", paid.body);
    let receipt = decode_x402(paid.header("payment-response").unwrap());
    assert_eq!(
        receipt["transaction"],
        Facilitator::transaction_for(&nonce).as_str()
    );
    assert_eq!(facilitator.verifies(), 1);
    assert_eq!(facilitator.settles(), 2);
    assert_eq!(served_until_refused(&envoy, "acme-key"), 4);
    assert_eq!(
        pay(&envoy, "acme-key", &payment).status,
        402,
        "credited once"
    );
}

#[test]
fn facilitator_failures_never_credit_and_say_whether_to_pay_again() {
    let facilitator = Facilitator::start("/x402");
    let envoy = start(&facilitator, "1s");
    let accepted = offers(&spend(&envoy, "initech-key"))["accepts"][0].clone();
    let payment = |n: u64| payment_signature(&accepted, PAYER, &x402_nonce(n));
    let kind = |r: &Response| r.json()["type"].as_str().unwrap_or_default().to_string();

    // Refused by verification: 402 with the offers and the reason; no settlement.
    facilitator.script_verify(&[Outcome::Invalid("insufficient_funds")]);
    let r = pay(&envoy, "initech-key", &payment(31));
    assert_eq!(
        (r.status, kind(&r).as_str()),
        (402, "urn:tollgate:problem:payment-refused")
    );
    assert_eq!(offers(&r)["error"], "insufficient_funds");
    assert_eq!(facilitator.settles(), 0);
    // ...and final: the same payment again calls nothing.
    let calls = payment_calls(&facilitator).len();
    assert_eq!(pay(&envoy, "initech-key", &payment(31)).status, 402);
    assert_eq!(payment_calls(&facilitator).len(), calls);

    // Verification unavailable: 503, and the payment may be presented again.
    facilitator.script_verify(&[Outcome::Status(500)]);
    let r = pay(&envoy, "initech-key", &payment(32));
    assert_eq!(r.status, 503);
    facilitator.script_verify(&[Outcome::Drop]);
    assert_eq!(pay(&envoy, "initech-key", &payment(32)).status, 503);
    assert_eq!(facilitator.settles(), 0);

    // Settlement refused before any transfer: 402; its nonce used already on a first try: 402.
    facilitator.script_settle(&[Outcome::Invalid("insufficient_funds")]);
    assert_eq!(pay(&envoy, "initech-key", &payment(33)).status, 402);
    facilitator.script_settle(&[Outcome::NonceAlreadyUsed]);
    assert_eq!(pay(&envoy, "initech-key", &payment(34)).status, 402);
    // Settlement answered 500 or cut: unknown, 503 (the money may have moved).
    facilitator.script_settle(&[Outcome::Status(500)]);
    let r = pay(&envoy, "initech-key", &payment(35));
    assert_eq!(
        (r.status, kind(&r).as_str()),
        (503, "urn:tollgate:problem:payment-pending")
    );
    facilitator.script_settle(&[Outcome::Drop]);
    assert_eq!(pay(&envoy, "initech-key", &payment(36)).status, 503);
    // An unknown settlement whose retry finds the nonce used, without a transaction: not
    // credited, and not a fresh 402 either.
    facilitator.script_settle(&[Outcome::NonceAlreadyUsed]);
    let r = pay(&envoy, "initech-key", &payment(35));
    assert_eq!(
        (r.status, kind(&r).as_str()),
        (409, "urn:tollgate:problem:payment-unresolved")
    );
    // Through all of it, nothing was credited.
    assert_eq!(envoy.get_with_key("initech-key").status, 402);
    let counters = [
        "settled",
        "refused",
        "unknown",
        "unresolved",
        "facilitator_unavailable",
    ]
    .map(|c| envoy.counter(&format!("tollgate.payments.{c}")));
    assert_eq!(counters, [0, 3, 2, 1, 2]);
    let logged = envoy.log();
    assert!(
        !logged.contains(&payment(35)),
        "a payment header was logged"
    );
}

#[test]
fn a_v1_client_pays_with_x_payment() {
    let facilitator = Facilitator::start("/x402");
    let envoy = start(&facilitator, "5s");
    let refused = spend(&envoy, "acme-key");
    let offer = &refused.json()["accepts"][0];
    let nonce = x402_nonce(41);
    let payment = x_payment_v1(
        offer["network"].as_str().unwrap(),
        offer["payTo"].as_str().unwrap(),
        offer["maxAmountRequired"].as_str().unwrap(),
        PAYER,
        &nonce,
    );
    let paid = envoy.get("/", &[("x-api-key", "acme-key"), ("x-payment", &payment)]);
    assert_eq!(paid.status, 200, "{}", paid.body);
    let receipt = decode_x402(
        paid.header("x-payment-response")
            .expect("X-PAYMENT-RESPONSE"),
    );
    assert_eq!(
        receipt["transaction"],
        Facilitator::transaction_for(&nonce).as_str()
    );
    let settle = facilitator
        .calls()
        .into_iter()
        .find(|c| c.path == "/x402/settle")
        .unwrap();
    assert_eq!(settle.body["x402Version"], 1);
    assert_eq!(
        settle.body["paymentRequirements"]["network"],
        "base-sepolia"
    );
    assert_eq!(served_until_refused(&envoy, "acme-key"), 4);
}

#[test]
fn a_plan_without_credits_offers_none_and_ignores_payments() {
    let facilitator = Facilitator::start("/x402");
    let envoy = start(&facilitator, "5s");
    let refused = spend(&envoy, "hooli-key");
    assert!(refused.header("payment-required").is_none());
    let usage = envoy.get("/tollgate/usage", &[("x-api-key", "hooli-key")]);
    assert_eq!(usage.status, 200);
    assert!(usage.header("payment-required").is_none());
    assert!(usage.json().get("credits").is_none());
    assert!(refused.json().get("accepts").is_none());
    let offer = offers(&spend(&envoy, "acme-key"))["accepts"][0].clone();
    let r = pay(
        &envoy,
        "hooli-key",
        &payment_signature(&offer, PAYER, &x402_nonce(51)),
    );
    assert_eq!(r.status, 402);
    assert!(payment_calls(&facilitator).is_empty());
    // No HTTP Payment scheme here: its credentials are not read, and never go upstream.
    let served = envoy.get(
        "/",
        &[
            ("x-api-key", "globex-key"),
            ("payment-authorization", "Payment eyJub3QiOiJyZWFkIn0"),
            ("authorization", "Payment eyJub3QiOiJyZWFkIn0"),
        ],
    );
    assert_eq!(served.status, 200, "{}", served.body);
    let seen = served.json()["headers"].to_string().to_ascii_lowercase();
    assert!(!seen.contains("authorization"), "{seen}");
    assert!(payment_calls(&facilitator).is_empty());
}

#[test]
fn a_settled_payment_is_a_usage_event_named_by_its_transaction() {
    let facilitator = Facilitator::start("/x402");
    let sink = Sink::start();
    let envoy = Envoy::start_with(Options {
        plugin: Some(plugin(&plugin_json_with(
            "5s",
            r#", "events": {"cluster": "sink", "url": "http://events.test/ingest", "interval": "1s"}"#,
        ))),
        concurrency: 2,
        clusters: vec![
            ("facilitator".into(), facilitator.port),
            ("sink".into(), sink.port),
        ],
        ..Options::default()
    });
    let accepted = offers(&spend(&envoy, "acme-key"))["accepts"][1].clone();
    let nonce = x402_nonce(61);
    assert_eq!(
        pay(
            &envoy,
            "acme-key",
            &payment_signature(&accepted, PAYER, &nonce)
        )
        .status,
        200
    );
    let event = poll(DEADLINE, "a payment.settled event", || {
        sink.accepted()
            .into_iter()
            .find(|e| e["type"] == "io.tollgate.payment.settled")
    });
    let data = &event["data"];
    assert_eq!(event["subject"], "acme");
    assert_eq!(data["consumer"], "acme");
    assert_eq!(data["plan"], "metered");
    assert_eq!(data["pack"], "twenty");
    assert_eq!(data["credits"], 20);
    // The paying request took one credit.
    assert_eq!(data["balance"], 20);
    assert_eq!(data["amount"], "35000");
    assert_eq!(data["pay_to"], PAY_TO);
    assert_eq!(data["payer"], PAYER);
    assert_eq!(data["network"], "eip155:84532");
    assert_eq!(
        data["transaction"],
        Facilitator::transaction_for(&nonce).as_str()
    );
}

#[test]
fn the_shipped_example_sells_credits() {
    let facilitator = Facilitator::start("/x402");
    let envoy = Envoy::start_with(Options {
        bootstrap: "envoy/payments/envoy.yaml".into(),
        file_ports: (10500, 10501, 9961),
        replace: vec![(
            "port_value: 10402".to_string(),
            format!("port_value: {}", facilitator.port),
        )],
        env: vec![(SECRET_ENV.into(), CHALLENGE_SECRET.into())],
        concurrency: 2,
        ..Options::default()
    });
    let refused = spend(&envoy, "acme-key");
    let accepts = offers(&refused)["accepts"].clone();
    assert_eq!(accepts.as_array().unwrap().len(), 2);
    let paid = pay(
        &envoy,
        "acme-key",
        &payment_signature(&accepts[1], PAYER, &x402_nonce(71)),
    );
    assert_eq!(paid.status, 200, "{}", paid.body);
    let credits = || {
        envoy
            .get("/tollgate/usage", &[("x-api-key", "acme-key")])
            .json()["credits"]
            .clone()
    };
    assert_eq!(credits(), 999);
    // The priced route costs 5, also for the request that carries the payment.
    let payment = payment_signature(&accepts[0], PAYER, &x402_nonce(72));
    let forecast = envoy.get(
        "/forecast",
        &[("x-api-key", "acme-key"), ("payment-signature", &payment)],
    );
    assert_eq!(forecast.status, 200, "{}", forecast.body);
    assert!(forecast.body.contains("forecast"));
    assert_eq!(credits(), 999 + 100 - 5);
    // Its 402 made HTTP Payment challenges too, with the secret from Envoy's environment.
    let made = challenges(&refused);
    assert_eq!(made.len(), 2, "{:?}", refused.headers);
    assert_eq!(made[0]["id"], challenge_id(CHALLENGE_SECRET, &made[0]));
    let paid = envoy.get(
        "/",
        &[
            ("x-api-key", "acme-key"),
            ("authorization", &pay_challenge(&made[0], PAYER)),
        ],
    );
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert!(paid.header("payment-receipt").is_some());
    assert_eq!(credits(), 999 + 100 - 5 + 100 - 1);
    assert_eq!(facilitator.settles(), 3);
}

#[test]
fn a_client_gone_during_settlement_has_its_payment_credited_all_the_same() {
    use std::io::Write;
    // The reference facilitators' behaviour: a settled nonce is never settled again.
    let facilitator = Facilitator::start("/x402");
    let envoy = start(&facilitator, "5s");
    let accepted = offers(&spend(&envoy, "acme-key"))["accepts"][0].clone();
    // The settlement answers after the client has gone (3 s: well after, on a loaded machine).
    facilitator.script_settle(&[Outcome::Slow(Duration::from_secs(3))]);
    let nonce = x402_nonce(81);
    let payment = payment_signature(&accepted, PAYER, &nonce);
    let mut client = std::net::TcpStream::connect(("127.0.0.1", envoy.port)).unwrap();
    write!(
        client,
        "GET / HTTP/1.1\r\nhost: t\r\nx-api-key: acme-key\r\npayment-signature: {payment}\r\n\r\n"
    )
    .unwrap();
    poll(DEADLINE, "the settle call", || {
        (facilitator.settles() == 1).then_some(())
    });
    drop(client);
    // The settlement is the root context's: its answer is not lost with the request, and the
    // payment is credited. The same payment presented again is told to wait while the
    // settlement is under way, then is a replay: served from the credits, never settled again.
    let served = poll(DEADLINE, "the payment to be credited", || {
        let r = pay(&envoy, "acme-key", &payment);
        match r.status {
            200 => Some(r),
            503 => None,
            other => panic!("{other}: {}", r.body),
        }
    });
    assert!(
        served.header("payment-response").is_none(),
        "a replay, not a settlement"
    );
    assert_eq!(facilitator.settles(), 1);
    assert_eq!(facilitator.verifies(), 1);
    // 5 credits: the replay took one.
    assert_eq!(served_until_refused(&envoy, "acme-key"), 4);
    assert_eq!(envoy.counter("tollgate.payments.settled"), 1);
}

#[test]
fn a_pay_as_you_go_consumer_pays_before_its_first_request() {
    let facilitator = Facilitator::start("/x402");
    let envoy = start(&facilitator, "5s");
    let refused = envoy.get_with_key("wayne-key");
    assert_eq!(refused.status, 402, "{}", refused.body);
    assert!(refused.json()["detail"]
        .as_str()
        .unwrap()
        .contains("paid from prepaid credits"));
    let accepted = offers(&refused)["accepts"][0].clone();
    let paid = pay(
        &envoy,
        "wayne-key",
        &payment_signature(&accepted, PAYER, &x402_nonce(91)),
    );
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert_eq!(served_until_refused(&envoy, "wayne-key"), 4);
}

/// An LLM gateway (`envoy/llm/envoy.yaml`) whose token quota credits stand in for: the fake
/// LLM reports 10 input and 20 output tokens for every completion.
fn llm_gateway(facilitator: &Facilitator, fake: &FakeLlm) -> Envoy {
    let config = serde_json::json!({
        "plans": {"tokens": {
            "limits": [{"name": "daily-tokens", "tokens": 100, "window": "day"}],
            "credits": ["daily-tokens"]
        }},
        "consumers": {"acme": {"plan": "tokens", "keys": ["acme-key"]}},
        "routes": {"chat": {"llm": "openai-chat"}},
        "llm": {"models": {"gpt-4o-mini": {"max_output_tokens": 100}}},
        "usage_path": "/tollgate/usage",
        "payments": {
            "facilitator": {"cluster": "facilitator", "url": "http://facilitator.test/x402"},
            "resource": {"url": "https://api.example.com/v1"},
            "packs": [{"name": "1k-tokens", "credits": 1000, "network": "eip155:84532",
                       "asset": ASSET, "amount": "10000", "pay_to": PAY_TO,
                       "max_timeout_seconds": 3600, "extra": {"name": "USDC", "version": "2"}}]
        }
    });
    Envoy::start_with(Options {
        bootstrap: "envoy/llm/envoy.yaml".into(),
        file_ports: (10400, 10401, 9951),
        plugin: Some(plugin(&config.to_string())),
        replace: vec![(
            "port_value: 10401".to_string(),
            format!("port_value: {}", fake.port),
        )],
        clusters: vec![("facilitator".into(), facilitator.port)],
        concurrency: 2,
        ..Options::default()
    })
}

#[test]
fn credits_in_tokens_pay_for_llm_requests_and_get_the_unused_reservation_back() {
    let facilitator = Facilitator::start("/x402");
    let fake = FakeLlm::start();
    let envoy = llm_gateway(&facilitator, &fake);
    let body = serde_json::json!({
        "model": "gpt-4o-mini", "max_completion_tokens": 20,
        "messages": [{"role": "user", "content": "Hi"}]
    })
    .to_string();
    let chat = || {
        post(
            envoy.port,
            "/v1/chat/completions",
            &["x-api-key: acme-key", "content-type: application/json"],
            body.as_bytes(),
            false,
        )
        .response
    };
    let usage = || {
        envoy
            .get("/tollgate/usage", &[("x-api-key", "acme-key")])
            .json()
    };
    // 100 tokens a day; each completion reserves its body's estimate and its cap, then is
    // settled to the 30 the fake reports. Until the quota is spent:
    let mut served = 0;
    let refused = loop {
        let r = chat();
        if r.status != 200 {
            break r;
        }
        served += 1;
        assert!(served < 10);
    };
    assert_eq!(refused.status, 402, "{}", refused.body);
    let used_before = usage()["limits"][0]["used"].as_u64().unwrap();
    assert_eq!(used_before, 30 * served);
    assert_eq!(usage()["credits"], 0);
    // The offers are for tokens; paid on any other route.
    let accepted = offers(&refused)["accepts"][0].clone();
    let paid = envoy.get(
        "/v1/models",
        &[
            ("x-api-key", "acme-key"),
            (
                "payment-signature",
                &payment_signature(&accepted, PAYER, &x402_nonce(101)),
            ),
        ],
    );
    // (Served: the fake provider has no model list, and says so.)
    assert!(paid.header("payment-response").is_some(), "{}", paid.body);
    assert_eq!(usage()["credits"], 1000);
    // Now completions are paid from the balance: 30 each once settled, the limit untouched.
    for n in 1..=3u64 {
        assert_eq!(chat().status, 200);
        poll(DEADLINE, "the completion to be settled", || {
            (usage()["credits"] == 1000 - 30 * n).then_some(())
        });
    }
    assert_eq!(usage()["limits"][0]["used"].as_u64().unwrap(), used_before);
    assert_eq!(facilitator.settles(), 1);
}

#[test]
fn a_pack_the_facilitator_cannot_settle_is_warned_about_when_configured() {
    let facilitator = Facilitator::start("/x402");
    let envoy = start(&facilitator, "5s");
    poll(DEADLINE, "the facilitator's kinds checked", || {
        envoy
            .tollgate_log()
            .iter()
            .any(|l| l.contains("payments: the facilitator supports every pack"))
            .then_some(())
    });
    assert!(facilitator
        .calls()
        .iter()
        .any(|c| c.path == "/x402/supported"));
    // Base mainnet, which the fake does not settle on.
    let mainnet = plugin_json("5s").replacen(
        r#""network": "eip155:84532", "v1_network": "base-sepolia""#,
        r#""network": "eip155:8453", "v1_network": "base""#,
        1,
    );
    assert_ne!(mainnet, plugin_json("5s"));
    let envoy = Envoy::start_with(Options {
        plugin: Some(plugin(&mainnet)),
        concurrency: 2,
        clusters: vec![("facilitator".into(), facilitator.port)],
        ..Options::default()
    });
    poll(DEADLINE, "a warning about the mainnet pack", || {
        let log = envoy.tollgate_log();
        let v2 = log.iter().any(|l| {
            l.contains(
                "pack `five`: x402 v2 `exact` on `eip155:8453` is not supported by the facilitator",
            )
        });
        let v1 = log.iter().any(|l| {
            l.contains("pack `five`: x402 v1 `exact` on `base` is not supported by the facilitator")
        });
        (v2 && v1).then_some(())
    });
    assert!(!envoy
        .tollgate_log()
        .iter()
        .any(|l| l.contains("pack `twenty`") && l.contains("not supported")));
}

// The HTTP Payment scheme (`payments.http_payment`): the same packs offered as
// `WWW-Authenticate: Payment` challenges bound to the consumer, redeemed with an `evm` charge
// credential, settled by the same facilitator.

const REALM: &str = "api.example.com";
/// The challenge secret, in the Envoy process's environment (never in the configuration).
const CHALLENGE_SECRET: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const SECRET_ENV: &str = "TOLLGATE_PAYMENT_SECRET";

fn start_http_payment(facilitator: &Facilitator) -> Envoy {
    start_http_payment_with(facilitator, "", "")
}

/// [`start_http_payment`] with more members of `payments` and of the top level (`payments` and
/// `top` each start with a comma).
fn start_http_payment_with(facilitator: &Facilitator, payments: &str, top: &str) -> Envoy {
    let json = plugin_json_with("5s", top).replacen(
        r#""payments": {"#,
        &format!(
            r#""payments": {{ "http_payment": {{ "realm": "{REALM}", "secret_env": "{SECRET_ENV}" }}{payments},"#
        ),
        1,
    );
    const RUNTIME: &str = "runtime: envoy.wasm.runtime.v8";
    Envoy::start_with(Options {
        plugin: Some(plugin(&json)),
        concurrency: 2,
        clusters: vec![("facilitator".into(), facilitator.port)],
        replace: vec![(
            RUNTIME.into(),
            format!(
                "{RUNTIME}\n                  environment_variables:\n                    \
                 host_env_keys: [{SECRET_ENV}]"
            ),
        )],
        env: vec![(SECRET_ENV.into(), CHALLENGE_SECRET.into())],
        ..Options::default()
    })
}

/// The Payment challenges of a reply, parsed.
fn challenges(reply: &Response) -> Vec<Challenge> {
    reply
        .headers
        .iter()
        .filter(|(name, _)| name == "www-authenticate")
        .map(|(_, value)| parse_challenge(value))
        .collect()
}

#[test]
fn a_spent_consumer_pays_a_payment_challenge_and_is_served_its_credits() {
    let facilitator = Facilitator::start("/x402");
    let envoy = start_http_payment(&facilitator);
    let refused = spend(&envoy, "acme-key");
    // One challenge per pack beside the x402 offers, each bound to its parameters by the
    // secret's HMAC and to acme by `opaque`.
    assert!(refused.header("payment-required").is_some());
    let made = challenges(&refused);
    assert_eq!(made.len(), 2, "{:?}", refused.headers);
    for (c, (amount, credits)) in made.iter().zip([("10000", 5), ("35000", 20)]) {
        assert_eq!(c["id"], challenge_id(CHALLENGE_SECRET, c), "{c:?}");
        assert_eq!(
            (
                c["realm"].as_str(),
                c["method"].as_str(),
                c["intent"].as_str()
            ),
            (REALM, "evm", "charge")
        );
        let request = decode_base64url(&c["request"]);
        assert_eq!(request["amount"], amount);
        assert_eq!(request["recipient"], PAY_TO);
        assert_eq!(request["currency"], ASSET);
        assert_eq!(request["methodDetails"]["chainId"], 84532);
        assert_eq!(
            request["methodDetails"]["credentialTypes"][0],
            "authorization"
        );
        assert!(
            c["description"].ends_with(&format!("{credits} credits")),
            "{c:?}"
        );
        assert_eq!(decode_base64url(&c["opaque"])["consumer"], "acme");
        let expires = c["expires"].as_str();
        assert!(expires.ends_with('Z') && expires > "2026", "{expires}");
    }
    // The secret never shows in Envoy's configuration.
    assert!(!envoy.config_dump().contains(CHALLENGE_SECRET));

    // Paying the first challenge (`Authorization: Payment`) serves this request from its pack.
    let paid = envoy.get(
        "/",
        &[
            ("x-api-key", "acme-key"),
            ("authorization", &pay_challenge(&made[0], PAYER)),
        ],
    );
    assert_eq!(paid.status, 200, "{}", paid.body);
    let nonce = challenge_nonce(&made[0]["id"], REALM);
    let receipt = decode_base64url(paid.header("payment-receipt").expect("Payment-Receipt"));
    assert_eq!(receipt["status"], "success");
    assert_eq!(receipt["method"], "evm");
    assert_eq!(receipt["challengeId"], made[0]["id"].as_str());
    assert_eq!(receipt["chainId"], 84532);
    assert_eq!(
        receipt["reference"],
        Facilitator::transaction_for(&nonce).as_str()
    );
    assert!(paid.header("payment-response").is_none());
    let seen = paid.json()["headers"].to_string();
    assert!(
        !seen.contains("Payment "),
        "the upstream saw the credential: {seen}"
    );
    // The facilitator settled it as the x402 payment of the pack, with the bound nonce.
    let calls = payment_calls(&facilitator);
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/x402/verify", "/x402/settle"]);
    for call in &calls {
        assert_eq!(call.body["x402Version"], 2);
        assert_eq!(call.body["paymentRequirements"]["amount"], "10000");
        let payment = &call.body["paymentPayload"];
        assert_eq!(payment["accepted"]["payTo"], PAY_TO);
        assert_eq!(payment["payload"]["authorization"]["nonce"], nonce.as_str());
        assert_eq!(payment["payload"]["authorization"]["from"], PAYER);
    }
    assert_eq!(served_until_refused(&envoy, "acme-key"), 4);

    // The usage endpoint challenges too (a client may buy before it runs out); and
    // `Payment-Authorization` carries a credential when `Authorization` holds something else.
    let usage = envoy.get("/tollgate/usage", &[("x-api-key", "acme-key")]);
    let again = challenges(&usage);
    assert_eq!(again.len(), 2, "{:?}", usage.headers);
    assert_eq!(decode_base64url(&again[1]["opaque"])["consumer"], "acme");
    let paid = envoy.get(
        "/",
        &[
            ("x-api-key", "acme-key"),
            ("authorization", "Bearer unrelated"),
            ("payment-authorization", &pay_challenge(&again[1], PAYER)),
        ],
    );
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert!(paid.header("payment-receipt").is_some());
    let seen = paid.json()["headers"].to_string();
    assert!(seen.contains("Bearer unrelated"), "{seen}");
    assert!(!seen.contains("payment-authorization"), "{seen}");
    let usage = envoy.get("/tollgate/usage", &[("x-api-key", "acme-key")]);
    assert_eq!(usage.json()["credits"], 19);
    assert_eq!(facilitator.settles(), 2);
    assert_eq!(envoy.counter("tollgate.payments.credits"), 25);
}

#[test]
fn a_payment_challenge_is_redeemed_only_by_its_consumer_and_only_as_made() {
    let facilitator = Facilitator::start("/x402");
    let envoy = start_http_payment(&facilitator);
    let acme = challenges(&spend(&envoy, "acme-key"));
    let globex = challenges(&spend(&envoy, "globex-key"));
    let present = |key: &str, credential: &str| {
        envoy.get("/", &[("x-api-key", key), ("authorization", credential)])
    };
    let problem = |r: &Response| {
        assert_eq!(r.status, 402, "{}", r.body);
        // Every refusal comes with fresh challenges, for the consumer who presented it.
        let fresh = challenges(r);
        assert_eq!(fresh.len(), 2, "{:?}", r.headers);
        assert_eq!(decode_base64url(&fresh[0]["opaque"])["consumer"], "acme");
        r.json()["type"].as_str().unwrap().to_string()
    };
    let types = "https://paymentauth.org/problems/";
    // Globex's challenge, paid by acme: not acme's to redeem.
    let r = present("acme-key", &pay_challenge(&globex[0], PAYER));
    assert_eq!(problem(&r), format!("{types}invalid-challenge"));
    assert!(r.body.contains("another consumer"), "{}", r.body);
    // A parameter changed (a cheaper request, a later expiry): its id no longer matches.
    let mut cheaper = acme[1].clone();
    cheaper.insert("request".into(), acme[0]["request"].clone());
    let r = present("acme-key", &pay_challenge(&cheaper, PAYER));
    assert_eq!(problem(&r), format!("{types}invalid-challenge"));
    let mut later = acme[0].clone();
    later.insert("expires".into(), "2099-01-01T00:00:00Z".into());
    assert_eq!(
        problem(&present("acme-key", &pay_challenge(&later, PAYER))),
        format!("{types}invalid-challenge")
    );
    // A signed authorization not bound to the challenge (its nonce is not the challenge's).
    let unbound = payment_credential(&credential_json(&acme[0], PAYER, &x402_nonce(9)));
    let r = present("acme-key", &unbound);
    assert_eq!(problem(&r), format!("{types}verification-failed"));
    // An amount other than the challenge's.
    let mut short = credential_json(&acme[0], PAYER, &challenge_nonce(&acme[0]["id"], REALM));
    short["payload"]["value"] = "1".into();
    let r = present("acme-key", &payment_credential(&short));
    assert_eq!(problem(&r), format!("{types}verification-failed"));
    // Not a credential at all.
    let r = present("acme-key", "Payment !!!");
    assert_eq!(problem(&r), format!("{types}malformed-credential"));
    // An expired challenge of ours (made here with the secret): refused for its time.
    let mut expired = acme[0].clone();
    expired.insert("expires".into(), "2026-01-01T00:00:00Z".into());
    let id = challenge_id(CHALLENGE_SECRET, &expired);
    expired.insert("id".into(), id);
    assert_eq!(
        problem(&present("acme-key", &pay_challenge(&expired, PAYER))),
        format!("{types}payment-expired")
    );
    // None of these reached the facilitator.
    assert!(payment_calls(&facilitator).is_empty());

    // Acme's own challenge is redeemed once; the same credential again credits nothing.
    let credential = pay_challenge(&acme[0], PAYER);
    assert_eq!(present("acme-key", &credential).status, 200);
    assert_eq!(facilitator.settles(), 1);
    assert_eq!(served_until_refused(&envoy, "acme-key"), 4);
    let replay = present("acme-key", &credential);
    assert_eq!(replay.status, 402, "{}", replay.body);
    assert!(replay.header("payment-receipt").is_none());
    assert_eq!(facilitator.settles(), 1);
}

#[test]
fn an_api_key_in_authorization_pays_in_payment_authorization_and_neither_goes_upstream() {
    let facilitator = Facilitator::start("/x402");
    let envoy = start_http_payment_with(
        &facilitator,
        "",
        r#", "credentials": [{"authorization": "Bearer"}], "hide_credentials": true"#,
    );
    let get = |extra: &[(&str, &str)]| {
        let mut headers = vec![("authorization", "Bearer acme-key")];
        headers.extend_from_slice(extra);
        envoy.get("/", &headers)
    };
    for _ in 0..2 {
        assert_eq!(get(&[]).status, 200);
    }
    let refused = get(&[]);
    assert_eq!(refused.status, 402, "{}", refused.body);
    let made = challenges(&refused);
    assert_eq!(decode_base64url(&made[0]["opaque"])["consumer"], "acme");
    let paid = get(&[("payment-authorization", &pay_challenge(&made[0], PAYER))]);
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert!(paid.header("payment-receipt").is_some());
    assert_eq!(paid.header("cache-control"), Some("private"));
    let seen = paid.json()["headers"].to_string().to_ascii_lowercase();
    assert!(
        !seen.contains("authorization"),
        "the upstream saw a credential: {seen}"
    );
    assert_eq!(facilitator.settles(), 1);
    // The key's own header cannot carry a credential too: `Authorization: Payment` is no key.
    let keyless = envoy.get("/", &[("authorization", &pay_challenge(&made[1], PAYER))]);
    assert_eq!(keyless.status, 401, "{}", keyless.body);
    assert_eq!(facilitator.settles(), 1);
}

#[test]
fn with_x402_off_only_payment_challenges_are_offered_and_an_authorization_stays_bound() {
    let facilitator = Facilitator::start("/x402");
    let envoy = start_http_payment_with(&facilitator, r#", "x402": false"#, "");
    let refused = spend(&envoy, "acme-key");
    assert!(
        refused.header("payment-required").is_none(),
        "{:?}",
        refused.headers
    );
    assert!(refused.json().get("accepts").is_none(), "{}", refused.body);
    let made = challenges(&refused);
    assert_eq!(made.len(), 2);
    // Acme's signed authorization, lifted from its credential and presented by globex as an
    // x402 payment: not read (x402 is not a way to pay here), never sent upstream.
    spend(&envoy, "globex-key");
    let nonce = challenge_nonce(&made[0]["id"], REALM);
    let offer = serde_json::json!({
        "scheme": "exact", "network": "eip155:84532", "amount": "10000", "asset": ASSET,
        "payTo": PAY_TO, "maxTimeoutSeconds": 3600, "extra": {"name": "USDC", "version": "2"}
    });
    let lifted = envoy.get(
        "/",
        &[
            ("x-api-key", "globex-key"),
            (
                "payment-signature",
                &payment_signature(&offer, PAYER, &nonce),
            ),
        ],
    );
    assert_eq!(lifted.status, 402, "{}", lifted.body);
    assert_eq!(
        lifted.json()["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );
    assert!(payment_calls(&facilitator).is_empty());
    // Acme's credential is acme's.
    let paid = envoy.get(
        "/",
        &[
            ("x-api-key", "acme-key"),
            ("authorization", &pay_challenge(&made[0], PAYER)),
        ],
    );
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert_eq!(facilitator.settles(), 1);
    // An x402 payment header on a served request is removed all the same.
    let served = envoy.get(
        "/",
        &[
            ("x-api-key", "acme-key"),
            (
                "payment-signature",
                &payment_signature(&offer, PAYER, &x402_nonce(3)),
            ),
        ],
    );
    assert_eq!(served.status, 200, "{}", served.body);
    assert!(
        !served.body.contains("payment-signature"),
        "{}",
        served.body
    );
}
