//! `ls`: list entries of a snapshot, like `ls -l`, optionally recursively, through the
//! one snapshot walker ([`Walk`]).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::tree::{Entry, Kind};
use crate::ops::restore::resolve;
use crate::repo::Repository;
use crate::sys;
use crate::tree::{Step, Walk};

/// Call `f` with each entry under `path` in the snapshot rooted at `root` (the entry itself
/// if it is not a directory), in name order; `recursive` descends into subdirectories.
/// A directory that cannot be read (damaged, missing) goes to `failed` with its path and
/// the listing goes on, as restore does; returns how many failed.
pub fn list(
    repo: &Repository,
    root: &crate::id::BlobId,
    path: &Path,
    recursive: bool,
    f: &mut dyn FnMut(&Path, &Entry),
    failed: &mut dyn FnMut(&Path, &Error),
) -> Result<u64> {
    let e = resolve(repo, root, path)?;
    let top = Path::new("/").join(path);
    let Kind::Dir(id) = &e.kind else {
        f(&top, &e);
        return Ok(0);
    };
    let mut errors = 0;
    let mut walk = Walk::new(repo, id, top);
    while let Some(step) = walk.next() {
        match step {
            Step::Entry(e) => {
                let Some(dir) = walk.top() else { continue };
                let p: PathBuf = dir.join(sys::os(&e.name));
                f(&p, &e);
                if let (true, Kind::Dir(sub)) = (recursive, &e.kind) {
                    walk.enter(sub, p);
                }
            }
            Step::Leave(_) => {}
            Step::Failed(p, e) => {
                errors += 1;
                failed(&p, &e);
            }
            Step::Skipped(e, _) => {
                errors += 1;
                failed(walk.top().map_or(Path::new("/"), |p| p.as_path()), &e);
            }
        }
    }
    Ok(errors)
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
