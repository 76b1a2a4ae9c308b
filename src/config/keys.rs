//! The configured keys, mapped to their consumers: plaintext keys by their bytes, `sha256:`
//! keys by digest.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::sha256::{sha256, Digest};

/// Hashes a SHA-256 digest map key by its first 8 bytes: digests are already uniform, and the
/// keys come from the operator, not from clients, so SipHash's flood resistance buys nothing.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }
}

pub(super) type KeyMap = HashMap<Digest, usize, BuildHasherDefault<DigestHasher>>;

/// Every configured key, mapped to its consumer's index: plaintext keys as bytes (in a
/// SipHash map with a random seed, since lookups are by client-sent bytes), `sha256:` keys by
/// digest. A request costs one map lookup, plus one SHA-256 only when hashed keys exist and
/// the plaintext lookup missed; compiling 100 000 plaintext keys costs no hashing at all.
#[derive(Debug, Default)]
pub(super) struct Keys {
    pub(super) plain: HashMap<Box<[u8]>, usize>,
    pub(super) hashed: KeyMap,
}

impl Keys {
    pub(super) fn lookup(&self, key: &[u8]) -> Option<usize> {
        if let Some(index) = self.plain.get(key) {
            return Some(*index);
        }
        if self.hashed.is_empty() {
            return None;
        }
        self.hashed.get(&sha256(key)).copied()
    }

    pub(super) fn len(&self) -> usize {
        self.plain.len() + self.hashed.len()
    }
}
