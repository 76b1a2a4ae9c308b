//! tollgate: per-consumer API quotas for Envoy, as a proxy-wasm filter.
//!
//! Where each behaviour lives:
//! - [`config`]: the plugin's JSON configuration, its validation and compiled form.
//! - [`credentials`]: where the API key comes from (header, Authorization, query).
//! - [`entitlements`]: live consumers pulled from a control plane (settings, shared records).
//! - [`window`] and [`time`]: quota windows and UTC calendar arithmetic.
//! - [`quota`]: the atomic check-and-take over a consumer's counter record.
//! - [`record`]: the record's binary format in shared data.
//! - [`memo`]: what a VM remembers between requests (spent consumers, rendered policies).
//! - [`store`]: the shared-data trait the counting goes through (and an in-memory fake).
//! - [`admission`]: who is calling, their standing, and whether their limits admit the request
//!   (a [`admission::Decision`]; [`verdict`] then says what the filter does with it).
//! - [`verdict`]: what the filter does with a request: forward (identity headers, hidden
//!   credential, RateLimit fields) or reply; shadow mode, store-error policy, CORS preflights
//!   and the usage endpoint.
//! - [`shadow_log`]: at most one shadow-mode log line per consumer and reason a minute.
//! - [`response`]: RateLimit headers, problem+json (or gRPC) refusals, the usage document.
//! - [`events`]: usage events, threshold alerts and reminders (CloudEvents to an HTTP sink).
//! - [`metrics`]: counter names and which ones an event increments.
//! - `host` (wasm only): the proxy-wasm glue, the only code that calls the host.
//!
//! One crate, two builds. On wasm32 it is the filter: `host` and its proxy-wasm dependency
//! exist only there. On the host it is a plain library of the pure core, which the CLI
//! (`cli/`), quotad (`quotad/`, for the window and name rules), the fuzz targets and the tests
//! link without any proxy-wasm import. A core crate of its own (as Kuadrant's wasm-shim has)
//! would draw the same line with one more manifest; the `cfg` gate draws it as long as `host`
//! stays the only module that names `proxy_wasm`.

pub mod admission;
pub mod config;
pub mod counters;
pub mod credentials;
pub mod decision;
pub mod duration;
pub mod entitlements;
pub mod events;
pub mod fleet;
pub mod lease;
pub mod memo;
pub mod metrics;
pub mod names;
pub mod quota;
pub mod record;
pub mod response;
pub mod rls;
pub mod sha256;
pub mod shadow_log;
pub mod store;
pub mod time;
pub mod verdict;
pub mod window;

#[cfg(target_arch = "wasm32")]
mod host;

/// The crate version and, when built from a git checkout, its commit.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TOLLGATE_GIT"), ")");
