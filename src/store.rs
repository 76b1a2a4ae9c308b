//! The one seam between the counting algorithm and proxy-wasm shared data.
//!
//! Semantics mirror Envoy's: `get` returns the value and its CAS token; `set` with a non-zero
//! CAS fails with [`SetError::CasMismatch`] if the entry changed since, but a `set` on a key that
//! does not exist yet always succeeds (CAS is only checked for existing keys), and `cas == 0`
//! writes unconditionally.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::sha256::{to_hex, Joined};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    /// The entry changed since it was read: read again and retry.
    CasMismatch,
    Failed(StoreError),
}

/// Why a read-modify-write (a count, a lease, a claim) did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountError {
    Store(StoreError),
    /// Every attempt lost its CAS race.
    Contended,
}

impl CountError {
    /// One line for logs and refusals, the same for every kind of record.
    pub fn reason(&self) -> String {
        match self {
            CountError::Store(e) => format!("shared data failed: {}", e.0),
            CountError::Contended => {
                "shared data stayed contended: every CAS attempt lost its race".to_string()
            }
        }
    }

    /// As a store error (for callers that report only those).
    pub fn into_store_error(self) -> StoreError {
        match self {
            CountError::Store(e) => e,
            CountError::Contended => StoreError(self.reason()),
        }
    }
}

/// The error for a record that configuration time should have created and did not.
pub fn missing(key: &str) -> StoreError {
    StoreError(format!(
        "{key} is missing (it is created when the plugin is configured)"
    ))
}

/// What one round of [`read_modify_write`] decided.
pub enum Rewrite<T> {
    /// Write these bytes over what was read (with its CAS); on success the loop returns `T`.
    Write(Vec<u8>, T),
    /// Write nothing: the loop returns `T`.
    Keep(T),
}

/// The CAS loop every shared record goes through: read `key` (which must exist: see
/// [`create_if_missing`]), let `step` decide from its bytes and the attempt number (from 1),
/// write with the CAS of the read, and start over when another writer came first — at most
/// `attempts` times, then [`CountError::Contended`].
#[inline]
pub fn read_modify_write<T>(
    store: &impl Store,
    key: &str,
    attempts: u32,
    mut step: impl FnMut(Vec<u8>, u32) -> Result<Rewrite<T>, CountError>,
) -> Result<T, CountError> {
    for attempt in 1..=attempts {
        let Some((bytes, cas)) = store.get(key).map_err(CountError::Store)? else {
            // Creating it here could race with another worker (Envoy checks no CAS on
            // creation) and lose its write, so a missing record is a store error.
            return Err(CountError::Store(missing(key)));
        };
        match step(bytes, attempt)? {
            Rewrite::Keep(done) => return Ok(done),
            Rewrite::Write(next, done) => match store.set(key, &next, cas) {
                Ok(()) => return Ok(done),
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Failed(e)) => return Err(CountError::Store(e)),
            },
        }
    }
    Err(CountError::Contended)
}

/// Creates `key` with `initial` if it does not exist yet, and never overwrites it: at
/// configuration time, before any worker races on the key (Envoy checks no CAS when a key is
/// created). Whether this call created it.
pub fn create_if_missing(
    store: &impl Store,
    key: &str,
    initial: &[u8],
) -> Result<bool, StoreError> {
    if store.get(key)?.is_some() {
        return Ok(false);
    }
    match store.set(key, initial, 0) {
        Ok(()) => Ok(true),
        Err(SetError::CasMismatch) => Ok(false),
        Err(SetError::Failed(e)) => Err(e),
    }
}

/// Creates every key of `keys` that is missing, with `initial` (at configuration time). Every
/// VM of a configuration runs this (Envoy's canary on the main thread first, then each worker):
/// a marker, `marker_prefix` and a digest of the set, records that the whole set exists, so the
/// later VMs skip 100 000 look-ups; a changed set has another digest and is checked again.
/// Returns how many keys this call created.
pub fn create_set<K: AsRef<str>, I: Iterator<Item = K>>(
    store: &impl Store,
    marker_prefix: &str,
    keys: impl Fn() -> I,
    initial: &[u8],
) -> Result<usize, StoreError> {
    // The digest of the keys joined by newlines, hashed as they come (a million keys joined
    // would be a copy of them all in the VM's memory, which never shrinks).
    let mut digest = Joined::new(b'\n');
    for key in keys() {
        digest.push(key.as_ref().as_bytes());
    }
    let digest = digest.finish();
    let marker = format!("{marker_prefix}{}", to_hex(&digest));
    if store.get(&marker)?.is_some() {
        return Ok(0);
    }
    let mut created = 0;
    for key in keys() {
        if create_if_missing(store, key.as_ref(), initial)? {
            created += 1;
        }
    }
    create_if_missing(store, &marker, b"1")?;
    Ok(created)
}

pub trait Store {
    /// The entry's value and CAS token, or `None` if the key was never written.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Writes `value` if the entry's CAS is still `cas` (or unconditionally with `cas == 0`).
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError>;
}

/// An in-memory store with Envoy's semantics: for the tests of the counting algorithm, the fuzz
/// targets, and `tollgate explain` (which decides against a fresh count).
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: RefCell<u32>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.entries.borrow().get(key).map(|(v, _)| v.clone())
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.entries.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        let mut entries = self.entries.borrow_mut();
        if let Some((_, current)) = entries.get(key) {
            if cas != 0 && cas != *current {
                return Err(SetError::CasMismatch);
            }
        }
        let mut next = self.next_cas.borrow_mut();
        *next = next.wrapping_add(1).max(1);
        entries.insert(key.to_string(), (value.to_vec(), *next));
        Ok(())
    }
}

/// A store whose every operation fails, for the unit tests of the failure paths (the real
/// host failure is driven end to end through the fault-injection build, `make build-fault`).
#[cfg(test)]
#[derive(Debug, Default)]
pub struct FailingStore;

#[cfg(test)]
impl Store for FailingStore {
    fn get(&self, _: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Err(StoreError("down".into()))
    }

    fn set(&self, _: &str, _: &[u8], _: u32) -> Result<(), SetError> {
        Err(SetError::Failed(StoreError("down".into())))
    }
}

/// A store that counts the reads reaching it, for the unit tests that prove the memo answered
/// (a spent consumer's requests must not read shared data).
#[cfg(test)]
pub struct CountingStore<'a> {
    inner: &'a MemoryStore,
    pub gets: std::cell::Cell<u32>,
}

#[cfg(test)]
impl<'a> CountingStore<'a> {
    pub fn new(inner: &'a MemoryStore) -> Self {
        CountingStore {
            inner,
            gets: std::cell::Cell::new(0),
        }
    }
}

#[cfg(test)]
impl Store for CountingStore<'_> {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.gets.set(self.gets.get() + 1);
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        self.inner.set(key, value, cas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Another writer changes the key between each read and write, `races` times.
    struct Racing<'a> {
        inner: &'a MemoryStore,
        races: Cell<u32>,
    }

    impl Store for Racing<'_> {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.inner.get(key)
        }

        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
            if self.races.get() > 0 {
                self.races.set(self.races.get() - 1);
                let (current, now) = self
                    .inner
                    .get(key)
                    .map_err(SetError::Failed)?
                    .unwrap_or_default();
                self.inner.set(key, &current, now)?;
            }
            self.inner.set(key, value, cas)
        }
    }

    fn append(store: &impl Store, attempts: u32) -> Result<u32, CountError> {
        read_modify_write(store, "k", attempts, |mut bytes, attempt| {
            bytes.push(b'x');
            Ok(Rewrite::Write(bytes, attempt))
        })
    }

    #[test]
    fn a_lost_race_reads_again_and_a_lost_race_every_time_is_contended() {
        let inner = MemoryStore::new();
        inner.set("k", b"", 0).unwrap();
        let store = Racing {
            inner: &inner,
            races: Cell::new(2),
        };
        assert_eq!(append(&store, 3), Ok(3), "written on the third attempt");
        assert_eq!(inner.get("k").unwrap().unwrap().0, b"x", "once");
        store.races.set(5);
        assert_eq!(append(&store, 5), Err(CountError::Contended));
        assert_eq!(inner.get("k").unwrap().unwrap().0, b"x", "nothing written");
    }

    #[test]
    fn keep_writes_nothing_and_a_missing_key_is_an_error_naming_it() {
        let store = MemoryStore::new();
        let missing = append(&store, 3).unwrap_err();
        assert_eq!(
            missing.reason(),
            "shared data failed: k is missing (it is created when the plugin is configured)"
        );
        assert!(
            store.get("k").unwrap().is_none(),
            "a missing key is not created"
        );
        store.set("k", b"v", 0).unwrap();
        let (_, cas) = store.get("k").unwrap().unwrap();
        let kept = read_modify_write(&store, "k", 3, |bytes, _| Ok(Rewrite::Keep(bytes)));
        assert_eq!(kept, Ok(b"v".to_vec()));
        assert_eq!(store.get("k").unwrap().unwrap().1, cas, "not written");
    }

    #[test]
    fn a_set_is_created_once_never_overwriting_and_then_skipped_whole() {
        let inner = MemoryStore::new();
        inner.set("b", b"kept", 0).unwrap();
        let store = CountingStore::new(&inner);
        let abc = || ["a", "b", "c"].into_iter();
        assert_eq!(create_set(&store, "m:", abc, b"0"), Ok(2));
        // The marker is named by the digest of the keys joined by newlines (as before they
        // were hashed one by one: a marker written by an older build is still found).
        let marker = format!("m:{}", to_hex(&crate::sha256::sha256(b"a\nb\nc")));
        assert_eq!(inner.get(&marker).unwrap().unwrap().0, b"1");
        assert_eq!(inner.get("b").unwrap().unwrap().0, b"kept");
        assert_eq!(inner.get("c").unwrap().unwrap().0, b"0");
        store.gets.set(0);
        assert_eq!(create_set(&store, "m:", abc, b"0"), Ok(0));
        assert_eq!(store.gets.get(), 1, "the marker alone is read");
        assert_eq!(
            create_set(&store, "m:", || ["a", "d"].into_iter(), b"0"),
            Ok(1),
            "another set"
        );
        assert!(!create_if_missing(&inner, "d", b"1").unwrap());
        assert_eq!(
            CountError::Contended.into_store_error().0,
            "shared data stayed contended: every CAS attempt lost its race"
        );
    }
}
