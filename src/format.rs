//! The on-disk layout, in one place: file headers (magic + version) and the byte codec
//! every file type uses. docs/format.md is the normative description; each submodule names
//! the section it implements.
//!
//! Pure: bytes in, structs out. No I/O, no crypto policy. Every read is bounds-checked and
//! every count is checked against the bytes that remain before anything is allocated, so
//! hostile input yields [`Error::Corrupt`], never a panic or a huge allocation.

pub mod config;
pub mod index;
pub mod key;
pub mod lock;
pub mod pack;
pub mod snapshot;
pub mod tree;

use std::fmt::Display;

use crate::error::{Error, Result};

/// The oldest file version this build reads, of every kind.
pub const OLDEST_VERSION: u8 = 1;

/// Length of a file header: 8 magic bytes + 1 version byte.
pub const HEADER_LEN: usize = 9;

/// The largest snapshot file (docs/format.md, section 12): 16 MiB, room for thousands of
/// long paths and tags. `backup` refuses to write a larger one.
pub const MAX_SNAPSHOT_LEN: u64 = 16 << 20;

/// The kinds of file cairn writes; each starts with its own magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `config`
    Config,
    /// `keys/<id>`
    Key,
    /// `data/<xx>/<id>`
    Pack,
    /// `index/<id>`
    Index,
    /// `snapshots/<id>`
    Snapshot,
    /// `locks/<id>`
    Lock,
}

impl FileKind {
    /// The 8 magic bytes.
    pub fn magic(self) -> &'static [u8; 8] {
        match self {
            FileKind::Config => b"CAIRNCFG",
            FileKind::Key => b"CAIRNKEY",
            FileKind::Pack => b"CAIRNPAK",
            FileKind::Index => b"CAIRNIDX",
            FileKind::Snapshot => b"CAIRNSNP",
            FileKind::Lock => b"CAIRNLCK",
        }
    }

    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Key => "key",
            FileKind::Pack => "pack",
            FileKind::Index => "index",
            FileKind::Snapshot => "snapshot",
            FileKind::Lock => "lock",
        }
    }

    /// The version of this kind this build writes, and the newest it reads
    /// (docs/format.md, section 15): snapshots at version 3 (they list their xattr
    /// names), the config at version 2 (it says "clients take locks"), everything else at 1.
    pub fn version(self) -> u8 {
        match self {
            FileKind::Snapshot => 3,
            FileKind::Config => 2,
            FileKind::Key | FileKind::Pack | FileKind::Index | FileKind::Lock => 1,
        }
    }

    /// The largest file of this kind a reader accepts (docs/format.md, section 3): files
    /// read whole are refused beyond it before anything is allocated, so a planted huge
    /// or sparse file cannot exhaust memory. Every file cairn writes is well inside it.
    /// Packs are never read whole (a blob or the header, by range), so they have none.
    pub fn max_len(self) -> Option<u64> {
        match self {
            // 9 + 40 + 68 bytes.
            FileKind::Config => Some(4 << 10),
            // Three u16-prefixed strings at most: ~197 KiB.
            FileKind::Key => Some(256 << 10),
            // 65,536 entries of 50 bytes and as many packs of 32: ~5.4 MiB.
            FileKind::Index => Some(8 << 20),
            FileKind::Snapshot => Some(MAX_SNAPSHOT_LEN),
            // Three u16-prefixed strings at most: ~197 KiB.
            FileKind::Lock => Some(256 << 10),
            FileKind::Pack => None,
        }
    }

    /// The 9-byte header this build writes. It is also the associated data of the file's
    /// sealed parts, so the version cannot be changed without detection.
    pub fn header(self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(self.magic());
        h[8] = self.version();
        h
    }

    /// Check the header of `bytes`; return the rest. Wrong magic is `Corrupt`, a version
    /// outside [`OLDEST_VERSION`]..=[`FileKind::version`] is `UnsupportedVersion`. The
    /// version read is `bytes[8]`.
    pub fn check_header<'a>(self, bytes: &'a [u8], id: &dyn Display) -> Result<&'a [u8]> {
        if bytes.len() < HEADER_LEN || &bytes[..8] != self.magic() {
            return Err(Error::corrupt(self.name(), id, format!("not a cairn {} file (bad magic)", self.name())));
        }
        if !(OLDEST_VERSION..=self.version()).contains(&bytes[8]) {
            let supported = match self.version() {
                OLDEST_VERSION => OLDEST_VERSION.to_string(),
                v => format!("{OLDEST_VERSION} to {v}"),
            };
            return Err(Error::UnsupportedVersion {
                what: format!("{} {id}", self.name()),
                found: bytes[8] as u32,
                supported,
            });
        }
        Ok(&bytes[HEADER_LEN..])
    }
}

/// Little-endian writer helpers over `Vec<u8>`.
pub trait Put {
    /// Append a u8.
    fn u8(&mut self, v: u8);
    /// Append a u16 LE.
    fn u16(&mut self, v: u16);
    /// Append a u32 LE.
    fn u32(&mut self, v: u32);
    /// Append a u64 LE.
    fn u64(&mut self, v: u64);
    /// Append an i64 LE.
    fn i64(&mut self, v: i64);
    /// Append raw bytes.
    fn raw(&mut self, v: &[u8]);
    /// Append a u8 length then the bytes; the caller guarantees `v.len() <= 255`.
    fn bytes8(&mut self, v: &[u8]);
    /// Append a u16 length then the bytes; the caller guarantees `v.len() <= 65535`.
    fn bytes16(&mut self, v: &[u8]);
    /// Append a u32 length then the bytes.
    fn bytes32(&mut self, v: &[u8]);
}

impl Put for Vec<u8> {
    fn u8(&mut self, v: u8) {
        self.push(v)
    }
    fn u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes())
    }
    fn u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes())
    }
    fn i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_le_bytes())
    }
    fn raw(&mut self, v: &[u8]) {
        self.extend_from_slice(v)
    }
    fn bytes8(&mut self, v: &[u8]) {
        // Callers validate lengths at the source; writing a wrong prefix would corrupt the
        // object, so a violation stops the program instead.
        assert!(v.len() <= u8::MAX as usize, "length {} over a u8 prefix", v.len());
        self.push(v.len() as u8);
        self.extend_from_slice(v)
    }
    fn bytes16(&mut self, v: &[u8]) {
        assert!(v.len() <= u16::MAX as usize, "length {} over a u16 prefix", v.len());
        self.u16(v.len() as u16);
        self.extend_from_slice(v)
    }
    fn bytes32(&mut self, v: &[u8]) {
        assert!(v.len() <= u32::MAX as usize, "length {} over a u32 prefix", v.len());
        self.u32(v.len() as u32);
        self.extend_from_slice(v)
    }
}

/// Bounds-checked little-endian reader; errors name the object being decoded.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
    id: &'a dyn Display,
}

impl<'a> Reader<'a> {
    /// Read `buf`, naming errors after `what` `id`.
    pub fn new(buf: &'a [u8], what: &'static str, id: &'a dyn Display) -> Self {
        Reader { buf, pos: 0, what, id }
    }

    /// Read `buf` from byte `pos` on (a decoder that stops and takes up again).
    pub fn at(buf: &'a [u8], pos: usize, what: &'static str, id: &'a dyn Display) -> Self {
        Reader { buf, pos: pos.min(buf.len()), what, id }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// A `Corrupt` error about this object.
    pub fn err(&self, detail: impl Display) -> Error {
        Error::corrupt(self.what, self.id, format!("{detail} (at byte {})", self.pos))
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Take the next `n` bytes.
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!("truncated: need {n} bytes, {} left", self.remaining())));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.raw(N)?);
        Ok(a)
    }

    /// Read a u8.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.arr::<1>()?[0])
    }
    /// Read a u16 LE.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    /// Read a u32 LE.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    /// Read a u64 LE.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    /// Read an i64 LE.
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.arr()?))
    }
    /// Read 32 bytes.
    pub fn id32(&mut self) -> Result<[u8; 32]> {
        self.arr()
    }
    /// Read a u8-length-prefixed byte string.
    pub fn bytes8(&mut self) -> Result<&'a [u8]> {
        let n = self.u8()? as usize;
        self.raw(n)
    }
    /// Read a u16-length-prefixed byte string.
    pub fn bytes16(&mut self) -> Result<&'a [u8]> {
        let n = self.u16()? as usize;
        self.raw(n)
    }
    /// Read a u32-length-prefixed byte string.
    pub fn bytes32(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.raw(n)
    }
    /// Read a u16-length-prefixed UTF-8 string.
    pub fn str16(&mut self) -> Result<String> {
        let b = self.bytes16()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }
    /// Read a count, refusing it unless `count * min_item_len` bytes remain. This keeps a
    /// forged count from driving an allocation.
    pub fn count(&mut self, count: u64, min_item_len: usize) -> Result<usize> {
        let need = count.saturating_mul(min_item_len.max(1) as u64);
        if need > self.remaining() as u64 {
            return Err(self.err(format!("count {count} needs at least {need} bytes, {} left", self.remaining())));
        }
        Ok(count as usize)
    }
    /// Read a u32 count of items of at least `min_item_len` bytes each.
    pub fn count32(&mut self, min_item_len: usize) -> Result<usize> {
        let c = self.u32()? as u64;
        self.count(c, min_item_len)
    }
    /// Read a u16 count of items of at least `min_item_len` bytes each.
    pub fn count16(&mut self, min_item_len: usize) -> Result<usize> {
        let c = self.u16()? as u64;
        self.count(c, min_item_len)
    }
    /// Require that everything was read.
    pub fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.err(format!("{} unexpected trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlobKind {
    /// A chunk of file content.
    Data = 0,
    /// A tree node (directory listing or chunk list).
    Tree = 1,
}

impl BlobKind {
    /// Decode the kind byte.
    pub fn from_u8(v: u8) -> Option<BlobKind> {
        match v {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            BlobKind::Data => "data blob",
            BlobKind::Tree => "tree blob",
        }
    }
}

/// How a blob's plaintext is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Stored as is.
    None = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Compression {
    /// Decode the compression byte.
    pub fn from_u8(v: u8) -> Option<Compression> {
        match v {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// The associated data a blob is sealed with: its kind and compression, so neither can be
/// changed in a pack header or index without the blob failing to open.
pub fn blob_aad(kind: BlobKind, compression: Compression) -> [u8; 2] {
    [kind as u8, compression as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        let h = FileKind::Index.header();
        assert_eq!(FileKind::Index.check_header(&h, &"x").unwrap(), b"");
        assert!(matches!(FileKind::Pack.check_header(&h, &"x"), Err(Error::Corrupt { .. })));
        let mut future = h;
        future[8] = 2;
        assert!(matches!(FileKind::Index.check_header(&future, &"x"), Err(Error::UnsupportedVersion { found: 2, .. })));
        assert!(FileKind::Index.check_header(&h[..5], &"x").is_err());
        // Snapshots: versions 1 to 3 are read, 4 is refused; 0 is no version at all.
        let mut snap = FileKind::Snapshot.header();
        assert_eq!(snap[8], 3);
        for (v, ok) in [(0, false), (1, true), (2, true), (3, true), (4, false)] {
            snap[8] = v;
            assert_eq!(FileKind::Snapshot.check_header(&snap, &"x").is_ok(), ok, "version {v}");
        }
    }

    #[test]
    fn reader_refuses_absurd_counts_and_truncation() {
        let mut v = Vec::new();
        v.u32(u32::MAX);
        let mut r = Reader::new(&v, "tree", &"x");
        assert!(r.count32(1).is_err());
        let mut r = Reader::new(&[1, 2], "tree", &"x");
        assert!(r.u32().is_err());
        let mut r = Reader::new(&[5, 1], "tree", &"x");
        assert!(r.bytes8().is_err());
    }
}
