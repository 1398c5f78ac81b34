//! The chunk index: blob id -> where it is stored. Every lookup in cairn goes through
//! [`Index`]; nothing else assumes where or how entries are kept.
//!
//! Bounded memory at any repository size (docs/design.md, "Index"):
//! - **runs** ([`run`]): immutable sorted files of 48-byte records in 4 KiB pages, in the
//!   local cache directory; in RAM per run only a page fence (0.094 B per entry) and a
//!   Bloom filter ([`filter`], ~10 bits = 1.25 B per entry, folded smaller when the budget
//!   is tight). A lookup of a new id is almost always answered by the filters; a known
//!   id costs one page read (`pread`; the kernel's page cache is the only page cache).
//! - **memtable**: entries whose repository index file is durable, spilled as a sorted
//!   run when it exceeds its budget (~80 B per entry charged).
//! - **fresh**: entries of packs this process finished whose index file is not written
//!   yet. They never reach a run: the cache must only vouch for blobs some repository
//!   index lists (the packer writes an index file at least every 65,536 entries).
//! - **pending**: ids claimed for writing, not yet in a finished pack.
//! - **pack table**: pack ids by ordinal, on disk (32 B per pack, read with pread).
//! - **manifest**: the runs and the repository index files they contain, so opening
//!   reads only index files added since; a missing one means rebuild.
//!
//! Runs are merged while the older of the two newest is at most twice the newer, which
//! keeps about log2(entries / memtable) runs. Without a cache directory (tests) the
//! same structure lives in a temp directory removed on drop.

pub mod filter;
pub mod run;
pub mod sort;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::backend::Stamp;
use crate::error::{Error, IoContext, Result};
use crate::format::index::{IndexEntry, Location};
use crate::id::{BlobId, BlobMap, BlobSet, FileId};
pub use run::Record;
use run::{Run, RunWriter, PAGE};

/// RAM charged per fresh or pending entry: 32 B id + 16 B value + 1 control byte, at 7/8
/// load and up to 2x growth slack (56-112 B). The memtable is charged exactly instead
/// ([`memtable_bytes`]).
pub const MEM_ENTRY_BYTES: usize = 80;

/// Bytes a hash table keyed by blob id with room for `capacity` entries allocates:
/// hashbrown keeps a power of two of buckets at most 7/8 full, each a (BlobId, Val) pair
/// (48 B) plus one control byte.
fn table_bytes(capacity: usize) -> usize {
    let buckets = if capacity < 4 { 4 } else { (capacity * 8).div_ceil(7).next_power_of_two() };
    buckets * (std::mem::size_of::<(BlobId, Val)>() + 1)
}

/// What a memtable of `n` entries costs at its peak, the spill: its table (grown for `n`
/// entries, or `capacity` if already larger) and the sorted copy a spill makes (48 B each).
pub fn memtable_bytes(n: usize, capacity: usize) -> usize {
    table_bytes(capacity.max(n)) + n * run::RECORD
}

/// A record's value without its id (the id is the map key): 16 bytes instead of 48.
#[derive(Clone, Copy)]
struct Val {
    pack: u32,
    offset: u32,
    stored: u32,
    raw_len: u32,
}

impl Val {
    fn of(r: &Record) -> Val {
        Val { pack: r.pack, offset: r.offset, stored: r.stored, raw_len: r.raw_len }
    }
    fn record(&self, id: &BlobId) -> Record {
        Record { id: id.0, pack: self.pack, offset: self.offset, stored: self.stored, raw_len: self.raw_len }
    }
}
/// Filter bits per entry for new runs (1% false positives), before budget folding.
const FILTER_BITS: f64 = 10.0;
/// Filters are sized as if the runs held this many times their entries: the room left
/// gives runs written later (new backups) their filters without shrinking the big one.
const GROWTH: f64 = 1.25;
/// Recently used pack ordinals kept while loading (~80 B each); beyond, a pack seen again
/// just gets another ordinal in the table (32 B on disk).
const RECENT_PACKS: usize = 1 << 16;
/// Pages per input buffered during a merge (64 KiB).
const MERGE_BUF_PAGES: usize = 16;
const MANIFEST_MAGIC: &[u8; 8] = b"CAIRNMAN";
/// Version 2 added each incorporated index file's [`Stamp`], version 3 the time the
/// cache last lost entries ([`Index::lost_at`]); an older manifest is rebuilt once.
const MANIFEST_VERSION: u8 = 3;
/// Pack ids the journal holds at most (32 B each): it is cleared after every index file
/// the packer writes, so it names a handful of packs at most.
const JOURNAL_MAX: u64 = 1 << 15;

/// How much memory the index may use, and where its cache lives.
#[derive(Clone, Debug)]
pub struct IndexOptions {
    /// Cache directory for this repository (runs, pack table, manifest); `None` uses a
    /// private temp directory, removed on drop.
    pub dir: Option<PathBuf>,
    /// Bytes for the memtable and fresh entries.
    pub memtable_bytes: usize,
    /// Bytes for all runs' filters and fences.
    pub filter_bytes: usize,
    /// Keep no filter in RAM from the start (see [`Index::drop_filters`]).
    pub no_filters: bool,
}

impl IndexOptions {
    /// Split an index share of the memory budget: 1/8 memtable, the rest
    /// filters and fences.
    pub fn from_budget(dir: Option<PathBuf>, bytes: usize) -> IndexOptions {
        IndexOptions { dir, memtable_bytes: bytes / 8, filter_bytes: bytes - bytes / 8, no_filters: false }
    }
}

/// The RAM of the index's bounded parts, in bytes, as [`Index::ram`] counts it (save an
/// empty memtable, which allocates nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RamParts {
    /// All runs' filters and fences: within [`IndexOptions::filter_bytes`].
    pub runs: usize,
    /// The memtable's table: within [`IndexOptions::memtable_bytes`], or one index
    /// file's entries (they go into an empty memtable whole).
    pub memtable: usize,
    /// Entries of packs whose index file is not written yet, and ids claimed for
    /// writing: bounded by the packer's index interval and the backup pipeline.
    pub unindexed: usize,
}

struct RunEntry {
    seq: u64,
    run: Arc<Run>,
}

struct State {
    mem: BlobMap<Val>,
    /// Index files whose entries are all in `mem` (become "incorporated" on spill).
    mem_sources: Vec<(FileId, Stamp)>,
    fresh: BlobMap<Val>,
    pending: BlobSet,
    runs: Vec<RunEntry>,
    next_seq: u64,
    /// Index files whose entries are all in runs.
    /// (40 B each: one per 16,384-65,536 blobs; kept in RAM and in the manifest.)
    incorporated: Vec<(FileId, Stamp)>,
    packs: File,
    pack_count: u32,
    /// Ordinals of packs added since the last spill (~80 B each).
    recent_packs: HashMap<FileId, u32>,
}

/// Blob locations; safe to share between threads.
pub struct Index {
    dir: PathBuf,
    /// Keeps a private cache directory alive (removed on drop).
    _temp: Option<tempfile::TempDir>,
    /// Holds the cache directory's flock while open.
    _lock: Option<File>,
    opts: IndexOptions,
    /// When (Unix ns) the cache was last built afresh: see [`Index::lost_at`]. Kept in
    /// the manifest, so every later process using the cache knows it too.
    lost_at: std::sync::atomic::AtomicI64,
    /// Set by [`Index::drop_filters`]: runs opened later keep no filter either.
    no_filters: std::sync::atomic::AtomicBool,
    state: RwLock<State>,
}

impl Index {
    /// Open (or create) the index cache described by `opts`. The caller then brings it
    /// up to date with [`Index::sync`].
    pub fn open(opts: IndexOptions) -> Result<Index> {
        // One process at a time per cache directory; another concurrent process (two
        // backups at once) works in a private temp cache instead of sharing writers.
        let locked = match &opts.dir {
            Some(d) => {
                fs::create_dir_all(d).at(d)?;
                let lock_path = d.join("lock");
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&lock_path)
                    .at(&lock_path)?;
                crate::sys::try_lock(&f).at(&lock_path)?.then_some((d.clone(), f))
            }
            None => None,
        };
        let (dir, temp, lock) = match locked {
            Some((d, f)) => (d, None, Some(f)),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("cairn-index-")
                    .tempdir()
                    .map_err(|e| Error::Io { path: std::env::temp_dir(), err: e })?;
                (t.path().to_path_buf(), Some(t), None)
            }
        };
        fs::create_dir_all(&dir).at(&dir)?;
        let packs_path = dir.join("packs");
        let packs = OpenOptions::new().read(true).append(true).create(true).open(&packs_path).at(&packs_path)?;
        let pack_count = (packs.metadata().at(&packs_path)?.len() / 32) as u32;
        let state = State {
            mem: BlobMap::default(),
            mem_sources: Vec::new(),
            fresh: BlobMap::default(),
            pending: BlobSet::default(),
            runs: Vec::new(),
            next_seq: 1,
            incorporated: Vec::new(),
            packs,
            pack_count,
            recent_packs: HashMap::new(),
        };
        let no_filters = opts.no_filters;
        let ix = Index {
            dir,
            _temp: temp,
            _lock: lock,
            opts,
            state: RwLock::new(state),
            lost_at: std::sync::atomic::AtomicI64::new(0),
            no_filters: std::sync::atomic::AtomicBool::new(no_filters),
        };
        if ix.load_manifest().is_err() {
            ix.reset()?;
        }
        Ok(ix)
    }
}

impl Index {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A poisoned lock means a panic elsewhere already failed the operation; the state
        // is only changed by whole assignments, so reading on is safe.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn run_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("run-{seq:08}"))
    }

    /// Forget everything cached, so that the next [`Index::sync`] reads every index file
    /// again (for `repair index`, which must not trust a cache of files it may remove).
    pub fn clear(&self) -> Result<()> {
        self.reset()
    }

    /// Forget everything cached: no runs, an empty pack table.
    fn reset(&self) -> Result<()> {
        // A clock before 1970 reads 0: then count every snapshot as older than the loss.
        let now = match crate::sys::now_ns() {
            n if n > 0 => n,
            _ => i64::MAX,
        };
        self.lost_at.store(now, std::sync::atomic::Ordering::Relaxed);
        let mut s = self.write();
        for r in s.runs.drain(..) {
            let _ = fs::remove_file(&r.run.path);
        }
        s.incorporated.clear();
        s.mem.clear();
        s.mem_sources.clear();
        s.packs.set_len(0).at(self.dir.join("packs"))?;
        s.pack_count = 0;
        s.recent_packs.clear();
        self.save_manifest(&s)
    }

    /// Manifest: magic, version, next run seq, runs (seq), incorporated index files.
    fn save_manifest(&self, s: &State) -> Result<()> {
        let mut v = MANIFEST_MAGIC.to_vec();
        v.push(MANIFEST_VERSION);
        v.extend_from_slice(&s.next_seq.to_le_bytes());
        v.extend_from_slice(&(s.runs.len() as u64).to_le_bytes());
        for r in &s.runs {
            v.extend_from_slice(&r.seq.to_le_bytes());
        }
        v.extend_from_slice(&(s.incorporated.len() as u64).to_le_bytes());
        for (f, stamp) in &s.incorporated {
            v.extend_from_slice(&f.0);
            v.extend_from_slice(&stamp.0.to_le_bytes());
        }
        v.extend_from_slice(&s.pack_count.to_le_bytes());
        v.extend_from_slice(&self.lost_at.load(std::sync::atomic::Ordering::Relaxed).to_le_bytes());
        let tmp = self.dir.join("manifest.tmp");
        let path = self.dir.join("manifest");
        let mut f = File::create(&tmp).at(&tmp)?;
        f.write_all(&v).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        fs::rename(&tmp, &path).at(&path)?;
        crate::backend::sync_dir(&self.dir)
    }

    fn load_manifest(&self) -> Result<()> {
        let path = self.dir.join("manifest");
        let b = fs::read(&path).at(&path)?;
        let bad = || Error::corrupt("index cache", path.display(), "bad manifest");
        let mut r = crate::format::Reader::new(&b, "index cache", &"manifest");
        if r.raw(8).map_err(|_| bad())? != MANIFEST_MAGIC || r.u8()? != MANIFEST_VERSION {
            return Err(bad());
        }
        let next_seq = r.u64()?;
        let n = r.u64()?;
        let n = r.count(n, 8)?;
        let mut seqs = Vec::with_capacity(n);
        for _ in 0..n {
            seqs.push(r.u64()?);
        }
        // The next run takes `next_seq` and the one after `next_seq + 1`: a number that
        // cannot be incremented, or one a listed run already has, is damage.
        if next_seq == u64::MAX || seqs.iter().any(|s| *s >= next_seq) {
            return Err(bad());
        }
        let m = r.u64()?;
        let m = r.count(m, 40)?;
        let mut incorporated = Vec::with_capacity(m);
        for _ in 0..m {
            incorporated.push((FileId(r.id32()?), Stamp(r.u64()?)));
        }
        let pack_count = r.u32()?;
        let lost_at = r.i64()?;
        r.finish()?;
        let mut s = self.write();
        if pack_count > s.pack_count {
            return Err(bad()); // pack table shorter than the runs need
        }
        s.pack_count = pack_count;
        s.packs.set_len(pack_count as u64 * 32).at(self.dir.join("packs"))?;
        s.runs = self.open_runs(&seqs)?;
        s.next_seq = next_seq;
        s.incorporated = incorporated;
        self.lost_at.store(lost_at, std::sync::atomic::Ordering::Relaxed);
        drop(s);
        // Leftovers of an interrupted spill or merge: runs the manifest does not name.
        self.remove_unlisted_runs();
        Ok(())
    }
}

impl Index {
    /// Open the runs `seqs` (oldest first: lookups go newest first), sharing the filter
    /// budget out smallest filter first: each run keeps its stored filter if its fair
    /// share of what is left allows, else a folded one (none after
    /// [`Index::drop_filters`]).
    fn open_runs(&self, seqs: &[u64]) -> Result<Vec<RunEntry>> {
        let mut sized = Vec::with_capacity(seqs.len());
        let mut fences = 0usize;
        for seq in seqs {
            let p = self.run_path(*seq);
            sized.push((Run::stored_filter_bytes(&p)?, *seq));
            fences += (fs::metadata(&p).at(&p)?.len() as usize / PAGE).saturating_sub(1) * 8;
        }
        sized.sort_unstable();
        let mut left = if self.no_filters.load(std::sync::atomic::Ordering::Relaxed) {
            0
        } else {
            self.opts.filter_bytes.saturating_sub(fences)
        };
        let mut opened = Vec::with_capacity(sized.len());
        for (i, (_, seq)) in sized.iter().enumerate() {
            let run = Run::open(&self.run_path(*seq), left / (sized.len() - i))?;
            left = left.saturating_sub(run.filter_bytes());
            opened.push((*seq, run));
        }
        let mut runs = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let i = opened.iter().position(|(s, _)| s == seq).expect("opened");
            let (_, run) = opened.swap_remove(i);
            runs.push(RunEntry { seq: *seq, run: Arc::new(run) });
        }
        Ok(runs)
    }

    /// Free every run's filter, and open later runs without one, for the rest of this
    /// process: for a caller that looks up few ids, all of them present (prune's mark
    /// reads only trees), so that filters sized for a backup's many misses do not hold
    /// its budget (docs/design.md, "Prune"). Lookups stay exact; each reads a page per
    /// run. Runs written later by this process still store a filter for the next one.
    pub fn drop_filters(&self) {
        self.no_filters.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut s = self.write();
        // A run shared with a reader right now keeps its filter until it is reopened.
        for r in &mut s.runs {
            if let Some(run) = Arc::get_mut(&mut r.run) {
                run.drop_filter();
            }
        }
    }

    /// How much of a run this process just wrote it keeps the filter of: all of it
    /// (built within the budget), or none after [`Index::drop_filters`].
    fn new_run_filter_budget(&self) -> usize {
        if self.no_filters.load(std::sync::atomic::Ordering::Relaxed) {
            0
        } else {
            usize::MAX
        }
    }

    fn remove_unlisted_runs(&self) {
        let s = self.read();
        let listed: HashSet<PathBuf> = s.runs.iter().map(|r| r.run.path.clone()).collect();
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let p = e.path();
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name == "sort.tmp" {
                    let _ = fs::remove_dir_all(&p);
                } else if (name.starts_with("run-") && !listed.contains(&p)) || name.ends_with(".tmp") {
                    let _ = fs::remove_file(&p);
                }
            }
        }
    }

    /// Bring the cache up to date with the repository's index files (`repo_files`, with
    /// their stamps): read only those not incorporated yet (`read` decodes one). The
    /// cache vouches for blobs only as long as the index files that listed them are
    /// intact, so an incorporated file that is gone means a rebuild, and one whose stamp
    /// changed is checked again (`verify`: its bytes still hash to its name, so they are
    /// the very bytes incorporated); if it is not intact, rebuild too, which skips it.
    /// Files `read` fails on are returned (with the error) and left for the next time.
    pub fn sync(
        &self,
        repo_files: &[(FileId, Stamp)],
        read: &mut dyn FnMut(&FileId) -> Result<Vec<IndexEntry>>,
        verify: &mut dyn FnMut(&FileId) -> Result<()>,
    ) -> Result<Vec<(FileId, Error)>> {
        // 48 B per index file.
        let have: HashMap<FileId, Stamp> = repo_files.iter().copied().collect();
        let cached: Vec<(FileId, Stamp)> = {
            let s = self.read();
            s.incorporated.iter().chain(s.mem_sources.iter()).copied().collect()
        };
        let mut rebuild = false;
        let mut restamped = HashMap::new();
        for (f, stamp) in &cached {
            match have.get(f) {
                None => rebuild = true,
                Some(now) if now != stamp => match verify(f) {
                    Ok(()) => {
                        restamped.insert(*f, *now);
                    }
                    Err(_) => rebuild = true,
                },
                Some(_) => {}
            }
            if rebuild {
                break;
            }
        }
        if rebuild {
            self.reset()?;
        } else if !restamped.is_empty() {
            let mut guard = self.write();
            let s: &mut State = &mut guard;
            for (f, stamp) in s.incorporated.iter_mut().chain(s.mem_sources.iter_mut()) {
                if let Some(now) = restamped.get(f) {
                    *stamp = *now;
                }
            }
            self.save_manifest(s)?;
        }
        let known: HashSet<FileId> = {
            let s = self.read();
            s.incorporated.iter().chain(s.mem_sources.iter()).map(|(f, _)| *f).collect()
        };
        let mut failed = Vec::new();
        // Entries go to the memtable; once more arrive than it holds, to an external
        // partition-and-sort instead, which writes one run at the end.
        let mut bulk: Option<sort::Partitioner> = None;
        for (f, stamp) in repo_files.iter().filter(|(f, _)| !known.contains(f)) {
            match read(f) {
                Ok(entries) => {
                    let mut s = self.write();
                    if bulk.is_none() && !self.mem_room(&s, entries.len()) {
                        let _ = fs::remove_dir_all(self.sort_dir());
                        let mut p = sort::Partitioner::new(self.sort_dir(), 0, self.opts.memtable_bytes)?;
                        for (id, v) in s.mem.drain() {
                            p.push(&v.record(&id))?;
                        }
                        s.mem.shrink_to_fit();
                        bulk = Some(p);
                    }
                    for e in &entries {
                        let rec = self.record(&mut s, e)?;
                        match bulk.as_mut() {
                            Some(p) => p.push(&rec)?,
                            None => {
                                s.mem.entry(e.id).or_insert(Val::of(&rec));
                            }
                        }
                    }
                    if s.recent_packs.len() > RECENT_PACKS {
                        s.recent_packs.clear();
                    }
                    s.mem_sources.push((*f, *stamp));
                }
                Err(e @ (Error::Corrupt { .. } | Error::Tampered { .. })) => failed.push((*f, e)),
                // Listed, then removed before it was read: a prune or `repair index`
                // replaced it (the replacement is written first, and the next listing,
                // under the command's lock, has it). Opening a repository while a prune
                // runs (a backup that will wait for the lock) must not fail on that.
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        match bulk {
            Some(p) => self.bulk_run(p)?,
            None => self.spill()?,
        }
        Ok(failed)
    }

    fn sort_dir(&self) -> PathBuf {
        self.dir.join("sort.tmp")
    }

    /// Write the partitioned records as one new run; their index files become
    /// incorporated.
    fn bulk_run(&self, p: sort::Partitioner) -> Result<()> {
        let mut s = self.write();
        let seq = s.next_seq;
        s.next_seq += 1;
        let path = self.run_path(seq);
        let others: usize = s.runs.iter().map(|r| r.run.ram()).sum();
        let bits = self.new_filter_bits(p.len(), others, Self::run_entries(&s) + p.len());
        let mut w = RunWriter::create(path.with_extension("tmp"), p.len(), bits)?;
        p.drain_sorted(self.opts.memtable_bytes, &mut |r| w.push(r))?;
        s.packs.sync_all().at(self.dir.join("packs"))?;
        w.finish(&path)?;
        let run = Run::open(&path, self.new_run_filter_budget())?;
        s.runs.push(RunEntry { seq, run: Arc::new(run) });
        let sources = std::mem::take(&mut s.mem_sources);
        s.incorporated.extend(sources);
        s.recent_packs.clear();
        // A rebuild leaves one run; a catch-up next to older runs merges like a spill.
        self.merge_due(&mut s)?;
        self.fit_filters(&mut s)?;
        self.save_manifest(&s)?;
        drop(s);
        self.remove_unlisted_runs();
        Ok(())
    }

    /// The pack ordinal for `pack`, appending it to the pack table if new here.
    fn ordinal(&self, s: &mut State, pack: FileId) -> Result<u32> {
        if let Some(o) = s.recent_packs.get(&pack) {
            return Ok(*o);
        }
        let o = s.pack_count;
        s.packs.write_all(&pack.0).at(self.dir.join("packs"))?;
        s.pack_count += 1;
        s.recent_packs.insert(pack, o);
        Ok(o)
    }

    fn record(&self, s: &mut State, e: &IndexEntry) -> Result<Record> {
        let pack = self.ordinal(s, e.loc.pack)?;
        Ok(Record::new(e.id.0, pack, e.loc.offset, e.loc.stored_len, e.loc.raw_len, e.loc.kind, e.loc.compression))
    }

    fn pack_id(&self, s: &State, ordinal: u32) -> Result<FileId> {
        let mut b = [0u8; 32];
        s.packs.read_exact_at(&mut b, ordinal as u64 * 32).at(self.dir.join("packs"))?;
        Ok(FileId(b))
    }

    fn location(&self, s: &State, r: &Record) -> Result<Location> {
        let bad = || {
            Error::corrupt(
                "index cache",
                self.dir.display(),
                "record out of range (the cache is rebuilt on the next open)",
            )
        };
        if r.pack >= s.pack_count || crate::format::pack::check_lengths(r.stored_len(), r.raw_len).is_err() {
            return Err(bad());
        }
        Ok(Location {
            pack: self.pack_id(s, r.pack)?,
            offset: r.offset,
            stored_len: r.stored_len(),
            raw_len: r.raw_len,
            kind: r.kind(),
            compression: r.compression().ok_or_else(bad)?,
        })
    }

    /// Look `id` up in the runs, newest first.
    fn find_in_runs(&self, s: &State, id: &BlobId) -> Result<Option<Record>> {
        for r in s.runs.iter().rev() {
            if !r.run.may_contain(&id.0) {
                continue;
            }
            let found = r.run.find(&id.0)?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Where a blob is stored, if it is in a finished pack.
    pub fn get(&self, id: &BlobId) -> Option<Location> {
        self.try_get(id).ok().flatten()
    }

    /// [`Index::get`] that reports a read error of the cache.
    pub fn try_get(&self, id: &BlobId) -> Result<Option<Location>> {
        let s = self.read();
        let rec = match s.fresh.get(id).or_else(|| s.mem.get(id)) {
            Some(v) => Some(v.record(id)),
            None => self.find_in_runs(&s, id)?,
        };
        rec.map(|r| self.location(&s, &r)).transpose()
    }

    /// Is the blob stored or pending? (A cache read error counts as "no".)
    pub fn contains(&self, id: &BlobId) -> bool {
        let s = self.read();
        s.pending.contains(id)
            || s.fresh.contains_key(id)
            || s.mem.contains_key(id)
            || matches!(self.find_in_runs(&s, id), Ok(Some(_)))
    }

    /// Claim a blob for writing: true if it is neither stored nor pending (and marks it
    /// pending), false if it is stored or someone claimed it. This is the dedup decision.
    /// A cache read error counts as "not stored": storing a blob twice wastes space, a
    /// false "stored" would lose data.
    pub fn claim(&self, id: &BlobId) -> bool {
        // One decision under one lock: checking the runs under a read lock and then
        // re-checking the rest under the write lock let a spill (another thread moving an
        // entry from the memtable into a run) slip between the two, and the blob was
        // stored twice. New ids are rejected by the filters without I/O, so this is cheap.
        let mut s = self.write();
        if s.pending.contains(id) || s.fresh.contains_key(id) || s.mem.contains_key(id) {
            return false;
        }
        if matches!(self.find_in_runs(&s, id), Ok(Some(_))) {
            return false;
        }
        s.pending.insert(*id)
    }

    /// Give up a claim without storing the blob (a dry run's packer): a later backup
    /// in this process must store it.
    pub fn release(&self, id: &BlobId) {
        self.write().pending.remove(id);
    }

    /// Record where a blob of a just-finished pack is (its index file is not written yet).
    pub fn insert(&self, e: &IndexEntry) {
        let mut s = self.write();
        s.pending.remove(&e.id);
        if let Ok(rec) = self.record(&mut s, e) {
            s.fresh.entry(e.id).or_insert(Val::of(&rec));
        }
    }

    /// The index file `file` (whose stamp is `stamp`) listing `entries` is durable in the
    /// repository: those entries may now be cached in runs.
    pub fn indexed(&self, file: FileId, stamp: Stamp, entries: &[IndexEntry]) -> Result<()> {
        let full = {
            let s = self.read();
            !s.mem.is_empty() && !self.mem_room(&s, entries.len())
        };
        if full {
            self.spill()?;
        }
        {
            let mut s = self.write();
            for e in entries {
                if let Some(rec) = s.fresh.remove(&e.id) {
                    s.mem.entry(e.id).or_insert(rec);
                }
            }
            s.mem_sources.push((file, stamp));
        }
        Ok(())
    }

    /// Can the memtable take `more` entries within its budget (see [`memtable_bytes`])?
    /// The table grows in powers of two: the step that would overrun is a spill instead.
    fn mem_room(&self, s: &State, more: usize) -> bool {
        memtable_bytes(s.mem.len() + more, s.mem.capacity()) <= self.opts.memtable_bytes
    }

    /// Write the memtable as a run (sorted), record it in the manifest, merge if due.
    pub fn spill(&self) -> Result<()> {
        let mut s = self.write();
        if s.mem.is_empty() && s.mem_sources.is_empty() {
            return Ok(());
        }
        if !s.mem.is_empty() {
            let mut recs: Vec<Record> = s.mem.iter().map(|(id, v)| v.record(id)).collect();
            recs.sort_unstable_by_key(|r| r.id);
            let seq = s.next_seq;
            s.next_seq += 1;
            let path = self.run_path(seq);
            let n = recs.len() as u64;
            let others: usize = s.runs.iter().map(|r| r.run.ram()).sum();
            let bits = self.new_filter_bits(n, others, Self::run_entries(&s) + n);
            let mut w = RunWriter::create(path.with_extension("tmp"), recs.len() as u64, bits)?;
            for r in &recs {
                w.push(r)?;
            }
            drop(recs);
            s.packs.sync_all().at(self.dir.join("packs"))?;
            w.finish(&path)?;
            let run = Run::open(&path, self.new_run_filter_budget())?;
            s.runs.push(RunEntry { seq, run: Arc::new(run) });
            s.mem.clear();
            s.mem.shrink_to_fit();
        }
        let sources = std::mem::take(&mut s.mem_sources);
        s.incorporated.extend(sources);
        // Bounded by the packs of one memtable: a pack seen again later (its entries span
        // two index files) just gets a second ordinal.
        s.recent_packs.clear();
        self.merge_due(&mut s)?;
        self.fit_filters(&mut s)?;
        self.save_manifest(&s)?;
        drop(s);
        self.remove_unlisted_runs();
        Ok(())
    }

    /// Merge the two newest runs while the older is at most twice the newer.
    fn merge_due(&self, s: &mut State) -> Result<()> {
        while s.runs.len() >= 2 {
            let n = s.runs.len();
            if s.runs[n - 2].run.count > 2 * s.runs[n - 1].run.count {
                break;
            }
            let seq = s.next_seq;
            s.next_seq += 1;
            let path = self.run_path(seq);
            // The inputs' filters go before the output's is built, so the peak stays within
            // the budget (the write lock is held: no lookup meanwhile).
            for r in &mut s.runs[n - 2..] {
                if let Some(run) = Arc::get_mut(&mut r.run) {
                    run.drop_filter();
                }
            }
            let (a, b) = (s.runs[n - 2].run.clone(), s.runs[n - 1].run.clone());
            let others: usize = s.runs[..n - 2].iter().map(|r| r.run.ram()).sum();
            let bits = self.new_filter_bits(a.count + b.count, others, Self::run_entries(s));
            let out = RunWriter::create(path.with_extension("tmp"), a.count + b.count, bits)?;
            run::merge(&[&a, &b], MERGE_BUF_PAGES, out, &path, &|_| true)?;
            let merged = Run::open(&path, self.new_run_filter_budget())?;
            s.runs.truncate(n - 2);
            s.runs.push(RunEntry { seq, run: Arc::new(merged) });
        }
        Ok(())
    }

    /// Filter bits per entry for a run of `n` entries written now, beside runs holding
    /// `others` bytes of RAM, when the runs will hold `total` entries in all: the filter
    /// budget less the fences (8/85 B per entry) spread over `GROWTH` x `total` entries,
    /// at most FILTER_BITS, and no more than the room the other runs leave; below 2 bits
    /// no filter is kept (fence only).
    fn new_filter_bits(&self, n: u64, others: usize, total: u64) -> f64 {
        let fences = |entries: f64| entries * 8.0 / run::PER_PAGE as f64;
        let planned = total as f64 * GROWTH;
        let rate = (self.opts.filter_bytes as f64 - fences(planned)).max(0.0) * 8.0 / planned.max(1.0);
        let room = (self.opts.filter_bytes as f64 - others as f64 - fences(n as f64)).max(0.0) * 8.0 / n.max(1) as f64;
        let bits = rate.min(room).min(FILTER_BITS);
        if bits < 2.0 {
            0.0
        } else {
            bits
        }
    }

    fn run_entries(s: &State) -> u64 {
        s.runs.iter().map(|r| r.run.count).sum()
    }

    /// Keep all runs' fences and filters within the budget (after the budget shrank since
    /// the runs were written): fold the largest filter to half, without I/O, until they fit.
    fn fit_filters(&self, s: &mut State) -> Result<()> {
        loop {
            let total: usize = s.runs.iter().map(|r| r.run.ram()).sum();
            if total <= self.opts.filter_bytes {
                return Ok(());
            }
            let Some(big) =
                s.runs.iter_mut().filter(|r| r.run.filter_bytes() > filter::BLOCK).max_by_key(|r| r.run.filter_bytes())
            else {
                return Ok(()); // only fences left: they are the floor (0.094 B per entry)
            };
            let half = big.run.filter_bytes() / 2;
            match Arc::get_mut(&mut big.run) {
                Some(run) => {
                    if !run.fold_filter() {
                        run.drop_filter();
                    }
                }
                // Shared (a merge holds it): reopen, folding while reading.
                None => big.run = Arc::new(Run::open(&big.run.path, half)?),
            }
        }
    }

    /// When (Unix nanoseconds) this cache was last built afresh from the index files as
    /// they were then: a new cache, a damaged one, or one some of whose index files had
    /// been removed (`repair index`, a prune) or damaged. A snapshot written before that
    /// may name blobs no index file lists any more, so a backup whose parent is that old
    /// verifies what it reuses. Kept in the manifest: the process that rebuilt the cache
    /// is often not the next backup (`snapshots`, `check` and the mount rebuild too).
    pub fn lost_at(&self) -> i64 {
        self.lost_at.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Blobs known (runs may count a blob more than once if stored twice).
    pub fn len(&self) -> usize {
        let s = self.read();
        s.fresh.len() + s.mem.len() + s.runs.iter().map(|r| r.run.count as usize).sum::<usize>()
    }

    /// True if no blob is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// RAM held by the index's bounded parts, in bytes (for reports and tests).
    pub fn ram(&self) -> usize {
        let s = self.read();
        (s.fresh.len() + s.pending.len()) * MEM_ENTRY_BYTES
            + table_bytes(s.mem.capacity())
            + s.runs.iter().map(|r| r.run.ram()).sum::<usize>()
    }

    /// [`Index::ram`] by part, each held to its own share of the budget.
    pub fn ram_parts(&self) -> RamParts {
        let s = self.read();
        RamParts {
            runs: s.runs.iter().map(|r| r.run.ram()).sum(),
            // An empty table that never grew (or was shrunk) allocates nothing.
            memtable: if s.mem.capacity() == 0 { 0 } else { table_bytes(s.mem.capacity()) },
            unindexed: (s.fresh.len() + s.pending.len()) * MEM_ENTRY_BYTES,
        }
    }

    /// Number of runs (for tests and reports).
    pub fn runs(&self) -> usize {
        self.read().runs.len()
    }

    /// Packs in the pack table: ordinals `0..pack_count()` (a pack may hold several).
    pub fn pack_count(&self) -> u32 {
        self.read().pack_count
    }

    /// Visit every record of the index files the cache holds, in id order, each with
    /// whether it is the first of its id: the location a lookup answers with (an id
    /// stored twice may come twice). The memtable is spilled first, so the runs hold
    /// everything; entries whose index file is not written yet are not visited.
    /// Memory: 64 KiB of read buffer per run.
    pub fn for_each_record(&self, f: &mut dyn FnMut(&Record, bool) -> Result<()>) -> Result<()> {
        self.spill()?;
        let runs: Vec<Arc<Run>> = self.read().runs.iter().map(|r| r.run.clone()).collect();
        let refs: Vec<&Run> = runs.iter().map(|r| &**r).collect();
        run::merged(&refs, MERGE_BUF_PAGES, f)
    }

    /// After a prune rewrote the index files: drop every record of the packs `gone`
    /// names (by ordinal), stop counting the index files `removed` as incorporated, and
    /// count `added` (files whose entries the runs already hold: rewritten copies of
    /// removed files without the gone packs, or files this process wrote) instead. One
    /// pass over each run writes its filtered copy, with the same stored filter; no
    /// index file is read. A crash before the manifest is saved leaves the old
    /// manifest, whose removed files make the next [`Index::sync`] rebuild.
    pub fn forget_packs(
        &self,
        gone: &dyn Fn(u32) -> bool,
        removed: &HashSet<FileId>,
        added: &[(FileId, Stamp)],
    ) -> Result<()> {
        self.spill()?;
        let mut s = self.write();
        // Each run is filtered on its own and keeps its stored filter (the old run's ids
        // are a superset of the new one's), copied file to file: nothing grows in RAM
        // with the runs, and the next backup finds filters as good as before.
        let mut seqs = Vec::with_capacity(s.runs.len());
        let mut next_seq = s.next_seq;
        for r in &s.runs {
            let seq = next_seq;
            next_seq += 1;
            let path = self.run_path(seq);
            let out = RunWriter::keeping_filter(path.with_extension("tmp"), &r.run)?;
            if run::merge(&[&r.run], MERGE_BUF_PAGES, out, &path, &|r| !gone(r.pack))? == 0 {
                fs::remove_file(&path).at(&path)?;
            } else {
                seqs.push(seq);
            }
        }
        s.next_seq = next_seq;
        s.runs.clear(); // before the new runs' filters are read
        s.runs = self.open_runs(&seqs)?;
        s.incorporated.retain(|(f, _)| !removed.contains(f));
        s.incorporated.extend_from_slice(added);
        self.fit_filters(&mut s)?;
        self.save_manifest(&s)?;
        drop(s);
        self.remove_unlisted_runs();
        Ok(())
    }
}

impl Index {
    /// The cache directory in use.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join("unindexed")
    }

    /// Record, durably, that pack `id` is about to be committed before any index file
    /// names it. If the process dies before the index file is written, the next process
    /// using this cache finds the pack here and indexes it from its header instead of
    /// storing its blobs again ([`Index::journal`]).
    pub fn journal_pack(&self, id: &FileId) -> Result<()> {
        let p = self.journal_path();
        let mut f = OpenOptions::new().append(true).create(true).open(&p).at(&p)?;
        f.write_all(&id.0).at(&p)?;
        f.sync_data().at(&p)
    }

    /// Every pack committed so far is named by a durable index file: empty the journal.
    pub fn journal_clear(&self) -> Result<()> {
        let p = self.journal_path();
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(&p),
            _ => Ok(()),
        }
    }

    /// Packs a process using this cache committed without living to index them (at most
    /// [`JOURNAL_MAX`]; a journal cut short by a crash mid-append loses its last id).
    pub fn journal(&self) -> Result<Vec<FileId>> {
        use std::io::Read;
        let p = self.journal_path();
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at(&p),
        };
        let mut b = Vec::new();
        f.take(JOURNAL_MAX * 32).read_to_end(&mut b).at(&p)?;
        let mut ids: Vec<FileId> = b.chunks_exact(32).map(|c| FileId(c.try_into().expect("32 bytes"))).collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Call `f` with every pack id the cache's entries name (each at least once; a pack
    /// whose entries were loaded at different times is named again). Streams the pack
    /// table from disk: nothing is held per pack.
    pub fn for_each_pack(&self, f: &mut dyn FnMut(FileId) -> Result<()>) -> Result<()> {
        let count = self.read().pack_count;
        let path = self.dir.join("packs");
        let mut buf = vec![0u8; 32 * 1024];
        let mut at = 0u64;
        while at < count as u64 {
            let n = ((count as u64 - at) as usize).min(buf.len() / 32);
            {
                let s = self.read();
                s.packs.read_exact_at(&mut buf[..n * 32], at * 32).at(&path)?;
            }
            for c in buf[..n * 32].chunks_exact(32) {
                f(FileId(c.try_into().expect("32 bytes")))?;
            }
            at += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BlobKind, Compression};
    use proptest::prelude::*;

    fn entry(id: [u8; 32], pack: u8, off: u32) -> IndexEntry {
        IndexEntry {
            id: BlobId(id),
            loc: Location {
                pack: FileId([pack; 32]),
                offset: off,
                stored_len: 100,
                raw_len: 60,
                kind: BlobKind::Data,
                compression: Compression::Zstd,
            },
        }
    }

    fn opts(dir: &Path, memtable_entries: usize) -> IndexOptions {
        IndexOptions {
            dir: Some(dir.to_path_buf()),
            memtable_bytes: memtable_bytes(memtable_entries, 0),
            filter_bytes: 1 << 20,
            no_filters: false,
        }
    }

    /// Options whose filter budget is `filter_bytes`.
    fn opts_filter(dir: &Path, memtable_entries: usize, filter_bytes: usize) -> IndexOptions {
        IndexOptions { filter_bytes, ..opts(dir, memtable_entries) }
    }

    /// A fake repository: index files by id.
    #[derive(Default)]
    struct Files(Vec<(FileId, Vec<IndexEntry>)>);

    impl Files {
        fn ids(&self) -> Vec<(FileId, Stamp)> {
            self.0.iter().map(|f| (f.0, Stamp::default())).collect()
        }
        fn open(&self, o: IndexOptions) -> Index {
            let ix = Index::open(o).unwrap();
            let failed = ix
                .sync(&self.ids(), &mut |id| Ok(self.0.iter().find(|f| f.0 == *id).unwrap().1.clone()), &mut |_| Ok(()))
                .unwrap();
            assert!(failed.is_empty());
            ix
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8, u8),
        /// Reopen with this filter budget in bytes.
        Restart(usize),
        /// The cache is lost: rebuild it from the index files.
        Rebuild,
        Lookup([u8; 32]),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (any::<u8>(), 1u8..4).prop_map(|(n, p)| Op::Insert(n, p)),
            1 => prop_oneof![Just(1usize << 20), Just(4096), Just(64)].prop_map(Op::Restart),
            1 => Just(Op::Rebuild),
            2 => proptest::array::uniform32(any::<u8>()).prop_map(Op::Lookup),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20))]
        /// Lookups in the spilled, merged, restarted structure equal a plain map.
        #[test]
        fn equals_a_map_across_spills_merges_and_restarts(ops in proptest::collection::vec(op(), 1..60)) {
            let t = tempfile::tempdir().unwrap();
            let mut files = Files::default();
            let mut model: HashMap<BlobId, Location> = HashMap::new();
            let mut ix = files.open(opts(t.path(), 7));
            let mut counter = 0u32;
            for op in ops {
                match op {
                    Op::Insert(n, pack) => {
                        // A batch of n new ids in one "index file", as the packer does.
                        let batch: Vec<IndexEntry> = (0..n as u32 % 40 + 1).map(|_| {
                            counter += 1;
                            entry(*blake3::hash(&counter.to_le_bytes()).as_bytes(), pack, counter)
                        }).collect();
                        for e in &batch {
                            prop_assert!(ix.claim(&e.id));
                            ix.insert(e);
                            model.insert(e.id, e.loc);
                        }
                        let file = FileId(*blake3::hash(format!("file{counter}").as_bytes()).as_bytes());
                        files.0.push((file, batch.clone()));
                        ix.indexed(file, Stamp::default(), &batch).unwrap();
                    }
                    Op::Restart(filter_bytes) => {
                        drop(ix);
                        ix = files.open(opts_filter(t.path(), 7, filter_bytes));
                        // Stored filters larger than the new budget were folded or dropped.
                        let s = ix.read();
                        let filters: usize = s.runs.iter().map(|r| r.run.filter_bytes()).sum();
                        prop_assert!(filters <= filter_bytes.max(s.runs.len() * filter::BLOCK), "{filters} > {filter_bytes}");
                    }
                    Op::Rebuild => {
                        // Through the external partition-and-sort: a 7-entry memtable is
                        // also a 7-record sort buffer, so partitions are split again.
                        drop(ix);
                        fs::remove_dir_all(t.path()).unwrap();
                        ix = files.open(opts(t.path(), 7));
                        prop_assert!(ix.runs() <= 1);
                        prop_assert!(!t.path().join("sort.tmp").exists());
                    }
                    Op::Lookup(id) => prop_assert_eq!(ix.get(&BlobId(id)), model.get(&BlobId(id)).copied()),
                }
                for (id, loc) in model.iter().take(25) {
                    prop_assert_eq!(ix.get(id), Some(*loc));
                    prop_assert!(!ix.claim(id));
                }
            }
            for (id, loc) in &model {
                prop_assert_eq!(ix.get(id), Some(*loc));
            }
            prop_assert!(ix.runs() <= 2 + (model.len() as f64 / 7.0).log2().ceil().max(0.0) as usize, "runs: {}", ix.runs());
        }
    }

    #[test]
    fn a_vanished_index_file_means_rebuild_and_leftovers_are_cleaned() {
        let t = tempfile::tempdir().unwrap();
        let mut files = Files::default();
        let a: Vec<IndexEntry> = (0..50u32).map(|i| entry(*blake3::hash(&i.to_le_bytes()).as_bytes(), 1, i)).collect();
        let b: Vec<IndexEntry> = (50..90u32).map(|i| entry(*blake3::hash(&i.to_le_bytes()).as_bytes(), 2, i)).collect();
        files.0.push((FileId([1; 32]), a.clone()));
        files.0.push((FileId([2; 32]), b.clone()));
        let ix = files.open(opts(t.path(), 10));
        assert!(ix.runs() >= 1);
        drop(ix);
        // An interrupted merge or spill leaves files the manifest does not name.
        fs::write(t.path().join("run-99999999"), b"half a run").unwrap();
        fs::write(t.path().join("run-00000042.tmp"), b"tmp").unwrap();
        // A prune removed file A: its blobs must no longer be found.
        files.0.remove(0);
        let ix = files.open(opts(t.path(), 10));
        assert!(a.iter().all(|e| ix.get(&e.id).is_none()));
        assert!(b.iter().all(|e| ix.get(&e.id) == Some(e.loc)));
        assert!(!t.path().join("run-99999999").exists() && !t.path().join("run-00000042.tmp").exists());
    }

    /// Forgetting packs filters each run on its own and keeps its stored filter (no filter
    /// is built in RAM), with or without filters held; lookups stay exact, before and
    /// after a reopen.
    #[test]
    fn forget_packs_keeps_stored_filters_and_lookups_exact() {
        for no_filters in [false, true] {
            let t = tempfile::tempdir().unwrap();
            let mut files = Files::default();
            let o = IndexOptions { no_filters, ..opts(t.path(), 40) };
            let ix = files.open(o.clone());
            // Index files of falling sizes, each spilled to a run (not merged: each older
            // run holds more than twice the next).
            for (f, range) in [(0u32, 0..240u32), (1, 240..330), (2, 330..360)] {
                let batch: Vec<IndexEntry> =
                    range.map(|i| entry(*blake3::hash(&i.to_le_bytes()).as_bytes(), (i % 3) as u8 + 1, i)).collect();
                for e in &batch {
                    assert!(ix.claim(&e.id));
                    ix.insert(e);
                }
                let file = FileId(*blake3::hash(&f.to_le_bytes()).as_bytes());
                ix.indexed(file, Stamp::default(), &batch).unwrap();
                ix.spill().unwrap();
                files.0.push((file, batch));
            }
            let stored = |ix: &Index| {
                let mut v: Vec<usize> =
                    ix.read().runs.iter().map(|r| Run::stored_filter_bytes(&r.run.path).unwrap()).collect();
                v.sort_unstable();
                v
            };
            let before = stored(&ix);
            assert!(before.len() >= 2, "several runs: {before:?}");
            // Fences and, without filters, one saturated block per run.
            let fences = |ix: &Index| ix.read().runs.iter().map(|r| r.run.pages() * 8 + filter::BLOCK).sum::<usize>();
            assert_eq!(ix.ram_parts().runs <= fences(&ix), no_filters);
            // Pack [2; 32]'s ordinals, as the records carry them (one per spill).
            let mut gone = HashSet::new();
            ix.for_each_record(&mut |r, _| {
                if ix.get(&BlobId(r.id)).unwrap().pack == FileId([2; 32]) {
                    gone.insert(r.pack);
                }
                Ok(())
            })
            .unwrap();
            ix.forget_packs(&|o| gone.contains(&o), &HashSet::new(), &[]).unwrap();
            assert_eq!(stored(&ix), before, "each run keeps its stored filter");
            assert_eq!(ix.ram_parts().runs <= fences(&ix), no_filters);
            let check = |ix: &Index| {
                for (_, batch) in &files.0 {
                    for e in batch {
                        let want = (e.loc.pack != FileId([2; 32])).then_some(e.loc);
                        assert_eq!(ix.get(&e.id), want);
                    }
                }
            };
            check(&ix);
            drop(ix);
            let ix = files.open(opts(t.path(), 40));
            assert!(ix.ram_parts().runs > fences(&ix), "a later process loads the kept filters");
            check(&ix);
        }
    }

    #[test]
    fn a_changed_index_file_is_verified_and_a_damaged_one_means_rebuild() {
        let t = tempfile::tempdir().unwrap();
        let a: Vec<IndexEntry> = (0..50u32).map(|i| entry(*blake3::hash(&i.to_le_bytes()).as_bytes(), 1, i)).collect();
        let b: Vec<IndexEntry> = (50..90u32).map(|i| entry(*blake3::hash(&i.to_le_bytes()).as_bytes(), 2, i)).collect();
        let (fa, fb) = (FileId([1; 32]), FileId([2; 32]));
        let ix = Index::open(opts(t.path(), 10)).unwrap();
        let all = |ab: &[(FileId, Stamp)], damaged: bool, ix: &Index| {
            let mut reads = 0;
            let failed = ix
                .sync(
                    ab,
                    &mut |id| {
                        reads += 1;
                        match (*id == fa, damaged) {
                            (true, true) => Err(Error::corrupt("index", id, "damaged")),
                            (true, false) => Ok(a.clone()),
                            _ => Ok(b.clone()),
                        }
                    },
                    &mut |id| if damaged && *id == fa { Err(Error::corrupt("index", id, "damaged")) } else { Ok(()) },
                )
                .unwrap();
            (reads, failed.len())
        };
        assert_eq!(all(&[(fa, Stamp(1)), (fb, Stamp(1))], false, &ix), (2, 0));
        // Same stamps: nothing is read again.
        assert_eq!(all(&[(fa, Stamp(1)), (fb, Stamp(1))], false, &ix), (0, 0));
        // A's stamp changed, but its bytes are intact (verify passes): kept, not re-read.
        assert_eq!(all(&[(fa, Stamp(2)), (fb, Stamp(1))], false, &ix), (0, 0));
        assert!(a.iter().all(|e| ix.get(&e.id) == Some(e.loc)));
        drop(ix);
        // Reopened, the new stamp was saved: still nothing to read.
        let ix = Index::open(opts(t.path(), 10)).unwrap();
        assert_eq!(all(&[(fa, Stamp(2)), (fb, Stamp(1))], false, &ix), (0, 0));
        // A changed again and is damaged now: rebuild, A skipped, its blobs no longer vouched for.
        assert_eq!(all(&[(fa, Stamp(3)), (fb, Stamp(1))], true, &ix), (2, 1));
        assert!(a.iter().all(|e| ix.get(&e.id).is_none()));
        assert!(b.iter().all(|e| ix.get(&e.id) == Some(e.loc)));
    }

    /// Found while writing the `index_manifest` fuzz target (a crafted manifest run
    /// through it): a manifest whose next run number was u64::MAX made the next spill
    /// overflow it (a panic with overflow checks on); one not above a listed run's number
    /// would have a spill write over that run. Either means the cache is rebuilt.
    #[test]
    fn manifest_next_run_number_out_of_range_means_rebuild() {
        let a: Vec<IndexEntry> = (0..50u32).map(|i| entry(*blake3::hash(&i.to_le_bytes()).as_bytes(), 1, i)).collect();
        let b: Vec<IndexEntry> = (50..90u32).map(|i| entry(*blake3::hash(&i.to_le_bytes()).as_bytes(), 2, i)).collect();
        for next in [u64::MAX, 0, 1] {
            let t = tempfile::tempdir().unwrap();
            let mut files = Files::default();
            files.0.push((FileId([1; 32]), a.clone()));
            drop(files.open(opts(t.path(), 10)));
            // The manifest: magic (8), version (1), next run number (8), ...
            let m = t.path().join("manifest");
            let mut bytes = fs::read(&m).unwrap();
            bytes[9..17].copy_from_slice(&next.to_le_bytes());
            fs::write(&m, &bytes).unwrap();
            // A new index file: its entries are spilled into a new run.
            files.0.push((FileId([2; 32]), b.clone()));
            let ix = files.open(opts(t.path(), 10));
            assert!(a.iter().chain(&b).all(|e| ix.get(&e.id) == Some(e.loc)), "next run number {next}");
        }
    }

    #[test]
    fn a_damaged_cache_is_rebuilt() {
        let t = tempfile::tempdir().unwrap();
        let mut files = Files::default();
        let a: Vec<IndexEntry> = (0..300u32).map(|i| entry(*blake3::hash(&i.to_le_bytes()).as_bytes(), 1, i)).collect();
        files.0.push((FileId([1; 32]), a.clone()));
        drop(files.open(opts(t.path(), 1000)));
        for e in fs::read_dir(t.path()).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap().to_string_lossy().starts_with("run-") {
                fs::write(&p, b"damaged").unwrap();
            }
        }
        let ix = files.open(opts(t.path(), 1000));
        assert!(a.iter().all(|e| ix.get(&e.id) == Some(e.loc)));
    }

    #[test]
    fn fresh_entries_never_reach_the_cache_before_their_index_file() {
        let t = tempfile::tempdir().unwrap();
        let files = Files::default();
        let ix = files.open(opts(t.path(), 1));
        let e = entry([9; 32], 1, 9);
        assert!(ix.claim(&e.id));
        ix.insert(&e);
        assert_eq!(ix.get(&e.id), Some(e.loc));
        ix.spill().unwrap();
        drop(ix);
        // The process died before writing the index file: the cache must not vouch for it.
        let ix = files.open(opts(t.path(), 1));
        assert_eq!(ix.get(&e.id), None);
        assert!(ix.claim(&e.id));
    }
}
