#!/usr/bin/env bash
# The whole test suite: unit, property and in-process scenario tests, the mount tests, then
# end-to-end runs of the real binary (init, backup twice, ls, restore, compare, check
# --read-data; interrupted backups; a backup's peak RSS under --memory 64M) and a smoke run
# of scripts/bench. Installs what the tests need when it is missing. Never touches the
# user's repository: everything happens in a temp dir with an explicit CAIRN_REPO and
# password. With CI=true (or CAIRN_REQUIRE_FUSE=1, CAIRN_REQUIRE_XATTRS=1) a test that
# cannot run here fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "test.sh: cargo is required (https://rustup.rs)" >&2
    exit 1
fi
# Packages the tests use; installed only when missing (needs root, as on CI).
missing=()
command -v diff >/dev/null || missing+=(diffutils)
command -v find >/dev/null || missing+=(findutils)
# The mount tests need fusermount3 (unprivileged mounts) and use rsync and attr tools.
command -v fusermount3 >/dev/null || missing+=(fuse3)
command -v rsync >/dev/null || missing+=(rsync)
# Progress is checked on a real terminal.
command -v tmux >/dev/null || missing+=(tmux)
# The peak RSS of a command is read with Python (as scripts/bench does).
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq "${missing[@]}"
    else
        echo "test.sh: please install: ${missing[*]}" >&2
        exit 1
    fi
fi

# Keep the tests away from a real user's configuration.
unset CAIRN_REPO CAIRN_PASSWORD CAIRN_PASSWORD_FILE CAIRN_MEMORY CAIRN_CACHE_DIR

# Checks are counted as they pass; the first that fails stops the suite, naming itself.
# (Each check is one simple command: `set -e` does not apply inside a function run as
# the condition of `||`.)
passed=0
exec 3>&2 # failures are said on the suite's stderr, whatever a check redirects
fail() {
    echo "FAIL: $*" >&3
    exit 1
}
# check DESCRIPTION COMMAND...: COMMAND must succeed.
check() {
    local what=$1
    shift
    "$@" || fail "$what"
    passed=$((passed + 1))
}
# check_code CODE DESCRIPTION COMMAND...: COMMAND must exit with CODE.
check_code() {
    local want=$1 what=$2 code=0
    shift 2
    "$@" || code=$?
    [ "$code" = "$want" ] || fail "$what: exit code $code, expected $want"
    passed=$((passed + 1))
}
# counted NAME EXPECTED: say how many checks of a part passed; a check that stopped
# running (a branch no longer taken) shows as a wrong count.
counted() {
    [ "$passed" = "$2" ] || fail "$1: $passed checks ran, expected $2"
    echo "$1: $passed passed, 0 failed"
    passed=0
}

echo "== layers (scripts/check-layers.sh: no module uses one of a higher layer)"
check "scripts/check-layers.sh" scripts/check-layers.sh
counted "layers" 1

cargo test --lib

echo "== mount tests (a real FUSE filesystem; they skip where /dev/fuse is absent, and fail instead with CI=true or CAIRN_REQUIRE_FUSE=1)"
# Unprivileged mounts need /dev/fuse open to everyone, as distributions set it (udev's
# 0666); some containers create it 0600. As root, give it the usual mode; where the kernel
# has FUSE but the device node is missing, make it.
if [ ! -e /dev/fuse ] && [ "$(id -u)" = 0 ]; then
    modprobe fuse 2>/dev/null || true
    if grep -qw fuse /proc/filesystems; then
        echo "test.sh: mknod /dev/fuse (the kernel has FUSE, the device node was missing)"
        mknod -m 0666 /dev/fuse c 10 229
    fi
fi
if [ -c /dev/fuse ] && [ "$(id -u)" = 0 ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then
    echo "test.sh: chmod 0666 /dev/fuse (was $(stat -c %a /dev/fuse)), the mode distributions give it"
    chmod 0666 /dev/fuse
fi
cargo test --test mount

echo "== end-to-end: the cairn binary"
cargo build --quiet
bin=target/debug/cairn
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CAIRN_REPO="$work/repo" CAIRN_PASSWORD=e2e-password CAIRN_CACHE_DIR="$work/cache"
src="$work/src"
mkdir -p "$src/sub"
cp -a scripts src "$src/sub/" 2>/dev/null
head -c 3000000 /dev/urandom >"$src/random.bin"
ln -s sub "$src/link"
# Output to a file, then grep: with pipefail, 'cairn ... | grep -q' fails whenever grep
# exits first and cairn dies of SIGPIPE, as Unix tools do. And never 'cairn >f && grep':
# set -e ignores a failure on the left of &&.
check "init" "$bin" init --insecure-test-kdf >/dev/null
check "first backup" "$bin" backup "$src" >"$work/b1.txt"
check "second backup" "$bin" --json backup "$src" >"$work/b2.json"
check "the second backup reads nothing" grep -q '"message_type":"summary".*"bytes_read":0' "$work/b2.json"
check "snapshots" "$bin" snapshots >"$work/out.txt"
check "snapshots lists 2" grep -q "2 snapshots" "$work/out.txt"
check "ls" "$bin" ls "latest:$src" >"$work/out.txt"
check "ls lists random.bin" grep -q "random.bin" "$work/out.txt"
check "restore" "$bin" restore latest --target "$work/out" >/dev/null
check "the restored tree is the source" diff -r --no-dereference "$src" "$work/out$src"
check "check --read-data" "$bin" check --read-data >/dev/null
# A stream through a real pipe (--stdin reads the process's standard input), back
# whole through dump; then --dry-run of a new tree writes nothing.
check "backup --stdin" bash -c "head -c 5000000 /dev/urandom | tee '$work/stdin.bin' | '$bin' backup --stdin --stdin-filename dumps/db.bin >/dev/null"
check "dump gives the stream back" bash -c "'$bin' dump latest:/dumps/db.bin | cmp - '$work/stdin.bin'"
ls -R "$CAIRN_REPO" >"$work/before-dry.txt"
check "backup --dry-run" "$bin" backup --dry-run "$src/sub" >"$work/dry.txt"
ls -R "$CAIRN_REPO" >"$work/after-dry.txt"
check "a dry run writes nothing" cmp "$work/before-dry.txt" "$work/after-dry.txt"
check "a dry run says so" grep -q "Dry run, nothing written" "$work/dry.txt"
# Completions work in a real bash: a subcommand and an option complete.
check "bash completes a subcommand" bash -c "source <('$bin' completion bash); COMP_WORDS=(cairn dif); COMP_CWORD=1; _cairn cairn dif cairn; [ \"\${COMPREPLY[*]}\" = diff ]"
check "bash completes an option" bash -c "source <('$bin' completion bash); COMP_WORDS=(cairn backup --exclude-c); COMP_CWORD=2; _cairn cairn --exclude-c backup; [ \"\${COMPREPLY[*]}\" = --exclude-caches ]"
check_code 12 "a wrong password" env CAIRN_PASSWORD=wrong "$bin" snapshots 2>/dev/null
# The password from a file named by the environment (what CAIRN_PASSWORD_FILE reads is
# tested in process; here, that the real environment is read), or by --password-file.
printf 'e2e-password\n' >"$work/pw"
printf 'wrong\n' >"$work/pw-wrong"
check "CAIRN_PASSWORD_FILE" env -u CAIRN_PASSWORD CAIRN_PASSWORD_FILE="$work/pw" "$bin" snapshots >/dev/null
check_code 12 "CAIRN_PASSWORD_FILE with a wrong password" env -u CAIRN_PASSWORD CAIRN_PASSWORD_FILE="$work/pw-wrong" "$bin" snapshots 2>/dev/null
check "--password-file" env -u CAIRN_PASSWORD "$bin" --password-file "$work/pw" snapshots >/dev/null
# Two processes backing up at once with one cache directory: the second works in a
# private cache; both snapshots are whole.
for s in a b; do
    mkdir -p "$work/conc-$s"
    cp -a src "$work/conc-$s/"
    head -c 2000000 /dev/urandom >"$work/conc-$s/own.bin"
done
"$bin" --json backup "$work/conc-a" >"$work/conc-a.json" 2>"$work/conc-a.err" &
pid_a=$!
"$bin" --json backup "$work/conc-b" >"$work/conc-b.json" 2>"$work/conc-b.err" &
pid_b=$!
check "concurrent backup a" wait "$pid_a"
check "concurrent backup b" wait "$pid_b"
check "check after concurrent backups" "$bin" check --read-data >/dev/null
for s in a b; do
    id=$(tail -n 1 "$work/conc-$s.json" | sed 's/.*"snapshot_id":"\([0-9a-f]*\)".*/\1/')
    check "restore of concurrent backup $s" "$bin" restore "$id" --target "$work/conc-out-$s" >/dev/null
    check "concurrent backup $s restores whole" diff -r --no-dereference "$work/conc-$s" "$work/conc-out-$s$work/conc-$s"
done
counted "end-to-end" 29

echo "== end-to-end: progress on a terminal"
# A backup in a 150x20 tmux terminal (a server of its own, -L), its screen captured
# every 50 ms while it runs: NAME.during is the last screen showing the progress line,
# NAME.end the screen once it is done.
term_run() {
    local name=$1 pattern=$2
    shift 2
    rm -f "$work/$name.during"
    tmux -L cairn-test new-session -d -s term -x 150 -y 20 \
        "env CAIRN_REPO='$work/repo-term' CAIRN_PASSWORD=e2e-password $*; echo TERM-DONE; sleep 60"
    for _ in $(seq 1 1200); do
        tmux -L cairn-test capture-pane -p -t term >"$work/$name.screen"
        grep -q -- "$pattern" "$work/$name.screen" && cp "$work/$name.screen" "$work/$name.during"
        grep -q TERM-DONE "$work/$name.screen" && break
        sleep 0.05
    done
    cp "$work/$name.screen" "$work/$name.end"
    tmux -L cairn-test kill-server
}
term_backup() { term_run "$1" " read  $work/term/big.bin" "'$bin' backup '$work/term'"; }
mkdir -p "$work/term"
head -c 300000000 /dev/urandom >"$work/term/big.bin"
check "init (terminal)" env CAIRN_REPO="$work/repo-term" "$bin" init --insecure-test-kdf >/dev/null
term_backup first
check "a first backup shows its progress line, naming the file" test -s "$work/first.during"
check "the progress line is cleared at the end" bash -c "! grep -q ' read  /' '$work/first.end'"
check "the summary is on the screen" grep -q "snapshot [0-9a-f]* saved" "$work/first.end"
# New content (reading what is stored already is too quick to watch).
head -c 300000000 /dev/urandom >"$work/term/big.bin"
term_backup second
check "a repeat backup shows a bar with an ETA" grep -q "ETA" "$work/second.during"
check "... cleared at the end too" bash -c "! grep -q 'ETA' '$work/second.end'"
# Restore and check draw the same kind of line from the repository's progress meter.
term_run restore "ETA.*restoring" "'$bin' restore latest --target '$work/term-out'"
check "a restore shows a bar with an ETA" test -s "$work/restore.during"
check "... cleared at the end, the summary shown" bash -c "! grep -q 'ETA' '$work/restore.end' && grep -q 'restored snapshot' '$work/restore.end'"
check "the restored file is whole" cmp "$work/term/big.bin" "$work/term-out/$work/term/big.bin"
term_run check "checking packs" "'$bin' check --read-data"
check "check shows its phase" test -s "$work/check.during"
check "... cleared at the end" bash -c "! grep -q 'checking packs' '$work/check.end' && grep -q 'no errors' '$work/check.end'"
counted "end-to-end, terminal" 11

echo "== end-to-end: interrupting a backup"
# Wait (at most ~60 s) until directory $1 of the repository holds more than $2 files.
wait_for() {
    for _ in $(seq 600); do
        [ "$(find "$CAIRN_REPO/$1" -type f 2>/dev/null | wc -l)" -gt "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
big="$work/big"
mkdir -p "$big"
for i in 1 2 3 4 5 6; do head -c 100000000 /dev/urandom >"$big/f$i"; done
# SIGTERM mid-backup: exit 130, no snapshot, a consistent repository.
export CAIRN_REPO="$work/repo-int"
check "init" "$bin" init --insecure-test-kdf >/dev/null
"$bin" backup "$big" >/dev/null 2>&1 &
pid=$!
check "a pack is written" wait_for data 0
kill -TERM "$pid"
check_code 130 "SIGTERM" wait "$pid"
check "snapshots after SIGTERM" "$bin" snapshots >"$work/out.txt"
check "no snapshot after SIGTERM" grep -q "0 snapshots" "$work/out.txt"
check "check after SIGTERM" "$bin" check >/dev/null
# kill -9 once this backup has written an index file of its own (the interrupted one
# wrote some): the next backup reuses what it stored, check passes.
stored=$(du -sb "$CAIRN_REPO/data" | cut -f1)
indexes=$(find "$CAIRN_REPO/index" -type f | wc -l)
"$bin" backup "$big" >/dev/null 2>&1 &
pid=$!
check "the backup to kill writes an index file" wait_for index "$indexes"
kill -KILL "$pid"
# 137 = 128 + SIGKILL: killed, not finished before the kill.
check_code 137 "kill -9 mid-backup" wait "$pid"
check "snapshots after kill -9" "$bin" snapshots >"$work/out.txt"
check "no snapshot after kill -9" grep -q "0 snapshots" "$work/out.txt"
killed=$(($(du -sb "$CAIRN_REPO/data" | cut -f1) - stored))
check "the killed backup stored packs" test "$killed" -gt 0
check "backup after kill -9" "$bin" --json backup "$big" >"$work/after-kill.json"
added=$(tail -n 1 "$work/after-kill.json" | sed 's/.*"bytes_added":\([0-9]*\).*/\1/')
# What both stopped backups stored is reused: the data of 6 x 10^8 random bytes is stored
# once (sealing adds ~100 bytes per ~1 MiB chunk). Storing the killed run's packs again
# would add its ${killed} bytes a second time.
total=$(($(du -sb "$CAIRN_REPO/data" | cut -f1)))
check "nothing stored twice after kill -9 (added $added, packs $total bytes)" test "$total" -lt 601000000
check "check --read-data after kill -9" "$bin" check --read-data >/dev/null
check "restore after kill -9" "$bin" restore latest --target "$work/out-big" >/dev/null
check "the restored tree is the source" diff -r "$big" "$work/out-big$big"
counted "end-to-end, interrupted" 16

echo "== end-to-end: the memory budget"
# A backup with --memory 64M into a repository whose index holds 3,000,000 entries
# (injected: ids no chunk matches, in packs that do not exist): loading them into the
# local cache (an external sort within the memtable's share) and deduplicating against
# them stays within the budget plus the 32 MiB docs/benchmarks.md allows
# (cairn backup's peak RSS <= budget + 32 MiB).
export CAIRN_REPO="$work/repo-mem" CAIRN_CACHE_DIR="$work/cache-mem"
check "init" "$bin" init --insecure-test-kdf >/dev/null
check "inject 3,000,000 index entries" target/debug/cairn-indexbench --inject-repo "$CAIRN_REPO" --entries 3000000 >/dev/null
# The peak RSS (VmHWM) of a command: its exit code, then its peak in KiB.
peak() {
    python3 -c 'import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$@"
}
read -r code kib < <(peak "$bin" --memory 64M backup "$src")
check "backup under --memory 64M" test "$code" = 0
check "its peak RSS, $((kib / 1024)) MiB, is within 64 + 32 MiB" test "$kib" -lt $(((64 + 32) * 1024))
# The entries were loaded: the cache's runs hold them (48 bytes each).
runs=$(find "$CAIRN_CACHE_DIR" -name 'run-*' -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
check "the cache holds the 3,000,000 entries ($runs bytes of runs)" test "$runs" -ge $((3000000 * 48))
counted "end-to-end, memory" 5

echo "== S3: a real server on the loopback (s3s-fs from crates.io, scripts/s3-server)"
# Signature authentication on: wrong credentials get 403, as on a real store.
s3dir="$work/s3"
trap 'scripts/s3-server stop "$s3dir"; rm -rf "$work"' EXIT
endpoint=$(scripts/s3-server start "$s3dir")
check "the S3 tests in process (round trip, >1000 keys, ranges, two backups at once, wrong credentials)" \
    env CAIRN_TEST_S3="$endpoint" cargo test --quiet --lib tests::s3 -- --ignored
export AWS_ACCESS_KEY_ID=cairn-test AWS_SECRET_ACCESS_KEY=cairn-test-secret
export CAIRN_REPO="s3:$endpoint/cairn/e2e" CAIRN_CACHE_DIR="$work/cache-s3"
s3src="$work/s3src"
mkdir -p "$s3src"
cp -a src "$s3src/"
head -c 60000000 /dev/urandom >"$s3src/random.bin"
check "s3: init" "$bin" init --insecure-test-kdf >/dev/null
check_code 1 "s3: wrong credentials" env AWS_SECRET_ACCESS_KEY=wrong "$bin" snapshots 2>"$work/s3-creds.err"
check "s3: wrong credentials are named" grep -q "access denied (403)" "$work/s3-creds.err"
# The server stops mid-backup (once a pack is stored) and comes back: whatever the
# backup's outcome, the repository checks clean and the next backup reuses what was stored.
"$bin" backup "$s3src" >/dev/null 2>&1 &
pid=$!
stored=0
for _ in $(seq 600); do
    stored=$( (find "$s3dir/root/cairn/e2e/data" -type f 2>/dev/null || true) | wc -l)
    [ "$stored" -gt 0 ] && break
    sleep 0.1
done
check "s3: a pack is stored before the server stops" test "$stored" -gt 0
scripts/s3-server stop "$s3dir"
sleep 2
scripts/s3-server start "$s3dir" >/dev/null
wait "$pid" || true
check "s3: check after the server stopped mid-backup" "$bin" check >/dev/null
check "s3: backup after the server came back" "$bin" --json backup "$s3src" >"$work/s3-b2.json"
added=$(tail -n 1 "$work/s3-b2.json" | sed 's/.*"bytes_added":\([0-9]*\).*/\1/')
check "s3: the next backup reuses what was stored (added $added of 60 MB)" test "$added" -lt 55000000
check "s3: check --read-data" "$bin" check --read-data >/dev/null
# An unchanged backup reads what it needs from the local copies: config, keys and index
# listings at once (the key file kept from the last command), the lock (written,
# listed), the index and snapshot listings at once, the snapshot, the lock removed.
# (The first backup here stores the directories above the source anew: files made in
# $work since changed its mtime. The second writes its output into the same file,
# which changes no directory.)
check "s3: a backup of what the last one stored" "$bin" --json backup "$s3src" >"$work/s3-b3.json"
check "s3: an unchanged backup" "$bin" --json backup "$s3src" >"$work/s3-b3.json"
read -r requests added < <(python3 -c 'import json, sys; d = json.loads(sys.stdin.read().splitlines()[-1]); print(d["remote"]["requests"], d["summary"]["blobs_added"])' <"$work/s3-b3.json")
check "s3: ... adds nothing ($added blobs) and makes at most 9 requests ($requests)" test "$added" = 0 -a "$requests" -le 9
# The key file kept locally is only a guess: a wrong password is still refused, and a
# kept file damaged (or planted) is passed over.
check_code 12 "s3: a wrong password, the key file kept" env CAIRN_PASSWORD=wrong "$bin" snapshots 2>/dev/null
for k in "$work"/cache-s3/keys/*/keys/*; do printf 'x' | dd of="$k" bs=1 seek=40 conv=notrunc status=none; done
check "s3: a damaged kept key file is passed over" "$bin" snapshots >/dev/null
check "s3: restore" "$bin" restore latest --target "$work/s3-out" >/dev/null
check "s3: the restored tree is the source" diff -r --no-dereference "$s3src" "$work/s3-out$s3src"
# The mount reads from S3 (where FUSE works here: the mount tests say so above).
if [ -c /dev/fuse ]; then
    mkdir -p "$work/s3-mnt"
    "$bin" mount "$work/s3-mnt" >"$work/s3-mount.log" 2>&1 &
    mpid=$!
    for _ in $(seq 100); do
        [ -d "$work/s3-mnt/latest" ] && break
        sleep 0.1
    done
    check "s3: the mount shows the snapshot and its files are the source" diff -r "$s3src" "$work/s3-mnt/latest$s3src"
    fusermount3 -u "$work/s3-mnt"
    check "s3: the mount ends when unmounted" wait "$mpid"
elif [ "${CI:-}" = true ] || [ "${CAIRN_REQUIRE_FUSE:-}" = 1 ]; then
    fail "s3: no /dev/fuse: the mount from S3 cannot be tried"
else
    echo "s3: no /dev/fuse here: the mount from S3 is not tried"
    passed=$((passed + 2))
fi
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
scripts/s3-server stop "$s3dir"
counted "S3" 18

echo "== fault injection, short (scripts/faults --short: kill -9, full disks, flipped bytes)"
check "scripts/faults --short" scripts/faults --short --bin "$bin"
counted "faults" 1

echo "== benchmark smoke run (checks scripts/bench works; measures nothing)"
# --verify: restored trees and copies out of the mount are compared with the source, and
# a backup that could not read everything (exit 3) fails the run.
scripts/bench --tools cairn --files 300 --large-mib 8 --series 200 --index-series 20000 --no-plots \
    --repo-series 1000,30000 --cgroup-files 200 --cgroup-entries 20000 --lifecycle-days 3 \
    --prune-series 20000 --prune-cgroup-blobs 20000 --prune-cgroup-files 200 --crash-size small --inspect-files 300 --versions-snapshots 5 --cold-files 300 --verify \
    --work "$work/bench" --out "$work/bench-out" >/dev/null 2>"$work/bench.log" || { cat "$work/bench.log"; fail "scripts/bench"; }
for step in "1 first backup" "2 unchanged" "3 after changes" "4 restore" "backup 200 files" "30,000 entries" "ls -lR" "cp -a" \
    "ls -lR, directory-heavy tree" "ls -lR, directory-heavy tree (FUSE floor)" "versions/: ls -l of 300 files across 5 snapshots" \
    "forget+prune" "prune 20,000 blobs" "diff of 300 files" "find of 300 files" "300 tiny files, cold: 2 unchanged"; do
    check "bench smoke: a '$step' row" grep -qF "$step" "$work/bench-out/results.tsv"
done
check "bench smoke: restores and mount copies compared" grep -q "verified: .* equals the source" "$work/bench.log"
check "bench smoke: the crash trials passed" grep -q "crash trials passed" "$work/bench.log"
check "bench smoke: diff within its memory" grep -q "cairn diff: peak RSS .* within" "$work/bench.log"
check "bench smoke: the dry run left the repository unchanged" grep -q "dry run left the repository unchanged" "$work/bench-out/table.md"
# The cgroup run is mandatory wherever a memory cgroup can be made: a writable cgroup v1
# memory controller, or a cgroup v2 hierarchy with the memory controller.
cgroup=no
if [ -e /sys/fs/cgroup/memory/memory.limit_in_bytes ] && [ -w /sys/fs/cgroup/memory ]; then
    cgroup=v1
fi
for root in $(awk '$3 == "cgroup2" {print $2}' /proc/mounts); do
    if grep -qw memory "$root/cgroup.controllers" 2>/dev/null && [ -w "$root" ]; then
        cgroup=v2
    fi
done
if [ "$cgroup" = no ]; then
    check "bench smoke: no memory cgroup here, and bench says so" grep -q "no memory cgroup controller" "$work/bench.log"
else
    check "bench smoke: the $cgroup cgroup run completed" grep -q "| cairn | 20,000 index entries | .* | completed" "$work/bench-out/table.md"
fi
counted "bench smoke" 21
