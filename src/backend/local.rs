//! A repository in a local (or mounted) directory. Every write is crash-safe: temp
//! file in `tmp/`, fsync, rename, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Backend, Dir, Meta, Stamp, TempFile};
use crate::error::{Error, IoContext, Result};
use crate::id::FileId;

/// A file's [`Stamp`]: a hash of its length and its modification and change times.
/// ctime cannot be set back by `touch`, and a file replaced by a rename gets a new one,
/// so an edit that restores the mtime still changes the stamp. The inode is left out:
/// FAT and some network filesystems number files anew at every mount, which would
/// re-read every index file.
fn stamp_of(m: &fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    Stamp::of_values(&[m.len(), m.mtime() as u64, m.mtime_nsec() as u64, m.ctime() as u64, m.ctime_nsec() as u64])
}

fn meta_of(m: &fs::Metadata) -> Meta {
    Meta { len: m.len(), stamp: stamp_of(m), modified: m.modified().ok() }
}

/// One directory's files: ids, with their metadata where asked (~80 B each).
type Listing = Vec<(FileId, Option<Meta>)>;

/// Packs kept open for ranged reads (one descriptor each).
const OPEN_PACKS: usize = 64;

/// Temp files unlocked and untouched this long are stale even when written from another
/// host (whose lock this kernel may not see, on a network filesystem): a pack being
/// written is appended to whenever a backup stores new data.
const STALE_FOREIGN_TEMP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// This host's temp files are stale once unlocked (their writer is gone) and a minute
/// old: the minute covers a writer between creating its file and locking it.
const STALE_OWN_TEMP: std::time::Duration = std::time::Duration::from_secs(60);

/// A repository directory on a local (or mounted) filesystem.
pub struct Local {
    root: PathBuf,
    /// Files open for ranged reads, by directory and id.
    open: Mutex<lru::LruCache<(u8, FileId), Arc<File>>>,
}

impl Local {
    /// A backend rooted at `root` (not checked).
    pub fn new(root: impl Into<PathBuf>) -> Local {
        Local {
            root: root.into(),
            open: Mutex::new(lru::LruCache::new(NonZeroUsize::new(OPEN_PACKS).expect("non-zero"))),
        }
    }

    /// Path of the config file.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config")
    }

    /// An open descriptor of file `id` of `dir`, from the cache of open files.
    fn open_file(&self, dir: Dir, id: &FileId) -> Result<Arc<File>> {
        let key = (dir as u8, *id);
        if let Some(f) = self.open.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(f.clone());
        }
        let f = Arc::new(open_regular(&self.path(dir, id), dir.what(), id)?.0);
        self.open.lock().unwrap_or_else(|e| e.into_inner()).put(key, f.clone());
        Ok(f)
    }

    /// Make a finished temp file durable and give it its final name `path`.
    fn commit(&self, tmp: TempFile, path: &Path) -> Result<()> {
        let dir = path.parent().unwrap_or(&self.root);
        let tmp = tmp.finish()?;
        let r = self.ensure_dir(dir).and_then(|()| fs::rename(&tmp, path).at(path));
        if r.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        r?;
        sync_dir(dir)
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

    /// Ids in one directory, with their metadata if `meta`, sorted (`None`: no such
    /// directory).
    fn read_ids(&self, p: &Path, meta: bool) -> Result<Option<Listing>> {
        let rd = match fs::read_dir(p) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).at(p),
        };
        let mut ids = Vec::new();
        for e in rd {
            let e = e.at(p)?;
            let Some(id) = e.file_name().to_str().and_then(|s| s.parse::<FileId>().ok()) else { continue };
            if !meta {
                ids.push((id, None));
                continue;
            }
            // Symlinks are followed, as reads follow them.
            match fs::metadata(e.path()) {
                Ok(m) => ids.push((id, Some(meta_of(&m)))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // removed meanwhile
                Err(err) => return Err(err).at(e.path()),
            }
        }
        ids.sort_unstable_by_key(|(id, _)| *id);
        Ok(Some(ids))
    }
}

impl Backend for Local {
    fn root(&self) -> &Path {
        &self.root
    }

    fn create_layout(&self) -> Result<()> {
        // data/00..ff are created when their first pack is written: 256 empty
        // directories cost a small repository ~1 MiB.
        for d in ["keys", "index", "snapshots", "tmp", "data", "locks"] {
            let p = self.root.join(d);
            fs::create_dir_all(&p).at(&p)?;
        }
        sync_dir(&self.root)
    }

    fn has_config(&self) -> Result<bool> {
        let p = self.config_path();
        match fs::symlink_metadata(&p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).at(&p),
        }
    }

    fn read_config(&self, max_len: u64) -> Result<Option<Vec<u8>>> {
        match read_regular(&self.config_path(), max_len, "config", &"config") {
            Err(Error::NotFound { .. }) => Ok(None),
            r => r.map(Some),
        }
    }

    fn write_config(&self, bytes: &[u8]) -> Result<()> {
        let mut t = self.temp_file()?;
        t.write_all(bytes)?;
        self.commit(t, &self.config_path())
    }

    /// The file must be regular (see [`open_regular`]).
    fn read(&self, dir: Dir, id: &FileId, max_len: u64) -> Result<Vec<u8>> {
        read_regular(&self.path(dir, id), max_len, dir.what(), id)
    }

    fn read_at(&self, dir: Dir, id: &FileId, offset: u64, buf: &mut [u8]) -> Result<()> {
        // The path is made only for an error: this is every blob read's path.
        self.open_file(dir, id)?.read_exact_at(buf, offset).map_err(|err| Error::Io { path: self.path(dir, id), err })
    }

    fn reader(&self, dir: Dir, id: &FileId, offset: u64) -> Result<Box<dyn std::io::Read + Send>> {
        use std::io::{Seek, SeekFrom};
        let path = self.path(dir, id);
        let (mut f, _) = open_regular(&path, dir.what(), id)?;
        f.seek(SeekFrom::Start(offset)).at(&path)?;
        Ok(Box::new(f))
    }

    /// A file that is not regular (a FIFO, a directory planted under a file's name) is
    /// damage, named.
    fn stat(&self, dir: Dir, id: &FileId) -> Result<Option<Meta>> {
        let p = self.path(dir, id);
        match fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(Some(meta_of(&m))),
            Ok(_) => Err(Error::corrupt(dir.what(), id, format!("{} is not a regular file", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(&p),
        }
    }

    /// A new temp file under `tmp/`. It is named `<host>-<random>.tmp` (the first 8 hex
    /// digits of a hash of the host name) and locked (`flock`) for as long as it is
    /// open, so `remove_stale_temps` can tell a file someone is writing from one a
    /// killed process left.
    fn temp_file(&self) -> Result<TempFile> {
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
                // Someone locked it between its creation and ours (a remover of stale
                // files, about to delete it): leave it to them and take another name.
                Ok(false) => continue,
                // Err: a filesystem without locks; only the age rule protects the file.
                Ok(true) | Err(_) => return Ok(TempFile::new(tmp, f, true)),
            }
        }
    }

    fn store(&self, dir: Dir, id: &FileId, tmp: TempFile) -> Result<()> {
        self.commit(tmp, &self.path(dir, id))
    }

    /// How many files `tmp/` holds, and their bytes.
    fn temp_usage(&self) -> Result<(u64, u64)> {
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

    /// Those of this host whose lock is free (their writer ended: a kill -9, a crash)
    /// and that are a minute old, and those of other hosts (or names of older cairns)
    /// that are unlocked and untouched for a day. Errors on single files are ignored: a
    /// leftover is harmless.
    fn remove_stale_temps(&self) -> Result<(u64, u64)> {
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

    /// The directory is fsynced so the removal is durable.
    fn remove(&self, dir: Dir, id: &FileId) -> Result<()> {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).pop(&(dir as u8, *id));
        let p = self.path(dir, id);
        match fs::remove_file(&p) {
            Ok(()) => sync_dir(p.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).at(&p),
        }
    }

    fn list(&self, dir: Dir) -> Result<Vec<FileId>> {
        let mut out = Vec::new();
        if dir == Dir::Data {
            self.for_each(dir, &mut |id, _| {
                out.push(id);
                Ok(())
            })?;
            return Ok(out);
        }
        let p = self.root.join(dir.name());
        match self.read_ids(&p, false)? {
            Some(ids) => out.extend(ids.into_iter().map(|(id, _)| id)),
            // A repository made by cairn 0.1 has no locks/ until a lock is taken.
            None if dir == Dir::Locks => {}
            None => return Err(std::io::Error::from(std::io::ErrorKind::NotFound)).at(&p),
        }
        Ok(out)
    }

    fn for_each(&self, dir: Dir, f: &mut dyn FnMut(FileId, Meta) -> Result<()>) -> Result<()> {
        let visit = |p: &Path, f: &mut dyn FnMut(FileId, Meta) -> Result<()>| -> Result<Option<()>> {
            let Some(ids) = self.read_ids(p, true)? else { return Ok(None) };
            for (id, m) in ids {
                f(id, m.expect("asked for"))?;
            }
            Ok(Some(()))
        };
        if dir != Dir::Data {
            let p = self.root.join(dir.name());
            return match visit(&p, f)? {
                Some(()) => Ok(()),
                None if dir == Dir::Locks => Ok(()),
                None => Err(std::io::Error::from(std::io::ErrorKind::NotFound)).at(&p),
            };
        }
        for b in 0..=255u8 {
            visit(&self.root.join("data").join(crate::id::hex(&[b])), f)?;
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
        let local = Local::new(t.path());
        let b: &dyn Backend = &local;
        b.create_layout().unwrap();
        let id = FileId::of(b"hello");
        b.write(Dir::Snapshots, &id, b"hello").unwrap();
        assert_eq!(b.list(Dir::Snapshots).unwrap(), vec![id]);
        assert_eq!(b.read(Dir::Snapshots, &id, 5).unwrap(), b"hello");
        assert!(matches!(b.read(Dir::Snapshots, &id, 4), Err(Error::Corrupt { .. })));
        assert!(matches!(b.read(Dir::Index, &id, 5), Err(Error::NotFound { .. })));
        // Nothing is left in tmp/.
        assert_eq!(fs::read_dir(t.path().join("tmp")).unwrap().count(), 0);
        let pid = FileId::of(b"pack");
        b.write(Dir::Data, &pid, b"pack").unwrap();
        let mut seen = vec![];
        b.for_each_pack(|id, len| {
            seen.push((id, len));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(pid, 4)]);
        let mut buf = [0u8; 2];
        b.read_at(Dir::Data, &pid, 2, &mut buf).unwrap();
        assert_eq!(&buf, b"ck");
        let e = b.read_at(Dir::Data, &pid, 3, &mut buf).unwrap_err();
        assert!(matches!(e, Error::Io { ref err, .. } if err.kind() == std::io::ErrorKind::UnexpectedEof), "{e}");
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut b.reader(Dir::Data, &pid, 1).unwrap(), &mut rest).unwrap();
        assert_eq!(rest, b"ack");
        // A temp file dropped unstored is gone.
        let mut tmp = b.temp_file().unwrap();
        tmp.write_all(b"half").unwrap();
        let p = tmp.path().to_path_buf();
        drop(tmp);
        assert!(!p.exists());
        b.remove(Dir::Data, &pid).unwrap();
        assert_eq!(b.stat(Dir::Data, &pid).unwrap().map(|m| m.len), None);
    }
}
