//! A blocked Bloom filter over blob ids, for "this id is certainly not in the run".
//!
//! Ids are keyed BLAKE3 and so uniformly distributed: the filter takes its bit positions
//! straight from the id's bytes, no hashing. Blocks are 64 bytes (one cache line); a
//! lookup touches one block and tests K bits in it. The number of blocks is a power of
//! two, so a filter can be *folded* to half its size (block i OR block i + n/2) when the
//! memory budget is smaller than the filter was built for: it stays correct (no false
//! negatives), only less selective.
//!
//! Cost: `bits_per_entry / 8` bytes per entry; false-positive rate about 0.6185^bits
//! (1% at 9.6 bits). Correctness never depends on the filter: a "maybe" is always
//! confirmed against the run's records.

/// Bits tested per lookup.
const K: usize = 6;
/// Bytes per block.
pub const BLOCK: usize = 64;

/// The filter; `bits` is a whole number of 64-byte blocks, a power of two of them.
pub struct Filter {
    bits: Vec<u64>,
    mask: u64,
}

impl Filter {
    /// An empty filter with room for `entries` at about `bits_per_entry` bits each: the
    /// power-of-two number of blocks nearest (on a log scale) to what that needs.
    pub fn with_capacity(entries: u64, bits_per_entry: f64) -> Filter {
        let want = ((entries as f64 * bits_per_entry) / (BLOCK as f64 * 8.0)).max(1.0);
        let up = (want as u64).next_power_of_two().max(1);
        let blocks = if (up as f64) > want * std::f64::consts::SQRT_2 { (up / 2).max(1) } else { up };
        Filter { bits: vec![0; (blocks as usize) * BLOCK / 8], mask: blocks - 1 }
    }

    /// A one-block filter with every bit set: "maybe" for every id (no filter at all, for
    /// runs built when the budget leaves nothing for filters).
    pub fn saturated() -> Filter {
        Filter { bits: vec![u64::MAX; BLOCK / 8], mask: 0 }
    }

    /// Rebuild from serialized words (the number of blocks must be a power of two).
    pub fn from_words(bits: Vec<u64>) -> Option<Filter> {
        let blocks = (bits.len() * 8 / BLOCK) as u64;
        if blocks == 0 || !blocks.is_power_of_two() || bits.len() * 8 % BLOCK != 0 {
            return None;
        }
        Some(Filter { bits, mask: blocks - 1 })
    }

    /// The serialized words.
    pub fn words(&self) -> &[u64] {
        &self.bits
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.bits.len() * 8
    }

    fn positions(id: &[u8; 32]) -> (u64, [u16; K]) {
        let block = u64::from_le_bytes(id[16..24].try_into().expect("8 bytes"));
        // Six independent 9-bit positions from one 64-bit word of the id.
        let bits = u64::from_le_bytes(id[24..32].try_into().expect("8 bytes"));
        let mut pos = [0u16; K];
        for (i, p) in pos.iter_mut().enumerate() {
            *p = ((bits >> (9 * i)) & 511) as u16;
        }
        (block, pos)
    }

    /// Add an id.
    pub fn insert(&mut self, id: &[u8; 32]) {
        let (block, pos) = Self::positions(id);
        let base = ((block & self.mask) as usize) * (BLOCK / 8);
        for p in pos {
            self.bits[base + (p as usize >> 6)] |= 1 << (p & 63);
        }
    }

    /// False if the id was certainly never inserted.
    pub fn may_contain(&self, id: &[u8; 32]) -> bool {
        let (block, pos) = Self::positions(id);
        let base = ((block & self.mask) as usize) * (BLOCK / 8);
        pos.iter().all(|&p| self.bits[base + (p as usize >> 6)] & (1 << (p & 63)) != 0)
    }

    /// Halve the size: block i absorbs block i + n/2. Lookups stay correct because the
    /// block index is the id's bits masked to the (now smaller) power of two.
    pub fn fold(&mut self) -> bool {
        let blocks = self.mask + 1;
        if blocks == 1 {
            return false;
        }
        let half = (blocks / 2) as usize * (BLOCK / 8);
        let (lo, hi) = self.bits.split_at_mut(half);
        for (a, b) in lo.iter_mut().zip(hi.iter()) {
            *a |= *b;
        }
        self.bits.truncate(half);
        self.mask = blocks / 2 - 1;
        true
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
        // Folding keeps every member and stays usable.
        while f.bytes() > 4096 {
            assert!(f.fold());
        }
        assert!((0..n).all(|i| f.may_contain(&id(i))));
        let g = Filter::from_words(f.words().to_vec()).unwrap();
        assert!((0..n).all(|i| g.may_contain(&id(i))));
    }

    #[test]
    fn refuses_bad_sizes() {
        assert!(Filter::from_words(vec![0; 3]).is_none());
        assert!(Filter::from_words(vec![0; 24]).is_none()); // 3 blocks
        assert!(Filter::from_words(vec![0; 16]).is_some()); // 2 blocks
    }
}
