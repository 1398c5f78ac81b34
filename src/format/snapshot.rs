//! Snapshots (docs/format.md, "Snapshots"): one sealed file per backup naming its root tree.

use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use super::{Put, Reader};
use crate::error::Result;
use crate::id::{BlobId, FileId};

/// Counters recorded by `backup`; also its printed summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Regular files not in the parent snapshot.
    pub files_new: u64,
    /// Regular files in the parent whose metadata changed (re-read).
    pub files_changed: u64,
    /// Regular files whose chunk list was reused without reading them.
    pub files_unchanged: u64,
    /// Directories.
    pub dirs: u64,
    /// Entries of other kinds (symlinks, devices, fifos, sockets).
    pub others: u64,
    /// Bytes of all regular files in the snapshot.
    pub total_bytes: u64,
    /// Bytes actually read from the sources.
    pub bytes_read: u64,
    /// Bytes added to the repository (sealed, after dedup and compression).
    pub bytes_added: u64,
    /// Blobs added to the repository.
    pub blobs_added: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Peak resident memory of the process in bytes.
    pub peak_rss: u64,
    /// Sources that could not be read, or changed while read.
    pub warnings: u64,
}

/// Number of u64 counters in [`Summary`], as encoded.
const SUMMARY_FIELDS: usize = 12;

impl Summary {
    fn fields(&self) -> [u64; SUMMARY_FIELDS] {
        [
            self.files_new,
            self.files_changed,
            self.files_unchanged,
            self.dirs,
            self.others,
            self.total_bytes,
            self.bytes_read,
            self.bytes_added,
            self.blobs_added,
            self.duration_ms,
            self.peak_rss,
            self.warnings,
        ]
    }

    fn from_fields(f: [u64; SUMMARY_FIELDS]) -> Summary {
        Summary {
            files_new: f[0],
            files_changed: f[1],
            files_unchanged: f[2],
            dirs: f[3],
            others: f[4],
            total_bytes: f[5],
            bytes_read: f[6],
            bytes_added: f[7],
            blobs_added: f[8],
            duration_ms: f[9],
            peak_rss: f[10],
            warnings: f[11],
        }
    }

    /// Regular files in the snapshot.
    pub fn files(&self) -> u64 {
        self.files_new.saturating_add(self.files_changed).saturating_add(self.files_unchanged)
    }
}

/// Which classes of extended attribute names occur anywhere in a snapshot's tree, as a
/// bit set (docs/format.md, section 12): a reader can answer for an absent class without
/// reading any tree, and for a snapshot with none at all without asking at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XattrClasses(u8);

impl XattrClasses {
    /// No extended attributes.
    pub const NONE: XattrClasses = XattrClasses(0);
    /// Every class: what a reader must assume of a version-1 snapshot, which does not say.
    pub const ALL: XattrClasses = XattrClasses(0b1_1111);

    /// The class of one attribute name: `user.`, `trusted.`, `security.`, `system.`
    /// (POSIX ACLs among them) or anything else.
    pub fn of(name: &[u8]) -> XattrClasses {
        let bit = [&b"user."[..], b"trusted.", b"security.", b"system."]
            .iter()
            .position(|p| name.starts_with(p))
            .unwrap_or(4);
        XattrClasses(1 << bit)
    }

    /// Both sets.
    pub fn union(self, other: XattrClasses) -> XattrClasses {
        XattrClasses(self.0 | other.0)
    }

    /// Whether every class of `other` is in this set.
    pub fn contains(self, other: XattrClasses) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Most distinct extended attribute names a snapshot lists (docs/format.md, section
/// 12); a tree with more records only their classes.
pub const MAX_XATTR_NAMES: usize = 32;

/// A snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Start of the backup, Unix nanoseconds.
    pub time_ns: i64,
    /// Host name.
    pub host: String,
    /// User name.
    pub user: String,
    /// The absolute source paths given to `backup`.
    pub paths: Vec<PathBuf>,
    /// Tags.
    pub tags: Vec<String>,
    /// The snapshot used for change detection, if any.
    pub parent: Option<FileId>,
    /// Root tree: a directory holding the source paths at their absolute locations.
    pub root: BlobId,
    /// The cairn version that wrote it.
    pub program: String,
    /// Counters.
    pub summary: Summary,
    /// The classes of extended attributes in the tree; `None` for a version-1 snapshot,
    /// which does not record them.
    pub xattrs: Option<XattrClasses>,
    /// The distinct extended attribute names in the tree, sorted, when there are at most
    /// [`MAX_XATTR_NAMES`]; `None` when there are more, or for a snapshot of version 1
    /// or 2, which does not record them. Readers answer for an absent name without
    /// reading the tree (`ls -l` asks for `security.selinux` on every file).
    pub xattr_names: Option<Vec<Vec<u8>>>,
}

impl Snapshot {
    /// Encode the plaintext payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(256);
        v.i64(self.time_ns);
        v.bytes16(self.host.as_bytes());
        v.bytes16(self.user.as_bytes());
        v.u16(self.paths.len() as u16);
        for p in &self.paths {
            v.bytes16(p.as_os_str().as_bytes());
        }
        v.u16(self.tags.len() as u16);
        for t in &self.tags {
            v.bytes16(t.as_bytes());
        }
        match &self.parent {
            Some(p) => {
                v.u8(1);
                v.raw(&p.0);
            }
            None => v.u8(0),
        }
        v.raw(&self.root.0);
        v.bytes16(self.program.as_bytes());
        v.u8(SUMMARY_FIELDS as u8);
        for f in self.summary.fields() {
            v.u64(f);
        }
        // Written at version 3; a snapshot decoded from an older version is written
        // again (by `tag`) as holding every class, or its classes, and no names.
        v.u8(self.xattrs.unwrap_or(XattrClasses::ALL).0);
        match &self.xattr_names {
            Some(names) if self.xattrs.is_some() && names.len() <= MAX_XATTR_NAMES => {
                v.u8(names.len() as u8);
                for n in names {
                    v.bytes8(n);
                }
            }
            _ => v.u8(NAMES_UNKNOWN),
        }
        v
    }

    /// Decode the plaintext payload of a file of `version` (1 to 3: the file header's).
    pub fn decode(bytes: &[u8], version: u8, id: &FileId) -> Result<Snapshot> {
        let mut r = Reader::new(bytes, "snapshot", id);
        let time_ns = r.i64()?;
        let host = r.str16()?;
        let user = r.str16()?;
        let np = r.count16(2)?;
        let mut paths = Vec::with_capacity(np);
        for _ in 0..np {
            paths.push(PathBuf::from(std::ffi::OsString::from_vec(r.bytes16()?.to_vec())));
        }
        let nt = r.count16(2)?;
        let mut tags = Vec::with_capacity(nt);
        for _ in 0..nt {
            tags.push(r.str16()?);
        }
        let parent = match r.u8()? {
            0 => None,
            1 => Some(FileId(r.id32()?)),
            x => return Err(r.err(format!("bad parent flag {x}"))),
        };
        let root = BlobId(r.id32()?);
        let program = r.str16()?;
        let nf = r.u8()? as usize;
        if nf != SUMMARY_FIELDS {
            return Err(r.err(format!("summary has {nf} fields, expected {SUMMARY_FIELDS}")));
        }
        let mut f = [0u64; SUMMARY_FIELDS];
        for x in f.iter_mut() {
            *x = r.u64()?;
        }
        let xattrs = match version {
            1 => None,
            _ => match r.u8()? {
                b if b & !XattrClasses::ALL.0 != 0 => return Err(r.err(format!("unknown xattr classes {b:#04x}"))),
                b => Some(XattrClasses(b)),
            },
        };
        let xattr_names = match (version, xattrs) {
            (3.., Some(classes)) => match r.u8()? {
                NAMES_UNKNOWN => None,
                n if n as usize > MAX_XATTR_NAMES => return Err(r.err(format!("{n} xattr names listed"))),
                n => {
                    let mut names: Vec<Vec<u8>> = Vec::with_capacity(n as usize);
                    let mut seen = XattrClasses::NONE;
                    for _ in 0..n {
                        let name = r.bytes8()?.to_vec();
                        if name.is_empty() || names.last().is_some_and(|l| *l >= name) {
                            return Err(r.err("xattr names not distinct, non-empty and sorted"));
                        }
                        seen = seen.union(XattrClasses::of(&name));
                        names.push(name);
                    }
                    // Both are exact: the names' classes are the classes.
                    if seen != classes {
                        return Err(r.err("xattr names disagree with the xattr classes"));
                    }
                    Some(names)
                }
            },
            _ => None,
        };
        r.finish()?;
        Ok(Snapshot {
            time_ns,
            host,
            user,
            paths,
            tags,
            parent,
            root,
            program,
            summary: Summary::from_fields(f),
            xattrs,
            xattr_names,
        })
    }
}

/// The names byte of a snapshot that does not list its xattr names.
const NAMES_UNKNOWN: u8 = 0xFF;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn roundtrip(host in ".{0,10}", tags in proptest::collection::vec("[a-z]{1,8}", 0..4), paths in proptest::collection::vec("/[a-z/]{0,20}", 0..4), parent in any::<Option<[u8; 4]>>(), n in any::<u64>(), names in proptest::collection::btree_set("(user|security|system|trusted|x)\\.[a-z]{0,6}", 0..6), listed in any::<bool>()) {
            let names: Vec<Vec<u8>> = names.into_iter().map(String::into_bytes).collect();
            let classes = names.iter().fold(XattrClasses::NONE, |c, n| c.union(XattrClasses::of(n)));
            let s = Snapshot {
                time_ns: n as i64, host, user: "me".into(), paths: paths.into_iter().map(PathBuf::from).collect(), tags,
                parent: parent.map(|p| FileId([p[0]; 32])), root: BlobId([9; 32]), program: "cairn 0.1".into(),
                summary: Summary { files_new: n, bytes_added: n / 2, ..Summary::default() },
                xattrs: Some(classes),
                xattr_names: listed.then_some(names.clone()),
            };
            let v3 = s.encode();
            prop_assert_eq!(Snapshot::decode(&v3, 3, &FileId::default()).unwrap(), s.clone());
            // Version 2 ends with the classes byte; version 1 has no xattr byte at all.
            let names_len = if listed { 1 + names.iter().map(|n| 1 + n.len()).sum::<usize>() } else { 1 };
            let v2 = &v3[..v3.len() - names_len];
            let old = Snapshot::decode(v2, 2, &FileId::default()).unwrap();
            prop_assert_eq!(old, Snapshot { xattr_names: None, ..s.clone() });
            let old = Snapshot::decode(&v2[..v2.len() - 1], 1, &FileId::default()).unwrap();
            prop_assert_eq!(old, Snapshot { xattrs: None, xattr_names: None, ..s });
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), version in 1u8..4) {
            let _ = Snapshot::decode(&bytes, version, &FileId::default());
        }
    }
}

#[cfg(test)]
mod xattr_tests {
    use super::*;

    #[test]
    fn names_fall_into_their_classes() {
        let acl = XattrClasses::of(b"system.posix_acl_access");
        assert_eq!(acl, XattrClasses::of(b"system.posix_acl_default"));
        let all = [&b"user.x"[..], b"trusted.overlay.opaque", b"security.selinux", b"system.nfs4_acl", b"odd"];
        let mut set = XattrClasses::NONE;
        for (i, n) in all.iter().enumerate() {
            let c = XattrClasses::of(n);
            assert!(!set.contains(c), "{} shares a class with an earlier name", i);
            set = set.union(c);
        }
        assert_eq!(set, XattrClasses::ALL);
        assert!(XattrClasses::NONE.is_empty() && !acl.is_empty());
        assert!(!XattrClasses::of(b"user.a").contains(acl));
        // A reserved bit is corrupt, not ignored.
        let s = Snapshot {
            time_ns: 0,
            host: "h".into(),
            user: "u".into(),
            paths: vec![],
            tags: vec![],
            parent: None,
            root: BlobId([1; 32]),
            program: "p".into(),
            summary: Summary::default(),
            xattrs: Some(XattrClasses::NONE),
            xattr_names: None,
        };
        let mut b = s.encode();
        b.pop();
        *b.last_mut().unwrap() = 0x20;
        assert!(matches!(Snapshot::decode(&b, 2, &FileId::default()), Err(crate::error::Error::Corrupt { .. })));
        // Names that are not sorted, or disagree with the classes, are corrupt too.
        let bad = |names: &[&[u8]], classes: XattrClasses| {
            let names = Some(names.iter().map(|n| n.to_vec()).collect());
            let b = Snapshot { xattrs: Some(classes), xattr_names: names, ..s.clone() }.encode();
            matches!(Snapshot::decode(&b, 3, &FileId::default()), Err(crate::error::Error::Corrupt { .. }))
        };
        let user = XattrClasses::of(b"user.a");
        assert!(!bad(&[b"user.a", b"user.b"], user));
        assert!(bad(&[b"user.b", b"user.a"], user));
        assert!(bad(&[b"user.a", b"user.a"], user));
        assert!(bad(&[b"user.a"], user.union(XattrClasses::of(b"security.x"))));
        assert!(bad(&[b"user.a", b"security.x"], user));
    }
}
