//! Live entitlements, the pure part: the `entitlements` settings (where the consumers are
//! pulled from, how often), the shared-data records that elect one fetcher per Envoy and
//! carry the versioned snapshot to every VM, and what an answer of the control plane means.
//! The host glue (timer, HTTP call, switch of the runtime) is `host/entitlements.rs`; the
//! validation of a snapshot into a [`crate::config::Config`] is `config/snapshot.rs`.
//!
//! How one fetch per Envoy works (every VM of the plugin runs the same code on its timer):
//! 1. The **schedule** record holds the instant the next fetch is due (Unix ms). A VM whose
//!    clock passed it writes `now + refresh` with the CAS token it read: of the VMs that saw
//!    it due, exactly one write succeeds, and that VM fetches. The record is created when the
//!    plugin is configured (Envoy configures a canary VM before any worker runs), since Envoy
//!    checks no CAS when a key is first written. A fetcher that dies simply lets the schedule
//!    come due again; `timeout <= refresh` keeps two fetches from overlapping.
//! 2. The fetcher validates a 200's body whole (as a configuration load would), creates the
//!    counter records of new consumers, then writes the **document** record
//!    (`[version][body]`) and last the **head** record (`[version][etag]`).
//! 3. Every VM reads the head on each tick (a few bytes); a version above its own makes it
//!    read the document, compile it and switch its runtime between two requests.
//!
//! Record keys carry a digest of the source (cluster and path), so two plugin configurations
//! that share a `vm_id` but pull from different places do not mix their snapshots.

use serde::Deserialize;

use crate::config::{ConfigError, STORE_PREFIX};
use crate::sha256::{sha256, to_hex};

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
    #[serde(default)]
    pub refresh: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

/// Where and how often the consumers are pulled.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// The Envoy cluster the control plane is reached through (also the `:authority`).
    pub cluster: String,
    /// Request path (with query, if any).
    pub path: String,
    /// The `Authorization` value sent (a secret: never logged, never in `Debug`).
    pub authorization: Option<String>,
    pub refresh_ms: u64,
    pub timeout_ms: u64,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("cluster", &self.cluster)
            .field("path", &self.path)
            .field("authorization", &self.authorization.as_ref().map(|_| "…"))
            .field("refresh_ms", &self.refresh_ms)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// Validates the `entitlements` member; every error names its field.
pub fn compile_settings(raw: RawSettings) -> Result<Settings, ConfigError> {
    let err = |field: &str, why: String| Err(ConfigError(format!("entitlements.{field}: {why}")));
    if raw.cluster.is_empty()
        || raw.cluster.len() > 256
        || raw.cluster.bytes().any(|c| c <= b' ' || c >= 0x7f)
    {
        return err(
            "cluster",
            "must be the name of an Envoy cluster (1-256 visible ASCII characters)".into(),
        );
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
    if let Some(value) = &raw.authorization {
        // Not echoed: it is a secret.
        if value.is_empty() || value.bytes().any(|c| !(b' '..0x7f).contains(&c)) {
            return err(
                "authorization",
                "must be a non-empty header value of visible ASCII (e.g. \"Bearer …\")".into(),
            );
        }
    }
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
        authorization: raw.authorization,
        refresh_ms,
        timeout_ms,
    })
}

/// The shared-data keys of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub schedule: String,
    pub head: String,
    pub document: String,
}

impl Keys {
    pub fn new(settings: &Settings) -> Keys {
        let source = format!("{}\n{}", settings.cluster, settings.path);
        let digest = to_hex(&sha256(source.as_bytes()));
        let base = format!(
            "{STORE_PREFIX}entitlements:{}:",
            digest.get(..16).unwrap_or(&digest)
        );
        Keys {
            schedule: format!("{base}schedule"),
            head: format!("{base}head"),
            document: format!("{base}document"),
        }
    }
}

/// The schedule record: the Unix ms at which the next fetch is due.
pub fn encode_schedule(due_ms: i64) -> [u8; 8] {
    due_ms.to_le_bytes()
}

/// A schedule record that is not 8 bytes counts as due (it is rewritten by the next claim).
pub fn decode_schedule(bytes: &[u8]) -> i64 {
    bytes.try_into().map(i64::from_le_bytes).unwrap_or(i64::MIN)
}

/// Whether a VM that read `due_ms` at `now_ms` should claim the fetch; if so, the schedule it
/// writes (with the CAS token it read) to become the fetcher. A due instant more than one
/// refresh ahead (the refresh was shortened by a reconfiguration, or the clock stepped back)
/// counts as due, so that no fetch waits longer than one refresh.
pub fn claim(due_ms: i64, now_ms: i64, refresh_ms: u64) -> Option<i64> {
    let refresh = i64::try_from(refresh_ms).unwrap_or(i64::MAX);
    let next = now_ms.saturating_add(refresh);
    (now_ms >= due_ms || due_ms > next).then_some(next)
}

/// The head record: the current snapshot's version and the control plane's ETag for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Head {
    pub version: u64,
    /// Empty when the control plane sent none (then no `If-None-Match` is sent).
    pub etag: Vec<u8>,
}

impl Head {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.etag.len());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.etag);
        out
    }

    /// `None` for a value that is not a head record.
    pub fn decode(bytes: &[u8]) -> Option<Head> {
        let version = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        Some(Head {
            version,
            etag: bytes.get(8..)?.to_vec(),
        })
    }
}

/// The document record: the version, then the control plane's body as it was validated.
pub fn encode_document(version: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(body);
    out
}

pub fn decode_document(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let version = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    Some((version, bytes.get(8..)?))
}

/// What an answer of the control plane means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200: a snapshot to validate (with its ETag, if any).
    Snapshot { etag: Vec<u8> },
    /// 304: unchanged.
    NotModified,
    /// No answer (timeout, connection refused or reset), or another status.
    Failed(String),
}

/// Classifies the answer from its `:status` and `etag` (`None` when absent).
pub fn classify(status: Option<&[u8]>, etag: Option<&[u8]>) -> Answer {
    match status {
        None => Answer::Failed("no answer (timeout, connection failure or unknown cluster)".into()),
        Some(b"200") => Answer::Snapshot {
            // Only a well-formed, reasonably short ETag is kept to be sent back.
            etag: etag
                .filter(|e| e.len() <= 256 && e.iter().all(|c| (b' '..0x7f).contains(c)))
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
        },
        Some(b"304") => Answer::NotModified,
        Some(b"504") => {
            Answer::Failed("504: no answer within the timeout (Envoy's own reply)".into())
        }
        Some(other) => Answer::Failed(format!(
            "the control plane answered {} (Envoy answers 503 itself when it cannot connect)",
            String::from_utf8_lossy(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(refresh: Option<&str>, timeout: Option<&str>) -> RawSettings {
        RawSettings {
            cluster: "control_plane".into(),
            path: "/v1/consumers".into(),
            authorization: Some("Bearer s3cret".into()),
            refresh: refresh.map(str::to_string),
            timeout: timeout.map(str::to_string),
        }
    }

    #[test]
    fn durations_and_defaults() {
        // The grammar is crate::duration's; the fields keep their ranges.
        assert_eq!(
            compile_settings(raw(Some("1d"), None)).unwrap().refresh_ms,
            86_400_000
        );
        for bad in ["500ms", "25h", "10 s", "10"] {
            let e = compile_settings(raw(Some(bad), None)).unwrap_err();
            assert!(e.0.starts_with("entitlements.refresh:"), "{bad}: {e:?}");
        }
        let s = compile_settings(raw(None, None)).unwrap();
        assert_eq!((s.refresh_ms, s.timeout_ms), (10_000, 5_000));
        let s = compile_settings(raw(Some("1s"), None)).unwrap();
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
        let e = |r: RawSettings| compile_settings(r).unwrap_err().0;
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
    fn one_claim_per_due_instant() {
        assert_eq!(claim(1_000, 999, 10_000), None, "not due yet");
        assert_eq!(claim(1_000, 1_000, 10_000), Some(11_000));
        assert_eq!(claim(decode_schedule(b"junk"), 5, 1_000), Some(1_005));
        assert_eq!(
            claim(60_000, 0, 1_000),
            Some(1_000),
            "due beyond one refresh: due now"
        );
        assert_eq!(claim(1_000, 0, 1_000), None);
        assert_eq!(decode_schedule(&encode_schedule(42)), 42);
    }

    #[test]
    fn records_round_trip() {
        let head = Head {
            version: 7,
            etag: b"\"abc\"".to_vec(),
        };
        assert_eq!(Head::decode(&head.encode()), Some(head));
        assert_eq!(Head::decode(b"short"), None);
        let doc = encode_document(9, b"{}");
        assert_eq!(decode_document(&doc), Some((9, &b"{}"[..])));
        assert_eq!(decode_document(b"1234567"), None);
    }

    #[test]
    fn keys_differ_by_source() {
        let a = compile_settings(raw(None, None)).unwrap();
        let mut b = a.clone();
        b.path = "/v2/consumers".into();
        let (ka, kb) = (Keys::new(&a), Keys::new(&b));
        assert_ne!(ka.head, kb.head);
        assert!(ka.head.starts_with("tollgate:v1:entitlements:"));
        assert!(ka.schedule.ends_with(":schedule"));
    }

    #[test]
    fn answers() {
        assert_eq!(
            classify(Some(b"200"), Some(b"\"v2\"")),
            Answer::Snapshot {
                etag: b"\"v2\"".to_vec()
            }
        );
        assert_eq!(
            classify(Some(b"200"), Some(b"bad\netag")),
            Answer::Snapshot { etag: vec![] }
        );
        assert_eq!(classify(Some(b"304"), None), Answer::NotModified);
        assert!(matches!(classify(Some(b"503"), None), Answer::Failed(m) if m.contains("503")));
        assert!(matches!(classify(None, None), Answer::Failed(_)));
        assert!(matches!(classify(Some(b"504"), None), Answer::Failed(m) if m.contains("timeout")));
    }
}
