/* pf.tensor: the Lua face of a host pf_tensor (probes, logits).
 *
 * Indexing is 1-based like Lua: t[i] is a number for a 1-d tensor and a copy of row i (one dimension
 * less) otherwise; #t is the first dimension. t:argmax() is a 1-based flat index. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "engine/error.h"
#include "scripts/lua_module.h"

/* ---- handle ------------------------------------------------------------------------------------ */

pf_tensor **pfl_tensor_push(lua_State *L)
{
    pf_tensor **slot = lua_newuserdatauv(L, sizeof *slot, 0);
    *slot = NULL;
    luaL_setmetatable(L, PFL_TENSOR);
    return slot;
}

pf_tensor *pfl_tensor_check(lua_State *L, int arg)
{
    pf_tensor **slot = luaL_checkudata(L, arg, PFL_TENSOR);
    luaL_argcheck(L, *slot != NULL, arg, "tensor is closed");
    return *slot;
}

static int tensor_gc(lua_State *L)
{
    pf_tensor **slot = luaL_checkudata(L, 1, PFL_TENSOR);
    pf_tensor_free(*slot);
    *slot = NULL;
    return 0;
}

/* ---- reading ----------------------------------------------------------------------------------- */

static int tensor_shape(lua_State *L)
{
    pf_tensor *t = pfl_tensor_check(L, 1);
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int tensor_numel(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)pf_tensor_numel(pfl_tensor_check(L, 1)));
    return 1;
}

static int tensor_len(lua_State *L)
{
    lua_pushinteger(L, pfl_tensor_check(L, 1)->shape[0]);
    return 1;
}

/* nested tables of the dimensions from d on, starting at data */
static void push_table(lua_State *L, const pf_tensor *t, int d, const float *data)
{
    luaL_checkstack(L, 2, "tensor too deep");
    int ndim = t->ndim < PF_MAX_DIMS ? t->ndim : PF_MAX_DIMS; /* (the bound, said to the compiler) */
    int n = t->shape[d];
    lua_createtable(L, n, 0);
    size_t stride = 1;
    for (int k = d + 1; k < ndim; k++) stride *= (size_t)t->shape[k];
    for (int i = 0; i < n; i++) {
        if (d == ndim - 1) lua_pushnumber(L, data[i]);
        else push_table(L, t, d + 1, data + (size_t)i * stride);
        lua_rawseti(L, -2, i + 1);
    }
}

static int tensor_totable(lua_State *L)
{
    pf_tensor *t = pfl_tensor_check(L, 1);
    push_table(L, t, 0, t->data);
    return 1;
}

static int tensor_min(lua_State *L)
{
    pf_tensor *t = pfl_tensor_check(L, 1);
    size_t n = pf_tensor_numel(t);
    float v = t->data[0];
    for (size_t i = 1; i < n; i++) v = t->data[i] < v ? t->data[i] : v;
    lua_pushnumber(L, v);
    return 1;
}

static int tensor_max(lua_State *L)
{
    pf_tensor *t = pfl_tensor_check(L, 1);
    size_t n = pf_tensor_numel(t);
    float v = t->data[0];
    for (size_t i = 1; i < n; i++) v = t->data[i] > v ? t->data[i] : v;
    lua_pushnumber(L, v);
    return 1;
}

static int tensor_sum(lua_State *L)
{
    pf_tensor *t = pfl_tensor_check(L, 1);
    size_t n = pf_tensor_numel(t);
    double s = 0;
    for (size_t i = 0; i < n; i++) s += t->data[i];
    lua_pushnumber(L, s);
    return 1;
}

static int tensor_mean(lua_State *L)
{
    pf_tensor *t = pfl_tensor_check(L, 1);
    size_t n = pf_tensor_numel(t);
    double s = 0;
    for (size_t i = 0; i < n; i++) s += t->data[i];
    lua_pushnumber(L, s / (double)n);
    return 1;
}

/* the 2-norm of all elements (Frobenius for matrices) */
static int tensor_norm(lua_State *L)
{
    pf_tensor *t = pfl_tensor_check(L, 1);
    size_t n = pf_tensor_numel(t);
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)t->data[i] * t->data[i];
    lua_pushnumber(L, sqrt(s));
    return 1;
}

/* 1-based flat index of the largest element (the first one on ties) */
static int tensor_argmax(lua_State *L)
{
    pf_tensor *t = pfl_tensor_check(L, 1);
    size_t n = pf_tensor_numel(t), best = 0;
    for (size_t i = 1; i < n; i++)
        if (t->data[i] > t->data[best]) best = i;
    lua_pushinteger(L, (lua_Integer)best + 1);
    return 1;
}

/* t[i]: a number (1-d) or a copy of row i; other keys look up methods (upvalue 1) */
static int tensor_index(lua_State *L)
{
    pf_tensor *t = pfl_tensor_check(L, 1);
    int isint = 0;
    lua_Integer i = lua_type(L, 2) == LUA_TNUMBER ? lua_tointegerx(L, 2, &isint) : 0;
    if (!isint) {
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(1));
        return 1;
    }
    if (i < 1 || i > t->shape[0])
        return luaL_error(L, "tensor index %I out of range [1, %d]", (LUAI_UACINT)i, t->shape[0]);
    if (t->ndim == 1) {
        lua_pushnumber(L, t->data[i - 1]);
        return 1;
    }
    pf_tensor **slot = pfl_tensor_push(L);
    *slot = pf_tensor_new(t->ndim - 1, t->shape + 1);
    if (!*slot) return pfl_engine_error(L);
    size_t row = pf_tensor_numel(*slot);
    memcpy((*slot)->data, t->data + (size_t)(i - 1) * row, row * sizeof(float));
    return 1;
}

/* ---- printing ---------------------------------------------------------------------------------- */

enum { SHOW_EDGE = 3, SHOW_MAX = 8 };

static void add_number(luaL_Buffer *b, float v)
{
    char s[32];
    snprintf(s, sizeof s, " %9.4g", (double)v);
    luaL_addstring(b, s);
}

/* one row of n values: all of them, or the first and last SHOW_EDGE around "..." */
static void add_row(luaL_Buffer *b, const float *row, int n)
{
    for (int j = 0; j < n; j++) {
        if (n > SHOW_MAX && j == SHOW_EDGE) {
            luaL_addstring(b, "       ...");
            j = n - SHOW_EDGE - 1;
            continue;
        }
        add_number(b, row[j]);
    }
}

/* "pf.tensor [2, 64]" then the values, rows elided like columns; leading dims are flattened */
static int tensor_tostring(lua_State *L)
{
    pf_tensor **slot = luaL_checkudata(L, 1, PFL_TENSOR);
    pf_tensor *t = *slot;
    if (!t) {
        lua_pushliteral(L, "pf.tensor (closed)");
        return 1;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "pf.tensor [");
    for (int i = 0; i < t->ndim; i++) {
        char s[24];
        snprintf(s, sizeof s, "%s%d", i ? ", " : "", t->shape[i]);
        luaL_addstring(&b, s);
    }
    luaL_addstring(&b, "]");
    int cols = t->shape[t->ndim - 1];
    int rows = (int)(pf_tensor_numel(t) / (size_t)cols);
    for (int r = 0; r < rows; r++) {
        if (rows > SHOW_MAX && r == SHOW_EDGE) {
            luaL_addstring(&b, "\n  ...");
            r = rows - SHOW_EDGE - 1;
            continue;
        }
        luaL_addstring(&b, "\n ");
        add_row(&b, t->data + (size_t)r * cols, cols);
    }
    luaL_pushresult(&b);
    return 1;
}

/* ---- construction from Lua ------------------------------------------------------------------- */

/* shape of a nested table by its first elements */
static int table_shape(lua_State *L, int idx, int *shape)
{
    int ndim = 0;
    lua_pushvalue(L, idx);
    while (lua_type(L, -1) == LUA_TTABLE) {
        if (ndim == PF_MAX_DIMS) luaL_error(L, "pf.tensor: more than %d dimensions", PF_MAX_DIMS);
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        if (n < 1 || n > 1 << 30) luaL_error(L, "pf.tensor: empty table at dimension %d", ndim + 1);
        shape[ndim++] = (int)n;
        lua_rawgeti(L, -1, 1);
        lua_remove(L, -2);
    }
    lua_pop(L, 1);
    return ndim;
}

/* copy the nested table at the top into data, checking it is rectangular and numeric */
static float *fill_from(lua_State *L, const int *shape, int ndim, int d, float *data)
{
    luaL_checkstack(L, 2, "table too deep");
    if (d >= ndim || d >= PF_MAX_DIMS) return data;
    if (lua_type(L, -1) != LUA_TTABLE || (int)lua_rawlen(L, -1) != shape[d])
        luaL_error(L, "pf.tensor: the table is not rectangular (dimension %d should have %d entries)",
                   d + 1, shape[d]);
    for (int i = 1; i <= shape[d]; i++) {
        lua_rawgeti(L, -1, i);
        if (d == ndim - 1) {
            int ok = 0;
            lua_Number v = lua_tonumberx(L, -1, &ok);
            if (!ok) luaL_error(L, "pf.tensor: entry %d at dimension %d is not a number", i, d + 1);
            *data++ = (float)v;
        } else {
            data = fill_from(L, shape, ndim, d + 1, data);
        }
        lua_pop(L, 1);
    }
    return data;
}

/* pf.tensor{{1, 2}, {3, 4}} */
static int tensor_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int shape[PF_MAX_DIMS];
    int ndim = table_shape(L, 1, shape);
    pf_tensor **slot = pfl_tensor_push(L);
    *slot = pf_tensor_new(ndim, shape);
    if (!*slot) return pfl_engine_error(L);
    lua_pushvalue(L, 1);
    fill_from(L, shape, ndim, 0, (*slot)->data);
    lua_pop(L, 1);
    return 1;
}

static const luaL_Reg tensor_methods[] = {
    {"shape", tensor_shape},   {"totable", tensor_totable}, {"numel", tensor_numel},
    {"min", tensor_min},       {"max", tensor_max},         {"sum", tensor_sum},
    {"mean", tensor_mean},     {"norm", tensor_norm},       {"argmax", tensor_argmax},
    {"close", tensor_gc},      {NULL, NULL},
};

static const luaL_Reg tensor_meta[] = {
    {"__gc", tensor_gc},   {"__close", tensor_gc}, {"__tostring", tensor_tostring},
    {"__len", tensor_len}, {NULL, NULL},
};

void pfl_tensor_open(lua_State *L)
{
    luaL_newmetatable(L, PFL_TENSOR);
    luaL_setfuncs(L, tensor_meta, 0);
    luaL_newlib(L, tensor_methods);
    lua_pushcclosure(L, tensor_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushcfunction(L, tensor_new);
    lua_setfield(L, -2, "tensor");
}
