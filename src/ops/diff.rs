//! `diff`: what changed between two snapshots, as a merge of their trees.
//!
//! Both trees are walked side by side in name order (tree nodes keep entries sorted),
//! one [`DirIter`] per side and directory level. A directory whose tree id is the same
//! on both sides is skipped whole: equal ids, equal contents, so a diff of two
//! snapshots that differ in a few files reads only the directories on the way to them.
//! A file whose chunk list is equal is unchanged in content; with `metadata`, a change
//! of mode, owner, times or extended attributes is reported too. What is only on one
//! side is reported entry by entry, subdirectories included (walked one-sided).
//!
//! Memory: per directory level being walked, two iterators (one tree node per node
//! level each, up to ~1 MiB) and one entry of lookahead per side; no set of paths or
//! ids, whatever the size of the snapshots. Nesting is limited as in every walk
//! ([`crate::tree::MAX_DIR_NESTING`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::format::tree::{Entry, Kind};
use crate::id::BlobId;
use crate::repo::Repository;
use crate::sys;
use crate::tree::{too_deep, DirIter, MAX_DIR_NESTING};

/// What happened to a path (restic's modifiers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Change {
    /// Only in the second snapshot (`+`).
    Added,
    /// Only in the first (`-`).
    Removed,
    /// A file whose content changed (`M`).
    Modified,
    /// The type changed, e.g. a file became a directory (`T`).
    TypeChanged,
    /// Only metadata changed (`U`; reported with `metadata` only).
    Metadata,
}

impl Change {
    /// restic's one-letter form.
    pub fn modifier(self) -> &'static str {
        match self {
            Change::Added => "+",
            Change::Removed => "-",
            Change::Modified => "M",
            Change::TypeChanged => "T",
            Change::Metadata => "U",
        }
    }
}

/// Counts of one kind of entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Only in the second snapshot.
    pub added: u64,
    /// Only in the first.
    pub removed: u64,
    /// In both, changed (content, type, or with `metadata` metadata).
    pub changed: u64,
}

/// What a diff found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiffStats {
    /// Regular files.
    pub files: Counts,
    /// Directories.
    pub dirs: Counts,
    /// Everything else (links, devices, fifos, sockets).
    pub others: Counts,
    /// Bytes of the files only in the second snapshot, and the second side of changed ones.
    pub bytes_added: u64,
    /// Bytes of the files only in the first snapshot, and the first side of changed ones.
    pub bytes_removed: u64,
    /// Directories skipped because their trees were equal on both sides.
    pub dirs_skipped: u64,
}

/// One directory level of the merge: each side's iterator (`None`: the directory is not
/// on that side) and its next entry.
struct Level<'r> {
    path: PathBuf,
    old: Side<'r>,
    new: Side<'r>,
}

struct Side<'r> {
    it: Option<DirIter<&'r Repository>>,
    next: Option<Entry>,
}

impl<'r> Side<'r> {
    fn open(repo: &'r Repository, dir: Option<&BlobId>) -> Result<Side<'r>> {
        let mut s = Side { it: dir.map(|d| DirIter::new(repo, d)).transpose()?, next: None };
        s.advance()?;
        Ok(s)
    }

    fn advance(&mut self) -> Result<()> {
        self.next = match self.it.as_mut() {
            Some(it) => it.next_entry()?,
            None => None,
        };
        Ok(())
    }
}

/// Receives each change: the path, the change, the entry in the first snapshot and the
/// one in the second (either may be missing).
pub type Sink<'a> = dyn FnMut(&Path, Change, Option<&Entry>, Option<&Entry>) -> Result<()> + 'a;

/// Compare the trees `old` and `new` (snapshot roots, or directories at `path` in
/// them) and tell `sink` each change with the entries on each side, in path order.
/// Damage in either tree is an error naming the object.
pub fn diff(
    repo: &Repository,
    old: &BlobId,
    new: &BlobId,
    path: &Path,
    metadata: bool,
    cancel: &AtomicBool,
    sink: &mut Sink<'_>,
) -> Result<DiffStats> {
    let mut stats = DiffStats::default();
    if old == new {
        stats.dirs_skipped += 1;
        return Ok(stats);
    }
    let mut levels =
        vec![Level { path: path.to_path_buf(), old: Side::open(repo, Some(old))?, new: Side::open(repo, Some(new))? }];
    while let Some(level) = levels.last_mut() {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let (o, n) = match (&level.old.next, &level.new.next) {
            (None, None) => {
                levels.pop();
                continue;
            }
            (Some(o), Some(n)) if o.name == n.name => (Some(o.clone()), Some(n.clone())),
            (Some(o), Some(n)) if o.name < n.name => (Some(o.clone()), None),
            (Some(o), None) => (Some(o.clone()), None),
            (_, n) => (None, n.clone()),
        };
        if o.is_some() {
            level.old.advance()?;
        }
        if n.is_some() {
            level.new.advance()?;
        }
        let name = o.as_ref().or(n.as_ref()).map(|e| e.name.clone()).expect("one side has the entry");
        let path = level.path.join(sys::os(&name));
        let dir_of = |e: &Option<Entry>| match e.as_ref().map(|e| &e.kind) {
            Some(Kind::Dir(id)) => Some(*id),
            _ => None,
        };
        let (od, nd) = (dir_of(&o), dir_of(&n));
        let change = match (&o, &n) {
            (Some(_), None) => Some(Change::Removed),
            (None, Some(_)) => Some(Change::Added),
            (Some(a), Some(b)) => compare(a, b, metadata),
            (None, None) => None,
        };
        if let Some(c) = change {
            count(&mut stats, c, o.as_ref(), n.as_ref());
            sink(&path, c, o.as_ref(), n.as_ref())?;
        }
        // Into a directory on either side, unless both sides hold the same tree.
        if (od.is_some() || nd.is_some()) && od != nd {
            if levels.len() >= MAX_DIR_NESTING {
                return Err(too_deep(od.as_ref().or(nd.as_ref()).expect("a directory")));
            }
            levels.push(Level { path, old: Side::open(repo, od.as_ref())?, new: Side::open(repo, nd.as_ref())? });
        } else if od.is_some() {
            stats.dirs_skipped += 1;
        }
    }
    Ok(stats)
}

/// How an entry in both snapshots changed, if it did.
fn compare(a: &Entry, b: &Entry, metadata: bool) -> Option<Change> {
    let same_type = std::mem::discriminant(&a.kind) == std::mem::discriminant(&b.kind);
    if !same_type {
        return Some(Change::TypeChanged);
    }
    let content = match (&a.kind, &b.kind) {
        (Kind::File(x), Kind::File(y)) => x != y,
        // A directory's own change is its entries', reported one by one.
        (Kind::Dir(_), Kind::Dir(_)) => false,
        (x, y) => x != y,
    };
    if content {
        return Some(Change::Modified);
    }
    let meta = a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.user != b.user
        || a.group != b.group
        || a.mtime != b.mtime
        || a.xattrs != b.xattrs;
    (metadata && meta).then_some(Change::Metadata)
}

fn count(stats: &mut DiffStats, c: Change, o: Option<&Entry>, n: Option<&Entry>) {
    let kind = n.or(o).map(|e| &e.kind);
    let counts = match kind {
        Some(Kind::File(_)) => &mut stats.files,
        Some(Kind::Dir(_)) => &mut stats.dirs,
        _ => &mut stats.others,
    };
    match c {
        Change::Added => counts.added += 1,
        Change::Removed => counts.removed += 1,
        Change::Modified | Change::TypeChanged | Change::Metadata => counts.changed += 1,
    }
    if c == Change::Metadata {
        return;
    }
    let file_size = |e: Option<&Entry>| e.filter(|e| matches!(e.kind, Kind::File(_))).map_or(0, |e| e.size);
    stats.bytes_removed = stats.bytes_removed.saturating_add(file_size(o));
    stats.bytes_added = stats.bytes_added.saturating_add(file_size(n));
}
