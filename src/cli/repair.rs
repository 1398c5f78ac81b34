//! `cairn repair index` and `cairn repair snapshots`: thin over [`crate::ops::repair`].

use std::io::Write;

use super::{open, print_problems, Cli, Env, EXIT_OK};

/// `cairn repair` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum RepairWhat {
    /// Rebuild the index from the pack headers: index every blob no index file lists,
    /// remove damaged index files, drop entries of packs that no longer exist.
    Index {
        /// Drop the entries of missing packs even when most packs are missing (it
        /// refuses by default: the data is then more likely unreachable than lost).
        #[arg(long)]
        force: bool,
    },
    /// Save, for each damaged snapshot, a new one without the damage (unreadable
    /// directories emptied, damaged nodes and missing file content removed), tagged
    /// `repaired`. Run `repair index` first.
    Snapshots {
        /// Snapshots to repair (id prefixes or `latest`) [default: all].
        #[arg(value_name = "SNAPSHOT")]
        snapshots: Vec<String>,
        /// Remove each repaired snapshot's original.
        #[arg(long)]
        forget: bool,
        /// Report what would be done; write nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
        /// Also read and verify every data blob the snapshots use.
        #[arg(long)]
        read_data: bool,
    },
}

/// Run `cairn repair`.
pub(super) fn run(
    cli: &Cli,
    env: &Env,
    what: &RepairWhat,
    out: &mut dyn Write,
    err: &mut (dyn Write + Send),
) -> anyhow::Result<i32> {
    match what {
        RepairWhat::Index { force } => {
            let repo = open(cli, env)?;
            print_problems(&repo, err);
            let stats = crate::ops::repair::repair_index(&repo, *force, &super::lock_options(cli)?, &mut |m| {
                let _ = writeln!(err, "{m}");
            })?;
            if cli.json {
                writeln!(out, "{}", serde_json::json!(stats))?;
            } else if !cli.quiet {
                writeln!(
                    out,
                    "read {} pack headers: indexed {} blobs of {} packs in {} new index files; removed {} \
                 damaged index files, rewrote {} ({} entries of missing packs dropped); {} damaged packs",
                    stats.packs_read,
                    stats.blobs_indexed,
                    stats.packs_indexed,
                    stats.index_files_written,
                    stats.index_files_removed,
                    stats.index_files_rewritten,
                    stats.entries_dropped,
                    stats.packs_damaged
                )?;
            }
            Ok(EXIT_OK)
        }
        RepairWhat::Snapshots { snapshots, forget, dry_run, read_data } => {
            let repo = open(cli, env)?;
            print_problems(&repo, err);
            let ids = snapshots.iter().map(|s| repo.resolve_snapshot(s).map(|(id, _)| id)).collect::<Result<_, _>>()?;
            let opts = crate::ops::repair::RepairSnapshotsOptions {
                snapshots: ids,
                forget: *forget,
                dry_run: *dry_run,
                read_data: *read_data,
                lock: crate::repo::lock::LockOptions { skip_shared: false, ..super::lock_options(cli)? },
            };
            let quiet = cli.quiet;
            let stats = crate::ops::repair::repair_snapshots(&repo, &opts, &mut |m| {
                if !quiet {
                    let _ = writeln!(err, "{m}");
                }
            })?;
            if cli.json {
                writeln!(out, "{}", serde_json::json!(stats))?;
            } else if !cli.quiet {
                let verb = if *dry_run { "would modify" } else { "modified" };
                writeln!(out, "{verb} {} of {} snapshots", stats.snapshots_repaired, stats.snapshots_checked)?;
            }
            Ok(EXIT_OK)
        }
    }
}
