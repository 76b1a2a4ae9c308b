//! quotad behind Envoy's own `envoy.filters.http.ratelimit` filter (a client no one here wrote),
//! running the example `envoy/fleet/envoy.yaml`: real Redis, real quotad, real Envoy.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use tollgate::time::{civil_from_days, days_from_civil, DAY};

/// The start and end of the calendar month containing `now` at `offset` seconds east of UTC,
/// computed here independently of quotad.
fn month_at(now: i64, offset: i64) -> (i64, i64) {
    let local_days = (now + offset).div_euclid(DAY);
    let date = civil_from_days(local_days);
    let (ny, nm) = if date.month == 12 {
        (date.year + 1, 1)
    } else {
        (date.year, date.month + 1)
    };
    (
        days_from_civil(date.year, date.month, 1) * DAY - offset,
        days_from_civil(ny, nm, 1) * DAY - offset,
    )
}

#[test]
fn a_day_limit_admits_exactly_its_size() {
    clear_of_day_boundary();
    let redis = Redis::start();
    let quotad = Quotad::on(QUOTAD, &redis);
    let envoy = Envoy::native_ratelimit(&quotad);

    // Plan "reports": 4 a day. 4 pass, then every request is refused with 429.
    let first = envoy.get_as("/reports", "acme");
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(
        first.header("x-ratelimit-remaining"),
        Some("3"),
        "{first:?}"
    );
    assert_eq!(
        envoy.statuses("/reports", "acme", 5),
        [200, 200, 200, 429, 429]
    );
    // Another consumer has its own count.
    assert_eq!(envoy.statuses("/reports", "globex", 1), [200]);
    // Consumers an identity provider names (an e-mail address, a provider-prefixed subject,
    // anything past 64 characters) are counted too, each in its own key: before, quotad
    // refused them and Envoy (failure_mode_deny: false) let them all through uncounted.
    for consumer in ["alice@example.com", "auth0|5f1b2c3d", &"s".repeat(100)] {
        assert_eq!(
            envoy.statuses("/reports", consumer, 5),
            [200, 200, 200, 200, 429],
            "{consumer}"
        );
    }
    assert_eq!(
        redis.keys("tollgate:v1:{tollgate:~*}:reports:day:*").len(),
        3
    );

    let keys = redis.keys(&key_pattern("acme", "reports"));
    assert_eq!(keys.len(), 1, "{keys:?}");
    let day_start = now() - now().rem_euclid(DAY);
    assert_eq!(
        keys[0],
        format!("tollgate:v1:{{tollgate:acme}}:reports:day:{day_start}")
    );
    assert_eq!(redis.get(&keys[0]), 4, "refused requests are not counted");
    // The key expires at the end of the day plus quotad's margin (300 s by default).
    let ttl: i64 = redis.cli(&["TTL", &keys[0]]).trim().parse().unwrap();
    let expected = day_start + DAY - now() + 300;
    assert!(
        (expected - 3..=expected + 1).contains(&ttl),
        "ttl {ttl}, expected {expected}"
    );
}

#[test]
fn two_limits_refuse_together_and_a_refusal_consumes_nothing() {
    clear_of_day_boundary();
    let redis = Redis::start();
    let quotad = Quotad::on(QUOTAD, &redis);
    let envoy = Envoy::native_ratelimit(&quotad);

    // Plan "free": daily 5 and burst 3 per 10 s, on every request.
    align_to_window(10, 7);
    let window = now() - now().rem_euclid(10);
    assert_eq!(envoy.statuses("/", "acme", 5), [200, 200, 200, 429, 429]);
    let refused = envoy.get_as("/", "acme");
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("x-envoy-ratelimited"), Some("true"));
    let daily = format!(
        "tollgate:v1:{{tollgate:acme}}:daily:day:{}",
        now() - now().rem_euclid(DAY)
    );
    assert_eq!(
        redis.get(&daily),
        3,
        "the burst refusals must not count on the daily limit"
    );
    assert_eq!(
        redis.get(&format!("tollgate:v1:{{tollgate:acme}}:burst:10s:{window}")),
        3
    );

    // The next 10 s window: the daily limit has 2 left, so 2 pass and then the daily limit
    // refuses although the burst limit has room; the refusal takes nothing from the burst.
    wait_for(
        "the next 10 s window",
        std::time::Duration::from_secs(15),
        || now() >= window + 10,
    );
    align_to_window(10, 5);
    let next = now() - now().rem_euclid(10);
    assert_eq!(envoy.statuses("/", "acme", 4), [200, 200, 429, 429]);
    assert_eq!(redis.get(&daily), 5);
    assert_eq!(
        redis.get(&format!("tollgate:v1:{{tollgate:acme}}:burst:10s:{next}")),
        2,
        "a request refused by the daily limit must not count on the burst limit"
    );
    let stats = envoy.stats();
    assert!(stats.contains("ratelimit.over_limit: 5"), "{stats}");
    assert!(stats.contains("ratelimit.ok: 5"), "{stats}");
}

#[test]
fn a_month_limit_follows_the_calendar_at_its_utc_offset() {
    clear_of_day_boundary();
    let redis = Redis::start();
    let quotad = Quotad::on(QUOTAD, &redis);
    let envoy = Envoy::native_ratelimit(&quotad);

    // Plan "trial": 3 a month, months starting at 00:00 +05:30.
    let offset = 5 * 3600 + 30 * 60;
    let before = now();
    let responses: Vec<Response> = (0..4).map(|_| envoy.get_as("/trial", "wayne")).collect();
    let after = now();
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 429]);

    let (start, end) = month_at(before, offset);
    assert_eq!(
        month_at(after, offset),
        (start, end),
        "test ran across a month boundary"
    );
    assert_ne!(
        month_at(before, 0).0,
        start,
        "the offset moves the month's start"
    );
    let keys = redis.keys(&key_pattern("wayne", "monthly"));
    assert_eq!(
        keys,
        [format!(
            "tollgate:v1:{{tollgate:wayne}}:monthly:month:{start}"
        )]
    );
    assert_eq!(redis.get(&keys[0]), 3);
    // The reset Envoy reports is the end of the month at +05:30 (X-RateLimit-Reset, seconds).
    for r in &responses {
        let reset: i64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!(
            (end - after..=end - before).contains(&reset),
            "reset {reset}, expected {}..={} ({r:?})",
            end - after,
            end - before
        );
    }
    assert_eq!(responses[0].header("x-ratelimit-remaining"), Some("2"));
    assert_eq!(responses[3].header("x-ratelimit-remaining"), Some("0"));
}

#[test]
fn a_request_without_a_consumer_is_refused_and_never_counted() {
    clear_of_day_boundary();
    let redis = Redis::start();
    let quotad = Quotad::on(QUOTAD, &redis);
    let envoy = Envoy::native_ratelimit(&quotad);
    let r = try_request(envoy.port, "GET", "/reports", &[]).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(redis.dbsize(), 0);
}
