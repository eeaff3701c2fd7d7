-- Probes from Lua: for every layer kind, each probe that m.layers[i]:probes() lists has the shape
-- its documentation gives (the shape string of pf.layer_kinds(), e.g. "[d_inner, d_state]", read
-- with the sizes the layer's options imply), and the values that have a documented range keep to it
-- (decay in (0, 1), Δ > 0, retention's γ_h = 1 - 2^(-5-h), state_norm = ‖state‖ per head).
local pf = require "postformer"

local DIM, VOCAB = 16, 10
local TRAIN_STEPS, FORWARD_T, STEPPED = 2, 20, 5

-- For each kind: the layer's options and the sizes the documented shape names stand for, derived
-- from those options and DIM (not from the tensors). A kind missing here fails the spec below, so
-- a new layer kind must say what its probes look like.
local kinds = {
  mlp = { opts = {}, sizes = {} },
  attention = {
    opts = { heads = 2, tile = 8 },
    sizes = { heads = 2, kv_len = STEPPED, q_tiles = 3, k_tiles = 3 },   -- ceil(20 / 8) tiles
  },
  mamba = { opts = { state = 4, expand = 2 }, sizes = { d_inner = 2 * DIM, d_state = 4 } },
  s4d = { opts = { state = 4, expand = 2 }, sizes = { d_inner = 2 * DIM, d_state = 4 } },
  mamba2 = {
    opts = { state = 4, head_dim = 8, expand = 2, chunk = 8 },
    sizes = { heads = 2 * DIM // 8, head_dim = 8, d_state = 4 },
  },
  retention = {
    opts = { heads = 2 },
    sizes = { heads = 2, d_k = DIM // 2, d_v = 2 * DIM // 2 },       -- value_factor 2
  },
  linear_attention = { opts = { heads = 2 }, sizes = { heads = 2, d_k = DIM // 2, d_v = DIM // 2 } },
  gla = {
    opts = { heads = 2 },
    sizes = { heads = 2, d_k = DIM // 2 // 2, d_v = DIM // 2 },          -- expand_k 0.5, expand_v 1
  },
  moe = {
    opts = { experts = 4, top_k = 2 },
    sizes = { tokens = 1, experts = 4, k = 2, steps = TRAIN_STEPS },       -- tokens: the last step's one
  },
}

-- "[heads, d_k, d_v]" -> {2, 8, 16} with the sizes above; numbers stand for themselves
local function expected_shape(doc, sizes, what)
  local dims = {}
  local inside = doc:match("^%[(.*)%]$")
  assert(inside, what .. ": shape '" .. doc .. "' is not of the form [a, b, ...]")
  for name in inside:gmatch("[^,%s]+") do
    local n = math.tointeger(tonumber(name)) or sizes[name]
    assert(n, what .. ": no size for '" .. name .. "' in the documented shape " .. doc)
    dims[#dims + 1] = n
  end
  return dims
end

local function values(t)
  local flat = {}
  local function walk(v)
    if type(v) == "table" then
      for _, x in ipairs(v) do walk(x) end
    else
      flat[#flat + 1] = v
    end
  end
  walk(t:totable())
  return flat
end

-- a model of one layer of the kind, trained 2 steps, run forward over 20 tokens, reset and stepped
-- 5 tokens: every probe (step, forward and train) then has data
local function exercised(kind)
  local m = pf.model { vocab = VOCAB, dim = DIM, seed = 3, layers = { pf[kind](kinds[kind].opts) } }
  m:train { task = pf.tasks.copy { vocab = VOCAB, seq = 8, seed = 1 }, steps = TRAIN_STEPS, batch = 2, log = false }
  local seq = {}
  for i = 1, FORWARD_T do seq[i] = (i * 7) % VOCAB end
  m:forward(seq)
  m:reset()
  for i = 1, STEPPED do m:step(seq[i]) end
  return m, m.layers[1]
end

describe("probes", function()
  for _, info in ipairs(pf.layer_kinds()) do
    local kind = info.name
    describe(kind, function()
      it("is listed in this spec with its sizes", function()
        assert.is_table(kinds[kind], "add '" .. kind .. "' to tests/spec/probes_spec.lua")
      end)
      if not kinds[kind] then return end

      local m, layer
      setup(function() m, layer = exercised(kind) end)
      teardown(function() if m then m:close() end end)
      local docs = {}
      for _, p in ipairs(info.probes) do docs[p.name] = p.shape end

      it("lists the probes pf.layer_kinds() documents, with the same shapes", function()
        local listed = layer:probes()
        assert.equal(#info.probes, #listed)
        for i, p in ipairs(layer:probes(true)) do
          assert.equal(listed[i], p.name)
          assert.equal(docs[p.name], p.shape, kind .. "." .. p.name)
        end
      end)

      it("gives every probe the documented shape", function()
        for _, name in ipairs(layer:probes()) do
          local what = kind .. "." .. name
          local want = expected_shape(docs[name], kinds[kind].sizes, what)
          local t = layer:probe(name)
          assert.same(want, t:shape(), what .. " " .. docs[name])
          for _, v in ipairs(values(t)) do assert.is_true(v == v and math.abs(v) < math.huge, what .. " is finite") end
        end
      end)

      if docs.decay then
        it("has its decay in (0, 1)", function()
          local d = values(layer:probe("decay"))
          for i, v in ipairs(d) do assert.is_true(v > 0 and v < 1, ("decay[%d] = %g"):format(i, v)) end
          -- a decay that is 1 everywhere or 0 everywhere would pass the bounds and still be wrong
          assert.is_true(layer:probe("decay"):min() < layer:probe("decay"):max() or #d == 1)
        end)
      end

      if docs.dt then
        it("has Δ > 0 (a softplus or an exp)", function()
          for i, v in ipairs(values(layer:probe("dt"))) do assert.is_true(v > 0, ("dt[%d] = %g"):format(i, v)) end
        end)
      end

      if docs.gamma then
        it("has gamma_h = 1 - 2^(-5-h)", function()
          for h, v in ipairs(values(layer:probe("gamma"))) do
            assert.near(1 - 2 ^ (-5 - (h - 1)), v, 1e-6)
          end
        end)
      end

      if docs.state_norm and docs.state then
        it("has state_norm = the Frobenius norm of each head's state", function()
          local s, norms = layer:probe("state"), values(layer:probe("state_norm"))
          assert.equal(#s, #norms)
          for h = 1, #s do
            local want = s[h]:norm()
            assert.is_true(want > 0, kind .. ": the state of head " .. h .. " is zero after stepping")
            assert.near(want, norms[h], 1e-4 * want)
          end
        end)
      end

      if kind == "attention" then
        it("holds the stepped tokens in its cache, and each head's weights sum to 1", function()
          assert.equal(STEPPED, layer:probe("kv_len")[1])
          local w = layer:probe("weights")
          for h = 1, #w do
            local sum = 0
            for _, v in ipairs(w[h]:totable()) do sum = sum + v end
            assert.near(1, sum, 1e-5)
          end
        end)
      end

      if kind == "moe" then
        it("has router probabilities that sum to 1 over the experts", function()
          local g = layer:probe("gates")
          for t = 1, #g do
            local sum = 0
            for _, v in ipairs(g[t]:totable()) do sum = sum + v end
            assert.near(1, sum, 1e-5)
          end
        end)
      end
    end)
  end
end)
