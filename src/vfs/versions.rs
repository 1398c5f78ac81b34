//! `versions/HOST/`: one directory tree that is the union of all the host's snapshots,
//! where each regular file is a directory of its distinct versions.
//!
//! Nothing of it is built ahead: a directory of it is the same path in each of the
//! host's snapshots, kept as the distinct trees found there ([`Merged`]; a directory
//! unchanged between snapshots is one tree, its blobs being content-addressed), and it
//! is listed by merging those trees' sorted listings ([`Merge`]). So memory follows the
//! number of distinct trees of one directory (at most the host's snapshot count), never
//! the number of files: a listing holds one [`DirIter`] and one entry per tree.
//!
//! Inode numbers stay (directory, position) as everywhere (see `inodes`): a merged
//! directory's block is as long as its trees' lengths added up (tree `t`'s entries at
//! `offset(t) + their position in t`), and a name takes the position it has in the first
//! tree (by first snapshot) that holds it. So a name is numbered by one lookup per tree,
//! never by counting the merged listing, and found again from its number by reading
//! that tree's entry at that position.
//!
//! A name that is a directory in some snapshots and something else in others shows as
//! the directory (the merge of its trees); one that is a regular file in some and a
//! symlink or device in others shows as the file's versions. A name that is never a
//! directory nor a regular file shows as it is in the newest snapshot that has it.

use super::*;

/// One distinct tree (or entry) of a path across a host's snapshots: which snapshots,
/// by place in the snapshot list (oldest first), the path has it in, first and last.
#[derive(Clone, Copy, Debug)]
pub(super) struct Span {
    pub(super) id: BlobId,
    pub(super) first: u32,
    pub(super) last: u32,
}

/// A directory of `versions/HOST/`. Memory: 48 B per distinct tree (its span, and
/// once known its offset), and its entry.
#[derive(Debug)]
pub(super) struct Merged {
    /// The distinct trees of the path, ordered by first snapshot.
    pub(super) trees: Vec<Span>,
    /// The directory's own entry, from the newest snapshot that has it (none for a
    /// host's root, which is shown as a virtual directory).
    pub(super) entry: Option<Arc<Entry>>,
    /// Where each tree's positions start in the directory's inode block, and after them
    /// the block's length: read once (a root node per tree), by [`Merged::offsets`].
    offsets: std::sync::OnceLock<Vec<u64>>,
}

impl Merged {
    pub(super) fn new(trees: Vec<Span>, entry: Option<Arc<Entry>>) -> Merged {
        Merged { trees, entry, offsets: std::sync::OnceLock::new() }
    }

    /// Where each tree's positions start in the directory's inode block (one root node
    /// read per tree, the first time), and after them the block's length.
    pub(super) fn offsets(&self, repo: &Repository) -> Result<&[u64]> {
        if let Some(o) = self.offsets.get() {
            return Ok(o);
        }
        let mut at = 0u64;
        let mut out = Vec::with_capacity(self.trees.len() + 1);
        for t in &self.trees {
            out.push(at);
            at = at.saturating_add(crate::tree::dir_len(repo, &t.id)?);
        }
        out.push(at);
        Ok(self.offsets.get_or_init(|| out))
    }
}

/// A regular file of `versions/HOST/`, shown as a directory of its distinct contents.
#[derive(Debug)]
pub(super) struct Versions {
    /// One per distinct content (chunk list and size), ordered by the first snapshot
    /// holding it, which names it: (first, last snapshot holding it, its entry there).
    pub(super) list: Vec<(u32, u32, Arc<Entry>)>,
}

impl Versions {
    /// The version seen in the newest snapshot (its attributes are the directory's).
    pub(super) fn newest(&self) -> Option<&Arc<Entry>> {
        self.list.iter().max_by_key(|v| v.1).map(|v| &v.2)
    }
}

/// Names a merge kept for finding entries again steps through before giving up
/// ([`Vfs::refind`]).
const REFIND_STEPS: usize = 64;

/// What `name` is in a merged directory, from its entries in the directory's trees
/// (`hits`: each tree's span and entry, in the trees' order).
pub(super) fn merged_child(hits: Vec<(Span, Entry)>) -> Node {
    if hits.iter().any(|(_, e)| matches!(e.kind, Kind::Dir(_))) {
        let mut trees: Vec<Span> = Vec::new();
        let mut newest: Option<(u32, Entry)> = None;
        for (s, e) in hits {
            let Kind::Dir(id) = e.kind else { continue };
            match trees.iter_mut().find(|t| t.id == id) {
                Some(t) => {
                    t.first = t.first.min(s.first);
                    t.last = t.last.max(s.last);
                }
                None => trees.push(Span { id, ..s }),
            }
            if newest.as_ref().is_none_or(|(last, _)| s.last > *last) {
                newest = Some((s.last, e));
            }
        }
        trees.sort_by_key(|t| t.first);
        return Node::Merged(Arc::new(Merged::new(trees, newest.map(|(_, e)| Arc::new(e)))));
    }
    if hits.iter().any(|(_, e)| matches!(e.kind, Kind::File(_))) {
        let mut list: Vec<(u32, u32, Arc<Entry>)> = Vec::new();
        for (s, e) in hits {
            let Kind::File(c) = &e.kind else { continue };
            let same =
                |v: &&mut (u32, u32, Arc<Entry>)| v.2.size == e.size && matches!(&v.2.kind, Kind::File(d) if d == c);
            match list.iter_mut().find(same) {
                Some(v) => {
                    v.1 = v.1.max(s.last);
                    if s.first < v.0 {
                        (v.0, v.2) = (s.first, Arc::new(e));
                    }
                }
                None => list.push((s.first, s.last, Arc::new(e))),
            }
        }
        list.sort_by_key(|v| v.0);
        return Node::Versions(Arc::new(Versions { list }));
    }
    let (s, e) = hits.into_iter().max_by_key(|(s, _)| s.last).expect("a name has at least one entry");
    Node::Entry { snap: s.last, entry: Arc::new(e) }
}

/// A merged directory being listed: the next entry of each of its trees.
/// Memory: per tree one compact [`DirIter`] (one node per level, the leaf as its
/// plaintext, shared with the other trees in the same leaf: trees of one directory in
/// successive snapshots mostly hold the same leaves) and one entry.
pub(super) struct Merge {
    dir: Arc<Merged>,
    iters: Vec<DirIter<Arc<Repository>>>,
    /// Each tree's next entry and its position in that tree.
    heads: Vec<Option<(u64, Entry)>>,
    /// A merged entry that did not fit the caller's buffer: it comes first next time.
    pub(super) pending: Option<(Vec<u8>, Node, u64)>,
}

impl Merge {
    pub(super) fn start(repo: &Arc<Repository>, dir: &Arc<Merged>) -> Result<Merge> {
        dir.offsets(repo)?;
        let mut iters = Vec::with_capacity(dir.trees.len());
        let mut heads = Vec::with_capacity(dir.trees.len());
        let shared = crate::tree::SharedLeaves::default();
        for t in &dir.trees {
            let mut it = DirIter::compact(repo.clone(), &t.id, shared.clone())?;
            heads.push(it.next_entry()?.map(|e| (0, e)));
            iters.push(it);
        }
        Ok(Merge { dir: dir.clone(), iters, heads, pending: None })
    }

    /// The next name of the merged listing, with its node and its position in the
    /// directory's inode block.
    pub(super) fn next(&mut self) -> Result<Option<(Vec<u8>, Node, u64)>> {
        if let Some(p) = self.pending.take() {
            return Ok(Some(p));
        }
        let Some(name) = self.heads.iter().flatten().map(|(_, e)| &e.name).min().cloned() else {
            return Ok(None);
        };
        // Set by `start`: read once, kept in the directory.
        let offsets = self.dir.offsets.get().expect("read by Merge::start");
        let mut hits = Vec::new();
        let mut pos = None;
        for (i, head) in self.heads.iter_mut().enumerate() {
            if !matches!(head, Some((_, e)) if e.name == name) {
                continue;
            }
            // Advance this tree first: after an error the listing is started over.
            let next = self.iters[i].next_entry()?;
            let (p, e) = head.take().expect("matched");
            *head = next.map(|n| (p + 1, n));
            pos.get_or_insert(offsets[i] + p);
            hits.push((self.dir.trees[i], e));
        }
        Ok(Some((name, merged_child(hits), pos.expect("some tree has the name"))))
    }
}

impl Vfs {
    /// Entry `name` of merged directory `dir`, with its position in the directory's
    /// inode block: one lookup per tree.
    pub(super) fn merged_lookup(&self, dir: &Merged, name: &[u8]) -> Result<(u64, Node)> {
        let offsets = dir.offsets(&self.repo)?;
        let mut hits = Vec::new();
        let mut pos = None;
        for (i, t) in dir.trees.iter().enumerate() {
            if let Some((p, e)) = crate::tree::lookup_indexed(&self.repo, &t.id, name)? {
                pos.get_or_insert(offsets[i] + p);
                hits.push((*t, e));
            }
        }
        let pos = pos.ok_or(ViewError::NoEntry)?;
        Ok((pos, merged_child(hits)))
    }

    /// The entry at position `pos` of merged directory `dir`'s inode block: from the
    /// running merge if it is a few names ahead ([`Vfs::refind`]), else by one lookup
    /// per tree.
    pub(super) fn merged_nth(&self, dir: &Arc<Merged>, pos: u64) -> Result<Option<Node>> {
        if let Some(node) = self.refind(dir, pos) {
            return Ok(Some(node));
        }
        let offsets = dir.offsets(&self.repo)?;
        let Some(i) = offsets.partition_point(|o| *o <= pos).checked_sub(1) else { return Ok(None) };
        let Some(t) = dir.trees.get(i) else { return Ok(None) };
        let Some(e) = crate::tree::nth_entry(&self.repo, &t.id, pos - offsets[i])? else { return Ok(None) };
        // The name is numbered by the first tree holding it: only that tree's position
        // of it was ever handed out.
        let (at, node) = self.merged_lookup(dir, &e.name)?;
        Ok((at == pos).then_some(node))
    }

    /// The entry at position `pos` of `dir` if the merge kept for finding entries again
    /// reaches it within [`REFIND_STEPS`] names (a merge of `dir` started if the one kept
    /// is another directory's, or finished). Processes that list a directory and then
    /// each of its entries (`ls -lR`, `find`, `cp -a`) ask for the entries that have
    /// left the node cache in the merge's order, so each is found in a step or two
    /// instead of one lookup per tree. A miss (an entry behind the merge, or far ahead)
    /// costs those steps and leaves the merge where it stopped; an error drops it.
    fn refind(&self, dir: &Arc<Merged>, pos: u64) -> Option<Node> {
        let mut kept = self.refind.lock().unwrap_or_else(|e| e.into_inner());
        let mut merge = match kept.take() {
            Some((d, m)) if Arc::ptr_eq(&d, dir) => m,
            _ => Merge::start(&self.repo, dir).ok()?,
        };
        for _ in 0..REFIND_STEPS {
            match merge.next() {
                Ok(Some((_, node, at))) if at == pos => {
                    *kept = Some((dir.clone(), merge));
                    return Some(node);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
        *kept = Some((dir.clone(), merge));
        None
    }

    /// The name version `v` of a file is shown under: its first snapshot's.
    pub(super) fn version_name(&self, v: &(u32, u32, Arc<Entry>)) -> &[u8] {
        self.snaps.get(v.0 as usize).map_or(b"?", |s| s.name.as_bytes())
    }
}
