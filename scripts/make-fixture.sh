#!/usr/bin/env bash
# Makes the frozen repository of the current format version (src/tests/fixtures/vN) ONCE,
# when a format version is released. Never rerun it for an existing version: the fixture
# exists to catch changes to what older cairn versions wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --lib make_fixture_v1 -- --ignored --exact tests::compat::make_fixture_v1
# git keeps no empty directories; remove them so the fixture is what a clone has.
find src/tests/fixtures/v1 -type d -empty -delete
du -sh src/tests/fixtures/v1
