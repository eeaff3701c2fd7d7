/* The log pane: what Lua printed, results, errors with their tracebacks, and at its bottom the REPL
 * line readline is editing (or, in the keys mode, how to reach it). */
#include <stdio.h>
#include <string.h>

#include "tui/app.h"

/* code points in s[0..n) */
static int cps(const char *s, size_t n)
{
    int c = 0;
    for (size_t i = 0; i < n && s[i]; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80) c++;
    return c;
}

/* byte offset of code point k of s (or its end) */
static size_t cp_offset(const char *s, int k)
{
    size_t i = 0;
    for (int c = 0; s[i]; i++) {
        if (((unsigned char)s[i] & 0xc0) != 0x80) {
            if (c == k) return i;
            c++;
        }
    }
    return i;
}

static tui_color style_color(log_style st)
{
    switch (st) {
    case LOG_INPUT: return UI_ACCENT;
    case LOG_RESULT: return UI_GOOD;
    case LOG_ERROR: return UI_ERROR;
    case LOG_INFO: return UI_DIM;
    default: return TC_DEFAULT;
    }
}

static void draw(pane *p, app *a, tui_grid *g)
{
    char title[64];
    snprintf(title, sizeof title, a->log.scroll ? "Log (scrolled %d, PgDn)" : "Log", a->log.scroll);
    grid_box(g, p->x, p->y, p->w, p->h, title, a->mode != MODE_KEYS);
    int cw = p->w - 2, rows = p->h - 3;   /* the last inside row is the prompt */
    if (cw < 4) return;
    /* log lines, wrapped, newest at the bottom */
    int y = p->y + 1 + rows - 1;
    int skip = a->log.scroll;
    for (int i = a->log.n - 1; i >= 0 && y >= p->y + 1; i--) {
        const log_line *l = log_get(&a->log, i);
        const char *t = l->text ? l->text : "";
        int n = cps(t, strlen(t));
        int wraps = n == 0 ? 1 : (n + cw - 1) / cw;
        for (int k = wraps - 1; k >= 0 && y >= p->y + 1; k--) {
            if (skip > 0) {
                skip--;
                continue;
            }
            grid_text(g, p->x + 1, y, cw, style_color(l->style), TC_DEFAULT,
                      l->style == LOG_ERROR && k == 0 ? TA_BOLD : 0, t + cp_offset(t, k * cw));
            y--;
        }
    }
    /* the prompt line */
    int py = p->y + p->h - 2;
    if (a->mode == MODE_KEYS) {
        grid_text(g, p->x + 1, py, cw, UI_DIM, TC_DEFAULT, 0,
                  a->log.partial && *a->log.partial ? a->log.partial : "(Enter: type Lua   :  a command   ?  help)");
        return;
    }
    int point;
    const char *line = repl_line(&point);
    const char *prompt = repl_prompt_text();
    int plen = cps(prompt, strlen(prompt));
    int cur = plen + cps(line, (size_t)point);
    int off = cur >= cw - 1 ? cur - (cw - 2) : 0;   /* scroll so the cursor shows */
    int x = 0;
    for (int i = 0; i < plen; i++, x++)
        if (x >= off) grid_put(g, p->x + 1 + x - off, py, (uint32_t)prompt[cp_offset(prompt, i)], UI_ACCENT, TC_DEFAULT, TA_BOLD);
    size_t lo = cp_offset(line, off > plen ? off - plen : 0);
    grid_text(g, p->x + 1 + (x > off ? x - off : 0), py, cw - (x > off ? x - off : 0), TC_DEFAULT, TC_DEFAULT, 0, line + lo);
    g->cx = p->x + 1 + cur - off;
    g->cy = py;
}

const pane_class pane_log_class = {.name = "log", .draw = draw};
