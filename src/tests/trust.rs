//! Issue 12: the defects an adversarial test found, one regression test each (named
//! `r12_<defect>_...`), each failing without its fix.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::backend::Dir;
use crate::format::tree::{ChunkRef, Content};
use crate::format::BlobKind;
use crate::testutil::{temp_repo, write};
use crate::vfs::{Vfs, ROOT};
use crate::Error;

/// The inode of `path` (components under the mount's root) in view `v`.
fn view_ino(v: &Vfs, path: &[&[u8]]) -> u64 {
    let mut ino = ROOT;
    for name in path {
        ino = v.lookup(ino, name).unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(name))).ino;
    }
    ino
}

/// The only snapshot's directory name in the view.
fn only_snapshot(v: &Vfs) -> Vec<u8> {
    let dir = v.lookup(ROOT, b"snapshots").unwrap().ino;
    let mut names = Vec::new();
    v.readdir(dir, 0, &mut |name, _, _, _| {
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
        true
    })
    .unwrap();
    assert_eq!(names.len(), 1, "{names:?}");
    names.pop().unwrap()
}

/// Run the command line in process: exit code, stdout, stderr.
fn cli(repo: &Path, password: &str, args: &[&str]) -> (i32, String, String) {
    let o = super::cli::cairn(repo, password, args);
    (o.code, o.stdout, o.stderr)
}

/// See: issue 12, defect 3. A file whose chunk list names a tree blob must be damage
/// everywhere (restore, the mount's view, check), never the tree node's bytes as content.
#[test]
fn r12_3_a_chunk_naming_a_tree_blob_is_damage_not_content() {
    let t = temp_repo();
    let inner = tree::encode(&Node::DirLeaf(vec![]));
    let (inner_id, inner_blob) = tree_blob(&t.repo, &Node::DirLeaf(vec![]));
    let size = inner.len() as u32;
    let file = Kind::File(Content::Inline(vec![ChunkRef { id: inner_id, size }]));
    let (root, root_blob) = tree_blob(&t.repo, &Node::DirLeaf(vec![entry(b"f", file, size as u64)]));
    let r = craft(&t.repo, vec![inner_blob, root_blob], root);

    assert!(matches!(t.repo.read_blob(&inner_id, BlobKind::Data), Err(Error::Corrupt { .. })));
    let out = t.scratch("out");
    let (stats, msgs) = do_restore(&t.repo, &r, &out, &[]);
    assert_eq!(stats.errors, 1, "{msgs:?}");
    assert!(msgs[0].contains("lists it as a tree blob"), "{msgs:?}");
    assert!(!out.join("f").exists(), "no file holding the node's bytes");

    let v = Vfs::new(Arc::new(t.reopen()), 1 << 20, 1 << 20, (0, 0)).unwrap();
    let snap = only_snapshot(&v);
    let f = view_ino(&v, &[b"snapshots", &snap, b"f"]);
    let err = v.read(f, 0, 4096).unwrap_err();
    assert!(err.to_string().contains("lists it as a tree blob"), "{err}");

    let (cs, msgs) = do_check(&t.repo, false);
    assert!(cs.errors > 0 && msgs.iter().any(|m| m.contains("/f") && m.contains("tree blob")), "{msgs:?}");
}

/// See: issue 12, defect 5. A FIFO at a repository file's path, or a huge sparse file,
/// is refused by its type or size before anything is read (no hang, no allocation).
#[test]
fn r12_5_fifos_and_huge_files_in_the_repository_are_refused_unread() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("a"), b"a");
    let r = do_backup(&t.repo, &[&src]);
    let ix = t.repo.backend().list(Dir::Index).unwrap()[0];
    let loc = t.repo.index().get(&r.snapshot.root).unwrap();

    // A snapshot larger than the format allows: sparse, so it costs no disk.
    let huge = t.repo.backend().path(Dir::Snapshots, &crate::id::FileId([0xab; 32]));
    fs::File::create(&huge).unwrap().set_len(2 << 30).unwrap();
    // The index file and the pack become FIFOs (mkfifo, as a hostile writer could).
    let fifo = |p: &Path| {
        fs::remove_file(p).unwrap();
        crate::sys::mknod(p, libc::S_IFIFO | 0o600, 0).unwrap();
    };
    fifo(&t.repo.backend().path(Dir::Index, &ix));
    fifo(&t.repo.pack_path(&loc.pack));

    let done = std::sync::mpsc::channel();
    let path = t.path();
    std::thread::spawn(move || {
        let repo = Repository::open(&path, crate::testutil::PASSWORD).unwrap();
        let listed = repo.snapshots().unwrap().len();
        let problems = repo.problems().join("\n");
        let tree = repo.read_tree(&r.snapshot.root).err().map(|e| e.to_string());
        let (cs, msgs) = do_check(&repo, true);
        let _ = done.0.send((listed, problems, tree, cs.errors, msgs));
    });
    let (listed, problems, tree, errors, msgs) =
        done.1.recv_timeout(std::time::Duration::from_secs(60)).expect("a FIFO in the repository hung a command");
    assert_eq!(listed, 1, "the intact snapshot is listed");
    assert!(problems.contains("is a fifo") && problems.contains("more than the"), "{problems}");
    assert!(tree.is_some(), "the tree's pack is a FIFO: an error, not a hang");
    assert!(errors >= 2, "{msgs:?}");
}

/// See: issue 12, defect 11. An I/O error says the OS error once, and a restore error
/// names its path once.
#[test]
fn r12_11_errors_say_the_os_error_and_the_path_once() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = |repo: &Path, args: &[&str]| {
        let (code, _, err) = cli(repo, "pw", args);
        (code, err)
    };
    // A repository path under a regular file: ENOTDIR.
    fs::write(dir.path().join("file"), b"x").unwrap();
    let (code, err) = cairn(&dir.path().join("file/repo"), &["init", "--insecure-test-kdf"]);
    assert_eq!(code, crate::cli::EXIT_ERROR);
    assert_eq!(err.matches("os error 20").count(), 1, "{err}");

    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    write(&src.join("a.txt"), b"alpha");
    assert_eq!(cairn(&repo, &["init", "--insecure-test-kdf"]).0, 0);
    assert_eq!(cairn(&repo, &["backup", src.to_str().unwrap()]).0, 0);
    // A non-empty directory where the file goes: it cannot be replaced.
    let out = dir.path().join("out");
    let blocked = out.join(src.strip_prefix("/").unwrap()).join("a.txt");
    write(&blocked.join("x"), b"x");
    let (code, err) = cairn(&repo, &["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_eq!(code, crate::cli::EXIT_ERROR);
    let line = err.lines().find(|l| l.contains("a.txt")).unwrap_or_else(|| panic!("{err}"));
    assert_eq!(line.matches(blocked.to_str().unwrap()).count(), 1, "{line}");
    assert_eq!(line.matches("os error").count(), 1, "{line}");
}

/// See: issue 12, defect 1. A damaged index file hidden by a warm cache: the cache must
/// notice that a file it incorporated changed, check must name the snapshots and files
/// that lost their blobs, a backup must index the packs again from their headers (so a
/// machine with a cold cache finds everything), and `repair index` must leave a
/// repository that checks clean.
#[test]
fn r12_1_a_damaged_index_file_is_noticed_through_a_warm_cache_and_healed() {
    use crate::repo::OpenOptions;
    let t = temp_repo();
    let src = t.scratch("src");
    // 6 MB of data in 1 MiB packs: the first index file is written after four data packs,
    // before the tree pack is finished, so it lists data packs only (as in the report).
    for i in 0..20u64 {
        write(&src.join(format!("f{i}")), &crate::testutil::bytes(i, 300_000, false));
    }
    let warm = OpenOptions { cache_dir: Some(t.scratch("cache")), ..Default::default() };
    let open_warm = || Repository::open_with(&t.path(), crate::testutil::PASSWORD, &warm).unwrap();
    let r = do_backup(&open_warm(), &[&src]);
    let data_only = t
        .repo
        .backend()
        .list(Dir::Index)
        .unwrap()
        .into_iter()
        .find(|f| t.reopen().read_index_file(f).unwrap().iter().all(|e| e.loc.kind == BlobKind::Data));
    let damaged = data_only.expect("an index file of data packs only");
    crate::testutil::flip_byte(&t.repo.backend().path(Dir::Index, &damaged), 100);

    let repo = open_warm();
    assert!(repo.index_incomplete(), "the warm cache noticed the change");
    assert!(repo.problems().join("\n").contains(&damaged.to_hex()), "{:?}", repo.problems());
    let (cs, msgs) = do_check(&repo, false);
    assert!(cs.errors > 0);
    let snap = r.id.short();
    let missing: Vec<&String> = msgs.iter().filter(|m| m.contains(&snap) && m.contains("missing")).collect();
    assert!(!missing.is_empty() && missing.iter().any(|m| m.contains("/f")), "names snapshot and files: {msgs:?}");

    // A backup heals the repository from the pack headers: nothing is stored again.
    let opts = BackupOptions { paths: vec![src.clone()], force: true, ..Default::default() };
    let c = Collect::default();
    let r2 = backup::backup(&repo, &opts, &c, &std::sync::atomic::AtomicBool::new(false)).unwrap();
    // (The root tree holds /tmp's metadata, which other tests change: it may be new.)
    assert!(r2.snapshot.summary.bytes_added < 100_000, "data stored again: {:?}", r2.snapshot.summary);
    assert!(c.all().is_empty(), "{:?}", c.all());
    drop(repo);

    // A cold cache now finds every blob of the first snapshot.
    let cold = t.reopen();
    let (stats, msgs) = do_restore(&cold, &r, &t.scratch("out"), &[]);
    assert_eq!((stats.errors, stats.files), (0, 20), "{msgs:?}");
    let (cs, msgs) = do_check(&cold, true);
    assert_eq!(cs.errors, 1, "only the damaged index file itself: {msgs:?}");

    let stats = crate::ops::repair::repair_index(&cold, false, &Default::default(), &mut |_| {}).unwrap();
    assert_eq!(stats.index_files_removed, 1);
    let (cs, msgs) = do_check(&t.reopen(), true);
    assert_eq!(cs.errors, 0, "{msgs:?}");
}

/// See: issue 12, defect 13. Packs committed by a backup killed before it wrote their
/// index file are indexed from their headers by the next backup (not stored again), and
/// temp files whose writer is gone are removed.
#[test]
fn r12_13_leftovers_of_a_killed_backup_are_reused_and_removed() {
    use crate::repo::OpenOptions;
    let t = temp_repo();
    let src = t.scratch("src");
    for i in 0..10u64 {
        write(&src.join(format!("f{i}")), &crate::testutil::bytes(i, 200_000, false));
    }
    let opts = OpenOptions { cache_dir: Some(t.scratch("cache")), ..Default::default() };
    let repo = Repository::open_with(&t.path(), crate::testutil::PASSWORD, &opts).unwrap();
    // What a kill -9 between a pack's commit and its index file leaves: packs (with the
    // journal naming them) and no index file; plus the temp file of a pack being written.
    let r = do_backup(&repo, &[&src]);
    for ix in repo.backend().list(Dir::Index).unwrap() {
        fs::remove_file(repo.backend().path(Dir::Index, &ix)).unwrap();
    }
    for s in repo.backend().list(Dir::Snapshots).unwrap() {
        fs::remove_file(repo.backend().path(Dir::Snapshots, &s)).unwrap();
    }
    for p in &crate::testutil::packs(&repo) {
        repo.index().journal_pack(p).unwrap();
    }
    let tmp = repo.backend().temp_file().unwrap().abandon();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::options().write(true).open(&tmp).unwrap().set_modified(old).unwrap();
    // A temp file another writer is still writing (it holds the lock), idle as long.
    let busy_file = repo.backend().temp_file().unwrap();
    let busy = busy_file.path().to_path_buf();
    fs::File::options().write(true).open(&busy).unwrap().set_modified(old).unwrap();
    // Another machine's, unlocked but idle only an hour: it may still be written.
    let foreign = repo.path().join("tmp/00000000-0123456789abcdef.tmp");
    fs::write(&foreign, b"x").unwrap();
    fs::File::options().write(true).open(&foreign).unwrap().set_modified(old).unwrap();
    drop(repo);

    let repo = Repository::open_with(&t.path(), crate::testutil::PASSWORD, &opts).unwrap();
    let c = Collect::default();
    let bopts = BackupOptions { paths: vec![src.clone()], ..Default::default() };
    let r2 = backup::backup(&repo, &bopts, &c, &std::sync::atomic::AtomicBool::new(false)).unwrap();
    assert!(r2.snapshot.summary.bytes_added < 100_000, "data stored again: {:?}", r2.snapshot.summary);
    assert!(!tmp.exists(), "the dead writer's temp file is gone");
    assert!(busy.exists(), "a temp file whose writer holds its lock is kept");
    assert!(foreign.exists(), "another machine's temp file idle for an hour is kept");
    drop(busy_file);
    assert!(!busy.exists(), "a temp file dropped unstored is removed");
    let (stats, msgs) = do_restore(&t.reopen(), &r2, &t.scratch("out"), &[]);
    assert_eq!((stats.errors, stats.files), (0, 10), "{msgs:?}");
    let _ = r;
}

/// See: issue 12, defect 2. Trees that restore, `ls` and the mount refuse must fail
/// check too (it walks them with the same reader): a name repeated across two leaves of
/// one directory, an interior node whose counts disagree with its child, a file whose
/// chunks add up to less than its size says.
#[test]
fn r12_2_check_refuses_what_the_readers_refuse() {
    use crate::format::tree::{DirChild, ListChild};
    let t = temp_repo();
    let data = b"sixteen bytes!!!".to_vec();
    let did = t.repo.keys().blob_id(BlobKind::Data, &data);
    let dblob = t.repo.seal_blob(BlobKind::Data, did, &data, None);
    let file = |size| Kind::File(Content::Inline(vec![ChunkRef { id: did, size }]));
    let leaf = |names: &[&[u8]]| Node::DirLeaf(names.iter().map(|n| entry(n, file(16), 16)).collect());
    let (l1, b1) = tree_blob(&t.repo, &leaf(&[b"a", b"b"]));
    let (l2, b2) = tree_blob(&t.repo, &leaf(&[b"b", b"c"]));
    let child = |first: &[u8], id, entries| DirChild { first_name: first.to_vec(), id, entries };
    // 1. "b" in both leaves.
    let (repeated, b3) = tree_blob(&t.repo, &Node::DirInterior(vec![child(b"a", l1, 2), child(b"b", l2, 2)]));
    // 2. The interior node says its first child holds 5 entries; it holds 2.
    let (l3, b4) = tree_blob(&t.repo, &leaf(&[b"x", b"y"]));
    let (miscounted, b5) = tree_blob(&t.repo, &Node::DirInterior(vec![child(b"a", l1, 5), child(b"x", l3, 2)]));
    // 3. A chunk list of 16 bytes under an entry of 2^62.
    let (list, b6) = tree_blob(&t.repo, &Node::ListLeaf(vec![ChunkRef { id: did, size: 16 }]));
    let (list_root, b7) = tree_blob(&t.repo, &Node::ListInterior(vec![ListChild { id: list, bytes: 16, chunks: 1 }]));
    let (oversized, b8) =
        tree_blob(&t.repo, &Node::DirLeaf(vec![entry(b"big", Kind::File(Content::List(list_root)), 1 << 62)]));
    let r = craft(&t.repo, vec![dblob, b1, b2, b3, b4, b5, b6, b7, b8], repeated);
    let snap = |root| BackupResult {
        id: t.repo.save_snapshot(&crate::format::snapshot::Snapshot { root, ..r.snapshot.clone() }).unwrap(),
        snapshot: crate::format::snapshot::Snapshot { root, ..r.snapshot.clone() },
        parent: None,
        dry_run: None,
    };
    for (name, root) in [("repeated", repeated), ("miscounted", miscounted), ("oversized", oversized)] {
        for id in t.repo.backend().list(Dir::Snapshots).unwrap() {
            t.repo.backend().remove(Dir::Snapshots, &id).unwrap();
        }
        let s = snap(root);
        // The readers refuse it...
        let (stats, msgs) = do_restore(&t.repo, &s, &t.scratch(&format!("out-{name}")), &[]);
        assert!(stats.errors > 0, "{name}: restore accepted it: {msgs:?}");
        // ...the mount's view too (a listing, or a read, fails)...
        let v = Vfs::new(Arc::new(t.reopen()), 1 << 20, 1 << 20, (0, 0)).unwrap();
        let dir = view_ino(&v, &[b"snapshots", &only_snapshot(&v)]);
        let refused = match name {
            "oversized" => v.read(v.lookup(dir, b"big").unwrap().ino, 0, 4096).is_err(),
            _ => v.readdir(dir, 0, &mut |_, _, _, _| true).is_err(),
        };
        assert!(refused, "{name}: the mount served it");
        drop(v);
        // ...and so does check, for this snapshot.
        let (cs, msgs) = do_check(&t.repo, true);
        let short = s.id.short();
        assert!(cs.errors > 0 && msgs.iter().any(|m| m.contains(&short)), "{name}: check passed it: {msgs:?}");
    }
}

/// See: issue 12 ("Also"). `ls -R` carries on past a damaged subtree, as restore does,
/// and exits 1 naming it.
#[test]
fn r12_ls_carries_on_past_a_damaged_subtree() {
    let t = temp_repo();
    let data = b"x".to_vec();
    let did = t.repo.keys().blob_id(BlobKind::Data, &data);
    let dblob = t.repo.seal_blob(BlobKind::Data, did, &data, None);
    let file = Kind::File(Content::Inline(vec![ChunkRef { id: did, size: 1 }]));
    let (b, bb) = tree_blob(&t.repo, &Node::DirLeaf(vec![entry(b"x", file, 1)]));
    let missing = crate::id::BlobId([7; 32]);
    let (root, rb) =
        tree_blob(&t.repo, &Node::DirLeaf(vec![entry(b"a", Kind::Dir(missing), 0), entry(b"b", Kind::Dir(b), 0)]));
    craft(&t.repo, vec![dblob, bb, rb], root);
    let (code, out, err) = cli(&t.path(), "test password", &["ls", "-R", "latest"]);
    assert_eq!(code, crate::cli::EXIT_ERROR, "{out}{err}");
    assert!(out.lines().any(|l| l.ends_with("/b/x")), "listed past the damage: {out}");
    assert!(err.contains("/a") && err.contains(&missing.to_hex()), "{err}");
}

/// Plant a key file with these KDF parameters (a random wrapped key: it opens nothing).
fn plant_key(repo: &Repository, kdf: crate::crypto::KdfParams) -> crate::id::FileId {
    let kf = crate::format::key::KeyFile {
        kdf,
        salt: vec![9; 16],
        created: 0,
        host: "h".into(),
        user: "u".into(),
        wrapped: vec![0; 104],
    };
    let bytes = kf.encode();
    let id = crate::id::FileId::of(&bytes);
    fs::write(repo.backend().path(Dir::Keys, &id), &bytes).unwrap();
    id
}

/// See: issue 12, defect 4. A planted key file's KDF parameters are not trusted: one
/// asking for more memory than the budget allows is not tried (the error says so), the
/// others are tried cheapest first, and an explicit limit lets it be tried.
#[test]
fn r12_4_kdf_parameters_over_the_budget_are_not_tried() {
    use crate::budget::Budget;
    use crate::crypto::KdfParams;
    use crate::repo::{KdfLimit, OpenOptions};
    let t = temp_repo();
    // 1 GiB: under --memory 64M the limit is 32 MiB.
    let big = plant_key(&t.repo, KdfParams { mem_kib: 1 << 20, iterations: 4, parallelism: 1 });
    let small = Budget::parse("64M").unwrap();
    assert_eq!(KdfLimit::of_budget(small), KdfLimit { mem_kib: 32 << 10 });
    assert!(KdfLimit::of_budget(small).allows(&KdfParams::DEFAULT), "the default fits the smallest budget");
    assert!(!KdfLimit::of_budget(small).allows(&KdfParams { mem_kib: 32 << 10, iterations: 64, parallelism: 1 }));
    let opts = OpenOptions { budget: small, ..Default::default() };
    // The right password opens without touching the planted key (it would take 1 GiB).
    Repository::open_with(&t.path(), crate::testutil::PASSWORD, &opts).unwrap();
    let e = Repository::open_with(&t.path(), b"wrong", &opts).err().unwrap();
    assert!(matches!(e, Error::WrongPassword { .. }), "{e}");
    assert!(e.to_string().contains(&format!("key {} was not tried", big.short())), "{e}");
    // 64 MiB x 1 (cheap enough for a test), over the 32 MiB limit unless raised.
    fs::remove_file(t.repo.backend().path(Dir::Keys, &big)).unwrap();
    let mid = plant_key(&t.repo, KdfParams { mem_kib: 64 << 10, iterations: 1, parallelism: 1 });
    let e = Repository::open_with(&t.path(), b"wrong", &opts).err().unwrap();
    assert!(e.to_string().contains(&format!("key {} was not tried", mid.short())), "{e}");
    let raised = OpenOptions { kdf_limit: Some(KdfLimit { mem_kib: 64 << 10 }), ..opts };
    let e = Repository::open_with(&t.path(), b"wrong", &raised).err().unwrap();
    assert!(!e.to_string().contains("not tried"), "tried under the raised limit: {e}");
}

/// See: issue 12, defect 9. A damaged config or key file is not "wrong password": the
/// error names the file, and says when no key file is well-formed at all.
#[test]
fn r12_9_damaged_config_and_key_files_are_not_wrong_passwords() {
    let pw = crate::testutil::PASSWORD;
    // A damaged config, the right password: exit 1 naming the config.
    let t = temp_repo();
    crate::testutil::flip_byte(&t.path().join("config"), 40);
    let e = Repository::open(&t.path(), pw).err().unwrap();
    assert!(matches!(e, Error::Corrupt { what: "config", .. }), "{e}");
    let (code, _, err) = cli(&t.path(), "test password", &["snapshots"]);
    assert_eq!(code, crate::cli::EXIT_ERROR, "{err}");
    assert!(err.contains("config"), "{err}");
    // The only key file damaged in its wrapped key: not a password problem.
    let t = temp_repo();
    let key = t.repo.backend().list(Dir::Keys).unwrap()[0];
    let p = t.repo.backend().path(Dir::Keys, &key);
    let len = fs::metadata(&p).unwrap().len();
    crate::testutil::flip_byte(&p, len - 10);
    let e = Repository::open(&t.path(), pw).err().unwrap();
    assert!(matches!(e, Error::Corrupt { .. }) && e.to_string().contains(&key.to_hex()), "{e}");
    // With an intact second key that does not match, it is a wrong password, naming the
    // damaged one as possibly the password's.
    let t2 = temp_repo();
    let mine = t2.repo.backend().list(Dir::Keys).unwrap()[0];
    t2.repo.add_key(b"other", crate::crypto::KdfParams::INSECURE_FOR_TESTS).unwrap();
    let p = t2.repo.backend().path(Dir::Keys, &mine);
    crate::testutil::flip_byte(&p, fs::metadata(&p).unwrap().len() - 10);
    let e = Repository::open(&t2.path(), pw).err().unwrap();
    assert!(matches!(e, Error::WrongPassword { .. }), "{e}");
    assert!(e.to_string().contains(&mine.to_hex()) && e.to_string().contains("damaged"), "{e}");
    assert!(Repository::open(&t2.path(), b"other").is_ok());
    // A planted key file with parameters Argon2 refuses (64 KiB over 16 lanes), which
    // sorts first as the cheapest: skipped as damaged, it locks nobody out.
    let t4 = temp_repo();
    plant_key(&t4.repo, crate::crypto::KdfParams { mem_kib: 64, iterations: 1, parallelism: 16 });
    assert!(Repository::open(&t4.path(), pw).is_ok());
    // The only key file truncated: no key file is well-formed.
    let t3 = temp_repo();
    let key = t3.repo.backend().list(Dir::Keys).unwrap()[0];
    let p = t3.repo.backend().path(Dir::Keys, &key);
    let b = fs::read(&p).unwrap();
    fs::write(&p, &b[..30]).unwrap();
    let e = Repository::open(&t3.path(), pw).err().unwrap();
    assert!(e.to_string().contains("no key file is well-formed") && e.to_string().contains(&key.to_hex()), "{e}");
}

/// See: issue 12, defect 7. `init` refuses an empty password from any source (a
/// password file holding nothing, or only a newline), as the prompt and `key add` do.
#[test]
fn r12_7_init_refuses_an_empty_password_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [("empty", ""), ("newline", "\n")] {
        let pwfile = dir.path().join(name);
        fs::write(&pwfile, content).unwrap();
        let repo = dir.path().join(format!("repo-{name}"));
        let o = super::cli::cairn(
            &repo,
            "unused",
            &["--password-file", pwfile.to_str().unwrap(), "init", "--insecure-test-kdf"],
        );
        assert_eq!(o.code, crate::cli::EXIT_ERROR, "{name}: {}", o.stderr);
        assert!(o.stderr.contains("empty password"), "{}", o.stderr);
        assert!(!repo.join("config").exists(), "no repository was made");
    }
    let repo = dir.path().join("repo");
    assert_eq!(super::cli::cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, 0);
    let pwfile = dir.path().join("newline");
    let o = super::cli::cairn(
        &repo,
        "pw",
        &["key", "add", "--insecure-test-kdf", "--new-password-file", pwfile.to_str().unwrap()],
    );
    assert_eq!(o.code, crate::cli::EXIT_ERROR, "{}", o.stderr);
}

/// See: issue 12 ("Also"). A restore whose `--include` matches nothing says so and
/// fails, instead of exiting 0 having restored nothing.
#[test]
fn r12_restore_include_that_matches_nothing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src) = (dir.path().join("repo"), dir.path().join("src"));
    write(&src.join("a.txt"), b"a");
    assert_eq!(super::cli::cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, 0);
    assert_eq!(super::cli::cairn(&repo, "pw", &["backup", src.to_str().unwrap()]).code, 0);
    let out = dir.path().join("out");
    let o =
        super::cli::cairn(&repo, "pw", &["restore", "latest", "--target", out.to_str().unwrap(), "--include", "*.jpg"]);
    assert_eq!(o.code, crate::cli::EXIT_ERROR, "{}", o.stderr);
    assert!(o.stderr.contains("matches --include *.jpg"), "{}", o.stderr);
    let o =
        super::cli::cairn(&repo, "pw", &["restore", "latest", "--target", out.to_str().unwrap(), "--include", "*.txt"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
}

/// See: issue 12 ("Restore by descriptors"). Another user who can write into the target
/// swaps the directories being restored, again and again while the restore runs: for
/// symlinks to somewhere else, and for directories holding hard links to a file of
/// theirs under the names restore will use (for the first links of hard-linked files,
/// and for fifos). Nothing may be written outside the target, and no owner or mode may
/// be set on anything but what restore made. (With paths resolved by name, files went
/// through the symlinks: 400 of them in each of three runs.)
#[test]
fn r12_restore_cannot_be_redirected_by_swapping_directories_for_symlinks() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let t = temp_repo();
    let src = t.scratch("src");
    for d in 0..4 {
        for i in 0..400 {
            write(&src.join(format!("d{d}/f{i:03}")), format!("{d}/{i}").as_bytes());
        }
    }
    // Hard links whose first link is in d0 and later links in z (restored after d0), and
    // fifos, made setuid where the mode allows it, so that a stolen chmod shows.
    fs::create_dir_all(src.join("z")).unwrap();
    for i in 0..100 {
        let f = src.join(format!("d0/f{i:03}"));
        fs::set_permissions(&f, fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(&f, src.join(format!("z/h{i:03}"))).unwrap();
        crate::sys::mknod(&src.join(format!("d1/p{i:03}")), libc::S_IFIFO | 0o640, 0).unwrap();
    }
    let r = do_backup(&t.repo, &[&src]);
    let out = t.scratch("out");
    let outside = t.scratch("outside");
    fs::create_dir_all(&outside).unwrap();
    // The other user's file, which they would like to become root's and setuid.
    let sentinel = outside.join("mine");
    fs::write(&sentinel, b"mine").unwrap();
    std::os::unix::fs::chown(&sentinel, Some(65534), Some(65534)).unwrap();
    fs::set_permissions(&sentinel, fs::Permissions::from_mode(0o644)).unwrap();
    let base = out.join(src.strip_prefix("/").unwrap());
    let done = std::sync::atomic::AtomicBool::new(false);
    let swaps = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for d in 0..4 {
                    let p = base.join(format!("d{d}"));
                    if !fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir() && m.uid() == 0) {
                        continue;
                    }
                    n += 1;
                    let moved = base.join(format!("moved-{n}"));
                    if fs::rename(&p, &moved).is_err() {
                        continue;
                    }
                    swaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n % 2 == 0 {
                        let _ = std::os::unix::fs::symlink(&outside, &p);
                    } else {
                        // A directory of the other user's, with links to their file under
                        // the names restore uses.
                        let _ = fs::create_dir(&p);
                        let _ = std::os::unix::fs::chown(&p, Some(65534), Some(65534));
                        for i in 0..100 {
                            let _ = fs::hard_link(&sentinel, p.join(format!("f{i:03}")));
                            let _ = fs::hard_link(&sentinel, p.join(format!("p{i:03}")));
                        }
                    }
                }
                std::thread::yield_now();
            }
        });
        let root = crate::ops::restore::resolve(&t.repo, &r.snapshot.root, Path::new("/")).unwrap();
        let opts = crate::ops::restore::RestoreOptions { target: out.clone(), ..Default::default() };
        let c = Collect::default();
        let _ = crate::ops::restore::restore(&t.repo, &root, Path::new("/"), &opts, &c, &AtomicBool::new(false));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(swaps.load(std::sync::atomic::Ordering::Relaxed) > 0, "the race never happened: the test proves nothing");
    let names: Vec<_> = fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["mine"], "a file was written through a swapped-in symlink");
    let m = fs::metadata(&sentinel).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (65534, 0o644), "restore set owner or mode on another user's file");
    assert_eq!(fs::read(&sentinel).unwrap(), b"mine");
}
