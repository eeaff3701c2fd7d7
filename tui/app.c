/* The main loop of the terminal playground (see app.h): keys, the focus model, Lua jobs, running,
 * frames.
 *
 * Focus model: the keys go to the views (KEYS mode: s steps, r runs, j/k move between layers, ...)
 * until Enter opens the Lua prompt (LUA mode: everything typed goes to readline; Enter runs the
 * line and the prompt stays for the next; Esc goes back to the keys) or ':' opens the command
 * prompt (one command, then back to the keys). F1, F5, F6, PgUp/PgDn and Ctrl-C work in every mode.
 *
 * One frame: compose every pane into the grid, then the screen puts it out at once; at most 30
 * frames a second, and only when something changed. */
#include <curses.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "scripts/lua_module.h"
#include "tui/app.h"
#include "tui/screen.h"

enum { LOG_CAP = 2000 };
static const double FRAME_S = 1.0 / 30.0;
static const double run_speeds[SPEED_LEVELS] = {2, 5, 10, 30, 100, 1000, 0};

double app_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- the log ---------------------------------------------------------------------------------- */

static void log_push(app *a, log_style style, const char *text, size_t len)
{
    tui_log *lg = &a->log;
    if (!lg->lines) {
        lg->lines = calloc(LOG_CAP, sizeof *lg->lines);
        if (!lg->lines) return;
        lg->cap = LOG_CAP;
    }
    char *s = malloc(len + 1);
    if (!s) return;
    memcpy(s, text, len);
    s[len] = '\0';
    int slot;
    if (lg->n < lg->cap) {
        slot = (lg->head + lg->n) % lg->cap;
        lg->n++;
    } else {
        slot = lg->head;
        free(lg->lines[slot].text);
        lg->head = (lg->head + 1) % lg->cap;
    }
    lg->lines[slot] = (log_line){s, style};
    if (lg->scroll > 0) lg->scroll++;
    a->dirty = 1;
}

void log_text(app *a, log_style style, const char *text)
{
    if (!text) return;
    for (;;) {
        const char *nl = strchr(text, '\n');
        size_t len = nl ? (size_t)(nl - text) : strlen(text);
        log_push(a, style, text, len);
        if (!nl) break;
        text = nl + 1;
    }
}

void log_add(app *a, log_style style, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_text(a, style, buf);
}

const log_line *log_get(const tui_log *lg, int i)
{
    if (i < 0 || i >= lg->n) return NULL;
    return &lg->lines[(lg->head + i) % lg->cap];
}

static void log_free(tui_log *lg)
{
    for (int i = 0; i < lg->cap; i++) free(lg->lines[i].text);
    free(lg->lines);
    free(lg->partial);
    memset(lg, 0, sizeof *lg);
}

/* ---- layout and frames ------------------------------------------------------------------------ */

static void place(pane *p, int x, int y, int w, int h)
{
    p->x = x;
    p->y = y;
    p->w = w > 0 ? w : 0;
    p->h = h > 0 ? h : 0;
    p->visible = p->w >= 8 && p->h >= 3;
}

void app_layout(app *a)
{
    int W = a->grid.w, H = a->grid.h - 1;   /* the status line on top */
    int lw = W / 4 < 26 ? 26 : W / 4 > 48 ? 48 : W / 4;
    if (W < 60) lw = W / 3;
    int layers_h = a->w.n_blocks + 5;
    if (layers_h < 6) layers_h = 6;
    if (layers_h > H / 2) layers_h = H / 2;
    int tokens_h = H >= 40 ? 8 : 6;
    int log_h = H / 4 < 6 ? 6 : H / 4;
    if (H < 20) log_h = 5;
    place(&a->panes[PANE_LAYERS], 0, 1, lw, layers_h);
    place(&a->panes[PANE_METRICS], 0, 1 + layers_h, lw, H - layers_h);
    place(&a->panes[PANE_TOKENS], lw, 1, W - lw, tokens_h);
    place(&a->panes[PANE_PROBES], lw, 1 + tokens_h, W - lw, H - tokens_h - log_h);
    place(&a->panes[PANE_LOG], lw, 1 + H - log_h, W - lw, log_h);
    int hw = W - 4 < 76 ? W - 4 : 76, hh = H - 2 < 30 ? H - 2 : 30;
    place(&a->panes[PANE_HELP], (W - hw) / 2, 1 + (H - hh) / 2, hw, hh);
    for (int i = 0; i < N_PANES; i++)
        if (a->panes[i].cls->resize) a->panes[i].cls->resize(&a->panes[i], a);
}

const char *app_speed_name(const app *a)
{
    static char buf[32];
    double s = run_speeds[a->speed];
    if (s == 0) return "max";
    snprintf(buf, sizeof buf, "%g tok/s", s);
    return buf;
}

static void draw_status(app *a, tui_grid *g)
{
    grid_fill(g, 0, 0, g->w, 1, ' ', TC_DEFAULT, TC_RGB(40, 44, 60), g->mono ? TA_REVERSE : 0);
    tui_color bg = TC_RGB(40, 44, 60);
    int attr = g->mono ? TA_REVERSE : 0;
    int x = grid_text(g, 0, 0, g->w, TC_RGB(255, 255, 255), bg, attr | TA_BOLD, " postformer ");
    static const char *const modes[] = {"KEYS", "LUA", "CMD"};
    x += grid_printf(g, x, 0, g->w - x, a->mode == MODE_KEYS ? UI_GOOD : UI_WARN, bg, attr | TA_BOLD, "[%s] ",
                     modes[a->mode]);
    if (jobs_count(a) > 0) {
        if (a->w.training && a->w.train_steps > 0)
            x += grid_printf(g, x, 0, g->w - x, UI_WARN, bg, attr, "training %d/%d  ", a->w.train_step,
                             a->w.train_steps);
        else
            x += grid_printf(g, x, 0, g->w - x, UI_WARN, bg, attr, "lua running (%d)  ", jobs_count(a));
    }
    if (a->running) x += grid_printf(g, x, 0, g->w - x, UI_GOOD, bg, attr, "running %s  ", app_speed_name(a));
    const char *hint = a->mode == MODE_KEYS ? "Enter: Lua  :: command  s: step  r: run  j/k: layer  ?: help  q: quit"
                                            : "Esc: back to keys  Tab: complete  Ctrl-C: interrupt  F1: help";
    int hl = (int)strlen(hint);
    if (g->w - x <= hl + 1) {
        hint = a->mode == MODE_KEYS ? "Enter: Lua  ?: help  q: quit" : "Esc: keys  F1: help";
        hl = (int)strlen(hint);
    }
    if (g->w - x > hl + 1) grid_text(g, g->w - hl - 1, 0, hl, TC_RGB(200, 200, 210), bg, attr, hint);
}

void app_draw(app *a, tui_grid *g)
{
    grid_clear(g);
    if (g->w < 40 || g->h < 12) {
        grid_text(g, 0, 0, g->w, UI_WARN, TC_DEFAULT, TA_BOLD, "postformer: the terminal is too small");
        grid_printf(g, 0, 1, g->w, TC_DEFAULT, TC_DEFAULT, 0, "(%dx%d; 80x24 or more, please; q quits)", g->w, g->h);
        return;
    }
    draw_status(a, g);
    for (int i = 0; i < N_PANES; i++) {
        pane *p = &a->panes[i];
        if (i == PANE_HELP) continue;
        if (p->visible) p->cls->draw(p, a, g);
    }
    if (a->help && a->panes[PANE_HELP].visible) {
        g->cx = -1;
        a->panes[PANE_HELP].cls->draw(&a->panes[PANE_HELP], a, g);
    }
}

static void frame(app *a)
{
    int W, H;
    screen_size(&W, &H);
    if (W != a->grid.w || H != a->grid.h) {
        if (grid_resize(&a->grid, W, H) < 0) return;
        a->grid.mono = screen_color_mode() == SCREEN_MONO;
        app_layout(a);
        a->full_redraw = 1;
    }
    app_layout(a);
    app_draw(a, &a->grid);
    screen_present(&a->grid, a->full_redraw);
    a->full_redraw = 0;
    a->dirty = 0;
    double now = app_clock();
    double dt = now - a->last_frame;
    if (dt > 0) a->fps = 0.8 * a->fps + 0.2 / dt;
    a->last_frame = now;
}

/* ---- modes, keys and lines -------------------------------------------------------------------- */

void app_set_mode(app *a, focus_mode m)
{
    a->mode = m;
    if (m == MODE_LUA) repl_prompt(a, a->pending_chunk ? ">> " : "> ");
    else if (m == MODE_COMMAND) repl_prompt(a, ":");
    else repl_set_line("");
    a->dirty = 1;
}

void app_toggle_run(app *a)
{
    a->running = !a->running;
    a->run_credit = 0;
    a->last_run = app_clock();
    a->dirty = 1;
}

/* compile a typed chunk: "return <line>" first (to show values), then the line; incomplete input
 * (an error at <eof>) waits for more lines */
static void run_lua(app *a, const char *line)
{
    lua_State *L = a->L;
    size_t have = a->pending_chunk ? strlen(a->pending_chunk) : 0;
    char *chunk = malloc(have + strlen(line) + 2);
    if (!chunk) return;
    if (have) {
        memcpy(chunk, a->pending_chunk, have);
        chunk[have++] = '\n';
    }
    strcpy(chunk + have, line);
    free(a->pending_chunk);
    a->pending_chunk = NULL;
    int status = LUA_ERRSYNTAX, expr = 0;
    if (!strchr(chunk, '\n')) {
        lua_pushfstring(L, "return %s;", chunk);
        status = luaL_loadbuffer(L, lua_tostring(L, -1), lua_rawlen(L, -1), "=stdin");
        lua_remove(L, -2);
        if (status == LUA_OK) expr = 1;
        else lua_pop(L, 1);
    }
    if (status != LUA_OK) status = luaL_loadbuffer(L, chunk, strlen(chunk), "=stdin");
    if (status == LUA_OK) {
        jobs_start(a, "stdin", 1);
        (void)expr;
        free(chunk);
    } else {
        size_t len;
        const char *msg = lua_tolstring(L, -1, &len);
        if (msg && len >= 5 && strcmp(msg + len - 5, "<eof>") == 0) {
            a->pending_chunk = chunk;   /* more to come */
        } else {
            log_text(a, LOG_ERROR, msg);
            free(chunk);
        }
        lua_pop(L, 1);
    }
    if (a->mode == MODE_LUA) repl_prompt(a, a->pending_chunk ? ">> " : "> ");
}

void app_run_line(app *a, const char *line)
{
    if (a->mode == MODE_COMMAND) {
        log_add(a, LOG_INPUT, ":%s", line);
        command_run(a, line);
        if (a->mode == MODE_COMMAND) app_set_mode(a, MODE_KEYS);
        return;
    }
    log_add(a, LOG_INPUT, "%s%s", a->pending_chunk ? ">> " : "> ", line);
    if (!a->pending_chunk && line[0] == ':') {
        command_run(a, line + 1);
        return;
    }
    if (!a->pending_chunk && !*line) return;
    run_lua(a, line);
}

static void scroll_log(app *a, int by)
{
    int page = a->panes[PANE_LOG].h - 3;
    a->log.scroll += by * (page > 1 ? page : 1);
    if (a->log.scroll > a->log.n - 1) a->log.scroll = a->log.n - 1;
    if (a->log.scroll < 0) a->log.scroll = 0;
    a->dirty = 1;
}

static void interrupt(app *a)
{
    if (jobs_count(a) > 0) jobs_interrupt(a);
    else if (a->running) app_toggle_run(a);
    if (a->pending_chunk) {
        free(a->pending_chunk);
        a->pending_chunk = NULL;
    }
    if (a->mode != MODE_KEYS) {
        repl_set_line("");
        app_set_mode(a, a->mode);
    }
    a->dirty = 1;
}

void app_key(app *a, wint_t key, int fn)
{
    a->dirty = 1;
    if (a->help && !(fn && key == KEY_RESIZE)) {      /* any key closes the help, and only that */
        a->help = 0;
        return;
    }
    if (fn) {
        switch (key) {
        case KEY_F(1): a->help = !a->help; return;
        case KEY_F(5): watch_step(a); return;
        case KEY_F(6): app_toggle_run(a); return;
        case KEY_F(10):
            if (a->mode == MODE_KEYS) a->quit = 1;
            return;
        case KEY_PPAGE: scroll_log(a, 1); return;
        case KEY_NPAGE: scroll_log(a, -1); return;
        default: break;
        }
    } else if (key == 3) {                               /* Ctrl-C */
        interrupt(a);
        return;
    } else if (key == 12) {                              /* Ctrl-L */
        a->full_redraw = 1;
        return;
    }
    if (a->mode != MODE_KEYS) {
        if (!fn && key == 27) {
            app_set_mode(a, MODE_KEYS);
            return;
        }
        repl_feed(a, key, fn);
        return;
    }
    /* the keys mode */
    if (fn) {
        switch (key) {
        case KEY_DOWN: watch_focus(a, a->w.focus + 1); break;
        case KEY_UP: watch_focus(a, a->w.focus - 1); break;
        case KEY_BTAB: watch_focus(a, a->w.focus - 1); break;
        case KEY_ENTER: app_set_mode(a, MODE_LUA); break;
        default: break;
        }
        return;
    }
    switch (key) {
    case 's': case ' ': watch_step(a); break;
    case 'r': app_toggle_run(a); break;
    case '+': case '=': command_run(a, "speed +"); break;
    case '-': command_run(a, "speed -"); break;
    case 'j': case '\t': watch_focus(a, a->w.focus + 1 < a->w.n_blocks ? a->w.focus + 1 : (key == '\t' ? 0 : a->w.focus)); break;
    case 'k': watch_focus(a, a->w.focus - 1); break;
    case 'p': command_run(a, "probe"); break;
    case 'P':
        if (a->w.n_blocks > 0) {
            int n = a->w.blocks[a->w.focus].n_probes;
            if (n > 0) a->w.probe_sel = (a->w.probe_sel + n - 1) % n;
        }
        break;
    case 'R': case '0': command_run(a, "reset"); break;
    case 'x': app_png(a, NULL); break;
    case '\r': case '\n': app_set_mode(a, MODE_LUA); break;
    case ':': app_set_mode(a, MODE_COMMAND); break;
    case '?': a->help = 1; break;
    case 'q': a->quit = 1; break;
    default: break;
    }
}

/* ---- keys read while Lua runs ----------------------------------------------------------------- */

void app_poll_keys(app *a)
{
    wint_t k;
    int fn;
    while (screen_key(&k, &fn)) {
        if (!fn && k == 3) {
            a->interrupt = 1;
            continue;
        }
        if (a->keyq_n < (int)(sizeof a->keyq / sizeof *a->keyq)) {
            a->keyq[a->keyq_n] = k;
            a->keyq_fn[a->keyq_n] = fn;
            a->keyq_n++;
        }
    }
}

/* ---- PNG -------------------------------------------------------------------------------------- */

/* the probe the focused view is about (for x): the picked one, else the kind's main probe */
static const char *view_probe(app *a)
{
    watch *w = &a->w;
    if (w->n_blocks == 0) return NULL;
    const watch_block *b = &w->blocks[w->focus];
    if (b->n_probes == 0) return NULL;
    if (w->probe_sel > 0 && w->probe_sel < b->n_probes) return b->probe[w->probe_sel];
    static const char *const main_probe[][2] = {{"attention", "weights"}, {"retention", "state"},
        {"mamba", "state"}, {"mamba2", "state"}, {"s4d", "state"}, {"moe", "load_history"},
        {"liquid", "state"}};
    for (size_t i = 0; i < sizeof main_probe / sizeof *main_probe; i++)
        if (strcmp(b->kind, main_probe[i][0]) == 0)
            for (int k = 0; k < b->n_probes; k++)
                if (strcmp(b->probe[k], main_probe[i][1]) == 0) return b->probe[k];
    return b->probe[0];
}

void app_png(app *a, const char *path)
{
    lua_State *L = a->L;
    const char *probe = view_probe(a);
    if (a->w.model_ref == LUA_NOREF || !probe) {
        log_add(a, LOG_INFO, "x: nothing to export (no model, or the layer has no probes)");
        return;
    }
    char name[256];
    if (!path) {
        snprintf(name, sizeof name, "postformer-%d-%s-%d.png", a->w.focus + 1, probe, ++a->png_count);
        path = name;
    }
    int top = lua_gettop(L);
    lua_getglobal(L, "pf");
    lua_getfield(L, -1, "png");
    lua_pushstring(L, path);
    lua_createtable(L, 0, 3);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->w.model_ref);
    lua_setfield(L, -2, "model");
    lua_pushinteger(L, a->w.focus + 1);
    lua_setfield(L, -2, "layer");
    lua_pushstring(L, probe);
    lua_setfield(L, -2, "probe");
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) log_add(a, LOG_ERROR, "png: %s", lua_tostring(L, -1));
    else log_add(a, LOG_INFO, "wrote %s", lua_tostring(L, -1) ? lua_tostring(L, -1) : path);
    lua_settop(L, top);
}

/* ---- stdout and stderr into the log ----------------------------------------------------------- */

static int cap_fd = -1, saved_out = -1, saved_err = -1;
static char cap_buf[4096];
static size_t cap_len;

static int capture_start(int *tty_out)
{
    fflush(stdout);
    fflush(stderr);
    int p[2];
    *tty_out = dup(STDOUT_FILENO);
    saved_err = dup(STDERR_FILENO);
    if (*tty_out < 0 || saved_err < 0 || pipe(p) < 0) return -1;
    saved_out = *tty_out;
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    fcntl(p[1], F_SETFL, O_NONBLOCK);    /* a flood of output is dropped rather than blocking */
    dup2(p[1], STDOUT_FILENO);
    dup2(p[1], STDERR_FILENO);
    close(p[1]);
    cap_fd = p[0];
    return 0;
}

static void capture_read(app *a)
{
    if (cap_fd < 0) return;
    fflush(stdout);
    fflush(stderr);
    for (;;) {
        ssize_t n = read(cap_fd, cap_buf + cap_len, sizeof cap_buf - 1 - cap_len);
        if (n <= 0) break;
        cap_len += (size_t)n;
        cap_buf[cap_len] = '\0';
        char *start = cap_buf, *nl;
        while ((nl = strchr(start, '\n'))) {
            *nl = '\0';
            log_text(a, LOG_OUT, start);
            start = nl + 1;
        }
        cap_len = strlen(start);
        memmove(cap_buf, start, cap_len + 1);
        if (cap_len == sizeof cap_buf - 1) {
            log_text(a, LOG_OUT, cap_buf);
            cap_len = 0;
        }
    }
}

static void capture_stop(void)
{
    if (cap_fd < 0) return;
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, STDOUT_FILENO);
    dup2(saved_err, STDERR_FILENO);
    close(saved_err);
    close(cap_fd);
    cap_fd = -1;
}

/* ---- the loop --------------------------------------------------------------------------------- */

static void app_init(app *a, lua_State *L)
{
    memset(a, 0, sizeof *a);
    a->L = L;
    a->w.model_ref = a->w.task_ref = LUA_NOREF;
    a->speed = 2;
    a->slice_ms = 15;
    const pane_class *classes[N_PANES] = {&pane_layers_class, &pane_tokens_class, &pane_probes_class,
                                          &pane_metrics_class, &pane_log_class, &pane_help_class};
    for (int i = 0; i < N_PANES; i++) a->panes[i].cls = classes[i];
    jobs_open(a);
}

static void app_free(app *a)
{
    for (int i = 0; i < N_PANES; i++)
        if (a->panes[i].cls->free) a->panes[i].cls->free(&a->panes[i]);
    while (a->n_jobs > 0) {
        luaL_unref(a->L, LUA_REGISTRYINDEX, a->jobs[a->n_jobs - 1].ref);
        a->n_jobs--;
    }
    free(a->jobs);
    watch_free(a);
    log_free(&a->log);
    grid_free(&a->grid);
    free(a->pending_chunk);
}

/* step tokens owed by the run clock, for at most budget seconds */
static void run_tokens(app *a, double budget)
{
    double now = app_clock(), speed = run_speeds[a->speed];
    double end = now + budget;
    if (speed > 0) {
        a->run_credit += (now - a->last_run) * speed;
        if (a->run_credit > speed * 0.25 + 1) a->run_credit = speed * 0.25 + 1;
    }
    a->last_run = now;
    while (a->running && (speed == 0 || a->run_credit >= 1)) {
        if (watch_step(a) < 0) {
            a->running = 0;
            break;
        }
        a->run_credit -= 1;
        if (app_clock() >= end) break;
    }
}

static void handle_key(app *a, wint_t k, int fn)
{
    if (fn && k == KEY_RESIZE) {
        a->dirty = 1;
        a->full_redraw = 1;
        return;
    }
    app_key(a, k, fn);
}

static void loop(app *a)
{
    while (!a->quit) {
        for (int i = 0; i < a->keyq_n && !a->quit; i++) handle_key(a, a->keyq[i], a->keyq_fn[i]);
        a->keyq_n = 0;
        if (a->interrupt) {
            a->interrupt = 0;
            interrupt(a);
        }
        wint_t k;
        int fn;
        while (!a->quit && screen_key(&k, &fn)) handle_key(a, k, fn);
        if (a->quit) break;
        capture_read(a);
        if (jobs_count(a) > 0) jobs_run(a, 15);
        if (a->running) run_tokens(a, 0.02);
        watch_check_global(a);
        double now = app_clock();
        if (a->w.training && now - a->w.last_train_time > 1.0) {
            a->w.training = 0;
            a->dirty = 1;
        }
        if ((a->dirty && now - a->last_frame >= FRAME_S) || a->full_redraw) frame(a);
        int timeout;
        if (jobs_count(a) > 0 || a->keyq_n > 0) timeout = 0;
        else if (a->running) {
            double s = run_speeds[a->speed];
            timeout = s == 0 ? 0 : (int)(1000.0 / s < 33 ? 1000.0 / s : 33);
        } else if (a->dirty) {
            timeout = (int)((FRAME_S - (now - a->last_frame)) * 1000) + 1;
            if (timeout < 0) timeout = 0;
        } else {
            timeout = 500;
        }
        if (timeout > 0) screen_wait(timeout);
    }
}

int tui_main(lua_State *L, const char *script, const char *script_name)
{
    static app A;
    app *a = &A;
    int tty_out;
    if (capture_start(&tty_out) < 0) {
        fprintf(stderr, "postformer: cannot set up the terminal\n");
        return 1;
    }
    FILE *out = fdopen(tty_out, "w");
    if (!out || screen_open(stdin, out, NULL) < 0) {
        capture_stop();
        fprintf(stderr, "postformer: cannot start the terminal UI\n");
        return 1;
    }
    app_init(a, L);
    repl_open(a);
    log_add(a, LOG_INFO, "postformer %s: Enter types Lua, ':' a command, ? lists the keys, q quits.", PF_VERSION);
    log_add(a, LOG_INFO, "colours: %s", screen_color_name());
    if (script) {
        if (luaL_loadfile(L, script) == LUA_OK) jobs_start(a, script_name, 0);
        else {
            log_text(a, LOG_ERROR, lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
    a->dirty = 1;
    frame(a);
    loop(a);
    repl_close(a);
    screen_close();
    fclose(out);
    capture_stop();
    app_free(a);
    return 0;
}

/* ---- make bench ------------------------------------------------------------------------------- */

int tui_bench(lua_State *L, const char *script, int W, int H)
{
    static app A;
    app *a = &A;
    FILE *out = fopen("/dev/null", "w"), *in = fopen("/dev/null", "r");
    if (!out || !in || screen_open(in, out, "xterm-256color") < 0) {
        fprintf(stderr, "bench: cannot open a virtual screen\n");
        return 1;
    }
    screen_set_size(W, H);
    app_init(a, L);
    if (luaL_loadstring(L, script) != LUA_OK) {
        screen_close();
        fprintf(stderr, "bench: %s\n", lua_tostring(L, -1));
        return 1;
    }
    jobs_start(a, "bench", 0);
    while (jobs_count(a) > 0) jobs_run(a, 1000);
    int ok = a->w.model_ref != LUA_NOREF;
    for (int i = 0; ok && i < 40; i++) watch_step(a);

    /* full redraws: every pane recomposed (probes fetched again), every cell put out */
    grid_resize(&a->grid, W, H);
    a->grid.mono = screen_color_mode() == SCREEN_MONO;
    app_layout(a);
    int frames = 0;
    double t0 = app_clock();
    while (app_clock() - t0 < 2.0) {
        a->w.snap_valid = 0;
        app_draw(a, &a->grid);
        screen_present(&a->grid, 1);
        frames++;
    }
    double fps = frames / (app_clock() - t0);

    /* stepping: headless (m:step in a Lua loop) vs live (run at full speed with frames at 30/s) */
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->w.model_ref);
    lua_setglobal(L, "bench_m");
    const char *headless = "local m, t0, n = bench_m, pf.clock(), 0\n"
                           "m:reset()\n"
                           "while pf.clock() - t0 < 2 do m:step(n % 60); n = n + 1; if n % 64 == 0 then m:reset() end end\n"
                           "return n / (pf.clock() - t0)";
    double head_tps = 0;
    if (luaL_dostring(L, headless) == LUA_OK) head_tps = lua_tonumber(L, -1);
    lua_settop(L, 0);
    a->running = 1;
    a->speed = SPEED_LEVELS - 1;
    double tok0 = a->w.tokens;
    t0 = app_clock();
    double next_frame = t0;
    int live_frames = 0;
    while (app_clock() - t0 < 2.0) {
        run_tokens(a, 0.005);
        if (app_clock() >= next_frame) {
            app_draw(a, &a->grid);
            screen_present(&a->grid, 0);
            live_frames++;
            next_frame += FRAME_S;
        }
    }
    double live_tps = (a->w.tokens - tok0) / (app_clock() - t0);
    char colors[32];
    snprintf(colors, sizeof colors, "%s", screen_color_name());
    screen_close();
    fclose(out);
    fclose(in);
    printf("{\"redraw_fps\": %.1f, \"width\": %d, \"height\": %d, \"colors\": \"%s\", "
           "\"step_tokens_per_s_headless\": %.0f, \"step_tokens_per_s_live\": %.0f, \"live_frames\": %d}\n",
           fps, W, H, colors, head_tps, live_tps, live_frames);
    app_free(a);
    return ok ? 0 : 1;
}
