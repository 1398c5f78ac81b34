//! cairn: deduplicating, encrypted backups whose memory stays inside a budget.
//!
//! Modules are layered; the table is in docs/design.md ("Layers") and
//! `scripts/check-layers.sh` enforces it.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod budget;
pub mod chunker;
pub mod cli;
pub mod compress;
pub mod crypto;
pub mod error;
pub mod extsort;
pub mod format;
pub mod id;
pub mod index;
pub mod mount;
pub mod ops;
pub mod pattern;
pub mod progress;
pub mod repo;
pub mod retention;
pub mod sys;
pub mod tree;
pub mod vfs;
pub mod wipe;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

pub use error::{Error, Result};
