//! Loading small files ahead of a process that copies a directory (`cp -a`, `rsync`,
//! `tar`), told apart from one that only lists or reads one file.

use super::*;

/// Files loaded ahead of a reader going through a directory, per request.
pub(super) const SIBLINGS: u64 = 32;

/// Processes remembered as reading files (see [`Vfs::note_reader`]).
pub(super) const READERS: usize = 16;

/// How long a process counts as reading files after its last first read of one.
pub(super) const READER_TTL: Duration = Duration::from_secs(2);

impl Vfs {
    /// A copier starts file `ino`: have the small files after it in its directory
    /// loaded ahead (once per stretch of [`SIBLINGS`] entries), as `cp -a`, `rsync` and
    /// `tar` read them next. This spreads decryption over the prefetch threads the way
    /// restore's workers do; without it a copy of many small files decrypts on one thread.
    pub(super) fn read_siblings_ahead(&self, ino: u64) {
        let Some((dir, pos)) = self.inodes.lock().unwrap_or_else(|e| e.into_inner()).locate(ino) else { return };
        // `ino` is `pos` in its directory's block (a hard link's is its first link's).
        self.files_ahead(dir, ino - pos, pos + 1);
    }

    /// Process `pid` reads file `ino` from its start. If it started another file within
    /// [`READER_TTL`], it copies files (`cp -a`, `rsync`, `tar`): the small files after
    /// this one in its directory are loaded ahead ([`Vfs::read_siblings_ahead`]). A
    /// process reading one file (`cat`, a player) gets none: they would only take its
    /// bandwidth, on a remote repository most of all.
    pub fn starts_file(&self, ino: u64, pid: u32) {
        let copying = self.is_reader(pid);
        self.note_reader(pid);
        if copying {
            self.read_siblings_ahead(ino);
        }
    }

    /// Process `pid` read a file from its start: the directories it lists from now on
    /// get their first small files loaded ahead at once ([`Vfs::listed_by`]). Remembered
    /// for the [`READERS`] most recent processes, for [`READER_TTL`]; a process that only
    /// lists (`ls -lR`, `find`) never loads any data.
    pub fn note_reader(&self, pid: u32) {
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).put(pid, std::time::Instant::now());
    }

    /// Process `pid` starts listing directory `ino`: if that process reads files (see
    /// [`Vfs::note_reader`]), load the directory's first small files ahead of it. Without
    /// this, its first few files would each wait for a read: the files after a file
    /// start loading only when that file is read.
    pub fn listed_by(&self, ino: u64, pid: u32) {
        if !self.is_reader(pid) {
            return;
        }
        if let Ok(node) = self.node(ino) {
            if let Ok(base) = self.base(ino, &node) {
                self.files_ahead(ino, base, 0);
            }
        }
    }

    /// Whether process `pid` has been reading files (see [`Vfs::note_reader`]); if so,
    /// it counts as reading for [`READER_TTL`] from now.
    pub(super) fn is_reader(&self, pid: u32) -> bool {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        match readers.get_mut(&pid) {
            Some(t) if t.elapsed() < READER_TTL => {
                *t = std::time::Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Have the small files of directory `dir` (inodes from `base`) loaded ahead from
    /// position `next`, unless that is done already well past it.
    pub(super) fn files_ahead(&self, dir: u64, base: u64, next: u64) {
        let from = {
            let mut marks = self.siblings.lock().unwrap_or_else(|e| e.into_inner());
            let mark = marks.get(&dir).copied().unwrap_or(0);
            if mark > next + SIBLINGS / 2 {
                return; // well ahead of this reader already
            }
            let from = mark.max(next);
            marks.put(dir, from + SIBLINGS);
            from
        };
        if let Ok(Node::Entry { entry, .. }) = self.node(dir) {
            if let Kind::Dir(tree) = &entry.kind {
                self.prefetch.request(Job::Siblings { tree: *tree, base, from, count: SIBLINGS, bytes: self.window });
            }
        }
    }
}
