//! Live reconfiguration: the plugin configuration changes through xDS (Envoy's file-based LDS
//! with a watched directory, envoy/live-reload/), without a restart, and every consumer keeps
//! its counts.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tollgate_testkit::*;

use std::time::Duration;

const LISTENERS: &str = "envoy/live-reload/listeners.yaml";

fn config(acme_plan: &str, globex_status: &str) -> String {
    plugin(&format!(
        r#"{{
          "plans": {{
            "free": {{"limits": [{{"name": "daily", "requests": 3, "window": "day"}}]}},
            "pro":  {{"limits": [{{"name": "daily", "requests": 10, "window": "day"}},
                                {{"name": "monthly", "requests": 1000, "window": "month"}}]}}
          }},
          "consumers": {{
            "acme":   {{"plan": "{acme_plan}", "keys": ["acme-key"]}},
            "globex": {{"plan": "pro", "keys": ["globex-key"], "status": "{globex_status}"}}
          }}
        }}"#
    ))
}

#[test]
fn a_plan_upgrade_and_a_suspension_apply_live_and_counts_survive() {
    let envoy = Envoy::start_with(Options {
        bootstrap: "envoy/live-reload/bootstrap.yaml".into(),
        files: vec![LISTENERS.into()],
        // The bootstrap watches a scratch copy in target/live-reload/: the test's directory.
        relocate: Some("target/live-reload".into()),
        file_ports: (10200, 10201, 9921),
        plugin: Some(config("free", "active")),
        ..Options::default()
    });
    let responses = within_one_window(86_400, 120.0, 1, |_| {
        let before: Vec<Response> = (0..2).map(|_| envoy.get_with_key("acme-key")).collect();
        let globex = envoy.get_with_key("globex-key");

        // acme moves from free (3 a day) to pro (10 a day, 1000 a month); globex is suspended.
        envoy.replace_file(LISTENERS, Some(&config("pro", "suspended")));
        // Polled with globex, so that acme sends nothing while the change is under way.
        let suspended = poll(Duration::from_secs(60), "the new configuration", || {
            let r = envoy.get_with_key("globex-key");
            (r.status == 402).then_some(r)
        });
        // A connection may still reach a worker on the old configuration for a moment: such
        // requests are recognised by their policy (q=3) and counted in the expectation.
        let mut admitted_by_old = 0;
        let upgraded = poll(Duration::from_secs(60), "acme on the new plan", || {
            let r = envoy.get_with_key("acme-key");
            if r.header("ratelimit-policy")
                .unwrap_or_default()
                .contains("q=10")
            {
                return Some(r);
            }
            admitted_by_old += u64::from(r.status == 200);
            None
        });
        (before, globex, (upgraded, admitted_by_old), suspended)
    });
    let (before, globex, (upgraded, admitted_by_old), suspended) = responses;
    assert_eq!(before[1].remaining("daily"), 1, "{:?}", before[1]);
    assert_eq!(globex.status, 200);
    // The daily count carried over (2 before, any admitted during the switch, this one); the
    // new monthly limit starts fresh.
    assert_eq!(upgraded.status, 200, "{upgraded:?}");
    assert_eq!(
        upgraded.remaining("daily"),
        10 - (2 + admitted_by_old + 1),
        "{upgraded:?}"
    );
    assert_eq!(upgraded.remaining("monthly"), 999);
    assert_eq!(suspended.status, 402);
    assert_eq!(
        suspended.json()["type"],
        "urn:tollgate:problem:subscription-suspended"
    );
    // Same process throughout, and tollgate was configured again.
    let configured = envoy
        .tollgate_log()
        .iter()
        .filter(|l| l.contains("configured:"))
        .count();
    assert!(configured >= 2, "{}", envoy.log());
    // LDS applied the new listener: one successful update at start, at least one more since.
    let stats = request(envoy.admin, "GET", "/stats", &[]).body;
    let updates: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("listener_manager.lds.update_success: "))
        .unwrap_or_else(|| panic!("no LDS update counter in /stats:\n{stats}"))
        .trim()
        .parse()
        .unwrap();
    assert!(updates >= 2, "LDS was not updated ({updates}):\n{stats}");
}
