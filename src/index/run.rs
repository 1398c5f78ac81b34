//! Immutable sorted runs of index records: the on-disk part of the chunk index.
//!
//! ```text
//! page 0             header: "CAIRNRUN" version(2) k(1) pad(6) count(u64) pages(u64) filter_words(u64)
//! pages 1..=pages    85 records of 48 bytes each, sorted by id, zero-padded to 4096 bytes
//! fence              pages x u64: the first 8 bytes (big-endian) of each page's first id
//! filter             filter_words x u64 (see filter.rs)
//! ```
//! A record: id (32) | pack ordinal (u32) | offset (u32) | stored length with the blob kind
//! in bit 31 and the compression in bits 29-30 (u32) | raw length (u32), little-endian.
//!
//! In RAM per run: the fence (8 bytes per page, 0.094 B per entry) and the filter (its
//! bits per entry, folded to fit the budget). A lookup costs the filter test and, for a
//! "maybe", one page read (4 KiB, usually from the page cache). Runs are a cache of the
//! repository's index files: any inconsistency means "rebuild", never an error for the user.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::filter::Filter;
use crate::error::{Error, IoContext, Result};
use crate::format::{BlobKind, Compression};

/// Bytes per record.
pub const RECORD: usize = 48;
/// Bytes per page.
pub const PAGE: usize = 4096;
/// Records per page.
pub const PER_PAGE: usize = PAGE / RECORD;
const MAGIC: &[u8; 8] = b"CAIRNRUN";
/// Version 2 stores the filter's k (byte 9); older runs are rebuilt.
const VERSION: u8 = 2;

/// One index entry as a run stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Blob id.
    pub id: [u8; 32],
    /// Ordinal in the cache's pack table.
    pub pack: u32,
    /// Offset in the pack.
    pub offset: u32,
    /// Stored length (low 29 bits), compression (bits 29-30), kind (bit 31).
    pub stored: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

impl Record {
    /// Pack a location's fields into a record.
    pub fn new(
        id: [u8; 32],
        pack: u32,
        offset: u32,
        stored_len: u32,
        raw_len: u32,
        kind: BlobKind,
        compression: Compression,
    ) -> Record {
        debug_assert!(stored_len < 1 << 29);
        let stored = stored_len | ((compression as u32) << 29) | ((kind as u32) << 31);
        Record { id, pack, offset, stored, raw_len }
    }

    /// Stored length.
    pub fn stored_len(&self) -> u32 {
        self.stored & ((1 << 29) - 1)
    }

    /// Blob kind.
    pub fn kind(&self) -> BlobKind {
        if self.stored >> 31 == 1 {
            BlobKind::Tree
        } else {
            BlobKind::Data
        }
    }

    /// Compression, if the bits are valid.
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_u8(((self.stored >> 29) & 3) as u8)
    }

    /// Encode into 48 bytes.
    pub fn write(&self, out: &mut [u8]) {
        out[..32].copy_from_slice(&self.id);
        out[32..36].copy_from_slice(&self.pack.to_le_bytes());
        out[36..40].copy_from_slice(&self.offset.to_le_bytes());
        out[40..44].copy_from_slice(&self.stored.to_le_bytes());
        out[44..48].copy_from_slice(&self.raw_len.to_le_bytes());
    }

    /// Decode 48 bytes.
    pub fn read(b: &[u8]) -> Record {
        let u = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Record { id: b[..32].try_into().expect("32 bytes"), pack: u(32), offset: u(36), stored: u(40), raw_len: u(44) }
    }
}

/// The first 8 bytes of an id as a big-endian number: ids sort like their prefixes.
pub fn prefix(id: &[u8; 32]) -> u64 {
    u64::from_be_bytes(id[..8].try_into().expect("8 bytes"))
}

fn bad(path: &Path, why: &str) -> Error {
    Error::corrupt("index cache", path.display(), why)
}

/// Writes a run from records in strictly ascending id order.
pub struct RunWriter {
    tmp: PathBuf,
    out: BufWriter<File>,
    page: Vec<u8>,
    in_page: usize,
    count: u64,
    fence: Vec<u64>,
    filter: Filter,
    /// A stored filter to copy instead of `filter` (see [`RunWriter::keeping_filter`]).
    copy: Option<StoredFilter>,
    last: Option<[u8; 32]>,
}

/// Where a run file keeps its filter, to copy it into another run without reading it
/// into RAM.
#[derive(Clone)]
struct StoredFilter {
    path: PathBuf,
    at: u64,
    words: u64,
    k: u8,
}

impl RunWriter {
    /// Start a run at `tmp` for about `expected` records with a filter of
    /// `bits_per_entry` (0 for none: a one-block filter that says "maybe" to all).
    pub fn create(tmp: PathBuf, expected: u64, bits_per_entry: f64) -> Result<RunWriter> {
        let f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).at(&tmp)?;
        let mut out = BufWriter::with_capacity(1 << 16, f);
        out.write_all(&[0u8; PAGE]).at(&tmp)?; // header, rewritten at the end
        let filter =
            if bits_per_entry > 0.0 { Filter::with_capacity(expected, bits_per_entry) } else { Filter::saturated() };
        Ok(RunWriter {
            tmp,
            out,
            page: vec![0u8; PAGE],
            in_page: 0,
            count: 0,
            fence: Vec::new(),
            filter,
            copy: None,
            last: None,
        })
    }

    /// Start a run at `tmp` that will hold a subset of `from`'s records and takes
    /// `from`'s stored filter as its own: a filter of a superset answers "maybe" for
    /// every id the subset holds, so it stays exact. It is copied file to file at
    /// [`RunWriter::finish`] (64 KiB at a time): no filter is built or held in RAM.
    pub fn keeping_filter(tmp: PathBuf, from: &Run) -> Result<RunWriter> {
        let mut w = RunWriter::create(tmp, 0, 0.0)?;
        w.copy = Some(from.stored.clone());
        Ok(w)
    }

    /// Append the next record.
    pub fn push(&mut self, r: &Record) -> Result<()> {
        if self.last.is_some_and(|l| l >= r.id) {
            return Err(Error::InvalidInput("index run records out of order".into()));
        }
        self.last = Some(r.id);
        if self.in_page == 0 {
            self.fence.push(prefix(&r.id));
        }
        r.write(&mut self.page[self.in_page * RECORD..(self.in_page + 1) * RECORD]);
        self.in_page += 1;
        self.count += 1;
        self.filter.insert(&r.id);
        if self.in_page == PER_PAGE {
            self.flush_page()?;
        }
        Ok(())
    }

    fn flush_page(&mut self) -> Result<()> {
        self.page[self.in_page * RECORD..].fill(0);
        self.out.write_all(&self.page).at(&self.tmp)?;
        self.in_page = 0;
        Ok(())
    }

    /// Write fence, filter and header; fsync; rename to `path`. Returns the record count.
    pub fn finish(mut self, path: &Path) -> Result<u64> {
        if self.in_page > 0 {
            self.flush_page()?;
        }
        for f in &self.fence {
            self.out.write_all(&f.to_le_bytes()).at(&self.tmp)?;
        }
        let (k, words) = match &self.copy {
            None => {
                for w in self.filter.words() {
                    self.out.write_all(&w.to_le_bytes()).at(&self.tmp)?;
                }
                (self.filter.k() as u8, self.filter.words().len() as u64)
            }
            Some(from) => {
                let src = File::open(&from.path).at(&from.path)?;
                let mut buf = vec![0u8; 1 << 16];
                let (mut at, end) = (from.at, from.at + from.words * 8);
                while at < end {
                    let n = ((end - at) as usize).min(buf.len());
                    src.read_exact_at(&mut buf[..n], at).at(&from.path)?;
                    self.out.write_all(&buf[..n]).at(&self.tmp)?;
                    at += n as u64;
                }
                (from.k, from.words)
            }
        };
        let mut header = vec![0u8; PAGE];
        header[..8].copy_from_slice(MAGIC);
        header[8] = VERSION;
        header[9] = k;
        header[16..24].copy_from_slice(&self.count.to_le_bytes());
        header[24..32].copy_from_slice(&(self.fence.len() as u64).to_le_bytes());
        header[32..40].copy_from_slice(&words.to_le_bytes());
        let f = self.out.into_inner().map_err(|e| e.into_error()).at(&self.tmp)?;
        f.write_all_at(&header, 0).at(&self.tmp)?;
        f.sync_all().at(&self.tmp)?;
        std::fs::rename(&self.tmp, path).at(path)?;
        Ok(self.count)
    }
}

/// An open run: its file, fence and filter.
pub struct Run {
    /// Where it is.
    pub path: PathBuf,
    file: File,
    /// Records in it.
    pub count: u64,
    fence: Vec<u64>,
    filter: Filter,
    /// The filter as stored in the file (whatever RAM holds of it).
    stored: StoredFilter,
}

impl Run {
    /// The size of a run's stored filter in bytes (from its header), to share a budget out
    /// before opening.
    pub fn stored_filter_bytes(path: &Path) -> Result<usize> {
        let file = File::open(path).at(path)?;
        let mut header = [0u8; 40];
        file.read_exact_at(&mut header, 0).map_err(|_| bad(path, "short header"))?;
        if &header[..8] != MAGIC || header[8] != VERSION {
            return Err(bad(path, "not a run of this version"));
        }
        let words = u64::from_le_bytes(header[32..40].try_into().expect("8 bytes"));
        usize::try_from(words.saturating_mul(8)).map_err(|_| bad(path, "filter too large"))
    }

    /// Open a run; a stored filter larger than `filter_budget` bytes is folded while it is
    /// read (never held whole) until it fits; if it cannot be, the run keeps no filter and
    /// answers "maybe" to every id (lookups stay exact, they just read a page).
    pub fn open(path: &Path, filter_budget: usize) -> Result<Run> {
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        let mut header = vec![0u8; PAGE];
        file.read_exact_at(&mut header, 0).map_err(|_| bad(path, "short header"))?;
        if &header[..8] != MAGIC || header[8] != VERSION {
            return Err(bad(path, "not a run of this version"));
        }
        let u = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
        let (count, pages, words) = (u(16), u(24), u(32));
        // Bounded by the file's length first, so that no count from the header can
        // overflow the sums below (or size an allocation beyond the file).
        if pages > len / PAGE as u64 || words > len / 8 {
            return Err(bad(path, "sizes do not add up"));
        }
        let expect = (1 + pages) * PAGE as u64 + pages * 8 + words * 8;
        if len != expect || count > pages * PER_PAGE as u64 || count + (PER_PAGE as u64) <= pages * PER_PAGE as u64 {
            return Err(bad(path, "sizes do not add up"));
        }
        let le = |c: &[u8]| u64::from_le_bytes(c.try_into().expect("8 bytes"));
        let mut fb = vec![0u8; pages as usize * 8];
        let fence_at = (1 + pages) * PAGE as u64;
        file.read_exact_at(&mut fb, fence_at).at(path)?;
        let fence: Vec<u64> = fb.chunks_exact(8).map(le).collect();
        drop(fb);
        let k = header[9] as u32;
        let block_words = (super::filter::BLOCK / 8) as u64;
        if words == 0 || words % block_words != 0 || !(1..=super::filter::MAX_K).contains(&k) {
            return Err(bad(path, "bad filter"));
        }
        let filter = match Filter::fold_factor(words / block_words, filter_budget) {
            None => Filter::saturated(),
            Some(factor) => {
                // Read whole groups of `factor` blocks, 256 folded blocks at a time.
                let group = (block_words * factor * 256).min(words) as usize;
                let mut folded = super::filter::words_for((words / factor) as usize);
                let mut buf = vec![0u8; group * 8];
                let mut at = fence_at + pages * 8;
                let mut left = words as usize;
                while left > 0 {
                    let n = left.min(group);
                    file.read_exact_at(&mut buf[..n * 8], at).at(path)?;
                    let w: Vec<u64> = buf[..n * 8].chunks_exact(8).map(le).collect();
                    folded.extend(Filter::fold_words(&w, factor));
                    at += n as u64 * 8;
                    left -= n;
                }
                Filter::from_words(folded, k).ok_or_else(|| bad(path, "bad filter"))?
            }
        };
        let stored = StoredFilter { path: path.to_path_buf(), at: fence_at + pages * 8, words, k: k as u8 };
        Ok(Run { path: path.to_path_buf(), file, count, fence, filter, stored })
    }

    /// Bytes of RAM this run holds (fence + filter).
    pub fn ram(&self) -> usize {
        self.fence.len() * 8 + self.filter.bytes()
    }

    /// Bytes of the filter alone.
    pub fn filter_bytes(&self) -> usize {
        self.filter.bytes()
    }

    /// Replace the filter by one that says "maybe" to everything (frees its memory; the
    /// run stays correct, lookups just read a page).
    pub fn drop_filter(&mut self) {
        self.filter = Filter::saturated();
    }

    /// Halve the filter in place (folding, no I/O); false if it cannot be halved.
    pub fn fold_filter(&mut self) -> bool {
        self.filter.fold_in_half()
    }

    /// Number of data pages.
    pub fn pages(&self) -> usize {
        self.fence.len()
    }

    /// Records in page `p`.
    fn page_len(&self, p: usize) -> usize {
        if p + 1 < self.fence.len() {
            PER_PAGE
        } else {
            self.count as usize - p * PER_PAGE
        }
    }

    /// Read page `p` (4 KiB) into `buf`.
    fn read_page(&self, p: usize, buf: &mut [u8; PAGE]) -> Result<()> {
        self.file.read_exact_at(&mut buf[..], ((1 + p) * PAGE) as u64).at(&self.path)
    }

    /// Could the run hold `id`? (The filter; false means certainly not.)
    pub fn may_contain(&self, id: &[u8; 32]) -> bool {
        self.filter.may_contain(id)
    }

    /// Find `id`: usually one page read (`pread` into a stack buffer; the kernel's page
    /// cache is the only cache of pages). Pages whose fence prefix ties with the id's are
    /// all searched, so correctness does not depend on prefixes being unique.
    pub fn find(&self, id: &[u8; 32]) -> Result<Option<Record>> {
        let key = prefix(id);
        let mut p = fence_search(&self.fence, key);
        let mut data = [0u8; PAGE];
        while p > 0 {
            p -= 1;
            self.read_page(p, &mut data)?;
            let n = self.page_len(p);
            let recs = &data[..n * RECORD];
            let found = bsearch(recs, n, id);
            match found {
                Ok(i) => return Ok(Some(Record::read(&recs[i * RECORD..(i + 1) * RECORD]))),
                // The id sorts before this page's first record only if they share the
                // prefix: then it may be in the previous page.
                Err(0) if self.fence[p] == key => continue,
                Err(_) => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Iterate all records in order, reading `buf_pages` pages at a time.
    pub fn iter(&self, buf_pages: usize) -> RunIter<'_> {
        RunIter { run: self, buf: Vec::new(), pos: 0, next_page: 0, buf_pages: buf_pages.max(1) }
    }
}

/// The number of fence entries `<= key` (like `partition_point`). Ids are uniform, so the
/// key's share of the id space predicts its page to within about sqrt(pages)/2: start
/// there and gallop outwards, touching a few neighbouring cache lines instead of the ~20
/// scattered ones of a binary search over a multi-megabyte fence.
fn fence_search(fence: &[u64], key: u64) -> usize {
    let n = fence.len();
    if n < 64 {
        return fence.partition_point(|f| *f <= key);
    }
    let guess = ((key as u128 * n as u128) >> 64) as usize;
    let (mut lo, mut hi);
    if fence[guess] <= key {
        // The answer is above `guess`: gallop up.
        let mut step = 1;
        lo = guess + 1;
        hi = lo;
        while hi < n && fence[hi] <= key {
            lo = hi + 1;
            hi += step;
            step *= 2;
        }
        hi = hi.min(n);
    } else {
        let mut step = 1;
        hi = guess;
        lo = hi;
        while lo > 0 && fence[lo - 1] > key {
            hi = lo - 1;
            lo = lo.saturating_sub(step);
            step *= 2;
        }
    }
    lo + fence[lo..hi].partition_point(|f| *f <= key)
}

fn bsearch(recs: &[u8], n: usize, id: &[u8; 32]) -> std::result::Result<usize, usize> {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        match recs[mid * RECORD..mid * RECORD + 32].cmp(&id[..]) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Ok(mid),
        }
    }
    Err(lo)
}

/// Sequential reader over a run (for merges); memory: `buf_pages` x 4 KiB.
pub struct RunIter<'r> {
    run: &'r Run,
    buf: Vec<Record>,
    pos: usize,
    next_page: usize,
    buf_pages: usize,
}

impl RunIter<'_> {
    /// The next record, or `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        if self.pos == self.buf.len() {
            if self.next_page >= self.run.pages() {
                return Ok(None);
            }
            let end = (self.next_page + self.buf_pages).min(self.run.pages());
            let mut bytes = vec![0u8; (end - self.next_page) * PAGE];
            // Positional reads: several readers may share the run's descriptor.
            self.run.file.read_exact_at(&mut bytes, ((1 + self.next_page) * PAGE) as u64).at(&self.run.path)?;
            self.buf.clear();
            for (i, page) in bytes.chunks_exact(PAGE).enumerate() {
                let n = self.run.page_len(self.next_page + i);
                self.buf.extend(page[..n * RECORD].chunks_exact(RECORD).map(Record::read));
            }
            self.next_page = end;
            self.pos = 0;
        }
        self.pos += 1;
        Ok(Some(self.buf[self.pos - 1]))
    }
}

/// Visit every record of `runs` (oldest first) in id order: a k-way merge holding
/// `buf_pages` pages per input. An id present in several runs comes once per run, newest
/// run first; `f` is told whether the record is the first of its id (the one a lookup,
/// which searches newest first, answers with).
pub fn merged(runs: &[&Run], buf_pages: usize, f: &mut dyn FnMut(&Record, bool) -> Result<()>) -> Result<()> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut iters: Vec<RunIter<'_>> = runs.iter().map(|r| r.iter(buf_pages)).collect();
    // Heap of (id, newest-first order, record): equal ids pop newest first.
    let mut heap = BinaryHeap::new();
    for (i, it) in iters.iter_mut().enumerate() {
        if let Some(r) = it.next_record()? {
            heap.push(Reverse((r.id, Reverse(i), r)));
        }
    }
    let mut last: Option<[u8; 32]> = None;
    while let Some(Reverse((id, Reverse(i), r))) = heap.pop() {
        let first = last != Some(id);
        last = Some(id);
        f(&r, first)?;
        if let Some(n) = iters[i].next_record()? {
            heap.push(Reverse((n.id, Reverse(i), n)));
        }
    }
    Ok(())
}

/// Merge `runs` (oldest first) into `out`, keeping only records `keep` accepts: an id
/// present in several runs keeps the newest record kept. Returns the number of records
/// written.
pub fn merge(
    runs: &[&Run],
    buf_pages: usize,
    mut out: RunWriter,
    path: &Path,
    keep: &dyn Fn(&Record) -> bool,
) -> Result<u64> {
    let mut last: Option<[u8; 32]> = None;
    merged(runs, buf_pages, &mut |r, _| {
        if last != Some(r.id) && keep(r) {
            out.push(r)?;
            last = Some(r.id);
        }
        Ok(())
    })?;
    out.finish(path)
}

impl PartialOrd for Record {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Record {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.id, self.pack, self.offset, self.stored, self.raw_len).cmp(&(
            other.id,
            other.pack,
            other.offset,
            other.stored,
            other.raw_len,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn rec(id: [u8; 32], n: u32) -> Record {
        Record::new(
            id,
            n,
            n * 3,
            100 + n % 1000,
            n,
            if n.is_multiple_of(2) { BlobKind::Data } else { BlobKind::Tree },
            Compression::Zstd,
        )
    }

    fn write_run(dir: &Path, name: &str, recs: &BTreeMap<[u8; 32], Record>, bits: f64) -> Run {
        let path = dir.join(name);
        let mut w = RunWriter::create(dir.join(format!("{name}.tmp")), recs.len() as u64, bits).unwrap();
        for r in recs.values() {
            w.push(r).unwrap();
        }
        w.finish(&path).unwrap();
        Run::open(&path, usize::MAX).unwrap()
    }

    fn find(run: &Run, id: &[u8; 32]) -> Option<Record> {
        run.find(id).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn lookups_equal_a_sorted_map(ids in proptest::collection::btree_set(proptest::array::uniform32(any::<u8>()), 0..600), probes in proptest::collection::vec(proptest::array::uniform32(any::<u8>()), 0..50), bits in prop_oneof![Just(0.0), Just(10.0)]) {
            let t = tempfile::tempdir().unwrap();
            let map: BTreeMap<[u8; 32], Record> = ids.iter().enumerate().map(|(i, id)| (*id, rec(*id, i as u32))).collect();
            let run = write_run(t.path(), "r", &map, bits);
            prop_assert_eq!(run.count, map.len() as u64);
            for (id, r) in &map {
                prop_assert_eq!(find(&run, id), Some(*r));
            }
            for id in &probes {
                prop_assert_eq!(find(&run, id), map.get(id).copied());
            }
            let mut it = run.iter(3);
            let mut all = vec![];
            while let Some(r) = it.next_record().unwrap() { all.push(r); }
            prop_assert_eq!(all, map.values().copied().collect::<Vec<_>>());
        }
    }

    proptest! {
        /// The interpolating fence search equals `partition_point`, uniform or not.
        #[test]
        fn fence_search_equals_partition_point(
            mut fence in proptest::collection::vec(any::<u64>(), 0..3000),
            skew in 0u32..40,
            keys in proptest::collection::vec(any::<u64>(), 1..40),
        ) {
            for f in fence.iter_mut() {
                *f >>= skew; // skewed: all near zero
            }
            fence.sort_unstable();
            let mut probes = keys.clone();
            probes.extend(fence.iter().step_by(97).copied());
            probes.extend([0, u64::MAX]);
            for k in probes {
                prop_assert_eq!(fence_search(&fence, k), fence.partition_point(|f| *f <= k));
            }
        }
    }

    #[test]
    fn ties_on_the_eight_byte_prefix_are_searched() {
        // 300 ids sharing one 8-byte prefix span several pages.
        let t = tempfile::tempdir().unwrap();
        let map: BTreeMap<[u8; 32], Record> = (0..300u32)
            .map(|i| {
                let mut id = [7u8; 32];
                id[8..12].copy_from_slice(&i.to_be_bytes());
                (id, rec(id, i))
            })
            .collect();
        let run = write_run(t.path(), "r", &map, 10.0);
        assert!(run.pages() > 3);
        for (id, r) in &map {
            assert_eq!(find(&run, id), Some(*r));
        }
        let mut absent = [7u8; 32];
        absent[8..12].copy_from_slice(&5000u32.to_be_bytes());
        assert_eq!(find(&run, &absent), None);
    }

    #[test]
    fn merge_keeps_the_newest_and_a_small_budget_keeps_correctness() {
        let t = tempfile::tempdir().unwrap();
        let ids: Vec<[u8; 32]> = (0..2000u32).map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes()).collect();
        let old: BTreeMap<_, _> = ids[..1500].iter().map(|id| (*id, rec(*id, 1))).collect();
        let new: BTreeMap<_, _> = ids[1000..].iter().map(|id| (*id, rec(*id, 2))).collect();
        let (a, b) = (write_run(t.path(), "a", &old, 10.0), write_run(t.path(), "b", &new, 10.0));
        let out = RunWriter::create(t.path().join("m.tmp"), 2500, 10.0).unwrap();
        assert_eq!(merge(&[&a, &b], 2, out, &t.path().join("m"), &|_| true).unwrap(), 2000);
        // A budget far below the filter's size: no filter; a quarter: folded while read;
        // then halved in place. Every lookup stays exact.
        let full = Run::stored_filter_bytes(&t.path().join("m")).unwrap();
        let none = Run::open(&t.path().join("m"), 64).unwrap();
        assert!(none.ram() <= 64 + none.pages() * 8);
        let mut m = Run::open(&t.path().join("m"), full / 4).unwrap();
        assert_eq!(m.filter_bytes(), full / 4);
        for run in [&none, &m] {
            for (i, id) in ids.iter().enumerate() {
                assert_eq!(find(run, id).unwrap().pack, if i < 1000 { 1 } else { 2 });
            }
        }
        assert!(m.fold_filter());
        assert_eq!(m.filter_bytes(), full / 8);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(find(&m, id).unwrap().pack, if i < 1000 { 1 } else { 2 });
        }
    }

    #[test]
    fn damaged_runs_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let map: BTreeMap<_, _> = (0..100u32)
            .map(|i| {
                let id = *blake3::hash(&i.to_le_bytes()).as_bytes();
                (id, rec(id, i))
            })
            .collect();
        write_run(t.path(), "r", &map, 10.0);
        let p = t.path().join("r");
        let len = std::fs::metadata(&p).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len - 8).unwrap();
        assert!(Run::open(&p, usize::MAX).is_err());
        std::fs::write(&p, b"garbage").unwrap();
        assert!(Run::open(&p, usize::MAX).is_err());
    }
}
