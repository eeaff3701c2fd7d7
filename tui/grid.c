/* The frame grid and the drawing primitives (see grid.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tui/grid.h"

/* ---- the grid -------------------------------------------------------------------------------- */

int grid_resize(tui_grid *g, int w, int h)
{
    if (w < 1) w = 1;
    if (h < 1) h = 1;
    tui_cell *c = realloc(g->cells, (size_t)w * (size_t)h * sizeof *c);
    if (!c) return -1;
    g->cells = c;
    g->w = w;
    g->h = h;
    grid_clear(g);
    return 0;
}

void grid_free(tui_grid *g)
{
    free(g->cells);
    g->cells = NULL;
    g->w = g->h = 0;
}

void grid_clear(tui_grid *g)
{
    for (int i = 0; i < g->w * g->h; i++) g->cells[i] = (tui_cell){' ', TC_DEFAULT, TC_DEFAULT, 0};
    g->cx = g->cy = -1;
}

tui_cell *grid_at(tui_grid *g, int x, int y)
{
    if (x < 0 || y < 0 || x >= g->w || y >= g->h) return NULL;
    return &g->cells[(size_t)y * (size_t)g->w + (size_t)x];
}

void grid_put(tui_grid *g, int x, int y, uint32_t ch, tui_color fg, tui_color bg, int attr)
{
    tui_cell *c = grid_at(g, x, y);
    if (c) *c = (tui_cell){ch, fg, bg, (uint16_t)attr};
}

void grid_fill(tui_grid *g, int x, int y, int w, int h, uint32_t ch, tui_color fg, tui_color bg, int attr)
{
    for (int j = 0; j < h; j++)
        for (int i = 0; i < w; i++) grid_put(g, x + i, y + j, ch, fg, bg, attr);
}

/* the next code point of UTF-8 s (advancing *s); bad bytes come out as U+FFFD */
static uint32_t utf8_next(const char **s)
{
    const unsigned char *p = (const unsigned char *)*s;
    uint32_t c = *p++;
    int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
    if (c >= 0x80 && c < 0xc0) more = -1;
    if (more > 0) {
        c &= 0x3fu >> more;
        for (int i = 0; i < more; i++, p++) {
            if ((*p & 0xc0) != 0x80) {
                c = 0xfffd;
                break;
            }
            c = (c << 6) | (*p & 0x3fu);
        }
    } else if (more < 0) {
        c = 0xfffd;
    }
    *s = (const char *)p;
    return c;
}

int grid_text(tui_grid *g, int x, int y, int maxw, tui_color fg, tui_color bg, int attr, const char *s)
{
    int n = 0;
    while (*s && n < maxw && x + n < g->w) {
        uint32_t c = utf8_next(&s);
        if (c == '\t') c = ' ';
        if (c < 0x20 || c == 0x7f) c = '?';
        grid_put(g, x + n, y, c, fg, bg, attr);
        n++;
    }
    return n;
}

int grid_printf(tui_grid *g, int x, int y, int maxw, tui_color fg, tui_color bg, int attr, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return grid_text(g, x, y, maxw, fg, bg, attr, buf);
}

void grid_box(tui_grid *g, int x, int y, int w, int h, const char *title, int focused)
{
    if (w < 2 || h < 2) return;
    tui_color fg = focused ? TC_RGB(120, 200, 255) : TC_RGB(110, 110, 120);
    int attr = focused ? TA_BOLD : 0;
    for (int i = 1; i < w - 1; i++) {
        grid_put(g, x + i, y, 0x2500, fg, TC_DEFAULT, attr);
        grid_put(g, x + i, y + h - 1, 0x2500, fg, TC_DEFAULT, attr);
    }
    for (int j = 1; j < h - 1; j++) {
        grid_put(g, x, y + j, 0x2502, fg, TC_DEFAULT, attr);
        grid_put(g, x + w - 1, y + j, 0x2502, fg, TC_DEFAULT, attr);
    }
    grid_put(g, x, y, 0x256d, fg, TC_DEFAULT, attr);
    grid_put(g, x + w - 1, y, 0x256e, fg, TC_DEFAULT, attr);
    grid_put(g, x, y + h - 1, 0x2570, fg, TC_DEFAULT, attr);
    grid_put(g, x + w - 1, y + h - 1, 0x256f, fg, TC_DEFAULT, attr);
    if (title && *title && w > 4) {
        grid_put(g, x + 1, y, ' ', fg, TC_DEFAULT, attr);
        int n = grid_text(g, x + 2, y, w - 5, focused ? TC_RGB(255, 255, 255) : TC_DEFAULT, TC_DEFAULT,
                          TA_BOLD | (focused && g->mono ? TA_REVERSE : 0), title);
        grid_put(g, x + 2 + n, y, ' ', fg, TC_DEFAULT, attr);
    }
}

/* ---- heatmaps -------------------------------------------------------------------------------- */

void heat_layout_make(heat_layout *l, int rows, int cols, int w, int h, int max_zoom)
{
    if (max_zoom < 1) max_zoom = 1;
    if (w < 0) w = 0;
    if (h < 0) h = 0;
    l->rows = rows;
    l->cols = cols;
    l->cell_w = l->px_h = 1;
    if (rows <= 0 || cols <= 0 || w == 0 || h == 0) {
        l->w = l->h = l->px_w = l->px_rows = 0;
        return;
    }
    if (cols <= w) {
        l->cell_w = w / cols < max_zoom ? w / cols : max_zoom;
        l->px_w = cols * l->cell_w;
    } else {
        l->px_w = w;
    }
    if (rows <= 2 * h) {
        l->px_h = 2 * h / rows < max_zoom ? 2 * h / rows : max_zoom;
        l->px_rows = rows * l->px_h;
    } else {
        l->px_rows = 2 * h;
    }
    l->w = l->px_w;
    l->h = (l->px_rows + 1) / 2;
}

int heat_layout_row(const heat_layout *l, int py)
{
    if (py < 0 || py >= l->px_rows) return -1;
    if (l->rows <= l->px_rows && l->px_rows == l->rows * l->px_h) return py / l->px_h;
    return (int)((long)py * l->rows / l->px_rows);
}

int heat_layout_col(const heat_layout *l, int x)
{
    if (x < 0 || x >= l->px_w) return -1;
    if (l->px_w == l->cols * l->cell_w) return x / l->cell_w;
    return (int)((long)x * l->cols / l->px_w);
}

tui_color heat_color(const pf_range *r, float v)
{
    double t = pf_range_scale(r, v);
    if (isnan(t)) return TC_GREY;
    return TC_MAP(r->cmap, (int)lround(t * 255.0));
}

uint32_t heat_glyph(double t)
{
    static const char ramp[] = " .:-=+*#%@";
    if (isnan(t)) return '?';
    int i = (int)lround(t * 9.0);
    return (uint32_t)ramp[i < 0 ? 0 : i > 9 ? 9 : i];
}

heat_layout grid_heatmap(tui_grid *g, int x, int y, int w, int h, const float *v, int rows, int cols,
                         const pf_range *r, int max_zoom)
{
    heat_layout l;
    heat_layout_make(&l, rows, cols, w, h, max_zoom);
    for (int cy = 0; cy < l.h; cy++) {
        int top = heat_layout_row(&l, 2 * cy), bottom = heat_layout_row(&l, 2 * cy + 1);
        for (int cx = 0; cx < l.w; cx++) {
            int c = heat_layout_col(&l, cx);
            float vt = v[(size_t)top * cols + c];
            if (g->mono) {
                /* one value a cell: the upper one when rows are magnified, else both averaged */
                float vb = bottom >= 0 ? v[(size_t)bottom * cols + c] : vt;
                double t = bottom == top ? pf_range_scale(r, vt) : 0.5 * (pf_range_scale(r, vt) + pf_range_scale(r, vb));
                grid_put(g, x + cx, y + cy, heat_glyph(t), TC_DEFAULT, TC_DEFAULT, 0);
                continue;
            }
            tui_color fg = heat_color(r, vt);
            tui_color bg = bottom >= 0 ? heat_color(r, v[(size_t)bottom * cols + c]) : TC_DEFAULT;
            grid_put(g, x + cx, y + cy, 0x2580, fg, bg, 0);
        }
    }
    return l;
}

static void format_value(char *buf, size_t n, double v)
{
    double a = fabs(v);
    if (v == 0) snprintf(buf, n, "0");
    else if (a >= 1e4 || a < 1e-3) snprintf(buf, n, "%.2g", v);
    else snprintf(buf, n, "%.3g", v);
}

void grid_legend(tui_grid *g, int x, int y, int w, const pf_range *r)
{
    char lo[32], hi[32];
    format_value(lo, sizeof lo, r->lo);
    format_value(hi, sizeof hi, r->hi);
    int n = grid_text(g, x, y, w, TC_DEFAULT, TC_DEFAULT, 0, lo);
    int bar = w - n - 2 - (int)strlen(hi);
    if (bar > 24) bar = 24;
    if (bar < 3) return;
    for (int i = 0; i < bar; i++) {
        double t = bar > 1 ? (double)i / (bar - 1) : 0.5;
        if (g->mono) grid_put(g, x + n + 1 + i, y, heat_glyph(t), TC_DEFAULT, TC_DEFAULT, 0);
        else grid_put(g, x + n + 1 + i, y, ' ', TC_DEFAULT, TC_MAP(r->cmap, (int)lround(t * 255.0)), 0);
    }
    grid_text(g, x + n + 2 + bar, y, w - n - 2 - bar, TC_DEFAULT, TC_DEFAULT, 0, hi);
}

/* ---- braille --------------------------------------------------------------------------------- */

static const uint8_t braille_bit[4][2] = {{0x01, 0x08}, {0x02, 0x10}, {0x04, 0x20}, {0x40, 0x80}};

static void dot(uint8_t *dots, int w, int h, int dx, int dy)
{
    if (dx < 0 || dy < 0 || dx >= 2 * w || dy >= 4 * h) return;
    dots[(dy / 4) * w + dx / 2] |= braille_bit[dy % 4][dx % 2];
}

void braille_plot(uint8_t *dots, int w, int h, const float *y, int n, double lo, double hi)
{
    if (w <= 0 || h <= 0 || n <= 0) return;
    int rows = 4 * h, px = -1, py = -1;
    for (int i = 0; i < n; i++) {
        if (isnan(y[i])) {
            px = -1;
            continue;
        }
        int dx = n == 1 ? 0 : (int)lround((double)i * (2 * w - 1) / (n - 1));
        double t = hi > lo ? ((double)y[i] - lo) / (hi - lo) : 0.5;
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        int dy = (int)lround((1.0 - t) * (rows - 1));
        if (px >= 0) {
            /* connect from the previous dot: a vertical run at each column between */
            int steps = dx - px > 0 ? dx - px : 1;
            for (int s = 1; s <= steps; s++) {
                int cx = px + s * (dx - px) / steps;
                int y0 = py + (s - 1) * (dy - py) / steps, y1 = py + s * (dy - py) / steps;
                int a = y0 < y1 ? y0 : y1, b = y0 < y1 ? y1 : y0;
                for (int yy = a; yy <= b; yy++) dot(dots, w, h, cx, yy);
            }
        } else {
            dot(dots, w, h, dx, dy);
        }
        px = dx;
        py = dy;
    }
}

void grid_braille(tui_grid *g, int x, int y, int w, int h, const uint8_t *dots, tui_color fg)
{
    for (int j = 0; j < h; j++)
        for (int i = 0; i < w; i++) {
            uint8_t d = dots[j * w + i];
            if (!d) continue;
            tui_cell *c = grid_at(g, x + i, y + j);
            if (!c) continue;
            /* merge with dots already there (several curves in one area) */
            uint8_t old = c->ch >= 0x2800 && c->ch <= 0x28ff ? (uint8_t)(c->ch - 0x2800) : 0;
            *c = (tui_cell){0x2800u + (uint8_t)(old | d), fg, c->bg, 0};
        }
}

/* ---- bars ------------------------------------------------------------------------------------ */

uint32_t bar_glyph(double t)
{
    if (!(t > 0)) return ' ';
    int e = (int)lround(t * 8.0);
    if (e < 1) e = 1;
    if (e > 8) e = 8;
    return 0x2580u + (uint32_t)e;   /* U+2581 lower one eighth .. U+2588 full block */
}

void grid_hbar(tui_grid *g, int x, int y, int w, double frac, tui_color fg)
{
    if (!(frac > 0)) return;
    if (frac > 1) frac = 1;
    int eighths = (int)lround(frac * w * 8);
    for (int i = 0; i < w && eighths > 0; i++, eighths -= 8) {
        /* U+2588 full, U+2589..U+258F seven eighths .. one eighth (left blocks) */
        uint32_t ch = eighths >= 8 ? 0x2588u : 0x2590u - (uint32_t)eighths;
        grid_put(g, x + i, y, g->mono && eighths < 8 ? (eighths >= 4 ? '=' : '-') : (g->mono ? '#' : ch), fg,
                 TC_DEFAULT, 0);
    }
}
