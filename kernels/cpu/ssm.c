/* cpu backend: the causal depthwise conv1d and the selective scan of the recurrent-state layers
 * (mamba, s4d). Letters: B sequences of T tokens (row r = b*T + t), E channels, N states per
 * channel, K conv width. See pf_ssm_scan in kernels/kernels.h for the recurrence.
 *
 * The scan forward runs in parallel over (sequence, channel) and in time order inside, keeping one
 * channel's h (N) in registers; it saves h entering every chunk of tokens (hsave), never all states.
 * The backward recomputes h inside a chunk from hsave and runs in reverse time. It runs in parallel
 * over sequences only: per-token B and C (Mamba) are shared by every channel of a sequence, so one
 * thread owns a sequence and sums over its channels in a fixed order. Operands shared across
 * sequences (A_log, D, and Δ, B, C when time-invariant) get a partial sum per sequence, added up in
 * sequence order afterwards: the result does not depend on the thread count or schedule. */
#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "engine/error.h"
#include "kernels/cpu/cpu.h"

/* ==== causal depthwise conv1d ================================================================ */

void cpu_conv1d_causal_forward(float *out, const float *x, int ldx, const float *w,
                               const float *bias, float *state, int B, int T, int E, int K)
{
    long rows = (long)B * T;
#pragma omp parallel for schedule(static) if (rows * E * K > PF_CPU_PAR_MIN)
    for (long r = 0; r < rows; r++) {
        int b = (int)(r / T), t = (int)(r % T);
        float *o = out + r * E;
        for (int e = 0; e < E; e++) o[e] = bias ? bias[e] : 0.0f;
        for (int k = 0; k < K; k++) {
            int tt = t - (K - 1) + k;
            const float *src;
            if (tt >= 0) src = x + ((long)b * T + tt) * ldx;
            else if (state) src = state + ((long)b * (K - 1) + (K - 1 + tt)) * E;
            else continue;
            for (int e = 0; e < E; e++) o[e] += w[(long)e * K + k] * src[e];
        }
    }
    if (!state || K < 2) return;
    /* the window moves on: state[j] = input at position T - (K-1) + j (negative: an older state row,
     * always at a higher index, so increasing j reads before it writes) */
    for (int b = 0; b < B; b++)
        for (int j = 0; j < K - 1; j++) {
            int p = T - (K - 1) + j;
            float *dst = state + ((long)b * (K - 1) + j) * E;
            const float *src = p >= 0 ? x + ((long)b * T + p) * ldx : state + ((long)b * (K - 1) + K - 1 + p) * E;
            memmove(dst, src, (size_t)E * sizeof(float));
        }
}

void cpu_conv1d_causal_backward(float *dx, int lddx, float *dw, float *dbias, const float *dout,
                                const float *x, int ldx, const float *w, int B, int T, int E, int K)
{
    long rows = (long)B * T;
    /* dx: out[t] uses x[t - K + 1 + k], so x[t] feeds out[t + K - 1 - k]; rows in parallel */
#pragma omp parallel for schedule(static) if (rows * E * K > PF_CPU_PAR_MIN)
    for (long r = 0; r < rows; r++) {
        int t = (int)(r % T);
        float *d = dx + r * lddx;
        for (int e = 0; e < E; e++) d[e] = 0;
        for (int k = 0; k < K; k++) {
            if (t + (K - 1) - k >= T) continue;
            const float *go = dout + (r + (K - 1) - k) * E;
            for (int e = 0; e < E; e++) d[e] += w[(long)e * K + k] * go[e];
        }
    }
    /* dw, dbias: blocks of channels in parallel, each summed over rows in order (in double) */
    enum { EB = 16 };
#pragma omp parallel for schedule(static) if (rows * E * K > PF_CPU_PAR_MIN)
    for (int e0 = 0; e0 < E; e0 += EB) {
        int ne = E - e0 < EB ? E - e0 : EB;
        double acc[EB * 65] = {0};          /* (ne, K) then the bias; K <= 64 */
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                const float *go = dout + ((long)b * T + t) * E + e0;
                for (int k = 0; k < K; k++) {
                    int tt = t - (K - 1) + k;
                    if (tt < 0) continue;
                    const float *xs = x + ((long)b * T + tt) * ldx + e0;
                    for (int j = 0; j < ne; j++) acc[j * 65 + k] += (double)go[j] * xs[j];
                }
                for (int j = 0; j < ne; j++) acc[j * 65 + 64] += go[j];
            }
        for (int j = 0; j < ne; j++) {
            for (int k = 0; k < K; k++) dw[(long)(e0 + j) * K + k] += (float)acc[j * 65 + k];
            if (dbias) dbias[e0 + j] += (float)acc[j * 65 + 64];
        }
    }
}

/* ==== selective scan ========================================================================== */

/* exp for the scan's inner loops: Cephes' expf (range reduction by ln 2, degree-5 polynomial, about
 * 1 ulp), written without libm calls so that GCC vectorises the loops it sits in. Arguments below
 * -87 give about 1e-38 instead of underflowing to 0 (decays that small are 0 for every purpose). */
static inline float clamp_bits(float x, float lo, float hi)
{
    /* a select through integer masks: GCC vectorises this, not the float ternary */
    int32_t xi, li, hi_, below = -(int32_t)(x < lo), above = -(int32_t)(x > hi);
    memcpy(&xi, &x, 4);
    memcpy(&li, &lo, 4);
    memcpy(&hi_, &hi, 4);
    xi = (xi & ~below & ~above) | (li & below) | (hi_ & above);
    memcpy(&x, &xi, 4);
    return x;
}

static inline float fast_expf(float x)
{
    x = clamp_bits(x, -87.0f, 88.0f);
    float t = x * 1.44269504088896341f;
    float n = (t + 12582912.0f) - 12582912.0f;                 /* round to nearest: 1.5 * 2^23 */
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;     /* x - n ln2, in two parts */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3333519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float softplusf(float v) { return v > 20.0f ? v : log1pf(expf(v)); }
static inline float sigmoidf_(float v) { return 1.0f / (1.0f + expf(-v)); }

/* Δ of (row r, channel e), and dΔ/d(dt) into *slope when slope is not NULL */
static inline float scan_delta(const pf_ssm_scan *s, long r, int e, float *slope)
{
    float v = s->dt[r * s->dt_tok + e];
    if (s->dt_softplus) {
        if (s->dt_bias) v += s->dt_bias[e];
        if (slope) *slope = sigmoidf_(v);
        return softplusf(v);
    }
    float d = expf(v);
    if (slope) *slope = d;
    return d;
}

int cpu_ssm_scan_forward(const pf_ssm_scan *s)
{
    const int B = s->B, T = s->T, E = s->E, N = s->N, ch = s->chunk > 0 ? s->chunk : T;
    const int nch = (T + ch - 1) / ch;
    int failed = 0;
#pragma omp parallel if ((long)B * T * E * N > PF_CPU_PAR_MIN / 4)
    {
        float *buf = malloc(2 * (size_t)N * sizeof(float));
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        }
        float *restrict h = buf, *restrict A = buf ? buf + N : NULL;
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int e = 0; e < E; e++) {
                if (!buf) continue;
                float *st = s->state ? s->state + ((long)b * E + e) * N : NULL;
                for (int n = 0; n < N; n++) {
                    A[n] = -fast_expf(s->A_log[(long)e * N + n]);
                    h[n] = st ? st[n] : 0.0f;
                }
                float De = s->D ? s->D[e] : 0.0f;
                for (int t = 0; t < T; t++) {
                    long r = (long)b * T + t;
                    if (s->hsave && t % ch == 0)
                        memcpy(s->hsave + (((long)b * nch + t / ch) * E + e) * N, h, (size_t)N * sizeof(float));
                    float d = scan_delta(s, r, e, NULL);
                    float xv = s->x[r * E + e], dx = d * xv;
                    const float *Bp = s->Bm + r * s->b_tok + (long)e * s->b_chan;
                    const float *Cp = s->Cm + r * s->c_tok + (long)e * s->c_chan;
                    for (int n = 0; n < N; n++) h[n] = fast_expf(d * A[n]) * h[n] + dx * Bp[n];
                    float acc = 0;
                    for (int n = 0; n < N; n++) acc += Cp[n] * h[n];
                    s->y[r * s->y_ld + e] = acc + De * xv;
                }
                if (st) memcpy(st, h, (size_t)N * sizeof(float));
            }
        free(buf);
    }
    if (failed) return pf_error("ssm_scan_forward: out of memory (N = %d)", N);
    return 0;
}

/* floats in the span an operand covers for one sequence when it does not vary with the token */
static long shared_span(int chan, int E, int N) { return (long)(E - 1) * chan + N; }

/* One token of the backward for one channel: dh (N) holds dL/dh_t from later tokens on entry and
 * dL/dh_{t-1} on return; dA, dB_t, dC_t (N) +=; *dd = dL/dΔ_t, *dxs * Δ_t = the scan's part of dL/dx_t.
 * td, tx (N) scratch. */
static void scan_back_token(int N, float dy, float d, float xv, const float *restrict A,
                            const float *restrict an, const float *restrict hp, const float *restrict hc,
                            const float *restrict Bp, const float *restrict Cp, float *restrict dh,
                            float *restrict dA, float *restrict dBp, float *restrict dCp,
                            float *restrict td, float *restrict tx, float *dd, float *dxs)
{
    float dxd = d * xv;
    for (int n = 0; n < N; n++) {
        dCp[n] += dy * hc[n];
        float gh = dh[n] + dy * Cp[n];          /* dL/dh_t */
        float ahp = an[n] * hp[n];
        td[n] = gh * (A[n] * ahp + Bp[n] * xv); /* dL/dΔ terms */
        tx[n] = gh * Bp[n];                     /* dL/dx terms, over Δ */
        dA[n] += gh * d * ahp;
        dBp[n] += gh * dxd;
        dh[n] = gh * an[n];                     /* dL/dh_{t-1} through h_t */
    }
    float sd = 0, sx = 0;
    for (int n = 0; n < N; n++) sd += td[n];
    for (int n = 0; n < N; n++) sx += tx[n];
    *dd = sd;
    *dxs = sx;
}

int cpu_ssm_scan_backward(const pf_ssm_scan *s, const pf_ssm_scan_grad *g)
{
    const int B = s->B, T = s->T, E = s->E, N = s->N, ch = s->chunk > 0 ? s->chunk : T;
    const int nch = (T + ch - 1) / ch;
    /* per-sequence partials of the operands shared across sequences */
    const long nA = (long)E * N, nD = g->dD ? E : 0, ndt = s->dt_tok ? 0 : E;
    const long nB = s->b_tok ? 0 : shared_span(s->b_chan, E, N);
    const long nC = s->c_tok ? 0 : shared_span(s->c_chan, E, N);
    const long per = nA + nD + ndt + nB + nC;
    float *part = calloc((size_t)B * per, sizeof(float));
    if (!part) return pf_error("ssm_scan_backward: out of memory");
    int failed = 0;
#pragma omp parallel if ((long)B * T * E * N > PF_CPU_PAR_MIN / 4)
    {
        /* A, dh, dA, two sums' terms (N each); h (ch+1, N); a = exp(ΔA) (ch, N); Δ, dΔ/d(dt) (ch) */
        float *buf = malloc(((size_t)N * (5 + 2 * (size_t)ch + 1) + 2 * (size_t)ch) * sizeof(float));
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        }
        float *restrict A = buf, *restrict dh = buf + N, *restrict dA = buf + 2 * N;
        float *restrict td = buf + 3 * N, *restrict tx = buf + 4 * N;
        float *restrict hb = buf + 5 * N, *restrict ab = hb + (size_t)(ch + 1) * N;
        float *restrict db = ab + (size_t)ch * N, *restrict sb = db + ch;
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            if (!buf) continue;
            float *pA = part + b * per, *pD = pA + nA, *pdt = pD + nD, *pB = pdt + ndt, *pC = pB + nB;
            float *dBbase = s->b_tok ? g->dB : pB, *dCbase = s->c_tok ? g->dC : pC;
            float *ddtbase = s->dt_tok ? g->ddt : pdt;
            for (int e = 0; e < E; e++) {
                for (int n = 0; n < N; n++) {
                    A[n] = -fast_expf(s->A_log[(long)e * N + n]);
                    dh[n] = 0;
                    dA[n] = 0;
                }
                float De = s->D ? s->D[e] : 0.0f;
                double dDe = 0;
                for (int c = nch - 1; c >= 0; c--) {
                    int t0 = c * ch, t1 = t0 + ch < T ? t0 + ch : T;
                    /* recompute h_{t0-1} .. h_{t1-1}, the decays and Δ of the chunk */
                    memcpy(hb, s->hsave + (((long)b * nch + c) * E + e) * N, (size_t)N * sizeof(float));
                    for (int t = t0; t < t1; t++) {
                        long r = (long)b * T + t;
                        float d = scan_delta(s, r, e, &sb[t - t0]), dx = d * s->x[r * E + e];
                        db[t - t0] = d;
                        const float *Bp = s->Bm + r * s->b_tok + (long)e * s->b_chan;
                        const float *hp = hb + (size_t)(t - t0) * N;
                        float *hn = hb + (size_t)(t - t0 + 1) * N, *an = ab + (size_t)(t - t0) * N;
                        for (int n = 0; n < N; n++) {
                            an[n] = fast_expf(d * A[n]);
                            hn[n] = an[n] * hp[n] + dx * Bp[n];
                        }
                    }
                    for (int t = t1 - 1; t >= t0; t--) {
                        long r = (long)b * T + t;
                        float d = db[t - t0], xv = s->x[r * E + e], dy = g->dy[r * g->dy_ld + e];
                        const float *Bp = s->Bm + r * s->b_tok + (long)e * s->b_chan;
                        const float *Cp = s->Cm + r * s->c_tok + (long)e * s->c_chan;
                        float *dBp = dBbase + r * s->b_tok + (long)e * s->b_chan;
                        float *dCp = dCbase + r * s->c_tok + (long)e * s->c_chan;
                        const float *hp = hb + (size_t)(t - t0) * N, *hc = hp + N, *an = ab + (size_t)(t - t0) * N;
                        float dd, dxs;
                        scan_back_token(N, dy, d, xv, A, an, hp, hc, Bp, Cp, dh, dA, dBp, dCp, td, tx, &dd, &dxs);
                        dDe += (double)dy * xv;
                        g->dx[r * E + e] = dy * De + d * dxs;
                        ddtbase[r * s->dt_tok + e] += dd * sb[t - t0];
                    }
                }
                for (int n = 0; n < N; n++) pA[(long)e * N + n] += dA[n] * A[n]; /* dA/dA_log = A */
                if (nD) pD[e] += (float)dDe;
            }
        }
        free(buf);
    }
    if (!failed)
        for (int b = 0; b < B; b++) {
            const float *pA = part + b * per, *pD = pA + nA, *pdt = pD + nD, *pB = pdt + ndt, *pC = pB + nB;
            for (long i = 0; i < nA; i++) g->dA_log[i] += pA[i];
            for (long i = 0; i < nD; i++) g->dD[i] += pD[i];
            for (long i = 0; i < ndt; i++) g->ddt[i] += pdt[i];
            for (long i = 0; i < nB; i++) g->dB[i] += pB[i];
            for (long i = 0; i < nC; i++) g->dC[i] += pC[i];
        }
    free(part);
    if (failed) return pf_error("ssm_scan_backward: out of memory (N = %d, chunk = %d)", N, ch);
    return 0;
}
