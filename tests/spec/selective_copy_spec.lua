-- Selective copying (issue 3, the shape of Table 1 of the Mamba paper): the example's own run,
-- two blocks of width 64 trained 1600 steps; Mamba (selective) learns the task, S4D (time-invariant,
-- same block) stays clearly below it. Asserted on the accuracies the example prints, never on time.
-- It takes about 3.5 minutes on 2 cores: the slowest test, kept because it is the one that shows
-- what selectivity adds.
local build = os.getenv("PF_BUILD") or "build"

describe("examples/selective_copy.lua", function()
  it("mamba learns selective copying (>= 0.9) where s4d stays below 0.7", function()
    local p = io.popen(build .. "/postformer run examples/selective_copy.lua 1600 64 4 mamba,s4d 2>&1")
    local out = p:read("a")
    p:close()
    local mamba = tonumber(out:match("\nmamba%s+([%d.]+)%%"))
    local s4d = tonumber(out:match("\ns4d%s+([%d.]+)%%"))
    assert.is_not_nil(mamba, out)
    assert.is_not_nil(s4d, out)
    assert.is_true(mamba >= 90, ("mamba %.1f%%"):format(mamba))
    assert.is_true(s4d < 70, ("s4d %.1f%%"):format(s4d))
  end)
end)
