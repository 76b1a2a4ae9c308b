//! LLM API routes: what admission reads from a request body (the model, streaming, how many
//! completions, the client's output cap) and how the body goes upstream (the cap tollgate
//! grants, usage asked for in a stream); then the token usage a response reports, read as the
//! response streams past without buffering it.
//!
//! Three API shapes: OpenAI Chat Completions, OpenAI Responses and Anthropic Messages. A leaf:
//! serde, serde_json and std only.
//!
//! - `request.rs`: [`Body`], [`Parsed`], [`BodyError`] (admission).
//! - `usage.rs`: [`Tokens`], [`UsageScanner`] (settlement), over `sse.rs` (the event-stream
//!   line rules) and `json.rs` (a streaming JSON tokenizer that captures `usage` objects).

mod json;
mod request;
mod sse;
mod usage;

pub use request::{Body, BodyError, Parsed, MAX_CAP};
pub use usage::{Tokens, UsageScanner};

/// The API shape of a route: where a request names its cap and a response its usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/chat/completions`.
    OpenAiChat,
    /// `POST /v1/responses`.
    OpenAiResponses,
    /// `POST /v1/messages`.
    AnthropicMessages,
}

impl Api {
    /// Every shape.
    pub const ALL: [Api; 3] = [
        Api::OpenAiChat,
        Api::OpenAiResponses,
        Api::AnthropicMessages,
    ];

    /// The shape a configuration names: `openai-chat`, `openai-responses` or
    /// `anthropic-messages`.
    pub fn parse(name: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|api| api.name() == name)
    }

    /// The configuration name of the shape (what [`Api::parse`] reads).
    pub fn name(self) -> &'static str {
        match self {
            Api::OpenAiChat => "openai-chat",
            Api::OpenAiResponses => "openai-responses",
            Api::AnthropicMessages => "anthropic-messages",
        }
    }
}

#[cfg(test)]
mod tests;
