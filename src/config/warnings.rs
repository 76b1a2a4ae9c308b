//! What `tollgate check` warns about: secrets held in the plugin configuration itself. Envoy
//! shows the plugin configuration to anyone who can read its admin `/config_dump` (and Istio's
//! `WasmPlugin` or Envoy Gateway's `EnvoyExtensionPolicy` to anyone who can read the resource),
//! so an inline `authorization` or a plaintext key is readable there. The filter accepts them:
//! these are warnings, not errors.

use super::load::parse_raw;

/// Consumers named in the plaintext-key warning before `… and N more`.
const NAMED: usize = 5;

/// One line per secret found in the plugin configuration `bytes`, each with the alternative;
/// nothing for a configuration that does not parse (its error says why). No line holds a
/// secret.
pub fn warnings(bytes: &[u8]) -> Vec<String> {
    let Ok(raw) = parse_raw(bytes) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let inline = [
        (
            "events",
            raw.events.as_ref().and_then(|e| e.authorization.as_ref()),
            "TOLLGATE_EVENTS_AUTH",
        ),
        (
            "entitlements",
            raw.entitlements
                .as_ref()
                .and_then(|e| e.authorization.as_ref()),
            "TOLLGATE_ENTITLEMENTS_AUTH",
        ),
        (
            "payments.facilitator",
            raw.payments
                .as_ref()
                .and_then(|p| p.facilitator.authorization.as_ref()),
            "TOLLGATE_FACILITATOR_AUTH",
        ),
    ];
    for (section, value, variable) in inline {
        if value.is_some() {
            out.push(format!(
                "{section}.authorization: the secret is in the plugin configuration, which \
                 Envoy's admin /config_dump shows; name an environment variable of the Wasm VM \
                 instead (\"authorization_env\": \"{variable}\", given by \
                 vm_config.environment_variables.host_env_keys; see docs/security.md#secrets)"
            ));
        }
    }
    // Standard HTTP Payment clients send `Authorization: Payment`, which replaces a key that
    // travels in `Authorization`.
    let http_payment = raw
        .payments
        .as_ref()
        .is_some_and(|p| p.http_payment.is_some());
    let key_in_authorization = raw.credentials.as_ref().is_some_and(|sources| {
        sources
            .iter()
            .any(|s| matches!(s, super::raw::RawSource::Authorization(_)))
    });
    if http_payment && key_in_authorization {
        out.push(
            "payments.http_payment: API keys are read from `Authorization`, where HTTP Payment \
             clients send their credential (`Authorization: Payment`): such a request carries no \
             key. Those clients must send the credential in `Payment-Authorization`, or take \
             keys from another header (see docs/payments.md#the-http-payment-scheme)"
                .to_string(),
        );
    }
    // A per-Envoy limit over a long window: each Envoy admits all of it (N Envoys: N times).
    if raw.store.is_some() {
        for (plan, raw_plan) in &raw.plans.0 {
            for (i, limit) in raw_plan.limits.iter().enumerate() {
                let long = match crate::window::Window::parse(&limit.window) {
                    Ok(crate::window::Window::Fixed(seconds)) => seconds >= 3600,
                    Ok(_) => true,
                    Err(_) => false,
                };
                if long && limit.scope.as_deref() == Some("envoy") {
                    out.push(format!(
                        "plans.{plan}.limits[{i}]: scope envoy on a `{}` window: each Envoy \
                         admits all of it, so N Envoys admit up to N times it; keep a quota you \
                         bill for fleet-wide (docs/fleet.md#limits-counted-per-envoy-scope-envoy)",
                        limit.window.chars().take(16).collect::<String>()
                    ));
                }
            }
        }
    }
    let mut plaintext = 0usize;
    let mut owners: Vec<&str> = Vec::new();
    for (name, consumer) in raw.consumers.iter() {
        let n = consumer
            .keys
            .iter()
            .filter(|k| !k.starts_with("sha256:"))
            .count();
        if n > 0 {
            plaintext += n;
            owners.push(name);
        }
    }
    if plaintext > 0 {
        let mut named = owners
            .iter()
            .take(NAMED)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        if owners.len() > NAMED {
            named.push_str(&format!(" and {} more", owners.len() - NAMED));
        }
        out.push(format!(
            "consumers: {plaintext} plaintext {} (of {}), which Envoy's admin /config_dump \
             shows; list each as sha256:<hex> instead (`tollgate hash-key` prints it)",
            if plaintext == 1 { "key" } else { "keys" },
            named
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_secrets_and_plaintext_keys_are_named_never_shown() {
        let config = br#"{
          "plans": {"p": {"limits": []}},
          "consumers": {"a": {"plan": "p", "keys": ["key-a1", "key-a2"]},
                        "b": {"plan": "p", "keys": ["sha256:e2186dbdb1bb4193608605e84f33208765b5693b55edd4f730a719a100eeea6f"]},
                        "c": {"plan": "p", "keys": ["key-c"]}},
          "events": {"cluster": "sink", "url": "http://sink/e", "authorization": "Bearer ev-s3cret"},
          "entitlements": {"cluster": "cp", "path": "/c", "authorization_env": "CP_AUTH"}
        }"#;
        let found = warnings(config);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("events.authorization: the secret is in the plugin configuration"),
            "{found:?}"
        );
        assert!(found[0].contains("\"authorization_env\": \"TOLLGATE_EVENTS_AUTH\""));
        assert!(
            found[1].starts_with("consumers: 3 plaintext keys (of a, c), "),
            "{found:?}"
        );
        let all = found.join("\n");
        assert!(!all.contains("s3cret") && !all.contains("key-a1"), "{all}");
    }

    #[test]
    fn a_per_envoy_limit_over_a_long_window_is_warned_about_in_fleet_mode_only() {
        let config = |store: &str| {
            format!(
                r#"{{"plans": {{"p": {{"limits": [
                  {{"name": "monthly", "requests": 9, "window": "month", "scope": "envoy"}},
                  {{"name": "burst", "requests": 5, "window": "1s", "scope": "envoy"}},
                  {{"name": "hourly", "requests": 5, "window": "60m", "scope": "envoy"}},
                  {{"name": "daily", "requests": 5, "window": "day"}}]}}}}{store}}}"#
            )
        };
        let fleet = warnings(config(r#", "store": {"rls": {"cluster": "q"}}"#).as_bytes());
        assert_eq!(fleet.len(), 2, "{fleet:?}");
        assert!(fleet[0].starts_with("plans.p.limits[0]: scope envoy on a `month` window"));
        assert!(fleet[1].starts_with("plans.p.limits[2]: scope envoy on a `60m` window"));
        assert!(
            warnings(config("").as_bytes()).is_empty(),
            "local mode: all per Envoy"
        );
    }

    #[test]
    fn nothing_to_say_about_a_configuration_without_secrets_or_one_that_does_not_parse() {
        let hashed = br#"{"plans": {"p": {"limits": []}},
          "consumers": {"b": {"plan": "p", "keys": ["sha256:e2186dbdb1bb4193608605e84f33208765b5693b55edd4f730a719a100eeea6f"]}},
          "events": {"cluster": "sink", "url": "http://sink/e", "authorization_env": "EV"}}"#;
        assert!(warnings(hashed).is_empty());
        assert!(warnings(b"{\"plans\": ").is_empty());
        let many: String = (0..8)
            .map(|i| format!(r#""c{i}": {{"plan": "p", "keys": ["k{i}"]}}"#))
            .collect::<Vec<_>>()
            .join(",");
        let config = format!(r#"{{"plans": {{"p": {{"limits": []}}}}, "consumers": {{{many}}}}}"#);
        assert_eq!(
            warnings(config.as_bytes()),
            ["consumers: 8 plaintext keys (of c0, c1, c2, c3, c4 and 3 more), which Envoy's admin \
              /config_dump shows; list each as sha256:<hex> instead (`tollgate hash-key` prints it)"]
        );
    }
}
