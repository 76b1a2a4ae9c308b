//! The host-call floor for tollgate: per request, exactly the host calls an admitted tollgate
//! request makes in the benchmark's configuration, with values of the same sizes, and nothing
//! else — no parsing, no formatting, no decision. The benchmark compares tollgate's CPU above
//! the empty filter with this filter's: the difference is tollgate's own code.
//!
//! The calls, in order (keep in step with src/host/http.rs):
//! 1. read the clock;
//! 2. read the `x-api-key` request header;
//! 3. read the consumer's shared-data record (here keyed by the key itself) with its CAS token;
//! 4. write a record of the same size, CAS-checked;
//! 5. set the two identity request headers (values as long as the bench's names);
//! 6. on the response, add `RateLimit-Policy` and `RateLimit` (values as long as tollgate's).
//!
//! `RateLimit` changes on every request, as tollgate's does (its remaining count goes down):
//! over HTTP/2, Envoy's header compression (HPACK) indexes a value it has sent before and then
//! sends one byte for it, so a constant value made the floor ~1.2 µs per request cheaper than
//! the header it stands for (measured 2026-12-02, bench/run.py's HTTP/2 load).

use std::sync::atomic::{AtomicU32, Ordering};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(Root));
}}

/// As long as tollgate's record for a plan of two limits named `monthly` and `per-second`.
const RECORD: &[u8] = &[7u8; RECORD_LEN];
/// `tollgate::record::encoded_len(["monthly", "per-second"])` (a test in tests/bench.rs checks it).
const RECORD_LEN: usize = 70;
const POLICY: &str = "\"monthly\";q=1000000000;w=2592000, \"per-second\";q=1000000000;w=1";
const STATE: &str = "\"monthly\";r=999999999;t=1234567, \"per-second\";r=999999999;t=1";
/// Where the first limit's remaining count (nine digits) starts in `STATE`.
const REMAINING_AT: usize = 12;

/// Requests so far: written into `STATE`'s first remaining count (a Wasm VM is one thread).
static REQUESTS: AtomicU32 = AtomicU32::new(0);

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Floor;

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _ = hostcalls::get_current_time();
        let key = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "x-api-key");
        // tollgate's key is `tollgate:v1:consumer:c<n>`; `key-<n>` is close enough in length
        // and needs no lookup.
        let name = match &key {
            Ok(Some(bytes)) => std::str::from_utf8(bytes).unwrap_or("key-0"),
            _ => "key-0",
        };
        let cas = match hostcalls::get_shared_data(name) {
            Ok((_, cas)) => cas,
            Err(_) => None,
        };
        let _ = hostcalls::set_shared_data(name, Some(RECORD), cas);
        let _ = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            "x-tollgate-consumer",
            Some("c1234"),
        );
        let _ = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            "x-tollgate-plan",
            Some("basic"),
        );
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "ratelimit-policy", POLICY);
        let mut state = [0u8; STATE.len()];
        state.copy_from_slice(STATE.as_bytes());
        let mut n = 999_999_999 - REQUESTS.fetch_add(1, Ordering::Relaxed) % 999_999_999;
        for digit in state[REMAINING_AT..REMAINING_AT + 9].iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let state = std::str::from_utf8(&state).unwrap_or(STATE);
        let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "ratelimit", state);
        Action::Continue
    }
}
