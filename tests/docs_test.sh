#!/bin/sh
# The layer reference (docs/layers.md) is what tools/layer_reference.lua prints from the engine's
# option and probe tables; the README's commands are the Makefile's targets. TAP output.
BUILD=${BUILD:-build}
cd "$(dirname "$0")/.." || exit 2
echo "1..2"
fresh=$(mktemp)
if "$BUILD"/postformer run tools/layer_reference.lua > "$fresh" && cmp -s "$fresh" docs/layers.md; then
    echo "ok 1 - docs/layers.md matches the engine's option and probe tables"
else
    echo "not ok 1 - docs/layers.md is stale: run build/postformer run tools/layer_reference.lua > docs/layers.md"
    diff "$fresh" docs/layers.md | head -20 | sed 's/^/# /'
fi
rm -f "$fresh"
missing=""
for target in run test bench clean deps; do
    grep -q "make $target" README.md || missing="$missing $target"
    grep -q "^$target:" Makefile || missing="$missing $target(Makefile)"
done
if [ -z "$missing" ]; then
    echo "ok 2 - README shows make run/test/bench/clean/deps and the Makefile has them"
else
    echo "not ok 2 - missing:$missing"
fi
