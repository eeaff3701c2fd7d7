-- Open a Hugging Face checkpoint you downloaded and watch it think, token by token.
--
--   postformer run examples/hf.lua DIR ["prompt"] [N]
--
-- DIR is a model directory as the hub ships it: config.json, model.safetensors (or shards with
-- model.safetensors.index.json) and, for text, tokenizer.json; e.g. a snapshot directory of
-- state-spaces/mamba-130m-hf under ~/.cache/huggingface/hub/models--state-spaces--mamba-130m-hf/
-- snapshots/<hash>/. Supported: MambaForCausalLM, Mamba2ForCausalLM (one group), LlamaForCausalLM,
-- MixtralForCausalLM, JambaForCausalLM, in F32, F16 or BF16 (computed in float32). Without a DIR this runs on the tiny
-- random Mamba the tests use (tests/fixtures/hf/mamba), which has no tokenizer: ids only.
local pf = pf or require "postformer"
local dir = arg and arg[1] or "tests/fixtures/hf/mamba"
local prompt = arg and arg[2] or "The capital of France is"
local n = tonumber(arg and arg[3]) or 20

local m = pf.load_hf(dir)
print(m:describe())
if m.tokenizer_error then print("tokenizer.json: " .. m.tokenizer_error) end

if m.tokenizer then
  -- text in, text out; then the same prompt stepped by hand to show what a layer holds
  local text = m:generate(prompt, n)
  print(prompt .. text)
  m:reset()
  for _, id in ipairs(m.tokenizer:encode(prompt)) do m:step(id) end
else
  local ids = m:generate({ 1, 2, 3 }, n)
  print("greedy ids: " .. table.concat(ids, " "))
end

-- what the first layer holds after the prompt: the SSM state of Mamba, the routing of Mixtral, ...
local first = m.layers[1]
for _, name in ipairs(first:probes()) do
  local ok, t = pcall(first.probe, first, name)
  if ok then print(string.format("layer 1 (%s) %s: %s", first.kind, name, tostring(t))) end
end
