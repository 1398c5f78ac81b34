//! Sorting byte strings (directory entry names) in bounded memory.
//!
//! A directory is listed in readdir order but stored, and compared with its parent
//! snapshot, in name order. Names are kept in RAM up to a byte limit; past it, each
//! sorted batch goes to an unnamed temp file and the batches are merged as they are read
//! back, so a directory of ten million entries costs the limit plus one small read buffer
//! per batch, not ten million names.
//!
//! Memory: names held in RAM are charged `len + 32` bytes each (the bytes plus the
//! `Vec` header and allocator slack), at most `limit`; a merge holds one buffer of
//! `clamp(limit / batches, 4 KiB, 64 KiB)` per batch.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};

/// Bytes charged per name besides its own bytes.
const PER_NAME: usize = 32;
/// Batches kept on disk at most: at this many, they are merged into one. Bounds the
/// open files (a sort of 10^8 ids in 8 MiB made 460 batches, near the usual limit of
/// 1,024 descriptors at a smaller budget) and the merge's buffers (4 KiB or more each).
const MAX_BATCHES: usize = 64;

/// Collects names; [`NameSorter::finish`] gives them back sorted, each once.
pub struct NameSorter {
    mem: Vec<Vec<u8>>,
    mem_bytes: usize,
    limit: usize,
    batches: Vec<File>,
    compactions: usize,
}

impl NameSorter {
    /// A sorter holding at most about `limit` bytes of names in RAM.
    pub fn new(limit: usize) -> NameSorter {
        NameSorter { mem: Vec::new(), mem_bytes: 0, limit: limit.max(4096), batches: Vec::new(), compactions: 0 }
    }

    /// Add a name.
    pub fn push(&mut self, name: Vec<u8>) -> io::Result<()> {
        self.mem_bytes += name.len() + PER_NAME;
        self.mem.push(name);
        if self.mem_bytes > self.limit {
            self.spill()?;
        }
        Ok(())
    }

    /// Names pushed that went to disk in batches (for tests).
    pub fn batches(&self) -> usize {
        self.batches.len()
    }

    fn spill(&mut self) -> io::Result<()> {
        self.mem.sort_unstable();
        self.mem.dedup();
        let mut names = std::mem::take(&mut self.mem).into_iter();
        let f = write_batch(&mut || Ok(names.next()))?;
        self.mem_bytes = 0;
        self.batches.push(f);
        if self.batches.len() >= MAX_BATCHES {
            self.compact()?;
        }
        Ok(())
    }

    /// Merge every batch into one (sorted, without repeats), with one small buffer per
    /// batch.
    fn compact(&mut self) -> io::Result<()> {
        let batches = std::mem::take(&mut self.batches);
        let mut merged = merge_batches(batches, 4096)?;
        self.batches.push(write_batch(&mut || merged.next_name())?);
        self.compactions += 1;
        Ok(())
    }

    /// The names in ascending byte order, without repeats.
    pub fn finish(mut self) -> io::Result<SortedNames> {
        self.mem.sort_unstable();
        self.mem.dedup();
        if self.batches.is_empty() {
            return Ok(SortedNames {
                mem: self.mem.into_iter(),
                batches: Vec::new(),
                heap: BinaryHeap::new(),
                last: None,
            });
        }
        if !self.mem.is_empty() {
            self.spill()?;
        }
        let buf = (self.limit / self.batches.len()).clamp(4096, 1 << 16);
        merge_batches(self.batches, buf)
    }

    /// Times the batches were merged into one to stay under [`MAX_BATCHES`] (for tests).
    pub fn compactions(&self) -> usize {
        self.compactions
    }
}

/// The names of sorted `batches`, merged, each once; `buf` bytes of read buffer each.
fn merge_batches(batches: Vec<File>, buf: usize) -> io::Result<SortedNames> {
    let mut batches: Vec<BufReader<File>> = batches.into_iter().map(|f| BufReader::with_capacity(buf, f)).collect();
    let mut heap = BinaryHeap::new();
    for (i, b) in batches.iter_mut().enumerate() {
        if let Some(n) = read_name(b)? {
            heap.push(Reverse((n, i)));
        }
    }
    Ok(SortedNames { mem: Vec::new().into_iter(), batches, heap, last: None })
}

/// A batch file of the names `next` gives (length-prefixed), rewound for reading.
fn write_batch(next: &mut dyn FnMut() -> io::Result<Option<Vec<u8>>>) -> io::Result<File> {
    let mut f = tempfile::tempfile()?;
    {
        let mut w = BufWriter::with_capacity(1 << 16, &mut f);
        while let Some(n) = next()? {
            w.write_all(&(n.len() as u32).to_le_bytes())?;
            w.write_all(&n)?;
        }
        w.flush()?;
    }
    f.rewind()?;
    Ok(f)
}

fn read_name(r: &mut BufReader<File>) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut n = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut n)?;
    Ok(Some(n))
}

/// Sorted names, from RAM or merged from batches on disk.
pub struct SortedNames {
    mem: std::vec::IntoIter<Vec<u8>>,
    batches: Vec<BufReader<File>>,
    heap: BinaryHeap<Reverse<(Vec<u8>, usize)>>,
    last: Option<Vec<u8>>,
}

impl SortedNames {
    /// The next name, or `None` at the end.
    pub fn next_name(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.batches.is_empty() {
            return Ok(self.mem.next());
        }
        while let Some(Reverse((n, i))) = self.heap.pop() {
            if let Some(next) = read_name(&mut self.batches[i])? {
                self.heap.push(Reverse((next, i)));
            }
            // A name in two batches comes out twice in a row: keep one.
            if self.last.as_ref() != Some(&n) {
                self.last = Some(n.clone());
                return Ok(Some(n));
            }
        }
        Ok(None)
    }
}

/// A set of 32-byte ids, sorted, in an unnamed temp file: 32 B per id on disk, nothing
/// in RAM. Membership is a binary search of positional reads (answered from the page
/// cache once warm), for sets too large to hold: the packs a repository lists.
pub struct IdSet {
    file: File,
    len: u64,
}

/// Writes an [`IdSet`] from ids in ascending order (a repeat is kept once).
pub struct IdSetWriter {
    out: BufWriter<File>,
    len: u64,
    last: Option<[u8; 32]>,
}

impl IdSetWriter {
    /// Add `id`, which must not be smaller than the last one added.
    pub fn push(&mut self, id: &[u8; 32]) -> io::Result<()> {
        if self.last.as_ref() == Some(id) {
            return Ok(());
        }
        if self.last.is_some_and(|l| l > *id) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "ids out of order"));
        }
        self.out.write_all(id)?;
        self.last = Some(*id);
        self.len += 1;
        Ok(())
    }

    /// The set.
    pub fn finish(self) -> io::Result<IdSet> {
        Ok(IdSet { file: self.out.into_inner().map_err(|e| e.into_error())?, len: self.len })
    }
}

impl IdSet {
    /// A writer for a new set.
    pub fn writer() -> io::Result<IdSetWriter> {
        Ok(IdSetWriter { out: BufWriter::with_capacity(1 << 16, tempfile::tempfile()?), len: 0, last: None })
    }

    /// The set of `names` (each 32 bytes; others are refused).
    pub fn of_sorted(mut names: SortedNames) -> io::Result<IdSet> {
        let mut w = IdSet::writer()?;
        while let Some(n) = names.next_name()? {
            let id: [u8; 32] = n.as_slice().try_into().map_err(|_| io::Error::other("not a 32-byte id"))?;
            w.push(&id)?;
        }
        w.finish()
    }

    /// Number of ids.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `id` is in the set: about log2(len) reads of 32 bytes.
    pub fn contains(&self, id: &[u8; 32]) -> io::Result<bool> {
        use std::os::unix::fs::FileExt;
        let (mut lo, mut hi) = (0u64, self.len);
        let mut rec = [0u8; 32];
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            self.file.read_exact_at(&mut rec, mid * 32)?;
            match rec.cmp(id) {
                std::cmp::Ordering::Equal => return Ok(true),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(false)
    }

    /// The ids in order, read 64 KiB at a time.
    pub fn iter(&self) -> IdIter<'_> {
        IdIter { set: self, buf: Vec::new(), pos: 0, next: 0 }
    }
}

/// The ids of an [`IdSet`] in order ([`IdSet::iter`]).
pub struct IdIter<'a> {
    set: &'a IdSet,
    buf: Vec<u8>,
    pos: usize,
    /// Index of the next id to read from the file.
    next: u64,
}

impl Iterator for IdIter<'_> {
    type Item = io::Result<[u8; 32]>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::os::unix::fs::FileExt;
        if self.pos == self.buf.len() {
            if self.next == self.set.len {
                return None;
            }
            let n = ((self.set.len - self.next) as usize).min(2048);
            self.buf.resize(n * 32, 0);
            if let Err(e) = self.set.file.read_exact_at(&mut self.buf, self.next * 32) {
                self.next = self.set.len; // stop after the error
                self.buf.clear();
                return Some(Err(e));
            }
            self.next += n as u64;
            self.pos = 0;
        }
        self.pos += 32;
        Some(Ok(self.buf[self.pos - 32..self.pos].try_into().expect("32 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a sorter gives back, and what it should: `names` sorted, each once.
    fn back_and_want(s: NameSorter, names: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut it = s.finish().unwrap();
        let mut got = Vec::new();
        while let Some(n) = it.next_name().unwrap() {
            got.push(n);
        }
        let mut want = names.to_vec();
        want.sort();
        want.dedup();
        (got, want)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn equals_sort_and_dedup(names in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..800), limit in 0usize..6000) {
            let mut s = NameSorter::new(limit);
            for n in &names {
                s.push(n.clone()).unwrap();
            }
            let spilled = s.batches() > 0;
            let (got, want) = back_and_want(s, &names);
            prop_assert_eq!(got, want);
            let bytes: usize = names.iter().map(|n| n.len() + PER_NAME).sum();
            prop_assert_eq!(spilled, bytes > limit.max(4096));
        }

        #[test]
        fn many_batches_are_merged_as_they_come(names in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 100..120), 0..6000)) {
            // 4 KiB of names per batch (~29 names): up to ~210 batches, merged every
            // MAX_BATCHES.
            let mut s = NameSorter::new(0);
            for n in &names {
                s.push(n.clone()).unwrap();
            }
            prop_assert!(s.batches() < MAX_BATCHES);
            let compacted = s.compactions() > 0;
            let (got, want) = back_and_want(s, &names);
            prop_assert_eq!(got, want);
            // Every 4 KiB spills one batch: at 64 x 4 KiB the batches were merged.
            let bytes: usize = names.iter().map(|n| n.len() + PER_NAME).sum();
            if bytes > 80 * 4096 {
                prop_assert!(compacted, "{} bytes in batches of 4 KiB, never merged", bytes);
            }
            if bytes < 60 * 4096 {
                prop_assert!(!compacted);
            }
        }

        #[test]
        fn id_set_finds_exactly_its_ids(ids in proptest::collection::vec(any::<[u8; 32]>(), 0..300), probes in proptest::collection::vec(any::<[u8; 32]>(), 0..50)) {
            let mut sorted = ids.clone();
            sorted.sort();
            let mut w = IdSet::writer().unwrap();
            for id in &sorted {
                w.push(id).unwrap();
            }
            let set = w.finish().unwrap();
            sorted.dedup();
            prop_assert_eq!(set.len(), sorted.len() as u64);
            for id in sorted.iter().chain(&probes) {
                prop_assert_eq!(set.contains(id).unwrap(), sorted.binary_search(id).is_ok());
            }
            let back: Vec<[u8; 32]> = set.iter().map(Result::unwrap).collect();
            prop_assert_eq!(back, sorted);
        }
    }
}
