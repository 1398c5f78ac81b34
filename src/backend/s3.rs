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

/// Transient failures retried so far by this process.
pub fn retries() -> u64 {
    RETRIED.load(Ordering::Relaxed)
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
}

impl std::fmt::Debug for S3Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Env")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<set>"))
            .field("session_token", &self.session_token.as_ref().map(|_| "<set>"))
            .field("region", &self.region)
            .field("profile", &self.profile)
            .field("virtual_host", &self.virtual_host)
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
        Ok(S3 { op, root: PathBuf::from(shown), spool })
    }

    /// The error for a failed request about `key`: not found, or what the server said
    /// (after the retries), naming the object's URL.
    fn err(&self, key: &str, e: opendal::Error) -> Error {
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
        Error::Io { path: self.root.join(key), err: std::io::Error::new(kind, said) }
    }

    /// Keys under `dir/`, in key order (ids ascending), with their metadata.
    fn walk(&self, dir: Dir, f: &mut dyn FnMut(FileId, Meta) -> Result<()>) -> Result<()> {
        let prefix = format!("{}/", dir.name());
        let opts = opendal::options::ListOptions { recursive: true, ..Default::default() };
        let lister = self.op.lister_options(&prefix, opts).map_err(|e| self.err(&prefix, e))?;
        for entry in lister {
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
    fn root(&self) -> &Path {
        &self.root
    }

    /// Nothing to create (keys need no directories); the bucket must exist: a missing
    /// one, wrong credentials or a wrong endpoint fail here, before anything is written.
    fn create_layout(&self) -> Result<()> {
        let opts = opendal::options::ListOptions { limit: Some(1), ..Default::default() };
        self.op.list_options("", opts).map(drop).map_err(|e| self.err("", e))
    }

    fn has_config(&self) -> Result<bool> {
        self.op.exists("config").map_err(|e| self.err("config", e))
    }

    fn read_config(&self, max_len: u64) -> Result<Option<Vec<u8>>> {
        match self.read_key("config", "config", &"config", max_len) {
            Err(Error::NotFound { .. }) => Ok(None),
            r => r.map(Some),
        }
    }

    fn write_config(&self, bytes: &[u8]) -> Result<()> {
        self.op.write("config", bytes.to_vec()).map(drop).map_err(|e| self.err("config", e))
    }

    fn read(&self, dir: Dir, id: &FileId, max_len: u64) -> Result<Vec<u8>> {
        self.read_key(&dir.key(id), dir.what(), id, max_len)
    }

    fn read_at(&self, dir: Dir, id: &FileId, offset: u64, buf: &mut [u8]) -> Result<()> {
        let key = dir.key(id);
        let opts =
            opendal::options::ReadOptions { range: (offset..offset + buf.len() as u64).into(), ..Default::default() };
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

    fn reader(&self, dir: Dir, id: &FileId, offset: u64) -> Result<Box<dyn Read + Send>> {
        let key = dir.key(id);
        let len = self.op.stat(&key).map_err(|e| self.err(&key, e))?.content_length();
        let r = self.op.reader(&key).map_err(|e| self.err(&key, e))?;
        let r = r.into_std_read(offset.min(len)..len).map_err(|e| self.err(&key, e))?;
        Ok(Box::new(r))
    }

    fn stat(&self, dir: Dir, id: &FileId) -> Result<Option<Meta>> {
        let key = dir.key(id);
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
        Ok(TempFile::new(path, f))
    }

    /// One PUT from memory (the object is at most a pack: the packer's budget covers it),
    /// or a multipart upload in [`SINGLE_PUT`]-sized parts for larger files.
    fn store(&self, dir: Dir, id: &FileId, tmp: TempFile) -> Result<()> {
        let key = dir.key(id);
        let path = tmp.finish()?;
        let r = (|| -> Result<()> {
            let mut f = std::fs::File::open(&path).at(&path)?;
            let len = f.metadata().at(&path)?.len();
            if len <= SINGLE_PUT {
                let mut bytes = Vec::with_capacity(len as usize);
                f.read_to_end(&mut bytes).at(&path)?;
                self.op.write(&key, bytes).map(drop).map_err(|e| self.err(&key, e))
            } else {
                let opts = opendal::options::WriteOptions { chunk: Some(SINGLE_PUT as usize), ..Default::default() };
                let mut w = self.op.writer_options(&key, opts).map_err(|e| self.err(&key, e))?;
                let mut buf = vec![0u8; SINGLE_PUT as usize];
                loop {
                    let n = f.read(&mut buf).at(&path)?;
                    if n == 0 {
                        break;
                    }
                    w.write(buf[..n].to_vec()).map_err(|e| self.err(&key, e))?;
                }
                w.close().map(drop).map_err(|e| self.err(&key, e))
            }
        })();
        let _ = std::fs::remove_file(&path);
        r
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
    /// Read object `key` whole, refusing more than `max_len` bytes: one streamed GET,
    /// dropped once it passes `max_len`, so a planted huge object costs no more.
    fn read_key(&self, key: &str, what: &'static str, id: &dyn std::fmt::Display, max_len: u64) -> Result<Vec<u8>> {
        let fail = |e: opendal::Error| match e.kind() {
            ErrorKind::NotFound => Error::NotFound { what, id: id.to_string() },
            _ => self.err(key, e),
        };
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
            got.extend_from_slice(&chunk);
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
