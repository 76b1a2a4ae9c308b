//! The gRPC service: `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`. It
//! translates (request.rs) and lets the store decide (store.rs); it counts every outcome.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::{Request, Response, Status};

use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::request::{decide, respond};
use crate::store::{Store, StoreError};

pub struct Service {
    pub store: Store,
    pub metrics: Metrics,
    /// Seconds added to every key's TTL beyond its window's end.
    pub margin: i64,
    /// What a caller may claim.
    pub policy: Policy,
    /// The payments API's scripts.
    pub scripts: crate::payments::Scripts,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Longest `grpc-message`: an error names the value it refuses, and a value may be as long
/// as a message (64 KiB) — a header that long breaks the client's HTTP/2 (header lists are
/// limited to 16 KiB by default), so it would never read why.
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// `message`, cut at [`MAX_ERROR_MESSAGE`] bytes (on a character boundary) with a mark.
pub(crate) fn bounded(message: String) -> String {
    if message.len() <= MAX_ERROR_MESSAGE {
        return message;
    }
    let mut end = MAX_ERROR_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} bytes in all)",
        message.get(..end).unwrap_or(""),
        message.len()
    )
}

impl Service {
    async fn decide(&self, request: &RateLimitRequest) -> Result<RateLimitResponse, Status> {
        let decision = decide(request, now(), self.margin).map_err(|e| {
            self.metrics.invalid_argument.inc();
            Status::invalid_argument(bounded(e))
        })?;
        self.policy.check(&request.domain, &decision).map_err(|e| {
            self.metrics.denied.inc();
            Status::permission_denied(bounded(e))
        })?;
        let outcome = self.store.take(&decision).await.map_err(|e| {
            match e {
                StoreError::Timeout(_) => self.metrics.redis_timeout.inc(),
                StoreError::Redis(_) => self.metrics.redis_error.inc(),
            }
            self.metrics.unavailable.inc();
            log::debug!("unavailable: {e}");
            Status::unavailable(e.to_string())
        })?;
        if outcome.admitted {
            self.metrics.ok.inc();
        } else {
            self.metrics.over_limit.inc();
        }
        Ok(respond(&decision, &outcome))
    }
}

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let started = Instant::now();
        let answer = self.decide(request.get_ref()).await;
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        answer.map(Response::new)
    }
}
