//! `diff` and `find` in process: what they read, not only what they print.

use std::sync::atomic::AtomicBool;

use super::*;
use crate::ops::find::{FindOptions, Finder, Query};
use crate::testutil::{temp_repo, write};

#[test]
fn find_skips_directories_that_held_no_match_in_an_earlier_snapshot() {
    let t = temp_repo();
    let src = t.scratch("src");
    for i in 0..20 {
        write(&src.join(format!("d{i}/sub/file{i}.txt")), b"x");
    }
    write(&src.join("d3/hit.jpg"), b"jpg");
    let first = do_backup(&t.repo, &[&src]);
    write(&src.join("d7/new.txt"), b"changed");
    let second = do_backup(&t.repo, &[&src]);
    let mut p = crate::pattern::Patterns::new();
    p.add("find", "*.jpg", false).unwrap();
    let opts = FindOptions { query: Query::Paths(p), oldest: None, newest: None, no_match_bytes: 1 << 20 };
    let mut f = Finder::new(&t.repo, opts);
    let mut hits = Vec::new();
    let cancel = AtomicBool::new(false);
    for r in [&first, &second] {
        f.search(
            &r.snapshot,
            &cancel,
            &mut |p, _| {
                hits.push(p.to_path_buf());
                Ok(())
            },
            &mut |p, e| panic!("{}: {e}", p.display()),
        )
        .unwrap();
        if r.id == first.id {
            assert_eq!(f.stats.dirs_skipped, 0);
        }
    }
    assert_eq!(hits, [src.join("d3/hit.jpg"), src.join("d3/hit.jpg")]);
    // The second time, only the directories on the way to the change (d7) and to the
    // match (d3) are read: the other 18 d* are skipped, and so is d7/sub.
    // The directories from the root to src: the root, then one per component of src.
    let to_src = src.components().count() as u64;
    let read_first = to_src + 20 * 2;
    assert_eq!(f.stats.dirs_read - read_first, to_src + 2, "{:?}", f.stats);
    assert_eq!(f.stats.dirs_skipped, 18 + 2, "{:?}", f.stats);
}

#[test]
fn a_dry_run_leaves_no_claims_behind_for_a_real_backup_in_the_same_process() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("a"), &crate::testutil::bytes(5, 300_000, false));
    let opts = |dry_run| crate::ops::backup::BackupOptions { paths: vec![src.clone()], dry_run, ..Default::default() };
    let c = Collect::default();
    let dry = crate::ops::backup::backup(&t.repo, &opts(true), &c, &AtomicBool::new(false)).unwrap();
    assert!(dry.dry_run.unwrap().packs > 300_000);
    assert!(t.repo.snapshots().unwrap().is_empty());
    let real = crate::ops::backup::backup(&t.repo, &opts(false), &c, &AtomicBool::new(false)).unwrap();
    assert_eq!(real.snapshot.summary.blobs_added, dry.snapshot.summary.blobs_added);
    let out = t.scratch("out");
    let (stats, msgs) = do_restore(&t.repo, &real, &out, &[]);
    assert!(msgs.is_empty() && stats.errors == 0, "{msgs:?}");
    assert_eq!(std::fs::read(out.join(src.strip_prefix("/").unwrap()).join("a")).unwrap().len(), 300_000);
}
