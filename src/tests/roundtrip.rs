//! Backup -> restore equality of bytes and metadata; dedup; incremental backups.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::format::BlobKind;
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
                // The attributes the tests set: a host's own (an SELinux label given to
                // every new file) are not the snapshot's to reproduce.
                xattrs: crate::testutil::user_xattrs(&p),
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
    crate::testutil::set_test_xattr(&root.join("dir/compressible.txt"), b"user.cairn.test", b"value\0with nul");
    // A small file (read ahead, its xattrs from the open file) with more xattrs than the
    // first buffer holds, names and a value.
    for i in 0..20 {
        crate::testutil::set_test_xattr(&root.join("empty"), format!("user.cairn.name-{i:02}").as_bytes(), b"v");
    }
    crate::testutil::set_test_xattr(&root.join("empty"), b"user.cairn.long", &bytes(4, 1000, false));
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
    let (data_before, trees_before) = blob_kinds(&t.repo);
    let r2 = do_backup(&t.repo, &[&src2]);
    assert!(r2.snapshot.summary.bytes_added < 10_000, "{}", r2.snapshot.summary.bytes_added);
    let (data_after, trees_after) = blob_kinds(&t.repo);
    assert_eq!(data_after, data_before, "no data blob is new");
    // One new listing at most per directory from / down to src2, however deep the
    // temp directory is.
    let dirs = src2.ancestors().count();
    assert!(trees_after - trees_before <= dirs, "{} tree blobs for {dirs} directories", trees_after - trees_before);
}

/// (data blobs, tree blobs) the repository's index files list.
fn blob_kinds(repo: &Repository) -> (usize, usize) {
    let (mut data, mut trees) = (0, 0);
    for ix in repo.backend().list(crate::backend::Dir::Index).unwrap() {
        for e in repo.read_index_file(&ix).unwrap() {
            match e.loc.kind {
                BlobKind::Data => data += 1,
                BlobKind::Tree => trees += 1,
            }
        }
    }
    (data, trees)
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
fn unchanged_entries_keep_their_xattrs_and_changed_ones_are_read_again() {
    // An unchanged inode (same inode number and ctime) keeps the parent's xattrs without
    // reading them; setting an xattr changes the ctime, so it is read again.
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("a"), b"a");
    write(&src.join("b"), b"b");
    if !crate::testutil::set_test_xattr(&src.join("a"), b"user.k", b"v1") {
        return;
    }
    let xattrs_of = |r: &BackupResult, name: &str| {
        let mut x = restore::resolve(&t.repo, &r.snapshot.root, &src.join(name)).unwrap().xattrs;
        x.retain(|(n, _)| n.starts_with(b"user."));
        x
    };
    let user = |v: &[u8]| vec![(b"user.k".to_vec(), v.to_vec())];
    let r1 = do_backup(&t.repo, &[&src]);
    let r2 = do_backup(&t.repo, &[&src]);
    assert_eq!(r2.parent, Some(r1.id));
    assert_eq!((xattrs_of(&r2, "a"), xattrs_of(&r2, "b")), (user(b"v1"), vec![]));
    crate::testutil::set_test_xattr(&src.join("a"), b"user.k", b"v2");
    crate::testutil::set_test_xattr(&src.join("b"), b"user.k", b"new");
    let r3 = do_backup(&t.repo, &[&src]);
    assert_eq!((xattrs_of(&r3, "a"), xattrs_of(&r3, "b")), (user(b"v2"), user(b"new")));
    assert_eq!(r3.snapshot.summary.files_unchanged, 0, "a changed ctime is a changed file");
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
    let failed = crate::ops::ls::list(
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
    // Holes, not written zeros: the 2.5 MB of zeros take no blocks. Allocated are the
    // 100 kB of data and the parts of the chunks around it (at most 64 KiB each side,
    // the tests' largest chunk), plus a block or two of filesystem rounding.
    let allocated = fs::metadata(&p).unwrap().blocks() * 512;
    assert!(allocated <= 100_000 + 2 * 65_536 + 8192, "{allocated} bytes allocated for 100 kB of data");
    let source = fs::metadata(src.join("vm.img")).unwrap().blocks() * 512;
    assert!(source >= data.len() as u64, "the source is not sparse itself ({source} bytes allocated)");
    // The zero chunks are known by their id and never read: damage to the stored one
    // (which `check --read-data` reports) does not reach a restore.
    let zero = t.repo.keys().zero_blob_id(t.repo.config().chunker.max);
    let loc = t.repo.index().get(&zero).expect("a chunk of zeros of the largest size is stored");
    crate::testutil::flip_byte(&t.repo.pack_path(&loc.pack), loc.offset as u64 + 30);
    let out2 = t.scratch("out2");
    let (stats, msgs) = do_restore(&t.reopen(), &r, &out2, &[]);
    assert_eq!(stats.errors, 0, "{msgs:?}");
    assert_eq!(fs::read(out2.join(src.strip_prefix("/").unwrap()).join("vm.img")).unwrap(), data);
}

#[test]
fn restore_writes_a_chunk_opened_for_an_earlier_file_from_the_cache() {
    // A chunk a batch wants twice stays in restore's chunk cache. The first link of a
    // hard-linked file is read by the walker itself, before it goes on (its next link
    // must find it complete), so its repeated chunks (a block that occurs twice in it)
    // are cached when the walker comes to a copy of the file further on: those of the
    // copy's chunks are written from the cache, not read again.
    let t = temp_repo();
    let src = t.scratch("src");
    let block = bytes(11, 300_000, false);
    let data = [&block[..], &block[..]].concat();
    write(&src.join("a/first"), &data);
    fs::hard_link(src.join("a/first"), src.join("a/link")).unwrap();
    for i in 0..50 {
        write(&src.join(format!("m/f{i:02}")), &bytes(100 + i, 3000, true));
    }
    write(&src.join("z/copy"), &data);
    let r = do_backup(&t.repo, &[&src]);
    let copy = restore::resolve(&t.repo, &r.snapshot.root, &src.join("z/copy")).unwrap();
    let crate::format::tree::Kind::File(content) = &copy.kind else { panic!("z/copy is a file") };
    let mut ids = Vec::new();
    crate::tree::for_each_chunk(&t.repo, content, copy.size, &mut |c| {
        ids.push(c.id);
        Ok(())
    })
    .unwrap();
    let n = ids.iter().filter(|id| ids.iter().filter(|o| o == id).count() > 1).count() as u64;
    assert!(n >= 4 && n < ids.len() as u64, "{n} of {} chunks are repeated", ids.len());
    let out = t.scratch("out");
    let (stats, msgs) = do_restore(&t.reopen(), &r, &out, &[]);
    assert!(stats.errors == 0 && msgs.is_empty(), "{msgs:?}");
    assert_eq!(stats.cached, n, "the copy's repeated chunks came from the cache, the others were read");
    let base = out.join(src.strip_prefix("/").unwrap());
    assert_eq!(fs::read(base.join("z/copy")).unwrap(), data);
    assert_eq!(fs::read(base.join("a/link")).unwrap(), data);
    for i in 0..50 {
        assert_eq!(fs::read(base.join(format!("m/f{i:02}"))).unwrap(), bytes(100 + i, 3000, true));
    }
}

/// Interrupts a backup when its walker reaches the repository inside the sources (which
/// it skips, saying so): a point reached after every file sorted before it was read.
struct CancelAtRepository<'a> {
    cancel: &'a AtomicBool,
}

impl backup::Report for CancelAtRepository<'_> {
    fn warn(&self, path: &Path, message: &str) {
        panic!("{}: {message}", path.display());
    }
    fn note(&self, _: &Path, message: &str) {
        if message.contains("repository itself") {
            self.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[test]
fn interrupted_backup_leaves_a_usable_repository_and_reuses_data() {
    let t = temp_repo();
    // The temp dir holds the repository ("repo"): the files named "a.." are backed up
    // before the walker meets it, where the backup is interrupted; those named "z.."
    // are left for the next backup.
    let src = t.dir.path().to_path_buf();
    for i in 0..20 {
        write(&src.join(format!("a{i:02}")), &bytes(100 + i, 300_000, false));
        write(&src.join(format!("z{i:02}")), &bytes(200 + i, 300_000, false));
    }
    let cancel = AtomicBool::new(false);
    let opts = BackupOptions { paths: vec![src.clone()], ..Default::default() };
    let r = backup::backup(&t.repo, &opts, &CancelAtRepository { cancel: &cancel }, &cancel);
    assert!(matches!(r, Err(crate::Error::Interrupted)), "not interrupted: {:?}", r.map(|r| r.snapshot.summary));
    assert!(t.repo.snapshots().unwrap().is_empty(), "an interrupted backup wrote a snapshot");
    let repo = t.reopen();
    let stored_before = repo.index().len();
    // At least the data of the 20 files read before the interrupt (~16 KiB chunks).
    assert!(stored_before >= 20 * 300_000 / 65_536, "only {stored_before} blobs indexed after the interrupt");
    let (cs, msgs) = do_check(&repo, true);
    assert_eq!(cs.errors, 0, "{msgs:?}");
    let r2 = do_backup(&repo, &[&src]);
    assert_eq!(r2.snapshot.summary.files(), 40);
    // What the interrupted run stored was indexed and reused: about the data of the
    // "z" files is added (6 MB, compressed no smaller), not that of all 40.
    let added = r2.snapshot.summary.bytes_added;
    assert!(added < 20 * 300_000 + 500_000, "{added} bytes added: the interrupted run's data was stored again");
    // Never stored twice: every index entry across all index files names a distinct blob.
    let repo = t.reopen();
    let mut entries = 0;
    for ix in repo.backend().list(crate::backend::Dir::Index).unwrap() {
        entries += repo.read_index_file(&ix).unwrap().len();
    }
    assert_eq!(entries, repo.index().len());
    let (cs, msgs) = do_check(&repo, true);
    assert_eq!(cs.errors, 0, "{msgs:?}");
    let (a0, z0) = (format!("{}/a0*", src.display()), format!("{}/z0*", src.display()));
    let (stats, msgs) = do_restore(&repo, &r2, &t.scratch("out"), &[&a0, &z0]);
    assert_eq!((stats.files, stats.errors), (20, 0), "{msgs:?}");
}

/// Restore `r` and compare the restored copy of `src` with it, entry by entry.
pub(super) fn assert_restores_equal(repo: &Repository, r: &BackupResult, src: &Path, out: &Path) {
    let (stats, msgs) = do_restore(repo, r, out, &[]);
    assert!(stats.errors == 0 && msgs.is_empty(), "{msgs:?}");
    let (a, b) = (describe(src), describe(&out.join(src.strip_prefix("/").unwrap())));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert_eq!(Some(v), b.get(k), "{k}");
    }
}

/// Two backups at once into one repository, with `cache` as their cache directory (one
/// shared by both, as two processes of one user have) or private caches.
fn concurrent_backups(cache: Option<PathBuf>) {
    let t = temp_repo();
    let (a, b) = (t.scratch("a"), t.scratch("b"));
    for i in 0..10 {
        write(&a.join(format!("{i}")), &bytes(i, 100_000, true));
        // Half of b's files are a's: both may claim the same chunks.
        write(&b.join(format!("{i}")), &bytes(i + 5, 100_000, true));
    }
    let opts = crate::repo::OpenOptions { cache_dir: cache, ..Default::default() };
    let open = || Repository::open_with(&t.path(), crate::testutil::PASSWORD, &opts).unwrap();
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| do_backup(&open(), &[&a]));
        let hb = s.spawn(|| do_backup(&open(), &[&b]));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    // A later command with the same cache directory sees both.
    let repo = open();
    assert_eq!(repo.snapshots().unwrap().len(), 2);
    let (cs, msgs) = do_check(&repo, true);
    assert_eq!(cs.errors, 0, "{msgs:?}");
    for (r, src) in [(ra, &a), (rb, &b)] {
        assert_restores_equal(&repo, &r, src, &t.scratch(&format!("out-{}", r.id.short())));
    }
}

#[test]
fn concurrent_backups_into_one_repository_both_succeed() {
    concurrent_backups(None);
}

/// The index cache is locked by the first process; the second works in a private temp
/// cache (the lock is per open file, so two threads here contend as two processes do).
#[test]
fn concurrent_backups_sharing_one_cache_directory_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_backups(Some(dir.path().to_path_buf()));
}
