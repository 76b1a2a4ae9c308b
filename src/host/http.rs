//! The HTTP context: hands the request's headers and the time to the core
//! ([`crate::verdict::handle`]), then carries out the verdict — forward with header changes,
//! or send the local reply — and adds the RateLimit fields to the upstream's response.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, GrpcStatusCode, LogLevel, MapType};

use super::root::Runtime;
use super::shared_data::SharedData;
use crate::response::{RateLimitFields, Reply};
use crate::verdict::{self, handle};

pub struct Filter {
    runtime: Option<Rc<Runtime>>,
    /// RateLimit fields to add to the upstream's response.
    rate_limit: Option<RateLimitFields>,
}

impl Filter {
    pub fn new(runtime: Option<Rc<Runtime>>) -> Self {
        Filter {
            runtime,
            rate_limit: None,
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

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            log::error!("request refused: the plugin has no valid configuration");
            return unavailable("tollgate is not configured\n");
        };
        let Some(now) = super::now() else {
            log::error!("request refused: the host clock is unavailable");
            return unavailable("tollgate cannot read the clock\n");
        };
        let mut request = |name: &str| {
            hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
                .ok()
                .flatten()
        };
        let mut verdict = handle(
            &runtime.config,
            &mut request,
            now,
            &SharedData::for_request(),
            &runtime.memo,
            &runtime.shadow_log,
        );
        runtime.metrics.record(&verdict.events);
        if let Some(meter) = &runtime.meter {
            meter.record(now, &mut verdict);
        }
        match verdict.action {
            verdict::Action::Reply(reply) => send(&reply),
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
                    if let Err(status) =
                        hostcalls::set_map_value_bytes(headers, ":path", Some(&path))
                    {
                        log_failure("set :path", status);
                    }
                }
                self.rate_limit = forward.rate_limit;
                Action::Continue
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Added, not set: the upstream's own RateLimit fields (if it sends any) stay, and the
        // field becomes the list of both (see the README); adding is also the cheaper call.
        if let Some(fields) = self.rate_limit.take() {
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
