//! The test kit's fake LLM provider ([`FakeLlm`]) answers as OpenAI and Anthropic do, with the
//! usage where each puts it, and its test controls do what the LLM tests rely on: pieces that
//! reassemble, cut streams without their end, status answers without a body. Checked with a
//! plain HTTP/1.1 client reading the raw chunks; no Envoy.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_testkit::*;

/// A response as read off the wire: its HTTP chunks as they came, and whether it ended as
/// HTTP/1.1 says (the terminating chunk, or all of its `content-length`).
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    chunks: Vec<Vec<u8>>,
    body: Vec<u8>,
    complete: bool,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// The server-sent events of the body: (event name, data), the data of `[DONE]` as a
    /// string.
    fn events(&self) -> Vec<(Option<String>, Value)> {
        events(&self.body)
    }
}

fn events(body: &[u8]) -> Vec<(Option<String>, Value)> {
    let text = std::str::from_utf8(body).expect("a stream is UTF-8 once whole");
    text.split_terminator("\n\n")
        .map(|event| {
            let mut name = None;
            let mut data = None;
            for line in event.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(match d {
                        "[DONE]" => json!("[DONE]"),
                        d => serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")),
                    });
                } else {
                    panic!("not an SSE line: {line:?}");
                }
            }
            (name, data.expect("every event has data"))
        })
        .collect()
}

/// A kept-alive connection to the fake.
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

    fn post(&mut self, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: fake\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        self.send(request.as_bytes())
    }

    fn send(&mut self, request: &[u8]) -> Answer {
        self.stream.write_all(request).unwrap();
        let split = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            assert!(self.read(), "the connection ended before a response head");
        };
        let head = String::from_utf8(self.buf.drain(..split + 4).collect()).unwrap();
        let mut lines = head.trim_end().split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| l.split_once(": ").unwrap())
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
            .collect();
        let mut answer = Answer {
            status: status.parse().unwrap(),
            headers,
            chunks: Vec::new(),
            body: Vec::new(),
            complete: false,
        };
        if answer.header("transfer-encoding") == Some("chunked") {
            self.read_chunks(&mut answer);
        } else {
            let length: usize = answer.header("content-length").unwrap().parse().unwrap();
            while self.buf.len() < length && self.read() {}
            answer.complete = self.buf.len() >= length;
            answer.body = self.buf.drain(..length.min(self.buf.len())).collect();
        }
        answer
    }

    fn read_chunks(&mut self, answer: &mut Answer) {
        loop {
            let Some(line) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                if !self.read() {
                    return;
                }
                continue;
            };
            let size = std::str::from_utf8(&self.buf[..line]).unwrap();
            let size = usize::from_str_radix(size, 16).unwrap();
            while self.buf.len() < line + 2 + size + 2 {
                if !self.read() {
                    return;
                }
            }
            let chunk: Vec<u8> = self.buf.drain(..line + 2 + size + 2).collect();
            assert_eq!(&chunk[line + 2 + size..], b"\r\n");
            if size == 0 {
                answer.complete = true;
                return;
            }
            let data = chunk[line + 2..line + 2 + size].to_vec();
            answer.body.extend_from_slice(&data);
            answer.chunks.push(data);
        }
    }

    /// Reads more; false at the end of the connection.
    fn read(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }
}

fn post(fake: &FakeLlm, path: &str, headers: &[(&str, &str)], body: Value) -> Answer {
    Client::new(fake.port).post(path, headers, &body.to_string())
}

/// A value without its timestamps (two answers a second apart differ only there).
fn timeless(mut value: Value) -> Value {
    match &mut value {
        Value::Object(map) => {
            map.remove("created");
            map.remove("created_at");
            for v in map.values_mut() {
                *v = timeless(v.take());
            }
        }
        Value::Array(items) => {
            for v in items {
                *v = timeless(v.take());
            }
        }
        _ => {}
    }
    value
}

const CHAT: &str = "/v1/chat/completions";
const RESPONSES: &str = "/v1/responses";
const MESSAGES: &str = "/v1/messages";

#[test]
fn chat_answer_reports_usage_where_openai_puts_it() {
    let fake = FakeLlm::start();
    let mut client = Client::new(fake.port);
    let tokens = [
        ("x-fake-input-tokens", "120"),
        ("x-fake-cached-tokens", "20"),
        ("x-fake-output-tokens", "30"),
    ];

    // The smaller of the two caps holds; a capped answer stops for length.
    let body = json!({"model": "gpt-4o", "max_tokens": 50, "max_completion_tokens": 25});
    let a = client.post(CHAT, &tokens, &body.to_string());
    assert_eq!(
        (a.status, a.header("content-type")),
        (200, Some("application/json"))
    );
    assert!(a.complete);
    let doc = a.json();
    assert_eq!(doc["object"], "chat.completion");
    assert_eq!(doc["model"], "gpt-4o");
    assert_eq!(doc["choices"][0]["finish_reason"], "length");
    assert_eq!(
        doc["usage"],
        json!({
            "prompt_tokens": 120, "completion_tokens": 25, "total_tokens": 145,
            "prompt_tokens_details": {"cached_tokens": 20, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        })
    );

    // Same connection: n choices of 4 tokens each.
    let body = json!({"model": "gpt-4o", "n": 3});
    let b = client.post(CHAT, &[("x-fake-output-tokens", "4")], &body.to_string());
    let doc = b.json();
    assert_eq!(doc["choices"].as_array().unwrap().len(), 3);
    assert_eq!(doc["choices"][2]["finish_reason"], "stop");
    assert_eq!(doc["usage"]["completion_tokens"], 12);
    assert_eq!(doc["usage"]["prompt_tokens"], 10);

    let expected = Reported {
        input: 130,
        cached_input: 20,
        output: 37,
        responses: 2,
    };
    assert_eq!(fake.reported(), expected);
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].cap(), Some(25));
    assert_eq!(requests[0].header("x-fake-input-tokens"), Some("120"));
    assert_eq!(requests[1].body["n"], 3);
}

#[test]
fn chat_stream_sends_usage_only_when_asked() {
    let fake = FakeLlm::start();
    let output = [("x-fake-output-tokens", "80")];

    let plain = post(&fake, CHAT, &output, json!({"model": "m", "stream": true}));
    assert_eq!(plain.header("content-type"), Some("text/event-stream"));
    assert!(plain.complete);
    let events = plain.events();
    // Each event its own chunk.
    assert_eq!(plain.chunks.len(), events.len());
    // A role chunk, 50 deltas (the most a choice gets), a finish chunk, [DONE].
    assert_eq!(events.len(), 53);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    assert!(events[..52].iter().all(|(_, e)| e.get("usage").is_none()));
    assert_eq!(fake.reported(), Reported::default());

    let asked = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}});
    let answer = post(&fake, CHAT, &output, asked);
    let events = answer.events();
    assert_eq!((answer.chunks.len(), events.len()), (54, 54));
    assert!(events[..52].iter().all(|(_, e)| e["usage"].is_null()));
    assert_eq!(events[52].1["choices"], json!([]));
    assert_eq!(events[52].1["usage"]["completion_tokens"], 80);
    assert_eq!(events[53].1, "[DONE]");
    let text: String = events[1..51]
        .iter()
        .map(|(_, e)| e["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert!(text.contains("\"usage\":{") && text.contains("🦀") && text.contains("[DONE]"));
    let expected = Reported {
        input: 10,
        cached_input: 0,
        output: 80,
        responses: 1,
    };
    assert_eq!(fake.reported(), expected);
}

#[test]
fn split_pieces_reassemble() {
    let fake = FakeLlm::start();
    let strip = |a: &Answer| -> Vec<_> {
        let events = a.events().into_iter();
        events.map(|(n, e)| (n, timeless(e))).collect()
    };
    for path in [CHAT, RESPONSES, MESSAGES] {
        let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}});
        let whole = post(&fake, path, &[], body.clone());
        let document = post(&fake, path, &[], json!({"model": "m"}));
        for n in [1, 7] {
            let n_text = n.to_string();
            let split = [("x-fake-split", n_text.as_str())];
            let pieces = post(&fake, path, &split, body.clone());
            assert!(pieces.complete, "{path}");
            assert!(pieces.chunks.len() > whole.chunks.len(), "{path}");
            assert!(pieces.chunks.iter().all(|c| c.len() <= n), "{path}");
            if n == 1 {
                let utf8 = |c: &Vec<u8>| std::str::from_utf8(c).is_ok();
                assert!(!pieces.chunks.iter().all(utf8), "a character split");
            }
            assert_eq!(strip(&pieces), strip(&whole), "{path}");

            let pieces = post(&fake, path, &split, json!({"model": "m"}));
            assert!(pieces.complete);
            assert_eq!(timeless(pieces.json()), timeless(document.json()), "{path}");
        }
    }
    assert_eq!(fake.reported().responses, 18);
}

#[test]
fn cut_stream_ends_without_terminator() {
    let fake = FakeLlm::start();
    let cut = [("x-fake-cut", "true")];
    let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}});
    let mut client = Client::new(fake.port);
    let answer = client.post(CHAT, &cut, &body.to_string());
    assert_eq!(answer.status, 200);
    assert!(!answer.complete, "no terminating chunk");
    assert!(!client.read(), "the connection is closed");
    let events = answer.events();
    assert_eq!(events.len(), 12, "half of the 24 events");
    assert!(events.iter().all(|(_, e)| e["usage"].is_null()));

    let answer = post(&fake, MESSAGES, &cut, json!({"model": "m", "stream": true}));
    let names: Vec<_> = answer
        .events()
        .into_iter()
        .map(|(n, _)| n.unwrap())
        .collect();
    assert_eq!(names[0], "message_start");
    assert!(!names.contains(&"message_delta".to_string()));
    assert!(!answer.complete);

    let answer = post(&fake, RESPONSES, &cut, json!({"model": "m"}));
    let length: usize = answer.header("content-length").unwrap().parse().unwrap();
    assert!(!answer.complete);
    assert_eq!(answer.body.len(), length / 2);

    assert_eq!(fake.reported(), Reported::default());
}

#[test]
fn status_control_answers_with_no_body() {
    let fake = FakeLlm::start();
    let started = Instant::now();
    let headers = [
        ("x-fake-status", "503"),
        ("x-fake-cost", "7"),
        ("x-fake-delay-ms", "300"),
    ];
    let answer = post(
        &fake,
        MESSAGES,
        &headers,
        json!({"model": "m", "stream": true}),
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("content-length"), Some("0"));
    assert_eq!(answer.header("x-upstream-cost"), Some("7"));
    assert!(answer.body.is_empty() && answer.complete);
    assert_eq!(fake.reported(), Reported::default());
    assert_eq!(fake.requests().len(), 1);

    let answer = post(&fake, CHAT, &[("x-fake-cost", "7")], json!({"model": "m"}));
    assert_eq!(answer.header("x-upstream-cost"), Some("7"));
}

#[test]
fn responses_and_messages_report_where_their_providers_do() {
    let fake = FakeLlm::start();
    let tokens = [
        ("x-fake-input-tokens", "100"),
        ("x-fake-cached-tokens", "40"),
        ("x-fake-output-tokens", "30"),
    ];

    let tools = json!([{"type": "function", "name": "f"}]);
    let doc = post(
        &fake,
        RESPONSES,
        &tokens,
        json!({"model": "m", "tools": tools}),
    )
    .json();
    assert_eq!(
        (&doc["object"], &doc["status"]),
        (&json!("response"), &json!("completed"))
    );
    assert_eq!(doc["tools"], tools);
    assert_eq!(
        doc["usage"],
        json!({"input_tokens": 100, "input_tokens_details": {"cached_tokens": 40},
               "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 0},
               "total_tokens": 130})
    );

    // Capped: the stream ends with response.incomplete, as the API's does.
    let body = json!({"model": "m", "stream": true, "max_output_tokens": 8});
    let events = post(&fake, RESPONSES, &tokens, body).events();
    assert_eq!(events[0].0.as_deref(), Some("response.created"));
    assert!(events[0].1["response"]["usage"].is_null());
    let deltas = events
        .iter()
        .filter(|(n, _)| n.as_deref() == Some("response.output_text.delta"));
    assert_eq!(deltas.count(), 8);
    let (last, done) = events.last().unwrap();
    assert_eq!(last.as_deref(), Some("response.incomplete"));
    assert_eq!(done["response"]["usage"]["output_tokens"], 8);

    // Anthropic's input tokens exclude the cached ones.
    let doc = post(
        &fake,
        MESSAGES,
        &tokens,
        json!({"model": "m", "max_tokens": 1000}),
    )
    .json();
    assert_eq!(doc["stop_reason"], "end_turn");
    assert_eq!(
        doc["usage"],
        json!({"input_tokens": 60, "cache_creation_input_tokens": 0,
               "cache_read_input_tokens": 40, "output_tokens": 30})
    );
    let body = json!({"model": "m", "max_tokens": 5, "stream": true});
    let events = post(&fake, MESSAGES, &tokens, body).events();
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 60);
    assert_eq!(events[0].1["message"]["usage"]["output_tokens"], 1);
    let (name, delta) = &events[events.len() - 2];
    assert_eq!(name.as_deref(), Some("message_delta"));
    assert_eq!(
        *delta,
        json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
               "usage": {"output_tokens": 5}})
    );

    let expected = Reported {
        input: 400,
        cached_input: 160,
        output: 73,
        responses: 4,
    };
    assert_eq!(fake.reported(), expected);
}

#[test]
fn bad_requests_get_a_400_and_the_fake_keeps_serving() {
    let fake = FakeLlm::start();
    let mut client = Client::new(fake.port);
    assert_eq!(client.post(CHAT, &[], "not json").status, 400);
    assert_eq!(client.post(CHAT, &[], "[1]").status, 400);
    assert_eq!(client.post(CHAT, &[], r#"{"max_tokens": -1}"#).status, 400);
    assert_eq!(client.post(CHAT, &[], r#"{"n": 0}"#).status, 400);
    let answer = client.post(MESSAGES, &[("x-fake-output-tokens", "many")], "{}");
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["type"], "error");
    let cached = [("x-fake-cached-tokens", "11")];
    assert_eq!(client.post(CHAT, &cached, "{}").status, 400);
    assert_eq!(client.post("/v1/completions", &[], "{}").status, 404);
    let get = client.send(b"GET /v1/messages HTTP/1.1\r\nhost: fake\r\n\r\n");
    assert_eq!((get.status, get.header("allow")), (405, Some("POST")));

    // A chunked request body, as Envoy sends one it got without a length.
    let chunked = b"POST /v1/messages HTTP/1.1\r\nhost: fake\r\ntransfer-encoding: chunked\r\n\r\n\
                    4\r\n{\"mo\r\na\r\ndel\": \"m\"}\r\n0\r\n\r\n";
    let answer = client.send(chunked);
    assert_eq!(
        (answer.status, answer.json()["model"].clone()),
        (200, json!("m"))
    );
    assert_eq!(fake.reported().responses, 1);
    assert_eq!(fake.requests().len(), 9);
}
