//! Decrypted chunks in a byte-budgeted LRU ([`ChunkCache`]) and the buffers they are read
//! and decoded into ([`Pool`]): the one cache restore and the mount read through. Chunks
//! come into it from [`Repository::read_run`] (a planned run of a pack, each blob opened
//! once) or one at a time ([`Repository::load_chunk`]).
//!
//! Memory: the cache's bytes (its cap, each chunk charged its buffer's capacity, plus
//! ~100 B of LRU and map entry per chunk) and the pool's (a quarter of the cap).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::format::tree::ChunkRef;
use crate::id::{BlobId, BlobSet};
use crate::repo::Repository;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An LRU charged by the bytes its values hold (as the caller counts them), evicting
/// the least recently used until the total fits `cap`; a value larger than `cap` is not
/// kept. The one mechanism behind the chunk cache and the view's node cache.
pub struct ByteLru<K: std::hash::Hash + Eq, V> {
    lru: lru::LruCache<K, (V, usize)>,
    /// Bytes charged now.
    pub bytes: usize,
    cap: usize,
}

impl<K: std::hash::Hash + Eq, V> ByteLru<K, V> {
    /// An empty LRU of at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        ByteLru { lru: lru::LruCache::unbounded(), bytes: 0, cap }
    }

    /// The value of `k`, now the most recently used.
    pub fn get(&mut self, k: &K) -> Option<&V> {
        self.lru.get(k).map(|(v, _)| v)
    }

    /// Whether `k` is kept (without touching its place).
    pub fn contains(&self, k: &K) -> bool {
        self.lru.contains(k)
    }

    /// Keep `v`, charged `bytes`; the values evicted to make room (or `v` itself when it
    /// alone is larger than the cap) go to `evicted`.
    pub fn put(&mut self, k: K, v: V, bytes: usize, evicted: &mut dyn FnMut(V)) {
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
/// capacity; a buffer is handed out for a chunk of at least half its size (any size in
/// a [`Pool::transient`] pool, and for [`Pool::take_transient`]).
pub struct Pool {
    bufs: Mutex<Vec<Vec<u8>>>,
    cap: usize,
    /// Every buffer is given back soon after it is taken: [`Pool::take`] is
    /// [`Pool::take_transient`].
    transient: bool,
}

impl Pool {
    /// A pool keeping at most `cap` bytes.
    pub fn new(cap: usize) -> Pool {
        Pool { bufs: Mutex::new(Vec::new()), cap, transient: false }
    }

    /// A pool keeping at most `cap` bytes, whose buffers are given back soon after they
    /// are taken (restore's, where few chunks are kept): any kept buffer large enough
    /// serves, so that a few buffers are reused over and over as one per reader was.
    pub fn transient(cap: usize) -> Pool {
        Pool { transient: true, ..Pool::new(cap) }
    }

    /// A buffer with room for `len` bytes to keep (a chunk for the cache, charged by its
    /// capacity): a kept one of at most twice that, else a new one. Its length and
    /// contents are whatever it last held: callers clear or resize it.
    pub fn take(&self, len: usize) -> Vec<u8> {
        match self.transient {
            true => self.take_transient(len),
            false => self.take_fitting(len, len.saturating_mul(2)),
        }
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
        ChunkCache::with_pool(cap, Pool::new(cap / 4))
    }

    /// A cache of at most `cap` bytes of chunk data, reading into `pool`.
    pub fn with_pool(cap: usize, pool: Pool) -> ChunkCache {
        ChunkCache {
            state: Mutex::new(CacheState { lru: ByteLru::new(cap), loading: BlobSet::default() }),
            loaded: Condvar::new(),
            pool,
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

    /// Keep chunk `id`, opened by a reader that did not claim it (restore's), if it is
    /// neither cached nor being loaded; otherwise its buffer goes back to the pool once
    /// nobody else holds it.
    pub fn keep(&self, id: &BlobId, data: Arc<Vec<u8>>) {
        let mut s = lock(&self.state);
        if s.lru.contains(id) || s.loading.contains(id) {
            drop(s);
            return self.give_back(data);
        }
        s.loading.insert(*id);
        drop(s);
        let _ = self.settle(id, Ok(data));
    }

    /// Give `data`'s buffer back to the pool if nobody else holds it.
    pub fn give_back(&self, data: Arc<Vec<u8>>) {
        if let Ok(buf) = Arc::try_unwrap(data) {
            self.pool.give(buf);
        }
    }

    /// End the load of `id`, claimed: keep the data if it fits, wake whoever waits for
    /// it. After an error nothing is kept, and a waiting reader loads the chunk itself
    /// (and gets the error for its own read).
    pub fn finish(&self, id: &BlobId, r: Result<Vec<u8>>) -> Result<Arc<Vec<u8>>> {
        self.settle(id, r.map(Arc::new))
    }

    /// [`ChunkCache::finish`] with the data shared already.
    fn settle(&self, id: &BlobId, r: Result<Arc<Vec<u8>>>) -> Result<Arc<Vec<u8>>> {
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
            self.give_back(d);
        }
        r
    }
}

impl Repository {
    /// Load chunk `c` of a file on its own: look it up, read its blob with one request
    /// and open it into a buffer of `pool`. Its size must be the one the file's chunk
    /// list gives.
    pub fn load_chunk(&self, pool: &Pool, c: &ChunkRef) -> Result<Vec<u8>> {
        let loc = self.index().try_get(&c.id)?.ok_or_else(|| Error::NotFound { what: "blob", id: c.id.to_hex() })?;
        if loc.raw_len != c.size {
            return Err(Error::corrupt("blob", c.id, "size differs from the chunk list"));
        }
        let mut sealed = pool.take_transient(loc.stored_len as usize);
        let from = loc.offset as u64;
        let r = (self.read_planned_into(&loc.pack, from, from + loc.stored_len as u64, &mut sealed))
            .and_then(|()| self.open_data_into(&c.id, &loc, &mut sealed, pool));
        pool.give(sealed);
        r
    }
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
