/* cpu backend: chunkwise (gated) linear attention: forward (which is also the one-token step) and
 * backward, one parameterised kernel for linear attention and gated linear attention (GLA).
 *
 * For one (batch, head), K the key width, V the value width, Vw = V + normalize:
 *   S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T        S (K, Vw), g_t <= 0 the log-decay (GLA)
 *   n_t = scale * S_t^T q_t                         (Vw)
 *   o_t = n_t                      or, normalised,  o_t[j] = n_t[j] / (n_t[V] + eps)
 * where normalising appends a 1 to every v, so that column V of S is z_t = sum of the decayed k's
 * and n_t[V] = scale * q_t . z_t (Katharopoulos et al. 2020). Ungated (g == NULL) is the same with
 * every decay equal to 1: the same loops, with the exponentials skipped.
 *
 * Chunkwise parallel form: a chunk holds n <= L tokens from t0, S0 is the state before it, and
 *   b_i = g_{t0} + ... + g_{t0+i}     (K) the log-decay relative to the chunk start,
 *   n_i   = scale * [ S0^T (q_i * exp(b_i)) + sum_{s<=i} A[i][s] v_s ],
 *   A[i][s] = sum_k q_i[k] k_s[k] exp(b_i[k] - b_s[k])           (the masked quadratic form),
 *   S_end = diag(exp(b_last)) S0 + sum_s (k_s * exp(b_last - b_s)) v_s^T.
 * Every exponent is a difference b_i - b_s with i >= s, or b_i itself, so it is <= 0 and no decay,
 * however strong, can overflow (the rescaled q * exp(b), k * exp(-b) form of the GLA paper can).
 *
 * Backward (from a zero initial state), with dn_i the gradient of n_i and dS the gradient of the
 * state at the end of the chunk carried back from later chunks:
 *   dq_i[k] = scale * [ exp(b_i[k]) (S0 dn_i)[k] + sum_{s<=i} exp(b_i[k]-b_s[k]) k_s[k] (dn_i . v_s) ]
 *   dk_s[k] = exp(b_last[k]-b_s[k]) (dS v_s)[k] + scale sum_{i>=s} exp(b_i[k]-b_s[k]) q_i[k] (dn_i . v_s)
 *   dv_s    = dS^T (k_s * exp(b_last - b_s)) + scale sum_{i>=s} A[i][s] dn_i
 *   dS     <- diag(exp(b_last)) dS + scale sum_i (q_i * exp(b_i)) dn_i^T
 * and, since o depends on the cumulative log-decay B_t only through differences B_t - B_s weighted
 * by q_t k_s, dL/dB_t = q_t * dq_t - k_t * dk_t, so dg_t = sum over t' >= t of that (a reverse
 * cumulative sum; the identity the GLA paper uses for its gate gradient).
 *
 * Work is parallel over (batch, head); each (batch, head) runs its chunks in order, so results do not
 * depend on the number of threads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "kernels/cpu/cpu.h"

/* per-thread workspace for one (batch, head) */
typedef struct la_work {
    float *S;      /* (K, Vw) state */
    float *dS;     /* (K, Vw) gradient of the state at the end of the current chunk */
    float *b;      /* (L, K) cumulative log-decay within the chunk */
    float *vl;     /* (L, Vw) v of the chunk, with the column of ones when normalised */
    float *dn;     /* (L, Vw) gradient of the numerators */
    float *dvl;    /* (L, Vw) */
    float *acc;    /* (Vw) */
} la_work;

static int work_new(la_work *w, int K, int Vw, int L)
{
    size_t kv = (size_t)K * Vw, lk = (size_t)L * K, lv = (size_t)L * Vw;
    float *base = malloc((2 * kv + lk + 3 * lv + (size_t)Vw) * sizeof(float));
    if (!base) return -1;
    w->S = base;
    w->dS = w->S + kv;
    w->b = w->dS + kv;
    w->vl = w->b + lk;
    w->dn = w->vl + lv;
    w->dvl = w->dn + lv;
    w->acc = w->dvl + lv;
    return 0;
}

/* Load one chunk of n tokens from t0: v (with the ones column) into w->vl and, gated, the cumulative
 * log-decay into w->b. Row pointers: token t of this (batch, head) is at base + t * ld. */
static void load_chunk(la_work *w, const float *v, const float *g, int t0, int n, int ldk, int ldv,
                       int K, int V, int Vw)
{
    for (int i = 0; i < n; i++) {
        const float *vr = v + (size_t)(t0 + i) * ldv;
        float *dst = w->vl + (size_t)i * Vw;
        memcpy(dst, vr, (size_t)V * sizeof(float));
        if (Vw > V) dst[V] = 1.0f;
    }
    if (!g) return;
    for (int i = 0; i < n; i++) {
        const float *gr = g + (size_t)(t0 + i) * ldk;
        float *bi = w->b + (size_t)i * K;
        const float *prev = i ? bi - K : NULL;
        for (int k = 0; k < K; k++) bi[k] = (prev ? prev[k] : 0.0f) + gr[k];
    }
}

int cpu_linattn_forward(float *out, float *chunk_states, float *den, float *state, const float *q,
                        const float *k, const float *v, const float *g, int B, int T, int H, int K,
                        int V, int chunk, float scale, int normalize, float eps)
{
    int L = chunk < T ? chunk : T, Vw = V + (normalize ? 1 : 0), NC = (T + chunk - 1) / chunk;
    int ldk = H * K, ldv = H * V, failed = 0;
    size_t kv = (size_t)K * Vw;
#pragma omp parallel if ((size_t)B * T * H * kv > PF_CPU_PAR_MIN)
    {
        la_work w;
        int ok = work_new(&w, K, Vw, L) == 0;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            if (!ok) continue;
            int b = bh / H, h = bh % H;
            size_t row0 = (size_t)b * T;
            const float *qb = q + row0 * ldk + (size_t)h * K, *kb = k + row0 * ldk + (size_t)h * K;
            const float *gb = g ? g + row0 * ldk + (size_t)h * K : NULL;
            const float *vb = v + row0 * ldv + (size_t)h * V;
            float *ob = out + row0 * ldv + (size_t)h * V;
            float *S = w.S, *num = w.acc;
            if (state) memcpy(S, state + (size_t)bh * kv, kv * sizeof(float));
            else memset(S, 0, kv * sizeof(float));
            for (int c = 0, t0 = 0; t0 < T; c++, t0 += chunk) {
                int n = T - t0 < chunk ? T - t0 : chunk;
                if (chunk_states) memcpy(chunk_states + ((size_t)bh * NC + c) * kv, S, kv * sizeof(float));
                load_chunk(&w, vb, gb, t0, n, ldk, ldv, K, V, Vw);
                for (int i = 0; i < n; i++) {
                    const float *qi = qb + (size_t)(t0 + i) * ldk, *bi = w.b + (size_t)i * K;
                    /* from the state before the chunk */
                    memset(num, 0, (size_t)Vw * sizeof(float));
                    for (int kk = 0; kk < K; kk++) {
                        float a = qi[kk] * (gb ? expf(bi[kk]) : 1.0f);
                        const float *Sk = S + (size_t)kk * Vw;
                        for (int j = 0; j < Vw; j++) num[j] += a * Sk[j];
                    }
                    /* within the chunk: the masked quadratic form */
                    for (int s = 0; s <= i; s++) {
                        const float *ks = kb + (size_t)(t0 + s) * ldk, *bs = w.b + (size_t)s * K;
                        float a = 0;
                        if (gb) {
#pragma omp simd reduction(+ : a)
                            for (int kk = 0; kk < K; kk++) a += qi[kk] * ks[kk] * expf(bi[kk] - bs[kk]);
                        } else {
#pragma omp simd reduction(+ : a)
                            for (int kk = 0; kk < K; kk++) a += qi[kk] * ks[kk];
                        }
                        const float *vs = w.vl + (size_t)s * Vw;
                        for (int j = 0; j < Vw; j++) num[j] += a * vs[j];
                    }
                    float *oi = ob + (size_t)(t0 + i) * ldv;
                    if (normalize) {
                        float d = scale * num[V] + eps;
                        if (den) den[(row0 + t0 + i) * H + h] = d;
                        for (int j = 0; j < V; j++) oi[j] = scale * num[j] / d;
                    } else {
                        for (int j = 0; j < V; j++) oi[j] = scale * num[j];
                    }
                }
                /* carry the state to the end of the chunk */
                const float *bl = w.b + (size_t)(n - 1) * K;
                for (int kk = 0; kk < K; kk++) {
                    float *Sk = S + (size_t)kk * Vw;
                    if (gb) {
                        float d = expf(bl[kk]);
                        for (int j = 0; j < Vw; j++) Sk[j] *= d;
                    }
                    for (int s = 0; s < n; s++) {
                        float a = kb[(size_t)(t0 + s) * ldk + kk];
                        if (gb) a *= expf(bl[kk] - w.b[(size_t)s * K + kk]);
                        const float *vs = w.vl + (size_t)s * Vw;
                        for (int j = 0; j < Vw; j++) Sk[j] += a * vs[j];
                    }
                }
            }
            if (state) memcpy(state + (size_t)bh * kv, S, kv * sizeof(float));
        }
        if (ok) free(w.S);
    }
    if (failed) return pf_error("linear attention: out of memory for the kernel's workspace");
    return 0;
}

int cpu_linattn_backward(float *dq, float *dk, float *dv, float *dg, const float *dout,
                         const float *out, const float *chunk_states, const float *den,
                         const float *q, const float *k, const float *v, const float *g, int B,
                         int T, int H, int K, int V, int chunk, float scale, int normalize)
{
    int L = chunk < T ? chunk : T, Vw = V + (normalize ? 1 : 0), NC = (T + chunk - 1) / chunk;
    int ldk = H * K, ldv = H * V, failed = 0;
    size_t kv = (size_t)K * Vw;
#pragma omp parallel if ((size_t)B * T * H * kv > PF_CPU_PAR_MIN)
    {
        la_work w;
        int ok = work_new(&w, K, Vw, L) == 0;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            if (!ok) continue;
            int b = bh / H, h = bh % H;
            size_t row0 = (size_t)b * T, hk = (size_t)h * K, hv = (size_t)h * V;
            const float *qb = q + row0 * ldk + hk, *kb = k + row0 * ldk + hk;
            const float *gb = g ? g + row0 * ldk + hk : NULL;
            const float *vb = v + row0 * ldv + hv;
            float *dqb = dq + row0 * ldk + hk, *dkb = dk + row0 * ldk + hk;
            float *dgb = dg && g ? dg + row0 * ldk + hk : NULL;
            float *dS = w.dS;
            memset(dS, 0, kv * sizeof(float));
            for (int c = NC - 1; c >= 0; c--) {
                int t0 = c * chunk, n = T - t0 < chunk ? T - t0 : chunk;
                const float *S0 = chunk_states + ((size_t)bh * NC + c) * kv;
                load_chunk(&w, vb, gb, t0, n, ldk, ldv, K, V, Vw);
                /* dn: the gradient of the numerators n_i (scale included in n) */
                for (int i = 0; i < n; i++) {
                    size_t r = row0 + t0 + i;
                    const float *doi = dout + r * ldv + hv;
                    float *dni = w.dn + (size_t)i * Vw;
                    if (normalize) {
                        const float *oi = out + r * ldv + hv;
                        float d = den[r * H + h], dd = 0;
                        for (int j = 0; j < V; j++) {
                            dni[j] = doi[j] / d;
                            dd += doi[j] * oi[j];
                        }
                        dni[V] = -dd / d;
                    } else {
                        memcpy(dni, doi, (size_t)V * sizeof(float));
                    }
                }
                memset(w.dvl, 0, (size_t)n * Vw * sizeof(float));
                for (int i = 0; i < n; i++) {
                    memset(dqb + (size_t)(t0 + i) * ldk, 0, (size_t)K * sizeof(float));
                    memset(dkb + (size_t)(t0 + i) * ldk, 0, (size_t)K * sizeof(float));
                }
                const float *bl = w.b + (size_t)(n - 1) * K;
                for (int i = 0; i < n; i++) {
                    const float *qi = qb + (size_t)(t0 + i) * ldk, *bi = w.b + (size_t)i * K;
                    const float *dni = w.dn + (size_t)i * Vw;
                    float *dqi = dqb + (size_t)(t0 + i) * ldk;
                    /* through the state before the chunk */
                    for (int kk = 0; kk < K; kk++) {
                        const float *Sk = S0 + (size_t)kk * Vw;
                        float a = 0;
#pragma omp simd reduction(+ : a)
                        for (int j = 0; j < Vw; j++) a += Sk[j] * dni[j];
                        dqi[kk] = scale * a * (gb ? expf(bi[kk]) : 1.0f);
                    }
                    /* within the chunk */
                    for (int s = 0; s <= i; s++) {
                        const float *ks = kb + (size_t)(t0 + s) * ldk, *bs = w.b + (size_t)s * K;
                        const float *vs = w.vl + (size_t)s * Vw;
                        float *dks = dkb + (size_t)(t0 + s) * ldk;
                        float dnv = 0, a = 0;
#pragma omp simd reduction(+ : dnv)
                        for (int j = 0; j < Vw; j++) dnv += dni[j] * vs[j];
                        dnv *= scale;
#pragma omp simd reduction(+ : a)
                        for (int kk = 0; kk < K; kk++) {
                            float e = gb ? expf(bi[kk] - bs[kk]) : 1.0f;
                            float qe = qi[kk] * e;
                            a += qe * ks[kk];
                            dqi[kk] += e * ks[kk] * dnv;
                            dks[kk] += qe * dnv;
                        }
                        float *dvs = w.dvl + (size_t)s * Vw;
                        a *= scale;
                        for (int j = 0; j < Vw; j++) dvs[j] += a * dni[j];
                    }
                }
                /* through the state after the chunk */
                for (int s = 0; s < n; s++) {
                    const float *ks = kb + (size_t)(t0 + s) * ldk, *bs = w.b + (size_t)s * K;
                    const float *vs = w.vl + (size_t)s * Vw;
                    float *dks = dkb + (size_t)(t0 + s) * ldk, *dvs = w.dvl + (size_t)s * Vw;
                    for (int kk = 0; kk < K; kk++) {
                        const float *dSk = dS + (size_t)kk * Vw;
                        float e = gb ? expf(bl[kk] - bs[kk]) : 1.0f, a = 0, ke = ks[kk] * e;
#pragma omp simd reduction(+ : a)
                        for (int j = 0; j < Vw; j++) {
                            a += dSk[j] * vs[j];
                            dvs[j] += ke * dSk[j];
                        }
                        dks[kk] += e * a;
                    }
                    float *dvr = dv + (row0 + t0 + s) * ldv + hv;
                    memcpy(dvr, dvs, (size_t)V * sizeof(float));
                }
                /* carry the state gradient to the start of the chunk */
                for (int kk = 0; kk < K; kk++) {
                    float *dSk = dS + (size_t)kk * Vw;
                    if (gb) {
                        float d = expf(bl[kk]);
                        for (int j = 0; j < Vw; j++) dSk[j] *= d;
                    }
                    for (int i = 0; i < n; i++) {
                        float a = scale * qb[(size_t)(t0 + i) * ldk + kk];
                        if (gb) a *= expf(w.b[(size_t)i * K + kk]);
                        const float *dni = w.dn + (size_t)i * Vw;
                        for (int j = 0; j < Vw; j++) dSk[j] += a * dni[j];
                    }
                }
            }
            /* dg_t = sum over t' >= t of (q * dq - k * dk)_t' */
            if (dgb) {
                for (int kk = 0; kk < K; kk++) {
                    double r = 0;
                    for (int t = T - 1; t >= 0; t--) {
                        size_t o = (size_t)t * ldk + kk;
                        r += (double)qb[o] * dqb[o] - (double)kb[o] * dkb[o];
                        dgb[o] = (float)r;
                    }
                }
            }
        }
        if (ok) free(w.S);
    }
    if (failed) return pf_error("linear attention: out of memory for the kernel's workspace");
    return 0;
}
