/* Training metrics: loss and accuracy curves in braille (every training step of the watched model,
 * averaged down when there are more steps than room), tokens/s, learning rate, |g|, the auxiliary
 * losses. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tui/app.h"

/* one curve with its label, range and latest value in rows rows from y; returns rows used */
static int curve(tui_grid *g, int x, int y, int w, int rows, const char *name, const metric_series *s,
                 tui_color color, int zero_based)
{
    if (rows < 2 || w < 8) return 0;
    float lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < s->n; i++) {
        if (!isfinite(s->v[i])) continue;
        lo = fminf(lo, s->v[i]);
        hi = fmaxf(hi, s->v[i]);
    }
    if (s->n == 0) {
        grid_printf(g, x, y, w, UI_DIM, TC_DEFAULT, 0, "%s: no training yet", name);
        return 1;
    }
    if (zero_based) lo = fminf(lo, 0);
    if (hi <= lo) hi = lo + 1;
    grid_printf(g, x, y, w, color, TC_DEFAULT, TA_BOLD, "%s %.4g", name, s->v[s->n - 1]);
    char range[48];
    snprintf(range, sizeof range, "%.3g..%.3g", lo, hi);
    int rl = (int)strlen(range);
    if (w > rl + 12) grid_text(g, x + w - rl, y, rl, UI_DIM, TC_DEFAULT, 0, range);
    int ph = rows - 1;
    uint8_t *dots = calloc((size_t)w * (size_t)ph, 1);
    if (!dots) return 1;
    braille_plot(dots, w, ph, s->v, s->n, lo, hi);
    /* a faint baseline so an empty area still reads as a plot */
    for (int i = 0; i < w; i++) grid_put(g, x + i, y + ph, 0x2508, TC_RGB(70, 70, 80), TC_DEFAULT, 0);
    grid_braille(g, x, y + 1, w, ph, dots, color);
    free(dots);
    return rows;
}

static void draw(pane *p, app *a, tui_grid *g)
{
    watch *w = &a->w;
    grid_box(g, p->x, p->y, p->w, p->h, "Metrics", 0);
    int x = p->x + 1, y = p->y + 1, cw = p->w - 2, bottom = p->y + p->h - 1;
    if (w->train_step > 0) {
        char tps[32];
        double t = w->tokens_per_s;
        if (t >= 1e6) snprintf(tps, sizeof tps, "%.1fM", t / 1e6);
        else if (t >= 1e3) snprintf(tps, sizeof tps, "%.1fk", t / 1e3);
        else snprintf(tps, sizeof tps, "%.0f", t);
        grid_printf(g, x, y++, cw, TC_DEFAULT, TC_DEFAULT, 0, "step %d/%d  %s tok/s", w->train_step, w->train_steps, tps);
        if (y < bottom)
            grid_printf(g, x, y++, cw, UI_DIM, TC_DEFAULT, 0, "lr %.2e  |g| %.3g", w->lr, w->grad_norm);
    } else {
        grid_text(g, x, y++, cw, UI_DIM, TC_DEFAULT, 0, "m:train{task = ..., steps = N}");
    }
    int has_aux = 0;
    for (int i = 0; i < w->aux.n; i++)
        if (w->aux.v[i] != 0) has_aux = 1;
    int left = bottom - y - (has_aux ? 1 : 0);
    if (left < 2) return;
    int n_curves = has_aux ? 3 : 2;
    int each = left / n_curves;
    if (each < 2) each = 2;
    y += curve(g, x, y, cw, each, "loss", &w->loss, TC_RGB(255, 170, 90), 0);
    if (bottom - y >= 2) y += curve(g, x, y, cw, each, "acc", &w->acc, UI_GOOD, 1);
    if (has_aux && bottom - y >= 2) curve(g, x, y, cw, bottom - y, "aux", &w->aux, TC_RGB(200, 140, 255), 0);
}

const pane_class pane_metrics_class = {.name = "metrics", .draw = draw};
