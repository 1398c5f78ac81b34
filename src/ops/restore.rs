//! `restore`: write a snapshot's files back with their metadata.
//!
//! The walker (this thread) creates directories, symlinks and special files, and lists
//! each regular file's chunks into a batch (within a share of `--memory`, and of the
//! open-file limit). A full batch is planned by pack ([`crate::repo::plan`]: every pack
//! read once per batch, front to back, neighbouring blobs coalesced into one request)
//! and its runs go to reader threads, which open each blob once, verify it and write it
//! at its offset into every file that holds it (all-zero chunks as holes), creating a
//! file when its first chunk comes; whoever writes a file's last chunk gives it its
//! metadata. The walker meanwhile fills the next batch. A file is open only from its
//! first chunk to its last: a small file's one chunk opens and closes it, so a batch
//! holds thousands of them, and a pack shared by their chunks is read once. Directory
//! times and modes are set in a second walk once every file is written, so no list of
//! directories is kept in memory.
//!
//! Safety: names are validated when tree nodes are decoded ('/', '.', '..' and NUL are
//! refused), and the target is walked by **directory descriptors**: every directory is
//! opened from its parent's descriptor (`openat` with `O_DIRECTORY | O_NOFOLLOW`), every
//! entry is created, replaced and given its metadata relative to its directory's
//! descriptor without following a symlink (`mkdirat`, `openat(O_CREAT | O_EXCL |
//! O_NOFOLLOW)`, `symlinkat`, `mknodat`, `linkat`, `fchownat`/`fchmodat`/`utimensat` with
//! `AT_SYMLINK_NOFOLLOW`), and files and directories get theirs through their own
//! descriptor. No path is resolved by name twice, so another local user who can write
//! into the target cannot redirect the restore by swapping a directory for a symlink
//! while it runs: nothing is ever written outside the target.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};

use crate::error::{Error, IoContext, Result};
use crate::format::tree::{ChunkRef, Content, Entry, Kind};
use crate::format::BlobKind;
use crate::id::BlobId;
use crate::pattern::Patterns;
use crate::repo::{ChunkCache, Pool, Repository, Run, Spacing, Wanted};
use crate::sys;
use crate::tree::{self, Step, Walk};

/// Bytes charged per chunk listed in a batch ([`Wanted`] of a [`Place`], and its share
/// of the plan's sort). A batch holds at most a 32nd of `--memory` (8 MiB at the
/// default: ~60,000 chunks, or ~14,000 small files of one chunk each); the walker fills
/// one while the readers work through the previous one.
const WANT_BYTES: usize = 128;
/// Bytes charged per file listed in a batch ([`Pending`] with its entry), plus its path
/// and extended attributes.
const FILE_BYTES: usize = 320;
/// Descriptors one batch may hold (files of more than one chunk, each open from its
/// first chunk to its last, and the directories of its files), if the open-file limit
/// allows: about three batches are in flight.
const BATCH_HANDLES: usize = 8192;
/// The chunk cache's share of `--memory` (16 MiB at the default 256 MiB). Within a batch
/// a chunk is opened once anyway ([`crate::repo::plan`]); the cache holds the chunks a
/// batch wanted more than once (what a tree repeats: a file copied across it, a block
/// repeated in a disk image), so that later batches wanting them again write them from
/// there. A chunk wanted once,
/// most of any restore, is not kept: caching every chunk cost a 2.9 GiB restore 0.5
/// user-s and 60 MiB of RSS (fresh buffers instead of reused ones) and saved nothing on
/// the benchmark's corpus.
const CACHE_SHARE: usize = 16;
/// The buffers the readers read runs and open chunks into, kept for reuse: a run's
/// sealed bytes (at most 4 MiB locally) and a chunk (at most the largest chunk) per
/// reader.
const POOL_BYTES: usize = 16 << 20;
/// Planned runs waiting for a reader thread (a few dozen bytes per chunk each: the
/// bytes are read only when a reader takes the run).
const RUN_QUEUE: usize = 16;
/// Target names `--delete` reads per pass over one directory (~60 bytes each with their
/// share of the heap: ~4 MiB); a larger directory takes more passes.
const DELETE_BATCH: usize = 65_536;
/// Names read per pass when a directory tree is removed, at each level of it.
const REMOVE_BATCH: usize = 256;
/// Hard-link groups remembered (path + key, ~100 B each). Past this, later links to an
/// evicted group are restored as copies, with a warning.
const HARDLINK_MEMORY: usize = 100_000;

/// What to restore and where.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// If not empty, only restore the paths these patterns select (with what is inside
    /// them, and the directories on the way to them): `--include` and its kin, the
    /// patterns of backup's `--exclude` ([`crate::pattern`]), matched against the path
    /// in the snapshot.
    pub include: Patterns,
    /// Leave out the paths these patterns select, with what is inside them
    /// (`--exclude` and its kin).
    pub exclude: Patterns,
    /// fsync every restored file and directory, so that all of it is on disk when the
    /// restore returns (otherwise the kernel writes it back in its own time).
    pub sync: bool,
    /// How the shared lock is taken (a prune must not delete packs under the restore).
    pub lock: crate::repo::lock::LockOptions,
    /// What to do with an entry that is already in the target (`--overwrite`).
    pub overwrite: Overwrite,
    /// Remove what is in the target but not in the snapshot (`--delete`), in the
    /// directories the restore writes, and only paths the filters select.
    pub delete: bool,
    /// Decide and count everything as a restore would, change nothing (`--dry-run`).
    pub dry_run: bool,
    /// Read every file back once it is written and check each chunk against its id
    /// (`--verify`).
    pub verify: bool,
    /// The bytes the restore covers, if known (the snapshot's size, when all of it is
    /// restored), for the progress meter's total; 0 if not.
    pub size_hint: u64,
}

/// What restore does with an entry already in the target (`--overwrite`, restic's values).
/// Whatever replaces an entry never writes through it: a regular file is updated in place
/// only when it is one of one link, opened without following a symlink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Restore over it. A regular file there is read and compared chunk by chunk, and
    /// only the chunks that differ are read from the repository and written.
    #[default]
    Always,
    /// As `Always`, but a regular file of the snapshot's size and modification time is
    /// taken as unchanged without reading it.
    IfChanged,
    /// Only when the snapshot's entry is newer (modification time) than what is there.
    IfNewer,
    /// Never: what is there stays as it is.
    Never,
}

impl Overwrite {
    /// `always`, `if-changed`, `if-newer` or `never`.
    pub fn parse(s: &str) -> std::result::Result<Overwrite, String> {
        Ok(match s {
            "always" => Overwrite::Always,
            "if-changed" => Overwrite::IfChanged,
            "if-newer" => Overwrite::IfNewer,
            "never" => Overwrite::Never,
            _ => return Err(format!("{s:?}: expected always, if-changed, if-newer or never")),
        })
    }
}

/// Receives problems with single files; the restore goes on.
pub trait Report: Sync {
    /// Something could not be restored (damage, permission, ...).
    fn error(&self, path: &Path, message: &str);
    /// Metadata could not be fully restored (e.g. ownership when not root).
    fn warn(&self, _path: &Path, _message: &str) {}
    /// What was done to `path` (or, in a dry run, would be), restic's words:
    /// `restored`, `updated`, `unchanged`, `skipped` or `deleted`.
    fn action(&self, _path: &Path, _what: &str) {}
}

/// Counters of a finished restore.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct RestoreStats {
    /// Regular files restored (written, updated, or found unchanged).
    pub files: u64,
    /// Of them, files whose content was already there (`--overwrite`): not written.
    pub unchanged: u64,
    /// Entries already in the target that `--overwrite` left as they were.
    pub skipped: u64,
    /// Entries removed from the target (`--delete`), counting what was inside them.
    pub deleted: u64,
    /// Bytes of file content written (the rest was already there, or holes).
    pub written: u64,
    /// Files read back and checked (`--verify`).
    pub verified: u64,
    /// Directories created.
    pub dirs: u64,
    /// Other entries (links, devices, fifos).
    pub others: u64,
    /// Bytes of the restored files' content.
    pub bytes: u64,
    /// Entries that failed.
    pub errors: u64,
    /// Entries the `--include` patterns matched (themselves, not what is under them).
    pub matched: u64,
    /// Chunks written from the chunk cache, opened for an earlier batch: not read again.
    pub cached: u64,
}

/// Name -> id on this system, if the name exists here.
type NameMap = HashMap<Vec<u8>, Option<u32>>;

/// A regular file being restored: the directory it goes in, its path (for messages),
/// its entry, and once its first chunk comes, the file itself (its name made with
/// `O_EXCL` in the directory's descriptor).
struct Pending {
    /// The file while it is being written: made by its first chunk (or its end), closed
    /// when it is finished.
    file: Mutex<Option<Arc<File>>>,
    /// Set once the file is made: its device and inode if it is hard-linked (later links
    /// are checked against them), else zeros.
    made: std::sync::OnceLock<(u64, u64)>,
    dir: Arc<File>,
    path: PathBuf,
    entry: Entry,
    /// Chunks not yet written, plus one while the walker is still listing them: whoever
    /// takes this to zero finishes the file ([`Ctx::finish`]).
    left: AtomicU64,
    /// A chunk was all zeros and left as a hole: the length is set at the end.
    sparse: AtomicBool,
    /// It failed (reported once) or the restore was interrupted: it is removed at the end.
    failed: AtomicBool,
    /// It was already in the target and is updated in place: only the chunks that differ
    /// are listed, and all-zero ones are punched as holes.
    in_place: bool,
    /// It was already in the target and is taken as it is (`--overwrite if-changed`):
    /// no chunk is listed.
    keep: bool,
    /// Something was written to it (a chunk, a hole punched, its length set).
    wrote: AtomicBool,
}

/// Where one chunk goes: its file, the offset in it, and its size as the file's chunk
/// list gives it.
struct Place {
    file: Arc<Pending>,
    offset: u64,
    size: u32,
}

/// Chunks listed and not yet planned, with where their runs go: the reader threads, or
/// (`None`) read by the walker itself (the first link of a hard-linked file, which
/// must be complete before the next link is made).
struct Batch<'t> {
    wants: Vec<Wanted<Place>>,
    /// Bytes charged ([`WANT_BYTES`], [`FILE_BYTES`]) and their limit.
    bytes: usize,
    max_bytes: usize,
    /// Descriptors the batch's files may hold (see [`BATCH_HANDLES`]) and their limit.
    handles: usize,
    max_handles: usize,
    /// The directory of the last file listed (a new one is one more descriptor held).
    last_dir: Option<Arc<File>>,
    spacing: Spacing,
    readers: Option<&'t SyncSender<Run<Place>>>,
    /// The walker's buffer for reading what is already in the target (one chunk).
    scratch: Vec<u8>,
}

impl Batch<'_> {
    fn full(&self) -> bool {
        self.bytes >= self.max_bytes || self.handles >= self.max_handles
    }
}

struct Ctx<'a> {
    repo: &'a Repository,
    report: &'a dyn Report,
    cancel: &'a AtomicBool,
    opts: &'a RestoreOptions,
    /// Running as root: owners are restored.
    root: bool,
    /// What the walker and the readers have done so far.
    count: Counts,
    /// User and group names already looked up on this system (one entry per name).
    ids: Mutex<(NameMap, NameMap)>,
    /// The target directory, open: every other directory is reached from it (`None` only
    /// in a dry run into a directory that does not exist).
    target: Option<Arc<File>>,
    /// Set once the hard-link memory has overflowed (warned about once).
    evicted: AtomicBool,
    /// Chunks opened for a batch, for later batches that want them again (the cache the
    /// mount uses too, charged a [`CACHE_SHARE`] of `--memory`).
    cache: ChunkCache,
}

/// The counters of [`RestoreStats`] that the reader threads bump too.
#[derive(Default)]
struct Counts {
    errors: AtomicU64,
    bytes: AtomicU64,
    files: AtomicU64,
    unchanged: AtomicU64,
    written: AtomicU64,
    verified: AtomicU64,
    deleted: AtomicU64,
    cached: AtomicU64,
}

impl Counts {
    /// Copy them into `stats`.
    fn fill(&self, stats: &mut RestoreStats) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        stats.files = get(&self.files);
        stats.bytes = get(&self.bytes);
        stats.errors = get(&self.errors);
        stats.unchanged = get(&self.unchanged);
        stats.written = get(&self.written);
        stats.verified = get(&self.verified);
        stats.deleted = get(&self.deleted);
        stats.cached = get(&self.cached);
    }
}

/// Restore the directory tree `root` (a snapshot's root or a subdirectory of it, found at
/// `snap_path` inside the snapshot) into `opts.target`.
pub fn restore(
    repo: &Repository,
    root: &Entry,
    snap_path: &Path,
    opts: &RestoreOptions,
    report: &dyn Report,
    cancel: &AtomicBool,
) -> Result<RestoreStats> {
    repo.with_lock(crate::repo::lock::LockKind::Shared, "restore", &opts.lock, |_| {
        locked_restore(repo, root, snap_path, opts, report, cancel)
    })
}

fn locked_restore(
    repo: &Repository,
    root: &Entry,
    snap_path: &Path,
    opts: &RestoreOptions,
    report: &dyn Report,
    cancel: &AtomicBool,
) -> Result<RestoreStats> {
    // One descriptor per directory level being walked, plus those of three batches.
    let reserved = tree::MAX_DIR_NESTING + 256;
    let limit = sys::raise_open_files((reserved + 3 * BATCH_HANDLES) as u64) as usize;
    let max_handles = (limit.saturating_sub(reserved) / 3).clamp(16, BATCH_HANDLES);
    // The target itself is the user's path, resolved once. A dry run of a restore into a
    // directory that does not exist yet walks as if it were empty.
    if !opts.dry_run {
        fs::create_dir_all(&opts.target).at(&opts.target)?;
    }
    let target = match File::open(&opts.target) {
        Err(e) if opts.dry_run && e.kind() == std::io::ErrorKind::NotFound => None,
        r => Some(r.at(&opts.target)?),
    };
    let ctx = Ctx {
        repo,
        report,
        cancel,
        opts,
        root: sys::euid() == 0,
        count: Counts::default(),
        ids: Mutex::new(Default::default()),
        target: target.map(Arc::new),
        evicted: AtomicBool::new(false),
        cache: ChunkCache::with_pool(repo.budget().0 / CACHE_SHARE, Pool::transient(POOL_BYTES)),
    };
    let mut stats = RestoreStats::default();
    let phase = if opts.dry_run { "comparing" } else { "restoring" };
    repo.meter().start(phase, crate::progress::Unit::Bytes, opts.size_hint);
    let (spacing, threads) = repo.read_plan();
    let (tx, rx) = sync_channel::<Run<Place>>(RUN_QUEUE);
    // Owned by the readers: if they all stop, the walker's send fails instead of blocking.
    let rx = Arc::new(Mutex::new(rx));
    let walked = std::thread::scope(|s| {
        for _ in 0..threads {
            let (ctx, rx) = (&ctx, Arc::clone(&rx));
            // Each reader holds one run's sealed bytes (at most `spacing.max`, or one
            // blob) and one opened blob (at most the largest chunk, 4 MiB by default),
            // buffers of the cache's pool.
            s.spawn(move || loop {
                let run = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok(run) = run else { return };
                ctx.read_run(&run);
            });
        }
        drop(rx);
        let mut batch = Batch {
            wants: Vec::new(),
            bytes: 0,
            max_bytes: repo.budget().0 / 32,
            handles: 0,
            max_handles,
            last_dir: None,
            spacing,
            readers: Some(&tx),
            scratch: Vec::new(),
        };
        let mut links = lru::LruCache::new(std::num::NonZeroUsize::new(HARDLINK_MEMORY).expect("non-zero"));
        let r = match &root.kind {
            Kind::Dir(id) => {
                stats.matched += (ctx.included(snap_path) && !ctx.opts.include.is_empty()) as u64;
                ctx.walk(id, snap_path, &mut batch, &mut links, &mut stats)
            }
            _ => {
                // Restoring a single file or link: it goes into the target under its name.
                let dir = Level { dir: ctx.target.clone(), rel: PathBuf::new(), snap: PathBuf::new(), probed: true };
                ctx.entry(root, &dir, &mut batch, &mut links, &mut stats)
            }
        };
        // What is listed goes to the readers even after an error or an interruption:
        // they finish (or, interrupted, remove) every file the walker created.
        let flushed = ctx.flush(&mut batch);
        drop(tx);
        r.and(flushed)
    });
    walked?;
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    // The target directory itself keeps its own metadata: it is the user's, not the
    // snapshot's (and the snapshot root has none).
    if let (Kind::Dir(id), true) = (&root.kind, !ctx.opts.dry_run || ctx.opts.delete) {
        ctx.dir_metadata(id, snap_path);
    }
    if let (true, Some(t)) = (ctx.sync(), &ctx.target) {
        t.sync_all().at(&opts.target)?;
    }
    ctx.count.fill(&mut stats);
    repo.meter().finish();
    Ok(stats)
}

/// Where the first link of a hard-linked file was restored: its path relative to the
/// target, and the device and inode it got, by which later links are checked.
#[derive(Clone)]
struct FirstLink {
    rel: PathBuf,
    dev: u64,
    ino: u64,
}

/// (dev, ino) of a hard-linked file in the snapshot -> its first link (`None` if that
/// failed).
type Links = lru::LruCache<(u64, u64), Option<FirstLink>>;

/// A directory being restored: its descriptor (`None` while `--include` has not matched
/// anything in it, so it is not created yet, or in a dry run, when it does not exist),
/// and its path relative to the target and in the snapshot.
struct Level {
    dir: Option<Arc<File>>,
    rel: PathBuf,
    snap: PathBuf,
    /// A dry run has looked for the directory in the target (`dir` is what it found).
    probed: bool,
}

/// What restore does with one entry, given what is at its name in the target.
enum Plan {
    /// Make it (replacing whatever is there).
    Create,
    /// Leave what is there (`--overwrite never`, or `if-newer` and it is not newer).
    Skip,
    /// The regular file there is taken as the snapshot's (`--overwrite if-changed` and
    /// the same size and time): only its metadata is set.
    Keep(File),
    /// The regular file there is compared chunk by chunk and updated in place.
    Update(File),
}

impl Ctx<'_> {
    /// fsync what is restored (`--sync`, not in a dry run).
    fn sync(&self) -> bool {
        self.opts.sync && !self.opts.dry_run
    }

    /// Whether `--include` selects `snap_path` by itself (or there is no `--include`).
    fn included(&self, snap_path: &Path) -> bool {
        self.opts.include.is_empty() || self.opts.include.matches(snap_path)
    }

    /// Report that `path` failed. The report names the path, so an error that starts
    /// with it (an I/O error on that very path) is given without it.
    fn fail(&self, path: &Path, msg: impl std::fmt::Display) {
        self.count.errors.fetch_add(1, Ordering::Relaxed);
        let msg = msg.to_string();
        let prefix = format!("{}: ", path.display());
        self.report.error(path, msg.strip_prefix(&prefix).unwrap_or(&msg));
    }

    /// Where `rel` (relative to the target) is, for messages.
    fn shown(&self, rel: &Path) -> PathBuf {
        self.opts.target.join(rel)
    }

    /// The directory `rel` under the target, opened component by component from the
    /// target's descriptor without following a symlink; `create` makes missing ones
    /// (as `--include` does for the directories on the way to a match), replacing
    /// whatever non-directory is in the way.
    fn open_beneath(&self, rel: &Path, create: bool) -> std::io::Result<Arc<File>> {
        use std::os::unix::ffi::OsStrExt;
        let mut dir = self.target.clone().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        for c in rel.components() {
            let name = c.as_os_str().as_bytes();
            // A directory made only on the way to a match gets the usual mode (umask
            // applies), not the snapshot's: the second pass leaves it as it is.
            let next = if create { make_dir_at(&dir, name, 0o777)? } else { sys::open_dir_at(&dir, name)? };
            dir = Arc::new(next);
        }
        Ok(dir)
    }

    /// Restore the tree of directory `dir` (at `snap` in the snapshot) into the target,
    /// through the one snapshot walker
    /// ([`Walk`]: iterative, nesting limited, damage reported and skipped).
    fn walk(
        &self,
        dir: &BlobId,
        snap: &Path,
        batch: &mut Batch<'_>,
        links: &mut Links,
        stats: &mut RestoreStats,
    ) -> Result<()> {
        let top = Level { dir: self.target.clone(), rel: PathBuf::new(), snap: snap.to_path_buf(), probed: true };
        let mut walk = Walk::new(self.repo, dir, top);
        while let Some(step) = walk.next() {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let e = match step {
                Step::Entry(e) => e,
                Step::Leave(_) => continue,
                Step::Failed(level, err) => {
                    self.fail(&self.shown(&level.rel), err);
                    continue;
                }
                Step::Skipped(err, _) => {
                    self.fail(&self.opts.target, err);
                    continue;
                }
            };
            let Some(level) = walk.top() else { continue };
            let rel = level.rel.join(sys::os(&e.name));
            let snap_path = level.snap.join(sys::os(&e.name));
            if self.opts.exclude.matches(&snap_path) {
                continue;
            }
            let hit = !self.opts.include.is_empty() && self.opts.include.matches(&snap_path);
            stats.matched += hit as u64;
            // Each path is judged by itself (a pattern matching a directory matches
            // what is under it too), so a later `!` pattern can take part of it back.
            let m = self.included(&snap_path);
            // With a filter, directories on the way to a match are created on demand (a
            // dry run looks for them once).
            if m && self.opts.dry_run && !level.probed {
                level.dir = self.open_beneath(&level.rel, false).ok();
                level.probed = true;
            } else if m && level.dir.is_none() && !self.opts.dry_run {
                match self.open_beneath(&level.rel, true) {
                    Ok(d) => level.dir = Some(d),
                    Err(err) => {
                        self.fail(&self.shown(&level.rel), err);
                        continue;
                    }
                }
            }
            if let Kind::Dir(sub) = &e.kind {
                let mut sub_dir = None;
                if m && self.opts.dry_run {
                    stats.dirs += 1;
                    let found = level.dir.as_ref().and_then(|d| sys::open_dir_at(d, &e.name).ok());
                    walk.enter(sub, Level { dir: found.map(Arc::new), rel, snap: snap_path, probed: true });
                    continue;
                }
                if let (true, Some(parent)) = (m, &level.dir) {
                    match make_dir_at(parent, &e.name, 0o700) {
                        Ok(d) => {
                            stats.dirs += 1;
                            sub_dir = Some(Arc::new(d));
                        }
                        Err(err) => {
                            self.fail(&self.shown(&rel), err);
                            continue;
                        }
                    }
                }
                walk.enter(sub, Level { dir: sub_dir, rel, snap: snap_path, probed: false });
            } else if m {
                self.entry(&e, level, batch, links, stats)?;
            }
        }
        Ok(())
    }

    /// Restore one non-directory entry of directory `level` (created: it has a
    /// descriptor). Regular files go into `batch`, except the first link of a hard-linked
    /// one, written here so that later links find it complete.
    fn entry(
        &self,
        e: &Entry,
        level: &Level,
        batch: &mut Batch<'_>,
        links: &mut Links,
        stats: &mut RestoreStats,
    ) -> Result<()> {
        if matches!(e.kind, Kind::Dir(_) | Kind::Socket) {
            return Ok(()); // a socket is meaningless without its server
        }
        let rel = level.rel.join(sys::os(&e.name));
        let path = self.shown(&rel);
        let name = &e.name[..];
        let plan = match &level.dir {
            Some(dir) => match self.plan(dir, e) {
                Ok(plan) => plan,
                Err(err) => {
                    self.fail(&path, err);
                    return Ok(());
                }
            },
            // A dry run in a directory that does not exist yet: everything is new.
            None if self.opts.dry_run => Plan::Create,
            None => return Ok(()),
        };
        if let Plan::Skip = plan {
            stats.skipped += 1;
            self.report.action(&path, "skipped");
            return Ok(());
        }
        if self.opts.dry_run {
            // A later link of a hard-linked file would be a link, not a file.
            if matches!(e.kind, Kind::File(_)) && e.nlink > 1 {
                if links.get(&(e.dev, e.ino)).is_some() {
                    stats.others += 1;
                    self.report.action(&path, "restored");
                    return Ok(());
                }
                links.push((e.dev, e.ino), None);
            }
            return self.dry_entry(e, plan, &path, &mut batch.scratch, stats);
        }
        let Some(dir) = level.dir.clone() else { return Ok(()) };
        let r = match &e.kind {
            Kind::File(_) if e.nlink > 1 => {
                let key = (e.dev, e.ino);
                match links.get(&key) {
                    Some(Some(first)) => {
                        let first = first.clone();
                        let _ = self.clear(&dir, name);
                        // The link shares the first one's inode, which already has its
                        // metadata: nothing is set through the new name.
                        match self.link_first(&first, &dir, name) {
                            Ok(()) => stats.others += 1,
                            Err(err) => self.fail(&path, err),
                        }
                        return Ok(());
                    }
                    Some(None) => {
                        self.fail(&path, "not restored: the first link to this file could not be restored");
                        return Ok(());
                    }
                    None => {
                        let p = self.pending(dir, path.clone(), e, plan);
                        let mut own = Batch {
                            wants: Vec::new(),
                            last_dir: None,
                            readers: None,
                            scratch: std::mem::take(&mut batch.scratch),
                            ..*batch
                        };
                        let listed = self.list_chunks(&p, &mut own);
                        // Flushed even when interrupted: the readers remove it then.
                        batch.scratch = std::mem::take(&mut own.scratch);
                        listed.and(self.flush(&mut own))?;
                        let made = p.made.get().filter(|_| !p.failed.load(Ordering::Relaxed));
                        let first = made.map(|&(dev, ino)| FirstLink { rel, dev, ino });
                        if let Some((old, _)) = links.push(key, first) {
                            if old != key && !self.evicted.swap(true, Ordering::Relaxed) {
                                self.report.warn(&path, &format!("more than {HARDLINK_MEMORY} hard-linked files: further links to the oldest are restored as copies"));
                            }
                        }
                        return Ok(());
                    }
                }
            }
            Kind::File(_) => {
                let p = self.pending(dir, path, e, plan);
                self.list_chunks(&p, batch)?;
                if batch.full() {
                    self.flush(batch)?;
                }
                return Ok(());
            }
            Kind::Dir(_) | Kind::Socket => return Ok(()), // a socket is meaningless without its server
            Kind::Symlink(target) => {
                let _ = self.clear(&dir, name);
                sys::symlink_at(target, &dir, name)
            }
            Kind::Fifo => {
                let _ = self.clear(&dir, name);
                sys::mknod_at(&dir, name, libc::S_IFIFO | 0o600, 0)
            }
            Kind::CharDev(d) | Kind::BlockDev(d) => {
                let t = if matches!(e.kind, Kind::CharDev(_)) { libc::S_IFCHR } else { libc::S_IFBLK };
                let _ = self.clear(&dir, name);
                sys::mknod_at(&dir, name, t | 0o600, *d)
            }
        };
        match r.and_then(|()| self.created_node(&dir, name)) {
            Ok(node) => {
                stats.others += 1;
                self.node_metadata(e, &dir, &node, &path);
                self.report.action(&path, "restored");
            }
            Err(err) => self.fail(&path, err),
        }
        Ok(())
    }

    /// A handle on the symlink, fifo or device node just created as `name` in `dir`,
    /// checked to be the one this process made: one link, owned by this user. Another
    /// user who swapped in something else (a hard link to a device or to a file
    /// elsewhere) gets no owner, mode or xattr set on it.
    fn created_node(&self, dir: &File, name: &[u8]) -> std::io::Result<File> {
        let node = sys::open_path_at(dir, name)?;
        let m = node.metadata()?;
        if m.nlink() != 1 || m.uid() != sys::euid() {
            return Err(std::io::Error::other("replaced by another user while being restored; left as it is"));
        }
        Ok(node)
    }

    /// Link `name` in `dir` to the first link of its group, found again from the target's
    /// descriptor without following symlinks, and check that the new name holds the very
    /// inode the first link got: a directory on the way swapped by another user (for one
    /// holding a file of theirs under that name) is refused, and the link removed.
    fn link_first(&self, first: &FirstLink, dir: &File, name: &[u8]) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let parent = self.open_beneath(first.rel.parent().unwrap_or(Path::new("")), false)?;
        let first_name = first.rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
        sys::link_at(&parent, first_name, dir, name)?;
        let m = sys::open_path_at(dir, name)?.metadata()?;
        if (m.dev(), m.ino()) != (first.dev, first.ino) {
            let _ = sys::unlink_at(dir, name, false);
            return Err(std::io::Error::other("the first link was replaced by another user; not linked"));
        }
        Ok(())
    }

    /// Create regular file `name` in `dir`, replacing whatever is there (never writing
    /// into it: it may be a hard link to a file elsewhere, a fifo or a device).
    /// `O_EXCL` first: in an empty target nothing is there, which saves a lookup.
    fn create(&self, dir: &File, name: &[u8]) -> std::io::Result<File> {
        match sys::create_file_at(dir, name) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                self.clear(dir, name)?;
                sys::create_file_at(dir, name)
            }
            r => r,
        }
    }

    /// Remove whatever is at `name` in `dir` to make room for the snapshot's entry: a
    /// file, a link, an empty directory, or with `--delete` a whole directory tree.
    fn clear(&self, dir: &File, name: &[u8]) -> std::io::Result<()> {
        match self.opts.delete {
            true => remove_tree(dir, name, false, 0).map(drop),
            false => remove_at(dir, name),
        }
    }

    /// What to do with entry `e` of directory `dir`, by what is at its name there and
    /// `--overwrite`. Only a regular file of one link, in the snapshot and in the target,
    /// is kept or updated in place ([`sys::open_own_file_at`]); anything else there is
    /// replaced.
    fn plan(&self, dir: &File, e: &Entry) -> std::io::Result<Plan> {
        let Some(st) = sys::stat_at(dir, &e.name)? else { return Ok(Plan::Create) };
        let mtime = (st.st_mtime, st.st_mtime_nsec);
        let newer = (e.mtime.sec, e.mtime.nsec as i64) > mtime;
        match self.opts.overwrite {
            Overwrite::Never => return Ok(Plan::Skip),
            Overwrite::IfNewer if !newer => return Ok(Plan::Skip),
            _ => {}
        }
        let file = matches!(e.kind, Kind::File(_)) && e.nlink <= 1;
        if !file || st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(Plan::Create);
        }
        let f = match sys::open_own_file_at(dir, &e.name) {
            Ok(Some(f)) => f,
            // Not one we may write (another user's, read-only): replaced, as before.
            Ok(None) => return Ok(Plan::Create),
            Err(err) if matches!(err.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => return Ok(Plan::Create),
            Err(err) => return Err(err),
        };
        let same = st.st_size as u64 == e.size && mtime == (e.mtime.sec, e.mtime.nsec as i64);
        Ok(match self.opts.overwrite == Overwrite::IfChanged && same {
            true => Plan::Keep(f),
            false => Plan::Update(f),
        })
    }

    /// The chunks of file content `content` (`size` bytes, at `path`) in order, each
    /// given to `each` with its offset and whether `existing`, a file in the target,
    /// already holds it there (its bytes at that offset have the chunk's id; read into
    /// `buf`, one chunk). Returns the existing file's length (0 without one).
    fn chunks_held(
        &self,
        content: &Content,
        size: u64,
        existing: Option<&File>,
        path: &Path,
        buf: &mut Vec<u8>,
        each: &mut dyn FnMut(&ChunkRef, u64, bool) -> Result<()>,
    ) -> Result<u64> {
        let len = match existing {
            Some(f) => f.metadata().at(path)?.len(),
            None => 0,
        };
        let mut offset = 0u64;
        tree::for_each_chunk(self.repo, content, size, &mut |c| {
            let held = match existing {
                Some(f) if offset.saturating_add(c.size as u64) <= len => {
                    buf.resize(c.size as usize, 0);
                    f.read_exact_at(buf, offset).at(path)?;
                    self.repo.keys().blob_id(BlobKind::Data, buf) == c.id
                }
                _ => false,
            };
            each(c, offset, held)?;
            offset += c.size as u64;
            Ok(())
        })?;
        Ok(len)
    }

    /// Count what restoring entry `e` by `plan` would do, and say it (a dry run). A file
    /// to update is compared chunk by chunk, as the restore would.
    fn dry_entry(
        &self,
        e: &Entry,
        plan: Plan,
        path: &Path,
        scratch: &mut Vec<u8>,
        stats: &mut RestoreStats,
    ) -> Result<()> {
        let Kind::File(content) = &e.kind else {
            stats.others += 1;
            self.report.action(path, "restored");
            return Ok(());
        };
        let (what, written) = match plan {
            Plan::Keep(_) => ("unchanged", 0),
            Plan::Update(f) => {
                let mut differ = 0u64;
                let r = self.chunks_held(content, e.size, Some(&f), path, scratch, &mut |c, _, held| {
                    differ += if held { 0 } else { c.size as u64 };
                    Ok(())
                });
                match r {
                    Ok(len) if differ == 0 && len == e.size => ("unchanged", 0),
                    Ok(_) => ("updated", differ),
                    Err(Error::Interrupted) => return Err(Error::Interrupted),
                    Err(err) => {
                        self.fail(path, err);
                        return Ok(());
                    }
                }
            }
            _ => ("restored", e.size),
        };
        self.count.files.fetch_add(1, Ordering::Relaxed);
        self.count.bytes.fetch_add(e.size, Ordering::Relaxed);
        self.count.written.fetch_add(written, Ordering::Relaxed);
        self.repo.meter().add(e.size);
        self.repo.meter().item();
        self.count.unchanged.fetch_add((what == "unchanged") as u64, Ordering::Relaxed);
        self.report.action(path, what);
        Ok(())
    }

    /// Check that file `p`, just written, holds the snapshot's content (`--verify`).
    fn verify_file(&self, p: &Pending, f: &File) -> Result<()> {
        let Kind::File(content) = &p.entry.kind else { return Ok(()) };
        let mut buf = Vec::new();
        let len = self.chunks_held(content, p.entry.size, Some(f), &p.path, &mut buf, &mut |c, offset, held| {
            if held {
                return Ok(());
            }
            let msg = format!("verify: the {} bytes at offset {offset} differ from the snapshot", c.size);
            Err(std::io::Error::other(msg)).at(&p.path)
        })?;
        if len != p.entry.size {
            let msg = format!("verify: {len} bytes were written, the snapshot has {}", p.entry.size);
            return Err(std::io::Error::other(msg)).at(&p.path);
        }
        Ok(())
    }

    /// A regular file to restore into `dir` by `plan` (the file there already, to keep or
    /// update in place, or one to make).
    fn pending(&self, dir: Arc<File>, path: PathBuf, entry: &Entry, plan: Plan) -> Arc<Pending> {
        let (file, keep) = match plan {
            Plan::Update(f) => (Some(Arc::new(f)), false),
            Plan::Keep(f) => (Some(Arc::new(f)), true),
            Plan::Create | Plan::Skip => (None, false),
        };
        let made = std::sync::OnceLock::new();
        if file.is_some() {
            let _ = made.set((0, 0));
        }
        Arc::new(Pending {
            in_place: file.is_some(),
            keep,
            wrote: AtomicBool::new(false),
            file: Mutex::new(file),
            made,
            dir,
            path,
            entry: entry.clone(),
            left: AtomicU64::new(1),
            sparse: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        })
    }

    /// List the chunks of file `p` into `batch` (flushing it whenever it is full), then
    /// drop the walker's own count on the file: a file without chunks (or whose chunks
    /// are all written already) is finished here. A chunk the index does not know, or
    /// a chunk list that does not add up to the file's size, fails the file.
    fn list_chunks(&self, p: &Arc<Pending>, batch: &mut Batch<'_>) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let xattrs: usize = p.entry.xattrs.iter().map(|(n, v)| n.len() + v.len()).sum();
        batch.bytes += FILE_BYTES + p.path.as_os_str().as_bytes().len() + xattrs;
        if !batch.last_dir.as_ref().is_some_and(|d| Arc::ptr_eq(d, &p.dir)) {
            batch.last_dir = Some(p.dir.clone());
            batch.handles += 1;
        }
        let mut chunks = 0u64;
        // A file updated in place: the chunks it already holds are not listed.
        let existing = match (p.in_place, p.keep) {
            (true, false) => p.file.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            _ => None,
        };
        let mut scratch = std::mem::take(&mut batch.scratch);
        let listed = match &p.entry.kind {
            Kind::File(_) if p.keep => {
                self.repo.meter().add(p.entry.size);
                Ok(())
            }
            Kind::File(content) => {
                let mut each = |c: &ChunkRef, offset: u64, held: bool| {
                    if held {
                        self.repo.meter().add(c.size as u64);
                        return Ok(());
                    }
                    let loc = (self.repo.index().try_get(&c.id)?)
                        .ok_or_else(|| Error::NotFound { what: "data blob", id: c.id.to_hex() })?;
                    if self.repo.is_zero_blob(c, offset, p.entry.size, || Some(loc)) {
                        // A hole, known from its id: nothing to read.
                        self.repo.meter().add(c.size as u64);
                        if !p.in_place {
                            p.sparse.store(true, Ordering::Relaxed);
                        } else {
                            match self.file(p).and_then(|f| sys::punch_hole(&f, offset, c.size as u64)) {
                                Ok(()) => p.wrote.store(true, Ordering::Relaxed),
                                Err(err) => self.fail_file(p, err),
                            }
                        }
                        return Ok(());
                    }
                    p.left.fetch_add(1, Ordering::Relaxed);
                    let to = Place { file: p.clone(), offset, size: c.size };
                    if let Some(d) = self.cache.peek(&c.id) {
                        // Opened for an earlier batch and still cached: written now.
                        self.count.cached.fetch_add(1, Ordering::Relaxed);
                        self.put(&c.id, &to, Ok(&d[..]));
                        return Ok(());
                    }
                    batch.wants.push(Wanted { id: c.id, loc, to });
                    batch.bytes += WANT_BYTES;
                    chunks += 1;
                    // Open from its first chunk to its last (one chunk opens and closes it).
                    if chunks == 2 {
                        batch.handles += 1;
                    }
                    if batch.full() {
                        self.flush(batch)?;
                    }
                    Ok(())
                };
                self.chunks_held(content, p.entry.size, existing.as_deref(), &p.path, &mut scratch, &mut each).map(drop)
            }
            _ => Ok(()),
        };
        batch.scratch = scratch;
        let flushed = match listed {
            Err(Error::Interrupted) => Err(Error::Interrupted),
            Err(err) => {
                self.fail_file(p, err);
                Ok(())
            }
            Ok(()) => Ok(()),
        };
        self.chunk_done(p);
        flushed
    }

    /// Plan what `batch` lists and hand its runs to the readers (or read them here).
    fn flush(&self, batch: &mut Batch<'_>) -> Result<()> {
        (batch.bytes, batch.handles, batch.last_dir) = (0, 0, None);
        let runs = crate::repo::plan(std::mem::take(&mut batch.wants), batch.spacing);
        match batch.readers {
            Some(tx) => {
                for run in runs {
                    tx.send(run).map_err(|_| Error::InvalidInput("restore readers stopped".into()))?;
                }
            }
            None => {
                for run in runs {
                    self.read_run(&run);
                }
            }
        }
        Ok(())
    }

    /// Read one planned run and write its chunks where they go; once interrupted, only
    /// count them off (their files are then removed). A chunk the batch wants more than
    /// once is kept in the chunk cache for later batches (see [`CACHE_SHARE`]); the
    /// others' buffers go back to its pool.
    fn read_run(&self, run: &Run<Place>) {
        if self.cancel.load(Ordering::Relaxed) {
            for w in &run.wants {
                w.to.file.failed.store(true, Ordering::Relaxed);
                self.chunk_done(&w.to.file);
            }
            return;
        }
        self.repo.read_run(run, self.cache.pool(), &mut |same, opened| {
            for w in same {
                self.put(&w.id, &w.to, opened.as_deref().map_err(|e| *e));
            }
            match opened {
                Ok(d) if same.len() > 1 => self.cache.keep(&same[0].id, Arc::new(d)),
                Ok(d) => self.cache.pool().give(d),
                Err(_) => {}
            }
        });
    }

    /// Write chunk `id`'s plaintext `data` (or fail its file with the error that kept
    /// it) at `to`: all zeros as a hole, or punched into a file updated in place.
    fn put(&self, id: &BlobId, to: &Place, data: std::result::Result<&[u8], &Error>) {
        let Place { file: p, offset, size } = to;
        if self.cancel.load(Ordering::Relaxed) {
            p.failed.store(true, Ordering::Relaxed);
        } else if !p.failed.load(Ordering::Relaxed) {
            match data {
                Err(err) => self.fail_file(p, err),
                Ok(d) if d.len() != *size as usize => self.fail_file(
                    p,
                    Error::corrupt("data blob", id, format!("is {} bytes, the file lists {size}", d.len())),
                ),
                Ok(d) => {
                    let zero = is_zero(d);
                    let r = match (zero, p.in_place) {
                        // Left as a hole: VM images and sparse files stay sparse.
                        (true, false) => {
                            p.sparse.store(true, Ordering::Relaxed);
                            Ok(())
                        }
                        (true, true) => self.file(p).and_then(|f| sys::punch_hole(&f, *offset, d.len() as u64)),
                        (false, _) => self.file(p).and_then(|f| f.write_all_at(d, *offset)),
                    };
                    match r {
                        Err(err) => self.fail_file(p, err),
                        Ok(()) if zero && !p.in_place => {}
                        Ok(()) => {
                            p.wrote.store(true, Ordering::Relaxed);
                            self.count.written.fetch_add(if zero { 0 } else { d.len() as u64 }, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        self.repo.meter().add(*size as u64);
        self.chunk_done(p);
    }

    /// File `p`, made by the first who needs it (its first chunk, or its end).
    fn file(&self, p: &Pending) -> std::io::Result<Arc<File>> {
        let mut file = p.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = &*file {
            return Ok(f.clone());
        }
        if p.made.get().is_some() {
            return Err(std::io::Error::other("written to after it was finished"));
        }
        let f = Arc::new(self.create(&p.dir, &p.entry.name)?);
        let id = match p.entry.nlink > 1 {
            true => f.metadata().map(|m| (m.dev(), m.ino()))?,
            false => (0, 0),
        };
        let _ = p.made.set(id);
        *file = Some(f.clone());
        Ok(f)
    }

    /// Report file `p` failed (once: later chunks of it are skipped).
    fn fail_file(&self, p: &Pending, msg: impl std::fmt::Display) {
        if !p.failed.swap(true, Ordering::Relaxed) {
            self.fail(&p.path, msg);
        }
    }

    /// One chunk of `p` is dealt with (or the walker has listed them all): the last one
    /// finishes the file.
    fn chunk_done(&self, p: &Pending) {
        if p.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish(p);
        }
    }

    /// Every chunk of `p` is written: set its length over a trailing hole, its metadata
    /// through its descriptor (and fsync it with `--sync`). A file that failed, or an
    /// interrupted restore's, is removed: no half-written file is left under its name.
    fn finish(&self, p: &Pending) {
        let failed = p.failed.load(Ordering::Relaxed) || self.cancel.load(Ordering::Relaxed);
        let file = match failed {
            true => None,
            // An empty file, or one of holes only, is made here.
            false => self.file(p).map_err(|err| self.fail_file(p, err)).ok(),
        };
        if let Some(f) = &file {
            // A file updated in place gets its new length (longer or shorter); a new one
            // ending in a hole is extended over it.
            let r = match p.in_place {
                true => f.metadata().and_then(|m| match m.len() == p.entry.size {
                    true => Ok(()),
                    false => {
                        p.wrote.store(true, Ordering::Relaxed);
                        f.set_len(p.entry.size)
                    }
                }),
                false if p.sparse.load(Ordering::Relaxed) => f.set_len(p.entry.size),
                false => Ok(()),
            };
            if let Err(err) = r {
                self.fail_file(p, err);
            }
        }
        let Some(file) = file.filter(|_| !p.failed.load(Ordering::Relaxed)) else {
            p.failed.store(true, Ordering::Relaxed);
            // No half-written file is left under its name (one never made: nothing).
            if p.made.get().is_some() {
                let _ = sys::unlink_at(&p.dir, &p.entry.name, false);
            }
            p.file.lock().unwrap_or_else(|e| e.into_inner()).take();
            return;
        };
        self.count.files.fetch_add(1, Ordering::Relaxed);
        self.count.bytes.fetch_add(p.entry.size, Ordering::Relaxed);
        self.repo.meter().item();
        let what = match (p.in_place, p.wrote.load(Ordering::Relaxed)) {
            (false, _) => "restored",
            (true, true) => "updated",
            (true, false) => {
                self.count.unchanged.fetch_add(1, Ordering::Relaxed);
                "unchanged"
            }
        };
        if self.opts.verify {
            match self.verify_file(p, &file) {
                Ok(()) => drop(self.count.verified.fetch_add(1, Ordering::Relaxed)),
                Err(err) => self.fail(&p.path, err),
            }
        }
        self.apply_metadata(&p.entry, &p.path, &file);
        self.report.action(&p.path, what);
        // After the metadata, so that it is on disk too.
        if self.sync() {
            if let Err(err) = file.sync_all() {
                self.fail(&p.path, err);
            }
        }
        // Closed now, not when the last run naming it is dropped.
        p.file.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn uid(&self, e: &Entry) -> u32 {
        let mut g = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        (!e.user.is_empty())
            .then(|| *g.0.entry(e.user.clone()).or_insert_with(|| sys::uid_of(&e.user)))
            .flatten()
            .unwrap_or(e.uid)
    }

    fn gid(&self, e: &Entry) -> u32 {
        let mut g = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        (!e.group.is_empty())
            .then(|| *g.1.entry(e.group.clone()).or_insert_with(|| sys::gid_of(&e.group)))
            .flatten()
            .unwrap_or(e.gid)
    }

    /// Metadata of a regular file or directory, through its own descriptor: ownership
    /// (as root, by name first like tar), xattrs, mode, then times. Owner before mode,
    /// because chown clears setuid/setgid; xattrs before mode, because a read-only mode
    /// would refuse them to a non-root user.
    fn apply_metadata(&self, e: &Entry, path: &Path, f: &File) {
        if self.root {
            if let Err(err) = sys::fchown(f, self.uid(e), self.gid(e)) {
                self.report.warn(path, &format!("setting owner: {err}"));
            }
        }
        for (n, v) in &e.xattrs {
            if let Err(err) = sys::fset_xattr(f, n, v) {
                self.report.warn(path, &format!("setting xattr {}: {err}", String::from_utf8_lossy(n)));
            }
        }
        if let Err(err) = f.set_permissions(fs::Permissions::from_mode(e.mode)) {
            self.report.warn(path, &format!("setting mode: {err}"));
        }
        if let Err(err) = sys::futimens(f, e.atime, e.mtime) {
            self.report.warn(path, &format!("setting times: {err}"));
        }
    }

    /// [`Ctx::apply_metadata`] for a symlink, fifo or device `e` named in directory `dir`,
    /// through `node`, a checked handle on it ([`Ctx::created_node`]). A symlink has no
    /// mode, and its xattrs and times are set by name without following it: only the
    /// owner, which matters, goes through the handle.
    fn node_metadata(&self, e: &Entry, dir: &File, node: &File, path: &Path) {
        let link = matches!(e.kind, Kind::Symlink(_));
        let name = &e.name[..];
        if self.root {
            if let Err(err) = sys::chown_handle(node, self.uid(e), self.gid(e)) {
                self.report.warn(path, &format!("setting owner: {err}"));
            }
        }
        for (n, v) in &e.xattrs {
            let r = if link { sys::set_xattr_at(dir, name, n, v) } else { sys::set_xattr_handle(node, n, v) };
            if let Err(err) = r {
                self.report.warn(path, &format!("setting xattr {}: {err}", String::from_utf8_lossy(n)));
            }
        }
        if !link {
            if let Err(err) = sys::chmod_handle(node, e.mode) {
                self.report.warn(path, &format!("setting mode: {err}"));
            }
        }
        let r = if link {
            sys::set_times_at(dir, name, e.atime, e.mtime)
        } else {
            sys::set_times_handle(node, e.atime, e.mtime)
        };
        if let Err(err) = r {
            self.report.warn(path, &format!("setting times: {err}"));
        }
    }

    /// Second pass: set each restored directory's metadata after its contents exist (a
    /// directory's [`Step::Leave`] comes after everything under it), through its
    /// descriptor, opened from its parent's; with `sync`, fsync it then.
    fn dir_metadata(&self, dir: &BlobId, snap: &Path) {
        /// A directory of the target, open; its entry when the restore matched it (none
        /// for the target itself, and for directories only on the way to a match: they
        /// may be the user's own, and keep their metadata); where it is in the snapshot.
        struct Level {
            dir: File,
            rel: PathBuf,
            snap: PathBuf,
            entry: Option<Entry>,
            /// Its tree in the snapshot (for `--delete`).
            id: BlobId,
        }
        let Some(Ok(target)) = self.target.as_ref().map(|t| t.try_clone()) else { return };
        let top = Level { dir: target, rel: PathBuf::new(), snap: snap.to_path_buf(), entry: None, id: *dir };
        let mut walk = Walk::new(self.repo, dir, top);
        while let Some(step) = walk.next() {
            match step {
                Step::Entry(e) => {
                    let Kind::Dir(sub) = &e.kind else { continue };
                    let Some(level) = walk.top() else { continue };
                    // Not restored (left out, or it failed): nothing to set. (A directory
                    // left out may still be there, the user's own: it is not touched.)
                    let snap = level.snap.join(sys::os(&e.name));
                    if self.opts.exclude.matches(&snap) {
                        continue;
                    }
                    let Ok(d) = sys::open_dir_at(&level.dir, &e.name) else { continue };
                    let rel = level.rel.join(sys::os(&e.name));
                    let m = self.included(&snap);
                    let sub = *sub;
                    walk.enter(&sub, Level { dir: d, rel, snap, entry: m.then_some(e), id: sub });
                }
                Step::Leave(Level { dir, rel, snap, entry, id }) => {
                    // Before the directory's own times are set: removing changes them.
                    if self.opts.delete {
                        self.delete_extras(&dir, &id, &rel, &snap);
                    }
                    let Some(e) = entry.filter(|_| !self.opts.dry_run) else { continue };
                    let path = self.shown(&rel);
                    self.apply_metadata(&e, &path, &dir);
                    if self.sync() {
                        if let Err(err) = dir.sync_all() {
                            self.fail(&path, err);
                        }
                    }
                }
                // Damage was reported in the first pass.
                Step::Failed(..) | Step::Skipped(..) => {}
            }
        }
    }

    /// `--delete`: remove from directory `dir` of the target (at `rel`, and `snap` in the
    /// snapshot) what its snapshot directory `id` does not hold, among the paths the
    /// filters select. The names are read from the target in sorted batches and merged
    /// with the snapshot's directory (read in name order), so a directory of any size
    /// costs one batch.
    fn delete_extras(&self, dir: &File, id: &BlobId, rel: &Path, snap: &Path) {
        let mut after: Option<Vec<u8>> = None;
        loop {
            // The first DELETE_BATCH names after the last batch, by a bounded max-heap.
            let mut batch = std::collections::BinaryHeap::new();
            let listed = sys::dir_names(dir).and_then(|names| {
                for n in names {
                    let n = n?;
                    if after.as_ref().is_some_and(|a| n <= *a) {
                        continue;
                    }
                    batch.push(n);
                    if batch.len() > DELETE_BATCH {
                        batch.pop();
                    }
                }
                Ok(())
            });
            if let Err(err) = listed {
                return self.fail(&self.shown(rel), err);
            }
            let full = batch.len() == DELETE_BATCH;
            let names = batch.into_sorted_vec();
            let mut it = match tree::DirIter::new(self.repo, id) {
                Ok(it) => it,
                Err(err) => return self.fail(&self.shown(rel), err),
            };
            let mut cur = None;
            for n in &names {
                // The snapshot's next entry at or after `n`.
                while cur.as_ref().is_none_or(|e: &Entry| e.name < *n) {
                    match it.next_entry() {
                        Ok(Some(e)) => cur = Some(e),
                        Ok(None) => break,
                        // Not sure what the snapshot holds: nothing more is removed.
                        Err(err) => return self.fail(&self.shown(rel), err),
                    }
                    if cur.as_ref().is_some_and(|e| e.name >= *n) {
                        break;
                    }
                }
                if cur.as_ref().is_some_and(|e| e.name == *n) {
                    continue;
                }
                let snap_path = snap.join(sys::os(n));
                if self.opts.exclude.matches(&snap_path) || !self.included(&snap_path) {
                    continue;
                }
                let path = self.shown(&rel.join(sys::os(n)));
                match remove_tree(dir, n, self.opts.dry_run, 0) {
                    Ok(count) => {
                        self.count.deleted.fetch_add(count, Ordering::Relaxed);
                        self.report.action(&path, "deleted");
                    }
                    Err(err) => self.fail(&path, err),
                }
            }
            if !full {
                return;
            }
            after = names.last().cloned();
        }
    }
}

fn is_zero(b: &[u8]) -> bool {
    let blocks = b.chunks_exact(16);
    blocks.remainder().iter().all(|x| *x == 0)
        && blocks.into_iter().all(|c| u128::from_ne_bytes(c.try_into().expect("16 bytes")) == 0)
}

/// Directory `name` in `dir`, made (with `mode`) if missing, open: a non-directory in
/// its way (whatever it is, a symlink included) is replaced, never followed. Restored
/// directories are made 0700 and get their mode in the second pass, so nobody else
/// enters them while they fill.
fn make_dir_at(dir: &File, name: &[u8], mode: u32) -> std::io::Result<File> {
    match sys::mode_at(dir, name)? {
        Some(m) if m & libc::S_IFMT == libc::S_IFDIR => {}
        Some(_) => {
            sys::unlink_at(dir, name, false)?;
            sys::mkdir_at(dir, name, mode)?;
        }
        None => sys::mkdir_at(dir, name, mode)?,
    }
    // Swapped for a symlink since: O_NOFOLLOW refuses it (ELOOP).
    sys::open_dir_at(dir, name)
}

/// Remove `name` from `dir` and, if it is a directory, everything in it, through
/// directory descriptors (no symlink is followed); `dry` only counts. Returns how many
/// entries were (or would be) removed. Each level holds one descriptor and at most
/// [`REMOVE_BATCH`] names.
fn remove_tree(dir: &File, name: &[u8], dry: bool, depth: usize) -> std::io::Result<u64> {
    let Some(mode) = sys::mode_at(dir, name)? else { return Ok(0) };
    if mode & libc::S_IFMT != libc::S_IFDIR {
        if !dry {
            sys::unlink_at(dir, name, false)?;
        }
        return Ok(1);
    }
    if depth >= tree::MAX_DIR_NESTING {
        return Err(std::io::Error::other("directories nested too deep to remove"));
    }
    let sub = sys::open_dir_at(dir, name)?;
    let mut count = 1;
    if dry {
        for n in sys::dir_names(&sub)? {
            count += remove_tree(&sub, &n?, true, depth + 1)?;
        }
        return Ok(count);
    }
    loop {
        let names = sys::dir_names(&sub)?.take(REMOVE_BATCH).collect::<std::io::Result<Vec<_>>>()?;
        if names.is_empty() {
            break;
        }
        for n in &names {
            count += remove_tree(&sub, n, false, depth + 1)?;
        }
    }
    sys::unlink_at(dir, name, true)?;
    Ok(count)
}

/// Remove whatever is at `name` in `dir` (a file, link, or an empty directory).
fn remove_at(dir: &File, name: &[u8]) -> std::io::Result<()> {
    match sys::mode_at(dir, name)? {
        Some(m) => sys::unlink_at(dir, name, m & libc::S_IFMT == libc::S_IFDIR),
        None => Ok(()),
    }
}

/// Find the entry at `path` inside a snapshot whose root tree is `root`. The root itself is
/// returned as a directory entry named "/".
pub fn resolve(repo: &Repository, root: &BlobId, path: &Path) -> Result<Entry> {
    use std::os::unix::ffi::OsStrExt;
    let mut cur = Entry {
        name: b"/".to_vec(),
        kind: Kind::Dir(*root),
        mode: 0o755,
        uid: 0,
        gid: 0,
        user: vec![],
        group: vec![],
        size: 0,
        mtime: Default::default(),
        ctime: Default::default(),
        atime: Default::default(),
        dev: 0,
        ino: 0,
        nlink: 1,
        xattrs: vec![],
    };
    for comp in path.components() {
        let name = match comp {
            std::path::Component::Normal(n) => n.as_bytes(),
            std::path::Component::RootDir | std::path::Component::CurDir => continue,
            _ => {
                return Err(Error::InvalidInput(format!("{}: '..' is not allowed in a snapshot path", path.display())))
            }
        };
        let Kind::Dir(id) = &cur.kind else {
            return Err(Error::NotFound { what: "path", id: path.display().to_string() });
        };
        cur = crate::tree::lookup(repo, id, name)?
            .ok_or_else(|| Error::NotFound { what: "path", id: path.display().to_string() })?;
    }
    Ok(cur)
}
