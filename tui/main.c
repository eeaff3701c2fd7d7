/* postformer: the program.
 *
 *   postformer [--device cpu|cuda] FILE.lua [ARGS...]      the terminal UI, running FILE in it
 *   postformer [--device cpu|cuda]                        the terminal UI on examples/tour.lua
 *   postformer [--device cpu|cuda] run FILE.lua [ARGS...]  FILE headless, with `arg` and `pf` set
 *
 * The terminal UI (tui/app.c) needs a terminal on stdin and stdout; without one the first two run
 * headless too. The hidden option --bench-ui WxH measures the UI for make bench.
 *
 * Embedding follows lua.c: the script runs under lua_pcall with a message handler that adds a
 * traceback; Ctrl-C sets a hook that raises "interrupted!" inside Lua (a second Ctrl-C kills).
 * Exit status: 0 success, 1 a script error, 64 bad usage, 130 interrupted. */
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "engine/device.h"
#include "engine/error.h"
#include "scripts/lua_module.h"
#include "tui/app.h"

#ifndef PF_VERSION
#define PF_VERSION "0.0.0"
#endif

enum { EXIT_SCRIPT = 1, EXIT_USAGE = 64, EXIT_INTERRUPTED = 130 };

static const char *progname = "postformer";

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [options] [FILE.lua [ARGS...]]      the playground (the tour without FILE)\n"
            "       %s [options] run FILE.lua [ARGS...]    FILE headless\n"
            "\n"
            "Opens the terminal playground and runs FILE.lua in it (with no FILE: the tour,\n"
            "examples/tour.lua). `run` runs FILE headless instead: plain output and an exit status.\n"
            "Either way the postformer module is the global `pf` (require \"postformer\" works too) and the\n"
            "script's arguments are in `arg` (arg[0] is FILE, arg[1..] are ARGS) and in `...`.\n"
            "Without a terminal on stdin and stdout the playground runs the script headless.\n"
            "In the playground: Enter types Lua, ':' a command, ? lists every key, q quits.\n"
            "\n"
            "options:\n"
            "  --device NAME   the default device of pf.model: cpu or cuda (default cpu)\n"
            "  --help          show this and exit\n"
            "  --version       show the version and exit\n"
            "\n"
            "exit status: 0 success, 1 the script failed (message and traceback on stderr),\n"
            "64 bad usage, 130 interrupted (Ctrl-C)\n",
            progname, progname);
}

static int usage_error(const char *fmt, ...) PF_PRINTF(1, 2);
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", progname);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help'.\n", progname);
    return EXIT_USAGE;
}

/* ---- Ctrl-C: as lua.c ------------------------------------------------------------------------- */

static lua_State *global_L;
static volatile sig_atomic_t interrupted;

static void stop_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

/* Runs in the signal handler: lua_sethook is the one Lua call that is safe there. */
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
    lua_sethook(global_L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

static void set_sigint(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = handler == SIG_DFL ? 0 : SA_RESETHAND;   /* a second Ctrl-C kills */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

/* ---- running ---------------------------------------------------------------------------------- */

/* The message handler: the error message (or the object's __tostring) with a traceback. */
static int message_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Call the function below its nargs arguments under the handler, Ctrl-C armed. */
static int docall(lua_State *L, int nargs)
{
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, message_handler);
    lua_insert(L, base);
    global_L = L;
    set_sigint(on_sigint);
    int status = lua_pcall(L, nargs, 0, base);
    set_sigint(SIG_DFL);
    lua_remove(L, base);
    return status;
}

static int report(lua_State *L, int status)
{
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "%s: %s\n", progname, msg ? msg : "(error with no message)");
        fflush(stderr);
        lua_pop(L, 1);
    }
    return status;
}

/* pf = require "postformer" (preloaded from this binary), pf.headless = true, the default device */
static int open_postformer(lua_State *L, const char *device)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_postformer);
    lua_setfield(L, -2, "postformer");
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "postformer");
    int status = docall(L, 1);
    if (status != LUA_OK) return status;
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_getfield(L, -1, "postformer");
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "headless");
    if (device) {
        lua_pushstring(L, device);
        lua_setfield(L, -2, "default_device");
    }
    lua_setglobal(L, "pf");
    lua_pop(L, 2);
    return LUA_OK;
}

/* arg = {[0] = script, ARGS...}, with what came before the script at negative indices (as lua.c) */
static void set_arg(lua_State *L, char **argv, int argc, int script)
{
    lua_createtable(L, argc - script - 1, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

/* examples/tour.lua beside the program's build folder, or under the current directory */
static const char *find_tour(char *buf, size_t n)
{
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(buf, n, "%s/../examples/tour.lua", exe);
            if (access(buf, R_OK) == 0) return buf;
        }
    }
    return "examples/tour.lua";
}

static const char bench_script[] =
    "local m = pf.model{vocab = 64, dim = 64, seed = 1, layers = {pf.attention{heads = 4}, pf.mlp{},\n"
    "  pf.retention{heads = 4}, pf.mlp{}}}\n"
    "local task = pf.tasks.mqar{vocab = 64, seq = 64, pairs = 8}\n"
    "m:train{task = task, steps = 10, batch = 8, log = false}\n"
    "pf.watch(m, task)\n";

static int run_script(const char *device, char **argv, int argc, int script, const char *file, int tui,
                      const char *bench)
{
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "%s: cannot create a Lua state: not enough memory\n", progname);
        return EXIT_SCRIPT;
    }
    luaL_openlibs(L);
    int status = report(L, open_postformer(L, device));
    if (status == LUA_OK) {
        if (script < argc) {
            set_arg(L, argv, argc, script);
        } else {                            /* the tour: arg = {[0] = its path} */
            lua_createtable(L, 0, 1);
            lua_pushstring(L, file);
            lua_rawseti(L, -2, 0);
            lua_setglobal(L, "arg");
        }
        if (bench) {
            int w = 200, h = 60;
            sscanf(bench, "%dx%d", &w, &h);
            int rc = tui_bench(L, bench_script, w, h);
            lua_close(L);
            return rc;
        }
        if (tui) {
            int rc = tui_main(L, file, file);
            lua_close(L);
            return rc;
        }
        status = luaL_loadfile(L, file);
        if (status == LUA_OK) {
            int nargs = 0;
            for (int i = script + 1; i < argc; i++, nargs++) {
                luaL_checkstack(L, 1, "too many arguments to the script");
                lua_pushstring(L, argv[i]);
            }
            status = docall(L, nargs);
        }
        report(L, status);
    }
    lua_close(L);
    if (status == LUA_OK) return 0;
    return interrupted ? EXIT_INTERRUPTED : EXIT_SCRIPT;
}

int main(int argc, char **argv)
{
    const char *device = NULL, *bench = NULL;
    int i = 1, seen_run = 0;
    if (argv[0] && argv[0][0]) {
        const char *slash = strrchr(argv[0], '/');
        progname = slash ? slash + 1 : argv[0];
    }
    /* options, and "run", up to the script */
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0 || strcmp(a, "-v") == 0) {
            printf("postformer %s (%s)\n", PF_VERSION, LUA_RELEASE);
            return 0;
        } else if (strcmp(a, "--device") == 0) {
            if (i + 1 >= argc) return usage_error("%s needs a device name (cpu or cuda)", a);
            device = argv[++i];
        } else if (strncmp(a, "--device=", 9) == 0) {
            device = a + 9;
        } else if (strcmp(a, "--bench-ui") == 0) {
            if (i + 1 >= argc) return usage_error("%s needs a size WxH", a);
            bench = argv[++i];
        } else if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (a[0] == '-' && a[1] != '\0') {
            return usage_error("unknown option '%s'", a);
        } else if (strcmp(a, "run") == 0 && !seen_run) {
            seen_run = 1;
        } else {
            break;
        }
    }
    if (device && strcmp(device, "cpu") != 0 && strcmp(device, "cuda") != 0)
        return usage_error("unknown device '%s' (devices: cpu, cuda)", device);
    if (device && !pf_device(device)) {
        fprintf(stderr, "%s: %s\n", progname, pf_error_message());
        return EXIT_SCRIPT;
    }
    char tour[PATH_MAX + 32];
    const char *file;
    if (i < argc) {
        file = argv[i];
    } else if (seen_run) {
        return usage_error("run: no script to run (postformer run FILE.lua [ARGS...])");
    } else {
        file = find_tour(tour, sizeof tour);
        i = argc;     /* no arguments for the tour */
    }
    if (!bench && access(file, R_OK) != 0) return usage_error("cannot read the script '%s'", file);
    int tui = !seen_run && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    return run_script(device, argv, argc, i, file, tui, bench);
}
