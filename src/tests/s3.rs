//! A repository on a real S3 server: `scripts/test.sh` starts `s3s-fs` (a Rust S3
//! server over a directory, from crates.io) on the loopback address with signature
//! authentication, and runs these with `--ignored` and `CAIRN_TEST_S3=http://HOST:PORT`
//! (bucket `cairn`, key `cairn-test` / secret `cairn-test-secret`). Each test works
//! under a prefix of its own. Run without the server, they fail saying so.

use std::path::{Path, PathBuf};

use super::cli::{cairn_in, TestEnv};
use super::roundtrip::{assert_restores_equal, make_tree};
use super::*;
use crate::backend::{Dir, S3Env};
use crate::error::Error;
use crate::id::FileId;
use crate::repo::{OpenOptions, Repository};
use crate::testutil::{bytes, cheap_options, write, PASSWORD};

fn endpoint() -> String {
    std::env::var("CAIRN_TEST_S3").expect("CAIRN_TEST_S3 is not set: run through scripts/test.sh, which starts s3s-fs")
}

fn creds() -> S3Env {
    S3Env {
        access_key_id: Some("cairn-test".into()),
        secret_access_key: Some(String::from("cairn-test-secret").into()),
        ..Default::default()
    }
}

/// A repository location of its own for test `name`.
fn location(name: &str) -> PathBuf {
    PathBuf::from(format!("s3:{}/cairn/{name}-{:016x}", endpoint(), crate::crypto::random_u64()))
}

/// A new repository at an S3 location, opened with a cache directory in `scratch`.
fn s3_repo(name: &str, scratch: &Path) -> (PathBuf, Repository) {
    let at = location(name);
    Repository::init(&at, PASSWORD, &crate::repo::InitOptions { s3: creds(), ..cheap_options() }).unwrap();
    let repo = Repository::open_with(&at, PASSWORD, &open_opts(scratch)).unwrap();
    (at, repo)
}

fn open_opts(scratch: &Path) -> OpenOptions {
    OpenOptions { cache_dir: Some(scratch.join("cache")), s3: creds(), ..Default::default() }
}

#[test]
#[ignore = "needs the S3 server scripts/test.sh starts"]
fn s3_round_trip_of_a_tree_with_all_metadata() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let (at, repo) = s3_repo("round-trip", t.path());
    let r = do_backup(&repo, &[&src]);
    drop(repo);
    // Another process, another cache: everything comes from the server.
    let repo = Repository::open_with(&at, PASSWORD, &open_opts(&t.path().join("other"))).unwrap();
    assert_restores_equal(&repo, &r, &src, &t.path().join("out"));
    let (cs, msgs) = do_check(&repo, true);
    assert_eq!(cs.errors, 0, "{msgs:?}");
    // An unchanged second backup reads no file and stores no data (only the tree
    // nodes of the ancestors, whose times changed as this test wrote beside them).
    let r2 = do_backup(&repo, &[&src]);
    let s = &r2.snapshot.summary;
    assert_eq!((s.files_new, s.files_changed), (0, 0), "{s:?}");
    assert!(s.bytes_added < 4096, "{s:?}");
}

#[test]
#[ignore = "needs the S3 server scripts/test.sh starts"]
fn s3_lists_past_1000_keys_reads_ranges_and_refuses_oversized_objects() {
    let at = location("list");
    let b = crate::backend::open(&at, &creds(), None).unwrap();
    b.create_layout().unwrap();
    // More than one page of ListObjectsV2 (1000 keys).
    let mut ids: Vec<FileId> = (0..1100u32).map(|i| FileId::of(&i.to_le_bytes())).collect();
    std::thread::scope(|s| {
        for part in ids.chunks(275) {
            let b = &b;
            s.spawn(move || {
                for id in part {
                    b.write(Dir::Snapshots, id, &id.0).unwrap();
                }
            });
        }
    });
    ids.sort_unstable();
    assert_eq!(b.list(Dir::Snapshots).unwrap(), ids);
    let mut n = 0;
    b.for_each(Dir::Snapshots, &mut |id, m| {
        assert_eq!((id, m.len), (ids[n], 32));
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 1100);
    // A listing and a HEAD stamp an object alike (or the index cache would check every
    // index file again at each command).
    let listed = b.list_stamped(Dir::Snapshots).unwrap();
    for (id, stamp) in listed.iter().take(20) {
        assert_eq!(b.stamp(Dir::Snapshots, id).unwrap(), *stamp);
    }
    // Packs live under data/<xx>/ and come back in id order.
    let pack = bytes(7, 100_000, false);
    let pid = FileId::of(&pack);
    b.write(Dir::Data, &pid, &pack).unwrap();
    let mut packs = Vec::new();
    b.for_each_pack(|id, len| {
        packs.push((id, len));
        Ok(())
    })
    .unwrap();
    assert_eq!(packs, vec![(pid, 100_000)]);
    // A ranged read, one past the end, a streamed read from an offset.
    let mut buf = vec![0u8; 1000];
    b.read_at(Dir::Data, &pid, 50_000, &mut buf).unwrap();
    assert_eq!(buf, &pack[50_000..51_000]);
    let e = b.read_at(Dir::Data, &pid, 99_500, &mut buf).unwrap_err();
    assert!(matches!(e, Error::Io { ref err, .. } if err.kind() == std::io::ErrorKind::UnexpectedEof), "{e}");
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut b.reader(Dir::Data, &pid, 99_000).unwrap(), &mut rest).unwrap();
    assert_eq!(rest, &pack[99_000..]);
    // A whole read refuses an object larger than its kind allows, and names it.
    let e = b.read(Dir::Data, &pid, 99_999).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }) && e.to_string().contains(&pid.to_string()), "{e}");
    assert!(matches!(b.read(Dir::Index, &pid, 1 << 20), Err(Error::NotFound { .. })));
    b.remove(Dir::Data, &pid).unwrap();
    assert!(b.stat(Dir::Data, &pid).unwrap().is_none());
    b.remove(Dir::Data, &pid).unwrap(); // removing what is gone is no error
}

#[test]
#[ignore = "needs the S3 server scripts/test.sh starts"]
fn s3_two_backups_at_once_both_succeed() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    for i in 0..10 {
        write(&a.join(format!("{i}")), &bytes(i, 100_000, true));
        write(&b.join(format!("{i}")), &bytes(i + 5, 100_000, true)); // half shared with a
    }
    let (at, _) = s3_repo("concurrent", t.path());
    let open = |n: &str| Repository::open_with(&at, PASSWORD, &open_opts(&t.path().join(n))).unwrap();
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| do_backup(&open("ca"), &[&a]));
        let hb = s.spawn(|| do_backup(&open("cb"), &[&b]));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let repo = open("cc");
    assert_eq!(repo.snapshots().unwrap().len(), 2);
    let (cs, msgs) = do_check(&repo, true);
    assert_eq!(cs.errors, 0, "{msgs:?}");
    assert_restores_equal(&repo, &ra, &a, &t.path().join("out-a"));
    assert_restores_equal(&repo, &rb, &b, &t.path().join("out-b"));
}

#[test]
#[ignore = "needs the S3 server scripts/test.sh starts"]
fn s3_wrong_credentials_fail_with_a_clear_error_and_exit_1() {
    let t = tempfile::tempdir().unwrap();
    let (at, _) = s3_repo("creds", t.path());
    let wrong = S3Env { secret_access_key: Some(String::from("not-the-secret").into()), ..creds() };
    let env = TestEnv { password: Some("test password"), s3: wrong, ..Default::default() };
    let out = cairn_in(&at, &env, &["snapshots"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("access denied (403)") && out.stderr.contains(&*at.to_string_lossy()),
        "{}",
        out.stderr
    );
    // The right ones work through the same command line.
    let env = TestEnv { password: Some("test password"), s3: creds(), ..Default::default() };
    let out = cairn_in(&at, &env, &["snapshots"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
#[ignore = "needs the S3 server scripts/test.sh starts"]
fn s3_keeps_checked_local_copies_of_snapshots_and_tree_packs() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let (at, repo) = s3_repo("copies", t.path());
    let r = do_backup(&repo, &[&src]);
    let files = t.path().join("cache").join(crate::id::hex(&repo.config().repo_id)).join("files");
    drop(repo);
    // The packer linked its tree pack into the cache, and the backup its snapshot (the
    // next backup's parent: it reads it from there).
    let copies =
        |dir: &str| -> Vec<PathBuf> { walkdir(&files.join(dir)).into_iter().filter(|p| p.is_file()).collect() };
    assert_eq!(copies("snapshots").len(), 1, "the snapshot written is kept");
    let packs = copies("data");
    assert!(!packs.is_empty(), "no tree pack kept in {}", files.display());
    // A damaged copy is never trusted: it is fetched again, and the restore is exact.
    for p in &packs {
        let mut b = std::fs::read(p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 1;
        std::fs::write(p, b).unwrap();
    }
    let repo = Repository::open_with(&at, PASSWORD, &open_opts(t.path())).unwrap();
    assert_restores_equal(&repo, &r, &src, &t.path().join("out"));
    for p in &packs {
        let b = std::fs::read(p).unwrap();
        assert_eq!(
            FileId::of(&b).to_hex(),
            p.file_name().unwrap().to_str().unwrap(),
            "{} not fetched again",
            p.display()
        );
    }
    assert_eq!(repo.snapshots().unwrap().len(), 1);
    assert_eq!(copies("snapshots").len(), 1, "the snapshot read is kept");
    // A fresh cache (a new machine): the restore fetches each tree pack whole, once.
    drop(repo);
    std::fs::remove_dir_all(t.path().join("cache")).unwrap();
    let repo = Repository::open_with(&at, PASSWORD, &open_opts(t.path())).unwrap();
    assert!(copies("data").is_empty());
    assert_restores_equal(&repo, &r, &src, &t.path().join("out2"));
    assert_eq!(copies("data").len(), packs.len(), "the tree packs are kept by a fresh cache");
    // A snapshot removed from the repository loses its copy at the next listing.
    repo.backend().remove(Dir::Snapshots, &r.id).unwrap();
    assert!(repo.snapshots().unwrap().is_empty());
    assert!(copies("snapshots").is_empty());
}

/// Every path under `dir` (none if it does not exist).
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        }
        out.push(p);
    }
    out
}
