//! What callers see: RateLimit fields (draft-ietf-httpapi-ratelimit-headers-10) on every
//! response to a counted consumer, and RFC 9457 `application/problem+json` refusals.

use std::rc::Rc;

use serde::Serialize;

use crate::config::{Config, Limit, Payments, Plan, Standing, Unit};
use crate::decision::{Caller, Denial};
use crate::paymentauth;
use crate::quota::Usage;
use crate::time::format_rfc3339;

pub const PROBLEM_JSON: &str = "application/problem+json";
pub const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";
pub const MISSING_CREDENTIAL: &str = "urn:tollgate:problem:missing-credential";
pub const INVALID_CREDENTIAL: &str = "urn:tollgate:problem:invalid-credential";
pub const SUSPENDED: &str = "urn:tollgate:problem:subscription-suspended";
pub const EXPIRED: &str = "urn:tollgate:problem:subscription-expired";
pub const PAYMENT_REQUIRED: &str = "urn:tollgate:problem:payment-required";
pub const UNAVAILABLE: &str = "urn:tollgate:problem:quota-unavailable";
pub const INVALID_BODY: &str = "urn:tollgate:problem:invalid-body";
pub const BODY_TOO_LARGE: &str = "urn:tollgate:problem:body-too-large";
pub const PAYMENT_MALFORMED: &str = "urn:tollgate:problem:payment-malformed";
pub const PAYMENT_REFUSED: &str = "urn:tollgate:problem:payment-refused";
pub const PAYMENT_PENDING: &str = "urn:tollgate:problem:payment-pending";
pub const PAYMENT_UNRESOLVED: &str = "urn:tollgate:problem:payment-unresolved";
/// The HTTP Payment scheme's own problem types (all 402, with fresh challenges).
pub const CREDENTIAL_MALFORMED: &str = "https://paymentauth.org/problems/malformed-credential";
pub const CHALLENGE_INVALID: &str = "https://paymentauth.org/problems/invalid-challenge";
pub const CHALLENGE_EXPIRED: &str = "https://paymentauth.org/problems/payment-expired";
pub const VERIFICATION_FAILED: &str = "https://paymentauth.org/problems/verification-failed";
/// The x402 `error` of a 402 that offers credits.
pub const CREDITS_OFFERED: &str = "quota spent: buy credits";

/// The `Link` relation types of the remedy links (RFC 8288): IANA's registered `payment` ("a
/// resource where payment is accepted", which both pages are) for generic clients, and an
/// extension relation type (an absolute URI, as RFC 8288 section 2.1.2 requires) that says
/// which page it is.
pub const BILLING_RELATION: &str = "payment urn:tollgate:rel:billing";
pub const UPGRADE_RELATION: &str = "payment urn:tollgate:rel:upgrade";

/// `<url>; rel="<relation>"`. The URL was validated at configuration time (RFC 3986
/// characters only, so no `>` or `"`), and never comes from the request.
pub fn link(url: &str, relation: &str) -> String {
    let mut out = String::with_capacity(url.len() + relation.len() + 10);
    out.push('<');
    out.push_str(url);
    out.push_str(">; rel=\"");
    out.push_str(relation);
    out.push('"');
    out
}

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

/// The RateLimit fields of a response to a counted consumer. The policy is the same for every
/// request of a plan (within a month, for monthly limits), so it is rendered once per VM and
/// shared ([`crate::memo::Memo::policy`]); the state is this request's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitFields {
    /// `RateLimit-Policy`, unless the configuration turned it off.
    pub policy: Option<Rc<str>>,
    /// `RateLimit`.
    pub state: String,
}

impl RateLimitFields {
    /// As header name/value pairs, for a local reply.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::with_capacity(3);
        if let Some(policy) = &self.policy {
            headers.push(("ratelimit-policy", policy.to_string()));
        }
        headers.push(("ratelimit", self.state.clone()));
        headers
    }
}

/// `RateLimit-Policy`: `"name";q=<requests>;w=<window seconds>` per limit, in plan order. `w` is
/// the length of the window the usage is in (for `month`, the current month's).
pub fn rate_limit_policy(plan: &Plan, usages: &[Usage]) -> String {
    let mut out = Vec::with_capacity(plan.limits.len() * 40);
    for (limit, usage) in plan.limits.iter().zip(usages) {
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        // Limit names are validated to [A-Za-z0-9_.-]: safe inside a structured-field string.
        out.push(b'"');
        out.extend_from_slice(limit.name.as_bytes());
        out.extend_from_slice(b"\";q=");
        push_decimal(&mut out, limit.requests);
        out.extend_from_slice(b";w=");
        push_decimal(&mut out, positive(usage.bounds.seconds()));
        // The draft's quota unit, for limits that do not count requests (its default).
        if limit.unit != Unit::Requests {
            out.extend_from_slice(b";qu=\"");
            out.extend_from_slice(limit.unit.name().as_bytes());
            out.push(b'"');
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// `RateLimit`: `"name";r=<remaining>;t=<seconds to reset>` per limit, in plan order.
pub fn rate_limit_state(plan: &Plan, usages: &[Usage], now: i64) -> String {
    let mut out = Vec::with_capacity(plan.limits.len() * 40);
    for (limit, usage) in plan.limits.iter().zip(usages) {
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        out.push(b'"');
        out.extend_from_slice(limit.name.as_bytes());
        out.extend_from_slice(b"\";r=");
        push_decimal(&mut out, usage.remaining());
        out.extend_from_slice(b";t=");
        push_decimal(&mut out, positive(usage.bounds.seconds_to_reset(now)));
    }
    // Names and digits only: ASCII.
    String::from_utf8(out).unwrap_or_default()
}

fn positive(seconds: i64) -> u64 {
    u64::try_from(seconds).unwrap_or(0)
}

/// Appends `n` in decimal: the request path's integers, without `core::fmt` (which costs more
/// than everything else a request's own code does). `itoa` is what serde_json writes numbers
/// with, so it is in the .wasm already.
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// An RFC 9457 problem document; members that do not apply are left out.
#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    consumer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<&'a str>,
    #[serde(rename = "violated-policies", skip_serializing_if = "Option::is_none")]
    violated_policies: Option<Vec<&'a str>>,
    /// A priced request's refusal: the binding limit's unit, what the request needed and
    /// what is left of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    needed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reset: Option<String>,
    #[serde(rename = "retry-after", skip_serializing_if = "Option::is_none")]
    retry_after: Option<i64>,
    #[serde(rename = "expired-at", skip_serializing_if = "Option::is_none")]
    expired_at: Option<String>,
    #[serde(rename = "grace-until", skip_serializing_if = "Option::is_none")]
    grace_until: Option<String>,
    #[serde(rename = "billing-url", skip_serializing_if = "Option::is_none")]
    billing_url: Option<&'a str>,
    /// x402 v1 members of a refusal credits can cure: the offers for a v1 client.
    #[serde(rename = "x402Version", skip_serializing_if = "Option::is_none")]
    x402_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accepts: Option<&'a [crate::x402::RequirementsV1]>,
    /// Last of the members a quota refusal has: [`QuotaRefusal`] appends `retry-after`.
    #[serde(rename = "upgrade-url", skip_serializing_if = "Option::is_none")]
    upgrade_url: Option<&'a str>,
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
            unit: None,
            needed: None,
            remaining: None,
            reset: None,
            retry_after: None,
            expired_at: None,
            grace_until: None,
            billing_url: None,
            x402_version: None,
            error: None,
            accepts: None,
            upgrade_url: None,
        }
    }

    /// The offers of prepaid credits, for an x402 v1 client (when a pack has a v1 network).
    fn offering(mut self, payments: &'a Payments, error: &'a str) -> Self {
        if !payments.v1_body.accepts.is_empty() {
            self.x402_version = Some(1);
            self.error = Some(error);
            self.accepts = Some(&payments.v1_body.accepts);
        }
        self
    }

    fn of(mut self, caller: &Caller<'a>) -> Self {
        self.consumer = Some(caller.consumer.name());
        self.plan = Some(&caller.plan.name);
        self
    }

    /// A refusal for the consumer's standing: its billing page, if one is configured, as a
    /// member and as a `Link` header.
    fn standing_reply(mut self, config: &'a Config, caller: &Caller<'a>, grpc: bool) -> Reply {
        let mut headers = Vec::new();
        if let Some(url) = config.billing_url_of(caller.consumer) {
            self.billing_url = Some(url);
            headers.push(("link", link(url, BILLING_RELATION)));
        }
        self.reply(headers, grpc)
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
        let body = to_json(&self);
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
                caller.consumer.name()
            ),
        )
        .of(caller)
        .standing_reply(config, caller, grpc),
        Denial::Expired { caller, expired_at } => {
            let mut p = Problem::new(
                EXPIRED,
                "Subscription expired",
                402,
                format!(
                    "The subscription of consumer {} expired at {}.",
                    caller.consumer.name(),
                    format_rfc3339(*expired_at)
                ),
            )
            .of(caller);
            p.expired_at = Some(format_rfc3339(*expired_at));
            p.standing_reply(config, caller, grpc)
        }
        Denial::PaymentRequired {
            caller,
            grace_until,
        } => {
            let since = match grace_until {
                Some(at) => format!(" (the grace period ended at {})", format_rfc3339(*at)),
                None => String::new(),
            };
            let mut p = Problem::new(
                PAYMENT_REQUIRED,
                "Payment required",
                402,
                format!(
                    "The payment for the subscription of consumer {} is past due{since}; \
                     the payment method needs attention.",
                    caller.consumer.name()
                ),
            )
            .of(caller);
            p.grace_until = grace_until.map(format_rfc3339);
            p.standing_reply(config, caller, grpc)
        }
        Denial::QuotaExceeded { caller, usages } => {
            quota_exceeded(config, caller, usages, now, grpc)
        }
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
        Denial::EntitlementsUnavailable { retry_after } => {
            // Not a 401: the key may well be valid; the gateway cannot tell yet.
            let mut p = Problem::new(
                UNAVAILABLE,
                "Quota temporarily unavailable",
                503,
                "The consumers of this API are not loaded yet, so the API key cannot be \
                 checked; try again shortly."
                    .into(),
            );
            p.retry_after = Some(i64::try_from(*retry_after).unwrap_or(i64::MAX));
            p.reply(vec![("retry-after", retry_after.to_string())], grpc)
        }
    }
}

fn quota_exceeded(
    config: &Config,
    caller: &Caller,
    usages: &[Usage],
    now: i64,
    grpc: bool,
) -> Reply {
    let policy = config
        .ratelimit_policy
        .then(|| rate_limit_policy(caller.plan, usages).into());
    QuotaRefusal::new(caller, usages, grpc, policy, config.payments.as_ref()).at(
        caller,
        usages,
        now,
        config.payments.as_ref(),
    )
}

/// A refusal for a spent quota, rendered up to its seconds. While a consumer stays refused
/// with the same usages, only `Retry-After` and the RateLimit `t` values change from one
/// request to the next: [`QuotaRefusal::at`] fills them in without rendering the document
/// again, so that a flood of refused requests costs little (the memo keeps one per consumer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRefusal {
    status: u16,
    grpc: bool,
    /// problem+json: the body up to the value of `retry-after`; gRPC: the `grpc-message`.
    head: String,
    /// When the binding limit resets.
    reset: i64,
    policy: Option<Rc<str>>,
    /// The plan's upgrade page as a `Link` header value, rendered with the rest.
    link: Option<String>,
    /// Credits would cure it: the offers (x402 v2 `PAYMENT-REQUIRED`).
    offers: Option<String>,
    /// ... and the packs are offered as HTTP Payment challenges too (made for each reply: they
    /// name the consumer and expire).
    challenges: bool,
}

/// Whether prepaid credits would cure a refusal with these usages: the plan has credits and
/// every violated limit is one they stand in for.
pub fn curable(plan: &Plan, usages: &[Usage]) -> bool {
    !plan.credits.is_empty()
        && usages
            .iter()
            .enumerate()
            .all(|(i, u)| !u.violated || plan.credits.contains(&i))
}

impl QuotaRefusal {
    pub fn new(
        caller: &Caller,
        usages: &[Usage],
        grpc: bool,
        policy: Option<Rc<str>>,
        payments: Option<&Payments>,
    ) -> Self {
        let payments = payments.filter(|_| curable(caller.plan, usages));
        let violated: Vec<(&crate::config::Limit, &Usage)> = caller
            .plan
            .limits
            .iter()
            .zip(usages)
            .filter(|(_, u)| u.violated)
            .collect();
        // The binding limit is the violated one that resets last: retrying earlier is pointless.
        let binding = violated.iter().max_by_key(|(_, u)| u.bounds.end);
        let (status, reset, detail) = match binding {
            Some((limit, usage)) => (
                limit.status,
                usage.bounds.end,
                quota_detail(caller.consumer.name(), limit, usage),
            ),
            None => (402, i64::MIN, "The quota is exceeded.".to_string()),
        };
        // Payable: 402 whatever the limit's own status.
        let status = if payments.is_some() { 402 } else { status };
        let head = if grpc {
            detail
        } else {
            let mut p = Problem::new(
                QUOTA_EXCEEDED,
                "Request cannot be satisfied as assigned quota has been exceeded",
                status,
                detail,
            )
            .of(caller);
            p.violated_policies = Some(violated.iter().map(|(l, _)| l.name.as_str()).collect());
            // What a priced request needed: in the binding limit's unit, beside what is left.
            if let Some((limit, usage)) =
                binding.filter(|(l, u)| l.unit != Unit::Requests || u.cost != 1)
            {
                p.unit = Some(limit.unit.name());
                p.needed = Some(usage.cost);
                p.remaining = Some(usage.remaining());
            }
            p.reset = (reset != i64::MIN).then(|| format_rfc3339(reset));
            p.upgrade_url = caller.plan.upgrade_url.as_deref();
            if let Some(payments) = payments {
                p = p.offering(payments, CREDITS_OFFERED);
            }
            // `retry-after` is the last member: the document is this one without its closing
            // brace, then `,"retry-after":<seconds>}` (what serde_json would write).
            let mut body = to_json(&p);
            body.pop();
            body.push_str(",\"retry-after\":");
            body
        };
        let link = caller
            .plan
            .upgrade_url
            .as_deref()
            .map(|url| link(url, UPGRADE_RELATION));
        QuotaRefusal {
            status,
            grpc,
            head,
            reset,
            policy,
            link,
            offers: payments.and_then(|p| p.x402_offers()).map(str::to_string),
            challenges: payments.is_some_and(|p| p.http_payment.is_some()),
        }
    }

    /// The reply at `now`, for these usages (the ones it was rendered for), to `caller`.
    pub fn at(
        &self,
        caller: &Caller,
        usages: &[Usage],
        now: i64,
        payments: Option<&Payments>,
    ) -> Reply {
        let plan = caller.plan;
        let retry_after = if self.reset == i64::MIN {
            1
        } else {
            positive(self.reset.saturating_sub(now)).max(1)
        };
        let mut digits = Vec::with_capacity(8);
        push_decimal(&mut digits, retry_after);
        let seconds = String::from_utf8(digits).unwrap_or_default();
        let fields = RateLimitFields {
            policy: self.policy.clone(),
            state: rate_limit_state(plan, usages, now),
        };
        let mut headers = fields.headers();
        if let Some(link) = &self.link {
            headers.push(("link", link.clone()));
        }
        if let Some(offers) = &self.offers {
            headers.push(("payment-required", offers.clone()));
        }
        if let Some(payments) = payments.filter(|_| self.challenges) {
            payment_challenges(payments, caller.consumer.name(), now, &mut headers);
        }
        if self.grpc {
            headers.push(("retry-after", seconds));
            return Reply {
                status: self.status,
                headers,
                body: self.head.clone(),
                grpc_status: Some(grpc::RESOURCE_EXHAUSTED),
            };
        }
        let mut body = String::with_capacity(self.head.len() + seconds.len() + 1);
        body.push_str(&self.head);
        body.push_str(&seconds);
        body.push('}');
        headers.push(("retry-after", seconds));
        headers.push(("content-type", PROBLEM_JSON.to_string()));
        headers.push(("cache-control", "no-store".to_string()));
        Reply {
            status: self.status,
            headers,
            body,
            grpc_status: None,
        }
    }

    pub fn grpc(&self) -> bool {
        self.grpc
    }
}

#[derive(Serialize)]
struct UsageDocument<'a> {
    consumer: &'a str,
    plan: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    grace_until: Option<String>,
    limits: Vec<LimitUsage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credits: Option<u64>,
}

#[derive(Serialize)]
struct LimitUsage<'a> {
    name: &'a str,
    /// The limit's size, in its unit (named by `unit` unless it counts requests).
    requests: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
    window: &'a str,
    used: u64,
    remaining: u64,
    reset: String,
}

/// Serializes a document of ours. serde_json fails only on maps with non-string keys and on
/// a failing `Serialize` implementation, neither of which these documents have.
fn to_json(document: &impl Serialize) -> String {
    serde_json::to_string(document).unwrap_or_else(|e| {
        log::error!("cannot serialize a response document: {e}");
        String::from("{}")
    })
}

/// A quota refusal's `detail`: a spent limit, or one short of what a priced request needs.
fn quota_detail(consumer: &str, limit: &Limit, usage: &Usage) -> String {
    let unit = limit.unit.name();
    let reset = format_rfc3339(usage.bounds.end);
    if limit.requests == 0 {
        return format!(
            "Consumer {consumer}'s requests are paid from prepaid credits (limit \"{}\"), and too few are left for this one.",
            limit.name
        );
    }
    if usage.used >= usage.requests {
        format!(
            "Consumer {consumer} has used all {} {unit} of limit \"{}\" ({}); it resets at {reset}.",
            limit.requests, limit.name, limit.window_text
        )
    } else {
        format!(
            "Consumer {consumer} needs {} {unit} of limit \"{}\" ({}) for this request and has {} left; it resets at {reset}.",
            usage.cost,
            limit.name,
            limit.window_text,
            usage.remaining()
        )
    }
}

/// The usage endpoint's answer: the caller's consumer, plan, standing, every limit, and its
/// prepaid credits (`credits`, when its plan has them).
pub fn usage(caller: &Caller, standing: Standing, usages: &[Usage], credits: Option<u64>) -> Reply {
    let limits = caller
        .plan
        .limits
        .iter()
        .zip(usages)
        .map(|(limit, usage)| LimitUsage {
            name: &limit.name,
            requests: limit.requests,
            unit: (limit.unit != Unit::Requests).then(|| limit.unit.name()),
            window: &limit.window_text,
            used: usage.used.min(limit.requests),
            remaining: usage.remaining(),
            reset: format_rfc3339(usage.bounds.end),
        })
        .collect();
    let body = to_json(&UsageDocument {
        consumer: caller.consumer.name(),
        plan: &caller.plan.name,
        status: standing.name(),
        grace_until: standing.grace_until().map(format_rfc3339),
        limits,
        credits,
    });
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

/// 400 for an LLM request whose body tollgate cannot price: `field` is the JSON member at
/// fault (empty: the whole body), `why` says what is wrong with it (never its content).
pub fn invalid_body(field: &str, why: &str) -> Reply {
    let detail = if field.is_empty() {
        format!("The request body cannot be priced: {why}.")
    } else {
        format!("The request body cannot be priced: `{field}` {why}.")
    };
    Problem::new(INVALID_BODY, "Invalid request body", 400, detail).reply(Vec::new(), false)
}

/// 413 for an LLM request body over `llm.max_body_bytes`.
pub fn body_too_large(max: u64) -> Reply {
    Problem::new(
        BODY_TOO_LARGE,
        "Request body too large",
        413,
        format!("The request body is larger than {max} bytes, the most this API reads."),
    )
    .reply(Vec::new(), false)
}

/// What becomes of a request that carries a payment, when it is not served: `kind` one of
/// the `PAYMENT_*` problem types. A refused payment (402) comes with the offers again and
/// `error` saying why, so that a client can pay differently; a payment whose outcome is
/// pending or unknown (503) with `Retry-After`, never with offers (it must not be paid again).
pub fn payment_reply(
    payments: &Payments,
    caller: Option<&Caller>,
    kind: &'static str,
    detail: String,
    retry_after: Option<u64>,
    now: i64,
) -> Reply {
    let (status, title) = match kind {
        PAYMENT_MALFORMED => (400, "Malformed payment"),
        PAYMENT_REFUSED => (402, "Payment refused"),
        PAYMENT_UNRESOLVED => (409, "Payment unresolved"),
        CREDENTIAL_MALFORMED => (402, "Malformed credential"),
        CHALLENGE_INVALID => (402, "Invalid challenge"),
        CHALLENGE_EXPIRED => (402, "Payment expired"),
        VERIFICATION_FAILED => (402, "Verification failed"),
        _ => (503, "Payment pending"),
    };
    let mut headers = Vec::new();
    let error = detail.clone();
    let mut p = Problem::new(kind, title, status, detail);
    if let Some(caller) = caller {
        p = p.of(caller);
    }
    if status == 402 {
        if payments.x402 {
            headers.push((
                "payment-required",
                crate::x402::encode(&crate::x402::PaymentRequired {
                    x402_version: 2,
                    error: Some(error.clone()),
                    resource: payments.resource.clone(),
                    accepts: payments.packs.iter().map(|p| p.offer.clone()).collect(),
                }),
            ));
        }
        if let Some(caller) = caller {
            payment_challenges(payments, caller.consumer.name(), now, &mut headers);
        }
        p = p.offering(payments, &error);
        return p.reply(headers, false);
    }
    if let Some(seconds) = retry_after {
        p.retry_after = Some(i64::try_from(seconds).unwrap_or(i64::MAX));
        headers.push(("retry-after", seconds.to_string()));
    }
    p.reply(headers, false)
}

/// The HTTP Payment challenges of a payable 402 (`payments.http_payment`) for `consumer` at
/// `now`: one `WWW-Authenticate: Payment` per pack on an EVM chain, bound to the consumer
/// (`opaque`), expiring after the pack's `max_timeout_seconds`.
pub fn payment_challenges(
    payments: &Payments,
    consumer: &str,
    now: i64,
    headers: &mut Vec<(&'static str, String)>,
) {
    let Some(http) = &payments.http_payment else {
        return;
    };
    let opaque = paymentauth::opaque(consumer);
    for (pack, challenge) in payments.packs.iter().zip(&http.requests) {
        let Some(challenge) = challenge else {
            continue;
        };
        let seconds = i64::try_from(pack.offer.max_timeout_seconds).unwrap_or(i64::MAX);
        let expires = format_rfc3339(now.saturating_add(seconds));
        let bound = paymentauth::Bound {
            realm: &http.realm,
            method: paymentauth::METHOD,
            intent: paymentauth::INTENT,
            request: &challenge.request,
            expires: &expires,
            digest: "",
            opaque: &opaque,
        };
        let id = bound.id(http.secret.0.as_bytes());
        headers.push((
            paymentauth::WWW_AUTHENTICATE,
            paymentauth::challenge(&id, &bound, Some(&challenge.description)),
        ));
    }
}

/// 405 for anything but GET/HEAD on the usage path.
pub fn usage_method_not_allowed() -> Reply {
    Problem::new(
        "urn:tollgate:problem:method-not-allowed",
        "Method not allowed",
        405,
        "The usage endpoint answers GET and HEAD.".into(),
    )
    .reply(vec![("allow", "GET, HEAD".into())], false)
}

#[cfg(test)]
mod tests;
