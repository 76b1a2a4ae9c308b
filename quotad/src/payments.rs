//! Fleet mode's payments API, `tollgate.payments.v1.Payments` (docs/payments.md, "Fleet
//! mode"): a payment's claim, a consumer's prepaid balance and its ledger, in Redis, for every
//! Envoy of a fleet. Served beside `ShouldRateLimit` on the same listener (the same TLS, client
//! allow-list and `--allow-domains`); the messages are the filter's (`tollgate::paywire`),
//! the service glue tonic-build's (build.rs).
//!
//! Each call is checked whole before Redis is called (`INVALID_ARGUMENT` names the field),
//! then made of one Lua script per hash tag: a claim has its own (`{<domain>:<replay>}`), a
//! consumer's balance, ledger and open claims share its counters' (`{<domain>:<consumer>}`),
//! so that a draw takes from the balance and the other limits in one script, in one Redis
//! Cluster slot.

use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use prost::Message;
use redis::Script;
use tollgate::config::{MAX_REQUESTS, STORE_PREFIX};
use tollgate::names::valid_name;
use tollgate::paywire::{
    BalanceRequest, BalanceResponse, ClaimRequest, ClaimResponse, ClaimState, Claimed,
    CreditRequest, CreditResponse, DrawRequest, DrawResponse, MarkRequest, MarkResponse,
    KEEP_SETTLING_SECONDS, LEDGER_SECONDS, MAX_DIGEST_HEX, MAX_KEEP_SECONDS, MAX_OPEN_CLAIMS,
    MAX_STALE_MS,
};
use tonic::{Request, Response, Status};

use crate::request::{consumer_key, decide, Decision, MAX_CONSUMER_BYTES, MAX_HITS};
use crate::service::Service;
use crate::store::StoreError;

/// tonic's generated server (`payments_server`) and client (`payments_client`).
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod api {
    include!(concat!(
        env!("OUT_DIR"),
        "/tollgate.payments.v1.Payments.rs"
    ));
}

/// The payments API's scripts (each sent by SHA, loaded again when Redis forgot it).
pub struct Scripts {
    claim: Script,
    mark: Script,
    open: Script,
    credit: Script,
    draw: Script,
    balance: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            claim: Script::new(include_str!("payments/claim.lua")),
            mark: Script::new(include_str!("payments/mark.lua")),
            open: Script::new(include_str!("payments/open.lua")),
            credit: Script::new(include_str!("payments/credit.lua")),
            draw: Script::new(include_str!("payments/draw.lua")),
            // One key in its hash tag, like every call (a plain GET would do on one node).
            balance: Script::new("return tonumber(redis.call('GET', KEYS[1]) or '0')"),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The hash tag of a consumer's keys (its counters' too: `request::decide`).
pub fn consumer_tag(domain: &str, consumer: &str) -> String {
    format!("{STORE_PREFIX}{{{domain}:{}}}", consumer_key(consumer))
}

/// A claim's key: a hash tag of its own.
pub fn claim_key(domain: &str, replay: &str) -> String {
    format!("{STORE_PREFIX}claim:{{{domain}:{replay}}}")
}

fn check_domain(domain: &str) -> Result<(), String> {
    if valid_name(domain) {
        Ok(())
    } else {
        Err(format!("domain `{}` is not a name", cut(domain)))
    }
}

fn check_consumer(consumer: &str) -> Result<(), String> {
    if consumer.is_empty() || consumer.len() > MAX_CONSUMER_BYTES {
        return Err(format!("consumer must be 1-{MAX_CONSUMER_BYTES} bytes"));
    }
    Ok(())
}

fn check_digest(field: &str, value: &str) -> Result<(), String> {
    let hex = value
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if value.is_empty() || value.len() > MAX_DIGEST_HEX || !hex {
        return Err(format!(
            "{field} `{}` must be 1-{MAX_DIGEST_HEX} lowercase hex digits",
            cut(value)
        ));
    }
    Ok(())
}

/// A value quoted in an error, cut to 64 characters.
fn cut(value: &str) -> String {
    value.chars().take(64).collect()
}

/// A claim request, checked at `now_ms`.
pub fn check_claim(r: &ClaimRequest, now_ms: i64) -> Result<(), String> {
    check_domain(&r.domain)?;
    check_consumer(&r.consumer)?;
    check_digest("replay", &r.replay)?;
    if !(1..=MAX_STALE_MS).contains(&r.stale_ms) {
        return Err(format!("stale_ms must be 1-{MAX_STALE_MS}"));
    }
    if !(0..=MAX_STALE_MS).contains(&r.settling_stale_ms) {
        return Err(format!("settling_stale_ms must be 0-{MAX_STALE_MS}"));
    }
    let now = now_ms.div_euclid(1000);
    if !r.look && (r.keep_until <= now || r.keep_until > now.saturating_add(MAX_KEEP_SECONDS)) {
        return Err(format!(
            "keep_until {} must be in the next {MAX_KEEP_SECONDS} seconds",
            r.keep_until
        ));
    }
    Ok(())
}

/// A mark request's state.
pub fn check_mark(r: &MarkRequest) -> Result<ClaimState, String> {
    check_domain(&r.domain)?;
    check_digest("replay", &r.replay)?;
    match ClaimState::try_from(r.state) {
        Ok(state) => Ok(state),
        Err(_) => Err(format!("state {} is not a claim state", r.state)),
    }
}

/// A credit request. Not bounded by `--max-requests`: a credit comes after the money moved,
/// and refusing it then would leave the payer unpaid; the packs' sizes are the operator's
/// (the filter's configuration bounds them).
pub fn check_credit(r: &CreditRequest) -> Result<(), String> {
    check_domain(&r.domain)?;
    check_consumer(&r.consumer)?;
    check_digest("replay", &r.replay)?;
    check_digest("ledger", &r.ledger)?;
    if !(1..=MAX_REQUESTS).contains(&r.credits) {
        return Err(format!("credits {} must be 1-{MAX_REQUESTS}", r.credits));
    }
    Ok(())
}

/// A draw request's other limits, as a decision at `now` (Unix s).
pub fn check_draw(r: &DrawRequest, now: i64, margin: i64) -> Result<Option<Decision>, String> {
    check_domain(&r.domain)?;
    check_consumer(&r.consumer)?;
    if r.cost > MAX_HITS {
        return Err(format!("cost {} is more than {MAX_HITS}", r.cost));
    }
    if r.limits.is_empty() {
        return Ok(None);
    }
    let limits = RateLimitRequest::decode(r.limits.as_slice())
        .map_err(|_| "limits: not a RateLimitRequest".to_string())?;
    if limits.domain != r.domain {
        return Err(format!(
            "limits: domain `{}` differs from `{}`",
            cut(&limits.domain),
            r.domain
        ));
    }
    let decision = decide(&limits, now, margin).map_err(|e| format!("limits: {e}"))?;
    if decision.consumer != r.consumer {
        return Err(format!(
            "limits: consumer `{}` differs from `{}`",
            cut(&decision.consumer),
            cut(&r.consumer)
        ));
    }
    Ok(Some(decision))
}

/// What became of a call, for `quotad_payment_calls_total{method, code}`.
fn code_of(status: &Status) -> &'static str {
    match status.code() {
        tonic::Code::InvalidArgument => "invalid_argument",
        tonic::Code::PermissionDenied => "denied",
        _ => "unavailable",
    }
}

impl Service {
    fn invalid(&self, why: String) -> Status {
        Status::invalid_argument(crate::service::bounded(why))
    }

    fn domain_allowed(&self, domain: &str) -> Result<(), Status> {
        self.policy
            .check_domain(domain)
            .map_err(|e| Status::permission_denied(crate::service::bounded(e)))
    }

    fn unavailable(&self, e: StoreError) -> Status {
        match e {
            StoreError::Timeout(_) => self.metrics.redis_timeout.inc(),
            StoreError::Redis(_) => self.metrics.redis_error.inc(),
        }
        log::debug!("payments: unavailable: {e}");
        Status::unavailable(e.to_string())
    }

    fn counted<T>(&self, method: &str, answer: Result<T, Status>) -> Result<Response<T>, Status> {
        let code = match &answer {
            Ok(_) => "ok",
            Err(status) => code_of(status),
        };
        self.metrics
            .payment_calls
            .with_label_values(&[method, code])
            .inc();
        answer.map(Response::new)
    }

    /// Adds (`open`) or removes a claim from its consumer's open claims: `false` when the
    /// consumer has [`MAX_OPEN_CLAIMS`] open already.
    async fn open(
        &self,
        domain: &str,
        consumer: &str,
        replay: &str,
        until: i64,
        open: bool,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.scripts.open.prepare_invoke();
        invocation
            .key(format!("{}:$open", consumer_tag(domain, consumer)))
            .arg(replay)
            .arg(until)
            .arg(now_ms().div_euclid(1000))
            .arg(MAX_OPEN_CLAIMS)
            .arg(u8::from(open));
        let added: i64 = self.store.invoke(&invocation).await?;
        Ok(added == 1)
    }

    /// Sets a claim's state: whether it was there, and its consumer.
    async fn set_state(
        &self,
        domain: &str,
        replay: &str,
        state: ClaimState,
    ) -> Result<Option<String>, StoreError> {
        let mut invocation = self.scripts.mark.prepare_invoke();
        invocation
            .key(claim_key(domain, replay))
            .arg(state as i32)
            .arg(now_ms())
            .arg(KEEP_SETTLING_SECONDS);
        let (found, consumer, after): (i64, String, i32) = self.store.invoke(&invocation).await?;
        if found != 1 {
            return Ok(None);
        }
        // Settled or dropped: no longer one of its consumer's open claims (a claim the call
        // kept as it was, e.g. UNKNOWN, stays one).
        if matches!(
            ClaimState::of(after),
            ClaimState::None | ClaimState::Settled
        ) {
            self.open(domain, &consumer, replay, 0, false).await?;
        }
        Ok(Some(consumer))
    }

    async fn claim_call(&self, r: &ClaimRequest) -> Result<ClaimResponse, Status> {
        let now_ms = now_ms();
        check_claim(r, now_ms).map_err(|e| self.invalid(e))?;
        self.domain_allowed(&r.domain)?;
        let mut invocation = self.scripts.claim.prepare_invoke();
        invocation
            .key(claim_key(&r.domain, &r.replay))
            .arg(&r.consumer)
            .arg(now_ms)
            .arg(r.stale_ms)
            .arg(r.keep_until)
            .arg(u8::from(r.untimely))
            .arg(u8::from(r.look))
            .arg(KEEP_SETTLING_SECONDS)
            .arg(r.settling_stale_ms);
        let (outcome, state): (i32, i32) = self
            .store
            .invoke(&invocation)
            .await
            .map_err(|e| self.unavailable(e))?;
        if Claimed::of(outcome) == Claimed::Fresh {
            let open = self
                .open(&r.domain, &r.consumer, &r.replay, r.keep_until, true)
                .await
                .map_err(|e| self.unavailable(e))?;
            if !open {
                // Not this consumer's to verify now: the claim just made is dropped again.
                self.set_state(&r.domain, &r.replay, ClaimState::None)
                    .await
                    .map_err(|e| self.unavailable(e))?;
                return Ok(ClaimResponse {
                    outcome: Claimed::TooMany as i32,
                    state: ClaimState::None as i32,
                });
            }
        }
        Ok(ClaimResponse { outcome, state })
    }

    async fn mark_call(&self, r: &MarkRequest) -> Result<MarkResponse, Status> {
        let state = check_mark(r).map_err(|e| self.invalid(e))?;
        self.domain_allowed(&r.domain)?;
        let found = self
            .set_state(&r.domain, &r.replay, state)
            .await
            .map_err(|e| self.unavailable(e))?
            .is_some();
        Ok(MarkResponse { found })
    }

    async fn credit_call(&self, r: &CreditRequest) -> Result<CreditResponse, Status> {
        check_credit(r).map_err(|e| self.invalid(e))?;
        self.domain_allowed(&r.domain)?;
        let tag = consumer_tag(&r.domain, &r.consumer);
        let mut invocation = self.scripts.credit.prepare_invoke();
        invocation
            .key(format!("{tag}:$credits"))
            .key(format!("{tag}:$ledger:{}", r.ledger))
            .key(format!("{tag}:$open"))
            .arg(r.credits)
            .arg(LEDGER_SECONDS)
            .arg(&r.replay);
        let (added, balance): (i64, u64) = self
            .store
            .invoke(&invocation)
            .await
            .map_err(|e| self.unavailable(e))?;
        // Credited, whatever comes next: a lost mark leaves the claim SETTLING, so a retry
        // settles again and the ledger credits nothing twice.
        match self
            .set_state(&r.domain, &r.replay, ClaimState::Settled)
            .await
        {
            Ok(Some(_)) => {}
            Ok(None) => log::warn!("payments: a credited payment's claim is gone"),
            Err(e) => log::warn!("payments: a credited payment's claim could not be marked: {e}"),
        }
        Ok(CreditResponse {
            added: added == 1,
            balance,
        })
    }

    async fn draw_call(&self, r: &DrawRequest) -> Result<DrawResponse, Status> {
        let now = now_ms().div_euclid(1000);
        let decision = check_draw(r, now, self.margin).map_err(|e| self.invalid(e))?;
        self.domain_allowed(&r.domain)?;
        if let Some(decision) = &decision {
            self.policy
                .check(&r.domain, decision)
                .map_err(|e| Status::permission_denied(crate::service::bounded(e)))?;
        }
        let asks = decision.as_ref().map_or(&[][..], |d| d.asks.as_slice());
        let mut invocation = self.scripts.draw.prepare_invoke();
        invocation
            .key(format!("{}:$credits", consumer_tag(&r.domain, &r.consumer)))
            .arg(r.cost);
        for ask in asks {
            invocation.key(&ask.key);
            invocation.arg(ask.requests).arg(ask.hits).arg(ask.ttl);
        }
        let reply: Vec<u64> = self
            .store
            .invoke(&invocation)
            .await
            .map_err(|e| self.unavailable(e))?;
        match reply.as_slice() {
            [drawn, balance, used @ ..] if used.len() == asks.len() => Ok(DrawResponse {
                drawn: *drawn == 1,
                balance: *balance,
                used: used.to_vec(),
            }),
            _ => Err(self.unavailable(StoreError::Redis(format!(
                "the draw script returned {} values for {} limits",
                reply.len(),
                asks.len()
            )))),
        }
    }

    async fn balance_call(&self, r: &BalanceRequest) -> Result<BalanceResponse, Status> {
        check_domain(&r.domain).map_err(|e| self.invalid(e))?;
        check_consumer(&r.consumer).map_err(|e| self.invalid(e))?;
        self.domain_allowed(&r.domain)?;
        let mut read = self.scripts.balance.prepare_invoke();
        read.key(format!("{}:$credits", consumer_tag(&r.domain, &r.consumer)));
        let balance: u64 = self
            .store
            .invoke(&read)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(BalanceResponse { balance })
    }
}

#[tonic::async_trait]
impl api::payments_server::Payments for Service {
    async fn claim(
        &self,
        request: Request<ClaimRequest>,
    ) -> Result<Response<ClaimResponse>, Status> {
        let answer = self.claim_call(request.get_ref()).await;
        self.counted("claim", answer)
    }

    async fn mark(&self, request: Request<MarkRequest>) -> Result<Response<MarkResponse>, Status> {
        let answer = self.mark_call(request.get_ref()).await;
        self.counted("mark", answer)
    }

    async fn credit(
        &self,
        request: Request<CreditRequest>,
    ) -> Result<Response<CreditResponse>, Status> {
        let answer = self.credit_call(request.get_ref()).await;
        self.counted("credit", answer)
    }

    async fn draw(&self, request: Request<DrawRequest>) -> Result<Response<DrawResponse>, Status> {
        let answer = self.draw_call(request.get_ref()).await;
        self.counted("draw", answer)
    }

    async fn balance(
        &self,
        request: Request<BalanceRequest>,
    ) -> Result<Response<BalanceResponse>, Status> {
        let answer = self.balance_call(request.get_ref()).await;
        self.counted("balance", answer)
    }
}

#[cfg(test)]
mod tests;
