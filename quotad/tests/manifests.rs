//! The Kubernetes manifest (envoy/fleet/quotad-k8s.yaml) agrees with quotad: every flag it passes
//! is one quotad knows and accepts, its ports are the ones the flags listen on, the Service and
//! probes name real ports, and the Redis it points at is the one it deploys.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;

use common::*;
use serde_yaml::Value;

fn documents() -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("envoy/fleet/quotad-k8s.yaml")).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn port_named(ports: &Value, name: &str) -> u64 {
    ports
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64().or(p["port"].as_u64()))
        .unwrap_or_else(|| panic!("no port {name} in {ports:?}"))
}

#[test]
fn the_kubernetes_manifest_runs_quotad_as_documented() {
    let docs = documents();
    let deployment = kind(&docs, "Deployment", "quotad");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let flag = |name: &str| -> String {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("no --{name} in {args:?}"))
            .to_string()
    };

    // Every flag is accepted by the built quotad: `--help` after them parses them all first
    // (an unknown flag or bad value is an error, not help).
    let help = Command::new(env!("CARGO_BIN_EXE_quotad"))
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        help.status.success(),
        "quotad refuses the manifest's arguments: {}",
        String::from_utf8_lossy(&help.stderr)
    );
    let help_text = String::from_utf8_lossy(&help.stdout);
    for a in &args {
        let name = a.split('=').next().unwrap();
        assert!(help_text.contains(name), "{name} is not in quotad --help");
    }

    let ports = &container["ports"];
    let grpc = port_named(ports, "grpc");
    let http = port_named(ports, "http");
    assert!(flag("listen").ends_with(&format!(":{grpc}")));
    assert!(flag("http-listen").ends_with(&format!(":{http}")));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "http");
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 5);

    let service = kind(&docs, "Service", "quotad");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
    for p in service["spec"]["ports"].as_sequence().unwrap() {
        let target = p["targetPort"].as_str().unwrap();
        port_named(ports, target);
    }

    // The Redis quotad is pointed at is the Service deployed beside it.
    let redis_service = kind(&docs, "Service", "redis");
    let namespace = redis_service["metadata"]["namespace"].as_str().unwrap();
    let redis_port = port_named(&redis_service["spec"]["ports"], "redis");
    assert_eq!(
        flag("redis"),
        format!("redis://redis.{namespace}.svc.cluster.local:{redis_port}")
    );
    let redis = kind(&docs, "StatefulSet", "redis");
    let redis_args = format!(
        "{:?}",
        redis["spec"]["template"]["spec"]["containers"][0]["args"]
    );
    assert!(redis_args.contains("appendonly"), "{redis_args}");
}
