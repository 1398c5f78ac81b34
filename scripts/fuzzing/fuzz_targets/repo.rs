//! A whole crafted repository directory: a copy of a frozen fixture repository (real
//! files, real keys) with the input's edits applied, then opened with its password and
//! used as the commands use it: `snapshots`, `check --read-data`, and a restore of every
//! snapshot. Edits reach the outer layers the plaintext targets cannot: file headers and
//! versions, sizes, key files' clear fields and KDF parameters, pack trailers, seals
//! that fail to open, files that are missing, extra or misnamed.
//!
//! Input: a flags byte, then at most 16 records (see
//! `cairn_fuzz::records`), each an edit, by `selector % 4`, of file `selector / 4`
//! (modulo the number of files, in path order: config, data/.., index/.., keys/..,
//! snapshots/..):
//! 0 replace it by the bytes; 1 patch it: a u32 offset (modulo its length + 1), then
//! bytes written there (extending it); 2 delete it; 3 add the bytes as a new file named
//! by their hash, in keys/, index/, snapshots/ or data/ (`selector / 4 % 4`).
//! Flags: bit 0 the fixture (v1, else v2); bit 1 `check --read-data` (else `check`);
//! bit 2 restore everything (else all but the 4 MB file, whose ~250 chunks add time, not
//! coverage). Without bits 1 and 2 an execution takes a few milliseconds, not tens.
#![no_main]
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use cairn::ops::check::{check, CheckOptions};
use cairn::id::FileId;
use cairn::repo::Repository;
use cairn::ops::restore::{resolve, restore, RestoreOptions};
use cairn_fuzz::{fixture_password, fixture_repo, open_options, read_tree, records, Quiet};
use libfuzzer_sys::fuzz_target;

type Files = Vec<(PathBuf, Vec<u8>)>;

fn fixture(version: u8) -> &'static Files {
    static V1: OnceLock<Files> = OnceLock::new();
    static V2: OnceLock<Files> = OnceLock::new();
    let cell = if version == 1 { &V1 } else { &V2 };
    cell.get_or_init(|| read_tree(&fixture_repo(version)))
}

fn apply(files: &mut Files, sel: u8, bytes: &[u8]) {
    let op = sel % 4;
    let arg = (sel / 4) as usize;
    if op == 3 {
        let id = FileId::of(bytes);
        let path = match arg % 4 {
            0 => PathBuf::from("keys").join(id.to_hex()),
            1 => PathBuf::from("index").join(id.to_hex()),
            2 => PathBuf::from("snapshots").join(id.to_hex()),
            _ => PathBuf::from("data").join(&id.to_hex()[..2]).join(id.to_hex()),
        };
        files.push((path, bytes.to_vec()));
        return;
    }
    if files.is_empty() {
        return;
    }
    let i = arg % files.len();
    match op {
        0 => files[i].1 = bytes.to_vec(),
        1 => {
            let mut off = [0u8; 4];
            let n = bytes.len().min(4);
            off[..n].copy_from_slice(&bytes[..n]);
            let f = &mut files[i].1;
            let at = u32::from_le_bytes(off) as usize % (f.len() + 1);
            let patch = &bytes[n..];
            if f.len() < at + patch.len() {
                f.resize(at + patch.len(), 0);
            }
            f[at..at + patch.len()].copy_from_slice(patch);
        }
        _ => {
            files.remove(i);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, edits)) = data.split_first() else { return };
    let version = if which & 1 == 1 { 1 } else { 2 };
    let mut files = fixture(version).clone();
    for (sel, bytes) in records(edits).into_iter().take(16) {
        apply(&mut files, sel, bytes);
    }
    let dir = cairn_fuzz::scratch();
    let root = dir.path().join("repo");
    for d in ["keys", "index", "snapshots", "data", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (rel, bytes) in &files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
    let Ok(repo) = Repository::open_with(&root, &fixture_password(version), &open_options()) else { return };
    let never = AtomicBool::new(false);
    let snapshots = repo.snapshots().unwrap_or_default();
    let _ = repo.problems();
    let _ = check(&repo, CheckOptions { read_data: which & 2 != 0, ..Default::default() }, &Quiet, &never);
    let include: Vec<String> = match which & 4 {
        0 => ["hello.txt", "hard.txt", "empty", "random.bin", "link", "fifo"].map(String::from).to_vec(),
        _ => vec![],
    };
    for (i, (_, snap)) in snapshots.iter().enumerate().take(2) {
        let Ok(top) = resolve(&repo, &snap.root, std::path::Path::new("/")) else { continue };
        let opts = RestoreOptions { target: dir.path().join(format!("out{i}")), include: include.clone(), ..Default::default() };
        let _ = restore(&repo, &top, std::path::Path::new("/"), &opts, &Quiet, &never);
    }
});
