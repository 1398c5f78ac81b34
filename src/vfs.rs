//! A read-only view of a repository as a filesystem, independent of FUSE: inodes, lookup,
//! attributes, directory listings by offset, reads at an offset. `mount` only translates
//! fuser's calls into these; the tests call them directly, without a kernel.
//!
//! ```text
//! /snapshots/<time>[-<short id>]/...   every snapshot's tree (time as 2026-11-22T04:05:06)
//! /latest -> snapshots/<newest>
//! /hosts/<host>/<name> -> ../../snapshots/<name>
//! /tags/<tag>/<name>   -> ../../snapshots/<name>
//! /ids/<short id>      -> ../snapshots/<name>
//! /versions/<host>/...  the union of the host's snapshots; each regular file a
//!                       directory of its versions, named by snapshot time
//! ```
//!
//! The view is one struct, [`Vfs`], whose methods live by concern: `layout` (the
//! virtual directories above the snapshots' trees), `inodes` (numbering and the node
//! cache), `listing` (directory listings), `read` (file reads, holes, SEEK_DATA),
//! `ahead` (small files loaded ahead of a copier), `versions` (`versions/`, directories
//! merged across snapshots), `chunks` (the prefetch threads; the chunk cache and its
//! buffer pool are `repo`'s, shared with restore). This file holds the types, lookups and attributes.
//!
//! Memory (docs/design.md, "Mount"):
//! - the snapshot list: ~200 B per snapshot, as for `snapshots`, and the virtual
//!   directories built from it: ~150 B per row, a few rows per snapshot;
//! - inodes: numbers derived from (directory, position), ~80 B per directory given
//!   numbers and per hard-linked file met; decoded nodes in an LRU of `node_cache_bytes`
//!   (a sixteenth of the budget), found again from their directory when evicted;
//! - open directories and files: one tree node per level of their listing or chunk list;
//!   a listing of `versions/` one per level and one entry per distinct tree merged (at
//!   most one per snapshot of the host), and one more such merge kept for finding that
//!   directory's entries again;
//! - decrypted chunks: an LRU charged by the bytes it holds ([`ChunkCache`]), and a pool
//!   of reusable buffers of a quarter of that;
//! - read-ahead state: the 64 directories being read through and the 16 processes
//!   reading files (a few dozen bytes each).

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::Error;
use crate::format::snapshot::XattrClasses;
use crate::format::tree::{ChunkRef, Content, Entry, Kind, Time};
use crate::id::{BlobId, FileId};
use crate::repo::Repository;
use crate::tree::{ChunkIter, DirIter};

mod ahead;
mod chunks;
mod inodes;
mod layout;
mod listing;
mod read;
mod versions;

use crate::repo::ByteLru;
pub use crate::repo::{ChunkCache, Pool};
use ahead::READERS;
pub use chunks::Sink;
use chunks::{Job, Prefetcher};
use inodes::Inodes;
use layout::{Layout, Snap};
pub use listing::ReaddirFn;
use listing::{DirCursor, LISTINGS};
pub use read::ReadData;
use read::{FileHandle, DATA_BYTES, OPEN_FILES};
use versions::{Merge, Merged, Span, Versions};

/// The root directory's inode.
pub const ROOT: u64 = 1;

/// Why a call to the view failed: one of its own answers, each the errno a filesystem
/// gives, or damage to the repository (a blob or pack missing or not authentic), which
/// the FUSE layer logs and answers EIO for that call alone.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// No such name in a directory, or no such inode (ENOENT).
    #[error("no such entry")]
    NoEntry,
    /// A directory operation on something else (ENOTDIR).
    #[error("not a directory")]
    NotDir,
    /// A file read of something else (EISDIR).
    #[error("not a regular file")]
    NotFile,
    /// READLINK of something else (EINVAL).
    #[error("not a symlink")]
    NotLink,
    /// The repository could not give what the call needs.
    #[error(transparent)]
    Repo(#[from] Error),
}

/// The view's results (its constructor, [`Vfs::new`], fails with the repository's own).
pub type Result<T> = std::result::Result<T, ViewError>;

/// File types as the view reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileKind {
    /// Directory.
    Dir,
    /// Regular file.
    File,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// Unix socket.
    Socket,
}

/// Attributes of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Bytes allocated: for a file, the bytes of its chunks that are not all zeros (holes
    /// to `cp`, `tar` and `du`, as on the source); for anything else its size.
    pub allocated: u64,
    /// Type.
    pub kind: FileKind,
    /// Permission bits (st_mode & 0o7777).
    pub perm: u16,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number (devices only).
    pub rdev: u32,
    /// Access time.
    pub atime: SystemTime,
    /// Modification time.
    pub mtime: SystemTime,
    /// Status change time.
    pub ctime: SystemTime,
}

/// What an inode is.
#[derive(Clone, Debug)]
enum Node {
    /// A directory of the virtual layout: its index in the [`Layout`].
    Virtual(u32),
    /// A symlink of the virtual layout, with its target.
    Link(Vec<u8>),
    /// Something inside snapshot `snap` (its root directory included).
    Entry { snap: u32, entry: Arc<Entry> },
    /// A directory of `versions/HOST/`: one path merged across the host's snapshots.
    Merged(Arc<Merged>),
    /// A regular file of `versions/HOST/`, shown as a directory of its versions.
    Versions(Arc<Versions>),
}

/// The filesystem view.
pub struct Vfs {
    repo: Arc<Repository>,
    snaps: Vec<Snap>,
    /// The virtual directories, built from `snaps`.
    layout: Layout,
    inodes: Mutex<Inodes>,
    /// The merge of the last `versions/` directory whose entries were found again by
    /// position, where it stands ([`Vfs::refind`]): one compact iterator per tree.
    refind: Mutex<Option<(Arc<Merged>, Merge)>>,
    /// Listings under way, by directory and the offset their next call starts at; taken
    /// out while a call lists, so listings (and their tree reads) run in parallel. Each
    /// holds one tree node per level ([`LISTINGS`] at most).
    listings: Mutex<lru::LruCache<(u64, u64), DirCursor>>,
    /// Read state by inode, for the most recently read files.
    files: Mutex<lru::LruCache<u64, Arc<Mutex<FileHandle>>>>,
    chunks: Arc<ChunkCache>,
    prefetch: Prefetcher,
    /// Where small files loaded ahead of a reader go (see [`Vfs::sink_handle`]).
    sink: Arc<std::sync::OnceLock<Sink>>,
    /// Per directory being read through: the position up to which its files were handed
    /// to the prefetcher (the 64 most recent directories).
    siblings: Mutex<lru::LruCache<u64, u64>>,
    /// Processes that read files recently, with when they last started one.
    readers: Mutex<lru::LruCache<u32, std::time::Instant>>,
    /// Bytes read ahead of a sequential reader: a quarter of the cache, at most 32 MiB.
    window: u64,
    /// Owner of the virtual directories (the mounting user).
    owner: (u32, u32),
    /// The classes of extended attributes any snapshot may hold.
    xattr_classes: XattrClasses,
    /// Every extended attribute name any snapshot holds, where all of them list theirs
    /// (at most [`XATTR_NAMES`], ~60 B each).
    xattr_names: Option<std::collections::BTreeSet<Vec<u8>>>,
    /// Data bytes of files with out-of-line chunk lists, by list root
    /// ([`crate::tree::data_bytes`] reads their nodes): 48 B each, [`DATA_BYTES`] lists.
    data_bytes: Mutex<lru::LruCache<BlobId, u64>>,
    /// Zeros that reads of all-zero chunks are answered from, never loaded: as long as
    /// the longest such read so far (at most a chunk).
    zeros: Mutex<Arc<Vec<u8>>>,
}

/// Most xattr names the view keeps; past that it answers by their classes alone.
const XATTR_NAMES: usize = 1024;

/// Threads loading chunks ahead of sequential readers.
const PREFETCH_THREADS: usize = 2;

/// How long the kernel may cache attributes and names: snapshots never change.
pub const TTL: Duration = Duration::from_secs(365 * 24 * 3600);

fn systime(t: &Time) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(t.nsec as u64)
    }
}

/// The type of `node`, without its attributes.
fn kind_of(node: &Node) -> FileKind {
    match node {
        Node::Link(_) => FileKind::Symlink,
        Node::Entry { entry, .. } => match &entry.kind {
            Kind::File(_) => FileKind::File,
            Kind::Dir(_) => FileKind::Dir,
            Kind::Symlink(_) => FileKind::Symlink,
            Kind::Fifo => FileKind::Fifo,
            Kind::CharDev(_) => FileKind::CharDev,
            Kind::BlockDev(_) => FileKind::BlockDev,
            Kind::Socket => FileKind::Socket,
        },
        _ => FileKind::Dir,
    }
}

impl Vfs {
    /// A view of `repo` with a chunk cache of `cache_bytes` and a node cache of
    /// `node_cache_bytes`. Dropping it stops its prefetch threads, so the repository is
    /// released (and a private index cache removed) when the last holder drops it.
    pub fn new(
        repo: Arc<Repository>,
        cache_bytes: usize,
        node_cache_bytes: usize,
        owner: (u32, u32),
    ) -> crate::error::Result<Vfs> {
        let list = repo.snapshots()?;
        let mut snaps: Vec<Snap> = Vec::with_capacity(list.len());
        let mut xattr_classes = XattrClasses::NONE;
        let mut xattr_names = Some(std::collections::BTreeSet::new());
        for (id, s) in list {
            xattr_classes = xattr_classes.union(s.xattrs.unwrap_or(XattrClasses::ALL));
            xattr_names = match (xattr_names, s.xattr_names) {
                (Some(mut all), Some(names)) if all.len() + names.len() <= XATTR_NAMES => {
                    all.extend(names);
                    Some(all)
                }
                _ => None,
            };
            let secs = s.time_ns.div_euclid(1_000_000_000);
            let time = systime(&Time { sec: secs, nsec: s.time_ns.rem_euclid(1_000_000_000) as u32 });
            let name = chrono::DateTime::from_timestamp(secs, 0)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
                .unwrap_or_else(|| format!("{secs}"));
            snaps.push(Snap { id, name, time, host: s.host, tags: s.tags, root: s.root });
        }
        // Times that collide (two snapshots in one second) get the short id appended.
        let mut count: HashMap<String, usize> = HashMap::new();
        for s in &snaps {
            *count.entry(s.name.clone()).or_default() += 1;
        }
        for s in &mut snaps {
            if count[&s.name] > 1 {
                s.name = format!("{}-{}", s.name, s.id.short());
            }
        }
        let chunks = Arc::new(ChunkCache::new(cache_bytes));
        let sink = Arc::new(std::sync::OnceLock::new());
        let window = (cache_bytes as u64 / 2).min(32 << 20);
        // As restore reads: a remote repository with a request in flight per connection
        // (a thread each), a local one with a thread per core. The window is handed over
        // half at a time, in runs small enough that every thread has one.
        let (spacing, connections) = repo.read_plan();
        let threads = PREFETCH_THREADS.max(connections);
        let most = (window / 2 / threads as u64).max(1 << 20);
        let spacing = crate::repo::Spacing { max: spacing.max.min(most), ..spacing };
        Ok(Vfs {
            prefetch: Prefetcher::start(repo.clone(), chunks.clone(), sink.clone(), threads, spacing),
            sink,
            window,
            repo,
            layout: Layout::build(&snaps),
            snaps,
            inodes: Mutex::new(Inodes {
                next: ROOT + 1,
                blocks: Vec::new(),
                bases: HashMap::new(),
                links: HashMap::new(),
                nodes: ByteLru::new(node_cache_bytes),
            }),
            refind: Mutex::new(None),
            listings: Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(LISTINGS).expect("non-zero"))),
            files: Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(OPEN_FILES).expect("non-zero"))),
            chunks,
            siblings: Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(64).expect("non-zero"))),
            readers: Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(READERS).expect("non-zero"))),
            owner,
            xattr_classes,
            xattr_names,
            data_bytes: Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(DATA_BYTES).expect("non-zero"))),
            zeros: Mutex::new(Arc::new(Vec::new())),
        })
    }

    /// Where whole small files loaded ahead of a reader (the next ones in a directory
    /// being read through) go, by inode, besides their chunks into the cache: set it once
    /// (the mount does after mounting, passing them to the kernel's page cache, so that
    /// reading them needs no request at all).
    pub fn sink_handle(&self) -> Arc<std::sync::OnceLock<Sink>> {
        self.sink.clone()
    }

    /// The chunk cache (for reports and tests).
    pub fn chunk_cache(&self) -> &ChunkCache {
        &self.chunks
    }

    /// Look `name` up in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        let p = self.node(parent)?;
        let (pos, node) = self.child_indexed(&p, name)?;
        let base = self.base(parent, &p)?;
        let ino = self.ino_of(base, pos, &node);
        Ok(self.attr_of(ino, &node))
    }

    /// The kernel forgot an inode: nothing to do, inode numbers are derived (the node
    /// cache forgets by itself).
    pub fn forget(&self, _ino: u64, _n: u64) {}

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let n = self.node(ino)?;
        Ok(self.attr_of(ino, &n))
    }

    fn attr_of(&self, ino: u64, node: &Node) -> Attr {
        let newest = self.snaps.last().map_or(UNIX_EPOCH, |s| s.time);
        let virt = |kind: FileKind, size: u64| Attr {
            ino,
            size,
            allocated: size,
            kind,
            perm: if kind == FileKind::Symlink { 0o777 } else { 0o555 },
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            uid: self.owner.0,
            gid: self.owner.1,
            rdev: 0,
            atime: newest,
            mtime: newest,
            ctime: newest,
        };
        match node {
            Node::Virtual(_) => virt(FileKind::Dir, 0),
            Node::Link(target) => virt(FileKind::Symlink, target.len() as u64),
            Node::Merged(m) => match &m.entry {
                Some(e) => self.attr_of(ino, &Node::Entry { snap: 0, entry: e.clone() }),
                None => virt(FileKind::Dir, 0),
            },
            Node::Versions(v) => match v.newest() {
                // A file's versions: a directory as readable as the file, with the
                // newest version's owner and times.
                Some(e) => {
                    let file = self.attr_of(ino, &Node::Entry { snap: 0, entry: e.clone() });
                    let perm = file.perm | (file.perm & 0o444) >> 2;
                    Attr { size: 0, allocated: 0, kind: FileKind::Dir, perm, nlink: 2, ..file }
                }
                None => virt(FileKind::Dir, 0),
            },
            Node::Entry { entry: e, .. } => {
                let kind = kind_of(node);
                let (size, rdev) = match &e.kind {
                    Kind::File(_) => (e.size, 0),
                    Kind::Symlink(t) => (t.len() as u64, 0),
                    Kind::CharDev(d) | Kind::BlockDev(d) => (0, *d as u32),
                    _ => (0, 0),
                };
                // Directories report 2 links (their subdirectory count is not stored);
                // files their source link count, so hard links show as such.
                let nlink = if kind == FileKind::Dir { 2 } else { e.nlink.max(1) };
                let allocated = match &e.kind {
                    Kind::File(c) => self.data_bytes(c, size),
                    _ => size,
                };
                Attr {
                    ino,
                    size,
                    allocated,
                    kind,
                    perm: (e.mode & 0o7777) as u16,
                    nlink,
                    uid: e.uid,
                    gid: e.gid,
                    rdev,
                    atime: systime(&e.atime),
                    mtime: systime(&e.mtime),
                    ctime: systime(&e.ctime),
                }
            }
        }
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match self.node(ino)? {
            Node::Link(t) => Ok(t),
            Node::Entry { entry, .. } => match &entry.kind {
                Kind::Symlink(t) => Ok(t.clone()),
                _ => Err(ViewError::NotLink),
            },
            _ => Err(ViewError::NotLink),
        }
    }

    /// Whether any snapshot may hold extended attribute `name`: by the names the
    /// snapshots list (version 3), else by its class (a version-1 snapshot does not
    /// say, so it may hold any). If not, `name` is absent from every inode, known without
    /// looking at one.
    pub fn may_have_xattr(&self, name: &[u8]) -> bool {
        match &self.xattr_names {
            Some(names) => names.contains(name),
            None => self.xattr_classes.contains(XattrClasses::of(name)),
        }
    }

    /// Whether any snapshot may hold extended attributes at all.
    pub fn has_xattrs(&self) -> bool {
        !self.xattr_classes.is_empty()
    }

    /// Extended attributes of `ino` (name, value).
    pub fn xattrs(&self, ino: u64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match self.node(ino)? {
            Node::Entry { entry, .. } => Ok(entry.xattrs.clone()),
            Node::Merged(m) => Ok(m.entry.as_ref().map_or_else(Vec::new, |e| e.xattrs.clone())),
            _ => Ok(Vec::new()),
        }
    }
}
