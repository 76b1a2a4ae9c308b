//! Name rules shared by the configuration, quotad and the CLI: plan, consumer and limit names,
//! HTTP tokens, and Envoy cluster names.

/// Longest plan, consumer or limit name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest URL a configuration may hold (remedy pages, x402 resources).
pub const MAX_URL_LEN: usize = 2048;

/// Whether a plan, consumer or limit name follows the name rules: 1-[`MAX_NAME_LEN`] characters
/// of `A-Z a-z 0-9 _ - .` (they appear in metric names, shared-data keys and RLS descriptors).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// RFC 9110 token characters (header names, auth schemes).
pub fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// Whether `text` can be a header value as configured (`authorization` of `events` and
/// `entitlements`, a URL's authority and path): not empty, printable ASCII and spaces only, so
/// that no CR/LF can split a header.
pub fn is_header_value(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|c| (b' '..0x7f).contains(&c))
}

/// Longest Envoy cluster name accepted.
pub const MAX_CLUSTER_LEN: usize = 255;

/// What [`valid_cluster`] accepts, for error messages.
pub const CLUSTER_RULE: &str =
    "must be the name of an Envoy cluster (1-255 visible ASCII characters, no spaces)";

/// Whether a name can be an Envoy cluster's (`store.rls.cluster`, `events.cluster`,
/// `entitlements.cluster`): 1-[`MAX_CLUSTER_LEN`] visible ASCII characters. Envoy itself puts
/// few rules on cluster names, and meshes use characters a stricter rule would refuse (Istio's
/// `outbound|8081||quotad.tollgate.svc.cluster.local`); spaces and control characters cannot
/// be meant.
pub fn valid_cluster(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_CLUSTER_LEN && name.bytes().all(|c| c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["free", "a", "pro-2025.v1", "A_b", &"n".repeat(MAX_NAME_LEN)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", "a:b", &"n".repeat(MAX_NAME_LEN + 1)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn tokens() {
        assert!(is_token("x-api-key") && is_token("Bearer") && is_token("a!#$%&'*+-.^_`|~"));
        for bad in ["", "a b", "a:b", "a\"b", "a/b", "é"] {
            assert!(!is_token(bad), "{bad}");
        }
    }

    #[test]
    fn header_values() {
        assert!(is_header_value("Bearer abc") && is_header_value("~"));
        for bad in ["", "a\r\nb", "a\tb", "é", "\x7f"] {
            assert!(!is_header_value(bad), "{bad:?}");
        }
    }

    #[test]
    fn one_cluster_rule_for_every_section() {
        for ok in [
            "quotad",
            "a/b",
            "sink.example.com:443",
            "outbound|8081||quotad.tollgate.svc.cluster.local",
            &"c".repeat(MAX_CLUSTER_LEN),
        ] {
            assert!(valid_cluster(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a\tb",
            "a\nb",
            "é",
            &"c".repeat(MAX_CLUSTER_LEN + 1),
        ] {
            assert!(!valid_cluster(bad), "{bad}");
        }
    }
}
