//! SHA-256 (FIPS 180-4), used to match presented API keys against configured ones.
//!
//! Every configured key is stored as its digest (plaintext keys are hashed when the
//! configuration is compiled), so a request costs one hash of the presented key and one
//! map lookup, and neither the map nor the logs ever hold a plaintext key. The hash is the
//! RustCrypto `sha2` crate's (compact soft backend); this module adds the hex form used in
//! `sha256:<hex>` keys and record names, and the known-answer tests.

use sha2::Digest as _;

pub type Digest = [u8; 32];

/// The SHA-256 digest of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    sha2::Sha256::digest(data).into()
}

/// The SHA-256 digest of parts joined by a separator, hashed as they are pushed (without
/// joining them in memory).
pub struct Joined {
    hasher: sha2::Sha256,
    separator: u8,
    first: bool,
}

impl Joined {
    pub fn new(separator: u8) -> Joined {
        Joined {
            hasher: sha2::Sha256::new(),
            separator,
            first: true,
        }
    }

    pub fn push(&mut self, part: &[u8]) {
        if !self.first {
            self.hasher.update([self.separator]);
        }
        self.first = false;
        self.hasher.update(part);
    }

    pub fn finish(self) -> Digest {
        self.hasher.finalize().into()
    }
}

/// Lowercase hex of a digest.
pub fn to_hex(digest: &Digest) -> String {
    let mut out = String::with_capacity(64);
    for byte in digest {
        for nibble in [byte >> 4, byte & 0xf] {
            // A nibble is < 16, so from_digit always answers (lowercase).
            out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    out
}

/// Parses 64 lowercase hex digits.
pub fn from_hex(text: &str) -> Option<Digest> {
    if text.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let (hi, lo) = (pair.first().copied()?, pair.get(1).copied()?);
        *byte = (nibble(hi)? << 4) | nibble(lo)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nist_vectors() {
        let cases: [(&[u8], &str); 4] = [
            (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            ),
            (
                b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
                "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
            ),
        ];
        for (input, hex) in cases {
            assert_eq!(to_hex(&sha256(input)), hex);
        }
        let million_a = vec![b'a'; 1_000_000];
        assert_eq!(
            to_hex(&sha256(&million_a)),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    /// Known answers from a reference implementation (Python's hashlib, see the file's
    /// header) for every length 0..300: each padding case (a remainder of 55, 56, 63, 64 bytes
    /// …) over more than four blocks, so an off-by-one in the padding cannot pass.
    #[test]
    fn every_length_from_0_to_299_matches_the_reference() {
        let expected: Vec<&str> = include_str!("testdata/sha256-lengths.txt")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert_eq!(expected.len(), 300);
        for (len, want) in expected.iter().enumerate() {
            let data: Vec<u8> = (0..len).map(|i| (31 * i + 7) as u8).collect();
            assert_eq!(to_hex(&sha256(&data)), *want, "length {len}");
            assert_eq!(from_hex(want), Some(sha256(&data)), "length {len}");
        }
    }

    #[test]
    fn hex_parsing_accepts_only_64_lowercase_digits() {
        assert_eq!(from_hex("AB"), None);
        assert_eq!(from_hex(&"G".repeat(64)), None);
        assert_eq!(from_hex(&"A".repeat(64)), None, "uppercase is refused");
        assert_eq!(from_hex(&"0".repeat(63)), None);
        assert_eq!(from_hex(&"0".repeat(65)), None);
        assert_eq!(from_hex(&"f".repeat(64)), Some([0xff; 32]));
        assert_eq!(from_hex(&"09".repeat(32)), Some([0x09; 32]));
        assert_eq!(from_hex(&"a0".repeat(32)), Some([0xa0; 32]));
    }
}
