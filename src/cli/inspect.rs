//! Commands that look into snapshots without restoring them: `diff`, `find`, `stats`,
//! `dump` and `cat`. Thin over [`crate::ops`].

use std::io::Write;
use std::path::{Path, PathBuf};

use super::snapshots::FilterArgs;
use super::{human, open, print_problems, split_target, Cli, Env, EXIT_OK};
use crate::format::tree::{Entry, Kind};
use crate::id::{BlobId, FileId};
use crate::ops::diff;
use crate::repo::Repository;

/// `SNAPSHOT[:PATH]` resolved to a snapshot and the entry at the path.
fn resolve_at(repo: &Repository, spec: &str, filter: &FilterArgs) -> anyhow::Result<(FileId, PathBuf, Entry)> {
    let (snap, path) = split_target(spec);
    let (id, s) = crate::ops::snapshots::resolve(repo, snap, &filter.filter())?;
    let entry = crate::ops::restore::resolve(repo, &s.root, Path::new(path))?;
    Ok((id, Path::new("/").join(path), entry))
}

/// The tree of a directory entry, or an error naming what it is instead.
fn dir_tree(spec: &str, e: &Entry) -> anyhow::Result<BlobId> {
    match &e.kind {
        Kind::Dir(id) => Ok(*id),
        _ => anyhow::bail!("{spec}: not a directory"),
    }
}

/// `cairn diff` arguments.
#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The first snapshot: an id (prefix) or `latest`, optionally with a directory in it.
    #[arg(value_name = "SNAPSHOT[:PATH]")]
    first: String,
    /// The second snapshot, the same way.
    #[arg(value_name = "SNAPSHOT[:PATH]")]
    second: String,
    /// Also report entries whose metadata alone changed (mode, owner, mtime, xattrs).
    #[arg(long)]
    metadata: bool,
}

/// Run `cairn diff`: one line per change (restic's `+`, `-`, `M`, `T`, `U`; a
/// directory's path ends in `/`), then the counts; `--json`: one object per line.
pub fn diff(cli: &Cli, env: &Env, args: &DiffArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let repo = open(cli, env)?;
    let none = FilterArgs::default();
    let (a_id, a_path, a) = resolve_at(&repo, &args.first, &none)?;
    let (b_id, _, b) = resolve_at(&repo, &args.second, &none)?;
    let (a_tree, b_tree) = (dir_tree(&args.first, &a)?, dir_tree(&args.second, &b)?);
    print_problems(&repo, err);
    if !cli.json && !cli.quiet {
        writeln!(out, "comparing snapshot {} to {}:\n", a_id.short(), b_id.short())?;
    }
    let mut io_err = None;
    let stats = diff::diff(&repo, &a_tree, &b_tree, &a_path, args.metadata, env.cancel, &mut |p, c, o, n| {
        let is_dir = matches!(n.or(o).map(|e| &e.kind), Some(Kind::Dir(_)));
        let shown = format!("{}{}", p.display(), if is_dir { "/" } else { "" });
        let r = if cli.json {
            let v = serde_json::json!({ "message_type": "change", "path": shown, "modifier": c.modifier() });
            writeln!(out, "{v}")
        } else if cli.quiet {
            Ok(())
        } else {
            writeln!(out, "{:<5}{shown}", c.modifier())
        };
        if let Err(e) = r {
            io_err.get_or_insert(e);
        }
        Ok(())
    })?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    if cli.json {
        let mut v = serde_json::to_value(stats)?;
        v["message_type"] = "statistics".into();
        v["source_snapshot"] = a_id.to_hex().into();
        v["target_snapshot"] = b_id.to_hex().into();
        writeln!(out, "{v}")?;
    } else if !cli.quiet {
        let line = |name: &str, c: &diff::Counts, changed: bool| {
            let changed = if changed { format!(", {:>5} changed", c.changed) } else { String::new() };
            format!("{name:<8}{:>5} new, {:>5} removed{changed}", c.added, c.removed)
        };
        writeln!(out, "\n{}", line("Files:", &stats.files, true))?;
        writeln!(out, "{}", line("Dirs:", &stats.dirs, false))?;
        writeln!(out, "{}", line("Others:", &stats.others, true))?;
        writeln!(out, "Added:   {}\nRemoved: {}", human(stats.bytes_added), human(stats.bytes_removed))?;
    }
    Ok(EXIT_OK)
}
