//! Repository locks: shared locks coexist, an exclusive one excludes everything, stale
//! locks of crashed clients stop counting, a held lock is refreshed, and a holder that
//! lost its lock is told before it writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::backend::Dir;
use crate::error::Error;
use crate::format::lock::LockInfo;
use crate::format::FileKind;
use crate::repo::lock::{LockKind, LockOptions};
use crate::testutil::{temp_repo, write};

fn quick() -> LockOptions {
    LockOptions { stale: Duration::from_secs(60), refresh: Duration::from_secs(60), ..LockOptions::default() }
}

/// Plant a lock as another client would have written it.
fn plant(repo: &Repository, exclusive: bool, age: Duration, pid: u32, machine: &[u8]) -> crate::id::FileId {
    let info = LockInfo {
        time_ns: crate::repo::now_ns() - age.as_nanos() as i64,
        exclusive,
        pid,
        machine: machine.to_vec(),
        host: "elsewhere".into(),
        user: "someone".into(),
        command: if exclusive { "prune".into() } else { "backup".into() },
    };
    repo.write_sealed_file(FileKind::Lock, Dir::Locks, &info.encode()).unwrap()
}

fn locked(r: Result<(), Error>) -> String {
    match r {
        Err(Error::Locked(m)) => m,
        other => panic!("expected a lock conflict, got {other:?}"),
    }
}

#[test]
fn shared_locks_coexist_and_an_exclusive_one_excludes_them() {
    let t = temp_repo();
    let other = t.reopen();
    t.repo
        .with_lock(LockKind::Shared, "backup", &quick(), |_| {
            // A second shared lock is fine; an exclusive one is refused, naming the holder.
            other.with_lock(LockKind::Shared, "restore", &quick(), |_| Ok(()))?;
            let m = locked(other.with_lock(LockKind::Exclusive, "prune", &quick(), |_| Ok(())));
            assert!(m.contains("by backup on "), "{m}");
            assert!(m.contains("--retry-lock"), "{m}");
            Ok(())
        })
        .unwrap();
    // Released: nothing left in locks/.
    assert!(t.repo.locks().unwrap().is_empty());
    t.repo
        .with_lock(LockKind::Exclusive, "prune", &quick(), |_| {
            let m = locked(other.with_lock(LockKind::Shared, "backup", &quick(), |_| Ok(())));
            assert!(m.contains("exclusively by prune"), "{m}");
            Ok(())
        })
        .unwrap();
    // The refused attempts left no lock file behind.
    assert!(t.repo.locks().unwrap().is_empty());
}

#[test]
fn a_backup_waits_for_a_prune_with_retry_lock_and_fails_without() {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("f"), b"data");
    let other = t.reopen();
    let opts = |retry| crate::ops::backup::BackupOptions {
        paths: vec![src.clone()],
        lock: LockOptions { retry, ..LockOptions::default() },
        ..Default::default()
    };
    let released = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            other
                .with_lock(LockKind::Exclusive, "prune", &quick(), |_| {
                    tx.send(()).unwrap();
                    std::thread::sleep(Duration::from_millis(700));
                    released.store(true, Ordering::SeqCst);
                    Ok(())
                })
                .unwrap();
        });
        rx.recv().unwrap();
        let e =
            crate::ops::backup::backup(&t.repo, &opts(Duration::ZERO), &Collect::default(), &AtomicBool::new(false));
        assert!(matches!(e, Err(Error::Locked(_))), "{:?}", e.err());
        assert!(t.repo.snapshots().unwrap().is_empty());
        let r = crate::ops::backup::backup(
            &t.repo,
            &opts(Duration::from_secs(30)),
            &Collect::default(),
            &AtomicBool::new(false),
        );
        assert!(released.load(Ordering::SeqCst), "the backup ran while the prune held its lock");
        r.unwrap();
    });
    assert_eq!(t.repo.snapshots().unwrap().len(), 1);
}

#[test]
fn stale_locks_do_not_block_and_unlock_removes_only_them() {
    let t = temp_repo();
    // An exclusive lock not refreshed for longer than the stale age.
    let old = plant(&t.repo, true, Duration::from_secs(120), 1, b"elsewhere");
    // One from this machine whose process is gone (a child that has exited).
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let orphan = plant(&t.repo, true, Duration::ZERO, dead, crate::backend::host_tag().as_bytes());
    t.repo.with_lock(LockKind::Shared, "backup", &quick(), |_| Ok(())).unwrap();
    // A live exclusive lock from another machine does block.
    let live = plant(&t.repo, true, Duration::ZERO, 1, b"elsewhere");
    locked(t.repo.with_lock(LockKind::Shared, "backup", &quick(), |_| Ok(())));
    assert_eq!(t.repo.unlock(false, quick().stale).unwrap(), 2);
    let left: Vec<_> = t.repo.locks().unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(left, [live]);
    assert!(!left.contains(&old) && !left.contains(&orphan));
    assert_eq!(t.repo.unlock(true, quick().stale).unwrap(), 1);
    assert!(t.repo.locks().unwrap().is_empty());
}

#[test]
fn a_damaged_lock_file_is_honoured_until_it_is_as_old_as_a_stale_lock() {
    let t = temp_repo();
    let id = plant(&t.repo, false, Duration::ZERO, 1, b"elsewhere");
    crate::testutil::flip_byte(&t.repo.backend().path(Dir::Locks, &id), 20);
    let m = locked(t.repo.with_lock(LockKind::Exclusive, "prune", &quick(), |_| Ok(())));
    assert!(m.contains("unreadable lock"), "{m}");
    // It may be an exclusive lock: a shared one waits too.
    locked(t.repo.with_lock(LockKind::Shared, "backup", &quick(), |_| Ok(())));
    let f = std::fs::File::options().write(true).open(t.repo.backend().path(Dir::Locks, &id)).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(120)).unwrap();
    t.repo.with_lock(LockKind::Exclusive, "prune", &quick(), |_| Ok(())).unwrap();
    assert_eq!(t.repo.unlock(false, quick().stale).unwrap(), 1);
}

#[test]
fn a_held_lock_is_refreshed_and_a_removed_one_is_noticed() {
    let t = temp_repo();
    let fast = LockOptions { refresh: Duration::from_millis(50), stale: Duration::from_secs(60), ..quick() };
    let first = std::sync::Mutex::new(None);
    t.repo
        .with_lock(LockKind::Shared, "backup", &fast, |guard| {
            let ids = || t.repo.locks().unwrap().into_iter().map(|(id, _)| id).collect::<Vec<_>>();
            *first.lock().unwrap() = Some(ids());
            let start = Instant::now();
            while ids() == first.lock().unwrap().clone().unwrap() {
                assert!(start.elapsed() < Duration::from_secs(10), "the lock was never refreshed");
                std::thread::sleep(Duration::from_millis(10));
            }
            guard.check()?;
            // Someone runs `unlock --remove-all`: the next refresh notices, and the holder
            // is told before it would write anything.
            t.repo.unlock(true, fast.stale)?;
            let start = Instant::now();
            while guard.check().is_ok() {
                assert!(start.elapsed() < Duration::from_secs(10), "a removed lock went unnoticed");
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(matches!(guard.check(), Err(Error::Locked(m)) if m.contains("removed")));
            Ok(())
        })
        .unwrap();
    assert!(t.repo.locks().unwrap().is_empty());
}

#[test]
fn a_lock_that_could_not_be_refreshed_for_half_the_stale_age_is_lost() {
    let t = temp_repo();
    // Refreshes are due every hour, so the lock is never rewritten within the test, and
    // its stale age is short: after half of it the holder must not trust it.
    let opts = LockOptions { refresh: Duration::from_secs(3600), stale: Duration::from_millis(400), ..quick() };
    t.repo
        .with_lock(LockKind::Shared, "backup", &opts, |guard| {
            guard.check()?;
            std::thread::sleep(Duration::from_millis(300));
            assert!(matches!(guard.check(), Err(Error::Locked(m)) if m.contains("could not be refreshed")));
            Ok(())
        })
        .unwrap();
}

#[test]
fn an_upgraded_config_is_refused_by_cairn_0_1_and_reads_the_same() {
    let t = temp_repo();
    // A repository made by cairn 0.1: its config at version 1.
    let cfg = t.repo.path().join("config");
    std::fs::write(&cfg, crate::testutil::config_v1(&t.repo)).unwrap();
    let repo = t.reopen();
    assert_eq!(repo.config_version(), 1);
    assert!(repo.upgrade_config().unwrap());
    assert!(!repo.upgrade_config().unwrap());
    let again = t.reopen();
    assert_eq!(again.config_version(), 2);
    assert_eq!(again.config(), repo.config());
    // What cairn 0.1 checks: the version byte of the header, which it only accepts at 1.
    assert_eq!(std::fs::read(&cfg).unwrap()[8], 2);
}
