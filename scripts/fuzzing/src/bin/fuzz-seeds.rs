//! Writes the seed corpora of every fuzz target from real files: the frozen fixture
//! repositories (src/tests/fixtures/v1 and v2) opened with their passwords, for the
//! repository files and their decrypted payloads, and local index caches built by the
//! real index code, for the cache targets. Nothing is committed: `scripts/fuzz --seeds`
//! runs this into scripts/fuzzing/corpus/<target>/ (which libFuzzer then grows).
//!
//! Usage: fuzz-seeds CORPUS_DIR

use std::path::PathBuf;

use cairn::backend::Dir;
use cairn::format::pack::encode_header;
use cairn::format::{BlobKind, FileKind, HEADER_LEN};
use cairn::index::{memtable_bytes, Index, IndexOptions};
use cairn_fuzz::{
    cache_file_name, fixture_repo, manifest_entries, manifest_files, open_fixture_copy, put_record, read_tree,
};

struct Out {
    root: PathBuf,
    count: usize,
}

impl Out {
    fn seed(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write");
        self.count += 1;
    }
}

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).expect("usage: fuzz-seeds CORPUS_DIR"));
    let mut out = Out { root, count: 0 };
    for version in [1u8, 2] {
        repository_seeds(&mut out, version);
    }
    cache_seeds(&mut out);
    println!("fuzz-seeds: wrote {} seeds into {}", out.count, out.root.display());
}

/// Seeds of the file targets from fixture `version`, and of the `repo` target.
fn repository_seeds(out: &mut Out, version: u8) {
    let (_dir, repo) = open_fixture_copy(version);
    let v = format!("v{version}");
    let b = repo.backend();

    let mut config = FileKind::Config.header().to_vec();
    config.extend_from_slice(&repo.config().encode());
    out.seed("config", &v, &config);

    let lock = cairn::format::lock::LockInfo {
        time_ns: 1_780_000_000_000_000_000,
        exclusive: version % 2 == 0,
        pid: 4242,
        machine: b"0123abcd".to_vec(),
        host: "fixture".into(),
        user: "me".into(),
        command: "backup".into(),
    };
    out.seed("lock_file", &v, &[&FileKind::Lock.header()[..], &lock.encode()].concat());

    for id in b.list(Dir::Keys).unwrap() {
        out.seed("key_file", &format!("{v}-{}", id.short()), &std::fs::read(b.path(Dir::Keys, &id)).unwrap());
    }
    for id in b.list(Dir::Snapshots).unwrap() {
        let raw = std::fs::read(b.path(Dir::Snapshots, &id)).unwrap();
        let (_, plain) = repo.read_versioned_file(FileKind::Snapshot, Dir::Snapshots, &id).unwrap();
        out.seed("snapshot", &format!("{v}-{}", id.short()), &[&raw[..HEADER_LEN], &plain[..]].concat());
    }
    let mut trees = 0;
    for id in b.list(Dir::Index).unwrap() {
        let raw = std::fs::read(b.path(Dir::Index, &id)).unwrap();
        let plain = repo.read_sealed_file(FileKind::Index, Dir::Index, &id).unwrap();
        out.seed("index_file", &format!("{v}-{}", id.short()), &[&raw[..HEADER_LEN], &plain[..]].concat());
        for e in repo.read_index_file(&id).unwrap() {
            if e.loc.kind == BlobKind::Tree && trees < 64 {
                let node = repo.read_blob(&e.id, BlobKind::Tree).unwrap();
                out.seed("tree", &format!("{v}-{}", e.id.short()), &node);
                trees += 1;
            }
        }
    }
    let mut packs = Vec::new();
    b.for_each_pack(|id, _| {
        packs.push(id);
        Ok(())
    })
    .unwrap();
    for id in packs {
        let raw = std::fs::read(repo.pack_path(&id)).unwrap();
        let h = repo.read_pack_header(&id).unwrap();
        let recs: Vec<_> = h.blobs.iter().map(|(b, _)| *b).collect();
        let plain = encode_header(&recs);
        let blobs_len: u64 = recs.iter().map(|r| r.stored_len as u64).sum();
        let name = format!("{v}-{}", id.short());
        out.seed("pack_header", &name, &[&blobs_len.to_le_bytes()[..], &plain].concat());
        // pack_file: the pack as is, and cut before its sealed header with the header's
        // plaintext after it (mode 129: seal it, exact trailer).
        out.seed("pack_file", &format!("{name}-raw"), &[&[0u8][..], &raw].concat());
        let prefix = &raw[..HEADER_LEN + blobs_len as usize];
        let sealed = [&[129u8][..], &(plain.len() as u32).to_le_bytes(), prefix, &plain].concat();
        out.seed("pack_file", &format!("{name}-plain"), &sealed);
    }

    // repo: the fixture unchanged, and each file replaced by itself (small files) or
    // patched at its start and its end (packs), for the fuzzer to mutate from.
    let which = if version == 1 { 1u8 } else { 0 };
    out.seed("repo", &v, &[which]);
    out.seed("repo", &format!("{v}-read-data-full-restore"), &[which | 6]);
    for (i, (rel, bytes)) in read_tree(&fixture_repo(version)).iter().enumerate().take(64) {
        let name = format!("{v}-{}", rel.file_name().unwrap().to_string_lossy().chars().take(8).collect::<String>());
        let mut input = vec![which];
        if bytes.len() <= 16 << 10 {
            put_record(&mut input, (i * 4) as u8, bytes);
        } else {
            let head = [&0u32.to_le_bytes()[..], &bytes[..64]].concat();
            put_record(&mut input, (i * 4 + 1) as u8, &head);
            let at = bytes.len() - 64;
            let tail = [&(at as u32).to_le_bytes()[..], &bytes[at..]].concat();
            put_record(&mut input, (i * 4 + 1) as u8, &tail);
        }
        out.seed("repo", &name, &input);
    }
}

/// Seeds of the index-cache targets: caches built by the real index code from the fake
/// index files the `index_manifest` target syncs with, at several stages (one run, a
/// run and a memtable spilled, merged runs, a journal).
fn cache_seeds(out: &mut Out) {
    let files = manifest_files();
    let dir = cairn_fuzz::scratch();
    let cache = dir.path().join("cache");
    let opts =
        || IndexOptions { dir: Some(cache.clone()), memtable_bytes: memtable_bytes(50, 0), filter_bytes: 1 << 14 };
    // The largest file first: the runs of later stages are too small to merge into it,
    // so the caches hold one, two and three runs.
    let stages = [vec![files[2]], vec![files[2], files[0]], vec![files[2], files[0], files[1]]];
    for (stage, present) in stages.iter().enumerate() {
        let stage = stage + 1;
        let ix = Index::open(opts()).unwrap();
        let failed = ix.sync(present, &mut |f| Ok(manifest_entries(f)), &mut |_| Ok(())).unwrap();
        assert!(failed.is_empty());
        if stage == 2 {
            ix.journal_pack(&cairn::id::FileId([7; 32])).unwrap();
        }
        drop(ix);
        let mut input = Vec::new();
        for (rel, bytes) in read_tree(&cache) {
            let name = rel.to_string_lossy().into_owned();
            let sel = match name.as_str() {
                "manifest" => 0u8,
                "packs" => 1,
                "unindexed" => 2,
                n => match n.strip_prefix("run-").and_then(|s| s.parse::<u8>().ok()) {
                    Some(seq) if seq < 253 => {
                        for budget in 0..4u8 {
                            out.seed(
                                "index_run",
                                &format!("s{stage}-{n}-b{budget}"),
                                &[&[budget][..], &bytes].concat(),
                            );
                        }
                        seq + 3
                    }
                    _ => continue,
                },
            };
            debug_assert_eq!(cache_file_name(sel), name);
            put_record(&mut input, sel, &bytes);
        }
        out.seed("index_manifest", &format!("stage{stage}"), &input);
    }
}
