//! Servers outside the product that the tests stand in for, each on a free port in the test
//! process and stopped (its threads joined) when dropped.

mod control_plane;
mod facilitator;
mod llm;
#[cfg(feature = "rls")]
mod rls_server;
mod server;
mod sink;

pub use control_plane::*;
pub use facilitator::*;
pub use llm::*;
#[cfg(feature = "rls")]
pub use rls_server::*;
pub use server::*;
pub use sink::*;
