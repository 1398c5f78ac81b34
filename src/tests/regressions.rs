//! Regression tests for bugs found in review (2026-11-22), one per finding.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::backend::Dir;
use crate::format::tree::{Content, Kind};
use crate::testutil::{bytes, flip_byte, temp_repo, write, PASSWORD};

/// Review #10: a storage error during backup used to hang the walker forever on a full
/// job queue. It must fail, promptly, with the storage error.
#[test]
fn r10_storage_error_fails_the_backup_instead_of_hanging() {
    let t = temp_repo();
    let src = t.scratch("src");
    for i in 0..20 {
        write(&src.join(format!("f{i}")), &bytes(i, 300_000, false));
    }
    // tmp/ becomes a file: every pack's temp file fails to be created.
    fs::remove_dir_all(t.path().join("tmp")).unwrap();
    fs::write(t.path().join("tmp"), b"not a directory").unwrap();
    let (tx, rx) = mpsc::channel();
    let path = t.path();
    std::thread::spawn(move || {
        let repo = Repository::open(&path, PASSWORD).unwrap();
        let opts = BackupOptions { paths: vec![src], ..Default::default() };
        let r = backup::backup(&repo, &opts, &Collect::default(), &AtomicBool::new(false));
        let _ = tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
    });
    let r = rx.recv_timeout(Duration::from_secs(60)).expect("backup hung on a storage error");
    let e = r.expect_err("backup succeeded without storage");
    assert!(e.contains("tmp"), "names the failing path: {e}");
}

/// Review #1: with an index file skipped as damaged, unchanged files used to be reused
/// from the parent although their chunks were no longer indexed, so the new snapshot
/// pointed at data the repository could not find.
#[test]
fn r1_reuse_is_verified_when_index_files_were_skipped() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("a"), &bytes(1, 50_000, false));
    write(&src.join("b"), &bytes(2, 50_000, false));
    do_backup(&t.repo, &[&src]);
    for ix in t.repo.backend().list(Dir::Index).unwrap() {
        flip_byte(&t.repo.backend().path(Dir::Index, &ix), 40);
    }
    // The data packs are lost too, so indexing packs from their headers (which heals a
    // damaged index file alone, see r12_1) cannot bring the chunks back: only reading
    // the files again can.
    crate::testutil::lose_data_packs(&t.repo);
    let repo = t.reopen();
    assert!(repo.index_incomplete() && !repo.problems().is_empty());
    let opts = BackupOptions { paths: vec![src.clone()], ..Default::default() };
    let c = Collect::default();
    let r = backup::backup(&repo, &opts, &c, &AtomicBool::new(false)).unwrap();
    assert_eq!(r.snapshot.summary.files_unchanged, 0, "nothing reused blindly");
    let repo = t.reopen();
    let (stats, msgs) = do_restore(&repo, &r, &t.scratch("out"), &[]);
    assert_eq!(stats.errors, 0, "the new snapshot is whole: {msgs:?}");
    assert_eq!(stats.files, 2);
}

/// Review #4: a damaged parent tree used to fail every later backup that picked it.
#[test]
fn r4_damaged_parent_tree_only_costs_rereading() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("d/a"), b"aaaa");
    let r1 = do_backup(&t.repo, &[&src]);
    let loc = t.repo.index().get(&r1.snapshot.root).unwrap();
    flip_byte(&t.repo.pack_path(&loc.pack), loc.offset as u64 + 30);
    let repo = t.reopen();
    let opts = BackupOptions { paths: vec![src.clone()], ..Default::default() };
    let r2 = backup::backup(&repo, &opts, &Collect::default(), &AtomicBool::new(false)).unwrap();
    assert_eq!(r2.parent, Some(r1.id));
    assert_eq!(r2.snapshot.summary.files_new + r2.snapshot.summary.files_changed, 1);
}

/// Review #2: the tree writer refuses out-of-order names instead of storing a node no
/// reader accepts.
#[test]
fn r2_dir_writer_refuses_out_of_order_names() {
    let t = temp_repo();
    struct Null;
    impl crate::tree::TreeSink for Null {
        fn store_tree(&mut self, _: &[u8]) -> crate::Result<crate::id::BlobId> {
            Ok(Default::default())
        }
    }
    let e =
        restore::resolve(&t.repo, &do_backup(&t.repo, &[&t.scratch("repo")]).snapshot.root, Path::new("/")).unwrap();
    let mut w = crate::tree::DirWriter::new();
    let mut b = e.clone();
    b.name = b"b".to_vec();
    let mut a = e;
    a.name = b"a".to_vec();
    w.push(&b, &mut Null).unwrap();
    assert!(w.push(&a, &mut Null).is_err());
    assert!(w.push(&b, &mut Null).is_err(), "duplicates too");
}

/// Review #5: restore used to write into existing files in place: through hard links
/// (even to files outside the target), into fifos (hanging) and devices.
#[test]
fn r5_restore_replaces_existing_files_instead_of_writing_into_them() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("a"), b"new a");
    write(&src.join("f"), b"new f");
    let r = do_backup(&t.repo, &[&src]);
    let out = t.scratch("out");
    let rel = out.join(src.strip_prefix("/").unwrap());
    fs::create_dir_all(&rel).unwrap();
    let outside = t.scratch("outside.txt");
    fs::write(&outside, b"precious").unwrap();
    fs::hard_link(&outside, rel.join("a")).unwrap();
    crate::sys::mknod(&rel.join("f"), libc::S_IFIFO | 0o600, 0).unwrap();
    let (tx, rx) = mpsc::channel();
    let (repo_path, out2) = (t.path(), out.clone());
    let snap = r.snapshot.clone();
    std::thread::spawn(move || {
        let repo = Repository::open(&repo_path, PASSWORD).unwrap();
        let r = BackupResult { id: Default::default(), snapshot: snap, parent: None, dry_run: None };
        let _ = tx.send(do_restore(&repo, &r, &out2, &[]).0.errors);
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)).expect("restore hung on a fifo"), 0);
    assert_eq!(fs::read(&outside).unwrap(), b"precious", "a file outside the target was overwritten");
    assert_eq!(fs::read(rel.join("a")).unwrap(), b"new a");
    assert_eq!(fs::read(rel.join("f")).unwrap(), b"new f");
}

/// Review #6 and #7: --include of a directory below unmatched ones failed, and existing
/// symlinks on the way were followed.
#[test]
fn r6_include_creates_parents_and_never_follows_symlinks() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("a/b/docs/x.txt"), b"x");
    write(&src.join("a/b/docs/sub/y.txt"), b"y");
    write(&src.join("a/other.txt"), b"o");
    write(&src.join("c/z.conf"), b"z");
    let r = do_backup(&t.repo, &[&src]);
    let out = t.scratch("out");
    let rel = out.join(src.strip_prefix("/").unwrap());
    let outside = t.scratch("elsewhere");
    fs::create_dir_all(&outside).unwrap();
    fs::create_dir_all(&rel).unwrap();
    std::os::unix::fs::symlink(&outside, rel.join("c")).unwrap();
    let docs = format!("{}/a/b/docs", src.display());
    let (stats, msgs) = do_restore(&t.repo, &r, &out, &[&docs, "*.conf"]);
    assert_eq!(stats.errors, 0, "{msgs:?}");
    assert_eq!(fs::read(rel.join("a/b/docs/x.txt")).unwrap(), b"x");
    assert_eq!(fs::read(rel.join("a/b/docs/sub/y.txt")).unwrap(), b"y");
    assert!(!rel.join("a/other.txt").exists());
    assert_eq!(fs::read(rel.join("c/z.conf")).unwrap(), b"z");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "wrote through a symlink");
}

/// Review #20: `*` in --include does not cross '/', as in restic and shells.
#[test]
fn r20_star_does_not_cross_directories() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("x/a.conf"), b"a");
    write(&src.join("x/y/b.conf"), b"b");
    let r = do_backup(&t.repo, &[&src]);
    let out = t.scratch("out");
    let pat = format!("{}/x/*.conf", src.display());
    let (stats, _) = do_restore(&t.repo, &r, &out, &[&pat]);
    assert_eq!(stats.files, 1);
    let pat = format!("{}/x/**/*.conf", src.display());
    let (stats, _) = do_restore(&t.repo, &r, &t.scratch("out2"), &[&pat]);
    assert_eq!(stats.files, 2);
}

/// Review #8: restore used to give the target directory the fake metadata of the
/// snapshot root (mode 0755, owner root, time 1970).
#[test]
fn r8_target_directory_keeps_its_own_metadata() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("a"), b"a");
    let r = do_backup(&t.repo, &[&src]);
    let out = t.scratch("out");
    fs::create_dir(&out).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o700)).unwrap();
    let before = fs::metadata(&out).unwrap().modified().unwrap();
    do_restore(&t.repo, &r, &out, &[]);
    let m = fs::metadata(&out).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o700);
    assert!(m.modified().unwrap() >= before);
}

/// Review #9: a file whose restore fails is removed, not left half-written.
#[test]
fn r9_failed_file_is_not_left_half_written() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("big"), &bytes(5, 400_000, false));
    let r = do_backup(&t.repo, &[&src]);
    let e = restore::resolve(&t.repo, &r.snapshot.root, &src.join("big")).unwrap();
    let Kind::File(Content::Inline(cs)) = e.kind else { panic!() };
    let loc = t.repo.index().get(&cs[cs.len() - 1].id).unwrap();
    flip_byte(&t.repo.pack_path(&loc.pack), loc.offset as u64 + 30);
    let repo = t.reopen();
    let out = t.scratch("out");
    let (stats, _) = do_restore(&repo, &r, &out, &[]);
    assert_eq!(stats.errors, 1);
    assert!(!out.join(src.strip_prefix("/").unwrap()).join("big").exists());
}
