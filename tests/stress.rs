//! Exactness under contention, at scale: thousands of requests over many parallel HTTP/1.1
//! (kept-alive) connections and HTTP/2 streams (h2load), spread over many consumers — some
//! already part-used, some brand new — with 2 and with 4 Envoy workers. Afterwards every
//! consumer has exactly min(quota left, requests sent) admitted: never one more, and nothing
//! refused that should have passed. And across a short window rolling over under load, no
//! window ever admits more than its quota.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tollgate_testkit::*;

use std::collections::HashMap;
use std::sync::{Arc, Barrier, Mutex};

/// Consumer i: quota 60 + 7*i, so quotas differ; every fourth gets more quota than it will be
/// sent (it must never be refused).
fn quota(i: usize) -> u64 {
    if i % 4 == 3 {
        10_000
    } else {
        60 + 7 * i as u64
    }
}

const H1_CONSUMERS: usize = 16;
const H2_CONSUMERS: usize = 8;
const H1_THREADS: usize = 32;
const H1_REQUESTS_PER_CONSUMER: u64 = 240;
const H2_REQUESTS_PER_CONSUMER: u64 = 300;
/// Consumers with an odd index have used this many requests before the storm.
const PRE_USED: u64 = 10;

fn config() -> String {
    let consumers: Vec<String> = (0..H1_CONSUMERS + H2_CONSUMERS)
        .map(|i| format!(r#""c{i}": {{"plan": "p{i}", "keys": ["key-{i}"]}}"#))
        .collect();
    let plans: Vec<String> = (0..H1_CONSUMERS + H2_CONSUMERS)
        .map(|i| {
            format!(
                r#""p{i}": {{"limits": [{{"name": "daily", "requests": {}, "window": "day"}},
                                     {{"name": "hourly", "requests": 1000000, "window": "hour"}}]}}"#,
                quota(i)
            )
        })
        .collect();
    plugin(&format!(
        r#"{{"plans": {{ {} }}, "consumers": {{ {} }}}}"#,
        plans.join(", "),
        consumers.join(", ")
    ))
}

/// h2load over 4 connections of 16 streams: the 2xx and 4xx counts (nothing else may come).
fn h2load(port: u16, key: &str, requests: u64) -> (u64, u64) {
    let [ok, _, refused, _] = tollgate_testkit::h2load(port, key, requests, 4, 16);
    assert_eq!(ok + refused, requests, "only 2xx and 4xx expected");
    (ok, refused)
}

fn storm(workers: u32) {
    let envoy = Envoy::start_with(Options {
        plugin: Some(config()),
        concurrency: workers,
        ..Options::default()
    });
    let total = H1_CONSUMERS + H2_CONSUMERS;
    let results = within_one_window(86_400, 300.0, 1, |_| {
        // Part-use the odd consumers first: they enter the storm with counts already stored.
        for i in (1..total).step_by(2) {
            for _ in 0..PRE_USED {
                assert_eq!(envoy.get_with_key(&format!("key-{i}")).status, 200);
            }
        }
        let admitted: Arc<Mutex<HashMap<usize, (u64, u64)>>> = Arc::default();
        let barrier = Arc::new(Barrier::new(H1_THREADS + H2_CONSUMERS));
        let mut handles = Vec::new();
        // HTTP/1.1: each thread keeps one connection and walks through every consumer, so
        // each consumer is hit from all threads at once.
        for t in 0..H1_THREADS {
            let (barrier, admitted, port) = (barrier.clone(), admitted.clone(), envoy.port);
            handles.push(std::thread::spawn(move || {
                let mut conn = Conn::new(port);
                barrier.wait();
                let per_thread = H1_REQUESTS_PER_CONSUMER / H1_THREADS as u64;
                for round in 0..per_thread {
                    for c in 0..H1_CONSUMERS {
                        let i = (c + t + round as usize) % H1_CONSUMERS;
                        let key = format!("key-{i}");
                        let status = conn.get("/", &[("x-api-key", key.as_bytes())]).status;
                        assert!(status == 200 || status == 402, "status {status}");
                        let mut map = admitted.lock().unwrap();
                        let entry = map.entry(i).or_default();
                        if status == 200 {
                            entry.0 += 1
                        } else {
                            entry.1 += 1
                        }
                    }
                }
            }));
        }
        // HTTP/2: one h2load per consumer, all at once (4 connections x 16 streams each).
        for j in 0..H2_CONSUMERS {
            let (barrier, admitted, port) = (barrier.clone(), admitted.clone(), envoy.port);
            handles.push(std::thread::spawn(move || {
                let i = H1_CONSUMERS + j;
                barrier.wait();
                let result = h2load(port, &format!("key-{i}"), H2_REQUESTS_PER_CONSUMER);
                admitted.lock().unwrap().insert(i, result);
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
        Arc::try_unwrap(admitted).unwrap().into_inner().unwrap()
    });
    let mut sent_total = 0;
    let mut admitted_total = 0;
    for i in 0..total {
        let (admitted, refused) = results[&i];
        let pre = if i % 2 == 1 { PRE_USED } else { 0 };
        let sent = admitted + refused;
        let expected = (quota(i) - pre).min(sent);
        eprintln!(
            "workers {workers}, c{i} ({}): quota {}, pre-used {pre}, sent {sent}, admitted {admitted}",
            if i < H1_CONSUMERS { "HTTP/1.1" } else { "HTTP/2" },
            quota(i)
        );
        assert_eq!(
            admitted, expected,
            "consumer c{i}: admitted {admitted}, expected {expected}"
        );
        sent_total += sent;
        admitted_total += admitted;
    }
    eprintln!("workers {workers}: {sent_total} requests, {admitted_total} admitted, all exact");
    assert!(sent_total >= 5_000, "a storm of thousands: {sent_total}");
    let log = envoy.log();
    assert!(
        !log.contains("panicked") && !log.contains("Uncaught"),
        "VM failure in the log"
    );
}

#[test]
fn thousands_of_requests_over_http1_and_http2_are_exact_with_2_workers() {
    storm(2);
}

#[test]
fn thousands_of_requests_over_http1_and_http2_are_exact_with_4_workers() {
    storm(4);
}

/// Which fixed window of `len` seconds an admitted response was counted in. Its RateLimit `t`
/// says the window ends `t` s after Envoy's whole-second clock read, which happened between
/// sending and receiving: the end is the one multiple of `len` in
/// [floor(sent) + t, received + t]. `None` if that interval is too wide to tell (a request
/// slower than `len` - 1 s); such samples are left out, which can only under-count.
fn window_of(sent: f64, received: f64, t: u64, len: u64) -> Option<u64> {
    let (low, high) = (sent.floor() + t as f64, received + t as f64);
    if high - low >= len as f64 {
        return None;
    }
    let end = (high / len as f64).floor() * len as f64;
    (end >= low).then_some(end as u64)
}

#[test]
fn a_short_window_rolling_over_under_load_never_admits_more_than_its_quota() {
    const QUOTA: u64 = 40;
    const LEN: u64 = 2;
    let envoy = Envoy::start_with(Options {
        plugin: Some(plugin(&format!(
            r#"{{"plans": {{"p": {{"limits": [{{"name": "w", "requests": {QUOTA}, "window": "{LEN}s"}}]}}}},
                "consumers": {{"c": {{"plan": "p", "keys": ["key"]}}}}}}"#
        ))),
        concurrency: 2,
        ..Options::default()
    });
    // 16 connections hammer one consumer for about 5 s: at least two boundaries pass.
    let deadline = unix_now() + 5.0;
    let per_window: Arc<Mutex<HashMap<u64, Vec<u64>>>> = Arc::default();
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (per_window, port) = (per_window.clone(), envoy.port);
            std::thread::spawn(move || {
                let mut conn = Conn::new(port);
                while unix_now() < deadline {
                    let sent = unix_now();
                    let r = conn.get("/", &[("x-api-key", b"key")]);
                    let received = unix_now();
                    if r.status == 200 {
                        let (_, remaining, t) = r.ratelimit()[0].clone();
                        if let Some(window) = window_of(sent, received, t, LEN) {
                            let mut map = per_window.lock().unwrap();
                            map.entry(window).or_default().push(remaining);
                        }
                    } else {
                        assert_eq!(r.status, 402);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let per_window = Arc::try_unwrap(per_window).unwrap().into_inner().unwrap();
    let mut full_windows = 0;
    for (end, mut remaining) in per_window {
        let admitted = remaining.len() as u64;
        eprintln!("window ending {end}: {admitted} admitted (quota {QUOTA})");
        assert!(
            admitted <= QUOTA,
            "window ending {end} admitted {admitted} > {QUOTA}"
        );
        // Each admission in a window saw a distinct remaining count: no lost update.
        remaining.sort_unstable();
        remaining.dedup();
        assert_eq!(
            remaining.len() as u64,
            admitted,
            "two admissions shared a count in window {end}"
        );
        full_windows += u64::from(admitted == QUOTA);
    }
    assert!(full_windows >= 2, "the load filled at least two windows");
}
