-- Selective copying: what selectivity adds (the Mamba paper, Gu & Dao 2023, section 3.1 and Table 1).
--
-- Each sequence holds a few data tokens at random places among blanks, then a separator, then the
-- data tokens again in order: the model must recall them. A time-invariant SSM (s4d: Δ, B and C fixed
-- per channel) sees the blanks exactly as it sees the data and has to carry every position through its
-- state; a selective one (mamba: Δ, B, C computed from the token) can let the blanks pass without
-- writing anything, and then the task is a plain copy. Both models here are the same 2-layer,
-- dim-64 stack of Mamba blocks, trained the same way; they differ only in the scan.
--
--   postformer run examples/selective_copy.lua [STEPS [SEQ [TOKENS [KINDS]]]]
--   postformer run examples/selective_copy.lua 1600 64 4 mamba,s4d,mamba2,retention,gla,attention
--
-- KINDS is a comma-separated list of mixers (default: mamba,s4d; also mamba2, retention, gla,
-- attention). The defaults took 4 min (mamba) and 1.5 min (s4d) on one busy CPU core. Mamba
-- sits near chance for a few hundred steps before it finds the selection, and when it leaves that
-- plateau varies with the seed and the step count; at 128 tokens per sequence it was still at 32%
-- after 1500 steps.
-- The paper trains on sequences of 4096 with 16 data tokens for 400k steps on a GPU; this runs in
-- minutes on a CPU, so its sequences are shorter and it recalls fewer tokens.

local steps = math.tointeger(tonumber(arg and arg[1] or "")) or 1600
local T = math.tointeger(tonumber(arg and arg[2] or "")) or 64
local K = math.tointeger(tonumber(arg and arg[3] or "")) or 4
local V, DIM, BATCH, LR, SEED = 8, 64, 16, 1e-2, 1

-- the mixers, each in 2 pre-norm residual blocks of width 64, and the row of Table 1 it matches
local mixers = {
  mamba = { make = function() return pf.mamba {} end, paper = "Mamba block + S6", acc = 99.8, nogate = 97.0 },
  s4d = { make = function() return pf.s4d {} end, paper = "Mamba block + S4", acc = 56.4, nogate = 18.3 },
  mamba2 = { make = function() return pf.mamba2 { head_dim = 32, state = 16 } end },
  retention = { make = function() return pf.retention { heads = 4 } end },
  gla = { make = function() return pf.gla { heads = 4 } end },
  attention = { make = function() return pf.attention { heads = 4 } end },
}
local order = {}
for name in ((arg and arg[4]) or "mamba,s4d"):gmatch("[^,%s]+") do
  if not mixers[name] then error("unknown mixer '" .. name .. "' (mamba, s4d, mamba2, retention, gla, attention)") end
  order[#order + 1] = name
end

print("postformer " .. pf.version .. ": selective copying")
print(("vocab %d (%d data tokens, a blank, a separator), %d tokens per sequence, %d to recall;"):format(V, V - 2, T, K))
print(("2 layers of width %d; %d steps of %d sequences, AdamW lr %g (warmup, cosine), seed %d."):format(DIM, steps,
  BATCH, LR, SEED))
print(("Chance is 1/%d = %.1f%%. Accuracy: the recalled tokens that are right, on 1024 fresh sequences."):format(V - 2,
  100 / (V - 2)))
print()

local rows = {}
for _, name in ipairs(order) do
  local mx = mixers[name]
  local m = pf.model { vocab = V, dim = DIM, seed = SEED, layers = { mx.make(), mx.make() } }
  local task = pf.tasks.selective_copy { vocab = V, seq = T, tokens = K, seed = SEED }
  io.write(("training %-10s (%s parameters) ... "):format(name, pf.util.count(m:params()))) io.flush()
  local h = m:train { task = task, steps = steps, batch = BATCH, lr = LR, log = false }
  local acc = m:eval(pf.tasks.selective_copy { vocab = V, seq = T, tokens = K, seed = 1000 + SEED }, 1024)
  print(("%.1f%% in %s"):format(100 * acc, pf.util.seconds(h.elapsed)))
  rows[#rows + 1] = { name = name, acc = acc, elapsed = h.elapsed, mx = mx }
  m:close()
end

print()
print(("%-10s %9s %10s   %s"):format("mixer", "accuracy", "time", "the paper, Table 1 (seq 4096, 16 tokens)"))
for _, r in ipairs(rows) do
  local paper = r.mx.paper and ("%s %.1f%%  (without the gate: %.1f%%)"):format(r.mx.paper, r.mx.acc, r.mx.nogate) or ""
  print((("%-10s %8.1f%% %10s   %s"):format(r.name, 100 * r.acc, pf.util.seconds(r.elapsed), paper):gsub("%s+$", "")))
end
