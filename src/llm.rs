//! Placeholder until the LLM module lands (replaced by the llm-scan branch).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAiChat,
    OpenAiResponses,
    AnthropicMessages,
}

impl Api {
    pub fn parse(name: &str) -> Option<Api> {
        match name {
            "openai-chat" => Some(Api::OpenAiChat),
            "openai-responses" => Some(Api::OpenAiResponses),
            "anthropic-messages" => Some(Api::AnthropicMessages),
            _ => None,
        }
    }
}

pub const MAX_CAP: u64 = 100_000_000;

// --- placeholders, replaced by the llm-scan branch ---
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
}

#[derive(Debug)]
pub struct UsageScanner;

impl UsageScanner {
    pub fn new(_api: Api, _sse: bool) -> UsageScanner {
        UsageScanner
    }
    pub fn feed(&mut self, _chunk: &[u8]) {}
    pub fn tokens(&self) -> Option<Tokens> {
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub model: String,
    pub stream: bool,
    pub n: u64,
    pub cap: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    pub field: &'static str,
    pub why: String,
}

#[derive(Debug)]
pub struct Body;

impl Body {
    pub fn parse(_api: Api, _bytes: &[u8], _max_n: u64) -> Result<(Body, Parsed), BodyError> {
        Err(BodyError {
            field: "",
            why: String::new(),
        })
    }
    pub fn rewrite(self, _cap: u64) -> (Vec<u8>, bool) {
        (Vec::new(), false)
    }
}
