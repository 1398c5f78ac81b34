#!/usr/bin/env bash
# Makes the frozen repository of the current format version (src/tests/fixtures/vN) ONCE,
# when a format version is released:  scripts/make-fixture.sh N
# Never rerun it for an existing version: the fixture exists to catch changes to what
# older cairn versions wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
v=${1:?usage: scripts/make-fixture.sh VERSION}
cargo test --lib "make_fixture_v$v" -- --ignored --exact "tests::compat::make_fixture_v$v"
# git keeps no empty directories; remove them so the fixture is what a clone has.
find "src/tests/fixtures/v$v" -type d -empty -delete
du -sh "src/tests/fixtures/v$v"
