//! Inode numbers derived from (directory, position), and the nodes behind them: found
//! again from their directory when the byte-budgeted node cache let them go.

use super::*;

/// Inode numbers are derived, not remembered per inode: the first time a directory's
/// children need numbers, it gets a block of consecutive ones, one per entry in name
/// order (snapshots never change, so positions are stable). An inode number is then
/// (directory, position), and its node can always be found again from the directory's
/// tree; only a byte-budgeted LRU of nodes stays in RAM. Memory: per directory given a
/// block, ~80 B (its [`Block`] and its entry in `bases`), so it grows with the
/// directories visited, not the files; per hard-linked file visited (source nlink > 1),
/// ~80 B in `links` (every link must show the first link's inode).
pub(super) struct Inodes {
    /// The next inode number to hand out.
    pub(super) next: u64,
    /// Blocks by first inode number (ascending: blocks are handed out in order).
    pub(super) blocks: Vec<Block>,
    /// First inode number of each directory's block.
    pub(super) bases: HashMap<u64, u64>,
    /// Hard-linked files: (snapshot, source device, source inode) -> inode shown.
    pub(super) links: HashMap<(u32, u64, u64), u64>,
    /// Recently used nodes, charged as estimated by [`node_bytes`].
    pub(super) nodes: ByteLru<u64, Node>,
}

impl Inodes {
    /// The block holding `ino`: (directory, position).
    pub(super) fn locate(&self, ino: u64) -> Option<(u64, u64)> {
        let i = self.blocks.partition_point(|b| b.base <= ino);
        let b = self.blocks.get(i.checked_sub(1)?)?;
        (ino - b.base < b.len).then(|| (b.dir, ino - b.base))
    }

    pub(super) fn remember(&mut self, ino: u64, node: &Node) {
        self.nodes.put(ino, node.clone(), node_bytes(node), &mut drop);
    }
}

/// Inode numbers `base..base + len` are the entries of directory `dir`, in name order.
pub(super) struct Block {
    pub(super) base: u64,
    pub(super) len: u64,
    pub(super) dir: u64,
}

/// What a cached node costs, roughly: the enum, the entry and what it points to.
pub(super) fn node_bytes(n: &Node) -> usize {
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
        Node::Link(t) => 96 + t.len(),
        Node::Merged(m) => {
            let e = m.entry.as_ref().map_or(0, |e| node_bytes(&Node::Entry { snap: 0, entry: e.clone() }));
            96 + m.trees.len() * std::mem::size_of::<Span>() + e
        }
        Node::Versions(v) => {
            let each = |e: &Arc<Entry>| 16 + node_bytes(&Node::Entry { snap: 0, entry: e.clone() });
            96 + v.list.iter().map(|x| each(&x.2)).sum::<usize>()
        }
        Node::Virtual(_) => 96,
    }
}

impl Vfs {
    /// Bytes of cached nodes (for tests: it stays within its share).
    pub fn node_cache_bytes(&self) -> usize {
        self.inodes.lock().unwrap_or_else(|e| e.into_inner()).nodes.bytes
    }

    /// The node of inode `ino`: from the cache, or found again from its directory (whose
    /// node is found the same way, up to the root). Iterative: up to the nearest
    /// ancestor still cached, then down again, so that no depth of directories can
    /// overflow a thread's stack (16 B per level on the way).
    pub(super) fn node(&self, ino: u64) -> Result<Node> {
        let mut down = Vec::new();
        let mut at = ino;
        let mut node = loop {
            if at == ROOT {
                break Node::Virtual(Layout::ROOT);
            }
            let mut t = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = t.nodes.get(&at) {
                break n.clone();
            }
            let (dir, pos) = t.locate(at).ok_or(ViewError::NoEntry)?;
            // A directory's block is handed out after the directory has its number, so
            // this only ends a loop that cannot happen.
            if dir >= at {
                return Err(ViewError::NoEntry);
            }
            down.push((at, pos));
            at = dir;
        };
        while let Some((i, pos)) = down.pop() {
            node = self.nth_child(&node, pos)?.ok_or(ViewError::NoEntry)?;
            self.inodes.lock().unwrap_or_else(|e| e.into_inner()).remember(i, &node);
        }
        Ok(node)
    }

    /// The entry at position `pos` (name order) of directory node `dir`.
    pub(super) fn nth_child(&self, dir: &Node, pos: u64) -> Result<Option<Node>> {
        match dir {
            Node::Entry { snap, entry } => match &entry.kind {
                Kind::Dir(tree) => Ok(crate::tree::nth_entry(&self.repo, tree, pos)?
                    .map(|e| Node::Entry { snap: *snap, entry: Arc::new(e) })),
                _ => Err(ViewError::NotDir),
            },
            Node::Link(_) => Err(ViewError::NotDir),
            Node::Virtual(d) => {
                let rows = self.layout.rows(*d);
                Ok(usize::try_from(pos).ok().and_then(|i| rows.get(i)).map(|(_, v)| self.virtual_node(v)))
            }
            Node::Merged(m) => self.merged_nth(m, pos),
            Node::Versions(v) => Ok(usize::try_from(pos)
                .ok()
                .and_then(|i| v.list.get(i))
                .map(|(snap, _, entry)| Node::Entry { snap: *snap, entry: entry.clone() })),
        }
    }

    /// The first inode number of directory `ino`'s block, giving it one if it has none.
    pub(super) fn base(&self, ino: u64, dir: &Node) -> Result<u64> {
        if let Some(b) = self.inodes.lock().unwrap_or_else(|e| e.into_inner()).bases.get(&ino) {
            return Ok(*b);
        }
        let (len, tree) = match dir {
            Node::Entry { entry, .. } => match &entry.kind {
                Kind::Dir(tree) => (crate::tree::dir_len(&self.repo, tree)?, Some(*tree)),
                _ => return Err(ViewError::NotDir),
            },
            Node::Link(_) => return Err(ViewError::NotDir),
            Node::Virtual(d) => (self.layout.rows(*d).len() as u64, None),
            Node::Merged(m) => (*m.offsets(&self.repo)?.last().expect("one more than trees"), None),
            Node::Versions(v) => (v.list.len() as u64, None),
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
                return Err(Error::corrupt("tree", id, format!("directory claims {len} entries")).into());
            }
        };
        t.blocks.push(Block { base, len, dir: ino });
        t.bases.insert(ino, base);
        Ok(base)
    }

    /// The inode of the entry at position `pos` of directory `dir` (with block `base`),
    /// whose node is `node`; every link of a hard-linked file gets the first one's.
    pub(super) fn ino_of(&self, base: u64, pos: u64, node: &Node) -> u64 {
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
}
