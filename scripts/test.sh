#!/usr/bin/env bash
# The whole test suite: unit, property and in-process scenario tests, then an end-to-end
# run of the real binary (init, backup twice, ls, restore, compare, check --read-data).
# Installs what the tests need when it is missing. Never touches the user's repository:
# everything happens in a temp dir with an explicit CAIRN_REPO and password.
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

cargo test --lib

echo "== mount tests (a real FUSE filesystem; they skip where /dev/fuse is absent)"
# Unprivileged mounts need /dev/fuse open to everyone, as distributions set it (udev's
# 0666); some containers create it 0600. As root, give it the usual mode.
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
"$bin" init --insecure-test-kdf >/dev/null
"$bin" backup "$src" >"$work/b1.txt"
"$bin" --json backup "$src" >"$work/b2.json"
grep -q '"bytes_read":0' "$work/b2.json" || { echo "second backup read data:"; cat "$work/b2.json"; exit 1; }
# Output to a file, then grep: with pipefail, 'cairn ... | grep -q' fails whenever grep
# exits first and cairn dies of SIGPIPE, as Unix tools do.
"$bin" snapshots >"$work/out.txt" && grep -q "2 snapshots" "$work/out.txt"
"$bin" ls "latest:$src" >"$work/out.txt" && grep -q "random.bin" "$work/out.txt"
"$bin" restore latest --target "$work/out" >/dev/null
diff -r --no-dereference "$src" "$work/out$src"
"$bin" check --read-data >/dev/null
set +e
CAIRN_PASSWORD=wrong "$bin" snapshots 2>/dev/null
code=$?
set -e
[ "$code" = 12 ] || { echo "wrong password gave exit code $code, expected 12"; exit 1; }

echo "== end-to-end: interrupting a backup"
# Wait (at most ~30 s) until a file appears in directory $1 of the repository.
wait_for() { for _ in $(seq 300); do [ -n "$(find "$CAIRN_REPO/$1" -type f 2>/dev/null | head -1)" ] && return 0; sleep 0.1; done; return 1; }
big="$work/big"
mkdir -p "$big"
for i in 1 2 3 4 5 6; do head -c 100000000 /dev/urandom >"$big/f$i"; done
# SIGTERM mid-backup: exit 130, no snapshot, a consistent repository.
export CAIRN_REPO="$work/repo-int"
"$bin" init --insecure-test-kdf >/dev/null
"$bin" backup "$big" >/dev/null 2>&1 &
pid=$!
wait_for data
kill -TERM "$pid"
set +e
wait "$pid"
code=$?
set -e
[ "$code" = 130 ] || { echo "SIGTERM gave exit code $code, expected 130"; exit 1; }
"$bin" snapshots >"$work/out.txt" && grep -q "0 snapshots" "$work/out.txt"
"$bin" check >/dev/null
# kill -9 after some packs are indexed: the next backup reuses them, check passes.
"$bin" backup "$big" >/dev/null 2>&1 &
pid=$!
wait_for index
sleep 0.3
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true
"$bin" --json backup "$big" >"$work/after-kill.json"
added=$(sed 's/.*"bytes_added":\([0-9]*\).*/\1/' "$work/after-kill.json")
[ "$added" -lt 590000000 ] || { echo "after kill -9 nothing was reused: added $added bytes"; exit 1; }
"$bin" check --read-data >/dev/null
"$bin" restore latest --target "$work/out-big" >/dev/null
cmp "$big/f6" "$work/out-big$big/f6"
echo "end-to-end: 2 passed, 0 failed"

echo "== benchmark smoke run (checks scripts/bench works; measures nothing)"
scripts/bench --tools cairn --files 300 --large-mib 8 --series 200 --index-series 20000 --no-plots \
    --repo-series 1000,30000 --cgroup-files 200 --cgroup-entries 20000 \
    --work "$work/bench" --out "$work/bench-out" >/dev/null 2>"$work/bench.log" || { cat "$work/bench.log"; exit 1; }
for step in "1 first backup" "2 unchanged" "3 after changes" "4 restore" "backup 200 files" "30,000 entries" "ls -lR" "cp -a"; do
    grep -q "$step" "$work/bench-out/results.tsv" || { echo "bench smoke: no '$step' row"; exit 1; }
done
# The cgroup run needs a writable cgroup v1 memory controller; without one it says so.
grep -q "| cairn | 20,000 index entries | .* | completed" "$work/bench-out/table.md" \
    || grep -q "skipping the cgroup run" "$work/bench.log" || { echo "bench smoke: no cgroup row"; cat "$work/bench.log"; exit 1; }
echo "bench smoke: 1 passed, 0 failed"
