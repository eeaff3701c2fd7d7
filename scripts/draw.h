/* Drawing primitives shared by the terminal UI (tui/) and the PNG writer (scripts/png.c): value
 * ranges and colormaps. Engine-free and display-free: plain numbers in, colours out.
 *
 * Colormaps are small tables of control points interpolated linearly in sRGB:
 *   sequential (magnitudes): dark indigo -> blue -> teal -> green -> yellow, CIE L* rising steadily;
 *   diverging (signed values): blue -> light grey at 0 -> red, L* symmetric about the middle.
 * The control points are our own, chosen so that lightness is monotonic (tests/c/test_draw.c checks). */
#ifndef PF_DRAW_H
#define PF_DRAW_H

#include <stddef.h>

typedef struct pf_rgb {
    unsigned char r, g, b;
} pf_rgb;

typedef enum pf_cmap {
    PF_CMAP_SEQUENTIAL,
    PF_CMAP_DIVERGING,
} pf_cmap;

/* The colour at t in [0, 1] (clamped); NaN gives a neutral grey. */
pf_rgb pf_colormap(pf_cmap map, double t);

/* CIE L* (0..100) of an sRGB colour (D65). */
double pf_lightness(pf_rgb c);

/* A value range to scale by. Signed data (some value < 0 < some other, or only negatives) gets a
 * diverging range symmetric about 0; non-negative data gets [0, max]. */
typedef struct pf_range {
    float   lo, hi;
    pf_cmap cmap;
} pf_range;

/* The range of the finite values of v (n); all non-finite or n == 0 gives [0, 1]. */
pf_range pf_range_of(const float *v, size_t n);
/* v scaled to [0, 1] by r (clamped); lo == hi gives 0.5 for a diverging range, and for a sequential
 * one 1 when v > 0 (a constant magnitude shows as full) else 0; NaN stays NaN. */
double   pf_range_scale(const pf_range *r, float v);

#endif
