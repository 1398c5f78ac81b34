//! Writes sealed blobs into packs and finished packs into index files.
//!
//! One open pack per blob kind (tree blobs are kept apart from data so reading directory
//! listings touches few packs). A pack streams to a temp file; RAM holds only its header
//! records (42 B per blob). When a pack reaches the target size it is finished (header,
//! trailer, fsync, rename) and only then are its blobs added to the index and queued for
//! the next index file, which is written every few packs so an interrupted backup leaves
//! most of what it stored reusable.

use std::time::{Duration, Instant};

use super::{Repository, SealedBlob};
use crate::backend::{Dir, TempFile};
use crate::error::{Error, Result};
use crate::format::index::{self as index_format, IndexEntry, Location};
use crate::format::pack::{encode_header, PackBlob};
use crate::format::{BlobKind, FileKind, HEADER_LEN};
use crate::id::{BlobId, FileId};

/// Write an index file after this many finished packs...
const INDEX_EVERY_PACKS: usize = 4;
/// ...or this many entries, counting the open packs' blobs (each waits in RAM twice:
/// here, ~84 B, and as a "fresh" entry of the index, ~80 B, until its index file is
/// durable; an index file of this many then fits the smallest memtable share)...
const INDEX_EVERY_ENTRIES: usize = 16_384;
/// ...or when the oldest unindexed pack is this old.
const INDEX_EVERY: Duration = Duration::from_secs(30);

/// Most blobs in one pack: a pack of tiny blobs (41 bytes sealed for a 1-byte file)
/// would otherwise reach 800,000 of them in 32 MiB, and its header (42 B each), which a
/// reader decrypts whole, 34 MB. At this cap the header is at most 2.75 MB.
pub const MAX_PACK_BLOBS: usize = 65_536;

struct OpenPack {
    /// `None` in a dry run: nothing is written.
    out: Option<TempFile>,
    hasher: blake3::Hasher,
    blobs: Vec<PackBlob>,
    len: u64,
}

impl OpenPack {
    fn new(repo: &Repository, dry: bool) -> Result<OpenPack> {
        let out = if dry { None } else { Some(repo.backend().temp_file()?) };
        let mut p = OpenPack { out, hasher: blake3::Hasher::new(), blobs: Vec::new(), len: 0 };
        p.write(&FileKind::Pack.header())?;
        Ok(p)
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        if let Some(out) = self.out.as_mut() {
            out.write_all(b)?;
            self.hasher.update(b);
        }
        self.len += b.len() as u64;
        Ok(())
    }
}

/// Counters of what a [`Packer`] stored.
#[derive(Clone, Copy, Debug, Default)]
pub struct PackerStats {
    /// Blobs written.
    pub blobs: u64,
    /// Bytes written to packs (sealed blobs, headers, trailers).
    pub bytes: u64,
    /// Packs finished.
    pub packs: u64,
    /// Index files written.
    pub index_files: u64,
    /// Bytes written to index files.
    pub index_bytes: u64,
}

/// Accumulates blobs into packs. Not shared: one thread owns it.
pub struct Packer<'r> {
    repo: &'r Repository,
    open: [Option<OpenPack>; 2],
    unindexed: Vec<IndexEntry>,
    unindexed_packs: usize,
    oldest_unindexed: Option<Instant>,
    stats: PackerStats,
    /// [`Repository::pack_target`], asked once.
    pack_target: u64,
    /// Write nothing: packs and index files are only measured (`backup --dry-run`).
    dry: bool,
    /// A dry run's claims, released at the end (released earlier, a repeat of the same
    /// content would be claimed and counted again). 32 B per new blob, in RAM: a dry
    /// run's memory grows with the new data it measures (docs/design.md).
    dry_claims: Vec<BlobId>,
}

impl<'r> Packer<'r> {
    /// A packer writing into `repo`.
    pub fn new(repo: &'r Repository) -> Self {
        Packer {
            repo,
            open: [None, None],
            unindexed: Vec::new(),
            unindexed_packs: 0,
            oldest_unindexed: None,
            stats: PackerStats::default(),
            pack_target: repo.pack_target(),
            dry: false,
            dry_claims: Vec::new(),
        }
    }

    /// A packer that writes nothing and counts what [`Packer::new`]'s would write: the
    /// same packs, headers and index files, sealed and measured, then dropped.
    pub fn dry(repo: &'r Repository) -> Self {
        Packer { dry: true, ..Packer::new(repo) }
    }

    /// Add a sealed blob. The caller has claimed its id in the index.
    pub fn add(&mut self, blob: SealedBlob) -> Result<()> {
        let slot = blob.kind as usize;
        if self.open[slot].is_none() {
            self.open[slot] = Some(OpenPack::new(self.repo, self.dry)?);
        }
        let pack = self.open[slot].as_mut().expect("just opened");
        pack.write(&blob.bytes)?;
        pack.blobs.push(PackBlob {
            kind: blob.kind,
            compression: blob.compression,
            id: blob.id,
            stored_len: blob.bytes.len() as u32,
            raw_len: blob.raw_len,
        });
        self.stats.blobs += 1;
        if pack.len >= self.pack_target || pack.blobs.len() >= MAX_PACK_BLOBS {
            self.finish_pack(blob.kind)?;
        }
        // Every blob waiting for its index file is held in RAM (here, and in the index's
        // fresh entries, then its memtable when the file is durable): at most
        // INDEX_EVERY_ENTRIES of them, however tiny the blobs and large the packs. A
        // pack of tiny blobs ends early instead (16,384 one-byte files make ~0.7 MB).
        let waiting = self.unindexed.len() + self.open.iter().flatten().map(|p| p.blobs.len()).sum::<usize>();
        if waiting >= INDEX_EVERY_ENTRIES {
            self.finish_pack(BlobKind::Data)?;
            self.finish_pack(BlobKind::Tree)?;
            if !self.unindexed.is_empty() {
                self.write_index()?;
            }
        }
        Ok(())
    }

    fn finish_pack(&mut self, kind: BlobKind) -> Result<()> {
        let Some(mut pack) = self.open[kind as usize].take() else {
            return Ok(());
        };
        let header = self.repo.keys().seal(&FileKind::Pack.header(), &encode_header(&pack.blobs));
        pack.write(&header)?;
        pack.write(&(header.len() as u32).to_le_bytes())?;
        let id = FileId(*pack.hasher.finalize().as_bytes());
        // A dry run measures the pack and its index entries and writes neither.
        if !self.dry {
            // Recorded before the pack appears: if this process dies before the pack's
            // index file is written, the next one indexes it from its header instead of
            // storing its blobs again. Best effort (a full cache disk must not fail the
            // backup): without it the pack is a leftover that `check` notes and `repair
            // index` indexes.
            let _ = self.repo.index().journal_pack(&id);
            // Uploaded in the background to a remote repository (`write_index` waits),
            // whose cache keeps a copy of tree packs (the next backup, `ls` and the mount
            // read them).
            let Some(out) = pack.out else {
                return Err(Error::InvalidInput("packer: a pack of a real run has no file".into()));
            };
            self.repo.backend().store_later(Dir::Data, &id, out, kind == BlobKind::Tree)?;
        }
        self.stats.packs += 1;
        self.stats.bytes += pack.len;
        let mut offset = HEADER_LEN as u64;
        for b in &pack.blobs {
            let e = IndexEntry {
                id: b.id,
                loc: Location {
                    pack: id,
                    offset: offset as u32,
                    stored_len: b.stored_len,
                    raw_len: b.raw_len,
                    kind: b.kind,
                    compression: b.compression,
                },
            };
            offset += b.stored_len as u64;
            if self.dry {
                self.dry_claims.push(b.id);
            } else {
                self.repo.index().insert(&e);
            }
            self.unindexed.push(e);
        }
        self.unindexed_packs += 1;
        let oldest = *self.oldest_unindexed.get_or_insert_with(Instant::now);
        if self.unindexed_packs >= INDEX_EVERY_PACKS
            || oldest.elapsed() >= INDEX_EVERY
            || self.unindexed.len() >= INDEX_EVERY_ENTRIES
        {
            self.write_index()?;
        }
        Ok(())
    }

    fn write_index(&mut self) -> Result<()> {
        // An index file names only packs that are stored.
        if !self.dry {
            self.repo.backend().wait_stored()?;
        }
        for part in self.unindexed.chunks_mut(index_format::MAX_ENTRIES) {
            let payload = index_format::encode(part);
            self.stats.index_files += 1;
            self.stats.index_bytes += Repository::sealed_file_len(payload.len());
            if !self.dry {
                let id = self.repo.write_sealed_file(FileKind::Index, Dir::Index, &payload)?;
                // Only now may the local cache keep these entries (they are in a durable file).
                let stamp = self.repo.backend().stamp(Dir::Index, &id)?;
                self.repo.index().indexed(id, stamp, part)?;
            }
        }
        if !self.dry {
            // Every pack committed so far is indexed. (Best effort, as the journal is.)
            let _ = self.repo.index().journal_clear();
        }
        self.unindexed.clear();
        self.unindexed_packs = 0;
        self.oldest_unindexed = None;
        Ok(())
    }

    /// Finish the open packs and write the index for everything stored. After this
    /// returns, every blob added is durable and indexed.
    pub fn finish(mut self) -> Result<PackerStats> {
        self.finish_pack(BlobKind::Data)?;
        self.finish_pack(BlobKind::Tree)?;
        if !self.unindexed.is_empty() {
            self.write_index()?;
        }
        if !self.dry {
            self.repo.backend().wait_stored()?;
        }
        for id in &self.dry_claims {
            self.repo.index().release(id);
        }
        Ok(self.stats)
    }
}
