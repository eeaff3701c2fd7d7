-- The program, from the shell: flags, exit codes, error messages, `arg`.
local build = os.getenv("PF_BUILD") or "build"
local prog = build .. "/postformer"

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function slurp(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- run the program with args (a shell string); returns exit code, stdout, stderr
local function run(args)
  local out, err = os.tmpname(), os.tmpname()
  local _, _, code = os.execute(prog .. " " .. args .. " >" .. out .. " 2>" .. err .. " </dev/null")
  local o, e = slurp(out), slurp(err)
  os.remove(out)
  os.remove(err)
  return code, o, e
end

-- a script file with this text; returns its path
local function script(text)
  local base = os.tmpname()
  os.remove(base)
  local path = base .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

describe("postformer (the program)", function()
  it("prints its version", function()
    local code, out = run("--version")
    assert.equal(0, code)
    assert.truthy(out:match("^postformer %d+%.%d+%.%d+"), out)
  end)

  it("prints help naming the commands and flags", function()
    local code, out = run("--help")
    assert.equal(0, code)
    for _, word in ipairs({ "run FILE.lua", "--device", "--version", "headless" }) do
      assert.truthy(out:find(word, 1, true), word)
    end
  end)

  it("exits 64 on bad usage", function()
    local code, _, err = run("--frobnicate")
    assert.equal(64, code)
    assert.truthy(err:find("unknown option '--frobnicate'", 1, true), err)
    assert.equal(64, (run("run")))
    assert.equal(64, (run("run /nonexistent/script.lua")))
    assert.equal(64, (run("--device")))
    assert.equal(64, (run("--device tpu run x.lua")))
  end)

  it("runs a script with arg and ... set like lua.c, pf preloaded and require working", function()
    local path = script([[
print(arg[0] == ..., select("#", ...), arg[1], arg[2], #arg)
print(type(pf), require("postformer") == pf, pf.headless)
]])
    local code, out, err = run("run " .. path .. " one 'two words'")
    assert.equal(0, code, err)
    assert.equal("false\t2\tone\ttwo words\t2\ntable\ttrue\ttrue\n", out)
    code, out = run(path .. " x")          -- without `run`: headless too, for now
    assert.equal(0, code)
    assert.truthy(out:find("\t1\tx\t", 1, true), out)
    code, out = run("--device cpu run " .. path)
    assert.equal(0, code)
    local dev = script("print(pf.default_device)")
    code, out = run("--device=cpu " .. dev)
    assert.equal("cpu\n", out)
    os.remove(path)
    os.remove(dev)
  end)

  it("exits 1 with file:line on a syntax error", function()
    local path = script("local x = 1\nx = = 2\n")
    local code, _, err = run("run " .. path)
    assert.equal(1, code)
    assert.truthy(err:find(path .. ":2:", 1, true), err)
    os.remove(path)
  end)

  it("exits 1 with file:line and a traceback on a runtime error", function()
    local path = script("local function f()\n  error('boom')\nend\nf()\n")
    local code, _, err = run("run " .. path)
    assert.equal(1, code)
    assert.truthy(err:find(path .. ":2: boom", 1, true), err)
    assert.truthy(err:find("stack traceback:", 1, true), err)
    assert.truthy(err:find(path .. ":4:", 1, true), err)
    os.remove(path)
  end)

  it("exits 1 naming the script's line on an engine error", function()
    local path = script("local x = 1\nlocal m = pf.model{vocab = 8, dim = 8, layers = {pf.mlp{}}}\nm:step(8)\n")
    local code, _, err = run("run " .. path)
    assert.equal(1, code)
    assert.truthy(err:find(path .. ":3: bad argument #1 to 'step' (token 8 is out of range for vocab 8", 1, true), err)
    os.remove(path)
  end)

  it("exits 130 when interrupted by Ctrl-C", function()
    local path = script("while true do end\n")
    -- A background job of a non-interactive shell starts with SIGINT ignored, so a signal sent
    -- before the program installs its handler is lost: send it again until the program is gone
    -- (bounded: 10 s, then KILL, which fails the test with 137 instead of hanging it).
    local p = io.popen("sh -c " .. shell_quote("timeout -s KILL 10 " .. prog .. " run " .. path ..
      " 2>/dev/null & pid=$!; i=0; while [ $i -lt 50 ] && kill -INT $pid 2>/dev/null; do" ..
      " sleep 0.2; i=$((i+1)); done; wait $pid; echo $?"))
    local code = p:read("a")
    p:close()
    assert.equal("130\n", code)
    os.remove(path)
  end)
end)
