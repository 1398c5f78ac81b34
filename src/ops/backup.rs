//! `backup`: walk the sources, chunk and deduplicate, store new blobs, write a snapshot.
//!
//! Pipeline (docs/design.md, "Backup"):
//! ```text
//! scout thread: lists ahead ─> 8 lookers: lstat, read small changed files (ahead.rs)
//! walker (this thread): takes those (or stats and reads), compares with parent, chunks,
//!   hashes, claims new ids
//!   └─ jobs (bounded, JOB_QUEUE) ─> 2 workers: zstd + seal
//!        └─ sealed (bounded, SEALED_QUEUE) ─> packer thread: packs, then index files
//! ```
//! Memory in flight is a constant: at most JOB_QUEUE + SEALED_QUEUE + 2 × 2 blobs of at
//! most the maximum chunk size (4 MiB by default), the chunker's buffer (2 × max chunk),
//! one pack write buffer (1 MiB) and, per directory level being walked, one tree leaf.
//!
//! Change detection walks the parent snapshot's tree beside the source tree in name order:
//! a file with the same size, mtime, ctime and inode as in the parent keeps its chunk list
//! without being read. Directory listings are the scout's (ahead.rs), or sorted in at most
//! LISTING_BYTES of RAM per directory level being walked ([`crate::extsort`]; larger ones
//! spill to temp files),
//! and the parent's listing is streamed node by node, so a directory of millions of
//! entries costs neither a million names nor a million parent entries in RAM.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::chunker::{Chunker, Cutter};
use crate::compress::Compressor;
use crate::error::{Error, IoContext, Result};
use crate::extsort::{NameSorter, SortedNames};
use crate::format::snapshot::{Snapshot, Summary, XattrClasses, MAX_XATTR_NAMES};
use crate::format::tree::{ChunkRef, Content, Entry, Kind, Time};
use crate::format::BlobKind;
use crate::id::{BlobId, FileId};
use crate::repo::lock::{LockGuard, LockKind, LockOptions};
use crate::repo::packer::Packer;
use crate::repo::{Repository, SealedBlob};
use crate::sys::Xattrs;
use crate::tree::{lookup, ChunkIter, DirCursor, DirWriter, ListWriter, TreeSink};

mod ahead;
mod select;
#[cfg(test)]
pub(crate) use ahead::{hook_under, Stage};
use ahead::{Ahead, Early, Names};
use select::Verdict;
pub use select::{Marker, Selection};

/// Batches waiting for a worker.
const JOB_QUEUE: usize = 4;
/// A batch is sent once it holds this many bytes...
const BATCH_BYTES: usize = 1 << 20;
/// ...or this many blobs.
const BATCH_BLOBS: usize = 256;
/// Sealed blobs waiting for the packer.
const SEALED_QUEUE: usize = 4;
/// Compression workers.
const WORKERS: usize = 2;
/// Most bytes of extended attributes stored per entry (names + values).
const XATTR_BUDGET: usize = 1 << 20;
/// The largest one extended attribute can be on Linux: a name of XATTR_NAME_MAX (255)
/// bytes and a value of XATTR_SIZE_MAX (64 KiB).
const XATTR_LARGEST: usize = 255 + (64 << 10);
/// RAM for one directory's names while sorting them (per directory level being walked);
/// a larger listing spills to temp files ([`crate::extsort`]).
const LISTING_BYTES: usize = 1 << 20;
/// Hard-linked files remembered so later links reuse the chunk list (≈ 2.5 KiB each at most).
const HARDLINK_MEMORY: usize = 4096;

/// How to choose the parent snapshot.
#[derive(Clone, Debug, Default)]
pub enum ParentChoice {
    /// The newest snapshot of this host with the same paths.
    #[default]
    Auto,
    /// No parent: read every file.
    None,
    /// This snapshot.
    Id(FileId),
}

/// What to back up and how.
#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    /// Source paths.
    pub paths: Vec<PathBuf>,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Host name to record (default: this machine's).
    pub host: Option<String>,
    /// Parent snapshot for change detection.
    pub parent: ParentChoice,
    /// Read every file even if unchanged.
    pub force: bool,
    /// zstd level (default: the repository's).
    pub compression: Option<i32>,
    /// Record access times. Off by default (as in borg): reading a directory during the
    /// backup changes its atime, so recording it would rewrite every directory's tree
    /// node in every backup. Without it the atime field holds the mtime.
    pub atime: bool,
    /// How the shared lock is taken (how long to wait for a prune to finish).
    pub lock: LockOptions,
    /// The snapshot's time (Unix ns) instead of now (restic's `--time`: importing old
    /// backups, tests of retention). A backdated parent counts as older than the local
    /// cache, so what the backup reuses from it is verified first: slower, never wrong.
    pub time_ns: Option<i64>,
    /// What under the sources is left out (`--exclude` and its kin).
    pub select: Selection,
    /// More sources, read from `--files-from`: one that does not exist is a warning
    /// (the backup goes on, exit code 3), where a missing `paths` source is an error.
    pub listed_paths: Vec<PathBuf>,
    /// Walk, read, chunk, compress and seal as a backup does, but write nothing (no
    /// pack, index file, snapshot or lock): [`BackupResult::dry_run`] says what the
    /// repository would grow by.
    pub dry_run: bool,
}

/// Progress counters, reported periodically.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// Files seen.
    pub files: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes of the files done, read or unchanged.
    pub bytes_done: u64,
    /// The parent snapshot's size, if there is one: what `bytes_done` will likely reach.
    pub expected_bytes: Option<u64>,
    /// The file being backed up.
    pub current: &'a Path,
}

/// Receives warnings and progress from a running backup.
pub trait Report: Sync {
    /// A source could not be read or changed while read; the backup goes on.
    fn warn(&self, path: &Path, message: &str);
    /// Something worth knowing that does not make the backup partial.
    fn note(&self, _path: &Path, _message: &str) {}
    /// Periodic progress (about every 250 ms).
    fn progress(&self, _p: &Progress<'_>) {}
}

/// What a finished backup produced.
pub struct BackupResult {
    /// The new snapshot's id.
    pub id: FileId,
    /// The snapshot.
    pub snapshot: Snapshot,
    /// The parent used, if any.
    pub parent: Option<FileId>,
    /// With `dry_run`: what the repository would have grown by (nothing was written,
    /// and `id` is the id the snapshot would have had).
    pub dry_run: Option<Growth>,
}

/// Bytes a backup adds to the repository, by kind of file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Growth {
    /// Packs: sealed blobs, pack headers and trailers.
    pub packs: u64,
    /// Index files.
    pub index: u64,
    /// The snapshot file.
    pub snapshot: u64,
}

impl Growth {
    /// All of it.
    pub fn total(&self) -> u64 {
        self.packs + self.index + self.snapshot
    }
}

/// A blob on its way to a worker.
struct Blob {
    kind: BlobKind,
    id: BlobId,
    data: Vec<u8>,
}

/// Blobs travel in batches of up to BATCH_BYTES / BATCH_BLOBS: one channel hand-off (a
/// futex wake and a context switch) per tiny blob cost ~16% of a backup of small files.
type Batch = Vec<Blob>;

/// Back up `opts.paths` into `repo`. Returns `Error::Interrupted` if `cancel` is set
/// (everything stored so far is indexed and reused by the next backup).
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    report: &dyn Report,
    cancel: &AtomicBool,
) -> Result<BackupResult> {
    run(repo, opts, None, report, cancel)
}

/// A stream stored as one file (`backup --stdin`): its path in the snapshot, and its bytes.
pub struct Stream<'a> {
    /// Where the file appears in the snapshot (`--stdin-filename`; relative paths are
    /// taken from the root).
    pub path: PathBuf,
    /// The bytes. A read error fails the backup (no snapshot is saved): a dump cut
    /// short must not pass for a whole one.
    pub reader: &'a mut (dyn std::io::Read + Send),
}

/// Back up `stream` as the only file of a new snapshot (`backup --stdin`): chunked as
/// it is read, in the same bounded pipeline; `opts.paths` must be empty.
pub fn backup_stream(
    repo: &Repository,
    opts: &BackupOptions,
    stream: Stream<'_>,
    report: &dyn Report,
    cancel: &AtomicBool,
) -> Result<BackupResult> {
    if !opts.paths.is_empty() || !opts.listed_paths.is_empty() {
        return Err(Error::InvalidInput("--stdin takes no paths to back up".into()));
    }
    let name_ok =
        stream.path.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::RootDir));
    if !name_ok || stream.path.file_name().is_none() {
        return Err(Error::InvalidInput(format!("--stdin-filename {}: not a file name", stream.path.display())));
    }
    run(repo, opts, Some(stream), report, cancel)
}

fn run(
    repo: &Repository,
    opts: &BackupOptions,
    stream: Option<Stream<'_>>,
    report: &dyn Report,
    cancel: &AtomicBool,
) -> Result<BackupResult> {
    // A shared lock: backups run side by side, never beside a prune. (A dry run writes
    // nothing, not even a lock.)
    let lock_opts = LockOptions { skip_shared: opts.dry_run || opts.lock.skip_shared, ..opts.lock };
    repo.with_lock(LockKind::Shared, "backup", &lock_opts, |lock| {
        // A prune may have finished between opening the repository and taking the
        // lock: what the index says must be what is stored now, and the parent must be
        // a snapshot that still exists. Both listings at once (one round trip to a
        // remote store).
        let (sources, missing) = match &stream {
            Some(st) => (vec![Path::new("/").join(&st.path)], Vec::new()),
            None => absolute_sources(&opts.paths, &opts.listed_paths)?,
        };
        let host = opts.host.clone().unwrap_or_else(crate::sys::hostname);
        let (refreshed, parent) = std::thread::scope(|s| {
            let parent = s.spawn(|| match &opts.parent {
                ParentChoice::None => Ok(None),
                ParentChoice::Id(id) => Ok(Some((*id, repo.load_snapshot(id)?))),
                ParentChoice::Auto => latest_of(repo, &host, &sources),
            });
            let refreshed = repo.refresh_index();
            (
                refreshed,
                parent.join().unwrap_or_else(|_| Err(Error::InvalidInput("finding the parent panicked".into()))),
            )
        });
        refreshed?;
        let source = Source { paths: sources, missing, host, parent: parent? };
        locked_backup(repo, opts, source, stream, report, cancel, lock)
    })
}

/// What a backup reads and where it starts from: the absolute source paths (and the
/// listed ones that do not exist), the host, and the parent snapshot.
struct Source {
    paths: Vec<PathBuf>,
    missing: Vec<PathBuf>,
    host: String,
    parent: Option<(FileId, Snapshot)>,
}

/// The latest snapshot of `host` with exactly these `paths` (the parent a backup picks),
/// holding one snapshot at a time.
fn latest_of(repo: &Repository, host: &str, paths: &[PathBuf]) -> Result<Option<(FileId, Snapshot)>> {
    let mut best: Option<(FileId, Snapshot)> = None;
    repo.for_each_snapshot(&mut |id, s| {
        if s.host == host && s.paths == paths && best.as_ref().is_none_or(|(b, bs)| (s.time_ns, id) > (bs.time_ns, *b))
        {
            best = Some((id, s));
        }
        Ok(())
    })?;
    Ok(best)
}

fn locked_backup(
    repo: &Repository,
    opts: &BackupOptions,
    Source { paths: sources, missing, host, parent }: Source,
    stream: Option<Stream<'_>>,
    report: &dyn Report,
    cancel: &AtomicBool,
    lock: &LockGuard,
) -> Result<BackupResult> {
    let start = Instant::now();
    let time_ns = opts.time_ns.unwrap_or_else(crate::sys::now_ns);
    check_snapshot_fields(&host, &opts.tags, &sources)?;
    // Packs an interrupted backup left unindexed, or that a damaged index file listed,
    // are indexed from their headers first: their blobs are reused, not stored again.
    if !opts.dry_run {
        crate::ops::repair::recover(repo, &mut |m| report.note(repo.path(), m))?;
    }
    let level = opts.compression.unwrap_or(repo.config().compression);
    let cutter = Cutter::new(repo.config().chunker)?;

    let (job_tx, job_rx) = sync_channel::<Batch>(JOB_QUEUE);
    let (sealed_tx, sealed_rx) = sync_channel::<Vec<SealedBlob>>(SEALED_QUEUE);
    // The workers own the job receiver (through the Arc): when both have stopped, for
    // whatever reason, the receiver is dropped and the walker's next send fails instead
    // of blocking forever on a full queue.
    let job_rx = Arc::new(Mutex::new(job_rx));

    let repo_path = fs::canonicalize(repo.path()).ok();
    let devices: Vec<u64> = sources.iter().filter_map(|p| fs::symlink_metadata(p).ok()).map(|m| m.dev()).collect();
    let (walk, packed) = std::thread::scope(|s| {
        let packer = s.spawn(|| pack_all(repo, opts.dry_run, sealed_rx));
        let mut workers = Vec::new();
        for _ in 0..WORKERS {
            let tx = sealed_tx.clone();
            let rx = Arc::clone(&job_rx);
            workers.push(s.spawn(move || seal_all(repo, level, &rx, tx)));
        }
        drop(sealed_tx);
        drop(job_rx);
        let root = parent.as_ref().map(|(_, p)| p.root);
        let ahead = stream.is_none().then(|| {
            let look = ahead::Look {
                select: &opts.select,
                devices: &devices,
                force: opts.force,
                budget: repo.budget().backup_ahead_bytes(),
            };
            Ahead::start(s, repo, &sources, root, look, repo_path.as_deref(), cancel)
        });
        let mut w = Walker {
            repo,
            cutter: &cutter,
            jobs: job_tx,
            batch: Vec::new(),
            batch_bytes: 0,
            report,
            cancel,
            force: opts.force,
            atime: opts.atime,
            // The parent's blobs are known to be indexed unless the index may have lost
            // entries since the parent was written (this cache was built afresh after
            // it, or damaged index files are skipped now): then every reused chunk must
            // be found (one index lookup each).
            verify_reuse: repo.index_incomplete()
                || parent.as_ref().is_some_and(|(_, p)| p.time_ns <= repo.index().lost_at()),
            parent_tree: None,
            summary: Summary::default(),
            xattr_classes: XattrClasses::NONE,
            xattr_names: Some(std::collections::BTreeSet::new()),
            buf: Vec::new(),
            names: NameCache::default(),
            hardlinks: lru::LruCache::new(std::num::NonZeroUsize::new(HARDLINK_MEMORY).expect("non-zero")),
            last_progress: Instant::now(),
            repo_path: repo_path.clone(),
            select: &opts.select,
            devices: devices.clone(),
            expected_bytes: parent.as_ref().map(|(_, p)| p.summary.total_bytes),
            ahead,
        };
        for m in &missing {
            w.warning(m, "listed in --files-from, does not exist");
        }
        let walk = match stream {
            Some(st) => w.stream_tree(&sources[0], st.reader),
            None => w.virtual_dir(Path::new("/"), &sources, root.as_ref()),
        };
        // Send what is batched even after an interrupt: it is stored and indexed, and the
        // next backup reuses it.
        let flushed = w.flush();
        let walk = walk.and_then(|root| flushed.map(|()| (root, w.summary, (w.xattr_classes, w.xattr_names.take()))));
        drop(w); // closes the job queue so workers and then the packer finish
        let mut worker_err = None;
        for h in workers {
            if let Err(e) = h.join().unwrap_or_else(|_| Err(Error::InvalidInput("compression worker panicked".into())))
            {
                worker_err.get_or_insert(e);
            }
        }
        let packed = packer.join().unwrap_or_else(|_| Err(Error::InvalidInput("pack writer panicked".into())));
        let packed = match (packed, worker_err) {
            (Err(e), _) | (Ok(_), Some(e)) => Err(e),
            (Ok(p), None) => Ok(p),
        };
        (walk, packed)
    });
    // A storage error explains a walker that stopped because its queue closed.
    let stats = packed?;
    let (root, mut summary, (xattrs, xattr_names)) = walk?;
    summary.bytes_added = stats.bytes;
    summary.blobs_added = stats.blobs;
    summary.duration_ms = start.elapsed().as_millis() as u64;
    summary.peak_rss = crate::sys::peak_rss();
    let snapshot = Snapshot {
        time_ns,
        host,
        user: crate::sys::username(),
        paths: sources,
        tags: opts.tags.clone(),
        parent: parent.as_ref().map(|(id, _)| *id),
        root,
        program: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        summary,
        xattrs: Some(xattrs),
        xattr_names: xattr_names.map(|n| n.into_iter().collect()),
    };
    if opts.dry_run {
        let payload = snapshot.encode();
        let growth = Growth {
            packs: stats.bytes,
            index: stats.index_bytes,
            snapshot: Repository::sealed_file_len(payload.len()),
        };
        return Ok(BackupResult { id: FileId::of(&payload), parent: snapshot.parent, snapshot, dry_run: Some(growth) });
    }
    // Only while the lock still holds can no prune have deleted what the snapshot names.
    lock.check()?;
    let id = repo.save_snapshot(&snapshot)?;
    // Keep this backup's index entries in the local cache, so the next open need not
    // read its index files again. Failing to is not a failure of the backup.
    let _ = repo.index().spill();
    Ok(BackupResult { id, parent: snapshot.parent, snapshot, dry_run: None })
}

fn seal_all(
    repo: &Repository,
    level: i32,
    rx: &Arc<Mutex<Receiver<Batch>>>,
    tx: SyncSender<Vec<SealedBlob>>,
) -> Result<()> {
    let mut comp = if level > 0 { Some(Compressor::new(level)?) } else { None };
    loop {
        let batch = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(batch) = batch else {
            return Ok(());
        };
        let sealed = batch.iter().map(|b| repo.seal_blob(b.kind, b.id, &b.data, comp.as_mut())).collect();
        drop(batch);
        if tx.send(sealed).is_err() {
            return Ok(()); // the packer failed; it reports why
        }
    }
}

fn pack_all(repo: &Repository, dry: bool, rx: Receiver<Vec<SealedBlob>>) -> Result<crate::repo::packer::PackerStats> {
    let mut packer = if dry { Packer::dry(repo) } else { Packer::new(repo) };
    for batch in rx {
        for blob in batch {
            packer.add(blob)?;
        }
    }
    packer.finish()
}

/// The snapshot format stores these with u16 lengths and counts.
fn check_snapshot_fields(host: &str, tags: &[String], paths: &[PathBuf]) -> Result<()> {
    const MAX: usize = u16::MAX as usize;
    let too_long = host.len() > MAX
        || tags.len() > MAX
        || paths.len() > MAX
        || tags.iter().any(|t| t.len() > MAX)
        || paths.iter().any(|p| p.as_os_str().len() > MAX);
    if too_long {
        return Err(Error::InvalidInput(format!("host, tags or paths too long or too many (at most {MAX} each)")));
    }
    // Readers refuse snapshot files over the format's limit; the rest of the snapshot
    // is a few hundred bytes, so half of it is plenty for what the user chose.
    let chosen = host.len()
        + tags.iter().map(|t| t.len() + 2).sum::<usize>()
        + paths.iter().map(|p| p.as_os_str().len() + 2).sum::<usize>();
    if chosen as u64 > crate::format::MAX_SNAPSHOT_LEN / 2 {
        return Err(Error::InvalidInput(format!("host, tags and paths take {chosen} bytes: too many to record")));
    }
    Ok(())
}

/// Make sources absolute (resolving the parent directory, keeping a final symlink),
/// check they exist, sort them and drop any inside another. Of the `listed` ones
/// (`--files-from`), those that do not exist are returned apart, to be warned about.
fn absolute_sources(paths: &[PathBuf], listed: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for (p, is_listed) in paths.iter().map(|p| (p, false)).chain(listed.iter().map(|p| (p, true))) {
        match fs::symlink_metadata(p) {
            Err(e) if is_listed && e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(p.clone());
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::InvalidInput(format!("{}: source path does not exist", p.display())))
            }
            Err(e) => return Err(Error::Io { path: p.clone(), err: e }),
            Ok(_) => {}
        }
        let abs = std::path::absolute(p).at(p)?;
        let abs = match (abs.parent(), abs.file_name()) {
            (Some(dir), Some(name)) if name != ".." => fs::canonicalize(dir).at(dir)?.join(name),
            _ => fs::canonicalize(&abs).at(&abs)?,
        };
        out.push(abs);
    }
    out.sort();
    out.dedup();
    // Sorted by component, a path's descendants follow it at once: comparing with the
    // last one kept is enough (a list of 10^6 paths must not take 10^12 steps).
    let mut kept: Vec<PathBuf> = Vec::new();
    for p in out {
        if !kept.last().is_some_and(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    if kept.is_empty() {
        let why = if missing.is_empty() { "give at least one path" } else { "none of the listed paths exists" };
        return Err(Error::InvalidInput(format!("nothing to back up: {why}")));
    }
    Ok((kept, missing))
}

/// uid/gid -> name, remembered (one entry per distinct owner).
#[derive(Default)]
struct NameCache {
    users: HashMap<u32, Vec<u8>>,
    groups: HashMap<u32, Vec<u8>>,
}

impl NameCache {
    fn user(&mut self, uid: u32) -> Vec<u8> {
        self.users
            .entry(uid)
            // Names longer than the format's u8 prefix (no real system has them) are not
            // recorded; the numeric id always is.
            .or_insert_with(|| crate::sys::user_name(uid).filter(|n| n.len() <= 255).unwrap_or_default())
            .clone()
    }
    fn group(&mut self, gid: u32) -> Vec<u8> {
        self.groups
            .entry(gid)
            .or_insert_with(|| crate::sys::group_name(gid).filter(|n| n.len() <= 255).unwrap_or_default())
            .clone()
    }
}

/// A hard-linked file already read: (mtime, ctime, size at stat, size read, content).
type HardLink = (Time, Time, u64, u64, Content);

/// A regular file as backed up: its content, the bytes it held, and the xattrs read from
/// its open descriptor if it was read (`None`: reused, or a hard link already read).
struct FileRead {
    content: Content,
    size: u64,
    xattrs: Option<std::io::Result<Xattrs>>,
}

struct Walker<'a> {
    repo: &'a Repository,
    cutter: &'a Cutter,
    jobs: SyncSender<Batch>,
    batch: Batch,
    batch_bytes: usize,
    report: &'a dyn Report,
    cancel: &'a AtomicBool,
    force: bool,
    atime: bool,
    verify_reuse: bool,
    /// The parent's tree of the directory whose last nodes are being stored: a node with
    /// its id is stored already (when reuse is trusted), so it is not looked up.
    parent_tree: Option<BlobId>,
    summary: Summary,
    /// The classes of every xattr name stored so far.
    xattr_classes: XattrClasses,
    /// Every xattr name stored so far, up to [`MAX_XATTR_NAMES`] (`None` past that).
    xattr_names: Option<std::collections::BTreeSet<Vec<u8>>>,
    buf: Vec<u8>,
    names: NameCache,
    /// (dev, ino) -> (mtime, ctime, size at stat, size read, content) of hard-linked files.
    hardlinks: lru::LruCache<(u64, u64), HardLink>,
    last_progress: Instant,
    repo_path: Option<PathBuf>,
    select: &'a Selection,
    /// The sources' filesystems (for `--one-file-system`).
    devices: Vec<u64>,
    /// The parent's size (for progress).
    expected_bytes: Option<u64>,
    /// What is stat'ed and read ahead of this walk (not for a stream).
    ahead: Option<Ahead<'a>>,
}

impl TreeSink for Walker<'_> {
    fn store_tree(&mut self, node: &[u8]) -> Result<BlobId> {
        let id = self.repo.keys().blob_id(BlobKind::Tree, node);
        // An unchanged directory: the parent snapshot has this very node, and everything it
        // references is indexed unless `verify_reuse` says otherwise. Saves a lookup (a
        // read of an index run when its filter answers yes) per unchanged directory.
        if self.verify_reuse || self.parent_tree != Some(id) {
            self.store(BlobKind::Tree, id, node)?;
        }
        Ok(id)
    }
}

fn time(sec: i64, nsec: i64) -> Time {
    Time { sec, nsec: nsec.clamp(0, 999_999_999) as u32 }
}

impl<'a> Walker<'a> {
    /// Queue a blob for storing unless it is stored already or claimed: the dedup decision.
    fn store(&mut self, kind: BlobKind, id: BlobId, data: &[u8]) -> Result<()> {
        if self.repo.index().claim(&id) {
            self.batch_bytes += data.len();
            self.batch.push(Blob { kind, id, data: data.to_vec() });
            if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_BLOBS {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Send the current batch to the workers.
    fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_bytes = 0;
        self.jobs
            .send(std::mem::take(&mut self.batch))
            .map_err(|_| Error::InvalidInput("backup pipeline stopped (see the storage error)".into()))
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        Ok(())
    }

    /// Report progress if it is time: `current` is the file being read, of which
    /// `in_file` bytes are read so far.
    fn tick(&mut self, current: &Path, in_file: u64) {
        if self.last_progress.elapsed().as_millis() >= 250 {
            self.last_progress = Instant::now();
            self.report.progress(&Progress {
                files: self.summary.files(),
                bytes_read: self.summary.bytes_read + in_file,
                bytes_done: self.summary.total_bytes + in_file,
                expected_bytes: self.expected_bytes,
                current,
            });
        }
    }

    /// The tree for `prefix`, a directory on the way to the sources (all under it).
    fn virtual_dir(&mut self, prefix: &Path, sources: &[PathBuf], parent: Option<&BlobId>) -> Result<BlobId> {
        if sources.len() == 1 && sources[0] == prefix {
            // Backing up "/" itself.
            return self.dir_tree(prefix, parent);
        }
        let mut w = DirWriter::new();
        let mut i = 0;
        while i < sources.len() {
            let Some(name) = next_component(prefix, &sources[i]) else {
                i += 1;
                continue;
            };
            let child = prefix.join(&name);
            let n = sources[i..].iter().take_while(|s| s.starts_with(&child)).count();
            let group = &sources[i..i + n];
            i += n;
            let prev = match parent.map(|p| lookup(self.repo, p, name.as_bytes())) {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    self.parent_damaged(&child, &e);
                    None
                }
                None => None,
            };
            let meta = match fs::symlink_metadata(&child) {
                Ok(m) => m,
                Err(e) => {
                    self.warning(&child, &e.to_string());
                    continue;
                }
            };
            let entry = if group.len() == 1 && group[0] == child {
                self.entry(&child, name.as_bytes(), &meta, prev.as_ref(), None)?
            } else {
                let sub_parent = match prev.as_ref().map(|e| &e.kind) {
                    Some(Kind::Dir(id)) => Some(*id),
                    _ => None,
                };
                let sub = self.virtual_dir(&child, group, sub_parent.as_ref())?;
                Some(self.make_entry(name.as_bytes(), &meta, Kind::Dir(sub), &child, prev.as_ref(), None))
            };
            if let Some(e) = entry {
                w.push(&e, self)?;
            }
        }
        w.finish(self)
    }

    /// The parent snapshot's tree could not be read here: go on as if there were no
    /// parent below this point (files are read again), rather than failing every backup
    /// that picks this parent.
    fn parent_damaged(&mut self, path: &Path, e: &Error) {
        self.report.note(path, &format!("parent snapshot unreadable here, reading files again: {e}"));
    }

    fn warning(&mut self, path: &Path, msg: &str) {
        self.summary.warnings += 1;
        self.report.warn(path, msg);
    }

    /// The tree of a real directory.
    fn dir_tree(&mut self, path: &Path, parent: Option<&BlobId>) -> Result<BlobId> {
        let mut names = match self.ahead.as_ref().and_then(|a| a.listing(path)) {
            Some(listing) => Names::Listed(listing, 0),
            None => Names::Sorted(self.list(path)?),
        };
        let mut cursor = DirCursor::new(self.repo, parent).unwrap_or_else(|e| {
            self.parent_damaged(path, &e);
            DirCursor::empty()
        });
        let mut w = DirWriter::new();
        while let Some(name) = names.next_name().at(path)? {
            let name = OsString::from_vec(name);
            self.check_cancel()?;
            let matching = cursor.seek(name.as_bytes()).unwrap_or_else(|e| {
                self.parent_damaged(path, &e);
                None
            });
            let child = path.join(&name);
            if self.select.excluded_by_name(&child) {
                continue;
            }
            let scouted = self.ahead.as_ref().and_then(|a| a.take(&child));
            let (meta, early) = match scouted {
                // A file to read that was not read ahead (too large, hard-linked, or the
                // budget was full) is stat'ed again: the looker's lstat may be minutes old
                // (a large file chunked since), and a file replaced by a rename since
                // would be skipped as "replaced", one written to would be said to change.
                Some(s) => match (s.meta, s.early) {
                    (Ok(m), None) if m.is_file() && !matching.is_some_and(|p| self.unchanged(p, &m)) => {
                        (fs::symlink_metadata(&child), None)
                    }
                    (m, e) => (m, e),
                },
                None => (fs::symlink_metadata(&child), None),
            };
            let meta = match meta {
                Ok(m) => m,
                Err(e) => {
                    self.warning(&child, &e.to_string());
                    continue;
                }
            };
            let verdict = self.select.verdict(&child, &meta, &self.devices);
            if verdict == Verdict::Drop {
                continue;
            }
            let entry = if let Verdict::KeepEmpty | Verdict::KeepMarker(_) = verdict {
                self.summary.dirs += 1;
                let mut only = DirWriter::new();
                if let Verdict::KeepMarker(i) = verdict {
                    let marker = self.select.marker_name(i).to_os_string();
                    let path = child.join(&marker);
                    match fs::symlink_metadata(&path) {
                        Ok(m) => {
                            if let Some(e) = self.entry(&path, marker.as_encoded_bytes(), &m, None, None)? {
                                only.push(&e, self)?;
                            }
                        }
                        Err(e) => self.warning(&path, &e.to_string()),
                    }
                }
                let tree = only.finish(self)?;
                Some(self.make_entry(name.as_bytes(), &meta, Kind::Dir(tree), &child, None, None))
            } else {
                self.entry(&child, name.as_bytes(), &meta, matching, early)?
            };
            if let Some(e) = entry {
                w.push(&e, self)?;
            }
        }
        self.parent_tree = parent.copied();
        let tree = w.finish(self);
        self.parent_tree = None;
        tree
    }

    /// The names in directory `path`, sorted (and deduplicated: readdir can repeat a name
    /// on some network filesystems or in a directory changing while listed; a tree node
    /// must not) in bounded RAM.
    fn list(&mut self, path: &Path) -> Result<SortedNames> {
        let mut sorter = NameSorter::new(LISTING_BYTES);
        match fs::read_dir(path) {
            Ok(rd) => {
                for e in rd {
                    match e {
                        Ok(e) => sorter.push(e.file_name().into_vec()).at(path)?,
                        Err(e) => {
                            self.warning(path, &format!("reading directory: {e}"));
                            break;
                        }
                    }
                }
            }
            Err(e) => self.warning(path, &format!("reading directory: {e}")),
        }
        sorter.finish().at(path)
    }

    /// The entry for one path; `None` if it was skipped. `early` is its content if it was
    /// read ahead.
    fn entry(
        &mut self,
        path: &Path,
        name: &[u8],
        meta: &Metadata,
        prev: Option<&Entry>,
        early: Option<Early>,
    ) -> Result<Option<Entry>> {
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            if self.repo_path.as_deref() == Some(path) {
                self.report.note(path, "skipped: this is the repository itself");
                return Ok(None);
            }
            self.summary.dirs += 1;
            let sub_parent = match prev.map(|e| &e.kind) {
                Some(Kind::Dir(id)) => Some(*id),
                _ => None,
            };
            Kind::Dir(self.dir_tree(path, sub_parent.as_ref())?)
        } else if ft.is_file() {
            match self.file_content(path, meta, prev, early)? {
                Some(FileRead { content, size, xattrs }) => {
                    let mut e = self.make_entry(name, meta, Kind::File(content), path, prev, xattrs);
                    e.size = size;
                    self.summary.total_bytes += size;
                    return Ok(Some(e));
                }
                None => return Ok(None),
            }
        } else {
            self.summary.others += 1;
            if ft.is_symlink() {
                match fs::read_link(path) {
                    Ok(t) if t.as_os_str().len() > u16::MAX as usize => {
                        self.warning(path, "symlink target too long to store");
                        return Ok(None);
                    }
                    Ok(t) => Kind::Symlink(t.into_os_string().into_encoded_bytes()),
                    Err(e) => {
                        self.warning(path, &format!("reading link: {e}"));
                        return Ok(None);
                    }
                }
            } else if ft.is_fifo() {
                Kind::Fifo
            } else if ft.is_char_device() {
                Kind::CharDev(meta.rdev())
            } else if ft.is_block_device() {
                Kind::BlockDev(meta.rdev())
            } else {
                Kind::Socket
            }
        };
        Ok(Some(self.make_entry(name, meta, kind, path, prev, None)))
    }

    /// The entry for `path`, whose `lstat` is `meta`; `prev` is the parent snapshot's
    /// entry of the same name, if any. Its extended attributes are read, unless `prev`
    /// is the same inode with the same ctime: every change to an inode's xattrs sets its
    /// ctime, so the parent's are still right (without `--force`). That saves the
    /// `llistxattr` (and any `getxattr`) of every unchanged entry, and a read of the
    /// inode's xattr block from disk when it is not in the inode itself. Parent xattrs
    /// that may have been cut to [`XATTR_BUDGET`] are read again, so that the warning
    /// repeats: below the budget by more than one largest xattr, nothing was cut.
    /// `read`: the xattrs of a file read from its open descriptor when it was read (no
    /// second lookup of its path).
    fn make_entry(
        &mut self,
        name: &[u8],
        meta: &Metadata,
        kind: Kind,
        path: &Path,
        prev: Option<&Entry>,
        read: Option<std::io::Result<Xattrs>>,
    ) -> Entry {
        let ctime = time(meta.ctime(), meta.ctime_nsec());
        let uncut =
            |p: &Entry| p.xattrs.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() <= XATTR_BUDGET - XATTR_LARGEST;
        let same_inode = prev.filter(|p| !self.force && p.ino == meta.ino() && p.ctime == ctime && uncut(p));
        let read = match (same_inode, read) {
            (Some(p), _) => Ok(p.xattrs.clone()),
            (None, Some(read)) => read,
            (None, None) => crate::sys::xattrs(path),
        };
        let mut xattrs = match read {
            Ok(x) => x,
            Err(e) => {
                self.warning(path, &format!("reading extended attributes: {e}"));
                Vec::new()
            }
        };
        // Keep an entry well inside one tree node (and its u16 count): at most
        // XATTR_BUDGET bytes of xattrs per entry; the rest is dropped with a warning.
        let mut total = 0;
        let before = xattrs.len();
        xattrs.retain(|(n, v)| {
            total += n.len() + v.len();
            total <= XATTR_BUDGET && n.len() <= u8::MAX as usize
        });
        for (n, _) in &xattrs {
            self.xattr_classes = self.xattr_classes.union(XattrClasses::of(n));
            if let Some(names) = &mut self.xattr_names {
                if !names.contains(n) {
                    names.insert(n.clone());
                    if names.len() > MAX_XATTR_NAMES {
                        self.xattr_names = None;
                    }
                }
            }
        }
        if xattrs.len() < before {
            self.warning(
                path,
                &format!(
                    "{} extended attributes over the {XATTR_BUDGET}-byte limit per file were not stored",
                    before - xattrs.len()
                ),
            );
        }
        Entry {
            name: name.to_vec(),
            size: if matches!(kind, Kind::Dir(_)) { 0 } else { meta.len() },
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            user: self.names.user(meta.uid()),
            group: self.names.group(meta.gid()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime,
            atime: if self.atime {
                time(meta.atime(), meta.atime_nsec())
            } else {
                time(meta.mtime(), meta.mtime_nsec())
            },
            dev: meta.dev(),
            ino: meta.ino(),
            nlink: meta.nlink() as u32,
            xattrs,
        }
    }

    /// A regular file's content and size: reused from the parent when unchanged, otherwise
    /// read (or taken as `early`, read ahead) and chunked. `None` if it could not be read
    /// (a warning was given).
    fn file_content(
        &mut self,
        path: &Path,
        meta: &Metadata,
        prev: Option<&Entry>,
        early: Option<Early>,
    ) -> Result<Option<FileRead>> {
        let (mtime, ctime) = (time(meta.mtime(), meta.mtime_nsec()), time(meta.ctime(), meta.ctime_nsec()));
        if let Some(Entry { kind: Kind::File(c), size, .. }) = prev.filter(|p| self.unchanged(p, meta)) {
            if self.reusable(c) {
                self.summary.files_unchanged += 1;
                self.tick(path, 0);
                return Ok(Some(FileRead { content: c.clone(), size: *size, xattrs: None }));
            }
        }
        let link_key = (meta.dev(), meta.ino());
        if meta.nlink() > 1 {
            if let Some((m, c, stat_size, read_size, content)) = self.hardlinks.get(&link_key) {
                if (*m, *c, *stat_size) == (mtime, ctime, meta.len()) {
                    let r = FileRead { content: content.clone(), size: *read_size, xattrs: None };
                    self.count_read_file(prev);
                    return Ok(Some(r));
                }
            }
        }
        let (read, changed, xattrs) = match early {
            Some(Early::Failed(msg)) => {
                self.warning(path, &msg);
                return Ok(None);
            }
            Some(Early::Read { data, changed, xattrs, .. }) => {
                (self.read_content(data.as_slice(), path)?, changed, xattrs)
            }
            None => {
                let file = match ahead::open_stated(path, meta) {
                    Ok(f) => f,
                    Err(msg) => {
                        self.warning(path, &msg);
                        return Ok(None);
                    }
                };
                let read = self.read_content(&file, path)?;
                let changed = read.as_ref().is_some_and(|(_, size)| ahead::changed_since(&file, meta, *size));
                (read, changed, crate::sys::file_xattrs(&file))
            }
        };
        let Some((content, size)) = read else { return Ok(None) };
        if changed {
            self.warning(path, "file changed while it was read; stored what was read");
        }
        self.count_read_file(prev);
        if meta.nlink() > 1 {
            self.hardlinks.put(link_key, (mtime, ctime, meta.len(), size, content.clone()));
        }
        Ok(Some(FileRead { content, size, xattrs: Some(xattrs) }))
    }

    /// Chunk and store what `reader` (the file at `path`) holds; `None` if reading
    /// failed (a warning was given).
    fn read_content(&mut self, reader: impl std::io::Read, path: &Path) -> Result<Option<(Content, u64)>> {
        let mut list = ListWriter::new();
        let mut chunker = Chunker::new(self.cutter, reader, std::mem::take(&mut self.buf));
        let outcome = loop {
            if let Err(e) = self.check_cancel() {
                break Err(e);
            }
            match chunker.next_chunk() {
                Ok(Some(chunk)) => {
                    let id = self.repo.keys().blob_id(BlobKind::Data, chunk);
                    let size = chunk.len() as u32;
                    if let Err(e) =
                        self.store(BlobKind::Data, id, chunk).and_then(|()| list.push(ChunkRef { id, size }, self))
                    {
                        break Err(e);
                    }
                    self.tick(path, chunker.bytes_read);
                }
                Ok(None) => break Ok(true),
                Err(e) => break Ok(self.warn_read(path, &e)),
            }
        };
        self.summary.bytes_read += chunker.bytes_read;
        self.buf = chunker.into_buffer();
        self.tick(path, 0);
        if !outcome? {
            return Ok(None);
        }
        let size = list.bytes;
        Ok(Some((list.finish(self)?, size)))
    }

    /// Whether the parent's entry `prev` says the file stat'ed as `meta` is unchanged
    /// (same size, mtime, ctime and inode; never with `--force`).
    fn unchanged(&self, prev: &Entry, meta: &Metadata) -> bool {
        !self.force && ahead::Stamp::of(prev).is_some_and(|s| s.matches(meta))
    }

    /// May an unchanged file's chunk list be reused? Always, unless the index may have
    /// lost entries the parent relies on: some index files were skipped as damaged at
    /// open, or the cache was built afresh after the parent was written (a new machine,
    /// or index files removed by `repair index` after packs were lost; see
    /// [`crate::index::Index::lost_at`]). Reusing missing chunks would make a snapshot
    /// that points at data the repository cannot find. In that case every reused chunk
    /// (and list node) must be in the index; a file whose chunks are not is read again
    /// and its data stored anew, which heals the repository.
    fn reusable(&self, content: &Content) -> bool {
        if !self.verify_reuse {
            return true;
        }
        let ix = self.repo.index();
        match content {
            Content::Inline(cs) => cs.iter().all(|c| ix.contains(&c.id)),
            Content::List(root) => {
                ix.contains(root)
                    && ChunkIter::new(self.repo, content).is_ok_and(|mut it| loop {
                        match it.next_chunk() {
                            Ok(Some(c)) if ix.contains(&c.id) => {}
                            Ok(None) => break true,
                            _ => break false,
                        }
                    })
            }
        }
    }

    fn warn_read(&mut self, path: &Path, e: &std::io::Error) -> bool {
        self.warning(path, &format!("read error: {e}"));
        false
    }

    /// The root tree of a snapshot holding one file at `path` (absolute) with what
    /// `reader` gives: owned by this user, mode 0644, modified now; the directories on
    /// the way are 0755.
    fn stream_tree(&mut self, path: &Path, reader: &mut (dyn std::io::Read + Send)) -> Result<BlobId> {
        struct Failing<'r> {
            inner: &'r mut (dyn std::io::Read + Send),
            failed: Option<std::io::Error>,
        }
        impl std::io::Read for Failing<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.inner.read(buf).inspect_err(|e| {
                    // The chunker retries an interrupted read.
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        self.failed = Some(std::io::Error::new(e.kind(), e.to_string()));
                    }
                })
            }
        }
        let mut r = Failing { inner: reader, failed: None };
        let content = self.read_content(&mut r, path)?;
        if let Some(e) = r.failed {
            return Err(Error::InvalidInput(format!("reading standard input for {}: {e}", path.display())));
        }
        let (content, size) = content.ok_or_else(|| Error::InvalidInput("reading standard input failed".into()))?;
        self.count_read_file(None);
        self.summary.total_bytes += size;
        let now = crate::sys::now_ns();
        let now = time(now.div_euclid(1_000_000_000), now.rem_euclid(1_000_000_000));
        let (uid, gid) = (crate::sys::euid(), crate::sys::egid());
        let names: Vec<&std::ffi::OsStr> = path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let mut entry = Entry {
            name: Vec::new(),
            kind: Kind::File(content),
            mode: 0o644,
            uid,
            gid,
            user: self.names.user(uid),
            group: self.names.group(gid),
            size,
            mtime: now,
            ctime: now,
            atime: now,
            dev: 0,
            ino: 0,
            nlink: 1,
            xattrs: Vec::new(),
        };
        for (i, name) in names.iter().enumerate().rev() {
            entry.name = name.as_bytes().to_vec();
            let mut dir = DirWriter::new();
            dir.push(&entry, self)?;
            let tree = dir.finish(self)?;
            if i > 0 {
                self.summary.dirs += 1;
                entry = Entry { name: Vec::new(), kind: Kind::Dir(tree), mode: 0o755, size: 0, ..entry };
            } else {
                return Ok(tree);
            }
        }
        Err(Error::InvalidInput("--stdin-filename: not a file name".into()))
    }

    fn count_read_file(&mut self, prev: Option<&Entry>) {
        if matches!(prev.map(|p| &p.kind), Some(Kind::File(_))) {
            self.summary.files_changed += 1;
        } else {
            self.summary.files_new += 1;
        }
    }
}

/// The component of `path` right after `prefix`.
fn next_component(prefix: &Path, path: &Path) -> Option<OsString> {
    path.strip_prefix(prefix).ok()?.components().next().map(|c| c.as_os_str().to_os_string())
}
