use super::*;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;

fn claim() -> ClaimRequest {
    ClaimRequest {
        domain: "tollgate".into(),
        consumer: "acme".into(),
        replay: "ab12".into(),
        keep_until: 1_000 + 60,
        stale_ms: 5_000,
        untimely: false,
        look: false,
        settling_stale_ms: 0,
    }
}

#[test]
fn a_claim_is_checked_field_by_field() {
    assert_eq!(check_claim(&claim(), 1_000_000), Ok(()));
    let mut c = claim();
    c.replay = "AB12".into();
    assert!(check_claim(&c, 1_000_000).unwrap_err().contains("replay"));
    c = claim();
    c.stale_ms = 0;
    assert!(check_claim(&c, 1_000_000).unwrap_err().contains("stale_ms"));
    c = claim();
    c.keep_until = 1_000;
    assert!(check_claim(&c, 1_000_000)
        .unwrap_err()
        .contains("keep_until"));
    // A look keeps nothing: its keep_until is not read.
    c.look = true;
    assert_eq!(check_claim(&c, 1_000_000), Ok(()));
    c = claim();
    c.consumer = "x".repeat(MAX_CONSUMER_BYTES + 1);
    assert!(check_claim(&c, 1_000_000).unwrap_err().contains("consumer"));
    c = claim();
    c.domain = "a b".into();
    assert!(check_claim(&c, 1_000_000).unwrap_err().contains("domain"));
}

#[test]
fn a_consumers_balance_shares_the_hash_tag_of_its_counters() {
    let request = RateLimitRequest {
        domain: "tollgate".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: [
                ("consumer", "a|b"),
                ("limit", "daily"),
                ("window", "1d"),
                ("requests", "5"),
            ]
            .iter()
            .map(|(k, v)| Entry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
            ..Default::default()
        }],
        hits_addend: 1,
    };
    let decision = decide(&request, 1_000_000, 60).unwrap();
    let tag = consumer_tag("tollgate", "a|b");
    assert!(
        decision.asks[0].key.starts_with(&format!("{tag}:")),
        "{}",
        decision.asks[0].key
    );
    assert_eq!(
        claim_key("tollgate", "ab12"),
        "tollgate:v1:claim:{tollgate:ab12}"
    );
}

#[test]
fn a_draw_with_no_limits_is_a_draw_of_the_balance_alone() {
    let draw = DrawRequest {
        domain: "tollgate".into(),
        consumer: "acme".into(),
        cost: 3,
        limits: Vec::new(),
    };
    assert_eq!(check_draw(&draw, 1_000, 60), Ok(None));
    let mut big = draw.clone();
    big.cost = MAX_HITS + 1;
    assert!(check_draw(&big, 1_000, 60).unwrap_err().contains("cost"));
    let mut other = draw;
    other.limits = RateLimitRequest {
        domain: "elsewhere".into(),
        ..Default::default()
    }
    .encode_to_vec();
    assert!(check_draw(&other, 1_000, 60)
        .unwrap_err()
        .contains("domain"));
}

#[test]
fn credits_are_bounded_but_not_by_the_policy() {
    let credit = CreditRequest {
        domain: "tollgate".into(),
        consumer: "acme".into(),
        replay: "ab".into(),
        credits: 500,
        ledger: "cd".into(),
    };
    assert_eq!(check_credit(&credit), Ok(()));
    let mut zero = credit.clone();
    zero.credits = 0;
    assert!(check_credit(&zero).unwrap_err().contains("credits 0"));
    let mut none = credit;
    none.ledger = String::new();
    assert!(check_credit(&none).unwrap_err().contains("ledger"));
}
