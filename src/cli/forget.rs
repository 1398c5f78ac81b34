//! `cairn forget`: thin over [`crate::ops::forget`]. Decisions are printed as they are
//! made (one table per group, or one JSON object per line), so the output never waits
//! for, or holds, the whole repository's list.

use std::io::Write;

use super::{local_time, open, print_problems, Cli, Env, EXIT_OK};
use crate::ops::forget::{self, Decision, ForgetOptions, ForgetSink, Group, GroupBy, Selection};
use crate::retention::{Count, Period, Policy, Span};

/// `cairn forget` arguments.
#[derive(clap::Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to remove (ids or unique id prefixes), instead of a policy.
    #[arg(value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
    /// Keep the N newest snapshots (`unlimited`: all).
    #[arg(short = 'l', long, value_name = "N", allow_hyphen_values = true)]
    keep_last: Option<String>,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    #[arg(short = 'H', long, value_name = "N", allow_hyphen_values = true)]
    keep_hourly: Option<String>,
    /// Keep the newest snapshot of each of the N newest days that have one.
    #[arg(short = 'd', long, value_name = "N", allow_hyphen_values = true)]
    keep_daily: Option<String>,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one.
    #[arg(short = 'w', long, value_name = "N", allow_hyphen_values = true)]
    keep_weekly: Option<String>,
    /// Keep the newest snapshot of each of the N newest months that have one.
    #[arg(short = 'm', long, value_name = "N", allow_hyphen_values = true)]
    keep_monthly: Option<String>,
    /// Keep the newest snapshot of each of the N newest years that have one.
    #[arg(short = 'y', long, value_name = "N", allow_hyphen_values = true)]
    keep_yearly: Option<String>,
    /// Keep every snapshot within SPAN (e.g. 1y6m, 14d, 36h) of the group's newest.
    #[arg(long, value_name = "SPAN", allow_hyphen_values = true)]
    keep_within: Option<String>,
    /// Keep the newest snapshot of each hour within SPAN of the group's newest.
    #[arg(long, value_name = "SPAN", allow_hyphen_values = true)]
    keep_within_hourly: Option<String>,
    /// Keep the newest snapshot of each day within SPAN of the group's newest.
    #[arg(long, value_name = "SPAN", allow_hyphen_values = true)]
    keep_within_daily: Option<String>,
    /// Keep the newest snapshot of each week within SPAN of the group's newest.
    #[arg(long, value_name = "SPAN", allow_hyphen_values = true)]
    keep_within_weekly: Option<String>,
    /// Keep the newest snapshot of each month within SPAN of the group's newest.
    #[arg(long, value_name = "SPAN", allow_hyphen_values = true)]
    keep_within_monthly: Option<String>,
    /// Keep the newest snapshot of each year within SPAN of the group's newest.
    #[arg(long, value_name = "SPAN", allow_hyphen_values = true)]
    keep_within_yearly: Option<String>,
    /// Keep every snapshot carrying all of these comma-separated tags (repeatable: any set).
    #[arg(long, value_name = "TAG[,TAG]")]
    keep_tag: Vec<String>,
    /// Apply the policy to each group of snapshots sharing these attributes (a
    /// comma-separated subset of host, paths, tags; empty: all snapshots in one group).
    #[arg(short = 'g', long, value_name = "LIST", default_value = "host,paths", allow_hyphen_values = true)]
    group_by: String,
    #[command(flatten)]
    filter: super::snapshots::FilterArgs,
    /// Show what would be kept and removed, and why; remove nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Remove even when the policy keeps no snapshot of a group.
    #[arg(long)]
    force: bool,
    /// Then run `prune`. (With --dry-run, prune shows its plan for the repository as it
    /// is: the snapshots forget would remove still count as kept.)
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    prune_flags: super::prune::PruneFlags,
}

impl ForgetArgs {
    /// The policy; a bad count or span is an error naming its option (exit 1, as any
    /// error: nothing has been opened yet).
    fn policy(&self) -> anyhow::Result<Policy> {
        let mut p = Policy::default();
        let periods = [Period::Snapshot, Period::Hour, Period::Day, Period::Week, Period::Month, Period::Year];
        let counts = [
            ("last", &self.keep_last),
            ("hourly", &self.keep_hourly),
            ("daily", &self.keep_daily),
            ("weekly", &self.keep_weekly),
            ("monthly", &self.keep_monthly),
            ("yearly", &self.keep_yearly),
        ];
        for (period, (name, c)) in periods.iter().zip(counts) {
            if let Some(c) = c {
                p = p.keep(*period, Count::parse(c).map_err(|e| anyhow::anyhow!("--keep-{name} {e}"))?);
            }
        }
        let spans = [
            ("", &self.keep_within),
            ("-hourly", &self.keep_within_hourly),
            ("-daily", &self.keep_within_daily),
            ("-weekly", &self.keep_within_weekly),
            ("-monthly", &self.keep_within_monthly),
            ("-yearly", &self.keep_within_yearly),
        ];
        for (period, (name, s)) in periods.iter().zip(spans) {
            if let Some(s) = s {
                p = p.keep_within(*period, Span::parse(s).map_err(|e| anyhow::anyhow!("--keep-within{name} {e}"))?);
            }
        }
        p.tags = super::snapshots::tag_sets(&self.keep_tag);
        Ok(p)
    }

    fn selection(&self) -> anyhow::Result<Selection> {
        let policy = self.policy()?;
        let filter = self.filter.filter();
        let filtered = !filter.is_empty();
        if !self.snapshots.is_empty() {
            if !policy.is_empty() || filtered {
                anyhow::bail!("give either snapshot ids or a policy (--keep-*, --host, --tag, --path), not both");
            }
            return Ok(Selection::Ids(self.snapshots.clone()));
        }
        if policy.is_empty() {
            anyhow::bail!("nothing to forget: name snapshots, or give a policy with --keep-* options");
        }
        let group_by = GroupBy::parse(&self.group_by).map_err(anyhow::Error::msg)?;
        Ok(Selection::Policy { policy, group_by, filter })
    }
}

/// How decisions are printed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    /// A table per group.
    Table,
    /// One JSON object per decision and line.
    Json,
    /// Not at all (`--quiet`).
    Quiet,
}

/// Prints decisions as they come; the first write error is kept and stops the printing.
struct Printer<'a> {
    out: &'a mut dyn Write,
    style: Style,
    policy: String,
    group: serde_json::Value,
    /// Whether the table's column header is out.
    headed: bool,
    err: Option<std::io::Error>,
}

impl Printer<'_> {
    fn put(&mut self, s: std::fmt::Arguments<'_>) {
        if self.err.is_none() {
            if let Err(e) = self.out.write_fmt(s) {
                self.err = Some(e);
            }
        }
    }
}

impl ForgetSink for Printer<'_> {
    fn group(&mut self, g: &Group) {
        match self.style {
            Style::Table => {
                let head = format!("snapshots of {} ({}):", forget::describe_group(g), self.policy);
                self.put(format_args!("\n{head}\n"));
                self.headed = false;
            }
            Style::Json => {
                self.group = serde_json::json!({
                    "host": g.host, "tags": g.tags,
                    "paths": g.paths.as_ref().map(|p| p.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>()),
                });
            }
            Style::Quiet => {}
        }
    }

    fn decision(&mut self, d: &Decision<'_>) {
        let s = d.snapshot;
        let action = if d.keep() { "keep" } else { "remove" };
        match self.style {
            Style::Table => {
                if !std::mem::replace(&mut self.headed, true) {
                    self.put(format_args!(
                        "{:<8}  {:<19}  {:<6}  {:<12}  Reasons; Paths\n",
                        "ID", "Time", "Action", "Host"
                    ));
                }
                let mut paths = s.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
                if !s.tags.is_empty() {
                    paths = format!("{paths} [{}]", s.tags.join(","));
                }
                let detail = if d.keep() { format!("{}; {paths}", d.reasons.join(", ")) } else { paths };
                let line = format!(
                    "{:<8}  {:<19}  {action:<6}  {:<12}  {detail}",
                    d.id.short(),
                    local_time(s.time_ns),
                    s.host
                );
                self.put(format_args!("{line}\n"));
            }
            Style::Json => {
                let v = serde_json::json!({
                    "id": d.id.to_hex(), "time_ns": s.time_ns, "host": s.host, "tags": s.tags,
                    "paths": s.paths.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>(),
                    "group": self.group, "action": action, "reasons": d.reasons,
                });
                self.put(format_args!("{v}\n"));
            }
            Style::Quiet => {}
        }
    }
}

/// Run `cairn forget`.
pub(super) fn run(
    cli: &Cli,
    env: &Env,
    args: &ForgetArgs,
    out: &mut dyn Write,
    err: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let selection = args.selection()?;
    let prune_opts = args.prune.then(|| args.prune_flags.options(cli, args.dry_run)).transpose()?;
    let repo = open(cli, env)?;
    let policy = match &selection {
        Selection::Policy { policy, .. } => policy.describe(),
        Selection::Ids(_) => String::new(),
    };
    let opts = ForgetOptions {
        selection,
        dry_run: args.dry_run,
        force: args.force,
        now_ns: crate::sys::now_ns(),
        sort_memory: repo.budget().sort_bytes(),
    };
    let style = match (cli.json, cli.quiet) {
        (true, _) => Style::Json,
        (false, true) => Style::Quiet,
        (false, false) => Style::Table,
    };
    let mut printer =
        Printer { out: &mut *out, style, policy, group: serde_json::Value::Null, headed: false, err: None };
    let result = forget::forget(&repo, &opts, &mut printer);
    if let Some(e) = printer.err.take() {
        return Err(e.into());
    }
    print_problems(&repo, err);
    let stats = result?;
    match style {
        Style::Json => writeln!(out, "{}", serde_json::json!({ "summary": stats, "dry_run": args.dry_run }))?,
        Style::Quiet => {}
        Style::Table => {
            let verb = if args.dry_run { "would remove" } else { "removed" };
            writeln!(out, "\n{verb} {} snapshots, kept {} (in {} groups)", stats.removed, stats.kept, stats.groups)?;
            if stats.removed > 0 && !args.dry_run && prune_opts.is_none() {
                writeln!(out, "the data only they used stays in the repository until `cairn prune`")?;
            }
        }
    }
    match prune_opts {
        Some(opts) => {
            if style == Style::Table {
                writeln!(out)?;
            }
            super::prune::run_on(cli, env, &repo, &opts, out, err)
        }
        None => Ok(EXIT_OK),
    }
}
