/* cuda backend: the causal depthwise conv1d and the selective scan of the recurrent-state layers
 * (mamba, s4d), with the semantics of kernels/cpu/ssm.c (see pf_ssm_scan in kernels/kernels.h).
 * Letters: B sequences of T tokens (row r = b*T + t), E channels, N states per channel, K conv width.
 *
 * The scan: one group of G lanes (G = N rounded up to a power of two, at most 32) owns one channel
 * of one sequence; lane l holds states n = l, l + G, ... (S = ceil(N/G) of them, at most
 * SCAN_MAX_S) in registers and the group runs through time in order; C·h is a shuffle reduction
 * inside the group. Nothing of size (T, E, N) is ever stored: forward keeps h in registers and
 * writes it out only entering every `chunk` tokens (hsave). Backward walks the chunks in reverse:
 * it recomputes the chunk's h from hsave into shared memory (chunk x N per channel), then runs the
 * chunk backwards.
 *
 * Determinism: no atomics. Gradients of operands shared between channels or sequences are written
 * as partial sums in a fixed layout (per channel block and token for Mamba's per-token B and C; per
 * sequence and channel for A_log, D and time-invariant Δ, B, C) and summed in a fixed order by a
 * second kernel, so every run gives the same bits. */
#include <math.h>

#include "kernels/cuda/cuda.h"

enum { SCAN_MAX_S = 8 };                 /* N <= 32 * 8 = 256 (the option's limit) */

/* ==== causal depthwise conv1d ================================================================ */

__global__ void k_conv_fwd(float *out, const float *x, int ldx, const float *w, const float *bias,
                           const float *state, int B, int T, int E, int K)
{
    size_t n = (size_t)B * T * E;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int e = (int)(i % E);
        long r = (long)(i / E);
        int b = (int)(r / T), t = (int)(r % T);
        float o = bias ? bias[e] : 0.0f;
        for (int k = 0; k < K; k++) {
            int tt = t - (K - 1) + k;
            float v;
            if (tt >= 0) v = x[((long)b * T + tt) * ldx + e];
            else if (state) v = state[((long)b * (K - 1) + (K - 1 + tt)) * E + e];
            else continue;
            o += w[(long)e * K + k] * v;
        }
        out[i] = o;
    }
}

/* the window moves on, per (sequence, channel) in increasing j as on the cpu (reads before writes) */
__global__ void k_conv_state(float *state, const float *x, int ldx, int B, int T, int E, int K)
{
    size_t n = (size_t)B * E;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int b = (int)(i / E), e = (int)(i % E);
        for (int j = 0; j < K - 1; j++) {
            int p = T - (K - 1) + j;
            float v = p >= 0 ? x[((long)b * T + p) * ldx + e] : state[((long)b * (K - 1) + K - 1 + p) * E + e];
            state[((long)b * (K - 1) + j) * E + e] = v;
        }
    }
}

void cuda_conv1d_causal_forward(float *out, const float *x, int ldx, const float *w, const float *bias,
                                float *state, int B, int T, int E, int K)
{
    size_t n = (size_t)B * T * E;
    if (n) {
        k_conv_fwd<<<cuda_blocks(n, 256), 256>>>(out, x, ldx, w, bias, state, B, T, E, K);
        CUDA_LAUNCHED("k_conv_fwd");
    }
    if (!state || K < 2 || B * E == 0) return;
    k_conv_state<<<cuda_blocks((size_t)B * E, 256), 256>>>(state, x, ldx, B, T, E, K);
    CUDA_LAUNCHED("k_conv_state");
}

__global__ void k_conv_bwd_dx(float *dx, int lddx, const float *dout, const float *w, int B, int T, int E, int K)
{
    size_t n = (size_t)B * T * E;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int e = (int)(i % E);
        long r = (long)(i / E);
        int t = (int)(r % T);
        float d = 0;
        for (int k = 0; k < K; k++) {
            if (t + (K - 1) - k >= T) continue;
            d += w[(long)e * K + k] * dout[(r + (K - 1) - k) * E + e];
        }
        dx[r * lddx + e] = d;
    }
}

/* dw[e, k] (k < K) or dbias[e] (k = K): blockIdx.y = k, 32 channels x 8 row groups per block; each
 * thread sums its rows in order, then the 8 partials are added in order */
__global__ void k_conv_bwd_dw(float *dw, float *dbias, const float *dout, const float *x, int ldx, int B, int T,
                              int E, int K)
{
    __shared__ float part[8][33];
    int k = blockIdx.y, e = blockIdx.x * 32 + threadIdx.x, g = threadIdx.y;
    long rows = (long)B * T;
    float acc = 0;
    if (e < E)
        for (long r = g; r < rows; r += 8) {
            float go = dout[r * E + e];
            if (k == K) {
                acc += go;
                continue;
            }
            int t = (int)(r % T), tt = t - (K - 1) + k;
            if (tt >= 0) acc += go * x[(r - t + tt) * ldx + e];
        }
    part[g][threadIdx.x] = acc;
    __syncthreads();
    if (g == 0 && e < E) {
        float s = 0;
        for (int j = 0; j < 8; j++) s += part[j][threadIdx.x];
        if (k == K) dbias[e] += s;
        else dw[(long)e * K + k] += s;
    }
}

void cuda_conv1d_causal_backward(float *dx, int lddx, float *dw, float *dbias, const float *dout, const float *x,
                                 int ldx, const float *w, int B, int T, int E, int K)
{
    size_t n = (size_t)B * T * E;
    if (n == 0) return;
    k_conv_bwd_dx<<<cuda_blocks(n, 256), 256>>>(dx, lddx, dout, w, B, T, E, K);
    CUDA_LAUNCHED("k_conv_bwd_dx");
    dim3 grid((E + 31) / 32, dbias ? K + 1 : K), block(32, 8);
    k_conv_bwd_dw<<<grid, block>>>(dw, dbias, dout, x, ldx, B, T, E, K);
    CUDA_LAUNCHED("k_conv_bwd_dw");
}

/* ==== selective scan ========================================================================== */

/* the lane layout of a scan launch */
typedef struct scan_geom {
    int G, S;            /* lanes per channel, states per lane */
    int cpb, threads;    /* channels per block, threads per block = G * cpb */
    int nbe;             /* channel blocks per sequence */
    int ch, nch;         /* hsave chunk and chunks per sequence */
} scan_geom;

static scan_geom scan_geometry(const pf_ssm_scan *s, int max_threads)
{
    scan_geom g;
    g.G = 1;
    while (g.G < s->N && g.G < 32) g.G *= 2;
    g.S = (s->N + g.G - 1) / g.G;
    g.cpb = max_threads / g.G;
    if (g.cpb > s->E) g.cpb = s->E;
    if (g.cpb < 32 / g.G) g.cpb = 32 / g.G; /* whole warps: the shuffles name every lane */
    g.threads = g.G * g.cpb;
    g.nbe = (s->E + g.cpb - 1) / g.cpb;
    g.ch = s->chunk > 0 ? s->chunk : s->T;
    if (g.ch < 1) g.ch = 1;
    g.nch = (s->T + g.ch - 1) / g.ch;
    return g;
}

__device__ __forceinline__ float softplus_(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

/* Δ of (row r, channel e) and dΔ/d(dt) */
__device__ __forceinline__ float scan_delta(const pf_ssm_scan &s, long r, int e, float *slope)
{
    float v = s.dt[r * s.dt_tok + e];
    if (s.dt_softplus) {
        if (s.dt_bias) v += s.dt_bias[e];
        *slope = 1.0f / (1.0f + expf(-v));
        return softplus_(v);
    }
    float d = expf(v);
    *slope = d;
    return d;
}

/* sum over the G lanes of a group (every lane gets it) */
__device__ __forceinline__ float group_sum(float v, int G)
{
    for (int o = G / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o, G);
    return v;
}

__global__ void k_scan_fwd(pf_ssm_scan s, scan_geom g)
{
    const int tid = threadIdx.x, lane = tid % g.G, grp = tid / g.G;
    const int b = blockIdx.x / g.nbe, e = (blockIdx.x % g.nbe) * g.cpb + grp;
    const int N = s.N, E = s.E, T = s.T;
    const bool on = e < E;           /* groups past E still run the shuffles, idle */
    const int ec = on ? e : 0;
    float A[SCAN_MAX_S], h[SCAN_MAX_S];
    float *st = s.state ? s.state + ((long)b * E + ec) * N : NULL;
#pragma unroll
    for (int i = 0; i < SCAN_MAX_S; i++) {
        int n = lane + i * g.G;
        bool ok = on && i < g.S && n < N;
        A[i] = ok ? -expf(s.A_log[(long)ec * N + n]) : 0.0f;
        h[i] = ok && st ? st[n] : 0.0f;
    }
    const float De = s.D ? s.D[ec] : 0.0f;
    for (int t = 0; t < T; t++) {
        long r = (long)b * T + t;
        if (on && s.hsave && t % g.ch == 0) {
            float *hs = s.hsave + (((long)b * g.nch + t / g.ch) * E + e) * N;
#pragma unroll
            for (int i = 0; i < SCAN_MAX_S; i++) {
                int n = lane + i * g.G;
                if (i < g.S && n < N) hs[n] = h[i];
            }
        }
        float slope, d = on ? scan_delta(s, r, ec, &slope) : 0.0f;
        float xv = on ? s.x[r * E + ec] : 0.0f, dx = d * xv;
        const float *Bp = s.Bm + r * s.b_tok + (long)ec * s.b_chan;
        const float *Cp = s.Cm + r * s.c_tok + (long)ec * s.c_chan;
        float acc = 0;
#pragma unroll
        for (int i = 0; i < SCAN_MAX_S; i++) {
            int n = lane + i * g.G;
            if (on && i < g.S && n < N) {
                h[i] = expf(d * A[i]) * h[i] + dx * Bp[n];
                acc += Cp[n] * h[i];
            }
        }
        acc = group_sum(acc, g.G);
        if (on && lane == 0) s.y[r * s.y_ld + e] = acc + De * xv;
    }
    if (on && st) {
#pragma unroll
        for (int i = 0; i < SCAN_MAX_S; i++) {
            int n = lane + i * g.G;
            if (i < g.S && n < N) st[n] = h[i];
        }
    }
}

int cuda_ssm_scan_forward(const pf_ssm_scan *s)
{
    if (s->N > 32 * SCAN_MAX_S) return pf_error("ssm_scan_forward: N = %d is over the cuda kernel's %d", s->N, 32 * SCAN_MAX_S);
    if ((long)s->B * s->T * s->E == 0) return 0;
    scan_geom g = scan_geometry(s, 128);
    k_scan_fwd<<<s->B * g.nbe, g.threads>>>(*s, g);
    return CUDA_LAUNCHED_NOW("k_scan_fwd");
}

/* How the gradient of an operand (Δ, B or C) is gathered. */
enum {
    GRAD_DIRECT = 0,     /* one element per (token, channel): += in place */
    GRAD_TOKEN = 1,      /* per token, shared by the channels (Mamba's B, C): block partials per token */
    GRAD_FIXED = 2,      /* not per token (S4D): partials per (sequence, channel) */
};

/* what the backward kernel needs beside the scan */
typedef struct scan_bwd_args {
    pf_ssm_scan_grad g;
    int modeB, modeC, dt_fixed;
    float *tokB, *tokC;  /* (nbe, B*T, N) GRAD_TOKEN partials */
    float *fixB, *fixC;  /* (B, E, N) GRAD_FIXED partials */
    float *pA;           /* (B, E, N) dA_log partials */
    float *pD, *pdt;     /* (B, E) dD and fixed ddt partials */
} scan_bwd_args;

/* Shared memory per block: h entering each token of the chunk, and for GRAD_TOKEN operands each
 * channel's per-token contribution, all as [chunk][S][threads]. */
static size_t scan_bwd_smem(const scan_geom &g, int modeB, int modeC)
{
    int arrays = 1 + (modeB == GRAD_TOKEN) + (modeC == GRAD_TOKEN);
    return (size_t)arrays * g.ch * g.S * g.threads * sizeof(float);
}

__global__ void k_scan_bwd(pf_ssm_scan s, scan_bwd_args a, scan_geom g)
{
    extern __shared__ float sm[];
    const int tid = threadIdx.x, lane = tid % g.G, grp = tid / g.G, nt = g.threads;
    const int eb = blockIdx.x % g.nbe, b = blockIdx.x / g.nbe, e = eb * g.cpb + grp;
    const int N = s.N, E = s.E, T = s.T, S = g.S;
    const bool on = e < E;
    const int ec = on ? e : 0;
    float *hs = sm;                                          /* [ch][S][nt] */
    float *sB = sm + (size_t)g.ch * S * nt;                   /* GRAD_TOKEN contributions */
    float *sC = sB + (a.modeB == GRAD_TOKEN ? (size_t)g.ch * S * nt : 0);
    float A[SCAN_MAX_S], h[SCAN_MAX_S], dh[SCAN_MAX_S], dA[SCAN_MAX_S], fB[SCAN_MAX_S], fC[SCAN_MAX_S];
#pragma unroll
    for (int i = 0; i < SCAN_MAX_S; i++) {
        int n = lane + i * g.G;
        A[i] = on && i < S && n < N ? -expf(s.A_log[(long)ec * N + n]) : 0.0f;
        dh[i] = dA[i] = fB[i] = fC[i] = 0.0f;
    }
    const float De = s.D ? s.D[ec] : 0.0f;
    float dDe = 0, ddt_fixed = 0;
    for (int c = g.nch - 1; c >= 0; c--) {
        int t0 = c * g.ch, t1 = min(t0 + g.ch, T);
        /* recompute: hs[t - t0] = h_{t-1}; h ends as h_{t1-1} */
        const float *hsv = s.hsave + (((long)b * g.nch + c) * E + ec) * N;
#pragma unroll
        for (int i = 0; i < SCAN_MAX_S; i++) {
            int n = lane + i * g.G;
            h[i] = on && i < S && n < N ? hsv[n] : 0.0f;
        }
        for (int t = t0; t < t1; t++) {
            long r = (long)b * T + t;
            float slope, d = on ? scan_delta(s, r, ec, &slope) : 0.0f;
            float dx = on ? d * s.x[r * E + ec] : 0.0f;
            const float *Bp = s.Bm + r * s.b_tok + (long)ec * s.b_chan;
#pragma unroll
            for (int i = 0; i < SCAN_MAX_S; i++) {
                int n = lane + i * g.G;
                if (i < S) hs[((size_t)(t - t0) * S + i) * nt + tid] = h[i];
                if (on && i < S && n < N) h[i] = expf(d * A[i]) * h[i] + dx * Bp[n];
            }
        }
        for (int t = t1 - 1; t >= t0; t--) {
            long r = (long)b * T + t;
            float slope = 0, d = 0, xv = 0, dy = 0;
            if (on) {
                d = scan_delta(s, r, ec, &slope);
                xv = s.x[r * E + ec];
                dy = a.g.dy[r * a.g.dy_ld + ec];
            }
            const float *Bp = s.Bm + r * s.b_tok + (long)ec * s.b_chan;
            const float *Cp = s.Cm + r * s.c_tok + (long)ec * s.c_chan;
            float td = 0, tx = 0, dxd = d * xv;
#pragma unroll
            for (int i = 0; i < SCAN_MAX_S; i++) {
                int n = lane + i * g.G;
                size_t si = ((size_t)(t - t0) * S + i) * nt + tid;
                float cB = 0, cC = 0;
                if (i < S) {
                    float hp = hs[si];
                    if (on && n < N) {
                        float an = expf(d * A[i]), Bn = Bp[n];
                        cC = dy * h[i];
                        float gh = dh[i] + dy * Cp[n];
                        float ahp = an * hp;
                        td += gh * (A[i] * ahp + Bn * xv);
                        tx += gh * Bn;
                        dA[i] += gh * d * ahp;
                        cB = gh * dxd;
                        dh[i] = gh * an;
                    }
                    h[i] = hp;
                }
                if (i < S) {
                    if (a.modeB == GRAD_TOKEN) sB[si] = cB;
                    else if (a.modeB == GRAD_FIXED) fB[i] += cB;
                    else if (on && n < N) a.g.dB[r * s.b_tok + (long)ec * s.b_chan + n] += cB;
                    if (a.modeC == GRAD_TOKEN) sC[si] = cC;
                    else if (a.modeC == GRAD_FIXED) fC[i] += cC;
                    else if (on && n < N) a.g.dC[r * s.c_tok + (long)ec * s.c_chan + n] += cC;
                }
            }
            td = group_sum(td, g.G);
            tx = group_sum(tx, g.G);
            if (on && lane == 0) {
                a.g.dx[r * E + ec] = dy * De + d * tx;
                if (a.dt_fixed) ddt_fixed += td * slope;
                else a.g.ddt[r * s.dt_tok + ec] += td * slope;
                dDe += dy * xv;
            }
        }
        /* per-token operands: this block's channels summed in order, one partial per block */
        if (a.modeB == GRAD_TOKEN || a.modeC == GRAD_TOKEN) {
            __syncthreads();
            int items = (t1 - t0) * N;
            for (int it = tid; it < items; it += nt) {
                int tt = it / N, n = it % N, i = n / g.G, l = n % g.G;
                long r = (long)b * T + t0 + tt;
                size_t base = ((size_t)tt * S + i) * nt + l;
                int ngrp = min(g.cpb, E - eb * g.cpb);
                if (a.modeB == GRAD_TOKEN) {
                    float v = 0;
                    for (int q = 0; q < ngrp; q++) v += sB[base + (size_t)q * g.G];
                    a.tokB[((size_t)eb * s.B * T + r) * N + n] = v;
                }
                if (a.modeC == GRAD_TOKEN) {
                    float v = 0;
                    for (int q = 0; q < ngrp; q++) v += sC[base + (size_t)q * g.G];
                    a.tokC[((size_t)eb * s.B * T + r) * N + n] = v;
                }
            }
            __syncthreads();
        }
    }
    if (!on) return;
    size_t be_ = ((size_t)b * E + e) * N;
#pragma unroll
    for (int i = 0; i < SCAN_MAX_S; i++) {
        int n = lane + i * g.G;
        if (i < S && n < N) {
            a.pA[be_ + n] = dA[i] * A[i]; /* dA/dA_log = A */
            if (a.modeB == GRAD_FIXED) a.fixB[be_ + n] = fB[i];
            if (a.modeC == GRAD_FIXED) a.fixC[be_ + n] = fC[i];
        }
    }
    if (lane == 0) {
        a.pD[(size_t)b * E + e] = dDe;
        if (a.dt_fixed) a.pdt[(size_t)b * E + e] = ddt_fixed;
    }
}

/* out[i] += sum over b of part[b][i], i < n (the (B, n) partials of A_log, D, fixed Δ) */
__global__ void k_sum_seq(float *out, const float *part, int B, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = 0;
        for (int b = 0; b < B; b++) v += part[(size_t)b * n + i];
        out[i] += v;
    }
}

/* GRAD_TOKEN: d[r * tok + n] += sum over channel blocks of part[eb][r][n] */
__global__ void k_sum_tok(float *d, int tok, const float *part, int nbe, long rows, int N)
{
    size_t n_all = (size_t)rows * N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n_all; i += (size_t)gridDim.x * blockDim.x) {
        float v = 0;
        for (int q = 0; q < nbe; q++) v += part[(size_t)q * n_all + i];
        d[(i / N) * tok + i % N] += v;
    }
}

/* GRAD_FIXED: element j of the operand's span (j = e*chan + n) += sum over b, then e, of part[b][e][n] */
__global__ void k_sum_fixed(float *d, const float *part, int B, int E, int N, int chan, long span)
{
    for (long j = blockIdx.x * (long)blockDim.x + threadIdx.x; j < span; j += (long)gridDim.x * blockDim.x) {
        int e_lo = 0, e_hi = E - 1;
        if (chan > 0) {
            e_lo = j - (N - 1) <= 0 ? 0 : (int)((j - (N - 1) + chan - 1) / chan);
            e_hi = (int)min((long)E - 1, j / chan);
        }
        float v = 0;
        for (int b = 0; b < B; b++)
            for (int e = e_lo; e <= e_hi; e++) {
                long n = j - (long)e * chan;
                if (n >= 0 && n < N) v += part[((size_t)b * E + e) * N + n];
            }
        d[j] += v;
    }
}

int cuda_ssm_scan_backward(const pf_ssm_scan *s, const pf_ssm_scan_grad *gr)
{
    const int B = s->B, T = s->T, E = s->E, N = s->N;
    if (N > 32 * SCAN_MAX_S) return pf_error("ssm_scan_backward: N = %d is over the cuda kernel's %d", N, 32 * SCAN_MAX_S);
    if ((long)B * T * E == 0) return 0;
    scan_bwd_args a;
    a.g = *gr;
    a.modeB = s->b_tok == 0 ? GRAD_FIXED : s->b_chan == 0 ? GRAD_TOKEN : GRAD_DIRECT;
    a.modeC = s->c_tok == 0 ? GRAD_FIXED : s->c_chan == 0 ? GRAD_TOKEN : GRAD_DIRECT;
    a.dt_fixed = s->dt_tok == 0;
    /* the most threads per block (up to 256) whose shared memory fits in 96 KB */
    const size_t smem_max = 96 * 1024;
    scan_geom g = scan_geometry(s, 256);
    while (g.threads > 32 && scan_bwd_smem(g, a.modeB, a.modeC) > smem_max) g = scan_geometry(s, g.threads / 2);
    size_t smem = scan_bwd_smem(g, a.modeB, a.modeC);
    if (smem > smem_max)
        return pf_error("ssm_scan_backward: chunk %d x N %d does not fit the cuda kernel's shared memory", g.ch, N);
    static int smem_set;
    if (!smem_set) {
        if (CUDA_CHECK_NOW(cudaFuncSetAttribute(k_scan_bwd, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_max)) < 0)
            return -1;
        smem_set = 1;
    }
    long rows = (long)B * T;
    size_t nBEN = (size_t)B * E * N, ntok = (size_t)g.nbe * rows * N;
    size_t floats = nBEN + 2 * (size_t)B * E + (a.modeB == GRAD_TOKEN ? ntok : a.modeB == GRAD_FIXED ? nBEN : 0) +
                    (a.modeC == GRAD_TOKEN ? ntok : a.modeC == GRAD_FIXED ? nBEN : 0);
    float *p = (float *)cuda_scratch(2, floats * sizeof(float));
    if (!p) return pf_error_prefix("ssm_scan_backward: ");
    a.pA = p; p += nBEN;
    a.pD = p; p += (size_t)B * E;
    a.pdt = p; p += (size_t)B * E;
    a.tokB = a.fixB = a.tokC = a.fixC = NULL;
    if (a.modeB == GRAD_TOKEN) a.tokB = p, p += ntok;
    if (a.modeB == GRAD_FIXED) a.fixB = p, p += nBEN;
    if (a.modeC == GRAD_TOKEN) a.tokC = p, p += ntok;
    if (a.modeC == GRAD_FIXED) a.fixC = p, p += nBEN;

    k_scan_bwd<<<B * g.nbe, g.threads, smem>>>(*s, a, g);
    PF_TRY(CUDA_LAUNCHED_NOW("k_scan_bwd"));
    k_sum_seq<<<cuda_blocks((size_t)E * N, 256), 256>>>(gr->dA_log, a.pA, B, (size_t)E * N);
    if (gr->dD) k_sum_seq<<<cuda_blocks(E, 256), 256>>>(gr->dD, a.pD, B, (size_t)E);
    if (a.dt_fixed) k_sum_seq<<<cuda_blocks(E, 256), 256>>>(gr->ddt, a.pdt, B, (size_t)E);
    if (a.modeB == GRAD_TOKEN) k_sum_tok<<<cuda_blocks(rows * N, 256), 256>>>(gr->dB, s->b_tok, a.tokB, g.nbe, rows, N);
    if (a.modeC == GRAD_TOKEN) k_sum_tok<<<cuda_blocks(rows * N, 256), 256>>>(gr->dC, s->c_tok, a.tokC, g.nbe, rows, N);
    long spanB = (long)(E - 1) * s->b_chan + N, spanC = (long)(E - 1) * s->c_chan + N;
    if (a.modeB == GRAD_FIXED)
        k_sum_fixed<<<cuda_blocks(spanB, 256), 256>>>(gr->dB, a.fixB, B, E, N, s->b_chan, spanB);
    if (a.modeC == GRAD_FIXED)
        k_sum_fixed<<<cuda_blocks(spanC, 256), 256>>>(gr->dC, a.fixC, B, E, N, s->c_chan, spanC);
    return CUDA_LAUNCHED_NOW("ssm scan backward sums");
}
