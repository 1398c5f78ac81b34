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
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::backend::{read_exact_at, Dir};
use crate::error::{Error, IoContext, Result};
use crate::format::index::{IndexEntry, Location};
use crate::format::key::KeyFile;
use crate::format::pack::{decode_header, PackBlob, TRAILER_LEN};
use crate::format::tree::{Content, Kind, Node};
use crate::format::{BlobKind, FileKind, HEADER_LEN};
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
    c.index()?;
    for id in snapshots {
        c.cancelled()?;
        c.stats.snapshots += 1;
        match repo.load_snapshot(&id) {
            Ok(s) => c.dir(&s.root, Path::new("/"), &id),
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
        for dir in [Dir::Keys, Dir::Index, Dir::Snapshots] {
            for id in b.list(dir)? {
                let path = b.path(dir, &id);
                match b.read(&path) {
                    Ok(bytes) if FileId::of(&bytes) != id => {
                        self.error(format!("{}: content does not match its name (damaged)", path.display()))
                    }
                    Ok(bytes) if dir == Dir::Keys => {
                        if let Err(e) = KeyFile::decode(&bytes, &id) {
                            self.error(e);
                        }
                    }
                    Ok(_) => {}
                    // Removed since listed (a concurrent prune, later): not damage.
                    Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => self.error(e),
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
            if let Err(e) = self.pack(&id, len, read_data) {
                self.error(e);
            }
            Ok(())
        })
    }

    fn pack(&mut self, id: &FileId, len: u64, read_data: bool) -> Result<()> {
        let path = self.repo.pack_path(id);
        // Without --read-data only the file header, trailer and pack header are read.
        let mut whole = if read_data { Some(std::fs::read(&path).at(&path)?) } else { None };
        if whole.as_ref().is_some_and(|b| FileId::of(b) != *id) {
            self.error(format!("pack {id}: content does not match its name (damaged)"));
        }
        let (blobs, _) = match &whole {
            Some(b) => pack_header_from(self.repo, id, b.len() as u64, &mut |buf, off| {
                let (s, e) = (off as usize, off as usize + buf.len());
                buf.copy_from_slice(b.get(s..e).ok_or_else(|| Error::corrupt("pack", id, "truncated"))?);
                Ok(())
            })?,
            None => {
                let f = File::open(&path).at(&path)?;
                pack_header_from(self.repo, id, len, &mut |buf, off| read_exact_at(&f, &path, buf, off))?
            }
        };
        // Blobs whose index entry points elsewhere are spare copies; none pointing here
        // means no index references the pack at all (one note for it, not one per blob).
        let mut unindexed = Vec::new();
        let mut referenced = false;
        let mut plain = Vec::new();
        for (b, off) in blobs {
            let loc = Location {
                pack: *id,
                offset: off as u32,
                stored_len: b.stored_len,
                raw_len: b.raw_len,
                kind: b.kind,
                compression: b.compression,
            };
            match self.repo.index().get(&b.id) {
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
            if let Some(bytes) = &mut whole {
                // Opened in place: the pack's bytes are not needed again.
                let sealed = &mut bytes[off as usize..off as usize + b.stored_len as usize];
                self.stats.blobs_read += 1;
                if let Err(e) = self.repo.open_blob_into(&b.id, &loc, sealed, &mut plain) {
                    self.damaged.insert((*id, loc.offset));
                    self.error(e);
                }
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
                    None => std::fs::metadata(self.repo.pack_path(&e.loc.pack)).ok().map(|m| m.len()),
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

/// Read and decode a pack's header with `read(buf, offset)`: file header, trailer, sealed
/// header. Returns the blobs with their offsets and the length of the blob area.
fn pack_header_from(
    repo: &Repository,
    id: &FileId,
    len: u64,
    read: &mut dyn FnMut(&mut [u8], u64) -> Result<()>,
) -> Result<(Vec<(PackBlob, u64)>, u64)> {
    if len < (HEADER_LEN + TRAILER_LEN) as u64 {
        return Err(Error::corrupt("pack", id, format!("{len} bytes is too short for a pack")));
    }
    let mut head = [0u8; HEADER_LEN];
    read(&mut head, 0)?;
    FileKind::Pack.check_header(&head, id)?;
    let mut trailer = [0u8; TRAILER_LEN];
    read(&mut trailer, len - TRAILER_LEN as u64)?;
    let hlen = u32::from_le_bytes(trailer) as u64;
    // 42 bytes per blob: 64 MiB is 1.6 M blobs, far past any pack cairn writes. The
    // limit keeps a forged trailer from driving a huge allocation.
    if hlen > 64 << 20 {
        return Err(Error::corrupt("pack", id, format!("header length {hlen} is absurd")));
    }
    let blobs_len = (len - (HEADER_LEN + TRAILER_LEN) as u64)
        .checked_sub(hlen)
        .ok_or_else(|| Error::corrupt("pack", id, format!("header length {hlen} exceeds the file ({len} bytes)")))?;
    let mut sealed = vec![0u8; hlen as usize];
    read(&mut sealed, HEADER_LEN as u64 + blobs_len)?;
    let header = repo.keys().open(&FileKind::Pack.header(), &sealed, "pack header", id)?;
    Ok((decode_header(&header, id, blobs_len)?, blobs_len))
}
