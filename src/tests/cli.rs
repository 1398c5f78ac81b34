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

/// Run the command line in process on `repo` with `password` (never the real
/// environment: no prompts, no caches of the user's).
pub(crate) fn cairn(repo: &Path, password: &str, args: &[&str]) -> Out {
    let cancel = AtomicBool::new(false);
    // Never the real environment: an explicit repository and password, no prompts.
    let env = Env {
        repo: Some(repo.to_path_buf()),
        password: Some(password.into()),
        password_file: None,
        default_repo: None,
        cache_dir: None,
        memory: None,
        interactive: false,
        cancel: &cancel,
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
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
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
