-- The Lua API surface: constructors, options and their errors, devices, seeds.
local pf = require "postformer"

-- the message of the error fn raises (nil when it raises none)
local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then return nil end
  return tostring(err)
end

local function contains(s, ...)
  for _, part in ipairs({ ... }) do
    if not (s and s:find(part, 1, true)) then return false end
  end
  return true
end

describe("the module", function()
  it("has a version and lists the cpu device", function()
    assert.is_string(pf.version)
    assert.truthy(pf.version:match("^%d+%.%d+%.%d+$"))
    local found = false
    for _, d in ipairs(pf.devices()) do found = found or d == "cpu" end
    assert.is_true(found)
  end)

  it("has one constructor per registered layer kind", function()
    local kinds = pf.layer_kinds()
    assert.is_true(#kinds >= 1)
    for _, k in ipairs(kinds) do
      assert.is_function(pf[k.name], k.name)
      assert.equal(k.name, pf[k.name]().kind)
    end
  end)

  it("refuses cuda clearly when this machine cannot give it", function()
    local has_cuda = false
    for _, d in ipairs(pf.devices()) do has_cuda = has_cuda or d == "cuda" end
    if has_cuda then return end
    local msg = error_of(pf.model, { vocab = 8, dim = 8, device = "cuda", layers = { pf.mlp {} } })
    assert.truthy(contains(msg, "cuda"), msg)
    msg = error_of(pf.model, { vocab = 8, dim = 8, device = "tpu", layers = { pf.mlp {} } })
    assert.truthy(contains(msg, "unknown device 'tpu'"), msg)
  end)

  it("keeps a default seed that pf.seed sets", function()
    local old = pf.seed()
    assert.equal(7, pf.seed(7))
    assert.equal(7, pf.seed())
    local a = pf.model { vocab = 8, dim = 8, layers = { pf.mlp {} } }
    assert.equal(7, a.seed)
    pf.seed(old)
    assert.has_error(function() pf.seed(-1) end)
  end)
end)

describe("layer constructors", function()
  it("return a spec with the kind and every option", function()
    local s = pf.mlp { hidden = 24, act = "gelu" }
    assert.equal("mlp", s.kind)
    assert.same({ hidden = 24, act = "gelu" }, s:options())
    assert.same({ hidden = "auto", act = "swiglu" }, pf.mlp():options())
    assert.equal('pf.mlp{hidden = 24, act = "gelu"}', tostring(s))
  end)

  it("reject an unknown option, naming it and the valid ones", function()
    local msg = error_of(pf.mlp, { heads = 4 })
    assert.truthy(contains(msg, "pf.mlp", "unknown option 'heads'", "hidden", "act"), msg)
  end)

  it("reject a negative size, naming the option and the range", function()
    local msg = error_of(pf.mlp, { hidden = -4 })
    assert.truthy(contains(msg, "'hidden'", "[1, 65536]", "-4"), msg)
  end)

  it("reject a fractional size, a bad choice and a wrong type", function()
    assert.truthy(contains(error_of(pf.mlp, { hidden = 2.5 }), "'hidden'", "integer"))
    assert.truthy(contains(error_of(pf.mlp, { act = "relu" }), "'act'", "gelu|swiglu", "relu"))
    assert.truthy(contains(error_of(pf.mlp, { act = {} }), "'act'", "table"))
    assert.truthy(contains(error_of(pf.mlp, { 3 }), "named"))
  end)

  it("report the caller's line", function()
    local msg = error_of(function() pf.mlp { hiden = 1 } end)
    assert.truthy(msg:match("api_spec%.lua:%d+: pf%.mlp: unknown option 'hiden'"), msg)
  end)
end)

describe("pf.model", function()
  it("rejects unknown, missing and negative options by name", function()
    local l = { pf.mlp {} }
    assert.truthy(contains(error_of(pf.model, { vocab = 8, dim = 8, layers = l, foo = 1 }),
      "unknown option 'foo'", "vocab", "dim"))
    assert.truthy(contains(error_of(pf.model, { dim = 8, layers = l }), "'vocab'", "required"))
    assert.truthy(contains(error_of(pf.model, { vocab = 8, dim = -1, layers = l }), "'dim'", "-1"))
    assert.truthy(contains(error_of(pf.model, { vocab = 8, dim = 8, layers = {} }), "at least one layer"))
    assert.truthy(contains(error_of(pf.model, { vocab = 8, dim = 8, layers = { 3 } }), "layers[1]", "not a layer"))
    assert.truthy(contains(error_of(pf.model, { vocab = 8, dim = 8, layers = l, norm = "batch" }), "'norm'"))
  end)

  it("reports errors at the caller's line", function()
    local msg = error_of(function() pf.model { vocab = 8, dim = 8, layers = {}, } end)
    assert.truthy(msg:match("^[^:]*api_spec%.lua:%d+: "), msg)
  end)

  it("has fields, layers and a description", function()
    local m = pf.model { vocab = 16, dim = 8, seed = 3, norm = "layer", tie = true,
      layers = { pf.mlp { hidden = 16 }, pf.mlp { act = "gelu" } } }
    assert.equal(16, m.vocab)
    assert.equal(8, m.dim)
    assert.equal(3, m.seed)
    assert.equal("cpu", m.device)
    assert.equal("layer", m.norm)
    assert.is_true(m.tie)
    assert.equal(2, #m.layers)
    assert.equal("mlp", m.layers[2].kind)
    assert.equal(2, m.layers[2].index)
    assert.same({ hidden = "auto", act = "gelu" }, m.layers[2]:options())
    assert.same({}, m.layers[1]:probes())
    assert.truthy(contains(error_of(m.layers[1].probe, m.layers[1], "state"), "no probe 'state'"))
    local d = m:describe()
    assert.truthy(contains(d, "embedding", "mlp", "head", "(tied)", "total", pf.util.count(m:params())), d)
  end)

  it("can be closed, after which its layers say so", function()
    local m = pf.model { vocab = 8, dim = 8, layers = { pf.mlp {} } }
    local l = m.layers[1]
    m:close()
    assert.equal("pf.model (closed)", tostring(m))
    assert.truthy(contains(error_of(m.step, m, 1), "closed"))
    assert.truthy(contains(error_of(l.options, l), "closed"))
  end)
end)

describe("pf.repeated", function()
  -- parameters by the formula: embedding V*C, head V*C unless tied, final norm C, and per distinct
  -- block the layer (swiglu: 3*C*F) plus its RMSNorm (C)
  local V, C, F = 32, 16, 24
  local function expected(distinct_blocks, tie)
    return V * C * (tie and 1 or 2) + C + distinct_blocks * (3 * C * F + C)
  end
  local function model(shared, tie)
    return pf.model { vocab = V, dim = C, tie = tie, layers = {
      pf.repeated { n = 3, shared = shared, layers = { pf.mlp { hidden = F }, pf.mlp { hidden = F } } } } }
  end

  it("shared = true has fewer parameters than shared = false, as the formula says", function()
    local shared, separate = model(true), model(false)
    assert.equal(6, #shared.layers)
    assert.equal(6, #separate.layers)
    assert.equal(expected(2), shared:params())
    assert.equal(expected(6), separate:params())
    assert.is_true(shared:params() < separate:params())
    assert.equal(expected(2, true), model(true, true):params())
  end)

  it("points every repeat at the first copy's block", function()
    local shares = {}
    for i, b in ipairs(model(true):blocks()) do shares[i] = b.shares or 0 end
    assert.same({ 0, 0, 1, 2, 1, 2 }, shares)
  end)

  it("shares within each copy when nested in a repeat that is not shared", function()
    local m = pf.model { vocab = V, dim = C, layers = {
      pf.mlp {},
      pf.repeated { n = 2, layers = { pf.repeated { n = 2, shared = true, layers = { pf.mlp {} } } } } } }
    local shares = {}
    for i, b in ipairs(m:blocks()) do shares[i] = b.shares or 0 end
    assert.same({ 0, 0, 2, 0, 4 }, shares)
  end)

  it("is also pf['repeat'] and checks its options", function()
    assert.equal(pf.repeated, pf["repeat"])
    assert.truthy(contains(error_of(pf.repeated, { n = 0, layers = { pf.mlp {} } }), "'n'"))
    assert.truthy(contains(error_of(pf.repeated, { n = 2 }), "'layers'"))
    assert.truthy(contains(error_of(pf.repeated, { n = 2, layers = { pf.mlp {} }, share = true }), "unknown option 'share'"))
  end)
end)

describe("pf.tasks", function()
  it("make batches of the task's shape from its own seed", function()
    local t = pf.tasks.mqar { vocab = 32, seq = 24, pairs = 4, seed = 5 }
    assert.equal(32, t.vocab)
    assert.equal(24, t.seq)
    assert.equal(4, t.pairs)
    local x, y, mask = t:batch(3)
    assert.equal(3, #x)
    local scored = 0
    for b = 1, 3 do
      assert.equal(24, #x[b])
      assert.equal(24, #y[b])
      assert.equal(24, #mask[b])
      for i = 1, 24 do
        assert.is_true(math.type(x[b][i]) == "integer" and x[b][i] >= 0 and x[b][i] < 32)
        assert.is_true(mask[b][i] == 0 or mask[b][i] == 1)
        scored = scored + mask[b][i]
      end
    end
    assert.is_true(scored > 0)
    local again = pf.tasks.mqar { vocab = 32, seq = 24, pairs = 4, seed = 5 }
    assert.same(x, (again:batch(3)))
    t:seed(5)
    assert.same(x, (t:batch(3)))
  end)

  it("reject unknown and out-of-range options by name", function()
    assert.truthy(contains(error_of(pf.tasks.copy, { vocab = 8, seq = 8, pairs = 2 }), "unknown option 'pairs'"))
    assert.truthy(contains(error_of(pf.tasks.mqar, { vocab = 8, seq = -3 }), "'seq'", "-3"))
    assert.truthy(contains(error_of(pf.tasks.induction, { seq = 8 }), "'vocab'", "required"))
    assert.truthy(contains(error_of(pf.tasks.text, { path = "/nonexistent/file", seq = 8 }), "/nonexistent/file"))
  end)

  it("read a text file as bytes", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(string.rep("hello world, ", 40))
    f:close()
    local t = pf.tasks.text { path = path, seq = 16 }
    os.remove(path)
    local x, y = t:batch(2)
    assert.equal(256, t.vocab)
    for i = 1, 15 do assert.equal(x[1][i + 1], y[1][i]) end
  end)
end)
