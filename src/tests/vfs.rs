//! The mount's filesystem view, in process (no kernel): layout, attributes, listings in
//! small batches, reads at any offset through a tiny chunk cache, hard links, damage.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};
use std::sync::{Arc, Mutex};

use super::*;
use crate::error::Error;
use crate::format::BlobKind;
use crate::testutil::{bytes, flip_byte, temp_repo, write};
use crate::vfs::{Attr, FileKind, Vfs, ViewError, ROOT};

/// Look up every component of `path` under `from`.
fn walk(v: &Vfs, from: u64, path: &Path) -> Attr {
    let mut a = v.getattr(from).unwrap();
    for c in path.components() {
        if let Component::Normal(n) = c {
            a = v.lookup(a.ino, n.as_encoded_bytes()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
    a
}

/// Every name of a directory, taking at most `batch` per readdir call.
fn list(v: &Vfs, ino: u64, batch: usize) -> Vec<Vec<u8>> {
    listing(v, ino, batch, false).into_iter().map(|(n, _)| n).collect()
}

/// Every entry of a directory, taking at most `batch` per call: by READDIRPLUS (with
/// attributes) or READDIR.
fn listing(v: &Vfs, ino: u64, batch: usize, plus: bool) -> Vec<(Vec<u8>, Option<Attr>)> {
    let (mut out, mut off) = (Vec::new(), 0);
    loop {
        let (mut n, mut last) = (0, off);
        let mut take = |name: &[u8], a: Option<&Attr>, next: u64| {
            if n == batch {
                return false;
            }
            n += 1;
            out.push((name.to_vec(), a.copied()));
            last = next;
            true
        };
        if plus {
            v.readdirplus(ino, off, &mut |name, a, next| take(name, Some(a), next)).unwrap();
        } else {
            v.readdir(ino, off, &mut |name, _, _, next| take(name, None, next)).unwrap();
        }
        if n == 0 {
            break;
        }
        off = last;
    }
    out
}

/// A file read in `step`-byte pieces, or at the given offsets.
fn read_all(v: &Vfs, ino: u64, size: u64, step: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let d = v.read(ino, out.len() as u64, step).unwrap();
        assert!(!d.is_empty(), "short read at {}", out.len());
        out.extend_from_slice(&d);
    }
    assert!(v.read(ino, size, step).unwrap().is_empty(), "read past the end");
    out
}

/// `root` and everything under it.
fn walk_paths(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if std::fs::symlink_metadata(&out[i]).unwrap().is_dir() {
            let mut kids: Vec<_> = std::fs::read_dir(&out[i]).unwrap().map(|e| e.unwrap().path()).collect();
            out.append(&mut kids);
        }
        i += 1;
    }
    out
}

#[test]
fn a_snapshot_reads_back_through_the_view() {
    let t = temp_repo();
    let src = t.scratch("src");
    let big = bytes(1, 3 << 20, false); // ~190 chunks: a chunk-list tree, not inline
    write(&src.join("big"), &big);
    write(&src.join("small"), b"hello");
    write(&src.join("empty"), b"");
    for i in 0..300 {
        write(&src.join("many").join(format!("f{i:03}")), &bytes(i, 50 + i as usize, true));
    }
    std::os::unix::fs::symlink("small", src.join("link")).unwrap();
    std::fs::hard_link(src.join("small"), src.join("small-again")).unwrap();
    let has_xattr = crate::testutil::set_test_xattr(&src.join("small"), b"user.cairn", b"v1");
    do_backup(&t.repo, &[&src]);

    let cache = 64 << 10; // far smaller than the data: chunks are evicted and reloaded
                          // A node cache of 4 KiB: a dozen entries; the rest are found again from their
                          // directories.
    let v = Vfs::new(Arc::new(t.reopen()), cache, 4096, (0, 0)).unwrap();
    let root: Vec<Vec<u8>> = list(&v, ROOT, 3);
    let want: Vec<&[u8]> = vec![b".", b"..", b"hosts", b"ids", b"latest", b"snapshots", b"tags", b"versions"];
    assert_eq!(root, want);
    let snaps = walk(&v, ROOT, Path::new("snapshots"));
    let names = list(&v, snaps.ino, 100);
    assert_eq!(names.len(), 3, "., .. and one snapshot: {names:?}");
    let latest = walk(&v, ROOT, Path::new("latest"));
    assert_eq!(latest.kind, FileKind::Symlink);
    assert_eq!(v.readlink(latest.ino).unwrap(), [b"snapshots/".as_slice(), &names[2]].concat());
    let host = list(&v, walk(&v, ROOT, Path::new("hosts")).ino, 100);
    assert_eq!(host.len(), 3);

    let snap_dir = Path::new("snapshots").join(std::str::from_utf8(&names[2]).unwrap());
    let base = walk(&v, ROOT, &snap_dir.join(src.strip_prefix("/").unwrap()));
    assert_eq!(base.kind, FileKind::Dir);
    for name in ["big", "small", "empty"] {
        let a = walk(&v, base.ino, Path::new(name));
        let m = std::fs::metadata(src.join(name)).unwrap();
        assert_eq!((a.kind, a.size, a.perm as u32), (FileKind::File, m.len(), m.mode() & 0o7777), "{name}");
        assert_eq!(a.mtime, m.modified().unwrap(), "{name}");
        let data = std::fs::read(src.join(name)).unwrap();
        for step in [4096, 100_000, 1 << 20] {
            assert!(read_all(&v, a.ino, a.size, step) == data, "{name} read in {step}-byte steps");
        }
    }
    // Random offsets (each a seek: the cursor restarts or skips ahead).
    let a = walk(&v, base.ino, Path::new("big"));
    let mut x = 7u64;
    for _ in 0..40 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let off = (x >> 33) % big.len() as u64;
        let len = ((x >> 13) % 200_000) as usize + 1;
        let got = v.read(a.ino, off, len).unwrap();
        let end = (off as usize + len).min(big.len());
        assert!(*got == big[off as usize..end], "read {len} at {off}");
    }
    assert!(v.chunk_cache().bytes() <= cache);

    // A directory listed a few names per call, as the kernel does with small buffers.
    let many = walk(&v, base.ino, Path::new("many"));
    let listed = list(&v, many.ino, 7);
    let mut want: Vec<Vec<u8>> = (0..300).map(|i| format!("f{i:03}").into_bytes()).collect();
    want.insert(0, b"..".to_vec());
    want.insert(0, b".".to_vec());
    assert_eq!(listed, want);

    // READDIRPLUS in small batches: every inode it hands out is the one lookup gives and
    // resolves to the same entry after the (4 KiB) node cache let it go.
    let plus = listing(&v, many.ino, 7, true);
    assert_eq!(plus.len(), 302);
    for (name, a) in plus.iter().skip(2) {
        let a = a.expect("READDIRPLUS gives attributes");
        assert_eq!(v.getattr(a.ino).unwrap(), a, "{}", String::from_utf8_lossy(name));
        assert_eq!(v.lookup(many.ino, name).unwrap().ino, a.ino);
    }

    // Hard links are one inode; symlinks and xattrs come through.
    let s1 = walk(&v, base.ino, Path::new("small"));
    let s2 = walk(&v, base.ino, Path::new("small-again"));
    assert_eq!((s1.ino, s1.nlink), (s2.ino, 2));
    assert_eq!(v.readlink(walk(&v, base.ino, Path::new("link")).ino).unwrap(), b"small");
    // The view knows which classes of xattrs the snapshot holds, as the source (and the
    // directories above it, which the snapshot's root path holds) has them.
    let mut classes = crate::format::snapshot::XattrClasses::NONE;
    for p in walk_paths(&src).into_iter().chain(src.ancestors().skip(1).map(Path::to_path_buf)) {
        for (n, _) in crate::sys::xattrs(&p).unwrap() {
            classes = classes.union(crate::format::snapshot::XattrClasses::of(&n));
        }
    }
    assert_eq!(v.has_xattrs(), !classes.is_empty());
    // ...and which names: a name of a class it holds is still known to be absent.
    for name in [&b"user.other"[..], b"security.selinux", b"system.posix_acl_access", b"trusted.x"] {
        let held = walk_paths(&src)
            .into_iter()
            .chain(src.ancestors().skip(1).map(Path::to_path_buf))
            .any(|p| crate::sys::xattrs(&p).unwrap().iter().any(|(n, _)| n == name));
        assert_eq!(v.may_have_xattr(name), held, "{}", String::from_utf8_lossy(name));
    }
    assert_eq!(v.may_have_xattr(b"user.cairn"), has_xattr);
    if has_xattr {
        assert!(v.xattrs(s1.ino).unwrap().contains(&(b"user.cairn".to_vec(), b"v1".to_vec())));
    }
    assert!(matches!(v.lookup(base.ino, b"missing"), Err(ViewError::NoEntry)));
    // The view's own answers are typed: the FUSE layer gives each its errno.
    assert!(matches!(v.readdir(s1.ino, 0, &mut |_, _, _, _| true), Err(ViewError::NotDir)));
    assert!(matches!(v.lookup(s1.ino, b"x"), Err(ViewError::NotDir)));
    assert!(matches!(v.read(base.ino, 0, 10), Err(ViewError::NotFile)));
    assert!(matches!(v.seek_data(base.ino, 0, false), Err(ViewError::NotFile)));
    assert!(matches!(v.readlink(s1.ino), Err(ViewError::NotLink)));
    assert!(matches!(v.getattr(u64::MAX / 2), Err(ViewError::NoEntry)));

    // Inode numbers are derived: stable across lookups however small the node cache,
    // and every one the view handed out resolves again (here after the cache evicted it).
    let e = v.lookup(base.ino, b"empty").unwrap();
    assert!(v.node_cache_bytes() <= 4096);
    for i in 0..300 {
        v.lookup(many.ino, format!("f{i:03}").as_bytes()).unwrap();
    }
    assert!(v.node_cache_bytes() <= 4096);
    assert_eq!(v.lookup(base.ino, b"empty").unwrap().ino, e.ino);
    assert_eq!(v.getattr(e.ino).unwrap(), e);
    let f7 = v.lookup(many.ino, b"f007").unwrap();
    for i in 100..300 {
        v.lookup(many.ino, format!("f{i:03}").as_bytes()).unwrap();
    }
    assert_eq!(v.getattr(f7.ino).unwrap(), f7);
    assert!(v.getattr(f7.ino + 1_000_000).is_err());
}

#[test]
fn a_damaged_chunk_fails_that_file_only() {
    let t = temp_repo();
    let src = t.scratch("src");
    let (a, b) = (bytes(11, 3000, false), bytes(12, 3000, false));
    write(&src.join("a"), &a);
    write(&src.join("b"), &b);
    do_backup(&t.repo, &[&src]);
    let loc = t.repo.index().get(&t.repo.keys().blob_id(BlobKind::Data, &a)).unwrap();
    flip_byte(&t.repo.pack_path(&loc.pack), loc.offset as u64 + 40);

    let v = Vfs::new(Arc::new(t.reopen()), 1 << 20, 1 << 20, (0, 0)).unwrap();
    let snap = list(&v, walk(&v, ROOT, Path::new("snapshots")).ino, 10).pop().unwrap();
    let dir = Path::new("snapshots").join(std::str::from_utf8(&snap).unwrap()).join(src.strip_prefix("/").unwrap());
    let base = walk(&v, ROOT, &dir);
    let fa = walk(&v, base.ino, Path::new("a")).ino;
    let err = v.read(fa, 0, 4096).unwrap_err();
    assert!(matches!(err, ViewError::Repo(Error::Tampered { .. } | Error::Corrupt { .. })), "{err}");
    assert_eq!(read_all(&v, walk(&v, base.ino, Path::new("b")).ino, 3000, 4096), b);
}

/// Wait (at most 10 s) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn small_files_ahead_of_a_reader_reach_the_sink_whole_under_their_inodes() {
    let t = temp_repo();
    let src = t.scratch("src");
    let files: Vec<Vec<u8>> = (0..40).map(|i| bytes(200 + i, 100 + 997 * i as usize, i % 2 == 0)).collect();
    for (i, f) in files.iter().enumerate() {
        write(&src.join("d").join(format!("f{i:02}")), f);
    }
    write(&src.join("e/g"), b"in the next directory");
    std::fs::hard_link(src.join("d/f39"), src.join("e/link")).unwrap();
    // After the link in listing order: once it arrives, the link was dealt with.
    write(&src.join("e/m"), b"after the link");
    do_backup(&t.repo, &[&src]);

    let v = Vfs::new(Arc::new(t.reopen()), 8 << 20, 1 << 20, (0, 0)).unwrap();
    let got = Arc::new(Mutex::new(Vec::<(u64, Vec<u8>)>::new()));
    let sink = got.clone();
    assert!(v.sink_handle().set(Box::new(move |ino, d| sink.lock().unwrap().push((ino, d.to_vec())))).is_ok());
    let snap = list(&v, walk(&v, ROOT, Path::new("snapshots")).ino, 10).pop().unwrap();
    let top = Path::new("snapshots").join(std::str::from_utf8(&snap).unwrap()).join(src.strip_prefix("/").unwrap());
    let d = walk(&v, ROOT, &top.join("d"));
    // Listing alone loads nothing: a process that has read no file is not copying. (Had
    // it loaded d's files, f00 would be among them, ahead of f01: see below.)
    v.listed_by(d.ino, 42);

    // A process starting one file is not copying: nothing after it is loaded.
    let f00 = walk(&v, d.ino, Path::new("f00"));
    v.starts_file(f00.ino, 42);
    assert!(*v.read(f00.ino, 0, 1 << 20).unwrap() == files[0][..]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(got.lock().unwrap().is_empty(), "a lone reader's neighbours were loaded");
    // Starting a second (f00 again, as a copier going back would) loads the files after
    // it (not f00: its reader has it): each arrives whole, under the inode lookup gives
    // it, in listing order.
    v.starts_file(f00.ino, 42);
    eventually("f01 to f32", || got.lock().unwrap().len() >= 32);
    for (ino, data) in got.lock().unwrap().iter() {
        assert_ne!(*ino, f00.ino, "f00 was loaded ahead: the listing loaded d's files");
        let i = (1..40).find(|&i| walk(&v, d.ino, Path::new(&format!("f{i:02}"))).ino == *ino).expect("an inode of d");
        assert!(*data == files[i], "f{i:02}");
    }
    // A directory opened by that process (a reader now) gets its files loaded at once;
    // a hard link is left out (its inode is the first link's, which the view decides).
    // Files of one request arrive in listing order: once m (after the link) is there,
    // the link was passed over.
    got.lock().unwrap().clear();
    let e = walk(&v, ROOT, &top.join("e"));
    v.listed_by(e.ino, 42);
    let m = walk(&v, e.ino, Path::new("m"));
    eventually("e/m", || got.lock().unwrap().iter().any(|(ino, _)| *ino == m.ino));
    let g = walk(&v, e.ino, Path::new("g"));
    let want = vec![(g.ino, b"in the next directory".to_vec()), (m.ino, b"after the link".to_vec())];
    assert_eq!(*got.lock().unwrap(), want);
}

#[test]
fn dropping_the_view_stops_its_threads_and_releases_the_repository() {
    let t = temp_repo();
    let src = t.scratch("src");
    let big = bytes(300, 6 << 20, false);
    write(&src.join("big"), &big);
    for i in 0..20 {
        write(&src.join("d").join(format!("f{i:02}")), &bytes(400 + i, 5000, false));
    }
    do_backup(&t.repo, &[&src]);

    let repo = Arc::new(t.reopen());
    let v = Vfs::new(repo.clone(), 1 << 20, 1 << 20, (0, 0)).unwrap();
    let snap = list(&v, walk(&v, ROOT, Path::new("snapshots")).ino, 10).pop().unwrap();
    let top = Path::new("snapshots").join(std::str::from_utf8(&snap).unwrap()).join(src.strip_prefix("/").unwrap());
    // Leave prefetch work queued and in flight: a sequential reader of `big` and a
    // reader going through `d`.
    let b = walk(&v, ROOT, &top.join("big")).ino;
    assert!(*v.read(b, 0, 1 << 16).unwrap() == big[..1 << 16]);
    assert!(*v.read(b, 1 << 16, 1 << 16).unwrap() == big[1 << 16..2 << 16]);
    let d = walk(&v, ROOT, &top.join("d"));
    v.note_reader(7);
    v.listed_by(d.ino, 7);
    assert!(Arc::strong_count(&repo) > 2, "the prefetch threads hold the repository");
    drop(v);
    // The threads are joined by the drop: nothing else holds the repository (whose
    // private index cache, if it had one, is removed when this last handle goes).
    assert_eq!(Arc::strong_count(&repo), 1);
}

#[test]
fn hosts_and_tags_that_are_not_file_names_are_listed_escaped_one_to_one() {
    // See: issue 12, defect 10: `a/b` and `a%2Fb`, `..` and `%2E%2E`, "" and `%` were
    // each shown under one name.
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("f"), b"x");
    let long = "x".repeat(300);
    let runs = [
        ("a/b", vec!["release/1.0", "ok", ".."]),
        ("", vec!["100%"]),
        ("a%2Fb", vec!["%2E%2E", "%"]),
        ("%", vec![long.as_str(), &long[..299]]),
    ];
    for (host, tags) in runs {
        let opts = crate::ops::backup::BackupOptions {
            paths: vec![src.clone()],
            tags: tags.into_iter().map(String::from).collect(),
            host: Some(host.into()),
            ..Default::default()
        };
        crate::ops::backup::backup(&t.repo, &opts, &Collect::default(), &std::sync::atomic::AtomicBool::new(false))
            .unwrap();
    }
    let v = Vfs::new(Arc::new(t.reopen()), 1 << 20, 1 << 20, (0, 0)).unwrap();
    let names = |dir: &str| -> Vec<String> {
        let ino = walk(&v, ROOT, Path::new(dir)).ino;
        list(&v, ino, 100)
            .into_iter()
            .map(|n| String::from_utf8(n).unwrap())
            .filter(|n| n != "." && n != "..")
            .collect()
    };
    // Every name is one the kernel accepts, and distinct names stay distinct.
    assert_eq!(names("hosts"), ["%", "%25", "a%252Fb", "a%2Fb"]);
    let tags = names("tags");
    assert_eq!(tags.len(), 8, "{tags:?}");
    assert!(tags.iter().all(|t| t.len() <= 255 && !t.contains('/')), "{tags:?}");
    for t in ["%25", "%252E%252E", "%2E%2E", "100%25", "ok", "release%2F1.0"] {
        assert!(tags.iter().any(|x| x == t), "{t} in {tags:?}");
    }
    // And each leads to its own snapshot.
    for dir in
        ["hosts/a%2Fb", "hosts/a%252Fb", "tags/release%2F1.0", "tags/%2E%2E", "tags/%252E%252E", "hosts/%", "hosts/%25"]
    {
        assert_eq!(names(dir).len(), 1, "{dir}");
    }
    for long_tag in tags.iter().filter(|t| t.starts_with("xxx")) {
        assert_eq!(names(&format!("tags/{long_tag}")).len(), 1, "{long_tag}");
    }
}

#[test]
fn holes_are_reported_sought_and_read_without_loading_a_chunk() {
    let t = temp_repo();
    let src = t.scratch("src");
    std::fs::create_dir_all(&src).unwrap();
    // A hole, 8 KiB of data, a hole to an odd length: ~100 chunks of the test chunker
    // (a chunk-list tree); the same shape inline; all zeros; all data.
    let data = bytes(7, 8192, false);
    let at = (1 << 20) + 100;
    let sparse = |path: &Path, size: u64| {
        let f = std::fs::File::create(path).unwrap();
        f.set_len(size).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &data, at).unwrap();
    };
    sparse(&src.join("list"), (6 << 20) + 1234);
    sparse(&src.join("inline"), (2 << 20) + 77);
    std::fs::File::create(src.join("zeros")).unwrap().set_len(2 << 20).unwrap();
    write(&src.join("dense"), &bytes(8, 300_000, false));
    do_backup(&t.repo, &[&src]);

    let v = Vfs::new(Arc::new(t.reopen()), 64 << 20, 1 << 20, (0, 0)).unwrap();
    let snap = list(&v, walk(&v, ROOT, Path::new("snapshots")).ino, 10).pop().unwrap();
    let dir = Path::new("snapshots").join(std::str::from_utf8(&snap).unwrap()).join(src.strip_prefix("/").unwrap());
    let base = walk(&v, ROOT, &dir);
    let max = 65536; // the test chunker's largest chunk: data sits in at most 2 chunks
    for name in ["list", "inline"] {
        let a = walk(&v, base.ino, Path::new(name));
        assert!(a.allocated >= data.len() as u64 && a.allocated <= 2 * max, "{name}: {} allocated", a.allocated);
        let first = v.seek_data(a.ino, 0, false).unwrap().unwrap();
        assert!(first <= at && at - first < max, "{name}: data from {first}");
        assert_eq!(v.seek_data(a.ino, first, false).unwrap(), Some(first));
        let hole = v.seek_data(a.ino, first, true).unwrap().unwrap();
        assert!(hole >= at + data.len() as u64 && hole - first <= 2 * max, "{name}: hole from {hole}");
        assert_eq!(v.seek_data(a.ino, hole, false).unwrap(), None, "{name}: no data after the hole");
        assert_eq!(v.seek_data(a.ino, 0, true).unwrap(), Some(0), "{name}: starts with a hole");
        assert_eq!(v.seek_data(a.ino, a.size - 1, true).unwrap(), Some(a.size - 1));
        assert_eq!(v.seek_data(a.ino, a.size, true).unwrap(), None, "{name}: past the end");
        // Reads of holes are zeros, and load no chunk: only the data's are cached.
        assert!(read_all(&v, a.ino, a.size, 1 << 17) == std::fs::read(src.join(name)).unwrap(), "{name}");
        assert!(v.chunk_cache().bytes() as u64 <= 4 * max, "{name}: {} B cached", v.chunk_cache().bytes());
    }
    let z = walk(&v, base.ino, Path::new("zeros"));
    assert_eq!((z.size, z.allocated), (2 << 20, 0));
    assert_eq!(v.seek_data(z.ino, 0, false).unwrap(), None);
    assert_eq!(v.seek_data(z.ino, 5, true).unwrap(), Some(5));
    let d = walk(&v, base.ino, Path::new("dense"));
    assert_eq!(d.allocated, d.size);
    assert_eq!(v.seek_data(d.ino, 10, false).unwrap(), Some(10));
    assert_eq!(v.seek_data(d.ino, 10, true).unwrap(), Some(d.size));
    // Listings report the same.
    let listed = listing(&v, base.ino, 100, true);
    let z_listed = listed.iter().find(|(n, _)| n == b"zeros").and_then(|(_, a)| *a).unwrap();
    assert_eq!(z_listed.allocated, 0);
}

/// A backup of `src` as host `host` at second `sec`.
fn backup_at(repo: &Repository, src: &Path, host: &str, sec: i64) {
    let opts = crate::ops::backup::BackupOptions {
        paths: vec![src.to_path_buf()],
        host: Some(host.into()),
        time_ns: Some(sec * 1_000_000_000),
        ..Default::default()
    };
    let c = Collect::default();
    crate::ops::backup::backup(repo, &opts, &c, &std::sync::atomic::AtomicBool::new(false)).unwrap();
    assert!(c.all().is_empty(), "{:?}", c.all());
}

#[test]
fn versions_show_each_distinct_content_of_a_file_across_a_hosts_snapshots() {
    let t = temp_repo();
    let src = t.scratch("src");
    std::fs::create_dir_all(src.join("keep")).unwrap();
    write(&src.join("keep/same"), b"never changes");
    // Five snapshots, a second apart (2026-01-01T00:00:00 + i).
    let start = 1_767_225_600;
    let name = |i: i64| chrono::DateTime::from_timestamp(start + i, 0).unwrap().format("%Y-%m-%dT%H:%M:%S").to_string();
    let big = bytes(3, 300_000, false); // a chunk list of its own
    for i in 0..5i64 {
        // `a` changes in snapshots 0, 2 and 4 (lengths differ, so backup sees it).
        if i % 2 == 0 {
            write(&src.join("a"), &bytes(i as u64, 100 + i as usize, false));
        }
        // `gone` is deleted in snapshot 2 and made again, different, in 3.
        match i {
            0 => write(&src.join("gone"), b"first"),
            2 => std::fs::remove_file(src.join("gone")).unwrap(),
            3 => write(&src.join("gone"), b"second!"),
            _ => {}
        }
        // `back` is deleted in 2 and made again in 3 with its old bytes: one version.
        match i {
            0 | 3 => write(&src.join("back"), &big),
            2 => std::fs::remove_file(src.join("back")).unwrap(),
            _ => {}
        }
        // `flip` is a file in 0-2 and a directory in 3-4.
        match i {
            0 => write(&src.join("flip"), b"a file"),
            3 => {
                std::fs::remove_file(src.join("flip")).unwrap();
                write(&src.join("flip/inside"), b"in the directory");
            }
            _ => {}
        }
        backup_at(&t.repo, &src, "h", start + i);
    }
    // Another host's snapshot does not mix in.
    let other = t.scratch("other");
    write(&other.join("a"), b"other host");
    backup_at(&t.repo, &other, "h2", start + 10);

    // A node cache of 4 KiB: most nodes are found again from their directory's trees.
    let v = Vfs::new(Arc::new(t.reopen()), 1 << 20, 4096, (0, 0)).unwrap();
    let dots = |mut l: Vec<Vec<u8>>| {
        assert_eq!(&l[..2], [b".".to_vec(), b"..".to_vec()]);
        l.drain(..2);
        l.into_iter().map(|n| String::from_utf8(n).unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(dots(list(&v, walk(&v, ROOT, Path::new("versions")).ino, 1)), ["h", "h2"]);
    let rel = src.strip_prefix("/").unwrap();
    let dir = walk(&v, ROOT, &Path::new("versions/h").join(rel));
    assert_eq!(dir.kind, FileKind::Dir);
    for batch in [1, 2, 100] {
        assert_eq!(dots(list(&v, dir.ino, batch)), ["a", "back", "flip", "gone", "keep"], "batch {batch}");
    }
    // Each listed inode is the one lookup gives, and its attributes hold.
    for (n, a) in listing(&v, dir.ino, 2, true).into_iter().skip(2) {
        let a = a.unwrap();
        let l = v.lookup(dir.ino, &n).unwrap();
        assert_eq!(a, l, "{}", String::from_utf8_lossy(&n));
        assert_eq!(v.getattr(a.ino).unwrap(), a);
        assert_eq!(a.kind, FileKind::Dir);
    }
    let versions = |file: &str| {
        let d = walk(&v, dir.ino, Path::new(file));
        let names = dots(list(&v, d.ino, 1));
        let contents: Vec<Vec<u8>> = names
            .iter()
            .map(|n| {
                let f = v.lookup(d.ino, n.as_bytes()).unwrap();
                assert_eq!(f.kind, FileKind::File);
                read_all(&v, f.ino, f.size, 4096)
            })
            .collect();
        (names, contents)
    };
    let (names, contents) = versions("a");
    assert_eq!(names, [name(0), name(2), name(4)]);
    assert_eq!(contents, [0, 2, 4].map(|i| bytes(i, 100 + i as usize, false)));
    // The newest version's size and time are the directory's; each version keeps its own.
    let last = walk(&v, dir.ino, &Path::new("a").join(name(4)));
    assert_eq!(last.mtime, std::fs::metadata(src.join("a")).unwrap().modified().unwrap());
    assert_eq!(walk(&v, dir.ino, &Path::new("a").join(name(0))).size, 100);
    assert_eq!(walk(&v, dir.ino, Path::new("a")).mtime, last.mtime);
    assert_eq!(versions("gone"), (vec![name(0), name(3)], vec![b"first".to_vec(), b"second!".to_vec()]));
    assert_eq!(versions("back"), (vec![name(0)], vec![big.clone()]));
    assert_eq!(versions("keep/same"), (vec![name(0)], vec![b"never changes".to_vec()]));
    // A file in some snapshots and a directory in others shows as the directory.
    let flip = walk(&v, dir.ino, Path::new("flip"));
    assert_eq!(dots(list(&v, flip.ino, 10)), ["inside"]);
    assert_eq!(versions("flip/inside").1, [b"in the directory".to_vec()]);
    // The other host has its own tree.
    let h2 = walk(&v, ROOT, &Path::new("versions/h2").join(other.strip_prefix("/").unwrap()));
    let f = walk(&v, h2.ino, Path::new("a"));
    assert_eq!(dots(list(&v, f.ino, 10)), [name(10)]);
    assert!(matches!(v.lookup(dir.ino, b"nothing"), Err(ViewError::NoEntry)));
    assert!(matches!(v.lookup(walk(&v, dir.ino, Path::new("a")).ino, b"2020-01-01T00:00:00"), Err(ViewError::NoEntry)));
}

/// Entries of a `versions/` directory that left the node cache are found again by
/// position, in the listing's order (from the merge kept for it), backwards (behind
/// that merge: by one lookup per tree) and in any order, each as the listing gave it.
#[test]
fn versions_entries_are_found_again_in_any_order() {
    let t = temp_repo();
    let src = t.scratch("src");
    let start = 1_767_225_600;
    for s in 0..4i64 {
        for i in 0..300 {
            // Every file in 0, and each once again later (a third in each snapshot; the
            // length differs, so backup sees the change).
            if s == 0 || i % 3 == s as usize % 3 {
                write(&src.join(format!("f{i:03}")), format!("file {i} in {s}{}", "!".repeat(s as usize)).as_bytes());
            }
        }
        backup_at(&t.repo, &src, "h", start + s);
    }
    // A node cache of 4 KiB: a few of the 300 entries stay in it.
    let v = Vfs::new(Arc::new(t.reopen()), 1 << 20, 4096, (0, 0)).unwrap();
    let dir = walk(&v, ROOT, &Path::new("versions/h").join(src.strip_prefix("/").unwrap()));
    let listed: Vec<Attr> = listing(&v, dir.ino, 7, true).into_iter().skip(2).map(|(_, a)| a.unwrap()).collect();
    assert_eq!(listed.len(), 300);
    let forward: Vec<usize> = (0..300).collect();
    let backward: Vec<usize> = (0..300).rev().collect();
    let strided: Vec<usize> = (0..300).map(|i| i * 97 % 300).collect();
    for order in [forward, backward, strided] {
        for i in order {
            let a = &listed[i];
            assert_eq!(&v.getattr(a.ino).unwrap(), a, "entry {i}");
            // Its versions: the first snapshot's and the rewrite's.
            assert_eq!(list(&v, a.ino, 10).len(), 2 + 2, "entry {i}");
        }
    }
}
