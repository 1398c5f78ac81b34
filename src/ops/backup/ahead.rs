//! Reading ahead of the backup walker (docs/design.md, "Backup: reading ahead").
//!
//! The walker stats, opens and reads each entry in turn: on a cold page cache every file
//! waits for the disk with one request in flight. Here a scout thread walks the same
//! source trees in the same order as the walker (names sorted, depth first: the order of
//! [`Path`]'s `Ord`), ahead of it, beside the parent snapshot's trees, and queues each
//! entry for a pool of [`LOOKERS`] threads. A looker `lstat`s the entry and, for a small
//! regular file that the parent does not have unchanged (or with `--force`), opens it,
//! reads it whole and `fstat`s it again. The walker takes each result when it gets to
//! that entry; one that is not queued (the scout is behind, or the entry appeared after
//! the scout listed its directory) it makes itself, as without read-ahead. So trees and
//! change detection are the walker's alone, and a result can only save system calls.
//!
//! Each directory is listed once, by a looker the scout asked (or by the scout), into a
//! [`Listing`] the scout walks and then hands to the walker.
//!
//! Memory (constant): at most [`SLOTS`] queued entries, ≈ 300 B each (path, metadata,
//! state), and as many again that the walker has dropped while lookers still hold them
//! in their batches (≈ 600 KiB in all); file contents and listings made ahead, at most
//! `Budget::backup_ahead_bytes` (8 MiB at the default `--memory`) in all, and the xattrs
//! of the files read (charged once read: a thread may pass its share by one file's); per
//! directory level the scout is in, [`LIST_AHEAD`] paths of listings asked for, one node
//! of the parent's tree, and for a directory too large for a listing its names sorted in
//! at most [`SCOUT_LISTING`] (spilling beyond).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::extsort::{NameSorter, SortedNames};
use crate::format::tree::{Entry, Kind, Time};
use crate::id::BlobId;
use crate::repo::Repository;
use crate::sys::Xattrs;
use crate::tree::{lookup, DirCursor};

use super::select::{Selection, Verdict};

/// Threads that stat and read ahead: the requests in flight. `xargs -P 8 cat` read a
/// cold tree of tiny files 2.6x faster than one `cat`, and 32 only 9% faster than 8; a
/// cold backup of 61,440 tiny files took 2.74 s with 4 lookers, 2.17 s with 8, 2.21-2.32
/// s with 16 or 32 (docs/design.md, "Backup: reading ahead").
pub(super) const LOOKERS: usize = 8;
/// Entries queued ahead of the walker, at most.
const SLOTS: usize = 1024;
/// Entries handed to a looker at once: one wake-up of a looker per this many.
const BATCH: usize = 16;
/// Subdirectories of a directory that lookers list ahead when the scout has its listing,
/// so that their listings do not wait for the disk one after another.
const LIST_AHEAD: usize = 64;
/// The largest file read ahead; larger ones the walker reads through the chunker.
const LARGEST: u64 = 128 << 10;
/// RAM for one directory's names (and types) listed ahead; a larger directory the scout
/// sorts through temp files, and the walker lists it itself.
const SCOUT_LISTING: usize = 256 << 10;
/// The threads that count what they hold against the read-ahead budget, each its own
/// share: the lookers, the walker and the scout.
const SHARES: usize = LOOKERS + 2;

/// Where a looker is in an entry: tests change the file there ([`hook_under`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Listed by the scout, not yet stat'ed.
    Listed,
    /// Stat'ed, to be read.
    Stated,
    /// Done by the looker, not yet taken by the walker.
    Looked,
    /// A directory's listing, made ahead, taken by the walker.
    ListingTaken,
}

#[cfg(test)]
type Hook = Arc<dyn Fn(&Path, Stage) + Send + Sync>;

/// The tests' hooks, each for the paths under one directory.
#[cfg(test)]
static HOOKS: Mutex<Vec<(PathBuf, Hook)>> = Mutex::new(Vec::new());

/// Until the guard is dropped, run `f` whenever read-ahead gets to an entry under `root`.
#[cfg(test)]
pub(crate) fn hook_under(root: &Path, f: impl Fn(&Path, Stage) + Send + Sync + 'static) -> impl Drop {
    struct Unhook(PathBuf);
    impl Drop for Unhook {
        fn drop(&mut self) {
            lock(&HOOKS).retain(|(r, _)| r != &self.0);
        }
    }
    lock(&HOOKS).push((root.to_path_buf(), Arc::new(f)));
    Unhook(root.to_path_buf())
}

#[cfg(test)]
fn at(path: &Path, stage: Stage) {
    let hooks: Vec<Hook> =
        lock(&HOOKS).iter().filter(|(r, _)| path.starts_with(r)).map(|(_, h)| Arc::clone(h)).collect();
    for h in hooks {
        h(path, stage);
    }
}

#[cfg(not(test))]
fn at(_: &Path, _: Stage) {}

/// Lock, whatever a panicking holder left: the queue stays consistent between steps.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Open the file at `path`, which `lstat` gave as `meta`, for reading: never following a
/// link or blocking on a fifo swapped in since, and only if it is still that very file
/// (same device and inode, a regular file). `Err` is the warning to give.
pub(super) fn open_stated(path: &Path, meta: &Metadata) -> std::result::Result<File, String> {
    let open = |flags| File::options().read(true).custom_flags(flags | libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path);
    let file = open(libc::O_NOATIME).or_else(|_| open(0)).map_err(|e| format!("cannot read: {e}"))?;
    match file.metadata() {
        Ok(m) if m.is_file() && m.dev() == meta.dev() && m.ino() == meta.ino() => Ok(file),
        _ => Err("replaced by another file while being backed up; skipped".into()),
    }
}

/// Whether `file`, of which `size` bytes were read, is no longer what `meta` said.
pub(super) fn changed_since(file: &File, meta: &Metadata, size: u64) -> bool {
    file.metadata().is_ok_and(|a| a.len() != size || a.mtime() != meta.mtime() || a.mtime_nsec() != meta.mtime_nsec())
}

/// What a looker found for one entry.
pub(super) struct Scouted {
    /// Its `lstat`.
    pub meta: io::Result<Metadata>,
    /// Its content, for a small file that had to be read.
    pub early: Option<Early>,
}

/// A small file read ahead.
pub(super) enum Early {
    /// Read whole; `changed`: its size or mtime had changed once read; `xattrs` read from
    /// the open file (counted in the charge too).
    Read { data: Vec<u8>, changed: bool, xattrs: io::Result<Xattrs>, _charge: Charge },
    /// Could not be read: the warning to give.
    Failed(String),
}

/// Bytes of [`Early::Read`] counted against the read-ahead budget until dropped.
pub(super) struct Charge {
    used: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A directory's names, sorted bytewise, each once, with the entry type its listing gave
/// ([`DIR`], [`OTHER`], [`UNKNOWN`]). Made once per directory, by a looker or the scout,
/// and used by both the scout and the walker: without it each directory was listed three
/// times (to warm the page cache, by the scout, by the walker). Costs its names plus 12
/// B each, counted against the share of the thread that listed it until both drop it.
pub(super) struct Listing {
    bytes: Vec<u8>,
    /// Start and end of each name in `bytes`, and its type.
    names: Vec<(u32, u32, u8)>,
    _charge: Charge,
}

impl Listing {
    /// List `dir` in RAM, if its names fit in [`SCOUT_LISTING`] and the calling thread's
    /// share (`used` of `share`) has room for them. `None` otherwise, or if `dir` could not
    /// be listed: the walker lists it itself, and says why.
    fn make(dir: &Path, used: &Arc<AtomicUsize>, share: usize) -> Option<Listing> {
        let mut bytes = Vec::new();
        let mut names = Vec::new();
        for e in fs::read_dir(dir).ok()? {
            let e = e.ok()?;
            let start = bytes.len() as u32;
            bytes.extend_from_slice(e.file_name().as_bytes());
            names.push((start, bytes.len() as u32, kind_of(&e)));
            if bytes.len() + 12 * names.len() > SCOUT_LISTING {
                return None;
            }
        }
        // Unstable is fine: equal names are dropped but one, whatever their types.
        names.sort_unstable_by(|a, b| bytes[a.0 as usize..a.1 as usize].cmp(&bytes[b.0 as usize..b.1 as usize]));
        names.dedup_by(|a, b| bytes[a.0 as usize..a.1 as usize] == bytes[b.0 as usize..b.1 as usize]);
        let cost = bytes.capacity() + 12 * names.capacity();
        if used.fetch_add(cost, Ordering::Relaxed) + cost > share {
            used.fetch_sub(cost, Ordering::Relaxed);
            return None;
        }
        Some(Listing { bytes, names, _charge: Charge { used: Arc::clone(used), bytes: cost } })
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    fn name(&self, i: usize) -> &[u8] {
        let (start, end, _) = self.names[i];
        &self.bytes[start as usize..end as usize]
    }

    fn kind(&self, i: usize) -> u8 {
        self.names[i].2
    }
}

/// The type a listing gives an entry.
fn kind_of(e: &fs::DirEntry) -> u8 {
    match e.file_type() {
        Ok(t) if t.is_dir() => DIR,
        Ok(_) => OTHER,
        Err(_) => UNKNOWN,
    }
}

/// A directory's names for the walker, in order: listed ahead, or sorted by the walker.
pub(super) enum Names {
    Listed(Arc<Listing>, usize),
    Sorted(SortedNames),
}

impl Names {
    /// The next name, or `None` at the end.
    pub fn next_name(&mut self) -> io::Result<Option<Vec<u8>>> {
        match self {
            Names::Listed(l, i) => {
                let name = (*i < l.len()).then(|| l.name(*i).to_vec());
                *i += 1;
                Ok(name)
            }
            Names::Sorted(s) => s.next_name(),
        }
    }
}

/// The parent snapshot's stamp of a file: if the file still has it, it is not read.
#[derive(Clone, Copy)]
pub(super) struct Stamp {
    size: u64,
    mtime: Time,
    ctime: Time,
    ino: u64,
}

impl Stamp {
    pub(super) fn of(e: &Entry) -> Option<Stamp> {
        matches!(e.kind, Kind::File(_)).then_some(Stamp { size: e.size, mtime: e.mtime, ctime: e.ctime, ino: e.ino })
    }

    pub(super) fn matches(&self, m: &Metadata) -> bool {
        self.size == m.len()
            && self.mtime == super::time(m.mtime(), m.mtime_nsec())
            && self.ctime == super::time(m.ctime(), m.ctime_nsec())
            && self.ino == m.ino()
    }
}

// Every slot ends `Done`: boxing it would add an allocation per entry, not save memory.
#[allow(clippy::large_enum_variant)]
enum State {
    Queued,
    Running,
    /// Running, and the walker waits for it.
    Awaited,
    Done(Scouted),
    Taken,
}

/// One entry queued ahead.
struct Slot {
    path: PathBuf,
    prev: Option<Stamp>,
    state: Mutex<State>,
    done: Condvar,
}

/// What lookers need to decide and read, shared by the walker (which runs a queued
/// entry itself rather than wait for a looker to pick it).
pub(super) struct Look<'a> {
    pub select: &'a Selection,
    pub devices: &'a [u64],
    pub force: bool,
    /// Bytes that may be read ahead at once, shared equally by the lookers and the walker.
    pub budget: usize,
}

struct Shared<'a> {
    look: Look<'a>,
    queue: Mutex<Queue>,
    /// Signalled when the queue shrinks or the walker stops, if the scout waits on it.
    room: Condvar,
    /// Signalled when the scout queues an entry or a listing or ends, if the walker waits
    /// on it (only in tests: see [`Ahead::take`]).
    pushed: Condvar,
    lists: Mutex<Lists>,
    /// Signalled when a looker has listed a directory the scout waits for, or the walker
    /// stops.
    listed: Condvar,
    stop: AtomicBool,
    /// Bytes read ahead by the walker, when it runs an entry itself (each looker counts
    /// its own).
    walker_used: Arc<AtomicUsize>,
}

impl Shared<'_> {
    /// The share of the read-ahead budget each thread may hold.
    fn share(&self) -> usize {
        self.look.budget / SHARES
    }

    /// The first asked-for directory no looker has picked yet, now picked.
    fn next_listing(&self) -> Option<PathBuf> {
        let mut l = lock(&self.lists);
        while let Some(dir) = l.todo.pop_front() {
            if let Some(a @ Asked::Pending) = l.asked.get_mut(&dir) {
                *a = Asked::Running;
                return Some(dir);
            }
        }
        None
    }

    /// List `dir`, picked by this looker, for the scout.
    fn list_for_scout(&self, dir: &Path, used: &Arc<AtomicUsize>) {
        // Answered however the listing ends (a panic too): the scout waits for it.
        let mut answer = Answer { shared: self, dir, listing: None };
        answer.listing = Listing::make(dir, used, self.share());
    }

    /// Hand a looker's listing of `dir` to the scout, unless it gave up on it.
    fn answer(&self, dir: &Path, listing: Option<Listing>) {
        let mut l = lock(&self.lists);
        if let Some(a) = l.asked.get_mut(dir) {
            *a = Asked::Listed(listing);
            if l.scout_waits {
                self.listed.notify_one();
            }
        }
    }
}

struct Queue {
    /// In walk order.
    slots: VecDeque<Arc<Slot>>,
    /// The last entry the walker asked for and did not find: the scout, behind it,
    /// skips up to there.
    missed: Option<PathBuf>,
    /// Who waits on `room` and on `pushed` (a notification is a system call: only made
    /// when someone waits).
    scout_waits: bool,
    walker_waits: bool,
    scout_done: bool,
    /// Listings the scout made or took, for the walker, in walk order.
    listings: VecDeque<(PathBuf, Arc<Listing>)>,
}

/// A listing a looker was asked for.
enum Asked {
    /// Queued for a looker, not yet picked.
    Pending,
    /// A looker is listing it.
    Running,
    /// `None`: it could not list the directory in its share.
    Listed(Option<Listing>),
}

/// The directories the scout asked lookers to list, until it takes their listings or
/// passes them (at most [`LIST_AHEAD`] per directory level it is in).
struct Lists {
    asked: HashMap<PathBuf, Asked>,
    /// The asked-for directories in the order asked: a looker takes these before its
    /// next batch of entries, so that the scout does not wait behind the entries queued
    /// before them (a [`Job::List`] for each also goes through the queue, to wake a
    /// looker that waits for work).
    todo: VecDeque<PathBuf>,
    scout_waits: bool,
}

impl Shared<'_> {
    /// Run one entry: `lstat`, and read it if small, changed and kept; `used` counts
    /// what the calling thread has read ahead and not yet handed over.
    fn run(&self, slot: &Slot, used: &Arc<AtomicUsize>) -> Scouted {
        at(&slot.path, Stage::Listed);
        let meta = fs::symlink_metadata(&slot.path);
        let early = match &meta {
            Ok(m) if self.wants(&slot.path, m, slot.prev) => {
                at(&slot.path, Stage::Stated);
                self.read_small(&slot.path, m, used)
            }
            _ => None,
        };
        at(&slot.path, Stage::Looked);
        Scouted { meta, early }
    }

    fn wants(&self, path: &Path, m: &Metadata, prev: Option<Stamp>) -> bool {
        let l = &self.look;
        // A hard-linked file may be one the walker has read already (it remembers them).
        m.is_file()
            && m.nlink() <= 1
            && m.len() <= LARGEST
            && (l.force || !prev.is_some_and(|p| p.matches(m)))
            && l.select.verdict(path, m, l.devices) == Verdict::Keep
    }

    /// Read the file whole, if the calling thread's share of the budget has room for it.
    /// Each thread has its own share: it allocates in its own malloc arena, and the
    /// walker frees there, so each arena keeps what its thread held at most. With one
    /// count for all, each looker's arena could grow to the whole budget: a warm first
    /// backup of the main corpus peaked at 106-114 MiB, 64-68 without read-ahead, 72 with
    /// `MALLOC_ARENA_MAX=1`.
    fn read_small(&self, path: &Path, meta: &Metadata, used: &Arc<AtomicUsize>) -> Option<Early> {
        let len = meta.len() as usize;
        // Only this thread adds to `used`; the walker takes away.
        if used.load(Ordering::Relaxed) + len > self.share() {
            return None;
        }
        used.fetch_add(len, Ordering::Relaxed);
        let mut charge = Charge { used: Arc::clone(used), bytes: len };
        let file = match open_stated(path, meta) {
            Ok(f) => f,
            Err(msg) => return Some(Early::Failed(msg)),
        };
        // Read until the end, or until the size `lstat` gave: the end is not read then (a
        // second `read` per file), since `changed_since` checks the size after the read.
        let mut data = vec![0; len + 1];
        let mut n = 0;
        while n < len {
            match (&file).read(&mut data[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Early::Failed(format!("read error: {e}"))),
            }
        }
        // It grew past what was charged: the walker reads it.
        if n > len {
            return None;
        }
        data.truncate(n);
        let changed = changed_since(&file, meta, n as u64);
        let xattrs = crate::sys::file_xattrs(&file);
        // Usually none; at most what a file may hold (64 KiB per value on most filesystems).
        let held: usize = xattrs.as_ref().map_or(0, |x| x.iter().map(|(n, v)| n.len() + v.len()).sum());
        used.fetch_add(held, Ordering::Relaxed);
        charge.bytes += held;
        Some(Early::Read { data, changed, xattrs, _charge: charge })
    }

    /// Run what a looker or the walker picked, unless another did.
    fn pick(&self, slot: &Slot) -> bool {
        let mut st = lock(&slot.state);
        if matches!(*st, State::Queued) {
            *st = State::Running;
            return true;
        }
        false
    }
}

/// The walker's side: results in walk order.
pub(super) struct Ahead<'a> {
    shared: Arc<Shared<'a>>,
}

impl<'a> Ahead<'a> {
    /// Start the scout over `sources` (sorted, absolute; `root` is the parent snapshot's
    /// root tree) and the lookers, in `scope`. The threads end when this is dropped.
    pub fn start<'s, 'e>(
        scope: &'s std::thread::Scope<'s, 'e>,
        repo: &'a Repository,
        sources: &'a [PathBuf],
        root: Option<BlobId>,
        look: Look<'a>,
        skip: Option<&'a Path>,
        cancel: &'a AtomicBool,
    ) -> Ahead<'a>
    where
        'a: 's,
    {
        let shared = Arc::new(Shared {
            look,
            queue: Mutex::new(Queue {
                slots: VecDeque::new(),
                missed: None,
                scout_waits: false,
                walker_waits: false,
                scout_done: false,
                listings: VecDeque::new(),
            }),
            room: Condvar::new(),
            pushed: Condvar::new(),
            lists: Mutex::new(Lists { asked: HashMap::new(), todo: VecDeque::new(), scout_waits: false }),
            listed: Condvar::new(),
            stop: AtomicBool::new(false),
            walker_used: Arc::new(AtomicUsize::new(0)),
        });
        let (tx, rx) = sync_channel::<Job>(SLOTS / BATCH);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..LOOKERS {
            let (shared, rx) = (Arc::clone(&shared), Arc::clone(&rx));
            scope.spawn(move || looker(&shared, &rx));
        }
        let sh = Arc::clone(&shared);
        // The scout recurses once per directory level, as the walker does on its 8 MiB.
        let scout = std::thread::Builder::new().stack_size(8 << 20).spawn_scoped(scope, move || {
            // Ended however the scout ends (a panic too): a walker waiting for it goes on.
            struct Done<'s, 'a>(&'s Shared<'a>);
            impl Drop for Done<'_, '_> {
                fn drop(&mut self) {
                    let mut q = lock(&self.0.queue);
                    q.scout_done = true;
                    if q.walker_waits {
                        self.0.pushed.notify_one();
                    }
                }
            }
            let _done = Done(&sh);
            let used = Arc::new(AtomicUsize::new(0));
            let mut s = Scout { shared: &sh, jobs: tx, batch: Vec::new(), repo, skip, cancel, used };
            s.sources(sources, root);
            let _ = s.flush();
        });
        if scout.is_err() {
            shared.stop.store(true, Ordering::Relaxed);
            lock(&shared.queue).scout_done = true;
        }
        Ahead { shared }
    }

    /// What was found ahead for `path`, if it was queued; the walker asks in walk order.
    /// An entry queued but not yet picked by a looker the walker runs itself.
    ///
    /// In tests, the walker waits for the scout to get to `path` (or past it), so that
    /// every entry goes through the read-ahead and tests of what happens between the
    /// listing and the read are not left to the threads' timing.
    pub fn take(&self, path: &Path) -> Option<Scouted> {
        let slot = {
            let mut q = lock(&self.shared.queue);
            let found = loop {
                let mut found = None;
                while let Some(front) = q.slots.front() {
                    match front.path.as_path().cmp(path) {
                        std::cmp::Ordering::Less => {
                            q.slots.pop_front();
                        }
                        std::cmp::Ordering::Equal => {
                            found = q.slots.pop_front();
                            break;
                        }
                        std::cmp::Ordering::Greater => break,
                    }
                }
                if found.is_some() || !cfg!(test) || q.scout_done || !q.slots.is_empty() {
                    break found;
                }
                q.walker_waits = true;
                q = self.shared.pushed.wait(q).unwrap_or_else(|e| e.into_inner());
                q.walker_waits = false;
            };
            if found.is_none() {
                q.missed = Some(path.to_path_buf());
            }
            if q.scout_waits {
                self.shared.room.notify_one();
            }
            found
        }?;
        if self.shared.pick(&slot) {
            return Some(self.shared.run(&slot, &self.shared.walker_used));
        }
        let mut st = lock(&slot.state);
        loop {
            match std::mem::replace(&mut *st, State::Taken) {
                State::Done(s) => return Some(s),
                State::Running | State::Awaited => {
                    *st = State::Awaited;
                    st = slot.done.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                State::Queued | State::Taken => return None,
            }
        }
    }
}

impl Ahead<'_> {
    /// The listing of directory `dir`, if the scout has it; the walker asks in walk order.
    /// In tests, it waits for the scout to get to `dir`, as [`Ahead::take`] does.
    pub fn listing(&self, dir: &Path) -> Option<Arc<Listing>> {
        let mut q = lock(&self.shared.queue);
        loop {
            while let Some((front, _)) = q.listings.front() {
                match front.as_path().cmp(dir) {
                    std::cmp::Ordering::Less => drop(q.listings.pop_front()),
                    std::cmp::Ordering::Equal => {
                        at(dir, Stage::ListingTaken);
                        return q.listings.pop_front().map(|(_, l)| l);
                    }
                    std::cmp::Ordering::Greater => return None,
                }
            }
            // The walker has taken every entry up to `dir`: anything queued is past it, so
            // the scout has decided on `dir`'s listing.
            if !cfg!(test) || q.scout_done || !q.slots.is_empty() {
                return None;
            }
            q.walker_waits = true;
            q = self.shared.pushed.wait(q).unwrap_or_else(|e| e.into_inner());
            q.walker_waits = false;
        }
    }
}

impl Drop for Ahead<'_> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        {
            let _q = lock(&self.shared.queue);
            self.shared.room.notify_all();
        }
        let _l = lock(&self.shared.lists);
        self.shared.listed.notify_all();
    }
}

/// Work for a looker.
enum Job {
    /// Entries to stat (and read), in walk order.
    Look(Vec<Arc<Slot>>),
    /// A directory was asked for ([`Lists::todo`]): only a wake-up, since a looker takes
    /// what is asked before each job.
    List,
}

fn looker(shared: &Shared<'_>, rx: &Mutex<Receiver<Job>>) {
    let used = Arc::new(AtomicUsize::new(0));
    loop {
        if !shared.stop.load(Ordering::Relaxed) {
            while let Some(dir) = shared.next_listing() {
                shared.list_for_scout(&dir, &used);
            }
        }
        let Ok(job) = lock(rx).recv() else { return };
        if shared.stop.load(Ordering::Relaxed) {
            continue; // drain: the scout ends and closes the queue
        }
        match job {
            Job::List => {}
            Job::Look(slots) => {
                for slot in slots {
                    if !shared.pick(&slot) {
                        continue;
                    }
                    let mut finish = Finish { slot: &slot, found: None };
                    finish.found = Some(shared.run(&slot, &used));
                }
            }
        }
    }
}

/// Hands a looker's result to the slot when dropped; if the looker panicked there is
/// none, and the walker, told nothing was found, stats and reads the entry itself.
struct Finish<'s> {
    slot: &'s Slot,
    found: Option<Scouted>,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let mut st = lock(&self.slot.state);
        let awaited = matches!(*st, State::Awaited);
        *st = self.found.take().map_or(State::Taken, State::Done);
        drop(st);
        if awaited {
            self.slot.done.notify_one();
        }
    }
}

/// Hands a looker's listing to the scout when dropped; none if the looker panicked.
struct Answer<'s, 'a> {
    shared: &'s Shared<'a>,
    dir: &'s Path,
    listing: Option<Listing>,
}

impl Drop for Answer<'_, '_> {
    fn drop(&mut self) {
        self.shared.answer(self.dir, self.listing.take());
    }
}

/// Forgets, when dropped, the listings the scout asked for in one directory and did not
/// take (it did not descend there): a looker that lists one later drops it.
struct Unask<'s, 'a> {
    shared: &'s Shared<'a>,
    dirs: Vec<PathBuf>,
}

impl Drop for Unask<'_, '_> {
    fn drop(&mut self) {
        if self.dirs.is_empty() {
            return;
        }
        let mut l = lock(&self.shared.lists);
        for d in &self.dirs {
            l.asked.remove(d);
        }
    }
}

/// The walk ahead. Any failure here (a directory it cannot list, a damaged parent tree)
/// only ends the scouting of that part: the walker meets it and reports it.
struct Scout<'s, 'a> {
    shared: &'s Shared<'a>,
    jobs: SyncSender<Job>,
    /// Queued entries not yet handed to a looker.
    batch: Vec<Arc<Slot>>,
    repo: &'a Repository,
    /// The repository itself, never backed up.
    skip: Option<&'a Path>,
    cancel: &'a AtomicBool,
    /// What the scout's own listings hold of the budget.
    used: Arc<AtomicUsize>,
}

/// The scout was told to stop.
struct Stopped;

/// An entry type in the scout's sorted keys: the name, a NUL (no name holds one, so the
/// order of names is kept), and one of these.
const DIR: u8 = b'd';
const OTHER: u8 = b'o';
const UNKNOWN: u8 = b'u';

impl Scout<'_, '_> {
    fn sources(&mut self, sources: &[PathBuf], root: Option<BlobId>) {
        for src in sources {
            if self.skip == Some(src.as_path()) || !fs::symlink_metadata(src).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let parent = root.and_then(|r| self.parent_dir(r, src));
            if self.dir(src, parent.as_ref()).is_err() {
                return;
            }
        }
    }

    /// The parent snapshot's tree of directory `path`, from the snapshot's root.
    fn parent_dir(&self, root: BlobId, path: &Path) -> Option<BlobId> {
        let mut id = root;
        for c in path.components() {
            if let std::path::Component::Normal(name) = c {
                match lookup(self.repo, &id, name.as_bytes()) {
                    Ok(Some(Entry { kind: Kind::Dir(d), .. })) => id = d,
                    _ => return None,
                }
            }
        }
        Some(id)
    }

    fn dir(&mut self, path: &Path, parent: Option<&BlobId>) -> std::result::Result<(), Stopped> {
        if self.behind_subtree(path)? {
            return Ok(());
        }
        // What is queued goes to the lookers before this thread waits for the disk.
        self.flush()?;
        let listing = match self.asked(path)? {
            Some(l) => l,
            None => Listing::make(path, &self.used, self.shared.share()),
        };
        let mut cursor = DirCursor::new(self.repo, parent).unwrap_or_else(|_| DirCursor::empty());
        let mut unask = Unask { shared: self.shared, dirs: Vec::new() };
        if let Some(listing) = listing {
            let listing = Arc::new(listing);
            {
                let mut q = lock(&self.shared.queue);
                q.listings.push_back((path.to_path_buf(), Arc::clone(&listing)));
                if q.walker_waits {
                    self.shared.pushed.notify_one();
                }
            }
            let subdirs = (0..listing.len()).filter(|&i| listing.kind(i) == DIR);
            for i in subdirs.take(LIST_AHEAD) {
                self.list_ahead(path.join(OsStr::from_bytes(listing.name(i))), &mut unask)?;
            }
            for i in 0..listing.len() {
                self.entry(path, listing.name(i), listing.kind(i), &mut cursor)?;
            }
            return Ok(());
        }
        // Too large to hold (or it could not be listed: then neither can this).
        let Some(mut names) = self.sorted(path, &mut unask)? else { return Ok(()) };
        while let Ok(Some(mut key)) = names.next_name() {
            let (Some(kind), Some(0)) = (key.pop(), key.pop()) else { return Ok(()) };
            self.entry(path, &key, kind, &mut cursor)?;
        }
        Ok(())
    }

    /// List `path` sorted through temp files (keys: name, NUL, type), asking lookers to
    /// list its first subdirectories meanwhile.
    fn sorted(&mut self, path: &Path, unask: &mut Unask) -> std::result::Result<Option<SortedNames>, Stopped> {
        let mut sorter = NameSorter::new(SCOUT_LISTING);
        let Ok(rd) = fs::read_dir(path) else { return Ok(None) };
        for e in rd {
            let Ok(e) = e else { break };
            let kind = kind_of(&e);
            if kind == DIR && unask.dirs.len() < LIST_AHEAD {
                self.list_ahead(e.path(), unask)?;
            }
            let mut key = e.file_name().into_vec();
            key.extend_from_slice(&[0, kind]);
            if sorter.push(key).is_err() {
                return Ok(None);
            }
        }
        Ok(sorter.finish().ok())
    }

    /// Ask a looker to list subdirectory `sub`, where the scout will descend without asking
    /// the selection: under `--one-file-system` a subdirectory may be a mount point (an
    /// automount, a dead network filesystem) the walk must not list, and a marked one is
    /// not walked.
    fn list_ahead(&mut self, sub: PathBuf, unask: &mut Unask) -> std::result::Result<(), Stopped> {
        let select = self.shared.look.select;
        if !select.keeps_every_dir() || select.excluded_by_name(&sub) || self.skip == Some(sub.as_path()) {
            return Ok(());
        }
        {
            let mut l = lock(&self.shared.lists);
            l.asked.insert(sub.clone(), Asked::Pending);
            l.todo.push_back(sub.clone());
        }
        unask.dirs.push(sub);
        self.jobs.send(Job::List).map_err(|_| Stopped)
    }

    /// The listing a looker made of `dir`, waiting for it if it is being made; `None` if
    /// none was asked for.
    fn asked(&self, dir: &Path) -> std::result::Result<Option<Option<Listing>>, Stopped> {
        let mut l = lock(&self.shared.lists);
        loop {
            match l.asked.get(dir) {
                None => return Ok(None),
                Some(Asked::Listed(_)) => match l.asked.remove(dir) {
                    Some(Asked::Listed(listing)) => return Ok(Some(listing)),
                    _ => return Ok(None),
                },
                Some(Asked::Pending | Asked::Running) => {}
            }
            self.check()?;
            l.scout_waits = true;
            l = self.shared.listed.wait(l).unwrap_or_else(|e| e.into_inner());
            l.scout_waits = false;
        }
    }

    /// Queue entry `name` of directory `path` (of type `kind` as listed; `cursor` is on
    /// the parent's tree of `path`), and walk it if it is a directory to descend into.
    fn entry(
        &mut self,
        path: &Path,
        name: &[u8],
        kind: u8,
        cursor: &mut DirCursor,
    ) -> std::result::Result<(), Stopped> {
        let select = self.shared.look.select;
        let child = path.join(OsStr::from_bytes(name));
        if select.excluded_by_name(&child) {
            return Ok(());
        }
        let prev = cursor.seek(name).ok().flatten();
        let stamp = prev.and_then(Stamp::of);
        let sub = match prev.map(|e| &e.kind) {
            Some(Kind::Dir(id)) => Some(*id),
            _ => None,
        };
        self.push(&child, stamp)?;
        let descend = match kind {
            DIR if select.keeps_every_dir() => true,
            DIR | UNKNOWN => fs::symlink_metadata(&child)
                .is_ok_and(|m| m.is_dir() && select.verdict(&child, &m, self.shared.look.devices) == Verdict::Keep),
            _ => false,
        };
        if descend && self.skip != Some(child.as_path()) {
            self.dir(&child, sub.as_ref())?;
        }
        Ok(())
    }

    /// Whether the walker is past all of `dir` already.
    fn behind_subtree(&self, dir: &Path) -> std::result::Result<bool, Stopped> {
        self.check()?;
        let q = lock(&self.shared.queue);
        Ok(q.missed.as_deref().is_some_and(|m| m > dir && !m.starts_with(dir)))
    }

    fn check(&self) -> std::result::Result<(), Stopped> {
        if self.shared.stop.load(Ordering::Relaxed) || self.cancel.load(Ordering::Relaxed) {
            return Err(Stopped);
        }
        Ok(())
    }

    /// Queue `path` once there is room, unless the walker is past it.
    fn push(&mut self, path: &Path, prev: Option<Stamp>) -> std::result::Result<(), Stopped> {
        let slot = {
            let mut q = lock(&self.shared.queue);
            if q.slots.len() >= SLOTS {
                drop(q);
                self.flush()?;
                q = lock(&self.shared.queue);
            }
            while q.slots.len() >= SLOTS {
                self.check()?;
                q.scout_waits = true;
                q = self.shared.room.wait(q).unwrap_or_else(|e| e.into_inner());
                q.scout_waits = false;
            }
            self.check()?;
            if q.missed.as_deref().is_some_and(|m| path <= m) {
                return Ok(());
            }
            let slot = Arc::new(Slot {
                path: path.to_path_buf(),
                prev,
                state: Mutex::new(State::Queued),
                done: Condvar::new(),
            });
            q.slots.push_back(Arc::clone(&slot));
            if q.walker_waits {
                self.shared.pushed.notify_one();
            }
            slot
        };
        self.batch.push(slot);
        if self.batch.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Hand the queued entries to a looker.
    fn flush(&mut self) -> std::result::Result<(), Stopped> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.jobs.send(Job::Look(std::mem::take(&mut self.batch))).map_err(|_| Stopped)
    }
}
