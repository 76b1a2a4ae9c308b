//! Unit tests of [`crate::payments`]: matching a payment to a pack, the claim's states, the
//! facilitator's answers, and credits drawn and added exactly.

use super::*;
use crate::config::Config;
use crate::counters::create_counters;
use crate::quota::{balance, check_and_take, check_and_take_with};
use crate::record::Record;
use crate::store::MemoryStore;
use crate::x402::{Authorization, ExactPayload, Requirements};

const ASSET: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const PAYER: &str = "0x857b06519E91e3A54538791bDbb0E22373e36b66";
const NOW: i64 = 1_800_000_000;

fn config() -> Config {
    let json = format!(
        r#"{{
      "plans": {{
        "metered": {{ "limits": [
            {{"name": "daily", "requests": 2, "window": "day"}},
            {{"name": "burst", "requests": 5, "window": "1s"}}
          ], "credits": ["daily"] }},
        "free": {{ "limits": [{{"name": "daily", "requests": 2, "window": "day"}}] }}
      }},
      "consumers": {{
        "acme": {{ "plan": "metered", "keys": ["acme-key"] }},
        "globex": {{ "plan": "metered", "keys": ["globex-key"] }}
      }},
      "payments": {{
        "facilitator": {{ "cluster": "facilitator", "url": "http://facilitator/x402" }},
        "resource": {{ "url": "https://api.example.com/", "description": "API credits" }},
        "packs": [
          {{ "name": "small", "credits": 10, "network": "eip155:84532", "v1_network": "base-sepolia",
             "asset": "{ASSET}", "amount": "10000", "pay_to": "{PAY_TO}", "extra": {{"name": "USDC", "version": "2"}} }},
          {{ "name": "large", "credits": 100, "network": "eip155:84532",
             "asset": "{ASSET}", "amount": "90000", "pay_to": "{PAY_TO}", "max_timeout_seconds": 300,
             "extra": {{"name": "USDC", "version": "2"}} }}
        ]
      }}
    }}"#
    );
    Config::from_json(json.as_bytes()).unwrap()
}

fn payments(config: &Config) -> &Payments {
    config.payments.as_ref().unwrap()
}

fn authorization(value: &str, nonce_digit: char) -> Authorization {
    Authorization {
        from: PAYER.into(),
        to: PAY_TO.into(),
        value: value.into(),
        valid_after: "0".into(),
        valid_before: (NOW + 60).to_string(),
        nonce: format!("0x{}", nonce_digit.to_string().repeat(64)),
    }
}

fn v2(accepted: Requirements, authorization: Authorization) -> String {
    x402::encode(&x402::PaymentPayload {
        x402_version: 2,
        resource: None,
        accepted,
        payload: ExactPayload {
            signature: format!("0x{}", "ab".repeat(65)),
            authorization,
        },
    })
}

fn small(config: &Config) -> Requirements {
    payments(config).packs[0].offer.clone()
}

#[test]
fn a_v2_payment_is_matched_to_the_pack_it_accepts() {
    let config = config();
    let value = v2(small(&config), authorization("10000", '1'));
    let presented = read(payments(&config), PAYMENT_SIGNATURE, value.as_bytes(), NOW).unwrap();
    assert_eq!((presented.version, presented.pack), (2, 0));
    assert_eq!(presented.valid_before, NOW + 60);
    // The facilitator is sent the configured requirements, and the payment as it came.
    let body: serde_json::Value = serde_json::from_slice(&presented.call_body).unwrap();
    assert_eq!(body["x402Version"], 2);
    assert_eq!(body["paymentRequirements"]["amount"], "10000");
    assert_eq!(body["paymentRequirements"]["payTo"], PAY_TO);
    assert_eq!(
        body["paymentPayload"]["payload"]["authorization"]["nonce"],
        format!("0x{}", "1".repeat(64))
    );
    let large = payments(&config).packs[1].offer.clone();
    let value = v2(large, authorization("90000", '2'));
    let presented = read(payments(&config), PAYMENT_SIGNATURE, value.as_bytes(), NOW).unwrap();
    assert_eq!(presented.pack, 1);
}

#[test]
fn a_tampered_payment_is_refused_before_any_call() {
    let config = config();
    let p = payments(&config);
    let mismatch = |value: String| match read(p, PAYMENT_SIGNATURE, value.as_bytes(), NOW) {
        Err(Refused::Mismatch(why)) => why,
        other => panic!("expected a mismatch, got {other:?}"),
    };
    // An amount no pack asks for.
    let mut cheap = small(&config);
    cheap.amount = "1".into();
    mismatch(v2(cheap, authorization("1", '1')));
    // The offer echoed right, but the signed transfer pays less, or someone else.
    assert!(mismatch(v2(small(&config), authorization("9999", '1'))).contains("amount"));
    let mut elsewhere = authorization("10000", '1');
    elsewhere.to = format!("0x{}", "9".repeat(40));
    assert!(mismatch(v2(small(&config), elsewhere)).contains("payee"));
    // Another payee in the offer.
    let mut other = small(&config);
    other.pay_to = format!("0x{}", "9".repeat(40));
    mismatch(v2(other, authorization("10000", '1')));
    // Expired, not yet valid, valid for too long: read, and said why it cannot be settled
    // now (the verdict refuses a fresh one for it; see `crate::verdict`'s tests).
    let untimely = |a: Authorization| {
        read(p, PAYMENT_SIGNATURE, v2(small(&config), a).as_bytes(), NOW)
            .unwrap()
            .untimely
            .unwrap_or_default()
    };
    let mut expired = authorization("10000", '1');
    expired.valid_before = (NOW + 2).to_string();
    assert!(untimely(expired).contains("expired"));
    let mut later = authorization("10000", '1');
    later.valid_after = (NOW + 10).to_string();
    assert!(untimely(later).contains("not valid yet"));
    let mut long = authorization("10000", '1');
    long.valid_before = (NOW + 3600).to_string();
    assert!(untimely(long).contains("maxTimeoutSeconds"));
    assert_eq!(untimely(authorization("10000", '1')), "");
}

#[test]
fn a_malformed_payment_is_named_without_its_value() {
    let config = config();
    let p = payments(&config);
    for value in ["not base64!", "e30=", "eyJ4NDAyVmVyc2lvbiI6Mn0="] {
        match read(p, PAYMENT_SIGNATURE, value.as_bytes(), NOW) {
            Err(Refused::Malformed(why)) => assert!(why.starts_with("payment-signature")),
            other => panic!("{value}: {other:?}"),
        }
    }
    let mut bad_nonce = authorization("10000", '1');
    bad_nonce.nonce = "0x12".into();
    match read(
        p,
        PAYMENT_SIGNATURE,
        v2(small(&config), bad_nonce).as_bytes(),
        NOW,
    ) {
        Err(Refused::Malformed(why)) => assert!(why.contains("nonce"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_v1_payment_is_matched_by_network_payee_and_amount() {
    let config = config();
    let p = payments(&config);
    let payment = |network: &str, value: &str| {
        x402::encode(&x402::PaymentPayloadV1 {
            x402_version: 1,
            scheme: "exact".into(),
            network: network.into(),
            payload: ExactPayload {
                signature: format!("0x{}", "ab".repeat(65)),
                authorization: authorization(value, '3'),
            },
        })
    };
    let presented = read(
        p,
        X_PAYMENT,
        payment("base-sepolia", "10000").as_bytes(),
        NOW,
    )
    .unwrap();
    assert_eq!((presented.version, presented.pack), (1, 0));
    assert_eq!(presented.network, "eip155:84532");
    let body: serde_json::Value = serde_json::from_slice(&presented.call_body).unwrap();
    assert_eq!(body["paymentRequirements"]["maxAmountRequired"], "10000");
    assert_eq!(body["paymentRequirements"]["network"], "base-sepolia");
    // The large pack has no v1 network; another network is no offer.
    assert!(read(
        p,
        X_PAYMENT,
        payment("base-sepolia", "90000").as_bytes(),
        NOW
    )
    .is_err());
    assert!(read(p, X_PAYMENT, payment("base", "10000").as_bytes(), NOW).is_err());
}

#[test]
fn one_payment_is_one_claim_whoever_presents_it() {
    let config = config();
    let store = MemoryStore::new();
    create_counters(&config, &store).unwrap();
    let value = v2(small(&config), authorization("10000", '4'));
    let presented = read(payments(&config), PAYMENT_SIGNATURE, value.as_bytes(), NOW).unwrap();
    let stale = stale_ms(payments(&config));
    let at = NOW * 1000;
    let claim_at =
        |consumer: &str, ms: i64| claim(&store, &presented, consumer, ms, stale).unwrap();
    assert_eq!(claim_at("acme", at), Claimed::Fresh);
    // Concurrent copies: busy while it is verified, whoever sends them.
    assert_eq!(claim_at("acme", at + 10), Claimed::Busy);
    assert_eq!(claim_at("globex", at + 10), Claimed::Taken);
    // A verification nobody finished is taken over once stale.
    assert_eq!(claim_at("acme", at + stale + 1), Claimed::Fresh);
    mark(
        &store,
        &presented.replay,
        Some(State::Settling),
        at + stale + 2,
    )
    .unwrap();
    assert_eq!(claim_at("acme", at + stale + 3), Claimed::Busy);
    // A settlement whose outcome is unknown is settled again (never verified again), once.
    mark(
        &store,
        &presented.replay,
        Some(State::Unknown),
        at + stale + 4,
    )
    .unwrap();
    assert_eq!(claim_at("acme", at + stale + 5), Claimed::Retry);
    assert_eq!(claim_at("acme", at + stale + 6), Claimed::Busy);
    mark(
        &store,
        &presented.replay,
        Some(State::Settled),
        at + stale + 7,
    )
    .unwrap();
    assert_eq!(claim_at("acme", at + stale + 8), Claimed::Settled);
    assert_eq!(state_of(&store, &presented.replay), Some(State::Settled));
    // Another payment: failed is final; a released one may come again.
    let other = v2(small(&config), authorization("10000", '5'));
    let other = read(payments(&config), PAYMENT_SIGNATURE, other.as_bytes(), NOW).unwrap();
    let claim_other = |ms: i64| claim(&store, &other, "acme", ms, stale).unwrap();
    assert_eq!(claim_other(at), Claimed::Fresh);
    mark(&store, &other.replay, None, at).unwrap();
    assert_eq!(claim_other(at + 1), Claimed::Fresh);
    mark(&store, &other.replay, Some(State::Failed), at + 2).unwrap();
    assert_eq!(claim_other(at + 3), Claimed::Failed);
}

#[test]
fn claims_expire_with_their_authorization_and_a_shard_is_bounded() {
    let config = config();
    let store = MemoryStore::new();
    create_counters(&config, &store).unwrap();
    let stale = stale_ms(payments(&config));
    // Payments whose claims fall into one shard, until it is full.
    let mut in_shard = Vec::new();
    let mut n = 0u64;
    while in_shard.len() <= MAX_CLAIMS_PER_SHARD {
        n += 1;
        let mut a = authorization("10000", '0');
        a.nonce = format!("0x{n:064x}");
        let value = v2(small(&config), a);
        let p = read(payments(&config), PAYMENT_SIGNATURE, value.as_bytes(), NOW).unwrap();
        if shard_of(&p.replay) == payment_shard_key(0) {
            in_shard.push(p);
        }
    }
    let (last, first) = in_shard.split_last().unwrap();
    // Each by a consumer of its own (one consumer holds at most two open claims a shard).
    for (i, p) in first.iter().enumerate() {
        assert_eq!(
            claim(&store, p, &format!("c{i}"), NOW * 1000, stale).unwrap(),
            Claimed::Fresh
        );
    }
    assert_eq!(
        claim(&store, last, "acme", NOW * 1000, stale).unwrap(),
        Claimed::Full
    );
    // Once their authorizations expired (and the margin passed), the claims go.
    let later = (NOW + 60 + KEEP_SECONDS + 1) * 1000;
    assert_eq!(
        claim(&store, last, "acme", later, stale).unwrap(),
        Claimed::Fresh
    );
}

#[test]
fn what_the_facilitators_answers_mean() {
    assert_eq!(
        verified(Some(200), br#"{"isValid":true,"payer":"0x"}"#),
        Verified::Valid
    );
    assert_eq!(
        verified(
            Some(200),
            br#"{"isValid":false,"invalidReason":"insufficient_funds"}"#
        ),
        Verified::Invalid("insufficient_funds".into())
    );
    assert!(matches!(verified(Some(500), b""), Verified::Unavailable(_)));
    assert!(matches!(verified(None, b""), Verified::Unavailable(_)));
    assert!(matches!(
        verified(Some(200), b"<html>"),
        Verified::Unavailable(_)
    ));

    let ok = br#"{"success":true,"transaction":"0xabc","network":"eip155:84532","payer":"0x1"}"#;
    assert!(
        matches!(settled(Some(200), ok), Settled::Done { transaction, .. } if transaction == "0xabc")
    );
    let used =
        br#"{"success":false,"errorReason":"nonce_already_used","transaction":"","network":"n"}"#;
    assert_eq!(settled(Some(200), used), Settled::NonceUsed);
    let funds: &[u8] =
        br#"{"success":false,"errorReason":"insufficient_funds","transaction":"","network":"n"}"#;
    assert_eq!(
        settled(Some(200), funds),
        Settled::Refused("insufficient_funds".into())
    );
    // What x402's reference facilitators say (TypeScript, Go, Python).
    let reference = br#"{"success":false,"errorReason":"invalid_exact_evm_nonce_already_used","transaction":"","network":"n"}"#;
    assert_eq!(settled(Some(200), reference), Settled::NonceUsed);
    let refusal = |why: &str| {
        format!(r#"{{"success":false,"errorReason":"{why}","transaction":"","network":"n"}}"#)
    };
    // Refusals known to come before any transfer, with or without the scheme's prefix.
    for why in [
        "invalid_exact_evm_insufficient_balance",
        "invalid_exact_evm_signature",
        "insufficient_funds",
    ] {
        let body = refusal(why);
        assert!(
            matches!(settled(Some(200), body.as_bytes()), Settled::Refused(_)),
            "{why}"
        );
    }
    // After a broadcast (reverted, no receipt), or a reason nobody listed: unknown.
    for why in [
        "invalid_exact_evm_transaction_failed",
        "invalid_exact_evm_failed_to_execute_transfer",
        "something_new",
    ] {
        let body = refusal(why);
        assert!(
            matches!(settled(Some(200), body.as_bytes()), Settled::Unknown(_)),
            "{why}"
        );
    }
    // A refusal under a 4xx is read as a refusal (x402's facilitator client does so too).
    assert_eq!(
        settled(Some(400), funds),
        Settled::Refused("insufficient_funds".into())
    );
    assert_eq!(
        verified(
            Some(400),
            br#"{"isValid":false,"invalidReason":"invalid_exact_evm_signature"}"#
        ),
        Verified::Invalid("invalid_exact_evm_signature".into())
    );
    assert!(matches!(
        verified(Some(400), br#"{"isValid":true}"#),
        Verified::Unavailable(_)
    ));
    assert!(matches!(settled(Some(400), ok), Settled::Unknown(_)));
    let receipt = br#"{"success":false,"errorReason":"invalid_exact_evm_failed_to_get_receipt","transaction":"","network":"n"}"#;
    assert!(matches!(settled(Some(200), receipt), Settled::Unknown(_)));
    // Success without a transaction cannot be credited (the ledger is keyed by it).
    let empty = br#"{"success":true,"transaction":"","network":"n"}"#;
    assert!(matches!(settled(Some(200), empty), Settled::Unknown(_)));
    assert!(matches!(settled(Some(502), ok), Settled::Unknown(_)));
    assert!(matches!(settled(None, b""), Settled::Unknown(_)));
}

#[test]
fn a_settlement_is_credited_once_and_drawn_exactly() {
    let config = config();
    let store = MemoryStore::new();
    create_counters(&config, &store).unwrap();
    let acme = config.consumer_for_key(b"acme-key").unwrap();
    let plan = config.plan_of(acme).unwrap();
    let key = &*acme.store_key;
    let take =
        || check_and_take_with(&store, key, &plan.limits, &[], &plan.credits, NOW, 0).unwrap();
    assert!(take().admitted && take().admitted);
    let refused = take();
    assert!(!refused.admitted);
    assert_eq!(refused.balance, Some(0));

    let value = v2(small(&config), authorization("10000", '6'));
    let presented = read(payments(&config), PAYMENT_SIGNATURE, value.as_bytes(), NOW).unwrap();
    let stale = stale_ms(payments(&config));
    assert_eq!(
        claim(&store, &presented, "acme", NOW * 1000, stale).unwrap(),
        Claimed::Fresh
    );
    let first = credit_settled(&store, key, &presented, 3, "0xfeed", NOW * 1000).unwrap();
    assert!(first.added);
    // The same settlement again (a retry whose first answer was lost): nothing added.
    let again = credit_settled(&store, key, &presented, 3, "0xFEED", NOW * 1000).unwrap();
    assert_eq!((again.added, again.balance), (false, 3));
    assert_eq!(state_of(&store, &presented.replay), Some(State::Settled));

    for left in [2, 1, 0] {
        let c = take();
        assert!(c.admitted);
        assert_eq!((c.drawn, c.balance), (1, Some(left)));
        // Paid from credits: the daily count stays at its size, the burst counts it.
        assert_eq!(c.usages[0].used, 2);
    }
    assert_eq!(
        take().usages[1].used,
        5,
        "the burst counted every admitted request"
    );
    // The burst limit (not covered) still refuses, with credits or without.
    credit_settled(&store, key, &presented, 3, "0xbeef", NOW * 1000).unwrap();
    let c = take();
    assert!(!c.admitted && c.usages[1].violated);
    let bytes = store.value(key).unwrap();
    assert_eq!(balance(&Record::decode(&bytes).unwrap()), 3);
}

#[test]
fn a_balance_survives_every_other_write_of_the_record() {
    let config = config();
    let store = MemoryStore::new();
    create_counters(&config, &store).unwrap();
    let acme = config.consumer_for_key(b"acme-key").unwrap();
    let plan = config.plan_of(acme).unwrap();
    let key = &*acme.store_key;
    crate::quota::credit(&store, key, 7, "aaaa", NOW).unwrap();
    // A plain take (room in every limit), a take under another plan, a new day.
    assert!(
        check_and_take(&store, key, &plan.limits, &[], NOW, 0)
            .unwrap()
            .admitted
    );
    let free = &config
        .plans
        .iter()
        .find(|p| p.name == "free")
        .unwrap()
        .limits;
    assert!(
        check_and_take(&store, key, free, &[], NOW, 0)
            .unwrap()
            .admitted
    );
    assert!(
        check_and_take(&store, key, &plan.limits, &[], NOW + 86_400, 0)
            .unwrap()
            .admitted
    );
    let bytes = store.value(key).unwrap();
    assert_eq!(balance(&Record::decode(&bytes).unwrap()), 7);
}

#[test]
fn the_ledger_keeps_its_newest_entries() {
    let store = MemoryStore::new();
    store.set("k", crate::record::empty(), 0).unwrap();
    // A settlement an hour apart: past the first few, each is older than a ledger must keep.
    let at = |i: i64| NOW + i * 3 * 86_400 / 16;
    for i in 0..(crate::quota::MAX_LEDGER as i64 + 4) {
        let c = crate::quota::credit(&store, "k", 1, &format!("{i:04}"), at(i)).unwrap();
        assert!(c.added);
    }
    let bytes = store.value("k").unwrap();
    let record = Record::decode(&bytes).unwrap();
    assert_eq!(balance(&record), crate::quota::MAX_LEDGER as u64 + 4);
    let ledger = record
        .entries()
        .into_iter()
        .filter(|e| e.name.starts_with(b"$tx:"))
        .count();
    assert_eq!(ledger, crate::quota::MAX_LEDGER);
    // The newest is still known; the oldest was dropped.
    let newest = format!("{:04}", crate::quota::MAX_LEDGER + 3);
    assert!(
        !crate::quota::credit(&store, "k", 1, &newest, NOW)
            .unwrap()
            .added
    );
    assert!(
        crate::quota::credit(&store, "k", 1, "0000", NOW)
            .unwrap()
            .added
    );
}

/// Found by review: a claim whose settlement began lives a day, and an idempotent
/// facilitator answers its retry with the transaction; the ledger must still hold it then,
/// however many packs came since (here 40 within the day).
#[test]
fn the_ledger_keeps_every_settlement_a_retry_may_still_bring() {
    let store = MemoryStore::new();
    store.set("k", crate::record::empty(), 0).unwrap();
    let n = crate::quota::MAX_LEDGER as i64 + 8;
    for i in 0..n {
        let c = crate::quota::credit(&store, "k", 1, &format!("{i:04}"), NOW + i * 60).unwrap();
        assert!(c.added);
    }
    for i in 0..n {
        let again = crate::quota::credit(&store, "k", 1, &format!("{i:04}"), NOW + n * 60).unwrap();
        assert!(!again.added, "settlement {i} credited twice");
    }
    let bytes = store.value("k").unwrap();
    let record = Record::decode(&bytes).unwrap();
    assert_eq!(balance(&record), n as u64);
}

/// Found by review: a record rewritten for a plan that gained limits kept its limits only,
/// and lost the balance and the ledger.
#[test]
fn a_balance_survives_a_plan_that_gains_limits() {
    use crate::config::{Limit, Unit};
    use crate::window::Window;
    let store = MemoryStore::new();
    store.set("k", crate::record::empty(), 0).unwrap();
    let limit = |name: &str| Limit {
        name: name.into(),
        requests: 1_000,
        unit: Unit::Requests,
        window: Window::Fixed(86_400),
        window_text: String::new(),
        status: 402,
        per_envoy: false,
    };
    let before = [limit("daily")];
    assert!(
        check_and_take(&store, "k", &before, &[], NOW, 0)
            .unwrap()
            .admitted
    );
    crate::quota::credit(&store, "k", 1_000, "0123456789abcdef01234567", NOW).unwrap();
    let after = [limit("daily"), limit("aaaa"), limit("bbbb"), limit("cccc")];
    assert!(
        check_and_take(&store, "k", &after, &[], NOW, 0)
            .unwrap()
            .admitted
    );
    let bytes = store.value("k").unwrap();
    let record = Record::decode(&bytes).unwrap();
    assert_eq!(balance(&record), 1_000, "the balance was wiped");
    assert!(
        !crate::quota::credit(&store, "k", 1, "0123456789abcdef01234567", NOW)
            .unwrap()
            .added,
        "the ledger was wiped"
    );
}

/// Found by review: x402 v1 payments name no asset, so two packs alike but for their asset
/// could not be told apart.
#[test]
fn v1_packs_must_differ_by_more_than_their_asset() {
    let json = format!(
        r#"{{
      "plans": {{ "m": {{ "limits": [{{"name": "daily", "requests": 2, "window": "day"}}], "credits": ["daily"] }} }},
      "consumers": {{ "acme": {{ "plan": "m", "keys": ["k"] }} }},
      "payments": {{
        "facilitator": {{ "cluster": "f", "url": "http://f/x402" }},
        "resource": {{ "url": "https://api.example.com/" }},
        "packs": [
          {{ "name": "a", "credits": 10, "network": "eip155:84532", "v1_network": "base-sepolia",
             "asset": "{ASSET}", "amount": "10000", "pay_to": "{PAY_TO}", "extra": {{"name": "USDC", "version": "2"}} }},
          {{ "name": "b", "credits": 10, "network": "eip155:84532", "v1_network": "base-sepolia",
             "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "amount": "10000", "pay_to": "{PAY_TO}",
             "extra": {{"name": "USD Coin", "version": "2"}} }}
        ]
      }}
    }}"#
    );
    let e = Config::from_json(json.as_bytes()).unwrap_err().0;
    assert!(
        e.starts_with("payments.packs[1].v1_network: pack `a` has the same"),
        "{e}"
    );
    // Without a v1 network, the asset tells them apart (a v2 payment echoes it).
    let v2_only = json.replace(r#""v1_network": "base-sepolia","#, "");
    assert!(Config::from_json(v2_only.as_bytes()).is_ok());
}

#[test]
fn a_consumer_holds_a_bounded_number_of_open_claims_in_a_shard() {
    let config = config();
    let store = MemoryStore::new();
    create_counters(&config, &store).unwrap();
    let stale = stale_ms(payments(&config));
    // Payments of acme whose claims fall into shard 0.
    let mut in_shard = Vec::new();
    let mut n = 0u64;
    while in_shard.len() < 4 {
        n += 1;
        let mut a = authorization("10000", '0');
        a.nonce = format!("0x{n:064x}");
        let p = read(
            payments(&config),
            PAYMENT_SIGNATURE,
            v2(small(&config), a).as_bytes(),
            NOW,
        )
        .unwrap();
        if shard_of(&p.replay) == payment_shard_key(0) {
            in_shard.push(p);
        }
    }
    let at = NOW * 1000;
    assert_eq!(
        claim(&store, &in_shard[0], "acme", at, stale).unwrap(),
        Claimed::Fresh
    );
    assert_eq!(
        claim(&store, &in_shard[1], "acme", at, stale).unwrap(),
        Claimed::Fresh
    );
    assert_eq!(
        claim(&store, &in_shard[2], "acme", at, stale).unwrap(),
        Claimed::TooMany
    );
    // Another consumer is not held back by acme's.
    assert_eq!(
        claim(&store, &in_shard[2], "globex", at, stale).unwrap(),
        Claimed::Fresh
    );
    // A settled one no longer counts; nor do claims whose authorization expired.
    mark(&store, &in_shard[0].replay, Some(State::Settled), at).unwrap();
    assert_eq!(
        claim(&store, &in_shard[3], "acme", at, stale).unwrap(),
        Claimed::Fresh
    );
    let later = (NOW + 60 + KEEP_SECONDS + 1) * 1000;
    let mut fresh = authorization("10000", '0');
    fresh.valid_before = (NOW + 60 + KEEP_SECONDS + 61).to_string();
    let mut m = n;
    let next = loop {
        m += 1;
        fresh.nonce = format!("0x{m:064x}");
        let value = v2(small(&config), fresh.clone());
        let p = read(
            payments(&config),
            PAYMENT_SIGNATURE,
            value.as_bytes(),
            NOW + 60 + KEEP_SECONDS + 1,
        )
        .unwrap();
        if shard_of(&p.replay) == payment_shard_key(0) {
            break p;
        }
    };
    assert_eq!(
        claim(&store, &next, "acme", later, stale).unwrap(),
        Claimed::Fresh
    );
}

#[test]
fn a_pay_as_you_go_plan_pays_every_request_from_credits() {
    let json = format!(
        r#"{{
      "plans": {{ "payg": {{ "limits": [{{"name": "paid", "requests": 0, "window": "month"}},
                                       {{"name": "burst", "requests": 100, "window": "1s"}}],
                             "credits": ["paid"] }} }},
      "consumers": {{ "acme": {{ "plan": "payg", "keys": ["k"] }} }},
      "payments": {{
        "facilitator": {{ "cluster": "f", "url": "http://f/x402" }},
        "resource": {{ "url": "https://api.example.com/" }},
        "packs": [ {{ "name": "a", "credits": 3, "network": "eip155:84532", "asset": "{ASSET}",
                      "amount": "10000", "pay_to": "{PAY_TO}", "extra": {{"name": "USDC", "version": "2"}} }} ]
      }}
    }}"#
    );
    let config = Config::from_json(json.as_bytes()).unwrap();
    let store = MemoryStore::new();
    create_counters(&config, &store).unwrap();
    let acme = config.consumer_for_key(b"k").unwrap();
    let plan = config.plan_of(acme).unwrap();
    let key = &*acme.store_key;
    let take =
        || check_and_take_with(&store, key, &plan.limits, &[], &plan.credits, NOW, 0).unwrap();
    let first = take();
    assert!(!first.admitted, "no credits: the first request is refused");
    assert_eq!(first.balance, Some(0));
    crate::quota::credit(&store, key, 3, "aaaa", NOW).unwrap();
    for left in [2, 1, 0] {
        let c = take();
        assert!(c.admitted);
        assert_eq!((c.drawn, c.balance, c.usages[0].used), (1, Some(left), 0));
    }
    assert!(!take().admitted);
    // A 0 without `credits` is still refused.
    let e = Config::from_json(
        json.replace(r#""credits": ["paid"]"#, r#""credits": ["burst"]"#)
            .as_bytes(),
    )
    .unwrap_err()
    .0;
    assert!(
        e.contains("0 with the limit in `credits` is pay-as-you-go"),
        "{e}"
    );
}

fn in_shard_0(config: &Config, count: usize, before: i64) -> Vec<Presented> {
    let mut out = Vec::new();
    let mut n = 1_000u64;
    while out.len() < count {
        n += 1;
        let mut a = authorization("10000", '0');
        a.nonce = format!("0x{n:064x}");
        a.valid_before = before.to_string();
        let v = v2(small(config), a);
        let p = read(payments(config), PAYMENT_SIGNATURE, v.as_bytes(), NOW).unwrap();
        if shard_of(&p.replay) == payment_shard_key(0) {
            out.push(p);
        }
    }
    out
}

/// Found by the second review: with `timeout` at 60 s, /verify and /settle may take longer
/// than a short authorization's claim lived, and another write of the shard pruned it; the
/// settlement's outcome was then recorded nowhere.
#[test]
fn a_claim_being_settled_outlives_its_authorization() {
    let config = config();
    let store = MemoryStore::new();
    create_counters(&config, &store).unwrap();
    let stale = 2 * 60_000 + 5_000;
    let ps = in_shard_0(&config, 2, NOW + 10);
    let (mine, other) = (&ps[0], &ps[1]);
    assert_eq!(
        claim(&store, mine, "acme", NOW * 1000, stale).unwrap(),
        Claimed::Fresh
    );
    mark(
        &store,
        &mine.replay,
        Some(State::Settling),
        (NOW + 55) * 1000,
    )
    .unwrap();
    let _ = claim(&store, other, "globex", (NOW + 80) * 1000, stale).unwrap();
    mark(
        &store,
        &mine.replay,
        Some(State::Unknown),
        (NOW + 115) * 1000,
    )
    .unwrap();
    assert_eq!(state_of(&store, &mine.replay), Some(State::Unknown));
    // Kept a day from when its settlement began, whatever its authorization said.
    let day_later = (NOW + 55 + 86_400 - 1) * 1000;
    let _ = claim(&store, other, "globex", day_later, stale).unwrap();
    assert_eq!(state_of(&store, &mine.replay), Some(State::Unknown));
}

#[test]
fn marks_never_downgrade_a_settled_claim_and_never_mark_a_claim_that_is_gone() {
    let config = config();
    let store = MemoryStore::new();
    create_counters(&config, &store).unwrap();
    let p = &in_shard_0(&config, 1, NOW + 60)[0];
    let stale = stale_ms(payments(&config));
    assert_eq!(
        claim(&store, p, "acme", NOW * 1000, stale).unwrap(),
        Claimed::Fresh
    );
    mark(&store, &p.replay, Some(State::Settled), NOW * 1000).unwrap();
    // A late request (its call answered after the claim was settled by another) says unknown.
    mark(&store, &p.replay, Some(State::Unknown), NOW * 1000 + 1).unwrap();
    assert_eq!(state_of(&store, &p.replay), Some(State::Settled));
    mark(&store, &p.replay, None, NOW * 1000 + 2).unwrap();
    assert!(mark(&store, &p.replay, Some(State::Settling), NOW * 1000 + 3).is_err());
}

#[test]
fn an_untimely_payment_is_decided_by_its_claim() {
    let config = config();
    let store = MemoryStore::new();
    create_counters(&config, &store).unwrap();
    let stale = stale_ms(payments(&config));
    let ps = in_shard_0(&config, 3, NOW + 60);
    let expired_now = |p: &Presented| Presented {
        untimely: Some("the authorization has expired"),
        ..p.clone()
    };
    let at = NOW * 1000;
    // No claim: refused, nothing written.
    let before = store.value(&payment_shard_key(0));
    assert_eq!(
        claim(&store, &expired_now(&ps[0]), "acme", at, stale).unwrap(),
        Claimed::Untimely("the authorization has expired")
    );
    assert_eq!(store.value(&payment_shard_key(0)), before);
    // A verification nobody finished: dropped and refused once stale.
    assert_eq!(
        claim(&store, &ps[1], "acme", at, stale).unwrap(),
        Claimed::Fresh
    );
    assert_eq!(
        claim(&store, &expired_now(&ps[1]), "acme", at + stale + 1, stale).unwrap(),
        Claimed::Untimely("the authorization has expired")
    );
    assert_eq!(state_of(&store, &ps[1].replay), None);
    // Settling, unknown or settled: the claim decides, not the time.
    assert_eq!(
        claim(&store, &ps[2], "acme", at, stale).unwrap(),
        Claimed::Fresh
    );
    mark(&store, &ps[2].replay, Some(State::Settling), at).unwrap();
    assert_eq!(
        claim(&store, &expired_now(&ps[2]), "acme", at + 1, stale).unwrap(),
        Claimed::Busy
    );
    mark(&store, &ps[2].replay, Some(State::Unknown), at + 2).unwrap();
    assert_eq!(
        claim(&store, &expired_now(&ps[2]), "acme", at + 3, stale).unwrap(),
        Claimed::Retry
    );
}

#[test]
fn the_facilitators_supported_kinds_are_checked_against_every_offer() {
    let config = config();
    let p = payments(&config);
    let both = br#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:84532"},
                              {"x402Version":1,"scheme":"exact","network":"base-sepolia"}],
                    "extensions":[],"signers":{}}"#;
    assert_eq!(unsupported(p, Some(200), both), Ok(Vec::new()));
    let v2_only = br#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:84532"}]}"#;
    assert_eq!(
        unsupported(p, Some(200), v2_only),
        Ok(vec![
            "pack `small`: x402 v1 `exact` on `base-sepolia` is not supported by the facilitator"
                .to_string()
        ])
    );
    let other = br#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:8453"}]}"#;
    assert_eq!(unsupported(p, Some(200), other).unwrap().len(), 3);
    assert!(unsupported(p, Some(500), b"").is_err());
    assert!(unsupported(p, None, b"").is_err());
    assert!(unsupported(p, Some(200), b"[]").is_err());
}

/// [`config`] with the packs offered as HTTP Payment challenges too.
fn config_with_challenges() -> Config {
    let text = format!(
        r#"{{
      "plans": {{ "metered": {{ "limits": [{{"name": "daily", "requests": 2, "window": "day"}}], "credits": ["daily"] }} }},
      "consumers": {{ "acme": {{ "plan": "metered", "keys": ["acme-key"] }},
                      "globex": {{ "plan": "metered", "keys": ["globex-key"] }} }},
      "payments": {{
        "facilitator": {{ "cluster": "facilitator", "url": "http://facilitator/x402" }},
        "resource": {{ "url": "https://api.example.com/" }},
        "packs": [ {{ "name": "small", "credits": 10, "network": "eip155:84532", "asset": "{ASSET}",
                      "amount": "10000", "pay_to": "{PAY_TO}", "extra": {{"name": "USDC", "version": "2"}} }} ],
        "http_payment": {{ "realm": "api.example.com", "secret_env": "SECRET" }}
      }}
    }}"#
    );
    let env = |_: &str| Some("k".repeat(32));
    Config::from_json_in(text.as_bytes(), &env).unwrap()
}

#[test]
fn an_http_payment_credential_must_answer_a_challenge_made_for_its_consumer() {
    use crate::response::{
        payment_challenges, CHALLENGE_INVALID, CREDENTIAL_MALFORMED, VERIFICATION_FAILED,
    };
    use tollgate_testkit::{challenge_nonce, credential_json, parse_challenge, payment_credential};
    let config = config_with_challenges();
    let payments = payments(&config);
    let mut headers = Vec::new();
    payment_challenges(payments, "acme", NOW, &mut headers);
    assert_eq!(headers.len(), 1);
    let challenge = parse_challenge(&headers[0].1);
    let nonce = challenge_nonce(&challenge["id"], &challenge["realm"]);
    let credential = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut json = credential_json(&challenge, PAYER, &nonce);
        json["payload"]["validBefore"] = (NOW + 30).to_string().into();
        edit(&mut json);
        let value = payment_credential(&json);
        value.strip_prefix("Payment ").unwrap().to_string()
    };
    let read = |token: &str, consumer: &str, now: i64| {
        read_credential(payments, "authorization", token.as_bytes(), now, consumer)
    };
    let kind = |r: Result<Presented, Refused>| match r {
        Err(Refused::Credential(kind, why)) => (kind, why),
        other => panic!("not refused as a credential: {other:?}"),
    };

    let presented = read(&credential(&|_| {}), "acme", NOW).unwrap();
    assert_eq!(presented.pack, 0);
    assert_eq!(presented.untimely, None);
    assert_eq!(presented.challenge, Some((challenge["id"].clone(), 84532)));
    // The facilitator gets the x402 v2 payment of the pack.
    let body: serde_json::Value = serde_json::from_slice(&presented.call_body).unwrap();
    assert_eq!(body["paymentPayload"]["accepted"]["amount"], "10000");
    assert_eq!(
        body["paymentPayload"]["payload"]["authorization"]["nonce"],
        nonce.as_str()
    );

    // Another consumer's, or another realm's, or with a digest: not a challenge for this.
    assert_eq!(
        kind(read(&credential(&|_| {}), "globex", NOW)).0,
        CHALLENGE_INVALID
    );
    let other_realm = credential(&|j| j["challenge"]["realm"] = "evil.example".into());
    assert_eq!(kind(read(&other_realm, "acme", NOW)).0, CHALLENGE_INVALID);
    let digest = credential(&|j| j["challenge"]["digest"] = "sha-256=:x:".into());
    assert_eq!(kind(read(&digest, "acme", NOW)).0, CHALLENGE_INVALID);
    // Another credential type is refused for what it is, not as malformed.
    let permit2 = credential(&|j| {
        j["payload"] = serde_json::json!({"type": "permit2", "permit": {}, "signature": "0x"})
    });
    assert_eq!(kind(read(&permit2, "acme", NOW)).0, VERIFICATION_FAILED);
    // A member missing is named, never a value.
    let (k, why) = kind(read(
        &credential(&|j| {
            j["payload"].as_object_mut().unwrap().remove("from");
        }),
        "acme",
        NOW,
    ));
    assert_eq!(
        (k, why.as_str()),
        (CREDENTIAL_MALFORMED, "payload.from: not of its form")
    );
    // Past its expiry (and the authorization's), the claim decides: untimely, not refused here.
    let late = read(&credential(&|_| {}), "acme", NOW + 600).unwrap();
    assert!(late.untimely.is_some_and(expired), "{:?}", late.untimely);
    // A valid authorization for a challenge whose expiry passed: the challenge's own expiry.
    let long = credential(&|j| j["payload"]["validBefore"] = (NOW + 150).to_string().into());
    let late = read(&long, "acme", NOW + 70);
    assert_eq!(late.unwrap().untimely, Some("the challenge has expired"));
}
