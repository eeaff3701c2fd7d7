/* cpu backend: causal (optionally sliding-window) attention with grouped KV heads, tiled with an
 * online softmax (FlashAttention), its FlashAttention-2 style backward, and the one-token step.
 *
 * B batch, T tokens, Hq query heads, Hkv key/value heads (Hq % Hkv == 0, G = Hq / Hkv query heads
 * share one kv head: query head h reads kv head h / G), D head dim. q, k, v are read with a row
 * stride (token (b, t) of head h at q + (b*T + t)*stride + h*D), so they can sit inside one packed
 * qkv buffer. Query i sees key j iff j <= i and (window == 0 or i - j < window).
 *
 * Tiling: queries and keys are cut into tiles of `tile` tokens (the last one may be shorter). For a
 * (q tile, k tile) pair the differences i - j cover one contiguous range [dmin, dmax], so the tile is
 *   skipped  when no difference is visible (dmax < 0, or dmin >= window),
 *   full     when every difference is visible (dmin >= 0 and dmax < window),
 *   partial  otherwise: computed, with each query row limited to its visible keys.
 * Threads: the forward runs (batch, head, q tile) tasks, the backward (batch, kv head) tasks; each
 * task owns the outputs it writes, so results do not depend on the schedule. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "kernels/cpu/cpu.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

static inline float dot(const float *a, const float *b, int n)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* y (n) += alpha x (n) */
static inline void axpy(float *restrict y, const float *restrict x, float alpha, int n)
{
#pragma omp simd
    for (int i = 0; i < n; i++) y[i] += alpha * x[i];
}

/* PF_TILE_* of queries [i0, i1) against keys [j0, j1) */
static int tile_class(int i0, int i1, int j0, int j1, int window)
{
    int dmin = i0 - (j1 - 1), dmax = (i1 - 1) - j0;
    if (dmax < 0 || (window > 0 && dmin >= window)) return PF_TILE_SKIPPED;
    if (dmin >= 0 && (window == 0 || dmax < window)) return PF_TILE_FULL;
    return PF_TILE_PARTIAL;
}

/* The keys [*lo, *hi) of tile [j0, j1) that query i sees; a full tile needs no check. */
static inline void visible_keys(int i, int j0, int j1, int cls, int window, int *lo, int *hi)
{
    *lo = j0;
    *hi = j1;
    if (cls == PF_TILE_FULL) return;
    if (*hi > i + 1) *hi = i + 1;
    if (window > 0 && *lo < i - window + 1) *lo = i - window + 1;
}

static int check_args(const char *what, int T, int Hq, int Hkv, int D, int tile)
{
    if (tile < 1 || tile > PF_CPU_ATTN_MAX_TILE)
        return pf_error("%s: tile %d is not supported (1..%d)", what, tile, PF_CPU_ATTN_MAX_TILE);
    if (T < 1 || D < 1 || Hkv < 1 || Hq < Hkv || Hq % Hkv != 0)
        return pf_error("%s: bad shape T=%d Hq=%d Hkv=%d D=%d", what, T, Hq, Hkv, D);
    return 0;
}

/* ---- forward ---------------------------------------------------------------------------------- */

int cpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                          int stride, int B, int T, int Hq, int Hkv, int D, int window, int tile,
                          uint8_t *tile_map, long *counts)
{
    PF_TRY(check_args("attention_forward", T, Hq, Hkv, D, tile));
    int nt = (T + tile - 1) / tile, G = Hq / Hkv;
    float scale = 1.0f / sqrtf((float)D);
    if (tile_map)
        for (int qt = 0; qt < nt; qt++)
            for (int kt = 0; kt < nt; kt++) {
                int i1 = qt * tile + tile < T ? qt * tile + tile : T;
                int j1 = kt * tile + tile < T ? kt * tile + tile : T;
                tile_map[qt * nt + kt] = (uint8_t)tile_class(qt * tile, i1, kt * tile, j1, window);
            }

    /* per thread: acc (tile, D), running max m (tile), running sum l (tile), scores s (tile) */
    size_t per = (size_t)tile * (D + 3);
    int nthreads = omp_get_max_threads();
    float *scratch = malloc((size_t)nthreads * per * sizeof(float));
    if (!scratch) return pf_error("attention_forward: out of memory");
    long ntasks = (long)B * Hq * nt;
    long n_skipped = 0, n_partial = 0, n_full = 0;

#pragma omp parallel for schedule(dynamic, 1) reduction(+ : n_skipped, n_partial, n_full) \
    if ((size_t)ntasks * tile * T * D > PF_CPU_PAR_MIN)
    for (long task = 0; task < ntasks; task++) {
        int qt = (int)(task % nt), h = (int)(task / nt % Hq), b = (int)(task / nt / Hq);
        float *acc = scratch + (size_t)omp_get_thread_num() * per;  /* (nq, D) */
        float *m = acc + (size_t)tile * D, *l = m + tile, *s = l + tile;
        int i0 = qt * tile, i1 = i0 + tile < T ? i0 + tile : T, nq = i1 - i0;
        const float *qb = q + (size_t)b * T * stride + (size_t)h * D;
        const float *kb = k + (size_t)b * T * stride + (size_t)(h / G) * D;
        const float *vb = v + (size_t)b * T * stride + (size_t)(h / G) * D;
        memset(acc, 0, (size_t)nq * D * sizeof(float));
        for (int r = 0; r < nq; r++) {
            m[r] = -INFINITY;
            l[r] = 0.0f;
        }
        for (int kt = 0; kt < nt; kt++) {
            int j0 = kt * tile, j1 = j0 + tile < T ? j0 + tile : T;
            int cls = tile_class(i0, i1, j0, j1, window);
            if (cls == PF_TILE_SKIPPED) {
                n_skipped++;
                continue;
            }
            if (cls == PF_TILE_FULL) n_full++;
            else n_partial++;
            for (int i = i0; i < i1; i++) {
                int lo, hi, r = i - i0;
                visible_keys(i, j0, j1, cls, window, &lo, &hi);
                if (lo >= hi) continue;
                const float *qi = qb + (size_t)i * stride;
                float mx = -INFINITY;
                for (int j = lo; j < hi; j++) {
                    float sj = dot(qi, kb + (size_t)j * stride, D) * scale;
                    s[j - lo] = sj;
                    mx = sj > mx ? sj : mx;
                }
                /* online softmax: rescale what was summed under the old max */
                float mnew = m[r] > mx ? m[r] : mx;
                float corr = expf(m[r] - mnew), sum = 0.0f;
                float *ai = acc + (size_t)r * D;
#pragma omp simd
                for (int d = 0; d < D; d++) ai[d] *= corr;
                for (int j = lo; j < hi; j++) {
                    float p = expf(s[j - lo] - mnew);
                    sum += p;
                    axpy(ai, vb + (size_t)j * stride, p, D);
                }
                l[r] = l[r] * corr + sum;
                m[r] = mnew;
            }
        }
        for (int r = 0; r < nq; r++) {
            /* every query sees at least itself, so l > 0 */
            float inv = 1.0f / l[r];
            float *o = out + (((size_t)b * T + i0 + r) * Hq + h) * D;
            const float *ai = acc + (size_t)r * D;
#pragma omp simd
            for (int d = 0; d < D; d++) o[d] = ai[d] * inv;
            lse[((size_t)b * Hq + h) * T + i0 + r] = m[r] + logf(l[r]);
        }
    }
    free(scratch);
    if (counts) {
        counts[0] += n_skipped;
        counts[1] += n_partial;
        counts[2] += n_full;
    }
    return 0;
}

/* ---- backward --------------------------------------------------------------------------------- */

/* With P = softmax(S) recomputed from lse, D_i = rowsum(dO o O):
 *   dV_j += sum_i P_ij dO_i,  dP_ij = dO_i . V_j,  dS_ij = P_ij (dP_ij - D_i),
 *   dQ_i += scale sum_j dS_ij K_j,  dK_j += scale sum_i dS_ij Q_i.
 * A task is one (batch, kv head): it owns dk, dv of that kv head and dq of its G query heads. */
int cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                           const float *lse, const float *q, const float *k, const float *v,
                           int stride, int B, int T, int Hq, int Hkv, int D, int window, int tile)
{
    PF_TRY(check_args("attention_backward", T, Hq, Hkv, D, tile));
    int nt = (T + tile - 1) / tile, G = Hq / Hkv;
    float scale = 1.0f / sqrtf((float)D);
    size_t per = (size_t)G * T;                        /* D_i of the task's query heads */
    int nthreads = omp_get_max_threads();
    float *scratch = malloc((size_t)nthreads * per * sizeof(float));
    if (!scratch) return pf_error("attention_backward: out of memory");
    long ntasks = (long)B * Hkv;

#pragma omp parallel for schedule(dynamic, 1) if ((size_t)ntasks * T * T * D > PF_CPU_PAR_MIN)
    for (long task = 0; task < ntasks; task++) {
        int b = (int)(task / Hkv), hk = (int)(task % Hkv);
        float *Di = scratch + (size_t)omp_get_thread_num() * per;  /* (G, T) */
        size_t base = (size_t)b * T * stride;
        for (int t = 0; t < T; t++) {
            size_t row = base + (size_t)t * stride;
            memset(dk + row + (size_t)hk * D, 0, (size_t)D * sizeof(float));
            memset(dv + row + (size_t)hk * D, 0, (size_t)D * sizeof(float));
            memset(dq + row + (size_t)hk * G * D, 0, (size_t)G * D * sizeof(float));
            for (int g = 0; g < G; g++) {
                size_t o = (((size_t)b * T + t) * Hq + hk * G + g) * D;
                Di[(size_t)g * T + t] = dot(dout + o, out + o, D);
            }
        }
        for (int kt = 0; kt < nt; kt++) {
            int j0 = kt * tile, j1 = j0 + tile < T ? j0 + tile : T;
            for (int g = 0; g < G; g++) {
                int h = hk * G + g;
                const float *L = lse + ((size_t)b * Hq + h) * T;
                for (int qt = kt; qt < nt; qt++) {
                    int i0 = qt * tile, i1 = i0 + tile < T ? i0 + tile : T;
                    int cls = tile_class(i0, i1, j0, j1, window);
                    if (cls == PF_TILE_SKIPPED) continue;
                    for (int i = i0; i < i1; i++) {
                        int lo, hi;
                        visible_keys(i, j0, j1, cls, window, &lo, &hi);
                        size_t qrow = base + (size_t)i * stride + (size_t)h * D;
                        const float *qi = q + qrow;
                        const float *dOi = dout + (((size_t)b * T + i) * Hq + h) * D;
                        float *dqi = dq + qrow;
                        float Li = L[i], Dsum = Di[(size_t)g * T + i];
                        for (int j = lo; j < hi; j++) {
                            size_t krow = base + (size_t)j * stride + (size_t)hk * D;
                            float p = expf(dot(qi, k + krow, D) * scale - Li);
                            float ds = p * (dot(dOi, v + krow, D) - Dsum) * scale;
                            axpy(dv + krow, dOi, p, D);
                            axpy(dqi, k + krow, ds, D);
                            axpy(dk + krow, qi, ds, D);
                        }
                    }
                }
            }
        }
    }
    free(scratch);
    return 0;
}

/* ---- step ------------------------------------------------------------------------------------- */

/* The new token is the cache's last (position len - 1); it sees the last `window` tokens. */
void cpu_attention_step(float *out, float *weights, const float *q, const float *kcache,
                        const float *vcache, int len, int Hq, int Hkv, int D, int window)
{
    int G = Hq / Hkv, lo = window > 0 && len > window ? len - window : 0;
    float scale = 1.0f / sqrtf((float)D);
#pragma omp parallel for schedule(static) if ((size_t)Hq * len * D > PF_CPU_PAR_MIN)
    for (int h = 0; h < Hq; h++) {
        int hk = h / G;
        float *w = weights + (size_t)h * len, *o = out + (size_t)h * D;
        const float *qh = q + (size_t)h * D;
        float mx = -INFINITY, sum = 0.0f;
        for (int j = 0; j < lo; j++) w[j] = 0.0f;
        for (int j = lo; j < len; j++) {
            w[j] = dot(qh, kcache + ((size_t)j * Hkv + hk) * D, D) * scale;
            mx = w[j] > mx ? w[j] : mx;
        }
        for (int j = lo; j < len; j++) {
            w[j] = expf(w[j] - mx);
            sum += w[j];
        }
        float inv = 1.0f / sum;
        memset(o, 0, (size_t)D * sizeof(float));
        for (int j = lo; j < len; j++) {
            w[j] *= inv;
            axpy(o, vcache + ((size_t)j * Hkv + hk) * D, w[j], D);
        }
    }
}
