//! Storage: named files in a local directory. Every write is crash-safe by one helper
//! ([`Local::write_atomic`]): temp file, fsync, rename, fsync the directory. Nothing here
//! knows about encryption or formats.
//!
//! Layout (docs/format.md, "Repository layout"):
//! `config`, `keys/<id>`, `data/<xx>/<id>`, `index/<id>`, `snapshots/<id>`, `tmp/`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::id::FileId;

/// The directories of a repository that hold named files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Key files.
    Keys,
    /// Packs (in 256 subdirectories by the first byte of the id).
    Data,
    /// Index files.
    Index,
    /// Snapshots.
    Snapshots,
    /// Lock files (a repository made by cairn 0.1 has none until a lock is taken).
    Locks,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Keys => "keys",
            Dir::Data => "data",
            Dir::Index => "index",
            Dir::Snapshots => "snapshots",
            Dir::Locks => "locks",
        }
    }

    /// What one file of this directory is called in messages.
    pub fn what(self) -> &'static str {
        match self {
            Dir::Keys => "key",
            Dir::Data => "pack",
            Dir::Index => "index",
            Dir::Snapshots => "snapshot",
            Dir::Locks => "lock",
        }
    }
}

/// What a listing says about one file, to notice that it changed without reading it: a
/// hash of its length and its modification and change times. A file cairn wrote is
/// never modified, so a different stamp means it was damaged, replaced or copied (the
/// local index cache then checks its content again). ctime cannot be set back by
/// `touch`, and a file replaced by a rename gets a new one, so an edit that restores
/// the mtime still changes the stamp. The inode is left out: FAT and some network
/// filesystems number files anew at every mount, which would re-read every index file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stamp(pub u64);

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        let mut h = blake3::Hasher::new();
        for v in [m.len(), m.mtime() as u64, m.mtime_nsec() as u64, m.ctime() as u64, m.ctime_nsec() as u64] {
            h.update(&v.to_le_bytes());
        }
        Stamp(u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes")))
    }
}

/// Temp files unlocked and untouched this long are stale even when written from another
/// host (whose lock this kernel may not see, on a network filesystem): a pack being
/// written is appended to whenever a backup stores new data.
const STALE_FOREIGN_TEMP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// This host's temp files are stale once unlocked (their writer is gone) and a minute
/// old: the minute covers a writer between creating its file and locking it.
const STALE_OWN_TEMP: std::time::Duration = std::time::Duration::from_secs(60);

/// A repository directory on a local (or mounted) filesystem.
#[derive(Clone, Debug)]
pub struct Local {
    root: PathBuf,
}

impl Local {
    /// A backend rooted at `root` (not checked).
    pub fn new(root: impl Into<PathBuf>) -> Local {
        Local { root: root.into() }
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Create the directory skeleton (for `init`).
    pub fn create_layout(&self) -> Result<()> {
        // data/00..ff are created when their first pack is written: 256 empty
        // directories cost a small repository ~1 MiB.
        for d in ["keys", "index", "snapshots", "tmp", "data", "locks"] {
            let p = self.root.join(d);
            fs::create_dir_all(&p).at(&p)?;
        }
        sync_dir(&self.root)
    }

    /// Path of the config file.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config")
    }

    /// Path of a named file.
    pub fn path(&self, dir: Dir, id: &FileId) -> PathBuf {
        match dir {
            Dir::Data => self.root.join("data").join(crate::id::hex(&id.0[..1])).join(id.to_hex()),
            _ => self.root.join(dir.name()).join(id.to_hex()),
        }
    }

    /// Read the whole file `id` of `dir`, refusing one larger than `max_len` bytes (the
    /// format's limit for its kind) or one that is not a regular file, before reading it.
    /// A missing file is [`Error::NotFound`].
    pub fn read_file(&self, dir: Dir, id: &FileId, max_len: u64) -> Result<Vec<u8>> {
        read_regular(&self.path(dir, id), max_len, dir.what(), id)
    }

    /// Read the config file; `None` if there is none (not a repository).
    pub fn read_config(&self, max_len: u64) -> Result<Option<Vec<u8>>> {
        match read_regular(&self.config_path(), max_len, "config", &"config") {
            Err(Error::NotFound { .. }) => Ok(None),
            r => r.map(Some),
        }
    }

    /// Open pack `id` for ranged reads; returns the file and its length. It must be a
    /// regular file (see [`open_regular`]).
    pub fn open_pack(&self, id: &FileId) -> Result<(File, u64)> {
        open_regular(&self.path(Dir::Data, id), "pack", id)
    }

    /// The length of file `id` of `dir`, `None` if it does not exist.
    pub fn file_len(&self, dir: Dir, id: &FileId) -> Result<Option<u64>> {
        let p = self.path(dir, id);
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(&p),
        }
    }

    /// Write `bytes` to `path` crash-safely: temp file in `tmp/`, fsync, rename, fsync dir.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let (tmp, mut f) = self.temp_file()?;
        if let Err(e) = f.write_all(bytes) {
            let _ = fs::remove_file(&tmp);
            return Err(e).at(&tmp);
        }
        self.commit(tmp, f, path)
    }

    /// A new temp file under `tmp/`, for writers that stream. It is named
    /// `<host>-<random>.tmp` (the first 8 hex digits of a hash of the host name) and
    /// locked (`flock`) for as long as it is open, so [`Local::remove_stale_temps`] can
    /// tell a file someone is writing from one a killed process left.
    pub fn temp_file(&self) -> Result<(PathBuf, File)> {
        loop {
            let name = format!("{}-{:016x}.tmp", host_tag(), crate::crypto::random_u64());
            let tmp = self.root.join("tmp").join(name);
            let f = match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                // A repository copied without its (empty) tmp/: make it again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.root.join("tmp").exists() => {
                    self.ensure_dir(&self.root.join("tmp"))?;
                    continue;
                }
                r => r.at(&tmp)?,
            };
            match crate::sys::try_lock(&f) {
                Ok(true) => return Ok((tmp, f)),
                // Someone locked it between its creation and ours (a remover of stale
                // files, about to delete it): leave it to them and take another name.
                Ok(false) => continue,
                // A filesystem without locks: only the age rule protects the file.
                Err(_) => return Ok((tmp, f)),
            }
        }
    }

    /// How many files `tmp/` holds, and their bytes (for `check`'s note on leftovers).
    pub fn temp_usage(&self) -> Result<(u64, u64)> {
        let dir = self.root.join("tmp");
        let mut n = (0, 0);
        match fs::read_dir(&dir) {
            Ok(rd) => {
                for e in rd.flatten() {
                    n.0 += 1;
                    n.1 += e.metadata().map_or(0, |m| m.len());
                }
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(n),
            Err(e) => Err(e).at(&dir),
        }
    }

    /// Remove temp files no running writer owns: those of this host whose lock is free
    /// (their writer ended: a kill -9, a crash) and that are a minute old, and those of
    /// other hosts (or names of older cairns) that are unlocked and untouched for a day. Returns how many files
    /// and bytes were removed. Errors on single files are ignored: a leftover is harmless.
    pub fn remove_stale_temps(&self) -> Result<(u64, u64)> {
        let dir = self.root.join("tmp");
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(e).at(&dir),
        };
        let ours = format!("{}-", host_tag());
        let (mut files, mut bytes) = (0, 0);
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str().filter(|n| n.ends_with(".tmp")) else { continue };
            let path = e.path();
            let Ok((f, len)) = open_regular(&path, "temp file", &name) else { continue };
            // Held by a live writer (on this kernel): never touched.
            if !matches!(crate::sys::try_lock(&f), Ok(true)) {
                continue;
            }
            let idle = f.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            // A minute's grace covers a writer between creating its file and locking it.
            let limit = if name.starts_with(&ours) { STALE_OWN_TEMP } else { STALE_FOREIGN_TEMP };
            if idle.is_some_and(|d| d >= limit) && fs::remove_file(&path).is_ok() {
                files += 1;
                bytes += len;
            }
        }
        Ok((files, bytes))
    }

    /// Make a finished temp file durable and give it its final name. If the target already
    /// exists it is replaced; names are content hashes, so its content is the same.
    /// On failure the temp file is removed.
    pub fn commit(&self, tmp: PathBuf, f: File, path: &Path) -> Result<()> {
        let dir = path.parent().unwrap_or(&self.root);
        let r = f.sync_all().at(&tmp).and_then(|()| {
            drop(f);
            self.ensure_dir(dir)?;
            fs::rename(&tmp, path).at(path)
        });
        if r.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        r?;
        sync_dir(path.parent().unwrap_or(&self.root))
    }

    /// Create a subdirectory of `data/` (or `locks/`, which a repository made by cairn
    /// 0.1 lacks) on first use, durably.
    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        match fs::create_dir(dir) {
            Ok(()) => sync_dir(dir.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()), // a concurrent writer
            Err(e) => Err(e).at(dir),
        }
    }

    /// [`Local::list`] with each file's [`Stamp`] (one `stat` per file). A file removed
    /// between the listing and its `stat` is left out.
    pub fn list_stamped(&self, dir: Dir) -> Result<Vec<(FileId, Stamp)>> {
        let mut out = Vec::new();
        for id in self.list(dir)? {
            let p = self.path(dir, &id);
            match fs::metadata(&p) {
                Ok(m) => out.push((id, Stamp::of(&m))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).at(&p),
            }
        }
        Ok(out)
    }

    /// The [`Stamp`] of file `id` of `dir`.
    pub fn stamp(&self, dir: Dir, id: &FileId) -> Result<Stamp> {
        let p = self.path(dir, id);
        Ok(Stamp::of(&fs::metadata(&p).at(&p)?))
    }

    /// Remove file `id` of `dir`; a missing file is not an error. The directory is
    /// fsynced so the removal is durable.
    pub fn remove(&self, dir: Dir, id: &FileId) -> Result<()> {
        let p = self.path(dir, id);
        match fs::remove_file(&p) {
            Ok(()) => sync_dir(p.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).at(&p),
        }
    }

    /// Ids of the files in `dir` (not `data`), skipping names that are not ids.
    pub fn list(&self, dir: Dir) -> Result<Vec<FileId>> {
        debug_assert!(dir != Dir::Data);
        let p = self.root.join(dir.name());
        let mut out = Vec::new();
        let entries = match fs::read_dir(&p) {
            Err(e) if dir == Dir::Locks && e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            r => r.at(&p)?,
        };
        for e in entries {
            let e = e.at(&p)?;
            if let Some(id) = e.file_name().to_str().and_then(|s| s.parse::<FileId>().ok()) {
                out.push(id);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Visit every pack with its size, one subdirectory at a time.
    pub fn for_each_pack(&self, mut f: impl FnMut(FileId, u64) -> Result<()>) -> Result<()> {
        for b in 0..=255u8 {
            let p = self.root.join("data").join(crate::id::hex(&[b]));
            let rd = match fs::read_dir(&p) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).at(&p),
            };
            let mut ids = Vec::new();
            for e in rd {
                let e = e.at(&p)?;
                if let Some(id) = e.file_name().to_str().and_then(|s| s.parse::<FileId>().ok()) {
                    ids.push((id, e.metadata().at(e.path())?.len()));
                }
            }
            ids.sort_unstable();
            for (id, len) in ids {
                f(id, len)?;
            }
        }
        Ok(())
    }
}

/// Open `path` for reading, as a regular file only. `O_NONBLOCK` keeps the open from
/// waiting forever on a FIFO planted at the path (a reader would block until a writer
/// came); the type is then checked on the open descriptor, so neither a FIFO nor a device
/// is ever read. Symlinks are followed (a user may link `data/` to another disk) to a
/// regular file. Returns the file and its length.
fn open_regular(path: &Path, what: &'static str, id: &dyn std::fmt::Display) -> Result<(File, u64)> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = match OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound { what, id: id.to_string() }),
        Err(e) => return Err(e).at(path),
    };
    let m = f.metadata().at(path)?;
    let ft = m.file_type();
    if !ft.is_file() {
        let kind = if ft.is_fifo() {
            "a fifo"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(Error::corrupt(what, id, format!("{} is {kind}, not a regular file", path.display())));
    }
    Ok((f, m.len()))
}

/// Read a whole regular file of at most `max_len` bytes (see [`open_regular`]). The size
/// is checked before anything is allocated, and the read stops at `max_len` + 1 bytes
/// even if the file grows meanwhile.
fn read_regular(path: &Path, max_len: u64, what: &'static str, id: &dyn std::fmt::Display) -> Result<Vec<u8>> {
    use std::io::Read;
    let (f, len) = open_regular(path, what, id)?;
    let too_big = |n: u64| Error::corrupt(what, id, format!("{n} bytes, more than the {max_len} the format allows"));
    if len > max_len {
        return Err(too_big(len));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(max_len + 1).read_to_end(&mut buf).at(path)?;
    if buf.len() as u64 > max_len {
        return Err(too_big(buf.len() as u64));
    }
    Ok(buf)
}

/// This machine's part of temp file names: 8 hex digits of a hash of its host name and
/// machine id (`/etc/machine-id`, where there is one): cloned machines and Raspberry
/// Pis often share a host name, and removing temp files relies on telling this machine
/// from the others.
pub fn host_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let mut h = blake3::Hasher::new();
        h.update(crate::sys::hostname().as_bytes());
        h.update(&[0]);
        if let Ok(id) = fs::read("/etc/machine-id") {
            h.update(&id[..id.len().min(64)]);
        }
        crate::id::hex(&h.finalize().as_bytes()[..4])
    })
}

/// Read exactly `buf.len()` bytes at `offset` of an open file.
pub fn read_exact_at(f: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    f.read_exact_at(buf, offset).at(path)
}

/// fsync a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_and_list() {
        let t = tempfile::tempdir().unwrap();
        let b = Local::new(t.path());
        b.create_layout().unwrap();
        let id = FileId::of(b"hello");
        b.write_atomic(&b.path(Dir::Snapshots, &id), b"hello").unwrap();
        assert_eq!(b.list(Dir::Snapshots).unwrap(), vec![id]);
        assert_eq!(b.read_file(Dir::Snapshots, &id, 5).unwrap(), b"hello");
        assert!(matches!(b.read_file(Dir::Snapshots, &id, 4), Err(Error::Corrupt { .. })));
        assert!(matches!(b.read_file(Dir::Index, &id, 5), Err(Error::NotFound { .. })));
        // Nothing is left in tmp/.
        assert_eq!(fs::read_dir(t.path().join("tmp")).unwrap().count(), 0);
        let pid = FileId::of(b"pack");
        b.write_atomic(&b.path(Dir::Data, &pid), b"pack").unwrap();
        let mut seen = vec![];
        b.for_each_pack(|id, len| {
            seen.push((id, len));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(pid, 4)]);
    }
}
