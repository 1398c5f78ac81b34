//! Backup's read-ahead (src/ops/backup/ahead.rs): what happens to a file between the
//! scout's listing and a looker's `lstat`, and between the `lstat` and the read, gives
//! the same warnings (and so exit code 3) as the walker gives without read-ahead. The
//! hooks change the file at those very points; in tests the walker waits for the scout,
//! so every entry goes through the read-ahead.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::*;
use crate::ops::backup::{hook_under, BackupOptions, Selection, Stage};
use crate::testutil::{bytes, temp_repo, write};

/// Restore the source `src` of snapshot `r` into `out` and return where it landed.
fn restored(t: &crate::testutil::TestRepo, r: &backup::BackupResult, src: &Path, out: &Path) -> PathBuf {
    let e = restore::resolve(&t.repo, &r.snapshot.root, src).unwrap();
    let opts = RestoreOptions { target: out.to_path_buf(), ..Default::default() };
    restore::restore(&t.repo, &e, src, &opts, &Collect::default(), &AtomicBool::new(false)).unwrap();
    out.to_path_buf()
}

#[test]
fn files_changed_between_listing_and_read_give_the_warnings_they_gave_before() {
    let t = temp_repo();
    let src = t.scratch("src");
    for name in ["keep", "vanish", "gone", "locked", "grow", "shrink", "swap", "dir"] {
        write(&src.join(name), &bytes(name.len() as u64, 5000, true));
    }
    write(&t.scratch("other"), b"another file");
    let other = t.scratch("other");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    let _hook = hook_under(&src, move |path, stage| {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        s2.lock().unwrap().push((name.clone(), stage));
        match (name.as_str(), stage) {
            // Gone before the lstat: the walker warns as for an entry it cannot stat.
            ("vanish", Stage::Listed) => fs::remove_file(path).unwrap(),
            // Gone between the lstat and the open: "cannot read".
            ("gone", Stage::Stated) => fs::remove_file(path).unwrap(),
            // Made unreadable between the lstat and the open: "cannot read". As root, no
            // mode bars a read, so this thread gives up root for file access until the
            // looker is done (the filesystem uid is per thread, and leaving 0 drops the
            // capabilities that override modes).
            ("locked", Stage::Stated) => {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(path, fs::Permissions::from_mode(0o000)).unwrap();
                crate::sys::set_thread_fsuid(65534);
            }
            ("locked", Stage::Looked) => {
                crate::sys::set_thread_fsuid(crate::sys::euid());
            }
            // Grown past what was stat'ed: left to the walker, which stats it again and
            // reads it whole, as it is now: nothing to warn about.
            ("grow", Stage::Stated) => {
                use std::io::Write;
                fs::OpenOptions::new().append(true).open(path).unwrap().write_all(&[7; 3000]).unwrap();
            }
            ("shrink", Stage::Stated) => fs::OpenOptions::new().write(true).open(path).unwrap().set_len(100).unwrap(),
            // Another file (another inode) under the name: not read.
            ("swap", Stage::Stated) => fs::hard_link(&other, path).map(|_| ()).unwrap_or_else(|_| {
                fs::remove_file(path).unwrap();
                fs::hard_link(&other, path).unwrap();
            }),
            // A directory now: not read either.
            ("dir", Stage::Stated) => {
                fs::remove_file(path).unwrap();
                fs::create_dir(path).unwrap();
            }
            _ => {}
        }
    });
    let report = Collect::default();
    let opts = BackupOptions { paths: vec![src.clone()], ..Default::default() };
    let r = backup::backup(&t.repo, &opts, &report, &AtomicBool::new(false)).unwrap();
    drop(_hook);
    let msgs = report.all();
    let warned = |name: &str, what: &str| {
        msgs.iter().any(|m| m.starts_with(&format!("{}:", src.join(name).display())) && m.contains(what))
    };
    assert!(warned("vanish", "No such file"), "{msgs:#?}");
    assert!(warned("gone", "cannot read: No such file"), "{msgs:#?}");
    assert!(warned("locked", "cannot read: Permission denied"), "{msgs:#?}");
    assert!(warned("shrink", "file changed while it was read"), "{msgs:#?}");
    assert!(warned("swap", "replaced by another file"), "{msgs:#?}");
    assert!(warned("dir", "replaced by another file"), "{msgs:#?}");
    assert_eq!(msgs.len(), 6, "{msgs:#?}");
    assert_eq!(r.snapshot.summary.warnings, 6, "six warnings: exit code 3");
    // Every entry went through the read-ahead (the hook saw it listed).
    let seen = seen.lock().unwrap().clone();
    for name in ["keep", "vanish", "gone", "locked", "grow", "shrink", "swap", "dir"] {
        assert!(seen.contains(&(name.to_string(), Stage::Listed)), "{name}: {seen:?}");
    }
    // What was read is what is stored; what could not be read is not.
    let out = restored(&t, &r, &src, &t.scratch("out"));
    assert_eq!(fs::read(out.join("keep")).unwrap(), bytes(4, 5000, true));
    let mut grown = bytes(4, 5000, true);
    grown.extend_from_slice(&[7; 3000]);
    assert_eq!(fs::read(out.join("grow")).unwrap(), grown, "the walker read the grown file whole");
    assert_eq!(fs::read(out.join("shrink")).unwrap(), bytes(6, 100, true));
    for gone in ["vanish", "gone", "locked", "swap", "dir"] {
        assert!(!out.join(gone).exists(), "{gone} is not in the snapshot");
    }
}

#[test]
fn read_ahead_reads_no_file_the_selection_leaves_out_or_the_parent_has_unchanged() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("small"), &bytes(1, 1000, true));
    write(&src.join("large"), &bytes(2, 9000, true));
    write(&src.join("sub/linked"), &bytes(3, 1000, true));
    fs::hard_link(src.join("sub/linked"), src.join("sub/link2")).unwrap();
    let stated = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&stated);
    let _hook = hook_under(&src, move |path, stage| {
        if stage == Stage::Stated {
            s2.lock().unwrap().push(path.file_name().unwrap().to_os_string());
        }
    });
    let select = Selection { larger_than: Some(5000), ..Default::default() };
    let opts = BackupOptions { paths: vec![src.clone()], select, ..Default::default() };
    let r1 = backup::backup(&t.repo, &opts, &Collect::default(), &AtomicBool::new(false)).unwrap();
    // "large" is left out; hard links are the walker's to read (it remembers them).
    assert_eq!(stated.lock().unwrap().as_slice(), ["small"]);
    assert_eq!(r1.snapshot.summary.files_new, 3);
    stated.lock().unwrap().clear();
    // Unchanged since the parent: stat'ed ahead, not read.
    let r2 = backup::backup(&t.repo, &opts, &Collect::default(), &AtomicBool::new(false)).unwrap();
    assert!(stated.lock().unwrap().is_empty(), "{:?}", stated.lock().unwrap());
    assert_eq!((r2.snapshot.summary.files_unchanged, r2.snapshot.summary.bytes_read), (3, 0));
    // Changed: read ahead again (a new inode: the parent's stamp does not match).
    write(&src.join("small"), &bytes(5, 1200, true));
    let r3 = backup::backup(&t.repo, &opts, &Collect::default(), &AtomicBool::new(false)).unwrap();
    assert_eq!(stated.lock().unwrap().as_slice(), ["small"]);
    assert_eq!((r3.snapshot.summary.files_changed, r3.snapshot.summary.bytes_read), (1, 1200));
    let out = restored(&t, &r3, &src, &t.scratch("out"));
    assert_eq!(fs::read(out.join("small")).unwrap(), bytes(5, 1200, true));
    assert_eq!(fs::read(out.join("sub/link2")).unwrap(), bytes(3, 1000, true));
}

#[test]
fn a_file_too_large_to_read_ahead_is_stated_again_before_it_is_read() {
    // The looker's lstat of a file it does not read may be long past when the walker
    // reads it: a file replaced by a rename meanwhile (as editors save) is backed up as it
    // is now, without a warning, not skipped as "replaced by another file".
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("big"), &bytes(1, 300_000, true));
    let tmp = t.scratch("big.new");
    let _hook = hook_under(&src, move |path, stage| {
        if stage == Stage::Looked && path.ends_with("big") {
            write(&tmp, &bytes(2, 310_000, true));
            fs::rename(&tmp, path).unwrap();
        }
    });
    let report = Collect::default();
    let opts = BackupOptions { paths: vec![src.clone()], ..Default::default() };
    let r = backup::backup(&t.repo, &opts, &report, &AtomicBool::new(false)).unwrap();
    drop(_hook);
    assert_eq!(report.all(), Vec::<String>::new());
    let out = restored(&t, &r, &src, &t.scratch("out"));
    assert_eq!(fs::read(out.join("big")).unwrap(), bytes(2, 310_000, true));
}

#[test]
fn the_walker_takes_the_scouts_listing_of_each_directory_that_fits() {
    // One listing per directory: the scout's (or a looker's), handed to the walker. A
    // directory too large to hold is sorted through temp files by the scout and listed
    // again by the walker.
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("a/x"), b"x");
    write(&src.join("a/y"), b"y");
    write(&src.join("b/c/z"), b"z");
    // 1,500 names of 200 bytes: 318,000 bytes listed, past the 256 KiB a listing may hold.
    let big: Vec<String> = (0..1_500).map(|i| format!("{}{i:05}", "n".repeat(195))).collect();
    fs::create_dir(src.join("big")).unwrap();
    for name in &big {
        fs::File::create(src.join("big").join(name)).unwrap();
    }
    let taken = Arc::new(Mutex::new(Vec::new()));
    let t2 = Arc::clone(&taken);
    let _hook = hook_under(&src, move |path, stage| {
        if stage == Stage::ListingTaken {
            t2.lock().unwrap().push(path.to_path_buf());
        }
    });
    let opts = BackupOptions { paths: vec![src.clone()], ..Default::default() };
    let r = backup::backup(&t.repo, &opts, &Collect::default(), &AtomicBool::new(false)).unwrap();
    drop(_hook);
    let want: Vec<PathBuf> = ["", "a", "b", "b/c"].iter().map(|d| src.join(d)).collect();
    let want: Vec<PathBuf> = want.iter().map(|p| p.components().collect()).collect();
    assert_eq!(*taken.lock().unwrap(), want);
    let out = restored(&t, &r, &src, &t.scratch("out"));
    assert_eq!(fs::read(out.join("a/y")).unwrap(), b"y");
    assert_eq!(fs::read(out.join("b/c/z")).unwrap(), b"z");
    let mut names: Vec<String> =
        fs::read_dir(out.join("big")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, big);
    assert_eq!(r.snapshot.summary.files_new, 3 + 1_500);
}
