//! `prune` (docs/design.md, "Prune"), being built: so far the mark phase, which finds
//! every blob the snapshots reference, exactly and in bounded memory.
//!
//! Memory: the ids go into an external sort ([`crate::extsort`]) holding `sort_memory`
//! of them in RAM (64 B charged each); subtrees walked whole are remembered in an LRU of
//! `done_memory` (~96 B per node), so a directory shared by many snapshots is read once
//! while it stays there; one decoded node's children per level of the walk.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::backend::Dir;
use crate::error::{Error, IoContext, Result};
use crate::extsort::{NameSorter, SortedNames};
use crate::repo::Repository;

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
