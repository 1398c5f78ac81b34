//! The repository config (docs/format.md, "Config"): sealed under the master key.

use super::{Put, Reader};
use crate::chunker::ChunkerParams;
use crate::error::Result;

/// Default target pack size: 32 MiB.
pub const DEFAULT_PACK_SIZE: u32 = 32 << 20;

/// Repository-wide settings fixed at `init`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Random id of the repository (names its local cache).
    pub repo_id: [u8; 32],
    /// FastCDC parameters and gear seed. Changing them would defeat deduplication.
    pub chunker: ChunkerParams,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Default zstd level for `backup` (0 = store uncompressed).
    pub compression: i32,
    /// Creation time, Unix seconds.
    pub created: i64,
}

impl Config {
    /// Encode the plaintext payload (68 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(48);
        v.raw(&self.repo_id);
        v.u32(self.chunker.min);
        v.u32(self.chunker.avg);
        v.u32(self.chunker.max);
        v.u64(self.chunker.seed);
        v.u32(self.pack_size);
        v.u32(self.compression as u32);
        v.i64(self.created);
        v
    }

    /// Decode and validate the plaintext payload.
    pub fn decode(bytes: &[u8]) -> Result<Config> {
        let mut r = Reader::new(bytes, "config", &"config");
        let repo_id = r.id32()?;
        let chunker = ChunkerParams { min: r.u32()?, avg: r.u32()?, max: r.u32()?, seed: r.u64()? };
        let pack_size = r.u32()?;
        let compression = r.u32()? as i32;
        let created = r.i64()?;
        r.finish()?;
        chunker.validate().map_err(|e| r.err(e))?;
        if !(1 << 20..=1 << 30).contains(&pack_size) {
            return Err(r.err(format!("pack size {pack_size} out of range")));
        }
        if !(0..=22).contains(&compression) {
            return Err(r.err(format!("compression level {compression} out of range")));
        }
        Ok(Config { repo_id, chunker, pack_size, compression, created })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn roundtrip(id in proptest::array::uniform32(any::<u8>()), seed in any::<u64>(), lvl in 0i32..=22, created in any::<i64>()) {
            let c = Config { repo_id: id, chunker: ChunkerParams::default_with_seed(seed), pack_size: DEFAULT_PACK_SIZE, compression: lvl, created };
            prop_assert_eq!(Config::decode(&c.encode()).unwrap(), c);
        }
    }

    #[test]
    fn refuses_bad_chunker() {
        let mut c = Config {
            repo_id: [0; 32],
            chunker: ChunkerParams::default_with_seed(1),
            pack_size: DEFAULT_PACK_SIZE,
            compression: 3,
            created: 0,
        };
        c.chunker.max = 1;
        assert!(Config::decode(&c.encode()).is_err());
    }
}
