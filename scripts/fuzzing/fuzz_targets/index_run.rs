//! Sorted runs of the local index cache (src/index/run.rs), opened with the budgets
//! that keep, fold or drop the stored filter, then read: every record in order, and
//! lookups of the ids found there and of a few others. The cache is rebuilt from the
//! repository when it is damaged, but until then every read of it must fail cleanly.
//!
//! Input: a byte choosing the filter budget and the iteration buffer, then the run file.
#![no_main]
use std::sync::OnceLock;

use cairn::index::run::Run;
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(cairn_fuzz::scratch)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, file)) = data.split_first() else { return };
    let path = dir().path().join("run");
    std::fs::write(&path, file).unwrap();
    let _ = Run::stored_filter_bytes(&path);
    let budget = [usize::MAX, 4096, 64, 0][(sel & 3) as usize];
    let Ok(mut run) = Run::open(&path, budget) else { return };
    let _ = run.ram();
    let mut ids = vec![[0u8; 32], [0xff; 32], *blake3::hash(file).as_bytes()];
    let mut it = run.iter(1 + (sel as usize >> 2) % 4);
    while let Ok(Some(r)) = it.next_record() {
        if ids.len() < 300 {
            ids.push(r.id);
            let mut next = r.id;
            next[31] ^= 1;
            ids.push(next);
        }
        let _ = (r.stored_len(), r.kind(), r.compression());
    }
    for round in 0..2 {
        for id in &ids {
            let _ = run.may_contain(id);
            if let Ok(Some(r)) = run.find(id) {
                assert_eq!(&r.id, id, "find returned another id");
            }
        }
        if round == 0 && !run.fold_filter() {
            run.drop_filter();
        }
    }
});
