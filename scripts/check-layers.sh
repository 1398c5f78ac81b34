#!/usr/bin/env bash
# Fails when a module under src/ uses one of a higher layer. The layers are the table in
# docs/design.md ("Layers"), the only place they are written: every backticked name in a
# row's modules column belongs to that row's layer. Unit tests (a trailing
# `#[cfg(test)] mod`), comments, src/tests*, src/testutil.rs and the binaries are exempt.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - <<'PY'
import pathlib, re, sys
design = pathlib.Path("docs/design.md").read_text()
table = design.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
layer = {}
for row in re.findall(r"^\| L(\d+) \|([^|]*)\|", table, re.M):
    for name in re.findall(r"`([a-z_]+)", row[1]):
        layer[name] = int(row[0])
bad = []
for f in sorted(pathlib.Path("src").rglob("*.rs")):
    rel = f.relative_to("src")
    if rel.parts[0] in ("tests", "tests.rs", "testutil.rs", "bin", "main.rs", "lib.rs"):
        continue
    mod = rel.parts[0].removesuffix(".rs")
    if mod not in layer:
        bad.append(f"{f}: module `{mod}` is not in the layer table of docs/design.md")
        continue
    code = re.split(r"^#\[cfg\(test\)\]\s*\n\s*mod ", f.read_text(), maxsplit=1, flags=re.M)[0]
    code = re.sub(r"//.*", "", code)
    used = set(re.findall(r"\bcrate::([a-z_]+)", code))
    # `use crate::{a, b::c, d::{e, f}}`: the first name of each item of the group.
    for g in re.finditer(r"\bcrate::\{", code):
        depth, top, i = 1, "", g.end()
        while depth and i < len(code):
            depth += (code[i] == "{") - (code[i] == "}")
            top += code[i] if depth == 1 and code[i] not in "{}" else ""
            i += 1
        used.update(re.findall(r"(?:^|,)\s*([a-z_]+)", top))
    for m in sorted(used):
        if m in layer and layer[m] > layer[mod]:
            bad.append(f"{f}: `{mod}` (L{layer[mod]}) uses `{m}` (L{layer[m]})")
print("\n".join(bad) if bad else f"layers: {len(layer)} modules, no module uses a higher layer")
sys.exit(1 if bad else 0)
PY
