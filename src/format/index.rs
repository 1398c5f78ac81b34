//! Index files (docs/format.md, "Index files"): where each blob lives, sorted by blob id.
//! Written per backup (and every few packs during a long one), sealed as one message.

use super::{pack::check_lengths, BlobKind, Compression, Put, Reader};
use crate::error::Result;
use crate::id::{BlobId, FileId};

/// Bytes per entry record.
pub const ENTRY_LEN: usize = 50;
/// Most entries one index file holds; writers start a new file past it. Keeps each index
/// file, which must be decrypted whole, under ~3.3 MiB.
pub const MAX_ENTRIES: usize = 65_536;

/// Where one blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// The pack holding it.
    pub pack: FileId,
    /// Offset of the sealed blob in the pack file.
    pub offset: u32,
    /// Length of the sealed blob.
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// Data or tree.
    pub kind: BlobKind,
    /// Stored compression.
    pub compression: Compression,
}

/// One index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The blob.
    pub id: BlobId,
    /// Where it is.
    pub loc: Location,
}

/// Encode entries (any order, ids unique) as an index payload: the pack table, then the
/// entries sorted by id.
pub fn encode(entries: &mut [IndexEntry]) -> Vec<u8> {
    entries.sort_unstable_by_key(|e| e.id);
    let mut packs: Vec<FileId> = entries.iter().map(|e| e.loc.pack).collect();
    packs.sort_unstable();
    packs.dedup();
    let mut v = Vec::with_capacity(8 + packs.len() * 32 + entries.len() * ENTRY_LEN);
    v.u32(packs.len() as u32);
    for p in &packs {
        v.raw(&p.0);
    }
    v.u32(entries.len() as u32);
    for e in entries.iter() {
        // The pack is in the table by construction.
        let ordinal = packs.binary_search(&e.loc.pack).unwrap_or(0);
        v.raw(&e.id.0);
        v.u32(ordinal as u32);
        v.u32(e.loc.offset);
        v.u32(e.loc.stored_len);
        v.u32(e.loc.raw_len);
        v.u8(e.loc.kind as u8);
        v.u8(e.loc.compression as u8);
    }
    v
}

/// Decode an index payload; ids must be strictly ascending.
pub fn decode(bytes: &[u8], id: &FileId) -> Result<Vec<IndexEntry>> {
    let mut r = Reader::new(bytes, "index", id);
    let np = r.count32(32)?;
    let mut packs = Vec::with_capacity(np);
    for _ in 0..np {
        packs.push(FileId(r.id32()?));
    }
    let n = r.count32(ENTRY_LEN)?;
    let mut out: Vec<IndexEntry> = Vec::with_capacity(n);
    for _ in 0..n {
        let id = BlobId(r.id32()?);
        let ordinal = r.u32()? as usize;
        let pack = *packs.get(ordinal).ok_or_else(|| r.err(format!("pack ordinal {ordinal} out of range")))?;
        let offset = r.u32()?;
        let stored_len = r.u32()?;
        let raw_len = r.u32()?;
        let kind = r.u8()?;
        let kind = BlobKind::from_u8(kind).ok_or_else(|| r.err(format!("unknown blob kind {kind}")))?;
        let comp = r.u8()?;
        let compression = Compression::from_u8(comp).ok_or_else(|| r.err(format!("unknown compression {comp}")))?;
        check_lengths(stored_len, raw_len).map_err(|d| r.err(format!("blob {id}: {d}")))?;
        if out.last().is_some_and(|l| l.id >= id) {
            return Err(r.err(format!("blob {id} out of order")));
        }
        out.push(IndexEntry { id, loc: Location { pack, offset, stored_len, raw_len, kind, compression } });
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn roundtrip(ids in proptest::collection::btree_set(proptest::array::uniform32(any::<u8>()), 0..100), npacks in 1u8..5) {
            let mut entries: Vec<IndexEntry> = ids.iter().enumerate().map(|(i, id)| IndexEntry {
                id: BlobId(*id),
                loc: Location { pack: FileId([(i % npacks as usize) as u8; 32]), offset: i as u32 * 7, stored_len: 100, raw_len: 60, kind: BlobKind::Data, compression: Compression::Zstd },
            }).collect();
            let mut shuffled = entries.clone();
            shuffled.reverse();
            let enc = encode(&mut shuffled);
            entries.sort_by_key(|e| e.id);
            prop_assert_eq!(decode(&enc, &FileId::default()).unwrap(), entries);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes, &FileId::default());
        }
    }

    #[test]
    fn refuses_duplicates() {
        let e = IndexEntry {
            id: BlobId([1; 32]),
            loc: Location {
                pack: FileId([2; 32]),
                offset: 9,
                stored_len: 50,
                raw_len: 1,
                kind: BlobKind::Tree,
                compression: Compression::None,
            },
        };
        let mut two = vec![e, e];
        assert!(decode(&encode(&mut two), &FileId::default()).is_err());
    }
}
