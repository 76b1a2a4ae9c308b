//! The one seam between the counting algorithm and proxy-wasm shared data.
//!
//! Semantics mirror Envoy's: `get` returns the value and its CAS token; `set` with a non-zero
//! CAS fails with [`SetError::CasMismatch`] if the entry changed since, but a `set` on a key that
//! does not exist yet always succeeds (CAS is only checked for existing keys), and `cas == 0`
//! writes unconditionally.

use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    /// The entry changed since it was read: read again and retry.
    CasMismatch,
    Failed(StoreError),
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
