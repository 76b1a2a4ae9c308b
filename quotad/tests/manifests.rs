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
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use serde_norway::Value;

fn documents() -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("envoy/fleet/quotad-k8s.yaml")).unwrap();
    serde_norway::Deserializer::from_str(&text)
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

    // The Redis quotad is pointed at is the Service deployed beside it, and its URL (which
    // holds a password) comes from a Secret through the environment: never an argument.
    assert!(
        args.iter()
            .all(|a| !a.starts_with("--redis=") && !a.contains('@')),
        "no Redis URL on the command line: {args:?}"
    );
    let env = container["env"].as_sequence().unwrap();
    assert!(
        env.iter().all(|e| e["name"] != "QUOTAD_REDIS"),
        "the URL is not in the environment either"
    );
    let file = env
        .iter()
        .find(|e| e["name"] == "QUOTAD_REDIS_FILE")
        .and_then(|e| e["value"].as_str())
        .expect("QUOTAD_REDIS_FILE");
    // The file is a key of a Secret mounted where it says.
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| file.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
        .expect("a volume mounted at QUOTAD_REDIS_FILE's directory");
    assert_eq!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let secret = kind(
        &docs,
        "Secret",
        volume["secret"]["secretName"].as_str().unwrap(),
    );
    let key = file.rsplit('/').next().unwrap();
    let url = secret["stringData"][key].as_str().unwrap();
    let redis_service = kind(&docs, "Service", "redis");
    let namespace = redis_service["metadata"]["namespace"].as_str().unwrap();
    let redis_port = port_named(&redis_service["spec"]["ports"], "redis");
    assert!(
        url.starts_with("redis://quotad:")
            && url.ends_with(&format!(
                "@redis.{namespace}.svc.cluster.local:{redis_port}"
            )),
        "{url}"
    );
    // Mutual TLS: quotad's files are the keys of the Secret cert-manager writes for it, whose
    // names include the Service's; the allow-list names the gateways' client certificate.
    let value = |name: &str| -> String {
        env.iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("no {name} in the environment"))
            .to_string()
    };
    let tls_mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .expect("the TLS Secret's volume");
    let dir = tls_mount["mountPath"].as_str().unwrap();
    for (name, key) in [
        ("QUOTAD_TLS_CERT", "tls.crt"),
        ("QUOTAD_TLS_KEY", "tls.key"),
        ("QUOTAD_TLS_CLIENT_CA", "ca.crt"),
    ] {
        assert_eq!(value(name), format!("{dir}/{key}"));
    }
    let tls_volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .unwrap();
    let serving = kind(&docs, "Certificate", "quotad-tls");
    assert_eq!(
        serving["spec"]["secretName"],
        tls_volume["secret"]["secretName"]
    );
    let quotad_fqdn = format!(
        "{}.{namespace}.svc.cluster.local",
        service["metadata"]["name"].as_str().unwrap()
    );
    assert!(
        format!("{:?}", serving["spec"]["dnsNames"]).contains(&quotad_fqdn),
        "quotad's certificate names {quotad_fqdn}"
    );
    let client = kind(&docs, "Certificate", "gateway-quotad-client");
    assert_eq!(
        client["spec"]["dnsNames"][0].as_str().unwrap(),
        value("QUOTAD_TLS_ALLOW")
    );
    assert_eq!(serving["spec"]["issuerRef"], client["spec"]["issuerRef"]);
    // Network policies: quotad's gRPC port and Redis take no traffic from anywhere else.
    let quotad_policy = kind(&docs, "NetworkPolicy", "quotad");
    assert_eq!(
        quotad_policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
    let redis_policy = kind(&docs, "NetworkPolicy", "redis");
    assert_eq!(
        redis_policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
    let redis = kind(&docs, "StatefulSet", "redis");
    let redis_args = format!(
        "{:?}",
        redis["spec"]["template"]["spec"]["containers"][0]["args"]
    );
    for setting in ["appendonly", "aclfile", "maxmemory", "noeviction"] {
        assert!(redis_args.contains(setting), "{setting}: {redis_args}");
    }
}

/// The manifest's Redis settings as redis-server arguments, with its ACL file written to `dir`.
fn manifest_redis(dir: &std::path::Path) -> (Vec<String>, String) {
    let docs = documents();
    let users = kind(&docs, "Secret", "redis-users")["stringData"]["users.acl"]
        .as_str()
        .unwrap()
        .to_string();
    let acl = dir.join("users.acl");
    // And a user of the test's own, to look at what quotad wrote.
    std::fs::write(&acl, format!("{users}user admin on >admin ~* &* +@all\n")).unwrap();
    let redis = kind(&docs, "StatefulSet", "redis");
    let mut args: Vec<String> = redis["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let at = args.iter().position(|a| a == "--aclfile").unwrap();
    args[at + 1] = acl.display().to_string();
    let url = kind(&docs, "Secret", "quotad-redis")["stringData"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    (args, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_redis_acl_lets_quotad_decide_and_nothing_more() {
    clear_of_day_boundary();
    let dir = TempDir::named("acl");
    let (args, manifest_url) = manifest_redis(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Real redis-server with the manifest's settings (ACL, maxmemory, noeviction, AOF).
    let redis = Redis::start_with(&args);
    // quotad as the manifest's user, on this Redis.
    let password = manifest_url
        .strip_prefix("redis://quotad:")
        .and_then(|rest| rest.split('@').next())
        .unwrap();
    let url = format!("redis://quotad:{password}@127.0.0.1:{}", redis.port);
    let quotad = Quotad::start(QUOTAD, &["--redis", &url]);
    quotad.wait_healthy();
    let mut client = quotad.client().await;
    for i in 0..3 {
        if i == 2 {
            // After a SCRIPT FLUSH (as after a Redis restart) quotad loads its script again.
            redis_cli_as(&redis, "quotad", password, &["SCRIPT", "FLUSH"]);
        }
        let answer = ask(
            &mut client,
            request(vec![limit("acme", "daily", "day", 10)]),
        )
        .await
        .unwrap();
        assert_eq!(answer.overall_code, Code::Ok as i32);
    }
    let counted = redis_cli_as(&redis, "quotad", password, &["GET", &redis_key(&redis)]);
    assert_eq!(counted.trim(), "3");
    // Nothing more: the default user only pings, quotad's user touches only its keys and
    // cannot flush, configure or read other keys.
    assert!(redis.cli(&["GET", "x"]).contains("NOPERM"), "default user");
    for forbidden in [
        vec!["FLUSHALL"],
        vec!["CONFIG", "SET", "maxmemory", "0"],
        vec!["GET", "other:key"],
        vec!["KEYS", "*"],
    ] {
        let out = redis_cli_as(&redis, "quotad", password, &forbidden);
        assert!(out.contains("NOPERM"), "{forbidden:?}: {out}");
    }
}

/// The one counter quotad wrote (listed as the test's own user).
fn redis_key(redis: &Redis) -> String {
    redis_cli_as(redis, "admin", "admin", &["KEYS", "tollgate:v1:*"])
        .trim()
        .to_string()
}

/// redis-cli as `user`.
fn redis_cli_as(redis: &Redis, user: &str, password: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "--user",
            user,
            "--pass",
            password,
        ])
        .arg("--no-auth-warning")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}
