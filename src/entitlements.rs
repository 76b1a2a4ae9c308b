//! Live entitlements, the pure part: the shared-data records that elect one fetcher per Envoy
//! and carry the versioned snapshot to every VM, and what an answer of the control plane
//! means. The `entitlements` settings (where the consumers are pulled from, how often) are
//! `config/entitlements.rs`; the host glue (timer, HTTP call, switch of the runtime) is
//! `host/entitlements.rs`; the validation of a snapshot into a [`crate::config::Config`] is
//! `config/load.rs`.
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

use crate::config::{Settings, STORE_PREFIX};
use crate::sha256::{sha256, to_hex};

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
        let a = Settings {
            cluster: "control_plane".into(),
            path: "/v1/consumers".into(),
            authorization: None,
            refresh_ms: 10_000,
            timeout_ms: 5_000,
        };
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
