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
}
