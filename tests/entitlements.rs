//! Live entitlements through real Envoy (two workers) and a control plane in the test process
//! ([`ControlPlane`]), reached through an Envoy cluster: consumers pulled every `refresh`
//! with `If-None-Match`, one fetch per Envoy, validated snapshots switched between requests,
//! counts kept by consumer and limit names, the last good snapshot kept through bad answers
//! and outages.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};
use tollgate_testkit::*;

const CLUSTER: &str = "control_plane";
const SECRET: &str = "Bearer cp-secret-7f3a";
const BILLING: &str = "https://example.com/billing";
const DAY: u64 = 86_400;
/// Long enough for any switch on a loaded machine; a working one takes a second or two.
const SWITCH: Duration = Duration::from_secs(30);

/// The plugin configuration: two plans, one static consumer, entitlements from the test's
/// control plane.
fn config(refresh: &str, timeout: &str) -> String {
    config_with(refresh, timeout, "")
}

/// [`config`] with more `entitlements` members (`extra`: JSON members, each after a comma).
fn config_with(refresh: &str, timeout: &str, extra: &str) -> String {
    plugin(&format!(
        r#"{{
          "plans": {{
            "free": {{"limits": [{{"name": "daily", "requests": 3, "window": "day"}}]}},
            "pro":  {{"limits": [{{"name": "daily", "requests": 100, "window": "day"}}]}},
            "unlimited": {{"limits": []}}
          }},
          "consumers": {{"boot": {{"plan": "free", "keys": ["boot-key"]}}}},
          "billing_url": "{BILLING}",
          "usage_path": "/tollgate/usage",
          "entitlements": {{"cluster": "{CLUSTER}", "path": "/v1/consumers",
                            "authorization": "{SECRET}", "refresh": "{refresh}",
                            "timeout": "{timeout}"{extra}}}
        }}"#
    ))
}

/// An entitlements document with these consumers (JSON members).
fn doc(consumers: &str) -> String {
    format!(r#"{{"consumers": {{{consumers}}}}}"#)
}

fn start(plane: &ControlPlane, plugin: &str) -> Envoy {
    Envoy::start_with(Options {
        plugin: Some(plugin.to_string()),
        clusters: vec![(CLUSTER.to_string(), plane.port)],
        ..Options::default()
    })
}

fn status(envoy: &Envoy, key: &str) -> u16 {
    envoy.get_with_key(key).status
}

/// The usage endpoint's status for `key` (uncounted): 200 for a known consumer, 401 if not.
fn usage_status(envoy: &Envoy, key: &str) -> u16 {
    envoy.get("/tollgate/usage", &[("x-api-key", key)]).status
}

/// Waits until the usage endpoint answers `want` for `key` ten times in a row, then until every
/// VM has applied the newest snapshot any VM applied ([`applied_everywhere`]): ten answers on
/// fresh connections may all come from one worker while the other switches a tick later.
/// Counts nothing.
fn until(envoy: &Envoy, key: &str, want: u16, what: &str) -> Duration {
    let started = Instant::now();
    poll(SWITCH, what, || {
        (0..10)
            .all(|_| usage_status(envoy, key) == want)
            .then_some(())
    });
    applied_everywhere(envoy);
    started.elapsed()
}

/// Waits until each VM — the main thread's and every worker's, told apart by the thread id in
/// Envoy's log prefix (`[time][thread][level]...`) — has logged that it applied the newest
/// snapshot version logged by any of them. Nothing to wait for before the first snapshot.
fn applied_everywhere(envoy: &Envoy) {
    let thread = |l: &str| {
        l.split('[')
            .nth(2)
            .and_then(|t| t.split(']').next())
            .map(str::to_string)
    };
    let version = |l: &str| -> Option<u64> {
        let rest = l.split("entitlements: version ").nth(1)?;
        rest.contains(" applied in ")
            .then(|| rest.split(' ').next()?.parse().ok())?
    };
    poll(SWITCH, "every VM on the newest snapshot", || {
        let log = envoy.tollgate_log();
        let vms: std::collections::BTreeSet<String> = log
            .iter()
            .filter(|l| l.ends_with(" starting"))
            .filter_map(|l| thread(l))
            .collect();
        let Some(newest) = log.iter().filter_map(|l| version(l)).max() else {
            return Some(());
        };
        let on_newest: std::collections::BTreeSet<String> = log
            .iter()
            .filter(|l| version(l) == Some(newest))
            .filter_map(|l| thread(l))
            .collect();
        (on_newest == vms).then_some(())
    });
}

/// The plan the backend was told (`x-tollgate-plan`, echoed in the demo backend's body).
fn plan_told(response: &Response) -> String {
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap_or_default();
    body["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h[0] == "x-tollgate-plan")
        .map(|h| h[1].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn a_consumer_added_on_the_control_plane_is_admitted_within_one_refresh_without_a_reload() {
    let mut plane = ControlPlane::start(&doc(r#""acme": {"plan": "free", "keys": ["acme-key"]}"#));
    let envoy = start(&plane, &config("1s", "500ms"));
    until(
        &envoy,
        "acme-key",
        200,
        "acme admitted from the first snapshot",
    );
    assert_eq!(status(&envoy, "newbie-key"), 401);
    poll(SWITCH, "an unchanged snapshot answered 304", || {
        plane
            .fetches()
            .iter()
            .any(|f| f.status == 304)
            .then_some(())
    });
    let configured = envoy
        .tollgate_log()
        .iter()
        .filter(|l| l.contains("configured: "))
        .count();

    let etag = plane.publish(&doc(r#""acme": {"plan": "free", "keys": ["acme-key"]},
           "newbie": {"plan": "free", "keys": ["newbie-key"]}"#));
    let published_at = plane.published_at();
    let waited = poll(SWITCH, "newbie admitted", || {
        (usage_status(&envoy, "newbie-key") == 200).then(|| plane.clock() - published_at)
    });
    let fetched = plane.fetches_since(published_at);
    eprintln!("newbie admitted {waited:.2} s after the publish; fetches since: {fetched:?}");
    // Within one refresh: the first fetch after the publish brought the new snapshot, and the
    // consumer was admitted before the refresh after it could have been needed.
    assert_eq!(
        (fetched[0].status, fetched[0].etag.as_str()),
        (200, etag.as_str())
    );
    assert!(
        fetched.len() <= 2,
        "admitted only after {} fetches",
        fetched.len()
    );
    until(&envoy, "newbie-key", 200, "newbie admitted by both workers");
    assert_eq!(status(&envoy, "acme-key"), 200);

    // No reload: the plugin was configured once per VM at start, never since.
    let now_configured = envoy
        .tollgate_log()
        .iter()
        .filter(|l| l.contains("configured: "))
        .count();
    assert_eq!(
        now_configured, configured,
        "the plugin was not reconfigured"
    );
    // What the control plane saw: the path, the authorization, If-None-Match once it had an
    // ETag; and the secret never reached Envoy's log.
    let fetches = plane.fetches();
    assert!(
        fetches.iter().all(|f| f.path == "/v1/consumers"),
        "{fetches:?}"
    );
    assert!(fetches
        .iter()
        .all(|f| f.authorization.as_deref() == Some(SECRET)));
    assert_eq!(
        fetches[0].if_none_match, None,
        "nothing to match before the first snapshot"
    );
    assert!(
        fetches.iter().skip(1).all(|f| f.if_none_match.is_some()),
        "{fetches:?}"
    );
    assert!(
        !envoy.log().contains("cp-secret"),
        "the authorization value is never logged"
    );
    assert!(envoy.counter("tollgate.entitlements.fetch.updated") >= 2);
    assert!(envoy.counter("tollgate.entitlements.fetch.not_modified") >= 1);
    assert!(
        envoy.counter("tollgate.entitlements.applied") >= 2 * 2,
        "each worker applied two"
    );
}

#[test]
fn the_fetch_happens_once_per_envoy_per_refresh() {
    let plane = ControlPlane::start(&doc(r#""acme": {"plan": "free", "keys": ["acme-key"]}"#));
    let envoy = start(&plane, &config("2s", "1s"));
    until(&envoy, "acme-key", 200, "acme admitted");
    let from = plane.clock();
    poll(Duration::from_secs(60), "five more fetches", || {
        (plane.fetches_since(from).len() >= 5).then_some(())
    });
    let to = plane.clock();
    let fetches: Vec<f64> = plane.fetches().iter().map(|f| f.at).collect();
    let gaps: Vec<f64> = fetches.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("fetches at {fetches:.2?}, gaps {gaps:.2?}");
    // Three VMs run the timer (two workers and the main thread's): one fetch per refresh in
    // all, never two close together. The schedule spaces claims by 2 s on Envoy's clock;
    // dispatch delays on a loaded machine can shift an arrival a little.
    let shortest = gaps.iter().copied().fold(f64::MAX, f64::min);
    assert!(
        shortest >= 1.2,
        "two fetches {shortest:.2} s apart: {fetches:.2?}"
    );
    let during = plane.fetches_since(from).len() as f64;
    assert!(
        during <= (to - from) / 2.0 + 2.0,
        "{during} fetches in {:.1} s with a 2 s refresh",
        to - from
    );
    assert!(envoy.counter("tollgate.entitlements.fetch.not_modified") >= 4);
}

#[test]
fn an_invalid_snapshot_is_refused_and_the_previous_set_keeps_answering() {
    let good = doc(r#""acme": {"plan": "pro", "keys": ["acme-key"]}"#);
    let mut plane = ControlPlane::start(&good);
    let envoy = start(&plane, &config("1s", "500ms"));
    until(&envoy, "acme-key", 200, "acme admitted");
    let invalid = [
        (
            "{\"consumers\": {\"intruder\": ",
            "invalid JSON at line 1 column 27 of the entitlements document",
        ),
        (
            r#"{"consumers": {"acme": {"plan": "pro", "keys": ["acme-key"]},
                            "intruder": {"plan": "gold", "keys": ["intruder-key"]}}}"#,
            "consumers.intruder.plan: plan `gold` does not exist",
        ),
        (
            r#"{"consumers": {"acme": {"plan": "pro", "keys": ["acme-key"]},
                            "intruder": {"plan": "pro", "keys": ["intruder-key", "acme-key"]}}}"#,
            "consumers.intruder.keys[1]: this key is listed twice (also a key of consumer `acme`)",
        ),
        (
            r#"{"consumers": {"intruder": {"plan": "pro", "keys": ["intruder-key"], "status": "gone"}}}"#,
            "consumers.intruder.status: unknown variant",
        ),
    ];
    for (i, (document, message)) in invalid.iter().enumerate() {
        let published_at = plane.clock();
        let etag = plane.publish(document);
        poll(SWITCH, message, || {
            envoy
                .tollgate_log()
                .iter()
                .any(|l| l.contains("entitlements: snapshot refused") && l.contains(message))
                .then_some(())
        });
        assert!(envoy.counter("tollgate.entitlements.fetch.refused") > i as u64);
        // Refused once, not downloaded again: its ETag goes in If-None-Match with the good one.
        poll(SWITCH, "a 304 for the refused snapshot", || {
            plane
                .fetches_since(published_at)
                .iter()
                .any(|f| f.status == 304 && f.etag == etag)
                .then_some(())
        });
        // The previous set keeps answering, whole: nothing of the refused one applies.
        assert_eq!(status(&envoy, "acme-key"), 200, "after {message}");
        assert_eq!(status(&envoy, "intruder-key"), 401, "after {message}");
    }
    assert!(
        !envoy.log().contains("intruder-key") && !envoy.log().contains("\"acme-key\""),
        "no key in the refusal lines"
    );
    // A valid snapshot after the invalid ones applies as usual.
    plane.publish(&doc(r#""acme": {"plan": "pro", "keys": ["acme-key"]},
           "intruder": {"plan": "pro", "keys": ["intruder-key"]}"#));
    until(
        &envoy,
        "intruder-key",
        200,
        "the valid snapshot after the invalid ones",
    );
}

#[test]
fn the_control_plane_down_or_slow_changes_nothing_for_requests() {
    let mut plane = ControlPlane::start(&doc(r#""acme": {"plan": "pro", "keys": ["acme-key"]}"#));
    plane.answer(Answering::Down);
    let envoy = start(&plane, &config("1s", "500ms"));
    // Before the first good fetch, the configuration's own consumers serve.
    poll(SWITCH, "two failed fetches", || {
        (plane.fetches().iter().filter(|f| f.status == 503).count() >= 2).then_some(())
    });
    assert_eq!(
        status(&envoy, "boot-key"),
        200,
        "static consumers serve before a snapshot"
    );
    // Not a 401: it may be a consumer of the snapshot (`until_first_snapshot`, see the test
    // after this one).
    assert_eq!(status(&envoy, "acme-key"), 503);
    plane.answer(Answering::Serve);
    until(
        &envoy,
        "acme-key",
        200,
        "acme admitted once the control plane answers",
    );
    assert_eq!(
        status(&envoy, "boot-key"),
        401,
        "the snapshot replaced the static consumers"
    );

    let mut answered = 0;
    for (mode, want) in [
        (Answering::Down, 503),
        (Answering::Slow(Duration::from_secs(2)), 200),
        // Envoy answers a refused connection with 503 itself; the control plane saw nothing.
        (Answering::Refuse, 0),
    ] {
        // A changed document the control plane would serve if it could: it must not apply.
        plane.publish(&doc(r#""acme": {"plan": "pro", "keys": ["acme-key"]},
                               "late": {"plan": "pro", "keys": ["late-key"]}"#));
        plane.answer(mode);
        let from = plane.clock();
        poll(SWITCH, &format!("two fetches answered {mode:?}"), || {
            let n = plane
                .fetches_since(from)
                .iter()
                .filter(|f| f.status == want)
                .count();
            (n >= 2).then_some(())
        });
        for _ in 0..20 {
            assert_eq!(status(&envoy, "acme-key"), 200, "while {mode:?}");
            answered += 1;
        }
        // Slow answers arrive after Envoy's timeout: never applied.
        assert_eq!(status(&envoy, "late-key"), 401, "while {mode:?}");
    }
    assert_eq!(answered, 60);
    assert!(envoy.counter("tollgate.entitlements.fetch.failed") >= 6);
    let log = envoy.tollgate_log().join("\n");
    assert!(log.contains("the control plane answered 503"), "{log}");
    assert!(log.contains("504: no answer within the timeout"), "{log}");
    // Back up: the pending change applies.
    plane.answer(Answering::Serve);
    until(
        &envoy,
        "late-key",
        200,
        "the change once the control plane is back",
    );
}

/// Sends `key` until the control plane has failed `failed` fetches (so that the VMs have had
/// their chance at a snapshot), then returns what `key` and the static `boot-key` get.
fn while_down(plane: &ControlPlane, envoy: &Envoy, key: &str) -> (Response, u16) {
    poll(SWITCH, "two failed fetches", || {
        (plane.fetches().iter().filter(|f| f.status == 503).count() >= 2).then_some(())
    });
    (envoy.get_with_key(key), status(envoy, "boot-key"))
}

#[test]
fn a_start_with_the_control_plane_down_answers_503_until_the_first_snapshot_not_401() {
    // An Envoy (re)started while its control plane is down: no snapshot in shared data.
    let plane = ControlPlane::start(&doc(r#""acme": {"plan": "free", "keys": ["acme-key"]}"#));
    plane.answer(Answering::Down);
    let envoy = start(&plane, &config("1s", "500ms"));
    let (refused, boot) = while_down(&plane, &envoy, "acme-key");
    assert_eq!(refused.status, 503, "the default: unavailable, {refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"), "one refresh");
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    let problem = refused.json();
    assert_eq!(problem["type"], "urn:tollgate:problem:quota-unavailable");
    assert_eq!(problem["retry-after"], 1);
    assert_eq!(refused.header("www-authenticate"), None);
    assert_eq!(boot, 200, "the configuration's own consumers serve");
    // Every worker answers so, and the usage endpoint too; nothing of acme's is counted.
    for _ in 0..20 {
        assert_eq!(status(&envoy, "acme-key"), 503);
    }
    assert_eq!(usage_status(&envoy, "acme-key"), 503);
    assert_eq!(
        envoy.get("/", &[]).status,
        401,
        "no key: no snapshot changes that"
    );
    // Counted as what it is (each VM flushes its counters every second).
    poll(SWITCH, "the refusals counted", || {
        (envoy.counter("tollgate.requests.refused.entitlements_unavailable") == 22).then_some(())
    });
    assert_eq!(
        envoy.counter("tollgate.requests.refused.invalid_credential"),
        0
    );

    plane.answer(Answering::Serve);
    until(
        &envoy,
        "acme-key",
        200,
        "acme once the control plane answers",
    );
    let statuses: Vec<u16> = (0..4).map(|_| status(&envoy, "acme-key")).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 402],
        "acme's 3 a day, all of them"
    );
    assert_eq!(
        status(&envoy, "nobody-key"),
        401,
        "a snapshot says who is not"
    );
}

#[test]
fn until_first_snapshot_static_keeps_the_configurations_consumers_as_the_whole_set() {
    let plane = ControlPlane::start(&doc(r#""acme": {"plan": "free", "keys": ["acme-key"]}"#));
    plane.answer(Answering::Down);
    let static_first = config_with("1s", "500ms", r#", "until_first_snapshot": "static""#);
    let envoy = start(&plane, &static_first);
    let (refused, boot) = while_down(&plane, &envoy, "acme-key");
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(
        refused.json()["type"],
        "urn:tollgate:problem:invalid-credential"
    );
    assert_eq!(boot, 200);
    plane.answer(Answering::Serve);
    until(
        &envoy,
        "acme-key",
        200,
        "acme once the control plane answers",
    );
    let statuses: Vec<u16> = (0..4).map(|_| status(&envoy, "acme-key")).collect();
    assert_eq!(statuses, [200, 200, 200, 402]);
}

#[test]
fn an_upgrade_keeps_the_count_of_a_same_named_limit() {
    let mut plane = ControlPlane::start(&doc(r#""acme": {"plan": "free", "keys": ["acme-key"]}"#));
    let envoy = start(&plane, &config("1s", "500ms"));
    until(&envoy, "boot-key", 401, "the first snapshot applied");
    within_one_window(DAY, 120.0, 1, |_| {
        let first = envoy.get_with_key("acme-key");
        assert_eq!(
            (first.status, first.remaining("daily")),
            (200, 2),
            "{first:?}"
        );
        let second = envoy.get_with_key("acme-key");
        assert_eq!((second.status, second.remaining("daily")), (200, 1));
        // Upgrade on the control plane: the same limit name `daily`, 100 a day.
        plane.publish(&doc(r#""acme": {"plan": "pro", "keys": ["acme-key"]}"#));
        poll(SWITCH, "the upgrade applied on both workers", || {
            (0..10)
                .all(|_| {
                    let usage = envoy.get("/tollgate/usage", &[("x-api-key", "acme-key")]);
                    usage.json()["plan"] == "pro"
                })
                .then_some(())
        });
        // Ten answers in a row may all come from one worker: wait for each VM's own word.
        applied_everywhere(&envoy);
        let upgraded = envoy.get_with_key("acme-key");
        assert_eq!(plan_told(&upgraded), "pro", "{upgraded:?}");
        assert_eq!(
            (upgraded.status, upgraded.remaining("daily")),
            (200, 100 - 3),
            "the count carried over: the third request of the day: {upgraded:?}"
        );
    });
}

#[test]
fn a_key_rotation_keeps_the_consumers_count() {
    let mut plane = ControlPlane::start(&doc(r#""acme": {"plan": "free", "keys": ["old-key"]}"#));
    let envoy = start(&plane, &config("1s", "500ms"));
    until(&envoy, "boot-key", 401, "the first snapshot applied");
    within_one_window(DAY, 120.0, 1, |_| {
        for left in [2, 1] {
            let r = envoy.get_with_key("old-key");
            assert_eq!((r.status, r.remaining("daily")), (200, left), "{r:?}");
        }
        plane.publish(&doc(r#""acme": {"plan": "free", "keys": ["new-key"]}"#));
        until(&envoy, "new-key", 200, "the new key known to both workers");
        let rotated = envoy.get_with_key("new-key");
        assert_eq!(
            (rotated.status, rotated.remaining("daily")),
            (200, 0),
            "the third request of the day, on the new key: {rotated:?}"
        );
        let spent = envoy.get_with_key("new-key");
        assert_eq!(spent.status, 402, "{spent:?}");
        until(&envoy, "old-key", 401, "the old key refused everywhere");
    });
}

#[test]
fn past_due_from_a_snapshot_is_admitted_until_grace_until_then_refused_with_the_payment_problem() {
    let mut plane = ControlPlane::start(&doc(r#""stark": {"plan": "pro", "keys": ["stark-key"]}"#));
    let envoy = start(&plane, &config("1s", "500ms"));
    until(&envoy, "stark-key", 200, "stark admitted");
    plane.publish(&doc(
        r#""stark": {"plan": "pro", "keys": ["stark-key"], "status": "past_due",
                     "grace_until": "2999-01-01T00:00:00Z"}"#,
    ));
    poll(SWITCH, "past_due applied", || {
        let usage = envoy
            .get("/tollgate/usage", &[("x-api-key", "stark-key")])
            .json();
        (usage["status"] == "past_due").then_some(())
    });
    assert_eq!(status(&envoy, "stark-key"), 200, "admitted in grace");
    plane.publish(&doc(
        r#""stark": {"plan": "pro", "keys": ["stark-key"], "status": "past_due",
                     "grace_until": "2020-01-01T00:00:00Z",
                     "billing_url": "https://billing.example.com/stark"}"#,
    ));
    let refused = poll(SWITCH, "the grace period over", || {
        let r = envoy.get_with_key("stark-key");
        (r.status == 402).then_some(r)
    });
    let problem = refused.json();
    assert_eq!(
        problem["type"], "urn:tollgate:problem:payment-required",
        "{problem}"
    );
    assert_eq!(problem["billing-url"], "https://billing.example.com/stark");
    assert_eq!(
        refused.header("link"),
        Some("<https://billing.example.com/stark>; rel=\"payment urn:tollgate:rel:billing\"")
    );
}

/// `n` consumers `c0`..`c{n-1}` with keys `key-0`.., all on `free`, plus `extra`.
fn many(n: usize, extra: &str) -> String {
    let mut out = String::with_capacity(n * 64);
    out.push_str("{\"consumers\": {");
    for i in 0..n {
        out.push_str(&format!(
            "\"c{i}\": {{\"plan\": \"pro\", \"keys\": [\"key-{i}\"]}},"
        ));
    }
    out.push_str(extra);
    out.push_str("}}");
    out
}

#[test]
fn a_hundred_thousand_consumers_apply_and_requests_during_the_switch_are_answered() {
    const N: usize = 100_000;
    let mut plane = ControlPlane::start(&many(
        N,
        r#""first": {"plan": "unlimited", "keys": ["first-key"]}"#,
    ));
    let envoy = start(&plane, &config("1s", "1s"));
    until(&envoy, "key-99999", 200, "the 100 000 consumers applied");
    assert_eq!(status(&envoy, "first-key"), 200);
    // A second snapshot of the same size, one consumer replaced, while a client keeps asking:
    // every request gets an answer from one snapshot or the other, none fails.
    plane.publish(&many(
        N,
        r#""second": {"plan": "unlimited", "keys": ["second-key"]}"#,
    ));
    let mut statuses = std::collections::BTreeMap::new();
    let mut slowest = Duration::ZERO;
    poll(SWITCH * 2, "the second snapshot applied", || {
        let started = Instant::now();
        let first = status(&envoy, "first-key");
        slowest = slowest.max(started.elapsed());
        let started = Instant::now();
        let second = status(&envoy, "second-key");
        slowest = slowest.max(started.elapsed());
        *statuses.entry((first, second)).or_insert(0) += 1;
        (first == 401 && second == 200).then_some(())
    });
    until(
        &envoy,
        "second-key",
        200,
        "the second snapshot on both workers",
    );
    eprintln!("(first-key, second-key) statuses during the switch: {statuses:?}; slowest request {slowest:?}");
    for (first, second) in statuses.keys() {
        assert!(
            matches!(
                (first, second),
                (200, 401) | (401, 200) | (200, 200) | (401, 401)
            ),
            "a request during the switch got {first}/{second}"
        );
    }
    let applied: Vec<String> = envoy
        .tollgate_log()
        .into_iter()
        .filter(|l| l.contains("entitlements: version"))
        .collect();
    eprintln!("{}", applied.join("\n"));
    assert!(
        applied.iter().any(|l| l.contains("100001 consumers")),
        "{applied:?}"
    );
}

#[test]
fn a_reconfigured_envoy_serves_the_stored_snapshot_at_once_even_with_the_control_plane_down() {
    const LISTENERS: &str = "envoy/live-reload/listeners.yaml";
    let with_pro = |requests: u32| {
        config("1s", "500ms").replace(r#""requests": 100"#, &format!(r#""requests": {requests}"#))
    };
    let plane = ControlPlane::start(&doc(r#""acme": {"plan": "pro", "keys": ["acme-key"]}"#));
    let envoy = Envoy::start_with(Options {
        bootstrap: "envoy/live-reload/bootstrap.yaml".into(),
        files: vec![LISTENERS.into()],
        relocate: Some("target/live-reload".into()),
        file_ports: (10200, 10201, 9921),
        plugin: Some(with_pro(100)),
        clusters: vec![(CLUSTER.to_string(), plane.port)],
        ..Options::default()
    });
    until(&envoy, "acme-key", 200, "acme from the snapshot");
    plane.answer(Answering::Down);
    // A new listener configuration (pro: 200 a day): its new VMs must serve the snapshot
    // stored in shared data from their first request, not the static consumers until the
    // control plane is back.
    envoy.replace_file(LISTENERS, Some(&with_pro(200)));
    let mut seen = Vec::new();
    poll(Duration::from_secs(60), "the new configuration", || {
        let r = envoy.get_with_key("acme-key");
        seen.push(r.status);
        assert_eq!(r.status, 200, "acme during the reconfiguration: {r:?}");
        r.header("ratelimit-policy")
            .is_some_and(|p| p.contains("q=200"))
            .then_some(())
    });
    assert_eq!(
        usage_status(&envoy, "boot-key"),
        401,
        "the static set is not back"
    );
    assert!(plane
        .fetches()
        .iter()
        .all(|f| f.status != 200 || f.etag == "\"v1\""));
}

#[test]
fn plans_from_a_snapshot_replace_the_configurations_plans() {
    let mut plane = ControlPlane::start(&doc(r#""acme": {"plan": "pro", "keys": ["acme-key"]}"#));
    let envoy = start(&plane, &config("1s", "500ms"));
    until(&envoy, "acme-key", 200, "acme from the first snapshot");
    // A plan launched on the control plane, with a consumer on it: no Envoy push.
    plane.publish(
        r#"{"plans": {"gold": {"limits": [{"name": "hourly", "requests": 2, "window": "hour"}]}},
            "consumers": {"midas": {"plan": "gold", "keys": ["midas-key"]}}}"#,
    );
    until(&envoy, "midas-key", 200, "midas on the new plan");
    within_one_window(3600, 60.0, 1, |_| {
        let first = envoy.get_with_key("midas-key");
        assert_eq!(plan_told(&first), "gold", "{first:?}");
        assert_eq!(first.remaining("hourly"), 1);
        assert_eq!(envoy.get_with_key("midas-key").status, 200);
        assert_eq!(envoy.get_with_key("midas-key").status, 402);
    });
    assert_eq!(
        usage_status(&envoy, "acme-key"),
        401,
        "consumers replaced whole"
    );
    poll(SWITCH, "the new plan's counters", || {
        (envoy.counter("tollgate.plan.gold.allowed") == 2).then_some(())
    });
}

/// Waits for tollgate's log line holding every one of `parts`.
fn logged(envoy: &Envoy, parts: &[&str]) {
    poll(SWITCH, parts.join(" … ").as_str(), || {
        envoy
            .tollgate_log()
            .iter()
            .any(|l| parts.iter().all(|p| l.contains(p)))
            .then_some(())
    });
}

#[test]
fn a_document_beyond_the_bounds_is_refused_whole_and_the_previous_set_keeps_serving() {
    let good = doc(r#""acme": {"plan": "pro", "keys": ["acme-key"]}"#);
    let mut plane = ControlPlane::start(&good);
    let envoy = start(
        &plane,
        &config_with(
            "1s",
            "500ms",
            r#", "max_document_bytes": 4096, "max_consumers": 3"#,
        ),
    );
    until(&envoy, "acme-key", 200, "acme admitted");
    // 5 000 bytes of consumers (each key within bounds), a long key, one consumer too many.
    let padding: String = (0..100)
        .map(|i| format!(r#", "pad{i:03}": {{"plan": "pro", "keys": ["pad-key-{i:03}"]}}"#))
        .collect();
    let big = doc(&format!(
        r#""acme": {{"plan": "pro", "keys": ["acme-key"]}},
           "intruder": {{"plan": "pro", "keys": ["intruder-key"]}}{padding}"#
    ));
    assert!(big.len() > 4096);
    let long_key = "k".repeat(257);
    let too_long = doc(&format!(
        r#""acme": {{"plan": "pro", "keys": ["acme-key"]}},
           "intruder": {{"plan": "pro", "keys": ["intruder-key", "{long_key}"]}}"#
    ));
    let too_many = doc(r#""acme": {"plan": "pro", "keys": ["acme-key"]},
        "intruder": {"plan": "pro", "keys": ["intruder-key"]},
        "b": {"plan": "pro"}, "c": {"plan": "pro"}"#);
    let refusals = [
        (
            big.clone(),
            format!(
                "the entitlements document is {} bytes, more than entitlements.max_document_bytes \
                 (4096) allows",
                big.len()
            ),
        ),
        (
            too_long,
            "consumers.intruder.keys[1]: a key of 257 bytes, longer than \
             entitlements.max_key_bytes (256) allows"
                .to_string(),
        ),
        (
            too_many,
            "consumers: 4 consumers, more than entitlements.max_consumers (3) allows".to_string(),
        ),
    ];
    for (i, (document, message)) in refusals.iter().enumerate() {
        plane.publish(document);
        logged(&envoy, &["entitlements: snapshot refused", message]);
        assert!(envoy.counter("tollgate.entitlements.fetch.refused") > i as u64);
        assert_eq!(status(&envoy, "acme-key"), 200, "after {message}");
        assert_eq!(status(&envoy, "intruder-key"), 401, "after {message}");
    }
    assert!(!envoy.log().contains(&long_key), "no key in the refusal");
    // Within the bounds again: applied as usual.
    plane.publish(&doc(r#""acme": {"plan": "pro", "keys": ["acme-key"]},
           "intruder": {"plan": "pro", "keys": ["intruder-key"]}"#));
    until(&envoy, "intruder-key", 200, "the snapshot within bounds");
}

#[test]
fn a_snapshot_removing_more_than_max_removed_percent_is_refused() {
    let four = doc(r#""acme": {"plan": "pro", "keys": ["acme-key"]},
        "b": {"plan": "pro", "keys": ["b-key"]}, "c": {"plan": "pro", "keys": ["c-key"]},
        "d": {"plan": "pro", "keys": ["d-key"]}"#);
    let mut plane = ControlPlane::start(&four);
    let envoy = start(
        &plane,
        &config_with("1s", "500ms", r#", "max_removed_percent": 25"#),
    );
    // The first snapshot replaces the static bootstrap consumer whole: not a removal.
    until(&envoy, "d-key", 200, "the first snapshot applied");
    // A control plane answering an empty set by mistake: refused, everyone keeps being served.
    plane.publish(r#"{"consumers": {}}"#);
    logged(
        &envoy,
        &[
            "entitlements: snapshot refused",
            "consumers: the snapshot removes 4 of the 4 consumers served (100%), more than \
             entitlements.max_removed_percent (25%) allows",
        ],
    );
    for key in ["acme-key", "b-key", "c-key", "d-key"] {
        assert_eq!(status(&envoy, key), 200, "{key} after the empty snapshot");
    }
    // Two of four (50%): refused too.
    plane.publish(&doc(r#""acme": {"plan": "pro", "keys": ["acme-key"]},
        "b": {"plan": "pro", "keys": ["b-key"]}"#));
    logged(&envoy, &["removes 2 of the 4 consumers served (50%)"]);
    assert_eq!(status(&envoy, "d-key"), 200);
    // One of four (25%): within the guard, applied.
    plane.publish(&doc(r#""acme": {"plan": "pro", "keys": ["acme-key"]},
        "b": {"plan": "pro", "keys": ["b-key"]}, "c": {"plan": "pro", "keys": ["c-key"]}"#));
    until(&envoy, "d-key", 401, "d removed");
    assert_eq!(status(&envoy, "acme-key"), 200);
    assert_eq!(envoy.counter("tollgate.entitlements.fetch.refused"), 2);
}

#[test]
fn an_unchanged_body_without_an_etag_is_neither_published_nor_recompiled_again() {
    let mut plane = ControlPlane::start(&doc(r#""acme": {"plan": "pro", "keys": ["acme-key"]}"#));
    plane.without_etags();
    let envoy = start(&plane, &config("1s", "500ms"));
    until(&envoy, "acme-key", 200, "acme admitted");
    let applied = envoy.counter("tollgate.entitlements.applied");
    // Every refresh downloads the same body again (no ETag, no 304).
    let from = plane.clock();
    poll(Duration::from_secs(60), "five more full answers", || {
        (plane
            .fetches_since(from)
            .iter()
            .filter(|f| f.status == 200)
            .count()
            >= 5)
            .then_some(())
    });
    let not_again = || {
        assert_eq!(
            envoy.counter("tollgate.entitlements.fetch.updated"),
            1,
            "published once"
        );
        assert_eq!(
            envoy.counter("tollgate.entitlements.applied"),
            applied,
            "no VM compiled the same body again"
        );
    };
    not_again();
    poll(SWITCH, "the unchanged answers counted", || {
        (envoy.counter("tollgate.entitlements.fetch.unchanged") >= 4).then_some(())
    });
    not_again();
    let versions = envoy
        .tollgate_log()
        .iter()
        .filter(|l| l.contains("entitlements: fetched version"))
        .count();
    assert_eq!(versions, 1, "one version published");
    // A changed body is published as usual.
    plane.publish(&doc(r#""acme": {"plan": "pro", "keys": ["acme-key"]},
        "newbie": {"plan": "pro", "keys": ["newbie-key"]}"#));
    until(&envoy, "newbie-key", 200, "the changed body applied");
    assert_eq!(envoy.counter("tollgate.entitlements.fetch.updated"), 2);
}
