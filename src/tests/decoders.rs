//! Every decoder of a repository file or blob, fed valid encodings with a few mutations:
//! flipped bits, extreme integers over length and count fields, cuts, insertions and
//! repeats. Random bytes rarely get past a decoder's first fields (a version, a kind, a
//! count); mutated valid encodings reach every field. A decoder must never panic, and
//! whatever it accepts must encode to something it decodes to the same value.

use std::path::PathBuf;

use proptest::prelude::*;

use crate::crypto::KdfParams;
use crate::format::config::{Config, DEFAULT_PACK_SIZE};
use crate::format::index::{IndexEntry, Location};
use crate::format::key::KeyFile;
use crate::format::pack::PackBlob;
use crate::format::snapshot::{Snapshot, Summary, XattrClasses};
use crate::format::tree::{self, ChunkRef, DirChild, ListChild, Node};
use crate::format::{BlobKind, Compression};
use crate::id::{BlobId, FileId};

/// One change to an encoding; positions are taken modulo its length.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    /// Overwrite 1, 2, 4 or 8 little-endian bytes with a value at the edge of a range.
    SetInt(usize, u8, u64),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// Repeat the bytes at [at, at + len): an entry or field twice.
    Repeat(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let edge = prop_oneof![
        Just(0u64),
        Just(1),
        Just(0x7f),
        Just(0xff),
        Just(0xffff),
        Just(0x7fff_ffff),
        Just(u32::MAX as u64),
        Just(u64::MAX),
        Just(i64::MAX as u64),
        Just(1 << 62),
        any::<u64>(),
    ];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::SetByte(at, b)),
        (any::<usize>(), prop_oneof![Just(1u8), Just(2), Just(4), Just(8)], edge)
            .prop_map(|(at, w, v)| Mutation::SetInt(at, w, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..40)).prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Mutation::Remove(at, n)),
        (any::<usize>(), 1usize..80).prop_map(|(at, n)| Mutation::Repeat(at, n)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 1..4)
}

fn apply(mut b: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        if b.is_empty() {
            break;
        }
        let at = |i: usize| i % b.len();
        match m {
            Mutation::FlipBit(i, bit) => {
                let i = at(*i);
                b[i] ^= 1 << bit;
            }
            Mutation::SetByte(i, v) => {
                let i = at(*i);
                b[i] = *v;
            }
            Mutation::SetInt(i, w, v) => {
                let i = at(*i);
                let end = (i + *w as usize).min(b.len());
                b[i..end].copy_from_slice(&v.to_le_bytes()[..end - i]);
            }
            Mutation::Truncate(i) => b.truncate(at(*i)),
            Mutation::Insert(i, bytes) => {
                let i = at(*i);
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let i = at(*i);
                b.drain(i..(i + n).min(b.len()));
            }
            Mutation::Repeat(i, n) => {
                let i = at(*i);
                let piece = b[i..(i + n).min(b.len())].to_vec();
                b.splice(i..i, piece);
            }
        }
    }
    b
}

fn blob_id() -> impl Strategy<Value = BlobId> {
    proptest::array::uniform32(any::<u8>()).prop_map(BlobId)
}

fn node() -> impl Strategy<Value = Node> {
    let name = "[a-z]{1,8}";
    prop_oneof![
        proptest::collection::btree_map(name, tree::tests::arb_entry(), 0..8).prop_map(|m| {
            Node::DirLeaf(
                m.into_iter()
                    .map(|(n, mut e)| {
                        e.name = n.into_bytes();
                        e
                    })
                    .collect(),
            )
        }),
        proptest::collection::btree_map(name, (blob_id(), 1u64..100_000), 1..8).prop_map(|m| {
            Node::DirInterior(
                m.into_iter().map(|(n, (id, entries))| DirChild { first_name: n.into_bytes(), id, entries }).collect(),
            )
        }),
        proptest::collection::vec((blob_id(), 1u32..5_000_000), 0..12)
            .prop_map(|cs| Node::ListLeaf(cs.into_iter().map(|(id, size)| ChunkRef { id, size }).collect())),
        proptest::collection::vec((blob_id(), 1u64..1 << 40, 1u64..1000), 1..12).prop_map(|cs| {
            Node::ListInterior(cs.into_iter().map(|(id, bytes, chunks)| ListChild { id, bytes, chunks }).collect())
        }),
    ]
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        ".{0,10}",
        proptest::collection::vec("[a-z]{1,8}", 0..4),
        proptest::collection::vec("/[a-z/]{0,20}", 0..4),
        any::<Option<[u8; 32]>>(),
        any::<(i64, u64, u64)>(),
        0u8..32,
        blob_id(),
    )
        .prop_map(|(host, tags, paths, parent, (time_ns, n, m), x, root)| Snapshot {
            time_ns,
            host,
            user: "me".into(),
            paths: paths.into_iter().map(PathBuf::from).collect(),
            tags,
            parent: parent.map(FileId),
            root,
            program: "cairn 0.1".into(),
            summary: Summary { files_new: n, bytes_added: m, ..Summary::default() },
            xattrs: Some(names(x).iter().fold(XattrClasses::NONE, |c, n| c.union(XattrClasses::of(n)))),
            xattr_names: Some(names(x)),
        })
}

/// The sorted xattr names that bits `x` pick, one per class.
fn names(x: u8) -> Vec<Vec<u8>> {
    let all = [&b"odd"[..], b"security.selinux", b"system.posix_acl_access", b"trusted.x", b"user.x"];
    all.iter().enumerate().filter(|(i, _)| x & (1 << i) != 0).map(|(_, n)| n.to_vec()).collect()
}

fn pack_blob() -> impl Strategy<Value = PackBlob> {
    (any::<bool>(), any::<bool>(), blob_id(), 40u32..100_000, 0u32..100_000).prop_map(|(t, c, id, s, r)| PackBlob {
        kind: if t { BlobKind::Tree } else { BlobKind::Data },
        compression: if c { Compression::Zstd } else { Compression::None },
        id,
        stored_len: s,
        raw_len: r,
    })
}

fn index_entries() -> impl Strategy<Value = Vec<IndexEntry>> {
    proptest::collection::btree_map(blob_id(), (0u8..4, any::<u32>(), 40u32..100_000, 0u32..100_000), 0..20).prop_map(
        |m| {
            m.into_iter()
                .map(|(id, (pack, offset, stored_len, raw_len))| IndexEntry {
                    id,
                    loc: Location {
                        pack: FileId([pack; 32]),
                        offset,
                        stored_len,
                        raw_len,
                        kind: BlobKind::Data,
                        compression: Compression::Zstd,
                    },
                })
                .collect()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutated_tree_nodes_never_panic(node in node(), ms in mutations()) {
        let bytes = apply(tree::encode(&node), &ms);
        if let Ok(n) = tree::decode(&bytes, &BlobId::default()) {
            prop_assert_eq!(tree::decode(&tree::encode(&n), &BlobId::default()).unwrap(), n);
        }
    }

    #[test]
    fn mutated_index_files_never_panic(mut entries in index_entries(), ms in mutations()) {
        let bytes = apply(crate::format::index::encode(&mut entries), &ms);
        if let Ok(e) = crate::format::index::decode(&bytes, &FileId::default()) {
            let again = crate::format::index::encode(&mut e.clone());
            prop_assert_eq!(crate::format::index::decode(&again, &FileId::default()).unwrap(), e);
        }
    }

    #[test]
    fn mutated_pack_headers_never_panic(blobs in proptest::collection::vec(pack_blob(), 0..20), ms in mutations()) {
        // The length of the blobs, as the pack holding them gives it.
        let len: u64 = blobs.iter().map(|b| b.stored_len as u64).sum();
        let bytes = apply(crate::format::pack::encode_header(&blobs), &ms);
        if let Ok(h) = crate::format::pack::decode_header(&bytes, &FileId::default(), len) {
            let blobs: Vec<PackBlob> = h.iter().map(|(b, _)| *b).collect();
            let again = crate::format::pack::encode_header(&blobs);
            prop_assert_eq!(crate::format::pack::decode_header(&again, &FileId::default(), len).unwrap(), h);
        }
    }

    #[test]
    fn mutated_snapshots_never_panic(s in snapshot(), ms in mutations(), v1 in any::<bool>()) {
        let mut enc = Snapshot { xattr_names: if v1 { None } else { s.xattr_names.clone() }, ..s }.encode();
        if v1 {
            // Version 1 had no xattr byte and lists no names.
            enc.truncate(enc.len() - 2);
        }
        let version = if v1 { 1 } else { 3 };
        if let Ok(d) = Snapshot::decode(&apply(enc, &ms), version, &FileId::default()) {
            if !v1 {
                prop_assert_eq!(Snapshot::decode(&d.encode(), 3, &FileId::default()).unwrap(), d);
            }
        }
    }

    #[test]
    fn mutated_key_files_never_panic(salt in proptest::collection::vec(any::<u8>(), 16..64), host in ".{0,20}", wrapped in proptest::collection::vec(any::<u8>(), 0..120), ms in mutations()) {
        let k = KeyFile { kdf: KdfParams::DEFAULT, salt, created: 5, host, user: "u".into(), wrapped };
        let bytes = apply(k.encode(), &ms);
        if let Ok(d) = KeyFile::decode(&bytes, &FileId::of(&bytes)) {
            let again = d.encode();
            prop_assert_eq!(KeyFile::decode(&again, &FileId::of(&again)).unwrap(), d);
        }
    }

    #[test]
    fn mutated_configs_never_panic(id in proptest::array::uniform32(any::<u8>()), seed in any::<u64>(), lvl in 0i32..=22, ms in mutations()) {
        let c = Config { repo_id: id, chunker: crate::chunker::ChunkerParams::default_with_seed(seed), pack_size: DEFAULT_PACK_SIZE, compression: lvl, created: 7 };
        if let Ok(d) = Config::decode(&apply(c.encode(), &ms)) {
            prop_assert_eq!(Config::decode(&d.encode()).unwrap(), d);
        }
    }
}
