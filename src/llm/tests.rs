//! Unit tests of [`crate::llm`]: request bodies (admission), for the three APIs.

use super::*;
use serde_json::{json, Value};

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
}
