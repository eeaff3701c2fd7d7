-- Routing collapse: the same mixture-of-experts model, from the same seed, trained three times on the
-- induction-heads task: without a load-balancing loss, with one, and with expert-choice routing.
-- Without the loss the top-2 router sends every token to the same two experts of eight, the other six
-- die, and m:train raises its collapse alarms; with it the load stays even; expert choice is even by
-- construction. All three learn the task.
--
--   postformer run examples/routing_collapse.lua [STEPS] [EVERY]     (about 20 s on one CPU core)

local steps = math.tointeger(tonumber(arg and arg[1] or "")) or 600
local every = math.tointeger(tonumber(arg and arg[2] or "")) or 100
local V, T, SEED = 16, 32, 1
local E, K = 8, 2
io.stdout:setvbuf("line")   -- the alarms go to stderr: keep the two in order when both are captured

local function model(moe)
  local function expert_layer()
    local o = { experts = E, top_k = K, hidden = 32 }
    for k, v in pairs(moe) do o[k] = v end
    return pf.moe(o)
  end
  return pf.model { vocab = V, dim = 32, seed = SEED,
    layers = { pf.attention { heads = 2 }, expert_layer(), pf.attention { heads = 2 }, expert_layer() } }
end

local runs = {
  { name = "top-2, no balance loss", moe = { router = "topk", aux = 0 } },
  { name = "top-2, balance loss 0.1", moe = { router = "topk", aux = 0.1 } },
  { name = "expert choice", moe = { router = "expert_choice", aux = 0 } },
}

print("Routing collapse: 2 attention + 2 moe blocks (dim 32, 8 SwiGLU experts of width 32, top-2,")
print(("z-loss 0.001), induction heads (vocab %d, %d tokens), %d steps of 32 sequences, lr 3e-3,")
  :format(V, T, steps))
print(("seed %d. Every %d steps: the load of each expert (%% of the routing slots, mean of the last")
  :format(SEED, every))
print(("%d steps) and the indicators of the last step. The alarms (stderr) are m:train's defaults.")
  :format(every))

-- mean of the last n rows of load_history, in % of the slots
local function mean_load(layer, n)
  local h = layer:probe("load_history")
  local rows = h:shape()[1]
  local first = math.max(1, rows - n + 1)
  local mean = {}
  for e = 1, E do
    local s = 0
    for r = first, rows do s = s + h[r][e] end
    mean[e] = 100 * s / (rows - first + 1)
  end
  return mean
end

local function header()
  local cols = {}
  for e = 0, E - 1 do cols[#cols + 1] = ("%4s"):format("e" .. e) end
  return ("  %5s %5s %s   %8s %7s %4s %5s   %6s %5s"):format("step", "layer", table.concat(cols), "max_viol",
    "entropy", "dead", "drop", "loss", "acc")
end

local results = {}
for r, run in ipairs(runs) do
  print()
  print(("== %d. %s =="):format(r, run.name))
  local task = pf.tasks.induction { vocab = V, seq = T, seed = SEED }
  local m = model(run.moe)
  print(header())
  local hist = m:train { task = task, steps = steps, batch = 32, lr = 3e-3, log = false,
    on_step = function(info)
      if info.step % every ~= 0 and info.step ~= steps then return end
      for j, s in ipairs(info.moe) do
        local load = mean_load(m.layers[s.layer], every)
        local cells = {}
        for e = 1, E do cells[e] = ("%4.0f"):format(load[e]) end
        local line = ("  %5s %5d %s   %8.2f %7.3f %4d %5.2f   %6s %5s"):format(j == 1 and tostring(info.step) or "",
          s.layer, table.concat(cells), s.max_violation, s.entropy, s.dead, s.drop_rate,
          j == 1 and ("%.3f"):format(info.loss) or "", j == 1 and ("%.2f"):format(info.acc) or "")
        print((line:gsub("%s+$", "")))
      end
    end }
  local acc = m:eval(task, 512)
  local res = { name = run.name, acc = acc, alarms = hist.alarms, layers = {} }
  for j, h in ipairs(hist.moe) do   -- the indicators of the last training step (eval's forwards move the probes)
    local n = hist.steps
    res.layers[j] = { index = h.layer, max_violation = h.max_violation[n], entropy = h.entropy[n], dead = h.dead[n],
      drop = h.drop_rate[n] }
  end
  results[r] = res
end

print()
print("== after training ==")
print(("  %-24s %5s %8s %7s %4s %5s   %8s   %s"):format("run", "layer", "max_viol", "entropy", "dead", "drop",
  "accuracy", "alarms (kind@step)"))
for _, res in ipairs(results) do
  for j, l in ipairs(res.layers) do
    local alarms = {}
    for _, a in ipairs(res.alarms) do
      if a.layer == l.index then alarms[#alarms + 1] = a.kind .. "@" .. a.step end
    end
    print(("  %-24s %5d %8.2f %7.3f %4d %5.2f   %8s   %s"):format(j == 1 and res.name or "", l.index,
      l.max_violation, l.entropy, l.dead, l.drop, j == 1 and ("%.1f%%"):format(100 * res.acc) or "",
      #alarms > 0 and table.concat(alarms, ", ") or "none"))
  end
end
print()
print("max_viol = max_i load_i / mean load - 1 (0: even, 3 = 8/2 - 1: top-2 onto two experts), entropy =")
print("mean router entropy / log 8, dead = experts with no token in the last 100 steps, drop = slots")
print("dropped (expert choice: tokens no expert took), accuracy on 512 fresh sequences.")
