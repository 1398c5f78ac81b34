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

/// Most bits tested per lookup (7 x 9-bit positions fit one 64-bit word of the id).
pub const MAX_K: u32 = 7;
/// Bytes per block.
pub const BLOCK: usize = 64;

/// The filter; `bits` is a whole number of 64-byte blocks, a power of two of them.
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
        let actual = (blocks as f64 * BLOCK as f64 * 8.0) / (entries.max(1) as f64);
        let k = (actual * std::f64::consts::LN_2).round().clamp(1.0, MAX_K as f64) as u32;
        Filter { bits: vec![0; (blocks as usize) * BLOCK / 8], blocks, k }
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
        if blocks == 0 || bits.len() * 8 % BLOCK != 0 || !(1..=MAX_K).contains(&k) {
            return None;
        }
        Some(Filter { bits, blocks, k })
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
    fn refuses_bad_sizes() {
        assert!(Filter::from_words(vec![0; 3], 6).is_none());
        assert!(Filter::from_words(vec![0; 16], 0).is_none());
        assert!(Filter::from_words(vec![0; 24], 6).is_some()); // 3 blocks
    }
}
