//! The HTTP context: has the request decided and its verdict carried out ([`super::request`]),
//! and adds the RateLimit fields to the upstream's response. In fleet mode a request may also
//! be held (paused) while its consumer's lease is refilled ([`super::fleet`]), and is then
//! decided again in its own context.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use super::clock::now_ms;
use super::fleet;
use super::request::{log_failure, run, unavailable};
use super::runtime::Runtime;
use crate::decision::Attempt;
use crate::response::RateLimitFields;
use crate::verdict::Step;

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

impl Context for Filter {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let now_ms = now_ms().unwrap_or(0);
        fleet::on_response(token_id, status_code, response_size, now_ms);
    }

    fn on_done(&mut self) -> bool {
        if self.held {
            fleet::forget(self.context_id, now_ms().unwrap_or(0));
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
        let Some(now_ms) = now_ms() else {
            log::error!("request refused: the host clock is unavailable");
            return unavailable("tollgate cannot read the clock\n");
        };
        let attempt = Attempt {
            now_ms,
            ..Attempt::default()
        };
        match run(&runtime, &attempt, now_ms) {
            Step::Continue { fields, refill } => {
                self.rate_limit = fields;
                if let Some((consumer, ask)) = refill {
                    fleet::refill_ahead(&runtime, consumer, ask);
                }
                Action::Continue
            }
            Step::Replied => Action::Pause,
            Step::Wait(wait) => {
                self.held = true;
                fleet::hold(self.context_id, &runtime, wait, now_ms);
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Added, not set: the upstream's own RateLimit fields (if it sends any) stay, and the
        // field becomes the list of both (docs/responses.md); adding is also the cheaper call.
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
