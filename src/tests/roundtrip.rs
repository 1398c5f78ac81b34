//! Backup -> restore equality of bytes and metadata; dedup; incremental backups.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::testutil::{bytes, temp_repo, write};

/// Everything restore promises to reproduce about one path.
#[derive(Debug, PartialEq)]
struct Meta {
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
    rdev: u64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Index of the first path sharing this inode (hard links), if any.
    link_group: Option<String>,
}

/// Map of relative path -> metadata for a tree.
fn describe(root: &Path) -> BTreeMap<String, Meta> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = m.file_type();
        let kind = format!("{:?}", ft).chars().take(40).collect::<String>();
        let link_group = if ft.is_file() && m.nlink() > 1 {
            Some(inodes.entry((m.dev(), m.ino())).or_insert_with(|| rel.clone()).clone())
        } else {
            None
        };
        out.insert(
            rel,
            Meta {
                kind,
                mode: m.permissions().mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: if ft.is_dir() { 0 } else { m.len() },
                mtime: if ft.is_dir() && p == root { (0, 0) } else { (m.mtime(), m.mtime_nsec()) },
                content: ft.is_file().then(|| fs::read(&p).unwrap()),
                link: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
                rdev: m.rdev(),
                xattrs: crate::sys::xattrs(&p).unwrap_or_default(),
                link_group,
            },
        );
        if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()).collect();
            names.sort();
            stack.extend(names);
        }
    }
    out
}

/// A source tree with every kind of entry cairn stores.
pub(crate) fn make_tree(root: &Path) {
    write(&root.join("empty"), b"");
    write(&root.join("small.txt"), b"hello world\n");
    write(&root.join("dir/compressible.txt"), &bytes(1, 300_000, true));
    write(&root.join("dir/random.bin"), &bytes(2, 200_000, false));
    // Well over 64 test-sized chunks: the chunk list goes out of line into list nodes.
    write(&root.join("dir/sub/large.bin"), &bytes(3, 3_000_000, false));
    write(&root.join("dir/dup-of-random.bin"), &bytes(2, 200_000, false));
    fs::create_dir_all(root.join("emptydir")).unwrap();
    std::os::unix::fs::symlink("small.txt", root.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("link-dangling")).unwrap();
    fs::hard_link(root.join("small.txt"), root.join("dir/hardlink.txt")).unwrap();
    crate::sys::mknod(&root.join("fifo"), libc::S_IFIFO | 0o640, 0).unwrap();
    fs::set_permissions(root.join("dir/random.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("dir/sub"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(root.join("small.txt"), fs::Permissions::from_mode(0o4755)).unwrap();
    let _ = crate::sys::set_xattr(&root.join("dir/compressible.txt"), b"user.cairn.test", b"value\0with nul");
    crate::sys::set_times(
        &root.join("dir/sub/large.bin"),
        crate::format::tree::Time { sec: 1_000_000_000, nsec: 123_456_789 },
        crate::format::tree::Time { sec: 1_100_000_000, nsec: 987_654_321 },
    )
    .unwrap();
    if crate::sys::euid() == 0 {
        // Ownership by ids that have no names here, and a device node (root only).
        std::os::unix::fs::lchown(root.join("dir/random.bin"), Some(4242), Some(4343)).unwrap();
        std::os::unix::fs::lchown(root.join("link-rel"), Some(4244), Some(4345)).unwrap();
        crate::sys::mknod(&root.join("null-like"), libc::S_IFCHR | 0o644, libc::makedev(1, 3)).unwrap();
    }
}

#[test]
fn backup_restore_reproduces_bytes_and_metadata() {
    let t = temp_repo();
    let src = t.scratch("src");
    make_tree(&src);
    let r = do_backup(&t.repo, &[&src]);
    assert_eq!(r.snapshot.summary.files_new, 7);
    let out = t.scratch("out");
    let repo = t.reopen();
    let (stats, msgs) = do_restore(&repo, &r, &out, &[]);
    assert!(msgs.is_empty(), "{msgs:?}");
    assert_eq!(stats.errors, 0);
    let restored = out.join(src.strip_prefix("/").unwrap());
    let (a, b) = (describe(&src), describe(&restored));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert_eq!(Some(v), b.get(k), "{k}");
    }
    let (cs, msgs) = do_check(&repo, true);
    assert_eq!(cs.errors, 0, "{msgs:?}");
}

#[test]
fn dedup_across_files_and_snapshots() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("a"), &bytes(7, 500_000, false));
    write(&src.join("b"), &bytes(7, 500_000, false));
    let r1 = do_backup(&t.repo, &[&src]);
    // Two identical 500 kB files are stored once: the data added is about one copy.
    assert!(r1.snapshot.summary.bytes_added < 600_000, "{}", r1.snapshot.summary.bytes_added);
    // A copy elsewhere, in a new snapshot with no parent, adds no data blobs.
    let src2 = t.scratch("src2");
    write(&src2.join("c"), &bytes(7, 500_000, false));
    let before = t.repo.index().len();
    let r2 = do_backup(&t.repo, &[&src2]);
    assert!(r2.snapshot.summary.bytes_added < 10_000, "{}", r2.snapshot.summary.bytes_added);
    assert!(t.repo.index().len() - before <= 4, "only tree blobs are new");
}

#[test]
fn incremental_backup_reads_only_changed_files() {
    let t = temp_repo();
    let src = t.scratch("src");
    make_tree(&src);
    let r1 = do_backup(&t.repo, &[&src]);
    let repo = t.reopen();
    let r2 = do_backup(&repo, &[&src]);
    assert_eq!(r2.parent, Some(r1.id));
    let s = r2.snapshot.summary;
    assert_eq!((s.files_new, s.files_changed, s.bytes_read), (0, 0, 0), "{s:?}");
    assert_eq!(s.files_unchanged, 7);
    // The source's tree is the same blob. (Not the snapshot root: that holds the
    // metadata of /tmp, which other tests change concurrently.)
    let tree_of = |r: &BackupResult| restore::resolve(&repo, &r.snapshot.root, &src).unwrap().kind;
    assert_eq!(tree_of(&r2), tree_of(&r1), "unchanged source, same tree");
    // Change one file: only it is read.
    write(&src.join("dir/random.bin"), &bytes(9, 200_001, false));
    let r3 = do_backup(&repo, &[&src]);
    let s = r3.snapshot.summary;
    assert_eq!((s.files_changed, s.bytes_read), (1, 200_001), "{s:?}");
    // --force rereads everything.
    let opts = BackupOptions { paths: vec![src.clone()], force: true, ..Default::default() };
    let r4 = backup::backup(&repo, &opts, &Collect::default(), &AtomicBool::new(false)).unwrap();
    assert_eq!(r4.snapshot.summary.files_unchanged, 0);
    assert!(r4.snapshot.summary.bytes_read > 3_000_000);
    assert_eq!(tree_of(&r4), tree_of(&r3));
}

#[test]
fn several_sources_and_include_filter() {
    let t = temp_repo();
    let (a, b) = (t.scratch("one/a"), t.scratch("two"));
    write(&a.join("x.conf"), b"x");
    write(&a.join("y.txt"), b"y");
    write(&b.join("deep/z.conf"), b"z");
    let r = do_backup(&t.repo, &[&b, &a]);
    assert_eq!(r.snapshot.paths, vec![a.clone(), b.clone()]);
    let out = t.scratch("out");
    let (stats, msgs) = do_restore(&t.repo, &r, &out, &["*.conf"]);
    assert!(msgs.is_empty(), "{msgs:?}");
    assert_eq!(stats.files, 2);
    let rel = |p: &Path| out.join(p.strip_prefix("/").unwrap());
    assert_eq!(fs::read(rel(&a.join("x.conf"))).unwrap(), b"x");
    assert_eq!(fs::read(rel(&b.join("deep/z.conf"))).unwrap(), b"z");
    assert!(!rel(&a.join("y.txt")).exists());
}

#[test]
fn restore_a_subdirectory_and_ls() {
    let t = temp_repo();
    let src = t.scratch("src");
    make_tree(&src);
    let r = do_backup(&t.repo, &[&src]);
    let sub = src.join("dir");
    let e = restore::resolve(&t.repo, &r.snapshot.root, &sub).unwrap();
    let out = t.scratch("out");
    let opts = RestoreOptions { target: out.clone(), ..Default::default() };
    restore::restore(&t.repo, &e, &sub, &opts, &Collect::default(), &AtomicBool::new(false)).unwrap();
    assert_eq!(fs::read(out.join("sub/large.bin")).unwrap(), bytes(3, 3_000_000, false));
    let mut names = vec![];
    let failed = crate::ls::list(
        &t.repo,
        &r.snapshot.root,
        &sub,
        false,
        &mut |p, _| names.push(p.file_name().unwrap().to_string_lossy().into_owned()),
        &mut |p, e| panic!("{}: {e}", p.display()),
    )
    .unwrap();
    assert_eq!(failed, 0);
    assert_eq!(names, ["compressible.txt", "dup-of-random.bin", "hardlink.txt", "random.bin", "sub"]);
    assert!(matches!(
        restore::resolve(&t.repo, &r.snapshot.root, &src.join("nope")),
        Err(crate::Error::NotFound { .. })
    ));
}

#[test]
fn sparse_zero_runs_restore_as_holes_with_equal_bytes() {
    let t = temp_repo();
    let src = t.scratch("src");
    let mut data = vec![0u8; 2_000_000];
    data.extend(bytes(4, 100_000, false));
    data.extend(vec![0u8; 500_000]);
    write(&src.join("vm.img"), &data);
    let r = do_backup(&t.repo, &[&src]);
    let out = t.scratch("out");
    do_restore(&t.repo, &r, &out, &[]);
    let p = out.join(src.strip_prefix("/").unwrap()).join("vm.img");
    assert_eq!(fs::read(&p).unwrap(), data);
}

#[test]
fn interrupted_backup_leaves_a_usable_repository_and_reuses_data() {
    let t = temp_repo();
    let src = t.scratch("src");
    for i in 0..40 {
        write(&src.join(format!("f{i:02}")), &bytes(100 + i, 300_000, false));
    }
    // Cancel from another thread once an index file shows some data went through.
    let cancel = AtomicBool::new(false);
    let opts = BackupOptions { paths: vec![src.clone()], ..Default::default() };
    let reporter = Collect::default();
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            // Wait until a pack has been written, then interrupt.
            let data = t.path().join("index");
            for _ in 0..2000 {
                if fs::read_dir(&data).unwrap().count() > 0 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        backup::backup(&t.repo, &opts, &reporter, &cancel)
    });
    match r {
        Err(crate::Error::Interrupted) => {}
        Ok(_) => eprintln!("backup finished before the interrupt; nothing to test"),
        Err(e) => panic!("{e}"),
    }
    assert!(t.repo.snapshots().unwrap().len() <= 1);
    let repo = t.reopen();
    let stored_before = repo.index().len();
    let (cs, msgs) = do_check(&repo, true);
    assert_eq!(cs.errors, 0, "{msgs:?}");
    let r2 = do_backup(&repo, &[&src]);
    assert_eq!(r2.snapshot.summary.files(), 40);
    // What the interrupted run stored was indexed and reused, never stored again: every
    // index entry across all index files names a distinct blob.
    let repo = t.reopen();
    let mut entries = 0;
    for ix in repo.backend().list(crate::backend::Dir::Index).unwrap() {
        entries += repo.read_index_file(&ix).unwrap().len();
    }
    assert_eq!(entries, repo.index().len());
    assert!(stored_before <= repo.index().len());
    let (cs, msgs) = do_check(&repo, true);
    assert_eq!(cs.errors, 0, "{msgs:?}");
}

#[test]
fn concurrent_backups_into_one_repository_both_succeed() {
    let t = temp_repo();
    let (a, b) = (t.scratch("a"), t.scratch("b"));
    for i in 0..10 {
        write(&a.join(format!("{i}")), &bytes(i, 100_000, true));
        write(&b.join(format!("{i}")), &bytes(i + 5, 100_000, true));
    }
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| do_backup(&t.reopen(), &[&a]));
        let hb = s.spawn(|| do_backup(&t.reopen(), &[&b]));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let repo = t.reopen();
    assert_eq!(repo.snapshots().unwrap().len(), 2);
    let (cs, msgs) = do_check(&repo, true);
    assert_eq!(cs.errors, 0, "{msgs:?}");
    for (r, src) in [(ra, &a), (rb, &b)] {
        let out = t.scratch(&format!("out-{}", r.id.short()));
        do_restore(&repo, &r, &out, &[]);
        assert_eq!(describe(src).len(), describe(&out.join(src.strip_prefix("/").unwrap())).len());
    }
}
