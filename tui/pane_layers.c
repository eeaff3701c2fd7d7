/* The layer stack: kind, parameters, state bytes, FLOPs per token and the last step's time of
 * every block (the last two when the pane is wide enough), the focused one highlighted; the model
 * and the whole step's time below. */
#include <stdio.h>
#include <string.h>

#include "tui/app.h"

static void si(char *buf, size_t n, double x)
{
    static const char *const units[] = {"", "k", "M", "G", "T"};
    int i = 0;
    while ((x >= 1000 || x <= -1000) && i < 4) {
        x /= 1000;
        i++;
    }
    if (i == 0) snprintf(buf, n, "%.0f", x);
    else snprintf(buf, n, "%.1f%s", x, units[i]);
}

static void bytes(char *buf, size_t n, double x)
{
    static const char *const units[] = {"B", "K", "M", "G"};
    int i = 0;
    while (x >= 1024 && i < 3) {
        x /= 1024;
        i++;
    }
    if (i == 0) snprintf(buf, n, "%.0f%s", x, units[i]);
    else snprintf(buf, n, "%.1f%s", x, units[i]);
}

static void draw(pane *p, app *a, tui_grid *g)
{
    watch *w = &a->w;
    watch_refresh(a);   /* this frame's state bytes and step times, not the last frame's */
    grid_box(g, p->x, p->y, p->w, p->h, "Layers", 0);
    int x = p->x + 1, y = p->y + 1, cw = p->w - 2;
    if (w->model_ref == LUA_NOREF) {
        grid_text(g, x, y, cw, UI_DIM, TC_DEFAULT, 0, "no model yet:");
        grid_text(g, x, y + 1, cw, UI_DIM, TC_DEFAULT, 0, "m = pf.model{...}");
        return;
    }
    int wide = cw >= 46, timed = cw >= 32;
    grid_text(g, x, y, cw, UI_DIM, TC_DEFAULT, TA_UNDERLINE,
              wide ? " # kind          params  state   FLOP/t    us"
                   : timed ? " # kind     params state    us" : " # kind     params state");
    y++;
    int rows = p->h - 4;
    int first = w->focus >= rows ? w->focus - rows + 1 : 0;
    for (int i = first; i < w->n_blocks && y < p->y + p->h - 2; i++, y++) {
        const watch_block *b = &w->blocks[i];
        char pa[16], st[16], fl[16], line[128];
        si(pa, sizeof pa, b->params);
        bytes(st, sizeof st, b->state_bytes);
        si(fl, sizeof fl, b->flops);
        if (wide)
            snprintf(line, sizeof line, "%2d %-12.12s %7s %6s %7s %5.0f%s", i + 1, b->kind, pa, st, fl,
                     b->step_s * 1e6, b->shares ? " =" : "");
        else if (timed) snprintf(line, sizeof line, "%2d %-9.9s%6s %5s %5.0f", i + 1, b->kind, pa, st, b->step_s * 1e6);
        else snprintf(line, sizeof line, "%2d %-9.9s%6s %5s", i + 1, b->kind, pa, st);
        int focused = i == w->focus;
        if (focused) grid_fill(g, x, y, cw, 1, ' ', TC_DEFAULT, TC_RGB(50, 70, 110), g->mono ? TA_REVERSE : 0);
        grid_text(g, x, y, cw, focused ? TC_RGB(255, 255, 255) : TC_DEFAULT, focused ? TC_RGB(50, 70, 110) : TC_DEFAULT,
                  focused ? (TA_BOLD | (g->mono ? TA_REVERSE : 0)) : 0, line);
    }
    char pa[16];
    double total = 0;
    for (int i = 0; i < w->n_blocks; i++) total += w->blocks[i].params;
    si(pa, sizeof pa, total);
    grid_printf(g, x, p->y + p->h - 2, cw, UI_DIM, TC_DEFAULT, 0, "V %d  d %d  step %.0f us", w->vocab, w->dim,
                w->step_s * 1e6);
}

const pane_class pane_layers_class = {.name = "layers", .draw = draw};
