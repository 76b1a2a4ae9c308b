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
        let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "ratelimit", STATE);
        Action::Continue
    }
}
