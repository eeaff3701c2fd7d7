/* cpu backend: RetNet retention (Sun et al. 2023) — the split of the projections into rotated
 * per-head q, k and v, the chunkwise form (chunk >= T: the parallel form), the recurrent form, and
 * the group norm with the swish gate. Shapes and semantics are in kernels/kernels.h.
 *
 * Letters: B batch, T tokens, H heads, dk key dim and dv value dim per head, C = H*dk, V = H*dv,
 * L tokens in a chunk. Per (batch, head) the work is independent: the loops run in parallel over
 * the B*H pairs, each doing its products through single-threaded OpenBLAS calls, so results do not
 * depend on the schedule. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu.h"

/* dk/2 rotation pairs at most (the layer checks dk <= 2 * ROT_MAX_PAIRS) */
#define ROT_MAX_PAIRS 256

/* ---- rotation ------------------------------------------------------------------------------- */

/* cos and sin of the angles of every pair at position pos: theta_i = 10000^(-i/(P-1)) as the
 * torchscale RetNet (torch.linspace(0, 1, P)); one pair gets theta 1. */
static void rot_table(double *cs, double *sn, int P, double pos)
{
    for (int i = 0; i < P; i++) {
        double theta = P > 1 ? pow(10000.0, -(double)i / (P - 1)) : 1.0;
        cs[i] = cos(pos * theta);
        sn[i] = sin(pos * theta);
    }
}

/* y = rotate(x) * scale; inverse: by minus the angle (the transpose, for backward) */
static void rotate(float *y, const float *x, const double *cs, const double *sn, int P, float scale,
                   int inverse)
{
    for (int i = 0; i < P; i++) {
        double c = cs[i], s = inverse ? -sn[i] : sn[i];
        double a = x[2 * i], b = x[2 * i + 1];
        y[2 * i] = (float)((a * c - b * s) * scale);
        y[2 * i + 1] = (float)((b * c + a * s) * scale);
    }
}

void cpu_retention_split(float *qr, float *kr, float *vh, const float *qkvg, int B, int T, int H,
                         int dk, int dv, int pos0)
{
    int C = H * dk, V = H * dv, N = 2 * C + 2 * V, P = dk / 2;
    float ks = 1.0f / sqrtf((float)dk);
#pragma omp parallel for schedule(static) if ((size_t)B * T * N > PF_CPU_PAR_MIN)
    for (int r = 0; r < B * T; r++) {
        int b = r / T, t = r % T;
        double cs[ROT_MAX_PAIRS], sn[ROT_MAX_PAIRS];
        rot_table(cs, sn, P, (double)pos0 + t);
        const float *row = qkvg + (size_t)r * N;
        for (int h = 0; h < H; h++) {
            size_t bh = (size_t)b * H + h;
            rotate(qr + (bh * T + t) * dk, row + h * dk, cs, sn, P, 1.0f, 0);
            rotate(kr + (bh * T + t) * dk, row + C + h * dk, cs, sn, P, ks, 0);
            memcpy(vh + (bh * T + t) * dv, row + 2 * C + h * dv, (size_t)dv * sizeof(float));
        }
    }
}

void cpu_retention_split_backward(float *dqkvg, const float *dqr, const float *dkr,
                                  const float *dvh, int B, int T, int H, int dk, int dv, int pos0)
{
    int C = H * dk, V = H * dv, N = 2 * C + 2 * V, P = dk / 2;
    float ks = 1.0f / sqrtf((float)dk);
#pragma omp parallel for schedule(static) if ((size_t)B * T * N > PF_CPU_PAR_MIN)
    for (int r = 0; r < B * T; r++) {
        int b = r / T, t = r % T;
        double cs[ROT_MAX_PAIRS], sn[ROT_MAX_PAIRS];
        rot_table(cs, sn, P, (double)pos0 + t);
        float *row = dqkvg + (size_t)r * N;
        for (int h = 0; h < H; h++) {
            size_t bh = (size_t)b * H + h;
            rotate(row + h * dk, dqr + (bh * T + t) * dk, cs, sn, P, 1.0f, 1);
            rotate(row + C + h * dk, dkr + (bh * T + t) * dk, cs, sn, P, ks, 1);
            memcpy(row + 2 * C + h * dv, dvh + (bh * T + t) * dv, (size_t)dv * sizeof(float));
        }
    }
}

/* ---- chunkwise (and parallel) form ---------------------------------------------------------- */

/* Per (batch, head) scratch, carved out of work (see kernels.h for the size). */
typedef struct chunk_work {
    float *A;    /* (L, L) Q K^T .* D */
    float *dA;   /* (L, L) */
    float *qs;   /* (L, dk) */
    float *vs;   /* (L, dv) */
    float *gp;   /* (L + 1) gamma^j */
    float *R;    /* (dk, dv) the running state (forward) or its gradient (backward) */
} chunk_work;

static chunk_work carve(float *work, size_t bh, int L, int dk, int dv)
{
    size_t per = 2 * (size_t)L * L + (size_t)L * (dk + dv) + (size_t)(L + 1) + 2 * (size_t)dk * dv;
    float *w = work + bh * per;
    chunk_work c;
    c.A = w;
    c.dA = c.A + (size_t)L * L;
    c.qs = c.dA + (size_t)L * L;
    c.vs = c.qs + (size_t)L * dk;
    c.gp = c.vs + (size_t)L * dv;
    c.R = c.gp + L + 1;
    return c;
}

static void pow_table(float *gp, double gamma, int n)
{
    for (int j = 0; j <= n; j++) gp[j] = (float)pow(gamma, j);
}

/* A (L, L) = (Q K^T) .* D with D[n][m] = gamma^(n-m) for m <= n, else 0 */
static void decay_mask(float *A, const float *gp, int L)
{
    for (int n = 0; n < L; n++)
        for (int m = 0; m < L; m++) A[(size_t)n * L + m] = m <= n ? A[(size_t)n * L + m] * gp[n - m] : 0.0f;
}

/* one (batch, head) pair bh of the chunkwise forward */
static void chunkwise_forward_one(int bh, float *o, float *states, float *state, const float *qr,
                                  const float *kr, const float *vh, const float *gamma, int T, int H,
                                  int dk, int dv, int chunk, float *work)
{
    int Lc = chunk < T ? chunk : T, nc = (T + Lc - 1) / Lc;
    chunk_work w = carve(work, (size_t)bh, Lc, dk, dv);
    const float *q = qr + (size_t)bh * T * dk, *k = kr + (size_t)bh * T * dk;
    const float *v = vh + (size_t)bh * T * dv;
    float *out = o + (size_t)bh * T * dv;
    float *R = state ? state + (size_t)bh * dk * dv : w.R;
    pow_table(w.gp, gamma[bh % H], Lc);
    memset(R, 0, (size_t)dk * dv * sizeof(float));
    for (int c = 0; c < nc; c++) {
        int t0 = c * Lc, L = T - t0 < Lc ? T - t0 : Lc;
        const float *qc = q + (size_t)t0 * dk, *kc = k + (size_t)t0 * dk, *vc = v + (size_t)t0 * dv;
        float *oc = out + (size_t)t0 * dv;
        if (states) memcpy(states + ((size_t)bh * nc + c) * dk * dv, R, (size_t)dk * dv * sizeof(float));
        /* inner: (Q K^T .* D) V */
        cpu_gemm(0, 1, L, L, dk, 1.0f, qc, dk, kc, dk, 0.0f, w.A, L);
        decay_mask(w.A, w.gp, L);
        cpu_gemm(0, 0, L, dv, L, 1.0f, w.A, L, vc, dv, 0.0f, oc, dv);
        /* cross: (Q R) .* xi, xi_n = gamma^(n+1) */
        if (c > 0) {
            for (int n = 0; n < L; n++)
                for (int i = 0; i < dk; i++) w.qs[(size_t)n * dk + i] = qc[(size_t)n * dk + i] * w.gp[n + 1];
            cpu_gemm(0, 0, L, dv, dk, 1.0f, w.qs, dk, R, dv, 1.0f, oc, dv);
        }
        /* R = gamma^L R + K^T (V .* zeta), zeta_m = gamma^(L-1-m) */
        if (c < nc - 1 || state) {
            for (size_t e = 0; e < (size_t)dk * dv; e++) R[e] *= w.gp[L];
            for (int m = 0; m < L; m++)
                for (int j = 0; j < dv; j++) w.vs[(size_t)m * dv + j] = vc[(size_t)m * dv + j] * w.gp[L - 1 - m];
            cpu_gemm(1, 0, dk, dv, L, 1.0f, kc, dk, w.vs, dv, 1.0f, R, dv);
        }
    }
}

/* one (batch, head) pair bh of the chunkwise backward */
static void chunkwise_backward_one(int bh, float *dqr, float *dkr, float *dvh, const float *do_,
                                   const float *states, const float *qr, const float *kr,
                                   const float *vh, const float *gamma, int T, int H, int dk, int dv,
                                   int chunk, float *work)
{
    int Lc = chunk < T ? chunk : T, nc = (T + Lc - 1) / Lc;
    chunk_work w = carve(work, (size_t)bh, Lc, dk, dv);
    size_t ok = (size_t)bh * T * dk, ov = (size_t)bh * T * dv;
    float *dR = w.R;     /* gradient of the state leaving the current chunk */
    pow_table(w.gp, gamma[bh % H], Lc);
    memset(dR, 0, (size_t)dk * dv * sizeof(float));
    for (int c = nc - 1; c >= 0; c--) {
        int t0 = c * Lc, L = T - t0 < Lc ? T - t0 : Lc;
        const float *qc = qr + ok + (size_t)t0 * dk, *kc = kr + ok + (size_t)t0 * dk;
        const float *vc = vh + ov + (size_t)t0 * dv, *doc = do_ + ov + (size_t)t0 * dv;
        float *dqc = dqr + ok + (size_t)t0 * dk, *dkc = dkr + ok + (size_t)t0 * dk;
        float *dvc = dvh + ov + (size_t)t0 * dv;
        const float *Rprev = states + ((size_t)bh * nc + c) * dk * dv;
        /* inner: A = Q K^T .* D; dV = A^T dO; dA = (dO V^T) .* D; dQ = dA K; dK = dA^T Q */
        cpu_gemm(0, 1, L, L, dk, 1.0f, qc, dk, kc, dk, 0.0f, w.A, L);
        decay_mask(w.A, w.gp, L);
        cpu_gemm(1, 0, L, dv, L, 1.0f, w.A, L, doc, dv, 0.0f, dvc, dv);
        cpu_gemm(0, 1, L, L, dv, 1.0f, doc, dv, vc, dv, 0.0f, w.dA, L);
        decay_mask(w.dA, w.gp, L);
        cpu_gemm(0, 0, L, dk, L, 1.0f, w.dA, L, kc, dk, 0.0f, dqc, dk);
        cpu_gemm(1, 0, L, dk, L, 1.0f, w.dA, L, qc, dk, 0.0f, dkc, dk);
        /* the state this chunk writes: R_c = gamma^L R_prev + K^T (V .* zeta) */
        if (c < nc - 1) {
            for (int m = 0; m < L; m++)
                for (int j = 0; j < dv; j++) w.vs[(size_t)m * dv + j] = vc[(size_t)m * dv + j] * w.gp[L - 1 - m];
            cpu_gemm(0, 1, L, dk, dv, 1.0f, w.vs, dv, dR, dv, 1.0f, dkc, dk);
            cpu_gemm(0, 0, L, dv, dk, 1.0f, kc, dk, dR, dv, 0.0f, w.vs, dv);
            for (int m = 0; m < L; m++)
                for (int j = 0; j < dv; j++) dvc[(size_t)m * dv + j] += w.gp[L - 1 - m] * w.vs[(size_t)m * dv + j];
        }
        /* the state this chunk reads: O += (Q R_prev) .* xi */
        if (c > 0) {
            cpu_gemm(0, 1, L, dk, dv, 1.0f, doc, dv, Rprev, dv, 0.0f, w.qs, dk);
            for (int n = 0; n < L; n++)
                for (int i = 0; i < dk; i++) dqc[(size_t)n * dk + i] += w.gp[n + 1] * w.qs[(size_t)n * dk + i];
            for (size_t e = 0; e < (size_t)dk * dv; e++) dR[e] *= w.gp[L];
            for (int n = 0; n < L; n++)
                for (int i = 0; i < dk; i++) w.qs[(size_t)n * dk + i] = qc[(size_t)n * dk + i] * w.gp[n + 1];
            cpu_gemm(1, 0, dk, dv, L, 1.0f, w.qs, dk, doc, dv, 1.0f, dR, dv);
        }
    }
}

/* The pairs run in parallel, each with single-threaded BLAS calls (a deterministic order). */
void cpu_retention_chunkwise_forward(float *o, float *states, float *state, const float *qr,
                                     const float *kr, const float *vh, const float *gamma, int B,
                                     int T, int H, int dk, int dv, int chunk, float *work)
{
    int nthreads = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel for schedule(static) if (B * H > 1)
    for (int bh = 0; bh < B * H; bh++)
        chunkwise_forward_one(bh, o, states, state, qr, kr, vh, gamma, T, H, dk, dv, chunk, work);
    openblas_set_num_threads(nthreads);
}

void cpu_retention_chunkwise_backward(float *dqr, float *dkr, float *dvh, const float *do_,
                                      const float *states, const float *qr, const float *kr,
                                      const float *vh, const float *gamma, int B, int T, int H,
                                      int dk, int dv, int chunk, float *work)
{
    int nthreads = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel for schedule(static) if (B * H > 1)
    for (int bh = 0; bh < B * H; bh++)
        chunkwise_backward_one(bh, dqr, dkr, dvh, do_, states, qr, kr, vh, gamma, T, H, dk, dv, chunk,
                               work);
    openblas_set_num_threads(nthreads);
}

/* ---- recurrent form ------------------------------------------------------------------------- */

void cpu_retention_recurrent_forward(float *o, float *state, const float *qr, const float *kr,
                                     const float *vh, const float *gamma, int B, int T, int H,
                                     int dk, int dv)
{
#pragma omp parallel for schedule(static) if ((size_t)B * H * T * dk * dv > PF_CPU_PAR_MIN)
    for (int bh = 0; bh < B * H; bh++) {
        float g = gamma[bh % H];
        float *S = state + (size_t)bh * dk * dv;
        for (int t = 0; t < T; t++) {
            const float *q = qr + ((size_t)bh * T + t) * dk, *k = kr + ((size_t)bh * T + t) * dk;
            const float *v = vh + ((size_t)bh * T + t) * dv;
            float *out = o + ((size_t)bh * T + t) * dv;
            for (int i = 0; i < dk; i++)
                for (int j = 0; j < dv; j++) S[(size_t)i * dv + j] = g * S[(size_t)i * dv + j] + k[i] * v[j];
            for (int j = 0; j < dv; j++) out[j] = 0.0f;
            for (int i = 0; i < dk; i++)
                for (int j = 0; j < dv; j++) out[j] += q[i] * S[(size_t)i * dv + j];
        }
    }
}

/* S_t = g S_{t-1} + k_t^T v_t, o_t = q_t S_t. With G_t = dL/dS_t = q_t^T do_t + g G_{t+1}:
 * dq_t = do_t S_t^T (a forward pass recomputing S), dk_t = v_t G_t^T, dv_t = k_t G_t (a backward
 * pass carrying G). O(dk*dv) memory per head. */
void cpu_retention_recurrent_backward(float *dqr, float *dkr, float *dvh, const float *do_,
                                      const float *qr, const float *kr, const float *vh,
                                      const float *gamma, int B, int T, int H, int dk, int dv,
                                      float *work)
{
#pragma omp parallel for schedule(static) if ((size_t)B * H * T * dk * dv > PF_CPU_PAR_MIN)
    for (int bh = 0; bh < B * H; bh++) {
        float g = gamma[bh % H];
        float *S = work + (size_t)bh * 2 * dk * dv, *G = S + (size_t)dk * dv;
        memset(S, 0, (size_t)dk * dv * sizeof(float));
        memset(G, 0, (size_t)dk * dv * sizeof(float));
        for (int t = 0; t < T; t++) {
            size_t rk = ((size_t)bh * T + t) * dk, rv = ((size_t)bh * T + t) * dv;
            const float *k = kr + rk, *v = vh + rv, *d = do_ + rv;
            float *dq = dqr + rk;
            for (int i = 0; i < dk; i++) {
                float acc = 0.0f;
                for (int j = 0; j < dv; j++) {
                    float s = g * S[(size_t)i * dv + j] + k[i] * v[j];
                    S[(size_t)i * dv + j] = s;
                    acc += d[j] * s;
                }
                dq[i] = acc;
            }
        }
        for (int t = T - 1; t >= 0; t--) {
            size_t rk = ((size_t)bh * T + t) * dk, rv = ((size_t)bh * T + t) * dv;
            const float *q = qr + rk, *k = kr + rk, *v = vh + rv, *d = do_ + rv;
            float *dk_ = dkr + rk, *dv_ = dvh + rv;
            for (int j = 0; j < dv; j++) dv_[j] = 0.0f;
            for (int i = 0; i < dk; i++) {
                float acc = 0.0f;
                for (int j = 0; j < dv; j++) {
                    float gg = g * G[(size_t)i * dv + j] + q[i] * d[j];
                    G[(size_t)i * dv + j] = gg;
                    acc += gg * v[j];
                    dv_[j] += k[i] * gg;
                }
                dk_[i] = acc;
            }
        }
    }
}

/* ---- group norm and swish gate -------------------------------------------------------------- */

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

void cpu_retention_norm_gate_forward(float *h, float *mean, float *rstd, const float *o,
                                     const float *g, int ldg, const float *w, const float *b,
                                     int B, int T, int H, int dv, float eps)
{
    int V = H * dv;
#pragma omp parallel for schedule(static) if ((size_t)B * T * V > PF_CPU_PAR_MIN)
    for (int r = 0; r < B * T; r++) {
        int bb = r / T, t = r % T;
        for (int hd = 0; hd < H; hd++) {
            const float *x = o + (((size_t)bb * H + hd) * T + t) * dv;
            double m = 0, var = 0;
            for (int j = 0; j < dv; j++) m += x[j];
            m /= dv;
            for (int j = 0; j < dv; j++) var += (x[j] - m) * (x[j] - m);
            var /= dv;
            float s = (float)(1.0 / sqrt(var + eps));
            mean[(size_t)r * H + hd] = (float)m;
            rstd[(size_t)r * H + hd] = s;
            for (int j = 0; j < dv; j++) {
                int c = hd * dv + j;
                float y = (x[j] - (float)m) * s * w[c] + b[c];
                float gv = g[(size_t)r * ldg + c];
                h[(size_t)r * V + c] = gv * sigmoidf(gv) * y;
            }
        }
    }
}

/* Two passes, both parallel and deterministic: per token (do, dg), then per column (dw, db). */
void cpu_retention_norm_gate_backward(float *do_, float *dg, float *dw, float *db,
                                      const float *dh, const float *o, const float *g, int ldg,
                                      const float *w, const float *b, const float *mean,
                                      const float *rstd, int B, int T, int H, int dv)
{
    int V = H * dv, rows = B * T;
#pragma omp parallel for schedule(static) if ((size_t)rows * V > PF_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        int bb = r / T, t = r % T;
        for (int hd = 0; hd < H; hd++) {
            size_t off = (((size_t)bb * H + hd) * T + t) * dv;
            const float *x = o + off;
            float *dx = do_ + off;
            float m = mean[(size_t)r * H + hd], s = rstd[(size_t)r * H + hd];
            double sum_g = 0, sum_gn = 0;
            for (int j = 0; j < dv; j++) {
                int c = hd * dv + j;
                float gv = g[(size_t)r * ldg + c], sg = sigmoidf(gv), d = dh[(size_t)r * V + c];
                float n = (x[j] - m) * s, y = n * w[c] + b[c];
                dg[(size_t)r * ldg + c] = d * y * sg * (1.0f + gv * (1.0f - sg));
                float dn = d * gv * sg * w[c];
                sum_g += dn;
                sum_gn += (double)dn * n;
            }
            float mg = (float)(sum_g / dv), mgn = (float)(sum_gn / dv);
            for (int j = 0; j < dv; j++) {
                int c = hd * dv + j;
                float gv = g[(size_t)r * ldg + c], d = dh[(size_t)r * V + c];
                float n = (x[j] - m) * s, dn = d * gv * sigmoidf(gv) * w[c];
                dx[j] = s * (dn - mg - n * mgn);
            }
        }
    }
#pragma omp parallel for schedule(static) if ((size_t)rows * V > PF_CPU_PAR_MIN)
    for (int c = 0; c < V; c++) {
        int hd = c / dv, j = c % dv;
        double gw = 0, gb = 0;
        for (int r = 0; r < rows; r++) {
            int bb = r / T, t = r % T;
            float x = o[(((size_t)bb * H + hd) * T + t) * dv + j];
            float n = (x - mean[(size_t)r * H + hd]) * rstd[(size_t)r * H + hd];
            float gv = g[(size_t)r * ldg + c], dy = dh[(size_t)r * V + c] * gv * sigmoidf(gv);
            gw += (double)dy * n;
            gb += dy;
        }
        dw[c] += (float)gw;
        db[c] += (float)gb;
    }
}
