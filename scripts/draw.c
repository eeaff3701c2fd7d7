/* Value ranges and colormaps (see draw.h). */
#include <math.h>

#include "scripts/draw.h"

/* ---- colormaps ------------------------------------------------------------------------------- */

typedef struct stop {
    double t, r, g, b;
} stop;

/* lightness rises from ~8 to ~92 L* at a nearly even pace; the hue turns from indigo through blue,
 * teal and green to yellow */
static const stop sequential[] = {
    {0.00, 0.06, 0.03, 0.16}, {0.18, 0.20, 0.10, 0.42}, {0.36, 0.16, 0.30, 0.55},
    {0.54, 0.10, 0.50, 0.56}, {0.72, 0.30, 0.68, 0.44}, {0.88, 0.68, 0.82, 0.30},
    {1.00, 0.99, 0.92, 0.40},
};

/* blue to a light neutral grey at 0 to red; the two arms have matching lightness at t and 1 - t */
static const stop diverging[] = {
    {0.00, 0.10, 0.25, 0.62}, {0.25, 0.42, 0.58, 0.85}, {0.50, 0.93, 0.93, 0.93},
    {0.75, 0.90, 0.52, 0.43}, {1.00, 0.68, 0.10, 0.16},
};

static unsigned char to_byte(double x)
{
    x = x < 0 ? 0 : x > 1 ? 1 : x;
    return (unsigned char)lround(x * 255.0);
}

pf_rgb pf_colormap(pf_cmap map, double t)
{
    const stop *s = map == PF_CMAP_DIVERGING ? diverging : sequential;
    int n = map == PF_CMAP_DIVERGING ? (int)(sizeof diverging / sizeof *diverging)
                                     : (int)(sizeof sequential / sizeof *sequential);
    if (isnan(t)) return (pf_rgb){128, 128, 128};
    if (t <= 0) t = 0;
    if (t >= 1) t = 1;
    int i = 0;
    while (i < n - 2 && t > s[i + 1].t) i++;
    double u = (t - s[i].t) / (s[i + 1].t - s[i].t);
    return (pf_rgb){to_byte(s[i].r + u * (s[i + 1].r - s[i].r)), to_byte(s[i].g + u * (s[i + 1].g - s[i].g)),
                    to_byte(s[i].b + u * (s[i + 1].b - s[i].b))};
}

static double linear(unsigned char c)
{
    double x = c / 255.0;
    return x <= 0.04045 ? x / 12.92 : pow((x + 0.055) / 1.055, 2.4);
}

double pf_lightness(pf_rgb c)
{
    double y = 0.2126 * linear(c.r) + 0.7152 * linear(c.g) + 0.0722 * linear(c.b);
    return y > 216.0 / 24389.0 ? 116.0 * cbrt(y) - 16.0 : y * 24389.0 / 27.0;
}

/* ---- ranges ---------------------------------------------------------------------------------- */

pf_range pf_range_of(const float *v, size_t n)
{
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(v[i])) continue;
        if (v[i] < lo) lo = v[i];
        if (v[i] > hi) hi = v[i];
    }
    if (lo > hi) return (pf_range){0, 1, PF_CMAP_SEQUENTIAL};
    if (lo < 0) {
        float m = fmaxf(-lo, fabsf(hi));
        return (pf_range){-m, m, PF_CMAP_DIVERGING};
    }
    return (pf_range){0, hi, PF_CMAP_SEQUENTIAL};
}

double pf_range_scale(const pf_range *r, float v)
{
    if (isnan(v)) return NAN;
    if (!(r->hi > r->lo)) return r->cmap == PF_CMAP_DIVERGING ? 0.5 : v > 0 ? 1.0 : 0.0;
    double t = ((double)v - r->lo) / ((double)r->hi - r->lo);
    return t < 0 ? 0 : t > 1 ? 1 : t;
}
