//! Fleet mode over mutual TLS, as the examples ship it: Envoy presents its client certificate
//! to quotad and checks quotad's; quotad serves only the identities on its allow-list. An Envoy
//! with another certificate of the same CA, or none, gets no decision (503, nothing counted).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tollgate_testkit::*;

fn config() -> String {
    plugin(
        r#"{
          "store": {"rls": {"cluster": "tollgate_quotad", "timeout": "1s", "lease": 1}},
          "on_store_error": "deny",
          "plans": {"small": {"limits": [{"name": "daily", "requests": 5, "window": "day"}]}},
          "consumers": {"acme": {"plan": "small", "keys": ["acme-key"]}}
        }"#,
    )
}

/// `n` requests with acme's key; their statuses.
fn statuses(envoy: &Envoy, n: usize) -> Vec<u16> {
    let mut conn = Conn::new(envoy.port);
    (0..n)
        .map(|_| {
            conn.get("/", &[("x-api-key", b"acme-key".as_slice())])
                .status
        })
        .collect()
}

#[test]
fn envoys_with_the_allowed_certificate_count_others_get_no_decision() {
    clear_of_day_boundary();
    let redis = Redis::start();
    let quotad = Quotad::fleet(&redis);
    let certs = quotad.certs.as_ref().unwrap();
    assert!(
        quotad
            .log()
            .contains("gRPC over mutual TLS (1 client identities allowed)"),
        "{}",
        quotad.log()
    );

    // The shipped file: its mutual TLS block with quotad's certificates.
    let envoy = fleet_envoy(&quotad, &config(), 2);
    assert_eq!(statuses(&envoy, 6), [200, 200, 200, 200, 200, 402]);
    // Five decisions: the sixth request is refused from the last answer (nothing left).
    assert_eq!(quotad.decisions(), 5);
    assert!(stat(&envoy, "cluster.tollgate_quotad.ssl.handshake") >= 1);

    // Another certificate of the same CA, naming an identity not on --tls-allow.
    let intruder = TempDir::named("intruder-certs");
    let pair = certs.pki.issue("intruder", &["intruder.tollgate"]);
    std::fs::copy(certs.pki.ca(), intruder.join("ca.crt")).unwrap();
    std::fs::copy(&pair.cert, intruder.join("gateway.crt")).unwrap();
    std::fs::copy(&pair.key, intruder.join("gateway.key")).unwrap();
    let other = Envoy::start_with(Options {
        quotad_certs: Some(intruder.path().to_path_buf()),
        ..fleet_options(&quotad, &config(), 2)
    });
    assert_eq!(statuses(&other, 2), [503, 503], "{}", other.log());
    wait_for("quotad logs the refused identity", DEADLINE, || {
        quotad
            .log()
            .contains("names [intruder.tollgate] none of --tls-allow")
    });

    // No TLS at all.
    let plaintext = Envoy::start_with(Options {
        quotad_certs: None,
        ..fleet_options(&quotad, &config(), 2)
    });
    assert_eq!(statuses(&plaintext, 2), [503, 503], "{}", plaintext.log());

    assert_eq!(quotad.decisions(), 5, "a refused Envoy reached a decision");
    // The allowed Envoy still answers from the count in Redis.
    assert_eq!(statuses(&envoy, 1), [402]);
}
