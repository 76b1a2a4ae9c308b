//! Fleet mode with LLM token quotas and weighted routes, through real components: Redis (its
//! append-only file on), the built quotad, Envoys of two workers running the release `.wasm`
//! with `envoy/llm/envoy.yaml` (its LLM routes) plus the quotad cluster of
//! `envoy/fleet/tollgate.yaml`, and the test kit's fake LLM as the provider.
//!
//! A request's cost (its LLM reservation, or its route's cost) is spent from the Envoy's lease;
//! a settlement's refund goes back into that lease, never to Redis. So once every response is
//! complete, what the store counted is exactly what settled requests spent plus what the
//! Envoys' leases still hold — which the usage endpoint shows: it asks the store (taking
//! nothing) and reports `remaining` = what the store has left + what this Envoy's lease holds.
//!
//! Every LLM request here reserves exactly 500 tokens (a body of 100 bytes at one byte a
//! token, plus the model's output cap of 400, every weight 1) and uses 300 (100 in, 200 out).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_testkit::{
    plugin, post, quotad_cluster, request, within_one_window, Envoy, FakeLlm, Options, Posted,
    Quotad, Redis,
};

/// The body of every chat request, in bytes (the input estimate at one byte a token).
const BODY_BYTES: usize = 100;
/// The model's output cap: the effective cap of every request (they give none).
const CAP: u64 = 400;
/// What each LLM request reserves: its input estimate plus its cap, every weight 1.
const RESERVED: u64 = BODY_BYTES as u64 + CAP;
/// What the fake reports for each: 100 input tokens and 200 output tokens.
const USED: u64 = 300;
const INPUT: u64 = 100;
const OUTPUT: u64 = 200;
/// The `lease` of the fleet tests (`store.rls.lease`).
const LEASE: u64 = 1000;
/// A daily request limit beside the token or credit limit, that never binds: every store call
/// decides two limits.
const DAILY: u64 = 100_000;

/// The plugin configuration: a plan `p` with these limits for consumer `consumer` (key
/// `<consumer>-key`), the routes of `envoy/llm/envoy.yaml` (the image route at 10 credits, no
/// cost header), model `m` priced at 1 per token with an output cap of [`CAP`], and the store.
fn config(consumer: &str, limits: Value, lease: u64) -> Value {
    json!({
        "store": {"rls": {"cluster": "tollgate_quotad", "timeout": "2s", "lease": lease}},
        "plans": { "p": { "limits": limits } },
        "consumers": { consumer: { "plan": "p", "keys": [format!("{consumer}-key")] } },
        "routes": {
            "chat": {"llm": "openai-chat"},
            "responses": {"llm": "openai-responses"},
            "messages": {"llm": "anthropic-messages"},
            "images": {"cost": {"credits": 10}},
            "models": {"cost": {"credits": 0}}
        },
        "llm": {
            "bytes_per_input_token": 1,
            "models": {"m": {"max_output_tokens": CAP,
                             "weights": {"input": 1, "cached_input": 1, "output": 1}}}
        },
        "usage_path": "/tollgate/usage"
    })
}

/// Envoy (two workers) running the shipped LLM gateway with this plugin configuration, its
/// upstream the fake, and the quotad cluster added. If Envoy does not start (a refused
/// configuration), fails with tollgate's refusal first, then the whole log.
fn gateway(fake: &FakeLlm, quotad: &Quotad, config: &Value) -> Envoy {
    let options = Options {
        bootstrap: "envoy/llm/envoy.yaml".into(),
        file_ports: (10400, 10401, 9951),
        plugin: Some(plugin(&config.to_string())),
        concurrency: 2,
        replace: vec![
            (
                "port_value: 10401".to_string(),
                format!("port_value: {}", fake.port),
            ),
            (
                "\n  clusters:\n".to_string(),
                format!("\n  clusters:\n{}", quotad_cluster(quotad)),
            ),
        ],
        ..Options::default()
    };
    match Envoy::try_start(options) {
        Ok(envoy) => envoy,
        Err(failure) => {
            // One line per worker: the first says it.
            let refused = failure
                .log
                .lines()
                .find(|l| l.contains("configuration refused"))
                .unwrap_or("no refusal logged");
            panic!(
                "Envoy did not start ({}): {}\nIts log:\n{}",
                failure.status, refused, failure.log
            )
        }
    }
}

/// A chat request body of exactly [`BODY_BYTES`] bytes for model `m`, no output cap given.
fn chat_body(stream: bool) -> String {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": ""}]});
    if stream {
        body["stream"] = json!(true);
    }
    let pad = BODY_BYTES - body.to_string().len();
    body["messages"][0]["content"] = json!("x".repeat(pad));
    let text = body.to_string();
    assert_eq!(text.len(), BODY_BYTES, "{text}");
    text
}

/// A chat completion as `key`, streamed or not, over HTTP/1.1 or HTTP/2; the fake answers it
/// with 100 input and 200 output tokens, after `delay_ms`.
fn chat(envoy: &Envoy, key: &str, stream: bool, http2: bool, delay_ms: u64) -> Posted {
    let key = format!("x-api-key: {key}");
    let delay = format!("x-fake-delay-ms: {delay_ms}");
    let input = format!("x-fake-input-tokens: {INPUT}");
    let output = format!("x-fake-output-tokens: {OUTPUT}");
    let headers = [
        key.as_str(),
        "content-type: application/json",
        &input,
        &output,
        &delay,
    ];
    post(
        envoy.port,
        "/v1/chat/completions",
        &headers,
        chat_body(stream).as_bytes(),
        http2,
    )
}

/// An image generation as `key` (route `images`, 10 credits); the fake answers 200.
fn image(envoy: &Envoy, key: &str) -> Posted {
    let key = format!("x-api-key: {key}");
    post(
        envoy.port,
        "/v1/images/generations",
        &[&key, "x-fake-status: 200"],
        b"{}",
        false,
    )
}

/// The usage the client received (prompt, completion): the document's `usage`, or that of the
/// stream's usage chunk.
fn client_usage(posted: &Posted) -> Option<(u64, u64)> {
    let text = String::from_utf8_lossy(&posted.body);
    let documents: Vec<Value> = if text.trim_start().starts_with('{') {
        vec![serde_json::from_str(&text).ok()?]
    } else {
        text.split("\n\n")
            .filter_map(|event| event.trim().strip_prefix("data: "))
            .filter_map(|data| serde_json::from_str(data).ok())
            .collect()
    };
    documents.iter().find_map(|d| {
        let usage = d.get("usage")?;
        Some((
            usage.get("prompt_tokens")?.as_u64()?,
            usage.get("completion_tokens")?.as_u64()?,
        ))
    })
}

/// Checks a refusal: 402 problem+json naming `unit`, needing `needed`; returns what it
/// says is left.
fn refusal(posted: &Posted, unit: &str, needed: u64) -> u64 {
    let r = &posted.response;
    assert_eq!(r.status, 402, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{r:?}"
    );
    let p = r.json();
    assert_eq!(p["unit"], unit, "{p}");
    assert_eq!(p["needed"], needed, "{p}");
    p["remaining"].as_u64().unwrap_or_else(|| panic!("{p}"))
}

/// What the usage endpoint of `envoy` says is left of `limit` for `key`.
fn remaining(envoy: &Envoy, key: &str, limit: &str) -> u64 {
    let r = request(
        envoy.port,
        "GET",
        "/tollgate/usage",
        &[("x-api-key", key.as_bytes())],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    body["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == limit)
        .unwrap_or_else(|| panic!("no limit {limit} in {body}"))["remaining"]
        .as_u64()
        .unwrap()
}

/// One limit across the fleet: what the store counted, and per Envoy what its usage endpoint
/// says is left and so what its lease holds (`remaining` − what the store has left).
#[derive(Debug)]
struct Fleet {
    counted: u64,
    remaining: Vec<u64>,
    leases: Vec<i64>,
    /// The store's count did not move while the Envoys were asked (a refill ahead landing
    /// meanwhile makes their answers incomparable with it).
    stable: bool,
}

impl Fleet {
    fn read(envoys: &[Envoy], redis: &Redis, consumer: &str, limit: &str, quota: u64) -> Fleet {
        let key = format!("{consumer}-key");
        let before = redis.counted("tollgate", consumer, limit);
        let remaining: Vec<u64> = envoys.iter().map(|e| remaining(e, &key, limit)).collect();
        let counted = redis.counted("tollgate", consumer, limit);
        let left = quota as i64 - counted as i64;
        let leases = remaining.iter().map(|r| *r as i64 - left).collect();
        Fleet {
            counted,
            remaining,
            leases,
            stable: before == counted,
        }
    }

    /// What the fleet has spent of the limit: counted by the store and not held in a lease.
    fn spent(&self) -> i64 {
        self.counted as i64 - self.leases.iter().sum::<i64>()
    }

    /// Polls (the last settlements and refills ahead land after the responses) until the
    /// store's count of `limit` is exactly `spent` plus what the leases hold, every lease
    /// holding 0 or more; fails with the last reading after 20 s.
    fn accounted(
        envoys: &[Envoy],
        redis: &Redis,
        consumer: &str,
        limit: &str,
        quota: u64,
        spent: u64,
    ) -> Fleet {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let fleet = Fleet::read(envoys, redis, consumer, limit, quota);
            if fleet.stable
                && fleet.counted <= quota
                && fleet.leases.iter().all(|l| *l >= 0)
                && fleet.spent() == spent as i64
            {
                eprintln!("{limit}: {fleet:?}, spent {spent}");
                return fleet;
            }
            assert!(
                Instant::now() < deadline,
                "{limit} (quota {quota}): the store's count is not what was spent ({spent}) \
                 plus what the leases hold: {fleet:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Sends chat requests to each Envoy in turn, one at a time, until it refuses (402 for its
/// 500 tokens); returns how many were admitted.
fn drain_chat(envoys: &[Envoy], key: &str) -> u64 {
    let mut admitted = 0;
    for (e, envoy) in envoys.iter().enumerate() {
        for i in 0.. {
            let r = chat(envoy, key, i % 2 == 0, false, 0);
            match r.response.status {
                200 => {
                    assert_eq!(client_usage(&r), Some((INPUT, OUTPUT)), "{r:?}");
                    admitted += 1;
                }
                402 => {
                    let left = refusal(&r, "tokens", RESERVED);
                    eprintln!("drain: Envoy {e} refused after {i}, {left} left");
                    assert!(left < RESERVED, "refused with {left} left");
                    break;
                }
                other => panic!("status {other} while draining Envoy {e}: {r:?}"),
            }
            assert!(admitted <= 100, "draining never ends");
        }
    }
    admitted
}

#[test]
fn three_envoys_never_admit_more_tokens_than_the_quota() {
    const QUOTA: u64 = 10_000;
    let redis = Redis::start_aof();
    let quotad = Quotad::fleet(&redis);
    within_one_window(86_400, 300.0, 2, |attempt| {
        let started = Instant::now();
        let consumer = format!("acme{attempt}");
        let key = format!("{consumer}-key");
        let fake = FakeLlm::start();
        let cfg = config(
            &consumer,
            json!([{"name": "tokens", "tokens": QUOTA, "window": "day"},
                   {"name": "daily", "requests": DAILY, "window": "day"}]),
            LEASE,
        );
        let envoys: Vec<Envoy> = (0..3).map(|_| gateway(&fake, &quotad, &cfg)).collect();

        // 64 at once over the three Envoys: streamed or not, HTTP/1.1 or HTTP/2, each held
        // 300 ms by the provider so that they overlap.
        let results: Vec<Posted> = thread::scope(|s| {
            let handles: Vec<_> = (0..64)
                .map(|i| {
                    let envoy = &envoys[i % 3];
                    let key = key.as_str();
                    s.spawn(move || chat(envoy, key, i % 2 == 0, i % 4 < 2, 300))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut admitted = 0;
        for r in &results {
            match r.response.status {
                200 => {
                    assert_eq!(client_usage(r), Some((INPUT, OUTPUT)), "{r:?}");
                    admitted += 1;
                }
                // The problem says what a request costs: its reservation.
                402 => {
                    refusal(r, "tokens", RESERVED);
                }
                other => panic!("status {other}: {r:?}"),
            }
        }
        let refused = 64 - admitted;
        eprintln!("burst: {admitted} admitted, {refused} refused");
        // 64 × 300 do not fit in 10 000.
        assert!(refused > 0, "nothing refused");
        let reported = fake.reported();
        assert_eq!(reported.responses, admitted, "{reported:?}");
        assert_eq!(reported.input + reported.output, admitted * USED);
        assert!(
            admitted * USED <= QUOTA,
            "the provider reported {} tokens for a quota of {QUOTA}",
            admitted * USED
        );
        // A refused request never reached the provider; every admitted one carried the cap.
        let reached: Vec<_> = fake
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect();
        assert_eq!(reached.len() as u64, admitted, "{reached:?}");
        assert!(reached.iter().all(|r| r.cap() == Some(CAP)), "{reached:?}");

        // Exactly accounted: every unit the store counted is spent by a settled request or
        // held in a lease (requests limit likewise, one per admitted request).
        let tokens = Fleet::accounted(&envoys, &redis, &consumer, "tokens", QUOTA, admitted * USED);
        Fleet::accounted(&envoys, &redis, &consumer, "daily", DAILY, admitted);
        eprintln!(
            "after the burst: Redis {} tokens, leases {:?}",
            tokens.counted, tokens.leases
        );

        // Drained: each Envoy sent requests until it refuses.
        let drained = drain_chat(&envoys, &key);
        let total = admitted + drained;
        let spent = total * USED;
        eprintln!("drain: {drained} more admitted; {total} in all, {spent} tokens reported");
        assert_eq!(fake.reported().input + fake.reported().output, spent);
        assert!(spent <= QUOTA, "{spent} tokens reported for {QUOTA}");
        // What the store still has is less than a reservation, and so is each lease.
        assert!(
            spent >= QUOTA - 4 * RESERVED,
            "{spent} tokens spent of {QUOTA}"
        );
        let tokens = Fleet::accounted(&envoys, &redis, &consumer, "tokens", QUOTA, spent);
        Fleet::accounted(&envoys, &redis, &consumer, "daily", DAILY, total);
        // Each Envoy refuses because what it can reach — the store's left and its own lease —
        // is less than a reservation.
        assert!(tokens.remaining.iter().all(|r| *r < RESERVED), "{tokens:?}");
        eprintln!(
            "at the end: Redis {} tokens, leases {:?}, stranded {} ({:?})",
            tokens.counted,
            tokens.leases,
            QUOTA - spent,
            started.elapsed()
        );
    });
}

#[test]
fn a_weighted_route_takes_its_cost_from_the_fleet_quota() {
    const QUOTA: u64 = 100;
    const COST: u64 = 10;
    let redis = Redis::start_aof();
    let quotad = Quotad::fleet(&redis);
    within_one_window(86_400, 300.0, 2, |attempt| {
        let started = Instant::now();
        let consumer = format!("acme{attempt}");
        let key = format!("{consumer}-key");
        let fake = FakeLlm::start();
        let cfg = config(
            &consumer,
            json!([{"name": "credits", "units": QUOTA, "unit": "credits", "window": "day"},
                   {"name": "daily", "requests": DAILY, "window": "day"}]),
            LEASE,
        );
        let envoys: Vec<Envoy> = (0..3).map(|_| gateway(&fake, &quotad, &cfg)).collect();

        // 30 at once over the three Envoys, for 10 that fit.
        let results: Vec<Posted> = thread::scope(|s| {
            let handles: Vec<_> = (0..30)
                .map(|i| {
                    let envoy = &envoys[i % 3];
                    let key = key.as_str();
                    s.spawn(move || image(envoy, key))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut admitted = 0;
        for r in &results {
            match r.response.status {
                200 => admitted += 1,
                402 => {
                    refusal(r, "credits", COST);
                }
                other => panic!("status {other}: {r:?}"),
            }
        }
        eprintln!("burst: {admitted} admitted of 30");
        assert!(admitted * COST <= QUOTA, "{admitted} images admitted");
        assert!(redis.counted("tollgate", &consumer, "credits") <= QUOTA);

        // Drained: each Envoy until it refuses.
        for (e, envoy) in envoys.iter().enumerate() {
            loop {
                let r = image(envoy, &key);
                match r.response.status {
                    200 => admitted += 1,
                    402 => {
                        let left = refusal(&r, "credits", COST);
                        eprintln!("drain: Envoy {e} refused with {left} left");
                        assert!(left < COST, "refused with {left} left");
                        break;
                    }
                    other => panic!("status {other} while draining Envoy {e}: {r:?}"),
                }
                assert!(admitted <= 100, "draining never ends");
            }
        }
        let credits = Fleet::accounted(
            &envoys,
            &redis,
            &consumer,
            "credits",
            QUOTA,
            admitted * COST,
        );
        Fleet::accounted(&envoys, &redis, &consumer, "daily", DAILY, admitted);
        eprintln!(
            "{admitted} images admitted; Redis {} credits, leases {:?} ({:?})",
            credits.counted,
            credits.leases,
            started.elapsed()
        );
        assert!(credits.remaining.iter().all(|r| *r < COST), "{credits:?}");
        // Nothing stranded in leases: the quota is spent to the last image.
        assert_eq!(admitted, QUOTA / COST, "{credits:?}");
        assert_eq!(credits.counted, QUOTA);
        let upstream = fake
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/images/generations")
            .count() as u64;
        assert_eq!(upstream, admitted, "a refused image never reached upstream");
    });
}

#[test]
fn with_lease_one_every_llm_request_is_held_for_the_store_and_still_rewritten() {
    const QUOTA: u64 = 2000;
    let redis = Redis::start_aof();
    let quotad = Quotad::fleet(&redis);
    within_one_window(86_400, 300.0, 2, |attempt| {
        let started = Instant::now();
        let consumer = format!("acme{attempt}");
        let key = format!("{consumer}-key");
        let fake = FakeLlm::start();
        let cfg = config(
            &consumer,
            json!([{"name": "tokens", "tokens": QUOTA, "window": "day"},
                   {"name": "daily", "requests": DAILY, "window": "day"}]),
            1,
        );
        let envoy = gateway(&fake, &quotad, &cfg);
        // With lease 1 the usage endpoint never calls the store (other servers count a look):
        // before the consumer's first answer it has no figures.
        let usage = request(
            envoy.port,
            "GET",
            "/tollgate/usage",
            &[("x-api-key", key.as_bytes())],
        );
        assert_eq!(usage.json()["limits"], json!([]), "{usage:?}");

        // One at a time. With lease 1 every grant is the shortfall: the first takes 500 from
        // the store; each settles to 300, its refund of 200 staying in the lease, so each later
        // one takes 300. The store has 2 000: 500 + 5 × 300 = 2 000, so six are admitted,
        // and the seventh finds 200 in the lease and nothing in the store.
        let mut admitted = 0;
        let refused = loop {
            let k = admitted + 1;
            let stream = k % 2 == 1;
            let before = if k == 1 {
                QUOTA
            } else {
                remaining(&envoy, &key, "tokens")
            };
            let calls = quotad.decisions();
            let r = chat(&envoy, &key, stream, false, 0);
            let calls = quotad.decisions() - calls;
            if r.response.status == 402 {
                break r;
            }
            assert_eq!(r.response.status, 200, "request {k}: {:?}", r.response);
            admitted = k;
            // The lease held nothing it could spend: the request waited at its body for the
            // store, then was resumed, priced and rewritten.
            assert!(calls >= 1, "request {k}: no store call");
            let seen = fake
                .requests()
                .into_iter()
                .rev()
                .find(|r| r.method == "POST")
                .unwrap();
            assert_eq!(seen.body["max_completion_tokens"], CAP, "{}", seen.body);
            if stream {
                assert_eq!(
                    seen.body["stream_options"]["include_usage"], true,
                    "{}",
                    seen.body
                );
            }
            assert_eq!(client_usage(&r), Some((INPUT, OUTPUT)), "{r:?}");
            // RateLimit: what was left, less this request's reservation.
            assert_eq!(
                r.response.remaining("tokens"),
                before - RESERVED,
                "request {k}: {:?}",
                r.response.header("ratelimit")
            );
            // Settled to 300: the refund went into the lease, and Redis has every grant.
            let settled = QUOTA - USED * k;
            let deadline = Instant::now() + Duration::from_secs(10);
            while remaining(&envoy, &key, "tokens") != settled {
                assert!(
                    Instant::now() < deadline,
                    "request {k}: usage shows {} left, not {settled}",
                    remaining(&envoy, &key, "tokens")
                );
                thread::sleep(Duration::from_millis(50));
            }
            assert_eq!(
                redis.counted("tollgate", &consumer, "tokens"),
                RESERVED + USED * (k - 1),
                "request {k}: what the store granted (after the first, the shortfall of 300)"
            );
            eprintln!(
                "request {k} (stream {stream}): admitted, {calls} store call(s), {settled} left"
            );
            assert!(admitted <= 20, "never refused");
        };
        let left = refusal(&refused, "tokens", RESERVED);
        eprintln!(
            "request {}: refused, {left} left ({:?})",
            admitted + 1,
            started.elapsed()
        );
        assert_eq!(admitted, 6, "500 + 5 × 300 = 2 000 granted");
        assert!(admitted * USED <= QUOTA);
        // The refund of the last one is in the lease; the store has nothing left.
        assert_eq!(left, RESERVED - USED);
        assert_eq!(redis.counted("tollgate", &consumer, "tokens"), QUOTA);
        assert_eq!(redis.counted("tollgate", &consumer, "daily"), admitted);
        assert_eq!(remaining(&envoy, &key, "tokens"), RESERVED - USED);
        let reported = fake.reported();
        assert_eq!(reported.input + reported.output, admitted * USED);
        assert_eq!(
            fake.requests()
                .iter()
                .filter(|r| r.method == "POST")
                .count() as u64,
            admitted,
            "the refused request never reached the provider"
        );
    });
}

#[test]
fn a_cost_header_settles_a_request_held_for_the_store_into_the_lease() {
    // `lease: 1`: every image waits for its own store call (held, then admitted from the
    // context that got quotad's answer). The upstream says each cost 7 of the 10 reserved:
    // the settlement belongs to the request's own context all the same, and its refund of 3
    // goes into this Envoy's lease.
    let redis = Redis::start_aof();
    let quotad = Quotad::fleet(&redis);
    within_one_window(86_400, 300.0, 2, |attempt| {
        let consumer = format!("acme{attempt}");
        let key = format!("{consumer}-key");
        let fake = FakeLlm::start();
        let mut cfg = config(
            &consumer,
            json!([{"name": "credits", "units": 100, "unit": "credits", "window": "day"}]),
            1,
        );
        cfg["routes"]["images"]["cost_headers"] = json!({"credits": "x-upstream-cost"});
        let envoy = gateway(&fake, &quotad, &cfg);
        let header = format!("x-api-key: {key}");
        for k in 1..=3u64 {
            let calls = quotad.decisions();
            let r = post(
                envoy.port,
                "/v1/images/generations",
                &[&header, "x-fake-status: 200", "x-fake-cost: 7"],
                b"{}",
                false,
            );
            assert_eq!(r.response.status, 200, "image {k}: {:?}", r.response);
            assert!(
                quotad.decisions() > calls,
                "image {k}: held for a store call"
            );
            assert_eq!(
                r.response.header("x-upstream-cost"),
                None,
                "{:?}",
                r.response
            );
            // Settled at 7: what is left is 100 - 7k (the store's figure plus the refunds the
            // lease holds), as the usage endpoint shows once the response is done.
            let settled = 100 - 7 * k;
            let deadline = Instant::now() + Duration::from_secs(10);
            while remaining(&envoy, &key, "credits") != settled {
                assert!(
                    Instant::now() < deadline,
                    "image {k}: {} left, not {settled}",
                    remaining(&envoy, &key, "credits")
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
        // The store granted 10, then 7 and 7 (each the shortfall after a refund of 3): 24.
        assert_eq!(redis.counted("tollgate", &consumer, "credits"), 24);
    });
}
