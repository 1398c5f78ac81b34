//! `cairn key`: the passwords (key files) that open the repository.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::{local_time_of, open, Cli, Env, EXIT_OK};
use crate::crypto::KdfParams;

/// `cairn key` subcommands.
#[derive(Subcommand, Debug)]
pub enum KeyAction {
    /// Add a password: a new key file wrapping the same master key.
    Add {
        /// Read the new password from this file (first line) instead of prompting.
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        /// Use trivially cheap key derivation. For tests only.
        #[arg(long, hide = true)]
        insecure_test_kdf: bool,
    },
    /// List key files (`*` marks the one the password opened).
    List,
    /// Remove a key file (never the one in use: open with another password for that).
    Remove {
        /// The key file's id or a unique prefix.
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Change the password: a new key file, then the one in use removed.
    Passwd {
        /// Read the new password from this file (first line) instead of prompting.
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        /// Use trivially cheap key derivation. For tests only.
        #[arg(long, hide = true)]
        insecure_test_kdf: bool,
    },
}

/// The new password: from a file, or asked twice on the terminal.
fn new_password(env: &Env, file: &Option<PathBuf>) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let pw = match file {
        Some(f) => zeroize::Zeroizing::new(
            std::fs::read_to_string(f)
                .with_context(|| format!("--new-password-file {}", f.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        ),
        None if env.interactive => {
            let p = zeroize::Zeroizing::new(rpassword::prompt_password("enter the new password: ")?);
            let again = zeroize::Zeroizing::new(rpassword::prompt_password("enter it again: ")?);
            anyhow::ensure!(*p == *again, "passwords do not match");
            p
        }
        None => anyhow::bail!("no new password: use --new-password-file"),
    };
    anyhow::ensure!(!pw.is_empty(), "an empty password is not allowed");
    Ok(pw)
}

/// Run `cairn key ...`.
pub fn run(cli: &Cli, env: &Env, action: &KeyAction, out: &mut dyn Write, _err: &mut dyn Write) -> anyhow::Result<i32> {
    let kdf = |cheap: bool| if cheap { KdfParams::INSECURE_FOR_TESTS } else { KdfParams::DEFAULT };
    match action {
        KeyAction::Add { new_password_file, insecure_test_kdf } => {
            let repo = open(cli, env)?;
            let pw = new_password(env, new_password_file)?;
            let id = repo.add_key(pw.as_bytes(), kdf(*insecure_test_kdf))?;
            if cli.json {
                writeln!(out, "{}", serde_json::json!({ "added": id.to_hex() }))?;
            } else if !cli.quiet {
                writeln!(out, "added key {}", id.short())?;
            }
        }
        KeyAction::List => {
            let repo = open(cli, env)?;
            let current = repo.key_id();
            let keys = repo.key_files()?;
            if cli.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|(id, kf)| {
                        serde_json::json!({
                            "current": *id == current, "id": id.to_hex(), "user": kf.user, "host": kf.host,
                            "created": local_time_of(kf.created, 0), "kdf": "argon2id",
                            "mem_kib": kf.kdf.mem_kib, "iterations": kf.kdf.iterations,
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                for (id, kf) in keys {
                    writeln!(
                        out,
                        "{}{}  {}  {}@{}  argon2id {} MiB x{}",
                        if id == current { "*" } else { " " },
                        id.short(),
                        local_time_of(kf.created, 0),
                        kf.user,
                        kf.host,
                        kf.kdf.mem_kib / 1024,
                        kf.kdf.iterations
                    )?;
                }
            }
        }
        KeyAction::Remove { id } => {
            let repo = open(cli, env)?;
            let spec = id.to_ascii_lowercase();
            let found: Vec<_> = repo
                .backend()
                .list(crate::backend::Dir::Keys)?
                .into_iter()
                .filter(|k| k.to_hex().starts_with(&spec))
                .collect();
            let key = match found.as_slice() {
                [k] => *k,
                [] => anyhow::bail!("key {id}: no such key"),
                _ => anyhow::bail!("key {id}: the prefix is ambiguous ({} matches)", found.len()),
            };
            repo.remove_key(&key)?;
            if !cli.quiet {
                writeln!(out, "removed key {}", key.short())?;
            }
        }
        KeyAction::Passwd { new_password_file, insecure_test_kdf } => {
            let mut repo = open(cli, env)?;
            let pw = new_password(env, new_password_file)?;
            let old = repo.key_id();
            let new = repo.change_password(pw.as_bytes(), kdf(*insecure_test_kdf))?;
            if !cli.quiet {
                writeln!(out, "changed the password: key {} replaces {}", new.short(), old.short())?;
            }
        }
    }
    Ok(EXIT_OK)
}
