//! The test kit's fake x402 facilitator ([`Facilitator`]) answers verify, settle and supported
//! in the shapes of x402 v2, keeps settled nonces settled, and does what its scripts say:
//! invalid payments, statuses, dropped connections, slow answers. Also the client helpers that
//! build the payments it is sent. Checked with a plain HTTP/1.1 client on kept-alive
//! connections; no Envoy.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tollgate_testkit::*;

/// An offer as a v2 `PAYMENT-REQUIRED` lists it (Base Sepolia USDC).
fn offer() -> Value {
    json!({
        "scheme": "exact",
        "network": "eip155:84532",
        "amount": "10000",
        "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
        "maxTimeoutSeconds": 60,
        "extra": {"name": "USDC", "version": "2"},
    })
}

/// A verify or settle body for a v2 payment of [`offer`] with `nonce`.
fn call_body(nonce: &str) -> Value {
    json!({
        "x402Version": 2,
        "paymentPayload": payment_payload(&offer(), PAYER, nonce),
        "paymentRequirements": offer(),
    })
}

/// The same for a v1 payment on `base-sepolia`.
fn call_body_v1(nonce: &str) -> Value {
    let to = offer()["payTo"].as_str().unwrap().to_string();
    json!({
        "x402Version": 1,
        "paymentPayload": payment_payload_v1("base-sepolia", &to, "10000", PAYER, nonce),
        "paymentRequirements": {
            "scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "10000",
            "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "payTo": to,
            "resource": "http://localhost/paid", "description": "", "maxTimeoutSeconds": 60,
        },
    })
}

/// A kept-alive connection to the fake, as Envoy's connection pool keeps one.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn new(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn post(&mut self, path: &str, body: &Value) -> (u16, Value) {
        self.try_call("POST", path, Some(body))
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// One request and its answer (status, JSON body); an error if the connection ends (or
    /// the read times out) first.
    fn try_call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, Value)> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: facilitator\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(request.as_bytes())?;
        let split = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            self.read()?;
        };
        let head = String::from_utf8(self.buf.drain(..split + 4).collect()).unwrap();
        let mut lines = head.trim_end().split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| l.split_once(": ").unwrap())
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
            .collect();
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        assert_eq!(
            header("content-type").map(String::as_str),
            Some("application/json")
        );
        let length: usize = header("content-length").unwrap().parse().unwrap();
        while self.buf.len() < length {
            self.read()?;
        }
        let body: Vec<u8> = self.buf.drain(..length).collect();
        Ok((status, serde_json::from_slice(&body).unwrap()))
    }

    fn read(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk)? {
            0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }
}

#[test]
fn verify_answers_valid_then_as_scripted() {
    let fake = Facilitator::start("/x402");
    let mut client = Client::new(fake.port);
    let nonce = x402_nonce(1);

    let (status, answer) = client.post("/x402/verify", &call_body(&nonce));
    assert_eq!(status, 200);
    assert_eq!(answer, json!({"isValid": true, "payer": PAYER}));

    // Same connection: the scripted outcomes, one per call, then valid again; v1 alike.
    fake.script_verify(&[
        Outcome::Invalid("insufficient_funds"),
        Outcome::NonceAlreadyUsed,
    ]);
    let (_, answer) = client.post("/x402/verify", &call_body(&nonce));
    assert_eq!(
        answer,
        json!({"isValid": false, "invalidReason": "insufficient_funds", "payer": PAYER})
    );
    let (_, answer) = client.post("/x402/verify", &call_body_v1(&nonce));
    assert_eq!(
        answer["invalidReason"],
        "invalid_exact_evm_nonce_already_used"
    );
    let (_, answer) = client.post("/x402/verify", &call_body_v1(&nonce));
    assert_eq!(answer, json!({"isValid": true, "payer": PAYER}));

    assert_eq!((fake.verifies(), fake.settles()), (4, 0));
    assert!(fake.settled().is_empty(), "verifying settles nothing");
    let calls = fake.calls();
    assert_eq!(calls[0].path, "/x402/verify");
    assert_eq!(calls[0].header("content-type"), Some("application/json"));
    assert_eq!(calls[0].body, call_body(&nonce));
    assert_eq!(
        calls[1].outcome,
        Some(Outcome::Invalid("insufficient_funds"))
    );
    assert_eq!(
        (calls[3].payer(), calls[3].nonce()),
        (Some(PAYER), Some(&*nonce))
    );
}

#[test]
fn settle_settles_a_nonce_once() {
    let fake = Facilitator::start("/x402");
    let mut client = Client::new(fake.port);
    let nonce = format!("0x{}", "0123456789abcdef".repeat(4));

    let (status, answer) = client.post("/x402/settle", &call_body(&nonce));
    assert_eq!(status, 200);
    let transaction = format!("0x{}", "fedcba9876543210".repeat(4));
    assert_eq!(Facilitator::transaction_for(&nonce), transaction);
    assert_eq!(
        answer,
        json!({"success": true, "transaction": transaction, "network": "eip155:84532", "payer": PAYER})
    );

    // As the chain would: the nonce is spent.
    let (status, answer) = client.post("/x402/settle", &call_body(&nonce));
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({
            "success": false, "errorReason": "invalid_exact_evm_nonce_already_used", "transaction": "",
            "network": "eip155:84532", "payer": PAYER,
        })
    );

    // A v1 payment, its network from the requirements.
    let other = x402_nonce(7);
    let (_, answer) = client.post("/x402/settle", &call_body_v1(&other));
    assert_eq!(answer["success"], true);
    assert_eq!(answer["network"], "base-sepolia");
    assert_eq!(answer["transaction"], Facilitator::transaction_for(&other));

    assert_eq!((fake.settles(), fake.verifies()), (3, 0));
    assert_eq!(fake.settled(), vec![nonce, other]);
}

#[test]
fn idempotent_settle_answers_the_first_settlement_again() {
    let fake = Facilitator::start("/pay/");
    assert_eq!(fake.base_path(), "/pay");
    fake.set_idempotent(true);
    let mut client = Client::new(fake.port);
    let nonce = x402_nonce(42);
    let (_, first) = client.post("/pay/settle", &call_body(&nonce));
    let (_, again) = client.post("/pay/settle", &call_body(&nonce));
    assert_eq!(first["success"], true);
    assert_eq!(first["transaction"], Facilitator::transaction_for(&nonce));
    assert_eq!(again, first);
    assert_eq!(fake.settled(), vec![nonce]);
    assert_eq!(fake.settles(), 2);
}

#[test]
fn scripted_failures_settle_nothing() {
    let fake = Facilitator::start("/x402");
    let nonce = x402_nonce(3);
    fake.script_settle(&[
        Outcome::Status(500),
        Outcome::Drop,
        Outcome::Invalid("insufficient_funds"),
        Outcome::NonceAlreadyUsed,
    ]);

    let mut client = Client::new(fake.port);
    let (status, answer) = client.post("/x402/settle", &call_body(&nonce));
    assert_eq!(
        (status, answer),
        (500, json!({"error": "scripted status 500"}))
    );

    // Kept alive after a 500; closed without an answer on a Drop.
    let dropped = client.try_call("POST", "/x402/settle", Some(&call_body(&nonce)));
    assert!(dropped.is_err(), "an answer to a dropped call: {dropped:?}");

    let mut client = Client::new(fake.port);
    let (_, answer) = client.post("/x402/settle", &call_body(&nonce));
    assert_eq!(
        answer,
        json!({
            "success": false, "errorReason": "insufficient_funds", "transaction": "",
            "network": "eip155:84532", "payer": PAYER,
        })
    );
    let (_, answer) = client.post("/x402/settle", &call_body(&nonce));
    assert_eq!(
        (
            &answer["success"],
            &answer["errorReason"],
            &answer["transaction"]
        ),
        (
            &json!(false),
            &json!("invalid_exact_evm_nonce_already_used"),
            &json!("")
        )
    );
    assert!(fake.settled().is_empty());

    // The script spent: the nonce was never settled, so it settles now.
    let (_, answer) = client.post("/x402/settle", &call_body(&nonce));
    assert_eq!(answer["success"], true);
    assert_eq!(fake.settled(), vec![nonce]);
    assert_eq!(fake.settles(), 5);
    let statuses: Vec<u16> = fake.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [500, 0, 200, 200, 200]);
}

#[test]
fn slow_settle_settles_at_once_and_answers_late() {
    let fake = Facilitator::start("/x402");
    let delay = Duration::from_millis(400);
    fake.script_settle(&[Outcome::Slow(delay), Outcome::Slow(Duration::from_secs(5))]);

    let nonce = x402_nonce(10);
    let mut client = Client::new(fake.port);
    let started = Instant::now();
    let (_, answer) = client.post("/x402/settle", &call_body(&nonce));
    assert!(
        started.elapsed() >= delay,
        "answered in {:?}",
        started.elapsed()
    );
    assert_eq!(answer["transaction"], Facilitator::transaction_for(&nonce));

    // A client that gives up before the answer: the payment is settled all the same.
    let late = x402_nonce(11);
    let mut impatient = Client::new(fake.port);
    impatient
        .stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let gave_up = impatient.try_call("POST", "/x402/settle", Some(&call_body(&late)));
    assert!(gave_up.is_err(), "answered before its delay: {gave_up:?}");
    drop(impatient);
    // Settled when the call was read, which on a loaded machine may follow the client's
    // timeout.
    wait_for("the late settlement", Duration::from_secs(10), || {
        fake.settled().len() == 2
    });
    assert_eq!(fake.settled(), vec![nonce, late.clone()]);

    // Then as ever: the nonce is spent.
    let (_, answer) = client.post("/x402/settle", &call_body(&late));
    assert_eq!(
        answer["errorReason"],
        "invalid_exact_evm_nonce_already_used"
    );
}

#[test]
fn supported_and_other_routes() {
    let fake = Facilitator::start("/x402");
    let response = request(fake.port, "GET", "/x402/supported", &[]);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.json(),
        json!({
            "kinds": [
                {"x402Version": 2, "scheme": "exact", "network": "eip155:84532"},
                {"x402Version": 1, "scheme": "exact", "network": "base-sepolia"},
            ],
            "extensions": [],
            "signers": {},
        })
    );

    let mut client = Client::new(fake.port);
    let (status, answer) = client.try_call("GET", "/x402/settle", None).unwrap();
    assert_eq!((status, answer["error"].is_string()), (405, true));
    let (status, _) = client
        .try_call("POST", "/settle", Some(&call_body("0x1")))
        .unwrap();
    assert_eq!(status, 404, "outside the base path");
    let (status, answer) = client
        .try_call("POST", "/x402/settle", Some(&json!({"x402Version": 2})))
        .unwrap();
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("authorization"));
    assert!(fake.settled().is_empty());
    assert_eq!(fake.calls().len(), 4);
}

#[test]
fn payment_headers_decode_to_their_payloads() {
    let nonce = x402_nonce(99);
    let header = payment_signature(&offer(), PAYER, &nonce);
    assert_eq!(header.len() % 4, 0, "padded base64");
    let decoded = decode_x402(&header);
    assert_eq!(decoded["x402Version"], 2);
    assert_eq!(decoded["accepted"], offer());
    let payload = &decoded["payload"];
    let signature = payload["signature"].as_str().unwrap();
    assert!(signature.len() == 132 && signature.starts_with("0x"));
    assert!(signature[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    let authorization = &payload["authorization"];
    assert_eq!(authorization["from"], PAYER);
    assert_eq!(authorization["to"], offer()["payTo"]);
    assert_eq!(authorization["value"], "10000");
    assert_eq!(authorization["validAfter"], "0");
    assert_eq!(authorization["nonce"], nonce);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let before: u64 = authorization["validBefore"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (now + 3590..=now + 3600).contains(&before),
        "{before} vs {now}"
    );
    assert_eq!(nonce.len(), 66);

    let header = x_payment_v1(
        "base-sepolia",
        "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
        "5",
        PAYER,
        &nonce,
    );
    let decoded = decode_x402(&header);
    assert_eq!(
        (
            &decoded["x402Version"],
            &decoded["scheme"],
            &decoded["network"]
        ),
        (&json!(1), &json!("exact"), &json!("base-sepolia"))
    );
    assert_eq!(decoded["payload"]["authorization"]["value"], "5");
    assert_eq!(decoded["payload"]["authorization"]["from"], PAYER);
}
