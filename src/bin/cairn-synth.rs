//! Makes a synthetic repository for prune benchmarks (scripts/bench, section
//! `prune-scale`): N distinct tiny data blobs in real packs, and two snapshots that share
//! part of them, written through cairn's own code paths so that `cairn check --read-data`
//! passes and `prune` sees what a real repository of N blobs looks like.
//!
//! ```text
//! cairn-synth --repo DIR --blobs N [--keep-fraction F] [--memory 256M] [--cache-dir DIR]
//! ```
//!
//! Password from CAIRN_PASSWORD. The repository is created (`Repository::init`, with the
//! cheap KDF of the hidden `--insecure-test-kdf`); DIR must not hold one.
//!
//! - Blob i (0 <= i < N) is a 16-byte data chunk: i (u64 LE) and a salt drawn once per
//!   run; its id is the repository's keyed hash of it (`Keys::blob_id`), sealed by
//!   `Repository::seal_blob` and stored by the real `Packer` (packs, index files, the
//!   local index cache), uncompressed.
//! - File k holds blobs [1000k, 1000k + 1000) (the last one fewer): a regular file entry
//!   whose chunk list is written by `tree::ListWriter` (list leaf and interior nodes, as
//!   backup writes them), of size 16 x its chunks. Files are grouped 1000 to a directory
//!   (`tree::DirWriter`), the directories under `/synth`, the snapshot root holds `synth`.
//! - Snapshot A holds files [0, F x files), snapshot B files [(1 - F) x files, files)
//!   (F = `--keep-fraction`, default 0.6): with N blobs, A references [0, 0.6N) and B
//!   [0.4N, N). Directories A and B list identically are the same tree blobs, stored
//!   once (tree ids are claimed in the index before storing, as backup does). After
//!   `cairn forget A`, the packs holding only A's blobs go and the mixed ones are
//!   repacked or kept.
//!
//! Bounded memory: nothing holds the N ids; blobs stream through a bounded queue to a
//! second thread that owns the packer (this thread makes ids, trees and seals). The index
//! cache takes `--memory` (default 256M) like any cairn command; `--cache-dir` puts it
//! where the CLI will look (`$XDG_CACHE_HOME/cairn`), else it is a private temp one that
//! the next command rebuilds from the index files.
//!
//! Prints one JSON line: the two snapshot ids, counts, bytes and the elapsed time.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::Instant;

use cairn::budget::Budget;
use cairn::crypto::KdfParams;
use cairn::format::snapshot::{Snapshot, Summary, XattrClasses};
use cairn::format::tree::{ChunkRef, Entry, Kind, Time};
use cairn::format::BlobKind;
use cairn::id::BlobId;
use cairn::repo::packer::Packer;
use cairn::repo::{InitOptions, OpenOptions, Repository, SealedBlob};
use cairn::tree::{DirWriter, ListWriter, TreeSink};

/// Chunks per file (the last file may have fewer).
const CHUNKS_PER_FILE: u64 = 1000;
/// Files per directory.
const FILES_PER_DIR: u64 = 1000;
/// Bytes of each data blob: its number and the run's salt.
const BLOB_LEN: u32 = 16;
/// Sealed blobs per batch sent to the packer thread, and batches queued.
const BATCH: usize = 4096;
const QUEUE: usize = 8;

/// The tree sink, and where every blob goes on its way to the packer thread.
struct Gen<'r> {
    repo: &'r Repository,
    tx: SyncSender<Vec<SealedBlob>>,
    batch: Vec<SealedBlob>,
    trees: u64,
    trees_shared: u64,
    tree_bytes: u64,
}

impl Gen<'_> {
    fn send(&mut self, b: SealedBlob) -> cairn::Result<()> {
        self.batch.push(b);
        if self.batch.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> cairn::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let b = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        self.tx.send(b).map_err(|_| cairn::Error::InvalidInput("the packer thread stopped (see its error)".into()))
    }
}

impl TreeSink for Gen<'_> {
    fn store_tree(&mut self, node: &[u8]) -> cairn::Result<BlobId> {
        let id = self.repo.keys().blob_id(BlobKind::Tree, node);
        // The dedup decision backup makes: a directory A and B list alike is stored once.
        if self.repo.index().claim(&id) {
            self.trees += 1;
            self.tree_bytes += node.len() as u64;
            let b = self.repo.seal_blob(BlobKind::Tree, id, node, None);
            self.send(b)?;
        } else {
            self.trees_shared += 1;
        }
        Ok(id)
    }
}

fn entry(name: String, kind: Kind, size: u64, ino: u64, mode: u32, t: Time) -> Entry {
    Entry {
        name: name.into_bytes(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        user: b"root".to_vec(),
        group: b"root".to_vec(),
        size,
        mtime: t,
        ctime: t,
        atime: t,
        dev: 1,
        ino,
        nlink: 1,
        xattrs: Vec::new(),
    }
}

/// One snapshot's directory writers: the current directory's (if the snapshot has files
/// in it) and `/synth`'s.
struct Side {
    lo: u64,
    hi: u64,
    dir: Option<DirWriter>,
    synth: DirWriter,
    files: u64,
    dirs: u64,
    bytes: u64,
}

impl Side {
    fn new(lo: u64, hi: u64) -> Side {
        Side { lo, hi, dir: None, synth: DirWriter::new(), files: 0, dirs: 0, bytes: 0 }
    }

    fn close_dir(&mut self, d: u64, t: Time, g: &mut Gen) -> cairn::Result<()> {
        if let Some(w) = self.dir.take() {
            let root = w.finish(g)?;
            self.synth.push(&entry(format!("d{d:07}"), Kind::Dir(root), 0, 1_000_000_000 + d, 0o755, t), g)?;
            self.dirs += 1;
        }
        Ok(())
    }

    /// Close `/synth` and the snapshot root; returns the root tree.
    fn finish(mut self, last_dir: u64, t: Time, g: &mut Gen) -> cairn::Result<(BlobId, Side)> {
        self.close_dir(last_dir, t, g)?;
        let synth = std::mem::take(&mut self.synth).finish(g)?;
        let mut top = DirWriter::new();
        top.push(&entry("synth".into(), Kind::Dir(synth), 0, 2, 0o755, t), g)?;
        Ok((top.finish(g)?, self))
    }
}

fn usage() -> ! {
    eprintln!("usage: cairn-synth --repo DIR --blobs N [--keep-fraction F] [--memory 256M] [--cache-dir DIR]");
    std::process::exit(2)
}

fn main() {
    cairn::sys::bound_allocator();
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let repo_dir = PathBuf::from(get("--repo").unwrap_or_else(|| usage()));
    let blobs = get("--blobs").and_then(|v| v.parse::<f64>().ok()).map_or_else(|| usage(), |v| v as u64);
    let keep: f64 = get("--keep-fraction").map_or(0.6, |v| v.parse().unwrap_or_else(|_| usage()));
    if blobs == 0 || !(0.0..=1.0).contains(&keep) {
        usage();
    }
    let budget = Budget::parse(&get("--memory").unwrap_or_else(|| "256M".into())).unwrap_or_else(|e| {
        eprintln!("cairn-synth: --memory {e}");
        std::process::exit(2)
    });
    let password = std::env::var("CAIRN_PASSWORD").unwrap_or_else(|_| {
        eprintln!("cairn-synth: set CAIRN_PASSWORD");
        std::process::exit(2)
    });
    if let Err(e) = run(&repo_dir, blobs, keep, budget, get("--cache-dir").map(PathBuf::from), password.as_bytes()) {
        eprintln!("cairn-synth: {e}");
        std::process::exit(1);
    }
}

fn run(
    repo_dir: &std::path::Path,
    blobs: u64,
    keep: f64,
    budget: Budget,
    cache_dir: Option<PathBuf>,
    password: &[u8],
) -> cairn::Result<()> {
    let start = Instant::now();
    let init = InitOptions { kdf: KdfParams::INSECURE_FOR_TESTS, ..InitOptions::default() };
    Repository::init(repo_dir, password, &init)?;
    let repo = Repository::open_with(repo_dir, password, &OpenOptions { cache_dir, budget, ..Default::default() })?;
    let repo = &repo;
    let mut salt = [0u8; 8];
    cairn::crypto::random_bytes(&mut salt);

    let files = blobs.div_ceil(CHUNKS_PER_FILE);
    let a_hi = ((files as f64 * keep).round() as u64).min(files);
    let b_lo = files - a_hi;
    let now_s = cairn::repo::now_secs();
    let t = Time { sec: now_s - 86_400, nsec: 0 };

    let (tx, rx) = sync_channel::<Vec<SealedBlob>>(QUEUE);
    let (made, packed) = std::thread::scope(|s| {
        let packer = s.spawn(move || -> cairn::Result<_> {
            let mut p = Packer::new(repo);
            for batch in rx {
                for b in batch {
                    p.add(b)?;
                }
            }
            p.finish()
        });
        let made = (|| -> cairn::Result<_> {
            let mut g = Gen { repo, tx, batch: Vec::with_capacity(BATCH), trees: 0, trees_shared: 0, tree_bytes: 0 };
            let mut sides = [Side::new(0, a_hi), Side::new(b_lo, files)];
            let mut content = [0u8; BLOB_LEN as usize];
            content[8..].copy_from_slice(&salt);
            for k in 0..files {
                let d = k / FILES_PER_DIR;
                if k > 0 && k % FILES_PER_DIR == 0 {
                    for side in &mut sides {
                        side.close_dir(d - 1, t, &mut g)?;
                    }
                }
                let mut list = ListWriter::new();
                for i in k * CHUNKS_PER_FILE..((k + 1) * CHUNKS_PER_FILE).min(blobs) {
                    content[..8].copy_from_slice(&i.to_le_bytes());
                    let id = repo.keys().blob_id(BlobKind::Data, &content);
                    let b = repo.seal_blob(BlobKind::Data, id, &content, None);
                    g.send(b)?;
                    list.push(ChunkRef { id, size: BLOB_LEN }, &mut g)?;
                }
                let size = list.bytes;
                let c = list.finish(&mut g)?;
                let e = entry(format!("f{k:09}"), Kind::File(c), size, 1 + k, 0o644, t);
                for side in &mut sides {
                    if (side.lo..side.hi).contains(&k) {
                        side.dir.get_or_insert_with(DirWriter::new).push(&e, &mut g)?;
                        side.files += 1;
                        side.bytes += size;
                    }
                }
            }
            let last = files.saturating_sub(1) / FILES_PER_DIR;
            let [a, b] = sides;
            let a = a.finish(last, t, &mut g)?;
            let b = b.finish(last, t, &mut g)?;
            g.flush()?;
            Ok((a, b, g.trees, g.trees_shared, g.tree_bytes))
            // g (and the queue's sender) dropped here: the packer thread finishes.
        })();
        let packed = packer.join().unwrap_or_else(|_| Err(cairn::Error::InvalidInput("packer panicked".into())));
        (made, packed)
    });
    let stats = packed?;
    let ((a_root, a), (b_root, b), trees, trees_shared, tree_bytes) = made?;
    let peak_rss = cairn::sys::peak_rss();
    let mut ids = Vec::new();
    for (i, (root, side)) in [(a_root, &a), (b_root, &b)].into_iter().enumerate() {
        let snap = Snapshot {
            // A a day old, B now: `latest` is B.
            time_ns: (now_s - 86_400 * (1 - i as i64)) * 1_000_000_000,
            host: "synth".into(),
            user: "root".into(),
            paths: vec![PathBuf::from("/synth")],
            tags: vec![if i == 0 { "synth-a" } else { "synth-b" }.into()],
            parent: ids.last().copied(),
            root,
            program: format!("cairn-synth {}", env!("CARGO_PKG_VERSION")),
            summary: Summary {
                files_new: side.files,
                dirs: side.dirs + 2,
                total_bytes: side.bytes,
                blobs_added: if i == 0 { stats.blobs } else { 0 },
                bytes_added: if i == 0 { stats.bytes } else { 0 },
                duration_ms: start.elapsed().as_millis() as u64,
                peak_rss,
                ..Summary::default()
            },
            xattrs: Some(XattrClasses::NONE),
            xattr_names: Some(Vec::new()),
        };
        ids.push(repo.save_snapshot(&snap)?);
    }
    // As backup does: keep the entries in the local cache for the next command.
    let _ = repo.index().spill();
    let blob_range = |s: &Side| (s.lo * CHUNKS_PER_FILE, (s.hi * CHUNKS_PER_FILE).min(blobs));
    let (a_range, b_range) = (blob_range(&a), blob_range(&b));
    println!(
        "{}",
        serde_json::json!({
            "repo": repo_dir,
            "blobs": blobs,
            "files": files,
            "snapshot_a": ids[0].to_hex(),
            "snapshot_b": ids[1].to_hex(),
            "a_blobs": [a_range.0, a_range.1],
            "b_blobs": [b_range.0, b_range.1],
            "a_files": a.files,
            "b_files": b.files,
            "tree_blobs": trees,
            "tree_blobs_shared": trees_shared,
            "tree_bytes": tree_bytes,
            "blobs_stored": stats.blobs,
            "packs": stats.packs,
            "index_files": stats.index_files,
            "pack_bytes": stats.bytes,
            "elapsed_s": start.elapsed().as_secs_f64(),
            "peak_rss_kib": cairn::sys::peak_rss() / 1024,
        })
    );
    Ok(())
}
