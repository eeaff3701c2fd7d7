/* The C half of the `postformer` Lua module: what its files share.
 *
 * lua_module.c opens the module (constructors, model, layers, devices, the embedded Lua half),
 * lua_tensor.c the pf.tensor class, lua_task.c the tasks and the pf.rng class. Every userdata class
 * follows Lua's own libraries: a metatable registered under its name, methods in __index, and
 * __gc / __close / __tostring; a handle is pushed empty and filled after, so an error between the
 * two never leaves it half-built. */
#ifndef PF_LUA_MODULE_H
#define PF_LUA_MODULE_H

#include <lauxlib.h>
#include <lua.h>

#include "engine/rng.h"
#include "engine/tasks.h"
#include "engine/tensor.h"

#define PFL_TENSOR    "pf.tensor"
#define PFL_TASK      "pf.task"
#define PFL_RNG       "pf.rng"
#define PFL_MODEL     "pf.model"
#define PFL_LAYER     "pf.layer"
#define PFL_LAYERSPEC "pf.layerspec"
#define PFL_SAFETENSORS "pf.safetensors"
#define PFL_TOKENIZER "pf.tokenizer"

/* The module opener: require "postformer" (the .so) and the program's preload. */
int luaopen_postformer(lua_State *L);

/* Raise the engine's last error (pf_error_message) as a Lua error. Never returns. */
int pfl_engine_error(lua_State *L);

/* The engine model of a pf.model argument (errors when it is not one or is closed). */
struct pf_model;
struct pf_model *pfl_model_check(lua_State *L, int arg);

/* ---- checkpoints, JSON, tokenizers (lua_checkpoint.c) ---------------------------------------- */

/* Register pf.safetensors and pf.tokenizer classes, the model methods _save, _load, _param_names,
 * and the internal helpers json_decode, json_encode, st_open, set_field for scripts/checkpoint.lua;
 * `internal` is the stack index of the internal table, the module table is at the top. */
void pfl_checkpoint_open(lua_State *L, int internal);

/* ---- tensors (lua_tensor.c) ------------------------------------------------------------------ */

/* Push an empty pf.tensor and return its slot: the caller fills *slot with a tensor it hands over
 * (the userdata frees it). */
pf_tensor **pfl_tensor_push(lua_State *L);
pf_tensor  *pfl_tensor_check(lua_State *L, int arg);
/* Register the class and set table[-1].tensor (the constructor from a nested table). */
void        pfl_tensor_open(lua_State *L);

/* ---- tasks and random numbers (lua_task.c) --------------------------------------------------- */

typedef struct pfl_task {
    pf_task *task;          /* NULL once closed */
    pf_rng   rng;           /* where its batches come from */
} pfl_task;

pfl_task *pfl_task_check(lua_State *L, int arg);   /* also errors on a closed task */
pf_rng   *pfl_rng_check(lua_State *L, int arg);
/* Register the classes and set table[-1].tasks (the constructors) and table[-1].rng. */
void      pfl_task_open(lua_State *L);

/* ---- PNG export (png.c) ------------------------------------------------------------------------ */

/* Set table[-1].png (pf.png). */
void pfl_png_open(lua_State *L);

/* An integer option of an options table at `idx` in [lo, hi], or def when absent; errors name
 * `what` and the option. */
lua_Integer pfl_opt_integer(lua_State *L, int idx, const char *what, const char *name,
                            lua_Integer def, lua_Integer lo, lua_Integer hi);
/* Error unless every key of the options table at idx is one of the NULL-terminated `valid`. */
void pfl_check_keys(lua_State *L, int idx, const char *what, const char *const *valid);

#endif
