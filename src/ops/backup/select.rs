//! What a backup leaves out under its sources (`--exclude` and its kin, restic's
//! options and meaning). Each rule costs only what it needs: patterns are matched on
//! the path before anything is stat'ed; size and device are read from the lstat the
//! walk makes anyway; a marker file costs one lstat per directory (and a read of its
//! first bytes when a header is asked for). Paths named as sources are always backed
//! up: a rule applies to what is found under them.
//!
//! Memory: the patterns, the markers and the sources' devices (a few per source).

use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::pattern::Patterns;

/// A file whose presence leaves its directory out: `--exclude-if-present NAME[:HEADER]`.
#[derive(Clone, Debug)]
pub struct Marker {
    /// The file's name (no `/`).
    pub name: OsString,
    /// If not empty, the file must start with these bytes.
    pub header: Vec<u8>,
}

impl Marker {
    /// Parse `NAME[:HEADER]`.
    pub fn parse(s: &str) -> Result<Marker, String> {
        let (name, header) = s.split_once(':').unwrap_or((s, ""));
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(format!("{s:?}: not a file name (NAME or NAME:HEADER)"));
        }
        Ok(Marker { name: name.into(), header: header.as_bytes().to_vec() })
    }

    /// The Cache Directory Tagging Specification's `CACHEDIR.TAG`
    /// (<https://bford.info/cachedir/>): `--exclude-caches`.
    pub fn cachedir_tag() -> Marker {
        Marker { name: "CACHEDIR.TAG".into(), header: b"Signature: 8a477f597d28d172789f06886806bc55".to_vec() }
    }

    /// Whether directory `dir` holds this marker: a regular file (not followed through
    /// a symlink) starting with the header.
    fn in_dir(&self, dir: &Path) -> bool {
        let path = dir.join(&self.name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else { return false };
        if !meta.is_file() {
            return false;
        }
        if self.header.is_empty() {
            return true;
        }
        let open = File::options().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&path);
        let mut head = Vec::with_capacity(self.header.len());
        match open {
            Ok(f) => f.take(self.header.len() as u64).read_to_end(&mut head).is_ok() && head == self.header,
            Err(_) => false,
        }
    }
}

/// What is left out of a backup.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Paths matching these patterns (`--exclude`, `--iexclude`, their files): never
    /// stat'ed, and a directory never listed.
    pub exclude: Patterns,
    /// Directories holding one of these files (`--exclude-if-present`,
    /// `--exclude-caches`): kept with that file alone in them, as restic keeps them.
    pub markers: Vec<Marker>,
    /// Regular files larger than this many bytes (`--exclude-larger-than`).
    pub larger_than: Option<u64>,
    /// Stay on the sources' filesystems (`--one-file-system`, `-x`): a directory on
    /// another one (a mount point) is kept, empty, as restic and borg keep it; any other
    /// entry of another filesystem (a bind-mounted file) is left out.
    pub one_file_system: bool,
}

/// What becomes of an entry once its metadata is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Back it up.
    Keep,
    /// Back up the directory, but not what is in it (another filesystem's root).
    KeepEmpty,
    /// Back up the directory with only marker file `markers[i]` in it.
    KeepMarker(usize),
    /// Leave it out.
    Drop,
}

impl Selection {
    /// Whether `path` is left out by name alone (before it is stat'ed).
    pub(super) fn excluded_by_name(&self, path: &Path) -> bool {
        self.exclude.matches(path)
    }

    /// The name of marker `i` (of a [`Verdict::KeepMarker`]).
    pub(super) fn marker_name(&self, i: usize) -> &std::ffi::OsStr {
        &self.markers[i].name
    }

    /// Whether every directory's [`Verdict`] is `Keep` whatever its `lstat` says (no
    /// `--one-file-system`, no markers): a directory can then be walked, and listed
    /// ahead, on its listing's entry type alone.
    pub(super) fn keeps_every_dir(&self) -> bool {
        self.markers.is_empty() && !self.one_file_system
    }

    /// What to do with `path`, stat'ed as `meta`, found under a source; `devices` are
    /// the sources' filesystems.
    pub(super) fn verdict(&self, path: &Path, meta: &Metadata, devices: &[u64]) -> Verdict {
        let other_fs = self.one_file_system && !devices.contains(&meta.dev());
        if meta.is_dir() {
            if let Some(i) = self.markers.iter().position(|m| m.in_dir(path)) {
                return Verdict::KeepMarker(i);
            }
            return if other_fs { Verdict::KeepEmpty } else { Verdict::Keep };
        }
        if other_fs || (meta.is_file() && self.larger_than.is_some_and(|max| meta.len() > max)) {
            return Verdict::Drop;
        }
        Verdict::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_parse_and_need_a_regular_file_with_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = Marker::parse(".nobackup").unwrap();
        assert!(m.header.is_empty());
        assert!(!m.in_dir(d));
        std::fs::write(d.join(".nobackup"), b"").unwrap();
        assert!(m.in_dir(d));

        let tag = Marker::cachedir_tag();
        std::fs::write(d.join("CACHEDIR.TAG"), b"Signature: 8a477f597d28d172789f06886806bc5").unwrap();
        assert!(!tag.in_dir(d), "a header one byte short is no tag");
        std::fs::write(d.join("CACHEDIR.TAG"), b"Signature: 8a477f597d28d172789f06886806bc55\n# cache").unwrap();
        assert!(tag.in_dir(d));
        std::fs::remove_file(d.join("CACHEDIR.TAG")).unwrap();
        std::os::unix::fs::symlink(d.join(".nobackup"), d.join("CACHEDIR.TAG")).unwrap();
        assert!(!tag.in_dir(d), "a symlink is not followed");

        let h = Marker::parse("TAG:abc:d").unwrap();
        assert_eq!((h.name.to_str().unwrap(), &h.header[..]), ("TAG", &b"abc:d"[..]));
        for bad in ["", ":x", "a/b", "..", "."] {
            assert!(Marker::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn verdicts_follow_size_device_and_markers() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("big"), vec![0u8; 2000]).unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        let big = std::fs::symlink_metadata(d.join("big")).unwrap();
        let sub = std::fs::symlink_metadata(d.join("sub")).unwrap();
        let dev = big.dev();
        let mut s = Selection { larger_than: Some(1999), ..Default::default() };
        assert_eq!(s.verdict(&d.join("big"), &big, &[dev]), Verdict::Drop);
        s.larger_than = Some(2000);
        assert_eq!(s.verdict(&d.join("big"), &big, &[dev]), Verdict::Keep);
        assert_eq!(s.verdict(&d.join("sub"), &sub, &[dev]), Verdict::Keep, "a directory has no size limit");
        s.one_file_system = true;
        assert_eq!(s.verdict(&d.join("sub"), &sub, &[dev + 1]), Verdict::KeepEmpty);
        assert_eq!(s.verdict(&d.join("big"), &big, &[dev + 1]), Verdict::Drop);
        s.markers.push(Marker::parse("x").unwrap());
        std::fs::write(d.join("sub/x"), b"").unwrap();
        assert_eq!(s.verdict(&d.join("sub"), &sub, &[dev]), Verdict::KeepMarker(0));
    }
}
