/* The C half of checkpoints, pf.load_hf and tokenizers (the Lua half is scripts/checkpoint.lua):
 *
 *   pf.safetensors (internal.st_open(path)): a validated, memory-mapped safetensors file;
 *       f:names() (header order), f:meta() (the __metadata__ table), f:info(name) -> {dtype, shape}
 *       or nil, f.path, f:close()
 *   model methods m:_save(path, meta, optimizer), m:_load(sources, optimizer) with sources
 *       {{ours, file, theirs}, ...}, m:_param_names() -> {{name, shape}, ...}
 *   internal.json_decode(text, what) -> a Lua value (null: internal.json_null in arrays, absent in
 *       objects); internal.json_encode(value) -> compact JSON with sorted keys
 *   internal.set_field(m, key, value): a field of the model (m.tokenizer)
 *   pf.tokenizer(path): t:encode(text) -> ids, t:decode(ids) -> text, t:token(id) -> the raw bytes
 *       of one token, t:id(token) -> id or nil, t:pieces(text) -> the pre-tokenizer's pieces in the
 *       byte-level form the tokenizers library prints, #t (ids) */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/checkpoint.h"
#include "engine/error.h"
#include "engine/model.h"
#include "engine/safetensors.h"
#include "engine/tokenizer.h"
#include "scripts/lua_module.h"

/* ---- JSON ----------------------------------------------------------------------------------------- */

static void push_json(lua_State *L, const json_t *v, int depth)
{
    luaL_checkstack(L, 4, "JSON nested too deeply");
    if (depth > 200) luaL_error(L, "JSON nested more than 200 levels deep");
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        lua_createtable(L, 0, (int)json_object_size(v));
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)v, key, val) {
            if (json_is_null(val)) continue;
            push_json(L, val, depth + 1);
            lua_setfield(L, -2, key);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        lua_createtable(L, (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            push_json(L, json_array_get(v, i), depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(v));
        break;
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(v));
        break;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        break;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        break;
    case JSON_NULL:
        lua_pushlightuserdata(L, NULL);
        break;
    }
}

static int json_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *what = luaL_optstring(L, 2, "JSON");
    json_error_t err;
    json_t *root = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!root) return luaL_error(L, "%s: not valid JSON: %s (line %d, column %d)", what, err.text, err.line, err.column);
    push_json(L, root, 0);     /* errors only on absurd nesting, leaking root: acceptable for that */
    json_decref(root);
    return 1;
}

static json_t *to_json(lua_State *L, int idx, int depth)
{
    if (depth > 100) luaL_error(L, "json_encode: nested more than 100 levels deep (a cycle?)");
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) return json_integer((json_int_t)lua_tointeger(L, idx));
        if (!isfinite(lua_tonumber(L, idx))) luaL_error(L, "json_encode: %f is not a JSON number", lua_tonumber(L, idx));
        return json_real(lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        json_t *j = json_stringn(s, n);
        if (!j) luaL_error(L, "json_encode: a string is not valid UTF-8");
        return j;
    }
    case LUA_TTABLE: {
        luaL_checkstack(L, 4, "JSON nested too deeply");
        lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
        if (len > 0) {
            json_t *a = json_array();
            for (lua_Integer i = 1; i <= len; i++) {
                lua_rawgeti(L, idx, i);
                json_array_append_new(a, to_json(L, -1, depth + 1));
                lua_pop(L, 1);
            }
            return a;
        }
        json_t *o = json_object();
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "json_encode: a table key is not a string");
            json_object_set_new(o, lua_tostring(L, -2), to_json(L, -1, depth + 1));
            lua_pop(L, 1);
        }
        return o;
    }
    default:
        luaL_error(L, "json_encode: a %s has no JSON form", luaL_typename(L, idx));
        return NULL;
    }
}

static int json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    json_t *j = to_json(L, 1, 0);
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    json_decref(j);
    if (!s) return luaL_error(L, "json_encode: out of memory");
    lua_pushstring(L, s);
    free(s);
    return 1;
}

/* ---- safetensors files ---------------------------------------------------------------------------- */

typedef struct pfl_st {
    pf_st_file *f;        /* NULL once closed */
} pfl_st;

static pf_st_file *st_check(lua_State *L, int arg)
{
    pfl_st *b = luaL_checkudata(L, arg, PFL_SAFETENSORS);
    luaL_argcheck(L, b->f != NULL, arg, "safetensors file is closed");
    return b->f;
}

static int st_open(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    pfl_st *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->f = NULL;
    luaL_setmetatable(L, PFL_SAFETENSORS);
    if (!(b->f = pf_st_open(path))) return pfl_engine_error(L);
    return 1;
}

static int st_close(lua_State *L)
{
    pfl_st *b = luaL_checkudata(L, 1, PFL_SAFETENSORS);
    pf_st_close(b->f);
    b->f = NULL;
    return 0;
}

static int st_names(lua_State *L)
{
    pf_st_file *f = st_check(L, 1);
    lua_createtable(L, f->n_tensors, 0);
    for (int i = 0; i < f->n_tensors; i++) {
        lua_pushstring(L, f->tensors[i].name);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int st_meta(lua_State *L)
{
    pf_st_file *f = st_check(L, 1);
    lua_createtable(L, 0, f->n_meta);
    for (int i = 0; i < f->n_meta; i++) {
        lua_pushstring(L, f->meta_values[i]);
        lua_setfield(L, -2, f->meta_keys[i]);
    }
    return 1;
}

static int st_info(lua_State *L)
{
    pf_st_file *f = st_check(L, 1);
    const pf_st_tensor *t = pf_st_find(f, luaL_checkstring(L, 2));
    if (!t) return 0;
    lua_createtable(L, 0, 2);
    lua_pushstring(L, pf_st_dtype_name(t->dtype));
    lua_setfield(L, -2, "dtype");
    lua_createtable(L, t->ndim, 0);
    for (int d = 0; d < t->ndim; d++) {
        lua_pushinteger(L, (lua_Integer)t->shape[d]);
        lua_rawseti(L, -2, d + 1);
    }
    lua_setfield(L, -2, "shape");
    return 1;
}

static int st_index(lua_State *L)
{
    const char *key = lua_tostring(L, 2);
    if (key && strcmp(key, "path") == 0) {
        lua_pushstring(L, st_check(L, 1)->path);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

static int st_tostring(lua_State *L)
{
    pfl_st *b = luaL_checkudata(L, 1, PFL_SAFETENSORS);
    if (!b->f) lua_pushliteral(L, "pf.safetensors (closed)");
    else lua_pushfstring(L, "pf.safetensors %s: %d tensors", b->f->path, b->f->n_tensors);
    return 1;
}

/* ---- model checkpoints ---------------------------------------------------------------------------- */

/* m:_save(path, meta, optimizer): meta a table of string -> string */
static int model_save(lua_State *L)
{
    pf_model *m = pfl_model_check(L, 1);
    const char *path = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    int optimizer = lua_toboolean(L, 4);
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, 3)) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "m:save: metadata must map strings to strings");
        n++;
        lua_pop(L, 1);
    }
    const char **meta = lua_newuserdatauv(L, (size_t)(2 * n + 1) * sizeof *meta, 0);
    int k = 0;
    lua_pushnil(L);
    while (lua_next(L, 3)) {
        meta[k++] = lua_tostring(L, -2);
        meta[k++] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    if (pf_checkpoint_save(m, path, meta, n, optimizer) < 0) return pfl_engine_error(L);
    return 0;
}

/* m:_load({{ours, file, theirs}, ...}, optimizer) */
static int model_load(lua_State *L)
{
    pf_model *m = pfl_model_check(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int optimizer = lua_toboolean(L, 3);
    int n = (int)lua_rawlen(L, 2);
    pf_checkpoint_source *src = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *src, 0);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        luaL_checktype(L, -1, LUA_TTABLE);
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        lua_rawgeti(L, -3, 3);
        src[i].ours = luaL_checkstring(L, -3);     /* kept alive by the sources table */
        src[i].file = st_check(L, lua_gettop(L) - 1);
        src[i].theirs = luaL_checkstring(L, -1);
        lua_pop(L, 4);
    }
    if (pf_checkpoint_load(m, src, n, optimizer) < 0) return pfl_engine_error(L);
    return 0;
}

static int model_param_names(lua_State *L)
{
    pf_model *m = pfl_model_check(L, 1);
    int n = pf_model_named_params(m, NULL, 0);
    pf_named_param *np = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *np, 0);
    pf_model_named_params(m, np, n);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, np[i].name);
        lua_setfield(L, -2, "name");
        lua_createtable(L, np[i].ndim, 0);
        for (int d = 0; d < np[i].ndim; d++) {
            lua_pushinteger(L, np[i].shape[d]);
            lua_rawseti(L, -2, d + 1);
        }
        lua_setfield(L, -2, "shape");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int set_field(lua_State *L)
{
    pfl_model_check(L, 1);
    luaL_checkstring(L, 2);
    lua_settop(L, 3);
    lua_getiuservalue(L, 1, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, -3);
    return 0;
}

/* ---- tokenizers ----------------------------------------------------------------------------------- */

typedef struct pfl_tok {
    pf_tokenizer *t;      /* NULL once closed */
} pfl_tok;

static pf_tokenizer *tok_check(lua_State *L, int arg)
{
    pfl_tok *b = luaL_checkudata(L, arg, PFL_TOKENIZER);
    luaL_argcheck(L, b->t != NULL, arg, "tokenizer is closed");
    return b->t;
}

static int tok_new(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    pfl_tok *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->t = NULL;
    luaL_setmetatable(L, PFL_TOKENIZER);
    if (!(b->t = pf_tokenizer_load(path))) return pfl_engine_error(L);
    return 1;
}

static int tok_gc(lua_State *L)
{
    pfl_tok *b = luaL_checkudata(L, 1, PFL_TOKENIZER);
    pf_tokenizer_free(b->t);
    b->t = NULL;
    return 0;
}

static int tok_encode(lua_State *L)
{
    pf_tokenizer *t = tok_check(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    int32_t *ids;
    size_t n;
    if (pf_tokenizer_encode(t, s, len, &ids, &n) < 0) return pfl_engine_error(L);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushinteger(L, ids[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    free(ids);
    return 1;
}

static int tok_decode(lua_State *L)
{
    pf_tokenizer *t = tok_check(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    size_t n = lua_rawlen(L, 2);
    int32_t *ids = lua_newuserdatauv(L, (n + 1) * sizeof *ids, 0);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 2, (lua_Integer)i + 1);
        int ok;
        lua_Integer id = lua_tointegerx(L, -1, &ok);
        if (!ok || id < INT32_MIN || id > INT32_MAX)
            return luaL_argerror(L, 2, lua_pushfstring(L, "id [%d] is not an integer", (int)i + 1));
        ids[i] = (int32_t)id;
        lua_pop(L, 1);
    }
    char *text;
    size_t len;
    if (pf_tokenizer_decode(t, ids, n, &text, &len) < 0) return pfl_engine_error(L);
    lua_pushlstring(L, text, len);
    free(text);
    return 1;
}

static int tok_token(lua_State *L)
{
    pf_tokenizer *t = tok_check(L, 1);
    lua_Integer id = luaL_checkinteger(L, 2);
    char buf[256];
    int n = id >= 0 && id <= INT32_MAX ? pf_tokenizer_token_bytes(t, (int32_t)id, buf, sizeof buf) : -1;
    if (n < 0) return 0;
    if ((size_t)n <= sizeof buf) {
        lua_pushlstring(L, buf, (size_t)n);
    } else {
        char *big = lua_newuserdatauv(L, (size_t)n, 0);
        pf_tokenizer_token_bytes(t, (int32_t)id, big, (size_t)n);
        lua_pushlstring(L, big, (size_t)n);
    }
    return 1;
}

static int tok_id(lua_State *L)
{
    int32_t id = pf_tokenizer_token_id(tok_check(L, 1), luaL_checkstring(L, 2));
    if (id < 0) return 0;
    lua_pushinteger(L, id);
    return 1;
}

/* the GPT-2 byte -> character map, as UTF-8, appended to b */
static void add_byte_level(luaL_Buffer *b, unsigned char c)
{
    int printable = (c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE);
    unsigned cp = c;
    if (!printable) {
        int k = 0;
        for (int i = 0; i < c; i++)
            if (!((i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE))) k++;
        cp = 256u + (unsigned)k;
    }
    if (cp < 0x80) {
        luaL_addchar(b, (char)cp);
    } else {
        luaL_addchar(b, (char)(0xC0 | cp >> 6));
        luaL_addchar(b, (char)(0x80 | (cp & 0x3F)));
    }
}

static int tok_pieces(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    tok_check(L, 1);
    size_t *ends = lua_newuserdatauv(L, (len + 1) * sizeof *ends, 0);
    size_t n = pf_gpt2_split(s, len, ends);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0, start = 0; i < n; start = ends[i], i++) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (size_t k = start; k < ends[i]; k++) add_byte_level(&b, (unsigned char)s[k]);
        luaL_pushresult(&b);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int tok_len(lua_State *L)
{
    lua_pushinteger(L, pf_tokenizer_vocab_size(tok_check(L, 1)));
    return 1;
}

static int tok_tostring(lua_State *L)
{
    pfl_tok *b = luaL_checkudata(L, 1, PFL_TOKENIZER);
    if (!b->t) lua_pushliteral(L, "pf.tokenizer (closed)");
    else lua_pushfstring(L, "pf.tokenizer: byte-level BPE, %d ids", pf_tokenizer_vocab_size(b->t));
    return 1;
}

static int methods_index(lua_State *L)
{
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

/* ---- registration --------------------------------------------------------------------------------- */

static void new_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods,
                      lua_CFunction index)
{
    luaL_newmetatable(L, name);
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushcclosure(L, index, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

void pfl_checkpoint_open(lua_State *L, int internal)
{
    static const luaL_Reg st_meta_fns[] = {
        {"__gc", st_close}, {"__close", st_close}, {"__tostring", st_tostring}, {NULL, NULL}};
    static const luaL_Reg st_methods[] = {
        {"names", st_names}, {"meta", st_meta}, {"info", st_info}, {"close", st_close}, {NULL, NULL}};
    static const luaL_Reg tok_meta[] = {
        {"__gc", tok_gc}, {"__close", tok_gc}, {"__len", tok_len}, {"__tostring", tok_tostring}, {NULL, NULL}};
    static const luaL_Reg tok_methods[] = {
        {"encode", tok_encode}, {"decode", tok_decode}, {"token", tok_token}, {"id", tok_id},
        {"pieces", tok_pieces}, {"close", tok_gc}, {NULL, NULL}};
    static const luaL_Reg model_fns[] = {
        {"_save", model_save}, {"_load", model_load}, {"_param_names", model_param_names}, {NULL, NULL}};
    static const luaL_Reg internal_fns[] = {
        {"json_decode", json_decode}, {"json_encode", json_encode}, {"st_open", st_open},
        {"set_field", set_field}, {NULL, NULL}};

    new_class(L, PFL_SAFETENSORS, st_meta_fns, st_methods, st_index);
    new_class(L, PFL_TOKENIZER, tok_meta, tok_methods, methods_index);
    lua_getfield(L, internal, "model");
    luaL_setfuncs(L, model_fns, 0);
    lua_pop(L, 1);
    lua_pushvalue(L, internal);
    luaL_setfuncs(L, internal_fns, 0);
    lua_pop(L, 1);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, internal, "json_null");
    lua_pushcfunction(L, tok_new);
    lua_setfield(L, -2, "tokenizer");          /* the module table is at the top */
}
