//! What callers see: RateLimit fields (draft-ietf-httpapi-ratelimit-headers-10) on every
//! response to a counted consumer, and RFC 9457 `application/problem+json` refusals.

use crate::config::{Config, Plan};
use crate::decision::{Caller, Denial};
use crate::quota::Usage;
use crate::time::format_rfc3339;

pub const PROBLEM_JSON: &str = "application/problem+json";
pub const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";
pub const MISSING_CREDENTIAL: &str = "urn:tollgate:problem:missing-credential";
pub const INVALID_CREDENTIAL: &str = "urn:tollgate:problem:invalid-credential";
pub const SUSPENDED: &str = "urn:tollgate:problem:subscription-suspended";
pub const EXPIRED: &str = "urn:tollgate:problem:subscription-expired";
pub const UNAVAILABLE: &str = "urn:tollgate:problem:quota-unavailable";

/// A local reply: status, headers, body — or, to a gRPC client, a trailers-only gRPC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// Set for gRPC requests: the reply is sent as this gRPC status, with `body` as
    /// `grpc-message` and `headers` as metadata.
    pub grpc_status: Option<u32>,
}

/// gRPC status codes tollgate uses.
pub mod grpc {
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

/// `RateLimit-Policy` and `RateLimit` for a plan's usages (nothing for an unlimited plan).
pub fn rate_limit_headers(plan: &Plan, usages: &[Usage], now: i64) -> Vec<(&'static str, String)> {
    if usages.is_empty() {
        return Vec::new();
    }
    let mut state = String::with_capacity(usages.len() * 32);
    for (limit, usage) in plan.limits.iter().zip(usages) {
        if !state.is_empty() {
            state.push_str(", ");
        }
        // Limit names are validated to [A-Za-z0-9_.-]: safe inside a structured-field string.
        state.push_str(&format!(
            "\"{}\";r={};t={}",
            limit.name,
            usage.remaining(),
            usage.bounds.seconds_to_reset(now)
        ));
    }
    let policy = match &plan.policy {
        Some(policy) => policy.clone(),
        None => plan
            .limits
            .iter()
            .zip(usages)
            .map(|(limit, usage)| {
                format!(
                    "\"{}\";q={};w={}",
                    limit.name,
                    limit.requests,
                    usage.bounds.seconds()
                )
            })
            .collect::<Vec<String>>()
            .join(", "),
    };
    vec![("ratelimit-policy", policy), ("ratelimit", state)]
}

/// A small JSON object writer: the two documents tollgate writes (problems, usage) are flat
/// and known, and a writer of our own keeps serde's serializer out of the binary.
struct Json(String);

impl Json {
    fn object() -> Json {
        Json(String::from("{"))
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 && !self.0.ends_with(['{', '[']) {
            self.0.push(',');
        }
        push_string(&mut self.0, key);
        self.0.push(':');
    }

    fn str(&mut self, key: &str, value: &str) -> &mut Json {
        self.key(key);
        push_string(&mut self.0, value);
        self
    }

    fn num(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Json {
        self.key(key);
        self.0.push_str(&value.to_string());
        self
    }

    fn raw(&mut self, key: &str, json: &str) -> &mut Json {
        self.key(key);
        self.0.push_str(json);
        self
    }

    fn end(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// Appends `value` as a JSON string (RFC 8259 escaping).
fn push_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn string_array(items: &[&str]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_string(&mut out, item);
    }
    out.push(']');
    out
}

struct Problem<'a> {
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
    consumer: Option<&'a str>,
    plan: Option<&'a str>,
    violated_policies: Option<Vec<&'a str>>,
    reset: Option<String>,
    retry_after: Option<i64>,
    expired_at: Option<String>,
}

impl<'a> Problem<'a> {
    fn new(kind: &'a str, title: &'a str, status: u16, detail: String) -> Self {
        Problem {
            kind,
            title,
            status,
            detail,
            consumer: None,
            plan: None,
            violated_policies: None,
            reset: None,
            retry_after: None,
            expired_at: None,
        }
    }

    fn of(mut self, caller: &Caller<'a>) -> Self {
        self.consumer = Some(&caller.consumer.name);
        self.plan = Some(&caller.plan.name);
        self
    }

    /// The reply: problem+json, or for a gRPC client (which cannot read a 402) a trailers-only
    /// gRPC status with the `detail` as `grpc-message` and the same headers as metadata.
    fn reply(self, mut headers: Vec<(&'static str, String)>, grpc: bool) -> Reply {
        if grpc {
            let code = match self.kind {
                MISSING_CREDENTIAL | INVALID_CREDENTIAL => grpc::UNAUTHENTICATED,
                QUOTA_EXCEEDED => grpc::RESOURCE_EXHAUSTED,
                UNAVAILABLE => grpc::UNAVAILABLE,
                _ => grpc::PERMISSION_DENIED,
            };
            return Reply {
                status: self.status,
                headers,
                body: self.detail,
                grpc_status: Some(code),
            };
        }
        let mut json = Json::object();
        json.str("type", self.kind)
            .str("title", self.title)
            .num("status", self.status)
            .str("detail", &self.detail);
        if let Some(consumer) = self.consumer {
            json.str("consumer", consumer);
        }
        if let Some(plan) = self.plan {
            json.str("plan", plan);
        }
        if let Some(names) = &self.violated_policies {
            json.raw("violated-policies", &string_array(names));
        }
        if let Some(reset) = &self.reset {
            json.str("reset", reset);
        }
        if let Some(seconds) = self.retry_after {
            json.num("retry-after", seconds);
        }
        if let Some(at) = &self.expired_at {
            json.str("expired-at", at);
        }
        let body = json.end();
        headers.push(("content-type", PROBLEM_JSON.to_string()));
        headers.push(("cache-control", "no-store".to_string()));
        Reply {
            status: self.status,
            headers,
            body,
            grpc_status: None,
        }
    }
}

/// The refusal a caller gets.
pub fn refusal(config: &Config, denial: &Denial, now: i64, grpc: bool) -> Reply {
    let challenge = || vec![("www-authenticate", config.challenge.clone())];
    let invalid = |detail: String| {
        Problem::new(INVALID_CREDENTIAL, "Invalid API key", 401, detail).reply(challenge(), grpc)
    };
    match denial {
        Denial::MissingCredential => Problem::new(
            MISSING_CREDENTIAL,
            "Missing API key",
            401,
            "This API requires an API key.".into(),
        )
        .reply(challenge(), grpc),
        Denial::MalformedCredential(reason) => {
            invalid(format!("The API key is not valid: {reason}."))
        }
        Denial::UnknownKey => invalid("The API key is not valid.".into()),
        Denial::Suspended(caller) => Problem::new(
            SUSPENDED,
            "Subscription suspended",
            402,
            format!(
                "The subscription of consumer {} is suspended.",
                caller.consumer.name
            ),
        )
        .of(caller)
        .reply(Vec::new(), grpc),
        Denial::Expired { caller, expired_at } => {
            let mut p = Problem::new(
                EXPIRED,
                "Subscription expired",
                402,
                format!(
                    "The subscription of consumer {} expired at {}.",
                    caller.consumer.name,
                    format_rfc3339(*expired_at)
                ),
            )
            .of(caller);
            p.expired_at = Some(format_rfc3339(*expired_at));
            p.reply(Vec::new(), grpc)
        }
        Denial::QuotaExceeded { caller, usages } => quota_exceeded(caller, usages, now, grpc),
        Denial::StoreUnavailable { caller, .. } => {
            let mut p = Problem::new(
                UNAVAILABLE,
                "Quota temporarily unavailable",
                503,
                "The request could not be counted against its quota; try again shortly.".into(),
            )
            .of(caller);
            p.retry_after = Some(1);
            p.reply(vec![("retry-after", "1".into())], grpc)
        }
    }
}

fn quota_exceeded(caller: &Caller, usages: &[Usage], now: i64, grpc: bool) -> Reply {
    let violated: Vec<(&crate::config::Limit, &Usage)> = caller
        .plan
        .limits
        .iter()
        .zip(usages)
        .filter(|(_, u)| u.violated)
        .collect();
    // The binding limit is the violated one that resets last: retrying earlier is pointless.
    let binding = violated.iter().max_by_key(|(_, u)| u.bounds.end);
    let (status, retry_after, reset, detail) = match binding {
        Some((limit, usage)) => (
            limit.status,
            usage.bounds.seconds_to_reset(now),
            usage.bounds.end,
            format!(
                "Consumer {} has used all {} requests of limit \"{}\" ({}); it resets at {}.",
                caller.consumer.name,
                limit.requests,
                limit.name,
                limit.window_text,
                format_rfc3339(usage.bounds.end)
            ),
        ),
        None => (402, 1, now + 1, "The quota is exceeded.".to_string()),
    };
    let mut p = Problem::new(
        QUOTA_EXCEEDED,
        "Request cannot be satisfied as assigned quota has been exceeded",
        status,
        detail,
    )
    .of(caller);
    p.violated_policies = Some(violated.iter().map(|(l, _)| l.name.as_str()).collect());
    p.reset = Some(format_rfc3339(reset));
    p.retry_after = Some(retry_after);
    let mut headers = rate_limit_headers(caller.plan, usages, now);
    headers.push(("retry-after", retry_after.to_string()));
    p.reply(headers, grpc)
}

/// The usage endpoint's answer: the caller's consumer, plan, standing and every limit.
pub fn usage(caller: &Caller, standing: &str, usages: &[Usage]) -> Reply {
    let limits: Vec<String> = caller
        .plan
        .limits
        .iter()
        .zip(usages)
        .map(|(limit, usage)| {
            let mut item = Json::object();
            item.str("name", &limit.name)
                .num("requests", limit.requests)
                .str("window", &limit.window_text)
                .num("used", usage.used.min(limit.requests))
                .num("remaining", usage.remaining())
                .str("reset", &format_rfc3339(usage.bounds.end));
            item.end()
        })
        .collect();
    let mut document = Json::object();
    document
        .str("consumer", &caller.consumer.name)
        .str("plan", &caller.plan.name)
        .str("status", standing)
        .raw("limits", &format!("[{}]", limits.join(",")));
    let body = document.end();
    Reply {
        status: 200,
        headers: vec![
            ("content-type", "application/json".to_string()),
            ("cache-control", "no-store".to_string()),
        ],
        body,
        grpc_status: None,
    }
}

/// 405 for anything but GET/HEAD on the usage path.
pub fn usage_method_not_allowed() -> Reply {
    Problem::new(
        "urn:tollgate:problem:method-not-allowed",
        "Method not allowed",
        405,
        "The usage endpoint answers GET.".into(),
    )
    .reply(vec![("allow", "GET, HEAD".into())], false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{Credential, Presented};
    use crate::decision::{decide, Decision, Exhausted};
    use crate::store::MemoryStore;
    use serde_json::Value;

    const CONFIG: &str = r#"{
      "credentials": [{"header": "x-api-key"}, {"authorization": "Bearer"}],
      "plans": {
        "free": { "limits": [ {"name": "daily", "requests": 3, "window": "day"},
                              {"name": "burst", "requests": 1, "window": "1s", "status": 429} ] }
      },
      "consumers": {
        "acme": { "plan": "free", "keys": ["acme"] },
        "initech": { "plan": "free", "keys": ["initech"], "status": "suspended" },
        "globex": { "plan": "free", "keys": ["globex"], "expires_at": "2026-01-01T00:00:00Z" }
      }
    }"#;
    // 2026-11-25T13:00:00Z
    const NOW: i64 = 1_795_611_600;

    fn key(k: &str) -> Credential {
        Credential::Key(Presented {
            key: k.as_bytes().to_vec(),
            source: 0,
        })
    }

    fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
        reply
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn deny(config: &Config, store: &MemoryStore, credential: Credential, now: i64) -> Reply {
        match decide(config, credential, now, store, &Exhausted::default()) {
            Decision::Deny(d) => refusal(config, &d, now, false),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn allowed_requests_get_ratelimit_fields() {
        let config = Config::from_json(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        crate::quota::create_records(&config, &store).unwrap();
        let Decision::Allow { caller, usages } =
            decide(&config, key("acme"), NOW, &store, &Exhausted::default())
        else {
            panic!()
        };
        let headers = rate_limit_headers(caller.plan, &usages, NOW);
        assert_eq!(
            headers,
            vec![
                (
                    "ratelimit-policy",
                    "\"daily\";q=3;w=86400, \"burst\";q=1;w=1".to_string()
                ),
                (
                    "ratelimit",
                    "\"daily\";r=2;t=39600, \"burst\";r=0;t=1".to_string()
                ),
            ]
        );
    }

    #[test]
    fn quota_exceeded_is_problem_json_with_the_binding_limit() {
        let config = Config::from_json(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        crate::quota::create_records(&config, &store).unwrap();
        assert!(matches!(
            decide(&config, key("acme"), NOW, &store, &Exhausted::default()),
            Decision::Allow { .. }
        ));
        // Same second: only the burst limit is exhausted -> its status 429, Retry-After 1.
        let reply = deny(&config, &store, key("acme"), NOW);
        assert_eq!(reply.status, 429);
        assert_eq!(header(&reply, "retry-after"), Some("1"));
        assert_eq!(header(&reply, "content-type"), Some(PROBLEM_JSON));
        assert_eq!(
            header(&reply, "ratelimit"),
            Some("\"daily\";r=2;t=39600, \"burst\";r=0;t=1")
        );
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["type"], QUOTA_EXCEEDED);
        assert_eq!(body["status"], 429);
        assert_eq!(body["violated-policies"], serde_json::json!(["burst"]));
        assert_eq!(body["consumer"], "acme");
        assert_eq!(body["plan"], "free");
        assert_eq!(body["reset"], "2026-11-25T13:00:01Z");
        assert_eq!(body["retry-after"], 1);
        // Spend the daily quota: both limits violated, daily resets last -> 402, Retry-After to midnight.
        assert!(matches!(
            decide(&config, key("acme"), NOW + 1, &store, &Exhausted::default()),
            Decision::Allow { .. }
        ));
        assert!(matches!(
            decide(&config, key("acme"), NOW + 2, &store, &Exhausted::default()),
            Decision::Allow { .. }
        ));
        let reply = deny(&config, &store, key("acme"), NOW + 2);
        assert_eq!(reply.status, 402);
        assert_eq!(header(&reply, "retry-after"), Some("39598"));
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            body["violated-policies"],
            serde_json::json!(["daily", "burst"])
        );
        assert_eq!(body["reset"], "2026-11-26T00:00:00Z");
        assert!(body["detail"].as_str().unwrap().contains("\"daily\" (day)"));
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\u000ad\u0001é""#);
        let parsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
        let mut doc = Json::object();
        doc.str("k", "v")
            .num("n", 3)
            .raw("a", &string_array(&["x", "y"]));
        let parsed: Value = serde_json::from_str(&doc.end()).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"k": "v", "n": 3, "a": ["x", "y"]})
        );
    }

    #[test]
    fn credential_and_standing_refusals() {
        let config = Config::from_json(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        crate::quota::create_records(&config, &store).unwrap();
        let cases = [
            (Credential::Missing, 401, MISSING_CREDENTIAL),
            (Credential::Malformed("x"), 401, INVALID_CREDENTIAL),
            (key("secret-nobody-has"), 401, INVALID_CREDENTIAL),
            (key("initech"), 402, SUSPENDED),
            (key("globex"), 402, EXPIRED),
        ];
        for (credential, status, kind) in cases {
            let reply = deny(&config, &store, credential, NOW);
            assert_eq!(reply.status, status);
            let body: Value = serde_json::from_str(&reply.body).unwrap();
            assert_eq!(
                (body["type"].as_str(), body["status"].as_u64()),
                (Some(kind), Some(status.into()))
            );
            assert!(body["title"].is_string() && body["detail"].is_string());
            assert!(
                !reply.body.contains("secret-nobody-has"),
                "never echo a key"
            );
            assert_eq!(header(&reply, "www-authenticate").is_some(), status == 401);
            assert_eq!(
                header(&reply, "ratelimit"),
                None,
                "not counted, no RateLimit fields"
            );
        }
        let expired = deny(&config, &store, key("globex"), NOW);
        let body: Value = serde_json::from_str(&expired.body).unwrap();
        assert_eq!(body["expired-at"], "2026-01-01T00:00:00Z");
        assert_eq!(body["consumer"], "globex");
    }

    #[test]
    fn bodies_are_compact_json_as_documented() {
        // The README shows these bodies byte for byte; JSON escaping stops below U+0020.
        let config = Config::from_json(CONFIG.as_bytes()).unwrap();
        let store = MemoryStore::new();
        crate::quota::create_records(&config, &store).unwrap();
        assert_eq!(
            deny(&config, &store, Credential::Missing, NOW).body,
            r#"{"type":"urn:tollgate:problem:missing-credential","title":"Missing API key","status":401,"detail":"This API requires an API key."}"#
        );
        assert_eq!(
            deny(&config, &store, key("initech"), NOW).body,
            r#"{"type":"urn:tollgate:problem:subscription-suspended","title":"Subscription suspended","status":402,"detail":"The subscription of consumer initech is suspended.","consumer":"initech","plan":"free"}"#
        );
        let mut out = String::new();
        push_string(&mut out, "a \"b\"\\ \u{1f}\n\u{7f}é");
        assert_eq!(out, r#""a \"b\"\\ \u001f\u000a"#.to_string() + "\u{7f}é\"");
    }

    #[test]
    fn a_store_error_is_unavailable_for_grpc_clients() {
        let config = Config::from_json(CONFIG.as_bytes()).unwrap();
        let denial = match decide(
            &config,
            key("acme"),
            NOW,
            &crate::store::FailingStore,
            &Exhausted::default(),
        ) {
            Decision::Deny(d) => d,
            other => panic!("a failing store refuses, got {other:?}"),
        };
        let grpc = refusal(&config, &denial, NOW, true);
        assert_eq!(grpc.grpc_status, Some(grpc::UNAVAILABLE));
        assert_eq!(header(&grpc, "retry-after"), Some("1"));
        let http = refusal(&config, &denial, NOW, false);
        assert_eq!((http.status, http.grpc_status), (503, None));
    }
}
