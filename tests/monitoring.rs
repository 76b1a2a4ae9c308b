//! envoy/monitoring/: the Prometheus alert rules and the Grafana dashboard name only metrics a
//! running Envoy with tollgate really exports at /stats/prometheus, and the rules pass
//! `promtool check rules` (Debian's prometheus package, installed by `make test`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tollgate_testkit::*;

use std::collections::BTreeSet;
use std::process::Command;

fn file(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("envoy/monitoring")
            .join(name),
    )
    .unwrap()
}

/// Every `tollgate_…` metric a query names (exact names), and every `__name__=~"…"` pattern.
fn metric_names(query: &str, names: &mut BTreeSet<String>, patterns: &mut BTreeSet<String>) {
    let bytes: Vec<char> = query.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..].iter().collect();
        if let Some(pattern) = rest.strip_prefix("__name__=~\"") {
            let end = pattern.find('"').unwrap();
            patterns.insert(pattern[..end].to_string());
            i += "__name__=~\"".len() + end + 1;
            continue;
        }
        let starts_word = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_');
        if starts_word && rest.starts_with("tollgate_") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            i += name.len();
            // `tollgate_plan_<plan>_…` in prose is a placeholder, not a metric.
            if !name.ends_with('_') {
                names.insert(name);
            }
            continue;
        }
        i += 1;
    }
}

fn queries() -> Vec<String> {
    let rules: serde_norway::Value = serde_norway::from_str(&file("tollgate-alerts.yaml")).unwrap();
    let mut out: Vec<String> = rules["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&file("tollgate-dashboard.json")).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            out.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    out
}

#[test]
fn rules_and_dashboard_name_only_metrics_envoy_exports() {
    let (mut names, mut patterns) = (BTreeSet::new(), BTreeSet::new());
    for query in queries() {
        metric_names(&query, &mut names, &mut patterns);
    }
    assert!(names.len() >= 12, "{names:?}");
    assert!(patterns.len() >= 2, "{patterns:?}");
    let envoy = Envoy::start(&plugin(
        r#"{"plans": {"free": {"limits": [{"name": "daily", "requests": 5, "window": "day"}]},
                      "pro": {"limits": [{"name": "monthly", "requests": 50, "window": "month"}],
                              "credits": ["monthly"]}},
            "consumers": {"acme": {"plan": "free", "keys": ["acme-key"]}},
            "events": {"cluster": "nowhere", "url": "http://nowhere/"},
            "payments": {"facilitator": {"cluster": "nowhere", "url": "http://nowhere/x402"},
                         "resource": {"url": "https://api.example.com/"},
                         "packs": [{"name": "p", "credits": 10, "network": "eip155:84532",
                                    "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                                    "amount": "10000",
                                    "pay_to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
                                    "extra": {"name": "USDC", "version": "2"}}]}}"#,
    ));
    let exported: BTreeSet<String> = request(envoy.admin, "GET", "/stats/prometheus", &[])
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = names.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "not exported by Envoy: {missing:?}\nexported: {exported:?}"
    );
    // Each pattern (PromQL regexes are anchored) matches the per-plan counter of both plans.
    for pattern in &patterns {
        let (prefix, suffix) = pattern.split_once(".+").unwrap();
        for plan in ["free", "pro"] {
            let name = format!("{prefix}{plan}{suffix}");
            assert!(
                exported.contains(&name),
                "{pattern}: no {name} in {exported:?}"
            );
        }
    }
}

#[test]
fn the_alert_rules_pass_promtool() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("envoy/monitoring/tollgate-alerts.yaml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("promtool is missing: `make test` installs Debian's prometheus package");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS: 11 rules found"), "{text}");
}
