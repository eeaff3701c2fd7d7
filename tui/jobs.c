/* Lua jobs (see app.h): every typed chunk and the script given on the command line runs as a
 * coroutine, resumed by the main loop for a short time slice, so the screen keeps moving and keys
 * keep working while Lua trains a model.
 *
 * A job gives the UI its turn in two ways: m:train calls pf._yield(m, info, task) after every step
 * (a coroutine.yield here once the slice is over; a no-op headless), and a count hook yields plain
 * Lua loops once the slice is over (where Lua allows a yield). Ctrl-C reaches Lua as lua.c does it:
 * a hook that raises "interrupted!" (the count hook also reads keys while Lua runs, so a busy loop
 * that cannot yield still sees Ctrl-C). Errors come back with their traceback to the log. */
#include <lauxlib.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "scripts/lua_module.h"
#include "tui/app.h"

static app *the_app;   /* for the hook, which gets only the lua_State */
static lua_State *volatile running_co;   /* the job being resumed now, for SIGINT */

enum { HOOK_COUNT = 2000 };

/* ---- the hook --------------------------------------------------------------------------------- */

static void job_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    app *a = the_app;
    double now = app_clock();
    if (now - a->slice_start < a->slice_ms * 1e-3) return;
    app_poll_keys(a);
    if (a->interrupt) {
        a->interrupt = 0;
        luaL_error(L, "interrupted!");
    }
    if (lua_isyieldable(L)) lua_yield(L, 0);
    /* cannot yield here (inside a C call): look at the keys again after another slice */
    a->slice_start = now;
}

/* SIGINT from outside (kill -INT; the terminal's own Ctrl-C arrives as a key in raw mode): as
 * lua.c, a hook on the running job raises "interrupted!"; lua_sethook is safe in a handler. */
static void stop_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, job_hook, LUA_MASKCOUNT, HOOK_COUNT);
    luaL_error(L, "interrupted!");
}

static void on_sigint(int sig)
{
    (void)sig;
    the_app->interrupt = 1;
    lua_State *co = running_co;
    if (co) lua_sethook(co, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

/* ---- jobs ------------------------------------------------------------------------------------- */

void jobs_start(app *a, const char *name, int print_results)
{
    lua_State *L = a->L;
    if (a->n_jobs == a->cap_jobs) {
        int cap = a->cap_jobs ? 2 * a->cap_jobs : 4;
        job *j = realloc(a->jobs, (size_t)cap * sizeof *j);
        if (!j) {
            lua_pop(L, 1);
            log_add(a, LOG_ERROR, "not enough memory for another job");
            return;
        }
        a->jobs = j;
        a->cap_jobs = cap;
    }
    lua_State *co = lua_newthread(L);
    lua_rotate(L, -2, 1);           /* thread below the function */
    lua_xmove(L, co, 1);            /* the function into the thread */
    job *j = &a->jobs[a->n_jobs++];
    j->co = co;
    j->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    j->print_results = print_results;
    snprintf(j->name, sizeof j->name, "%s", name);
    lua_sethook(co, job_hook, LUA_MASKCOUNT, HOOK_COUNT);
    a->dirty = 1;
}

static void job_end(app *a, int k)
{
    job *j = &a->jobs[k];
#if LUA_VERSION_RELEASE_NUM >= 50406
    lua_closethread(j->co, a->L);
#else
    lua_resetthread(j->co);
#endif
    luaL_unref(a->L, LUA_REGISTRYINDEX, j->ref);
    memmove(&a->jobs[k], &a->jobs[k + 1], (size_t)(a->n_jobs - k - 1) * sizeof *a->jobs);
    a->n_jobs--;
    a->dirty = 1;
    watch_check_global(a);
}

/* show the results a finished chunk returned, tab-separated (lua.c's l_print) */
static void show_results(app *a, lua_State *co, int n)
{
    luaL_Buffer b;
    luaL_buffinit(a->L, &b);
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *s = luaL_tolstring(co, i, &len);
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_addlstring(&b, s, len);
        lua_pop(co, 1);
    }
    luaL_pushresult(&b);
    log_text(a, LOG_RESULT, lua_tostring(a->L, -1));
    lua_pop(a->L, 1);
}

static void show_error(app *a, lua_State *co, const char *name)
{
    const char *msg = lua_tostring(co, -1);
    if (!msg) {
        if (luaL_callmeta(co, -1, "__tostring") && lua_type(co, -1) == LUA_TSTRING) msg = lua_tostring(co, -1);
        else msg = lua_pushfstring(co, "(error object is a %s value)", luaL_typename(co, -1));
    }
    luaL_traceback(a->L, co, msg, 0);
    const char *tb = lua_tostring(a->L, -1);
    (void)name;
    log_text(a, LOG_ERROR, tb);
    lua_pop(a->L, 1);
}

void jobs_run(app *a, double slice_ms)
{
    for (int k = 0; k < a->n_jobs; k++) {
        job *j = &a->jobs[k];
        lua_State *co = j->co;
        int nres = 0;
        a->slice_ms = slice_ms;
        a->slice_start = app_clock();
        running_co = co;
        int status = lua_resume(co, a->L, 0, &nres);
        running_co = NULL;
        if (status == LUA_YIELD) {
            lua_pop(co, nres);
            continue;
        }
        if (status == LUA_OK) {
            if (j->print_results && nres > 0) show_results(a, co, nres);
        } else {
            show_error(a, co, j->name);
        }
        job_end(a, k);
        k--;
    }
}

void jobs_interrupt(app *a)
{
    if (a->n_jobs == 0) return;
    while (a->n_jobs > 0) {
        job *j = &a->jobs[0];
        luaL_traceback(a->L, j->co, "interrupted!", 0);
        log_text(a, LOG_ERROR, lua_tostring(a->L, -1));
        lua_pop(a->L, 1);
        job_end(a, 0);
    }
}

int jobs_count(const app *a) { return a->n_jobs; }

/* ---- what Lua sees in the UI ------------------------------------------------------------------ */

/* pf._yield(m, info, task): after each m:train step */
static int l_yield(lua_State *L)
{
    app *a = the_app;
    if (luaL_testudata(L, 1, PFL_MODEL)) {
        /* the watch works on the main state's stack: copy the arguments over */
        lua_settop(L, 3);
        lua_pushvalue(L, 1);
        lua_pushvalue(L, 2);
        lua_pushvalue(L, 3);
        lua_xmove(L, a->L, 3);
        watch_set_model(a, -3);
        if (!lua_isnil(a->L, -1)) watch_set_task(a, -1);
        if (lua_topointer(a->L, -3) == a->w.model_ptr) watch_on_train(a, -2);
        lua_pop(a->L, 3);
    }
    if (a->interrupt) {
        a->interrupt = 0;
        return luaL_error(L, "interrupted!");
    }
    if (app_clock() - a->slice_start >= a->slice_ms * 1e-3 && lua_isyieldable(L)) return lua_yield(L, 0);
    return 0;
}

/* pf.watch(m[, task]): show model m (and step through task's sequences) */
static int l_watch(lua_State *L)
{
    app *a = the_app;
    luaL_checkudata(L, 1, PFL_MODEL);
    if (!lua_isnoneornil(L, 2)) luaL_checkudata(L, 2, PFL_TASK);
    lua_settop(L, 2);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_xmove(L, a->L, 2);
    watch_set_model(a, -2);
    if (!lua_isnil(a->L, -1)) watch_set_task(a, -1);
    lua_pop(a->L, 2);
    lua_pushvalue(L, 1);
    lua_setfield(L, lua_upvalueindex(1), "_watched");
    return 0;
}

/* print(...) into the log */
static int l_print(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *s = luaL_tolstring(L, i, &len);
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_addvalue(&b);
        (void)s;
        (void)len;
    }
    luaL_pushresult(&b);
    log_text(the_app, LOG_OUT, lua_tostring(L, -1));
    return 0;
}

/* io.write(...) into the log, lines completed across calls (a "\r" starts the line again) */
static int l_write(lua_State *L)
{
    app *a = the_app;
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *s = luaL_checklstring(L, i, &len);
        for (size_t k = 0; k < len; k++) {
            size_t have = a->log.partial ? strlen(a->log.partial) : 0;
            if (s[k] == '\n') {
                log_add(a, LOG_OUT, "%s", a->log.partial ? a->log.partial : "");
                free(a->log.partial);
                a->log.partial = NULL;
            } else if (s[k] == '\r') {
                if (a->log.partial) a->log.partial[0] = '\0';
            } else if (s[k] != '\27') {
                char *p = realloc(a->log.partial, have + 2);
                if (!p) break;
                p[have] = s[k];
                p[have + 1] = '\0';
                a->log.partial = p;
            }
        }
    }
    lua_getglobal(L, "io");
    lua_getfield(L, -1, "stdout");
    return 1;
}

/* pf.tui.<command>(args...): the `:` commands from Lua */
static int l_command(lua_State *L)
{
    const tui_command *c = lua_touserdata(L, lua_upvalueindex(1));
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, c->name);
    for (int i = 1; i <= lua_gettop(L); i++) {
        luaL_addchar(&b, ' ');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    command_run(the_app, lua_tostring(L, -1));
    return 0;
}

void jobs_open(app *a)
{
    lua_State *L = a->L;
    the_app = a;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    lua_getglobal(L, "pf");
    int pf = lua_gettop(L);
    if (!lua_istable(L, pf)) {
        lua_pop(L, 1);
        return;
    }
    lua_pushcfunction(L, l_yield);
    lua_setfield(L, pf, "_yield");
    lua_pushvalue(L, pf);
    lua_pushcclosure(L, l_watch, 1);
    lua_setfield(L, pf, "watch");
    lua_pushboolean(L, 0);
    lua_setfield(L, pf, "headless");
    /* pf.tui: the commands as functions */
    lua_newtable(L);
    for (const tui_command *c = tui_commands; c->name; c++) {
        lua_pushlightuserdata(L, (void *)c);
        lua_pushcclosure(L, l_command, 1);
        lua_setfield(L, -2, c->name);
    }
    lua_setfield(L, pf, "tui");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_print);
    lua_setglobal(L, "print");
    lua_getglobal(L, "io");
    if (lua_istable(L, -1)) {
        lua_pushcfunction(L, l_write);
        lua_setfield(L, -2, "write");
    }
    lua_pop(L, 1);
}
