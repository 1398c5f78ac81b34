//! The threads that load chunks ahead of the mount's sequential readers
//! ([`Prefetcher`]) into its [`ChunkCache`] (the cache restore reads through too, in
//! `repo`).
//!
//! Memory: the cache's bytes (`--cache-size`) and its pool's (a quarter of that), and per
//! prefetch thread one ranged read (at most [`Prefetcher::spacing`]'s `max`: 4 MiB) and
//! the chunk being decoded.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::error::{Error, Result};
use crate::format::tree::{ChunkRef, Content, Kind};
use crate::id::BlobId;
use crate::repo::{plan, ChunkCache, Repository, Run, Spacing, Wanted};
use crate::tree::DirIter;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

/// Read claimed run `c` with one request ([`Repository::read_run`]) and load its chunks
/// into the cache; a chunk the run could not give (the read failed, or its blob did not
/// open) is loaded on its own, so that the error a reader meets names it.
fn load_run(repo: &Repository, mut c: Claimed) {
    let cache = c.cache.clone();
    let Claimed { run, done, .. } = &mut c;
    repo.read_run(run, cache.pool(), &mut |same, opened| {
        // Counted first: `load_claimed` ends the claims, even if a load panics. A claim is
        // taken once per id, so `same` is one want.
        *done += same.len();
        let chunk = same[0].to;
        let _ = cache.load_claimed(&chunk.id, || match opened {
            Ok(d) if d.len() == chunk.size as usize => Ok(d),
            Ok(d) => {
                cache.pool().give(d);
                repo.load_chunk(cache.pool(), &chunk)
            }
            Err(_) => repo.load_chunk(cache.pool(), &chunk),
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::Location;
    use crate::format::BlobKind;

    const MIB: usize = 1 << 20;

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
}
