use super::*;
use crate::config::Config;
use crate::quota::Usage;
use crate::response::Reply;
use crate::window::Bounds;

const BOUNDS: Bounds = Bounds {
    start: 0,
    end: 86_400,
};

fn limit(name: &str, unit: Unit) -> Limit {
    Limit {
        name: name.into(),
        requests: 1_000_000,
        unit,
        window: crate::window::Window::parse("day").unwrap(),
        window_text: "day".into(),
        status: 402,
        per_envoy: false,
    }
}

fn charged(costs: &[u64]) -> Charged {
    Charged {
        consumer: 0,
        usages: costs
            .iter()
            .map(|cost| Usage {
                used: *cost,
                requests: 1_000_000,
                bounds: BOUNDS,
                violated: false,
                cost: *cost,
            })
            .collect(),
        output_cap: Some(100),
        in_record: true,
        drawn: 0,
    }
}

fn weights(input: u64, cached_input: u64, output: u64) -> Weights {
    Weights {
        input,
        cached_input,
        output,
    }
}

#[test]
fn weighing_rounds_up_and_prices_each_kind() {
    let tokens = Tokens {
        input: 10,
        cached_input: 4,
        output: 3,
    };
    assert_eq!(weigh(tokens, Weights::default()), 17);
    // 10 × 1 + 4 × 0.25 + 3 × 4 = 23
    assert_eq!(weigh(tokens, weights(1000, 250, 4000)), 23);
    // 10 × 0.001 = 0.01, rounded up
    let one = Tokens {
        input: 10,
        ..Tokens::default()
    };
    assert_eq!(weigh(one, weights(1, 0, 0)), 1);
    assert_eq!(weigh(Tokens::default(), Weights::default()), 0);
}

#[test]
fn the_reservation_covers_the_dearer_input_weight_and_every_completion() {
    // 1000 bytes at 4 bytes a token = 250 tokens × 2 (cached is dearer here) = 500;
    // output 100 × n 3 × 1.5 = 450.
    let ask = token_ask(1000, 4, 100, 3, weights(1000, 2000, 1500));
    assert_eq!(ask.input, 500);
    assert_eq!(ask.reserve(100), 950);
    assert_eq!(ask.reserve(10), 545);
    // 1001 bytes: one more token (rounded up).
    assert_eq!(token_ask(1001, 4, 1, 1, Weights::default()).input, 251);
}

#[test]
fn cost_headers_are_digits_only_and_bounded() {
    assert_eq!(parse_cost(b"7"), Some(7));
    assert_eq!(parse_cost(b"0"), Some(0));
    assert_eq!(parse_cost(b"999999999999999"), Some(999_999_999_999_999));
    for bad in [
        &b""[..],
        b"-1",
        b"+1",
        b" 1",
        b"1.5",
        b"1e3",
        b"9999999999999999",
        b"abc",
    ] {
        assert_eq!(parse_cost(bad), None, "{bad:?}");
    }
}

fn llm_pending(costs: &[u64]) -> Pending {
    Pending::new(
        charged(costs),
        None,
        Some((Api::OpenAiChat, weights(1000, 500, 2000), 0)),
    )
}

#[test]
fn without_response_headers_the_stream_was_cut_and_the_reservation_stays() {
    let limits = [limit("r", Unit::Requests), limit("t", Unit::Tokens)];
    let mut p = llm_pending(&[1, 500]);
    let (settlements, _, metric) = p.settlements(&limits, &[], true);
    // No status: the upstream never answered; not a 2xx, so tokens are released.
    assert_eq!(metric, Some(Metric::Released));
    assert_eq!(
        settlements,
        [Settlement {
            limit: 1,
            bounds: BOUNDS,
            taken: 500,
            actual: 0
        }]
    );
    // Once only.
    assert_eq!(p.settlements(&limits, &[], true), (Vec::new(), None, None));
    assert!(p.settled());
}

#[test]
fn an_upstream_error_without_usage_releases_and_a_2xx_without_usage_charges() {
    let limits = [limit("t", Unit::Tokens)];
    let mut failed = llm_pending(&[500]);
    failed.on_response_headers(Some(503), false, |_| None);
    assert_eq!(
        failed.settlements(&limits, &[], true).2,
        Some(Metric::Released)
    );

    let mut cut = llm_pending(&[500]);
    cut.on_response_headers(Some(200), true, |_| None);
    let (settlements, _, metric) = cut.settlements(&limits, &[], false);
    assert_eq!(metric, Some(Metric::Unreported));
    assert!(
        settlements.is_empty(),
        "the reservation stays: {settlements:?}"
    );
}

#[test]
fn request_limits_are_never_settled_and_a_tokenless_request_settles_nothing() {
    let limits = [limit("r", Unit::Requests), limit("t", Unit::Tokens)];
    let mut p = llm_pending(&[1, 0]);
    p.on_response_headers(Some(200), false, |_| None);
    assert_eq!(p.settlements(&limits, &[], true), (Vec::new(), None, None));
}

#[test]
fn a_cost_header_settles_its_unit_and_is_removed() {
    let credits = Unit::Named("credits".into());
    let route = Route {
        name: "images".into(),
        costs: vec![(credits.clone(), 10)],
        cost_headers: vec![(credits.clone(), "x-upstream-cost".into())],
        llm: None,
    };
    let limits = [limit("r", Unit::Requests), limit("c", credits)];
    let mut p = Pending::new(charged(&[1, 10]), Some(&route), None);
    let removed = p.on_response_headers(Some(200), false, |name| {
        (name == "x-upstream-cost").then(|| b"7".to_vec())
    });
    assert_eq!(removed, ["x-upstream-cost"]);
    let (settlements, _, metric) = p.settlements(&limits, &[], true);
    assert_eq!(metric, Some(Metric::Settled));
    assert_eq!(
        settlements,
        [Settlement {
            limit: 1,
            bounds: BOUNDS,
            taken: 10,
            actual: 7
        }]
    );

    // Not a cost: removed all the same, and the route's cost stands.
    let mut bad = Pending::new(charged(&[1, 10]), Some(&route), None);
    let removed = bad.on_response_headers(Some(200), false, |_| Some(b"-3".to_vec()));
    assert_eq!(removed, ["x-upstream-cost"]);
    assert_eq!(
        bad.settlements(&limits, &[], true),
        (Vec::new(), None, None)
    );
}

#[test]
fn usage_seen_in_a_stream_that_was_cut_is_not_the_whole_and_the_reservation_stays() {
    let limits = [limit("t", Unit::Tokens)];
    let start = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n";
    let mut cut = Pending::new(
        charged(&[500]),
        None,
        Some((Api::AnthropicMessages, Weights::default(), 3)),
    );
    cut.on_response_headers(Some(200), true, |_| None);
    cut.on_body(start);
    assert!(cut.tokens().is_some());
    assert_eq!(
        cut.settlements(&limits, &[], false),
        (Vec::new(), None, Some(Metric::Unreported))
    );

    let mut whole = Pending::new(
        charged(&[500]),
        None,
        Some((Api::AnthropicMessages, Weights::default(), 3)),
    );
    whole.on_response_headers(Some(200), true, |_| None);
    whole.on_body(start);
    let (settlements, _, metric) = whole.settlements(&limits, &[], true);
    assert_eq!(metric, Some(Metric::Settled));
    assert_eq!(settlements[0].actual, 11);
    let tokens = Tokens {
        input: 10,
        cached_input: 0,
        output: 1,
    };
    assert_eq!(
        whole.billed(),
        Some(Billed {
            model: 3,
            tokens: Some(tokens),
            units: 11
        })
    );
    assert_eq!(
        cut.billed(),
        Some(Billed {
            model: 3,
            tokens: None,
            units: 500
        })
    );
}

#[test]
fn a_cost_header_longer_than_fifteen_digits_is_refused_even_with_leading_zeros() {
    assert_eq!(parse_cost(b"0000000000000007"), None);
    assert_eq!(parse_cost(b"000000000000007"), Some(7));
}

#[test]
fn a_pending_request_knows_its_consumer_and_is_settled_once() {
    let mut c = charged(&[1]);
    c.consumer = 7;
    let mut p = Pending::new(c, None, None);
    assert_eq!(p.consumer(), 7);
    assert!(!p.settled());
    p.settlements(&[limit("r", Unit::Requests)], &[], true);
    assert!(p.settled());
}

fn llm_config(models: &str) -> Config {
    Config::from_json(
        format!(
            r#"{{"plans": {{"p": {{"limits": [{{"name": "t", "tokens": 1000, "window": "day"}}]}}}},
                "routes": {{"chat": {{"llm": "openai-chat"}}}},
                "llm": {{"max_n": 4, "bytes_per_input_token": 2, "models": {models}}}}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

fn detail(reply: &Reply) -> String {
    let p: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(reply.status, 400);
    p["detail"].as_str().unwrap().to_string()
}

#[test]
fn an_llm_body_is_priced_with_its_model_and_cap_or_refused_naming_the_member() {
    let config = llm_config(
        r#"{"small": {"max_output_tokens": 100, "weights": {"input": 2, "cached_input": 1, "output": 3}},
            "nocap": {}}"#,
    );
    let body = br#"{"model":"small","max_completion_tokens":500,"n":2}"#;
    let r = read_llm(&config, Api::OpenAiChat, body).unwrap();
    assert_eq!(r.model, 0);
    // The client's 500, at most the model's 100; input 51 bytes / 2 = 26 tokens × 2.
    assert_eq!(
        r.ask,
        TokenAsk {
            input: 52,
            cap: 100,
            n: 2,
            output_weight: 3000
        }
    );
    // No cap: the model's.
    let r = read_llm(&config, Api::AnthropicMessages, br#"{"model":"small"}"#).unwrap();
    assert_eq!(r.ask.cap, 100);
    // No cap anywhere: refused, naming the member of each API.
    for (api, member) in [
        (Api::OpenAiChat, "max_completion_tokens"),
        (Api::OpenAiResponses, "max_output_tokens"),
        (Api::AnthropicMessages, "max_tokens"),
    ] {
        let e = read_llm(&config, api, br#"{"model":"nocap"}"#).unwrap_err();
        assert!(
            detail(&e).contains(&format!("`{member}` is required")),
            "{}",
            e.body
        );
    }
    // An unpriced model (no `*`), a bad body, too many completions.
    let e = read_llm(
        &config,
        Api::OpenAiChat,
        br#"{"model":"big","max_tokens":5}"#,
    )
    .unwrap_err();
    assert!(detail(&e).contains("`model` is not a model this API serves"));
    let e = read_llm(&config, Api::OpenAiChat, b"{not json").unwrap_err();
    assert!(detail(&e).starts_with("The request body cannot be priced: "));
    let e = read_llm(&config, Api::OpenAiChat, br#"{"model":"small","n":5}"#).unwrap_err();
    assert!(detail(&e).contains("`n`"), "{}", e.body);
    // `*` prices every other model.
    let any = llm_config(r#"{"*": {"max_output_tokens": 7}}"#);
    let r = read_llm(&any, Api::OpenAiResponses, br#"{"model":"whatever"}"#).unwrap();
    assert_eq!((r.model, r.ask.cap), (0, 7));
}

#[test]
fn write_settles_into_the_consumers_record_once_and_counts_how() {
    let config = Config::from_json(
        br#"{"plans": {"p": {"limits": [{"name": "d", "requests": 10, "window": "day"},
                                         {"name": "t", "tokens": 1000, "window": "day"}]}},
             "consumers": {"acme": {"plan": "p", "keys": ["a"]}},
             "llm": {"models": {"*": {}}}}"#,
    )
    .unwrap();
    let store = crate::store::MemoryStore::new();
    crate::quota::create_records(&config, &store).unwrap();
    let plan = &config.plans[0];
    let key = &config.consumers[0].store_key;
    let now = 1_795_611_600;
    let taken = crate::quota::check_and_take(&store, key, &plan.limits, &[1, 500], now, 0).unwrap();
    let charged = Charged {
        consumer: 0,
        usages: taken.usages,
        output_cap: Some(100),
        in_record: true,
        drawn: 0,
    };
    let mut p = Pending::new(
        charged,
        None,
        Some((Api::OpenAiChat, Weights::default(), 0)),
    );
    p.on_response_headers(Some(200), false, |_| None);
    p.on_body(br#"{"usage":{"prompt_tokens":30,"completion_tokens":40}}"#);
    let (metrics, billed) = write(&config, &store, &mut p, true);
    assert_eq!(metrics, [(Metric::Settled, None)]);
    assert_eq!(billed.map(|b| b.units), Some(70));
    let used = crate::quota::peek(&store, key, &plan.limits, now, 0).unwrap();
    assert_eq!((used[0].used, used[1].used), (1, 70));
    // Once.
    assert_eq!(
        write(&config, &store, &mut p, true),
        (Increments::default(), None)
    );

    // A store that fails: the reservation stays, and it says so.
    let mut q = Pending::new(
        Charged {
            consumer: 0,
            usages: used,
            output_cap: None,
            in_record: true,
            drawn: 0,
        },
        None,
        Some((Api::OpenAiChat, Weights::default(), 0)),
    );
    q.on_response_headers(Some(503), false, |_| None);
    let (metrics, billed) = write(&config, &crate::store::FailingStore, &mut q, true);
    assert_eq!(
        metrics,
        [(Metric::SettleFailed, None), (Metric::Released, None)]
    );
    assert_eq!(billed, None, "a released request is not billed");
}

#[test]
fn a_request_paid_with_credits_settles_against_the_balance() {
    // Tokens: the monthly limit (covered by credits) took nothing, 500 credits were drawn.
    let limits = [limit("r", Unit::Requests), limit("t", Unit::Tokens)];
    let mut paid = charged(&[1, 0]);
    paid.drawn = 500;
    let mut p = Pending::new(
        paid.clone(),
        None,
        Some((Api::OpenAiChat, weights(1000, 500, 2000), 0)),
    );
    p.on_response_headers(Some(200), false, |_| None);
    p.on_body(br#"{"usage":{"prompt_tokens":10,"completion_tokens":20}}"#);
    let (settlements, credit, metric) = p.settlements(&limits, &[1], true);
    assert_eq!(metric, Some(Metric::Settled));
    // 10 × 1 + 20 × 2 = 50 units: 450 go back to the balance, nothing to the limits.
    assert!(settlements.is_empty(), "{settlements:?}");
    assert_eq!(
        credit,
        Some(CreditSettlement {
            taken: 500,
            actual: 50
        })
    );
    // An upstream error gives it all back.
    let mut failed = Pending::new(
        paid.clone(),
        None,
        Some((Api::OpenAiChat, weights(1000, 500, 2000), 0)),
    );
    failed.on_response_headers(Some(503), false, |_| None);
    let (_, credit, _) = failed.settlements(&limits, &[1], true);
    assert_eq!(
        credit,
        Some(CreditSettlement {
            taken: 500,
            actual: 0
        })
    );

    // Into the record: the balance gets the difference, the limits are untouched.
    let store = crate::store::MemoryStore::new();
    store.set("k", crate::record::empty(), 0).unwrap();
    crate::quota::credit(&store, "k", 1000, "tx", 0).unwrap();
    let before = store.value("k").unwrap();
    let applied = crate::quota::settle(
        &store,
        "k",
        &limits,
        &[],
        Some(CreditSettlement {
            taken: 500,
            actual: 50,
        }),
    )
    .unwrap();
    assert_eq!(applied, 1);
    let after = store.value("k").unwrap();
    let balance = |b: &[u8]| crate::quota::balance(&crate::record::Record::decode(b).unwrap());
    assert_eq!((balance(&before), balance(&after)), (1000, 1450));
    // An overrun takes the rest from the balance, down to 0.
    crate::quota::settle(
        &store,
        "k",
        &limits,
        &[],
        Some(CreditSettlement {
            taken: 0,
            actual: 5000,
        }),
    )
    .unwrap();
    assert_eq!(balance(&store.value("k").unwrap()), 0);
}
