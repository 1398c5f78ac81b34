//! Prune, as far as it is built: the mark phase finds exactly the blobs the remaining
//! snapshots reference, whatever its memory, and stops at damage.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;

use super::*;
use crate::backend::Dir;
use crate::ops::prune::mark;
use crate::testutil::{bytes, flip_byte, temp_repo, write};

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
