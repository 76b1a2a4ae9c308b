//! The HTTP context: has the request decided and its verdict carried out ([`super::request`]),
//! and adds the RateLimit fields to the upstream's response. In fleet mode a request may also
//! be held (paused) while its consumer's lease is refilled ([`super::fleet`]), and is then
//! decided again in its own context.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

use super::buffers;
use super::clock::now_ms;
use super::draws;
use super::fleet;
use super::held::{put_entry, rewrite_body, take_entry, HeldBody, CHARGED, HELD_BODIES};
use super::payments::{self, Paying};
use super::request::{log_failure, request_header, run_with, send, unavailable};
use super::runtime::Runtime;
use super::shared_data::SharedData;
use crate::decision::Charged;
use crate::decision::{Attempt, Price};
use crate::llm::Api;
use crate::response::{body_too_large, invalid_body, RateLimitFields};
use crate::settlement::{read_llm, write, Pending};
use crate::verdict::Step;

pub struct Filter {
    runtime: Option<Rc<Runtime>>,
    /// RateLimit fields to add to the upstream's response.
    rate_limit: Option<RateLimitFields>,
    context_id: u32,
    /// Its root context's id (which settles its payment, if it carries one).
    root: u32,
    /// Fleet mode: the request was held for a lease refill (it was then decided, and its
    /// RateLimit fields kept, by [`fleet`]).
    held: bool,
    /// An LLM route's request, decided once its body is in: the route's index and API.
    awaiting_body: Option<(usize, Api)>,
    /// The request headers its dry run read (and `content-type`), for the decision made with
    /// the body: Envoy no longer lends the headers once they went upstream.
    kept_headers: Vec<(String, Option<Vec<u8>>)>,
    /// A priced, admitted request, until its settlement is written.
    pending: Option<Pending>,
    /// An LLM request held at its body (fleet mode): its metering, for the settlement once
    /// it is admitted from another context.
    held_llm: Option<(Api, crate::config::Weights, usize)>,
    /// The request's route in `routes` (a priced route), from its headers.
    route: Option<usize>,
    /// The store, made while the request's headers were there (in a fault-injection build it
    /// reads one, and Envoy lends them no longer).
    store: SharedData,
    /// A request held while its payment is verified and settled (kept once it is resumed:
    /// its response picks up what the root left for it).
    paying: Option<Paying>,
}

impl Filter {
    pub fn new(runtime: Option<Rc<Runtime>>, context_id: u32, root: u32) -> Self {
        Filter {
            root,
            runtime,
            rate_limit: None,
            context_id,
            held: false,
            awaiting_body: None,
            kept_headers: Vec::new(),
            pending: None,
            held_llm: None,
            route: None,
            store: SharedData::default(),
            paying: None,
        }
    }

    /// A decided request goes on: its RateLimit fields kept, a refill started, and a priced
    /// request's charge kept for its settlement.
    fn go_on(
        &mut self,
        runtime: &Rc<Runtime>,
        attempt: &Attempt,
        step: Step,
        llm: Option<(Api, crate::config::Weights, usize)>,
        route: Option<usize>,
    ) -> Result<Option<Charged>, Action> {
        match step {
            Step::Continue {
                fields,
                refill,
                charged,
            } => {
                self.rate_limit = fields;
                if let Some((consumer, ask)) = refill {
                    fleet::refill_ahead(runtime, consumer, ask);
                }
                if let Some(charged) = &charged {
                    self.pending = pending_for(runtime, charged, route, llm);
                }
                Ok(charged)
            }
            Step::Replied => Err(Action::Pause),
            Step::Pay(pay) => {
                let now_ms = now_ms().unwrap_or(0);
                self.route = route;
                let (root, context) = (self.root, self.context_id);
                self.paying = payments::start(
                    root,
                    context,
                    runtime,
                    pay,
                    attempt.price,
                    &self.store,
                    now_ms,
                );
                Err(Action::Pause)
            }
            Step::Draw(ask) => {
                self.route = route;
                match draws::start(self.context_id, runtime, attempt, ask) {
                    None => Err(Action::Pause),
                    Some(step) => self.go_on(runtime, attempt, step, llm, route),
                }
            }
            Step::Wait(wait) => {
                self.held = true;
                self.held_llm = llm;
                let now_ms = now_ms().unwrap_or(0);
                fleet::hold(self.context_id, runtime, wait, attempt, now_ms);
                Err(Action::Pause)
            }
        }
    }

    /// The request's body is in: price it, decide, and forward it with its output cap set.
    fn decide_llm(&mut self, runtime: &Rc<Runtime>, route: usize, api: Api, size: usize) -> Action {
        let config = &runtime.config;
        let body = buffers::get(BufferType::HttpRequestBody, 0, size).unwrap_or_default();
        let request = match read_llm(config, api, &body) {
            Ok(request) => request,
            Err(reply) => {
                log::debug!("refuse an LLM request whose body cannot be priced");
                return send(&reply);
            }
        };
        let Some(now_ms) = now_ms() else {
            return unavailable("tollgate cannot read the clock\n");
        };
        let attempt = Attempt {
            now_ms,
            price: Price {
                route: Some(route),
                tokens: Some(request.ask),
            },
            headers_forwarded: true,
            ..Attempt::default()
        };
        let kept = std::mem::take(&mut self.kept_headers);
        let mut from_kept = |name: &str| {
            kept.iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.clone())
        };
        let store = self.store;
        let step = run_with(runtime, &attempt, now_ms, &mut from_kept, &store);
        if let Step::Wait(_) = step {
            // Fleet mode: held until the lease is refilled, then decided again from another
            // context (`decide_held_body`), which needs what this one has.
            put_entry(
                &HELD_BODIES,
                HeldBody {
                    context: self.context_id,
                    kept_headers: kept.clone(),
                    store,
                    body: request.body,
                    cap: request.ask.cap,
                    size,
                },
            );
            let llm = Some((api, request.weights, request.model));
            return match self.go_on(runtime, &attempt, step, llm, Some(route)) {
                Ok(_) => Action::Continue,
                Err(action) => action,
            };
        }
        let charged = match self.go_on(
            runtime,
            &attempt,
            step,
            Some((api, request.weights, request.model)),
            Some(route),
        ) {
            Ok(charged) => charged,
            Err(action) => return action,
        };
        let cap = charged
            .and_then(|c| c.output_cap)
            .unwrap_or(request.ask.cap);
        if !rewrite_body(request.body, cap, size) {
            // Never forward a body whose cap was not set: the reservation would not bound it.
            log::error!("LLM request: the body could not be rewritten with its output cap");
            return unavailable("tollgate could not set the request's output cap\n");
        }
        Action::Continue
    }

    /// A held request was admitted from another context: its settlement is this one's.
    fn adopt(&mut self, charged: Charged) {
        if let Some(runtime) = self.runtime.clone() {
            self.pending = pending_for(&runtime, &charged, self.route, self.held_llm);
        }
    }

    /// Writes the settlement of a priced request, once (`complete`: its response ended).
    fn settle(&mut self, complete: bool) {
        let (Some(runtime), Some(pending)) = (self.runtime.clone(), self.pending.as_mut()) else {
            return;
        };
        let consumer = pending.consumer();
        let (metrics, billed) = write(&runtime.config, &self.store, pending, complete);
        runtime.metrics.record(&metrics);
        if let (Some(meter), Some(billed)) = (&runtime.meter, billed) {
            let now = now_ms().unwrap_or(0).div_euclid(1000);
            meter.record_tokens(consumer, now, billed);
        }
    }
}

/// The settlement a priced, admitted request waits for, if it has one: an LLM request's, or a
/// route's that states its cost in a response header.
fn pending_for(
    runtime: &Runtime,
    charged: &Charged,
    route: Option<usize>,
    llm: Option<(Api, crate::config::Weights, usize)>,
) -> Option<Pending> {
    let route = route.and_then(|i| runtime.config.routes.get(i));
    let settles = llm.is_some() || route.is_some_and(|r| !r.cost_headers.is_empty());
    settles.then(|| Pending::new(charged.clone(), route, llm))
}

impl Context for Filter {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let now_ms = now_ms().unwrap_or(0);
        if draws::on_answer(
            self.context_id,
            token_id,
            status_code,
            response_size,
            now_ms,
        ) {
            return;
        }
        fleet::on_response(token_id, status_code, response_size, now_ms);
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let (Some(paying), Some(runtime)) = (self.paying.take(), self.runtime.clone()) else {
            return;
        };
        if paying.token != token_id {
            self.paying = Some(paying);
            return;
        }
        let now_ms = now_ms().unwrap_or(0);
        let store = self.store;
        let context = self.context_id;
        let next = payments::on_verify_answer(
            self.root,
            context,
            &runtime,
            paying,
            &store,
            num_headers,
            body_size,
            now_ms,
        );
        if let payments::Next::Held(paying) = next {
            // Its settlement is the root's, which resumes or answers this request.
            self.paying = Some(paying);
        }
    }

    fn on_done(&mut self) -> bool {
        draws::forget(self.context_id);
        // A paying request may have been held for a refill by its root (fleet mode).
        let paid_for = self.paying.is_some();
        if let Some(paying) = self.paying.take() {
            payments::abandon(&paying, &self.store, now_ms().unwrap_or(0));
            let context = self.context_id;
            payments::forget(context);
            let _ = payments::take_paid(context);
            if self.pending.is_none() {
                if let Some((_, charged)) = take_entry(&CHARGED, |(c, _)| *c == context) {
                    self.adopt(charged);
                }
            }
        }
        if self.held || paid_for {
            fleet::forget(self.context_id, now_ms().unwrap_or(0));
            let context = self.context_id;
            take_entry(&HELD_BODIES, |h| h.context == context);
            if let Some(charged) = take_entry(&CHARGED, |(c, _)| *c == context) {
                // Admitted, and gone before its response: charged its reservation.
                self.adopt(charged.1);
            }
        }
        // A response torn down before its end (a cut stream, a client gone): charged its
        // reservation (or released, if it was an error).
        self.settle(false);
        true
    }
}

impl Filter {
    /// An LLM route's headers. The reservation depends on the body, and a Proxy-Wasm filter
    /// cannot read a body before its headers go on (Envoy's host turns a paused header
    /// callback into "stop all"). So the headers get a dry run — who is calling, their
    /// standing, the limits a request takes from without its body; nothing counted — and,
    /// if it would pass, go upstream without `content-length` (the body will be rewritten);
    /// the body is held until it is complete, then priced and decided. A refusal then
    /// resets the upstream request: the provider never receives the body.
    fn await_body(
        &mut self,
        runtime: &Rc<Runtime>,
        route: usize,
        api: Api,
        end: bool,
        now_ms: i64,
    ) -> Action {
        let max = runtime.config.llm.as_ref().map_or(0, |l| l.max_body_bytes);
        let headers = MapType::HttpRequestHeaders;
        let announced = hostcalls::get_map_value_bytes(headers, "content-length")
            .ok()
            .flatten()
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok());
        if announced.is_some_and(|length| length > max) {
            return send(&body_too_large(max));
        }
        let attempt = Attempt {
            now_ms,
            price: Price {
                route: Some(route),
                tokens: None,
            },
            dry_run: true,
            ..Attempt::default()
        };
        let mut kept = vec![("content-type".to_string(), request_header("content-type"))];
        let mut keeping = |name: &str| {
            if let Some((_, value)) = kept.iter().find(|(n, _)| n == name) {
                return value.clone();
            }
            let value = request_header(name);
            kept.push((name.to_string(), value.clone()));
            value
        };
        let store = self.store;
        let step = run_with(runtime, &attempt, now_ms, &mut keeping, &store);
        self.kept_headers = kept;
        match step {
            Step::Continue { .. } => {}
            Step::Replied => return Action::Pause,
            // A dry run never waits (fleet mode only looks at the lease), pays nor draws.
            Step::Wait(_) | Step::Pay(_) | Step::Draw(_) => {
                return unavailable("tollgate cannot price this request\n")
            }
        }
        if end {
            // A CORS preflight (passed by the dry run) has no body to price; anything else must.
            if request_header(":method").as_deref() == Some(b"OPTIONS") {
                return Action::Continue;
            }
            return send(&invalid_body("", "an LLM request needs a JSON body"));
        }
        // The body will change (its cap), and its usage must be readable: no length, and no
        // compressed answer.
        for name in ["content-length", "accept-encoding"] {
            if let Err(status) = hostcalls::set_map_value(headers, name, None) {
                log_failure("remove request header", status);
            }
        }
        self.awaiting_body = Some((route, api));
        Action::Continue
    }
}

impl Filter {
    fn remove_cost_headers(&self) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        let Some(route) = self.route.and_then(|i| runtime.config.routes.get(i)) else {
            return;
        };
        for (_, name) in &route.cost_headers {
            if let Err(status) = hostcalls::remove_map_value(MapType::HttpResponseHeaders, name) {
                log_failure("remove response header", status);
            }
        }
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            log::error!("request refused: the plugin has no valid configuration");
            return unavailable("tollgate is not configured\n");
        };
        let Some(now_ms) = now_ms() else {
            log::error!("request refused: the host clock is unavailable");
            return unavailable("tollgate cannot read the clock\n");
        };
        self.store = SharedData::for_request();
        let mut price = Price::default();
        // Routes are looked up only when some are priced: a plain configuration pays nothing.
        if !runtime.config.routes.is_empty() {
            let name = buffers::property(&["xds", "route_name"]).unwrap_or_default();
            if let Some((index, route)) = runtime.config.routes.find(&name) {
                price.route = Some(index);
                self.route = Some(index);
                if let Some(api) = route.llm {
                    return self.await_body(&runtime, index, api, end_of_stream, now_ms);
                }
            }
        }
        let attempt = Attempt {
            now_ms,
            price,
            ..Attempt::default()
        };
        let store = self.store;
        let step = run_with(&runtime, &attempt, now_ms, &mut request_header, &store);
        match self.go_on(&runtime, &attempt, step, None, price.route) {
            Ok(_) => Action::Continue,
            Err(action) => action,
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Some((route, api)), Some(runtime)) = (self.awaiting_body, self.runtime.clone()) else {
            return Action::Continue;
        };
        let max = runtime.config.llm.as_ref().map_or(0, |l| l.max_body_bytes);
        if u64::try_from(body_size).unwrap_or(u64::MAX) > max {
            self.awaiting_body = None;
            return send(&body_too_large(max));
        }
        if !end_of_stream {
            // Envoy buffers the body until the end (bounded by the listener's buffer limit).
            return Action::Pause;
        }
        self.awaiting_body = None;
        self.decide_llm(&runtime, route, api, body_size)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // A paid request resumed by the root: its response additions and charge.
        let paid = if self.paying.is_some() {
            payments::take_paid(self.context_id)
        } else {
            None
        };
        if (self.held || paid.is_some()) && self.pending.is_none() {
            let context = self.context_id;
            if let Some((_, charged)) = take_entry(&CHARGED, |(c, _)| *c == context) {
                self.adopt(charged);
            }
        }
        if self.pending.is_none() {
            // Not settled (shadow mode forwarded it, or it went uncounted): the upstream's cost
            // headers are still never the client's.
            self.remove_cost_headers();
        }
        if let Some(pending) = self.pending.as_mut() {
            let headers = MapType::HttpResponseHeaders;
            let read = |name: &str| hostcalls::get_map_value_bytes(headers, name).ok().flatten();
            let status =
                read(":status").and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok());
            let event_stream =
                read("content-type").is_some_and(|ct| ct.starts_with(b"text/event-stream"));
            for name in pending.on_response_headers(status, event_stream, read) {
                if let Err(status) = hostcalls::remove_map_value(headers, &name) {
                    log_failure("remove response header", status);
                }
            }
            if end_of_stream {
                self.settle(true);
            }
        }
        // Added, not set: the upstream's own RateLimit fields (if it sends any) stay, and the
        // field becomes the list of both (docs/responses.md); adding is also the cheaper call.
        let (payment_response, paid_fields) = match paid {
            Some(paid) => (paid.header, paid.fields),
            None => (None, None),
        };
        // A paid request may have been held for a refill after its payment (fleet mode).
        let fields = match self
            .rate_limit
            .take()
            .or_else(|| draws::take_fields(self.context_id))
        {
            Some(fields) => Some(fields),
            None if self.held || self.paying.is_some() => {
                fleet::fields_of(self.context_id).or(paid_fields)
            }
            None => paid_fields,
        };
        if let Some((name, value)) = payment_response {
            let headers = MapType::HttpResponseHeaders;
            // A Payment-Receipt only on success, and never cached for others (the draft's
            // MUSTs); x402's PAYMENT-RESPONSE says what became of the payment whatever follows.
            let receipt = name == crate::paymentauth::PAYMENT_RECEIPT;
            let success = || {
                hostcalls::get_map_value_bytes(headers, ":status")
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.first() == Some(&b'2'))
            };
            if !receipt || success() {
                if let Err(status) = hostcalls::add_map_value(headers, name, &value) {
                    log_failure("add response header", status);
                }
                // `private` added to what the upstream said (a `no-store` stays as it is).
                let cache = hostcalls::get_map_value_bytes(headers, "cache-control")
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let said = String::from_utf8_lossy(&cache).to_ascii_lowercase();
                if receipt && !said.contains("private") && !said.contains("no-store") {
                    let value = if said.trim().is_empty() {
                        "private".to_string()
                    } else {
                        format!("{}, private", String::from_utf8_lossy(&cache))
                    };
                    if let Err(status) =
                        hostcalls::set_map_value(headers, "cache-control", Some(&value))
                    {
                        log_failure("set response header", status);
                    }
                }
            }
        }
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

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // The body ended without an end of stream on its last data: an LLM request is not
        // priced through trailers (never admitted unpriced).
        if self.awaiting_body.take().is_some() {
            return send(&invalid_body(
                "",
                "an LLM request is priced from its body alone: send it without trailers",
            ));
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        // Trailers end the response: its body is complete.
        self.settle(true);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(pending) = self.pending.as_mut() {
            if body_size > 0 {
                // Streamed through (never buffered): the buffer is this chunk.
                if let Some(chunk) = buffers::get(BufferType::HttpResponseBody, 0, body_size) {
                    pending.on_body(&chunk);
                }
            }
            if end_of_stream {
                self.settle(true);
            }
        }
        Action::Continue
    }
}
