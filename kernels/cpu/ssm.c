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
    /* parallel over channels: each thread owns dw[e], dbias[e] and the column e of dx */
#pragma omp parallel for schedule(static) if ((long)B * T * E * K > PF_CPU_PAR_MIN)
    for (int e = 0; e < E; e++) {
        const float *we = w + (long)e * K;
        for (int b = 0; b < B; b++) {
            const float *go = dout + (long)b * T * E + e;
            float *dxb = dx + (long)b * T * lddx + e;
            /* out[t] uses x[t - K + 1 + k], so x[t] feeds out[t + K - 1 - k] */
            for (int t = 0; t < T; t++) {
                float acc = 0;
                for (int k = 0; k < K; k++) {
                    int to = t + (K - 1) - k;
                    if (to < T) acc += we[k] * go[(long)to * E];
                }
                dxb[(long)t * lddx] = acc;
            }
        }
        for (int k = 0; k < K; k++) {
            double acc = 0;
            for (int b = 0; b < B; b++) {
                const float *go = dout + (long)b * T * E + e, *xb = x + (long)b * T * ldx + e;
                for (int t = K - 1 - k; t < T; t++) acc += (double)go[(long)t * E] * xb[(long)(t - (K - 1) + k) * ldx];
            }
            dw[(long)e * K + k] += (float)acc;
        }
        if (dbias) {
            double db = 0;
            for (long r = 0; r < (long)B * T; r++) db += dout[r * E + e];
            dbias[e] += (float)db;
        }
    }
}

/* ==== selective scan ========================================================================== */

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
        float *h = buf, *A = buf ? buf + N : NULL;
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int e = 0; e < E; e++) {
                if (!buf) continue;
                float *st = s->state ? s->state + ((long)b * E + e) * N : NULL;
                for (int n = 0; n < N; n++) {
                    A[n] = -expf(s->A_log[(long)e * N + n]);
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
                    float acc = 0;
                    for (int n = 0; n < N; n++) {
                        h[n] = expf(d * A[n]) * h[n] + dx * Bp[n];
                        acc += Cp[n] * h[n];
                    }
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
        /* A (N), dh (N), dA (N), h (ch+1, N), a = exp(ΔA) (ch, N) */
        float *buf = malloc((size_t)N * (3 + 2 * (size_t)ch + 1) * sizeof(float));
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        }
        float *A = buf, *dh = buf + N, *dA = buf + 2 * N, *hb = buf + 3 * N, *ab = hb + (size_t)(ch + 1) * N;
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            if (!buf) continue;
            float *pA = part + b * per, *pD = pA + nA, *pdt = pD + nD, *pB = pdt + ndt, *pC = pB + nB;
            float *dBbase = s->b_tok ? g->dB : pB, *dCbase = s->c_tok ? g->dC : pC;
            float *ddtbase = s->dt_tok ? g->ddt : pdt;
            for (int e = 0; e < E; e++) {
                for (int n = 0; n < N; n++) {
                    A[n] = -expf(s->A_log[(long)e * N + n]);
                    dh[n] = 0;
                    dA[n] = 0;
                }
                float De = s->D ? s->D[e] : 0.0f;
                double dDe = 0;
                for (int c = nch - 1; c >= 0; c--) {
                    int t0 = c * ch, t1 = t0 + ch < T ? t0 + ch : T;
                    /* recompute h_{t0-1} .. h_{t1-1} and the decays of the chunk */
                    memcpy(hb, s->hsave + (((long)b * nch + c) * E + e) * N, (size_t)N * sizeof(float));
                    for (int t = t0; t < t1; t++) {
                        long r = (long)b * T + t;
                        float d = scan_delta(s, r, e, NULL), dx = d * s->x[r * E + e];
                        const float *Bp = s->Bm + r * s->b_tok + (long)e * s->b_chan;
                        const float *hp = hb + (size_t)(t - t0) * N;
                        float *hn = hb + (size_t)(t - t0 + 1) * N, *an = ab + (size_t)(t - t0) * N;
                        for (int n = 0; n < N; n++) {
                            an[n] = expf(d * A[n]);
                            hn[n] = an[n] * hp[n] + dx * Bp[n];
                        }
                    }
                    for (int t = t1 - 1; t >= t0; t--) {
                        long r = (long)b * T + t;
                        float slope, d = scan_delta(s, r, e, &slope), xv = s->x[r * E + e];
                        float dy = g->dy[r * g->dy_ld + e];
                        const float *Bp = s->Bm + r * s->b_tok + (long)e * s->b_chan;
                        const float *Cp = s->Cm + r * s->c_tok + (long)e * s->c_chan;
                        float *dBp = dBbase + r * s->b_tok + (long)e * s->b_chan;
                        float *dCp = dCbase + r * s->c_tok + (long)e * s->c_chan;
                        const float *hp = hb + (size_t)(t - t0) * N, *hc = hp + N, *an = ab + (size_t)(t - t0) * N;
                        float dxv = dy * De, dd = 0;
                        dDe += (double)dy * xv;
                        for (int n = 0; n < N; n++) {
                            dCp[n] += dy * hc[n];
                            float gh = dh[n] + dy * Cp[n];          /* dL/dh_t */
                            float ahp = an[n] * hp[n];
                            dd += gh * (A[n] * ahp + Bp[n] * xv);
                            dA[n] += gh * d * ahp;
                            dBp[n] += gh * d * xv;
                            dxv += gh * d * Bp[n];
                            dh[n] = gh * an[n];                     /* dL/dh_{t-1} through h_t */
                        }
                        g->dx[r * E + e] = dxv;
                        ddtbase[r * s->dt_tok + e] += dd * slope;
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
