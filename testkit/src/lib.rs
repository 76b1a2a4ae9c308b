//! tollgate's test kit: one implementation of what the end-to-end tests of the filter (`tests/`),
//! quotad (`quotad/tests/`) and the CLI (`cli/tests/`) need around the code under test.
//!
//! - [`paths`]: the repository and the built artifacts (`.wasm`, Envoy, quotad).
//! - [`ports`], [`temp`], [`poll`]: free ports, temporary directories, polling with deadlines
//!   and alignment to quota windows.
//! - [`process`]: a child process with its log captured to a file, stopped by its PID, the log
//!   printed when the test fails; and running a command to completion.
//! - [`redis`], [`quotad`], [`envoy`]: the services, each started on free ports in a directory of
//!   its own and polled until ready.
//! - [`http`]: HTTP/1.1 clients (one request, a kept-alive connection) and h2load.
//! - [`fakes`]: servers outside the product that the tests stand in for (the usage-events sink,
//!   the control plane of live entitlements, an LLM provider, an x402 facilitator).
//! - [`x402`]: x402 payment headers as a paying client sends them.
//! - [`paymentauth`]: HTTP Payment challenges read and credentials made, as a paying client does.
//! - `rls` (feature `rls`): quotad's gRPC client.
//! - [`tls`]: a test CA and the certificates it issues (quotad and Envoy in mutual TLS; with
//!   features `rls` and `tls`, a TLS client of quotad).
//!
//! The rules they keep, so that tests do not flake on a loaded 2-core machine: every listener on
//! a free port, every Envoy with a `--base-id` of its own, every process in a temporary
//! directory and stopped by its PID when its guard drops (a panic too), its log printed if the
//! test is failing, and readiness polled against a deadline, never slept for.

pub mod envoy;
pub mod fakes;
pub mod http;
pub mod paths;
pub mod paymentauth;
pub mod poll;
pub mod ports;
pub mod process;
pub mod quotad;
pub mod redis;
#[cfg(feature = "rls")]
pub mod rls;
pub mod temp;
pub mod tls;
pub mod x402;

pub use envoy::*;
pub use fakes::*;
pub use http::*;
pub use paths::*;
pub use paymentauth::*;
pub use poll::*;
pub use ports::*;
pub use process::*;
pub use quotad::*;
pub use redis::*;
pub use temp::*;
pub use x402::*;
