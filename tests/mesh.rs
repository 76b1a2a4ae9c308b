//! Wiring into meshes: every Envoy configuration in envoy/ is valid for Envoy, the per-route
//! example exempts its health route, and the Istio and Envoy Gateway manifests use the field
//! names docs/deploying.md documents and carry a valid tollgate configuration.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tollgate_testkit::*;

use std::path::{Path, PathBuf};
use tollgate::config::Config;

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

/// Envoy bootstraps (not Kubernetes manifests, not LDS resource files, not Prometheus rules).
fn bootstraps() -> Vec<PathBuf> {
    let mut files = Vec::new();
    yaml_files(&repo().join("envoy"), &mut files);
    files.sort();
    files
        .into_iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            !text.contains("\napiVersion:")
                && !text.contains("\nresources:")
                && !text.contains("\ngroups:")
        })
        .collect()
}

#[test]
fn every_envoy_configuration_in_envoy_dir_is_valid() {
    let files = bootstraps();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let mut command = std::process::Command::new(envoy_path());
        // The variables an example's Wasm VM takes from Envoy's environment (a secret such as
        // the HTTP Payment challenges' key): what its README says to set, here a stand-in.
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            if let Some(keys) = line.trim().strip_prefix("host_env_keys: [") {
                for name in keys.trim_end_matches(']').split(',') {
                    command.env(
                        name.trim(),
                        "stand-in-secret-of-validation-0123456789abcdef",
                    );
                }
            }
        }
        let out = command
            .current_dir(repo())
            .args(["--mode", "validate", "-c"])
            .arg(&file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("OK"),
            "{}: {text}",
            file.display()
        );
    }
}

#[test]
fn the_per_route_example_exempts_its_health_route() {
    let envoy = Envoy::start_with(Options {
        bootstrap: "envoy/per-route.yaml".into(),
        file_ports: (10100, 10101, 9911),
        ..Options::default()
    });
    let health = envoy.get("/healthz", &[]);
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(health.header("ratelimit"), None, "not counted");
    assert_eq!(envoy.get("/v1/things", &[]).status, 401);
    let ok = envoy.get("/v1/things", &[("x-api-key", "acme-key")]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.remaining("daily"), 999);
}

fn manifest(name: &str) -> serde_norway::Value {
    let text = std::fs::read_to_string(repo().join("envoy").join(name)).unwrap();
    serde_norway::from_str(&text).unwrap()
}

fn keys(value: &serde_norway::Value) -> Vec<String> {
    value
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

fn assert_valid_tollgate_config(value: &serde_norway::Value) {
    let json = serde_json::to_string(value).unwrap();
    if let Err(e) = Config::from_json(json.as_bytes()) {
        panic!("not a valid tollgate configuration: {e}\n{json}");
    }
}

/// The doc with the Istio and Envoy Gateway sections.
const MESH_DOC: &str = "docs/deploying.md";

fn mesh_doc() -> String {
    std::fs::read_to_string(repo().join(MESH_DOC)).unwrap()
}

#[test]
fn the_istio_wasmplugin_manifest() {
    let m = manifest("istio-wasmplugin.yaml");
    assert_eq!(m["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(m["kind"], "WasmPlugin");
    let spec = &m["spec"];
    // Field names and values of the WasmPlugin API (v1alpha1).
    let known = [
        "selector",
        "targetRefs",
        "url",
        "sha256",
        "imagePullPolicy",
        "imagePullSecret",
        "phase",
        "priority",
        "failStrategy",
        "pluginName",
        "pluginConfig",
        "type",
        "match",
        "vmConfig",
    ];
    for key in keys(spec) {
        assert!(
            known.contains(&key.as_str()),
            "WasmPlugin has no field {key}"
        );
    }
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
    assert!(["AUTHN", "AUTHZ", "STATS"].contains(&spec["phase"].as_str().unwrap()));
    assert_eq!(spec["type"], "HTTP");
    assert!(spec["url"].as_str().unwrap().starts_with("oci://"));
    assert_valid_tollgate_config(&spec["pluginConfig"]);
    let doc = mesh_doc();
    for key in [
        "url",
        "phase",
        "failStrategy: FAIL_CLOSE",
        "pluginConfig",
        "selector",
    ] {
        assert!(doc.contains(key), "{MESH_DOC}'s Istio section lacks {key}");
    }
}

#[test]
fn the_envoy_gateway_extension_policy_manifest() {
    let m = manifest("envoy-gateway-policy.yaml");
    assert_eq!(m["apiVersion"], "gateway.envoyproxy.io/v1alpha1");
    assert_eq!(m["kind"], "EnvoyExtensionPolicy");
    let spec = &m["spec"];
    for key in keys(spec) {
        assert!(
            [
                "targetRefs",
                "targetRef",
                "targetSelectors",
                "wasm",
                "extProc",
                "lua"
            ]
            .contains(&key.as_str()),
            "no field {key}"
        );
    }
    let target = &spec["targetRefs"][0];
    assert_eq!(target["group"], "gateway.networking.k8s.io");
    assert_eq!(target["kind"], "HTTPRoute");
    let wasm = &spec["wasm"][0];
    for key in keys(wasm) {
        assert!(
            ["name", "rootID", "code", "config", "failOpen", "env", "priority"]
                .contains(&key.as_str()),
            "Wasm has no field {key}"
        );
    }
    assert_eq!(wasm["failOpen"], false);
    assert_eq!(wasm["code"]["type"], "HTTP");
    assert_eq!(wasm["code"]["http"]["sha256"].as_str().unwrap().len(), 64);
    assert_valid_tollgate_config(&wasm["config"]);
    let doc = mesh_doc();
    for key in [
        "EnvoyExtensionPolicy",
        "targetRefs",
        "rootID",
        "failOpen: false",
        "config",
    ] {
        assert!(
            doc.contains(key),
            "{MESH_DOC}'s Envoy Gateway section lacks {key}"
        );
    }
}

/// A one-shot upstream on `port`: answers the first request with 200 and `body`, reporting
/// the request head it received.
fn upstream_once(port: u16, body: &'static str) -> std::thread::JoinHandle<String> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(reply.as_bytes()).unwrap();
        String::from_utf8_lossy(&head).to_string()
    })
}

#[test]
fn the_minimal_gateway_of_the_readme_meters_its_upstream() {
    let envoy = Envoy::start_with(Options {
        bootstrap: "envoy/minimal.yaml".into(),
        file_ports: (8080, 8000, 9902),
        ..Options::default()
    });
    let upstream = upstream_once(envoy.backend, "hello from upstream");
    assert_eq!(envoy.get("/", &[]).status, 401);
    assert_eq!(envoy.get_with_key("wrong-key").status, 401);
    // The file's key is the sha256 of `change-me`.
    let ok = envoy.get_with_key("change-me");
    assert_eq!(
        (ok.status, ok.body.as_str()),
        (200, "hello from upstream"),
        "{ok:?}"
    );
    assert_eq!(ok.remaining("daily"), 999);
    let seen = upstream.join().unwrap();
    assert!(seen.contains("x-tollgate-consumer: me"), "{seen}");
}

#[test]
fn every_example_has_ports_of_its_own() {
    // Each runs beside `make run` (10000, 10001, 9901) and beside the others.
    let mut files = Vec::new();
    yaml_files(&repo().join("envoy"), &mut files);
    let mut owner: std::collections::HashMap<String, PathBuf> = Default::default();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let example = file.parent().unwrap().to_path_buf();
        let example = if example.ends_with("envoy") {
            file.clone()
        } else {
            example
        };
        for port in text.split("port_value: ").skip(1) {
            let port: String = port.chars().take_while(char::is_ascii_digit).collect();
            let first = owner.entry(port.clone()).or_insert_with(|| example.clone());
            assert_eq!(
                *first,
                example,
                "port {port} is used by {} and {}",
                first.display(),
                example.display()
            );
        }
    }
    assert!(owner.len() >= 10, "{owner:?}");
}

/// envoy/envoy.yaml's HTTP connection manager: the one tests/identity.rs drives through Envoy.
fn demo_connection_manager() -> serde_norway::Value {
    let text = std::fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap();
    let bootstrap: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        .clone()
}

#[test]
fn the_mesh_examples_strip_identity_headers_as_the_envoy_example_does() {
    let hcm = demo_connection_manager();
    let strip = &hcm["early_header_mutation_extensions"];
    let removed: Vec<&str> = strip[0]["typed_config"]["mutations"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["remove"].as_str().unwrap())
        .collect();
    assert_eq!(removed, ["x-tollgate-consumer", "x-tollgate-plan"]);

    // Istio: an EnvoyFilter merging exactly that into the gateway's connection manager.
    let istio = manifest("istio-strip-identity.yaml");
    assert_eq!(istio["apiVersion"], "networking.istio.io/v1alpha3");
    assert_eq!(istio["kind"], "EnvoyFilter");
    let patch = &istio["spec"]["configPatches"][0];
    assert_eq!(patch["applyTo"], "NETWORK_FILTER");
    assert_eq!(patch["match"]["context"], "GATEWAY");
    assert_eq!(
        patch["match"]["listener"]["filterChain"]["filter"]["name"],
        "envoy.filters.network.http_connection_manager"
    );
    assert_eq!(patch["patch"]["operation"], "MERGE");
    let value = &patch["patch"]["value"]["typed_config"];
    assert_eq!(value["@type"], hcm["@type"]);
    assert_eq!(&value["early_header_mutation_extensions"], strip);
    assert_eq!(
        istio["spec"]["workloadSelector"]["labels"],
        manifest("istio-wasmplugin.yaml")["spec"]["selector"]["matchLabels"],
        "the gateway the WasmPlugin runs in"
    );

    // Envoy Gateway: a ClientTrafficPolicy on the Gateway, early request headers removed.
    let eg = manifest("envoy-gateway-strip-identity.yaml");
    assert_eq!(eg["apiVersion"], "gateway.envoyproxy.io/v1alpha1");
    assert_eq!(eg["kind"], "ClientTrafficPolicy");
    assert_eq!(eg["spec"]["targetRefs"][0]["kind"], "Gateway");
    let eg_removed: Vec<&str> = eg["spec"]["headers"]["earlyRequestHeaders"]["remove"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(eg_removed, removed);
    let doc = std::fs::read_to_string(repo().join("docs/security.md")).unwrap();
    for file in [
        "envoy/istio-strip-identity.yaml",
        "envoy/envoy-gateway-strip-identity.yaml",
    ] {
        assert!(doc.contains(file), "docs/security.md names {file}");
    }
}
