//! Putting the repository's index back in step with its packs, and clearing leftovers.
//!
//! Index files are the only way a reader finds a blob, so a pack no index file names is
//! invisible. That happens when a backup dies between committing a pack and writing the
//! index file that names it (kill -9, power loss, a full disk), and when an index file is
//! damaged: its packs are intact but unlisted. Every pack's header lists its blobs, sealed
//! under the master key, so the index can always be rebuilt from the packs:
//!
//! - [`recover`], at the start of every backup: remove stale temp files, index the packs
//!   that this cache's journal names (committed by a process that did not live to index
//!   them), and, when index files were skipped as damaged, every pack the index does not
//!   know. The repository heals by the next backup, without storing the data again.
//! - [`repair_index`] (`cairn repair index`): read every pack's header, index every blob
//!   no index file lists, then remove damaged index files and rewrite those that name
//!   packs which no longer exist.
//!
//! Memory: the new index file being filled (at most [`BATCH`] entries, ~130 B each with
//! the set that keeps ids unique in it), one pack header at a time, and for the scan of
//! packs the index does not know, a sort of the known pack ids in at most
//! [`KNOWN_PACKS_RAM`] (64 B each, spilled to temp files beyond).

use crate::backend::Dir;
use crate::error::{Error, Result};
use crate::extsort::NameSorter;
use crate::format::index::{self as index_format, IndexEntry};
use crate::format::FileKind;
use crate::id::{BlobSet, FileId};
use crate::repo::Repository;

/// Entries per index file written here: the packer's interval, so the entries waiting
/// for their file cost what the packer's do.
const BATCH: usize = 16_384;
/// RAM for sorting the pack ids the index knows before they spill to temp files.
const KNOWN_PACKS_RAM: usize = 1 << 20;

/// What indexing packs did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexStats {
    /// Pack headers read.
    pub packs_read: u64,
    /// Packs that had blobs no index file listed.
    pub packs_indexed: u64,
    /// Blobs added to new index files.
    pub blobs_indexed: u64,
    /// Index files written.
    pub index_files_written: u64,
    /// Packs whose header could not be read (damaged).
    pub packs_damaged: u64,
    /// Damaged index files removed (`repair index`).
    pub index_files_removed: u64,
    /// Index files rewritten without entries of missing packs (`repair index`).
    pub index_files_rewritten: u64,
    /// Entries dropped because their pack does not exist (`repair index`).
    pub entries_dropped: u64,
    /// Stale temp files removed, and their bytes.
    pub temp_files_removed: u64,
    /// Bytes of the stale temp files removed.
    pub temp_bytes_removed: u64,
}

/// Collects the entries of blobs no index lists, and writes them as index files.
struct Indexer<'r> {
    repo: &'r Repository,
    entries: Vec<IndexEntry>,
    /// Ids in `entries`: a blob stored in two unindexed packs is listed once per file.
    ids: BlobSet,
    stats: IndexStats,
}

impl<'r> Indexer<'r> {
    fn new(repo: &'r Repository) -> Indexer<'r> {
        Indexer { repo, entries: Vec::new(), ids: BlobSet::default(), stats: IndexStats::default() }
    }

    /// Read pack `id`'s header and queue every blob in it that no index lists. A pack
    /// that is gone is skipped; a damaged one is reported through `note` and skipped.
    fn pack(&mut self, id: &FileId, note: &mut dyn FnMut(&str)) -> Result<()> {
        let h = match self.repo.read_pack_header(id) {
            Ok(h) => h,
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e @ (Error::Corrupt { .. } | Error::Tampered { .. })) => {
                self.stats.packs_damaged += 1;
                note(&format!("{e}; its blobs cannot be indexed"));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.stats.packs_read += 1;
        let mut added = false;
        for (b, off) in &h.blobs {
            if self.ids.contains(&b.id) || self.repo.index().try_get(&b.id)?.is_some() {
                continue;
            }
            self.ids.insert(b.id);
            self.entries.push(IndexEntry { id: b.id, loc: h.location(b, *off) });
            added = true;
            if self.entries.len() >= BATCH {
                self.flush()?;
            }
        }
        self.stats.packs_indexed += added as u64;
        Ok(())
    }

    /// Write the queued entries as one index file and hand them to the local index.
    fn flush(&mut self) -> Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let ix = self.repo.index();
        let id = self.repo.write_sealed_file(FileKind::Index, Dir::Index, &index_format::encode(&mut self.entries))?;
        for e in &self.entries {
            ix.insert(e);
        }
        ix.indexed(id, self.repo.backend().stamp(Dir::Index, &id)?, &self.entries)?;
        self.stats.index_files_written += 1;
        self.stats.blobs_indexed += self.entries.len() as u64;
        self.entries.clear();
        self.ids.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<IndexStats> {
        self.flush()?;
        Ok(self.stats)
    }
}

/// Call `f` with every pack in the repository that the index knows nothing of, in id
/// order: a merge of the repository's pack listing (sorted) with the index's pack table,
/// sorted in bounded memory.
fn for_each_unknown_pack(repo: &Repository, f: &mut dyn FnMut(FileId) -> Result<()>) -> Result<()> {
    let tmp = std::env::temp_dir();
    let io = |e: std::io::Error| Error::Io { path: tmp.clone(), err: e };
    let mut known = NameSorter::new(KNOWN_PACKS_RAM);
    repo.index().for_each_pack(&mut |p| known.push(p.0.to_vec()).map_err(io))?;
    let mut known = known.finish().map_err(io)?;
    let mut next = known.next_name().map_err(io)?;
    repo.backend().for_each_pack(|id, _| {
        while next.as_deref().is_some_and(|k| k < &id.0[..]) {
            next = known.next_name().map_err(io)?;
        }
        if next.as_deref() == Some(&id.0[..]) {
            return Ok(());
        }
        f(id)
    })
}

/// Bring the repository back in step before a backup writes to it (see the module
/// documentation). `note` receives what was done, for the user.
pub fn recover(repo: &Repository, note: &mut dyn FnMut(&str)) -> Result<IndexStats> {
    let (files, bytes) = repo.backend().remove_stale_temps()?;
    let mut ix = Indexer::new(repo);
    // The journal names packs this cache's last writer committed and may not have
    // indexed; most are indexed by now, and reading their headers says which.
    for id in repo.index().journal()? {
        ix.pack(&id, note)?;
    }
    if repo.index_incomplete() {
        for_each_unknown_pack(repo, &mut |id| ix.pack(&id, note))?;
    }
    let mut stats = ix.finish()?;
    // Only now: a crash before this point leaves the journal to the next process.
    repo.index().journal_clear()?;
    stats.temp_files_removed = files;
    stats.temp_bytes_removed = bytes;
    if files > 0 {
        note(&format!("removed {files} temp files ({bytes} bytes) left by interrupted writers"));
    }
    if stats.blobs_indexed > 0 {
        note(&format!(
            "indexed {} blobs of {} packs that no index file listed (from their headers)",
            stats.blobs_indexed, stats.packs_indexed
        ));
    }
    Ok(stats)
}

/// `cairn repair index`: index every blob of every pack that no index file lists, then
/// remove the index files that are damaged (everything they could have listed is now
/// listed again, from the packs) and rewrite those naming packs that no longer exist
/// (their blobs are lost; without the entries the next backup stores them anew instead
/// of deduplicating against nothing). `note` receives each finding.
pub fn repair_index(repo: &Repository, note: &mut dyn FnMut(&str)) -> Result<IndexStats> {
    let (files, bytes) = repo.backend().remove_stale_temps()?;
    let mut ix = Indexer::new(repo);
    repo.backend().for_each_pack(|id, _| ix.pack(&id, note))?;
    let mut stats = ix.finish()?;
    stats.temp_files_removed = files;
    stats.temp_bytes_removed = bytes;
    // Index files: damaged ones go, those naming missing packs are rewritten.
    let mut exists = lru::LruCache::new(std::num::NonZeroUsize::new(1 << 16).expect("non-zero"));
    for file in repo.backend().list(Dir::Index)? {
        let entries = match repo.read_index_file(&file) {
            Ok(e) => e,
            Err(e @ (Error::Corrupt { .. } | Error::Tampered { .. })) => {
                note(&format!("{e}: removed (its packs are indexed from their headers)"));
                repo.backend().remove(Dir::Index, &file)?;
                stats.index_files_removed += 1;
                continue;
            }
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let total = entries.len();
        let mut kept = Vec::with_capacity(total);
        for e in entries {
            let present = match exists.get(&e.loc.pack) {
                Some(p) => *p,
                None => {
                    let p = repo.backend().file_len(Dir::Data, &e.loc.pack)?.is_some();
                    exists.put(e.loc.pack, p);
                    p
                }
            };
            if present {
                kept.push(e);
            } else {
                stats.entries_dropped += 1;
            }
        }
        let dropped = total - kept.len();
        if dropped == 0 {
            continue;
        }
        // The new file first, then the old one goes: a crash between leaves both, which
        // readers accept (duplicate entries).
        if !kept.is_empty() {
            repo.write_sealed_file(FileKind::Index, Dir::Index, &index_format::encode(&mut kept))?;
        }
        repo.backend().remove(Dir::Index, &file)?;
        stats.index_files_rewritten += 1;
        note(&format!("index {file}: {dropped} entries name packs that do not exist; rewritten without them"));
    }
    // The local cache notices the removed files and rebuilds.
    repo.refresh_index()?;
    Ok(stats)
}
