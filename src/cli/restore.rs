//! `cairn restore`: thin over [`crate::ops::restore`].

use std::io::Write;
use std::path::{Path, PathBuf};

use super::backup::{patterns, ExcludeArgs};
use super::{human, lock_options, open, print_problems, remote_line, split_target, Cli, Env, EXIT_OK};
use crate::ops::restore::{self, RestoreOptions};

/// `cairn restore` arguments.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// SNAPSHOT[:PATH]: a snapshot id (prefix) or `latest`, optionally with a path inside it.
    #[arg(value_name = "SNAPSHOT[:PATH]")]
    target_snapshot: String,
    /// Directory to restore into.
    #[arg(short, long, value_name = "DIR")]
    target: PathBuf,
    /// Only restore what matches PATTERN (repeatable), with what is inside it and the
    /// directories on the way: backup's --exclude patterns, matched against paths in
    /// the snapshot.
    #[arg(short = 'i', long, value_name = "PATTERN")]
    include: Vec<String>,
    /// As --include, ignoring case.
    #[arg(long, value_name = "PATTERN")]
    iinclude: Vec<String>,
    /// Read --include patterns from FILE (one per line; `#` comments; $VAR expanded).
    #[arg(long, value_name = "FILE")]
    include_file: Vec<PathBuf>,
    /// As --include-file, ignoring case.
    #[arg(long, value_name = "FILE")]
    iinclude_file: Vec<PathBuf>,
    #[command(flatten)]
    exclude: ExcludeArgs,
    /// With `latest`: the newest snapshot these filters pass.
    #[command(flatten)]
    filter: super::snapshots::FilterArgs,
    /// fsync every restored file and directory before returning.
    #[arg(long)]
    sync: bool,
    /// What to do with what is already in the target: `always` (a file there is
    /// compared chunk by chunk and only what differs is written), `if-changed` (a file of
    /// the same size and mtime is taken as unchanged unread), `if-newer` (only when the
    /// snapshot's is newer), `never`.
    #[arg(long, value_name = "WHEN", default_value = "always")]
    overwrite: String,
    /// Remove what is in the target but not in the snapshot (among the paths the
    /// filters select).
    #[arg(long)]
    delete: bool,
    /// Say what the restore would do (with --verbose, path by path); change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Read every restored file back and check it against the snapshot.
    #[arg(long)]
    verify: bool,
    /// Print each path restored, updated, unchanged, skipped or deleted.
    #[arg(short, long)]
    verbose: bool,
}

/// Run `cairn restore`.
pub fn run(
    cli: &Cli,
    env: &Env,
    args: &RestoreArgs,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let overwrite = restore::Overwrite::parse(&args.overwrite).map_err(|e| anyhow::anyhow!("--overwrite {e}"))?;
    let include = patterns(env, "include", &args.include, &args.iinclude, &args.include_file, &args.iinclude_file)?;
    let exclude = args.exclude.patterns(env)?;
    let target = &args.target;
    let repo = open(cli, env)?;
    let (snap, path) = split_target(&args.target_snapshot);
    let (id, s) = crate::ops::snapshots::resolve(&repo, snap, &args.filter.filter())?;
    print_problems(&repo, err);
    let root = restore::resolve(&repo, &s.root, Path::new(path))?;
    let has_include = !include.is_empty();
    let opts = RestoreOptions {
        target: target.clone(),
        include,
        exclude,
        sync: args.sync,
        lock: lock_options(cli)?,
        overwrite,
        delete: args.delete,
        dry_run: args.dry_run,
        verify: args.verify,
        size_hint: 0,
    };
    // The whole snapshot, unfiltered: its size is known, and the line shows an ETA.
    let whole = path.trim_matches('/').is_empty() && !has_include && opts.exclude.is_empty();
    let size_hint = if whole { s.summary.total_bytes } else { 0 };
    let opts = RestoreOptions { size_hint, ..opts };
    let stats = super::progress::showing(cli, env, false, Some(err), |shown| {
        let reporter =
            RestoreReporter { shown, out: (args.verbose && !cli.json).then_some(std::sync::Mutex::new(&mut *out)) };
        restore::restore(&repo, &root, &Path::new("/").join(path), &opts, &reporter, env.cancel)
    })?;
    let remote = repo.backend().is_remote().then(crate::backend::s3::traffic);
    if cli.json {
        let v = serde_json::json!({
            "snapshot_id": id.to_hex(), "dry_run": args.dry_run, "stats": stats, "remote": remote
        });
        writeln!(out, "{v}")?;
    } else if !cli.quiet {
        writeln!(out, "{}", summary(&id.short(), target, &stats, args.dry_run))?;
        if let Some(t) = &remote {
            writeln!(out, "{}", remote_line(t))?;
        }
    }
    if stats.errors > 0 {
        anyhow::bail!("{} entries could not be restored (see above)", stats.errors);
    }
    if has_include && stats.matched == 0 {
        let given: Vec<String> = (args.include.iter().map(|p| format!("--include {p}")))
            .chain(args.iinclude.iter().map(|p| format!("--iinclude {p}")))
            .chain(args.include_file.iter().map(|f| format!("--include-file {}", f.display())))
            .chain(args.iinclude_file.iter().map(|f| format!("--iinclude-file {}", f.display())))
            .collect();
        anyhow::bail!("nothing in snapshot {} matches {}", id.short(), given.join(" "));
    }
    Ok(EXIT_OK)
}

/// The one-line summary of a restore (or, `dry`, of what it would do); the counts that
/// are zero and say nothing are left out.
fn summary(id: &str, target: &Path, s: &restore::RestoreStats, dry: bool) -> String {
    let mut files = format!("{} files", s.files);
    let mut extra: Vec<String> = Vec::new();
    if s.unchanged > 0 {
        extra.push(format!("{} unchanged", s.unchanged));
    }
    if s.skipped > 0 {
        extra.push(format!("{} skipped", s.skipped));
    }
    if !extra.is_empty() {
        files = format!("{files} ({})", extra.join(", "));
    }
    let (verb, written, deleted) = match dry {
        false => ("restored", "written", "deleted"),
        true => ("would restore", "to write", "to delete"),
    };
    let mut line = format!(
        "{verb} snapshot {id} to {}: {files}, {} dirs, {} other, {} ({} {written})",
        target.display(),
        s.dirs,
        s.others,
        human(s.bytes),
        human(s.written)
    );
    if s.deleted > 0 {
        line += &format!(", {} {deleted}", s.deleted);
    }
    if s.verified > 0 {
        line += &format!(", {} files verified", s.verified);
    }
    line
}

struct RestoreReporter<'a, 'e> {
    shown: &'a super::progress::Shown<'e>,
    /// With `--verbose`: where each path's action goes.
    out: Option<std::sync::Mutex<&'a mut (dyn Write + Send)>>,
}

impl restore::Report for RestoreReporter<'_, '_> {
    fn error(&self, path: &Path, message: &str) {
        self.shown.say(&format!("error: {}: {message}", path.display()));
    }
    fn warn(&self, path: &Path, message: &str) {
        self.shown.say(&format!("warning: {}: {message}", path.display()));
    }
    fn action(&self, path: &Path, what: &str) {
        if let Some(out) = &self.out {
            self.shown.suspend(|| {
                let _ = writeln!(out.lock().unwrap_or_else(|p| p.into_inner()), "{what:<9} {}", path.display());
            });
        }
    }
}
