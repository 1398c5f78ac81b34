//! Prune: the mark phase finds exactly the blobs the remaining snapshots reference,
//! whatever its memory; prune deletes and repacks what they do not use, keeps every kept
//! snapshot whole, and stops before deleting anything at damage.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;

use super::*;
use crate::backend::Dir;
use crate::ops::prune::{mark, prune, MaxUnused, PruneOptions, PruneStats};
use crate::repo::OpenOptions;
use crate::testutil::{bytes, flip_byte, temp_repo, write, TestRepo, PASSWORD};

fn ids(
    repo: &Repository,
    sort_memory: usize,
    done_memory: usize,
) -> (BTreeSet<[u8; 32]>, crate::ops::prune::MarkStats) {
    let (mut sorted, stats) = mark(repo, sort_memory, done_memory, &AtomicBool::new(false)).unwrap();
    let mut out = BTreeSet::new();
    let mut last: Option<Vec<u8>> = None;
    while let Some(id) = sorted.next_name().unwrap() {
        assert!(last.as_ref().is_none_or(|l| *l < id), "not sorted and distinct");
        out.insert(<[u8; 32]>::try_from(&id[..]).unwrap());
        last = Some(id);
    }
    (out, stats)
}

fn indexed(repo: &Repository) -> BTreeSet<[u8; 32]> {
    let mut out = BTreeSet::new();
    for f in repo.backend().list(Dir::Index).unwrap() {
        out.extend(repo.read_index_file(&f).unwrap().into_iter().map(|e| e.id.0));
    }
    out
}

fn chunks_of(repo: &Repository, r: &BackupResult, path: &std::path::Path) -> Vec<[u8; 32]> {
    let e = restore::resolve(repo, &r.snapshot.root, path).unwrap();
    let Kind::File(c) = e.kind else { panic!("not a file") };
    let mut out = vec![];
    crate::tree::for_each_chunk(repo, &c, e.size, &mut |c| {
        out.push(c.id.0);
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn mark_finds_exactly_what_the_remaining_snapshots_reference() {
    let t = temp_repo();
    let src = t.scratch("src");
    // Shared files, one file only the first snapshot has (with a long, out-of-line chunk
    // list), and a big directory split into several nodes.
    write(&src.join("shared"), &bytes(1, 50_000, false));
    write(&src.join("gone"), &bytes(2, 2_000_000, false));
    for i in 0..3000 {
        write(&src.join(format!("many/f{i:04}")), format!("{i}").as_bytes());
    }
    let first = do_backup(&t.repo, &[&src]);
    std::fs::remove_file(src.join("gone")).unwrap();
    write(&src.join("new"), &bytes(3, 30_000, false));
    let second = do_backup(&t.repo, &[&src]);

    // Nothing is garbage yet: everything indexed is reachable, and nothing else.
    let (all, stats) = ids(&t.repo, 64 << 20, 64 << 20);
    let ix = indexed(&t.repo);
    assert!(all == ix, "reachable {} vs indexed {} ids", all.len(), ix.len());
    assert_eq!(stats.snapshots, 2);
    assert_eq!(stats.sort_spills, 0);

    // Forget the first: what only it referenced drops out, the rest stays.
    t.repo.backend().remove(Dir::Snapshots, &first.id).unwrap();
    let (kept, _) = ids(&t.repo, 64 << 20, 64 << 20);
    let gone = chunks_of(&t.repo, &first, &src.join("gone"));
    assert!(gone.len() > 64, "the file's chunk list is not out of line");
    assert!(gone.iter().all(|c| !kept.contains(c)));
    assert!(!kept.contains(&first.snapshot.root.0));
    for f in ["shared", "new", "many/f2999"] {
        assert!(chunks_of(&t.repo, &second, &src.join(f)).iter().all(|c| kept.contains(c)), "{f}");
    }
    assert!(kept.contains(&second.snapshot.root.0));
    assert!(kept.is_subset(&all) && kept.len() < all.len());

    // The smallest memories (every id spills, every subtree is walked again) change
    // nothing.
    let (tiny, stats) = ids(&t.repo, 0, 0);
    assert!(tiny == kept, "{} vs {} ids", tiny.len(), kept.len());
    assert!(stats.sort_spills > 10, "{stats:?}");
}

#[test]
fn mark_stops_at_a_damaged_tree_or_snapshot_naming_it() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("d/a"), b"alpha");
    let r = do_backup(&t.repo, &[&src]);
    let d = restore::resolve(&t.repo, &r.snapshot.root, &src.join("d")).unwrap();
    let Kind::Dir(tree) = d.kind else { panic!() };
    let loc = t.repo.index().get(&tree).unwrap();
    flip_byte(&t.repo.pack_path(&loc.pack), loc.offset as u64 + 30);
    let repo = t.reopen();
    let e = mark(&repo, 1 << 20, 1 << 20, &AtomicBool::new(false)).err().expect("a damaged tree was walked past");
    let m = e.to_string();
    assert!(m.contains(&r.id.to_string()) && m.contains(&tree.to_string()) && m.contains("prune stops"), "{m}");

    // A damaged snapshot file: its trees are unknown, so nothing may be decided.
    let t = temp_repo();
    write(&src.join("d/a"), b"beta");
    let r = do_backup(&t.repo, &[&src]);
    flip_byte(&t.repo.backend().path(Dir::Snapshots, &r.id), 40);
    let e = mark(&t.reopen(), 1 << 20, 1 << 20, &AtomicBool::new(false)).err().expect("a damaged snapshot was skipped");
    assert!(e.to_string().contains(&r.id.to_string()), "{e}");
}

/// Every regular file under `root`, by path relative to it, with its bytes.
fn files(root: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    fn walk(
        root: &std::path::Path,
        dir: &std::path::Path,
        out: &mut std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>,
    ) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = Default::default();
    walk(root, root, &mut out);
    out
}

/// Every file of the repository with its length (what a dry run must leave alone).
fn repo_files(t: &TestRepo) -> BTreeSet<(std::path::PathBuf, u64)> {
    let mut out = BTreeSet::new();
    for (p, b) in files(&t.path()) {
        out.insert((p, b.len() as u64));
    }
    out.into_iter().filter(|(p, _)| !p.starts_with("locks")).collect()
}

fn data_bytes(t: &TestRepo) -> u64 {
    files(&t.path().join("data")).values().map(|b| b.len() as u64).sum()
}

fn run_prune(repo: &Repository, dry_run: bool, max_unused: MaxUnused) -> PruneStats {
    let opts = PruneOptions { dry_run, max_unused, ..Default::default() };
    prune(repo, &opts, &AtomicBool::new(false)).unwrap()
}

fn open_cached(t: &TestRepo, budget: usize) -> Repository {
    let opts = OpenOptions {
        cache_dir: Some(t.scratch("cache")),
        budget: crate::budget::Budget(budget),
        kdf_limit: Some(crate::repo::KdfLimit::of_budget(crate::budget::Budget::default())),
        ..Default::default()
    };
    Repository::open_with(&t.path(), PASSWORD, &opts).unwrap()
}

/// Three versions of a tree, backed up; the first two forgotten. Returns the repository,
/// the source, and the last version's files.
fn three_versions(
) -> (TestRepo, std::path::PathBuf, BackupResult, std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>) {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("shared"), &bytes(1, 300_000, false));
    write(&src.join("a"), &bytes(2, 2_000_000, false));
    write(&src.join("b"), &bytes(3, 700_000, true));
    for i in 0..300 {
        write(&src.join(format!("small/f{i:03}")), format!("small file {i}").as_bytes());
    }
    let r1 = do_backup(&t.repo, &[&src]);
    std::fs::remove_file(src.join("a")).unwrap();
    write(&src.join("c"), &bytes(4, 900_000, false));
    let r2 = do_backup(&t.repo, &[&src]);
    std::fs::remove_file(src.join("b")).unwrap();
    // A file mixing kept and new chunks: its old chunks share packs with garbage.
    let mut d = bytes(4, 450_000, false);
    d.extend_from_slice(&bytes(5, 450_000, false));
    write(&src.join("c"), &d);
    let r3 = do_backup(&t.repo, &[&src]);
    for r in [&r1, &r2] {
        t.repo.backend().remove(Dir::Snapshots, &r.id).unwrap();
    }
    let want = files(&src);
    (t, src, r3, want)
}

#[test]
fn prune_deletes_and_repacks_garbage_and_keeps_the_kept_snapshot_whole() {
    let (t, _src, r3, want) = three_versions();
    let repo = open_cached(&t, 256 << 20);
    let lost_at = repo.index().lost_at();
    // check warns of what prune would reclaim, without calling it an error.
    let (cs, msgs) = do_check(&repo, false);
    assert_eq!(cs.errors, 0, "{msgs:?}");
    assert!(cs.unused_packs > 0 && cs.unused_entries > 0, "{cs:?}");
    assert!(msgs.iter().any(|m| m.starts_with("note") && m.contains("`cairn prune` deletes them")), "{msgs:?}");
    let before = repo_files(&t);
    let bytes_before = data_bytes(&t);

    // A dry run decides and changes nothing.
    let dry = run_prune(&repo, true, MaxUnused::Percent(0.0));
    assert!(dry.packs_deleted > 0 && dry.packs_repacked > 0, "{dry:?}");
    assert_eq!(dry.snapshots, 1);
    assert_eq!(repo_files(&t), before, "a dry run changed the repository");

    // The real one decides the same, and leaves nothing unused at 0%.
    let real = run_prune(&repo, false, MaxUnused::Percent(0.0));
    assert_eq!(
        (real.packs_deleted, real.packs_repacked, real.used_bytes, real.unused_bytes),
        (dry.packs_deleted, dry.packs_repacked, dry.used_bytes, dry.unused_bytes)
    );
    assert!(real.blobs_repacked > 0 && real.index_files_rewritten > 0, "{real:?}");
    let bytes_after = data_bytes(&t);
    assert!(bytes_after < bytes_before, "{bytes_after} >= {bytes_before}");
    // The plan's size is right but for the new packs' own headers (a few dozen bytes each).
    assert!(bytes_after.abs_diff(real.bytes_after) < 200 * (real.packs_repacked + 2), "{bytes_after} vs {real:?}");
    let (reachable, _) = ids(&repo, 1 << 20, 1 << 20);
    assert!(indexed(&repo) == reachable, "the index holds exactly what the snapshot uses");

    // The kept snapshot is whole: check reads every byte, restore gives the files back.
    let (cs, msgs) = do_check(&repo, true);
    assert_eq!(cs.errors, 0, "{msgs:?}");
    assert!(msgs.is_empty(), "{msgs:?}");
    let out = t.scratch("out");
    let (rs, msgs) = do_restore(&repo, &r3, &out, &[]);
    assert_eq!(rs.errors, 0, "{msgs:?}");
    let src = t.scratch("src");
    assert!(files(&out.join(src.strip_prefix("/").unwrap())) == want, "restored files differ");

    // A second prune finds nothing to do.
    let again = run_prune(&repo, false, MaxUnused::Percent(0.0));
    assert_eq!((again.packs_deleted, again.packs_repacked, again.unused_bytes), (0, 0, 0), "{again:?}");

    // The local cache was updated in place, not rebuilt: a new process trusts it.
    drop(repo);
    let repo = open_cached(&t, 256 << 20);
    repo.refresh_index().unwrap();
    assert_eq!(repo.index().lost_at(), lost_at, "the cache was rebuilt");
    let (cs, msgs) = do_check(&repo, false);
    assert_eq!(cs.errors, 0, "{msgs:?}");
}

#[test]
fn prune_in_the_smallest_memory_decides_the_same() {
    // Every sort spills, the pack sums table holds one pack, the chosen set one pack
    // per run (the rest is deferred, then done by the next runs).
    let (t, _src, r3, want) = three_versions();
    let tiny = open_cached(&t, 8 << 10);
    let large = Repository::open(&t.path(), PASSWORD).unwrap();
    let a = run_prune(&tiny, true, MaxUnused::Percent(0.0));
    let b = run_prune(&large, true, MaxUnused::Percent(0.0));
    assert_eq!(
        (a.packs, a.used_bytes, a.unused_bytes, a.packs_deleted, a.deleted_bytes),
        (b.packs, b.used_bytes, b.unused_bytes, b.packs_deleted, b.deleted_bytes)
    );
    assert!(a.sort_spills > 0 && a.pack_sum_spills > 0, "{a:?}");
    let mut runs = 0;
    loop {
        let s = run_prune(&tiny, false, MaxUnused::Percent(0.0));
        runs += 1;
        if s.repack_deferred == 0 {
            break;
        }
        assert!(runs < 50, "prune never finishes: {s:?}");
    }
    assert!(runs > 1, "nothing was deferred: the chosen set's cap was not reached");
    let (cs, msgs) = do_check(&tiny, true);
    assert_eq!(cs.errors, 0, "{msgs:?}");
    let out = t.scratch("out");
    do_restore(&tiny, &r3, &out, &[]);
    let src = t.scratch("src");
    assert!(files(&out.join(src.strip_prefix("/").unwrap())) == want);
    let (reachable, _) = ids(&tiny, 1 << 20, 1 << 20);
    assert!(indexed(&tiny) == reachable);
}

#[test]
fn max_unused_and_max_repack_size_limit_the_repack() {
    let (t, ..) = three_versions();
    let repo = open_cached(&t, 256 << 20);
    let none = run_prune(&repo, true, MaxUnused::Unlimited);
    assert_eq!(none.packs_repacked, 0);
    assert!(none.packs_deleted > 0);
    let all = run_prune(&repo, true, MaxUnused::Percent(0.0));
    assert!(all.packs_repacked >= 2, "{all:?}");
    assert_eq!(all.unused_after, 0);
    // A limit between: repacks until the rest is within it, no further.
    let limit = MaxUnused::Bytes(all.unused_bytes / 2);
    let some = run_prune(&repo, true, limit);
    assert!(some.unused_after <= all.unused_bytes / 2, "{some:?}");
    assert!(some.packs_repacked <= all.packs_repacked);
    let opts = PruneOptions {
        dry_run: true,
        max_unused: MaxUnused::Percent(0.0),
        max_repack_size: Some(1),
        ..Default::default()
    };
    let capped = prune(&repo, &opts, &AtomicBool::new(false)).unwrap();
    assert_eq!(capped.packs_repacked, 0);
    assert_eq!(capped.repack_deferred, all.packs_repacked);
    assert_eq!(MaxUnused::parse("5%").unwrap(), MaxUnused::Percent(5.0));
    assert_eq!(MaxUnused::parse("unlimited").unwrap(), MaxUnused::Unlimited);
    assert_eq!(MaxUnused::parse("1M").unwrap(), MaxUnused::Bytes(1 << 20));
    for bad in ["-1%", "101%", "x", "5 %%"] {
        assert!(MaxUnused::parse(bad).is_err(), "{bad}");
    }
    // restic's meaning: unused at most p% of the whole, so p/(100-p) of the used.
    assert_eq!(MaxUnused::Percent(50.0).limit(1000), 1000);
    assert_eq!(MaxUnused::Percent(0.0).limit(1000), 0);
}

#[test]
fn prune_stops_before_deleting_anything_at_damage() {
    // A pack holding blobs the snapshot uses is missing.
    let (t, ..) = three_versions();
    let repo = open_cached(&t, 256 << 20);
    let (reachable, _) = ids(&repo, 1 << 20, 1 << 20);
    let used = repo.index().get(&BlobId(*reachable.iter().next().unwrap())).unwrap().pack;
    let moved = t.scratch("moved-pack");
    std::fs::rename(repo.pack_path(&used), &moved).unwrap();
    let before = repo_files(&t);
    for dry_run in [true, false] {
        let opts = PruneOptions { dry_run, max_unused: MaxUnused::Percent(0.0), ..Default::default() };
        let e = prune(&repo, &opts, &AtomicBool::new(false)).expect_err("pruned past a missing pack");
        let m = e.to_string();
        assert!(m.contains(&used.to_string()) && m.contains("prune stops"), "{m}");
        assert_eq!(repo_files(&t), before, "something changed");
    }
    std::fs::rename(&moved, repo.pack_path(&used)).unwrap();

    // A damaged index file.
    let f = repo.backend().list(Dir::Index).unwrap()[0];
    let path = repo.backend().path(Dir::Index, &f);
    let good = std::fs::read(&path).unwrap();
    flip_byte(&path, 40);
    let before = repo_files(&t);
    let fresh = open_cached(&t, 256 << 20);
    let e =
        prune(&fresh, &PruneOptions::default(), &AtomicBool::new(false)).expect_err("pruned past a damaged index file");
    assert!(e.to_string().contains("prune stops"), "{e}");
    assert_eq!(repo_files(&t), before);
    std::fs::write(&path, good).unwrap();

    // A damaged blob in a pack to repack: nothing is deleted.
    let repo = open_cached(&t, 256 << 20);
    let plan = run_prune(&repo, true, MaxUnused::Percent(0.0));
    assert!(plan.packs_repacked > 0);
    let mut hit = None;
    for id in &reachable {
        let loc = repo.index().get(&BlobId(*id)).unwrap();
        if loc.kind == crate::format::BlobKind::Data && loc.stored_len > 1000 {
            // Only a pack with garbage is repacked: pick one whose blob count says so.
            let h = repo.read_pack_header(&loc.pack).unwrap();
            if h.blobs.iter().any(|(b, _)| !reachable.contains(&b.id.0)) {
                hit = Some(loc);
                break;
            }
        }
    }
    let loc = hit.expect("a repacked pack");
    flip_byte(&repo.pack_path(&loc.pack), loc.offset as u64 + 100);
    let packs_before: BTreeSet<_> = crate::testutil::packs(&repo).into_iter().collect();
    let e = prune(
        &repo,
        &PruneOptions { max_unused: MaxUnused::Percent(0.0), ..Default::default() },
        &AtomicBool::new(false),
    )
    .expect_err("repacked a damaged blob");
    assert!(e.to_string().contains(&loc.pack.to_string()) && e.to_string().contains("prune stops"), "{e}");
    let packs_after: BTreeSet<_> = crate::testutil::packs(&repo).into_iter().collect();
    assert!(packs_before.is_subset(&packs_after), "a pack was deleted");
}

#[test]
fn prune_waits_for_other_clients_and_upgrades_an_old_config() {
    let (t, ..) = three_versions();
    std::fs::write(t.path().join("config"), crate::testutil::config_v1(&t.repo)).unwrap();
    let repo = open_cached(&t, 256 << 20);
    assert_eq!(repo.config_version(), 1);
    let s = run_prune(&repo, true, MaxUnused::default());
    assert!(!s.config_upgraded, "a dry run upgraded the config");
    assert_eq!(t.reopen().config_version(), 1);
    // A backup holding its shared lock keeps prune out.
    let other = t.reopen();
    other
        .with_lock(crate::repo::lock::LockKind::Shared, "backup", &Default::default(), |_| {
            let e =
                prune(&repo, &PruneOptions::default(), &AtomicBool::new(false)).expect_err("pruned beside a backup");
            assert!(matches!(e, crate::error::Error::Locked(_)), "{e}");
            Ok(())
        })
        .unwrap();
    // The config went to version 2 first (cairn 0.1 takes no locks: from now on it
    // refuses the repository), whether or not the lock was then had.
    assert_eq!(t.reopen().config_version(), 2);
    run_prune(&repo, false, MaxUnused::default());
}
