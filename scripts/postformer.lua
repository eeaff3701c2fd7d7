-- The Lua half of the `postformer` module: what is natural in Lua.
--
-- Embedded into build/postformer.so and the program (scripts/postformer_lua.S) and run by
-- luaopen_postformer with the C half's module table and `internal` (the classes' method tables and
-- the functions only this file calls). It adds pf.model (flattening pf.repeated), the training loop
-- m:train, m:eval, m:generate, m:describe and pretty printing.
--
-- Token ids are 0-based (0 .. vocab-1), as in the engine; tensor indices are 1-based, as in Lua.

local pf, C = ...

local Model = C.model
local fmt = string.format

pf.default_device = pf.default_device or "cpu"   -- the program's --device sets it
pf.headless = pf.headless or false                -- true in `postformer run`: progress lines on

-- Hooks for the terminal UI (tui/), which replaces both after loading the module. Headless,
-- pf._yield does nothing and pf.watch only remembers the model (pf.png's default).
-- m:train calls pf._yield(m, info, task) after every step: the UI records the metrics and, when the
-- job's time slice is over, yields the coroutine so the screen refreshes and keys work.
function pf._yield() end
function pf.watch(m) pf._watched = m end

-- ---- errors ------------------------------------------------------------------------------------

-- Call a C function and, on error, raise its message again at `level` above ccall's caller, so the
-- position shown is the user's script rather than this file. Never tail-call ccall (the level would
-- be off by the frame a tail call removes).
local function ccall(level, f, ...)
  local res = table.pack(pcall(f, ...))
  if not res[1] then
    local msg = res[2]
    if type(msg) == "string" then msg = msg:gsub("^postformer%.lua:%d+: ", "") end
    error(msg, level + 1)
  end
  return table.unpack(res, 2, res.n)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

-- error (at the caller's caller) unless every key of opts is in the list `valid`
local function check_keys(opts, what, valid)
  local ok = {}
  for _, k in ipairs(valid) do ok[k] = true end
  for k in pairs(opts) do
    if not ok[k] then
      error(fmt("%s: unknown option '%s' (valid: %s)", what, tostring(k), table.concat(valid, ", ")), 3)
    end
  end
end

local function check_int(v, what, name, lo, hi, level)
  if math.type(v) ~= "integer" and not (type(v) == "number" and v == math.floor(v)) or v < lo or v > hi then
    error(fmt("%s: option '%s' must be an integer in [%d, %s], got %s", what, name, lo,
      hi == math.huge and "inf" or tostring(hi), tostring(v)), level + 1)
  end
  return math.tointeger(v)
end

local function check_number(v, what, name, lo, hi, level)
  if type(v) ~= "number" or v ~= v or v < lo or v > hi then
    error(fmt("%s: option '%s' must be a number in [%g, %g], got %s", what, name, lo, hi, tostring(v)),
      level + 1)
  end
  return v
end

-- ---- formatting --------------------------------------------------------------------------------

local util = {}
pf.util = util

-- 1234567 -> "1,234,567"
function util.count(n)
  local s = fmt("%d", math.floor(n + 0.5))
  local sign, digits = s:match("^(-?)(%d+)$")
  digits = digits:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return sign .. digits
end

-- 12345 -> "12.3k" (k, M, G, T)
function util.si(x)
  local units = { "", "k", "M", "G", "T" }
  local i = 1
  while math.abs(x) >= 1000 and i < #units do x, i = x / 1000, i + 1 end
  return i == 1 and fmt("%.0f", x) or fmt("%.1f%s", x, units[i])
end

-- 4096 -> "4.0 KiB"
function util.bytes(x)
  local units = { "B", "KiB", "MiB", "GiB" }
  local i = 1
  while x >= 1024 and i < #units do x, i = x / 1024, i + 1 end
  return i == 1 and fmt("%d B", math.floor(x)) or fmt("%.1f %s", x, units[i])
end

-- seconds -> "4.2 s", "2 min 05 s"
function util.seconds(s)
  if s < 60 then return fmt("%.1f s", s) end
  return fmt("%d min %02d s", math.floor(s / 60), math.floor(s % 60))
end

-- A readable string for any value: tables nested up to `depth` (default 3), keys sorted, arrays short.
function pf.inspect(v, depth, indent)
  depth, indent = type(depth) == "number" and depth or 3, indent or ""
  if type(v) == "string" then return fmt("%q", v) end
  if type(v) ~= "table" or getmetatable(v) and getmetatable(v).__tostring then return tostring(v) end
  if depth == 0 then return "{...}" end
  local n, parts = #v, {}
  for i = 1, n do parts[#parts + 1] = pf.inspect(v[i], depth - 1, indent .. "  ") end
  for _, k in ipairs(sorted_keys(v)) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then
      local key = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. pf.inspect(k, 0) .. "]"
      parts[#parts + 1] = key .. " = " .. pf.inspect(v[k], depth - 1, indent .. "  ")
    end
  end
  local flat = "{" .. table.concat(parts, ", ") .. "}"
  if #flat <= 100 then return flat end
  return "{\n" .. indent .. "  " .. table.concat(parts, ",\n" .. indent .. "  ") .. "\n" .. indent .. "}"
end

-- ---- pf.repeated and pf.model ------------------------------------------------------------------

local Repeat = {}
Repeat.__index = Repeat
function Repeat.__tostring(r)
  local inner = {}
  for i, l in ipairs(r.layers) do inner[i] = tostring(l) end
  return fmt("pf.repeated{n = %d, shared = %s, layers = {%s}}", r.n, tostring(r.shared), table.concat(inner, ", "))
end

-- pf.repeated{n = 3, shared = true, layers = {...}}: the blocks of `layers`, n times over; with
-- shared = true every copy uses the first copy's weights (a looped model). Also pf["repeat"]
-- (`repeat` is a Lua keyword, so pf.repeat{...} does not parse).
function pf.repeated(opts)
  local what = "pf.repeated"
  if type(opts) ~= "table" then error(what .. ": expected a table {n, shared, layers}", 2) end
  check_keys(opts, what, { "n", "shared", "layers" })
  local n = check_int(opts.n or 2, what, "n", 1, 1 << 16, 2)
  if opts.shared ~= nil and type(opts.shared) ~= "boolean" then
    error(fmt("%s: option 'shared' must be true or false, got %s", what, tostring(opts.shared)), 2)
  end
  if type(opts.layers) ~= "table" or #opts.layers == 0 then
    error(what .. ": option 'layers' must be a table of one or more layers", 2)
  end
  return setmetatable({ n = n, shared = opts.shared or false, layers = opts.layers }, Repeat)
end
pf["repeat"] = pf.repeated

-- Append the blocks of `list` to specs; shares[i] is 0 or the block whose weights block i uses.
local function flatten(list, specs, shares, where)
  for i, item in ipairs(list) do
    local here = where .. "[" .. i .. "]"
    if getmetatable(item) == Repeat then
      local first = #specs + 1
      flatten(item.layers, specs, shares, here .. ".layers")
      local width = #specs - first + 1
      for r = 2, item.n do
        for j = 0, width - 1 do
          local src, dst = first + j, #specs + 1
          specs[dst] = specs[src]
          local s = shares[src]
          if item.shared then
            shares[dst] = s ~= 0 and s or src                        -- the root of the chain
          elseif s >= first then
            shares[dst] = s + (r - 1) * width                          -- sharing inside this copy
          else
            shares[dst] = s                                            -- 0, or a block before it
          end
        end
      end
    elseif getmetatable(item) == C.layerspec_mt then
      specs[#specs + 1] = item
      shares[#specs] = 0
    else
      error(fmt("pf.model: %s is a %s, not a layer (make one with pf.<kind>{...} or pf.repeated{...})",
        here, type(item)), 4)
    end
  end
end

-- pf.model{vocab, dim, layers, seed, device, norm = "rms"|"layer", tie = false, norm_eps = 1e-5}
function pf.model(opts)
  if type(opts) ~= "table" then error("pf.model: expected a table of options {vocab, dim, layers, ...}", 2) end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if o.device == nil then o.device = pf.default_device end
  if o.seed == nil then o.seed = pf.seed() end
  if type(o.layers) ~= "table" then error("pf.model: option 'layers' must be a table of layers", 2) end
  local specs, shares = {}, {}
  flatten(o.layers, specs, shares, "layers")
  local m = ccall(2, C.model_new, o, specs, shares)
  return m
end

-- ---- training ------------------------------------------------------------------------------------

local History = {}
History.__index = History
function History.__tostring(h)
  local n = #h.loss
  if n == 0 then return "pf.history (no steps)" end
  return fmt("pf.history: %d steps in %s, loss %.4f -> %.4f, acc %.3f -> %.3f, %s tokens/s", n,
    util.seconds(h.elapsed), h.loss[1], h.loss[n], h.acc[1], h.acc[n], util.si(h.tokens_per_s))
end

local function progress_line(info, steps)
  return fmt("step %" .. #tostring(steps) .. "d/%d  loss %.4f  acc %.3f%s  |g| %.3g  lr %.2e  %s tok/s  %s",
    info.step, steps, info.loss, info.acc,
    info.aux_loss ~= 0 and fmt("  aux %.4f", info.aux_loss) or "",
    info.grad_norm, info.lr, util.si(info.tokens_per_s), util.seconds(info.elapsed))
end

local train_keys = { "task", "steps", "batch", "lr", "warmup", "weight_decay", "clip", "seed", "on_step",
  "log_every", "log", "min_lr_ratio", "beta1", "beta2", "eps", "alarms" }

-- ---- routing collapse alarms (models with moe layers) -------------------------------------------
--
-- After every training step m:train reads the small probes of each moe layer (load, entropy, dead,
-- drop_rate, aux_loss, z_loss: a few floats each) into info.moe and history.moe, and raises an alarm
-- the first time, per layer and kind, that an indicator crosses its threshold. Load, entropy and drop
-- rate are judged on their mean over the last `window` steps of this call (the first check comes once
-- the window is full), so that the noise of one batch and the first steps from a random router do not
-- warn. Kinds and default thresholds (alarms = {kind = number or false, ...}; alarms = false: none):
--   max_share   = 0.5   one expert is among the choices of more than this fraction of the tokens:
--                       k * max_i mean load_i > max_share (k slots per token: top_k, 1 for switch);
--                       skipped where k / experts >= max_share (a balanced router would trip it);
--   dead        = 0     more than this many experts got no token over the last 100 steps (the dead
--                       probe), checked once the model has trained 100 steps;
--   min_entropy = 0.3   mean router entropy / log(experts) below this (0.33: every token's
--                       probability spread evenly over 2 of 8 experts): the router is saturated;
--   max_drop    = 0.1   more than this fraction of slots dropped over capacity (expert_choice: of
--                       tokens that no expert took);
--   window      = 50    steps averaged before judging load, entropy and drop rate;
--   quiet       = false true: record the alarms in the history without writing them to stderr.
-- An alarm is written to stderr ("postformer: warning: layer 2 (moe), step 57: ...") and recorded as
-- {step, layer, kind, value, threshold, message} in history.alarms and in info.alarms of its step.

local alarm_defaults = { max_share = 0.5, dead = 0, min_entropy = 0.3, max_drop = 0.1, window = 50, quiet = false }

local function alarm_config(a, what)
  if a == false then return nil end
  if a == nil or a == true then a = {} end
  if type(a) ~= "table" then error(what .. ": option 'alarms' must be false or a table {max_share, dead, ...}", 3) end
  for k in pairs(a) do
    if alarm_defaults[k] == nil then
      error(fmt("%s: unknown alarm '%s' (valid: max_share, dead, min_entropy, max_drop, window, quiet)", what,
        tostring(k)), 3)
    end
  end
  local c = {}
  for k, v in pairs(alarm_defaults) do c[k] = v end
  local function thr(name, lo, hi, int)
    local v = a[name]
    if v == false then c[name] = false
    elseif v ~= nil then
      local check = int and check_int or check_number
      c[name] = check(v, what .. " alarms", name, lo, hi, 4)
    end
  end
  thr("max_share", 0, 1)
  thr("dead", 0, 64, true)
  thr("min_entropy", 0, 1)
  thr("max_drop", 0, 1)
  if a.window ~= nil then c.window = check_int(a.window, what .. " alarms", "window", 1, 1 << 20, 3) end
  if a.quiet ~= nil then
    if type(a.quiet) ~= "boolean" then error(what .. ": alarms option 'quiet' must be true or false", 3) end
    c.quiet = a.quiet
  end
  return c
end

-- A watcher over the moe layers of m (nil when it has none): per layer the options it needs and the
-- running sums of the last `window` steps.
local function moe_watch(m, alarms)
  local w = { alarms = alarms, layers = {}, raised = {}, window = alarms and alarms.window or 1 }
  for i, l in ipairs(m.layers) do
    if l.kind == "moe" then
      local o = l:options()
      local E = o.experts
      local k = o.router == "switch" and 1 or o.top_k
      w.layers[#w.layers + 1] = { index = i, layer = l, E = E, k = k, router = o.router, aux = o.aux, zloss = o.zloss,
        ring = {}, n = 0, sum_load = {}, sum_entropy = 0, sum_drop = 0 }
      for e = 1, E do w.layers[#w.layers].sum_load[e] = 0 end
    end
  end
  if #w.layers == 0 then return nil end
  return w
end

local function raise_alarm(w, hist, new, step, L, kind, value, threshold, text)
  local key = L.index .. ":" .. kind
  if w.raised[key] then return end
  w.raised[key] = true
  local msg = fmt("layer %d (moe), step %d: %s", L.index, step, text)
  local a = { step = step, layer = L.index, kind = kind, value = value, threshold = threshold, message = msg }
  hist.alarms[#hist.alarms + 1] = a
  new[#new + 1] = a
  if not w.alarms.quiet then
    io.stderr:write("postformer: warning: ", msg, "\n")
    io.stderr:flush()
  end
end

-- Read the probes of every moe layer after training step `step`; fill info.moe, history.moe and the
-- alarms.
local function moe_watch_step(w, m, step, info, hist)
  local per, new = {}, {}
  local W = w.window
  for j, L in ipairs(w.layers) do
    local l = L.layer
    local load = l:probe("load"):totable()
    local entropy, drop = l:probe("entropy")[1], l:probe("drop_rate")[1]
    local balance, z = l:probe("aux_loss")[1], l:probe("z_loss")[1]
    local dead = math.tointeger(l:probe("dead")[1]) or 0
    local mx = 0
    for e = 1, L.E do mx = math.max(mx, load[e]) end
    local s = { layer = L.index, balance = balance, z_loss = z, aux_loss = L.aux * balance + L.zloss * z,
      max_violation = l:probe("max_violation")[1], share = L.k * mx, entropy = entropy, dead = dead, drop_rate = drop }
    per[j] = s
    local h = hist.moe[j]
    for name, v in pairs(s) do
      if name ~= "layer" then h[name][step] = v end
    end

    -- the window's running sums
    local slot = L.n % W + 1
    local old = L.ring[slot]
    if old then
      for e = 1, L.E do L.sum_load[e] = L.sum_load[e] - old.load[e] end
      L.sum_entropy, L.sum_drop = L.sum_entropy - old.entropy, L.sum_drop - old.drop
    end
    for e = 1, L.E do L.sum_load[e] = L.sum_load[e] + load[e] end
    L.sum_entropy, L.sum_drop = L.sum_entropy + entropy, L.sum_drop + drop
    L.ring[slot] = { load = load, entropy = entropy, drop = drop }
    L.n = L.n + 1

    local a = w.alarms
    if a and L.n >= W then
      local top, best = 0, 1
      for e = 1, L.E do
        if L.sum_load[e] > top then top, best = L.sum_load[e], e end
      end
      local share = L.k * top / W
      local over = W > 1 and fmt(" (mean of the last %d steps)", W) or ""
      if a.max_share and L.k / L.E < a.max_share and share > a.max_share then
        raise_alarm(w, hist, new, step, L, "max_share", share, a.max_share,
          fmt("expert %d is chosen by %.0f%% of the tokens%s, over max_share = %g: the router is collapsing",
            best - 1, 100 * share, over, a.max_share))
      end
      local ent = L.sum_entropy / W
      if a.min_entropy and ent < a.min_entropy then
        raise_alarm(w, hist, new, step, L, "min_entropy", ent, a.min_entropy,
          fmt("router entropy %.3f%s is under min_entropy = %g: the router is saturated", ent, over, a.min_entropy))
      end
      local dr = L.sum_drop / W
      if a.max_drop and dr > a.max_drop then
        raise_alarm(w, hist, new, step, L, "max_drop", dr, a.max_drop,
          fmt("%.0f%% of the %s%s, over max_drop = %g", 100 * dr,
            L.router == "expert_choice" and "tokens were taken by no expert"
              or "routing slots were dropped over capacity",
            over, a.max_drop))
      end
    end
    if w.alarms and w.alarms.dead and dead > w.alarms.dead and m:steps_taken() >= 100 then
      raise_alarm(w, hist, new, step, L, "dead", dead, w.alarms.dead,
        fmt("%d of %d experts got no token in the last 100 steps (dead)", dead, L.E))
    end
  end
  info.moe = per
  info.alarms = new
end

-- m:train{task, steps = 200, batch = 16, lr = 3e-3, warmup = steps/10 (at most 100), min_lr_ratio = 0.1,
--         weight_decay = 0, clip = 1 (0: none), beta1 = 0.9, beta2 = 0.95, eps = 1e-8,
--         seed (restarts the task's data), on_step = function(info), log (default: pf.headless), log_every,
--         alarms (models with moe layers: the collapse alarms above; false: none)}
-- Returns the history {loss = {...}, acc = {...}, aux = {...}, grad_norm, lr, steps, elapsed, tokens_per_s};
-- aux is the sum of the layers' weighted auxiliary losses per step. With moe layers also
-- history.moe = {{layer, balance = {...}, z_loss, aux_loss, max_violation, share, entropy, dead, drop_rate}}
-- (one per moe layer, one value per step; balance and z_loss before their weights, aux_loss after);
-- history.alarms = {{step, layer, kind, value, threshold, message}} (empty without moe layers).
-- on_step(info) gets info.step (1-based in this call), steps, loss, acc, aux_loss, grad_norm, lr,
-- tokens, tokens_per_s, elapsed, and with moe layers info.moe (this step's row of history.moe for each
-- moe layer: {layer, balance, ...}) and info.alarms (the alarms raised at this step); returning false
-- stops training early.
function Model.train(m, opts)
  local what = "m:train"
  if type(opts) ~= "table" then error(what .. ": expected a table of options {task, steps, batch, lr, ...}", 2) end
  check_keys(opts, what, train_keys)
  local task = opts.task
  if task == nil then error(what .. ": option 'task' is required (e.g. pf.tasks.mqar{...})", 2) end
  if getmetatable(task) ~= C.task_mt then
    error(what .. ": option 'task' must be a task (pf.tasks.*), got " .. type(task), 2)
  end
  local def = C.train_defaults()
  local steps = check_int(opts.steps or 200, what, "steps", 1, math.maxinteger, 2)
  local batch = check_int(opts.batch or 16, what, "batch", 1, 1 << 20, 2)
  -- the engine's schedule (linear warmup, cosine to lr * min_lr_ratio), counted from the start of
  -- this call: schedule_step is set to i each step
  local cfg = {
    lr = check_number(opts.lr or def.lr, what, "lr", 0, 10, 2),
    warmup = check_int(opts.warmup or math.min(100, steps // 10), what, "warmup", 0, math.maxinteger, 2),
    min_lr_ratio = check_number(opts.min_lr_ratio or def.min_lr_ratio, what, "min_lr_ratio", 0, 1, 2),
    total_steps = steps,
    weight_decay = check_number(opts.weight_decay or def.weight_decay, what, "weight_decay", 0, 10, 2),
    clip = check_number(opts.clip or def.clip, what, "clip", 0, math.huge, 2),
    beta1 = check_number(opts.beta1 or def.beta1, what, "beta1", 0, 1, 2),
    beta2 = check_number(opts.beta2 or def.beta2, what, "beta2", 0, 1, 2),
    eps = check_number(opts.eps or def.eps, what, "eps", 0, 1, 2),
  }
  if opts.on_step ~= nil and type(opts.on_step) ~= "function" then
    error(what .. ": option 'on_step' must be a function(info)", 2)
  end
  if opts.seed ~= nil then task:seed(check_int(opts.seed, what, "seed", 0, math.maxinteger, 2)) end
  local log = opts.log
  if log == nil then log = pf.headless end
  local tty = log and C.isatty()
  local log_every = check_int(opts.log_every or math.max(1, steps // 10), what, "log_every", 1, math.maxinteger, 2)

  local hist = setmetatable({ loss = {}, acc = {}, aux = {}, grad_norm = {}, lr = {}, alarms = {} }, History)
  local watch = moe_watch(m, alarm_config(opts.alarms, what))
  if watch then
    hist.moe = {}
    for j, L in ipairs(watch.layers) do
      hist.moe[j] = { layer = L.index, balance = {}, z_loss = {}, aux_loss = {}, max_violation = {}, share = {},
        entropy = {}, dead = {}, drop_rate = {} }
    end
  end
  local start, tokens, last_draw = pf.clock(), 0, -1
  local info
  for i = 1, steps do
    cfg.schedule_step = i
    local st = ccall(2, Model._train_step, m, task, batch, cfg)
    local now = pf.clock()
    tokens = tokens + st.tokens
    local elapsed = now - start
    info = {
      step = i, steps = steps, loss = st.loss, acc = st.acc, aux_loss = st.aux_loss, grad_norm = st.grad_norm,
      lr = st.lr, tokens = tokens, elapsed = elapsed, tokens_per_s = elapsed > 0 and tokens / elapsed or 0,
    }
    hist.loss[i], hist.acc[i], hist.aux[i] = st.loss, st.acc, st.aux_loss
    hist.grad_norm[i], hist.lr[i] = st.grad_norm, st.lr
    if watch then moe_watch_step(watch, m, i, info, hist) end
    pf._yield(m, info, task)
    if log then
      if tty then
        if now - last_draw >= 0.1 or i == steps then
          io.stdout:write("\r", progress_line(info, steps), "\27[K")
          io.stdout:flush()
          last_draw = now
        end
      elseif i % log_every == 0 or i == steps or i == 1 then
        io.stdout:write(progress_line(info, steps), "\n")
        io.stdout:flush()
      end
    end
    if opts.on_step and opts.on_step(info) == false then break end
  end
  if log and tty then io.stdout:write("\n") end
  hist.elapsed = info.elapsed
  hist.tokens_per_s = info.tokens_per_s
  hist.steps = #hist.loss
  return hist
end

-- m:eval(task, n = 256): accuracy on n fresh sequences (and the loss, second)
function Model.eval(m, task, n)
  local acc, loss = ccall(2, Model._evaluate, m, task, n)
  return acc, loss
end

-- ---- generation --------------------------------------------------------------------------------

-- the token to emit from a logits tensor and its probability
local function pick(logits, temperature, top_k, rng)
  local v = logits:totable()
  local ids = {}
  for i = 1, #v do ids[i] = i end
  if temperature <= 0 then
    local best = logits:argmax()
    local sum = 0
    for i = 1, #v do sum = sum + math.exp(v[i] - v[best]) end
    return best - 1, 1 / sum
  end
  table.sort(ids, function(a, b) return v[a] > v[b] or v[a] == v[b] and a < b end)
  local k = (top_k > 0 and top_k < #ids) and top_k or #ids
  local weights, total = {}, 0
  for j = 1, k do
    weights[j] = math.exp((v[ids[j]] - v[ids[1]]) / temperature)
    total = total + weights[j]
  end
  local u, acc = rng:uniform() * total, 0
  for j = 1, k do
    acc = acc + weights[j]
    if u < acc or j == k then return ids[j] - 1, weights[j] / total end
  end
end

-- m:generate(prompt, n = 16, {temperature = 0 (greedy), top_k = 0 (all), seed, reset = true})
-- Steps the prompt (after m:reset() unless reset = false), then n tokens, each picked from the last
-- logits and stepped in turn. Returns the n token ids and the probability each had when picked.
-- A text prompt (a string; the model needs m.tokenizer, which pf.load_hf sets) is encoded, and the
-- continuation comes back as text first: text, ids, probabilities.
function Model.generate(m, prompt, n, opts)
  local what = "m:generate"
  local tok
  if type(prompt) == "string" then
    tok = m.tokenizer
    if not tok then
      error(what .. ": a text prompt needs a tokenizer (m:set_tokenizer(pf.tokenizer(path)); pf.load_hf sets one "
        .. "from tokenizer.json)", 2)
    end
    prompt = tok:encode(prompt)
    if #prompt == 0 then error(what .. ": the prompt encodes to no tokens", 2) end
  end
  if type(prompt) ~= "table" or #prompt == 0 then error(what .. ": the prompt must be a table of one or more token ids", 2) end
  n = n == nil and 16 or check_int(n, what, "n", 0, math.maxinteger, 2)
  opts = opts or {}
  if type(opts) ~= "table" then error(what .. ": options must be a table {temperature, top_k, seed, reset}", 2) end
  check_keys(opts, what, { "temperature", "top_k", "seed", "reset" })
  local temperature = check_number(opts.temperature or 0, what, "temperature", 0, math.huge, 2)
  local top_k = check_int(opts.top_k or 0, what, "top_k", 0, math.maxinteger, 2)
  local rng = pf.rng(check_int(opts.seed or pf.seed(), what, "seed", 0, math.maxinteger, 2))
  if opts.reset ~= false then m:reset() end
  local logits
  for _, t in ipairs(prompt) do logits = ccall(2, Model.step, m, t) end
  local out, probs = {}, {}
  for i = 1, n do
    out[i], probs[i] = pick(logits, temperature, top_k, rng)
    logits = ccall(2, Model.step, m, out[i])
  end
  if tok then return tok:decode(out), out, probs end
  return out, probs
end

-- ---- describe ----------------------------------------------------------------------------------

-- m:describe(): a table, one row per block, with the embedding, the final norm and the head
function Model.describe(m)
  local V, D = m.vocab, m.dim
  local rows = { { "#", "kind", "params", "state", "FLOPs/token", "" } }
  local function row(...) rows[#rows + 1] = { ... } end
  row("", "embedding", util.count(V * D), "", "", "")
  local in_blocks, flops, state = 0, 0, 0
  for _, b in ipairs(m:blocks()) do
    in_blocks = in_blocks + b.params
    flops, state = flops + b.flops_per_token, state + b.state_bytes
    local note = b.shares and ("shares " .. b.shares) or (b.constant_state and "" or "state grows")
    if b.shares and not b.constant_state then note = note .. ", state grows" end
    row(tostring(b.index), b.kind, util.count(b.params), util.bytes(b.state_bytes), util.si(b.flops_per_token), note)
  end
  local head = m.tie and 0 or V * D
  local total = m:params()
  row("", "final norm", util.count(total - in_blocks - V * D - head), "", "", "")
  row("", "head", m.tie and "(tied)" or util.count(head), "", util.si(2 * V * D), "")
  flops = flops + 2 * V * D
  row("", "total", util.count(total), util.bytes(state), util.si(flops), "")
  local widths = {}
  for _, r in ipairs(rows) do
    for j, cell in ipairs(r) do widths[j] = math.max(widths[j] or 1, #cell) end
  end
  local lines = { fmt("pf.model: vocab %d, dim %d, %s norm, %s head, %s, seed %d", V, D, m.norm,
    m.tie and "tied" or "untied", m.device, m.seed) }
  for i, r in ipairs(rows) do
    local cells = {}
    for j, cell in ipairs(r) do
      -- numbers right-aligned, words left-aligned
      local right = j == 1 or j >= 3 and j <= 5
      cells[j] = right and fmt("%" .. widths[j] .. "s", cell) or fmt("%-" .. widths[j] .. "s", cell)
    end
    lines[#lines + 1] = ("  " .. table.concat(cells, "  ")):gsub("%s+$", "")
    if i == 1 or i == #rows - 1 then
      lines[#lines + 1] = "  " .. string.rep("-", #lines[#lines] - 2)
    end
  end
  return table.concat(lines, "\n")
end

return pf
