//! Large configurations: 100 000 consumers load, every one is found by lookup (not scan), and
//! an attacker's flood of distinct unknown keys leaves shared data untouched. Prints the
//! configuration load time per worker and Envoy's memory (reported in docs/benchmarks.md; timing
//! targets live in `make bench`, not here).

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tollgate_testkit::*;

use std::collections::HashMap;

const CONSUMERS: usize = 100_000;

fn config(consumers: usize) -> String {
    let mut json = String::with_capacity(consumers * 64);
    json.push_str(r#"{"plans": {"p": {"limits": [{"name": "daily", "requests": 1000, "window": "day"}, {"name": "burst", "requests": 100, "window": "1s"}]}}, "consumers": {"#);
    for i in 0..consumers {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(r#""c{i}": {{"plan": "p", "keys": ["key-{i}"]}}"#));
    }
    json.push_str("}}");
    json
}

/// Milliseconds from `starting` to `configured:` for each thread that logged both (the main
/// thread configures twice: base VM and canary).
fn load_times(log: &str) -> Vec<(String, u64)> {
    let stamp = |line: &str| -> Option<(String, f64)> {
        // [2026-11-25 13:29:51.301][4604][info][wasm] ...
        let time = line.get(12..24)?; // 13:29:51.301
        let thread = line.get(26..)?.split(']').next()?.to_string();
        let mut parts = time.split(':');
        let h: f64 = parts.next()?.parse().ok()?;
        let m: f64 = parts.next()?.parse().ok()?;
        let s: f64 = parts.next()?.parse().ok()?;
        Some((thread, (h * 3600.0 + m * 60.0 + s) * 1000.0))
    };
    let mut started: HashMap<String, f64> = HashMap::new();
    let mut out = Vec::new();
    for line in log.lines() {
        if line.contains("wasm log tollgate") && line.contains(" starting") {
            if let Some((thread, t)) = stamp(line) {
                started.insert(thread, t);
            }
        } else if line.contains("wasm log tollgate") && line.contains("configured:") {
            if let Some((thread, t)) = stamp(line) {
                if let Some(start) = started.remove(&thread) {
                    out.push((thread, (t - start).max(0.0) as u64));
                }
            }
        }
    }
    out
}

#[test]
fn a_hundred_thousand_consumers_load_and_are_each_found_by_lookup() {
    let envoy = Envoy::start(&config(CONSUMERS));
    let times = load_times(&envoy.log());
    eprintln!("configuration load ({CONSUMERS} consumers), per VM: {times:?}");
    assert!(
        times.len() >= 2,
        "expected load lines from the workers:\n{}",
        envoy.tollgate_log().join("\n")
    );
    assert!(envoy
        .log()
        .contains(&format!("{CONSUMERS} consumers, {CONSUMERS} keys")));

    let mut conn = Conn::new(envoy.port);
    for i in [0, 1, CONSUMERS / 2, CONSUMERS - 2, CONSUMERS - 1] {
        let key = format!("key-{i}");
        let r = conn.get("/", &[("x-api-key", key.as_bytes())]);
        assert_eq!(r.status, 200, "consumer c{i}: {r:?}");
        assert_eq!(r.remaining("daily"), 999);
    }
    assert_eq!(conn.get("/", &[("x-api-key", b"key-100000")]).status, 401);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

/// Sends `count` requests with keys from `key(i)` over 4 kept-alive connections; returns the
/// statuses seen.
fn flood(envoy: &Envoy, count: usize, key: fn(usize) -> String) -> HashMap<u16, usize> {
    let port = envoy.port;
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut conn = Conn::new(port);
                let mut statuses: HashMap<u16, usize> = HashMap::new();
                for i in (t..count).step_by(4) {
                    let k = key(i);
                    *statuses
                        .entry(conn.get("/", &[("x-api-key", k.as_bytes())]).status)
                        .or_default() += 1;
                }
                statuses
            })
        })
        .collect();
    let mut total: HashMap<u16, usize> = HashMap::new();
    for h in handles {
        for (status, n) in h.join().unwrap() {
            *total.entry(status).or_default() += n;
        }
    }
    total
}

#[test]
fn memory_follows_configured_consumers_not_keys_an_attacker_sends() {
    let baseline = {
        let small = Envoy::start(&config(10));
        rss_kib(small.pid())
    };
    let envoy = Envoy::start(&config(CONSUMERS));
    let pid = envoy.pid();
    let configured = rss_kib(pid);
    // 100 000 distinct unknown keys: refused, and nothing is stored for them.
    let unknown = flood(&envoy, CONSUMERS, |i| format!("attacker-{i}"));
    assert_eq!(unknown.get(&401), Some(&CONSUMERS), "{unknown:?}");
    let after_unknown = rss_kib(pid);
    // Every consumer used once.
    let used = flood(&envoy, CONSUMERS, |i| format!("key-{i}"));
    assert_eq!(used.get(&200), Some(&CONSUMERS), "{used:?}");
    let after_all_used = rss_kib(pid);
    eprintln!(
        "Envoy RSS (2 workers) with 10 consumers: {baseline} KiB; with {CONSUMERS}: configured {configured} KiB \
         ({:.0} bytes/consumer); after {CONSUMERS} unknown keys {after_unknown} KiB ({:+} KiB); after all \
         consumers used {after_all_used} KiB ({:+} KiB, {:.1} bytes/consumer)",
        (configured as f64 - baseline as f64) * 1024.0 / CONSUMERS as f64,
        after_unknown as i64 - configured as i64,
        after_all_used as i64 - after_unknown as i64,
        (after_all_used as f64 - after_unknown as f64) * 1024.0 / CONSUMERS as f64
    );
    // Unknown keys store nothing: what growth there is comes from Envoy's connection and
    // allocator churn, far below one record per key (a record is ~40 bytes + map overhead).
    let growth = after_unknown.saturating_sub(configured) * 1024;
    assert!(
        growth < (CONSUMERS as u64) * 40,
        "RSS grew {growth} bytes over {CONSUMERS} unknown keys"
    );
}
