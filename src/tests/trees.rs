//! Huge directories and huge chunk lists are split into nodes; readers find what they
//! need without reading everything, and edits rewrite only the nodes around them.

use std::fs;

use proptest::prelude::*;

use super::*;
use crate::format::tree::{ChunkRef, Content, Node};
use crate::format::BlobKind;
use crate::id::BlobId;
use crate::repo::packer::Packer;
use crate::testutil::{temp_repo, write};
use crate::tree::{lookup, ChunkIter, DirIter, ListWriter, TreeSink};

#[test]
fn huge_directory_is_split_and_an_edit_rewrites_few_nodes() {
    let t = temp_repo();
    let src = t.scratch("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..6000 {
        fs::write(src.join(format!("file-{i:05}")), b"").unwrap();
    }
    let r1 = do_backup(&t.repo, &[&src]);
    let dir = match restore::resolve(&t.repo, &r1.snapshot.root, &src).unwrap().kind {
        crate::format::tree::Kind::Dir(id) => id,
        k => panic!("{k:?}"),
    };
    assert!(matches!(t.repo.read_tree(&dir).unwrap(), Node::DirInterior(_)), "6000 entries span several nodes");
    let names: Vec<Vec<u8>> = DirIter::new(&t.repo, &dir).unwrap().map(|e| e.unwrap().name).collect();
    assert_eq!(names.len(), 6000);
    assert!(names.windows(2).all(|w| w[0] < w[1]));
    // A compact iterator (leaves kept as plaintext) gives the same entries.
    let whole: Vec<_> = DirIter::new(&t.repo, &dir).unwrap().map(|e| e.unwrap()).collect();
    let shared = crate::tree::SharedLeaves::default();
    let compact: Vec<_> = DirIter::compact(&t.repo, &dir, shared.clone()).unwrap().map(|e| e.unwrap()).collect();
    assert!(whole == compact, "compact iteration differs");
    // Two compact iterators in step share each leaf: one plaintext for both.
    let mut a = DirIter::compact(&t.repo, &dir, shared.clone()).unwrap();
    let mut b = DirIter::compact(&t.repo, &dir, shared.clone()).unwrap();
    for _ in 0..3000 {
        assert_eq!(a.next_entry().unwrap(), b.next_entry().unwrap());
    }
    let live: Vec<_> = shared.lock().unwrap().values().filter_map(|w| w.upgrade()).collect();
    assert_eq!(live.len(), 1, "one leaf held, by both");
    assert_eq!(std::sync::Arc::strong_count(&live[0]), 3);
    for i in [0, 1, 2999, 5999] {
        let name = format!("file-{i:05}");
        assert_eq!(lookup(&t.repo, &dir, name.as_bytes()).unwrap().unwrap().name, name.as_bytes());
    }
    assert!(lookup(&t.repo, &dir, b"file-99999").unwrap().is_none());
    assert!(lookup(&t.repo, &dir, b"a").unwrap().is_none());
    // Positions: by name and by index, through the interior nodes' entry counts.
    assert_eq!(crate::tree::dir_len(&t.repo, &dir).unwrap(), 6000);
    for i in [0u64, 1, 2047, 2999, 5998, 5999] {
        let name = format!("file-{i:05}");
        assert_eq!(crate::tree::lookup_indexed(&t.repo, &dir, name.as_bytes()).unwrap().unwrap().0, i);
        assert_eq!(crate::tree::nth_entry(&t.repo, &dir, i).unwrap().unwrap().name, name.as_bytes());
    }
    assert!(crate::tree::nth_entry(&t.repo, &dir, 6000).unwrap().is_none());
    for pos in [0u64, 1, 2999, 5999, 6000] {
        let rest: Vec<Vec<u8>> = DirIter::at(&t.repo, &dir, pos).unwrap().map(|e| e.unwrap().name).collect();
        assert_eq!(rest, names[pos as usize..].to_vec(), "from {pos}");
    }

    write(&src.join("file-03000x"), b"new");
    let before = t.repo.index().len();
    let r2 = do_backup(&t.repo, &[&src]);
    let added = t.repo.index().len() - before;
    // One data blob, the leaf around the new name (two if the name makes a new
    // boundary), the interior nodes above them (two levels at most for 6000 entries),
    // and one listing for each directory above src, however deep the temp dir is.
    let above = src.ancestors().count() - 1;
    assert!(added <= 5 + above, "an insert rewrote {added} blobs ({above} directories above)");
    assert_eq!(r2.snapshot.summary.files_unchanged, 6000);
}

struct PackSink<'a> {
    repo: &'a Repository,
    packer: Packer<'a>,
}

impl TreeSink for PackSink<'_> {
    fn store_tree(&mut self, node: &[u8]) -> crate::Result<BlobId> {
        let id = self.repo.keys().blob_id(BlobKind::Tree, node);
        if self.repo.index().claim(&id) {
            self.packer.add(self.repo.seal_blob(BlobKind::Tree, id, node, None))?;
        }
        Ok(id)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn chunk_lists_of_any_length_read_back_in_order(n in prop_oneof![0usize..70, 4000usize..30000], seed in any::<u64>()) {
        let t = temp_repo();
        let chunks: Vec<ChunkRef> = (0..n).map(|i| {
            let h = blake3::hash(&(seed ^ i as u64).to_le_bytes());
            ChunkRef { id: BlobId(*h.as_bytes()), size: 1 + (i as u32 % 1000) }
        }).collect();
        let mut sink = PackSink { repo: &t.repo, packer: Packer::new(&t.repo) };
        let mut w = ListWriter::new();
        for c in &chunks {
            w.push(*c, &mut sink).unwrap();
        }
        let total = w.bytes;
        let content = w.finish(&mut sink).unwrap();
        sink.packer.finish().unwrap();
        prop_assert_eq!(matches!(content, Content::Inline(_)), n <= crate::tree::INLINE_CHUNKS);
        let back: Vec<ChunkRef> = ChunkIter::new(&t.repo, &content).unwrap().map(|c| c.unwrap()).collect();
        prop_assert_eq!(back, chunks.clone());
        prop_assert_eq!(total, chunks.iter().map(|c| c.size as u64).sum::<u64>());
        // Seeking by the lists' byte counts lands on the chunk holding the offset.
        let mut x = seed | 1;
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let offset = x % (total + 10);
            let (mut it, start) = ChunkIter::at(&t.repo, &content, offset).unwrap();
            let mut pos = 0u64;
            let i = chunks.iter().position(|c| { pos += c.size as u64; pos > offset });
            match i {
                Some(i) => {
                    prop_assert_eq!(start, pos - chunks[i].size as u64);
                    prop_assert_eq!(it.next_chunk().unwrap(), Some(chunks[i]));
                    prop_assert_eq!(it.next_chunk().unwrap(), chunks.get(i + 1).copied());
                }
                None => {
                    prop_assert_eq!(start, total);
                    prop_assert_eq!(it.next_chunk().unwrap(), None);
                }
            }
        }
    }
}

/// A chunk list of `n` chunks stored through `sink`, and its chunks.
fn stored_list(t: &crate::testutil::TestRepo, n: usize) -> (Content, Vec<ChunkRef>) {
    let chunks: Vec<ChunkRef> = (0..n)
        .map(|i| ChunkRef { id: BlobId(*blake3::hash(&(i as u64).to_le_bytes()).as_bytes()), size: 100 + i as u32 % 7 })
        .collect();
    let mut sink = PackSink { repo: &t.repo, packer: Packer::new(&t.repo) };
    let mut w = ListWriter::new();
    for c in &chunks {
        w.push(*c, &mut sink).unwrap();
    }
    let content = w.finish(&mut sink).unwrap();
    sink.packer.finish().unwrap();
    (content, chunks)
}

/// A stored list of 40,000 chunks (~10 leaves), its chunks and its root's children:
/// leaves, or interior nodes where the (keyed, so per repository) interior boundaries
/// fell among the leaves; at least two.
fn stored_list_children(
    t: &crate::testutil::TestRepo,
) -> (Content, Vec<ChunkRef>, Vec<crate::format::tree::ListChild>) {
    let (content, chunks) = stored_list(t, 40000);
    let Content::List(root) = content else { panic!("40000 chunks are not inline") };
    let Node::ListInterior(kids) = t.repo.read_tree(&root).unwrap() else { panic!("not a list root") };
    assert!(kids.len() >= 2, "{} children", kids.len());
    (content, chunks, kids)
}

#[test]
fn a_damaged_list_node_fails_every_time_and_is_never_skipped() {
    let t = temp_repo();
    let (content, chunks, kids) = stored_list_children(&t);
    let loc = t.repo.index().get(&kids[1].id).unwrap();
    crate::testutil::flip_byte(&t.repo.pack_path(&loc.pack), loc.offset as u64 + 40);

    let repo = t.reopen();
    let mut it = ChunkIter::new(&repo, &content).unwrap();
    for c in &chunks[..kids[0].chunks as usize] {
        assert_eq!(it.next_chunk().unwrap(), Some(*c));
    }
    // The damaged second child fails, and fails again: its chunks are never skipped, so
    // no later chunk (or the end) is ever taken for one of them.
    assert!(it.next_chunk().is_err());
    assert!(it.next_chunk().is_err());
}

#[test]
fn a_list_node_that_disagrees_with_its_parents_counts_is_damage() {
    use crate::format::tree::{finish_node, put_list_child, start_node, ListChild, NodeKind};
    let t = temp_repo();
    let (_, chunks, kids) = stored_list_children(&t);
    // The same children, but the second one's byte count is off by one: seeking past
    // it would land one byte off.
    let mut node = Vec::new();
    start_node(&mut node, NodeKind::ListInterior);
    for (i, k) in kids.iter().enumerate() {
        put_list_child(&mut node, &ListChild { id: k.id, bytes: k.bytes + (i == 1) as u64, chunks: k.chunks });
    }
    finish_node(&mut node, kids.len() as u32);
    let mut sink = PackSink { repo: &t.repo, packer: Packer::new(&t.repo) };
    let bad = sink.store_tree(&node).unwrap();
    sink.packer.finish().unwrap();

    let bad = Content::List(bad);
    let mut it = ChunkIter::new(&t.repo, &bad).unwrap();
    for c in &chunks[..kids[0].chunks as usize] {
        assert_eq!(it.next_chunk().unwrap(), Some(*c));
    }
    let err = it.next_chunk().unwrap_err();
    assert!(err.to_string().contains("its parent counts"), "{err}");
    // Seeking into it is refused the same way.
    let past = kids[0].bytes + 10;
    assert!(ChunkIter::at(&t.repo, &bad, past).is_err());
    // The first leaf is fine: a seek into it lands on its chunk.
    let (mut it, start) = ChunkIter::at(&t.repo, &bad, 10).unwrap();
    assert_eq!((start, it.next_chunk().unwrap()), (0, Some(chunks[0])));
}

#[test]
fn a_snapshot_nested_deeper_than_any_path_is_refused_not_a_stack_overflow() {
    use crate::format::tree::Kind;
    use crate::tree::DirWriter;
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("f"), b"x");
    let mut r = do_backup(&t.repo, &[&src]);
    // A chain of 6000 directories named "d", made by hand (a backup, reading by path,
    // can nest at most 2048), under the snapshot's root.
    let template = DirIter::new(&t.repo, &r.snapshot.root).unwrap().next().unwrap().unwrap();
    assert!(matches!(template.kind, Kind::Dir(_)));
    let mut sink = PackSink { repo: &t.repo, packer: Packer::new(&t.repo) };
    let mut id = DirWriter::new().finish(&mut sink).unwrap();
    for _ in 0..6000 {
        let mut e = template.clone();
        e.name = b"d".to_vec();
        e.kind = Kind::Dir(id);
        let mut w = DirWriter::new();
        w.push(&e, &mut sink).unwrap();
        id = w.finish(&mut sink).unwrap();
    }
    sink.packer.finish().unwrap();
    r.snapshot.root = id;
    r.id = t.repo.save_snapshot(&r.snapshot).unwrap();

    // On a thread with a 2 MiB stack, as test threads and fuser's have.
    let target = t.scratch("target");
    std::thread::scope(|s| {
        s.spawn(|| {
            let (_, msgs) = do_restore(&t.repo, &r, &target, &["/nothing/matches"]);
            assert!(msgs.iter().any(|m| m.contains("nested more than")), "{msgs:?}");
            let (_, msgs) = do_check(&t.repo, false);
            assert!(msgs.iter().any(|m| m.contains("nested more than")), "{msgs:?}");
            let (mut n, mut errs) = (0, vec![]);
            let failed = crate::ops::ls::list(
                &t.repo,
                &r.snapshot.root,
                Path::new("/"),
                true,
                &mut |_, _| n += 1,
                &mut |_, e| errs.push(e.to_string()),
            )
            .unwrap();
            assert_eq!(failed, 1);
            assert!(errs[0].contains("nested more than"), "{errs:?}");
            assert!(n >= 4096, "the levels above the limit are listed: {n}");
        });
    });
}
