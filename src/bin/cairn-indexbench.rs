//! Measures cairn's chunk index at a given size: load N synthetic entries through the
//! same path as opening a repository (index files of 65,536 entries, spills, merges),
//! then negative and positive lookups. Used by scripts/bench; prints one JSON line.
//!
//! ```text
//! cairn-indexbench --entries N [--memory 256M] [--dir DIR] [--lookups 1000000] [--reuse]
//! ```
//!
//! `--reuse` keeps a cache DIR left by an earlier run with the same N (the load then
//! reads nothing: it measures opening and lookups only).
//!
//! `cairn-indexbench --inject-repo REPO --entries N` instead adds N synthetic entries to a
//! real repository (password from CAIRN_PASSWORD), as index files of 65,536 entries that
//! point into packs which do not exist (`check` reports them). Their ids are random, so no
//! real chunk ever matches one: a backup into REPO then works against an index of N more
//! entries without anyone storing N chunks first. For benchmarks only.

use std::time::Instant;

use cairn::budget::Budget;
use cairn::format::index::{IndexEntry, Location};
use cairn::format::{BlobKind, Compression};
use cairn::id::{BlobId, FileId};
use cairn::index::{Index, IndexOptions};

fn id(i: u64, salt: u64) -> BlobId {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k[8..].copy_from_slice(&salt.to_le_bytes());
    BlobId(*blake3::hash(&k).as_bytes())
}

fn synthetic(i: u64, salt: u64) -> IndexEntry {
    IndexEntry {
        id: id(i, salt),
        loc: Location {
            pack: FileId(id(i / 1000, salt ^ 2).0),
            offset: 9,
            stored_len: 1000,
            raw_len: 900,
            kind: BlobKind::Data,
            compression: Compression::Zstd,
        },
    }
}

fn inject(repo: &std::path::Path, entries: u64) {
    let pw = std::env::var("CAIRN_PASSWORD").expect("CAIRN_PASSWORD");
    let r = cairn::repo::Repository::open(repo, pw.as_bytes()).expect("open repository");
    // A salt from the clock: injecting twice adds two distinct sets.
    let salt = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    let mut i = 0;
    while i < entries {
        let hi = (i + 65_536).min(entries);
        let mut batch: Vec<IndexEntry> = (i..hi).map(|j| synthetic(j, salt)).collect();
        let payload = cairn::format::index::encode(&mut batch);
        r.write_sealed_file(cairn::format::FileKind::Index, cairn::backend::Dir::Index, &payload).expect("write");
        i = hi;
    }
    println!("{{\"injected\":{entries}}}");
}

fn main() {
    cairn::sys::bound_allocator();
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let entries: u64 = get("--entries").and_then(|v| v.parse::<f64>().ok()).map_or(1_000_000, |v| v as u64);
    let lookups: u64 = get("--lookups").and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let budget = Budget::parse(&get("--memory").unwrap_or_else(|| "256M".into())).expect("--memory");
    if let Some(repo) = get("--inject-repo") {
        inject(std::path::Path::new(&repo), entries);
        return;
    }
    let dir = get("--dir").map(std::path::PathBuf::from);
    if let Some(d) = dir.as_ref().filter(|_| !args.iter().any(|a| a == "--reuse")) {
        let _ = std::fs::remove_dir_all(d);
    }
    let ix = Index::open(IndexOptions::from_budget(dir, budget.index_bytes())).expect("open");

    // Load: fake index files of 65,536 entries, 1,000 blobs per pack.
    const PER_FILE: u64 = 65_536;
    let files: Vec<FileId> = (0..entries.div_ceil(PER_FILE)).map(|f| FileId(id(f, 7).0)).collect();
    let t = Instant::now();
    let failed = ix
        .sync(&files, &mut |f| {
            let n = files.iter().position(|x| x == f).expect("known file") as u64;
            let (lo, hi) = (n * PER_FILE, ((n + 1) * PER_FILE).min(entries));
            Ok((lo..hi).map(|i| synthetic(i, 1)).collect())
        })
        .expect("sync");
    assert!(failed.is_empty());
    let load_s = t.elapsed().as_secs_f64();

    // Negative lookups: ids never inserted (the dedup question for new data).
    let t = Instant::now();
    let mut found = 0u64;
    for i in 0..lookups {
        found += ix.contains(&id(i, 3)) as u64;
    }
    let neg_s = t.elapsed().as_secs_f64();
    assert_eq!(found, 0, "a false 'stored' would lose data");

    // Positive lookups: random known ids, full location.
    let n_pos = (lookups / 10).max(1);
    let t = Instant::now();
    let mut x: u64 = 88172645463325252;
    for _ in 0..n_pos {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        assert!(ix.get(&id(x % entries.max(1), 1)).is_some());
    }
    let pos_s = t.elapsed().as_secs_f64();
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!(
        "{{\"entries\":{entries},\"load_s\":{load_s:.3},\"inserts_per_s\":{:.0},\"negative_lookups_per_s\":{:.0},\"positive_lookups_per_s\":{:.0},\"runs\":{},\"index_ram_bytes\":{},\"index_ram_per_entry\":{:.3},\"peak_rss_kib\":{rss}}}",
        entries as f64 / load_s,
        lookups as f64 / neg_s,
        n_pos as f64 / pos_s,
        ix.runs(),
        ix.ram(),
        ix.ram() as f64 / entries.max(1) as f64,
    );
}
