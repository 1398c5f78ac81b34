//! The virtual layout over the snapshots: `snapshots/`, `latest`, `hosts/`, `tags/`,
//! `ids/` and `versions/` as a table built once ([`Layout`]), and the names hosts and
//! tags are shown under.

use super::*;
use versions::merged_child;

/// A snapshot as the view shows it.
pub(super) struct Snap {
    pub(super) id: FileId,
    pub(super) name: String,
    pub(super) time: SystemTime,
    pub(super) host: String,
    pub(super) tags: Vec<String>,
    pub(super) root: BlobId,
}

/// The directory name a host or tag is shown under, one-to-one: `%`, `/` and NUL are
/// always written `%25`, `%2F` and `%00` (so a tag `a%2Fb` shows as `a%252Fb`, never
/// as the tag `a/b`), and the names no file may have, "", "." and "..", as `%`, `%2E`
/// and `%2E%2E` (a lone `%`, or `%2E` alone, cannot come from escaping anything else).
/// The kernel fails a whole listing over one invalid name, so a tag like `release/1.0`
/// would otherwise hide all. Names over 255 bytes once escaped end with `%~` and 8 hex
/// digits of a hash of the whole name, which keeps them apart too.
pub(super) fn shown_name(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = match b {
        b"" => b"%".to_vec(),
        b"." => b"%2E".to_vec(),
        b".." => b"%2E%2E".to_vec(),
        _ => {
            let mut v = Vec::with_capacity(b.len() + 8);
            for &c in b {
                match c {
                    b'/' | b'%' | 0 => v.extend_from_slice(format!("%{c:02X}").as_bytes()),
                    _ => v.push(c),
                }
            }
            v
        }
    };
    if out.len() > 255 {
        let tag = format!("%~{}", &blake3::hash(b).to_hex()[..8]);
        // Cut at a character boundary of the escaped name, then the hash.
        let mut cut = 255 - tag.len();
        while cut > 0 && (out[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        out.truncate(cut);
        out.extend_from_slice(tag.as_bytes());
    }
    out
}

/// What a name in a virtual directory is.
#[derive(Clone, Debug)]
pub(super) enum Virt {
    /// Another virtual directory: its index in the [`Layout`].
    Dir(u32),
    /// The root directory of snapshot `i` (its place in the snapshot list).
    Snap(u32),
    /// A symlink, with its target.
    Link(Vec<u8>),
    /// `versions/HOST`: the merged root of host `i` (its place in [`Layout::hosts`]).
    Host(u32),
}

/// The virtual directories above the snapshots' trees, built once from the snapshot
/// list: each one its rows (shown name, what it is) in name order; directory 0 is the
/// root. A new view is more rows built here, not more match arms in every call.
/// Memory: per snapshot its row under `snapshots/` and `ids/`, and one under its host's
/// and each of its tags' directories, ~150 B each; it grows with the snapshot list, as
/// the list itself does (~200 B per snapshot).
pub(super) struct Layout {
    dirs: Vec<Vec<(Vec<u8>, Virt)>>,
    /// Per host, the distinct root trees of its snapshots (40 B each).
    hosts: Vec<Arc<Merged>>,
}

impl Layout {
    /// The root directory.
    pub(super) const ROOT: u32 = 0;

    /// The layout of `snaps` (oldest first: `latest` is the last).
    pub(super) fn build(snaps: &[Snap]) -> Layout {
        use std::collections::BTreeMap;
        let link = |s: &Snap, up: &str| Virt::Link(format!("{up}snapshots/{}", s.name).into_bytes());
        // 0 root, 1 snapshots/, 2 hosts/, 3 tags/, 4 ids/, 5 versions/, then one per host
        // and per tag.
        let mut dirs: Vec<Vec<(Vec<u8>, Virt)>> = vec![Vec::new(); 6];
        for (i, name) in ["snapshots", "hosts", "tags", "ids", "versions"].iter().enumerate() {
            dirs[0].push((name.as_bytes().to_vec(), Virt::Dir(i as u32 + 1)));
        }
        if let Some(s) = snaps.last() {
            dirs[0].push((b"latest".to_vec(), link(s, "")));
        }
        let mut hosts: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut tags: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, s) in snaps.iter().enumerate() {
            dirs[1].push((s.name.as_bytes().to_vec(), Virt::Snap(i as u32)));
            dirs[4].push((s.id.short().into_bytes(), link(s, "../")));
            hosts.entry(&s.host).or_default().push(i);
            for t in &s.tags {
                tags.entry(t).or_default().push(i);
            }
        }
        let mut roots = Vec::new();
        for (name, members) in &hosts {
            let hits = members.iter().map(|&i| {
                let at = i as u32;
                (Span { id: snaps[i].root, first: at, last: at }, root_entry(&snaps[i].root))
            });
            let Node::Merged(m) = merged_child(hits.collect()) else { unreachable!("roots are directories") };
            // A host's root is shown as a virtual directory, not as any snapshot's root.
            let m = Arc::new(Merged::new(m.trees.clone(), None));
            dirs[5].push((shown_name(name), Virt::Host(roots.len() as u32)));
            roots.push(m);
        }
        for (parent, groups) in [(2, hosts), (3, tags)] {
            for (name, members) in groups {
                let d = dirs.len() as u32;
                dirs.push(
                    members.iter().map(|&i| (snaps[i].name.as_bytes().to_vec(), link(&snaps[i], "../../"))).collect(),
                );
                dirs[parent].push((shown_name(name), Virt::Dir(d)));
            }
        }
        for rows in &mut dirs {
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            rows.dedup_by(|a, b| a.0 == b.0);
        }
        Layout { dirs, hosts: roots }
    }

    /// The rows of directory `d` in name order.
    pub(super) fn rows(&self, d: u32) -> &[(Vec<u8>, Virt)] {
        self.dirs.get(d as usize).map_or(&[], |r| r.as_slice())
    }

    /// Row `name` of directory `d`, with its position.
    pub(super) fn find(&self, d: u32, name: &[u8]) -> Option<(usize, &Virt)> {
        let rows = self.rows(d);
        rows.binary_search_by(|(n, _)| n.as_slice().cmp(name)).ok().map(|i| (i, &rows[i].1))
    }
}

/// An entry standing for directory `tree` (only its kind is looked at).
fn root_entry(tree: &BlobId) -> Entry {
    Entry {
        name: Vec::new(),
        kind: Kind::Dir(*tree),
        mode: 0o755,
        uid: 0,
        gid: 0,
        user: Vec::new(),
        group: Vec::new(),
        size: 0,
        mtime: Time { sec: 0, nsec: 0 },
        ctime: Time { sec: 0, nsec: 0 },
        atime: Time { sec: 0, nsec: 0 },
        dev: 0,
        ino: 0,
        nlink: 2,
        xattrs: Vec::new(),
    }
}

impl Vfs {
    pub(super) fn snap_root(&self, i: usize) -> Node {
        let s = &self.snaps[i];
        let t = s.time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let time = Time { sec: t.as_secs() as i64, nsec: t.subsec_nanos() };
        let entry = Entry {
            name: s.name.as_bytes().to_vec(),
            uid: self.owner.0,
            gid: self.owner.1,
            mtime: time,
            ctime: time,
            atime: time,
            ..root_entry(&s.root)
        };
        Node::Entry { snap: i as u32, entry: Arc::new(entry) }
    }

    /// The node a row of the layout stands for.
    pub(super) fn virtual_node(&self, v: &Virt) -> Node {
        match v {
            Virt::Dir(d) => Node::Virtual(*d),
            Virt::Snap(i) => self.snap_root(*i as usize),
            Virt::Link(t) => Node::Link(t.clone()),
            Virt::Host(h) => Node::Merged(self.layout.hosts[*h as usize].clone()),
        }
    }

    /// The child `name` of directory `parent`, with its position in the directory.
    pub(super) fn child_indexed(&self, parent: &Node, name: &[u8]) -> Result<(u64, Node)> {
        match parent {
            Node::Entry { snap, entry } => match &entry.kind {
                Kind::Dir(tree) => match crate::tree::lookup_indexed(&self.repo, tree, name)? {
                    Some((pos, e)) => Ok((pos, Node::Entry { snap: *snap, entry: Arc::new(e) })),
                    None => Err(ViewError::NoEntry),
                },
                _ => Err(ViewError::NotDir),
            },
            Node::Link(_) => Err(ViewError::NotDir),
            Node::Virtual(d) => {
                let (pos, v) = self.layout.find(*d, name).ok_or(ViewError::NoEntry)?;
                Ok((pos as u64, self.virtual_node(v)))
            }
            Node::Merged(m) => self.merged_lookup(m, name),
            Node::Versions(v) => {
                let pos = v.list.iter().position(|x| self.version_name(x) == name).ok_or(ViewError::NoEntry)?;
                let (snap, _, entry) = &v.list[pos];
                Ok((pos as u64, Node::Entry { snap: *snap, entry: entry.clone() }))
            }
        }
    }
}
