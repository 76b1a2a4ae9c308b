//! The plugin configuration: its JSON model (stage 1, serde) and its validation into the
//! compiled [`Config`] the hot path reads (stage 2: plans resolved, windows parsed, keys hashed
//! into a map). Any error is one line that names the field, and the whole configuration is
//! refused: nothing is half-applied.
//!
//! Configuration is a lower layer than the features it configures: each feature's section
//! (`events`, `entitlements`) is a module here, so that one deserialisation of the document
//! names every field path and no module of `config` imports a feature. This file only
//! declares and re-exports.
//!
//! - [`model`]: the compiled configuration (what the request path reads) and its look-ups;
//! - [`plan`]: plans, limits, consumers and their standing;
//! - [`raw`]: the JSON model serde reads (stage 1);
//! - [`compile`]: validation into the compiled form (stage 2), URLs, offsets, `store.rls`;
//! - [`events`], [`entitlements`], [`payments`]: those sections' models and validation;
//! - [`routes`]: what a request costs per Envoy route, LLM routes, models and weights;
//! - [`load`]: the two loads (the plugin configuration, and with an entitlements snapshot);
//! - [`keys`]: the key → consumer map (plaintext and `sha256:` keys);
//! - [`errors`]: error messages with field paths, in a user's words, never showing a key;
//! - [`secret`]: `Authorization` values, inline or from the Wasm VM's environment;
//! - [`warnings`]: what `tollgate check` warns about (secrets held in the configuration);
//! - [`summary`]: the one-line description logged at start and printed by `tollgate check`.

mod compile;
pub mod entitlements;
mod errors;
pub mod events;
mod keys;
mod load;
mod model;
pub mod payments;
mod plan;
mod raw;
mod routes;
mod secret;
mod summary;
#[cfg(test)]
mod tests;
mod warnings;

pub use compile::{compile_https_url, parse_utc_offset, MAX_URL_LEN};
pub use entitlements::{
    compile_bounds, compile_settings, Bounds, RawSettings, Settings, UntilFirstSnapshot,
};
pub use errors::ConfigError;
pub use events::{EventsConfig, RawEvents};
pub use keys::DigestHasher;
pub use model::*;
pub use payments::{Pack, PackChallenge, Payments};
pub use plan::*;
pub use raw::{CorsPreflight, Mode, OnStoreError, UniqueMap};
pub use routes::*;
pub use secret::{process_env, Env, Secret};
pub use summary::format_utc_offset;
pub use warnings::warnings;
