//! `check`: verify the repository against the invariants of docs/format.md.
//!
//! 1. Every key, index and snapshot file: its name is the hash of its bytes; keys decode.
//! 2. Every pack's header decrypts and lists exactly its blobs, and every blob's index
//!    entry agrees with the header (offset, lengths, kind, compression). Packs no index
//!    names, and blobs no index lists, are leftovers of interrupted backups: noted only.
//! 3. Every index file decodes and its entries point inside existing packs.
//! 4. Every snapshot's trees decode and every blob they reference is indexed.
//! 5. With `read_data`, every blob of every pack is decrypted, decompressed and re-hashed,
//!    and each damaged copy that the index uses is reported with the snapshot paths
//!    that need it.
//!
//! A backup may run at the same time: the snapshot list is taken first, index files
//! written since the repository was opened are loaded before snapshots are checked, and
//! a pack is looked for again before it is reported missing.
//!
//! Memory: pack sizes (40 B per pack), damaged copies, and the ids of tree nodes already
//! checked (32 B each; shared subtrees are checked once).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::backend::Dir;
use crate::error::{Error, Result};
use crate::format::index::IndexEntry;
use crate::format::key::KeyFile;
use crate::format::tree::{Content, Kind, Node};
use crate::format::{BlobKind, FileKind};
use crate::id::{BlobId, FileId};
use crate::repo::Repository;
use crate::sys;
use crate::tree::MAX_DIR_NESTING;

/// What to check.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// Also decrypt and re-hash every blob.
    pub read_data: bool,
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
    /// Blobs decrypted and re-hashed (with `read_data`).
    pub blobs_read: u64,
    /// Errors found.
    pub errors: u64,
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

/// Bytes charged per entry of the checker's LRU caches: the key and value, the LRU's
/// boxed node with two links and allocator overhead, and the hash table slot.
const LRU_ENTRY_BYTES: usize = 96;

fn lru_of<K: std::hash::Hash + Eq, V>(bytes: usize) -> lru::LruCache<K, V> {
    lru::LruCache::new(std::num::NonZeroUsize::new((bytes / LRU_ENTRY_BYTES).max(1)).expect("non-zero"))
}

/// Check `repo`. Returns the counters; `errors > 0` means damage was found.
pub fn check(repo: &Repository, opts: CheckOptions, report: &dyn Report, cancel: &AtomicBool) -> Result<CheckStats> {
    let mut c = Checker {
        repo,
        report,
        cancel,
        stats: CheckStats::default(),
        damaged: HashSet::new(),
        bad_files: HashSet::new(),
        // Budget: 1/8 for visited trees, 1/16 for pack sizes (32 and 16 MiB at the default).
        seen_trees: lru_of(repo.budget().0 / 8),
        pack_sizes: lru_of(repo.budget().0 / 16),
    };
    // Snapshots first: one written later may use packs and index files this check
    // has not seen; the index is then brought up to date before anything is looked up.
    let snapshots = repo.backend().list(Dir::Snapshots)?;
    c.files()?;
    repo.refresh_index()?;
    c.packs(opts.read_data)?;
    let (temps, bytes) = repo.backend().temp_usage()?;
    if temps > 0 {
        report.note(&format!(
            "tmp/ holds {temps} files ({bytes} bytes): files being written, or left by interrupted writers \
             (the next backup removes those whose writer is gone)"
        ));
    }
    c.index()?;
    for id in snapshots {
        c.cancelled()?;
        c.stats.snapshots += 1;
        match repo.load_snapshot(&id) {
            Ok(s) => c.dir(&s.root, Path::new("/"), &id),
            Err(_) if c.bad_files.contains(&id) => {}
            Err(e) => c.error(e),
        }
    }
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
                match b.read_file(dir, &id, kind.max_len().unwrap_or(0)) {
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

    /// Every pack's header; with `read_data` every blob. Remembers pack sizes.
    fn packs(&mut self, read_data: bool) -> Result<()> {
        let repo = self.repo;
        repo.backend().for_each_pack(|id, len| {
            self.cancelled()?;
            self.pack_sizes.put(id, len);
            self.stats.packs += 1;
            if let Err(e) = self.pack(&id, read_data) {
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
                let size = match self.pack_sizes.get(&e.loc.pack) {
                    Some(s) => Some(*s),
                    // Out of the cache, or written after the pack listing by a concurrent
                    // backup: ask the filesystem.
                    None => self.repo.backend().file_len(Dir::Data, &e.loc.pack).ok().flatten(),
                };
                if let Some(s) = size {
                    self.pack_sizes.put(e.loc.pack, s);
                }
                match size {
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

    fn blob(&mut self, id: &BlobId, kind: BlobKind, path: &Path, snap: &FileId) -> bool {
        match self.repo.index().get(id) {
            None => {
                self.error(format!(
                    "snapshot {}: {}: {} {id} is missing from the index",
                    snap.short(),
                    path.display(),
                    kind.name()
                ));
                false
            }
            Some(loc) if loc.kind != kind => {
                self.error(format!(
                    "snapshot {}: {}: blob {id} is indexed as a {}",
                    snap.short(),
                    path.display(),
                    loc.kind.name()
                ));
                false
            }
            Some(loc) => {
                if self.damaged.contains(&(loc.pack, loc.offset)) {
                    self.error(format!(
                        "snapshot {}: {}: {} {id} is damaged (pack {})",
                        snap.short(),
                        path.display(),
                        kind.name(),
                        loc.pack
                    ));
                    return false;
                }
                true
            }
        }
    }

    /// Read a tree node (directory or chunk list), once per distinct node.
    fn node(&mut self, id: &BlobId, path: &Path, snap: &FileId) -> Option<Node> {
        if self.seen_trees.put(*id, ()).is_some() {
            return None; // checked already (shared by snapshots or directories)
        }
        if !self.blob(id, BlobKind::Tree, path, snap) {
            return None;
        }
        self.stats.trees += 1;
        match self.repo.read_tree(id) {
            Ok(n) => Some(n),
            Err(e) => {
                self.error(format!("snapshot {}: {}: {e}", snap.short(), path.display()));
                None
            }
        }
    }

    /// Check the directory tree at `root` (the snapshot's path `path`) and the chunk
    /// lists of its files. Iterative, with a stack of nodes still to read (depth first,
    /// in order), so no depth of directories or nodes can overflow the thread's stack;
    /// directories nested deeper than [`MAX_DIR_NESTING`] are reported as damage.
    fn dir(&mut self, root: &BlobId, path: &Path, snap: &FileId) {
        enum Todo {
            /// A directory node, at this nesting of directories.
            Dir(BlobId, PathBuf, usize),
            /// A chunk-list node of a file.
            List(BlobId, PathBuf),
        }
        let mut todo = vec![Todo::Dir(*root, path.to_path_buf(), 0)];
        while let Some(t) = todo.pop() {
            if self.cancel.load(Ordering::Relaxed) {
                return;
            }
            match t {
                Todo::Dir(id, path, nest) => match self.node(&id, &path, snap) {
                    Some(Node::DirLeaf(entries)) => {
                        let at = todo.len();
                        for e in entries {
                            let p: PathBuf = path.join(sys::os(&e.name));
                            match &e.kind {
                                Kind::Dir(sub) if nest >= MAX_DIR_NESTING => self.error(format!(
                                    "snapshot {}: {}: {}",
                                    snap.short(),
                                    p.display(),
                                    crate::tree::too_deep(sub)
                                )),
                                Kind::Dir(sub) => todo.push(Todo::Dir(*sub, p, nest + 1)),
                                Kind::File(Content::Inline(cs)) => {
                                    for c in cs {
                                        self.blob(&c.id, BlobKind::Data, &p, snap);
                                    }
                                }
                                Kind::File(Content::List(root)) => todo.push(Todo::List(*root, p)),
                                _ => {}
                            }
                        }
                        todo[at..].reverse(); // popped in name order
                    }
                    Some(Node::DirInterior(children)) => {
                        todo.extend(children.iter().rev().map(|c| Todo::Dir(c.id, path.clone(), nest)));
                    }
                    Some(_) => self.error(format!(
                        "snapshot {}: {}: tree {id} is a chunk list, expected a directory",
                        snap.short(),
                        path.display()
                    )),
                    None => {}
                },
                Todo::List(id, path) => match self.node(&id, &path, snap) {
                    Some(Node::ListLeaf(cs)) => {
                        for c in cs {
                            self.blob(&c.id, BlobKind::Data, &path, snap);
                        }
                    }
                    Some(Node::ListInterior(children)) => {
                        todo.extend(children.iter().rev().map(|c| Todo::List(c.id, path.clone())));
                    }
                    Some(_) => self.error(format!(
                        "snapshot {}: {}: tree {id} is a directory, expected a chunk list",
                        snap.short(),
                        path.display()
                    )),
                    None => {}
                },
            }
        }
    }
}
