//! `forget`: remove snapshots, by id or by a retention policy applied to each group.
//!
//! Only snapshot files are removed; the data they alone referenced stays until `prune`.
//! A removed snapshot is gone for every reader at once (one file unlinked), so forget is
//! safe beside backups, restores and mounts.
//!
//! Memory: the policy sees each group newest first, but the repository lists snapshots
//! in id order. Each selected snapshot becomes one sort record (its group key, its time,
//! its id and its encoded snapshot: about 150 B plus its paths and tags) in an external
//! sort ([`crate::extsort`]) whose RAM is a share of the budget; past it, records spill
//! to temp files and are merged back. The [`Evaluator`] keeps a few integers per rule, and
//! the ids to remove wait in a temp file (32 B each) until every group has been decided,
//! so a refusal leaves the repository unchanged. What stays in RAM per snapshot is the
//! listing of `snapshots/` (32 B per id), as for every command.

use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::PathBuf;

use crate::backend::Dir;
use crate::error::{Error, IoContext, Result};
use crate::extsort::NameSorter;
use crate::format::snapshot::Snapshot;
use crate::id::FileId;
use crate::repo::Repository;
use crate::retention::{Evaluator, Policy};

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
    /// Snapshots whose paths are exactly these.
    pub paths: Vec<PathBuf>,
}

impl Filter {
    /// Whether `s` passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        let host = self.hosts.is_empty() || self.hosts.contains(&s.host);
        let tags = self.tags.is_empty() || self.tags.iter().any(|set| set.iter().all(|t| s.tags.contains(t)));
        let paths = self.paths.is_empty() || {
            let mut want = self.paths.clone();
            want.sort();
            want.dedup();
            let mut have = s.paths.clone();
            have.sort();
            have.dedup();
            want == have
        };
        host && tags && paths
    }
}

/// What to forget.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // made once per command
pub enum Selection {
    /// These snapshots (ids or unique prefixes), whatever their group.
    Ids(Vec<String>),
    /// What the policy does not keep, group by group.
    Policy {
        /// The rules.
        policy: Policy,
        /// How snapshots are grouped.
        group_by: GroupBy,
        /// Which snapshots are considered.
        filter: Filter,
    },
}

/// Options of [`forget`].
#[derive(Clone, Debug)]
pub struct ForgetOptions {
    /// What to forget.
    pub selection: Selection,
    /// Decide and report, remove nothing.
    pub dry_run: bool,
    /// Allow a policy to remove every snapshot of a group.
    pub force: bool,
    /// "Now", Unix nanoseconds: later snapshots are in the future for the `within` rules.
    pub now_ns: i64,
    /// RAM for sort records before they spill to temp files (see the module's doc);
    /// [`crate::budget::Budget::sort_bytes`] of the repository's budget.
    pub sort_memory: usize,
}

/// One snapshot's fate, as reported.
pub struct Decision<'a> {
    /// The snapshot.
    pub id: FileId,
    /// Its content.
    pub snapshot: &'a Snapshot,
    /// Why it is kept; empty when it is removed.
    pub reasons: &'a [String],
}

impl Decision<'_> {
    /// Whether the snapshot stays.
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Receives the decisions as they are made: a group, then its snapshots newest first.
pub trait ForgetSink {
    /// A new group starts (policy selections only).
    fn group(&mut self, group: &Group);
    /// A snapshot's decision.
    fn decision(&mut self, d: &Decision<'_>);
}

/// What [`forget`] did (or, with `dry_run`, would do).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ForgetStats {
    /// Groups seen.
    pub groups: u64,
    /// Snapshots kept.
    pub kept: u64,
    /// Snapshots removed (to be removed, in a dry run).
    pub removed: u64,
    /// Sorted batches of snapshot records written to temp files (0: the sort fit in RAM).
    pub sort_spills: u64,
}

/// Forget snapshots: report each decision to `sink`, then (unless `dry_run`) remove the
/// snapshot files. Nothing is removed when an id does not resolve, or when the policy
/// would empty a group and `force` is not set.
pub fn forget(repo: &Repository, opts: &ForgetOptions, sink: &mut dyn ForgetSink) -> Result<ForgetStats> {
    let mut doomed = Doomed::new()?;
    let stats = match &opts.selection {
        Selection::Ids(specs) => by_ids(repo, specs, sink, &mut doomed)?,
        Selection::Policy { policy, group_by, filter } => {
            if policy.is_empty() {
                return Err(Error::InvalidInput(
                    "no policy given: name snapshots to forget, or give --keep-* rules".into(),
                ));
            }
            let (stats, emptied) = by_policy(repo, policy, *group_by, filter, opts, sink, &mut doomed)?;
            if let Some(g) = emptied.filter(|_| !opts.force) {
                return Err(Error::InvalidInput(format!(
                    "the policy would remove every snapshot of the group {}; nothing was removed \
                     (check the rules, or give --force)",
                    describe_group(&g)
                )));
            }
            stats
        }
    };
    if !opts.dry_run {
        doomed.remove_all(repo)?;
    }
    Ok(stats)
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

fn by_ids(repo: &Repository, specs: &[String], sink: &mut dyn ForgetSink, doomed: &mut Doomed) -> Result<ForgetStats> {
    if specs.is_empty() {
        return Err(Error::InvalidInput("no snapshot ids given".into()));
    }
    // Every id resolves before anything is removed.
    let mut ids = Vec::with_capacity(specs.len());
    for spec in specs {
        if spec == "latest" {
            return Err(Error::InvalidInput("forget takes snapshot ids, not `latest`".into()));
        }
        let (id, snap) = repo.resolve_snapshot(spec)?;
        if !ids.iter().any(|(i, _)| *i == id) {
            ids.push((id, snap));
        }
    }
    for (id, snap) in &ids {
        sink.decision(&Decision { id: *id, snapshot: snap, reasons: &[] });
        doomed.push(id)?;
    }
    Ok(ForgetStats { removed: ids.len() as u64, ..ForgetStats::default() })
}

/// Sort record: `[group key len u32 BE][group key][time, descending u64 BE][id 32][snapshot]`.
/// Records of one group are adjacent and newest first; equal times fall in id order.
fn record(g: &Group, time_ns: i64, id: &FileId, s: &Snapshot) -> Vec<u8> {
    let key = group_key(g);
    let snap = s.encode();
    let mut r = Vec::with_capacity(4 + key.len() + 8 + 32 + snap.len());
    r.extend_from_slice(&(key.len() as u32).to_be_bytes());
    r.extend_from_slice(&key);
    // Newest first: invert the order-preserving unsigned form of the time.
    r.extend_from_slice(&(!((time_ns as u64) ^ (1 << 63))).to_be_bytes());
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
    Error::InvalidInput("forget: a temporary sort file is damaged".into())
}

/// A record's group key bytes (all the lookahead needs).
fn record_key(r: &[u8]) -> Result<&[u8]> {
    let klen = u32::from_be_bytes(r.get(..4).ok_or_else(bad_record)?.try_into().map_err(|_| bad_record())?) as usize;
    r.get(4..4 + klen).ok_or_else(bad_record)
}

/// A record split back: its group key bytes, the snapshot id and the snapshot.
fn parse_record(r: &[u8]) -> Result<(&[u8], FileId, Snapshot)> {
    let bad = bad_record;
    let key = record_key(r)?;
    let rest = r.get(4 + key.len() + 8..).ok_or_else(bad)?;
    let id = FileId(rest.get(..32).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
    let snap = Snapshot::decode(&rest[32..], 2, &id)?;
    Ok((key, id, snap))
}

fn by_policy(
    repo: &Repository,
    policy: &Policy,
    group_by: GroupBy,
    filter: &Filter,
    opts: &ForgetOptions,
    sink: &mut dyn ForgetSink,
    doomed: &mut Doomed,
) -> Result<(ForgetStats, Option<Group>)> {
    let mut sorter = NameSorter::new(opts.sort_memory);
    let tmp = std::env::temp_dir();
    // A damaged snapshot is in no group: a policy neither keeps nor removes it (`repair
    // snapshots` or `forget ID` deal with it); it is reported as a problem.
    repo.for_each_snapshot(&mut |id, snap| {
        if filter.matches(&snap) {
            sorter.push(record(&group_by.key(&snap), snap.time_ns, &id, &snap)).at(&tmp)?;
        }
        Ok(())
    })?;
    let mut stats = ForgetStats { sort_spills: sorter.batches() as u64, ..ForgetStats::default() };
    let mut sorted = sorter.finish().at(&tmp)?;
    let mut emptied = None;
    let mut next = sorted.next_name().at(&tmp)?;
    while let Some(first) = next.take() {
        let (key, _, snap) = parse_record(&first)?;
        let key = key.to_vec();
        let group = group_by.key(&snap);
        sink.group(&group);
        stats.groups += 1;
        let mut eval = Evaluator::new(policy, chrono::Local, opts.now_ns);
        let (mut kept, mut removed) = (0u64, 0u64);
        let mut cur = Some(first);
        while let Some(rec) = cur.take() {
            // One record of lookahead: the rules need to know the group's oldest.
            next = sorted.next_name().at(&tmp)?;
            let oldest = match &next {
                Some(n) => record_key(n)? != key.as_slice(),
                None => true,
            };
            let (_, id, snap) = parse_record(&rec)?;
            let reasons = eval.next(snap.time_ns, &snap.tags, oldest);
            sink.decision(&Decision { id, snapshot: &snap, reasons: &reasons });
            if reasons.is_empty() {
                removed += 1;
                doomed.push(&id)?;
            } else {
                kept += 1;
            }
            if !oldest {
                cur = next.take();
            }
        }
        if kept == 0 && removed > 0 && emptied.is_none() {
            emptied = Some(group);
        }
        stats.kept += kept;
        stats.removed += removed;
    }
    Ok((stats, emptied))
}

/// Ids to remove, in a temp file until every decision is made (32 B each on disk).
struct Doomed {
    file: BufWriter<std::fs::File>,
    n: u64,
}

impl Doomed {
    fn new() -> Result<Doomed> {
        let f = tempfile::tempfile().at(std::env::temp_dir())?;
        Ok(Doomed { file: BufWriter::new(f), n: 0 })
    }

    fn push(&mut self, id: &FileId) -> Result<()> {
        self.n += 1;
        self.file.write_all(&id.0).at(std::env::temp_dir())
    }

    fn remove_all(self, repo: &Repository) -> Result<()> {
        let tmp = std::env::temp_dir();
        let mut f = self.file.into_inner().map_err(|e| e.into_error()).at(&tmp)?;
        f.rewind().at(&tmp)?;
        let mut r = BufReader::new(f);
        let mut id = [0u8; 32];
        for _ in 0..self.n {
            r.read_exact(&mut id).at(&tmp)?;
            repo.backend().remove(Dir::Snapshots, &FileId(id))?;
        }
        Ok(())
    }
}
