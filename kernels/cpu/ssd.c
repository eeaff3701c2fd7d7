/* cpu backend: the Mamba-2 kernels: the SSD (state space duality) chunked scan, forward and backward,
 * its one-token recurrence, the causal depthwise conv1d in front of it and the gated RMSNorm after it.
 *
 * Letters: Bn batch, T tokens, H heads, P head dim, N state size, Q chunk length (the last chunk of a
 * sequence may be shorter), L the length of the chunk at hand. One group: B and C (N per token) are
 * shared by all heads.
 *
 * The model, per head h with A_h = -exp(A_log_h):
 *     Δ_t = softplus(dt_t + dt_bias_h),  a_t = exp(Δ_t A_h),
 *     h_t = a_t h_{t-1} + Δ_t x_t B_tᵀ   (P, N),     y_t = h_t C_t + D_h x_t.
 * The chunked form: with s_i = Σ_{τ<=i} Δ_τ A (cumulative log-decay inside a chunk) and h0 the state
 * entering the chunk,
 *     Y = (G ∘ Dec) X + diag(e^s) C h0ᵀ + D X,   G = C Bᵀ, Dec_ij = e^{s_i - s_j} Δ_j for j <= i else 0,
 *     h1 = e^{s_L} h0 + Xᵀ diag(w) B,            w_j = e^{s_L - s_j} Δ_j.
 * The quadratic (intra-chunk) part and the state products are GEMMs; states pass from chunk to chunk.
 * Work is parallel over (batch, head); every sum has a fixed order, so results are deterministic. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "kernels/cpu/cpu.h"

static inline float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }
/* torch.nn.functional.softplus with its default threshold of 20 */
static inline float softplusf_(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* ---- SSD chunked scan ----------------------------------------------------------------------- */

/* Per-thread scratch of the chunked scan. */
typedef struct ssd_work {
    float  *G;       /* (Q, Q) C Bᵀ */
    float  *Dec;     /* (Q, Q) e^{s_i - s_j} Δ_j, lower triangle */
    float  *M;       /* (Q, Q) G ∘ Dec, then (backward) dM */
    float  *dM;      /* (Q, Q) backward only */
    float  *t1, *t2; /* (Q, max(P, N)) */
    float  *t3, *t4; /* (Q, max(P, N)) backward only */
    float  *h;       /* (P, N) running state, or its gradient in backward */
    double *s;       /* (Q) cumulative log-decay */
    double *ds;      /* (Q) */
    double *ddelta;  /* (Q) */
    float  *delta;   /* (Q) */
    float  *e;       /* (Q) e^{s_i} */
    float  *w;       /* (Q) e^{s_L - s_j} Δ_j */
    float  *dw;      /* (Q) */
    void   *block;
} ssd_work;

static int ssd_work_new(ssd_work *k, int Q, int P, int N)
{
    size_t q2 = (size_t)Q * Q, qm = (size_t)Q * (P > N ? P : N);
    size_t floats = 4 * q2 + 4 * qm + (size_t)P * N + 4 * (size_t)Q;
    size_t bytes = floats * sizeof(float) + 3 * (size_t)Q * sizeof(double) + 64;
    k->block = malloc(bytes);
    if (!k->block) return -1;
    double *d = k->block;
    k->s = d;
    k->ds = d + Q;
    k->ddelta = d + 2 * Q;
    float *f = (float *)(d + 3 * Q);
    k->G = f; f += q2;
    k->Dec = f; f += q2;
    k->M = f; f += q2;
    k->dM = f; f += q2;
    k->t1 = f; f += qm;
    k->t2 = f; f += qm;
    k->t3 = f; f += qm;
    k->t4 = f; f += qm;
    k->h = f; f += (size_t)P * N;
    k->delta = f; f += Q;
    k->e = f; f += Q;
    k->w = f; f += Q;
    k->dw = f;
    return 0;
}

/* Δ, s, e^s, w, and the decay matrix Dec of one chunk of L tokens; dt at row stride ldt. */
static void ssd_chunk_decay(ssd_work *k, const float *dt, int ldt, float bias, float A, int L, int Q)
{
    double cum = 0;
    for (int i = 0; i < L; i++) {
        k->delta[i] = softplusf_(dt[(size_t)i * ldt] + bias);
        cum += (double)k->delta[i] * A;
        k->s[i] = cum;
        k->e[i] = (float)exp(cum);
    }
    for (int j = 0; j < L; j++) k->w[j] = (float)exp(cum - k->s[j]) * k->delta[j];
    for (int i = 0; i < L; i++) {
        float *row = k->Dec + (size_t)i * Q;
        for (int j = 0; j <= i; j++) row[j] = (float)exp(k->s[i] - k->s[j]) * k->delta[j];
        for (int j = i + 1; j < L; j++) row[j] = 0.0f;
    }
}

/* G = C Bᵀ and M = G ∘ Dec for one chunk. */
static void ssd_chunk_mix(ssd_work *k, const float *Cc, const float *Bc, int ldbc, int L, int N, int Q)
{
    cpu_gemm(0, 1, L, L, N, 1.0f, Cc, ldbc, Bc, ldbc, 0.0f, k->G, Q);
    for (int i = 0; i < L; i++)
        for (int j = 0; j < L; j++) k->M[(size_t)i * Q + j] = k->G[(size_t)i * Q + j] * k->Dec[(size_t)i * Q + j];
}

int cpu_ssd_forward(float *y, float *states, const float *x, int ldx, const float *dt, int ldt,
                    const float *Bm, const float *Cm, int ldbc, const float *dt_bias,
                    const float *A_log, const float *D, int Bn, int T, int H, int P, int N, int Q)
{
    int nch = (T + Q - 1) / Q, ldy = H * P, failed = 0;
    int nthreads = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel if (Bn * H > 1 && (long)Bn * T * H * P * N > (1L << 16))
    {
        ssd_work k;
        int ok = ssd_work_new(&k, Q, P, N) == 0;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int bh = 0; bh < Bn * H; bh++) {
            if (!ok) continue;
            int b = bh / H, h = bh % H;
            const float *xb = x + (size_t)b * T * ldx + (size_t)h * P;
            const float *dtb = dt + (size_t)b * T * ldt + h;
            const float *Bb = Bm + (size_t)b * T * ldbc, *Cb = Cm + (size_t)b * T * ldbc;
            float *yb = y + (size_t)b * T * ldy + (size_t)h * P;
            float *st = states + (size_t)bh * nch * P * N;
            float A = -expf(A_log[h]), Dh = D[h];
            memset(k.h, 0, (size_t)P * N * sizeof(float));
            for (int c = 0; c < nch; c++) {
                int t0 = c * Q, L = T - t0 < Q ? T - t0 : Q;
                const float *X = xb + (size_t)t0 * ldx, *Bc = Bb + (size_t)t0 * ldbc, *Cc = Cb + (size_t)t0 * ldbc;
                float *Y = yb + (size_t)t0 * ldy;
                memcpy(st + (size_t)c * P * N, k.h, (size_t)P * N * sizeof(float));
                ssd_chunk_decay(&k, dtb + (size_t)t0 * ldt, ldt, dt_bias[h], A, L, Q);
                ssd_chunk_mix(&k, Cc, Bc, ldbc, L, N, Q);
                /* intra-chunk: Y = M X */
                cpu_gemm(0, 0, L, P, L, 1.0f, k.M, Q, X, ldx, 0.0f, Y, ldy);
                /* from the state entering the chunk: Y += diag(e) C h0ᵀ; and the skip D X */
                if (c > 0) cpu_gemm(0, 1, L, P, N, 1.0f, Cc, ldbc, k.h, N, 0.0f, k.t1, P);
                for (int i = 0; i < L; i++) {
                    float *yi = Y + (size_t)i * ldy;
                    const float *xi = X + (size_t)i * ldx, *zi = k.t1 + (size_t)i * P;
                    if (c > 0)
                        for (int p = 0; p < P; p++) yi[p] += k.e[i] * zi[p] + Dh * xi[p];
                    else
                        for (int p = 0; p < P; p++) yi[p] += Dh * xi[p];
                }
                if (c == nch - 1) break;
                /* state leaving the chunk: h1 = e^{s_L} h0 + Xᵀ diag(w) B */
                for (int j = 0; j < L; j++)
                    for (int n = 0; n < N; n++) k.t2[(size_t)j * N + n] = k.w[j] * Bc[(size_t)j * ldbc + n];
                cblas_sscal(P * N, k.e[L - 1], k.h, 1);
                cpu_gemm(1, 0, P, N, L, 1.0f, X, ldx, k.t2, N, 1.0f, k.h, N);
            }
        }
        if (ok) free(k.block);
    }
    openblas_set_num_threads(nthreads);
    if (failed) return pf_error("ssd: out of memory for a chunk of %d tokens", Q);
    return 0;
}

int cpu_ssd_backward(float *dx, float *ddt, float *dB, float *dC, float *dhead, const float *dy,
                     const float *states, const float *x, int ldx, const float *dt, int ldt,
                     const float *Bm, const float *Cm, int ldbc, const float *dt_bias,
                     const float *A_log, const float *D, int Bn, int T, int H, int P, int N, int Q)
{
    int nch = (T + Q - 1) / Q, ldy = H * P, failed = 0;
    /* per-head gradients of B and C, summed over heads afterwards in a fixed order */
    size_t per_head = (size_t)T * N;
    float *dBh = malloc(2 * (size_t)Bn * H * per_head * sizeof(float));
    if (!dBh) return pf_error("ssd: out of memory for the backward of %d x %d tokens", Bn, T);
    float *dCh = dBh + (size_t)Bn * H * per_head;
    int nthreads = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel if (Bn * H > 1 && (long)Bn * T * H * P * N > (1L << 16))
    {
        ssd_work k;
        int ok = ssd_work_new(&k, Q, P, N) == 0;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int bh = 0; bh < Bn * H; bh++) {
            if (!ok) continue;
            int b = bh / H, h = bh % H;
            const float *xb = x + (size_t)b * T * ldx + (size_t)h * P;
            const float *dtb = dt + (size_t)b * T * ldt + h;
            const float *Bb = Bm + (size_t)b * T * ldbc, *Cb = Cm + (size_t)b * T * ldbc;
            const float *dyb = dy + (size_t)b * T * ldy + (size_t)h * P;
            const float *st = states + (size_t)bh * nch * P * N;
            float *dxb = dx + (size_t)b * T * ldx + (size_t)h * P;
            float *ddtb = ddt + (size_t)b * T * ldt + h;
            float *dBb = dBh + (size_t)bh * per_head, *dCb = dCh + (size_t)bh * per_head;
            float A = -expf(A_log[h]), Dh = D[h], bias = dt_bias[h];
            double dA = 0, dD = 0, dbias = 0;
            float *dh = k.h; /* gradient of the state leaving the chunk at hand */
            memset(dh, 0, (size_t)P * N * sizeof(float));
            for (int c = nch - 1; c >= 0; c--) {
                int t0 = c * Q, L = T - t0 < Q ? T - t0 : Q;
                const float *X = xb + (size_t)t0 * ldx, *Bc = Bb + (size_t)t0 * ldbc, *Cc = Cb + (size_t)t0 * ldbc;
                const float *dY = dyb + (size_t)t0 * ldy, *h0 = st + (size_t)c * P * N;
                float *dX = dxb + (size_t)t0 * ldx, *dBc = dBb + (size_t)t0 * N, *dCc = dCb + (size_t)t0 * N;
                int last = c == nch - 1;   /* no state leaves the last chunk: dh is 0 */
                ssd_chunk_decay(&k, dtb + (size_t)t0 * ldt, ldt, bias, A, L, Q);
                ssd_chunk_mix(&k, Cc, Bc, ldbc, L, N, Q);
                for (int i = 0; i < L; i++) k.ds[i] = k.ddelta[i] = 0;
                /* dX = Mᵀ dY (+ D dY + diag(w) B dhᵀ below) */
                cpu_gemm(1, 0, L, P, L, 1.0f, k.M, Q, dY, ldy, 0.0f, dX, ldx);
                /* dM = dY Xᵀ */
                cpu_gemm(0, 1, L, L, P, 1.0f, dY, ldy, X, ldx, 0.0f, k.dM, Q);
                /* through M = G ∘ Dec: ds, dΔ, and dG (into dM, lower triangle) */
                for (int i = 0; i < L; i++) {
                    float *dMi = k.dM + (size_t)i * Q;
                    const float *Gi = k.G + (size_t)i * Q, *Di = k.Dec + (size_t)i * Q;
                    double dsi = 0;
                    for (int j = 0; j <= i; j++) {
                        double q = (double)dMi[j] * Gi[j] * Di[j];
                        dsi += q;
                        k.ds[j] -= q;
                        /* Dec_ij / Δ_j = e^{s_i - s_j}: the factor of Δ_j alone */
                        k.ddelta[j] += (double)dMi[j] * Gi[j] * exp(k.s[i] - k.s[j]);
                        dMi[j] *= Di[j];
                    }
                    k.ds[i] += dsi;
                    for (int j = i + 1; j < L; j++) dMi[j] = 0.0f;
                }
                /* dC = dG B + diag(e) dY h0 ; dB = dGᵀ C + diag(w) X dh */
                cpu_gemm(0, 0, L, N, L, 1.0f, k.dM, Q, Bc, ldbc, 0.0f, dCc, N);
                cpu_gemm(1, 0, L, N, L, 1.0f, k.dM, Q, Cc, ldbc, 0.0f, dBc, N);
                /* skip: dD, dX += D dY */
                for (int i = 0; i < L; i++) {
                    const float *dyi = dY + (size_t)i * ldy, *xi = X + (size_t)i * ldx;
                    float *dxi = dX + (size_t)i * ldx;
                    double acc = 0;
                    for (int p = 0; p < P; p++) {
                        acc += (double)dyi[p] * xi[p];
                        dxi[p] += Dh * dyi[p];
                    }
                    dD += acc;
                }
                float *eY = k.t1;   /* (L, P) diag(e) dY */
                if (c > 0) {
                    /* from the state entering the chunk: Y += diag(e) C h0ᵀ */
                    float *Z = k.t2;   /* (L, P) C h0ᵀ */
                    cpu_gemm(0, 1, L, P, N, 1.0f, Cc, ldbc, h0, N, 0.0f, Z, P);
                    for (int i = 0; i < L; i++) {
                        const float *dyi = dY + (size_t)i * ldy, *zi = Z + (size_t)i * P;
                        float *ey = eY + (size_t)i * P;
                        double acc = 0;
                        for (int p = 0; p < P; p++) {
                            acc += (double)dyi[p] * zi[p];
                            ey[p] = k.e[i] * dyi[p];
                        }
                        k.ds[i] += k.e[i] * acc;
                    }
                    cpu_gemm(0, 0, L, N, P, 1.0f, eY, P, h0, N, 1.0f, dCc, N);
                }
                if (!last) {
                    /* h1 = e^{s_L} h0 + Xᵀ diag(w) B */
                    float *U = k.t3, *wX = k.t4;   /* (L, P): B dhᵀ, diag(w) X */
                    cpu_gemm(0, 1, L, P, N, 1.0f, Bc, ldbc, dh, N, 0.0f, U, P);
                    for (int j = 0; j < L; j++) {
                        const float *uj = U + (size_t)j * P, *xj = X + (size_t)j * ldx;
                        float *dxj = dX + (size_t)j * ldx, *wxj = wX + (size_t)j * P;
                        double acc = 0;
                        for (int p = 0; p < P; p++) {
                            acc += (double)xj[p] * uj[p];
                            dxj[p] += k.w[j] * uj[p];
                            wxj[p] = k.w[j] * xj[p];
                        }
                        double dwj = acc * k.w[j];     /* dw_j w_j */
                        k.ds[L - 1] += dwj;
                        k.ds[j] -= dwj;
                        k.ddelta[j] += acc * exp(k.s[L - 1] - k.s[j]);
                    }
                    cpu_gemm(0, 0, L, N, P, 1.0f, wX, P, dh, N, 1.0f, dBc, N);
                    if (c > 0) k.ds[L - 1] += (double)k.e[L - 1] * cblas_sdot(P * N, dh, 1, h0, 1);
                }
                /* the gradient of the state entering this chunk: dh0 = e^{s_L} dh + eYᵀ C */
                if (c > 0) {
                    if (last) memset(dh, 0, (size_t)P * N * sizeof(float));
                    else cblas_sscal(P * N, k.e[L - 1], dh, 1);
                    cpu_gemm(1, 0, P, N, L, 1.0f, eY, P, Cc, ldbc, 1.0f, dh, N);
                }
                /* s_i = A Σ_{τ<=i} Δ_τ, then Δ = softplus(dt + bias) */
                double r = 0;
                for (int i = L - 1; i >= 0; i--) {
                    r += k.ds[i];
                    k.ddelta[i] += A * r;
                    dA += k.delta[i] * r;
                }
                for (int i = 0; i < L; i++) {
                    float g = (float)k.ddelta[i] * sigmoidf_(dtb[(size_t)(t0 + i) * ldt] + bias);
                    ddtb[(size_t)(t0 + i) * ldt] = g;
                    dbias += g;
                }
            }
            dhead[(size_t)b * 3 * H + h] = (float)dbias;
            dhead[(size_t)b * 3 * H + H + h] = (float)(dA * A);   /* A = -exp(A_log) */
            dhead[(size_t)b * 3 * H + 2 * H + h] = (float)dD;
        }
        if (ok) free(k.block);
    }
    openblas_set_num_threads(nthreads);
    if (!failed) {
        /* dB, dC (token rows at stride ldbc) = Σ over heads, in head order */
#pragma omp parallel for schedule(static) if ((long)Bn * T * H * N > PF_CPU_PAR_MIN)
        for (int r = 0; r < Bn * T; r++) {
            int b = r / T, t = r % T;
            float *db = dB + (size_t)r * ldbc, *dc = dC + (size_t)r * ldbc;
            for (int n = 0; n < N; n++) db[n] = dc[n] = 0.0f;
            for (int h = 0; h < H; h++) {
                const float *sb = dBh + ((size_t)(b * H + h) * T + t) * N;
                const float *sc = dCh + ((size_t)(b * H + h) * T + t) * N;
                for (int n = 0; n < N; n++) {
                    db[n] += sb[n];
                    dc[n] += sc[n];
                }
            }
        }
    }
    free(dBh);
    if (failed) return pf_error("ssd: out of memory for a chunk of %d tokens", Q);
    return 0;
}

void cpu_ssd_step(float *y, float *state, float *delta, float *decay, const float *x, const float *dt,
                  const float *Bv, const float *Cv, const float *dt_bias, const float *A_log,
                  const float *D, int H, int P, int N)
{
#pragma omp parallel for schedule(static) if ((long)H * P * N > PF_CPU_PAR_MIN)
    for (int h = 0; h < H; h++) {
        float d = softplusf_(dt[h] + dt_bias[h]);
        float a = expf(d * -expf(A_log[h]));
        delta[h] = d;
        decay[h] = a;
        for (int p = 0; p < P; p++) {
            float *s = state + ((size_t)h * P + p) * N;
            float dx = d * x[h * P + p], acc = 0;
            for (int n = 0; n < N; n++) {
                s[n] = a * s[n] + dx * Bv[n];
                acc += s[n] * Cv[n];
            }
            y[h * P + p] = acc + D[h] * x[h * P + p];
        }
    }
}

/* Parameter gradients summed over rows are computed per block of COL_BLOCK columns, one thread each. */
#define COL_BLOCK 64

/* ---- causal depthwise conv1d ---------------------------------------------------------------- */

void cpu_rmsnorm_gated_forward(float *out, float *rstd, const float *y, const float *z, int ldz,
                               const float *w, int rows, int E, float eps)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * E > PF_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *yr = y + (size_t)r * E, *zr = z + (size_t)r * ldz;
        float *o = out + (size_t)r * E;
        double ss = 0;
        for (int c = 0; c < E; c++) {
            float g = yr[c] * zr[c] * sigmoidf_(zr[c]);
            o[c] = g;
            ss += (double)g * g;
        }
        float s = (float)(1.0 / sqrt(ss / E + eps));
        rstd[r] = s;
        for (int c = 0; c < E; c++) o[c] *= s * w[c];
    }
}

void cpu_rmsnorm_gated_backward(float *dy, float *dz, int ldz, float *dw, const float *dout,
                                const float *y, const float *z, const float *w, const float *rstd,
                                int rows, int E)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * E > PF_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *yr = y + (size_t)r * E, *zr = z + (size_t)r * ldz, *d = dout + (size_t)r * E;
        float *dyr = dy + (size_t)r * E, *dzr = dz + (size_t)r * ldz;
        float s = rstd[r];
        double dot = 0;
        for (int c = 0; c < E; c++) dot += (double)d[c] * w[c] * yr[c] * zr[c] * sigmoidf_(zr[c]);
        float kk = (float)(dot / E) * s * s * s;
        for (int c = 0; c < E; c++) {
            float sg = sigmoidf_(zr[c]), silu = zr[c] * sg;
            float g = yr[c] * silu;
            float dg = d[c] * w[c] * s - kk * g;
            dyr[c] = dg * silu;
            dzr[c] = dg * yr[c] * sg * (1.0f + zr[c] * (1.0f - sg));
        }
    }
    int nblk = (E + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if ((size_t)rows * E > PF_CPU_PAR_MIN)
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * COL_BLOCK, nc = E - c0 < COL_BLOCK ? E - c0 : COL_BLOCK;
        double gw[COL_BLOCK] = {0};
        for (int r = 0; r < rows; r++) {
            const float *zr = z + (size_t)r * ldz + c0, *yr = y + (size_t)r * E + c0;
            const float *d = dout + (size_t)r * E + c0;
            for (int c = 0; c < nc; c++) gw[c] += (double)d[c] * yr[c] * zr[c] * sigmoidf_(zr[c]) * rstd[r];
        }
        for (int c = 0; c < nc; c++) dw[c0 + c] += (float)gw[c];
    }
}
