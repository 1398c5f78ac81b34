//! Restoring over an existing tree: `--overwrite`, `--delete`, `--dry-run`, `--verify`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::roundtrip::make_tree;
use super::*;
use crate::ops::restore::Overwrite;
use crate::testutil::{bytes, temp_repo, write};

/// Restore all of `r` into `target` with `opts` (target filled in); stats and messages.
fn restore_with(
    repo: &Repository,
    r: &BackupResult,
    target: &Path,
    opts: RestoreOptions,
) -> (RestoreStats, Vec<String>) {
    let root = restore::resolve(repo, &r.snapshot.root, Path::new("/")).unwrap();
    let opts = RestoreOptions { target: target.to_path_buf(), ..opts };
    let c = Collect::default();
    let stats = restore::restore(repo, &root, Path::new("/"), &opts, &c, &AtomicBool::new(false)).unwrap();
    (stats, c.all())
}

/// Everything under `root` by path: mode, inode, mtime, and content (a symlink's target).
fn state(root: &Path) -> BTreeMap<PathBuf, (u32, u64, i64, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                fs::read(&p).unwrap()
            } else if m.file_type().is_symlink() {
                use std::os::unix::ffi::OsStrExt;
                fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()
            } else {
                Vec::new()
            };
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                (m.mode(), m.ino(), m.mtime(), m.mtime_nsec(), content),
            );
        }
    }
    out
}

/// A source tree of several multi-chunk files, backed up; the repository, the snapshot
/// and where in a target the source lands.
fn setup() -> (crate::testutil::TestRepo, BackupResult, PathBuf, PathBuf) {
    let t = temp_repo();
    let src = t.scratch("src");
    make_tree(&src);
    write(&src.join("grow.bin"), &bytes(7, 400_000, false));
    write(&src.join("shrink.bin"), &bytes(8, 400_000, false));
    let r = do_backup(&t.repo, &[&src]);
    (t, r, src.clone(), PathBuf::from(src.strip_prefix("/").unwrap()))
}

#[test]
fn a_second_restore_writes_nothing_and_keeps_every_inode() {
    let (t, r, src, inner) = setup();
    let out = t.scratch("out");
    let (first, msgs) = restore_with(&t.repo, &r, &out, Default::default());
    assert!(msgs.is_empty(), "{msgs:?}");
    assert_eq!(first.unchanged, 0);
    assert!(first.written > 3_000_000, "{first:?}");
    let before = state(&out);
    let (second, msgs) = restore_with(&t.repo, &r, &out, Default::default());
    assert!(msgs.is_empty(), "{msgs:?}");
    // All but the hard-linked file, which is made anew (its 12 bytes): a file of more than
    // one link is never written in place, as it may be linked from outside the target.
    assert_eq!((second.files, second.unchanged, second.written), (first.files, first.files - 1, 12), "{second:?}");
    let after = state(&out);
    // Regular files keep their inodes (nothing replaced), contents and times; the one
    // hard-linked pair is made anew (links are not updated in place).
    for (p, a) in &before {
        let b = &after[p];
        let linked = p.ends_with("small.txt") || p.ends_with("hardlink.txt");
        if a.0 & libc::S_IFMT == libc::S_IFREG && !linked {
            assert_eq!(a.1, b.1, "{} was replaced", p.display());
        }
        assert_eq!((a.0, a.2, a.3, &a.4), (b.0, b.2, b.3, &b.4), "{}", p.display());
    }
    assert_eq!(before.len(), after.len());
    let _ = (src, inner);
}

#[test]
fn always_rewrites_only_the_chunks_that_differ() {
    let (t, r, src, inner) = setup();
    let out = t.scratch("out");
    restore_with(&t.repo, &r, &out, Default::default());
    let base = out.join(&inner);
    // One byte changed in the middle of a 3 MB file, one file grown, one cut short, a
    // file turned into a directory, and a symlink into a file.
    let large = base.join("dir/sub/large.bin");
    let ino = fs::metadata(&large).unwrap().ino();
    crate::testutil::flip_byte(&large, 1_500_000);
    let mut grown = fs::read(base.join("grow.bin")).unwrap();
    grown.extend(bytes(9, 100_000, false));
    write(&base.join("grow.bin"), &grown);
    let cut = fs::read(base.join("shrink.bin")).unwrap();
    write(&base.join("shrink.bin"), &cut[..100_000]);
    fs::remove_file(base.join("dir/random.bin")).unwrap();
    write(&base.join("dir/random.bin/inside"), b"in the way");
    fs::remove_file(base.join("link-rel")).unwrap();
    write(&base.join("link-rel"), b"not a link");
    let (stats, msgs) = restore_with(&t.repo, &r, &out, RestoreOptions { delete: true, ..Default::default() });
    assert!(msgs.is_empty(), "{msgs:?}");
    // The flipped chunk (at most 64 KiB in tests), the grown file's tail, the cut
    // file's lost 300 kB, and the 200 kB file that was a directory.
    assert!(stats.written >= 500_000 && stats.written <= 600_000 + 2 * 65_536, "{stats:?}");
    assert_eq!(fs::metadata(&large).unwrap().ino(), ino, "updated in place, not replaced");
    assert_eq!(fs::read(&large).unwrap(), bytes(3, 3_000_000, false));
    assert_eq!(fs::read(base.join("grow.bin")).unwrap(), bytes(7, 400_000, false));
    assert_eq!(fs::read(base.join("shrink.bin")).unwrap(), bytes(8, 400_000, false));
    assert_eq!(fs::read(base.join("dir/random.bin")).unwrap(), bytes(2, 200_000, false));
    assert_eq!(fs::read_link(base.join("link-rel")).unwrap(), Path::new("small.txt"));
    assert_eq!(state(&src).len(), state(&base).len());
}

#[test]
fn if_changed_trusts_size_and_time_and_always_does_not() {
    let (t, r, _src, inner) = setup();
    let out = t.scratch("out");
    restore_with(&t.repo, &r, &out, Default::default());
    let p = out.join(&inner).join("dir/compressible.txt");
    let m = fs::metadata(&p).unwrap();
    // Same size, same mtime, other bytes: what a quick check cannot see.
    crate::testutil::flip_byte(&p, 10);
    let t0 = crate::format::tree::Time { sec: m.mtime(), nsec: m.mtime_nsec() as u32 };
    crate::sys::set_times(&p, t0, t0).unwrap();
    let quick = RestoreOptions { overwrite: Overwrite::IfChanged, ..Default::default() };
    let (stats, _) = restore_with(&t.repo, &r, &out, quick);
    assert_eq!((stats.written, stats.unchanged), (12, stats.files - 1), "{stats:?}");
    assert_ne!(fs::read(&p).unwrap(), bytes(1, 300_000, true));
    let (stats, _) = restore_with(&t.repo, &r, &out, Default::default());
    assert!(stats.written > 12 && stats.written <= 12 + 65_536, "{stats:?}");
    assert_eq!(fs::read(&p).unwrap(), bytes(1, 300_000, true));
}

#[test]
fn if_newer_and_never_leave_what_is_there() {
    let (t, r, _src, inner) = setup();
    let out = t.scratch("out");
    restore_with(&t.repo, &r, &out, Default::default());
    let base = out.join(&inner);
    let (newer, older) = (base.join("grow.bin"), base.join("shrink.bin"));
    write(&newer, b"edited later");
    write(&older, b"edited long ago");
    let long_ago = crate::format::tree::Time { sec: 1_000, nsec: 0 };
    crate::sys::set_times(&older, long_ago, long_ago).unwrap();
    fs::remove_file(base.join("small.txt")).unwrap();
    let never = RestoreOptions { overwrite: Overwrite::Never, ..Default::default() };
    let (stats, msgs) = restore_with(&t.repo, &r, &out, never);
    assert!(msgs.is_empty(), "{msgs:?}");
    assert_eq!(fs::read(&newer).unwrap(), b"edited later");
    assert_eq!(fs::read(&older).unwrap(), b"edited long ago");
    // Only the missing file comes back (and the link to it, which was there: skipped).
    assert_eq!(fs::read(base.join("small.txt")).unwrap(), b"hello world\n");
    assert_eq!(stats.files, 1, "{stats:?}");
    assert!(stats.skipped >= 10, "{stats:?}");
    let if_newer = RestoreOptions { overwrite: Overwrite::IfNewer, ..Default::default() };
    let (stats, _) = restore_with(&t.repo, &r, &out, if_newer);
    assert_eq!(fs::read(&newer).unwrap(), b"edited later");
    assert_eq!(fs::read(&older).unwrap(), bytes(8, 400_000, false));
    assert_eq!(stats.files, 1, "{stats:?}");
}

#[test]
fn delete_removes_only_what_the_snapshot_and_the_filters_leave_out() {
    let (t, r, _src, inner) = setup();
    let out = t.scratch("out");
    restore_with(&t.repo, &r, &out, Default::default());
    let base = out.join(&inner);
    write(&base.join("extra.txt"), b"x");
    write(&base.join("dir/extra-tree/a/b/c.txt"), b"c");
    std::os::unix::fs::symlink("/etc/passwd", base.join("dir/extra-link")).unwrap();
    write(&base.join("keep.log"), b"excluded, so kept");
    write(&out.join("beside-the-snapshot"), b"outside the snapshot's paths");
    let mut exclude = crate::pattern::Patterns::new();
    exclude.add("--exclude", "*.log", false).unwrap();
    let opts = RestoreOptions { delete: true, exclude, ..Default::default() };
    let (stats, msgs) = restore_with(&t.repo, &r, &out, opts);
    assert!(msgs.is_empty(), "{msgs:?}");
    // extra.txt, the link, extra-tree with a, b and c.txt, and beside-the-snapshot.
    assert_eq!(stats.deleted, 7, "{stats:?}");
    assert!(!base.join("extra.txt").exists() && !base.join("dir/extra-tree").exists());
    assert!(fs::symlink_metadata(base.join("dir/extra-link")).is_err());
    assert!(base.join("keep.log").exists());
    // The target's root holds the snapshot's root: what is beside its paths goes too.
    assert!(!out.join("beside-the-snapshot").exists());
    assert!(fs::metadata("/etc/passwd").is_ok(), "a link is removed, not followed");
}

#[test]
fn a_dry_run_changes_nothing_and_predicts_the_restore() {
    let (t, r, _src, inner) = setup();
    // Into a directory that does not exist: it is not made.
    let none = t.scratch("none");
    let dry = || RestoreOptions { dry_run: true, delete: true, ..Default::default() };
    let (stats, msgs) = restore_with(&t.repo, &r, &none, dry());
    assert!(msgs.is_empty(), "{msgs:?}");
    assert!(!none.exists());
    let (real, _) = restore_with(&t.repo, &r, &t.scratch("fresh"), Default::default());
    assert_eq!((stats.files, stats.dirs, stats.others, stats.bytes), (real.files, real.dirs, real.others, real.bytes));
    // Over a changed tree: what it would write and delete is what the restore then does.
    let out = t.scratch("out");
    restore_with(&t.repo, &r, &out, Default::default());
    let base = out.join(&inner);
    crate::testutil::flip_byte(&base.join("dir/sub/large.bin"), 2_000_000);
    write(&base.join("shrink.bin"), b"short");
    write(&base.join("dir/extra/a.txt"), b"a");
    let before = state(&out);
    let (predicted, msgs) = restore_with(&t.repo, &r, &out, dry());
    assert!(msgs.is_empty(), "{msgs:?}");
    assert_eq!(state(&out), before, "a dry run changed the target");
    let (done, _) = restore_with(&t.repo, &r, &out, RestoreOptions { delete: true, ..Default::default() });
    assert_eq!(
        (predicted.files, predicted.unchanged, predicted.written, predicted.deleted),
        (done.files, done.unchanged, done.written, done.deleted)
    );
    assert_eq!(done.deleted, 2);
    assert!(done.written > 400_000 + 12 && done.written < 400_000 + 12 + 65_536, "{done:?}");
}

#[test]
fn verify_reads_back_every_file() {
    let (t, r, _src, _inner) = setup();
    let (stats, msgs) =
        restore_with(&t.repo, &r, &t.scratch("out"), RestoreOptions { verify: true, ..Default::default() });
    assert!(msgs.is_empty(), "{msgs:?}");
    assert_eq!(stats.verified, stats.files);
    assert!(stats.verified >= 8, "{stats:?}");
}

#[test]
fn a_hard_link_to_a_file_elsewhere_is_replaced_not_written_through() {
    let (t, r, _src, inner) = setup();
    let out = t.scratch("out");
    restore_with(&t.repo, &r, &out, Default::default());
    // Another user plants a hard link to a file outside the target under a name the
    // restore will write: the file outside must keep its bytes and metadata.
    let outside = t.scratch("outside.txt");
    write(&outside, b"secret");
    let victim = out.join(&inner).join("grow.bin");
    fs::remove_file(&victim).unwrap();
    fs::hard_link(&outside, &victim).unwrap();
    let mode = fs::metadata(&outside).unwrap().mode();
    for overwrite in [Overwrite::Always, Overwrite::IfChanged] {
        let (_, msgs) = restore_with(&t.repo, &r, &out, RestoreOptions { overwrite, ..Default::default() });
        assert!(msgs.is_empty(), "{msgs:?}");
        assert_eq!(fs::read(&outside).unwrap(), b"secret");
        assert_eq!(fs::metadata(&outside).unwrap().mode(), mode);
        assert_eq!(fs::read(&victim).unwrap(), bytes(7, 400_000, false));
        fs::remove_file(&victim).unwrap();
        fs::hard_link(&outside, &victim).unwrap();
    }
}

#[test]
fn a_program_running_from_the_target_is_replaced() {
    let t = temp_repo();
    let src = t.scratch("src");
    fs::create_dir_all(&src).unwrap();
    fs::copy("/bin/sleep", src.join("prog")).unwrap();
    let r = do_backup(&t.repo, &[&src]);
    let out = t.scratch("out");
    restore_with(&t.repo, &r, &out, Default::default());
    let prog = out.join(src.strip_prefix("/").unwrap()).join("prog");
    // Running, it cannot be opened for writing (ETXTBSY): it is replaced instead.
    let mut child = std::process::Command::new(&prog).arg("30").spawn().unwrap();
    let (stats, msgs) = restore_with(&t.repo, &r, &out, Default::default());
    let _ = child.kill();
    let _ = child.wait();
    assert!(msgs.is_empty(), "{msgs:?}");
    assert_eq!((stats.files, stats.unchanged), (1, 0), "{stats:?}");
    assert_eq!(fs::read(&prog).unwrap(), fs::read("/bin/sleep").unwrap());
}
