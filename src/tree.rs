//! Building and reading directory listings and chunk lists as trees of nodes
//! (format in [`crate::format::tree`]).
//!
//! Writers stream: a directory's entries (or a file's chunks) are encoded straight into the
//! current leaf, which is stored as soon as it ends; interior levels hold one node each.
//! Memory per writer: one leaf (≤ 1 MiB) + one node per level, whatever the directory or
//! file size. Leaves end at content-defined boundaries (a hash of the entry name, or the
//! chunk id), so inserting one file into a huge directory changes only the leaf around it
//! and the nodes above; the rest deduplicate against the previous snapshot.
//!
//! Readers hold one decoded node per level.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex, Weak};

use crate::error::{Error, Result};
use crate::format::tree::{
    finish_node, put_chunk_ref, put_dir_child, put_entry, put_list_child, start_node, ChunkRef, Content, DirChild,
    Entry, LeafEntries, ListChild, Node, NodeKind,
};
use crate::id::BlobId;
use crate::repo::Repository;

/// A node ends once its encoding reaches this size, boundary or not.
const NODE_MAX: usize = 1 << 20;
/// Directory leaves end after an entry whose name hash is 0 mod this (~100-300 KiB leaves).
const DIR_LEAF_SPLIT: u64 = 1024;
/// Interior nodes end after a child whose key hash is 0 mod this.
const INTERIOR_SPLIT: u64 = 64;
/// Chunk lists of up to this many chunks stay inline in the entry.
pub const INLINE_CHUNKS: usize = 64;
/// List leaves end after a chunk whose id is 0 mod this (~4096 chunks, ~147 KiB).
const LIST_LEAF_SPLIT: u64 = 4096;
/// Deepest tree a reader follows (2^10 fan-out per level makes 16 levels absurdly deep).
const MAX_DEPTH: usize = 16;

/// Deepest nesting of directories that the snapshot walkers (restore, ls, check) follow.
/// They walk with a stack of their own (never the thread's), holding one directory
/// iterator per level. A backup reads by path, and the kernel's 4096-byte paths allow
/// at most 2048 levels, so only a damaged or crafted snapshot goes deeper: it is
/// refused there, naming the tree, instead of holding ever more levels.
pub const MAX_DIR_NESTING: usize = 4096;

/// The error for a directory `id` nested deeper than [`MAX_DIR_NESTING`].
pub fn too_deep(id: &BlobId) -> Error {
    Error::corrupt("tree", id, format!("directories nested more than {MAX_DIR_NESTING} deep"))
}

/// Where writers store finished tree nodes.
pub trait TreeSink {
    /// Store an encoded node as a tree blob and return its id.
    fn store_tree(&mut self, node: &[u8]) -> Result<BlobId>;
}

fn name_hash(b: &[u8]) -> u64 {
    // FNV-1a: deterministic across versions and machines, which split points must be.
    let mut h: u64 = 0xcbf29ce484222325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn id_hash(id: &BlobId) -> u64 {
    u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes"))
}

/// A finished node as seen by its parent.
struct Child {
    id: BlobId,
    first: Vec<u8>,
    count: u64,
    bytes: u64,
}

struct Level {
    buf: Vec<u8>,
    n: u32,
    first: Vec<u8>,
    count: u64,
    bytes: u64,
    last: BlobId,
}

/// The interior levels above a writer's leaves.
struct Levels {
    kind: NodeKind,
    levels: Vec<Level>,
}

impl Levels {
    fn new(kind: NodeKind) -> Levels {
        Levels { kind, levels: Vec::new() }
    }

    fn push(&mut self, i: usize, c: Child, sink: &mut dyn TreeSink) -> Result<()> {
        if i == self.levels.len() {
            let mut buf = Vec::new();
            start_node(&mut buf, self.kind);
            self.levels.push(Level { buf, n: 0, first: Vec::new(), count: 0, bytes: 0, last: BlobId::default() });
        }
        let l = &mut self.levels[i];
        match self.kind {
            NodeKind::DirInterior => {
                put_dir_child(&mut l.buf, &DirChild { first_name: c.first.clone(), id: c.id, entries: c.count });
            }
            _ => put_list_child(&mut l.buf, &ListChild { id: c.id, bytes: c.bytes, chunks: c.count }),
        }
        // Interior boundaries hash the child's node id, not its first key: a node closed at
        // a boundary has the same first key as its first child, so a key-based rule would
        // fire again at every level above, forever. A node of one child is never closed
        // early (`l.n >= 1` counts the children before this one), so each level has at
        // most half the nodes of the level below.
        let split = l.n >= 1 && (id_hash(&c.id) >> 32).is_multiple_of(INTERIOR_SPLIT);
        if l.n == 0 {
            l.first = c.first;
        }
        l.n += 1;
        l.count += c.count;
        l.bytes += c.bytes;
        l.last = c.id;
        if split || l.buf.len() >= NODE_MAX {
            let child = self.close(i, sink)?;
            self.push(i + 1, child, sink)?;
        }
        Ok(())
    }

    /// Store level `i`'s node and reset the level.
    fn close(&mut self, i: usize, sink: &mut dyn TreeSink) -> Result<Child> {
        let l = &mut self.levels[i];
        finish_node(&mut l.buf, l.n);
        let id = sink.store_tree(&l.buf)?;
        let child = Child { id, first: std::mem::take(&mut l.first), count: l.count, bytes: l.bytes };
        start_node(&mut l.buf, self.kind);
        l.n = 0;
        l.count = 0;
        l.bytes = 0;
        Ok(child)
    }

    /// Close every level bottom-up; the root is the single child left at the top.
    fn finish(mut self, sink: &mut dyn TreeSink) -> Result<BlobId> {
        let mut i = 0;
        while i < self.levels.len() {
            let top = i + 1 == self.levels.len();
            let l = &self.levels[i];
            if top && l.n == 1 {
                return Ok(l.last);
            }
            if l.n > 0 {
                let child = self.close(i, sink)?;
                if top {
                    return Ok(child.id);
                }
                self.push(i + 1, child, sink)?;
            }
            i += 1;
        }
        // Unreachable: writers always push at least one leaf before finishing.
        Err(Error::InvalidInput("empty tree".into()))
    }
}

/// Streams a directory's entries (in strictly ascending name order) into tree nodes.
pub struct DirWriter {
    leaf: Vec<u8>,
    n: u32,
    first: Vec<u8>,
    up: Levels,
    last: Vec<u8>,
    /// Entries pushed.
    pub entries: u64,
}

impl Default for DirWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl DirWriter {
    /// An empty directory.
    pub fn new() -> DirWriter {
        let mut leaf = Vec::new();
        start_node(&mut leaf, NodeKind::DirLeaf);
        DirWriter {
            leaf,
            n: 0,
            first: Vec::new(),
            up: Levels::new(NodeKind::DirInterior),
            last: Vec::new(),
            entries: 0,
        }
    }

    /// Add the next entry; names must ascend strictly (the caller walks in name order).
    /// A violation is an error here rather than a node no reader would accept.
    pub fn push(&mut self, e: &Entry, sink: &mut dyn TreeSink) -> Result<()> {
        if self.entries > 0 && e.name <= self.last {
            return Err(Error::InvalidInput(format!(
                "directory entry {:?} out of order",
                String::from_utf8_lossy(&e.name)
            )));
        }
        self.last.clone_from(&e.name);
        if self.n == 0 {
            self.first = e.name.clone();
        }
        put_entry(&mut self.leaf, e);
        self.n += 1;
        self.entries += 1;
        if name_hash(&e.name).is_multiple_of(DIR_LEAF_SPLIT) || self.leaf.len() >= NODE_MAX {
            self.flush_leaf(sink)?;
        }
        Ok(())
    }

    fn flush_leaf(&mut self, sink: &mut dyn TreeSink) -> Result<()> {
        finish_node(&mut self.leaf, self.n);
        let id = sink.store_tree(&self.leaf)?;
        let c = Child { id, first: std::mem::take(&mut self.first), count: self.n as u64, bytes: 0 };
        start_node(&mut self.leaf, NodeKind::DirLeaf);
        self.n = 0;
        self.up.push(0, c, sink)
    }

    /// Store what is left and return the directory's root node.
    pub fn finish(mut self, sink: &mut dyn TreeSink) -> Result<BlobId> {
        if self.n > 0 || self.up.levels.is_empty() {
            self.flush_leaf(sink)?;
        }
        self.up.finish(sink)
    }
}

/// Streams a file's chunk ids into its [`Content`]: inline while short, a list tree after.
pub struct ListWriter {
    inline: Vec<ChunkRef>,
    leaf: Vec<u8>,
    n: u32,
    leaf_bytes: u64,
    up: Levels,
    spilled: bool,
    /// Bytes covered so far.
    pub bytes: u64,
}

impl Default for ListWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ListWriter {
    /// An empty list.
    pub fn new() -> ListWriter {
        ListWriter {
            inline: Vec::new(),
            leaf: Vec::new(),
            n: 0,
            leaf_bytes: 0,
            up: Levels::new(NodeKind::ListInterior),
            spilled: false,
            bytes: 0,
        }
    }

    /// Add the next chunk.
    pub fn push(&mut self, c: ChunkRef, sink: &mut dyn TreeSink) -> Result<()> {
        self.bytes += c.size as u64;
        if !self.spilled {
            if self.inline.len() < INLINE_CHUNKS {
                self.inline.push(c);
                return Ok(());
            }
            self.spilled = true;
            start_node(&mut self.leaf, NodeKind::ListLeaf);
            for c in std::mem::take(&mut self.inline) {
                self.push_leaf(c, sink)?;
            }
        }
        self.push_leaf(c, sink)
    }

    fn push_leaf(&mut self, c: ChunkRef, sink: &mut dyn TreeSink) -> Result<()> {
        put_chunk_ref(&mut self.leaf, &c);
        self.n += 1;
        self.leaf_bytes += c.size as u64;
        if id_hash(&c.id).is_multiple_of(LIST_LEAF_SPLIT) || self.leaf.len() >= NODE_MAX {
            self.flush_leaf(sink)?;
        }
        Ok(())
    }

    fn flush_leaf(&mut self, sink: &mut dyn TreeSink) -> Result<()> {
        finish_node(&mut self.leaf, self.n);
        let id = sink.store_tree(&self.leaf)?;
        let c = Child { id, first: Vec::new(), count: self.n as u64, bytes: self.leaf_bytes };
        start_node(&mut self.leaf, NodeKind::ListLeaf);
        self.n = 0;
        self.leaf_bytes = 0;
        self.up.push(0, c, sink)
    }

    /// The finished content.
    pub fn finish(mut self, sink: &mut dyn TreeSink) -> Result<Content> {
        if !self.spilled {
            return Ok(Content::Inline(self.inline));
        }
        if self.n > 0 {
            self.flush_leaf(sink)?;
        }
        Ok(Content::List(self.up.finish(sink)?))
    }
}

/// What a parent node says one child holds: entries (a directory node) or chunks and
/// their bytes (a chunk list node); `None` for a root, which nothing counts.
type Counted = Option<(u64, u64)>;

/// Read tree node `id`, checking it against its parent's counts (`want`). Readers seek
/// by those counts (a directory's inode numbers and positions, a file's offsets), so a
/// node that disagrees with them is damaged rather than read at the wrong place.
fn read_counted(repo: &Repository, id: &BlobId, want: Counted) -> Result<Node> {
    let node = repo.read_tree(id)?;
    check_counted(id, counted(&node), want)?;
    Ok(node)
}

/// What a node holds, as its parent counts it: (entries, 0) for a directory node,
/// (chunks, bytes) for a chunk list node.
fn counted(node: &Node) -> (u64, u64) {
    let sum = |it: &mut dyn Iterator<Item = (u64, u64)>| {
        it.fold((0u64, 0u64), |(n, b), (dn, db)| (n.saturating_add(dn), b.saturating_add(db)))
    };
    match node {
        Node::DirLeaf(es) => (es.len() as u64, 0),
        Node::DirInterior(cs) => sum(&mut cs.iter().map(|c| (c.entries, 0))),
        Node::ListLeaf(cs) => sum(&mut cs.iter().map(|c| (1, c.size as u64))),
        Node::ListInterior(cs) => sum(&mut cs.iter().map(|c| (c.chunks, c.bytes))),
    }
}

/// That node `id`, holding `got` (items, bytes), is what its parent counts (`want`).
fn check_counted(id: &BlobId, got: (u64, u64), want: Counted) -> Result<()> {
    match want {
        Some(want) if got != want => Err(Error::corrupt(
            "tree",
            id,
            format!("holds {} items of {} bytes, its parent counts {} of {}", got.0, got.1, want.0, want.1),
        )),
        _ => Ok(()),
    }
}

/// Tree nodes' plaintexts shared by compact iterators ([`DirIter::compact`]), by id:
/// each lives while an iterator is in it. Memory: the live nodes, and ~56 B per entry,
/// entries of nodes no longer live dropped once [`SHARED_LEAVES`] are listed.
pub type SharedLeaves = Arc<Mutex<HashMap<BlobId, Weak<Vec<u8>>>>>;

/// Entries [`SharedLeaves`] lists before dropping those of nodes no longer live.
const SHARED_LEAVES: usize = 256;

/// The entries left of the directory leaf a [`DirIter`] is in.
enum Leaf {
    /// Decoded whole.
    Whole(std::vec::IntoIter<Entry>),
    /// Kept as plaintext (a compact iterator, [`DirIter::compact`]), with the next entry
    /// once peeked.
    Plain(Box<(LeafEntries, Option<Entry>)>),
}

impl Leaf {
    fn empty() -> Leaf {
        Leaf::Whole(Vec::new().into_iter())
    }

    /// The next entry, without taking it.
    fn peek(&mut self) -> Result<Option<&Entry>> {
        match self {
            Leaf::Whole(it) => Ok(it.as_slice().first()),
            Leaf::Plain(p) => {
                let (rest, next) = &mut **p;
                if next.is_none() {
                    *next = rest.next_entry()?;
                }
                Ok(next.as_ref())
            }
        }
    }

    /// Take the entry [`Leaf::peek`] gave.
    fn take(&mut self) -> Option<Entry> {
        match self {
            Leaf::Whole(it) => it.next(),
            Leaf::Plain(p) => p.1.take(),
        }
    }
}

/// Iterates a directory's entries in name order, one node per level in memory.
/// `R` is how it holds the repository: a borrow, or an `Arc` for an iterator kept across
/// calls (a mount's open directory).
pub struct DirIter<R: Deref<Target = Repository>> {
    repo: R,
    stack: Vec<std::vec::IntoIter<DirChild>>,
    leaf: Leaf,
    /// For a compact iterator ([`DirIter::compact`]), the leaves it shares.
    compact: Option<SharedLeaves>,
    last: Option<Vec<u8>>,
    /// The `first_name` the interior nodes above the leaf being entered give it: the next
    /// entry must bear it (lookups by name go by these names).
    first: Option<Vec<u8>>,
    root: BlobId,
    /// What the last error was about, for [`DirIter::skip_failed`].
    failed: Option<Failed>,
}

/// What made an iterator's last step fail.
#[derive(Clone, Copy, Debug)]
enum Failed {
    /// The next entry of the leaf (out of order, or not the first name its parent gave).
    Entry,
    /// The next child node of the top interior level (unreadable, or inconsistent).
    Child,
}

impl<R: Deref<Target = Repository>> DirIter<R> {
    /// An iterator over `root` that has read nothing yet.
    fn unread(repo: R, root: &BlobId) -> DirIter<R> {
        DirIter {
            repo,
            stack: Vec::new(),
            leaf: Leaf::empty(),
            compact: None,
            last: None,
            first: None,
            root: *root,
            failed: None,
        }
    }

    /// Start at a directory's root node.
    pub fn new(repo: R, root: &BlobId) -> Result<DirIter<R>> {
        let mut it = DirIter::unread(repo, root);
        it.descend(root, None)?;
        Ok(it)
    }

    /// [`DirIter::new`], holding each leaf as its plaintext and decoding one entry at a
    /// time, and sharing that plaintext through `shared` with the other compact
    /// iterators given it: for a reader that keeps many iterators at once over related
    /// trees (the mount's merge of one directory across snapshots, whose trees mostly
    /// hold the same leaves). A leaf that fails to decode midway is given up whole by
    /// [`DirIter::skip_failed`].
    pub fn compact(repo: R, root: &BlobId, shared: SharedLeaves) -> Result<DirIter<R>> {
        let mut it = DirIter::unread(repo, root);
        it.compact = Some(shared);
        it.descend(root, None)?;
        Ok(it)
    }

    /// Start at the entry at position `pos` (name order), reading one node per level:
    /// interior nodes count the entries under each child.
    pub fn at(repo: R, root: &BlobId, pos: u64) -> Result<DirIter<R>> {
        let mut it = DirIter::unread(repo, root);
        let (mut id, mut want) = (*root, None);
        let mut rest = pos;
        loop {
            match read_counted(&it.repo, &id, want)? {
                Node::DirLeaf(es) => {
                    let mut leaf = es.into_iter();
                    if rest > 0 {
                        leaf.nth(usize::try_from(rest - 1).unwrap_or(usize::MAX));
                    }
                    it.leaf = Leaf::Whole(leaf);
                    return Ok(it);
                }
                Node::DirInterior(cs) => {
                    if it.stack.len() >= MAX_DEPTH {
                        return Err(Error::corrupt("tree", id, "directory tree too deep"));
                    }
                    let mut children = cs.into_iter();
                    let next = children.by_ref().find(|c| {
                        let inside = rest < c.entries;
                        if !inside {
                            rest -= c.entries;
                        }
                        inside
                    });
                    it.stack.push(children);
                    match next {
                        Some(c) => (id, want) = (c.id, Some((c.entries, 0))),
                        None => return Ok(it),
                    }
                }
                _ => return Err(Error::corrupt("tree", id, "expected a directory node, found a chunk list")),
            }
        }
    }

    fn descend(&mut self, id: &BlobId, want: Counted) -> Result<()> {
        let node = if let Some(shared) = &self.compact {
            let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
            let known = lock().get(id).and_then(std::sync::Weak::upgrade);
            let bytes = match known {
                Some(b) => b,
                None => {
                    let b = Arc::new(self.repo.read_blob(id, crate::format::BlobKind::Tree)?);
                    let mut m = lock();
                    if m.len() >= SHARED_LEAVES {
                        m.retain(|_, w| w.strong_count() > 0);
                    }
                    m.insert(*id, Arc::downgrade(&b));
                    b
                }
            };
            match LeafEntries::open(bytes, id)? {
                Ok(leaf) => {
                    check_counted(id, (leaf.len() as u64, 0), want)?;
                    self.leaf = Leaf::Plain(Box::new((leaf, None)));
                    return Ok(());
                }
                Err(Node::DirLeaf(_)) => unreachable!("a directory leaf opens as one"),
                Err(node) => {
                    check_counted(id, counted(&node), want)?;
                    node
                }
            }
        } else {
            read_counted(&self.repo, id, want)?
        };
        match node {
            Node::DirLeaf(es) => self.leaf = Leaf::Whole(es.into_iter()),
            Node::DirInterior(cs) => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(Error::corrupt("tree", id, "directory tree too deep"));
                }
                self.stack.push(cs.into_iter())
            }
            _ => return Err(Error::corrupt("tree", id, "expected a directory node, found a chunk list")),
        }
        Ok(())
    }

    /// The next entry, or `None` at the end. After an error the iterator is where it
    /// was (as for [`ChunkIter::next_chunk`]): a retry meets the same error, unless
    /// [`DirIter::skip_failed`] steps over what failed.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        let r = self.step();
        self.failed = match &r {
            Err(_) => self.failed,
            Ok(_) => None,
        };
        r
    }

    /// Step over what made the last [`DirIter::next_entry`] fail: the entry that broke
    /// the order, or the child node that could not be read (with everything under it).
    /// Returns how many entries that drops by the parents' counts, `None` if the last
    /// step did not fail. Only salvage needs this (`repair snapshots`); every reader
    /// stops at the error.
    pub fn skip_failed(&mut self) -> Option<u64> {
        match self.failed.take()? {
            Failed::Entry => {
                self.first = None;
                match &mut self.leaf {
                    Leaf::Whole(it) => {
                        it.next();
                        Some(1)
                    }
                    // Its entries cannot be told apart past a failed decode: the rest go.
                    Leaf::Plain(p) => {
                        let n = p.0.len() as u64 + u64::from(p.1.is_some());
                        self.leaf = Leaf::empty();
                        Some(n)
                    }
                }
            }
            Failed::Child => {
                let c = self.stack.last_mut()?.next()?;
                self.first = None;
                Some(c.entries)
            }
        }
    }

    fn step(&mut self) -> Result<Option<Entry>> {
        loop {
            let peeked = self.leaf.peek();
            if peeked.is_err() {
                self.failed = Some(Failed::Entry);
            }
            if let Some(e) = peeked? {
                if self.last.as_ref().is_some_and(|l| *l >= e.name) {
                    self.failed = Some(Failed::Entry);
                    return Err(Error::corrupt(
                        "tree",
                        self.root,
                        format!("entry {:?} out of order or repeated", String::from_utf8_lossy(&e.name)),
                    ));
                }
                if let Some(f) = self.first.as_ref().filter(|f| **f != e.name) {
                    self.failed = Some(Failed::Entry);
                    return Err(Error::corrupt(
                        "tree",
                        self.root,
                        format!(
                            "entry {:?} begins a node its parent says begins with {:?}",
                            String::from_utf8_lossy(&e.name),
                            String::from_utf8_lossy(f)
                        ),
                    ));
                }
                self.first = None;
                let e = self.leaf.take().expect("peeked");
                self.last = Some(e.name.clone());
                return Ok(Some(e));
            }
            let Some(top) = self.stack.last() else {
                return Ok(None);
            };
            let level = self.stack.len() - 1;
            match top.as_slice().first().map(|c| (c.id, c.entries, &c.first_name)) {
                Some((id, entries, first)) => {
                    // Every interior level above a leaf names the same first entry.
                    self.failed = Some(Failed::Child);
                    if self.first.as_ref().is_some_and(|f| f != first) {
                        return Err(Error::corrupt("tree", id, "its first name differs from its parent's"));
                    }
                    let first = first.clone();
                    self.descend(&id, Some((entries, 0)))?;
                    self.first = Some(first);
                    self.stack[level].next();
                }
                None => {
                    self.stack.pop();
                }
            }
        }
    }
}

impl<R: Deref<Target = Repository>> Iterator for DirIter<R> {
    type Item = Result<Entry>;
    fn next(&mut self) -> Option<Result<Entry>> {
        self.next_entry().transpose()
    }
}

/// A directory's entries looked up in increasing name order: a merge-join of a listing
/// (sorted the same way) with a stored directory, one node per level in memory. A
/// damaged stored directory ends the cursor: [`DirCursor::seek`] returns the error once,
/// then finds nothing.
pub struct DirCursor<'r> {
    iter: Option<DirIter<&'r Repository>>,
    /// The first entry not before the last name sought.
    at: Option<Entry>,
}

impl<'r> DirCursor<'r> {
    /// A cursor over `root`, or over nothing.
    pub fn new(repo: &'r Repository, root: Option<&BlobId>) -> Result<DirCursor<'r>> {
        let iter = root.map(|r| DirIter::new(repo, r)).transpose()?;
        Ok(DirCursor { iter, at: None })
    }

    /// A cursor that finds nothing.
    pub fn empty() -> DirCursor<'r> {
        DirCursor { iter: None, at: None }
    }

    /// The entry named `name`, if there is one; names must come in increasing order.
    pub fn seek(&mut self, name: &[u8]) -> Result<Option<&Entry>> {
        if let Some(it) = self.iter.as_mut() {
            while self.at.as_ref().is_none_or(|e| e.name.as_slice() < name) {
                match it.next_entry() {
                    Ok(Some(e)) => self.at = Some(e),
                    Ok(None) => {
                        self.iter = None;
                        self.at = None;
                        break;
                    }
                    Err(e) => {
                        self.iter = None;
                        self.at = None;
                        return Err(e);
                    }
                }
            }
        }
        Ok(self.at.as_ref().filter(|e| e.name.as_slice() == name))
    }
}

/// Find one entry by name, reading one node per level.
pub fn lookup(repo: &Repository, root: &BlobId, name: &[u8]) -> Result<Option<Entry>> {
    Ok(lookup_indexed(repo, root, name)?.map(|(_, e)| e))
}

/// [`lookup`], also giving the entry's position in the directory (0-based, name order):
/// interior nodes count the entries under each child, so this reads one node per level.
pub fn lookup_indexed(repo: &Repository, root: &BlobId, name: &[u8]) -> Result<Option<(u64, Entry)>> {
    let (mut id, mut want) = (*root, None);
    let mut before = 0u64;
    for _ in 0..=MAX_DEPTH {
        match read_counted(repo, &id, want)? {
            Node::DirLeaf(es) => {
                return Ok(es
                    .binary_search_by(|e| e.name.as_slice().cmp(name))
                    .ok()
                    .map(|i| (before.saturating_add(i as u64), es[i].clone())))
            }
            Node::DirInterior(cs) => {
                let i = cs.partition_point(|c| c.first_name.as_slice() <= name);
                if i == 0 {
                    return Ok(None);
                }
                before = cs[..i - 1].iter().fold(before, |n, c| n.saturating_add(c.entries));
                (id, want) = (cs[i - 1].id, Some((cs[i - 1].entries, 0)));
            }
            _ => return Err(Error::corrupt("tree", id, "expected a directory node, found a chunk list")),
        }
    }
    Err(Error::corrupt("tree", root, "directory tree too deep"))
}

/// The entry at position `index` of a directory (name order), reading one node per level.
pub fn nth_entry(repo: &Repository, root: &BlobId, index: u64) -> Result<Option<Entry>> {
    DirIter::at(repo, root, index)?.next_entry()
}

/// How many entries a directory has (reads its root node only).
pub fn dir_len(repo: &Repository, root: &BlobId) -> Result<u64> {
    match repo.read_tree(root)? {
        Node::DirLeaf(es) => Ok(es.len() as u64),
        Node::DirInterior(cs) => Ok(cs.iter().fold(0u64, |n, c| n.saturating_add(c.entries))),
        _ => Err(Error::corrupt("tree", root, "expected a directory node, found a chunk list")),
    }
}

/// One step of a [`Walk`].
pub enum Step<T> {
    /// The next entry of the directory being walked (its level's data is
    /// [`Walk::top`]). For a subdirectory, call [`Walk::enter`] to walk it next.
    Entry(Entry),
    /// The directory being walked has no more entries: its level's data, back.
    Leave(T),
    /// A directory could not be entered or read to its end (damaged or missing tree
    /// node, nested too deep): its level's data, back, and why. The walk goes on with
    /// the rest of its parent.
    Failed(T, Error),
    /// Only in a salvaging walk ([`Walk::salvaging`]): part of the directory being
    /// walked could not be read and was stepped over (a node, with this many entries by
    /// its parent's count, or one entry out of order); the walk goes on in it.
    Skipped(Error, u64),
}

/// A depth-first walk over a snapshot's directories in name order: the one walker of
/// restore, `ls -R`, `check` and `repair snapshots`, so they all read trees the same way
/// and enforce the same invariants (those of [`DirIter`] and [`read_counted`]).
///
/// Iterative: a stack of levels, each one [`DirIter`] (one node per tree level) and the
/// caller's data `T`, so no nesting can overflow the thread's stack; directories nested
/// deeper than [`MAX_DIR_NESTING`] fail with [`too_deep`]. A walk never stops at damage:
/// a directory that fails is reported ([`Step::Failed`]) and the walk goes on.
pub struct Walk<'r, T> {
    repo: &'r Repository,
    levels: Vec<(DirIter<&'r Repository>, T)>,
    /// A directory to enter before the next step, with its level's data.
    pending: Option<(BlobId, T)>,
    /// Step over damage inside a directory instead of ending it there.
    salvage: bool,
}

impl<'r, T> Walk<'r, T> {
    /// A walk of the directory tree `root`, whose level carries `data`.
    pub fn new(repo: &'r Repository, root: &BlobId, data: T) -> Walk<'r, T> {
        Walk { repo, levels: Vec::new(), pending: Some((*root, data)), salvage: false }
    }

    /// A walk that steps over damaged nodes inside a directory ([`Step::Skipped`]) and
    /// goes on with the rest of it, for salvage (`repair snapshots`); a directory whose
    /// root node cannot be read still fails whole.
    pub fn salvaging(repo: &'r Repository, root: &BlobId, data: T) -> Walk<'r, T> {
        Walk { salvage: true, ..Walk::new(repo, root, data) }
    }

    /// Walk directory tree `dir` next (after an [`Step::Entry`] naming it), with `data`
    /// for its level; its entries come before the rest of the current directory's.
    pub fn enter(&mut self, dir: &BlobId, data: T) {
        self.pending = Some((*dir, data));
    }

    /// The data of the directory being walked (the one the last entry belongs to).
    pub fn top(&mut self) -> Option<&mut T> {
        self.levels.last_mut().map(|(_, d)| d)
    }

    /// Directories being walked, the root included.
    pub fn depth(&self) -> usize {
        self.levels.len()
    }

    /// The next step, `None` once the root directory is done.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Step<T>> {
        if let Some((dir, data)) = self.pending.take() {
            if self.levels.len() >= MAX_DIR_NESTING {
                return Some(Step::Failed(data, too_deep(&dir)));
            }
            match DirIter::new(self.repo, &dir) {
                Ok(it) => self.levels.push((it, data)),
                Err(e) => return Some(Step::Failed(data, e)),
            }
        }
        let (it, _) = self.levels.last_mut()?;
        match it.next_entry() {
            Ok(Some(e)) => Some(Step::Entry(e)),
            Ok(None) => self.levels.pop().map(|(_, d)| Step::Leave(d)),
            Err(e) => match self.salvage.then(|| it.skip_failed()).flatten() {
                Some(lost) => Some(Step::Skipped(e, lost)),
                None => self.levels.pop().map(|(_, d)| Step::Failed(d, e)),
            },
        }
    }
}

/// The chunks of a regular file's `content`, checked against the entry's `size`: at
/// the end the chunks must add up to exactly that many bytes (an inline list is checked
/// when its node is decoded; a chunk list only once read). `f` sees each chunk.
pub fn for_each_chunk(
    repo: &Repository,
    content: &Content,
    size: u64,
    f: &mut dyn FnMut(&ChunkRef) -> Result<()>,
) -> Result<()> {
    let mut total = 0u64;
    if let Content::Inline(cs) = content {
        // In the entry already: no iterator (it would copy the list).
        for c in cs {
            total = total.saturating_add(c.size as u64);
            f(c)?;
        }
        return check_size(content, total, size);
    }
    let mut it = ChunkIter::new(repo, content)?;
    while let Some(c) = it.next_chunk()? {
        total = total.saturating_add(c.size as u64);
        f(&c)?;
    }
    check_size(content, total, size)
}

/// The error for a file whose chunks add up to `total` bytes while its entry says
/// `size`; `Ok` when they agree.
pub fn check_size(content: &Content, total: u64, size: u64) -> Result<()> {
    if total == size {
        return Ok(());
    }
    let what = match content {
        Content::List(root) => root.to_string(),
        Content::Inline(_) => "inline chunk list".into(),
    };
    Err(Error::corrupt("tree", what, format!("the chunks add up to {total} bytes, the entry says {size}")))
}

/// How many of a file's `size` bytes hold data: all but its all-zero chunks
/// ([`Repository::is_zero_chunk`]), which are holes to a reader. A file's allocated
/// size (`st_blocks`) as the mount reports it, so `cp`, `tar` and `du` see holes where
/// the source had them. Reads one list node per level at a time.
pub fn data_bytes(repo: &Repository, content: &Content, size: u64) -> Result<u64> {
    let (mut at, mut data) = (0u64, 0u64);
    for_each_chunk(repo, content, size, &mut |c| {
        if !repo.is_zero_chunk(c, at, size) {
            data += c.size as u64;
        }
        at += c.size as u64;
        Ok(())
    })?;
    Ok(data)
}

/// `lseek(2)`'s SEEK_DATA (`hole` false) or SEEK_HOLE (`hole` true) from `offset` in a
/// file of `size` bytes: the first offset at or after `offset` in data (a chunk that is
/// not all zeros) or in a hole (an all-zero chunk, or the end of the file, where every
/// file has one). `None` (ENXIO) at or past the end, or when only holes remain and data
/// is sought. Reads one list node per level to find `offset`, then walks on.
pub fn seek_data(repo: &Repository, content: &Content, size: u64, offset: u64, hole: bool) -> Result<Option<u64>> {
    if offset >= size {
        return Ok(None);
    }
    let (mut it, mut start) = ChunkIter::at(repo, content, offset)?;
    while let Some(c) = it.next_chunk()? {
        let end = start.saturating_add(c.size as u64);
        if end > size {
            break; // damaged: the chunks run past the size; the rest reads as EIO
        }
        if repo.is_zero_chunk(&c, start, size) == hole {
            return Ok(Some(start.max(offset)));
        }
        start = end;
    }
    Ok(if hole { Some(size) } else { None })
}

/// Iterates a file's chunks in order, one list node per level in memory.
/// `R` as for [`DirIter`].
pub struct ChunkIter<R: Deref<Target = Repository>> {
    repo: R,
    stack: Vec<std::vec::IntoIter<ListChild>>,
    leaf: std::vec::IntoIter<ChunkRef>,
    /// The last step failed reading the top level's next child.
    failed: bool,
}

impl<R: Deref<Target = Repository>> ChunkIter<R> {
    /// Iterate `content`.
    pub fn new(repo: R, content: &Content) -> Result<ChunkIter<R>> {
        let mut it = ChunkIter { repo, stack: Vec::new(), leaf: Vec::new().into_iter(), failed: false };
        match content {
            Content::Inline(cs) => it.leaf = cs.clone().into_iter(),
            Content::List(root) => it.descend(root, None)?,
        }
        Ok(it)
    }

    /// Iterate `content` from the chunk that holds byte `offset`; also returns where that
    /// chunk starts. Interior nodes carry their children's byte counts, so this reads one
    /// node per level, not the list before `offset`. Past the end, the iterator is empty
    /// and the start is the file's length.
    pub fn at(repo: R, content: &Content, offset: u64) -> Result<(ChunkIter<R>, u64)> {
        let mut it = ChunkIter { repo, stack: Vec::new(), leaf: Vec::new().into_iter(), failed: false };
        let mut start = 0u64;
        match content {
            Content::Inline(cs) => it.leaf = cs.clone().into_iter(),
            Content::List(root) => {
                let (mut id, mut want) = (*root, None);
                loop {
                    match read_counted(&it.repo, &id, want)? {
                        Node::ListLeaf(cs) => {
                            it.leaf = cs.into_iter();
                            break;
                        }
                        Node::ListInterior(cs) => {
                            if it.stack.len() >= MAX_DEPTH {
                                return Err(Error::corrupt("tree", id, "chunk list too deep"));
                            }
                            let mut rest = cs.into_iter();
                            let next = rest.by_ref().find(|c| {
                                let inside = start.saturating_add(c.bytes) > offset;
                                if !inside {
                                    start = start.saturating_add(c.bytes);
                                }
                                inside
                            });
                            it.stack.push(rest);
                            match next {
                                Some(c) => (id, want) = (c.id, Some((c.chunks, c.bytes))),
                                None => break,
                            }
                        }
                        _ => return Err(Error::corrupt("tree", id, "expected a chunk list node, found a directory")),
                    }
                }
            }
        }
        while let Some(c) = it.leaf.as_slice().first() {
            if start.saturating_add(c.size as u64) > offset {
                break;
            }
            start += c.size as u64;
            it.leaf.next();
        }
        Ok((it, start))
    }

    fn descend(&mut self, id: &BlobId, want: Counted) -> Result<()> {
        match read_counted(&self.repo, id, want)? {
            Node::ListLeaf(cs) => self.leaf = cs.into_iter(),
            Node::ListInterior(cs) => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(Error::corrupt("tree", id, "chunk list too deep"));
                }
                self.stack.push(cs.into_iter())
            }
            _ => return Err(Error::corrupt("tree", id, "expected a chunk list node, found a directory")),
        }
        Ok(())
    }

    /// The next chunk, or `None` at the end. After an error the iterator is where it
    /// was: a child node is taken off its level only once it has been read, so a retry
    /// meets the same error instead of silently skipping that node's chunks.
    pub fn next_chunk(&mut self) -> Result<Option<ChunkRef>> {
        self.failed = false;
        loop {
            if let Some(c) = self.leaf.next() {
                return Ok(Some(c));
            }
            let Some(top) = self.stack.last() else {
                return Ok(None);
            };
            let level = self.stack.len() - 1;
            match top.as_slice().first().map(|c| (c.id, c.chunks, c.bytes)) {
                Some((id, chunks, bytes)) => {
                    self.failed = true;
                    self.descend(&id, Some((chunks, bytes)))?;
                    self.failed = false;
                    self.stack[level].next();
                }
                None => {
                    self.stack.pop();
                }
            }
        }
    }
}

impl<R: Deref<Target = Repository>> ChunkIter<R> {
    /// Step over the child node whose read made the last [`ChunkIter::next_chunk`] fail,
    /// with the chunks under it; returns (chunks, bytes) it held by its parent's counts,
    /// `None` if the last step did not fail. For salvage only (`repair snapshots`).
    pub fn skip_failed(&mut self) -> Option<(u64, u64)> {
        if !std::mem::take(&mut self.failed) {
            return None;
        }
        self.stack.last_mut()?.next().map(|c| (c.chunks, c.bytes))
    }
}

impl<R: Deref<Target = Repository>> Iterator for ChunkIter<R> {
    type Item = Result<ChunkRef>;
    fn next(&mut self) -> Option<Result<ChunkRef>> {
        self.next_chunk().transpose()
    }
}

/// Every blob under tree node `root`, for reachability (prune): each tree node's id
/// (directory and chunk-list nodes alike) and each data chunk's id is passed to `emit`,
/// `root` first. A subtree whose root is in `done` is not read again (its id is still
/// emitted), and every subtree walked to its end is added to `done`. `done` may forget
/// (an LRU): a forgotten subtree is walked again, which only emits ids again; it must
/// never hold a node whose subtree was not walked whole, and it does not: a node goes in
/// only after its last child.
///
/// Unlike [`Walk`], this reads nodes, not entries: it checks what reading a node checks
/// (authentication, kind, decoding), not the invariants between a node and its parent,
/// which concern readers of entries. Any node that cannot be read fails the traversal.
/// Memory: one decoded node's children per level (levels of directories and of node
/// trees: at most [`MAX_DIR_NESTING`] x [`MAX_DEPTH`]).
pub fn for_each_blob(
    repo: &Repository,
    root: &BlobId,
    done: &mut lru::LruCache<BlobId, ()>,
    emit: &mut dyn FnMut(&BlobId, crate::format::BlobKind) -> Result<()>,
) -> Result<()> {
    use crate::format::tree::Kind;
    use crate::format::BlobKind;
    /// A node being walked: its id and the children not visited yet (`true`: a tree node).
    struct Frame {
        id: BlobId,
        children: std::vec::IntoIter<(BlobId, bool)>,
    }
    let children = |node: Node| -> Vec<(BlobId, bool)> {
        match node {
            Node::DirLeaf(es) => {
                let mut out = vec![];
                for e in es {
                    match e.kind {
                        Kind::Dir(sub) => out.push((sub, true)),
                        Kind::File(Content::List(list)) => out.push((list, true)),
                        Kind::File(Content::Inline(cs)) => out.extend(cs.iter().map(|c| (c.id, false))),
                        _ => {}
                    }
                }
                out
            }
            Node::DirInterior(cs) => cs.into_iter().map(|c| (c.id, true)).collect(),
            Node::ListLeaf(cs) => cs.into_iter().map(|c| (c.id, false)).collect(),
            Node::ListInterior(cs) => cs.into_iter().map(|c| (c.id, true)).collect(),
        }
    };
    emit(root, BlobKind::Tree)?;
    if done.get(root).is_some() {
        return Ok(());
    }
    let mut stack = vec![Frame { id: *root, children: children(repo.read_tree(root)?).into_iter() }];
    while let Some(top) = stack.last_mut() {
        match top.children.next() {
            None => {
                done.put(top.id, ());
                stack.pop();
            }
            Some((id, false)) => emit(&id, BlobKind::Data)?,
            Some((id, true)) => {
                emit(&id, BlobKind::Tree)?;
                if done.get(&id).is_some() {
                    continue;
                }
                if stack.len() >= MAX_DIR_NESTING * MAX_DEPTH {
                    return Err(too_deep(&id));
                }
                let node = repo.read_tree(&id)?;
                stack.push(Frame { id, children: children(node).into_iter() });
            }
        }
    }
    Ok(())
}
