/* The frame being composed: a grid of character cells (tmux's grid layer). Every pane draws into one
 * grid; tui/screen.c puts the finished grid on the terminal at once (kilo: one frame, one write).
 * Also the drawing primitives that fill it: text, boxes, half-block heatmaps (two rows of values a
 * cell), braille curves (2x4 dots a cell) and eighth-block bars. Colours stay abstract here (an RGB
 * value or a colormap level); the screen turns them into what the terminal has. */
#ifndef PF_TUI_GRID_H
#define PF_TUI_GRID_H

#include <stdint.h>

#include "scripts/draw.h"

/* A colour: TC_DEFAULT (the terminal's own), an RGB value, or a level 0..255 of a colormap. */
typedef uint32_t tui_color;
#define TC_DEFAULT         0xFF000000u
#define TC_RGB(r, g, b)    (((uint32_t)(r) << 16) | ((uint32_t)(g) << 8) | (uint32_t)(b))
#define TC_MAP(map, level) (0x01000000u | ((uint32_t)(map) << 8) | (uint32_t)(level))
#define TC_IS_MAP(c)       (((c) >> 24) == 1u)
#define TC_MAP_OF(c)       ((pf_cmap)(((c) >> 8) & 0xffu))
#define TC_LEVEL(c)        ((int)((c) & 0xffu))
#define TC_GREY            TC_RGB(128, 128, 128)

enum { TA_BOLD = 1, TA_REVERSE = 2, TA_DIM = 4, TA_UNDERLINE = 8 };

typedef struct tui_cell {
    uint32_t  ch;           /* a Unicode code point */
    tui_color fg, bg;
    uint16_t  attr;         /* TA_* */
} tui_cell;

typedef struct tui_grid {
    int       w, h;
    tui_cell *cells;        /* (h, w) */
    int       mono;         /* 1: no colours (NO_COLOR): heatmaps draw graded-density characters */
    int       cx, cy;       /* where the terminal cursor goes; cx < 0: hidden */
} tui_grid;

int  grid_resize(tui_grid *g, int w, int h);      /* contents cleared; -1 when out of memory */
void grid_free(tui_grid *g);
void grid_clear(tui_grid *g);
tui_cell *grid_at(tui_grid *g, int x, int y);     /* NULL outside */
void grid_put(tui_grid *g, int x, int y, uint32_t ch, tui_color fg, tui_color bg, int attr);
void grid_fill(tui_grid *g, int x, int y, int w, int h, uint32_t ch, tui_color fg, tui_color bg, int attr);
/* UTF-8 text from (x, y), at most maxw cells; returns the cells written. */
int  grid_text(tui_grid *g, int x, int y, int maxw, tui_color fg, tui_color bg, int attr, const char *s);
int  grid_printf(tui_grid *g, int x, int y, int maxw, tui_color fg, tui_color bg, int attr, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));
/* A frame with a title in its top edge; focused frames are bold and coloured. */
void grid_box(tui_grid *g, int x, int y, int w, int h, const char *title, int focused);

/* ---- heatmaps: half-block layout ------------------------------------------------------------- */

/* How a (rows, cols) matrix maps onto a w x h cell area: each cell holds two "pixels" stacked
 * (upper half-block foreground, lower background), so the area is w wide and 2h pixels tall. A
 * small matrix is magnified by whole pixels (cell_w cells per column, px_h pixels per row, both at
 * most max_zoom); a large one is sampled (pixel -> nearest value row/column). */
typedef struct heat_layout {
    int rows, cols;         /* the matrix */
    int cell_w, px_h;       /* magnification (>= 1) */
    int w, h;               /* cells used: w columns, h rows (h = ceil(pixels / 2)) */
    int px_w, px_rows;      /* pixels used across and down */
} heat_layout;

void heat_layout_make(heat_layout *l, int rows, int cols, int w, int h, int max_zoom);
int  heat_layout_row(const heat_layout *l, int py);   /* value row of pixel row py, -1 outside */
int  heat_layout_col(const heat_layout *l, int x);    /* value column of cell column x, -1 outside */
/* The colour (a colormap level) of v under range r. */
tui_color heat_color(const pf_range *r, float v);
/* A graded-density character for t in [0, 1] (for monochrome): " .:-=+*#%@" */
uint32_t heat_glyph(double t);
/* Draw v (rows, cols) at (x, y) within w x h cells under range r; returns the layout used. */
heat_layout grid_heatmap(tui_grid *g, int x, int y, int w, int h, const float *v, int rows, int cols,
                         const pf_range *r, int max_zoom);
/* A colour bar legend on one line: "lo [gradient] hi", w cells. */
void grid_legend(tui_grid *g, int x, int y, int w, const pf_range *r);

/* ---- braille curves -------------------------------------------------------------------------- */

/* Plot y (n) as a connected line into dots (h, w) of braille bit masks (a cell is 2 dots wide, 4
 * tall; bit layout as Unicode U+2800: left column 0x01 0x02 0x04 0x40, right 0x08 0x10 0x20 0x80,
 * top to bottom). Sample i sits at dot column round(i * (2w - 1) / (n - 1)); value lo at the bottom
 * dot row, hi at the top; values outside are clamped, NaN breaks the line. Dots are OR-ed in. */
void braille_plot(uint8_t *dots, int w, int h, const float *y, int n, double lo, double hi);
/* Put the non-empty cells of dots (h, w) at (x, y) in colour fg. */
void grid_braille(tui_grid *g, int x, int y, int w, int h, const uint8_t *dots, tui_color fg);

/* ---- bars ------------------------------------------------------------------------------------ */

/* A horizontal bar of frac (0..1) of w cells, in eighths of a cell. */
void grid_hbar(tui_grid *g, int x, int y, int w, double frac, tui_color fg);
/* The vertical eighth-block character for t in [0, 1]: ' ' then U+2581..U+2588. */
uint32_t bar_glyph(double t);

#endif
