//! The command line, in process: output, JSON and exit codes.

use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use crate::cli::{run, Env, EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_WRONG_PASSWORD};
use crate::testutil::{bytes, write};

/// What a command line run printed, and its exit code.
pub(crate) struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// What the environment gives a command line run in process: never the real one.
#[derive(Default)]
pub(crate) struct TestEnv<'a> {
    /// `CAIRN_PASSWORD`.
    pub password: Option<&'a str>,
    /// `CAIRN_PASSWORD_FILE`.
    pub password_file: Option<&'a Path>,
    /// `CAIRN_CACHE_DIR`; without it, private temp caches.
    pub cache_dir: Option<&'a Path>,
    /// The `AWS_*` variables.
    pub s3: crate::backend::S3Env,
}

/// Run the command line in process on `repo` with `password` (never the real
/// environment: no prompts, no caches of the user's).
pub(crate) fn cairn(repo: &Path, password: &str, args: &[&str]) -> Out {
    cairn_in(repo, &TestEnv { password: Some(password), ..Default::default() }, args)
}

/// Run the command line in process on `repo` in the environment `test_env`.
pub(crate) fn cairn_in(repo: &Path, test_env: &TestEnv, args: &[&str]) -> Out {
    let cancel = AtomicBool::new(false);
    // Never the real environment: an explicit repository, no prompts.
    let env = Env {
        repo: Some(repo.to_path_buf()),
        password: test_env.password.map(String::from),
        password_file: test_env.password_file.map(Path::to_path_buf),
        default_repo: None,
        cache_dir: test_env.cache_dir.map(Path::to_path_buf),
        memory: None,
        interactive: false,
        cancel: &cancel,
        s3: test_env.s3.clone(),
        // Pattern files' `$NAME`s: only what a test sets here.
        var: |k| (k == "CAIRN_TEST_NAME").then(|| "vars".to_string()),
        meter: Default::default(),
    };
    let mut argv: Vec<OsString> = vec!["cairn".into()];
    argv.extend(args.iter().map(OsString::from));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(argv, &env, &mut out, &mut err);
    Out { code, stdout: String::from_utf8_lossy(&out).into_owned(), stderr: String::from_utf8_lossy(&err).into_owned() }
}

#[test]
fn commands_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    write(&src.join("a.txt"), b"alpha");
    write(&src.join("sub/b.bin"), &bytes(1, 100_000, false));

    let o = cairn(&repo, "pw", &["init", "--insecure-test-kdf"]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_ERROR, "init twice");

    let o = cairn(&repo, "pw", &["backup", src.to_str().unwrap(), "--tag", "t1"]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    assert!(o.stdout.contains("2 new") && o.stdout.contains("saved"), "{}", o.stdout);

    let o = cairn(&repo, "pw", &["--json", "backup", src.to_str().unwrap()]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(v["summary"]["files_unchanged"], 2);
    assert_eq!(v["summary"]["bytes_read"], 0);

    let o = cairn(&repo, "pw", &["snapshots"]);
    assert!(o.stdout.contains("2 snapshots") && o.stdout.contains("[t1]"), "{}", o.stdout);

    let o = cairn(&repo, "pw", &["ls", &format!("latest:{}", src.display())]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", o.stdout);
    assert!(lines[0].starts_with("-rw-r--r--") && lines[0].ends_with("/a.txt"), "{}", lines[0]);
    assert!(lines[1].starts_with('d') && lines[1].ends_with("/sub"));
    let o = cairn(&repo, "pw", &["ls", "-R", &format!("latest:{}", src.display())]);
    assert_eq!(o.stdout.lines().count(), 3);

    let target = dir.path().join("out");
    let o = cairn(&repo, "pw", &["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    assert_eq!(std::fs::read(target.join(src.strip_prefix("/").unwrap()).join("a.txt")).unwrap(), b"alpha");
    // Again into the same place: nothing written, each file said unchanged.
    let t = target.to_str().unwrap();
    let o = cairn(&repo, "pw", &["restore", "latest", "--target", t, "--verbose", "--verify"]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    assert!(o.stdout.contains("2 files (2 unchanged)") && o.stdout.contains("(0 B written)"), "{}", o.stdout);
    assert!(o.stdout.contains("2 files verified"), "{}", o.stdout);
    assert_eq!(o.stdout.lines().filter(|l| l.starts_with("unchanged ")).count(), 2, "{}", o.stdout);
    // A dry run with --delete names what it would remove, and removes nothing.
    let extra = target.join("extra");
    std::fs::write(&extra, "x").unwrap();
    let o = cairn(&repo, "pw", &["restore", "latest", "--target", t, "--dry-run", "--delete", "-v"]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    assert!(o.stdout.contains(&format!("deleted   {}", extra.display())), "{}", o.stdout);
    assert!(o.stdout.contains("would restore") && o.stdout.contains("1 to delete"), "{}", o.stdout);
    assert!(extra.exists());
    let o = cairn(&repo, "pw", &["--json", "restore", "latest", "--target", t, "--delete"]);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!((v["stats"]["deleted"].as_u64(), v["dry_run"].as_bool()), (Some(1), Some(false)), "{v}");
    assert!(!extra.exists());
    let o = cairn(&repo, "pw", &["restore", "latest", "--target", t, "--overwrite", "sometimes"]);
    assert_eq!(o.code, EXIT_ERROR, "{}", o.stderr);
    assert!(o.stderr.contains("--overwrite \"sometimes\": expected always, if-changed"), "{}", o.stderr);

    let o = cairn(&repo, "pw", &["check", "--read-data"]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    assert!(o.stdout.contains("no errors"));

    assert_eq!(cairn(&repo, "wrong", &["snapshots"]).code, EXIT_WRONG_PASSWORD);
    let pwfile = dir.path().join("pw2");
    std::fs::write(&pwfile, "second\n").unwrap();
    let o = cairn(&repo, "pw", &["key", "add", "--insecure-test-kdf", "--new-password-file", pwfile.to_str().unwrap()]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    assert_eq!(cairn(&repo, "second", &["snapshots"]).code, EXIT_OK);
    assert_eq!(cairn(&repo, "second", &["key", "list"]).stdout.lines().count(), 2);
    let o = cairn(&dir.path().join("nope"), "pw", &["snapshots"]);
    assert_eq!(o.code, EXIT_ERROR);
    assert!(o.stderr.contains("not a cairn repository"), "{}", o.stderr);
    let o = cairn(&repo, "pw", &["backup", "/does/not/exist"]);
    assert_eq!(o.code, EXIT_ERROR);
    assert!(o.stderr.contains("does not exist"), "{}", o.stderr);
    let o = cairn(&repo, "pw", &["ls", "deadbeef"]);
    assert_eq!(o.code, EXIT_ERROR);
    assert!(o.stderr.contains("snapshot deadbeef not found"), "{}", o.stderr);
}

#[test]
fn unreadable_source_is_a_warning_with_exit_code_3() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    write(&src.join("ok"), b"fine");
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    // /proc/self/mem is a regular file whose first page cannot be read (EIO), even as root.
    let o = cairn(&repo, "pw", &["backup", src.to_str().unwrap(), "/proc/self/mem"]);
    assert_eq!(o.code, EXIT_PARTIAL, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("mem") && o.stderr.contains("warning"), "{}", o.stderr);
    let o = cairn(&repo, "pw", &["ls", "-R", "latest"]);
    assert!(o.stdout.contains("/ok"), "the readable file is in the snapshot: {}", o.stdout);
}

#[test]
fn backup_init_creates_the_repository_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    write(&src.join("x"), b"x");
    for _ in 0..2 {
        let o = cairn(&repo, "pw", &["backup", "--init", "--insecure-test-kdf", src.to_str().unwrap()]);
        assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    }
    assert!(cairn(&repo, "pw", &["snapshots"]).stdout.contains("2 snapshots"));
}

/// The JSON summary of `cairn --json backup ARGS`, which must succeed.
fn backup_json(repo: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json", "backup"];
    all.extend_from_slice(args);
    let o = cairn(repo, "pw", &all);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    serde_json::from_str(o.stdout.trim().lines().last().unwrap()).unwrap()
}

#[test]
fn password_file_and_cairn_password_file_come_before_cairn_password() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    let (right, wrong) = (dir.path().join("right"), dir.path().join("wrong"));
    // Only the first line is the password.
    std::fs::write(&right, "pw\nnot part of it\n").unwrap();
    std::fs::write(&wrong, "nope\n").unwrap();
    let run = |password: Option<&str>, file: Option<&Path>, flag: Option<&Path>| {
        let mut args = vec![];
        if let Some(f) = flag {
            args.extend(["--password-file", f.to_str().unwrap()]);
        }
        args.push("snapshots");
        cairn_in(&repo, &TestEnv { password, password_file: file, ..Default::default() }, &args)
    };
    assert_eq!(run(Some("wrong"), None, Some(&right)).code, EXIT_OK, "--password-file before CAIRN_PASSWORD");
    assert_eq!(run(Some("wrong"), Some(&right), None).code, EXIT_OK, "CAIRN_PASSWORD_FILE before CAIRN_PASSWORD");
    assert_eq!(run(None, Some(&wrong), Some(&right)).code, EXIT_OK, "--password-file before CAIRN_PASSWORD_FILE");
    assert_eq!(run(Some("pw"), Some(&wrong), None).code, EXIT_WRONG_PASSWORD, "the file's password is the one tried");
    assert_eq!(run(Some("pw"), None, Some(&wrong)).code, EXIT_WRONG_PASSWORD);
    let missing = dir.path().join("missing");
    let o = run(Some("pw"), None, Some(&missing));
    assert_eq!(o.code, EXIT_ERROR);
    assert!(o.stderr.contains(missing.to_str().unwrap()), "names the file: {}", o.stderr);
    let o = run(None, None, None);
    assert_eq!(o.code, EXIT_ERROR);
    assert!(o.stderr.contains("no password given"), "{}", o.stderr);
}

#[test]
fn parent_picks_the_snapshot_to_compare_with_and_no_parent_reads_everything() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    write(&src.join("a"), &bytes(1, 50_000, false));
    write(&src.join("b"), &bytes(2, 70_000, false));
    let s = src.to_str().unwrap();
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    let first = backup_json(&repo, &[s]);
    write(&src.join("a"), &bytes(3, 60_000, false));
    let second = backup_json(&repo, &[s]);
    assert_eq!(second["parent"], first["snapshot_id"]);
    assert_eq!((&second["summary"]["files_changed"], &second["summary"]["files_unchanged"]), (&1.into(), &1.into()));

    let none = backup_json(&repo, &["--no-parent", s]);
    assert!(none["parent"].is_null(), "{none}");
    assert_eq!(none["summary"]["files_new"], 2);
    assert_eq!(none["summary"]["bytes_read"], 130_000);
    // Against the first snapshot, a is changed again; the newest (the default) has it.
    let short = &first["snapshot_id"].as_str().unwrap()[..8];
    let older = backup_json(&repo, &["--parent", short, s]);
    assert_eq!(older["parent"], first["snapshot_id"]);
    assert_eq!((&older["summary"]["files_changed"], &older["summary"]["bytes_read"]), (&1.into(), &60_000.into()));
    let newest = backup_json(&repo, &[s]);
    assert_eq!(newest["summary"]["files_unchanged"], 2);

    let o = cairn(&repo, "pw", &["backup", "--parent", "deadbeef", s]);
    assert_eq!(o.code, EXIT_ERROR);
    assert!(o.stderr.contains("deadbeef"), "{}", o.stderr);
    assert_eq!(cairn(&repo, "pw", &["backup", "--parent", short, "--no-parent", s]).code, 2);
}

#[test]
fn compression_level_is_what_the_new_blobs_are_stored_with() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let text = bytes(4, 1_000_000, true);
    write(&src.join("text"), &text);
    let mut added = vec![];
    for (name, level) in [("none", Some("0")), ("default", None), ("strong", Some("19"))] {
        let repo = dir.path().join(name);
        assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
        let mut args = vec![];
        if let Some(l) = level {
            args.extend(["--compression", l]);
        }
        args.push(src.to_str().unwrap());
        added.push(backup_json(&repo, &args)["summary"]["bytes_added"].as_u64().unwrap());
        // The data blobs say how they are stored.
        let r = crate::repo::Repository::open(&repo, b"pw").unwrap();
        let kinds: std::collections::HashSet<_> = r
            .backend()
            .list(crate::backend::Dir::Index)
            .unwrap()
            .iter()
            .flat_map(|f| r.read_index_file(f).unwrap())
            .filter(|e| e.loc.kind == crate::format::BlobKind::Data)
            .map(|e| e.loc.compression)
            .collect();
        let want = if level == Some("0") { crate::format::Compression::None } else { crate::format::Compression::Zstd };
        assert_eq!(kinds, [want].into(), "{name}");
        let out = dir.path().join(format!("out-{name}"));
        assert_eq!(cairn(&repo, "pw", &["restore", "latest", "--target", out.to_str().unwrap()]).code, EXIT_OK);
        assert!(std::fs::read(out.join(src.strip_prefix("/").unwrap()).join("text")).unwrap() == text);
    }
    // Stored whole without compression; smaller with it, and smaller still at 19.
    assert!(added[0] > 1_000_000 && added[1] < added[0] / 3 && added[2] < added[1], "{added:?}");
    let o = cairn(&dir.path().join("none"), "pw", &["backup", "--compression", "23", src.to_str().unwrap()]);
    assert_eq!(o.code, 2, "{}", o.stderr);
}

#[test]
fn atime_is_recorded_only_when_asked() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    write(&src.join("f"), b"content");
    let (atime, mtime) = (1_000_000_000, 1_100_000_000);
    let t = |sec| crate::format::tree::Time { sec, nsec: 0 };
    crate::sys::set_times(&src.join("f"), t(atime), t(mtime)).unwrap();
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    let without = backup_json(&repo, &[src.to_str().unwrap()]);
    let with = backup_json(&repo, &["--atime", src.to_str().unwrap()]);
    // Backing up read the file without touching its atime.
    assert_eq!(std::fs::metadata(src.join("f")).unwrap().atime(), atime);
    for (snap, want) in [(&without, mtime), (&with, atime)] {
        let id = snap["snapshot_id"].as_str().unwrap();
        let out = dir.path().join(format!("out-{id}"));
        let o = cairn(&repo, "pw", &["restore", id, "--target", out.to_str().unwrap()]);
        assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
        let m = std::fs::metadata(out.join(src.strip_prefix("/").unwrap()).join("f")).unwrap();
        assert_eq!((m.atime(), m.mtime()), (want, mtime), "snapshot {id}");
    }
}

#[test]
fn check_names_a_deleted_pack_and_the_files_that_lose_data() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    write(&src.join("victim"), &bytes(5, 20_000, false));
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    let snap = backup_json(&repo, &[src.to_str().unwrap()]);
    let o = cairn(&repo, "pw", &["check"]);
    assert_eq!(o.code, EXIT_OK, "{}{}", o.stdout, o.stderr);
    // The pack holding victim's data.
    let r = crate::repo::Repository::open(&repo, b"pw").unwrap();
    let id = r.keys().blob_id(crate::format::BlobKind::Data, &bytes(5, 20_000, false));
    let pack = r.index().get(&id).expect("victim's chunk is indexed").pack;
    std::fs::remove_file(r.pack_path(&pack)).unwrap();
    drop(r);
    for args in [&["check"][..], &["check", "--read-data"]] {
        let o = cairn(&repo, "pw", args);
        assert_eq!(o.code, EXIT_ERROR, "{args:?}: {}{}", o.stdout, o.stderr);
        let said = format!("{}{}", o.stdout, o.stderr);
        assert!(said.contains(&pack.to_hex()), "{args:?} names the pack: {said}");
        assert!(said.contains(&src.join("victim").display().to_string()), "{args:?} names the file: {said}");
        assert!(said.contains(&snap["snapshot_id"].as_str().unwrap()[..8]), "{args:?} names the snapshot: {said}");
    }
}

#[test]
fn deleting_the_cache_directory_between_commands_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, cache, src) = (dir.path().join("repo"), dir.path().join("cache"), dir.path().join("src"));
    for i in 0..5 {
        write(&src.join(format!("f{i}")), &bytes(10 + i, 100_000, false));
    }
    let env = TestEnv { password: Some("pw"), cache_dir: Some(&cache), ..Default::default() };
    let run = |args: &[&str]| {
        let o = cairn_in(&repo, &env, args);
        assert_eq!(o.code, EXIT_OK, "{args:?}: {}", o.stderr);
        o.stdout
    };
    run(&["init", "--insecure-test-kdf"]);
    run(&["backup", src.to_str().unwrap()]);
    assert!(cache.exists(), "the backup made its cache");
    std::fs::remove_dir_all(&cache).unwrap();
    // The next backup rebuilds the cache from the repository: unchanged files are reused
    // (their chunks found again), nothing is stored twice.
    let out = run(&["--json", "backup", src.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    assert_eq!(v["summary"]["files_unchanged"], 5, "{v}");
    assert!(v["summary"]["bytes_added"].as_u64().unwrap() < 10_000, "{v}");
    std::fs::remove_dir_all(&cache).unwrap();
    let out = dir.path().join("out");
    run(&["restore", "latest", "--target", out.to_str().unwrap()]);
    for i in 0..5 {
        let f = out.join(src.strip_prefix("/").unwrap()).join(format!("f{i}"));
        assert!(std::fs::read(f).unwrap() == bytes(10 + i, 100_000, false), "f{i}");
    }
    std::fs::remove_dir_all(&cache).unwrap();
    assert!(run(&["check", "--read-data"]).contains("no errors"));
}

#[test]
fn repair_commands_run_through_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src) = (dir.path().join("repo"), dir.path().join("src"));
    write(&src.join("a"), b"a");
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    assert_eq!(cairn(&repo, "pw", &["backup", src.to_str().unwrap()]).code, EXIT_OK);
    let o = cairn(&repo, "pw", &["repair", "index"]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    assert!(o.stdout.contains("indexed 0 blobs"), "{}", o.stdout);
    let o = cairn(&repo, "pw", &["--json", "repair", "snapshots", "--dry-run", "latest"]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!((v["snapshots_checked"].as_u64(), v["snapshots_repaired"].as_u64()), (Some(1), Some(0)));
}

#[test]
fn forget_prints_its_decisions_and_refuses_bad_rules_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    let mut ids = vec![];
    for i in 0..3 {
        write(&src.join("a"), format!("version {i}").as_bytes());
        ids.push(backup_json(&repo, &[src.to_str().unwrap()])["snapshot_id"].as_str().unwrap().to_string());
    }
    // Bad rules and ids: exit 1, a message naming the option or id, nothing removed.
    for (args, says) in [
        (&["forget", "--keep-daily", "0"][..], "--keep-daily 0"),
        (&["forget", "--keep-last", "-2"], "--keep-last -2"),
        (&["forget", "--keep-within", "2w"], "--keep-within 2w"),
        (&["forget", "--keep-within-daily", "x"], "--keep-within-daily x"),
        (&["forget", "--group-by", "user", "--keep-last", "1"], "user"),
        (&["forget", "ffffffff"], "ffffffff"),
        (&["forget"], "nothing to forget"),
        (&["forget", "--keep-last", "1", &ids[0]], "not both"),
    ] {
        let o = cairn(&repo, "pw", args);
        assert_eq!(o.code, EXIT_ERROR, "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains(says), "{args:?}: {}", o.stderr);
    }
    assert_eq!(cairn(&repo, "pw", &["snapshots", "--json"]).stdout.matches("\"id\"").count(), 3);

    // A dry run as a table: every snapshot with its action and reason.
    let o = cairn(&repo, "pw", &["forget", "--keep-last", "2", "--dry-run"]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    assert!(o.stdout.contains("keep 2 latest snapshots"), "{}", o.stdout);
    assert_eq!(o.stdout.matches("  keep    ").count(), 2, "{}", o.stdout);
    assert_eq!(o.stdout.matches("  remove  ").count(), 1, "{}", o.stdout);
    assert!(o.stdout.contains("would remove 1 snapshots, kept 2"), "{}", o.stdout);
    // JSON lines: one object per snapshot, then the summary.
    let o = cairn(&repo, "pw", &["--json", "forget", "--keep-last", "2"]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    let lines: Vec<serde_json::Value> = o.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "{}", o.stdout);
    assert_eq!(lines[0]["id"], ids[2].as_str());
    assert_eq!(lines[0]["reasons"][0], "last snapshot");
    assert_eq!(lines[2]["id"], ids[0].as_str());
    assert_eq!(lines[2]["action"], "remove");
    assert_eq!(lines[3]["summary"]["removed"], 1);
    let left = || {
        let v: serde_json::Value = serde_json::from_str(&cairn(&repo, "pw", &["snapshots", "--json"]).stdout).unwrap();
        v.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(left(), [ids[1].clone(), ids[2].clone()]);
    // By id prefix.
    let o = cairn(&repo, "pw", &["forget", &ids[1][..10]]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    assert_eq!(left(), [ids[2].clone()]);
}

#[test]
fn backup_time_sets_the_snapshot_time_and_refuses_nonsense() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src) = (dir.path().join("repo"), dir.path().join("src"));
    write(&src.join("a"), b"a");
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    let o = cairn(&repo, "pw", &["backup", "--time", "2020-13-02", src.to_str().unwrap()]);
    assert_eq!(o.code, EXIT_ERROR, "{}", o.stderr);
    assert!(o.stderr.contains("--time 2020-13-02"), "{}", o.stderr);
    let o = cairn(&repo, "pw", &["backup", "--time", "2020-01-02 03:04:05", src.to_str().unwrap()]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    let o = cairn(&repo, "pw", &["snapshots"]);
    assert!(o.stdout.contains("2020-01-02 03:04:05"), "{}", o.stdout);
}

#[test]
fn forget_prune_and_prune_report_their_plan_and_refuse_bad_limits() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    for i in 0..3u64 {
        write(&src.join("a"), &crate::testutil::bytes(i, 300_000, false));
        backup_json(&repo, &[src.to_str().unwrap()]);
    }
    for (args, says) in [
        (&["prune", "--max-unused", "5x"][..], "--max-unused 5x"),
        (&["prune", "--max-unused", "-5%"], "--max-unused -5%"),
        (&["prune", "--max-repack-size", "lots"], "--max-repack-size lots"),
        (&["forget", "--keep-last", "1", "--prune", "--max-unused", "200%"], "--max-unused 200%"),
    ] {
        let o = cairn(&repo, "pw", args);
        assert_eq!(o.code, EXIT_ERROR, "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains(says), "{args:?}: {}", o.stderr);
    }
    assert_eq!(cairn(&repo, "pw", &["snapshots", "--json"]).stdout.matches("\"id\"").count(), 3);
    // forget --prune: the decisions, then prune's report (each backup left a data and a
    // tree pack).
    let o = cairn(&repo, "pw", &["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    assert!(o.stdout.contains("removed 2 snapshots"), "{}", o.stdout);
    assert!(o.stdout.contains("deleted 4 packs with nothing used"), "{}", o.stdout);
    assert!(o.stderr.contains("finding the blobs the snapshots use"), "{}", o.stderr);
    // Now nothing is left to do; the dry run as JSON says so.
    let o = cairn(&repo, "pw", &["--json", "prune", "--dry-run"]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["dry_run"], true);
    assert_eq!((v["summary"]["packs_deleted"].as_u64(), v["summary"]["unused_bytes"].as_u64()), (Some(0), Some(0)));
    assert_eq!(v["summary"]["snapshots"], 1);
    let o = cairn(&repo, "pw", &["check", "--read-data"]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
}

#[test]
fn a_lock_held_elsewhere_gives_exit_11_until_unlock_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    write(&src.join("a"), b"alpha");
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    assert_eq!(cairn(&repo, "pw", &["backup", src.to_str().unwrap()]).code, EXIT_OK);
    // A prune on another machine holds the repository.
    let r = crate::repo::Repository::open(&repo, b"pw").unwrap();
    let plant = |age_s: i64| {
        let info = crate::format::lock::LockInfo {
            time_ns: crate::repo::now_ns() - age_s * 1_000_000_000,
            exclusive: true,
            pid: 1,
            machine: b"elsewhere".to_vec(),
            host: "other".into(),
            user: "u".into(),
            command: "prune".into(),
        };
        r.write_sealed_file(crate::format::FileKind::Lock, crate::backend::Dir::Locks, &info.encode()).unwrap()
    };
    let live = plant(0);
    let o = cairn(&repo, "pw", &["backup", src.to_str().unwrap()]);
    assert_eq!(o.code, crate::cli::EXIT_LOCKED, "{}", o.stderr);
    assert!(o.stderr.contains("exclusively by prune on other"), "{}", o.stderr);
    let target = dir.path().join("out");
    let o = cairn(&repo, "pw", &["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(o.code, crate::cli::EXIT_LOCKED, "{}", o.stderr);
    // Reading without a lock is the user's choice; writing never is.
    let o = cairn(&repo, "pw", &["--no-lock", "restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    let o = cairn(&repo, "pw", &["--no-lock", "backup", src.to_str().unwrap()]);
    assert_eq!(o.code, crate::cli::EXIT_LOCKED, "{}", o.stderr);
    // `unlock` leaves a live lock alone, removes a stale one, and --remove-all the rest.
    plant(31 * 60);
    let o = cairn(&repo, "pw", &["unlock"]);
    assert!(o.code == EXIT_OK && o.stdout.contains("removed 1 locks"), "{} {}", o.stdout, o.stderr);
    assert_eq!(r.locks().unwrap().into_iter().map(|(id, _)| id).collect::<Vec<_>>(), [live]);
    let o = cairn(&repo, "pw", &["unlock", "--remove-all"]);
    assert!(o.code == EXIT_OK && o.stdout.contains("removed 1 locks"), "{}", o.stdout);
    assert_eq!(cairn(&repo, "pw", &["backup", src.to_str().unwrap()]).code, EXIT_OK);
    assert!(r.locks().unwrap().is_empty());
}

#[test]
fn backup_excludes_what_the_patterns_and_pattern_files_name() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src) = (dir.path().join("repo"), dir.path().join("src"));
    for f in [
        "keep.txt",
        "a.o",
        "sub/b.o",
        "sub/c.txt",
        "cache/x",
        "data/drop",
        "data/keep",
        "IMG.JPG",
        "img.jpg",
        "vars/v.txt",
    ] {
        write(&src.join(f), f.as_bytes());
    }
    let list = dir.path().join("excludes");
    let s = src.to_str().unwrap();
    std::fs::write(&list, format!("# build output\n*.o\n\n{s}/data/*\n${{CAIRN_TEST_NAME}}/v.txt\n")).unwrap();
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    let o = cairn(
        &repo,
        "pw",
        &[
            "backup",
            "--exclude-file",
            list.to_str().unwrap(),
            "--exclude",
            "cache",
            "--exclude",
            &format!("!{s}/data/keep"),
            "--iexclude",
            "*.jpg",
            s,
        ],
    );
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    let ls = cairn(&repo, "pw", &["ls", "-R", "latest"]).stdout;
    for kept in ["keep.txt", "sub/c.txt", "data/keep"] {
        assert!(ls.contains(&format!("{s}/{kept}")), "{kept} kept:\n{ls}");
    }
    for gone in ["a.o", "sub/b.o", "cache", "data/drop", "IMG.JPG", "img.jpg", "vars/v.txt"] {
        assert!(!ls.contains(&format!("{s}/{gone}")), "{gone} left out:\n{ls}");
    }
    // Bad patterns and unreadable files are errors naming the option and the value.
    let o = cairn(&repo, "pw", &["backup", "--exclude", "a/[z-a]", s]);
    assert_eq!(o.code, EXIT_ERROR, "{}", o.stderr);
    assert!(o.stderr.contains("--exclude \"a/[z-a]\""), "{}", o.stderr);
    let o = cairn(&repo, "pw", &["backup", "--exclude-file", "/nonexistent/list", s]);
    assert_eq!(o.code, EXIT_ERROR, "{}", o.stderr);
    assert!(o.stderr.contains("--exclude-file /nonexistent/list"), "{}", o.stderr);
}

#[test]
fn backup_leaves_out_tagged_directories_and_large_files() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src) = (dir.path().join("repo"), dir.path().join("src"));
    write(&src.join("small"), &[1; 2048]);
    write(&src.join("large"), &[2; 2049]);
    write(&src.join("cache/CACHEDIR.TAG"), b"Signature: 8a477f597d28d172789f06886806bc55\n");
    write(&src.join("cache/blob"), b"cached");
    write(&src.join("not-a-cache/CACHEDIR.TAG"), b"Signature: something else");
    write(&src.join("skip/.nobackup"), b"");
    write(&src.join("skip/x"), b"x");
    write(&src.join("marked/TAG"), b"KEEP-OUT and more");
    write(&src.join("wrong-header/TAG"), b"keep-out");
    let s = src.to_str().unwrap();
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    let o = cairn(
        &repo,
        "pw",
        &[
            "backup",
            "--exclude-caches",
            "--exclude-if-present",
            ".nobackup",
            "--exclude-if-present",
            "TAG:KEEP-OUT",
            "--exclude-larger-than",
            "2K",
            s,
        ],
    );
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    let ls = cairn(&repo, "pw", &["ls", "-R", "latest"]).stdout;
    // A tagged directory is kept with its tag file alone, as restic keeps it.
    for kept in
        ["small", "not-a-cache/CACHEDIR.TAG", "wrong-header/TAG", "cache/CACHEDIR.TAG", "skip/.nobackup", "marked/TAG"]
    {
        assert!(ls.contains(&format!("{s}/{kept}\n")), "{kept} kept:\n{ls}");
    }
    for gone in ["large", "cache/blob", "skip/x"] {
        assert!(!ls.contains(&format!("{s}/{gone}")), "{gone} left out:\n{ls}");
    }
    // Nonsense is a one-line error naming the option and the value.
    for (args, named) in [
        (&["--exclude-larger-than", "5Q"][..], "--exclude-larger-than 5Q"),
        (&["--exclude-if-present", "a/b"][..], "--exclude-if-present \"a/b\""),
    ] {
        let o = cairn(&repo, "pw", &[&["backup"][..], args, &[s]].concat());
        assert_eq!(o.code, EXIT_ERROR, "{}", o.stderr);
        assert!(o.stderr.contains(named) && o.stderr.trim().lines().count() == 1, "{}", o.stderr);
    }
}

#[test]
fn backup_one_file_system_keeps_mount_points_empty() {
    // /dev/shm is a filesystem of its own below /dev on Linux machines and containers;
    // where it is not, there is no mount point to test with.
    let dev = |p: &str| std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(p).unwrap());
    if dev("/dev") == dev("/dev/shm") {
        eprintln!("skipped: /dev/shm is not a mount point here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let marker = tempfile::Builder::new().prefix("cairn-x-test").tempfile_in("/dev/shm").unwrap();
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    let o = cairn(&repo, "pw", &["backup", "-x", "/dev"]);
    assert!(o.code == EXIT_OK || o.code == EXIT_PARTIAL, "{}", o.stderr);
    let ls = cairn(&repo, "pw", &["ls", "-R", "latest"]).stdout;
    assert!(ls.lines().any(|l| l.starts_with('d') && l.ends_with(" /dev/shm")), "the mount point is kept:\n{ls}");
    assert!(!ls.contains("/dev/shm/"), "nothing under it:\n{ls}");
    assert!(!ls.contains(&marker.path().display().to_string()));
}

#[test]
fn backup_files_from_lists_globs_and_missing_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src) = (dir.path().join("repo"), dir.path().join("src"));
    for f in ["a/one.txt", "a/two.txt", "a/three.md", "b/#hash", "b/star*", "c/nul", "d/not-listed"] {
        write(&src.join(f), f.as_bytes());
    }
    let s = src.to_str().unwrap();
    let list = dir.path().join("list");
    std::fs::write(&list, format!("# documents\n\n  {s}/a/*.txt  \n{s}/missing\n{s}/none/*.x\n")).unwrap();
    let verbatim = dir.path().join("verbatim");
    std::fs::write(&verbatim, format!("{s}/b/#hash\n{s}/b/star*\n")).unwrap();
    let raw = dir.path().join("raw");
    std::fs::write(&raw, format!("{s}/c/nul\0")).unwrap();
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    let (l, v, r) = (list.to_str().unwrap(), verbatim.to_str().unwrap(), raw.to_str().unwrap());
    let o = cairn(&repo, "pw", &["backup", "--files-from", l, "--files-from-verbatim", v, "--files-from-raw", r]);
    // A listed path that does not exist is an unreadable source: exit 3, named.
    assert_eq!(o.code, EXIT_PARTIAL, "{}", o.stderr);
    assert!(o.stderr.contains(&format!("{s}/missing")), "{}", o.stderr);
    assert!(o.stderr.contains(&format!("{s}/none/*.x")), "a glob matching nothing is named: {}", o.stderr);
    let ls = cairn(&repo, "pw", &["ls", "-R", "latest"]).stdout;
    for kept in ["a/one.txt", "a/two.txt", "b/#hash", "b/star*", "c/nul"] {
        assert!(ls.contains(&format!("{s}/{kept}\n")), "{kept} backed up:\n{ls}");
    }
    for gone in ["a/three.md", "d"] {
        assert!(!ls.contains(&format!("{s}/{gone}")), "{gone} not listed:\n{ls}");
    }
    // An unreadable list is an error naming it; a list naming nothing that exists too.
    let o = cairn(&repo, "pw", &["backup", "--files-from", "/nonexistent/list"]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("--files-from /nonexistent/list"), "{}", o.stderr);
    std::fs::write(&list, format!("{s}/missing\n")).unwrap();
    let o = cairn(&repo, "pw", &["backup", "--files-from", l]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("none of the listed paths exists"), "{}", o.stderr);
}

#[test]
fn restore_includes_and_excludes_with_backup_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src) = (dir.path().join("repo"), dir.path().join("src"));
    for f in ["docs/a.MD", "docs/b.txt", "docs/old/c.md", "src/main.rs", "src/gen/x.rs"] {
        write(&src.join(f), f.as_bytes());
    }
    let s = src.to_str().unwrap();
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    assert_eq!(cairn(&repo, "pw", &["backup", s]).code, EXIT_OK);
    let restored = |args: &[&str]| {
        let out = tempfile::tempdir().unwrap();
        let o = cairn(&repo, "pw", &[&["restore", "latest", "-t", out.path().to_str().unwrap()][..], args].concat());
        assert_eq!(o.code, EXIT_OK, "{args:?}: {}", o.stderr);
        let mut found = Vec::new();
        let root = out.path().join(src.strip_prefix("/").unwrap());
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    found.push(e.path().strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
        found.sort();
        found
    };
    assert_eq!(restored(&["--iinclude", "*.md"]), ["docs/a.MD", "docs/old/c.md"]);
    assert_eq!(restored(&["--include", "*.md"]), ["docs/old/c.md"]);
    assert_eq!(restored(&["--include", "docs", "--exclude", "old"]), ["docs/a.MD", "docs/b.txt"]);
    assert_eq!(restored(&["-e", "gen", "-e", &format!("{s}/docs")]), ["src/main.rs"]);
    assert_eq!(restored(&["--include", &format!("{s}/src/**/*.rs"), "--exclude", "main.rs"]), ["src/gen/x.rs"]);
    // Each path is judged by itself: a later `!` takes part of an included tree back.
    let (docs, old) = (format!("{s}/docs"), format!("!{s}/docs/old"));
    assert_eq!(restored(&["--include", &docs, "--include", &old]), ["docs/a.MD", "docs/b.txt"]);
    let o = cairn(&repo, "pw", &["restore", "latest", "-t", "/tmp/x", "--include", "a/[z-a]"]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("--include \"a/[z-a]\""), "{}", o.stderr);
}

#[test]
fn snapshots_filter_group_and_tag() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, a, b) = (dir.path().join("repo"), dir.path().join("a"), dir.path().join("b"));
    write(&a.join("f"), b"a");
    write(&b.join("f"), b"b");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    for (time, host, path, tag) in [
        ("2026-01-01", "h1", a, "daily"),
        ("2026-01-02", "h1", a, "daily"),
        ("2026-01-03", "h1", b, "weekly"),
        ("2026-01-04", "h2", a, "daily"),
    ] {
        let o = cairn(&repo, "pw", &["backup", "--time", time, "--host", host, "--tag", tag, path]);
        assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    }
    let json = |args: &[&str]| -> serde_json::Value {
        let o = cairn(&repo, "pw", &[&["--json", "snapshots"][..], args].concat());
        assert_eq!(o.code, EXIT_OK, "{args:?}: {}", o.stderr);
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", o.stdout))
    };
    let days = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|s| s["time"].as_str().unwrap()[..10].to_string()).collect()
    };
    assert_eq!(days(&json(&[])), ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"], "oldest first");
    assert_eq!(days(&json(&["--host", "h1"])), ["2026-01-01", "2026-01-02", "2026-01-03"]);
    assert_eq!(days(&json(&["--tag", "weekly"])), ["2026-01-03"]);
    assert_eq!(days(&json(&["--tag", "daily", "--path", a])), ["2026-01-01", "2026-01-02", "2026-01-04"]);
    assert_eq!(days(&json(&["--tag", "nope,daily"])), Vec::<String>::new(), "all tags of a set");
    // --latest N counts per host and paths.
    assert_eq!(days(&json(&["--latest", "1"])), ["2026-01-02", "2026-01-03", "2026-01-04"]);
    let g = json(&["--group-by", "host"]);
    let g = g.as_array().unwrap();
    assert_eq!(g.len(), 2);
    assert_eq!(g[0]["group_key"]["host"], "h1");
    assert_eq!(days(&g[0]["snapshots"]), ["2026-01-01", "2026-01-02", "2026-01-03"]);
    assert_eq!(days(&g[1]["snapshots"]), ["2026-01-04"]);
    let o = cairn(&repo, "pw", &["snapshots", "-g", "host", "--latest", "1"]);
    assert!(o.stdout.contains("snapshots of host h1") && o.stdout.contains("2 snapshots in 2 groups"), "{}", o.stdout);
    assert!(!o.stdout.contains("2026-01-02") && o.stdout.contains("2026-01-03"), "{}", o.stdout);
    // `latest` honours the filters.
    let o = cairn(&repo, "pw", &["ls", "-R", "latest", "--host", "h1"]);
    assert!(o.stdout.contains(b), "{}", o.stdout);

    // Tags: --add/--remove/--set, on ids or on what the filters pass.
    let id = json(&["--host", "h2"])[0]["id"].as_str().unwrap().to_string();
    let o = cairn(&repo, "pw", &["tag", "--add", "keep,x", "--remove", "daily", &id[..8]]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    let v = json(&["--host", "h2"]);
    assert_eq!(v[0]["tags"], serde_json::json!(["keep", "x"]));
    assert_ne!(v[0]["id"].as_str().unwrap(), id, "a new snapshot file, the old one gone");
    assert_eq!(json(&[]).as_array().unwrap().len(), 4);
    let o = cairn(&repo, "pw", &["tag", "--set", "all", "--host", "h1"]);
    assert!(o.code == EXIT_OK && o.stdout.contains("changed the tags of 3 of 3"), "{} {}", o.stdout, o.stderr);
    assert_eq!(days(&json(&["--tag", "all"])), ["2026-01-01", "2026-01-02", "2026-01-03"]);
    let o = cairn(&repo, "pw", &["tag", "--set", "all", "--host", "h1"]);
    assert!(o.stdout.contains("changed the tags of 0 of 3"), "unchanged tags rewrite nothing: {}", o.stdout);
    assert_eq!(cairn(&repo, "pw", &["check"]).code, EXIT_OK);
    // Nonsense.
    let o = cairn(&repo, "pw", &["tag", "latest"]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("--add, --remove or --set"), "{}", o.stderr);
    let o = cairn(&repo, "pw", &["snapshots", "--group-by", "colour"]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("--group-by colour"), "{}", o.stderr);
    let o = cairn(&repo, "pw", &["ls", "latest", "--host", "nobody"]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("no snapshot passes"), "{}", o.stderr);
}

#[test]
fn diff_reports_each_change_once_and_skips_equal_trees() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (repo, src) = (dir.path().join("repo"), dir.path().join("src"));
    for f in ["a/keep", "a/change", "a/gone", "a/meta", "d/sub/x", "same/deep/y", "t"] {
        write(&src.join(f), f.as_bytes());
    }
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    let s = src.to_str().unwrap();
    assert_eq!(cairn(&repo, "pw", &["backup", s]).code, EXIT_OK);
    write(&src.join("a/change"), b"new content");
    std::fs::remove_file(src.join("a/gone")).unwrap();
    write(&src.join("a/new"), b"added");
    std::fs::set_permissions(src.join("a/meta"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_dir_all(src.join("d")).unwrap();
    write(&src.join("n/file"), b"n");
    std::fs::remove_file(src.join("t")).unwrap();
    write(&src.join("t/inside"), b"t");
    assert_eq!(cairn(&repo, "pw", &["backup", s]).code, EXIT_OK);
    let ids: Vec<String> =
        serde_json::from_str::<serde_json::Value>(&cairn(&repo, "pw", &["--json", "snapshots"]).stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect();
    let lines = |args: &[&str]| -> Vec<String> {
        let o = cairn(&repo, "pw", &[&["diff", &ids[0], &ids[1]][..], args].concat());
        assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
        o.stdout.lines().filter(|l| l.contains(s)).map(|l| l.replace(s, "")).collect()
    };
    let want = [
        "M    /a/change",
        "-    /a/gone",
        "+    /a/new",
        "-    /d/",
        "-    /d/sub/",
        "-    /d/sub/x",
        "+    /n/",
        "+    /n/file",
        "T    /t/",
        "+    /t/inside",
    ];
    assert_eq!(lines(&[]), want);
    let with_meta = lines(&["--metadata"]);
    assert!(with_meta.contains(&"U    /a/meta".to_string()), "{with_meta:?}");
    // The statistics, and JSON.
    let o = cairn(&repo, "pw", &["--json", "diff", &ids[0], &ids[1]]);
    let last: serde_json::Value = serde_json::from_str(o.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["message_type"], "statistics");
    assert_eq!(last["files"]["added"], 3);
    assert_eq!(last["files"]["removed"], 2, "gone and d/sub/x (t is a type change)");
    assert_eq!(last["files"]["changed"], 1);
    assert_eq!(last["dirs"]["added"], 1, "n (t is counted as changed)");
    assert_eq!(last["dirs"]["changed"], 1);
    assert!(last["dirs_skipped"].as_u64().unwrap() >= 1, "same/ is never read: {last}");
    // A directory in each, and a diff of a snapshot with itself: no changes, no error.
    let o = cairn(&repo, "pw", &["diff", &format!("{}:{s}/a", ids[0]), &format!("{}:{s}/a", ids[1])]);
    assert!(o.stdout.contains("M    ") && !o.stdout.contains("/n/"), "{}", o.stdout);
    let o = cairn(&repo, "pw", &["diff", &ids[1], "latest"]);
    assert!(o.code == EXIT_OK && o.stdout.contains("0 new,     0 removed,     0 changed"), "{}", o.stdout);
    let o = cairn(&repo, "pw", &["diff", &format!("{}:{s}/a/new", ids[1]), &ids[0]]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("not a directory"), "{}", o.stderr);
}

#[test]
fn find_reports_matches_per_snapshot_and_skips_directories_without_any() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src) = (dir.path().join("repo"), dir.path().join("src"));
    for f in ["docs/a.jpg", "docs/B.JPG", "docs/c.txt", "x.jpg/inside", "other/deep/d.txt"] {
        write(&src.join(f), f.as_bytes());
    }
    let s = src.to_str().unwrap();
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    assert_eq!(cairn(&repo, "pw", &["backup", "--time", "2026-01-01", s]).code, EXIT_OK);
    write(&src.join("docs/e.jpg"), b"e");
    assert_eq!(cairn(&repo, "pw", &["backup", "--time", "2026-01-02", s]).code, EXIT_OK);
    let found = |args: &[&str]| -> Vec<(String, String)> {
        let o = cairn(&repo, "pw", &[&["--json", "find"][..], args].concat());
        assert_eq!(o.code, EXIT_OK, "{args:?}: {}", o.stderr);
        o.stdout
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["snapshot"].as_str().unwrap()[..8].to_string(), v["path"].as_str().unwrap().replace(s, "")))
            .collect()
    };
    let jpgs = found(&["*.jpg"]);
    let paths: Vec<&str> = jpgs.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(paths, ["/docs/a.jpg", "/x.jpg", "/docs/a.jpg", "/docs/e.jpg", "/x.jpg"], "oldest snapshot first");
    assert_ne!(jpgs[0].0, jpgs[2].0);
    assert_eq!(found(&["-i", "*.jpg"]).len(), 7);
    assert_eq!(found(&["-s", "latest", &format!("{s}/docs/*.txt")]).len(), 1);
    assert_eq!(found(&["**/deep/*"]).len(), 2);
    assert_eq!(found(&["--newest", "2000-01-01", "*"]).len(), 0);
    // Text: a heading per snapshot; the second snapshot's unchanged directories are
    // skipped (other/ held nothing the first time).
    let o = cairn(&repo, "pw", &["find", "e.jpg"]);
    assert!(o.stdout.contains("Found matching entries in snapshot") && o.stdout.contains("1 matches in 2 snapshots"));
    // By tree id: the directory that is that tree.
    let tree = {
        let o = cairn(&repo, "pw", &["--json", "snapshots", "latest"]);
        serde_json::from_str::<serde_json::Value>(&o.stdout).unwrap()[0]["tree"].as_str().unwrap().to_string()
    };
    let o = cairn(&repo, "pw", &["find", "--tree", &tree]);
    assert!(o.code == EXIT_OK && o.stdout.contains("0 matches"), "the root itself is no entry: {}", o.stdout);
    let o = cairn(&repo, "pw", &["find", "--blob", "xyz"]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("--blob xyz: not an id"), "{}", o.stderr);
    let o = cairn(&repo, "pw", &["find", "--oldest", "yesterday", "x"]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("--oldest yesterday"), "{}", o.stderr);
}

#[test]
fn dump_writes_a_file_or_a_directory_as_tar() {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (repo, src) = (dir.path().join("repo"), dir.path().join("src"));
    let big = bytes(7, 3_000_000, false);
    write(&src.join("notes.txt"), b"hello notes");
    write(&src.join("sub/big.bin"), &big);
    write(&src.join(format!("sub/{}", "long-name-".repeat(15))), b"long");
    std::os::unix::fs::symlink("notes.txt", src.join("link")).unwrap();
    std::fs::set_permissions(src.join("notes.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let s = src.to_str().unwrap();
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    assert_eq!(cairn(&repo, "pw", &["backup", s]).code, EXIT_OK);
    let o = cairn(&repo, "pw", &["dump", &format!("latest:{s}/notes.txt")]);
    assert_eq!((o.code, o.stdout.as_str()), (EXIT_OK, "hello notes"), "{}", o.stderr);
    let o = cairn(&repo, "pw", &["dump", "latest", &format!("{s}/notes.txt")]);
    assert_eq!(o.stdout, "hello notes", "restic's two-argument form");
    // A directory: a tar stream, read back with the tar crate.
    let tar_path = dir.path().join("out.tar");
    let o = cairn(&repo, "pw", &["dump", &format!("latest:{s}"), "--target", tar_path.to_str().unwrap()]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    let mut archive = tar::Archive::new(std::fs::File::open(&tar_path).unwrap());
    let mut seen = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        match name.as_str() {
            "notes.txt" => {
                assert_eq!(data, b"hello notes");
                assert_eq!(e.header().mode().unwrap(), 0o640);
            }
            "sub/big.bin" => assert!(data == big, "3 MB of several chunks"),
            "link" => assert_eq!(e.link_name().unwrap().unwrap().to_str(), Some("notes.txt")),
            _ => {}
        }
        seen.push(name);
    }
    seen.sort();
    let long = format!("sub/{}", "long-name-".repeat(15));
    assert_eq!(seen, ["link", "notes.txt", "sub", "sub/big.bin", &long].map(String::from));
    let o = cairn(&repo, "pw", &["dump", &format!("latest:{s}/nope")]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("nope"), "{}", o.stderr);
    let o = cairn(&repo, "pw", &["dump", &format!("latest:{s}"), "x"]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("give the path once"), "{}", o.stderr);
}

#[test]
fn cat_decodes_every_kind_of_object() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src) = (dir.path().join("repo"), dir.path().join("src"));
    write(&src.join("f.txt"), b"the file's bytes");
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    assert_eq!(cairn(&repo, "pw", &["backup", src.to_str().unwrap()]).code, EXIT_OK);
    let cat = |args: &[&str]| -> serde_json::Value {
        let o = cairn(&repo, "pw", &[&["cat"][..], args].concat());
        assert_eq!(o.code, EXIT_OK, "{args:?}: {}", o.stderr);
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", o.stdout))
    };
    assert_eq!(cat(&["config"])["compression"], 3);
    let snap = cat(&["snapshot", "latest"]);
    let mut tree = snap["tree"].as_str().unwrap().to_string();
    // Down the tree to the file: one node per directory on the way.
    let mut file = serde_json::Value::Null;
    for _ in 0..64 {
        let node = cat(&["tree", &tree]);
        let e = &node["nodes"][0];
        if e["type"] == "file" {
            file = e.clone();
            break;
        }
        tree = e["subtree"].as_str().unwrap().to_string();
    }
    assert_eq!(file["name"], "f.txt");
    let chunk = file["content"][0]["id"].as_str().unwrap().to_string();
    let o = cairn(&repo, "pw", &["cat", "blob", &chunk]);
    assert_eq!(o.stdout, "the file's bytes");
    let first = |d: &str| {
        let mut ids: Vec<String> = walkdir(&repo.join(d));
        ids.sort();
        ids.remove(0)
    };
    let index = cat(&["index", &first("index")[..8]]);
    assert!(index["blobs"].as_array().unwrap().iter().any(|b| b["id"] == chunk.as_str()));
    let pack = index["blobs"][0]["pack"].as_str().unwrap().to_string();
    assert!(!cat(&["pack", &pack]).get("blobs").unwrap().as_array().unwrap().is_empty());
    let key = cat(&["key", &first("keys")]);
    assert!(key["mem_kib"].as_u64().is_some() && key.get("salt").is_none(), "{key}");
    // A lock, while another client (this test) holds it.
    let held = crate::repo::Repository::open(&repo, b"pw").unwrap();
    let opts = crate::repo::lock::LockOptions::default();
    held.with_lock(crate::repo::lock::LockKind::Exclusive, "prune", &opts, |_| {
        let lock = cat(&["lock", &first("locks")[..8]]);
        assert_eq!((lock["command"].as_str(), lock["exclusive"].as_bool()), (Some("prune"), Some(true)), "{lock}");
        assert_eq!(lock["pid"].as_u64(), Some(std::process::id() as u64), "{lock}");
        Ok(())
    })
    .unwrap();
    for (args, says) in [
        (&["cat", "colour"][..], "unknown type"),
        (&["cat", "tree", "abc"][..], "not an id"),
        (&["cat", "snapshot"][..], "give an id"),
        (&["cat", "index", "ffffffff"][..], "no such index"),
    ] {
        let o = cairn(&repo, "pw", args);
        assert!(o.code == EXIT_ERROR && o.stderr.contains(says), "{args:?}: {}", o.stderr);
    }
}

/// The names of the files under `dir`, at any depth.
fn walkdir(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walkdir(&e.path()));
        } else {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn stats_counts_restore_size_distinct_contents_and_stored_data() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src) = (dir.path().join("repo"), dir.path().join("src"));
    write(&src.join("a"), &[1u8; 100]);
    write(&src.join("b"), &[1u8; 100]);
    write(&src.join("sub/c"), &bytes(3, 2_000_000, true));
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    assert_eq!(cairn(&repo, "pw", &["backup", src.to_str().unwrap()]).code, EXIT_OK);
    write(&src.join("d"), b"dddd");
    assert_eq!(cairn(&repo, "pw", &["backup", src.to_str().unwrap()]).code, EXIT_OK);
    let stats = |args: &[&str]| -> serde_json::Value {
        let o = cairn(&repo, "pw", &[&["--json", "stats"][..], args].concat());
        assert_eq!(o.code, EXIT_OK, "{args:?}: {}", o.stderr);
        serde_json::from_str(&o.stdout).unwrap()
    };
    let r = stats(&[]);
    assert_eq!((r["snapshots_count"].as_u64(), r["total_file_count"].as_u64()), (Some(2), Some(7)));
    assert_eq!(r["total_size"], 2 * (200 + 2_000_000) + 4);
    assert!(r["dirs_reused"].as_u64().unwrap() >= 1, "sub/ is counted once and reused: {r}");
    let r = stats(&["latest"]);
    assert_eq!((r["snapshots_count"].as_u64(), r["total_file_count"].as_u64()), (Some(1), Some(4)));
    let r = stats(&["--mode", "files-by-contents"]);
    assert_eq!(r["total_file_count"], 3, "a and b have one content: {r}");
    assert_eq!(r["total_size"], 100 + 2_000_000 + 4);
    let r = stats(&["--mode", "raw-data"]);
    let (stored, raw) = (r["total_size"].as_u64().unwrap(), r["total_uncompressed_size"].as_u64().unwrap());
    assert_eq!(raw, 100 + 2_000_000 + 4, "distinct blobs, uncompressed: {r}");
    assert!(stored < raw && r["compression_ratio"].as_f64().unwrap() > 1.0, "{r}");
    let o = cairn(&repo, "pw", &["stats", "--mode", "blobs"]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("--mode blobs"), "{}", o.stderr);
    let o = cairn(&repo, "pw", &["stats"]);
    assert!(o.stdout.contains("Stats in restore-size mode:") && o.stdout.contains("Total File Count:  7"));
}

#[test]
fn key_list_remove_and_passwd() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let pw_file = |name: &str, pw: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, pw).unwrap();
        p.to_str().unwrap().to_string()
    };
    assert_eq!(cairn(&repo, "first", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    let second = pw_file("second", "second");
    let o = cairn(&repo, "first", &["key", "add", "--insecure-test-kdf", "--new-password-file", &second]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    let keys = |pw: &str| -> Vec<(bool, String)> {
        let o = cairn(&repo, pw, &["--json", "key", "list"]);
        assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|k| (k["current"].as_bool().unwrap(), k["id"].as_str().unwrap().into()))
            .collect()
    };
    let listed = keys("first");
    assert_eq!(listed.len(), 2);
    let first_id = listed.iter().find(|(cur, _)| *cur).unwrap().1.clone();
    assert_eq!(keys("second").iter().filter(|(cur, _)| *cur).count(), 1);
    assert!(cairn(&repo, "first", &["key", "list"]).stdout.contains(&format!("*{}", &first_id[..8])));
    // Never the key in use.
    let o = cairn(&repo, "first", &["key", "remove", &first_id[..8]]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("in use"), "{}", o.stderr);
    let o = cairn(&repo, "second", &["key", "remove", &first_id[..8]]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    assert_eq!(cairn(&repo, "first", &["snapshots"]).code, EXIT_WRONG_PASSWORD);
    let o = cairn(&repo, "second", &["key", "remove", "ffff"]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("no such key"), "{}", o.stderr);
    // passwd: the new password opens it, the old one no longer does, one key remains.
    let third = pw_file("third", "third");
    let o = cairn(&repo, "second", &["key", "passwd", "--insecure-test-kdf", "--new-password-file", &third]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    assert_eq!(cairn(&repo, "second", &["snapshots"]).code, EXIT_WRONG_PASSWORD);
    assert_eq!(keys("third").len(), 1);
    let empty = pw_file("empty", "");
    let o = cairn(&repo, "third", &["key", "passwd", "--new-password-file", &empty]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("empty password"), "{}", o.stderr);
}

#[test]
fn completions_and_manual_pages_come_from_the_command_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("unused");
    let o = cairn(&repo, "pw", &["completion", "bash"]);
    assert!(o.code == EXIT_OK && o.stdout.contains("_cairn()") && o.stdout.contains("--exclude-caches"));
    for shell in ["zsh", "fish"] {
        let o = cairn(&repo, "pw", &["completion", shell]);
        assert!(o.code == EXIT_OK && o.stdout.contains("exclude-larger-than"), "{shell}");
    }
    let o = cairn(&repo, "pw", &["completion", "tcsh"]);
    assert!(o.code == 2 && o.stderr.contains("tcsh"), "{}", o.stderr);
    let o = cairn(&repo, "pw", &["man"]);
    assert!(o.code == EXIT_OK && o.stdout.contains(".TH cairn"), "{}", o.stdout);
    let pages = dir.path().join("man1");
    assert_eq!(cairn(&repo, "pw", &["man", "--dir", pages.to_str().unwrap()]).code, EXIT_OK);
    let backup = std::fs::read_to_string(pages.join("cairn-backup.1")).unwrap();
    assert!(backup.contains("exclude\\-if\\-present") || backup.contains("exclude-if-present"), "{backup}");
    assert!(pages.join("cairn-diff.1").exists() && pages.join("cairn.1").exists());
}

#[test]
fn backup_dry_run_writes_nothing_and_predicts_the_growth() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src) = (dir.path().join("repo"), dir.path().join("src"));
    write(&src.join("random.bin"), &bytes(11, 3_000_000, false));
    write(&src.join("text.txt"), &bytes(12, 2_000_000, true));
    for i in 0..300 {
        write(&src.join(format!("small/{i}.txt")), format!("file {i}").as_bytes());
    }
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    let files = || {
        let mut v: Vec<(String, u64)> = Vec::new();
        let mut stack = vec![repo.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    v.push((e.path().display().to_string(), e.metadata().unwrap().len()));
                }
            }
        }
        v.sort();
        v
    };
    let before = files();
    let s = src.to_str().unwrap();
    let o = cairn(&repo, "pw", &["--json", "backup", "--dry-run", s]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(v["dry_run"], true);
    assert_eq!(files(), before, "a dry run writes nothing, not even a lock");
    let predicted = v["growth"]["total"].as_u64().unwrap();
    assert_eq!(v["summary"]["files_new"], 302);
    let o = cairn(&repo, "pw", &["backup", s]);
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    let grown = files().iter().map(|(_, n)| n).sum::<u64>() - before.iter().map(|(_, n)| n).sum::<u64>();
    let off = (predicted as f64 - grown as f64).abs() / grown as f64;
    assert!(off < 0.01, "predicted {predicted}, grew {grown}");
    // After the real backup, a dry run has nothing new to add but the snapshot and the
    // directories that hold changed times.
    let o = cairn(&repo, "pw", &["backup", "-n", s]);
    assert!(o.code == EXIT_OK && o.stdout.contains("Dry run, nothing written"), "{}", o.stdout);
    assert!(o.stdout.contains("302 unchanged"), "{}", o.stdout);
}

#[test]
fn backup_stdin_from_command_stores_the_output_and_fails_with_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    assert_eq!(cairn(&repo, "pw", &["init", "--insecure-test-kdf"]).code, EXIT_OK);
    let script = "i=0; while [ $i -lt 20000 ]; do echo \"row $i\"; i=$((i+1)); done";
    let o = cairn(
        &repo,
        "pw",
        &["backup", "--stdin-from-command", "--stdin-filename", "dumps/db.sql", "--", "sh", "-c", script],
    );
    assert_eq!(o.code, EXIT_OK, "{}", o.stderr);
    let want: String = (0..20000).map(|i| format!("row {i}\n")).collect();
    let o = cairn(&repo, "pw", &["dump", "latest:/dumps/db.sql"]);
    assert!(o.stdout == want, "{} bytes back", o.stdout.len());
    let snaps: serde_json::Value = serde_json::from_str(&cairn(&repo, "pw", &["--json", "snapshots"]).stdout).unwrap();
    assert_eq!(snaps[0]["paths"][0], "/dumps/db.sql");
    // A command that fails leaves no snapshot, whatever it printed.
    let o = cairn(&repo, "pw", &["backup", "--stdin-from-command", "--", "sh", "-c", "echo partial; exit 3"]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("failed"), "{}", o.stderr);
    let o = cairn(&repo, "pw", &["backup", "--stdin-from-command", "--", "/no/such/program"]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("/no/such/program"), "{}", o.stderr);
    assert!(cairn(&repo, "pw", &["snapshots"]).stdout.contains("1 snapshots"));
    // --stdin with paths, and a name that climbs out: one-line errors.
    let o = cairn(&repo, "pw", &["backup", "--stdin", "/etc"]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("--stdin takes no paths"), "{}", o.stderr);
    let o = cairn(&repo, "pw", &["backup", "--stdin-from-command", "--stdin-filename", "../x", "--", "true"]);
    assert!(o.code == EXIT_ERROR && o.stderr.contains("--stdin-filename ../x"), "{}", o.stderr);
}
