//! The request body of an LLM call: what admission needs from it, and the body the provider
//! gets instead.
//!
//! The forwarded body is re-serialised from what was parsed, so what the provider reads is what
//! admission priced: a duplicated member (`"max_tokens":1,"max_tokens":9999`) reaches it once,
//! with the value tollgate saw (serde_json keeps the last) and then set.
//!
//! `null` counts as absent for every optional member (`stream`, `n`, the caps,
//! `stream_options`): OpenAI's API declares them nullable and clients send `null` for unset.

use std::fmt;

use serde_json::{Map, Value};

use super::Api;

/// The largest output cap a client may ask for: well above any model's output limit, and far
/// below where token arithmetic in u64 could overflow.
pub const MAX_CAP: u64 = 100_000_000;

/// The longest model name accepted, in bytes.
const MAX_MODEL: usize = 256;

/// What admission needs from a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// `model`: a non-empty string of at most 256 bytes.
    pub model: String,
    /// `stream` (absent: false).
    pub stream: bool,
    /// How many completions are asked for: OpenAI chat's `n` (absent: 1), always 1 for the
    /// other APIs (which have no such member; one there is left to the provider).
    pub n: u64,
    /// The client's output cap (for OpenAI chat the smaller of `max_completion_tokens` and
    /// `max_tokens`); `None` if it gave none.
    pub cap: Option<u64>,
}

/// A request body tollgate refuses (the caller answers 400 problem+json). `field` is the JSON
/// member at fault (`""` for the body as a whole); `why` is a short reason for the client that
/// never echoes the body's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    pub field: &'static str,
    pub why: String,
}

impl BodyError {
    fn new(field: &'static str, why: impl Into<String>) -> BodyError {
        BodyError {
            field,
            why: why.into(),
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.why)
        } else {
            write!(f, "`{}` {}", self.field, self.why)
        }
    }
}

impl std::error::Error for BodyError {}

/// A parsed request body, kept to be rewritten for the provider.
pub struct Body {
    value: Map<String, Value>,
    api: Api,
    stream: bool,
}

/// Only the shape: a body holds the client's prompt, which has no place in a log line.
impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body")
            .field("api", &self.api)
            .field("stream", &self.stream)
            .field("members", &self.value.len())
            .finish()
    }
}

/// The members that cap the output, the one tollgate adds (when the client gave none) first.
fn cap_fields(api: Api) -> &'static [&'static str] {
    match api {
        Api::OpenAiChat => &["max_completion_tokens", "max_tokens"],
        Api::OpenAiResponses => &["max_output_tokens"],
        Api::AnthropicMessages => &["max_tokens"],
    }
}

/// The member, unless absent or `null`.
fn present<'a>(map: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    map.get(field).filter(|value| !value.is_null())
}

/// An optional integer member in `1..=max`.
fn bounded(
    map: &Map<String, Value>,
    field: &'static str,
    max: u64,
) -> Result<Option<u64>, BodyError> {
    let Some(value) = present(map, field) else {
        return Ok(None);
    };
    match value.as_u64() {
        Some(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(BodyError::new(
            field,
            format!("must be an integer from 1 to {max}"),
        )),
    }
}

fn model(map: &Map<String, Value>) -> Result<String, BodyError> {
    match present(map, "model") {
        None => Err(BodyError::new("model", "is required")),
        Some(Value::String(name)) if name.is_empty() => {
            Err(BodyError::new("model", "must not be empty"))
        }
        Some(Value::String(name)) if name.len() > MAX_MODEL => Err(BodyError::new(
            "model",
            format!("must be at most {MAX_MODEL} bytes"),
        )),
        Some(Value::String(name)) => Ok(name.clone()),
        Some(_) => Err(BodyError::new("model", "must be a string")),
    }
}

fn stream(map: &Map<String, Value>) -> Result<bool, BodyError> {
    match present(map, "stream") {
        None => Ok(false),
        Some(Value::Bool(on)) => Ok(*on),
        Some(_) => Err(BodyError::new("stream", "must be true or false")),
    }
}

/// Why serde_json refused the bytes, by position only: its messages name no content, but a
/// position is all a client needs and certainly echoes nothing.
fn not_json(error: &serde_json::Error) -> BodyError {
    let why = if error.is_eof() {
        "the body is not valid JSON (it ends early)".to_string()
    } else {
        format!(
            "the body is not valid JSON (line {}, column {})",
            error.line(),
            error.column()
        )
    };
    BodyError::new("", why)
}

impl Body {
    /// Reads a request body of `api`. `max_n` bounds OpenAI chat's `n` (an `n` above it, or
    /// any explicit `n` if `max_n` is 0, is refused). Invalid UTF-8 is invalid JSON; numbers must
    /// be written as integers (`1.0` and `1e3` are refused, as a cap must be exact).
    pub fn parse(api: Api, bytes: &[u8], max_n: u64) -> Result<(Body, Parsed), BodyError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| not_json(&e))?;
        let Value::Object(map) = value else {
            return Err(BodyError::new("", "the body is not a JSON object"));
        };
        let model = model(&map)?;
        let stream = stream(&map)?;
        let n = match api {
            Api::OpenAiChat => bounded(&map, "n", max_n)?.unwrap_or(1),
            Api::OpenAiResponses | Api::AnthropicMessages => 1,
        };
        let mut cap: Option<u64> = None;
        for &field in cap_fields(api) {
            if let Some(asked) = bounded(&map, field, MAX_CAP)? {
                cap = Some(cap.map_or(asked, |seen| seen.min(asked)));
            }
        }
        if api == Api::OpenAiChat {
            match present(&map, "stream_options") {
                None | Some(Value::Object(_)) => {}
                Some(_) => return Err(BodyError::new("stream_options", "must be an object")),
            }
        }
        let parsed = Parsed {
            model,
            stream,
            n,
            cap,
        };
        Ok((
            Body {
                value: map,
                api,
                stream,
            },
            parsed,
        ))
    }

    /// The body as the provider must see it: the output cap set to `cap` on every cap member
    /// the client used (or, if it used none, on `max_completion_tokens`, `max_output_tokens`
    /// or `max_tokens` by API), and, for an OpenAI chat stream,
    /// `stream_options.include_usage: true` with the client's other stream options kept. The
    /// flag says whether tollgate asked for the usage chunk (the client had not), so that the
    /// caller can keep it from a client that does not expect it. `cap` is sent as given: the
    /// caller grants 1..=[`MAX_CAP`].
    pub fn rewrite(self, cap: u64) -> (Vec<u8>, bool) {
        let Body {
            mut value,
            api,
            stream,
        } = self;
        let fields = cap_fields(api);
        let mut capped = false;
        for &field in fields {
            if let Some(slot) = value.get_mut(field).filter(|v| !v.is_null()) {
                *slot = Value::from(cap);
                capped = true;
            }
        }
        if !capped {
            if let Some(&field) = fields.first() {
                value.insert(field.to_string(), Value::from(cap));
            }
        }
        let mut added = false;
        if api == Api::OpenAiChat && stream {
            let on = Value::Bool(true);
            match value.get_mut("stream_options") {
                Some(Value::Object(options)) => {
                    added = options.get("include_usage") != Some(&on);
                    options.insert("include_usage".to_string(), on);
                }
                // Absent or null (`parse` refused anything else).
                _ => {
                    let mut options = Map::new();
                    options.insert("include_usage".to_string(), on);
                    value.insert("stream_options".to_string(), Value::Object(options));
                    added = true;
                }
            }
        }
        // Writing a map with string keys into a Vec cannot fail; an empty body (refused by the
        // provider) would be the answer if it ever did.
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        (bytes, added)
    }
}
