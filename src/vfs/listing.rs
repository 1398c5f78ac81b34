//! Directory listings by offset, streamed through a cursor kept between the calls of
//! one listing (the kernel sends no OPENDIR).

use super::*;

/// A directory being listed: a position in its listing, kept between the calls of one
/// listing (the kernel sends no OPENDIR: see [`Vfs::readdir`]).
pub(super) struct DirCursor {
    /// Offset of the next entry `iter` yields: "." is at 0, ".." at 1, entry `i` (name
    /// order) at `i + 2`; an entry's "next offset" is its own plus one, so the entry
    /// handed out with next offset `n` is at position `n - 3` (as for virtual directories).
    pub(super) next: u64,
    /// Where the listing stands, once it has been started (or after an error, `None`:
    /// the next call starts over from `next`).
    pub(super) at: Option<Stream>,
}

/// The source of a listing's entries.
pub(super) enum Stream {
    /// A snapshot's directory: its tree, and an entry taken from it that did not fit
    /// the caller's buffer (it comes first next time).
    Tree { iter: DirIter<Arc<Repository>>, pending: Option<Arc<Entry>> },
    /// A directory of `versions/`: the merge of its trees.
    Merge(Merge),
}

/// Receives [`Vfs::readdir`]'s entries: name, type, inode number, next offset; returns
/// false when the caller's buffer is full.
pub type ReaddirFn<'a> = &'a mut dyn FnMut(&[u8], FileKind, u64, u64) -> bool;

/// Receives a listing's entries: name, node and position in the directory's inode
/// block (`None` for "." and ".."), next offset; returns false when the caller's buffer
/// is full.
pub(super) type ListFn<'a> = &'a mut dyn FnMut(&[u8], Option<(&Node, u64)>, u64) -> bool;

/// Listings kept between calls: a listing abandoned halfway (no RELEASEDIR says so) is
/// dropped once this many others ran since; one taken up again after that starts over
/// from its offset (one node read per level).
pub(super) const LISTINGS: usize = 16;

impl Vfs {
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
            Some((n, pos)) => add(name, kind_of(n), base + pos, next),
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
            Some((n, pos)) => {
                let ino = self.ino_of(base, pos, n);
                add(name, &self.attr_of(ino, n), next)
            }
        })
    }

    /// The listing behind [`Vfs::readdir`] of directory `dir`, whose node is `node`: each
    /// entry with its node (`None` for "." and ".."), through the cursor of the listing
    /// this call continues, if it is still kept.
    pub(super) fn list(&self, dir: u64, node: &Node, offset: u64, add: ListFn<'_>) -> Result<()> {
        if kind_of(node) != FileKind::Dir {
            return Err(ViewError::NotDir);
        }
        let listings = || self.listings.lock().unwrap_or_else(|e| e.into_inner());
        let taken = listings().pop(&(dir, offset));
        let mut h = taken.unwrap_or(DirCursor { next: 2, at: None });
        let mut added = false;
        let r = self.list_from(&mut h, node, offset, &mut |name, n, next| {
            let fits = add(name, n, next);
            added |= fits;
            fits
        });
        // A call that added nothing is the listing's end (or a buffer too small for one
        // entry, which the kernel never sends): nothing to keep.
        if r.is_ok() && added && h.at.is_some() {
            listings().put((dir, h.next), h);
        }
        r
    }

    /// [`Vfs::list`] through cursor `h`.
    pub(super) fn list_from(&self, h: &mut DirCursor, node: &Node, offset: u64, add: ListFn<'_>) -> Result<()> {
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
                Kind::Dir(t) => (*snap, *t),
                _ => return Ok(()),
            },
            Node::Virtual(d) => {
                for (i, (name, v)) in self.layout.rows(*d).iter().enumerate().skip((off - 2) as usize) {
                    if !add(name, Some((&self.virtual_node(v), i as u64)), i as u64 + 3) {
                        break;
                    }
                }
                return Ok(());
            }
            Node::Versions(v) => {
                for (i, x) in v.list.iter().enumerate().skip((off - 2) as usize) {
                    let n = Node::Entry { snap: x.0, entry: x.2.clone() };
                    if !add(self.version_name(x), Some((&n, i as u64)), i as u64 + 3) {
                        break;
                    }
                }
                return Ok(());
            }
            Node::Merged(m) => return self.list_merged(h, m, off, add),
            Node::Link(_) => return Ok(()),
        };
        // Tree directories stream: continue where the last call stopped, or seek by the
        // interior nodes' entry counts (a seek back, rare: rewinddir).
        let (iter, pending) = match &mut h.at {
            Some(Stream::Tree { iter, pending }) if h.next == off => (iter, pending),
            _ => {
                let iter = DirIter::at(self.repo.clone(), &tree, off - 2)?;
                h.next = off;
                match h.at.insert(Stream::Tree { iter, pending: None }) {
                    Stream::Tree { iter, pending } => (iter, pending),
                    Stream::Merge(_) => unreachable!("just set"),
                }
            }
        };
        loop {
            let e = match pending.take() {
                Some(e) => e,
                None => match iter.next_entry() {
                    Ok(Some(e)) => Arc::new(e),
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        // The next call seeks to `h.next` again from the root node.
                        h.at = None;
                        return Err(e.into());
                    }
                },
            };
            let child = Node::Entry { snap, entry: e.clone() };
            if !add(&e.name, Some((&child, h.next - 2)), h.next + 1) {
                *pending = Some(e);
                return Ok(());
            }
            h.next += 1;
        }
    }

    /// [`Vfs::list_from`] of a directory of `versions/`: its trees merged by name. Offsets
    /// count the merged entries (one after another, as for a tree); a listing taken up
    /// again elsewhere than where its cursor stands merges from the start up to there.
    fn list_merged(&self, h: &mut DirCursor, m: &Arc<Merged>, off: u64, add: ListFn<'_>) -> Result<()> {
        let merge = match &mut h.at {
            Some(Stream::Merge(merge)) if h.next == off => merge,
            _ => {
                h.at = None;
                let mut merge = Merge::start(&self.repo, m)?;
                for _ in 2..off {
                    if merge.next()?.is_none() {
                        break;
                    }
                }
                h.next = off;
                match h.at.insert(Stream::Merge(merge)) {
                    Stream::Merge(merge) => merge,
                    Stream::Tree { .. } => unreachable!("just set"),
                }
            }
        };
        loop {
            let (name, node, pos) = match merge.next() {
                Ok(Some(x)) => x,
                Ok(None) => return Ok(()),
                Err(e) => {
                    h.at = None;
                    return Err(e);
                }
            };
            if !add(&name, Some((&node, pos)), h.next + 1) {
                merge.pending = Some((name, node, pos));
                return Ok(());
            }
            h.next += 1;
        }
    }
}
