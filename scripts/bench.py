#!/usr/bin/env python3
"""cairn's benchmark suite: cairn, restic and borg on the same data, same machine, one run.

Steps (main corpus): 1 first backup, 2 second backup of the unchanged tree, 3 backup
after the change set, 4 native restore of the latest snapshot (each tool into a fresh
ext4 filesystem of its own). Every tool does step k
on identical data before any tool does step k+1 (the change set is applied once,
between steps 2 and 3). Then a memory-scaling series: peak RSS of a first backup of
10^4, 10^5 (and without --quick 10^6) small files. Then cairn alone: the first backup
of the changed main corpus with `--memory 64M` (index spilling) and `--memory 4G` (all in
RAM); peak RSS of a backup
of 10^4 small files into repositories holding ever more index entries (synthetic ones,
injected with `cairn-indexbench --inject-repo`: ids no real chunk matches, in packs that
do not exist). Then the memory-cgroup run: each tool backs up 10^6 (--quick: 10^5) small
files inside a memory cgroup limited to 160 MiB (cgroup v1 `memory.limit_in_bytes` or
v2 `memory.max`); cairn gets `--memory 128M` and a repository holding 10^7 (--quick: 10^6)
injected entries, restic and borg an empty one. With `--verify` (the test suite's smoke
run), every restored tree and copy out of a mount is compared with the source, and any
exit code but 0 fails the run.

Lifecycle (--only lifecycle): every tool backs up a copy of the main corpus (--quick:
10^3 small files and 16 MiB of large ones) once a day for 30 days (--lifecycle-days;
snapshot times set with `--time`/`--timestamp`, a seeded change set applied before each
day), then forgets all but 7 daily and 2 weekly snapshots and prunes (cairn and restic
`forget --prune`, borg `prune` then `compact`): that step is measured, each tool's kept
snapshots are listed beside what its retention rules keep, and cairn's repository after
prune is compared with a fresh cairn repository holding only the kept snapshots and with
the smallest peer's. With --verify, `cairn check --read-data` after the prune and a
restore of the newest snapshot compared with the corpus.

Crash trials (--only crash): scripts/faults' kill and prune trials (SIGKILL of backup and
of prune at 20 random moments each, backups racing prunes, each followed by check
--read-data and restores of every remaining snapshot; prune's on large sources; --quick or
--crash-size small: the test suite's size); pass or fail.

Prune at scale (--only prune-scale): cairn alone prunes synthetic repositories of 10^6,
10^7 and 10^8 blobs (--prune-series; --quick: 10^5, 10^6) with `--memory 128M` (4/5 of
--cgroup-mib). Each is made by `cairn-synth --blobs N` (src/bin/cairn-synth.rs): N
distinct 16-byte data blobs, sealed by cairn and written by its packer into real packs
and index files (and the local index cache), in files of 1000 chunks whose chunk lists
and directories (1000 files each) are written by cairn's tree writers, and two
snapshots: A of blobs [0, 0.6N) and B of [0.4N, N). `cairn forget A` then leaves packs
only A used (deleted) and mixed ones (repacked or kept). Generation and forget are not
measured (generation time is reported); the prune is, with the stats and phase times it
prints, and its peak RSS is checked against the budget + 32 MiB. Then, inside a memory
cgroup of --cgroup-mib (160 MiB): cairn's prune of a fresh synthetic repository of 10^7
blobs (--prune-cgroup-blobs; --quick: the largest of the series), and restic's and
cairn's prunes of 10^6 (--prune-cgroup-files; --quick: 10^5) small files backed up twice
(`cairn-corpus --tiny`, the change set applied between), the first snapshot forgotten:
completed or OOM-killed, wall time and peak RSS.

diff and find (--only inspect): cairn and restic back up --inspect-files (10^6; --quick:
10^5) small files twice, the change set between, then `diff` of the two snapshots and
`find '*.new'` over both, cairn with --memory 64M (target: peak RSS within it + 32 MiB);
then cairn's `backup --dry-run` of the main corpus into an empty repository, against
what the real backup then adds.

Cold page cache (--only cold): every tool's first backup and unchanged re-backup of the
main corpus and of 10^6 tiny files (--cold-files; --quick: 10^5; `cairn-corpus --tiny`),
each step once with a warm page cache (the source read in first) and once cold: the
page cache, dentries and inodes dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`)
before each tool's step, so the source, the repository and the tool's own cache are all
read from disk, as a nightly backup meets them. Needs root (skipped, and said, without).

Remote (--only remote): cairn and restic against one real S3 server (s3s-fs, installed
by scripts/s3-server) on the loopback, reached through cairn-delay, a TCP proxy that
delivers every byte half the round trip late in each direction (this kernel has no tc
netem) and acknowledges at once what it receives (s3s-fs does not set TCP_NODELAY: read
directly, every other response stalled ~40 ms on delayed ACKs, a cost no real store
adds), at each round-trip time of --rtts (default 0,20 ms): first backup of the main corpus,
unchanged second backup, restore (and again with an empty cache, as on a new machine), and through each tool's mount `cat` of the largest
file (and for cairn `cp -a` of the tree: restic's, out of its S3 mount, had not finished
after 3 minutes at 0 ms for 10,000 files); then cairn alone at `--memory 64M` (first backup into a
new repository, restore, mount cat). cairn's own count of what it exchanged (requests,
bytes read) is printed beside its steps.

Each step runs under GNU time: wall time, CPU time (user+sys) and peak RSS (the kernel's
maximum resident set size of the process tree). Repository size is `du -sb` after the
step. Every peer figure is also shown as a ratio peer/cairn: above 1 means cairn is
faster, smaller or leaner; below 1 means cairn is behind. Nothing is tuned per tool:
each runs with its defaults, encryption on; borg gets --compression zstd,3 so that
compression is compared like for like (its default is lz4).
"""
import argparse
import contextlib
import datetime
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
CAIRN = ROOT / "target/release/cairn"
CORPUS = ROOT / "target/release/cairn-corpus"
INDEXBENCH = ROOT / "target/release/cairn-indexbench"
FUSEFLOOR = ROOT / "target/release/cairn-fusefloor"
PASSWORD = "bench-password"
MIB = 1024 * 1024
# Parts of the benchmark, in the order they run (--only picks some).
SECTIONS = ["main", "budget", "series", "repo", "cgroup", "index", "mount", "lifecycle", "prune-scale", "crash",
            "inspect", "cold", "remote"]
# --verify: compare what restores and mounts give back with the source, accept exit 0 only.
VERIFY = False


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools(tools, plots):
    need = []
    if not os.access("/usr/bin/time", os.X_OK):
        need.append("time")
    if "restic" in tools and not shutil.which("restic"):
        need.append("restic")
    if "borg" in tools and not shutil.which("borg"):
        need.append("borgbackup")
    if not shutil.which("rsync"):
        need.append("rsync")
    if need:
        print(f"bench: installing {' '.join(need)}", file=sys.stderr)
        sh(["apt-get", "update", "-qq"])
        sh(["apt-get", "install", "-y", "-qq", *need], stdout=subprocess.DEVNULL)
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("bench: installing matplotlib (PyPI) for the plots", file=sys.stderr)
            sh([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"])


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


class Tool:
    """One backup program: how to init, back up and restore with its defaults."""

    def __init__(self, name, work):
        self.name = name
        self.repo = work / f"repo-{name}"
        self.base = work / f"home-{name}"  # caches and configs, never the user's
        self.n = 0

    def env(self):
        e = dict(os.environ)
        for k in list(e):
            if k.startswith(("CAIRN_", "RESTIC_", "BORG_")):
                del e[k]
        e.update(HOME=str(self.base), XDG_CACHE_HOME=str(self.base / "cache"), XDG_CONFIG_HOME=str(self.base / "config"))
        if self.name == "cairn":
            e.update(CAIRN_REPO=str(self.repo), CAIRN_PASSWORD=PASSWORD)
        elif self.name == "restic":
            e.update(RESTIC_REPOSITORY=str(self.repo), RESTIC_PASSWORD=PASSWORD)
        else:
            e.update(BORG_REPO=str(self.repo), BORG_PASSPHRASE=PASSWORD, BORG_BASE_DIR=str(self.base))
        return e

    def version(self):
        return {"cairn": lambda: version([CAIRN, "--version"]), "restic": lambda: version(["restic", "version"]),
                "borg": lambda: version(["borg", "--version"])}[self.name]()

    def reset(self):
        shutil.rmtree(self.repo, ignore_errors=True)
        shutil.rmtree(self.base, ignore_errors=True)
        self.base.mkdir(parents=True)
        self.n = 0
        cmd = {"cairn": [CAIRN, "init"], "restic": ["restic", "init"], "borg": ["borg", "init", "-e", "repokey"]}[self.name]
        sh(cmd, env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def backup(self, src):
        self.n += 1
        return {"cairn": [CAIRN, "backup", src], "restic": ["restic", "backup", src],
                "borg": ["borg", "create", "--compression", "zstd,3", f"::a{self.n}", src]}[self.name]

    def restore(self, target):
        """(command, cwd): borg extracts into the current directory."""
        if self.name == "borg":
            return ["borg", "extract", f"::a{self.n}"], target
        return {"cairn": [CAIRN, "restore", "latest", "--target", target],
                "restic": ["restic", "restore", "latest", "--target", target]}[self.name], None

    # Exit codes that mean "done, with warnings about some sources" (not with --verify:
    # the corpus is readable, so a warning is a failure).
    def ok(self, code):
        if VERIFY:
            return code == 0
        return code == 0 or (code == 3 and self.name in ("cairn", "restic")) or (code == 1 and self.name == "borg")


def measure(tool, cmd, cwd=None):
    # Flush everything dirty first, so a step pays for its own writes (and fsyncs) and not
    # for the writeback of an earlier step or tool.
    sh(["sync"])
    with tempfile.NamedTemporaryFile("r") as t:
        p = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", t.name, *map(str, cmd)], env=tool.env(), cwd=cwd,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        fields = t.read().split()[-4:]
    if not tool.ok(p.returncode):
        raise SystemExit(f"{tool.name}: {' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    wall, user, sys_, rss = float(fields[0]), float(fields[1]), float(fields[2]), int(fields[3])
    return {"wall_s": wall, "cpu_s": user + sys_, "rss_mib": rss / 1024, "exit": p.returncode}


def inject(tool, n):
    """Add n synthetic index entries to cairn's repository (see cairn-indexbench)."""
    sh([INDEXBENCH, "--inject-repo", tool.repo, "--entries", str(n)], env=tool.env(), stdout=subprocess.DEVNULL)


def same_tree(source, copy, what):
    """Fail the run unless `copy` has the same files, bytes and links as `source`."""
    p = subprocess.run(["diff", "-r", "--no-dereference", source, copy], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"bench: {what} differs from the source:\n{(p.stdout + p.stderr)[-2000:]}")
    print(f"bench: verified: {what} equals the source", file=sys.stderr, flush=True)


def memory_cgroups():
    """Where memory cgroups can be made: ("v1", the memory controller's root) or ("v2", the
    root of a cgroup v2 hierarchy offering the memory controller); (None, None) if neither
    is here and writable."""
    v1 = pathlib.Path("/sys/fs/cgroup/memory")
    if (v1 / "memory.limit_in_bytes").exists() and os.access(v1, os.W_OK):
        return "v1", v1
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                root = pathlib.Path(fields[1])
                controllers = root / "cgroup.controllers"
                if controllers.exists() and "memory" in controllers.read_text().split() and os.access(root, os.W_OK):
                    return "v2", root
    return None, None


def make_cgroup(version, root, name, limit):
    """A new memory cgroup under `root` limited to `limit` bytes, swap included."""
    if version == "v2":
        # Children of root get the memory controller only if root hands it down.
        subtree = root / "cgroup.subtree_control"
        if "memory" not in subtree.read_text().split():
            subtree.write_text("+memory")
    cg = root / name
    cg.mkdir()
    try:
        if version == "v1":
            (cg / "memory.limit_in_bytes").write_text(str(limit))
            if (cg / "memory.memsw.limit_in_bytes").exists():
                (cg / "memory.memsw.limit_in_bytes").write_text(str(limit))  # no swapping out of it
        else:
            (cg / "memory.max").write_text(str(limit))
            if (cg / "memory.swap.max").exists():
                (cg / "memory.swap.max").write_text("0")
    except OSError:
        cg.rmdir()
        raise
    return cg


def oom_kills(version, cg):
    """Processes of cgroup `cg` the kernel killed for want of memory."""
    name = "memory.oom_control" if version == "v1" else "memory.events"
    return int(next((l.split()[1] for l in (cg / name).read_text().splitlines() if l.startswith("oom_kill ")), "0"))


def cgroup_run(a, work, tools):
    """Each tool's first backup inside a memory cgroup; returns table lines."""
    version, root = memory_cgroups()
    if version is None:
        print("bench: no memory cgroup controller here (a writable cgroup v1 memory controller, or cgroup v2 "
              "with the memory controller); skipping the cgroup run", file=sys.stderr)
        return []
    n = int(a.cgroup_files or (1e5 if a.quick else 1e6))
    entries = int(a.cgroup_entries or (1e6 if a.quick else 1e7))
    s = corpus(work, f"series-{n}", ["--seed", "2", "--files", str(n), "--large-mib", "0", "--tiny"])
    warm(s)
    lines = ["", f"### Backup of {n:,} small files under a {a.cgroup_mib} MiB memory cgroup (cgroup {version}, enforced by the kernel)", "",
             "| tool | repository before | command | result | wall (s) | peak RSS (MiB) |", "|---|---|---|---|---|---|"]
    for t in tools:
        t.reset()
        before = "empty"
        cmd = t.backup(s)
        if t.name == "cairn":
            inject(t, entries)
            before = f"{entries:,} index entries"
            cmd = [CAIRN, "--memory", f"{a.cgroup_mib * 4 // 5}M", "backup", s]
        try:
            cg = make_cgroup(version, root, f"cairn-bench-{os.getpid()}-{t.name}", a.cgroup_mib << 20)
        except OSError as e:
            # A controller is here: not being able to use it is a failure, not a skip.
            raise SystemExit(f"bench: cannot make a cgroup {version} memory cgroup under {root}: {e}")
        try:
            sh(["sync"])
            with tempfile.NamedTemporaryFile("r") as tf:
                p = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", tf.name, "sh", "-c",
                                    f'echo $$ > {cg}/cgroup.procs && exec "$@"', "sh", *map(str, cmd)],
                                   env=t.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                fields = tf.read().split()[-4:]
            oom = oom_kills(version, cg)
        finally:
            cg.rmdir()
        wall, rss = float(fields[0]), int(fields[3]) / 1024
        if oom or p.returncode in (137, -9):
            result = f"OOM-killed (exit {p.returncode})"
        elif t.ok(p.returncode):
            result = f"completed (exit {p.returncode})"
        else:
            result = f"failed (exit {p.returncode}): {p.stderr.strip().splitlines()[-1][:120] if p.stderr.strip() else ''}"
        shown = " ".join(str(c) for c in cmd).replace(str(s), "SRC").replace(str(CAIRN), "cairn")
        lines.append(f"| {t.name} | {before} | `{shown}` | {result} | {wall:.1f} | {rss:.1f} |")
        print(f"cgroup   {t.name:7} {result}, {wall:.1f} s, rss {rss:.1f} MiB", file=sys.stderr, flush=True)
        shutil.rmtree(t.repo, ignore_errors=True)
    return lines


def du(path):
    return int(subprocess.run(["du", "-sb", path], capture_output=True, text=True).stdout.split()[0])


def warm(path):
    """Read every file so each tool sees a warm page cache."""
    subprocess.run(f"find '{path}' -type f -print0 | xargs -0 -r cat > /dev/null", shell=True, check=True)


def corpus(work, name, args):
    """Generate (or reuse, if made with the same parameters) a corpus directory."""
    d = work / name
    stamp = d.parent / f"{name}.params"
    want = " ".join(args)
    if d.exists() and stamp.exists() and stamp.read_text() == want:
        return d
    shutil.rmtree(d, ignore_errors=True)
    print(f"bench: generating corpus {name} ({want})", file=sys.stderr)
    sh([CORPUS, "generate", d, *args])
    stamp.write_text(want)
    return d


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
    return f"{os.cpu_count()} cores, {cpu}, {int(mem) // 1024 // 1024} GiB RAM, Linux {platform.release()}"


def ratio(peer, ours):
    return peer / ours if ours > 0 else float("inf")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small corpus, series up to 10^5 files (a few minutes)")
    ap.add_argument("--tools", default="cairn,restic,borg")
    ap.add_argument("--work", type=pathlib.Path, default=ROOT / "target/bench-work")
    ap.add_argument("--out", type=pathlib.Path)
    ap.add_argument("--files", type=int, help="small files in the main corpus")
    ap.add_argument("--versions-snapshots", type=int,
                    help="snapshots of the wide directory the mount section lists under versions/ (100; --quick: 20)")
    ap.add_argument("--large-mib", type=int, help="MiB of large files in the main corpus")
    ap.add_argument("--series", help="comma-separated file counts for the memory series")
    ap.add_argument("--index-series", help="comma-separated entry counts for cairn's index benchmark")
    ap.add_argument("--repo-series", help="comma-separated index sizes for cairn's RSS-vs-repository series")
    ap.add_argument("--cgroup-files", type=float, help="files backed up under the memory cgroup")
    ap.add_argument("--cgroup-entries", type=float, help="entries injected into cairn's repository for the cgroup run")
    ap.add_argument("--cgroup-mib", type=int, default=160, help="the cgroup's memory limit")
    ap.add_argument("--lifecycle-days", type=int, default=30,
                    help="daily backups before the lifecycle section's forget and prune")
    ap.add_argument("--crash-size", choices=["small", "big"], default="big", help="the crash section's sources")
    ap.add_argument("--prune-series", help="comma-separated blob counts for prune-scale's synthetic repositories")
    ap.add_argument("--prune-cgroup-blobs", type=float, help="blobs of the synthetic repository pruned under the cgroup")
    ap.add_argument("--inspect-files", type=float, help="small files of the diff/find section (10^6; --quick: 10^5)")
    ap.add_argument("--prune-cgroup-files", type=float, help="small files of the restic/cairn prune under the cgroup")
    ap.add_argument("--cold-files", type=float, help="tiny files of the cold section's second corpus (10^6; --quick: 10^5)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--verify", action="store_true",
                    help="compare restored trees and copies out of mounts with the source; fail on any exit code but 0")
    ap.add_argument("--rtts", default="0,20", help="round-trip times (ms) for the remote section")
    ap.add_argument("--only", help="comma-separated sections to run (default all): " + ",".join(SECTIONS))
    a = ap.parse_args()
    global VERIFY
    VERIFY = a.verify
    only = set(a.only.split(",")) if a.only else set(SECTIONS)
    if only - set(SECTIONS):
        ap.error(f"--only: unknown section(s) {','.join(sorted(only - set(SECTIONS)))}")
    tools_wanted = a.tools.split(",")
    files = a.files or (10_000 if a.quick else 100_000)
    large = a.large_mib if a.large_mib is not None else (256 if a.quick else 2048)
    series = [int(float(x)) for x in (a.series or ("1e4,1e5" if a.quick else "1e4,1e5,1e6")).split(",") if x]
    out = a.out or ROOT / "target/bench-results" / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    ensure_tools(tools_wanted, not a.no_plots)
    tools = [Tool(n, work) for n in tools_wanted]
    rows = []

    def record(section, step, tool, n_files, data_bytes, m, repo_bytes):
        row = {"section": section, "step": step, "tool": tool.name, "files": n_files, "data_mib": data_bytes / MIB, **m,
               "repo_mib": repo_bytes / MIB}
        rows.append(row)
        print(f"{section:8} {step:18} {tool.name:7} {m['wall_s']:8.2f} s  cpu {m['cpu_s']:8.2f} s  "
              f"rss {m['rss_mib']:8.1f} MiB  repo {row['repo_mib']:9.1f} MiB", file=sys.stderr, flush=True)

    # Main corpus.
    if only & {"main", "budget", "mount"}:
        src = corpus(work, "corpus", ["--seed", "1", "--files", str(files), "--large-mib", str(large), "--xattrs", "10"])
    if "main" in only:
        main_section(work, tools, src, files, record)
    if "budget" in only and "cairn" in tools_wanted:
        budget_section(work, tools, src, files, record)
    if "series" in only:
        series_section(work, tools, series, record)
    if "repo" in only and "cairn" in tools_wanted:
        repo_section(a, work, tools, record)
    cg_lines = cgroup_run(a, work, tools) if "cgroup" in only else []
    index_rows = index_section(a, work) if "index" in only and "cairn" in tools_wanted else []
    if "mount" in only:
        mount_section(work, tools, src, files, record,
                      a.versions_snapshots or (20 if a.quick else 100))
    if "lifecycle" in only:
        cg_lines += lifecycle_section(a, work, tools, files, large, record)
    if "prune-scale" in only and "cairn" in tools_wanted:
        cg_lines += prune_scale_section(a, work, out, tools, record)
    if "crash" in only and "cairn" in tools_wanted:
        cg_lines += crash_section(a, work, out)
    if "inspect" in only:
        if "src" not in locals():
            src = corpus(work, "corpus", ["--seed", "1", "--files", str(files), "--large-mib", str(large), "--xattrs", "10"])
        cg_lines += inspect_section(a, work, tools, src, record)
    if "cold" in only:
        if "src" not in locals():
            src = corpus(work, "corpus", ["--seed", "1", "--files", str(files), "--large-mib", str(large), "--xattrs", "10"])
        cold_section(a, work, tools, src, files, record)
    if "remote" in only:
        if "src" not in locals():
            src = corpus(work, "corpus", ["--seed", "1", "--files", str(files), "--large-mib", str(large), "--xattrs", "10"])
        cg_lines += remote_section(a, work, tools_wanted, src, files, record)
    finish(a, out, rows, tools, files, large, cg_lines, index_rows)


def pristine(work, src):
    """A working copy of the main corpus, reset to `src`."""
    # The change set mutates the corpus: every run starts from a pristine copy. rsync
    # undoes only what the last change set touched, instead of deleting 10^5 files (which
    # would slow file creation, and so the restores, for minutes; see the restore step).
    run_src = work / "run"
    sh(["rsync", "-aX", "--delete", f"{src}/", f"{run_src}/"])
    return run_src


def main_section(work, tools, src, files, record):
    """First backup, unchanged, after changes, restore of the main corpus."""
    run_src = pristine(work, src)
    data = du(run_src)
    for t in tools:
        t.reset()
    warm(run_src)
    for t in tools:
        record("main", "1 first backup", t, files, data, measure(t, t.backup(run_src)), du(t.repo))
    for t in tools:
        record("main", "2 unchanged", t, files, data, measure(t, t.backup(run_src)), du(t.repo))
    sh([CORPUS, "change", run_src, "--seed", "1", "--files", str(files)])
    data = du(run_src)
    warm(run_src)
    for t in tools:
        record("main", "3 after changes", t, files, data, measure(t, t.backup(run_src)), du(t.repo))
    # Each tool restores into a fresh filesystem of its own (FreshFs), as the mount
    # section's steps write. Restoring into the work directory made the step's time depend
    # on what had been deleted there before: ext4 steers new inodes away from freed ones,
    # and on an ext4 without a journal (the benchmark VM's root) every file created scans
    # past inodes freed earlier (`recently_deleted` in the kernel's profile: up to half
    # of the restore's CPU). The same cairn restore of this corpus took 5-21 s into
    # /work, by the age of earlier deletions, and 5-7 s into fresh filesystems.
    for t in tools:
        with FreshFs(work, f"restore-{t.name}", data) as target:
            cmd, cwd = t.restore(target)
            record("main", "4 restore", t, files, data, measure(t, cmd, cwd), du(t.repo))
            if VERIFY:
                # Each tool restores the source's absolute path under its target.
                same_tree(run_src, target / str(run_src).lstrip("/"), f"{t.name}'s restore")


def budget_section(work, tools, src, files, record):
    """cairn's disk-spilling index against an effectively in-memory one.

    The same first backup at the smallest budget (the memtable spills every ~50k
    entries), at the default and at 4 GiB (nothing spills: the index is a hash map in
    RAM). Three rounds, interleaved so drift in the machine hits every budget alike; the
    fastest of each is recorded (the usual way to take noise out of a wall-clock time).
    """
    t = next(t for t in tools if t.name == "cairn")
    run_src = pristine(work, src)
    data = du(run_src)
    warm(run_src)
    best = {}
    for _ in range(3):
        for mem in ["64M", "256M", "4G"]:
            t.reset()
            m = measure(t, [CAIRN, "--memory", mem, "backup", run_src])
            if mem not in best or m["wall_s"] < best[mem][0]["wall_s"]:
                best[mem] = (m, du(t.repo))
    for mem, (m, repo) in best.items():
        record("budget", f"first backup {mem} (best of 3)", t, files, data, m, repo)


def proc_status(pid):
    """(peak RSS in MiB, CPU seconds) of a running process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return hwm / 1024, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mounted(mnt):
    with open("/proc/mounts") as f:
        return any(l.split()[1] == str(mnt) for l in f)


class FreshFs:
    """A freshly made ext4 filesystem of its own for one step's output, on a loop device
    with direct I/O (so its data is not cached twice), removed afterwards.

    Writing 10^5 files into a filesystem that has just had as many deleted is several
    times slower on ext4 (it steers new inodes away from recently deleted ones), so a
    step's time would depend on what earlier steps and runs left behind. In a fresh
    filesystem every step writes under the same conditions. Without root or the tools
    (mkfs.ext4, losetup), it falls back to a plain directory under `work`.
    """

    usable = None  # decided on first use

    def __init__(self, work, name, data_bytes):
        self.dir = work / f"fresh-{name}"
        self.image = work / f"fresh-{name}.img"
        self.size = max(256 * MIB, 3 * data_bytes)
        self.dev = None

    def __enter__(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        if FreshFs.usable is None:
            FreshFs.usable = os.geteuid() == 0 and all(shutil.which(t) for t in ["mkfs.ext4", "losetup"])
            if not FreshFs.usable:
                print("bench: no root or no mkfs.ext4/losetup: mount steps write into a plain directory", file=sys.stderr)
        if FreshFs.usable:
            try:
                with open(self.image, "wb") as f:
                    f.truncate(self.size)
                # Inode tables and journal written now, not by a background thread mid-step.
                sh(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", self.image])
                self.dev = subprocess.run(["losetup", "--direct-io=on", "-f", "--show", self.image], check=True,
                                          capture_output=True, text=True).stdout.strip()
                sh(["mount", self.dev, self.dir])
            except (OSError, subprocess.CalledProcessError) as e:
                # No loop devices here (a container, say): plain directories from now on.
                print(f"bench: cannot make a fresh filesystem ({e}): mount steps write into a plain directory",
                      file=sys.stderr)
                FreshFs.usable = False
                if self.dev:
                    subprocess.run(["losetup", "-d", self.dev])
                    self.dev = None
                self.image.unlink(missing_ok=True)
        return self.dir

    def __exit__(self, *exc):
        if self.dev:
            sh(["umount", self.dir])
            sh(["losetup", "-d", self.dev])
            self.image.unlink()
        shutil.rmtree(self.dir, ignore_errors=True)


def mount_section(work, tools, src, files, record, versions_snapshots):
    """Each tool's FUSE mount of its snapshot of the main corpus.

    Then each tool backs up a directory-heavy tree of as many files (4 per directory, 5
    levels) and `ls -lR`s it through a fresh mount. Last, cairn alone lists a wide
    directory across many snapshots under `versions/` (versions_section).

    Steps, in this order on a fresh mount of a repository read into the page cache just
    before: read the largest file (512 MiB) with cat,
    `ls -lR` the snapshot, `cp -a` it to local disk, and for cairn `cp -a` once more with
    everything but xattrs in the kernel's caches (the floor the protocol sets on this
    machine, whatever the filesystem does). The wall time is the client
    command's; RSS and CPU are the mount process's (peak and cumulative at the end of the
    step). Beside them, cairn's native restore and `cp -a` of a local copy of the same
    tree: what cp itself costs on this disk. Every step that writes a tree writes it
    into a fresh ext4 filesystem of its own (FreshFs).
    """
    run_src = pristine(work, src)
    data = du(run_src)
    warm(run_src)
    for t in tools:
        t.reset()
        measure(t, t.backup(run_src))

    if "cairn" in [t.name for t in tools]:
        t = next(t for t in tools if t.name == "cairn")
        with FreshFs(work, "restore", data) as restored:
            record("mount", "native restore", t, files, data,
                   measure(t, [CAIRN, "restore", "latest", "--target", restored]), du(t.repo))
            if VERIFY:
                same_tree(run_src, restored / str(run_src).lstrip("/"), "cairn's restore (mount section)")
            with FreshFs(work, "local-cp", data) as out:
                m = measure(t, ["cp", "-a", restored, out / "tree"])
            record("mount", "cp -a from local disk", t, files, data, m, du(t.repo))
    big = max((p for p in run_src.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    for t in tools:
        # Every tool's repository is read into the page cache first, so the steps measure
        # the mounts and not which pack files the writes of earlier steps evicted.
        warm(t.repo)
        proc, mnt, inside = mount_latest(work, t, run_src)
        try:
            steps = [("cat of the largest file", ["cat", inside / big.relative_to(run_src)], False),
                     ("ls -lR", ["ls", "-lR", inside], False),
                     ("cp -a", ["cp", "-a", inside], True)]
            if t.name == "cairn":
                # The floor the FUSE protocol sets: every file's data and attributes are
                # now in the kernel's caches (snapshots never change), so the mount only
                # answers the requests the kernel never caches (cp's xattr and ACL
                # queries, directory listings) and decodes nothing.
                steps.append(("cp -a again (kernel caches warm)", ["cp", "-a", inside], True))
            run_mount_steps(work, t, proc, steps, data, run_src, "out of the mount",
                            lambda step, m, wall: record("mount", step, t, files, data, m, du(t.repo)))
        finally:
            stop_mount(proc, mnt)
    if "cairn" in [t.name for t in tools]:
        floor_ls(work, next(t for t in tools if t.name == "cairn"), run_src, data, "ls -lR", files, record)

    # A directory-heavy tree (4 small files per directory, 5 levels deep: like /usr, ~9
    # entries per directory), listed through a fresh mount: the cost that follows the
    # directories rather than the files.
    dirs_src = corpus(work, "dirs", ["--seed", "3", "--files", str(files), "--large-mib", "0", "--tiny",
                                     "--per-dir", "4"])
    dirs_data = du(dirs_src)
    warm(dirs_src)
    for t in tools:
        measure(t, t.backup(dirs_src))
        warm(t.repo)
        proc, mnt, inside = mount_latest(work, t, dirs_src)
        try:
            run_mount_steps(work, t, proc, [("ls -lR, directory-heavy tree", ["ls", "-lR", inside], False)],
                            dirs_data, dirs_src, "out of the mount",
                            lambda step, m, wall: record("mount", step, t, files, dirs_data, m, du(t.repo)))
        finally:
            stop_mount(proc, mnt)
    if "cairn" in [t.name for t in tools]:
        floor_ls(work, next(t for t in tools if t.name == "cairn"), dirs_src, dirs_data,
                 "ls -lR, directory-heavy tree", files, record)


    if "cairn" in [t.name for t in tools]:
        versions_section(work, next(t for t in tools if t.name == "cairn"), files, versions_snapshots, record)


def floor_ls(work, t, src, data, step, files, record):
    """The floor of `step` (an `ls -lR`) on this machine: the same listing of `src` through
    cairn-fusefloor, a FUSE server holding the tree's names and attributes in RAM with
    the protocol choices of cairn's mount (src/bin/cairn-fusefloor.rs). It does no work
    per request, so what it takes is the kernel's and the round trips' share. Recorded
    as cairn's row "<step> (FUSE floor)"; RSS and CPU are the floor server's (the tree
    in RAM, and reading it at start)."""
    mnt = work / "mnt-floor"
    if mounted(mnt):
        sh(["fusermount", "-u", "-z", mnt])
    mnt.mkdir(exist_ok=True)
    proc = start_mount(t, [FUSEFLOOR, src, mnt], mnt, mnt / ".")
    try:
        run_mount_steps(work, t, proc, [(f"{step} (FUSE floor)", ["ls", "-lR", mnt], False)], data, src,
                        "through the floor server",
                        lambda step, m, wall: record("mount", step, t, files, data, m, du(t.repo)))
    finally:
        stop_mount(proc, mnt)


def versions_section(work, t, files, snapshots, record):
    """cairn alone (restic's mount has no such view; borg's `mount --versions` builds the
    whole tree in memory first): one directory of `files` tiny files backed up
    `snapshots` times into a repository of its own, a hundredth of its files rewritten
    before each backup (so every snapshot holds a distinct tree of it, sharing most of
    its leaves with the others), then `ls -l` of that directory under `versions/HOST/` through a fresh mount
    with --memory 64M (each file a directory of its versions), and `ls -l` of one file's
    versions. Peak RSS and CPU are the mount process's."""
    wide = work / "versions-src" / "wide"
    shutil.rmtree(wide.parent, ignore_errors=True)
    wide.mkdir(parents=True)
    for i in range(files):
        (wide / f"f{i:07d}").write_text(f"file {i}\n")
    repo = work / "repo-cairn-versions"
    shutil.rmtree(repo, ignore_errors=True)
    env = dict(t.env(), CAIRN_REPO=str(repo))
    sh([CAIRN, "init"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    step = max(1, files // 100)
    start = time.time()
    for k in range(snapshots):
        for i in range(k * step % files, min(files, k * step % files + step)):
            (wide / f"f{i:07d}").write_text(f"file {i}, version {k}\n")
        when = f"2026-01-01 {k // 3600:02d}:{k // 60 % 60:02d}:{k % 60:02d}"
        sh([CAIRN, "backup", "--host", "bench", "--time", when, wide], env=env, stdout=subprocess.DEVNULL)
    print(f"bench: versions: {snapshots} backups of {files:,} files in {time.time() - start:.0f} s",
          file=sys.stderr, flush=True)
    warm(repo)
    mnt = work / "mnt-versions"
    if mounted(mnt):
        sh(["fusermount", "-u", "-z", mnt])
    mnt.mkdir(exist_ok=True)
    inside = mnt / "versions" / "bench" / str(wide).lstrip("/")
    proc = start_mount(t, [CAIRN, "mount", "--memory", "64M", mnt], mnt, inside, env)
    try:
        what = f"versions/: ls -l of {files:,} files across {snapshots} snapshots"
        steps = [(what, ["ls", "-l", inside], False),
                 ("versions/: ls -l of one file's versions", ["ls", "-l", inside / "f0000000"], False)]
        run_mount_steps(work, t, proc, steps, 0, wide, "out of the mount",
                        lambda step, m, wall: record("mount", step, t, files, 0, m, du(repo)))
        listed = subprocess.run(["ls", inside], capture_output=True, text=True, check=True).stdout.split()
        if len(listed) != files:
            raise SystemExit(f"cairn: versions/ lists {len(listed)} names, the directory has {files}")
        rss, _ = proc_status(proc.pid)
        within = "within" if rss <= 64 + 32 else "OVER"
        print(f"bench: cairn versions/: peak RSS {rss:.1f} MiB, {within} --memory 64M + 32 MiB", file=sys.stderr)
    finally:
        stop_mount(proc, mnt)
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(wide.parent, ignore_errors=True)


def run_mount_steps(work, t, proc, steps, data, run_src, what, record_step):
    """Run each (step, client command, writes a tree) against the mount `proc` serves;
    record_step(step, measurement, wall) after each (wall: the client's; RSS and CPU: the
    mount process's). A writing step writes into a fresh filesystem (FreshFs)."""
    for step, client, writes in steps:
        with FreshFs(work, f"cp-{t.name}", data) if writes else contextlib.nullcontext() as out:
            if writes:
                client = client + [out / "tree"]
            sh(["sync"])
            start = time.time()
            p = subprocess.run(list(map(str, client)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            wall = time.time() - start
            if writes and VERIFY and p.returncode == 0:
                same_tree(run_src, out / "tree", f"{t.name}: {step} {what}")
        if p.returncode != 0:
            raise SystemExit(f"{t.name}: {' '.join(map(str, client))} failed: {p.stderr[-2000:]}")
        rss, cpu = proc_status(proc.pid)
        record_step(step, {"wall_s": wall, "cpu_s": cpu, "rss_mib": rss, "exit": 0}, wall)


def mount_latest(work, t, src, prefix="mnt"):
    """Mount t's repository at work/<prefix>-<tool> (unmounting a stale mount there
    first); return the mount process, the mount point and where `src` shows in its
    newest snapshot (borg: its last archive)."""
    mnt = work / f"{prefix}-{t.name}"
    if mounted(mnt):
        sh(["fusermount", "-u", "-z", mnt])
    mnt.mkdir(exist_ok=True)
    cmd = {"cairn": [CAIRN, "mount", mnt], "restic": ["restic", "mount", mnt],
           "borg": ["borg", "mount", "-f", f"::a{t.n}", mnt]}[t.name]
    inside = {"cairn": mnt / "latest", "restic": mnt / "snapshots" / "latest", "borg": mnt}[t.name]
    inside = inside / str(src).lstrip("/")
    return start_mount(t, cmd, mnt, inside), mnt, inside


def start_mount(t, cmd, mnt, inside, env=None):
    """Start t's mount command (in t's environment, or `env`); return its process once
    `inside` shows in the mount."""
    proc = subprocess.Popen(cmd, env=env or t.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (mounted(mnt) and inside.exists()):
        if proc.poll() is not None or time.time() > deadline:
            stop_mount(proc, mnt)
            raise SystemExit(f"{t.name}: mount did not come up: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        time.sleep(0.2)
    return proc


def stop_mount(proc, mnt):
    """End the mount process `proc` and make sure `mnt` is unmounted."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if mounted(mnt):
        sh(["fusermount", "-u", "-z", mnt])


def drop_caches():
    """Write back, then drop the page cache, dentries and inodes (root only)."""
    sh(["sync"])
    pathlib.Path("/proc/sys/vm/drop_caches").write_text("3\n")


def cold_section(a, work, tools, src, files, record):
    """First and unchanged backups with a warm and with a cold page cache (issue 17)."""
    if os.geteuid() != 0:
        print("bench: not root: the cold section (drop_caches) is skipped", file=sys.stderr)
        return
    n_tiny = int(float(a.cold_files or (1e5 if a.quick else 1e6)))
    tiny = corpus(work, f"tiny-{n_tiny}", ["--seed", "3", "--files", str(n_tiny), "--large-mib", "0", "--tiny"])
    for name, s, n in [("main", pristine(work, src), files), (f"{n_tiny:,} tiny files", tiny, n_tiny)]:
        d = du(s)
        for cold in (False, True):
            for t in tools:
                t.reset()
            for step in ("1 first backup", "2 unchanged"):
                if not cold:
                    warm(s)
                for t in tools:
                    if cold:
                        drop_caches()
                    label = f"{name}, {'cold' if cold else 'warm'}: {step}"
                    record("cold", label, t, n, d, measure(t, t.backup(s)), du(t.repo))
    for t in tools:
        shutil.rmtree(t.repo, ignore_errors=True)


def series_section(work, tools, series, record):
    """Memory scaling: first backup of n tiny files."""
    for n in series:
        s = corpus(work, f"series-{n}", ["--seed", "2", "--files", str(n), "--large-mib", "0", "--tiny"])
        d = du(s)
        warm(s)
        for t in tools:
            t.reset()
            record("series", f"backup {n} files", t, n, d, measure(t, t.backup(s)), du(t.repo))
    for t in tools:
        shutil.rmtree(t.repo, ignore_errors=True)


def repo_section(a, work, tools, record):
    """cairn: peak RSS as the repository grows (same small backup, more index entries)."""
    t = next(t for t in tools if t.name == "cairn")
    s = corpus(work, "series-10000", ["--seed", "2", "--files", "10000", "--large-mib", "0", "--tiny"])
    d = du(s)
    warm(s)
    for n in [int(float(x)) for x in (a.repo_series or ("1e4,1e6" if a.quick else "1e4,1e6,1e7,1e8")).split(",") if x]:
        t.reset()
        inject(t, n)
        record("repo", f"10^4 files, {n:,} entries", t, 10_000, d, measure(t, t.backup(s)), du(t.repo))
    shutil.rmtree(t.repo, ignore_errors=True)


def index_section(a, work):
    """cairn's own chunk index at scale: synthetic entries through the real load path."""
    index_rows = []
    for n in [int(float(x)) for x in (a.index_series or ("1e6,1e7" if a.quick else "1e6,1e7,1e8")).split(",") if x]:
        d = work / "indexbench"
        p = subprocess.run([INDEXBENCH, "--entries", str(n), "--dir", d], capture_output=True, text=True, check=True)
        shutil.rmtree(d, ignore_errors=True)
        r = __import__("json").loads(p.stdout.strip().splitlines()[-1])
        index_rows.append(r)
        print(f"index    {n:>12} entries: {r['inserts_per_s']:.0f} inserts/s, {r['negative_lookups_per_s']:.0f} negative "
              f"{r['known_lookups_per_s']:.0f} known and {r['location_lookups_per_s']:.0f} location lookups/s "
              f"({r['page_reads_per_s']:.0f} page reads/s), "
              f"{r['index_ram_per_entry']:.2f} B/entry, {r['runs']} runs, peak RSS {r['peak_rss_kib'] / 1024:.1f} MiB",
              file=sys.stderr, flush=True)
    return index_rows


# The lifecycle section: day 0's snapshot time (local), and the retention policy applied.
LIFECYCLE_START = datetime.datetime(2026, 1, 1, 12, 0, 0)
LIFECYCLE_KEEP_DAILY, LIFECYCLE_KEEP_WEEKLY = 7, 2


def lifecycle_section(a, work, tools, files, large, record):
    """A month of daily backups, then retention: forget and prune, against a fresh backup.

    Every tool backs up a fresh copy of the main corpus once a day for --lifecycle-days
    days (default 30): day k's snapshot gets the time 2026-01-01 12:00 + k days (local
    time: cairn's and restic's `backup --time`; borg's `create --timestamp`, given the
    same instant in UTC). Before day k (k >= 1) the change set with seed 1000 + k is
    applied once, and every tool backs up day k before the next change, so all see the
    same data on every day. Every snapshot has the same host and path: cairn's and
    restic's policies (per group of host and paths) see one group, borg's the whole
    repository; the section checks this before it forgets.

    The measured step is forget --keep-daily 7 --keep-weekly 2, then prune, each tool's
    repository read into the page cache first: cairn as one process (`cairn forget
    --keep-daily 7 --keep-weekly 2 --prune`), restic as one (`restic forget ... --prune`),
    borg as `borg prune ...` then `borg compact` (times summed, peak RSS the larger).
    Rows: "N daily backups" (times summed over the days, the largest peak RSS, the
    repository after the last), "forget+prune" (the repository after it) and, for cairn,
    "fresh backup of kept": a new cairn repository holding only the kept snapshots. It is
    made by restoring each kept snapshot, oldest first, and rsyncing it by content
    (`--checksum`) into the corpus directory, so that files unchanged from one kept
    snapshot to the next keep their inode and ctime as in the daily run (a tree entry
    holds both: a fresh restore of every snapshot would make every tree new), then backing
    it up with the snapshot's original time. Chunk boundaries depend on a secret of each
    repository, so the fresh repository's chunks are not the original's, and its size
    varies from one fresh repository to the next: measured, within 1% of each other for
    three fresh repositories of the same 7 snapshots of the --quick main corpus (10^4
    files, 256 MiB), but 6-14% apart from the original on a corpus of a few MiB (the test
    suite's), even with nothing forgotten, where the ~1 MiB chunk the day's log edit adds
    is most of what changes.

    The report (table.md) lists what each tool kept beside what its documented rules keep:
    restic's, which cairn follows (a snapshot kept for one rule also fills the period of
    every other rule it opens, so with 30 days the 2 weekly ones are among the 7 daily
    ones), and borg 1.2's (a rule skips archives an earlier rule kept, so borg keeps 2
    more). A difference is reported, never hidden. Then the targets, reported as they
    are: cairn's forget+prune at least 3x faster than each peer's and with lower peak RSS
    than both; its repository after prune within 3% of the smallest peer's and within 2%
    of the fresh backup of the kept snapshots (smaller counts as within). With --verify, cairn must keep exactly the
    snapshots restic's rules keep, `cairn check --read-data` must pass after the prune,
    and the newest snapshot, restored, must equal the corpus.

    The change set is applied day after day to one tree (an append to a file an earlier
    day deleted creates it).

    --quick: a corpus of 10^3 small files and 16 MiB of large ones (unless --files or
    --large-mib say otherwise), still 30 days: 2-3 minutes for the three tools here,
    most of it each tool's fixed cost per backup (key derivation, locks, start-up); its
    repository sizes are too small for the size comparisons to mean much. Without
    --quick it is the main corpus.
    """
    days = a.lifecycle_days
    if days < 1:
        raise SystemExit("bench: --lifecycle-days must be at least 1")
    policy = ["--keep-daily", str(LIFECYCLE_KEEP_DAILY), "--keep-weekly", str(LIFECYCLE_KEEP_WEEKLY)]
    name = "corpus"
    if a.quick and (a.files is None or a.large_mib is None):
        # 30 days of the quick main corpus take ~4 minutes of backups for the three tools.
        files, large, name = a.files or 1000, large if a.large_mib is not None else 16, "corpus-lifecycle"
    src = corpus(work, name, ["--seed", "1", "--files", str(files), "--large-mib", str(large), "--xattrs", "10"])
    # A copy of its own: the change sets of 30 days mutate it.
    run_src = work / "lifecycle"
    sh(["rsync", "-aHX", "--delete", f"{src}/", f"{run_src}/"])
    stamps = [LIFECYCLE_START + datetime.timedelta(days=k) for k in range(days)]
    for t in tools:
        t.reset()
    warm(run_src)
    backups = {t.name: [] for t in tools}
    for k, when in enumerate(stamps):
        if k:
            sh([CORPUS, "change", run_src, "--seed", str(1000 + k), "--files", str(files)])
        for t in tools:
            backups[t.name].append(measure(t, lifecycle_backup(t, k, when, run_src)))
        print(f"lifecycle day {k + 1}/{days} ({when:%Y-%m-%d}) backed up by {','.join(t.name for t in tools)}",
              file=sys.stderr, flush=True)
    data = du(run_src)
    before, after, kept, prune = {}, {}, {}, {}
    for t in tools:
        before[t.name] = du(t.repo)
        record("lifecycle", f"{days} daily backups", t, files, data, lifecycle_total(backups[t.name]), before[t.name])
    for t in tools:
        snaps = lifecycle_snapshots(t)
        if len(snaps) != days:
            raise SystemExit(f"bench: {t.name} holds {len(snaps)} snapshots after {days} daily backups")
        groups = {(s["host"], s["paths"]) for s in snaps}
        if len(groups) != 1:
            raise SystemExit(f"bench: {t.name}'s snapshots fall into {len(groups)} groups of host and paths, not one: {groups}")
    for t in tools:
        warm(t.repo)
        if t.name == "borg":
            m = lifecycle_total([measure(t, ["borg", "prune", *policy]), measure(t, ["borg", "compact"])])
        else:
            m = measure(t, [CAIRN if t.name == "cairn" else "restic", "forget", *policy, "--prune"])
        after[t.name] = du(t.repo)
        prune[t.name] = m
        record("lifecycle", "forget+prune", t, files, data, m, after[t.name])
        kept[t.name] = sorted(s["date"] for s in lifecycle_snapshots(t))
    dates = [w.date() for w in stamps]
    rules = {"restic": lifecycle_keep_restic(dates, LIFECYCLE_KEEP_DAILY, LIFECYCLE_KEEP_WEEKLY),
             "borg": lifecycle_keep_borg(dates, LIFECYCLE_KEEP_DAILY, LIFECYCLE_KEEP_WEEKLY)}
    rules["cairn"] = rules["restic"]
    c = next((t for t in tools if t.name == "cairn"), None)
    fresh_size, unused = None, None
    if c:
        if VERIFY and kept["cairn"] != rules["cairn"]:
            raise SystemExit(f"bench: cairn kept {lifecycle_dates(kept['cairn'])}, restic's rules keep "
                             f"{lifecycle_dates(rules['cairn'])}")
        target = work / "lifecycle-restore"
        if VERIFY:
            lifecycle_run(c, [CAIRN, "check", "--read-data"])
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            lifecycle_run(c, [CAIRN, "restore", "latest", "--target", target])
            same_tree(run_src, target / str(run_src).lstrip("/"), "cairn's restore of the newest snapshot after prune")
        # What prune left unused (it stops repacking once at most --max-unused, 5%, is left).
        plan = __import__("json").loads(lifecycle_run(c, [CAIRN, "prune", "--dry-run", "--json"]).strip().splitlines()[-1])
        unused = plan["summary"]["unused_bytes"]
        # A fresh repository of the kept snapshots, oldest first, at their own times.
        fresh = Tool("cairn", work)
        fresh.repo, fresh.base = work / "repo-cairn-fresh", work / "home-cairn-fresh"
        fresh.reset()
        ms = []
        for s in sorted(lifecycle_snapshots(c), key=lambda s: s["time"]):
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            lifecycle_run(c, [CAIRN, "restore", s["id"], "--target", target])
            sh(["rsync", "-aHX", "--delete", "--checksum", f"{target / str(run_src).lstrip('/')}/", f"{run_src}/"])
            ms.append(measure(fresh, [CAIRN, "backup", "--time", s["time"], run_src]))
        fresh_size = du(fresh.repo)
        record("lifecycle", "fresh backup of kept", fresh, files, data, lifecycle_total(ms), fresh_size)
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(fresh.repo, ignore_errors=True)
        shutil.rmtree(fresh.base, ignore_errors=True)
    return lifecycle_report(days, files, large, tools, before, after, kept, prune, rules, fresh_size, unused)


def lifecycle_report(days, files, large, tools, before, after, kept, prune, rules, fresh_size, unused):
    """The lifecycle section's table and verdicts, for table.md."""
    names = [t.name for t in tools]
    lines = ["", f"### Lifecycle: {days} daily backups of {files:,} small files + {large} MiB of large files, then "
             f"forget --keep-daily {LIFECYCLE_KEEP_DAILY} --keep-weekly {LIFECYCLE_KEEP_WEEKLY} and prune", "",
             "cairn: `forget --prune` (one process); restic: `forget --prune`; borg: `prune` + `compact` (times summed, "
             "peak RSS the larger). Ratios are peer / cairn.", "",
             "| tool | snapshots kept | kept (dates) | its rules keep | repository before (MiB) | after prune (MiB) "
             "| forget+prune wall (s) | CPU (s) | peak RSS (MiB) |", "|---" * 9 + "|"]

    def cell(n, value, base):
        if n == "cairn" or base is None:
            return f"{value:.1f}"
        return f"{value:.1f} ({ratio(value, base):.2f}x)"

    has_c = "cairn" in names
    for n in names:
        same = "same" if kept[n] == rules[n] else f"**{len(rules[n])}: {lifecycle_dates(rules[n])}**"
        lines.append(f"| {n} | {len(kept[n])} | {lifecycle_dates(kept[n])} | {same} | "
                     f"{cell(n, before[n] / MIB, before['cairn'] / MIB if has_c else None)} | "
                     f"{cell(n, after[n] / MIB, after['cairn'] / MIB if has_c else None)} | "
                     + " | ".join(cell(n, prune[n][k], prune["cairn"][k] if has_c else None)
                                  for k in ("wall_s", "cpu_s", "rss_mib")) + " |")
    if fresh_size is not None:
        lines.append(f"| cairn, fresh backup of the kept snapshots | {len(kept['cairn'])} | same as cairn | – | – | "
                     f"{fresh_size / MIB:.1f} | – | – | – |")
    lines.append("")
    counts = {n: len(kept[n]) for n in names}
    if len(set(counts.values())) == 1:
        lines.append(f"Every tool kept {counts[names[0]]} snapshots.")
    else:
        lines.append("The tools kept different numbers of snapshots: "
                     + ", ".join(f"{n} {c}" for n, c in counts.items()) + ".")
    said = [f"restic's rules (cairn follows them: a snapshot kept as daily also fills its week's weekly slot) keep "
            f"{len(rules['restic'])}: {lifecycle_dates(rules['restic'])}"]
    if "borg" in names:
        said.append(f"borg 1.2's (a rule skips what an earlier rule kept) keep {len(rules['borg'])}: "
                    f"{lifecycle_dates(rules['borg'])}")
    lines.append("; ".join(said) + ".")
    for n in names:
        if kept[n] != rules[n]:
            lines.append(f"**{n} kept {lifecycle_dates(kept[n])}, not what its rules keep.**")
    if not has_c:
        return lines
    c_after = after["cairn"]
    if fresh_size:
        pct = (c_after / fresh_size - 1) * 100
        lines.append(f"After prune cairn's repository ({c_after / MIB:.1f} MiB) is {pct:+.1f}% against a fresh cairn "
                     f"backup of the kept snapshots ({fresh_size / MIB:.1f} MiB): target within 2%, "
                     f"{'met' if pct <= 2 else 'not met'}. Prune left {unused / MIB:.1f} MiB unused in the packs it "
                     f"kept ({unused / c_after * 100:.1f}% of the repository; `--max-unused` default 5%).")
    peers = [n for n in names if n != "cairn"]
    if peers:
        small = min(peers, key=lambda n: after[n])
        pct = (c_after / after[small] - 1) * 100
        like = "" if counts[small] == counts["cairn"] else \
            f" ({small} kept {counts[small]} snapshots against cairn's {counts['cairn']}: not like for like)"
        lines.append(f"Against the smallest peer repository after prune, {small}'s ({after[small] / MIB:.1f} MiB), "
                     f"cairn's is {pct:+.1f}%{like}: target within 3%, {'met' if pct <= 3 else 'not met'}.")
        speed = [f"{n} {ratio(prune[n]['wall_s'], prune['cairn']['wall_s']):.2f}x" for n in peers]
        fast = all(ratio(prune[n]["wall_s"], prune["cairn"]["wall_s"]) >= 3 for n in peers)
        lean = all(prune["cairn"]["rss_mib"] < prune[n]["rss_mib"] for n in peers)
        lines.append(f"forget+prune wall time, peer / cairn: {', '.join(speed)}: target at least 3x, "
                     f"{'met' if fast else 'not met'}. Peak RSS: cairn {prune['cairn']['rss_mib']:.1f} MiB, "
                     + ", ".join(f"{n} {prune[n]['rss_mib']:.1f} MiB" for n in peers)
                     + f": target lower than every peer, {'met' if lean else 'not met'}.")
    return lines


def lifecycle_backup(t, k, when, src):
    """Day k's backup command, with the snapshot time `when` (naive, local)."""
    if t.name == "borg":
        utc = when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")  # borg takes UTC
        return ["borg", "create", "--compression", "zstd,3", "--timestamp", utc, f"::day-{k}", src]
    return [CAIRN if t.name == "cairn" else "restic", "backup", "--time", f"{when:%Y-%m-%d %H:%M:%S}", src]


def lifecycle_run(t, cmd):
    """Run an unmeasured command of tool t; its stdout, or stop the run if it fails."""
    p = subprocess.run(list(map(str, cmd)), env=t.env(), capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{t.name}: {' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return p.stdout


def lifecycle_snapshots(t):
    """Tool t's snapshots: id, local date, local time (YYYY-MM-DD HH:MM:SS), host and paths
    (borg: None, None; its prune does not group)."""
    json = __import__("json")
    if t.name == "cairn":
        out = []
        for s in json.loads(lifecycle_run(t, [CAIRN, "snapshots", "--json"])):
            when = datetime.datetime.fromtimestamp(s["time_ns"] / 1e9)
            out.append({"id": s["id"], "date": when.date(), "time": f"{when:%Y-%m-%d %H:%M:%S}", "host": s["host"],
                        "paths": tuple(s["paths"])})
        return out
    if t.name == "restic":
        # Times are local with an offset: the first 19 characters are the local time.
        return [{"id": s["id"], "date": datetime.date.fromisoformat(s["time"][:10]),
                 "time": s["time"][:19].replace("T", " "), "host": s["hostname"], "paths": tuple(s["paths"])}
                for s in json.loads(lifecycle_run(t, ["restic", "snapshots", "--json"]))]
    return [{"id": s["name"], "date": datetime.date.fromisoformat(s["time"][:10]), "time": s["time"][:19].replace("T", " "),
             "host": None, "paths": None} for s in json.loads(lifecycle_run(t, ["borg", "list", "--json"]))["archives"]]


def lifecycle_total(ms):
    """Several measured runs as one: times summed, the largest peak RSS."""
    return {"wall_s": sum(m["wall_s"] for m in ms), "cpu_s": sum(m["cpu_s"] for m in ms),
            "rss_mib": max(m["rss_mib"] for m in ms), "exit": max(m["exit"] for m in ms)}


def lifecycle_keep_restic(dates, daily, weekly):
    """The dates (one snapshot each) restic's rules keep: newest first, a snapshot is kept if
    it opens a new period of some rule with count left, and uses up one of the count of
    every such rule."""
    kept, last, left = [], {}, {"daily": daily, "weekly": weekly}
    for d in sorted(dates, reverse=True):
        keep = False
        for rule, period in (("daily", d), ("weekly", d.isocalendar()[:2])):
            if left[rule] > 0 and last.get(rule) != period:
                last[rule], left[rule], keep = period, left[rule] - 1, True
        if keep:
            kept.append(d)
    return sorted(kept)


def lifecycle_keep_borg(dates, daily, weekly):
    """The dates borg 1.2's prune keeps: rule by rule (daily, then weekly), newest first, the
    first archive of each new period is kept unless an earlier rule kept it, in which case
    the period is used up without counting."""
    kept = set()
    for n, period in ((daily, lambda d: d), (weekly, lambda d: d.isocalendar()[:2])):
        last, count = None, 0
        for d in sorted(dates, reverse=True):
            if count == n:
                break
            if period(d) != last:
                last = period(d)
                if d not in kept:
                    kept.add(d)
                    count += 1
    return sorted(kept)


def lifecycle_dates(dates):
    """Dates as MM-DD, runs of consecutive days shortened: 01-11, 01-18, 01-24..01-30."""
    parts, i = [], 0
    while i < len(dates):
        j = i
        while j + 1 < len(dates) and dates[j + 1] - dates[j] == datetime.timedelta(days=1):
            j += 1
        parts.append(f"{dates[i]:%m-%d}" + (f"..{dates[j]:%m-%d}" if j > i else ""))
        i = j + 1
    return ", ".join(parts) if parts else "none"


def finish(a, out, rows, tools, files, large, cg_lines, index_rows):
    """Write results.tsv, index.tsv, table.md and the plots."""
    write_outputs(out, rows, [t.name for t in tools], {t.name: t.version() for t in tools}, a, files, large)
    if index_rows:
        cols = list(index_rows[0].keys())
        with open(out / "index.tsv", "w") as f:
            f.write("\t".join(cols) + "\n")
            for r in index_rows:
                f.write("\t".join(str(r[c]) for c in cols) + "\n")
        lines = ["", "### cairn's chunk index (synthetic entries, default 256M budget, one core)", "",
                 "Known: is this id stored (the dedup question of a backup). Location: where is it (restore, mount), "
                 "which also reads the pack's id from the pack table. A page read is one random 4 KiB `pread` "
                 "of the index's run file, the yardstick for a known-chunk lookup.", "",
                 "| entries | load (inserts/s) | negative lookups/s | known lookups/s | location lookups/s | page reads/s | runs | index RAM per entry | peak RSS (MiB) |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in index_rows:
            lines.append(f"| {r['entries']:,} | {r['inserts_per_s']:,.0f} | {r['negative_lookups_per_s']:,.0f} | "
                         f"{r['known_lookups_per_s']:,.0f} | {r['location_lookups_per_s']:,.0f} | {r['page_reads_per_s']:,.0f} | {r['runs']} | "
                         f"{r['index_ram_per_entry']:.2f} B | {r['peak_rss_kib'] / 1024:.1f} |")
        with open(out / "table.md", "a") as f:
            f.write("\n".join(lines) + "\n")
        print("\n".join(lines))
    if cg_lines:
        with open(out / "table.md", "a") as f:
            f.write("\n".join(cg_lines) + "\n")
        print("\n".join(cg_lines))
    if not a.no_plots and rows:
        plots(out, rows, [t.name for t in tools])
    print(f"bench: results in {out}", file=sys.stderr)


def write_outputs(out, rows, names, versions, a, files, large):
    cols = ["section", "step", "tool", "files", "data_mib", "wall_s", "cpu_s", "rss_mib", "repo_mib", "exit"]
    with open(out / "results.tsv", "w") as f:
        f.write("\t".join(cols) + "\n")
        for r in rows:
            f.write("\t".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + "\n")
    lines = [f"Machine: {machine()}", "", "Versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()), "",
             f"Run: `scripts/bench{' --quick' if a.quick else ''}` on {datetime.date.today()}; main corpus {files} small files "
             f"+ {large} MiB of large files. Ratios are peer / cairn: above 1 = cairn better, below 1 = cairn behind.", ""]
    by = {(r["section"], r["step"], r["tool"]): r for r in rows}
    steps = list(dict.fromkeys((r["section"], r["step"]) for r in rows))
    for metric, label, unit in [("wall_s", "Wall time", "s"), ("cpu_s", "CPU time (user+sys)", "s"),
                                ("rss_mib", "Peak RSS", "MiB"), ("repo_mib", "Repository size after the step", "MiB")]:
        lines += [f"### {label} ({unit})", "", "| step | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for sec, step in steps:
            if metric == "repo_mib" and step == "4 restore":
                continue
            cells = []
            base = by.get((sec, step, "cairn"))
            for n in names:
                r = by.get((sec, step, n))
                if not r:
                    cells.append("–")
                elif n == "cairn" or not base:
                    cells.append(f"{r[metric]:.1f}")
                else:
                    cells.append(f"{r[metric]:.1f} ({ratio(r[metric], base[metric]):.2f}x)")
            lines.append(f"| {sec}: {step} | " + " | ".join(cells) + " |")
        lines.append("")
    (out / "table.md").write_text("\n".join(lines))
    print("\n".join(lines))


def plots(out, rows, names):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib missing (pip install matplotlib); no plots", file=sys.stderr)
        return
    if any(r["section"] == "series" for r in rows):
        plot_series(plt, out, rows, names)
    if any(r["section"] == "main" for r in rows):
        plot_main(plt, out, rows, names)


def plot_series(plt, out, rows, names):
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in names:
        pts = sorted((r["files"], r["rss_mib"]) for r in rows if r["section"] == "series" and r["tool"] == n)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=n)
    ax.set_xscale("log")
    ax.set_xlabel("files in the first backup")
    ax.set_ylabel("peak RSS (MiB)")
    ax.set_title("Peak memory of a first backup")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "rss-vs-files.png", dpi=110)
    plt.close(fig)


def plot_main(plt, out, rows, names):
    steps = list(dict.fromkeys(r["step"] for r in rows if r["section"] == "main"))
    fig, ax = plt.subplots(figsize=(7, 4))
    w = 0.8 / max(len(names), 1)
    for i, n in enumerate(names):
        vals = []
        for s in steps:
            r = next((r for r in rows if r["section"] == "main" and r["step"] == s and r["tool"] == n), None)
            vals.append(r["data_mib"] / r["wall_s"] if r and r["wall_s"] > 0 else 0)
        ax.bar([j + i * w for j in range(len(steps))], vals, w, label=n)
    ax.set_xticks([j + w * (len(names) - 1) / 2 for j in range(len(steps))], steps)
    ax.set_yscale("log")
    ax.set_ylabel("MiB of source data per second (log)")
    ax.set_title("Throughput per step (higher is better)")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)


# The prune-scale section: cairn-synth's binary, and the budget it generates with (the
# index cache's memtable; bigger means fewer spills and merges while generating).
SYNTH = ROOT / "target/release/cairn-synth"
PRUNE_SCALE_SYNTH_MEMORY = "1G"


def prune_scale_section(a, work, out, tools, record):
    """cairn's prune at 10^6, 10^7, 10^8 blobs (--prune-series; --quick: 10^5, 10^6), then
    under a memory cgroup beside restic's; returns table lines.

    Each repository is made by `cairn-synth --blobs N` (src/bin/cairn-synth.rs): N
    distinct 16-byte data blobs sealed by cairn and written by its packer (real packs,
    index files and local index cache), files of 1000 chunks whose chunk lists and
    directories (1000 files each) are written by cairn's tree writers, and two
    snapshots: A of blobs [0, 0.6N), B of [0.4N, N). Then `cairn forget A` and the
    measured `cairn --memory M prune` (M = 4/5 of --cgroup-mib: 128M), which deletes the
    packs only A used and repacks the mixed ones. Generation, forget and the stats and
    phase times prune prints are reported beside it, not measured.
    """
    t = next(t for t in tools if t.name == "cairn")
    series = [int(float(x)) for x in (a.prune_series or ("1e5,1e6" if a.quick else "1e6,1e7,1e8")).split(",") if x]
    budget_mib = a.cgroup_mib * 4 // 5
    lines = ["", f"### Prune of synthetic repositories (cairn-synth: tiny blobs in real packs, snapshot A of blobs "
             f"[0, 0.6N) forgotten, B of [0.4N, N) kept), `--memory {budget_mib}M`", "",
             "| blobs | generated in (s) | repository | prune wall (s) | CPU (s) | peak RSS (MiB) | within budget + 32 MiB | "
             "packs deleted | packs repacked | blobs repacked | index files rewritten | after | phases (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in series:
        gen = prune_scale_generate(t, n)
        before = du(t.repo)
        m, p = prune_scale_run(t, [CAIRN, "--memory", f"{budget_mib}M", "prune"], None)
        if not t.ok(m["exit"]):
            raise SystemExit(f"cairn: prune of {n:,} blobs failed ({m['exit']}):\n{p.stderr[-2000:]}")
        record("prune-scale", f"prune {prune_scale_n(n)} blobs", t, n, before, m, du(t.repo))
        (out / f"prune-scale-{n}.log").write_text(f"{gen}\n\n{p.stdout}\n{p.stderr}")
        s = prune_scale_stats(p.stdout)
        phases = prune_scale_phases(p.stderr, m["wall_s"])
        ok = "yes" if m["rss_mib"] <= budget_mib + 32 else "**no**"
        lines.append(f"| {n:,} | {gen['elapsed_s']:.0f} | {before / MIB:,.0f} MiB, {gen['packs']:,} packs | {m['wall_s']:.1f} | "
                     f"{m['cpu_s']:.1f} | {m['rss_mib']:.1f} | {ok} | {s.get('deleted', '?')} | {s.get('repacked', '?')} | "
                     f"{s.get('blobs_repacked', '?')} | {s.get('index_files', '?')} | {s.get('after', '?')} | "
                     f"{', '.join(f'{k} {v:.1f}' for k, v in phases)} |")
        print(f"prune-scale {n:>11,} blobs: generated in {gen['elapsed_s']:.0f} s; prune {m['wall_s']:.1f} s, "
              f"cpu {m['cpu_s']:.1f} s, rss {m['rss_mib']:.1f} MiB; {s}; phases {phases}", file=sys.stderr, flush=True)
        prune_scale_clean(t)
    lines += prune_scale_cgroups(a, work, out, tools, series, budget_mib, record)
    return lines


def crash_section(a, work, out):
    """scripts/faults' kill and prune trials (--quick: the test suite's size): SIGKILL of
    backup at 20 random moments (of 50 kills: key add and repairs too), of prune at 20
    on sources ten times larger, and 20 backups racing prunes, each followed by `check
    --read-data` and a restore of every remaining snapshot compared with its source; a
    failure fails the run. Not a measurement: the time is reported only."""
    small = a.quick or a.crash_size == "small"
    # The small size is the smoke run's: scripts/test.sh runs the kill trials itself.
    args = ["--only", "prune" if small else "kill,prune", "--bin", str(CAIRN), "--work", str(work / "crash")]
    args += ["--short"] if small else ["--big"]
    shutil.rmtree(work / "crash", ignore_errors=True)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(ROOT / "scripts/faults"), *args], capture_output=True, text=True)
    took = time.monotonic() - t0
    (out / "crash.log").write_text(p.stdout + p.stderr)
    if p.returncode != 0:
        raise SystemExit(f"bench: the crash trials failed:\n{p.stdout[-2000:]}{p.stderr[-4000:]}")
    summary = "; ".join(l for l in p.stdout.splitlines() if l.startswith(("kill -9:", "prune:"))) or p.stdout.strip()[-300:]
    print(f"bench: crash trials passed in {took:.0f} s: {summary}", file=sys.stderr, flush=True)
    size = "the test suite's size (--short)" if small else "sources ten times the test suite's (--big)"
    return ["", f"### Crash trials (scripts/faults {' '.join(args[:2])}, {size})", "", f"Passed in {took:.0f} s: {summary}"]


def prune_scale_n(n):
    """10^k for a power of ten, else n with separators."""
    k = len(str(n)) - 1
    return f"10^{k}" if n == 10 ** k else f"{n:,}"


def prune_scale_generate(t, n):
    """A fresh synthetic repository of n blobs for tool t (cairn), snapshot A forgotten;
    returns cairn-synth's JSON."""
    prune_scale_clean(t)
    t.base.mkdir(parents=True)
    print(f"bench: generating a repository of {n:,} blobs (cairn-synth)", file=sys.stderr, flush=True)
    p = subprocess.run([SYNTH, "--repo", t.repo, "--blobs", str(n), "--memory", PRUNE_SCALE_SYNTH_MEMORY,
                        "--cache-dir", t.base / "cache" / "cairn"], env=t.env(), capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"cairn-synth --blobs {n} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    gen = __import__("json").loads(p.stdout.strip().splitlines()[-1])
    sh([CAIRN, "forget", gen["snapshot_a"]], env=t.env(), stdout=subprocess.DEVNULL)
    return gen


def prune_scale_clean(t):
    shutil.rmtree(t.repo, ignore_errors=True)
    shutil.rmtree(t.base, ignore_errors=True)


def prune_scale_run(t, cmd, cg):
    """Run cmd under GNU time (inside memory cgroup `cg` if given), keeping its output:
    (measure()'s dict, the CompletedProcess)."""
    sh(["sync"])
    if cg is not None:
        cmd = ["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$@"', "sh", *cmd]
    with tempfile.NamedTemporaryFile("r") as tf:
        p = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", tf.name, *map(str, cmd)], env=t.env(),
                           capture_output=True, text=True)
        fields = tf.read().split()[-4:]
    wall, user, sys_, rss = float(fields[0]), float(fields[1]), float(fields[2]), int(fields[3])
    return {"wall_s": wall, "cpu_s": user + sys_, "rss_mib": rss / 1024, "exit": p.returncode}, p


def prune_scale_stats(text):
    """The figures of cairn prune's printed summary."""
    import re
    s = {}
    for key, pat in [("deleted", r"deleted (\d+) packs with nothing used, ([^\n(]+)"),
                     ("repacked", r"repacked (\d+) packs, ([^:\n]+)"),
                     ("blobs_repacked", r"repacked \d+ packs, [^:\n]+: (\d+) blobs into ([^\n]+)"),
                     ("index_files", r"rewrote (\d+) index files \((\d+) entries dropped\)"),
                     ("after", r"repository now: ([^\n]+)"),
                     ("use", r"(\d+) snapshots use (\d+) blobs; (\d+) packs, ([^:]+):")]:
        mt = re.search(pat, text)
        if mt:
            g = mt.groups()
            s[key] = {"deleted": lambda: f"{g[0]} ({g[1].strip()})", "repacked": lambda: f"{g[0]} ({g[1].strip()})",
                      "blobs_repacked": lambda: f"{g[0]} into {g[1].strip()}",
                      "index_files": lambda: f"{g[0]} ({g[1]} entries dropped)", "after": lambda: g[0].strip(),
                      "use": lambda: f"{g[1]} blobs used, {g[2]} packs of {g[3]}"}[key]()
    return s


def prune_scale_phases(stderr, wall):
    """(phase, seconds) from prune's progress lines: a phase runs from its first line to
    the next phase's (the last one to the end of the process)."""
    import re
    starts = []
    for line in stderr.splitlines():
        mt = re.match(r"\[\s*([\d.]+)s\] ([^:]+)$", line)
        if mt:
            starts.append((mt.group(2), float(mt.group(1))))
    short = {"finding the blobs the snapshots use": "mark", "adding up used and unused bytes per pack": "account",
             "deciding which packs to delete and repack": "plan", "repacking used blobs": "repack",
             "rewriting index files": "index", "deleting packs": "delete",
             "updating the local index cache": "cache"}
    return [(short.get(name, name), (starts[i + 1][1] if i + 1 < len(starts) else wall) - at)
            for i, (name, at) in enumerate(starts)]


def prune_scale_cgroups(a, work, out, tools, series, budget_mib, record):
    """Prune inside a memory cgroup of --cgroup-mib: cairn on a synthetic repository of
    --prune-cgroup-blobs (10^7; --quick: the largest of the series), then restic and
    cairn on the same 10^6 (--quick: 10^5) small files backed up twice (the change set
    applied between), the first snapshot forgotten."""
    version, root = memory_cgroups()
    if version is None:
        print("bench: no memory cgroup controller here; skipping prune-scale's cgroup runs", file=sys.stderr)
        return []
    limit = a.cgroup_mib << 20
    t = next(t for t in tools if t.name == "cairn")
    lines = ["", f"### Prune under a {a.cgroup_mib} MiB memory cgroup (cgroup {version}, enforced by the kernel)", "",
             "| tool | repository | command | result | wall (s) | CPU (s) | peak RSS (MiB) |", "|---|---|---|---|---|---|---|"]

    def in_cgroup(tool, what, cmd, shown):
        cg = make_cgroup(version, root, f"cairn-bench-{os.getpid()}-prune-{tool.name}", limit)
        try:
            m, p = prune_scale_run(tool, cmd, cg)
            oom = oom_kills(version, cg)
        finally:
            cg.rmdir()
        if oom or m["exit"] in (137, -9):
            result = f"OOM-killed (exit {m['exit']})"
        elif m["exit"] == 0:
            result = "completed (exit 0)"
        else:
            last = p.stderr.strip().splitlines()[-1][:120] if p.stderr.strip() else ""
            result = f"failed (exit {m['exit']}): {last}"
        lines.append(f"| {tool.name} | {what} | `{shown}` | {result} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | {m['rss_mib']:.1f} |")
        print(f"prune-scale cgroup {tool.name:7} {what}: {result}, {m['wall_s']:.1f} s, rss {m['rss_mib']:.1f} MiB",
              file=sys.stderr, flush=True)
        (out / f"prune-scale-cgroup-{tool.name}-{len(lines)}.log").write_text(f"{p.stdout}\n{p.stderr}")
        return m, p

    # cairn, synthetic repository.
    n = int(a.prune_cgroup_blobs or (max(series) if a.quick else 1e7))
    gen = prune_scale_generate(t, n)
    cmd = [CAIRN, "--memory", f"{budget_mib}M", "prune"]
    m, p = in_cgroup(t, f"{n:,} blobs (cairn-synth), {gen['packs']:,} packs", cmd, f"cairn --memory {budget_mib}M prune")
    if m["exit"] == 0:
        print(f"prune-scale cgroup cairn stats: {prune_scale_stats(p.stdout)}; phases "
              f"{prune_scale_phases(p.stderr, m['wall_s'])}", file=sys.stderr, flush=True)
    prune_scale_clean(t)

    # restic and cairn on the same small files: backup, change, backup, forget the first.
    files = int(a.prune_cgroup_files or (1e5 if a.quick else 1e6))
    peers = [x for x in tools if x.name in ("cairn", "restic")]
    src = work / "prune-scale-src"  # changed below: made afresh every run
    two_backups(peers, src, 2, files, "the prune cgroup run",
                lambda k, x, data, m: record("prune-scale", f"backup {k} of {prune_scale_n(files)} files", x, files, data,
                                             m, du(x.repo)))
    json = __import__("json")
    for x in peers:
        if x.name == "restic":
            snaps = json.loads(subprocess.run(["restic", "snapshots", "--json"], env=x.env(), capture_output=True,
                                              text=True, check=True).stdout)
            first = min(snaps, key=lambda s: s["time"])["id"]
            sh(["restic", "forget", first], env=x.env(), stdout=subprocess.DEVNULL)
            cmd, shown = ["restic", "prune"], "restic prune"
        else:
            snaps = json.loads(subprocess.run([CAIRN, "snapshots", "--json"], env=x.env(), capture_output=True,
                                              text=True, check=True).stdout)
            first = min(snaps, key=lambda s: s["time_ns"])["id"]
            sh([CAIRN, "forget", first], env=x.env(), stdout=subprocess.DEVNULL)
            cmd, shown = [CAIRN, "--memory", f"{budget_mib}M", "prune"], f"cairn --memory {budget_mib}M prune"
        before = du(x.repo)
        in_cgroup(x, f"{files:,} small files, 2 snapshots, first forgotten ({before / MIB:,.0f} MiB)", cmd, shown)
    for x in peers:
        shutil.rmtree(x.repo, ignore_errors=True)
    shutil.rmtree(src, ignore_errors=True)
    return lines


def file_bytes(path):
    """The bytes of the regular files under `path` (what a repository's files hold,
    without du's directory sizes)."""
    return sum(p.stat().st_size for p in pathlib.Path(path).rglob("*") if p.is_file() and not p.is_symlink())


def snapshot_ids(t):
    """A tool's snapshot ids, oldest first (cairn and restic)."""
    import json
    cmd = [CAIRN if t.name == "cairn" else "restic", "snapshots", "--json"]
    snaps = json.loads(subprocess.run(cmd, env=t.env(), capture_output=True, text=True, check=True).stdout)
    return [s["id"] for s in sorted(snaps, key=lambda s: s["time_ns"] if t.name == "cairn" else s["time"])]


INSPECT_MEMORY_MIB = 64


def two_backups(peers, src, seed, files, what, recorded):
    """Generate `files` small files at `src` (afresh), back them up with each of `peers`
    (their repositories reset), apply the change set, back up again; `recorded(k, tool,
    data bytes, measurement)` gets backup k = 1, 2. Returns the data's size."""
    shutil.rmtree(src, ignore_errors=True)
    args = ["--seed", str(seed), "--files", str(files), "--large-mib", "0", "--tiny"]
    print(f"bench: generating {files:,} small files for {what}", file=sys.stderr, flush=True)
    sh([CORPUS, "generate", src, *args])
    for k in (1, 2):
        if k == 2:
            sh([CORPUS, "change", src, *args])
        data = du(src)
        warm(src)
        for x in peers:
            if k == 1:
                x.reset()
            recorded(k, x, data, measure(x, x.backup(src)))
    return data


def inspect_section(a, work, tools, src, record):
    """`diff` and `find` over two snapshots of --inspect-files small files (the change set
    applied between them touches ~1.9% of the files: 1% rewritten, 0.3% each appended
    to, removed and added), cairn with --memory 64M against restic; then cairn's
    `backup --dry-run` of the main corpus into an empty repository against the real
    backup that follows."""
    import json
    n = int(a.inspect_files or (1e5 if a.quick else 1e6))
    peers = [x for x in tools if x.name in ("cairn", "restic")]
    d = work / "inspect-src"  # changed below: made afresh every run
    data = two_backups(peers, d, 3, n, "diff and find",
                       lambda k, x, data, m: record("inspect", f"backup {k} of {n} files", x, n, data, m, du(x.repo)))
    mem = INSPECT_MEMORY_MIB
    lines = ["", f"### diff and find over two snapshots of {n:,} small files (~1.9% changed between them)", "",
             f"cairn runs with `--memory {mem}M`; the target is peak RSS within --memory + 32 MiB.", "",
             "| step | tool | wall (s) | CPU (s) | peak RSS (MiB) | peer / cairn (wall) |", "|---|---|---|---|---|---|"]
    got = {}
    for x in peers:
        old, new = snapshot_ids(x)[-2:]
        for step, cmd in [("diff", ["diff", old, new]), ("find", ["find", "*.new"])]:
            full = [CAIRN, "--memory", f"{mem}M", *cmd] if x.name == "cairn" else ["restic", *cmd]
            m = measure(x, full)
            record("inspect", f"{step} of {n} files", x, n, data, m, du(x.repo))
            got[(step, x.name)] = m
    for step in ["diff", "find"]:
        c = got.get((step, "cairn"))
        for x in peers:
            m = got[(step, x.name)]
            ratio = f"{m['wall_s'] / max(c['wall_s'], 1e-9):.2f}x" if c and x.name != "cairn" else ""
            lines.append(f"| {step} | {x.name} | {m['wall_s']:.2f} | {m['cpu_s']:.2f} | {m['rss_mib']:.1f} | {ratio} |")
        if c:
            within = "within" if c["rss_mib"] <= mem + 32 else "OVER"
            print(f"bench: cairn {step}: peak RSS {c['rss_mib']:.1f} MiB, {within} --memory {mem}M + 32 MiB",
                  file=sys.stderr, flush=True)
    for x in peers:
        shutil.rmtree(x.repo, ignore_errors=True)
    shutil.rmtree(d, ignore_errors=True)

    # backup --dry-run of the main corpus into an empty repository, then the backup.
    t = next((x for x in tools if x.name == "cairn"), None)
    if t is not None:
        t.reset()
        before = file_bytes(t.repo)
        p = subprocess.run([CAIRN, "--json", "backup", "--dry-run", src], env=t.env(), capture_output=True, text=True)
        if p.returncode not in (0, 3):
            raise SystemExit(f"cairn backup --dry-run failed ({p.returncode}):\n{p.stderr[-2000:]}")
        predicted = json.loads(p.stdout.strip().splitlines()[-1])["growth"]["total"]
        unchanged = file_bytes(t.repo) == before
        measure(t, t.backup(src))
        grown = file_bytes(t.repo) - before
        err = (predicted - grown) * 100 / max(grown, 1)
        lines += ["", f"`backup --dry-run` of the main corpus into an empty repository predicted {predicted:,} bytes; "
                  f"the backup then added {grown:,} ({err:+.3f}%); the dry run left the repository "
                  f"{'unchanged' if unchanged else 'CHANGED'}."]
        print(f"bench: dry-run predicted {predicted} bytes, the backup added {grown} ({err:+.3f}%)", file=sys.stderr,
              flush=True)
        shutil.rmtree(t.repo, ignore_errors=True)
    return lines


class RemoteTool(Tool):
    """A tool whose repository is on the benchmark's S3 server (`url`); `repo` is where
    the server keeps its objects (for sizes and resets)."""

    def __init__(self, name, work, url, objects, memory=None):
        super().__init__(name, work)
        self.url, self.repo, self.memory = url, objects, memory
        self.base = work / f"home-{name}-remote"

    def env(self):
        e = super().env()
        e.update(AWS_ACCESS_KEY_ID="cairn-test", AWS_SECRET_ACCESS_KEY="cairn-test-secret", AWS_DEFAULT_REGION="us-east-1")
        if self.name == "cairn":
            e["CAIRN_REPO"] = self.url
            if self.memory:
                e["CAIRN_MEMORY"] = self.memory
        else:
            e["RESTIC_REPOSITORY"] = self.url
        return e


def remote_section(a, work, tools_wanted, src, files, record):
    """cairn and restic on an S3 server at each round-trip time (see the module's doc)."""
    run_src = pristine(work, src)
    data = du(run_src)
    big = max((p for p in run_src.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    lines = []
    server = work / "s3"
    try:
        for rtt in [int(x) for x in a.rtts.split(",")]:
            subprocess.run([ROOT / "scripts/s3-server", "stop", server])
            shutil.rmtree(server, ignore_errors=True)
            server.mkdir(parents=True)
            # Through the proxy at 0 ms too: see the module's doc.
            env = {**os.environ, "CAIRN_S3_RTT": str(rtt)}
            endpoint = subprocess.run([ROOT / "scripts/s3-server", "start", server], env=env, check=True,
                                      capture_output=True, text=True).stdout.strip()
            sec = f"remote {rtt}ms"
            tools = [RemoteTool(n, work, f"s3:{endpoint}/cairn/{n}", server / "root/cairn" / n)
                     for n in tools_wanted if n in ("cairn", "restic")]
            if "cairn" in tools_wanted:
                tools.append(RemoteTool("cairn", work, f"s3:{endpoint}/cairn/cairn64", server / "root/cairn/cairn64", "64M"))
                tools[-1].base = work / "home-cairn64-remote"
            for t in tools:
                t.reset()
            warm(run_src)
            label = lambda t, step: f"{step} (--memory 64M)" if t.memory else step
            for t in tools:
                m, said = remote_measure(t, t.backup(run_src))
                record(sec, label(t, "1 first backup"), t, files, data, m, du(t.repo))
                lines += said
            for t in tools:
                if t.memory:
                    continue
                m, said = remote_measure(t, t.backup(run_src))
                record(sec, "2 unchanged", t, files, data, m, du(t.repo))
                lines += said
            for t in tools:
                with FreshFs(work, f"remote-{t.name}", data) as target:
                    cmd, cwd = t.restore(target)
                    m, said = remote_measure(t, cmd, cwd)
                    record(sec, label(t, "3 restore"), t, files, data, m, du(t.repo))
                    lines += said
                    if VERIFY:
                        same_tree(run_src, target / str(run_src).lstrip("/"), f"{t.name}'s restore from S3")
            # A new machine restoring (what a disaster leaves): the same restore with an
            # empty cache, so the index and the trees come from S3 too.
            for t in tools:
                if t.memory:
                    continue
                home, t.base = t.base, work / f"home-{t.name}-remote-new"
                shutil.rmtree(t.base, ignore_errors=True)
                t.base.mkdir(parents=True)
                try:
                    with FreshFs(work, f"remote-{t.name}", data) as target:
                        cmd, cwd = t.restore(target)
                        m, said = remote_measure(t, cmd, cwd)
                        record(sec, "3 restore, empty cache", t, files, data, m, du(t.repo))
                        lines += said
                        if VERIFY:
                            same_tree(run_src, target / str(run_src).lstrip("/"), f"{t.name}'s restore from S3, empty cache")
                finally:
                    shutil.rmtree(t.base, ignore_errors=True)
                    t.base = home
            for t in tools:
                remote_mount(work, t, run_src, big, files, data, sec, label, record)
            subprocess.run([ROOT / "scripts/s3-server", "stop", server])
    finally:
        subprocess.run([ROOT / "scripts/s3-server", "stop", server])
    return ["", "### What cairn exchanged with S3 (its own count)", ""] + [f"- {l}" for l in lines] if lines else []


def remote_measure(t, cmd, cwd=None):
    """measure() that also returns cairn's 'Remote:' line, labelled."""
    sh(["sync"])
    with tempfile.NamedTemporaryFile("r") as tm:
        p = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", tm.name, *map(str, cmd)], env=t.env(), cwd=cwd,
                           capture_output=True, text=True)
        fields = tm.read().split()[-4:]
    if not t.ok(p.returncode):
        raise SystemExit(f"{t.name}: {' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    said = [f"{t.name}{' --memory ' + t.memory if t.memory else ''} {cmd[1]}: {l}" for l in p.stdout.splitlines()
            if l.startswith("Remote:")]
    wall, user, sys_, rss = float(fields[0]), float(fields[1]), float(fields[2]), int(fields[3])
    return {"wall_s": wall, "cpu_s": user + sys_, "rss_mib": rss / 1024, "exit": p.returncode}, said


def remote_mount(work, t, run_src, big, files, data, sec, label, record):
    """cat of the largest file and cp -a of the tree through t's mount of its S3 repository."""
    proc, mnt, inside = mount_latest(work, t, run_src, "mnt-remote")
    try:
        steps = [("4 mount: cat of the largest file", ["cat", inside / big.relative_to(run_src)], False)]
        # restic's cp -a out of its S3 mount is left out: at 0 ms it had not finished
        # after 3 minutes for the quick corpus's 10,000 files.
        if not t.memory and t.name == "cairn":
            steps.append(("5 mount: cp -a", ["cp", "-a", inside], True))

        def record_step(step, m, wall):
            record(sec, label(t, step), t, files, data, m, du(t.repo))
            if "cat" in step:
                print(f"bench: {t.name} cat through the mount: {big.stat().st_size / MIB / max(wall, 1e-9):.0f} MiB/s",
                      file=sys.stderr)

        run_mount_steps(work, t, proc, steps, data, run_src, "out of the S3 mount", record_step)
    finally:
        stop_mount(proc, mnt)

if __name__ == "__main__":
    main()
