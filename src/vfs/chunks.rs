//! The mount's read path below the view: decrypted chunks in a byte-budgeted LRU
//! ([`ChunkCache`]), the buffers they are read and decoded into ([`Pool`]), and the
//! threads that load chunks ahead of sequential readers ([`Prefetcher`]).
//!
//! Memory: the cache's bytes (`--cache-size`), the pool's (a quarter of that), and per
//! prefetch thread one ranged read (at most [`Prefetcher::spacing`]'s `max`: 4 MiB) and
//! the chunk being decoded.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use crate::error::{Error, Result};
use crate::format::index::Location;
use crate::format::tree::{ChunkRef, Content, Kind};
use crate::format::BlobKind;
use crate::id::{BlobId, BlobSet};
use crate::repo::{plan, Repository, Run, Spacing, Wanted};
use crate::tree::DirIter;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An LRU charged by the bytes its values hold (as the caller counts them), evicting
/// the least recently used until the total fits `cap`; a value larger than `cap` is not
/// kept. The one mechanism behind the chunk cache and the view's node cache.
pub(super) struct ByteLru<K: std::hash::Hash + Eq, V> {
    lru: lru::LruCache<K, (V, usize)>,
    pub(super) bytes: usize,
    cap: usize,
}

impl<K: std::hash::Hash + Eq, V> ByteLru<K, V> {
    pub(super) fn new(cap: usize) -> Self {
        ByteLru { lru: lru::LruCache::unbounded(), bytes: 0, cap }
    }

    pub(super) fn get(&mut self, k: &K) -> Option<&V> {
        self.lru.get(k).map(|(v, _)| v)
    }

    pub(super) fn contains(&self, k: &K) -> bool {
        self.lru.contains(k)
    }

    /// Keep `v`, charged `bytes`; the values evicted to make room (or `v` itself when it
    /// alone is larger than the cap) go to `evicted`.
    pub(super) fn put(&mut self, k: K, v: V, bytes: usize, evicted: &mut dyn FnMut(V)) {
        if bytes > self.cap {
            return evicted(v);
        }
        if let Some((_, (old, n))) = self.lru.push(k, (v, bytes)) {
            self.bytes -= n;
            evicted(old);
        }
        self.bytes += bytes;
        while self.bytes > self.cap {
            match self.lru.pop_lru() {
                Some((_, (old, n))) => {
                    self.bytes -= n;
                    evicted(old);
                }
                None => break,
            }
        }
    }
}

/// Buffers smaller than this come from glibc's heap, which reuses them anyway; larger
/// ones glibc maps one by one in the mount ([`crate::sys::allocator_for_streaming`]), and
/// mapping, faulting in and unmapping a fresh MiB costs ~430 µs on the benchmark VM (a
/// page fault ~1.7 µs): as much as decrypting it.
const POOL_MIN: usize = crate::sys::STREAMING_MMAP_THRESHOLD;

/// Large byte buffers kept for reuse: the sealed bytes of ranged pack reads, decoded
/// chunks the cache has evicted, reads that span chunks. Holds at most `cap` bytes of
/// capacity; a buffer is handed out for a request of at least half its size.
pub struct Pool {
    bufs: Mutex<Vec<Vec<u8>>>,
    cap: usize,
}

impl Pool {
    /// A pool keeping at most `cap` bytes.
    pub fn new(cap: usize) -> Pool {
        Pool { bufs: Mutex::new(Vec::new()), cap }
    }

    /// A buffer with room for `len` bytes to keep (a chunk for the cache, charged by its
    /// capacity): a kept one of at most twice that, else a new one. Its length and
    /// contents are whatever it last held: callers clear or resize it.
    pub fn take(&self, len: usize) -> Vec<u8> {
        self.take_fitting(len, len.saturating_mul(2))
    }

    /// [`Pool::take`] for a buffer given back soon after (a ranged read, a joined read):
    /// any kept one large enough will do.
    pub fn take_transient(&self, len: usize) -> Vec<u8> {
        self.take_fitting(len, usize::MAX)
    }

    fn take_fitting(&self, len: usize, most: usize) -> Vec<u8> {
        if len >= POOL_MIN / 2 {
            let mut bufs = lock(&self.bufs);
            let fit = (bufs.iter().enumerate())
                .filter(|(_, b)| (len..=most).contains(&b.capacity()))
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            if let Some(i) = fit {
                return bufs.swap_remove(i);
            }
        }
        Vec::with_capacity(len)
    }

    /// Keep `buf` for reuse if it is large enough to be worth it. Past the cap the
    /// smallest buffers go first: a large buffer serves more requests (any up to its size
    /// for transient use, down to half of it for a chunk), and small ones left in the
    /// pool would crowd out the large ones it needs.
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() < POOL_MIN {
            return;
        }
        let mut bufs = lock(&self.bufs);
        bufs.push(buf);
        let mut held: usize = bufs.iter().map(Vec::capacity).sum();
        while held > self.cap {
            let Some(i) = (0..bufs.len()).min_by_key(|&i| bufs[i].capacity()) else { break };
            held -= bufs.swap_remove(i).capacity();
        }
    }

    /// Bytes of capacity kept now.
    pub fn bytes(&self) -> usize {
        lock(&self.bufs).iter().map(Vec::capacity).sum()
    }
}

/// Decrypted chunks by id, within a byte budget (each charged its buffer's capacity);
/// concurrent readers of one missing chunk wait for a single load. Chunks larger than
/// the budget are returned without caching.
pub struct ChunkCache {
    state: Mutex<CacheState>,
    loaded: Condvar,
    pool: Pool,
}

struct CacheState {
    lru: ByteLru<BlobId, Arc<Vec<u8>>>,
    loading: BlobSet,
}

impl ChunkCache {
    /// A cache of at most `cap` bytes of chunk data (and a [`Pool`] of a quarter of that).
    pub fn new(cap: usize) -> ChunkCache {
        ChunkCache {
            state: Mutex::new(CacheState { lru: ByteLru::new(cap), loading: BlobSet::default() }),
            loaded: Condvar::new(),
            pool: Pool::new(cap / 4),
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        lock(&self.state).lru.bytes
    }

    /// The buffers chunks are read and decoded into.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The chunk `id`, from the cache or loaded by `load` (once, however many ask).
    pub fn get(&self, id: &BlobId, load: impl FnOnce() -> Result<Vec<u8>>) -> Result<Arc<Vec<u8>>> {
        let mut s = lock(&self.state);
        loop {
            if let Some(d) = s.lru.get(id) {
                return Ok(d.clone());
            }
            if !s.loading.contains(id) {
                break;
            }
            s = self.loaded.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.loading.insert(*id);
        drop(s);
        self.load_claimed(id, load)
    }

    /// The chunk `id` if it is cached (never loads it).
    pub fn peek(&self, id: &BlobId) -> Option<Arc<Vec<u8>>> {
        lock(&self.state).lru.get(id).cloned()
    }

    /// Whether `id` is cached or being loaded.
    pub fn has(&self, id: &BlobId) -> bool {
        let s = lock(&self.state);
        s.lru.contains(id) || s.loading.contains(id)
    }

    /// Claim `id` for loading (by a prefetcher): false if it is cached or being loaded.
    /// A claim must be ended by [`ChunkCache::load_claimed`].
    pub fn claim(&self, id: &BlobId) -> bool {
        let mut s = lock(&self.state);
        if s.lru.contains(id) || s.loading.contains(id) {
            return false;
        }
        s.loading.insert(*id);
        true
    }

    /// Run `load` for `id`, claimed by the caller, and end the claim with its result
    /// ([`ChunkCache::finish`]); also when `load` panics, so that no reader waits for
    /// the chunk forever.
    pub fn load_claimed(&self, id: &BlobId, load: impl FnOnce() -> Result<Vec<u8>>) -> Result<Arc<Vec<u8>>> {
        struct Abandoned<'a>(&'a ChunkCache, BlobId);
        impl Drop for Abandoned<'_> {
            fn drop(&mut self) {
                let _ = self.0.finish(&self.1, Err(Error::InvalidInput("loading the chunk failed".into())));
            }
        }
        let guard = Abandoned(self, *id);
        let r = load();
        std::mem::forget(guard);
        self.finish(id, r)
    }

    /// End the load of `id`: keep the data if it fits, wake whoever waits for it. After
    /// an error nothing is kept, and a waiting reader loads the chunk itself (and gets
    /// the error for its own read).
    fn finish(&self, id: &BlobId, r: Result<Vec<u8>>) -> Result<Arc<Vec<u8>>> {
        let r = r.map(Arc::new);
        let mut s = lock(&self.state);
        s.loading.remove(id);
        let mut evicted = Vec::new();
        if let Ok(d) = &r {
            s.lru.put(*id, d.clone(), d.capacity(), &mut |old| evicted.push(old));
        }
        drop(s);
        self.loaded.notify_all();
        // Buffers nobody reads any more go back to the pool (outside the cache's lock).
        for d in evicted {
            if let Ok(buf) = Arc::try_unwrap(d) {
                self.pool.give(buf);
            }
        }
        r
    }
}

/// Load chunk `c` of a file: look it up, read its blob and open it (see [`open_chunk`]).
pub(super) fn load_chunk(repo: &Repository, pool: &Pool, c: &ChunkRef) -> Result<Vec<u8>> {
    let loc = repo.index().try_get(&c.id)?.ok_or_else(|| Error::NotFound { what: "blob", id: c.id.to_hex() })?;
    let mut sealed = pool.take_transient(loc.stored_len as usize);
    let from = loc.offset as u64;
    let r = repo
        .read_planned_into(&loc.pack, from, from + loc.stored_len as u64, &mut sealed)
        .and_then(|()| open_chunk(repo, pool, c, &loc, &mut sealed));
    pool.give(sealed);
    r
}

/// Decrypt, decompress and verify chunk `c` (whose blob is at `loc`) from its sealed
/// bytes, which this garbles, into a buffer of `pool`; its size must be the one the
/// file's chunk list gives.
fn open_chunk(repo: &Repository, pool: &Pool, c: &ChunkRef, loc: &Location, sealed: &mut [u8]) -> Result<Vec<u8>> {
    if loc.raw_len != c.size {
        return Err(Error::corrupt("blob", c.id, "size differs from the chunk list"));
    }
    let mut plain = pool.take(c.size as usize);
    match repo.open_blob_into(&c.id, BlobKind::Data, loc, sealed, &mut plain) {
        Ok(()) => Ok(plain),
        Err(e) => {
            pool.give(plain);
            Err(e)
        }
    }
}

/// Loads the chunks ahead of sequential readers into the cache, on its own threads.
/// Bounded: at most [`PREFETCH_QUEUE`] jobs wait (more are dropped: prefetching is only
/// a hint), each at most the window's bytes.
pub(super) struct Prefetcher {
    tx: SyncSender<Job>,
    threads: Vec<std::thread::JoinHandle<()>>,
    repo: Arc<Repository>,
    cache: Arc<ChunkCache>,
    /// How the chunks ahead of a reader are read: neighbours in one request, each of at
    /// most `max` bytes, so that a window is several requests in flight at once.
    spacing: Spacing,
}

/// Work for the prefetch threads.
pub(super) enum Job {
    /// Read these neighbouring chunks of a file with one request and load them.
    Run(Claimed),
    /// Find the small files of directory `tree` (whose entries have the inodes from
    /// `base`) from position `from`: up to `count` entries or `bytes` bytes, what `cp -a`
    /// and `rsync` read next, in listing order. Shared out as [`Job::Files`].
    Siblings { tree: BlobId, base: u64, from: u64, count: u64, bytes: u64 },
    /// Load these small files and hand each to the sink (see [`Sink`]).
    Files(Vec<AheadFile>),
    /// End the thread that takes it (one per thread when the view is dropped).
    Stop,
}

/// A run of chunks claimed for loading ([`ChunkCache::claim`]) when it was planned, so
/// that a reader wanting one of them waits for it instead of fetching it a second time.
/// Dropped before it is done (its job never ran, or a load panicked), it ends the claims
/// it still holds as failed loads: no reader waits forever, and waiting ones load the
/// chunk themselves. Memory: ~130 B per chunk.
pub(super) struct Claimed {
    cache: Arc<ChunkCache>,
    run: Run<ChunkRef>,
    /// The claims ended so far (the first `done` of `run.wants`).
    done: usize,
}

impl Drop for Claimed {
    fn drop(&mut self) {
        for w in &self.run.wants[self.done..] {
            let _ = self.cache.finish(&w.id, Err(Error::InvalidInput("the chunk was not loaded ahead".into())));
        }
    }
}

/// A small file to load ahead of its reader.
pub(super) struct AheadFile {
    /// Its inode; `None` for a hard link, whose inode is the first link's.
    ino: Option<u64>,
    size: u64,
    chunks: Vec<ChunkRef>,
}

/// Where whole small files loaded ahead go, by inode: the mount hands them to the
/// kernel's page cache (FUSE_NOTIFY_STORE), so that reading them needs no request. Set
/// once the filesystem is mounted; until then files are only cached.
pub type Sink = Box<dyn Fn(u64, &[u8]) + Send + Sync>;

/// Chunks per prefetch job once a directory's files are resolved: small jobs let both
/// threads decrypt at once.
const JOB_BYTES: u64 = 1 << 20;

/// The prefetch threads' time slice: long, so that any thread with the default one
/// (~1.5 ms here), such as fuser's answering the kernel or the reader copying out of the
/// mount, preempts them as soon as it wakes instead of waiting for their slice to end.
/// Measured with the kernel's FUSE tracepoints during `cp -a` of 7,680 small files out
/// of the mount: time in requests 0.63 and 0.74 s with it, 0.95 and 0.99 s without, where
/// 1% of LISTXATTRs waited 0.5-3 ms for a CPU.
const PREFETCH_SLICE: u64 = 10_000_000;

/// Jobs waiting for the prefetch threads.
const PREFETCH_QUEUE: usize = 16;

impl Prefetcher {
    pub(super) fn start(
        repo: Arc<Repository>,
        cache: Arc<ChunkCache>,
        sink: Arc<OnceLock<Sink>>,
        threads: usize,
        spacing: Spacing,
    ) -> Prefetcher {
        let (tx, rx) = sync_channel::<Job>(PREFETCH_QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..threads).map(|_| {
            let (rx, cache, tx, sink, repo) = (rx.clone(), cache.clone(), tx.clone(), sink.clone(), repo.clone());
            std::thread::spawn(move || {
                crate::sys::set_time_slice(PREFETCH_SLICE);
                let repo = &*repo;
                loop {
                    // Each thread holds a sender (to share work out), so the channel
                    // never closes by itself: a Stop ends the thread.
                    let job = match lock(&rx).recv() {
                        Ok(j) => j,
                        Err(_) => return,
                    };
                    match job {
                        Job::Stop => return,
                        Job::Run(run) => load_run(repo, run),
                        Job::Siblings { tree, base, from, count, bytes } => {
                            // Errors only end the hint: a reader meets them itself.
                            let Ok(runs) = small_files(repo, &tree, base, from, count, bytes) else { continue };
                            for run in runs {
                                // Shared out to the other threads when the queue has room.
                                if let Err(TrySendError::Full(Job::Files(run))) = tx.try_send(Job::Files(run)) {
                                    prefetch_files(repo, &cache, spacing, &run, sink.get());
                                }
                            }
                        }
                        Job::Files(run) => prefetch_files(repo, &cache, spacing, &run, sink.get()),
                    }
                }
            })
        });
        Prefetcher { threads: threads.collect(), tx, repo, cache, spacing }
    }

    /// Have `chunks` (the next ones of a file, in order) loaded ahead of their reader:
    /// claimed and planned into runs ([`claim_runs`]) here, on the reader's thread, so
    /// that the reader, arriving at one before its run is read, waits for it rather than
    /// asking for it again; the runs go to the threads, which read one each at a time
    /// (for a remote repository, as many requests in flight as connections).
    pub(super) fn load_ahead(&self, chunks: Vec<ChunkRef>) {
        for run in claim_runs(&self.repo, &self.cache, self.spacing, &chunks) {
            self.request(Job::Run(run));
        }
    }

    /// Ask for `job` to be done; dropped if the queue is full (a [`Claimed`] run then
    /// ends its claims).
    pub(super) fn request(&self, job: Job) {
        let _ = self.tx.try_send(job);
    }
}

impl Drop for Prefetcher {
    /// Stop the threads once they have done the jobs queued before (at most
    /// [`PREFETCH_QUEUE`]), so that nothing holds the repository after the view is gone.
    fn drop(&mut self) {
        for _ in &self.threads {
            let _ = self.tx.send(Job::Stop);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The small files (inline chunk lists) among `count` entries of directory `tree` from
/// position `from`, at most `bytes` in all, in runs of about [`JOB_BYTES`].
fn small_files(
    repo: &Repository,
    tree: &BlobId,
    base: u64,
    from: u64,
    count: u64,
    bytes: u64,
) -> Result<Vec<Vec<AheadFile>>> {
    let mut runs = vec![Vec::new()];
    let (mut total, mut run_bytes) = (0u64, 0u64);
    let mut it = DirIter::at(repo, tree, from)?;
    for pos in from..from.saturating_add(count) {
        let Some(e) = it.next_entry()? else { break };
        let Kind::File(Content::Inline(cs)) = &e.kind else { continue };
        if total.saturating_add(e.size) > bytes {
            break;
        }
        if run_bytes >= JOB_BYTES {
            runs.push(Vec::new());
            run_bytes = 0;
        }
        let ino = (e.nlink <= 1).then_some(base + pos);
        runs.last_mut().expect("one run at least").push(AheadFile { ino, size: e.size, chunks: cs.clone() });
        run_bytes += e.size;
        total += e.size;
    }
    runs.retain(|r| !r.is_empty());
    Ok(runs)
}

/// Load the chunks of `files` (a run of small files of one directory, in listing order)
/// and hand each file to `sink`. The chunks not cached or being loaded are claimed,
/// planned by pack ([`plan`]: a directory's files are seldom stored in listing order)
/// and read a run at a time ([`load_run`]); a file some chunk of which is not cached
/// then (its load failed, or the cache let it go), or whose chunks do not add up to its
/// size, is left to its reader. Chunks the index does not know are left to the reader,
/// whose own load reports them.
fn prefetch_files(
    repo: &Repository,
    cache: &Arc<ChunkCache>,
    spacing: Spacing,
    files: &[AheadFile],
    sink: Option<&Sink>,
) {
    let chunks: Vec<ChunkRef> = files.iter().flat_map(|f| f.chunks.iter().copied()).collect();
    for run in claim_runs(repo, cache, spacing, &chunks) {
        load_run(repo, run);
    }
    if let Some(sink) = sink {
        for f in files {
            store_file(cache, f, sink);
        }
    }
}

/// Hand file `f` to `sink` whole, if all its chunks are cached and add up to its size.
fn store_file(cache: &ChunkCache, f: &AheadFile, sink: &Sink) {
    let Some(ino) = f.ino.filter(|_| f.size > 0) else { return };
    let parts: Option<Vec<Arc<Vec<u8>>>> = f.chunks.iter().map(|c| cache.peek(&c.id)).collect();
    let Some(parts) = parts else { return };
    if parts.iter().map(|p| p.len() as u64).sum::<u64>() != f.size {
        return;
    }
    if let [one] = parts.as_slice() {
        sink(ino, one);
    } else {
        let mut joined = cache.pool().take_transient(f.size as usize);
        joined.clear();
        for p in &parts {
            joined.extend_from_slice(p);
        }
        sink(ino, &joined);
        cache.pool().give(joined);
    }
}

/// Claim the chunks of `chunks` that are not cached or being loaded and plan them into
/// runs by pack ([`plan`], by `spacing`), each read with one request ([`load_run`]).
/// Chunks the index does not know are left to the reader, whose own load reports them.
fn claim_runs(repo: &Repository, cache: &Arc<ChunkCache>, spacing: Spacing, chunks: &[ChunkRef]) -> Vec<Claimed> {
    let wants: Vec<Wanted<ChunkRef>> = (chunks.iter())
        .filter(|c| !cache.has(&c.id))
        .filter_map(|c| Some(Wanted { id: c.id, loc: repo.index().get(&c.id)?, to: *c }))
        // A chunk wanted twice is claimed (and loaded) once.
        .filter(|w| cache.claim(&w.id))
        .collect();
    // Every claim is in a run, whose drop ends it if nothing else does.
    plan(wants, spacing).into_iter().map(|run| Claimed { cache: cache.clone(), run, done: 0 }).collect()
}

/// Read claimed run `c` with one request ([`Repository::read_planned_into`]) and load
/// its chunks into the cache; if the read fails, each chunk is loaded on its own, so
/// that the error a reader meets names it.
fn load_run(repo: &Repository, mut c: Claimed) {
    let cache = c.cache.clone();
    let (pack, from, to) = (c.run.pack, c.run.from, c.run.to);
    let mut sealed = cache.pool().take_transient((to - from) as usize);
    let read = repo.read_planned_into(&pack, from, to, &mut sealed);
    while let Some(w) = c.run.wants.get(c.done) {
        let (chunk, loc) = (w.to, w.loc);
        // Counted first: `load_claimed` ends the claim, even if the load panics.
        c.done += 1;
        let at = (loc.offset as u64 - from) as usize;
        let _ = cache.load_claimed(&chunk.id, || match (&read, sealed.get_mut(at..at + loc.stored_len as usize)) {
            (Ok(()), Some(b)) => open_chunk(repo, cache.pool(), &chunk, &loc, b),
            _ => load_chunk(repo, cache.pool(), &chunk),
        });
    }
    cache.pool().give(sealed);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_pool_keeps_large_buffers_within_its_cap() {
        let pool = Pool::new(4 * MIB);
        pool.give(Vec::with_capacity(1000)); // small: the heap reuses those anyway
        assert_eq!(pool.bytes(), 0);
        for n in [MIB, 2 * MIB, MIB / 2] {
            pool.give(Vec::with_capacity(n));
        }
        assert_eq!(pool.bytes(), MIB + 2 * MIB + MIB / 2);
        pool.give(Vec::with_capacity(MIB)); // over the cap: the smallest goes
        assert_eq!(pool.bytes(), 4 * MIB);
        // A chunk takes a buffer of at most twice its size, the closest one.
        assert_eq!(pool.take(900 << 10).capacity(), MIB);
        assert_eq!(pool.take(3 * MIB).capacity(), 3 * MIB, "none fits: a new one");
        // A transient use takes any that is large enough.
        assert_eq!(pool.take_transient(300 << 10).capacity(), MIB);
        assert_eq!(pool.take_transient(300 << 10).capacity(), 2 * MIB);
        assert_eq!(pool.bytes(), 0);
    }

    #[test]
    fn evicted_chunks_go_back_to_the_pool() {
        let cache = ChunkCache::new(4 * MIB); // and a pool of 1 MiB
        let ids: Vec<BlobId> = (0..5u8).map(|i| BlobId([i; 32])).collect();
        for id in &ids {
            let d = cache.get(id, || Ok(vec![1u8; MIB])).unwrap();
            assert_eq!(d.len(), MIB);
        }
        assert!(cache.bytes() <= 4 * MIB);
        assert!(cache.has(&ids[4]) && !cache.has(&ids[0]));
        assert_eq!(cache.pool().bytes(), MIB, "the first chunk's buffer, evicted, is kept");
        // A chunk someone still reads is not recycled when evicted.
        let held = cache.get(&ids[1], || unreachable!("cached")).unwrap();
        for i in 10..14u8 {
            let _ = cache.get(&BlobId([i; 32]), || Ok(vec![2u8; MIB])).unwrap();
        }
        assert!(!cache.has(&ids[1]));
        assert!(held.iter().all(|&b| b == 1), "a buffer still read is never reused");
        assert!(cache.pool().bytes() <= cache.pool().cap);
    }

    #[test]
    fn a_claimed_run_dropped_before_it_is_read_ends_its_claims() {
        // A run that never reaches a thread (the queue was full, the view went away)
        // must not leave a reader waiting for its chunks forever.
        let cache = Arc::new(ChunkCache::new(MIB));
        let ids = [BlobId([1; 32]), BlobId([2; 32])];
        let loc = |offset| Location {
            pack: crate::id::FileId([9; 32]),
            offset,
            stored_len: 10,
            raw_len: 4,
            kind: BlobKind::Data,
            compression: crate::format::Compression::None,
        };
        let wants = (ids.iter().zip([0, 10]))
            .map(|(id, at)| Wanted { id: *id, loc: loc(at), to: ChunkRef { id: *id, size: 4 } })
            .collect();
        let mut run = plan(wants, Spacing::LOCAL);
        assert_eq!(run.len(), 1, "neighbours: one run");
        assert!(ids.iter().all(|id| cache.claim(id)));
        let claimed = Claimed { cache: cache.clone(), run: run.remove(0), done: 0 };
        let waiter = {
            let cache = cache.clone();
            std::thread::spawn(move || cache.get(&BlobId([2; 32]), || Ok(vec![5; 4])).map(|d| d.to_vec()))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "the reader waits for the claimed chunk");
        drop(claimed);
        assert_eq!(waiter.join().unwrap().unwrap(), vec![5; 4], "then loads it itself");
        assert!(!cache.has(&ids[0]), "nothing kept of a chunk not loaded");
    }

    #[test]
    fn a_failed_load_is_not_kept_and_the_next_reader_retries() {
        let cache = ChunkCache::new(MIB);
        let id = BlobId([7; 32]);
        assert!(cache.claim(&id));
        assert!(!cache.claim(&id), "claimed once");
        assert!(cache.finish(&id, Err(Error::InvalidInput("damaged".into()))).is_err());
        assert!(!cache.has(&id));
        assert_eq!(*cache.get(&id, || Ok(vec![3; 10])).unwrap(), vec![3; 10]);
    }
}
