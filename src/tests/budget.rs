//! The memory budget: a tiny one forces the index to spill and merge many runs, and
//! deduplication must stay exact (never lossy, never storing a blob twice).

use std::collections::HashSet;
use std::path::Path;

use super::*;
use crate::backend::Dir;
use crate::budget::Budget;
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
    for i in 0..2500u64 {
        // One file in four repeats an earlier one: dedup decisions across spills.
        let seed = if i % 4 == 3 { i / 2 } else { i };
        write(&root.join(format!("d{}/f{i}", i % 17)), &bytes(seed, 300 + (seed as usize * 37) % 3000, seed % 3 == 0));
    }
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
        let opts = OpenOptions { cache_dir: Some(t.path().join(format!("cache-{name}"))), budget, kdf_limit: None };
        let repo = Repository::open_with(&path, PASSWORD, &opts).unwrap();
        let r1 = do_backup(&repo, &[&src]);
        if name == "tiny" {
            assert!(repo.index().runs() >= 1, "the tiny budget spilled");
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
        assert_eq!(stats.files, 2501);
        let (cs, msgs) = do_check(&repo, true);
        assert_eq!(cs.errors, 0, "{msgs:?}");
        results.push((data, r1.snapshot.summary.blobs_added, r2.snapshot.summary.files_unchanged));
        summaries.push(format!("{name}: r1 {:?} r2 {:?}", r1.snapshot.summary, r2.snapshot.summary));
    }
    // The same data gives the same number of distinct data blobs whatever the budget.
    assert_eq!(results[0].0, results[1].0, "tiny vs large budget: {results:?}\n{summaries:#?}");
    assert_eq!(results[0].1, results[1].1);
    assert_eq!(results[0].2, 2500);
}
