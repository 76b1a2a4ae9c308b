//! quotad's tests use the workspace's test kit (`testkit/`). What only they can name is here:
//! the quotad cargo builds for this package's tests.

// Each test file uses some of it.
#![allow(dead_code, unused_imports)]

pub use tollgate_testkit::rls::*;
pub use tollgate_testkit::*;
// The kit names two `request`s: quotad's tests send RLS requests (HTTP goes by `try_request`).
pub use tollgate_testkit::rls::request;

/// The quotad under test: `Quotad::on(QUOTAD, &redis)`.
pub const QUOTAD: &str = env!("CARGO_BIN_EXE_quotad");
