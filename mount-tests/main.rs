//! Tests that mount a real FUSE filesystem with the `cairn` binary and check it with real
//! tools (cp, diff, find, ls, dd). They skip, saying so, where /dev/fuse is absent; on CI
//! (`CI=true`) or with `CAIRN_REQUIRE_FUSE=1` a skip is a failure instead.
//! scripts/test.sh installs fuse3 (fusermount3) when it is missing.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::format::snapshot::MAX_XATTR_NAMES;

const BIN: &str = env!("CARGO_BIN_EXE_cairn");

fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    skip("/dev/fuse is absent on this machine");
    false
}

/// Say why a test does not run. On CI (`CI` set, not to "false" or "0") or with
/// `CAIRN_REQUIRE_FUSE=1` it fails instead: a suite that passes without running its
/// mount tests proves nothing about the mount.
fn skip(why: &str) {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    if set("CI") || set("CAIRN_REQUIRE_FUSE") {
        panic!("cannot run: {why} (a skip is a failure with CI or CAIRN_REQUIRE_FUSE set)");
    }
    eprintln!("skipped: {why}");
}

/// A scratch directory with a repository; every command runs with an explicit
/// repository, password and cache, never the user's.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let s = Scratch { dir: tempfile::tempdir().unwrap() };
        s.cairn(&["init", "--insecure-test-kdf"]);
        s
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(["-r", self.path("repo").to_str().unwrap()])
            .args(args)
            .env_remove("CAIRN_PASSWORD_FILE")
            .env("CAIRN_PASSWORD", "mount-test")
            .env("CAIRN_CACHE_DIR", self.path("cache"));
        c
    }
    fn cairn(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(out.status.success(), "cairn {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn mount(&self, extra: &[&str]) -> Mounted {
        let mnt = self.path("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let mut args = vec!["mount", mnt.to_str().unwrap()];
        args.extend_from_slice(extra);
        let child = self.command(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let m = Mounted { child: Some(child), mnt };
        let start = Instant::now();
        while !m.mnt.join("snapshots").exists() {
            assert!(start.elapsed() < Duration::from_secs(20), "the mount did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }
}

/// A running `cairn mount`; unmounted (SIGTERM, then fusermount3 -u) when dropped.
struct Mounted {
    child: Option<Child>,
    mnt: PathBuf,
}

impl Mounted {
    /// SIGTERM the mount process; returns its exit status and stderr.
    fn stop(&mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "the mount did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (status, err)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        if mounted(&self.mnt) {
            let _ = Command::new("fusermount3").arg("-u").arg(&self.mnt).status();
        }
    }
}

fn mounted(p: &Path) -> bool {
    let want = p.to_str().unwrap();
    fs::read_to_string("/proc/mounts").unwrap().lines().any(|l| l.split(' ').nth(1) == Some(want))
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `find -printf` of what a restore must reproduce (directory sizes and atimes aside).
fn listing(root: &Path) -> String {
    run(Command::new("find").arg(".").arg("-printf").arg("%p %y %m %U %G %s %T@ %l %n\n").current_dir(root))
        .lines()
        .map(|l| {
            // Directory sizes and link counts are the filesystem's own.
            let f: Vec<&str> = l.split(' ').collect();
            if f.get(1) == Some(&"d") {
                format!("{} d {} {} {} {}", f[0], f[2], f[3], f[4], f[6])
            } else {
                l.to_string()
            }
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn cp_a_out_of_the_mount_reproduces_the_source() {
    if !fuse_available() {
        return;
    }
    let s = Scratch::new();
    let src = s.path("src");
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    fs::create_dir_all(src.join("empty-dir")).unwrap();
    let big = data(1, 24 << 20);
    fs::write(src.join("big"), &big).unwrap();
    fs::write(src.join("dir/small"), b"hello\n").unwrap();
    fs::write(src.join("dir/empty"), b"").unwrap();
    for i in 0..200 {
        fs::write(src.join("dir/sub").join(format!("f{i}")), data(i + 10, 100 + i as usize * 37)).unwrap();
    }
    std::os::unix::fs::symlink("dir/small", src.join("link")).unwrap();
    fs::hard_link(src.join("dir/small"), src.join("hardlink")).unwrap();
    run(Command::new("chmod").args(["0750", src.join("dir").to_str().unwrap()]));
    run(Command::new("touch").args(["-d", "2001-02-03 04:05:06", src.join("dir/small").to_str().unwrap()]));
    s.cairn(&["backup", src.to_str().unwrap()]);

    let mut m = s.mount(&["--cache-size", "4M"]);
    let top: Vec<String> =
        fs::read_dir(&m.mnt).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    for want in ["snapshots", "latest", "hosts", "tags", "ids"] {
        assert!(top.iter().any(|n| n == want), "{want} missing from {top:?}");
    }
    let inside = m.mnt.join("latest").join(src.strip_prefix("/").unwrap());
    assert!(inside.join("big").exists());

    // cp -a restores bytes, modes, times, symlinks and hard links.
    let out = s.path("out");
    run(Command::new("cp").arg("-a").arg(&inside).arg(&out));
    run(Command::new("diff").arg("-r").arg("--no-dereference").arg(&src).arg(&out));
    assert_eq!(listing(&src), listing(&out));
    assert_eq!(fs::metadata(out.join("hardlink")).unwrap().ino(), fs::metadata(out.join("dir/small")).unwrap().ino());

    // ls -lR and find see everything; stat matches the source.
    let ls = run(Command::new("ls").arg("-lR").arg(&inside));
    assert!(ls.contains("f199") && ls.contains("link -> dir/small"), "{ls}");
    let (a, b) = (fs::metadata(inside.join("dir/small")).unwrap(), fs::metadata(src.join("dir/small")).unwrap());
    assert_eq!((a.mode(), a.uid(), a.size(), a.mtime(), a.nlink()), (b.mode(), b.uid(), b.size(), b.mtime(), 2));

    // Random preads, and an mmap-style read through dd with odd block sizes.
    let f = fs::File::open(inside.join("big")).unwrap();
    let mut x = 3u64;
    for _ in 0..50 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let off = (x >> 30) % big.len() as u64;
        let mut buf = vec![0u8; ((x >> 7) % 300_000) as usize + 1];
        let n = f.read_at(&mut buf, off).unwrap();
        assert!(buf[..n] == big[off as usize..off as usize + n], "pread at {off}");
    }
    let mut g = fs::File::open(inside.join("big")).unwrap();
    g.seek(SeekFrom::Start(big.len() as u64 - 10)).unwrap();
    let mut tail = Vec::new();
    g.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, big[big.len() - 10..]);

    // Several readers at once.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let p = inside.join("big");
            std::thread::spawn(move || fs::read(p).unwrap())
        })
        .collect();
    for r in readers {
        assert!(r.join().unwrap() == big);
    }

    // The test sets no extended attributes (a host may: an SELinux label on every
    // file). Where the snapshot has none, the mount says it has none, as a filesystem
    // without them would, and the kernel stops asking (cp -a above asked for each file);
    // where it has some, only names of the classes it holds are looked up.
    let names = snapshot_xattr_names(&src);
    for p in [inside.join("dir/small"), inside.join("dir"), m.mnt.join("snapshots")] {
        let list = if names.is_empty() { libc::EOPNOTSUPP } else { 0 };
        assert_eq!(xattr_errno(&p, None), list, "{}", p.display());
        assert_eq!(xattr_errno(&p, Some("user.x")), absent_xattr_errno(&names, "user.x"), "{}", p.display());
    }

    // Read-only: writes fail with EROFS.
    let e = fs::write(inside.join("new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc_erofs()), "{e}");

    let (status, err) = m.stop();
    assert!(status.success(), "mount exited with {status}: {err}");
    assert!(!mounted(&m.mnt), "still mounted after SIGTERM");
}

/// The xattr names the snapshot of `src` holds: those of everything under `src` and of
/// the directories above it (whose metadata the snapshot holds), as this host gave them.
fn snapshot_xattr_names(src: &Path) -> std::collections::BTreeSet<Vec<u8>> {
    let mut paths: Vec<PathBuf> = src.ancestors().map(Path::to_path_buf).collect();
    let mut stack = vec![src.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            paths.push(p);
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for p in paths {
        names.extend(cairn::sys::xattrs(&p).unwrap().into_iter().map(|(n, _)| n));
    }
    assert!(names.len() <= MAX_XATTR_NAMES, "the snapshot lists its names");
    names
}

/// The errno of looking up an xattr `name` that this file lacks, on a mount whose
/// snapshots hold the xattr names `names` (README.md): "not supported" where they hold
/// none at all, or for SELinux labels and ACLs no snapshot holds; "no such attribute"
/// otherwise.
fn absent_xattr_errno(names: &std::collections::BTreeSet<Vec<u8>>, name: &str) -> i32 {
    let labels_or_acls = name.starts_with("security.") || name.starts_with("system.");
    if names.is_empty() || (labels_or_acls && !names.contains(name.as_bytes())) {
        libc::EOPNOTSUPP
    } else {
        libc::ENODATA
    }
}

fn libc_erofs() -> i32 {
    30 // EROFS on Linux
}

/// The errno of asking for extended attribute `name` of `path` (its list when `None`),
/// 0 if the call succeeds.
fn xattr_errno(path: &Path, name: Option<&str>) -> i32 {
    let p = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let n = name.map(|n| std::ffi::CString::new(n).unwrap());
    // SAFETY: valid NUL-terminated strings; a null buffer of size 0 asks for the size.
    let r = unsafe {
        match &n {
            Some(n) => libc::lgetxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0),
            None => libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0),
        }
    };
    if r < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    } else {
        0
    }
}

/// The directory of `src` inside the newest snapshot of the mount.
fn latest(m: &Mounted, src: &Path) -> PathBuf {
    m.mnt.join("latest").join(src.strip_prefix("/").unwrap())
}

#[test]
fn rsync_with_hard_links_acls_and_xattrs_reproduces_the_source() {
    if !fuse_available() {
        return;
    }
    let s = Scratch::new();
    let src = s.path("src");
    fs::create_dir_all(src.join("d/e")).unwrap();
    for i in 0..50 {
        fs::write(src.join("d/e").join(format!("g{i}")), data(i + 100, 5000 + i as usize * 911)).unwrap();
    }
    fs::write(src.join("d/tagged"), b"with attributes\n").unwrap();
    cairn::sys::set_xattr(&src.join("d/tagged"), b"user.colour", b"blue").unwrap();
    cairn::sys::set_xattr(&src.join("d/tagged"), b"user.empty", b"").unwrap();
    // As root, a `security.` name besides SELinux's (as a file capability is): the
    // snapshot lists its names, so `security.selinux` is still "not supported" below.
    let _ = cairn::sys::set_xattr(&src.join("d/tagged"), b"security.cairn", b"label");
    fs::hard_link(src.join("d/e/g1"), src.join("d/g1-again")).unwrap();
    fs::hard_link(src.join("d/e/g1"), src.join("g1-third")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", src.join("dangling")).unwrap();
    run(Command::new("mkfifo").arg(src.join("fifo")));
    // Times in the past: rsync compares whole seconds by default, so a copy made in the
    // same second as the source would keep its own times and the check below would fail
    // for rsync's reason, not the mount's.
    run(Command::new("find").arg(&src).args([
        "-exec",
        "touch",
        "-h",
        "-d",
        "2001-02-03 04:05:06.123456789",
        "{}",
        "+",
    ]));
    run(Command::new("touch")
        .args(["-h", "-d", "1999-12-31 23:59:58.5"])
        .arg(src.join("dangling"))
        .arg(src.join("d/e/g7")));
    s.cairn(&["backup", src.to_str().unwrap()]);

    let m = s.mount(&[]);
    let inside = latest(&m, &src);
    assert_eq!(listing(&src), listing(&inside));
    let out = s.path("out");
    run(Command::new("rsync").arg("-aHAX").arg("--checksum").arg(format!("{}/", inside.display())).arg(&out));
    // diff cannot compare fifos; the listing below checks the fifo's type and mode.
    run(Command::new("diff").arg("-r").arg("--no-dereference").arg("-x").arg("fifo").arg(&src).arg(&out));
    assert_eq!(listing(&src), listing(&out));
    let ino = |p: &str| fs::metadata(out.join(p)).unwrap().ino();
    assert_eq!(ino("d/e/g1"), ino("d/g1-again"));
    assert_eq!(ino("d/e/g1"), ino("g1-third"));
    let user = |p: &Path| {
        let mut x = cairn::sys::xattrs(p).unwrap();
        x.retain(|(n, _)| n.starts_with(b"user."));
        x
    };
    assert_eq!(user(&out.join("d/tagged")), user(&src.join("d/tagged")));
    let got = cairn::sys::xattrs(&inside.join("d/tagged")).unwrap();
    assert!(got.contains(&(b"user.colour".to_vec(), b"blue".to_vec())), "{got:?}");
    assert!(got.contains(&(b"user.empty".to_vec(), b"".to_vec())), "{got:?}");
    // The test set user.* attributes only; the host may have added others (an SELinux
    // label). The classes no file has are not supported on the mount (EOPNOTSUPP, which
    // ls remembers for the mount: no ACL lookups); absent user.* names are absent.
    let names = snapshot_xattr_names(&src);
    let tagged = inside.join("d/tagged");
    for (p, name) in [
        (&tagged, "system.posix_acl_access"),
        (&inside.join("d"), "system.posix_acl_default"),
        (&tagged, "trusted.x"),
        (&tagged, "user.none"),
    ] {
        assert_eq!(xattr_errno(p, Some(name)), absent_xattr_errno(&names, name), "{name} of {}", p.display());
    }
    let label = cairn::sys::xattrs(&src.join("d/tagged")).unwrap().into_iter().find(|(n, _)| n == b"security.selinux");
    match label {
        Some((_, v)) => assert!(got.contains(&(b"security.selinux".to_vec(), v))),
        None => {
            assert_eq!(xattr_errno(&tagged, Some("security.selinux")), absent_xattr_errno(&names, "security.selinux"));
            if names.contains(&b"security.cairn"[..]) {
                assert_eq!(xattr_errno(&tagged, Some("security.selinux")), libc::EOPNOTSUPP);
                assert_eq!(xattr_errno(&tagged, Some("security.cairn")), 0);
                assert_eq!(xattr_errno(&inside.join("d/e/g1"), Some("security.cairn")), libc::ENODATA);
            }
        }
    }
    assert_eq!(xattr_errno(&tagged, Some("user.colour")), 0);
    assert_eq!(xattr_errno(&inside.join("d/e/g1"), None), 0, "listing names works where there are none");
    // A second rsync finds nothing to do: sizes and times match exactly.
    let again = run(Command::new("rsync").arg("-aHAXi").arg(format!("{}/", inside.display())).arg(&out));
    assert!(again.trim().is_empty(), "rsync found differences: {again}");
    // The mount's inodes: every link of a file is one inode there too.
    assert_eq!(
        fs::metadata(inside.join("d/e/g1")).unwrap().ino(),
        fs::metadata(inside.join("g1-third")).unwrap().ino()
    );
    assert_eq!(fs::metadata(inside.join("d/e/g1")).unwrap().nlink(), 3);
}

#[test]
fn mmap_and_a_tiny_cache_read_correct_bytes() {
    if !fuse_available() {
        return;
    }
    let s = Scratch::new();
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    let big = data(7, 40 << 20);
    fs::write(src.join("big"), &big).unwrap();
    s.cairn(&["backup", src.to_str().unwrap()]);
    // A 1 MiB cache: most chunks are larger and bypass it.
    let m = s.mount(&["--cache-size", "1M"]);
    let f = fs::File::open(latest(&m, &src).join("big")).unwrap();
    // SAFETY: the mount is read-only and nothing else maps the file.
    let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    assert_eq!(map.len(), big.len());
    let mut x = 11u64;
    for _ in 0..200 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let off = (x >> 20) as usize % big.len();
        let len = ((x >> 5) as usize % 70_000).min(big.len() - off);
        assert!(map[off..off + len] == big[off..off + len], "mmap at {off}");
    }
    assert!(map[..] == big[..]);
    drop(map);
    // Backwards reads in small pieces (each a seek in the chunk list).
    let mut pos = big.len() as u64;
    let mut buf = vec![0u8; 100_003];
    while pos > 0 {
        let step = (buf.len() as u64).min(pos);
        pos -= step;
        let n = f.read_at(&mut buf[..step as usize], pos).unwrap();
        assert_eq!(n as u64, step);
        assert!(buf[..n] == big[pos as usize..pos as usize + n], "backwards read at {pos}");
    }
}

#[test]
fn a_multi_gigabyte_file_reads_back_at_random_offsets() {
    if !fuse_available() {
        return;
    }
    let s = Scratch::new();
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    // 5 GiB, sparse (a few MiB on disk): zeros with islands of distinct data every
    // 160 MiB, the last ones past 4 GiB, so offsets beyond 32 bits are exercised.
    let len: u64 = 5 << 30;
    let f = fs::File::create(src.join("huge")).unwrap();
    f.set_len(len).unwrap();
    let mut islands = Vec::new();
    let mut at = 1234u64;
    while at + (64 << 10) < len {
        let d = data(at, 64 << 10);
        f.write_all_at(&d, at).unwrap();
        islands.push(at);
        at += 160 << 20;
    }
    f.write_all_at(b"the very end", len - 12).unwrap();
    drop(f);
    s.cairn(&["backup", src.to_str().unwrap()]);

    let m = s.mount(&[]);
    let inside = fs::File::open(latest(&m, &src).join("huge")).unwrap();
    let source = fs::File::open(src.join("huge")).unwrap();
    assert_eq!(inside.metadata().unwrap().len(), len);
    let check = |off: u64, n: usize| {
        let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
        let got = inside.read_at(&mut a, off).unwrap();
        let want = source.read_at(&mut b, off).unwrap();
        assert_eq!(got, want, "length of the read at {off}");
        assert!(a[..got] == b[..want], "read of {n} at {off}");
    };
    // Every island (and across its edges), then random offsets anywhere.
    for &i in &islands {
        check(i - 100, (64 << 10) + 200);
    }
    let mut x = 5u64;
    for _ in 0..300 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        check((x >> 11) % len, ((x >> 3) % 300_000) as usize + 1);
    }
    check(len - 100, 4096); // a read past the end is short
    let mut tail = [0u8; 12];
    inside.read_exact_at(&mut tail, len - 12).unwrap();
    assert_eq!(&tail, b"the very end");
}

/// Bytes the mount process has written: every FUSE reply (fuser writes each with
/// `writev` on /dev/fuse, which the kernel counts in `wchar`), so the data served.
fn served(m: &Mounted) -> u64 {
    let pid = m.child.as_ref().expect("running").id();
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines().find_map(|l| l.strip_prefix("wchar: ")).unwrap().trim().parse().unwrap()
}

/// `lseek(fd, offset, whence)`: the offset, or the errno.
fn seek(f: &fs::File, offset: u64, whence: i32) -> Result<u64, i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a descriptor this function borrows.
    let r = unsafe { libc::lseek(f.as_raw_fd(), offset as libc::off_t, whence) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        Ok(r as u64)
    }
}

#[test]
fn sparse_files_copy_out_sparse_reading_only_their_data() {
    if !fuse_available() {
        return;
    }
    let s = Scratch::new();
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    // 1 GiB holding 8 KiB of data, ending in a hole.
    let (len, at): (u64, u64) = (1 << 30, (300 << 20) + 1234);
    let d = data(3, 8192);
    let f = fs::File::create(src.join("sparse")).unwrap();
    f.set_len(len).unwrap();
    f.write_all_at(&d, at).unwrap();
    drop(f);
    s.cairn(&["backup", src.to_str().unwrap()]);

    let m = s.mount(&[]);
    let inside = latest(&m, &src).join("sparse");
    let meta = fs::metadata(&inside).unwrap();
    assert_eq!(meta.len(), len);
    assert!(meta.blocks() * 512 <= 16 << 20, "{} blocks reported", meta.blocks());
    assert!(meta.blocks() * 512 >= d.len() as u64, "{} blocks reported", meta.blocks());
    // SEEK_DATA / SEEK_HOLE as on the source, to the chunk (at most 4 MiB).
    let fi = fs::File::open(&inside).unwrap();
    let data_at = seek(&fi, 0, libc::SEEK_DATA).unwrap();
    assert!(data_at <= at && at - data_at <= 4 << 20, "data from {data_at}");
    let hole_at = seek(&fi, data_at, libc::SEEK_HOLE).unwrap();
    assert!(hole_at >= at + d.len() as u64 && hole_at - at <= 8 << 20, "hole from {hole_at}");
    assert_eq!(seek(&fi, hole_at, libc::SEEK_DATA), Err(libc::ENXIO));
    assert_eq!(seek(&fi, 5, libc::SEEK_HOLE), Ok(5));
    assert_eq!(seek(&fi, len, libc::SEEK_HOLE), Err(libc::ENXIO));
    drop(fi);
    let du = run(Command::new("du").arg("-B1").arg(&inside));
    let du: u64 = du.split_whitespace().next().unwrap().parse().unwrap();
    assert!(du <= 16 << 20, "du through the mount: {du}");

    // cp (SEEK_DATA/SEEK_HOLE) reads only the data through the mount, and the copy is
    // sparse; tar --sparse the same; rsync --sparse reads every byte (it never seeks)
    // but gets holes without chunks being loaded, and writes a sparse copy.
    let out = s.path("out");
    fs::create_dir_all(&out).unwrap();
    let before = served(&m);
    run(Command::new("cp").arg("-a").arg(&inside).arg(out.join("cp")));
    let by_cp = served(&m) - before;
    assert!(by_cp < 16 << 20, "cp read {by_cp} bytes through the mount");
    let before = served(&m);
    let tarball = s.path("sparse.tar");
    run(Command::new("tar")
        .arg("--sparse")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(inside.parent().unwrap())
        .arg("sparse"));
    let by_tar = served(&m) - before;
    assert!(by_tar < 16 << 20, "tar read {by_tar} bytes through the mount");
    // tar archives each data extent whole: the chunks that hold the data.
    let archived = fs::metadata(&tarball).unwrap().len();
    assert!(archived < 16 << 20, "the archive holds the holes as data: {archived} bytes");
    run(Command::new("rsync").arg("-a").arg("--sparse").arg(&inside).arg(out.join("rsync")));
    let want = fs::read(src.join("sparse")).unwrap();
    for name in ["cp", "rsync"] {
        let copy = out.join(name);
        let meta = fs::metadata(&copy).unwrap();
        assert_eq!(meta.len(), len, "{name}");
        assert!(meta.blocks() * 512 <= 1 << 20, "{name}: the copy has {} blocks", meta.blocks());
        assert!(fs::read(&copy).unwrap() == want, "{name}: the copy's bytes differ");
    }
}

#[test]
fn a_directory_of_100k_entries_lists_completely() {
    if !fuse_available() {
        return;
    }
    let s = Scratch::new();
    let src = s.path("src");
    let many = src.join("many");
    fs::create_dir_all(&many).unwrap();
    const N: usize = 100_000;
    for i in 0..N {
        fs::File::create(many.join(format!("entry-{i:06}"))).unwrap();
    }
    s.cairn(&["backup", src.to_str().unwrap()]);
    let m = s.mount(&[]);
    let inside = latest(&m, &src).join("many");
    let mut names: Vec<String> =
        fs::read_dir(&inside).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), N);
    names.sort();
    for (i, n) in names.iter().enumerate() {
        assert_eq!(n, &format!("entry-{i:06}"));
    }
    // ls -l stats every entry (through READDIRPLUS where the kernel has it).
    let ls = run(Command::new("ls").arg("-l").arg(&inside));
    assert_eq!(ls.lines().filter(|l| l.starts_with('-')).count(), N);
    assert!(fs::metadata(inside.join("entry-099999")).unwrap().is_file());
}

/// Peak resident memory of the mount process, in bytes.
fn peak_rss(m: &Mounted) -> u64 {
    let pid = m.child.as_ref().expect("running").id();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kib << 10
}

#[test]
fn versions_list_every_change_of_a_wide_directory_within_the_budget() {
    if !fuse_available() {
        return;
    }
    let s = Scratch::new();
    let src = s.path("src");
    let wide = src.join("wide");
    fs::create_dir_all(&wide).unwrap();
    // 20,000 files across 30 snapshots (30 distinct trees of the directory); snapshot
    // i > 0 rewrites file i % 10, so f00003 has 4 versions (its first, and those of
    // snapshots 3, 13 and 23) and files from f00010 on one.
    const N: usize = 20_000;
    const SNAPS: usize = 30;
    for i in 0..N {
        fs::write(wide.join(format!("f{i:05}")), format!("file {i}")).unwrap();
    }
    let content = |k: usize, snap: usize| format!("file {k}, as changed in snapshot {snap}").repeat(snap + 1);
    for snap in 0..SNAPS {
        if snap > 0 {
            fs::write(wide.join(format!("f{:05}", snap % 10)), content(snap % 10, snap)).unwrap();
        }
        let time = format!("2026-01-01 00:{snap:02}:00");
        s.cairn(&["backup", "--host", "h", "--time", &time, src.to_str().unwrap()]);
    }
    let m = s.mount(&["--memory", "64M"]);
    let dir = m.mnt.join("versions/h").join(wide.strip_prefix("/").unwrap());
    let ls = run(Command::new("ls").arg("-l").arg(&dir));
    assert_eq!(ls.lines().filter(|l| l.starts_with('d')).count(), N, "every file is a directory of versions");
    // f00003 was made before snapshot 0 and rewritten in snapshots 3, 13 and 23.
    let f3 = dir.join("f00003");
    let mut names: Vec<String> =
        fs::read_dir(&f3).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let when = |snap: usize| names.iter().position(|n| n.contains(&format!("T00:{snap:02}:00"))).is_some();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!([0, 3, 13, 23].into_iter().all(when), "{names:?}");
    let copy = s.path("copy");
    run(Command::new("cp").arg("-a").arg(&f3).arg(&copy));
    let mut got: Vec<Vec<u8>> = names.iter().map(|n| fs::read(copy.join(n)).unwrap()).collect();
    got.sort();
    let mut want = vec![b"file 3".to_vec()];
    want.extend([3, 13, 23].map(|snap| content(3, snap).into_bytes()));
    want.sort();
    assert!(got == want, "the versions' bytes differ");
    assert_eq!(fs::read_dir(dir.join("f00042")).unwrap().count(), 1);
    // Listing merges 30 trees of 20,000 entries one directory at a time: memory stays
    // within --memory + 32 MiB (the target every command has).
    let peak = peak_rss(&m);
    assert!(peak <= 96 << 20, "the mount peaked at {} MiB", peak >> 20);
}

#[test]
fn a_damaged_pack_fails_the_affected_file_only() {
    if !fuse_available() {
        return;
    }
    let s = Scratch::new();
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    let (bad, good) = (data(21, 3000), data(22, 3000));
    fs::write(src.join("bad"), &bad).unwrap();
    fs::write(src.join("good"), &good).unwrap();
    s.cairn(&["backup", src.to_str().unwrap()]);
    // Find the blob of `bad` through the library and flip a byte of it in its pack.
    let opts = cairn::repo::OpenOptions { cache_dir: Some(s.path("cache")), ..Default::default() };
    let repo = cairn::repo::Repository::open_with(&s.path("repo"), b"mount-test", &opts).unwrap();
    let id = repo.keys().blob_id(cairn::format::BlobKind::Data, &bad);
    let loc = repo.index().get(&id).expect("the blob of `bad` is indexed");
    let pack = repo.pack_path(&loc.pack);
    drop(repo);
    let mut bytes = fs::read(&pack).unwrap();
    bytes[loc.offset as usize + 40] ^= 0x40;
    fs::write(&pack, bytes).unwrap();

    let mut m = s.mount(&[]);
    let inside = latest(&m, &src);
    let e = fs::read(inside.join("bad")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(5), "expected EIO: {e}"); // EIO
    assert_eq!(fs::read(inside.join("good")).unwrap(), good);
    assert_eq!(fs::read_dir(&inside).unwrap().count(), 2);
    let (status, err) = m.stop();
    assert!(status.success(), "{err}");
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&pack_name[..16]), "the log names the pack {pack_name}: {err}");
}

#[test]
fn an_unprivileged_user_mounts_and_reads() {
    if !fuse_available() {
        return;
    }
    let euid = unsafe_euid();
    if euid != 0 {
        // Already unprivileged: the other tests are that run.
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        skip("unprivileged mount test: setpriv (util-linux) is missing");
        return;
    }
    let can_open = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "test",
            "-r",
            "/dev/fuse",
            "-a",
            "-w",
            "/dev/fuse",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !can_open {
        // fuser opens /dev/fuse itself before it falls back to fusermount3. Distributions
        // make it 0666 (udev); some containers leave it 0600. scripts/test.sh sets 0666.
        skip("unprivileged mount test: /dev/fuse is not readable and writable by other users");
        return;
    }
    let s = Scratch::new();
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    let payload = data(31, 300_000);
    fs::write(src.join("file"), &payload).unwrap();
    s.cairn(&["backup", src.to_str().unwrap()]);
    // Hand the scratch directory to nobody (65534), then mount and read as nobody.
    run(Command::new("chown").arg("-R").arg("65534:65534").arg(s.dir.path()));
    run(Command::new("chmod").arg("0755").arg(s.dir.path()));
    let mnt = s.path("mnt");
    fs::create_dir_all(&mnt).unwrap();
    run(Command::new("chown").arg("65534:65534").arg(&mnt));
    let mut child = as_nobody(BIN)
        .args(["-r", s.path("repo").to_str().unwrap(), "mount", mnt.to_str().unwrap()])
        .env_remove("CAIRN_PASSWORD_FILE")
        .env("CAIRN_PASSWORD", "mount-test")
        .env("CAIRN_CACHE_DIR", s.path("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let m = Mounted { child: None, mnt: mnt.clone() };
    let start = Instant::now();
    while !mounted(&mnt) {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("the unprivileged mount exited with {st}: {err}");
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the unprivileged mount did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let file = mnt.join("latest").join(src.strip_prefix("/").unwrap()).join("file");
    let out = as_nobody("cat").arg(&file).output().unwrap();
    assert!(out.status.success(), "cat as nobody: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == payload);
    // Without --allow-other, nobody else (root included) sees inside the mount.
    assert!(fs::read(&file).is_err(), "root read an unprivileged mount without --allow-other");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "the unprivileged mount exited with {st}");
    assert!(!mounted(&mnt), "still mounted after SIGTERM");
    drop(m);
}

fn unsafe_euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The mounts listed at `p` in /proc/mounts (a second mount on one point stacks).
fn mounts_at(p: &Path) -> usize {
    let want = p.to_str().unwrap();
    fs::read_to_string("/proc/mounts").unwrap().lines().filter(|l| l.split(' ').nth(1) == Some(want)).count()
}

/// Wait (at most 20 s) until process `pid` is gone.
fn wait_gone(pid: u32) {
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}/exe")).exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "process {pid} did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid in "... (pid N) ..." of `mount --daemon`'s message.
fn daemon_pid(said: &str) -> u32 {
    said.split("(pid ").nth(1).and_then(|r| r.split(')').next()).and_then(|p| p.parse().ok()).expect(said)
}

/// See: issue 12, defects 6, 8 and 12. `mount --daemon` returns once its own mount
/// serves (a mount already there proves nothing), refuses a mount point that is taken,
/// passes the password whole (newlines too), exits with the mount's own exit code, and
/// logs what it meets to a file the user can read.
#[test]
fn daemon_confirms_its_own_mount_passes_the_password_whole_and_logs() {
    if !fuse_available() {
        return;
    }
    let s = Scratch::new();
    let pw = "first line\nsecond line";
    let repo = s.path("repo2");
    let cairn = |args: &[&str], pw: &str| {
        let mut c = Command::new(BIN);
        c.args(["-r", repo.to_str().unwrap()])
            .args(args)
            .env_remove("CAIRN_PASSWORD_FILE")
            .env("CAIRN_PASSWORD", pw)
            .env("CAIRN_CACHE_DIR", s.path("cache"));
        c.output().unwrap()
    };
    assert!(cairn(&["init", "--insecure-test-kdf"], pw).status.success());
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("good"), b"in the background\n").unwrap();
    fs::write(src.join("bad"), data(5, 5000)).unwrap();
    assert!(cairn(&["backup", src.to_str().unwrap()], pw).status.success());
    // Damage the pack holding `bad` (its only data pack: flip a byte in its first blob).
    let pack = find_files(&repo.join("data")).into_iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    let mut b = fs::read(&pack).unwrap();
    b[60] ^= 0x40;
    fs::write(&pack, b).unwrap();

    let mnt = s.path("mnt");
    fs::create_dir_all(&mnt).unwrap();
    // A wrong password: the mount's own error and exit code (12) come back; nothing is mounted.
    let out = cairn(&["mount", "--daemon", mnt.to_str().unwrap()], "first line");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(12), "{said}");
    assert!(said.contains("before serving") && said.contains("wrong password"), "{said}");
    assert!(!mounted(&mnt));
    // The password whole, with its newline; messages to a log of our choosing.
    let log = s.path("logs/mount.log");
    let out = cairn(&["mount", "--daemon", "--log", log.to_str().unwrap(), mnt.to_str().unwrap()], pw);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    let _guard = Mounted { child: None, mnt: mnt.clone() };
    assert!(said.contains(log.to_str().unwrap()), "says where it logs: {said}");
    let pid = daemon_pid(&said);
    let dir = mnt.join("latest").join(src.strip_prefix("/").unwrap());
    assert_eq!(fs::read(dir.join("good")).unwrap(), b"in the background\n");
    // A second mount on the same point is refused, not stacked.
    let out = cairn(&["mount", "--daemon", mnt.to_str().unwrap()], pw);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already a mount point"));
    assert_eq!(mounts_at(&mnt), 1);
    // Damaged data: EIO for the read, and a log line naming the blob's pack.
    let e = fs::read(dir.join("bad")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let pack_id = pack.file_name().unwrap().to_str().unwrap();
    let logged = fs::read_to_string(&log).unwrap();
    assert!(logged.contains(pack_id) && logged.contains("authentication failed"), "{logged}");
    run(Command::new("fusermount3").arg("-u").arg(&mnt));
    assert!(!mounted(&mnt));
    wait_gone(pid);
}

/// Every file under `dir`.
fn find_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(find_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// See: issue 12 ("Also"). A regular file, or a directory that is not empty, is no
/// mount point (unless --nonempty); and when /dev/fuse is not usable the error says so
/// instead of blaming the mount point.
#[test]
fn mount_points_that_cannot_take_a_mount_are_refused_with_the_reason() {
    if !fuse_available() {
        return;
    }
    let s = Scratch::new();
    let file = s.path("file");
    fs::write(&file, b"x").unwrap();
    let out = s.command(&["mount", file.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = s.path("full");
    fs::create_dir_all(full.join("inside")).unwrap();
    let out = s.command(&["mount", full.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    let out = s.command(&["mount", "--daemon", "--nonempty", full.to_str().unwrap()]).output().unwrap();
    let guard = Mounted { child: None, mnt: full.clone() };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pid = daemon_pid(&String::from_utf8_lossy(&out.stderr));
    run(Command::new("fusermount3").arg("-u").arg(&full));
    drop(guard);
    wait_gone(pid);

    // /dev/fuse unusable (a private mount namespace where a 0600 file covers it), as
    // an ordinary user: the error names the device.
    if unsafe_euid() != 0 {
        return; // only root can cover /dev/fuse in a mount namespace
    }
    if !Command::new("unshare").args(["-m", "true"]).status().is_ok_and(|s| s.success()) {
        skip("unusable /dev/fuse test: no mount namespaces here (unshare -m)");
        return;
    }
    let open = tempfile::Builder::new().prefix("cairn-devfuse").tempdir_in("/tmp").unwrap();
    run(Command::new("chmod").arg("0755").arg(open.path()));
    let (cover, mnt) = (open.path().join("cover"), open.path().join("mnt"));
    fs::write(&cover, b"").unwrap();
    fs::create_dir_all(&mnt).unwrap();
    let script = format!(
        "mount --bind {} /dev/fuse && exec setpriv --reuid=65534 --regid=65534 --clear-groups -- {BIN} -r /nonexistent mount {}",
        cover.display(),
        mnt.display()
    );
    let out = Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("/dev/fuse") && said.contains("FUSE is not available"), "{said}");
}

/// `command` run as nobody (65534), with no supplementary groups.
fn as_nobody(prog: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(prog);
    c
}

/// With `--allow-other`, other users see into the mount and the kernel enforces the
/// snapshot's modes: nobody reads a 0644 file and is denied a 0600 one. Without it,
/// nobody is denied both.
#[test]
fn allow_other_lets_other_users_in_under_the_snapshots_modes() {
    if !fuse_available() {
        return;
    }
    if unsafe_euid() != 0 {
        skip("--allow-other test: needs root, to read the mount as another user");
        return;
    }
    let s = Scratch::new();
    // The snapshot holds the modes of the directories above the source too: nobody
    // must be able to pass through them.
    run(Command::new("chmod").arg("0755").arg(s.dir.path()));
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("public"), b"for everyone\n").unwrap();
    fs::write(src.join("secret"), b"root only\n").unwrap();
    run(Command::new("chmod").arg("0600").arg(src.join("secret")));
    s.cairn(&["backup", src.to_str().unwrap()]);
    let cat = |p: &Path| as_nobody("cat").arg(p).output().unwrap();

    let mut m = s.mount(&["--allow-other"]);
    let inside = latest(&m, &src);
    let public = cat(&inside.join("public"));
    assert!(public.status.success(), "nobody reads a 0644 file: {}", String::from_utf8_lossy(&public.stderr));
    assert_eq!(public.stdout, b"for everyone\n");
    let secret = cat(&inside.join("secret"));
    assert!(!secret.status.success(), "nobody read a 0600 file of root's");
    assert!(String::from_utf8_lossy(&secret.stderr).contains("Permission denied"), "{secret:?}");
    assert_eq!(fs::read(inside.join("secret")).unwrap(), b"root only\n", "root reads it");
    let (status, err) = m.stop();
    assert!(status.success(), "{err}");

    let m = s.mount(&[]);
    let public = cat(&latest(&m, &src).join("public"));
    assert!(!public.status.success(), "without --allow-other nobody saw into root's mount");
}

/// SIGTERM while a file is open in the mount: it cannot be unmounted, so it is detached
/// lazily (gone from the namespace at once); the open file then fails instead of hanging.
#[test]
fn sigterm_with_a_file_open_detaches_the_mount_lazily() {
    if !fuse_available() {
        return;
    }
    let s = Scratch::new();
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    let big = data(41, 8 << 20);
    fs::write(src.join("big"), &big).unwrap();
    s.cairn(&["backup", src.to_str().unwrap()]);
    let mut m = s.mount(&[]);
    let f = fs::File::open(latest(&m, &src).join("big")).unwrap();
    let mut head = vec![0u8; 4096];
    f.read_exact_at(&mut head, 0).unwrap();
    assert!(head == big[..4096]);
    let (status, err) = m.stop();
    assert!(status.success(), "mount exited with {status}: {err}");
    assert!(err.contains("busy") && err.contains("detaching"), "{err}");
    assert!(!mounted(&m.mnt), "still in the namespace after SIGTERM");
    // Nobody serves it any more: the open file fails (ENOTCONN), it does not hang.
    let mut buf = vec![0u8; 4096];
    let e = f.read_exact_at(&mut buf, 4 << 20).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    drop(f);
    // The mount point is usable again.
    let m = s.mount(&[]);
    assert_eq!(fs::read(latest(&m, &src).join("big")).unwrap().len(), big.len());
}

/// A mount whose process is killed outright leaves a dead mount (ENOTCONN) behind, which
/// `fusermount3 -u` removes, as README.md says; the point then mounts again.
#[test]
fn a_killed_mount_is_removed_by_fusermount3() {
    if !fuse_available() {
        return;
    }
    let s = Scratch::new();
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"still here\n").unwrap();
    s.cairn(&["backup", src.to_str().unwrap()]);
    let mut m = s.mount(&[]);
    let mut child = m.child.take().unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(mounted(&m.mnt), "a killed FUSE daemon leaves its mount");
    let e = fs::read_dir(&m.mnt).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    run(Command::new("fusermount3").arg("-u").arg(&m.mnt));
    assert!(!mounted(&m.mnt), "fusermount3 -u left the dead mount");
    let m = s.mount(&[]);
    assert_eq!(fs::read(latest(&m, &src).join("f")).unwrap(), b"still here\n");
}
