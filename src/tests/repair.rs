//! `repair index` and `repair snapshots` on the damage the other tests make: what can be
//! read is kept, what cannot is left out and reported, and the result restores whole.

use std::fs;
use std::path::Path;

use super::*;
use crate::format::tree::{ChunkRef, Content, DirChild, ListChild};
use crate::ops::repair::{repair_snapshots, RepairSnapshotsOptions};
use crate::testutil::{bytes, flip_byte, temp_repo, write};

/// Damage the stored copy of blob `id` (one byte inside its seal).
fn damage(repo: &Repository, id: &BlobId) {
    let loc = repo.index().get(id).unwrap();
    flip_byte(&repo.pack_path(&loc.pack), loc.offset as u64 + 30);
}

fn entry_of(repo: &Repository, root: &BlobId, path: &Path) -> crate::format::tree::Entry {
    restore::resolve(repo, root, path).unwrap()
}

fn dir_id(e: &crate::format::tree::Entry) -> BlobId {
    match e.kind {
        Kind::Dir(id) => id,
        _ => panic!("not a directory"),
    }
}

#[test]
fn repair_snapshots_keeps_what_can_be_read_and_restores_whole() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("dir/a"), &bytes(1, 3000, false));
    write(&src.join("dir/b"), &bytes(2, 3000, false));
    write(&src.join("sub/x"), b"x");
    for i in 0..3000 {
        write(&src.join(format!("many/f{i:04}")), format!("{i}").as_bytes());
    }
    let r = do_backup(&t.repo, &[&src]);
    let root = r.snapshot.root;
    // Damage: sub's only node, the second leaf of many/, and a's only chunk.
    let sub = dir_id(&entry_of(&t.repo, &root, &src.join("sub")));
    let many = dir_id(&entry_of(&t.repo, &root, &src.join("many")));
    let Node::DirInterior(leaves) = t.repo.read_tree(&many).unwrap() else { panic!("many/ is one leaf") };
    let lost_leaf: &DirChild = &leaves[1];
    let a = match entry_of(&t.repo, &root, &src.join("dir/a")).kind {
        Kind::File(Content::Inline(cs)) => cs[0].id,
        _ => panic!(),
    };
    damage(&t.repo, &sub);
    damage(&t.repo, &lost_leaf.id);
    damage(&t.repo, &a);
    let repo = t.reopen();
    let (before, _) = do_restore(&repo, &r, &t.scratch("before"), &[]);
    assert!(before.errors > 0);

    // A dry run writes nothing.
    let snaps = repo.backend().list(crate::backend::Dir::Snapshots).unwrap();
    let mut notes = vec![];
    let opts = RepairSnapshotsOptions { dry_run: true, read_data: true, ..Default::default() };
    let s = repair_snapshots(&repo, &opts, &mut |m| notes.push(m.to_string())).unwrap();
    assert_eq!(s.snapshots_repaired, 1, "{notes:?}");
    assert_eq!(repo.backend().list(crate::backend::Dir::Snapshots).unwrap(), snaps);

    let mut notes = vec![];
    let opts = RepairSnapshotsOptions { forget: true, read_data: true, ..Default::default() };
    let s = repair_snapshots(&repo, &opts, &mut |m| notes.push(m.to_string())).unwrap();
    let all = notes.join("\n");
    assert_eq!((s.snapshots_repaired, s.snapshots_removed, s.dirs_emptied, s.files_cut), (1, 1, 1, 1), "{all}");
    assert_eq!(s.entries_dropped, lost_leaf.entries, "{all}");
    assert!(all.contains("/sub") && all.contains("/many") && all.contains("/dir/a"), "{all}");

    // The new snapshot replaces the old one, restores without errors, and holds the rest.
    let repo = t.reopen();
    let listed = repo.snapshots().unwrap();
    assert_eq!(listed.len(), 1);
    let (id, snap) = listed.into_iter().next().unwrap();
    assert!(snap.tags.contains(&"repaired".to_string()));
    let fixed = BackupResult { id, snapshot: snap, parent: None, dry_run: None };
    let out = t.scratch("after");
    let (stats, msgs) = do_restore(&repo, &fixed, &out, &[]);
    assert_eq!(stats.errors, 0, "{msgs:?}");
    let rel = out.join(src.strip_prefix("/").unwrap());
    assert_eq!(fs::read(rel.join("dir/b")).unwrap(), bytes(2, 3000, false));
    assert_eq!(fs::metadata(rel.join("dir/a")).unwrap().len(), 0, "a's content was removed");
    assert_eq!(fs::read_dir(rel.join("sub")).unwrap().count(), 0, "sub/ is empty");
    let kept = fs::read_dir(rel.join("many")).unwrap().count() as u64;
    assert_eq!(kept, 3000 - lost_leaf.entries);
    for e in fs::read_dir(rel.join("many")).unwrap() {
        let e = e.unwrap();
        let i: u64 = e.file_name().to_str().unwrap()[1..].parse().unwrap();
        assert_eq!(fs::read(e.path()).unwrap(), format!("{i}").as_bytes());
    }
    // The snapshots check clean (the damaged copies stay in their packs until a prune).
    let (cs, msgs) = do_check(&repo, false);
    assert!(msgs.iter().all(|m| !m.starts_with("error")), "{msgs:?}");
    assert!(cs.unused_entries > 0 && msgs.iter().any(|m| m.contains("`cairn prune` removes them")), "{msgs:?}");
}

#[test]
fn repair_snapshots_keeps_the_readable_parts_of_a_chunk_list() {
    let t = temp_repo();
    let chunk = |seed: u64| {
        let data = bytes(seed, 100, false);
        let id = t.repo.keys().blob_id(crate::format::BlobKind::Data, &data);
        (ChunkRef { id, size: 100 }, t.repo.seal_blob(crate::format::BlobKind::Data, id, &data, None))
    };
    let (c1, b1) = chunk(1);
    let (c2, b2) = chunk(2);
    let (l1, lb1) = tree_blob(&t.repo, &Node::ListLeaf(vec![c1]));
    let (l2, lb2) = tree_blob(&t.repo, &Node::ListLeaf(vec![c2]));
    let children = vec![ListChild { id: l1, bytes: 100, chunks: 1 }, ListChild { id: l2, bytes: 100, chunks: 1 }];
    let (list, lb) = tree_blob(&t.repo, &Node::ListInterior(children));
    let (root, rb) = tree_blob(&t.repo, &Node::DirLeaf(vec![entry(b"f", Kind::File(Content::List(list)), 200)]));
    craft(&t.repo, vec![b1, b2, lb1, lb2, lb, rb], root);
    damage(&t.repo, &l1);
    let repo = t.reopen();
    let s =
        repair_snapshots(&repo, &RepairSnapshotsOptions { forget: true, ..Default::default() }, &mut |_| {}).unwrap();
    assert_eq!((s.files_cut, s.bytes_removed), (1, 100));
    let (id, snapshot) = repo.snapshots().unwrap().pop().unwrap();
    let out = t.scratch("out");
    let (stats, msgs) = do_restore(&repo, &BackupResult { id, snapshot, parent: None, dry_run: None }, &out, &[]);
    assert_eq!(stats.errors, 0, "{msgs:?}");
    assert_eq!(fs::read(out.join("f")).unwrap(), bytes(2, 100, false), "the second half is kept");
}

#[test]
fn a_lost_pack_is_dropped_from_the_index_so_the_next_backup_stores_its_data_again() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("a"), &bytes(1, 300_000, false));
    // One persistent cache for every command, as on a user's machine (a private cache is
    // new at every open, which hides whether the cache remembers what it lost).
    let cached = crate::repo::OpenOptions { cache_dir: Some(t.scratch("cache")), ..Default::default() };
    let open = || Repository::open_with(&t.path(), crate::testutil::PASSWORD, &cached).unwrap();
    let r = do_backup(&open(), &[&src]);
    do_backup(&open(), &[&src]);
    // Lose the data pack.
    crate::testutil::lose_data_packs(&t.repo);
    let s = crate::ops::repair::repair_index(&open(), false, &Default::default(), &mut |_| {}).unwrap();
    assert!(s.entries_dropped > 0 && s.index_files_rewritten == 1, "{s:?}");
    // The index no longer vouches for the lost blobs: the snapshot is missing them...
    let (cs, msgs) = do_check(&open(), false);
    assert!(cs.errors > 0 && msgs.iter().any(|m| m.contains(&r.id.short()) && m.contains("missing")), "{msgs:?}");
    // ...and a new backup, in a later process than the one that rebuilt the cache,
    // stores the data again instead of deduplicating against nothing.
    let repo = open();
    let r2 = do_backup(&repo, &[&src]);
    assert!(r2.snapshot.summary.bytes_added > 300_000, "{:?}", r2.snapshot.summary);
    let (stats, msgs) = do_restore(&t.reopen(), &r2, &t.scratch("out"), &[]);
    assert_eq!(stats.errors, 0, "{msgs:?}");
    // Storing the same chunks again healed the old snapshot too (as in restic): it
    // restores, repair snapshots finds nothing to do, and the repository checks clean.
    let (stats, msgs) = do_restore(&t.reopen(), &r, &t.scratch("old"), &[]);
    assert_eq!(stats.errors, 0, "{msgs:?}");
    let repo = t.reopen();
    let s = repair_snapshots(&repo, &RepairSnapshotsOptions::default(), &mut |_| {}).unwrap();
    assert_eq!((s.snapshots_checked, s.snapshots_repaired), (3, 0));
    let (cs, msgs) = do_check(&t.reopen(), true);
    assert_eq!(cs.errors, 0, "{msgs:?}");
}

#[test]
fn repair_snapshots_stops_at_an_io_error_instead_of_emptying_anything() {
    // An error that says nothing about the data (here ELOOP: the path of the pack holding
    // a subdirectory's tree is a symlink loop; in life EACCES, EIO, an unmounted disk)
    // must stop the repair, never be taken for damage: --forget would otherwise replace
    // the snapshot by one with that directory emptied.
    let t = temp_repo();
    let data = b"data".to_vec();
    let did = t.repo.keys().blob_id(crate::format::BlobKind::Data, &data);
    let dblob = t.repo.seal_blob(crate::format::BlobKind::Data, did, &data, None);
    let file = Kind::File(Content::Inline(vec![ChunkRef { id: did, size: 4 }]));
    // The subdirectory's tree in a pack of its own (its snapshot is removed again).
    let (sub, sb) = tree_blob(&t.repo, &Node::DirLeaf(vec![entry(b"f", file, 4)]));
    let first = craft(&t.repo, vec![dblob, sb], sub);
    t.repo.backend().remove(crate::backend::Dir::Snapshots, &first.id).unwrap();
    let (root, rb) = tree_blob(&t.repo, &Node::DirLeaf(vec![entry(b"d", Kind::Dir(sub), 0)]));
    let r = craft(&t.repo, vec![rb], root);
    let p = t.repo.pack_path(&t.repo.index().get(&sub).unwrap().pack);
    assert_ne!(t.repo.index().get(&sub).unwrap().pack, t.repo.index().get(&root).unwrap().pack);
    fs::remove_file(&p).unwrap();
    std::os::unix::fs::symlink(&p, &p).unwrap();
    let repo = t.reopen();
    let opts = RepairSnapshotsOptions { forget: true, ..Default::default() };
    let e = repair_snapshots(&repo, &opts, &mut |_| {}).unwrap_err();
    assert!(matches!(e, crate::Error::Io { .. }), "{e}");
    assert_eq!(repo.backend().list(crate::backend::Dir::Snapshots).unwrap(), vec![r.id], "the original is kept");
}

#[test]
fn repair_index_drops_nothing_when_the_data_looks_unreachable_rather_than_lost() {
    // data/ renamed away (an unmounted disk, a dangling symlink): every pack is missing,
    // which is far likelier an outage than a loss. Nothing is dropped without --force.
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("a"), &bytes(1, 100_000, false));
    do_backup(&t.repo, &[&src]);
    let files = t.repo.backend().list(crate::backend::Dir::Index).unwrap();
    fs::rename(t.path().join("data"), t.scratch("data-elsewhere")).unwrap();
    fs::create_dir(t.path().join("data")).unwrap();
    let repo = t.reopen();
    let e = crate::ops::repair::repair_index(&repo, false, &Default::default(), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("not mounted"), "{e}");
    assert_eq!(repo.backend().list(crate::backend::Dir::Index).unwrap(), files, "nothing dropped");
    // Put back, all is well; forced while away, the entries would have been dropped.
    fs::remove_dir(t.path().join("data")).unwrap();
    fs::rename(t.scratch("data-elsewhere"), t.path().join("data")).unwrap();
    let s = crate::ops::repair::repair_index(&t.reopen(), false, &Default::default(), &mut |_| {}).unwrap();
    assert_eq!((s.entries_dropped, s.index_files_removed, s.blobs_indexed), (0, 0, 0), "{s:?}");
    let (cs, msgs) = do_check(&t.reopen(), true);
    assert_eq!(cs.errors, 0, "{msgs:?}");
}
