//! Token and weighted quotas through real Envoy (2 workers, the release .wasm,
//! `envoy/llm/envoy.yaml` as shipped) in front of the test kit's fake LLM provider: the
//! reservation on admission, the output cap the provider is sent, the usage read from every
//! response shape as it streams past, the settlement, and every refusal of a bad body.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::thread;

use serde_json::{json, Value};
use tollgate_testkit::{
    clear_of_day_boundary, plugin, post, request, Envoy, FakeLlm, Options, Posted, Sink,
};

const KEY: &str = "x-api-key: acme-key";

/// Envoy running the shipped LLM gateway with this plugin configuration, its upstream the fake.
fn gateway(fake: &FakeLlm, config: &Value) -> Envoy {
    gateway_with(fake, config, Vec::new())
}

fn gateway_with(fake: &FakeLlm, config: &Value, clusters: Vec<(String, u16)>) -> Envoy {
    Envoy::start_with(Options {
        clusters,
        bootstrap: "envoy/llm/envoy.yaml".into(),
        file_ports: (10400, 10401, 9951),
        plugin: Some(plugin(&config.to_string())),
        replace: vec![(
            "port_value: 10401".to_string(),
            format!("port_value: {}", fake.port),
        )],
        ..Options::default()
    })
}

/// A plan `p` with these limits, consumer acme, the shipped routes, and these models.
fn config(limits: Value, plan_cap: Option<u64>, models: Value) -> Value {
    let mut plan = json!({ "limits": limits });
    if let Some(cap) = plan_cap {
        plan["max_output_tokens"] = json!(cap);
    }
    json!({
        "plans": { "p": plan },
        "consumers": { "acme": { "plan": "p", "keys": ["acme-key"] } },
        "routes": {
            "chat": {"llm": "openai-chat"},
            "responses": {"llm": "openai-responses"},
            "messages": {"llm": "anthropic-messages"},
            "images": {"cost": {"credits": 10}, "cost_headers": {"credits": "x-upstream-cost"}},
            "models": {"cost": {"credits": 0}}
        },
        "llm": { "models": models },
        "usage_path": "/tollgate/usage"
    })
}

/// What the usage endpoint says acme has used, per limit.
fn used(envoy: &Envoy) -> Vec<(String, u64)> {
    let r = request(
        envoy.port,
        "GET",
        "/tollgate/usage",
        &[("x-api-key", b"acme-key")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["used"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn used_of(envoy: &Envoy, limit: &str) -> u64 {
    used(envoy)
        .into_iter()
        .find(|(n, _)| n == limit)
        .unwrap_or_else(|| panic!("no limit {limit}"))
        .1
}

/// The body of a request to `api` for `model`, with an output cap (`None`: none given).
fn body(path: &str, model: &str, cap: Option<u64>, stream: bool) -> Value {
    let mut b = match path {
        "/v1/chat/completions" => {
            json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]})
        }
        "/v1/responses" => json!({"model": model, "input": "Hi"}),
        _ => json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]}),
    };
    if let Some(cap) = cap {
        let field = match path {
            "/v1/chat/completions" => "max_completion_tokens",
            "/v1/responses" => "max_output_tokens",
            _ => "max_tokens",
        };
        b[field] = json!(cap);
    }
    if stream {
        b["stream"] = json!(true);
    }
    b
}

fn send(envoy: &Envoy, path: &str, body: &Value, headers: &[&str], http2: bool) -> Posted {
    let mut all = vec![KEY, "content-type: application/json"];
    all.extend_from_slice(headers);
    post(envoy.port, path, &all, body.to_string().as_bytes(), http2)
}

/// Waits for a counter (flushed on the filter's tick) to reach `want`, and checks it stops there.
fn counter_reaches(envoy: &Envoy, name: &str, want: u64) {
    let got = tollgate_testkit::poll(std::time::Duration::from_secs(10), name, || {
        let v = envoy.counter(name);
        (v >= want).then_some(v)
    });
    assert_eq!(got, want, "{name}");
}

const APIS: [&str; 3] = ["/v1/chat/completions", "/v1/responses", "/v1/messages"];

#[test]
fn concurrent_requests_never_spend_more_than_the_quota_and_settle_to_what_was_reported() {
    clear_of_day_boundary();
    let fake = FakeLlm::start();
    // 10 000 tokens; each request reserves its body's bytes (1 byte, 1 token) plus its cap,
    // about 500, and uses 300 (input 50 + output 250).
    let cfg = config(
        json!([{"name": "tokens", "tokens": 10000, "window": "day"}]),
        None,
        json!({"m": {}}),
    );
    let envoy = gateway(&fake, &cfg);
    // The cap that makes a body's reservation 500 (a 3-digit cap either way).
    let cap_for = |stream: bool| {
        500 - body("/v1/chat/completions", "m", Some(100), stream)
            .to_string()
            .len() as u64
    };
    let results: Vec<Posted> = thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let envoy = &envoy;
                s.spawn(move || {
                    let stream = i % 2 == 0;
                    let b = body("/v1/chat/completions", "m", Some(cap_for(stream)), stream);
                    let headers = [
                        "x-fake-input-tokens: 50",
                        "x-fake-output-tokens: 250",
                        "x-fake-delay-ms: 300",
                    ];
                    send(envoy, "/v1/chat/completions", &b, &headers, i % 4 < 2)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let admitted = results.iter().filter(|r| r.response.status == 200).count() as u64;
    let refused = results.iter().filter(|r| r.response.status == 402).count() as u64;
    assert_eq!(admitted + refused, 64, "{results:?}");
    // 64 × 300 do not fit in 10 000: some were refused; and at least the 20 reservations that
    // fit at once were admitted (more, as refunds made room).
    assert!(
        refused > 0 && admitted >= 20,
        "admitted {admitted}, refused {refused}"
    );
    let reported = fake.reported();
    assert_eq!(reported.responses, admitted);
    let spent = reported.input + reported.output;
    assert_eq!(spent, admitted * 300);
    assert!(
        spent <= 10_000,
        "the provider reported {spent} tokens for a quota of 10 000"
    );
    // Every stream ended: the count is exactly what the provider reported.
    assert_eq!(used_of(&envoy, "tokens"), spent);
    // A refusal says it is tokens, what the request needed and what was left.
    if let Some(r) = results.iter().find(|r| r.response.status == 402) {
        let p = r.response.json();
        assert_eq!(p["unit"], "tokens", "{p}");
        assert_eq!(p["needed"], 500, "{p}");
        assert!(p["remaining"].as_u64().unwrap() < 500, "{p}");
    }
    // And the quota can be spent to the end: what is left admits exactly what fits.
    let left = 10_000 - spent;
    assert_eq!(
        request(
            envoy.port,
            "GET",
            "/tollgate/usage",
            &[("x-api-key", b"acme-key")]
        )
        .json()["limits"][0]["remaining"],
        left
    );
}

#[test]
fn the_provider_gets_the_effective_cap_and_include_usage_and_the_stream_passes_unchanged() {
    clear_of_day_boundary();
    let fake = FakeLlm::start();
    let cfg = config(
        json!([{"name": "tokens", "tokens": 1000000, "window": "day"}]),
        Some(100),
        json!({"m": {"max_output_tokens": 4096}}),
    );
    let envoy = gateway(&fake, &cfg);
    for http2 in [false, true] {
        let before = fake.requests().len();
        let b = body("/v1/chat/completions", "m", Some(5000), true);
        let got = send(
            &envoy,
            "/v1/chat/completions",
            &b,
            &[
                "x-fake-output-tokens: 500",
                "x-fake-split: 7",
                "accept-encoding: gzip, br",
            ],
            http2,
        );
        assert_eq!(got.response.status, 200, "{:?}", got.response);
        let seen = &fake.requests()[before];
        // The plan's cap (100) beats the client's (5000) and the model's (4096).
        assert_eq!(seen.body["max_completion_tokens"], 100, "{}", seen.body);
        // The answer must stay readable: no compression asked for.
        assert_eq!(seen.header("accept-encoding"), None, "{seen}");
        assert_eq!(seen.body["stream_options"]["include_usage"], true);
        assert_eq!(seen.body["messages"], b["messages"]);
        // The same request straight to the provider: the client got the same events (the
        // fake's `created` seconds aside), the usage chunk tollgate asked for included.
        let direct = post(
            fake.port,
            "/v1/chat/completions",
            &[
                "content-type: application/json",
                "x-fake-output-tokens: 500",
            ],
            seen.body.to_string().as_bytes(),
            false,
        );
        let strip = |bytes: &[u8]| -> Vec<String> {
            String::from_utf8_lossy(bytes)
                .split("\n\n")
                .map(|event| {
                    let mut v: Value = event
                        .strip_prefix("data: ")
                        .and_then(|d| serde_json::from_str(d).ok())
                        .unwrap_or(Value::String(event.into()));
                    if let Some(o) = v.as_object_mut() {
                        o.remove("created");
                    }
                    v.to_string()
                })
                .collect()
        };
        assert_eq!(strip(&got.body), strip(&direct.body));
        assert!(String::from_utf8_lossy(&got.body).contains("\"usage\":{"));
        // Charged: the body's bytes as input estimate, then settled to 10 in + 100 out.
    }
    assert_eq!(used_of(&envoy, "tokens"), 2 * 110);
}

/// Tokens a response reported, weighted 1 / 0.5 / 4 (input, cached input, output), rounded up.
fn weighted(input: u64, cached: u64, output: u64) -> u64 {
    ((input - cached) * 1000 + cached * 500 + output * 4000).div_ceil(1000)
}

#[test]
fn every_usage_shape_settles_its_weighted_tokens_streamed_or_not_split_anywhere() {
    clear_of_day_boundary();
    let fake = FakeLlm::start();
    let cfg = config(
        json!([{"name": "tokens", "tokens": 100000000, "window": "day"},
               {"name": "daily", "requests": 1000, "window": "day"}]),
        None,
        json!({"m": {"max_output_tokens": 64, "weights": {"input": 1, "cached_input": 0.5, "output": 4}}}),
    );
    let envoy = gateway(&fake, &cfg);
    let mut expected = 0;
    for path in APIS {
        for stream in [false, true] {
            for split in ["1", "13", "4096"] {
                let before = fake.reported();
                let b = body(path, "m", None, stream);
                let headers = [
                    "x-fake-input-tokens: 40",
                    "x-fake-cached-tokens: 15",
                    "x-fake-output-tokens: 30",
                    &format!("x-fake-split: {split}"),
                ];
                let got = send(&envoy, path, &b, &headers, split == "13");
                assert_eq!(
                    got.response.status, 200,
                    "{path} stream={stream}: {:?}",
                    got.response
                );
                let after = fake.reported();
                assert_eq!(
                    after.responses,
                    before.responses + 1,
                    "{path} stream={stream}"
                );
                expected += weighted(40, 15, 30);
                assert_eq!(
                    used_of(&envoy, "tokens"),
                    expected,
                    "{path} stream={stream} split={split}"
                );
            }
        }
    }
    assert_eq!(used_of(&envoy, "daily"), 18);
    counter_reaches(&envoy, "tollgate.settlements.settled", 18);
}

#[test]
fn a_cut_stream_is_charged_its_reservation_and_an_upstream_error_releases_it() {
    clear_of_day_boundary();
    let fake = FakeLlm::start();
    let cfg = config(
        json!([{"name": "tokens", "tokens": 1000000, "window": "day"},
               {"name": "daily", "requests": 1000, "window": "day"}]),
        None,
        json!({"*": {"max_output_tokens": 200}}),
    );
    let envoy = gateway(&fake, &cfg);
    for path in APIS {
        let b = body(path, "any-model", None, true);
        let reservation = b.to_string().len() as u64 + 200;
        let before = used_of(&envoy, "tokens");
        let cut = send(
            &envoy,
            path,
            &b,
            &["x-fake-cut: true", "x-fake-output-tokens: 100"],
            false,
        );
        assert!(cut.cut, "{path}: {:?}", cut.response);
        // The stream is torn down; its settlement is written when Envoy ends the stream.
        let after = tollgate_testkit::poll(
            std::time::Duration::from_secs(10),
            "the cut stream's charge",
            || {
                let now = used_of(&envoy, "tokens");
                (now != before).then_some(now)
            },
        );
        assert_eq!(after - before, reservation, "{path}");
        let failed = send(&envoy, path, &b, &["x-fake-status: 503"], false);
        assert_eq!(failed.response.status, 503);
        assert_eq!(
            used_of(&envoy, "tokens"),
            after,
            "{path}: an upstream error is not charged"
        );
    }
    assert_eq!(used_of(&envoy, "daily"), 6, "requests count either way");
    counter_reaches(&envoy, "tollgate.settlements.unreported", 3);
    counter_reaches(&envoy, "tollgate.settlements.released", 3);
}

#[test]
fn a_weighted_route_takes_its_cost_and_settles_from_the_upstreams_header() {
    clear_of_day_boundary();
    let fake = FakeLlm::start();
    let cfg = config(
        json!([{"name": "credits", "units": 100, "unit": "credits", "window": "day"},
               {"name": "daily", "requests": 1000, "window": "day"}]),
        None,
        json!({"*": {}}),
    );
    let envoy = gateway(&fake, &cfg);
    let image = |headers: &[&str]| {
        let mut all = vec![KEY];
        all.extend_from_slice(headers);
        post(envoy.port, "/v1/images/generations", &all, b"{}", false)
    };
    // Priced at 10, and the upstream says 7: 7 it is, and the client never sees the header.
    let r = image(&["x-fake-status: 200", "x-fake-cost: 7"]);
    assert_eq!(r.response.status, 200);
    assert_eq!(
        r.response.header("x-upstream-cost"),
        None,
        "{:?}",
        r.response
    );
    assert!(r
        .response
        .header("ratelimit")
        .unwrap()
        .contains("\"credits\";r=90"));
    assert_eq!(used_of(&envoy, "credits"), 7);
    // No header (or not a number): the route's cost stands.
    image(&["x-fake-status: 200"]);
    assert_eq!(used_of(&envoy, "credits"), 17);
    image(&["x-fake-status: 200", "x-fake-cost: lots"]);
    assert_eq!(used_of(&envoy, "credits"), 27);
    // The free route takes no credits; other routes take 1.
    let mut free = tollgate_testkit::Conn::new(envoy.port);
    assert_eq!(
        free.get("/v1/models", &[("x-api-key", b"acme-key")]).status,
        404
    );
    assert_eq!(used_of(&envoy, "credits"), 27);
    assert_eq!(
        free.get("/anything", &[("x-api-key", b"acme-key")]).status,
        404
    );
    assert_eq!(used_of(&envoy, "credits"), 28);
    // 72 left: seven more images fit (at 10 each, reserved before the upstream answers).
    for _ in 0..7 {
        assert_eq!(image(&["x-fake-status: 200"]).response.status, 200);
    }
    let refused = image(&["x-fake-status: 200"]);
    assert_eq!(refused.response.status, 402);
    let p = refused.response.json();
    assert_eq!(
        (
            p["unit"].as_str(),
            p["needed"].as_u64(),
            p["remaining"].as_u64()
        ),
        (Some("credits"), Some(10), Some(2)),
        "{p}"
    );
    // The policy names the unit (the draft's `qu`).
    assert!(refused
        .response
        .header("ratelimit-policy")
        .unwrap()
        .contains("\"credits\";q=100;w=86400;qu=\"credits\""));
}

#[test]
fn bad_bodies_get_their_answer_and_nothing_is_counted() {
    clear_of_day_boundary();
    let fake = FakeLlm::start();
    let mut cfg = config(
        json!([{"name": "tokens", "tokens": 1000000, "window": "day"},
               {"name": "daily", "requests": 1000, "window": "day"}]),
        None,
        json!({"m": {"max_output_tokens": 100}, "nocap": {}}),
    );
    cfg["llm"]["max_body_bytes"] = json!(4096);
    let envoy = gateway(&fake, &cfg);
    let chat = "/v1/chat/completions";
    let raw = |body: &[u8], http2: bool| {
        post(
            envoy.port,
            chat,
            &[KEY, "content-type: application/json"],
            body,
            http2,
        )
    };
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"not json".to_vec(), 400, ""),
        (b"[1,2]".to_vec(), 400, ""),
        (
            json!({"messages": []}).to_string().into_bytes(),
            400,
            "model",
        ),
        (
            json!({"model": "other", "messages": []})
                .to_string()
                .into_bytes(),
            400,
            "model",
        ),
        (
            json!({"model": "nocap", "messages": []})
                .to_string()
                .into_bytes(),
            400,
            "max_completion_tokens",
        ),
        (
            json!({"model": "m", "max_tokens": -1})
                .to_string()
                .into_bytes(),
            400,
            "max_tokens",
        ),
        (
            json!({"model": "m", "max_tokens": 1_000_000_000_000u64})
                .to_string()
                .into_bytes(),
            400,
            "max_tokens",
        ),
        (
            json!({"model": "m", "n": 1000}).to_string().into_bytes(),
            400,
            "n",
        ),
        (
            json!({"model": "m", "stream": "yes"})
                .to_string()
                .into_bytes(),
            400,
            "stream",
        ),
    ];
    for http2 in [false, true] {
        for (b, status, field) in &cases {
            let r = raw(b, http2);
            assert_eq!(
                r.response.status,
                *status,
                "{:?}: {:?}",
                String::from_utf8_lossy(b),
                r.response
            );
            let p = r.response.json();
            assert_eq!(
                r.response.header("content-type"),
                Some("application/problem+json")
            );
            assert!(
                p["detail"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("`{field}`"))
                    || field.is_empty(),
                "{p}"
            );
        }
    }
    // Over the bound, announced by its length: 413 before anything goes upstream (HTTP/2
    // with nghttp: curl 7.88 drops an answer that comes before the upload ended).
    let over = vec![b' '; 5000];
    let r = raw(&over, false);
    assert_eq!(r.response.status, 413, "{:?}", r.response);
    assert_eq!(
        r.response.json()["type"],
        "urn:tollgate:problem:body-too-large"
    );
    let h2 = tollgate_testkit::nghttp_post(envoy.port, chat, &[KEY], &over);
    assert!(
        h2.contains(":status: 413") && h2.contains("application/problem+json"),
        "{h2}"
    );
    // A body without a length (HTTP/1.1 chunked) over the bound: 413 once it is seen.
    let chunked = post(
        envoy.port,
        chat,
        &[KEY, "transfer-encoding: chunked"],
        &vec![b' '; 8000],
        false,
    );
    assert_eq!(chunked.response.status, 413, "{:?}", chunked.response);
    // No body at all: 400 — after the credential, which is checked first (401).
    let get = request(envoy.port, "GET", chat, &[("x-api-key", b"acme-key")]);
    assert_eq!(get.status, 400, "{get:?}");
    assert_eq!(request(envoy.port, "GET", chat, &[]).status, 401);
    // A CORS preflight has no key and no body: it passes (the provider answers it).
    let preflight = request(
        envoy.port,
        "OPTIONS",
        chat,
        &[
            ("origin", b"https://app.example"),
            ("access-control-request-method", b"POST"),
        ],
    );
    assert_eq!(preflight.status, 405, "the fake's answer: {preflight:?}");
    let reached: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert!(
        reached.is_empty(),
        "nothing reached the provider: {reached:?}"
    );
    assert_eq!(
        used(&envoy),
        [("tokens".to_string(), 0), ("daily".to_string(), 0)]
    );
    // Prompts are never logged.
    assert!(!envoy.log().contains("not json"));
}

#[test]
fn usage_events_carry_the_tokens_of_each_model_for_billing() {
    clear_of_day_boundary();
    let fake = FakeLlm::start();
    let sink = Sink::start();
    let mut cfg = config(
        json!([{"name": "tokens", "tokens": 1000000, "window": "day"}]),
        None,
        json!({"small": {"max_output_tokens": 50, "weights": {"cached_input": 0.5, "output": 2}},
               "*": {"max_output_tokens": 50}}),
    );
    cfg["events"] = json!({"cluster": "sink", "url": "http://sink/", "interval": "1s"});
    let envoy = gateway_with(&fake, &cfg, vec![("sink".into(), sink.port)]);
    let headers = [
        "x-fake-input-tokens: 30",
        "x-fake-cached-tokens: 10",
        "x-fake-output-tokens: 20",
    ];
    for (path, model) in [
        ("/v1/chat/completions", "small"),
        ("/v1/messages", "small"),
        ("/v1/responses", "big-model"),
    ] {
        let r = send(
            &envoy,
            path,
            &body(path, model, None, true),
            &headers,
            false,
        );
        assert_eq!(r.response.status, 200);
    }
    // Summed over every event (each worker reports its own).
    let totals = tollgate_testkit::poll(
        std::time::Duration::from_secs(20),
        "token usage events",
        || {
            let mut by_model = std::collections::BTreeMap::<String, [u64; 5]>::new();
            for event in sink.accepted() {
                if event["type"] != "io.tollgate.tokens" {
                    continue;
                }
                let t = &event["data"];
                let e = by_model
                    .entry(t["model"].as_str().unwrap().to_string())
                    .or_default();
                for (i, k) in [
                    "requests",
                    "input_tokens",
                    "cached_input_tokens",
                    "output_tokens",
                    "units",
                ]
                .iter()
                .enumerate()
                {
                    e[i] += t[k].as_u64().unwrap();
                }
            }
            (by_model.values().map(|v| v[0]).sum::<u64>() == 3).then_some(by_model)
        },
    );
    // Input 30 of which 10 cached, output 20: small weighs 20 + 10 × 0.5 + 20 × 2 = 65.
    assert_eq!(totals["small"], [2, 40, 20, 40, 130]);
    assert_eq!(totals["*"], [1, 20, 10, 20, 50]);
    assert_eq!(used_of(&envoy, "tokens"), 180);
}

#[test]
fn in_shadow_mode_the_upstreams_cost_header_never_reaches_the_client() {
    clear_of_day_boundary();
    let fake = FakeLlm::start();
    let mut cfg = config(
        json!([{"name": "credits", "units": 10, "unit": "credits", "window": "day"}]),
        None,
        json!({"*": {}}),
    );
    cfg["mode"] = json!("shadow");
    let envoy = gateway(&fake, &cfg);
    let image = || {
        post(
            envoy.port,
            "/v1/images/generations",
            &[KEY, "x-fake-status: 200", "x-fake-cost: 10"],
            b"{}",
            false,
        )
        .response
    };
    // Admitted and settled, then over the quota: forwarded by shadow mode, not settled.
    for _ in 0..3 {
        let r = image();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-upstream-cost"), None, "{r:?}");
    }
    assert_eq!(used_of(&envoy, "credits"), 10);
}

#[test]
fn a_request_that_ends_with_trailers_is_refused_never_forwarded_unpriced() {
    use std::io::{Read, Write};
    clear_of_day_boundary();
    let fake = FakeLlm::start();
    let cfg = config(
        json!([{"name": "tokens", "tokens": 1000000, "window": "day"}]),
        None,
        json!({"*": {"max_output_tokens": 10}}),
    );
    // HTTP/1.1 request trailers reach filters only when enabled (HTTP/2 always has them).
    let envoy = Envoy::start_with(Options {
        bootstrap: "envoy/llm/envoy.yaml".into(),
        file_ports: (10400, 10401, 9951),
        plugin: Some(plugin(&cfg.to_string())),
        replace: vec![
            (
                "port_value: 10401".to_string(),
                format!("port_value: {}", fake.port),
            ),
            (
                "codec_type: AUTO".to_string(),
                "codec_type: AUTO\n          http_protocol_options: { enable_trailers: true }"
                    .to_string(),
            ),
        ],
        ..Options::default()
    });
    let body = body("/v1/chat/completions", "m", None, false).to_string();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", envoy.port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nx-api-key: acme-key\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\
         \r\n{:x}\r\n{body}\r\n0\r\nx-checksum: 1\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("}") {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("without trailers"), "{answer}");
    let reached: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert!(reached.is_empty(), "the provider got a body: {reached:?}");
    assert_eq!(used_of(&envoy, "tokens"), 0);
}
