//! `restore`: write a snapshot's files back with their metadata.
//!
//! The walker (this thread) creates directories, symlinks, special files and hard-linked
//! files, and hands regular files to two workers that stream them chunk by chunk,
//! verifying each chunk's id. Directory times and modes are set in a second walk once
//! every file is written, so no list of directories is kept in memory.
//!
//! Safety: names are validated when tree nodes are decoded ('/', '.', '..' and NUL are
//! refused), every path is built by joining one validated name to a directory this
//! restore created, and files are opened with O_NOFOLLOW, so nothing is written outside
//! the target even if the target already holds symlinks.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, IoContext, Result};
use crate::format::tree::{Content, Entry, Kind};
use crate::format::BlobKind;
use crate::id::BlobId;
use crate::repo::Repository;
use crate::sys;
use crate::tree::{self, Step, Walk};

/// Files waiting for a restore worker.
const FILE_QUEUE: usize = 64;
/// Restore workers.
const WORKERS: usize = 2;
/// Hard-link groups remembered (path + key, ~100 B each). Past this, later links to an
/// evicted group are restored as copies, with a warning.
const HARDLINK_MEMORY: usize = 100_000;

/// What to restore and where.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// Only restore paths matching one of these globs (and what is inside them).
    /// A pattern without '/' matches a file name anywhere.
    pub include: Vec<String>,
}

/// Receives problems with single files; the restore goes on.
pub trait Report: Sync {
    /// Something could not be restored (damage, permission, ...).
    fn error(&self, path: &Path, message: &str);
    /// Metadata could not be fully restored (e.g. ownership when not root).
    fn warn(&self, _path: &Path, _message: &str) {}
}

/// Counters of a finished restore.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct RestoreStats {
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Other entries (links, devices, fifos).
    pub others: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries that failed.
    pub errors: u64,
    /// Entries the `--include` patterns matched (themselves, not what is under them).
    pub matched: u64,
}

struct Filter {
    full: GlobSet,
    base: GlobSet,
}

impl Filter {
    fn new(patterns: &[String]) -> Result<Option<Filter>> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let (mut full, mut base) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for p in patterns {
            // As in restic and shells, `*` does not cross '/'; `**` does.
            let g = GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::InvalidInput(format!("--include {p}: {e}")))?;
            if p.contains('/') {
                full.add(g);
            } else {
                base.add(g);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| Error::InvalidInput(format!("--include: {e}")));
        Ok(Some(Filter { full: build(full)?, base: build(base)? }))
    }

    fn matches(&self, snap_path: &Path) -> bool {
        self.full.is_match(snap_path) || snap_path.file_name().is_some_and(|n| self.base.is_match(n))
    }
}

/// Name -> id on this system, if the name exists here.
type NameMap = HashMap<Vec<u8>, Option<u32>>;

struct Ctx<'a> {
    repo: &'a Repository,
    report: &'a dyn Report,
    cancel: &'a AtomicBool,
    filter: Option<Filter>,
    root: bool,
    errors: AtomicU64,
    bytes: AtomicU64,
    files: AtomicU64,
    /// User and group names already looked up on this system (one entry per name).
    ids: Mutex<(NameMap, NameMap)>,
    target: PathBuf,
    /// Set once the hard-link memory has overflowed (warned about once).
    evicted: AtomicBool,
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
    let ctx = Ctx {
        repo,
        report,
        cancel,
        filter: Filter::new(&opts.include)?,
        root: sys::euid() == 0,
        errors: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        files: AtomicU64::new(0),
        ids: Mutex::new(Default::default()),
        target: opts.target.clone(),
        evicted: AtomicBool::new(false),
    };
    fs::create_dir_all(&opts.target).at(&opts.target)?;
    let mut stats = RestoreStats::default();
    let (tx, rx) = sync_channel::<(PathBuf, Entry)>(FILE_QUEUE);
    // Owned by the workers: if they all stop, the walker's send fails instead of blocking.
    let rx = Arc::new(Mutex::new(rx));
    let walked = std::thread::scope(|s| {
        for _ in 0..WORKERS {
            let (ctx, rx) = (&ctx, Arc::clone(&rx));
            s.spawn(move || loop {
                let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((path, entry)) = job else { return };
                if ctx.cancel.load(Ordering::Relaxed) {
                    continue;
                }
                ctx.file(&path, &entry);
            });
        }
        drop(rx);
        let mut links = lru::LruCache::new(std::num::NonZeroUsize::new(HARDLINK_MEMORY).expect("non-zero"));
        let r = match &root.kind {
            Kind::Dir(id) => {
                let matched = ctx.filter.as_ref().is_none_or(|f| f.matches(snap_path));
                stats.matched += (matched && ctx.filter.is_some()) as u64;
                ctx.walk(id, &opts.target, snap_path, matched, &tx, &mut links, &mut stats)
            }
            _ => {
                // Restoring a single file or link: it goes into the target under its name.
                let path = opts.target.join(sys::os(&root.name));
                ctx.entry(root, &path, &tx, &mut links, &mut stats);
                Ok(())
            }
        };
        drop(tx);
        r
    });
    walked?;
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    // The target directory itself keeps its own metadata: it is the user's, not the
    // snapshot's (and the snapshot root has none).
    if let Kind::Dir(id) = &root.kind {
        ctx.dir_metadata(id, &opts.target);
    }
    stats.files = ctx.files.load(Ordering::Relaxed);
    stats.bytes = ctx.bytes.load(Ordering::Relaxed);
    stats.errors = ctx.errors.load(Ordering::Relaxed);
    Ok(stats)
}

/// (dev, ino) of a hard-linked file in the snapshot -> where its first link was restored
/// (`None` if that failed).
type Links = lru::LruCache<(u64, u64), Option<PathBuf>>;

impl Ctx<'_> {
    /// Report that `path` failed. The report names the path, so an error that starts
    /// with it (an I/O error on that very path) is given without it.
    fn fail(&self, path: &Path, msg: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let msg = msg.to_string();
        let prefix = format!("{}: ", path.display());
        self.report.error(path, msg.strip_prefix(&prefix).unwrap_or(&msg));
    }

    /// Restore the tree of directory `dir` into `out` (`snap` is its path in the
    /// snapshot; `matched`: whether the filter already matched it), through the one
    /// snapshot walker ([`Walk`]: iterative, nesting limited, damage reported and
    /// skipped).
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        dir: &BlobId,
        out: &Path,
        snap: &Path,
        matched: bool,
        tx: &std::sync::mpsc::SyncSender<(PathBuf, Entry)>,
        links: &mut Links,
        stats: &mut RestoreStats,
    ) -> Result<()> {
        /// A directory being restored: where it goes, where it is in the snapshot, and
        /// whether the filter matched it (then everything under it is restored).
        struct Level {
            out: PathBuf,
            snap: PathBuf,
            matched: bool,
        }
        let mut walk = Walk::new(self.repo, dir, Level { out: out.to_path_buf(), snap: snap.to_path_buf(), matched });
        while let Some(step) = walk.next() {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let e = match step {
                Step::Entry(e) => e,
                Step::Leave(_) => continue,
                Step::Failed(level, err) => {
                    self.fail(&level.out, err);
                    continue;
                }
                Step::Skipped(err, _) => {
                    self.fail(out, err);
                    continue;
                }
            };
            let Some(level) = walk.top() else { continue };
            let path = level.out.join(sys::os(&e.name));
            let snap_path = level.snap.join(sys::os(&e.name));
            let hit = self.filter.as_ref().is_some_and(|f| f.matches(&snap_path));
            stats.matched += hit as u64;
            let m = level.matched || self.filter.is_none() || hit;
            // With a filter, directories on the way to a match are created on demand.
            if m && self.filter.is_some() {
                if let Err(err) = self.make_parents(&level.out) {
                    self.fail(&level.out, err);
                    continue;
                }
            }
            if let Kind::Dir(sub) = &e.kind {
                if m {
                    if let Err(err) = make_dir(&path) {
                        self.fail(&path, err);
                        continue;
                    }
                    stats.dirs += 1;
                }
                walk.enter(sub, Level { out: path, snap: snap_path, matched: m });
            } else if m {
                if matches!(e.kind, Kind::File(_)) && e.nlink <= 1 {
                    tx.send((path, e)).map_err(|_| Error::InvalidInput("restore workers stopped".into()))?;
                } else {
                    self.entry(&e, &path, tx, links, stats);
                }
            }
        }
        Ok(())
    }

    /// Create `dir` and the directories between the target and it, one component at a
    /// time with [`make_dir`], so a symlink already in the target is replaced, never
    /// followed (which `create_dir_all` would do).
    fn make_parents(&self, dir: &Path) -> std::io::Result<()> {
        let rel = dir.strip_prefix(&self.target).map_err(|_| std::io::Error::other("path outside the target"))?;
        let mut p = self.target.clone();
        for c in rel.components() {
            p.push(c);
            make_dir(&p)?;
        }
        Ok(())
    }

    /// Restore one non-directory entry on this thread.
    fn entry(
        &self,
        e: &Entry,
        path: &Path,
        tx: &std::sync::mpsc::SyncSender<(PathBuf, Entry)>,
        links: &mut Links,
        stats: &mut RestoreStats,
    ) {
        let r = match &e.kind {
            Kind::File(_) if e.nlink > 1 => {
                let key = (e.dev, e.ino);
                match links.get(&key) {
                    Some(Some(first)) => {
                        stats.others += 1;
                        let _ = remove_existing(path);
                        fs::hard_link(first, path)
                    }
                    Some(None) => {
                        self.fail(path, "not restored: the first link to this file could not be restored");
                        return;
                    }
                    None => {
                        let ok = self.file(path, e);
                        if let Some((old, _)) = links.push(key, ok.then(|| path.to_path_buf())) {
                            if old != key && !self.evicted.swap(true, Ordering::Relaxed) {
                                self.report.warn(path, &format!("more than {HARDLINK_MEMORY} hard-linked files: further links to the oldest are restored as copies"));
                            }
                        }
                        return;
                    }
                }
            }
            Kind::File(_) => {
                let _ = tx.send((path.to_path_buf(), e.clone()));
                return;
            }
            Kind::Dir(_) => return,
            Kind::Symlink(target) => {
                let _ = remove_existing(path);
                std::os::unix::fs::symlink(sys::os(target), path)
            }
            Kind::Fifo => {
                let _ = remove_existing(path);
                sys::mknod(path, libc::S_IFIFO | 0o600, 0)
            }
            Kind::CharDev(d) | Kind::BlockDev(d) => {
                let t = if matches!(e.kind, Kind::CharDev(_)) { libc::S_IFCHR } else { libc::S_IFBLK };
                let _ = remove_existing(path);
                sys::mknod(path, t | 0o600, *d)
            }
            Kind::Socket => return, // a socket is meaningless without its server
        };
        match r {
            Ok(()) => {
                if !matches!(e.kind, Kind::File(_)) {
                    stats.others += 1;
                }
                self.metadata(e, path)
            }
            Err(err) => self.fail(path, err),
        }
    }

    /// Write one regular file and its metadata; false if it failed (and was removed:
    /// no half-written file is left under the final name).
    fn file(&self, path: &Path, e: &Entry) -> bool {
        match self.write_file(path, e) {
            Ok((n, f)) => {
                self.files.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(n, Ordering::Relaxed);
                self.apply_metadata(e, path, Some(&f));
                true
            }
            Err(err) => {
                let _ = fs::remove_file(path);
                if !matches!(err, Error::Interrupted) {
                    self.fail(path, err);
                }
                false
            }
        }
    }

    fn write_file(&self, path: &Path, e: &Entry) -> Result<(u64, File)> {
        // Replace whatever is there, never write into it: an existing file may be a hard
        // link to something else (even outside the target), a fifo or a device. O_EXCL
        // first: in an empty target nothing is there, and that saves a lookup per file.
        let create =
            || OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path);
        let mut f = match create() {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                remove_existing(path).at(path)?;
                create().at(path)?
            }
            Err(e) => return Err(e).at(path),
        };
        let Kind::File(content) = &e.kind else {
            return Ok((0, f));
        };
        let written = self.write_content(&mut f, path, content, e.size)?;
        Ok((written, f))
    }

    /// Write a file's chunks (verified, all-zero ones as holes); they must add up to
    /// `size` ([`tree::for_each_chunk`]).
    fn write_content(&self, f: &mut File, path: &Path, content: &Content, size: u64) -> Result<u64> {
        let mut written = 0u64;
        let mut sparse = false;
        tree::for_each_chunk(self.repo, content, size, &mut |c| {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let data = self.repo.read_blob(&c.id, BlobKind::Data)?;
            if data.len() != c.size as usize {
                return Err(Error::corrupt(
                    "data blob",
                    c.id,
                    format!("is {} bytes, the file lists {}", data.len(), c.size),
                ));
            }
            if is_zero(&data) {
                // Leave a hole: VM images and sparse files stay sparse.
                f.seek(SeekFrom::Current(data.len() as i64)).at(path)?;
                sparse = true;
            } else {
                f.write_all(&data).at(path)?;
                sparse = false;
            }
            written += data.len() as u64;
            Ok(())
        })?;
        if sparse {
            f.set_len(written).at(path)?;
        }
        Ok(written)
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

    /// Ownership (as root, by name first like tar), xattrs, mode, then times. Owner
    /// before mode, because chown clears setuid/setgid; xattrs before mode, because a
    /// read-only mode would refuse them to a non-root user.
    fn metadata(&self, e: &Entry, path: &Path) {
        self.apply_metadata(e, path, None)
    }

    /// [`Ctx::metadata`] through an open regular file when `file` is given: the same
    /// steps without a path lookup each.
    fn apply_metadata(&self, e: &Entry, path: &Path, file: Option<&File>) {
        let link = matches!(e.kind, Kind::Symlink(_));
        if self.root {
            let (uid, gid) = (self.uid(e), self.gid(e));
            let r = match file {
                Some(f) => sys::fchown(f, uid, gid),
                None => std::os::unix::fs::lchown(path, Some(uid), Some(gid)),
            };
            if let Err(err) = r {
                self.report.warn(path, &format!("setting owner: {err}"));
            }
        }
        for (n, v) in &e.xattrs {
            let r = match file {
                Some(f) => sys::fset_xattr(f, n, v),
                None => sys::set_xattr(path, n, v),
            };
            if let Err(err) = r {
                self.report.warn(path, &format!("setting xattr {}: {err}", String::from_utf8_lossy(n)));
            }
        }
        if !link {
            let perms = fs::Permissions::from_mode(e.mode);
            let r = match file {
                Some(f) => f.set_permissions(perms),
                None => fs::set_permissions(path, perms),
            };
            if let Err(err) = r {
                self.report.warn(path, &format!("setting mode: {err}"));
            }
        }
        let r = match file {
            Some(f) => sys::futimens(f, e.atime, e.mtime),
            None => sys::set_times(path, e.atime, e.mtime),
        };
        if let Err(err) = r {
            self.report.warn(path, &format!("setting times: {err}"));
        }
    }

    /// Second pass: set each restored directory's metadata after its contents exist (a
    /// directory's [`Step::Leave`] comes after everything under it).
    fn dir_metadata(&self, dir: &BlobId, out: &Path) {
        /// A restored directory and its entry (none for the target itself).
        struct Level {
            out: PathBuf,
            entry: Option<Entry>,
        }
        let mut walk = Walk::new(self.repo, dir, Level { out: out.to_path_buf(), entry: None });
        while let Some(step) = walk.next() {
            match step {
                Step::Entry(e) => {
                    let Kind::Dir(sub) = &e.kind else { continue };
                    let Some(level) = walk.top() else { continue };
                    let path = level.out.join(sys::os(&e.name));
                    if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                        let sub = *sub;
                        walk.enter(&sub, Level { out: path, entry: Some(e) });
                    }
                }
                Step::Leave(Level { out, entry: Some(e) }) => self.metadata(&e, &out),
                // Damage was reported in the first pass.
                Step::Leave(_) | Step::Failed(..) | Step::Skipped(..) => {}
            }
        }
    }
}

fn is_zero(b: &[u8]) -> bool {
    let blocks = b.chunks_exact(16);
    blocks.remainder().iter().all(|x| *x == 0)
        && blocks.into_iter().all(|c| u128::from_ne_bytes(c.try_into().expect("16 bytes")) == 0)
}

/// Create a directory, replacing a non-directory (never following a symlink) in its way.
fn make_dir(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            fs::remove_file(path)?;
            fs::create_dir(path)
        }
        Err(_) => fs::create_dir(path),
    }
}

/// Remove whatever is at `path` (a file, link, or an empty directory).
fn remove_existing(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
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
