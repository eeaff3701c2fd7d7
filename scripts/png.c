/* PNG export: a probe (or any pf.tensor) drawn as an image for slides, and pf.png, the Lua function.
 *
 *   pf.png(path, {layer = i, probe = name[, model = m][, title = s][, cell = px]})
 *   pf.png(path, {tensor = t[, title = s][, cell = px]})
 * A 2-D tensor is a heatmap (3-D: one panel per leading index, or rows when there are many), a 1-D
 * one bars, a single value a number; each has a title, the axes' names (from the probe's documented
 * shape), and a legend with the value range. Cells are 8-16 px where the image stays under ~1000
 * px. model defaults to the one pf.watch last named. The file is written to a temporary name in the
 * same folder and renamed, so a reader never sees half an image. Returns the path.
 *
 * Text uses a 5x7 pixel font of our own (capitals, digits, punctuation; small letters print as
 * capitals). libpng does the encoding. Engine-free drawing: it needs only draw.h and tensors. */
#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scripts/draw.h"
#include "scripts/lua_module.h"

/* ---- the canvas ------------------------------------------------------------------------------- */

typedef struct canvas {
    int      w, h;
    uint8_t *px;      /* (h, w, 3) RGB */
} canvas;

static const pf_rgb BG = {255, 255, 255}, INK = {20, 20, 28}, FAINT = {150, 150, 160};

static void fill(canvas *c, int x, int y, int w, int h, pf_rgb col)
{
    for (int j = y < 0 ? 0 : y; j < y + h && j < c->h; j++)
        for (int i = x < 0 ? 0 : x; i < x + w && i < c->w; i++) {
            uint8_t *p = c->px + ((size_t)j * (size_t)c->w + (size_t)i) * 3;
            p[0] = col.r;
            p[1] = col.g;
            p[2] = col.b;
        }
}

/* 5x7 glyphs for ' ' .. '~', one byte a row, bit 4 the leftmost column */
static const uint8_t font[95][7] = {
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* ' ' */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04}, /* '!' */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}, /* '"' */
    {0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a}, /* '#' */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}, /* '$' */
    {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}, /* '%' */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}, /* '&' */
    {0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00}, /* "'" */
    {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}, /* '(' */
    {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}, /* ')' */
    {0x00, 0x04, 0x15, 0x0e, 0x15, 0x04, 0x00}, /* '*' */
    {0x00, 0x04, 0x04, 0x1f, 0x04, 0x04, 0x00}, /* '+' */
    {0x00, 0x00, 0x00, 0x00, 0x0c, 0x04, 0x08}, /* ',' */
    {0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00}, /* '-' */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c}, /* '.' */
    {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}, /* '/' */
    {0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e}, /* '0' */
    {0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e}, /* '1' */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f}, /* '2' */
    {0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e}, /* '3' */
    {0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02}, /* '4' */
    {0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e}, /* '5' */
    {0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e}, /* '6' */
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}, /* '7' */
    {0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e}, /* '8' */
    {0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c}, /* '9' */
    {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00}, /* ':' */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}, /* ';' */
    {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}, /* '<' */
    {0x00, 0x00, 0x1f, 0x00, 0x1f, 0x00, 0x00}, /* '=' */
    {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}, /* '>' */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}, /* '?' */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}, /* '@' */
    {0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11}, /* 'A' */
    {0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e}, /* 'B' */
    {0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e}, /* 'C' */
    {0x1e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1e}, /* 'D' */
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f}, /* 'E' */
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10}, /* 'F' */
    {0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f}, /* 'G' */
    {0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11}, /* 'H' */
    {0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e}, /* 'I' */
    {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c}, /* 'J' */
    {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}, /* 'K' */
    {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f}, /* 'L' */
    {0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11}, /* 'M' */
    {0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x11}, /* 'N' */
    {0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e}, /* 'O' */
    {0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10}, /* 'P' */
    {0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d}, /* 'Q' */
    {0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11}, /* 'R' */
    {0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e}, /* 'S' */
    {0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}, /* 'T' */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e}, /* 'U' */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04}, /* 'V' */
    {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a}, /* 'W' */
    {0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11}, /* 'X' */
    {0x11, 0x11, 0x0a, 0x04, 0x04, 0x04, 0x04}, /* 'Y' */
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f}, /* 'Z' */
    {0x0e, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0e}, /* '[' */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}, /* '\' */
    {0x0e, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0e}, /* ']' */
    {0x04, 0x0a, 0x11, 0x00, 0x00, 0x00, 0x00}, /* '^' */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1f}, /* '_' */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}, /* '`' */
    {0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11}, /* 'a' */
    {0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e}, /* 'b' */
    {0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e}, /* 'c' */
    {0x1e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1e}, /* 'd' */
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f}, /* 'e' */
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10}, /* 'f' */
    {0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f}, /* 'g' */
    {0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11}, /* 'h' */
    {0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e}, /* 'i' */
    {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c}, /* 'j' */
    {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}, /* 'k' */
    {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f}, /* 'l' */
    {0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11}, /* 'm' */
    {0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x11}, /* 'n' */
    {0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e}, /* 'o' */
    {0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10}, /* 'p' */
    {0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d}, /* 'q' */
    {0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11}, /* 'r' */
    {0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e}, /* 's' */
    {0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}, /* 't' */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e}, /* 'u' */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04}, /* 'v' */
    {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a}, /* 'w' */
    {0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11}, /* 'x' */
    {0x11, 0x11, 0x0a, 0x04, 0x04, 0x04, 0x04}, /* 'y' */
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f}, /* 'z' */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}, /* '{' */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}, /* '|' */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}, /* '}' */
    {0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00}, /* '~' */
};

static int text_width(const char *s, int scale) { return (int)strlen(s) * 6 * scale; }

static void text(canvas *c, int x, int y, int scale, const char *s, pf_rgb col)
{
    for (; *s; s++, x += 6 * scale) {
        unsigned ch = (unsigned char)*s;
        if (ch < 32 || ch > 126) ch = '?';
        const uint8_t *g = font[ch - 32];
        for (int r = 0; r < 7; r++)
            for (int k = 0; k < 5; k++)
                if (g[r] & (0x10 >> k)) fill(c, x + k * scale, y + r * scale, scale, scale, col);
    }
}

static void format_value(char *buf, size_t n, double v)
{
    double a = fabs(v);
    if (v == 0) snprintf(buf, n, "0");
    else if (a >= 1e4 || a < 1e-3) snprintf(buf, n, "%.2e", v);
    else snprintf(buf, n, "%.4g", v);
}

/* ---- layouts ---------------------------------------------------------------------------------- */

enum { MARGIN = 24, TITLE_SCALE = 2, LABEL_SCALE = 1, MAX_SIDE = 1000 };

typedef struct plan {
    int panels, rows, cols;  /* panels of (rows, cols) */
    int cell;                /* px per value */
} plan;

static void legend(canvas *c, int x, int y, const pf_range *r)
{
    char lo[32], hi[32];
    format_value(lo, sizeof lo, r->lo);
    format_value(hi, sizeof hi, r->hi);
    int lw = text_width(lo, LABEL_SCALE);
    text(c, x, y + 3, LABEL_SCALE, lo, INK);
    int bx = x + lw + 8, bw = 256;
    for (int i = 0; i < bw; i++) fill(c, bx + i, y, 1, 14, pf_colormap(r->cmap, i / (double)(bw - 1)));
    text(c, bx + bw + 8, y + 3, LABEL_SCALE, hi, INK);
    if (r->cmap == PF_CMAP_DIVERGING) text(c, bx + bw / 2 - 3, y + 18, LABEL_SCALE, "0", FAINT);
}

/* "[heads, kv_len]" -> names[0] = "heads", names[1] = "kv_len" */
static int shape_names(const char *shape, char names[4][32])
{
    int n = 0;
    const char *p = shape ? shape : "";
    while (*p && n < 4) {
        while (*p == '[' || *p == ' ' || *p == ',') p++;
        if (!*p || *p == ']') break;
        int k = 0;
        while (*p && *p != ',' && *p != ']' && k < 31) names[n][k++] = *p++;
        names[n][k] = '\0';
        n++;
        while (*p && *p != ',' && *p != ']') p++;
    }
    return n;
}

/* Draw t into a new canvas; NULL when out of memory. */
static canvas *render(const pf_tensor *t, const char *title, const char *shape, int cell_req)
{
    size_t n = pf_tensor_numel(t);
    pf_range range = pf_range_of(t->data, n);
    char names[4][32] = {{0}};
    int nn = shape_names(shape, names);
    int title_h = 7 * TITLE_SCALE + 16;
    int legend_h = 40;
    plan p = {1, 1, (int)n, 8};
    int body_w, body_h;
    int kind;   /* 0 number, 1 bars, 2 heatmap */
    if (n == 1) {
        kind = 0;
        body_w = 300;
        body_h = 60;
    } else if (t->ndim == 1) {
        kind = 1;
        p.cell = (MAX_SIDE - 2 * MARGIN) / (int)n;
        p.cell = p.cell > 24 ? 24 : p.cell < 1 ? 1 : p.cell;
        body_w = p.cell * (int)n;
        body_h = 240;
    } else {
        kind = 2;
        p.cols = t->shape[t->ndim - 1];
        p.rows = t->shape[t->ndim - 2];
        p.panels = (int)(n / ((size_t)p.rows * (size_t)p.cols));
        if (p.panels > 8) {   /* many panels: stack them as rows */
            p.rows *= p.panels;
            p.panels = 1;
        }
        int gap = 16;
        int avail_w = MAX_SIDE - 2 * MARGIN - (p.panels - 1) * gap, avail_h = 800;
        int cw = avail_w / (p.panels * p.cols), ch = avail_h / p.rows;
        p.cell = cw < ch ? cw : ch;
        if (p.cell > 16) p.cell = 16;
        if (p.cell < 1) p.cell = 1;
        if (cell_req > 0) p.cell = cell_req;
        body_w = p.panels * p.cols * p.cell + (p.panels - 1) * gap;
        body_h = p.rows * p.cell + 16;
    }
    int tw = text_width(title, TITLE_SCALE);
    int W = body_w + 2 * MARGIN + 60;
    if (W < tw + 2 * MARGIN) W = tw + 2 * MARGIN;
    if (W < 420) W = 420;
    int H = title_h + body_h + legend_h + 2 * MARGIN + 14;
    canvas *c = malloc(sizeof *c);
    if (!c) return NULL;
    c->w = W;
    c->h = H;
    c->px = malloc((size_t)W * (size_t)H * 3);
    if (!c->px) {
        free(c);
        return NULL;
    }
    fill(c, 0, 0, W, H, BG);
    text(c, MARGIN, MARGIN, TITLE_SCALE, title, INK);
    int x0 = MARGIN + 40, y0 = MARGIN + title_h;
    if (kind == 0) {
        char v[64];
        format_value(v, sizeof v, t->data[0]);
        text(c, x0, y0 + 10, 3, v, INK);
    } else if (kind == 1) {
        int base_h = 220;
        int zero = range.cmap == PF_CMAP_DIVERGING ? y0 + base_h / 2 : y0 + base_h;
        double m = fmax(fabs(range.lo), fabs(range.hi));
        for (size_t i = 0; i < n; i++) {
            double v = t->data[i];
            if (!isfinite(v)) continue;
            int len = m > 0 ? (int)lround(fabs(v) / m * (range.cmap == PF_CMAP_DIVERGING ? base_h / 2 : base_h)) : 0;
            pf_rgb col = pf_colormap(range.cmap, pf_range_scale(&range, (float)v));
            int bw = p.cell > 2 ? p.cell - 1 : p.cell;
            if (v >= 0) fill(c, x0 + (int)i * p.cell, zero - len, bw, len, col);
            else fill(c, x0 + (int)i * p.cell, zero, bw, len, col);
        }
        fill(c, x0, zero, body_w, 1, FAINT);
        if (nn >= 1) text(c, x0, y0 + base_h + 6, LABEL_SCALE, names[0], FAINT);
    } else {
        int gap = 16;
        for (int k = 0; k < p.panels; k++) {
            int px0 = x0 + k * (p.cols * p.cell + gap);
            const float *v = t->data + (size_t)k * p.rows * p.cols;
            for (int r = 0; r < p.rows; r++)
                for (int q = 0; q < p.cols; q++)
                    fill(c, px0, 0, 0, 0, BG), fill(c, px0 + q * p.cell, y0 + r * p.cell, p.cell, p.cell,
                                                   pf_colormap(range.cmap, pf_range_scale(&range, v[(size_t)r * p.cols + q])));
            if (p.panels > 1) {
                char lab[48];
                snprintf(lab, sizeof lab, "%s %d", nn >= 3 ? names[0] : "", k + 1);
                text(c, px0, y0 + p.rows * p.cell + 4, LABEL_SCALE, lab, FAINT);
            }
        }
        /* axis names: rows down the left, columns under */
        if (nn >= 2) {
            char lab[80];
            snprintf(lab, sizeof lab, "%s ->", names[nn - 1]);
            text(c, x0, y0 + p.rows * p.cell + (p.panels > 1 ? 14 : 4), LABEL_SCALE, lab, FAINT);
            const char *rn = names[nn - 2];
            for (int i = 0; rn[i] && i < 12; i++) {
                char one[2] = {rn[i], 0};
                text(c, MARGIN, y0 + i * 9, LABEL_SCALE, one, FAINT);
            }
        }
    }
    legend(c, MARGIN, H - MARGIN - legend_h + 8, &range);
    return c;
}

static void canvas_free(canvas *c)
{
    if (!c) return;
    free(c->px);
    free(c);
}

/* ---- the file --------------------------------------------------------------------------------- */

/* write c to path through a temporary file in the same folder; 0 or -1 with msg */
static int write_png(const char *path, const canvas *c, char *msg, size_t n)
{
    size_t len = strlen(path);
    char *tmp = malloc(len + 16);
    if (!tmp) {
        snprintf(msg, n, "not enough memory");
        return -1;
    }
    snprintf(tmp, len + 16, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(msg, n, "cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    FILE *f = fdopen(fd, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_bytep *rows = malloc((size_t)c->h * sizeof *rows);
    int ok = f && png && info && rows;
    if (ok && setjmp(png_jmpbuf(png))) ok = 0;
    else if (ok) {
        png_init_io(png, f);
        png_set_IHDR(png, info, (png_uint_32)c->w, (png_uint_32)c->h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_write_info(png, info);
        for (int y = 0; y < c->h; y++) rows[y] = c->px + (size_t)y * (size_t)c->w * 3;
        png_write_image(png, rows);
        png_write_end(png, NULL);
    }
    if (png) png_destroy_write_struct(&png, info ? &info : NULL);
    free(rows);
    if (f) {
        if (fclose(f) != 0) ok = 0;
    } else {
        close(fd);
    }
    if (ok && rename(tmp, path) != 0) {
        snprintf(msg, n, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    if (!ok) {
        snprintf(msg, n, "cannot write the PNG %s", path);
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

/* ---- pf.png ----------------------------------------------------------------------------------- */

/* the documented shape of probe `name` of layer l (at idx): from l:probes(true); pushes a string */
static void push_probe_shape(lua_State *L, int layer, const char *name)
{
    lua_getfield(L, layer, "probes");
    lua_pushvalue(L, layer);
    lua_pushboolean(L, 1);
    lua_call(L, 2, 1);
    int list = lua_gettop(L);
    lua_pushliteral(L, "");
    for (lua_Integer i = 1; lua_rawgeti(L, list, i) == LUA_TTABLE; i++) {
        lua_getfield(L, -1, "name");
        if (lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), name) == 0) {
            lua_getfield(L, -2, "shape");
            lua_replace(L, list + 1);
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    lua_remove(L, list);
}

static int l_png(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const valid[] = {"model", "layer", "probe", "tensor", "title", "cell", NULL};
    pfl_check_keys(L, 2, "pf.png", valid);
    int cell = (int)pfl_opt_integer(L, 2, "pf.png", "cell", 0, 0, 64);
    lua_getfield(L, 2, "title");
    const char *title = lua_tostring(L, -1);
    int title_idx = lua_gettop(L);
    const pf_tensor *t = NULL;
    const char *shape = "";
    lua_getfield(L, 2, "tensor");
    if (!lua_isnil(L, -1)) {
        t = pfl_tensor_check(L, -1);
        if (!title) title = "tensor";
    } else {
        lua_getfield(L, 2, "probe");
        const char *probe = lua_tostring(L, -1);
        if (!probe) return luaL_error(L, "pf.png: option 'probe' (a probe name) or 'tensor' is required");
        int layer_no = (int)pfl_opt_integer(L, 2, "pf.png", "layer", 1, 1, 1 << 20);
        lua_getfield(L, 2, "model");
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_getfield(L, lua_upvalueindex(1), "_watched");
        }
        if (!luaL_testudata(L, -1, PFL_MODEL))
            return luaL_error(L, "pf.png: no model (pass model = m, or pf.watch(m) first)");
        lua_getfield(L, -1, "layers");
        if (lua_rawgeti(L, -1, layer_no) == LUA_TNIL)
            return luaL_error(L, "pf.png: option 'layer' is %d but the model has %d layers", layer_no,
                              (int)lua_rawlen(L, -2));
        int layer = lua_gettop(L);
        lua_getfield(L, layer, "probe");
        lua_pushvalue(L, layer);
        lua_pushstring(L, probe);
        lua_call(L, 2, 1);
        t = pfl_tensor_check(L, -1);
        push_probe_shape(L, layer, probe);
        shape = lua_tostring(L, -1);
        if (!title) {
            lua_getfield(L, layer, "kind");
            title = lua_pushfstring(L, "layer %d %s: %s %s", layer_no, lua_tostring(L, -1), probe, shape);
        }
    }
    canvas *c = render(t, title, shape, cell);
    if (!c) return luaL_error(L, "pf.png: not enough memory");
    char msg[512];
    int rc = write_png(path, c, msg, sizeof msg);
    canvas_free(c);
    if (rc < 0) return luaL_error(L, "pf.png: %s", msg);
    (void)title_idx;
    lua_pushstring(L, path);
    return 1;
}

void pfl_png_open(lua_State *L)
{
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_png, 1);
    lua_setfield(L, -2, "png");
}
