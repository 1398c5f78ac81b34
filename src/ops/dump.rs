//! `dump`: one file's content, or a directory as a tar stream, to a writer (standard
//! output), so a file comes back without a mount or a restore target.
//!
//! A file is read chunk by chunk in order ([`ChunkIter`], each chunk read, verified and
//! written before the next), its length checked against the entry's size. A directory
//! is walked with the one snapshot walker and written as a POSIX tar stream (the `tar`
//! crate: GNU long-name records for paths over 100 bytes) with each entry's mode,
//! owner, mtime and symlink target; hard links are written as copies.
//!
//! Memory: one chunk (at most the largest chunk, 4 MiB by default), one tree node per
//! level being walked.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, IoContext, Result};
use crate::format::tree::{Content, Entry, Kind};
use crate::format::BlobKind;
use crate::repo::Repository;
use crate::sys;
use crate::tree::{ChunkIter, Step, Walk};

/// A file's content as a [`Read`]: one chunk held at a time; damage and a length that
/// is not the entry's are errors.
pub struct ContentReader<'r> {
    repo: &'r Repository,
    chunks: ChunkIter<&'r Repository>,
    chunk: Vec<u8>,
    at: usize,
    left: u64,
    path: PathBuf,
}

impl<'r> ContentReader<'r> {
    /// The content of the file at `path` (for errors) with entry `size`.
    pub fn new(repo: &'r Repository, content: &Content, size: u64, path: &Path) -> Result<ContentReader<'r>> {
        Ok(ContentReader {
            repo,
            chunks: ChunkIter::new(repo, content)?,
            chunk: Vec::new(),
            at: 0,
            left: size,
            path: path.to_path_buf(),
        })
    }

    fn refill(&mut self) -> Result<bool> {
        let Some(c) = self.chunks.next_chunk()? else {
            if self.left != 0 {
                return Err(Error::InvalidInput(format!(
                    "{}: the chunks end {} bytes before the file's size",
                    self.path.display(),
                    self.left
                )));
            }
            return Ok(false);
        };
        self.chunk = self.repo.read_blob(&c.id, BlobKind::Data)?;
        self.at = 0;
        if self.chunk.len() as u64 > self.left {
            return Err(Error::InvalidInput(format!(
                "{}: the chunks add up to more than its size",
                self.path.display()
            )));
        }
        self.left -= self.chunk.len() as u64;
        Ok(true)
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            if !self.refill().map_err(std::io::Error::other)? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Write `entry` (found at `path` in a snapshot) to `out`: a regular file's bytes, or
/// with a directory a tar stream of everything under it (paths relative to it). Returns
/// how many directories could not be read (reported to `damaged`; the stream goes on
/// without what is in them); a file that cannot be read ends the dump with an error.
pub fn dump(
    repo: &Repository,
    entry: &Entry,
    path: &Path,
    out: &mut dyn Write,
    cancel: &AtomicBool,
    damaged: &mut dyn FnMut(&Path, &Error),
) -> Result<u64> {
    let stdout = Path::new("<stdout>");
    match &entry.kind {
        Kind::File(c) => {
            let mut r = ContentReader::new(repo, c, entry.size, path)?;
            copy(&mut r, out, path, stdout)?;
            Ok(0)
        }
        Kind::Dir(tree) => {
            // Never dropped on an error: a dropped Builder writes the end-of-archive
            // blocks, and a stream cut short by damage or Ctrl-C would then read as
            // whole (or a file's missing tail as zeros). Only `into_inner` ends it.
            let mut tar = std::mem::ManuallyDrop::new(tar::Builder::new(out));
            tar.mode(tar::HeaderMode::Complete);
            let mut failed = 0;
            let mut walk = Walk::new(repo, tree, PathBuf::new());
            while let Some(step) = walk.next() {
                if cancel.load(Ordering::Relaxed) {
                    return Err(Error::Interrupted);
                }
                match step {
                    Step::Entry(e) => {
                        let Some(rel) = walk.top().map(|p| p.join(sys::os(&e.name))) else { continue };
                        // A file that cannot be read ends the dump: its header may be out
                        // already, and a tar stream cannot take a file back.
                        append(repo, &mut tar, &e, &rel, &path.join(&rel))?;
                        if let Kind::Dir(sub) = &e.kind {
                            walk.enter(sub, rel);
                        }
                    }
                    Step::Failed(rel, err) => {
                        failed += 1;
                        damaged(&path.join(rel), &err);
                    }
                    Step::Leave(_) | Step::Skipped(..) => {}
                }
            }
            std::mem::ManuallyDrop::into_inner(tar).into_inner().at(stdout)?.flush().at(stdout)?;
            Ok(failed)
        }
        _ => Err(Error::InvalidInput(format!("{}: neither a file nor a directory", path.display()))),
    }
}

/// Copy all of `r` (a snapshot's file at `path`) to `out`: a read error is the
/// repository's (damage, named by the reader), a write error standard output's.
fn copy(r: &mut ContentReader<'_>, out: &mut dyn Write, path: &Path, stdout: &Path) -> Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) => return Err(unwrap_io(e, path)),
        };
        out.write_all(&buf[..n]).at(stdout)?;
    }
}

/// The repository error a [`ContentReader`] wrapped into an I/O error, back.
fn unwrap_io(e: std::io::Error, path: &Path) -> Error {
    match e.into_inner().map(|inner| inner.downcast::<Error>()) {
        Some(Ok(err)) => *err,
        Some(Err(other)) => Error::InvalidInput(format!("{}: {other}", path.display())),
        None => Error::InvalidInput(format!("{}: read failed", path.display())),
    }
}

/// Append one entry to the tar stream. Errors writing the stream are `Error::Io` (on
/// `<stdout>`); anything else is damage of this entry, named.
fn append(repo: &Repository, tar: &mut tar::Builder<&mut dyn Write>, e: &Entry, rel: &Path, path: &Path) -> Result<()> {
    let stdout = Path::new("<stdout>");
    let mut h = tar::Header::new_gnu();
    h.set_mode(e.mode);
    h.set_uid(e.uid as u64);
    h.set_gid(e.gid as u64);
    h.set_mtime(e.mtime.sec.max(0) as u64);
    let _ = h.set_username(&String::from_utf8_lossy(&e.user));
    let _ = h.set_groupname(&String::from_utf8_lossy(&e.group));
    h.set_size(0);
    let data_err = |err: std::io::Error| Error::Io { path: stdout.to_path_buf(), err };
    match &e.kind {
        Kind::File(c) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(e.size);
            let r = ContentReader::new(repo, c, e.size, path)?;
            tar.append_data(&mut h, rel, r).map_err(|err| match err.get_ref() {
                Some(inner) if inner.is::<Error>() => unwrap_io(err, path),
                _ => data_err(err),
            })?;
            return Ok(());
        }
        Kind::Dir(_) => h.set_entry_type(tar::EntryType::Directory),
        Kind::Symlink(t) => {
            h.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut h, rel, Path::new(sys::os(t))).map_err(data_err)?;
            return Ok(());
        }
        Kind::Fifo => h.set_entry_type(tar::EntryType::Fifo),
        Kind::CharDev(rdev) | Kind::BlockDev(rdev) => {
            let t = if matches!(e.kind, Kind::CharDev(_)) { tar::EntryType::Char } else { tar::EntryType::Block };
            h.set_entry_type(t);
            let (major, minor) = (libc::major(*rdev), libc::minor(*rdev));
            let _ = h.set_device_major(major);
            let _ = h.set_device_minor(minor);
        }
        // tar has no sockets; restore skips them too.
        Kind::Socket => return Ok(()),
    }
    tar.append_data(&mut h, rel, std::io::empty()).map_err(data_err)
}
