//! Stage 2: validation of the JSON model into the compiled [`super::Config`]; every error
//! names its field.

use crate::credentials::{challenge, Source};
use crate::duration::parse_ms;
use crate::names::{is_token, valid_cluster, valid_name, CLUSTER_RULE, MAX_NAME_LEN};
use crate::time::parse_rfc3339;
use crate::window::Window;

use super::entitlements::compile_settings;
use super::errors::ConfigError;
use super::events::compile as compile_events;
use super::keys::{parse_key, KeyBuilder};
use super::model::*;
use super::payments::compile as compile_payments;
use super::plan::*;
use super::raw::*;
use super::routes::{compile_llm, compile_routes, output_cap};
use super::secret::Env;

pub(super) fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "{field}: name `{name}` must be 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 _ - ."
        )))
    }
}

pub(super) fn compile_sources(raw: Option<Vec<RawSource>>) -> Result<Vec<Source>, ConfigError> {
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

pub(super) fn compile_plan(name: &str, raw: RawPlan) -> Result<Plan, ConfigError> {
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
        let (size_field, size, unit) = limit_size(&field, &limit)?;
        if size > MAX_REQUESTS {
            return Err(ConfigError(format!(
                "{field}.{size_field}: at most {MAX_REQUESTS} (RateLimit fields carry at most 15 digits)"
            )));
        }
        // 0 is a pay-as-you-go limit: every request it counts is paid from prepaid credits.
        let prepaid = raw
            .credits
            .as_ref()
            .is_some_and(|c| c.contains(&limit.name));
        if size == 0 && !prepaid {
            return Err(ConfigError(format!(
                "{field}.{size_field}: must be greater than 0 (a plan with no limits is unlimited; suspend a consumer to refuse it; 0 with the limit in `credits` is pay-as-you-go)"
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
        let per_envoy = match limit.scope.as_deref() {
            None | Some("fleet") => false,
            Some("envoy") => true,
            Some(other) => {
                return Err(ConfigError(format!(
                    "{field}.scope: `{}` is not a scope (`fleet` or `envoy`)",
                    other.chars().take(64).collect::<String>()
                )))
            }
        };
        limits.push(Limit {
            name: limit.name,
            requests: size,
            unit,
            window,
            window_text: limit.window,
            status,
            per_envoy,
        });
    }
    let upgrade_url = compile_https_url(&format!("plans.{name}.upgrade_url"), raw.upgrade_url)?;
    let credits = credit_cover(name, &limits, raw.credits)?;
    Ok(Plan {
        name: name.to_string(),
        limits,
        upgrade_url,
        credits,
        max_output_tokens: output_cap(
            &format!("plans.{name}.max_output_tokens"),
            raw.max_output_tokens,
        )?,
    })
}

/// Fleet mode's prepaid credits (docs/payments.md, "Fleet mode"): a request that only limits
/// credits stand in for refuse is paid by one call that draws its cost from the fleet-wide
/// balance and counts it in its other limits, in the store. So, for now, a plan with credits
/// counts every limit in the store (no `scope: envoy`), and its credits stand in for request
/// limits of at least 1 (no pay-as-you-go, no units settled from the response).
fn fleet_credits(plans: &[Plan]) -> Result<(), ConfigError> {
    for plan in plans.iter().filter(|p| !p.credits.is_empty()) {
        if let Some(limit) = plan.limits.iter().find(|l| l.per_envoy) {
            return Err(ConfigError(format!(
                "plans.{}.limits: `{}` is counted per Envoy (scope: envoy), which a plan with \
                 credits cannot have in fleet mode (store.rls) yet",
                plan.name, limit.name
            )));
        }
        for i in &plan.credits {
            let Some(limit) = plan.limits.get(*i) else {
                continue;
            };
            if limit.unit != Unit::Requests || limit.requests == 0 {
                return Err(ConfigError(format!(
                    "plans.{}.credits: in fleet mode (store.rls), credits stand in for request \
                     limits of at least 1 for now; `{}` is not one",
                    plan.name, limit.name
                )));
            }
        }
    }
    Ok(())
}

/// `plans.<name>.credits`: the limits prepaid credits stand in for, by name, each once, all
/// counting one unit (a credit is one unit's worth: a request, a token, a named unit).
fn credit_cover(
    name: &str,
    limits: &[Limit],
    raw: Option<Vec<String>>,
) -> Result<Vec<usize>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    if raw.is_empty() {
        return Err(ConfigError(format!(
            "plans.{name}.credits: name at least one limit (or leave `credits` out)"
        )));
    }
    let mut cover = Vec::with_capacity(raw.len());
    for (i, limit_name) in raw.iter().enumerate() {
        let field = format!("plans.{name}.credits[{i}]");
        let Some(at) = limits.iter().position(|l| l.name == *limit_name) else {
            return Err(ConfigError(format!(
                "{field}: plan `{name}` has no limit `{}`",
                limit_name.chars().take(64).collect::<String>()
            )));
        };
        if cover.contains(&at) {
            return Err(ConfigError(format!("{field}: listed twice")));
        }
        // One balance, in one unit: a credit is a request, a token or a named unit's worth.
        let unit = |i: &usize| limits.get(*i).map(|l| &l.unit);
        if let (Some(first), Some(this)) = (cover.first().and_then(unit), unit(&at)) {
            if first != this {
                return Err(ConfigError(format!(
                    "{field}: credits are counted in one unit; `{limit_name}` counts {}, the limits before it {}",
                    this.name(),
                    first.name()
                )));
            }
        }
        cover.push(at);
    }
    Ok(cover)
}

/// A limit's size and unit: exactly one of `requests`, `tokens`, `units` (with `unit`).
fn limit_size(field: &str, limit: &RawLimit) -> Result<(&'static str, u64, Unit), ConfigError> {
    let sizes = [
        ("requests", limit.requests),
        ("tokens", limit.tokens),
        ("units", limit.units),
    ];
    let mut given = sizes.iter().filter_map(|(f, v)| v.map(|v| (*f, v)));
    let (Some((size_field, size)), None) = (given.next(), given.next()) else {
        return Err(ConfigError(format!(
            "{field}: give exactly one of `requests`, `tokens` or `units` (with `unit`)"
        )));
    };
    let unit = match (size_field, &limit.unit) {
        ("requests", None) => Unit::Requests,
        ("tokens", None) => Unit::Tokens,
        ("units", Some(unit)) => {
            if unit == "requests" || unit == "tokens" {
                return Err(ConfigError(format!(
                    "{field}.unit: write `\"{unit}\": N` instead of a unit named `{unit}`"
                )));
            }
            check_name(&format!("{field}.unit"), unit)?;
            Unit::Named(unit.as_str().into())
        }
        ("units", None) => {
            return Err(ConfigError(format!(
                "{field}.unit: `units` needs the unit's name (e.g. \"unit\": \"credits\")"
            )))
        }
        _ => {
            return Err(ConfigError(format!(
                "{field}.unit: only with `units` (`requests` and `tokens` name their unit)"
            )))
        }
    };
    Ok((size_field, size, unit))
}

pub use crate::names::MAX_URL_LEN;

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

pub(super) fn plan_index(plans: &[Plan], field: &str, name: &str) -> Result<usize, ConfigError> {
    plans.iter().position(|p| p.name == name).ok_or_else(|| {
        let known: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        ConfigError(format!(
            "{field}: plan `{name}` does not exist (plans: {})",
            known.join(", ")
        ))
    })
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

pub(super) fn compile_identity_header(
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

pub(super) fn compile_usage_path(path: Option<String>) -> Result<Option<String>, ConfigError> {
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

/// Validates `store.rls` (fleet mode); every error names its field.
pub(super) fn compile_rls(raw: RawRls) -> Result<Rls, ConfigError> {
    let cluster = raw.cluster;
    if !valid_cluster(&cluster) {
        return Err(ConfigError(format!("store.rls.cluster: {CLUSTER_RULE}")));
    }
    let domain = raw.domain.unwrap_or_else(|| DEFAULT_RLS_DOMAIN.to_string());
    if !valid_name(&domain) {
        return Err(ConfigError(format!(
            "store.rls.domain: `{domain}` must be 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 _ - ."
        )));
    }
    let timeout_ms = match raw.timeout {
        None => DEFAULT_RLS_TIMEOUT_MS,
        Some(text) => parse_timeout(&text).ok_or_else(|| {
            ConfigError(format!(
                "store.rls.timeout: `{text}` must be a duration like \"50ms\" or \"1s\", \
                 from 1ms to {MAX_RLS_TIMEOUT_MS}ms"
            ))
        })?,
    };
    let lease = raw.lease.unwrap_or(DEFAULT_LEASE);
    if lease == 0 || lease > MAX_LEASE {
        return Err(ConfigError(format!(
            "store.rls.lease: {lease} must be from 1 (one store call per request) to {MAX_LEASE}"
        )));
    }
    Ok(Rls {
        cluster,
        domain,
        timeout_ms,
        lease,
    })
}

/// `50ms`, `1s` ([`crate::duration`]): milliseconds, from 1 to [`MAX_RLS_TIMEOUT_MS`].
fn parse_timeout(text: &str) -> Option<u64> {
    parse_ms(text).filter(|ms| (1..=MAX_RLS_TIMEOUT_MS).contains(ms))
}

/// `store` (fleet mode) and what it rules out: `on_store_error: local` without it.
fn compile_store(
    raw: Option<RawStore>,
    on_store_error: OnStoreError,
) -> Result<Option<Rls>, ConfigError> {
    let store = match raw {
        Some(store) => Some(compile_rls(store.rls)?),
        None => None,
    };
    if store.is_none() && on_store_error == OnStoreError::Local {
        return Err(ConfigError(
            "on_store_error: `local` counts in this Envoy's shared data when the fleet store \
             (store.rls) fails; without store.rls counts are always local: use deny or allow"
                .into(),
        ));
    }
    Ok(store)
}

/// `consumer_header` and `plan_header`: two different headers, neither a credential source.
fn compile_identity_headers(
    consumer_header: Option<String>,
    plan_header: Option<String>,
    credentials: &[Source],
) -> Result<(String, String), ConfigError> {
    let consumer_header = compile_identity_header(
        "consumer_header",
        consumer_header,
        "x-tollgate-consumer",
        credentials,
    )?;
    let plan_header =
        compile_identity_header("plan_header", plan_header, "x-tollgate-plan", credentials)?;
    if consumer_header == plan_header {
        return Err(ConfigError(format!(
            "plan_header: `{plan_header}` is also the consumer_header"
        )));
    }
    Ok((consumer_header, plan_header))
}

/// One consumer of `consumers` (its keys are the key map's), at `index`.
fn compile_consumer(
    index: usize,
    name: &str,
    consumer: &RawConsumer<'_>,
    plans: &[Plan],
) -> Result<Consumer, ConfigError> {
    let field = || format!("consumers.{name}");
    check_name(&field(), name)?;
    if name == ANONYMOUS {
        return Err(ConfigError(format!(
            "{}: the name `{ANONYMOUS}` is reserved for requests without a credential (see anonymous_plan)",
            field()
        )));
    }
    let plan = match plans.iter().position(|p| *p.name == *consumer.plan) {
        Some(plan) => plan,
        None => plan_index(plans, &format!("{}.plan", field()), &consumer.plan)?,
    };
    let instant = |member: &str, text: &Option<String>| match text {
        Some(text) => parse_rfc3339(text)
            .map(Some)
            .map_err(|e| ConfigError(format!("{}.{member}: {e}", field()))),
        None => Ok(None),
    };
    let expires_at = instant("expires_at", &consumer.expires_at)?;
    let status = match (consumer.status, &consumer.grace_until) {
        (Some(RawStatus::PastDue), grace) => Status::PastDue {
            grace_until: instant("grace_until", grace)?,
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
    let billing_url = compile_https_url(
        &format!("{}.billing_url", field()),
        consumer.billing_url.clone(),
    )?
    .map(String::into_boxed_str);
    Ok(Consumer {
        id: index,
        store_key: consumer_store_key(name),
        plan,
        status,
        expires_at,
        billing_url,
    })
}

pub(super) fn compile(raw: RawConfig<'_>, env: Env) -> Result<Config, ConfigError> {
    let credentials = compile_sources(raw.credentials)?;
    let (consumer_header, plan_header) =
        compile_identity_headers(raw.consumer_header, raw.plan_header, &credentials)?;
    let usage_path = compile_usage_path(raw.usage_path)?;
    let utc_offset = match &raw.calendar_utc_offset {
        Some(text) => parse_utc_offset(text)?,
        None => 0,
    };
    let mut plans = Vec::with_capacity(raw.plans.0.len());
    let mut plan_alerts = Vec::with_capacity(raw.plans.0.len());
    for (name, mut plan) in raw.plans.0 {
        plan_alerts.push(plan.alerts.take());
        plans.push(compile_plan(&name, plan)?);
    }
    if plans.is_empty() {
        return Err(ConfigError("plans: at least one plan is required".into()));
    }
    let mut consumers = Consumers::default();
    let (mut plain, mut hashed) = (0, 0);
    for key in raw.consumers.iter().flat_map(|(_, c)| c.keys.iter()) {
        if key.starts_with("sha256:") {
            hashed += 1;
        } else {
            plain += 1;
        }
    }
    let mut keys = KeyBuilder::with_capacity(plain, hashed);
    for (name, consumer) in raw.consumers.into_members() {
        let index = consumers.len();
        let compiled = compile_consumer(index, &name, &consumer, &plans)?;
        let name = compiled.name();
        for (k, key) in consumer.keys.iter().enumerate() {
            let key_field = || format!("consumers.{name}.keys[{k}]");
            let form = parse_key(key).map_err(|e| ConfigError(format!("{}: {e}", key_field())))?;
            if let Err(other) = keys.add(form, index) {
                let owner = consumers.get(other).map_or(name, |c: &Consumer| c.name());
                return Err(ConfigError(format!(
                    "{}: this key is listed twice (also a key of consumer `{owner}`)",
                    key_field()
                )));
            }
        }
        consumers.push(compiled);
    }
    let keys = keys.build();
    let anonymous = match raw.anonymous_plan {
        Some(plan_name) => {
            let plan = plan_index(&plans, "anonymous_plan", &plan_name)?;
            consumers.push(Consumer {
                id: consumers.len(),
                plan,
                status: Status::Active,
                expires_at: None,
                billing_url: None,
                store_key: format!("{STORE_PREFIX}{ANONYMOUS}").into_boxed_str(),
            });
            Some(consumers.len() - 1)
        }
        None => None,
    };
    let events = compile_events(raw.events, &plans, plan_alerts, env)?;
    let store = compile_store(raw.store, raw.on_store_error)?;
    let llm = compile_llm(raw.llm)?;
    let routes = compile_routes(raw.routes, llm.as_ref())?;
    let payments = compile_payments(raw.payments, env)?;
    // A payment header is never an API key's: it is read as a payment, and removed.
    if payments.is_some() {
        let payment_header = |s: &Source| matches!(s, Source::Header(name) if crate::paymentauth::PAYMENT_HEADERS.contains(&name.as_str()));
        if let Some(i) = credentials.iter().position(payment_header) {
            return Err(ConfigError(format!(
                "credentials[{i}].header: a payment header (PAYMENT-SIGNATURE, X-PAYMENT, \
                 Payment-Authorization) cannot carry API keys while `payments` is configured"
            )));
        }
    }
    // `Authorization: Payment` is an HTTP Payment credential, never an API key.
    if payments.as_ref().is_some_and(|p| p.http_payment.is_some()) {
        if let Some(i) = credentials
            .iter()
            .position(|s| matches!(s, Source::Authorization(scheme) if scheme == "payment"))
        {
            return Err(ConfigError(format!(
                "credentials[{i}].authorization: the `Payment` scheme carries HTTP Payment \
                 credentials (payments.http_payment), not API keys"
            )));
        }
    }
    if let Some(plan) = plans.iter().find(|p| !p.credits.is_empty()) {
        if payments.is_none() {
            return Err(ConfigError(format!(
                "plans.{}.credits: credits are bought through `payments`: configure it too",
                plan.name
            )));
        }
    }
    if let Some(plan) = anonymous
        .and_then(|i| consumers.get(i))
        .and_then(|c| plans.get(c.plan))
        .filter(|p| !p.credits.is_empty())
    {
        return Err(ConfigError(format!(
            "anonymous_plan: plan `{}` has credits, which a caller without a key would buy for \
             everyone without one (and any caller could make the gateway call the facilitator): \
             give the anonymous plan one without `credits`",
            plan.name
        )));
    }
    if payments.is_some() && store.is_some() {
        fleet_credits(&plans)?;
    }
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
        events,
        store,
        entitlements: raw
            .entitlements
            .map(|raw| compile_settings(raw, env))
            .transpose()?,
        awaiting_snapshot: None,
        routes,
        llm,
        payments,
        keys,
    })
}
