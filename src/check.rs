//! `check`: verify the repository against the invariants of docs/format.md.
//!
//! 1. Every key, index and snapshot file decodes, and its name is the hash of its bytes.
//! 2. Every pack's header decrypts and lists exactly its blobs; every index entry points
//!    inside an existing pack at the place its header says. Packs no index names, and
//!    blobs no index lists, are leftovers of interrupted backups: reported, not errors.
//! 3. Every snapshot's trees decode and every blob they reference is indexed.
//! 4. With `read_data`, every blob of every pack is decrypted, decompressed and re-hashed.
//!
//! Damage is reported with the object's id and, for snapshot contents, the path.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::backend::Dir;
use crate::error::{Error, Result};
use crate::format::index::IndexEntry;
use crate::format::key::KeyFile;
use crate::format::pack::{decode_header, TRAILER_LEN};
use crate::format::tree::{Content, Kind, Node};
use crate::format::{BlobKind, FileKind};
use crate::id::{BlobId, FileId};
use crate::repo::Repository;
use crate::sys;

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
    stats: CheckStats,
    damaged: HashSet<BlobId>,
    seen_trees: HashSet<BlobId>,
}

/// Check `repo`. Returns the counters; `errors > 0` means damage was found.
pub fn check(repo: &Repository, opts: CheckOptions, report: &dyn Report) -> Result<CheckStats> {
    let mut c =
        Checker { repo, report, stats: CheckStats::default(), damaged: HashSet::new(), seen_trees: HashSet::new() };
    for p in repo.problems() {
        c.error(p);
    }
    c.files()?;
    let pack_sizes = c.packs(opts.read_data)?;
    c.index(&pack_sizes)?;
    c.snapshots()?;
    Ok(c.stats)
}

impl Checker<'_> {
    fn error(&mut self, msg: impl std::fmt::Display) {
        self.stats.errors += 1;
        self.report.error(&msg.to_string());
    }

    /// Names match contents; key files decode.
    fn files(&mut self) -> Result<()> {
        let b = self.repo.backend();
        for dir in [Dir::Keys, Dir::Index, Dir::Snapshots] {
            for id in b.list(dir)? {
                let path = b.path(dir, &id);
                match b.read(&path) {
                    Ok(bytes) => {
                        if FileId::of(&bytes) != id {
                            self.error(format!("{}: content does not match its name (damaged)", path.display()));
                        } else if dir == Dir::Keys {
                            if let Err(e) = KeyFile::decode(&bytes, &id) {
                                self.error(e);
                            }
                        }
                    }
                    Err(e) => self.error(e),
                }
            }
        }
        Ok(())
    }

    /// Every pack's header; with `read_data` every blob. Returns pack sizes (40 B per pack).
    fn packs(&mut self, read_data: bool) -> Result<HashMap<FileId, u64>> {
        let mut sizes = HashMap::new();
        let repo = self.repo;
        repo.backend().for_each_pack(|id, len| {
            sizes.insert(id, len);
            self.stats.packs += 1;
            if let Err(e) = self.pack(&id, len, read_data) {
                self.error(e);
            }
            Ok(())
        })?;
        Ok(sizes)
    }

    fn pack(&mut self, id: &FileId, len: u64, read_data: bool) -> Result<()> {
        let path = self.repo.pack_path(id);
        let bytes = std::fs::read(&path).map_err(|e| Error::Io { path: path.clone(), source: e })?;
        if read_data && FileId::of(&bytes) != *id {
            self.error(format!("pack {id}: content does not match its name (damaged)"));
        }
        let body = FileKind::Pack.check_header(&bytes, id)?;
        if body.len() < TRAILER_LEN {
            return Err(Error::corrupt("pack", id, "too short for a trailer"));
        }
        let hlen = u32::from_le_bytes(body[body.len() - TRAILER_LEN..].try_into().expect("4 bytes")) as usize;
        let blobs_len = (body.len() - TRAILER_LEN).checked_sub(hlen).ok_or_else(|| {
            Error::corrupt("pack", id, format!("header length {hlen} exceeds the file ({len} bytes)"))
        })?;
        let sealed = &body[blobs_len..body.len() - TRAILER_LEN];
        let header = self.repo.keys().open(&FileKind::Pack.header(), sealed, "pack header", id)?;
        let blobs = decode_header(&header, id, blobs_len as u64)?;
        for (b, off) in blobs {
            let in_index = self.repo.index().get(&b.id);
            match in_index {
                None => self
                    .report
                    .note(&format!("pack {id}: blob {} is not in any index (left by an interrupted backup)", b.id)),
                Some(loc) if loc.pack == *id && (loc.offset as u64 != off || loc.stored_len != b.stored_len) => {
                    self.error(format!("pack {id}: blob {} is at offset {off}, the index says {}", b.id, loc.offset))
                }
                _ => {}
            }
            if read_data {
                let start = off as usize;
                let sealed = &bytes[start..start + b.stored_len as usize];
                let loc = crate::format::index::Location {
                    pack: *id,
                    offset: off as u32,
                    stored_len: b.stored_len,
                    raw_len: b.raw_len,
                    kind: b.kind,
                    compression: b.compression,
                };
                self.stats.blobs_read += 1;
                if let Err(e) = self.repo.open_blob(&b.id, &loc, sealed) {
                    self.damaged.insert(b.id);
                    self.error(e);
                }
            }
        }
        Ok(())
    }

    /// Every index entry points into an existing pack.
    fn index(&mut self, pack_sizes: &HashMap<FileId, u64>) -> Result<()> {
        let mut referenced: HashSet<FileId> = HashSet::new();
        for ix in self.repo.backend().list(Dir::Index)? {
            let entries: Vec<IndexEntry> = match self.repo.read_index_file(&ix) {
                Ok(e) => e,
                Err(e) => {
                    self.error(e);
                    continue;
                }
            };
            for e in entries {
                self.stats.index_entries += 1;
                referenced.insert(e.loc.pack);
                match pack_sizes.get(&e.loc.pack) {
                    None => {
                        self.error(format!("index {ix}: blob {} is in pack {}, which does not exist", e.id, e.loc.pack))
                    }
                    Some(&size) if e.loc.offset as u64 + e.loc.stored_len as u64 > size => self.error(format!(
                        "index {ix}: blob {} lies past the end of pack {} ({size} bytes)",
                        e.id, e.loc.pack
                    )),
                    _ => {}
                }
            }
        }
        for p in pack_sizes.keys().filter(|p| !referenced.contains(p)) {
            self.report.note(&format!("pack {p} is not referenced by any index (left by an interrupted backup)"));
        }
        Ok(())
    }

    fn snapshots(&mut self) -> Result<()> {
        for id in self.repo.backend().list(Dir::Snapshots)? {
            self.stats.snapshots += 1;
            match self.repo.load_snapshot(&id) {
                Ok(s) => self.dir(&s.root, Path::new("/"), &id),
                Err(e) => self.error(e),
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
            Some(_) => {
                if self.damaged.contains(id) {
                    self.error(format!(
                        "snapshot {}: {}: {} {id} is damaged",
                        snap.short(),
                        path.display(),
                        kind.name()
                    ));
                }
                true
            }
        }
    }

    /// Walk a tree node (directory or chunk list), once per distinct node.
    fn node(&mut self, id: &BlobId, path: &Path, snap: &FileId) -> Option<Node> {
        if !self.seen_trees.insert(*id) {
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

    fn dir(&mut self, id: &BlobId, path: &Path, snap: &FileId) {
        match self.node(id, path, snap) {
            Some(Node::DirLeaf(entries)) => {
                for e in entries {
                    let p: PathBuf = path.join(sys::os(&e.name));
                    match &e.kind {
                        Kind::Dir(sub) => self.dir(sub, &p, snap),
                        Kind::File(Content::Inline(cs)) => {
                            for c in cs {
                                self.blob(&c.id, BlobKind::Data, &p, snap);
                            }
                        }
                        Kind::File(Content::List(root)) => self.list(root, &p, snap),
                        _ => {}
                    }
                }
            }
            Some(Node::DirInterior(children)) => {
                for c in children {
                    self.dir(&c.id, path, snap);
                }
            }
            Some(_) => self.error(format!(
                "snapshot {}: {}: tree {id} is a chunk list, expected a directory",
                snap.short(),
                path.display()
            )),
            None => {}
        }
    }

    fn list(&mut self, id: &BlobId, path: &Path, snap: &FileId) {
        match self.node(id, path, snap) {
            Some(Node::ListLeaf(cs)) => {
                for c in cs {
                    self.blob(&c.id, BlobKind::Data, path, snap);
                }
            }
            Some(Node::ListInterior(children)) => {
                for c in children {
                    self.list(&c.id, path, snap);
                }
            }
            Some(_) => self.error(format!(
                "snapshot {}: {}: tree {id} is a directory, expected a chunk list",
                snap.short(),
                path.display()
            )),
            None => {}
        }
    }
}
