/* The REPL line (see app.h): GNU readline through its callback interface, kept off the terminal
 * (rlncurses): keys come from the curses loop (rl_getc_function reads our own byte queue, fed one
 * key at a time to rl_callback_read_char), the line is drawn by the log pane (rl_redisplay_function
 * only asks for a frame), readline's signal and terminal handling is off. History lives in
 * $XDG_STATE_HOME/postformer/history (~/.local/state/postformer/history). Tab completes Lua names:
 * globals, fields and methods, found with raw reads and metatables' __index tables (and the tables
 * a C __index function keeps as upvalues) so that completion never runs user __index code. */
#include <curses.h>
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "tui/app.h"

static app *R_app;
static unsigned char R_q[64];
static int R_qn, R_qh;
static char R_history[4096];
static char R_prompt[32] = "> ";
static FILE *R_null;

/* ---- readline hooks --------------------------------------------------------------------------- */

static int q_getc(FILE *f)
{
    (void)f;
    if (R_qh >= R_qn) return EOF;
    return R_q[R_qh++];
}

static int q_available(void) { return R_qh < R_qn; }
static void redisplay(void) { R_app->dirty = 1; }
static void prep_term(int meta) { (void)meta; }
static void deprep_term(void) {}

static void on_line(char *line)
{
    app *a = R_app;
    if (!line) {                     /* Ctrl-D on an empty line: back to the keys */
        app_set_mode(a, MODE_KEYS);
        return;
    }
    if (*line) {
        HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
        if (!last || strcmp(last->line, line) != 0) add_history(line);
    }
    app_run_line(a, line);
    free(line);
}

/* ---- completion ------------------------------------------------------------------------------- */

static char **C_matches;
static int C_n, C_cap, C_next;

static void add_match(const char *s)
{
    for (int i = 0; i < C_n; i++)
        if (strcmp(C_matches[i], s) == 0) return;
    if (C_n == C_cap) {
        int cap = C_cap ? 2 * C_cap : 64;
        char **m = realloc(C_matches, (size_t)cap * sizeof *m);
        if (!m) return;
        C_matches = m;
        C_cap = cap;
    }
    char *d = strdup(s);
    if (d) C_matches[C_n++] = d;
}

static void clear_matches(void)
{
    for (int i = 0; i < C_n; i++) free(C_matches[i]);
    C_n = 0;
    C_next = 0;
}

/* a field of the value at idx without running code: raw get, then __index tables (and a C
 * __index function's table upvalues), then a userdata's user value table; pushes it (or nil) */
static void safe_get(lua_State *L, int idx, const char *key, int depth)
{
    idx = lua_absindex(L, idx);
    if (depth > 8) {
        lua_pushnil(L);
        return;
    }
    if (lua_istable(L, idx)) {
        lua_pushstring(L, key);
        lua_rawget(L, idx);
        if (!lua_isnil(L, -1)) return;
        lua_pop(L, 1);
    }
    if (lua_isuserdata(L, idx) && lua_getiuservalue(L, idx, 1) == LUA_TTABLE) {
        lua_pushstring(L, key);
        lua_rawget(L, -2);
        lua_remove(L, -2);
        if (!lua_isnil(L, -1)) return;
    }
    lua_pop(L, 1);
    if (lua_getmetatable(L, idx)) {
        lua_pushliteral(L, "__index");
        lua_rawget(L, -2);
        lua_remove(L, -2);
        if (lua_istable(L, -1)) {
            safe_get(L, -1, key, depth + 1);
            lua_remove(L, -2);
            return;
        }
        if (lua_iscfunction(L, -1)) {
            for (int u = 1; lua_getupvalue(L, -1, u); u++) {
                if (lua_istable(L, -1)) {
                    safe_get(L, -1, key, depth + 1);
                    if (!lua_isnil(L, -1)) {
                        lua_remove(L, -2);
                        lua_remove(L, -2);
                        return;
                    }
                    lua_pop(L, 1);
                }
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    lua_pushnil(L);
}

/* add prefix..key for each string key of the table at idx starting with part */
static void keys_of_table(lua_State *L, int idx, const char *prefix, const char *part, int methods)
{
    idx = lua_absindex(L, idx);
    size_t plen = strlen(part);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -2);
            /* names starting with _ only when asked for */
            if (strncmp(k, part, plen) == 0 && (k[0] != '_' || part[0] == '_') && (!methods || lua_isfunction(L, -1))) {
                char buf[512];
                snprintf(buf, sizeof buf, "%s%s", prefix, k);
                add_match(buf);
            }
        }
        lua_pop(L, 1);
    }
}

static void keys_of(lua_State *L, int idx, const char *prefix, const char *part, int methods, int depth)
{
    idx = lua_absindex(L, idx);
    if (depth > 8) return;
    if (lua_istable(L, idx)) keys_of_table(L, idx, prefix, part, methods);
    if (lua_isuserdata(L, idx)) {
        if (lua_getiuservalue(L, idx, 1) == LUA_TTABLE) keys_of_table(L, -1, prefix, part, methods);
        lua_pop(L, 1);
    }
    if (lua_getmetatable(L, idx)) {
        lua_pushliteral(L, "__index");
        lua_rawget(L, -2);
        if (lua_istable(L, -1)) {
            keys_of(L, -1, prefix, part, methods, depth + 1);
        } else if (lua_iscfunction(L, -1)) {
            for (int u = 1; lua_getupvalue(L, -1, u); u++) {
                if (lua_istable(L, -1)) keys_of(L, -1, prefix, part, methods, depth + 1);
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 2);
    }
}

static const char *const lua_keywords[] = {"and", "break", "do", "else", "elseif", "end", "false", "for",
    "function", "goto", "if", "in", "local", "nil", "not", "or", "repeat", "return", "then", "true",
    "until", "while", NULL};

static void compute_matches(const char *text)
{
    lua_State *L = R_app->L;
    clear_matches();
    int top = lua_gettop(L);
    const char *sep = NULL;
    for (const char *p = text; *p; p++)
        if (*p == '.' || *p == ':') sep = p;
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    if (!sep) {
        keys_of(L, -1, "", text, 0, 0);
        for (int i = 0; lua_keywords[i]; i++)
            if (strncmp(lua_keywords[i], text, strlen(text)) == 0) add_match(lua_keywords[i]);
    } else {
        /* walk the path before the last separator */
        char path[512];
        size_t n = (size_t)(sep - text);
        if (n >= sizeof path) n = sizeof path - 1;
        memcpy(path, text, n);
        path[n] = '\0';
        char *save = NULL;
        int ok = 1;
        for (char *seg = strtok_r(path, ".:", &save); seg; seg = strtok_r(NULL, ".:", &save)) {
            safe_get(L, -1, seg, 0);
            lua_remove(L, -2);
            if (lua_isnil(L, -1)) {
                ok = 0;
                break;
            }
        }
        if (ok) {
            char prefix[520];
            snprintf(prefix, sizeof prefix, "%.*s", (int)(sep - text + 1), text);
            keys_of(L, -1, prefix, sep + 1, *sep == ':', 0);
        }
    }
    lua_settop(L, top);
    /* sorted, for a stable display */
    for (int i = 1; i < C_n; i++)
        for (int j = i; j > 0 && strcmp(C_matches[j - 1], C_matches[j]) > 0; j--) {
            char *t = C_matches[j];
            C_matches[j] = C_matches[j - 1];
            C_matches[j - 1] = t;
        }
}

static char *generator(const char *text, int state)
{
    if (state == 0) compute_matches(text);
    if (C_next < C_n) return strdup(C_matches[C_next++]);
    return NULL;
}

static char **complete(const char *text, int start, int end)
{
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1;
    rl_completion_append_character = '\0';
    return rl_completion_matches(text, generator);
}

/* more than one match: list them in the log (readline would print them on the terminal) */
static void display_matches(char **matches, int n, int max)
{
    (void)max;
    char line[1024];
    size_t len = 0;
    line[0] = '\0';
    for (int i = 1; i <= n && len < sizeof line - 64; i++) {
        const char *m = matches[i];
        const char *tail = strrchr(m, '.');
        const char *colon = strrchr(m, ':');
        if (colon > tail) tail = colon;
        len += (size_t)snprintf(line + len, sizeof line - len, "%s  ", tail ? tail + 1 : m);
    }
    log_add(R_app, LOG_INFO, "%s", line);
}

/* ---- the line --------------------------------------------------------------------------------- */

static void history_path(void)
{
    const char *state = getenv("XDG_STATE_HOME");
    const char *home = getenv("HOME");
    char dir[3000];
    if (state && *state == '/') snprintf(dir, sizeof dir, "%s/postformer", state);
    else if (home && *home) snprintf(dir, sizeof dir, "%s/.local/state/postformer", home);
    else {
        R_history[0] = '\0';
        return;
    }
    /* mkdir -p */
    for (char *p = dir + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(dir, 0700) < 0 && errno != EEXIST) break;
            *p = '/';
        }
    }
    mkdir(dir, 0700);
    snprintf(R_history, sizeof R_history, "%s/history", dir);
}

void repl_open(app *a)
{
    R_app = a;
    R_null = fopen("/dev/null", "w");
    rl_catch_signals = 0;
    rl_catch_sigwinch = 0;
    rl_change_environment = 0;
    rl_prep_term_function = prep_term;
    rl_deprep_term_function = deprep_term;
    rl_getc_function = q_getc;
    rl_input_available_hook = q_available;
    rl_redisplay_function = redisplay;
    rl_outstream = R_null ? R_null : stderr;
    rl_instream = stdin;
    rl_readline_name = "postformer";
    rl_attempted_completion_function = complete;
    rl_completion_display_matches_hook = display_matches;
    rl_completer_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^~#[]";
    rl_basic_word_break_characters = rl_completer_word_break_characters;
    rl_variable_bind("bell-style", "none");
    using_history();
    stifle_history(2000);
    history_path();
    if (R_history[0]) read_history(R_history);
    rl_callback_handler_install(R_prompt, on_line);
}

void repl_close(app *a)
{
    (void)a;
    rl_callback_handler_remove();
    if (R_history[0]) {
        write_history(R_history);
        history_truncate_file(R_history, 2000);
    }
    clear_matches();
    free(C_matches);
    C_matches = NULL;
    C_cap = 0;
    if (R_null) fclose(R_null);
    R_null = NULL;
}

static void push_bytes(const char *s, size_t n)
{
    R_qn = R_qh = 0;
    for (size_t i = 0; i < n && R_qn < (int)sizeof R_q; i++) R_q[R_qn++] = (unsigned char)s[i];
    while (R_qh < R_qn) rl_callback_read_char();
}

void repl_feed(app *a, wint_t key, int fn)
{
    (void)a;
    if (fn) {
        const char *seq = NULL;
        switch (key) {
        case KEY_LEFT: seq = "\033[D"; break;
        case KEY_RIGHT: seq = "\033[C"; break;
        case KEY_UP: seq = "\033[A"; break;
        case KEY_DOWN: seq = "\033[B"; break;
        case KEY_HOME: seq = "\001"; break;
        case KEY_END: seq = "\005"; break;
        case KEY_DC: seq = "\004"; break;
        case KEY_BACKSPACE: seq = "\177"; break;
        case KEY_ENTER: seq = "\r"; break;
        default: return;
        }
        /* Delete at the end of an empty line must not end input like Ctrl-D */
        if (key == KEY_DC && rl_end == 0) return;
        push_bytes(seq, strlen(seq));
        return;
    }
    char buf[8];
    mbstate_t st;
    memset(&st, 0, sizeof st);
    size_t n = wcrtomb(buf, (wchar_t)key, &st);
    if (n == (size_t)-1) return;
    push_bytes(buf, n);
}

void repl_prompt(app *a, const char *prompt)
{
    (void)a;
    snprintf(R_prompt, sizeof R_prompt, "%s", prompt);
    rl_set_prompt(R_prompt);
    a->dirty = 1;
}

const char *repl_prompt_text(void) { return R_prompt; }

const char *repl_line(int *point)
{
    *point = rl_point;
    return rl_line_buffer ? rl_line_buffer : "";
}

void repl_set_line(const char *text)
{
    rl_replace_line(text, 0);
    rl_point = rl_end;
}
