//! The command line: parse arguments, build library options, call one library function,
//! print. The only module that reads the environment, prints or picks exit codes.
//!
//! Exit codes (restic's): 0 ok, 1 error, 3 backup done but some sources unreadable,
//! 11 locked by another client, 12 wrong password, 130 interrupted.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::crypto::KdfParams;
use crate::error::Error;
use crate::format::tree::{Entry, Kind};
use crate::ops::check::{self, CheckOptions};
use crate::repo::{InitOptions, Repository};

mod backup;
mod forget;
mod inspect;
mod key;
mod mount;
mod progress;
mod prune;
mod repair;
mod restore;
mod snapshots;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: an error.
pub const EXIT_ERROR: i32 = 1;
/// Exit code: backup finished but some sources could not be read.
pub const EXIT_PARTIAL: i32 = 3;
/// Exit code: wrong password.
pub const EXIT_WRONG_PASSWORD: i32 = 12;
/// Exit code: the repository is locked by another client (restic's 11).
pub const EXIT_LOCKED: i32 = 11;
/// Exit code: interrupted by SIGINT or SIGTERM.
pub const EXIT_INTERRUPTED: i32 = 130;

const AFTER_HELP: &str = "\
Environment:
  CAIRN_REPO           repository path (instead of -r)
  CAIRN_PASSWORD       repository password
  CAIRN_PASSWORD_FILE  file holding the password (instead of --password-file)
  CAIRN_MEMORY         memory budget (instead of --memory)
  CAIRN_CACHE_DIR      local cache directory (instead of --cache-dir)

Without -r or CAIRN_REPO, cairn uses $XDG_DATA_HOME/cairn/repo
(~/.local/share/cairn/repo).

Exit codes: 0 ok, 1 error, 3 backup finished but some sources could not be read,
11 the repository is locked by another client, 12 wrong password, 130 interrupted.";

/// cairn: deduplicating, encrypted backups whose memory stays inside a budget.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Repository directory [default: $CAIRN_REPO, else $XDG_DATA_HOME/cairn/repo]
    #[arg(short = 'r', long = "repo", global = true, value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// Read the password from this file (first line) [default: $CAIRN_PASSWORD_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Memory budget for the whole process, e.g. 128M or 1G; at least 64M [default: $CAIRN_MEMORY, else 256M]
    #[arg(long, global = true, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Try key files whose password derivation (Argon2id) needs up to SIZE of memory
    /// [default: half of --memory]. Key files asking for more are not tried: their
    /// parameters are not authenticated, so a planted one could exhaust memory.
    #[arg(long, global = true, value_name = "SIZE")]
    pub max_kdf_memory: Option<String>,
    /// Directory for local caches (the chunk index) [default: $CAIRN_CACHE_DIR, else $XDG_CACHE_HOME/cairn]
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// When another client holds a conflicting lock (a prune, while backing up), retry
    /// for up to DURATION (e.g. 30s, 10m, 2h) instead of failing with exit code 11.
    #[arg(long, global = true, value_name = "DURATION")]
    pub retry_lock: Option<String>,
    /// Take no lock when only reading (restore, check): for a repository on storage
    /// this user cannot write. A prune could then delete data while it is read.
    #[arg(long, global = true)]
    pub no_lock: bool,
    /// Requests to a remote repository (S3) in flight at once: pack uploads of a backup
    /// [default: 4]. Their bytes are charged to --memory, which may allow fewer.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: Option<u16>,
    /// Print results as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors and warnings.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository.
    Init {
        /// Use trivially cheap key derivation. For tests only: it makes the password easy to guess.
        #[arg(long, hide = true)]
        insecure_test_kdf: bool,
    },
    /// Back up files and directories into a new snapshot.
    Backup(Box<backup::BackupArgs>),
    /// List snapshots (oldest first; filtered, grouped, the latest N of each group).
    Snapshots(snapshots::SnapshotsArgs),
    /// Show what changed between two snapshots (or directories in them).
    Diff(inspect::DiffArgs),
    /// Find which snapshots hold paths matching patterns (or a blob or tree), and where.
    Find(inspect::FindArgs),
    /// Write a file of a snapshot to standard output, or a directory as a tar stream.
    Dump(inspect::DumpArgs),
    /// Print a repository object decoded, as JSON: config, snapshot ID, tree ID, index
    /// ID, pack ID, key ID; `blob ID` writes a data blob's bytes.
    Cat(inspect::CatArgs),
    /// Count what snapshots hold: restore size, distinct contents or stored data.
    Stats(inspect::StatsArgs),
    /// Add, remove or set the tags of snapshots.
    Tag(snapshots::TagArgs),
    /// List files in a snapshot, like `ls -l`.
    Ls {
        /// SNAPSHOT[:PATH]: a snapshot id (prefix) or `latest`, optionally with a path inside it.
        #[arg(value_name = "SNAPSHOT[:PATH]")]
        target: String,
        /// List subdirectories recursively.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// With `latest`: the newest snapshot these filters pass.
        #[command(flatten)]
        filter: snapshots::FilterArgs,
    },
    /// Restore a snapshot (or a path inside it) into a directory.
    Restore(Box<restore::RestoreArgs>),
    /// Manage the passwords (key files) that open the repository.
    Key {
        /// What to do.
        #[command(subcommand)]
        action: key::KeyAction,
    },
    /// Verify the repository's structure and, with --read-data, all data.
    Check {
        /// Also decrypt and verify every blob.
        #[arg(long)]
        read_data: bool,
        /// Read and verify only a subset of the packs: part n of m (`2/7`: on day k of a
        /// week, check part k and all packs are read once a week), or a random P% (`5%`).
        #[arg(long, value_name = "n/m|P%", conflicts_with = "read_data")]
        read_data_subset: Option<String>,
    },
    /// Remove snapshots: by id, or those a retention policy does not keep (per group of
    /// host and paths). Their data stays until `prune` (or `--prune`).
    Forget(Box<forget::ForgetArgs>),
    /// Delete the data no snapshot uses: packs with nothing used go, packs mostly
    /// unused are repacked (until at most --max-unused is left), the index is rewritten.
    Prune(prune::PruneArgs),
    /// Remove stale locks: those not refreshed for 30 minutes, or left by a process of
    /// this machine that no longer exists.
    Unlock {
        /// Remove every lock, also those of clients that may still be running.
        #[arg(long)]
        remove_all: bool,
    },
    /// Repair a damaged repository.
    Repair {
        /// What to repair.
        #[command(subcommand)]
        what: repair::RepairWhat,
    },
    /// Print a shell completion script: `cairn completion bash > /etc/bash_completion.d/cairn`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (`cairn man > /usr/local/share/man/man1/cairn.1`), or with
    /// --dir write one page per command into DIR.
    Man {
        /// Write cairn.1 and cairn-COMMAND.1 for each command into DIR.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Browse every snapshot read-only at MOUNTPOINT (until Ctrl-C, SIGTERM or `fusermount3 -u`).
    Mount(mount::MountArgs),
}

/// What the process environment provides; tests construct it directly.
pub struct Env<'a> {
    /// `CAIRN_REPO`.
    pub repo: Option<PathBuf>,
    /// `CAIRN_PASSWORD`.
    pub password: Option<String>,
    /// `CAIRN_PASSWORD_FILE`.
    pub password_file: Option<PathBuf>,
    /// Default repository location.
    pub default_repo: Option<PathBuf>,
    /// Cache root (`CAIRN_CACHE_DIR`, else under `XDG_CACHE_HOME`); `None`: private temp caches.
    pub cache_dir: Option<PathBuf>,
    /// `CAIRN_MEMORY`.
    pub memory: Option<String>,
    /// May we prompt on the terminal?
    pub interactive: bool,
    /// Set by SIGINT/SIGTERM.
    pub cancel: &'a AtomicBool,
    /// S3 credentials and settings (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION` or `AWS_REGION`, `AWS_PROFILE`,
    /// `CAIRN_S3_VIRTUAL_HOST=1`).
    pub s3: crate::backend::S3Env,
    /// Any variable, by name: `$NAME` in pattern files (`--exclude-file`).
    pub var: fn(&str) -> Option<String>,
    /// How far the command has come: given to the repository it opens, shown by
    /// [`progress::showing`].
    pub meter: std::sync::Arc<crate::progress::Meter>,
}

impl<'a> Env<'a> {
    /// Read the real environment.
    pub fn from_process(cancel: &'a AtomicBool) -> Env<'a> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let home_dir = |xdg: &str, fallback: &str| {
            var(xdg).map(PathBuf::from).or_else(|| var("HOME").map(|h| PathBuf::from(h).join(fallback)))
        };
        Env {
            repo: var("CAIRN_REPO").map(PathBuf::from),
            password: var("CAIRN_PASSWORD").map(|p| p.to_string_lossy().into_owned()),
            password_file: var("CAIRN_PASSWORD_FILE").map(PathBuf::from),
            default_repo: home_dir("XDG_DATA_HOME", ".local/share").map(|d| d.join("cairn/repo")),
            cache_dir: var("CAIRN_CACHE_DIR")
                .map(PathBuf::from)
                .or_else(|| home_dir("XDG_CACHE_HOME", ".cache").map(|c| c.join("cairn"))),
            memory: var("CAIRN_MEMORY").map(|m| m.to_string_lossy().into_owned()),
            interactive: std::io::stdin().is_terminal(),
            cancel,
            var: |k| std::env::var(k).ok(),
            meter: Default::default(),
            s3: {
                let s = |k: &str| var(k).map(|v| v.to_string_lossy().into_owned());
                crate::backend::S3Env {
                    access_key_id: s("AWS_ACCESS_KEY_ID"),
                    secret_access_key: s("AWS_SECRET_ACCESS_KEY").map(zeroize::Zeroizing::new),
                    session_token: s("AWS_SESSION_TOKEN").map(zeroize::Zeroizing::new),
                    region: s("AWS_DEFAULT_REGION").or_else(|| s("AWS_REGION")),
                    profile: s("AWS_PROFILE"),
                    virtual_host: s("CAIRN_S3_VIRTUAL_HOST").is_some_and(|v| v == "1"),
                    ..Default::default()
                }
            },
        }
    }
}

/// Run cairn with `args` (including the program name); returns the exit code.
pub fn run(args: Vec<OsString>, env: &Env, out: &mut (dyn Write + Send), err: &mut (dyn Write + Send)) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = if e.use_stderr() { write!(err, "{e}") } else { write!(out, "{e}") };
            return code;
        }
    };
    match dispatch(&cli, env, out, err) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "error: {e:#}");
            exit_code(&e)
        }
    }
}

/// The exit code for an error.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<Error>() {
        Some(Error::WrongPassword { .. }) => EXIT_WRONG_PASSWORD,
        Some(Error::Interrupted) => EXIT_INTERRUPTED,
        Some(Error::Locked(_)) => EXIT_LOCKED,
        _ => EXIT_ERROR,
    }
}

pub(crate) fn repo_path(cli: &Cli, env: &Env) -> anyhow::Result<PathBuf> {
    cli.repo
        .clone()
        .or_else(|| env.repo.clone())
        .or_else(|| env.default_repo.clone())
        .context("no repository given: use -r PATH or set CAIRN_REPO")
}

pub(crate) fn password(cli: &Cli, env: &Env, confirm: bool) -> anyhow::Result<zeroize::Zeroizing<String>> {
    if let Some(f) = cli.password_file.as_ref().or(env.password_file.as_ref()) {
        let s = std::fs::read_to_string(f).with_context(|| format!("reading password file {}", f.display()))?;
        return Ok(zeroize::Zeroizing::new(s.lines().next().unwrap_or("").to_string()));
    }
    if let Some(p) = &env.password {
        return Ok(zeroize::Zeroizing::new(p.clone()));
    }
    if !env.interactive {
        anyhow::bail!("no password given: set CAIRN_PASSWORD or CAIRN_PASSWORD_FILE, or use --password-file");
    }
    let p = zeroize::Zeroizing::new(rpassword::prompt_password("enter password for repository: ")?);
    if confirm {
        let again = zeroize::Zeroizing::new(rpassword::prompt_password("enter password again: ")?);
        if *again != *p {
            anyhow::bail!("passwords do not match");
        }
        if p.is_empty() {
            anyhow::bail!("an empty password is not allowed");
        }
    }
    Ok(p)
}

pub(crate) fn open(cli: &Cli, env: &Env) -> anyhow::Result<Repository> {
    let pw = password(cli, env, false)?;
    open_with(cli, env, &pw)
}

pub(crate) fn open_with(cli: &Cli, env: &Env, pw: &str) -> anyhow::Result<Repository> {
    let path = repo_path(cli, env)?;
    // A Ctrl-C at the password prompt is honoured here (handlers catch the signal).
    if env.cancel.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(Error::Interrupted.into());
    }
    let budget = match cli.memory.as_ref().or(env.memory.as_ref()) {
        Some(s) => crate::budget::Budget::parse(s).map_err(|e| anyhow::anyhow!("--memory {e}"))?,
        None => crate::budget::Budget::default(),
    };
    let kdf_limit = match &cli.max_kdf_memory {
        Some(s) => Some(crate::repo::KdfLimit {
            mem_kib: crate::budget::parse_size(s).map_err(|e| anyhow::anyhow!("--max-kdf-memory {e}"))? as u64 / 1024,
        }),
        None => None,
    };
    let opts = crate::repo::OpenOptions {
        cache_dir: cli.cache_dir.clone().or_else(|| env.cache_dir.clone()),
        budget,
        kdf_limit,
        // Forget and prune look up only trees: filters would hold their budget for nothing.
        few_lookups: matches!(cli.command, Command::Forget(_) | Command::Prune(_)),
        s3: crate::backend::S3Env { connections: cli.connections.map_or(0, usize::from), ..env.s3.clone() },
        meter: env.meter.clone(),
    };
    // An index rebuild (a first open, or after a prune elsewhere) shows its progress.
    Ok(progress::showing(cli, env, false, None, |_| Repository::open_with(&path, pw.as_bytes(), &opts))?)
}

/// How this command takes repository locks (`--retry-lock`).
pub(crate) fn lock_options(cli: &Cli) -> anyhow::Result<crate::repo::lock::LockOptions> {
    let mut o = crate::repo::lock::LockOptions { skip_shared: cli.no_lock, ..Default::default() };
    if let Some(s) = &cli.retry_lock {
        o.retry = parse_duration(s).map_err(|e| anyhow::anyhow!("--retry-lock {e}"))?;
    }
    Ok(o)
}

/// Parse `90`, `90s`, `10m` or `2h`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num.parse().map_err(|_| format!("{s}: not a duration (like 30s, 10m or 2h)"))?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => return Err(format!("{s}: unknown unit (use s, m or h)")),
    };
    secs.map(std::time::Duration::from_secs).ok_or_else(|| format!("{s}: too long"))
}

/// Tell the user about damaged files the command had to skip.
pub(crate) fn print_problems(repo: &Repository, err: &mut dyn Write) {
    for p in repo.problems() {
        let _ = writeln!(err, "warning: {p}");
    }
}

pub(crate) fn init(cli: &Cli, env: &Env, cheap: bool, pw: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    // Whatever the source (a prompt, CAIRN_PASSWORD, a password file holding an empty
    // line): a repository must not be made with a password that is no secret.
    anyhow::ensure!(!pw.is_empty(), "an empty password is not allowed");
    let path = repo_path(cli, env)?;
    if env.cancel.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(Error::Interrupted.into());
    }
    let opts = InitOptions {
        kdf: if cheap { KdfParams::INSECURE_FOR_TESTS } else { KdfParams::DEFAULT },
        s3: env.s3.clone(),
        ..InitOptions::default()
    };
    Repository::init(&path, pw.as_bytes(), &opts)?;
    if !cli.quiet {
        writeln!(out, "created cairn repository at {}", path.display())?;
        writeln!(out, "keep the password safe: without it the data cannot be recovered")?;
    }
    Ok(())
}

/// Split `SNAPSHOT[:PATH]`.
pub(crate) fn split_target(s: &str) -> (&str, &str) {
    s.split_once(':').unwrap_or((s, "/"))
}

fn dispatch(cli: &Cli, env: &Env, out: &mut (dyn Write + Send), err: &mut (dyn Write + Send)) -> anyhow::Result<i32> {
    match &cli.command {
        Command::Init { insecure_test_kdf } => {
            init(cli, env, *insecure_test_kdf, &password(cli, env, true)?, out)?;
            Ok(EXIT_OK)
        }
        Command::Backup(args) => backup::run(cli, env, args, out, err),
        Command::Snapshots(args) => snapshots::run(cli, env, args, out, err),
        Command::Diff(args) => inspect::diff(cli, env, args, out, err),
        Command::Find(args) => inspect::find(cli, env, args, out, err),
        Command::Dump(args) => inspect::dump(cli, env, args, out, err),
        Command::Cat(args) => inspect::cat(cli, env, args, out, err),
        Command::Stats(args) => inspect::stats(cli, env, args, out, err),
        Command::Tag(args) => snapshots::run_tag(cli, env, args, out, err),
        Command::Ls { target, recursive, filter } => {
            let repo = open(cli, env)?;
            let (snap, path) = split_target(target);
            let (_, s) = crate::ops::snapshots::resolve(&repo, snap, &filter.filter())?;
            print_problems(&repo, err);
            let mut io_err = None;
            let failed = crate::ops::ls::list(
                &repo,
                &s.root,
                Path::new(path),
                *recursive,
                &mut |p, e| {
                    let line = if cli.json { ls_json(p, e) } else { ls_line(p, e) };
                    if let Err(x) = writeln!(out, "{line}") {
                        io_err.get_or_insert(x);
                    }
                },
                &mut |p, e| {
                    let _ = writeln!(err, "error: {}: {e}", p.display());
                },
            )?;
            if let Some(e) = io_err {
                return Err(e.into());
            }
            if failed > 0 {
                anyhow::bail!("{failed} directories could not be listed (see above)");
            }
            Ok(EXIT_OK)
        }
        Command::Restore(args) => restore::run(cli, env, args, out, err),
        Command::Key { action } => key::run(cli, env, action, out, err),
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "cairn", out);
            Ok(EXIT_OK)
        }
        Command::Man { dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match dir {
                None => clap_mangen::Man::new(cmd).render(out)?,
                Some(d) => {
                    std::fs::create_dir_all(d).with_context(|| format!("--dir {}", d.display()))?;
                    clap_mangen::generate_to(cmd, d).with_context(|| format!("--dir {}", d.display()))?;
                    if !cli.quiet {
                        writeln!(out, "wrote the manual pages into {}", d.display())?;
                    }
                }
            }
            Ok(EXIT_OK)
        }
        Command::Mount(args) => mount::run(cli, env, args, err),
        Command::Repair { what } => repair::run(cli, env, what, out, err),
        Command::Forget(args) => forget::run(cli, env, args, out, err),
        Command::Prune(args) => prune::run(cli, env, args, out, err),
        Command::Unlock { remove_all } => {
            let repo = open(cli, env)?;
            let n = repo.unlock(*remove_all, crate::repo::lock::LockOptions::default().stale)?;
            if cli.json {
                writeln!(out, "{}", serde_json::json!({ "removed": n }))?;
            } else if !cli.quiet {
                writeln!(out, "removed {n} locks")?;
            }
            Ok(EXIT_OK)
        }
        Command::Check { read_data, read_data_subset } => {
            let subset = read_data_subset.as_deref().map(check::Subset::parse).transpose()?;
            let repo = open(cli, env)?;
            let opts = CheckOptions { read_data: *read_data, read_data_subset: subset, lock: lock_options(cli)? };
            let stats = progress::showing(cli, env, false, Some(err), |shown| {
                check::check(&repo, opts, &CheckReporter { shown, quiet: cli.quiet }, env.cancel)
            })?;
            if cli.json {
                writeln!(out, "{}", serde_json::json!(stats))?;
            } else if !cli.quiet {
                writeln!(
                    out,
                    "checked {} snapshots, {} packs, {} index entries, {} trees{}: {}",
                    stats.snapshots,
                    stats.packs,
                    stats.index_entries,
                    stats.trees,
                    if *read_data || subset.is_some() {
                        format!(", {} blobs of {} packs read", stats.blobs_read, stats.packs_read)
                    } else {
                        String::new()
                    },
                    if stats.errors == 0 { "no errors".to_string() } else { format!("{} errors", stats.errors) }
                )?;
            }
            if stats.errors > 0 {
                anyhow::bail!("the repository is damaged: {} errors (see above)", stats.errors);
            }
            Ok(EXIT_OK)
        }
    }
}

struct CheckReporter<'a, 'e> {
    shown: &'a progress::Shown<'e>,
    quiet: bool,
}

impl check::Report for CheckReporter<'_, '_> {
    fn error(&self, message: &str) {
        self.shown.say(&format!("error: {message}"));
    }
    fn note(&self, message: &str) {
        if !self.quiet {
            self.shown.say(&format!("note: {message}"));
        }
    }
}

/// Bytes in binary units, e.g. `12.3 MiB`.
pub fn human(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Parse `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DD` as local time, to Unix nanoseconds.
pub(crate) fn parse_local_time(s: &str) -> anyhow::Result<i64> {
    use chrono::TimeZone;
    let t = s.trim();
    let naive = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").map(|d| d.and_time(chrono::NaiveTime::MIN)))
        .map_err(|_| anyhow::anyhow!("--time {s}: not a time (use YYYY-MM-DD HH:MM:SS or YYYY-MM-DD)"))?;
    let local = chrono::Local
        .from_local_datetime(&naive)
        .earliest()
        .ok_or_else(|| anyhow::anyhow!("--time {s}: no such local time (a clock change skips it)"))?;
    local.timestamp_nanos_opt().ok_or_else(|| anyhow::anyhow!("--time {s}: out of range"))
}

/// Local time of Unix nanoseconds (snapshot times).
pub(crate) fn local_time(ns: i64) -> String {
    local_time_of(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32)
}

/// Local time of seconds + nanoseconds; any i64 works (file times can be far out).
pub(crate) fn local_time_of(sec: i64, nsec: u32) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_opt(sec, nsec)
        .single()
        .map_or_else(|| format!("@{sec}"), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// The line that says what a command exchanged with a remote repository.
pub(crate) fn remote_line(t: &crate::backend::Traffic) -> String {
    format!(
        "Remote: {} requests, {} read, {} written, {} retried",
        t.requests,
        human(t.bytes_read),
        human(t.bytes_written),
        t.retries
    )
}

fn owner(name: &[u8], id: u32) -> String {
    if name.is_empty() {
        id.to_string()
    } else {
        String::from_utf8_lossy(name).into_owned()
    }
}

pub(crate) fn ls_line(p: &Path, e: &Entry) -> String {
    let mut s = format!(
        "{} {:>8} {:>8} {:>12} {} {}",
        crate::ops::ls::mode_string(e),
        owner(&e.user, e.uid),
        owner(&e.group, e.gid),
        e.size,
        local_time_of(e.mtime.sec, e.mtime.nsec),
        p.display()
    );
    if let Kind::Symlink(t) = &e.kind {
        s.push_str(" -> ");
        s.push_str(&String::from_utf8_lossy(t));
    }
    s
}

pub(crate) fn ls_json(p: &Path, e: &Entry) -> String {
    let kind = match e.kind {
        Kind::File(_) => "file",
        Kind::Dir(_) => "dir",
        Kind::Symlink(_) => "symlink",
        Kind::Fifo => "fifo",
        Kind::CharDev(_) => "chardev",
        Kind::BlockDev(_) => "blockdev",
        Kind::Socket => "socket",
    };
    serde_json::json!({
        "path": p.to_string_lossy(), "type": kind, "mode": e.mode, "uid": e.uid, "gid": e.gid,
        "user": String::from_utf8_lossy(&e.user), "group": String::from_utf8_lossy(&e.group),
        "size": e.size, "mtime": e.mtime.sec, "mtime_nsec": e.mtime.nsec,
    })
    .to_string()
}
