//! The proxy-wasm glue: the only code that calls the host. It gathers inputs (configuration
//! bytes, request headers, the clock), calls the pure core, and acts on its decisions.
//! `root.rs` is the composition root (nobody imports it); this file only declares.

mod buffers;
mod clock;
mod draws;
mod entitlements;
mod events;
mod fleet;
mod held;
mod http;
mod logger;
mod meter;
mod metrics;
mod payments;
mod request;
mod root;
mod runtime;
mod shared_data;
