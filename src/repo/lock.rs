//! Repository locks (docs/design.md, "Prune"; docs/format.md, "Locks"): a backup must
//! never run beside a prune that could delete what it is about to reference.
//!
//! A lock is a sealed file in `locks/`. Shared locks (backup, restore, check) coexist;
//! an exclusive one (prune, `repair index`) excludes every other lock. To take one, a
//! client writes its lock file first and lists `locks/` second, so of two contenders at
//! least one sees the other; on a conflict it removes its own and fails or retries.
//! While held, a thread rewrites the lock every [`LockOptions::refresh`] (a new file,
//! then the old one goes), and a lock not rewritten for [`LockOptions::stale`] is
//! stale: a crashed client never blocks the repository for longer. A holder whose
//! refreshes failed for longer than half the stale age, or whose lock file someone
//! removed, has lost it: [`LockGuard::check`] says so, and a backup checks before it
//! writes its snapshot.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::backend::Dir;
use crate::error::{Error, Result};
use crate::format::lock::LockInfo;
use crate::format::FileKind;
use crate::id::FileId;

use super::Repository;

/// Timing of locks. Tests shorten them; users only choose how long to wait.
#[derive(Clone, Copy, Debug)]
pub struct LockOptions {
    /// How long to keep retrying while another client's lock conflicts (0: fail at once).
    pub retry: Duration,
    /// A lock older than this is stale (its holder is presumed dead).
    pub stale: Duration,
    /// How often a holder rewrites its lock.
    pub refresh: Duration,
    /// Take no shared lock (`--no-lock`, for reading a repository one cannot write to).
    /// Exclusive locks are always taken.
    pub skip_shared: bool,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            retry: Duration::ZERO,
            stale: Duration::from_secs(30 * 60),
            refresh: Duration::from_secs(5 * 60),
            skip_shared: false,
        }
    }
}

/// Shared (many at once) or exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// Backup, restore, check: they only add to the repository or read it.
    Shared,
    /// Prune, `repair index`: they delete.
    Exclusive,
}

/// A held lock, valid inside [`Repository::with_lock`]'s closure.
pub struct LockGuard {
    state: Mutex<State>,
    wake: Condvar,
    stale: Duration,
}

struct State {
    /// The lock file now in `locks/`.
    id: FileId,
    /// When it was last written.
    written: Instant,
    /// Set when the lock is known lost (its file was removed by someone else).
    lost: Option<String>,
    stop: bool,
}

impl LockGuard {
    /// Fails when the lock may no longer protect us: its file was removed by another
    /// client, or it was last written more than half the stale age ago (so another
    /// client may soon, or already, consider it stale).
    pub fn check(&self) -> Result<()> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &s.lost {
            return Err(Error::Locked(format!("this command's lock was lost: {why}")));
        }
        let age = s.written.elapsed();
        if age > self.stale / 2 {
            return Err(Error::Locked(format!(
                "this command's lock could not be refreshed for {} s; another client may consider it stale",
                age.as_secs()
            )));
        }
        Ok(())
    }
}

impl Repository {
    /// Run `f` holding a lock of `kind` taken for `command` (named in other clients'
    /// messages). The lock is refreshed while `f` runs and removed after it returns.
    pub fn with_lock<T>(
        &self,
        kind: LockKind,
        command: &str,
        opts: &LockOptions,
        f: impl FnOnce(&LockGuard) -> Result<T>,
    ) -> Result<T> {
        let unlocked = || LockGuard {
            state: Mutex::new(State { id: FileId::default(), written: Instant::now(), lost: None, stop: true }),
            wake: Condvar::new(),
            stale: Duration::MAX,
        };
        if kind == LockKind::Shared && opts.skip_shared {
            return f(&unlocked());
        }
        let id = match self.acquire(kind, command, opts) {
            // Nobody can prune a repository on a read-only filesystem either.
            Err(Error::Io { err, .. }) if kind == LockKind::Shared && err.raw_os_error() == Some(libc::EROFS) => {
                return f(&unlocked());
            }
            r => r?,
        };
        let guard = LockGuard {
            state: Mutex::new(State { id, written: Instant::now(), lost: None, stop: false }),
            wake: Condvar::new(),
            stale: opts.stale,
        };
        let result = std::thread::scope(|scope| {
            let refresher = scope.spawn(|| self.refresh_loop(&guard, kind, command, opts));
            let r = f(&guard);
            guard.state.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
            guard.wake.notify_all();
            let _ = refresher.join();
            r
        });
        let id = guard.state.lock().unwrap_or_else(|p| p.into_inner()).id;
        // A lock left behind is only a delay for others (it goes stale), never damage.
        let _ = self.backend.remove(Dir::Locks, &id);
        result
    }

    /// Every lock file with what it says (`Err` for one that cannot be read).
    pub fn locks(&self) -> Result<Vec<(FileId, Result<LockInfo>)>> {
        let mut out = vec![];
        self.for_each_lock(None, &mut |id, info| {
            out.push((id, info));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Visit the lock files one at a time (a planted crowd of large ones costs time,
    /// not memory) until `f` returns `false`; `ours` is skipped unread (one request less
    /// when taking a lock). Files removed since the listing are released locks and
    /// skipped.
    fn for_each_lock(
        &self,
        ours: Option<&FileId>,
        f: &mut dyn FnMut(FileId, Result<LockInfo>) -> Result<bool>,
    ) -> Result<()> {
        for id in self.backend.list(Dir::Locks)? {
            if Some(&id) == ours {
                continue;
            }
            let info = self.read_sealed_file(FileKind::Lock, Dir::Locks, &id).and_then(|p| LockInfo::decode(&p, &id));
            if matches!(info, Err(Error::NotFound { .. })) {
                continue;
            }
            if !f(id, info)? {
                break;
            }
        }
        Ok(())
    }

    /// Whether a lock is stale: older than `stale`, or taken on this machine by a
    /// process that no longer exists.
    pub fn lock_is_stale(info: &LockInfo, stale: Duration) -> bool {
        let age_ns = crate::repo::now_ns().saturating_sub(info.time_ns);
        if age_ns > stale.as_nanos().min(i64::MAX as u128) as i64 {
            return true;
        }
        info.machine == machine() && !crate::sys::process_exists(info.pid)
    }

    /// Remove stale locks (all locks with `all`); returns how many were removed.
    pub fn unlock(&self, all: bool, stale: Duration) -> Result<usize> {
        let mut n = 0;
        self.for_each_lock(None, &mut |id, info| {
            let remove = all
                || match &info {
                    Ok(info) => Repository::lock_is_stale(info, stale),
                    // A lock file nobody can read protects nobody once it is old.
                    Err(_) => self.lock_file_age(&id).is_some_and(|age| age > stale),
                };
            if remove {
                self.backend.remove(Dir::Locks, &id)?;
                n += 1;
            }
            Ok(true)
        })?;
        Ok(n)
    }

    fn lock_file_age(&self, id: &FileId) -> Option<Duration> {
        self.backend.stat(Dir::Locks, id).ok()??.modified?.elapsed().ok()
    }

    fn write_lock(&self, kind: LockKind, command: &str) -> Result<FileId> {
        let info = LockInfo {
            time_ns: crate::repo::now_ns(),
            exclusive: kind == LockKind::Exclusive,
            pid: std::process::id(),
            machine: machine(),
            host: crate::sys::hostname(),
            user: crate::sys::username(),
            command: command.to_string(),
        };
        self.write_sealed_file(FileKind::Lock, Dir::Locks, &info.encode())
    }

    /// Take the lock: write ours, then look for conflicting ones; retry until
    /// `opts.retry` has passed.
    fn acquire(&self, kind: LockKind, command: &str, opts: &LockOptions) -> Result<FileId> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let ours = self.write_lock(kind, command)?;
            let conflict = self.conflict(&ours, kind, opts.stale);
            let conflict = match conflict {
                Ok(None) => return Ok(ours),
                Ok(Some(c)) => c,
                Err(e) => {
                    let _ = self.backend.remove(Dir::Locks, &ours);
                    return Err(e);
                }
            };
            self.backend.remove(Dir::Locks, &ours)?;
            if start.elapsed() + pause > opts.retry {
                return Err(Error::Locked(format!(
                    "the repository is locked {conflict}{}",
                    if opts.retry.is_zero() { " (--retry-lock DURATION waits for it)" } else { "" }
                )));
            }
            // Jitter, so that two clients retrying together do not keep colliding.
            let jitter = Duration::from_millis(crate::crypto::random_u64() % (pause.as_millis() as u64 + 1));
            std::thread::sleep(pause + jitter);
            pause = (pause * 2).min(Duration::from_secs(10));
        }
    }

    /// The first lock other than `ours` that conflicts with a lock of `kind`, described.
    fn conflict(&self, ours: &FileId, kind: LockKind, stale: Duration) -> Result<Option<String>> {
        let mut found = None;
        self.for_each_lock(Some(ours), &mut |id, info| {
            found = match info {
                Ok(info)
                    if (kind == LockKind::Exclusive || info.exclusive) && !Repository::lock_is_stale(&info, stale) =>
                {
                    let what = if info.exclusive { "exclusively by" } else { "by" };
                    Some(format!(
                        "{what} {} on {} (pid {}, user {}), written {} s ago (lock {})",
                        info.command,
                        info.host,
                        info.pid,
                        info.user,
                        crate::repo::now_ns().saturating_sub(info.time_ns) / 1_000_000_000,
                        id.short()
                    ))
                }
                Ok(_) => None,
                // A damaged or foreign lock file: it may be a real lock. Honoured until it
                // is as old as a stale lock; `cairn unlock` removes it then.
                Err(Error::Tampered { .. } | Error::Corrupt { .. } | Error::UnsupportedVersion { .. })
                    if self.lock_file_age(&id).is_some_and(|age| age > stale) =>
                {
                    None
                }
                Err(e) => Some(format!("by an unreadable lock ({e}); `cairn unlock` removes it once stale")),
            };
            Ok(found.is_none())
        })?;
        Ok(found)
    }

    fn refresh_loop(&self, guard: &LockGuard, kind: LockKind, command: &str, opts: &LockOptions) {
        let mut s = guard.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Checked before waiting too: the stop may come before this thread first runs.
            if s.stop {
                return;
            }
            let (next, _) = guard.wake.wait_timeout(s, opts.refresh).unwrap_or_else(|p| p.into_inner());
            s = next;
            if s.stop {
                return;
            }
            if s.written.elapsed() < opts.refresh {
                continue; // a spurious wake-up
            }
            let old = s.id;
            drop(s);
            // Our file must still be there: if someone removed it, a prune may have run
            // meanwhile, and nothing we do now can tell.
            // (An error asking is not an answer: try again next time, as for a write.)
            let present = match self.backend.stat(Dir::Locks, &old) {
                Ok(m) => m.is_some(),
                Err(_) => {
                    s = guard.state.lock().unwrap_or_else(|p| p.into_inner());
                    continue;
                }
            };
            let written = if present { self.write_lock(kind, command).ok() } else { None };
            s = guard.state.lock().unwrap_or_else(|p| p.into_inner());
            match (present, written) {
                (false, _) => {
                    s.lost = Some(format!("lock file {} was removed by another client", old.short()));
                    return;
                }
                (true, Some(new)) => {
                    s.id = new;
                    s.written = Instant::now();
                    let _ = self.backend.remove(Dir::Locks, &old);
                }
                // Not written (a full disk, a network hiccup): try again next time;
                // `check` fails once it has been too long.
                (true, None) => {}
            }
        }
    }
}

/// This machine's id in lock files: the temp files' host tag (8 hex digits of a hash
/// of the host name and machine id).
fn machine() -> Vec<u8> {
    crate::backend::host_tag().as_bytes().to_vec()
}
