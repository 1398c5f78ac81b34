//! The crate's error type: one enum whose variants are the cases a caller acts on.
//!
//! Messages are lower-case, name the object and its id, and are shown to users verbatim.

use std::path::PathBuf;

/// Every error the library returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error on a named path. The OS error is part of the message and
    /// deliberately not a `source()`: a chain printer (`{:#}`) would print it twice.
    #[error("{path}: {err}")]
    Io {
        /// The file or directory the operation was about.
        path: PathBuf,
        /// What the OS said.
        err: std::io::Error,
    },
    /// Repository data that decodes but violates the format (bad length, bad count, bad name...).
    #[error("{what} {id}: corrupt: {detail}")]
    Corrupt {
        /// The kind of object ("pack", "index", "tree", ...).
        what: &'static str,
        /// Its id or file name.
        id: String,
        /// What was wrong.
        detail: String,
    },
    /// Authenticated decryption failed: the object was modified, truncated or damaged.
    #[error("{what} {id}: authentication failed (data damaged or tampered with)")]
    Tampered {
        /// The kind of object.
        what: &'static str,
        /// Its id or file name.
        id: String,
    },
    /// No key file could be opened with the given password.
    #[error("wrong password or no key file matches it{}", notes.iter().map(|n| format!("; {n}")).collect::<String>())]
    WrongPassword {
        /// Key files that were damaged or not tried (one of them may hold the password).
        notes: Vec<String>,
    },
    /// A file carries a format version this build does not know.
    #[error("{what}: unsupported format version {found} (this cairn supports {supported})")]
    UnsupportedVersion {
        /// The kind of object or file.
        what: String,
        /// The version found.
        found: u32,
        /// The version(s) supported.
        supported: String,
    },
    /// A named object does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of object.
        what: &'static str,
        /// Its id, name or path.
        id: String,
    },
    /// The path is not a cairn repository.
    #[error("{0}: not a cairn repository (no config file; run `cairn init` to create one)")]
    NotARepository(PathBuf),
    /// The user asked for something invalid.
    #[error("{0}")]
    InvalidInput(String),
    /// Another client holds a conflicting lock, or this command lost its own.
    #[error("{0}")]
    Locked(String),
    /// The operation was interrupted by a signal.
    #[error("interrupted")]
    Interrupted,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Build a [`Error::Corrupt`].
    pub fn corrupt(what: &'static str, id: impl ToString, detail: impl ToString) -> Self {
        Error::Corrupt { what, id: id.to_string(), detail: detail.to_string() }
    }
}

/// Attach a path to an `io::Result`.
pub trait IoContext<T> {
    /// Turn an `io::Error` into [`Error::Io`] naming `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|err| Error::Io { path: path.into(), err })
    }
}
