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

/// `cairn find` arguments.
#[derive(clap::Args, Debug)]
pub struct FindArgs {
    /// What to find: restic's patterns (`*.jpg`, `/home/*/notes`, `**/x`), each matched
    /// against the whole path (a pattern without `/` against the name); with --blob or
    /// --tree, ids.
    #[arg(required = true, value_name = "PATTERN")]
    patterns: Vec<String>,
    /// Only in these snapshots (repeatable; ids, prefixes or `latest`).
    #[arg(short = 's', long = "snapshot", value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Only entries modified at or after TIME (`YYYY-MM-DD[ HH:MM:SS]`, local time).
    #[arg(long, value_name = "TIME")]
    oldest: Option<String>,
    /// Only entries modified at or before TIME.
    #[arg(long, value_name = "TIME")]
    newest: Option<String>,
    /// Ignore case in the patterns.
    #[arg(short = 'i', long)]
    ignore_case: bool,
    /// The arguments are data blob ids: find the files holding them.
    #[arg(long, conflicts_with = "tree")]
    blob: bool,
    /// The arguments are tree ids: find the directories they are.
    #[arg(long)]
    tree: bool,
    /// Print each match like `ls -l`.
    #[arg(short = 'l', long)]
    long: bool,
}

/// Run `cairn find`: per snapshot with matches, a heading and the matching paths;
/// `--json`: one object per match.
pub fn find(cli: &Cli, env: &Env, args: &FindArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    use crate::ops::find::{FindOptions, Finder, Query};
    let ids = |what: &str| -> anyhow::Result<Vec<BlobId>> {
        let parse = |s: &String| crate::id::parse_hex32(s).map(BlobId);
        args.patterns
            .iter()
            .map(|s| parse(s).ok_or_else(|| anyhow::anyhow!("--{what} {s}: not an id (64 hex digits)")))
            .collect()
    };
    let query = if args.blob {
        Query::Blobs(ids("blob")?)
    } else if args.tree {
        Query::Trees(ids("tree")?)
    } else {
        let mut p = crate::pattern::Patterns::new();
        for s in &args.patterns {
            p.add("find", s, args.ignore_case)?;
        }
        Query::Paths(p)
    };
    let time = |option: &str, t: &Option<String>| -> anyhow::Result<Option<i64>> {
        t.as_deref()
            .map(|s| super::parse_local_time(s).map(|ns| ns.div_euclid(1_000_000_000)))
            .transpose()
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().replace("--time", option)))
    };
    let (oldest, newest) = (time("--oldest", &args.oldest)?, time("--newest", &args.newest)?);
    let repo = open(cli, env)?;
    let chosen = crate::ops::snapshots::Chosen::resolve(&repo, &args.snapshots, args.filter.filter())?;
    // Directories without a match, remembered in a 64th of the budget.
    let no_match_bytes = repo.budget().0 / 64;
    let mut finder = Finder::new(&repo, FindOptions { query, oldest, newest, no_match_bytes });
    let mut damaged = 0u64;
    chosen.for_each(&repo, repo.budget().sort_bytes(), &mut |id, snap| {
        let mut first = true;
        let w = |r: std::io::Result<()>| r.map_err(|e| crate::Error::Io { path: "<stdout>".into(), err: e });
        finder.search(
            &snap,
            env.cancel,
            &mut |p, e| {
                if cli.json {
                    let mut v: serde_json::Value = serde_json::from_str(&super::ls_json(p, e)).expect("our own JSON");
                    v["snapshot"] = id.to_hex().into();
                    return w(writeln!(out, "{v}"));
                }
                if std::mem::take(&mut first) && !cli.quiet {
                    let t = super::local_time(snap.time_ns);
                    w(writeln!(out, "Found matching entries in snapshot {} from {t}", id.short()))?;
                }
                let line = if args.long { super::ls_line(p, e) } else { p.display().to_string() };
                w(writeln!(out, "{line}"))
            },
            &mut |p, e| {
                damaged += 1;
                let _ = writeln!(err, "error: snapshot {}: {}: {e}", id.short(), p.display());
            },
        )?;
        if !first && !cli.json {
            w(writeln!(out))?;
        }
        Ok(())
    })?;
    print_problems(&repo, err);
    let s = finder.stats;
    if !cli.json && !cli.quiet {
        writeln!(out, "{} matches in {} snapshots", s.matches, s.snapshots)?;
    }
    if damaged > 0 {
        anyhow::bail!("{damaged} directories could not be read (see above)");
    }
    Ok(EXIT_OK)
}

/// `cairn dump` arguments.
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// SNAPSHOT[:PATH], or SNAPSHOT and PATH apart (as restic's `dump ID PATH`).
    #[arg(value_name = "SNAPSHOT[:PATH]")]
    target: String,
    /// The path in the snapshot (instead of `:PATH`).
    #[arg(value_name = "PATH")]
    path: Option<PathBuf>,
    /// With `latest`: the newest snapshot these filters pass.
    #[command(flatten)]
    filter: FilterArgs,
    /// Write to FILE instead of standard output.
    #[arg(short = 't', long = "target", value_name = "FILE")]
    target_file: Option<PathBuf>,
}

/// Run `cairn dump`.
pub fn dump(cli: &Cli, env: &Env, args: &DumpArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let spec = match &args.path {
        Some(p) if args.target.contains(':') => {
            anyhow::bail!("give the path once: {} or {} {}", args.target, split_target(&args.target).0, p.display())
        }
        Some(p) => format!("{}:{}", args.target, p.display()),
        None => args.target.clone(),
    };
    let repo = open(cli, env)?;
    let (_, path, entry) = resolve_at(&repo, &spec, &args.filter)?;
    print_problems(&repo, err);
    let mut file;
    let mut stdout_lock;
    let w: &mut dyn Write = match &args.target_file {
        Some(f) => {
            file = std::io::BufWriter::new(
                std::fs::File::create(f).map_err(|e| anyhow::anyhow!("--target {}: {e}", f.display()))?,
            );
            &mut file
        }
        None => {
            stdout_lock = std::io::BufWriter::with_capacity(1 << 16, &mut *out);
            &mut stdout_lock
        }
    };
    let mut damaged = 0u64;
    crate::ops::dump::dump(&repo, &entry, &path, w, env.cancel, &mut |p, e| {
        damaged += 1;
        let _ = writeln!(err, "error: {}: {e}", p.display());
    })?;
    w.flush()?;
    if damaged > 0 {
        anyhow::bail!("{damaged} directories could not be read (see above)");
    }
    Ok(EXIT_OK)
}

/// `cairn cat` arguments.
#[derive(clap::Args, Debug)]
pub struct CatArgs {
    /// What: config, snapshot, tree, index, pack, key, lock or blob.
    #[arg(value_name = "TYPE")]
    what: String,
    /// Its id (a unique prefix for files; all 64 hex digits for trees and blobs;
    /// `latest` for a snapshot).
    #[arg(value_name = "ID")]
    id: Option<String>,
}

/// A repository file's id from a unique prefix.
fn file_id(repo: &Repository, dir: crate::backend::Dir, what: &str, spec: &str) -> anyhow::Result<FileId> {
    let spec_l = spec.to_ascii_lowercase();
    anyhow::ensure!(!spec.is_empty(), "cat {what}: no id given");
    let ids: Vec<FileId> =
        repo.backend().list(dir)?.into_iter().filter(|id| id.to_hex().starts_with(&spec_l)).collect();
    match ids.as_slice() {
        [id] => Ok(*id),
        [] => anyhow::bail!("cat {what} {spec}: no such {what}"),
        _ => anyhow::bail!("cat {what} {spec}: the prefix is ambiguous ({} matches)", ids.len()),
    }
}

fn lower<T: std::fmt::Debug>(t: T) -> String {
    format!("{t:?}").to_ascii_lowercase()
}

fn entry_json(e: &Entry) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(&super::ls_json(Path::new(crate::sys::os(&e.name)), e)).expect("our own JSON");
    v["name"] = String::from_utf8_lossy(&e.name).into();
    v.as_object_mut().expect("an object").remove("path");
    match &e.kind {
        Kind::File(crate::format::tree::Content::Inline(cs)) => {
            v["content"] = cs.iter().map(|c| serde_json::json!({ "id": c.id.to_hex(), "size": c.size })).collect();
        }
        Kind::File(crate::format::tree::Content::List(id)) => v["content_list"] = id.to_hex().into(),
        Kind::Dir(id) => v["subtree"] = id.to_hex().into(),
        Kind::Symlink(t) => v["linktarget"] = String::from_utf8_lossy(t).into(),
        Kind::CharDev(d) | Kind::BlockDev(d) => v["device"] = (*d).into(),
        _ => {}
    }
    v["ctime"] = e.ctime.sec.into();
    v["inode"] = e.ino.into();
    v["links"] = e.nlink.into();
    v["xattrs"] = e.xattrs.iter().map(|(n, _)| String::from_utf8_lossy(n).into_owned()).collect();
    v
}

/// Run `cairn cat`.
pub fn cat(cli: &Cli, env: &Env, args: &CatArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    use crate::backend::Dir;
    use crate::format::tree::Node;
    const TYPES: &str = "config, snapshot, tree, index, pack, key, lock or blob";
    if !["config", "snapshot", "tree", "index", "pack", "key", "lock", "blob"].contains(&args.what.as_str()) {
        anyhow::bail!("cat {}: unknown type (use {TYPES})", args.what);
    }
    let id = match (&args.what[..], &args.id) {
        ("config", None) => String::new(),
        ("config", Some(_)) => anyhow::bail!("cat config takes no id"),
        (what, None) => anyhow::bail!("cat {what}: give an id"),
        (_, Some(id)) => id.clone(),
    };
    let blob_id = |what: &str| {
        crate::id::parse_hex32(&id)
            .map(BlobId)
            .ok_or_else(|| anyhow::anyhow!("cat {what} {id}: not an id (64 hex digits)"))
    };
    let repo = open(cli, env)?;
    print_problems(&repo, err);
    let v = match &args.what[..] {
        "config" => {
            let c = repo.config();
            serde_json::json!({
                "version": repo.config_version(), "id": crate::id::hex(&c.repo_id),
                "chunker": { "min": c.chunker.min, "avg": c.chunker.avg, "max": c.chunker.max },
                "pack_size": c.pack_size, "compression": c.compression, "created": c.created,
            })
        }
        "snapshot" => {
            let (id, s) = crate::ops::snapshots::resolve(&repo, &id, &Default::default())?;
            super::snapshots::snapshot_json(&id, &s)
        }
        "tree" => {
            let id = blob_id("tree")?;
            match repo.read_tree(&id)? {
                Node::DirLeaf(es) => serde_json::json!({ "nodes": es.iter().map(entry_json).collect::<Vec<_>>() }),
                Node::DirInterior(cs) => serde_json::json!({ "children": cs.iter().map(|c| serde_json::json!({
                    "first_name": String::from_utf8_lossy(&c.first_name), "id": c.id.to_hex(), "entries": c.entries,
                })).collect::<Vec<_>>() }),
                Node::ListLeaf(cs) => serde_json::json!({ "chunks": cs.iter().map(|c| serde_json::json!({
                    "id": c.id.to_hex(), "size": c.size,
                })).collect::<Vec<_>>() }),
                Node::ListInterior(cs) => serde_json::json!({ "children": cs.iter().map(|c| serde_json::json!({
                    "id": c.id.to_hex(), "bytes": c.bytes, "chunks": c.chunks,
                })).collect::<Vec<_>>() }),
            }
        }
        "index" => {
            let id = file_id(&repo, Dir::Index, "index", &id)?;
            let entries = repo.read_index_file(&id)?;
            serde_json::json!({ "id": id.to_hex(), "blobs": entries.iter().map(|e| serde_json::json!({
                "id": e.id.to_hex(), "type": lower(e.loc.kind), "pack": e.loc.pack.to_hex(), "offset": e.loc.offset,
                "length": e.loc.stored_len, "uncompressed_length": e.loc.raw_len, "compression": lower(e.loc.compression),
            })).collect::<Vec<_>>() })
        }
        "pack" => {
            let id = file_id(&repo, Dir::Data, "pack", &id)?;
            let h = repo.read_pack_header(&id)?;
            serde_json::json!({ "id": id.to_hex(), "blobs": h.blobs.iter().map(|(b, offset)| serde_json::json!({
                "id": b.id.to_hex(), "type": lower(b.kind), "offset": offset, "length": b.stored_len,
                "uncompressed_length": b.raw_len, "compression": lower(b.compression),
            })).collect::<Vec<_>>() })
        }
        "key" => {
            let id = file_id(&repo, Dir::Keys, "key", &id)?;
            let (_, k) = repo.key_files()?.into_iter().find(|(i, _)| *i == id).ok_or_else(|| {
                anyhow::anyhow!("cat key {}: the key file cannot be read (see the warnings)", id.short())
            })?;
            // The salt and the wrapped master key are left out: they are what a password
            // guesser needs, and no tool needs them printed.
            serde_json::json!({ "id": id.to_hex(), "created": k.created, "host": k.host, "user": k.user,
                "kdf": "argon2id", "mem_kib": k.kdf.mem_kib, "iterations": k.kdf.iterations,
                "parallelism": k.kdf.parallelism })
        }
        "lock" => {
            let id = file_id(&repo, Dir::Locks, "lock", &id)?;
            let (_, info) =
                repo.locks()?.into_iter().find(|(i, _)| *i == id).ok_or_else(|| {
                    anyhow::anyhow!("cat lock {}: the lock is gone (its holder finished)", id.short())
                })?;
            let l = info?;
            serde_json::json!({ "id": id.to_hex(), "time": super::local_time(l.time_ns), "time_ns": l.time_ns,
                "exclusive": l.exclusive, "pid": l.pid, "machine": crate::id::hex(&l.machine), "host": l.host,
                "user": l.user, "command": l.command })
        }
        _ => {
            let id = blob_id("blob")?;
            out.write_all(&repo.read_blob(&id, crate::format::BlobKind::Data)?)?;
            return Ok(EXIT_OK);
        }
    };
    writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    Ok(EXIT_OK)
}

/// `cairn stats` arguments.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Snapshots to count (ids, prefixes or `latest`) [default: every snapshot the
    /// filters pass].
    #[arg(value_name = "SNAPSHOT")]
    ids: Vec<String>,
    /// restore-size (files and bytes a restore writes), files-by-contents (distinct file
    /// contents) or raw-data (distinct data blobs as stored, and the compression ratio).
    #[arg(long, value_name = "MODE", default_value = "restore-size")]
    mode: String,
    #[command(flatten)]
    filter: FilterArgs,
}

/// Run `cairn stats`.
pub fn stats(cli: &Cli, env: &Env, args: &StatsArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    use crate::ops::stats::{Mode, Stats};
    let mode = Mode::parse(&args.mode).map_err(|e| anyhow::anyhow!("--mode {e}"))?;
    let repo = open(cli, env)?;
    let chosen = crate::ops::snapshots::Chosen::resolve(&repo, &args.ids, args.filter.filter())?;
    let mut stats = Stats::new(&repo, mode);
    let mut damaged = 0u64;
    chosen.for_each(&repo, repo.budget().sort_bytes() / 4, &mut |id, s| {
        stats.add(&s, env.cancel, &mut |tree, e| {
            damaged += 1;
            let _ = writeln!(err, "error: snapshot {}: tree {}: {e}", id.short(), tree.short());
        })
    })?;
    let r = stats.finish()?;
    print_problems(&repo, err);
    if cli.json {
        writeln!(out, "{}", serde_json::to_string(&r)?)?;
    } else {
        writeln!(out, "Stats in {} mode:", args.mode)?;
        writeln!(out, "     Snapshots processed:  {}", r.snapshots_count)?;
        if mode == Mode::RawData {
            writeln!(out, "        Total Blob Count:  {}", r.total_blob_count)?;
            writeln!(out, " Total Uncompressed Size:  {}", human(r.total_uncompressed_size))?;
            writeln!(out, "              Total Size:  {}", human(r.total_size))?;
            writeln!(out, "       Compression Ratio:  {:.2}x", r.compression_ratio)?;
        } else {
            writeln!(out, "        Total File Count:  {}", r.total_file_count)?;
            writeln!(out, "              Total Size:  {}", human(r.total_size))?;
        }
    }
    if damaged > 0 {
        anyhow::bail!("{damaged} directories could not be read (see above): the counts leave them out");
    }
    Ok(EXIT_OK)
}
