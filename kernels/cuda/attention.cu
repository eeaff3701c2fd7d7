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
 * counts are tallied on the host from the same function). The kernels' own blocking differs from the
 * tile: what they compute is each row's visible keys, which is exactly what the non-skipped tiles
 * hold (a skipped pair has no visible (i, j); a partial one is masked element by element).
 *
 * Forward (k_attn_forward_tc): GEMM-style tiles on the tensor cores, 3xTF32 (float32 accuracy; see
 * that section). A block takes BQ = 16 NW consecutive query rows of one (batch, head), whatever the
 * layer's tile (the latest rows, with the most keys, launch first), and walks the keys of its rows'
 * visible band (from key 0, or with a window from its first row's first visible key rounded down to
 * a multiple of BK, to its last row) in chunks of BK keys staged in shared memory with cp.async
 * (the next chunk's K and this one's V load while this chunk computes), q in registers or shared
 * memory. Each warp owns 16 rows: S = Q K^T (16 x BK) and O += P V (16 x D) stay in its registers
 * as mma fragments, the row max and sum of the online softmax reduce over the 4 threads that share
 * a row, and P goes from S's accumulators straight into P V's operands. Chunks inside the band of
 * every row of the block skip the mask; in the others, key groups of 8 that no row of a warp sees
 * are not multiplied. Every output is summed by one warp in an order fixed by the code (no atomics:
 * the same bits each run). Head dims pad to DMAX = 32, 64, 128 or 256 (zeros, never written). Rows
 * that are not 16-byte aligned float4 runs (D or stride not a multiple of 4), or a chip with too
 * little shared memory, take the register-row kernel below instead (k_attn_forward: a block of up
 * to 64 rows of one q tile).
 *
 * Backward (k_attn_bwd_dq_tc, k_attn_bwd_dkdv_tc), deterministic with no atomics: D_i = dO_i . O_i
 * first (a warp per row); then one kernel owns dq (a block per BQ = 16 NW query rows of one (batch,
 * head), walking the keys of its rows' band as the forward does) and another owns dk, dv (a block per
 * BKV = 16 NW keys of one (batch, kv head), walking the G query heads that share it in order and, for
 * each, the queries that see its keys), so every output element is summed by one warp in an order
 * fixed by the code. P is recomputed from q, k and lse in both (FlashAttention-2), dS = P (dP - D_i).
 * Every product runs on the tensor cores in 3xTF32 with the forward's fragments, the accumulators in
 * the warp's registers, the tiles in shared memory swizzled rather than padded (each tile is read in
 * two patterns; see that section), the next chunk's tiles loading (cp.async) while this one computes.
 * Head dims past 128 split dk, dv's dims over two blocks (each recomputing its S and dP). Where the
 * forward falls back (D or stride not a multiple of 4, here also dout, dq, dk, dv not 16-byte aligned;
 * too little shared memory), so does the backward, to the register-row kernels (k_attn_bwd_dq,
 * k_attn_bwd_dkdv: a block per up to 64 rows of one tile, dk, dv walking the G heads in order too).
 *
 * Register rows (the fallbacks). Each query row (each key row in the dk/dv kernel) is owned by R
 * consecutive threads that hold DPT = DMAX / R of its dims in registers (float4 groups interleaved
 * across the R threads, so a warp's shared-memory reads are conflict-free broadcasts); dot products
 * finish with R-wide shuffles. DMAX is the smallest of 16, 32, 64, 128, 256 that holds D (padding is
 * zero and never written). A block handles up to BQ = 64 rows of one tile and walks the keys of that
 * tile's non-skipped k tiles (one contiguous range) in chunks of BK keys; chunks wholly outside the
 * block's rows' visible band are not loaded. */
#include <math.h>
#include <stdint.h>
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

/* ---- forward on the tensor cores, 3xTF32 ------------------------------------------------------------ */

/* Products run through mma.sync m16n8k8 (tf32 in, f32 accumulate) on split operands: x = hi + lo
 * with hi the top 11 significant bits of x (a tf32, exact) and lo = x - hi (exact in f32; the tensor
 * core reads its top 11 bits), and a b ~ a_lo b_hi + a_hi b_lo + a_hi b_hi. The dropped a_lo b_lo and
 * lo's truncation are about 2^-21 of |a b|: float32 accuracy (PyTorch's float32 SDPA does the same,
 * CUTLASS's OpMultiplyAddFastF32), at the tensor cores' rate.
 *
 * Fragments of m16n8k8 (lane = 4 g + t): A (16 x 8) a0 (g, t) a1 (g+8, t) a2 (g, t+4) a3 (g+8, t+4);
 * B (8 x 8) b0 (t, g) b1 (t+4, g); C (16 x 8) c0 (g, 2t) c1 (g, 2t+1) c2 (g+8, 2t) c3 (g+8, 2t+1).
 * The order of a sum does not change its terms, so the k index of each product is permuted to suit
 * the loads, and the n index of P V to suit the stores:
 *   S = Q K^T, k-step s (0, 1) of dims [16c, 16c + 16): k index t <-> dim 16c + 4t + 2s, t + 4 <->
 *     16c + 4t + 2s + 1, so one float4 of a q or k row at dim 16c + 4t feeds both k-steps;
 *   O += P V, k-step j: k index t <-> key 8j + 2t, t + 4 <-> 8j + 2t + 1, so P's A fragment is S's C
 *     fragment of n-tile j as it stands (a0 = c0, a1 = c2, a2 = c1, a3 = c3); n-tile s (0..3) of dims
 *     [32c, 32c + 32): n index g <-> dim 32c + 4g + s, so one float4 of a v row feeds four n-tiles
 *     and a thread's accumulators of row g hold dims 32c + 8t + (0..7), stored as two float4. */

__device__ __forceinline__ void split_tf32(float x, uint32_t &hi, uint32_t &lo)
{
    hi = __float_as_uint(x) & 0xffffe000u;
    lo = __float_as_uint(x - __uint_as_float(hi));
}

__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* d += a b, both split: the small terms first */
__device__ __forceinline__ void mma_3xtf32(float (&d)[4], const uint32_t (&ah)[4], const uint32_t (&al)[4], float b0,
                                           float b1)
{
    uint32_t bh0, bl0, bh1, bl1;
    split_tf32(b0, bh0, bl0);
    split_tf32(b1, bh1, bl1);
    mma_tf32(d, al, bh0, bh1);
    mma_tf32(d, ah, bl0, bl1);
    mma_tf32(d, ah, bh0, bh1);
}

__device__ __forceinline__ void split4(const float (&x)[4], uint32_t (&hi)[4], uint32_t (&lo)[4])
{
#pragma unroll
    for (int e = 0; e < 4; e++) split_tf32(x[e], hi[e], lo[e]);
}

/* 16-byte asynchronous copy global -> shared, zero-filled when !valid (nothing is read then) */
__device__ __forceinline__ void cp_async16(float *dst, const float *src, bool valid)
{
    unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* 4-byte asynchronous copy global -> shared (through L1), zero-filled when !valid */
__device__ __forceinline__ void cp_async4(float *dst, const float *src, bool valid)
{
    unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(src), "r"(valid ? 4 : 0)
                 : "memory");
}

/* The backward's tiles are swizzled instead of padded: float4 slot f of row r sits at slot
 * f ^ swz(r) (swz(r) in {0, 2, 4, 6}, a function of r mod 8), which keeps both of its read patterns
 * conflict-free (see the backward's section). */
__device__ __forceinline__ int swz(int r) { return (r & 2) | ((r ^ (r >> 2)) & 1) << 2; }

/* Rows [r0, r0 + ROWS) of one head into s (ROWS, STR), dims up to DMAX; rows >= rend and dims >= D
 * are zeros; SWZ: slots swizzled (STR = DMAX). D % 4 == 0 and 16-byte aligned rows (the caller
 * checks). */
template <int DMAX, int STR, int ROWS, int NT, bool SWZ = false>
__device__ __forceinline__ void stage_async(float *s, const float *src, int stride, int r0, int rend, int D)
{
    constexpr int F = DMAX / 4, N = ROWS * F;
#pragma unroll
    for (int it = 0; it < (N + NT - 1) / NT; it++) {
        int idx = threadIdx.x + it * NT;
        if (N % NT != 0 && idx >= N) break;
        int r = idx / F, f = idx % F;
        bool ok = r0 + r < rend && 4 * f < D;
        cp_async16(s + r * STR + 4 * (SWZ ? f ^ swz(r) : f), ok ? src + (size_t)(r0 + r) * stride + 4 * f : src, ok);
    }
}

template <int DMAX, int BK, int NW, bool QREG> struct tc_shape {
    static constexpr int BQ = 16 * NW, NT = 32 * NW;
    /* row strides: conflict-free float4 reads of the fragment patterns above */
    static constexpr int KSTR = DMAX + 16, VSTR = DMAX + 4;
    static constexpr int smem_floats = BK * KSTR + BK * VSTR + (QREG ? 0 : BQ * KSTR);
};

/* A block: BQ = 16 NW query rows [r0, r0 + BQ) of one (batch, head); warp w owns rows r0 + 16w ..
 * + 15. Keys [j0, r1) (j0 the band's start rounded down to BK) in chunks of BK: K of the next chunk
 * and V of this one load (cp.async) while this chunk's products run. QREG: q stays in registers,
 * else in shared memory. */
template <int DMAX, int BK, int NW, bool QREG, int MINB>
__global__ void __launch_bounds__(32 * NW, MINB)
    k_attn_forward_tc(float *out, float *lse, const float *q, const float *k, const float *v, int stride, int B,
                      int T, int Hq, int G, int D, int window, int nqb, float qscale)
{
    typedef tc_shape<DMAX, BK, NW, QREG> S_;
    constexpr int BQ = S_::BQ, NT = S_::NT, KSTR = S_::KSTR, VSTR = S_::VSTR;
    constexpr int NJ = BK / 8;    /* key n-tiles of S per chunk (k-steps of P V) */
    constexpr int NC = DMAX / 16; /* k-step pairs of Q K^T */
    constexpr int NV = DMAX / 32; /* dim groups of P V, 4 n-tiles each */
    extern __shared__ __align__(16) float smem[];
    float *Ks = smem, *Vs = Ks + BK * KSTR, *Qs = Vs + BK * VSTR;

    /* the heaviest query blocks (latest rows, most keys) first */
    int hb = Hq * B, qblk = nqb - 1 - (int)(blockIdx.x / hb), rem = (int)(blockIdx.x % hb);
    int h = rem % Hq, b = rem / Hq, hk = h / G;
    int r0 = qblk * BQ, r1 = min(r0 + BQ, T);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    int wr0 = r0 + 16 * warp, ra = wr0 + g, rb = ra + 8;
    const float *qh = q + (size_t)b * T * stride + (size_t)h * D;
    const float *kh = k + (size_t)b * T * stride + (size_t)hk * D;
    const float *vh = v + (size_t)b * T * stride + (size_t)hk * D;

    int j0 = window > 0 && r0 - window + 1 > 0 ? r0 - window + 1 : 0;
    j0 -= j0 % BK;
    int j1 = r1, nchunks = (j1 - j0 + BK - 1) / BK;

    stage_async<DMAX, KSTR, BK, NT>(Ks, kh, stride, j0, j1, D);
    if (!QREG) stage_async<DMAX, KSTR, BQ, NT>(Qs, qh, stride, r0, r1, D);
    cp_async_commit();

    /* QREG: q of rows ra, rb at dims 16c + 4t .. + 3 */
    float qr[QREG ? NC : 1][8];
    if (QREG) {
#pragma unroll
        for (int c = 0; c < NC; c++) {
            int d = 16 * c + 4 * t;
            float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f), y = x;
            if (d < D && ra < T) x = *reinterpret_cast<const float4 *>(qh + (size_t)ra * stride + d);
            if (d < D && rb < T) y = *reinterpret_cast<const float4 *>(qh + (size_t)rb * stride + d);
            qr[c][0] = x.x, qr[c][1] = x.y, qr[c][2] = x.z, qr[c][3] = x.w;
            qr[c][4] = y.x, qr[c][5] = y.y, qr[c][6] = y.z, qr[c][7] = y.w;
        }
    }

    float o[NV][4][4];
#pragma unroll
    for (int c = 0; c < NV; c++)
#pragma unroll
        for (int s = 0; s < 4; s++)
#pragma unroll
            for (int e = 0; e < 4; e++) o[c][s][e] = 0.0f;
    float ma = -INFINITY, mb = -INFINITY, la = 0.0f, lb = 0.0f; /* log2 units; la, lb per thread */

    for (int n = 0; n < nchunks; n++) {
        int c0 = j0 + n * BK;
        cp_async_wait<0>(); /* this thread's part of K (and Q) */
        __syncthreads();    /* everyone's; and every warp is done with the last chunk's V */
        stage_async<DMAX, VSTR, BK, NT>(Vs, vh, stride, c0, j1, D);
        cp_async_commit();

        /* the block sees every key of the chunk: no mask; else mask by element and skip the
         * n-tiles that no row of this warp sees */
        bool full = c0 + BK - 1 <= r0 && (window == 0 || r0 + BQ - 1 - c0 < window);
        unsigned need = (1u << NJ) - 1;
        if (!full) {
            need = 0;
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                int kb = c0 + 8 * j;
                if (wr0 < T && kb <= wr0 + 15 && (window == 0 || wr0 - (kb + 7) < window)) need |= 1u << j;
            }
        }

        float s[NJ][4];
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[j][e] = 0.0f;
        if (need) {
#pragma unroll
            for (int c = 0; c < NC; c++) {
                float qa[8];
                if (QREG) {
#pragma unroll
                    for (int e = 0; e < 8; e++) qa[e] = qr[QREG ? c : 0][e];
                } else {
                    float4 x = *reinterpret_cast<const float4 *>(Qs + (16 * warp + g) * KSTR + 16 * c + 4 * t);
                    float4 y = *reinterpret_cast<const float4 *>(Qs + (16 * warp + g + 8) * KSTR + 16 * c + 4 * t);
                    qa[0] = x.x, qa[1] = x.y, qa[2] = x.z, qa[3] = x.w;
                    qa[4] = y.x, qa[5] = y.y, qa[6] = y.z, qa[7] = y.w;
                }
                uint32_t ah[2][4], al[2][4];
#pragma unroll
                for (int k2 = 0; k2 < 2; k2++) {
                    float a4[4] = {qa[2 * k2], qa[4 + 2 * k2], qa[2 * k2 + 1], qa[4 + 2 * k2 + 1]};
                    split4(a4, ah[k2], al[k2]);
                }
#pragma unroll
                for (int j = 0; j < NJ; j++) {
                    if (!(need >> j & 1)) continue;
                    float4 kv = *reinterpret_cast<const float4 *>(Ks + (8 * j + g) * KSTR + 16 * c + 4 * t);
                    mma_3xtf32(s[j], ah[0], al[0], kv.x, kv.y);
                    mma_3xtf32(s[j], ah[1], al[1], kv.z, kv.w);
                }
            }
        }
        __syncthreads(); /* every warp is done with K */
        if (n + 1 < nchunks) {
            stage_async<DMAX, KSTR, BK, NT>(Ks, kh, stride, c0 + BK, j1, D);
            cp_async_commit();
        }

        if (need) {
            /* online softmax over rows ra (s[j][0..1]) and rb (s[j][2..3]); keys c0 + 8j + 2t + e */
            float xa = -INFINITY, xb = -INFINITY;
#pragma unroll
            for (int j = 0; j < NJ; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float sa = s[j][e] * qscale, sb = s[j][2 + e] * qscale;
                    if (!full) {
                        int key = c0 + 8 * j + 2 * t + e;
                        if (!visible(ra, key, window)) sa = -INFINITY;
                        if (!visible(rb, key, window)) sb = -INFINITY;
                    }
                    s[j][e] = sa, s[j][2 + e] = sb;
                    xa = fmaxf(xa, sa), xb = fmaxf(xb, sb);
                }
#pragma unroll
            for (int o_ = 1; o_ <= 2; o_ <<= 1) {
                xa = fmaxf(xa, __shfl_xor_sync(0xffffffffu, xa, o_));
                xb = fmaxf(xb, __shfl_xor_sync(0xffffffffu, xb, o_));
            }
            float na = fmaxf(ma, xa), nb = fmaxf(mb, xb);
            /* a row that has seen nothing yet keeps reference 0: its terms are exp2(-inf) = 0 */
            float ua = na == -INFINITY ? 0.0f : na, ub = nb == -INFINITY ? 0.0f : nb;
            float ca = exp2f(ma - ua), cb = exp2f(mb - ub);
            ma = na, mb = nb;
            la *= ca, lb *= cb;
#pragma unroll
            for (int j = 0; j < NJ; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float pa = exp2f(s[j][e] - ua), pb = exp2f(s[j][2 + e] - ub);
                    la += pa, lb += pb;
                    s[j][e] = pa, s[j][2 + e] = pb;
                }
#pragma unroll
            for (int c = 0; c < NV; c++)
#pragma unroll
                for (int s4 = 0; s4 < 4; s4++) {
                    o[c][s4][0] *= ca, o[c][s4][1] *= ca;
                    o[c][s4][2] *= cb, o[c][s4][3] *= cb;
                }
        }

        if (n + 1 < nchunks) cp_async_wait<1>(); /* V of this chunk (K of the next may still fly) */
        else cp_async_wait<0>();
        __syncthreads();
        if (need) {
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                if (!(need >> j & 1)) continue;
                uint32_t ph[4], pl[4];
                float p4[4] = {s[j][0], s[j][2], s[j][1], s[j][3]};
                split4(p4, ph, pl);
                const float *v0 = Vs + (8 * j + 2 * t) * VSTR + 4 * g, *v1 = v0 + VSTR;
#pragma unroll
                for (int c = 0; c < NV; c++) {
                    float4 x = *reinterpret_cast<const float4 *>(v0 + 32 * c);
                    float4 y = *reinterpret_cast<const float4 *>(v1 + 32 * c);
                    mma_3xtf32(o[c][0], ph, pl, x.x, y.x);
                    mma_3xtf32(o[c][1], ph, pl, x.y, y.y);
                    mma_3xtf32(o[c][2], ph, pl, x.z, y.z);
                    mma_3xtf32(o[c][3], ph, pl, x.w, y.w);
                }
            }
        }
    }

#pragma unroll
    for (int o_ = 1; o_ <= 2; o_ <<= 1) {
        la += __shfl_xor_sync(0xffffffffu, la, o_);
        lb += __shfl_xor_sync(0xffffffffu, lb, o_);
    }
    /* every query sees at least itself, so l > 0 */
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int i = half ? rb : ra;
        if (i >= T) continue;
        float inv = 1.0f / (half ? lb : la);
        float *dst = out + (((size_t)b * T + i) * Hq + h) * D;
#pragma unroll
        for (int c = 0; c < NV; c++) {
            int d = 32 * c + 8 * t;
            if (d < D)
                *reinterpret_cast<float4 *>(dst + d) =
                    make_float4(o[c][0][2 * half] * inv, o[c][1][2 * half] * inv, o[c][2][2 * half] * inv,
                                o[c][3][2 * half] * inv);
            if (d + 4 < D)
                *reinterpret_cast<float4 *>(dst + d + 4) =
                    make_float4(o[c][0][2 * half + 1] * inv, o[c][1][2 * half + 1] * inv,
                                o[c][2][2 * half + 1] * inv, o[c][3][2 * half + 1] * inv);
        }
        if (t == 0) /* back from log2 units */
            lse[((size_t)b * Hq + h) * T + i] = (half ? mb + log2f(lb) : ma + log2f(la)) * 0.69314718055994531f;
    }
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

/* ---- backward on the tensor cores, 3xTF32 ------------------------------------------------------------ */

/* The products of the forward's section, split the same way (mma_3xtf32), with the same fragment
 * layouts and permutations, in two kinds:
 *   over dims (S = Q K^T, dP = dO V^T, and their transposes S^T = K Q^T, dP^T = V dO^T): A rows are
 *     the warp's 16 rows of a tile, B rows 8 rows of another, both read as the forward reads q and k
 *     (lane 4g + t: row g, the float4 at dim 16c + 4t);
 *   over rows (dQ += dS K, dV += P^T dO, dK += dS^T Q): A is a C fragment of a product over dims as it
 *     stands (the k index over that product's n index), B rows are read as the forward reads v
 *     (rows 2t and 2t + 1 of an n-tile, the float4 at dim 32c + 4g).
 * A tile is read in both patterns (k in the dq kernel, q and dO in the dk/dv kernel), so tiles are
 * unpadded rows of DMAX floats with float4 slot f of row r at f ^ swz(r): within each quarter warp,
 * the first pattern's 8 float4 (rows g, g + 1 with g even, 4 slots) and the second's (rows 2t + e of
 * 4 values of t, slots g, g + 1 with g even) land in 8 distinct bank groups. */

/* acc[j] += A B_j^T over dims [0, DMAX) for the n-tiles j in need: A rows ar, ar + 8 of As
 * (ar = 16w + g), B_j rows 8j .. 8j + 7 of Bs. */
template <int DMAX, int NJ>
__device__ __forceinline__ void dims_product(float (&acc)[NJ][4], const float *As, const float *Bs, int ar, int g,
                                             int t, unsigned need)
{
    /* rows ar, ar + 8 and 8j + g share swz(g); slot 4c + t is at 4 (c & ~1) + ((4 (c & 1) + t) ^ swz(g)) */
    int sw = swz(g), oe = 4 * (t ^ sw), oo = 4 * ((4 + t) ^ sw);
    const float *a0 = As + ar * DMAX, *a1 = a0 + 8 * DMAX, *b0 = Bs + g * DMAX;
#pragma unroll
    for (int c = 0; c < DMAX / 16; c++) {
        int off = 16 * (c & ~1) + (c & 1 ? oo : oe);
        float4 x = *reinterpret_cast<const float4 *>(a0 + off), y = *reinterpret_cast<const float4 *>(a1 + off);
        uint32_t ah[2][4], al[2][4];
        float a4[4] = {x.x, y.x, x.y, y.y}, b4[4] = {x.z, y.z, x.w, y.w};
        split4(a4, ah[0], al[0]);
        split4(b4, ah[1], al[1]);
#pragma unroll
        for (int j = 0; j < NJ; j++) {
            if (!(need >> j & 1)) continue;
            float4 kv = *reinterpret_cast<const float4 *>(b0 + 8 * j * DMAX + off);
            mma_3xtf32(acc[j], ah[0], al[0], kv.x, kv.y);
            mma_3xtf32(acc[j], ah[1], al[1], kv.z, kv.w);
        }
    }
}

/* acc[c][s] += sum over the n-tiles j in need of f_j B_j: f_j (16 x 8) the C fragment f[j] of a
 * product over dims, B_j rows 8j .. 8j + 7 of Bs at dims d0 + 32c + 4g + s (d0 a multiple of 32);
 * acc[c][s] holds rows g, g + 8 at dims d0 + 32c + 8t + s (c0, c2) and + 4 (c1, c3). */
template <int DMAX, int NJ, int NV>
__device__ __forceinline__ void rows_product(float (&acc)[NV][4][4], const float (&f)[NJ][4], const float *Bs, int d0,
                                             int g, int t, unsigned need)
{
    const float *r0 = Bs + 2 * t * DMAX + d0 + 4 * (g ^ swz(2 * t));
    const float *r1 = Bs + (2 * t + 1) * DMAX + d0 + 4 * (g ^ swz(2 * t + 1));
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        if (!(need >> j & 1)) continue;
        uint32_t ph[4], pl[4];
        float p4[4] = {f[j][0], f[j][2], f[j][1], f[j][3]};
        split4(p4, ph, pl);
#pragma unroll
        for (int c = 0; c < NV; c++) {
            float4 x = *reinterpret_cast<const float4 *>(r0 + 8 * j * DMAX + 32 * c);
            float4 y = *reinterpret_cast<const float4 *>(r1 + 8 * j * DMAX + 32 * c);
            mma_3xtf32(acc[c][0], ph, pl, x.x, y.x);
            mma_3xtf32(acc[c][1], ph, pl, x.y, y.y);
            mma_3xtf32(acc[c][2], ph, pl, x.z, y.z);
            mma_3xtf32(acc[c][3], ph, pl, x.w, y.w);
        }
    }
}

/* Rows g, g + 8 (acc of rows_product) at dims d0 + 32c + 8t .. + 7 of dst_a, dst_b, times mul;
 * a NULL row is not written. */
template <int NV>
__device__ __forceinline__ void store_rows(float *dst_a, float *dst_b, const float (&acc)[NV][4][4], int d0, int t,
                                           int D, float mul)
{
#pragma unroll
    for (int half = 0; half < 2; half++) {
        float *dst = half ? dst_b : dst_a;
        if (!dst) continue;
#pragma unroll
        for (int c = 0; c < NV; c++) {
            int d = d0 + 32 * c + 8 * t;
            if (d < D)
                *reinterpret_cast<float4 *>(dst + d) =
                    make_float4(acc[c][0][2 * half] * mul, acc[c][1][2 * half] * mul, acc[c][2][2 * half] * mul,
                                acc[c][3][2 * half] * mul);
            if (d + 4 < D)
                *reinterpret_cast<float4 *>(dst + d + 4) =
                    make_float4(acc[c][0][2 * half + 1] * mul, acc[c][1][2 * half + 1] * mul,
                                acc[c][2][2 * half + 1] * mul, acc[c][3][2 * half + 1] * mul);
        }
    }
}

template <int DMAX, int BK, int NW> struct bwd_dq_shape {
    static constexpr int BQ = 16 * NW, NT = 32 * NW;
    static constexpr int smem_floats = 2 * BQ * DMAX + 2 * BK * DMAX; /* q, dO; k, v of a chunk */
};

/* dq: a block takes BQ = 16 NW query rows [r0, r0 + BQ) of one (batch, head) (the latest rows
 * first) and walks the keys of its rows' band as the forward does, in chunks of BK: dP = dO V^T,
 * then S = Q K^T, P = exp2(S qscale - lse log2 e), dS = P (dP - D_i), dQ += dS K, every product in
 * the warp's registers (warp w: rows r0 + 16w .. + 15). q and dO stay in shared memory; V of the
 * next chunk loads while this chunk's S, dS and dQ run, and K of the next while its dP runs.
 * Rows past T are zeros with lse = D_i = 0, so their dS is 0 (they are not stored either). */
template <int DMAX, int BK, int NW, int MINB>
__global__ void __launch_bounds__(32 * NW, MINB)
    k_attn_bwd_dq_tc(float *dq, const float *dout, const float *lse, const float *Dsum, const float *q,
                     const float *k, const float *v, int stride, int B, int T, int Hq, int G, int D, int window,
                     int nqb, float qscale, float scale)
{
    typedef bwd_dq_shape<DMAX, BK, NW> S_;
    constexpr int BQ = S_::BQ, NT = S_::NT, NJ = BK / 8, NV = DMAX / 32;
    constexpr float LOG2E = 1.4426950408889634f;
    extern __shared__ __align__(16) float smem[];
    float *Qs = smem, *dOs = Qs + BQ * DMAX, *Ks = dOs + BQ * DMAX, *Vs = Ks + BK * DMAX;

    int hb = Hq * B, qblk = nqb - 1 - (int)(blockIdx.x / hb), rem = (int)(blockIdx.x % hb);
    int h = rem % Hq, b = rem / Hq, hk = h / G;
    int r0 = qblk * BQ, r1 = min(r0 + BQ, T);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    int wr0 = r0 + 16 * warp, ra = wr0 + g, rb = ra + 8;
    const float *qh = q + (size_t)b * T * stride + (size_t)h * D;
    const float *kh = k + (size_t)b * T * stride + (size_t)hk * D;
    const float *vh = v + (size_t)b * T * stride + (size_t)hk * D;
    const float *doh = dout + ((size_t)b * T * Hq + h) * D; /* dout is contiguous: row stride Hq D */

    int j0 = window > 0 && r0 - window + 1 > 0 ? r0 - window + 1 : 0;
    j0 -= j0 % BK;
    int j1 = r1, nchunks = (j1 - j0 + BK - 1) / BK;

    stage_async<DMAX, DMAX, BQ, NT, true>(Qs, qh, stride, r0, r1, D);
    stage_async<DMAX, DMAX, BQ, NT, true>(dOs, doh, Hq * D, r0, r1, D);
    stage_async<DMAX, DMAX, BK, NT, true>(Vs, vh, stride, j0, j1, D);
    cp_async_commit();
    stage_async<DMAX, DMAX, BK, NT, true>(Ks, kh, stride, j0, j1, D);
    cp_async_commit();

    const float *Lh = lse + ((size_t)b * Hq + h) * T, *Dh = Dsum + ((size_t)b * Hq + h) * T;
    float l2a = ra < T ? Lh[ra] * LOG2E : 0.0f, l2b = rb < T ? Lh[rb] * LOG2E : 0.0f;
    float dia = ra < T ? Dh[ra] : 0.0f, dib = rb < T ? Dh[rb] : 0.0f;

    float acc[NV][4][4];
#pragma unroll
    for (int c = 0; c < NV; c++)
#pragma unroll
        for (int s = 0; s < 4; s++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[c][s][e] = 0.0f;

    cp_async_wait<1>(); /* q, dO and the first V */
    __syncthreads();
    for (int n = 0; n < nchunks; n++) {
        int c0 = j0 + n * BK;
        /* as in the forward: no mask when the block sees every key of the chunk, else mask by element
         * and skip the n-tiles that no row of this warp sees */
        bool full = c0 + BK - 1 <= r0 && (window == 0 || r0 + BQ - 1 - c0 < window);
        unsigned need = (1u << NJ) - 1;
        if (!full) {
            need = 0;
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                int kb = c0 + 8 * j;
                if (wr0 < T && kb <= wr0 + 15 && (window == 0 || wr0 - (kb + 7) < window)) need |= 1u << j;
            }
        }

        float dp[NJ][4], s[NJ][4];
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) dp[j][e] = s[j][e] = 0.0f;
        if (need) dims_product<DMAX, NJ>(dp, dOs, Vs, 16 * warp + g, g, t, need);
        cp_async_wait<0>(); /* this thread's part of K */
        __syncthreads();    /* everyone's; and every warp is done with V */
        if (n + 1 < nchunks) {
            stage_async<DMAX, DMAX, BK, NT, true>(Vs, vh, stride, c0 + BK, j1, D);
            cp_async_commit();
        }
        if (need) {
            dims_product<DMAX, NJ>(s, Qs, Ks, 16 * warp + g, g, t, need);
            /* dS in s: rows ra (e = 0, 1), rb (e = 2, 3); keys c0 + 8j + 2t + (e & 1) */
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                if (!(need >> j & 1)) continue;
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float p = exp2f(s[j][e] * qscale - (e < 2 ? l2a : l2b));
                    if (!full && !visible(e < 2 ? ra : rb, c0 + 8 * j + 2 * t + (e & 1), window)) p = 0.0f;
                    s[j][e] = p * (dp[j][e] - (e < 2 ? dia : dib));
                }
            }
            rows_product<DMAX, NJ, NV>(acc, s, Ks, 0, g, t, need);
        }
        if (n + 1 < nchunks) {
            cp_async_wait<0>(); /* the next V */
            __syncthreads();    /* everyone's; and every warp is done with K */
            stage_async<DMAX, DMAX, BK, NT, true>(Ks, kh, stride, c0 + BK, j1, D);
            cp_async_commit();
        }
    }

    float *dqh = dq + (size_t)b * T * stride + (size_t)h * D;
    store_rows<NV>(ra < T ? dqh + (size_t)ra * stride : NULL, rb < T ? dqh + (size_t)rb * stride : NULL, acc, 0, t, D,
                   scale);
}

template <int DMAX, int DH, int BQC, int NW> struct bwd_dkdv_shape {
    static constexpr int BKV = 16 * NW, NT = 32 * NW;
    /* k, v of the block; q, dO, lse, D_i of a chunk */
    static constexpr int smem_floats = 2 * BKV * DMAX + 2 * BQC * DMAX + 2 * BQC;
};

/* dk, dv: a block takes BKV = 16 NW keys [c0k, c0k + BKV) of one (batch, kv head) (the earliest keys,
 * seen by the most queries, first) and dims [d0, d0 + DH) of their dk, dv (DH < DMAX only for head
 * dims past 128: two blocks share a key block then, each recomputing its S and dP); it walks the G
 * query heads that share the kv head in order and, for each, the queries that see its keys
 * ([c0k, c0k + BKV - 1 + window) within T) in chunks of BQC: dP^T = V dO^T, S^T = K Q^T,
 * P^T = exp2(S^T qscale - lse log2 e), dV += P^T dO, dS^T = P^T (dP^T - D_i), dK += dS^T Q, each in the
 * warp's registers (warp w: keys c0k + 16w .. + 15). k and v stay in shared memory; q of the next
 * chunk loads while this chunk's dP^T runs, and dO, lse, D_i while its dK runs. Queries past T are
 * zeros with lse = D_i = 0, so their dS and P^T dO are 0. */
template <int DMAX, int DH, int BQC, int NW, int MINB>
__global__ void __launch_bounds__(32 * NW, MINB)
    k_attn_bwd_dkdv_tc(float *dk, float *dv, const float *dout, const float *lse, const float *Dsum, const float *q,
                       const float *k, const float *v, int stride, int B, int T, int Hq, int G, int D, int window,
                       float qscale, float scale)
{
    typedef bwd_dkdv_shape<DMAX, DH, BQC, NW> S_;
    constexpr int BKV = S_::BKV, NT = S_::NT, NJ = BQC / 8, NV = DH / 32, NSL = DMAX / DH;
    constexpr float LOG2E = 1.4426950408889634f;
    static_assert(2 * BQC <= NT, "one thread per lse and D_i of a chunk");
    extern __shared__ __align__(16) float smem[];
    float *Ks = smem, *Vs = Ks + BKV * DMAX, *Qs = Vs + BKV * DMAX, *dOs = Qs + BQC * DMAX, *Ls = dOs + BQC * DMAX;
    float *Ds = Ls + BQC;

    int Hkv = Hq / G, per = NSL * Hkv * B;
    int kblk = (int)(blockIdx.x / per), rem = (int)(blockIdx.x % per);
    int d0 = (rem % NSL) * DH, hk = rem / NSL % Hkv, b = rem / NSL / Hkv;
    int c0k = kblk * BKV, c1k = min(c0k + BKV, T);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    int wk0 = c0k + 16 * warp, ka = wk0 + g, kb = ka + 8;
    const float *kh = k + (size_t)b * T * stride + (size_t)hk * D;
    const float *vh = v + (size_t)b * T * stride + (size_t)hk * D;

    int i0 = c0k, i1 = T;
    if (window > 0 && c1k - 1 + window < i1) i1 = c1k - 1 + window;
    int npg = (i1 - i0 + BQC - 1) / BQC, nchunks = G * npg;

    /* chunk n: query head hk G + n / npg, queries from i0 + (n % npg) BQC */
#define CHUNK_Q(n) (q + (size_t)b * T * stride + (size_t)(hk * G + (n) / npg) * D)
#define CHUNK_DO(n) (dout + ((size_t)b * T * Hq + hk * G + (n) / npg) * D)
#define CHUNK_L(n) (((size_t)b * Hq + hk * G + (n) / npg) * T)
#define CHUNK_I(n) (i0 + (n) % npg * BQC)
    stage_async<DMAX, DMAX, BKV, NT, true>(Ks, kh, stride, c0k, c1k, D);
    stage_async<DMAX, DMAX, BKV, NT, true>(Vs, vh, stride, c0k, c1k, D);
    stage_async<DMAX, DMAX, BQC, NT, true>(dOs, CHUNK_DO(0), Hq * D, CHUNK_I(0), T, D);
    if (threadIdx.x < 2 * BQC) {
        int x = threadIdx.x % BQC, i = CHUNK_I(0) + x;
        const float *src = (threadIdx.x < BQC ? lse : Dsum) + CHUNK_L(0) + i;
        cp_async4((threadIdx.x < BQC ? Ls : Ds) + x, i < T ? src : lse, i < T);
    }
    cp_async_commit();
    stage_async<DMAX, DMAX, BQC, NT, true>(Qs, CHUNK_Q(0), stride, CHUNK_I(0), T, D);
    cp_async_commit();

    float dka[NV][4][4], dva[NV][4][4];
#pragma unroll
    for (int c = 0; c < NV; c++)
#pragma unroll
        for (int s = 0; s < 4; s++)
#pragma unroll
            for (int e = 0; e < 4; e++) dka[c][s][e] = dva[c][s][e] = 0.0f;

    cp_async_wait<1>(); /* k, v and the first dO, lse, D_i */
    __syncthreads();
    for (int n = 0; n < nchunks; n++) {
        int ic = CHUNK_I(n);
        /* no mask when every query of the chunk sees every key of the block; else mask by element and
         * skip the n-tiles of queries that see no key of this warp */
        bool full = ic >= c0k + BKV - 1 && (window == 0 || ic + BQC - 1 - c0k < window);
        unsigned need = (1u << NJ) - 1;
        if (!full) {
            need = 0;
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                int qb = ic + 8 * j;
                if (wk0 < T && qb + 7 >= wk0 && (window == 0 || qb - (wk0 + 15) < window)) need |= 1u << j;
            }
        }

        float dp[NJ][4], s[NJ][4];
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) dp[j][e] = s[j][e] = 0.0f;
        if (need) dims_product<DMAX, NJ>(dp, Vs, dOs, 16 * warp + g, g, t, need);
        cp_async_wait<0>(); /* this thread's part of q */
        __syncthreads();    /* everyone's */
        if (need) {
            dims_product<DMAX, NJ>(s, Ks, Qs, 16 * warp + g, g, t, need);
            /* P^T in s, dS^T in dp: keys ka (e = 0, 1), kb (e = 2, 3); queries ic + 8j + 2t + (e & 1) */
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                if (!(need >> j & 1)) continue;
                float2 lq = *reinterpret_cast<const float2 *>(Ls + 8 * j + 2 * t);
                float2 dq2 = *reinterpret_cast<const float2 *>(Ds + 8 * j + 2 * t);
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float p = exp2f(s[j][e] * qscale - (e & 1 ? lq.y : lq.x) * LOG2E);
                    if (!full && !visible(ic + 8 * j + 2 * t + (e & 1), e < 2 ? ka : kb, window)) p = 0.0f;
                    s[j][e] = p;
                    dp[j][e] = p * (dp[j][e] - (e & 1 ? dq2.y : dq2.x));
                }
            }
            rows_product<DMAX, NJ, NV>(dva, s, dOs, d0, g, t, need);
        }
        __syncthreads(); /* every warp is done with dO, lse and D_i */
        if (n + 1 < nchunks) {
            stage_async<DMAX, DMAX, BQC, NT, true>(dOs, CHUNK_DO(n + 1), Hq * D, CHUNK_I(n + 1), T, D);
            if (threadIdx.x < 2 * BQC) {
                int x = threadIdx.x % BQC, i = CHUNK_I(n + 1) + x;
                const float *src = (threadIdx.x < BQC ? lse : Dsum) + CHUNK_L(n + 1) + i;
                cp_async4((threadIdx.x < BQC ? Ls : Ds) + x, i < T ? src : lse, i < T);
            }
            cp_async_commit();
        }
        if (need) rows_product<DMAX, NJ, NV>(dka, dp, Qs, d0, g, t, need);
        if (n + 1 < nchunks) {
            cp_async_wait<0>(); /* the next dO, lse, D_i */
            __syncthreads();    /* everyone's; and every warp is done with q */
            stage_async<DMAX, DMAX, BQC, NT, true>(Qs, CHUNK_Q(n + 1), stride, CHUNK_I(n + 1), T, D);
            cp_async_commit();
        }
    }
#undef CHUNK_Q
#undef CHUNK_DO
#undef CHUNK_L
#undef CHUNK_I

    size_t row_a = ((size_t)b * T + ka) * stride + (size_t)hk * D, row_b = row_a + 8 * (size_t)stride;
    store_rows<NV>(ka < T ? dk + row_a : NULL, kb < T ? dk + row_b : NULL, dka, d0, t, D, scale);
    store_rows<NV>(ka < T ? dv + row_a : NULL, kb < T ? dv + row_b : NULL, dva, d0, t, D, 1.0f);
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

/* 1 when kern may take `bytes` of dynamic shared memory (its limit raised past the default 48 KB the
 * first time, *raised per kernel instance), 0 when the chip has less (the caller falls back to the
 * register-row kernels), -1 on a failed call */
template <typename F> static int allow_smem(F *kern, int bytes, bool *raised)
{
    if (bytes <= 48 * 1024 || *raised) return 1;
    int dev = 0, optin = 0;
    PF_TRY(CUDA_CHECK_NOW(cudaGetDevice(&dev)));
    PF_TRY(CUDA_CHECK_NOW(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)));
    if (optin < bytes) return 0;
    PF_TRY(CUDA_CHECK_NOW(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)));
    *raised = true;
    return 1;
}

/* the tensor-core forward: needs float4 rows (D % 4 == 0, stride % 4 == 0, 16-byte aligned bases) */
template <int DMAX, int BK, int NW, bool QREG, int MINB> static int launch_forward_tc(const attn_args &a)
{
    typedef tc_shape<DMAX, BK, NW, QREG> S_;
    constexpr int bytes = S_::smem_floats * (int)sizeof(float);
    void (*kern)(float *, float *, const float *, const float *, const float *, int, int, int, int, int, int, int,
                 int, float) = k_attn_forward_tc<DMAX, BK, NW, QREG, MINB>;
    static bool raised;
    int ok = allow_smem(kern, bytes, &raised);
    if (ok < 0) return -1;
    if (!ok) return dispatch(PASS_FORWARD, a); /* a smaller chip: the register-row kernel */
    int nqb = (a.T + S_::BQ - 1) / S_::BQ;
    long blocks = (long)nqb * a.Hq * a.B;
    if (blocks > 0x7fffffffL) return pf_error("attention_forward: %ld blocks are too many for one launch", blocks);
    kern<<<(unsigned)blocks, S_::NT, bytes>>>(a.out, a.lse, a.q, a.k, a.v, a.stride, a.B, a.T, a.Hq, a.Hq / a.Hkv,
                                              a.D, a.window, nqb, 1.4426950408889634f / sqrtf((float)a.D));
    return CUDA_LAUNCHED_NOW("k_attn_forward_tc");
}

/* the tensor-core backward, each kernel on its own (same needs, plus float4 rows of dout, dq, dk, dv) */
template <int DMAX, int BK, int NW, int MINB> static int launch_bwd_dq_tc(const attn_args &a)
{
    typedef bwd_dq_shape<DMAX, BK, NW> S_;
    constexpr int bytes = S_::smem_floats * (int)sizeof(float);
    void (*kern)(float *, const float *, const float *, const float *, const float *, const float *, const float *,
                 int, int, int, int, int, int, int, int, float, float) = k_attn_bwd_dq_tc<DMAX, BK, NW, MINB>;
    static bool raised;
    int ok = allow_smem(kern, bytes, &raised);
    if (ok < 0) return -1;
    if (!ok) return dispatch(PASS_DQ, a);
    int nqb = (a.T + S_::BQ - 1) / S_::BQ;
    long blocks = (long)nqb * a.Hq * a.B;
    if (blocks > 0x7fffffffL) return pf_error("attention_backward: %ld blocks are too many for one launch", blocks);
    float scale = 1.0f / sqrtf((float)a.D);
    kern<<<(unsigned)blocks, S_::NT, bytes>>>(a.dq, a.dout, a.lse_in, a.Dsum, a.q, a.k, a.v, a.stride, a.B, a.T, a.Hq,
                                              a.Hq / a.Hkv, a.D, a.window, nqb, 1.4426950408889634f * scale, scale);
    return CUDA_LAUNCHED_NOW("k_attn_bwd_dq_tc");
}

template <int DMAX, int DH, int BQC, int NW, int MINB> static int launch_bwd_dkdv_tc(const attn_args &a)
{
    typedef bwd_dkdv_shape<DMAX, DH, BQC, NW> S_;
    constexpr int bytes = S_::smem_floats * (int)sizeof(float);
    void (*kern)(float *, float *, const float *, const float *, const float *, const float *, const float *,
                 const float *, int, int, int, int, int, int, int, float, float) =
        k_attn_bwd_dkdv_tc<DMAX, DH, BQC, NW, MINB>;
    static bool raised;
    int ok = allow_smem(kern, bytes, &raised);
    if (ok < 0) return -1;
    if (!ok) return dispatch(PASS_DKDV, a);
    int nkb = (a.T + S_::BKV - 1) / S_::BKV;
    long blocks = (long)nkb * (DMAX / DH) * a.Hkv * a.B;
    if (blocks > 0x7fffffffL) return pf_error("attention_backward: %ld blocks are too many for one launch", blocks);
    float scale = 1.0f / sqrtf((float)a.D);
    kern<<<(unsigned)blocks, S_::NT, bytes>>>(a.dk, a.dv, a.dout, a.lse_in, a.Dsum, a.q, a.k, a.v, a.stride, a.B, a.T,
                                              a.Hq, a.Hq / a.Hkv, a.D, a.window, 1.4426950408889634f * scale, scale);
    return CUDA_LAUNCHED_NOW("k_attn_bwd_dkdv_tc");
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

static int forward(const attn_args &a)
{
    if (a.D % 4 != 0 || a.stride % 4 != 0 || !aligned16(a.q) || !aligned16(a.k) || !aligned16(a.v) ||
        !aligned16(a.out))
        return dispatch(PASS_FORWARD, a); /* the register-row kernel */
    /* shapes timed on an H200 (2026-12-01): with q in shared memory, 3 blocks of 4 warps per
     * multiprocessor ran 1.2-1.3x faster than 2 (BK 32 for D 128, where 64 allowed only 2) */
    if (a.D <= 32) return launch_forward_tc<32, 64, 4, true, 4>(a);
    if (a.D <= 64) return launch_forward_tc<64, 64, 4, false, 3>(a);
    if (a.D <= 128) return launch_forward_tc<128, 32, 4, false, 3>(a);
    return launch_forward_tc<256, 16, 4, false, 1>(a);
}

static int backward(const attn_args &a)
{
    if (a.D % 4 != 0 || a.stride % 4 != 0 || !aligned16(a.q) || !aligned16(a.k) || !aligned16(a.v) ||
        !aligned16(a.dout) || !aligned16(a.dq) || !aligned16(a.dk) || !aligned16(a.dv)) {
        PF_TRY(dispatch(PASS_DQ, a)); /* the register-row kernels */
        return dispatch(PASS_DKDV, a);
    }
    /* shapes chosen for an H200 by registers and shared memory (two or more blocks of 4 warps per
     * multiprocessor up to D 128), not timed against others */
    if (a.D <= 32) {
        PF_TRY((launch_bwd_dq_tc<32, 64, 4, 3>(a)));
        return launch_bwd_dkdv_tc<32, 32, 32, 4, 4>(a);
    }
    if (a.D <= 64) {
        PF_TRY((launch_bwd_dq_tc<64, 32, 4, 4>(a)));
        return launch_bwd_dkdv_tc<64, 64, 32, 4, 3>(a);
    }
    if (a.D <= 128) {
        PF_TRY((launch_bwd_dq_tc<128, 32, 4, 2>(a)));
        return launch_bwd_dkdv_tc<128, 128, 32, 4, 2>(a);
    }
    PF_TRY((launch_bwd_dq_tc<256, 16, 4, 1>(a)));
    return launch_bwd_dkdv_tc<256, 128, 16, 4, 1>(a);
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
    PF_TRY(forward(a));
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
    return backward(a);
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
