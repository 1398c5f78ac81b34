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
//! ```
//!
//! Memory (docs/design.md, "Mount"):
//! - the snapshot list: ~200 B per snapshot, as for `snapshots`;
//! - inodes: numbers derived from (directory, position), ~80 B per directory given
//!   numbers and per hard-linked file met; decoded nodes in an LRU of `node_cache_bytes`
//!   (a sixteenth of the budget), found again from their directory when evicted;
//! - open directories and files: one tree node per level of their listing or chunk list;
//! - decrypted chunks: an LRU charged by the bytes it holds ([`ChunkCache`]), and a pool
//!   of reusable buffers of a quarter of that;
//! - read-ahead state: the 64 directories being read through and the 16 processes
//!   reading files (a few dozen bytes each).

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::format::snapshot::XattrClasses;
use crate::format::tree::{ChunkRef, Content, Entry, Kind, Time};
use crate::id::{BlobId, FileId};
use crate::repo::Repository;
use crate::tree::{ChunkIter, DirIter};

mod chunks;

use chunks::{load_chunk, ByteLru, Job, Prefetcher};
pub use chunks::{ChunkCache, Pool, Sink};

/// The root directory's inode.
pub const ROOT: u64 = 1;

/// What the view's own "no such name or inode" errors name ([`Error::NotFound`]); any
/// other missing thing (a blob, a pack) is damage to the repository.
pub const NO_ENTRY: &str = "path";
/// Messages of the view's own errors (the FUSE layer maps each to its errno).
pub const NOT_DIR: &str = "not a directory";
/// See [`NOT_DIR`].
pub const NOT_FILE: &str = "not a regular file";
/// See [`NOT_DIR`].
pub const NOT_LINK: &str = "not a symlink";

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
    Root,
    Snapshots,
    Hosts,
    Tags,
    Ids,
    Host(String),
    Tag(String),
    /// A symlink of the virtual layout, with its target.
    Link(Vec<u8>),
    /// Something inside snapshot `snap` (its root directory included).
    Entry {
        snap: u32,
        entry: Arc<Entry>,
    },
}

/// Inode numbers are derived, not remembered per inode: the first time a directory's
/// children need numbers, it gets a block of consecutive ones, one per entry in name
/// order (snapshots never change, so positions are stable). An inode number is then
/// (directory, position), and its node can always be found again from the directory's
/// tree; only a byte-budgeted LRU of nodes stays in RAM. Memory: per directory given a
/// block, ~80 B (its [`Block`] and its entry in `bases`), so it grows with the
/// directories visited, not the files; per hard-linked file visited (source nlink > 1),
/// ~80 B in `links` (every link must show the first link's inode).
struct Inodes {
    /// The next inode number to hand out.
    next: u64,
    /// Blocks by first inode number (ascending: blocks are handed out in order).
    blocks: Vec<Block>,
    /// First inode number of each directory's block.
    bases: HashMap<u64, u64>,
    /// Hard-linked files: (snapshot, source device, source inode) -> inode shown.
    links: HashMap<(u32, u64, u64), u64>,
    /// Recently used nodes, charged as estimated by [`node_bytes`].
    nodes: ByteLru<u64, Node>,
}

/// Inode numbers `base..base + len` are the entries of directory `dir`, in name order.
struct Block {
    base: u64,
    len: u64,
    dir: u64,
}

/// What a cached node costs, roughly: the enum, the entry and what it points to.
fn node_bytes(n: &Node) -> usize {
    match n {
        Node::Entry { entry: e, .. } => {
            let kind = match &e.kind {
                Kind::File(Content::Inline(cs)) => cs.len() * std::mem::size_of::<ChunkRef>(),
                Kind::Symlink(t) => t.len(),
                _ => 0,
            };
            let xattrs: usize = e.xattrs.iter().map(|(k, v)| k.len() + v.len() + 48).sum();
            256 + e.name.len() + e.user.len() + e.group.len() + kind + xattrs
        }
        Node::Host(h) | Node::Tag(h) => 96 + h.len(),
        Node::Link(t) => 96 + t.len(),
        _ => 96,
    }
}

impl Inodes {
    /// The block holding `ino`: (directory, position).
    fn locate(&self, ino: u64) -> Option<(u64, u64)> {
        let i = self.blocks.partition_point(|b| b.base <= ino);
        let b = self.blocks.get(i.checked_sub(1)?)?;
        (ino - b.base < b.len).then(|| (b.dir, ino - b.base))
    }

    fn remember(&mut self, ino: u64, node: &Node) {
        self.nodes.put(ino, node.clone(), node_bytes(node), &mut drop);
    }
}

struct Snap {
    id: FileId,
    name: String,
    time: SystemTime,
    host: String,
    tags: Vec<String>,
    root: BlobId,
}

/// A directory being listed: a position in its listing, kept between the calls of one
/// listing (the kernel sends no OPENDIR: see [`Vfs::readdir`]).
struct DirCursor {
    /// Offset of the next entry `iter` yields: "." is at 0, ".." at 1, entry `i` (name
    /// order) at `i + 2`; an entry's "next offset" is its own plus one, so the entry
    /// handed out with next offset `n` is at position `n - 3` (as for virtual directories).
    next: u64,
    iter: Option<DirIter<Arc<Repository>>>,
    /// An entry taken from `iter` that did not fit the caller's buffer: it comes first
    /// next time.
    pending: Option<Arc<Entry>>,
}

/// A file being read: where the last read ended, to continue sequential reads and prefetch.
struct FileHandle {
    content: Content,
    size: u64,
    cursor: Option<Cursor>,
}

/// A position in a file's chunk list (memory: one list node per level, plus the
/// prefetch window's chunk references, 36 B each).
struct Cursor {
    /// File offset where `ahead[0]` starts.
    start: u64,
    /// The chunk at `start` and the ones after it already taken from `iter`.
    ahead: VecDeque<ChunkRef>,
    /// The rest of the list.
    iter: ChunkIter<Arc<Repository>>,
    /// File offset up to which chunks were handed to the prefetcher.
    fetched: u64,
    /// Where the last read ended: a read starting there is sequential.
    last_end: u64,
}

/// Receives [`Vfs::readdir`]'s entries: name, type, inode number, next offset; returns
/// false when the caller's buffer is full.
pub type ReaddirFn<'a> = &'a mut dyn FnMut(&[u8], FileKind, u64, u64) -> bool;

/// Receives a listing's entries: name, node (`None` for "." and ".."), next offset;
/// returns false when the caller's buffer is full.
type ListFn<'a> = &'a mut dyn FnMut(&[u8], Option<&Node>, u64) -> bool;

/// Most chunk references a cursor holds ahead of its reader (36 B each): the window in
/// bytes bounds them for chunks of the chunker's sizes, this for lists of tiny ones.
const AHEAD_CHUNKS: usize = 4096;

/// A read this far past the cursor seeks through the list nodes instead of walking.
const WALK_LIMIT: u64 = 16 << 20;

/// The filesystem view.
pub struct Vfs {
    repo: Arc<Repository>,
    snaps: Vec<Snap>,
    inodes: Mutex<Inodes>,
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

/// Listings kept between calls: a listing abandoned halfway (no RELEASEDIR says so) is
/// dropped once this many others ran since; one taken up again after that starts over
/// from its offset (one node read per level).
const LISTINGS: usize = 16;

/// Files with chunk-list trees whose data bytes are remembered.
const DATA_BYTES: usize = 4096;

/// Files loaded ahead of a reader going through a directory, per request.
const SIBLINGS: u64 = 32;

/// Processes remembered as reading files (see [`Vfs::note_reader`]).
const READERS: usize = 16;

/// How long a process counts as reading files after its last first read of one.
const READER_TTL: Duration = Duration::from_secs(2);

/// Files whose read cursors are kept (each one list node per level and the prefetch
/// window's chunk references).
const OPEN_FILES: usize = 64;

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

/// The directory name a host or tag is shown under, one-to-one: `%`, `/` and NUL are
/// always written `%25`, `%2F` and `%00` (so a tag `a%2Fb` shows as `a%252Fb`, never
/// as the tag `a/b`), and the names no file may have, "", "." and "..", as `%`, `%2E`
/// and `%2E%2E` (a lone `%`, or `%2E` alone, cannot come from escaping anything else).
/// The kernel fails a whole listing over one invalid name, so a tag like `release/1.0`
/// would otherwise hide all. Names over 255 bytes once escaped end with `%~` and 8 hex
/// digits of a hash of the whole name, which keeps them apart too.
fn shown_name(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = match b {
        b"" => b"%".to_vec(),
        b"." => b"%2E".to_vec(),
        b".." => b"%2E%2E".to_vec(),
        _ => {
            let mut v = Vec::with_capacity(b.len() + 8);
            for &c in b {
                match c {
                    b'/' | b'%' | 0 => v.extend_from_slice(format!("%{c:02X}").as_bytes()),
                    _ => v.push(c),
                }
            }
            v
        }
    };
    if out.len() > 255 {
        let tag = format!("%~{}", &blake3::hash(b).to_hex()[..8]);
        // Cut at a character boundary of the escaped name, then the hash.
        let mut cut = 255 - tag.len();
        while cut > 0 && (out[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        out.truncate(cut);
        out.extend_from_slice(tag.as_bytes());
    }
    out
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

fn enoent() -> Error {
    Error::NotFound { what: NO_ENTRY, id: "no such entry".into() }
}

impl Vfs {
    /// A view of `repo` with a chunk cache of `cache_bytes` and a node cache of
    /// `node_cache_bytes`. Dropping it stops its prefetch threads, so the repository is
    /// released (and a private index cache removed) when the last holder drops it.
    pub fn new(repo: Arc<Repository>, cache_bytes: usize, node_cache_bytes: usize, owner: (u32, u32)) -> Result<Vfs> {
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
            snaps,
            inodes: Mutex::new(Inodes {
                next: ROOT + 1,
                blocks: Vec::new(),
                bases: HashMap::new(),
                links: HashMap::new(),
                nodes: ByteLru::new(node_cache_bytes),
            }),
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

    /// Bytes of cached nodes (for tests: it stays within its share).
    pub fn node_cache_bytes(&self) -> usize {
        self.inodes.lock().unwrap_or_else(|e| e.into_inner()).nodes.bytes
    }

    /// The node of inode `ino`: from the cache, or found again from its directory (whose
    /// node is found the same way, up to the root). Iterative: up to the nearest
    /// ancestor still cached, then down again, so that no depth of directories can
    /// overflow a thread's stack (16 B per level on the way).
    fn node(&self, ino: u64) -> Result<Node> {
        let mut down = Vec::new();
        let mut at = ino;
        let mut node = loop {
            if at == ROOT {
                break Node::Root;
            }
            let mut t = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = t.nodes.get(&at) {
                break n.clone();
            }
            let (dir, pos) = t.locate(at).ok_or_else(enoent)?;
            // A directory's block is handed out after the directory has its number, so
            // this only ends a loop that cannot happen.
            if dir >= at {
                return Err(enoent());
            }
            down.push((at, pos));
            at = dir;
        };
        while let Some((i, pos)) = down.pop() {
            node = self.nth_child(&node, pos)?.ok_or_else(enoent)?;
            self.inodes.lock().unwrap_or_else(|e| e.into_inner()).remember(i, &node);
        }
        Ok(node)
    }

    /// The entry at position `pos` (name order) of directory node `dir`.
    fn nth_child(&self, dir: &Node, pos: u64) -> Result<Option<Node>> {
        match dir {
            Node::Entry { snap, entry } => match &entry.kind {
                Kind::Dir(tree) => Ok(crate::tree::nth_entry(&self.repo, tree, pos)?
                    .map(|e| Node::Entry { snap: *snap, entry: Arc::new(e) })),
                _ => Err(Error::InvalidInput(NOT_DIR.into())),
            },
            Node::Link(_) => Err(Error::InvalidInput(NOT_DIR.into())),
            _ => {
                let names = self.virtual_names(dir);
                match usize::try_from(pos).ok().and_then(|i| names.get(i)) {
                    Some((name, _)) => self.child(dir, name).map(Some),
                    None => Ok(None),
                }
            }
        }
    }

    /// The first inode number of directory `ino`'s block, giving it one if it has none.
    fn base(&self, ino: u64, dir: &Node) -> Result<u64> {
        if let Some(b) = self.inodes.lock().unwrap_or_else(|e| e.into_inner()).bases.get(&ino) {
            return Ok(*b);
        }
        let (len, tree) = match dir {
            Node::Entry { entry, .. } => match &entry.kind {
                Kind::Dir(tree) => (crate::tree::dir_len(&self.repo, tree)?, Some(*tree)),
                _ => return Err(Error::InvalidInput(NOT_DIR.into())),
            },
            Node::Link(_) => return Err(Error::InvalidInput(NOT_DIR.into())),
            _ => (self.virtual_names(dir).len() as u64, None),
        };
        let mut t = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = t.bases.get(&ino) {
            return Ok(*b); // another thread gave it one meanwhile
        }
        let base = t.next;
        // Inode numbers stay below 2^63 (the kernel's offsets are signed): a directory
        // claiming more entries than that is damaged, and gets no numbers.
        t.next = match base.checked_add(len.max(1)).filter(|n| *n < 1 << 63) {
            Some(n) => n,
            None => {
                let id = tree.map(|t| t.to_string()).unwrap_or_default();
                return Err(Error::corrupt("tree", id, format!("directory claims {len} entries")));
            }
        };
        t.blocks.push(Block { base, len, dir: ino });
        t.bases.insert(ino, base);
        Ok(base)
    }

    /// The inode of the entry at position `pos` of directory `dir` (with block `base`),
    /// whose node is `node`; every link of a hard-linked file gets the first one's.
    fn ino_of(&self, base: u64, pos: u64, node: &Node) -> u64 {
        let ino = base + pos;
        let mut t = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
        let ino = match node {
            Node::Entry { snap, entry } if entry.nlink > 1 && matches!(entry.kind, Kind::File(_)) => {
                *t.links.entry((*snap, entry.dev, entry.ino)).or_insert(ino)
            }
            _ => ino,
        };
        t.remember(ino, node);
        ino
    }

    fn snap_root(&self, i: usize) -> Node {
        let s = &self.snaps[i];
        let t = s.time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let time = Time { sec: t.as_secs() as i64, nsec: t.subsec_nanos() };
        let entry = Entry {
            name: s.name.as_bytes().to_vec(),
            kind: Kind::Dir(s.root),
            mode: 0o755,
            uid: self.owner.0,
            gid: self.owner.1,
            user: Vec::new(),
            group: Vec::new(),
            size: 0,
            mtime: time,
            ctime: time,
            atime: time,
            dev: 0,
            ino: 0,
            nlink: 2,
            xattrs: Vec::new(),
        };
        Node::Entry { snap: i as u32, entry: Arc::new(entry) }
    }

    fn snap_index(&self, name: &[u8]) -> Option<usize> {
        self.snaps.iter().position(|s| s.name.as_bytes() == name)
    }

    /// The child `name` of virtual directory `parent` (tree directories go through
    /// [`Vfs::child_indexed`], which also gives the position).
    fn child(&self, parent: &Node, name: &[u8]) -> Result<Node> {
        let link_to = |s: &Snap, up: &str| Node::Link(format!("{up}snapshots/{}", s.name).into_bytes());
        match parent {
            Node::Root => match name {
                b"snapshots" => Ok(Node::Snapshots),
                b"hosts" => Ok(Node::Hosts),
                b"tags" => Ok(Node::Tags),
                b"ids" => Ok(Node::Ids),
                b"latest" => self.snaps.last().map(|s| link_to(s, "")).ok_or_else(enoent),
                _ => Err(enoent()),
            },
            Node::Snapshots => self.snap_index(name).map(|i| self.snap_root(i)).ok_or_else(enoent),
            Node::Hosts => self
                .snaps
                .iter()
                .find(|s| shown_name(&s.host) == name)
                .map(|s| Node::Host(s.host.clone()))
                .ok_or_else(enoent),
            Node::Tags => self
                .snaps
                .iter()
                .flat_map(|s| &s.tags)
                .find(|t| shown_name(t) == name)
                .map(|t| Node::Tag(t.clone()))
                .ok_or_else(enoent),
            Node::Ids => self
                .snaps
                .iter()
                .find(|s| s.id.short().as_bytes() == name)
                .map(|s| link_to(s, "../"))
                .ok_or_else(enoent),
            Node::Host(h) => self
                .snaps
                .iter()
                .find(|s| &s.host == h && s.name.as_bytes() == name)
                .map(|s| link_to(s, "../../"))
                .ok_or_else(enoent),
            Node::Tag(t) => self
                .snaps
                .iter()
                .find(|s| s.tags.contains(t) && s.name.as_bytes() == name)
                .map(|s| link_to(s, "../../"))
                .ok_or_else(enoent),
            Node::Entry { .. } | Node::Link(_) => Err(Error::InvalidInput(NOT_DIR.into())),
        }
    }

    /// Look `name` up in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        let p = self.node(parent)?;
        let (pos, node) = self.child_indexed(&p, name)?;
        let base = self.base(parent, &p)?;
        let ino = self.ino_of(base, pos, &node);
        Ok(self.attr_of(ino, &node))
    }

    /// [`Vfs::child`] with the child's position in its directory.
    fn child_indexed(&self, parent: &Node, name: &[u8]) -> Result<(u64, Node)> {
        match parent {
            Node::Entry { snap, entry } => match &entry.kind {
                Kind::Dir(tree) => match crate::tree::lookup_indexed(&self.repo, tree, name)? {
                    Some((pos, e)) => Ok((pos, Node::Entry { snap: *snap, entry: Arc::new(e) })),
                    None => Err(enoent()),
                },
                _ => Err(Error::InvalidInput(NOT_DIR.into())),
            },
            Node::Link(_) => Err(Error::InvalidInput(NOT_DIR.into())),
            _ => {
                let pos = self.virtual_names(parent).iter().position(|(n, _)| n == name).ok_or_else(enoent)?;
                Ok((pos as u64, self.child(parent, name)?))
            }
        }
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
            Node::Root | Node::Snapshots | Node::Hosts | Node::Tags | Node::Ids | Node::Host(_) | Node::Tag(_) => {
                virt(FileKind::Dir, 0)
            }
            Node::Link(target) => virt(FileKind::Symlink, target.len() as u64),
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

    /// The bytes of a file's chunks that hold data ([`crate::tree::data_bytes`]): an
    /// inline list is walked each time (no reads), a chunk-list tree once. A list that
    /// cannot be read counts as all data (its reads report the damage).
    fn data_bytes(&self, content: &Content, size: u64) -> u64 {
        let Content::List(root) = content else {
            return crate::tree::data_bytes(&self.repo, content, size).unwrap_or(size);
        };
        if let Some(n) = self.data_bytes.lock().unwrap_or_else(|e| e.into_inner()).get(root) {
            return *n;
        }
        match crate::tree::data_bytes(&self.repo, content, size) {
            Ok(n) => {
                self.data_bytes.lock().unwrap_or_else(|e| e.into_inner()).put(*root, n);
                n
            }
            Err(_) => size,
        }
    }

    /// `lseek(2)` with SEEK_DATA (`hole` false) or SEEK_HOLE (`hole` true) in file `ino`
    /// ([`crate::tree::seek_data`]); `None` is ENXIO.
    pub fn seek_data(&self, ino: u64, offset: u64, hole: bool) -> Result<Option<u64>> {
        match self.node(ino)? {
            Node::Entry { entry, .. } => match &entry.kind {
                Kind::File(c) => crate::tree::seek_data(&self.repo, c, entry.size, offset, hole),
                _ => Err(Error::InvalidInput(NOT_FILE.into())),
            },
            _ => Err(Error::InvalidInput(NOT_FILE.into())),
        }
    }

    /// At least `len` zero bytes, shared.
    fn zeros(&self, len: usize) -> Arc<Vec<u8>> {
        let mut z = self.zeros.lock().unwrap_or_else(|e| e.into_inner());
        if z.len() < len {
            *z = Arc::new(vec![0; len]);
        }
        z.clone()
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match self.node(ino)? {
            Node::Link(t) => Ok(t),
            Node::Entry { entry, .. } => match &entry.kind {
                Kind::Symlink(t) => Ok(t.clone()),
                _ => Err(Error::InvalidInput(NOT_LINK.into())),
            },
            _ => Err(Error::InvalidInput(NOT_LINK.into())),
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
            _ => Ok(Vec::new()),
        }
    }

    /// Names of a virtual directory.
    fn virtual_names(&self, node: &Node) -> Vec<(Vec<u8>, FileKind)> {
        let mut names: Vec<(Vec<u8>, FileKind)> = match node {
            Node::Root => {
                let mut v = vec![
                    (b"snapshots".to_vec(), FileKind::Dir),
                    (b"hosts".to_vec(), FileKind::Dir),
                    (b"tags".to_vec(), FileKind::Dir),
                    (b"ids".to_vec(), FileKind::Dir),
                ];
                if !self.snaps.is_empty() {
                    v.push((b"latest".to_vec(), FileKind::Symlink));
                }
                v
            }
            Node::Snapshots => self.snaps.iter().map(|s| (s.name.as_bytes().to_vec(), FileKind::Dir)).collect(),
            Node::Hosts => self.snaps.iter().map(|s| (shown_name(&s.host), FileKind::Dir)).collect(),
            Node::Tags => {
                self.snaps.iter().flat_map(|s| s.tags.iter().map(|t| (shown_name(t), FileKind::Dir))).collect()
            }
            Node::Ids => self.snaps.iter().map(|s| (s.id.short().into_bytes(), FileKind::Symlink)).collect(),
            Node::Host(h) => self
                .snaps
                .iter()
                .filter(|s| &s.host == h)
                .map(|s| (s.name.as_bytes().to_vec(), FileKind::Symlink))
                .collect(),
            Node::Tag(t) => self
                .snaps
                .iter()
                .filter(|s| s.tags.contains(t))
                .map(|s| (s.name.as_bytes().to_vec(), FileKind::Symlink))
                .collect(),
            _ => Vec::new(),
        };
        names.sort();
        names.dedup();
        names
    }

    /// List directory `dir` from `offset` (0 = start; otherwise the offset handed out
    /// with an earlier entry): `add(name, kind, next offset)` returns false when the caller's
    /// buffer is full (that entry is then given again next time).
    /// `add` gets each entry's inode number too (a hard link's may differ from the one
    /// `lookup` gives: that one is the first link's).
    ///
    /// Listings need no open handle: the mount tells the kernel not to send OPENDIR and
    /// RELEASEDIR (two round trips fewer per directory; the kernel then also caches the
    /// listing, snapshots never change). A call that continues a listing takes up its
    /// cursor by (directory, offset) ([`LISTINGS`]).
    pub fn readdir(&self, dir: u64, offset: u64, add: ReaddirFn<'_>) -> Result<()> {
        let dir_node = self.node(dir)?;
        let base = self.base(dir, &dir_node)?;
        self.list(dir, &dir_node, offset, &mut |name, node, next| match node {
            None => add(name, FileKind::Dir, dir, next),
            Some(n) => add(name, kind_of(n), base + next - 3, next),
        })
    }

    /// [`Vfs::readdir`] with each entry's attributes (FUSE's READDIRPLUS, which spares the
    /// kernel a lookup per entry: `ls -l` and `cp -a` of a listed directory need no more
    /// calls), with the inode numbers `lookup` gives.
    pub fn readdirplus(&self, dir: u64, offset: u64, add: &mut dyn FnMut(&[u8], &Attr, u64) -> bool) -> Result<()> {
        let dir_node = self.node(dir)?;
        let dir_attr = self.attr_of(dir, &dir_node);
        let base = self.base(dir, &dir_node)?;
        self.list(dir, &dir_node, offset, &mut |name, node, next| match node {
            None => add(name, &dir_attr, next),
            Some(n) => {
                let ino = self.ino_of(base, next - 3, n);
                add(name, &self.attr_of(ino, n), next)
            }
        })
    }

    /// The listing behind [`Vfs::readdir`] of directory `dir`, whose node is `node`: each
    /// entry with its node (`None` for "." and ".."), through the cursor of the listing
    /// this call continues, if it is still kept.
    fn list(&self, dir: u64, node: &Node, offset: u64, add: ListFn<'_>) -> Result<()> {
        if kind_of(node) != FileKind::Dir {
            return Err(Error::InvalidInput(NOT_DIR.into()));
        }
        let listings = || self.listings.lock().unwrap_or_else(|e| e.into_inner());
        let taken = listings().pop(&(dir, offset));
        let mut h = taken.unwrap_or(DirCursor { next: 2, iter: None, pending: None });
        let mut added = false;
        let r = self.list_from(&mut h, node, offset, &mut |name, n, next| {
            let fits = add(name, n, next);
            added |= fits;
            fits
        });
        // A call that added nothing is the listing's end (or a buffer too small for one
        // entry, which the kernel never sends): nothing to keep.
        if r.is_ok() && added && h.iter.is_some() {
            listings().put((dir, h.next), h);
        }
        r
    }

    /// [`Vfs::list`] through cursor `h`.
    fn list_from(&self, h: &mut DirCursor, node: &Node, offset: u64, add: ListFn<'_>) -> Result<()> {
        let mut off = offset;
        if off == 0 {
            if !add(b".", None, 1) {
                return Ok(());
            }
            off = 1;
        }
        if off == 1 {
            if !add(b"..", None, 2) {
                return Ok(());
            }
            off = 2;
        }
        let (snap, tree) = match node {
            Node::Entry { snap, entry } => match &entry.kind {
                Kind::Dir(t) => (*snap, Some(*t)),
                _ => (*snap, None),
            },
            _ => (0, None),
        };
        let Some(tree) = tree else {
            // Virtual directories: short lists, rebuilt per call.
            for (i, (name, _)) in self.virtual_names(node).iter().enumerate().skip((off - 2) as usize) {
                let child = self.child(node, name)?;
                if !add(name, Some(&child), i as u64 + 3) {
                    break;
                }
            }
            return Ok(());
        };
        // Tree directories stream: continue where the last call stopped, or seek by the
        // interior nodes' entry counts (a seek back, rare: rewinddir).
        if h.iter.is_none() || h.next != off {
            h.iter = Some(DirIter::at(self.repo.clone(), &tree, off - 2)?);
            h.pending = None;
            h.next = off;
        }
        loop {
            let e = match h.pending.take() {
                Some(e) => e,
                None => match h.iter.as_mut().expect("set").next_entry() {
                    Ok(Some(e)) => Arc::new(e),
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        // The next call seeks to `h.next` again from the root node.
                        h.iter = None;
                        return Err(e);
                    }
                },
            };
            let child = Node::Entry { snap, entry: e.clone() };
            if !add(&e.name, Some(&child), h.next + 1) {
                h.pending = Some(e);
                return Ok(());
            }
            h.next += 1;
        }
    }

    /// The read state of file `ino`: the cursor of its last read, kept for the
    /// [`OPEN_FILES`] most recently read files (reads need no open: the kernel is told
    /// not to send OPEN and RELEASE, which saves two round trips per file copied).
    fn file(&self, ino: u64) -> Result<Arc<Mutex<FileHandle>>> {
        if let Some(h) = self.files.lock().unwrap_or_else(|e| e.into_inner()).get(&ino) {
            return Ok(h.clone());
        }
        let (content, size) = match self.node(ino)? {
            Node::Entry { entry, .. } => match &entry.kind {
                Kind::File(c) => (c.clone(), entry.size),
                _ => return Err(Error::InvalidInput(NOT_FILE.into())),
            },
            _ => return Err(Error::InvalidInput(NOT_FILE.into())),
        };
        let h = Arc::new(Mutex::new(FileHandle { content, size, cursor: None }));
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        Ok(files.get_or_insert(ino, || h).clone())
    }

    /// Up to `len` bytes of file `ino` at `offset` (fewer at the end of the file).
    pub fn read(&self, ino: u64, offset: u64, len: usize) -> Result<ReadData<'_>> {
        let mut out = ReadData { first: None, joined: None, pool: self.chunks.pool() };
        let h = self.file(ino)?;
        let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
        if offset >= h.size || len == 0 {
            return Ok(out);
        }
        let end = (offset + len as u64).min(h.size);
        let r = self.read_into(&mut h, offset, end, &mut out);
        if r.is_err() {
            // Start over from the list nodes next time rather than trust a cursor that
            // met damaged data.
            h.cursor = None;
        }
        r.map(|()| out)
    }

    /// [`Vfs::read`] of bytes `offset..end` (within the file) into `out`, through the
    /// file's cursor.
    fn read_into<'a>(&'a self, h: &mut FileHandle, offset: u64, end: u64, out: &mut ReadData<'a>) -> Result<()> {
        // Continue from the cursor when the read is at or a little after it; otherwise
        // seek by the list nodes' byte counts (one node per level).
        if h.cursor.as_ref().is_none_or(|c| offset < c.start || offset - c.start >= WALK_LIMIT) {
            let (iter, start) = ChunkIter::at(self.repo.clone(), &h.content, offset)?;
            h.cursor = Some(Cursor { start, ahead: VecDeque::new(), iter, fetched: start, last_end: u64::MAX });
        }
        let cur = h.cursor.as_mut().expect("set");
        let sequential = offset == cur.last_end || offset == 0;
        // The chunks must cover the entry's size exactly, as restore requires: a read
        // that finds them ending early, or going on past the size, is damage (EIO), never
        // a short file or a silently cut one.
        let size = h.size;
        let mismatch = |what: &str| {
            let root = match &h.content {
                Content::List(root) => root.to_string(),
                Content::Inline(_) => "inline chunk list".into(),
            };
            Error::corrupt("tree", root, format!("the chunks {what} the entry's size ({size} bytes)"))
        };
        loop {
            if cur.ahead.is_empty() {
                match cur.iter.next_chunk()? {
                    Some(c) => cur.ahead.push_back(c),
                    None if cur.start < end => return Err(mismatch("end before")),
                    None => break,
                }
            }
            let c = cur.ahead[0];
            let c_end = cur.start + c.size as u64;
            if c_end > offset {
                if cur.start >= end {
                    if end == size {
                        return Err(mismatch("go on past"));
                    }
                    break;
                }
                if c_end > size {
                    return Err(mismatch("go on past"));
                }
                let from = (offset.max(cur.start) - cur.start) as usize;
                let to = (end.min(c_end) - cur.start) as usize;
                if self.repo.is_zero_chunk(&c, cur.start > 0 && c_end == size) {
                    // A hole: answered without loading the chunk.
                    let n = to - from.min(to);
                    out.push(self.zeros(n), 0..n, (end - offset) as usize);
                } else {
                    let data = self.chunk(&c)?;
                    let to = to.min(data.len());
                    out.push(data, from.min(to)..to, (end - offset) as usize);
                }
                if c_end > end {
                    break; // the next sequential read starts in this chunk
                }
            }
            cur.start = c_end;
            cur.ahead.pop_front();
        }
        cur.last_end = end;
        if sequential {
            // Damage ahead is not this read's: the reader meets it when it gets there.
            let _ = self.read_ahead(cur, end, size);
        }
        Ok(())
    }

    /// A copier starts file `ino`: have the small files after it in its directory
    /// loaded ahead (once per stretch of [`SIBLINGS`] entries), as `cp -a`, `rsync` and
    /// `tar` read them next. This spreads decryption over the prefetch threads the way
    /// restore's workers do; without it a copy of many small files decrypts on one thread.
    fn read_siblings_ahead(&self, ino: u64) {
        let Some((dir, pos)) = self.inodes.lock().unwrap_or_else(|e| e.into_inner()).locate(ino) else { return };
        // `ino` is `pos` in its directory's block (a hard link's is its first link's).
        self.files_ahead(dir, ino - pos, pos + 1);
    }

    /// Process `pid` reads file `ino` from its start. If it started another file within
    /// [`READER_TTL`], it copies files (`cp -a`, `rsync`, `tar`): the small files after
    /// this one in its directory are loaded ahead ([`Vfs::read_siblings_ahead`]). A
    /// process reading one file (`cat`, a player) gets none: they would only take its
    /// bandwidth, on a remote repository most of all.
    pub fn starts_file(&self, ino: u64, pid: u32) {
        let copying = self.is_reader(pid);
        self.note_reader(pid);
        if copying {
            self.read_siblings_ahead(ino);
        }
    }

    /// Process `pid` read a file from its start: the directories it lists from now on
    /// get their first small files loaded ahead at once ([`Vfs::listed_by`]). Remembered
    /// for the [`READERS`] most recent processes, for [`READER_TTL`]; a process that only
    /// lists (`ls -lR`, `find`) never loads any data.
    pub fn note_reader(&self, pid: u32) {
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).put(pid, std::time::Instant::now());
    }

    /// Process `pid` starts listing directory `ino`: if that process reads files (see
    /// [`Vfs::note_reader`]), load the directory's first small files ahead of it. Without
    /// this, its first few files would each wait for a read: the files after a file
    /// start loading only when that file is read.
    pub fn listed_by(&self, ino: u64, pid: u32) {
        if !self.is_reader(pid) {
            return;
        }
        if let Ok(node) = self.node(ino) {
            if let Ok(base) = self.base(ino, &node) {
                self.files_ahead(ino, base, 0);
            }
        }
    }

    /// Whether process `pid` has been reading files (see [`Vfs::note_reader`]); if so,
    /// it counts as reading for [`READER_TTL`] from now.
    fn is_reader(&self, pid: u32) -> bool {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        match readers.get_mut(&pid) {
            Some(t) if t.elapsed() < READER_TTL => {
                *t = std::time::Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Have the small files of directory `dir` (inodes from `base`) loaded ahead from
    /// position `next`, unless that is done already well past it.
    fn files_ahead(&self, dir: u64, base: u64, next: u64) {
        let from = {
            let mut marks = self.siblings.lock().unwrap_or_else(|e| e.into_inner());
            let mark = marks.get(&dir).copied().unwrap_or(0);
            if mark > next + SIBLINGS / 2 {
                return; // well ahead of this reader already
            }
            let from = mark.max(next);
            marks.put(dir, from + SIBLINGS);
            from
        };
        if let Ok(Node::Entry { entry, .. }) = self.node(dir) {
            if let Kind::Dir(tree) = &entry.kind {
                self.prefetch.request(Job::Siblings { tree: *tree, base, from, count: SIBLINGS, bytes: self.window });
            }
        }
    }

    /// Hand the chunks of the next `window` bytes after `end` to the prefetcher (those
    /// not handed over yet, and not holes), in a file of `size` bytes.
    fn read_ahead(&self, cur: &mut Cursor, end: u64, size: u64) -> Result<()> {
        // Refill once the reader is half a window from the end of what was handed over,
        // not on every read: the walk below is over the whole window.
        if cur.fetched >= end.saturating_add(self.window / 2) {
            return Ok(());
        }
        let want = end.saturating_add(self.window);
        let mut at = cur.start;
        let mut run = Vec::new();
        let mut i = 0;
        while at < want && i < AHEAD_CHUNKS {
            if i == cur.ahead.len() {
                match cur.iter.next_chunk()? {
                    Some(c) => cur.ahead.push_back(c),
                    None => break,
                }
            }
            let c = cur.ahead[i];
            let c_end = at + c.size as u64;
            if at >= cur.fetched && at >= end && !self.repo.is_zero_chunk(&c, at > 0 && c_end == size) {
                run.push(c);
            }
            at = c_end;
            i += 1;
        }
        if !run.is_empty() {
            cur.fetched = at;
            self.prefetch.load_ahead(run);
        }
        Ok(())
    }

    fn chunk(&self, c: &ChunkRef) -> Result<Arc<Vec<u8>>> {
        self.chunks.get(&c.id, || load_chunk(&self.repo, self.chunks.pool(), c))
    }
}

/// What [`Vfs::read`] returns: a part of one cached chunk, shared rather than copied, or
/// (for a read that spans chunks) the parts joined in a buffer of the chunk pool, which
/// gets it back on drop. Dereferences to the bytes.
pub struct ReadData<'a> {
    first: Option<(Arc<Vec<u8>>, Range<usize>)>,
    joined: Option<Vec<u8>>,
    pool: &'a Pool,
}

impl ReadData<'_> {
    /// Append `range` of `chunk`; `total` is the length the read will have.
    fn push(&mut self, chunk: Arc<Vec<u8>>, range: Range<usize>, total: usize) {
        let joined = match (&mut self.joined, self.first.take()) {
            (None, None) => {
                self.first = Some((chunk, range));
                return;
            }
            (Some(j), _) => j,
            (None, Some((c, r))) => {
                let mut j = self.pool.take_transient(total);
                j.clear();
                j.extend_from_slice(c.get(r).unwrap_or_default());
                self.joined.insert(j)
            }
        };
        joined.extend_from_slice(chunk.get(range).unwrap_or_default());
    }
}

impl std::ops::Deref for ReadData<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match (&self.first, &self.joined) {
            (Some((c, r)), _) => c.get(r.clone()).unwrap_or_default(),
            (None, Some(j)) => j,
            (None, None) => &[],
        }
    }
}

impl std::fmt::Debug for ReadData<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadData({} bytes)", self.len())
    }
}

impl Drop for ReadData<'_> {
    fn drop(&mut self) {
        if let Some(j) = self.joined.take() {
            self.pool.give(j);
        }
    }
}
