//! One memory budget for the whole process (`--memory`, `CAIRN_MEMORY`), split among the
//! consumers that grow with the work. docs/design.md ("Memory budget") gives the split
//! and what each part does at its limit.

/// The smallest budget cairn accepts.
pub const MIN: usize = 64 << 20;
/// The default budget.
pub const DEFAULT: usize = 256 << 20;

/// A memory budget in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget(pub usize);

impl Default for Budget {
    fn default() -> Self {
        Budget(DEFAULT)
    }
}

impl Budget {
    /// The chunk index: 5/8 (160 MiB at the default), split by
    /// [`crate::index::IndexOptions`] into filters and fences (7/8: up to 11 bits per entry
    /// at 10^8 entries) and memtable (1/8). The rest covers the fixed consumers (the
    /// backup pipeline, tree nodes) and the KDF's transient 32 MiB at unlock.
    pub fn index_bytes(&self) -> usize {
        self.0 / 8 * 5
    }

    /// Parse `256M`, `1G`, `128MiB`, `1073741824`...; refuses less than [`MIN`].
    pub fn parse(s: &str) -> Result<Budget, String> {
        let bytes = parse_size(s)?;
        if bytes < MIN {
            return Err(format!("{s}: the memory budget must be at least 64M"));
        }
        Ok(Budget(bytes))
    }

    /// The mount's chunk cache when `--cache-size` is not given: an eighth of the budget
    /// (32 MiB at the default). The kernel's page cache keeps what was read; this cache
    /// only has to hold chunks between the kernel's partial reads of them and what the
    /// prefetcher loaded ahead (half of it). 64 MiB gave the same speed locally and 35 MB
    /// more RSS. For a remote repository, a quarter: the mount reads only what it plans
    /// (no [`Budget::read_ahead_bytes`] windows), so that share goes to this cache, whose
    /// half loaded ahead must cover the round trip: at 20 ms, `cat` of a 64 MiB file
    /// took 0.65 s with 32 MiB and 0.48-0.52 s with 64 MiB.
    pub fn chunk_cache_bytes(&self, remote: bool) -> usize {
        if remote {
            self.0 / 4
        } else {
            self.0 / 8
        }
    }

    /// Packs being uploaded to a remote repository, each held in RAM for its PUT: a
    /// quarter of the budget (16 MiB at 64M, 64 MiB at the default). Packs for a remote
    /// repository are at most half of it, so two uploads always fit.
    pub fn upload_bytes(&self) -> usize {
        self.0 / 4
    }

    /// Packs of a remote repository read ahead for sequential readers (restore, the
    /// mount's prefetcher): an eighth of the budget (8 MiB at 64M, 32 MiB at the default),
    /// in four windows. Reads and uploads do not meet in one command but prune, whose
    /// repack streams packs without read-ahead.
    pub fn read_ahead_bytes(&self) -> usize {
        self.0 / 8
    }

    /// Small files a backup reads ahead of its walker (src/ops/backup/ahead.rs): a
    /// thirty-second of the budget (8 MiB at the default, 2 MiB at 64M). Enough for
    /// the requests in flight that a cold disk wants; a file that does not fit is read
    /// by the walker, as without read-ahead.
    pub fn backup_ahead_bytes(&self) -> usize {
        self.0 / 32
    }

    /// An external sort's records held in RAM before they spill to temp files (`forget`'s
    /// snapshot records): a sixteenth of the budget.
    pub fn sort_bytes(&self) -> usize {
        self.0 / 16
    }

    /// The mount's cache of decoded inodes (tree entries): a sixteenth of the budget.
    pub fn node_cache_bytes(&self) -> usize {
        self.0 / 16
    }
}

/// Bytes charged per entry of an LRU of small keys and values ([`lru_within`]): the key
/// and value, the LRU's boxed node with two links and allocator overhead, and the hash
/// table slot.
pub const LRU_ENTRY_BYTES: usize = 96;

/// An LRU holding as many small entries as fit in `bytes` (at least one), charged
/// [`LRU_ENTRY_BYTES`] each: for sets that would grow with the repository and may
/// forget (what falls out is looked up or checked again).
pub fn lru_within<K: std::hash::Hash + Eq, V>(bytes: usize) -> lru::LruCache<K, V> {
    lru::LruCache::new(std::num::NonZeroUsize::new((bytes / LRU_ENTRY_BYTES).max(1)).expect("non-zero"))
}

/// Parse a size: `256M`, `1G`, `128MiB`, `4096`...
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: usize = num.parse().map_err(|_| format!("{s}: not a size (like 256M or 1G)"))?;
    let mult: usize = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(format!("{s}: unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(Budget::parse("256M").unwrap().0, 256 << 20);
        assert_eq!(Budget::parse("1GiB").unwrap().0, 1 << 30);
        assert_eq!(Budget::parse("128mib").unwrap().0, 128 << 20);
        assert!(Budget::parse("32M").is_err());
        assert!(Budget::parse("12Q").is_err());
        assert!(Budget::parse("").is_err());
    }
}
