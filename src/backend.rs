//! Storage: the named files of a repository, behind one interface ([`Backend`]) with
//! one implementation per kind of store: a local directory ([`Local`]) today. Nothing
//! above this module touches the repository's files another way, and nothing here knows
//! about encryption or formats.
//!
//! Layout (docs/format.md, "Repository layout"): `config`, `keys/<id>`, `data/<xx>/<id>`,
//! `index/<id>`, `snapshots/<id>`, `locks/<id>`, and `tmp/` for a local repository's
//! files being written.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::id::FileId;

mod cache;
mod local;
pub mod s3;

pub use cache::Cached;
pub use local::{host_tag, sync_dir, Local};
pub use s3::{S3Env, S3Url, Traffic, S3};

/// The backend for a repository location: an `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]`
/// URL (credentials from `s3`; files being written wait in `spool`) or a local path.
pub fn open(location: &Path, s3: &S3Env, spool: Option<&Path>) -> Result<Box<dyn Backend>> {
    match location.to_str().and_then(S3Url::parse) {
        Some(url) => Ok(Box::new(S3::new(&url?, s3, spool)?)),
        None => Ok(Box::new(Local::new(location))),
    }
}

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
    /// The directory's name in the layout.
    pub fn name(self) -> &'static str {
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

    /// The file's path relative to the repository's root: `data/<xx>/<id>` for packs,
    /// `<dir>/<id>` for the rest.
    pub fn key(self, id: &FileId) -> String {
        match self {
            Dir::Data => format!("data/{}/{}", crate::id::hex(&id.0[..1]), id.to_hex()),
            _ => format!("{}/{}", self.name(), id.to_hex()),
        }
    }
}

/// What a listing says about one file, to notice that it changed without reading it.
/// A file cairn wrote is never modified, so a different stamp means it was damaged,
/// replaced or copied (the local index cache then checks its content again). Each
/// backend says what it hashes ([`Local`]: length, mtime and ctime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stamp(pub u64);

impl Stamp {
    /// A stamp from the values that identify a version of a file.
    pub fn of_values(values: &[u64]) -> Stamp {
        let mut h = blake3::Hasher::new();
        for v in values {
            h.update(&v.to_le_bytes());
        }
        Stamp(u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes")))
    }
}

/// One file's length, stamp and modification time.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    /// Length in bytes.
    pub len: u64,
    /// See [`Stamp`].
    pub stamp: Stamp,
    /// When it was last written, where the store says.
    pub modified: Option<SystemTime>,
}

/// A file being written, to be stored under its name by [`Backend::store`] once
/// complete (packs: their name is the hash of their content). Dropped without being
/// stored, it is removed.
pub struct TempFile {
    path: PathBuf,
    out: Option<DirectWriter>,
}

impl TempFile {
    /// Take over an open, empty file at `path` (buffered: 1 MiB). `direct`: each full
    /// MiB is written past the page cache ([`DirectWriter`]).
    fn new(path: PathBuf, f: std::fs::File, direct: bool) -> TempFile {
        TempFile { path, out: Some(DirectWriter::new(f, direct)) }
    }

    /// Where it is (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `b` at the end.
    pub fn write_all(&mut self, b: &[u8]) -> Result<()> {
        use crate::error::IoContext;
        self.out.as_mut().expect("open until stored").write_all(b).at(&self.path)
    }

    /// Write out what is buffered (the file stays open for more).
    pub fn flush(&mut self) -> Result<()> {
        use crate::error::IoContext;
        self.out.as_mut().expect("open until stored").flush().at(&self.path)
    }

    /// Close the file and leave it where it is, as a killed writer does (for tests).
    #[cfg(test)]
    pub fn abandon(mut self) -> PathBuf {
        drop(self.out.take());
        std::mem::take(&mut self.path)
    }

    /// Flush and fsync; the file (closed) is then the caller's to rename or upload.
    fn finish(mut self) -> Result<PathBuf> {
        use crate::error::IoContext;
        let out = self.out.take().expect("open until stored");
        let r = out.finish().and_then(|f| f.sync_all()).at(&self.path);
        let path = std::mem::take(&mut self.path);
        match r {
            Ok(()) => Ok(path),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }
}

/// A file written in blocks of [`DirectWriter::BLOCK`]: with `O_DIRECT` each full block
/// goes from this buffer to the device, past the page cache. A backup writes its packs
/// once and reads them back rarely, so caching them only evicts what the user had
/// cached; and on a VM, putting each written page in the page cache was most of the
/// cost of writing (`dd` of 2 GB to a new file: 5.2 s of system time here, 0.2 s with
/// `O_DIRECT`). The tail, and everything on a filesystem that refuses `O_DIRECT`
/// (tmpfs, some FUSE), is written through the page cache. Costs one block of RAM.
struct DirectWriter {
    file: std::fs::File,
    /// `BLOCK` + `ALIGN` bytes: the block is the aligned part, from `start`.
    buf: Vec<u8>,
    start: usize,
    /// Bytes in the block.
    len: usize,
    /// `O_DIRECT` is on.
    direct: bool,
}

impl DirectWriter {
    const BLOCK: usize = 1 << 20;
    /// Alignment of the buffer, the offsets and the lengths (the largest logical block
    /// size of common devices).
    const ALIGN: usize = 4096;

    fn new(file: std::fs::File, direct: bool) -> DirectWriter {
        let buf = vec![0u8; Self::BLOCK + Self::ALIGN];
        let start = buf.as_ptr().align_offset(Self::ALIGN);
        let direct = direct && crate::sys::set_direct(&file, true).is_ok();
        DirectWriter { file, buf, start, len: 0, direct }
    }

    fn write_all(&mut self, mut b: &[u8]) -> std::io::Result<()> {
        while !b.is_empty() {
            let n = b.len().min(Self::BLOCK - self.len);
            self.buf[self.start + self.len..self.start + self.len + n].copy_from_slice(&b[..n]);
            self.len += n;
            b = &b[n..];
            if self.len == Self::BLOCK {
                self.write_block()?;
            }
        }
        Ok(())
    }

    /// Write out the block: direct if whole (aligned); otherwise, and wherever direct
    /// writes fail as unsupported, through the page cache from then on.
    fn write_block(&mut self) -> std::io::Result<()> {
        if self.direct && !self.len.is_multiple_of(Self::ALIGN) {
            crate::sys::set_direct(&self.file, false)?;
            self.direct = false;
        }
        let mut done = 0;
        while done < self.len {
            match (&self.file).write(&self.buf[self.start + done..self.start + self.len]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // A refused direct write writes nothing: go on through the page cache
                // (a short write left the offset unaligned, or the filesystem refuses).
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    crate::sys::set_direct(&self.file, false)?;
                    self.direct = false;
                }
                Err(e) => return Err(e),
            }
        }
        self.len = 0;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.len > 0 {
            self.write_block()?;
        }
        Ok(())
    }

    /// Write out the rest; the file, to be synced.
    fn finish(mut self) -> std::io::Result<std::fs::File> {
        self.flush()?;
        Ok(self.file)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where a repository's files live. Implementations are safe to share between threads.
/// Every write is atomic: a file is either absent or complete under its name, and a
/// stored file stays stored after a crash.
pub trait Backend: Send + Sync {
    /// The repository's location as the user gave it (a path or URL), for messages.
    fn root(&self) -> &Path;

    /// Where file `id` of `dir` is, for messages and tests: the root joined with the
    /// file's key (a path, or the object's URL).
    fn path(&self, dir: Dir, id: &FileId) -> PathBuf {
        self.root().join(dir.key(id))
    }

    /// Whether requests leave this machine (reads are worth caching, requests worth
    /// running several at a time).
    fn is_remote(&self) -> bool {
        false
    }

    /// Create the layout (for `init`).
    fn create_layout(&self) -> Result<()>;

    /// Is there a config (a repository) here?
    fn has_config(&self) -> Result<bool>;

    /// Read the config; `None` if there is none (not a repository). Refuses more than
    /// `max_len` bytes before reading them.
    fn read_config(&self, max_len: u64) -> Result<Option<Vec<u8>>>;

    /// Write the config, atomically replacing the old one.
    fn write_config(&self, bytes: &[u8]) -> Result<()>;

    /// Read the whole file `id` of `dir`, refusing one larger than `max_len` bytes (the
    /// format's limit for its kind) before reading it. A missing file is
    /// [`Error::NotFound`].
    fn read(&self, dir: Dir, id: &FileId, max_len: u64) -> Result<Vec<u8>>;

    /// Read `buf.len()` bytes at `offset` of file `id` of `dir`. A range past the end
    /// is an [`Error::Io`] of kind `UnexpectedEof`.
    fn read_at(&self, dir: Dir, id: &FileId, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// [`Backend::read_at`] of a range its caller planned (neighbouring blobs it wants,
    /// coalesced; see [`crate::repo::plan`]): exactly these bytes, no read-ahead.
    fn read_planned(&self, dir: Dir, id: &FileId, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_at(dir, id, offset, buf)
    }

    /// How many requests are worth having in flight at once (`--connections` for a
    /// remote store; 1 for a local one, whose reads the page cache and readahead serve).
    fn connections(&self) -> usize {
        1
    }

    /// [`Backend::read_at`] of a file that will be read again and again (a pack of tree
    /// blobs): a remote backend may keep a local copy of the whole file ([`Cached`]).
    fn read_at_kept(&self, dir: Dir, id: &FileId, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_at(dir, id, offset, buf)
    }

    /// Read file `id` of `dir` from `offset` to its end as a stream (one request).
    fn reader(&self, dir: Dir, id: &FileId, offset: u64) -> Result<Box<dyn std::io::Read + Send>>;

    /// Length, stamp and time of file `id` of `dir`; `None` if it does not exist.
    fn stat(&self, dir: Dir, id: &FileId) -> Result<Option<Meta>>;

    /// A new temp file for a writer that streams ([`Backend::store`] gives it its name).
    fn temp_file(&self) -> Result<TempFile>;

    /// Store the finished `tmp` as file `id` of `dir`, durably. An existing file of that
    /// name is replaced (names are content hashes: its content is the same). On failure
    /// the temp file is removed.
    fn store(&self, dir: Dir, id: &FileId, tmp: TempFile) -> Result<()>;

    /// [`Backend::store`] that may return before the file is stored: a remote backend
    /// uploads it in the background while the caller goes on. Only after
    /// [`Backend::wait_stored`] returns is it durable (an index file may name a pack only
    /// then). `keep`: the file will be read again and again (a pack of tree blobs; see
    /// [`Backend::read_at_kept`]).
    fn store_later(&self, dir: Dir, id: &FileId, tmp: TempFile, keep: bool) -> Result<()> {
        let _ = keep;
        self.store(dir, id, tmp)
    }

    /// Wait until every [`Backend::store_later`] so far has finished; the first that
    /// failed since the last call is the error.
    fn wait_stored(&self) -> Result<()> {
        Ok(())
    }

    /// Ids of the files in `dir`, ascending, skipping names that are not ids.
    fn list(&self, dir: Dir) -> Result<Vec<FileId>>;

    /// Visit every file of `dir` with its [`Meta`], in ascending id order; one part of
    /// the listing in memory at a time (packs: one `data/<xx>` directory). A file removed
    /// meanwhile is left out.
    fn for_each(&self, dir: Dir, f: &mut dyn FnMut(FileId, Meta) -> Result<()>) -> Result<()>;

    /// Remove file `id` of `dir`, durably; a missing file is not an error.
    fn remove(&self, dir: Dir, id: &FileId) -> Result<()>;

    /// Files being written or left by writers (count, bytes), for `check`'s note.
    fn temp_usage(&self) -> Result<(u64, u64)>;

    /// Remove temp files no running writer owns; returns how many files and bytes.
    fn remove_stale_temps(&self) -> Result<(u64, u64)>;
}

impl dyn Backend + '_ {
    /// Write `bytes` as file `id` of `dir`, atomically and durably.
    pub fn write(&self, dir: Dir, id: &FileId, bytes: &[u8]) -> Result<()> {
        let mut t = self.temp_file()?;
        t.write_all(bytes)?;
        self.store(dir, id, t)
    }

    /// [`Backend::list`] with each file's [`Stamp`].
    pub fn list_stamped(&self, dir: Dir) -> Result<Vec<(FileId, Stamp)>> {
        let mut out = Vec::new();
        self.for_each(dir, &mut |id, m| {
            out.push((id, m.stamp));
            Ok(())
        })?;
        Ok(out)
    }

    /// The [`Stamp`] of file `id` of `dir` (which must exist).
    pub fn stamp(&self, dir: Dir, id: &FileId) -> Result<Stamp> {
        match self.stat(dir, id)? {
            Some(m) => Ok(m.stamp),
            None => Err(Error::NotFound { what: dir.what(), id: id.to_string() }),
        }
    }

    /// The length of file `id` of `dir`, `None` if it does not exist.
    pub fn file_len(&self, dir: Dir, id: &FileId) -> Result<Option<u64>> {
        Ok(self.stat(dir, id)?.map(|m| m.len))
    }

    /// Visit every pack with its size, in id order.
    pub fn for_each_pack(&self, mut f: impl FnMut(FileId, u64) -> Result<()>) -> Result<()> {
        self.for_each(Dir::Data, &mut |id, m| f(id, m.len))
    }
}

#[cfg(test)]
mod tests {
    use super::DirectWriter;

    /// Whatever the write sizes, and whether the filesystem takes `O_DIRECT` or not, the
    /// file holds what was written: whole blocks, a tail, a flush mid-block.
    #[test]
    fn a_direct_writer_writes_exactly_what_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let block = DirectWriter::BLOCK;
        let mut r = 7u64;
        let mut next = move || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r
        };
        for (i, total) in [0, 1, 4095, 4096, block - 1, block, block + 1, 3 * block + 12_345].into_iter().enumerate() {
            for flush_at in [None, Some(total / 2)] {
                let path = dir.path().join(format!("f{i}-{flush_at:?}"));
                let data: Vec<u8> = (0..total).map(|_| next() as u8).collect();
                let mut w = DirectWriter::new(std::fs::File::create(&path).unwrap(), true);
                let mut at = 0;
                while at < total {
                    let mut n = (next() as usize % 300_000).clamp(1, total - at);
                    if let Some(f) = flush_at.filter(|&f| at < f) {
                        n = n.min(f - at);
                    }
                    w.write_all(&data[at..at + n]).unwrap();
                    at += n;
                    if flush_at == Some(at) {
                        w.flush().unwrap();
                    }
                }
                w.finish().unwrap().sync_all().unwrap();
                assert!(std::fs::read(&path).unwrap() == data, "{total} bytes, flushed at {flush_at:?}");
            }
        }
    }
}
