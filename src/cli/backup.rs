//! `cairn backup`: thin over [`crate::ops::backup`]: options into [`BackupOptions`] (the
//! selection rules, the paths of `--files-from`), progress and the summary out.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{human, init, lock_options, open_with, parse_local_time, password, print_problems, remote_line};
use super::{repo_path, Cli, Env, EXIT_OK, EXIT_PARTIAL};
use crate::budget::parse_size;
use crate::ops::backup::{self, BackupOptions, Marker, ParentChoice, Selection};
use crate::pattern::Patterns;

/// `cairn backup` arguments.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up.
    #[arg(
        value_name = "PATH",
        required_unless_present_any = ["files_from", "files_from_verbatim", "files_from_raw", "stdin"]
    )]
    paths: Vec<PathBuf>,
    /// Back up standard input as one file, named by --stdin-filename
    /// (`pg_dump db | cairn backup --stdin --stdin-filename db.sql`).
    #[arg(long, conflicts_with_all = ["files_from", "files_from_verbatim", "files_from_raw", "stdin_from_command"])]
    stdin: bool,
    /// The file's name (or path) in the snapshot, with --stdin or --stdin-from-command.
    #[arg(long, value_name = "NAME", default_value = "stdin")]
    stdin_filename: PathBuf,
    /// Run the command given as the PATH arguments (after `--`) and back up its output
    /// as one file; if it exits with an error, no snapshot is saved.
    #[arg(long, conflicts_with_all = ["files_from", "files_from_verbatim", "files_from_raw"])]
    stdin_from_command: bool,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Host name to record [default: this machine's].
    #[arg(long)]
    host: Option<String>,
    /// Snapshot to compare against for change detection [default: the newest with the same host and paths].
    #[arg(long, value_name = "SNAPSHOT", conflicts_with = "no_parent")]
    parent: Option<String>,
    /// Compare against no snapshot (read every file).
    #[arg(long)]
    no_parent: bool,
    /// Read every file even if its metadata is unchanged.
    #[arg(long)]
    force: bool,
    /// zstd compression level, 0 for none [default: the repository's, 3].
    #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(i32).range(0..=22))]
    compression: Option<i32>,
    /// Record access times (off by default: they change whenever a file is read, so
    /// every backup would store new directory listings).
    #[arg(long)]
    atime: bool,
    /// The snapshot's time instead of now: `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DD`,
    /// local time (as restic's --time).
    #[arg(long, value_name = "TIME")]
    time: Option<String>,
    /// Create the repository first if it does not exist.
    #[arg(long)]
    init: bool,
    /// (with --init) Use trivially cheap key derivation. For tests only.
    #[arg(long, hide = true)]
    insecure_test_kdf: bool,
    #[command(flatten)]
    exclude: ExcludeArgs,
    /// Leave out directories holding a file NAME (starting with HEADER, if given), with
    /// everything in them (repeatable).
    #[arg(long, value_name = "NAME[:HEADER]")]
    exclude_if_present: Vec<String>,
    /// Leave out directories holding a valid CACHEDIR.TAG (https://bford.info/cachedir/).
    #[arg(long)]
    exclude_caches: bool,
    /// Leave out files larger than SIZE (e.g. 500M, 2G; plain numbers are bytes).
    #[arg(long, value_name = "SIZE")]
    exclude_larger_than: Option<String>,
    /// Stay on the filesystems of the sources: other filesystems mounted below them are
    /// kept as empty directories.
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Read, chunk and compress as a backup does, write nothing, and say what the
    /// repository would grow by.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Also back up the paths listed in FILE, one per line: `#` comments and empty lines
    /// skipped, shell globs expanded (repeatable; `-` is standard input).
    #[arg(long, value_name = "FILE")]
    files_from: Vec<PathBuf>,
    /// As --files-from, but every line is a path as it is: no comments, no globs.
    #[arg(long, value_name = "FILE")]
    files_from_verbatim: Vec<PathBuf>,
    /// As --files-from-verbatim, but the paths are separated by NUL bytes (`find -print0`).
    #[arg(long, value_name = "FILE")]
    files_from_raw: Vec<PathBuf>,
}

/// `--exclude` and its kin (restic's patterns: README, "Choosing what to back up").
#[derive(clap::Args, Debug)]
pub struct ExcludeArgs {
    /// Leave out what matches PATTERN (repeatable): restic's patterns, `*`, `?`,
    /// `[..]` within a component, `**` across them, a leading `/` anchors at the
    /// root, a leading `!` takes paths back (the last matching pattern decides).
    #[arg(short = 'e', long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// As --exclude, ignoring case.
    #[arg(long, value_name = "PATTERN")]
    iexclude: Vec<String>,
    /// Read --exclude patterns from FILE (one per line; `#` comments; $VAR expanded).
    #[arg(long, value_name = "FILE")]
    exclude_file: Vec<PathBuf>,
    /// As --exclude-file, ignoring case.
    #[arg(long, value_name = "FILE")]
    iexclude_file: Vec<PathBuf>,
}

impl ExcludeArgs {
    /// The patterns, named `--exclude` and so on in errors.
    pub(super) fn patterns(&self, env: &Env) -> anyhow::Result<Patterns> {
        patterns(env, "exclude", &self.exclude, &self.iexclude, &self.exclude_file, &self.iexclude_file)
    }
}

/// The patterns of `--WHAT`, `--iWHAT`, `--WHAT-file` and `--iWHAT-file` (WHAT is
/// `exclude` or `include`): the files' first, then the command line's (so that a
/// `!PATTERN` given on the command line takes back what a file names). Each bad pattern
/// or unreadable file is an error naming the option and the value.
pub(super) fn patterns(
    env: &Env,
    what: &str,
    plain: &[String],
    icase: &[String],
    files: &[PathBuf],
    ifiles: &[PathBuf],
) -> anyhow::Result<Patterns> {
    let mut p = Patterns::new();
    let var = |k: &str| (env.var)(k);
    for (files, option, ignore_case) in
        [(files, format!("--{what}-file"), false), (ifiles, format!("--i{what}-file"), true)]
    {
        for f in files {
            let text = std::fs::read_to_string(f).with_context(|| format!("{option} {}", f.display()))?;
            p.add_file(&format!("{option} {}:", f.display()), &text, ignore_case, &var)?;
        }
    }
    for (patterns, option, ignore_case) in [(plain, format!("--{what}"), false), (icase, format!("--i{what}"), true)] {
        for pattern in patterns {
            p.add(&option, pattern, ignore_case)?;
        }
    }
    Ok(p)
}

impl BackupArgs {
    /// The selection rules.
    fn selection(&self, env: &Env) -> anyhow::Result<Selection> {
        let mut markers = Vec::new();
        for m in &self.exclude_if_present {
            markers.push(Marker::parse(m).map_err(|e| anyhow::anyhow!("--exclude-if-present {e}"))?);
        }
        if self.exclude_caches {
            markers.push(Marker::cachedir_tag());
        }
        let larger_than = match &self.exclude_larger_than {
            Some(s) => Some(parse_size(s).map_err(|e| anyhow::anyhow!("--exclude-larger-than {e}"))? as u64),
            None => None,
        };
        Ok(Selection {
            exclude: self.exclude.patterns(env)?,
            markers,
            larger_than,
            one_file_system: self.one_file_system,
        })
    }

    /// The paths of `--files-from`, `--files-from-verbatim` and `--files-from-raw`.
    fn listed_paths(&self) -> anyhow::Result<Vec<PathBuf>> {
        use std::os::unix::ffi::OsStrExt;
        let read = |option: &str, f: &Path| -> anyhow::Result<Vec<u8>> {
            let mut buf = Vec::new();
            let r = if f == Path::new("-") {
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            } else {
                std::fs::File::open(f).and_then(|mut file| std::io::Read::read_to_end(&mut file, &mut buf))
            };
            r.with_context(|| format!("{option} {}", f.display()))?;
            Ok(buf)
        };
        let path = |b: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(b));
        let mut out = Vec::new();
        for f in &self.files_from {
            let text = read("--files-from", f)?;
            let text = String::from_utf8(text)
                .map_err(|_| anyhow::anyhow!("--files-from {}: not UTF-8 text (use --files-from-raw)", f.display()))?;
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                let found = crate::pattern::glob_paths(line)?;
                // A glob that matches nothing is reported as a listed path that does
                // not exist (a warning, exit code 3), as restic warns.
                if found.is_empty() {
                    out.push(PathBuf::from(line));
                }
                out.extend(found);
            }
        }
        for f in &self.files_from_verbatim {
            let text = read("--files-from-verbatim", f)?;
            let lines = text.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
            out.extend(lines.filter(|l| !l.is_empty()).map(path));
        }
        for f in &self.files_from_raw {
            out.extend(read("--files-from-raw", f)?.split(|b| *b == 0).filter(|l| !l.is_empty()).map(path));
        }
        Ok(out)
    }
}

/// A command's standard output, read to its end; then the command must have exited
/// with success, or the read fails (and so does the backup).
struct CommandOutput {
    child: std::process::Child,
    out: std::process::ChildStdout,
    name: String,
}

impl CommandOutput {
    fn spawn(argv: &[PathBuf]) -> anyhow::Result<CommandOutput> {
        let (prog, rest) =
            argv.split_first().ok_or_else(|| anyhow::anyhow!("--stdin-from-command: no command given"))?;
        let name = prog.display().to_string();
        let mut child = std::process::Command::new(prog)
            .args(rest)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("--stdin-from-command {name}: {e}"))?;
        let out = child.stdout.take().ok_or_else(|| anyhow::anyhow!("--stdin-from-command {name}: no output"))?;
        Ok(CommandOutput { child, out, name })
    }
}

impl std::io::Read for CommandOutput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.out.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let status = self.child.wait()?;
            if !status.success() {
                return Err(std::io::Error::other(format!("the command {} failed ({status})", self.name)));
            }
        }
        Ok(n)
    }
}

/// Run `cairn backup`.
pub fn run(
    cli: &Cli,
    env: &Env,
    args: &BackupArgs,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let time_ns = args.time.as_deref().map(parse_local_time).transpose()?;
    let select = args.selection(env)?;
    let listed_paths = args.listed_paths()?;
    let path = repo_path(cli, env)?;
    let create = args.init && !path.join("config").exists();
    // Asked once, even when the repository is created first.
    let pw = password(cli, env, create)?;
    if create {
        init(cli, env, args.insecure_test_kdf, &pw, out)?;
    }
    let repo = open_with(cli, env, &pw)?;
    print_problems(&repo, err);
    let parent = match (&args.parent, args.no_parent) {
        (_, true) => ParentChoice::None,
        (Some(p), _) => ParentChoice::Id(repo.resolve_snapshot(p)?.0),
        (None, false) => ParentChoice::Auto,
    };
    let opts = BackupOptions {
        paths: args.paths.clone(),
        tags: args.tags.clone(),
        host: args.host.clone(),
        parent,
        force: args.force,
        compression: args.compression,
        atime: args.atime,
        time_ns,
        // A backup always locks: it must know no prune runs beside it.
        lock: crate::repo::lock::LockOptions { skip_shared: false, ..lock_options(cli)? },
        select,
        listed_paths,
        dry_run: args.dry_run,
    };
    let reporter = BackupReporter {
        shown: super::progress::Shown::new(cli, Some(err)),
        status: if cli.json && !cli.quiet { Some(std::sync::Mutex::new(&mut *out)) } else { None },
        quiet: cli.quiet,
        expected: std::sync::atomic::AtomicBool::new(false),
    };
    let r = if args.stdin {
        let mut input = std::io::stdin();
        if !args.paths.is_empty() {
            anyhow::bail!("--stdin takes no paths (give the file's name with --stdin-filename)");
        }
        let stream = backup::Stream { path: args.stdin_filename.clone(), reader: &mut input };
        backup::backup_stream(&repo, &BackupOptions { paths: Vec::new(), ..opts }, stream, &reporter, env.cancel)
    } else if args.stdin_from_command {
        let mut cmd = CommandOutput::spawn(&args.paths)?;
        let stream = backup::Stream { path: args.stdin_filename.clone(), reader: &mut cmd };
        backup::backup_stream(&repo, &BackupOptions { paths: Vec::new(), ..opts }, stream, &reporter, env.cancel)
    } else {
        backup::backup(&repo, &opts, &reporter, env.cancel)
    };
    reporter.shown.clear();
    drop(reporter);
    let r = r?;
    let remote = repo.backend().is_remote().then(crate::backend::s3::traffic);
    print_backup(cli, &r, remote, out)?;
    Ok(if r.snapshot.summary.warnings > 0 { EXIT_PARTIAL } else { EXIT_OK })
}

/// On a terminal, the progress line shows bytes done, the rate and the file being read:
/// with a parent, as a bar against the parent's size (so an ETA); without, a spinner.
struct BackupReporter<'e, 'o> {
    /// Standard error, and the progress line on a terminal.
    shown: super::progress::Shown<'e>,
    /// With --json: status lines go to standard output, as restic's.
    status: Option<std::sync::Mutex<&'o mut (dyn Write + Send)>>,
    quiet: bool,
    /// Whether the bar has been given the parent's size.
    expected: std::sync::atomic::AtomicBool,
}

impl backup::Report for BackupReporter<'_, '_> {
    fn note(&self, path: &Path, message: &str) {
        if !self.quiet {
            self.shown.say(&format!("note: {}: {message}", path.display()));
        }
    }
    fn warn(&self, path: &Path, message: &str) {
        self.shown.say(&format!("warning: {}: {message}", path.display()));
    }
    fn progress(&self, p: &backup::Progress<'_>) {
        if let Some(bar) = self.shown.bar() {
            if let Some(total) = p.expected_bytes.filter(|t| *t > 0) {
                if !self.expected.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    bar.set_length(total);
                    bar.set_style(super::progress::style(crate::progress::Unit::Bytes, true));
                }
            }
            bar.set_position(p.bytes_done);
            bar.set_message(format!("{} files, {} read  {}", p.files, human(p.bytes_read), p.current.display()));
        }
        if let Some(out) = &self.status {
            let v = serde_json::json!({
                "message_type": "status", "files_done": p.files, "bytes_done": p.bytes_done,
                "bytes_read": p.bytes_read, "total_bytes": p.expected_bytes,
                "current_files": [p.current.to_string_lossy()],
            });
            let _ = writeln!(out.lock().unwrap_or_else(|p| p.into_inner()), "{v}");
        }
    }
}

fn print_backup(
    cli: &Cli,
    r: &backup::BackupResult,
    remote: Option<crate::backend::Traffic>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let s = &r.snapshot.summary;
    if cli.json {
        let mut v = serde_json::json!({
            "message_type": "summary",
            "snapshot_id": r.id.to_hex(),
            "parent": r.parent.map(|p| p.to_hex()),
            "summary": s,
            "remote": remote,
        });
        if let Some(g) = &r.dry_run {
            v["dry_run"] = true.into();
            v["growth"] = serde_json::to_value(g)?;
            v["growth"]["total"] = g.total().into();
        }
        writeln!(out, "{v}")?;
        return Ok(());
    }
    if cli.quiet {
        return Ok(());
    }
    if let Some(p) = r.parent {
        writeln!(out, "using parent snapshot {}", p.short())?;
    }
    writeln!(out, "Files:  {} new, {} changed, {} unchanged", s.files_new, s.files_changed, s.files_unchanged)?;
    writeln!(out, "Dirs:   {}    Other: {}", s.dirs, s.others)?;
    writeln!(
        out,
        "Read {} of {} in {:.2} s; {} {} to the repository ({} blobs)",
        human(s.bytes_read),
        human(s.total_bytes),
        s.duration_ms as f64 / 1000.0,
        if r.dry_run.is_some() { "would add" } else { "added" },
        human(s.bytes_added),
        s.blobs_added
    )?;
    writeln!(out, "Peak memory {}", human(s.peak_rss))?;
    if let Some(t) = &remote {
        writeln!(out, "{}", remote_line(t))?;
    }
    if s.warnings > 0 {
        writeln!(out, "{} sources could not be read completely (see warnings above)", s.warnings)?;
    }
    match &r.dry_run {
        Some(g) => writeln!(
            out,
            "Dry run, nothing written: the repository would grow by {} (packs {}, index {}, snapshot {})",
            human(g.total()),
            human(g.packs),
            human(g.index),
            human(g.snapshot)
        )?,
        None => writeln!(out, "snapshot {} saved", r.id.short())?,
    }
    Ok(())
}
