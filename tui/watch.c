/* The watched model (see app.h): what the panes show, fetched through the model's Lua API.
 *
 * The views follow the model last named by pf.watch(m[, task]), trained by m:train, or assigned to
 * the global `m` (whichever happened last). Probes of the focused layer are fetched only when the
 * model changed since (a step, a training step, a new focus): a probe costs nothing unless shown.
 * The token stream steps the watched task's sequences one token at a time (m:reset at each new
 * sequence); without a task it feeds the model its own greedy predictions. */
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/rng.h"
#include "engine/tasks.h"
#include "scripts/lua_module.h"
#include "tui/app.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

static void copy_str(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

/* m.layers[i + 1] pushed (nil when absent) */
static void push_layer(app *a, int i)
{
    lua_State *L = a->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->w.model_ref);
    lua_getfield(L, -1, "layers");
    lua_remove(L, -2);
    if (lua_istable(L, -1)) lua_rawgeti(L, -1, i + 1);
    else lua_pushnil(L);
    lua_remove(L, -2);
}

/* obj:method(args...) with nargs arguments on top of the stack above obj (obj at objidx, absolute);
 * leaves nres results or returns -1 with the message in err */
static int call_method(lua_State *L, int objidx, const char *method, int nargs, int nres, char *err, size_t n)
{
    lua_getfield(L, objidx, method);
    lua_pushvalue(L, objidx);
    if (nargs > 0) {
        lua_rotate(L, -nargs - 2, 2);
    }
    if (lua_pcall(L, nargs + 1, nres, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        copy_str(err, n, msg ? msg : "error");
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

static double number_field(lua_State *L, int idx, const char *k, double def)
{
    lua_getfield(L, idx, k);
    int ok;
    double v = lua_tonumberx(L, -1, &ok);
    lua_pop(L, 1);
    return ok ? v : def;
}

static void free_snaps(watch *w)
{
    for (int i = 0; i < w->n_snap; i++) {
        pf_tensor_free(w->snap[i].t);
        w->snap[i].t = NULL;
    }
    w->n_snap = 0;
    w->snap_valid = 0;
}

static void free_hist(watch *w)
{
    for (int i = 0; i < w->n_hist; i++) free(w->hist[i].rows);
    memset(w->hist, 0, sizeof w->hist);
    w->n_hist = 0;
}

static void free_stream(watch *w)
{
    free(w->inputs);
    free(w->targets);
    free(w->pred);
    free(w->mask);
    free(w->p_pred);
    free(w->p_target);
    w->inputs = w->targets = w->pred = NULL;
    w->mask = w->p_pred = w->p_target = NULL;
    w->T = w->pos = 0;
}

static void series_clear(metric_series *s)
{
    s->n = 0;
    s->stride = 1;
    s->acc = 0;
    s->acc_n = 0;
}

static void series_push(metric_series *s, double v)
{
    if (s->stride < 1) s->stride = 1;
    s->acc += v;
    if (++s->acc_n < s->stride) return;
    if (s->n == METRIC_CAP) {
        for (int i = 0; i < METRIC_CAP / 2; i++) s->v[i] = 0.5f * (s->v[2 * i] + s->v[2 * i + 1]);
        s->n = METRIC_CAP / 2;
        s->stride *= 2;
    }
    s->v[s->n++] = (float)(s->acc / s->acc_n);
    s->acc = 0;
    s->acc_n = 0;
}

/* ---- the model -------------------------------------------------------------------------------- */

void watch_clear(app *a)
{
    watch *w = &a->w;
    if (w->model_ref != LUA_NOREF) luaL_unref(a->L, LUA_REGISTRYINDEX, w->model_ref);
    w->model_ref = LUA_NOREF;
    w->model_ptr = NULL;
    free(w->blocks);
    w->blocks = NULL;
    w->n_blocks = 0;
    free_snaps(w);
    free_hist(w);
    free_stream(w);
    w->title[0] = '\0';
}

void watch_free(app *a)
{
    watch_clear(a);
    if (a->w.task_ref != LUA_NOREF) luaL_unref(a->L, LUA_REGISTRYINDEX, a->w.task_ref);
    a->w.task_ref = LUA_NOREF;
}

static void read_blocks(app *a, int m)
{
    lua_State *L = a->L;
    watch *w = &a->w;
    char err[160];
    if (call_method(L, m, "blocks", 0, 1, err, sizeof err) < 0) {
        log_add(a, LOG_ERROR, "watch: %s", err);
        return;
    }
    int n = lua_istable(L, -1) ? (int)lua_rawlen(L, -1) : 0;
    w->blocks = calloc(n > 0 ? (size_t)n : 1, sizeof *w->blocks);
    if (!w->blocks) n = 0;
    w->n_blocks = n;
    for (int i = 0; i < n; i++) {
        watch_block *b = &w->blocks[i];
        lua_rawgeti(L, -1, i + 1);
        int bi = lua_gettop(L);
        lua_getfield(L, bi, "kind");
        copy_str(b->kind, sizeof b->kind, lua_tostring(L, -1));
        lua_pop(L, 1);
        b->params = number_field(L, bi, "params", 0);
        b->flops = number_field(L, bi, "flops_per_token", 0);
        b->state_bytes = number_field(L, bi, "state_bytes", 0);
        b->shares = (int)number_field(L, bi, "shares", 0);
        lua_pop(L, 1);
        /* its probes: m.layers[i]:probes(true) */
        push_layer(a, i);
        int li = lua_gettop(L);
        if (!lua_isnil(L, li)) {
            lua_pushboolean(L, 1);
            if (call_method(L, li, "probes", 1, 1, err, sizeof err) == 0) {
                int np = lua_istable(L, -1) ? (int)lua_rawlen(L, -1) : 0;
                if (np > WATCH_MAX_PROBES) np = WATCH_MAX_PROBES;
                b->n_probes = np;
                for (int k = 0; k < np; k++) {
                    lua_rawgeti(L, -1, k + 1);
                    lua_getfield(L, -1, "name");
                    copy_str(b->probe[k], sizeof b->probe[k], lua_tostring(L, -1));
                    lua_getfield(L, -2, "shape");
                    copy_str(b->shape[k], sizeof b->shape[k], lua_tostring(L, -1));
                    lua_pop(L, 3);
                }
                lua_pop(L, 1);
            }
        }
        lua_settop(L, bi - 1);
    }
    lua_pop(L, 1);
}

/* refresh the block table (state bytes change as the KV cache grows) */
static void update_blocks(app *a)
{
    lua_State *L = a->L;
    watch *w = &a->w;
    if (w->model_ref == LUA_NOREF) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->model_ref);
    int m = lua_gettop(L);
    char err[160];
    if (call_method(L, m, "blocks", 0, 1, err, sizeof err) == 0) {
        int n = lua_istable(L, -1) ? (int)lua_rawlen(L, -1) : 0;
        for (int i = 0; i < n && i < w->n_blocks; i++) {
            lua_rawgeti(L, -1, i + 1);
            w->blocks[i].state_bytes = number_field(L, lua_gettop(L), "state_bytes", 0);
            w->blocks[i].step_s = number_field(L, lua_gettop(L), "step_seconds", 0);
            lua_pop(L, 1);
        }
    }
    lua_settop(L, m - 1);
}

int watch_set_model(app *a, int idx)
{
    lua_State *L = a->L;
    watch *w = &a->w;
    idx = lua_absindex(L, idx);
    if (!luaL_testudata(L, idx, PFL_MODEL)) return -1;
    if (lua_topointer(L, idx) == w->model_ptr) return 0;
    watch_clear(a);
    lua_pushvalue(L, idx);
    w->model_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    w->model_ptr = lua_topointer(L, idx);
    copy_str(w->title, sizeof w->title, luaL_tolstring(L, idx, NULL));
    lua_pop(L, 1);
    w->vocab = (int)number_field(L, idx, "vocab", 0);
    w->dim = (int)number_field(L, idx, "dim", 0);
    read_blocks(a, idx);
    if (w->focus >= w->n_blocks) w->focus = w->n_blocks > 0 ? w->n_blocks - 1 : 0;
    w->probe_sel = 0;
    series_clear(&w->loss);
    series_clear(&w->acc);
    series_clear(&w->aux);
    w->train_step = w->train_steps = 0;
    w->tokens_per_s = 0;
    a->dirty = 1;
    return 0;
}

void watch_set_task(app *a, int idx)
{
    lua_State *L = a->L;
    watch *w = &a->w;
    idx = lua_absindex(L, idx);
    if (!luaL_testudata(L, idx, PFL_TASK)) return;
    if (lua_topointer(L, idx) == w->task_ptr) return;
    if (w->task_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, w->task_ref);
    lua_pushvalue(L, idx);
    w->task_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    w->task_ptr = lua_topointer(L, idx);
    free_stream(w);
    a->dirty = 1;
}

void watch_check_global(app *a)
{
    lua_State *L = a->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_pushliteral(L, "m");
    lua_rawget(L, -2);
    const void *p = lua_topointer(L, -1);
    if (p != a->w.global_m) {
        a->w.global_m = p;
        if (luaL_testudata(L, -1, PFL_MODEL)) watch_set_model(a, -1);
    }
    lua_pop(L, 2);
}

void watch_focus(app *a, int block)
{
    watch *w = &a->w;
    if (w->n_blocks == 0) return;
    if (block < 0) block = 0;
    if (block >= w->n_blocks) block = w->n_blocks - 1;
    if (block != w->focus) {
        w->focus = block;
        w->probe_sel = 0;
        free_snaps(w);
        free_hist(w);
    }
    a->dirty = 1;
}

/* ---- probes ----------------------------------------------------------------------------------- */

/* the focused layer's probe `name` as a new tensor; NULL with err */
static pf_tensor *fetch_probe(app *a, const char *name, char *err, size_t n)
{
    lua_State *L = a->L;
    int top = lua_gettop(L);
    push_layer(a, a->w.focus);
    pf_tensor *t = NULL;
    if (lua_isnil(L, -1)) {
        copy_str(err, n, "no such layer");
    } else {
        lua_pushstring(L, name);
        if (call_method(L, top + 1, "probe", 1, 1, err, n) == 0) {
            pf_tensor *src = luaL_testudata(L, -1, PFL_TENSOR) ? *(pf_tensor **)lua_touserdata(L, -1) : NULL;
            if (src) t = pf_tensor_copy(src);
            if (!t) copy_str(err, n, "no data");
        }
    }
    lua_settop(L, top);
    return t;
}

void watch_refresh(app *a)
{
    watch *w = &a->w;
    if (w->snap_valid || w->model_ref == LUA_NOREF || w->n_blocks == 0) return;
    free_snaps(w);
    update_blocks(a);
    const watch_block *b = &w->blocks[w->focus];
    for (int i = 0; i < b->n_probes; i++) {
        probe_snap *s = &w->snap[i];
        copy_str(s->name, sizeof s->name, b->probe[i]);
        s->err[0] = '\0';
        s->t = fetch_probe(a, s->name, s->err, sizeof s->err);
        /* engine messages start with the layer's name; keep them short */
        char *colon = strstr(s->err, ": ");
        if (colon && colon - s->err < 40) memmove(s->err, colon + 2, strlen(colon + 2) + 1);
    }
    w->n_snap = b->n_probes;
    w->snap_valid = 1;
}

const probe_snap *watch_probe(app *a, const char *name)
{
    watch_refresh(a);
    for (int i = 0; i < a->w.n_snap; i++)
        if (strcmp(a->w.snap[i].name, name) == 0) return &a->w.snap[i];
    return NULL;
}

const probe_hist *watch_hist(app *a, const char *name)
{
    for (int i = 0; i < a->w.n_hist; i++)
        if (strcmp(a->w.hist[i].name, name) == 0 && a->w.hist[i].len > 0) return &a->w.hist[i];
    return NULL;
}

/* after a step: append the focused layer's small 1-D probes to their histories */
static void record_history(app *a)
{
    watch *w = &a->w;
    if (w->n_blocks == 0) return;
    const watch_block *b = &w->blocks[w->focus];
    char err[160];
    for (int i = 0; i < b->n_probes; i++) {
        /* 1-D by their documented shape: "[heads]", "[d_inner]", "[1]" */
        if (strchr(b->shape[i], ',')) continue;
        pf_tensor *t = fetch_probe(a, b->probe[i], err, sizeof err);
        if (!t) continue;
        int n = (int)pf_tensor_numel(t);
        probe_hist *h = NULL;
        for (int k = 0; k < w->n_hist; k++)
            if (strcmp(w->hist[k].name, b->probe[i]) == 0) h = &w->hist[k];
        if (h && h->n != n) {
            free(h->rows);
            h->rows = NULL;
            h->len = h->head = 0;
            h->n = n;
        }
        if (!h && w->n_hist < WATCH_MAX_PROBES && n <= 1024) {
            h = &w->hist[w->n_hist++];
            copy_str(h->name, sizeof h->name, b->probe[i]);
            h->n = n;
        }
        if (h && n <= 1024) {
            if (!h->rows) h->rows = calloc((size_t)WATCH_HIST * (size_t)n, sizeof *h->rows);
            if (h->rows) {
                memcpy(h->rows + (size_t)h->head * n, t->data, (size_t)n * sizeof *t->data);
                h->head = (h->head + 1) % WATCH_HIST;
                if (h->len < WATCH_HIST) h->len++;
            }
        }
        pf_tensor_free(t);
    }
}

/* ---- the token stream ------------------------------------------------------------------------- */

static int new_sequence(app *a)
{
    lua_State *L = a->L;
    watch *w = &a->w;
    if (!w->rng[0] && !w->rng[1]) pf_rng_seed((pf_rng *)w->rng, 12345);
    int T = 64;
    pf_task *task = NULL;
    if (w->task_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->task_ref);
        pfl_task *pt = luaL_testudata(L, -1, PFL_TASK);
        task = pt ? pt->task : NULL;
        lua_pop(L, 1);
        if (task && task->vocab > w->vocab) task = NULL;
        if (task) T = task->seq;
    }
    if (!w->inputs || w->T != T) {
        free_stream(w);
        w->inputs = calloc((size_t)T, sizeof *w->inputs);
        w->targets = calloc((size_t)T, sizeof *w->targets);
        w->pred = calloc((size_t)T, sizeof *w->pred);
        w->mask = calloc((size_t)T, sizeof *w->mask);
        w->p_pred = calloc((size_t)T, sizeof *w->p_pred);
        w->p_target = calloc((size_t)T, sizeof *w->p_target);
        if (!w->inputs || !w->targets || !w->pred || !w->mask || !w->p_pred || !w->p_target) {
            free_stream(w);
            log_add(a, LOG_ERROR, "token stream: not enough memory");
            return -1;
        }
        w->T = T;
    }
    if (task) {
        if (pf_task_batch(task, (pf_rng *)w->rng, 1, w->inputs, w->targets, w->mask) < 0) {
            log_add(a, LOG_ERROR, "token stream: cannot draw a sequence");
            return -1;
        }
        copy_str(w->task_name, sizeof w->task_name, task->name);
        w->text = strcmp(task->name, "text") == 0;
    } else {
        memset(w->mask, 0, (size_t)T * sizeof *w->mask);
        w->inputs[0] = (int32_t)pf_rng_below((pf_rng *)w->rng, (uint32_t)(w->vocab > 0 ? w->vocab : 1));
        copy_str(w->task_name, sizeof w->task_name, "generate");
        w->text = 0;
    }
    for (int i = 0; i < T; i++) {
        w->pred[i] = -1;
        w->p_pred[i] = w->p_target[i] = NAN;
    }
    w->pos = 0;
    /* m:reset() */
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->model_ref);
    char err[160];
    if (call_method(L, lua_gettop(L), "reset", 0, 0, err, sizeof err) < 0) log_add(a, LOG_ERROR, "reset: %s", err);
    lua_pop(L, 1);
    return 0;
}

void watch_reset(app *a)
{
    watch *w = &a->w;
    if (w->model_ref == LUA_NOREF) return;
    w->pos = w->T;      /* the next step starts a fresh sequence */
    new_sequence(a);
    free_snaps(w);
    free_hist(w);
    a->dirty = 1;
}

int watch_step(app *a)
{
    lua_State *L = a->L;
    watch *w = &a->w;
    if (w->model_ref == LUA_NOREF) {
        log_add(a, LOG_INFO, "no model to step: make one (m = pf.model{...}) or pf.watch(m, task)");
        return -1;
    }
    if ((!w->inputs || w->pos >= w->T) && new_sequence(a) < 0) return -1;
    int i = w->pos;
    if (strcmp(w->task_name, "generate") == 0 && i > 0 && w->pred[i - 1] >= 0)
        w->inputs[i] = w->pred[i - 1];   /* no task: the model's own prediction comes next */
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->model_ref);
    lua_pushinteger(L, w->inputs[i]);
    char err[200];
    double t0 = app_clock();
    if (call_method(L, top + 1, "step", 1, 1, err, sizeof err) < 0) {
        lua_settop(L, top);
        log_add(a, LOG_ERROR, "step: %s", err);
        return -1;
    }
    w->step_s = app_clock() - t0;
    pf_tensor *logits = luaL_testudata(L, -1, PFL_TENSOR) ? *(pf_tensor **)lua_touserdata(L, -1) : NULL;
    if (logits) {
        int V = (int)pf_tensor_numel(logits);
        const float *l = logits->data;
        int best = 0;
        for (int k = 1; k < V; k++)
            if (l[k] > l[best]) best = k;
        double sum = 0;
        for (int k = 0; k < V; k++) sum += exp((double)l[k] - l[best]);
        w->pred[i] = best;
        w->p_pred[i] = (float)(1.0 / sum);
        if (w->mask[i] > 0 && w->targets[i] >= 0 && w->targets[i] < V)
            w->p_target[i] = (float)(exp((double)l[w->targets[i]] - l[best]) / sum);
    }
    lua_settop(L, top);
    w->pos++;
    w->tokens++;
    w->snap_valid = 0;
    record_history(a);
    a->dirty = 1;
    return 0;
}

/* ---- training --------------------------------------------------------------------------------- */

void watch_on_train(app *a, int info)
{
    lua_State *L = a->L;
    watch *w = &a->w;
    info = lua_absindex(L, info);
    if (!lua_istable(L, info)) return;
    w->train_step = (int)number_field(L, info, "step", 0);
    w->train_steps = (int)number_field(L, info, "steps", 0);
    w->last_loss = number_field(L, info, "loss", NAN);
    w->last_acc = number_field(L, info, "acc", NAN);
    w->last_aux = number_field(L, info, "aux_loss", 0);
    w->tokens_per_s = number_field(L, info, "tokens_per_s", 0);
    w->lr = number_field(L, info, "lr", 0);
    w->grad_norm = number_field(L, info, "grad_norm", 0);
    series_push(&w->loss, w->last_loss);
    series_push(&w->acc, w->last_acc);
    series_push(&w->aux, w->last_aux);
    w->training = 1;
    w->last_train_time = app_clock();
    w->snap_valid = 0;
    a->dirty = 1;
}
