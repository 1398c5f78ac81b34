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

/// Collects names; [`NameSorter::finish`] gives them back sorted, each once.
pub struct NameSorter {
    mem: Vec<Vec<u8>>,
    mem_bytes: usize,
    limit: usize,
    batches: Vec<File>,
}

impl NameSorter {
    /// A sorter holding at most about `limit` bytes of names in RAM.
    pub fn new(limit: usize) -> NameSorter {
        NameSorter { mem: Vec::new(), mem_bytes: 0, limit: limit.max(4096), batches: Vec::new() }
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
        let mut f = tempfile::tempfile()?;
        {
            let mut w = BufWriter::with_capacity(1 << 16, &mut f);
            for n in self.mem.drain(..) {
                w.write_all(&(n.len() as u32).to_le_bytes())?;
                w.write_all(&n)?;
            }
            w.flush()?;
        }
        f.rewind()?;
        self.mem = Vec::new();
        self.mem_bytes = 0;
        self.batches.push(f);
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
        let mut batches: Vec<BufReader<File>> =
            self.batches.into_iter().map(|f| BufReader::with_capacity(buf, f)).collect();
        let mut heap = BinaryHeap::new();
        for (i, b) in batches.iter_mut().enumerate() {
            if let Some(n) = read_name(b)? {
                heap.push(Reverse((n, i)));
            }
        }
        Ok(SortedNames { mem: Vec::new().into_iter(), batches, heap, last: None })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn equals_sort_and_dedup(names in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..800), limit in 0usize..6000) {
            let mut s = NameSorter::new(limit);
            for n in &names {
                s.push(n.clone()).unwrap();
            }
            let spilled = s.batches() > 0;
            let mut it = s.finish().unwrap();
            let mut got = Vec::new();
            while let Some(n) = it.next_name().unwrap() {
                got.push(n);
            }
            let mut want = names.clone();
            want.sort();
            want.dedup();
            prop_assert_eq!(got, want);
            let bytes: usize = names.iter().map(|n| n.len() + PER_NAME).sum();
            prop_assert_eq!(spilled, bytes > limit.max(4096));
        }
    }
}
