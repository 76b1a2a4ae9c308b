//! Unit tests of [`crate::x402`]: the specifications' golden vectors, and what is refused.

use super::*;

fn vector(name: &str) -> &'static [u8] {
    match name {
        "v2-payment-required" => include_bytes!("../testdata/x402/v2-payment-required.b64"),
        "v2-payment-signature" => include_bytes!("../testdata/x402/v2-payment-signature.b64"),
        "v2-success" => include_bytes!("../testdata/x402/v2-payment-response-success.b64"),
        "v2-failure" => include_bytes!("../testdata/x402/v2-payment-response-failure.b64"),
        "v1-x-payment" => include_bytes!("../testdata/x402/v1-x-payment.b64"),
        "v1-success" => include_bytes!("../testdata/x402/v1-x-payment-response-success.b64"),
        _ => panic!("no vector {name}"),
    }
}

const ASSET: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const PAYER: &str = "0x857b06519E91e3A54538791bDbb0E22373e36b66";

fn offer() -> Requirements {
    let extra = serde_json::json!({"name": "USDC", "version": "2"});
    Requirements {
        scheme: "exact".into(),
        network: "eip155:84532".into(),
        amount: "10000".into(),
        asset: ASSET.into(),
        pay_to: PAY_TO.into(),
        max_timeout_seconds: 60,
        extra: extra.as_object().cloned(),
    }
}

#[test]
fn the_v2_payment_required_vector_decodes_to_the_specifications_example() {
    let required: PaymentRequired =
        decode(vector("v2-payment-required"), "PAYMENT-REQUIRED").unwrap();
    assert_eq!(
        required,
        PaymentRequired {
            x402_version: 2,
            error: Some("PAYMENT-SIGNATURE header is required".into()),
            resource: Resource {
                url: "https://api.example.com/premium-data".into(),
                description: Some("Access to premium market data".into()),
                mime_type: Some("application/json".into()),
            },
            accepts: vec![offer()],
        }
    );
    // Written back, it is the same document (member order aside).
    let again: serde_json::Value =
        serde_json::from_slice(&STANDARD.decode(encode(&required)).unwrap()).unwrap();
    let golden: serde_json::Value =
        serde_json::from_slice(&STANDARD.decode(vector("v2-payment-required")).unwrap()).unwrap();
    assert_eq!(again, golden);
}

#[test]
fn the_v2_payment_signature_vector_decodes_and_its_authorization_has_its_form() {
    let payment: PaymentPayload =
        decode(vector("v2-payment-signature"), "PAYMENT-SIGNATURE").unwrap();
    assert_eq!(payment.x402_version, 2);
    assert_eq!(payment.accepted, offer());
    let a = &payment.payload.authorization;
    assert_eq!((a.from.as_str(), a.to.as_str()), (PAYER, PAY_TO));
    assert_eq!(
        (
            a.value.as_str(),
            a.valid_after.as_str(),
            a.valid_before.as_str()
        ),
        ("10000", "1740672089", "1740672154")
    );
    assert_eq!(
        a.nonce,
        "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"
    );
    assert_eq!(payment.payload.signature.len(), 2 + 130);
    assert_eq!(a.check(), Ok(()));
}

#[test]
fn the_settlement_vectors_decode_success_and_failure() {
    let ok: SettleResponse = decode(vector("v2-success"), "PAYMENT-RESPONSE").unwrap();
    assert_eq!(
        ok,
        SettleResponse {
            success: true,
            error_reason: None,
            transaction: "0x1234567890abcdef1234567890abcdef1234567890abcdef1234567890abcdef"
                .into(),
            network: "eip155:84532".into(),
            payer: Some(PAYER.into()),
        }
    );
    let failed: SettleResponse = decode(vector("v2-failure"), "PAYMENT-RESPONSE").unwrap();
    assert!(!failed.success);
    assert_eq!(failed.error_reason.as_deref(), Some("insufficient_funds"));
    assert_eq!(failed.transaction, "");
    let v1: SettleResponse = decode(vector("v1-success"), "X-PAYMENT-RESPONSE").unwrap();
    assert_eq!((v1.success, v1.network.as_str()), (true, "base-sepolia"));
}

#[test]
fn the_v1_vectors_decode_the_payment_and_the_402_body() {
    let payment: PaymentPayloadV1 = decode(vector("v1-x-payment"), "X-PAYMENT").unwrap();
    assert_eq!(
        (
            payment.x402_version,
            payment.scheme.as_str(),
            payment.network.as_str()
        ),
        (1, "exact", "base-sepolia")
    );
    assert_eq!(payment.payload.authorization.check(), Ok(()));
    let body: PaymentRequiredV1 =
        serde_json::from_slice(include_bytes!("../testdata/x402/v1-payment-required.json"))
            .unwrap();
    assert_eq!(body.x402_version, 1);
    let offer = &body.accepts[0];
    assert_eq!(
        (
            offer.max_amount_required.as_str(),
            offer.pay_to.as_str(),
            offer.asset.as_str()
        ),
        ("10000", PAY_TO, ASSET)
    );
    assert_eq!(offer.max_timeout_seconds, 60);
}

#[test]
fn what_is_not_a_payment_is_refused_naming_where_never_a_value() {
    let header = "PAYMENT-SIGNATURE";
    let refused = |bytes: &[u8]| decode::<PaymentPayload>(bytes, header).unwrap_err().0;
    let long = vec![b'A'; MAX_HEADER + 4];
    assert_eq!(
        refused(&long),
        format!(
            "PAYMENT-SIGNATURE: {} bytes; at most 8192 are read",
            MAX_HEADER + 4
        )
    );
    assert_eq!(
        refused(b"not base64!"),
        "PAYMENT-SIGNATURE: not base64 (standard, padded)"
    );
    // URL-safe base64 is another alphabet; unpadded is refused too.
    let golden = vector("v2-payment-signature");
    let unpadded = golden.strip_suffix(b"=").unwrap();
    assert!(refused(unpadded).contains("not base64"));
    assert_eq!(
        refused(STANDARD.encode("{\"x402Version\": 2").as_bytes()),
        "PAYMENT-SIGNATURE: not JSON"
    );
    let mut json: serde_json::Value =
        serde_json::from_slice(&STANDARD.decode(golden).unwrap()).unwrap();
    json["accepted"]["amount"] = serde_json::json!(["s3cret-amount"]);
    let message = refused(STANDARD.encode(json.to_string()).as_bytes());
    assert_eq!(
        message,
        "PAYMENT-SIGNATURE: at `accepted.amount`: a member is not of its type"
    );
    json["accepted"].as_object_mut().unwrap().remove("amount");
    assert_eq!(
        refused(STANDARD.encode(json.to_string()).as_bytes()),
        "PAYMENT-SIGNATURE: at `accepted`: member `amount` is missing"
    );
    // A member listed twice, and anything after the document.
    let text = String::from_utf8(STANDARD.decode(golden).unwrap()).unwrap();
    let twice = text.replacen(
        "\"x402Version\":2,",
        "\"x402Version\":2,\"x402Version\":2,",
        1,
    );
    assert!(refused(STANDARD.encode(&twice).as_bytes()).ends_with("a member is listed twice"));
    let after = format!("{text} {{}}");
    assert!(refused(STANDARD.encode(after).as_bytes()).contains("more after the document"));
}

#[test]
fn an_authorization_names_the_first_field_not_of_its_form() {
    let payment: PaymentPayload =
        decode(vector("v2-payment-signature"), "PAYMENT-SIGNATURE").unwrap();
    let good = payment.payload.authorization;
    let with = |f: fn(&mut Authorization)| {
        let mut a = good.clone();
        f(&mut a);
        a.check().unwrap_err().0
    };
    assert_eq!(
        with(|a| a.to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287".into()),
        "payload.authorization.to: not of its form"
    );
    assert_eq!(
        with(|a| a.value = "1".repeat(79)),
        "payload.authorization.value: not of its form"
    );
    assert_eq!(
        with(|a| a.value = "-1".into()),
        "payload.authorization.value: not of its form"
    );
    assert_eq!(
        with(|a| a.nonce = a.nonce.replace("0x", "0X")),
        "payload.authorization.nonce: not of its form"
    );
    assert_eq!(
        with(|a| a.valid_before = String::new()),
        "payload.authorization.validBefore: not of its form"
    );
}
