//! The two loads: the plugin configuration alone ([`Config::from_json`]), and with a snapshot
//! of live entitlements ([`Config::with_snapshot`]): the consumers — and, if it has them, the
//! plans — pulled from the control plane, compiled together with the rest of the plugin
//! configuration exactly as a configuration load would compile them, so that a snapshot gets
//! the same schema, the same validation and the same error messages.
//!
//! Secrets named by `*_env` fields are read from the environment when the configuration is
//! compiled: [`Config::from_json`] and [`Config::with_snapshot`] read this process's (the Wasm
//! VM's, in the filter); the `_in` forms take another (the command line's stand-in, tests).

use serde::Deserialize;

use super::compile::compile;
use super::entitlements::{compile_bounds, Bounds};
use super::errors::{json_error, ConfigError};
use super::model::Config;
use super::raw::{RawConfig, RawConsumers, RawPlan, UniqueMap};
use super::secret::{process_env, Env};

impl Config {
    /// Parses and validates the plugin configuration bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        build(bytes, None, &process_env)
    }

    /// [`Config::from_json`], with secrets' variables read from `env`.
    pub fn from_json_in(bytes: &[u8], env: Env) -> Result<Config, ConfigError> {
        build(bytes, None, env)
    }
}

/// Stage 1 alone (also for [`Config::with_snapshot`], which replaces the consumers).
pub(super) fn parse_raw(bytes: &[u8]) -> Result<RawConfig<'_>, ConfigError> {
    match bytes.iter().find(|c| !c.is_ascii_whitespace()) {
        None => {
            return Err(ConfigError(
                "the configuration is empty: it must be a JSON object ({\"plans\": ...})".into(),
            ))
        }
        Some(c) if *c != b'{' => {
            return Err(ConfigError(
                "the configuration must be a JSON object ({\"plans\": ...})".into(),
            ))
        }
        Some(_) => {}
    }
    // serde_path_to_error records where in the document a type error happened, so that
    // every error names its field (`plans.free.limits[0].requests`), as semantic ones do.
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let raw: RawConfig = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| json_error(bytes, Some(e.path()), e.inner()))?;
    deserializer
        .end()
        .map_err(|e| json_error(bytes, None, &e))?;
    Ok(raw)
}

/// The entitlements document: `consumers` (required, so that an empty answer cannot wipe
/// every consumer by accident: an empty set is `{}`) and, optionally, `plans`, which then
/// replace the configuration's plans whole.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshot<'a> {
    #[serde(borrow)]
    consumers: RawConsumers<'a>,
    #[serde(default)]
    plans: Option<UniqueMap<RawPlan>>,
}

/// One JSON document into `T`, every error naming its field (as [`Config::from_json`] does).
fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, ConfigError> {
    if bytes.iter().find(|c| !c.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ConfigError(format!(
            "the {what} must be a JSON object ({{\"consumers\": ...}})"
        )));
    }
    let rename = |e: ConfigError| ConfigError(e.0.replace("the plugin configuration", what));
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let raw: T = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| rename(json_error(bytes, Some(e.path()), e.inner())))?;
    deserializer
        .end()
        .map_err(|e| rename(json_error(bytes, None, &e)))?;
    Ok(raw)
}

impl Config {
    /// The configuration `plugin_configuration` with its consumers (and plans, if the
    /// snapshot has them) replaced by the snapshot's. Refused whole on any error, which names
    /// the snapshot's field (`consumers.acme.plan: plan `gold` does not exist (...)`).
    pub fn with_snapshot(
        plugin_configuration: &[u8],
        snapshot: &[u8],
    ) -> Result<Config, ConfigError> {
        build(plugin_configuration, Some(snapshot), &process_env)
    }

    /// [`Config::with_snapshot`], with secrets' variables read from `env`.
    pub fn with_snapshot_in(
        plugin_configuration: &[u8],
        snapshot: &[u8],
        env: Env,
    ) -> Result<Config, ConfigError> {
        build(plugin_configuration, Some(snapshot), env)
    }
}

/// A snapshot's consumers and keys within `bounds` (before anything is compiled); errors
/// name the field and the bound, never a key.
fn check_counts(consumers: &RawConsumers<'_>, bounds: &Bounds) -> Result<(), ConfigError> {
    let count = consumers.len();
    if count > bounds.consumers {
        return Err(ConfigError(format!(
            "consumers: {count} consumers, more than entitlements.max_consumers ({}) allows",
            bounds.consumers
        )));
    }
    let mut keys = 0usize;
    for (name, consumer) in consumers.iter() {
        for (i, key) in consumer.keys.iter().enumerate() {
            if key.len() > bounds.key_bytes {
                return Err(ConfigError(format!(
                    "consumers.{name}.keys[{i}]: a key of {} bytes, longer than \
                     entitlements.max_key_bytes ({}) allows",
                    key.len(),
                    bounds.key_bytes
                )));
            }
        }
        keys = keys.saturating_add(consumer.keys.len());
    }
    if keys > bounds.keys {
        return Err(ConfigError(format!(
            "consumers: {keys} keys, more than entitlements.max_keys ({}) allows",
            bounds.keys
        )));
    }
    Ok(())
}

/// Both loads in one function, so that stage 1 and stage 2 keep one call site each (the
/// optimizer would otherwise inline each of them twice into the `.wasm`).
pub(super) fn build(
    plugin_configuration: &[u8],
    snapshot: Option<&[u8]>,
    env: Env,
) -> Result<Config, ConfigError> {
    let mut raw = parse_raw(plugin_configuration)?;
    if let Some(snapshot) = snapshot {
        let bounds = match &raw.entitlements {
            Some(settings) => compile_bounds(settings)?,
            None => Bounds::default(),
        };
        bounds.check_document(snapshot.len())?;
        let document: RawSnapshot = parse(snapshot, "the entitlements document")?;
        check_counts(&document.consumers, &bounds)?;
        raw.consumers = document.consumers;
        if let Some(plans) = document.plans {
            raw.plans = plans;
        }
    }
    compile(raw, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATIC: &[u8] = br#"{
      "plans": {"free": {"limits": [{"name": "daily", "requests": 3, "window": "day"}]},
                "pro":  {"limits": [{"name": "daily", "requests": 100, "window": "day"}]}},
      "consumers": {"boot": {"plan": "free", "keys": ["boot-key"]}},
      "entitlements": {"cluster": "cp", "path": "/consumers", "refresh": "1s"}
    }"#;

    #[test]
    fn the_snapshot_replaces_the_static_consumers() {
        let config = Config::with_snapshot(
            STATIC,
            br#"{"consumers": {"acme": {"plan": "pro", "keys": ["acme-key"]}}}"#,
        )
        .unwrap();
        assert!(config.consumer_for_key(b"boot-key").is_none());
        let acme = config.consumer_for_key(b"acme-key").unwrap();
        assert_eq!(acme.name(), "acme");
        assert_eq!(config.plan_of(acme).unwrap().name, "pro");
        assert_eq!(
            &*acme.store_key, "tollgate:v1:consumer:acme",
            "counted by name"
        );
        assert_eq!(config.entitlements.as_ref().unwrap().refresh_ms, 1_000);
        assert!(
            config
                .summary()
                .ends_with(", entitlements from cluster cp path /consumers every 1000 ms"),
            "{}",
            config.summary()
        );
    }

    #[test]
    fn plans_in_the_snapshot_replace_the_static_ones() {
        let config = Config::with_snapshot(
            STATIC,
            br#"{"plans": {"gold": {"limits": []}},
                 "consumers": {"acme": {"plan": "gold", "keys": ["k"]}}}"#,
        )
        .unwrap();
        assert_eq!(config.plans.len(), 1);
        let e = Config::with_snapshot(
            STATIC,
            br#"{"plans": {"gold": {"limits": []}},
                 "consumers": {"acme": {"plan": "free", "keys": ["k"]}}}"#,
        )
        .unwrap_err();
        assert!(
            e.0.starts_with("consumers.acme.plan: plan `free` does not exist"),
            "{e}"
        );
    }

    #[test]
    fn a_snapshot_beyond_the_bounds_is_refused_naming_field_and_bound() {
        let bounded = String::from_utf8(STATIC.to_vec()).unwrap().replace(
            r#""refresh": "1s""#,
            r#""refresh": "1s", "max_document_bytes": 1024, "max_consumers": 2,
               "max_keys": 3, "max_key_bytes": 80"#,
        );
        let refused = |doc: &str| {
            Config::with_snapshot(bounded.as_bytes(), doc.as_bytes())
                .unwrap_err()
                .0
        };
        let big = format!(
            r#"{{"consumers": {{"a": {{"plan": "free", "keys": ["{}"]}}}}}}"#,
            "k".repeat(1000)
        );
        assert_eq!(
            refused(&big),
            format!(
                "the entitlements document is {} bytes, more than \
                 entitlements.max_document_bytes (1024) allows",
                big.len()
            )
        );
        let long = format!(
            r#"{{"consumers": {{"a": {{"plan": "free", "keys": ["ok", "{}"]}}}}}}"#,
            "k".repeat(81)
        );
        assert_eq!(
            refused(&long),
            "consumers.a.keys[1]: a key of 81 bytes, longer than entitlements.max_key_bytes \
             (80) allows"
        );
        assert_eq!(
            refused(
                r#"{"consumers": {"a": {"plan": "free"}, "b": {"plan": "free"},
                                  "c": {"plan": "free"}}}"#
            ),
            "consumers: 3 consumers, more than entitlements.max_consumers (2) allows"
        );
        assert_eq!(
            refused(
                r#"{"consumers": {"a": {"plan": "free", "keys": ["1", "2"]},
                                  "b": {"plan": "free", "keys": ["3", "4"]}}}"#
            ),
            "consumers: 4 keys, more than entitlements.max_keys (3) allows"
        );
        let fits = r#"{"consumers": {"a": {"plan": "free", "keys": ["1", "2"]},
                                     "b": {"plan": "free", "keys": ["3"]}}}"#;
        assert!(Config::with_snapshot(bounded.as_bytes(), fits.as_bytes()).is_ok());
        // The plugin configuration's own consumers are not a snapshot: not bounded so.
        assert!(Config::from_json(bounded.as_bytes()).is_ok());
    }

    #[test]
    fn an_invalid_snapshot_is_refused_naming_the_field() {
        let refused = |doc: &[u8]| Config::with_snapshot(STATIC, doc).unwrap_err().0;
        let e = refused(br#"{"consumers": {"a": {"plan": "gold"}}}"#);
        assert!(
            e.starts_with("consumers.a.plan: plan `gold` does not exist"),
            "{e}"
        );
        let e = refused(
            br#"{"consumers": {"a": {"plan": "free", "keys": ["k"]},
                               "b": {"plan": "free", "keys": ["k"]}}}"#,
        );
        assert!(
            e.starts_with("consumers.b.keys[0]: this key is listed twice"),
            "{e}"
        );
        assert!(!e.contains("\"k\""), "no key in the message: {e}");
        let e = refused(br#"{"consumers": {"a": {"plan": "free"}, "a": {"plan": "free"}}}"#);
        assert!(e.contains("`a` is listed twice"), "{e}");
        let e = refused(b"{\"consumers\": {\"a\": ");
        assert!(e.contains("of the entitlements document"), "{e}");
        let e = refused(br#"{"consumers": {"a": {"plan": "free", "grace_until": "x"}}}"#);
        assert!(e.starts_with("consumers.a.grace_until: "), "{e}");
        let e = refused(br#"{"plans": {}}"#);
        assert!(e.contains("consumers"), "consumers is required: {e}");
        let e = refused(br#"{"consumers": {}, "mode": "shadow"}"#);
        assert!(e.contains("unknown field"), "{e}");
        let e = refused(b"[]");
        assert!(e.contains("must be a JSON object"), "{e}");
    }
}
