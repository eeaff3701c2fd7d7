-- Mixture of experts from Lua: the balance loss against routing collapse (the configuration of
-- examples/routing_collapse.lua, shortened), the auxiliary losses m:train reports, and its alarms.
local pf = require "postformer"

local function contains(s, ...)
  for _, part in ipairs({ ... }) do
    if not (s and s:find(part, 1, true)) then return false end
  end
  return true
end

local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  return not ok and tostring(err) or nil
end

-- examples/routing_collapse.lua's model (moe blocks: `blocks` of attention + moe) and task, seed 1
local function collapse_model(moe, blocks)
  local layers = {}
  for _ = 1, blocks or 2 do
    local o = { experts = 8, top_k = 2, hidden = 32 }
    for k, v in pairs(moe) do o[k] = v end
    layers[#layers + 1] = pf.attention { heads = 2 }
    layers[#layers + 1] = pf.moe(o)
  end
  return pf.model { vocab = 16, dim = 32, seed = 1, layers = layers }
end

local function task() return pf.tasks.induction { vocab = 16, seq = 32, seed = 1 } end

-- train 150 steps of 16 sequences (the example: 600 of 32) with io.stderr captured; returns the
-- history and what was written to stderr
local function train(m, extra)
  local opts = { task = task(), steps = 150, batch = 16, lr = 3e-3, log = false }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local written = {}
  local real = io.stderr
  io.stderr = { write = function(self, ...)
    for _, s in ipairs({ ... }) do written[#written + 1] = s end
    return self
  end, flush = function() end }
  local ok, hist = pcall(m.train, m, opts)
  io.stderr = real
  assert(ok, hist)
  return hist, table.concat(written)
end

describe("the balance loss", function()
  it("keeps max_violation after training well below the collapse without it (example, shortened)", function()
    local off = train(collapse_model { aux = 0 }, { alarms = false })
    local on = train(collapse_model { aux = 0.1 }, { alarms = false })
    local n = off.steps
    for j = 1, 2 do
      local a, b = off.moe[j].max_violation[n], on.moe[j].max_violation[n]
      -- without the loss top-2 piles onto two or three experts (3 = all slots on two of eight)
      assert.is_true(a > 1.5, ("layer %d without the balance loss: max_violation %.3f"):format(off.moe[j].layer, a))
      assert.is_true(b < 0.5 * a, ("layer %d: max_violation %.3f with the loss, %.3f without"):format(
        on.moe[j].layer, b, a))
      assert.is_true(b < 0.6, ("layer %d with the balance loss: max_violation %.3f"):format(on.moe[j].layer, b))
    end
  end)
end)

describe("m:train with moe layers", function()
  it("reports each layer's auxiliary losses per step, summing to history.aux", function()
    local m = collapse_model({ aux = 0.1, zloss = 0.01 })
    local hist = m:train { task = task(), steps = 5, batch = 4, lr = 3e-3, log = false, alarms = false,
      on_step = function(info)
        assert.equal(2, #info.moe)
        assert.equal(2, info.moe[1].layer)
        assert.equal(4, info.moe[2].layer)
        for _, s in ipairs(info.moe) do
          assert.is_number(s.balance)
          assert.is_number(s.z_loss)
          assert.is_true(math.abs(s.aux_loss - (0.1 * s.balance + 0.01 * s.z_loss)) <= 1e-6 * math.max(1, s.aux_loss))
        end
        assert.same({}, info.alarms)
      end }
    assert.equal(5, #hist.aux)
    for i = 1, 5 do
      local sum = hist.moe[1].aux_loss[i] + hist.moe[2].aux_loss[i]
      assert.is_true(math.abs(hist.aux[i] - sum) <= 1e-5 * sum, ("step %d: %g vs %g"):format(i, hist.aux[i], sum))
      -- balance = E * sum_i f_i P_i >= 1 only approximately (f ~ P near init): close to 1 at the start
      assert.is_true(hist.moe[1].balance[i] > 0.5 and hist.moe[1].balance[i] < 2)
    end
    -- the last row is the probes of the last training step
    assert.equal(m.layers[2]:probe("max_violation")[1], hist.moe[1].max_violation[5])
  end)

  it("has no moe rows and no alarms for a model without moe layers", function()
    local m = pf.model { vocab = 16, dim = 16, seed = 1, layers = { pf.mlp {} } }
    local hist = m:train { task = task(), steps = 2, batch = 2, log = false }
    assert.is_nil(hist.moe)
    assert.same({}, hist.alarms)
  end)
end)

describe("the collapse alarm", function()
  it("fires once, naming the layer and the step, when one expert takes over half the tokens", function()
    local seen = {}
    local hist, err = train(collapse_model({ aux = 0 }, 1), { on_step = function(info)
      for _, a in ipairs(info.alarms) do seen[#seen + 1] = { info.step, a } end
    end })
    assert.equal(1, #hist.alarms, err)
    local a = hist.alarms[1]
    assert.equal("max_share", a.kind)
    assert.equal(2, a.layer)
    assert.is_true(a.value > 0.5 and a.threshold == 0.5)
    assert.is_true(a.step >= 50 and a.step <= 150)   -- the first check once the 50-step window is full
    assert.is_true(contains(a.message, "layer 2", "step " .. a.step, "max_share"), a.message)
    -- the moment it fired, the window's mean share was over the threshold and the step's own load
    -- agrees with history.moe
    assert.is_true(hist.moe[1].share[a.step] > 0.5, tostring(hist.moe[1].share[a.step]))
    -- on stderr, once, and given to on_step at its step
    local _, lines = err:gsub("\n", "")
    assert.equal(1, lines, err)
    assert.is_true(contains(err, "warning", a.message), err)
    assert.equal(1, #seen)
    assert.equal(a.step, seen[1][1])
    assert.equal(a, seen[1][2])
  end)

  it("stays silent on the same model with the balance loss", function()
    local hist, err = train(collapse_model({ aux = 0.1 }, 1))
    assert.same({}, hist.alarms)
    assert.equal("", err)
  end)

  it("is silenced by alarms = false, by a kind's threshold = false, and kept off stderr by quiet", function()
    local hist, err = train(collapse_model({ aux = 0 }, 1), { alarms = false })
    assert.same({}, hist.alarms)
    assert.equal("", err)
    assert.is_number(hist.moe[1].share[150])   -- the indicators are still there
    hist, err = train(collapse_model({ aux = 0 }, 1), { alarms = { max_share = false } })
    assert.same({}, hist.alarms)
    assert.equal("", err)
    hist, err = train(collapse_model({ aux = 0 }, 1), { alarms = { quiet = true } })
    assert.equal(1, #hist.alarms)
    assert.equal("", err)
  end)

  it("takes thresholds and a window", function()
    -- a threshold the collapse does not reach: no alarm; a window of 1: judged from the first step
    local hist = train(collapse_model({ aux = 0 }, 1), { alarms = { max_share = 0.999, quiet = true } })
    assert.same({}, hist.alarms)
    hist = train(collapse_model({ aux = 0 }, 1), { alarms = { window = 1, quiet = true, min_entropy = 1 } })
    local kinds = {}
    for _, a in ipairs(hist.alarms) do kinds[a.kind] = a.step end
    assert.equal(1, kinds.min_entropy)   -- entropy / log E < 1 always: fires at the first step
    local first
    for step, share in ipairs(hist.moe[1].share) do
      if share > 0.5 then
        first = first or step
      end
    end
    assert.is_number(first)
    assert.equal(first, kinds.max_share)   -- window 1: the first step whose own load crossed
    -- capacity 0.5: each expert takes at most half its share of the slots, so at least half are dropped
    hist = train(collapse_model({ aux = 0, capacity = 0.5 }, 1), { steps = 2, alarms = { window = 1, quiet = true } })
    assert.equal(1, #hist.alarms)
    assert.equal("max_drop", hist.alarms[1].kind)
    assert.equal(1, hist.alarms[1].step)
    assert.is_true(hist.alarms[1].value >= 0.5)
    assert.equal(hist.moe[1].drop_rate[1], hist.alarms[1].value)
    assert.is_true(contains(hist.alarms[1].message, "dropped over capacity", "max_drop = 0.1"), hist.alarms[1].message)
  end)

  it("fires on dead experts once the model has trained 100 steps", function()
    -- a switch router that sees only the 3 token embeddings (no layer before it) can choose at most
    -- 3 of its 8 experts, and with lr = 0 always the same ones: at least 5 are dead from the first step
    local m = pf.model { vocab = 3, dim = 16, seed = 1, layers = { pf.moe { experts = 8, router = "switch", hidden = 16 } } }
    local hist = m:train { task = pf.tasks.copy { vocab = 3, seq = 8, seed = 1 }, steps = 100, batch = 2, lr = 0, log = false,
      alarms = { max_share = false, min_entropy = false, quiet = true } }
    assert.is_true(hist.moe[1].dead[99] >= 5)
    assert.equal(1, #hist.alarms)
    local a = hist.alarms[1]
    assert.equal("dead", a.kind)
    assert.equal(1, a.layer)
    assert.equal(100, a.step)
    assert.equal(hist.moe[1].dead[100], a.value)
    assert.is_true(contains(a.message, "layer 1", "step 100", a.value .. " of 8 experts"), a.message)
    -- a tolerance of that many dead experts: none
    m = pf.model { vocab = 3, dim = 16, seed = 1, layers = { pf.moe { experts = 8, router = "switch", hidden = 16 } } }
    hist = m:train { task = pf.tasks.copy { vocab = 3, seq = 8, seed = 1 }, steps = 100, batch = 2, lr = 0, log = false,
      alarms = { max_share = false, min_entropy = false, dead = 7, quiet = true } }
    assert.same({}, hist.alarms)
  end)

  it("rejects unknown alarms and thresholds out of range, naming them", function()
    local m = collapse_model({ aux = 0 }, 1)
    local msg = error_of(m.train, m, { task = task(), steps = 1, alarms = { share = 0.5 } })
    assert.truthy(contains(msg, "unknown alarm 'share'", "max_share"), msg)
    msg = error_of(m.train, m, { task = task(), steps = 1, alarms = { max_share = 2 } })
    assert.truthy(contains(msg, "'max_share'", "[0, 1]", "2"), msg)
    msg = error_of(m.train, m, { task = task(), steps = 1, alarms = "on" })
    assert.truthy(contains(msg, "'alarms'"), msg)
  end)
end)
