/* cuda backend: chunkwise (gated) linear attention, forward (also the one-token step) and backward, with
 * the semantics of kernels/cpu/linear_attention.c (see linattn_forward in kernels/kernels.h; that file's
 * opening comment derives the chunk formulas used here).
 *
 * Letters: B batch, T tokens, H heads, K key width, V value width, Vw = V + normalize (a column of ones
 * appended to v makes column V of the state the normaliser z), chunks of `chunk` tokens (NC of them, the
 * last may be shorter); bh = b*H + h. q, k, g are (B, T, H, K), v and out (B, T, H, V): token t of a pair
 * is at row b*T + t, head slot h. b_i (K) is the cumulative log-decay inside the chunk up to token i.
 *
 * The cpu walks each pair's chunks in order; here every chunk of every pair runs at once, in steps:
 *   0. k_la_cumsum: b for every token (one thread per (pair, chunk, key), the cpu's order of additions,
 *      so the exponents match bit for bit); ungated: skipped, every decay is 1;
 *   1. k_la_outer: per chunk, U_c = sum_s (k_s * exp(b_last - b_s)) vl_s^T (K, Vw), a block per
 *      (pair, chunk, 32 x 32 tile of U), into the slot of the state entering chunk c + 1;
 *   2. k_la_scan_fwd: S_(c+1) = diag(exp(b_last,c)) S_c + U_c from the initial state, in chunk order,
 *      one thread per (pair, state element); the final state goes back to `state`;
 *   3. k_la_tile (forward): the outputs, a block per (pair, chunk, 32 query rows, 32 value columns):
 *      n_i = S_c^T (q_i * exp(b_i)) + sum_{s<=i} A[i][s] vl_s, A[i][s] = sum_k q_i[k] k_s[k]
 *      exp(b_i[k] - b_s[k]); the normaliser (column V) is the row sums of A plus q_i exp(b_i) . z_c,
 *      computed by every column block alike, so the division needs no other block.
 * Backward (from a zero state): dn (the gradient of the numerators) per token; W_c = scale sum_i (q_i *
 * exp(b_i)) dn_i^T per chunk (k_la_outer) and the reverse scan dS_(c-1) = diag(exp(b_last,c)) dS_c + W_c
 * (k_la_scan_bwd) give the gradient of every chunk's end state; then dq, dk and dv are three independent
 * passes of the tile kernel (dq walks the chunk's tokens up to its rows, dk and dv from its rows on),
 * and dg is a reverse cumulative sum of q*dq - k*dk over the sequence (k_la_dg, in double as the cpu).
 *
 * The tile kernel: 256 threads, 8 warps x 32 lanes; thread (w, l) owns rows w, w+8, w+16, w+24 of
 * column l of a 32 x 32 tile. Scores between 32 own and 32 other tokens are summed over the inner width
 * in slices of 32 staged in shared memory (with the decays exp(b_later - b_earlier) inside the sum where
 * they weigh the inner index, or in the product with the third operand where they weigh the output
 * column), masked by selection (a masked pair's exponent may be positive and overflow), staged, and
 * multiplied into the thread's four outputs; the term through the chunk's state is a last slice loop.
 *
 * Determinism: no atomics; each output element is summed by one thread in an order fixed by the code.
 * Scratch (b, dn, the gradient states; the chunk states when the caller keeps none) is cuda_scratch's
 * slot LA_SLOT, used only within the call. */
#include <math.h>

#include "kernels/cuda/cuda.h"
#include "kernels/cuda/tiles.cuh"

enum { LA_SLOT = 3 };                     /* the cuda_scratch slot of these kernels */
enum { M_FWD = 0, M_DQ = 1, M_DK = 2, M_DV = 3 };

/* Rows row .. row + nr - 1 of head h of a (rows, H, w) tensor, columns x0 .. x0 + 31, into dst (zeros
 * past nr rows or w columns, except 1 at column `ones` when ones >= 0: the appended column of v). */
static __device__ __forceinline__ void load_rows(tile_t &dst, const float *p, int H, int h, int w, size_t row, int nr,
                                          int x0, int ones)
{
    const size_t ld = (size_t)H * w;
    for (int e = threadIdx.x; e < TS * TS; e += NT) {
        int r = e / TS, c = e % TS, x = x0 + c;
        float v = 0.0f;
        if (r < nr) v = x < w ? p[(row + r) * ld + (size_t)h * w + x] : x == ones ? 1.0f : 0.0f;
        dst[r][c] = v;
    }
}

/* ==== per-token preparation ===================================================================== */

/* bc = the cumulative log-decay inside each chunk, one thread per (b, chunk, h, key), in token order */
__global__ void k_la_cumsum(float *bc, const float *g, int B, int T, int H, int K, int chunk, int NC)
{
    size_t n = (size_t)B * NC * H * K;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int x = (int)(i % K), h = (int)(i / K % H), c = (int)(i / ((size_t)K * H) % NC), b = (int)(i / ((size_t)K * H * NC));
        int t0 = c * chunk, t1 = min(T, t0 + chunk);
        float s = 0.0f;
        for (int t = t0; t < t1; t++) {
            size_t o = (((size_t)b * T + t) * H + h) * K + x;
            s = (t > t0 ? s : 0.0f) + g[o];
            bc[o] = s;
        }
    }
}

/* dn (B, T, H, Vw) of the normalised output: dn[j] = do[j] / d (j < V), dn[V] = -(do . o) / d; a warp per
 * (token, head) */
__global__ void k_la_dn(float *dn, const float *dout, const float *out, const float *den, int rows, int H, int V)
{
    const size_t pair = (size_t)blockIdx.x * 8 + threadIdx.x / 32;
    const int lane = threadIdx.x & 31, Vw = V + 1;
    if (pair >= (size_t)rows * H) return;
    const float *d = dout + pair * V, *o = out + pair * V;
    const float dd = den[pair];
    float dot = 0.0f;
    for (int j = lane; j < V; j += 32) {
        dot += d[j] * o[j];
        dn[pair * Vw + j] = d[j] / dd;
    }
    dot = warp_sum(dot);
    if (lane == 0) dn[pair * Vw + V] = -dot / dd;
}

/* dg[t] = sum over t' >= t of q*dq - k*dk, per (b, h, key), in double from the last token back */
__global__ void k_la_dg(float *dg, const float *q, const float *dq, const float *k, const float *dk, int B, int T,
                        int H, int K)
{
    size_t n = (size_t)B * H * K;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t b = i / ((size_t)H * K), hx = i % ((size_t)H * K);
        double r = 0;
        for (int t = T - 1; t >= 0; t--) {
            size_t o = ((size_t)b * T + t) * H * K + hx;
            r += (double)q[o] * dq[o] - (double)k[o] * dk[o];
            dg[o] = (float)r;
        }
    }
}

/* ==== per-chunk outer products and the scans over chunks ========================================= */

/* out (K, Vw) of chunk c = sum over its tokens m of a_m[x] bv_m[j]:
 *   forward (bwd = 0): a = k * exp(b_last - b_m), bv = v with its column of ones; into the slot of chunk
 *     c + 1, or for the last chunk into `last`;
 *   backward (bwd = 1): a = scale * q * exp(b_m), bv = dn (width Vw); chunks c >= 1, into slot c - 1.
 * Block: (pair, chunk) x 32 x 32 tile; thread (w, l) owns rows w + 8u of column l. */
typedef struct la_outer {
    const float *A, *Bv, *bc;     /* bc NULL: ungated */
    float *slots;                 /* (BH, NC, K, Vw) */
    float *last;                  /* (BH, K, Vw) or NULL */
    int T, H, K, V, Vw, chunk, NC;
    int nch, c_first, bwd, ones;  /* ones: the appended column of bv (forward, normalised), else -1 */
    float scale;
} la_outer;

__global__ void __launch_bounds__(NT) k_la_outer(la_outer a)
{
    __shared__ tile_t sA, sB;
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
    const int bh = blockIdx.x / a.nch, c = a.c_first + blockIdx.x % a.nch, b = bh / a.H, h = bh % a.H;
    const int ntj = tiles(a.Vw), x0 = (blockIdx.y / ntj) * TS, j0 = (blockIdx.y % ntj) * TS;
    const int t0 = c * a.chunk, L = min(a.chunk, a.T - t0);
    const size_t row0 = (size_t)b * a.T + t0;
    const int bvw = a.bwd ? a.Vw : a.V; /* stored width of bv */
    float acc[RPT] = {};
    for (int m0 = 0; m0 < L; m0 += TS) {
        const int nm = min(TS, L - m0);
        for (int e = threadIdx.x; e < TS * TS; e += NT) {
            int r = e / TS, cc = e % TS, x = x0 + cc;
            float v = 0.0f;
            if (r < nm && x < a.K) {
                size_t o = ((row0 + m0 + r) * a.H + h) * a.K + x;
                v = a.A[o];
                if (a.bwd) {
                    v *= a.scale;
                    if (a.bc) v *= expf(a.bc[o]);
                } else if (a.bc) {
                    v *= expf(a.bc[((row0 + L - 1) * a.H + h) * a.K + x] - a.bc[o]);
                }
            }
            sA[r][cc] = v;
        }
        load_rows(sB, a.Bv, a.H, h, bvw, row0 + m0, nm, j0, a.ones);
        __syncthreads();
#pragma unroll 8
        for (int m = 0; m < TS; m++) {
            float bv = sB[m][tx];
#pragma unroll
            for (int u = 0; u < RPT; u++) acc[u] += sA[m][ty + 8 * u] * bv;
        }
        __syncthreads();
    }
    const size_t kv = (size_t)a.K * a.Vw;
    float *dst = a.bwd ? a.slots + ((size_t)bh * a.NC + c - 1) * kv
                       : c < a.NC - 1 ? a.slots + ((size_t)bh * a.NC + c + 1) * kv : a.last + (size_t)bh * kv;
    const int j = j0 + tx;
    if (j < a.Vw)
#pragma unroll
        for (int u = 0; u < RPT; u++) {
            int x = x0 + ty + 8 * u;
            if (x < a.K) dst[(size_t)x * a.Vw + j] = acc[u];
        }
}

/* the decay of chunk c's whole length for key x of pair (b, h): exp(b_last[x]), 1 ungated */
static __device__ __forceinline__ float chunk_decay(const float *bc, int b, int h, int x, int c, int T, int H, int K,
                                             int chunk)
{
    if (!bc) return 1.0f;
    int tl = min(T, (c + 1) * chunk) - 1;
    return expf(bc[(((size_t)b * T + tl) * H + h) * K + x]);
}

/* Forward scan, one thread per (pair, element (x, j)): slot c receives S_c (S_0 = the initial state or
 * zeros), S_(c+1) = decay_c S_c + U_c with U_c found in slot c + 1 (the last chunk's in `last`); the
 * final state is written to `state`. */
__global__ void k_la_scan_fwd(float *slots, float *state, const float *last, const float *bc, int B, int T, int H,
                              int K, int Vw, int chunk, int NC)
{
    const size_t kv = (size_t)K * Vw, n = (size_t)B * H * kv;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t bh = i / kv, e = i % kv;
        int b = (int)(bh / H), h = (int)(bh % H), x = (int)(e / Vw);
        float *s = slots + bh * NC * kv + e;
        float S = state ? state[i] : 0.0f;
        for (int c = 0; c < NC; c++) {
            float u = c < NC - 1 ? s[(size_t)(c + 1) * kv] : state ? last[i] : 0.0f;
            s[(size_t)c * kv] = S;
            if (c < NC - 1 || state) S = chunk_decay(bc, b, h, x, c, T, H, K, chunk) * S + u;
        }
        if (state) state[i] = S;
    }
}

/* Backward scan: slot c receives the gradient of the state at the end of chunk c: 0 for the last chunk,
 * dS_(c-1) = decay_c dS_c + W_c (W_c found in slot c - 1). */
__global__ void k_la_scan_bwd(float *slots, const float *bc, int B, int T, int H, int K, int Vw, int chunk, int NC)
{
    const size_t kv = (size_t)K * Vw, n = (size_t)B * H * kv;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t bh = i / kv, e = i % kv;
        int b = (int)(bh / H), h = (int)(bh % H), x = (int)(e / Vw);
        float *s = slots + bh * NC * kv + e;
        float G = 0.0f;
        s[(size_t)(NC - 1) * kv] = 0.0f;
        for (int c = NC - 1; c >= 1; c--) {
            G = chunk_decay(bc, b, h, x, c, T, H, K, chunk) * G + s[(size_t)(c - 1) * kv];
            s[(size_t)(c - 1) * kv] = G;
        }
    }
}

/* ==== the tile kernel ============================================================================ */

typedef struct la_tile {
    const float *q, *k, *v, *bc;  /* bc: (B, T, H, K) cumulative log-decay, NULL ungated */
    const float *dn;              /* backward: (B, T, H, Vw) */
    const float *st;              /* (BH, NC, K, Vw): forward, dq: the state entering each chunk; dk, dv: the
                                     gradient of the state leaving it */
    float *out, *den;             /* out: (B, T, H, V) forward and dv, (B, T, H, K) dq and dk */
    int T, H, K, V, Vw, chunk, NC, qt;
    int normalize, has_init;      /* forward: the state entering chunk 0 may be non-zero */
    float scale, eps;
} la_tile;

/* One block per (pair, chunk, 32 own rows, 32 output columns). With own token o and other token p of the
 * chunk (p <= o; ANTI: p >= o), the four passes are
 *   forward: X = q, Y = k, decay in the dot (exp(b_o - b_p) per key); Z = v; cross X' = q exp(b_o), R = S_c
 *   dq:      X = dn, Y = vl (v with its ones); Z = k, decay per output key exp(b_o - b_p); cross X = dn,
 *            R = S_c^T, times exp(b_o) per output key
 *   dk:      ANTI, X = vl, Y = dn; Z = q, decay per output key exp(b_p - b_o); cross X = vl, R = dS_c^T,
 *            times exp(b_last - b_o)
 *   dv:      ANTI, X = k, Y = q, decay in the dot exp(b_p - b_o); Z = dn; cross X' = k exp(b_last - b_o),
 *            R = dS_c
 * and the result is scale (acc + cross) (forward, then normalised; dq) or scale acc + cross (dk, dv). */
template <int MODE> __global__ void __launch_bounds__(NT) k_la_tile(la_tile a)
{
    constexpr bool ANTI = MODE == M_DK || MODE == M_DV;
    constexpr bool DOT_DECAY = MODE == M_FWD || MODE == M_DV;
    constexpr bool OUT_DECAY = MODE == M_DQ || MODE == M_DK;
    __shared__ tile_t sX, sY, sS, sBo, sBp; /* sY holds Y, then Z, then R' */
    __shared__ float sZc[TS];               /* forward, normalised: column V of S_c */
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
    const int per = a.NC * a.qt;
    const int bh = blockIdx.x / per, c = (blockIdx.x % per) / a.qt, o0 = (blockIdx.x % a.qt) * TS;
    const int b = bh / a.H, h = bh % a.H, H = a.H, K = a.K, V = a.V, Vw = a.Vw;
    const int t0 = c * a.chunk, L = min(a.chunk, a.T - t0);
    if (o0 >= L) return; /* the whole block: a tile past a short last chunk */
    const int on = min(TS, L - o0), c0 = blockIdx.y * TS;
    const size_t row0 = (size_t)b * a.T + t0;
    const bool gated = a.bc != NULL;
    const int ones = a.normalize ? V : -1;

    /* operands: X and Y (stored widths wx, wy; ones columns) share the inner width xw; Z (width wz) gives
     * the zw output columns */
    const float *X, *Y, *Z;
    int wx, wy, wz, xones = -1, yones = -1, xw, zw;
    if (MODE == M_FWD) X = a.q, wx = K, Y = a.k, wy = K, xw = K, Z = a.v, wz = V, zw = V;
    else if (MODE == M_DQ) X = a.dn, wx = Vw, Y = a.v, wy = V, yones = ones, xw = Vw, Z = a.k, wz = K, zw = K;
    else if (MODE == M_DK) X = a.v, wx = V, xones = ones, Y = a.dn, wy = Vw, xw = Vw, Z = a.q, wz = K, zw = K;
    else X = a.k, wx = K, Y = a.q, wy = K, xw = K, Z = a.dn, wz = Vw, zw = V;
    const int ncol = zw - c0;

    float bo[RPT] = {}; /* OUT_DECAY: b of the own rows at this thread's output column */
    if (OUT_DECAY && gated) {
        load_rows(sBo, a.bc, H, h, K, row0 + o0, on, c0, -1);
        __syncthreads();
#pragma unroll
        for (int u = 0; u < RPT; u++) bo[u] = sBo[ty + 8 * u][tx];
    }
    float acc[RPT] = {}, dacc[RPT] = {};
    const int p_lo = ANTI ? o0 : 0, p_hi = ANTI ? L : o0 + 1;
    for (int p0 = p_lo; p0 < p_hi; p0 += TS) {
        const int pn = min(TS, L - p0);
        float s[RPT] = {};
        for (int x0 = 0; x0 < xw; x0 += TS) {
            load_rows(sX, X, H, h, wx, row0 + o0, on, x0, xones);
            load_rows(sY, Y, H, h, wy, row0 + p0, pn, x0, yones);
            if (DOT_DECAY && gated) {
                load_rows(sBo, a.bc, H, h, K, row0 + o0, on, x0, -1);
                load_rows(sBp, a.bc, H, h, K, row0 + p0, pn, x0, -1);
            }
            __syncthreads();
            if (DOT_DECAY && gated) {
#pragma unroll 4
                for (int x = 0; x < TS; x++) {
                    float y = sY[tx][x], bp = sBp[tx][x];
#pragma unroll
                    for (int u = 0; u < RPT; u++) {
                        float bov = sBo[ty + 8 * u][x];
                        s[u] += sX[ty + 8 * u][x] * y * expf(ANTI ? bp - bov : bov - bp);
                    }
                }
            } else {
                rows_dot_rows(s, sX, sY);
            }
            __syncthreads();
        }
#pragma unroll
        for (int u = 0; u < RPT; u++) {
            int o = o0 + ty + 8 * u, p = p0 + tx;
            bool ok = o < L && p < L && (ANTI ? p >= o : p <= o);
            sS[ty + 8 * u][tx] = ok ? s[u] : 0.0f;
        }
        load_rows(sY, Z, H, h, wz, row0 + p0, pn, c0, -1);
        if (OUT_DECAY && gated) load_rows(sBp, a.bc, H, h, K, row0 + p0, pn, c0, -1);
        __syncthreads();
        if (OUT_DECAY && gated) {
#pragma unroll 4
            for (int p = 0; p < TS; p++) {
                float z = sY[p][tx], bp = sBp[p][tx];
#pragma unroll
                for (int u = 0; u < RPT; u++) {
                    int o = o0 + ty + 8 * u;
                    bool ok = p0 + p < L && (ANTI ? p0 + p >= o : p0 + p <= o);
                    float e = expf(ANTI ? bp - bo[u] : bo[u] - bp);
                    acc[u] += ok ? sS[ty + 8 * u][p] * z * e : 0.0f;
                }
            }
        } else {
#pragma unroll 8
            for (int p = 0; p < TS; p++) {
                float z = sY[p][tx];
#pragma unroll
                for (int u = 0; u < RPT; u++) {
                    float sv = sS[ty + 8 * u][p];
                    acc[u] += sv * z;
                    if (MODE == M_FWD) dacc[u] += sv;
                }
            }
        }
        __syncthreads();
    }

    /* through the chunk's state */
    const bool cross = MODE == M_FWD ? c > 0 || a.has_init : MODE == M_DQ ? true : c < a.NC - 1;
    float s2[RPT] = {}, z2[RPT] = {};
    if (cross) {
        const float *Rc = a.st + ((size_t)bh * a.NC + c) * K * Vw;
        const size_t last = (row0 + L - 1) * H + h; /* the chunk's last token, head h */
        for (int x0 = 0; x0 < xw; x0 += TS) {
            if (MODE == M_FWD || MODE == M_DV) {
                /* X' = q exp(b_o) (forward) or k exp(b_last - b_o) (dv) */
                for (int e = threadIdx.x; e < TS * TS; e += NT) {
                    int r = e / TS, cc = e % TS, x = x0 + cc;
                    float v = 0.0f;
                    if (r < on && x < K) {
                        size_t off = ((row0 + o0 + r) * H + h) * K + x;
                        v = X[off];
                        if (gated) v *= expf(MODE == M_FWD ? a.bc[off] : a.bc[last * K + x] - a.bc[off]);
                    }
                    sX[r][cc] = v;
                }
                load_tile(sY, Rc + (size_t)x0 * Vw + c0, Vw, K - x0, ncol);
                if (MODE == M_FWD && a.normalize && threadIdx.x < TS)
                    sZc[threadIdx.x] = x0 + threadIdx.x < K ? Rc[(size_t)(x0 + threadIdx.x) * Vw + V] : 0.0f;
            } else {
                load_rows(sX, X, H, h, wx, row0 + o0, on, x0, xones);
                load_tile_t(sY, Rc + (size_t)c0 * Vw + x0, Vw, Vw - x0, ncol);
            }
            __syncthreads();
            rows_dot_cols(s2, sX, sY);
            if (MODE == M_FWD && a.normalize) {
#pragma unroll 8
                for (int x = 0; x < TS; x++) {
                    float r = sZc[x];
#pragma unroll
                    for (int u = 0; u < RPT; u++) z2[u] += sX[ty + 8 * u][x] * r;
                }
            }
            __syncthreads();
        }
    }

    float blc = 0.0f; /* dk: b_last at this thread's output key */
    if (MODE == M_DK && gated && c0 + tx < K) blc = a.bc[((row0 + L - 1) * H + h) * K + c0 + tx];
#pragma unroll
    for (int u = 0; u < RPT; u++) {
        int o = o0 + ty + 8 * u;
        if (o >= L) continue;
        size_t r = (row0 + o) * H + h;
        float res;
        if (MODE == M_FWD) {
            float num = acc[u] + s2[u];
            if (a.normalize) {
                float d = a.scale * (dacc[u] + z2[u]) + a.eps;
                if (a.den && blockIdx.y == 0 && tx == 0) a.den[r] = d;
                res = a.scale * num / d;
            } else {
                res = a.scale * num;
            }
        } else if (MODE == M_DQ) {
            res = a.scale * (acc[u] + (gated ? expf(bo[u]) : 1.0f) * s2[u]);
        } else if (MODE == M_DK) {
            res = a.scale * acc[u] + (gated ? expf(blc - bo[u]) : 1.0f) * s2[u];
        } else {
            res = a.scale * acc[u] + s2[u];
        }
        if (tx < ncol) a.out[r * zw + c0 + tx] = res;
    }
}

template <int MODE> static int tile_launch(const la_tile &t, int BH, int zw, const char *what)
{
    dim3 grid((unsigned)((size_t)BH * t.NC * t.qt), (unsigned)tiles(zw));
    k_la_tile<MODE><<<grid, NT>>>(t);
    return cuda_check_now(cudaGetLastError(), what);
}

static int outer_launch(const la_outer &u, int BH, const char *what)
{
    if (u.nch < 1) return 0;
    k_la_outer<<<dim3((unsigned)((size_t)BH * u.nch), (unsigned)(tiles(u.K) * tiles(u.Vw))), NT>>>(u);
    return cuda_check_now(cudaGetLastError(), what);
}

static int cumsum_launch(float *bc, const float *g, int B, int T, int H, int K, int chunk, int NC)
{
    size_t n = (size_t)B * NC * H * K;
    k_la_cumsum<<<cuda_blocks(n, 256), 256>>>(bc, g, B, T, H, K, chunk, NC);
    return CUDA_LAUNCHED_NOW("k_la_cumsum");
}

int cuda_linattn_forward(float *out, float *chunk_states, float *den, float *state, const float *q, const float *k,
                         const float *v, const float *g, int B, int T, int H, int K, int V, int chunk, float scale,
                         int normalize, float eps)
{
    if (B < 1 || T < 1 || H < 1 || K < 1 || V < 1) return 0;
    if (chunk < 1) return pf_error("linattn_forward: chunk %d (at least 1)", chunk);
    const int Vw = V + (normalize ? 1 : 0), NC = (T + chunk - 1) / chunk, Lc = chunk < T ? chunk : T, BH = B * H;
    const size_t kv = (size_t)K * Vw, nb = g ? (size_t)B * T * H * K : 0, nl = state ? (size_t)BH * kv : 0;
    const size_t ns = chunk_states ? 0 : (size_t)BH * NC * kv;
    float *scr = NULL;
    if (nb + nl + ns) {
        scr = (float *)cuda_scratch(LA_SLOT, (nb + nl + ns) * sizeof(float));
        if (!scr) return pf_error_prefix("linattn_forward: ");
    }
    float *bc = g ? scr : NULL, *last = state ? scr + nb : NULL, *st = chunk_states ? chunk_states : scr + nb + nl;
    if (g) PF_TRY(cumsum_launch(bc, g, B, T, H, K, chunk, NC));
    la_outer u = {k, v, bc, st, last, T, H, K, V, Vw, chunk, NC, NC - 1 + (state ? 1 : 0), 0, 0, normalize ? V : -1, 1.0f};
    PF_TRY(outer_launch(u, BH, "launch of k_la_outer (forward)"));
    k_la_scan_fwd<<<cuda_blocks((size_t)BH * kv, 256), 256>>>(st, state, last, bc, B, T, H, K, Vw, chunk, NC);
    PF_TRY(CUDA_LAUNCHED_NOW("k_la_scan_fwd"));
    la_tile t = {q, k, v, bc, NULL, st, out, den, T, H, K, V, Vw, chunk, NC, tiles(Lc), normalize, state != NULL,
                 scale, eps};
    return tile_launch<M_FWD>(t, BH, V, "launch of k_la_tile (forward)");
}

int cuda_linattn_backward(float *dq, float *dk, float *dv, float *dg, const float *dout, const float *out,
                          const float *chunk_states, const float *den, const float *q, const float *k, const float *v,
                          const float *g, int B, int T, int H, int K, int V, int chunk, float scale, int normalize)
{
    if (B < 1 || T < 1 || H < 1 || K < 1 || V < 1) return 0;
    if (chunk < 1) return pf_error("linattn_backward: chunk %d (at least 1)", chunk);
    const int Vw = V + (normalize ? 1 : 0), NC = (T + chunk - 1) / chunk, Lc = chunk < T ? chunk : T, BH = B * H;
    const size_t kv = (size_t)K * Vw, rows = (size_t)B * T, nb = g ? rows * H * K : 0;
    const size_t nd = normalize ? rows * H * Vw : 0, ns = (size_t)BH * NC * kv;
    float *scr = (float *)cuda_scratch(LA_SLOT, (nb + nd + ns) * sizeof(float));
    if (!scr) return pf_error_prefix("linattn_backward: ");
    float *bc = g ? scr : NULL, *dst = scr + nb + nd;
    const float *dn = dout;
    if (g) PF_TRY(cumsum_launch(bc, g, B, T, H, K, chunk, NC));
    if (normalize) {
        k_la_dn<<<(unsigned)((rows * H + 7) / 8), 256>>>(scr + nb, dout, out, den, (int)rows, H, V);
        PF_TRY(CUDA_LAUNCHED_NOW("k_la_dn"));
        dn = scr + nb;
    }
    la_outer u = {q, dn, bc, dst, NULL, T, H, K, V, Vw, chunk, NC, NC - 1, 1, 1, -1, scale};
    PF_TRY(outer_launch(u, BH, "launch of k_la_outer (backward)"));
    k_la_scan_bwd<<<cuda_blocks((size_t)BH * kv, 256), 256>>>(dst, bc, B, T, H, K, Vw, chunk, NC);
    PF_TRY(CUDA_LAUNCHED_NOW("k_la_scan_bwd"));
    const int qt = tiles(Lc);
    la_tile tq = {q, k, v, bc, dn, chunk_states, dq, NULL, T, H, K, V, Vw, chunk, NC, qt, normalize, 0, scale, 0.0f};
    la_tile tk = tq, tv = tq;
    tk.st = dst, tk.out = dk;
    tv.st = dst, tv.out = dv;
    PF_TRY(tile_launch<M_DQ>(tq, BH, K, "launch of k_la_tile (dq)"));
    PF_TRY(tile_launch<M_DK>(tk, BH, K, "launch of k_la_tile (dk)"));
    PF_TRY(tile_launch<M_DV>(tv, BH, V, "launch of k_la_tile (dv)"));
    if (g && dg) {
        k_la_dg<<<cuda_blocks((size_t)B * H * K, 128), 128>>>(dg, q, dq, k, dk, B, T, H, K);
        PF_TRY(CUDA_LAUNCHED_NOW("k_la_dg"));
    }
    return 0;
}
