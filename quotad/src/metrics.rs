//! Prometheus metrics, served at `/metrics` (names and labels: quotad/README.md).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Decisions by outcome: ok, over_limit, invalid_argument, denied, unavailable.
    pub decisions: IntCounterVec,
    /// Failed Redis calls by kind: timeout, error.
    pub redis_errors: IntCounterVec,
    /// Time to answer one ShouldRateLimit call (Redis included), seconds.
    pub latency: Histogram,
    /// Payments API calls by method and outcome (ok, invalid_argument, denied, unavailable).
    pub payment_calls: IntCounterVec,
    /// 1 while the last health check's PING was answered.
    pub redis_up: IntGauge,
    /// The hot path's series, resolved once (no label lookup per request).
    pub ok: IntCounter,
    pub over_limit: IntCounter,
    pub invalid_argument: IntCounter,
    /// Refused by the policy (--allow-domains, --max-requests, ...).
    pub denied: IntCounter,
    pub unavailable: IntCounter,
    pub redis_timeout: IntCounter,
    pub redis_error: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new("quotad_decisions_total", "Rate limit decisions, by outcome"),
            &["code"],
        )?;
        let redis_errors = IntCounterVec::new(
            Opts::new("quotad_redis_errors_total", "Failed Redis calls, by kind"),
            &["kind"],
        )?;
        let payment_calls = IntCounterVec::new(
            Opts::new(
                "quotad_payment_calls_total",
                "Payments API calls (fleet mode's prepaid credits), by method and outcome",
            ),
            &["method", "code"],
        )?;
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "quotad_decision_duration_seconds",
                "Time to answer one ShouldRateLimit call, Redis included",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )?;
        let redis_up = IntGauge::new("quotad_redis_up", "1 while Redis answers the health check")?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(redis_errors.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(payment_calls.clone()))?;
        registry.register(Box::new(redis_up.clone()))?;
        Ok(Metrics {
            ok: decisions.with_label_values(&["ok"]),
            over_limit: decisions.with_label_values(&["over_limit"]),
            invalid_argument: decisions.with_label_values(&["invalid_argument"]),
            denied: decisions.with_label_values(&["denied"]),
            unavailable: decisions.with_label_values(&["unavailable"]),
            redis_timeout: redis_errors.with_label_values(&["timeout"]),
            redis_error: redis_errors.with_label_values(&["error"]),
            registry,
            decisions,
            redis_errors,
            payment_calls,
            latency,
            redis_up,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
