//! `prune` (docs/design.md, "Prune"): delete every pack nothing references, repack the
//! packs that are mostly garbage, and rewrite the index, exactly and in bounded memory.
//!
//! Memory, for a budget B (docs/design.md gives the whole table):
//! - mark: the reachable ids in an external sort ([`crate::extsort`]) of B/16 (64 B
//!   charged per id), subtrees walked whole in an LRU of B/16 (~96 B per node);
//! - account: a k-way merge of the index cache's runs (64 KiB per run), used bytes per
//!   pack ordinal in a table of B/32 (64 B per pack) spilled as sorted partial sums;
//! - plan: sorted streams (per-pack sums, repack candidates, B/16 each, spilled) merged
//!   with the listing of `data/`; sets of packs (deleted, used, kept) and the reachable
//!   ids as sorted files of 32 B per id, looked up by binary search;
//! - repack: the chosen packs in a table of B/64 (80 B each: the rest wait for the next
//!   prune), their blobs sorted by pack and offset (B/16, spilled), one blob at a time;
//! - cache: 1 bit per pack ordinal.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::backend::Dir;
use crate::crypto::SEAL_OVERHEAD;
use crate::error::{Error, IoContext, Result};
use crate::extsort::{IdSet, NameSorter, SortedNames};
use crate::format::index::Location;
use crate::format::pack::{RECORD_LEN, TRAILER_LEN};
use crate::format::HEADER_LEN;
use crate::id::{BlobId, FileId};
use crate::index::Record;
use crate::progress::Unit;
use crate::repo::lock::{LockGuard, LockKind, LockOptions};
use crate::repo::packer::Packer;
use crate::repo::{Repository, SealedBlob};

/// What the mark phase saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MarkStats {
    /// Snapshots walked.
    pub snapshots: u64,
    /// Blob ids emitted, repeats included (the sort keeps each once).
    pub ids_emitted: u64,
    /// Sorted batches written to temp files.
    pub sort_spills: u64,
}

/// The reachable set: the id of every blob (tree or data) that some snapshot references,
/// sorted and distinct, read back from disk. Any snapshot or tree that cannot be read
/// stops the mark (an error naming it): what it references is unknown, and a prune that
/// went on could delete it.
pub fn mark(
    repo: &Repository,
    sort_memory: usize,
    done_memory: usize,
    cancel: &AtomicBool,
) -> Result<(SortedNames, MarkStats)> {
    let tmp = std::env::temp_dir();
    let mut sorter = NameSorter::new(sort_memory);
    let mut done = crate::budget::lru_within(done_memory);
    let mut stats = MarkStats::default();
    for id in repo.backend().list(Dir::Snapshots)? {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        // Damage names the snapshot it was met in; other errors (I/O) pass as they are.
        let damaged = |e: Error| match e {
            Error::Corrupt { .. } | Error::Tampered { .. } => Error::corrupt(
                "snapshot",
                id,
                format!("{e}; prune stops before deleting anything (`cairn repair snapshots`, or `cairn forget` it)"),
            ),
            e => e,
        };
        let snap = match repo.load_snapshot(&id) {
            Ok(s) => s,
            // Gone since the listing: forgotten meanwhile, nothing to keep for it.
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(damaged(e)),
        };
        stats.snapshots += 1;
        crate::tree::for_each_blob(repo, &snap.root, &mut done, &mut |blob, _| {
            stats.ids_emitted += 1;
            sorter.push(blob.0.to_vec()).at(&tmp)
        })
        .map_err(damaged)?;
    }
    stats.sort_spills = sorter.batches() as u64;
    Ok((sorter.finish().at(&tmp)?, stats))
}

/// How much unused space prune tolerates (`--max-unused`): restic's syntax and meaning.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxUnused {
    /// This share of the repository may be unused: `5%` (the default) means unused
    /// bytes at most 5/95 of the used ones.
    Percent(f64),
    /// This many unused bytes.
    Bytes(u64),
    /// Any amount: only packs with nothing used go.
    Unlimited,
}

impl Default for MaxUnused {
    fn default() -> Self {
        MaxUnused::Percent(5.0)
    }
}

impl MaxUnused {
    /// Parse `5%`, `0%`, `2G`, `500M` or `unlimited`.
    pub fn parse(s: &str) -> std::result::Result<MaxUnused, String> {
        let t = s.trim();
        if t == "unlimited" {
            return Ok(MaxUnused::Unlimited);
        }
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| format!("{s}: not a percentage"))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{s}: a percentage must be between 0% and 100%"));
            }
            return Ok(if v >= 100.0 { MaxUnused::Unlimited } else { MaxUnused::Percent(v) });
        }
        crate::budget::parse_size(t).map(|b| MaxUnused::Bytes(b as u64))
    }

    /// The unused bytes tolerated beside `used` used bytes.
    pub fn limit(&self, used: u64) -> u64 {
        match *self {
            MaxUnused::Percent(p) => (p / (100.0 - p) * used as f64) as u64,
            MaxUnused::Bytes(b) => b,
            MaxUnused::Unlimited => u64::MAX,
        }
    }
}

/// What `prune` does.
#[derive(Clone, Debug, Default)]
pub struct PruneOptions {
    /// Decide and report, change nothing.
    pub dry_run: bool,
    /// Repack until at most this much is unused.
    pub max_unused: MaxUnused,
    /// Repack packs of at most this many bytes in all (the rest waits for the next prune).
    pub max_repack_size: Option<u64>,
    /// How to take the repository lock.
    pub lock: LockOptions,
}

/// What prune found and did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PruneStats {
    /// Snapshots whose blobs were marked.
    pub snapshots: u64,
    /// Distinct blobs they reference.
    pub reachable_blobs: u64,
    /// Index entries read (an id stored twice counts twice).
    pub index_entries: u64,
    /// Index entries for ids already met (stored twice: one copy is unused).
    pub duplicate_entries: u64,
    /// Packs in the repository, and their bytes.
    pub packs: u64,
    /// Bytes of all packs.
    pub pack_bytes: u64,
    /// Bytes of used blobs (with their pack header records).
    pub used_bytes: u64,
    /// Bytes of unused blobs in packs that are not deleted whole.
    pub unused_bytes: u64,
    /// Packs with nothing used, deleted whole.
    pub packs_deleted: u64,
    /// Their bytes.
    pub deleted_bytes: u64,
    /// Of those, packs no index file names (left by an interrupted backup).
    pub unindexed_packs: u64,
    /// Packs repacked: their used blobs copied into new packs, then deleted.
    pub packs_repacked: u64,
    /// Their bytes.
    pub repacked_bytes: u64,
    /// Blobs copied.
    pub blobs_repacked: u64,
    /// Bytes of the new packs.
    pub repack_written: u64,
    /// Packs worth repacking left for another prune by `--max-repack-size` or the
    /// memory budget.
    pub repack_deferred: u64,
    /// Packs index files name that do not exist, with nothing used in them (their
    /// entries are dropped).
    pub missing_unused_packs: u64,
    /// Index files rewritten.
    pub index_files_rewritten: u64,
    /// Index entries dropped.
    pub index_entries_dropped: u64,
    /// Unused bytes left after prune.
    pub unused_after: u64,
    /// Pack bytes after prune.
    pub bytes_after: u64,
    /// The config went to version 2 (clients take locks) first.
    pub config_upgraded: bool,
    /// Sorted batches the reachable set spilled to disk.
    pub sort_spills: u64,
    /// Times the per-pack sums table filled and went to disk.
    pub pack_sum_spills: u64,
    /// Seconds repacking and deleting would take, roughly (see [`REPACK_RATE`]).
    pub estimated_seconds: f64,
}

/// The bytes per second a repack reads, verifies and writes, for the dry-run estimate
/// (about what this repository's development machine does with a warm page cache; a
/// rough guide, not a promise).
pub const REPACK_RATE: f64 = 150.0 * 1024.0 * 1024.0;
/// Seconds per pack removed, for the estimate.
const DELETE_SECONDS: f64 = 0.0002;

/// Bytes a pack holds besides its blobs and their header records: the file header, the
/// header's count, seal and trailer. A pack whose blobs are all used has no other bytes.
const PACK_FIXED: u64 = (HEADER_LEN + 4 + SEAL_OVERHEAD + TRAILER_LEN) as u64;
/// Header bytes per blob.
const PER_BLOB: u64 = RECORD_LEN as u64;

/// Used-byte sums per pack: what one index record adds to its pack.
#[derive(Clone, Copy, Default)]
struct Sum {
    used: u64,
    used_blobs: u64,
    blobs: u64,
}

impl Sum {
    fn add(&mut self, o: &Sum) {
        self.used += o.used;
        self.used_blobs += o.used_blobs;
        self.blobs += o.blobs;
    }

    fn put(&self, v: &mut Vec<u8>) {
        v.extend_from_slice(&self.used.to_be_bytes());
        v.extend_from_slice(&self.used_blobs.to_be_bytes());
        v.extend_from_slice(&self.blobs.to_be_bytes());
    }

    fn get(b: &[u8]) -> Sum {
        let u = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Sum { used: u(0), used_blobs: u(8), blobs: u(16) }
    }
}

/// Bytes charged per entry of [`PackSums`]' table (u32 key, 24 B value, hashbrown slack).
const SUM_ENTRY_BYTES: usize = 64;

/// Sums per pack ordinal, in a table of at most `limit` bytes; when full, it goes to an
/// external sort as partial sums (`ordinal | flush number | sum`: the flush number keeps
/// equal partial sums of two flushes apart) and starts again.
struct PackSums {
    table: HashMap<u32, Sum>,
    cap: usize,
    flushes: u32,
    sorter: NameSorter,
}

impl PackSums {
    fn new(limit: usize, sort_memory: usize) -> PackSums {
        PackSums {
            table: HashMap::new(),
            cap: (limit / SUM_ENTRY_BYTES).max(1),
            flushes: 0,
            sorter: NameSorter::new(sort_memory),
        }
    }

    fn add(&mut self, ordinal: u32, s: Sum) -> std::io::Result<()> {
        if !self.table.contains_key(&ordinal) && self.table.len() >= self.cap {
            self.flush()?;
        }
        self.table.entry(ordinal).or_default().add(&s);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        for (o, s) in self.table.drain() {
            let mut v = Vec::with_capacity(32);
            v.extend_from_slice(&o.to_be_bytes());
            v.extend_from_slice(&self.flushes.to_be_bytes());
            s.put(&mut v);
            self.sorter.push(v)?;
        }
        self.flushes += 1;
        Ok(())
    }

    /// The partial sums, by ordinal.
    fn finish(mut self) -> std::io::Result<SortedNames> {
        self.flush()?;
        self.sorter.finish()
    }
}

/// Reads sorted records of `key (key_len bytes) | ... | sum (last 24 bytes)` and adds up
/// the sums of each key.
struct SumsByKey {
    names: SortedNames,
    key_len: usize,
    peeked: Option<Vec<u8>>,
}

impl SumsByKey {
    fn new(mut names: SortedNames, key_len: usize) -> std::io::Result<SumsByKey> {
        let peeked = names.next_name()?;
        Ok(SumsByKey { names, key_len, peeked })
    }

    /// The key of the next group, without taking it.
    fn peek(&self) -> Option<&[u8]> {
        self.peeked.as_deref().map(|p| &p[..self.key_len])
    }

    /// The next key and its total.
    fn next_sum(&mut self) -> std::io::Result<Option<(Vec<u8>, Sum)>> {
        let Some(first) = self.peeked.take() else { return Ok(None) };
        let key = first[..self.key_len].to_vec();
        let mut total = Sum::get(&first[first.len() - 24..]);
        loop {
            self.peeked = self.names.next_name()?;
            match &self.peeked {
                Some(n) if n[..self.key_len] == key[..] => total.add(&Sum::get(&n[n.len() - 24..])),
                _ => return Ok(Some((key, total))),
            }
        }
    }
}

fn io_err(e: std::io::Error) -> Error {
    Error::Io { path: std::env::temp_dir(), err: e }
}

fn id32(b: &[u8]) -> [u8; 32] {
    b[..32].try_into().expect("32 bytes")
}

/// The next id of a sorted stream of 32-byte names.
fn next_id(names: &mut SortedNames) -> Result<Option<[u8; 32]>> {
    Ok(names.next_name().map_err(io_err)?.map(|n| id32(&n)))
}

/// `cairn prune`: delete what no snapshot references, repack packs that are mostly
/// garbage, rewrite the index. Holds the exclusive lock (a shared one for `dry_run`,
/// which changes nothing) and upgrades a version-1 config first (docs/design.md).
pub fn prune(repo: &Repository, opts: &PruneOptions, cancel: &AtomicBool) -> Result<PruneStats> {
    let mut upgraded = false;
    let kind = if opts.dry_run {
        LockKind::Shared
    } else {
        upgraded = repo.upgrade_config()?;
        LockKind::Exclusive
    };
    // A dry run must report even where it may not lock (a read-only repository).
    let lock = LockOptions { skip_shared: opts.dry_run && opts.lock.skip_shared, ..opts.lock };
    let mut stats = repo.with_lock(kind, "prune", &lock, |guard| locked_prune(repo, opts, guard, cancel))?;
    stats.config_upgraded = upgraded;
    Ok(stats)
}

fn locked_prune(repo: &Repository, opts: &PruneOptions, guard: &LockGuard, cancel: &AtomicBool) -> Result<PruneStats> {
    if !opts.dry_run {
        repo.backend().remove_stale_temps()?;
    }
    repo.refresh_index()?;
    // Prune looks up only trees, all present: the filters would hold its budget for
    // nothing (the runs it writes still store theirs).
    repo.index().drop_filters();
    let plan = plan(repo, opts, cancel)?;
    if opts.dry_run {
        return Ok(plan.stats);
    }
    execute(repo, plan, guard, cancel)
}

/// What no snapshot uses, as a dry-run prune with the default `--max-unused` finds it,
/// for `check`'s warnings. The caller holds a lock and has refreshed the index.
pub fn unused(repo: &Repository, cancel: &AtomicBool) -> Result<PruneStats> {
    let opts = PruneOptions { dry_run: true, ..Default::default() };
    Ok(plan(repo, &opts, cancel)?.stats)
}

fn cancelled(cancel: &AtomicBool) -> Result<()> {
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    Ok(())
}

/// What [`plan`] decided, and the sets [`execute`] needs (on disk, but `chosen`).
struct Plan {
    stats: PruneStats,
    /// The reachable blob ids.
    reach: IdSet,
    /// Packs to delete whole.
    deleted: IdSet,
    /// Packs with something used (the chosen ones among them).
    used_packs: IdSet,
    /// Packs to repack (80 B each, within B/64).
    chosen: HashSet<FileId>,
}

/// Mark, account and choose against the index as last refreshed: everything but
/// writing. Stops at damage.
fn plan(repo: &Repository, opts: &PruneOptions, cancel: &AtomicBool) -> Result<Plan> {
    let budget = repo.budget().0;
    let sort_memory = budget / 16;
    let cancelled = || cancelled(cancel);
    if repo.index_incomplete() {
        return Err(Error::corrupt(
            "index",
            repo.backend().root().join("index").display(),
            "an index file is damaged (see above): prune stops before deleting anything; `cairn repair index` \
             indexes its packs again",
        ));
    }
    let mut stats = PruneStats::default();

    // Mark: the reachable set R, sorted.
    repo.meter().start("finding the blobs the snapshots use", Unit::Items, 0);
    let (mut reach, mark) = mark(repo, sort_memory, budget / 16, cancel)?;
    stats.snapshots = mark.snapshots;
    stats.sort_spills = mark.sort_spills;

    // Account: R against the index, in id order. The first record of an id met is the
    // copy a lookup finds: used if R holds the id. Every other record is unused. R is
    // copied to a file for the repack pass on the way.
    repo.meter().start("adding up used and unused bytes per pack", Unit::Items, 0);
    let mut reach_set = IdSet::writer().map_err(io_err)?;
    let mut next_r = next_id(&mut reach)?;
    let (mut missing, mut first_missing) = (0u64, Vec::new());
    let mut sums = PackSums::new(budget / 32, sort_memory);
    let mut note_missing = |id: [u8; 32], set: &mut crate::extsort::IdSetWriter| -> Result<()> {
        missing += 1;
        if first_missing.len() < 5 {
            first_missing.push(BlobId(id));
        }
        set.push(&id).map_err(io_err)
    };
    repo.index().for_each_record(&mut |r, first| {
        while let Some(x) = next_r.filter(|x| *x < r.id) {
            note_missing(x, &mut reach_set)?;
            next_r = next_id(&mut reach)?;
        }
        let used = first && next_r == Some(r.id);
        if used {
            reach_set.push(&r.id).map_err(io_err)?;
            next_r = next_id(&mut reach)?;
            stats.reachable_blobs += 1;
        }
        stats.index_entries += 1;
        stats.duplicate_entries += !first as u64;
        if stats.index_entries % (1 << 20) == 0 {
            cancelled()?;
            repo.meter().add(1 << 20);
        }
        let bytes = if used { r.stored_len() as u64 + PER_BLOB } else { 0 };
        sums.add(r.pack, Sum { used: bytes, used_blobs: used as u64, blobs: 1 }).map_err(io_err)
    })?;
    while let Some(x) = next_r {
        note_missing(x, &mut reach_set)?;
        next_r = next_id(&mut reach)?;
    }
    if missing > 0 {
        let names: Vec<String> = first_missing.iter().map(|b| b.to_hex()).collect();
        return Err(Error::corrupt(
            "index",
            repo.backend().root().join("index").display(),
            format!(
                "{missing} blobs the snapshots reference are in no index file (first: {}); prune stops before \
                 deleting anything (`cairn check` names the snapshots, `cairn repair index` re-reads the packs)",
                names.join(", ")
            ),
        ));
    }
    let reach_set = reach_set.finish().map_err(io_err)?;
    drop(reach);

    // Per-ordinal sums -> per-pack sums: the pack table is in ordinal order.
    stats.pack_sum_spills = sums.flushes as u64;
    let mut by_ordinal = SumsByKey::new(sums.finish().map_err(io_err)?, 4).map_err(io_err)?;
    let mut by_pack = NameSorter::new(sort_memory);
    let mut ordinal = 0u32;
    repo.index().for_each_pack(&mut |pack| {
        while by_ordinal.peek().is_some_and(|k| u32::from_be_bytes(k.try_into().expect("4 bytes")) < ordinal) {
            by_ordinal.next_sum().map_err(io_err)?; // past the table: the cache is damaged
        }
        if by_ordinal.peek() == Some(&ordinal.to_be_bytes()[..]) {
            let (_, s) = by_ordinal.next_sum().map_err(io_err)?.expect("peeked");
            let mut v = pack.0.to_vec();
            v.extend_from_slice(&ordinal.to_be_bytes());
            s.put(&mut v);
            by_pack.push(v).map_err(io_err)?;
        }
        ordinal += 1;
        Ok(())
    })?;
    drop(by_ordinal);

    // Per-pack sums against the listing of data/ (both in pack id order): each pack is
    // deleted (nothing used), kept, or a repack candidate (some unused). A pack the
    // index names with something used that is not listed is damage: stop.
    repo.meter().start("deciding which packs to delete and repack", Unit::Items, 0);
    let mut by_pack = SumsByKey::new(by_pack.finish().map_err(io_err)?, 32).map_err(io_err)?;
    let mut deleted = IdSet::writer().map_err(io_err)?;
    let mut used_packs = IdSet::writer().map_err(io_err)?;
    let mut candidates = NameSorter::new(sort_memory);
    let (mut missing_used, mut first_missing_pack) = (0u64, None);
    let mut unlisted = |id: Vec<u8>, s: Sum, stats: &mut PruneStats| {
        if s.used_blobs > 0 {
            missing_used += 1;
            first_missing_pack.get_or_insert(FileId(id32(&id)));
        } else {
            stats.missing_unused_packs += 1;
        }
    };
    repo.backend().for_each_pack(|id, size| {
        while by_pack.peek().is_some_and(|k| k < &id.0[..]) {
            let (k, s) = by_pack.next_sum().map_err(io_err)?.expect("peeked");
            unlisted(k, s, &mut stats);
        }
        let s = if by_pack.peek() == Some(&id.0[..]) {
            by_pack.next_sum().map_err(io_err)?.expect("peeked").1
        } else {
            Sum::default()
        };
        stats.packs += 1;
        stats.pack_bytes += size;
        if s.used_blobs == 0 {
            deleted.push(&id.0).map_err(io_err)?;
            stats.packs_deleted += 1;
            stats.deleted_bytes += size;
            stats.unindexed_packs += (s.blobs == 0) as u64;
            return Ok(());
        }
        used_packs.push(&id.0).map_err(io_err)?;
        stats.used_bytes += s.used;
        let unused = size.saturating_sub(PACK_FIXED + s.used);
        stats.unused_bytes += unused;
        if unused > 0 {
            // Highest unused share first: the most space back per byte rewritten.
            let share = ((unused as u128 * u64::MAX as u128) / size as u128) as u64;
            let mut v = (!share).to_be_bytes().to_vec();
            v.extend_from_slice(&id.0);
            v.extend_from_slice(&size.to_be_bytes());
            v.extend_from_slice(&unused.to_be_bytes());
            candidates.push(v).map_err(io_err)?;
        }
        Ok(())
    })?;
    while let Some((k, s)) = by_pack.next_sum().map_err(io_err)? {
        unlisted(k, s, &mut stats);
    }
    if let Some(p) = first_missing_pack {
        return Err(Error::corrupt(
            "pack",
            p,
            format!(
                "missing, with blobs the snapshots use ({missing_used} such packs in all); prune stops before \
                 deleting anything (`cairn repair index`, then `cairn repair snapshots`)"
            ),
        ));
    }
    let deleted = deleted.finish().map_err(io_err)?;
    let used_packs = used_packs.finish().map_err(io_err)?;

    // Choose the packs to repack, until the unused bytes left are within the limit.
    // 80 B per chosen pack; past its share of the budget the rest wait.
    let limit = opts.max_unused.limit(stats.used_bytes);
    let chosen_cap = (budget / 64 / 80).max(1);
    let mut chosen: HashSet<FileId> = HashSet::new();
    let mut unused_left = stats.unused_bytes;
    let mut candidates = candidates.finish().map_err(io_err)?;
    while let Some(c) = candidates.next_name().map_err(io_err)? {
        if unused_left <= limit {
            break;
        }
        let id = FileId(id32(&c[8..40]));
        let size = u64::from_be_bytes(c[40..48].try_into().expect("8 bytes"));
        let unused = u64::from_be_bytes(c[48..56].try_into().expect("8 bytes"));
        if opts.max_repack_size.is_some_and(|m| stats.repacked_bytes + size > m) || chosen.len() >= chosen_cap {
            stats.repack_deferred += 1;
            continue;
        }
        chosen.insert(id);
        stats.packs_repacked += 1;
        stats.repacked_bytes += size;
        unused_left -= unused;
    }
    drop(candidates);
    stats.unused_after = unused_left;
    let repacked_used = stats.repacked_bytes - (stats.unused_bytes - unused_left);
    stats.bytes_after = stats.pack_bytes - stats.deleted_bytes - (stats.unused_bytes - unused_left);
    stats.estimated_seconds = (stats.repacked_bytes + repacked_used) as f64 / REPACK_RATE
        + (stats.packs_deleted + stats.packs_repacked) as f64 * DELETE_SECONDS;
    Ok(Plan { stats, reach: reach_set, deleted, used_packs, chosen })
}

/// Repack, rewrite the index files, delete, update the cache: in that order, so that a
/// crash at any point leaves extra packs and index entries, never a missing one.
fn execute(repo: &Repository, plan: Plan, guard: &LockGuard, cancel: &AtomicBool) -> Result<PruneStats> {
    let Plan { mut stats, reach: reach_set, deleted, used_packs, chosen } = plan;
    let sort_memory = repo.budget().0 / 16;
    let cancelled = || cancelled(cancel);
    cancelled()?;

    // Repack: the used blobs of the chosen packs, found by a second pass over the index
    // (the same rule: first record of an id in R), sorted by pack and offset, copied
    // sealed as they are after a full check (authentication, decompression, id), so a
    // blob damaged on the way is never the only copy left.
    let pack_count = repo.index().pack_count();
    let index_files_before: HashSet<FileId> = repo.backend().list(Dir::Index)?.into_iter().collect();
    if !chosen.is_empty() {
        repo.meter().start("repacking used blobs", Unit::Items, 0);
        let mut chosen_ordinals: HashMap<u32, FileId> = HashMap::new();
        let mut ordinal = 0u32;
        repo.index().for_each_pack(&mut |p| {
            if chosen.contains(&p) {
                chosen_ordinals.insert(ordinal, p);
            }
            ordinal += 1;
            Ok(())
        })?;
        let mut copies = NameSorter::new(sort_memory);
        repo.index().for_each_record(&mut |r, first| {
            let Some(pack) = chosen_ordinals.get(&r.pack) else { return Ok(()) };
            if !first || !reach_set.contains(&r.id).map_err(io_err)? {
                return Ok(());
            }
            let mut v = pack.0.to_vec();
            v.extend_from_slice(&r.offset.to_be_bytes());
            v.extend_from_slice(&r.id);
            v.extend_from_slice(&r.stored.to_be_bytes());
            v.extend_from_slice(&r.raw_len.to_be_bytes());
            copies.push(v).map_err(io_err)
        })?;
        drop(chosen_ordinals);
        let mut copies = copies.finish().map_err(io_err)?;
        let mut packer = Packer::new(repo);
        let mut scratch = Vec::new();
        let mut plain = Vec::new();
        while let Some(c) = copies.next_name().map_err(io_err)? {
            let u = |i: usize| u32::from_be_bytes(c[i..i + 4].try_into().expect("4 bytes"));
            let rec = Record { id: id32(&c[36..68]), pack: 0, offset: u(32), stored: u(68), raw_len: u(72) };
            let id = BlobId(rec.id);
            let compression = rec
                .compression()
                .ok_or_else(|| Error::corrupt("index cache", repo.index().dir().display(), "bad compression bits"))?;
            let loc = Location {
                pack: FileId(id32(&c)),
                offset: rec.offset,
                stored_len: rec.stored_len(),
                raw_len: rec.raw_len,
                kind: rec.kind(),
                compression,
            };
            let bytes = repo.read_sealed_blob(&loc)?;
            scratch.clear();
            scratch.extend_from_slice(&bytes);
            repo.open_blob_into(&id, loc.kind, &loc, &mut scratch, &mut plain).map_err(|e| {
                Error::corrupt(
                    "pack",
                    loc.pack,
                    format!("{e}; prune stops before deleting anything (`cairn check --read-data` tells more)"),
                )
            })?;
            packer.add(SealedBlob { id, kind: loc.kind, compression, raw_len: loc.raw_len, bytes })?;
            stats.blobs_repacked += 1;
            if stats.blobs_repacked % 4096 == 0 {
                cancelled()?;
                repo.meter().add(4096);
            }
        }
        stats.repack_written = packer.finish()?.bytes;
    }
    drop(reach_set);

    // The packs that stay: used ones not repacked. Index files keep only their entries
    // (and the files the repack wrote, which name only new packs).
    let mut kept = IdSet::writer().map_err(io_err)?;
    for id in used_packs.iter() {
        let id = id.map_err(io_err)?;
        if !chosen.contains(&FileId(id)) {
            kept.push(&id).map_err(io_err)?;
        }
    }
    let kept = kept.finish().map_err(io_err)?;
    drop(used_packs);
    let new_files: HashSet<FileId> =
        repo.backend().list(Dir::Index)?.into_iter().filter(|f| !index_files_before.contains(f)).collect();
    drop(index_files_before);
    cancelled()?;
    // Past here things are removed: only while this lock still holds.
    guard.check()?;
    // Index files name only packs that stay unless some pack goes (deleted, repacked,
    // or named but missing): otherwise there is nothing to rewrite, and no file is read.
    let rewritten = if stats.packs_deleted + stats.packs_repacked + stats.missing_unused_packs == 0 {
        Default::default()
    } else {
        repo.meter().start("rewriting index files", Unit::Items, 0);
        let mut keep = |p: &FileId| kept.contains(&p.0).map_err(io_err);
        repo.rewrite_index_files(&new_files, false, &mut keep, &mut |_| {})?
    };
    stats.index_files_rewritten = rewritten.files;
    stats.index_entries_dropped = rewritten.entries_dropped;

    // Only now, with no index file naming them, the packs go.
    repo.meter().start("deleting packs", Unit::Items, stats.packs_deleted + stats.packs_repacked);
    let remove = |id: &FileId| -> Result<()> {
        repo.backend().remove(Dir::Data, id)?;
        repo.meter().add(1);
        Ok(())
    };
    for id in deleted.iter() {
        remove(&FileId(id.map_err(io_err)?))?;
    }
    for id in &chosen {
        remove(id)?;
    }

    // The local cache: the runs lose the gone packs' records, the manifest the removed
    // index files; the rewritten ones hold nothing the runs lack. (If this fails, the
    // next command finds removed files and rebuilds.)
    if stats.packs_deleted + stats.packs_repacked + stats.missing_unused_packs == 0 {
        return Ok(stats); // nothing went: the cache holds exactly what it did
    }
    repo.meter().start("updating the local index cache", Unit::Items, 0);
    let mut gone = vec![0u64; (pack_count as usize).div_ceil(64)]; // 1 bit per pack ordinal
    let mut ordinal = 0u32;
    repo.index().for_each_pack(&mut |p| {
        if ordinal < pack_count && !kept.contains(&p.0).map_err(io_err)? {
            gone[ordinal as usize / 64] |= 1 << (ordinal % 64);
        }
        ordinal += 1;
        Ok(())
    })?;
    let removed_files: HashSet<FileId> = rewritten.removed.into_iter().collect();
    let mut added = Vec::with_capacity(rewritten.added.len());
    for f in &rewritten.added {
        added.push((*f, repo.backend().stamp(Dir::Index, f)?));
    }
    let is_gone = |o: u32| o < pack_count && gone[o as usize / 64] & (1 << (o % 64)) != 0;
    if repo.index().forget_packs(&is_gone, &removed_files, &added).is_err() {
        repo.index().clear()?;
    }
    let _ = repo.index().journal_clear();
    Ok(stats)
}
