/* The main view: the probes of the focused layer, drawn for what they are (a view per layer kind),
 * and a generic view for any other kind so a new layer kind shows something from its first day.
 *
 *   attention   weights of the last token over the cache per head; the tile map of the last
 *               forward (skipped / partial / full) with computed/total tiles and work saved
 *   retention   gamma^n per head (how fast each head forgets), state norm per head over the last
 *               tokens, the state of each head
 *   mamba, s4d  the state (channels x state), dt per channel over the last tokens, decay exp(dt A)
 *   mamba2      the state of each head
 *   moe         routing (tokens x experts), load per expert, load over training steps, entropy /
 *               dead experts / drop rate / aux and z losses, with alarms for collapse
 *   other       every probe: a number, bars, a heatmap (3-D and up flattened to rows)
 * Heatmaps: half blocks (two rows of values a cell), sequential colours for magnitudes, diverging
 * for signed values, a legend with the range under each. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tui/app.h"

typedef struct rect {
    int x, y, w, h;
} rect;

static const tui_color head_colors[] = {TC_RGB(255, 170, 90), TC_RGB(120, 200, 255), TC_RGB(120, 220, 120),
                                        TC_RGB(230, 120, 230), TC_RGB(255, 220, 90), TC_RGB(90, 220, 210),
                                        TC_RGB(255, 120, 120), TC_RGB(180, 180, 255)};
#define N_HEAD_COLORS ((int)(sizeof head_colors / sizeof *head_colors))

static size_t numel(const pf_tensor *t) { return pf_tensor_numel(t); }

static void no_data(tui_grid *g, rect r, const char *name, const probe_snap *s)
{
    grid_printf(g, r.x, r.y, r.w, UI_DIM, TC_DEFAULT, 0, "%s: %s", name,
                !s ? "(not published by this layer)" : s->err[0] ? s->err : "no data yet (s steps a token)");
}

/* label, heatmap of v (rows, cols), legend; returns rows used. transpose: show (cols, rows). */
static int heat_block(tui_grid *g, rect r, const char *label, const float *v, int rows, int cols, int transpose,
                      int max_zoom)
{
    if (r.h < 3 || r.w < 6 || rows <= 0 || cols <= 0) return 0;
    const float *src = v;
    float *tmp = NULL;
    if (transpose) {
        tmp = malloc((size_t)rows * (size_t)cols * sizeof *tmp);
        if (!tmp) return 0;
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) tmp[(size_t)j * rows + i] = v[(size_t)i * cols + j];
        int t = rows;
        rows = cols;
        cols = t;
        src = tmp;
    }
    pf_range range = pf_range_of(src, (size_t)rows * (size_t)cols);
    grid_text(g, r.x, r.y, r.w, TC_DEFAULT, TC_DEFAULT, TA_BOLD, label);
    heat_layout l = grid_heatmap(g, r.x, r.y + 1, r.w, r.h - 2, src, rows, cols, &range, max_zoom);
    grid_legend(g, r.x, r.y + 1 + l.h, r.w < 40 ? r.w : 40, &range);
    free(tmp);
    return l.h + 2;
}

/* one line of values as a heatmap strip with a label; returns rows used */
static int strip(tui_grid *g, rect r, const char *label, const float *v, int n)
{
    if (r.h < 2) return 0;
    pf_range range = pf_range_of(v, (size_t)n);
    int lw = (int)strlen(label) + 1;
    grid_text(g, r.x, r.y, r.w, TC_DEFAULT, TC_DEFAULT, TA_BOLD, label);
    if (r.w - lw < 4) return 1;
    heat_layout l = grid_heatmap(g, r.x + lw, r.y, r.w - lw, 1, v, 1, n, &range, 4);
    (void)l;
    return 1;
}

/* ---- attention -------------------------------------------------------------------------------- */

static void view_attention(app *a, tui_grid *g, rect r)
{
    const probe_snap *wts = watch_probe(a, "weights"), *tiles = watch_probe(a, "tiles");
    const probe_snap *counts = watch_probe(a, "tile_counts"), *kv = watch_probe(a, "kv_len");
    int side = r.w >= 90;
    rect left = r, right = r;
    if (side) {
        left.w = r.w * 3 / 5;
        right.x = r.x + left.w + 2;
        right.w = r.w - left.w - 2;
    } else {
        left.h = r.h / 2;
        right.y = r.y + left.h;
        right.h = r.h - left.h;
    }
    if (wts && wts->t && wts->t->ndim == 2) {
        int H = wts->t->shape[0], K = wts->t->shape[1];
        int cols = K, first = 0;
        if (K > left.w - 4) {   /* the most recent keys */
            cols = left.w - 4;
            first = K - cols;
        }
        float *v = malloc((size_t)H * (size_t)cols * sizeof *v);
        if (v) {
            for (int h = 0; h < H; h++)
                memcpy(v + (size_t)h * cols, wts->t->data + (size_t)h * K + first, (size_t)cols * sizeof *v);
            char label[96];
            snprintf(label, sizeof label, "weights: last token over the cache (%d heads x %d keys%s)", H, K,
                     first ? ", latest" : "");
            rect hr = {left.x + 4, left.y, left.w - 4, left.h};
            heat_block(g, hr, label, v, H, cols, 0, 2);
            grid_text(g, left.x, left.y, 4, TC_DEFAULT, TC_DEFAULT, TA_BOLD, "");
            heat_layout l;
            heat_layout_make(&l, H, cols, hr.w, hr.h - 2, 2);
            for (int h = 0; h < H; h++) {
                int py = h * l.px_h;
                if (py / 2 < l.h && py % 2 == 0 && l.px_h >= 2) grid_printf(g, left.x, left.y + 1 + py / 2, 4, UI_DIM, TC_DEFAULT, 0, "h%d", h + 1);
            }
            free(v);
        }
    } else {
        no_data(g, left, "weights", wts);
    }
    int y = right.y;
    if (counts && counts->t && numel(counts->t) >= 3) {
        double sk = counts->t->data[0], pa = counts->t->data[1], fu = counts->t->data[2];
        double tot = sk + pa + fu;
        grid_printf(g, right.x, y++, right.w, TC_DEFAULT, TC_DEFAULT, TA_BOLD, "tiles: computed %.0f/%.0f", pa + fu, tot);
        if (tot > 0)
            grid_printf(g, right.x, y++, right.w, UI_GOOD, TC_DEFAULT, 0, "work saved vs dense: %.1f%%", 100.0 * sk / tot);
        grid_printf(g, right.x, y++, right.w, UI_DIM, TC_DEFAULT, 0, "skipped %.0f  partial %.0f  full %.0f", sk, pa, fu);
    }
    if (kv && kv->t && numel(kv->t) >= 1)
        grid_printf(g, right.x, y++, right.w, UI_DIM, TC_DEFAULT, 0, "KV cache: %.0f tokens", kv->t->data[0]);
    rect tr = {right.x, y, right.w, right.y + right.h - y};
    if (tiles && tiles->t && tiles->t->ndim == 2) {
        int QT = tiles->t->shape[0], KT = tiles->t->shape[1];
        /* discrete: skipped dark, partial mid, full bright */
        pf_range range = {0, 2, PF_CMAP_SEQUENTIAL};
        grid_printf(g, tr.x, tr.y, tr.w, TC_DEFAULT, TC_DEFAULT, TA_BOLD, "tile map (%d q x %d k tiles)", QT, KT);
        heat_layout l = grid_heatmap(g, tr.x, tr.y + 1, tr.w, tr.h - 2, tiles->t->data, QT, KT, &range, 4);
        int ly = tr.y + 1 + l.h;
        if (ly < r.y + r.h) {
            int x = tr.x;
            static const char *const names[] = {"skipped", "partial", "full"};
            for (int k = 0; k < 3; k++) {
                if (g->mono) grid_put(g, x, ly, heat_glyph(k / 2.0), TC_DEFAULT, TC_DEFAULT, 0);
                else grid_put(g, x, ly, ' ', TC_DEFAULT, heat_color(&range, (float)k), 0);
                x += 2 + grid_text(g, x + 1, ly, tr.w - (x - tr.x) - 1, UI_DIM, TC_DEFAULT, 0, names[k]);
            }
        }
    } else if (tr.h > 0) {
        no_data(g, tr, "tiles", tiles ? tiles : NULL);
        if (tiles && !tiles->t && tr.h > 1)
            grid_text(g, tr.x, tr.y + 1, tr.w, UI_DIM, TC_DEFAULT, 0, "(a forward fills it: m:forward{...} or m:train)");
    }
}

/* ---- retention -------------------------------------------------------------------------------- */

/* "h1 0.9688 h2 ..." in the heads' colours */
static void legend_heads(tui_grid *g, int x, int y, int w, int H, const float *vals)
{
    int cx = 0;
    for (int h = 0; h < H && cx < w; h++) {
        char buf[48];
        snprintf(buf, sizeof buf, "h%d %.4f", h + 1, vals ? vals[h] : 0.0f);
        cx += 1 + grid_text(g, x + cx, y, w - cx, head_colors[h % N_HEAD_COLORS], TC_DEFAULT, 0, buf);
    }
}

static int history_curves(tui_grid *g, rect r, const char *label, const probe_hist *ph)
{
    if (r.h < 3) return 0;
    int n = ph->len, H = ph->n;
    grid_printf(g, r.x, r.y, r.w, TC_DEFAULT, TC_DEFAULT, TA_BOLD, "%s over the last %d tokens", label, n);
    float lo = INFINITY, hi = -INFINITY;
    float *series = malloc((size_t)n * sizeof *series);
    if (!series) return 1;
    for (int i = 0; i < n * H; i++) {
        float v = ph->rows[i];
        if (!isfinite(v)) continue;
        lo = fminf(lo, v);
        hi = fmaxf(hi, v);
    }
    if (!(hi > lo)) hi = lo + 1;
    int ch = r.h - 2;
    uint8_t *dots = calloc((size_t)r.w * (size_t)ch, 1);
    for (int h = 0; h < H && dots; h++) {
        memset(dots, 0, (size_t)r.w * (size_t)ch);
        for (int i = 0; i < n; i++) {
            int row = (ph->head - n + i + WATCH_HIST) % WATCH_HIST;
            series[i] = ph->rows[(size_t)row * H + h];
        }
        braille_plot(dots, r.w, ch, series, n, lo, hi);
        grid_braille(g, r.x, r.y + 1, r.w, ch, dots, head_colors[h % N_HEAD_COLORS]);
    }
    free(dots);
    grid_printf(g, r.x, r.y + r.h - 1, r.w, UI_DIM, TC_DEFAULT, 0, "range %.3g..%.3g", lo, hi);
    free(series);
    return r.h;
}

static void view_retention(app *a, tui_grid *g, rect r)
{
    const probe_snap *gamma = watch_probe(a, "gamma"), *state = watch_probe(a, "state");
    const probe_hist *norms = watch_hist(a, "state_norm");
    int y = r.y;
    int top_h = r.h >= 24 ? r.h / 3 : r.h / 2;
    rect left = {r.x, y, r.w / 2 - 1, top_h}, right = {r.x + r.w / 2 + 1, y, r.w - r.w / 2 - 1, top_h};
    if (gamma && gamma->t) {
        int H = (int)numel(gamma->t);
        int N = 256;
        grid_printf(g, left.x, left.y, left.w, TC_DEFAULT, TC_DEFAULT, TA_BOLD, "decay gamma^n per head, n = 0..%d", N);
        int ch = left.h - 2;
        if (ch >= 1) {
            uint8_t *dots = calloc((size_t)left.w * (size_t)ch, 1);
            float *c = malloc((size_t)N * sizeof *c);
            for (int h = 0; h < H && dots && c; h++) {
                memset(dots, 0, (size_t)left.w * (size_t)ch);
                for (int n = 0; n < N; n++) c[n] = powf(gamma->t->data[h], (float)n);
                braille_plot(dots, left.w, ch, c, N, 0, 1);
                grid_braille(g, left.x, left.y + 1, left.w, ch, dots, head_colors[h % N_HEAD_COLORS]);
            }
            free(dots);
            free(c);
            legend_heads(g, left.x, left.y + left.h - 1, left.w, H, gamma->t->data);
        }
    } else {
        no_data(g, left, "gamma", gamma);
    }
    if (norms) history_curves(g, right, "state norm per head", norms);
    else grid_text(g, right.x, right.y, right.w, UI_DIM, TC_DEFAULT, 0, "state norm: step tokens to see it move");
    y += top_h + 1;
    if (state && state->t && state->t->ndim == 3) {
        int H = state->t->shape[0], K = state->t->shape[1], V = state->t->shape[2];
        int per = (r.w - 2 * (H - 1)) / H;
        if (per < 8) per = r.w, H = H > 1 ? 1 : H;
        for (int h = 0; h < H; h++) {
            rect hr = {r.x + h * (per + 2), y, per, r.y + r.h - y};
            char label[64];
            snprintf(label, sizeof label, "state h%d (%dx%d)", h + 1, K, V);
            heat_block(g, hr, label, state->t->data + (size_t)h * K * V, K, V, 0, 2);
        }
    } else if (y < r.y + r.h) {
        no_data(g, (rect){r.x, y, r.w, 1}, "state", state);
    }
}

/* ---- SSMs ------------------------------------------------------------------------------------- */

static void view_ssm(app *a, tui_grid *g, rect r)
{
    const probe_snap *state = watch_probe(a, "state"), *decay = watch_probe(a, "decay"), *dt = watch_probe(a, "dt");
    const probe_hist *dth = watch_hist(a, "dt");
    int y = r.y;
    if (state && state->t && state->t->ndim == 3) {          /* mamba2: per head */
        int H = state->t->shape[0], P = state->t->shape[1], N = state->t->shape[2];
        int per = (r.w - 2 * (H - 1)) / (H > 0 ? H : 1);
        if (per < 8) H = 1, per = r.w;
        for (int h = 0; h < H; h++) {
            char label[64];
            snprintf(label, sizeof label, "state h%d (%dx%d)", h + 1, P, N);
            heat_block(g, (rect){r.x + h * (per + 2), y, per, r.h / 2}, label, state->t->data + (size_t)h * P * N, P, N, 0, 2);
        }
        y += r.h / 2;
    } else if (state && state->t && state->t->ndim == 2) {
        int D = state->t->shape[0], N = state->t->shape[1];
        char label[96];
        snprintf(label, sizeof label, "state h (state %d down x channels %d across)", N, D);
        y += heat_block(g, (rect){r.x, y, r.w, r.h * 2 / 5}, label, state->t->data, D, N, 1, 2);
    } else {
        no_data(g, (rect){r.x, y++, r.w, 1}, "state", state);
    }
    if (dt && dt->t) {
        int D = (int)numel(dt->t);
        if (dth && r.y + r.h - y >= 5) {
            /* dt per channel over the last tokens: time down, channels across */
            int n = dth->len;
            float *v = malloc((size_t)n * (size_t)D * sizeof *v);
            if (v) {
                for (int i = 0; i < n; i++)
                    memcpy(v + (size_t)i * D, dth->rows + (size_t)((dth->head - n + i + WATCH_HIST) % WATCH_HIST) * D,
                           (size_t)D * sizeof *v);
                char label[96];
                snprintf(label, sizeof label, "dt (selectivity) over the last %d tokens (time down)", n);
                int hh = (r.y + r.h - y) / 2;
                y += heat_block(g, (rect){r.x, y, r.w, hh < 4 ? 4 : hh}, label, v, n, D, 0, 1);
                free(v);
            }
        } else {
            y += strip(g, (rect){r.x, y, r.w, 2}, "dt", dt->t->data, D);
        }
    }
    if (decay && decay->t && decay->t->ndim == 2 && r.y + r.h - y >= 4) {
        int D = decay->t->shape[0], N = decay->t->shape[1];
        heat_block(g, (rect){r.x, y, r.w, r.y + r.h - y}, "decay exp(dt A): how much of h survives a step",
                   decay->t->data, D, N, 1, 2);
    }
}

/* ---- MoE -------------------------------------------------------------------------------------- */

static float scalar(app *a, const char *name, int *ok)
{
    const probe_snap *s = watch_probe(a, name);
    *ok = s && s->t && numel(s->t) >= 1;
    return *ok ? s->t->data[0] : 0.0f;
}

static void view_moe(app *a, tui_grid *g, rect r)
{
    const probe_snap *gates = watch_probe(a, "gates"), *load = watch_probe(a, "load");
    const probe_snap *hist = watch_probe(a, "load_history");
    int half = r.w / 2;
    rect left = {r.x, r.y, half - 1, r.h}, right = {r.x + half + 1, r.y, r.w - half - 1, r.h};
    int y = left.y;
    /* indicators and alarms */
    int ok_e, ok_d, ok_r, ok_a, ok_z;
    float ent = scalar(a, "entropy", &ok_e), dead = scalar(a, "dead", &ok_d), drop = scalar(a, "drop_rate", &ok_r);
    float aux = scalar(a, "aux_loss", &ok_a), z = scalar(a, "z_loss", &ok_z);
    int E = load && load->t ? (int)numel(load->t) : gates && gates->t && gates->t->ndim == 2 ? gates->t->shape[1] : 0;
    char line[160];
    int n = snprintf(line, sizeof line, "%s", "");
    if (ok_e) n += snprintf(line + n, sizeof line - (size_t)n, "entropy %.3f  ", ent);
    if (ok_d) n += snprintf(line + n, sizeof line - (size_t)n, "dead %.0f  ", dead);
    if (ok_r) n += snprintf(line + n, sizeof line - (size_t)n, "drop %.1f%%  ", 100 * drop);
    if (ok_a) n += snprintf(line + n, sizeof line - (size_t)n, "aux %.4f  ", aux);
    if (ok_z) snprintf(line + n, sizeof line - (size_t)n, "z %.4f", z);
    grid_text(g, left.x, y++, left.w, TC_DEFAULT, TC_DEFAULT, 0, line);
    float maxload = 0;
    int argmax = 0;
    for (int e = 0; load && load->t && e < E; e++)
        if (load->t->data[e] > maxload) maxload = load->t->data[e], argmax = e;
    if (ok_d && dead > 0)
        grid_printf(g, left.x, y++, left.w, UI_ERROR, TC_DEFAULT, TA_BOLD | TA_REVERSE, " ALARM: %.0f dead expert%s ", dead, dead > 1 ? "s" : "");
    /* entropy is normalised by log(experts): 1 uniform routing, 0 every token to one expert */
    if (ok_e && E > 1 && ent < 0.5f)
        grid_printf(g, left.x, y++, left.w, UI_ERROR, TC_DEFAULT, TA_BOLD | TA_REVERSE, " ALARM: routing collapse (entropy %.2f of 1) ", ent);
    if (E > 1 && maxload > 2.0f / E)
        grid_printf(g, left.x, y++, left.w, UI_WARN, TC_DEFAULT, TA_BOLD, " expert %d takes %.0f%% of tokens ", argmax + 1, 100 * maxload);
    if (ok_r && drop > 0.1f)
        grid_printf(g, left.x, y++, left.w, UI_WARN, TC_DEFAULT, TA_BOLD, " %.0f%% of tokens dropped (capacity) ", 100 * drop);
    /* load per expert */
    if (load && load->t) {
        grid_text(g, left.x, y++, left.w, TC_DEFAULT, TC_DEFAULT, TA_BOLD, "load per expert (last batch)");
        for (int e = 0; e < E && y < left.y + left.h / 2 + 2; e++, y++) {
            float f = load->t->data[e];
            grid_printf(g, left.x, y, 10, UI_DIM, TC_DEFAULT, 0, "e%-2d %4.0f%%", e + 1, 100 * f);
            tui_color c = E > 1 && f > 2.0f / E ? UI_WARN : f == 0 ? UI_ERROR : UI_ACCENT;
            grid_hbar(g, left.x + 10, y, left.w - 10, maxload > 0 ? f / maxload : 0, c);
        }
    } else {
        no_data(g, (rect){left.x, y++, left.w, 1}, "load", load);
    }
    if (gates && gates->t && gates->t->ndim == 2 && left.y + left.h - y >= 4)
        heat_block(g, (rect){left.x, y, left.w, left.y + left.h - y}, "routing (tokens down x experts across)",
                   gates->t->data, gates->t->shape[0], gates->t->shape[1], 0, 4);
    if (hist && hist->t && hist->t->ndim == 2) {
        int S = hist->t->shape[0], EE = hist->t->shape[1];
        char label[96];
        snprintf(label, sizeof label, "load over training (experts down x %d steps across)", S);
        heat_block(g, right, label, hist->t->data, S, EE, 1, 2);
    } else {
        no_data(g, right, "load_history", hist);
    }
}

/* ---- generic ---------------------------------------------------------------------------------- */

static int show_probe(tui_grid *g, rect r, const probe_snap *s, int big)
{
    if (!s->t) {
        no_data(g, (rect){r.x, r.y, r.w, 1}, s->name, s);
        return 1;
    }
    const pf_tensor *t = s->t;
    size_t n = numel(t);
    char shape[64];
    int k = snprintf(shape, sizeof shape, "[");
    for (int d = 0; d < t->ndim; d++) k += snprintf(shape + k, sizeof shape - (size_t)k, d ? ", %d" : "%d", t->shape[d]);
    snprintf(shape + k, sizeof shape - (size_t)k, "]");
    if (n == 1) {
        grid_printf(g, r.x, r.y, r.w, TC_DEFAULT, TC_DEFAULT, TA_BOLD, "%s = %.6g", s->name, t->data[0]);
        return 1;
    }
    pf_range range = pf_range_of(t->data, n);
    char label[128];
    snprintf(label, sizeof label, "%s %s  min %.3g max %.3g", s->name, shape, range.cmap == PF_CMAP_DIVERGING ? -range.hi : range.lo, range.hi);
    if (!big || r.h < 4) {
        return strip(g, (rect){r.x, r.y, r.w, 1}, s->name, t->data, (int)n);
    }
    if (t->ndim == 1) {
        int rows = (int)n < r.h - 1 ? (int)n : r.h - 1;
        grid_text(g, r.x, r.y, r.w, TC_DEFAULT, TC_DEFAULT, TA_BOLD, label);
        float mx = fmaxf(fabsf(range.lo), fabsf(range.hi));
        for (int i = 0; i < rows; i++) {
            grid_printf(g, r.x, r.y + 1 + i, 14, UI_DIM, TC_DEFAULT, 0, "%4d %8.3g", i + 1, t->data[i]);
            grid_hbar(g, r.x + 14, r.y + 1 + i, r.w - 14, mx > 0 ? fabsf(t->data[i]) / mx : 0,
                      t->data[i] < 0 ? TC_RGB(110, 150, 230) : UI_ACCENT);
        }
        if ((int)n > rows && r.h > rows + 1) strip(g, (rect){r.x, r.y + r.h - 1, r.w, 1}, "all", t->data, (int)n);
        return r.h;
    }
    int cols = t->shape[t->ndim - 1];
    int rows = (int)(n / (size_t)cols);
    return heat_block(g, r, label, t->data, rows, cols, 0, 4);
}

static void view_generic(app *a, tui_grid *g, rect r)
{
    watch *w = &a->w;
    watch_refresh(a);
    if (w->n_snap == 0) {
        grid_text(g, r.x, r.y, r.w, UI_DIM, TC_DEFAULT, 0, "this layer publishes no probes");
        return;
    }
    int sel = w->probe_sel < w->n_snap ? w->probe_sel : 0;
    int y = r.y;
    /* the others, one line each, then the picked one large */
    for (int i = 0; i < w->n_snap && y < r.y + r.h / 3; i++) {
        if (i == sel) continue;
        y += show_probe(g, (rect){r.x, y, r.w, 1}, &w->snap[i], 0);
    }
    grid_text(g, r.x, y++, r.w, UI_DIM, TC_DEFAULT, 0, "p / P picks the probe shown large:");
    show_probe(g, (rect){r.x, y, r.w, r.y + r.h - y}, &w->snap[sel], 1);
}

/* ---- the pane --------------------------------------------------------------------------------- */

static void draw(pane *p, app *a, tui_grid *g)
{
    watch *w = &a->w;
    char title[96];
    if (w->n_blocks > 0)
        snprintf(title, sizeof title, "Probes: layer %d %s", w->focus + 1, w->blocks[w->focus].kind);
    else snprintf(title, sizeof title, "Probes");
    grid_box(g, p->x, p->y, p->w, p->h, title, a->mode == MODE_KEYS);
    rect r = {p->x + 2, p->y + 1, p->w - 4, p->h - 2};
    if (r.w < 10 || r.h < 2) return;
    if (w->n_blocks == 0) {
        grid_text(g, r.x, r.y, r.w, UI_DIM, TC_DEFAULT, 0, "the focused layer's insides show here once there is a model");
        return;
    }
    const char *kind = w->blocks[w->focus].kind;
    /* a picked probe (p) shows in the generic view for any kind */
    if (w->probe_sel > 0) view_generic(a, g, r);
    else if (strcmp(kind, "attention") == 0) view_attention(a, g, r);
    else if (strcmp(kind, "retention") == 0) view_retention(a, g, r);
    else if (strcmp(kind, "mamba") == 0 || strcmp(kind, "s4d") == 0 || strcmp(kind, "mamba2") == 0) view_ssm(a, g, r);
    else if (strcmp(kind, "moe") == 0) view_moe(a, g, r);
    else view_generic(a, g, r);
}

const pane_class pane_probes_class = {.name = "probes", .draw = draw};
