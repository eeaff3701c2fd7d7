/* The token stream: the inputs of the sequence being stepped, the model's prediction at each
 * position and its probability, the probability of the right answer shown by colour where the task
 * scores the position (surprise: dark = surprised, bright = expected); the cursor is the token
 * stepped last. Text tasks show characters. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tui/app.h"

static void token_str(char *buf, size_t n, const watch *w, int tok, int width)
{
    width = width < 1 ? 1 : width > 10 ? 10 : width;
    if (tok < 0) {
        snprintf(buf, n, "%*s", width, "");
        return;
    }
    if (w->text) {
        if (tok >= 32 && tok < 127) snprintf(buf, n, "%c", tok);
        else if (tok == '\n') snprintf(buf, n, "\xe2\x86\xb5");   /* ↵ */
        else snprintf(buf, n, "\xc2\xb7");                        /* · */
        return;
    }
    snprintf(buf, n, "%*d", width, tok);
}

static void draw(pane *p, app *a, tui_grid *g)
{
    watch *w = &a->w;
    char title[128];
    if (w->T > 0)
        snprintf(title, sizeof title, "Tokens: %s, position %d/%d%s", w->task_name, w->pos, w->T,
                 a->running ? " (running)" : "");
    else snprintf(title, sizeof title, "Tokens");
    grid_box(g, p->x, p->y, p->w, p->h, title, 0);
    int x0 = p->x + 1, y = p->y + 1, cw = p->w - 2;
    if (w->model_ref == LUA_NOREF) {
        grid_text(g, x0, y, cw, UI_DIM, TC_DEFAULT, 0, "no model: m = pf.model{...}, then s steps a token");
        return;
    }
    if (w->T == 0 || !w->inputs) {
        grid_text(g, x0, y, cw, UI_DIM, TC_DEFAULT, 0, "s (or Space) steps a token; r runs");
        return;
    }
    int digits = 1;
    for (int v = w->vocab - 1; v >= 10; v /= 10) digits++;
    int tw = w->text ? 1 : digits + 1;          /* cells per token */
    int label = 5;
    int fit = (cw - label) / tw;
    if (fit < 1) return;
    int first = 0;
    if (w->pos > fit - 4) first = w->pos - (fit - 4);
    if (first > w->T - fit) first = w->T - fit;
    if (first < 0) first = 0;
    grid_text(g, x0, y, label, UI_DIM, TC_DEFAULT, 0, "in");
    grid_text(g, x0, y + 1, label, UI_DIM, TC_DEFAULT, 0, "pred");
    grid_text(g, x0, y + 2, label, UI_DIM, TC_DEFAULT, 0, "p");
    for (int i = first; i < w->T && i < first + fit; i++) {
        int x = x0 + label + (i - first) * tw;
        char buf[16];
        int cur = i == w->pos - 1;
        token_str(buf, sizeof buf, w, w->inputs[i], tw - (w->text ? 0 : 1));
        tui_color fg = i < w->pos ? TC_DEFAULT : UI_DIM;
        if (w->mask[i] > 0 && i >= w->pos) fg = TC_RGB(170, 170, 200);
        grid_text(g, x + (w->text ? 0 : 1), y, tw, fg, cur ? TC_RGB(60, 90, 150) : TC_DEFAULT,
                  cur ? (TA_BOLD | (g->mono ? TA_REVERSE : 0)) : 0, buf);
        if (i >= w->pos || w->pred[i] < 0) continue;
        token_str(buf, sizeof buf, w, w->pred[i], tw - (w->text ? 0 : 1));
        tui_color pc = TC_DEFAULT;
        int attr = 0;
        if (!isnan(w->p_target[i])) {
            /* the right answer's probability: bright when expected, dark when surprised */
            pc = TC_MAP(PF_CMAP_SEQUENTIAL, (int)lround(55 + 200 * w->p_target[i]));
            if (w->pred[i] == w->targets[i]) attr = TA_BOLD;
            else attr = g->mono ? TA_UNDERLINE : 0;
        } else {
            pc = UI_DIM;
        }
        grid_text(g, x + (w->text ? 0 : 1), y + 1, tw, pc, TC_DEFAULT, attr, buf);
        if (p->h >= 5) {
            uint32_t bar = bar_glyph(w->p_pred[i]);
            grid_put(g, x + tw - 1, y + 2, bar, UI_ACCENT, TC_DEFAULT, 0);
        }
    }
    if (p->h >= 6 && w->pos > 0) {
        int i = w->pos - 1;
        char in[16], pr[16], tg[16];
        token_str(in, sizeof in, w, w->inputs[i], 1);
        token_str(pr, sizeof pr, w, w->pred[i], 1);
        if (w->mask[i] > 0) {
            token_str(tg, sizeof tg, w, w->targets[i], 1);
            grid_printf(g, x0, y + 3, cw, TC_DEFAULT, TC_DEFAULT, 0,
                        "last: in %s -> pred %s (p %.2f), target %s (p %.2f, surprise %.1f bits) %s", in, pr,
                        w->p_pred[i], tg, w->p_target[i], -log2(fmax(w->p_target[i], 1e-9)),
                        w->pred[i] == w->targets[i] ? "right" : "wrong");
        } else {
            grid_printf(g, x0, y + 3, cw, TC_DEFAULT, TC_DEFAULT, 0, "last: in %s -> pred %s (p %.2f), not scored", in, pr,
                        w->p_pred[i]);
        }
    }
}

const pane_class pane_tokens_class = {.name = "tokens", .draw = draw};
