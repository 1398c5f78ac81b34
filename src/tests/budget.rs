//! The memory budget: a tiny one forces the index to spill and merge many runs, and
//! deduplication must stay exact (never lossy, never storing a blob twice); the index's
//! RAM stays within its shares of the budget while a backup runs and after it.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::*;
use crate::backend::Dir;
use crate::budget::Budget;
use crate::format::index::{IndexEntry, Location};
use crate::format::{BlobKind, Compression, FileKind};
use crate::id::FileId;
use crate::index::{IndexOptions, RamParts};
use crate::repo::OpenOptions;
use crate::testutil::{bytes, cheap_options, write, PASSWORD};

/// (index entries over all index files, distinct blob ids, distinct data blob ids).
/// Tree blobs are not compared across repositories: the snapshot root holds /tmp's own
/// metadata, which concurrent tests change.
fn stored(repo: &Repository) -> (usize, usize, usize) {
    let mut ids = HashSet::new();
    let mut data = HashSet::new();
    let mut entries = 0;
    for ix in repo.backend().list(Dir::Index).unwrap() {
        for e in repo.read_index_file(&ix).unwrap() {
            entries += 1;
            ids.insert(e.id);
            if e.loc.kind == crate::format::BlobKind::Data {
                data.insert(e.id);
            }
        }
    }
    (entries, ids.len(), data.len())
}

fn make_source(root: &Path) {
    // 12 MB in 3,000 chunks first (below the 4 KiB minimum chunk: one each, whatever the
    // repository's chunker seed), three index files of ~1,000 entries (four 1 MiB packs
    // each) that the memtable share of the tiny budget (80 KiB) cannot hold together: it
    // spills while the backup runs.
    for i in 0..3000u64 {
        write(&root.join(format!("big/b{i:04}")), &bytes(10_000 + i, 4000, false));
    }
    for i in 0..2500u64 {
        // One file in four repeats an earlier one: dedup decisions across spills.
        let seed = if i % 4 == 3 { i / 2 } else { i };
        write(&root.join(format!("d{}/f{i}", i % 17)), &bytes(seed, 300 + (seed as usize * 37) % 3000, seed % 3 == 0));
    }
}

/// Runs the index cache has written so far (spills and merges): run files are numbered
/// in order, and the manifest names the next number.
fn runs_written(repo: &Repository) -> u64 {
    let mut last = 0;
    for e in std::fs::read_dir(repo.index().dir()).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if let Some(seq) = name.strip_prefix("run-").and_then(|s| s.parse::<u64>().ok()) {
            last = last.max(seq);
        }
    }
    last
}

#[test]
fn tiny_budget_spills_and_dedup_stays_exact() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_source(&src);
    let mut results = vec![];
    let mut summaries = vec![];
    for (name, budget) in [("tiny", Budget(1 << 20)), ("large", Budget(256 << 20))] {
        let path = t.path().join(name);
        Repository::init(&path, PASSWORD, &cheap_options()).unwrap();
        let opts =
            OpenOptions { cache_dir: Some(t.path().join(format!("cache-{name}"))), budget, ..Default::default() };
        let repo = Repository::open_with(&path, PASSWORD, &opts).unwrap();
        let r1 = do_backup(&repo, &[&src]);
        // The first backup into an empty repository added exactly what the index holds.
        // (Not compared across the two repositories: the tree blobs are not the same
        // count in both, since directories split into nodes at boundaries drawn from
        // ids keyed per repository.)
        let (first_entries, _, _) = stored(&repo);
        assert_eq!(r1.snapshot.summary.blobs_added, first_entries as u64, "{name}: blobs added vs indexed");
        // Every backup ends with a spill, so one run proves nothing: the tiny budget
        // must have spilled while the backup ran (and merged), the large one only at the
        // end.
        let written = runs_written(&repo);
        if name == "tiny" {
            assert!(written >= 3, "the tiny budget wrote {written} runs: it never spilled mid-backup");
        } else {
            assert_eq!(written, 1, "the large budget spilled before the end");
        }
        drop(repo);
        // Reopen (the runs on disk are the index now), change a little, back up again.
        // Below the tests' 4 KiB minimum chunk, like every file here: one chunk per file
        // whatever the repository's random chunker seed. (It was 5000 bytes, which a
        // seed cut into two chunks now and then: one data blob more in one repository.)
        write(&src.join("new-file"), &bytes(999_999, 4000, false));
        let repo = Repository::open_with(&path, PASSWORD, &opts).unwrap();
        let r2 = do_backup(&repo, &[&src]);
        std::fs::remove_file(src.join("new-file")).unwrap();
        let (entries, distinct, data) = stored(&repo);
        assert_eq!(entries, distinct, "{name}: a blob was stored twice");
        let out = t.path().join(format!("out-{name}"));
        let (stats, msgs) = do_restore(&repo, &r2, &out, &[]);
        assert_eq!(stats.errors, 0, "{msgs:?}");
        assert_eq!(stats.files, 5501);
        let (cs, msgs) = do_check(&repo, true);
        assert_eq!(cs.errors, 0, "{msgs:?}");
        results.push((data, r2.snapshot.summary.files_unchanged));
        summaries.push(format!("{name}: r1 {:?} r2 {:?}", r1.snapshot.summary, r2.snapshot.summary));
    }
    // The same data gives the same number of distinct data blobs whatever the budget.
    assert_eq!(results[0].0, results[1].0, "tiny vs large budget: {results:?}\n{summaries:#?}");
    assert_eq!(results[0].1, 5500);
    assert_eq!(results[1].1, 5500);
}

/// Add `n` synthetic entries to `repo` as index files of `per_file` entries, as
/// `cairn-indexbench --inject-repo` does: random ids no chunk matches, in packs that do
/// not exist. A large index without storing its chunks.
fn inject(repo: &Repository, n: u64, per_file: u64) {
    let entry = |i: u64| {
        let id = |x: u64, salt: u64| *blake3::hash(&[x.to_le_bytes(), salt.to_le_bytes()].concat()).as_bytes();
        IndexEntry {
            id: crate::id::BlobId(id(i, 1)),
            loc: Location {
                pack: FileId(id(i / 1000, 2)),
                offset: 9,
                stored_len: 1000,
                raw_len: 900,
                kind: BlobKind::Data,
                compression: Compression::Zstd,
            },
        }
    };
    let mut i = 0;
    while i < n {
        let hi = (i + per_file).min(n);
        let mut batch: Vec<IndexEntry> = (i..hi).map(entry).collect();
        let payload = crate::format::index::encode(&mut batch);
        repo.write_sealed_file(FileKind::Index, Dir::Index, &payload).unwrap();
        i = hi;
    }
}

/// The largest of each part of the index's RAM over the samples taken.
fn max_parts(a: RamParts, b: RamParts) -> RamParts {
    RamParts { runs: a.runs.max(b.runs), memtable: a.memtable.max(b.memtable), unindexed: a.unindexed.max(b.unindexed) }
}

/// The index's shares of the budget (docs/design.md, "Memory budget"): its filters and
/// fences within 7/8 of the index share, its memtable within 1/8, sampled all through a
/// backup into an index far larger than the share holds at full filter size, and after.
/// (Each backup ends with a spill, so counting runs says nothing about the budget.)
#[test]
fn index_ram_stays_within_its_shares_during_and_after_a_backup() {
    let t = crate::testutil::temp_repo();
    // 500,000 entries: at 10 filter bits each (and the fences) they would take 672 kB,
    // more than the whole index share of this budget (640 KiB), so the filters must be
    // sized down to fit.
    inject(&t.repo, 500_000, 62_500);
    let budget = Budget(1 << 20);
    let share = IndexOptions::from_budget(None, budget.index_bytes());
    // ~2,400 data chunks of ~20 kB, ~200 to an index file (four 1 MiB packs): the
    // memtable share (80 KiB) holds two or three index files' entries, all of them would
    // take 200 kB.
    let src = t.scratch("src");
    for i in 0..40 {
        write(&src.join(format!("f{i:02}")), &bytes(7000 + i, 1_200_000, false));
    }
    // Loaded into the cache under the default budget (a tiny one would sort them through
    // a memtable share of 80 KiB, slowly), then opened under the tiny one: the filters,
    // written at 10 bits per entry, must shrink to fit, as when --memory is lowered.
    let cache = Some(t.scratch("cache"));
    let large = OpenOptions { cache_dir: cache.clone(), ..Default::default() };
    drop(Repository::open_with(&t.path(), PASSWORD, &large).unwrap());
    let opts = OpenOptions { cache_dir: cache, budget, ..Default::default() };
    let repo = Repository::open_with(&t.path(), PASSWORD, &opts).unwrap();
    let opened = repo.index().ram_parts();
    assert_eq!((opened.memtable, opened.unindexed), (0, 0), "{opened:?}");
    assert!(opened.runs <= share.filter_bytes, "after loading 500,000 entries: {opened:?}, share {share:?}");
    let before: HashSet<FileId> = repo.backend().list(Dir::Index).unwrap().into_iter().collect();

    let done = AtomicBool::new(false);
    let (r, peak, samples) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let (mut peak, mut n) = (RamParts::default(), 0u64);
            while !done.load(Ordering::Relaxed) {
                peak = max_parts(peak, repo.index().ram_parts());
                n += 1;
                std::thread::sleep(std::time::Duration::from_micros(500));
            }
            (peak, n)
        });
        let r = do_backup(&repo, &[&src]);
        done.store(true, Ordering::Relaxed);
        let (peak, n) = sampler.join().unwrap();
        (r, peak, n)
    });
    assert!(samples >= 2, "sampled {samples} times");
    assert!(r.snapshot.summary.blobs_added > 2000, "{:?}", r.snapshot.summary);

    // An index file's entries go into an empty memtable whole, so the memtable holds at
    // most its share or one index file of this backup.
    let largest = repo
        .backend()
        .list(Dir::Index)
        .unwrap()
        .into_iter()
        .filter(|f| !before.contains(f))
        .map(|f| repo.read_index_file(&f).unwrap().len())
        .max()
        .unwrap();
    let memtable_cap = share.memtable_bytes.max(crate::index::memtable_bytes(largest, 0));
    assert!(
        peak.memtable <= memtable_cap,
        "memtable peaked at {} B: over its share {} and one index file ({largest} entries)",
        peak.memtable,
        share.memtable_bytes
    );
    assert!(
        peak.runs <= share.filter_bytes,
        "filters and fences peaked at {} B, share {}",
        peak.runs,
        share.filter_bytes
    );
    let after = repo.index().ram_parts();
    assert_eq!((after.memtable, after.unindexed), (0, 0), "{after:?}");
    assert!(repo.index().ram() <= budget.index_bytes(), "{after:?} after the backup");
    // The shrunk filters still answer exactly: every chunk read again is found stored.
    let force = BackupOptions { paths: vec![src.clone()], force: true, ..Default::default() };
    let again = backup::backup(&repo, &force, &Collect::default(), &AtomicBool::new(false)).unwrap();
    assert!(again.snapshot.summary.bytes_added < 100_000, "{:?}", again.snapshot.summary);
    let (entries, distinct, _) = stored(&repo);
    assert_eq!(entries, distinct, "a blob was stored twice");
}

/// Tiny blobs (one per small file) must not make index files, and the entries waiting
/// for them, larger than the packer's interval: a 32 MiB pack of 41-byte blobs would
/// hold 800,000, and an index file of 65,536 entries overran the smallest memtable share.
#[test]
fn tiny_blobs_never_make_an_index_file_larger_than_the_interval() {
    let t = crate::testutil::temp_repo();
    let src = t.scratch("src");
    for i in 0..20_000u32 {
        write(&src.join(format!("d{}/f{i}", i % 50)), &i.to_le_bytes());
    }
    do_backup(&t.repo, &[&src]);
    let mut entries = 0;
    for ix in t.repo.backend().list(Dir::Index).unwrap() {
        let n = t.repo.read_index_file(&ix).unwrap().len();
        assert!(n <= 16_384, "an index file of {n} entries");
        entries += n;
    }
    assert!(entries > 20_000, "every file's blob is indexed: {entries}");
}
