//! The chunk index: blob id -> where it is stored. Every lookup in cairn goes through
//! [`Index`]; nothing else may assume where or how entries are kept.
//!
//! This first implementation keeps the entries in a hash map in RAM: per entry 32 B id +
//! 20 B value, about 60-110 B with the table's slack, plus 32 B per pack. The
//! disk-spilling index (sorted runs with fences and filters, a fixed budget) replaces the
//! inside of this type without changing its interface.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use crate::format::index::{IndexEntry, Location};
use crate::format::{BlobKind, Compression};
use crate::id::{BlobId, FileId};

#[derive(Clone, Copy)]
struct Packed {
    pack: u32,
    offset: u32,
    stored_len: u32,
    raw_len: u32,
    kind: BlobKind,
    compression: Compression,
}

#[derive(Default)]
struct Inner {
    map: HashMap<BlobId, Packed>,
    packs: Vec<FileId>,
    pack_ordinals: HashMap<FileId, u32>,
    /// Blobs handed to the pack writer in this process but not yet in a finished pack.
    pending: HashSet<BlobId>,
}

/// Blob locations, safe to share between threads.
#[derive(Default)]
pub struct Index {
    inner: RwLock<Inner>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A poisoned lock means a panic elsewhere already failed the operation; the map
        // itself is never left half-updated, so reading on is safe.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Record where a blob is. The first location recorded for an id wins.
    pub fn insert(&self, e: &IndexEntry) {
        let mut g = self.write();
        let inner = &mut *g;
        let next = inner.packs.len() as u32;
        let pack = *inner.pack_ordinals.entry(e.loc.pack).or_insert(next);
        if pack == next {
            inner.packs.push(e.loc.pack);
        }
        inner.pending.remove(&e.id);
        inner.map.entry(e.id).or_insert(Packed {
            pack,
            offset: e.loc.offset,
            stored_len: e.loc.stored_len,
            raw_len: e.loc.raw_len,
            kind: e.loc.kind,
            compression: e.loc.compression,
        });
    }

    /// Where a blob is stored, if it is in a finished pack.
    pub fn get(&self, id: &BlobId) -> Option<Location> {
        let g = self.read();
        let p = g.map.get(id)?;
        Some(Location {
            pack: g.packs[p.pack as usize],
            offset: p.offset,
            stored_len: p.stored_len,
            raw_len: p.raw_len,
            kind: p.kind,
            compression: p.compression,
        })
    }

    /// Is the blob stored or about to be?
    pub fn contains(&self, id: &BlobId) -> bool {
        let g = self.read();
        g.map.contains_key(id) || g.pending.contains(id)
    }

    /// Claim a blob for writing: true if it is neither stored nor pending (and marks it
    /// pending), false if someone already stored or claimed it. This is the dedup decision.
    pub fn claim(&self, id: &BlobId) -> bool {
        if self.contains(id) {
            return false;
        }
        let mut g = self.write();
        !g.map.contains_key(id) && g.pending.insert(*id)
    }

    /// Forget a claim whose blob was never written (an interrupted backup).
    pub fn unclaim(&self, id: &BlobId) {
        self.write().pending.remove(id);
    }

    /// Number of stored blobs known.
    pub fn len(&self) -> usize {
        self.read().map.len()
    }

    /// True if no blob is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u8, pack: u8) -> IndexEntry {
        IndexEntry {
            id: BlobId([i; 32]),
            loc: Location {
                pack: FileId([pack; 32]),
                offset: i as u32,
                stored_len: 50,
                raw_len: 10,
                kind: BlobKind::Data,
                compression: Compression::None,
            },
        }
    }

    #[test]
    fn claim_insert_get() {
        let ix = Index::new();
        assert!(ix.claim(&BlobId([1; 32])));
        assert!(!ix.claim(&BlobId([1; 32])));
        assert!(ix.get(&BlobId([1; 32])).is_none());
        ix.insert(&entry(1, 7));
        ix.insert(&entry(2, 7));
        ix.insert(&entry(3, 8));
        assert_eq!(ix.get(&BlobId([3; 32])).unwrap(), entry(3, 8).loc);
        assert_eq!(ix.get(&BlobId([1; 32])).unwrap().pack, FileId([7; 32]));
        assert!(!ix.claim(&BlobId([2; 32])));
        assert_eq!(ix.len(), 3);
    }
}
