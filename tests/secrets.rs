//! Secrets out of the plugin configuration, through real Envoy: the `Authorization` values of
//! the events sink and of the control plane given as names of environment variables of the Wasm
//! VM (`authorization_env`), which Envoy fills from its own environment
//! (`vm_config.environment_variables.host_env_keys`). The sink and the control plane get the
//! values; Envoy's admin `/config_dump` and its log never hold them.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use tollgate_testkit::*;

const EVENTS_SECRET: &str = "Bearer ev-7c1e0b9d4a";
const PLANE_SECRET: &str = "Bearer cp-3f9a62d1e8";
const DEADLINE: Duration = Duration::from_secs(30);

/// The shipped envoy.yaml's `vm_config` line, and what the tests add after it: the variables
/// the Wasm VM copies from Envoy's environment.
const RUNTIME: &str = "runtime: envoy.wasm.runtime.v8";
fn with_host_env_keys(keys: &[&str]) -> (String, String) {
    (
        RUNTIME.to_string(),
        format!(
            "{RUNTIME}\n                  environment_variables:\n                    \
             host_env_keys: [{}]",
            keys.join(", ")
        ),
    )
}

fn config() -> String {
    plugin(
        r#"{
          "plans": {"free": {"limits": [{"name": "daily", "requests": 100, "window": "day"}]}},
          "consumers": {"boot": {"plan": "free", "keys": ["boot-key"]}},
          "events": {"cluster": "sink", "url": "http://events.test/ingest", "interval": "1s",
                     "authorization_env": "TOLLGATE_EVENTS_AUTH"},
          "entitlements": {"cluster": "control_plane", "path": "/v1/consumers", "refresh": "1s",
                           "authorization_env": "TOLLGATE_ENTITLEMENTS_AUTH"}
        }"#,
    )
}

#[test]
fn secrets_from_the_vm_environment_reach_the_sink_and_the_control_plane_but_not_the_config_dump() {
    let sink = Sink::start();
    let plane =
        ControlPlane::start(r#"{"consumers": {"acme": {"plan": "free", "keys": ["acme-key"]}}}"#);
    let envoy = Envoy::start_with(Options {
        plugin: Some(config()),
        clusters: vec![
            ("sink".into(), sink.port),
            ("control_plane".into(), plane.port),
        ],
        replace: vec![with_host_env_keys(&[
            "TOLLGATE_EVENTS_AUTH",
            "TOLLGATE_ENTITLEMENTS_AUTH",
        ])],
        env: vec![
            ("TOLLGATE_EVENTS_AUTH".into(), EVENTS_SECRET.into()),
            ("TOLLGATE_ENTITLEMENTS_AUTH".into(), PLANE_SECRET.into()),
        ],
        ..Options::default()
    });
    // The control plane was asked with its secret, and its consumer is admitted.
    poll(DEADLINE, "acme admitted from the control plane", || {
        (envoy.get_with_key("acme-key").status == 200).then_some(())
    });
    let fetches = plane.fetches();
    assert!(!fetches.is_empty());
    assert!(
        fetches
            .iter()
            .all(|f| f.authorization.as_deref() == Some(PLANE_SECRET)),
        "{fetches:?}"
    );
    // The sink got acme's usage with its own secret.
    poll(DEADLINE, "a usage event at the sink", || {
        sink.accepted()
            .iter()
            .any(|e| e["subject"] == "acme")
            .then_some(())
    });
    let received = sink.received();
    assert!(
        received
            .iter()
            .all(|r| r.header("authorization") == Some(EVENTS_SECRET)),
        "{:?}",
        received
            .iter()
            .map(|r| r.header("authorization"))
            .collect::<Vec<_>>()
    );
    // Envoy shows the plugin configuration and the VM's configuration, which name the
    // variables, never their values.
    let dump = envoy.config_dump();
    assert!(
        dump.contains("TOLLGATE_EVENTS_AUTH") && dump.contains("host_env_keys"),
        "the dump holds the plugin and VM configuration: {dump}"
    );
    for secret in [EVENTS_SECRET, PLANE_SECRET] {
        let value = secret.trim_start_matches("Bearer ");
        assert!(!dump.contains(value), "{value} is in /config_dump");
        assert!(!envoy.log().contains(value), "{value} is in Envoy's log");
    }
}

#[test]
fn a_variable_the_vm_lacks_refuses_the_configuration_naming_field_and_variable() {
    // Set in Envoy's environment but not passed to the VM (no host_env_keys): the VM does not
    // see Envoy's environment, only what vm_config gives it.
    let failure = match Envoy::try_start(Options {
        plugin: Some(config()),
        clusters: vec![("sink".into(), 1), ("control_plane".into(), 1)],
        replace: vec![with_host_env_keys(&["TOLLGATE_ENTITLEMENTS_AUTH"])],
        env: vec![
            ("TOLLGATE_EVENTS_AUTH".into(), EVENTS_SECRET.into()),
            ("TOLLGATE_ENTITLEMENTS_AUTH".into(), PLANE_SECRET.into()),
        ],
        ..Options::default()
    }) {
        Ok(envoy) => panic!("Envoy accepted it:\n{}", envoy.log()),
        Err(failure) => failure,
    };
    assert!(
        failure.log.contains(
            "configuration refused: events.authorization_env: environment variable \
             `TOLLGATE_EVENTS_AUTH` is not set in the Wasm VM"
        ),
        "{}",
        failure.log
    );
    assert!(!failure.log.contains("ev-7c1e0b9d4a"));
}
