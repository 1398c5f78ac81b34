//! `cairn mount`: in the foreground, or in the background (`--daemon`) in a process of
//! its own session that reports back once it serves.
//!
//! The background mount is the same command run again with a hidden flag: the password
//! reaches it whole through a pipe on its stdin (never its arguments or environment),
//! it says `ready` on its stdout once the kernel has the mount (its own confirmation: a
//! mount already at the mount point proves nothing), and its messages go to a log file
//! the user can read afterwards (`--log`, by default `mount.log` in the cache directory):
//! the EIO lines naming a damaged blob and its pack are kept there.

use std::io::{BufRead, Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{human, open_with, password, print_problems, repo_path, Cli, Env, EXIT_OK};

/// `cairn mount` arguments.
#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// An empty directory to mount on.
    pub mountpoint: PathBuf,
    /// Bytes of decrypted chunks to keep, e.g. 64M [default: an eighth of --memory, a
    /// quarter for a remote repository]. Half of it is read ahead of sequential readers.
    #[arg(long, value_name = "SIZE")]
    pub cache_size: Option<String>,
    /// Let other users see the mount (the kernel then enforces the snapshots' modes).
    #[arg(long)]
    pub allow_other: bool,
    /// Serve in the background: return once the mount is up (unmount with
    /// `fusermount3 -u MOUNTPOINT`). Its messages go to the log (see --log).
    #[arg(long)]
    pub daemon: bool,
    /// Append the mount's messages (damaged data it met, with the blob and pack) to FILE
    /// [default with --daemon: mount.log in the cache directory; otherwise stderr].
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Mount even if the mount point is a directory that is not empty (its contents are
    /// hidden while mounted).
    #[arg(long)]
    pub nonempty: bool,
    /// Internal: the background half of --daemon (password whole on stdin, `ready` on
    /// stdout once mounted).
    #[arg(long, hide = true)]
    pub serve_for_parent: bool,
}

/// Run `cairn mount`.
pub(super) fn run(cli: &Cli, env: &Env, args: &MountArgs, err: &mut dyn Write) -> anyhow::Result<i32> {
    crate::mount::check_mountpoint(&args.mountpoint, args.nonempty)?;
    if args.daemon {
        return in_background(cli, env, args, err);
    }
    let pw = if args.serve_for_parent {
        // Everything the parent wrote: a password may hold any byte, newlines too.
        let mut pw = zeroize::Zeroizing::new(Vec::new());
        std::io::stdin().read_to_end(&mut pw).context("reading the password from the parent")?;
        zeroize::Zeroizing::new(String::from_utf8(pw.to_vec()).context("the password is not UTF-8")?)
    } else {
        password(cli, env, false)?
    };
    let mut log: Box<dyn Write + Send> = match &args.log {
        Some(p) => Box::new(open_log(p)?),
        None => Box::new(std::io::stderr()),
    };
    crate::sys::allocator_for_streaming();
    let repo = std::sync::Arc::new(open_with(cli, env, &pw)?);
    drop(pw);
    let budget = repo.budget();
    let cache = match &args.cache_size {
        Some(s) => crate::budget::parse_size(s).map_err(|e| anyhow::anyhow!("--cache-size {e}"))?,
        None => budget.chunk_cache_bytes(repo.backend().is_remote()),
    };
    if cache > budget.0 / 2 {
        anyhow::bail!("--cache-size must be at most half of --memory ({})", human(budget.0 as u64 / 2));
    }
    print_problems(&repo, &mut log);
    let nodes = budget.node_cache_bytes();
    let vfs = crate::vfs::Vfs::new(repo.clone(), cache, nodes, (crate::sys::euid(), crate::sys::egid()))?;
    if !cli.quiet && !args.serve_for_parent {
        writeln!(
            err,
            "serving {} read-only at {} (Ctrl-C or `fusermount3 -u` to unmount)",
            repo.path().display(),
            args.mountpoint.display()
        )?;
    }
    let opts = crate::mount::MountOptions { allow_other: args.allow_other, threads: 4 };
    let serve_for_parent = args.serve_for_parent;
    crate::mount::mount(vfs, &args.mountpoint, &opts, env.cancel, log, &mut || {
        if serve_for_parent {
            // The parent waits for this line; nothing else is written to stdout.
            let mut out = std::io::stdout();
            let _ = out.write_all(b"ready\n").and_then(|()| out.flush());
        }
    })?;
    Ok(EXIT_OK)
}

/// Open a log file for appending, creating it (and its directory) if needed.
fn open_log(p: &Path) -> anyhow::Result<std::fs::File> {
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(p)
        .with_context(|| format!("log file {}", p.display()))
}

/// Where a background mount logs without `--log`: `mount.log` in the cache directory
/// (`--cache-dir`, `CAIRN_CACHE_DIR` or the XDG one). Never a predictable name in a
/// shared temp directory, where another user could have put a symlink.
fn default_log(cli: &Cli, env: &Env) -> anyhow::Result<PathBuf> {
    let dir = cli.cache_dir.as_ref().or(env.cache_dir.as_ref());
    dir.map(|d| d.join("mount.log")).context("no cache directory to keep the mount's log in: give --log FILE")
}

/// `--daemon`: start the mount in a process of its own session and return once it says
/// it serves, or with its error (and its exit code).
fn in_background(cli: &Cli, env: &Env, args: &MountArgs, err: &mut dyn Write) -> anyhow::Result<i32> {
    let pw = password(cli, env, false)?;
    let at = std::fs::canonicalize(&args.mountpoint)
        .with_context(|| format!("mount point {}", args.mountpoint.display()))?;
    let log_path = match &args.log {
        Some(p) => std::path::absolute(p).unwrap_or_else(|_| p.clone()),
        None => default_log(cli, env)?,
    };
    let mut log = open_log(&log_path)?;
    let start = log.seek(std::io::SeekFrom::End(0))?;
    let mut cmd = std::process::Command::new(std::env::current_exe().context("finding the cairn binary")?);
    cmd.arg("--repo").arg(repo_path(cli, env)?);
    if let Some(m) = cli.memory.as_ref().or(env.memory.as_ref()) {
        cmd.args(["--memory", m]);
    }
    if let Some(m) = &cli.max_kdf_memory {
        cmd.args(["--max-kdf-memory", m]);
    }
    if let Some(d) = cli.cache_dir.as_ref().or(env.cache_dir.as_ref()) {
        cmd.arg("--cache-dir").arg(d);
    }
    cmd.arg("mount").arg(&at).arg("--serve-for-parent").arg("--log").arg(&log_path);
    if let Some(c) = &args.cache_size {
        cmd.args(["--cache-size", c]);
    }
    if args.allow_other {
        cmd.arg("--allow-other");
    }
    if args.nonempty {
        cmd.arg("--nonempty");
    }
    // The daemon must not keep the caller's working directory (and its filesystem) busy.
    cmd.current_dir("/");
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(log.try_clone().context("the mount's log")?);
    crate::sys::in_new_session(&mut cmd);
    let mut child = cmd.spawn().context("starting the mount")?;
    {
        // The password whole, then end of file: the child reads to it.
        let mut stdin = child.stdin.take().context("the mount's stdin")?;
        stdin.write_all(pw.as_bytes())?;
    }
    drop(pw);
    let mut said = String::new();
    std::io::BufReader::new(child.stdout.take().context("the mount's stdout")?).read_line(&mut said)?;
    if said.trim_end() == "ready" {
        if !cli.quiet {
            writeln!(
                err,
                "serving at {} in the background (pid {}); `fusermount3 -u {}` unmounts; log: {}",
                at.display(),
                child.id(),
                at.display(),
                log_path.display()
            )?;
        }
        return Ok(EXIT_OK);
    }
    // It ended without serving: its own messages say why (the last 64 KiB of what it
    // logged: the fatal error comes last), and its exit code stands.
    let status = child.wait()?;
    let end = log.seek(std::io::SeekFrom::End(0))?;
    log.seek(std::io::SeekFrom::Start(start.max(end.saturating_sub(64 << 10))))?;
    let mut bytes = Vec::new();
    log.take(64 << 10).read_to_end(&mut bytes)?;
    let msg = String::from_utf8_lossy(&bytes);
    let msg = msg.trim_end();
    let msg = msg.strip_prefix("error: ").unwrap_or(msg);
    writeln!(err, "error: the mount exited ({status}) before serving: {msg}")?;
    Ok(status.code().filter(|c| *c != 0).unwrap_or(super::EXIT_ERROR))
}
