-- The tour: a small hybrid model learns multi-query associative recall (MQAR: remember key-value
-- pairs, answer the value when a key comes back) in a few seconds, then steps token by token so
-- its insides can be watched. `postformer` opens the playground on this file; `postformer run
-- examples/tour.lua` runs it headless.
--
-- In the playground: s steps a token, r runs, j/k move between layers, Enter types Lua, ? helps.
-- Try: m:train{task = task, steps = 200}   m.layers[1]:probe("weights")   pf.tui.layer(3)

-- the mixers this build has, in the order a hybrid would stack them
local mixers = {}
for _, kind in ipairs{ "mamba", "retention", "attention" } do
  if pf[kind] then mixers[#mixers + 1] = kind end
end
local options = { attention = { heads = 4, window = 24, tile = 8 }, retention = { heads = 4 }, mamba = { state = 16 } }

local layers = {}
for i, kind in ipairs(mixers) do
  layers[#layers + 1] = pf[kind](options[kind])
  if pf.moe and i == 1 then layers[#layers + 1] = pf.moe{ experts = 4, top_k = 2 }
  else layers[#layers + 1] = pf.mlp{} end
end

m = pf.model{ vocab = 32, dim = 32, seed = 1, layers = layers }
task = pf.tasks.mqar{ vocab = 32, seq = 32, pairs = 4 }
print(m:describe())
pf.watch(m, task)

local steps = tonumber(arg and arg[1]) or 300
local hist = m:train{ task = task, steps = steps, batch = 16, lr = 1e-2 }
print(hist)
print(string.format("accuracy on 128 fresh sequences: %.3f", m:eval(task, 128)))

if pf.tui then
  print("now stepping: s steps one token, r runs / pauses, j / k pick the layer whose insides show")
  pf.tui.run()
else
  local out = m:generate({ 3, 9, 4 }, 8)
  print("generated after {3, 9, 4}: " .. table.concat(out, " "))
end
