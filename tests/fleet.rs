//! Fleet mode end to end, one Envoy: real Redis, the built quotad, real Envoy with the release
//! `.wasm` and `store.rls` pointing at quotad. Counts live in Redis; the filter spends leases.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use tollgate_testkit::*;

fn config(on_store_error: &str, timeout: &str, lease: u64, quota: u64) -> String {
    plugin(&format!(
        r#"{{
          "store": {{"rls": {{"cluster": "tollgate_quotad", "timeout": "{timeout}", "lease": {lease}}}}},
          "on_store_error": "{on_store_error}",
          "plans": {{
            "small": {{"limits": [{{"name": "daily", "requests": {quota}, "window": "day"}},
                                 {{"name": "monthly", "requests": 100000, "window": "month"}}]}},
            "big": {{"limits": [{{"name": "daily", "requests": 1000000, "window": "day"}}]}},
            "unlimited": {{"limits": []}}
          }},
          "consumers": {{
            "acme": {{"plan": "small", "keys": ["acme-key"]}},
            "hooli": {{"plan": "big", "keys": ["hooli-key"]}},
            "umbrella-1": {{"plan": "big", "keys": ["umbrella-1-key"]}},
            "umbrella-2": {{"plan": "big", "keys": ["umbrella-2-key"]}},
            "umbrella-3": {{"plan": "big", "keys": ["umbrella-3-key"]}},
            "initech": {{"plan": "small", "keys": ["initech-key"], "status": "suspended"}},
            "ops": {{"plan": "unlimited", "keys": ["ops-key"]}}
          }},
          "usage_path": "/tollgate/usage"
        }}"#
    ))
}

/// Sends `n` requests with `key` from `threads` connections at once; returns the statuses.
fn burst(port: u16, key: &str, n: usize, threads: usize) -> Vec<u16> {
    let per = n.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let key = key.to_string();
            let count = per.min(n.saturating_sub(t * per));
            std::thread::spawn(move || {
                let mut conn = Conn::new(port);
                (0..count)
                    .map(|_| conn.get("/", &[("x-api-key", key.as_bytes())]).status)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[test]
fn one_envoy_admits_exactly_the_quota_counted_in_redis_in_few_store_calls() {
    let redis = Redis::start_aof();
    let quotad = Quotad::fleet(&redis);
    let envoy = fleet_envoy(&quotad, &config("deny", "1s", 100, 37), 2);

    // 60 requests from 6 connections over both workers: 37 admitted, the rest refused.
    let statuses = burst(envoy.port, "acme-key", 60, 6);
    assert_eq!(count(&statuses, 200), 37, "{statuses:?}");
    assert_eq!(count(&statuses, 402), 23, "{statuses:?}");
    assert_eq!(redis.counted("tollgate", "acme", "daily"), 37);
    assert_eq!(redis.counted("tollgate", "acme", "monthly"), 37);

    // Refused from the lease and the memo: more refusals make no store call.
    let calls = quotad.decisions();
    assert!(
        calls < 37,
        "leases: fewer store calls than requests ({calls})"
    );
    let r = envoy.get_with_key("acme-key");
    assert_eq!(r.status, 402);
    assert_eq!(r.json()["violated-policies"][0], "daily");
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        quotad.decisions(),
        calls,
        "a spent consumer costs no store call"
    );

    // Unknown, suspended and unlimited consumers never cost a store call.
    assert_eq!(envoy.get_with_key("nobody").status, 401);
    assert_eq!(envoy.get_with_key("initech-key").status, 402);
    assert_eq!(envoy.get_with_key("ops-key").status, 200);
    assert_eq!(quotad.decisions(), calls);

    // A consumer with traffic: RateLimit from the store's figures, never more than is left.
    let first = envoy.get_with_key("hooli-key");
    assert_eq!(first.status, 200);
    let r = first.remaining("daily");
    assert!((1_000_000 - 200..1_000_000).contains(&r), "r={r}");
    let statuses = burst(envoy.port, "hooli-key", 200, 4);
    assert_eq!(count(&statuses, 200), 200);
    let used = redis.counted("tollgate", "hooli", "daily");
    assert!(
        (201..=201 + 2 * 100).contains(&used),
        "taken in leases: {used}"
    );
    let calls = quotad.decisions();
    let usage = envoy.get("/tollgate/usage", &[("x-api-key", "hooli-key")]);
    assert_eq!(usage.status, 200, "{}", usage.body);
    assert_eq!(
        quotad.decisions(),
        calls + 1,
        "the usage endpoint asks the store (other Envoys spend too)"
    );
    let remaining = usage.json()["limits"][0]["remaining"].as_u64().unwrap();
    assert!(
        remaining <= 1_000_000 - 201,
        "usage never overstates what is left: {remaining}"
    );
    // No key ever reaches the log.
    assert!(!envoy.log().contains("acme-key"));
}

#[test]
fn a_lease_running_low_is_refilled_while_its_requests_go_on() {
    let redis = Redis::start_aof();
    let quotad = Quotad::fleet(&redis);
    let envoy = fleet_envoy(&quotad, &config("deny", "1s", 10, 37), 2);

    // One connection, one request at a time. The first waits for a lease of 10; the next four
    // spend it down to half, and the fifth claims the refill ahead of time, answered at once.
    let mut conn = Conn::new(envoy.port);
    for i in 1..=5 {
        let r = conn.get("/", &[("x-api-key", b"hooli-key")]);
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    poll(
        Duration::from_secs(20),
        "the refill ahead reaches the store",
        || (quotad.decisions() == 2).then_some(()),
    );
    // 10, then topped up by 5 back to 10, all in Redis; only the first request was held.
    poll(
        Duration::from_secs(20),
        "the refill ahead is applied",
        || (redis.counted("tollgate", "hooli", "daily") == 15).then_some(()),
    );
    poll(
        Duration::from_secs(20),
        "the fleet counters are flushed",
        || (envoy.counter("tollgate.fleet.store_calls") == 2).then_some(()),
    );
    assert_eq!(envoy.counter("tollgate.fleet.refills_ahead"), 1);
    assert_eq!(envoy.counter("tollgate.fleet.held"), 1);
    // `r`: what the store has left plus this Envoy's unspent lease, whether the top-up was
    // applied yet or not — 6 spent.
    let r = conn.get("/", &[("x-api-key", b"hooli-key")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.remaining("daily"),
        1_000_000 - 6,
        "{:?}",
        r.header("ratelimit")
    );
}

#[test]
fn quotad_down_is_a_503_or_uncounted_and_counting_resumes_when_it_is_back() {
    let redis = Redis::start_aof();
    let mut quotad = Quotad::fleet(&redis);
    let deny = fleet_envoy(&quotad, &config("deny", "500ms", 100, 1000), 2);
    let allow = fleet_envoy(&quotad, &config("allow", "500ms", 100, 1000), 2);
    assert_eq!(deny.get_with_key("acme-key").status, 200);

    quotad.stop();
    // A fresh consumer (no lease yet) needs the store.
    let started = Instant::now();
    let r = deny.get_with_key("hooli-key");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["type"], "urn:tollgate:problem:quota-unavailable");
    let grpc = deny.get(
        "/",
        &[
            ("x-api-key", "hooli-key"),
            ("content-type", "application/grpc"),
        ],
    );
    assert_eq!(grpc.header("grpc-status"), Some("14"), "{grpc:?}");
    let r = allow.get_with_key("hooli-key");
    assert_eq!(r.status, 200, "on_store_error allow: forwarded uncounted");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "each within the timeout"
    );
    assert_eq!(redis.counted("tollgate", "hooli", "daily"), 0);

    quotad.restart();
    // Counting resumes without restarting Envoy (its connection to quotad comes back).
    poll(Duration::from_secs(30), "counting to resume", || {
        (deny.get_with_key("hooli-key").status == 200).then_some(())
    });
    assert!(redis.counted("tollgate", "hooli", "daily") >= 1);
}

#[test]
fn on_store_error_local_counts_in_the_envoy_while_quotad_is_down_then_the_store_again() {
    let redis = Redis::start_aof();
    let mut quotad = Quotad::fleet(&redis);
    let envoy = fleet_envoy(&quotad, &config("local", "300ms", 100, 3), 2);
    // acme may make 3 requests a day; the store counts the first (leases of 1 near the end).
    assert_eq!(envoy.get_with_key("acme-key").status, 200);
    assert_eq!(redis.counted("tollgate", "acme", "daily"), 1);

    quotad.stop();
    // The store is gone: this Envoy counts on its own, against the whole plan (3), from 0.
    let mut conn = Conn::new(envoy.port);
    for remaining in [2, 1, 0] {
        let r = conn.get("/", &[("x-api-key", b"acme-key")]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.remaining("daily"), remaining);
    }
    let r = conn.get("/", &[("x-api-key", b"acme-key")]);
    assert_eq!(r.status, 402, "{}", r.body);
    assert_eq!(r.json()["violated-policies"][0], "daily");
    assert_eq!(redis.counted("tollgate", "acme", "daily"), 1);
    // Every request decided locally counts as a store error (flushed once a second).
    poll(
        Duration::from_secs(20),
        "the store errors to be counted",
        || (envoy.counter("tollgate.errors.store") >= 4).then_some(()),
    );
    // One error line a minute per worker says so (one connection: one worker), the others
    // are counted as held back.
    let lines = |text: &str| envoy.log().matches(text).count();
    assert_eq!(lines("cannot count the request"), 1, "{}", envoy.log());
    assert_eq!(lines("on_store_error=local: counted in this Envoy"), 1);
    poll(
        Duration::from_secs(20),
        "held-back lines to be counted",
        || (envoy.counter("tollgate.logs.store_error_suppressed") >= 3).then_some(()),
    );

    // The store is back: it decides again (the local refusal was not remembered) and counts
    // from its own figure: 2 more.
    quotad.restart();
    poll(Duration::from_secs(30), "the store to count again", || {
        let status = conn.get("/", &[("x-api-key", b"acme-key")]).status;
        (status == 200 && redis.counted("tollgate", "acme", "daily") == 2).then_some(())
    });
}

#[test]
fn a_frozen_quotad_holds_no_request_past_the_timeout() {
    let redis = Redis::start_aof();
    let quotad = Quotad::fleet(&redis);
    let envoy = fleet_envoy(&quotad, &config("deny", "200ms", 100, 1000), 2);
    assert_eq!(envoy.get_with_key("acme-key").status, 200);

    quotad.freeze();
    // Four requests at once for a consumer whose lease is empty: every one 503 within the
    // 200 ms timeout plus a margin — well below the 900 ms a request could be held at most.
    // On a loaded 2-core machine a request can be late for reasons of its own (another test's
    // Envoy starting), so the measurement is made again, with a consumer whose lease is still
    // empty, up to three times: code that holds requests past the timeout is late every time.
    let bound = Duration::from_millis(200 + 400);
    let mut attempts = Vec::new();
    for consumer in ["umbrella-1", "umbrella-2", "umbrella-3"] {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let port = envoy.port;
                let key = format!("{consumer}-key");
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let r = Conn::new(port).get("/", &[("x-api-key", key.as_bytes())]);
                    (r.status, started.elapsed())
                })
            })
            .collect();
        let answers: Vec<(u16, Duration)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        eprintln!("frozen, {consumer}: {answers:?}");
        for (status, took) in &answers {
            assert_eq!(*status, 503, "after {took:?}: {answers:?}");
        }
        let in_time = answers.iter().all(|(_, took)| *took < bound);
        attempts.push(answers);
        if in_time {
            break;
        }
    }
    assert!(
        attempts
            .last()
            .unwrap()
            .iter()
            .all(|(_, took)| *took < bound),
        "late in every attempt (bound {bound:?}): {attempts:?}"
    );
    quotad.thaw();
    poll(Duration::from_secs(30), "counting to resume", || {
        (envoy.get_with_key("hooli-key").status == 200).then_some(())
    });
}

#[test]
fn live_reconfiguration_keeps_the_fleet_count() {
    const LISTENERS: &str = "envoy/live-reload/listeners.yaml";
    let redis = Redis::start_aof();
    let quotad = Quotad::fleet(&redis);
    let envoy = Envoy::start_with(Options {
        bootstrap: "envoy/live-reload/bootstrap.yaml".into(),
        files: vec![LISTENERS.into()],
        relocate: Some("target/live-reload".into()),
        file_ports: (10200, 10201, 9921),
        plugin: Some(config("deny", "1s", 100, 12)),
        // The fleet files' quotad cluster (mutual TLS) in place of the file's plaintext one.
        replace: vec![(
            "  - name: tollgate_quotad\n".to_string(),
            format!(
                "{}  - name: plaintext_quotad_unused\n",
                quotad_cluster(&quotad)
            ),
        )],
        ..Options::default()
    });
    within_one_window(86_400, 120.0, 1, |_| {
        let before = burst(envoy.port, "acme-key", 5, 1);
        assert_eq!(count(&before, 200), 5);
        // The daily quota goes from 12 to 20, live.
        envoy.replace_file(LISTENERS, Some(&config("deny", "1s", 100, 20)));
        let mut admitted = 5;
        poll(Duration::from_secs(60), "the new configuration", || {
            let r = envoy.get_with_key("acme-key");
            admitted += u64::from(r.status == 200);
            r.header("ratelimit-policy")
                .unwrap_or_default()
                .contains("q=20")
                .then_some(())
        });
        // Drain: the count went on from the store, under the new size.
        loop {
            let r = envoy.get_with_key("acme-key");
            match r.status {
                200 => admitted += 1,
                402 => break,
                other => panic!("status {other}"),
            }
            assert!(admitted <= 20, "more than the new quota");
        }
        assert_eq!(redis.counted("tollgate", "acme", "daily"), 20);
        // A lease taken under the old size is dropped by the new one (at most one lease, here 1).
        assert!(20 - admitted <= 1, "admitted {admitted} of 20");
    });
}

fn manifest(path: &str) -> serde_norway::Value {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap();
    serde_norway::from_str(&text).unwrap()
}

fn fleet_config(value: &serde_norway::Value) -> tollgate::config::Config {
    let json = serde_json::to_string(value).unwrap();
    let config = tollgate::config::Config::from_json(json.as_bytes())
        .unwrap_or_else(|e| panic!("not a valid tollgate configuration: {e}\n{json}"));
    assert!(config.store.is_some(), "a fleet variant sets store.rls");
    config
}

/// The quotad Service of envoy/fleet/quotad-k8s.yaml: (name, namespace, gRPC port).
fn quotad_service() -> (String, String, u64) {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/fleet/quotad-k8s.yaml"),
    )
    .unwrap();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let doc = serde_norway::Value::deserialize(doc).unwrap();
        if doc["kind"] == "Service" && doc["metadata"]["name"] == "quotad" {
            let port = doc["spec"]["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "grpc")
                .unwrap();
            assert_eq!(port["appProtocol"], "grpc", "HTTP/2 to quotad");
            return (
                "quotad".into(),
                doc["metadata"]["namespace"].as_str().unwrap().into(),
                port["port"].as_u64().unwrap(),
            );
        }
    }
    panic!("no quotad Service in quotad-k8s.yaml");
}

use serde::Deserialize;

#[test]
fn the_mesh_manifests_have_fleet_variants_that_reach_quotad() {
    let (service, namespace, port) = quotad_service();
    let fqdn = format!("{service}.{namespace}.svc.cluster.local");

    // Istio: the cluster Istio gives the quotad Service.
    let istio = manifest("envoy/fleet/istio-wasmplugin.yaml");
    assert_eq!(istio["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(istio["kind"], "WasmPlugin");
    assert_eq!(istio["spec"]["failStrategy"], "FAIL_CLOSE");
    let config = fleet_config(&istio["spec"]["pluginConfig"]);
    assert_eq!(
        config.store.unwrap().cluster,
        format!("outbound|{port}||{fqdn}")
    );

    // Istio's own mutual TLS in front of quotad: STRICT, and only the gateway's identity
    // may reach the gRPC port of the Deployment's pods.
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/fleet/istio-quotad-mtls.yaml"),
    )
    .unwrap();
    let docs: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde_norway::Value::deserialize(d).unwrap())
        .collect();
    let peer = docs
        .iter()
        .find(|d| d["kind"] == "PeerAuthentication")
        .unwrap();
    assert_eq!(peer["spec"]["mtls"]["mode"], "STRICT");
    let allow = docs
        .iter()
        .find(|d| d["kind"] == "AuthorizationPolicy")
        .unwrap();
    assert_eq!(
        allow["metadata"]["namespace"].as_str(),
        Some(namespace.as_str())
    );
    assert_eq!(allow["spec"]["action"], "ALLOW");
    assert_eq!(peer["spec"]["selector"], allow["spec"]["selector"]);
    assert_eq!(
        allow["spec"]["rules"][0]["to"][0]["operation"]["ports"][0].as_str(),
        Some(port.to_string().as_str())
    );

    // Envoy Gateway: the policy's cluster is the one the patch adds, HTTP/2 to the Service.
    let policy = manifest("envoy/fleet/envoy-gateway-policy.yaml");
    assert_eq!(policy["kind"], "EnvoyExtensionPolicy");
    assert_eq!(policy["spec"]["wasm"][0]["failOpen"], false);
    let cluster_name = fleet_config(&policy["spec"]["wasm"][0]["config"])
        .store
        .unwrap()
        .cluster;
    let patch = manifest("envoy/fleet/envoy-gateway-quotad-cluster.yaml");
    assert_eq!(patch["kind"], "EnvoyPatchPolicy");
    assert_eq!(patch["spec"]["type"], "JSONPatch");
    let op = &patch["spec"]["jsonPatches"][0];
    assert_eq!(
        op["type"],
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    );
    assert_eq!(op["name"].as_str(), Some(cluster_name.as_str()));
    let cluster = &op["operation"]["value"];
    assert_eq!(cluster["name"].as_str(), Some(cluster_name.as_str()));
    let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ["address"]["socket_address"];
    assert_eq!(address["address"].as_str(), Some(fqdn.as_str()));
    assert_eq!(address["port_value"].as_u64(), Some(port));
    // Mutual TLS: Envoy checks quotad's name, and presents the client certificate.
    let tls = &cluster["transport_socket"]["typed_config"];
    assert_eq!(tls["sni"].as_str(), Some(fqdn.as_str()));
    assert_eq!(
        tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]
            ["matcher"]["exact"]
            .as_str(),
        Some(fqdn.as_str())
    );
    // The cluster is one Envoy accepts: validated inside a bootstrap by Envoy itself, with test
    // certificates where the pods mount the Secret.
    let dir = TempDir::named("fleet-patch");
    let certs = FleetCerts::new();
    for (from, to) in [
        (&certs.gateway.cert, "tls.crt"),
        (&certs.gateway.key, "tls.key"),
        (&certs.pki.ca(), "ca.crt"),
    ] {
        std::fs::copy(from, dir.join(to)).unwrap();
    }
    let cluster_json = serde_json::to_string(cluster).unwrap().replace(
        "/etc/tollgate/quotad-client",
        &dir.path().display().to_string(),
    );
    let bootstrap = serde_json::json!({
        "static_resources": {"clusters": [serde_json::from_str::<serde_json::Value>(&cluster_json).unwrap()]}
    });
    let file = dir.join("bootstrap.json");
    std::fs::write(&file, bootstrap.to_string()).unwrap();
    let out = std::process::Command::new(envoy_path())
        .args(["--mode", "validate", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_cluster_envoy_does_not_know_is_a_store_error_naming_it() {
    let redis = Redis::start_aof();
    let quotad = Quotad::fleet(&redis);
    let plugin = config("deny", "1s", 100, 10).replace("tollgate_quotad", "no_such_cluster");
    let envoy = fleet_envoy(&quotad, &plugin, 1);
    for _ in 0..3 {
        let started = Instant::now();
        let r = envoy.get_with_key("acme-key");
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    let log = envoy.log();
    assert!(
        log.contains("cannot call the rate limit service (cluster no_such_cluster)"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "the VM did not trap");
    // Consumers without limits are unaffected.
    assert_eq!(envoy.get_with_key("ops-key").status, 200);
}

#[test]
fn a_server_that_answers_only_overall_code_decides_each_request_with_lease_one() {
    // Kuadrant's Limitador answers `overall_code` and no per-limit statuses. With `lease: 1`
    // each request is decided by its own call: OK admits it (without RateLimit fields: nothing
    // is known of what is left), OVER_LIMIT refuses it with the plan's status, never a 503.
    let server = OverallOnlyRls::start(7);
    let envoy = Envoy::start_with(fleet_options_at(
        server.port,
        &config("deny", "500ms", 1, 1000),
        2,
    ));
    let mut conn = Conn::new(envoy.port);
    for i in 0..7 {
        let r = conn.get("/", &[("x-api-key", b"acme-key")]);
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert_eq!(r.header("ratelimit"), None, "request {i}: {r:?}");
    }
    let r = conn.get("/", &[("x-api-key", b"acme-key")]);
    assert_eq!(r.status, 402, "{}", r.body);
    assert_eq!(
        r.json()["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );
    // The day ends before the month: the daily limit is named, and the retry is for its end.
    assert_eq!(r.json()["violated-policies"], serde_json::json!(["daily"]));
    assert_eq!(server.calls(), 8, "one call per request");
    // Not remembered: the next request asks the server again.
    assert_eq!(conn.get("/", &[("x-api-key", b"acme-key")]).status, 402);
    assert_eq!(server.calls(), 9);

    // With a lease above 1, such answers cannot size a lease: a 503 and a log line that says
    // what to set.
    let bigger = Envoy::start_with(fleet_options_at(
        server.port,
        &config("deny", "500ms", 100, 1000),
        2,
    ));
    assert_eq!(bigger.get_with_key("hooli-key").status, 503);
    poll(Duration::from_secs(10), "the log line", || {
        bigger
            .log()
            .contains("set store.rls.lease to 1 for such a server")
            .then_some(())
    });
}

/// The usual plan of an API: a daily quota fleet-wide, and a burst limit each Envoy counts on
/// its own (`scope: envoy`): a quiet consumer's new burst window costs no store call.
#[test]
fn a_per_envoy_burst_limit_is_counted_by_each_envoy_and_never_asks_the_store() {
    let redis = Redis::start();
    let quotad = Quotad::fleet(&redis);
    let consumers: String = (0..3)
        .map(|i| format!(r#""quiet-{i}": {{"plan": "api", "keys": ["quiet-{i}-key"]}}"#))
        .collect::<Vec<_>>()
        .join(", ");
    let plugin = plugin(&format!(
        r#"{{
          "store": {{"rls": {{"cluster": "tollgate_quotad", "timeout": "1s", "lease": 100}}}},
          "plans": {{"api": {{"limits": [
            {{"name": "daily", "requests": 1000, "window": "day"}},
            {{"name": "burst", "requests": 5, "window": "10s", "status": 429, "scope": "envoy"}}
          ]}}}},
          "consumers": {{ {consumers} }}
        }}"#
    ));
    let envoys = [
        fleet_envoy(&quotad, &plugin, 2),
        fleet_envoy(&quotad, &plugin, 2),
    ];
    let send = |envoy: &Envoy, key: &str, n: usize| -> Vec<Response> {
        let mut conn = Conn::new(envoy.port);
        (0..n)
            .map(|_| conn.get("/", &[("x-api-key", key.as_bytes())]))
            .collect()
    };
    // Within one 10 s window: each Envoy admits the burst, 5 — 10 across the two.
    let who = within_one_window(10, 6.0, 3, |attempt| {
        let key = format!("quiet-{attempt}-key");
        for envoy in &envoys {
            let responses = send(envoy, &key, 8);
            let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
            assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
            let refused = &responses[5];
            assert_eq!(
                refused.json()["violated-policies"][0],
                "burst",
                "{refused:?}"
            );
            assert!(refused.header("retry-after").is_some(), "{refused:?}");
        }
        format!("quiet-{attempt}")
    });
    assert_eq!(
        redis.counted("tollgate", &who, "burst"),
        0,
        "the burst limit never reaches the store"
    );
    let daily = redis.counted("tollgate", &who, "daily");
    assert!((10..=200).contains(&daily), "two daily leases: {daily}");
    // The next 10 s window: the burst starts again in each Envoy, from the daily leases they
    // hold, without a store call.
    let calls = quotad.decisions();
    align_to_window(10, 10.0);
    let key = format!("{who}-key");
    for envoy in &envoys {
        let statuses: Vec<u16> = send(envoy, &key, 3).iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 200, 200]);
    }
    assert_eq!(
        quotad.decisions(),
        calls,
        "a new burst window costs no store call"
    );
    assert_eq!(redis.counted("tollgate", &who, "daily"), daily);
}
