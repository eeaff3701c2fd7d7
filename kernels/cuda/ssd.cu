/* cuda backend: the Mamba-2 kernels: the SSD chunked scan (forward and backward), its one-token step,
 * and the gated RMSNorm, with the semantics of kernels/cpu/ssd.c (see ssd_forward in kernels/kernels.h).
 *
 * Letters: Bn batch, T tokens, H heads, P head dim, N state, Q chunk (the last chunk of a sequence
 * may be shorter: L tokens), nch = ceil(T/Q) chunks, Lq = min(Q, T). One group: B and C (N per token)
 * are shared by the heads. Per head, with A = -exp(A_log), Δ = softplus(dt + dt_bias), and inside a
 * chunk s_i = Σ_{τ<=i} Δ_τ A, e_i = e^{s_i}, w_j = e^{s_{L-1} - s_j} Δ_j,
 *     M = G ∘ Dec,  G = C Bᵀ (L, L),  Dec_ij = e^{s_i - s_j} Δ_j (j <= i, else 0),
 *     Y  = M X + diag(e) C h0ᵀ + D X,            h1 = e_{L-1} h0 + Xᵀ diag(w) B,
 * h0 the state entering the chunk (P, N). The forward is five kernels:
 *   decay        Δ, s (double, summed in token order as on the cpu), e, w per (sequence, head, token)
 *   cb           G of every chunk, once for all heads (B and C are shared): (Bn, nch, Lq, Lq)
 *   chunk_state  Xᵀ diag(w) B of each chunk but the last, into the slot of the next chunk's state
 *   state_pass   in chunk order per (sequence, head, p, n): h = e_{L-1} h + that, the states entering
 *   chunk_scan   Y from G, the decays and the entering state
 * The backward mirrors it. With dh the gradient of the state leaving a chunk, dY the output's:
 *     dX = Mᵀ dY + D dY + diag(w) B dhᵀ,   dh0 = e_{L-1} dh + (diag(e) dY)ᵀ C,
 *     dC = dG B + diag(e) dY h0,           dB = dGᵀ C + diag(w) X dh,   dG = (dY Xᵀ) ∘ Dec,
 * and the decays' gradient ds (per token, then summed backwards to dΔ and dA as on the cpu) from
 * R = (dY Xᵀ) ∘ G ∘ e^{s_i - s_j}: ds_i += Σ_j R_ij Δ_j, ds_j -= Δ_j Σ_i R_ij, dΔ_j += Σ_i R_ij, plus
 * the e, w and e_{L-1} terms. Kernels: decay and cb again, dstate_local ((diag(e) dY)ᵀ C of each chunk
 * but the first) and dstate_pass (in reverse chunk order) give dh per chunk; dx; dt (ds, dΔ, ddt and
 * the per-chunk head sums: dt_bias, A_log, D); head_sum (over chunks, into dhead); dcb (dG summed over
 * heads in head order, (Bn, nch, Lq, Lq): so dB and dC are per token sums over heads that one thread
 * owns); dC; dB. Only chunk-level states (Bn, H, nch, P, N) are ever stored, never per-token ones.
 *
 * Threads. The products are 64 x 64 output tiles, one per block of 256 threads (16 x 16, each thread
 * 4 x 4 outputs at rows ty + 16 r, cols tx + 16 q), the reduction dimension staged through shared
 * memory 16 at a time (mm below; its operands are read through small lambdas, so masks, decays and
 * strides are applied as they load). Blocks are indexed (sequence, head, chunk, tile) in one grid
 * dimension; the ones whose product is per (sequence, chunk) loop over the heads inside. The dt kernel
 * is one block per (sequence, head, chunk) that walks its chunk's tiles; the passes are one thread per
 * state element walking the chunks.
 *
 * Determinism: no atomics. Every output element and every per-token accumulator (in global scratch,
 * owned by one block) is summed by one thread in an order fixed by the code; block sums reduce by a
 * fixed tree. The step is a warp per (head, p), lanes over n; the gated norm a warp per row, with its
 * weight gradient summed per column in row order (as norm.cu). */
#include <limits.h>
#include <math.h>

#include "kernels/cuda/cuda.h"

enum { TM = 64, TK = 16, NT = 256 };     /* tile side, reduction step, threads per tile block */
enum { SSD_SCRATCH = 3 };                /* the cuda_scratch slot of these kernels */

__device__ __forceinline__ int imin_(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ float sigmoid_(float v) { return 1.0f / (1.0f + expf(-v)); }
/* torch's softplus with its threshold of 20 (the cpu's) */
__device__ __forceinline__ float softplus_(float v) { return v > 20.0f ? v : log1pf(expf(v)); }
/* e^{s_i - s_j}, the decay from token j to token i of a chunk (the difference taken in double) */
__device__ __forceinline__ float seg_(const double *s, int i, int j) { return expf((float)(s[i] - s[j])); }

/* ---- the tile product ------------------------------------------------------------------------- */

typedef struct mm_smem {
    float a[TK][TM + 1];                 /* a[k][i]: +1 keeps the transposing stores conflict-light */
    float b[TK][TM + 1];
} mm_smem;

/* acc[r][q] += Σ_{k<K} la(ty + 16r, k) * lb(k, tx + 16q), k in order. la(i, k), lb(k, j) return the
 * operand (0 outside it); AK / BK say k is the operand's contiguous index (the load then walks k
 * fastest, else i or j), so a warp's loads are coalesced either way. Every thread of the block calls it. */
template <bool AK, bool BK, class LA, class LB>
__device__ __forceinline__ void mm(float (&acc)[4][4], int K, const LA &la, const LB &lb, mm_smem &sm)
{
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    for (int k0 = 0; k0 < K; k0 += TK) {
        for (int e = tid; e < TK * TM; e += NT) {
            int i = AK ? e / TK : e % TM, k = AK ? e % TK : e / TM;
            sm.a[k][i] = k0 + k < K ? la(i, k0 + k) : 0.0f;
            int j = BK ? e / TK : e % TM, kb = BK ? e % TK : e / TM;
            sm.b[kb][j] = k0 + kb < K ? lb(k0 + kb, j) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < TK; k++) {
            float av[4], bv[4];
#pragma unroll
            for (int r = 0; r < 4; r++) {
                av[r] = sm.a[k][ty + 16 * r];
                bv[r] = sm.b[k][tx + 16 * r];
            }
#pragma unroll
            for (int r = 0; r < 4; r++)
#pragma unroll
                for (int q = 0; q < 4; q++) acc[r][q] += av[r] * bv[q];
        }
        __syncthreads();
    }
}

#define TILE_FOR(r, q)              \
    for (int r = 0; r < 4; r++)     \
        for (int q = 0; q < 4; q++)

/* ---- shapes and scratch ------------------------------------------------------------------------ */

typedef struct ssd_dims {
    int Bn, T, H, P, N, Q, nch, Lq;
    int ldx, ldt, ldbc, ldy;
} ssd_dims;

typedef struct ssd_scr {
    double *s;                  /* (Bn, H, T) cumulative log-decay inside each chunk */
    float *delta, *e, *w;       /* (Bn, H, T) Δ, e^{s}, e^{s_{L-1} - s} Δ */
    float *G;                   /* (Bn, nch, Lq, Lq) C Bᵀ of each chunk (tiles on and below the diagonal) */
    /* backward only */
    float *dG;                  /* (Bn, nch, Lq, Lq) Σ_h (dY Xᵀ) ∘ Dec */
    float *dst;                 /* (Bn, H, nch, P, N) gradient of the state leaving each chunk */
    double *rs, *cs, *aw;       /* (Bn, H, T) per-token parts of ds and dΔ (see k_ssd_dt) */
    double *part;               /* (Bn, H, nch, 3) per chunk: d dt_bias, d A (before the A_log factor), dD */
} ssd_scr;

/* one chunk of one (sequence, head): where its rows start */
typedef struct ssd_chunk {
    int b, h, c, t0, L;
    size_t o;                   /* (b*H + h)*T + t0: its first token in the (Bn, H, T) arrays */
} ssd_chunk;

__device__ __forceinline__ ssd_chunk chunk_of(const ssd_dims &d, int bh, int c)
{
    ssd_chunk k;
    k.b = bh / d.H;
    k.h = bh % d.H;
    k.c = c;
    k.t0 = c * d.Q;
    k.L = imin_(d.Q, d.T - k.t0);
    k.o = (size_t)bh * d.T + k.t0;
    return k;
}

__host__ __device__ __forceinline__ int tiles(int n) { return (n + TM - 1) / TM; }

/* ---- forward ----------------------------------------------------------------------------------- */

/* One thread per (sequence, head, chunk), tokens in order (the cpu's sums). */
__global__ void k_ssd_decay(ssd_dims d, const float *dt, const float *dt_bias, const float *A_log, ssd_scr s)
{
    size_t n = (size_t)d.Bn * d.H * d.nch;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        ssd_chunk k = chunk_of(d, (int)(idx / d.nch), (int)(idx % d.nch));
        const float *dtp = dt + ((size_t)k.b * d.T + k.t0) * d.ldt + k.h;
        float A = -expf(A_log[k.h]), bias = dt_bias[k.h];
        double cum = 0;
        for (int i = 0; i < k.L; i++) {
            float dl = softplus_(dtp[(size_t)i * d.ldt] + bias);
            cum += (double)dl * A;
            s.delta[k.o + i] = dl;
            s.s[k.o + i] = cum;
            s.e[k.o + i] = (float)exp(cum);
        }
        for (int j = 0; j < k.L; j++) s.w[k.o + j] = (float)exp(cum - s.s[k.o + j]) * s.delta[k.o + j];
    }
}

/* G = C Bᵀ per (sequence, chunk): block = (b, c, tile it, tile jt), tiles above the diagonal idle */
__global__ void __launch_bounds__(NT) k_ssd_cb(ssd_dims d, const float *Bm, const float *Cm, float *G)
{
    __shared__ mm_smem sm;
    const int nt = tiles(d.Lq), tile = blockIdx.x % (nt * nt), bc = blockIdx.x / (nt * nt);
    const int c = bc % d.nch, b = bc / d.nch, it = tile / nt, jt = tile % nt;
    const int t0 = c * d.Q, L = imin_(d.Q, d.T - t0);
    if (jt > it || it * TM >= L) return;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16, N = d.N, ld = d.ldbc;
    const float *Bc = Bm + ((size_t)b * d.T + t0) * ld, *Cc = Cm + ((size_t)b * d.T + t0) * ld;
    float acc[4][4] = {};
    mm<true, true>(acc, N,
                   [&](int i, int k) { int ii = it * TM + i; return ii < L ? Cc[(size_t)ii * ld + k] : 0.0f; },
                   [&](int k, int j) { int jj = jt * TM + j; return jj < L ? Bc[(size_t)jj * ld + k] : 0.0f; }, sm);
    float *Gc = G + ((size_t)b * d.nch + c) * d.Lq * d.Lq;
    TILE_FOR(r, q) {
        int ii = it * TM + ty + 16 * r, jj = jt * TM + tx + 16 * q;
        if (ii < L && jj < L) Gc[(size_t)ii * d.Lq + jj] = acc[r][q];
    }
}

/* Xᵀ diag(w) B of chunk c < nch - 1 into states[c + 1]: block = (b, h, c, tile of (P, N)) */
__global__ void __launch_bounds__(NT) k_ssd_chunk_state(ssd_dims d, float *states, const float *x, const float *Bm,
                                                        ssd_scr s)
{
    __shared__ mm_smem sm;
    const int np = tiles(d.P), ntl = np * tiles(d.N), tile = blockIdx.x % ntl, bhc = blockIdx.x / ntl;
    const int c = bhc % d.nch, bh = bhc / d.nch;
    if (c >= d.nch - 1) return;
    const ssd_chunk k = chunk_of(d, bh, c);
    const int pt = tile % np, nt = tile / np, tx = threadIdx.x % 16, ty = threadIdx.x / 16, P = d.P, N = d.N;
    const float *X = x + ((size_t)k.b * d.T + k.t0) * d.ldx + (size_t)k.h * P;
    const float *Bc = Bm + ((size_t)k.b * d.T + k.t0) * d.ldbc, *wv = s.w + k.o;
    float acc[4][4] = {};
    mm<false, false>(acc, k.L,
                     [&](int i, int j) {
                         int pp = pt * TM + i;
                         return pp < P ? wv[j] * X[(size_t)j * d.ldx + pp] : 0.0f;
                     },
                     [&](int j, int n) {
                         int nn = nt * TM + n;
                         return nn < N ? Bc[(size_t)j * d.ldbc + nn] : 0.0f;
                     }, sm);
    float *out = states + ((size_t)bh * d.nch + c + 1) * P * N;
    TILE_FOR(r, q) {
        int pp = pt * TM + ty + 16 * r, nn = nt * TM + tx + 16 * q;
        if (pp < P && nn < N) out[(size_t)pp * N + nn] = acc[r][q];
    }
}

/* states[0] = 0; states[c] = e_{L-1}(c - 1) states[c - 1] + (chunk c - 1's Xᵀ diag(w) B), c in order */
__global__ void k_ssd_state_pass(ssd_dims d, float *states, const float *e)
{
    size_t PN = (size_t)d.P * d.N, n = (size_t)d.Bn * d.H * PN;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        size_t bh = idx / PN;
        float *st = states + bh * d.nch * PN + idx % PN;
        float h = 0.0f;
        st[0] = 0.0f;
        for (int c = 1; c < d.nch; c++) {
            h = e[bh * d.T + (size_t)c * d.Q - 1] * h + st[c * PN];
            st[c * PN] = h;
        }
    }
}

/* Y = M X + diag(e) C h0ᵀ + D X: block = (b, h, c, tile of (L, P)) */
__global__ void __launch_bounds__(NT) k_ssd_chunk_scan(ssd_dims d, float *y, const float *x, const float *Cm,
                                                       const float *D, const float *states, ssd_scr s)
{
    __shared__ mm_smem sm;
    const int np = tiles(d.P), ntl = np * tiles(d.Lq), tile = blockIdx.x % ntl, bhc = blockIdx.x / ntl;
    const ssd_chunk k = chunk_of(d, bhc / d.nch, bhc % d.nch);
    const int pt = tile % np, it = tile / np, L = k.L;
    if (it * TM >= L) return;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16, P = d.P, N = d.N;
    const float *X = x + ((size_t)k.b * d.T + k.t0) * d.ldx + (size_t)k.h * P;
    const float *Cc = Cm + ((size_t)k.b * d.T + k.t0) * d.ldbc;
    const float *Gc = s.G + ((size_t)k.b * d.nch + k.c) * d.Lq * d.Lq;
    const float *h0 = states + ((size_t)bhc) * P * N;
    const double *sv = s.s + k.o;
    const float *dv = s.delta + k.o, *ev = s.e + k.o;
    float acc[4][4] = {};
    if (k.c > 0)
        mm<true, true>(acc, N,
                       [&](int i, int n) {
                           int ii = it * TM + i;
                           return ii < L ? ev[ii] * Cc[(size_t)ii * d.ldbc + n] : 0.0f;
                       },
                       [&](int n, int p) { int pp = pt * TM + p; return pp < P ? h0[(size_t)pp * N + n] : 0.0f; }, sm);
    mm<true, false>(acc, imin_(it * TM + TM, L),
                    [&](int i, int j) {
                        int ii = it * TM + i;
                        return ii < L && j <= ii ? Gc[(size_t)ii * d.Lq + j] * seg_(sv, ii, j) * dv[j] : 0.0f;
                    },
                    [&](int j, int p) { int pp = pt * TM + p; return pp < P ? X[(size_t)j * d.ldx + pp] : 0.0f; }, sm);
    const float Dh = D[k.h];
    float *Y = y + ((size_t)k.b * d.T + k.t0) * d.ldy + (size_t)k.h * P;
    TILE_FOR(r, q) {
        int ii = it * TM + ty + 16 * r, pp = pt * TM + tx + 16 * q;
        if (ii < L && pp < P) Y[(size_t)ii * d.ldy + pp] = acc[r][q] + Dh * X[(size_t)ii * d.ldx + pp];
    }
}

/* ---- backward ---------------------------------------------------------------------------------- */

/* (diag(e) dY)ᵀ C of chunk c >= 1 into dst[c - 1]: block = (b, h, c, tile of (P, N)) */
__global__ void __launch_bounds__(NT) k_ssd_dstate_local(ssd_dims d, const float *dy, const float *Cm, ssd_scr s)
{
    __shared__ mm_smem sm;
    const int np = tiles(d.P), ntl = np * tiles(d.N), tile = blockIdx.x % ntl, bhc = blockIdx.x / ntl;
    const int c = bhc % d.nch, bh = bhc / d.nch;
    if (c == 0) return;
    const ssd_chunk k = chunk_of(d, bh, c);
    const int pt = tile % np, nt = tile / np, tx = threadIdx.x % 16, ty = threadIdx.x / 16, P = d.P, N = d.N;
    const float *dY = dy + ((size_t)k.b * d.T + k.t0) * d.ldy + (size_t)k.h * P;
    const float *Cc = Cm + ((size_t)k.b * d.T + k.t0) * d.ldbc, *ev = s.e + k.o;
    float acc[4][4] = {};
    mm<false, false>(acc, k.L,
                     [&](int p, int i) {
                         int pp = pt * TM + p;
                         return pp < P ? ev[i] * dY[(size_t)i * d.ldy + pp] : 0.0f;
                     },
                     [&](int i, int n) {
                         int nn = nt * TM + n;
                         return nn < N ? Cc[(size_t)i * d.ldbc + nn] : 0.0f;
                     }, sm);
    float *out = s.dst + ((size_t)bh * d.nch + c - 1) * P * N;
    TILE_FOR(r, q) {
        int pp = pt * TM + ty + 16 * r, nn = nt * TM + tx + 16 * q;
        if (pp < P && nn < N) out[(size_t)pp * N + nn] = acc[r][q];
    }
}

/* dst[nch - 1] = 0; dst[c] = e_{L-1}(c + 1) dst[c + 1] + (chunk c + 1's local part), c in reverse */
__global__ void k_ssd_dstate_pass(ssd_dims d, ssd_scr s)
{
    size_t PN = (size_t)d.P * d.N, n = (size_t)d.Bn * d.H * PN;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        size_t bh = idx / PN;
        float *g = s.dst + bh * d.nch * PN + idx % PN;
        float v = 0.0f;
        g[(size_t)(d.nch - 1) * PN] = 0.0f;
        for (int c = d.nch - 2; c >= 0; c--) {
            int last = imin_(d.T, (c + 2) * d.Q) - 1;
            v = s.e[bh * d.T + last] * v + g[c * PN];
            g[c * PN] = v;
        }
    }
}

/* dX = Mᵀ dY + diag(w) B dhᵀ + D dY: block = (b, h, c, tile of (L, P)) */
__global__ void __launch_bounds__(NT) k_ssd_dx(ssd_dims d, float *dx, const float *dy, const float *Bm,
                                               const float *D, ssd_scr s)
{
    __shared__ mm_smem sm;
    const int np = tiles(d.P), ntl = np * tiles(d.Lq), tile = blockIdx.x % ntl, bhc = blockIdx.x / ntl;
    const ssd_chunk k = chunk_of(d, bhc / d.nch, bhc % d.nch);
    const int pt = tile % np, jt = tile / np, L = k.L, j0 = jt * TM;
    if (j0 >= L) return;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16, P = d.P, N = d.N;
    const float *dY = dy + ((size_t)k.b * d.T + k.t0) * d.ldy + (size_t)k.h * P;
    const float *Bc = Bm + ((size_t)k.b * d.T + k.t0) * d.ldbc;
    const float *Gc = s.G + ((size_t)k.b * d.nch + k.c) * d.Lq * d.Lq;
    const float *dh = s.dst + (size_t)bhc * P * N;
    const double *sv = s.s + k.o;
    const float *dv = s.delta + k.o, *wv = s.w + k.o;
    float acc[4][4] = {};
    /* Σ_{i >= j} M_ij dY_i: rows i from this tile's first on */
    mm<false, false>(acc, L - j0,
                     [&](int j, int kk) {
                         int ii = j0 + kk, jj = j0 + j;
                         return jj < L && ii >= jj ? Gc[(size_t)ii * d.Lq + jj] * seg_(sv, ii, jj) * dv[jj] : 0.0f;
                     },
                     [&](int kk, int p) {
                         int pp = pt * TM + p;
                         return pp < P ? dY[(size_t)(j0 + kk) * d.ldy + pp] : 0.0f;
                     }, sm);
    if (k.c < d.nch - 1)
        mm<true, true>(acc, N,
                       [&](int j, int n) {
                           int jj = j0 + j;
                           return jj < L ? wv[jj] * Bc[(size_t)jj * d.ldbc + n] : 0.0f;
                       },
                       [&](int n, int p) { int pp = pt * TM + p; return pp < P ? dh[(size_t)pp * N + n] : 0.0f; }, sm);
    const float Dh = D[k.h];
    float *dX = dx + ((size_t)k.b * d.T + k.t0) * d.ldx + (size_t)k.h * P;
    TILE_FOR(r, q) {
        int jj = j0 + ty + 16 * r, pp = pt * TM + tx + 16 * q;
        if (jj < L && pp < P) dX[(size_t)jj * d.ldx + pp] = acc[r][q] + Dh * dY[(size_t)jj * d.ldy + pp];
    }
}

/* fixed-tree sum over the block (every thread gets it) */
__device__ __forceinline__ double block_sum(double v, double *red)
{
    const int tid = threadIdx.x;
    red[tid] = v;
    __syncthreads();
    for (int w = NT / 2; w > 0; w /= 2) {
        if (tid < w) red[tid] += red[tid + w];
        __syncthreads();
    }
    double r = red[0];
    __syncthreads();
    return r;
}

/* out_i += (scale ? scale_i : 1) · Y_i · (R S^T)_i for the chunk's L rows i: R (L, N) at row stride
 * ld_r (B or C of the chunk), S (P, N) a state, Y (L, P) at row stride ld_y; the sum over p of one
 * row in order, in double. Every thread of the block calls it; tl holds one tile of the products. */
__device__ static void rows_through_state(double *out, const float *R, size_t ld_r, const float *S, const float *Y,
                                          size_t ld_y, const float *scale, int L, int P, int N, mm_smem &sm,
                                          float (&tl)[TM][TM + 1])
{
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16, nt = tiles(L);
    for (int it = 0; it < nt; it++)
        for (int pt = 0; pt < tiles(P); pt++) {
            float acc[4][4] = {};
            mm<true, true>(acc, N,
                           [&](int i, int n) {
                               int ii = it * TM + i;
                               return ii < L ? R[(size_t)ii * ld_r + n] : 0.0f;
                           },
                           [&](int n, int p) {
                               int pp = pt * TM + p;
                               return pp < P ? S[(size_t)pp * N + n] : 0.0f;
                           }, sm);
            TILE_FOR(r, q) {
                int ii = it * TM + ty + 16 * r, pp = pt * TM + tx + 16 * q;
                tl[ty + 16 * r][tx + 16 * q] = ii < L && pp < P ? acc[r][q] * Y[(size_t)ii * ld_y + pp] : 0.0f;
            }
            __syncthreads();
            if (tid < TM && it * TM + tid < L) {
                double a = 0;
                for (int p = 0; p < TM; p++) a += tl[tid][p];
                out[it * TM + tid] += scale ? (double)scale[it * TM + tid] * a : a;
            }
            __syncthreads();
        }
}

/* The decays' gradient of one chunk of one head: block = (b, h, c), walking the chunk's tiles.
 * Per token, in the block's own stretch of rs, cs, aw:
 *   rs_i = Σ_j R_ij Δ_j + e_i dY_i · (C h0ᵀ)_i      cs_j = Σ_i R_ij      aw_j = X_j · (B dhᵀ)_j
 * then thread 0 forms ds_i = rs_i - Δ_i cs_i - w_i aw_i (+ Σ_j w_j aw_j + e_{L-1} <dh, h0> at L-1),
 * dΔ_i = cs_i + aw_i e^{s_{L-1} - s_i} + A Σ_{k>=i} ds_k, ddt = dΔ σ(dt + dt_bias), and the chunk's
 * sums of ddt, Δ Σ_{k>=i} ds_k (dA) and dY · X (dD). */
__global__ void __launch_bounds__(NT) k_ssd_dt(ssd_dims d, float *ddt, const float *dy, const float *x,
                                               const float *dt, const float *Bm, const float *Cm,
                                               const float *dt_bias, const float *A_log, const float *states,
                                               ssd_scr s)
{
    __shared__ mm_smem sm;
    __shared__ float tl[TM][TM + 1];
    __shared__ float sdl[TM];
    __shared__ double red[NT];
    const int bhc = blockIdx.x;
    const ssd_chunk k = chunk_of(d, bhc / d.nch, bhc % d.nch);
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16, P = d.P, N = d.N, L = k.L, nt = tiles(L);
    const size_t PN = (size_t)P * N;
    const float *X = x + ((size_t)k.b * d.T + k.t0) * d.ldx + (size_t)k.h * P;
    const float *dY = dy + ((size_t)k.b * d.T + k.t0) * d.ldy + (size_t)k.h * P;
    const float *Bc = Bm + ((size_t)k.b * d.T + k.t0) * d.ldbc, *Cc = Cm + ((size_t)k.b * d.T + k.t0) * d.ldbc;
    const float *Gc = s.G + ((size_t)k.b * d.nch + k.c) * d.Lq * d.Lq;
    const float *h0 = states + (size_t)bhc * PN, *dh = s.dst + (size_t)bhc * PN;
    const double *sv = s.s + k.o;
    const float *dv = s.delta + k.o, *ev = s.e + k.o, *wv = s.w + k.o;
    double *rs = s.rs + k.o, *cs = s.cs + k.o, *aw = s.aw + k.o;
    for (int i = tid; i < L; i += NT) rs[i] = cs[i] = aw[i] = 0.0;
    __syncthreads();

    /* R = (dY Xᵀ) ∘ G ∘ e^{s_i - s_j}, tile by tile on and below the diagonal */
    for (int it = 0; it < nt; it++)
        for (int jt = 0; jt <= it; jt++) {
            float acc[4][4] = {};
            mm<true, true>(acc, P,
                           [&](int i, int p) {
                               int ii = it * TM + i;
                               return ii < L ? dY[(size_t)ii * d.ldy + p] : 0.0f;
                           },
                           [&](int p, int j) {
                               int jj = jt * TM + j;
                               return jj < L ? X[(size_t)jj * d.ldx + p] : 0.0f;
                           }, sm);
            TILE_FOR(r, q) {
                int ii = it * TM + ty + 16 * r, jj = jt * TM + tx + 16 * q;
                float R = 0.0f;
                if (ii < L && jj <= ii) R = acc[r][q] * Gc[(size_t)ii * d.Lq + jj] * seg_(sv, ii, jj);
                tl[ty + 16 * r][tx + 16 * q] = R;
            }
            if (tid < TM) sdl[tid] = jt * TM + tid < L ? dv[jt * TM + tid] : 0.0f;
            __syncthreads();
            if (tid < TM) {
                int ii = it * TM + tid;
                if (ii < L) {
                    double a = 0;
                    for (int j = 0; j < TM; j++) a += (double)tl[tid][j] * sdl[j];
                    rs[ii] += a;
                }
            } else if (tid < 2 * TM) {
                int j = tid - TM, jj = jt * TM + j;
                if (jj < L) {
                    double a = 0;
                    for (int i = 0; i < TM; i++) a += tl[i][j];
                    cs[jj] += a;
                }
            }
            __syncthreads();
        }
    /* from the entering state (none in chunk 0): rs_i += e_i dY_i · (C h0ᵀ)_i */
    if (k.c > 0) rows_through_state(rs, Cc, d.ldbc, h0, dY, d.ldy, ev, L, P, N, sm, tl);
    /* into the leaving state (none from the last chunk): aw_j = X_j · (B dhᵀ)_j */
    if (k.c < d.nch - 1) rows_through_state(aw, Bc, d.ldbc, dh, X, d.ldx, NULL, L, P, N, sm, tl);
    /* dD's part, and <dh, h0> (h0 is 0 in chunk 0, dh in the last) */
    double a = 0;
    for (int e = tid; e < L * P; e += NT) {
        int i = e / P, p = e % P;
        a += (double)dY[(size_t)i * d.ldy + p] * X[(size_t)i * d.ldx + p];
    }
    const double dD = block_sum(a, red);
    a = 0;
    if (k.c > 0 && k.c < d.nch - 1)
        for (size_t e = tid; e < PN; e += NT) a += (double)dh[e] * h0[e];
    const double dot = block_sum(a, red);

    if (tid != 0) return;
    const float A = -expf(A_log[k.h]), bias = dt_bias[k.h];
    double tot = 0;
    for (int i = 0; i < L; i++) {
        double wa = aw[i] * wv[i];
        tot += wa;
        rs[i] -= (double)dv[i] * cs[i] + wa;
        cs[i] += aw[i] * exp(sv[L - 1] - sv[i]);
    }
    rs[L - 1] += tot + (double)ev[L - 1] * dot;
    double r = 0, dA = 0, dbias = 0;
    const float *dtp = dt + ((size_t)k.b * d.T + k.t0) * d.ldt + k.h;
    float *ddtp = ddt + ((size_t)k.b * d.T + k.t0) * d.ldt + k.h;
    for (int i = L - 1; i >= 0; i--) {
        r += rs[i];
        double dd = cs[i] + A * r;
        dA += dv[i] * r;
        float g = (float)dd * sigmoid_(dtp[(size_t)i * d.ldt] + bias);
        ddtp[(size_t)i * d.ldt] = g;
        dbias += g;
    }
    double *pt = s.part + (size_t)bhc * 3;
    pt[0] = dbias;
    pt[1] = dA;
    pt[2] = dD;
}

/* dhead (Bn, 3H) = the chunks' sums in chunk order: [d dt_bias | d A_log | d D] */
__global__ void k_ssd_head_sum(ssd_dims d, float *dhead, const float *A_log, ssd_scr s)
{
    int n = d.Bn * d.H;
    for (int bh = blockIdx.x * blockDim.x + threadIdx.x; bh < n; bh += gridDim.x * blockDim.x) {
        int b = bh / d.H, h = bh % d.H;
        double v[3] = {0, 0, 0};
        for (int c = 0; c < d.nch; c++)
            for (int j = 0; j < 3; j++) v[j] += s.part[((size_t)bh * d.nch + c) * 3 + j];
        float A = -expf(A_log[h]);
        dhead[(size_t)b * 3 * d.H + h] = (float)v[0];
        dhead[(size_t)b * 3 * d.H + d.H + h] = (float)(v[1] * A);   /* dA/dA_log = A */
        dhead[(size_t)b * 3 * d.H + 2 * d.H + h] = (float)v[2];
    }
}

/* dG = Σ_h (dY_h X_hᵀ) ∘ Dec_h, heads in order: block = (b, c, tile it, tile jt), above the diagonal idle */
__global__ void __launch_bounds__(NT) k_ssd_dcb(ssd_dims d, const float *dy, const float *x, ssd_scr s)
{
    __shared__ mm_smem sm;
    const int nt = tiles(d.Lq), tile = blockIdx.x % (nt * nt), bc = blockIdx.x / (nt * nt);
    const int c = bc % d.nch, b = bc / d.nch, it = tile / nt, jt = tile % nt;
    const int t0 = c * d.Q, L = imin_(d.Q, d.T - t0);
    if (jt > it || it * TM >= L) return;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16, P = d.P;
    float acc[4][4] = {};
    for (int h = 0; h < d.H; h++) {
        const float *X = x + ((size_t)b * d.T + t0) * d.ldx + (size_t)h * P;
        const float *dY = dy + ((size_t)b * d.T + t0) * d.ldy + (size_t)h * P;
        const size_t o = ((size_t)b * d.H + h) * d.T + t0;
        const double *sv = s.s + o;
        const float *dv = s.delta + o;
        float m[4][4] = {};
        mm<true, true>(m, P,
                       [&](int i, int p) { int ii = it * TM + i; return ii < L ? dY[(size_t)ii * d.ldy + p] : 0.0f; },
                       [&](int p, int j) {
                           int jj = jt * TM + j;
                           return jj < L ? X[(size_t)jj * d.ldx + p] : 0.0f;
                       }, sm);
        TILE_FOR(r, q) {
            int ii = it * TM + ty + 16 * r, jj = jt * TM + tx + 16 * q;
            if (ii < L && jj <= ii) acc[r][q] += m[r][q] * (seg_(sv, ii, jj) * dv[jj]);
        }
    }
    float *dGc = s.dG + ((size_t)b * d.nch + c) * d.Lq * d.Lq;
    TILE_FOR(r, q) {
        int ii = it * TM + ty + 16 * r, jj = jt * TM + tx + 16 * q;
        if (ii < L && jj < L) dGc[(size_t)ii * d.Lq + jj] = acc[r][q];   /* 0 above the diagonal */
    }
}

/* dC = dG B + Σ_h diag(e_h) dY_h h0_h: block = (b, c, tile of (L, N)) */
__global__ void __launch_bounds__(NT) k_ssd_dC(ssd_dims d, float *dC, const float *dy, const float *Bm,
                                               const float *states, ssd_scr s)
{
    __shared__ mm_smem sm;
    const int nn_t = tiles(d.N), ntl = nn_t * tiles(d.Lq), tile = blockIdx.x % ntl, bc = blockIdx.x / ntl;
    const int c = bc % d.nch, b = bc / d.nch, nt = tile % nn_t, it = tile / nn_t;
    const int t0 = c * d.Q, L = imin_(d.Q, d.T - t0);
    if (it * TM >= L) return;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16, P = d.P, N = d.N;
    const float *Bc = Bm + ((size_t)b * d.T + t0) * d.ldbc;
    const float *dGc = s.dG + ((size_t)b * d.nch + c) * d.Lq * d.Lq;
    float acc[4][4] = {};
    mm<true, false>(acc, imin_(it * TM + TM, L),
                    [&](int i, int j) { int ii = it * TM + i; return ii < L ? dGc[(size_t)ii * d.Lq + j] : 0.0f; },
                    [&](int j, int n) {
                        int nn = nt * TM + n;
                        return nn < N ? Bc[(size_t)j * d.ldbc + nn] : 0.0f;
                    }, sm);
    if (c > 0)
        for (int h = 0; h < d.H; h++) {
            const float *dY = dy + ((size_t)b * d.T + t0) * d.ldy + (size_t)h * P;
            const float *ev = s.e + ((size_t)b * d.H + h) * d.T + t0;
            const float *h0 = states + (((size_t)b * d.H + h) * d.nch + c) * P * N;
            mm<true, false>(acc, P,
                            [&](int i, int p) {
                                int ii = it * TM + i;
                                return ii < L ? ev[ii] * dY[(size_t)ii * d.ldy + p] : 0.0f;
                            },
                            [&](int p, int n) {
                                int nn = nt * TM + n;
                                return nn < N ? h0[(size_t)p * N + nn] : 0.0f;
                            }, sm);
        }
    float *out = dC + ((size_t)b * d.T + t0) * d.ldbc;
    TILE_FOR(r, q) {
        int ii = it * TM + ty + 16 * r, nn = nt * TM + tx + 16 * q;
        if (ii < L && nn < N) out[(size_t)ii * d.ldbc + nn] = acc[r][q];
    }
}

/* dB = dGᵀ C + Σ_h diag(w_h) X_h dh_h: block = (b, c, tile of (L, N)) */
__global__ void __launch_bounds__(NT) k_ssd_dB(ssd_dims d, float *dB, const float *x, const float *Cm, ssd_scr s)
{
    __shared__ mm_smem sm;
    const int nn_t = tiles(d.N), ntl = nn_t * tiles(d.Lq), tile = blockIdx.x % ntl, bc = blockIdx.x / ntl;
    const int c = bc % d.nch, b = bc / d.nch, nt = tile % nn_t, jt = tile / nn_t;
    const int t0 = c * d.Q, L = imin_(d.Q, d.T - t0), j0 = jt * TM;
    if (j0 >= L) return;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16, P = d.P, N = d.N;
    const float *Cc = Cm + ((size_t)b * d.T + t0) * d.ldbc;
    const float *dGc = s.dG + ((size_t)b * d.nch + c) * d.Lq * d.Lq;
    float acc[4][4] = {};
    /* Σ_{i >= j} dG_ij C_i: rows i from this tile's first on (dG is 0 above the diagonal) */
    mm<false, false>(acc, L - j0,
                     [&](int j, int kk) { int jj = j0 + j; return jj < L ? dGc[(size_t)(j0 + kk) * d.Lq + jj] : 0.0f; },
                     [&](int kk, int n) {
                         int nn = nt * TM + n;
                         return nn < N ? Cc[(size_t)(j0 + kk) * d.ldbc + nn] : 0.0f;
                     }, sm);
    if (c < d.nch - 1)
        for (int h = 0; h < d.H; h++) {
            const float *X = x + ((size_t)b * d.T + t0) * d.ldx + (size_t)h * P;
            const float *wv = s.w + ((size_t)b * d.H + h) * d.T + t0;
            const float *dh = s.dst + (((size_t)b * d.H + h) * d.nch + c) * P * N;
            mm<true, false>(acc, P,
                            [&](int j, int p) {
                                int jj = j0 + j;
                                return jj < L ? wv[jj] * X[(size_t)jj * d.ldx + p] : 0.0f;
                            },
                            [&](int p, int n) {
                                int nn = nt * TM + n;
                                return nn < N ? dh[(size_t)p * N + nn] : 0.0f;
                            }, sm);
        }
    float *out = dB + ((size_t)b * d.T + t0) * d.ldbc;
    TILE_FOR(r, q) {
        int jj = j0 + ty + 16 * r, nn = nt * TM + tx + 16 * q;
        if (jj < L && nn < N) out[(size_t)jj * d.ldbc + nn] = acc[r][q];
    }
}

/* ---- host side --------------------------------------------------------------------------------- */

static int ssd_dims_of(ssd_dims *d, const char *what, int ldx, int ldt, int ldbc, int Bn, int T, int H, int P,
                       int N, int Q)
{
    if (Q < 1) return pf_error("%s: chunk %d must be at least 1", what, Q);
    if (Bn < 0 || T < 0 || H < 1 || P < 1 || N < 1) return pf_error("%s: bad shape", what);
    d->Bn = Bn, d->T = T, d->H = H, d->P = P, d->N = N, d->Q = Q;
    d->nch = T > 0 ? (T + Q - 1) / Q : 0;
    d->Lq = Q < T ? Q : T;
    d->ldx = ldx, d->ldt = ldt, d->ldbc = ldbc, d->ldy = H * P;
    /* the largest grids, in one dimension: (Bn, H, nch) or (Bn, nch) x tiles */
    long bhc = (long)Bn * H * d->nch, tq = tiles(d->Lq), tp = tiles(P), tn = tiles(N);
    long most = bhc * tp * (tn > tq ? tn : tq);
    if (bhc * tq * tq / H > most) most = bhc * tq * tq / H;
    if (bhc * tn * tq / H > most) most = bhc * tn * tq / H;
    if (most > INT_MAX)
        return pf_error("%s: %d x %d tokens x %d heads is too many blocks for one launch", what, Bn, T, H);
    return 0;
}

/* Carve the scratch: the forward's part, and with backward the rest. NULL with pf_error. */
static int ssd_scratch(const ssd_dims &d, ssd_scr *s, int backward)
{
    size_t bht = (size_t)d.Bn * d.H * d.T, gq = (size_t)d.Bn * d.nch * d.Lq * d.Lq;
    size_t doubles = bht, floats = 3 * bht + gq;
    if (backward) {
        doubles += 3 * bht + (size_t)d.Bn * d.H * d.nch * 3;
        floats += gq + (size_t)d.Bn * d.H * d.nch * d.P * d.N;
    }
    char *p = (char *)cuda_scratch(SSD_SCRATCH, doubles * sizeof(double) + floats * sizeof(float));
    if (!p) return pf_error_prefix("ssd: ");
    double *dp = (double *)p;
    s->s = dp, dp += bht;
    s->rs = s->cs = s->aw = s->part = NULL;
    if (backward) {
        s->rs = dp, dp += bht;
        s->cs = dp, dp += bht;
        s->aw = dp, dp += bht;
        s->part = dp, dp += (size_t)d.Bn * d.H * d.nch * 3;
    }
    float *fp = (float *)dp;
    s->delta = fp, fp += bht;
    s->e = fp, fp += bht;
    s->w = fp, fp += bht;
    s->G = fp, fp += gq;
    s->dG = s->dst = NULL;
    if (backward) {
        s->dG = fp, fp += gq;
        s->dst = fp;
    }
    return 0;
}

/* decay and cb: the forward's first two kernels, also the backward's */
static int ssd_prologue(const ssd_dims &d, const ssd_scr &s, const float *dt, const float *Bm, const float *Cm,
                        const float *dt_bias, const float *A_log)
{
    size_t n = (size_t)d.Bn * d.H * d.nch;
    k_ssd_decay<<<cuda_blocks(n, 128), 128>>>(d, dt, dt_bias, A_log, s);
    PF_TRY(CUDA_LAUNCHED_NOW("k_ssd_decay"));
    k_ssd_cb<<<(unsigned)d.Bn * d.nch * tiles(d.Lq) * tiles(d.Lq), NT>>>(d, Bm, Cm, s.G);
    return CUDA_LAUNCHED_NOW("k_ssd_cb");
}

int cuda_ssd_forward(float *y, float *states, const float *x, int ldx, const float *dt, int ldt, const float *Bm,
                     const float *Cm, int ldbc, const float *dt_bias, const float *A_log, const float *D, int Bn,
                     int T, int H, int P, int N, int Q)
{
    ssd_dims d;
    ssd_scr s;
    PF_TRY(ssd_dims_of(&d, "ssd_forward", ldx, ldt, ldbc, Bn, T, H, P, N, Q));
    if ((long)Bn * T == 0) return 0;
    PF_TRY(ssd_scratch(d, &s, 0));
    PF_TRY(ssd_prologue(d, s, dt, Bm, Cm, dt_bias, A_log));
    unsigned bhc = (unsigned)Bn * H * d.nch;
    if (d.nch > 1) {
        k_ssd_chunk_state<<<bhc * tiles(P) * tiles(N), NT>>>(d, states, x, Bm, s);
        PF_TRY(CUDA_LAUNCHED_NOW("k_ssd_chunk_state"));
    }
    size_t elems = (size_t)Bn * H * P * N;
    k_ssd_state_pass<<<cuda_blocks(elems, 256), 256>>>(d, states, s.e);
    PF_TRY(CUDA_LAUNCHED_NOW("k_ssd_state_pass"));
    k_ssd_chunk_scan<<<bhc * tiles(P) * tiles(d.Lq), NT>>>(d, y, x, Cm, D, states, s);
    return CUDA_LAUNCHED_NOW("k_ssd_chunk_scan");
}

int cuda_ssd_backward(float *dx, float *ddt, float *dB, float *dC, float *dhead, const float *dy,
                      const float *states, const float *x, int ldx, const float *dt, int ldt, const float *Bm,
                      const float *Cm, int ldbc, const float *dt_bias, const float *A_log, const float *D, int Bn,
                      int T, int H, int P, int N, int Q)
{
    ssd_dims d;
    ssd_scr s;
    PF_TRY(ssd_dims_of(&d, "ssd_backward", ldx, ldt, ldbc, Bn, T, H, P, N, Q));
    if (Bn == 0) return 0;
    if (T == 0) { /* no tokens: the head gradients are zeros */
        return CUDA_CHECK_NOW(cudaMemsetAsync(dhead, 0, (size_t)Bn * 3 * H * sizeof(float), 0));
    }
    PF_TRY(ssd_scratch(d, &s, 1));
    PF_TRY(ssd_prologue(d, s, dt, Bm, Cm, dt_bias, A_log));
    unsigned bhc = (unsigned)Bn * H * d.nch, bc = (unsigned)Bn * d.nch;
    if (d.nch > 1) {
        k_ssd_dstate_local<<<bhc * tiles(P) * tiles(N), NT>>>(d, dy, Cm, s);
        PF_TRY(CUDA_LAUNCHED_NOW("k_ssd_dstate_local"));
    }
    size_t elems = (size_t)Bn * H * P * N;
    k_ssd_dstate_pass<<<cuda_blocks(elems, 256), 256>>>(d, s);
    PF_TRY(CUDA_LAUNCHED_NOW("k_ssd_dstate_pass"));
    k_ssd_dx<<<bhc * tiles(P) * tiles(d.Lq), NT>>>(d, dx, dy, Bm, D, s);
    PF_TRY(CUDA_LAUNCHED_NOW("k_ssd_dx"));
    k_ssd_dt<<<bhc, NT>>>(d, ddt, dy, x, dt, Bm, Cm, dt_bias, A_log, states, s);
    PF_TRY(CUDA_LAUNCHED_NOW("k_ssd_dt"));
    k_ssd_head_sum<<<cuda_blocks((size_t)Bn * H, 128), 128>>>(d, dhead, A_log, s);
    PF_TRY(CUDA_LAUNCHED_NOW("k_ssd_head_sum"));
    k_ssd_dcb<<<bc * tiles(d.Lq) * tiles(d.Lq), NT>>>(d, dy, x, s);
    PF_TRY(CUDA_LAUNCHED_NOW("k_ssd_dcb"));
    k_ssd_dC<<<bc * tiles(N) * tiles(d.Lq), NT>>>(d, dC, dy, Bm, states, s);
    PF_TRY(CUDA_LAUNCHED_NOW("k_ssd_dC"));
    k_ssd_dB<<<bc * tiles(N) * tiles(d.Lq), NT>>>(d, dB, x, Cm, s);
    return CUDA_LAUNCHED_NOW("k_ssd_dB");
}

/* ---- one token --------------------------------------------------------------------------------- */

__device__ __forceinline__ float warp_sum_f(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

enum { WARPS = 8 };

/* a warp per (h, p), lanes over n */
__global__ void k_ssd_step(float *y, float *state, float *delta, float *decay, const float *x, const float *dt,
                           const float *Bv, const float *Cv, const float *dt_bias, const float *A_log,
                           const float *D, int H, int P, int N)
{
    const int warp = blockIdx.x * WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (warp >= H * P) return;   /* whole warps */
    const int h = warp / P, p = warp % P;
    float dl = softplus_(dt[h] + dt_bias[h]);
    float a = expf(dl * -expf(A_log[h]));
    if (p == 0 && lane == 0) {
        delta[h] = dl;
        decay[h] = a;
    }
    float xv = x[h * P + p], dx = dl * xv, acc = 0.0f;
    float *st = state + ((size_t)h * P + p) * N;
    for (int n = lane; n < N; n += 32) {
        float v = a * st[n] + dx * Bv[n];
        st[n] = v;
        acc += v * Cv[n];
    }
    acc = warp_sum_f(acc);
    if (lane == 0) y[h * P + p] = acc + D[h] * xv;
}

void cuda_ssd_step(float *y, float *state, float *delta, float *decay, const float *x, const float *dt,
                   const float *Bv, const float *Cv, const float *dt_bias, const float *A_log, const float *D, int H,
                   int P, int N)
{
    long warps = (long)H * P;
    if (warps <= 0) return;
    k_ssd_step<<<(unsigned)((warps + WARPS - 1) / WARPS), WARPS * 32>>>(y, state, delta, decay, x, dt, Bv, Cv,
                                                                        dt_bias, A_log, D, H, P, N);
    CUDA_LAUNCHED("k_ssd_step");
}

/* ---- gated RMSNorm ------------------------------------------------------------------------------ */

/* a warp per row: out = rmsnorm(y * silu(z)) * w */
__global__ void k_rmsnorm_gated_forward(float *out, float *rstd, const float *y, const float *z, int ldz,
                                        const float *w, int rows, int E, float eps)
{
    const int r = blockIdx.x * WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= rows) return;
    const float *yr = y + (size_t)r * E, *zr = z + (size_t)r * ldz;
    float *o = out + (size_t)r * E;
    double ss = 0;
    for (int c = lane; c < E; c += 32) {
        float g = yr[c] * zr[c] * sigmoid_(zr[c]);
        ss += (double)g * g;
    }
    ss = warp_sum_d(ss);
    float s = (float)(1.0 / sqrt(ss / E + eps));
    if (lane == 0) rstd[r] = s;
    for (int c = lane; c < E; c += 32) {
        float g = yr[c] * zr[c] * sigmoid_(zr[c]);
        o[c] = g * (s * w[c]);
    }
}

void cuda_rmsnorm_gated_forward(float *out, float *rstd, const float *y, const float *z, int ldz, const float *w,
                                int rows, int E, float eps)
{
    if (rows <= 0) return;
    k_rmsnorm_gated_forward<<<(rows + WARPS - 1) / WARPS, WARPS * 32>>>(out, rstd, y, z, ldz, w, rows, E, eps);
    CUDA_LAUNCHED("k_rmsnorm_gated_forward");
}

__global__ void k_rmsnorm_gated_backward(float *dy, float *dz, int ldz, const float *dout, const float *y,
                                         const float *z, const float *w, const float *rstd, int rows, int E)
{
    const int r = blockIdx.x * WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= rows) return;
    const float *yr = y + (size_t)r * E, *zr = z + (size_t)r * ldz, *d = dout + (size_t)r * E;
    float *dyr = dy + (size_t)r * E, *dzr = dz + (size_t)r * ldz;
    const float s = rstd[r];
    double dot = 0;
    for (int c = lane; c < E; c += 32) dot += (double)d[c] * w[c] * yr[c] * zr[c] * sigmoid_(zr[c]);
    dot = warp_sum_d(dot);
    const float kk = (float)(dot / E) * s * s * s;
    for (int c = lane; c < E; c += 32) {
        float sg = sigmoid_(zr[c]), silu = zr[c] * sg;
        float g = yr[c] * silu;
        float dg = d[c] * w[c] * s - kk * g;
        dyr[c] = dg * silu;
        dzr[c] = dg * yr[c] * sg * (1.0f + zr[c] * (1.0f - sg));
    }
}

/* dw (E) += Σ_r dout y silu(z) rstd: a block owns 32 columns (32 x 16 threads), rows in a fixed order */
__global__ void k_rmsnorm_gated_dw(float *dw, const float *dout, const float *y, const float *z, int ldz,
                                   const float *rstd, int rows, int E)
{
    __shared__ double part[16][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    double g = 0;
    if (c < E)
        for (int r = threadIdx.y; r < rows; r += 16) {
            float zv = z[(size_t)r * ldz + c];
            g += (double)dout[(size_t)r * E + c] * y[(size_t)r * E + c] * zv * sigmoid_(zv) * rstd[r];
        }
    part[threadIdx.y][threadIdx.x] = g;
    __syncthreads();
    if (threadIdx.y == 0 && c < E) {
        double t = 0;
        for (int j = 0; j < 16; j++) t += part[j][threadIdx.x];
        dw[c] += (float)t;
    }
}

void cuda_rmsnorm_gated_backward(float *dy, float *dz, int ldz, float *dw, const float *dout, const float *y,
                                 const float *z, const float *w, const float *rstd, int rows, int E)
{
    if (rows <= 0 || E <= 0) return;
    k_rmsnorm_gated_backward<<<(rows + WARPS - 1) / WARPS, WARPS * 32>>>(dy, dz, ldz, dout, y, z, w, rstd, rows, E);
    if (CUDA_LAUNCHED("k_rmsnorm_gated_backward") < 0) return;
    k_rmsnorm_gated_dw<<<(E + 31) / 32, dim3(32, 16)>>>(dw, dout, y, z, ldz, rstd, rows, E);
    CUDA_LAUNCHED("k_rmsnorm_gated_dw");
}
