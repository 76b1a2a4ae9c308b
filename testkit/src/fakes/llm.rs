//! A fake LLM provider: OpenAI (Chat Completions, Responses) and Anthropic (Messages) over
//! HTTP/1.1, as a real Envoy meets them upstream. It reports the tokens the request's headers
//! ask for, obeys the output cap in the body, streams when asked, and records every request
//! and every usage it sent, so that a test can compare what the filter counted with what the
//! provider reported.
//!
//! Test controls, as request headers (they pass through Envoy):
//!
//! | header | effect |
//! |---|---|
//! | `x-fake-input-tokens: N` | input tokens, cached ones included (default 10) |
//! | `x-fake-cached-tokens: N` | of which read from the cache (default 0; at most the input) |
//! | `x-fake-output-tokens: N` | output tokens per choice before the body's cap (default 20) |
//! | `x-fake-split: N` | the body in pieces of N bytes, each its own write (and HTTP chunk) |
//! | `x-fake-cut: true` | half the stream's events (half the document), then the connection closes |
//! | `x-fake-status: S` | status S with no body, reporting nothing (on any path) |
//! | `x-fake-cost: V` | the response header `x-upstream-cost: V` |
//! | `x-fake-delay-ms: N` | N ms before answering |
//!
//! A capped answer says so as its provider would: `finish_reason: "length"`, `stop_reason:
//! "max_tokens"`, or a response `incomplete` (streamed as `response.incomplete`, not
//! `response.completed`). JSON keys come in serde_json's order (sorted), not the providers':
//! valid JSON, and a reminder that a parser must not rely on key order.

mod shapes;

use std::fmt;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use self::shapes::{Body, Turn};
use super::server::{read_request, Request, TestServer};

/// The APIs the fake serves, each at its provider's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmApi {
    /// `POST /v1/chat/completions` (OpenAI).
    ChatCompletions,
    /// `POST /v1/responses` (OpenAI).
    Responses,
    /// `POST /v1/messages` (Anthropic).
    Messages,
}

impl LlmApi {
    /// The API a request path names (its query ignored), if the fake serves it.
    pub fn of_path(path: &str) -> Option<LlmApi> {
        match path.split('?').next().unwrap_or_default() {
            "/v1/chat/completions" => Some(LlmApi::ChatCompletions),
            "/v1/responses" => Some(LlmApi::Responses),
            "/v1/messages" => Some(LlmApi::Messages),
            _ => None,
        }
    }

    /// The output cap a request body carries (Chat Completions: the smaller of
    /// `max_completion_tokens` and `max_tokens`; Responses: `max_output_tokens`; Messages:
    /// `max_tokens`), or why it is not a valid one.
    fn cap(self, body: &Value) -> Result<Option<u64>, String> {
        let field = |name: &str| match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("{name} must be a non-negative integer, not {value}")),
        };
        Ok(match self {
            LlmApi::ChatCompletions => {
                match (field("max_completion_tokens")?, field("max_tokens")?) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            LlmApi::Responses => field("max_output_tokens")?,
            LlmApi::Messages => field("max_tokens")?,
        })
    }
}

/// A request [`FakeLlm`] received.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    pub method: String,
    pub path: String,
    /// Names lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`null` when it is not JSON).
    pub body: Value,
}

impl LlmRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::http::header(&self.headers, name)
    }

    pub fn api(&self) -> Option<LlmApi> {
        LlmApi::of_path(&self.path)
    }

    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }

    /// Whether the body asks for a stream (`"stream": true`).
    pub fn stream(&self) -> bool {
        self.body.get("stream") == Some(&Value::Bool(true))
    }

    /// The output cap the body carries for its API (see [`LlmApi`]), if a valid one.
    pub fn cap(&self) -> Option<u64> {
        self.api()
            .and_then(|api| api.cap(&self.body).ok().flatten())
    }
}

/// One line: method, path, model, cap and stream (`-` where absent).
impl fmt::Display for LlmRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cap = self.cap().map_or("-".to_string(), |cap| cap.to_string());
        write!(
            f,
            "{} {} model={} cap={cap} stream={}",
            self.method,
            self.path,
            self.model().unwrap_or("-"),
            self.stream()
        )
    }
}

/// Token usage the fake sent, summed per kind over responses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    /// Input tokens, cached ones included (on Anthropic's wire: `input_tokens` +
    /// `cache_read_input_tokens`).
    pub input: u64,
    pub cached_input: u64,
    /// Output tokens, all choices.
    pub output: u64,
    /// Responses whose usage was sent.
    pub responses: u64,
}

impl Reported {
    fn add(&mut self, other: Reported) {
        self.input = self.input.saturating_add(other.input);
        self.cached_input = self.cached_input.saturating_add(other.cached_input);
        self.output = self.output.saturating_add(other.output);
        self.responses = self.responses.saturating_add(other.responses);
    }

    fn take_back(&mut self, other: Reported) {
        self.input = self.input.saturating_sub(other.input);
        self.cached_input = self.cached_input.saturating_sub(other.cached_input);
        self.output = self.output.saturating_sub(other.output);
        self.responses = self.responses.saturating_sub(other.responses);
    }
}

#[derive(Default)]
struct LlmState {
    requests: Vec<LlmRequest>,
    reported: Reported,
}

/// A fake LLM provider on a port of the test process (see the module comment for its test
/// controls). Stopped when dropped; if a test is failing then, it prints what it received.
pub struct FakeLlm {
    pub port: u16,
    state: Arc<Mutex<LlmState>>,
    _server: TestServer,
}

impl FakeLlm {
    /// On a free port.
    pub fn start() -> FakeLlm {
        FakeLlm::start_on(0)
    }

    /// On 127.0.0.1:`port`.
    pub fn start_on(port: u16) -> FakeLlm {
        let state = Arc::new(Mutex::new(LlmState::default()));
        let server = {
            let state = Arc::clone(&state);
            TestServer::start_on(port, move |stream, stop| serve(stream, &state, stop))
        };
        FakeLlm {
            port: server.port,
            state,
            _server: server,
        }
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<LlmRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The usage sent so far. Only usage a client can have read counts: not that of a cut
    /// stream, a status answer or a chat stream without `include_usage`; nor, for a cut
    /// Anthropic stream, the input its `message_start` did carry (its totals never came).
    /// A usage is counted before its last byte is written, so a client that has read it
    /// finds it counted.
    pub fn reported(&self) -> Reported {
        self.state.lock().unwrap().reported
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("fake LLM on port {} received:", self.port);
            for request in &state.requests {
                eprintln!("  {request}");
            }
            eprintln!("and reported {:?}", state.reported);
        }
    }
}

/// The test controls of a request.
struct Controls {
    input: u64,
    cached: u64,
    output: u64,
    status: Option<u16>,
    split: Option<usize>,
    cut: bool,
    cost: Option<String>,
    delay: Duration,
}

impl Controls {
    fn of(request: &LlmRequest) -> Result<Controls, String> {
        let any = |_: &_| true;
        let count = "a non-negative integer";
        let controls = Controls {
            input: control(request, "x-fake-input-tokens", any, count)?.unwrap_or(10),
            cached: control(request, "x-fake-cached-tokens", any, count)?.unwrap_or(0),
            output: control(request, "x-fake-output-tokens", any, count)?.unwrap_or(20),
            status: control(
                request,
                "x-fake-status",
                |s: &u16| (200..=599).contains(s),
                "200-599",
            )?,
            split: control(request, "x-fake-split", |n| *n > 0, "a positive integer")?,
            cut: control(request, "x-fake-cut", |_| true, "true or false")?.unwrap_or(false),
            cost: control(
                request,
                "x-fake-cost",
                |v: &String| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
                "visible ASCII",
            )?,
            delay: Duration::from_millis(
                control(request, "x-fake-delay-ms", any, count)?.unwrap_or(0),
            ),
        };
        if controls.cached > controls.input {
            return Err(format!(
                "x-fake-cached-tokens ({}) exceeds x-fake-input-tokens ({})",
                controls.cached, controls.input
            ));
        }
        Ok(controls)
    }
}

/// Control `name` of a request, if it carries one, or why its value is not `what` it must be.
fn control<T: std::str::FromStr>(
    request: &LlmRequest,
    name: &str,
    valid: impl Fn(&T) -> bool,
    what: &str,
) -> Result<Option<T>, String> {
    let Some(value) = request.header(name) else {
        return Ok(None);
    };
    match value.parse::<T>() {
        Ok(parsed) if valid(&parsed) => Ok(Some(parsed)),
        _ => Err(format!("{name} must be {what}, not {value:?}")),
    }
}

/// What the fake writes back, and how.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    /// `None`: no body (`content-length: 0`).
    body: Option<Body>,
    /// The usage the body reports and the index of the event that completes it (0 for a
    /// document).
    usage: Option<(Reported, usize)>,
    split: Option<usize>,
    cut: bool,
    delay: Duration,
}

impl Reply {
    fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: None,
            usage: None,
            split: None,
            cut: false,
            delay: Duration::ZERO,
        }
    }

    /// An error document in the provider's shape.
    fn error(status: u16, api: Option<LlmApi>, message: &str) -> Reply {
        let kind = match status {
            404 => "not_found_error",
            _ => "invalid_request_error",
        };
        let document = match api {
            Some(LlmApi::Messages) => {
                json!({"type": "error", "error": {"type": kind, "message": message}})
            }
            _ => json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
        };
        let mut reply = Reply::empty(status);
        reply
            .headers
            .push(("content-type", "application/json".into()));
        reply.body = Some(Body::Document(document.to_string().into_bytes()));
        reply
    }
}

/// The answer to a request: every decision, before anything is written.
fn answer(request: &LlmRequest) -> Reply {
    let Some(api) = request.api() else {
        // Any other API (an image route, say) answers only the status and cost it is told.
        return match Controls::of(request) {
            Ok(Controls {
                status: Some(status),
                cost,
                ..
            }) => {
                let mut reply = Reply::empty(status);
                if let Some(cost) = cost {
                    reply.headers.push(("x-upstream-cost", cost));
                }
                reply
            }
            _ => Reply::error(404, None, &format!("no API at {}", request.path)),
        };
    };
    if request.method != "POST" {
        let mut reply = Reply::error(405, Some(api), &format!("{} only POST", request.path));
        reply.headers.push(("allow", "POST".into()));
        return reply;
    }
    let controls = match Controls::of(request) {
        Ok(controls) => controls,
        Err(e) => return Reply::error(400, Some(api), &e),
    };
    let mut reply = match controls.status {
        Some(status) => Reply::empty(status),
        None => match turn(api, request, &controls) {
            Err(e) => Reply::error(400, Some(api), &e),
            Ok((turn, stream)) => {
                let shaped = if stream {
                    turn.stream()
                } else {
                    turn.document()
                };
                let kind = if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                let mut reply = Reply::empty(200);
                reply.headers.push(("content-type", kind.into()));
                reply.body = Some(shaped.body);
                reply.usage = shaped.usage;
                reply.split = controls.split;
                reply.cut = controls.cut;
                reply
            }
        },
    };
    if let Some(cost) = controls.cost {
        reply.headers.push(("x-upstream-cost", cost));
    }
    reply.delay = controls.delay;
    reply
}

/// What to answer a valid request with, and whether to stream it.
fn turn(api: LlmApi, request: &LlmRequest, controls: &Controls) -> Result<(Turn, bool), String> {
    let body = &request.body;
    if !body.is_object() {
        return Err("the body is not a JSON object".into());
    }
    let cap = api.cap(body)?;
    let choices = match (api, body.get("n")) {
        (LlmApi::ChatCompletions, Some(n)) if !n.is_null() => n
            .as_u64()
            .filter(|n| (1..=128).contains(n))
            .ok_or_else(|| format!("n must be an integer from 1 to 128, not {n}"))?,
        _ => 1,
    };
    let per_choice = cap.map_or(controls.output, |cap| cap.min(controls.output));
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let turn = Turn {
        api,
        model: request.model().unwrap_or("fake-model").to_string(),
        created,
        input: controls.input,
        cached: controls.cached,
        per_choice,
        choices,
        truncated: per_choice < controls.output,
        include_usage: body.pointer("/stream_options/include_usage") == Some(&Value::Bool(true)),
        cap,
        tools: body
            .get("tools")
            .filter(|t| t.is_array())
            .cloned()
            .unwrap_or_else(|| json!([])),
    };
    Ok((turn, request.stream()))
}

/// Answers the requests of one kept-alive connection until it ends, or a cut ends it.
fn serve(mut stream: TcpStream, state: &Mutex<LlmState>, stop: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buf, stop) {
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let request = received(request);
        let reply = answer(&request);
        state.lock().unwrap().requests.push(request);
        if !wait(reply.delay, stop) {
            return;
        }
        if write(&mut stream, &reply, state).is_err() || reply.cut {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        if close {
            return;
        }
    }
}

fn received(request: Request) -> LlmRequest {
    LlmRequest {
        body: serde_json::from_str(&request.body).unwrap_or(Value::Null),
        method: request.method,
        path: request.path,
        headers: request.headers,
    }
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

/// Writes `reply`: the head, then the body piece by piece, each flushed (a stream chunked,
/// one HTTP chunk per piece, the terminating chunk unless cut).
fn write(stream: &mut TcpStream, reply: &Reply, state: &Mutex<LlmState>) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match &reply.body {
        None => head.push_str("content-length: 0\r\n"),
        Some(Body::Document(document)) => {
            head.push_str(&format!("content-length: {}\r\n", document.len()));
        }
        Some(Body::Events(_)) => head.push_str("transfer-encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.flush()?;
    match &reply.body {
        None => Ok(()),
        Some(Body::Document(document)) => {
            let (sent, usage) = if reply.cut {
                (&document[..document.len() / 2], None)
            } else {
                (&document[..], reply.usage.map(|(u, _)| (u, document.len())))
            };
            let pieces: Vec<&[u8]> = sent
                .chunks(reply.split.unwrap_or(sent.len().max(1)))
                .collect();
            send(stream, &pieces, usage, state, false)
        }
        Some(Body::Events(events)) => {
            let events = if reply.cut {
                &events[..events.len() / 2]
            } else {
                &events[..]
            };
            // The usage, if sent, with the byte of the body its event ends at.
            let usage = reply
                .usage
                .filter(|(_, at)| *at < events.len())
                .map(|(u, at)| (u, events[..=at].iter().map(Vec::len).sum()));
            let body = events.concat();
            let pieces: Vec<&[u8]> = match reply.split {
                Some(n) => body.chunks(n).collect(),
                None => events.iter().map(Vec::as_slice).collect(),
            };
            send(stream, &pieces, usage, state, true)?;
            if !reply.cut {
                stream.write_all(b"0\r\n\r\n")?;
                stream.flush()?;
            }
            Ok(())
        }
    }
}

/// Writes each piece (as an HTTP chunk if `chunked`) and flushes it. The usage ending at byte
/// `end` of the body is counted just before the piece that completes it goes out (a client
/// that has read it finds it counted), and taken back if that piece cannot be written.
fn send(
    stream: &mut TcpStream,
    pieces: &[&[u8]],
    usage: Option<(Reported, usize)>,
    state: &Mutex<LlmState>,
    chunked: bool,
) -> std::io::Result<()> {
    let mut sent = 0;
    for piece in pieces {
        let completes = usage.filter(|(_, end)| sent < *end && sent + piece.len() >= *end);
        sent += piece.len();
        if let Some((usage, _)) = completes {
            state.lock().unwrap().reported.add(usage);
        }
        let mut bytes = Vec::with_capacity(piece.len() + 16);
        if chunked {
            bytes.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        }
        bytes.extend_from_slice(piece);
        if chunked {
            bytes.extend_from_slice(b"\r\n");
        }
        let written = stream.write_all(&bytes).and_then(|()| stream.flush());
        if let Err(e) = written {
            if let Some((usage, _)) = completes {
                state.lock().unwrap().reported.take_back(usage);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Status",
    }
}
