#!/bin/sh
# make bench: postformer and its PyTorch peer (tests/bench/peer_torch.py) on every configuration
# below, each pair run one after the other in this command, then one table with ratios (higher is
# better for postformer in both ratio columns), the parameter counts of both (equal when the
# architectures match), and for the MoE the layer's time over a dense MLP's of the same active FLOPs.
#
# All configurations: vocab 256, dim 128, seq 256, batch 16, 4 blocks (pre-RMSNorm residual), untied
# head, AdamW. Timed steps are few so that the whole run stays within about 4 minutes on 2 cores:
# each line gives its warm-up and timed training steps and its stepped tokens, for ours and the peer.
BUILD=${BUILD:-build}
# both sides (OpenMP in ours and in torch) wait passively: spinning threads starve the BLAS threads
# on a busy machine (README, Threads); set OMP_WAIT_POLICY to measure otherwise
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
cd "$(dirname "$0")/../.." || exit 2

common=${BENCH_COMMON:-"--vocab 256 --dim 128 --seq 256 --batch 16"}   # BENCH_COMMON: a quick smoke run
moe="moe{experts=8,top_k=2}"
dense="mlp{hidden=688}"   # top_k x the expert hidden width (SwiGLU, 8/3 * 128 rounded up to 8 = 344)
# name | layers | ours: warm-up and timed training steps, stepped tokens, layer repetitions | the
# peer's where fewer (its Mamba scan and MoE expert loop are slow)
configs="attn/mlp (issue 2)|attention,mlp,attention,mlp|--warmup 1 --steps 5 --gen 256|--warmup 1 --steps 3 --gen 256
mamba x4 (issue 3)|mamba,mamba,mamba,mamba|--warmup 1 --steps 3 --gen 256|--warmup 0 --steps 1 --gen 32
retention x4 (issue 3)|retention,retention,retention,retention|--warmup 1 --steps 4 --gen 256|--warmup 1 --steps 2 --gen 128
moe 8x top-2 x4 (issue 4)|$moe,$moe,$moe,$moe|--warmup 1 --steps 4 --gen 256 --layer-reps 3|--warmup 1 --steps 2 --gen 128 --layer-reps 2
dense mlp 688 x4 (issue 4)|$dense,$dense,$dense,$dense|--warmup 1 --steps 4 --gen 256 --layer-reps 3|--warmup 1 --steps 3 --gen 128 --layer-reps 2"
have_torch=0
/usr/bin/python3 -c "import torch" 2>/dev/null && have_torch=1
if [ $have_torch = 1 ]; then
    torch_version=$(/usr/bin/python3 -c "import torch; print(torch.__version__)")
else
    torch_version="none (PyTorch peer skipped: make bench installs python3-torch)"
fi
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "machine: $(nproc) cores ($cpu), OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, torch $torch_version"
echo "common: $common; the PyTorch peer with torch.set_num_threads($(nproc))"
echo "load at start:$(uptime | sed 's/.*load average/ load average/')"

results=$(mktemp)
trap 'rm -f "$results"' EXIT
echo "$configs" | while IFS='|' read -r name layers extra peer_extra; do
    peer_extra=${peer_extra:-$extra}
    echo "  $name: $layers; ours $extra; torch $peer_extra"
    ours=$("$BUILD"/bench --layers "$layers" $common $extra) || exit 1
    peer=""
    if [ $have_torch = 1 ]; then
        peer=$(/usr/bin/python3 tests/bench/peer_torch.py --layers "$layers" $common $peer_extra) || exit 1
    fi
    printf '%s\t%s\t%s\n' "$name" "$ours" "$peer" >> "$results"
done || exit 1
echo "load at end:$(uptime | sed 's/.*load average/ load average/')"

lua5.4 - "$results" <<'LUA'
local function field(line, k) return tonumber((line or ""):match('"' .. k .. '":%s*([%d%.eE+-]+)')) end
local rows = {}
for line in io.lines(arg[1]) do
  local name, ours, peer = line:match("^([^\t]*)\t([^\t]*)\t?(.*)$")
  rows[#rows + 1] = {name = name, ours = ours, peer = peer ~= "" and peer or nil}
end
local function ratio(a, b) return (a and b and b > 0) and string.format("%.2fx", a / b) or "-" end
local function num(v, fmt) return v and string.format(fmt, v) or "-" end
print()
print(string.format("%-26s | %10s %10s %7s | %10s %10s %7s | %10s %7s | %10s %7s", "", "", "", "",
                    "", "", "", "torch on 1", "thread", "", ""))
print(string.format("%-26s | %10s %10s %7s | %10s %10s %7s | %10s %7s | %10s %7s", "config", "ours tok/s",
                    "torch", "ratio", "ours stepus", "torch", "ratio", "tok/s", "ratio", "step us", "ratio"))
print(string.rep("-", 26) .. "-+-" .. string.rep("-", 30) .. "-+-" .. string.rep("-", 30) .. "-+-" ..
      string.rep("-", 18) .. "-+-" .. string.rep("-", 18))
for _, r in ipairs(rows) do
  local ot, pt = field(r.ours, "train_tokens_per_s"), field(r.peer, "train_tokens_per_s")
  local os_, ps = field(r.ours, "step_us_per_token"), field(r.peer, "step_us_per_token")
  local p1t, p1s = field(r.peer, "train_tokens_per_s_1thread"), field(r.peer, "step_us_per_token_1thread")
  print(string.format("%-26s | %10s %10s %7s | %10s %10s %7s | %10s %7s | %10s %7s", r.name, num(ot, "%.0f"),
                      num(pt, "%.0f"), ratio(ot, pt), num(os_, "%.1f"), num(ps, "%.1f"), ratio(ps, os_),
                      num(p1t, "%.0f"), ratio(ot, p1t), num(p1s, "%.1f"), ratio(p1s, os_)))
end
print("(ratios: ours/torch for tokens/s, torch/ours for us per token: above 1 means postformer is faster;")
print(" ours always on all cores; torch on all cores (torch.set_num_threads(nproc)), then again on 1 thread)")
print("(retention: ours trains in its default chunkwise form, chunk 64; torch in the parallel form. Both step")
print(" recurrently; mamba: torch scans sequentially in Python; moe: torch loops over the experts)")
print()
print("parameters (ours = torch proves the architectures match):")
for _, r in ipairs(rows) do
  local o, p = field(r.ours, "params"), field(r.peer, "params")
  print(string.format("  %-26s ours %9d  torch %9s  %s", r.name, o, p and string.format("%d", p) or "-",
                      p and (o == p and "equal" or "DIFFERENT") or ""))
end
local moe, dense
for _, r in ipairs(rows) do
  if r.name:match("^moe") then moe = r elseif r.name:match("^dense") then dense = r end
end
if moe and dense then
  print()
  print("MoE layer / dense MLP layer of the same active FLOPs (one layer alone, forward + backward over")
  print("one training batch, repeated after a warm-up as listed above; us per token):")
  for _, v in ipairs({{"ours", "ours", ""}, {"torch", "peer", ""}, {"torch 1 thread", "peer", "_1thread"}}) do
    local m, d = field(moe[v[2]], "layer_us_per_token" .. v[3]), field(dense[v[2]], "layer_us_per_token" .. v[3])
    if m and d then
      print(string.format("  %-15s moe %8.2f us  dense %8.2f us  moe/dense %5.2f", v[1], m, d, m / d))
    end
  end
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
