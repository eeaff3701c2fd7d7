-- Checkpoints and Hugging Face models, the Lua half (the C half is scripts/lua_checkpoint.c):
-- m:save(path, {optimizer}), pf.load(path, {device, optimizer}), pf.load_hf(dir, {device}).
--
-- A postformer checkpoint is a safetensors file (engine/safetensors.h) with the parameters under
-- the names of pf_model_named_params (engine/model.h):
--   embed.weight, layers.{i}.norm.weight (.bias), layers.{i}.mixer.<the layer's own names>,
--   norm.weight (.bias), head.weight (absent when tied)        i: the 0-based block index
-- A block that shares another's weights (pf.repeated{shared = true}) is saved once, under the block
-- it shares. __metadata__ holds format = "postformer", postformer.version, and postformer.model:
-- JSON {vocab, dim, seed, norm, norm_eps, tie, blocks = {{kind, options, shares}}} where options
-- are the options given to the layer (not the defaults, so that a default changing later still
-- rebuilds what was given) and shares is 0 or the 1-based block whose weights it uses. With
-- {optimizer = true} the AdamW moments (optimizer.m.<name>, optimizer.v.<name>) and the step count
-- (optimizer.steps) are saved too, so training resumes where it stopped.

local pf, C = ...
local Model = C.model
local fmt = string.format

local function ccall(level, f, ...)
  local res = table.pack(pcall(f, ...))
  if not res[1] then
    local msg = res[2]
    if type(msg) == "string" then msg = msg:gsub("^[%w_]+%.lua:%d+: ", "") end
    error(msg, level + 1)
  end
  return table.unpack(res, 2, res.n)
end

local function check_opts(opts, what, valid, level)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(what .. ": options must be a table", level + 1) end
  local ok = {}
  for _, k in ipairs(valid) do ok[k] = true end
  for k in pairs(opts) do
    if not ok[k] then
      error(fmt("%s: unknown option '%s' (valid: %s)", what, tostring(k), table.concat(valid, ", ")), level + 1)
    end
  end
  return opts
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function read_file(path, what)
  local f, err = io.open(path, "rb")
  if not f then error(fmt("%s: cannot read %s", what, err), 0) end
  local s = f:read("a")
  f:close()
  return s
end

-- ---- m:save and pf.load ------------------------------------------------------------------------

local function model_config(m)
  local blocks = {}
  for i, spec in ipairs(m._specs) do
    blocks[i] = { kind = spec.kind, options = spec:given(), shares = m._shares[i] }
  end
  return { vocab = m.vocab, dim = m.dim, seed = m.seed, norm = m.norm, norm_eps = m.norm_eps, tie = m.tie,
           blocks = blocks }
end

-- m:save(path, {optimizer = false}): the weights and the model's config (and the AdamW state)
function Model.save(m, path, opts)
  local what = "m:save"
  if type(path) ~= "string" then error(what .. ": expected a file path", 2) end
  opts = check_opts(opts, what, { "optimizer" }, 2)
  local meta = {
    format = "postformer",
    ["postformer.version"] = pf.version,
    ["postformer.model"] = C.json_encode(model_config(m)),
  }
  ccall(2, Model._save, m, path, meta, opts.optimizer == true)
  return m
end

local function identity_sources(m, file)
  local src = {}
  for i, p in ipairs(m:_param_names()) do src[i] = { p.name, file, p.name } end
  return src
end

-- pf.load(path, {device, optimizer}): the model saved by m:save, rebuilt from its config; optimizer:
-- true (the state must be there), false (not loaded), nil (loaded when the file has it)
function pf.load(path, opts)
  local what = "pf.load"
  if type(path) ~= "string" then error(what .. ": expected a file path", 2) end
  opts = check_opts(opts, what, { "device", "optimizer" }, 2)
  local file <close> = ccall(2, C.st_open, path)
  local meta = file:meta()
  local text = meta["postformer.model"]
  if not text then
    error(fmt("%s: %s has no postformer model in its metadata (a Hugging Face checkpoint? pf.load_hf(dir) "
      .. "reads those)", what, path), 2)
  end
  local cfg = ccall(2, C.json_decode, text, path .. ": postformer.model")
  if type(cfg) ~= "table" or type(cfg.blocks) ~= "table" or #cfg.blocks == 0 then
    error(fmt("%s: %s: postformer.model has no blocks", what, path), 2)
  end
  local specs, shares = {}, {}
  for i, b in ipairs(cfg.blocks) do
    local make = type(b) == "table" and type(b.kind) == "string" and pf[b.kind]
    local known = false
    for _, k in ipairs(pf.layer_kinds()) do known = known or k.name == b.kind end
    if not (make and known) then
      error(fmt("%s: %s: block %d has unknown kind %s", what, path, i, tostring(type(b) == "table" and b.kind)), 2)
    end
    specs[i] = ccall(2, make, b.options or {})
    shares[i] = math.tointeger(b.shares) or 0
  end
  local mopts = { vocab = cfg.vocab, dim = cfg.dim, seed = cfg.seed, norm = cfg.norm, norm_eps = cfg.norm_eps,
                  tie = cfg.tie, device = opts.device or pf.default_device }
  local m = ccall(2, C.model_new, mopts, specs, shares)
  local optimizer = opts.optimizer
  if optimizer == nil then optimizer = meta["optimizer.steps"] ~= nil end
  ccall(2, Model._load, m, identity_sources(m, file), optimizer)
  return m
end

-- ---- Hugging Face models ---------------------------------------------------------------------

-- A shard's file name from model.safetensors.index.json must stay inside the directory: relative,
-- no ".." component, no backslash or NUL. (Symbolic links are followed: the hub's cache links
-- snapshot files to its blob store.)
local function shard_path(dir, name)
  if type(name) ~= "string" or name == "" or name:sub(1, 1) == "/" or name:find("\\", 1, true)
      or name:find("\0", 1, true) then
    error(fmt("pf.load_hf: %s/model.safetensors.index.json names the shard %q, which is not a relative "
      .. "file name inside the directory", dir, tostring(name)), 0)
  end
  for part in name:gmatch("[^/]+") do
    if part == ".." then
      error(fmt("pf.load_hf: %s/model.safetensors.index.json names the shard %q, which leaves the directory "
        .. "(..)", dir, name), 0)
    end
  end
  return dir .. "/" .. name
end

-- the files of a checkpoint directory: {name -> file} for every tensor, and the open files
local function open_weights(dir)
  local index_path = dir .. "/model.safetensors.index.json"
  local by_tensor, files = {}, {}
  if file_exists(index_path) then
    local index = C.json_decode(read_file(index_path, "pf.load_hf"), index_path)
    if type(index) ~= "table" or type(index.weight_map) ~= "table" then
      error("pf.load_hf: " .. index_path .. " has no weight_map", 0)
    end
    local open = {}
    local names = {}
    for tensor in pairs(index.weight_map) do names[#names + 1] = tensor end
    table.sort(names)
    for _, tensor in ipairs(names) do
      local shard = index.weight_map[tensor]
      local path = shard_path(dir, shard)
      if not open[path] then
        open[path] = C.st_open(path)
        files[#files + 1] = open[path]
      end
      by_tensor[tensor] = open[path]
    end
  elseif file_exists(dir .. "/model.safetensors") then
    local f = C.st_open(dir .. "/model.safetensors")
    files[1] = f
    for _, name in ipairs(f:names()) do by_tensor[name] = f end
  else
    error(fmt("pf.load_hf: %s has neither model.safetensors nor model.safetensors.index.json "
      .. "(only safetensors checkpoints are read; pytorch_model.bin is not)", dir), 0)
  end
  return by_tensor, files
end

local function need(cfg, key, what)
  local v = cfg[key]
  if v == nil then error(fmt("pf.load_hf: %s: config.json has no %s", what, key), 0) end
  return v
end

local function rope_theta(cfg, arch)
  local rp = cfg.rope_parameters or cfg.rope_scaling
  if type(rp) == "table" and rp.rope_type and rp.rope_type ~= "default" or type(rp) == "table" and rp.type
      and rp.type ~= "default" then
    error(fmt("pf.load_hf: %s: rope scaling %s is not supported (plain RoPE only)", arch,
      tostring(rp.rope_type or rp.type)), 0)
  end
  return (type(cfg.rope_parameters) == "table" and cfg.rope_parameters.rope_theta) or cfg.rope_theta or 10000
end

-- Llama and Mixtral: each decoder layer is two postformer blocks, attention then mlp (or moe), each
-- pre-norm residual: x + attn(input_layernorm(x)), then x + mlp(post_attention_layernorm(x)).
local function transformer(cfg, arch, moe)
  local C_, H = need(cfg, "hidden_size", arch), need(cfg, "num_attention_heads", arch)
  local kv = cfg.num_key_value_heads or H
  if cfg.head_dim and cfg.head_dim ~= C_ // H then
    error(fmt("pf.load_hf: %s: head_dim %d differs from hidden_size / num_attention_heads = %d (not supported)",
      arch, cfg.head_dim, C_ // H), 0)
  end
  if cfg.attention_bias or cfg.mlp_bias then
    error(fmt("pf.load_hf: %s: attention or MLP biases are not supported", arch), 0)
  end
  if (cfg.hidden_act or "silu") ~= "silu" then
    error(fmt("pf.load_hf: %s: hidden_act %s is not supported (silu)", arch, tostring(cfg.hidden_act)), 0)
  end
  if cfg.sliding_window and cfg.sliding_window ~= C.json_null then
    error(fmt("pf.load_hf: %s: sliding_window is not supported yet", arch), 0)
  end
  local theta = rope_theta(cfg, arch)
  local layers, map = {}, {}
  local n = need(cfg, "num_hidden_layers", arch)
  for i = 0, n - 1 do
    local a, f = 2 * i, 2 * i + 1
    local hp = "model.layers." .. i .. "."
    layers[#layers + 1] = pf.attention { heads = H, kv_heads = kv, rope = true, rope_theta = theta }
    map["layers." .. a .. ".norm.weight"] = hp .. "input_layernorm.weight"
    for _, p in ipairs { "q_proj", "k_proj", "v_proj", "o_proj" } do
      map["layers." .. a .. ".mixer." .. p .. ".weight"] = hp .. "self_attn." .. p .. ".weight"
    end
    map["layers." .. f .. ".norm.weight"] = hp .. "post_attention_layernorm.weight"
    if moe then
      local E = need(cfg, "num_local_experts", arch)
      layers[#layers + 1] = pf.moe { experts = E, top_k = need(cfg, "num_experts_per_tok", arch),
        hidden = need(cfg, "intermediate_size", arch), act = "swiglu", router = "topk",
        aux = cfg.router_aux_loss_coef or 0, zloss = 0, jitter = cfg.router_jitter_noise or 0 }
      map["layers." .. f .. ".mixer.gate.weight"] = hp .. "block_sparse_moe.gate.weight"
      for e = 0, E - 1 do
        for _, w in ipairs { "w1", "w2", "w3" } do
          map["layers." .. f .. ".mixer.experts." .. e .. "." .. w .. ".weight"] =
            hp .. "block_sparse_moe.experts." .. e .. "." .. w .. ".weight"
        end
      end
    else
      layers[#layers + 1] = pf.mlp { hidden = need(cfg, "intermediate_size", arch), act = "swiglu" }
      for _, p in ipairs { "gate_proj", "up_proj", "down_proj" } do
        map["layers." .. f .. ".mixer." .. p .. ".weight"] = hp .. "mlp." .. p .. ".weight"
      end
    end
  end
  map["embed.weight"] = "model.embed_tokens.weight"
  map["norm.weight"] = "model.norm.weight"
  map["head.weight"] = "lm_head.weight"
  return { layers = layers, map = map, norm_eps = cfg.rms_norm_eps or 1e-6,
           tie = cfg.tie_word_embeddings == true }
end

local function check_mamba_common(cfg, arch)
  if cfg.use_bias then error(fmt("pf.load_hf: %s: in_proj/out_proj biases (use_bias) are not supported", arch), 0) end
  if cfg.use_conv_bias == false then
    error(fmt("pf.load_hf: %s: a conv1d without bias (use_conv_bias = false) is not supported", arch), 0)
  end
  if (cfg.hidden_act or "silu") ~= "silu" then
    error(fmt("pf.load_hf: %s: hidden_act %s is not supported (silu)", arch, tostring(cfg.hidden_act)), 0)
  end
end

-- Mamba (HF MambaForCausalLM): x + mixer(norm(x)) per layer, norm_f, lm_head tied by default.
local function mamba(cfg, arch)
  check_mamba_common(cfg, arch)
  local C_ = need(cfg, "hidden_size", arch)
  local expand = cfg.expand or 2
  if cfg.intermediate_size and cfg.intermediate_size ~= expand * C_ then
    error(fmt("pf.load_hf: %s: intermediate_size %d is not expand * hidden_size", arch, cfg.intermediate_size), 0)
  end
  local R = cfg.time_step_rank
  if R == nil or R == "auto" then R = (C_ + 15) // 16 end
  local layers, map = {}, {}
  for i = 0, need(cfg, "num_hidden_layers", arch) - 1 do
    layers[#layers + 1] = pf.mamba { state = cfg.state_size or 16, expand = expand, conv = cfg.conv_kernel or 4,
      dt_rank = R }
    local hp = "backbone.layers." .. i .. "."
    map["layers." .. i .. ".norm.weight"] = hp .. "norm.weight"
    for _, p in ipairs { "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
      "dt_proj.bias", "A_log", "D", "out_proj.weight" } do
      map["layers." .. i .. ".mixer." .. p] = hp .. "mixer." .. p
    end
  end
  map["embed.weight"] = "backbone.embeddings.weight"
  map["norm.weight"] = "backbone.norm_f.weight"
  map["head.weight"] = "lm_head.weight"
  return { layers = layers, map = map, norm_eps = cfg.layer_norm_epsilon or 1e-5,
           tie = cfg.tie_word_embeddings ~= false }
end

-- Mamba-2 (HF Mamba2ForCausalLM), one group, gated RMSNorm after the gate, no dt clamp.
local function mamba2(cfg, arch)
  check_mamba_common(cfg, arch)
  local C_ = need(cfg, "hidden_size", arch)
  local expand, P = cfg.expand or 2, need(cfg, "head_dim", arch)
  if (cfg.n_groups or 1) ~= 1 then
    error(fmt("pf.load_hf: %s: n_groups = %d is not supported (postformer's mamba2 has one group)", arch,
      cfg.n_groups), 0)
  end
  if cfg.num_heads and cfg.num_heads * P ~= expand * C_ then
    error(fmt("pf.load_hf: %s: num_heads * head_dim = %d differs from expand * hidden_size = %d", arch,
      cfg.num_heads * P, expand * C_), 0)
  end
  if cfg.norm_before_gate or cfg.rms_norm == false then
    error(fmt("pf.load_hf: %s: only the gated RMSNorm after the gate (rms_norm, not norm_before_gate)", arch), 0)
  end
  local lim = cfg.time_step_limit
  if type(lim) == "table" and ((lim[1] or 0) ~= 0 or type(lim[2]) == "number" and lim[2] < math.huge) then
    error(fmt("pf.load_hf: %s: a time_step_limit clamp is not supported", arch), 0)
  end
  if cfg.layer_norm_epsilon and math.abs(cfg.layer_norm_epsilon - 1e-5) > 1e-12 then
    error(fmt("pf.load_hf: %s: layer_norm_epsilon %g: postformer's mamba2 gated norm uses 1e-5", arch,
      cfg.layer_norm_epsilon), 0)
  end
  local layers, map = {}, {}
  for i = 0, need(cfg, "num_hidden_layers", arch) - 1 do
    layers[#layers + 1] = pf.mamba2 { state = cfg.state_size or 128, head_dim = P, expand = expand,
      conv = cfg.conv_kernel or 4, chunk = math.min(cfg.chunk_size or 64, 4096) }
    local hp = "backbone.layers." .. i .. "."
    map["layers." .. i .. ".norm.weight"] = hp .. "norm.weight"
    for _, p in ipairs { "in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D", "norm.weight",
      "out_proj.weight" } do
      map["layers." .. i .. ".mixer." .. p] = hp .. "mixer." .. p
    end
  end
  map["embed.weight"] = "backbone.embeddings.weight"
  map["norm.weight"] = "backbone.norm_f.weight"
  map["head.weight"] = "lm_head.weight"
  return { layers = layers, map = map, norm_eps = cfg.layer_norm_epsilon or 1e-5,
           tie = cfg.tie_word_embeddings == true }
end

-- Jamba (HF JambaForCausalLM): decoder layer i is attention when i % attn_layer_period ==
-- attn_layer_offset, else Mamba; its feed-forward is a mixture of experts when i % expert_layer_period
-- == expert_layer_offset (and num_experts > 1), else an MLP. Each decoder layer is two postformer
-- blocks, x + mixer(input_layernorm(x)), then x + ffn(pre_ff_layernorm(x)). Its attention has no
-- positional embedding (rope = false); its Mamba normalises dt_low, B and C (inner_norm, eps =
-- rms_norm_eps); its router is softmax then top-k without renormalising (renorm = false). Defaults
-- are JambaConfig's, for keys a config.json leaves out.
local function jamba(cfg, arch)
  local C_, H = need(cfg, "hidden_size", arch), need(cfg, "num_attention_heads", arch)
  local kv = cfg.num_key_value_heads or 8
  local function opt(key, default)
    local v = cfg[key]
    if v == nil or v == C.json_null then return default end
    return v
  end
  if cfg.head_dim and cfg.head_dim ~= C_ // H then
    error(fmt("pf.load_hf: %s: head_dim %d differs from hidden_size / num_attention_heads = %d (not supported)",
      arch, cfg.head_dim, C_ // H), 0)
  end
  if opt("hidden_act", "silu") ~= "silu" then
    error(fmt("pf.load_hf: %s: hidden_act %s is not supported (silu)", arch, tostring(cfg.hidden_act)), 0)
  end
  if opt("sliding_window", nil) ~= nil then
    error(fmt("pf.load_hf: %s: sliding_window is not supported yet", arch), 0)
  end
  if opt("mamba_proj_bias", false) then
    error(fmt("pf.load_hf: %s: in_proj/out_proj biases (mamba_proj_bias) are not supported", arch), 0)
  end
  if opt("mamba_conv_bias", true) == false then
    error(fmt("pf.load_hf: %s: a conv1d without bias (mamba_conv_bias = false) is not supported", arch), 0)
  end
  local attn_period, attn_offset = opt("attn_layer_period", 8), opt("attn_layer_offset", 4)
  local expert_period, expert_offset = opt("expert_layer_period", 2), opt("expert_layer_offset", 1)
  for _, po in ipairs { { "attn", attn_period, attn_offset }, { "expert", expert_period, expert_offset } } do
    if math.type(po[2]) ~= "integer" or math.type(po[3]) ~= "integer" or po[2] < 1 or po[3] < 0 or po[3] >= po[2] then
      error(fmt("pf.load_hf: %s: %s_layer_offset (%s) must be an integer in [0, %s_layer_period (%s))", arch, po[1],
        tostring(po[3]), po[1], tostring(po[2])), 0)
    end
  end
  local R = opt("mamba_dt_rank", "auto")
  if R == "auto" then R = (C_ + 15) // 16 end
  local eps = opt("rms_norm_eps", 1e-6)
  local E, F = opt("num_experts", 16), need(cfg, "intermediate_size", arch)
  local layers, map = {}, {}
  for i = 0, need(cfg, "num_hidden_layers", arch) - 1 do
    local a, f = 2 * i, 2 * i + 1
    local hp = "model.layers." .. i .. "."
    local ap, fp = "layers." .. a .. ".", "layers." .. f .. "."
    map[ap .. "norm.weight"] = hp .. "input_layernorm.weight"
    if i % attn_period == attn_offset then
      layers[#layers + 1] = pf.attention { heads = H, kv_heads = kv, rope = false }
      for _, p in ipairs { "q_proj", "k_proj", "v_proj", "o_proj" } do
        map[ap .. "mixer." .. p .. ".weight"] = hp .. "self_attn." .. p .. ".weight"
      end
    else
      layers[#layers + 1] = pf.mamba { state = opt("mamba_d_state", 16), expand = opt("mamba_expand", 2),
        conv = opt("mamba_d_conv", 4), dt_rank = R, inner_norm = true, norm_eps = eps }
      for _, p in ipairs { "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_layernorm.weight",
        "b_layernorm.weight", "c_layernorm.weight", "dt_proj.weight", "dt_proj.bias", "A_log", "D",
        "out_proj.weight" } do
        map[ap .. "mixer." .. p] = hp .. "mamba." .. p
      end
    end
    map[fp .. "norm.weight"] = hp .. "pre_ff_layernorm.weight"
    if E > 1 and i % expert_period == expert_offset then
      layers[#layers + 1] = pf.moe { experts = E, top_k = opt("num_experts_per_tok", 2), hidden = F, act = "swiglu",
        router = "topk", renorm = false, aux = opt("router_aux_loss_coef", 0.001), zloss = 0, jitter = 0 }
      map[fp .. "mixer.gate.weight"] = hp .. "feed_forward.router.weight"
      for e = 0, E - 1 do
        for ours, theirs in pairs { w1 = "gate_proj", w3 = "up_proj", w2 = "down_proj" } do
          map[fp .. "mixer.experts." .. e .. "." .. ours .. ".weight"] =
            hp .. "feed_forward.experts." .. e .. "." .. theirs .. ".weight"
        end
      end
    else
      layers[#layers + 1] = pf.mlp { hidden = F, act = "swiglu" }
      for _, p in ipairs { "gate_proj", "up_proj", "down_proj" } do
        map[fp .. "mixer." .. p .. ".weight"] = hp .. "feed_forward." .. p .. ".weight"
      end
    end
  end
  map["embed.weight"] = "model.embed_tokens.weight"
  map["norm.weight"] = "model.final_layernorm.weight"
  map["head.weight"] = "lm_head.weight"
  return { layers = layers, map = map, norm_eps = eps, tie = cfg.tie_word_embeddings == true }
end

local ARCHS = {
  LlamaForCausalLM = function(cfg, arch) return transformer(cfg, arch, false) end,
  MixtralForCausalLM = function(cfg, arch) return transformer(cfg, arch, true) end,
  MambaForCausalLM = mamba,
  Mamba2ForCausalLM = mamba2,
  JambaForCausalLM = jamba,
}
local MODEL_TYPES = { llama = "LlamaForCausalLM", mixtral = "MixtralForCausalLM", mamba = "MambaForCausalLM",
                      mamba2 = "Mamba2ForCausalLM", jamba = "JambaForCausalLM" }

-- pf.load_hf(dir, {device}): a Hugging Face checkpoint directory (config.json, model.safetensors or
-- shards) as a postformer model; with tokenizer.json there, m.tokenizer (or m.tokenizer_error)
function pf.load_hf(dir, opts)
  local what = "pf.load_hf"
  if type(dir) ~= "string" then error(what .. ": expected a directory path", 2) end
  opts = check_opts(opts, what, { "device" }, 2)
  dir = dir:gsub("/+$", "")
  if dir == "" then dir = "/" end
  local cfg = ccall(2, function()
    return C.json_decode(read_file(dir .. "/config.json", what), dir .. "/config.json")
  end)
  if type(cfg) ~= "table" then error(what .. ": " .. dir .. "/config.json is not a JSON object", 2) end
  local arch = type(cfg.architectures) == "table" and cfg.architectures[1] or MODEL_TYPES[cfg.model_type]
  local build = ARCHS[arch]
  if not build then
    local known = {}
    for k in pairs(ARCHS) do known[#known + 1] = k end
    table.sort(known)
    error(fmt("%s: %s: architecture %s (model_type %s) is not supported (supported: %s)", what, dir,
      tostring(arch), tostring(cfg.model_type), table.concat(known, ", ")), 2)
  end
  local plan = ccall(2, build, cfg, arch)
  local by_tensor, files = ccall(2, open_weights, dir)
  local specs, shares = {}, {}
  for i, l in ipairs(plan.layers) do specs[i], shares[i] = l, 0 end
  local m = ccall(2, C.model_new, {
    vocab = need(cfg, "vocab_size", arch), dim = need(cfg, "hidden_size", arch), seed = 0, norm = "rms",
    norm_eps = plan.norm_eps, tie = plan.tie, device = opts.device or pf.default_device }, specs, shares)

  -- every parameter from its tensor; every tensor used (one left over means a layout we do not know)
  local sources, used, missing = {}, {}, {}
  for _, p in ipairs(m:_param_names()) do
    local theirs = plan.map[p.name]
    local file = theirs and by_tensor[theirs]
    if file then
      sources[#sources + 1] = { p.name, file, theirs }
      used[theirs] = true
    else
      missing[#missing + 1] = theirs or ("(no mapping for " .. p.name .. ")")
    end
  end
  if #missing > 0 then
    local shown = table.move(missing, 1, math.min(#missing, 12), 1, {})
    error(fmt("%s: %s: %d tensors missing from the checkpoint: %s%s", what, dir, #missing,
      table.concat(shown, ", "), #missing > 12 and fmt(", and %d more", #missing - 12) or ""), 2)
  end
  local unused = {}
  for name in pairs(by_tensor) do
    if not used[name] and not name:match("rotary_emb%.inv_freq$") and not (plan.tie and name == "lm_head.weight") then
      unused[#unused + 1] = name
    end
  end
  table.sort(unused)
  if #unused > 0 then
    local shown = table.move(unused, 1, math.min(#unused, 12), 1, {})
    error(fmt("%s: %s: %d tensors in the checkpoint have no place in the %s mapping: %s%s", what, dir, #unused,
      arch, table.concat(shown, ", "), #unused > 12 and fmt(", and %d more", #unused - 12) or ""), 2)
  end
  ccall(2, Model._load, m, sources, false)
  for _, f in ipairs(files) do f:close() end
  C.set_field(m, "arch", arch)
  C.set_field(m, "hf_config", cfg)
  if file_exists(dir .. "/tokenizer.json") then
    local ok, tok = pcall(pf.tokenizer, dir .. "/tokenizer.json")
    if ok then C.set_field(m, "tokenizer", tok)
    else C.set_field(m, "tokenizer_error", tostring(tok)) end
  end
  return m
end

-- m:set_tokenizer(t): text prompts for m:generate, and text in the program's token stream
function Model.set_tokenizer(m, t)
  if t ~= nil and not tostring(t):match("^pf%.tokenizer") then error("m:set_tokenizer: expected a pf.tokenizer", 2) end
  C.set_field(m, "tokenizer", t)
  return m
end
