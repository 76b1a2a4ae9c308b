//! The `entitlements` section: where live consumers are pulled from and how often (the feature
//! is `crate::entitlements`); its JSON model and its validation.

use serde::Deserialize;

use crate::names::{valid_cluster, CLUSTER_RULE};

use super::errors::ConfigError;
use super::secret::{authorization, Env, Secret};

/// Longest refresh period accepted.
pub const MAX_REFRESH_MS: u64 = 24 * 3600 * 1000;
/// Default refresh period.
pub const DEFAULT_REFRESH_MS: u64 = 10_000;
/// Default timeout of one fetch (capped at the refresh period).
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;

/// Default largest document: a million consumers with one `sha256:` key each are ~108 MB of
/// compact JSON (~47 MB with short plaintext keys), so 128 MiB takes a million with room to
/// spare; what a VM holds for them is bounded by the counts below.
pub const DEFAULT_MAX_DOCUMENT_BYTES: u64 = 128 << 20;
pub const MAX_DOCUMENT_BYTES: u64 = 1 << 30;
pub const MIN_DOCUMENT_BYTES: u64 = 1 << 10;
/// Default most consumers: a million (about 1.6 KB of Envoy memory each with two workers,
/// `docs/guarantees.md`); beyond that a full snapshot per change is the wrong protocol.
pub const DEFAULT_MAX_CONSUMERS: u64 = 1_000_000;
pub const MAX_CONSUMERS: u64 = 10_000_000;
/// Default most keys, all consumers together: two per consumer (a rotation in progress).
pub const DEFAULT_MAX_KEYS: u64 = 2_000_000;
pub const MAX_KEYS: u64 = 20_000_000;
/// Default longest key, in bytes: API keys are tens of bytes; a `sha256:` key is 71.
pub const DEFAULT_MAX_KEY_BYTES: u64 = 256;
pub const MIN_KEY_BYTES: u64 = 71;
pub const MAX_KEY_BYTES: u64 = 4096;

/// The `entitlements` member of the plugin configuration, as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    pub cluster: String,
    pub path: String,
    #[serde(default)]
    pub authorization: Option<String>,
    /// The name of the Wasm VM's environment variable holding the `Authorization` value.
    #[serde(default)]
    pub authorization_env: Option<String>,
    #[serde(default)]
    pub refresh: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub max_document_bytes: Option<u64>,
    #[serde(default)]
    pub max_consumers: Option<u64>,
    #[serde(default)]
    pub max_keys: Option<u64>,
    #[serde(default)]
    pub max_key_bytes: Option<u64>,
    #[serde(default)]
    pub max_removed_percent: Option<u64>,
    #[serde(default)]
    pub until_first_snapshot: UntilFirstSnapshot,
}

/// What a key the configuration's own consumers do not hold gets until this Envoy serves its
/// first snapshot (after a start with the control plane down, until it answers).
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UntilFirstSnapshot {
    /// 503 `quota-unavailable` with `Retry-After`: the key may belong to a consumer of the
    /// snapshot not yet pulled, so it is neither refused as invalid nor let through.
    #[default]
    Unavailable,
    /// The configuration's consumers are all there is: 401 `invalid-credential`.
    Static,
}

/// What a snapshot may hold; a document beyond any of them is refused whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The document's size, in bytes.
    pub document_bytes: usize,
    pub consumers: usize,
    /// Keys of every consumer together.
    pub keys: usize,
    /// One key's length, in bytes (a `sha256:` key counts its 71).
    pub key_bytes: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Bounds {
            document_bytes: size(DEFAULT_MAX_DOCUMENT_BYTES),
            consumers: size(DEFAULT_MAX_CONSUMERS),
            keys: size(DEFAULT_MAX_KEYS),
            key_bytes: size(DEFAULT_MAX_KEY_BYTES),
        }
    }
}

impl Bounds {
    /// `Err` naming the bound when a document of `len` bytes is too big (checked before the
    /// document is read or parsed).
    pub fn check_document(&self, len: usize) -> Result<(), ConfigError> {
        if len > self.document_bytes {
            return Err(ConfigError(format!(
                "the entitlements document is {len} bytes, more than \
                 entitlements.max_document_bytes ({}) allows",
                self.document_bytes
            )));
        }
        Ok(())
    }
}

/// The bounds of `raw` (defaults for the fields it leaves out); errors name the field.
pub fn compile_bounds(raw: &RawSettings) -> Result<Bounds, ConfigError> {
    let bound = |field: &str, value: Option<u64>, default: u64, range: (u64, u64)| {
        let value = value.unwrap_or(default);
        if (range.0..=range.1).contains(&value) {
            Ok(usize::try_from(value).unwrap_or(usize::MAX))
        } else {
            Err(ConfigError(format!(
                "entitlements.{field}: {value} must be from {} to {}",
                range.0, range.1
            )))
        }
    };
    Ok(Bounds {
        document_bytes: bound(
            "max_document_bytes",
            raw.max_document_bytes,
            DEFAULT_MAX_DOCUMENT_BYTES,
            (MIN_DOCUMENT_BYTES, MAX_DOCUMENT_BYTES),
        )?,
        consumers: bound(
            "max_consumers",
            raw.max_consumers,
            DEFAULT_MAX_CONSUMERS,
            (1, MAX_CONSUMERS),
        )?,
        keys: bound("max_keys", raw.max_keys, DEFAULT_MAX_KEYS, (1, MAX_KEYS))?,
        key_bytes: bound(
            "max_key_bytes",
            raw.max_key_bytes,
            DEFAULT_MAX_KEY_BYTES,
            (MIN_KEY_BYTES, MAX_KEY_BYTES),
        )?,
    })
}

/// Where and how often the consumers are pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The Envoy cluster the control plane is reached through (also the `:authority`).
    pub cluster: String,
    /// Request path (with query, if any).
    pub path: String,
    /// The `Authorization` value sent (a secret: never logged, never in `Debug`).
    pub authorization: Option<Secret>,
    pub refresh_ms: u64,
    pub timeout_ms: u64,
    pub bounds: Bounds,
    /// Refuse a snapshot that removes more than this percentage of the consumers the current
    /// snapshot serves (`None`: no guard).
    pub max_removed_percent: Option<u8>,
    pub until_first_snapshot: UntilFirstSnapshot,
}

impl Settings {
    /// The `Retry-After` of a refusal while no snapshot is served, in seconds: the next fetch
    /// comes within one refresh.
    pub fn retry_after_s(&self) -> u64 {
        self.refresh_ms.div_ceil(1000)
    }
}

/// Validates the `entitlements` member (`authorization_env` read with `env`); every error
/// names its field.
pub fn compile_settings(raw: RawSettings, env: Env) -> Result<Settings, ConfigError> {
    let err = |field: &str, why: String| Err(ConfigError(format!("entitlements.{field}: {why}")));
    if !valid_cluster(&raw.cluster) {
        return err("cluster", CLUSTER_RULE.into());
    }
    if !raw.path.starts_with('/')
        || raw.path.len() > 2048
        || raw.path.bytes().any(|c| c <= b' ' || c >= 0x7f)
    {
        return err(
            "path",
            format!(
                "`{}` must be a request path like \"/v1/consumers\" (visible ASCII, no spaces)",
                raw.path
            ),
        );
    }
    let bounds = compile_bounds(&raw)?;
    let max_removed_percent = match raw.max_removed_percent {
        None => None,
        Some(p) => match u8::try_from(p).ok().filter(|p| *p <= 100) {
            Some(p) => Some(p),
            None => {
                return err(
                    "max_removed_percent",
                    format!("{p} must be a percentage from 0 to 100"),
                )
            }
        },
    };
    let authorization = authorization(
        "entitlements",
        raw.authorization,
        raw.authorization_env,
        env,
    )?;
    let refresh_ms = match &raw.refresh {
        None => DEFAULT_REFRESH_MS,
        Some(text) => match crate::duration::parse_ms(text) {
            Some(ms) if (1000..=MAX_REFRESH_MS).contains(&ms) => ms,
            _ => {
                return err(
                    "refresh",
                    format!(
                        "`{}` must be a duration from 1s to 24h, like \"10s\" or \"5m\"",
                        text
                    ),
                )
            }
        },
    };
    let timeout_ms = match &raw.timeout {
        None => DEFAULT_TIMEOUT_MS.min(refresh_ms),
        Some(text) => match crate::duration::parse_ms(text) {
            Some(ms) if ms >= 1 && ms <= refresh_ms => ms,
            Some(ms) if ms > refresh_ms => {
                return err(
                    "timeout",
                    format!("`{text}` is longer than the refresh period (fetches would overlap)"),
                )
            }
            _ => {
                return err(
                    "timeout",
                    format!("`{}` must be a duration like \"500ms\" or \"5s\"", text),
                )
            }
        },
    };
    Ok(Settings {
        cluster: raw.cluster,
        path: raw.path,
        authorization,
        refresh_ms,
        timeout_ms,
        bounds,
        max_removed_percent,
        until_first_snapshot: raw.until_first_snapshot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(refresh: Option<&str>, timeout: Option<&str>) -> RawSettings {
        RawSettings {
            cluster: "control_plane".into(),
            path: "/v1/consumers".into(),
            authorization: Some("Bearer s3cret".into()),
            authorization_env: None,
            refresh: refresh.map(str::to_string),
            timeout: timeout.map(str::to_string),
            max_document_bytes: None,
            max_consumers: None,
            max_keys: None,
            max_key_bytes: None,
            max_removed_percent: None,
            until_first_snapshot: UntilFirstSnapshot::default(),
        }
    }

    fn compile_settings_(raw: RawSettings) -> Result<Settings, ConfigError> {
        compile_settings(raw, &|_| None)
    }

    #[test]
    fn durations_and_defaults() {
        // The grammar is crate::duration's; the fields keep their ranges.
        assert_eq!(
            compile_settings_(raw(Some("1d"), None)).unwrap().refresh_ms,
            86_400_000
        );
        for bad in ["500ms", "25h", "10 s", "10"] {
            let e = compile_settings_(raw(Some(bad), None)).unwrap_err();
            assert!(e.0.starts_with("entitlements.refresh:"), "{bad}: {e:?}");
        }
        let s = compile_settings_(raw(None, None)).unwrap();
        assert_eq!((s.refresh_ms, s.timeout_ms), (10_000, 5_000));
        assert_eq!(s.until_first_snapshot, UntilFirstSnapshot::Unavailable);
        assert_eq!(s.retry_after_s(), 10);
        let s = compile_settings_(raw(Some("1500ms"), None)).unwrap();
        assert_eq!(s.retry_after_s(), 2, "rounded up to whole seconds");
        let s = compile_settings_(raw(Some("1s"), None)).unwrap();
        assert_eq!(
            (s.refresh_ms, s.timeout_ms),
            (1_000, 1_000),
            "timeout capped"
        );
        assert!(
            !format!("{s:?}").contains("s3cret"),
            "Debug hides the secret"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = |r: RawSettings| compile_settings_(r).unwrap_err().0;
        assert!(e(raw(Some("500ms"), None)).starts_with("entitlements.refresh: "));
        assert!(e(raw(Some("2d"), None)).starts_with("entitlements.refresh: "));
        assert!(e(raw(Some("5s"), Some("6s"))).starts_with("entitlements.timeout: "));
        assert!(e(raw(None, Some("0ms"))).starts_with("entitlements.timeout: "));
        let mut r = raw(None, None);
        r.path = "v1".into();
        assert!(e(r).starts_with("entitlements.path: "));
        let mut r = raw(None, None);
        r.cluster = String::new();
        assert!(e(r).starts_with("entitlements.cluster: "));
        let mut r = raw(None, None);
        r.authorization = Some("Bearer x\r\nevil: 1".into());
        let message = e(r);
        assert!(message.starts_with("entitlements.authorization: "));
        assert!(!message.contains("evil"), "the secret is not echoed");
    }

    #[test]
    fn bounds_default_to_a_million_consumers_and_are_checked_in_range() {
        let s = compile_settings_(raw(None, None)).unwrap();
        assert_eq!(
            s.bounds,
            Bounds {
                document_bytes: 128 << 20,
                consumers: 1_000_000,
                keys: 2_000_000,
                key_bytes: 256
            }
        );
        assert_eq!(s.max_removed_percent, None);
        let mut r = raw(None, None);
        (
            r.max_document_bytes,
            r.max_consumers,
            r.max_keys,
            r.max_key_bytes,
        ) = (Some(4096), Some(10), Some(20), Some(71));
        r.max_removed_percent = Some(0);
        let s = compile_settings_(r).unwrap();
        assert_eq!(
            (s.bounds, s.max_removed_percent),
            (
                Bounds {
                    document_bytes: 4096,
                    consumers: 10,
                    keys: 20,
                    key_bytes: 71
                },
                Some(0)
            )
        );
        assert!(s.bounds.check_document(4096).is_ok());
        assert_eq!(
            s.bounds.check_document(4097).unwrap_err().0,
            "the entitlements document is 4097 bytes, more than \
             entitlements.max_document_bytes (4096) allows"
        );
        let e = |f: &dyn Fn(&mut RawSettings)| {
            let mut r = raw(None, None);
            f(&mut r);
            compile_settings_(r).unwrap_err().0
        };
        assert_eq!(
            e(&|r| r.max_key_bytes = Some(70)),
            "entitlements.max_key_bytes: 70 must be from 71 to 4096"
        );
        assert!(e(&|r| r.max_document_bytes = Some(1 << 31))
            .starts_with("entitlements.max_document_bytes: "));
        assert!(e(&|r| r.max_consumers = Some(0)).starts_with("entitlements.max_consumers: "));
        assert!(e(&|r| r.max_keys = Some(0)).starts_with("entitlements.max_keys: "));
        assert_eq!(
            e(&|r| r.max_removed_percent = Some(101)),
            "entitlements.max_removed_percent: 101 must be a percentage from 0 to 100"
        );
    }
}
