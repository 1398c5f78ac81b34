//! Damaged and hostile repositories: clear errors naming the object, nothing else lost,
//! nothing written outside the restore target.

use std::fs;
use std::path::Path;

use super::*;
use crate::backend::Dir;
use crate::format::tree::{self, Content, Kind, Node};
use crate::format::{BlobKind, Compression};
use crate::id::BlobId;
use crate::repo::SealedBlob;
use crate::testutil::{bytes, flip_byte, temp_repo, write, PASSWORD};
use crate::Error;

fn first_chunk(repo: &Repository, root: &BlobId, path: &Path) -> BlobId {
    match restore::resolve(repo, root, path).unwrap().kind {
        Kind::File(Content::Inline(cs)) => cs[0].id,
        k => panic!("{k:?}"),
    }
}

#[test]
fn damaged_pack_is_named_and_other_files_restore() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("victim"), &bytes(1, 10_000, false));
    write(&src.join("big"), &bytes(2, 2_500_000, false));
    let r = do_backup(&t.repo, &[&src]);
    let id = first_chunk(&t.repo, &r.snapshot.root, &src.join("victim"));
    let loc = t.repo.index().get(&id).unwrap();
    flip_byte(&t.repo.pack_path(&loc.pack), loc.offset as u64 + 40);

    let repo = t.reopen();
    let (cs, msgs) = do_check(&repo, true);
    assert!(cs.errors >= 2, "{msgs:?}");
    let all = msgs.join("\n");
    assert!(all.contains(&loc.pack.to_hex()), "names the pack: {all}");
    assert!(all.contains(&format!("{}", src.join("victim").display())), "names the path: {all}");

    let out = t.scratch("out");
    let (stats, msgs) = do_restore(&repo, &r, &out, &[]);
    assert_eq!(stats.errors, 1, "{msgs:?}");
    assert!(msgs[0].contains("victim") && msgs[0].contains("authentication failed"), "{msgs:?}");
    let rel = out.join(src.strip_prefix("/").unwrap());
    assert_eq!(fs::read(rel.join("big")).unwrap(), bytes(2, 2_500_000, false));
    // The structure check alone (no --read-data) passes: damage inside blobs needs reading.
    let (cs, _) = do_check(&repo, false);
    assert_eq!(cs.errors, 0);
}

#[test]
fn truncated_pack_is_reported_not_a_panic() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("f"), &bytes(1, 100_000, false));
    let r = do_backup(&t.repo, &[&src]);
    let id = first_chunk(&t.repo, &r.snapshot.root, &src.join("f"));
    let loc = t.repo.index().get(&id).unwrap();
    let p = t.repo.pack_path(&loc.pack);
    let len = fs::metadata(&p).unwrap().len();
    fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len / 2).unwrap();
    let repo = t.reopen();
    let (cs, msgs) = do_check(&repo, false);
    assert!(cs.errors > 0, "{msgs:?}");
    let (stats, msgs) = do_restore(&repo, &r, &t.scratch("out"), &[]);
    assert_eq!(stats.errors, 1, "{msgs:?}");
}

#[test]
fn damaged_index_and_snapshot_files_are_skipped_and_reported() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("a"), b"a");
    do_backup(&t.repo, &[&src]);
    write(&src.join("b"), b"b");
    let r2 = do_backup(&t.repo, &[&src]);
    let snaps = t.repo.backend().list(Dir::Snapshots).unwrap();
    let other = snaps.iter().find(|s| **s != r2.id).unwrap();
    flip_byte(&t.repo.backend().path(Dir::Snapshots, other), 30);
    let ix = t.repo.backend().list(Dir::Index).unwrap()[0];
    flip_byte(&t.repo.backend().path(Dir::Index, &ix), 30);

    let repo =
        Repository::open(&t.path(), PASSWORD).expect("a damaged index file must not make the repository unusable");
    let listed = repo.snapshots().unwrap();
    assert_eq!(listed.len(), 1);
    let problems = repo.problems().join("\n");
    assert!(problems.contains(&ix.to_hex()) && problems.contains(&other.to_hex()), "{problems}");
    let (cs, msgs) = do_check(&repo, false);
    assert!(cs.errors >= 2, "{msgs:?}");
}

#[test]
fn wrong_password_unknown_version_and_not_a_repository() {
    let t = temp_repo();
    assert!(matches!(Repository::open(&t.path(), b"wrong"), Err(Error::WrongPassword { .. })));
    assert!(matches!(Repository::open(&t.scratch("nothing"), PASSWORD), Err(Error::NotARepository(_))));
    assert!(matches!(Repository::open(Path::new("/"), PASSWORD), Err(Error::NotARepository(_))));
    let cfg = t.path().join("config");
    let mut b = fs::read(&cfg).unwrap();
    b[8] = 9;
    fs::write(&cfg, b).unwrap();
    match Repository::open(&t.path(), PASSWORD) {
        Err(e @ Error::UnsupportedVersion { found: 9, .. }) => {
            assert!(e.to_string().contains("unsupported format version 9"))
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened a future version"),
    }
}

#[test]
fn hostile_names_never_escape_the_target() {
    let t = temp_repo();
    let data = b"pwned".to_vec();
    let did = t.repo.keys().blob_id(BlobKind::Data, &data);
    let dblob = t.repo.seal_blob(BlobKind::Data, did, &data, None);
    let file = Kind::File(Content::Inline(vec![tree::ChunkRef { id: did, size: 5 }]));
    let mut blobs = vec![dblob];
    let mut results = vec![];
    for bad in [&b".."[..], b"../escape", b"/etc/passwd"] {
        let (id, b) = tree_blob(&t.repo, &Node::DirLeaf(vec![entry(bad, file.clone(), 5)]));
        blobs.push(b);
        results.push(id);
    }
    let ids = results.clone();
    let last = *ids.last().unwrap();
    let r = craft(&t.repo, blobs, last);
    let out = t.scratch("deep/out");
    let (stats, msgs) = do_restore(&t.repo, &r, &out, &[]);
    assert_eq!(stats.files, 0);
    assert!(msgs.iter().any(|m| m.contains("invalid entry name")), "{msgs:?}");
    // Each name alone: refused, naming it, and nothing restored.
    for (root, bad) in ids.into_iter().zip(["..", "../escape", "/etc/passwd"]) {
        let snap = crate::ops::backup::BackupResult {
            id: r.id,
            snapshot: crate::format::snapshot::Snapshot { root, ..r.snapshot.clone() },
            parent: None,
            dry_run: None,
        };
        let (stats, msgs) = do_restore(&t.repo, &snap, &out, &[]);
        assert_eq!((stats.files, stats.errors), (0, 1), "{bad}: {msgs:?}");
        assert!(msgs[0].contains("invalid entry name") && msgs[0].contains(bad), "{bad}: {msgs:?}");
    }
    // Nothing named escape or passwd anywhere under the temp dir, outside or inside.
    let listing =
        String::from_utf8(std::process::Command::new("find").arg(t.dir.path()).output().unwrap().stdout).unwrap();
    assert!(!listing.contains("escape") && !listing.contains("passwd") && !listing.contains("pwned"), "{listing}");
}

#[test]
fn restore_replaces_symlinks_in_the_target_instead_of_following_them() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("x/f"), b"inside");
    let r = do_backup(&t.repo, &[&src]);
    let out = t.scratch("out");
    let outside = t.scratch("outside");
    fs::create_dir_all(&outside).unwrap();
    let rel = out.join(src.strip_prefix("/").unwrap());
    fs::create_dir_all(&rel).unwrap();
    std::os::unix::fs::symlink(&outside, rel.join("x")).unwrap();
    std::os::unix::fs::symlink(outside.join("g"), rel.join("y")).unwrap();
    let (stats, msgs) = do_restore(&t.repo, &r, &out, &[]);
    assert_eq!(stats.errors, 0, "{msgs:?}");
    assert_eq!(fs::read(rel.join("x/f")).unwrap(), b"inside");
    assert!(fs::symlink_metadata(rel.join("x")).unwrap().is_dir());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "nothing written through the symlink");
}

#[test]
fn decompression_bomb_and_lying_sizes_are_refused() {
    let t = temp_repo();
    let big = vec![0u8; 8 << 20];
    let id = t.repo.keys().blob_id(BlobKind::Data, &big);
    let mut c = crate::compress::Compressor::new(3).unwrap();
    let z = c.compress(&big).unwrap().to_vec();
    let bytes = t.repo.keys().seal(&crate::format::blob_aad(BlobKind::Data, Compression::Zstd), &z);
    // The pack header and index claim 1000 bytes; the frame expands to 8 MiB.
    let blob = SealedBlob { id, kind: BlobKind::Data, compression: Compression::Zstd, raw_len: 1000, bytes };
    let file = Kind::File(Content::Inline(vec![tree::ChunkRef { id, size: 1000 }]));
    let (root, tb) = tree_blob(&t.repo, &Node::DirLeaf(vec![entry(b"bomb", file, 1000)]));
    let r = craft(&t.repo, vec![blob, tb], root);
    assert!(matches!(t.repo.read_blob(&id, BlobKind::Data), Err(Error::Corrupt { .. })));
    let (stats, msgs) = do_restore(&t.repo, &r, &t.scratch("out"), &[]);
    assert_eq!(stats.errors, 1, "{msgs:?}");
    let (cs, _) = do_check(&t.repo, true);
    assert!(cs.errors > 0);
}

#[test]
fn source_that_does_not_exist_is_an_error() {
    let t = temp_repo();
    let opts = crate::ops::backup::BackupOptions { paths: vec![t.scratch("missing")], ..Default::default() };
    let e = crate::ops::backup::backup(&t.repo, &opts, &Collect::default(), &std::sync::atomic::AtomicBool::new(false))
        .err()
        .unwrap();
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(t.repo.snapshots().unwrap().is_empty());
}

#[test]
fn several_keys_and_a_bad_key_file_does_not_lock_anyone_out() {
    let t = temp_repo();
    t.repo.add_key(b"second password", crate::crypto::KdfParams::INSECURE_FOR_TESTS).unwrap();
    // Either password opens this very repository (its config is sealed by the master key).
    let same = |pw: &[u8]| assert_eq!(Repository::open(&t.path(), pw).unwrap().config(), t.repo.config());
    same(b"second password");
    // A key file with absurd KDF parameters (it would ask for 4 TiB) and a truncated one.
    let kf = crate::format::key::KeyFile {
        kdf: crate::crypto::KdfParams { mem_kib: u32::MAX, iterations: 1, parallelism: 1 },
        salt: vec![0; 16],
        created: 0,
        host: "h".into(),
        user: "u".into(),
        wrapped: vec![0; 88],
    };
    let bytes = kf.encode();
    let id = crate::id::FileId::of(&bytes);
    fs::write(t.repo.backend().path(Dir::Keys, &id), &bytes).unwrap();
    fs::write(t.repo.backend().path(Dir::Keys, &crate::id::FileId([0; 32])), &bytes[..20]).unwrap();
    same(PASSWORD);
    same(b"second password");
    assert!(matches!(Repository::open(&t.path(), b"nope"), Err(Error::WrongPassword { .. })));
}

#[test]
fn a_stale_key_from_an_interrupted_init_is_not_chosen() {
    let t = temp_repo();
    // Another master key wrapped under the same password, as an interrupted earlier init
    // would leave: it unwraps, but cannot open the config.
    let stale = crate::crypto::Keys::generate();
    let wk =
        crate::crypto::WrappingKey::derive(PASSWORD, &[7; 16], crate::crypto::KdfParams::INSECURE_FOR_TESTS).unwrap();
    let kf = crate::format::key::KeyFile {
        kdf: crate::crypto::KdfParams::INSECURE_FOR_TESTS,
        salt: vec![7; 16],
        created: 0,
        host: "h".into(),
        user: "u".into(),
        wrapped: wk.wrap(&crate::format::key::KeyFile::aad(), &stale),
    };
    let bytes = kf.encode();
    // Named all zeros so it is tried first.
    fs::write(t.repo.backend().path(Dir::Keys, &crate::id::FileId([0; 32])), &bytes).unwrap();
    let repo = Repository::open(&t.path(), PASSWORD).unwrap();
    assert_eq!(repo.config(), t.repo.config());
}

#[test]
fn files_from_a_newer_format_refuse_to_open() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("a"), b"a");
    do_backup(&t.repo, &[&src]);
    let ix = t.repo.backend().list(Dir::Index).unwrap()[0];
    let p = t.repo.backend().path(Dir::Index, &ix);
    let mut b = fs::read(&p).unwrap();
    b[8] = 2;
    fs::write(&p, b).unwrap();
    assert!(matches!(Repository::open(&t.path(), PASSWORD), Err(Error::UnsupportedVersion { found: 2, .. })));
}

#[test]
fn read_data_subsets_partition_the_packs_and_find_damage_in_their_part() {
    use crate::ops::check::{check, CheckOptions, Subset};
    let t = temp_repo();
    let src = t.scratch("src");
    // ~5 MiB that does not compress: several 1 MiB packs.
    for i in 0..5 {
        write(&src.join(format!("f{i}")), &bytes(900 + i, 1 << 20, false));
    }
    let r = do_backup(&t.repo, &[&src]);
    let mut packs = vec![];
    t.repo
        .backend()
        .for_each_pack(|id, _| {
            packs.push(id);
            Ok(())
        })
        .unwrap();
    assert!(packs.len() >= 4, "{} packs", packs.len());
    // Damage one blob of the pack holding f3's first chunk.
    let victim = t.repo.index().get(&first_chunk(&t.repo, &r.snapshot.root, &src.join("f3"))).unwrap();
    flip_byte(&t.repo.pack_path(&victim.pack), victim.offset as u64 + 30);
    let run = |subset| {
        let c = Collect::default();
        let opts = CheckOptions { read_data_subset: Some(subset), ..Default::default() };
        let s = check(&t.repo, opts, &c, &std::sync::atomic::AtomicBool::new(false)).unwrap();
        (s, c.all())
    };
    // Parts 1..3 of 3: each pack is read in exactly one part, and the damage is found
    // in the part of its pack only.
    let m = 3;
    let mut read = 0;
    let mut found_in = vec![];
    for n in 1..=m {
        let (s, msgs) = run(Subset::Part { n, m });
        let want: Vec<_> = packs.iter().filter(|p| Subset::Part { n, m }.selects(p)).collect();
        assert_eq!(s.packs_read, want.len() as u64);
        read += s.packs_read;
        if s.errors > 0 {
            assert!(want.contains(&&victim.pack), "part {n}/{m} reported damage it did not read: {msgs:?}");
            assert!(msgs.iter().any(|m| m.contains(&victim.pack.to_string())), "{msgs:?}");
            found_in.push(n);
        }
    }
    assert_eq!(read, packs.len() as u64);
    assert_eq!(found_in.len(), 1, "the damage was found in parts {found_in:?}");
    // 100% reads every pack and finds it; a small fraction reads some.
    let (all, _) = run(Subset::Fraction(1.0));
    assert_eq!((all.packs_read, all.errors > 0), (packs.len() as u64, true));
    let (none, _) = run(Subset::Fraction(1e-12));
    assert_eq!(none.packs_read, 0);
}

#[test]
fn read_data_subset_arguments_are_checked() {
    use crate::ops::check::Subset;
    assert_eq!(Subset::parse("2/7").unwrap(), Subset::Part { n: 2, m: 7 });
    assert_eq!(Subset::parse("12.5%").unwrap(), Subset::Fraction(0.125));
    for bad in ["0/3", "4/3", "1/0", "x/3", "0%", "101%", "-5%", "", "3", "1/2/3"] {
        let e = Subset::parse(bad).unwrap_err();
        assert!(e.to_string().contains(bad), "{bad}: {e}");
    }
    // Every id is in exactly one part.
    for i in 0..200u64 {
        let id = crate::id::FileId::of(&i.to_le_bytes());
        assert_eq!((1..=5).filter(|&n| Subset::Part { n, m: 5 }.selects(&id)).count(), 1);
    }
}
