//! Unit tests of [`crate::llm`]: request bodies (admission) and usage in responses
//! (settlement), against the shapes the three APIs send.

use super::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Fixtures: responses as the providers send them (from their API references), one event a line
// group, `\n` line ends (the CRLF tests rewrite them).

const CHAT: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1741569952,"model":"gpt-4.1-2025-04-14","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I assist you today?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":null}"#;

const CHAT_STREAM_HEAD: &str = concat!(
    r#"data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":" there, \u00e9t\u00e9 ☀ \"quoted\""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
    "\n\n",
);

const CHAT_STREAM_TAIL: &str = concat!(
    r#"data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

const RESPONSES: &str = r#"{"id":"resp_1","object":"response","created_at":1741476542,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"In a peaceful grove beneath a silver moon, a unicorn named Lumina found a 13\" mirror.","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123},"user":null,"metadata":{}}"#;

/// The `response` object of a stream's first events, before any usage.
macro_rules! response_in_progress {
    ($status:literal) => {
        concat!(
            r#"{"id":"resp_2","object":"response","created_at":1741290958,"status":""#,
            $status,
            r#"","error":null,"incomplete_details":null,"instructions":"You are a helpful assistant.","max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":null,"user":null,"metadata":{}}"#
        )
    };
}

const RESPONSES_STREAM_HEAD: &str = concat!(
    "event: response.created\n",
    r#"data: {"type":"response.created","sequence_number":0,"response":"#,
    response_in_progress!("in_progress"),
    "}\n\n",
    "event: response.in_progress\n",
    r#"data: {"type":"response.in_progress","sequence_number":1,"response":"#,
    response_in_progress!("in_progress"),
    "}\n\n",
    "event: response.output_item.added\n",
    r#"data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_2","type":"message","status":"in_progress","role":"assistant","content":[]}}"#,
    "\n\n",
    "event: response.output_text.delta\n",
    r#"data: {"type":"response.output_text.delta","sequence_number":3,"item_id":"msg_2","output_index":0,"content_index":0,"delta":"Hi"}"#,
    "\n\n",
);

const RESPONSES_STREAM_TAIL: &str = concat!(
    "event: response.completed\n",
    r#"data: {"type":"response.completed","sequence_number":4,"response":{"id":"resp_2","object":"response","created_at":1741290958,"status":"completed","error":null,"incomplete_details":null,"instructions":"You are a helpful assistant.","max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[{"id":"msg_2","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":37,"input_tokens_details":{"cached_tokens":12},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48},"user":null,"metadata":{}}}"#,
    "\n\n",
);

const ANTHROPIC: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[{"type":"text","text":"Hello! How can I help you today?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":15}}"#;

const ANTHROPIC_STREAM_HEAD: &str = concat!(
    "event: message_start\n",
    r#"data: {"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-20250514","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":1024,"cache_read_input_tokens":2048,"output_tokens":1}}}"#,
    "\n\n",
    "event: content_block_start\n",
    r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    "\n\n",
    "event: ping\n",
    r#"data: {"type": "ping"}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}"#,
    "\n\n",
    "event: content_block_stop\n",
    r#"data: {"type":"content_block_stop","index":0}"#,
    "\n\n",
);

const ANTHROPIC_STREAM_TAIL: &str = concat!(
    "event: message_delta\n",
    r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
    "\n\n",
    "event: message_stop\n",
    r#"data: {"type":"message_stop"}"#,
    "\n\n",
);

fn stream(head: &str, tail: &str) -> String {
    format!("{head}{tail}")
}

const fn tokens(input: u64, cached_input: u64, output: u64) -> Tokens {
    Tokens {
        input,
        cached_input,
        output,
    }
}

/// Each fixture: its API, whether it is an event stream, its body, the tokens it reports.
fn fixtures() -> Vec<(&'static str, Api, bool, String, Tokens)> {
    vec![
        (
            "chat",
            Api::OpenAiChat,
            false,
            CHAT.into(),
            tokens(19, 0, 10),
        ),
        (
            "chat stream",
            Api::OpenAiChat,
            true,
            stream(CHAT_STREAM_HEAD, CHAT_STREAM_TAIL),
            tokens(86, 1920, 300),
        ),
        (
            "responses",
            Api::OpenAiResponses,
            false,
            RESPONSES.into(),
            tokens(36, 0, 87),
        ),
        (
            "responses stream",
            Api::OpenAiResponses,
            true,
            stream(RESPONSES_STREAM_HEAD, RESPONSES_STREAM_TAIL),
            tokens(25, 12, 11),
        ),
        (
            "anthropic",
            Api::AnthropicMessages,
            false,
            ANTHROPIC.into(),
            tokens(25, 0, 15),
        ),
        (
            "anthropic stream",
            Api::AnthropicMessages,
            true,
            stream(ANTHROPIC_STREAM_HEAD, ANTHROPIC_STREAM_TAIL),
            tokens(472 + 1024, 2048, 15),
        ),
    ]
}

fn scan(api: Api, sse: bool, chunks: &[&[u8]]) -> Option<Tokens> {
    let mut scanner = UsageScanner::new(api, sse);
    for chunk in chunks {
        scanner.feed(chunk);
    }
    scanner.tokens()
}

fn scan_one(api: Api, sse: bool, body: &[u8]) -> Option<Tokens> {
    scan(api, sse, &[body])
}

/// Whole, split in two at every offset, and one byte at a time: always `expected`.
fn assert_any_split(name: &str, api: Api, sse: bool, body: &[u8], expected: Option<Tokens>) {
    assert_eq!(scan_one(api, sse, body), expected, "{name}: whole");
    for at in 0..=body.len() {
        let (a, b) = body.split_at(at);
        assert_eq!(scan(api, sse, &[a, b]), expected, "{name}: split at {at}");
    }
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(scan(api, sse, &bytes), expected, "{name}: byte by byte");
}

// ---------------------------------------------------------------------------------------------
// Api

#[test]
fn api_names_round_trip() {
    for api in Api::ALL {
        assert_eq!(Api::parse(api.name()), Some(api));
    }
    assert_eq!(Api::parse("openai-chat"), Some(Api::OpenAiChat));
    assert_eq!(Api::parse("openai-responses"), Some(Api::OpenAiResponses));
    assert_eq!(
        Api::parse("anthropic-messages"),
        Some(Api::AnthropicMessages)
    );
    for other in [
        "",
        "openai",
        "OpenAI-Chat",
        "anthropic-messages ",
        "anthropic",
    ] {
        assert_eq!(Api::parse(other), None, "{other:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Usage: the fixtures, split every way

#[test]
fn every_fixture_reports_its_tokens_however_split() {
    for (name, api, sse, body, expected) in fixtures() {
        assert_any_split(name, api, sse, body.as_bytes(), Some(expected));
    }
}

#[test]
fn crlf_and_cr_line_ends_read_like_lf() {
    for (name, api, sse, body, expected) in fixtures() {
        if !sse {
            continue;
        }
        // No raw line break inside the JSON of an event: every `\n` is framing.
        let crlf = body.replace('\n', "\r\n");
        assert_any_split(name, api, sse, crlf.as_bytes(), Some(expected));
        let cr = body.replace('\n', "\r");
        assert_eq!(
            scan_one(api, sse, cr.as_bytes()),
            Some(expected),
            "{name}: CR"
        );
    }
    // One event over several data lines: a `\r\n` split across chunks is one line end, not
    // a blank line that would end the event halfway through its JSON.
    let lines = "data: {\"usage\":\r\ndata: {\"prompt_tokens\":5}}\r\n\r\n";
    assert_any_split(
        "data lines",
        Api::OpenAiChat,
        true,
        lines.as_bytes(),
        Some(tokens(5, 0, 0)),
    );
}

#[test]
fn a_json_body_read_as_an_event_stream_reports_nothing() {
    // Only `data:` lines carry data: a JSON document is a line of an unknown field.
    assert_eq!(scan_one(Api::OpenAiChat, true, CHAT.as_bytes()), None);
}

#[test]
fn usage_fields_map_per_api() {
    let all = br#"{"usage":{"prompt_tokens":100,"completion_tokens":20,"prompt_tokens_details":{"cached_tokens":30},"input_tokens":7,"output_tokens":8,"input_tokens_details":{"cached_tokens":5},"cache_creation_input_tokens":3,"cache_read_input_tokens":4}}"#;
    assert_eq!(
        scan_one(Api::OpenAiChat, false, all),
        Some(tokens(70, 30, 20))
    );
    assert_eq!(
        scan_one(Api::OpenAiResponses, false, all),
        Some(tokens(2, 5, 8))
    );
    assert_eq!(
        scan_one(Api::AnthropicMessages, false, all),
        Some(tokens(10, 4, 8))
    );
}

#[test]
fn cached_above_total_input_saturates() {
    let body = br#"{"usage":{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":9}}}"#;
    assert_eq!(
        scan_one(Api::OpenAiChat, false, body),
        Some(tokens(0, 9, 1))
    );
    let huge =
        br#"{"usage":{"input_tokens":18446744073709551615,"cache_creation_input_tokens":10}}"#;
    assert_eq!(
        scan_one(Api::AnthropicMessages, false, huge),
        Some(tokens(u64::MAX, 0, 0))
    );
}

#[test]
fn fields_of_another_api_or_of_the_wrong_type_report_nothing() {
    let chat = br#"{"usage":{"prompt_tokens":5,"completion_tokens":1}}"#;
    assert_eq!(scan_one(Api::AnthropicMessages, false, chat), None);
    assert_eq!(scan_one(Api::OpenAiResponses, false, chat), None);
    let strings =
        br#"{"usage":{"prompt_tokens":"5","completion_tokens":-1,"prompt_tokens_details":null}}"#;
    assert_eq!(scan_one(Api::OpenAiChat, false, strings), None);
    let partly = br#"{"usage":{"prompt_tokens":"5","completion_tokens":3}}"#;
    assert_eq!(
        scan_one(Api::OpenAiChat, false, partly),
        Some(tokens(0, 0, 3))
    );
    assert_eq!(scan_one(Api::OpenAiChat, false, br#"{"usage":{}}"#), None);
}

#[test]
fn later_usage_replaces_earlier_field_by_field() {
    // message_delta with the input fields too (the API sends cumulative figures): all replaced.
    let delta_with_input = concat!(
        "event: message_delta\n",
        r#"data: {"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"input_tokens":480,"cache_creation_input_tokens":1024,"cache_read_input_tokens":2048,"output_tokens":503}}"#,
        "\n\n",
    );
    let body = stream(ANTHROPIC_STREAM_HEAD, delta_with_input);
    assert_eq!(
        scan_one(Api::AnthropicMessages, true, body.as_bytes()),
        Some(tokens(480 + 1024, 2048, 503))
    );
    // A provider repeating cumulative usage in every chat chunk: the last one counts.
    let repeated = concat!(
        r#"data: {"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":10,"completion_tokens":1}}"#,
        "\n\n",
        r#"data: {"choices":[{"delta":{"content":"b"}}],"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4}}}"#,
        "\n\n",
        r#"data: {"choices":[],"usage":{"completion_tokens":3}}"#,
        "\n\n",
    );
    assert_eq!(
        scan_one(Api::OpenAiChat, true, repeated.as_bytes()),
        Some(tokens(6, 4, 3))
    );
}

// ---------------------------------------------------------------------------------------------
// Usage: what must not count

#[test]
fn usage_written_inside_a_string_is_text() {
    let content =
        r#"Try this: \"usage\":{\"prompt_tokens\":999,\"completion_tokens\":999} \\\"usage\\\":{}"#;
    let chat = format!(
        r#"{{"id":"chatcmpl-3","object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}}}"#
    );
    serde_json::from_str::<Value>(&chat).unwrap();
    assert_any_split(
        "chat",
        Api::OpenAiChat,
        false,
        chat.as_bytes(),
        Some(tokens(19, 0, 10)),
    );
    // In a stream, a chunk whose content is the injection, then a cut: nothing is reported.
    let injected = format!(
        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{content}\"}}}}],\"usage\":null}}\n\n"
    );
    assert_any_split("stream", Api::OpenAiChat, true, injected.as_bytes(), None);
    // A key that is itself text at the top level: `{"note":"\"usage\":{...}"}`.
    let key_in_value = br#"{"note":"\"usage\":{\"prompt_tokens\":999}"}"#;
    assert_eq!(scan_one(Api::OpenAiChat, false, key_in_value), None);
    // An odd number of escaped quotes, an escaped backslash before a closing quote: the string
    // ends where JSON says, and the usage after it is read.
    for before in [
        r#""a 13\" screen""#,
        r#""C:\\""#,
        r#""\\\"""#,
        r#""\u0022""#,
    ] {
        let body = format!(r#"{{"note":{before},"usage":{{"prompt_tokens":5}}}}"#);
        serde_json::from_str::<Value>(&body).unwrap();
        assert_any_split(
            &body,
            Api::OpenAiChat,
            false,
            body.as_bytes(),
            Some(tokens(5, 0, 0)),
        );
    }
}

#[test]
fn usage_nested_deeper_than_the_response_is_ignored() {
    // The request's tools echoed in response.created, with a `usage` property in a schema, and
    // a `usage` default in it; the stream is then cut before response.completed.
    let tools = r#"[{"type":"function","name":"report","description":"Report usage","parameters":{"type":"object","properties":{"usage":{"type":"object","properties":{"input_tokens":{"type":"integer"}},"default":{"input_tokens":999}}},"required":["usage"]},"strict":true}]"#;
    let created = response_in_progress!("in_progress")
        .replace(r#""tools":[]"#, &format!(r#""tools":{tools}"#));
    assert!(created.contains("\"usage\":{\"type\""));
    let head = format!(
        "event: response.created\ndata: {{\"type\":\"response.created\",\"sequence_number\":0,\"response\":{created}}}\n\n"
    );
    assert_any_split("cut", Api::OpenAiResponses, true, head.as_bytes(), None);
    let full = stream(&head, RESPONSES_STREAM_TAIL);
    assert_any_split(
        "full",
        Api::OpenAiResponses,
        true,
        full.as_bytes(),
        Some(tokens(25, 12, 11)),
    );

    // A tool call's arguments in Anthropic's content, and in a chat message.
    let tool_use = r#"{"id":"msg_3","type":"message","content":[{"type":"tool_use","id":"toolu_1","name":"report","input":{"usage":{"input_tokens":999,"output_tokens":999}}}],"stop_reason":"tool_use","usage":{"input_tokens":25,"output_tokens":15}}"#;
    assert_eq!(
        scan_one(Api::AnthropicMessages, false, tool_use.as_bytes()),
        Some(tokens(25, 0, 15))
    );
    let deep = [
        r#"{"choices":[{"usage":{"prompt_tokens":5}}]}"#,
        r#"{"choices":{"message":{"usage":{"prompt_tokens":5}}}}"#,
        r#"{"data":{"usage":{"prompt_tokens":5}}}"#,
        r#"{"response":{"output":{"usage":{"prompt_tokens":5}}}}"#,
        r#"{"response":[{"usage":{"prompt_tokens":5}}]}"#,
        r#"{"response":{"usage":[{"prompt_tokens":5}]}}"#,
        r#"{"message":{"usage":[[{"prompt_tokens":5}]]}}"#,
        r#"{"usage":[{"prompt_tokens":5}]}"#,
        r#"[{"usage":{"prompt_tokens":5}}]"#,
        r#"[{"response":{"usage":{"prompt_tokens":5}}}]"#,
        // An escaped key is not read as `usage` (providers never escape letters).
        r#"{"usa\u0067e":{"prompt_tokens":5}}"#,
        r#"{"usage_":{"prompt_tokens":5}}"#,
        r#"{"usag":{"prompt_tokens":5}}"#,
    ];
    for body in deep {
        assert_eq!(
            scan_one(Api::OpenAiChat, false, body.as_bytes()),
            None,
            "{body}"
        );
    }
    let found = [
        (r#"{"usage":{"prompt_tokens":5}}"#, 5),
        (r#"{"response":{"usage":{"prompt_tokens":6}}}"#, 6),
        (r#"{"message":{"usage":{"prompt_tokens":7}}}"#, 7),
        (
            r#" { "message" : { "a" : [1, {"usage":{}}], "usage" : { "prompt_tokens" : 8 } } } "#,
            8,
        ),
    ];
    for (body, prompt) in found {
        assert_eq!(
            scan_one(Api::OpenAiChat, false, body.as_bytes()),
            Some(tokens(prompt, 0, 0)),
            "{body}"
        );
    }
}

#[test]
fn usage_null_reports_nothing() {
    assert_eq!(scan_one(Api::OpenAiChat, false, br#"{"usage":null}"#), None);
    let head = stream(RESPONSES_STREAM_HEAD, "");
    assert_any_split(
        "responses head",
        Api::OpenAiResponses,
        true,
        head.as_bytes(),
        None,
    );
}

#[test]
fn a_usage_object_over_the_capture_bound_is_skipped() {
    let padding = "x".repeat(json::CAPTURE);
    let big =
        format!(r#"{{"usage":{{"prompt_tokens":5,"completion_tokens":1,"note":"{padding}"}}}}"#);
    assert_eq!(scan_one(Api::OpenAiChat, false, big.as_bytes()), None);
    // Just under the bound it is read.
    let fits = format!(
        r#"{{"usage":{{"prompt_tokens":5,"completion_tokens":1,"note":"{}"}}}}"#,
        "x".repeat(json::CAPTURE - 60)
    );
    assert_eq!(
        scan_one(Api::OpenAiChat, false, fits.as_bytes()),
        Some(tokens(5, 0, 1))
    );
    // A skipped one leaves earlier figures, and a later one still counts.
    let events = format!("data: {{\"usage\":{{\"completion_tokens\":1}}}}\n\ndata: {big}\n\n");
    assert_eq!(
        scan_one(Api::OpenAiChat, true, events.as_bytes()),
        Some(tokens(0, 0, 1))
    );
    let events = format!("{events}data: {{\"usage\":{{\"completion_tokens\":2}}}}\n\n");
    assert_eq!(
        scan_one(Api::OpenAiChat, true, events.as_bytes()),
        Some(tokens(0, 0, 2))
    );
}

#[test]
fn a_cut_stream_reports_what_came() {
    for chunks in [1, 7] {
        let head = CHAT_STREAM_HEAD.as_bytes();
        let parts: Vec<&[u8]> = head.chunks(chunks).collect();
        assert_eq!(scan(Api::OpenAiChat, true, &parts), None);
    }
    assert_any_split(
        "anthropic cut",
        Api::AnthropicMessages,
        true,
        ANTHROPIC_STREAM_HEAD.as_bytes(),
        Some(tokens(472 + 1024, 2048, 1)),
    );
    // Cut inside the final usage object: nothing from it.
    let tail = CHAT_STREAM_TAIL;
    let cut = stream(
        CHAT_STREAM_HEAD,
        &tail[..tail.find("\"total_tokens").unwrap()],
    );
    assert_eq!(scan_one(Api::OpenAiChat, true, cut.as_bytes()), None);
}

// ---------------------------------------------------------------------------------------------
// Usage: the event-stream rules

#[test]
fn event_stream_fields_per_whatwg() {
    let chat = |body: &str| scan_one(Api::OpenAiChat, true, body.as_bytes());
    let usage = r#"{"usage":{"prompt_tokens":5,"completion_tokens":1}}"#;
    let five = Some(tokens(5, 0, 1));
    // `data:` with no space, one space (removed), two spaces (one kept: JSON whitespace).
    assert_eq!(chat(&format!("data:{usage}\n\n")), five);
    assert_eq!(chat(&format!("data: {usage}\n\n")), five);
    assert_eq!(chat(&format!("data:  {usage}\n\n")), five);
    // Comments, other fields, ids and retries around it; a final event with no blank line.
    assert_eq!(
        chat(&format!(
            ": keep-alive\nid: 7\nretry: 1000\nevent: chunk\ndata: {usage}"
        )),
        five
    );
    // The JSON of one event over several data lines, joined by `\n`.
    assert_eq!(
        chat("data: {\"usage\":\ndata: {\"prompt_tokens\":5,\ndata:\ndata: \"completion_tokens\":1}}\n\n"),
        five
    );
    // A `data` line without a colon is an empty data line: a `\n` in the joined data.
    assert_eq!(
        chat("data: {\"usage\":{\"prompt_tokens\"\ndata\ndata: :5,\"completion_tokens\":1}}\n\n"),
        five
    );
    // Not `data`: fields named close to it, and `data` after a space.
    for name in [
        "dat", "datas", "Data", " data", "database", "event", ":data", "dataa",
    ] {
        assert_eq!(chat(&format!("{name}: {usage}\n\n")), None, "{name}");
    }
    // A byte order mark at the start is skipped; a partial one is part of the first line.
    assert_eq!(chat(&format!("\u{feff}data: {usage}\n\n")), five);
    let mut partial = vec![0xEF, 0xBB];
    partial.extend_from_slice(format!("\ndata: {usage}\n\n").as_bytes());
    assert_eq!(scan_one(Api::OpenAiChat, true, &partial), five);
    let mut bom_data = vec![0xEF];
    bom_data.extend_from_slice(format!("data: {usage}\n\n").as_bytes());
    assert_eq!(scan_one(Api::OpenAiChat, true, &bom_data), None);
    // `[DONE]`, and an event that is not JSON, change nothing.
    assert_eq!(
        chat(&format!(
            "data: {usage}\n\ndata: [DONE]\n\ndata: }}]]{{[\"\n\ndata: }}\n\n"
        )),
        five
    );
}

#[test]
fn each_event_starts_a_new_document() {
    // An event cut inside a string, or with open containers, does not swallow the next one.
    let usage = r#"{"usage":{"prompt_tokens":5,"completion_tokens":1}}"#;
    for broken in [
        r#"{"a":"unterminated"#,
        "[[[[{{{",
        r#"{"usage":{"prompt_tokens":"#,
        "\"\\",
    ] {
        let body = format!("data: {broken}\n\ndata: {usage}\n\n");
        assert_any_split(
            broken,
            Api::OpenAiChat,
            true,
            body.as_bytes(),
            Some(tokens(5, 0, 1)),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Usage: hostile input, bounded memory

#[test]
fn the_scanner_has_a_fixed_size_under_4_kib() {
    let size = std::mem::size_of::<UsageScanner>();
    assert!(size < 4096, "{size} bytes");
    assert!(
        size > json::CAPTURE,
        "the capture buffer is inline: {size} bytes"
    );
}

/// A deterministic stream of bytes (xorshift), for garbage.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

const STRUCTURAL: &[u8] = b"{}[]\":,\\ usage\n\r";

#[test]
fn garbage_never_panics() {
    let mut inputs: Vec<Vec<u8>> = vec![
        noise(200_000, 1),
        noise(50_000, 2),
        (0..=255u8).cycle().take(100_000).collect(),
        vec![b'['; 100_000],
        vec![b'{'; 100_000],
        vec![b']'; 100_000],
        vec![b'"'; 100_001],
        vec![b'\\'; 100_001],
        "{\"usage\":".repeat(20_000).into_bytes(),
        "{\"response\":{\"usage\":".repeat(20_000).into_bytes(),
        "data: {\"usage\":{\r\n".repeat(20_000).into_bytes(),
        b"\xff\xfe\x00data:\x00{\"usage\":{\"prompt_tokens\":\xff}}\r\r\n\n".to_vec(),
    ];
    // Structural bytes only, mixed.
    inputs.push(
        noise(100_000, 3)
            .into_iter()
            .map(|b| STRUCTURAL[usize::from(b) % STRUCTURAL.len()])
            .collect(),
    );
    for input in &inputs {
        for api in Api::ALL {
            for sse in [false, true] {
                let mut scanner = UsageScanner::new(api, sse);
                for chunk in input.chunks(997) {
                    scanner.feed(chunk);
                }
                let _ = scanner.tokens();
            }
        }
    }
}

#[test]
fn depth_beyond_the_tracked_levels_is_counted() {
    // 100 000 levels open and closed, then the response's usage at depth 1: found, so the
    // counter came back to the top; the same inside a usage-shaped path is never captured.
    let mut body = "[".repeat(100_000);
    body.push_str(&"]".repeat(100_000));
    body.push_str(r#"{"usage":{"prompt_tokens":5}}"#);
    assert_eq!(
        scan_one(Api::OpenAiChat, false, body.as_bytes()),
        Some(tokens(5, 0, 0))
    );
    let mut deep = r#"{"a":"#.repeat(100);
    deep.push_str(r#"{"usage":{"prompt_tokens":5}}"#);
    deep.push_str(&"}".repeat(100));
    assert_eq!(scan_one(Api::OpenAiChat, false, deep.as_bytes()), None);
    // Deep nesting inside an event, then a new event: read normally.
    let events = format!(
        "data: {}\n\ndata: {{\"usage\":{{\"prompt_tokens\":5}}}}\n\n",
        "{\"a\":[".repeat(100_000)
    );
    assert_eq!(
        scan_one(Api::OpenAiChat, true, events.as_bytes()),
        Some(tokens(5, 0, 0))
    );
}

// ---------------------------------------------------------------------------------------------
// Request bodies

fn parse(api: Api, body: &str) -> Result<Parsed, BodyError> {
    Body::parse(api, body.as_bytes(), 4).map(|(_, parsed)| parsed)
}

fn refused(api: Api, body: &str) -> BodyError {
    match Body::parse(api, body.as_bytes(), 4) {
        Ok((body, parsed)) => panic!("accepted: {body:?} {parsed:?}"),
        Err(error) => error,
    }
}

fn rewrite(api: Api, body: &str, cap: u64) -> (Value, bool) {
    let (body, _) = Body::parse(api, body.as_bytes(), 4).unwrap();
    let (bytes, added) = body.rewrite(cap);
    (serde_json::from_slice(&bytes).unwrap(), added)
}

fn parsed(model: &str, stream: bool, n: u64, cap: Option<u64>) -> Parsed {
    Parsed {
        model: model.into(),
        stream,
        n,
        cap,
    }
}

#[test]
fn each_api_reads_its_own_cap() {
    let chat = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#;
    assert_eq!(
        parse(Api::OpenAiChat, chat),
        Ok(parsed("gpt-4o", false, 1, None))
    );
    let cases = [
        (Api::OpenAiChat, r#""max_completion_tokens":300"#, Some(300)),
        (Api::OpenAiChat, r#""max_tokens":200"#, Some(200)),
        (
            Api::OpenAiChat,
            r#""max_tokens":200,"max_completion_tokens":300"#,
            Some(200),
        ),
        (
            Api::OpenAiChat,
            r#""max_tokens":400,"max_completion_tokens":300"#,
            Some(300),
        ),
        (Api::OpenAiChat, r#""max_output_tokens":300"#, None),
        (
            Api::OpenAiResponses,
            r#""max_output_tokens":300"#,
            Some(300),
        ),
        (Api::OpenAiResponses, r#""max_tokens":300"#, None),
        (Api::OpenAiResponses, r#""max_completion_tokens":300"#, None),
        (Api::AnthropicMessages, r#""max_tokens":1024"#, Some(1024)),
        (Api::AnthropicMessages, r#""max_output_tokens":300"#, None),
        (
            Api::AnthropicMessages,
            r#""max_tokens":100000000"#,
            Some(MAX_CAP),
        ),
        (Api::OpenAiChat, r#""max_tokens":null"#, None),
        (Api::OpenAiChat, r#""max_tokens":1"#, Some(1)),
    ];
    for (api, members, cap) in cases {
        let body = format!(r#"{{"model":"m",{members},"messages":[]}}"#);
        assert_eq!(
            parse(api, &body),
            Ok(parsed("m", false, 1, cap)),
            "{api:?} {members}"
        );
    }
}

#[test]
fn stream_and_n() {
    let ok = [
        (Api::OpenAiChat, r#""stream":true"#, true, 1),
        (Api::OpenAiChat, r#""stream":false"#, false, 1),
        (Api::OpenAiChat, r#""stream":null"#, false, 1),
        (Api::OpenAiChat, r#""stream":true,"n":4"#, true, 4),
        (Api::OpenAiChat, r#""n":1"#, false, 1),
        (Api::OpenAiChat, r#""n":null"#, false, 1),
        (Api::OpenAiResponses, r#""stream":true,"n":3"#, true, 1),
        (
            Api::AnthropicMessages,
            r#""stream":true,"n":"lots""#,
            true,
            1,
        ),
    ];
    for (api, members, stream, n) in ok {
        let body = format!(r#"{{"model":"m",{members}}}"#);
        assert_eq!(
            parse(api, &body),
            Ok(parsed("m", stream, n, None)),
            "{members}"
        );
    }
    for n in ["0", "5", "-1", "1.5", "\"2\"", "true", "[]", "1e0"] {
        let error = refused(Api::OpenAiChat, &format!(r#"{{"model":"m","n":{n}}}"#));
        assert_eq!(error.field, "n", "{n}");
        assert_eq!(error.why, "must be an integer from 1 to 4");
    }
    // `max_n` is the caller's.
    let body = br#"{"model":"m","n":9}"#;
    assert_eq!(Body::parse(Api::OpenAiChat, body, 9).unwrap().1.n, 9);
    assert!(Body::parse(Api::OpenAiChat, body, 8).is_err());
    for stream in ["1", "\"true\"", "{}", "0"] {
        for api in Api::ALL {
            let error = refused(api, &format!(r#"{{"model":"m","stream":{stream}}}"#));
            assert_eq!(error.field, "stream", "{stream}");
        }
    }
}

#[test]
fn caps_must_be_integers_in_range() {
    let fields = [
        (Api::OpenAiChat, "max_completion_tokens"),
        (Api::OpenAiChat, "max_tokens"),
        (Api::OpenAiResponses, "max_output_tokens"),
        (Api::AnthropicMessages, "max_tokens"),
    ];
    let bad = [
        "-1",
        "0",
        "1.5",
        "1.0",
        "1e3",
        "\"100\"",
        "1000000000000",
        "100000001",
        "true",
        "{}",
        "[100]",
        "18446744073709551616",
    ];
    for (api, field) in fields {
        for value in bad {
            let error = refused(api, &format!(r#"{{"model":"m","{field}":{value}}}"#));
            assert_eq!(
                error,
                BodyError {
                    field,
                    why: "must be an integer from 1 to 100000000".into()
                },
                "{api:?} {field}: {value}"
            );
        }
    }
    // One bad cap is refused even beside a good one.
    let error = refused(
        Api::OpenAiChat,
        r#"{"model":"m","max_tokens":10,"max_completion_tokens":0}"#,
    );
    assert_eq!(error.field, "max_completion_tokens");
}

#[test]
fn model_is_a_short_non_empty_string() {
    let long = "m".repeat(257);
    let cases = [
        (r#"{"messages":[]}"#.to_string(), "is required"),
        (r#"{"model":null}"#.to_string(), "is required"),
        (r#"{"model":""}"#.to_string(), "must not be empty"),
        (r#"{"model":4}"#.to_string(), "must be a string"),
        (r#"{"model":["gpt-4o"]}"#.to_string(), "must be a string"),
        (
            format!(r#"{{"model":"{long}"}}"#),
            "must be at most 256 bytes",
        ),
    ];
    for api in Api::ALL {
        for (body, why) in &cases {
            let error = refused(api, body);
            assert_eq!((error.field, error.why.as_str()), ("model", *why), "{body}");
        }
        let max = "é".repeat(128);
        assert_eq!(
            parse(api, &format!(r#"{{"model":"{max}"}}"#))
                .unwrap()
                .model,
            max
        );
    }
}

#[test]
fn not_a_json_object() {
    for body in [
        "[]",
        "\"gpt-4o\"",
        "1",
        "null",
        "true",
        " [ {\"model\":\"m\"} ] ",
    ] {
        let error = refused(Api::OpenAiChat, body);
        assert_eq!(
            error,
            BodyError {
                field: "",
                why: "the body is not a JSON object".into()
            },
            "{body}"
        );
    }
    let invalid: [&[u8]; 7] = [
        b"",
        b"{",
        b"{\"model\":\"sk-secret-value",
        b"{\"model\":\"m\"} trailing-secret",
        b"{\"model\":\"\xff\xfe\"}",
        b"\xef\xbb\xbf{\"model\":\"m\"}",
        b"{'model':'m'}",
    ];
    for body in invalid {
        let error = Body::parse(Api::AnthropicMessages, body, 1).unwrap_err();
        assert_eq!(error.field, "", "{body:?}");
        assert!(
            error.why.starts_with("the body is not valid JSON ("),
            "{}",
            error.why
        );
        assert!(!error.why.contains("secret"), "{}", error.why);
    }
    let deep = "[".repeat(10_000);
    assert_eq!(refused(Api::OpenAiChat, &deep).field, "");
}

#[test]
fn stream_options_must_be_an_object() {
    for value in ["true", "\"include_usage\"", "[]", "1"] {
        let body = format!(r#"{{"model":"m","stream":true,"stream_options":{value}}}"#);
        assert_eq!(refused(Api::OpenAiChat, &body).field, "stream_options");
        // Not a member the other APIs know: theirs to judge.
        assert!(parse(Api::OpenAiResponses, &body).is_ok());
    }
    for value in ["null", "{}", r#"{"include_usage":false}"#] {
        let body = format!(r#"{{"model":"m","stream":true,"stream_options":{value}}}"#);
        assert!(parse(Api::OpenAiChat, &body).is_ok(), "{value}");
    }
}

#[test]
fn rewrite_sets_the_cap_where_the_client_put_it() {
    let messages = json!([{"role": "user", "content": "Hi"}]);
    let cases = [
        (
            Api::OpenAiChat,
            json!({}),
            json!({"max_completion_tokens": 50}),
        ),
        (
            Api::OpenAiChat,
            json!({"max_tokens": 900}),
            json!({"max_tokens": 50}),
        ),
        (
            Api::OpenAiChat,
            json!({"max_completion_tokens": 900}),
            json!({"max_completion_tokens": 50}),
        ),
        (
            Api::OpenAiChat,
            json!({"max_tokens": 900, "max_completion_tokens": 800}),
            json!({"max_tokens": 50, "max_completion_tokens": 50}),
        ),
        (
            Api::OpenAiChat,
            json!({"max_tokens": null}),
            json!({"max_tokens": null, "max_completion_tokens": 50}),
        ),
        (
            Api::OpenAiResponses,
            json!({}),
            json!({"max_output_tokens": 50}),
        ),
        (
            Api::OpenAiResponses,
            json!({"max_output_tokens": 900, "max_tokens": 7}),
            json!({"max_output_tokens": 50, "max_tokens": 7}),
        ),
        (Api::AnthropicMessages, json!({}), json!({"max_tokens": 50})),
        (
            Api::AnthropicMessages,
            json!({"max_tokens": 900}),
            json!({"max_tokens": 50}),
        ),
        (
            Api::AnthropicMessages,
            json!({"max_tokens": null}),
            json!({"max_tokens": 50}),
        ),
    ];
    for (api, caps, expected_caps) in cases {
        let mut body = json!({"model": "m", "messages": messages, "temperature": 0.7, "n": 2,
                              "metadata": {"user": "u1", "max_tokens": 3}});
        let mut expected = body.clone();
        body.as_object_mut()
            .unwrap()
            .extend(caps.as_object().unwrap().clone());
        expected
            .as_object_mut()
            .unwrap()
            .extend(expected_caps.as_object().unwrap().clone());
        let (out, added) = rewrite(api, &body.to_string(), 50);
        assert_eq!(out, expected, "{api:?} {caps}");
        assert!(!added);
    }
}

#[test]
fn rewrite_asks_for_usage_in_a_chat_stream() {
    let cases = [
        (
            json!({"stream": true}),
            Some(json!({"include_usage": true})),
            true,
        ),
        (
            json!({"stream": true, "stream_options": null}),
            Some(json!({"include_usage": true})),
            true,
        ),
        (
            json!({"stream": true, "stream_options": {}}),
            Some(json!({"include_usage": true})),
            true,
        ),
        (
            json!({"stream": true, "stream_options": {"include_usage": false, "include_obfuscation": false}}),
            Some(json!({"include_usage": true, "include_obfuscation": false})),
            true,
        ),
        (
            json!({"stream": true, "stream_options": {"include_usage": true}}),
            Some(json!({"include_usage": true})),
            false,
        ),
        (json!({"stream": false}), None, false),
        (json!({}), None, false),
        (
            json!({"stream": false, "stream_options": {"include_usage": false}}),
            Some(json!({"include_usage": false})),
            false,
        ),
    ];
    for (members, options, added) in cases {
        let mut body = json!({"model": "m", "messages": []});
        body.as_object_mut()
            .unwrap()
            .extend(members.as_object().unwrap().clone());
        let (out, was_added) = rewrite(Api::OpenAiChat, &body.to_string(), 10);
        assert_eq!(out.get("stream_options"), options.as_ref(), "{members}");
        assert_eq!(was_added, added, "{members}");
        assert_eq!(out["max_completion_tokens"], 10);
    }
    for api in [Api::OpenAiResponses, Api::AnthropicMessages] {
        let (out, added) = rewrite(api, r#"{"model":"m","stream":true}"#, 10);
        assert_eq!(out.get("stream_options"), None);
        assert!(!added);
    }
}

#[test]
fn the_provider_sees_what_admission_priced() {
    // Duplicate members: serde_json keeps the last; the rewritten body has only that one.
    let body =
        r#"{"model":"cheap","model":"gpt-4o","max_tokens":1,"max_tokens":5000,"stream":false}"#;
    assert_eq!(
        parse(Api::AnthropicMessages, body),
        Ok(parsed("gpt-4o", false, 1, Some(5000)))
    );
    let (out, _) = rewrite(Api::AnthropicMessages, body, 77);
    assert_eq!(
        out,
        json!({"model": "gpt-4o", "max_tokens": 77, "stream": false})
    );
    let (body, _) = Body::parse(Api::AnthropicMessages, body.as_bytes(), 1).unwrap();
    let (bytes, _) = body.rewrite(77);
    let text = String::from_utf8(bytes).unwrap();
    assert_eq!(text.matches("max_tokens").count(), 1, "{text}");
    assert!(!text.contains("cheap"));
}

#[test]
fn debug_and_errors_show_no_content() {
    let (body, _) = Body::parse(
        Api::OpenAiChat,
        br#"{"model":"m","messages":[{"role":"user","content":"my secret"}]}"#,
        1,
    )
    .unwrap();
    let debug = format!("{body:?}");
    assert!(!debug.contains("secret"), "{debug}");
    assert!(debug.contains("OpenAiChat"), "{debug}");
    let error = refused(
        Api::OpenAiChat,
        r#"{"model":"secret","max_tokens":"secret"}"#,
    );
    assert_eq!(
        error.to_string(),
        "`max_tokens` must be an integer from 1 to 100000000"
    );
    let whole = refused(Api::OpenAiChat, "[]");
    assert_eq!(whole.to_string(), "the body is not a JSON object");
    let scanner = UsageScanner::new(Api::AnthropicMessages, true);
    assert!(format!("{scanner:?}").contains("AnthropicMessages"));
}

#[test]
fn the_data_lines_of_one_event_are_joined_by_a_newline_as_the_event_stream_rules_say() {
    // A key split over two data lines is `usa\nge`, not `usage`; a number split so is two.
    let split_key = b"data: {\"choices\":[],\"usa\ndata: ge\":{\"prompt_tokens\":5,\"completion_tokens\":6}}\n\n";
    let mut s = UsageScanner::new(Api::OpenAiChat, true);
    s.feed(split_key);
    assert_eq!(s.tokens(), None);
    // Whitespace between tokens is whitespace: an object over several lines is read whole.
    let lines = b"data: {\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":5,\ndata: \"completion_tokens\":6}}\n\n";
    let mut s = UsageScanner::new(Api::OpenAiChat, true);
    s.feed(lines);
    assert_eq!(
        s.tokens(),
        Some(Tokens {
            input: 5,
            cached_input: 0,
            output: 6
        })
    );
}
