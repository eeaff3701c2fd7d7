-- The tour: a small hybrid model learns the induction-head task in a few seconds, answers from
-- memory, and shows where its attention looks; in the playground it then steps token by token.
--
--   postformer                       opens the playground on this file
--   postformer examples/tour.lua [STEPS]
--   postformer run examples/tour.lua [STEPS]   headless
--
-- In the playground: s steps a token, r runs, j/k move between layers, Enter types Lua, ? helps.
-- Try: m:train{task = task, steps = 200}   m.layers[1]:probe("weights")   pf.tui.layer(3)

local steps = math.tointeger(tonumber(arg and arg[1] or "")) or 600
local V, T = 16, 32

task = pf.tasks.induction { vocab = V, seq = T, seed = 1 }   -- globals: the prompt can use them
m = pf.model { vocab = V, dim = 32, seed = 1,
  layers = { pf.attention { heads = 2, tile = 8 }, pf.mlp {}, pf.attention { heads = 2, tile = 8 }, pf.mlp {} } }

print("postformer " .. pf.version .. ": the tour")
print()
print("The task: induction heads. Each sequence is random tokens in which the trigger 0 appears once")
print("early on, followed by some token b; the sequence ends with the trigger again and the model must")
print("say b. No fixed rule gives b: the model has to find the earlier 0 and copy what came after it.")
print()
print(m:describe())
print()
pf.watch(m, task)   -- the playground's views show this model and step through this task

print(("Training %d steps of 32 sequences of %d tokens:"):format(steps, T))
local history = m:train { task = task, steps = steps, batch = 32, lr = 3e-3 }
print(history)
print(("Accuracy on 512 fresh sequences: %.1f%%"):format(100 * m:eval(task, 512)))

-- a sequence with the earlier trigger and its follower in brackets
local function show(seq)
  local out, i = {}, 1
  while i <= #seq do
    if seq[i] == 0 and i < #seq and i + 1 < #seq then
      out[#out + 1] = ("[0 %d]"):format(seq[i + 1])
      i = i + 2
    else
      out[#out + 1] = tostring(seq[i])
      i = i + 1
    end
  end
  return table.concat(out, " ")
end

print()
print("Asking it: for each prompt, m:generate(prompt, 1) resets the model, steps the prompt token by")
print("token and picks the most likely next token.")
local inputs, targets = task:batch(5)
for i = 1, #inputs do
  local want = targets[i][T]
  local got = m:generate(inputs[i], 1)[1]
  print(("  %s -> %2d  (b = %d) %s"):format(show(inputs[i]), got, want, got == want and "right" or "wrong"))
end

-- Step one prompt and ask the attention layers where the last token looked.
print()
print("Where the attention of the last token (the second trigger) goes, from the probe \"weights\":")
local prompt = inputs[1]
m:reset()
for _, t in ipairs(prompt) do m:step(t) end
for _, layer in ipairs(m.layers) do
  if layer.kind == "attention" then
    local w = layer:probe("weights")       -- [heads, kv_len]
    for h = 1, #w do
      local row = w[h]
      local at = row:argmax()
      print(("  layer %d, head %d: %3.0f%% on position %2d (token %2d)%s"):format(layer.index, h,
        100 * row:max(), at, prompt[at], prompt[at - 1] == 0 and at < #prompt and ", right after the earlier trigger" or ""))
    end
  end
end

if pf.tui then
  print()
  print("Now stepping through a sequence: s steps one token, r runs / pauses, j / k pick the layer.")
  pf.tui.run()
end
