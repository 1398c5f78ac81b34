//! `forget`: remove snapshots, by id or by a retention policy applied to each group.
//!
//! Only snapshot files are removed; the data they alone referenced stays until `prune`.
//! A removed snapshot is gone for every reader at once (one file unlinked), so forget is
//! safe beside backups, restores and mounts.
//!
//! Memory: the policy sees each group newest first, through
//! [`crate::ops::snapshots::grouped`] (an external sort whose RAM is a share of the
//! budget). The [`Evaluator`] keeps a few integers per rule, and
//! the ids to remove wait in a temp file (32 B each) until every group has been decided,
//! so a refusal leaves the repository unchanged. What stays in RAM per snapshot is the
//! listing of `snapshots/` (32 B per id), as for every command.

use std::io::{BufReader, BufWriter, Read, Seek, Write};

use crate::backend::Dir;
use crate::error::{Error, IoContext, Result};
use crate::format::snapshot::Snapshot;
use crate::id::FileId;
pub use crate::ops::snapshots::{describe_group, Filter, Group, GroupBy};
use crate::ops::snapshots::{grouped, Order};
use crate::repo::Repository;
use crate::retention::{Evaluator, Policy};

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

fn by_policy(
    repo: &Repository,
    policy: &Policy,
    group_by: GroupBy,
    filter: &Filter,
    opts: &ForgetOptions,
    sink: &mut dyn ForgetSink,
    doomed: &mut Doomed,
) -> Result<(ForgetStats, Option<Group>)> {
    let mut stats = ForgetStats::default();
    let mut emptied = None;
    let (mut group, mut eval) = (Group::default(), None);
    let (mut kept, mut removed) = (0u64, 0u64);
    // A damaged snapshot is in no group: a policy neither keeps nor removes it (`repair
    // snapshots` or `forget ID` deal with it); it is reported as a problem.
    stats.sort_spills = grouped(
        repo,
        &|_, s| filter.matches(s),
        group_by,
        Order::NewestFirst,
        opts.sort_memory,
        &mut |at, id, snap| {
            if at.first {
                group = group_by.key(&snap);
                sink.group(&group);
                stats.groups += 1;
                eval = Some(Evaluator::new(policy, chrono::Local, opts.now_ns));
                (kept, removed) = (0, 0);
            }
            let eval = eval.as_mut().expect("set at the group's first snapshot");
            let reasons = eval.next(snap.time_ns, &snap.tags, at.last);
            sink.decision(&Decision { id, snapshot: &snap, reasons: &reasons });
            if reasons.is_empty() {
                removed += 1;
                doomed.push(&id)?;
            } else {
                kept += 1;
            }
            if at.last {
                if kept == 0 && removed > 0 && emptied.is_none() {
                    emptied = Some(std::mem::take(&mut group));
                }
                stats.kept += kept;
                stats.removed += removed;
            }
            Ok(())
        },
    )?;
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
