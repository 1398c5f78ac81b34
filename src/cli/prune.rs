//! `cairn prune` (and `forget --prune`): thin over [`crate::ops::prune`]. Phases and
//! counts go to stderr as they happen; the plan and the result to stdout, as text or one
//! JSON object.

use std::io::Write;
use std::time::Instant;

use super::{human, lock_options, print_problems, Cli, Env, EXIT_OK};
use crate::ops::prune::{self, MaxUnused, PruneOptions, PruneStats};
use crate::repo::Repository;

/// How much prune repacks: shared by `cairn prune` and `cairn forget --prune`.
#[derive(clap::Args, Debug)]
pub struct PruneFlags {
    /// Tolerate this much unused space: a share of the repository (`5%`), a size
    /// (`2G`), or `unlimited` (only delete packs with nothing used; never repack).
    #[arg(long, value_name = "LIMIT", default_value = "5%", allow_hyphen_values = true)]
    max_unused: String,
    /// Repack packs of at most SIZE in all this run (e.g. `10G`); the rest waits.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    max_repack_size: Option<String>,
}

/// `cairn prune` arguments.
#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    flags: PruneFlags,
    /// Show what would be deleted and repacked; change nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
}

impl PruneFlags {
    /// The options these flags give, checked before the repository is opened.
    pub(super) fn options(&self, cli: &Cli, dry_run: bool) -> anyhow::Result<PruneOptions> {
        let max_unused = MaxUnused::parse(&self.max_unused).map_err(|e| anyhow::anyhow!("--max-unused {e}"))?;
        let max_repack_size = match &self.max_repack_size {
            Some(s) => Some(crate::budget::parse_size(s).map_err(|e| anyhow::anyhow!("--max-repack-size {e}"))? as u64),
            None => None,
        };
        Ok(PruneOptions { dry_run, max_unused, max_repack_size, lock: lock_options(cli)? })
    }
}

/// Run `cairn prune`.
pub(super) fn run(
    cli: &Cli,
    env: &Env,
    args: &PruneArgs,
    out: &mut dyn Write,
    err: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let opts = args.flags.options(cli, args.dry_run)?;
    let repo = super::open(cli, env)?;
    run_on(cli, env, &repo, &opts, out, err)
}

/// Prune `repo` (already open: `forget --prune` shares it) and print the outcome.
pub(super) fn run_on(
    cli: &Cli,
    env: &Env,
    repo: &Repository,
    opts: &PruneOptions,
    out: &mut dyn Write,
    err: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    let start = Instant::now();
    let result = super::progress::showing(cli, env, true, Some(&mut *err), |_| prune::prune(repo, opts, env.cancel));
    print_problems(repo, err);
    let s = result?;
    if cli.json {
        writeln!(out, "{}", serde_json::json!({ "summary": s, "dry_run": opts.dry_run }))?;
    } else if !cli.quiet {
        print_summary(out, &s, opts.dry_run, start.elapsed().as_secs_f64())?;
    }
    Ok(EXIT_OK)
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn print_summary(out: &mut dyn Write, s: &PruneStats, dry_run: bool, secs: f64) -> std::io::Result<()> {
    if s.config_upgraded {
        writeln!(out, "upgraded the repository config to version 2 (every client takes locks; cairn 0.1 refuses it)")?;
    }
    writeln!(
        out,
        "{} snapshots use {} blobs; {} packs, {}: {} used, {} unused in packs still used",
        s.snapshots,
        s.reachable_blobs,
        s.packs,
        human(s.pack_bytes),
        human(s.used_bytes),
        human(s.unused_bytes),
    )?;
    if s.duplicate_entries > 0 {
        writeln!(out, "{} blobs are stored twice (the second copy counts as unused)", s.duplicate_entries)?;
    }
    let (del, rep) = if dry_run { ("would delete", "would repack") } else { ("deleted", "repacked") };
    let unindexed = if s.unindexed_packs > 0 {
        format!(" ({} of them left unindexed by interrupted backups)", s.unindexed_packs)
    } else {
        String::new()
    };
    writeln!(out, "{del} {} packs with nothing used, {}{unindexed}", s.packs_deleted, human(s.deleted_bytes))?;
    writeln!(
        out,
        "{rep} {} packs, {}{}",
        s.packs_repacked,
        human(s.repacked_bytes),
        if dry_run { String::new() } else { format!(": {} blobs into {}", s.blobs_repacked, human(s.repack_written)) }
    )?;
    if s.repack_deferred > 0 {
        writeln!(
            out,
            "left {} packs worth repacking for the next prune (--max-repack-size or the memory budget)",
            s.repack_deferred
        )?;
    }
    if s.missing_unused_packs > 0 {
        writeln!(
            out,
            "{} packs the index names are missing, with nothing used in them: their entries go",
            s.missing_unused_packs
        )?;
    }
    if !dry_run {
        writeln!(out, "rewrote {} index files ({} entries dropped)", s.index_files_rewritten, s.index_entries_dropped)?;
    }
    let after = if dry_run { "after prune" } else { "now" };
    writeln!(
        out,
        "repository {after}: {}, {} unused ({:.1}%)",
        human(s.bytes_after),
        human(s.unused_after),
        share(s.unused_after, s.bytes_after)
    )?;
    if dry_run {
        writeln!(
            out,
            "estimated time to prune: about {:.0} s beyond the {:.1} s this took",
            s.estimated_seconds, secs
        )?;
    } else {
        writeln!(out, "done in {secs:.1} s")?;
    }
    Ok(())
}
