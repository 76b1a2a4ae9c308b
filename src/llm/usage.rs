//! The tokens a response reports, read as the body passes.
//!
//! A `text/event-stream` body goes through the event-stream line rules ([`super::sse`]), each
//! event's data to a JSON tokenizer reset at every event; any other body goes to the tokenizer
//! whole. The tokenizer ([`super::json`]) captures each `usage` object of the response and each
//! one is merged here, field by field, later figures replacing earlier ones: Anthropic's
//! `message_start` gives the input and a first output count, its `message_delta` the final
//! cumulative output.

use std::fmt;

use serde_json::{Map, Value};

use super::json::Json;
use super::sse::{Out, Sse};
use super::Api;

/// Tokens a response reports, the way a bill prices them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Input not read from the provider's cache, including Anthropic's cache writes.
    pub input: u64,
    /// Input read from the provider's cache.
    pub cached_input: u64,
    pub output: u64,
}

/// The usage fields of all three APIs, as last reported (a field not reported is `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Reported {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    /// `prompt_tokens_details.cached_tokens`
    prompt_cached: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    /// `input_tokens_details.cached_tokens`
    input_cached: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

/// `seen` replaces `slot` if reported.
fn replace(slot: &mut Option<u64>, seen: Option<u64>) {
    if seen.is_some() {
        *slot = seen;
    }
}

impl Reported {
    /// Merges a captured `usage` object; one that is not a JSON object changes nothing, and a
    /// field that is not an unsigned integer (`null` included) is not reported.
    fn merge(&mut self, object: &[u8]) {
        let Ok(usage) = serde_json::from_slice::<Map<String, Value>>(object) else {
            return;
        };
        let field = |name: &str| usage.get(name).and_then(Value::as_u64);
        let cached = |details: &str| {
            usage
                .get(details)
                .and_then(|d| d.get("cached_tokens"))
                .and_then(Value::as_u64)
        };
        replace(&mut self.prompt_tokens, field("prompt_tokens"));
        replace(&mut self.completion_tokens, field("completion_tokens"));
        replace(&mut self.prompt_cached, cached("prompt_tokens_details"));
        replace(&mut self.input_tokens, field("input_tokens"));
        replace(&mut self.output_tokens, field("output_tokens"));
        replace(&mut self.input_cached, cached("input_tokens_details"));
        replace(
            &mut self.cache_creation_input_tokens,
            field("cache_creation_input_tokens"),
        );
        replace(
            &mut self.cache_read_input_tokens,
            field("cache_read_input_tokens"),
        );
    }

    /// The tokens as `api` reports them; `None` if none of its fields was reported.
    fn tokens(&self, api: Api) -> Option<Tokens> {
        match api {
            Api::OpenAiChat => openai(
                self.prompt_tokens,
                self.prompt_cached,
                self.completion_tokens,
            ),
            Api::OpenAiResponses => {
                openai(self.input_tokens, self.input_cached, self.output_tokens)
            }
            Api::AnthropicMessages => {
                let fields = [
                    self.input_tokens,
                    self.cache_creation_input_tokens,
                    self.cache_read_input_tokens,
                    self.output_tokens,
                ];
                fields.iter().any(Option::is_some).then(|| Tokens {
                    // Anthropic's input_tokens leaves out cached input: cache reads are
                    // counted apart, and cache writes are input (priced as such).
                    input: self
                        .input_tokens
                        .unwrap_or(0)
                        .saturating_add(self.cache_creation_input_tokens.unwrap_or(0)),
                    cached_input: self.cache_read_input_tokens.unwrap_or(0),
                    output: self.output_tokens.unwrap_or(0),
                })
            }
        }
    }
}

/// OpenAI's figures: the cached tokens are counted inside the input total.
fn openai(total: Option<u64>, cached: Option<u64>, output: Option<u64>) -> Option<Tokens> {
    if total.is_none() && cached.is_none() && output.is_none() {
        return None;
    }
    let cached = cached.unwrap_or(0);
    Some(Tokens {
        input: total.unwrap_or(0).saturating_sub(cached),
        cached_input: cached,
        output: output.unwrap_or(0),
    })
}

/// Reads the usage of a response as its body passes, in any chunks (split anywhere: inside a
/// UTF-8 sequence, a string, an escape, a number, an SSE field name or a line end).
///
/// It never buffers the response: its memory is its own size, fixed at construction and the
/// same whatever the input (2 256 bytes on a 64-bit host), of which 2 KiB is the buffer of one
/// `usage` object (a larger one is skipped); the unit tests assert it stays under 4 KiB. It
/// holds no heap memory; parsing a captured object allocates briefly, for at most those 2 KiB.
pub struct UsageScanner {
    api: Api,
    /// `Some` for a `text/event-stream` body.
    sse: Option<Sse>,
    json: Json,
    reported: Reported,
}

impl fmt::Debug for UsageScanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageScanner")
            .field("api", &self.api)
            .field("sse", &self.sse.is_some())
            .field("tokens", &self.tokens())
            .finish()
    }
}

impl UsageScanner {
    /// `sse`: the body is a `text/event-stream`; else one JSON document.
    pub fn new(api: Api, sse: bool) -> UsageScanner {
        UsageScanner {
            api,
            sse: sse.then(Sse::new),
            json: Json::new(),
            reported: Reported::default(),
        }
    }

    /// Reads the next bytes of the response body.
    pub fn feed(&mut self, chunk: &[u8]) {
        let json = &mut self.json;
        let reported = &mut self.reported;
        let mut found = |usage: &[u8]| reported.merge(usage);
        match &mut self.sse {
            Some(sse) => sse.feed(chunk, |out| match out {
                Out::Data(bytes) => json.bytes(bytes, &mut found),
                Out::End => json.reset(),
            }),
            None => json.bytes(chunk, &mut found),
        }
    }

    /// The usage seen so far; `None` if the response carried none (for this API).
    pub fn tokens(&self) -> Option<Tokens> {
        self.reported.tokens(self.api)
    }
}
