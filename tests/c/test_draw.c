/* Drawing primitives on known inputs: value ranges and scaling, the two colormaps (lightness
 * measured in CIE L*), the half-block heatmap layout (two rows of values a cell, magnified and
 * sampled), braille curves (dots worked out by hand from the U+2800 bit layout), bars, text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "scripts/draw.h"
#include "tui/grid.h"

/* ---- ranges ------------------------------------------------------------------------------------ */

static void test_range_of(void **state)
{
    (void)state;
    const float pos[] = {1, 2, 3};
    pf_range r = pf_range_of(pos, 3);
    assert_int_equal(r.cmap, PF_CMAP_SEQUENTIAL);
    assert_float_equal(r.lo, 0, 0);
    assert_float_equal(r.hi, 3, 0);
    const float sgn[] = {-1, 0.5f, 2};
    r = pf_range_of(sgn, 3);
    assert_int_equal(r.cmap, PF_CMAP_DIVERGING);
    assert_float_equal(r.lo, -2, 0);
    assert_float_equal(r.hi, 2, 0);
    const float odd[] = {NAN, INFINITY, 4, -INFINITY};
    r = pf_range_of(odd, 4);
    assert_int_equal(r.cmap, PF_CMAP_SEQUENTIAL);
    assert_float_equal(r.hi, 4, 0);
    r = pf_range_of(NULL, 0);
    assert_float_equal(r.lo, 0, 0);
    assert_float_equal(r.hi, 1, 0);
}

static void test_range_scale(void **state)
{
    (void)state;
    pf_range seq = {0, 4, PF_CMAP_SEQUENTIAL};
    assert_float_equal(pf_range_scale(&seq, 1), 0.25, 1e-12);
    assert_float_equal(pf_range_scale(&seq, 4), 1.0, 1e-12);
    assert_float_equal(pf_range_scale(&seq, 9), 1.0, 0);      /* clamped */
    assert_float_equal(pf_range_scale(&seq, -3), 0.0, 0);
    assert_true(isnan(pf_range_scale(&seq, NAN)));
    pf_range div = {-2, 2, PF_CMAP_DIVERGING};
    assert_float_equal(pf_range_scale(&div, 0), 0.5, 1e-12);
    assert_float_equal(pf_range_scale(&div, -1), 0.25, 1e-12);
    pf_range flat = {0, 0, PF_CMAP_SEQUENTIAL};
    assert_float_equal(pf_range_scale(&flat, 0), 0.0, 0);
    pf_range flat_div = {0, 0, PF_CMAP_DIVERGING};
    assert_float_equal(pf_range_scale(&flat_div, 0), 0.5, 0);
}

/* ---- colormaps --------------------------------------------------------------------------------- */

static void test_sequential_lightness_rises(void **state)
{
    (void)state;
    double prev = -1;
    for (int i = 0; i <= 64; i++) {
        double L = pf_lightness(pf_colormap(PF_CMAP_SEQUENTIAL, i / 64.0));
        assert_true(L > prev + 0.5);   /* strictly and visibly rising */
        prev = L;
    }
    assert_true(pf_lightness(pf_colormap(PF_CMAP_SEQUENTIAL, 0)) < 15);
    assert_true(pf_lightness(pf_colormap(PF_CMAP_SEQUENTIAL, 1)) > 85);
    /* clamped outside [0, 1]; NaN is grey */
    pf_rgb a = pf_colormap(PF_CMAP_SEQUENTIAL, -1), b = pf_colormap(PF_CMAP_SEQUENTIAL, 0);
    assert_memory_equal(&a, &b, sizeof a);
    pf_rgb n = pf_colormap(PF_CMAP_SEQUENTIAL, NAN);
    assert_true(n.r == n.g && n.g == n.b);
}

static void test_diverging_symmetric(void **state)
{
    (void)state;
    pf_rgb mid = pf_colormap(PF_CMAP_DIVERGING, 0.5);
    assert_true(abs(mid.r - mid.g) < 8 && abs(mid.g - mid.b) < 8);   /* neutral at 0 */
    double Lmid = pf_lightness(mid);
    for (int i = 0; i < 32; i++) {
        double t = i / 64.0;
        double lo = pf_lightness(pf_colormap(PF_CMAP_DIVERGING, t));
        double hi = pf_lightness(pf_colormap(PF_CMAP_DIVERGING, 1 - t));
        assert_true(fabs(lo - hi) < 8);         /* both arms as light at the same distance */
        assert_true(lo < Lmid && hi < Lmid);    /* the middle is the lightest */
        double lo_next = pf_lightness(pf_colormap(PF_CMAP_DIVERGING, (i + 1) / 64.0));
        assert_true(lo_next > lo);               /* rising towards the middle */
    }
    pf_rgb neg = pf_colormap(PF_CMAP_DIVERGING, 0), posc = pf_colormap(PF_CMAP_DIVERGING, 1);
    assert_true(neg.b > neg.r);                  /* blue for negative */
    assert_true(posc.r > posc.b);                /* red for positive */
}

/* ---- half-block layout ------------------------------------------------------------------------- */

static void test_layout_exact(void **state)
{
    (void)state;
    heat_layout l;
    heat_layout_make(&l, 4, 3, 9, 2, 4);     /* 4 rows in 2 cells: one value row a half */
    assert_int_equal(l.cell_w, 3);
    assert_int_equal(l.px_h, 1);
    assert_int_equal(l.w, 9);
    assert_int_equal(l.h, 2);
    for (int py = 0; py < 4; py++) assert_int_equal(heat_layout_row(&l, py), py);
    assert_int_equal(heat_layout_row(&l, 4), -1);
    assert_int_equal(heat_layout_col(&l, 2), 0);
    assert_int_equal(heat_layout_col(&l, 3), 1);
    assert_int_equal(heat_layout_col(&l, 8), 2);
    assert_int_equal(heat_layout_col(&l, 9), -1);
}

static void test_layout_magnified_and_sampled(void **state)
{
    (void)state;
    heat_layout l;
    heat_layout_make(&l, 2, 2, 10, 4, 2);    /* zoom capped at 2 */
    assert_int_equal(l.cell_w, 2);
    assert_int_equal(l.px_h, 2);
    assert_int_equal(l.w, 4);
    assert_int_equal(l.h, 2);
    assert_int_equal(heat_layout_row(&l, 1), 0);
    assert_int_equal(heat_layout_row(&l, 2), 1);
    heat_layout_make(&l, 100, 200, 50, 10, 4);   /* larger than the area: sampled */
    assert_int_equal(l.w, 50);
    assert_int_equal(l.h, 10);
    assert_int_equal(heat_layout_col(&l, 3), 12);
    assert_int_equal(heat_layout_row(&l, 7), 35);
    heat_layout_make(&l, 3, 1, 4, 4, 1);     /* an odd number of rows: the last cell is half full */
    assert_int_equal(l.h, 2);
    assert_int_equal(heat_layout_row(&l, 3), -1);
}

static void test_heatmap_cells(void **state)
{
    (void)state;
    tui_grid g = {0};
    assert_int_equal(grid_resize(&g, 4, 2), 0);
    const float v[] = {0, 1, 2, 3, 4, 5};      /* (3, 2) */
    pf_range r = {0, 5, PF_CMAP_SEQUENTIAL};
    heat_layout l = grid_heatmap(&g, 0, 0, 2, 2, v, 3, 2, &r, 1);
    assert_int_equal(l.h, 2);
    tui_cell *c = grid_at(&g, 1, 0);           /* column 1: rows 0 (top) and 1 (bottom) */
    assert_int_equal(c->ch, 0x2580);
    assert_int_equal(c->fg, TC_MAP(PF_CMAP_SEQUENTIAL, 51));    /* 1/5 of 255 */
    assert_int_equal(c->bg, TC_MAP(PF_CMAP_SEQUENTIAL, 153));   /* 3/5 */
    c = grid_at(&g, 0, 1);                     /* row 2 on top, nothing below */
    assert_int_equal(c->fg, TC_MAP(PF_CMAP_SEQUENTIAL, 204));
    assert_int_equal(c->bg, TC_DEFAULT);
    /* monochrome: graded density characters */
    g.mono = 1;
    grid_heatmap(&g, 0, 0, 2, 2, v, 3, 2, &r, 1);
    assert_int_equal(grid_at(&g, 0, 1)->ch, heat_glyph(4 / 5.0));
    assert_int_equal(heat_glyph(0), ' ');
    assert_int_equal(heat_glyph(1), '@');
    grid_free(&g);
}

/* ---- braille ----------------------------------------------------------------------------------- */

static void test_braille_flat_lines(void **state)
{
    (void)state;
    uint8_t d[2] = {0};
    const float lo[] = {0, 0, 0, 0}, hi[] = {1, 1, 1, 1};
    braille_plot(d, 2, 1, lo, 4, 0, 1);
    assert_int_equal(d[0], 0x40 | 0x80);      /* bottom dots of both columns */
    assert_int_equal(d[1], 0x40 | 0x80);
    memset(d, 0, sizeof d);
    braille_plot(d, 2, 1, hi, 4, 0, 1);
    assert_int_equal(d[0], 0x01 | 0x08);      /* top dots */
    assert_int_equal(d[1], 0x01 | 0x08);
}

static void test_braille_ramp(void **state)
{
    (void)state;
    /* 0, 1/3, 2/3, 1 across 4 dot columns and 4 dot rows: (0,3) (1,2) (2,1) (3,0), each joined to
     * the one before by a vertical run at its own column */
    uint8_t d[2] = {0};
    const float y[] = {0, 1.0f / 3, 2.0f / 3, 1};
    braille_plot(d, 2, 1, y, 4, 0, 1);
    assert_int_equal(d[0], 0x40 | 0x20 | 0x80);          /* (0,3); (1,2) (1,3) */
    assert_int_equal(d[1], 0x02 | 0x04 | 0x08 | 0x10);   /* (2,1) (2,2); (3,0) (3,1) */
    /* two rows of cells: the top of the lower cell continues the line */
    uint8_t e[2] = {0};
    const float two[] = {0, 1};
    braille_plot(e, 1, 2, two, 2, 0, 1);
    assert_int_equal(e[1], 0x40 | 0x08 | 0x10 | 0x20 | 0x80);   /* (0,7); (1,4..7) */
    assert_int_equal(e[0], 0x08 | 0x10 | 0x20 | 0x80);          /* (1,0..3) */
}

static void test_braille_nan_breaks(void **state)
{
    (void)state;
    uint8_t d[2] = {0};
    const float y[] = {0, NAN, NAN, 1};
    braille_plot(d, 2, 1, y, 4, 0, 1);
    assert_int_equal(d[0], 0x40);             /* only the first point */
    assert_int_equal(d[1], 0x08);             /* and the last, unjoined */
    tui_grid g = {0};
    grid_resize(&g, 2, 1);
    grid_braille(&g, 0, 0, 2, 1, d, TC_DEFAULT);
    assert_int_equal(grid_at(&g, 0, 0)->ch, 0x2840);
    grid_free(&g);
}

/* ---- bars and text ----------------------------------------------------------------------------- */

static void test_bars(void **state)
{
    (void)state;
    assert_int_equal(bar_glyph(0), ' ');
    assert_int_equal(bar_glyph(1), 0x2588);
    assert_int_equal(bar_glyph(0.5), 0x2584);
    tui_grid g = {0};
    grid_resize(&g, 3, 1);
    grid_hbar(&g, 0, 0, 2, 0.5, TC_DEFAULT);          /* 8 of 16 eighths: one full cell */
    assert_int_equal(grid_at(&g, 0, 0)->ch, 0x2588);
    assert_int_equal(grid_at(&g, 1, 0)->ch, ' ');
    grid_clear(&g);
    grid_hbar(&g, 0, 0, 2, 13.0 / 16, TC_DEFAULT);    /* 13 eighths: full + five eighths */
    assert_int_equal(grid_at(&g, 1, 0)->ch, 0x258B);
    grid_free(&g);
}

static void test_text(void **state)
{
    (void)state;
    tui_grid g = {0};
    grid_resize(&g, 4, 1);
    int n = grid_text(&g, 0, 0, 10, TC_DEFAULT, TC_DEFAULT, 0, "a\xce\xb3" "bcd");
    assert_int_equal(n, 4);                   /* clipped at the grid's edge */
    assert_int_equal(grid_at(&g, 1, 0)->ch, 0x3b3);
    assert_int_equal(grid_at(&g, 3, 0)->ch, 'c');
    assert_null(grid_at(&g, 4, 0));
    grid_free(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_range_of),
        cmocka_unit_test(test_range_scale),
        cmocka_unit_test(test_sequential_lightness_rises),
        cmocka_unit_test(test_diverging_symmetric),
        cmocka_unit_test(test_layout_exact),
        cmocka_unit_test(test_layout_magnified_and_sampled),
        cmocka_unit_test(test_heatmap_cells),
        cmocka_unit_test(test_braille_flat_lines),
        cmocka_unit_test(test_braille_ramp),
        cmocka_unit_test(test_braille_nan_breaks),
        cmocka_unit_test(test_bars),
        cmocka_unit_test(test_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
