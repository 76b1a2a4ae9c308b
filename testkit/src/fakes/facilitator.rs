//! A fake x402 facilitator (x402 v2, coinbase/x402): what tollgate's filter calls through Envoy
//! (`dispatch_http_call`, HTTP/1.1, JSON bodies) to verify and settle a payment, under a base
//! path of the test's choosing:
//!
//! | route | answer (200, `content-type: application/json`) |
//! |---|---|
//! | `POST {base}/verify` | `{"isValid":true,"payer":F}` or `{"isValid":false,"invalidReason":R,"payer":F}` |
//! | `POST {base}/settle` | `{"success":true,"transaction":T,"network":N,"payer":F}` or `{"success":false,"errorReason":R,"transaction":"","network":N,"payer":F}` |
//! | `GET {base}/supported` | `{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:84532"},{"x402Version":1,"scheme":"exact","network":"base-sepolia"}],"extensions":[],"signers":{}}` |
//!
//! A verify or settle body is `{"x402Version":V,"paymentPayload":P,"paymentRequirements":Q}`;
//! `P` is a v2 `PAYMENT-SIGNATURE` or a v1 `X-PAYMENT`, decoded: F is its
//! `payload.authorization.from`, N is `Q.network` (else the payload's network). The fake checks
//! no signature, amount or time: it answers what the test scripted ([`Outcome`], one per call
//! of a route, then [`Outcome::Valid`]). What it keeps is the chain's part: a settled nonce
//! stays settled, so settling it again fails with `invalid_exact_evm_nonce_already_used` as the reference
//! facilitator's does (or, [`Facilitator::set_idempotent`], answers the first settlement again).
//! A settlement's transaction is predictable: [`Facilitator::transaction_for`] its nonce.
//!
//! A body it cannot read (not JSON, no `paymentPayload.payload.authorization`) gets a 400
//! `{"error":...}`; another path a 404, another method a 405, both with such a body.

use std::collections::VecDeque;
use std::fmt;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// What x402's reference facilitators (TypeScript, Go, Python) answer for a nonce used already.
pub const NONCE_USED: &str = "invalid_exact_evm_nonce_already_used";

use super::server::{read_request, Request, TestServer};

/// How the fake answers one call of `/verify` or `/settle` (see [`Facilitator::script_verify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verify: valid. Settle: settled (a new transaction), unless the nonce already was.
    Valid,
    /// Verify: `isValid: false` with this `invalidReason`. Settle: `success: false` with this
    /// `errorReason` (`"insufficient_funds"`, say); nothing settled.
    Invalid(&'static str),
    /// As the facilitator answers a nonce already used on chain: [`NONCE_USED`] (verify:
    /// as its `invalidReason`; settle: as its `errorReason`, no transaction). Nothing settled.
    NonceAlreadyUsed,
    /// What `Valid` does (a settlement is recorded at once, before the wait), answered only
    /// after this long; if the client has closed the connection meanwhile, nothing is.
    Slow(Duration),
    /// This HTTP status with `{"error":"scripted status S"}`; nothing settled.
    Status(u16),
    /// Reads the request, then closes the connection without answering; nothing settled.
    Drop,
}

/// A call the fake received, and what it answered.
#[derive(Debug, Clone)]
pub struct FacilitatorCall {
    pub method: String,
    /// As requested, base path included (`/x402/settle`).
    pub path: String,
    /// Names lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`null` when it is not JSON).
    pub body: Value,
    /// The scripted outcome it got (verify and settle only).
    pub outcome: Option<Outcome>,
    /// The status answered (or due after a [`Outcome::Slow`] wait); 0 for none.
    pub status: u16,
    /// The JSON answered (`null` for none).
    pub answer: Value,
}

impl FacilitatorCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::http::header(&self.headers, name)
    }

    /// The payment's authorization (`paymentPayload.payload.authorization`), v1 or v2.
    pub fn authorization(&self) -> Option<&Value> {
        self.body.pointer("/paymentPayload/payload/authorization")
    }

    /// The authorization's nonce.
    pub fn nonce(&self) -> Option<&str> {
        self.authorization()?.get("nonce")?.as_str()
    }

    /// The authorization's payer (`from`).
    pub fn payer(&self) -> Option<&str> {
        self.authorization()?.get("from")?.as_str()
    }
}

/// One line: method, path, payer and nonce (`-` where absent), then status and answer.
impl fmt::Display for FacilitatorCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} payer={} nonce={}",
            self.method,
            self.path,
            self.payer().unwrap_or("-"),
            self.nonce().unwrap_or("-")
        )?;
        if let Some(outcome) = self.outcome {
            write!(f, " outcome={outcome:?}")?;
        }
        match self.status {
            0 => write!(f, " -> (closed without an answer)"),
            status => write!(f, " -> {status} {}", self.answer),
        }
    }
}

#[derive(Default)]
struct FacilitatorState {
    /// Outcomes for the next calls of each route, in order; then `Valid`.
    verify_script: VecDeque<Outcome>,
    settle_script: VecDeque<Outcome>,
    idempotent: bool,
    /// Each nonce settled and the answer its settlement got, in order.
    settled: Vec<(String, Value)>,
    calls: Vec<FacilitatorCall>,
}

/// A fake x402 facilitator on a port of the test process (see the module comment for its
/// routes and answers): answers verify and settle as scripted, remembers settled nonces and
/// records every call. Serves several requests per connection (Envoy keeps its connections to
/// a cluster alive). Stopped (its threads joined) when dropped; if a test is failing then, it
/// prints its calls.
pub struct Facilitator {
    pub port: u16,
    base: String,
    state: Arc<Mutex<FacilitatorState>>,
    _server: TestServer,
}

impl Facilitator {
    /// On a free port, its routes under `base_path` (`/x402`; `""` or `/` for none).
    pub fn start(base_path: &str) -> Facilitator {
        Facilitator::start_on(0, base_path)
    }

    /// As [`Facilitator::start`], on 127.0.0.1:`port`.
    pub fn start_on(port: u16, base_path: &str) -> Facilitator {
        let trimmed = base_path.trim_matches('/');
        let base = if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        };
        let state = Arc::new(Mutex::new(FacilitatorState::default()));
        let server = {
            let (state, base) = (Arc::clone(&state), base.clone());
            TestServer::start_on(port, move |stream, stop| serve(stream, &state, &base, stop))
        };
        Facilitator {
            port: server.port,
            base,
            state,
            _server: server,
        }
    }

    /// The base path, normalized: `/x402` (`""` for none).
    pub fn base_path(&self) -> &str {
        &self.base
    }

    /// `http://127.0.0.1:PORT{base}`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.base)
    }

    /// The next calls of `/verify` get these outcomes, in order, then [`Outcome::Valid`].
    pub fn script_verify(&self, outcomes: &[Outcome]) {
        let mut state = self.state.lock().unwrap();
        state.verify_script.extend(outcomes.iter().copied());
    }

    /// The next calls of `/settle` get these outcomes, in order, then [`Outcome::Valid`].
    pub fn script_settle(&self, outcomes: &[Outcome]) {
        let mut state = self.state.lock().unwrap();
        state.settle_script.extend(outcomes.iter().copied());
    }

    /// `true`: a settle of a nonce already settled answers that first settlement's success
    /// again (same transaction) instead of [`NONCE_USED`] (the default).
    pub fn set_idempotent(&self, idempotent: bool) {
        self.state.lock().unwrap().idempotent = idempotent;
    }

    /// Every call received so far, in arrival order.
    pub fn calls(&self) -> Vec<FacilitatorCall> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Calls of `/verify` so far (any method, any outcome).
    pub fn verifies(&self) -> usize {
        self.count(&format!("{}/verify", self.base))
    }

    /// Calls of `/settle` so far (any method, any outcome).
    pub fn settles(&self) -> usize {
        self.count(&format!("{}/settle", self.base))
    }

    /// The nonces settled so far, in order, each once.
    pub fn settled(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.settled.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The transaction the fake answers for settling `nonce`: `0x` and its hex digits
    /// reversed.
    pub fn transaction_for(nonce: &str) -> String {
        let digits = nonce.strip_prefix("0x").unwrap_or(nonce);
        format!("0x{}", digits.chars().rev().collect::<String>())
    }

    fn count(&self, path: &str) -> usize {
        let state = self.state.lock().unwrap();
        let route = |c: &&FacilitatorCall| c.path.split('?').next() == Some(path);
        state.calls.iter().filter(route).count()
    }
}

impl Drop for Facilitator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("fake facilitator on port {} received:", self.port);
            for call in &state.calls {
                eprintln!("  {call}");
            }
            eprintln!("and settled {:?}", state.settled);
        }
    }
}

/// What the fake does with one request.
struct Reply {
    /// 0: close without answering.
    status: u16,
    body: Value,
    delay: Duration,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body,
            delay: Duration::ZERO,
        }
    }

    fn error(status: u16, message: &str) -> Reply {
        Reply::json(status, json!({ "error": message }))
    }

    fn none() -> Reply {
        Reply::json(0, Value::Null)
    }
}

/// The payment a verify or settle body carries: who pays, the nonce, and the network.
struct Payment {
    payer: String,
    nonce: String,
    network: String,
}

impl Payment {
    /// From `paymentPayload.payload.authorization` (v1 and v2 alike), the network from
    /// `paymentRequirements` or else the payload (v2 `accepted.network`, v1 `network`).
    fn of(body: &Value) -> Result<Payment, String> {
        let authorization = body
            .pointer("/paymentPayload/payload/authorization")
            .filter(|a| a.is_object())
            .ok_or("paymentPayload.payload.authorization is missing")?;
        let field = |name: &str| {
            authorization
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or(format!(
                    "paymentPayload.payload.authorization.{name} is not a string"
                ))
        };
        let network = [
            "/paymentRequirements/network",
            "/paymentPayload/accepted/network",
            "/paymentPayload/network",
        ]
        .iter()
        .find_map(|p| body.pointer(p).and_then(Value::as_str))
        .unwrap_or_default()
        .to_string();
        Ok(Payment {
            payer: field("from")?,
            nonce: field("nonce")?,
            network,
        })
    }
}

const SUPPORTED: &str = r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:84532"},{"x402Version":1,"scheme":"exact","network":"base-sepolia"}],"extensions":[],"signers":{}}"#;

/// Answers the requests of one kept-alive connection until it ends, a `Drop` ends it, or the
/// client asked to close.
fn serve(mut stream: TcpStream, state: &Mutex<FacilitatorState>, base: &str, stop: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buf, stop) {
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let reply = answer(request, state, base);
        if reply.status == 0 {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        if !wait(reply.delay, stop) || write(&mut stream, &reply, close).is_err() || close {
            return;
        }
    }
}

/// Decides the answer to `request` and records the call, both under one lock (a settlement
/// and its record are one step).
fn answer(request: Request, state: &Mutex<FacilitatorState>, base: &str) -> Reply {
    let body: Value = serde_json::from_str(&request.body).unwrap_or(Value::Null);
    let path = request.path.split('?').next().unwrap_or_default();
    let route = path.strip_prefix(base).unwrap_or_default();
    let mut st = state.lock().unwrap();
    let (outcome, reply) = match (route, request.method.as_str()) {
        ("/verify", "POST") => {
            let outcome = st.verify_script.pop_front().unwrap_or(Outcome::Valid);
            (Some(outcome), verify(outcome, &body))
        }
        ("/settle", "POST") => {
            let outcome = st.settle_script.pop_front().unwrap_or(Outcome::Valid);
            (Some(outcome), settle(outcome, &body, &mut st))
        }
        ("/supported", "GET") => {
            let supported = serde_json::from_str(SUPPORTED).unwrap();
            (None, Reply::json(200, supported))
        }
        ("/verify" | "/settle", _) => (None, Reply::error(405, "only POST")),
        ("/supported", _) => (None, Reply::error(405, "only GET")),
        _ => (None, Reply::error(404, &format!("no route at {path}"))),
    };
    st.calls.push(FacilitatorCall {
        method: request.method,
        path: request.path,
        headers: request.headers,
        body,
        outcome,
        status: reply.status,
        answer: reply.body.clone(),
    });
    reply
}

/// The answer of `/verify`.
fn verify(outcome: Outcome, body: &Value) -> Reply {
    let payment = match outcome {
        Outcome::Status(status) => return scripted(status),
        Outcome::Drop => return Reply::none(),
        _ => match Payment::of(body) {
            Ok(payment) => payment,
            Err(e) => return Reply::error(400, &e),
        },
    };
    let invalid =
        |reason: &str| json!({"isValid": false, "invalidReason": reason, "payer": payment.payer});
    match outcome {
        Outcome::Invalid(reason) => Reply::json(200, invalid(reason)),
        Outcome::NonceAlreadyUsed => Reply::json(200, invalid(NONCE_USED)),
        _ => {
            let mut reply = Reply::json(200, json!({"isValid": true, "payer": payment.payer}));
            if let Outcome::Slow(delay) = outcome {
                reply.delay = delay;
            }
            reply
        }
    }
}

/// The answer of `/settle`; a settlement is recorded in `st`.
fn settle(outcome: Outcome, body: &Value, st: &mut FacilitatorState) -> Reply {
    let payment = match outcome {
        Outcome::Status(status) => return scripted(status),
        Outcome::Drop => return Reply::none(),
        _ => match Payment::of(body) {
            Ok(payment) => payment,
            Err(e) => return Reply::error(400, &e),
        },
    };
    let failed = |reason: &str| {
        json!({
            "success": false,
            "errorReason": reason,
            "transaction": "",
            "network": payment.network,
            "payer": payment.payer,
        })
    };
    let delay = match outcome {
        Outcome::Invalid(reason) => return Reply::json(200, failed(reason)),
        Outcome::NonceAlreadyUsed => return Reply::json(200, failed(NONCE_USED)),
        Outcome::Slow(delay) => delay,
        _ => Duration::ZERO,
    };
    let before = st
        .settled
        .iter()
        .find(|(nonce, _)| nonce.eq_ignore_ascii_case(&payment.nonce));
    let answer = match before {
        Some((_, first)) if st.idempotent => first.clone(),
        Some(_) => failed(NONCE_USED),
        None => {
            let answer = json!({
                "success": true,
                "transaction": Facilitator::transaction_for(&payment.nonce),
                "network": payment.network,
                "payer": payment.payer,
            });
            st.settled.push((payment.nonce.clone(), answer.clone()));
            answer
        }
    };
    Reply {
        status: 200,
        body: answer,
        delay,
    }
}

fn scripted(status: u16) -> Reply {
    Reply::error(status, &format!("scripted status {status}"))
}

/// Waits `delay`; false if the fake stopped meanwhile.
fn wait(delay: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + delay;
    while Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(20)));
    }
    true
}

fn write(stream: &mut TcpStream, reply: &Reply, close: bool) -> std::io::Result<()> {
    let body = reply.body.to_string();
    let connection = if close { "connection: close\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{connection}\r\n",
        reply.status,
        reason(reply.status),
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        402 => "Payment Required",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
