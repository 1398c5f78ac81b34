//! `stats`: how big snapshots are, three ways (restic's modes).
//!
//! - `restore-size`: files and bytes a restore of each snapshot would write, summed.
//!   A directory's totals are remembered by its tree id (an LRU, ~96 B each): met again,
//!   in the same snapshot or a later one, its totals are added without reading it, so
//!   a hundred snapshots of a slowly changing tree cost little more than one.
//! - `files-by-contents`: distinct file contents (equal chunk lists count once) and
//!   their bytes.
//! - `raw-data`: the distinct data blobs the snapshots use, as stored (compressed and
//!   sealed) and uncompressed, and so the compression ratio.
//!
//! The two distinct-counting modes push one record per file content (40 B) or per
//! chunk (32 B) into an external sort ([`NameSorter`], a share of the budget in RAM,
//! the rest spilled to temp files), which drops repeats. A directory already walked
//! (by tree id, an LRU) is skipped: everything under it is in the sort already.
//!
//! Memory: the sort's share, the LRU (a 64th of the budget), one tree node per level.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, IoContext, Result};
use crate::extsort::NameSorter;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Content, Kind};
use crate::id::BlobId;
use crate::repo::Repository;
use crate::tree::{ChunkIter, Step, Walk};

/// What to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Files and bytes a restore writes.
    RestoreSize,
    /// Distinct file contents.
    FilesByContents,
    /// Distinct data blobs, stored and uncompressed.
    RawData,
}

impl Mode {
    /// Parse restic's mode names.
    pub fn parse(s: &str) -> std::result::Result<Mode, String> {
        match s {
            "restore-size" => Ok(Mode::RestoreSize),
            "files-by-contents" => Ok(Mode::FilesByContents),
            "raw-data" => Ok(Mode::RawData),
            _ => Err(format!("{s}: unknown mode (use restore-size, files-by-contents or raw-data)")),
        }
    }
}

/// The counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct StatsResult {
    /// Snapshots counted.
    pub snapshots_count: u64,
    /// Files (restore-size: every file of every snapshot; files-by-contents: distinct
    /// contents).
    pub total_file_count: u64,
    /// Bytes: of those files, or (raw-data) of the distinct blobs as stored.
    pub total_size: u64,
    /// raw-data: distinct data blobs.
    pub total_blob_count: u64,
    /// raw-data: their bytes before compression.
    pub total_uncompressed_size: u64,
    /// raw-data: uncompressed bytes per stored byte.
    pub compression_ratio: f64,
    /// Directories whose counts came from an earlier walk of the same tree.
    pub dirs_reused: u64,
    /// Directories that could not be read (reported; their contents are not counted).
    pub errors: u64,
}

/// One level of a walk: its tree, (restore-size) its totals so far, and whether
/// something under it could not be read (then its totals are not remembered).
struct Level {
    tree: BlobId,
    files: u64,
    bytes: u64,
    tainted: bool,
}

impl Level {
    fn new(tree: BlobId) -> Level {
        Level { tree, files: 0, bytes: 0, tainted: false }
    }
}

/// Counts snapshot after snapshot.
pub struct Stats<'r> {
    repo: &'r Repository,
    mode: Mode,
    sorter: NameSorter,
    /// restore-size: tree id -> (files, bytes) under it; the other modes: trees walked.
    trees: lru::LruCache<BlobId, (u64, u64)>,
    result: StatsResult,
}

impl<'r> Stats<'r> {
    /// Start counting in `mode`.
    pub fn new(repo: &'r Repository, mode: Mode) -> Stats<'r> {
        let budget = repo.budget();
        Stats {
            repo,
            mode,
            sorter: NameSorter::new(budget.sort_bytes()),
            trees: crate::budget::lru_within(budget.0 / 64),
            result: StatsResult::default(),
        }
    }

    /// Count snapshot `snap`; damage goes to `damaged` (with the tree that failed).
    pub fn add(
        &mut self,
        snap: &Snapshot,
        cancel: &AtomicBool,
        damaged: &mut dyn FnMut(&BlobId, &Error),
    ) -> Result<()> {
        self.result.snapshots_count += 1;
        let root = snap.root;
        if let Some(&(files, bytes)) = self.trees.get(&root) {
            self.result.dirs_reused += 1;
            self.add_totals(files, bytes);
            return Ok(());
        }
        let tmp = std::env::temp_dir();
        let mut walk = Walk::new(self.repo, &root, Level::new(root));
        while let Some(step) = walk.next() {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            match step {
                Step::Entry(e) => {
                    let mode = self.mode;
                    match &e.kind {
                        Kind::Dir(sub) => {
                            if let Some(&(files, bytes)) = self.trees.get(sub) {
                                self.result.dirs_reused += 1;
                                if let Some(level) = walk.top() {
                                    level.files = level.files.saturating_add(files);
                                    level.bytes = level.bytes.saturating_add(bytes);
                                }
                            } else {
                                walk.enter(sub, Level::new(*sub));
                            }
                        }
                        Kind::File(c) => match mode {
                            Mode::RestoreSize => {
                                if let Some(level) = walk.top() {
                                    level.files = level.files.saturating_add(1);
                                    level.bytes = level.bytes.saturating_add(e.size);
                                }
                            }
                            Mode::FilesByContents => {
                                let mut key = content_key(c).to_vec();
                                key.extend_from_slice(&e.size.to_be_bytes());
                                self.sorter.push(key).at(&tmp)?;
                            }
                            Mode::RawData => {
                                let r = (|| -> Result<()> {
                                    let mut chunks = ChunkIter::new(self.repo, c)?;
                                    while let Some(c) = chunks.next_chunk()? {
                                        self.sorter.push(c.id.0.to_vec()).at(&tmp)?;
                                    }
                                    Ok(())
                                })();
                                // A damaged chunk list is reported and counted, as a
                                // damaged directory is; the rest is still counted.
                                if let Err(err) = r {
                                    self.result.errors += 1;
                                    if let Some(level) = walk.top() {
                                        level.tainted = true;
                                        damaged(&level.tree, &err);
                                    }
                                }
                            }
                        },
                        _ => {}
                    }
                }
                Step::Leave(level) => {
                    // Partial totals are never reused for another snapshot.
                    if !level.tainted {
                        self.trees.put(level.tree, (level.files, level.bytes));
                    }
                    match walk.top() {
                        Some(parent) => {
                            parent.files = parent.files.saturating_add(level.files);
                            parent.bytes = parent.bytes.saturating_add(level.bytes);
                            parent.tainted |= level.tainted;
                        }
                        None => self.add_totals(level.files, level.bytes),
                    }
                }
                Step::Failed(level, err) => {
                    self.result.errors += 1;
                    damaged(&level.tree, &err);
                    if let Some(parent) = walk.top() {
                        parent.tainted = true;
                    }
                }
                Step::Skipped(..) => {}
            }
        }
        Ok(())
    }

    fn add_totals(&mut self, files: u64, bytes: u64) {
        if self.mode == Mode::RestoreSize {
            self.result.total_file_count = self.result.total_file_count.saturating_add(files);
            self.result.total_size = self.result.total_size.saturating_add(bytes);
        }
    }

    /// The counts; the distinct-counting modes read their sort back (raw-data looks up
    /// each blob in the index).
    pub fn finish(mut self) -> Result<StatsResult> {
        let tmp = std::env::temp_dir();
        let mut sorted = self.sorter.finish().at(&tmp)?;
        match self.mode {
            Mode::RestoreSize => {}
            Mode::FilesByContents => {
                while let Some(k) = sorted.next_name().at(&tmp)? {
                    let size = k.get(32..40).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
                    self.result.total_file_count = self.result.total_file_count.saturating_add(1);
                    self.result.total_size = self.result.total_size.saturating_add(size);
                }
            }
            Mode::RawData => {
                while let Some(k) = sorted.next_name().at(&tmp)? {
                    let id =
                        BlobId(k.as_slice().try_into().map_err(|_| Error::InvalidInput("bad sort record".into()))?);
                    let loc = self.repo.index().try_get(&id)?.ok_or_else(|| Error::NotFound {
                        what: "data blob",
                        id: format!("{} (used by a snapshot, in no index file)", id.to_hex()),
                    })?;
                    self.result.total_blob_count += 1;
                    self.result.total_size = self.result.total_size.saturating_add(loc.stored_len as u64);
                    self.result.total_uncompressed_size =
                        self.result.total_uncompressed_size.saturating_add(loc.raw_len as u64);
                }
                if self.result.total_size > 0 {
                    self.result.compression_ratio =
                        self.result.total_uncompressed_size as f64 / self.result.total_size as f64;
                }
            }
        }
        Ok(self.result)
    }
}

/// 32 bytes naming a file's content: the chunk list's tree id, or a hash of an inline
/// list's chunk ids (equal lists, equal keys).
fn content_key(c: &Content) -> [u8; 32] {
    match c {
        Content::List(id) => id.0,
        Content::Inline(chunks) => {
            let mut h = blake3::Hasher::new();
            for c in chunks {
                h.update(&c.id.0);
            }
            *h.finalize().as_bytes()
        }
    }
}
