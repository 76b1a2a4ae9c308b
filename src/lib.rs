//! tollgate: per-consumer API quotas for Envoy, as a proxy-wasm filter.
//!
//! Which file owns which behaviour, and the layers the modules form, are in
//! `docs/development.md` (the one file map; `cli/tests/docs.rs` checks it names files that
//! exist). `host` (wasm only) is the proxy-wasm glue, the only code that calls the host.

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
pub mod llm;
pub mod memo;
pub mod metrics;
pub mod names;
pub mod paymentauth;
pub mod payments;
pub mod paywire;
pub mod quota;
pub mod record;
pub mod response;
pub mod rls;
pub mod settlement;
pub mod sha256;
pub mod shadow_log;
pub mod store;
pub mod time;
pub mod verdict;
pub mod window;
pub mod x402;

#[cfg(target_arch = "wasm32")]
mod host;

/// The crate version and, when built from a git checkout, its commit.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TOLLGATE_GIT"), ")");
