//! The `routes` and `llm` sections: what a request costs per Envoy route (the route's name,
//! `xds.route_name`, keys it), which routes are LLM APIs, and the models and weights their
//! tokens are priced with.
//!
//! A request's cost, per unit of the plan's limits: `requests` and named units take 1 unless
//! its route's `cost` says otherwise (0 included: that unit is then neither checked nor
//! counted for the route); `tokens` are taken only on `llm` routes (the reservation, settled
//! from the response). Weights are kept in thousandths, so that prices like 0.25 stay exact
//! in integers.

use std::collections::HashMap;

use crate::llm::{Api, MAX_CAP};
use crate::names::{is_token, valid_name, MAX_NAME_LEN};

use super::errors::ConfigError;
use super::plan::{Unit, MAX_REQUESTS};
use super::raw::{RawLlm, RawRoute, RawWeights, UniqueMap};

/// Longest route name (Envoy's route names are free text; ours are looked up by it).
pub const MAX_ROUTE_NAME_LEN: usize = 255;
/// Most routes the section may price.
pub const MAX_ROUTES: usize = 1000;
/// Most models `llm.models` may list.
pub const MAX_MODELS: usize = 1000;
/// Longest model name.
pub const MAX_MODEL_LEN: usize = 256;
/// Default and largest `llm.max_body_bytes`.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;
pub const MAX_MAX_BODY: u64 = 16 << 20;
/// Default and largest `llm.max_n`.
pub const DEFAULT_MAX_N: u64 = 8;
pub const MAX_MAX_N: u64 = 128;
/// Default and largest `llm.bytes_per_input_token`. 1 is a hard bound (a token of the
/// byte-level tokenizers in use covers at least one byte), so the reservation covers any
/// prompt; larger values reserve less and can be exceeded (docs/billing.md).
pub const DEFAULT_BYTES_PER_TOKEN: u64 = 1;
pub const MAX_BYTES_PER_TOKEN: u64 = 16;
/// Largest weight (1000 units per token), in thousandths.
pub const MAX_WEIGHT_MILLI: u64 = 1_000_000;
/// The model name that prices every model not listed.
pub const ANY_MODEL: &str = "*";

/// One Envoy route's pricing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    /// The Envoy route's name.
    pub name: String,
    /// Units a request of this route takes, instead of 1 (never `tokens`).
    pub costs: Vec<(Unit, u64)>,
    /// Per unit, the upstream response header that settles the cost (lowercase).
    pub cost_headers: Vec<(Unit, String)>,
    pub llm: Option<Api>,
}

impl Route {
    /// What a request of this route takes from a limit of `unit`, before any LLM
    /// reservation: `None` for tokens (the reservation decides).
    pub fn cost(&self, unit: &Unit) -> Option<u64> {
        if *unit == Unit::Tokens {
            return None;
        }
        Some(
            self.costs
                .iter()
                .find(|(u, _)| u == unit)
                .map_or(1, |(_, c)| *c),
        )
    }
}

/// Weights of a model's tokens, in thousandths of a quota unit per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            input: 1000,
            cached_input: 1000,
            output: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub name: String,
    /// The output cap of requests that give none (and the largest they may ask for).
    pub max_output_tokens: Option<u64>,
    pub weights: Weights,
}

/// The `llm` section, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Llm {
    pub max_body_bytes: u64,
    pub max_n: u64,
    pub bytes_per_input_token: u64,
    pub models: Vec<Model>,
    by_name: HashMap<String, usize>,
    /// The `*` model, if listed.
    any: Option<usize>,
}

impl Llm {
    /// The model's pricing: its own, or `*`'s; `None` when neither is configured.
    pub fn model(&self, name: &str) -> Option<&Model> {
        self.model_index(name).and_then(|i| self.models.get(i))
    }

    /// The index in `models` of the model's pricing entry (its own, or `*`'s).
    pub fn model_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied().or(self.any)
    }
}

/// The compiled `routes`, found by route name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routes {
    routes: Vec<Route>,
    by_name: HashMap<String, usize>,
}

impl Routes {
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route of this name and its index.
    pub fn find(&self, route_name: &[u8]) -> Option<(usize, &Route)> {
        let name = std::str::from_utf8(route_name).ok()?;
        let index = *self.by_name.get(name)?;
        Some((index, self.routes.get(index)?))
    }

    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

fn unit_named(field: &str, name: &str) -> Result<Unit, ConfigError> {
    match name {
        "requests" => Ok(Unit::Requests),
        "tokens" => Err(ConfigError(format!(
            "{field}: tokens are not priced per route: mark the route `\"llm\": \"openai-chat\"` (or another API) and tokens are reserved from its body"
        ))),
        other if valid_name(other) => Ok(Unit::Named(other.into())),
        other => Err(ConfigError(format!(
            "{field}: `{other}` is not a unit name (1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 _ - .)"
        ))),
    }
}

pub(super) fn compile_routes(
    raw: UniqueMap<RawRoute>,
    llm: Option<&Llm>,
) -> Result<Routes, ConfigError> {
    if raw.0.len() > MAX_ROUTES {
        return Err(ConfigError(format!(
            "routes: {} routes; at most {MAX_ROUTES} are allowed",
            raw.0.len()
        )));
    }
    let mut routes = Vec::with_capacity(raw.0.len());
    let mut by_name = HashMap::with_capacity(raw.0.len());
    for (name, route) in raw.0 {
        let field = format!("routes.{name}");
        if name.is_empty() || name.len() > MAX_ROUTE_NAME_LEN {
            return Err(ConfigError(format!(
                "{field}: a route name is 1-{MAX_ROUTE_NAME_LEN} bytes (the `name` of the Envoy route)"
            )));
        }
        let mut costs = Vec::with_capacity(route.cost.0.len());
        for (unit, cost) in route.cost.0 {
            let field = format!("{field}.cost.{unit}");
            let unit = unit_named(&field, &unit)?;
            if cost > MAX_REQUESTS {
                return Err(ConfigError(format!("{field}: at most {MAX_REQUESTS}")));
            }
            costs.push((unit, cost));
        }
        let mut cost_headers = Vec::with_capacity(route.cost_headers.0.len());
        for (unit, header) in route.cost_headers.0 {
            let field = format!("{field}.cost_headers.{unit}");
            let unit = unit_named(&field, &unit)?;
            if unit == Unit::Requests {
                return Err(ConfigError(format!(
                    "{field}: requests are counted on admission and never settled; price the route in a named unit (credits) to settle it from the upstream"
                )));
            }
            if !is_token(&header) || header.starts_with(':') {
                return Err(ConfigError(format!(
                    "{field}: `{header}` is not a valid header name"
                )));
            }
            cost_headers.push((unit, header.to_ascii_lowercase()));
        }
        let api = match route.llm {
            None => None,
            Some(api) => {
                let parsed = Api::parse(&api).ok_or_else(|| {
                    ConfigError(format!(
                        "{field}.llm: `{api}` is not an LLM API tollgate reads (openai-chat, openai-responses, anthropic-messages)"
                    ))
                })?;
                if llm.is_none() {
                    return Err(ConfigError(format!(
                        "{field}.llm: an LLM route needs the `llm` section (its models and their weights)"
                    )));
                }
                Some(parsed)
            }
        };
        by_name.insert(name.clone(), routes.len());
        routes.push(Route {
            name,
            costs,
            cost_headers,
            llm: api,
        });
    }
    Ok(Routes { routes, by_name })
}

fn weight(field: &str, value: Option<f64>) -> Result<u64, ConfigError> {
    let Some(value) = value else {
        return Ok(1000);
    };
    let milli = (value * 1000.0).round();
    if !value.is_finite() || value < 0.0 || milli > MAX_WEIGHT_MILLI as f64 {
        return Err(ConfigError(format!(
            "{field}: a weight is a number from 0 to {} (quota units per token)",
            MAX_WEIGHT_MILLI / 1000
        )));
    }
    if (milli - value * 1000.0).abs() > 1e-6 {
        return Err(ConfigError(format!(
            "{field}: at most three decimals (weights are kept in thousandths)"
        )));
    }
    Ok(milli as u64)
}

fn weights(field: &str, raw: Option<RawWeights>) -> Result<Weights, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Weights::default());
    };
    Ok(Weights {
        input: weight(&format!("{field}.input"), raw.input)?,
        cached_input: weight(&format!("{field}.cached_input"), raw.cached_input)?,
        output: weight(&format!("{field}.output"), raw.output)?,
    })
}

fn bounded(field: &str, value: Option<u64>, default: u64, max: u64) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if (1..=max).contains(&v) => Ok(v),
        Some(_) => Err(ConfigError(format!("{field}: from 1 to {max}"))),
    }
}

/// An output cap from the configuration: 1 to [`MAX_CAP`].
pub(super) fn output_cap(field: &str, value: Option<u64>) -> Result<Option<u64>, ConfigError> {
    match value {
        Some(v) if !(1..=MAX_CAP).contains(&v) => {
            Err(ConfigError(format!("{field}: from 1 to {MAX_CAP}")))
        }
        other => Ok(other),
    }
}

pub(super) fn compile_llm(raw: Option<RawLlm>) -> Result<Option<Llm>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if raw.models.0.is_empty() || raw.models.0.len() > MAX_MODELS {
        return Err(ConfigError(format!(
            "llm.models: list 1-{MAX_MODELS} models (`*` prices every model not listed; without it, other models are refused)"
        )));
    }
    let mut models = Vec::with_capacity(raw.models.0.len());
    let mut by_name = HashMap::with_capacity(raw.models.0.len());
    let mut any = None;
    for (name, model) in raw.models.0 {
        let field = format!("llm.models.{name}");
        if name.is_empty() || name.len() > MAX_MODEL_LEN {
            return Err(ConfigError(format!(
                "{field}: a model name is 1-{MAX_MODEL_LEN} bytes"
            )));
        }
        let index = models.len();
        if name == ANY_MODEL {
            any = Some(index);
        } else {
            by_name.insert(name.clone(), index);
        }
        models.push(Model {
            max_output_tokens: output_cap(
                &format!("{field}.max_output_tokens"),
                model.max_output_tokens,
            )?,
            weights: weights(&format!("{field}.weights"), model.weights)?,
            name,
        });
    }
    Ok(Some(Llm {
        max_body_bytes: bounded(
            "llm.max_body_bytes",
            raw.max_body_bytes,
            DEFAULT_MAX_BODY,
            MAX_MAX_BODY,
        )?,
        max_n: bounded("llm.max_n", raw.max_n, DEFAULT_MAX_N, MAX_MAX_N)?,
        bytes_per_input_token: bounded(
            "llm.bytes_per_input_token",
            raw.bytes_per_input_token,
            DEFAULT_BYTES_PER_TOKEN,
            MAX_BYTES_PER_TOKEN,
        )?,
        models,
        by_name,
        any,
    }))
}
