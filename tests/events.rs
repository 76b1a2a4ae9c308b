//! Usage events, threshold alerts and reminders, end to end: real Envoy (two workers) with the
//! release .wasm sends CloudEvents batches through a cluster to a test [`Sink`] that records
//! them and can be told to fail, hang or answer slowly.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tollgate_testkit::*;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

fn start(sink: &Sink, json: &str, concurrency: u32) -> Envoy {
    Envoy::start_with(Options {
        plugin: Some(plugin(json)),
        concurrency,
        clusters: vec![("sink".into(), sink.port)],
        args: vec!["--service-node".into(), "edge-1".into()],
        ..Options::default()
    })
}

/// Sends `n` requests with `key` on each of `threads` connections at once; the statuses.
fn load(envoy: &Envoy, key: &str, threads: usize, n: usize) -> Vec<Response> {
    let port = envoy.port;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let key = key.to_string();
            std::thread::spawn(move || {
                let mut conn = Conn::new(port);
                (0..n)
                    .map(|_| conn.get("/", &[("x-api-key", key.as_bytes())]))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

/// Accepted events of a type, one per id (a resend carries the same id: it must also carry
/// the same content).
fn unique(sink: &Sink, kind: &str) -> Vec<Value> {
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for event in sink.accepted() {
        if event["type"] != kind {
            continue;
        }
        let id = event["id"].as_str().unwrap().to_string();
        if let Some(seen) = by_id.get(&id) {
            assert_eq!(seen, &event, "two events with id {id} differ");
        }
        by_id.insert(id, event);
    }
    by_id.into_values().collect()
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Totals {
    admitted: u64,
    quota: u64,
    suspended: u64,
    requests: u64,
}

/// Usage per consumer, summed over the unique usage events.
fn usage(sink: &Sink) -> BTreeMap<String, Totals> {
    let mut out: BTreeMap<String, Totals> = BTreeMap::new();
    for e in unique(sink, "io.tollgate.usage") {
        let d = &e["data"];
        let t = out
            .entry(d["consumer"].as_str().unwrap().into())
            .or_default();
        t.admitted += d["admitted"].as_u64().unwrap();
        t.quota += d["refused"]["quota"].as_u64().unwrap();
        t.suspended += d["refused"]["suspended"].as_u64().unwrap();
        t.requests += d["requests"].as_u64().unwrap();
    }
    out
}

fn totals(admitted: u64, quota: u64, suspended: u64) -> Totals {
    Totals {
        admitted,
        quota,
        suspended,
        requests: admitted + quota + suspended,
    }
}

const PLANS: &str = r#"
  "plans": {
    "free":  {"limits": [{"name": "daily", "requests": 1000, "window": "day"}]},
    "trial": {"limits": [{"name": "daily", "requests": 10, "window": "day"}]}
  },
  "consumers": {
    "acme":    {"plan": "free",  "keys": ["acme-key"]},
    "wayne":   {"plan": "trial", "keys": ["wayne-key"]},
    "initech": {"plan": "free",  "keys": ["initech-key"], "status": "suspended"}
  }"#;

#[test]
fn usage_events_add_up_exactly_to_the_requests_sent() {
    let sink = Sink::start();
    let envoy = start(
        &sink,
        &format!(
            r#"{{ {PLANS}, "events": {{"cluster": "sink", "url": "http://events.test/ingest",
                 "authorization": "Bearer sink-secret", "interval": "1s"}} }}"#
        ),
        2,
    );
    // 4 connections at once (spread over both workers), for three consumers and a stranger.
    let acme = load(&envoy, "acme-key", 4, 10);
    let wayne = load(&envoy, "wayne-key", 4, 5);
    let initech = load(&envoy, "initech-key", 4, 2);
    let stranger = load(&envoy, "nobody", 2, 2);
    assert!(acme.iter().all(|r| r.status == 200));
    assert_eq!(wayne.iter().filter(|r| r.status == 200).count(), 10);
    assert_eq!(wayne.iter().filter(|r| r.status == 402).count(), 10);
    assert!(initech.iter().all(|r| r.status == 402), "{:?}", initech[0]);
    assert!(stranger.iter().all(|r| r.status == 401));

    let want: BTreeMap<String, Totals> = [
        ("acme".to_string(), totals(40, 0, 0)),
        ("initech".to_string(), totals(0, 0, 8)),
        ("wayne".to_string(), totals(10, 10, 0)),
    ]
    .into();
    poll(DEADLINE, "usage events adding up to the requests", || {
        (usage(&sink) == want).then_some(())
    });

    // The shape docs/billing.md documents, on every event.
    for e in unique(&sink, "io.tollgate.usage") {
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["source"], "tollgate/edge-1");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["id"].as_str().unwrap().len(), 32);
        let d = &e["data"];
        assert_eq!(e["subject"], d["consumer"]);
        assert_eq!(e["time"], d["interval_end"]);
        let start = d["interval_start"].as_str().unwrap();
        let end = d["interval_end"].as_str().unwrap();
        let (start, end) = (
            tollgate::time::parse_rfc3339(start).unwrap(),
            tollgate::time::parse_rfc3339(end).unwrap(),
        );
        assert_eq!(end - start, 1, "{e}");
        let plan = if d["consumer"] == "wayne" {
            "trial"
        } else {
            "free"
        };
        assert_eq!(d["plan"], plan);
        let refused: u64 = d["refused"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        let shadowed: u64 = d["shadowed"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(
            d["requests"].as_u64().unwrap(),
            d["admitted"].as_u64().unwrap() + refused + shadowed
        );
        let reasons: BTreeSet<&str> = d["refused"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            reasons,
            ["expired", "past_due", "quota", "store_error", "suspended"].into()
        );
    }
    for batch in sink.received() {
        assert_eq!(batch.path, "/ingest");
        assert_eq!(
            batch.header("host").or(batch.header(":authority")),
            Some("events.test")
        );
        assert_eq!(
            batch.header("content-type"),
            Some("application/cloudevents-batch+json")
        );
        assert_eq!(batch.header("authorization"), Some("Bearer sink-secret"));
    }
    assert!(
        !envoy.log().contains("sink-secret"),
        "the sink's authorization was logged"
    );
    // Both workers claimed a slot of their own (plus the main thread's VM).
    let slots: BTreeSet<String> = envoy
        .tollgate_log()
        .iter()
        .filter_map(|l| l.split("events: worker slot ").nth(1))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert!(slots.len() >= 2, "worker slots: {slots:?}");
}

#[test]
fn a_failing_sink_gets_every_event_again_with_the_same_id() {
    let sink = Sink::start();
    // 503, then an answer after Envoy's 5 s timeout (it arrives, but too late: resent), then
    // a hang (timed out), then 200.
    sink.script(&[
        SinkMode::Fail(503),
        SinkMode::Slow(Duration::from_secs(6)),
        SinkMode::Hang,
    ]);
    let envoy = start(
        &sink,
        &format!(
            r#"{{ {PLANS}, "events": {{"cluster": "sink", "url": "http://sink/", "interval": "1s"}} }}"#
        ),
        2,
    );
    // Traffic while the sink misbehaves: the statuses are what they always are.
    let mut sent: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut wayne_seen = 0;
    while sink.received().len() < 3 {
        for r in load(&envoy, "acme-key", 2, 3) {
            assert_eq!(r.status, 200, "{r:?}");
            sent.entry("acme").or_default().0 += 1;
        }
        for r in load(&envoy, "wayne-key", 1, 1) {
            wayne_seen += 1;
            let expected = if wayne_seen <= 10 { 200 } else { 402 };
            assert_eq!(r.status, expected, "{r:?}");
            let e = sent.entry("wayne").or_default();
            if r.status == 200 {
                e.0 += 1
            } else {
                e.1 += 1
            }
        }
        assert!(sent["acme"].0 < 2000, "the sink never got three batches");
        std::thread::sleep(Duration::from_millis(200));
    }
    let want: BTreeMap<String, Totals> = sent
        .iter()
        .map(|(c, (ok, quota))| (c.to_string(), totals(*ok, *quota, 0)))
        .collect();
    poll(DEADLINE, "every event accepted", || {
        (usage(&sink) == want).then_some(())
    });

    // Every event of a failed attempt was delivered later, with the same id.
    let accepted: BTreeSet<String> = sink
        .accepted()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let received = sink.received();
    for attempt in received
        .iter()
        .filter(|r| !matches!(r.mode, SinkMode::Accept))
    {
        for e in attempt.events() {
            assert!(
                accepted.contains(e["id"].as_str().unwrap()),
                "{e} was never delivered"
            );
        }
    }
    // The slow answer came too late for Envoy: its batch was sent again (same ids).
    let slow: Vec<String> = received
        .iter()
        .find(|r| matches!(r.mode, SinkMode::Slow(_)))
        .unwrap()
        .events()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let all = sink.accepted();
    for id in &slow {
        assert!(
            all.iter().filter(|e| e["id"] == id.as_str()).count() >= 2,
            "{id} was not resent"
        );
    }
    assert!(stat(&envoy, "wasmcustom.tollgate.events.failed_batches") >= 3);
    assert_eq!(stat(&envoy, "wasmcustom.tollgate.events.dropped"), 0);
    assert!(envoy.log().contains("events: the sink answered 503"));
}

#[test]
fn a_sink_down_gets_what_fit_in_the_buffer_and_the_metric_counts_the_rest() {
    let sink = Sink::start();
    sink.set_default(SinkMode::Fail(503));
    let consumers: String = (0..6)
        .map(|i| format!(r#""c{i}": {{"plan": "free", "keys": ["k{i}"]}}"#))
        .collect::<Vec<_>>()
        .join(",");
    // One worker, so that one buffer of 3 events holds what there is to hold.
    let envoy = start(
        &sink,
        &format!(
            r#"{{"plans": {{"free": {{"limits": [{{"name": "daily", "requests": 100, "window": "day"}}]}}}},
                "consumers": {{ {consumers} }},
                "events": {{"cluster": "sink", "url": "http://sink/", "interval": "1s", "buffer": 3}} }}"#
        ),
        1,
    );
    for i in 0..6 {
        assert_eq!(envoy.get_with_key(&format!("k{i}")).status, 200);
    }
    // Six events (one per consumer), three fit.
    poll(DEADLINE, "3 events dropped", || {
        (stat(&envoy, "wasmcustom.tollgate.events.dropped") == 3).then_some(())
    });
    assert!(envoy
        .log()
        .contains("events dropped (tollgate.events.dropped)"));
    sink.set_default(SinkMode::Accept);
    poll(DEADLINE, "the buffered events", || {
        (unique(&sink, "io.tollgate.usage").len() == 3).then_some(())
    });
    let got = usage(&sink);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.values().all(|t| *t == totals(1, 0, 0)), "{got:?}");
    assert_eq!(stat(&envoy, "wasmcustom.tollgate.events.dropped"), 3);
    assert_eq!(stat(&envoy, "wasmcustom.tollgate.events.sent"), 3);
}

#[test]
fn thresholds_fire_exactly_once_each_under_concurrent_load() {
    let sink = Sink::start();
    let envoy = start(
        &sink,
        r#"{"plans": {"metered": {"limits": [{"name": "daily", "requests": 50, "window": "day"}]},
                      "gold": {"limits": [{"name": "daily", "requests": 20, "window": "day"}], "alerts": [90]}},
            "consumers": {"acme": {"plan": "metered", "keys": ["acme-key"]},
                          "globex": {"plan": "gold", "keys": ["globex-key"]},
                          "ops": {"plan": "metered", "keys": ["ops-key"]}},
            "events": {"cluster": "sink", "url": "http://sink/", "interval": "1s", "alerts": [50, 80, 100]}}"#,
        2,
    );
    let acme = load(&envoy, "acme-key", 8, 10);
    let globex = load(&envoy, "globex-key", 8, 4);
    // The RateLimit fields stay exact: every admitted request got its own remaining count.
    for (responses, size) in [(&acme, 50u64), (&globex, 20)] {
        let mut remaining: Vec<u64> = responses
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| r.remaining("daily"))
            .collect();
        remaining.sort_unstable();
        assert_eq!(remaining, (0..size).collect::<Vec<_>>());
        assert_eq!(
            responses.iter().filter(|r| r.status == 402).count() as u64,
            responses.len() as u64 - size
        );
    }
    let crossed = || -> BTreeMap<(String, u64), Value> {
        unique(&sink, "io.tollgate.quota.threshold")
            .into_iter()
            .map(|e| {
                let key = (
                    e["data"]["consumer"].as_str().unwrap().to_string(),
                    e["data"]["threshold"].as_u64().unwrap(),
                );
                (key, e)
            })
            .collect()
    };
    poll(DEADLINE, "four threshold events", || {
        (crossed().len() == 4).then_some(())
    });
    // Later events prove the timer ran on after the crossings: still one event each.
    assert_eq!(envoy.get_with_key("ops-key").status, 200);
    poll(DEADLINE, "ops's usage event", || {
        usage(&sink).contains_key("ops").then_some(())
    });
    let events = unique(&sink, "io.tollgate.quota.threshold");
    assert_eq!(events.len(), 4, "{events:#?}");
    let got = crossed();
    for (consumer, threshold, used, requests, plan) in [
        ("acme", 50, 25, 50, "metered"),
        ("acme", 80, 40, 50, "metered"),
        ("acme", 100, 50, 50, "metered"),
        ("globex", 90, 18, 20, "gold"),
    ] {
        let e = &got[&(consumer.to_string(), threshold)];
        let d = &e["data"];
        assert_eq!(
            (d["used"].as_u64(), d["requests"].as_u64()),
            (Some(used), Some(requests)),
            "{e}"
        );
        assert_eq!(
            (d["plan"].as_str(), d["limit"].as_str()),
            (Some(plan), Some("daily"))
        );
        assert_eq!(e["subject"], consumer);
        let reset = tollgate::time::parse_rfc3339(d["reset"].as_str().unwrap()).unwrap();
        assert_eq!(
            reset % 86_400,
            0,
            "a day window resets at midnight UTC: {e}"
        );
    }
    assert_eq!(
        stat(&envoy, "wasmcustom.tollgate.plan.metered.near_limit"),
        3
    );
    assert_eq!(stat(&envoy, "wasmcustom.tollgate.plan.gold.near_limit"), 1);
    assert_eq!(stat(&envoy, "wasmcustom.tollgate.events.threshold"), 4);
}

#[test]
fn reminders_fire_once_per_consumer_and_lead_time() {
    let sink = Sink::start();
    let now = unix_now() as i64;
    let at = tollgate::time::format_rfc3339;
    // `soon` is inside its 1-day lead time (sent at once) and reaches the 1-hour one in 3 s;
    // `late` is already inside both (only the nearer, 1 h, is sent); `gone` has expired.
    let json = format!(
        r#"{{"plans": {{"free": {{"limits": [{{"name": "daily", "requests": 100, "window": "day"}}]}}}},
            "consumers": {{"soon": {{"plan": "free", "keys": ["s"], "expires_at": "{}"}},
                          "late": {{"plan": "free", "keys": ["l"], "expires_at": "{}"}},
                          "gone": {{"plan": "free", "keys": ["g"], "expires_at": "{}"}},
                          "ops": {{"plan": "free", "keys": ["o"]}}}},
            "events": {{"cluster": "sink", "url": "http://sink/", "interval": "1s", "reminders": ["1d", "1h"]}}}}"#,
        at(now + 3600 + 3),
        at(now + 1800),
        at(now - 10),
    );
    let envoy = start(&sink, &json, 2);
    let reminders = || -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = unique(&sink, "io.tollgate.subscription.reminder")
            .iter()
            .map(|e| {
                (
                    e["data"]["consumer"].as_str().unwrap().to_string(),
                    e["data"]["before_seconds"].as_u64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    poll(DEADLINE, "three reminders", || {
        (reminders().len() == 3).then_some(())
    });
    // The timer runs on (a usage event after the reminders): still one reminder each.
    assert_eq!(envoy.get_with_key("o").status, 200);
    poll(DEADLINE, "ops's usage event", || {
        usage(&sink).contains_key("ops").then_some(())
    });
    assert_eq!(
        reminders(),
        [
            ("late".to_string(), 3600),
            ("soon".to_string(), 3600),
            ("soon".to_string(), 86_400)
        ]
    );
    let soon = unique(&sink, "io.tollgate.subscription.reminder")
        .into_iter()
        .find(|e| e["subject"] == "soon" && e["data"]["before_seconds"] == 3600)
        .unwrap();
    let sent = tollgate::time::parse_rfc3339(soon["time"].as_str().unwrap()).unwrap();
    assert!(sent >= now + 3, "the 1-hour reminder came early: {soon}");
    assert_eq!(soon["data"]["expires_at"], at(now + 3600 + 3));
    assert_eq!(soon["data"]["plan"], "free");
    assert_eq!(stat(&envoy, "wasmcustom.tollgate.events.reminder"), 3);
}

// Configuration pushes (LDS, the pattern of tests/live_reload.rs): Envoy replaces every
// worker's root context, serves the old connections with the old one for its drain time
// (`--drain-time-s`, 600 s by default: what envoy/live-reload/ runs with), then stops it.
// Whatever it had not sent must reach the sink anyway, counted exactly once.

const LISTENERS: &str = "envoy/live-reload/listeners.yaml";

/// The plugin configuration of a push: three consumers on a plan whose daily limit is
/// `limit` (the change a push makes, seen in `RateLimit-Policy`), and `events` (a JSON
/// object, or `None` for no `events` block).
fn pushed(limit: u64, events: Option<&str>) -> String {
    let events = events.map_or(String::new(), |e| format!(r#", "events": {e}"#));
    plugin(&format!(
        r#"{{"plans": {{"free": {{"limits": [{{"name": "daily", "requests": {limit}, "window": "day"}}]}}}},
            "consumers": {{"acme": {{"plan": "free", "keys": ["acme-key"]}},
                          "globex": {{"plan": "free", "keys": ["globex-key"]}},
                          "initech": {{"plan": "free", "keys": ["initech-key"]}}}}
            {events}}}"#
    ))
}

const CONSUMERS: [&str; 3] = ["acme", "globex", "initech"];

/// Envoy on envoy/live-reload/ with a sink cluster; `drain` seconds of `--drain-time-s`
/// (`None`: Envoy's default, as the examples run).
fn live(sink: &Sink, plugin: String, drain: Option<u32>) -> Envoy {
    let mut args = vec!["--service-node".to_string(), "edge-1".to_string()];
    if let Some(drain) = drain {
        args.extend(["--drain-time-s".to_string(), drain.to_string()]);
    }
    Envoy::start_with(Options {
        bootstrap: "envoy/live-reload/bootstrap.yaml".into(),
        files: vec![LISTENERS.into()],
        relocate: Some("target/live-reload".into()),
        file_ports: (10200, 10201, 9921),
        plugin: Some(plugin),
        concurrency: 2,
        clusters: vec![("sink".into(), sink.port)],
        args,
        ..Options::default()
    })
}

/// Requests a consumer sent, by the configuration (daily limit) that answered them.
#[derive(Default)]
struct Sent {
    /// (consumer, limit that served it) → admitted.
    admitted: BTreeMap<(String, u64), u64>,
}

impl Sent {
    /// `n` requests of each consumer, each on a new connection (a worker of the listener
    /// that is current when it connects).
    fn traffic(&mut self, envoy: &Envoy, n: usize) {
        for _ in 0..n {
            for consumer in CONSUMERS {
                self.one(envoy, consumer);
            }
        }
    }

    /// One request; the daily limit its answer names.
    fn one(&mut self, envoy: &Envoy, consumer: &str) -> u64 {
        let r = envoy.get_with_key(&format!("{consumer}-key"));
        assert_eq!(r.status, 200, "{r:?}");
        let policy = r.header("ratelimit-policy").unwrap_or_default();
        let limit: u64 = policy
            .split(';')
            .find_map(|p| p.strip_prefix("q="))
            .and_then(|q| q.parse().ok())
            .unwrap_or_else(|| panic!("no daily limit in {r:?}"));
        *self
            .admitted
            .entry((consumer.to_string(), limit))
            .or_default() += 1;
        limit
    }

    /// Polls with `consumer`'s requests until the configuration with `limit` answers.
    fn until_served_by(&mut self, envoy: &Envoy, limit: u64) {
        poll(
            DEADLINE,
            &format!("the configuration with limit {limit}"),
            || (self.one(envoy, "acme") == limit).then_some(()),
        );
    }

    /// What the sink must report: the admitted requests of the configurations with `billed`
    /// limits (those with an `events` block).
    fn billed(&self, billed: &[u64]) -> BTreeMap<String, Totals> {
        let mut out: BTreeMap<String, Totals> = BTreeMap::new();
        for ((consumer, limit), n) in &self.admitted {
            if billed.contains(limit) {
                let t = out.entry(consumer.clone()).or_default();
                t.admitted += n;
                t.requests += n;
            }
        }
        out
    }
}

/// Renames the edited listeners file over the watched one, as envoy/live-reload/README.md does.
fn push(envoy: &Envoy, plugin: &str) {
    envoy.replace_file(LISTENERS, Some(plugin));
}

/// Waits until the old configuration's VMs have stopped: its filter chains drained and removed,
/// and at least one VM said what it did with its unsent events (`events: VM stopping…`, a
/// line both the lossy and the handover versions log when there was something unsent).
fn old_vms_stopped(envoy: &Envoy, before: usize) {
    poll(DEADLINE, "the old configuration's VMs stopping", || {
        let draining = stat(envoy, "listener_manager.total_filter_chains_draining");
        let stopping = stopping_lines(envoy);
        (draining == 0 && stopping > before).then_some(())
    });
}

fn stopping_lines(envoy: &Envoy) -> usize {
    envoy
        .tollgate_log()
        .iter()
        .filter(|l| l.contains("events: VM stopping"))
        .count()
}

/// No usage event was accepted twice (a resend happens only after a lost answer, and none is
/// lost in these tests), and copies of an id are identical (checked by [`unique`]).
fn each_usage_event_once(sink: &Sink) {
    let ids: Vec<String> = sink
        .accepted()
        .iter()
        .filter(|e| e["type"] == "io.tollgate.usage")
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), distinct.len(), "a usage event was sent twice");
    unique(sink, "io.tollgate.usage");
}

/// Polls the sink until its usage events add up to `want`; says what they added up to if not.
fn usage_adds_up(sink: &Sink, want: &BTreeMap<String, Totals>) {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let got = usage(sink);
        if got == *want {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "after {DEADLINE:?}, the usage events add up to\n{got:?}\ninstead of\n{want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const EVENTS_V1: &str = r#"{"cluster": "sink", "url": "http://sink/v1", "interval": "1s"}"#;

#[test]
fn a_push_with_the_examples_drain_time_loses_no_usage() {
    let sink = Sink::start();
    let envoy = live(&sink, pushed(1000, Some(EVENTS_V1)), None);
    let mut sent = Sent::default();
    sent.traffic(&envoy, 12);
    // Only a plan's limit changes; the events block is the same.
    push(&envoy, &pushed(2000, Some(EVENTS_V1)));
    sent.until_served_by(&envoy, 2000);
    sent.traffic(&envoy, 3);
    let want = sent.billed(&[1000, 2000]);
    assert_eq!(want["globex"].admitted, 15);
    usage_adds_up(&sink, &want);
    each_usage_event_once(&sink);
}

#[test]
fn a_push_with_a_short_drain_hands_the_unsent_events_over() {
    let sink = Sink::start();
    // The old VMs stop 1 s after the push, with events the failing sink did not take.
    sink.set_default(SinkMode::Fail(503));
    let envoy = live(&sink, pushed(1000, Some(EVENTS_V1)), Some(1));
    let mut sent = Sent::default();
    sent.traffic(&envoy, 12);
    poll(DEADLINE, "a failed batch", || {
        (!sink.received().is_empty()).then_some(())
    });
    push(&envoy, &pushed(2000, Some(EVENTS_V1)));
    sent.until_served_by(&envoy, 2000);
    old_vms_stopped(&envoy, 0);
    sink.set_default(SinkMode::Accept);
    sent.traffic(&envoy, 3);
    let want = sent.billed(&[1000, 2000]);
    usage_adds_up(&sink, &want);
    each_usage_event_once(&sink);
    // Every event the sink refused before the push was accepted after it, under its own id.
    let accepted: BTreeSet<String> = sink
        .accepted()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let refused: BTreeSet<String> = sink
        .received()
        .iter()
        .filter(|r| matches!(r.mode, SinkMode::Fail(_)))
        .flat_map(|r| r.events())
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!refused.is_empty());
    assert!(
        refused.is_subset(&accepted),
        "refused and never accepted: {:?}",
        refused.difference(&accepted).collect::<Vec<_>>()
    );
    // They went through shared data: every event handed over was taken over.
    let log = envoy.tollgate_log().join("\n");
    assert!(
        log.contains("unsent events handed over through shared data"),
        "{log}"
    );
    assert!(log.contains("events: took over"), "{log}");
    poll(DEADLINE, "every handed-over event taken over", || {
        let handed = stat(&envoy, "wasmcustom.tollgate.events.handed_over");
        (handed > 0 && handed == stat(&envoy, "wasmcustom.tollgate.events.taken_over"))
            .then_some(())
    });
}

#[test]
fn a_batch_in_flight_when_the_vm_stops_is_awaited_then_handed_over() {
    let sink = Sink::start();
    // The sink takes batches and never answers: Envoy times each call out after 5 s.
    sink.set_default(SinkMode::Hang);
    let envoy = live(&sink, pushed(1000, Some(EVENTS_V1)), Some(1));
    let mut sent = Sent::default();
    sent.traffic(&envoy, 12);
    poll(DEADLINE, "a batch in flight", || {
        (!sink.received().is_empty()).then_some(())
    });
    push(&envoy, &pushed(2000, Some(EVENTS_V1)));
    sent.until_served_by(&envoy, 2000);
    old_vms_stopped(&envoy, 0);
    sink.set_default(SinkMode::Accept);
    let want = sent.billed(&[1000, 2000]);
    usage_adds_up(&sink, &want);
    each_usage_event_once(&sink);
    // The stopped root context waited: Envoy delivered the time-out of its call to it, and it
    // settled its record (nothing delivered, all of it claimable) before the claim.
    let log = envoy.tollgate_log().join("\n");
    assert!(
        log.contains("waiting for the answer to the batch in flight"),
        "{log}"
    );
    assert!(log.contains("VM stopping: last batch failed"), "{log}");
}

#[test]
fn a_push_without_events_keeps_them_for_the_push_that_brings_a_new_sink() {
    let sink = Sink::start();
    sink.set_default(SinkMode::Fail(503));
    let envoy = live(&sink, pushed(1000, Some(EVENTS_V1)), Some(1));
    let mut sent = Sent::default();
    sent.traffic(&envoy, 12);
    poll(DEADLINE, "a failed batch", || {
        (!sink.received().is_empty()).then_some(())
    });
    // No events block: the old VMs hand their events over, and nobody takes them (requests
    // served meanwhile are not billed: no events block, no usage events).
    push(&envoy, &pushed(2000, None));
    sent.until_served_by(&envoy, 2000);
    old_vms_stopped(&envoy, 0);
    sink.set_default(SinkMode::Accept);
    sent.traffic(&envoy, 2);
    // Another sink path and interval: the events of the first configuration, kept in shared
    // data, go to the new one, unchanged (ids, source, intervals).
    push(
        &envoy,
        &pushed(
            3000,
            Some(r#"{"cluster": "sink", "url": "http://sink/v3", "interval": "2s"}"#),
        ),
    );
    sent.until_served_by(&envoy, 3000);
    sent.traffic(&envoy, 3);
    let want = sent.billed(&[1000, 3000]);
    poll(
        DEADLINE,
        "usage events adding up to the billed requests",
        || (usage(&sink) == want).then_some(()),
    );
    each_usage_event_once(&sink);
    let failed: BTreeSet<String> = sink
        .received()
        .iter()
        .filter(|r| matches!(r.mode, SinkMode::Fail(_)))
        .flat_map(|r| r.events())
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let accepted_at = |path: &str| -> BTreeSet<String> {
        sink.received()
            .iter()
            .filter(|r| r.mode == SinkMode::Accept && r.path == path)
            .flat_map(|r| r.events())
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let v3 = accepted_at("/v3");
    assert!(!failed.is_empty());
    assert!(failed.is_subset(&v3), "{failed:?} not all delivered to /v3");
    assert!(accepted_at("/v1").is_empty());
}
