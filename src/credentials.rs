//! Where the API key comes from: the configured sources, tried in order.
//!
//! Rules (documented in docs/configuration.md, "How the key is found"):
//! - A source is *present* when its header / parameter exists. The first present source wins;
//!   later sources are not consulted.
//! - `authorization` is present only when the header's scheme word matches (without case):
//!   `Authorization: Basic ...` is skipped so that the next source can be tried.
//! - A present source with an empty key (or a query value with broken percent-encoding) is a
//!   malformed credential: refused with 401, never treated as "no credential" (which could
//!   fall through to the anonymous plan).
//! - `query`: the first parameter with that name counts; `%XX` is decoded, `+` is kept as-is.

/// Where an API key may come from, tried in configuration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A request header (name stored lowercase).
    Header(String),
    /// `Authorization: <scheme> <key>`; the scheme is stored lowercase and matched without case.
    Authorization(String),
    /// A URL query parameter (percent-decoded).
    Query(String),
}

impl Source {
    /// `header x-api-key`, `authorization Bearer`, `query api_key`.
    pub fn describe(&self) -> String {
        match self {
            Source::Header(name) => format!("header {name}"),
            Source::Authorization(scheme) => format!("authorization {}", capitalized(scheme)),
            Source::Query(name) => format!("query {name}"),
        }
    }
}

/// The `WWW-Authenticate` challenge of every 401: one scheme per kind of configured source
/// (`ApiKey realm="tollgate"` for headers and query parameters, the scheme itself for
/// `Authorization`). Rendered once, when the configuration is compiled.
pub fn challenge(sources: &[Source]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for source in sources {
        let part = match source {
            Source::Authorization(scheme) => {
                format!("{} realm=\"tollgate\"", capitalized(scheme))
            }
            Source::Header(_) | Source::Query(_) => "ApiKey realm=\"tollgate\"".to_string(),
        };
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    parts.join(", ")
}

/// `bearer` → `Bearer` (schemes are stored lowercase and matched without case).
pub fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// An API key found in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub key: Vec<u8>,
    /// Index into the configured sources of the one it came from.
    pub source: usize,
}

/// What the request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Key(Presented),
    /// No configured source is present.
    Missing,
    /// A source is present but unusable; the reason is safe to show to the caller.
    Malformed(&'static str),
}

/// Finds the key. `header` returns a request header's value by lowercase name (`:path` for the
/// path and query), or `None` when absent.
pub fn extract(sources: &[Source], mut header: impl FnMut(&str) -> Option<Vec<u8>>) -> Credential {
    let mut path: Option<Option<Vec<u8>>> = None;
    for (index, source) in sources.iter().enumerate() {
        let found = match source {
            Source::Header(name) => header(name).map(|value| {
                let key = trimmed(value);
                if key.is_empty() {
                    Err("the API key header is empty")
                } else {
                    Ok(key)
                }
            }),
            Source::Authorization(scheme) => {
                header("authorization").and_then(|value| from_authorization(&value, scheme))
            }
            Source::Query(name) => {
                let path = path.get_or_insert_with(|| header(":path"));
                path.as_deref().and_then(|p| from_query(p, name))
            }
        };
        match found {
            Some(Ok(key)) => return Credential::Key(Presented { key, source: index }),
            Some(Err(reason)) => return Credential::Malformed(reason),
            None => continue,
        }
    }
    Credential::Missing
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_space = |c: &u8| *c == b' ' || *c == b'\t';
    let start = bytes
        .iter()
        .position(|c| !is_space(c))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|c| !is_space(c))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// `value` without surrounding spaces and tabs, copied only when there were some.
fn trimmed(value: Vec<u8>) -> Vec<u8> {
    let key = trim(&value);
    if key.len() == value.len() {
        value
    } else {
        key.to_vec()
    }
}

/// `Authorization: <scheme> <key>`: `None` when the scheme differs (the source is absent).
fn from_authorization(value: &[u8], scheme: &str) -> Option<Result<Vec<u8>, &'static str>> {
    let value = trim(value);
    let split = value
        .iter()
        .position(|c| *c == b' ' || *c == b'\t')
        .unwrap_or(value.len());
    let (word, rest) = value.split_at(split);
    if !word.eq_ignore_ascii_case(scheme.as_bytes()) {
        return None;
    }
    let key = trim(rest);
    Some(if key.is_empty() {
        Err("the Authorization header has no key after its scheme")
    } else {
        Ok(key.to_vec())
    })
}

/// The first `name=value` parameter of the path's query, percent-decoded.
fn from_query(path: &[u8], name: &str) -> Option<Result<Vec<u8>, &'static str>> {
    let query_start = path.iter().position(|c| *c == b'?')? + 1;
    let query = path.get(query_start..)?;
    let query = match query.iter().position(|c| *c == b'#') {
        Some(end) => query.get(..end)?,
        None => query,
    };
    for pair in query.split(|c| *c == b'&') {
        let (raw_name, raw_value) = match pair.iter().position(|c| *c == b'=') {
            Some(eq) => (pair.get(..eq)?, pair.get(eq + 1..)?),
            None => (pair, &b""[..]),
        };
        if percent_decode(raw_name).as_deref() != Some(name.as_bytes()) {
            continue;
        }
        return Some(match percent_decode(raw_value) {
            None => Err("the API key query parameter has malformed percent-encoding"),
            Some(value) if value.is_empty() => Err("the API key query parameter is empty"),
            Some(value) => Ok(value),
        });
    }
    None
}

/// The path with every `name` parameter removed from its query (for `hide_credentials`);
/// `None` when there is nothing to remove.
pub fn strip_query_param(path: &[u8], name: &str) -> Option<Vec<u8>> {
    let query_start = path.iter().position(|c| *c == b'?')?;
    let (base, query) = (path.get(..query_start)?, path.get(query_start + 1..)?);
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut removed = false;
    for pair in query.split(|c| *c == b'&') {
        let raw_name = match pair.iter().position(|c| *c == b'=') {
            Some(eq) => pair.get(..eq)?,
            None => pair,
        };
        if percent_decode(raw_name).as_deref() == Some(name.as_bytes()) {
            removed = true;
        } else {
            kept.push(pair);
        }
    }
    if !removed {
        return None;
    }
    let mut out = base.to_vec();
    if !kept.is_empty() {
        out.push(b'?');
        out.extend_from_slice(&kept.join(&b'&'));
    }
    Some(out)
}

/// Decodes `%XX` escapes; `None` if an escape is malformed. Kept by hand (20 lines) rather
/// than the `percent-encoding` crate: that decoder passes a malformed escape (`%zz`, a
/// trailing `%`) through as literal bytes, where a key with broken encoding must be a
/// malformed credential (401), never a different key.
pub fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(input.len());
    let mut bytes = input.iter();
    while let Some(&c) = bytes.next() {
        if c == b'%' {
            let hi = hex(*bytes.next()?)?;
            let lo = hex(*bytes.next()?)?;
            out.push((hi << 4) | lo);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn sources() -> Vec<Source> {
        vec![
            Source::Header("x-api-key".into()),
            Source::Authorization("bearer".into()),
            Source::Query("api_key".into()),
        ]
    }

    fn run(headers: &[(&str, &[u8])]) -> Credential {
        let map: HashMap<&str, &[u8]> = headers.iter().copied().collect();
        extract(&sources(), |name| map.get(name).map(|v| v.to_vec()))
    }

    fn key(k: &str, source: usize) -> Credential {
        Credential::Key(Presented {
            key: k.as_bytes().to_vec(),
            source,
        })
    }

    #[test]
    fn sources_in_order_first_present_wins() {
        assert_eq!(run(&[("x-api-key", b"h")]), key("h", 0));
        assert_eq!(
            run(&[
                ("x-api-key", b"h"),
                ("authorization", b"Bearer b"),
                (":path", b"/?api_key=q")
            ]),
            key("h", 0)
        );
        assert_eq!(
            run(&[("authorization", b"Bearer b"), (":path", b"/?api_key=q")]),
            key("b", 1)
        );
        assert_eq!(run(&[(":path", b"/x?api_key=q")]), key("q", 2));
        assert_eq!(run(&[(":path", b"/x")]), Credential::Missing);
        assert_eq!(run(&[]), Credential::Missing);
    }

    #[test]
    fn authorization_scheme_is_case_insensitive_and_other_schemes_are_skipped() {
        assert_eq!(run(&[("authorization", b"bEaReR  tok ")]), key("tok", 1));
        assert_eq!(run(&[("authorization", b"Bearer\ttok")]), key("tok", 1));
        assert_eq!(
            run(&[("authorization", b"Basic dXNlcjpwYXNz")]),
            Credential::Missing
        );
        assert_eq!(
            run(&[
                ("authorization", b"Basic dXNlcjpwYXNz"),
                (":path", b"/?api_key=q")
            ]),
            key("q", 2)
        );
        assert_eq!(run(&[("authorization", b"Bearertok")]), Credential::Missing);
        assert!(matches!(
            run(&[("authorization", b"Bearer")]),
            Credential::Malformed(_)
        ));
        assert!(matches!(
            run(&[("authorization", b"Bearer   ")]),
            Credential::Malformed(_)
        ));
    }

    #[test]
    fn empty_header_is_malformed_not_missing() {
        assert!(matches!(
            run(&[("x-api-key", b"")]),
            Credential::Malformed(_)
        ));
        assert!(matches!(
            run(&[("x-api-key", b"  ")]),
            Credential::Malformed(_)
        ));
    }

    #[test]
    fn non_utf8_keys_are_kept_as_bytes() {
        assert_eq!(
            run(&[("x-api-key", b"\xff\xfe")]),
            Credential::Key(Presented {
                key: vec![0xff, 0xfe],
                source: 0
            })
        );
    }

    #[test]
    fn query_parameters() {
        let q = |path: &[u8]| run(&[(":path", path)]);
        assert_eq!(
            q(b"/?a=1&api_key=k%2Fe%3Dy&api_key=second"),
            key("k/e=y", 2)
        );
        assert_eq!(q(b"/?api_key=a+b"), key("a+b", 2));
        assert_eq!(q(b"/?api%5Fkey=k"), key("k", 2));
        assert_eq!(q(b"/?api_key=k#frag"), key("k", 2));
        assert_eq!(q(b"/?xapi_key=k&api_keyx=k"), Credential::Missing);
        assert_eq!(q(b"/?#api_key=k"), Credential::Missing);
        assert_eq!(q(b"/path?"), Credential::Missing);
        assert!(matches!(q(b"/?api_key=%zz"), Credential::Malformed(_)));
        assert!(matches!(q(b"/?api_key=%4"), Credential::Malformed(_)));
        assert!(matches!(q(b"/?api_key="), Credential::Malformed(_)));
        assert!(matches!(q(b"/?api_key"), Credential::Malformed(_)));
        assert_eq!(q(b"/?a=%zz&api_key=k"), key("k", 2));
    }

    #[test]
    fn strips_the_credential_parameter() {
        let strip =
            |p: &[u8]| strip_query_param(p, "api_key").map(|v| String::from_utf8(v).unwrap());
        assert_eq!(strip(b"/a?api_key=k"), Some("/a".into()));
        assert_eq!(strip(b"/a?x=1&api_key=k&y=2"), Some("/a?x=1&y=2".into()));
        assert_eq!(
            strip(b"/a?api_key=k&api%5Fkey=j&api_key"),
            Some("/a".into())
        );
        assert_eq!(strip(b"/a?x=1"), None);
        assert_eq!(strip(b"/a"), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"a%20b%2fc"), Some(b"a b/c".to_vec()));
        assert_eq!(percent_decode(b"%ff"), Some(vec![0xff]));
        assert_eq!(percent_decode(b"%"), None);
        assert_eq!(percent_decode(b"%g0"), None);
    }
}
