-- pf.load_hf against the transformers library: tiny randomly initialised Llama, Mixtral (sharded),
-- Mamba, Mamba-2 and Jamba models and their logits, greedy continuations and router logits, made by
-- tests/ref/make_hf_fixtures.py (transformers 5.17, torch 2.11, float32, on the CPU) into
-- tests/fixtures/hf/<arch>/. Logits must match to a max relative difference of 1e-4, forward and
-- stepped token by token, and the greedy continuation must be the same. A fixture that is missing
-- is an error (dofile), never a skip.
local pf = require "postformer"

-- max |a - b| over max |b|
local function max_rel_diff(a, b)
  local diff, scale = 0, 0
  for i = 1, #b do
    diff = math.max(diff, math.abs(a[i] - b[i]))
    scale = math.max(scale, math.abs(b[i]))
  end
  return diff / math.max(scale, 1e-30)
end

local function log_softmax(v)
  local mx = -math.huge
  for _, x in ipairs(v) do mx = math.max(mx, x) end
  local s = 0
  for _, x in ipairs(v) do s = s + math.exp(x - mx) end
  local out = {}
  for i, x in ipairs(v) do out[i] = x - mx - math.log(s) end
  return out
end

for _, case in ipairs {
  { "llama", "LlamaForCausalLM", 4 }, { "mixtral", "MixtralForCausalLM", 4 },
  { "mamba", "MambaForCausalLM", 2 }, { "mamba2", "Mamba2ForCausalLM", 2 },
  -- 4 decoder layers, two blocks each: mamba mlp | mamba moe | attention mlp | mamba moe
  { "jamba", "JambaForCausalLM", 8, { "mamba", "mlp", "mamba", "moe", "attention", "mlp", "mamba", "moe" } },
} do
  local name, arch, blocks, kinds = case[1], case[2], case[3], case[4]
  local dir = "tests/fixtures/hf/" .. name
  describe("pf.load_hf " .. name, function()
    local expected = dofile(dir .. "/expected.lua")
    local m = pf.load_hf(dir)

    it("builds the model the config describes", function()
      assert.equal(arch, expected.arch)
      assert.equal(arch, m.arch)
      assert.equal(blocks, #m.layers)
      assert.equal(128, m.vocab)
      assert.equal(32, m.dim)
      if kinds then
        local got = {}
        for i, l in ipairs(m.layers) do got[i] = l.kind end
        assert.same(kinds, got)
      end
    end)

    it("gives the transformers logits for a forward (max rel diff <= 1e-4)", function()
      local logits = m:forward(expected.tokens)
      local worst = 0
      for t = 1, #expected.tokens do worst = math.max(worst, max_rel_diff(logits[t]:totable(), expected.logits[t])) end
      print(string.format("# %s forward: max rel diff %.3g over %d tokens", name, worst, #expected.tokens))
      assert.is_true(worst <= 1e-4)
    end)

    it("gives the transformers logits stepping token by token", function()
      m:reset()
      local worst = 0
      for t, tok in ipairs(expected.tokens) do
        worst = math.max(worst, max_rel_diff(m:step(tok):totable(), expected.logits[t]))
      end
      print(string.format("# %s step: max rel diff %.3g over %d tokens", name, worst, #expected.tokens))
      assert.is_true(worst <= 1e-4)
    end)

    it("continues the prompt greedily as transformers does", function()
      local out = m:generate(expected.prompt, #expected.greedy)
      assert.same(expected.greedy, out)
    end)

    if expected.router_logits then
      it("routes as transformers does (router log-probabilities per layer)", function()
        m:forward(expected.tokens)
        local worst, layer = 0, 0
        for i, l in ipairs(m.layers) do
          if l.kind == "moe" then
            layer = layer + 1
            local gates = l:probe("gates")
            for t = 1, #expected.tokens do
              local ours = gates[t]:totable()
              for e = 1, #ours do ours[e] = math.log(ours[e]) end
              worst = math.max(worst, max_rel_diff(ours, log_softmax(expected.router_logits[layer][t])))
            end
          end
        end
        print(string.format("# %s router: max rel diff %.3g over %d layers", name, worst, layer))
        assert.equal(#expected.router_logits, layer)
        assert.is_true(worst <= 1e-4)
      end)
    end
  end)
end
