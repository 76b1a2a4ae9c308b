//! Carries a request's verdict out: decides it ([`crate::verdict::handle_with`]) with the
//! request's headers and the time, then sets the forwarded request's headers or sends the
//! local reply. Used for a request's first decision (`http.rs`) and, in fleet mode, for a
//! held request decided again in its own context (`fleet.rs`).

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, GrpcStatusCode, LogLevel, MapType};

use super::logger::host_log;
use super::runtime::Runtime;
use super::shared_data::SharedData;
use crate::decision::Attempt;
use crate::payments;
use crate::response::Reply;
use crate::shadow_log::ShadowLog;
use crate::verdict::{self, handle_with, Request, Step};

/// Decides the request of the effective context and carries the verdict out (headers set, or
/// the reply sent); `now_ms` is the host's clock.
pub fn run(runtime: &Rc<Runtime>, attempt: &Attempt, now_ms: i64) -> Step {
    let store = SharedData::for_request();
    run_with(runtime, attempt, now_ms, &mut request_header, &store)
}

/// A request header of the effective context, by lowercase name (only while the request's
/// headers are being processed: afterwards Envoy no longer lends them).
pub fn request_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
}

/// [`run`], reading the request's headers from `request` (e.g. those kept from a dry run,
/// once the headers went upstream) and counting in `store` (made while the headers were
/// there: in a fault-injection build it reads one).
pub fn run_with(
    runtime: &Rc<Runtime>,
    attempt: &Attempt,
    now_ms: i64,
    request: &mut impl Request,
    store: &SharedData,
) -> Step {
    let now = now_ms.div_euclid(1000);
    // A dry run logs nothing in shadow mode: the decision with the body will.
    let quiet;
    let shadow_log = if attempt.dry_run {
        quiet = ShadowLog::default();
        &quiet
    } else {
        &runtime.shadow_log
    };
    let mut verdict = handle_with(
        &runtime.config,
        request,
        now,
        store,
        &runtime.memo,
        shadow_log,
        attempt,
    );
    // A dry run that lets the request on counted nothing: its decision comes with the body.
    let counts = !attempt.dry_run || matches!(verdict.action, verdict::Action::Reply(_));
    if counts {
        runtime.metrics.record(&verdict.metrics);
        if let Some(meter) = &runtime.meter {
            meter.record(now, &mut verdict);
        }
    }
    match verdict.action {
        verdict::Action::Reply(mut reply) => {
            // A local reply after a settlement is a refusal (the paid request was decided
            // again): x402 says what became of the payment; a Payment-Receipt is for successes
            // only.
            if let Some((name, value)) = &attempt.paid {
                if *name != crate::paymentauth::PAYMENT_RECEIPT || reply.status / 100 == 2 {
                    reply.headers.push((name, value.clone()));
                }
            }
            send(&reply);
            Step::Replied
        }
        verdict::Action::Wait(wait) => Step::Wait(wait),
        verdict::Action::Pay(pay) => Step::Pay(pay),
        verdict::Action::Draw(ask) => Step::Draw(ask),
        // The headers were forwarded after a dry run: what the request headers need was done then.
        verdict::Action::Forward(forward) if attempt.headers_forwarded => Step::Continue {
            fields: forward.rate_limit,
            refill: forward.refill,
            charged: forward.charged,
        },
        verdict::Action::Forward(forward) => {
            let headers = MapType::HttpRequestHeaders;
            // Setting replaces whatever a client sent; with nobody to name (or
            // `identity_headers` off), setting none removes it.
            let (consumer_header, plan_header) = forward.identity_headers;
            let (consumer, plan) = match forward.named() {
                Some((consumer, plan)) => (Some(consumer), Some(plan)),
                None => (None, None),
            };
            for (name, value) in [(consumer_header, consumer), (plan_header, plan)] {
                if let Err(status) = hostcalls::set_map_value(headers, name, value) {
                    log_failure("set request header", status);
                }
            }
            // A payment is tollgate's business: the upstream never sees one.
            for (name, present) in payments::HEADERS.into_iter().zip(forward.payment_headers) {
                if present {
                    if let Err(status) = hostcalls::remove_map_value(headers, name) {
                        log_failure("remove request header", status);
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
            Step::Continue {
                fields: forward.rate_limit,
                refill: forward.refill,
                charged: forward.charged,
            }
        }
    }
}

pub fn log_failure(what: &str, status: proxy_wasm::types::Status) {
    host_log(LogLevel::Error, &format!("{what}: {status:?}"));
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

pub fn send(reply: &Reply) -> Action {
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

pub fn unavailable(body: &str) -> Action {
    send(&Reply {
        status: 503,
        headers: vec![("content-type", "text/plain".into())],
        body: body.into(),
        grpc_status: None,
    })
}
