//! What a caller may claim: quotad believes the limits each request carries (the descriptor
//! contract), so a client with a certificate on the allow-list could claim any limit. A policy
//! bounds it, for every caller alike: the domains served, the largest `requests` a limit may
//! have, the largest `hits_addend`, and the windows allowed. A request outside it is refused
//! whole (`PERMISSION_DENIED`, naming the flag), before Redis is called.

use tollgate::window::Window;

use crate::request::Decision;

/// Each bound is off when `None` (empty list).
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub domains: Vec<String>,
    pub max_requests: Option<u64>,
    pub max_hits: Option<u64>,
    /// Canonical spellings (`Window::canonical`): `1d`, `24h` and `86400s` are one window.
    pub windows: Vec<String>,
}

impl Policy {
    /// A policy from the flags' values; an error names the flag.
    pub fn new(
        domains: Vec<String>,
        max_requests: Option<u64>,
        max_hits: Option<u64>,
        windows: &[String],
    ) -> Result<Policy, String> {
        let windows = windows
            .iter()
            .map(|w| {
                Window::parse(w)
                    .map(Window::canonical)
                    .map_err(|e| format!("--allow-windows: `{w}`: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            domains,
            max_requests,
            max_hits,
            windows,
        })
    }

    /// Whether `domain` is served here.
    pub fn check_domain(&self, domain: &str) -> Result<(), String> {
        if !self.domains.is_empty() && !self.domains.iter().any(|d| d == domain) {
            return Err(format!(
                "domain `{domain}` is not served here (--allow-domains)"
            ));
        }
        Ok(())
    }

    /// Whether `decision`, of `domain`, is within the policy; the refusal names the bound.
    pub fn check(&self, domain: &str, decision: &Decision) -> Result<(), String> {
        self.check_domain(domain)?;
        for (i, ask) in decision.asks.iter().enumerate() {
            if let Some(max) = self.max_requests.filter(|max| ask.requests > *max) {
                return Err(format!(
                    "descriptor {i}: requests {} is above this quotad's --max-requests {max}",
                    ask.requests
                ));
            }
            if let Some(max) = self.max_hits.filter(|max| ask.hits > *max) {
                return Err(format!(
                    "descriptor {i}: hits_addend {} is above this quotad's --max-hits-addend {max}",
                    ask.hits
                ));
            }
            let window = ask.window.canonical();
            if !self.windows.is_empty() && !self.windows.contains(&window) {
                return Err(format!(
                    "descriptor {i}: window `{window}` is not allowed here (--allow-windows)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_compared_in_their_canonical_spelling() {
        let policy = Policy::new(Vec::new(), None, None, &["24h".into()]).unwrap();
        assert_eq!(policy.windows, ["1d"]);
        assert!(Policy::new(Vec::new(), None, None, &["fortnight".into()])
            .unwrap_err()
            .contains("--allow-windows: `fortnight`"));
    }
}
