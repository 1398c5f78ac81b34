//! Retention policies for `forget`: which snapshots of one group to keep, and why.
//!
//! The rules and their meaning are restic's (`restic forget`, "Removing snapshots
//! according to a policy"): a group's snapshots are visited newest first, and
//! - `--keep-last N` keeps the N newest;
//! - `--keep-{hourly,daily,weekly,monthly,yearly} N` keeps the newest snapshot of each of
//!   the N newest hours, days, ISO weeks, months or years that have one (local time);
//! - `--keep-within SPAN` keeps every snapshot newer than the group's newest one minus
//!   SPAN (`1y2m3d4h`: years, months, days, hours, calendar arithmetic);
//! - `--keep-within-{hourly,...} SPAN` keeps the newest snapshot of each hour, day... that
//!   lies within SPAN of the newest;
//! - `--keep-tag a,b` keeps every snapshot carrying all of the tags a and b (repeat the
//!   option for alternatives).
//!
//! A snapshot is kept when any rule keeps it; the reasons list every rule that did. When a
//! counted rule has counts left at the group's oldest snapshot, that snapshot is kept too,
//! so a young repository keeps its whole history (restic 0.14 and later). "Newest" for the
//! `within` rules is the newest snapshot not in the future: a clock that was wrong once
//! does not shift the window of every later run.
//!
//! Where cairn differs from restic: a count of 0 is an error, not "rule unset" (restic
//! ignores `--keep-daily 0` silently, which has deleted history for people who meant the
//! opposite); and month arithmetic clamps to the end of the month (31 March minus one month
//! is 28 or 29 February; Go's `AddDate` gives 2 or 3 March).
//!
//! Evaluation is streaming: [`Evaluator`] holds a few integers per rule and sees one
//! snapshot at a time, so `forget` can feed it from an external sort and never hold a
//! group in memory.

use chrono::{DateTime, Datelike, Days, Months, TimeZone, Timelike};

/// How many periods a counted rule keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// At most this many (at least 1).
    N(u32),
    /// Every period that has a snapshot.
    Unlimited,
}

impl Count {
    /// Parse `7` or `unlimited`; 0, negatives and anything else are refused.
    pub fn parse(s: &str) -> Result<Count, String> {
        if s.eq_ignore_ascii_case("unlimited") {
            return Ok(Count::Unlimited);
        }
        match s.parse::<u32>() {
            Ok(0) => Err(format!("{s}: a count of 0 keeps nothing; leave the option out, or give 1 or more")),
            Ok(n) => Ok(Count::N(n)),
            Err(_) => Err(format!("{s}: not a count (a whole number from 1, or `unlimited`)")),
        }
    }
}

/// A calendar span: `2y`, `6m`, `14d`, `36h` or a combination such as `1y6m`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Years.
    pub years: u32,
    /// Months.
    pub months: u32,
    /// Days.
    pub days: u32,
    /// Hours.
    pub hours: u32,
}

impl Span {
    /// Parse restic's duration syntax: one or more NUMBER UNIT pairs, units y, m, d, h,
    /// each at most once. An empty or zero span is refused.
    pub fn parse(s: &str) -> Result<Span, String> {
        let bad = |why: &str| Err(format!("{s}: {why}; a span is numbers with units y, m, d, h (14d, 1y6m, 36h)"));
        let mut span = Span::default();
        let mut seen = [false; 4];
        let mut rest = s.trim();
        if rest.is_empty() {
            return bad("empty span");
        }
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return bad("expected a number");
            }
            let Ok(n) = rest[..digits].parse::<u32>() else { return bad("number too large") };
            let mut chars = rest[digits..].chars();
            let (slot, field) = match chars.next() {
                Some('y') => (0, &mut span.years),
                Some('m') => (1, &mut span.months),
                Some('d') => (2, &mut span.days),
                Some('h') => (3, &mut span.hours),
                Some(_) => return bad("unknown unit"),
                None => return bad("a number needs a unit (y, m, d or h)"),
            };
            if std::mem::replace(&mut seen[slot], true) {
                return bad("a unit given twice");
            }
            *field = n;
            rest = chars.as_str();
        }
        if span == Span::default() {
            return bad("a zero span keeps nothing");
        }
        Ok(span)
    }

    /// `t` minus this span, calendar-wise in `t`'s zone: years and months (clamped to the
    /// month's end), then days, then hours of elapsed time. `None` when out of range.
    fn before<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        let months = self.years.checked_mul(12)?.checked_add(self.months)?;
        let naive =
            t.naive_local().checked_sub_months(Months::new(months))?.checked_sub_days(Days::new(self.days.into()))?;
        // A local time that does not exist (a DST gap) or exists twice: take the earliest
        // instant at that wall-clock reading, or else the same offset as `t`.
        let date = match t.timezone().from_local_datetime(&naive).earliest() {
            Some(d) => d,
            None => t.clone() - (t.naive_local() - naive),
        };
        date.checked_sub_signed(chrono::TimeDelta::try_hours(self.hours.into())?)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, u) in [(self.years, 'y'), (self.months, 'm'), (self.days, 'd'), (self.hours, 'h')] {
            if n > 0 {
                write!(f, "{n}{u}")?;
            }
        }
        Ok(())
    }
}

/// The periods the counted and `within` rules work in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// Each snapshot is its own period (`--keep-last`).
    Snapshot,
    /// Calendar hours.
    Hour,
    /// Calendar days.
    Day,
    /// ISO 8601 weeks (Monday to Sunday; a week belongs to the year of its Thursday).
    Week,
    /// Calendar months.
    Month,
    /// Calendar years.
    Year,
}

impl Period {
    const ALL: [Period; 6] = [Period::Snapshot, Period::Hour, Period::Day, Period::Week, Period::Month, Period::Year];

    fn name(self) -> &'static str {
        match self {
            Period::Snapshot => "last",
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        }
    }

    /// For the policy in words: "7 daily", "2 latest".
    fn adjective(self) -> &'static str {
        match self {
            Period::Snapshot => "latest",
            p => p.name(),
        }
    }

    /// The period `t` falls in, as a number that differs between periods; `nr` is the
    /// snapshot's position in the group (every snapshot is its own period for `last`).
    fn of<Tz: TimeZone>(self, t: &DateTime<Tz>, nr: u64) -> i64 {
        let ymd = i64::from(t.year()) * 10_000 + i64::from(t.month()) * 100 + i64::from(t.day());
        match self {
            Period::Snapshot => nr as i64,
            Period::Hour => ymd * 100 + i64::from(t.hour()),
            Period::Day => ymd,
            Period::Week => {
                let w = t.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Period::Month => i64::from(t.year()) * 100 + i64::from(t.month()),
            Period::Year => i64::from(t.year()),
        }
    }
}

/// A retention policy. Empty when no rule is set; `forget` refuses an empty policy
/// unless it is given snapshot ids instead.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Counted rules, indexed like [`Period::ALL`]: last, hourly, daily, weekly, monthly, yearly.
    pub counts: [Option<Count>; 6],
    /// `--keep-within`.
    pub within: Option<Span>,
    /// `--keep-within-{hourly,daily,weekly,monthly,yearly}`, indexed like
    /// `Period::ALL[1..]`.
    pub within_periods: [Option<Span>; 5],
    /// `--keep-tag`: each entry is a set of tags that must all be present.
    pub tags: Vec<Vec<String>>,
}

impl Policy {
    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    /// Set the counted rule for `period`.
    pub fn keep(mut self, period: Period, n: Count) -> Policy {
        self.counts[period as usize] = Some(n);
        self
    }

    /// Set the `within` rule for `period` (not [`Period::Snapshot`]: that is `within`).
    pub fn keep_within(mut self, period: Period, span: Span) -> Policy {
        match period {
            Period::Snapshot => self.within = Some(span),
            p => self.within_periods[p as usize - 1] = Some(span),
        }
        self
    }

    /// The policy in words, e.g. "keep 7 daily, 2 weekly snapshots".
    pub fn describe(&self) -> String {
        let mut parts = vec![];
        for (p, c) in Period::ALL.iter().zip(&self.counts) {
            match c {
                Some(Count::N(n)) => parts.push(format!("{n} {}", p.adjective())),
                Some(Count::Unlimited) => parts.push(format!("all {}", p.adjective())),
                None => {}
            }
        }
        let mut s = if parts.is_empty() { String::new() } else { format!("{} snapshots", parts.join(", ")) };
        let mut more = vec![];
        for (p, w) in Period::ALL[1..].iter().zip(&self.within_periods) {
            if let Some(w) = w {
                more.push(format!("{} snapshots within {w}", p.name()));
            }
        }
        if let Some(w) = self.within {
            more.push(format!("all snapshots within {w} of the newest"));
        }
        for t in &self.tags {
            more.push(format!("all snapshots tagged {}", t.join(",")));
        }
        for m in more {
            if !s.is_empty() {
                s.push_str(", ");
            }
            s.push_str(&m);
        }
        format!("keep {s}")
    }
}

/// Applies a [`Policy`] to one group's snapshots, fed newest first (equal times in any
/// fixed order). Memory: three integers per rule, whatever the group's size.
pub struct Evaluator<'p, Tz: TimeZone> {
    policy: &'p Policy,
    tz: Tz,
    now_ns: i64,
    /// Counts left per counted rule (`None` = unlimited), and the last period kept.
    left: [Option<u32>; 6],
    last: [Option<i64>; 6],
    last_within: [Option<i64>; 5],
    /// The newest snapshot not in the future, once seen.
    newest: Option<DateTime<Tz>>,
    nr: u64,
}

impl<'p, Tz: TimeZone> Evaluator<'p, Tz> {
    /// An evaluator for one group, in time zone `tz` (local time for users), with "the
    /// future" starting after `now_ns`.
    pub fn new(policy: &'p Policy, tz: Tz, now_ns: i64) -> Self {
        let left = policy.counts.map(|c| match c {
            Some(Count::N(n)) => Some(n),
            Some(Count::Unlimited) => None,
            None => Some(0),
        });
        Evaluator { policy, tz, now_ns, left, last: [None; 6], last_within: [None; 5], newest: None, nr: 0 }
    }

    /// The next (older) snapshot of the group: its time and tags, and whether it is the
    /// group's oldest. Returns the reasons it is kept; empty means it goes.
    pub fn next(&mut self, time_ns: i64, tags: &[String], oldest: bool) -> Vec<String> {
        let mut why = vec![];
        let t = self.tz.timestamp_nanos(time_ns);
        if self.newest.is_none() && time_ns <= self.now_ns {
            self.newest = Some(t.clone());
        }
        for set in &self.policy.tags {
            if set.iter().all(|want| tags.contains(want)) {
                why.push(format!("tagged {}", set.join(",")));
            }
        }
        // Whether `t` lies after the newest minus `span`. Snapshots in the future come
        // before the newest and are always within.
        let within = |span: &Span, newest: &Option<DateTime<Tz>>| match newest {
            None => true,
            Some(n) => span.before(n).is_none_or(|start| t > start),
        };
        if let Some(span) = &self.policy.within {
            if within(span, &self.newest) {
                why.push(format!("within {span}"));
            }
        }
        for (i, p) in Period::ALL.iter().enumerate() {
            if self.left[i] == Some(0) {
                continue;
            }
            let val = p.of(&t, self.nr);
            let new_period = self.last[i] != Some(val);
            if new_period || oldest {
                self.last[i] = Some(val);
                if let Some(n) = &mut self.left[i] {
                    *n -= 1;
                }
                why.push(match new_period {
                    true => format!("{} snapshot", p.name()),
                    false => format!("{} snapshot (oldest, counts left)", p.name()),
                });
            }
        }
        for (i, p) in Period::ALL[1..].iter().enumerate() {
            let Some(span) = &self.policy.within_periods[i] else { continue };
            if within(span, &self.newest) {
                let val = p.of(&t, self.nr);
                if self.last_within[i] != Some(val) {
                    self.last_within[i] = Some(val);
                    why.push(format!("{} within {span}", p.name()));
                }
            }
        }
        self.nr += 1;
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use proptest::prelude::*;

    const H: i64 = 3_600_000_000_000;
    const D: i64 = 24 * H;

    fn ns(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_nanos_opt().unwrap()
    }

    /// Kept indexes (into `times`, which must be newest first) with their reasons.
    fn run(p: &Policy, times: &[i64], tags: &[Vec<String>], now: i64) -> Vec<(usize, Vec<String>)> {
        let mut e = Evaluator::new(p, Utc, now);
        let mut kept = vec![];
        for (i, &t) in times.iter().enumerate() {
            let why = e.next(t, tags.get(i).map_or(&[][..], |v| v), i + 1 == times.len());
            if !why.is_empty() {
                kept.push((i, why));
            }
        }
        kept
    }

    fn kept(p: &Policy, times: &[i64]) -> Vec<usize> {
        run(p, times, &[], i64::MAX).into_iter().map(|(i, _)| i).collect()
    }

    #[test]
    fn counts_and_spans_parse_or_say_why_not() {
        assert_eq!(Count::parse("7"), Ok(Count::N(7)));
        assert_eq!(Count::parse("unlimited"), Ok(Count::Unlimited));
        for bad in ["0", "-1", "x", "", "1.5"] {
            assert!(Count::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Span::parse("1y6m").unwrap(), Span { years: 1, months: 6, ..Span::default() });
        assert_eq!(Span::parse("36h").unwrap().hours, 36);
        assert_eq!(Span::parse("2y3m4d5h").unwrap().to_string(), "2y3m4d5h");
        for bad in ["", "0d", "7", "d", "2w", "1d1d", "-1d", "99999999999d", "1d 2h"] {
            assert!(Span::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keep_last_keeps_the_newest() {
        let times: Vec<i64> = (0..10).map(|i| 1_000 * D - i * H).collect();
        let p = Policy::default().keep(Period::Snapshot, Count::N(3));
        assert_eq!(kept(&p, &times), [0, 1, 2]);
        let all = Policy::default().keep(Period::Snapshot, Count::Unlimited);
        assert_eq!(kept(&all, &times).len(), 10);
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_and_the_oldest_while_counts_remain() {
        // Two snapshots a day (18:00 and 06:00) for five days, newest first.
        let day0 = ns("2026-03-10T18:00:00Z");
        let times: Vec<i64> = (0..10).map(|i| day0 - (i / 2) * D - (i % 2) * 12 * H).collect();
        let p = Policy::default().keep(Period::Day, Count::N(3));
        assert_eq!(kept(&p, &times), [0, 2, 4]);
        // Counts left at the oldest (06:00 of the fifth day, not the newest of its day):
        // it is kept too, and says why.
        let p = Policy::default().keep(Period::Day, Count::N(10));
        let r = run(&p, &times, &[], i64::MAX);
        assert_eq!(r.iter().map(|k| k.0).collect::<Vec<_>>(), [0, 2, 4, 6, 8, 9]);
        assert_eq!(r[5].1, ["daily snapshot (oldest, counts left)"]);
    }

    #[test]
    fn weeks_are_iso_weeks_across_the_new_year() {
        // Thu 31 Dec 2020 and Sun 3 Jan 2021 are both in ISO week 2020-53; Mon 4 Jan 2021
        // starts 2021-01.
        let times = [
            ns("2021-01-04T10:00:00Z"),
            ns("2021-01-03T10:00:00Z"),
            ns("2020-12-31T10:00:00Z"),
            ns("2020-12-20T10:00:00Z"),
        ];
        let p = Policy::default().keep(Period::Week, Count::N(2));
        assert_eq!(kept(&p, &times), [0, 1]);
        // Years are calendar years (3 Jan 2021 is in 2021), and counts are left at the
        // oldest.
        let p = Policy::default().keep(Period::Year, Count::N(5));
        assert_eq!(kept(&p, &times), [0, 2, 3]);
        let p = Policy::default().keep(Period::Month, Count::N(1));
        assert_eq!(kept(&p, &times), [0]);
    }

    #[test]
    fn within_counts_back_from_the_newest_snapshot_not_from_now() {
        // The newest is a year old: `within 2d` still keeps the last two days of it.
        let newest = ns("2025-06-01T12:00:00Z");
        let times = [newest, newest - D, newest - 2 * D, newest - 3 * D];
        let p = Policy::default().keep_within(Period::Snapshot, Span::parse("2d").unwrap());
        assert_eq!(run(&p, &times, &[], ns("2026-06-01T00:00:00Z")).iter().map(|k| k.0).collect::<Vec<_>>(), [0, 1]);
        // A snapshot from the future (a wrong clock) is kept and does not move the window.
        let future = ns("2030-01-01T00:00:00Z");
        let times = [future, newest, newest - D, newest - 3 * D];
        let r = run(&p, &times, &[], ns("2026-06-01T00:00:00Z"));
        assert_eq!(r.iter().map(|k| k.0).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn within_periods_keep_one_per_period_inside_the_span() {
        let day0 = ns("2026-03-10T18:00:00Z");
        let times: Vec<i64> = (0..10).map(|i| day0 - (i / 2) * D - (i % 2) * 12 * H).collect();
        let p = Policy::default().keep_within(Period::Day, Span::parse("3d").unwrap());
        // Days 10, 9, 8 and the evening of the 7th (exactly 3 days is not within).
        assert_eq!(kept(&p, &times), [0, 2, 4]);
        let r = run(&p, &times, &[], i64::MAX);
        assert_eq!(r[0].1, ["daily within 3d"]);
    }

    #[test]
    fn month_spans_clamp_to_the_end_of_the_month() {
        let t = Utc.timestamp_nanos(ns("2024-03-31T12:00:00Z"));
        let s = Span::parse("1m").unwrap().before(&t).unwrap();
        assert_eq!(s.to_rfc3339(), "2024-02-29T12:00:00+00:00");
        let s = Span::parse("1y1d2h").unwrap().before(&t).unwrap();
        assert_eq!(s.to_rfc3339(), "2023-03-30T10:00:00+00:00");
    }

    #[test]
    fn tags_keep_snapshots_that_carry_every_tag_of_a_set() {
        let times = [40 * D, 30 * D, 20 * D, 10 * D];
        let tags: Vec<Vec<String>> = [vec!["a"], vec!["a", "b"], vec!["b"], vec![]]
            .iter()
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .collect();
        let mut p = Policy { tags: vec![vec!["a".into(), "b".into()]], ..Policy::default() };
        assert_eq!(run(&p, &times, &tags, i64::MAX).iter().map(|k| k.0).collect::<Vec<_>>(), [1]);
        p.tags.push(vec!["b".into()]);
        let r = run(&p, &times, &tags, i64::MAX);
        assert_eq!(r.iter().map(|k| k.0).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(r[0].1, ["tagged a,b", "tagged b"]);
        // Tags are not counted: everything without them goes, even the newest.
        assert!(!r.iter().any(|k| k.0 == 0));
    }

    #[test]
    fn the_policy_says_itself() {
        let p = Policy::default()
            .keep(Period::Day, Count::N(7))
            .keep(Period::Week, Count::N(2))
            .keep_within(Period::Snapshot, Span::parse("3d").unwrap());
        assert_eq!(p.describe(), "keep 7 daily, 2 weekly snapshots, all snapshots within 3d of the newest");
        assert!(Policy::default().is_empty() && !p.is_empty());
    }

    /// restic's algorithm as written (the whole list at hand: the newest non-future
    /// snapshot found first, the oldest known by its index), without the streaming.
    fn reference(p: &Policy, times: &[i64], now: i64) -> Vec<bool> {
        let tz = Utc;
        let latest = times.iter().copied().filter(|&t| t <= now).max();
        let cut = |s: &Span| latest.and_then(|l| s.before(&tz.timestamp_nanos(l)));
        let mut left: Vec<i64> = p
            .counts
            .iter()
            .map(|c| match c {
                Some(Count::N(n)) => *n as i64,
                Some(Count::Unlimited) => -1,
                None => 0,
            })
            .collect();
        let mut last = [i64::MIN; 6];
        let mut last_w = [i64::MIN; 5];
        let mut out = vec![];
        for (nr, &t) in times.iter().enumerate() {
            let dt = tz.timestamp_nanos(t);
            let mut keep = false;
            if let Some(s) = &p.within {
                keep |= cut(s).is_none_or(|c| dt > c);
            }
            for (i, per) in Period::ALL.iter().enumerate() {
                if left[i] > 0 || left[i] == -1 {
                    let v = per.of(&dt, nr as u64);
                    if v != last[i] || nr == times.len() - 1 {
                        keep = true;
                        last[i] = v;
                        if left[i] > 0 {
                            left[i] -= 1;
                        }
                    }
                }
            }
            for (i, per) in Period::ALL[1..].iter().enumerate() {
                if let Some(s) = &p.within_periods[i] {
                    if cut(s).is_none_or(|c| dt > c) {
                        let v = per.of(&dt, nr as u64);
                        if v != last_w[i] {
                            keep = true;
                            last_w[i] = v;
                        }
                    }
                }
            }
            out.push(keep);
        }
        out
    }

    fn policy() -> impl Strategy<Value = Policy> {
        let count = prop_oneof![Just(None), (1u32..6).prop_map(|n| Some(Count::N(n))), Just(Some(Count::Unlimited))];
        let span = prop_oneof![3 => Just(None), 1 => (0u32..2, 0u32..3, 0u32..20, 0u32..30).prop_filter_map("zero", |(y, m, d, h)| {
            let s = Span { years: y, months: m, days: d, hours: h };
            (s != Span::default()).then_some(s).map(Some)
        })];
        (proptest::array::uniform6(count), span.clone(), proptest::array::uniform5(span))
            .prop_map(|(counts, within, within_periods)| Policy { counts, within, within_periods, tags: vec![] })
    }

    proptest! {
        /// The streaming evaluator decides exactly as the whole-list algorithm does.
        #[test]
        fn streaming_matches_the_whole_list_algorithm(
            p in policy(),
            mut gaps in proptest::collection::vec(0i64..(40 * D), 1..60),
            now_back in 0i64..(200 * D),
        ) {
            let start = ns("2026-01-01T00:00:00Z");
            let mut t = start;
            let times: Vec<i64> = gaps.iter_mut().map(|g| { t -= *g; t }).collect();
            let now = start - now_back;
            let want = reference(&p, &times, now);
            let got = run(&p, &times, &[], now);
            let got: Vec<bool> = (0..times.len()).map(|i| got.iter().any(|k| k.0 == i)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
