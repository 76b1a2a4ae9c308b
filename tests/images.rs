//! `make images` (images/build.sh): the images the Kubernetes examples name hold what they
//! must. The filter's: one layer whose only file is `/plugin.wasm`, byte-identical to the
//! shipped module (Istio's and Envoy Gateway's Wasm OCI layout). quotad's: non-root, and
//! quotad starts from the image's own filesystem (a chroot of its unpacked layers, as the image's
//! user) and answers health with a real Redis.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tollgate_testkit::*;

/// An OCI layout directory `make images` wrote.
fn layout(name: &str) -> PathBuf {
    let dir = repo().join("target/images").join(name);
    assert!(
        dir.join("index.json").exists(),
        "{} is missing: `make images` builds it (make test does)",
        dir.display()
    );
    dir
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

/// The image's manifest and config.
fn manifest_and_config(layout: &Path) -> (Value, Value) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    let manifest: Value =
        serde_json::from_slice(&blob(layout, manifests[0]["digest"].as_str().unwrap())).unwrap();
    let config: Value = serde_json::from_slice(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    (manifest, config)
}

/// Unpacks every layer, in order, into `root`.
fn unpack(layout: &Path, manifest: &Value, root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let hex = layer["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        let out = Command::new("tar")
            .arg("-xf")
            .arg(layout.join("blobs/sha256").join(hex))
            .arg("-C")
            .arg(root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn the_wasm_image_is_one_layer_holding_the_shipped_module() {
    let layout = layout("tollgate-wasm");
    let (manifest, _) = manifest_and_config(&layout);
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        1,
        "{manifest}"
    );
    assert_eq!(
        manifest["annotations"]["module.wasm.image/variant"],
        "compat-smart"
    );
    let dir = TempDir::named("wasm-image");
    let root = dir.join("root");
    unpack(&layout, &manifest, &root);
    assert_eq!(files(&root), ["plugin.wasm"]);
    assert!(
        std::fs::read(root.join("plugin.wasm")).unwrap() == std::fs::read(wasm_path()).unwrap(),
        "plugin.wasm is not the shipped tollgate.wasm (make images after make wasm)"
    );
}

#[test]
fn quotad_runs_from_its_image_as_a_non_root_user() {
    let layout = layout("quotad");
    let (manifest, config) = manifest_and_config(&layout);
    assert_eq!(config["config"]["User"], "65532:65532", "{config}");
    assert_eq!(config["config"]["Entrypoint"][0], "/quotad", "{config}");
    let dir = TempDir::named("quotad-image");
    let root = dir.join("root");
    unpack(&layout, &manifest, &root);
    assert!(
        std::fs::read(root.join("quotad")).unwrap() == std::fs::read(quotad_path()).unwrap(),
        "/quotad is not the built quotad (make images after make quotad)"
    );
    // The image's filesystem alone, as its user: chroot into the unpacked layers.
    let wrapper = dir.write(
        "quotad-in-image.sh",
        &format!(
            "#!/bin/sh\nexec chroot --userspec=65532:65532 {} /quotad \"$@\"\n",
            root.display()
        ),
    );
    Command::new("chmod")
        .args(["+x", &wrapper])
        .status()
        .unwrap();
    let redis = Redis::start();
    let quotad = Quotad::start(&wrapper, &["--redis", &redis.url()]);
    quotad.wait_healthy();
    let status = std::fs::read_to_string(format!("/proc/{}/status", quotad.pid())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid.contains("65532"), "{uid}");
}
