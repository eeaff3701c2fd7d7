/* cpu backend: mixture-of-experts routing, token grouping by expert and the weighted scatter back.
 *
 * N tokens (rows), E experts, K slots per token (top_k for token choice, E for expert choice),
 * C model width, R grouped rows. Signatures and semantics are those of pf_backend (kernels.h).
 * Everything is deterministic: per-token and per-expert loops own their outputs, the grouping is one
 * sequential scan, and no sum depends on the thread schedule. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu.h"
#include "kernels/pointwise.h"

/* ---- jitter ---------------------------------------------------------------------------------- */

/* the splitmix64 finaliser: a bijective 64-bit mix */
static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void cpu_moe_jitter(float *out, float *noise, const float *in, size_t n, float eps, uint64_t seed,
                    uint64_t counter)
{
    uint64_t key = mix64(seed + 0x9e3779b97f4a7c15ULL * (counter + 1));
#pragma omp parallel for schedule(static) if (n > PF_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        /* 24 random bits -> u in [0, 1) exactly representable in float */
        float u = (float)(mix64(key + 0x9e3779b97f4a7c15ULL * (uint64_t)i) >> 40) * 0x1.0p-24f;
        float s = 1.0f + eps * (2.0f * u - 1.0f);
        noise[i] = s;
        out[i] = in[i] * s;
    }
}

/* ---- routing --------------------------------------------------------------------------------- */

void cpu_moe_route(float *probs, float *lse, int32_t *idx, float *w, const float *logits, int N, int E,
                   int K, int renorm)
{
#pragma omp parallel for schedule(static) if ((size_t)N * E > PF_CPU_PAR_MIN / 8)
    for (int t = 0; t < N; t++) {
        lse[t] = pf_moe_route_row(probs + (size_t)t * E, idx + (size_t)t * (K > 0 ? K : 0),
                                  w + (size_t)t * (K > 0 ? K : 0), logits + (size_t)t * E, E, K > 0 ? K : 0, renorm);
    }
}

/* ---- grouping -------------------------------------------------------------------------------- */

void cpu_moe_dispatch(int32_t *slot_row, int32_t *row_token, float *row_w, int32_t *counts,
                      const int32_t *idx, const float *w, int N, int E, int K, int cap)
{
    int32_t *kept = counts, *chosen = counts + E;
    memset(counts, 0, (size_t)(2 * E + 1) * sizeof(int32_t));
    /* pass 1, in priority order: accept or drop each slot; slot_row holds the position within its
     * expert for now */
    for (int j = 0; j < K; j++)
        for (int t = 0; t < N; t++) {
            int e = idx[(size_t)t * K + j];
            chosen[e]++;
            if (cap < 0 || kept[e] < cap) slot_row[(size_t)t * K + j] = kept[e]++;
            else {
                slot_row[(size_t)t * K + j] = -1;
                counts[2 * E]++;
            }
        }
    /* pass 2: positions -> rows (expert e's rows start after the kept rows of experts < e); kept
     * holds those offsets during the pass and its counts again after it */
    int total = 0;
    for (int e = 0; e < E; e++) {
        int n = kept[e];
        kept[e] = total;
        total += n;
    }
    for (int j = 0; j < K; j++)
        for (int t = 0; t < N; t++) {
            size_t s = (size_t)t * K + j;
            if (slot_row[s] < 0) continue;
            int r = kept[idx[s]] + slot_row[s];
            slot_row[s] = r;
            row_token[r] = t;
            row_w[r] = w[s];
        }
    for (int e = 0; e < E; e++) kept[e] = (e + 1 < E ? kept[e + 1] : total) - kept[e];
}

/* stable merge sort of a (n) token ids by p[a[i] * E] descending; tmp (n) */
static void sort_by_prob(int32_t *a, int32_t *tmp, int n, const float *p, int E)
{
    for (int width = 1; width < n; width *= 2) {
        for (int lo = 0; lo < n; lo += 2 * width) {
            int mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            int i = lo, j = mid, o = lo;
            while (i < mid && j < hi)   /* '>=': the left run (lower token ids) wins ties */
                tmp[o++] = p[(size_t)a[i] * E] >= p[(size_t)a[j] * E] ? a[i++] : a[j++];
            while (i < mid) tmp[o++] = a[i++];
            while (j < hi) tmp[o++] = a[j++];
        }
        memcpy(a, tmp, (size_t)n * sizeof(int32_t));
    }
}

void cpu_moe_expert_choice(int32_t *slot_row, float *w, int32_t *row_token, float *row_w,
                           int32_t *counts, int32_t *scratch, const float *probs, int N, int E, int c)
{
    for (size_t i = 0; i < (size_t)N * E; i++) {
        slot_row[i] = -1;
        w[i] = 0.0f;
    }
#pragma omp parallel for schedule(static) if ((size_t)N * E > PF_CPU_PAR_MIN / 8)
    for (int e = 0; e < E; e++) {
        int32_t *a = scratch + (size_t)e * 2 * N, *tmp = a + N;
        for (int t = 0; t < N; t++) a[t] = t;
        sort_by_prob(a, tmp, N, probs + e, E);
        /* mark the c best, then number them in token order */
        for (int i = 0; i < c; i++) slot_row[(size_t)a[i] * E + e] = 1;
        int r = e * c;
        for (int t = 0; t < N; t++) {
            size_t s = (size_t)t * E + e;
            if (slot_row[s] < 0) continue;
            slot_row[s] = r;
            w[s] = probs[s];
            row_token[r] = t;
            row_w[r] = probs[s];
            r++;
        }
    }
    int dropped = 0;
    for (int t = 0; t < N; t++) {
        int any = 0;
        for (int e = 0; e < E; e++) any |= slot_row[(size_t)t * E + e] >= 0;
        dropped += !any;
    }
    for (int e = 0; e < E; e++) counts[e] = counts[E + e] = c;
    counts[2 * E] = dropped;
}

/* ---- gather, scatter back -------------------------------------------------------------------- */

void cpu_moe_gather(float *out, const float *in, const int32_t *row_token, const float *scale, int R,
                    int C)
{
#pragma omp parallel for schedule(static) if ((size_t)R * C > PF_CPU_PAR_MIN)
    for (int r = 0; r < R; r++) {
        const float *x = in + (size_t)row_token[r] * C;
        float *o = out + (size_t)r * C, s = scale ? scale[r] : 1.0f;
        for (int c = 0; c < C; c++) o[c] = s * x[c];
    }
}

void cpu_moe_combine(float *out, const float *y, const int32_t *slot_row, const float *w, int N, int K,
                     int C, int accumulate)
{
#pragma omp parallel for schedule(static) if ((size_t)N * K * C > PF_CPU_PAR_MIN)
    for (int t = 0; t < N; t++) {
        float *o = out + (size_t)t * C;
        if (!accumulate) memset(o, 0, (size_t)C * sizeof(float));
        for (int j = 0; j < K; j++) {
            int r = slot_row[(size_t)t * K + j];
            if (r < 0) continue;
            const float *yr = y + (size_t)r * C;
            float s = w ? w[(size_t)t * K + j] : 1.0f;
            for (int c = 0; c < C; c++) o[c] += s * yr[c];
        }
    }
}

void cpu_moe_gate_grad(float *dw, const float *dout, const float *y, const int32_t *slot_row, int N,
                       int K, int C)
{
#pragma omp parallel for schedule(static) if ((size_t)N * K * C > PF_CPU_PAR_MIN)
    for (int t = 0; t < N; t++)
        for (int j = 0; j < K; j++) {
            int r = slot_row[(size_t)t * K + j];
            double s = 0;
            if (r >= 0) {
                const float *d = dout + (size_t)t * C, *yr = y + (size_t)r * C;
                for (int c = 0; c < C; c++) s += (double)d[c] * yr[c];
            }
            dw[(size_t)t * K + j] = (float)s;
        }
}

/* ---- router backward and statistics ---------------------------------------------------------- */

void cpu_moe_router_backward(float *dlogits, const float *probs, const float *lse, const int32_t *idx,
                             const float *w, const float *dw, const float *aux_grad, float z_coef,
                             int N, int E, int K, int renorm)
{
#pragma omp parallel for schedule(static) if ((size_t)N * E > PF_CPU_PAR_MIN / 8)
    for (int t = 0; t < N; t++) {
        pf_moe_router_backward_row(dlogits + (size_t)t * E, probs + (size_t)t * E, lse[t],
                                   idx ? idx + (size_t)t * K : NULL, w + (size_t)t * K, dw + (size_t)t * K,
                                   aux_grad, z_coef, E, K, renorm);
    }
}

void cpu_moe_router_stats(float *stats, const float *probs, const float *lse, int N, int E)
{
    /* one expert per iteration, tokens in order: the sums do not depend on the thread count */
#pragma omp parallel for schedule(static) if ((size_t)N * E > PF_CPU_PAR_MIN)
    for (int e = 0; e < E; e++) {
        double s = 0;
        for (int t = 0; t < N; t++) s += probs[(size_t)t * E + e];
        stats[e] = (float)s;
    }
    double z = 0, h = 0;
    for (int t = 0; t < N; t++) {
        z += (double)lse[t] * lse[t];
        for (int e = 0; e < E; e++) {
            double p = probs[(size_t)t * E + e];
            if (p > 0) h -= p * log(p);
        }
    }
    stats[E] = (float)z;
    stats[E + 1] = (float)h;
}
