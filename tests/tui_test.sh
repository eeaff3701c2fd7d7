#!/bin/sh
# The terminal playground under tmux (a private server, -L): it starts and shows its panes, steps on
# a key, evaluates Lua typed at the prompt, shows errors and keeps working, Ctrl-C interrupts busy
# Lua and training, survives resizes to 80x24 and 200x60, exports a PNG, saves the history, quits
# with q and leaves the terminal sane. TAP on stdout.
BUILD=${BUILD:-build}
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
PROG="$ROOT/$BUILD/postformer"
SOCK="pf_tui_test_$$"
TMP=$(mktemp -d)
T="tmux -L $SOCK -f /dev/null"
runs=0
n=0
failed=0
trap '$T kill-server >/dev/null 2>&1; rm -rf "$TMP"' EXIT INT TERM

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
    n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"
    echo "# screen:"; capture | sed 's/^/#   /'
}
check() { if [ "$1" -eq 0 ]; then ok "$2"; else not_ok "$2"; fi; }
capture() { $T capture-pane -p -t pf 2>/dev/null; }
# wait_for PATTERN [SECONDS]: poll the screen until an extended regex matches
wait_for() {
    limit=$(( ${2:-10} * 10 ))
    i=0
    while [ $i -lt "$limit" ]; do
        capture | grep -Eq -- "$1" && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
keys() { $T send-keys -t pf "$@"; }
# start [ARGS]: the program in a fresh window, then the exit status and the terminal's modes
start() {
    $T kill-server >/dev/null 2>&1
    runs=$((runs + 1))
    T="tmux -L ${SOCK}_$runs -f /dev/null"     # a fresh server: no race with the old one exiting
    $T new-session -d -s pf -x 120 -y 40 \
        "cd '$TMP' && env TERM=screen-256color LANG=C.UTF-8 XDG_STATE_HOME='$TMP/state' '$PROG' $*; echo \"EXITED rc=\$?\"; stty -a; sleep 60"
}

cat > "$TMP/small.lua" <<'LUA'
m = pf.model{ vocab = 16, dim = 16, seed = 3, layers = { pf.attention{ heads = 2, tile = 4 }, pf.mlp{},
  pf.retention{ heads = 2 } } }
task = pf.tasks.copy{ vocab = 16, seq = 16 }
m:train{ task = task, steps = 3, batch = 2 }
print("small model ready")
LUA

# ---- a script in the playground ------------------------------------------------------------------
start small.lua
wait_for "small model ready" 20
r=0
for title in "Layers" "Tokens" "Probes: layer 1 attention" "Metrics" "Log"; do
    capture | grep -q "$title" || r=1
done
check $r "starts on FILE.lua and shows the panes (Layers, Tokens, Probes, Metrics, Log)"

capture | grep -q "step 3/3"
check $? "the metrics pane shows the script's training steps"

keys s
wait_for "position 1/16" 5
r1=$?
keys Space
wait_for "position 2/16" 5
check $((r1 + $?)) "s and Space step one token each (the token pane moves)"

wait_for "weights: last token over the cache" 5
check $? "the probes pane draws the focused attention layer's weights"

keys j
wait_for "Probes: layer 2 mlp" 5
r1=$?
keys j
wait_for "Probes: layer 3 retention" 5
r2=$?
wait_for "decay gamma\^n per head" 5
check $((r1 + r2 + $?)) "j moves the focus down the layers and the main view follows the kind"

keys Enter
wait_for "^.*> *│? *$|│> " 5
keys -l "1+1"
keys Enter
wait_for "│2 +│" 5
check $? "1+1 typed at the prompt shows 2"

keys -l "nosuch.field = 1"
keys Enter
wait_for "attempt to index a nil value" 5
r1=$?
capture | grep -q "stack traceback"
r2=$?
keys -l "x = = 1"
keys Enter
wait_for "unexpected symbol near '='" 5
r3=$?
keys -l "6*7"
keys Enter
wait_for "│42 +│" 5
check $((r1 + r2 + r3 + $?)) "bad Lua shows the error with its traceback, and the prompt keeps working"

keys -l "while true do end"
keys Enter
sleep 0.5
keys C-c
wait_for "interrupted!" 5
r1=$?
keys -l "3*3"
keys Enter
wait_for "│9 +│" 5
check $((r1 + $?)) "Ctrl-C interrupts a busy Lua loop, never the program"

keys -l "for i = 1, 3 do"
keys Enter
keys -l "print('line', i)"
keys Enter
keys -l "end"
keys Enter
wait_for "line	3|line +3" 5
check $? "multi-line input runs when the chunk is complete"

keys -l "pf.tas"
keys Tab
wait_for "│> pf\.tasks" 5
r1=$?
keys C-u
keys -l "m:tra"
keys Tab
wait_for "│> m:train" 5
check $((r1 + $?)) "Tab completes globals' fields and a userdata's methods"
keys C-u

keys Escape
keys "?"
wait_for "Help: keys" 5
r1=$?
keys z
sleep 0.3
capture | grep -q "Help: keys"
[ $? -ne 0 ]
check $((r1 + $?)) "? opens the help overlay, any key closes it"

$T resize-window -t pf -x 80 -y 24
sleep 0.5
keys s
wait_for "position 3/16" 5
r1=$?
r=0
for title in "Layers" "Tokens" "Probes" "Log"; do capture | grep -q "$title" || r=1; done
check $((r + r1)) "survives a resize to 80x24 and keeps working"

keys :
keys -l "step 2"
keys Enter
wait_for "position 5/16" 5
check $? ":step 2 (a command typed after ':') steps two tokens"

$T resize-window -t pf -x 200 -y 60
sleep 0.5
keys k
wait_for "Probes: layer 2 mlp" 5
r1=$?
[ "$(capture | wc -l)" -ge 59 ]
check $((r1 + $?)) "survives a resize to 200x60 and uses the room"

keys k
keys x
wait_for "wrote postformer-1-weights-1.png" 5
r1=$?
head -c 8 "$TMP/postformer-1-weights-1.png" 2>/dev/null | od -An -c | grep -q "P   N   G"
check $((r1 + $?)) "x writes the focused view as a PNG"

keys q
wait_for "EXITED rc=0" 5
check $? "q quits cleanly (exit status 0)"

wait_for "echoctl" 5
out=$(capture)
echo "$out" | grep -q " icanon " && echo "$out" | grep -q " echo " && ! echo "$out" | grep -q " -icanon " && ! echo "$out" | grep -q " -echo "
check $? "the terminal is left sane (stty -a shows icanon and echo)"

grep -q "^1+1$" "$TMP/state/postformer/history" 2>/dev/null
check $? "the history is saved under \$XDG_STATE_HOME/postformer/history"

# ---- a fatal signal ------------------------------------------------------------------------------
start small.lua
wait_for "small model ready" 20
shell=$($T display -p -t pf '#{pane_pid}')
pid=$(pgrep -P "$shell" postformer)
[ -n "$pid" ] && kill -SEGV "$pid"
wait_for "EXITED rc=139" 5
r1=$?
wait_for "echoctl" 5
out=$(capture)
echo "$out" | grep -q " icanon " && echo "$out" | grep -q " echo " && ! echo "$out" | grep -q " -icanon "
check $((r1 + $?)) "after SIGSEGV the terminal is restored and the signal re-raised (status 139)"

# ---- the tour ------------------------------------------------------------------------------------
start
wait_for "training [0-9]+/" 30
check $? "with no arguments it opens on the tour, which trains while the screen updates"

keys C-c
wait_for "interrupted!" 5
check $? "Ctrl-C interrupts the training"

keys q
wait_for "EXITED rc=0" 5
check $? "q quits the tour"

# ---- headless stays headless ---------------------------------------------------------------------
out=$(cd "$TMP" && "$PROG" run small.lua </dev/null 2>&1)
echo "$out" | grep -q "small model ready"
check $? "postformer run FILE.lua stays headless"

echo "1..$n"
[ "$failed" -eq 0 ]
