//! The one pack reader: every blob, pack header and pack range cairn reads (check,
//! restore, prune's repack, the mount) comes through here, so length checks, error
//! names and the open-file cache live in one place. Also the plan for reading
//! neighbouring blobs of a pack with one `pread` ([`coalesce`]).

use std::path::PathBuf;

use super::{Pool, Repository};
use crate::backend::Dir;
use crate::compress;
use crate::error::{Error, IoContext, Result};
use crate::format::index::Location;
use crate::format::pack::{decode_header, PackBlob, TRAILER_LEN};
use crate::format::tree::{self, Node};
use crate::format::{blob_aad, BlobKind, Compression, FileKind, HEADER_LEN};
use crate::id::{BlobId, FileId};

/// Two blobs of a pack at most this far apart are read with one `pread` (the bytes
/// between are read and dropped: cheaper than a second request).
pub const COALESCE_GAP: u64 = 64 << 10;
/// One coalesced read covers at most this many bytes (its buffer's size).
pub const COALESCE_MAX: u64 = 4 << 20;

/// How neighbouring blobs of a pack are read together: two at most `gap` bytes apart
/// share one read, which covers at most `max` bytes (a blob larger than that alone),
/// and whose gaps add up to at most `gap` or the bytes wanted, whichever is more: at
/// least half of what is read beyond one gap is wanted, so blobs scattered over a pack
/// (a batch's deduplicated chunks, stored long before) are not read with all between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spacing {
    /// The largest gap read and dropped rather than paid for with a second request.
    pub gap: u64,
    /// The most bytes one read covers (its buffer's size).
    pub max: u64,
}

impl Spacing {
    /// For a local disk: [`COALESCE_GAP`] and [`COALESCE_MAX`].
    pub const LOCAL: Spacing = Spacing { gap: COALESCE_GAP, max: COALESCE_MAX };
}

/// Split `items` (blobs in the order they are wanted) into runs read with one request
/// each: consecutive blobs of one pack, in ascending offsets, at most `spacing.gap`
/// apart and `spacing.max` in all; the same blob twice in a row stays in its run. Calls
/// `read(range of items, from, to)` per run.
pub fn coalesce<T>(
    items: &[T],
    loc: impl Fn(&T) -> &Location,
    spacing: Spacing,
    mut read: impl FnMut(std::ops::Range<usize>, u64, u64) -> Result<()>,
) -> Result<()> {
    let mut i = 0;
    while i < items.len() {
        let first = loc(&items[i]);
        let mut last = first.offset;
        let mut end = first.offset as u64 + first.stored_len as u64;
        let (mut wanted, mut gaps) = (first.stored_len as u64, 0u64);
        let mut j = i + 1;
        while let Some(next) = items.get(j).map(&loc) {
            let next_end = next.offset as u64 + next.stored_len as u64;
            let again = next.pack == first.pack && next.offset == last;
            if !again {
                let gap = (next.offset as u64).wrapping_sub(end);
                if next.pack != first.pack
                    || (next.offset as u64) < end
                    || gap > spacing.gap
                    || gaps + gap > spacing.gap.max(wanted + next.stored_len as u64)
                    || next_end - first.offset as u64 > spacing.max
                {
                    break;
                }
                gaps += gap;
                wanted += next.stored_len as u64;
            }
            last = next.offset;
            end = end.max(next_end);
            j += 1;
        }
        read(i..j, first.offset as u64, end)?;
        i = j;
    }
    Ok(())
}

/// A data blob a reader wants, where it is, and where its plaintext goes (`to`).
/// Memory: ~90 B plus `T` (restore: 24 B) per blob of a batch.
pub struct Wanted<T> {
    /// The blob.
    pub id: BlobId,
    /// Where the index says it is.
    pub loc: Location,
    /// Where it goes.
    pub to: T,
}

/// A wanted blob's plaintext, or why it could not be had (the run's read failed, or
/// the blob did not open).
pub type Opened<'a> = std::result::Result<Vec<u8>, &'a Error>;

/// Neighbouring wanted blobs of one pack, read with one request ([`Repository::read_run`]).
pub struct Run<T> {
    /// The pack.
    pub pack: FileId,
    /// The bytes read.
    pub from: u64,
    /// End of the bytes read.
    pub to: u64,
    /// Ascending offsets; a blob wanted more than once comes that many times in a row.
    pub wants: Vec<Wanted<T>>,
}

/// Plan the reads of a batch of wanted blobs: by pack, the packs in the order the batch
/// first wants them (the order a backup wrote them, for a batch in the order of a
/// snapshot's files), each pack's blobs by offset, neighbours coalesced by `spacing`.
/// Every pack is read once per batch, front to back.
pub fn plan<T>(mut wants: Vec<Wanted<T>>, spacing: Spacing) -> Vec<Run<T>> {
    let mut order = std::collections::HashMap::new();
    for w in &wants {
        let n = order.len();
        order.entry(w.loc.pack).or_insert(n);
    }
    // Stable: a blob wanted twice keeps its wants in the batch's order.
    wants.sort_by_key(|w| (order[&w.loc.pack], w.loc.offset));
    let mut cuts = Vec::new();
    let _ = coalesce(
        &wants,
        |w| &w.loc,
        spacing,
        |r, from, to| {
            cuts.push((r.len(), from, to));
            Ok(())
        },
    );
    let mut it = wants.into_iter();
    cuts.into_iter()
        .map(|(n, from, to)| {
            let wants: Vec<Wanted<T>> = it.by_ref().take(n).collect();
            Run { pack: wants[0].loc.pack, from, to, wants }
        })
        .collect()
}

impl Repository {
    /// Path of a pack file.
    pub fn pack_path(&self, pack: &FileId) -> PathBuf {
        self.backend.path(Dir::Data, pack)
    }

    /// Read the sealed bytes of a blob. Tree blobs are read through the backend's local
    /// copy of their pack, if it keeps one ([`Backend::read_at_kept`]).
    pub fn read_sealed_blob(&self, loc: &Location) -> Result<Vec<u8>> {
        let (from, to) = (loc.offset as u64, loc.offset as u64 + loc.stored_len as u64);
        let mut buf = Vec::new();
        let via = if loc.kind == BlobKind::Tree { Via::Kept } else { Via::Any };
        self.read_range_into(&loc.pack, from, to, &mut buf, via)?;
        Ok(buf)
    }

    /// Read bytes `from..to` of a pack (one or more neighbouring sealed blobs).
    pub fn read_pack_range(&self, pack: &FileId, from: u64, to: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_pack_range_into(pack, from, to, &mut buf)?;
        Ok(buf)
    }

    /// [`Repository::read_pack_range`] into `buf`, reusing its allocation: `buf` ends up
    /// holding exactly the bytes read (only bytes past its old length are zeroed first).
    pub fn read_pack_range_into(&self, pack: &FileId, from: u64, to: u64, buf: &mut Vec<u8>) -> Result<()> {
        self.read_range_into(pack, from, to, buf, Via::Any)
    }

    /// [`Repository::read_pack_range_into`] as a read planned ahead: one request, with no
    /// read-ahead behind it ([`Backend::read_planned`]).
    ///
    /// [`Backend::read_planned`]: crate::backend::Backend::read_planned
    pub fn read_planned_into(&self, pack: &FileId, from: u64, to: u64, buf: &mut Vec<u8>) -> Result<()> {
        self.read_range_into(pack, from, to, buf, Via::Planned)
    }

    /// Read `run` with one request ([`Backend::read_planned`]: no read-ahead) and open its
    /// data blobs, handing `f` the wants of each blob (a blob wanted twice is opened
    /// once) with its plaintext in a buffer of `pool`, which `f` keeps or gives back, or
    /// with the error that kept it. Memory: the run's sealed bytes (a buffer of `pool`,
    /// given back at the end) and what `f` keeps.
    ///
    /// The one pack reader of restore and the mount.
    ///
    /// [`Backend::read_planned`]: crate::backend::Backend::read_planned
    pub fn read_run<T>(&self, run: &Run<T>, pool: &Pool, f: &mut dyn FnMut(&[Wanted<T>], Opened<'_>)) {
        let mut sealed = pool.take_transient((run.to - run.from) as usize);
        let read = self.read_range_into(&run.pack, run.from, run.to, &mut sealed, Via::Planned);
        let mut i = 0;
        while let Some(w) = run.wants.get(i) {
            let same = run.wants[i..].iter().take_while(|o| o.id == w.id && o.loc.offset == w.loc.offset).count();
            let failed;
            let opened = match &read {
                Err(e) => Err(e),
                Ok(()) => match self.open_in_run(run, w, &mut sealed, pool) {
                    Ok(plain) => Ok(plain),
                    Err(e) => {
                        failed = e;
                        Err(&failed)
                    }
                },
            };
            f(&run.wants[i..i + same], opened);
            i += same;
        }
        pool.give(sealed);
    }

    /// Open want `w` of `run` from the run's `sealed` bytes (which this garbles) into a
    /// buffer of `pool`.
    fn open_in_run<T>(&self, run: &Run<T>, w: &Wanted<T>, sealed: &mut [u8], pool: &Pool) -> Result<Vec<u8>> {
        let at = (w.loc.offset as u64 - run.from) as usize;
        let b = (sealed.get_mut(at..at + w.loc.stored_len as usize))
            .ok_or_else(|| Error::corrupt("pack", run.pack, "a planned read is shorter than its blobs"))?;
        self.open_data_into(&w.id, &w.loc, b, pool)
    }

    /// Open data blob `id` at `loc` from its `sealed` bytes (which this garbles) into a
    /// buffer of `pool` (given back if it does not open).
    pub(super) fn open_data_into(
        &self,
        id: &BlobId,
        loc: &Location,
        sealed: &mut [u8],
        pool: &Pool,
    ) -> Result<Vec<u8>> {
        let mut plain = pool.take(loc.raw_len as usize);
        match self.open_blob_into(id, BlobKind::Data, loc, sealed, &mut plain) {
            Ok(()) => Ok(plain),
            Err(e) => {
                pool.give(plain);
                Err(e)
            }
        }
    }

    /// The one ranged read of a pack, `via` the backend's method for it; a read past the
    /// end names the pack truncated.
    fn read_range_into(&self, pack: &FileId, from: u64, to: u64, buf: &mut Vec<u8>, via: Via) -> Result<()> {
        let n = to.saturating_sub(from) as usize;
        buf.truncate(n);
        buf.resize(n, 0);
        let r = match via {
            Via::Any => self.backend.read_at(Dir::Data, pack, from, buf),
            Via::Kept => self.backend.read_at_kept(Dir::Data, pack, from, buf),
            Via::Planned => self.backend.read_planned(Dir::Data, pack, from, buf),
        };
        r.map_err(|e| match e {
            Error::Io { err, .. } if err.kind() == std::io::ErrorKind::UnexpectedEof => {
                Error::corrupt("pack", pack, format!("truncated: bytes {from}..{to} are past the end"))
            }
            e => e,
        })
    }

    /// Read and decrypt the header of pack `id`: its blobs with their offsets. The file
    /// header, the trailer and the sealed header are checked against the file's length
    /// (docs/format.md, section 10); the blobs must exactly fill the space before the
    /// header. Memory: the sealed header (42 B per blob) and the list (~56 B per blob).
    pub fn read_pack_header(&self, id: &FileId) -> Result<PackHeader> {
        let len = self.backend.stat(Dir::Data, id)?.ok_or(Error::NotFound { what: "pack", id: id.to_string() })?.len;
        let read = |buf: &mut [u8], off: u64| self.backend.read_at(Dir::Data, id, off, buf);
        if len < (HEADER_LEN + TRAILER_LEN) as u64 {
            return Err(Error::corrupt("pack", id, format!("{len} bytes is too short for a pack")));
        }
        let mut head = [0u8; HEADER_LEN];
        read(&mut head, 0)?;
        FileKind::Pack.check_header(&head, id)?;
        let mut trailer = [0u8; TRAILER_LEN];
        read(&mut trailer, len - TRAILER_LEN as u64)?;
        let hlen = u32::from_le_bytes(trailer) as u64;
        if hlen > MAX_PACK_HEADER {
            return Err(Error::corrupt("pack", id, format!("header length {hlen} is absurd")));
        }
        let blobs_len = (len - (HEADER_LEN + TRAILER_LEN) as u64).checked_sub(hlen).ok_or_else(|| {
            Error::corrupt("pack", id, format!("header length {hlen} exceeds the file ({len} bytes)"))
        })?;
        // Decrypted where it was read: at most 64 MiB for a forged header, which then
        // fails authentication; cairn writes headers of at most 2.75 MB.
        let mut sealed = vec![0u8; hlen as usize];
        read(&mut sealed, HEADER_LEN as u64 + blobs_len)?;
        let header = self.keys.open_in_place(&head, &mut sealed, "pack header", id)?;
        let blobs = decode_header(header, id, blobs_len)?;
        Ok(PackHeader { id: *id, head, blobs, tail_len: hlen as usize + TRAILER_LEN })
    }

    /// Read pack `id` from start to end, handing each blob's sealed bytes (which `f` may
    /// garble: they are not used again) with its location to `f`, and hashing every byte
    /// on the way. Returns whether the file's content matches its name. Memory: one
    /// read buffer (1 MiB) and one blob (at most 16 MiB), whatever the pack's size.
    pub fn stream_pack(&self, h: &PackHeader, f: BlobVisitor<'_>) -> Result<bool> {
        use std::io::{BufReader, Read};
        let path = self.pack_path(&h.id);
        let mut r = BufReader::with_capacity(1 << 20, self.backend.reader(Dir::Data, &h.id, HEADER_LEN as u64)?);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&h.head);
        let mut buf = Vec::new();
        for (b, off) in &h.blobs {
            buf.resize(b.stored_len as usize, 0);
            r.read_exact(&mut buf).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Error::corrupt("pack", h.id, "truncated while read"),
                _ => Error::Io { path: path.clone(), err: e },
            })?;
            hasher.update(&buf);
            f(b, &h.location(b, *off), &mut buf)?;
        }
        // The sealed header and trailer follow the blobs: read on, for the hash.
        buf.resize(h.tail_len, 0);
        r.read_exact(&mut buf).at(&path)?;
        hasher.update(&buf);
        Ok(FileId(*hasher.finalize().as_bytes()) == h.id)
    }

    /// Open, decompress and verify a blob's sealed bytes without copying them: decrypts
    /// `sealed` where it lies (it is garbage afterwards) and leaves the plaintext in
    /// `plain`, reusing its allocation. The blob must be of `kind`, the kind its reader
    /// expects: a chunk list naming a tree blob (or a directory naming a data blob) is
    /// damage, never content. Every blob read in cairn goes through here.
    pub fn open_blob_into(
        &self,
        id: &BlobId,
        kind: BlobKind,
        loc: &Location,
        sealed: &mut [u8],
        plain: &mut Vec<u8>,
    ) -> Result<()> {
        let what = kind.name();
        let named = BlobIn(id, &loc.pack);
        if loc.kind != kind {
            return Err(Error::corrupt(what, &named, format!("the index lists it as a {}", loc.kind.name())));
        }
        let body = self.keys.open_in_place(&blob_aad(loc.kind, loc.compression), sealed, what, &named)?;
        match loc.compression {
            Compression::None => {
                plain.clear();
                plain.extend_from_slice(body);
            }
            Compression::Zstd => compress::decompress_into(body, loc.raw_len as usize, what, &named, plain)?,
        }
        if plain.len() != loc.raw_len as usize {
            return Err(Error::corrupt(
                what,
                &named,
                format!("length {} differs from the index's {}", plain.len(), loc.raw_len),
            ));
        }
        if self.keys.blob_id(loc.kind, plain) != *id {
            return Err(Error::corrupt(what, &named, "content does not match its id"));
        }
        Ok(())
    }

    /// Read a blob of `kind`: look it up, read it, decrypt, decompress and verify its id
    /// and kind.
    pub fn read_blob(&self, id: &BlobId, kind: BlobKind) -> Result<Vec<u8>> {
        let loc = self.index.try_get(id)?.ok_or_else(|| Error::NotFound { what: kind.name(), id: id.to_hex() })?;
        let mut sealed = self.read_sealed_blob(&loc)?;
        let mut plain = Vec::new();
        self.open_blob_into(id, kind, &loc, &mut sealed, &mut plain)?;
        Ok(plain)
    }

    /// Read and decode a tree node.
    pub fn read_tree(&self, id: &BlobId) -> Result<Node> {
        tree::decode(&self.read_blob(id, BlobKind::Tree)?, id)
    }
}

/// Which of the backend's reads a ranged read of a pack goes through.
#[derive(Clone, Copy)]
enum Via {
    /// [`Backend::read_at`](crate::backend::Backend::read_at) (a remote one may read ahead).
    Any,
    /// A pack of trees, read again and again: through a local copy where kept.
    Kept,
    /// A run its caller planned: these bytes only.
    Planned,
}

/// Longest sealed pack header a reader accepts: 64 MiB is 1.6 M blob records, far past
/// any pack cairn writes (at most [`packer::MAX_PACK_BLOBS`] blobs). The limit keeps a
/// forged trailer from driving a huge allocation.
const MAX_PACK_HEADER: u64 = 64 << 20;

/// Receives each blob of a streamed pack: its record, where it is, and its sealed bytes.
pub type BlobVisitor<'a> = &'a mut dyn FnMut(&PackBlob, &Location, &mut [u8]) -> Result<()>;

/// A pack's decrypted header (see [`Repository::read_pack_header`]).
pub struct PackHeader {
    /// The pack.
    pub id: FileId,
    head: [u8; HEADER_LEN],
    /// Its blobs in file order, each with its offset.
    pub blobs: Vec<(PackBlob, u64)>,
    /// Bytes of the sealed header and trailer.
    tail_len: usize,
}

impl PackHeader {
    /// Where blob `b`, at offset `offset` of this pack, is stored.
    pub fn location(&self, b: &PackBlob, offset: u64) -> Location {
        Location {
            pack: self.id,
            offset: offset as u32,
            stored_len: b.stored_len,
            raw_len: b.raw_len,
            kind: b.kind,
            compression: b.compression,
        }
    }
}

/// Names a blob together with its pack in messages.
struct BlobIn<'a>(&'a BlobId, &'a FileId);

impl std::fmt::Display for BlobIn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (in pack {})", self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(pack: u8, offset: u32, len: u32) -> Location {
        Location {
            pack: FileId([pack; 32]),
            offset,
            stored_len: len,
            raw_len: len,
            kind: BlobKind::Data,
            compression: Compression::None,
        }
    }

    fn want(n: u8, l: Location) -> Wanted<usize> {
        Wanted { id: BlobId([n; 32]), loc: l, to: n as usize }
    }

    /// (pack, from, to, wants' `to`) of each run.
    fn runs(r: Vec<Run<usize>>) -> Vec<(u8, u64, u64, Vec<usize>)> {
        r.into_iter().map(|r| (r.pack.0[0], r.from, r.to, r.wants.iter().map(|w| w.to).collect())).collect()
    }

    const S: Spacing = Spacing { gap: 100, max: 1000 };

    #[test]
    fn plan_reads_each_pack_once_in_the_order_first_wanted() {
        let wants = vec![
            want(1, loc(2, 50, 10)),
            want(2, loc(1, 0, 10)),
            want(3, loc(2, 0, 10)),
            want(4, loc(1, 10, 10)),
            // The same blob twice (a file holding a chunk twice): one read, both wants.
            want(5, loc(2, 50, 10)),
        ];
        assert_eq!(runs(plan(wants, S)), vec![(2, 0, 60, vec![3, 1, 5]), (1, 0, 20, vec![2, 4])]);
    }

    #[test]
    fn plan_splits_runs_at_gaps_and_at_their_largest() {
        // A gap wider than `gap` splits; so does passing `max`.
        let wants = vec![want(1, loc(1, 0, 10)), want(2, loc(1, 111, 10)), want(3, loc(1, 121, 1000))];
        assert_eq!(runs(plan(wants, S)), vec![(1, 0, 10, vec![1]), (1, 111, 121, vec![2]), (1, 121, 1121, vec![3])]);
    }

    #[test]
    fn plan_reads_through_gaps_only_while_half_is_wanted() {
        // Blobs of 10 bytes 90 apart: each gap alone is within `gap`, but after the
        // first their sum passes the bytes wanted, and a new read starts.
        let wants: Vec<_> = (0..6).map(|i| want(i, loc(1, i as u32 * 100, 10))).collect();
        let got = runs(plan(wants, S));
        assert_eq!(got, vec![(1, 0, 110, vec![0, 1]), (1, 200, 310, vec![2, 3]), (1, 400, 510, vec![4, 5])]);
        // Blobs as large as their gaps share one read.
        let wants: Vec<_> = (0..6).map(|i| want(i, loc(1, i as u32 * 100, 50))).collect();
        assert_eq!(runs(plan(wants, S)), vec![(1, 0, 550, vec![0, 1, 2, 3, 4, 5])]);
    }
}
