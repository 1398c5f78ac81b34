//! The progress line of restore, check, prune and index rebuilds, drawn from the
//! repository's meter ([`crate::progress`]) by a thread that looks ten times a second.
//! (Backup draws its own line from its richer reports: `cli/backup.rs`.)

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Cli, Env};
use crate::progress::{Reading, Unit};

/// What a command running under [`showing`] prints through, so that its lines stay
/// clear of the progress line.
pub struct Shown<'e> {
    err: Option<Mutex<&'e mut (dyn Write + Send)>>,
    bar: Option<indicatif::ProgressBar>,
}

impl<'e> Shown<'e> {
    /// Lines go to `err`; on a terminal (unless `--quiet` or `--json`) there is a
    /// progress line, a spinner of bytes until it is given a style ([`style`]).
    pub fn new(cli: &Cli, err: Option<&'e mut (dyn Write + Send)>) -> Shown<'e> {
        let tty = !cli.quiet && !cli.json && std::io::stderr().is_terminal();
        Shown { err: err.map(Mutex::new), bar: tty.then(new_bar) }
    }

    /// The progress line, if there is one.
    pub fn bar(&self) -> Option<&indicatif::ProgressBar> {
        self.bar.as_ref()
    }

    /// Clear the progress line for good.
    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Run `f` (which prints) with the progress line out of the way.
    pub fn suspend<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Print `line` on standard error, clear of the progress line.
    pub fn say(&self, line: &str) {
        if let Some(err) = &self.err {
            self.suspend(|| {
                let _ = writeln!(err.lock().unwrap_or_else(|p| p.into_inner()), "{line}");
            });
        }
    }
}

/// Run `f` while the repository's meter is shown: on a terminal (unless `--quiet` or
/// `--json`), as an indicatif line, cleared at the end; elsewhere, with `lines`, as a
/// line on `err` when a phase starts and its count every 2 s (prune's log, which
/// scripts/bench times phases by). Under another `showing` of the same meter, `f` just
/// runs.
pub fn showing<T>(
    cli: &Cli,
    env: &Env,
    lines: bool,
    err: Option<&mut (dyn Write + Send)>,
    f: impl FnOnce(&Shown) -> T,
) -> T {
    let has_err = err.is_some();
    let shown = Shown::new(cli, err);
    let tty = shown.bar.is_some();
    let lines = lines && !cli.quiet && !cli.json && !tty && has_err;
    if !(tty || lines) || !env.meter.watch() {
        return f(&shown);
    }
    env.meter.started(); // phases of an earlier command (a test's) are not this one's
    let done = AtomicBool::new(false);
    let r = std::thread::scope(|s| {
        let poller = s.spawn(|| poll(&shown, env, lines, &done));
        let r = f(&shown);
        done.store(true, Ordering::Relaxed);
        poller.thread().unpark();
        r
    });
    env.meter.unwatch();
    shown.clear();
    r
}

/// A progress line on standard error, drawn at most 10 times a second.
fn new_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr_with_hz(10));
    bar.set_style(style(Unit::Bytes, false));
    bar
}

/// How a progress line of `unit` looks: a bar with a rate and an ETA when the total is
/// `known`, else a spinner; the message (the phase, or the file) fills the rest.
pub fn style(unit: Unit, known: bool) -> indicatif::ProgressStyle {
    let template = match (unit, known) {
        (Unit::Bytes, true) => {
            "{elapsed_precise} [{bar:20}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta}) {wide_msg}"
        }
        (Unit::Bytes, false) => "{spinner} {elapsed_precise} {bytes} ({bytes_per_sec}) {wide_msg}",
        (Unit::Items, true) => "{elapsed_precise} [{bar:20}] {pos}/{len} (ETA {eta}) {wide_msg}",
        (Unit::Items, false) => "{spinner} {elapsed_precise} {pos} {wide_msg}",
    };
    indicatif::ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> ")
}

/// Until `done`: draw the meter on the bar, or log its phases.
fn poll(shown: &Shown, env: &Env, lines: bool, done: &AtomicBool) {
    let start = Instant::now();
    let (mut generation, mut last_line) = (u64::MAX, Instant::now());
    loop {
        let stop = done.load(Ordering::Relaxed);
        let r = env.meter.read();
        if let Some(bar) = &shown.bar {
            draw(bar, &r, r.generation != generation);
        }
        if lines {
            for (phase, at) in env.meter.started() {
                if !phase.is_empty() {
                    shown.say(&format!("[{:6.1}s] {phase}", at.duration_since(start).as_secs_f64()));
                    last_line = Instant::now();
                }
            }
            if !stop && !r.phase.is_empty() && r.done > 0 && last_line.elapsed() >= Duration::from_secs(2) {
                shown.say(&format!("[{:6.1}s] {}: {}", start.elapsed().as_secs_f64(), r.phase, r.done));
                last_line = Instant::now();
            }
        }
        generation = r.generation;
        if stop {
            return;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// Show reading `r` on `bar`; `restyle` when its phase is new.
fn draw(bar: &indicatif::ProgressBar, r: &Reading, restyle: bool) {
    if restyle {
        bar.reset();
        bar.set_style(style(r.unit, r.total > 0));
        bar.set_length(r.total);
    }
    bar.set_position(r.done);
    let msg = match r.items {
        0 => r.phase.clone(),
        n => format!("{}: {n} files", r.phase),
    };
    bar.set_message(msg);
}
