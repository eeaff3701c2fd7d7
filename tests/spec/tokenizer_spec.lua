-- pf.tokenizer against the tokenizers library: a byte-level BPE tokenizer (GPT-2 pre-tokenizer,
-- 800 ids, <|endoftext|> added) trained by tests/ref/make_hf_fixtures.py with tokenizers 0.23, and
-- 400 strings (words, Unicode letters, digits and marks of many scripts, emoji, contractions,
-- whitespace runs of every kind, punctuation, the special token) with the library's pre-tokenizer
-- pieces, ids and decoding.
local pf = require "postformer"

local dir = "tests/fixtures/hf/tokenizer"
local expected = dofile(dir .. "/expected.lua")
local tok = pf.tokenizer(dir .. "/tokenizer.json")

local function first_difference(a, b)
  for i = 1, math.max(#a, #b) do
    if a[i] ~= b[i] then return i end
  end
end

describe("pf.tokenizer", function()
  it("loads tokenizer.json", function()
    assert.equal(expected.vocab_size, #tok)
    assert.equal(0, tok:id("<|endoftext|>"))
    assert.equal("<|endoftext|>", tok:token(0))
    assert.equal(" ", tok:token(tok:id("\196\160")))         -- "Ġ" stands for the space byte
  end)

  it("splits text as the library's GPT-2 pre-tokenizer does", function()
    local bad, n = {}, 0
    for _, c in ipairs(expected.cases) do
      if c.pieces then
        n = n + 1
        local got = tok:pieces(c.text)
        if first_difference(got, c.pieces) then bad[#bad + 1] = string.format("%q", c.text) end
      end
    end
    print(string.format("# pieces: %d of %d strings agree", n - #bad, n))
    assert.same({}, bad)
  end)

  it("encodes as the library does", function()
    local bad = {}
    for _, c in ipairs(expected.cases) do
      local ids = tok:encode(c.text)
      local at = first_difference(ids, c.ids)
      if at then bad[#bad + 1] = string.format("%q (id %d: %s vs %s)", c.text, at, tostring(ids[at]), tostring(c.ids[at])) end
    end
    print(string.format("# encode: %d of %d strings agree", #expected.cases - #bad, #expected.cases))
    assert.same({}, bad)
  end)

  it("decodes as the library does, and round-trips", function()
    for _, c in ipairs(expected.cases) do
      assert.equal(c.decoded, tok:decode(c.ids))
      assert.equal(c.text, tok:decode(tok:encode(c.text)))
    end
  end)

  it("survives bytes that are not UTF-8, decoding them to U+FFFD per maximal subpart", function()
    local r = pf.rng(3)
    for _ = 1, 200 do
      local bytes = {}
      for i = 1, r:below(24) do bytes[i] = string.char(r:below(256)) end
      local s = table.concat(bytes)
      assert.equal(s, table.concat((function()
        local t = {}
        for i, id in ipairs(tok:encode(s)) do t[i] = tok:token(id) end
        return t
      end)()))                                           -- the tokens' bytes are the text's bytes
    end
    -- "\xE2\x82" is one truncated sequence (one U+FFFD), "\xC0" and "\xFF" are never valid
    assert.equal("a\239\191\189b\239\191\189\239\191\189", tok:decode(tok:encode("a\226\130b\192\255")))
    assert.error_matches(function() tok:decode({ 5000 }) end, "id 5000 at position 1 is not in the vocabulary")
  end)

  it("turns a text prompt into text with m:generate", function()
    local m = pf.model { vocab = #tok, dim = 16, seed = 1, layers = { pf.mlp { hidden = 16 } } }
    assert.error_matches(function() m:generate("hello", 3) end, "needs a tokenizer")
    m:set_tokenizer(tok)
    local text, ids = m:generate("hello", 3)
    assert.equal(3, #ids)
    assert.equal(tok:decode(ids), text)
  end)

  it("refuses what it cannot read with the reason", function()
    assert.error_matches(function() pf.tokenizer("tests/fixtures/hf/llama/config.json") end,
      "model type %(none%) is not supported")
    assert.error_matches(function() pf.tokenizer("/nonexistent/tokenizer.json") end, "cannot read tokenizer JSON")
  end)
end)
