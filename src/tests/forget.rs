//! `forget`: policies per group, filters, ids, refusals that leave the repository as it
//! was, damaged snapshots, and the external sort spilling without changing a decision.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::*;
use crate::backend::Dir;
use crate::format::snapshot::Snapshot;
use crate::id::FileId;
use crate::ops::forget::{forget, Decision, Filter, ForgetOptions, ForgetSink, ForgetStats, Group, GroupBy, Selection};
use crate::retention::{Count, Period, Policy};
use crate::testutil::{flip_byte, temp_repo, write, TestRepo};

const DAY: i64 = 86_400_000_000_000;
/// Noon UTC, 1 June 2026: whatever the machine's time zone, snapshots a day apart at
/// this hour fall on distinct local days.
const T0: i64 = 1_780_315_200_000_000_000;

/// Records the decisions.
#[derive(Default)]
struct Seen {
    groups: Vec<Group>,
    decisions: Vec<(FileId, bool, Vec<String>)>,
}

impl ForgetSink for Seen {
    fn group(&mut self, g: &Group) {
        self.groups.push(g.clone());
    }
    fn decision(&mut self, d: &Decision<'_>) {
        self.decisions.push((d.id, d.keep(), d.reasons.to_vec()));
    }
}

/// A repository with one real backup, and a copy of its snapshot saved for every
/// (host, paths, tags, days before T0) given. Returns the ids in the order given.
fn repo_with(snaps: &[(&str, &str, &[&str], i64)]) -> (TestRepo, Vec<FileId>) {
    let t = temp_repo();
    let src = t.scratch("src");
    write(&src.join("f"), b"forget me not");
    let r = do_backup(&t.repo, &[&src]);
    t.repo.backend().remove(Dir::Snapshots, &r.id).unwrap();
    let ids = snaps
        .iter()
        .map(|(host, path, tags, days)| {
            let s = Snapshot {
                time_ns: T0 - days * DAY,
                host: host.to_string(),
                paths: vec![PathBuf::from(path)],
                tags: tags.iter().map(|t| t.to_string()).collect(),
                ..r.snapshot.clone()
            };
            t.repo.save_snapshot(&s).unwrap()
        })
        .collect();
    (t, ids)
}

fn policy_opts(policy: Policy, group_by: GroupBy, filter: Filter) -> ForgetOptions {
    ForgetOptions {
        selection: Selection::Policy { policy, group_by, filter },
        dry_run: false,
        force: false,
        now_ns: T0 + DAY,
        sort_memory: 1 << 20,
    }
}

fn remaining(t: &TestRepo) -> BTreeSet<FileId> {
    t.repo.backend().list(Dir::Snapshots).unwrap().into_iter().collect()
}

fn daily(n: u32) -> Policy {
    Policy::default().keep(Period::Day, Count::N(n))
}

#[test]
fn the_policy_applies_to_each_group_and_removes_the_rest() {
    // Hosts a and b, ten daily snapshots each (newest first), and one of host a with
    // other paths.
    let mut spec = vec![];
    for host in ["a", "b"] {
        for d in 0..10 {
            spec.push((host, "/data", &[][..], d));
        }
    }
    spec.push(("a", "/etc", &[][..], 30));
    let (t, ids) = repo_with(&spec);
    let mut seen = Seen::default();
    let stats = forget(&t.repo, &policy_opts(daily(3), GroupBy::default(), Filter::default()), &mut seen).unwrap();
    assert_eq!(stats, ForgetStats { groups: 3, kept: 7, removed: 14, sort_spills: 0 });
    let want: BTreeSet<FileId> = [0, 1, 2, 10, 11, 12, 20].iter().map(|&i| ids[i]).collect();
    assert_eq!(remaining(&t), want);
    // Groups come whole, newest first within each.
    assert_eq!(seen.groups.len(), 3);
    let a_data: Vec<FileId> = seen.decisions.iter().map(|d| d.0).filter(|id| ids[..10].contains(id)).collect();
    assert_eq!(a_data, ids[..10]);
    assert!(seen.decisions.iter().filter(|d| d.1).all(|d| d.2 == ["daily snapshot"]));
}

#[test]
fn grouping_by_nothing_makes_one_group_and_filters_leave_the_others_alone() {
    let spec: Vec<_> = (0..6).map(|d| (if d % 2 == 0 { "a" } else { "b" }, "/data", &[][..], d)).collect();
    let (t, ids) = repo_with(&spec);
    let one = GroupBy::parse("").unwrap();
    let last2 = Policy::default().keep(Period::Snapshot, Count::N(2));
    // Only host b's snapshots are considered: its newest two stay, and all of a's.
    let only_b = Filter { hosts: vec!["b".into()], ..Filter::default() };
    let stats = forget(&t.repo, &policy_opts(last2.clone(), one, only_b), &mut Seen::default()).unwrap();
    assert_eq!(stats, ForgetStats { groups: 1, kept: 2, removed: 1, sort_spills: 0 });
    assert!(!remaining(&t).contains(&ids[5]));
    // All in one group: the two newest of everything.
    forget(&t.repo, &policy_opts(last2, one, Filter::default()), &mut Seen::default()).unwrap();
    assert_eq!(remaining(&t), [ids[0], ids[1]].into_iter().collect());
}

#[test]
fn a_dry_run_decides_the_same_and_removes_nothing() {
    let spec: Vec<_> = (0..8).map(|d| ("a", "/data", &[][..], d)).collect();
    let (t, _) = repo_with(&spec);
    let before = remaining(&t);
    let mut dry = Seen::default();
    let opts = ForgetOptions { dry_run: true, ..policy_opts(daily(2), GroupBy::default(), Filter::default()) };
    let s1 = forget(&t.repo, &opts, &mut dry).unwrap();
    assert_eq!(remaining(&t), before);
    let mut real = Seen::default();
    let s2 = forget(&t.repo, &policy_opts(daily(2), GroupBy::default(), Filter::default()), &mut real).unwrap();
    assert_eq!((s1, dry.decisions), (s2, real.decisions));
    assert_eq!(remaining(&t).len(), 2);
}

#[test]
fn a_policy_that_empties_a_group_is_refused_unless_forced() {
    let spec = [("a", "/data", &["keep"][..], 1), ("a", "/data", &[][..], 2), ("b", "/data", &[][..], 1)];
    let (t, ids) = repo_with(&spec);
    let tagged = Policy { tags: vec![vec!["keep".into()]], ..Policy::default() };
    let before = remaining(&t);
    let e = forget(&t.repo, &policy_opts(tagged.clone(), GroupBy::default(), Filter::default()), &mut Seen::default())
        .unwrap_err();
    assert!(e.to_string().contains("every snapshot of the group host b"), "{e}");
    assert_eq!(remaining(&t), before, "a refusal removed something");
    let forced = ForgetOptions { force: true, ..policy_opts(tagged, GroupBy::default(), Filter::default()) };
    forget(&t.repo, &forced, &mut Seen::default()).unwrap();
    assert_eq!(remaining(&t), [ids[0]].into_iter().collect());
}

#[test]
fn ids_all_resolve_before_anything_is_removed() {
    let spec: Vec<_> = (0..3).map(|d| ("a", "/data", &[][..], d)).collect();
    let (t, ids) = repo_with(&spec);
    let opts = |ids: Vec<String>| ForgetOptions {
        selection: Selection::Ids(ids),
        ..policy_opts(Policy::default(), GroupBy::default(), Filter::default())
    };
    let before = remaining(&t);
    let e = forget(&t.repo, &opts(vec![ids[0].to_hex(), "ffffffffffff".into()]), &mut Seen::default()).unwrap_err();
    assert!(e.to_string().contains("ffffffffffff"), "{e}");
    // The empty prefix and `latest` are not ids.
    assert!(forget(&t.repo, &opts(vec!["".into()]), &mut Seen::default()).is_err());
    assert!(forget(&t.repo, &opts(vec!["latest".into()]), &mut Seen::default()).is_err());
    assert_eq!(remaining(&t), before);
    let stats =
        forget(&t.repo, &opts(vec![ids[0].short(), ids[2].to_hex(), ids[0].to_hex()]), &mut Seen::default()).unwrap();
    assert_eq!(stats.removed, 2);
    assert_eq!(remaining(&t), [ids[1]].into_iter().collect());
    // An empty policy is no selection at all.
    assert!(forget(
        &t.repo,
        &policy_opts(Policy::default(), GroupBy::default(), Filter::default()),
        &mut Seen::default()
    )
    .is_err());
}

#[test]
fn a_damaged_snapshot_is_reported_and_neither_kept_nor_removed() {
    let spec: Vec<_> = (0..4).map(|d| ("a", "/data", &[][..], d)).collect();
    let (t, ids) = repo_with(&spec);
    flip_byte(&t.repo.backend().path(Dir::Snapshots, &ids[0]), 40);
    let repo = t.reopen();
    let mut seen = Seen::default();
    let last = Policy::default().keep(Period::Snapshot, Count::N(1));
    let stats = forget(&repo, &policy_opts(last, GroupBy::default(), Filter::default()), &mut seen).unwrap();
    // The newest readable one is kept; the damaged one is still there, and named.
    assert_eq!(stats, ForgetStats { groups: 1, kept: 1, removed: 2, sort_spills: 0 });
    assert_eq!(remaining(&t), [ids[0], ids[1]].into_iter().collect());
    assert!(repo.problems().iter().any(|p| p.contains(&ids[0].to_hex())), "{:?}", repo.problems());
}

#[test]
fn spilling_the_sort_to_disk_changes_no_decision() {
    // 120 snapshots over 3 hosts and 2 tag sets, grouped by host and tags: records of
    // ~250 B, so a 4 KiB sort spills about eight times.
    let mut spec = vec![];
    for i in 0..120 {
        let host = ["x", "y", "z"][i % 3];
        let tags: &[&str] = if i % 4 == 0 { &["weekly"] } else { &[] };
        spec.push((host, "/srv", tags, (i as i64 * 7) % 50));
    }
    let (t, _) = repo_with(&spec);
    let g = GroupBy::parse("host,tags").unwrap();
    let p = daily(5).keep(Period::Week, Count::N(2));
    let run = |sort_memory| {
        let mut seen = Seen::default();
        let opts = ForgetOptions { dry_run: true, sort_memory, ..policy_opts(p.clone(), g, Filter::default()) };
        let stats = forget(&t.repo, &opts, &mut seen).unwrap();
        (stats, seen.groups, seen.decisions)
    };
    let mut big = run(64 << 20);
    let mut small = run(0);
    assert_eq!(big.0.sort_spills, 0);
    assert!(small.0.sort_spills >= 4, "{:?}", small.0);
    assert_eq!(big.0.groups, 6);
    assert!(big.0.removed > 0 && big.0.kept > 0);
    (big.0.sort_spills, small.0.sort_spills) = (0, 0);
    assert_eq!(small, big);
}
