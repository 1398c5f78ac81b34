//! Pack files (docs/format.md, "Packs"): many sealed blobs, then a sealed header that lists
//! them, then a 4-byte trailer giving the sealed header's length. The header is at the end
//! so a pack can be written in one pass; one blob is read with one ranged read once its
//! offset is known from the index.
//!
//! ```text
//! "CAIRNPAK" version | blob 0 | blob 1 | ... | sealed header | header length (u32 LE)
//! ```

use super::{BlobKind, Compression, Put, Reader, HEADER_LEN};
use crate::crypto::SEAL_OVERHEAD;
use crate::error::Result;
use crate::id::{BlobId, FileId};

/// Length of the trailer.
pub const TRAILER_LEN: usize = 4;
/// Bytes per blob record in the header plaintext.
pub const RECORD_LEN: usize = 42;
/// Largest plaintext a blob may have: 16 MiB, FastCDC's maximum chunk size (trees are
/// split well below it). Decoders refuse larger declared sizes before allocating.
pub const MAX_BLOB_RAW: u32 = 16 << 20;
/// Largest stored (sealed, possibly compressed) blob: raw size + zstd's worst-case
/// expansion + nonce and tag.
pub const MAX_BLOB_STORED: u32 = MAX_BLOB_RAW + (MAX_BLOB_RAW >> 7) + 1024 + SEAL_OVERHEAD as u32;

/// One blob as listed in a pack header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackBlob {
    /// Data or tree.
    pub kind: BlobKind,
    /// How the plaintext is stored inside the seal.
    pub compression: Compression,
    /// Keyed BLAKE3 of the plaintext.
    pub id: BlobId,
    /// Length in the pack: sealed bytes, nonce and tag included.
    pub stored_len: u32,
    /// Length of the plaintext after decompression.
    pub raw_len: u32,
}

/// Encode the header plaintext: count (u32), then 42-byte records.
pub fn encode_header(blobs: &[PackBlob]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + blobs.len() * RECORD_LEN);
    v.u32(blobs.len() as u32);
    for b in blobs {
        v.u8(b.kind as u8);
        v.u8(b.compression as u8);
        v.raw(&b.id.0);
        v.u32(b.stored_len);
        v.u32(b.raw_len);
    }
    v
}

/// Decode a header plaintext and check that its blobs exactly fill `blobs_len`, the bytes
/// between the file header and the sealed header. Returns each blob with its offset.
pub fn decode_header(bytes: &[u8], pack: &FileId, blobs_len: u64) -> Result<Vec<(PackBlob, u64)>> {
    let mut r = Reader::new(bytes, "pack", pack);
    let n = r.count32(RECORD_LEN)?;
    let mut out = Vec::with_capacity(n);
    let mut offset = HEADER_LEN as u64;
    for _ in 0..n {
        let kind = r.u8()?;
        let kind = BlobKind::from_u8(kind).ok_or_else(|| r.err(format!("unknown blob kind {kind}")))?;
        let comp = r.u8()?;
        let compression = Compression::from_u8(comp).ok_or_else(|| r.err(format!("unknown compression {comp}")))?;
        let id = BlobId(r.id32()?);
        let stored_len = r.u32()?;
        let raw_len = r.u32()?;
        check_lengths(stored_len, raw_len).map_err(|d| r.err(format!("blob {id}: {d}")))?;
        // Index entries hold u32 offsets: no blob may start at 4 GiB or beyond.
        if offset > u32::MAX as u64 {
            return Err(r.err(format!("blob {id} starts past 4 GiB")));
        }
        out.push((PackBlob { kind, compression, id, stored_len, raw_len }, offset));
        offset += stored_len as u64;
    }
    r.finish()?;
    // `offset` starts at HEADER_LEN; compared this way round, no `blobs_len` can overflow.
    let covered = offset - HEADER_LEN as u64;
    if covered != blobs_len {
        return Err(r.err(format!("blobs cover {covered} bytes, pack has {blobs_len}")));
    }
    Ok(out)
}

/// Validate a blob's declared lengths (shared by pack headers and index entries).
pub fn check_lengths(stored_len: u32, raw_len: u32) -> std::result::Result<(), String> {
    if raw_len > MAX_BLOB_RAW {
        return Err(format!("raw length {raw_len} exceeds the {MAX_BLOB_RAW}-byte maximum"));
    }
    if !(SEAL_OVERHEAD as u32..=MAX_BLOB_STORED).contains(&stored_len) {
        return Err(format!("stored length {stored_len} out of range"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn blob() -> impl Strategy<Value = PackBlob> {
        (any::<bool>(), any::<bool>(), proptest::array::uniform32(any::<u8>()), 40u32..100_000, 0u32..100_000).prop_map(
            |(t, c, id, s, r)| PackBlob {
                kind: if t { BlobKind::Tree } else { BlobKind::Data },
                compression: if c { Compression::Zstd } else { Compression::None },
                id: BlobId(id),
                stored_len: s,
                raw_len: r,
            },
        )
    }

    proptest! {
        #[test]
        fn roundtrip(blobs in proptest::collection::vec(blob(), 0..50)) {
            let total: u64 = blobs.iter().map(|b| b.stored_len as u64).sum();
            let enc = encode_header(&blobs);
            let dec = decode_header(&enc, &FileId::default(), total).unwrap();
            prop_assert_eq!(dec.iter().map(|(b, _)| *b).collect::<Vec<_>>(), blobs.clone());
            let mut off = HEADER_LEN as u64;
            for (b, o) in dec { prop_assert_eq!(o, off); off += b.stored_len as u64; }
            prop_assert!(decode_header(&enc, &FileId::default(), total + 1).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), len in any::<u64>()) {
            let _ = decode_header(&bytes, &FileId::default(), len);
        }
    }

    /// Found by the `pack_header` fuzz target: a blob area of nearly 2^64 bytes
    /// overflowed the sum it was compared with (a panic with overflow checks on).
    #[test]
    fn fuzz_blobs_len_near_u64_max_is_corrupt_not_an_overflow() {
        for len in [u64::MAX, u64::MAX - 1, u64::MAX - HEADER_LEN as u64 + 1] {
            let r = decode_header(&0u32.to_le_bytes(), &FileId::default(), len);
            assert!(matches!(r, Err(crate::error::Error::Corrupt { .. })), "{len}");
        }
    }

    #[test]
    fn refuses_bomb_sizes() {
        let b = PackBlob {
            kind: BlobKind::Data,
            compression: Compression::Zstd,
            id: BlobId::default(),
            stored_len: 100,
            raw_len: u32::MAX,
        };
        assert!(decode_header(&encode_header(&[b]), &FileId::default(), 100).is_err());
    }
}
