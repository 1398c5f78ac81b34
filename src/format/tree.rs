//! Tree blobs (docs/format.md, "Trees"): directory listings and chunk lists, split into
//! nodes so that neither a huge directory nor a huge file's chunk list is ever held whole.
//!
//! A directory is a tree of nodes: `DirLeaf` nodes hold entries in name order, `DirInterior`
//! nodes list (first name, child) pairs so a reader finds the leaf covering a name by
//! reading one node per level. A file's chunk list is inline in its entry when short,
//! otherwise a tree of `ListLeaf` (chunk id, size) nodes under `ListInterior` nodes that
//! carry each child's byte count, so a reader finds the chunk covering an offset the same way.

use super::pack::MAX_BLOB_RAW;
use super::{Put, Reader};
use crate::error::Result;
use crate::id::BlobId;

/// Version byte at the start of every tree node.
pub const NODE_VERSION: u8 = 1;

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time {
    /// Seconds (may be negative).
    pub sec: i64,
    /// Nanoseconds, < 10^9.
    pub nsec: u32,
}

/// One chunk of a file: its id and plaintext size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    /// The data blob.
    pub id: BlobId,
    /// Its plaintext length.
    pub size: u32,
}

/// Where a regular file's chunk list is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Short lists live in the entry itself.
    Inline(Vec<ChunkRef>),
    /// Long lists live in a tree of `ListLeaf`/`ListInterior` nodes rooted here.
    List(BlobId),
}

/// The type of an entry, with what only that type has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File(Content),
    /// Directory, with the root node of its listing.
    Dir(BlobId),
    /// Symbolic link, with its target bytes.
    Symlink(Vec<u8>),
    /// Named pipe.
    Fifo,
    /// Character device, with its device number.
    CharDev(u64),
    /// Block device, with its device number.
    BlockDev(u64),
    /// Unix socket (restored as nothing; listed for completeness).
    Socket,
}

/// One directory entry with its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// File name: non-empty, no '/', no NUL, not "." or "..".
    pub name: Vec<u8>,
    /// Type and type-specific data.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (st_mode & 0o7777).
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Owner name, when known (restore maps by name first, like tar).
    pub user: Vec<u8>,
    /// Group name, when known.
    pub group: Vec<u8>,
    /// Size in bytes (for files, the sum of the chunk sizes).
    pub size: u64,
    /// Modification time.
    pub mtime: Time,
    /// Status change time.
    pub ctime: Time,
    /// Access time, or a copy of `mtime` when the backup did not record access times
    /// (the default).
    pub atime: Time,
    /// Device of the source file (with `ino`, identifies hard links).
    pub dev: u64,
    /// Inode of the source file.
    pub ino: u64,
    /// Link count of the source file.
    pub nlink: u32,
    /// Extended attributes (name, value), in name order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A child of a `DirInterior` node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirChild {
    /// Name of the first entry under the child.
    pub first_name: Vec<u8>,
    /// The child node.
    pub id: BlobId,
    /// Number of entries under the child.
    pub entries: u64,
}

/// A child of a `ListInterior` node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListChild {
    /// The child node.
    pub id: BlobId,
    /// Bytes of file content under the child.
    pub bytes: u64,
    /// Chunks under the child.
    pub chunks: u64,
}

/// A decoded tree node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// Directory entries in strictly ascending name order.
    DirLeaf(Vec<Entry>),
    /// Children in strictly ascending first-name order.
    DirInterior(Vec<DirChild>),
    /// A run of a file's chunks, in file order.
    ListLeaf(Vec<ChunkRef>),
    /// Children in file order.
    ListInterior(Vec<ListChild>),
}

/// Node kind bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// See [`Node::DirLeaf`].
    DirLeaf = 0,
    /// See [`Node::DirInterior`].
    DirInterior = 1,
    /// See [`Node::ListLeaf`].
    ListLeaf = 2,
    /// See [`Node::ListInterior`].
    ListInterior = 3,
}

/// Length of the node header: version, kind, count.
pub const NODE_HEADER_LEN: usize = 6;

/// Start an encoded node: the header with a zero count, to be patched by [`finish_node`].
pub fn start_node(buf: &mut Vec<u8>, kind: NodeKind) {
    buf.clear();
    buf.u8(NODE_VERSION);
    buf.u8(kind as u8);
    buf.u32(0);
}

/// Patch the item count into a node started with [`start_node`].
pub fn finish_node(buf: &mut [u8], count: u32) {
    buf[2..6].copy_from_slice(&count.to_le_bytes());
}

/// Is `name` acceptable as a directory entry name? (Checked on decode, so restore can
/// never be steered outside its target by a name.)
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0)
        && name.len() <= u16::MAX as usize
}

fn put_time(v: &mut Vec<u8>, t: Time) {
    v.i64(t.sec);
    v.u32(t.nsec);
}

fn put_chunks(v: &mut Vec<u8>, chunks: &[ChunkRef]) {
    v.u32(chunks.len() as u32);
    for c in chunks {
        put_chunk_ref(v, c);
    }
}

/// Append one entry (a `DirLeaf` item).
pub fn put_entry(v: &mut Vec<u8>, e: &Entry) {
    v.bytes16(&e.name);
    match &e.kind {
        Kind::File(_) => v.u8(0),
        Kind::Dir(_) => v.u8(1),
        Kind::Symlink(_) => v.u8(2),
        Kind::Fifo => v.u8(3),
        Kind::CharDev(_) => v.u8(4),
        Kind::BlockDev(_) => v.u8(5),
        Kind::Socket => v.u8(6),
    }
    v.u32(e.mode);
    v.u32(e.uid);
    v.u32(e.gid);
    v.bytes8(&e.user);
    v.bytes8(&e.group);
    v.u64(e.size);
    put_time(v, e.mtime);
    put_time(v, e.ctime);
    put_time(v, e.atime);
    v.u64(e.dev);
    v.u64(e.ino);
    v.u32(e.nlink);
    match &e.kind {
        Kind::File(Content::Inline(chunks)) => {
            v.u8(0);
            put_chunks(v, chunks);
        }
        Kind::File(Content::List(root)) => {
            v.u8(1);
            v.raw(&root.0);
        }
        Kind::Dir(id) => v.raw(&id.0),
        Kind::Symlink(t) => v.bytes16(t),
        Kind::CharDev(d) | Kind::BlockDev(d) => v.u64(*d),
        Kind::Fifo | Kind::Socket => {}
    }
    v.u16(e.xattrs.len() as u16);
    for (n, val) in &e.xattrs {
        v.bytes8(n);
        v.bytes32(val);
    }
}

/// Append a `DirInterior` item.
pub fn put_dir_child(v: &mut Vec<u8>, c: &DirChild) {
    v.bytes16(&c.first_name);
    v.raw(&c.id.0);
    v.u64(c.entries);
}

/// Append a `ListLeaf` item (36 bytes).
pub fn put_chunk_ref(v: &mut Vec<u8>, c: &ChunkRef) {
    v.raw(&c.id.0);
    v.u32(c.size);
}

/// Append a `ListInterior` item (48 bytes).
pub fn put_list_child(v: &mut Vec<u8>, c: &ListChild) {
    v.raw(&c.id.0);
    v.u64(c.bytes);
    v.u64(c.chunks);
}

/// Encode a whole node (used by tests and small nodes; builders stream items instead).
pub fn encode(node: &Node) -> Vec<u8> {
    let mut v = Vec::new();
    let count = match node {
        Node::DirLeaf(es) => {
            start_node(&mut v, NodeKind::DirLeaf);
            es.iter().for_each(|e| put_entry(&mut v, e));
            es.len()
        }
        Node::DirInterior(cs) => {
            start_node(&mut v, NodeKind::DirInterior);
            cs.iter().for_each(|c| put_dir_child(&mut v, c));
            cs.len()
        }
        Node::ListLeaf(cs) => {
            start_node(&mut v, NodeKind::ListLeaf);
            cs.iter().for_each(|c| put_chunk_ref(&mut v, c));
            cs.len()
        }
        Node::ListInterior(cs) => {
            start_node(&mut v, NodeKind::ListInterior);
            cs.iter().for_each(|c| put_list_child(&mut v, c));
            cs.len()
        }
    };
    finish_node(&mut v, count as u32);
    v
}

fn time(r: &mut Reader) -> Result<Time> {
    let sec = r.i64()?;
    let nsec = r.u32()?;
    if nsec >= 1_000_000_000 {
        return Err(r.err(format!("nanoseconds {nsec} out of range")));
    }
    Ok(Time { sec, nsec })
}

fn chunk_ref(r: &mut Reader) -> Result<ChunkRef> {
    let id = BlobId(r.id32()?);
    let size = r.u32()?;
    if size == 0 || size > MAX_BLOB_RAW {
        return Err(r.err(format!("chunk {id} size {size} out of range")));
    }
    Ok(ChunkRef { id, size })
}

fn entry(r: &mut Reader) -> Result<Entry> {
    let name = r.bytes16()?.to_vec();
    if !valid_name(&name) {
        return Err(r.err(format!("invalid entry name {:?}", String::from_utf8_lossy(&name))));
    }
    let kind_byte = r.u8()?;
    let mode = r.u32()?;
    if mode > 0o7777 {
        return Err(r.err(format!("mode {mode:o} out of range")));
    }
    let uid = r.u32()?;
    let gid = r.u32()?;
    let user = r.bytes8()?.to_vec();
    let group = r.bytes8()?.to_vec();
    let size = r.u64()?;
    let mtime = time(r)?;
    let ctime = time(r)?;
    let atime = time(r)?;
    let dev = r.u64()?;
    let ino = r.u64()?;
    let nlink = r.u32()?;
    let kind = match kind_byte {
        0 => match r.u8()? {
            0 => {
                let n = r.count32(36)?;
                let mut chunks = Vec::with_capacity(n);
                let mut total = 0u64;
                for _ in 0..n {
                    let c = chunk_ref(r)?;
                    total += c.size as u64;
                    chunks.push(c);
                }
                if total != size {
                    return Err(r.err(format!(
                        "chunks of {:?} add up to {total} bytes, size says {size}",
                        String::from_utf8_lossy(&name)
                    )));
                }
                Kind::File(Content::Inline(chunks))
            }
            1 => Kind::File(Content::List(BlobId(r.id32()?))),
            x => return Err(r.err(format!("unknown content tag {x}"))),
        },
        1 => Kind::Dir(BlobId(r.id32()?)),
        2 => Kind::Symlink(r.bytes16()?.to_vec()),
        3 => Kind::Fifo,
        4 => Kind::CharDev(r.u64()?),
        5 => Kind::BlockDev(r.u64()?),
        6 => Kind::Socket,
        x => return Err(r.err(format!("unknown entry type {x}"))),
    };
    let nx = r.count16(5)?;
    let mut xattrs = Vec::with_capacity(nx);
    for _ in 0..nx {
        let n = r.bytes8()?.to_vec();
        let val = r.bytes32()?.to_vec();
        if n.is_empty() || n.contains(&0) {
            return Err(r.err("invalid xattr name"));
        }
        xattrs.push((n, val));
    }
    Ok(Entry { name, kind, mode, uid, gid, user, group, size, mtime, ctime, atime, dev, ino, nlink, xattrs })
}

/// A node's version (checked) and kind byte.
fn header(r: &mut Reader, id: &BlobId) -> Result<u8> {
    let version = r.u8()?;
    if version != NODE_VERSION {
        return Err(crate::error::Error::UnsupportedVersion {
            what: format!("tree {id}"),
            found: version as u32,
            supported: NODE_VERSION.to_string(),
        });
    }
    r.u8()
}

/// A directory leaf node kept as its plaintext, its entries decoded one at a time with
/// the checks [`decode`] makes on each (their order is the reader's to check): for a
/// reader that holds many leaves at once, the mount's merge of `versions/` (~50 B an
/// entry held, against ~300 B decoded).
pub struct LeafEntries {
    bytes: std::sync::Arc<Vec<u8>>,
    id: BlobId,
    at: usize,
    left: usize,
}

impl LeafEntries {
    /// The entries of node `id` from its plaintext (which several readers may share) if
    /// it is a directory leaf; any other node decoded whole.
    pub fn open(bytes: std::sync::Arc<Vec<u8>>, id: &BlobId) -> Result<std::result::Result<LeafEntries, Node>> {
        let mut r = Reader::new(&bytes, "tree", id);
        if header(&mut r, id)? != 0 {
            return decode(&bytes, id).map(Err);
        }
        let left = r.count32(80)?;
        let at = r.position();
        Ok(Ok(LeafEntries { bytes, id: *id, at, left }))
    }

    /// Entries not yet decoded.
    pub fn len(&self) -> usize {
        self.left
    }

    /// Whether every entry has been decoded.
    pub fn is_empty(&self) -> bool {
        self.left == 0
    }

    /// The next entry; at the end, `None` once the node is checked to hold no more.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        let mut r = Reader::at(&self.bytes, self.at, "tree", &self.id);
        if self.left == 0 {
            r.finish()?;
            return Ok(None);
        }
        let e = entry(&mut r)?;
        self.at = r.position();
        self.left -= 1;
        Ok(Some(e))
    }
}

/// Decode a tree node, checking its version, lengths, names and ordering.
pub fn decode(bytes: &[u8], id: &BlobId) -> Result<Node> {
    let mut r = Reader::new(bytes, "tree", id);
    let kind = header(&mut r, id)?;
    let node = match kind {
        0 => {
            let n = r.count32(80)?;
            let mut es: Vec<Entry> = Vec::with_capacity(n);
            for _ in 0..n {
                let e = entry(&mut r)?;
                if es.last().is_some_and(|l| l.name >= e.name) {
                    return Err(
                        r.err(format!("entry {:?} out of order or duplicated", String::from_utf8_lossy(&e.name)))
                    );
                }
                es.push(e);
            }
            Node::DirLeaf(es)
        }
        1 => {
            let n = r.count32(42)?;
            let mut cs: Vec<DirChild> = Vec::with_capacity(n);
            for _ in 0..n {
                let first_name = r.bytes16()?.to_vec();
                let c = DirChild { first_name, id: BlobId(r.id32()?), entries: r.u64()? };
                if cs.last().is_some_and(|l| l.first_name >= c.first_name) {
                    return Err(r.err("children out of order"));
                }
                cs.push(c);
            }
            Node::DirInterior(cs)
        }
        2 => {
            let n = r.count32(36)?;
            let mut cs = Vec::with_capacity(n);
            for _ in 0..n {
                cs.push(chunk_ref(&mut r)?);
            }
            Node::ListLeaf(cs)
        }
        3 => {
            let n = r.count32(48)?;
            let mut cs = Vec::with_capacity(n);
            for _ in 0..n {
                cs.push(ListChild { id: BlobId(r.id32()?), bytes: r.u64()?, chunks: r.u64()? });
            }
            Node::ListInterior(cs)
        }
        x => return Err(r.err(format!("unknown node kind {x}"))),
    };
    r.finish()?;
    Ok(node)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_entry() -> impl Strategy<Value = Entry> {
        let kind = prop_oneof![
            proptest::collection::vec((proptest::array::uniform32(any::<u8>()), 1u32..5000), 0..5).prop_map(|cs| {
                Kind::File(Content::Inline(
                    cs.into_iter().map(|(id, size)| ChunkRef { id: BlobId(id), size }).collect(),
                ))
            }),
            proptest::array::uniform32(any::<u8>()).prop_map(|id| Kind::File(Content::List(BlobId(id)))),
            proptest::array::uniform32(any::<u8>()).prop_map(|id| Kind::Dir(BlobId(id))),
            proptest::collection::vec(any::<u8>(), 0..50).prop_map(Kind::Symlink),
            Just(Kind::Fifo),
            any::<u64>().prop_map(Kind::CharDev),
            any::<u64>().prop_map(Kind::BlockDev),
            Just(Kind::Socket),
        ];
        (
            "[a-zA-Z0-9._-]{1,12}".prop_filter("valid", |n| valid_name(n.as_bytes())),
            kind,
            0u32..=0o7777,
            any::<(u32, u32, u64, u64, i64, u32)>(),
            proptest::collection::vec(("[a-z.]{1,10}", proptest::collection::vec(any::<u8>(), 0..20)), 0..3),
        )
            .prop_map(|(name, kind, mode, (uid, gid, dev, ino, sec, nlink), xattrs)| {
                let size = match &kind {
                    Kind::File(Content::Inline(cs)) => cs.iter().map(|c| c.size as u64).sum(),
                    _ => ino % 1000,
                };
                Entry {
                    name: name.into_bytes(),
                    kind,
                    mode,
                    uid,
                    gid,
                    user: b"user".to_vec(),
                    group: vec![],
                    size,
                    mtime: Time { sec, nsec: 5 },
                    ctime: Time { sec: -sec, nsec: 999_999_999 },
                    atime: Time::default(),
                    dev,
                    ino,
                    nlink,
                    xattrs: xattrs.into_iter().map(|(n, v)| (n.into_bytes(), v)).collect(),
                }
            })
    }

    proptest! {
        #[test]
        fn dir_leaf_roundtrip(entries in proptest::collection::btree_map("[a-z]{1,8}", arb_entry(), 0..20)) {
            let es: Vec<Entry> = entries.into_iter().map(|(n, mut e)| { e.name = n.into_bytes(); e }).collect();
            let node = Node::DirLeaf(es.clone());
            let bytes = encode(&node);
            prop_assert_eq!(decode(&bytes, &BlobId::default()).unwrap(), node);
            // Decoded one entry at a time, the same; cut short or with a byte more, an
            // error, never a panic.
            let all = |bytes: Vec<u8>| -> Result<Vec<Entry>> {
                let Ok(mut leaf) = LeafEntries::open(bytes.into(), &BlobId::default())? else { panic!("not a leaf") };
                std::iter::from_fn(|| leaf.next_entry().transpose()).collect()
            };
            prop_assert_eq!(all(bytes.clone()).unwrap(), es);
            prop_assert!(all([bytes.as_slice(), &[0]].concat()).is_err());
            if bytes.len() > 6 {
                prop_assert!(all(bytes[..bytes.len() - 1].to_vec()).is_err());
            }
        }

        #[test]
        fn list_nodes_roundtrip(cs in proptest::collection::vec((proptest::array::uniform32(any::<u8>()), 1u32..100, any::<u64>()), 0..30)) {
            let leaf = Node::ListLeaf(cs.iter().map(|(id, s, _)| ChunkRef { id: BlobId(*id), size: *s }).collect());
            prop_assert_eq!(decode(&encode(&leaf), &BlobId::default()).unwrap(), leaf);
            let inner = Node::ListInterior(cs.iter().map(|(id, s, b)| ListChild { id: BlobId(*id), bytes: *b, chunks: *s as u64 }).collect());
            prop_assert_eq!(decode(&encode(&inner), &BlobId::default()).unwrap(), inner);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes, &BlobId::default());
            if let Ok(Ok(mut leaf)) = LeafEntries::open(bytes.into(), &BlobId::default()) {
                while let Ok(Some(_)) = leaf.next_entry() {}
            }
        }
    }

    fn entry_named(name: &[u8]) -> Entry {
        Entry {
            name: name.to_vec(),
            kind: Kind::Fifo,
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: vec![],
            group: vec![],
            size: 0,
            mtime: Time::default(),
            ctime: Time::default(),
            atime: Time::default(),
            dev: 0,
            ino: 0,
            nlink: 1,
            xattrs: vec![],
        }
    }

    #[test]
    fn refuses_dangerous_names() {
        for bad in [&b".."[..], b".", b"a/b", b"", b"x\0y"] {
            let node = Node::DirLeaf(vec![entry_named(bad)]);
            assert!(decode(&encode(&node), &BlobId::default()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refuses_unsorted_and_size_mismatch() {
        let node = Node::DirLeaf(vec![entry_named(b"b"), entry_named(b"a")]);
        assert!(decode(&encode(&node), &BlobId::default()).is_err());
        let mut e = entry_named(b"f");
        e.kind = Kind::File(Content::Inline(vec![ChunkRef { id: BlobId::default(), size: 10 }]));
        e.size = 11;
        assert!(decode(&encode(&Node::DirLeaf(vec![e])), &BlobId::default()).is_err());
    }

    #[test]
    fn refuses_future_version() {
        let mut v = encode(&Node::ListLeaf(vec![]));
        v[0] = 9;
        assert!(matches!(decode(&v, &BlobId::default()), Err(crate::error::Error::UnsupportedVersion { .. })));
    }
}
