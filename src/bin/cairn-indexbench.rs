//! Measures cairn's chunk index at a given size: load N synthetic entries through the
//! same path as opening a repository (index files of 65,536 entries, spills, merges),
//! then negative lookups, known-id lookups (is it stored?) and location lookups (where?). Used by scripts/bench; prints one JSON line.
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

use cairn::backend::Stamp;
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

/// The largest regular file under `dir` (two levels deep is enough for the index cache).
fn largest_file(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let mut best: Option<(u64, std::path::PathBuf)> = None;
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() && depth < 2 {
                stack.push((e.path(), depth + 1));
            } else if m.is_file() && best.as_ref().is_none_or(|b| m.len() > b.0) {
                best = Some((m.len(), e.path()));
            }
        }
    }
    best.map(|b| b.1)
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
    let ix = Index::open(IndexOptions::from_budget(dir.clone(), budget.index_bytes())).expect("open");

    // Load: fake index files of 65,536 entries, 1,000 blobs per pack.
    const PER_FILE: u64 = 65_536;
    let files: Vec<(FileId, Stamp)> =
        (0..entries.div_ceil(PER_FILE)).map(|f| (FileId(id(f, 7).0), Stamp::default())).collect();
    let t = Instant::now();
    let failed = ix
        .sync(
            &files,
            &mut |f| {
                let n = files.iter().position(|(x, _)| x == f).expect("known file") as u64;
                let (lo, hi) = (n * PER_FILE, ((n + 1) * PER_FILE).min(entries));
                Ok((lo..hi).map(|i| synthetic(i, 1)).collect())
            },
            &mut |_| Ok(()),
        )
        .expect("sync");
    assert!(failed.is_empty());
    let load_s = t.elapsed().as_secs_f64();

    // Negative lookups: ids never inserted (the dedup question for new data). The ids are
    // hashed before the clock starts: a backup has the id already (it hashed the chunk),
    // so hashing is not part of a lookup's cost.
    let probes: Vec<BlobId> = (0..lookups).map(|i| id(i, 3)).collect();
    let t = Instant::now();
    let mut found = 0u64;
    for p in &probes {
        found += ix.contains(p) as u64;
    }
    let neg_s = t.elapsed().as_secs_f64();
    assert_eq!(found, 0, "a false 'stored' would lose data");

    // Positive lookups: random known ids, full location.
    let n_pos = (lookups / 10).max(1);
    let mut x: u64 = 88172645463325252;
    let known: Vec<BlobId> = (0..n_pos)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            id(x % entries.max(1), 1)
        })
        .collect();
    drop(probes);
    // Known ids, the dedup question (is it stored?): what a backup asks of a chunk it
    // has seen before.
    let t = Instant::now();
    for k in &known {
        assert!(ix.contains(k));
    }
    let known_s = t.elapsed().as_secs_f64();
    // Known ids with their location (pack, offset, lengths): what restore and the mount
    // ask. Other ids than above, so the page cache of the index does not help.
    let known: Vec<BlobId> = known
        .iter()
        .map(|k| id(u64::from_le_bytes(k.0[..8].try_into().expect("8 bytes")) % entries.max(1), 1))
        .collect();
    let t = Instant::now();
    for k in &known {
        assert!(ix.get(k).is_some());
    }
    let pos_s = t.elapsed().as_secs_f64();

    // The yardstick for a known-chunk lookup: one random 4 KiB pread of the largest file
    // of the index (a run), the same number of times. A lookup at "the speed of one page
    // read" comes close to this.
    let page_reads_per_s = dir.as_deref().and_then(largest_file).map_or(0.0, |f| {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(&f).expect("open run");
        let pages = (file.metadata().expect("stat run").len() / 4096).max(1);
        let mut buf = [0u8; 4096];
        let t = Instant::now();
        for _ in 0..n_pos {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let _ = file.read_at(&mut buf, (x % pages) * 4096);
        }
        n_pos as f64 / t.elapsed().as_secs_f64()
    });
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!(
        "{{\"entries\":{entries},\"load_s\":{load_s:.3},\"inserts_per_s\":{:.0},\"negative_lookups_per_s\":{:.0},\"known_lookups_per_s\":{:.0},\"location_lookups_per_s\":{:.0},\"page_reads_per_s\":{page_reads_per_s:.0},\"runs\":{},\"index_ram_bytes\":{},\"index_ram_per_entry\":{:.3},\"peak_rss_kib\":{rss}}}",
        entries as f64 / load_s,
        lookups as f64 / neg_s,
        n_pos as f64 / known_s,
        n_pos as f64 / pos_s,
        ix.runs(),
        ix.ram(),
        ix.ram() as f64 / entries.max(1) as f64,
    );
}
