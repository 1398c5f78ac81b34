//! The virtual layout over the snapshots: `snapshots/`, `latest`, `hosts/`, `tags/`,
//! `ids/`, and the names hosts and tags are shown under.

use super::*;

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

impl Vfs {
    pub(super) fn snap_root(&self, i: usize) -> Node {
        let s = &self.snaps[i];
        let t = s.time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let time = Time { sec: t.as_secs() as i64, nsec: t.subsec_nanos() };
        let entry = Entry {
            name: s.name.as_bytes().to_vec(),
            kind: Kind::Dir(s.root),
            mode: 0o755,
            uid: self.owner.0,
            gid: self.owner.1,
            user: Vec::new(),
            group: Vec::new(),
            size: 0,
            mtime: time,
            ctime: time,
            atime: time,
            dev: 0,
            ino: 0,
            nlink: 2,
            xattrs: Vec::new(),
        };
        Node::Entry { snap: i as u32, entry: Arc::new(entry) }
    }

    pub(super) fn snap_index(&self, name: &[u8]) -> Option<usize> {
        self.snaps.iter().position(|s| s.name.as_bytes() == name)
    }

    /// The child `name` of virtual directory `parent` (tree directories go through
    /// [`Vfs::child_indexed`], which also gives the position).
    pub(super) fn child(&self, parent: &Node, name: &[u8]) -> Result<Node> {
        let link_to = |s: &Snap, up: &str| Node::Link(format!("{up}snapshots/{}", s.name).into_bytes());
        match parent {
            Node::Root => match name {
                b"snapshots" => Ok(Node::Snapshots),
                b"hosts" => Ok(Node::Hosts),
                b"tags" => Ok(Node::Tags),
                b"ids" => Ok(Node::Ids),
                b"latest" => self.snaps.last().map(|s| link_to(s, "")).ok_or(ViewError::NoEntry),
                _ => Err(ViewError::NoEntry),
            },
            Node::Snapshots => self.snap_index(name).map(|i| self.snap_root(i)).ok_or(ViewError::NoEntry),
            Node::Hosts => self
                .snaps
                .iter()
                .find(|s| shown_name(&s.host) == name)
                .map(|s| Node::Host(s.host.clone()))
                .ok_or(ViewError::NoEntry),
            Node::Tags => self
                .snaps
                .iter()
                .flat_map(|s| &s.tags)
                .find(|t| shown_name(t) == name)
                .map(|t| Node::Tag(t.clone()))
                .ok_or(ViewError::NoEntry),
            Node::Ids => self
                .snaps
                .iter()
                .find(|s| s.id.short().as_bytes() == name)
                .map(|s| link_to(s, "../"))
                .ok_or(ViewError::NoEntry),
            Node::Host(h) => self
                .snaps
                .iter()
                .find(|s| &s.host == h && s.name.as_bytes() == name)
                .map(|s| link_to(s, "../../"))
                .ok_or(ViewError::NoEntry),
            Node::Tag(t) => self
                .snaps
                .iter()
                .find(|s| s.tags.contains(t) && s.name.as_bytes() == name)
                .map(|s| link_to(s, "../../"))
                .ok_or(ViewError::NoEntry),
            Node::Entry { .. } | Node::Link(_) => Err(ViewError::NotDir),
        }
    }

    /// [`Vfs::child`] with the child's position in its directory.
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
            _ => {
                let pos = self.virtual_names(parent).iter().position(|(n, _)| n == name).ok_or(ViewError::NoEntry)?;
                Ok((pos as u64, self.child(parent, name)?))
            }
        }
    }

    /// Names of a virtual directory.
    pub(super) fn virtual_names(&self, node: &Node) -> Vec<(Vec<u8>, FileKind)> {
        let mut names: Vec<(Vec<u8>, FileKind)> = match node {
            Node::Root => {
                let mut v = vec![
                    (b"snapshots".to_vec(), FileKind::Dir),
                    (b"hosts".to_vec(), FileKind::Dir),
                    (b"tags".to_vec(), FileKind::Dir),
                    (b"ids".to_vec(), FileKind::Dir),
                ];
                if !self.snaps.is_empty() {
                    v.push((b"latest".to_vec(), FileKind::Symlink));
                }
                v
            }
            Node::Snapshots => self.snaps.iter().map(|s| (s.name.as_bytes().to_vec(), FileKind::Dir)).collect(),
            Node::Hosts => self.snaps.iter().map(|s| (shown_name(&s.host), FileKind::Dir)).collect(),
            Node::Tags => {
                self.snaps.iter().flat_map(|s| s.tags.iter().map(|t| (shown_name(t), FileKind::Dir))).collect()
            }
            Node::Ids => self.snaps.iter().map(|s| (s.id.short().into_bytes(), FileKind::Symlink)).collect(),
            Node::Host(h) => self
                .snaps
                .iter()
                .filter(|s| &s.host == h)
                .map(|s| (s.name.as_bytes().to_vec(), FileKind::Symlink))
                .collect(),
            Node::Tag(t) => self
                .snaps
                .iter()
                .filter(|s| s.tags.contains(t))
                .map(|s| (s.name.as_bytes().to_vec(), FileKind::Symlink))
                .collect(),
            _ => Vec::new(),
        };
        names.sort();
        names.dedup();
        names
    }
}
