//! The plugin configuration: its JSON model (stage 1, serde) and its validation into the
//! compiled [`Config`] the hot path reads (stage 2: plans resolved, windows parsed, keys hashed
//! into a map). Any error is one line that names the field, and the whole configuration is
//! refused: nothing is half-applied.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::marker::PhantomData;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::sha256::{from_hex, sha256, Digest};
use crate::time::parse_rfc3339;
use crate::window::Window;

/// Name of the consumer that counts requests without a credential (with `anonymous_plan`).
pub const ANONYMOUS: &str = "anonymous";
/// Most limits one plan may have (each one is a counter in the consumer's shared-data record).
pub const MAX_LIMITS_PER_PLAN: usize = 16;
/// Longest plan, consumer or limit name.
pub const MAX_NAME_LEN: usize = 64;
/// Largest `requests` of a limit: a structured-field integer has at most 15 digits.
pub const MAX_REQUESTS: u64 = 999_999_999_999_999;
/// Prefix of every shared-data key tollgate writes.
pub const STORE_PREFIX: &str = "tollgate:v1:";

// ---------------------------------------------------------------------------------------------
// Stage 1: the JSON model.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    credentials: Option<Vec<RawSource>>,
    plans: UniqueMap<RawPlan>,
    #[serde(default)]
    consumers: UniqueMap<RawConsumer>,
    #[serde(default)]
    anonymous_plan: Option<String>,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    on_store_error: OnStoreError,
    #[serde(default)]
    usage_path: Option<String>,
    #[serde(default)]
    cors_preflight: CorsPreflight,
    #[serde(default)]
    consumer_header: Option<String>,
    #[serde(default)]
    plan_header: Option<String>,
    #[serde(default)]
    hide_credentials: bool,
    #[serde(default)]
    calendar_utc_offset: Option<String>,
    #[serde(default = "yes")]
    identity_headers: bool,
    #[serde(default = "yes")]
    ratelimit_policy: bool,
    #[serde(default)]
    billing_url: Option<String>,
}

fn yes() -> bool {
    true
}

/// `enforce` refuses; `shadow` counts, adds headers and metrics, logs what it would refuse,
/// and refuses nothing.
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

/// What a request gets when shared data fails or CAS retries run out.
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// 503 problem+json.
    #[default]
    Deny,
    /// Forward uncounted.
    Allow,
}

/// CORS preflights (`OPTIONS` with `Access-Control-Request-Method`) carry no credentials.
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CorsPreflight {
    /// Forward without a credential, uncounted.
    #[default]
    Pass,
    /// Treat like any other request.
    Authenticate,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum RawSource {
    Header(String),
    Authorization(String),
    Query(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    limits: Vec<RawLimit>,
    #[serde(default)]
    upgrade_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    name: String,
    requests: u64,
    window: String,
    #[serde(default)]
    status: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsumer {
    plan: String,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    status: Option<RawStatus>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    grace_until: Option<String>,
    #[serde(default)]
    billing_url: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawStatus {
    Active,
    Suspended,
    PastDue,
}

/// A JSON object kept in document order that refuses duplicate member names (serde's maps
/// would silently keep the last one, hiding a copy-paste mistake in a consumer list).
#[derive(Debug)]
struct UniqueMap<V>(Vec<(String, V)>);

impl<V> Default for UniqueMap<V> {
    fn default() -> Self {
        UniqueMap(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UniqueVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueVisitor<V> {
            type Value = UniqueMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // Hashes of the names seen, not copies of them (100 000 consumers): a hash seen
                // before is confirmed against the names themselves.
                let state = RandomState::new();
                let mut seen: HashSet<u64, BuildHasherDefault<DigestHasher>> = HashSet::default();
                let mut entries: Vec<(String, V)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if !seen.insert(state.hash_one(&name))
                        && entries.iter().any(|(n, _)| *n == name)
                    {
                        return Err(serde::de::Error::custom(format!(
                            "`{name}` is listed twice"
                        )));
                    }
                    entries.push((name, map.next_value()?));
                }
                Ok(UniqueMap(entries))
            }
        }
        deserializer.deserialize_map(UniqueVisitor(PhantomData))
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 2: the compiled configuration.
// ---------------------------------------------------------------------------------------------

/// Where an API key may come from, tried in configuration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A request header (name stored lowercase).
    Header(String),
    /// `Authorization: <scheme> <key>`; the scheme is stored lowercase and matched without case.
    Authorization(String),
    /// A URL query parameter (percent-decoded).
    Query(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub name: String,
    pub requests: u64,
    pub window: Window,
    /// The window as configured (`day`, `15m`), for messages.
    pub window_text: String,
    /// HTTP status sent when this limit is exhausted.
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub limits: Vec<Limit>,
    /// Where a caller whose quota is spent can upgrade or buy more (`https` only).
    pub upgrade_url: Option<String>,
}

/// A consumer's configured `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Suspended,
    /// A payment failed: admitted until `grace_until` (Unix seconds), refused from then on
    /// (at once without one).
    PastDue {
        grace_until: Option<i64>,
    },
}

/// Where a consumer stands at an instant: its status and `expires_at` taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Active,
    /// Past due and within its grace period: admitted and counted as usual.
    Grace {
        until: i64,
    },
    Suspended,
    Expired {
        at: i64,
    },
    /// Past due after its grace period (or without one): refused, 402 payment required.
    PaymentRequired {
        grace_until: Option<i64>,
    },
}

impl Standing {
    /// The standing as the usage endpoint names it: `active`, `past_due`, `suspended`, `expired`.
    pub fn name(self) -> &'static str {
        match self {
            Standing::Active => "active",
            Standing::Grace { .. } | Standing::PaymentRequired { .. } => "past_due",
            Standing::Suspended => "suspended",
            Standing::Expired { .. } => "expired",
        }
    }

    /// Whether requests of a consumer standing so are counted (and possibly admitted).
    pub fn admitted(self) -> bool {
        matches!(self, Standing::Active | Standing::Grace { .. })
    }

    /// The end of the grace period of a past-due consumer.
    pub fn grace_until(self) -> Option<i64> {
        match self {
            Standing::Grace { until } => Some(until),
            Standing::PaymentRequired { grace_until } => grace_until,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// Index into [`Config::consumers`].
    pub id: usize,
    pub name: String,
    /// Index into [`Config::plans`].
    pub plan: usize,
    pub status: Status,
    /// Unix seconds after which the subscription has expired.
    pub expires_at: Option<i64>,
    /// This consumer's billing page (`https` only); [`Config::billing_url`] otherwise.
    pub billing_url: Option<Box<str>>,
    /// The consumer's shared-data key (by consumer name, never by API key).
    pub store_key: String,
}

impl Consumer {
    /// Where the consumer stands at `now`: suspended first, then expired (a subscription that
    /// ended is not one whose payment is late), then past due.
    pub fn standing(&self, now: i64) -> Standing {
        if self.status == Status::Suspended {
            return Standing::Suspended;
        }
        if let Some(at) = self.expires_at.filter(|at| now >= *at) {
            return Standing::Expired { at };
        }
        match self.status {
            Status::PastDue {
                grace_until: Some(until),
            } if now < until => Standing::Grace { until },
            Status::PastDue { grace_until } => Standing::PaymentRequired { grace_until },
            Status::Active | Status::Suspended => Standing::Active,
        }
    }
}

/// Hashes a SHA-256 digest map key by its first 8 bytes: digests are already uniform, and the
/// keys come from the operator, not from clients, so SipHash's flood resistance buys nothing.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }
}

type KeyMap = HashMap<Digest, usize, BuildHasherDefault<DigestHasher>>;

/// Every configured key, mapped to its consumer's index: plaintext keys as bytes (in a
/// SipHash map with a random seed, since lookups are by client-sent bytes), `sha256:` keys by
/// digest. A request costs one map lookup, plus one SHA-256 only when hashed keys exist and
/// the plaintext lookup missed; compiling 100 000 plaintext keys costs no hashing at all.
#[derive(Debug, Default)]
struct Keys {
    plain: HashMap<Box<[u8]>, usize>,
    hashed: KeyMap,
}

impl Keys {
    fn lookup(&self, key: &[u8]) -> Option<usize> {
        if let Some(index) = self.plain.get(key) {
            return Some(*index);
        }
        if self.hashed.is_empty() {
            return None;
        }
        self.hashed.get(&sha256(key)).copied()
    }

    fn len(&self) -> usize {
        self.plain.len() + self.hashed.len()
    }
}

/// The validated configuration the request path reads.
#[derive(Debug)]
pub struct Config {
    pub credentials: Vec<Source>,
    pub plans: Vec<Plan>,
    pub consumers: Vec<Consumer>,
    /// Index into `consumers` of the anonymous consumer, with `anonymous_plan`.
    pub anonymous: Option<usize>,
    /// The `WWW-Authenticate` challenge sent with every 401.
    pub challenge: String,
    pub mode: Mode,
    pub on_store_error: OnStoreError,
    /// Path (without query) of the usage endpoint, if enabled.
    pub usage_path: Option<String>,
    pub cors_preflight: CorsPreflight,
    /// Request headers that tell the upstream who called (lowercase).
    pub consumer_header: String,
    pub plan_header: String,
    /// Remove the credential before the request goes upstream.
    pub hide_credentials: bool,
    /// Seconds east of UTC for day/week/month windows.
    pub utc_offset: i64,
    /// Set the consumer and plan headers on forwarded requests (and remove client copies).
    pub identity_headers: bool,
    /// Send `RateLimit-Policy` with `RateLimit`.
    pub ratelimit_policy: bool,
    /// The billing page for consumers without one of their own (`https` only).
    pub billing_url: Option<String>,
    keys: Keys,
}

/// A configuration error: one line, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// Parses and validates the plugin configuration bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        match bytes.iter().find(|c| !c.is_ascii_whitespace()) {
            None => {
                return Err(ConfigError(
                    "the configuration is empty: it must be a JSON object ({\"plans\": ...})"
                        .into(),
                ))
            }
            Some(c) if *c != b'{' => {
                return Err(ConfigError(
                    "the configuration must be a JSON object ({\"plans\": ...})".into(),
                ))
            }
            Some(_) => {}
        }
        // serde_path_to_error records where in the document a type error happened, so that
        // every error names its field (`plans.free.limits[0].requests`), as semantic ones do.
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig = serde_path_to_error::deserialize(&mut deserializer)
            .map_err(|e| json_error(bytes, Some(e.path()), e.inner()))?;
        deserializer
            .end()
            .map_err(|e| json_error(bytes, None, &e))?;
        compile(raw)
    }

    /// The consumer that owns a presented API key.
    pub fn consumer_for_key(&self, key: &[u8]) -> Option<&Consumer> {
        self.keys
            .lookup(key)
            .and_then(|index| self.consumers.get(index))
    }

    pub fn plan_of(&self, consumer: &Consumer) -> Option<&Plan> {
        self.plans.get(consumer.plan)
    }

    /// The billing page of a consumer: its own, or the configuration's.
    pub fn billing_url_of<'a>(&'a self, consumer: &'a Consumer) -> Option<&'a str> {
        consumer
            .billing_url
            .as_deref()
            .or(self.billing_url.as_deref())
    }

    /// Number of configured keys (for the start-up summary).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// One line describing the configuration: plans, consumers, credential sources and
    /// options, never a key. The filter logs it when configured (`configured: ...`) and
    /// `tollgate check` prints it.
    pub fn summary(&self) -> String {
        let plans: Vec<String> = self
            .plans
            .iter()
            .map(|p| match p.limits.len() {
                0 => format!("{} (unlimited)", p.name),
                n => format!("{} ({})", p.name, count(n, "limit")),
            })
            .collect();
        let sources: Vec<String> = self.credentials.iter().map(Source::describe).collect();
        let consumers = self.consumers.len() - usize::from(self.anonymous.is_some());
        format!(
            "{} [{}], {}, {}, credentials [{}], anonymous_plan {}, mode {}, \
             on_store_error {}, usage_path {}, calendar_utc_offset {}",
            count(self.plans.len(), "plan"),
            plans.join(", "),
            count(consumers, "consumer"),
            count(self.key_count(), "key"),
            sources.join(", "),
            match self.anonymous.and_then(|i| self.consumers.get(i)) {
                Some(c) => self.plan_of(c).map_or("?", |p| p.name.as_str()),
                None => "off",
            },
            match self.mode {
                Mode::Enforce => "enforce",
                Mode::Shadow => "shadow",
            },
            match self.on_store_error {
                OnStoreError::Deny => "deny",
                OnStoreError::Allow => "allow",
            },
            self.usage_path.as_deref().unwrap_or("off"),
            format_utc_offset(self.utc_offset),
        ) + match (self.identity_headers, self.ratelimit_policy) {
            (true, true) => "",
            (false, true) => ", identity_headers off",
            (true, false) => ", ratelimit_policy off",
            (false, false) => ", identity_headers off, ratelimit_policy off",
        }
    }
}

impl Source {
    /// `header x-api-key`, `authorization Bearer`, `query api_key`.
    pub fn describe(&self) -> String {
        match self {
            Source::Header(name) => format!("header {name}"),
            Source::Authorization(scheme) => format!("authorization {}", capitalized(scheme)),
            Source::Query(name) => format!("query {name}"),
        }
    }
}

/// `1 plan`, `2 plans`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// An offset in seconds east of UTC as configured: `Z`, `+05:30`, `-08:00`.
pub fn format_utc_offset(seconds: i64) -> String {
    if seconds == 0 {
        return "Z".to_string();
    }
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// `bearer` → `Bearer` (schemes are stored lowercase and matched without case).
fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// Turns a serde_json error at `path` (serde_path_to_error's form, `.` for the top level)
/// into one line in a user's words.
///
/// - Syntax errors (malformed JSON) keep serde_json's line and column — counted in the plugin
///   configuration text, which the message says — and show the offending line with a caret.
/// - Type errors (a string where a number belongs, an unknown field) start with the field path
///   and say what was expected and what was found, without Rust type names (`u64`).
///
/// The configuration holds API keys, so neither form may show a string value: serde's quoted
/// values are replaced by `"…"`, backquoted names are kept only when they look like field
/// names (lowercase letters and `_`), numbers or JSON punctuation, and string values in the
/// excerpt become `*`s (object member names are kept: they say where the error is).
fn json_error(
    bytes: &[u8],
    path: Option<&serde_path_to_error::Path>,
    e: &serde_json::Error,
) -> ConfigError {
    let (line, column) = (e.line(), e.column());
    let full = e.to_string();
    let position = format!(" at line {line} column {column}");
    let bare = full.strip_suffix(&position).unwrap_or(&full);
    let message = redact_message(bare);
    // An unknown field is the last segment of its path: leave it out, the message names it
    // (redacted if it does not look like a field name: it could be a misplaced key).
    let drop_last = message.starts_with("unknown field");
    let path = path
        .map(|p| field_path(p, drop_last))
        .filter(|p| !p.is_empty());
    let syntax = matches!(
        e.classify(),
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof
    );
    // serde_json reports some type errors (a number or null where a word like "shadow"
    // belongs) as "expected value" at a character that does start a JSON value: say what it is.
    // (Cheaper in the .wasm than parsing the text again to see that it is valid JSON.)
    let at = line
        .checked_sub(1)
        .and_then(|l| bytes.split(|b| *b == b'\n').nth(l))
        .and_then(|l| l.get(column.checked_sub(1)?));
    let wrong_type = syntax
        && bare == "expected value"
        && matches!(at, Some(b'-' | b'0'..=b'9' | b'n' | b't' | b'f' | b'['));
    if !syntax || wrong_type {
        let words = if wrong_type {
            "this value has the wrong type (see the configuration reference)".to_string()
        } else {
            user_words(&message)
        };
        return ConfigError(match path {
            Some(path) => format!("{path}: {words}"),
            None => words,
        });
    }
    let mut out = format!(
        "invalid JSON at line {line} column {column} of the plugin configuration: {message}"
    );
    if let Some(path) = path {
        out.push_str(&format!(" (in {path})"));
    }
    if line == 0 {
        return ConfigError(out);
    }
    let text = String::from_utf8_lossy(bytes);
    if let Some(source_line) = text.lines().nth(line - 1) {
        // Show at most 60 characters around the column so one-line configs stay readable.
        let chars: Vec<char> = redact_values(source_line).chars().collect();
        let start = column.saturating_sub(40);
        let end = (column + 20).min(chars.len());
        let excerpt: String = chars.get(start..end).unwrap_or_default().iter().collect();
        let caret = column.saturating_sub(start).saturating_sub(1);
        out.push_str(&format!(" | {excerpt} | {}^", " ".repeat(caret)));
    }
    ConfigError(out)
}

/// `plans.free.limits[0].requests`: map keys joined by dots, list indexes in brackets.
fn field_path(path: &serde_path_to_error::Path, drop_last: bool) -> String {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let keep = segments.len() - usize::from(drop_last && !segments.is_empty());
    let mut out = String::new();
    for segment in segments.iter().take(keep) {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key: name } | Segment::Enum { variant: name } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// Rewrites serde's `invalid type: X, expected Y` and `invalid value: X, expected Y` (already
/// redacted) as `expected Y, found X` in words a user knows; other messages (unknown field,
/// unknown variant, missing field, tollgate's own) are kept as they are.
fn user_words(message: &str) -> String {
    if message.starts_with("invalid length") && message.contains("expected struct") {
        return "expected an object {...}, found a list".to_string();
    }
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    let Some((found, expected)) = rest.and_then(|r| r.split_once(", expected ")) else {
        return message.to_string();
    };
    let whole_number = matches!(expected, "u64" | "u32" | "u16" | "u8" | "i64" | "usize");
    let expected = match expected {
        "u64" | "u32" | "i64" | "usize" => "a whole number",
        "u16" => "a whole number up to 65535",
        "u8" => "a whole number up to 255",
        "a boolean" => "true or false",
        "a sequence" => "a list [...]",
        "a map" | "an object" => "an object {...}",
        other if other.starts_with("struct ") => "an object {...}",
        other if other.starts_with("enum ") => "an object with one member",
        other => other,
    };
    let found = if found.starts_with("string ") {
        "a string"
    } else if found == "sequence" {
        "a list"
    } else if found == "map" {
        "an object"
    } else if found == "unit value" || found == "null" {
        "null"
    } else if let Some(value) = ["integer ", "floating point ", "boolean "]
        .iter()
        .find_map(|kind| found.strip_prefix(kind))
    {
        value.trim_matches('`')
    } else {
        found
    };
    let hint = match (found, expected) {
        ("a string", "true or false") => " (write true or false without quotes)",
        ("a string", _) if whole_number => " (write numbers without quotes)",
        _ => "",
    };
    format!("expected {expected}, found {found}{hint}")
}

/// Redacts values quoted in a serde error message (see [`json_error`]).
fn redact_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        let quote = after.chars().next().unwrap_or('"');
        let inner = &after[1..];
        let Some(close) = inner.find(quote) else {
            out.push(quote);
            out.push('…');
            return out;
        };
        let value = &inner[..close];
        let field_name = value.bytes().all(|c| c.is_ascii_lowercase() || c == b'_');
        let number = value
            .bytes()
            .all(|c| c.is_ascii_digit() || c == b'-' || c == b'.');
        // serde_json's syntax errors quote the punctuation it expected (`,` or `]`).
        let punctuation = matches!(value, "," | ":" | "]" | "}");
        let keep = quote == '`' && value.len() <= 24 && (field_name || number || punctuation);
        out.push(quote);
        out.push_str(if keep { value } else { "…" });
        out.push(quote);
        rest = &inner[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Replaces the characters of every JSON string value on a line by `*` (member names, i.e.
/// strings followed by `:`, are kept); lengths are kept so that a caret still lines up.
fn redact_values(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out: Vec<char> = chars.clone();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c != '"' {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut j = start;
        let mut escaped = false;
        while let Some(&d) = chars.get(j) {
            if escaped {
                escaped = false;
            } else if d == '\\' {
                escaped = true;
            } else if d == '"' {
                break;
            }
            j += 1;
        }
        let next = chars
            .get(j + 1..)
            .unwrap_or_default()
            .iter()
            .find(|c| !c.is_whitespace());
        if next != Some(&':') {
            for slot in out.iter_mut().take(j).skip(start) {
                *slot = '*';
            }
        }
        i = j + 1;
    }
    out.into_iter().collect()
}

/// Whether a plan, consumer or limit name follows the name rules (also used by quotad).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "{field}: name `{name}` must be 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 _ - ."
        )))
    }
}

/// RFC 9110 token characters (header names, auth schemes).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

fn compile_sources(raw: Option<Vec<RawSource>>) -> Result<Vec<Source>, ConfigError> {
    let raw = raw.unwrap_or_else(|| vec![RawSource::Header("x-api-key".into())]);
    if raw.is_empty() {
        return Err(ConfigError(
            "credentials: the list is empty; omit it to use the default [{\"header\":\"x-api-key\"}]"
                .into(),
        ));
    }
    let mut out: Vec<Source> = Vec::with_capacity(raw.len());
    for (i, source) in raw.into_iter().enumerate() {
        let compiled = match source {
            RawSource::Header(name) => {
                if !is_token(&name) {
                    return Err(ConfigError(format!(
                        "credentials[{i}].header: `{name}` is not a valid header name"
                    )));
                }
                let lower = name.to_ascii_lowercase();
                if lower == "authorization" {
                    return Err(ConfigError(format!(
                        "credentials[{i}].header: use {{\"authorization\": \"Bearer\"}} to read the Authorization header"
                    )));
                }
                Source::Header(lower)
            }
            RawSource::Authorization(scheme) => {
                if !is_token(&scheme) {
                    return Err(ConfigError(format!(
                        "credentials[{i}].authorization: `{scheme}` is not an authentication scheme (e.g. \"Bearer\")"
                    )));
                }
                Source::Authorization(scheme.to_ascii_lowercase())
            }
            RawSource::Query(name) => {
                if name.is_empty() || name.bytes().any(|c| matches!(c, b'&' | b'=' | b'#')) {
                    return Err(ConfigError(format!(
                        "credentials[{i}].query: `{name}` is not a query parameter name"
                    )));
                }
                Source::Query(name)
            }
        };
        if out.contains(&compiled) {
            return Err(ConfigError(format!(
                "credentials[{i}]: the same source is listed twice"
            )));
        }
        out.push(compiled);
    }
    Ok(out)
}

fn compile_plan(name: &str, raw: RawPlan) -> Result<Plan, ConfigError> {
    check_name(&format!("plans.{name}"), name)?;
    if raw.limits.len() > MAX_LIMITS_PER_PLAN {
        return Err(ConfigError(format!(
            "plans.{name}.limits: {} limits; at most {MAX_LIMITS_PER_PLAN} are allowed",
            raw.limits.len()
        )));
    }
    let mut limits: Vec<Limit> = Vec::with_capacity(raw.limits.len());
    for (i, limit) in raw.limits.into_iter().enumerate() {
        let field = format!("plans.{name}.limits[{i}]");
        check_name(&format!("{field}.name"), &limit.name)?;
        if limits.iter().any(|l| l.name == limit.name) {
            return Err(ConfigError(format!(
                "{field}.name: limit `{}` is listed twice in plan `{name}`",
                limit.name
            )));
        }
        if limit.requests > MAX_REQUESTS {
            return Err(ConfigError(format!(
                "{field}.requests: at most {MAX_REQUESTS} (RateLimit fields carry at most 15 digits)"
            )));
        }
        if limit.requests == 0 {
            return Err(ConfigError(format!(
                "{field}.requests: must be greater than 0 (a plan with no limits is unlimited; suspend a consumer to refuse it)"
            )));
        }
        let window = Window::parse(&limit.window)
            .map_err(|e| ConfigError(format!("{field}.window: {e}")))?;
        let status = limit.status.unwrap_or(402);
        if !(400..=599).contains(&status) {
            return Err(ConfigError(format!(
                "{field}.status: {status} is not an HTTP error status (400-599)"
            )));
        }
        limits.push(Limit {
            name: limit.name,
            requests: limit.requests,
            window,
            window_text: limit.window,
            status,
        });
    }
    let upgrade_url = compile_https_url(&format!("plans.{name}.upgrade_url"), raw.upgrade_url)?;
    Ok(Plan {
        name: name.to_string(),
        limits,
        upgrade_url,
    })
}

/// Longest remedy URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Validates a remedy link: an absolute `https` URL with a host, in the characters RFC 3986
/// allows (so that it can stand between `<` and `>` in a `Link` header as it is), without
/// user information (a `user@` before the host is a classic way to disguise a link).
pub fn compile_https_url(field: &str, url: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(url) = url else {
        return Ok(None);
    };
    let refuse = |why: &str| Err(ConfigError(format!("{field}: `{url}` {why}")));
    if url.len() > MAX_URL_LEN {
        return Err(ConfigError(format!(
            "{field}: the URL is longer than {MAX_URL_LEN} characters"
        )));
    }
    let uri_char = |c: u8| c.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&c);
    if !url.bytes().all(uri_char) {
        return refuse("has characters a URL cannot contain (spaces, quotes, <, >, non-ASCII: percent-encode them)");
    }
    let bytes = url.as_bytes();
    let bad_escape = bytes.iter().enumerate().any(|(i, c)| {
        *c == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if bad_escape {
        return refuse("has a `%` that is not followed by two hex digits");
    }
    let Some(rest) = url
        .get(..8)
        .filter(|scheme| scheme.eq_ignore_ascii_case("https://"))
        .and_then(|_| url.get(8..))
    else {
        return refuse("is not an https URL (https://...)");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        // Not echoed: user information may be a password.
        return Err(ConfigError(format!(
            "{field}: the URL has user information (`user@` before its host); give the page's own URL"
        )));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()));
    if !host_ok || !port_ok {
        return refuse("has no valid host name (https://billing.example.com/...)");
    }
    Ok(Some(url))
}

fn plan_index(plans: &[Plan], field: &str, name: &str) -> Result<usize, ConfigError> {
    plans.iter().position(|p| p.name == name).ok_or_else(|| {
        let known: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        ConfigError(format!(
            "{field}: plan `{name}` does not exist (plans: {})",
            known.join(", ")
        ))
    })
}

/// A configured key: plaintext, or the digest of a `sha256:` key.
enum KeyForm {
    Plain(Vec<u8>),
    Hashed(Digest),
}

fn parse_key(key: String) -> Result<KeyForm, &'static str> {
    if let Some(hex) = key.strip_prefix("sha256:") {
        return from_hex(hex)
            .map(KeyForm::Hashed)
            .ok_or("a hashed key is `sha256:` followed by 64 lowercase hex digits");
    }
    if key.is_empty() {
        return Err("a key cannot be empty");
    }
    Ok(KeyForm::Plain(key.into_bytes()))
}

fn challenge(sources: &[Source]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for source in sources {
        let part = match source {
            Source::Authorization(scheme) => {
                format!("{} realm=\"tollgate\"", capitalized(scheme))
            }
            Source::Header(_) | Source::Query(_) => "ApiKey realm=\"tollgate\"".to_string(),
        };
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    parts.join(", ")
}

/// Parses `+HH:MM`, `-HH:MM` or `Z` into seconds east of UTC (at most 14 hours either way).
pub fn parse_utc_offset(text: &str) -> Result<i64, ConfigError> {
    let bad = || {
        ConfigError(format!(
            "calendar_utc_offset: `{text}` is not a fixed UTC offset like \"+05:30\", \"-08:00\" or \"Z\""
        ))
    };
    if text == "Z" {
        return Ok(0);
    }
    let b = text.as_bytes();
    let (Some(sign), Some(h1), Some(h2), Some(b':'), Some(m1), Some(m2), None) = (
        b.first(),
        b.get(1),
        b.get(2),
        b.get(3),
        b.get(4),
        b.get(5),
        b.get(6),
    ) else {
        return Err(bad());
    };
    let digits = [*h1, *h2, *m1, *m2];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let [h1, h2, m1, m2] = digits.map(|d| i64::from(d - b'0'));
    let (hours, minutes) = (h1 * 10 + h2, m1 * 10 + m2);
    if minutes > 59 || hours * 60 + minutes > 14 * 60 {
        return Err(bad());
    }
    let seconds = hours * 3600 + minutes * 60;
    match sign {
        b'+' => Ok(seconds),
        b'-' => Ok(-seconds),
        _ => Err(bad()),
    }
}

fn compile_identity_header(
    field: &str,
    name: Option<String>,
    default: &str,
    sources: &[Source],
) -> Result<String, ConfigError> {
    let name = name.unwrap_or_else(|| default.to_string());
    if !is_token(&name) {
        return Err(ConfigError(format!(
            "{field}: `{name}` is not a valid header name"
        )));
    }
    let lower = name.to_ascii_lowercase();
    let clashes = lower == "authorization"
        || lower == "host"
        || sources
            .iter()
            .any(|s| matches!(s, Source::Header(h) if *h == lower));
    if clashes {
        return Err(ConfigError(format!(
            "{field}: `{name}` is a credential or reserved header; tollgate replaces this header on every request"
        )));
    }
    Ok(lower)
}

fn compile_usage_path(path: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(path) = path else {
        return Ok(None);
    };
    if !path.starts_with('/')
        || path
            .bytes()
            .any(|c| matches!(c, b'?' | b'#') || c <= b' ' || c >= 0x7f)
    {
        return Err(ConfigError(format!(
            "usage_path: `{path}` must be a path like \"/tollgate/usage\" (no query, no spaces)"
        )));
    }
    Ok(Some(path))
}

fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    let credentials = compile_sources(raw.credentials)?;
    let consumer_header = compile_identity_header(
        "consumer_header",
        raw.consumer_header,
        "x-tollgate-consumer",
        &credentials,
    )?;
    let plan_header = compile_identity_header(
        "plan_header",
        raw.plan_header,
        "x-tollgate-plan",
        &credentials,
    )?;
    if consumer_header == plan_header {
        return Err(ConfigError(format!(
            "plan_header: `{plan_header}` is also the consumer_header"
        )));
    }
    let usage_path = compile_usage_path(raw.usage_path)?;
    let utc_offset = match &raw.calendar_utc_offset {
        Some(text) => parse_utc_offset(text)?,
        None => 0,
    };
    let mut plans = Vec::with_capacity(raw.plans.0.len());
    for (name, plan) in raw.plans.0 {
        plans.push(compile_plan(&name, plan)?);
    }
    if plans.is_empty() {
        return Err(ConfigError("plans: at least one plan is required".into()));
    }
    let mut consumers = Vec::with_capacity(raw.consumers.0.len() + 1);
    let mut keys = Keys::default();
    // Digests of the plaintext keys, computed only once a `sha256:` key shows up, to catch a
    // key listed once in plaintext and once hashed.
    let mut plain_digests: Option<KeyMap> = None;
    for (name, consumer) in raw.consumers.0 {
        let field = || format!("consumers.{name}");
        check_name(&field(), &name)?;
        if name == ANONYMOUS {
            return Err(ConfigError(format!(
                "{}: the name `{ANONYMOUS}` is reserved for requests without a credential (see anonymous_plan)",
                field()
            )));
        }
        let plan = match plans.iter().position(|p| p.name == consumer.plan) {
            Some(plan) => plan,
            None => plan_index(&plans, &format!("{}.plan", field()), &consumer.plan)?,
        };
        let expires_at = match &consumer.expires_at {
            Some(text) => Some(
                parse_rfc3339(text)
                    .map_err(|e| ConfigError(format!("{}.expires_at: {e}", field())))?,
            ),
            None => None,
        };
        let status = match (consumer.status, &consumer.grace_until) {
            (Some(RawStatus::PastDue), grace) => Status::PastDue {
                grace_until: match grace {
                    Some(text) => Some(
                        parse_rfc3339(text)
                            .map_err(|e| ConfigError(format!("{}.grace_until: {e}", field())))?,
                    ),
                    None => None,
                },
            },
            (_, Some(_)) => {
                return Err(ConfigError(format!(
                    "{}.grace_until: applies only to \"status\": \"past_due\"",
                    field()
                )))
            }
            (Some(RawStatus::Suspended), None) => Status::Suspended,
            (Some(RawStatus::Active) | None, None) => Status::Active,
        };
        let billing_url =
            compile_https_url(&format!("{}.billing_url", field()), consumer.billing_url)?
                .map(String::into_boxed_str);
        let index = consumers.len();
        for (k, key) in consumer.keys.into_iter().enumerate() {
            let key_field = || format!("consumers.{name}.keys[{k}]");
            let listed_twice = |other: usize| {
                let owner = consumers
                    .get(other)
                    .map_or(name.as_str(), |c: &Consumer| c.name.as_str());
                ConfigError(format!(
                    "{}: this key is listed twice (also a key of consumer `{owner}`)",
                    key_field()
                ))
            };
            match parse_key(key).map_err(|e| ConfigError(format!("{}: {e}", key_field())))? {
                KeyForm::Plain(bytes) => {
                    if let Some(digests) = plain_digests.as_mut() {
                        let digest = sha256(&bytes);
                        if let Some(other) = keys.hashed.get(&digest) {
                            return Err(listed_twice(*other));
                        }
                        digests.insert(digest, index);
                    }
                    if let Some(other) = keys.plain.insert(bytes.into_boxed_slice(), index) {
                        return Err(listed_twice(other));
                    }
                }
                KeyForm::Hashed(digest) => {
                    let digests = plain_digests.get_or_insert_with(|| {
                        keys.plain.iter().map(|(k, i)| (sha256(k), *i)).collect()
                    });
                    if let Some(other) = digests.get(&digest) {
                        return Err(listed_twice(*other));
                    }
                    if let Some(other) = keys.hashed.insert(digest, index) {
                        return Err(listed_twice(other));
                    }
                }
            }
        }
        consumers.push(Consumer {
            id: index,
            store_key: format!("{STORE_PREFIX}consumer:{name}"),
            name,
            plan,
            status,
            expires_at,
            billing_url,
        });
    }
    let anonymous = match raw.anonymous_plan {
        Some(plan_name) => {
            let plan = plan_index(&plans, "anonymous_plan", &plan_name)?;
            consumers.push(Consumer {
                id: consumers.len(),
                name: ANONYMOUS.to_string(),
                plan,
                status: Status::Active,
                expires_at: None,
                billing_url: None,
                store_key: format!("{STORE_PREFIX}anonymous"),
            });
            Some(consumers.len() - 1)
        }
        None => None,
    };
    Ok(Config {
        challenge: challenge(&credentials),
        credentials,
        plans,
        consumers,
        anonymous,
        mode: raw.mode,
        on_store_error: raw.on_store_error,
        usage_path,
        cors_preflight: raw.cors_preflight,
        consumer_header,
        plan_header,
        hide_credentials: raw.hide_credentials,
        utc_offset,
        identity_headers: raw.identity_headers,
        ratelimit_policy: raw.ratelimit_policy,
        billing_url: compile_https_url("billing_url", raw.billing_url)?,
        keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
      "credentials": [ {"header": "X-Api-Key"}, {"authorization": "Bearer"}, {"query": "api_key"} ],
      "plans": {
        "free": { "limits": [ {"name": "daily", "requests": 1000, "window": "day"},
                              {"name": "burst", "requests": 10, "window": "1s", "status": 429} ] },
        "pro":  { "limits": [ {"name": "monthly", "requests": 1000000, "window": "month"} ] },
        "internal": { "limits": [] }
      },
      "consumers": {
        "acme":    { "plan": "free", "keys": ["acme-key-1", "acme-key-2"] },
        "globex":  { "plan": "pro",  "keys": ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"], "expires_at": "2027-01-01T00:00:00Z" },
        "initech": { "plan": "pro",  "keys": ["initech-key"], "status": "suspended" }
      },
      "anonymous_plan": "free"
    }"#;

    fn err(json: &str) -> String {
        Config::from_json(json.as_bytes()).unwrap_err().0
    }

    #[test]
    fn compiles_the_documented_example() {
        let c = Config::from_json(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(
            c.credentials,
            vec![
                Source::Header("x-api-key".into()),
                Source::Authorization("bearer".into()),
                Source::Query("api_key".into())
            ]
        );
        assert_eq!(c.plans.len(), 3);
        let free = &c.plans[0];
        assert_eq!(free.limits[0].window, Window::Day);
        assert_eq!(free.limits[0].status, 402);
        assert_eq!(free.limits[1].status, 429);
        assert!(
            c.identity_headers && c.ratelimit_policy,
            "both on by default"
        );
        let acme = c.consumer_for_key(b"acme-key-2").unwrap();
        assert_eq!(acme.name, "acme");
        assert_eq!(c.plan_of(acme).unwrap().name, "free");
        assert_eq!(
            c.consumer_for_key(b"acme-key-1").unwrap().store_key,
            acme.store_key
        );
        // "foo" hashes to 2c26b4...: hashed keys match the plaintext a client sends.
        let globex = c.consumer_for_key(b"foo").unwrap();
        assert_eq!(globex.name, "globex");
        assert_eq!(globex.expires_at, Some(1_798_761_600));
        assert!(c.consumer_for_key(b"initech-key").unwrap().status == Status::Suspended);
        assert!(c.consumer_for_key(b"nobody").is_none());
        let anon = &c.consumers[c.anonymous.unwrap()];
        assert_eq!((anon.name.as_str(), anon.plan), ("anonymous", 0));
        assert_eq!(c.key_count(), 4);
        assert_eq!(
            c.challenge,
            "ApiKey realm=\"tollgate\", Bearer realm=\"tollgate\""
        );
    }

    #[test]
    fn operational_options() {
        let c = Config::from_json(
            br#"{"plans": {"p": {"limits": []}}, "mode": "shadow", "on_store_error": "allow",
                 "usage_path": "/tollgate/usage", "cors_preflight": "authenticate",
                 "consumer_header": "X-Consumer", "plan_header": "x-plan",
                 "hide_credentials": true, "calendar_utc_offset": "+05:30"}"#,
        )
        .unwrap();
        assert_eq!(
            (c.mode, c.on_store_error),
            (Mode::Shadow, OnStoreError::Allow)
        );
        assert_eq!(c.usage_path.as_deref(), Some("/tollgate/usage"));
        assert_eq!(c.cors_preflight, CorsPreflight::Authenticate);
        assert_eq!(
            (c.consumer_header.as_str(), c.plan_header.as_str()),
            ("x-consumer", "x-plan")
        );
        assert!(c.hide_credentials);
        assert_eq!(c.utc_offset, 19_800);
        let d = Config::from_json(br#"{"plans": {"p": {"limits": []}}}"#).unwrap();
        assert_eq!(
            (d.mode, d.on_store_error, d.cors_preflight),
            (Mode::Enforce, OnStoreError::Deny, CorsPreflight::Pass)
        );
        assert_eq!(
            (d.consumer_header.as_str(), d.plan_header.as_str()),
            ("x-tollgate-consumer", "x-tollgate-plan")
        );
        assert_eq!(
            (d.usage_path, d.hide_credentials, d.utc_offset),
            (None, false, 0)
        );
    }

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_utc_offset("Z"), Ok(0));
        assert_eq!(parse_utc_offset("+00:00"), Ok(0));
        assert_eq!(parse_utc_offset("-08:00"), Ok(-28_800));
        assert_eq!(parse_utc_offset("+14:00"), Ok(50_400));
        assert_eq!(parse_utc_offset("+05:45"), Ok(20_700));
        for bad in [
            "",
            "+5:30",
            "05:30",
            "+05:60",
            "+14:01",
            "+0530",
            "+05:30 ",
            "UTC",
            "+٠٥:٣٠",
        ] {
            assert!(parse_utc_offset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults() {
        let c = Config::from_json(br#"{"plans": {"p": {"limits": []}}}"#).unwrap();
        assert_eq!(c.credentials, vec![Source::Header("x-api-key".into())]);
        assert!(c.consumers.is_empty() && c.anonymous.is_none());
    }

    #[test]
    fn refuses_bad_configurations_naming_the_field() {
        let plans =
            r#""plans": {"free": {"limits": [{"name": "d", "requests": 5, "window": "day"}]}}"#;
        let cases: Vec<(String, &str)> = vec![
            ("{".into(), "invalid JSON at line 1 column 1 of the plugin configuration: EOF while parsing an object | { | ^"),
            ("[]".into(), "the configuration must be a JSON object"),
            ("  \n".into(), "the configuration is empty"),
            ("".into(), "the configuration is empty"),
            ("{}".into(), "missing field `plans`"),
            (format!(r#"{{{plans}, "bogus": 1}}"#), "unknown field `bogus`, expected one of `credentials`, `plans`"),
            (r#"{"plans": {}}"#.into(), "plans: at least one plan"),
            (r#"{"plans": {"p": {"limits": [], "x": 1}}}"#.into(), "plans.p: unknown field `x`, expected `limits`"),
            (r#"{"plans": {"p": {"limits": [{"name": "d", "requets": 1, "window": "day"}]}}}"#.into(), "plans.p.limits[0]: unknown field `requets`, expected one of `name`, `requests`, `window`, `status`"),
            (r#"{"plans": {"p": {"limits": [{"name": "d", "window": "day"}]}}}"#.into(), "plans.p.limits[0]: missing field `requests`"),
            (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": "100", "window": "day"}]}}}"#.into(), "plans.p.limits[0].requests: expected a whole number, found a string (write numbers without quotes)"),
            (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 1.5, "window": "day"}]}}}"#.into(), "plans.p.limits[0].requests: expected a whole number, found 1.5"),
            (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 1, "window": "day", "status": 70000}]}}}"#.into(), "plans.p.limits[0].status: expected a whole number up to 65535, found 70000"),
            (r#"{"plans": {"p": {"limits": {}}}}"#.into(), "plans.p.limits: expected a list [...], found an object"),
            (r#"{"plans": {"p": {"limits": [[]]}}}"#.into(), "plans.p.limits[0]: expected an object {...}, found a list"),
            (r#"{"plans": {"p": {"limits": null}}}"#.into(), "plans.p.limits: expected a list [...], found null"),
            (r#"{"plans": []}"#.into(), "plans: expected an object {...}, found a list"),
            (r#"{"plans": {"p": {"limits": []}}} x"#.into(), "invalid JSON at line 1 column 34 of the plugin configuration: trailing characters"),
            (r#"{"plans": {"p": {"limits": []}, "p": {"limits": []}}}"#.into(), "plans: `p` is listed twice"),
            (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 0, "window": "day"}]}}}"#.into(), "plans.p.limits[0].requests: must be greater than 0"),
            (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": -1, "window": "day"}]}}}"#.into(), "plans.p.limits[0].requests: expected a whole number, found -1"),
            (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 1, "window": "fortnight"}]}}}"#.into(), "plans.p.limits[0].window: `fortnight` is not a window"),
            (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 1, "window": "day", "status": 200}]}}}"#.into(), "plans.p.limits[0].status: 200"),
            (r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 1, "window": "day"}, {"name": "d", "requests": 1, "window": "1s"}]}}}"#.into(), "plans.p.limits[1].name: limit `d` is listed twice"),
            (r#"{"plans": {"p": {"limits": [{"name": "has space", "requests": 1, "window": "day"}]}}}"#.into(), "plans.p.limits[0].name"),
            (r#"{"plans": {"bad name": {"limits": []}}}"#.into(), "plans.bad name: name"),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "gold", "keys": ["k"]}}}}}}"#), "consumers.a.plan: plan `gold` does not exist (plans: free)"),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "keys": ["k", "k"]}}}}}}"#), "consumers.a.keys[1]: this key is listed twice (also a key of consumer `a`)"),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "keys": ["foo"]}}, "b": {{"plan": "free", "keys": ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]}}}}}}"#), "consumers.b.keys[0]: this key is listed twice (also a key of consumer `a`)"),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "keys": ["sha256:ABC"]}}}}}}"#), "consumers.a.keys[0]: a hashed key is"),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "keys": ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]}}, "b": {{"plan": "free", "keys": ["x", "foo"]}}}}}}"#), "consumers.b.keys[1]: this key is listed twice (also a key of consumer `a`)"),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "keys": ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae", "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]}}}}}}"#), "consumers.a.keys[1]: this key is listed twice"),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "keys": [""]}}}}}}"#), "consumers.a.keys[0]: a key cannot be empty"),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "status": "paused"}}}}}}"#), "consumers.a.status: unknown variant `paused`, expected one of `active`, `suspended`, `past_due`"),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "expires_at": "tomorrow"}}}}}}"#), "consumers.a.expires_at: `tomorrow` is not an RFC 3339"),
            (format!(r#"{{{plans}, "consumers": {{"anonymous": {{"plan": "free"}}}}}}"#), "consumers.anonymous: the name `anonymous` is reserved"),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free"}}, "a": {{"plan": "free"}}}}}}"#), "consumers: `a` is listed twice"),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "keys": [1]}}}}}}"#), "consumers.a.keys[0]: expected a string, found 1"),
            (format!(r#"{{{plans}, "anonymous_plan": "gold"}}"#), "anonymous_plan: plan `gold` does not exist"),
            (format!(r#"{{{plans}, "credentials": []}}"#), "credentials: the list is empty"),
            (format!(r#"{{{plans}, "credentials": [{{"cookie": "k"}}]}}"#), "credentials[0]: unknown variant `cookie`, expected one of `header`, `authorization`, `query`"),
            (format!(r#"{{{plans}, "credentials": [{{"header": 1}}]}}"#), "credentials[0].header: expected a string, found 1"),
            (format!(r#"{{{plans}, "credentials": [{{"header": "bad header"}}]}}"#), "credentials[0].header: `bad header`"),
            (format!(r#"{{{plans}, "credentials": [{{"header": "Authorization"}}]}}"#), "credentials[0].header: use {\"authorization\""),
            (format!(r#"{{{plans}, "credentials": [{{"authorization": ""}}]}}"#), "credentials[0].authorization"),
            (format!(r#"{{{plans}, "credentials": [{{"query": "a=b"}}]}}"#), "credentials[0].query"),
            (format!(r#"{{{plans}, "credentials": [{{"query": "k"}}, {{"query": "k"}}]}}"#), "credentials[1]: the same source is listed twice"),
            (format!(r#"{{{plans}, "credentials": [{{"header": "X-Key"}}, {{"header": "x-key"}}]}}"#), "credentials[1]: the same source is listed twice"),
            (format!(r#"{{{plans}, "mode": "audit"}}"#), "mode: unknown variant `audit`"),
            (format!(r#"{{{plans}, "mode": null}}"#), "mode: this value has the wrong type"),
            (format!("{{{plans},\n \"mode\": [1]}}"), "mode: this value has the wrong type"),
            (format!(r#"{{{plans}, "mode": -1}}"#), "mode: this value has the wrong type"),
            (format!(r#"{{{plans}, "credentials": [true]}}"#), "credentials[0]: this value has the wrong type"),
            (r#"{"plans": {"p": {"limits": [],}}}"#.into(), "invalid JSON at line 1 column 31 of the plugin configuration: trailing comma"),
            (format!(r#"{{{plans}, "on_store_error": "retry"}}"#), "on_store_error: unknown variant `retry`"),
            (format!(r#"{{{plans}, "usage_path": "usage"}}"#), "usage_path: `usage` must be a path"),
            (format!(r#"{{{plans}, "usage_path": "/u?x=1"}}"#), "usage_path"),
            (format!(r#"{{{plans}, "consumer_header": "x-api-key"}}"#), "consumer_header: `x-api-key` is a credential or reserved header"),
            (format!(r#"{{{plans}, "plan_header": "bad header"}}"#), "plan_header: `bad header` is not a valid header name"),
            (format!(r#"{{{plans}, "plan_header": "X-Tollgate-Consumer"}}"#), "plan_header: `x-tollgate-consumer` is also the consumer_header"),
            (format!(r#"{{{plans}, "calendar_utc_offset": "Asia/Kolkata"}}"#), "calendar_utc_offset: `Asia/Kolkata` is not a fixed UTC offset"),
            (format!(r#"{{{plans}, "hide_credentials": "yes"}}"#), "hide_credentials: expected true or false, found a string (write true or false without quotes)"),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "status": "suspended", "grace_until": "2027-01-01T00:00:00Z"}}}}}}"#), "consumers.a.grace_until: applies only to \"status\": \"past_due\""),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "grace_until": "2027-01-01T00:00:00Z"}}}}}}"#), "consumers.a.grace_until: applies only to"),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "status": "past_due", "grace_until": "soon"}}}}}}"#), "consumers.a.grace_until: `soon` is not an RFC 3339"),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "status": "pastdue"}}}}}}"#), "consumers.a.status: unknown variant `pastdue`, expected one of `active`, `suspended`, `past_due`"),
            (format!(r#"{{{plans}, "billing_url": "http://example.com/billing"}}"#), "billing_url: `http://example.com/billing` is not an https URL"),
            (format!(r#"{{{plans}, "billing_url": "/billing"}}"#), "billing_url: `/billing` is not an https URL"),
            (format!(r#"{{{plans}, "billing_url": "javascript:alert(1)"}}"#), "billing_url: `javascript:alert(1)` is not an https URL"),
            (format!(r#"{{{plans}, "billing_url": "https://"}}"#), "billing_url: `https://` has no valid host name"),
            (format!(r#"{{{plans}, "billing_url": "https://example.com:x/"}}"#), "billing_url: `https://example.com:x/` has no valid host name"),
            (format!(r#"{{{plans}, "billing_url": "https://evil.example@example.com/"}}"#), "billing_url: the URL has user information"),
            (format!(r#"{{{plans}, "billing_url": 1}}"#), "billing_url: expected a string, found 1"),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "billing_url": "https://example.com/a b"}}}}}}"#), "consumers.a.billing_url: `https://example.com/a b` has characters a URL cannot contain"),
            (format!(r#"{{{plans}, "consumers": {{"a": {{"plan": "free", "billing_url": "https://example.com/>; rel=x"}}}}}}"#), "consumers.a.billing_url: `https://example.com/>; rel=x` has characters"),
            (r#"{"plans": {"p": {"limits": [], "upgrade_url": "ftp://example.com"}}}"#.into(), "plans.p.upgrade_url: `ftp://example.com` is not an https URL"),
            (r#"{"plans": {"p": {"limits": [], "upgrade_url": "https://example.com/100%"}}}"#.into(), "plans.p.upgrade_url: `https://example.com/100%` has a `%` that is not followed by two hex digits"),
            (r#"{"plans": {"p": {"limits": [], "upgrade_url": "https://example.com/%zz"}}}"#.into(), "plans.p.upgrade_url: `https://example.com/%zz` has a `%`"),
            (r#"{"plans": {"p": {"limits": [], "upgrade_url": "https://example.com/é"}}}"#.into(), "plans.p.upgrade_url: `https://example.com/é` has characters"),
        ];
        for (json, expected) in cases {
            let message = err(&json);
            assert!(
                message.contains(expected),
                "for {json}\n got: {message}\nwant: {expected}"
            );
            assert!(!message.contains('\n'), "one line: {message}");
        }
    }

    #[test]
    fn json_syntax_errors_show_line_column_and_a_caret() {
        let message = err("{\n  \"plans\": {\n    \"free\": {\"limits\": [}\n  }\n}");
        assert!(message.contains("line 3 column 25"), "{message}");
        assert!(message.contains("\"free\": {\"limits\": [}"), "{message}");
        assert!(message.ends_with('^'), "{message}");
        assert!(
            message.starts_with(
                "invalid JSON at line 3 column 25 of the plugin configuration: expected value \
                 (in plans.free.limits[0])"
            ),
            "{message}"
        );
        // serde_json's expected punctuation is shown, not redacted.
        let message = err(
            r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 1, "window": "day"} {}]}}}"#,
        );
        assert!(message.contains("expected `,` or `]`"), "{message}");
    }

    #[test]
    fn errors_never_show_a_key() {
        let plans = r#""plans": {"p": {"limits": []}}"#;
        for json in [
            format!(
                r#"{{{plans}, "consumers": {{"a": {{"plan": "p", "keys": "sk_live_SECRET123"}}}}}}"#
            ),
            format!(
                r#"{{{plans}, "consumers": {{"a": {{"plan": "p", "keys": ["sk_live_SECRET123"],}}}}}}"#
            ),
            format!(
                r#"{{{plans}, "consumers": {{"a": {{"plan": "p", "keys": ["sk_live_SECRET123"], "status": "sk_live_SECRET123"}}}}}}"#
            ),
            format!(
                r#"{{{plans}, "consumers": {{"a": {{"plan": "p", "keys": [1, "sk_live_SECRET123"]}}}}}}"#
            ),
            // A key pasted where a field name belongs: the path leaves the unknown field out.
            format!(
                r#"{{{plans}, "consumers": {{"a": {{"plan": "p", "sk_live_SECRET123": ["k"]}}}}}}"#
            ),
            format!(r#"{{{plans}, "sk_live_SECRET123": 1}}"#),
        ] {
            let message = err(&json);
            assert!(!message.contains("SECRET"), "{message}");
            assert!(
                message.contains("consumers.a") || message.starts_with("unknown field `…`"),
                "{message}"
            );
        }
        // Field names stay readable.
        assert!(
            err(&format!(r#"{{{plans}, "consumer": {{}}}}"#)).contains("unknown field `consumer`")
        );
        assert_eq!(
            redact_values(r#"{"keys": ["a\"b", "c"], "n": 1}"#),
            r#"{"keys": ["****", "*"], "n": 1}"#
        );
    }

    #[test]
    fn the_summary_reads_like_the_configuration() {
        let c = Config::from_json(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(
            c.summary(),
            "3 plans [free (2 limits), pro (1 limit), internal (unlimited)], 3 consumers, 4 keys, \
             credentials [header x-api-key, authorization Bearer, query api_key], \
             anonymous_plan free, mode enforce, on_store_error deny, usage_path off, \
             calendar_utc_offset Z"
        );
        let one = Config::from_json(
            br#"{"plans": {"p": {"limits": [{"name": "d", "requests": 1, "window": "day"}]}},
                 "consumers": {"a": {"plan": "p", "keys": ["k"]}}, "mode": "shadow",
                 "on_store_error": "allow", "usage_path": "/u", "calendar_utc_offset": "+05:30"}"#,
        )
        .unwrap();
        assert_eq!(
            one.summary(),
            "1 plan [p (1 limit)], 1 consumer, 1 key, credentials [header x-api-key], \
             anonymous_plan off, mode shadow, on_store_error allow, usage_path /u, \
             calendar_utc_offset +05:30"
        );
        for (text, seconds) in [
            ("Z", 0),
            ("+05:30", 19_800),
            ("-08:00", -28_800),
            ("+14:00", 50_400),
            ("-00:30", -1_800),
        ] {
            assert_eq!(parse_utc_offset(text), Ok(seconds));
            assert_eq!(format_utc_offset(seconds), text);
        }
    }

    #[test]
    fn remedy_urls_that_are_accepted() {
        for url in [
            "https://example.com",
            "HTTPS://Example.COM/billing",
            "https://billing.example.com:8443/account?tab=payment#card",
            "https://example.com/a%20b/(x)*;y=1,z",
            "https://192.0.2.1/pay",
        ] {
            assert_eq!(
                compile_https_url("f", Some(url.to_string())),
                Ok(Some(url.to_string()))
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(
            compile_https_url("f", Some(long)),
            Err(ConfigError(
                "f: the URL is longer than 2048 characters".into()
            ))
        );
        let c = Config::from_json(
            br#"{"plans": {"p": {"limits": [], "upgrade_url": "https://example.com/up"}},
                 "consumers": {"a": {"plan": "p", "billing_url": "https://example.com/a"},
                               "b": {"plan": "p"}},
                 "billing_url": "https://example.com/all", "anonymous_plan": "p"}"#,
        )
        .unwrap();
        assert_eq!(
            c.plans[0].upgrade_url.as_deref(),
            Some("https://example.com/up")
        );
        let billing: Vec<Option<&str>> = c.consumers.iter().map(|x| c.billing_url_of(x)).collect();
        assert_eq!(
            billing,
            [
                Some("https://example.com/a"),
                Some("https://example.com/all"),
                Some("https://example.com/all")
            ]
        );
    }

    #[test]
    fn standing_follows_status_expiry_and_grace() {
        let c = Config::from_json(
            br#"{"plans": {"p": {"limits": []}},
                 "consumers": {
                   "active": {"plan": "p"},
                   "ends": {"plan": "p", "expires_at": "2027-01-01T00:00:00Z"},
                   "suspended": {"plan": "p", "status": "suspended", "expires_at": "2020-01-01T00:00:00Z"},
                   "grace": {"plan": "p", "status": "past_due", "grace_until": "2027-01-01T00:00:00+01:00"},
                   "no_grace": {"plan": "p", "status": "past_due"},
                   "both": {"plan": "p", "status": "past_due", "grace_until": "2027-02-01T00:00:00Z",
                            "expires_at": "2027-01-01T00:00:00Z"}}}"#,
        )
        .unwrap();
        let jan = 1_798_761_600; // 2027-01-01T00:00:00Z
        let grace_end = jan - 3600;
        let at = |name: &str, now: i64| {
            c.consumers
                .iter()
                .find(|x| x.name == name)
                .unwrap()
                .standing(now)
        };
        assert_eq!(at("active", jan), Standing::Active);
        assert_eq!(at("ends", jan - 1), Standing::Active);
        assert_eq!(at("ends", jan), Standing::Expired { at: jan });
        assert_eq!(at("suspended", 0), Standing::Suspended);
        assert_eq!(
            at("grace", grace_end - 1),
            Standing::Grace { until: grace_end }
        );
        assert_eq!(
            at("grace", grace_end),
            Standing::PaymentRequired {
                grace_until: Some(grace_end)
            }
        );
        assert_eq!(
            at("no_grace", 0),
            Standing::PaymentRequired { grace_until: None }
        );
        assert_eq!(at("both", jan - 1).name(), "past_due");
        assert_eq!(at("both", jan), Standing::Expired { at: jan });
        let admitted: Vec<bool> = [
            Standing::Active,
            Standing::Grace { until: 0 },
            Standing::Suspended,
            Standing::Expired { at: 0 },
            Standing::PaymentRequired { grace_until: None },
        ]
        .iter()
        .map(|s| s.admitted())
        .collect();
        assert_eq!(admitted, [true, true, false, false, false]);
    }

    #[test]
    fn requests_fit_in_a_structured_field_integer() {
        let ok = r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 999999999999999, "window": "day"}]}}}"#;
        assert!(Config::from_json(ok.as_bytes()).is_ok());
        let big = ok.replace("999999999999999", "1000000000000000");
        assert!(err(&big).contains("plans.p.limits[0].requests: at most 999999999999999"));
    }

    #[test]
    fn too_many_limits() {
        let limits: Vec<String> = (0..17)
            .map(|i| format!(r#"{{"name": "l{i}", "requests": 1, "window": "day"}}"#))
            .collect();
        let json = format!(
            r#"{{"plans": {{"p": {{"limits": [{}]}}}}}}"#,
            limits.join(",")
        );
        assert!(err(&json).contains("at most 16"));
    }

    #[test]
    fn error_messages_say_what_was_expected_and_display_as_is() {
        let message = err(r#"{"plans": []}"#);
        assert!(message.contains("expected an object"), "{message}");
        let error = Config::from_json(b"{").unwrap_err();
        assert_eq!(error.to_string(), error.0);
        assert!(!error.0.is_empty());
    }

    #[test]
    fn a_long_line_is_shown_around_the_error_only() {
        // An error at column 12 of a 200-character line: the excerpt is cut 20 characters
        // after the column.
        let json = format!(r#"{{"plans": x{} }}"#, " ".repeat(190));
        let message = err(&json);
        let excerpt = message.split(" | ").nth(1).unwrap();
        assert_eq!(excerpt, r#"{"plans": x                    "#, "{message}");
    }

    #[test]
    fn backquoted_names_are_kept_only_when_lowercase() {
        let plans = r#""plans": {"p": {"limits": []}}"#;
        let message = err(&format!(r#"{{{plans}, "sk_Live_KEY": 1}}"#));
        // (The excerpt after " | " keeps member names: they say where the error is.)
        let head = message.split(" | ").next().unwrap();
        assert!(head.contains("unknown field `…`"), "{message}");
        assert!(!head.contains("KEY"), "{message}");
        let message = err(&format!(r#"{{{plans}, "anonymous_plans": 1}}"#));
        assert!(
            message.contains("unknown field `anonymous_plans`"),
            "{message}"
        );
    }

    #[test]
    fn a_weekly_limit_has_a_fixed_policy_of_seven_days() {
        let c = Config::from_json(
            br#"{"plans": {"p": {"limits": [{"name": "w", "requests": 5, "window": "week"}]}}}"#,
        )
        .unwrap();
        let bounds = c.plans[0].limits[0].window.bounds(1_795_000_000, 0);
        let usage = crate::quota::Usage {
            used: 0,
            requests: 5,
            bounds,
            violated: false,
        };
        assert_eq!(
            crate::response::rate_limit_policy(&c.plans[0], &[usage]),
            "\"w\";q=5;w=604800"
        );
    }

    #[test]
    fn the_key_hasher_uses_the_first_eight_bytes_of_the_digest() {
        // Digests are uniform, so their first 8 bytes are the hash: distinct keys spread
        // over the map instead of colliding (100 000 consumers stay O(1) per lookup).
        let hash = |digest: &Digest| {
            let mut h = DigestHasher::default();
            h.write(digest);
            h.finish()
        };
        let a = crate::sha256::sha256(b"a");
        assert_eq!(hash(&a), u64::from_be_bytes(a[..8].try_into().unwrap()));
        let b = crate::sha256::sha256(b"b");
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn the_bounds_of_limits_offsets_and_header_and_path_rules_are_exact() {
        let plans = r#""plans": {"p": {"limits": []}}"#;
        // Exactly 16 limits are allowed (17 are not: see too_many_limits).
        let limits: Vec<String> = (0..16)
            .map(|i| format!(r#"{{"name": "l{i}", "requests": 1, "window": "day"}}"#))
            .collect();
        let json = format!(
            r#"{{"plans": {{"p": {{"limits": [{}]}}}}}}"#,
            limits.join(",")
        );
        assert_eq!(
            Config::from_json(json.as_bytes()).unwrap().plans[0]
                .limits
                .len(),
            16
        );
        let offset = |text: &str| {
            Config::from_json(format!(r#"{{{plans}, "calendar_utc_offset": "{text}"}}"#).as_bytes())
                .map(|c| c.utc_offset)
        };
        assert_eq!(offset("+00:59"), Ok(59 * 60));
        assert_eq!(offset("-14:00"), Ok(-14 * 3600));
        assert!(offset("+00:60").is_err());
        assert!(offset("+14:01").is_err());
        for name in ["authorization", "Host", "x-api-key"] {
            let message = err(&format!(r#"{{{plans}, "consumer_header": "{name}"}}"#));
            assert!(
                message.contains("is a credential or reserved header"),
                "{message}"
            );
        }
        for path in ["/u?x", "/u#x", "/u x", "/u\\u0001", "/u\\u007f", "/é"] {
            let message = err(&format!(r#"{{{plans}, "usage_path": "{path}"}}"#));
            assert!(message.starts_with("usage_path: "), "{path}: {message}");
        }
    }
}
