//! cairn: deduplicating, encrypted backups whose memory stays inside a budget.
//!
//! Layers, each using only those below it (see docs/design.md):
//! - L0 [`error`], [`id`]
//! - L1 [`format`], [`crypto`], [`compress`], [`chunker`]: pure, bytes in and out
//! - L2 [`backend`], [`index`], [`sys`]
//! - L3 [`repo`] (with its pack writer), [`tree`] (building and reading tree nodes)
//! - L4 [`backup`], [`restore`], [`check`], [`ls`], [`repair`]
//! - L6 [`cli`]: the only module that prints, reads the environment or picks exit codes

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod backup;
pub mod budget;
pub mod check;
pub mod chunker;
pub mod cli;
pub mod compress;
pub mod crypto;
pub mod error;
pub mod extsort;
pub mod format;
pub mod id;
pub mod index;
pub mod ls;
pub mod mount;
pub mod ops;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod sys;
pub mod tree;
pub mod vfs;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

pub use error::{Error, Result};
