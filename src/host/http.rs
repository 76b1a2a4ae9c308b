//! The HTTP context: gathers the request's credential and the time, asks the core for a
//! decision, and either sends the refusal or lets the request through and adds the RateLimit
//! fields to the upstream's response.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, MapType};

use super::shared_data::SharedData;
use crate::config::Config;
use crate::credentials::extract;
use crate::decision::{decide, Decision, Denial};
use crate::response::{rate_limit_headers, refusal, Reply};

pub struct Filter {
    config: Option<Rc<Config>>,
    /// RateLimit fields to add to the upstream's response.
    response_headers: Vec<(&'static str, String)>,
}

impl Filter {
    pub fn new(config: Option<Rc<Config>>) -> Self {
        Filter {
            config,
            response_headers: Vec::new(),
        }
    }

    fn send(reply: &Reply) -> Action {
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .collect();
        if let Err(status) = hostcalls::send_http_response(
            u32::from(reply.status),
            headers,
            Some(reply.body.as_bytes()),
        ) {
            super::host_log(LogLevel::Error, &format!("send_http_response: {status:?}"));
        }
        Action::Pause
    }
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            log::error!("request refused: the plugin has no valid configuration");
            return Self::send(&Reply {
                status: 503,
                headers: vec![("content-type", "text/plain".into())],
                body: "tollgate is not configured\n".into(),
            });
        };
        let Some(now) = super::now() else {
            log::error!("request refused: the host clock is unavailable");
            return Self::send(&Reply {
                status: 503,
                headers: vec![("content-type", "text/plain".into())],
                body: "tollgate cannot read the clock\n".into(),
            });
        };
        let credential = extract(&config.credentials, |name| {
            hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
                .ok()
                .flatten()
        });
        match decide(&config, credential, now, &SharedData) {
            Decision::Allow { caller, usages } => {
                log::debug!(
                    "allow consumer={} plan={}",
                    caller.consumer.name,
                    caller.plan.name
                );
                self.response_headers = rate_limit_headers(caller.plan, &usages, now);
                Action::Continue
            }
            Decision::Deny(denial) => {
                match &denial {
                    Denial::StoreUnavailable { caller, reason } => {
                        log::error!("refused consumer={}: {reason}", caller.consumer.name)
                    }
                    other => log::debug!("refuse {}", describe(other)),
                }
                Self::send(&refusal(&config, &denial, now))
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.response_headers) {
            if let Err(status) =
                hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(&value))
            {
                log::warn!("cannot set response header {name}: {status:?}");
            }
        }
        Action::Continue
    }
}

/// A refusal for the debug log: reason and consumer, never the key.
fn describe(denial: &Denial) -> String {
    match denial {
        Denial::MissingCredential => "missing credential".into(),
        Denial::MalformedCredential(reason) => format!("malformed credential: {reason}"),
        Denial::UnknownKey => "unknown key".into(),
        Denial::Suspended(c) => format!("suspended consumer={}", c.consumer.name),
        Denial::Expired { caller, .. } => format!("expired consumer={}", caller.consumer.name),
        Denial::QuotaExceeded { caller, .. } => {
            format!(
                "quota consumer={} plan={}",
                caller.consumer.name, caller.plan.name
            )
        }
        Denial::StoreUnavailable { caller, .. } => {
            format!("store unavailable consumer={}", caller.consumer.name)
        }
    }
}
