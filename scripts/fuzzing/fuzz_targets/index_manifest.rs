//! The local index cache as a whole (src/index.rs): a crafted cache directory (manifest,
//! pack table, journal and runs) opened by `Index::open`, looked up, brought up to date
//! with a fake repository's index files (the ones the seeds' caches were built from, so
//! a seed is read, not rebuilt), then written to: new entries, a spill and the merges it
//! triggers, over the crafted runs.
//!
//! Input: records (see `cairn_fuzz::records`) whose selector names the file:
//! 0 `manifest`, 1 `packs`, 2 `unindexed`, n >= 3 `run-<n - 3>`.
#![no_main]
use cairn::backend::Stamp;
use cairn::format::index::{IndexEntry, Location};
use cairn::format::{BlobKind, Compression};
use cairn::id::{BlobId, FileId};
use cairn::index::{memtable_bytes, Index, IndexOptions};
use cairn_fuzz::{cache_file_name, manifest_blob, manifest_entries, manifest_files, records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = cairn_fuzz::scratch();
    for (sel, bytes) in records(data).into_iter().take(16) {
        std::fs::write(dir.path().join(cache_file_name(sel)), bytes).unwrap();
    }
    let opts = IndexOptions {
        dir: Some(dir.path().to_path_buf()),
        memtable_bytes: memtable_bytes(50, 0),
        filter_bytes: 1 << 14,
    };
    let Ok(ix) = Index::open(opts) else { return };
    let probe = |ix: &Index| {
        for k in (1000..1040).chain(2000..2080).chain(3000..3120).step_by(7) {
            let id = BlobId(manifest_blob(k));
            let _ = ix.try_get(&id);
            let _ = ix.contains(&id);
        }
    };
    probe(&ix);
    let _ = (ix.len(), ix.ram(), ix.runs(), ix.journal());
    let _ = ix.for_each_pack(&mut |_| Ok(()));
    let files = manifest_files();
    let synced = ix.sync(&files, &mut |f| Ok(manifest_entries(f)), &mut |_| Ok(()));
    if synced.is_err() {
        return;
    }
    probe(&ix);
    // A backup's worth of new entries: claimed, inserted, indexed, spilled and merged.
    let new: Vec<IndexEntry> = (0..120u32)
        .map(|i| IndexEntry {
            id: BlobId(manifest_blob(9000 + i)),
            loc: Location {
                pack: FileId([9; 32]),
                offset: 9 + i * 50,
                stored_len: 50,
                raw_len: 10,
                kind: BlobKind::Data,
                compression: Compression::None,
            },
        })
        .collect();
    for e in &new {
        if ix.claim(&e.id) {
            ix.insert(e);
        }
    }
    if ix.indexed(FileId([9; 32]), Stamp(9), &new).is_ok() && ix.spill().is_ok() {
        for e in &new {
            if let Ok(Some(loc)) = ix.try_get(&e.id) {
                let _ = loc;
            }
        }
    }
    let _ = ix.for_each_pack(&mut |_| Ok(()));
});
