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
//! Beside them, the **digest** record (`[version][SHA-256 of the body]`, written between the
//! document and the head) lets a fetcher see that a 200's body is the one already published
//! (a control plane without ETags answers the same body every refresh): it is then neither
//! republished nor recompiled by any VM.
//!
//! Record keys carry a digest of the source (cluster and path), so two plugin configurations
//! that share a `vm_id` but pull from different places do not mix their snapshots.

use crate::config::{Config, Settings, STORE_PREFIX};
use crate::sha256::{sha256, to_hex, Digest};

/// The shared-data keys of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub schedule: String,
    pub head: String,
    pub document: String,
    pub digest: String,
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
            digest: format!("{base}digest"),
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

/// The digest record: a published version and the SHA-256 of its body.
pub fn encode_digest(version: u64, digest: &Digest) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + digest.len());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(digest);
    out
}

pub fn decode_digest(bytes: &[u8]) -> Option<(u64, Digest)> {
    let version = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    Some((version, bytes.get(8..)?.try_into().ok()?))
}

/// Whether `body` is the published snapshot's: the digest record is of the head's version
/// (a record of another version — written by an older filter, or not yet by the newer head's
/// fetcher — says nothing) and holds `body`'s digest.
pub fn unchanged(record: Option<&[u8]>, head_version: u64, body: &Digest) -> bool {
    record
        .and_then(decode_digest)
        .is_some_and(|(version, digest)| version == head_version && digest == *body)
}

/// The consumers `current` serves that `next` does not have, by name (the anonymous consumer
/// of `anonymous_plan` is not one).
pub fn removed(current: &Config, next: &Config) -> usize {
    fn named(c: &Config) -> impl Iterator<Item = &str> {
        c.consumers
            .iter()
            .filter(move |consumer| Some(consumer.id) != c.anonymous)
            .map(|consumer| consumer.name())
    }
    let kept: std::collections::HashSet<&str> = named(next).collect();
    named(current).filter(|name| !kept.contains(name)).count()
}

/// `entitlements.max_removed_percent`: `Err` with the refusal's words when a snapshot removes
/// more than `percent` of the `current` consumers served.
pub fn check_removed(removed: usize, current: usize, percent: u8) -> Result<(), String> {
    let over = (removed as u128) * 100 > (current as u128) * u128::from(percent);
    if !over {
        return Ok(());
    }
    let share = (removed as u128) * 100 / (current.max(1) as u128);
    Err(format!(
        "consumers: the snapshot removes {removed} of the {current} consumers served ({share}%), \
         more than entitlements.max_removed_percent ({percent}%) allows"
    ))
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
    use crate::config::Bounds;

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
    fn a_body_is_unchanged_only_against_the_heads_own_digest() {
        let (a, b) = (sha256(b"{\"consumers\": {}}"), sha256(b"other"));
        let record = encode_digest(3, &a);
        assert_eq!(decode_digest(&record), Some((3, a)));
        assert!(unchanged(Some(&record), 3, &a));
        assert!(!unchanged(Some(&record), 3, &b), "another body");
        assert!(
            !unchanged(Some(&record), 4, &a),
            "a newer head without its digest"
        );
        assert!(!unchanged(None, 3, &a));
        assert!(!unchanged(Some(b"short"), 3, &a));
    }

    #[test]
    fn removals_are_counted_by_name_and_bounded_by_a_percentage() {
        let config = |consumers: &str| {
            Config::from_json(
                format!(
                    r#"{{"plans": {{"p": {{"limits": []}}}}, "anonymous_plan": "p",
                        "consumers": {{{consumers}}}}}"#
                )
                .as_bytes(),
            )
            .unwrap()
        };
        let current = config(r#""a": {"plan": "p"}, "b": {"plan": "p"}, "c": {"plan": "p"}"#);
        assert_eq!(
            removed(
                &current,
                &config(r#""c": {"plan": "p"}, "d": {"plan": "p"}"#)
            ),
            2
        );
        assert_eq!(
            removed(&current, &config("")),
            3,
            "the anonymous consumer is not one"
        );
        assert_eq!(removed(&config(""), &current), 0);
        assert_eq!(check_removed(1, 10, 10), Ok(()));
        assert_eq!(check_removed(0, 0, 0), Ok(()));
        assert_eq!(check_removed(0, 10, 0), Ok(()));
        assert_eq!(
            check_removed(2, 10, 10).unwrap_err(),
            "consumers: the snapshot removes 2 of the 10 consumers served (20%), more than \
             entitlements.max_removed_percent (10%) allows"
        );
        assert!(check_removed(1, 10, 0).is_err(), "0: no removal at all");
        assert!(check_removed(1_000_000, 1_000_000, 99).is_err());
        assert_eq!(check_removed(1_000_000, 1_000_000, 100), Ok(()));
    }

    #[test]
    fn keys_differ_by_source() {
        let a = Settings {
            cluster: "control_plane".into(),
            path: "/v1/consumers".into(),
            authorization: None,
            refresh_ms: 10_000,
            timeout_ms: 5_000,
            bounds: Bounds::default(),
            max_removed_percent: None,
            until_first_snapshot: crate::config::UntilFirstSnapshot::Unavailable,
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
