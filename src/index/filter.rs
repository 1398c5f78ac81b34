//! A blocked Bloom filter over blob ids, for "this id is certainly not in the run".
//!
//! Ids are keyed BLAKE3 and so uniformly distributed: the filter takes its bit positions
//! straight from the id's bytes, no hashing. Blocks are 64 bytes (one cache line); a
//! lookup touches one block (chosen by multiply-shift, so any number of blocks works and
//! filters are sized exactly) and tests k bits in it, k chosen for the bits per entry.
//!
//! Cost: `bits_per_entry / 8` bytes per entry; false-positive rate about 0.6185^bits
//! (1% at 9.6 bits). Correctness never depends on the filter: a "maybe" is always
//! confirmed against the run's records.
//!
//! Folding: the block of an id is `floor(h * blocks / 2^64)`, so with `blocks / f` blocks
//! it is `floor(old_block / f)`. OR-ing each group of `f` adjacent blocks therefore gives
//! the filter those ids would have built at `1/f` the size: a smaller budget is met
//! without reading the run again. Block counts are multiples of [`FOLD`] for that.

/// Most bits tested per lookup (7 x 9-bit positions fit one 64-bit word of the id).
pub const MAX_K: u32 = 7;
/// Bytes per block.
pub const BLOCK: usize = 64;
/// Block counts are multiples of this (so a filter can be folded to 1/2, 1/4 ... 1/16).
pub const FOLD: u64 = 16;

/// An empty vector with room for exactly `n` words, backed by huge pages where possible.
pub fn words_for(n: usize) -> Vec<u64> {
    let mut v = Vec::with_capacity(n);
    crate::sys::advise_hugepages(&mut v);
    v
}

/// The filter; `bits` is a whole number of 64-byte blocks (a multiple of [`FOLD`] of them
/// as built here; any number as read back).
pub struct Filter {
    bits: Vec<u64>,
    blocks: u64,
    /// Bits tested per lookup: chosen for the bits per entry (about ln 2 times them).
    k: u32,
}

impl Filter {
    /// An empty filter with room for `entries` at `bits_per_entry` bits each.
    pub fn with_capacity(entries: u64, bits_per_entry: f64) -> Filter {
        let blocks = ((entries as f64 * bits_per_entry) / (BLOCK as f64 * 8.0)).ceil().max(1.0) as u64;
        let blocks = blocks.next_multiple_of(FOLD);
        let actual = (blocks as f64 * BLOCK as f64 * 8.0) / (entries.max(1) as f64);
        let k = (actual * std::f64::consts::LN_2).round().clamp(1.0, MAX_K as f64) as u32;
        let n = blocks as usize * BLOCK / 8;
        let mut bits = words_for(n);
        bits.resize(n, 0);
        Filter { bits, blocks, k }
    }

    /// Bits tested per lookup.
    pub fn k(&self) -> u32 {
        self.k
    }

    /// A one-block filter with every bit set: "maybe" for every id (no filter at all, for
    /// runs built when the budget leaves nothing for filters).
    pub fn saturated() -> Filter {
        Filter { bits: vec![u64::MAX; BLOCK / 8], blocks: 1, k: 1 }
    }

    /// Rebuild from serialized words (whole blocks).
    pub fn from_words(bits: Vec<u64>, k: u32) -> Option<Filter> {
        let blocks = (bits.len() * 8 / BLOCK) as u64;
        if blocks == 0 || !(bits.len() * 8).is_multiple_of(BLOCK) || !(1..=MAX_K).contains(&k) {
            return None;
        }
        Some(Filter { bits, blocks, k })
    }

    /// The smallest fold factor (a power of two dividing the block count) that brings
    /// `blocks` blocks within `budget` bytes; `None` if none does.
    pub fn fold_factor(blocks: u64, budget: usize) -> Option<u64> {
        let mut f = 1u64;
        while blocks / f * BLOCK as u64 > budget as u64 {
            f *= 2;
            if !blocks.is_multiple_of(f) {
                return None;
            }
        }
        Some(f)
    }

    /// OR each group of `factor` adjacent blocks of `words` (whole groups) into one.
    pub fn fold_words(words: &[u64], factor: u64) -> impl Iterator<Item = u64> + '_ {
        let per = BLOCK / 8;
        let group = per * factor as usize;
        words
            .chunks_exact(group)
            .flat_map(move |g| (0..per).map(move |w| (0..factor as usize).fold(0u64, |acc, b| acc | g[b * per + w])))
    }

    /// Halve the filter in place (see the module's notes); false if its block count is odd.
    pub fn fold_in_half(&mut self) -> bool {
        if !self.blocks.is_multiple_of(2) {
            return false;
        }
        let half = (self.bits.len() / 2) / (BLOCK / 8);
        let per = BLOCK / 8;
        for b in 0..half {
            for w in 0..per {
                self.bits[b * per + w] = self.bits[2 * b * per + w] | self.bits[(2 * b + 1) * per + w];
            }
        }
        self.bits.truncate(half * per);
        self.bits.shrink_to_fit();
        self.blocks /= 2;
        true
    }

    /// The serialized words.
    pub fn words(&self) -> &[u64] {
        &self.bits
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.bits.len() * 8
    }

    /// The block's first word and the id's bit positions (up to seven independent 9-bit
    /// fields of one 64-bit word of the id; the first `k` are used).
    fn positions(&self, id: &[u8; 32]) -> (usize, u64) {
        let block = u64::from_le_bytes(id[16..24].try_into().expect("8 bytes"));
        let bits = u64::from_le_bytes(id[24..32].try_into().expect("8 bytes"));
        let b = ((block as u128 * self.blocks as u128) >> 64) as usize;
        (b * (BLOCK / 8), bits)
    }

    /// Add an id.
    pub fn insert(&mut self, id: &[u8; 32]) {
        let (base, bits) = self.positions(id);
        for i in 0..self.k {
            let p = (bits >> (9 * i)) & 511;
            self.bits[base + (p as usize >> 6)] |= 1 << (p & 63);
        }
    }

    /// False if the id was certainly never inserted.
    pub fn may_contain(&self, id: &[u8; 32]) -> bool {
        let (base, bits) = self.positions(id);
        (0..self.k).all(|i| {
            let p = (bits >> (9 * i)) & 511;
            self.bits[base + (p as usize >> 6)] & (1 << (p & 63)) != 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u64) -> [u8; 32] {
        *blake3::hash(&i.to_le_bytes()).as_bytes()
    }

    #[test]
    fn no_false_negatives_and_a_sane_false_positive_rate() {
        let n = 50_000;
        let mut f = Filter::with_capacity(n, 10.0);
        for i in 0..n {
            f.insert(&id(i));
        }
        assert!((0..n).all(|i| f.may_contain(&id(i))));
        let fp = (n..n + 100_000).filter(|i| f.may_contain(&id(*i))).count();
        assert!(fp < 3_000, "false positives: {fp} of 100000");
        let g = Filter::from_words(f.words().to_vec(), f.k()).unwrap();
        assert!((0..n).all(|i| g.may_contain(&id(i))));
    }

    #[test]
    fn a_folded_filter_still_contains_every_id() {
        let n = 20_000;
        let mut f = Filter::with_capacity(n, 10.0);
        for i in 0..n {
            f.insert(&id(i));
        }
        let blocks = f.bytes() as u64 / BLOCK as u64;
        let factor = Filter::fold_factor(blocks, f.bytes() / 4).unwrap();
        assert_eq!(factor, 4);
        let g = Filter::from_words(Filter::fold_words(f.words(), factor).collect(), f.k()).unwrap();
        assert_eq!(g.bytes(), f.bytes() / 4);
        assert!((0..n).all(|i| g.may_contain(&id(i))));
        // Folding in place gives the same words as folding by two from the stored copy.
        let mut h = Filter::from_words(f.words().to_vec(), f.k()).unwrap();
        assert!(h.fold_in_half());
        assert_eq!(h.words(), Filter::fold_words(f.words(), 2).collect::<Vec<_>>());
        assert!((0..n).all(|i| h.may_contain(&id(i))));
        // Coarser, not useless: halved to ~5 bits per entry (k stays 7), about 14% pass.
        let fp = (n..n + 20_000).filter(|i| h.may_contain(&id(*i))).count();
        assert!(fp < 4_000, "false positives after folding: {fp} of 20000");
        assert_eq!(Filter::fold_factor(3, 64), None);
        assert_eq!(Filter::fold_factor(3, 192), Some(1));
    }

    #[test]
    fn refuses_bad_sizes() {
        assert!(Filter::from_words(vec![0; 3], 6).is_none());
        assert!(Filter::from_words(vec![0; 16], 0).is_none());
        assert!(Filter::from_words(vec![0; 24], 6).is_some()); // 3 blocks
    }
}
