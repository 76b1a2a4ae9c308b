//! Live entitlements, the host glue (the algorithm is in [`crate::entitlements`]): on the root
//! context's timer, switch to a newer snapshot if shared data has one, and — when the schedule
//! says a fetch is due and this VM wins the claim — ask the control plane with
//! `If-None-Match`. A 200 is bounded, compared with the published snapshot by digest (an
//! unchanged body is not published again), validated whole (and against
//! `max_removed_percent`), its new consumers' records are created, and the snapshot is
//! published for every VM of this Envoy.
//!
//! The root context routes to [`Entitlements::on_http_call_response`] every call response;
//! tokens that are not this module's are answered `None` and left to others.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};

use super::metrics::{bump, define_counter};
use super::shared_data::SharedData;
use crate::config::{Config, Settings};
use crate::counters::create_counters;
use crate::entitlements::{
    check_removed, claim, classify, decode_document, decode_schedule, encode_digest,
    encode_document, encode_schedule, removed, unchanged, Answer, Head, Keys,
};
use crate::sha256::{sha256, Digest};
use crate::store::{create_if_missing, SetError, Store};

/// This module's counters (`wasmcustom.tollgate.entitlements.*`); rare events, so each is
/// incremented in Envoy at once rather than batched like the request counters.
struct Counters {
    updated: Option<u32>,
    not_modified: Option<u32>,
    unchanged: Option<u32>,
    refused: Option<u32>,
    failed: Option<u32>,
    applied: Option<u32>,
}

fn counter(name: &str) -> Option<u32> {
    define_counter(&format!("tollgate.entitlements.{name}"))
}

/// Unix milliseconds now (`None` if the host cannot tell).
fn now_ms() -> Option<i64> {
    let time = hostcalls::get_current_time().ok()?;
    i64::try_from(time.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

pub struct Entitlements {
    settings: Settings,
    keys: Keys,
    /// The plugin configuration as loaded: every snapshot is compiled with it.
    plugin_configuration: Vec<u8>,
    /// The newest snapshot version this VM has compiled or tried to (0: none yet).
    version: u64,
    /// Whether this VM serves a snapshot (not the configuration's own consumers): not when no
    /// snapshot was ever published, nor when the one stored in shared data could not be
    /// compiled with this configuration.
    serving: bool,
    /// The token of this VM's fetch in flight.
    pending: Option<u32>,
    /// The ETag of the last snapshot this VM refused: sent in `If-None-Match` with the good
    /// one's, so that a bad snapshot costs one download and one log line per VM, not one per
    /// refresh, until the control plane changes it.
    refused_etag: Option<String>,
    /// The digest of the last body this VM refused: the same body again (a control plane
    /// without ETags) is neither validated nor logged again.
    refused_digest: Option<Digest>,
    counters: Counters,
}

impl Entitlements {
    /// For a configuration with `entitlements`: creates the schedule record if this is the
    /// first VM (Envoy's canary VM is configured before any worker, and a record must exist
    /// before its CAS means anything), and returns the state plus the newest published
    /// snapshot compiled, if there is one (a reconfigured or new VM serves it at once).
    pub fn configure(
        config: &Config,
        plugin_configuration: &[u8],
    ) -> Option<(Entitlements, Option<Config>)> {
        let settings = config.entitlements.clone()?;
        let keys = Keys::new(&settings);
        let store = SharedData::default();
        if let Err(e) = create_if_missing(&store, &keys.schedule, &encode_schedule(0)) {
            log::warn!(
                "entitlements: cannot read or create the schedule record: {}",
                e.0
            );
        }
        let mut entitlements = Entitlements {
            settings,
            keys,
            plugin_configuration: plugin_configuration.to_vec(),
            version: 0,
            serving: false,
            pending: None,
            refused_etag: None,
            refused_digest: None,
            counters: Counters {
                updated: counter("fetch.updated"),
                not_modified: counter("fetch.not_modified"),
                unchanged: counter("fetch.unchanged"),
                refused: counter("fetch.refused"),
                failed: counter("fetch.failed"),
                applied: counter("applied"),
            },
        };
        let current = entitlements.newer_snapshot();
        Some((entitlements, current))
    }

    /// On each tick: the newer snapshot to switch to, if any; then a fetch, if one is due and
    /// this VM claims it.
    pub fn on_tick(&mut self) -> Option<Config> {
        let newer = self.newer_snapshot();
        if self.pending.is_none() {
            if let Some(now) = now_ms() {
                self.maybe_fetch(now);
            }
        }
        newer
    }

    fn head(&self, store: &SharedData) -> Option<(Head, u32)> {
        match store.get(&self.keys.head) {
            Ok(Some((bytes, cas))) => Some((Head::decode(&bytes).unwrap_or_default(), cas)),
            Ok(None) => None,
            Err(e) => {
                log::warn!("entitlements: cannot read the snapshot head: {}", e.0);
                None
            }
        }
    }

    /// The published snapshot compiled, if it is newer than the one this VM serves.
    fn newer_snapshot(&mut self) -> Option<Config> {
        let store = SharedData::default();
        let (head, _) = self.head(&store)?;
        if head.version <= self.version {
            return None;
        }
        let bytes = match store.get(&self.keys.document) {
            Ok(Some((bytes, _))) => bytes,
            Ok(None) => return None,
            Err(e) => {
                log::warn!("entitlements: cannot read the snapshot: {}", e.0);
                return None;
            }
        };
        // The document is written before the head: it is at least the head's version.
        let (version, body) = decode_document(&bytes)?;
        if version <= self.version {
            return None;
        }
        let started = now_ms();
        // Whatever the outcome, this version is done with: a snapshot this VM cannot compile
        // (the fetcher could) is not compiled again on every tick.
        self.version = version;
        match Config::with_snapshot(&self.plugin_configuration, body) {
            Ok(config) => {
                self.applied(&config, started);
                Some(config)
            }
            Err(e) => {
                log::error!(
                    "entitlements: snapshot version {version} refused by this VM, the previous one keeps serving: {e}"
                );
                None
            }
        }
    }

    fn applied(&mut self, config: &Config, started: Option<i64>) {
        self.serving = true;
        bump(self.counters.applied, 1);
        let took = match (started, now_ms()) {
            (Some(a), Some(b)) => b - a,
            _ => -1,
        };
        log::info!(
            "entitlements: version {} applied in {took} ms: {} consumers, {} keys, {} plans",
            self.version,
            config.consumers.len() - usize::from(config.anonymous.is_some()),
            config.key_count(),
            config.plans.len()
        );
    }

    fn maybe_fetch(&mut self, now: i64) {
        let store = SharedData::default();
        let (due, cas) = match store.get(&self.keys.schedule) {
            Ok(Some((bytes, cas))) => (decode_schedule(&bytes), cas),
            Ok(None) => {
                // Created when configured; only a lost record gets here. Due at once.
                let _ = store.set(&self.keys.schedule, &encode_schedule(0), 0);
                return;
            }
            Err(e) => {
                log::warn!("entitlements: cannot read the schedule record: {}", e.0);
                return;
            }
        };
        let Some(next) = claim(due, now, self.settings.refresh_ms) else {
            return;
        };
        match store.set(&self.keys.schedule, &encode_schedule(next), cas) {
            Ok(()) => {}
            // Another VM claimed this fetch.
            Err(SetError::CasMismatch) => return,
            Err(SetError::Failed(e)) => {
                log::warn!("entitlements: cannot claim the fetch: {}", e.0);
                return;
            }
        }
        // A VM that serves no snapshot must get one: the published one's ETag would bring
        // a 304 (after a reconfiguration that this VM could not compile the stored snapshot
        // with, the control plane's answer is validated again with the new configuration).
        let good = self
            .head(&store)
            .filter(|_| self.serving)
            .map(|(head, _)| head.etag)
            .filter(|etag| !etag.is_empty())
            .and_then(|etag| String::from_utf8(etag).ok());
        // RFC 9110 §13.1.2: a list of entity tags; a 304 if the current one is any of them.
        let etag = match (good, &self.refused_etag) {
            (Some(good), Some(refused)) => Some(format!("{good}, {refused}")),
            (Some(good), None) => Some(good),
            (None, refused) => refused.clone(),
        };
        let s = &self.settings;
        let mut headers = vec![
            (":method", "GET"),
            (":path", s.path.as_str()),
            (":authority", s.cluster.as_str()),
            ("accept", "application/json"),
        ];
        if let Some(etag) = &etag {
            headers.push(("if-none-match", etag.as_str()));
        }
        if let Some(value) = &s.authorization {
            headers.push(("authorization", value.0.as_str()));
        }
        let timeout = Duration::from_millis(s.timeout_ms);
        match hostcalls::dispatch_http_call(&s.cluster, headers, None, vec![], timeout) {
            Ok(token) => self.pending = Some(token),
            Err(status) => {
                bump(self.counters.failed, 1);
                log::warn!(
                    "entitlements: cannot call cluster `{}` ({status:?}: is it defined?); version {} keeps serving",
                    s.cluster,
                    self.version
                );
            }
        }
    }

    /// A call response: the configuration to switch to, if the call was this module's and
    /// its answer brought a valid, new snapshot. `current` is the configuration this VM
    /// serves (what `max_removed_percent` compares with).
    pub fn on_http_call_response(
        &mut self,
        token: u32,
        body_size: usize,
        current: Option<&Config>,
    ) -> Option<Config> {
        if self.pending != Some(token) {
            return None;
        }
        self.pending = None;
        let header = |name: &str| {
            hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
                .ok()
                .flatten()
        };
        let (status, etag) = (header(":status"), header("etag"));
        match classify(status.as_deref(), etag.as_deref()) {
            Answer::NotModified => {
                bump(self.counters.not_modified, 1);
                log::debug!("entitlements: not modified (version {})", self.version);
                None
            }
            Answer::Failed(why) => {
                bump(self.counters.failed, 1);
                log::warn!(
                    "entitlements: fetch from cluster `{}` failed: {why}; version {} keeps serving",
                    self.settings.cluster,
                    self.version
                );
                None
            }
            Answer::Snapshot { etag } => self.publish(etag, body_size, current),
        }
    }

    /// A snapshot refused: counted, logged once (naming the field), and remembered by ETag
    /// and digest so that the same answer is not downloaded, validated or logged again.
    fn refuse(&mut self, why: &str, etag: Vec<u8>, digest: Option<Digest>) {
        bump(self.counters.refused, 1);
        log::error!(
            "entitlements: snapshot refused, version {} keeps serving: {why}",
            self.version
        );
        self.refused_etag = String::from_utf8(etag).ok().filter(|e| !e.is_empty());
        self.refused_digest = digest;
    }

    /// Validates a 200's body, creates its new consumers' records, and publishes it.
    fn publish(
        &mut self,
        etag: Vec<u8>,
        body_size: usize,
        current: Option<&Config>,
    ) -> Option<Config> {
        let store = SharedData::default();
        let (head, head_cas) = self.head(&store).unwrap_or_default();
        if !etag.is_empty() && etag == head.etag && head.version > 0 && self.serving {
            // A control plane that ignores If-None-Match: same ETag, same snapshot.
            bump(self.counters.not_modified, 1);
            return None;
        }
        // Before the body is copied into the VM (Envoy has buffered it by now).
        if let Err(e) = self.settings.bounds.check_document(body_size) {
            self.refuse(&e.0, etag, None);
            return None;
        }
        let body = match hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size) {
            Ok(body) => body.unwrap_or_default(),
            Err(status) => {
                bump(self.counters.failed, 1);
                log::warn!("entitlements: cannot read the answer's body: {status:?}");
                return None;
            }
        };
        let digest = sha256(&body);
        if self.refused_digest == Some(digest) {
            bump(self.counters.unchanged, 1);
            log::debug!("entitlements: the snapshot refused last, unchanged");
            return None;
        }
        let record = match store.get(&self.keys.digest) {
            Ok(record) => record.map(|(bytes, _)| bytes),
            Err(e) => {
                log::warn!("entitlements: cannot read the snapshot digest: {}", e.0);
                None
            }
        };
        if self.serving && unchanged(record.as_deref(), head.version, &digest) {
            bump(self.counters.unchanged, 1);
            log::debug!(
                "entitlements: unchanged (the body of version {}), not published again",
                head.version
            );
            if !etag.is_empty() && etag != head.etag {
                // The same body under a new ETag: send that one in If-None-Match from now on.
                let head = Head {
                    version: head.version,
                    etag,
                };
                let _ = store.set(&self.keys.head, &head.encode(), head_cas);
            }
            return None;
        }
        let started = now_ms();
        let config = match Config::with_snapshot(&self.plugin_configuration, &body) {
            Ok(config) => config,
            Err(e) => {
                self.refuse(&e.0, etag, Some(digest));
                return None;
            }
        };
        // Only against a snapshot: the configuration's own consumers are a bootstrap set
        // that the first snapshot replaces whole.
        if let (Some(percent), Some(current)) = (
            self.settings.max_removed_percent,
            current.filter(|_| self.serving),
        ) {
            let served = current.consumers.len() - usize::from(current.anonymous.is_some());
            if let Err(why) = check_removed(removed(current, &config), served, percent) {
                self.refuse(&why, etag, Some(digest));
                return None;
            }
        }
        // New consumers' records (leases in fleet mode) must exist before any VM counts them
        // (see quota.rs).
        if let Err(e) = create_counters(&config, &SharedData::default()) {
            bump(self.counters.failed, 1);
            log::error!(
                "entitlements: cannot create the snapshot's records, version {} keeps serving: {}",
                self.version,
                e.0
            );
            return None;
        }
        let version = head.version.max(self.version) + 1;
        let document = encode_document(version, &body);
        let published = store.set(&self.keys.document, &document, 0).and_then(|()| {
            // The digest before the head: a head is never newer than a digest that claims it.
            if let Err(e) = store.set(&self.keys.digest, &encode_digest(version, &digest), 0) {
                log::warn!(
                    "entitlements: cannot store the snapshot digest (an unchanged body will be published again): {}",
                    match e {
                        SetError::CasMismatch => "CAS mismatch".to_string(),
                        SetError::Failed(e) => e.0,
                    }
                );
            }
            store.set(
                &self.keys.head,
                &Head {
                    version,
                    etag: etag.clone(),
                }
                .encode(),
                head_cas,
            )
        });
        if let Err(e) = published {
            bump(self.counters.failed, 1);
            match e {
                SetError::CasMismatch => log::warn!(
                    "entitlements: another VM published a snapshot at the same time; its version is taken on the next tick"
                ),
                SetError::Failed(e) => log::error!(
                    "entitlements: cannot publish the snapshot, version {} keeps serving: {}",
                    self.version,
                    e.0
                ),
            }
            return None;
        }
        bump(self.counters.updated, 1);
        self.version = version;
        self.refused_etag = None;
        self.refused_digest = None;
        log::info!(
            "entitlements: fetched version {version} (ETag {}, {} bytes)",
            String::from_utf8_lossy(&etag),
            body.len()
        );
        self.applied(&config, started);
        Some(config)
    }
}
