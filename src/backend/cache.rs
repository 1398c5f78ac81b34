//! Local copies of a remote repository's files that are read again and again: the
//! snapshots (every command that resolves `latest` or lists snapshots reads them all)
//! and the packs of tree blobs (a backup reads its parent's trees; `ls` and the mount
//! walk them). Both are immutable and named by the hash of their content, so a copy
//! never goes stale, only unused. With this cache an unchanged backup of a large tree
//! to S3 lists `index/`, `snapshots/` and `locks/` and reads nothing else remote.
//!
//! The copies live in `<cache>/<repo id>/files` laid out as a repository (`snapshots/`,
//! `data/<xx>/`), written through a [`Local`] backend (temp file, rename). A copy is
//! trusted only after its content was hashed against its name in this process: a
//! damaged or half-written copy (a crash, a full disk) is fetched again, never used.
//! Disk use: every snapshot file (~200 B each) and every tree pack (trees are ~1% of a
//! repository's bytes). Copies of files removed from the repository are deleted when a
//! listing shows them gone (snapshots: every listing; packs: a full listing of
//! `data/`, as check and prune make), and when this process removes them itself.

use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use super::{Backend, Dir, Local, Meta, TempFile};
use crate::error::{IoContext, Result};
use crate::id::FileId;

/// Copies this process checked (32 B of id plus the LRU's overhead each, 256 KiB).
const VERIFIED_BYTES: usize = 256 << 10;

/// A remote backend with a local cache of its snapshots and tree packs.
pub struct Cached {
    inner: Box<dyn Backend>,
    local: Local,
    /// Copies whose content matched their name in this process, by directory and id.
    verified: Mutex<lru::LruCache<(u8, FileId), ()>>,
}

impl Cached {
    /// Cache `inner`'s files in `dir` (created on first use).
    pub fn new(inner: Box<dyn Backend>, dir: &Path) -> Cached {
        // `data/` too: a copy goes in `data/<xx>/`, which is made on first use below it
        // (without it, a fresh cache kept no tree pack, and every tree blob was a GET).
        let _ = std::fs::create_dir_all(dir.join("data"));
        let local = Local::new(dir);
        // Temp files of a process that died while fetching.
        let _ = local.remove_stale_temps();
        Cached { inner, local, verified: Mutex::new(crate::budget::lru_within(VERIFIED_BYTES)) }
    }

    fn is_verified(&self, dir: Dir, id: &FileId) -> bool {
        self.verified.lock().unwrap_or_else(|p| p.into_inner()).get(&(dir as u8, *id)).is_some()
    }

    fn set_verified(&self, dir: Dir, id: &FileId) {
        self.verified.lock().unwrap_or_else(|p| p.into_inner()).put((dir as u8, *id), ());
    }

    /// Make sure a checked copy of file `id` of `dir` is in the cache: hash the one there
    /// (first use in this process), or fetch it (streamed through a temp file, hashed on
    /// the way). Returns false when the remote file does not match its name either (the
    /// caller then reads the remote one and reports the damage it finds).
    fn ensure(&self, dir: Dir, id: &FileId) -> Result<bool> {
        if self.is_verified(dir, id) {
            return Ok(true);
        }
        let path = self.local.path(dir, id);
        if let Ok(mut f) = std::fs::File::open(&path) {
            if hash_stream(&mut f, &mut |_| true).ok().flatten() == Some(*id) {
                self.set_verified(dir, id);
                return Ok(true);
            }
            let _ = self.local.remove(dir, id);
        }
        let mut tmp = match self.local.temp_file() {
            Ok(t) => t,
            Err(_) => return Ok(false), // a cache that cannot be written: read remotely
        };
        let mut r = self.inner.reader(dir, id, 0)?;
        let fetched = hash_stream(&mut r, &mut |b| tmp.write_all(b).is_ok()).at(self.inner.path(dir, id))?;
        if fetched != Some(*id) || self.local.store(dir, id, tmp).is_err() {
            return Ok(false);
        }
        self.set_verified(dir, id);
        Ok(true)
    }

    /// Delete the copies in `dir` of files not in `present` (ascending).
    fn forget_missing(&self, dir: Dir, present: &[FileId]) {
        let Ok(cached) = self.local.list(dir) else { return };
        for id in cached {
            if present.binary_search(&id).is_err() {
                let _ = self.local.remove(dir, &id);
            }
        }
    }
}

/// The blake3 hash of everything `r` gives, each piece also handed to `sink`; `None` if
/// the sink refused one.
fn hash_stream(r: &mut dyn Read, sink: &mut dyn FnMut(&[u8]) -> bool) -> std::io::Result<Option<FileId>> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(Some(FileId(*hasher.finalize().as_bytes())));
        }
        hasher.update(&buf[..n]);
        if !sink(&buf[..n]) {
            return Ok(None);
        }
    }
}

impl Cached {
    /// Link `tmp`, about to be stored as file `id` of `dir`, into the cache (the spool
    /// and the cache share a directory tree, so this copies nothing). Best effort: a copy
    /// missing is fetched when needed, and one read is checked against its name first.
    fn keep_copy(&self, dir: Dir, id: &FileId, tmp: &mut TempFile) {
        let copy = self.local.path(dir, id);
        let _ = tmp.flush().is_ok()
            && copy.parent().is_some_and(|p| std::fs::create_dir_all(p).is_ok())
            && std::fs::hard_link(tmp.path(), &copy).is_ok();
    }
}

impl Backend for Cached {
    fn root(&self) -> &Path {
        self.inner.root()
    }
    fn path(&self, dir: Dir, id: &FileId) -> std::path::PathBuf {
        self.inner.path(dir, id)
    }
    fn is_remote(&self) -> bool {
        true
    }
    fn create_layout(&self) -> Result<()> {
        self.inner.create_layout()
    }
    fn has_config(&self) -> Result<bool> {
        self.inner.has_config()
    }
    fn read_config(&self, max_len: u64) -> Result<Option<Vec<u8>>> {
        self.inner.read_config(max_len)
    }
    fn write_config(&self, bytes: &[u8]) -> Result<()> {
        self.inner.write_config(bytes)
    }

    /// Snapshots come from the cache (a copy is checked against its name first).
    fn read(&self, dir: Dir, id: &FileId, max_len: u64) -> Result<Vec<u8>> {
        if dir == Dir::Snapshots {
            if let Ok(b) = self.local.read(dir, id, max_len) {
                if FileId::of(&b) == *id {
                    return Ok(b);
                }
                let _ = self.local.remove(dir, id);
            }
            let b = self.inner.read(dir, id, max_len)?;
            if FileId::of(&b) == *id {
                let _ = (&self.local as &dyn Backend).write(dir, id, &b);
            }
            return Ok(b);
        }
        self.inner.read(dir, id, max_len)
    }

    fn read_at(&self, dir: Dir, id: &FileId, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_at(dir, id, offset, buf)
    }

    fn read_planned(&self, dir: Dir, id: &FileId, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_planned(dir, id, offset, buf)
    }

    fn connections(&self) -> usize {
        self.inner.connections()
    }

    fn read_at_kept(&self, dir: Dir, id: &FileId, offset: u64, buf: &mut [u8]) -> Result<()> {
        if self.ensure(dir, id)? {
            if let Ok(()) = self.local.read_at(dir, id, offset, buf) {
                return Ok(());
            }
        }
        self.inner.read_at(dir, id, offset, buf)
    }

    fn reader(&self, dir: Dir, id: &FileId, offset: u64) -> Result<Box<dyn Read + Send>> {
        self.inner.reader(dir, id, offset)
    }
    fn stat(&self, dir: Dir, id: &FileId) -> Result<Option<Meta>> {
        self.inner.stat(dir, id)
    }
    fn temp_file(&self) -> Result<TempFile> {
        self.inner.temp_file()
    }
    /// A snapshot written is kept too: the next backup reads it as its parent.
    fn store(&self, dir: Dir, id: &FileId, mut tmp: TempFile) -> Result<()> {
        if dir == Dir::Snapshots {
            self.keep_copy(dir, id, &mut tmp);
        }
        self.inner.store(dir, id, tmp)
    }

    /// A file to keep is linked into the cache before its upload. Should the upload
    /// fail, the copy is only unused: no index file names it.
    fn store_later(&self, dir: Dir, id: &FileId, mut tmp: TempFile, keep: bool) -> Result<()> {
        if keep {
            self.keep_copy(dir, id, &mut tmp);
        }
        self.inner.store_later(dir, id, tmp, keep)
    }

    fn wait_stored(&self) -> Result<()> {
        self.inner.wait_stored()
    }

    fn list(&self, dir: Dir) -> Result<Vec<FileId>> {
        let ids = self.inner.list(dir)?;
        if dir == Dir::Snapshots {
            self.forget_missing(dir, &ids);
        }
        Ok(ids)
    }

    fn for_each(&self, dir: Dir, f: &mut dyn FnMut(FileId, Meta) -> Result<()>) -> Result<()> {
        if dir != Dir::Data {
            return self.inner.for_each(dir, f);
        }
        // The cached packs (trees only: ~1% of the packs, 33 B each) are checked off as
        // the listing passes them; those it never met are gone from the repository.
        let cached = self.local.list(Dir::Data).unwrap_or_default();
        let mut seen = vec![false; cached.len()];
        self.inner.for_each(dir, &mut |id, m| {
            if let Ok(i) = cached.binary_search(&id) {
                seen[i] = true;
            }
            f(id, m)
        })?;
        for (id, _) in cached.iter().zip(seen).filter(|(_, seen)| !seen) {
            let _ = self.local.remove(Dir::Data, id);
        }
        Ok(())
    }

    fn remove(&self, dir: Dir, id: &FileId) -> Result<()> {
        self.inner.remove(dir, id)?;
        let _ = self.local.remove(dir, id);
        Ok(())
    }
    fn temp_usage(&self) -> Result<(u64, u64)> {
        self.inner.temp_usage()
    }
    fn remove_stale_temps(&self) -> Result<(u64, u64)> {
        self.inner.remove_stale_temps()
    }
}
