//! Keys, authenticated encryption, keyed blob ids and the password KDF.
//!
//! Everything cairn writes is sealed with XChaCha20-Poly1305 under a random 24-byte nonce:
//! `nonce (24) || ciphertext || tag (16)`, computed as the construction is defined:
//! HChaCha20 of the key and the nonce's first 16 bytes is the key of an IETF
//! ChaCha20-Poly1305 (ring's: ChaCha20 and Poly1305 in one pass, 2.3x the RustCrypto
//! crate's throughput on this machine) under 4 zero bytes and the nonce's last 8. Blob ids are BLAKE3 keyed with a secret from the
//! master key, so an id does not reveal whether a known file is stored. Pure: no I/O.
//!
//! Secrets never derive `Debug` or `Clone`, and are zeroized on drop.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};
use crate::format::BlobKind;
use crate::id::BlobId;
use crate::wipe::Wiped;

/// Bytes a sealed message adds to its plaintext: nonce + tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Length of the serialized master key: encryption key + id key.
pub const MASTER_KEY_LEN: usize = 64;

/// The repository's master key: one key for encryption, one for keyed blob ids.
///
/// Generated at `init`, stored only wrapped under a password in key files.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Keys {
    enc: [u8; 32],
    id: [u8; 32],
    /// Derived from `id`: keys tree-blob ids, so a data chunk can never have the id of a
    /// tree node (two independent keyed hashes, not a prefix a chunk could imitate).
    tree_id: [u8; 32],
}

impl Keys {
    /// A fresh random master key.
    pub fn generate() -> Keys {
        let mut raw = [0u8; MASTER_KEY_LEN];
        random_bytes(&mut raw);
        let keys = Keys::from_bytes(&raw);
        raw.zeroize();
        keys
    }

    /// Rebuild from the 64 serialized bytes (encryption key, then id key).
    pub fn from_bytes(raw: &[u8; MASTER_KEY_LEN]) -> Keys {
        let mut enc = [0u8; 32];
        let mut id = [0u8; 32];
        enc.copy_from_slice(&raw[..32]);
        id.copy_from_slice(&raw[32..]);
        let tree_id = blake3::derive_key("cairn 2026 tree blob id", &id);
        Keys { enc, id, tree_id }
    }

    /// The 64 serialized bytes; the caller must zeroize them after use.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<[u8; MASTER_KEY_LEN]> {
        let mut raw = zeroize::Zeroizing::new([0u8; MASTER_KEY_LEN]);
        raw[..32].copy_from_slice(&self.enc);
        raw[32..].copy_from_slice(&self.id);
        raw
    }

    /// The id of a blob of `kind` with this plaintext: BLAKE3 keyed with the id key for
    /// data, with the derived tree-id key for trees.
    pub fn blob_id(&self, kind: BlobKind, plaintext: &[u8]) -> BlobId {
        let key = match kind {
            BlobKind::Data => &self.id,
            BlobKind::Tree => &self.tree_id,
        };
        BlobId(*blake3::keyed_hash(key, plaintext).as_bytes())
    }

    /// The id of a data blob of `len` zero bytes ([`Keys::blob_id`] of them, hashed
    /// from a small buffer rather than `len` bytes of memory).
    pub fn zero_blob_id(&self, len: u32) -> BlobId {
        const ZEROS: [u8; 16 << 10] = [0; 16 << 10];
        let mut h = blake3::Hasher::new_keyed(&self.id);
        let mut left = len as usize;
        while left > 0 {
            let n = left.min(ZEROS.len());
            h.update(&ZEROS[..n]);
            left -= n;
        }
        BlobId(*h.finalize().as_bytes())
    }

    /// Seal `plaintext` with associated data `aad`: `nonce || ciphertext || tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(aad, plaintext, &mut out);
        out
    }

    /// Append the sealed form of `plaintext` to `out`.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        seal_with(&self.enc, aad, plaintext, out)
    }

    /// Open a sealed message; `what`/`id` name the object in the error.
    pub fn open(&self, aad: &[u8], sealed: &[u8], what: &'static str, id: &dyn std::fmt::Display) -> Result<Vec<u8>> {
        open_with(&self.enc, aad, sealed).ok_or_else(|| Error::Tampered { what, id: id.to_string() })
    }

    /// Open a sealed message where it lies, without copying it: returns the plaintext,
    /// the part of `sealed` between nonce and tag.
    pub fn open_in_place<'a>(
        &self,
        aad: &[u8],
        sealed: &'a mut [u8],
        what: &'static str,
        id: &dyn std::fmt::Display,
    ) -> Result<&'a mut [u8]> {
        open_in_place_with(&self.enc, aad, sealed).ok_or_else(|| Error::Tampered { what, id: id.to_string() })
    }
}

/// The ChaCha20-Poly1305 key and nonce of the XChaCha20-Poly1305 message of `key` under
/// `nonce`. ring's key neither zeroizes itself nor holds anything on the heap: it is
/// wiped when dropped.
fn subkey(key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> (Wiped<LessSafeKey>, Nonce) {
    use chacha20::cipher::consts::U10;
    let mut raw = chacha20::hchacha::<U10>(key.into(), nonce[..16].into());
    let sub = Zeroizing::new(<[u8; 32]>::from(raw));
    raw.as_mut_slice().zeroize();
    let k = UnboundKey::new(&CHACHA20_POLY1305, &sub[..]).expect("a 32-byte key");
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&nonce[16..]);
    (Wiped::new(LessSafeKey::new(k)), Nonce::assume_unique_for_key(n))
}

fn seal_with(key: &[u8; 32], aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
    let mut nonce = [0u8; NONCE_LEN];
    random_bytes(&mut nonce);
    out.reserve(plaintext.len() + SEAL_OVERHEAD);
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plaintext);
    let (k, n) = subkey(key, &nonce);
    let tag = k
        .seal_in_place_separate_tag(n, Aad::from(aad), &mut out[start..])
        // Encryption fails only for messages over 256 GiB; cairn's are at most tens of MiB.
        .expect("message length within ChaCha20-Poly1305 limits");
    out.extend_from_slice(tag.as_ref());
}

fn open_with(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let mut buf = sealed.to_vec();
    let plain = open_in_place_with(key, aad, &mut buf)?.len();
    buf.drain(..NONCE_LEN);
    buf.truncate(plain);
    Some(buf)
}

fn open_in_place_with<'a>(key: &[u8; 32], aad: &[u8], sealed: &'a mut [u8]) -> Option<&'a mut [u8]> {
    if sealed.len() < SEAL_OVERHEAD {
        return None;
    }
    let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
    let nonce: &[u8; NONCE_LEN] = (&*nonce).try_into().expect("split at its length");
    let (k, n) = subkey(key, nonce);
    k.open_in_place(n, Aad::from(aad), rest).ok()
}

/// Argon2id parameters, stored in each key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub mem_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// The parameters `init` uses: 32 MiB, 8 passes, 1 lane (~0.13 s here). The memory x
    /// time an attacker pays per guess is a third more than RFC 9106's 64 MiB x 3
    /// recommendation, while unlocking needs only half of cairn's smallest memory budget
    /// (64 MiB): the KDF's memory is the peak RSS of many small commands.
    pub const DEFAULT: KdfParams = KdfParams { mem_kib: 32 * 1024, iterations: 8, parallelism: 1 };

    /// Cheap parameters for tests only: they make a password trivial to brute-force.
    pub const INSECURE_FOR_TESTS: KdfParams = KdfParams { mem_kib: 8, iterations: 1, parallelism: 1 };

    /// Refuse parameters that would exhaust memory or time when read from an untrusted key file.
    pub fn validate(&self) -> Result<()> {
        // Argon2 itself needs 8 KiB per lane: parameters it would refuse are refused here.
        let ok = (8..=4 * 1024 * 1024).contains(&self.mem_kib)
            && (1..=64).contains(&self.iterations)
            && (1..=16).contains(&self.parallelism)
            && self.mem_kib >= 8 * self.parallelism;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "key file asks for unreasonable KDF parameters ({} KiB, {} iterations, {} lanes)",
                self.mem_kib, self.iterations, self.parallelism
            )))
        }
    }
}

/// A key derived from a password, used only to wrap and unwrap the master key.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct WrappingKey([u8; 32]);

impl WrappingKey {
    /// Derive with Argon2id from `password` and `salt`.
    pub fn derive(password: &[u8], salt: &[u8], params: KdfParams) -> Result<WrappingKey> {
        params.validate()?;
        let p = argon2::Params::new(params.mem_kib, params.iterations, params.parallelism, Some(32))
            .map_err(|e| Error::InvalidInput(format!("KDF parameters: {e}")))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
        let mut out = [0u8; 32];
        argon.hash_password_into(password, salt, &mut out).map_err(|e| Error::InvalidInput(format!("KDF: {e}")))?;
        Ok(WrappingKey(out))
    }

    /// Seal the master key under this key.
    pub fn wrap(&self, aad: &[u8], keys: &Keys) -> Vec<u8> {
        let raw = keys.to_bytes();
        let mut out = Vec::new();
        seal_with(&self.0, aad, &raw[..], &mut out);
        out
    }

    /// Unwrap a master key; `None` when the password (or the data) is wrong.
    pub fn unwrap(&self, aad: &[u8], sealed: &[u8]) -> Option<Keys> {
        let mut raw = open_with(&self.0, aad, sealed)?;
        let keys = <&[u8; MASTER_KEY_LEN]>::try_from(raw.as_slice()).ok().map(Keys::from_bytes);
        raw.zeroize();
        keys
    }
}

/// Fill `buf` from the OS random source.
pub fn random_bytes(buf: &mut [u8]) {
    // The OS random source failing is not recoverable and never happens on Linux >= 3.17.
    getrandom::getrandom(buf).expect("OS random number generator");
}

/// A random u64 (for seeds and temp-file names).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    random_bytes(&mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn seal_open_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..4096), aad in proptest::collection::vec(any::<u8>(), 0..16)) {
            let k = Keys::generate();
            let sealed = k.seal(&aad, &data);
            prop_assert_eq!(sealed.len(), data.len() + SEAL_OVERHEAD);
            prop_assert_eq!(k.open(&aad, &sealed, "blob", &"x").unwrap(), data);
        }

        #[test]
        fn any_flipped_bit_is_detected(data in proptest::collection::vec(any::<u8>(), 0..512), bit in any::<usize>()) {
            let k = Keys::generate();
            let mut sealed = k.seal(b"a", &data);
            let bit = bit % (sealed.len() * 8);
            sealed[bit / 8] ^= 1 << (bit % 8);
            let tampered = matches!(k.open(b"a", &sealed, "blob", &"x"), Err(Error::Tampered { .. }));
            prop_assert!(tampered);
        }
    }

    #[test]
    fn sealing_is_xchacha20_poly1305_as_the_reference_crate_computes_it() {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        use chacha20poly1305::{XChaCha20Poly1305, XNonce};
        let k = Keys::generate();
        let reference = XChaCha20Poly1305::new((&k.enc).into());
        for len in [0usize, 1, 15, 16, 63, 64, 65, 255, 256, 4096, (1 << 20) + 3] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let aad = &b"cairn aad"[..len % 10];
            // Ours, opened by the reference.
            let sealed = k.seal(aad, &data);
            let (nonce, body) = sealed.split_at(NONCE_LEN);
            let opened = reference.decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad }).unwrap();
            assert!(opened == data, "length {len}: the reference opens other bytes");
            // The reference's, opened by ours, in place and copied.
            let nonce = [len as u8; NONCE_LEN];
            let body = reference.encrypt(XNonce::from_slice(&nonce), Payload { msg: &data, aad }).unwrap();
            let mut theirs = [&nonce[..], &body].concat();
            assert!(k.open(aad, &theirs, "blob", &"x").unwrap() == data, "length {len}");
            assert!(*k.open_in_place(aad, &mut theirs, "blob", &"x").unwrap() == data[..], "length {len}");
            // Under other associated data, it is not authentic.
            assert!(k.open(b"other", &sealed, "blob", &"x").is_err());
        }
    }

    #[test]
    fn the_zero_blob_id_is_the_id_of_that_many_zeros() {
        let k = Keys::generate();
        for len in [0u32, 1, 16 << 10, (16 << 10) + 1, 1 << 20, 4 << 20] {
            assert_eq!(k.zero_blob_id(len), k.blob_id(BlobKind::Data, &vec![0; len as usize]), "{len}");
        }
        assert_ne!(k.zero_blob_id(5), k.blob_id(BlobKind::Data, &[0, 0, 0, 0, 1]));
    }

    #[test]
    fn wrong_aad_or_key_or_truncation_fails() {
        let k = Keys::generate();
        let sealed = k.seal(b"one", b"hello");
        assert!(k.open(b"two", &sealed, "x", &"x").is_err());
        assert!(Keys::generate().open(b"one", &sealed, "x", &"x").is_err());
        assert!(k.open(b"one", &sealed[..10], "x", &"x").is_err());
    }

    #[test]
    fn blob_ids_are_keyed() {
        // As docs/format.md (2.3) defines them: BLAKE3 keyed with the id key (the master
        // key's second half) for data, with the key derived from it for trees.
        let mut raw = [0u8; MASTER_KEY_LEN];
        raw.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        let k = Keys::from_bytes(&raw);
        let id_key: [u8; 32] = raw[32..].try_into().unwrap();
        let tree_key = blake3::derive_key("cairn 2026 tree blob id", &id_key);
        assert_eq!(k.blob_id(BlobKind::Data, b"x").0, *blake3::keyed_hash(&id_key, b"x").as_bytes());
        assert_eq!(k.blob_id(BlobKind::Tree, b"x").0, *blake3::keyed_hash(&tree_key, b"x").as_bytes());
        let (a, b) = (Keys::generate(), Keys::generate());
        assert_ne!(a.blob_id(BlobKind::Data, b"x"), b.blob_id(BlobKind::Data, b"x"));
        assert_ne!(a.blob_id(BlobKind::Data, b"x").0, *blake3::hash(b"x").as_bytes());
        assert_ne!(a.blob_id(BlobKind::Data, b"x"), a.blob_id(BlobKind::Tree, b"x"));
    }

    #[test]
    fn wrap_unwrap() {
        let keys = Keys::generate();
        let wk = WrappingKey::derive(b"pw", b"saltsaltsaltsalt", KdfParams::INSECURE_FOR_TESTS).unwrap();
        let sealed = wk.wrap(b"k", &keys);
        let back = wk.unwrap(b"k", &sealed).unwrap();
        assert_eq!(*back.to_bytes(), *keys.to_bytes());
        let wrong = WrappingKey::derive(b"pX", b"saltsaltsaltsalt", KdfParams::INSECURE_FOR_TESTS).unwrap();
        assert!(wrong.unwrap(b"k", &sealed).is_none());
    }
}
