-- MQAR's plateau near 3/8, and what the model has learnt there.
--
--   postformer run examples/mqar_plateau.lua [LAYERS] [STEPS] [WARMUP]
--     LAYERS: a letter per block, a = attention (4 heads), m = mlp (SwiGLU); default "amam"
--     e.g.  postformer run examples/mqar_plateau.lua aa 2000 200     (learns the task)
--
-- In pf.tasks.mqar the 8 key-value pairs come first; each key is then asked once, in random order,
-- and its value follows it in the input, so every answered query puts its value back into the
-- stream. A model can therefore score without recalling anything: answer with one of the pair
-- values that have not been asked for yet. That guess is right with probability 1/8 for the first
-- query, 1/7 for the second, ..., 1 for the last, 0.34 on average. This script trains a model, then
-- prints its accuracy by the query's rank among the 8 and beside it that elimination guess. A model
-- on the plateau follows the guess; one that has learnt recall is right at every rank.

local spec = arg and arg[1] or "amam"
local steps = math.tointeger(tonumber(arg and arg[2] or "")) or 1500
local warmup = math.tointeger(tonumber(arg and arg[3] or "")) or 100
local V, T, PAIRS, BATCH = 64, 64, 8, 32

local layers = {}
for ch in spec:gmatch(".") do
  if ch == "a" then layers[#layers + 1] = pf.attention { heads = 4 }
  elseif ch == "m" then layers[#layers + 1] = pf.mlp {}
  else error(("layers: '%s' is neither a (attention) nor m (mlp)"):format(ch)) end
end
local m = pf.model { vocab = V, dim = 64, seed = 1, layers = layers }
local task = pf.tasks.mqar { vocab = V, seq = T, pairs = PAIRS }
print(("MQAR (vocab %d, seq %d, %d pairs); blocks %s, width 64; %d steps of %d, lr 3e-3, warm-up %d"):format(
  V, T, PAIRS, spec, steps, BATCH, warmup))
m:train { task = task, steps = steps, batch = BATCH, lr = 3e-3, warmup = warmup, log = false }

-- accuracy by rank over 256 fresh sequences: the rank of a query is its place among the marked
-- positions of its sequence
local right, seen = {}, {}
for r = 1, PAIRS do right[r], seen[r] = 0, 0 end
for _ = 1, 8 do
  local x, y, mask = task:batch(BATCH)
  local logits = m:forward(x)
  for b = 1, BATCH do
    local rank = 0
    for t = 1, T do
      if mask[b][t] > 0 then
        rank = rank + 1
        local best, guess = -math.huge, -1
        for v = 1, V do
          local l = logits[b][t][v]
          if l > best then best, guess = l, v - 1 end
        end
        seen[rank] = seen[rank] + 1
        if guess == y[b][t] then right[rank] = right[rank] + 1 end
      end
    end
  end
end

local function row(label, f, fmt)
  local cells = {}
  for r = 1, PAIRS do cells[#cells + 1] = (fmt or "%5.2f"):format(f(r)) end
  print(("%-28s %s"):format(label, table.concat(cells, " ")))
end
local total, count = 0, 0
for r = 1, PAIRS do total, count = total + right[r], count + seen[r] end
print()
row("query rank", function(r) return r end, "%5d")
row("accuracy", function(r) return right[r] / seen[r] end)
row("eliminating asked values", function(r) return 1 / (PAIRS + 1 - r) end)
print(("\naccuracy over all queries %.3f (elimination alone: 0.340, recall: 1)"):format(total / count))
