//! Path patterns for `backup --exclude` and its kin, with restic's meaning, so that a
//! restic user's exclude files work unchanged:
//!
//! - A pattern is split at `/` into components; each is a glob of one path component
//!   (`*` and `?` never match `/`; `[a-z]`, `[!a]` and `[^a]` classes; `\` escapes), and a
//!   component `**` matches any number of components, none included.
//! - A pattern starting with `/` is anchored at the root: its components must match the
//!   path's first ones. Any other pattern matches anywhere: at any run of consecutive
//!   components (`foo` matches `/a/foo` and `/foo/b`; `a/*.o` matches `/x/a/b.o`).
//! - A pattern matches a path when it matches a run of its leading components: a
//!   directory matched is left out with everything under it (which the backup then
//!   never lists). A trailing `/` is dropped.
//! - A pattern starting with `!` takes paths back: of the patterns that match a path, the
//!   last decides. (A file under a directory left out is never seen, so it cannot be
//!   taken back: `/dir/*` with `!/dir/keep` keeps `keep`, `/dir` with it does not.)
//! - `--iexclude` patterns ignore case.
//!
//! Pattern files (`--exclude-file`) hold one pattern per line, surrounding spaces
//! trimmed; empty lines and lines starting with `#` are skipped; `$NAME` and `${NAME}`
//! are replaced with the environment variable's value (empty if unset), as restic does.
//!
//! Memory: the patterns, and per match a recursion no deeper than the pattern.

use std::ffi::OsStr;
use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};

use crate::error::{Error, Result};

/// One component of a pattern.
#[derive(Clone, Debug)]
enum Part {
    /// `**`: any number of components.
    Any,
    /// A glob of one component.
    Glob(GlobMatcher),
}

/// One parsed pattern.
#[derive(Clone, Debug)]
struct Pattern {
    parts: Vec<Part>,
    anchored: bool,
    negated: bool,
}

/// Patterns, in the order given: [`Patterns::excluded`] asks the last that matches.
#[derive(Clone, Debug, Default)]
pub struct Patterns {
    list: Vec<Pattern>,
}

impl Patterns {
    /// No patterns: nothing is excluded.
    pub fn new() -> Patterns {
        Patterns::default()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Add `pattern` (from option `option`, named in the error), ignoring case if
    /// `ignore_case`. An empty pattern, or one that is not a valid glob, is an error
    /// naming the option and the pattern.
    pub fn add(&mut self, option: &str, pattern: &str, ignore_case: bool) -> Result<()> {
        let bad = |why: String| Error::InvalidInput(format!("{option} {pattern:?}: {why}"));
        let (negated, body) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        if body.is_empty() {
            return Err(bad("an empty pattern".into()));
        }
        let anchored = body.starts_with('/');
        let mut parts = Vec::new();
        for c in body.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if c == "**" {
                // `**/**` is `**`.
                if !matches!(parts.last(), Some(Part::Any)) {
                    parts.push(Part::Any);
                }
                continue;
            }
            let glob = GlobBuilder::new(c)
                .literal_separator(true)
                .backslash_escape(true)
                .case_insensitive(ignore_case)
                .build()
                .map_err(|e| bad(e.kind().to_string()))?;
            parts.push(Part::Glob(glob.compile_matcher()));
        }
        if parts.is_empty() && !anchored {
            return Err(bad("no path component to match".into()));
        }
        self.list.push(Pattern { parts, anchored, negated });
        Ok(())
    }

    /// Add the patterns of a pattern file's `text` (see the module's doc), `$NAME`s
    /// replaced through `var`.
    pub fn add_file(
        &mut self,
        option: &str,
        text: &str,
        ignore_case: bool,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<()> {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.add(option, &expand(line, var), ignore_case)?;
        }
        Ok(())
    }

    /// Whether `path` (absolute) is excluded: the last pattern matching it is not a `!`
    /// one.
    pub fn excluded(&self, path: &Path) -> bool {
        if self.list.is_empty() {
            return false;
        }
        let names: Vec<&OsStr> = path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        self.list.iter().rev().find(|p| p.matches(&names)).is_some_and(|p| !p.negated)
    }
}

impl Pattern {
    fn matches(&self, names: &[&OsStr]) -> bool {
        if self.anchored {
            return leading(&self.parts, names);
        }
        (0..names.len()).any(|at| leading(&self.parts, &names[at..]))
    }
}

/// Whether `parts` match a run of leading components of `names`.
fn leading(parts: &[Part], names: &[&OsStr]) -> bool {
    match parts.split_first() {
        None => true,
        Some((Part::Any, rest)) => (0..=names.len()).any(|skip| leading(rest, &names[skip..])),
        Some((Part::Glob(g), rest)) => {
            names.first().is_some_and(|n| g.is_match(Path::new(n))) && leading(rest, &names[1..])
        }
    }
}

/// `line` with `$NAME` and `${NAME}` replaced by `var(NAME)` (empty if unset); a `$`
/// followed by neither stays.
fn expand(line: &str, var: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, skip) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], end)
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
        } else {
            out.push_str(&var(name).unwrap_or_default());
            rest = &after[skip..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(patterns: &[&str]) -> Patterns {
        let mut p = Patterns::new();
        for s in patterns {
            p.add("--exclude", s, false).unwrap();
        }
        p
    }

    fn ex(patterns: &[&str], path: &str) -> bool {
        set(patterns).excluded(Path::new(path))
    }

    #[test]
    fn restic_documented_cases() {
        // From restic's manual and its issue threads (#1487: "foo does not match xfoo, it
        // matches /1/2/foo, /foo/1/2 and /1/foo/2").
        assert!(ex(&["foo"], "/1/2/foo"));
        assert!(ex(&["foo"], "/foo/1/2"));
        assert!(ex(&["foo"], "/1/foo/2"));
        assert!(!ex(&["foo"], "/1/xfoo"));
        assert!(ex(&["*.c"], "/src/main.c"));
        assert!(!ex(&["*.c"], "/src/main.cpp"));
        assert!(ex(&["*.go"], "/home/user/x.go"));
        // Anchored at the root.
        assert!(ex(&["/home/user/cache"], "/home/user/cache"));
        assert!(ex(&["/home/user/cache"], "/home/user/cache/a/b"));
        assert!(!ex(&["/home/user/cache"], "/srv/home/user/cache"));
        assert!(!ex(&["/user/cache"], "/home/user/cache"));
        assert!(ex(&["user/cache"], "/home/user/cache"));
        // `*` stays within a component, `**` crosses them.
        assert!(ex(&["/home/*/cache"], "/home/ann/cache"));
        assert!(!ex(&["/home/*/cache"], "/home/ann/x/cache"));
        assert!(ex(&["/home/**/cache"], "/home/ann/x/cache"));
        assert!(ex(&["/home/**/cache"], "/home/cache"));
        assert!(ex(&["**/node_modules"], "/w/app/node_modules"));
        assert!(ex(&["/srv/**/*.tmp"], "/srv/a/b/c.tmp"));
        assert!(!ex(&["/srv/**/*.tmp"], "/srv/a/b/c.tmpx"));
        // A trailing slash is dropped; `?` and classes.
        assert!(ex(&["build/"], "/p/build"));
        assert!(ex(&["file?.txt"], "/d/file1.txt"));
        assert!(!ex(&["file?.txt"], "/d/file10.txt"));
        assert!(ex(&["[a-c]x"], "/d/bx"));
        assert!(!ex(&["[!a-c]x"], "/d/bx"));
        assert!(ex(&["\\*literal"], "/d/*literal"));
        assert!(!ex(&["\\*literal"], "/d/xliteral"));
    }

    #[test]
    fn the_last_matching_pattern_decides_and_case_can_be_ignored() {
        let p = set(&["/data/*", "!/data/keep", "*.log"]);
        assert!(p.excluded(Path::new("/data/drop")));
        assert!(!p.excluded(Path::new("/data/keep")));
        assert!(p.excluded(Path::new("/data/keep.log")), "a later pattern excludes again");
        assert!(!p.excluded(Path::new("/data")));
        assert!(!Patterns::new().excluded(Path::new("/anything")));

        let mut i = Patterns::new();
        i.add("--iexclude", "*.JPG", true).unwrap();
        assert!(i.excluded(Path::new("/pics/a.jpg")) && i.excluded(Path::new("/pics/B.Jpg")));
        assert!(!set(&["*.JPG"]).excluded(Path::new("/pics/a.jpg")), "--exclude keeps case");
    }

    #[test]
    fn files_skip_comments_and_expand_variables() {
        let var = |k: &str| (k == "HOME").then(|| "/home/ann".to_string());
        let mut p = Patterns::new();
        let text = "# caches\n\n  $HOME/.cache  \n${HOME}/tmp\n$UNSET/x\ncost$\n";
        p.add_file("--exclude-file f", text, false, &var).unwrap();
        assert!(p.excluded(Path::new("/home/ann/.cache/x")));
        assert!(p.excluded(Path::new("/home/ann/tmp")));
        assert!(p.excluded(Path::new("/x")), "an unset variable is empty: /x");
        assert!(p.excluded(Path::new("/a/cost$")));
        assert!(!p.excluded(Path::new("/home/ann/docs")));
        assert!(!p.excluded(Path::new("/# caches")));
    }

    #[test]
    fn bad_patterns_are_errors_naming_the_option_and_the_pattern() {
        let mut p = Patterns::new();
        for bad in ["", "!", "./", "a/[z-a]"] {
            let e = p.add("--exclude", bad, false).unwrap_err().to_string();
            assert!(e.contains("--exclude") && e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
        assert!(p.is_empty());
        // `/` alone is every path.
        p.add("--exclude", "/", false).unwrap();
        assert!(p.excluded(Path::new("/a")));
    }
}
