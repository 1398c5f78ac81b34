//! `ls`: list entries of a snapshot, like `ls -l`, optionally recursively.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::format::tree::{Entry, Kind};
use crate::repo::Repository;
use crate::restore::resolve;
use crate::sys;
use crate::tree::{DirIter, MAX_DIR_NESTING};

/// Call `f` with each entry under `path` in the snapshot rooted at `root` (the entry itself
/// if it is not a directory), in name order; `recursive` descends into subdirectories.
pub fn list(
    repo: &Repository,
    root: &crate::id::BlobId,
    path: &Path,
    recursive: bool,
    f: &mut dyn FnMut(&Path, &Entry),
) -> Result<()> {
    let e = resolve(repo, root, path)?;
    match &e.kind {
        Kind::Dir(id) => walk(repo, id, &Path::new("/").join(path), recursive, f),
        _ => {
            f(&Path::new("/").join(path), &e);
            Ok(())
        }
    }
}

/// Iterative, one directory iterator per level of nesting, so no depth can overflow
/// the stack; deeper than [`MAX_DIR_NESTING`] is refused as damage.
fn walk(
    repo: &Repository,
    dir: &crate::id::BlobId,
    path: &Path,
    recursive: bool,
    f: &mut dyn FnMut(&Path, &Entry),
) -> Result<()> {
    let mut levels = vec![(DirIter::new(repo, dir)?, path.to_path_buf())];
    while let Some((it, path)) = levels.last_mut() {
        let Some(e) = it.next_entry()? else {
            levels.pop();
            continue;
        };
        let p: PathBuf = path.join(sys::os(&e.name));
        f(&p, &e);
        if let (true, Kind::Dir(sub)) = (recursive, &e.kind) {
            if levels.len() >= MAX_DIR_NESTING {
                return Err(crate::tree::too_deep(sub));
            }
            levels.push((DirIter::new(repo, sub)?, p));
        }
    }
    Ok(())
}

/// `ls -l` style mode string, e.g. `drwxr-xr-x`.
pub fn mode_string(e: &Entry) -> String {
    let t = match e.kind {
        Kind::File(_) => '-',
        Kind::Dir(_) => 'd',
        Kind::Symlink(_) => 'l',
        Kind::Fifo => 'p',
        Kind::CharDev(_) => 'c',
        Kind::BlockDev(_) => 'b',
        Kind::Socket => 's',
    };
    let m = e.mode;
    let bit = |b: u32, c: char| if m & b != 0 { c } else { '-' };
    let special = |x: bool, s: bool, lower: char, upper: char| match (x, s) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(special(m & 0o100 != 0, m & 0o4000 != 0, 's', 'S'));
    s.push(bit(0o40, 'r'));
    s.push(bit(0o20, 'w'));
    s.push(special(m & 0o10 != 0, m & 0o2000 != 0, 's', 'S'));
    s.push(bit(0o4, 'r'));
    s.push(bit(0o2, 'w'));
    s.push(special(m & 0o1 != 0, m & 0o1000 != 0, 't', 'T'));
    s
}
