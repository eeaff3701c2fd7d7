/* pf.tasks (the task generators) and pf.rng (the engine's seeded random numbers), for Lua.
 *
 * A task owns its RNG, seeded from its `seed` option or the module's default seed (pf.seed), so a
 * script draws the same batches every run. task:batch(n) returns inputs, targets and mask as Lua
 * tables of n rows of T numbers (token ids from 0; mask 1 where the position is scored, else 0). */
#include <stdint.h>
#include <string.h>

#include "engine/error.h"
#include "scripts/lua_module.h"

/* ---- option helpers -------------------------------------------------------------------------- */

lua_Integer pfl_opt_integer(lua_State *L, int idx, const char *what, const char *name,
                            lua_Integer def, lua_Integer lo, lua_Integer hi)
{
    lua_getfield(L, idx, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        if (def < lo) luaL_error(L, "%s: option '%s' is required", what, name);
        return def;
    }
    int isint = 0;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (!isint || v < lo || v > hi) {
        const char *got = luaL_tolstring(L, -1, NULL);
        luaL_error(L, "%s: option '%s' must be an integer in [%I, %I], got %s", what, name,
                   (LUAI_UACINT)lo, (LUAI_UACINT)hi, got);
    }
    lua_pop(L, 1);
    return v;
}

void pfl_check_keys(lua_State *L, int idx, const char *what, const char *const *valid)
{
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        int found = 0;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (const char *const *v = valid; *v && !found; v++) found = strcmp(*v, lua_tostring(L, -1)) == 0;
        if (!found) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (const char *const *v = valid; *v; v++) {
                if (v != valid) luaL_addstring(&b, ", ");
                luaL_addstring(&b, *v);
            }
            luaL_pushresult(&b);
            const char *key = luaL_tolstring(L, -2, NULL);
            luaL_error(L, "%s: unknown option '%s' (valid: %s)", what, key, lua_tostring(L, -2));
        }
    }
}

/* ---- pf.rng ----------------------------------------------------------------------------------- */

pf_rng *pfl_rng_check(lua_State *L, int arg) { return luaL_checkudata(L, arg, PFL_RNG); }

static uint64_t check_seed(lua_State *L, int arg)
{
    lua_Integer s = luaL_checkinteger(L, arg);
    luaL_argcheck(L, s >= 0, arg, "a seed is an integer >= 0");
    return (uint64_t)s;
}

/* pf.rng(seed) */
static int rng_new(lua_State *L)
{
    uint64_t seed = check_seed(L, 1);
    pf_rng *r = lua_newuserdatauv(L, sizeof *r, 0);
    pf_rng_seed(r, seed);
    luaL_setmetatable(L, PFL_RNG);
    return 1;
}

static int rng_uniform(lua_State *L)
{
    lua_pushnumber(L, pf_rng_uniform(pfl_rng_check(L, 1)));
    return 1;
}

static int rng_normal(lua_State *L)
{
    lua_pushnumber(L, pf_rng_normal(pfl_rng_check(L, 1)));
    return 1;
}

/* r:below(n): an integer in [0, n) */
static int rng_below(lua_State *L)
{
    pf_rng *r = pfl_rng_check(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 1 && n <= UINT32_MAX, 2, "n must be in [1, 2^32 - 1]");
    lua_pushinteger(L, pf_rng_below(r, (uint32_t)n));
    return 1;
}

static int rng_tostring(lua_State *L)
{
    luaL_checkudata(L, 1, PFL_RNG);
    lua_pushfstring(L, "pf.rng (%p)", lua_topointer(L, 1));
    return 1;
}

static const luaL_Reg rng_methods[] = {
    {"uniform", rng_uniform}, {"normal", rng_normal}, {"below", rng_below}, {NULL, NULL},
};

/* ---- pf.task ---------------------------------------------------------------------------------- */

pfl_task *pfl_task_check(lua_State *L, int arg)
{
    pfl_task *t = luaL_checkudata(L, arg, PFL_TASK);
    luaL_argcheck(L, t->task != NULL, arg, "task is closed");
    return t;
}

static int task_gc(lua_State *L)
{
    pfl_task *t = luaL_checkudata(L, 1, PFL_TASK);
    pf_task_free(t->task);
    t->task = NULL;
    return 0;
}

static pfl_task *task_push(lua_State *L)
{
    pfl_task *t = lua_newuserdatauv(L, sizeof *t, 0);
    memset(t, 0, sizeof *t);
    luaL_setmetatable(L, PFL_TASK);
    return t;
}

/* the default seed (pf.seed) unless the options at idx give one */
static void task_seed_from(lua_State *L, pfl_task *t, int idx, const char *what)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "postformer.seed");
    lua_Integer def = lua_tointeger(L, -1);
    lua_pop(L, 1);
    pf_rng_seed(&t->rng, (uint64_t)pfl_opt_integer(L, idx, what, "seed", def, 0, LUA_MAXINTEGER));
}

static const char *const task_sizes[] = {"vocab", "seq", "seed", NULL};

/* pf.tasks.copy{vocab, seq, seed} and induction likewise (upvalue 1: which) */
static int task_new_plain(lua_State *L)
{
    int induction = (int)lua_tointeger(L, lua_upvalueindex(1));
    const char *what = induction ? "pf.tasks.induction" : "pf.tasks.copy";
    luaL_checktype(L, 1, LUA_TTABLE);
    pfl_check_keys(L, 1, what, task_sizes);
    int vocab = (int)pfl_opt_integer(L, 1, what, "vocab", -1, 1, 1 << 24);
    int seq = (int)pfl_opt_integer(L, 1, what, "seq", -1, 1, 1 << 20);
    pfl_task *t = task_push(L);
    task_seed_from(L, t, 1, what);
    t->task = induction ? pf_task_induction(vocab, seq) : pf_task_copy(vocab, seq);
    if (!t->task) return pfl_engine_error(L);
    return 1;
}

/* pf.tasks.mqar{vocab, seq, pairs, seed} and selective_copy{vocab, seq, tokens, seed} */
static int task_new_counted(lua_State *L)
{
    int mqar = (int)lua_tointeger(L, lua_upvalueindex(1));
    const char *what = mqar ? "pf.tasks.mqar" : "pf.tasks.selective_copy";
    const char *count = mqar ? "pairs" : "tokens";
    const char *const valid[] = {"vocab", "seq", count, "seed", NULL};
    luaL_checktype(L, 1, LUA_TTABLE);
    pfl_check_keys(L, 1, what, valid);
    int vocab = (int)pfl_opt_integer(L, 1, what, "vocab", -1, 1, 1 << 24);
    int seq = (int)pfl_opt_integer(L, 1, what, "seq", -1, 1, 1 << 20);
    int n = (int)pfl_opt_integer(L, 1, what, count, 8, 1, 1 << 20);
    pfl_task *t = task_push(L);
    task_seed_from(L, t, 1, what);
    t->task = mqar ? pf_task_mqar(vocab, seq, n) : pf_task_selective_copy(vocab, seq, n);
    if (!t->task) return pfl_engine_error(L);
    return 1;
}

/* pf.tasks.text{path, seq, seed} */
static int task_new_text(lua_State *L)
{
    static const char *const valid[] = {"path", "seq", "seed", NULL};
    const char *what = "pf.tasks.text";
    luaL_checktype(L, 1, LUA_TTABLE);
    pfl_check_keys(L, 1, what, valid);
    lua_getfield(L, 1, "path");
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "%s: option 'path' (a file name) is required", what);
    const char *path = lua_tostring(L, -1);
    int seq = (int)pfl_opt_integer(L, 1, what, "seq", -1, 1, 1 << 20);
    pfl_task *t = task_push(L);
    task_seed_from(L, t, 1, what);
    t->task = pf_task_text(path, seq);
    if (!t->task) return pfl_engine_error(L);
    return 1;
}

/* inputs, targets, mask = task:batch(n) */
static int task_batch(lua_State *L)
{
    pfl_task *t = pfl_task_check(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    int T = t->task->seq;
    luaL_argcheck(L, n >= 1 && n <= (1 << 24) / T, 2, "batch size out of range");
    size_t cells = (size_t)n * (size_t)T;
    /* scratch owned by Lua, so an error while building the tables leaks nothing */
    char *scratch = lua_newuserdatauv(L, cells * (2 * sizeof(int32_t) + sizeof(float)), 0);
    int32_t *inputs = (int32_t *)scratch, *targets = inputs + cells;
    float *mask = (float *)(targets + cells);
    if (pf_task_batch(t->task, &t->rng, (int)n, inputs, targets, mask) < 0) return pfl_engine_error(L);
    for (int which = 0; which < 3; which++) {
        lua_createtable(L, (int)n, 0);
        for (lua_Integer b = 0; b < n; b++) {
            lua_createtable(L, T, 0);
            for (int i = 0; i < T; i++) {
                size_t k = (size_t)b * T + i;
                if (which == 0) lua_pushinteger(L, inputs[k]);
                else if (which == 1) lua_pushinteger(L, targets[k]);
                else lua_pushnumber(L, mask[k]);
                lua_rawseti(L, -2, i + 1);
            }
            lua_rawseti(L, -2, b + 1);
        }
    }
    return 3;
}

/* task:seed(s): restart its data stream */
static int task_seed(lua_State *L)
{
    pfl_task *t = pfl_task_check(L, 1);
    pf_rng_seed(&t->rng, check_seed(L, 2));
    lua_settop(L, 1);
    return 1;
}

/* fields (name, vocab, seq, pairs, tokens) then methods (upvalue 1) */
static int task_index(lua_State *L)
{
    pfl_task *t = pfl_task_check(L, 1);
    const char *key = lua_tostring(L, 2);
    if (key && strcmp(key, "name") == 0) lua_pushstring(L, t->task->name);
    else if (key && strcmp(key, "vocab") == 0) lua_pushinteger(L, t->task->vocab);
    else if (key && strcmp(key, "seq") == 0) lua_pushinteger(L, t->task->seq);
    else if (key && strcmp(key, "pairs") == 0 && t->task->kind == PF_TASK_MQAR) lua_pushinteger(L, t->task->pairs);
    else if (key && strcmp(key, "tokens") == 0 && t->task->kind == PF_TASK_SELECTIVE_COPY)
        lua_pushinteger(L, t->task->tokens);
    else {
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(1));
    }
    return 1;
}

static int task_tostring(lua_State *L)
{
    pfl_task *t = luaL_checkudata(L, 1, PFL_TASK);
    if (!t->task) lua_pushliteral(L, "pf.task (closed)");
    else if (t->task->kind == PF_TASK_MQAR)
        lua_pushfstring(L, "pf.task %s{vocab = %d, seq = %d, pairs = %d}", t->task->name, t->task->vocab,
                        t->task->seq, t->task->pairs);
    else if (t->task->kind == PF_TASK_SELECTIVE_COPY)
        lua_pushfstring(L, "pf.task %s{vocab = %d, seq = %d, tokens = %d}", t->task->name,
                        t->task->vocab, t->task->seq, t->task->tokens);
    else
        lua_pushfstring(L, "pf.task %s{vocab = %d, seq = %d}", t->task->name, t->task->vocab, t->task->seq);
    return 1;
}

static const luaL_Reg task_methods[] = {
    {"batch", task_batch}, {"seed", task_seed}, {"close", task_gc}, {NULL, NULL},
};

static const luaL_Reg task_meta[] = {
    {"__gc", task_gc}, {"__close", task_gc}, {"__tostring", task_tostring}, {NULL, NULL},
};

void pfl_task_open(lua_State *L)
{
    luaL_newmetatable(L, PFL_TASK);
    luaL_setfuncs(L, task_meta, 0);
    luaL_newlib(L, task_methods);
    lua_pushcclosure(L, task_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    luaL_newmetatable(L, PFL_RNG);
    lua_pushcfunction(L, rng_tostring);
    lua_setfield(L, -2, "__tostring");
    luaL_newlib(L, rng_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_newtable(L);
    struct { const char *name; lua_CFunction f; int which; } ctors[] = {
        {"copy", task_new_plain, 0},        {"induction", task_new_plain, 1},
        {"selective_copy", task_new_counted, 0}, {"mqar", task_new_counted, 1},
        {"text", task_new_text, 0},
    };
    for (size_t i = 0; i < sizeof ctors / sizeof ctors[0]; i++) {
        lua_pushinteger(L, ctors[i].which);
        lua_pushcclosure(L, ctors[i].f, 1);
        lua_setfield(L, -2, ctors[i].name);
    }
    lua_setfield(L, -2, "tasks");
    lua_pushcfunction(L, rng_new);
    lua_setfield(L, -2, "rng");
}
