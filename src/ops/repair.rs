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
use crate::extsort::{IdSet, NameSorter};
use crate::format::index::{self as index_format, IndexEntry};
use crate::format::FileKind;
use crate::id::{BlobSet, FileId};
use crate::repo::lock::{LockGuard, LockKind, LockOptions};
use crate::repo::{IndexNote, Repository};

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
///
/// Whether a pack exists is decided by this run's own listing of `data/`, never by a
/// failed lookup, and entries are dropped only when the listing is plausible: if it
/// holds no packs while index files name some, or if more than half the packs index
/// files name are missing, the data is more likely unreachable (an unmounted disk, a
/// dangling `data` symlink) than lost, and nothing is dropped unless `force`.
pub fn repair_index(
    repo: &Repository,
    force: bool,
    lock: &LockOptions,
    note: &mut dyn FnMut(&str),
) -> Result<IndexStats> {
    // Exclusive: it removes and rewrites index files that other clients rely on.
    repo.with_lock(LockKind::Exclusive, "repair index", lock, |_| locked_repair_index(repo, force, note))
}

fn locked_repair_index(repo: &Repository, force: bool, note: &mut dyn FnMut(&str)) -> Result<IndexStats> {
    let (files, bytes) = repo.backend().remove_stale_temps()?;
    // Start from the index files as they are: a damaged file whose stamp did not change
    // would otherwise still be vouched for by the cache while it is removed below.
    repo.index().clear()?;
    repo.refresh_index()?;
    let tmp = std::env::temp_dir();
    let io = |e: std::io::Error| Error::Io { path: tmp.clone(), err: e };
    let mut listed = NameSorter::new(KNOWN_PACKS_RAM);
    let mut ix = Indexer::new(repo);
    repo.backend().for_each_pack(|id, _| {
        listed.push(id.0.to_vec()).map_err(io)?;
        ix.pack(&id, note)
    })?;
    let listed = IdSet::of_sorted(listed.finish().map_err(io)?).map_err(io)?;
    let mut stats = ix.finish()?;
    stats.temp_files_removed = files;
    stats.temp_bytes_removed = bytes;
    // How many of the packs the index files name are missing (counted per file's pack
    // table: a pack named by two files counts twice on both sides, the share holds).
    let index_files = repo.backend().list(Dir::Index)?;
    let (mut named, mut missing) = (0u64, 0u64);
    for file in &index_files {
        if let Ok(entries) = repo.read_index_file(file) {
            let mut packs: Vec<FileId> = entries.iter().map(|e| e.loc.pack).collect();
            packs.sort_unstable();
            packs.dedup();
            for p in packs {
                named += 1;
                missing += !listed.contains(&p.0).map_err(io)? as u64;
            }
        }
    }
    if missing > 0 && !force && (listed.is_empty() || missing * 2 > named) {
        return Err(Error::InvalidInput(format!(
            "{missing} of the {named} packs the index files name are not in {}: is the data on a disk that is \
             not mounted? Nothing was dropped (--force drops their entries anyway)",
            repo.backend().root().join("data").display()
        )));
    }
    // Index files: damaged ones go, those naming missing packs are rewritten.
    let mut keep = |p: &FileId| listed.contains(&p.0).map_err(io);
    let done = repo.rewrite_index_files(&Default::default(), true, &mut keep, &mut |n| match n {
        IndexNote::Damaged(_, e) => note(&format!("{e}: removed (its packs are indexed from their headers)")),
        IndexNote::Rewritten(file, dropped) => {
            note(&format!("index {file}: {dropped} entries name packs that do not exist; rewritten without them"))
        }
    })?;
    stats.index_files_removed += done.damaged_removed;
    stats.entries_dropped += done.entries_dropped;
    stats.index_files_rewritten += done.files;
    // The local cache notices the removed files and rebuilds.
    repo.refresh_index()?;
    Ok(stats)
}

/// What `repair snapshots` does.
#[derive(Clone, Debug, Default)]
pub struct RepairSnapshotsOptions {
    /// The snapshots to repair; all of them when empty.
    pub snapshots: Vec<FileId>,
    /// Remove each repaired snapshot's original once the new one is saved.
    pub forget: bool,
    /// Write nothing: only report what would be done.
    pub dry_run: bool,
    /// Also read and verify every data blob the snapshots use. Without it a chunk
    /// counts as present when the index lists it, as a data blob of its size, in a
    /// pack that exists.
    pub read_data: bool,
    /// How the shared lock is taken (like a backup, it writes snapshots naming data).
    pub lock: LockOptions,
}

/// What `repair snapshots` found and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepairSnapshotsStats {
    /// Snapshots walked.
    pub snapshots_checked: u64,
    /// Snapshots with damage, each saved anew (unless a dry run).
    pub snapshots_repaired: u64,
    /// Originals removed (`--forget`).
    pub snapshots_removed: u64,
    /// Directories that could not be read at all, now empty.
    pub dirs_emptied: u64,
    /// Directory entries dropped with the damaged nodes that held them.
    pub entries_dropped: u64,
    /// Files whose missing or damaged content was removed.
    pub files_cut: u64,
    /// Bytes of file content removed.
    pub bytes_removed: u64,
}

/// Stores tree nodes through a packer, or only names them (a dry run).
struct TreeStore<'r> {
    repo: &'r Repository,
    packer: Option<crate::repo::packer::Packer<'r>>,
    compressor: Option<crate::compress::Compressor>,
}

impl crate::tree::TreeSink for TreeStore<'_> {
    fn store_tree(&mut self, node: &[u8]) -> Result<crate::id::BlobId> {
        let id = self.repo.keys().blob_id(crate::format::BlobKind::Tree, node);
        if let Some(p) = self.packer.as_mut() {
            if self.repo.index().claim(&id) {
                p.add(self.repo.seal_blob(crate::format::BlobKind::Tree, id, node, self.compressor.as_mut()))?;
            }
        }
        Ok(id)
    }
}

/// What salvaging one snapshot gave.
enum Salvage {
    /// Nothing damaged.
    Whole,
    /// Damage left out: the new root.
    Repaired(crate::id::BlobId),
    /// Its root directory cannot be read: nothing would be left.
    Nothing,
}

/// Damage (the object is corrupt, fails authentication, or is missing) is what repair
/// leaves out: its description. Anything else (an I/O error, a format from a newer cairn)
/// says nothing about the snapshot and stops the repair, so that a disk that is merely
/// unreachable or unreadable for this user never has its snapshots emptied.
fn damage(e: Error) -> Result<String> {
    match e {
        Error::Corrupt { .. } | Error::Tampered { .. } | Error::NotFound { .. } => Ok(e.to_string()),
        e => Err(e),
    }
}

/// Walks snapshots and rewrites what is damaged.
struct Repairer<'r, 'n> {
    repo: &'r Repository,
    opts: &'r RepairSnapshotsOptions,
    note: &'n mut dyn FnMut(&str),
    stats: RepairSnapshotsStats,
    /// Whether packs exist (~96 B each; a pack that fell out is looked up again).
    packs: lru::LruCache<FileId, bool>,
    /// Directory trees found whole, not walked again (~96 B each, 1/8 of the budget).
    clean: lru::LruCache<crate::id::BlobId, ()>,
}

impl Repairer<'_, '_> {
    /// Can chunk `c` be read? Indexed as a data blob of its size in a pack that exists
    /// (and, with `read_data`, it decrypts and verifies).
    fn chunk_ok(&mut self, c: &crate::format::tree::ChunkRef) -> Result<bool> {
        let Some(loc) = self.repo.index().try_get(&c.id)? else { return Ok(false) };
        if loc.kind != crate::format::BlobKind::Data || loc.raw_len != c.size {
            return Ok(false);
        }
        let exists = match self.packs.get(&loc.pack) {
            Some(e) => *e,
            None => {
                let len = self.repo.backend().file_len(Dir::Data, &loc.pack)?;
                let e = len.is_some_and(|l| l >= loc.offset as u64 + loc.stored_len as u64);
                self.packs.put(loc.pack, e);
                e
            }
        };
        if !exists {
            return Ok(false);
        }
        if self.opts.read_data {
            return match self.repo.read_blob(&c.id, crate::format::BlobKind::Data) {
                Ok(_) => Ok(true),
                Err(Error::Corrupt { .. } | Error::Tampered { .. } | Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            };
        }
        Ok(true)
    }

    /// A file's content with what cannot be read removed (restic's semantics: the file
    /// gets shorter), or `None` if all of it can be read and adds up to its size.
    fn file(
        &mut self,
        e: &crate::format::tree::Entry,
        content: &crate::format::tree::Content,
        path: &std::path::Path,
        store: &mut TreeStore,
    ) -> Result<Option<crate::format::tree::Entry>> {
        use crate::tree::{ChunkIter, ListWriter};
        // Pass one reads the list only: a whole file (the usual case) is left as it is.
        let mut whole = true;
        let mut total = 0u64;
        match ChunkIter::new(self.repo, content) {
            Ok(mut it) => loop {
                match it.next_chunk() {
                    Ok(Some(c)) => {
                        total += c.size as u64;
                        whole &= self.chunk_ok(&c)?;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        damage(e)?;
                        whole = false;
                        break;
                    }
                }
                if !whole {
                    break;
                }
            },
            Err(e) => {
                damage(e)?;
                whole = false;
            }
        }
        if whole && total == e.size {
            return Ok(None);
        }
        // Pass two keeps what can be read.
        let mut w = ListWriter::new();
        let (mut kept, mut problem) = (0u64, None);
        match ChunkIter::new(self.repo, content) {
            Err(err) => problem = Some(damage(err)?),
            Ok(mut it) => loop {
                match it.next_chunk() {
                    Ok(Some(c)) => {
                        if self.chunk_ok(&c)? {
                            kept += c.size as u64;
                            w.push(c, store)?;
                        }
                    }
                    Ok(None) => break,
                    Err(err) => {
                        problem.get_or_insert(damage(err)?);
                        if it.skip_failed().is_none() {
                            break;
                        }
                    }
                }
            },
        }
        let mut fixed = e.clone();
        fixed.kind = crate::format::tree::Kind::File(w.finish(store)?);
        fixed.size = kept;
        let removed = e.size.saturating_sub(kept);
        self.stats.files_cut += 1;
        self.stats.bytes_removed += removed;
        let why = problem.map(|p| format!(" ({p})")).unwrap_or_default();
        (self.note)(&format!(
            "  file {:?}: removed missing content: {removed} of {} bytes{why}",
            path.display().to_string(),
            e.size
        ));
        Ok(Some(fixed))
    }

    /// Walk one snapshot, writing the trees anew with damage left out.
    fn snapshot(&mut self, root: &crate::id::BlobId, store: &mut TreeStore) -> Result<Salvage> {
        use crate::format::tree::{Entry, Kind};
        use crate::tree::{DirWriter, Step, Walk};
        /// A directory being rewritten: its writer, its own entry (none for the root),
        /// its path, and whether damage was found under it.
        struct Level {
            w: DirWriter,
            entry: Option<Entry>,
            path: std::path::PathBuf,
            dir: crate::id::BlobId,
            damaged: bool,
        }
        let level = |entry, path, dir| Level { w: DirWriter::new(), entry, path, dir, damaged: false };
        let mut walk = Walk::salvaging(self.repo, root, level(None, "/".into(), *root));
        let mut new_root = None;
        let mut damaged_any = false;
        while let Some(step) = walk.next() {
            let finished = match step {
                Step::Entry(mut e) => {
                    let Some(top) = walk.top() else { continue };
                    let path = top.path.join(crate::sys::os(&e.name));
                    match &e.kind {
                        Kind::Dir(sub) if self.clean.get(sub).is_none() => {
                            let sub = *sub;
                            walk.enter(&sub, level(Some(e), path, sub));
                            continue;
                        }
                        Kind::File(c) => {
                            if let Some(fixed) = self.file(&e, &c.clone(), &path, store)? {
                                e = fixed;
                                if let Some(top) = walk.top() {
                                    top.damaged = true;
                                }
                            }
                        }
                        _ => {}
                    }
                    if let Some(top) = walk.top() {
                        top.w.push(&e, store)?;
                    }
                    continue;
                }
                Step::Skipped(err, lost) => {
                    let err = damage(err)?;
                    if let Some(top) = walk.top() {
                        top.damaged = true;
                        (self.note)(&format!(
                            "  dir {:?}: {lost} entries dropped with a damaged node ({err})",
                            top.path.display().to_string()
                        ));
                    }
                    self.stats.entries_dropped += lost;
                    continue;
                }
                Step::Leave(l) => l,
                Step::Failed(mut l, err) => {
                    let err = damage(err)?;
                    if l.entry.is_none() {
                        // Nothing of the snapshot would be left: refused, not emptied.
                        (self.note)(&format!("  the snapshot's root directory cannot be read ({err}): not repaired"));
                        return Ok(Salvage::Nothing);
                    }
                    (self.note)(&format!(
                        "  dir {:?}: replaced with an empty directory ({err})",
                        l.path.display().to_string()
                    ));
                    self.stats.dirs_emptied += 1;
                    l.damaged = true;
                    l
                }
            };
            // A directory is done: its new tree goes into its parent (or is the root).
            let id = finished.w.finish(store)?;
            if finished.damaged {
                damaged_any = true;
            } else {
                self.clean.put(finished.dir, ());
            }
            match (finished.entry, walk.top()) {
                (Some(mut e), Some(parent)) => {
                    e.kind = Kind::Dir(id);
                    parent.damaged |= finished.damaged;
                    parent.w.push(&e, store)?;
                }
                _ => new_root = Some(id),
            }
        }
        Ok(match new_root {
            Some(root) if damaged_any => Salvage::Repaired(root),
            _ => Salvage::Whole,
        })
    }
}

/// `cairn repair snapshots`: walk the snapshots (all, or those given) and save, for each
/// one with damage, a new snapshot without it, restic's way: a directory that cannot
/// be read becomes an empty one, damaged nodes inside a directory are left out with the
/// entries they held, and a file loses the content that cannot be read (it gets
/// shorter). The new snapshot keeps the original's time, host and paths and gets the
/// tag `repaired`; `forget` then removes the original. Run `repair index` first: a blob
/// in a pack no index file lists counts as missing. `note` receives a report per
/// snapshot in restic's form.
pub fn repair_snapshots(
    repo: &Repository,
    opts: &RepairSnapshotsOptions,
    note: &mut dyn FnMut(&str),
) -> Result<RepairSnapshotsStats> {
    repo.with_lock(LockKind::Shared, "repair snapshots", &opts.lock, |lock| {
        repo.refresh_index()?;
        locked_repair_snapshots(repo, opts, note, lock)
    })
}

fn locked_repair_snapshots(
    repo: &Repository,
    opts: &RepairSnapshotsOptions,
    note: &mut dyn FnMut(&str),
    lock: &LockGuard,
) -> Result<RepairSnapshotsStats> {
    let mut r = Repairer {
        repo,
        opts,
        note,
        stats: RepairSnapshotsStats::default(),
        packs: crate::budget::lru_within(repo.budget().0 / 32),
        clean: crate::budget::lru_within(repo.budget().0 / 8),
    };
    let ids = if opts.snapshots.is_empty() { repo.backend().list(Dir::Snapshots)? } else { opts.snapshots.clone() };
    for id in ids {
        let snap = match repo.load_snapshot(&id) {
            Ok(s) => s,
            Err(e @ (Error::Corrupt { .. } | Error::Tampered { .. })) => {
                (r.note)(&format!("snapshot {}: {e}: cannot be repaired, only removed", id.short()));
                continue;
            }
            Err(e) => return Err(e),
        };
        r.stats.snapshots_checked += 1;
        (r.note)(&format!(
            "snapshot {} of {:?} at {} by {}@{}",
            id.short(),
            snap.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            snap.time_ns,
            snap.user,
            snap.host
        ));
        let level = repo.config().compression;
        let mut store = TreeStore {
            repo,
            packer: (!opts.dry_run).then(|| crate::repo::packer::Packer::new(repo)),
            compressor: if level > 0 { Some(crate::compress::Compressor::new(level)?) } else { None },
        };
        let salvage = r.snapshot(&snap.root, &mut store)?;
        // The new trees are durable and indexed before the snapshot that names them.
        if let Some(p) = store.packer.take() {
            p.finish()?;
        }
        let root = match salvage {
            Salvage::Repaired(root) => root,
            Salvage::Whole => {
                (r.note)("  nothing damaged");
                continue;
            }
            Salvage::Nothing => continue,
        };
        r.stats.snapshots_repaired += 1;
        if opts.dry_run {
            (r.note)("  would save a new snapshot (dry run)");
            continue;
        }
        let mut fixed = snap.clone();
        fixed.root = root;
        if !fixed.tags.iter().any(|t| t == "repaired") {
            fixed.tags.push("repaired".into());
        }
        fixed.program = format!("cairn {} (repair snapshots)", env!("CARGO_PKG_VERSION"));
        // As a backup: only while the lock holds can no prune have deleted what it names.
        lock.check()?;
        let new = repo.save_snapshot(&fixed)?;
        (r.note)(&format!("  saved new snapshot {}", new.short()));
        if opts.forget {
            repo.backend().remove(Dir::Snapshots, &id)?;
            r.stats.snapshots_removed += 1;
            (r.note)(&format!("  removed old snapshot {}", id.short()));
        }
    }
    Ok(r.stats)
}
