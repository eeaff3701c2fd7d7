#!/bin/sh
# make bench: postformer and its PyTorch peer on the same configuration in the same run, then the
# figures side by side with ratios (higher is better for postformer on both ratios).
BUILD=${BUILD:-build}
cd "$(dirname "$0")/../.." || exit 2
config="--layers attention,mlp,attention,mlp --vocab 256 --dim 128 --seq 256 --batch 16 --steps 10 --gen 256"
echo "configuration: $config (cpu, $(nproc) cores)"
ours=$("$BUILD"/bench $config) || exit 1
echo "$ours"
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
    peer=$(/usr/bin/python3 tests/bench/peer_torch.py $config) || exit 1
    echo "$peer"
else
    peer=""
    echo "PyTorch peer skipped: /usr/bin/python3 has no torch (make bench installs python3-torch)"
fi
lua5.4 - "$ours" "$peer" <<'LUA'
local function field(line, k) return tonumber(line:match('"' .. k .. '":%s*([%d%.eE+-]+)')) end
local ours, peer = arg[1], arg[2]
local ot, os_ = field(ours, "train_tokens_per_s"), field(ours, "step_us_per_token")
print(string.format("%-28s %14s %14s %8s", "", "postformer", "pytorch", "ratio"))
if peer ~= "" then
  local pt, ps = field(peer, "train_tokens_per_s"), field(peer, "step_us_per_token")
  print(string.format("%-28s %14.0f %14.0f %7.2fx", "training tokens/s", ot, pt, ot / pt))
  print(string.format("%-28s %14.1f %14.1f %7.2fx", "stepping us/token", os_, ps, ps / os_))
else
  print(string.format("%-28s %14.0f", "training tokens/s", ot))
  print(string.format("%-28s %14.1f", "stepping us/token", os_))
end
LUA

# the terminal playground: a full redraw of every pane at 200x60 into a virtual screen (curses on
# /dev/null, 256 colours, the focused layer's probes fetched again each frame), and stepping
# tokens/s with the views live (frames at 30/s) against m:step in a plain Lua loop
ui=$("$BUILD"/postformer --bench-ui 200x60) || exit 1
echo "$ui"
lua5.4 - "$ui" <<'LUA'
local function field(k) return tonumber(arg[1]:match('"' .. k .. '":%s*([%d%.eE+-]+)')) end
local fps, head, live = field("redraw_fps"), field("step_tokens_per_s_headless"), field("step_tokens_per_s_live")
print(string.format("%-28s %14.0f", "TUI full redraw 200x60 fps", fps))
print(string.format("%-28s %14.0f", "stepping tokens/s headless", head))
print(string.format("%-28s %14.0f  (views cost %.1f%%)", "stepping tokens/s live", live, 100 * (1 - live / head)))
LUA
