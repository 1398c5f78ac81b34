//! Cross-module scenarios, in process: backup -> restore equality, dedup, incremental
//! backups, damaged and hostile repositories, interruption, concurrency, the CLI.

mod budget;
mod cli;
mod compat;
mod damage;
mod decoders;
mod forget;
mod inspect;
mod locks;
mod overwrite;
mod prune;
mod readahead;
mod regressions;
mod repair;
mod roundtrip;
mod s3;
mod trees;
mod trust;
mod vfs;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use crate::format::tree::{self, Entry, Kind, Node, Time};
use crate::format::BlobKind;
use crate::id::BlobId;
use crate::ops::backup::{self, BackupOptions, BackupResult};
use crate::ops::restore::{self, RestoreOptions, RestoreStats};
use crate::repo::Repository;
use crate::repo::SealedBlob;

/// Collects warnings and errors from backup, restore and check.
#[derive(Default)]
pub(crate) struct Collect {
    pub msgs: Mutex<Vec<String>>,
}

impl Collect {
    pub fn all(&self) -> Vec<String> {
        self.msgs.lock().unwrap().clone()
    }
}

impl backup::Report for Collect {
    fn warn(&self, path: &Path, message: &str) {
        self.msgs.lock().unwrap().push(format!("{}: {message}", path.display()));
    }
}

impl restore::Report for Collect {
    fn error(&self, path: &Path, message: &str) {
        self.msgs.lock().unwrap().push(format!("error {}: {message}", path.display()));
    }
}

impl crate::ops::check::Report for Collect {
    fn error(&self, message: &str) {
        self.msgs.lock().unwrap().push(format!("error {message}"));
    }
    fn note(&self, message: &str) {
        self.msgs.lock().unwrap().push(format!("note {message}"));
    }
}

pub(crate) fn do_backup(repo: &Repository, paths: &[&Path]) -> BackupResult {
    let opts = BackupOptions { paths: paths.iter().map(|p| p.to_path_buf()).collect(), ..Default::default() };
    let c = Collect::default();
    let r = backup::backup(repo, &opts, &c, &AtomicBool::new(false)).unwrap();
    assert!(c.all().is_empty(), "unexpected warnings: {:?}", c.all());
    r
}

/// Restore all of snapshot `r` into `target`; returns stats and messages.
pub(crate) fn do_restore(
    repo: &Repository,
    r: &BackupResult,
    target: &Path,
    include: &[&str],
) -> (RestoreStats, Vec<String>) {
    let root = restore::resolve(repo, &r.snapshot.root, Path::new("/")).unwrap();
    let opts = RestoreOptions {
        target: target.to_path_buf(),
        include: {
            let mut p = crate::pattern::Patterns::new();
            for i in include {
                p.add("--include", i, false).unwrap();
            }
            p
        },
        sync: false,
        ..Default::default()
    };
    let c = Collect::default();
    let stats = restore::restore(repo, &root, Path::new("/"), &opts, &c, &AtomicBool::new(false)).unwrap();
    (stats, c.all())
}

pub(crate) fn do_check(repo: &Repository, read_data: bool) -> (crate::ops::check::CheckStats, Vec<String>) {
    let c = Collect::default();
    let s = crate::ops::check::check(
        repo,
        crate::ops::check::CheckOptions { read_data, ..Default::default() },
        &c,
        &AtomicBool::new(false),
    )
    .unwrap();
    (s, c.all())
}

/// Store crafted blobs and a snapshot pointing at `root`.
pub(crate) fn craft(repo: &Repository, blobs: Vec<SealedBlob>, root: BlobId) -> crate::ops::backup::BackupResult {
    let mut p = crate::repo::packer::Packer::new(repo);
    for b in blobs {
        p.add(b).unwrap();
    }
    p.finish().unwrap();
    let snapshot = crate::format::snapshot::Snapshot {
        time_ns: 1,
        host: "h".into(),
        user: "u".into(),
        paths: vec!["/x".into()],
        tags: vec![],
        parent: None,
        root,
        program: "test".into(),
        summary: Default::default(),
        xattrs: None,
        xattr_names: None,
    };
    let id = repo.save_snapshot(&snapshot).unwrap();
    crate::ops::backup::BackupResult { id, snapshot, parent: None, dry_run: None }
}

pub(crate) fn entry(name: &[u8], kind: Kind, size: u64) -> Entry {
    Entry {
        name: name.to_vec(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        user: vec![],
        group: vec![],
        size,
        mtime: Time::default(),
        ctime: Time::default(),
        atime: Time::default(),
        dev: 0,
        ino: 0,
        nlink: 1,
        xattrs: vec![],
    }
}

pub(crate) fn tree_blob(repo: &Repository, node: &Node) -> (BlobId, SealedBlob) {
    let bytes = tree::encode(node);
    let id = repo.keys().blob_id(BlobKind::Tree, &bytes);
    (id, repo.seal_blob(BlobKind::Tree, id, &bytes, None))
}
