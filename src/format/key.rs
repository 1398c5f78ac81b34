//! Key files (docs/format.md, "Key files"): KDF parameters in the clear plus the master key
//! sealed under a password-derived key. Several key files may wrap the same master key.

use super::{FileKind, Put, Reader, HEADER_LEN};
use crate::crypto::KdfParams;
use crate::error::Result;
use crate::id::FileId;

/// KDF identifier for Argon2id (the only one).
pub const KDF_ARGON2ID: u8 = 1;

/// A decoded key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    /// Argon2id parameters.
    pub kdf: KdfParams,
    /// Random salt (16-64 bytes).
    pub salt: Vec<u8>,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Host that created it (informational).
    pub host: String,
    /// User that created it (informational).
    pub user: String,
    /// The sealed 64-byte master key (associated data: the file header).
    pub wrapped: Vec<u8>,
}

impl KeyFile {
    /// Encode the whole file, header included.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = FileKind::Key.header().to_vec();
        v.u8(KDF_ARGON2ID);
        v.u32(self.kdf.mem_kib);
        v.u32(self.kdf.iterations);
        v.u32(self.kdf.parallelism);
        v.bytes8(&self.salt);
        v.i64(self.created);
        v.bytes16(self.host.as_bytes());
        v.bytes16(self.user.as_bytes());
        v.bytes16(&self.wrapped);
        v
    }

    /// Decode a whole key file.
    pub fn decode(bytes: &[u8], id: &FileId) -> Result<KeyFile> {
        let body = FileKind::Key.check_header(bytes, id)?;
        let mut r = Reader::new(body, "key", id);
        let kdf_id = r.u8()?;
        if kdf_id != KDF_ARGON2ID {
            return Err(r.err(format!("unknown KDF {kdf_id}")));
        }
        let kdf = KdfParams { mem_kib: r.u32()?, iterations: r.u32()?, parallelism: r.u32()? };
        let salt = r.bytes8()?.to_vec();
        if !(16..=64).contains(&salt.len()) {
            return Err(r.err("salt length out of range"));
        }
        let created = r.i64()?;
        let host = r.str16()?;
        let user = r.str16()?;
        let wrapped = r.bytes16()?.to_vec();
        r.finish()?;
        Ok(KeyFile { kdf, salt, created, host, user, wrapped })
    }

    /// The associated data the master key is sealed with.
    pub fn aad() -> [u8; HEADER_LEN] {
        FileKind::Key.header()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn roundtrip(salt in proptest::collection::vec(any::<u8>(), 16..64), host in ".{0,20}", wrapped in proptest::collection::vec(any::<u8>(), 0..200)) {
            let k = KeyFile { kdf: KdfParams::DEFAULT, salt, created: 5, host, user: "u".into(), wrapped };
            let bytes = k.encode();
            prop_assert_eq!(KeyFile::decode(&bytes, &FileId::of(&bytes)).unwrap(), k);
        }

        #[test]
        fn truncation_never_panics(cut in 0usize..100) {
            let k = KeyFile { kdf: KdfParams::DEFAULT, salt: vec![1; 16], created: 5, host: "h".into(), user: "u".into(), wrapped: vec![2; 88] };
            let bytes = k.encode();
            let cut = cut.min(bytes.len() - 1);
            prop_assert!(KeyFile::decode(&bytes[..cut], &FileId::of(b"")).is_err());
        }
    }
}
