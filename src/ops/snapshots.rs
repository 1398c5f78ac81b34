//! Which snapshots a command works on, and in what order: restic's `--host`, `--tag`
//! and `--path` filters ([`Filter`]), `latest` among those that pass ([`resolve`]), and
//! groups of snapshots sharing attributes ([`GroupBy`]) visited group by group in time
//! order ([`grouped`]: forget's policies, `snapshots --group-by`).
//!
//! Memory: the repository lists snapshots in id order. [`grouped`] turns each selected
//! snapshot into one sort record (its group key, its time, its id and its encoded
//! snapshot: about 150 B plus its paths and tags) in an external sort
//! ([`crate::extsort`]) whose RAM is a share of the budget; past it, records spill to
//! temp files and are merged back. What stays in RAM per snapshot is the listing of
//! `snapshots/` (32 B per id), as for every command.

use std::path::PathBuf;

use crate::error::{Error, IoContext, Result};
use crate::extsort::NameSorter;
use crate::format::snapshot::Snapshot;
use crate::id::FileId;
use crate::repo::Repository;

/// Which snapshot attributes make a group (`--group-by host,paths,tags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupBy {
    /// Group by host name.
    pub host: bool,
    /// Group by the set of backed-up paths.
    pub paths: bool,
    /// Group by the set of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy { host: true, paths: true, tags: false }
    }
}

impl GroupBy {
    /// Parse a comma-separated subset of `host`, `paths`, `tags` (empty: one group).
    pub fn parse(s: &str) -> std::result::Result<GroupBy, String> {
        let mut g = GroupBy { host: false, paths: false, tags: false };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" | "path" => g.paths = true,
                "tags" | "tag" => g.tags = true,
                _ => return Err(format!("--group-by {s}: unknown attribute {part} (use host, paths and tags)")),
            }
        }
        Ok(g)
    }

    /// The group of `s`: the attributes grouped by, the others `None`.
    pub fn key(&self, s: &Snapshot) -> Group {
        let mut paths = s.paths.clone();
        paths.sort();
        let mut tags = s.tags.clone();
        tags.sort();
        tags.dedup();
        Group {
            host: self.host.then(|| s.host.clone()),
            paths: self.paths.then_some(paths),
            tags: self.tags.then_some(tags),
        }
    }
}

/// A group of snapshots: the values of the attributes it is grouped by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    /// Host, when grouped by host.
    pub host: Option<String>,
    /// Sorted paths, when grouped by paths.
    pub paths: Option<Vec<PathBuf>>,
    /// Sorted tags, when grouped by tags.
    pub tags: Option<Vec<String>>,
}

/// Which snapshots to consider at all (restic's `--host`, `--tag`, `--path`); an empty
/// list does not filter.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Snapshots of any of these hosts.
    pub hosts: Vec<String>,
    /// Snapshots carrying every tag of any of these sets.
    pub tags: Vec<Vec<String>>,
    /// Snapshots that include all of these paths (and maybe others), as restic's `--path`.
    pub paths: Vec<PathBuf>,
}

impl Filter {
    /// Whether it passes every snapshot.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.tags.is_empty() && self.paths.is_empty()
    }

    /// Whether `s` passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        let host = self.hosts.is_empty() || self.hosts.contains(&s.host);
        let tags = self.tags.is_empty() || self.tags.iter().any(|set| set.iter().all(|t| s.tags.contains(t)));
        // As restic's: the snapshot must include every path given (it may have more).
        let paths = self.paths.iter().all(|p| s.paths.contains(p));
        host && tags && paths
    }
}

/// The group's attributes in words, e.g. `host a, paths [/home]`.
pub fn describe_group(g: &Group) -> String {
    let mut parts = vec![];
    if let Some(h) = &g.host {
        parts.push(format!("host {h}"));
    }
    if let Some(p) = &g.paths {
        parts.push(format!("paths [{}]", p.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")));
    }
    if let Some(t) = &g.tags {
        parts.push(format!("tags [{}]", t.join(",")));
    }
    if parts.is_empty() {
        "(all snapshots)".into()
    } else {
        parts.join(", ")
    }
}

/// Sort record: `[group key len u32 BE][group key][time, descending u64 BE][id 32][snapshot]`.
/// Records of one group are adjacent and in `order`; equal times fall in id order.
fn record(g: &Group, time_ns: i64, order: Order, id: &FileId, s: &Snapshot) -> Vec<u8> {
    let key = group_key(g);
    let snap = s.encode();
    let mut r = Vec::with_capacity(4 + key.len() + 8 + 32 + snap.len());
    r.extend_from_slice(&(key.len() as u32).to_be_bytes());
    r.extend_from_slice(&key);
    // The order-preserving unsigned form of the time, inverted for newest first.
    let t = (time_ns as u64) ^ (1 << 63);
    r.extend_from_slice(&if order == Order::NewestFirst { !t } else { t }.to_be_bytes());
    r.extend_from_slice(&id.0);
    r.extend_from_slice(&snap);
    r
}

/// A canonical byte form of a group: equal groups, equal bytes.
fn group_key(g: &Group) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut k = vec![];
    let mut put = |b: &[u8]| {
        k.extend_from_slice(&(b.len() as u32).to_be_bytes());
        k.extend_from_slice(b);
    };
    if let Some(h) = &g.host {
        put(b"h");
        put(h.as_bytes());
    }
    if let Some(p) = &g.paths {
        put(b"p");
        for p in p {
            put(p.as_os_str().as_bytes());
        }
    }
    if let Some(t) = &g.tags {
        put(b"t");
        for t in t {
            put(t.as_bytes());
        }
    }
    k
}

/// Written by this process a moment ago: a record that does not split is a bug or a bad disk.
fn bad_record() -> Error {
    Error::InvalidInput("a temporary sort file of snapshots is damaged".into())
}

/// A record's group key bytes (all the lookahead needs).
fn record_key(r: &[u8]) -> Result<&[u8]> {
    let klen = u32::from_be_bytes(r.get(..4).ok_or_else(bad_record)?.try_into().map_err(|_| bad_record())?) as usize;
    r.get(4..4 + klen).ok_or_else(bad_record)
}

/// A record split back: the snapshot id and the snapshot.
fn parse_record(r: &[u8]) -> Result<(FileId, Snapshot)> {
    let bad = bad_record;
    let key = record_key(r)?;
    let rest = r.get(4 + key.len() + 8..).ok_or_else(bad)?;
    let id = FileId(rest.get(..32).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
    // Encoded by this build a moment ago: at the version it writes.
    let snap = Snapshot::decode(&rest[32..], crate::format::FileKind::Snapshot.version(), &id)?;
    Ok((id, snap))
}

/// The order of the snapshots within a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Newest first (forget's policies).
    NewestFirst,
    /// Oldest first (listings).
    OldestFirst,
}

/// Where a visited snapshot is in its group.
#[derive(Clone, Copy, Debug)]
pub struct At {
    /// The group's first snapshot in the order asked for.
    pub first: bool,
    /// Its last.
    pub last: bool,
}

/// Visit the snapshots `select` passes, grouped by `group_by` (groups in the order of
/// their attributes), each group in `order` (equal times in id order), in at most
/// `sort_memory` bytes of RAM for the sort. Damaged snapshots are skipped (and recorded
/// as the repository's problems). Returns the sorted batches that spilled to temp files.
pub fn grouped(
    repo: &Repository,
    select: &dyn Fn(&FileId, &Snapshot) -> bool,
    group_by: GroupBy,
    order: Order,
    sort_memory: usize,
    visit: &mut dyn FnMut(At, FileId, Snapshot) -> Result<()>,
) -> Result<u64> {
    let mut sorter = NameSorter::new(sort_memory);
    let tmp = std::env::temp_dir();
    repo.for_each_snapshot(&mut |id, snap| {
        if select(&id, &snap) {
            sorter.push(record(&group_by.key(&snap), snap.time_ns, order, &id, &snap)).at(&tmp)?;
        }
        Ok(())
    })?;
    let spills = sorter.batches() as u64;
    let mut sorted = sorter.finish().at(&tmp)?;
    let mut next = sorted.next_name().at(&tmp)?;
    let mut first = true;
    while let Some(rec) = next.take() {
        // One record of lookahead: is this the group's last?
        next = sorted.next_name().at(&tmp)?;
        let key = record_key(&rec)?;
        let last = match &next {
            Some(n) => record_key(n)? != key,
            None => true,
        };
        let (id, snap) = parse_record(&rec)?;
        visit(At { first, last }, id, snap)?;
        first = last;
    }
    Ok(spills)
}

/// Find a snapshot by a unique prefix of its id, or `latest`: the newest that `filter`
/// passes (restic's `latest` with `--host`/`--tag`/`--path`).
pub fn resolve(repo: &Repository, spec: &str, filter: &Filter) -> Result<(FileId, Snapshot)> {
    if spec != "latest" {
        return repo.resolve_snapshot(spec);
    }
    let mut best: Option<(FileId, Snapshot)> = None;
    repo.for_each_snapshot(&mut |id, s| {
        if filter.matches(&s) && best.as_ref().is_none_or(|(b, bs)| (s.time_ns, id) > (bs.time_ns, *b)) {
            best = Some((id, s));
        }
        Ok(())
    })?;
    best.ok_or_else(|| Error::NotFound {
        what: "snapshot",
        id: if filter.is_empty() {
            "latest (the repository has no snapshots)".into()
        } else {
            "latest (no snapshot passes --host, --tag and --path)".into()
        },
    })
}

/// The snapshots a command works on: those it names (ids, or `latest` with the filter)
/// that the filter passes, or every snapshot the filter passes when it names none.
pub struct Chosen {
    /// 32 B per snapshot named on the command line.
    named: Vec<FileId>,
    filter: Filter,
}

impl Chosen {
    /// Resolve the snapshots `specs` names ([`resolve`]).
    pub fn resolve(repo: &Repository, specs: &[String], filter: Filter) -> Result<Chosen> {
        let named = specs.iter().map(|spec| resolve(repo, spec, &filter).map(|(id, _)| id)).collect::<Result<_>>()?;
        Ok(Chosen { named, filter })
    }

    /// Whether snapshot `id`, `s`, is one of them.
    pub fn selects(&self, id: &FileId, s: &Snapshot) -> bool {
        (self.named.is_empty() || self.named.contains(id)) && self.filter.matches(s)
    }

    /// Visit them oldest first, sorted within `sort_memory` ([`grouped`], one group).
    pub fn for_each(
        &self,
        repo: &Repository,
        sort_memory: usize,
        visit: &mut dyn FnMut(FileId, Snapshot) -> Result<()>,
    ) -> Result<()> {
        let one = GroupBy { host: false, paths: false, tags: false };
        let select = |id: &FileId, s: &Snapshot| self.selects(id, s);
        grouped(repo, &select, one, Order::OldestFirst, sort_memory, &mut |_, id, s| visit(id, s)).map(drop)
    }
}

/// How `tag` changes a snapshot's tags.
#[derive(Clone, Debug, Default)]
pub struct TagChange {
    /// Replace all tags with these (`--set`; an empty set removes every tag).
    pub set: Option<Vec<String>>,
    /// Add these (`--add`).
    pub add: Vec<String>,
    /// Remove these (`--remove`).
    pub remove: Vec<String>,
}

impl TagChange {
    /// The tags `old` becomes: sorted, without duplicates.
    pub fn apply(&self, old: &[String]) -> Vec<String> {
        let mut tags = self.set.clone().unwrap_or_else(|| old.to_vec());
        tags.extend(self.add.iter().cloned());
        tags.retain(|t| !self.remove.contains(t));
        tags.sort();
        tags.dedup();
        tags
    }
}

/// Change the tags of snapshot `id`: the snapshot is written anew with the new tags
/// (a snapshot file's name is the hash of its content), then the old file is removed,
/// so a crash between the two leaves both, never neither. Returns the new id, or `None`
/// if the tags stay as they are. Taken under a shared lock, as a backup: a prune never
/// runs beside it, and the new snapshot names only trees the old one named.
pub fn retag(
    repo: &Repository,
    id: &FileId,
    change: &TagChange,
    lock: &crate::repo::lock::LockOptions,
) -> Result<Option<FileId>> {
    for t in change.set.iter().flatten().chain(&change.add) {
        if t.is_empty() || t.contains(',') || t.len() > 255 {
            return Err(Error::InvalidInput(format!("tag {t:?}: tags are 1 to 255 bytes without ','")));
        }
    }
    repo.with_lock(crate::repo::lock::LockKind::Shared, "tag", lock, |guard| {
        let mut snap = repo.load_snapshot(id)?;
        let tags = change.apply(&snap.tags);
        let mut old = snap.tags.clone();
        old.sort();
        old.dedup();
        if tags == old {
            return Ok(None);
        }
        if tags.len() > 1000 {
            return Err(Error::InvalidInput(format!("snapshot {}: at most 1000 tags", id.short())));
        }
        snap.tags = tags;
        guard.check()?;
        let new = repo.save_snapshot(&snap)?;
        if new != *id {
            repo.backend().remove(crate::backend::Dir::Snapshots, id)?;
        }
        Ok(Some(new))
    })
}
