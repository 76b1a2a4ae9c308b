//! The HTTP context: hands the request's headers and the time to the core
//! ([`crate::verdict::handle`]), then carries out the verdict — forward with header changes,
//! or send the local reply — and adds the RateLimit fields to the upstream's response.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, GrpcStatusCode, LogLevel, MapType};

use super::root::Runtime;
use super::shared_data::SharedData;
use crate::response::Reply;
use crate::verdict::{self, handle};

pub struct Filter {
    runtime: Option<Rc<Runtime>>,
    /// RateLimit fields to add to the upstream's response.
    response_headers: Vec<(&'static str, String)>,
}

impl Filter {
    pub fn new(runtime: Option<Rc<Runtime>>) -> Self {
        Filter {
            runtime,
            response_headers: Vec::new(),
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
        let verdict = handle(
            &runtime.config,
            &mut request,
            now,
            &SharedData::for_request(),
            &runtime.exhausted,
            &runtime.shadow_log,
        );
        runtime.metrics.record(&verdict.events);
        match verdict.action {
            verdict::Action::Reply(reply) => send(&reply),
            verdict::Action::Forward(forward) => {
                for name in forward.remove {
                    if let Err(status) =
                        hostcalls::remove_map_value(MapType::HttpRequestHeaders, name)
                    {
                        log_failure("remove request header", status);
                    }
                }
                for (name, value) in forward.set {
                    if let Err(status) =
                        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
                    {
                        log_failure("set request header", status);
                    }
                }
                if let Some(path) = forward.path {
                    if let Err(status) = hostcalls::set_map_value_bytes(
                        MapType::HttpRequestHeaders,
                        ":path",
                        Some(&path),
                    ) {
                        log_failure("set :path", status);
                    }
                }
                self.response_headers = forward.response_headers;
                Action::Continue
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.response_headers) {
            if let Err(status) =
                hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(&value))
            {
                log_failure("set response header", status);
            }
        }
        Action::Continue
    }
}
