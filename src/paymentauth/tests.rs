use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn bound<'a>(request: &'a str, expires: &'a str, opaque: &'a str) -> Bound<'a> {
    Bound {
        realm: "realm.example",
        method: METHOD,
        intent: INTENT,
        request,
        expires,
        digest: "",
        opaque,
    }
}

#[test]
fn the_id_is_the_drafts_hmac_of_the_seven_slots() {
    // Python: hmac.new(SECRET, b"realm.example|evm|charge|REQ|2026-12-07T12:00:00Z||OPQ",
    // hashlib.sha256), base64url without padding.
    let b = bound("REQ", "2026-12-07T12:00:00Z", "OPQ");
    let id = b.id(SECRET);
    assert_eq!(id, "REXdQGWeptUG78fSZdJobgEOxj3L9zvGPTZNvM9-a1w");
    assert!(b.verifies(SECRET, &id));
    // Any slot changed, another secret, or a mangled id: not this challenge.
    for other in [
        bound("REQ", "2026-12-07T12:00:01Z", "OPQ"),
        bound("REQ2", "2026-12-07T12:00:00Z", "OPQ"),
        bound("REQ", "2026-12-07T12:00:00Z", "OPQ2"),
        // A value moved into the next slot.
        bound("REQ|2026-12-07T12:00:00Z", "", "OPQ"),
    ] {
        assert!(!other.verifies(SECRET, &id), "{other:?}");
    }
    assert!(!b.verifies(b"another secret of thirty-two bytes", &id));
    assert!(!b.verifies(SECRET, "not base64url!"));
    assert!(!b.verifies(SECRET, &id[..id.len() - 2]));
}

#[test]
fn the_request_is_jcs_json_in_base64url() {
    let request = ChargeRequest {
        amount: "1000000".into(),
        currency: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
        description: Some("starter: 100 credits".into()),
        external_id: Some("starter".into()),
        method_details: MethodDetails {
            chain_id: 84532,
            credential_types: vec!["authorization".into()],
            permit2_address: PERMIT2.into(),
        },
        recipient: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into(),
    };
    // Python: json.dumps(r, separators=(",", ":"), sort_keys=True, ensure_ascii=False), then
    // base64url without padding.
    assert_eq!(
        request.encode(),
        "eyJhbW91bnQiOiIxMDAwMDAwIiwiY3VycmVuY3kiOiIweDAzNkNiRDUzODQyYzU0MjY2MzRlNzkyOTU0MWVDMjMxOGYzZENGN2UiLCJkZXNjcmlwdGlvbiI6InN0YXJ0ZXI6IDEwMCBjcmVkaXRzIiwiZXh0ZXJuYWxJZCI6InN0YXJ0ZXIiLCJtZXRob2REZXRhaWxzIjp7ImNoYWluSWQiOjg0NTMyLCJjcmVkZW50aWFsVHlwZXMiOlsiYXV0aG9yaXphdGlvbiJdLCJwZXJtaXQyQWRkcmVzcyI6IjB4MDAwMDAwMDAwMDIyRDQ3MzAzMEYxMTZkREVFOUY2QjQzYUM3OEJBMyJ9LCJyZWNpcGllbnQiOiIweDIwOTY5M0JjNmFmYzBDNTMyOGJBMzZGYUYwM0M1MTRFRjMxMjI4N0MifQ"
    );
}

#[test]
fn the_nonce_is_keccak_of_id_then_realm() {
    // Keccak-256 (Ethereum's, not SHA3-256) of "" and of "abc": the known answers.
    assert_eq!(
        nonce("", ""),
        "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    );
    assert_eq!(
        nonce("ab", "c"),
        "0x4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"
    );
    assert_eq!(nonce("a", "bc"), nonce("ab", "c"));
}

#[test]
fn a_challenge_header_quotes_its_parameters() {
    let b = bound("REQ", "2026-12-07T12:00:00Z", "OPQ");
    assert_eq!(
        challenge("ID", &b, Some("starter: 100 credits")),
        "Payment id=\"ID\", realm=\"realm.example\", method=\"evm\", intent=\"charge\", \
         request=\"REQ\", expires=\"2026-12-07T12:00:00Z\", opaque=\"OPQ\", \
         description=\"starter: 100 credits\""
    );
    // A description that cannot be quoted as is is left out.
    assert!(!challenge("ID", &b, Some("say \"hi\"")).contains("description"));
}

#[test]
fn opaque_names_the_consumer() {
    let o = opaque("acme \"corp\"");
    assert_eq!(opaque_consumer(&o).as_deref(), Some("acme \"corp\""));
    assert_eq!(opaque_consumer("%%%"), None);
    assert_eq!(opaque_consumer(&URL_SAFE_NO_PAD.encode(b"{\"x\":1}")), None);
}

#[test]
fn chain_ids_come_from_eip155_networks_only() {
    assert_eq!(chain_id("eip155:8453"), Some(8453));
    assert_eq!(chain_id("eip155:84532"), Some(84532));
    assert_eq!(chain_id("eip155:18446744073709551615"), Some(u64::MAX));
    for other in [
        "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp",
        "eip155:",
        "eip155:0x1",
        "eip155:+1",
        "eip155:18446744073709551616",
    ] {
        assert_eq!(chain_id(other), None, "{other}");
    }
}

fn credential_json() -> serde_json::Value {
    serde_json::json!({
        "challenge": {"id": "ID", "realm": "realm.example", "method": "evm", "intent": "charge",
                      "request": "REQ", "expires": "2026-12-07T12:00:00Z", "opaque": "OPQ"},
        "payload": {"type": "authorization",
                    "from": "0x1234567890abcdef1234567890abcdef12345678",
                    "to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
                    "value": "1000000", "validAfter": "0", "validBefore": "1796644800",
                    "nonce": format!("0x{}", "ab".repeat(32)), "signature": "0xsig"},
        "source": "did:pkh:eip155:84532:0x1234567890abcdef1234567890abcdef12345678"
    })
}

#[test]
fn a_credential_is_read_from_the_payment_scheme_with_bounds() {
    let json = serde_json::to_vec(&credential_json()).unwrap();
    let token = URL_SAFE_NO_PAD.encode(&json);
    let value = format!("Payment {token}");
    let read = read_credential(credential_of(value.as_bytes()).unwrap(), "authorization").unwrap();
    assert_eq!(read.challenge.id, "ID");
    assert_eq!(
        read.challenge.bound(),
        bound("REQ", "2026-12-07T12:00:00Z", "OPQ")
    );
    assert_eq!(read.payload.kind, "authorization");
    assert_eq!(read.payload.value, "1000000");
    assert_eq!(read.payload.signature, "0xsig");
    // Padded base64url is read too; the scheme is case-insensitive.
    let padded = format!("payment  {token}==");
    assert_eq!(
        read_credential(credential_of(padded.as_bytes()).unwrap(), "authorization").unwrap(),
        read
    );
    // Another scheme is not a credential.
    assert_eq!(credential_of(b"Bearer abc"), None);
    assert_eq!(credential_of(b"Pay"), None);
    // Errors say where, never a value.
    let e = read_credential(b"not base64url!", "authorization").unwrap_err();
    assert_eq!(e.0, "authorization: the credential is not base64url");
    // A payload member missing is left empty, for the authorization's check to name; the
    // challenge's are required.
    let mut missing = credential_json();
    missing["payload"].as_object_mut().unwrap().remove("nonce");
    let token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&missing).unwrap());
    let read = read_credential(token.as_bytes(), "authorization").unwrap();
    assert_eq!(read.payload.nonce, "");
    let mut missing = credential_json();
    missing["challenge"]
        .as_object_mut()
        .unwrap()
        .remove("request");
    let token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&missing).unwrap());
    let e = read_credential(token.as_bytes(), "authorization").unwrap_err();
    assert!(e.0.contains("`request` is missing"), "{}", e.0);
    let mut wrong = credential_json();
    wrong["payload"]["value"] = serde_json::json!(12);
    let token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wrong).unwrap());
    let e = read_credential(token.as_bytes(), "authorization").unwrap_err();
    assert!(!e.0.contains("12"), "{}", e.0);
    let long = vec![b'A'; MAX_HEADER + 1];
    let e = read_credential(&long, "authorization").unwrap_err();
    assert!(e.0.contains("at most 8192 are read"), "{}", e.0);
    // At the bound, it is read (and is then not a credential).
    let e = read_credential(&long[1..], "authorization").unwrap_err();
    assert!(!e.0.contains("are read"), "{}", e.0);
}

#[test]
fn a_receipt_is_base64url_json() {
    let r = Receipt {
        chain_id: 84532,
        challenge_id: "ID".into(),
        external_id: Some("starter".into()),
        method: METHOD.into(),
        reference: "0xtx".into(),
        status: "success".into(),
        timestamp: "2026-12-07T12:00:00Z".into(),
    };
    let json = URL_SAFE_NO_PAD.decode(r.encode()).unwrap();
    assert_eq!(
        String::from_utf8(json).unwrap(),
        "{\"chainId\":84532,\"challengeId\":\"ID\",\"externalId\":\"starter\",\"method\":\"evm\",\"reference\":\"0xtx\",\
         \"status\":\"success\",\"timestamp\":\"2026-12-07T12:00:00Z\"}"
    );
}
