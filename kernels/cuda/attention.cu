/* cuda backend: rotary embedding, causal (optionally sliding-window) attention with grouped KV heads
 * tiled with an online softmax (FlashAttention), its FlashAttention-2 style backward, and the
 * one-token step. Semantics are those of kernels/cpu/attention.c; see kernels/kernels.h.
 *
 * B batch, T tokens, Hq query heads, Hkv kv heads (G = Hq / Hkv query heads share kv head h / G),
 * D head dim. q, k, v are read at row stride `stride` (token (b, t) of head h at
 * q + (b*T + t)*stride + h*D). Query i sees key j iff j <= i and (window == 0 or i - j < window).
 *
 * Tiles. The layer's tile (1..1024 tokens) is the unit of the skip decision, as on the cpu: for a
 * (q tile, k tile) pair the differences i - j fill one range [dmin, dmax]; the tile is skipped when
 * none is visible, full when all are, partial otherwise (tile_class below, the cpu's function). The
 * map and the counts are therefore the cpu's byte for byte (the map is written by a small kernel, the
 * counts are tallied on the host from the same function). A block of the forward handles up to
 * BQ = 64 query rows of one q tile and walks the keys of that tile's non-skipped k tiles, which form
 * one contiguous range, in chunks of BK keys staged in shared memory; chunks that lie wholly outside
 * the block's own rows' visible band are not loaded (they would add nothing), and elements of the
 * remaining chunks are masked one by one.
 *
 * Threads. Each query row (each key row in the dk/dv kernel) is owned by R consecutive threads that
 * hold DPT = DMAX / R of its dims in registers (float4 groups interleaved across the R threads, so a
 * warp's shared-memory reads are conflict-free broadcasts); dot products finish with R-wide shuffles.
 * DMAX is the smallest of 16, 32, 64, 128, 256 that holds D (padding is zero and never written).
 *
 * Backward, deterministic with no atomics: D_i = dO_i . O_i first; then one kernel owns dq (a block
 * per query sub-block, keys walked as in the forward) and another owns dk, dv (a block per key
 * sub-block of one kv head, walking the G query heads that share it and their visible queries in a
 * fixed order), so every output element is summed by one thread in an order fixed by the code. P is
 * recomputed from q, k and lse in both. */
#include <math.h>
#include <stdlib.h>

#include "kernels/cuda/cuda.h"

#define MAX_TILE 1024
enum { BQ = 64 };

/* ---- tiles (the cpu's classification) ---------------------------------------------------------- */

__host__ __device__ static inline int tile_class(int i0, int i1, int j0, int j1, int window)
{
    int dmin = i0 - (j1 - 1), dmax = (i1 - 1) - j0;
    if (dmax < 0 || (window > 0 && dmin >= window)) return PF_TILE_SKIPPED;
    if (dmin >= 0 && (window == 0 || dmax < window)) return PF_TILE_FULL;
    return PF_TILE_PARTIAL;
}

__host__ __device__ static inline int tile_end(int t0, int tile, int T) { return t0 + tile < T ? t0 + tile : T; }

/* The keys of q tile qt's non-skipped k tiles: [*j0, *j1) (contiguous: the visible k tiles of a q
 * tile run from the first one inside the window to the diagonal). */
__device__ static inline void tile_key_range(int qt, int tile, int T, int window, int *j0, int *j1)
{
    int i0 = qt * tile, i1 = tile_end(i0, tile, T), kt = 0;
    if (window > 0) {
        kt = (i0 - window + 1) / tile;
        if (kt < 0) kt = 0;
        while (kt > 0 && tile_class(i0, i1, (kt - 1) * tile, tile_end((kt - 1) * tile, tile, T), window) != PF_TILE_SKIPPED) kt--;
        while (kt < qt && tile_class(i0, i1, kt * tile, tile_end(kt * tile, tile, T), window) == PF_TILE_SKIPPED) kt++;
    }
    *j0 = kt * tile;
    *j1 = i1;
}

__device__ static inline bool visible(int i, int j, int window)
{
    return j <= i && (window == 0 || i - j < window);
}

__global__ void k_tile_map(uint8_t *map, int nt, int tile, int T, int window)
{
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= nt * nt) return;
    int qt = idx / nt, kt = idx % nt;
    map[idx] = (uint8_t)tile_class(qt * tile, tile_end(qt * tile, tile, T), kt * tile,
                                   tile_end(kt * tile, tile, T), window);
}

static int check_args(const char *what, int T, int Hq, int Hkv, int D, int tile)
{
    if (tile < 1 || tile > MAX_TILE)
        return pf_error("%s: tile %d is not supported (1..%d)", what, tile, MAX_TILE);
    if (T < 1 || D < 1 || Hkv < 1 || Hq < Hkv || Hq % Hkv != 0)
        return pf_error("%s: bad shape T=%d Hq=%d Hkv=%d D=%d", what, T, Hq, Hkv, D);
    if (D > PF_CUDA_ATTN_MAX_D)
        return pf_error("%s: head dim %d is not supported on cuda (at most %d)", what, D, PF_CUDA_ATTN_MAX_D);
    return 0;
}

/* ---- register rows -------------------------------------------------------------------------------- */

/* Thread rr of a row group owns dims 4*(m*R + rr) + e, m < DPT/4, e < 4. */
template <int R, int DPT> struct Row {
    float x[DPT];
    __device__ void load(const float *src, int rr, int D)
    {
#pragma unroll
        for (int m = 0; m < DPT / 4; m++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int d = 4 * (m * R + rr) + e;
                x[4 * m + e] = d < D ? src[d] : 0.0f;
            }
    }
    __device__ void store(float *dst, int rr, int D, float mul) const
    {
#pragma unroll
        for (int m = 0; m < DPT / 4; m++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int d = 4 * (m * R + rr) + e;
                if (d < D) dst[d] = x[4 * m + e] * mul;
            }
    }
    __device__ void zero()
    {
#pragma unroll
        for (int i = 0; i < DPT; i++) x[i] = 0.0f;
    }
    /* partial dot with a shared-memory row of DMAX floats */
    __device__ float dot(const float *srow, int rr) const
    {
        float s = 0.0f;
#pragma unroll
        for (int m = 0; m < DPT / 4; m++) {
            float4 k = reinterpret_cast<const float4 *>(srow)[m * R + rr];
            s += x[4 * m] * k.x + x[4 * m + 1] * k.y + x[4 * m + 2] * k.z + x[4 * m + 3] * k.w;
        }
        return s;
    }
    __device__ void axpy(const float *srow, int rr, float a)
    {
#pragma unroll
        for (int m = 0; m < DPT / 4; m++) {
            float4 k = reinterpret_cast<const float4 *>(srow)[m * R + rr];
            x[4 * m] += a * k.x;
            x[4 * m + 1] += a * k.y;
            x[4 * m + 2] += a * k.z;
            x[4 * m + 3] += a * k.w;
        }
    }
    __device__ void scale(float a)
    {
#pragma unroll
        for (int i = 0; i < DPT; i++) x[i] *= a;
    }
};

template <int R> __device__ __forceinline__ float group_sum(float v)
{
#pragma unroll
    for (int o = R / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, R);
    return v;
}

/* Stage rows [r0, r0 + n) of one head (at src + row*stride) into s (n_max, DMAX), zero-padded. */
template <int DMAX>
__device__ static inline void stage(float *s, const float *src, int stride, int r0, int n, int n_max, int D,
                                    int T)
{
    for (int idx = threadIdx.x; idx < n_max * DMAX; idx += blockDim.x) {
        int r = idx / DMAX, d = idx % DMAX;
        s[idx] = (r < n && r0 + r < T && d < D) ? src[(size_t)(r0 + r) * stride + d] : 0.0f;
    }
}

/* ---- forward -------------------------------------------------------------------------------------- */

template <int R, int DPT, int BK>
__global__ void __launch_bounds__(BQ *R) k_attn_forward(float *out, float *lse, const float *q, const float *k,
                                                         const float *v, int stride, int T, int Hq, int G,
                                                         int D, int window, int tile, int subs, float scale)
{
    constexpr int DMAX = R * DPT;
    __shared__ __align__(16) float Ks[BK * DMAX];
    __shared__ __align__(16) float Vs[BK * DMAX];
    int qt = blockIdx.x / subs, sub = blockIdx.x % subs, h = blockIdx.y, b = blockIdx.z;
    int r0 = qt * tile + sub * BQ;
    int r1 = min(min(r0 + BQ, qt * tile + tile), T);
    if (r0 >= r1) return;
    int row = threadIdx.x / R, rr = threadIdx.x % R, i = r0 + row;
    bool active = i < r1;
    int hk = h / G;
    const float *qb = q + (size_t)b * T * stride + (size_t)h * D;
    const float *kb = k + (size_t)b * T * stride + (size_t)hk * D;
    const float *vb = v + (size_t)b * T * stride + (size_t)hk * D;

    int j0, j1;
    tile_key_range(qt, tile, T, window, &j0, &j1);
    if (window > 0 && j0 < r0 - window + 1) j0 = r0 - window + 1;
    if (j1 > r1) j1 = r1;

    Row<R, DPT> qi, acc;
    qi.load(qb + (size_t)(active ? i : r0) * stride, rr, D);
    acc.zero();
    float m = -INFINITY, l = 0.0f;

    for (int c0 = j0; c0 < j1; c0 += BK) {
        int n = min(BK, j1 - c0);
        __syncthreads();
        stage<DMAX>(Ks, kb, stride, c0, n, BK, D, T);
        stage<DMAX>(Vs, vb, stride, c0, n, BK, D, T);
        __syncthreads();
        float s[BK];
        float cmax = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < BK; jj++) {
            float d = group_sum<R>(qi.dot(Ks + jj * DMAX, rr)) * scale;
            bool vis = active && jj < n && visible(i, c0 + jj, window);
            s[jj] = vis ? d : -INFINITY;
            cmax = fmaxf(cmax, s[jj]);
        }
        float mnew = fmaxf(m, cmax);
        if (mnew == -INFINITY) continue; /* nothing visible to this row yet */
        float corr = expf(m - mnew);
        acc.scale(corr);
        l *= corr;
#pragma unroll
        for (int jj = 0; jj < BK; jj++) {
            float p = expf(s[jj] - mnew);
            l += p;
            acc.axpy(Vs + jj * DMAX, rr, p);
        }
        m = mnew;
    }
    if (!active) return;
    /* every query sees at least itself, so l > 0 */
    acc.store(out + (((size_t)b * T + i) * Hq + h) * D, rr, D, 1.0f / l);
    if (rr == 0) lse[((size_t)b * Hq + h) * T + i] = m + logf(l);
}

/* ---- backward ------------------------------------------------------------------------------------- */

/* Dsum (B, Hq, T) = rowsum(dout o out) ; one warp per row */
__global__ void k_attn_bwd_dsum(float *Dsum, const float *dout, const float *out, int B, int T, int Hq, int D)
{
    long row = blockIdx.x * 8L + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= (long)B * T * Hq) return; /* whole warps leave together */
    const float *a = dout + row * D, *o = out + row * D;
    float s = 0.0f;
    for (int d = lane; d < D; d += 32) s += a[d] * o[d];
    for (int w = 16; w > 0; w >>= 1) s += __shfl_xor_sync(0xffffffffu, s, w);
    if (lane == 0) {
        int h = (int)(row % Hq), t = (int)(row / Hq % T), b = (int)(row / Hq / T);
        Dsum[((size_t)b * Hq + h) * T + t] = s;
    }
}

/* dq_i = scale sum_j P_ij (dO_i . V_j - D_i) K_j ; blocks as in the forward */
template <int R, int DPT, int BK>
__global__ void __launch_bounds__(BQ *R) k_attn_bwd_dq(float *dq, const float *dout, const float *lse,
                                                        const float *Dsum, const float *q, const float *k,
                                                        const float *v, int stride, int T, int Hq, int G,
                                                        int D, int window, int tile, int subs, float scale)
{
    constexpr int DMAX = R * DPT;
    __shared__ __align__(16) float Ks[BK * DMAX];
    __shared__ __align__(16) float Vs[BK * DMAX];
    int qt = blockIdx.x / subs, sub = blockIdx.x % subs, h = blockIdx.y, b = blockIdx.z;
    int r0 = qt * tile + sub * BQ;
    int r1 = min(min(r0 + BQ, qt * tile + tile), T);
    if (r0 >= r1) return;
    int row = threadIdx.x / R, rr = threadIdx.x % R, i = r0 + row;
    bool active = i < r1;
    int ic = active ? i : r0, hk = h / G;
    const float *kb = k + (size_t)b * T * stride + (size_t)hk * D;
    const float *vb = v + (size_t)b * T * stride + (size_t)hk * D;

    int j0, j1;
    tile_key_range(qt, tile, T, window, &j0, &j1);
    if (window > 0 && j0 < r0 - window + 1) j0 = r0 - window + 1;
    if (j1 > r1) j1 = r1;

    Row<R, DPT> qi, doi, acc;
    qi.load(q + ((size_t)b * T + ic) * stride + (size_t)h * D, rr, D);
    doi.load(dout + (((size_t)b * T + ic) * Hq + h) * D, rr, D);
    acc.zero();
    float Li = lse[((size_t)b * Hq + h) * T + ic], Di = Dsum[((size_t)b * Hq + h) * T + ic];

    for (int c0 = j0; c0 < j1; c0 += BK) {
        int n = min(BK, j1 - c0);
        __syncthreads();
        stage<DMAX>(Ks, kb, stride, c0, n, BK, D, T);
        stage<DMAX>(Vs, vb, stride, c0, n, BK, D, T);
        __syncthreads();
#pragma unroll 4
        for (int jj = 0; jj < BK; jj++) {
            float s = group_sum<R>(qi.dot(Ks + jj * DMAX, rr)) * scale;
            float dp = group_sum<R>(doi.dot(Vs + jj * DMAX, rr));
            bool vis = active && jj < n && visible(i, c0 + jj, window);
            float p = vis ? expf(s - Li) : 0.0f;
            acc.axpy(Ks + jj * DMAX, rr, p * (dp - Di) * scale);
        }
    }
    if (active) acc.store(dq + ((size_t)b * T + i) * stride + (size_t)h * D, rr, D, 1.0f);
}

/* dv_j = sum_{g, i} P_ij dO_i ; dk_j = scale sum_{g, i} P_ij (dO_i . V_j - D_i) Q_i.
 * A block owns up to BQ keys of one k tile of one (batch, kv head); it walks the G query heads in
 * order and, for each, the queries that can see its keys, in chunks of BK staged in shared memory. */
template <int R, int DPT, int BK>
__global__ void __launch_bounds__(BQ *R) k_attn_bwd_dkdv(float *dk, float *dv, const float *dout,
                                                          const float *lse, const float *Dsum, const float *q,
                                                          const float *k, const float *v, int stride, int T,
                                                          int Hq, int G, int D, int window, int tile, int subs,
                                                          float scale)
{
    constexpr int DMAX = R * DPT;
    __shared__ __align__(16) float Qs[BK * DMAX];
    __shared__ __align__(16) float dOs[BK * DMAX];
    __shared__ float Ls[BK], Ds[BK];
    int kt = blockIdx.x / subs, sub = blockIdx.x % subs, hk = blockIdx.y, b = blockIdx.z;
    int c0k = kt * tile + sub * BQ;
    int c1k = min(min(c0k + BQ, kt * tile + tile), T);
    if (c0k >= c1k) return;
    int row = threadIdx.x / R, rr = threadIdx.x % R, j = c0k + row;
    bool active = j < c1k;
    int jc = active ? j : c0k;

    /* queries that see any of keys [c0k, c1k): i in [c0k, c1k - 1 + window) */
    int i0 = c0k, i1 = T;
    if (window > 0 && c1k - 1 + window < i1) i1 = c1k - 1 + window;

    Row<R, DPT> kj, vj, dkj, dvj;
    kj.load(k + ((size_t)b * T + jc) * stride + (size_t)hk * D, rr, D);
    vj.load(v + ((size_t)b * T + jc) * stride + (size_t)hk * D, rr, D);
    dkj.zero();
    dvj.zero();

    for (int g = 0; g < G; g++) {
        int h = hk * G + g;
        const float *qb = q + (size_t)b * T * stride + (size_t)h * D;
        const float *Lb = lse + ((size_t)b * Hq + h) * T, *Db = Dsum + ((size_t)b * Hq + h) * T;
        for (int c0 = i0; c0 < i1; c0 += BK) {
            int n = min(BK, i1 - c0);
            __syncthreads();
            stage<DMAX>(Qs, qb, stride, c0, n, BK, D, T);
            /* dout is contiguous (B, T, Hq, D): its row stride is Hq*D */
            stage<DMAX>(dOs, dout + ((size_t)b * T * Hq + h) * D, Hq * D, c0, n, BK, D, T);
            for (int t = threadIdx.x; t < BK; t += blockDim.x) {
                Ls[t] = t < n ? Lb[c0 + t] : 0.0f;
                Ds[t] = t < n ? Db[c0 + t] : 0.0f;
            }
            __syncthreads();
#pragma unroll 4
            for (int ii = 0; ii < BK; ii++) {
                float s = group_sum<R>(kj.dot(Qs + ii * DMAX, rr)) * scale;
                float dp = group_sum<R>(vj.dot(dOs + ii * DMAX, rr));
                bool vis = active && ii < n && visible(c0 + ii, j, window);
                float p = vis ? expf(s - Ls[ii]) : 0.0f;
                dvj.axpy(dOs + ii * DMAX, rr, p);
                dkj.axpy(Qs + ii * DMAX, rr, p * (dp - Ds[ii]) * scale);
            }
        }
    }
    if (!active) return;
    dkj.store(dk + ((size_t)b * T + j) * stride + (size_t)hk * D, rr, D, 1.0f);
    dvj.store(dv + ((size_t)b * T + j) * stride + (size_t)hk * D, rr, D, 1.0f);
}

/* ---- dispatch on the head dim ----------------------------------------------------------------------- */

struct attn_args {
    float *out, *lse, *dq, *dk, *dv, *Dsum;
    const float *q, *k, *v, *dout, *lse_in;
    int stride, B, T, Hq, Hkv, D, window, tile;
};

enum { PASS_FORWARD, PASS_DQ, PASS_DKDV };

template <int R, int DPT> static int launch(int pass, const attn_args &a)
{
    constexpr int DMAX = R * DPT, BK = DMAX > 128 ? 16 : 32;
    int nt = (a.T + a.tile - 1) / a.tile, per_tile = a.tile < a.T ? a.tile : a.T;
    int subs = (per_tile + BQ - 1) / BQ, G = a.Hq / a.Hkv;
    float scale = 1.0f / sqrtf((float)a.D);
    dim3 block(BQ * R);
    switch (pass) {
    case PASS_FORWARD:
        k_attn_forward<R, DPT, BK><<<dim3(nt * subs, a.Hq, a.B), block>>>(
            a.out, a.lse, a.q, a.k, a.v, a.stride, a.T, a.Hq, G, a.D, a.window, a.tile, subs, scale);
        return CUDA_LAUNCHED_NOW("k_attn_forward");
    case PASS_DQ:
        k_attn_bwd_dq<R, DPT, BK><<<dim3(nt * subs, a.Hq, a.B), block>>>(
            a.dq, a.dout, a.lse_in, a.Dsum, a.q, a.k, a.v, a.stride, a.T, a.Hq, G, a.D, a.window, a.tile,
            subs, scale);
        return CUDA_LAUNCHED_NOW("k_attn_bwd_dq");
    default:
        k_attn_bwd_dkdv<R, DPT, BK><<<dim3(nt * subs, a.Hkv, a.B), block>>>(
            a.dk, a.dv, a.dout, a.lse_in, a.Dsum, a.q, a.k, a.v, a.stride, a.T, a.Hq, G, a.D, a.window,
            a.tile, subs, scale);
        return CUDA_LAUNCHED_NOW("k_attn_bwd_dkdv");
    }
}

static int dispatch(int pass, const attn_args &a)
{
    if (a.D <= 16) return launch<1, 16>(pass, a);
    if (a.D <= 32) return launch<1, 32>(pass, a);
    if (a.D <= 64) return launch<2, 32>(pass, a);
    if (a.D <= 128) return launch<4, 32>(pass, a);
    return launch<8, 32>(pass, a);
}

int cuda_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                           int stride, int B, int T, int Hq, int Hkv, int D, int window, int tile,
                           uint8_t *tile_map, long *counts)
{
    PF_TRY(check_args("attention_forward", T, Hq, Hkv, D, tile));
    if (B < 1) return 0;
    int nt = (T + tile - 1) / tile;
    if (window < 0) window = 0;
    if (tile_map) {
        k_tile_map<<<(nt * nt + 255) / 256, 256>>>(tile_map, nt, tile, T, window);
        PF_TRY(CUDA_LAUNCHED_NOW("k_tile_map"));
    }
    attn_args a = {};
    a.out = out, a.lse = lse, a.q = q, a.k = k, a.v = v;
    a.stride = stride, a.B = B, a.T = T, a.Hq = Hq, a.Hkv = Hkv, a.D = D, a.window = window, a.tile = tile;
    PF_TRY(dispatch(PASS_FORWARD, a));
    if (counts) {
        long tally[3] = {0, 0, 0};
        for (int qt = 0; qt < nt; qt++)
            for (int kt = 0; kt < nt; kt++)
                tally[tile_class(qt * tile, tile_end(qt * tile, tile, T), kt * tile, tile_end(kt * tile, tile, T),
                                 window)]++;
        for (int c = 0; c < 3; c++) counts[c] += tally[c] * B * Hq;
    }
    return 0;
}

int cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                            const float *lse, const float *q, const float *k, const float *v,
                            int stride, int B, int T, int Hq, int Hkv, int D, int window, int tile)
{
    PF_TRY(check_args("attention_backward", T, Hq, Hkv, D, tile));
    if (B < 1) return 0;
    if (window < 0) window = 0;
    float *Dsum = (float *)cuda_scratch(1, (size_t)B * Hq * T * sizeof(float));
    if (!Dsum) return -1;
    long rows = (long)B * T * Hq;
    k_attn_bwd_dsum<<<(unsigned)((rows + 7) / 8), 256>>>(Dsum, dout, out, B, T, Hq, D);
    PF_TRY(CUDA_LAUNCHED_NOW("k_attn_bwd_dsum"));
    attn_args a = {};
    a.dq = dq, a.dk = dk, a.dv = dv, a.Dsum = Dsum, a.dout = dout, a.lse_in = lse, a.q = q, a.k = k, a.v = v;
    a.stride = stride, a.B = B, a.T = T, a.Hq = Hq, a.Hkv = Hkv, a.D = D, a.window = window, a.tile = tile;
    PF_TRY(dispatch(PASS_DQ, a));
    PF_TRY(dispatch(PASS_DKDV, a));
    return 0;
}

/* ---- step ----------------------------------------------------------------------------------------- */

/* One block per query head: scores into weights, softmax in place, then out = weights . V. */
__global__ void k_attn_step(float *out, float *weights, const float *q, const float *kcache,
                            const float *vcache, int len, int Hq, int Hkv, int D, int window, float scale)
{
    __shared__ float red[256];
    int h = blockIdx.x, hk = h / (Hq / Hkv), tid = threadIdx.x;
    int lo = window > 0 && len > window ? len - window : 0;
    float *w = weights + (size_t)h * len;
    const float *qh = q + (size_t)h * D;
    float mx = -INFINITY;
    for (int j = tid; j < len; j += blockDim.x) {
        if (j < lo) {
            w[j] = 0.0f;
            continue;
        }
        const float *kj = kcache + ((size_t)j * Hkv + hk) * D;
        float s = 0.0f;
        for (int d = 0; d < D; d++) s += qh[d] * kj[d];
        s *= scale;
        w[j] = s;
        mx = fmaxf(mx, s);
    }
    red[tid] = mx;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if (tid < o) red[tid] = fmaxf(red[tid], red[tid + o]);
        __syncthreads();
    }
    mx = red[0];
    __syncthreads();
    float sum = 0.0f;
    for (int j = lo + tid; j < len; j += blockDim.x) {
        float p = expf(w[j] - mx);
        w[j] = p;
        sum += p;
    }
    red[tid] = sum;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if (tid < o) red[tid] += red[tid + o];
        __syncthreads();
    }
    float inv = 1.0f / red[0];
    __syncthreads();
    for (int j = lo + tid; j < len; j += blockDim.x) w[j] *= inv;
    __syncthreads();
    for (int d = tid; d < D; d += blockDim.x) {
        float o = 0.0f;
        for (int j = lo; j < len; j++) o += w[j] * vcache[((size_t)j * Hkv + hk) * D + d];
        out[(size_t)h * D + d] = o;
    }
}

void cuda_attention_step(float *out, float *weights, const float *q, const float *kcache,
                         const float *vcache, int len, int Hq, int Hkv, int D, int window)
{
    if (len < 1 || Hq < 1) return;
    k_attn_step<<<Hq, 256>>>(out, weights, q, kcache, vcache, len, Hq, Hkv, D, window < 0 ? 0 : window,
                             1.0f / sqrtf((float)D));
    CUDA_LAUNCHED("k_attn_step");
}

/* ---- rotary embedding ------------------------------------------------------------------------------- */

/* One thread per (row, pair i); the angle in double as on the cpu (positions reach thousands). */
__global__ void k_rope(float *x, int rows, int T, int stride, int heads, int D, int pos0, float theta,
                       int inverse)
{
    int half = D / 2;
    size_t n = (size_t)rows * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        int r = (int)(idx / half), i = (int)(idx % half);
        double p = (double)pos0 + r % T;
        double angle = p * pow((double)theta, -2.0 * i / D);
        float c = (float)cos(angle), s = (float)((inverse ? -1.0 : 1.0) * sin(angle));
        float *row = x + (size_t)r * stride;
        for (int h = 0; h < heads; h++) {
            float *vv = row + (size_t)h * D;
            float a = vv[i], bb = vv[i + half];
            vv[i] = a * c - bb * s;
            vv[i + half] = a * s + bb * c;
        }
    }
}

void cuda_rope(float *x, int rows, int T, int stride, int heads, int D, int pos0, float theta, int inverse)
{
    if (rows < 1 || D < 2) return;
    k_rope<<<cuda_blocks((size_t)rows * (D / 2), 256), 256>>>(x, rows, T, stride, heads, D, pos0, theta, inverse);
    CUDA_LAUNCHED("k_rope");
}
