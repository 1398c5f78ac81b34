//! The commands' operations over a repository (L4): each takes a [`crate::repo::Repository`]
//! and options, reports through a sink or returns a result, and never prints.

pub mod backup;
pub mod check;
pub mod diff;
pub mod dump;
pub mod find;
pub mod forget;
pub mod ls;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod snapshots;
pub mod stats;
