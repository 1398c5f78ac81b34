//! Frozen repositories of each released format version: every later cairn must open,
//! check and restore them exactly. `make_fixture_vN` made `fixtures/vN` once
//! (scripts/make-fixture.sh N); they are never regenerated.
//!
//! - v1: the initial format.
//! - v2: snapshots at version 2, recording the classes of xattr names they hold (its
//!   source has a `user.` attribute).
//! - v3: snapshots at version 3, listing the xattr names they hold.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::format::tree::Time;
use crate::testutil::{bytes, write};

fn password(version: u8) -> Vec<u8> {
    format!("cairn-fixture-v{version}").into_bytes()
}

fn fixture_dir(version: u8) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("src/tests/fixtures/v{version}"))
}

/// The source tree the fixture of `version` holds; regenerated here to compare against.
fn fixture_source(root: &Path, version: u8) {
    write(&root.join("hello.txt"), b"hello, cairn\n");
    write(&root.join("empty"), b"");
    // Compressible, many small chunks: its chunk list lives in list nodes.
    write(&root.join("dir/long.txt"), &bytes(11, 4_000_000, true));
    write(&root.join("dir/random.bin"), &bytes(12, 20_000, false));
    std::os::unix::fs::symlink("../hello.txt", root.join("dir/link")).unwrap();
    fs::hard_link(root.join("hello.txt"), root.join("dir/hard.txt")).unwrap();
    crate::sys::mknod(&root.join("fifo"), libc::S_IFIFO | 0o600, 0).unwrap();
    fs::set_permissions(root.join("dir/random.bin"), fs::Permissions::from_mode(0o640)).unwrap();
    let t = Time { sec: 1_700_000_000, nsec: 5 };
    if version >= 2 {
        crate::sys::set_xattr(&root.join("hello.txt"), b"user.cairn", b"v2").unwrap();
    }
    for p in ["hello.txt", "empty", "dir/long.txt", "dir/random.bin", "fifo", "dir/link", "dir"] {
        crate::sys::set_times(&root.join(p), t, t).unwrap();
    }
}

/// Make the frozen fixture of `version` (this build's format); never over an existing one.
fn make_fixture(version: u8) {
    let dir = fixture_dir(version);
    assert!(!dir.exists(), "{} exists: fixtures are frozen, never regenerated", dir.display());
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fixture_source(&src, version);
    let repo_path = dir.join("repo");
    Repository::init(&repo_path, &password(version), &crate::testutil::cheap_options()).unwrap();
    let repo = Repository::open(&repo_path, &password(version)).unwrap();
    let opts = BackupOptions {
        paths: vec![src.clone()],
        host: Some("fixture".into()),
        tags: vec![format!("v{version}")],
        ..Default::default()
    };
    backup::backup(&repo, &opts, &Collect::default(), &AtomicBool::new(false)).unwrap();
    fs::write(dir.join("SOURCE"), src.to_str().unwrap()).unwrap();
    let _ = fs::remove_dir_all(repo_path.join("tmp"));
}

#[test]
#[ignore = "run once by scripts/make-fixture.sh; the fixture is never regenerated"]
fn make_fixture_v2() {
    make_fixture(2);
}

#[test]
#[ignore = "run once by scripts/make-fixture.sh; the fixture is never regenerated"]
fn make_fixture_v3() {
    make_fixture(3);
}

/// Open, check and restore the frozen fixture of `version`; returns its snapshot.
fn read_fixture(version: u8) -> crate::format::snapshot::Snapshot {
    // Work on a copy so nothing can modify the committed files.
    let tmp = tempfile::tempdir().unwrap();
    let repo_path = tmp.path().join("repo");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixture_dir(version).join("repo"))
        .arg(&repo_path)
        .status()
        .unwrap();
    assert!(status.success());
    let repo = Repository::open(&repo_path, &password(version)).unwrap();
    let snaps = repo.snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    let (id, snap) = &snaps[0];
    assert_eq!((snap.host.as_str(), snap.tags.as_slice()), ("fixture", &[format!("v{version}")][..]));
    let (cs, msgs) = do_check(&repo, true);
    assert_eq!(cs.errors, 0, "{msgs:?}");

    let src_path = PathBuf::from(fs::read_to_string(fixture_dir(version).join("SOURCE")).unwrap());
    // The fixture covers out-of-line chunk lists.
    let long = restore::resolve(&repo, &snap.root, &src_path.join("dir/long.txt")).unwrap();
    assert!(
        matches!(long.kind, crate::format::tree::Kind::File(crate::format::tree::Content::List(_))),
        "{:?}",
        long.kind
    );
    let r = BackupResult { id: *id, snapshot: snap.clone(), parent: None, dry_run: None };
    let out = tmp.path().join("out");
    let (stats, msgs) = do_restore(&repo, &r, &out, &[]);
    assert_eq!(stats.errors, 0, "{msgs:?}");
    let got = out.join(src_path.strip_prefix("/").unwrap());
    let expected = tmp.path().join("expected");
    fixture_source(&expected, version);
    for f in ["hello.txt", "empty", "dir/long.txt", "dir/random.bin", "dir/hard.txt"] {
        assert_eq!(fs::read(got.join(f)).unwrap(), fs::read(expected.join(f)).unwrap(), "{f}");
    }
    assert_eq!(fs::read_link(got.join("dir/link")).unwrap(), Path::new("../hello.txt"));
    assert_eq!(fs::metadata(got.join("dir/random.bin")).unwrap().permissions().mode() & 0o777, 0o640);
    assert_eq!(fs::metadata(got.join("dir/long.txt")).unwrap().mtime(), 1_700_000_000);
    assert_eq!(
        fs::metadata(got.join("hello.txt")).unwrap().ino(),
        fs::metadata(got.join("dir/hard.txt")).unwrap().ino()
    );
    assert!(fs::symlink_metadata(got.join("fifo")).unwrap().file_type().is_fifo());
    // The fixture's attributes (a host may add its own, an SELinux label, to any file).
    assert_eq!(
        crate::testutil::user_xattrs(&got.join("hello.txt")),
        crate::testutil::user_xattrs(&expected.join("hello.txt"))
    );
    assert_eq!(crate::testutil::user_xattrs(&got.join("hello.txt")).is_empty(), version < 2);
    snap.clone()
}

#[test]
fn reads_frozen_fixture_v1() {
    assert_eq!(read_fixture(1).xattrs, None, "version 1 does not record xattr classes");
}

#[test]
fn reads_frozen_fixture_v2() {
    let snap = read_fixture(2);
    assert_eq!(snap.xattrs, Some(crate::format::snapshot::XattrClasses::of(b"user.cairn")));
    assert_eq!(snap.xattr_names, None, "version 2 does not list xattr names");
}

#[test]
fn reads_frozen_fixture_v3() {
    let snap = read_fixture(3);
    assert_eq!(snap.xattrs, Some(crate::format::snapshot::XattrClasses::of(b"user.cairn")));
    assert_eq!(snap.xattr_names, Some(vec![b"user.cairn".to_vec()]));
}

use std::os::unix::fs::FileTypeExt;
