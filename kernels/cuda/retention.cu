/* cuda backend: RetNet retention, with the semantics of kernels/cpu/retention.c (shapes and contracts
 * in kernels/kernels.h): the split of the projections into rotated per-head q, k, v and its adjoint,
 * the chunkwise form (chunk >= T: the parallel form), the recurrent form, and the group norm with the
 * swish gate.
 *
 * Letters: B batch, T tokens, H heads, dk and dv the key and value dims of a head, L = min(chunk, T)
 * tokens per chunk (the last chunk may be shorter), nc = ceil(T / L) chunks; bh = b*H + h indexes the
 * (batch, head) pairs, whose work is independent.
 *
 * Chunkwise. The cpu walks the chunks of a pair in order; here the chunks of all pairs run at once,
 * in three steps:
 *   1. per chunk c, U_c = K_c^T (V_c .* zeta) (dk, dv), zeta_m = gamma^(L_c-1-m) (k_ret_outer: one
 *      block per (pair, chunk, 32 x 32 tile of U)), written into the slot of the state entering
 *      chunk c + 1 (the last chunk's into the final state);
 *   2. the states in chunk order, R_(c+1) = gamma^L R_c + U_c, in place (k_ret_scan_fwd: one thread
 *      per (pair, state element));
 *   3. the outputs O_c = (Q_c K_c^T .* D) V_c + (Q_c R_c) .* xi, xi_n = gamma^(n+1) (k_ret_tile).
 * Backward mirrors it. The gradient G_c of the state leaving chunk c comes from the reverse scan
 * G_(c-1) = gamma^(L_c) G_c + (Q_c .* xi)^T dO_c (k_ret_outer, then k_ret_scan_bwd) into a scratch of
 * the states' size; then dQ, dK and dV are three independent passes of the tile kernel:
 *   dQ = ((dO V^T) .* D) K + xi .* (dO R_c^T)         (own rows: queries, walking keys <= them)
 *   dK = ((dO V^T) .* D)^T Q + zeta .* (V G_c^T)      (own rows: keys, walking queries >= them)
 *   dV = (Q K^T .* D)^T dO + zeta .* (K G_c)
 * The tile kernel: one block of 256 threads (8 warps x 32 lanes) per (pair, chunk, 32 own rows, 32
 * output columns). For each 32-row tile of the other tokens it forms the 32 x 32 scores (own . other,
 * summed over the inner dimension in slices of 32 staged in shared memory; thread (w, l) owns rows w,
 * w+8, w+16, w+24 of column l), masks and decays them (gamma^|n-m| from the table), stages them in
 * shared memory and multiplies them into its four outputs with the other tokens' rows of the third
 * operand; the cross term through the chunk's state is a last slice loop. Powers gamma^j, j <= L, come
 * from a per-call table computed as the cpu does, (float) pow(double gamma, j).
 *
 * Recurrent: one block per (pair, 32 value columns); lane l owns column j of the state S (dk, dv),
 * warp w its rows w, w+8, ..., in registers for all T tokens (dk <= 8 * REC_MAX_R). o_t = q_t S_t sums
 * the thread's rows, then the 8 warps' partials through shared memory in a fixed order. Backward
 * recomputes S forwards (dq_t = S_t do_t, a lane sum per row), then carries G_t = gamma G_(t+1) +
 * q_t^T do_t backwards (dk_t = G_t v_t, a lane sum; dv_t = k_t G_t, a row sum). With more than 32
 * value columns a block's dq and dk row sums are partial; a second kernel adds them in block order.
 *
 * Group norm and gate: one warp per (token, head), double sums as on the cpu; the weight gradients
 * are summed per column by one block (32 columns x 16 row groups) in a fixed order.
 *
 * Determinism: no atomics; each output element is summed by one thread in an order fixed by the code.
 * gamma is on the host: each call copies it into a small scratch (slot RET_SLOT of cuda_scratch, used
 * only within the call) with the power table and, where needed, the gradient states. */
#include <math.h>

#include "kernels/cuda/cuda.h"
#include "kernels/cuda/tiles.cuh"

enum { RET_SLOT = 3 };                    /* the cuda_scratch slot of these kernels */
enum { REC_MAX_R = 64 };                  /* recurrent: state rows per thread, dk <= 8 * 64 */

static __device__ __forceinline__ double warp_sum_d(double v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ==== split ================================================================================== */

/* y (pair i) = rotate(x (pair i)) * scale at position pos, in double as on the cpu; theta_i =
 * 10000^(-i/(P-1)), one pair: theta 1; inverse turns by minus the angle */
static __device__ __forceinline__ void rot_pair(float *y, const float *x, int i, int P, double pos, float scale,
                                         bool inverse)
{
    double theta = P > 1 ? pow(10000.0, -(double)i / (P - 1)) : 1.0, s, c;
    sincos(pos * theta, &s, &c);
    if (inverse) s = -s;
    double a = x[2 * i], b = x[2 * i + 1];
    y[2 * i] = (float)((a * c - b * s) * scale);
    y[2 * i + 1] = (float)((b * c + a * s) * scale);
}

/* One thread per (row, item); a row's items are its H*P q pairs, its H*P k pairs, then its V values.
 * backward: the adjoint, from (dqr, dkr, dvh) into the q, k, v columns of the row. */
__global__ void k_ret_split(float *qr, float *kr, float *vh, float *qkvg, int B, int T, int H, int dk,
                            int dv, int pos0, int backward)
{
    const int C = H * dk, V = H * dv, N = 2 * C + 2 * V, P = dk / 2, hp = H * P;
    const size_t per = 2 * (size_t)hp + V, n = (size_t)B * T * per;
    const float ks = 1.0f / sqrtf((float)dk);
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        size_t r = idx / per;
        int u = (int)(idx % per), b = (int)(r / T), t = (int)(r % T);
        float *row = qkvg + r * N;
        if (u < 2 * hp) {
            int which = u / hp, p = u % hp, h = p / P, i = p % P;
            size_t at = (((size_t)b * H + h) * T + t) * dk;
            float *head = (which ? kr : qr) + at, *col = row + which * C + h * dk;
            if (backward) rot_pair(col, head, i, P, (double)pos0 + t, which ? ks : 1.0f, true);
            else rot_pair(head, col, i, P, (double)pos0 + t, which ? ks : 1.0f, false);
        } else {
            u -= 2 * hp;
            int h = u / dv, j = u % dv;
            size_t at = (((size_t)b * H + h) * T + t) * dv + j;
            if (backward) row[2 * C + u] = vh[at];
            else vh[at] = row[2 * C + u];
        }
    }
}

static void split_launch(float *qr, float *kr, float *vh, float *qkvg, int B, int T, int H, int dk, int dv,
                         int pos0, int backward)
{
    size_t n = (size_t)B * T * (2 * (size_t)H * (dk / 2) + (size_t)H * dv);
    if (B < 1 || T < 1 || n == 0) return;
    k_ret_split<<<cuda_blocks(n, 256), 256>>>(qr, kr, vh, qkvg, B, T, H, dk, dv, pos0, backward);
    CUDA_LAUNCHED("k_ret_split");
}

void cuda_retention_split(float *qr, float *kr, float *vh, const float *qkvg, int B, int T, int H, int dk,
                          int dv, int pos0)
{
    split_launch(qr, kr, vh, (float *)qkvg, B, T, H, dk, dv, pos0, 0); /* qkvg is only read */
}

void cuda_retention_split_backward(float *dqkvg, const float *dqr, const float *dkr, const float *dvh, int B,
                                   int T, int H, int dk, int dv, int pos0)
{
    split_launch((float *)dqr, (float *)dkr, (float *)dvh, dqkvg, B, T, H, dk, dv, pos0, 1); /* only read */
}

/* ==== scratch: gamma and its powers ========================================================== */

/* pw (H, L + 1): pw[h][j] = gamma_h^j, as the cpu's pow_table */
__global__ void k_ret_pow(float *pw, const float *gam, int H, int L)
{
    size_t n = (size_t)H * (L + 1);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        pw[i] = (float)pow((double)gam[i / (L + 1)], (double)(i % (L + 1)));
}

static size_t pad4(size_t n) { return (n + 3) & ~(size_t)3; }

/* This call's scratch: gamma (H) copied from the host, then (L >= 0) the power table (H, L + 1), then
 * `extra` floats at *rest. Returns gamma on the device, or NULL with the failure remembered for sync. */
static float *ret_scratch(const char *what, const float *gamma, int H, int L, size_t extra, float **pw,
                          float **rest)
{
    size_t ng = pad4((size_t)H), np = L >= 0 ? pad4((size_t)H * (L + 1)) : 0;
    float *p = (float *)cuda_scratch(RET_SLOT, (ng + np + extra) * sizeof(float));
    if (!p) {
        cuda_fail(what, cudaErrorMemoryAllocation);
        return NULL;
    }
    if (CUDA_CHECK(cudaMemcpyAsync(p, gamma, (size_t)H * sizeof(float), cudaMemcpyHostToDevice, 0)) < 0) return NULL;
    *pw = p + ng;
    *rest = p + ng + np;
    if (L >= 0) {
        k_ret_pow<<<cuda_blocks((size_t)H * (L + 1), 256), 256>>>(*pw, p, H, L);
        if (CUDA_LAUNCHED("k_ret_pow") < 0) return NULL;
    }
    return p;
}

/* ==== chunkwise: per-chunk outer products and the scans over chunks ============================ */

/* U (dk, dv) of chunk c = sum over its tokens m of A[m]^T (B[m] w_m):
 *   forward (bwd = 0): A = K, B = V, w_m = gamma^(L_c-1-m); into the slot of chunk c + 1, or for the
 *     last chunk into `last` (the final state);
 *   backward (bwd = 1): A = Q, B = dO, w_m = gamma^(m+1); chunks c >= 1, into the slot of chunk c - 1.
 * Block: (pair, chunk) x 32 x 32 tile of U; thread (w, l) owns rows w + 8u of column l. */
typedef struct ret_outer {
    const float *A, *Bv, *pw;
    float *slots;                 /* (BH, nc, dk, dv) */
    float *last;                  /* (BH, dk, dv) or NULL */
    int T, H, dk, dv, Lc, nc;
    int nch, c_first, bwd;        /* chunks c_first .. c_first + nch - 1 */
} ret_outer;

__global__ void __launch_bounds__(NT) k_ret_outer(ret_outer a)
{
    __shared__ tile_t sA, sB;
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
    const int bh = blockIdx.x / a.nch, c = a.c_first + blockIdx.x % a.nch;
    const int ntj = tiles(a.dv), x0 = (blockIdx.y / ntj) * TS, j0 = (blockIdx.y % ntj) * TS;
    const int t0 = c * a.Lc, L = min(a.Lc, a.T - t0);
    const float *pw = a.pw + (size_t)(bh % a.H) * (a.Lc + 1);
    const size_t row0 = (size_t)bh * a.T + t0;
    float acc[RPT] = {};
    for (int m0 = 0; m0 < L; m0 += TS) {
        const int nm = min(TS, L - m0);
        load_tile(sA, a.A + (row0 + m0) * a.dk + x0, a.dk, nm, a.dk - x0);
        for (int e = threadIdx.x; e < TS * TS; e += NT) {
            int r = e / TS, cc = e % TS, m = m0 + r;
            float v = 0.0f;
            if (r < nm && j0 + cc < a.dv) v = a.Bv[(row0 + m) * a.dv + j0 + cc] * (a.bwd ? pw[m + 1] : pw[L - 1 - m]);
            sB[r][cc] = v;
        }
        __syncthreads();
#pragma unroll 8
        for (int m = 0; m < TS; m++) {
            float b = sB[m][tx];
#pragma unroll
            for (int u = 0; u < RPT; u++) acc[u] += sA[m][ty + 8 * u] * b;
        }
        __syncthreads();
    }
    size_t kv = (size_t)a.dk * a.dv;
    float *dst = a.bwd ? a.slots + ((size_t)bh * a.nc + c - 1) * kv
                       : c < a.nc - 1 ? a.slots + ((size_t)bh * a.nc + c + 1) * kv : a.last + (size_t)bh * kv;
    const int j = j0 + tx;
    if (j < a.dv)
#pragma unroll
        for (int u = 0; u < RPT; u++) {
            int x = x0 + ty + 8 * u;
            if (x < a.dk) dst[(size_t)x * a.dv + j] = acc[u];
        }
}

/* Forward scan, one thread per (pair, element): slot 0 = 0, slot c = gamma^L slot (c-1) + U_(c-1) (U_(c-1)
 * found in slot c); the final state = gamma^(L_last) R_(nc-1) + U_last (found in last). */
__global__ void k_ret_scan_fwd(float *slots, float *last, const float *pw, int BH, int H, size_t kv, int T, int Lc,
                               int nc)
{
    size_t n = (size_t)BH * kv;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t bh = i / kv, e = i % kv;
        const float *p = pw + (bh % H) * (size_t)(Lc + 1);
        float *s = slots + bh * nc * kv + e;
        float R = 0.0f;
        s[0] = 0.0f;
        for (int c = 1; c < nc; c++) {
            R = p[Lc] * R + s[(size_t)c * kv];
            s[(size_t)c * kv] = R;
        }
        if (last) last[i] = p[T - (nc - 1) * Lc] * R + last[i];
    }
}

/* Backward scan: slot nc-1 = 0 (nothing follows the last chunk), slot c-1 = gamma^(L_c) slot c + W_c (W_c
 * found in slot c-1). */
__global__ void k_ret_scan_bwd(float *slots, const float *pw, int BH, int H, size_t kv, int T, int Lc, int nc)
{
    size_t n = (size_t)BH * kv;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t bh = i / kv, e = i % kv;
        const float *p = pw + (bh % H) * (size_t)(Lc + 1);
        float *s = slots + bh * nc * kv + e;
        float G = 0.0f;
        s[(size_t)(nc - 1) * kv] = 0.0f;
        for (int c = nc - 1; c >= 1; c--) {
            int L = c == nc - 1 ? T - (nc - 1) * Lc : Lc;
            G = p[L] * G + s[(size_t)(c - 1) * kv];
            s[(size_t)(c - 1) * kv] = G;
        }
    }
}

/* ==== chunkwise: the tile kernel ============================================================== */

/* out[own n][col] = sum over other tokens m of the chunk, m <= n (ANTI: m >= n), of
 *   (X_n . Y_m) gamma^|n-m| Z_m[col]
 * plus, for chunks cross_lo..cross_hi, w_n (X_n R'_c)[col] with R'_c the chunk's slot of R (rt: its
 * transpose) and w_n = gamma^(n+1) (ANTI: gamma^(L_c-1-n)). X, Y: (BH, T, xw); Z, out: (BH, T, zw);
 * R: (BH, nc, dk, dv), which is (xw, zw), or (zw, xw) read transposed. */
typedef struct ret_tile {
    const float *X, *Y, *Z, *R, *pw;
    float *out;
    int T, H, xw, zw, Lc, nc, qt;  /* qt: 32-row tiles per chunk */
    int rt, cross_lo, cross_hi;
} ret_tile;

template <bool ANTI> __global__ void __launch_bounds__(NT) k_ret_tile(ret_tile a)
{
    __shared__ tile_t sX, sY, sS; /* sY holds Y, then Z, then R' */
    __shared__ float sPw[2 * TS];
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
    const int per = a.nc * a.qt;
    const int bh = blockIdx.x / per, c = (blockIdx.x % per) / a.qt, o0 = (blockIdx.x % a.qt) * TS;
    const int t0 = c * a.Lc, L = min(a.Lc, a.T - t0);
    if (o0 >= L) return; /* the whole block: a tile past a short last chunk */
    const int on = min(TS, L - o0), c0 = blockIdx.y * TS, ncol = a.zw - c0;
    const float *pw = a.pw + (size_t)(bh % a.H) * (a.Lc + 1);
    const size_t row0 = (size_t)bh * a.T + t0;
    const float *X = a.X + (row0 + o0) * a.xw;
    float acc[RPT] = {};
    const int p_lo = ANTI ? o0 : 0, p_hi = ANTI ? L : o0 + 1;
    for (int p0 = p_lo; p0 < p_hi; p0 += TS) {
        const int pn = min(TS, L - p0);
        /* the decays of this tile pair: d = n - m (ANTI: m - n) in base .. base + 62 */
        const int base = (ANTI ? p0 - o0 : o0 - p0) - (TS - 1);
        if (threadIdx.x < 2 * TS - 1) {
            int d = base + threadIdx.x;
            sPw[threadIdx.x] = d >= 0 && d <= a.Lc ? pw[d] : 0.0f;
        }
        float s[RPT] = {};
        const float *Y = a.Y + (row0 + p0) * a.xw;
        for (int x0 = 0; x0 < a.xw; x0 += TS) {
            load_tile(sX, X + x0, a.xw, on, a.xw - x0);
            load_tile(sY, Y + x0, a.xw, pn, a.xw - x0);
            __syncthreads();
            rows_dot_rows(s, sX, sY);
            __syncthreads();
        }
#pragma unroll
        for (int u = 0; u < RPT; u++) {
            int ro = ty + 8 * u;
            sS[ro][tx] = s[u] * sPw[(ANTI ? tx - ro : ro - tx) + TS - 1];
        }
        load_tile(sY, a.Z + (row0 + p0) * a.zw + c0, a.zw, pn, ncol);
        __syncthreads();
        rows_dot_cols(acc, sS, sY);
        __syncthreads();
    }
    if (a.R && c >= a.cross_lo && c <= a.cross_hi) {
        const float *Rc = a.R + ((size_t)bh * a.nc + c) * a.xw * a.zw;
        float s2[RPT] = {};
        for (int x0 = 0; x0 < a.xw; x0 += TS) {
            load_tile(sX, X + x0, a.xw, on, a.xw - x0);
            if (a.rt) load_tile_t(sY, Rc + (size_t)c0 * a.xw + x0, a.xw, a.xw - x0, ncol);
            else load_tile(sY, Rc + (size_t)x0 * a.zw + c0, a.zw, a.xw - x0, ncol);
            __syncthreads();
            rows_dot_cols(s2, sX, sY);
            __syncthreads();
        }
#pragma unroll
        for (int u = 0; u < RPT; u++) {
            int n = o0 + ty + 8 * u;
            if (n < L) acc[u] += (ANTI ? pw[L - 1 - n] : pw[n + 1]) * s2[u];
        }
    }
    if (tx < ncol)
#pragma unroll
        for (int u = 0; u < RPT; u++) {
            int n = o0 + ty + 8 * u;
            if (n < L) a.out[(row0 + n) * a.zw + c0 + tx] = acc[u];
        }
}

static int tile_launch(bool anti, const ret_tile &t, int BH, const char *what)
{
    dim3 grid((unsigned)((size_t)BH * t.nc * t.qt), (unsigned)tiles(t.zw));
    if (anti) k_ret_tile<true><<<grid, NT>>>(t);
    else k_ret_tile<false><<<grid, NT>>>(t);
    return cuda_check(cudaGetLastError(), what);
}

static int chunk_len(int chunk, int T) { return chunk > 0 && chunk < T ? chunk : T; }

void cuda_retention_chunkwise_forward(float *o, float *states, float *state, const float *qr, const float *kr,
                                      const float *vh, const float *gamma, int B, int T, int H, int dk, int dv,
                                      int chunk, float *work)
{
    (void)work; /* the kernels' scratch is cuda_scratch's */
    if (B < 1 || T < 1 || H < 1 || dk < 1 || dv < 1) return;
    const int Lc = chunk_len(chunk, T), nc = (T + Lc - 1) / Lc, BH = B * H;
    const size_t kv = (size_t)dk * dv;
    float *pw, *rest;
    if (!ret_scratch("retention_chunkwise_forward scratch", gamma, H, Lc, states ? 0 : (size_t)BH * nc * kv, &pw,
                     &rest))
        return;
    float *st = states ? states : rest;
    ret_outer u = {kr, vh, pw, st, state, T, H, dk, dv, Lc, nc, nc - 1 + (state ? 1 : 0), 0, 0};
    if (u.nch > 0) {
        k_ret_outer<<<dim3((unsigned)((size_t)BH * u.nch), (unsigned)(tiles(dk) * tiles(dv))), NT>>>(u);
        if (CUDA_LAUNCHED("k_ret_outer (forward)") < 0) return;
    }
    k_ret_scan_fwd<<<cuda_blocks((size_t)BH * kv, 256), 256>>>(st, state, pw, BH, H, kv, T, Lc, nc);
    if (CUDA_LAUNCHED("k_ret_scan_fwd") < 0) return;
    ret_tile t = {qr, kr, vh, st, pw, o, T, H, dk, dv, Lc, nc, tiles(Lc), 0, 1, nc - 1};
    tile_launch(false, t, BH, "launch of k_ret_tile (forward)");
}

void cuda_retention_chunkwise_backward(float *dqr, float *dkr, float *dvh, const float *do_, const float *states,
                                       const float *qr, const float *kr, const float *vh, const float *gamma,
                                       int B, int T, int H, int dk, int dv, int chunk, float *work)
{
    (void)work;
    if (B < 1 || T < 1 || H < 1 || dk < 1 || dv < 1) return;
    const int Lc = chunk_len(chunk, T), nc = (T + Lc - 1) / Lc, BH = B * H;
    const size_t kv = (size_t)dk * dv;
    float *pw, *dst;
    if (!ret_scratch("retention_chunkwise_backward scratch", gamma, H, Lc, (size_t)BH * nc * kv, &pw, &dst)) return;
    /* dst[c]: the gradient of the state leaving chunk c */
    ret_outer u = {qr, do_, pw, dst, NULL, T, H, dk, dv, Lc, nc, nc - 1, 1, 1};
    if (u.nch > 0) {
        k_ret_outer<<<dim3((unsigned)((size_t)BH * u.nch), (unsigned)(tiles(dk) * tiles(dv))), NT>>>(u);
        if (CUDA_LAUNCHED("k_ret_outer (backward)") < 0) return;
    }
    k_ret_scan_bwd<<<cuda_blocks((size_t)BH * kv, 256), 256>>>(dst, pw, BH, H, kv, T, Lc, nc);
    if (CUDA_LAUNCHED("k_ret_scan_bwd") < 0) return;
    const int qt = tiles(Lc);
    ret_tile tq = {do_, vh, kr, states, pw, dqr, T, H, dv, dk, Lc, nc, qt, 1, 1, nc - 1};
    ret_tile tk = {vh, do_, qr, dst, pw, dkr, T, H, dv, dk, Lc, nc, qt, 1, 0, nc - 2};
    ret_tile tv = {kr, qr, do_, dst, pw, dvh, T, H, dk, dv, Lc, nc, qt, 0, 0, nc - 2};
    if (tile_launch(false, tq, BH, "launch of k_ret_tile (dq)") < 0) return;
    if (tile_launch(true, tk, BH, "launch of k_ret_tile (dk)") < 0) return;
    tile_launch(true, tv, BH, "launch of k_ret_tile (dv)");
}

/* ==== recurrent ================================================================================ */

/* Block (pair, 32 value columns): lane = column j, warp w = rows w + 8r (r < R) of S, in registers. */
template <int R>
__global__ void __launch_bounds__(NT) k_ret_rec_fwd(float *o, float *state, const float *qr, const float *kr,
                                                    const float *vh, const float *gam, int T, int H, int dk, int dv,
                                                    int ncg)
{
    __shared__ float part[2][8][32];
    const int tx = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int bh = blockIdx.x / ncg, j = (blockIdx.x % ncg) * 32 + tx;
    const bool jv = j < dv;
    const float g = gam[bh % H];
    float *st = state + (size_t)bh * dk * dv;
    const float *q = qr + (size_t)bh * T * dk, *k = kr + (size_t)bh * T * dk, *v = vh + (size_t)bh * T * dv;
    float S[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        int i = w + 8 * r;
        S[r] = i < dk && jv ? st[(size_t)i * dv + j] : 0.0f;
    }
    for (int t = 0; t < T; t++) {
        const float vj = jv ? v[(size_t)t * dv + j] : 0.0f;
        const float *qt = q + (size_t)t * dk, *kt = k + (size_t)t * dk;
        float p = 0.0f;
#pragma unroll
        for (int r = 0; r < R; r++) {
            int i = w + 8 * r;
            if (i < dk) {
                S[r] = g * S[r] + kt[i] * vj;
                p += qt[i] * S[r];
            }
        }
        part[t & 1][w][tx] = p;
        __syncthreads(); /* double buffered: token t + 2 writes this half after the next barrier */
        if (w == 0 && jv) {
            float sum = 0.0f;
#pragma unroll
            for (int u = 0; u < 8; u++) sum += part[t & 1][u][tx];
            o[((size_t)bh * T + t) * dv + j] = sum;
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        int i = w + 8 * r;
        if (i < dk && jv) st[(size_t)i * dv + j] = S[r];
    }
}

/* dq_part, dk_part: (ncg, BH, T, dk), each column block's sums over its columns (ncg = 1: dqr, dkr) */
template <int R>
__global__ void __launch_bounds__(NT) k_ret_rec_bwd(float *dq_part, float *dk_part, float *dvh, const float *do_,
                                                    const float *qr, const float *kr, const float *vh,
                                                    const float *gam, int BH, int T, int H, int dk, int dv, int ncg)
{
    __shared__ float part[2][8][32];
    const int tx = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int bh = blockIdx.x / ncg, cg = blockIdx.x % ncg, j = cg * 32 + tx;
    const bool jv = j < dv;
    const float g = gam[bh % H];
    const float *q = qr + (size_t)bh * T * dk, *k = kr + (size_t)bh * T * dk;
    const float *v = vh + (size_t)bh * T * dv, *d = do_ + (size_t)bh * T * dv;
    float *dqp = dq_part + ((size_t)cg * BH + bh) * T * dk, *dkp = dk_part + ((size_t)cg * BH + bh) * T * dk;
    float S[R];
#pragma unroll
    for (int r = 0; r < R; r++) S[r] = 0.0f;
    for (int t = 0; t < T; t++) { /* S_t forwards: dq_t[i] = sum_j S_t[i][j] do_t[j] */
        const float vj = jv ? v[(size_t)t * dv + j] : 0.0f, dj = jv ? d[(size_t)t * dv + j] : 0.0f;
        const float *kt = k + (size_t)t * dk;
#pragma unroll
        for (int r = 0; r < R; r++) {
            int i = w + 8 * r; /* the same for the whole warp: the shuffles see every lane */
            if (i < dk) {
                S[r] = g * S[r] + kt[i] * vj;
                float sum = warp_sum(S[r] * dj);
                if (tx == 0) dqp[(size_t)t * dk + i] = sum;
            }
        }
    }
    float G[R];
#pragma unroll
    for (int r = 0; r < R; r++) G[r] = 0.0f;
    for (int t = T - 1; t >= 0; t--) { /* G_t backwards: dk_t = G_t v_t, dv_t = k_t G_t */
        const float vj = jv ? v[(size_t)t * dv + j] : 0.0f, dj = jv ? d[(size_t)t * dv + j] : 0.0f;
        const float *qt = q + (size_t)t * dk, *kt = k + (size_t)t * dk;
        float p = 0.0f;
#pragma unroll
        for (int r = 0; r < R; r++) {
            int i = w + 8 * r;
            if (i < dk) {
                G[r] = g * G[r] + qt[i] * dj;
                float sum = warp_sum(G[r] * vj);
                if (tx == 0) dkp[(size_t)t * dk + i] = sum;
                p += kt[i] * G[r];
            }
        }
        part[t & 1][w][tx] = p;
        __syncthreads();
        if (w == 0 && jv) {
            float sum = 0.0f;
#pragma unroll
            for (int u = 0; u < 8; u++) sum += part[t & 1][u][tx];
            dvh[((size_t)bh * T + t) * dv + j] = sum;
        }
    }
}

/* out[i] = sum over blocks q < nparts of part[q*n + i], in order */
__global__ void k_ret_sum_parts(float *out, const float *part, int nparts, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int q = 0; q < nparts; q++) s += part[(size_t)q * n + i];
        out[i] = s;
    }
}

/* state rows per thread for dk rows over 8 warps: a power of two, 0 when over REC_MAX_R */
static int rec_rows(int dk)
{
    int r = 1;
    while (r * 8 < dk) r *= 2;
    return r <= REC_MAX_R ? r : 0;
}

#define REC_CASES(X) X(1) X(2) X(4) X(8) X(16) X(32) X(64)

void cuda_retention_recurrent_forward(float *o, float *state, const float *qr, const float *kr, const float *vh,
                                      const float *gamma, int B, int T, int H, int dk, int dv)
{
    if (B < 1 || T < 1 || H < 1 || dk < 1 || dv < 1) return;
    const int R = rec_rows(dk), ncg = tiles(dv), BH = B * H;
    if (!R) {
        pf_error("retention_recurrent_forward: dk = %d is over the cuda kernel's %d", dk, 8 * REC_MAX_R);
        cuda_fail("retention_recurrent_forward (dk over 512)", cudaErrorInvalidValue);
        return;
    }
    float *pw, *rest, *g = ret_scratch("retention_recurrent_forward scratch", gamma, H, -1, 0, &pw, &rest);
    if (!g) return;
    const unsigned grid = (unsigned)((size_t)BH * ncg);
    switch (R) {
#define X(n) case n: k_ret_rec_fwd<n><<<grid, NT>>>(o, state, qr, kr, vh, g, T, H, dk, dv, ncg); break;
        REC_CASES(X)
#undef X
    }
    CUDA_LAUNCHED("k_ret_rec_fwd");
}

void cuda_retention_recurrent_backward(float *dqr, float *dkr, float *dvh, const float *do_, const float *qr,
                                       const float *kr, const float *vh, const float *gamma, int B, int T, int H,
                                       int dk, int dv, float *work)
{
    (void)work;
    if (B < 1 || T < 1 || H < 1 || dk < 1 || dv < 1) return;
    const int R = rec_rows(dk), ncg = tiles(dv), BH = B * H;
    if (!R) {
        pf_error("retention_recurrent_backward: dk = %d is over the cuda kernel's %d", dk, 8 * REC_MAX_R);
        cuda_fail("retention_recurrent_backward (dk over 512)", cudaErrorInvalidValue);
        return;
    }
    const size_t n = (size_t)BH * T * dk;
    float *pw, *parts;
    float *g = ret_scratch("retention_recurrent_backward scratch", gamma, H, -1, ncg > 1 ? 2 * (size_t)ncg * n : 0,
                           &pw, &parts);
    if (!g) return;
    float *dqp = ncg > 1 ? parts : dqr, *dkp = ncg > 1 ? parts + (size_t)ncg * n : dkr;
    const unsigned grid = (unsigned)((size_t)BH * ncg);
    switch (R) {
#define X(n_) case n_: k_ret_rec_bwd<n_><<<grid, NT>>>(dqp, dkp, dvh, do_, qr, kr, vh, g, BH, T, H, dk, dv, ncg); break;
        REC_CASES(X)
#undef X
    }
    if (CUDA_LAUNCHED("k_ret_rec_bwd") < 0 || ncg == 1) return;
    k_ret_sum_parts<<<cuda_blocks(n, 256), 256>>>(dqr, dqp, ncg, n);
    if (CUDA_LAUNCHED("k_ret_sum_parts (dq)") < 0) return;
    k_ret_sum_parts<<<cuda_blocks(n, 256), 256>>>(dkr, dkp, ncg, n);
    CUDA_LAUNCHED("k_ret_sum_parts (dk)");
}

/* ==== group norm and swish gate ================================================================ */

static __device__ __forceinline__ float sigmoid_(float x) { return 1.0f / (1.0f + expf(-x)); }

/* one warp per (token r, head hd) = pair r*H + hd */
__global__ void k_ret_gn_fwd(float *hout, float *mean, float *rstd, const float *o, const float *g, int ldg,
                             const float *w, const float *bias, int B, int T, int H, int dv, float eps)
{
    const size_t pair = (size_t)blockIdx.x * 8 + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (pair >= (size_t)B * T * H) return;
    const size_t r = pair / H;
    const int hd = (int)(pair % H), V = H * dv;
    const size_t bb = r / T, t = r % T;
    const float *x = o + ((bb * H + hd) * T + t) * dv;
    double m = 0, var = 0;
    for (int j = lane; j < dv; j += 32) m += x[j];
    m = warp_sum_d(m) / dv;
    for (int j = lane; j < dv; j += 32) var += (x[j] - m) * (x[j] - m);
    var = warp_sum_d(var) / dv;
    const float s = (float)(1.0 / sqrt(var + eps)), mf = (float)m;
    if (lane == 0) {
        mean[pair] = mf;
        rstd[pair] = s;
    }
    for (int j = lane; j < dv; j += 32) {
        int c = hd * dv + j;
        float y = (x[j] - mf) * s * w[c] + bias[c], gv = g[r * ldg + c];
        hout[r * V + c] = gv * sigmoid_(gv) * y;
    }
}

__global__ void k_ret_gn_bwd(float *do_, float *dg, const float *dh, const float *o, const float *g, int ldg,
                             const float *w, const float *bias, const float *mean, const float *rstd, int B, int T,
                             int H, int dv)
{
    const size_t pair = (size_t)blockIdx.x * 8 + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (pair >= (size_t)B * T * H) return;
    const size_t r = pair / H;
    const int hd = (int)(pair % H), V = H * dv;
    const size_t bb = r / T, t = r % T, off = ((bb * H + hd) * T + t) * dv;
    const float *x = o + off;
    const float m = mean[pair], s = rstd[pair];
    double sum_g = 0, sum_gn = 0;
    for (int j = lane; j < dv; j += 32) {
        int c = hd * dv + j;
        float gv = g[r * ldg + c], sg = sigmoid_(gv), d = dh[r * V + c];
        float n = (x[j] - m) * s, y = n * w[c] + bias[c];
        dg[r * ldg + c] = d * y * sg * (1.0f + gv * (1.0f - sg));
        float dn = d * gv * sg * w[c];
        sum_g += dn;
        sum_gn += (double)dn * n;
    }
    const float mg = (float)(warp_sum_d(sum_g) / dv), mgn = (float)(warp_sum_d(sum_gn) / dv);
    for (int j = lane; j < dv; j += 32) {
        int c = hd * dv + j;
        float gv = g[r * ldg + c], d = dh[r * V + c];
        float n = (x[j] - m) * s, dn = d * gv * sigmoid_(gv) * w[c];
        do_[off + j] = s * (dn - mg - n * mgn);
    }
}

/* dw, db (V) += sums over the rows; a block owns 32 columns, 16 row groups summed in order */
__global__ void k_ret_gn_dw(float *dw, float *db, const float *dh, const float *o, const float *g, int ldg,
                            const float *mean, const float *rstd, int B, int T, int H, int dv)
{
    __shared__ double pw_[16][33], pb_[16][33];
    const int V = H * dv, c = blockIdx.x * 32 + threadIdx.x;
    const size_t rows = (size_t)B * T;
    double gw = 0, gb = 0;
    if (c < V) {
        const int hd = c / dv, j = c % dv;
        for (size_t r = threadIdx.y; r < rows; r += 16) {
            size_t bb = r / T, t = r % T;
            float x = o[((bb * H + hd) * T + t) * dv + j];
            float n = (x - mean[r * H + hd]) * rstd[r * H + hd];
            float gv = g[r * ldg + c], dy = dh[r * V + c] * gv * sigmoid_(gv);
            gw += (double)dy * n;
            gb += dy;
        }
    }
    pw_[threadIdx.y][threadIdx.x] = gw;
    pb_[threadIdx.y][threadIdx.x] = gb;
    __syncthreads();
    if (threadIdx.y == 0 && c < V) {
        double tw = 0, tb = 0;
        for (int y = 0; y < 16; y++) {
            tw += pw_[y][threadIdx.x];
            tb += pb_[y][threadIdx.x];
        }
        dw[c] += (float)tw;
        db[c] += (float)tb;
    }
}

void cuda_retention_norm_gate_forward(float *h, float *mean, float *rstd, const float *o, const float *g, int ldg,
                                      const float *w, const float *b, int B, int T, int H, int dv, float eps)
{
    size_t pairs = (size_t)B * T * H;
    if (pairs == 0 || dv < 1) return;
    k_ret_gn_fwd<<<(unsigned)((pairs + 7) / 8), 256>>>(h, mean, rstd, o, g, ldg, w, b, B, T, H, dv, eps);
    CUDA_LAUNCHED("k_ret_gn_fwd");
}

void cuda_retention_norm_gate_backward(float *do_, float *dg, float *dw, float *db, const float *dh, const float *o,
                                       const float *g, int ldg, const float *w, const float *b, const float *mean,
                                       const float *rstd, int B, int T, int H, int dv)
{
    size_t pairs = (size_t)B * T * H;
    if (pairs == 0 || dv < 1) return;
    k_ret_gn_bwd<<<(unsigned)((pairs + 7) / 8), 256>>>(do_, dg, dh, o, g, ldg, w, b, mean, rstd, B, T, H, dv);
    if (CUDA_LAUNCHED("k_ret_gn_bwd") < 0) return;
    k_ret_gn_dw<<<(unsigned)tiles(H * dv), dim3(32, 16)>>>(dw, db, dh, o, g, ldg, mean, rstd, B, T, H, dv);
    CUDA_LAUNCHED("k_ret_gn_dw");
}
