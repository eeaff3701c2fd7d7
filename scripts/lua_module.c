/* The C half of the `postformer` Lua module: luaopen_postformer.
 *
 * Classes: pf.layerspec (what pf.<kind>{...} returns: a layer kind and its validated options),
 * pf.model (a built model; methods forward, step, reset, params, ...; fields in its user value:
 * layers, vocab, dim, device, seed, norm, tie), pf.layer (m.layers[i]: a view of block i that keeps
 * its model alive). Tensors are in lua_tensor.c, tasks and pf.rng in lua_task.c. The Lua half
 * (scripts/postformer.lua, embedded by scripts/postformer_lua.S) is run last with the module table
 * and the classes' method tables, and adds what is natural in Lua: pf.model's wrapper with
 * pf.repeat, m:train, m:eval, m:generate, m:describe.
 *
 * Token ids are 0-based (0 .. vocab-1) as in the engine; tensor indices are 1-based as in Lua. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/layer.h"
#include "engine/model.h"
#include "scripts/lua_module.h"

#ifndef PF_VERSION
#define PF_VERSION "0.0.0"
#endif

/* scripts/postformer.lua, embedded by scripts/postformer_lua.S */
extern const char     pf_lua_source[];
extern const uint64_t pf_lua_source_len;
/* scripts/checkpoint.lua, embedded by scripts/checkpoint_lua.S */
extern const char     pf_lua_checkpoint[];
extern const uint64_t pf_lua_checkpoint_len;

int pfl_engine_error(lua_State *L)
{
    const char *msg = pf_error_message();
    return luaL_error(L, "%s", msg && *msg ? msg : "engine error (no message)");
}

/* ---- layer specs: pf.<kind>{options} --------------------------------------------------------- */

typedef struct pfl_spec {
    const pf_layer_kind *kind;
    pf_config            cfg;
} pfl_spec;

static pfl_spec *spec_check(lua_State *L, int arg) { return luaL_checkudata(L, arg, PFL_LAYERSPEC); }

/* push a table option name -> value ("auto", a choice's word, a boolean or a number) */
static void push_options(lua_State *L, const pf_config *cfg)
{
    lua_createtable(L, 0, cfg->n_options);
    for (int i = 0; i < cfg->n_options; i++) {
        const pf_option *o = &cfg->options[i];
        double v = cfg->value[i];
        char word[64];
        switch (o->type) {
        case PF_OPT_BOOL:
            lua_pushboolean(L, v != 0);
            break;
        case PF_OPT_CHOICE:
            lua_pushstring(L, pf_config_choice(cfg, o->name, word, sizeof word));
            break;
        case PF_OPT_INT_AUTO:
            if (v == 0) {
                lua_pushliteral(L, "auto");
                break;
            }
            /* fallthrough */
        case PF_OPT_INT:
            lua_pushinteger(L, (lua_Integer)v);
            break;
        case PF_OPT_NUMBER:
            lua_pushnumber(L, v);
            break;
        }
        lua_setfield(L, -2, o->name);
    }
}

/* pf.<kind>{...}: upvalue 1 is the kind (light userdata) */
static int spec_new(lua_State *L)
{
    const pf_layer_kind *kind = lua_touserdata(L, lua_upvalueindex(1));
    char what[64];
    snprintf(what, sizeof what, "pf.%s", kind->name);
    if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    pfl_spec *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    s->kind = kind;
    pf_config_init(&s->cfg, kind->options, kind->n_options);
    luaL_setmetatable(L, PFL_LAYERSPEC);
    if (lua_isnoneornil(L, 1)) return 1;
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            return luaL_error(L, "%s: options are named (name = value), got a %s key", what,
                              luaL_typename(L, -2));
        const char *name = lua_tostring(L, -2);
        int rc;
        switch (lua_type(L, -1)) {
        case LUA_TNUMBER:
            rc = pf_config_set_number(&s->cfg, what, name, lua_tonumber(L, -1));
            break;
        case LUA_TBOOLEAN:
            rc = pf_config_set_bool(&s->cfg, what, name, lua_toboolean(L, -1));
            break;
        case LUA_TSTRING:
            rc = pf_config_set_string(&s->cfg, what, name, lua_tostring(L, -1));
            break;
        default:
            return luaL_error(L, "%s: option '%s' must be a number, a boolean or a string, got a %s",
                              what, name, luaL_typename(L, -1));
        }
        if (rc < 0) return pfl_engine_error(L);
        lua_pop(L, 1);
    }
    return 1;
}

static int spec_options(lua_State *L)
{
    push_options(L, &spec_check(L, 1)->cfg);
    return 1;
}

/* "pf.mlp{hidden = \"auto\", act = \"swiglu\"}": every option, in the kind's order */
static int spec_tostring(lua_State *L)
{
    pfl_spec *s = spec_check(L, 1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "pf.");
    luaL_addstring(&b, s->kind->name);
    luaL_addchar(&b, '{');
    for (int i = 0; i < s->cfg.n_options; i++) {
        const pf_option *o = &s->cfg.options[i];
        double v = s->cfg.value[i];
        char item[128], word[64];
        if (o->type == PF_OPT_BOOL) snprintf(item, sizeof item, "%s = %s", o->name, v != 0 ? "true" : "false");
        else if (o->type == PF_OPT_CHOICE)
            snprintf(item, sizeof item, "%s = \"%s\"", o->name, pf_config_choice(&s->cfg, o->name, word, sizeof word));
        else if (o->type == PF_OPT_INT_AUTO && v == 0) snprintf(item, sizeof item, "%s = \"auto\"", o->name);
        else snprintf(item, sizeof item, "%s = %.10g", o->name, v);
        if (i) luaL_addstring(&b, ", ");
        luaL_addstring(&b, item);
    }
    luaL_addchar(&b, '}');
    luaL_pushresult(&b);
    return 1;
}

static int spec_index(lua_State *L)
{
    pfl_spec *s = spec_check(L, 1);
    const char *key = lua_tostring(L, 2);
    if (key && strcmp(key, "kind") == 0) lua_pushstring(L, s->kind->name);
    else {
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(1));
    }
    return 1;
}

/* spec:given() -> only the options given explicitly (what rebuilds the same layer: a checkpoint's
 * config), as spec:options() writes them */
static int spec_given(lua_State *L)
{
    pfl_spec *s = spec_check(L, 1);
    push_options(L, &s->cfg);
    for (int i = 0; i < s->cfg.n_options; i++)
        if (!(s->cfg.set_mask & (1u << i))) {
            lua_pushnil(L);
            lua_setfield(L, -2, s->cfg.options[i].name);
        }
    return 1;
}

static const luaL_Reg spec_methods[] = {{"options", spec_options}, {"given", spec_given}, {NULL, NULL}};

/* pf.layer_kinds(): {name, summary, options = {{name, type, default, min, max, choices, help}},
 * probes = {{name, shape, refresh, help}}} for every registered kind */
static int layer_kinds(lua_State *L)
{
    static const char *const types[] = {"int", "number", "bool", "choice", "int|auto"};
    static const char *const refresh[] = {"step", "forward", "train"};
    lua_newtable(L);
    for (int k = 0; pf_layer_kinds[k]; k++) {
        const pf_layer_kind *kind = pf_layer_kinds[k];
        lua_createtable(L, 0, 4);
        lua_pushstring(L, kind->name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, kind->summary ? kind->summary : "");
        lua_setfield(L, -2, "summary");
        lua_createtable(L, kind->n_options, 0);
        for (int i = 0; i < kind->n_options; i++) {
            const pf_option *o = &kind->options[i];
            lua_createtable(L, 0, 7);
            lua_pushstring(L, o->name);
            lua_setfield(L, -2, "name");
            lua_pushstring(L, types[o->type]);
            lua_setfield(L, -2, "type");
            lua_pushnumber(L, o->def);
            lua_setfield(L, -2, "default");
            lua_pushnumber(L, o->min);
            lua_setfield(L, -2, "min");
            lua_pushnumber(L, o->max);
            lua_setfield(L, -2, "max");
            if (o->choices) {
                lua_pushstring(L, o->choices);
                lua_setfield(L, -2, "choices");
            }
            lua_pushstring(L, o->help ? o->help : "");
            lua_setfield(L, -2, "help");
            lua_rawseti(L, -2, i + 1);
        }
        lua_setfield(L, -2, "options");
        lua_createtable(L, kind->n_probes, 0);
        for (int i = 0; i < kind->n_probes; i++) {
            const pf_probe_info *p = &kind->probes[i];
            lua_createtable(L, 0, 4);
            lua_pushstring(L, p->name);
            lua_setfield(L, -2, "name");
            lua_pushstring(L, p->shape ? p->shape : "");
            lua_setfield(L, -2, "shape");
            lua_pushstring(L, refresh[p->refresh]);
            lua_setfield(L, -2, "refresh");
            lua_pushstring(L, p->help ? p->help : "");
            lua_setfield(L, -2, "help");
            lua_rawseti(L, -2, i + 1);
        }
        lua_setfield(L, -2, "probes");
        lua_rawseti(L, -2, k + 1);
    }
    return 1;
}

/* ---- models ----------------------------------------------------------------------------------- */

typedef struct pfl_model {
    pf_model *m;            /* NULL once closed */
} pfl_model;

static pf_model *model_check(lua_State *L, int arg)
{
    pfl_model *box = luaL_checkudata(L, arg, PFL_MODEL);
    luaL_argcheck(L, box->m != NULL, arg, "model is closed");
    return box->m;
}

pf_model *pfl_model_check(lua_State *L, int arg) { return model_check(L, arg); }

static int model_gc(lua_State *L)
{
    pfl_model *box = luaL_checkudata(L, 1, PFL_MODEL);
    pf_model_free(box->m);
    box->m = NULL;
    return 0;
}

/* set field `name` of the table at -1 to the value at the top */
static void set_field(lua_State *L, const char *name) { lua_setfield(L, -2, name); }

/* a view of block `index` (0-based) of the model at model_idx */
typedef struct pfl_layer {
    pfl_model *owner;       /* kept alive by the user value */
    int        index;
} pfl_layer;

/* _model_new(opts, specs, shares): opts {vocab, dim, seed, device, norm, tie, norm_eps} (the Lua
 * half fills defaults and flattens pf.repeat); specs[i] a layerspec; shares[i] 0 or the 1-based
 * block whose weights block i uses. */
static int model_new(lua_State *L)
{
    static const char *const valid[] = {"vocab", "dim", "seed", "device", "layers", "norm", "tie",
                                        "norm_eps", NULL};
    const char *what = "pf.model";
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    pfl_check_keys(L, 1, what, valid);

    pf_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.vocab = (int)pfl_opt_integer(L, 1, what, "vocab", -1, 1, 1 << 24);
    cfg.dim = (int)pfl_opt_integer(L, 1, what, "dim", -1, 1, 1 << 16);
    cfg.seed = (uint64_t)pfl_opt_integer(L, 1, what, "seed", 1, 0, LUA_MAXINTEGER);
    lua_getfield(L, 1, "norm");
    const char *norm = lua_isnil(L, -1) ? "rms" : lua_tostring(L, -1);
    if (!norm || (strcmp(norm, "rms") != 0 && strcmp(norm, "layer") != 0))
        return luaL_error(L, "%s: option 'norm' must be \"rms\" or \"layer\", got %s", what,
                          luaL_tolstring(L, -1, NULL));
    cfg.norm = strcmp(norm, "rms") == 0 ? PF_NORM_RMS : PF_NORM_LAYER;
    lua_getfield(L, 1, "tie");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
        return luaL_error(L, "%s: option 'tie' must be true or false, got %s", what, luaL_tolstring(L, -1, NULL));
    cfg.tie_embeddings = lua_toboolean(L, -1);
    lua_getfield(L, 1, "norm_eps");
    int ok = 1;
    cfg.norm_eps = lua_isnil(L, -1) ? 1e-5f : (float)lua_tonumberx(L, -1, &ok);
    if (!ok || !(cfg.norm_eps > 0 && cfg.norm_eps < 1))
        return luaL_error(L, "%s: option 'norm_eps' must be a number in (0, 1), got %s", what,
                          luaL_tolstring(L, -1, NULL));
    lua_getfield(L, 1, "device");
    const char *device = lua_isnil(L, -1) ? "cpu" : lua_tostring(L, -1);
    if (!device)
        return luaL_error(L, "%s: option 'device' must be a device name (see pf.devices()), got %s", what,
                          luaL_tolstring(L, -1, NULL));
    cfg.be = pf_device(device);
    if (!cfg.be) return pfl_engine_error(L);
    lua_settop(L, 3);

    int n = (int)lua_rawlen(L, 2);
    if (n < 1) return luaL_error(L, "%s: option 'layers' must list at least one layer", what);

    /* the handle first, empty; then the engine fills it */
    pfl_model *box = lua_newuserdatauv(L, sizeof *box, 1);      /* 4 */
    box->m = NULL;
    luaL_setmetatable(L, PFL_MODEL);
    box->m = pf_model_new(&cfg);
    if (!box->m) return pfl_engine_error(L);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, i);
        pfl_spec *s = luaL_testudata(L, -1, PFL_LAYERSPEC);
        if (!s)
            return luaL_error(L, "%s: layers[%d] is a %s, not a layer (make one with pf.<kind>{...})",
                              what, i, luaL_typename(L, -1));
        lua_rawgeti(L, 3, i);
        int share = (int)lua_tointeger(L, -1) - 1;
        if (pf_model_add_layer(box->m, s->kind, &s->cfg, share) < 0) return pfl_engine_error(L);
        lua_pop(L, 2);
    }
    if (pf_model_build(box->m) < 0) return pfl_engine_error(L);

    /* fields: the layers and what the model was made with */
    lua_createtable(L, 0, 8);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        pfl_layer *h = lua_newuserdatauv(L, sizeof *h, 1);
        h->owner = box;
        h->index = i;
        lua_pushvalue(L, 4);
        lua_setiuservalue(L, -2, 1);
        luaL_setmetatable(L, PFL_LAYER);
        lua_rawseti(L, -2, i + 1);
    }
    set_field(L, "layers");
    lua_pushinteger(L, cfg.vocab);
    set_field(L, "vocab");
    lua_pushinteger(L, cfg.dim);
    set_field(L, "dim");
    lua_pushinteger(L, (lua_Integer)cfg.seed);
    set_field(L, "seed");
    lua_pushstring(L, cfg.be->name);
    set_field(L, "device");
    lua_pushstring(L, norm);
    set_field(L, "norm");
    lua_pushboolean(L, cfg.tie_embeddings);
    set_field(L, "tie");
    lua_pushnumber(L, cfg.norm_eps);
    set_field(L, "norm_eps");
    /* what made it, for m:save: the flat layer specs and their sharing */
    lua_pushvalue(L, 2);
    set_field(L, "_specs");
    lua_pushvalue(L, 3);
    set_field(L, "_shares");
    lua_setiuservalue(L, 4, 1);
    return 1;
}

/* fields (user value) first, then methods (upvalue 1), so m.layers and m:forward both work */
static int model_index(lua_State *L)
{
    luaL_checkudata(L, 1, PFL_MODEL);
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (!lua_isnil(L, -1)) return 1;
    lua_getiuservalue(L, 1, 1);
    if (!lua_istable(L, -1)) return 0;
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static int model_tostring(lua_State *L)
{
    pfl_model *box = luaL_checkudata(L, 1, PFL_MODEL);
    if (!box->m) {
        lua_pushliteral(L, "pf.model (closed)");
        return 1;
    }
    const pf_model_config *c = pf_model_config_of(box->m);
    lua_pushfstring(L, "pf.model{vocab = %d, dim = %d, %d blocks, %I params, %s}", c->vocab, c->dim,
                    pf_model_n_layers(box->m), (LUAI_UACINT)pf_model_n_params(box->m), c->be->name);
    return 1;
}

/* a token id at the top of the stack, checked against the vocabulary; arg for the message */
static int32_t check_token(lua_State *L, int arg, int vocab, const char *where)
{
    int isint = 0;
    lua_Integer t = lua_tointegerx(L, -1, &isint);
    if (!isint) {
        const char *got = luaL_tolstring(L, -1, NULL);
        luaL_argerror(L, arg, lua_pushfstring(L, "token%s %s is not an integer id", where, got));
    }
    if (t < 0 || t >= vocab)
        luaL_argerror(L, arg, lua_pushfstring(L, "token%s %I is out of range for vocab %d (ids 0..%d)",
                                              where, (LUAI_UACINT)t, vocab, vocab - 1));
    return (int32_t)t;
}

/* m:forward{ids} -> [T, V]; m:forward{{ids}, {ids}} -> [B, T, V] */
static int model_forward(lua_State *L)
{
    pf_model *m = model_check(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int V = pf_model_config_of(m)->vocab;
    lua_rawgeti(L, 2, 1);
    int batched = lua_istable(L, -1);
    int B = batched ? (int)lua_rawlen(L, 2) : 1;
    int T = batched ? (int)lua_rawlen(L, -1) : (int)lua_rawlen(L, 2);
    lua_pop(L, 1);
    luaL_argcheck(L, B >= 1 && T >= 1, 2, "no tokens (expected {ids} or {{ids}, ...})");
    luaL_argcheck(L, (size_t)B * T <= (1u << 24), 2, "too many tokens");
    int32_t *tokens = lua_newuserdatauv(L, (size_t)B * T * sizeof(int32_t), 0);
    for (int b = 0; b < B; b++) {
        if (batched) {
            lua_rawgeti(L, 2, b + 1);
            if (!lua_istable(L, -1) || (int)lua_rawlen(L, -1) != T)
                return luaL_argerror(L, 2, lua_pushfstring(L, "sequence %d must be a table of %d tokens like the first",
                                                           b + 1, T));
        } else {
            lua_pushvalue(L, 2);
        }
        for (int t = 0; t < T; t++) {
            char where[48];
            if (batched) snprintf(where, sizeof where, " [%d][%d]", b + 1, t + 1);
            else snprintf(where, sizeof where, " [%d]", t + 1);
            lua_rawgeti(L, -1, t + 1);
            tokens[(size_t)b * T + t] = check_token(L, 2, V, where);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    pf_tensor **slot = pfl_tensor_push(L);
    if (pf_model_forward(m, tokens, B, T, slot) < 0) return pfl_engine_error(L);
    if (!batched) {             /* (1, T, V) -> (T, V) */
        pf_tensor *t = *slot;
        t->ndim = 2;
        t->shape[0] = T;
        t->shape[1] = V;
    }
    return 1;
}

/* m:step(id) -> [V] */
static int model_step(lua_State *L)
{
    pf_model *m = model_check(L, 1);
    luaL_checkany(L, 2);
    lua_pushvalue(L, 2);
    int32_t token = check_token(L, 2, pf_model_config_of(m)->vocab, "");
    pf_tensor **slot = pfl_tensor_push(L);
    if (pf_model_step(m, token, slot) < 0) return pfl_engine_error(L);
    return 1;
}

static int model_reset(lua_State *L)
{
    pf_model_reset(model_check(L, 1));
    lua_settop(L, 1);
    return 1;
}

static int model_params(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)pf_model_n_params(model_check(L, 1)));
    return 1;
}

static int model_position(lua_State *L)
{
    lua_pushinteger(L, pf_model_position(model_check(L, 1)));
    return 1;
}

static int model_steps_taken(lua_State *L)
{
    lua_pushinteger(L, pf_model_steps_taken(model_check(L, 1)));
    return 1;
}

/* push what describe shows about block i (0-based) */
static void push_block_info(lua_State *L, pf_model *m, int i)
{
    pf_block_info bi;
    pf_model_block_info(m, i, &bi);
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, i + 1);
    set_field(L, "index");
    lua_pushstring(L, bi.kind->name);
    set_field(L, "kind");
    lua_pushinteger(L, (lua_Integer)bi.params);
    set_field(L, "params");
    if (bi.share_with >= 0) {
        lua_pushinteger(L, bi.share_with + 1);
        set_field(L, "shares");
    }
    lua_pushnumber(L, bi.info.flops_per_token);
    set_field(L, "flops_per_token");
    lua_pushnumber(L, bi.info.state_bytes);
    set_field(L, "state_bytes");
    lua_pushboolean(L, bi.info.constant_state);
    set_field(L, "constant_state");
    lua_pushnumber(L, bi.step_seconds);
    set_field(L, "step_seconds");
}

/* m:blocks() -> {{index, kind, params, shares?, flops_per_token, state_bytes, constant_state,
 *                step_seconds}} */
static int model_blocks(lua_State *L)
{
    pf_model *m = model_check(L, 1);
    int n = pf_model_n_layers(m);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        push_block_info(L, m, i);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* a number field of the table at idx, def when absent */
static double opt_number(lua_State *L, int idx, const char *name, double def)
{
    lua_getfield(L, idx, name);
    int ok = 1;
    double v = lua_isnil(L, -1) ? def : lua_tonumberx(L, -1, &ok);
    if (!ok) luaL_error(L, "m:train: option '%s' must be a number, got %s", name, luaL_tolstring(L, -1, NULL));
    lua_pop(L, 1);
    return v;
}

static void check_task_fits(lua_State *L, pf_model *m, const pfl_task *t)
{
    int V = pf_model_config_of(m)->vocab;
    if (t->task->vocab > V)
        luaL_error(L, "task %s needs vocab >= %d but the model has vocab %d", t->task->name, t->task->vocab, V);
}

/* m:_train_step(task, batch, cfg) -> {step, loss, acc, aux_loss, grad_norm, lr, tokens}
 * cfg: {lr, min_lr_ratio, warmup, total_steps, schedule_step, weight_decay, beta1, beta2, eps, clip} */
static int model_train_step(lua_State *L)
{
    pf_model *m = model_check(L, 1);
    pfl_task *t = pfl_task_check(L, 2);
    lua_Integer B = luaL_checkinteger(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    int T = t->task->seq;
    luaL_argcheck(L, B >= 1 && B <= (1 << 24) / T, 3, "batch size out of range");
    check_task_fits(L, m, t);
    pf_train_config tc;
    pf_train_config_default(&tc);
    tc.lr = (float)opt_number(L, 4, "lr", tc.lr);
    tc.min_lr_ratio = (float)opt_number(L, 4, "min_lr_ratio", tc.min_lr_ratio);
    tc.warmup = (int)opt_number(L, 4, "warmup", tc.warmup);
    tc.total_steps = (int)opt_number(L, 4, "total_steps", tc.total_steps);
    tc.schedule_step = (int)opt_number(L, 4, "schedule_step", tc.schedule_step);
    tc.weight_decay = (float)opt_number(L, 4, "weight_decay", tc.weight_decay);
    tc.beta1 = (float)opt_number(L, 4, "beta1", tc.beta1);
    tc.beta2 = (float)opt_number(L, 4, "beta2", tc.beta2);
    tc.eps = (float)opt_number(L, 4, "eps", tc.eps);
    tc.clip = (float)opt_number(L, 4, "clip", tc.clip);

    size_t cells = (size_t)B * (size_t)T;
    char *scratch = lua_newuserdatauv(L, cells * (2 * sizeof(int32_t) + sizeof(float)), 0);
    int32_t *inputs = (int32_t *)scratch, *targets = inputs + cells;
    float *mask = (float *)(targets + cells);
    if (pf_task_batch(t->task, &t->rng, (int)B, inputs, targets, mask) < 0) return pfl_engine_error(L);
    pf_train_stats st;
    memset(&st, 0, sizeof st);
    if (pf_model_train_step(m, inputs, targets, mask, (int)B, T, &tc, &st) < 0) return pfl_engine_error(L);

    lua_createtable(L, 0, 7);
    lua_pushinteger(L, st.step);
    set_field(L, "step");
    lua_pushnumber(L, st.loss);
    set_field(L, "loss");
    lua_pushnumber(L, st.accuracy);
    set_field(L, "acc");
    lua_pushnumber(L, st.aux_loss);
    set_field(L, "aux_loss");
    lua_pushnumber(L, st.grad_norm);
    set_field(L, "grad_norm");
    lua_pushnumber(L, st.lr);
    set_field(L, "lr");
    lua_pushinteger(L, st.tokens);
    set_field(L, "tokens");
    return 1;
}

/* m:_evaluate(task, n) -> accuracy, loss over n fresh sequences (in chunks), weighted by the mask */
static int model_evaluate(lua_State *L)
{
    enum { CHUNK = 32 };
    pf_model *m = model_check(L, 1);
    pfl_task *t = pfl_task_check(L, 2);
    lua_Integer n = luaL_optinteger(L, 3, 256);
    luaL_argcheck(L, n >= 1 && n <= (1 << 24), 3, "number of samples out of range");
    check_task_fits(L, m, t);
    int T = t->task->seq;
    size_t cells = (size_t)CHUNK * (size_t)T;
    char *scratch = lua_newuserdatauv(L, cells * (2 * sizeof(int32_t) + sizeof(float)), 0);
    int32_t *inputs = (int32_t *)scratch, *targets = inputs + cells;
    float *mask = (float *)(targets + cells);
    double acc_sum = 0, loss_sum = 0, weight = 0;
    for (lua_Integer done = 0; done < n; done += CHUNK) {
        int b = (int)(n - done < CHUNK ? n - done : CHUNK);
        if (pf_task_batch(t->task, &t->rng, b, inputs, targets, mask) < 0) return pfl_engine_error(L);
        double w = 0, loss = 0, acc = 0;
        for (size_t k = 0; k < (size_t)b * T; k++) w += mask[k];
        if (pf_model_evaluate(m, inputs, targets, mask, b, T, &loss, &acc) < 0) return pfl_engine_error(L);
        acc_sum += acc * w;
        loss_sum += loss * w;
        weight += w;
    }
    lua_pushnumber(L, weight > 0 ? acc_sum / weight : 0);
    lua_pushnumber(L, weight > 0 ? loss_sum / weight : 0);
    return 2;
}

/* ---- layer views: m.layers[i] ------------------------------------------------------------------ */

static pf_layer *layer_check(lua_State *L, int arg, pfl_layer **out)
{
    pfl_layer *h = luaL_checkudata(L, arg, PFL_LAYER);
    luaL_argcheck(L, h->owner->m != NULL, arg, "its model is closed");
    if (out) *out = h;
    return pf_model_layer(h->owner->m, h->index);
}

static int layer_probe(lua_State *L)
{
    pf_layer *l = layer_check(L, 1, NULL);
    const char *name = luaL_checkstring(L, 2);
    pf_tensor **slot = pfl_tensor_push(L);
    if (pf_layer_probe(l, name, slot) < 0) return pfl_engine_error(L);
    return 1;
}

/* l:probes() -> names; l:probes(true) -> {{name, shape, refresh, help}} */
static int layer_probes(lua_State *L)
{
    static const char *const refresh[] = {"step", "forward", "train"};
    pf_layer *l = layer_check(L, 1, NULL);
    int full = lua_toboolean(L, 2);
    lua_createtable(L, l->kind->n_probes, 0);
    for (int i = 0; i < l->kind->n_probes; i++) {
        const pf_probe_info *p = &l->kind->probes[i];
        if (!full) {
            lua_pushstring(L, p->name);
        } else {
            lua_createtable(L, 0, 4);
            lua_pushstring(L, p->name);
            set_field(L, "name");
            lua_pushstring(L, p->shape ? p->shape : "");
            set_field(L, "shape");
            lua_pushstring(L, refresh[p->refresh]);
            set_field(L, "refresh");
            lua_pushstring(L, p->help ? p->help : "");
            set_field(L, "help");
        }
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int layer_options(lua_State *L)
{
    push_options(L, &layer_check(L, 1, NULL)->cfg);
    return 1;
}

/* l:info() -> what describe shows for this block */
static int layer_info(lua_State *L)
{
    pfl_layer *h;
    layer_check(L, 1, &h);
    push_block_info(L, h->owner->m, h->index);
    return 1;
}

/* fields kind and index, then methods (upvalue 1); methods can be looked up on a closed model's
 * layer (calling them says it is closed) */
static int layer_index(lua_State *L)
{
    pfl_layer *h = luaL_checkudata(L, 1, PFL_LAYER);
    const char *key = lua_tostring(L, 2);
    if (key && strcmp(key, "kind") == 0) lua_pushstring(L, layer_check(L, 1, NULL)->kind->name);
    else if (key && strcmp(key, "index") == 0) lua_pushinteger(L, h->index + 1);
    else {
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(1));
    }
    return 1;
}

static int layer_tostring(lua_State *L)
{
    pfl_layer *h = luaL_checkudata(L, 1, PFL_LAYER);
    if (!h->owner->m) {
        lua_pushliteral(L, "pf.layer (model closed)");
        return 1;
    }
    pf_layer *l = pf_model_layer(h->owner->m, h->index);
    lua_pushfstring(L, "pf.layer %d: %s", h->index + 1, l->kind->name);
    return 1;
}

static const luaL_Reg layer_methods[] = {
    {"probe", layer_probe}, {"probes", layer_probes}, {"options", layer_options},
    {"info", layer_info},   {NULL, NULL},
};

static const luaL_Reg model_methods[] = {
    {"forward", model_forward},
    {"step", model_step},
    {"reset", model_reset},
    {"params", model_params},
    {"position", model_position},
    {"steps_taken", model_steps_taken},
    {"blocks", model_blocks},
    {"close", model_gc},
    {"_train_step", model_train_step},
    {"_evaluate", model_evaluate},
    {NULL, NULL},
};

/* ---- module functions -------------------------------------------------------------------------- */

static int devices(lua_State *L)
{
    const char *names[8];
    int n = pf_devices(names, 8);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* pf.seed(n): the default seed of models and tasks made without one; pf.seed() reads it */
static int seed(lua_State *L)
{
    if (!lua_isnoneornil(L, 1)) {
        lua_Integer s = luaL_checkinteger(L, 1);
        luaL_argcheck(L, s >= 0, 1, "a seed is an integer >= 0");
        lua_pushinteger(L, s);
        lua_setfield(L, LUA_REGISTRYINDEX, "postformer.seed");
    }
    lua_getfield(L, LUA_REGISTRYINDEX, "postformer.seed");
    return 1;
}

/* pf.clock(): seconds on a monotonic clock (wall time, unlike os.clock) */
static int clock_seconds(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec);
    return 1;
}

static int stdout_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty(STDOUT_FILENO));
    return 1;
}

/* internal.train_defaults(): the engine's defaults (pf_train_config_default) as a table */
static int train_defaults(lua_State *L)
{
    pf_train_config c;
    pf_train_config_default(&c);
    lua_createtable(L, 0, 9);
    lua_pushnumber(L, c.lr);
    set_field(L, "lr");
    lua_pushnumber(L, c.min_lr_ratio);
    set_field(L, "min_lr_ratio");
    lua_pushinteger(L, c.warmup);
    set_field(L, "warmup");
    lua_pushnumber(L, c.weight_decay);
    set_field(L, "weight_decay");
    lua_pushnumber(L, c.beta1);
    set_field(L, "beta1");
    lua_pushnumber(L, c.beta2);
    set_field(L, "beta2");
    lua_pushnumber(L, c.eps);
    set_field(L, "eps");
    lua_pushnumber(L, c.clip);
    set_field(L, "clip");
    return 1;
}

static const luaL_Reg module_funcs[] = {
    {"devices", devices},         {"seed", seed},       {"clock", clock_seconds},
    {"layer_kinds", layer_kinds}, {NULL, NULL},
};

/* register a class: metatable `name` with meta functions, and methods behind index (a closure over
 * the method table); the method table is also left in internal[key] and the metatable in
 * internal[key .. "_mt"] for the Lua half */
static void open_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods,
                       lua_CFunction index, int internal, const char *key)
{
    luaL_newmetatable(L, name);
    luaL_setfuncs(L, meta, 0);
    char mt_key[64];
    snprintf(mt_key, sizeof mt_key, "%s_mt", key);
    lua_pushvalue(L, -1);
    lua_setfield(L, internal, mt_key);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, internal, key);
    lua_pushcclosure(L, index, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

int luaopen_postformer(lua_State *L)
{
    static const luaL_Reg spec_meta[] = {{"__tostring", spec_tostring}, {NULL, NULL}};
    static const luaL_Reg model_meta[] = {
        {"__gc", model_gc}, {"__close", model_gc}, {"__tostring", model_tostring}, {NULL, NULL}};
    static const luaL_Reg layer_meta[] = {{"__tostring", layer_tostring}, {NULL, NULL}};

    lua_getfield(L, LUA_REGISTRYINDEX, "postformer.seed");
    if (lua_isnil(L, -1)) {
        lua_pushinteger(L, 1);
        lua_setfield(L, LUA_REGISTRYINDEX, "postformer.seed");
    }
    lua_pop(L, 1);

    lua_newtable(L);                                   /* internal: what only the Lua half sees */
    int internal = lua_gettop(L);
    open_class(L, PFL_LAYERSPEC, spec_meta, spec_methods, spec_index, internal, "layerspec");
    open_class(L, PFL_MODEL, model_meta, model_methods, model_index, internal, "model");
    open_class(L, PFL_LAYER, layer_meta, layer_methods, layer_index, internal, "layer");
    lua_pushcfunction(L, model_new);
    lua_setfield(L, internal, "model_new");
    lua_pushcfunction(L, train_defaults);
    lua_setfield(L, internal, "train_defaults");
    lua_pushcfunction(L, stdout_isatty);
    lua_setfield(L, internal, "isatty");

    luaL_newlib(L, module_funcs);
    pfl_tensor_open(L);
    pfl_task_open(L);
    pfl_png_open(L);
    lua_pushliteral(L, PF_VERSION);
    lua_setfield(L, -2, "version");
    /* one constructor per registered layer kind */
    for (int k = 0; pf_layer_kinds[k]; k++) {
        lua_pushlightuserdata(L, (void *)(uintptr_t)pf_layer_kinds[k]);
        lua_pushcclosure(L, spec_new, 1);
        lua_setfield(L, -2, pf_layer_kinds[k]->name);
    }
    luaL_getmetatable(L, PFL_TASK);
    lua_setfield(L, internal, "task_mt");
    luaL_getmetatable(L, PFL_TENSOR);
    lua_getfield(L, -1, "__index");
    lua_getupvalue(L, -1, 1);
    lua_setfield(L, internal, "tensor");
    lua_pop(L, 2);

    /* the Lua half: called with (module, internal), returns the module */
    if (luaL_loadbuffer(L, pf_lua_source, (size_t)pf_lua_source_len, "@postformer.lua") != LUA_OK)
        return lua_error(L);
    lua_pushvalue(L, -2);
    lua_pushvalue(L, internal);
    lua_call(L, 2, 1);
    /* checkpoints, pf.load_hf and tokenizers: the C part, then the Lua part with (module, internal) */
    pfl_checkpoint_open(L, internal);
    if (luaL_loadbuffer(L, pf_lua_checkpoint, (size_t)pf_lua_checkpoint_len, "@checkpoint.lua") != LUA_OK)
        return lua_error(L);
    lua_pushvalue(L, -2);
    lua_pushvalue(L, internal);
    lua_call(L, 2, 0);
    return 1;
}
