//! Secrets of the configuration (the `Authorization` values sent to the events sink and the
//! control plane): given inline (`authorization`, visible in Envoy's `/config_dump`) or, better,
//! as the name of an environment variable of the Wasm VM (`authorization_env`, filled by Envoy's
//! `vm_config.environment_variables`), read when the configuration is compiled. A [`Secret`]'s
//! `Debug` is `<redacted>`, so a configuration can be logged or compared in tests whole; no error
//! message holds a secret's value.

use std::fmt;

use crate::names::is_header_value;

use super::errors::ConfigError;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reads an environment variable (`None` if it is not set).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The environment of this process. In the filter it is the Wasm VM's (WASI) environment,
/// which holds exactly what Envoy's `vm_config.environment_variables` gives it (`host_env_keys`
/// copied from Envoy's own environment, `key_values` as written), nothing else.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Longest environment variable name accepted.
pub const MAX_ENV_NAME_LEN: usize = 128;

/// `A-Z a-z 0-9 _`, not starting with a digit (what a shell, Kubernetes and Envoy all accept).
pub(super) fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ENV_NAME_LEN
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !name.bytes().next().is_some_and(|c| c.is_ascii_digit())
}

/// The `Authorization` value of section `section` (`events`, `entitlements`), from
/// `authorization` (inline) or `authorization_env` (the name of a variable read with `env`):
/// at most one of the two. Errors name the field and the variable, never the value.
pub(super) fn authorization(
    section: &str,
    inline: Option<String>,
    variable: Option<String>,
    env: Env,
) -> Result<Option<Secret>, ConfigError> {
    let err = |field: &str, why: String| Err(ConfigError(format!("{section}.{field}: {why}")));
    let value = match (inline, variable) {
        (Some(_), Some(_)) => {
            return err(
                "authorization_env",
                "give `authorization` or `authorization_env`, not both".into(),
            )
        }
        (None, None) => return Ok(None),
        (Some(value), None) => {
            // Not echoed: it is a secret.
            if !is_header_value(&value) {
                return err(
                    "authorization",
                    "must be a non-empty header value of visible ASCII (e.g. \"Bearer …\")".into(),
                );
            }
            value
        }
        (None, Some(name)) => {
            // Not echoed unless it is a variable name: a value pasted here by mistake is a secret.
            if !valid_env_name(&name) {
                return err(
                    "authorization_env",
                    format!(
                        "must be the name of an environment variable (1-{MAX_ENV_NAME_LEN} \
                         characters of A-Z a-z 0-9 _, not starting with a digit)"
                    ),
                );
            }
            let variable = format!("environment variable `{name}`");
            let wrong = match env(&name) {
                Some(value) if is_header_value(&value) => return Ok(Some(Secret(value))),
                None => "is not set in the Wasm VM",
                Some(value) if value.is_empty() => "is empty in the Wasm VM",
                Some(_) => {
                    "must hold a header value of visible ASCII (e.g. \"Bearer …\"; no line ending)"
                }
            };
            return err(
                "authorization_env",
                format!(
                    "{variable} {wrong} (Envoy passes it with vm_config.environment_variables)"
                ),
            );
        }
    };
    Ok(Some(Secret(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let debug = format!("{:?}", Some(Secret("Bearer s3cret".into())));
        assert_eq!(debug, "Some(<redacted>)");
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "GOOD" => Some("Bearer s3cret".into()),
            "EMPTY" => Some(String::new()),
            "NEWLINE" => Some("Bearer s3cret\r\nx-evil: 1".into()),
            _ => None,
        }
    }

    fn from(inline: Option<&str>, variable: Option<&str>) -> Result<Option<Secret>, String> {
        authorization(
            "events",
            inline.map(str::to_string),
            variable.map(str::to_string),
            &env,
        )
        .map_err(|e| e.0)
    }

    #[test]
    fn inline_or_from_the_environment_never_both() {
        assert_eq!(from(None, None), Ok(None));
        let secret = Some(Secret("Bearer s3cret".into()));
        assert_eq!(from(Some("Bearer s3cret"), None), Ok(secret.clone()));
        assert_eq!(from(None, Some("GOOD")), Ok(secret));
        let both = from(Some("Bearer s3cret"), Some("GOOD")).unwrap_err();
        assert!(
            both.starts_with("events.authorization_env: give `authorization` or"),
            "{both}"
        );
        assert!(!both.contains("s3cret"), "{both}");
    }

    #[test]
    fn a_missing_empty_or_bad_variable_is_named_but_its_value_never_shown() {
        let e = from(None, Some("MISSING")).unwrap_err();
        assert_eq!(
            e,
            "events.authorization_env: environment variable `MISSING` is not set in the Wasm VM \
             (Envoy passes it with vm_config.environment_variables)"
        );
        let e = from(None, Some("EMPTY")).unwrap_err();
        assert!(e.contains("`EMPTY` is empty in the Wasm VM"), "{e}");
        let e = from(None, Some("NEWLINE")).unwrap_err();
        assert!(e.contains("`NEWLINE` must hold a header value"), "{e}");
        assert!(!e.contains("s3cret") && !e.contains("evil"), "{e}");
        // A value pasted where the name belongs is not echoed.
        for bad in ["Bearer s3cret", "", "1ABC", "A-B", &"A".repeat(129)] {
            let e = from(None, Some(bad)).unwrap_err();
            assert!(
                e.starts_with("events.authorization_env: must be the name of an environment"),
                "{bad}: {e}"
            );
            assert!(!e.contains("s3cret"), "{e}");
        }
        let e = from(Some("Bearer x\r\nevil: 1"), None).unwrap_err();
        assert!(e.starts_with("events.authorization: "), "{e}");
        assert!(!e.contains("evil"), "{e}");
    }
}
