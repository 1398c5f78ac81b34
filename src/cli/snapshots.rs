//! `cairn snapshots` and `cairn tag`, and the snapshot filters other commands share
//! (`--host`, `--tag`, `--path`). Thin over [`crate::ops::snapshots`].

use std::io::Write;
use std::path::PathBuf;

use super::{human, local_time, lock_options, open, print_problems, Cli, Env, EXIT_OK};
use crate::format::snapshot::Snapshot;
use crate::id::FileId;
use crate::ops::snapshots::{self, describe_group, Filter, GroupBy, Order, TagChange};

/// restic's snapshot filters.
#[derive(clap::Args, Debug, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots carrying all of these comma-separated tags (repeatable: any set).
    #[arg(long = "tag", value_name = "TAG[,TAG]")]
    pub tags: Vec<String>,
    /// Only snapshots that include this path (repeatable: all of them).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

impl FilterArgs {
    /// The filter.
    pub fn filter(&self) -> Filter {
        Filter { hosts: self.hosts.clone(), tags: tag_sets(&self.tags), paths: self.paths.clone() }
    }
}

/// `a,b` `c` -> [[a, b], [c]].
pub(super) fn tag_sets(v: &[String]) -> Vec<Vec<String>> {
    v.iter().map(|s| s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect()).collect()
}

/// `cairn snapshots` arguments.
#[derive(clap::Args, Debug)]
pub struct SnapshotsArgs {
    /// Only these snapshots (ids or unique prefixes, or `latest`).
    #[arg(value_name = "SNAPSHOT")]
    ids: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Only the N newest snapshots of each group (of host and paths, without --group-by).
    #[arg(long, value_name = "N")]
    latest: Option<usize>,
    /// List the snapshots group by group: a comma-separated subset of host, paths, tags.
    #[arg(short = 'g', long, value_name = "LIST")]
    group_by: Option<String>,
}

/// Run `cairn snapshots`.
pub fn run(
    cli: &Cli,
    env: &Env,
    args: &SnapshotsArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let explicit = args.group_by.as_deref().map(GroupBy::parse).transpose().map_err(anyhow::Error::msg)?;
    // Without --group-by, one group; --latest alone counts per host and paths, as restic.
    let none = GroupBy { host: false, paths: false, tags: false };
    let group_by = explicit.unwrap_or(if args.latest.is_some() { GroupBy::default() } else { none });
    if args.latest == Some(0) {
        anyhow::bail!("--latest 0: give at least 1");
    }
    let repo = open(cli, env)?;
    let chosen = snapshots::Chosen::resolve(&repo, &args.ids, args.filter.filter())?;
    let select = |id: &FileId, s: &Snapshot| chosen.selects(id, s);
    let mut table =
        Table { out: &mut *out, json: cli.json, grouped: explicit.is_some(), groups: 0, rows: 0, head: false };
    table.start()?;
    let order = if args.latest.is_some() { Order::NewestFirst } else { Order::OldestFirst };
    // A group's N newest wait here to be printed oldest first (N is the user's choice).
    let mut newest: Vec<(FileId, Snapshot)> = Vec::new();
    snapshots::grouped(&repo, &select, group_by, order, repo.budget().sort_bytes(), &mut |at, id, snap| {
        if at.first {
            table.group(&snap, explicit.unwrap_or(none))?;
        }
        match args.latest {
            Some(n) => {
                if newest.len() < n {
                    newest.push((id, snap));
                }
                if at.last {
                    for (id, s) in newest.drain(..).rev() {
                        table.row(&id, &s)?;
                    }
                }
            }
            None => table.row(&id, &snap)?,
        }
        Ok(())
    })?;
    table.finish()?;
    print_problems(&repo, err);
    Ok(EXIT_OK)
}

/// Prints snapshots as they come: a table (a fixed-width row each, so that nothing
/// waits for the widest), or one JSON array (of snapshots, or with --group-by of groups
/// holding theirs).
struct Table<'a> {
    out: &'a mut dyn Write,
    json: bool,
    grouped: bool,
    groups: u64,
    rows: u64,
    /// Whether the current group has printed a row.
    head: bool,
}

impl Table<'_> {
    fn start(&mut self) -> crate::Result<()> {
        if self.json {
            self.put(format_args!("["))?;
        }
        Ok(())
    }

    fn put(&mut self, a: std::fmt::Arguments<'_>) -> crate::Result<()> {
        self.out.write_fmt(a).map_err(|e| crate::Error::Io { path: PathBuf::from("<stdout>"), err: e })
    }

    fn group(&mut self, first: &Snapshot, group_by: GroupBy) -> crate::Result<()> {
        self.groups += 1;
        self.head = false;
        if !self.grouped {
            return Ok(());
        }
        let g = group_by.key(first);
        if self.json {
            let sep = if self.groups > 1 { "]}," } else { "" };
            let key = serde_json::json!({
                "host": g.host, "tags": g.tags,
                "paths": g.paths.as_ref().map(|p| p.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>()),
            });
            self.put(format_args!("{sep}{{\"group_key\":{key},\"snapshots\":["))
        } else {
            let sep = if self.groups > 1 { "\n" } else { "" };
            self.put(format_args!("{sep}snapshots of {}:\n", describe_group(&g)))
        }
    }

    fn row(&mut self, id: &FileId, s: &Snapshot) -> crate::Result<()> {
        let first_of_group = !std::mem::replace(&mut self.head, true);
        self.rows += 1;
        if self.json {
            let sep = if (self.grouped && first_of_group) || self.rows == 1 { "" } else { "," };
            return self.put(format_args!("{sep}{}", snapshot_json(id, s)));
        }
        if first_of_group {
            self.put(format_args!(
                "{:<8}  {:<19}  {:<12}  {:>9}  {:>10}  Paths [Tags]\n{}\n",
                "ID",
                "Time",
                "Host",
                "Files",
                "Size",
                "-".repeat(80)
            ))?;
        }
        let mut paths = s.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        if !s.tags.is_empty() {
            paths = format!("{paths} [{}]", s.tags.join(","));
        }
        self.put(format_args!(
            "{:<8}  {:<19}  {:<12}  {:>9}  {:>10}  {paths}\n",
            id.short(),
            local_time(s.time_ns),
            s.host,
            s.summary.files(),
            human(s.summary.total_bytes)
        ))
    }

    fn finish(&mut self) -> crate::Result<()> {
        if self.json {
            let end = if self.grouped && self.groups > 0 { "]}]" } else { "]" };
            return self.put(format_args!("{end}\n"));
        }
        let groups = if self.grouped { format!(" in {} groups", self.groups) } else { String::new() };
        let rows = self.rows;
        self.put(format_args!("{rows} snapshots{groups}\n"))
    }
}

/// A snapshot as JSON (`snapshots --json`, `tag --json`).
pub(super) fn snapshot_json(id: &FileId, s: &Snapshot) -> serde_json::Value {
    serde_json::json!({
        "id": id.to_hex(), "short_id": id.short(), "time_ns": s.time_ns, "time": local_time(s.time_ns),
        "host": s.host, "user": s.user,
        "paths": s.paths.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>(),
        "tags": s.tags, "parent": s.parent.map(|p| p.to_hex()), "tree": s.root.to_hex(),
        "program": s.program, "summary": s.summary,
    })
}

/// `cairn tag` arguments.
#[derive(clap::Args, Debug)]
pub struct TagArgs {
    /// Snapshots to change (ids, unique prefixes or `latest`) [default: every snapshot
    /// the filters pass].
    #[arg(value_name = "SNAPSHOT")]
    ids: Vec<String>,
    /// Replace the tags with these comma-separated ones (repeatable; `--set ''` removes all).
    #[arg(long, value_name = "TAG[,TAG]", conflicts_with_all = ["add", "remove"])]
    set: Vec<String>,
    /// Add these comma-separated tags (repeatable).
    #[arg(long, value_name = "TAG[,TAG]")]
    add: Vec<String>,
    /// Remove these comma-separated tags (repeatable).
    #[arg(long, value_name = "TAG[,TAG]")]
    remove: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

/// Run `cairn tag`.
pub fn run_tag(cli: &Cli, env: &Env, args: &TagArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let flat = |v: &[String]| tag_sets(v).concat();
    let change = TagChange {
        set: (!args.set.is_empty()).then(|| flat(&args.set)),
        add: flat(&args.add),
        remove: flat(&args.remove),
    };
    if change.set.is_none() && change.add.is_empty() && change.remove.is_empty() {
        anyhow::bail!("nothing to do: give --add, --remove or --set");
    }
    let repo = open(cli, env)?;
    let filter = args.filter.filter();
    let mut ids = Vec::new();
    if args.ids.is_empty() {
        repo.for_each_snapshot(&mut |id, s| {
            if filter.matches(&s) {
                ids.push(id);
            }
            Ok(())
        })?;
    } else {
        for spec in &args.ids {
            ids.push(snapshots::resolve(&repo, spec, &filter)?.0);
        }
    }
    ids.sort();
    ids.dedup();
    let lock = lock_options(cli)?;
    let mut changed = 0;
    for id in &ids {
        if let Some(new) = snapshots::retag(&repo, id, &change, &lock)? {
            changed += 1;
            if cli.json {
                writeln!(out, "{}", serde_json::json!({ "old": id.to_hex(), "new": new.to_hex() }))?;
            } else if !cli.quiet {
                writeln!(out, "snapshot {} is now {}", id.short(), new.short())?;
            }
        }
    }
    print_problems(&repo, err);
    if !cli.quiet && !cli.json {
        writeln!(out, "changed the tags of {changed} of {} snapshots", ids.len())?;
    }
    Ok(EXIT_OK)
}
