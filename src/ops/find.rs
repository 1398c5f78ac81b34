//! `find`: which snapshots hold paths matching patterns (or a given blob or tree), and
//! where.
//!
//! Each snapshot's tree is walked with the one snapshot walker ([`Walk`]). Snapshots
//! share most of their directories, so a directory that held no match is remembered
//! by its tree id and path (an LRU in `no_match_bytes`, ~96 B each): met again in a
//! later snapshot at the same place, it is skipped unread. The patterns may depend on
//! the path (anchored ones), the tree id and the modification-time bounds do not
//! change between snapshots, so what held no match there holds none here.
//!
//! Memory: per directory level being walked, one iterator (one tree node per node
//! level) and its path; the LRU; nothing per snapshot or per file.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Content, Entry, Kind};
use crate::id::BlobId;
use crate::pattern::Patterns;
use crate::repo::Repository;
use crate::sys;
use crate::tree::{ChunkIter, Step, Walk};

/// What to look for.
#[derive(Clone, Debug)]
pub enum Query {
    /// Entries whose path the patterns select, each by itself
    /// ([`Patterns::matches_whole`]).
    Paths(Patterns),
    /// Files holding any of these data blobs.
    Blobs(Vec<BlobId>),
    /// Directories whose tree is one of these (or files whose chunk list is).
    Trees(Vec<BlobId>),
}

/// Options of a search.
#[derive(Clone, Debug)]
pub struct FindOptions {
    /// What to look for.
    pub query: Query,
    /// Only entries modified at or after this time (Unix seconds).
    pub oldest: Option<i64>,
    /// Only entries modified at or before this time (Unix seconds).
    pub newest: Option<i64>,
    /// Bytes for the directories without a match remembered across snapshots
    /// ([`crate::budget::LRU_ENTRY_BYTES`] each).
    pub no_match_bytes: usize,
}

/// What a search went through.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct FindStats {
    /// Snapshots searched.
    pub snapshots: u64,
    /// Entries that matched.
    pub matches: u64,
    /// Directories read.
    pub dirs_read: u64,
    /// Directories skipped: they held no match in an earlier snapshot.
    pub dirs_skipped: u64,
    /// Directories that could not be read (damage, reported to the sink as errors).
    pub errors: u64,
}

/// Searches snapshot after snapshot, remembering where nothing was found.
pub struct Finder<'r> {
    repo: &'r Repository,
    opts: FindOptions,
    /// (tree id, hash of its path) of directories that held no match.
    barren: lru::LruCache<(BlobId, u64), ()>,
    /// Running totals.
    pub stats: FindStats,
}

/// One level of the walk: the directory's path and tree, and whether anything in it
/// matched (then it is not remembered as barren, nor are its parents).
struct Level {
    path: PathBuf,
    tree: BlobId,
    hit: bool,
}

fn place(tree: &BlobId, path: &Path) -> (BlobId, u64) {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    (*tree, h.finish())
}

impl<'r> Finder<'r> {
    /// A finder for `opts`.
    pub fn new(repo: &'r Repository, opts: FindOptions) -> Finder<'r> {
        let barren = crate::budget::lru_within(opts.no_match_bytes);
        Finder { repo, opts, barren, stats: FindStats::default() }
    }

    /// Search snapshot `snap`; each match goes to `hit` with its path, damage to
    /// `damaged`.
    pub fn search(
        &mut self,
        snap: &Snapshot,
        cancel: &AtomicBool,
        hit: &mut dyn FnMut(&Path, &Entry) -> Result<()>,
        damaged: &mut dyn FnMut(&Path, &Error),
    ) -> Result<()> {
        self.stats.snapshots += 1;
        let root = PathBuf::from("/");
        if self.barren.get(&place(&snap.root, &root)).is_some() {
            self.stats.dirs_skipped += 1;
            return Ok(());
        }
        self.stats.dirs_read += 1;
        let mut walk = Walk::new(self.repo, &snap.root, Level { path: root, tree: snap.root, hit: false });
        while let Some(step) = walk.next() {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            match step {
                Step::Entry(e) => {
                    let Some(level) = walk.top() else { continue };
                    let path = level.path.join(sys::os(&e.name));
                    match self.matches(&path, &e) {
                        Ok(true) => {
                            level.hit = true;
                            self.stats.matches += 1;
                            hit(&path, &e)?;
                        }
                        Ok(false) => {}
                        // A damaged chunk list (--blob): reported, and the directory
                        // is never remembered as holding no match.
                        Err(err) => {
                            level.hit = true;
                            self.stats.errors += 1;
                            damaged(&path, &err);
                        }
                    }
                    if let Kind::Dir(sub) = &e.kind {
                        if self.barren.get(&place(sub, &path)).is_some() {
                            self.stats.dirs_skipped += 1;
                        } else {
                            self.stats.dirs_read += 1;
                            walk.enter(sub, Level { path, tree: *sub, hit: false });
                        }
                    }
                }
                Step::Leave(level) => {
                    if level.hit {
                        if let Some(parent) = walk.top() {
                            parent.hit = true;
                        }
                    } else {
                        self.barren.put(place(&level.tree, &level.path), ());
                    }
                }
                Step::Failed(level, err) => {
                    self.stats.errors += 1;
                    damaged(&level.path, &err);
                    // Never remembered as barren: it was not read to its end.
                    if let Some(parent) = walk.top() {
                        parent.hit = true;
                    }
                }
                Step::Skipped(..) => {}
            }
        }
        Ok(())
    }

    fn matches(&self, path: &Path, e: &Entry) -> Result<bool> {
        if self.opts.oldest.is_some_and(|t| e.mtime.sec < t) || self.opts.newest.is_some_and(|t| e.mtime.sec > t) {
            return Ok(false);
        }
        Ok(match (&self.opts.query, &e.kind) {
            (Query::Paths(p), _) => p.matches_whole(path),
            (Query::Trees(ids), Kind::Dir(id)) | (Query::Trees(ids), Kind::File(Content::List(id))) => ids.contains(id),
            (Query::Blobs(ids), Kind::File(c)) => {
                let mut chunks = ChunkIter::new(self.repo, c)?;
                let mut found = false;
                while let Some(c) = chunks.next_chunk()? {
                    if ids.contains(&c.id) {
                        found = true;
                        break;
                    }
                }
                found
            }
            _ => false,
        })
    }
}
