//! The repository: unlocking keys, the config, sealed files (index, snapshots), and
//! reading and writing blobs through packs and the index.
//!
//! Write ordering (docs/format.md, "Read and write ordering"): a pack is durable before
//! an index file names it, and every index file a snapshot depends on is durable before
//! the snapshot is written. Every file is written whole and atomically by the backend
//! ([`Backend::store`]; locally: temp file, fsync, rename, fsync the directory).

mod cache;
pub mod lock;
pub mod packer;
mod reader;

pub use cache::{ByteLru, ChunkCache, Pool};
pub use reader::{coalesce, plan, BlobVisitor, PackHeader, Run, Spacing, Wanted, COALESCE_GAP, COALESCE_MAX};

use std::path::Path;
use std::sync::Mutex;

use crate::backend::{Backend, Dir};
use crate::chunker::ChunkerParams;
use crate::compress::Compressor;
use crate::crypto::{self, KdfParams, Keys, WrappingKey};
use crate::error::{Error, Result};
use crate::format::config::{Config, DEFAULT_PACK_SIZE};
use crate::format::index::{self as index_format, IndexEntry, Location};
use crate::format::key::KeyFile;
use crate::format::snapshot::Snapshot;
use crate::format::tree::ChunkRef;
use crate::format::{blob_aad, BlobKind, Compression, FileKind, HEADER_LEN};
use crate::id::{BlobId, FileId};
use crate::index::{Index, IndexOptions};

/// How to open a repository.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Root of the local caches (the index cache goes in `<root>/<repo id>/index`);
    /// `None` keeps the index in a private temp directory for this process.
    pub cache_dir: Option<std::path::PathBuf>,
    /// The memory budget.
    pub budget: crate::budget::Budget,
    /// The most a key file's KDF may cost to be tried; `None`: what the budget allows
    /// ([`KdfLimit::of_budget`]).
    pub kdf_limit: Option<KdfLimit>,
    /// The command looks up few blob ids, all of them present (forget, prune): the
    /// index holds no filters in RAM ([`crate::index::Index::drop_filters`]).
    pub few_lookups: bool,
    /// Credentials and settings for an S3 location.
    pub s3: crate::backend::S3Env,
    /// Where the repository's operations say how far they have come (the command line
    /// reads it for its progress line).
    pub meter: std::sync::Arc<crate::progress::Meter>,
}

/// Settings for `init`.
pub struct InitOptions {
    /// KDF parameters for the first key file.
    pub kdf: KdfParams,
    /// Chunker sizes; the seed is always random.
    pub chunker: ChunkerParams,
    /// Target pack size.
    pub pack_size: u32,
    /// Default zstd level.
    pub compression: i32,
    /// Credentials and settings for an S3 location.
    pub s3: crate::backend::S3Env,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            kdf: KdfParams::DEFAULT,
            chunker: ChunkerParams::default_with_seed(0),
            pack_size: DEFAULT_PACK_SIZE,
            compression: 3,
            s3: Default::default(),
        }
    }
}

/// An unlocked repository.
pub struct Repository {
    backend: Box<dyn Backend>,
    /// The key file the password opened.
    key_id: FileId,
    keys: Keys,
    config: Config,
    index: Index,
    /// Damaged files skipped so far (index files at open, snapshots when listing), with
    /// why, and other things the user should know (an unusable cache directory).
    /// Commands print them as warnings.
    problems: Mutex<Vec<String>>,
    /// Some index file was skipped as damaged: the blobs it listed are unknown until
    /// their packs are indexed again ([`crate::ops::repair`]).
    index_incomplete: std::sync::atomic::AtomicBool,
    budget: crate::budget::Budget,
    /// The config file's format version: 1 (made by cairn 0.1, whose clients take no
    /// locks) or 2 (every client takes locks). It only goes up.
    config_version: std::sync::atomic::AtomicU8,
    meter: std::sync::Arc<crate::progress::Meter>,
    /// The id of an all-zero data blob by length ([`Repository::is_zero_chunk`]): the
    /// 16 lengths met last, ~40 B each.
    zero_ids: Mutex<lru::LruCache<u32, BlobId>>,
}

/// What [`Repository::rewrite_index_files`] met, as it goes.
pub enum IndexNote<'a> {
    /// A damaged index file, removed.
    Damaged(&'a FileId, &'a Error),
    /// An index file rewritten without this many entries.
    Rewritten(&'a FileId, u64),
}

/// What [`Repository::rewrite_index_files`] did. (The file lists hold 32 B per index
/// file touched: one per 16,384-65,536 entries.)
#[derive(Clone, Debug, Default)]
pub struct RewrittenIndex {
    /// Index files rewritten (or removed, left empty).
    pub files: u64,
    /// Entries left out.
    pub entries_dropped: u64,
    /// Damaged index files removed.
    pub damaged_removed: u64,
    /// Index files removed.
    pub removed: Vec<FileId>,
    /// Index files written.
    pub added: Vec<FileId>,
}

/// A blob ready to go into a pack.
pub struct SealedBlob {
    /// Its id.
    pub id: BlobId,
    /// Data or tree.
    pub kind: BlobKind,
    /// How the plaintext was stored.
    pub compression: Compression,
    /// Plaintext length.
    pub raw_len: u32,
    /// `nonce || ciphertext || tag`.
    pub bytes: Vec<u8>,
}

impl Repository {
    /// Create a repository at `path` (which may exist but must not hold a repository).
    pub fn init(path: &Path, password: &[u8], opts: &InitOptions) -> Result<()> {
        let backend = crate::backend::open(path, &opts.s3, None)?;
        if backend.has_config()? {
            return Err(Error::InvalidInput(format!("{}: a repository already exists here", path.display())));
        }
        let mut chunker = opts.chunker;
        chunker.validate()?;
        chunker.seed = crate::chunker::gear_seed(chunker, crypto::random_u64)?;
        let mut repo_id = [0u8; 32];
        crypto::random_bytes(&mut repo_id);
        let config =
            Config { repo_id, chunker, pack_size: opts.pack_size, compression: opts.compression, created: now_secs() };
        // Validate through the decoder so init cannot write a config that open refuses.
        Config::decode(&config.encode())?;
        backend.create_layout()?;
        let keys = Keys::generate();
        write_key_file(&*backend, &keys, password, opts.kdf)?;
        // The config is written last: its presence is what makes a directory a repository.
        backend.write_config(&seal_config(&keys, &config, FileKind::Config.header()))
    }

    /// Unlock the repository at `path` with `password` and load its index.
    pub fn open(path: &Path, password: &[u8]) -> Result<Repository> {
        Repository::open_with(path, password, &OpenOptions::default())
    }

    /// [`Repository::open`] with a cache directory and a memory budget.
    pub fn open_with(path: &Path, password: &[u8], opts: &OpenOptions) -> Result<Repository> {
        let spool = opts.cache_dir.as_ref().map(|d| d.join("upload"));
        let s3 = crate::backend::S3Env {
            upload_bytes: opts.budget.upload_bytes() as u64,
            read_ahead_bytes: opts.budget.read_ahead_bytes(),
            ..opts.s3.clone()
        };
        let backend = crate::backend::open(path, &s3, spool.as_deref())?;
        let limit = opts.kdf_limit.unwrap_or_else(|| KdfLimit::of_budget(opts.budget));
        // A remote repository's key files are kept locally, by location (laid out like a
        // repository: `keys/<id>`): the KDF then runs on the kept one while the round
        // trip below is on its way.
        let kept_keys = (opts.cache_dir.as_ref()).filter(|_| backend.is_remote()).map(|d| {
            let hash = blake3::hash(path.as_os_str().as_encoded_bytes());
            crate::backend::Local::new(d.join("keys").join(&crate::id::hex(hash.as_bytes())[..32]))
        });
        // The config, the key listing and the index listing at once: one round trip to
        // a remote store.
        let (cfg_bytes, key_ids, index_files, guessed) = std::thread::scope(|s| {
            let keys = s.spawn(|| backend.list(Dir::Keys));
            let index = s.spawn(|| backend.list_stamped(Dir::Index));
            let guess = kept_keys.as_ref().map(|k| s.spawn(move || unwrap_kept_key(k, password, limit)));
            let cfg = backend.read_config(FileKind::Config.max_len().unwrap_or(0));
            let panicked = |what: &str| Error::InvalidInput(format!("listing {what} panicked"));
            (
                cfg,
                keys.join().unwrap_or_else(|_| Err(panicked("keys"))),
                index.join().unwrap_or_else(|_| Err(panicked("index files"))),
                guess.and_then(|g| g.join().ok().flatten()),
            )
        });
        let cfg_bytes = cfg_bytes?.ok_or_else(|| Error::NotARepository(path.to_path_buf()))?;
        let sealed = FileKind::Config.check_header(&cfg_bytes, &"config")?;
        let key_ids = key_ids?;
        // The kept key counts only if the repository still has it and it opens the config.
        let guessed = guessed.and_then(|(id, keys)| {
            if !key_ids.contains(&id) {
                let _ = kept_keys.as_ref()?.remove(Dir::Keys, &id);
                return None;
            }
            let plain = keys.open(&cfg_bytes[..HEADER_LEN], sealed, "config", &"config").ok()?;
            Some((id, keys, plain))
        });
        let (key_id, keys, config) = match guessed {
            Some((id, keys, plain)) => (id, keys, Config::decode(&plain)?),
            None => {
                let (keys, config, used) =
                    unlock(&*backend, key_ids, password, &cfg_bytes[..HEADER_LEN], sealed, limit)?;
                if let Some(k) = &kept_keys {
                    keep_key(k, &used);
                }
                (used.0, keys, config)
            }
        };
        let config_version = cfg_bytes[HEADER_LEN - 1];
        let repo_cache = opts.cache_dir.as_ref().map(|d| d.join(crate::id::hex(&config.repo_id)));
        let cache = repo_cache.as_ref().map(|d| d.join("index"));
        // A remote repository's snapshots and tree packs are read from local copies.
        let backend: Box<dyn Backend> = match &repo_cache {
            Some(d) if backend.is_remote() => Box::new(crate::backend::Cached::new(backend, &d.join("files"))),
            _ => backend,
        };
        let index_opts = |dir| IndexOptions {
            no_filters: opts.few_lookups,
            ..IndexOptions::from_budget(dir, opts.budget.index_bytes())
        };
        let mut repo = Repository {
            backend,
            key_id,
            keys,
            config,
            index: Index::open(index_opts(cache.clone()))?,
            problems: Mutex::new(Vec::new()),
            index_incomplete: std::sync::atomic::AtomicBool::new(false),
            budget: opts.budget,
            config_version: config_version.into(),
            meter: opts.meter.clone(),
            zero_ids: Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(16).expect("non-zero"))),
        };
        match index_files.and_then(|files| repo.sync_index(files)) {
            // The cache directory cannot take the index (full, read-only, gone): this
            // process keeps it in a private temp directory instead, as a second process
            // does when the cache is in use, rather than failing every command until
            // someone frees space there.
            Err(Error::Io { path, err }) if cache.as_ref().is_some_and(|c| path.starts_with(c)) => {
                repo.warn(format!(
                    "the index cache in {} cannot be written ({err}): using a temporary one for this command",
                    cache.as_ref().map_or(String::new(), |c| c.display().to_string())
                ));
                repo.index = Index::open(index_opts(None))?;
                repo.refresh_index()?;
            }
            r => r?,
        }
        Ok(repo)
    }

    /// Add a key file wrapping the same master key under another password.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<FileId> {
        write_key_file(self.backend(), &self.keys, password, kdf)
    }

    /// Change the password: a new key file under `password`, then the one in use
    /// removed (in that order: a crash between leaves both passwords working). Returns
    /// the new key file.
    pub fn change_password(&mut self, password: &[u8], kdf: KdfParams) -> Result<FileId> {
        let new = self.add_key(password, kdf)?;
        self.backend.remove(Dir::Keys, &self.key_id)?;
        self.key_id = new;
        Ok(new)
    }

    /// The key file this repository was opened with.
    pub fn key_id(&self) -> FileId {
        self.key_id
    }

    /// Remove key file `id`: never the one in use (remove it from a repository opened
    /// with another password), never the last.
    pub fn remove_key(&self, id: &FileId) -> Result<()> {
        if *id == self.key_id {
            return Err(Error::InvalidInput(format!(
                "key {} is the one in use: open the repository with another password to remove it",
                id.short()
            )));
        }
        let ids = self.backend.list(Dir::Keys)?;
        if !ids.contains(id) {
            return Err(Error::NotFound { what: "key", id: id.to_hex() });
        }
        self.backend.remove(Dir::Keys, id)
    }

    /// Load every index file. A damaged one is skipped and recorded, not fatal: the blobs
    /// it lists become unreachable (and `check` says so) but nothing else is lost.
    /// The readable key files.
    pub fn key_files(&self) -> Result<Vec<(FileId, KeyFile)>> {
        let mut out = Vec::new();
        for id in self.backend.list(Dir::Keys)? {
            if let Ok((mut kf, _)) = read_key_file(self.backend(), &id) {
                // What a listing shows, no more: planted key files must not cost memory.
                kf.wrapped = Vec::new();
                kf.host = kf.host.chars().take(255).collect();
                kf.user = kf.user.chars().take(255).collect();
                out.push((id, kf));
            }
        }
        Ok(out)
    }

    /// Bring the index up to date with the repository's index files: reads only those
    /// not seen yet (at open, all of them unless the local cache has them).
    pub fn refresh_index(&self) -> Result<()> {
        self.sync_index(self.backend.list_stamped(Dir::Index)?)
    }

    /// [`Repository::refresh_index`] with the listing of `index/` in hand.
    fn sync_index(&self, files: Vec<(FileId, crate::backend::Stamp)>) -> Result<()> {
        // Damage is skipped and reported (sync returns it); a newer format is fatal: this
        // cairn must not write into a repository it only half understands.
        let mut started = false;
        let mut read = |id: &FileId| {
            if !std::mem::replace(&mut started, true) {
                self.meter.start("reading index files", crate::progress::Unit::Items, 0);
            }
            let r = self.read_index_file(id);
            self.meter.add(1);
            r
        };
        let failed = self.index.sync(&files, &mut read, &mut |id| self.verify_file(FileKind::Index, Dir::Index, id));
        if started {
            self.meter.finish();
        }
        let failed = failed?;
        for (_, e) in &failed {
            self.problem(e);
        }
        self.index_incomplete.store(!failed.is_empty(), std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Whether the last look at the index files skipped a damaged one (whose blobs are
    /// then unknown until their packs are indexed again).
    pub fn index_incomplete(&self) -> bool {
        self.index_incomplete.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Check that file `id` of `dir` still holds the bytes it was named after (its name
    /// is the hash of its content).
    pub fn verify_file(&self, kind: FileKind, dir: Dir, id: &FileId) -> Result<()> {
        let bytes = self.backend.read(dir, id, kind.max_len().unwrap_or(u64::MAX))?;
        if FileId::of(&bytes) != *id {
            return Err(Error::corrupt(kind.name(), id, "content does not match its name"));
        }
        Ok(())
    }

    fn problem(&self, e: &Error) {
        self.warn(format!("skipped: {e}"));
    }

    /// Record something the user should know (commands print it as a warning).
    fn warn(&self, msg: String) {
        let mut p = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        if !p.contains(&msg) {
            p.push(msg);
        }
    }

    /// The config's format version (1 or 2; see [`Repository::upgrade_config`]).
    pub fn config_version(&self) -> u8 {
        self.config_version.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Rewrite a version-1 config as version 2 (the same settings, sealed under a new
    /// header), so that cairn 0.1, which takes no locks, refuses the repository from now
    /// on: a command that deletes data (prune) may only run where every client locks.
    /// Returns whether it upgraded. Atomic: the config is one file, replaced by rename.
    pub fn upgrade_config(&self) -> Result<bool> {
        if self.config_version() >= 2 {
            return Ok(false);
        }
        let header = FileKind::Config.header();
        self.backend.write_config(&seal_config(&self.keys, &self.config, header))?;
        self.config_version.store(header[HEADER_LEN - 1], std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }

    /// How large the packer lets a pack grow: the config's pack size, and for a remote
    /// repository at most half of [`crate::budget::Budget::upload_bytes`] (packs wait in
    /// RAM for their upload; 8 MiB at `--memory 64M`).
    pub fn pack_target(&self) -> u64 {
        let size = self.config.pack_size as u64;
        if self.backend.is_remote() {
            size.min(self.budget.upload_bytes() as u64 / 2)
        } else {
            size
        }
    }

    /// How a reader of many blobs (restore) plans its reads ([`plan`]) and how many it
    /// runs at once. A local disk: [`Spacing::LOCAL`] on two threads (opening the blobs
    /// is the work: one thread per core). A remote store: `--connections` requests in
    /// flight, sharing [`crate::budget::Budget::read_ahead_bytes`] (8 MiB each at the
    /// default budget, 2 MiB at 64M), with gaps of up to 1 MiB read through (a round
    /// trip of 20 ms costs more than reading a MiB).
    pub fn read_plan(&self) -> (Spacing, usize) {
        if !self.backend.is_remote() {
            return (Spacing::LOCAL, 2);
        }
        let n = self.backend.connections().max(1);
        let max = (self.budget.read_ahead_bytes() / n) as u64;
        (Spacing { gap: 1 << 20, max: max.max(1 << 20) }, n)
    }

    /// Where operations on this repository report how far they have come.
    pub fn meter(&self) -> &crate::progress::Meter {
        &self.meter
    }

    /// The memory budget the repository was opened with.
    pub fn budget(&self) -> crate::budget::Budget {
        self.budget
    }

    /// Damaged files skipped so far, described.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Decode one index file.
    pub fn read_index_file(&self, id: &FileId) -> Result<Vec<IndexEntry>> {
        let payload = self.read_sealed_file(FileKind::Index, Dir::Index, id)?;
        index_format::decode(&payload, id)
    }

    /// Rewrite every index file but those in `skip` that names a pack `keep` refuses,
    /// without that pack's entries: the new file first, durable, then the old one goes,
    /// so a crash between leaves both (duplicate entries, which readers accept), never
    /// neither. A file left with no entries is just removed. A damaged file is removed
    /// when `remove_damaged` (`repair index`, which indexed its packs from their headers
    /// first) and stops the rewrite otherwise. `keep` is asked once per pack of a file
    /// (a file's entries are sorted by id, so its packs interleave: asking per entry
    /// made prune of 10^8 blobs spend 1,000 s here). Memory: one index file's entries.
    pub fn rewrite_index_files(
        &self,
        skip: &std::collections::HashSet<FileId>,
        remove_damaged: bool,
        keep: &mut dyn FnMut(&FileId) -> Result<bool>,
        note: &mut dyn FnMut(IndexNote<'_>),
    ) -> Result<RewrittenIndex> {
        let mut done = RewrittenIndex::default();
        for file in self.backend.list(Dir::Index)? {
            if skip.contains(&file) {
                continue;
            }
            let entries = match self.read_index_file(&file) {
                Ok(e) => e,
                Err(e @ (Error::Corrupt { .. } | Error::Tampered { .. })) if remove_damaged => {
                    note(IndexNote::Damaged(&file, &e));
                    self.backend.remove(Dir::Index, &file)?;
                    done.damaged_removed += 1;
                    done.removed.push(file);
                    continue;
                }
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let total = entries.len();
            let mut packs: Vec<FileId> = entries.iter().map(|e| e.loc.pack).collect();
            packs.sort_unstable();
            packs.dedup();
            let mut gone = std::collections::HashSet::new();
            for p in packs {
                if !keep(&p)? {
                    gone.insert(p);
                }
            }
            if gone.is_empty() {
                continue;
            }
            let mut kept: Vec<IndexEntry> = entries.into_iter().filter(|e| !gone.contains(&e.loc.pack)).collect();
            let dropped = total - kept.len();
            if dropped == 0 {
                continue;
            }
            if !kept.is_empty() {
                let id =
                    self.write_sealed_file(FileKind::Index, Dir::Index, &crate::format::index::encode(&mut kept))?;
                done.added.push(id);
            }
            self.backend.remove(Dir::Index, &file)?;
            done.removed.push(file);
            done.files += 1;
            done.entries_dropped += dropped as u64;
            note(IndexNote::Rewritten(&file, dropped as u64));
        }
        Ok(done)
    }

    /// The storage backend.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }
    /// The repository directory.
    pub fn path(&self) -> &Path {
        self.backend.root()
    }
    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The master key.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
    /// The blob index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Whether chunk `c` is all zeros (a hole to a reader), known from its id without
    /// reading it: a data blob's id is a keyed hash of its bytes, so each length has one
    /// all-zero id. Only lengths a zero chunk can have are hashed, so a file's chunks cost
    /// no hashing of their size each:
    /// - the chunker's maximum, where a run of zeros is cut (the rolling hash of zeros is
    ///   a constant that misses the cut masks), whose id is computed once;
    /// - any length for the last chunk of a file of several (a file that ends in a
    ///   hole), when the index says it was stored compressed to almost nothing, as zeros
    ///   are (one index lookup).
    ///
    /// `c` starts at byte `at` of a file of `file_size` bytes. A zero chunk of another
    /// length (a chunker seed whose constant hits a mask, a file of one chunk) counts as
    /// data: that only costs reading it, never a wrong byte.
    pub fn is_zero_chunk(&self, c: &ChunkRef, at: u64, file_size: u64) -> bool {
        self.is_zero_blob(c, at, file_size, || self.index.get(&c.id))
    }

    /// [`Repository::is_zero_chunk`] for a chunk whose index entry the caller has:
    /// `loc` gives it when it is needed.
    pub fn is_zero_blob(&self, c: &ChunkRef, at: u64, file_size: u64, loc: impl FnOnce() -> Option<Location>) -> bool {
        if c.size != self.config.chunker.max {
            let last_of_several = at > 0 && at.saturating_add(c.size as u64) == file_size;
            if !last_of_several {
                return false;
            }
            // zstd stores 4 MiB of zeros in ~150 bytes; this bound keeps every zero
            // chunk and lets almost nothing else through to the hash.
            let tiny = |l: &Location| {
                l.compression == Compression::Zstd
                    && (l.stored_len as usize) <= 64 + c.size as usize / 1024 + crate::crypto::SEAL_OVERHEAD
            };
            if !loc().is_some_and(|l| tiny(&l)) {
                return false;
            }
        }
        let mut ids = self.zero_ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = ids.get(&c.size) {
            return *id == c.id;
        }
        drop(ids);
        let id = self.keys.zero_blob_id(c.size);
        self.zero_ids.lock().unwrap_or_else(|e| e.into_inner()).put(c.size, id);
        id == c.id
    }

    /// Write `payload` as a sealed file of `kind` in `dir`; returns its id.
    pub fn write_sealed_file(&self, kind: FileKind, dir: Dir, payload: &[u8]) -> Result<FileId> {
        let header = kind.header();
        let mut bytes = header.to_vec();
        self.keys.seal_into(&header, payload, &mut bytes);
        let id = FileId::of(&bytes);
        self.backend().write(dir, &id, &bytes)?;
        Ok(id)
    }

    /// The length of the file [`Repository::write_sealed_file`] writes for a payload of
    /// `payload_len` bytes: the header, the nonce, the ciphertext and the tag.
    pub fn sealed_file_len(payload_len: usize) -> u64 {
        (HEADER_LEN + crate::crypto::SEAL_OVERHEAD + payload_len) as u64
    }

    /// Read and open a sealed file of `kind`.
    pub fn read_sealed_file(&self, kind: FileKind, dir: Dir, id: &FileId) -> Result<Vec<u8>> {
        Ok(self.read_versioned_file(kind, dir, id)?.1)
    }

    /// [`Repository::read_sealed_file`] with the file's version (`FileKind::check_header`).
    pub fn read_versioned_file(&self, kind: FileKind, dir: Dir, id: &FileId) -> Result<(u8, Vec<u8>)> {
        let bytes = self.backend.read(dir, id, kind.max_len().unwrap_or(0))?;
        let sealed = kind.check_header(&bytes, id)?;
        // The file's own header is the associated data: an older version's, if it is one.
        let plain = self.keys.open(&bytes[..HEADER_LEN], sealed, kind.name(), id)?;
        // A valid file under another file's name (moved or replayed there) is damage too:
        // names are the hash of the bytes, and the index cache relies on it.
        if FileId::of(&bytes) != *id {
            return Err(Error::corrupt(kind.name(), id, "content does not match its name"));
        }
        Ok((bytes[HEADER_LEN - 1], plain))
    }

    /// Compress (when `compressor` is given and it helps) and seal a blob.
    pub fn seal_blob(
        &self,
        kind: BlobKind,
        id: BlobId,
        plaintext: &[u8],
        compressor: Option<&mut Compressor>,
    ) -> SealedBlob {
        let (compression, body) = match compressor.and_then(|c| c.compress(plaintext)) {
            Some(z) => (Compression::Zstd, z),
            None => (Compression::None, plaintext),
        };
        let bytes = self.keys.seal(&blob_aad(kind, compression), body);
        SealedBlob { id, kind, compression, raw_len: plaintext.len() as u32, bytes }
    }

    /// Save a snapshot (after every index file it depends on is durable).
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<FileId> {
        self.write_sealed_file(FileKind::Snapshot, Dir::Snapshots, &snap.encode())
    }

    /// Load one snapshot.
    pub fn load_snapshot(&self, id: &FileId) -> Result<Snapshot> {
        let (version, plain) = self.read_versioned_file(FileKind::Snapshot, Dir::Snapshots, id)?;
        Snapshot::decode(&plain, version, id)
    }

    /// All readable snapshots, oldest first; damaged ones are skipped and recorded in
    /// [`Repository::problems`]. Memory: one decoded snapshot (~200 B + paths) each.
    pub fn snapshots(&self) -> Result<Vec<(FileId, Snapshot)>> {
        let mut out = Vec::new();
        self.for_each_snapshot(&mut |id, s| {
            out.push((id, s));
            Ok(())
        })?;
        out.sort_by_key(|(id, s)| (s.time_ns, *id));
        Ok(out)
    }

    /// Visit every readable snapshot, in id order, one at a time; damaged ones are
    /// skipped and recorded in [`Repository::problems`].
    pub fn for_each_snapshot(&self, f: &mut dyn FnMut(FileId, Snapshot) -> Result<()>) -> Result<()> {
        for id in self.backend.list(Dir::Snapshots)? {
            match self.load_snapshot(&id) {
                Ok(s) => f(id, s)?,
                // Damage is skipped and reported; a newer format is fatal: this cairn must not
                // write into a repository it only half understands.
                Err(e @ (Error::Corrupt { .. } | Error::Tampered { .. })) => self.problem(&e),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Find a snapshot by `latest` or a unique prefix of its id.
    pub fn resolve_snapshot(&self, spec: &str) -> Result<(FileId, Snapshot)> {
        if spec == "latest" {
            return self.snapshots()?.pop().ok_or_else(|| Error::NotFound {
                what: "snapshot",
                id: "latest (the repository has no snapshots)".into(),
            });
        }
        if spec.is_empty() {
            return Err(Error::InvalidInput("no snapshot given (an id prefix or `latest`)".into()));
        }
        let spec_l = spec.to_ascii_lowercase();
        let matches: Vec<FileId> =
            self.backend.list(Dir::Snapshots)?.into_iter().filter(|id| id.to_hex().starts_with(&spec_l)).collect();
        match matches.as_slice() {
            [id] => Ok((*id, self.load_snapshot(id)?)),
            [] => Err(Error::NotFound { what: "snapshot", id: spec.into() }),
            _ => {
                Err(Error::InvalidInput(format!("snapshot id prefix {spec} is ambiguous ({} matches)", matches.len())))
            }
        }
    }
}

/// Read and decode key file `id`, with its KDF parameters validated; also says whether
/// its bytes no longer match its name (its clear fields are not authenticated, so such a
/// key may still unwrap: it is tried, and named as damaged if it does not).
fn read_key_file(backend: &dyn Backend, id: &FileId) -> Result<(KeyFile, bool)> {
    let bytes = backend.read(Dir::Keys, id, FileKind::Key.max_len().unwrap_or(0))?;
    let kf = KeyFile::decode(&bytes, id)?;
    kf.kdf.validate().map_err(|e| Error::corrupt("key", id, e))?;
    Ok((kf, FileId::of(&bytes) != *id))
}

fn write_key_file(backend: &dyn Backend, keys: &Keys, password: &[u8], kdf: KdfParams) -> Result<FileId> {
    let mut salt = vec![0u8; 32];
    crypto::random_bytes(&mut salt);
    let wk = WrappingKey::derive(password, &salt, kdf)?;
    let kf = KeyFile {
        kdf,
        salt,
        created: now_secs(),
        host: crate::sys::hostname(),
        user: crate::sys::username(),
        wrapped: wk.wrap(&KeyFile::aad(), keys),
    };
    let bytes = kf.encode();
    let id = FileId::of(&bytes);
    backend.write(Dir::Keys, &id, &bytes)?;
    Ok(id)
}

/// The most a key file's KDF may cost before it is tried: `mem_kib` at most this, and
/// `mem_kib` x `iterations` at most 16 times this (16 passes at the memory limit; the
/// default parameters, 32 MiB x 8, are well inside at every budget). The parameters are
/// in the clear, unauthenticated until the KDF has run, so a key file planted in `keys/`
/// could otherwise make every command allocate 4 GiB and run for minutes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfLimit {
    /// Most KiB of memory a key file's KDF may ask for.
    pub mem_kib: u64,
}

impl KdfLimit {
    /// The limit a memory budget allows: half of it (the KDF runs before anything else).
    pub fn of_budget(b: crate::budget::Budget) -> KdfLimit {
        KdfLimit { mem_kib: (b.0 / 2 / 1024) as u64 }
    }

    /// Whether a key file with these parameters may be tried.
    pub fn allows(&self, k: &KdfParams) -> bool {
        (k.mem_kib as u64) <= self.mem_kib && (k.mem_kib as u64) * (k.iterations as u64) <= self.mem_kib * 16
    }
}

/// Key files read and held at once while choosing which to try: at most this many, so
/// that key files planted in `keys/` (or in the local copies) cost no memory by their
/// number.
const KEPT_KEYS: usize = 8;

/// What trying a key file costs: its KDF's memory times its passes (cheapest first).
fn kdf_cost(kdf: &KdfParams) -> u64 {
    kdf.mem_kib as u64 * kdf.iterations as u64
}

/// Unwrap the master key from the key file kept in `kept` whose KDF is cheapest (within
/// `limit`), if any matches its name (a damaged or planted file is passed over) and
/// `password` unwraps it. Only a guess: the caller checks that the repository still has
/// that key file and that the key opens its config.
fn unwrap_kept_key(kept: &crate::backend::Local, password: &[u8], limit: KdfLimit) -> Option<(FileId, Keys)> {
    let (id, kf) = (kept.list(Dir::Keys).ok()?.into_iter().take(KEPT_KEYS))
        .filter_map(|id| match read_key_file(kept, &id) {
            Ok((kf, false)) if limit.allows(&kf.kdf) => Some((id, kf)),
            _ => None,
        })
        .min_by_key(|(id, kf)| (kdf_cost(&kf.kdf), *id))?;
    let keys = WrappingKey::derive(password, &kf.salt, kf.kdf).ok()?.unwrap(&KeyFile::aad(), &kf.wrapped)?;
    Some((id, keys))
}

/// Keep key file `used` (which unlocked the repository) in `kept`, for
/// [`unwrap_kept_key`], if its bytes are the ones its name says (written atomically and
/// durably, as any repository file). A failure only costs the next command a round trip.
fn keep_key(kept: &crate::backend::Local, used: &(FileId, KeyFile)) {
    let bytes = used.1.encode();
    if FileId::of(&bytes) == used.0 && std::fs::create_dir_all(kept.root()).is_ok() {
        let kept: &dyn Backend = kept;
        // What a crashed write left, first.
        let _ = kept.remove_stale_temps();
        let _ = kept.write(Dir::Keys, &used.0, &bytes);
    }
}

/// Try the key files, cheapest KDF first, those within `limit` only; the master key is
/// the one that opens the config (returned with the key file that held it). (A key file left by an interrupted `init` may unwrap
/// with the same password yet hold another key.) A damaged key file is skipped so it
/// cannot lock out the others. When nothing opens, the error says why as well as it can
/// be told: no key file well-formed at all, a key that unwraps but cannot open the config
/// (the config is damaged), or no key matching, naming damaged key files and those whose
/// KDF is over the limit (either may have been the password's).
fn unlock(
    backend: &dyn Backend,
    ids: Vec<FileId>,
    password: &[u8],
    config_header: &[u8],
    config_sealed: &[u8],
    limit: KdfLimit,
) -> Result<(Keys, Config, (FileId, KeyFile))> {
    if ids.is_empty() {
        return Err(Error::corrupt("repository", backend.root().display(), "no key files in keys/"));
    }
    // Only each key file's id, parameters and whether it still matches its name are kept
    // while choosing the order (~50 B each; a file past the first KEPT_KEYS is read again when
    // tried), and at most a few messages: planted key files must not cost memory by
    // their number.
    const NOTES: usize = 8;
    let (mut candidates, mut damaged, mut over, mut version_err) = (Vec::new(), Vec::new(), Vec::new(), None);
    let note = |list: &mut Vec<String>, msg: String| {
        if list.len() < NOTES {
            list.push(msg);
        }
    };
    for id in ids {
        let kf = read_key_file(backend, &id);
        match kf {
            Ok((kf, _)) if !limit.allows(&kf.kdf) => note(
                &mut over,
                format!(
                    "key {} was not tried: its KDF asks for {} MiB x {} passes, more than --memory allows \
                     (--max-kdf-memory raises the limit)",
                    id.short(),
                    kf.kdf.mem_kib / 1024,
                    kf.kdf.iterations
                ),
            ),
            Ok((kf, renamed)) => {
                let kdf = kf.kdf;
                candidates.push((id, kdf, renamed, (candidates.len() < KEPT_KEYS).then_some(kf)))
            }
            Err(Error::NotFound { .. }) => {}
            Err(e @ Error::UnsupportedVersion { .. }) => version_err = Some(e),
            Err(e) => note(&mut damaged, e.to_string()),
        }
    }
    candidates.sort_by_key(|(id, kdf, _, _)| (kdf_cost(kdf), *id));
    let (mut config_refused, mut intact_refused) = (false, false);
    for (id, _, renamed, kept) in &mut candidates {
        // Read again if not kept (it may have changed since: then it is judged as it is now).
        let read = match kept.take() {
            Some(kf) => Ok((kf, *renamed)),
            None => read_key_file(backend, id),
        };
        let kf = match read {
            Ok((kf, _)) if limit.allows(&kf.kdf) => kf,
            Ok(_) => continue,
            Err(e) => {
                note(&mut damaged, e.to_string());
                continue;
            }
        };
        // Parameters Argon2 refuses make this key file unusable, not the repository.
        let wk = match WrappingKey::derive(password, &kf.salt, kf.kdf) {
            Ok(wk) => wk,
            Err(e) => {
                note(&mut damaged, format!("key {id}: {e}"));
                continue;
            }
        };
        let Some(keys) = wk.unwrap(&KeyFile::aad(), &kf.wrapped) else {
            if *renamed {
                note(&mut damaged, format!("key {id}: content does not match its name (damaged)"));
            } else {
                intact_refused = true;
            }
            continue;
        };
        // The file's own header is the associated data: version 1 or 2.
        match keys.open(config_header, config_sealed, "config", &"config") {
            Ok(plain) => return Ok((keys, Config::decode(&plain)?, (*id, kf))),
            Err(_) => config_refused = true,
        }
    }
    if config_refused {
        return Err(Error::corrupt(
            "config",
            backend.root().join("config").display(),
            "the password unlocks a key, but the config does not open with it (the config is damaged, \
             or the key file belongs to another repository)",
        ));
    }
    // A key file from a newer cairn may be the one that matches.
    if let Some(e) = version_err {
        return Err(e);
    }
    // Every key file is damaged: that, not the password, is why nothing opened.
    if !intact_refused && over.is_empty() {
        let what = if candidates.is_empty() { "no key file is well-formed" } else { "every key file is damaged" };
        return Err(Error::corrupt("repository", backend.root().display(), format!("{what}: {}", damaged.join("; "))));
    }
    let notes: Vec<String> =
        damaged.into_iter().map(|d| format!("{d} (it may have been the one)")).chain(over).collect();
    Err(Error::WrongPassword { notes })
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

pub use crate::sys::now_ns;

/// The config file: `header` (the version it is written at) and the sealed payload.
pub fn seal_config(keys: &Keys, config: &Config, header: [u8; HEADER_LEN]) -> Vec<u8> {
    let mut bytes = header.to_vec();
    keys.seal_into(&header, &config.encode(), &mut bytes);
    bytes
}
