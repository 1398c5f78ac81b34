//! A repository in an S3-compatible object store, through Apache OpenDAL (docs/design.md,
//! "Storage"). Each file is one object under the key of its path (docs/format.md,
//! section 3), below the URL's prefix. An object appears whole when its upload
//! completes, so there is no `tmp/`: a file being written is a local temp file (in the
//! spool directory) until [`Backend::store`] uploads it.
//!
//! Requests run on a small tokio runtime of this module's own; cairn's threads wait on
//! them (`opendal::blocking`). Transient failures (5xx, throttling, timeouts, resets) are
//! retried with exponential backoff and jitter, and counted ([`retries`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use opendal::{blocking, ErrorKind};
use zeroize::Zeroizing;

use super::{Backend, Dir, Meta, Stamp, TempFile};
use crate::error::{Error, IoContext, Result};
use crate::id::FileId;

/// Requests each operation may make after the first, on transient errors.
const RETRIES: usize = 6;
/// Objects at most this large are uploaded with one PUT from memory; larger ones in
/// parts of this size (cairn's packs are smaller: 16 MiB by default).
const SINGLE_PUT: u64 = 64 << 20;

/// Retries made by every S3 repository of this process (for summaries and tests).
static RETRIED: AtomicU64 = AtomicU64::new(0);
/// Requests made (first attempts; listings count one per page of 1000 keys).
static REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Bytes received in object bodies.
static RECEIVED: AtomicU64 = AtomicU64::new(0);
/// Bytes sent in object bodies.
static SENT: AtomicU64 = AtomicU64::new(0);

/// Transient failures retried so far by this process.
pub fn retries() -> u64 {
    RETRIED.load(Ordering::Relaxed)
}

/// What this process exchanged with S3 so far, for summaries.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Traffic {
    /// Requests made (retries not counted; a listing counts one per 1000 keys).
    pub requests: u64,
    /// Bytes of object bodies received.
    pub bytes_read: u64,
    /// Bytes of object bodies sent.
    pub bytes_written: u64,
    /// Requests retried after a transient failure.
    pub retries: u64,
}

/// The process's [`Traffic`] so far.
pub fn traffic() -> Traffic {
    Traffic {
        requests: REQUESTS.load(Ordering::Relaxed),
        bytes_read: RECEIVED.load(Ordering::Relaxed),
        bytes_written: SENT.load(Ordering::Relaxed),
        retries: retries(),
    }
}

/// Count one request receiving `received` and sending `sent` body bytes.
fn count(received: u64, sent: u64) {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    RECEIVED.fetch_add(received, Ordering::Relaxed);
    SENT.fetch_add(sent, Ordering::Relaxed);
}

/// A streamed GET's body, counted as it is read.
struct Counted<R>(R);

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        RECEIVED.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The runtime that drives requests: two workers (requests wait on the network, not
/// the CPU), its I/O and timer drivers on.
static RUNTIME: LazyLock<std::io::Result<tokio::runtime::Runtime>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("cairn-s3").enable_all().build()
});

/// Where a repository lives: parsed from `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    /// `http[s]://HOST[:PORT]`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// Key prefix, without slashes at either end ("" for the bucket's root).
    pub prefix: String,
}

impl S3Url {
    /// Parse a repository location; `None` if it is not an `s3:` URL.
    pub fn parse(s: &str) -> Option<Result<S3Url>> {
        let rest = s.strip_prefix("s3:")?;
        let bad =
            |why: &str| Error::InvalidInput(format!("{s}: {why} (expected s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX])"));
        let Some((scheme, after)) = rest.split_once("://") else { return Some(Err(bad("no http:// or https://"))) };
        if scheme != "http" && scheme != "https" {
            return Some(Err(bad("the scheme must be http or https")));
        }
        let (host, path) = after.split_once('/').unwrap_or((after, ""));
        let path = path.trim_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if host.is_empty() {
            return Some(Err(bad("no host")));
        }
        if bucket.is_empty() {
            return Some(Err(bad("no bucket")));
        }
        Some(Ok(S3Url {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        }))
    }
}

/// The credentials and settings S3 takes from the environment (read by the caller, so
/// the library never reads it behind cairn's back and tests stay hermetic). Its `Debug`
/// shows no secret; the secrets are zeroized when dropped.
#[derive(Clone, Default)]
pub struct S3Env {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<Zeroizing<String>>,
    /// `AWS_SESSION_TOKEN`.
    pub session_token: Option<Zeroizing<String>>,
    /// `AWS_DEFAULT_REGION` (or `AWS_REGION`); `us-east-1` when unset.
    pub region: Option<String>,
    /// `AWS_PROFILE`: credentials from `~/.aws/credentials` when no keys are given.
    pub profile: Option<String>,
    /// Virtual-host addressing (`https://BUCKET.HOST/KEY`) instead of path style, which
    /// self-hosted servers need: `CAIRN_S3_VIRTUAL_HOST=1`.
    pub virtual_host: bool,
    /// Uploads of packs in flight at once (`--connections`; 0: [`DEFAULT_CONNECTIONS`]).
    pub connections: usize,
    /// Bytes of packs being uploaded at once, each held in RAM for its PUT (0:
    /// [`DEFAULT_UPLOAD_BYTES`]); the caller derives it from the memory budget.
    pub upload_bytes: u64,
    /// Bytes of packs read ahead for sequential readers (0: [`DEFAULT_READ_AHEAD`]); the
    /// caller derives it from the memory budget.
    pub read_ahead_bytes: usize,
}

/// Read-ahead when nobody says (a library user).
pub const DEFAULT_READ_AHEAD: usize = 32 << 20;

/// Uploads in flight at once unless `--connections` says otherwise: enough to keep a
/// link with tens of milliseconds of round trip busy while the next pack is filled.
pub const DEFAULT_CONNECTIONS: usize = 4;
/// Bytes of uploads in flight when nobody says (a library user).
pub const DEFAULT_UPLOAD_BYTES: u64 = 64 << 20;

impl std::fmt::Debug for S3Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Env")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<set>"))
            .field("session_token", &self.session_token.as_ref().map(|_| "<set>"))
            .field("region", &self.region)
            .field("profile", &self.profile)
            .field("virtual_host", &self.virtual_host)
            .field("connections", &self.connections)
            .field("upload_bytes", &self.upload_bytes)
            .field("read_ahead_bytes", &self.read_ahead_bytes)
            .finish()
    }
}

/// An S3 repository.
pub struct S3 {
    op: blocking::Operator,
    /// The URL as given, for messages (`root()` and `path()`).
    root: PathBuf,
    /// Where files being written wait for their upload.
    spool: PathBuf,
    uploads: std::sync::Arc<Uploads>,
    ahead: std::sync::Arc<ReadAhead>,
}

/// The uploads [`Backend::store_later`] started and not yet finished: at most `max`
/// of them and `max_bytes` together (one alone may be larger), each holding its file in
/// RAM while its PUT runs.
struct Uploads {
    state: std::sync::Mutex<UploadState>,
    done: std::sync::Condvar,
    max: usize,
    max_bytes: u64,
}

#[derive(Default)]
struct UploadState {
    running: usize,
    bytes: u64,
    /// The first upload that failed since the last [`Backend::wait_stored`].
    failed: Option<Error>,
}

impl Uploads {
    fn lock(&self) -> std::sync::MutexGuard<'_, UploadState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for room for `len` more bytes, then count them in.
    fn start(&self, len: u64) {
        let mut s = self.lock();
        while s.running > 0 && (s.running >= self.max || s.bytes + len > self.max_bytes) {
            s = self.done.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.running += 1;
        s.bytes += len;
    }

    fn end(&self, len: u64, r: Result<()>) {
        let mut s = self.lock();
        s.running -= 1;
        s.bytes -= len;
        if let Err(e) = r {
            s.failed.get_or_insert(e);
        }
        self.done.notify_all();
    }
}

impl S3 {
    /// Connect (no request is made until the first operation). `spool`: a local directory
    /// for files being written (the system's temp directory if `None`).
    pub fn new(url: &S3Url, env: &S3Env, spool: Option<&Path>) -> Result<S3> {
        let shown = format!(
            "s3:{}/{}{}",
            url.endpoint,
            url.bucket,
            if url.prefix.is_empty() { String::new() } else { format!("/{}", url.prefix) }
        );
        let invalid = |e: opendal::Error| Error::InvalidInput(format!("{shown}: {e}"));
        // One TLS provider for the process (a second install is refused: harmless).
        let _ = rustls::crypto::ring::default_provider().install_default();
        opendal_http_transport_reqwest::install_default();
        let mut b = opendal::services::S3::default()
            .endpoint(&url.endpoint)
            .bucket(&url.bucket)
            .root(&format!("/{}", url.prefix))
            .region(env.region.as_deref().unwrap_or("us-east-1"))
            // Credentials only from what cairn passes: no EC2 metadata probe (a timeout
            // off EC2), no environment read behind the caller's back.
            .disable_config_load()
            .disable_ec2_metadata();
        if let (Some(id), Some(secret)) = (&env.access_key_id, &env.secret_access_key) {
            b = b.access_key_id(id).secret_access_key(secret.as_str());
            if let Some(t) = &env.session_token {
                b = b.session_token(t.as_str());
            }
        } else if let Some(p) = &env.profile {
            b = b.profile(p);
        }
        if env.virtual_host {
            b = b.enable_virtual_host_style();
        }
        let retry = opendal::layers::RetryLayer::new()
            .with_jitter()
            .with_max_times(RETRIES)
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .with_notify(|_: opendal::layers::RetryEvent<'_>| {
                RETRIED.fetch_add(1, Ordering::Relaxed);
            });
        let op = opendal::Operator::new(b)
            .map_err(invalid)?
            // Timeouts first, so that a request that hangs is retried.
            .layer(
                opendal::layers::TimeoutLayer::new()
                    .with_timeout(Duration::from_secs(60))
                    .with_io_timeout(Duration::from_secs(60)),
            )
            .layer(retry);
        let rt = RUNTIME.as_ref().map_err(|e| Error::InvalidInput(format!("cannot start the S3 client: {e}")))?;
        let _in = rt.enter();
        let op = blocking::Operator::new(op).map_err(invalid)?;
        let spool = spool.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
        let uploads = Uploads {
            state: Default::default(),
            done: Default::default(),
            max: if env.connections == 0 { DEFAULT_CONNECTIONS } else { env.connections },
            max_bytes: if env.upload_bytes == 0 { DEFAULT_UPLOAD_BYTES } else { env.upload_bytes },
        };
        let ahead = std::sync::Arc::new(ReadAhead::new(if env.read_ahead_bytes == 0 {
            DEFAULT_READ_AHEAD
        } else {
            env.read_ahead_bytes
        }));
        Ok(S3 { op, root: PathBuf::from(shown), spool, uploads: std::sync::Arc::new(uploads), ahead })
    }

    /// The error for a failed request about `key`: not found, or what the server said
    /// (after the retries), naming the object's URL.
    fn err(&self, key: &str, e: opendal::Error) -> Error {
        request_error(&self.root, key, e)
    }

    /// Upload the finished file at `path` as `key`, and remove the file.
    fn upload(op: &blocking::Operator, root: &Path, key: &str, path: &Path) -> Result<()> {
        let err = |e| request_error(root, key, e);
        let r = (|| -> Result<()> {
            let mut f = std::fs::File::open(path).at(path)?;
            let len = f.metadata().at(path)?.len();
            count(0, len);
            if len <= SINGLE_PUT {
                let mut bytes = Vec::with_capacity(len as usize);
                f.read_to_end(&mut bytes).at(path)?;
                op.write(key, bytes).map(drop).map_err(err)
            } else {
                let opts = opendal::options::WriteOptions { chunk: Some(SINGLE_PUT as usize), ..Default::default() };
                let mut w = op.writer_options(key, opts).map_err(err)?;
                let mut buf = vec![0u8; SINGLE_PUT as usize];
                loop {
                    let n = f.read(&mut buf).at(path)?;
                    if n == 0 {
                        break;
                    }
                    w.write(buf[..n].to_vec()).map_err(err)?;
                }
                w.close().map(drop).map_err(err)
            }
        })();
        let _ = std::fs::remove_file(path);
        r
    }
}

/// Read-ahead for sequential readers of packs, as the kernel does for files: a read of
/// a pack at or just past where the last read of that pack ended fetches the window of
/// [`ReadAhead::window`] bytes around it with one request (windows lie on a grid of their
/// size, so readers meeting in a pack share them), and the reads that follow are served
/// from it; a read served from a window keeps the next [`AHEAD_DEPTH`] windows being
/// fetched in the background, each by a request of its own, so a sequential reader waits
/// for the round trip once, not once per window. A restore walks files in the order the
/// backup stored them, so thousands of small files come out of one GET instead of one
/// GET each. Readers wanting a window
/// being fetched wait for it (one request, not one per reader). Random reads (the mount
/// seeking) stay exact. Memory: the windows, at most `max_bytes` together (an eighth of
/// the budget, [`S3Env::read_ahead_bytes`]), plus ~100 B per pack remembered (4,096).
struct ReadAhead {
    state: std::sync::Mutex<AheadState>,
    loaded: std::sync::Condvar,
    window: u64,
    max_bytes: u64,
}

struct AheadState {
    /// Windows, least recently used first (a handful: `max_bytes / window`).
    windows: Vec<Window>,
    /// Bytes of the windows, loaded or being loaded.
    held: u64,
    /// Where the last read of each pack ended, and the pack's length once asked.
    last: lru::LruCache<FileId, (u64, Option<u64>)>,
}

struct Window {
    pack: FileId,
    start: u64,
    len: u64,
    /// `None` while its request runs.
    bytes: Option<Vec<u8>>,
    /// A read was served from it (windows not read yet are the last to go).
    used: bool,
    /// When its bytes came.
    ready_at: Option<std::time::Instant>,
}

/// A window fetched ahead and not read for this long is taken to be abandoned (its
/// reader stopped or went elsewhere): its room may go to another.
const AHEAD_ABANDONED: Duration = Duration::from_secs(1);

impl Window {
    /// Whether its room may go to another window: loaded, and read from or abandoned.
    fn evictable(&self) -> bool {
        self.bytes.is_some() && (self.used || self.ready_at.is_some_and(|t| t.elapsed() > AHEAD_ABANDONED))
    }
}

/// Packs whose last read position is remembered.
const AHEAD_PACKS: usize = 4096;
/// A read at most this far past where the last read of its pack ended is sequential
/// (the blobs between are of files not restored, or already in the mount's cache).
const AHEAD_GAP: u64 = 64 << 10;
/// Windows fetched ahead of a sequential reader, each by a request of its own: a slow
/// server or a long round trip is then paid once per this many windows.
const AHEAD_DEPTH: usize = 3;

/// What [`ReadAhead::serve`] says to do.
#[derive(Debug)]
enum Ahead {
    /// The bytes were served; fetch these windows (offset, length) in the background.
    Served(Vec<(u64, u64)>),
    /// Fetch this many bytes at the offset, keeping them as a window (`true`) or not.
    Fetch(u64, bool),
}

impl ReadAhead {
    fn new(max_bytes: usize) -> ReadAhead {
        ReadAhead {
            state: std::sync::Mutex::new(AheadState {
                windows: Vec::new(),
                held: 0,
                last: lru::LruCache::new(std::num::NonZeroUsize::new(AHEAD_PACKS).expect("non-zero")),
            }),
            loaded: std::sync::Condvar::new(),
            // Eight windows fit (two readers, each with its window and AHEAD_DEPTH more);
            // 8 MiB at most (a request of 8 MiB takes about as long as a round trip of
            // tens of milliseconds on a fast link, so larger gains little).
            window: (max_bytes as u64 / 8).min(8 << 20),
            max_bytes: max_bytes as u64,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AheadState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serve `buf` at `offset` of `pack` from a window (waiting for one being fetched),
    /// or say what to fetch.
    fn serve(&self, pack: &FileId, offset: u64, buf: &mut [u8]) -> Ahead {
        if buf.is_empty() {
            return Ahead::Served(Vec::new());
        }
        let end = offset + buf.len() as u64;
        let mut s = self.lock();
        let last = s.last.get(pack).copied();
        s.last.put(*pack, (end, last.and_then(|l| l.1)));
        // The windows covering offset..end, one after the other (a read may straddle two).
        'wait: loop {
            let mut covering = Vec::new();
            let mut at = offset;
            while at < end {
                let Some(i) = s.windows.iter().position(|w| w.pack == *pack && at >= w.start && at < w.start + w.len)
                else {
                    break;
                };
                if s.windows[i].bytes.is_none() {
                    s = self.loaded.wait(s).unwrap_or_else(|p| p.into_inner());
                    continue 'wait;
                }
                covering.push(i);
                at = s.windows[i].start + s.windows[i].len;
            }
            if at < end {
                break;
            }
            let mut done = 0;
            for &i in &covering {
                let w = &s.windows[i];
                let bytes = w.bytes.as_ref().expect("loaded");
                let from = (offset + done as u64 - w.start) as usize;
                let n = (bytes.len() - from).min(buf.len() - done);
                buf[done..done + n].copy_from_slice(&bytes[from..from + n]);
                done += n;
            }
            // The last window used becomes the most recent; the one after it is fetched.
            let last_used = *covering.last().expect("a read of at least one byte");
            for &i in &covering {
                s.windows[i].used = true;
            }
            let w = s.windows.remove(last_used);
            let next = w.start + w.len;
            s.windows.push(w);
            let len = last.and_then(|l| l.1).unwrap_or(0);
            return Ahead::Served(self.plan(&mut s, pack, next, len));
        }
        // At or just past where the last read of this pack ended (a read a little behind
        // it, of a worker taking turns with another, finds its window on the grid).
        let sequential = last.is_some_and(|(e, _)| offset >= e && offset - e <= AHEAD_GAP);
        if sequential && self.window > buf.len() as u64 {
            Ahead::Fetch(self.window, true)
        } else {
            Ahead::Fetch(buf.len() as u64, false)
        }
    }

    /// Make room for a window of `len` bytes at `offset` and mark it as being fetched;
    /// false if it does not fit. Windows already read from (or abandoned) go, least
    /// recently used first; windows fetched ahead and not read yet stay, so that two
    /// readers never take each other's windows before they are read.
    fn reserve(&self, s: &mut AheadState, pack: &FileId, offset: u64, len: u64) -> bool {
        while s.held + len > self.max_bytes {
            let Some(i) = s.windows.iter().position(Window::evictable) else { return false };
            s.held -= s.windows.remove(i).len;
        }
        s.held += len;
        s.windows.push(Window { pack: *pack, start: offset, len, bytes: None, used: false, ready_at: None });
        true
    }

    /// Reserve the windows (offset, length) to fetch so that the [`AHEAD_DEPTH`] windows
    /// from `next` on (of a pack of `len` bytes) are fetched or on their way.
    fn plan(&self, s: &mut AheadState, pack: &FileId, mut next: u64, len: u64) -> Vec<(u64, u64)> {
        let mut fetch = Vec::new();
        for _ in 0..AHEAD_DEPTH {
            if next >= len {
                break;
            }
            match s.windows.iter().find(|w| w.pack == *pack && w.start == next) {
                Some(w) => next += w.len,
                None => {
                    let n = self.window.min(len - next);
                    if !self.reserve(s, pack, next, n) {
                        break;
                    }
                    fetch.push((next, n));
                    next += n;
                }
            }
        }
        fetch
    }

    /// [`ReadAhead::plan`] under the lock.
    fn plan_from(&self, pack: &FileId, next: u64, len: u64) -> Vec<(u64, u64)> {
        self.plan(&mut self.lock(), pack, next, len)
    }

    /// [`ReadAhead::reserve`] under the lock.
    fn try_reserve(&self, pack: &FileId, offset: u64, len: u64) -> bool {
        let mut s = self.lock();
        if s.windows.iter().any(|w| w.pack == *pack && w.start == offset) {
            return false;
        }
        self.reserve(&mut s, pack, offset, len)
    }

    /// The window reserved at `offset` of `pack` was fetched (`Some`) or failed.
    fn fill(&self, pack: &FileId, offset: u64, bytes: Option<Vec<u8>>) {
        let mut s = self.lock();
        if let Some(i) = s.windows.iter().position(|w| w.pack == *pack && w.start == offset && w.bytes.is_none()) {
            match bytes {
                Some(b) if b.len() as u64 == s.windows[i].len => {
                    s.windows[i].bytes = Some(b);
                    s.windows[i].ready_at = Some(std::time::Instant::now());
                }
                _ => s.held -= s.windows.remove(i).len,
            }
        }
        self.loaded.notify_all();
    }

    fn pack_len(&self, pack: &FileId) -> Option<u64> {
        self.lock().last.peek(pack).and_then(|l| l.1)
    }

    fn set_pack_len(&self, pack: &FileId, len: u64) {
        if let Some(l) = self.lock().last.get_mut(pack) {
            l.1 = Some(len);
        }
    }
}

/// The error for a failed request about `key` of the repository at `root`: not found,
/// or what the server said (after the retries), naming the object's URL.
fn request_error(root: &Path, key: &str, e: opendal::Error) -> Error {
    let (kind, said) = match e.kind() {
            ErrorKind::NotFound => (std::io::ErrorKind::NotFound, "not found".to_string()),
            ErrorKind::PermissionDenied => (
                std::io::ErrorKind::PermissionDenied,
                "access denied (403): wrong credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or no access to the bucket"
                    .to_string(),
            ),
            ErrorKind::ConfigInvalid => (std::io::ErrorKind::Other, format!("the bucket or endpoint is wrong: {e}")),
            ErrorKind::RangeNotSatisfied => (std::io::ErrorKind::UnexpectedEof, e.to_string()),
            _ => (std::io::ErrorKind::Other, e.to_string()),
        };
    Error::Io { path: root.join(key), err: std::io::Error::new(kind, said) }
}

impl S3 {
    /// Keys under `dir/`, in key order (ids ascending), with their metadata.
    fn walk(&self, dir: Dir, f: &mut dyn FnMut(FileId, Meta) -> Result<()>) -> Result<()> {
        let prefix = format!("{}/", dir.name());
        let opts = opendal::options::ListOptions { recursive: true, ..Default::default() };
        let lister = self.op.lister_options(&prefix, opts).map_err(|e| self.err(&prefix, e))?;
        count(0, 0);
        let mut listed = 0u64;
        for entry in lister {
            listed += 1;
            if listed.is_multiple_of(1000) {
                count(0, 0); // the next page
            }
            let entry = entry.map_err(|e| self.err(&prefix, e))?;
            let Some(id) = entry.name().parse::<FileId>().ok() else { continue };
            // Only `dir/<id>` (packs: `data/<xx>/<id>`, the right xx): anything else
            // is not one of the repository's files.
            if entry.path() != dir.key(&id) {
                continue;
            }
            f(id, meta_of(entry.metadata()))?;
        }
        Ok(())
    }
}

/// An object's length and time, and a stamp from both. A listing and a HEAD must stamp
/// an object alike (or the index cache would check every index file again at each
/// command), and servers differ in what they give where: s3s-fs lists no ETag, and a
/// listing's times carry milliseconds where a HEAD's are whole seconds. So the stamp is
/// the length and the time in whole seconds (cairn never rewrites an object: a
/// different stamp means damage or a replaced file, as for a local file's).
fn meta_of(m: &opendal::Metadata) -> Meta {
    let modified: Option<std::time::SystemTime> = m.last_modified().map(Into::into);
    let secs = modified.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
    Meta { len: m.content_length(), stamp: Stamp::of_values(&[m.content_length(), secs]), modified }
}

impl Backend for S3 {
    fn is_remote(&self) -> bool {
        true
    }

    fn root(&self) -> &Path {
        &self.root
    }

    /// Nothing to create (keys need no directories); the bucket must exist: a missing
    /// one, wrong credentials or a wrong endpoint fail here, before anything is written.
    fn create_layout(&self) -> Result<()> {
        let opts = opendal::options::ListOptions { limit: Some(1), ..Default::default() };
        count(0, 0);
        self.op.list_options("", opts).map(drop).map_err(|e| self.err("", e))
    }

    fn has_config(&self) -> Result<bool> {
        count(0, 0);
        self.op.exists("config").map_err(|e| self.err("config", e))
    }

    fn read_config(&self, max_len: u64) -> Result<Option<Vec<u8>>> {
        match self.read_key("config", "config", &"config", max_len) {
            Err(Error::NotFound { .. }) => Ok(None),
            r => r.map(Some),
        }
    }

    fn write_config(&self, bytes: &[u8]) -> Result<()> {
        count(0, bytes.len() as u64);
        self.op.write("config", bytes.to_vec()).map(drop).map_err(|e| self.err("config", e))
    }

    fn read(&self, dir: Dir, id: &FileId, max_len: u64) -> Result<Vec<u8>> {
        self.read_key(&dir.key(id), dir.what(), id, max_len)
    }

    /// A sequential reader of a pack (restore walking files in the order they were
    /// stored, the mount's prefetcher) gets its bytes from windows read ahead
    /// ([`ReadAhead`]); any other read is one ranged GET.
    fn read_at(&self, dir: Dir, id: &FileId, offset: u64, buf: &mut [u8]) -> Result<()> {
        if dir != Dir::Data {
            return self.get_range(dir, id, offset, buf);
        }
        let want = match self.ahead.serve(id, offset, buf) {
            Ahead::Served(fetch) => {
                for (at, len) in fetch {
                    self.fetch_ahead(id, at, len);
                }
                return Ok(());
            }
            Ahead::Fetch(_, false) => return self.get_range(dir, id, offset, buf),
            Ahead::Fetch(want, true) => want,
        };
        // Not past the end of the pack: its length is asked once (and remembered).
        let len = match self.ahead.pack_len(id) {
            Some(len) => len,
            None => {
                let len = self.stat(dir, id)?.ok_or(Error::NotFound { what: "pack", id: id.to_string() })?.len;
                self.ahead.set_pack_len(id, len);
                len
            }
        };
        // Windows lie on a grid of their size, so that readers meeting in one pack (two
        // workers restoring files whose chunks the backup interleaved) share them
        // instead of fetching overlapping ones.
        let start = offset - offset % want;
        let want = want.min(len.saturating_sub(start));
        let end = offset + buf.len() as u64;
        if start + want < end || !self.ahead.try_reserve(id, start, want) {
            return self.get_range(dir, id, offset, buf);
        }
        let mut window = vec![0u8; want as usize];
        let r = self.get_range(dir, id, start, &mut window);
        if r.is_ok() {
            let at = (offset - start) as usize;
            buf.copy_from_slice(&window[at..at + buf.len()]);
        }
        self.ahead.fill(id, start, r.is_ok().then_some(window));
        // The windows after it: fetched ahead, as when a read is served from a window.
        if r.is_ok() {
            for (at, n) in self.ahead.plan_from(id, start + want, len) {
                self.fetch_ahead(id, at, n);
            }
        }
        r
    }

    fn read_planned(&self, dir: Dir, id: &FileId, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.get_range(dir, id, offset, buf)
    }

    fn connections(&self) -> usize {
        self.uploads.max
    }

    fn reader(&self, dir: Dir, id: &FileId, offset: u64) -> Result<Box<dyn Read + Send>> {
        let key = dir.key(id);
        count(0, 0);
        let len = self.op.stat(&key).map_err(|e| self.err(&key, e))?.content_length();
        count(0, 0);
        let r = self.op.reader(&key).map_err(|e| self.err(&key, e))?;
        let r = r.into_std_read(offset.min(len)..len).map_err(|e| self.err(&key, e))?;
        Ok(Box::new(Counted(r)))
    }

    fn stat(&self, dir: Dir, id: &FileId) -> Result<Option<Meta>> {
        let key = dir.key(id);
        count(0, 0);
        match self.op.stat(&key) {
            Ok(m) => Ok(Some(meta_of(&m))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(&key, e)),
        }
    }

    fn temp_file(&self) -> Result<TempFile> {
        std::fs::create_dir_all(&self.spool).at(&self.spool)?;
        let (f, path) = tempfile::Builder::new()
            .prefix("cairn-upload-")
            .tempfile_in(&self.spool)
            .at(&self.spool)?
            .keep()
            .map_err(|e| Error::Io { path: self.spool.clone(), err: e.error })?;
        Ok(TempFile::new(path, f, false))
    }

    /// One PUT from memory (the object is at most a pack: the packer's budget covers it),
    /// or a multipart upload in [`SINGLE_PUT`]-sized parts for larger files.
    fn store(&self, dir: Dir, id: &FileId, tmp: TempFile) -> Result<()> {
        let path = tmp.finish()?;
        S3::upload(&self.op, &self.root, &dir.key(id), &path)
    }

    /// The upload runs on a thread of its own once there is room for it (see
    /// [`Uploads`]); the caller goes on filling the next pack meanwhile.
    fn store_later(&self, dir: Dir, id: &FileId, tmp: TempFile, _keep: bool) -> Result<()> {
        let path = tmp.finish()?;
        let len = std::fs::metadata(&path).at(&path)?.len();
        self.uploads.start(len);
        let (op, root, key, uploads) = (self.op.clone(), self.root.clone(), dir.key(id), self.uploads.clone());
        let file = path.clone();
        let spawned = std::thread::Builder::new().name("cairn-upload".into()).spawn(move || {
            let r = S3::upload(&op, &root, &key, &file);
            uploads.end(len, r);
        });
        if let Err(e) = spawned {
            let _ = std::fs::remove_file(&path);
            self.uploads.end(len, Ok(()));
            return Err(Error::Io { path: self.root.join(dir.key(id)), err: e });
        }
        Ok(())
    }

    fn wait_stored(&self) -> Result<()> {
        let mut s = self.uploads.lock();
        while s.running > 0 {
            s = self.uploads.done.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.failed.take().map_or(Ok(()), Err)
    }

    fn list(&self, dir: Dir) -> Result<Vec<FileId>> {
        let mut out = Vec::new();
        self.walk(dir, &mut |id, _| {
            out.push(id);
            Ok(())
        })?;
        Ok(out)
    }

    fn for_each(&self, dir: Dir, f: &mut dyn FnMut(FileId, Meta) -> Result<()>) -> Result<()> {
        self.walk(dir, f)
    }

    fn remove(&self, dir: Dir, id: &FileId) -> Result<()> {
        let key = dir.key(id);
        count(0, 0);
        self.op.delete(&key).map_err(|e| self.err(&key, e))
    }

    /// Nothing is written in place: an interrupted upload leaves no object.
    fn temp_usage(&self) -> Result<(u64, u64)> {
        Ok((0, 0))
    }

    fn remove_stale_temps(&self) -> Result<(u64, u64)> {
        Ok((0, 0))
    }
}

impl S3 {
    /// Fetch the window reserved at `offset` of pack `id` on a thread of its own; a
    /// failure only drops the reservation (the reader then asks itself, and sees it).
    fn fetch_ahead(&self, id: &FileId, offset: u64, len: u64) {
        let (op, key, ahead, pack) = (self.op.clone(), Dir::Data.key(id), self.ahead.clone(), *id);
        let spawned = std::thread::Builder::new().name("cairn-read-ahead".into()).spawn(move || {
            count(len, 0);
            let opts = opendal::options::ReadOptions { range: (offset..offset + len).into(), ..Default::default() };
            let got = op.read_options(&key, opts).ok().filter(|b| b.len() as u64 == len).map(|b| b.to_vec());
            ahead.fill(&pack, offset, got);
        });
        if spawned.is_err() {
            self.ahead.fill(id, offset, None);
        }
    }

    /// Read `buf.len()` bytes at `offset` of file `id` of `dir`: one ranged GET.
    fn get_range(&self, dir: Dir, id: &FileId, offset: u64, buf: &mut [u8]) -> Result<()> {
        let key = dir.key(id);
        let opts =
            opendal::options::ReadOptions { range: (offset..offset + buf.len() as u64).into(), ..Default::default() };
        count(buf.len() as u64, 0);
        let got = match self.op.read_options(&key, opts) {
            Ok(got) => got,
            // A range past the end fails as "too little data": say so as a local read
            // would (the caller names the pack truncated). One more request, on errors only.
            Err(e) => match self.stat(dir, id) {
                Ok(Some(m)) if offset + buf.len() as u64 > m.len => opendal::Buffer::new(),
                _ => return Err(self.err(&key, e)),
            },
        };
        if got.len() != buf.len() {
            let e =
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("{} of {} bytes", got.len(), buf.len()));
            return Err(e).at(self.root.join(&key));
        }
        let mut at = 0;
        for chunk in got {
            buf[at..at + chunk.len()].copy_from_slice(&chunk);
            at += chunk.len();
        }
        Ok(())
    }

    /// Read object `key` whole, refusing more than `max_len` bytes: one streamed GET,
    /// dropped once it passes `max_len`, so a planted huge object costs no more.
    fn read_key(&self, key: &str, what: &'static str, id: &dyn std::fmt::Display, max_len: u64) -> Result<Vec<u8>> {
        let fail = |e: opendal::Error| match e.kind() {
            ErrorKind::NotFound => Error::NotFound { what, id: id.to_string() },
            _ => self.err(key, e),
        };
        count(0, 0);
        let chunks = self.op.reader(key).map_err(fail)?.into_bytes_iterator(..).map_err(fail)?;
        let mut got = Vec::new();
        for chunk in chunks {
            // The GET is sent at the first chunk: its errors come here, wrapped.
            let chunk = chunk.map_err(|e| match e.into_inner().map(|i| i.downcast::<opendal::Error>()) {
                Some(Ok(e)) => fail(*e),
                Some(Err(other)) => Error::Io { path: self.root.join(key), err: std::io::Error::other(other) },
                None => Error::Io { path: self.root.join(key), err: std::io::ErrorKind::Other.into() },
            })?;
            if (got.len() + chunk.len()) as u64 > max_len {
                return Err(Error::corrupt(what, id, format!("more than the {max_len} bytes the format allows")));
            }
            RECEIVED.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            got.extend_from_slice(&chunk);
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: u8) -> FileId {
        FileId([n; 32])
    }

    /// The bytes of a fake pack at `offset..offset + len`.
    fn bytes(offset: u64, len: u64) -> Vec<u8> {
        (offset..offset + len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn read_ahead_serves_sequential_readers_from_windows() {
        let ahead = ReadAhead::new(8 << 20); // windows of 1 MiB
        assert_eq!(ahead.window, 1 << 20);
        let p = pack(1);
        let mut buf = vec![0u8; 1000];
        // A first read, and a read more than a window away: exact.
        assert!(matches!(ahead.serve(&p, 3 << 20, &mut buf), Ahead::Fetch(1000, false)));
        assert!(matches!(ahead.serve(&p, 5000, &mut buf), Ahead::Fetch(1000, false)));
        // At or just past where the last ended: a window.
        assert!(matches!(ahead.serve(&p, 6000, &mut buf), Ahead::Fetch(w, true) if w == 1 << 20));
        assert!(matches!(ahead.serve(&p, 901_000, &mut buf), Ahead::Fetch(1000, false)));
        assert!(matches!(ahead.serve(&p, 902_000, &mut buf), Ahead::Fetch(w, true) if w == 1 << 20));
        ahead.set_pack_len(&p, 10 << 20);
        assert!(ahead.try_reserve(&p, 901_000, 1 << 20));
        assert!(!ahead.try_reserve(&p, 901_000, 1 << 20), "reserved once");
        ahead.fill(&p, 901_000, Some(bytes(901_000, 1 << 20)));
        // Served from the window, and the next AHEAD_DEPTH windows are asked for.
        let Ahead::Served(fetch) = ahead.serve(&p, 902_000, &mut buf) else { panic!("not served") };
        assert_eq!(buf, bytes(902_000, 1000));
        let w = 1u64 << 20;
        let expected: Vec<_> = (1..=AHEAD_DEPTH as u64).map(|k| (901_000 + k * w, w)).collect();
        assert_eq!(fetch, expected);
        // A read straddling two windows waits for the second (filled here first) and
        // takes the bytes of both.
        for (o, n) in &fetch {
            ahead.fill(&p, *o, Some(bytes(*o, *n)));
        }
        let mut big = vec![0u8; 5000];
        let at = 901_000 + w - 2000;
        assert!(matches!(ahead.serve(&p, at, &mut big), Ahead::Served(_)));
        assert_eq!(big, bytes(at, 5000));
    }

    #[test]
    fn read_ahead_stays_within_its_bytes_and_keeps_unread_windows() {
        let ahead = ReadAhead::new(8 << 20);
        let w = ahead.window;
        // Eight windows of two packs, none read yet: a ninth does not fit.
        for k in 0..8u64 {
            let p = pack(1 + (k % 2) as u8);
            assert!(ahead.try_reserve(&p, k * w, w));
            ahead.fill(&p, k * w, Some(bytes(k * w, w)));
        }
        assert!(!ahead.try_reserve(&pack(3), 0, w), "unread windows are kept");
        assert_eq!(ahead.lock().held, 8 * w);
        // Once one is read from, its room may go to another.
        let mut buf = vec![0u8; 10];
        assert!(matches!(ahead.serve(&pack(1), 0, &mut buf), Ahead::Served(_)));
        assert!(ahead.try_reserve(&pack(3), 0, w));
        assert!(ahead.lock().held <= 8 * w);
        // A failed fetch gives its room back.
        ahead.fill(&pack(3), 0, None);
        assert_eq!(ahead.lock().held, 7 * w);
    }

    #[test]
    fn urls_parse_like_restics() {
        let u = S3Url::parse("s3:http://127.0.0.1:9000/bucket/some/prefix/").unwrap().unwrap();
        assert_eq!(
            u,
            S3Url { endpoint: "http://127.0.0.1:9000".into(), bucket: "bucket".into(), prefix: "some/prefix".into() }
        );
        let u = S3Url::parse("s3:https://s3.example.com/b").unwrap().unwrap();
        assert_eq!((u.endpoint.as_str(), u.bucket.as_str(), u.prefix.as_str()), ("https://s3.example.com", "b", ""));
        assert!(S3Url::parse("/local/path").is_none());
        for bad in ["s3:ftp://h/b", "s3:http://h", "s3:http://h/", "s3:h/b", "s3:http:///b"] {
            assert!(matches!(S3Url::parse(bad), Some(Err(Error::InvalidInput(_)))), "{bad}");
        }
    }
}
