//! External partition-and-sort of index records: loads many index files at once (a
//! rebuild on a new machine, a large catch-up) into one run in bounded memory, writing
//! every record twice (partition, run) instead of through repeated spills and merges.
//!
//! Ids are keyed BLAKE3 and so uniform: records go to 256 partition files by one byte of
//! the id, so each holds about 1/256 of them. Partitions are then read in id order, sorted
//! in RAM and handed on. A partition larger than the sort buffer (beyond ~256 x the
//! buffer, or many copies of one id) is partitioned again by the next byte.
//!
//! Memory: 256 write buffers of `buf_bytes / 256` (4-64 KiB each) while partitioning; one
//! partition's records (48 B each, at most `sort_bytes`) while sorting.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;

use super::run::{Record, RECORD};
use crate::error::{IoContext, Result};

const FANOUT: usize = 256;

/// Partition files being written under one directory.
pub struct Partitioner {
    dir: PathBuf,
    /// The id byte that picks the partition.
    level: usize,
    parts: Vec<Option<BufWriter<File>>>,
    counts: Vec<u64>,
    buf_bytes: usize,
    total: u64,
}

impl Partitioner {
    /// Partition by id byte `level` into files under `dir` (created; removed when drained).
    pub fn new(dir: PathBuf, level: usize, buf_bytes: usize) -> Result<Partitioner> {
        fs::create_dir_all(&dir).at(&dir)?;
        Ok(Partitioner {
            dir,
            level,
            parts: (0..FANOUT).map(|_| None).collect(),
            counts: vec![0; FANOUT],
            buf_bytes,
            total: 0,
        })
    }

    /// Records pushed so far (copies of one id counted each time).
    pub fn len(&self) -> u64 {
        self.total
    }

    /// True if nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    fn part_path(&self, b: usize) -> PathBuf {
        self.dir.join(format!("part-{b:02x}"))
    }

    /// Add a record.
    pub fn push(&mut self, r: &Record) -> Result<()> {
        let b = r.id[self.level] as usize;
        if self.parts[b].is_none() {
            let p = self.part_path(b);
            let f = File::create(&p).at(&p)?;
            let cap = (self.buf_bytes / FANOUT).clamp(4096, 65536);
            self.parts[b] = Some(BufWriter::with_capacity(cap, f));
        }
        let mut e = [0u8; RECORD];
        r.write(&mut e);
        let w = self.parts[b].as_mut().expect("just created");
        w.write_all(&e).at(self.dir.join(format!("part-{b:02x}")))?;
        self.counts[b] += 1;
        self.total += 1;
        Ok(())
    }

    /// Hand every record to `out` in ascending id order, each id once (the first pushed
    /// wins), holding at most `sort_bytes` of records; removes the files as it goes.
    pub fn drain_sorted(mut self, sort_bytes: usize, out: &mut dyn FnMut(&Record) -> Result<()>) -> Result<()> {
        for b in 0..FANOUT {
            if let Some(w) = self.parts[b].take() {
                let p = self.part_path(b);
                w.into_inner().map_err(|e| e.into_error()).at(&p)?;
            }
        }
        for b in 0..FANOUT {
            let n = self.counts[b];
            if n == 0 {
                continue;
            }
            let path = self.part_path(b);
            let mut input = RecordReader::open(path.clone(), n)?;
            if n.saturating_mul(RECORD as u64) <= sort_bytes as u64 {
                let mut recs = Vec::with_capacity(n as usize);
                while let Some(r) = input.next()? {
                    recs.push(r);
                }
                // Stable: of several copies of an id, the first pushed comes first.
                recs.sort_by_key(|r| r.id);
                let mut last = None;
                for r in &recs {
                    if last != Some(r.id) {
                        out(r)?;
                        last = Some(r.id);
                    }
                }
            } else if self.level + 1 < 32 {
                let mut sub = Partitioner::new(self.dir.join(format!("sub-{b:02x}")), self.level + 1, self.buf_bytes)?;
                while let Some(r) = input.next()? {
                    sub.push(&r)?;
                }
                sub.drain_sorted(sort_bytes, out)?;
            } else if let Some(r) = input.next()? {
                // Every byte was a partition key: all records here are copies of one id.
                out(&r)?;
            }
            drop(input);
            fs::remove_file(&path).at(&path)?;
        }
        fs::remove_dir(&self.dir).at(&self.dir)?;
        Ok(())
    }
}

/// Reads back a partition file of `n` records, 64 KiB at a time.
struct RecordReader {
    path: PathBuf,
    file: File,
    left: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl RecordReader {
    fn open(path: PathBuf, n: u64) -> Result<RecordReader> {
        let file = File::open(&path).at(&path)?;
        Ok(RecordReader { path, file, left: n, buf: Vec::new(), pos: 0 })
    }

    fn next(&mut self) -> Result<Option<Record>> {
        if self.pos == self.buf.len() {
            if self.left == 0 {
                return Ok(None);
            }
            let n = self.left.min(1365) as usize;
            self.buf.resize(n * RECORD, 0);
            self.file.read_exact(&mut self.buf).at(&self.path)?;
            self.left -= n as u64;
            self.pos = 0;
        }
        self.pos += RECORD;
        Ok(Some(Record::read(&self.buf[self.pos - RECORD..self.pos])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn rec(id: [u8; 32], n: u32) -> Record {
        Record { id, pack: n, offset: n, stored: n, raw_len: n }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Any sort buffer, down to one record (every partition split again), gives the
        /// ids sorted, each once, the first copy winning; nothing is left on disk.
        #[test]
        fn equals_a_first_wins_sorted_map(
            ids in proptest::collection::vec(proptest::array::uniform32(0u8..4), 0..300),
            sort_records in 1usize..400,
        ) {
            let t = tempfile::tempdir().unwrap();
            let mut p = Partitioner::new(t.path().join("s"), 0, 1 << 16).unwrap();
            let mut want = BTreeMap::new();
            for (i, id) in ids.iter().enumerate() {
                p.push(&rec(*id, i as u32)).unwrap();
                want.entry(*id).or_insert(i as u32);
            }
            prop_assert_eq!(p.len(), ids.len() as u64);
            let mut got = Vec::new();
            p.drain_sorted(sort_records * RECORD, &mut |r| { got.push((r.id, r.pack)); Ok(()) }).unwrap();
            prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
            prop_assert!(!t.path().join("s").exists());
        }
    }
}
