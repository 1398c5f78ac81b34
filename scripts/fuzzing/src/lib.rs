//! Helpers shared by the fuzz targets and the seed writer (`fuzz-seeds`).
//!
//! Several targets take more than one file from one fuzz input. They use one small
//! container format, [`records`]: a sequence of `selector (u8) | length (u32 LE) | bytes`,
//! where a length past the end of the input is cut to what remains. libFuzzer's mutations
//! then change a selector, a length or the bytes of one file independently.

use std::path::{Path, PathBuf};

/// The password of the frozen fixture repository of format `version`
/// (src/tests/fixtures/vN, see src/tests/compat.rs).
pub fn fixture_password(version: u8) -> Vec<u8> {
    format!("cairn-fixture-v{version}").into_bytes()
}

/// The frozen fixture repository of format `version`: real files, the same on every
/// machine, with cheap KDF parameters, so inputs made from them stay meaningful.
pub fn fixture_repo(version: u8) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../src/tests/fixtures/v{version}/repo"))
}

/// Split `data` into records (see the module's notes).
pub fn records(data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&sel, tail)) = rest.split_first() {
        let mut len = [0u8; 4];
        let n = tail.len().min(4);
        len[..n].copy_from_slice(&tail[..n]);
        let tail = &tail[n..];
        let len = (u32::from_le_bytes(len) as usize).min(tail.len());
        out.push((sel, &tail[..len]));
        rest = &tail[len..];
    }
    out
}

/// Append one record.
pub fn put_record(out: &mut Vec<u8>, sel: u8, bytes: &[u8]) {
    out.push(sel);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A fresh scratch directory, on tmpfs where there is one: the targets that write files
/// (runs, caches, repositories) then cost no disk I/O, and fsync is free.
pub fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let mut b = tempfile::Builder::new();
    b.prefix("cairn-fuzz-");
    if shm.is_dir() {
        if let Ok(t) = b.tempdir_in(shm) {
            return t;
        }
    }
    b.tempdir().expect("a temp dir")
}

/// Files of a repository directory, relative path and bytes, in path order.
pub fn read_tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("readable").flatten().collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push((p.strip_prefix(root).expect("inside").to_path_buf(), std::fs::read(&p).expect("readable")));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

/// Reports of check and restore that keep nothing (the targets look for panics, hangs
/// and allocations, not for the messages).
pub struct Quiet;

impl cairn::ops::check::Report for Quiet {
    fn error(&self, _message: &str) {}
}

impl cairn::ops::restore::Report for Quiet {
    fn error(&self, _path: &Path, _message: &str) {}
}

/// A copy of the fixture repository of `version` in a scratch directory, opened: the
/// `pack_file` target puts crafted packs into it, whose sealed parts then open with a real
/// key. Returns the directory (kept alive with the repository) and the repository.
pub fn open_fixture_copy(version: u8) -> (tempfile::TempDir, cairn::repo::Repository) {
    let dir = scratch();
    let root = dir.path().join("repo");
    for (rel, bytes) in read_tree(&fixture_repo(version)) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, bytes).expect("write");
    }
    let repo = cairn::repo::Repository::open_with(&root, &fixture_password(version), &open_options())
        .expect("the fixture opens");
    (dir, repo)
}

/// How the targets open repositories: the smallest memory budget cairn accepts (the
/// tightest limits; `check` also sizes its caches from the budget up front), no cache
/// directory (a private temp index), and a KDF cap of 64 KiB x 16 passes so that a
/// mutated key file asking for more is refused as over the cap (as a real one over
/// `--memory` is) instead of making every execution derive a key for seconds.
pub fn open_options() -> cairn::repo::OpenOptions {
    cairn::repo::OpenOptions {
        cache_dir: None,
        budget: cairn::budget::Budget(cairn::budget::MIN),
        kdf_limit: Some(cairn::repo::KdfLimit { mem_kib: 64 }),
    }
}

/// The index files the `index_manifest` target's fake repository holds: file ids and
/// stamps. The seeds' caches were built from exactly these, so a seed's manifest names
/// them and opening it reads the fuzzed runs instead of rebuilding.
pub fn manifest_files() -> Vec<(cairn::id::FileId, cairn::backend::Stamp)> {
    (1..=3u8).map(|i| (cairn::id::FileId([i; 32]), cairn::backend::Stamp(i as u64))).collect()
}

/// The entries of the fake index file `file` (see [`manifest_files`]).
pub fn manifest_entries(file: &cairn::id::FileId) -> Vec<cairn::format::index::IndexEntry> {
    use cairn::format::index::{IndexEntry, Location};
    use cairn::format::{BlobKind, Compression};
    let n = file.0[0] as u32;
    (0..40 * n)
        .map(|i| {
            let k = n * 1000 + i;
            IndexEntry {
                id: cairn::id::BlobId(manifest_blob(k)),
                loc: Location {
                    pack: cairn::id::FileId([(k % 7) as u8; 32]),
                    offset: 9 + i * 100,
                    stored_len: 100,
                    raw_len: 60,
                    kind: if i % 3 == 0 { BlobKind::Tree } else { BlobKind::Data },
                    compression: if i % 2 == 0 { Compression::Zstd } else { Compression::None },
                },
            }
        })
        .collect()
}

/// The blob id of entry `k` of the fake index files.
pub fn manifest_blob(k: u32) -> [u8; 32] {
    *blake3::hash(&k.to_le_bytes()).as_bytes()
}

/// Selectors of the `index_manifest` target's records: which cache file a record is.
pub fn cache_file_name(sel: u8) -> String {
    match sel {
        0 => "manifest".into(),
        1 => "packs".into(),
        2 => "unindexed".into(),
        s => format!("run-{:08}", s - 3),
    }
}
