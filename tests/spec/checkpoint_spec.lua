-- Checkpoints from Lua: m:save / pf.load round-trip exactly (weights, config, AdamW state), and
-- pf.load / pf.load_hf refuse bad input with a clear message.
local pf = require "postformer"

local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  return not ok and tostring(err) or nil
end

local tmp = os.tmpname()
os.remove(tmp)
os.execute("mkdir -p " .. tmp)
local function path(name) return tmp .. "/" .. name end
local function write(name, text)
  local f = assert(io.open(path(name), "wb"))
  f:write(text)
  f:close()
end

local function same_tensor(a, b)
  local x, y = a:totable(), b:totable()
  local function eq(p, q)
    if type(p) == "table" then
      for i = 1, #p do if not eq(p[i], q[i]) then return false end end
      return #p == #q
    end
    return p == q
  end
  return eq(x, y)
end

local function model(norm, tie)
  return pf.model { vocab = 24, dim = 16, seed = 5, norm = norm, tie = tie, norm_eps = 1e-6, layers = {
    pf.mamba { state = 4 }, pf.attention { heads = 2, rope_theta = 500 },
    pf.repeated { n = 2, shared = true, layers = { pf.mlp { hidden = 24 }, pf.moe { experts = 4, top_k = 2, hidden = 16 } } },
    pf.mamba2 { state = 8, head_dim = 8, chunk = 4 }, pf.retention { heads = 2 }, pf.s4d { state = 4 },
    pf.mamba { state = 4, dt_rank = 2, inner_norm = true, norm_eps = 1e-5 }, pf.attention { heads = 2, rope = false },
    pf.moe { experts = 4, top_k = 2, hidden = 16, renorm = false },
  } }
end

describe("m:save and pf.load", function()
  local task = pf.tasks.copy { vocab = 24, seq = 12 }
  for _, variant in ipairs { { "rms", false }, { "layer", true } } do
    it("rebuild the same model with bit-identical logits (" .. variant[1] .. " norm, tie = " .. tostring(variant[2]) .. ")", function()
      local m = model(variant[1], variant[2])
      m:train { task = task, steps = 3, batch = 4, log = false }
      m:save(path("m.safetensors"))
      local n = pf.load(path("m.safetensors"))
      assert.equal(m:params(), n:params())
      assert.equal(#m.layers, #n.layers)
      assert.equal(m.norm, n.norm)
      assert.equal(m.tie, n.tie)
      assert.equal(m.norm_eps, n.norm_eps)
      for i = 1, #m.layers do
        assert.equal(m.layers[i].kind, n.layers[i].kind)
        assert.same(m.layers[i]:options(), n.layers[i]:options())
        assert.same(m.layers[i]:info().shares, n.layers[i]:info().shares)
      end
      local seq = { 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9 }
      assert.is_true(same_tensor(m:forward(seq), n:forward(seq)))
      m:reset(); n:reset()
      for _, t in ipairs(seq) do assert.is_true(same_tensor(m:step(t), n:step(t))) end
      assert.equal(0, n:steps_taken())       -- saved without the optimizer
    end)
  end

  it("resumes training exactly with {optimizer = true}", function()
    local m = model("rms", false)
    m:train { task = task, steps = 4, batch = 4, log = false, seed = 1 }
    m:save(path("opt.safetensors"), { optimizer = true })
    local n = pf.load(path("opt.safetensors"))
    assert.equal(4, n:steps_taken())
    local hm = m:train { task = task, steps = 2, batch = 4, log = false, seed = 9 }
    local hn = n:train { task = task, steps = 2, batch = 4, log = false, seed = 9 }
    assert.same(hm.loss, hn.loss)
    local seq = { 3, 1, 4, 1, 5 }
    assert.is_true(same_tensor(m:forward(seq), n:forward(seq)))
    -- asked for but absent
    m:save(path("noopt.safetensors"))
    assert.truthy(error_of(pf.load, path("noopt.safetensors"), { optimizer = true }):find("optimizer.steps", 1, true))
  end)

  it("refuses files without a postformer config and bad options, with the reason", function()
    local hf = error_of(pf.load, "tests/fixtures/hf/llama/model.safetensors")
    assert.truthy(hf:find("has no postformer model in its metadata", 1, true))
    assert.truthy(error_of(pf.load, path("absent.safetensors")):find("cannot open", 1, true))
    assert.truthy(error_of(pf.load, path("m.safetensors"), { bogus = 1 }):find("unknown option 'bogus'", 1, true))
    write("junk.safetensors", "\8\0\0\0\0\0\0\0{\"a\":1} ")
    assert.truthy(error_of(pf.load, path("junk.safetensors")):find("tensor 'a': its entry must be an object", 1, true))
  end)
end)

describe("pf.load_hf", function()
  teardown(function() os.execute("rm -rf '" .. tmp .. "'") end)
  local function hf_dir(name, config, index)
    os.execute("mkdir -p " .. path(name))
    write(name .. "/config.json", config)
    if index then write(name .. "/model.safetensors.index.json", index) end
    return path(name)
  end
  local llama_config = io.open("tests/fixtures/hf/llama/config.json"):read("a")

  it("refuses shard names that leave the directory", function()
    for _, shard in ipairs { "../outside.safetensors", "/etc/passwd", "a/../../b.safetensors", "sub\\x" } do
      local dir = hf_dir("shards", llama_config,
        '{"weight_map": {"model.embed_tokens.weight": ' .. string.format("%q", shard):gsub("\\\\", "\\\\\\\\") .. '}}')
      local err = error_of(pf.load_hf, dir)
      assert.truthy(err, shard)
      assert.truthy(err:find("which leaves the directory", 1, true) or err:find("not a relative file name", 1, true), err)
    end
  end)

  it("names unknown and unsupported architectures", function()
    local err = error_of(pf.load_hf, hf_dir("gpt2", '{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}'))
    assert.truthy(err:find("architecture GPT2LMHeadModel", 1, true))
    assert.truthy(err:find("supported: JambaForCausalLM, LlamaForCausalLM", 1, true), err)
    -- Jamba variants postformer's layers do not have, each named
    local jamba_config = io.open("tests/fixtures/hf/jamba/config.json"):read("a")
    for i, case in ipairs {
      { '"mamba_proj_bias": false', '"mamba_proj_bias": true', "in_proj/out_proj biases (mamba_proj_bias)" },
      { '"mamba_conv_bias": true', '"mamba_conv_bias": false', "a conv1d without bias (mamba_conv_bias = false)" },
      { '"hidden_act": "silu"', '"hidden_act": "gelu"', "hidden_act gelu is not supported" },
      { '"attn_layer_offset": 2', '"attn_layer_offset": 4', "attn_layer_offset (4) must be an integer in [0, attn_layer_period (4))" },
      { '"max_position_embeddings"', '"sliding_window": 64, "max_position_embeddings"', "sliding_window is not supported" },
    } do
      local text, n = jamba_config:gsub(case[1]:gsub("%p", "%%%0"), (case[2]:gsub("%%", "%%%%")))
      assert.equal(1, n, case[1])
      err = error_of(pf.load_hf, hf_dir("jamba_" .. i, text))
      assert.truthy(err and err:find("JambaForCausalLM: " .. case[3], 1, true), err)
    end
    assert.truthy(error_of(pf.load_hf, path("nowhere")):find("config.json", 1, true))
    assert.truthy(error_of(pf.load_hf, hf_dir("noweights", llama_config)):find("neither model.safetensors", 1, true))
  end)

  it("lists the tensors a checkpoint is missing", function()
    local dir = hf_dir("missing", llama_config)
    local m = pf.model { vocab = 128, dim = 32, layers = { pf.mlp {} } }
    m:save(dir .. "/model.safetensors")
    local err = error_of(pf.load_hf, dir)
    assert.truthy(err:find("tensors missing from the checkpoint: model.embed_tokens.weight, model.layers.0.input_layernorm", 1, true), err)
    assert.truthy(err:find("and %d+ more"))
  end)

  it("lists tensors it has no place for", function()
    -- a Mamba config over Llama weights: everything is missing; a Llama config with fewer layers: extras
    local dir = hf_dir("extra", (llama_config:gsub('"num_hidden_layers": 2', '"num_hidden_layers": 1')))
    os.execute("cp tests/fixtures/hf/llama/model.safetensors " .. dir .. "/")
    local err = error_of(pf.load_hf, dir)
    assert.truthy(err:find("have no place in the LlamaForCausalLM mapping: model.layers.1.", 1, true), err)
  end)
end)

