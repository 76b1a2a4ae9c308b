//! The configured keys, mapped to their consumers: plaintext keys by their bytes, `sha256:`
//! keys by digest.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::sha256::{from_hex, sha256, Digest};

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

/// A configured key: plaintext, or the digest of a `sha256:` key.
pub(super) enum KeyForm {
    Plain(Box<[u8]>),
    Hashed(Digest),
}

pub(super) fn parse_key(key: &str) -> Result<KeyForm, &'static str> {
    if let Some(hex) = key.strip_prefix("sha256:") {
        return from_hex(hex)
            .map(KeyForm::Hashed)
            .ok_or("a hashed key is `sha256:` followed by 64 lowercase hex digits");
    }
    if key.is_empty() {
        return Err("a key cannot be empty");
    }
    Ok(KeyForm::Plain(key.as_bytes().into()))
}

/// The key map as consumers are compiled: refuses a key listed twice, plaintext or hashed.
#[derive(Default)]
pub(super) struct KeyBuilder {
    keys: Keys,
    /// Digests of the plaintext keys, computed only once a `sha256:` key shows up, to catch a
    /// key listed once in plaintext and once hashed.
    plain_digests: Option<KeyMap>,
}

impl KeyBuilder {
    /// A builder with room for `plain` plaintext and `hashed` hashed keys (the maps are not
    /// grown, and copied, on the way: the filter's memory never shrinks below its high-water
    /// mark).
    pub(super) fn with_capacity(plain: usize, hashed: usize) -> KeyBuilder {
        KeyBuilder {
            keys: Keys {
                plain: HashMap::with_capacity(plain),
                hashed: KeyMap::with_capacity_and_hasher(hashed, Default::default()),
            },
            plain_digests: None,
        }
    }

    /// Adds a key of consumer `index`; `Err` with the index of the consumer that has it already.
    pub(super) fn add(&mut self, form: KeyForm, index: usize) -> Result<(), usize> {
        let keys = &mut self.keys;
        match form {
            KeyForm::Plain(bytes) => {
                if let Some(digests) = self.plain_digests.as_mut() {
                    let digest = sha256(&bytes);
                    if let Some(other) = keys.hashed.get(&digest) {
                        return Err(*other);
                    }
                    digests.insert(digest, index);
                }
                match keys.plain.insert(bytes, index) {
                    Some(other) => Err(other),
                    None => Ok(()),
                }
            }
            KeyForm::Hashed(digest) => {
                let digests = self.plain_digests.get_or_insert_with(|| {
                    keys.plain.iter().map(|(k, i)| (sha256(k), *i)).collect()
                });
                if let Some(other) = digests.get(&digest) {
                    return Err(*other);
                }
                match keys.hashed.insert(digest, index) {
                    Some(other) => Err(other),
                    None => Ok(()),
                }
            }
        }
    }

    pub(super) fn build(self) -> Keys {
        self.keys
    }
}
