//! Test helpers: repositories with cheap key derivation in temp dirs, and source trees.

use std::path::{Path, PathBuf};

use crate::crypto::KdfParams;
use crate::format::config::DEFAULT_PACK_SIZE;
use crate::repo::{InitOptions, Repository};

/// The password every test repository uses.
pub const PASSWORD: &[u8] = b"test password";

/// A temp dir holding a repository (`repo/`) and space for sources and restores.
pub struct TestRepo {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The open repository.
    pub repo: Repository,
}

impl TestRepo {
    /// The repository path.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    /// A fresh path inside the temp dir.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Reopen (fresh index, as a new process would).
    pub fn reopen(&self) -> Repository {
        Repository::open(&self.path(), PASSWORD).unwrap()
    }
}

/// Init options with cheap KDF parameters (the one place tests get them) and small chunks.
pub fn cheap_options() -> InitOptions {
    InitOptions {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        chunker: crate::chunker::ChunkerParams { min: 4096, avg: 16384, max: 65536, seed: 0 },
        pack_size: DEFAULT_PACK_SIZE.min(1 << 20),
        compression: 3,
        ..InitOptions::default()
    }
}

/// A new repository in a temp dir.
pub fn temp_repo() -> TestRepo {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo");
    Repository::init(&path, PASSWORD, &cheap_options()).unwrap();
    let repo = Repository::open(&path, PASSWORD).unwrap();
    TestRepo { dir, repo }
}

/// Deterministic pseudo-random bytes (xorshift), `compressible` mixes in repeated text.
pub fn bytes(seed: u64, len: usize, compressible: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if compressible && !x.is_multiple_of(4) {
            out.extend_from_slice(b"the quick brown fox jumps over the lazy dog ");
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// Damage one byte of a file (to simulate bit rot).
pub fn flip_byte(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

/// Write a file, creating parents.
pub fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Every pack of `repo`.
pub fn packs(repo: &Repository) -> Vec<crate::id::FileId> {
    let mut packs = vec![];
    repo.backend()
        .for_each_pack(|id, _| {
            packs.push(id);
            Ok(())
        })
        .unwrap();
    packs
}

/// Delete every pack of `repo` that holds data blobs only (as a lost disk would).
pub fn lose_data_packs(repo: &Repository) {
    for p in packs(repo) {
        let h = repo.read_pack_header(&p).unwrap();
        if h.blobs.iter().all(|(b, _)| b.kind == crate::format::BlobKind::Data) {
            std::fs::remove_file(repo.pack_path(&p)).unwrap();
        }
    }
}

/// Whether a test must fail rather than skip for lack of what it checks (FUSE, xattrs):
/// on CI (`CI` set, not to "false" or "0"), or when `var` is set to 1. Elsewhere a
/// test may skip, saying so.
pub fn must_not_skip(var: &str) -> bool {
    let set = |k: &str, off: &[&str]| std::env::var(k).is_ok_and(|v| !v.is_empty() && !off.contains(&v.as_str()));
    set("CI", &["false", "0"]) || set(var, &["0"])
}

/// Set extended attribute `name` on `path` for a test; false (saying so) where the
/// filesystem keeps none, a panic where tests must not skip (`CAIRN_REQUIRE_XATTRS`).
pub fn set_test_xattr(path: &Path, name: &[u8], value: &[u8]) -> bool {
    match crate::sys::set_xattr(path, name, value) {
        Ok(()) => true,
        Err(e) if must_not_skip("CAIRN_REQUIRE_XATTRS") => panic!("{}: xattrs unsupported: {e}", path.display()),
        Err(e) => {
            eprintln!("{}: xattrs unsupported ({e}); their checks are skipped", path.display());
            false
        }
    }
}

/// The `user.` extended attributes of `path`: those tests set. Others (an SELinux label
/// every new file gets, ACLs) belong to the host.
pub fn user_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut x = crate::sys::xattrs(path).unwrap_or_default();
    x.retain(|(n, _)| n.starts_with(b"user."));
    x
}

/// `repo`'s config as cairn 0.1 wrote it: the same settings under a version-1 header.
pub fn config_v1(repo: &Repository) -> Vec<u8> {
    let mut header = crate::format::FileKind::Config.header();
    header[8] = 1;
    crate::repo::seal_config(repo.keys(), repo.config(), header)
}
