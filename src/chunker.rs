//! Content-defined chunking with FastCDC (v2020), streaming over any reader.
//!
//! Drives `fastcdc::v2020::cut_gear` over an owned buffer of twice the maximum chunk size
//! and hands out borrowed slices, so a chunk is hashed where it lies and copied only if it
//! is new. (The crate's `StreamCDC` drains and re-zeroes its buffer for every chunk.)
//! Memory: 2 × max chunk size (8 MiB at the default 4 MiB maximum). Pure apart from the reader.

use std::io::Read;

use fastcdc::v2020::{cut_gear, get_gear_with_seed, Normalization, MASKS};

use crate::error::{Error, Result};

/// Chunking parameters, stored in the repository config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    /// Minimum chunk size in bytes.
    pub min: u32,
    /// Average (target) chunk size in bytes.
    pub avg: u32,
    /// Maximum chunk size in bytes.
    pub max: u32,
    /// Seed XOR-ed into the gear table so cut points differ between repositories.
    pub seed: u64,
}

impl ChunkerParams {
    /// 256 KiB / 1 MiB / 4 MiB with the given seed.
    pub fn default_with_seed(seed: u64) -> ChunkerParams {
        ChunkerParams { min: 256 << 10, avg: 1 << 20, max: 4 << 20, seed }
    }

    /// Check the values against what FastCDC v2020 accepts (it asserts otherwise).
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "chunker sizes out of range: min {} avg {} max {}",
                self.min, self.avg, self.max
            )))
        }
    }
}

/// The cut-point finder: gear tables and masks derived from [`ChunkerParams`].
pub struct Cutter {
    p: ChunkerParams,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    mask_s: u64,
    mask_l: u64,
}

impl Cutter {
    /// Build from validated parameters.
    pub fn new(p: ChunkerParams) -> Result<Cutter> {
        p.validate()?;
        // fastcdc rounds log2(avg) to the nearest integer; so must we, or cut points differ
        // from the crate's for averages that are not powers of two.
        let bits = fastcdc::v2020::logarithm2(p.avg) as usize;
        let norm = Normalization::Level1.bits() as usize;
        let (gear, gear_ls) = get_gear_with_seed(p.seed);
        Ok(Cutter { p, gear, gear_ls, mask_s: MASKS[bits + norm], mask_l: MASKS[bits - norm] })
    }

    /// Length of the first chunk of `data` (all of it if `data` is short and `eof`).
    fn cut(&self, data: &[u8]) -> usize {
        let (_, n) = cut_gear(
            data,
            self.p.min as usize,
            self.p.avg as usize,
            self.p.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        n
    }

    /// The maximum chunk size.
    pub fn max(&self) -> usize {
        self.p.max as usize
    }

    /// Whether a run of zeros is cut only at the maximum chunk size. For about one gear
    /// seed in 600 (64 of 40,000 random seeds with the test sizes) the gear hash of zeros,
    /// a constant after 64 bytes, meets the mask, and zeros are cut every ~4 KiB.
    pub fn keeps_zeros_whole(&self) -> bool {
        self.cut(&vec![0u8; 2 * self.max()]) == self.max()
    }
}

/// A gear seed for a new repository with sizes `p`, drawn from `random`: not one of the
/// ~1 in 600 whose gear hash of zeros meets the cut mask. Those cut every run of zeros
/// into ~4 KiB chunks, which are not taken for holes (only all-zero chunks of the
/// largest size are, cheaply: `Repository::is_zero_chunk`) and cost a sparse file 16x
/// the chunks.
pub fn gear_seed(p: ChunkerParams, mut random: impl FnMut() -> u64) -> Result<u64> {
    loop {
        let seed = random();
        if Cutter::new(ChunkerParams { seed, ..p })?.keeps_zeros_whole() {
            return Ok(seed);
        }
    }
}

/// Splits a stream into chunks; call [`Chunker::next_chunk`] until it returns `None`.
pub struct Chunker<'c, R> {
    cutter: &'c Cutter,
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Bytes read from the reader so far.
    pub bytes_read: u64,
}

impl<'c, R: Read> Chunker<'c, R> {
    /// Chunk `reader`, reusing `buf` (pass back [`Chunker::into_buffer`] to avoid reallocating).
    pub fn new(cutter: &'c Cutter, reader: R, mut buf: Vec<u8>) -> Self {
        buf.resize(2 * cutter.max(), 0);
        Chunker { cutter, reader, buf, start: 0, end: 0, eof: false, bytes_read: 0 }
    }

    /// The next chunk, borrowed from the internal buffer; `None` at end of stream.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<&[u8]>> {
        let max = self.cutter.max();
        if self.end - self.start < max && !self.eof {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            while self.end < self.buf.len() && !self.eof {
                match self.reader.read(&mut self.buf[self.end..]) {
                    Ok(0) => self.eof = true,
                    Ok(n) => {
                        self.end += n;
                        self.bytes_read += n as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if self.start == self.end {
            return Ok(None);
        }
        let n = self.cutter.cut(&self.buf[self.start..self.end]);
        let chunk = &self.buf[self.start..self.start + n];
        self.start += n;
        Ok(Some(chunk))
    }

    /// Give back the buffer for reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerParams {
        ChunkerParams { min: 64, avg: 256, max: 1024, seed: 7 }
    }

    fn chunks(p: ChunkerParams, data: &[u8]) -> Vec<Vec<u8>> {
        let cutter = Cutter::new(p).unwrap();
        let mut c = Chunker::new(&cutter, data, Vec::new());
        let mut out = Vec::new();
        while let Some(ch) = c.next_chunk().unwrap() {
            out.push(ch.to_vec());
        }
        assert_eq!(c.bytes_read, data.len() as u64);
        out
    }

    #[test]
    fn some_seeds_cut_zeros_short_and_init_never_picks_them() {
        // Found by scanning random seeds (64 of 40,000 cut zeros at ~4.1 KiB).
        let p = |seed| ChunkerParams { min: 4096, avg: 16384, max: 65536, seed };
        assert!(!Cutter::new(p(6632504631488524177)).unwrap().keeps_zeros_whole());
        assert!(Cutter::new(p(0)).unwrap().keeps_zeros_whole());
        let mut draws = [6632504631488524177, 6460547064066529091, 0].into_iter();
        assert_eq!(gear_seed(p(1), || draws.next().unwrap()).unwrap(), 0, "the two bad seeds are passed over");
    }

    proptest! {
        #[test]
        fn concat_is_input_and_sizes_bounded(data in proptest::collection::vec(any::<u8>(), 0..20000)) {
            let p = small();
            let cs = chunks(p, &data);
            prop_assert_eq!(cs.concat(), data);
            for (i, c) in cs.iter().enumerate() {
                prop_assert!(c.len() <= p.max as usize);
                if i + 1 < cs.len() { prop_assert!(c.len() >= p.min as usize); }
            }
        }
    }

    /// Our cut points equal the fastcdc crate's own iterator's.
    fn assert_matches_reference(p: ChunkerParams, len: usize) {
        let mut data = vec![0u8; len];
        crate::crypto::random_bytes(&mut data);
        let ours: Vec<usize> = chunks(p, &data).iter().map(|c| c.len()).collect();
        let reference: Vec<usize> =
            fastcdc::v2020::FastCDC::with_level_and_seed(&data, p.min, p.avg, p.max, Normalization::Level1, p.seed)
                .map(|c| c.length)
                .collect();
        assert_eq!(ours, reference);
    }

    #[test]
    fn matches_fastcdc_reference() {
        assert_matches_reference(small(), 100_000);
        // fastcdc rounds log2(avg); a non-power-of-two average checks we do too.
        assert_matches_reference(ChunkerParams { min: 100, avg: 700, max: 3000, seed: 3 }, 200_000);
    }

    #[test]
    fn seed_changes_cut_points() {
        let mut data = vec![0u8; 100_000];
        crate::crypto::random_bytes(&mut data);
        let a = chunks(small(), &data);
        let b = chunks(ChunkerParams { seed: 8, ..small() }, &data);
        assert_ne!(a.iter().map(Vec::len).collect::<Vec<_>>(), b.iter().map(Vec::len).collect::<Vec<_>>());
    }

    #[test]
    fn invalid_params_are_errors_not_panics() {
        assert!(Cutter::new(ChunkerParams { min: 1, avg: 2, max: 3, seed: 0 }).is_err());
        assert!(Cutter::new(ChunkerParams { min: 4096, avg: 1024, max: 65536, seed: 0 }).is_err());
    }
}
