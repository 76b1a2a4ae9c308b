//! Unit tests of [`crate::events`] (kept apart so that the module itself reads in one go).

use super::*;
use crate::config::events::{DEFAULT_BATCH, DEFAULT_BUFFER};
use crate::config::ConfigError;
use crate::store::create_if_missing;
use crate::window::Bounds;

fn config(events: &str) -> Result<Config, ConfigError> {
    config_with(events, "")
}

fn config_with(events: &str, pro: &str) -> Result<Config, ConfigError> {
    Config::from_json(
        format!(
            r#"{{"plans": {{"free": {{"limits": [{{"name": "daily", "requests": 10, "window": "day"}}]}},
                           "pro": {{"limits": [{{"name": "monthly", "requests": 1000, "window": "month"}}] {pro}}}}},
                "consumers": {{"acme": {{"plan": "free", "keys": ["k1"], "expires_at": "2026-12-31T00:00:00Z"}},
                               "wayne": {{"plan": "pro", "keys": ["k2"]}}}}
                {events}}}"#
        )
        .as_bytes(),
    )
}

#[test]
fn a_configuration_without_events_has_none() {
    assert!(config("").unwrap().events.is_none());
}

#[test]
fn the_events_block_compiles_with_defaults() {
    let c = config_with(
        r#", "events": {"cluster": "sink", "url": "http://sink", "alerts": [100, 80], "reminders": ["1d", "7d"]}"#,
        r#", "alerts": [50]"#,
    )
    .unwrap();
    let e = c.events.unwrap();
    assert_eq!((e.path.as_str(), e.authority.as_str()), ("/", "sink"));
    let o = config(
        r#", "events": {"cluster": "c", "url": "https://om.example.com:8443/api/v1/events?x=1"}"#,
    )
    .unwrap()
    .events
    .unwrap();
    assert_eq!(
        (o.authority.as_str(), o.path.as_str()),
        ("om.example.com:8443", "/api/v1/events?x=1")
    );
    assert_eq!(
        (e.interval, e.buffer, e.batch),
        (10, DEFAULT_BUFFER, DEFAULT_BATCH)
    );
    assert_eq!(e.alerts, vec![vec![80, 100], vec![50]]);
    assert_eq!(e.reminders, vec![7 * 86_400, 86_400]);
}

#[test]
fn bad_events_fields_are_named() {
    for (block, field) in [
        (r#"{"cluster": "", "url": "http://s"}"#, "events.cluster"),
        (r#"{"cluster": "s", "url": "sink/events"}"#, "events.url"),
        (r#"{"cluster": "s", "url": "http:///events"}"#, "events.url"),
        (
            r#"{"cluster": "s", "url": "http://s/", "interval": "0s"}"#,
            "events.interval",
        ),
        (
            r#"{"cluster": "s", "url": "http://s/", "interval": "2h"}"#,
            "events.interval",
        ),
        (
            r#"{"cluster": "s", "url": "http://s/", "buffer": 0}"#,
            "events.buffer",
        ),
        (
            r#"{"cluster": "s", "url": "http://s/", "alerts": [0]}"#,
            "events.alerts[0]",
        ),
        (
            r#"{"cluster": "s", "url": "http://s/", "alerts": [80, 101]}"#,
            "events.alerts[1]",
        ),
        (
            r#"{"cluster": "s", "url": "http://s/", "alerts": [80, 80]}"#,
            "events.alerts[1]",
        ),
        (
            r#"{"cluster": "s", "url": "http://s/", "reminders": ["soon"]}"#,
            "events.reminders[0]",
        ),
        (
            r#"{"cluster": "s", "url": "http://s/", "reminders": ["1d", "24h"]}"#,
            "events.reminders[1]",
        ),
        (
            r#"{"cluster": "s", "url": "http://s/", "authorization": "x\ny"}"#,
            "events.authorization",
        ),
        (
            r#"{"cluster": "s", "url": "http://s/", "unknown": 1}"#,
            "events",
        ),
    ] {
        let e = config(&format!(r#", "events": {block}"#)).unwrap_err();
        assert!(e.0.starts_with(field), "{block}: {e}");
    }
}

#[test]
fn plan_alerts_are_checked_and_need_an_events_block() {
    let e = config_with(
        r#", "events": {"cluster": "s", "url": "http://s/"}"#,
        r#", "alerts": [120]"#,
    )
    .unwrap_err();
    assert!(e.0.starts_with("plans.pro.alerts[0]"), "{e}");
    let e = config_with("", r#", "alerts": [80]"#).unwrap_err();
    assert!(e.0.starts_with("plans.pro.alerts: "), "{e}");
}

#[test]
fn the_authorization_is_never_printed() {
    let c = config(
        r#", "events": {"cluster": "s", "url": "http://s/", "authorization": "Bearer hunter2"}"#,
    )
    .unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    let e = config(
        r#", "events": {"cluster": "s", "url": "http://s/", "authorization": "hunter2\u0001"}"#,
    )
    .unwrap_err();
    assert!(!e.0.contains("hunter2"), "{e}");
}

#[test]
fn the_tally_closes_each_interval_exactly_once() {
    let mut t = Tally::new(3, 10);
    let allowed = || [Metric::Allowed].into_iter();
    t.record(0, 100, allowed());
    t.record(0, 109, allowed());
    t.record(2, 105, [Metric::Refused(Reason::Quota)].into_iter());
    t.record(0, 110, allowed());
    assert!(
        t.close(109, false).is_empty(),
        "interval 100-110 is still open"
    );
    let mut closed = t.close(110, false);
    closed.sort_by_key(|c| c.consumer);
    assert_eq!(closed.len(), 2);
    assert_eq!(
        (closed[0].consumer, closed[0].start, closed[0].end),
        (0, 100, 110)
    );
    assert_eq!(closed[0].counts.admitted, 2);
    assert_eq!(closed[1].counts.refused, [1, 0, 0, 0, 0]);
    assert!(t.close(111, false).is_empty(), "closed once");
    let last = t.close(125, false);
    assert_eq!(
        (last.len(), last[0].start, last[0].counts.admitted),
        (1, 110, 1)
    );
}

#[test]
fn a_late_timer_still_closes_intervals_apart() {
    let mut t = Tally::new(1, 1);
    for now in 0..3 {
        t.record(0, now, [Metric::Allowed, Metric::StoreFailed].into_iter());
    }
    let closed = t.close(3, false);
    assert_eq!(
        closed.iter().map(|c| c.start).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(closed.iter().all(|c| c.counts.total() == 1));
    // Shadowed and closing everything (reconfiguration).
    t.record(0, 3, [Metric::Shadowed(Reason::Expired)].into_iter());
    let all = t.close(3, true);
    assert_eq!(all[0].counts.shadowed, [0, 0, 1, 0, 0]);
}

fn usage(used: u64, requests: u64) -> Usage {
    Usage {
        used,
        requests,
        bounds: Bounds {
            start: 0,
            end: 86_400,
        },
        violated: false,
        cost: 1,
    }
}

#[test]
fn each_threshold_is_crossed_by_exactly_one_count() {
    assert_eq!(threshold_count(10, 80), 8);
    assert_eq!(threshold_count(3, 50), 2);
    assert_eq!(threshold_count(1, 1), 1);
    assert_eq!(
        threshold_count(999_999_999_999_999, 100),
        999_999_999_999_999
    );
    let mut hits = Vec::new();
    for used in 1..=10 {
        crossings(&[50, 80, 100], 7, &[usage(used, 10)], 5, &mut hits);
    }
    let seen: Vec<(u8, u64)> = hits.iter().map(|c| (c.threshold, c.used)).collect();
    assert_eq!(seen, [(50, 5), (80, 8), (100, 10)]);
    let mut tiny = Vec::new();
    crossings(&[80, 100], 0, &[usage(1, 1)], 0, &mut tiny);
    assert_eq!(
        tiny.len(),
        2,
        "both thresholds are reached by the only request"
    );
}

#[test]
fn reminders_are_due_once_and_stale_ones_collapse_to_the_nearest() {
    let c = config("").unwrap();
    let expires = c.consumers[0].expires_at.unwrap();
    let day = 86_400;
    let mut r = Reminders::new(&c, &[7 * day, day], expires - 30 * day);
    assert_eq!(r.len(), 2);
    assert!(r.due(expires - 8 * day).is_empty());
    assert_eq!(r.due(expires - 7 * day)[0].before, 7 * day);
    assert!(r.due(expires - 6 * day).is_empty());
    assert_eq!(r.due(expires - 1).len(), 1);
    assert!(r.is_empty());
    // Configured 3 days before expiry: the 7-day reminder is stale, only... nothing is
    // due yet but the 1-day one (the 7-day one is the nearest due: sent now).
    let mut late = Reminders::new(&c, &[7 * day, day], expires - 3 * day);
    assert_eq!(late.due(expires - 3 * day)[0].before, 7 * day);
    assert_eq!(late.due(expires - day)[0].before, day);
    // Configured 12 hours before expiry: only the 1-day reminder.
    let mut last = Reminders::new(&c, &[7 * day, day], expires - day / 2);
    let due = last.due(expires - day / 2);
    assert_eq!((due.len(), due[0].before), (1, day));
    assert!(
        Reminders::new(&c, &[day], expires).is_empty(),
        "already expired"
    );
}

fn pending(n: usize) -> Pending {
    Pending {
        id: format!("id{n}"),
        json: format!("{{\"n\":{n}}}"),
    }
}

#[test]
fn the_outbox_keeps_a_failed_batch_and_backs_off() {
    let mut o = Outbox::new(3);
    assert!(o.push(pending(1)) && o.push(pending(2)) && o.push(pending(3)));
    assert!(!o.push(pending(4)), "full: dropped");
    let (body, n) = o.next_batch(0, 2).unwrap();
    assert_eq!((body.as_str(), n), ("[{\"n\":1},{\"n\":2}]", 2));
    assert!(o.next_batch(0, 2).is_none(), "one batch in flight");
    assert_eq!(o.failed(0), 1);
    assert!(o.next_batch(0, 2).is_none(), "backing off");
    let (again, _) = o.next_batch(1, 2).unwrap();
    assert_eq!(again, body, "the same events again, same ids");
    assert_eq!(o.failed(1), 2);
    assert_eq!(o.failed(3), 4);
    for _ in 0..10 {
        o.failed(0);
    }
    assert_eq!(o.failed(0), MAX_BACKOFF);
    o.next_batch(100, 2).unwrap();
    assert_eq!(o.delivered(), 2);
    assert_eq!(o.ids().collect::<Vec<_>>(), ["id3"]);
    assert_eq!(
        o.next_batch(100, 2).unwrap().1,
        1,
        "no backoff after a success"
    );
}

#[test]
fn a_claim_is_won_once_and_worker_slots_are_unique() {
    let store = crate::store::MemoryStore::new();
    let key = reminder_key("acme");
    assert!(
        claim(&store, &key, "1 2\n").is_err(),
        "the key must exist first"
    );
    create_if_missing(&store, &key, b"\n").unwrap();
    assert!(claim(&store, &key, "1 2\n").unwrap());
    assert!(!claim(&store, &key, "1 2\n").unwrap());
    assert!(claim(&store, &key, "1 3\n").unwrap());
    create_if_missing(&store, &key, b"\n").unwrap();
    assert!(
        !claim(&store, &key, "1 3\n").unwrap(),
        "ensure never overwrites"
    );
    create_if_missing(&store, &workers_key(), b"77 0").unwrap();
    assert_eq!(take_worker_slot(&store).unwrap(), ("77".into(), 0));
    assert_eq!(take_worker_slot(&store).unwrap(), ("77".into(), 1));
}

#[test]
fn ids_are_deterministic_and_name_what_they_describe() {
    let c = config("").unwrap();
    let origin = Origin {
        instance: "e1".into(),
        incarnation: "42".into(),
        worker: 1,
    };
    let closed = Closed {
        consumer: 0,
        start: 100,
        end: 110,
        counts: Counts {
            admitted: 3,
            refused: [1, 0, 0, 0, 0],
            shadowed: [0; 5],
        },
        tokens: Vec::new(),
    };
    let a = usage_event(&c, &origin, &closed);
    assert_eq!(a, usage_event(&c, &origin, &closed));
    let other_worker = Origin {
        worker: 2,
        ..origin.clone()
    };
    assert_ne!(a.id, usage_event(&c, &other_worker, &closed).id);
    let later = Closed {
        start: 110,
        end: 120,
        ..closed.clone()
    };
    assert_ne!(a.id, usage_event(&c, &origin, &later).id);
    // The document, byte for byte: members in the documented order, compact JSON.
    assert_eq!(
        a.json,
        format!(
            "{{\"specversion\":\"1.0\",\"id\":\"{}\",\"source\":\"tollgate/e1\",\
             \"type\":\"io.tollgate.usage\",\"subject\":\"acme\",\"time\":\"1970-01-01T00:01:50Z\",\
             \"datacontenttype\":\"application/json\",\"data\":{{\"consumer\":\"acme\",\
             \"plan\":\"free\",\"interval_start\":\"1970-01-01T00:01:40Z\",\
             \"interval_end\":\"1970-01-01T00:01:50Z\",\"requests\":4,\"admitted\":3,\
             \"refused\":{{\"quota\":1,\"suspended\":0,\"expired\":0,\"past_due\":0,\
             \"store_error\":0}},\"shadowed\":{{\"quota\":0,\"suspended\":0,\"expired\":0,\
             \"past_due\":0,\"store_error\":0}}}}}}",
            a.id
        )
    );
    let v: serde_json::Value = serde_json::from_str(&a.json).unwrap();
    assert_eq!(v["specversion"], "1.0");
    assert_eq!(v["type"], USAGE_TYPE);
    assert_eq!(v["subject"], "acme");
    assert_eq!(v["source"], "tollgate/e1");
    assert_eq!(v["data"]["plan"], "free");
    assert_eq!(v["data"]["requests"], 4);
    assert_eq!(v["data"]["admitted"], 3);
    assert_eq!(v["data"]["refused"]["quota"], 1);
    assert_eq!(v["data"]["interval_start"], "1970-01-01T00:01:40Z");
    let x = Crossing {
        consumer: 0,
        limit: 0,
        threshold: 80,
        used: 8,
        requests: 10,
        window_start: 0,
        window_end: 86_400,
        at: 5,
    };
    let t = threshold_event(&c, &origin, &x);
    assert_eq!(
        t.id,
        threshold_event(&c, &other_worker, &x).id,
        "not per worker"
    );
    let v: serde_json::Value = serde_json::from_str(&t.json).unwrap();
    assert_eq!(
        (v["data"]["limit"].as_str(), v["data"]["threshold"].as_u64()),
        (Some("daily"), Some(80))
    );
    assert_eq!(v["data"]["reset"], "1970-01-02T00:00:00Z");
}

#[test]
fn settled_tokens_are_tallied_per_consumer_and_model_and_reported_with_the_interval() {
    let json = r#"{"plans": {"free": {"limits": [{"name": "t", "tokens": 1000, "window": "day"}]}},
                   "consumers": {"acme": {"plan": "free", "keys": ["a"]}, "bob": {"plan": "free", "keys": ["b"]}},
                   "llm": {"models": {"small": {}, "*": {}}},
                   "events": {"cluster": "sink", "url": "http://sink/"}}"#;
    let c = Config::from_json(json.as_bytes()).unwrap();
    let mut t = Tally::new(2, 10);
    let tokens = |input, cached_input, output| {
        Some(crate::llm::Tokens {
            input,
            cached_input,
            output,
        })
    };
    t.record_tokens(0, 0, 101, tokens(10, 2, 5), 17);
    t.record_tokens(0, 0, 102, tokens(1, 0, 1), 2);
    t.record_tokens(0, 1, 103, None, 500);
    t.record_tokens(1, 1, 104, tokens(3, 0, 3), 6);
    // The next interval is another event.
    t.record_tokens(0, 0, 111, tokens(1, 1, 1), 3);
    let closed = t.close(110, false);
    assert_eq!(closed.len(), 2);
    let acme = closed.iter().find(|c| c.consumer == 0).unwrap();
    assert_eq!(
        acme.counts,
        Counts::default(),
        "no request of its own in the interval"
    );
    assert_eq!(
        acme.tokens,
        [
            (
                0,
                TokenCounts {
                    requests: 2,
                    input: 11,
                    cached_input: 2,
                    output: 6,
                    units: 19,
                    unreported: 0
                }
            ),
            (
                1,
                TokenCounts {
                    requests: 1,
                    units: 500,
                    unreported: 1,
                    ..TokenCounts::default()
                }
            )
        ]
    );
    let origin = Origin {
        instance: "e1".into(),
        incarnation: "42".into(),
        worker: 1,
    };
    let events = token_events(&c, &origin, acme);
    let data: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(&e.json).unwrap())
        .inspect(|doc| assert_eq!(doc["type"], TOKENS_TYPE))
        .map(|doc| doc["data"].clone())
        .collect();
    assert_eq!(
        data,
        [
            serde_json::json!({"consumer": "acme", "plan": "free", "model": "small",
             "interval_start": "1970-01-01T00:01:40Z", "interval_end": "1970-01-01T00:01:50Z",
             "requests": 2, "input_tokens": 11, "cached_input_tokens": 2,
             "output_tokens": 6, "units": 19, "unreported": 0}),
            serde_json::json!({"consumer": "acme", "plan": "free", "model": "*",
             "interval_start": "1970-01-01T00:01:40Z", "interval_end": "1970-01-01T00:01:50Z",
             "requests": 1, "input_tokens": 0, "cached_input_tokens": 0,
             "output_tokens": 0, "units": 500, "unreported": 1})
        ]
    );
    // Deterministic, and one id per model.
    assert_eq!(events, token_events(&c, &origin, acme));
    assert_ne!(events[0].id, events[1].id);
    let later = t.close(120, false);
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].tokens[0].1.requests, 1);
    // The usage event of the interval is what it always was.
    assert!(!usage_event(&c, &origin, acme).json.contains("tokens"));
}

#[test]
fn a_request_of_several_units_crosses_every_threshold_among_them() {
    let usage = |used, cost| Usage {
        used,
        requests: 100,
        bounds: Bounds {
            start: 0,
            end: 86_400,
        },
        violated: false,
        cost,
    };
    let crossed = |u: Usage| {
        let mut out = Vec::new();
        crossings(&[50, 80, 100], 0, &[u], 10, &mut out);
        out.iter().map(|c| c.threshold).collect::<Vec<_>>()
    };
    // 45 → 85: 50 and 80 at once; 85 → 100: 100; a request that took nothing crosses nothing.
    assert_eq!(crossed(usage(85, 40)), [50, 80]);
    assert_eq!(crossed(usage(100, 15)), [100]);
    assert_eq!(crossed(usage(50, 0)), Vec::<u8>::new());
    // Exactly at a threshold's number, as with plain requests.
    assert_eq!(crossed(usage(50, 1)), [50]);
    assert_eq!(crossed(usage(49, 1)), Vec::<u8>::new());
}
