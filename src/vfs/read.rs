//! Reads at an offset: a cursor per file in its chunk list, read-ahead of sequential
//! readers, holes (all-zero chunks) answered without loading them, and SEEK_DATA/SEEK_HOLE.

use super::*;

/// A file being read: where the last read ended, to continue sequential reads and prefetch.
pub(super) struct FileHandle {
    pub(super) content: Content,
    pub(super) size: u64,
    pub(super) cursor: Option<Cursor>,
}

/// A position in a file's chunk list (memory: one list node per level, plus the
/// prefetch window's chunk references, 36 B each).
pub(super) struct Cursor {
    /// File offset where `ahead[0]` starts.
    pub(super) start: u64,
    /// The chunk at `start` and the ones after it already taken from `iter`.
    pub(super) ahead: VecDeque<ChunkRef>,
    /// The rest of the list.
    pub(super) iter: ChunkIter<Arc<Repository>>,
    /// File offset up to which chunks were handed to the prefetcher.
    pub(super) fetched: u64,
    /// Where the last read ended: a read starting there is sequential.
    pub(super) last_end: u64,
}

/// Most chunk references a cursor holds ahead of its reader (36 B each): the window in
/// bytes bounds them for chunks of the chunker's sizes, this for lists of tiny ones.
pub(super) const AHEAD_CHUNKS: usize = 4096;

/// A read this far past the cursor seeks through the list nodes instead of walking.
pub(super) const WALK_LIMIT: u64 = 16 << 20;

/// Files with chunk-list trees whose data bytes are remembered.
pub(super) const DATA_BYTES: usize = 4096;

/// Files whose read cursors are kept (each one list node per level and the prefetch
/// window's chunk references).
pub(super) const OPEN_FILES: usize = 64;

/// What [`Vfs::read`] returns: a part of one cached chunk, shared rather than copied, or
/// (for a read that spans chunks) the parts joined in a buffer of the chunk pool, which
/// gets it back on drop. Dereferences to the bytes.
pub struct ReadData<'a> {
    pub(super) first: Option<(Arc<Vec<u8>>, Range<usize>)>,
    pub(super) joined: Option<Vec<u8>>,
    pub(super) pool: &'a Pool,
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

impl Vfs {
    /// The bytes of a file's chunks that hold data ([`crate::tree::data_bytes`]): an
    /// inline list is walked each time (no reads), a chunk-list tree once. A list that
    /// cannot be read counts as all data (its reads report the damage).
    pub(super) fn data_bytes(&self, content: &Content, size: u64) -> u64 {
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
                Kind::File(c) => Ok(crate::tree::seek_data(&self.repo, c, entry.size, offset, hole)?),
                _ => Err(ViewError::NotFile),
            },
            _ => Err(ViewError::NotFile),
        }
    }

    /// At least `len` zero bytes, shared.
    pub(super) fn zeros(&self, len: usize) -> Arc<Vec<u8>> {
        let mut z = self.zeros.lock().unwrap_or_else(|e| e.into_inner());
        if z.len() < len {
            *z = Arc::new(vec![0; len]);
        }
        z.clone()
    }

    /// The read state of file `ino`: the cursor of its last read, kept for the
    /// [`OPEN_FILES`] most recently read files (reads need no open: the kernel is told
    /// not to send OPEN and RELEASE, which saves two round trips per file copied).
    pub(super) fn file(&self, ino: u64) -> Result<Arc<Mutex<FileHandle>>> {
        if let Some(h) = self.files.lock().unwrap_or_else(|e| e.into_inner()).get(&ino) {
            return Ok(h.clone());
        }
        let (content, size) = match self.node(ino)? {
            Node::Entry { entry, .. } => match &entry.kind {
                Kind::File(c) => (c.clone(), entry.size),
                _ => return Err(ViewError::NotFile),
            },
            _ => return Err(ViewError::NotFile),
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
    pub(super) fn read_into<'a>(
        &'a self,
        h: &mut FileHandle,
        offset: u64,
        end: u64,
        out: &mut ReadData<'a>,
    ) -> Result<()> {
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
                    None if cur.start < end => return Err(mismatch("end before").into()),
                    None => break,
                }
            }
            let c = cur.ahead[0];
            let c_end = cur.start + c.size as u64;
            if c_end > offset {
                if cur.start >= end {
                    if end == size {
                        return Err(mismatch("go on past").into());
                    }
                    break;
                }
                if c_end > size {
                    return Err(mismatch("go on past").into());
                }
                let from = (offset.max(cur.start) - cur.start) as usize;
                let to = (end.min(c_end) - cur.start) as usize;
                if self.repo.is_zero_chunk(&c, cur.start, size) {
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

    /// Hand the chunks of the next `window` bytes after `end` to the prefetcher (those
    /// not handed over yet, and not holes), in a file of `size` bytes.
    pub(super) fn read_ahead(&self, cur: &mut Cursor, end: u64, size: u64) -> Result<()> {
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
            if at >= cur.fetched && at >= end && !self.repo.is_zero_chunk(&c, at, size) {
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

    pub(super) fn chunk(&self, c: &ChunkRef) -> Result<Arc<Vec<u8>>> {
        Ok(self.chunks.get(&c.id, || self.repo.load_chunk(self.chunks.pool(), c))?)
    }
}
