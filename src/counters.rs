//! The counters a configuration needs before its first request: every counted consumer's
//! record (local mode) or lease (fleet mode). Envoy checks no CAS when a key is first written
//! (see `quota.rs`), so they are created when the configuration is loaded, not by a request.

use crate::config::{Config, OnStoreError, STORE_PREFIX};
use crate::lease::create_leases;
use crate::quota::create_records;
use crate::store::{create_if_missing, Store, StoreError};

/// Shards of the payment claims (`crate::payments`), each a shared-data entry holding a JSON
/// list of claims, created with a configuration that sells credits.
pub const PAYMENT_SHARDS: usize = 16;

/// The shared-data key of payment claim shard `i`.
pub fn payment_shard_key(i: usize) -> String {
    format!("{STORE_PREFIX}payments:{i}")
}

/// Creates the records or leases that do not exist yet (and, with `payments`, the claim
/// shards); returns how many records or leases were created.
pub fn create_counters(config: &Config, store: &impl Store) -> Result<usize, StoreError> {
    if config.payments.is_some() {
        for i in 0..PAYMENT_SHARDS {
            create_if_missing(store, &payment_shard_key(i), b"[]")?;
        }
    }
    match config.store {
        None => create_records(config, store),
        Some(_) => {
            let leases = create_leases(config, store)?;
            // `on_store_error: local` falls back to local mode's records.
            if config.on_store_error == OnStoreError::Local {
                create_records(config, store)?;
            }
            Ok(leases)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn config(store: &str, on_store_error: &str) -> Config {
        Config::from_json(
            format!(
                r#"{{"plans": {{"free": {{"limits": [{{"name": "d", "requests": 5, "window": "day"}}]}}}},
                    "consumers": {{"a": {{"plan": "free", "keys": ["ka"]}},
                                   "b": {{"plan": "free", "keys": ["kb"]}}}}
                    {store}{on_store_error}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    const FLEET: &str = r#", "store": {"rls": {"cluster": "quotad"}}"#;

    #[test]
    fn local_mode_creates_records_once() {
        let store = MemoryStore::new();
        assert_eq!(create_counters(&config("", ""), &store).unwrap(), 2);
        assert_eq!(create_counters(&config("", ""), &store).unwrap(), 0);
        assert!(store.get("tollgate:v1:consumer:a").unwrap().is_some());
    }

    #[test]
    fn fleet_mode_creates_leases_and_records_only_to_fall_back_on() {
        let store = MemoryStore::new();
        assert_eq!(create_counters(&config(FLEET, ""), &store).unwrap(), 2);
        assert!(store.get("tollgate:v1:lease:a").unwrap().is_some());
        assert!(store.get("tollgate:v1:consumer:a").unwrap().is_none());
        let local = r#", "on_store_error": "local""#;
        assert_eq!(create_counters(&config(FLEET, local), &store).unwrap(), 0);
        assert!(store.get("tollgate:v1:consumer:a").unwrap().is_some());
    }
}
