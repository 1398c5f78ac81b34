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
use std::path::{Path, PathBuf};

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

/// Patterns, in the order given: [`Patterns::matches`] asks the last that matches.
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
            parts.push(Part::Glob(component(c, ignore_case).map_err(bad)?));
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

    /// Whether the patterns select `path` (absolute): the last pattern matching it is
    /// not a `!` one. (For `--exclude`, selected means left out; for `--include`, kept.)
    pub fn matches(&self, path: &Path) -> bool {
        self.select(path, false)
    }

    /// As [`Patterns::matches`], but a pattern must match up to the path's last
    /// component: `*.jpg` selects `/a/b.jpg`, not what is under a directory `/c.jpg/`
    /// (`find`, which reports each entry that matches by itself).
    pub fn matches_whole(&self, path: &Path) -> bool {
        self.select(path, true)
    }

    fn select(&self, path: &Path, whole: bool) -> bool {
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
        self.list.iter().rev().find(|p| p.matches(&names, whole)).is_some_and(|p| !p.negated)
    }
}

impl Pattern {
    fn matches(&self, names: &[&OsStr], whole: bool) -> bool {
        if self.anchored {
            return leading(&self.parts, names, whole);
        }
        (0..names.len()).any(|at| leading(&self.parts, &names[at..], whole))
    }
}

/// The glob of one path component.
fn component(c: &str, ignore_case: bool) -> std::result::Result<GlobMatcher, String> {
    let glob = GlobBuilder::new(c)
        .literal_separator(true)
        .backslash_escape(true)
        .case_insensitive(ignore_case)
        .build()
        .map_err(|e| e.kind().to_string())?;
    Ok(glob.compile_matcher())
}

/// The existing paths a shell glob names (`--files-from` lines, as restic expands them
/// with Go's `filepath.Glob`): `*`, `?` and `[..]` within a component, matched against
/// each directory's listing in turn, sorted; as in Go, `*` matches hidden names too. A
/// path without glob characters is returned as it is, existing or not. Unreadable
/// directories on the way match nothing.
pub fn glob_paths(pattern: &str) -> Result<Vec<PathBuf>> {
    let meta = |c: &str| c.contains(['*', '?', '[']);
    if !meta(pattern) {
        return Ok(vec![PathBuf::from(pattern)]);
    }
    let bad = |why: String| Error::InvalidInput(format!("--files-from {pattern:?}: {why}"));
    let mut found = vec![PathBuf::from(if pattern.starts_with('/') { "/" } else { "" })];
    for c in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        if !meta(c) {
            for dir in found {
                let p = dir.join(c);
                if std::fs::symlink_metadata(&p).is_ok() {
                    next.push(p);
                }
            }
        } else {
            let glob = component(c, false).map_err(bad)?;
            for dir in found {
                let listing = if dir.as_os_str().is_empty() { Path::new(".") } else { dir.as_path() };
                let Ok(rd) = std::fs::read_dir(listing) else { continue };
                let mut names: Vec<_> =
                    rd.filter_map(|e| e.ok().map(|e| e.file_name())).filter(|n| glob.is_match(Path::new(n))).collect();
                names.sort();
                next.extend(names.into_iter().map(|n| dir.join(n)));
            }
        }
        found = next;
    }
    Ok(found)
}

/// Whether `parts` match a run of leading components of `names` (all of them, if
/// `whole`).
fn leading(parts: &[Part], names: &[&OsStr], whole: bool) -> bool {
    match parts.split_first() {
        None => !whole || names.is_empty(),
        Some((Part::Any, rest)) => (0..=names.len()).any(|skip| leading(rest, &names[skip..], whole)),
        Some((Part::Glob(g), rest)) => {
            names.first().is_some_and(|n| g.is_match(Path::new(n))) && leading(rest, &names[1..], whole)
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
        set(patterns).matches(Path::new(path))
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
        assert!(p.matches(Path::new("/data/drop")));
        assert!(!p.matches(Path::new("/data/keep")));
        assert!(p.matches(Path::new("/data/keep.log")), "a later pattern excludes again");
        assert!(!p.matches(Path::new("/data")));
        assert!(!Patterns::new().matches(Path::new("/anything")));

        let mut i = Patterns::new();
        i.add("--iexclude", "*.JPG", true).unwrap();
        assert!(i.matches(Path::new("/pics/a.jpg")) && i.matches(Path::new("/pics/B.Jpg")));
        assert!(!set(&["*.JPG"]).matches(Path::new("/pics/a.jpg")), "--exclude keeps case");
    }

    #[test]
    fn files_skip_comments_and_expand_variables() {
        let var = |k: &str| (k == "HOME").then(|| "/home/ann".to_string());
        let mut p = Patterns::new();
        let text = "# caches\n\n  $HOME/.cache  \n${HOME}/tmp\n$UNSET/x\ncost$\n";
        p.add_file("--exclude-file f", text, false, &var).unwrap();
        assert!(p.matches(Path::new("/home/ann/.cache/x")));
        assert!(p.matches(Path::new("/home/ann/tmp")));
        assert!(p.matches(Path::new("/x")), "an unset variable is empty: /x");
        assert!(p.matches(Path::new("/a/cost$")));
        assert!(!p.matches(Path::new("/home/ann/docs")));
        assert!(!p.matches(Path::new("/# caches")));
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
        assert!(p.matches(Path::new("/a")));
    }

    #[test]
    fn whole_matches_end_at_the_last_component() {
        let p = set(&["*.jpg", "/srv/**/logs"]);
        assert!(p.matches_whole(Path::new("/a/b.jpg")));
        assert!(!p.matches_whole(Path::new("/c.jpg/d")));
        assert!(p.matches(Path::new("/c.jpg/d")), "as an exclude, what is under it too");
        assert!(p.matches_whole(Path::new("/srv/x/y/logs")));
        assert!(!p.matches_whole(Path::new("/srv/x/logs/today")));
        assert!(set(&["**"]).matches_whole(Path::new("/any/thing")));
    }

    #[test]
    fn globs_name_the_existing_paths_they_match() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in ["a/x.txt", "a/y.txt", "a/.h.txt", "b/x.txt", "b/z.md"] {
            crate::testutil::write(&d.join(f), b"");
        }
        let g = |p: &str| glob_paths(&format!("{}/{p}", d.display())).unwrap();
        let rel =
            |v: Vec<PathBuf>| v.iter().map(|p| p.strip_prefix(d).unwrap().display().to_string()).collect::<Vec<_>>();
        assert_eq!(rel(g("*/x.txt")), ["a/x.txt", "b/x.txt"]);
        assert_eq!(rel(g("a/*.txt")), ["a/.h.txt", "a/x.txt", "a/y.txt"], "hidden names too, as Go's Glob");
        assert_eq!(rel(g("a/.*.txt")), ["a/.h.txt"]);
        assert_eq!(rel(g("?/z.m[a-d]")), ["b/z.md"]);
        assert!(g("c/*").is_empty());
        assert_eq!(glob_paths("/no/such/file").unwrap(), [PathBuf::from("/no/such/file")], "no glob: as it is");
        assert!(glob_paths("/a/[z-a]").is_err());
    }
}
