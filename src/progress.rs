//! How far a long operation has come: a meter the operations' threads bump (a few
//! relaxed atomic adds) and the command line reads about ten times a second to draw its
//! progress line. Nothing here prints; an operation that nobody watches pays only the
//! adds. The meter belongs to the opened repository, so the index rebuild inside
//! `Repository::open`, restore's reader threads, check and prune all report on it
//! without a sink passed down to each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What a phase counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes (shown as sizes, with a rate).
    Bytes,
    /// Things: snapshots, packs, index files.
    Items,
}

/// A reading of the meter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    /// What is being done ("restoring", "reading index files"); empty when nothing is.
    pub phase: String,
    /// What `done` and `total` count.
    pub unit: Unit,
    /// Done so far in this phase.
    pub done: u64,
    /// The whole of this phase, when it is known (0: unknown).
    pub total: u64,
    /// Files (or other things) finished, besides `done`.
    pub items: u64,
    /// Changes with every new phase, so a display knows to restyle.
    pub generation: u64,
}

/// The meter: a command line makes one ([`Default`]), gives it to the repository it opens
/// (`repo::OpenOptions::meter`), and reads it while the command runs.
#[derive(Debug, Default)]
pub struct Meter {
    phase: Mutex<(String, Option<Unit>)>,
    done: AtomicU64,
    total: AtomicU64,
    items: AtomicU64,
    generation: AtomicU64,
    /// Phases started since the display last looked, with when (at most [`LOG`]).
    log: Mutex<Vec<(String, std::time::Instant)>>,
    /// Some display shows this meter.
    watched: std::sync::atomic::AtomicBool,
}

/// Phase starts kept for a display that has not looked yet.
const LOG: usize = 64;

impl Meter {
    /// Start a phase: counters back to zero, `total` of `unit` (0 if not known).
    pub fn start(&self, phase: &str, unit: Unit, total: u64) {
        let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        *p = (phase.to_string(), Some(unit));
        self.done.store(0, Ordering::Relaxed);
        self.items.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == LOG {
            log.remove(0);
        }
        log.push((phase.to_string(), std::time::Instant::now()));
    }

    /// The phase is over: the display goes blank until the next one.
    pub fn finish(&self) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = (String::new(), None);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` more done.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// One more thing (a file) finished.
    pub fn item(&self) {
        self.items.fetch_add(1, Ordering::Relaxed);
    }

    /// Where the meter stands.
    pub fn read(&self) -> Reading {
        let (phase, unit) = self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Reading {
            phase,
            unit: unit.unwrap_or(Unit::Items),
            done: self.done.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            items: self.items.load(Ordering::Relaxed),
            generation: self.generation.load(Ordering::Relaxed),
        }
    }

    /// Claim the meter for a display: `false` if another has it.
    pub fn watch(&self) -> bool {
        !self.watched.swap(true, Ordering::Relaxed)
    }

    /// The display is gone.
    pub fn unwatch(&self) {
        self.watched.store(false, Ordering::Relaxed);
    }

    /// The phases started since the last call, with when each started.
    pub fn started(&self) -> Vec<(String, std::time::Instant)> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
