-- pf.tensor against values computed independently in Lua.
local pf = require "postformer"

-- values k/64 are exact in float32, so sums of a few hundred are exact in double
local function random_table(rows, cols, seed)
  local r = pf.rng(seed)
  local t = {}
  for i = 1, rows do
    t[i] = {}
    for j = 1, cols do t[i][j] = (r:below(2001) - 1000) / 64 end
  end
  return t
end

describe("pf.tensor", function()
  local data = random_table(5, 7, 3)
  local t = pf.tensor(data)

  it("has the shape of the table it was made from", function()
    assert.same({ 5, 7 }, t:shape())
    assert.equal(5, #t)
    assert.equal(35, t:numel())
  end)

  it("gives back the same values with totable and indexing (1-based)", function()
    assert.same(data, t:totable())
    for i = 1, 5 do
      local row = t[i]
      assert.same({ 7 }, row:shape())
      for j = 1, 7 do assert.equal(data[i][j], row[j]) end
    end
  end)

  it("computes min, max, mean, sum, norm and argmax like plain Lua", function()
    local mn, mx, sum, sq, best, bi = math.huge, -math.huge, 0, 0, -math.huge, 0
    local k = 0
    for i = 1, 5 do
      for j = 1, 7 do
        local v = data[i][j]
        k = k + 1
        mn, mx, sum, sq = math.min(mn, v), math.max(mx, v), sum + v, sq + v * v
        if v > best then best, bi = v, k end
      end
    end
    assert.equal(mn, t:min())
    assert.equal(mx, t:max())
    assert.equal(sum, t:sum())
    assert.near(sum / 35, t:mean(), 1e-12)
    assert.near(math.sqrt(sq), t:norm(), 1e-9 * math.sqrt(sq))
    assert.equal(bi, t:argmax())
  end)

  it("errors on an index out of range, naming the range", function()
    assert.has_error(function() return t[6] end, "tensor index 6 out of range [1, 5]")
    assert.has_error(function() return t[0] end, "tensor index 0 out of range [1, 5]")
  end)

  it("prints a shape header and a few values, eliding the middle", function()
    local s = tostring(pf.tensor(random_table(20, 30, 4)))
    assert.truthy(s:find("^pf%.tensor %[20, 30%]"))
    assert.truthy(s:find("...", 1, true))
    local lines = select(2, s:gsub("\n", "\n"))
    assert.is_true(lines <= 8)
    assert.truthy(tostring(pf.tensor({ 1.5, -2 })):find("1.5", 1, true))
  end)

  it("rejects tables that are not rectangular or not numbers", function()
    assert.has_error(function() pf.tensor({ { 1, 2 }, { 3 } }) end)
    assert.has_error(function() pf.tensor({ "a" }) end)
    assert.has_error(function() pf.tensor({}) end)
  end)

  it("is released by <close> and says so afterwards", function()
    local kept
    do
      local c <close> = pf.tensor({ 1, 2, 3 })
      kept = c
    end
    assert.equal("pf.tensor (closed)", tostring(kept))
    assert.has_error(function() kept:sum() end)
  end)
end)
