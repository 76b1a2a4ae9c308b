//! Fleet mode across a fleet: Redis, quotad and three Envoys with two workers each, all on free
//! ports. Every consumer's quota is one quota for the fleet, exactly: load over all Envoys
//! (HTTP/1.1 connections and HTTP/2 streams), then each Envoy drained (sent requests until it
//! refuses) — admitted == quota for every consumer. Then the same through a crash (SIGKILL of
//! one Envoy, started again: the units it held are lost, within the documented bound) and a
//! Redis restart (append-only file: counts kept).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tollgate_testkit::*;

const LEASE: u64 = 100;
const QUOTAS: [u64; 12] = [1, 2, 3, 5, 8, 13, 21, 34, 99, 100, 250, 500];

fn name(attempt: u32, i: usize) -> String {
    format!("c{attempt}x{i}")
}

/// One plan per quota (a daily limit of that size, and a monthly one that never binds, so
/// that every store call decides two limits), one consumer per plan.
fn config(attempt: u32) -> String {
    let plans: Vec<String> = QUOTAS
        .iter()
        .map(|q| {
            format!(
                r#""q{q}": {{"limits": [{{"name": "daily", "requests": {q}, "window": "day"}},
                                       {{"name": "monthly", "requests": 1000000, "window": "month"}}]}}"#
            )
        })
        .collect();
    let consumers: Vec<String> = QUOTAS
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let n = name(attempt, i);
            format!(r#""{n}": {{"plan": "q{q}", "keys": ["{n}-key"]}}"#)
        })
        .collect();
    // `warm`: a consumer no test counts, to see that the store answers again (see `warm_up`).
    plugin(&format!(
        r#"{{"store": {{"rls": {{"cluster": "tollgate_quotad", "timeout": "2s", "lease": {LEASE}}}}},
            "plans": {{ "big": {{"limits": [{{"name": "daily", "requests": 1000000, "window": "day"}}]}},
                        {} }},
            "consumers": {{ "warm{attempt}": {{"plan": "big", "keys": ["warm{attempt}-key"]}}, {} }} }}"#,
        plans.join(","),
        consumers.join(",")
    ))
}

/// Sends `n` requests of consumer `i` over HTTP/1.1 from `threads` kept-alive connections to
/// each port; returns how many were admitted. Anything but 200 and 402 fails the test.
fn h1_load(ports: &[u16], key: &str, n: u64, threads: u64) -> u64 {
    let admitted = Arc::new(AtomicU64::new(0));
    let per = n.div_ceil(threads * ports.len() as u64);
    let handles: Vec<_> = ports
        .iter()
        .flat_map(|port| (0..threads).map(move |_| *port))
        .map(|port| {
            let key = key.to_string();
            let admitted = Arc::clone(&admitted);
            std::thread::spawn(move || {
                let mut conn = Conn::new(port);
                for _ in 0..per {
                    let r = conn.get("/", &[("x-api-key", key.as_bytes())]);
                    match r.status {
                        200 => {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                        402 => {}
                        other => panic!("status {other}: {}", r.body),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    admitted.load(Ordering::SeqCst)
}

/// Load for every consumer at once: HTTP/1.1 on every Envoy and HTTP/2 on one; returns the
/// admitted count per consumer.
fn load(ports: &[u16], attempt: u32, factor: f64) -> Vec<u64> {
    let handles: Vec<_> = QUOTAS
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let ports = ports.to_vec();
            let key = format!("{}-key", name(attempt, i));
            let n = ((*q as f64) * factor).ceil() as u64;
            std::thread::spawn(move || {
                let h2_port = ports[i % ports.len()];
                let h2 = std::thread::spawn({
                    let key = key.clone();
                    move || {
                        let counts = h2load(h2_port, &key, n.div_ceil(2), 4, 8);
                        assert_eq!(counts[3], 0, "no 5xx over HTTP/2: {counts:?}");
                        counts[0]
                    }
                });
                let h1 = h1_load(&ports, &key, n / 2, 2);
                h1 + h2.join().unwrap()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Sends requests of consumer `i` to each Envoy until it refuses; returns the admitted count.
fn drain(ports: &[u16], attempt: u32, i: usize) -> u64 {
    drain_until_refused(ports, &format!("{}-key", name(attempt, i)), 1000)
}

/// Sends the uncounted `warm` consumer's requests to each Envoy until one is admitted: after a
/// Redis restart, quotad's first call finds its old connection gone (a 503 with
/// `on_store_error: deny`, and the lease's fast failure for one `timeout`) and reconnects by
/// itself. Fails the test if an Envoy does not admit within 20 s.
fn warm_up(ports: &[u16], attempt: u32) {
    let key = format!("warm{attempt}-key");
    for port in ports {
        let mut conn = Conn::new(*port);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let r = conn.get("/", &[("x-api-key", key.as_bytes())]);
            match r.status {
                200 => break,
                503 if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                other => panic!("the store did not come back: status {other}: {}", r.body),
            }
        }
    }
}

fn fleet(quotad: &Quotad, attempt: u32, n: usize) -> Vec<Envoy> {
    let plugin = config(attempt);
    (0..n).map(|_| fleet_envoy(quotad, &plugin, 2)).collect()
}

#[test]
fn three_envoys_admit_exactly_each_quota() {
    let redis = Redis::start_aof();
    let quotad = Quotad::fleet(&redis);
    within_one_window(86_400, 300.0, 2, |attempt| {
        let envoys = fleet(&quotad, attempt, 3);
        let ports: Vec<u16> = envoys.iter().map(|e| e.port).collect();
        let loaded = load(&ports, attempt, 1.3);
        for (i, quota) in QUOTAS.iter().enumerate() {
            assert!(loaded[i] <= *quota, "consumer {i}: {} > {quota}", loaded[i]);
            let total = loaded[i] + drain(&ports, attempt, i);
            assert_eq!(total, *quota, "consumer {i}: admitted == quota");
            let who = name(attempt, i);
            assert_eq!(
                redis.counted("tollgate", &who, "daily"),
                *quota,
                "{who} in Redis"
            );
        }
        let calls = quotad.decisions();
        let requests: u64 = QUOTAS.iter().sum();
        eprintln!("store calls: {calls} for {requests} admitted requests");
    });
}

#[test]
fn an_envoy_killed_mid_load_loses_at_most_its_lease() {
    let redis = Redis::start_aof();
    let quotad = Quotad::fleet(&redis);
    within_one_window(86_400, 300.0, 2, |attempt| {
        let mut envoys = fleet(&quotad, attempt, 3);
        let ports: Vec<u16> = envoys.iter().map(|e| e.port).collect();
        let first = load(&ports, attempt, 0.5);
        // SIGKILL: the units its leases held are gone with it.
        envoys[0].kill();
        envoys[0] = fleet_envoy(&quotad, &config(attempt), 2);
        let ports: Vec<u16> = envoys.iter().map(|e| e.port).collect();
        let second = load(&ports, attempt, 0.8);
        for (i, quota) in QUOTAS.iter().enumerate() {
            let total = first[i] + second[i] + drain(&ports, attempt, i);
            let who = name(attempt, i);
            // The counts continued from the store: nothing admitted twice.
            assert!(total <= *quota, "{who}: {total} > {quota}");
            let lost = quota - total;
            assert!(lost <= LEASE, "{who}: lost {lost} > one lease");
            eprintln!("{who}: quota {quota}, admitted {total}, lost {lost}");
            assert_eq!(redis.counted("tollgate", &who, "daily"), *quota);
        }
    });
}

#[test]
fn a_redis_restart_with_its_append_only_file_keeps_the_counts() {
    let mut redis = Redis::start_aof();
    let quotad = Quotad::fleet(&redis);
    within_one_window(86_400, 300.0, 2, |attempt| {
        let envoys = fleet(&quotad, attempt, 2);
        let ports: Vec<u16> = envoys.iter().map(|e| e.port).collect();
        let first = load(&ports, attempt, 0.4);
        let before: Vec<u64> = (0..QUOTAS.len())
            .map(|i| redis.counted("tollgate", &name(attempt, i), "daily"))
            .collect();
        redis.restart();
        let after: Vec<u64> = (0..QUOTAS.len())
            .map(|i| redis.counted("tollgate", &name(attempt, i), "daily"))
            .collect();
        assert_eq!(before, after, "counts kept across the restart");
        // quotad reconnects by itself; the load goes on and the drain is exact.
        warm_up(&ports, attempt);
        let second = load(&ports, attempt, 1.0);
        for (i, quota) in QUOTAS.iter().enumerate() {
            let total = first[i] + second[i] + drain(&ports, attempt, i);
            assert_eq!(total, *quota, "consumer {i}");
        }
    });
}
