//! `check`: verify the repository against the invariants of docs/format.md.
//!
//! 1. Every key, index and snapshot file: its name is the hash of its bytes; keys decode.
//! 2. Every pack's header decrypts and lists exactly its blobs, and every blob's index
//!    entry agrees with the header (offset, lengths, kind, compression). Packs no index
//!    names, and blobs no index lists, are leftovers of interrupted backups: noted only.
//! 3. Every index file decodes and its entries point inside existing packs.
//! 4. Every snapshot's trees, walked by the same reader restore, `ls` and the mount use
//!    ([`tree::Walk`], [`tree::for_each_chunk`]), so what they refuse check reports:
//!    nodes decode and agree with their parents' counts and first names, names ascend
//!    across nodes, a file's chunks add up to its size, and every chunk is indexed as a
//!    data blob of the size its list gives.
//! 5. With `read_data`, every blob of every pack is decrypted, decompressed and re-hashed,
//!    and each damaged copy that the index uses is reported with the snapshot paths
//!    that need it; with `read_data_subset`, only the packs of one part (`n/m`, by pack
//!    id) or a random fraction (`P%`) are.
//!
//! A backup may run at the same time: the snapshot list is taken first, index files
//! written since the repository was opened are loaded before snapshots are checked, and
//! a pack is looked for again before it is reported missing.
//!
//! Memory: pack sizes and the directory and chunk-list trees found clean, in LRUs within
//! a share of the budget (~96 B each; a tree that fell out is checked again when met
//! again); damaged copies and files (growing with the damage found). A directory that
//! changed between snapshots is read whole again (its unchanged nodes too): the walker
//! skips trees, not nodes, so that every directory is checked by the readers' code.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::backend::Dir;
use crate::error::{Error, Result};
use crate::format::index::IndexEntry;
use crate::format::key::KeyFile;
use crate::format::tree::{ChunkRef, Content, Kind};
use crate::format::{BlobKind, FileKind};
use crate::id::{BlobId, FileId};
use crate::progress::Unit;
use crate::repo::Repository;
use crate::sys;
use crate::tree::{self, Step, Walk};

/// Which packs `check` reads whole (restic's `--read-data-subset`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// Part `n` (from 1) of `m`: the packs whose id, as a number, is `n - 1` modulo `m`.
    /// Checking parts 1 to m on m days reads every pack once.
    Part {
        /// Which part, 1 to `m`.
        n: u64,
        /// Into how many parts.
        m: u64,
    },
    /// Each pack with this probability (0 to 1), drawn anew on every run.
    Fraction(f64),
}

impl Subset {
    /// Parse `n/m` (1 <= n <= m) or `P%` (0 < P <= 100, decimals allowed).
    pub fn parse(s: &str) -> Result<Subset> {
        let bad = |why: &str| {
            Error::InvalidInput(format!("--read-data-subset {s}: {why} (use n/m, e.g. 2/7, or P%, e.g. 10%)"))
        };
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad("not a percentage"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad("the percentage must be above 0 and at most 100"));
            }
            return Ok(Subset::Fraction(p / 100.0));
        }
        let (n, m) = t.split_once('/').ok_or_else(|| bad("not a subset"))?;
        let (n, m): (u64, u64) = match (n.trim().parse(), m.trim().parse()) {
            (Ok(n), Ok(m)) => (n, m),
            _ => return Err(bad("not a subset")),
        };
        if n == 0 || m == 0 || n > m {
            return Err(bad("n must be from 1 to m"));
        }
        Ok(Subset::Part { n, m })
    }

    /// Whether pack `id` is in the subset.
    pub fn selects(&self, id: &FileId) -> bool {
        match *self {
            Subset::Part { n, m } => {
                let x = u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"));
                x % m == n - 1
            }
            Subset::Fraction(f) => (crate::crypto::random_u64() >> 11) as f64 / (1u64 << 53) as f64 <= f,
        }
    }
}

/// What to check.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// Also decrypt and re-hash every blob.
    pub read_data: bool,
    /// Decrypt and re-hash the blobs of these packs only (ignored with `read_data`).
    pub read_data_subset: Option<Subset>,
    /// How the shared lock is taken (a prune must not delete packs under the check).
    pub lock: crate::repo::lock::LockOptions,
}

/// Receives findings as they are made.
pub trait Report {
    /// Damage: the repository is not intact.
    fn error(&self, message: &str);
    /// Not damage, but worth knowing (leftovers of interrupted backups).
    fn note(&self, _message: &str) {}
}

/// Counters of a finished check.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct CheckStats {
    /// Snapshots checked.
    pub snapshots: u64,
    /// Packs checked.
    pub packs: u64,
    /// Index entries checked.
    pub index_entries: u64,
    /// Distinct tree nodes read.
    pub trees: u64,
    /// Blobs decrypted and re-hashed (with `read_data` or a subset).
    pub blobs_read: u64,
    /// Packs read whole (with `read_data` or a subset).
    pub packs_read: u64,
    /// Errors found.
    pub errors: u64,
    /// Packs holding nothing any snapshot uses (a warning: `prune` deletes them).
    pub unused_packs: u64,
    /// Index entries of blobs no snapshot uses, duplicates included (a warning).
    pub unused_entries: u64,
}

struct Checker<'a> {
    repo: &'a Repository,
    report: &'a dyn Report,
    cancel: &'a AtomicBool,
    stats: CheckStats,
    /// Stored copies (pack, offset) that failed to decrypt or verify.
    damaged: HashSet<(FileId, u32)>,
    /// Index and snapshot files already reported as damaged (not reported again when
    /// they fail to decode later). Grows with the damage found, not the repository.
    bad_files: HashSet<FileId>,
    /// Tree nodes checked already, most recent first, within a share of the budget (~96 B
    /// each). A node that fell out is checked again when met again: slower, never wrong.
    seen_trees: lru::LruCache<BlobId, ()>,
    /// Pack sizes from the listing, within a share of the budget (~96 B each); a pack
    /// that fell out is stat'ed again.
    pack_sizes: lru::LruCache<FileId, u64>,
}

/// Check `repo`. Returns the counters; `errors > 0` means damage was found.
pub fn check(repo: &Repository, opts: CheckOptions, report: &dyn Report, cancel: &AtomicBool) -> Result<CheckStats> {
    // Under the lock, `locked_check` refreshes the index (after listing snapshots), so
    // what a prune that finished before the lock removed is no longer expected.
    repo.with_lock(crate::repo::lock::LockKind::Shared, "check", &opts.lock, |_| {
        locked_check(repo, opts, report, cancel)
    })
}

fn locked_check(repo: &Repository, opts: CheckOptions, report: &dyn Report, cancel: &AtomicBool) -> Result<CheckStats> {
    let mut c = Checker {
        repo,
        report,
        cancel,
        stats: CheckStats::default(),
        damaged: HashSet::new(),
        bad_files: HashSet::new(),
        // Budget: 1/8 for visited trees, 1/16 for pack sizes (32 and 16 MiB at the default).
        seen_trees: crate::budget::lru_within(repo.budget().0 / 8),
        pack_sizes: crate::budget::lru_within(repo.budget().0 / 16),
    };
    // Snapshots first: one written later may use packs and index files this check
    // has not seen; the index is then brought up to date before anything is looked up.
    let snapshots = repo.backend().list(Dir::Snapshots)?;
    c.files()?;
    repo.refresh_index()?;
    repo.meter().start("checking packs", Unit::Items, 0);
    c.packs(&|id| opts.read_data || opts.read_data_subset.is_some_and(|s| s.selects(id)))?;
    let (temps, bytes) = repo.backend().temp_usage()?;
    if temps > 0 {
        report.note(&format!(
            "tmp/ holds {temps} files ({bytes} bytes): files being written, or left by interrupted writers \
             (the next backup removes those whose writer is gone)"
        ));
    }
    c.index()?;
    repo.meter().start("checking snapshots", Unit::Items, snapshots.len() as u64);
    for id in snapshots {
        c.cancelled()?;
        repo.meter().add(1);
        c.stats.snapshots += 1;
        match repo.load_snapshot(&id) {
            Ok(s) => c.snapshot(&s.root, &id),
            Err(_) if c.bad_files.contains(&id) => {}
            Err(e) => c.error(e),
        }
    }
    // What prune would reclaim: warnings, not errors (forgotten snapshots leave
    // garbage by design). Skipped when something is damaged: prune's plan stops there.
    // (It walks the trees again: the price of one mark shared with prune.)
    if c.stats.errors == 0 {
        match crate::ops::prune::unused(repo, cancel) {
            Ok(u) => {
                c.stats.unused_packs = u.packs_deleted;
                c.stats.unused_entries = u.index_entries - u.reachable_blobs;
                if u.packs_deleted > 0 {
                    report.note(&format!(
                        "{} packs ({} bytes) hold nothing any snapshot uses: `cairn prune` deletes them",
                        u.packs_deleted, u.deleted_bytes
                    ));
                }
                if c.stats.unused_entries > 0 {
                    report.note(&format!(
                        "{} index entries name blobs no snapshot uses ({} unused bytes in packs still used): \
                         `cairn prune` removes them",
                        c.stats.unused_entries, u.unused_bytes
                    ));
                }
            }
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(_) => {}
        }
    }
    repo.meter().finish();
    Ok(c.stats)
}

impl Checker<'_> {
    fn error(&mut self, msg: impl std::fmt::Display) {
        self.stats.errors += 1;
        self.report.error(&msg.to_string());
    }

    fn cancelled(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        Ok(())
    }

    /// Names match contents; key files decode.
    fn files(&mut self) -> Result<()> {
        let b = self.repo.backend();
        for (dir, kind) in
            [(Dir::Keys, FileKind::Key), (Dir::Index, FileKind::Index), (Dir::Snapshots, FileKind::Snapshot)]
        {
            for id in b.list(dir)? {
                match b.read(dir, &id, kind.max_len().unwrap_or(0)) {
                    Ok(bytes) if FileId::of(&bytes) != id => {
                        self.bad_files.insert(id);
                        self.error(format!(
                            "{} {id} ({}): content does not match its name (damaged)",
                            dir.what(),
                            b.path(dir, &id).display()
                        ))
                    }
                    Ok(bytes) if dir == Dir::Keys => {
                        if let Err(e) = KeyFile::decode(&bytes, &id) {
                            self.error(e);
                        }
                    }
                    Ok(_) => {}
                    // Removed since listed (a concurrent prune, later): not damage.
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => {
                        self.bad_files.insert(id);
                        self.error(e)
                    }
                }
            }
        }
        Ok(())
    }

    /// Every pack's header; every blob of those `read_data` selects. Remembers pack sizes.
    fn packs(&mut self, read_data: &dyn Fn(&FileId) -> bool) -> Result<()> {
        let repo = self.repo;
        repo.backend().for_each_pack(|id, len| {
            self.cancelled()?;
            self.pack_sizes.put(id, len);
            self.stats.packs += 1;
            repo.meter().add(1);
            if let Err(e) = self.pack(&id, read_data(&id)) {
                self.error(e);
            }
            Ok(())
        })
    }

    fn pack(&mut self, id: &FileId, read_data: bool) -> Result<()> {
        let repo = self.repo;
        // Without --read-data only the file header, trailer and pack header are read.
        let h = repo.read_pack_header(id)?;
        // Blobs whose index entry points elsewhere are spare copies; none pointing here
        // means no index references the pack at all (one note for it, not one per blob).
        let mut unindexed = Vec::new();
        let mut referenced = false;
        for (b, off) in &h.blobs {
            let loc = h.location(b, *off);
            match repo.index().get(&b.id) {
                None => unindexed.push(b.id),
                Some(ix) if ix.pack == *id && ix.offset == loc.offset && ix != loc => self.error(format!(
                    "pack {id}: blob {} at offset {off}: the index disagrees with the pack header ({ix:?} vs {loc:?})",
                    b.id
                )),
                Some(ix) if ix.pack == *id && ix.offset != loc.offset => {
                    self.error(format!("pack {id}: blob {} is at offset {off}, the index says {}", b.id, ix.offset))
                }
                Some(ix) => referenced |= ix.pack == *id,
            }
        }
        if read_data {
            self.stats.packs_read += 1;
            // Streamed blob by blob: a pack is never held whole.
            let mut plain = Vec::new();
            let intact = repo.stream_pack(&h, &mut |b, loc, sealed| {
                self.stats.blobs_read += 1;
                if let Err(e) = repo.open_blob_into(&b.id, b.kind, loc, sealed, &mut plain) {
                    self.damaged.insert((loc.pack, loc.offset));
                    self.error(e);
                }
                Ok(())
            })?;
            if !intact {
                self.error(format!("pack {id}: content does not match its name (damaged)"));
            }
        }
        if !referenced && !unindexed.is_empty() {
            self.report.note(&format!("pack {id} is not referenced by any index (left by an interrupted backup)"));
        } else {
            for b in unindexed {
                self.report.note(&format!("pack {id}: blob {b} is not in any index (left by an interrupted backup)"));
            }
        }
        Ok(())
    }

    /// Every index file decodes and its entries point into existing packs.
    fn index(&mut self) -> Result<()> {
        for ix in self.repo.backend().list(Dir::Index)? {
            self.cancelled()?;
            let entries: Vec<IndexEntry> = match self.repo.read_index_file(&ix) {
                Ok(e) => e,
                Err(_) if self.bad_files.contains(&ix) => continue,
                Err(e) => {
                    self.error(e);
                    continue;
                }
            };
            for e in entries {
                self.stats.index_entries += 1;
                match self.pack_size(&e.loc.pack) {
                    None => {
                        self.error(format!("index {ix}: blob {} is in pack {}, which does not exist", e.id, e.loc.pack))
                    }
                    Some(size) if e.loc.offset as u64 + e.loc.stored_len as u64 > size => self.error(format!(
                        "index {ix}: blob {} lies past the end of pack {} ({size} bytes)",
                        e.id, e.loc.pack
                    )),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The size of pack `id`, `None` if it does not exist: from the listing, else (out of
    /// the cache, or written since by a concurrent backup) from the filesystem.
    fn pack_size(&mut self, id: &FileId) -> Option<u64> {
        if let Some(s) = self.pack_sizes.get(id) {
            return Some(*s);
        }
        let size = self.repo.backend().file_len(Dir::Data, id).ok().flatten()?;
        self.pack_sizes.put(*id, size);
        Some(size)
    }

    /// A data chunk of a file: indexed as a data blob of the size the file's list gives,
    /// in a pack that exists, and not among the copies found damaged.
    fn chunk(&mut self, c: &ChunkRef, path: &Path, snap: &FileId) {
        let id = c.id;
        let at = |what: String| format!("snapshot {}: {}: {what}", snap.short(), path.display());
        match self.repo.index().get(&id) {
            None => self.error(at(format!("data blob {id} is missing from the index"))),
            Some(loc) if loc.kind != BlobKind::Data => {
                self.error(at(format!("blob {id} is indexed as a {}, the file lists it as data", loc.kind.name())))
            }
            Some(loc) if loc.raw_len != c.size => {
                self.error(at(format!("data blob {id} is {} bytes, the file lists {}", loc.raw_len, c.size)))
            }
            Some(loc) if self.damaged.contains(&(loc.pack, loc.offset)) => {
                self.error(at(format!("data blob {id} is damaged (pack {})", loc.pack)))
            }
            // Reported for each file that needs it, not only once for the index entry: a
            // deleted pack must say what it took with it.
            Some(loc) if self.pack_size(&loc.pack).is_none() => {
                self.error(at(format!("data blob {id} is in pack {}, which does not exist", loc.pack)))
            }
            Some(_) => {}
        }
    }

    /// Has tree `id` (a directory or a chunk list) been checked, with nothing wrong found
    /// under it? Only clean trees are remembered, so damage shared by several snapshots
    /// is reported in each of them, with each one's paths.
    fn seen_clean(&mut self, id: &BlobId) -> bool {
        self.seen_trees.get(id).is_some()
    }

    /// A file's chunks: a chunk list through the same reader restore and the mount use
    /// ([`tree::for_each_chunk`]: node counts, and the total against the entry's size).
    fn file(&mut self, content: &Content, size: u64, path: &Path, snap: &FileId) {
        match content {
            // Its sizes were checked against the entry's when its node was decoded.
            Content::Inline(cs) => cs.iter().for_each(|c| self.chunk(c, path, snap)),
            Content::List(root) => {
                if self.seen_clean(root) {
                    return;
                }
                self.stats.trees += 1;
                let errors = self.stats.errors;
                let repo = self.repo;
                if let Err(e) = tree::for_each_chunk(repo, content, size, &mut |c| {
                    self.chunk(c, path, snap);
                    Ok(())
                }) {
                    self.error(format!("snapshot {}: {}: {}", snap.short(), path.display(), described(&e)));
                }
                if self.stats.errors == errors {
                    self.seen_trees.put(*root, ());
                }
            }
        }
    }

    /// Check snapshot `snap`'s directory tree `root` and its files' chunk lists, through
    /// the one tree walker restore, `ls` and `repair snapshots` use ([`Walk`]): whatever
    /// they refuse (nodes that disagree with their parents' counts, names out of order
    /// or repeated across nodes, sizes that disagree with the chunks) is reported here.
    fn snapshot(&mut self, root: &BlobId, snap: &FileId) {
        /// A directory being walked: its path, tree and the error count when entered.
        struct Level {
            path: PathBuf,
            dir: BlobId,
            errors: u64,
        }
        if self.seen_clean(root) {
            return;
        }
        self.stats.trees += 1;
        let repo = self.repo;
        let mut walk = Walk::new(repo, root, Level { path: PathBuf::from("/"), dir: *root, errors: self.stats.errors });
        while let Some(step) = walk.next() {
            if self.cancel.load(Ordering::Relaxed) {
                return;
            }
            match step {
                Step::Entry(e) => {
                    let Some(top) = walk.top() else { continue };
                    let path = top.path.join(sys::os(&e.name));
                    match &e.kind {
                        Kind::Dir(sub) if !self.seen_clean(sub) => {
                            self.stats.trees += 1;
                            walk.enter(sub, Level { path, dir: *sub, errors: self.stats.errors })
                        }
                        Kind::File(c) => self.file(c, e.size, &path, snap),
                        _ => {}
                    }
                }
                Step::Leave(l) => {
                    if self.stats.errors == l.errors {
                        self.seen_trees.put(l.dir, ());
                    }
                }
                Step::Failed(l, e) => {
                    self.error(format!("snapshot {}: {}: {}", snap.short(), l.path.display(), described(&e)))
                }
                Step::Skipped(e, _) => self.error(format!("snapshot {}: {}", snap.short(), described(&e))),
            }
        }
    }
}

/// An error as check reports it: a blob the index does not list is "missing from the
/// index" (it may be in a pack no index file names: `repair index` finds those).
fn described(e: &Error) -> String {
    match e {
        Error::NotFound { what, id } => format!("{what} {id} is missing from the index"),
        e => e.to_string(),
    }
}
