//! A priced request from its response to its settlement: what the request cost, known once
//! the upstream has answered, replaces what admission took (see [`crate::quota::settle`]).
//!
//! - **Tokens** (LLM routes): the usage the response reports — read from the body as it
//!   passes ([`crate::llm::UsageScanner`], bounded memory, nothing buffered) — weighted per
//!   model. A response that reports no usage is charged the reservation (a cut stream, a
//!   provider that sends none: metric `settlements.unreported`); an upstream error (status
//!   outside 2xx) that reports none gives the reservation back (`settlements.released`).
//! - **Named units and requests** with a route `cost_headers` entry: the integer the upstream
//!   sends in that response header (which the client never sees); without a valid one, the
//!   route's cost stands.
//! - Everything else was exact on admission: nothing to settle.
//!
//! The host feeds [`Pending`] the response's status, headers and body and, when the response
//! ends (or the stream is torn down before it did), writes [`Pending::settlements`].

use crate::config::{Config, Limit, Route, Unit, Weights};
use crate::decision::Charged;
use crate::decision::TokenAsk;
use crate::llm::{Api, Body, Tokens, UsageScanner};
use crate::metrics::Increments;
use crate::metrics::Metric;
use crate::quota::settle;
use crate::quota::{CreditSettlement, Settlement};
use crate::response::{invalid_body, Reply};
use crate::store::Store;

/// Largest settled cost a response header may state (a structured-field integer).
const MAX_HEADER_COST: u64 = crate::config::MAX_REQUESTS;

/// An LLM request's metering: its model's weights and the response's usage as it passes.
#[derive(Debug)]
pub struct LlmMeter {
    pub api: Api,
    pub weights: Weights,
    /// The pricing entry's index in `llm.models`.
    pub model: usize,
    scanner: Option<UsageScanner>,
}

/// What a settled LLM request adds to its consumer's usage events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Billed {
    /// The pricing entry's index in `llm.models`.
    pub model: usize,
    /// What the response reported (`None`: nothing, and the reservation was charged).
    pub tokens: Option<Tokens>,
    /// Quota units charged.
    pub units: u64,
}

/// One priced, admitted request, until it is settled.
#[derive(Debug)]
pub struct Pending {
    charged: Charged,
    /// The route's cost headers (unit, lowercase name).
    cost_headers: Vec<(Unit, String)>,
    /// What the upstream stated in them.
    stated: Vec<(Unit, u64)>,
    llm: Option<LlmMeter>,
    status: Option<u16>,
    settled: bool,
    billed: Option<Billed>,
}

/// Quota units for these tokens at these weights (thousandths), rounded up.
pub fn weigh(tokens: Tokens, weights: Weights) -> u64 {
    let milli = u128::from(tokens.input) * u128::from(weights.input)
        + u128::from(tokens.cached_input) * u128::from(weights.cached_input)
        + u128::from(tokens.output) * u128::from(weights.output);
    u64::try_from(milli.div_ceil(1000)).unwrap_or(u64::MAX)
}

/// The reservation's terms for an LLM request: its input estimated from the body's size (one
/// token per `bytes_per_token` bytes, weighted at the dearer of the input weights, since the
/// prompt may or may not hit a cache), its output cap and `n`.
pub fn token_ask(body_len: u64, bytes_per_token: u64, cap: u64, n: u64, w: Weights) -> TokenAsk {
    let tokens = body_len.div_ceil(bytes_per_token.max(1));
    let input_weight = w.input.max(w.cached_input);
    let input = (u128::from(tokens) * u128::from(input_weight)).div_ceil(1000);
    TokenAsk {
        input: u64::try_from(input).unwrap_or(u64::MAX),
        cap,
        n,
        output_weight: w.output,
    }
}

/// An integer cost in a header value: ASCII digits only (no sign, no spaces), at most 15.
pub fn parse_cost(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 15 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value)
        .ok()?
        .parse::<u64>()
        .ok()
        .filter(|c| *c <= MAX_HEADER_COST)
}

/// An LLM request read from its body: what to reserve, and the body to forward once the cap
/// is known.
#[derive(Debug)]
pub struct LlmRequest {
    pub body: Body,
    pub api: Api,
    pub weights: Weights,
    /// The pricing entry's index in `llm.models`.
    pub model: usize,
    pub ask: TokenAsk,
}

/// The output cap member a client of this API sets.
fn cap_field(api: Api) -> &'static str {
    match api {
        Api::OpenAiChat => "max_completion_tokens",
        Api::OpenAiResponses => "max_output_tokens",
        Api::AnthropicMessages => "max_tokens",
    }
}

/// Reads an LLM request body: its model's pricing, its output cap (the client's, at most the
/// model's `max_output_tokens`; the model's when the client gives none) and its reservation's
/// terms. A body that cannot be priced gets its 400.
pub fn read_llm(config: &Config, api: Api, bytes: &[u8]) -> Result<LlmRequest, Reply> {
    let Some(llm) = &config.llm else {
        return Err(invalid_body("", "this gateway prices no LLM requests"));
    };
    let (body, parsed) =
        Body::parse(api, bytes, llm.max_n).map_err(|e| invalid_body(e.field, &e.why))?;
    let Some((index, model)) = llm
        .model_index(&parsed.model)
        .and_then(|i| Some((i, llm.models.get(i)?)))
    else {
        return Err(invalid_body("model", "is not a model this API serves"));
    };
    let cap = match (parsed.cap, model.max_output_tokens) {
        (Some(client), Some(most)) => client.min(most),
        (Some(client), None) => client,
        (None, Some(default)) => default,
        (None, None) => {
            return Err(invalid_body(
                cap_field(api),
                "is required for this model (it has no configured default)",
            ))
        }
    };
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    Ok(LlmRequest {
        body,
        api,
        weights: model.weights,
        model: index,
        ask: token_ask(len, llm.bytes_per_input_token, cap, parsed.n, model.weights),
    })
}

impl Pending {
    pub fn new(
        charged: Charged,
        route: Option<&Route>,
        llm: Option<(Api, Weights, usize)>,
    ) -> Pending {
        Pending {
            charged,
            cost_headers: route.map(|r| r.cost_headers.clone()).unwrap_or_default(),
            stated: Vec::new(),
            llm: llm.map(|(api, weights, model)| LlmMeter {
                api,
                weights,
                model,
                scanner: None,
            }),
            status: None,
            settled: false,
            billed: None,
        }
    }

    pub fn consumer(&self) -> usize {
        self.charged.consumer
    }

    /// The response's headers: its status, whether its body is an event stream, and each
    /// cost header's value (read with `header`). Returns the headers to remove before the
    /// client sees the response.
    pub fn on_response_headers(
        &mut self,
        status: Option<u16>,
        event_stream: bool,
        mut header: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Vec<String> {
        self.status = status;
        if let Some(llm) = &mut self.llm {
            llm.scanner = Some(UsageScanner::new(llm.api, event_stream));
        }
        let mut remove = Vec::with_capacity(self.cost_headers.len());
        for (unit, name) in &self.cost_headers {
            if let Some(value) = header(name) {
                match parse_cost(&value) {
                    Some(cost) => self.stated.push((unit.clone(), cost)),
                    None => log::warn!(
                        "the upstream's {name} header is not a cost (0-{MAX_HEADER_COST}): the route's cost stands"
                    ),
                }
                remove.push(name.clone());
            }
        }
        remove
    }

    /// The next bytes of the response body, as they pass.
    pub fn on_body(&mut self, chunk: &[u8]) {
        if let Some(scanner) = self.llm.as_mut().and_then(|l| l.scanner.as_mut()) {
            scanner.feed(chunk);
        }
    }

    /// What the settled request adds to its consumer's usage events (an LLM request that took
    /// tokens, once settled).
    pub fn billed(&self) -> Option<Billed> {
        self.billed
    }

    /// Whether [`Pending::settlements`] was taken.
    pub fn settled(&self) -> bool {
        self.settled
    }

    /// The tokens the response reported so far.
    pub fn tokens(&self) -> Option<Tokens> {
        self.llm
            .as_ref()
            .and_then(|l| l.scanner.as_ref())
            .and_then(UsageScanner::tokens)
    }

    /// What to write, once: one settlement per limit whose cost is now known otherwise, and
    /// the metric that says how the tokens were settled (if the request took any).
    /// `complete`: the response's body ended; otherwise the stream was torn down before it
    /// did (a cut stream, a client gone), and whatever usage it reported so far (Anthropic's
    /// `message_start`) is not the whole: a 2xx is then charged its reservation.
    /// A request paid with prepaid credits (`credits`: the plan's limits they stand in for,
    /// which took nothing) settles those against the balance instead: the returned
    /// [`CreditSettlement`].
    pub fn settlements(
        &mut self,
        limits: &[Limit],
        credits: &[usize],
        complete: bool,
    ) -> (Vec<Settlement>, Option<CreditSettlement>, Option<Metric>) {
        if self.settled {
            return (Vec::new(), None, None);
        }
        self.settled = true;
        let tokens = self.tokens().filter(|_| complete);
        let upstream_failed = !self.status.is_some_and(|s| (200..300).contains(&s));
        let mut metric = None;
        let mut out = Vec::new();
        let mut credit = None;
        let drawn = self.charged.drawn;
        for (i, (limit, usage)) in limits.iter().zip(&self.charged.usages).enumerate() {
            let paid = drawn > 0 && credits.contains(&i);
            if paid && credit.is_some() {
                // One balance: settled once, from the first limit it stands in for.
                continue;
            }
            let taken = if paid { drawn } else { usage.cost };
            let actual = match &limit.unit {
                Unit::Tokens if taken > 0 => {
                    let actual = match (tokens, &self.llm) {
                        (Some(tokens), Some(llm)) => {
                            metric = Some(Metric::Settled);
                            weigh(tokens, llm.weights)
                        }
                        _ if upstream_failed => {
                            metric = Some(Metric::Released);
                            0
                        }
                        _ => {
                            metric = Some(Metric::Unreported);
                            taken
                        }
                    };
                    // A released request was not billed by the provider: not in token events.
                    if let Some(llm) = self
                        .llm
                        .as_ref()
                        .filter(|_| metric != Some(Metric::Released))
                    {
                        self.billed = Some(Billed {
                            model: llm.model,
                            tokens,
                            units: actual,
                        });
                    }
                    actual
                }
                unit => match self.stated.iter().find(|(u, _)| u == unit) {
                    Some((_, cost)) => {
                        metric = metric.or(Some(Metric::Settled));
                        *cost
                    }
                    None => taken,
                },
            };
            if paid {
                credit = Some(CreditSettlement { taken, actual });
            } else if actual != taken {
                out.push(Settlement {
                    limit: i,
                    bounds: usage.bounds,
                    taken,
                    actual,
                });
            }
        }
        (out, credit.filter(|c| c.taken != c.actual), metric)
    }
}

/// Writes a pending request's settlement into its consumer's record, once (`complete`: its
/// response ended). Returns the metrics it counts and what it adds to usage events. A
/// settlement that cannot be written leaves the reservation as the charge (and says so).
pub fn write(
    config: &Config,
    store: &impl Store,
    pending: &mut Pending,
    complete: bool,
) -> (Increments, Option<Billed>) {
    let mut metrics = Increments::default();
    if pending.settled() {
        return (metrics, None);
    }
    let Some((consumer, plan)) = config
        .consumers
        .get(pending.consumer())
        .and_then(|c| Some((c, config.plan_of(c)?)))
    else {
        return (metrics, None);
    };
    let (settlements, credit, metric) = pending.settlements(&plan.limits, &plan.credits, complete);
    if !settlements.is_empty() || credit.is_some() {
        // Fleet mode: into this Envoy's lease (a refund is spent here; the store can take
        // nothing back); local mode: into the consumer's record.
        let written = if !pending.charged.in_record {
            crate::lease::settle(store, &crate::lease::key(consumer.name()), &settlements)
        } else {
            settle(
                store,
                &consumer.store_key,
                &plan.limits,
                &settlements,
                credit,
            )
        };
        if let Err(e) = written {
            log::error!(
                "consumer {}: the settlement could not be written ({}); the reservation stays",
                consumer.name(),
                e.reason()
            );
            metrics.push(Metric::SettleFailed, None);
        }
    }
    if let Some(metric) = metric {
        metrics.push(metric, None);
    }
    (metrics, pending.billed())
}

#[cfg(test)]
mod tests;
