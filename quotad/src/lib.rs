//! quotad: fleet-wide quota counts on Redis, behind Envoy's rate limit service protocol.
//!
//! Where each behaviour lives:
//! - [`request`]: the descriptor contract: an RLS request becomes a decision (consumer, limits,
//!   Redis keys and TTLs), and the store's answer becomes the RLS response.
//! - [`store`]: Redis (one node, a Cluster or Sentinel) and the atomic Lua script (`take.lua`).
//! - [`redis_access`]: TLS towards Redis (a private CA, a client certificate) and the
//!   credentials of the data nodes behind Sentinel, read from files at start.
//! - [`service`]: the gRPC service, translating and counting outcomes.
//! - [`payments`]: fleet mode's payments API (claims, prepaid balances, ledgers), beside the
//!   rate limit service on the same listener, and its Lua scripts (`payments/*.lua`).
//! - [`policy`]: what a caller may claim (domains, largest limit and hits_addend, windows).
//! - [`metrics`]: the Prometheus metrics.
//! - [`bounds`]: what one client can make quotad hold; the capped listener.
//! - [`tls`]: (mutual) TLS on the gRPC listener, the client allow-list, reloading certificates.
//! - [`shutdown`]: draining after SIGTERM/SIGINT, with a deadline; a second signal exits.
//! - `main.rs`: flags, start, health, `/metrics` and `/healthz`.

pub mod bounds;
pub mod metrics;
pub mod payments;
pub mod policy;
pub mod redis_access;
pub mod request;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod tls;
