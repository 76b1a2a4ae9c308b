//! The answers of the three APIs [`super::FakeLlm`] stands in for, shaped as the providers shape
//! them, with the usage where each puts it: OpenAI Chat Completions (`usage` in the document,
//! or in a last chunk only when `stream_options.include_usage` asks), OpenAI Responses (`usage`
//! in the response object, streamed in `response.completed`) and Anthropic Messages (`usage`
//! in the message; streamed in two halves: input in `message_start`, output in `message_delta`).

use serde_json::{json, Value};

use super::{LlmApi, Reported};

/// Delta events per choice at most: enough for a stream of many chunks, few enough to stay
/// small when a test asks for thousands of output tokens.
const MAX_DELTAS: u64 = 50;

/// The text of the deltas, in turn. Bytes that trip a careless parser: quotes, what looks like
/// a usage object or the end of an SSE stream inside a JSON string, multi-byte UTF-8.
const PIECES: [&str; 6] = [
    "Hello",
    " \"quoted\"",
    " \"usage\":{\"output_tokens\":999}",
    " café",
    " 🦀",
    "\n\ndata: [DONE]\n\n",
];

/// What the fake answers with, decided from the request and its controls.
pub(super) struct Turn {
    pub api: LlmApi,
    pub model: String,
    pub created: u64,
    /// Input tokens, cached ones included.
    pub input: u64,
    pub cached: u64,
    /// Output tokens of each choice (already capped).
    pub per_choice: u64,
    /// Chat's `n`; 1 elsewhere.
    pub choices: u64,
    /// Whether the cap cut the output short (the stop reason says so).
    pub truncated: bool,
    /// Chat streams: whether `stream_options.include_usage` asks for the usage chunk.
    pub include_usage: bool,
    /// Responses: the cap and the tools, echoed.
    pub cap: Option<u64>,
    pub tools: Value,
}

/// An answer's body.
pub(super) enum Body {
    /// One JSON document.
    Document(Vec<u8>),
    /// Server-sent events, each whole (`data: ...\n\n`).
    Events(Vec<Vec<u8>>),
}

/// A shaped answer: its body, and the usage it reports with the index of the event that
/// completes it (0 for a document), if it reports any.
pub(super) struct Shaped {
    pub body: Body,
    pub usage: Option<(Reported, usize)>,
}

impl Turn {
    fn usage(&self) -> Reported {
        Reported {
            input: self.input,
            cached_input: self.cached,
            output: self.output(),
            responses: 1,
        }
    }

    fn output(&self) -> u64 {
        self.per_choice.saturating_mul(self.choices)
    }

    /// The deltas of one choice; the whole text is their concatenation.
    fn pieces(&self) -> impl Iterator<Item = &'static str> {
        (0..self.per_choice.min(MAX_DELTAS)).map(|i| PIECES[i as usize % PIECES.len()])
    }

    fn text(&self) -> String {
        self.pieces().collect()
    }

    pub fn document(&self) -> Shaped {
        let document = match self.api {
            LlmApi::ChatCompletions => self.chat_document(),
            LlmApi::Responses => self.response("completed", true),
            LlmApi::Messages => self.message_document(),
        };
        Shaped {
            body: Body::Document(document.to_string().into_bytes()),
            usage: Some((self.usage(), 0)),
        }
    }

    pub fn stream(&self) -> Shaped {
        match self.api {
            LlmApi::ChatCompletions => self.chat_stream(),
            LlmApi::Responses => self.response_stream(),
            LlmApi::Messages => self.message_stream(),
        }
    }

    // OpenAI Chat Completions.

    fn finish_reason(&self) -> &'static str {
        if self.truncated {
            "length"
        } else {
            "stop"
        }
    }

    fn chat_usage(&self) -> Value {
        json!({
            "prompt_tokens": self.input,
            "completion_tokens": self.output(),
            "total_tokens": self.input.saturating_add(self.output()),
            "prompt_tokens_details": {"cached_tokens": self.cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        })
    }

    fn chat_document(&self) -> Value {
        let choices: Vec<Value> = (0..self.choices)
            .map(|index| {
                json!({
                    "index": index,
                    "message": {"role": "assistant", "content": self.text(), "refusal": null},
                    "logprobs": null,
                    "finish_reason": self.finish_reason(),
                })
            })
            .collect();
        json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.chat_usage(),
        })
    }

    fn chat_chunk(&self, choices: Value) -> Vec<u8> {
        let mut chunk = json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        data(&chunk)
    }

    fn chat_stream(&self) -> Shaped {
        let choices = 0..self.choices;
        let mut events: Vec<Vec<u8>> = choices
            .clone()
            .map(|index| {
                let delta = json!({"role": "assistant", "content": ""});
                self.chat_chunk(json!([{"index": index, "delta": delta, "finish_reason": null}]))
            })
            .collect();
        for piece in self.pieces() {
            for index in choices.clone() {
                let delta = json!({"content": piece});
                events.push(
                    self.chat_chunk(
                        json!([{"index": index, "delta": delta, "finish_reason": null}]),
                    ),
                );
            }
        }
        for index in choices {
            let reason = self.finish_reason();
            events.push(
                self.chat_chunk(json!([{"index": index, "delta": {}, "finish_reason": reason}])),
            );
        }
        let mut usage = None;
        if self.include_usage {
            let mut chunk = json!({
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
            });
            chunk["usage"] = self.chat_usage();
            usage = Some((self.usage(), events.len()));
            events.push(data(&chunk));
        }
        events.push(b"data: [DONE]\n\n".to_vec());
        Shaped {
            body: Body::Events(events),
            usage,
        }
    }

    // OpenAI Responses.

    /// `status` "completed" becomes "incomplete" when the cap cut the output short, as the
    /// API answers a response that reached `max_output_tokens`.
    fn response(&self, status: &str, done: bool) -> Value {
        let (status, incomplete) = match (status, self.truncated) {
            ("completed", true) => ("incomplete", json!({"reason": "max_output_tokens"})),
            _ => (status, Value::Null),
        };
        let output = if done {
            json!([self.response_item(status)])
        } else {
            json!([])
        };
        let usage = if done {
            json!({
                "input_tokens": self.input,
                "input_tokens_details": {"cached_tokens": self.cached},
                "output_tokens": self.output(),
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input.saturating_add(self.output()),
            })
        } else {
            Value::Null
        };
        json!({
            "id": "resp_fake",
            "object": "response",
            "created_at": self.created,
            "status": status,
            "incomplete_details": incomplete,
            "model": self.model,
            "output": output,
            "max_output_tokens": self.cap,
            "tools": self.tools,
            "usage": usage,
        })
    }

    fn response_item(&self, status: &str) -> Value {
        json!({
            "type": "message",
            "id": "msg_fake",
            "status": status,
            "role": "assistant",
            "content": [self.output_text(&self.text())],
        })
    }

    fn output_text(&self, text: &str) -> Value {
        json!({"type": "output_text", "text": text, "annotations": []})
    }

    fn response_stream(&self) -> Shaped {
        let mut events = Vec::new();
        let mut push = |kind: &str, mut event: Value| {
            event["type"] = json!(kind);
            event["sequence_number"] = json!(events.len());
            events.push(named(kind, &event));
        };
        let at = json!({"item_id": "msg_fake", "output_index": 0, "content_index": 0});
        let with = |mut fields: Value, more: Value| {
            if let (Some(fields), Value::Object(more)) = (fields.as_object_mut(), more) {
                fields.extend(more);
            }
            fields
        };
        let started = self.response("in_progress", false);
        push("response.created", json!({"response": started}));
        push("response.in_progress", json!({"response": started}));
        let item = json!({"type": "message", "id": "msg_fake", "status": "in_progress",
                          "role": "assistant", "content": []});
        push(
            "response.output_item.added",
            json!({"output_index": 0, "item": item}),
        );
        let part = json!({"part": self.output_text("")});
        push("response.content_part.added", with(at.clone(), part));
        for piece in self.pieces() {
            let delta = json!({"delta": piece, "logprobs": []});
            push("response.output_text.delta", with(at.clone(), delta));
        }
        let text = json!({"text": self.text()});
        push("response.output_text.done", with(at.clone(), text));
        let part = json!({"part": self.output_text(&self.text())});
        push("response.content_part.done", with(at, part));
        let done = self.response("completed", true);
        let item = json!({"output_index": 0, "item": done["output"][0]});
        push("response.output_item.done", item);
        let last = if self.truncated {
            "response.incomplete"
        } else {
            "response.completed"
        };
        push(last, json!({"response": done}));
        let usage = Some((self.usage(), events.len() - 1));
        Shaped {
            body: Body::Events(events),
            usage,
        }
    }

    // Anthropic Messages.

    fn stop_reason(&self) -> &'static str {
        if self.truncated {
            "max_tokens"
        } else {
            "end_turn"
        }
    }

    /// Anthropic's input tokens exclude the ones read from the cache.
    fn message_usage(&self, output: u64) -> Value {
        json!({
            "input_tokens": self.input.saturating_sub(self.cached),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": self.cached,
            "output_tokens": output,
        })
    }

    fn message(&self, content: Value, stop_reason: Value, output: u64) -> Value {
        json!({
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": self.message_usage(output),
        })
    }

    fn message_document(&self) -> Value {
        let content = json!([{"type": "text", "text": self.text()}]);
        self.message(content, json!(self.stop_reason()), self.output())
    }

    fn message_stream(&self) -> Shaped {
        let mut events = Vec::new();
        let mut push = |kind: &str, mut event: Value| {
            event["type"] = json!(kind);
            events.push(named(kind, &event));
        };
        let start = self.message(json!([]), Value::Null, 1);
        push("message_start", json!({"message": start}));
        let block = json!({"type": "text", "text": ""});
        push(
            "content_block_start",
            json!({"index": 0, "content_block": block}),
        );
        push("ping", json!({}));
        for piece in self.pieces() {
            let delta = json!({"type": "text_delta", "text": piece});
            push("content_block_delta", json!({"index": 0, "delta": delta}));
        }
        push("content_block_stop", json!({"index": 0}));
        let delta = json!({"stop_reason": self.stop_reason(), "stop_sequence": null});
        push(
            "message_delta",
            json!({"delta": delta, "usage": {"output_tokens": self.output()}}),
        );
        push("message_stop", json!({}));
        // message_delta, the one before message_stop, completes the usage.
        let usage = Some((self.usage(), events.len() - 2));
        Shaped {
            body: Body::Events(events),
            usage,
        }
    }
}

/// An unnamed event (Chat Completions).
fn data(event: &Value) -> Vec<u8> {
    format!("data: {event}\n\n").into_bytes()
}

/// A named event (Responses, Messages).
fn named(kind: &str, event: &Value) -> Vec<u8> {
    format!("event: {kind}\ndata: {event}\n\n").into_bytes()
}
