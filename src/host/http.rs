//! The HTTP context: hands the request's headers and the time to the core
//! ([`crate::verdict::handle`]), then carries out the verdict — forward with header changes,
//! or send the local reply — and adds the RateLimit fields to the upstream's response. In
//! fleet mode a request may also be held (paused) while its consumer's lease is refilled
//! ([`super::fleet`]), and is then decided again by [`run`] in its own context.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, GrpcStatusCode, LogLevel, MapType};

use super::fleet;
use super::root::Runtime;
use super::shared_data::SharedData;
use crate::decision::Attempt;
use crate::response::{RateLimitFields, Reply};
use crate::verdict::{self, handle_with, Wait};

pub struct Filter {
    runtime: Option<Rc<Runtime>>,
    /// RateLimit fields to add to the upstream's response.
    rate_limit: Option<RateLimitFields>,
    context_id: u32,
    /// Fleet mode: the request was held for a lease refill (it was then decided, and its
    /// RateLimit fields kept, by [`fleet`]).
    held: bool,
}

impl Filter {
    pub fn new(runtime: Option<Rc<Runtime>>, context_id: u32) -> Self {
        Filter {
            runtime,
            rate_limit: None,
            context_id,
            held: false,
        }
    }
}

/// What became of a request.
pub enum Step {
    /// Forward it (its request headers already changed), with these RateLimit fields.
    Continue(Option<RateLimitFields>),
    /// A local reply was sent.
    Replied,
    /// Fleet mode: hold it for a lease refill.
    Wait(Wait),
}

/// Decides the request of the effective context and carries the verdict out (headers set, or
/// the reply sent); `now_ms` is the host's clock.
pub fn run(runtime: &Rc<Runtime>, fleet: &Attempt, now_ms: i64) -> Step {
    let now = now_ms.div_euclid(1000);
    let mut request = |name: &str| {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    };
    let mut verdict = handle_with(
        &runtime.config,
        &mut request,
        now,
        &SharedData::for_request(),
        &runtime.memo,
        &runtime.shadow_log,
        fleet,
    );
    runtime.metrics.record(&verdict.metrics);
    if let Some(meter) = &runtime.meter {
        meter.record(now, &mut verdict);
    }
    match verdict.action {
        verdict::Action::Reply(reply) => {
            send(&reply);
            Step::Replied
        }
        verdict::Action::Wait(wait) => Step::Wait(wait),
        verdict::Action::Forward(forward) => {
            let headers = MapType::HttpRequestHeaders;
            if let Some((consumer_header, plan_header)) = forward.identity_headers {
                // Setting replaces whatever a client sent; with nobody to name, remove it.
                let (consumer, plan) = match forward.caller {
                    Some((consumer, plan)) => (Some(consumer), Some(plan)),
                    None => (None, None),
                };
                for (name, value) in [(consumer_header, consumer), (plan_header, plan)] {
                    if let Err(status) = hostcalls::set_map_value(headers, name, value) {
                        log_failure("set request header", status);
                    }
                }
            }
            if let Some(name) = forward.hide_header {
                if let Err(status) = hostcalls::remove_map_value(headers, name) {
                    log_failure("remove request header", status);
                }
            }
            if let Some(path) = forward.path {
                if let Err(status) = hostcalls::set_map_value_bytes(headers, ":path", Some(&path)) {
                    log_failure("set :path", status);
                }
            }
            if let Some((consumer, ask)) = forward.refill {
                fleet::refill_ahead(runtime, consumer, ask);
            }
            Step::Continue(forward.rate_limit)
        }
    }
}

fn log_failure(what: &str, status: proxy_wasm::types::Status) {
    super::host_log(LogLevel::Error, &format!("{what}: {status:?}"));
}

fn grpc_code(code: u32) -> GrpcStatusCode {
    match code {
        7 => GrpcStatusCode::PermissionDenied,
        8 => GrpcStatusCode::ResourceExhausted,
        14 => GrpcStatusCode::Unavailable,
        16 => GrpcStatusCode::Unauthenticated,
        _ => GrpcStatusCode::Unknown,
    }
}

fn send(reply: &Reply) -> Action {
    let result = match reply.grpc_status {
        Some(code) => {
            let metadata: Vec<(&str, &[u8])> = reply
                .headers
                .iter()
                .map(|(n, v)| (*n, v.as_bytes()))
                .collect();
            hostcalls::send_grpc_response(grpc_code(code), Some(&reply.body), metadata)
        }
        None => {
            let headers: Vec<(&str, &str)> = reply
                .headers
                .iter()
                .map(|(n, v)| (*n, v.as_str()))
                .collect();
            hostcalls::send_http_response(
                u32::from(reply.status),
                headers,
                Some(reply.body.as_bytes()),
            )
        }
    };
    if let Err(status) = result {
        log_failure("send_http_response", status);
    }
    Action::Pause
}

fn unavailable(body: &str) -> Action {
    send(&Reply {
        status: 503,
        headers: vec![("content-type", "text/plain".into())],
        body: body.into(),
        grpc_status: None,
    })
}

impl Context for Filter {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let now_ms = super::now_ms().unwrap_or(0);
        fleet::on_response(token_id, status_code, response_size, now_ms);
    }

    fn on_done(&mut self) -> bool {
        if self.held {
            fleet::forget(self.context_id, super::now_ms().unwrap_or(0));
        }
        true
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            log::error!("request refused: the plugin has no valid configuration");
            return unavailable("tollgate is not configured\n");
        };
        let Some(now_ms) = super::now_ms() else {
            log::error!("request refused: the host clock is unavailable");
            return unavailable("tollgate cannot read the clock\n");
        };
        let fleet_input = Attempt {
            now_ms,
            ..Attempt::default()
        };
        match run(&runtime, &fleet_input, now_ms) {
            Step::Continue(fields) => {
                self.rate_limit = fields;
                Action::Continue
            }
            Step::Replied => Action::Pause,
            Step::Wait(wait) => {
                self.held = true;
                fleet::hold(self.context_id, &runtime, wait, now_ms, now_ms);
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Added, not set: the upstream's own RateLimit fields (if it sends any) stay, and the
        // field becomes the list of both (see the README); adding is also the cheaper call.
        let fields = match self.rate_limit.take() {
            Some(fields) => Some(fields),
            None if self.held => fleet::fields_of(self.context_id),
            None => None,
        };
        if let Some(fields) = fields {
            let headers = MapType::HttpResponseHeaders;
            if let Some(policy) = &fields.policy {
                if let Err(status) = hostcalls::add_map_value(headers, "ratelimit-policy", policy) {
                    log_failure("add response header", status);
                }
            }
            if let Err(status) = hostcalls::add_map_value(headers, "ratelimit", &fields.state) {
                log_failure("add response header", status);
            }
        }
        Action::Continue
    }
}
