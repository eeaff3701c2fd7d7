#!/bin/sh
# Runs every test: the C unit tests (cmocka, one program each), the Lua specs (busted) and the
# program's command-line tests, all as TAP; prints each failure and ends with "N passed, N failed".
BUILD=${BUILD:-build}
# OpenMP threads that spin while OpenBLAS works starve it on a busy machine (README, Threads)
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
cd "$(dirname "$0")/.." || exit 2
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT INT TERM
passed=0
failed=0

# count one TAP stream; a suite that exits non-zero without a failing line counts as one failure
tally() {
    name=$1 out=$2 rc=$3
    p=$(grep -c '^ok ' "$out")
    f=$(grep -c '^not ok ' "$out")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        echo "FAIL $name: exited with status $rc"
        tail -n 20 "$out" | sed 's/^/    /'
    fi
    if [ "$f" -gt 0 ]; then
        grep -A12 '^not ok ' "$out" | sed 's/^/    /'
    fi
    printf '%-28s %3d passed, %d failed\n' "$name" "$p" "$f"
    passed=$((passed + p))
    failed=$((failed + f))
}

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    CMOCKA_MESSAGE_OUTPUT=TAP "$t" > "$log/$name" 2>&1
    tally "$name" "$log/$name" $?
done

if [ -d tests/spec ] && ls tests/spec/*_spec.lua >/dev/null 2>&1; then
    LUA_CPATH="$BUILD/?.so;;" PF_BUILD="$BUILD" lua5.4 /usr/bin/busted -o TAP tests/spec > "$log/specs" 2>&1
    tally "lua specs (busted)" "$log/specs" $?
fi

for t in tests/*_test.sh; do
    [ -f "$t" ] || continue
    name=$(basename "$t" .sh)
    BUILD="$BUILD" sh "$t" > "$log/$name" 2>&1
    tally "$name" "$log/$name" $?
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
