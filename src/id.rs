//! 32-byte identifiers: chunk (blob) ids, and the ids of files in the repository.
//!
//! Blob ids are keyed BLAKE3 of the plaintext ([`crate::crypto::Keys::blob_id`], one key
//! for data and a derived one for trees); file ids
//! (packs, index files, snapshots, key files) are plain BLAKE3 of the file's bytes, so a
//! file's name checks its content. The types keep the two from being mixed up.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $what:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The id as lower-case hex (64 characters).
            pub fn to_hex(&self) -> String {
                hex(&self.0)
            }
            /// The first 8 hex characters, as shown in listings.
            pub fn short(&self) -> String {
                hex(&self.0[..4])
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                parse_hex32(s).map($name).ok_or_else(|| {
                    Error::InvalidInput(format!("{}: not a valid {} id (64 hex digits)", s, $what))
                })
            }
        }
    };
}

id_type!(
    /// Id of a blob (a data chunk or a tree node): keyed BLAKE3 of its plaintext.
    BlobId, "blob"
);
id_type!(
    /// Id of a file in the repository (pack, index file, snapshot, key): BLAKE3 of its bytes.
    FileId, "file"
);

/// Hashes a [`BlobId`] by 8 of its bytes for hash maps keyed by blob id. Blob ids are
/// keyed BLAKE3 (uniform, and nobody without the repository key can choose them), so no
/// mixing is needed; SipHash cost more than the rest of a negative index lookup. Not for
/// [`FileId`]s, which anyone can make collide in a few bits by choosing file contents.
#[derive(Default, Clone, Copy)]
pub struct BlobIdHasher(u64);

impl std::hash::Hasher for BlobIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        if let Some(w) = bytes.get(..8) {
            self.0 ^= u64::from_le_bytes(w.try_into().expect("8 bytes"));
        } else {
            for b in bytes {
                self.0 = self.0.rotate_left(8) ^ *b as u64;
            }
        }
    }
    fn write_usize(&mut self, _len: usize) {
        // The array's length prefix: the same for every id.
    }
}

/// A hash map keyed by blob id (see [`BlobIdHasher`]).
pub type BlobMap<V> = std::collections::HashMap<BlobId, V, std::hash::BuildHasherDefault<BlobIdHasher>>;
/// A hash set of blob ids (see [`BlobIdHasher`]).
pub type BlobSet = std::collections::HashSet<BlobId, std::hash::BuildHasherDefault<BlobIdHasher>>;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parse exactly 64 hex digits.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None, // lower-case only: file names are written lower-case
        };
        let (hi, lo) = (digit(pair[0])? as u32, digit(pair[1])? as u32);
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

impl FileId {
    /// The id of a file with these bytes.
    pub fn of(bytes: &[u8]) -> FileId {
        FileId(*blake3::hash(bytes).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hex_roundtrip(bytes in proptest::array::uniform32(any::<u8>())) {
            let id = BlobId(bytes);
            prop_assert_eq!(id.to_hex().parse::<BlobId>().unwrap(), id);
        }
    }

    #[test]
    fn rejects_bad_hex() {
        assert!("abc".parse::<BlobId>().is_err());
        assert!("g".repeat(64).parse::<FileId>().is_err());
    }
}
