-- Models from Lua: forward and step agree, batches, training, evaluation, generation, determinism.
local pf = require "postformer"

local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  return not ok and tostring(err) or nil
end

local function small(seed)
  return pf.model { vocab = 16, dim = 16, seed = seed or 1, layers = { pf.mlp { hidden = 32 }, pf.mlp { act = "gelu" } } }
end

-- max |a - b| over max |b|, as tests/c/layer_check.c measures it
local function max_rel_diff(a, b)
  local diff, scale = 0, 0
  for i = 1, #a do
    diff = math.max(diff, math.abs(a[i] - b[i]))
    scale = math.max(scale, math.abs(b[i]))
  end
  return diff / math.max(scale, 1e-30)
end

describe("m:forward and m:step", function()
  local m = small()
  local seq = { 3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8 }

  it("give [T, V] for a table of ids and [B, T, V] for a table of tables", function()
    assert.same({ 12, 16 }, m:forward(seq):shape())
    assert.same({ 2, 12, 16 }, m:forward({ seq, seq }):shape())
    assert.same({ 1, 12, 16 }, m:forward({ seq }):shape())
  end)

  it("give the same logits for a sequence in a batch as alone", function()
    local other = {}
    for i = 1, #seq do other[i] = (seq[i] * 7) % 16 end
    local both = m:forward({ other, seq })
    local alone = m:forward(seq)
    for t = 1, #seq do
      assert.is_true(max_rel_diff(both[2][t]:totable(), alone[t]:totable()) <= 1e-5)
    end
  end)

  it("agree: stepping token by token gives the forward logits", function()
    local logits = m:forward(seq)
    m:reset()
    assert.equal(0, m:position())
    for t, id in ipairs(seq) do
      local s = m:step(id)
      assert.same({ 16 }, s:shape())
      assert.is_true(max_rel_diff(s:totable(), logits[t]:totable()) <= 1e-4, "position " .. t)
    end
    assert.equal(#seq, m:position())
  end)

  it("time each layer's last step (m:blocks()[i].step_seconds)", function()
    local m = pf.model { vocab = 8, dim = 16, seed = 1, layers = { pf.mamba {}, pf.attention { heads = 2 } } }
    for _, b in ipairs(m:blocks()) do assert.equal(0, b.step_seconds) end
    m:step(1)
    for _, b in ipairs(m:blocks()) do
      assert.is_true(b.step_seconds > 0 and b.step_seconds < 10, tostring(b.step_seconds))
    end
  end)

  it("name a token out of range and the vocabulary", function()
    local msg = error_of(function() m:step(16) end)
    assert.truthy(msg:find("bad argument #1 to 'step' (token 16 is out of range for vocab 16 (ids 0..15))", 1, true), msg)
    msg = error_of(function() m:step(-1) end)
    assert.truthy(msg:find("token -1 is out of range for vocab 16", 1, true), msg)
    msg = error_of(function() m:step(2.5) end)
    assert.truthy(msg:find("not an integer", 1, true), msg)
    msg = error_of(function() m:forward({ { 1, 2 }, { 3, 99 } }) end)
    assert.truthy(msg:find("token [2][2] 99 is out of range for vocab 16", 1, true), msg)
    msg = error_of(function() m:forward({ { 1, 2 }, { 3 } }) end)
    assert.truthy(msg:find("sequence 2", 1, true), msg)
    assert.truthy(error_of(function() m:forward({}) end):find("no tokens", 1, true))
  end)
end)

describe("m:train and m:eval", function()
  local task_opts = { vocab = 16, seq = 16 }

  it("return a history and call on_step with the documented fields", function()
    local m = small()
    local seen = {}
    local h = m:train { task = pf.tasks.copy(task_opts), steps = 12, batch = 4, lr = 1e-2, warmup = 2,
      on_step = function(info) seen[#seen + 1] = info end }
    assert.equal(12, #h.loss)
    assert.equal(12, #h.acc)
    assert.equal(12, #h.aux)
    assert.equal(12, #seen)
    local info = seen[12]
    for _, k in ipairs({ "step", "loss", "acc", "aux_loss", "grad_norm", "lr", "tokens_per_s", "elapsed" }) do
      assert.is_number(info[k], k)
    end
    assert.equal(12, info.step)
    assert.equal(h.loss[12], info.loss)
    -- warmup then cosine: lr rises for 2 steps, then falls to lr * min_lr_ratio
    assert.near(0.5e-2, seen[1].lr, 1e-9)
    assert.near(1e-2, seen[2].lr, 1e-9)
    assert.near(1e-3, seen[12].lr, 1e-9)
    assert.equal(12, m:steps_taken())
    assert.truthy(tostring(h):find("12 steps", 1, true))
  end)

  it("stops when on_step returns false", function()
    local h = small():train { task = pf.tasks.copy(task_opts), steps = 50, batch = 2,
      on_step = function(info) return info.step < 3 end }
    assert.equal(3, #h.loss)
  end)

  it("learns: the loss falls on a copy task", function()
    local m = small()
    local h = m:train { task = pf.tasks.copy(task_opts), steps = 60, batch = 8, lr = 1e-2 }
    local first, last = 0, 0
    for i = 1, 5 do first, last = first + h.loss[i], last + h.loss[#h.loss - 5 + i] end
    assert.is_true(last < first)
    local acc, loss = m:eval(pf.tasks.copy(task_opts), 64)
    assert.is_true(acc >= 0 and acc <= 1)
    assert.is_true(loss > 0)
  end)

  it("is deterministic: the same seeds give the same numbers", function()
    local function run()
      local m = small(42)
      return m:train { task = pf.tasks.copy { vocab = 16, seq = 16, seed = 9 }, steps = 8, batch = 4 }.loss
    end
    assert.same(run(), run())
  end)

  it("rejects bad options by name", function()
    local m, t = small(), pf.tasks.copy(task_opts)
    assert.truthy(error_of(m.train, m, { task = t, stepz = 3 }):find("unknown option 'stepz'", 1, true))
    assert.truthy(error_of(m.train, m, { steps = 3 }):find("'task' is required", 1, true))
    assert.truthy(error_of(m.train, m, { task = t, steps = -3 }):find("'steps'", 1, true))
    assert.truthy(error_of(m.train, m, { task = t, lr = "fast" }):find("'lr'", 1, true))
    local big = pf.tasks.copy { vocab = 64, seq = 8 }
    assert.truthy(error_of(m.eval, m, big, 4):find("needs vocab >= 64", 1, true))
  end)
end)

describe("m:generate", function()
  local m = small(5)

  it("is greedy by default: each token is the argmax of the logits before it", function()
    local prompt = { 2, 7, 1 }
    local out, probs = m:generate(prompt, 6)
    assert.equal(6, #out)
    m:reset()
    local logits
    for _, t in ipairs(prompt) do logits = m:step(t) end
    for i = 1, 6 do
      local best, v = 0, -math.huge
      for j, x in ipairs(logits:totable()) do
        if x > v then best, v = j - 1, x end
      end
      assert.equal(best, out[i])
      assert.is_true(probs[i] > 0 and probs[i] <= 1)
      logits = m:step(out[i])
    end
  end)

  it("samples deterministically from a seed", function()
    local a = m:generate({ 1 }, 10, { temperature = 1.5, top_k = 5, seed = 3 })
    local b = m:generate({ 1 }, 10, { temperature = 1.5, top_k = 5, seed = 3 })
    assert.same(a, b)
    assert.truthy(error_of(m.generate, m, { 1 }, 3, { temp = 1 }):find("unknown option 'temp'", 1, true))
    assert.truthy(error_of(m.generate, m, {}, 3):find("prompt", 1, true))
  end)
end)

describe("a hybrid model (attention and mlp)", function()
  local m = pf.model { vocab = 24, dim = 32, seed = 2,
    layers = { pf.attention { heads = 4, tile = 8 }, pf.mlp {}, pf.attention { heads = 2, kv_heads = 1 }, pf.mlp {} } }
  local seq = {}
  for i = 1, 40 do seq[i] = (i * i + 3) % 24 end

  it("steps to the forward logits over 40 tokens", function()
    local logits = m:forward(seq)
    m:reset()
    local worst = 0
    for t, id in ipairs(seq) do worst = math.max(worst, max_rel_diff(m:step(id):totable(), logits[t]:totable())) end
    assert.is_true(worst <= 1e-4, "max relative difference " .. worst)
  end)

  it("publishes the attention probes by name, with the documented shapes", function()
    local names = m.layers[1]:probes()
    table.sort(names)
    for _, want in ipairs({ "kv_len", "tiles", "weights" }) do
      local found = false
      for _, n in ipairs(names) do found = found or n == want end
      assert.is_true(found, want)
    end
    m:forward(seq)
    local tiles = m.layers[1]:probe("tiles")
    assert.same({ 5, 5 }, tiles:shape())        -- 40 tokens in tiles of 8
    m:reset()
    for i = 1, 7 do m:step(seq[i]) end
    assert.equal(7, m.layers[3]:probe("kv_len")[1])
    assert.same({ 2, 7 }, m.layers[3]:probe("weights"):shape())
    local full = m.layers[1]:probes(true)
    assert.is_string(full[1].shape)
    assert.is_string(full[1].help)
  end)
end)
